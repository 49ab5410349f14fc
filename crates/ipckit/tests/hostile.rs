//! Attacks by a hostile peer on what ipckit keeps in shared memory: another
//! process scribbles random bytes over a synchronisation object, a typed
//! view or an atomic while a victim process uses it, or shrinks the memory
//! under a reader. The victim must only ever get data or an error: never
//! die by a signal, abort, or wait past its timeout.
//!
//! This test binary re-executed with `IPCKIT_HOSTILE_PEER=<role>:<arg>`
//! plays the victim or the attacker; shared memory reaches them as a memfd
//! on their standard input.

use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipckit::sem::{NamedSemaphore, UnnamedSemaphore};
use ipckit::shm::{Condvar, Futex, LockError, Memfd, Mutex, Region, Seals, Shm};
use ipckit::{MessageReceiver, MessageSenderExt};
use libtest_mimic::Failed;

mod common;
use common::{ensure, unique, T};

/// Where things live in the shared region: the object under attack first,
/// then what the attacker leaves alone.
const OBJECT: usize = 0;
/// How many bytes from `OBJECT` the attacker scribbles over.
const OBJECT_LEN: usize = 256;
/// A mutex the condition variable test waits with (not scribbled).
const SPARE_MUTEX: usize = 1024;
/// Set by the victim when it is done: the attacker stops.
const DONE: usize = 2048;
/// Set by the attacker once it has started: the victim starts.
const STARTED: usize = 2052;
/// Set by the victim once it has opened the object: the attacker starts.
const OPENED: usize = 2056;
const REGION: usize = 4096;

/// Operations each victim makes while under attack: at least this many,
/// for at least `ATTACK`.
const TRIALS: u32 = 5000;
const ATTACK: Duration = Duration::from_millis(400);

/// The victim's trial numbers: `TRIALS` of them, and more until `ATTACK`
/// has passed.
fn trials() -> impl Iterator<Item = u32> {
    let start = Instant::now();
    (0..).take_while(move |&i| i < TRIALS || start.elapsed() < ATTACK)
}
/// The timeout of each of the victim's waits.
const WAIT: Duration = Duration::from_millis(5);
/// The timeout of waits that nobody ends early (most of them time out).
const SHORT: Duration = Duration::from_micros(100);
/// How far past its timeout a wait may return on a loaded machine before
/// the test calls it a hang.
const SLACK: Duration = Duration::from_millis(1500);

fn peer_cmd(role: &str, arg: &str) -> io::Result<Command> {
    let mut c = common::peer_command("IPCKIT_HOSTILE_PEER", role, arg)?;
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(c)
}

fn spawn_with(role: &str, arg: &str, shm: &Memfd) -> io::Result<Child> {
    let fd: OwnedFd = shm.as_fd().try_clone_to_owned()?;
    peer_cmd(role, arg)?.stdin(Stdio::from(fd)).spawn()
}

/// Waits (bounded) for `child`; its stdout, or why it failed (killed by a
/// signal, a nonzero exit, a hang).
fn finish(what: &str, mut child: Child) -> Result<String, Failed> {
    let status = common::wait_bounded(&mut child, T * 6, what)?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    if let Some(sig) = status.signal() {
        return Err(format!(
            "{what}: killed by signal {sig}{} (stdout: {out} stderr: {err})",
            if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            }
        )
        .into());
    }
    ensure(status.success(), || {
        format!("{what}: {status} (stdout: {out} stderr: {err})")
    })?;
    Ok(out)
}

/// A small deterministic generator (xorshift64*): reproducible attacks
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Bytes an attacker likes: values the implementations give meaning to,
/// plus noise.
fn nasty(rng: &mut Rng) -> [u8; 8] {
    const WORDS: [u64; 12] = [
        0,
        1,
        u64::MAX,
        0x1234_5678,
        0x8000_0000,
        0x3fff_fff0,
        0xb2,
        0x7fff_ffff,
        0xffff_ffff,
        1 << 32,
        0x4000_0001,
        0x8000_0000_0000_0001,
    ];
    match rng.below(3) {
        0 => WORDS[rng.below(WORDS.len() as u64) as usize].to_le_bytes(),
        // A thread id (or one just past pid_max), maybe with flag bits.
        1 => (rng.below(40_000) | rng.below(4) << 30).to_le_bytes(),
        _ => rng.next().to_le_bytes(),
    }
}

/// The attacker: scribbles over `len` bytes at `offset` of `region` until
/// the victim raises `DONE` (bounded by the test timeout).
fn scribble(region: &Region, offset: usize, len: usize, seed: u64) -> io::Result<()> {
    let done = region.atomic_u32(DONE)?;
    let started = region.atomic_u32(STARTED)?;
    wait_for(region.atomic_u32(OPENED)?, "the victim to open the object")?;
    let mut rng = Rng(seed | 1);
    let end = Instant::now() + T * 3;
    let mut writes = 0u64;
    while done.load(Ordering::Acquire) == 0 && Instant::now() < end {
        let at = offset + rng.below(len as u64) as usize;
        let bytes = nasty(&mut rng);
        let n = (1 + rng.below(8) as usize).min(offset + len - at);
        region.write(at, &bytes[..n])?;
        writes += 1;
        started.store(1, Ordering::Release);
        // Let the victim act on a few states before the next one.
        for _ in 0..rng.below(2000) {
            std::hint::spin_loop();
        }
    }
    println!("{writes} writes");
    Ok(())
}

/// Waits (bounded) until `flag` is set.
fn wait_for(flag: &std::sync::atomic::AtomicU32, what: &str) -> io::Result<()> {
    let end = Instant::now() + T;
    while flag.load(Ordering::Acquire) == 0 {
        if Instant::now() > end {
            return Err(io::Error::other(format!("timed out waiting for {what}")));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// The victim has opened its object: lets the attacker start, and waits
/// until it has.
fn opened(region: &Region) -> io::Result<()> {
    region.atomic_u32(OPENED)?.store(1, Ordering::Release);
    wait_for(region.atomic_u32(STARTED)?, "the attacker to start")
}

/// Counts what happened to a victim's operations, and the worst overshoot
/// of a timed wait.
#[derive(Default)]
struct Tally {
    ok: u32,
    errors: u32,
    timeouts: u32,
    owner_died: u32,
    worst_over: Duration,
    first_error: Option<String>,
}

impl Tally {
    /// Times one operation that was allowed to wait `limit`.
    fn timed<R>(&mut self, limit: Duration, f: impl FnOnce() -> R) -> R {
        let t0 = Instant::now();
        let r = f();
        let over = t0.elapsed().saturating_sub(limit);
        self.worst_over = self.worst_over.max(over);
        r
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn result<T>(&mut self, r: io::Result<T>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(e) => self.error(e),
        }
    }

    fn report(self, done: &std::sync::atomic::AtomicU32) -> io::Result<()> {
        done.store(1, Ordering::Release);
        println!(
            "ok={} errors={} timeouts={} owner_died={} worst_over={:?} first_error={:?}",
            self.ok, self.errors, self.timeouts, self.owner_died, self.worst_over, self.first_error
        );
        if self.worst_over > SLACK {
            return Err(io::Error::other(format!(
                "a wait of {WAIT:?} returned {:?} late",
                self.worst_over
            )));
        }
        Ok(())
    }
}

/// The victim of a scribbled object: uses it `TRIALS` times with timeouts.
fn victim(region: &Region, object: &str, name: &str) -> io::Result<()> {
    let done = region.atomic_u32(DONE)?;
    let mut t = Tally::default();
    match object {
        "mutex" => {
            let m = Mutex::<[u64; 2]>::open(region, OBJECT)?;
            opened(region)?;
            for i in trials() {
                let r = if i % 7 == 0 {
                    t.timed(Duration::ZERO, || m.try_lock())
                } else {
                    t.timed(WAIT, || m.lock_timeout(WAIT))
                };
                match r {
                    Ok(Some(mut g)) => {
                        g.update(|v| v[0] = v[0].wrapping_add(1));
                        t.ok += 1;
                    }
                    Ok(None) => t.timeouts += 1,
                    Err(LockError::OwnerDied(mut g)) => {
                        t.owner_died += 1;
                        let r = g.make_consistent();
                        t.result(r);
                    }
                    Err(e) => t.error(e),
                }
            }
        }
        "condvar" => {
            let m = Mutex::<u32>::open(region, SPARE_MUTEX)?;
            let c = Condvar::open(region, OBJECT)?;
            opened(region)?;
            for i in trials() {
                if i % 2 == 0 {
                    let r = c.notify_one().and_then(|()| c.notify_all());
                    t.result(r);
                    continue;
                }
                let g = match m.lock_timeout(WAIT) {
                    Ok(Some(g)) => g,
                    other => {
                        return Err(io::Error::other(format!(
                            "the unscribbled mutex failed: {other:?}"
                        )))
                    }
                };
                match t.timed(SHORT, || c.wait_timeout(g, SHORT)) {
                    Ok((_, true)) => t.timeouts += 1,
                    Ok((_, false)) => t.ok += 1,
                    Err(e) => t.error(e),
                }
            }
        }
        "unnamed-sem" | "named-sem" => {
            let named;
            let unnamed;
            let (wait, try_wait, post, value): SemOps<'_> = if object == "named-sem" {
                named = NamedSemaphore::builder(name).open()?;
                (
                    Box::new(|d| named.wait_timeout(d)),
                    Box::new(|| named.try_wait()),
                    Box::new(|| named.post()),
                    Box::new(|| named.value()),
                )
            } else {
                unnamed = UnnamedSemaphore::open(region, OBJECT)?;
                (
                    Box::new(move |d| unnamed.wait_timeout(d)),
                    Box::new(move || unnamed.try_wait()),
                    Box::new(move || unnamed.post()),
                    Box::new(move || unnamed.value()),
                )
            };
            opened(region)?;
            for i in trials() {
                match i % 4 {
                    0 => t.result(post()),
                    1 => match t.timed(WAIT, || wait(WAIT)) {
                        Ok(true) => t.ok += 1,
                        Ok(false) => t.timeouts += 1,
                        Err(e) => t.error(e),
                    },
                    2 => t.result(try_wait()),
                    _ => t.result(value()),
                }
            }
        }
        "view" => {
            let v = region.view::<[u64; 4]>(OBJECT)?;
            let a = region.array::<u32>(OBJECT + 64, 16)?;
            opened(region)?;
            for i in trials() {
                let x = match v.load() {
                    Ok(x) => x,
                    Err(e) => {
                        t.error(e);
                        continue;
                    }
                };
                t.result(v.store(&[x[0].wrapping_add(1), i as u64, !x[2], 3]));
                let y = a.get(i as usize % 16).unwrap_or(0);
                t.result(a.set((i as usize + 1) % 16, y ^ 0x55));
                t.result(a.to_vec());
            }
        }
        "atomics" => {
            let w = region.atomic_u32(OBJECT)?;
            let d = region.atomic_u64(OBJECT + 8)?;
            let f = Futex::new(region.atomic_u32(OBJECT + 16)?);
            opened(region)?;
            for i in trials() {
                w.fetch_add(1, Ordering::AcqRel);
                let _ =
                    d.compare_exchange(i as u64, !(i as u64), Ordering::AcqRel, Ordering::Acquire);
                let seen = f.word().load(Ordering::Acquire);
                match t.timed(SHORT, || f.wait_timeout(seen, SHORT)) {
                    Ok(true) => t.ok += 1,
                    Ok(false) => t.timeouts += 1,
                    Err(e) => t.error(e),
                }
                t.result(f.wake(1));
            }
        }
        other => return Err(io::Error::other(format!("unknown object {other}"))),
    }
    t.report(done)
}

type SemOps<'a> = (
    Box<dyn Fn(Duration) -> io::Result<bool> + 'a>,
    Box<dyn Fn() -> io::Result<bool> + 'a>,
    Box<dyn Fn() -> io::Result<()> + 'a>,
    Box<dyn Fn() -> io::Result<u32> + 'a>,
);

/// A reader of POSIX shared memory `name` that someone truncates: reads
/// until it gets the error that says so.
fn truncated_reader(name: &str) -> io::Result<()> {
    let shm = Shm::builder(name).open()?;
    read_until_truncated(&shm)
}

/// Where the truncation tests put a mutex, a semaphore and a typed value.
const T_MUTEX: usize = 0;
const T_SEM: usize = 4096;
const T_VIEW: usize = 8192;

/// Puts the objects the truncated reader uses into a fresh region.
fn init_truncation_targets(region: &Region) -> io::Result<()> {
    Mutex::init(region, T_MUTEX, 0u64)?;
    UnnamedSemaphore::init(region, T_SEM, 0)?;
    region.view::<[u64; 8]>(T_VIEW)?.store(&[7; 8])
}

/// Uses every kind of object in `region` in turn until another process
/// truncates it; then checks that each operation reports the truncation
/// as an error (atomics cannot: they go on, on private zeros, and
/// `is_truncated` says so).
fn read_until_truncated(region: &Region) -> io::Result<()> {
    let mutex = Mutex::<u64>::open(region, T_MUTEX)?;
    let sem = UnnamedSemaphore::open(region, T_SEM)?;
    let view = region.view::<[u64; 8]>(T_VIEW)?;
    let counter = region.atomic_u64(T_VIEW + 64)?;
    println!("ready");
    let mut buf = vec![0u8; region.len()];
    let end = Instant::now() + T;
    let mut i = 0u64;
    loop {
        if Instant::now() > end {
            return Err(io::Error::other("the truncation was never reported"));
        }
        i += 1;
        let r = match i % 4 {
            0 => region.read(0, &mut buf),
            1 => view.load().map(drop),
            2 => match mutex.lock_timeout(Duration::from_millis(5)) {
                Ok(g) => g
                    .map(drop)
                    .ok_or_else(|| io::Error::other("lock timed out")),
                Err(e) => Err(io::Error::from(e)),
            },
            _ => sem
                .post()
                .and_then(|()| sem.wait_timeout(Duration::from_millis(5)).map(drop)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            if !region.is_truncated() {
                return Err(e);
            }
            break;
        }
        std::thread::yield_now();
    }
    let lock = mutex
        .lock_timeout(Duration::from_millis(5))
        .map(drop)
        .map_err(io::Error::from);
    let results = [
        ("read", region.read(0, &mut buf)),
        ("load", view.load().map(drop)),
        ("store", view.store(&[1; 8])),
        ("lock", lock),
        ("post", sem.post()),
        ("wait", sem.wait_timeout(Duration::from_millis(5)).map(drop)),
    ];
    for (what, r) in &results {
        match r {
            Err(e) if e.to_string().contains("truncated") => {}
            other => {
                return Err(io::Error::other(format!(
                    "{what} after truncation: {other:?}"
                )))
            }
        }
    }
    counter.fetch_add(1, Ordering::Relaxed);
    println!("every operation reported the truncation ({i} operations before it)");
    Ok(())
}

fn peer_main(spec: &str) -> io::Result<()> {
    let (role, arg) = spec.split_once(':').expect("role:arg");
    let stdin_region = || Memfd::from_fd(io::stdin().as_fd().try_clone_to_owned()?, false);
    match role {
        // OBJECT:NAME
        "victim" => {
            let m = stdin_region()?;
            let (object, name) = arg.split_once(':').unwrap_or((arg, ""));
            victim(&m, object, name)
        }
        // OFFSET:LEN:SEED
        "scribbler" => {
            let m = stdin_region()?;
            let mut it = arg
                .split(':')
                .map(|s| s.parse::<u64>().map_err(io::Error::other));
            let (off, len, seed) = (
                it.next().unwrap()?,
                it.next().unwrap()?,
                it.next().unwrap()?,
            );
            scribble(&m, off as usize, len as usize, seed)
        }
        // NAME: the semaphore's file, opened as POSIX shared memory.
        "named-sem-scribbler" => {
            let shm = Shm::builder(format!("/sem.{}", &arg[1..])).open()?;
            let m = stdin_region()?;
            let done = m.atomic_u32(DONE)?;
            let started = m.atomic_u32(STARTED)?;
            wait_for(m.atomic_u32(OPENED)?, "the victim to open the semaphore")?;
            let mut rng = Rng(0x5eed);
            let end = Instant::now() + T * 3;
            while done.load(Ordering::Acquire) == 0 && Instant::now() < end {
                let at = rng.below(shm.len() as u64) as usize;
                let bytes = nasty(&mut rng);
                let n = (1 + rng.below(8) as usize).min(shm.len() - at);
                shm.write(at, &bytes[..n])?;
                started.store(1, Ordering::Release);
                for _ in 0..rng.below(2000) {
                    std::hint::spin_loop();
                }
            }
            Ok(())
        }
        // Lock, let the attacker overwrite what follows the lock, unlock,
        // lock again: errors are fine, a crash is not.
        "lock-overwrite-unlock" => {
            let m = stdin_region()?;
            let mutex = Mutex::<[u64; 2]>::open(&m, OBJECT)?;
            let g = mutex.lock_timeout(T).map_err(io::Error::from)?;
            opened(&m)?;
            wait_for(m.atomic_u32(DONE)?, "the overwrite")?;
            drop(g);
            match mutex.lock_timeout(WAIT) {
                Ok(g) => println!("relocked: {}", g.is_some()),
                Err(e) => println!("relock failed: {e}"),
            }
            Ok(())
        }
        "shm-reader" => truncated_reader(arg),
        // Posts and waits on named semaphore NAME until its file is
        // truncated under it: then each call must say so.
        "named-sem-user" => {
            let sem = NamedSemaphore::builder(arg).open()?;
            println!("ready");
            let end = Instant::now() + T;
            while Instant::now() < end {
                let r = sem
                    .post()
                    .and_then(|()| sem.wait_timeout(Duration::from_millis(5)));
                match r {
                    Ok(_) => std::thread::yield_now(),
                    Err(e) if e.to_string().contains("truncated") => {
                        let again = sem.value().map(drop).unwrap_err();
                        println!("every operation reported the truncation: {again}");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::other("the truncation was never reported"))
        }
        "memfd-reader" => {
            let fd = io::stdin().as_fd().try_clone_to_owned()?;
            if arg == "expect-refusal" {
                return match Memfd::from_fd(fd, false) {
                    Err(e) => {
                        println!("refused: {e}");
                        Ok(())
                    }
                    Ok(_) => Err(io::Error::other("an unsealed memfd was accepted")),
                };
            }
            let m = Memfd::from_fd_unsealed(fd, false)?;
            read_until_truncated(&m)
        }
        // PID:FD: shrink another process's memfd through /proc.
        "memfd-shrinker" => {
            let (pid, fd) = arg.split_once(':').expect("pid:fd");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/fd/{fd}"))?;
            match f.set_len(0) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    println!("refused");
                    Ok(())
                }
                Err(e) => Err(e),
                Ok(()) => Err(io::Error::other("the memfd was shrunk")),
            }
        }
        // STORE: serves property store STORE until standard input closes.
        "prop-daemon" => {
            // A panic in any of its threads fails the test (the process
            // would go on without that thread).
            std::panic::set_hook(Box::new(|info| {
                eprintln!("the property daemon panicked: {info}");
                std::process::exit(70);
            }));
            let d = ipckit::prop::PropServer::builder(arg).start()?;
            println!("ready");
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            drop(d);
            Ok(())
        }
        // STORE: reads, lists and waits on the store while another process
        // scribbles on its area: errors are fine, a crash or a wait past
        // its timeout is not.
        "prop-reader" => {
            let props = ipckit::prop::Properties::open(arg)?;
            println!("ready");
            let (mut ok, mut errors, mut first) = (0u32, 0u32, None);
            for i in trials() {
                let t0 = Instant::now();
                let r = match i % 3 {
                    0 => props.get("hostile.a").map(drop),
                    1 => props.list("hostile").map(drop),
                    _ => props
                        .wait("hostile.a", ipckit::prop::Serial::default(), WAIT)
                        .map(drop),
                };
                if t0.elapsed() > WAIT + SLACK {
                    return Err(io::Error::other(format!(
                        "an operation took {:?}",
                        t0.elapsed()
                    )));
                }
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
            }
            println!("ok={ok} errors={errors} first error: {first:?}");
            Ok(())
        }
        // STORE:SEED: writes bytes an attacker likes at random places of
        // the store's area (the header and the first nodes most) until
        // killed.
        "prop-scribbler" => {
            let (store, seed) = arg.split_once(':').expect("STORE:SEED");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/dev/shm/ipckit-prop.{store}"))?;
            let len = f.metadata()?.len();
            let mut rng = Rng(seed.parse().map_err(io::Error::other)?);
            println!("ready");
            loop {
                let span = if rng.below(2) == 0 { 512.min(len) } else { len };
                let at = rng.below(span);
                let bytes = nasty(&mut rng);
                let n = (1 + rng.below(8)).min(len - at) as usize;
                std::os::unix::fs::FileExt::write_at(&f, &bytes[..n], at)?;
            }
        }
        // STORE: reads the store until its area is truncated under it:
        // then every operation must say so.
        "prop-truncated-reader" => {
            let props = ipckit::prop::Properties::open(arg)?;
            println!("ready");
            let end = Instant::now() + T;
            while Instant::now() < end {
                match props.get("hostile.a") {
                    Ok(_) => std::thread::yield_now(),
                    Err(e) if e.to_string().contains("shrank") => {
                        let results = [
                            ("list", props.list("").map(drop)),
                            ("get", props.get("hostile.b").map(drop)),
                            (
                                "wait",
                                props
                                    .wait("hostile.a", ipckit::prop::Serial::default(), WAIT)
                                    .map(drop),
                            ),
                        ];
                        for (what, r) in results {
                            match r {
                                Err(e) if e.to_string().contains("shrank") => {}
                                other => {
                                    return Err(io::Error::other(format!(
                                        "{what} after truncation: {other:?}"
                                    )))
                                }
                            }
                        }
                        println!("every operation reported the truncation: {e}");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::other("the truncation was never reported"))
        }
        // NAME: receives from ring NAME until its segment is truncated
        // under it: then every operation must say so.
        "ring-truncated-receiver" => {
            let ring = ipckit::ring::Ring::builder(arg).open()?;
            let mut rx = ring.receiver()?;
            let mut buf = Vec::new();
            rx.recv_timeout_into(&mut buf, T).map_err(io::Error::from)?;
            println!("ready");
            let end = Instant::now() + T;
            while Instant::now() < end {
                match rx.recv_timeout_into(&mut buf, WAIT) {
                    Ok(()) | Err(ipckit::RecvTimeoutError::Timeout) => {}
                    Err(e) if e.to_string().contains("truncated") => {
                        let again = rx.recv_timeout_into(&mut buf, WAIT);
                        match again {
                            Err(e) if e.to_string().contains("truncated") => {}
                            other => {
                                return Err(io::Error::other(format!(
                                    "a second receive after truncation: {other:?}"
                                )))
                            }
                        }
                        println!("every operation reported the truncation: {e}");
                        return Ok(());
                    }
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            Err(io::Error::other("the truncation was never reported"))
        }
        other => Err(io::Error::other(format!("unknown role {other}"))),
    }
}

/// Sets up `object` in a fresh region, runs a victim and a scribbler
/// against it, and checks the victim survived.
fn attack(object: &str) -> Result<(), Failed> {
    let m = Memfd::create("hostile", REGION)?;
    let mut name = String::new();
    let _named;
    match object {
        "mutex" => {
            Mutex::init(&m, OBJECT, [0u64; 2])?;
        }
        "condvar" => {
            Mutex::init(&m, SPARE_MUTEX, 0u32)?;
            Condvar::init(&m, OBJECT)?;
        }
        "unnamed-sem" => {
            UnnamedSemaphore::init(&m, OBJECT, 1)?;
        }
        "named-sem" => {
            name = format!("/{}", unique("sem"));
            _named = NamedSemaphore::builder(&name).value(1).create()?;
        }
        _ => {}
    }
    let victim = spawn_with("victim", &format!("{object}:{name}"), &m)?;
    let scribbler = if object == "named-sem" {
        spawn_with("named-sem-scribbler", &name, &m)?
    } else {
        let len = match object {
            "mutex" => Mutex::<[u64; 2]>::SIZE,
            "condvar" => Condvar::SIZE,
            "unnamed-sem" => UnnamedSemaphore::SIZE,
            _ => OBJECT_LEN,
        };
        spawn_with(
            "scribbler",
            &format!("{OBJECT}:{len}:{}", std::process::id()),
            &m,
        )?
    };
    let out = finish(&format!("the victim of a scribbled {object}"), victim);
    m.atomic_u32(DONE)?.store(1, Ordering::Release);
    finish("the scribbler", scribbler)?;
    let out = out?;
    eprintln!("{object}: {}", out.trim());
    Ok(())
}

fn robust_mutex_scribbled_by_peer() -> Result<(), Failed> {
    attack("mutex")
}

/// The finding as reported: a peer overwrites bytes 32..48 of a locked
/// mutex (where glibc kept its robust-list pointers), and the holder
/// unlocks.
fn robust_mutex_overwritten_while_locked() -> Result<(), Failed> {
    for fill in [0x41u8, 0x00, 0xff] {
        let m = Memfd::create("hostile", REGION)?;
        Mutex::init(&m, OBJECT, [0u64; 2])?;
        let victim = spawn_with("lock-overwrite-unlock", "", &m)?;
        wait_for(m.atomic_u32(OPENED)?, "the victim to lock")?;
        m.write(OBJECT + 32, &[fill; 16])?;
        m.atomic_u32(STARTED)?.store(1, Ordering::Release);
        m.atomic_u32(DONE)?.store(1, Ordering::Release);
        let out = finish(
            &format!("a holder whose mutex was overwritten with {fill:#x}"),
            victim,
        )?;
        eprintln!("fill {fill:#x}: {}", out.trim());
    }
    Ok(())
}

fn condvar_scribbled_by_peer() -> Result<(), Failed> {
    attack("condvar")
}

fn unnamed_semaphore_scribbled_by_peer() -> Result<(), Failed> {
    attack("unnamed-sem")
}

fn named_semaphore_scribbled_by_peer() -> Result<(), Failed> {
    attack("named-sem")
}

fn pod_views_scribbled_by_peer() -> Result<(), Failed> {
    attack("view")
}

fn atomics_scribbled_by_peer() -> Result<(), Failed> {
    attack("atomics")
}

/// Waits for the child's "ready" line.
fn ready(child: &mut Child) -> Result<(), Failed> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let mut r = BufReader::new(out);
    r.read_line(&mut line)?;
    ensure(line.trim() == "ready", || format!("peer said {line:?}"))?;
    child.stdout = Some(r.into_inner());
    Ok(())
}

/// Starts peer `role` on `arg`, waits until it is using the object, then
/// truncates `file` under it (as `truncate -s 0 FILE` would): the peer
/// must report the truncation on every operation, not die of SIGBUS.
fn truncate_under(role: &str, arg: &str, file: &str) -> Result<(), Failed> {
    let mut peer = peer_cmd(role, arg)?.spawn()?;
    ready(&mut peer)?;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)?
        .set_len(0)?;
    let out = finish(&format!("{role}, after {file} was truncated"), peer)?;
    ensure(
        out.contains("every operation reported the truncation"),
        || out,
    )
}

/// `truncate -s 0 /dev/shm/NAME` under a reader: the reader gets errors,
/// not SIGBUS.
fn sigbus_posix_shm_truncated_under_reader() -> Result<(), Failed> {
    let name = format!("/{}", unique("trunc"));
    let shm = Shm::builder(&name).size(64 << 10).create()?;
    init_truncation_targets(&shm)?;
    truncate_under("shm-reader", &name, &format!("/dev/shm{name}"))
}

/// A named semaphore's file truncated under a process using it (any
/// process that can open the semaphore can do that): errors, not SIGBUS.
fn sigbus_named_semaphore_truncated_under_user() -> Result<(), Failed> {
    let name = format!("/{}", unique("sem"));
    let _sem = NamedSemaphore::builder(&name).create()?;
    truncate_under(
        "named-sem-user",
        &name,
        &format!("/dev/shm/sem.{}", &name[1..]),
    )
}

/// A memfd is sealed against shrinking by default: a peer's `ftruncate`
/// through `/proc/PID/fd` is refused. An unsealed one received from a peer
/// is refused unless asked for; then its truncation is an error.
fn sigbus_memfd_sealed_and_unsealed_refused() -> Result<(), Failed> {
    let m = Memfd::create("sealed", 64 << 10)?;
    ensure(m.seals()?.contains(Seals::SHRINK), || {
        "a new memfd is not sealed against shrinking".into()
    })?;
    let shrinker = peer_cmd(
        "memfd-shrinker",
        &format!("{}:{}", std::process::id(), m.fd().as_raw_fd()),
    )?
    .spawn()?;
    let out = finish("the shrinker", shrinker)?;
    ensure(out.contains("refused"), || out)?;

    let open = Memfd::create_with_seals("open", 64 << 10, Seals::NONE)?;
    init_truncation_targets(&open)?;
    let refused = spawn_with("memfd-reader", "expect-refusal", &open)?;
    let out = finish("a receiver of an unsealed memfd", refused)?;
    ensure(
        out.contains("refused") && out.contains("from_fd_unsealed"),
        || out,
    )?;

    let mut reader = spawn_with("memfd-reader", "accept", &open)?;
    ready(&mut reader)?;
    std::thread::sleep(Duration::from_millis(20));
    let f = std::fs::File::from(open.fd().try_clone_to_owned()?);
    f.set_len(0)?;
    let out = finish("the reader of a truncated memfd", reader)?;
    ensure(
        out.contains("every operation reported the truncation"),
        || out,
    )
}

/// A property daemon process for `store`, serving until dropped.
fn prop_daemon(store: &str) -> Result<common::Serving, Failed> {
    common::start_serving("IPCKIT_HOSTILE_PEER", "prop-daemon", store)
}

/// Stops a daemon from [`prop_daemon`]: it must end cleanly, without a
/// panic in any of its threads.
fn stop_daemon(mut d: common::Serving) -> Result<(), Failed> {
    drop(d.child.stdin.take());
    let status = common::wait_bounded(&mut d.child, T, "the property daemon")?;
    ensure(status.success(), || {
        format!("the property daemon ended with {status}")
    })
}

/// A process scribbling over a property area while another reads it and
/// this one sets values through the daemon (which writes the same area):
/// readers and daemon get data or errors, never a crash or a hang.
fn prop_area_scribbled_under_readers() -> Result<(), Failed> {
    for seed in [1u64, 2, 3] {
        let store = unique("hprop");
        let d = prop_daemon(&store)?;
        let props = ipckit::prop::Properties::open(&store)?;
        for (n, v) in [("hostile.a", "1"), ("hostile.b", "2"), ("hostile.c.d", "3")] {
            props.set(n, v)?;
        }
        let mut reader = peer_cmd("prop-reader", &store)?.spawn()?;
        ready(&mut reader)?;
        let mut scribbler = peer_cmd("prop-scribbler", &format!("{store}:{seed}"))?.spawn()?;
        ready(&mut scribbler)?;
        let (mut set_ok, mut set_err) = (0u32, 0u32);
        let end = Instant::now() + ATTACK;
        while Instant::now() < end {
            let t0 = Instant::now();
            match props.set("hostile.a", &format!("v{set_ok}")) {
                Ok(()) => set_ok += 1,
                Err(_) => set_err += 1,
            }
            ensure(t0.elapsed() < T + SLACK, || {
                format!("a set took {:?}", t0.elapsed())
            })?;
        }
        let out = finish("the reader of a scribbled area", reader);
        scribbler.kill()?;
        scribbler.wait()?;
        let out = out?;
        stop_daemon(d)?;
        eprintln!(
            "seed {seed}: reader {}; sets ok={set_ok} errors={set_err}",
            out.trim()
        );
    }
    Ok(())
}

/// `truncate -s 0` of a property area under a reader: the reader is told
/// the area shrank, on every operation, and does not die of SIGBUS; the
/// daemon answers a set after it (with an error or not) and stops cleanly.
fn prop_area_truncated_under_reader() -> Result<(), Failed> {
    let store = unique("tprop");
    let d = prop_daemon(&store)?;
    let props = ipckit::prop::Properties::open(&store)?;
    props.set("hostile.a", "1")?;
    let mut reader = peer_cmd("prop-truncated-reader", &store)?.spawn()?;
    ready(&mut reader)?;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/ipckit-prop.{store}"))?
        .set_len(0)?;
    let out = finish("the reader of a truncated area", reader)?;
    ensure(
        out.contains("every operation reported the truncation"),
        || out.clone(),
    )?;
    let t0 = Instant::now();
    let set = ipckit::prop::Properties::open(&store).and_then(|p| p.set("hostile.a", "2"));
    ensure(t0.elapsed() < T + SLACK, || {
        format!("a set took {:?}", t0.elapsed())
    })?;
    eprintln!("{}; a set after it: {set:?}", out.trim());
    stop_daemon(d)
}

/// A named ring's segment truncated under its receiver (another process;
/// any process of the user can do it): the receiver is told the ring
/// shrank, the sender here too, and neither dies of SIGBUS.
fn ring_truncated_under_receiver() -> Result<(), Failed> {
    let name = unique("tring");
    let ring = ipckit::ring::Ring::builder(&name).capacity(16).create()?;
    let mut tx = ring.sender()?;
    let mut receiver = peer_cmd("ring-truncated-receiver", &name)?.spawn()?;
    let end = Instant::now() + T;
    // Keeps a message in the ring until the receiver is attached and has
    // taken one.
    let mut said = String::new();
    let out = receiver.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out);
    let reading = std::thread::spawn(move || {
        let r = lines.read_line(&mut said).map(|_| said);
        (r, lines)
    });
    while !reading.is_finished() && Instant::now() < end {
        let _ = tx.try_send(b"before");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (line, lines) = reading.join().map_err(|_| "reader thread")?;
    ensure(line?.trim() == "ready", || {
        "the receiver did not start".into()
    })?;
    receiver.stdout = Some(lines.into_inner());
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/ipckit-ring.{name}"))?
        .set_len(0)?;
    let out = finish("the receiver of a truncated ring", receiver)?;
    ensure(
        out.contains("every operation reported the truncation"),
        || out.clone(),
    )?;
    let sent = tx.send_timeout(b"after", WAIT);
    ensure(
        matches!(&sent, Err(e) if e.to_string().contains("truncated")),
        || format!("a send after truncation: {sent:?}"),
    )?;
    eprintln!("{}", out.trim());
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[("IPCKIT_HOSTILE_PEER", peer_main)],
        "hostile tests",
        Duration::from_secs(300),
    );
    common::run_cases(vec![
        (
            "shm_scribble::robust_mutex_scribbled_by_peer",
            robust_mutex_scribbled_by_peer,
        ),
        (
            "shm_scribble::robust_mutex_overwritten_while_locked",
            robust_mutex_overwritten_while_locked,
        ),
        (
            "shm_scribble::condvar_scribbled_by_peer",
            condvar_scribbled_by_peer,
        ),
        (
            "shm_scribble::unnamed_semaphore_scribbled_by_peer",
            unnamed_semaphore_scribbled_by_peer,
        ),
        (
            "shm_scribble::named_semaphore_scribbled_by_peer",
            named_semaphore_scribbled_by_peer,
        ),
        (
            "shm_scribble::pod_views_scribbled_by_peer",
            pod_views_scribbled_by_peer,
        ),
        (
            "shm_scribble::atomics_scribbled_by_peer",
            atomics_scribbled_by_peer,
        ),
        (
            "sigbus::posix_shm_truncated_under_reader",
            sigbus_posix_shm_truncated_under_reader,
        ),
        (
            "sigbus::named_semaphore_truncated_under_user",
            sigbus_named_semaphore_truncated_under_user,
        ),
        (
            "sigbus::memfd_sealed_and_unsealed_refused",
            sigbus_memfd_sealed_and_unsealed_refused,
        ),
        (
            "prop::area_scribbled_under_readers",
            prop_area_scribbled_under_readers,
        ),
        (
            "sigbus::prop_area_truncated_under_reader",
            prop_area_truncated_under_reader,
        ),
        (
            "sigbus::ring_truncated_under_receiver",
            ring_truncated_under_receiver,
        ),
    ]);
}
