//! Resource exhaustion: a process out of file descriptors (`EMFILE`), a
//! user over `RLIMIT_MSGQUEUE`, a full System V queue (`msgmnb`), a full
//! `/dev/shm`, a daemon with more clients than it serves. Each gives an
//! error that names the limit and what to do, never a panic or a hang,
//! and leaves nothing behind: no named object half made, no descriptor
//! open.
//!
//! This test binary re-executed with `IPCKIT_EXHAUST_PEER=<role>:<arg>`
//! plays the process under the limit.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ipckit::{Address, MessageReceiver, MessageSenderExt};
use libtest_mimic::Failed;

mod common;
use common::{ensure, object_exists, peer_command, unique, T};

const VAR: &str = "IPCKIT_EXHAUST_PEER";

/// The most descriptors any kind needs for its whole scenario.
const MOST: u32 = 24;

/// What a kind's scenario makes, by name: `NAME` is unique to the run.
struct Kind {
    name: &'static str,
    /// Runs the scenario: make, connect, one message each way it goes.
    run: fn(&str) -> Result<(), Refused>,
    /// Whether something named `NAME` of this kind still exists.
    left: fn(&str) -> Option<String>,
}

/// Where a scenario stopped and why.
struct Refused {
    step: &'static str,
    error: io::Error,
}

trait At<T> {
    fn at(self, step: &'static str) -> Result<T, Refused>;
}

impl<T, E: Into<io::Error>> At<T> for Result<T, E> {
    fn at(self, step: &'static str) -> Result<T, Refused> {
        self.map_err(|e| Refused {
            step,
            error: e.into(),
        })
    }
}

/// A message through a registry address: listen, connect, accept, send
/// one, receive it.
fn through_registry(addr: &str) -> Result<(), Refused> {
    let addr: Address = addr.parse().at("parse")?;
    let listener = ipckit::listen(&addr).at("listen")?;
    let at = listener.local_address().at("local_address")?;
    // From another thread: a FIFO's writer waits for its reader. Short
    // waits: when one side was refused, the other waits in vain, and the
    // refusal is what counts.
    let wait = Duration::from_secs(2);
    let connecting = std::thread::spawn(move || ipckit::connect_timeout(&at, Some(wait)));
    let accepted = listener.accept_timeout(wait).at("accept");
    let connected = connecting.join().expect("connect panicked").at("connect");
    let (mut tx, mut rx) = match (connected, accepted) {
        (Ok(tx), Ok(rx)) => (tx, rx),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(a), Err(b)) => {
            return Err(if a.error.kind() == io::ErrorKind::TimedOut {
                b
            } else {
                a
            })
        }
    };
    tx.send(b"through").at("send")?;
    let got = rx.recv_timeout(T).at("recv")?;
    assert_eq!(got, b"through");
    Ok(())
}

fn registry_address(scheme: &str, name: &str) -> String {
    ipckit::registry::find(scheme)
        .expect("a registered scheme")
        .scratch_address(name)
        .to_string()
}

fn left_at(addr: String) -> Option<String> {
    let a: Address = addr.parse().ok()?;
    object_exists(&a).then_some(addr)
}

macro_rules! registry_kind {
    ($scheme:literal) => {
        Kind {
            name: $scheme,
            run: |name| through_registry(&registry_address($scheme, name)),
            left: |name| left_at(registry_address($scheme, name)),
        }
    };
}

fn shm_run(name: &str) -> Result<(), Refused> {
    let shm = ipckit::shm::Shm::builder(format!("/{name}"))
        .size(64 << 10)
        .create()
        .at("Shm create")?;
    let other = ipckit::shm::Shm::builder(format!("/{name}"))
        .open()
        .at("Shm open")?;
    shm.write(100, b"seen").at("write")?;
    let mut b = [0u8; 4];
    other.read(100, &mut b).at("read")?;
    assert_eq!(&b, b"seen");
    Ok(())
}

fn sem_run(name: &str) -> Result<(), Refused> {
    use ipckit::sem::NamedSemaphore;
    let sem = NamedSemaphore::builder(format!("/{name}"))
        .create()
        .at("NamedSemaphore create")?;
    let other = NamedSemaphore::builder(format!("/{name}"))
        .open()
        .at("NamedSemaphore open")?;
    sem.post().at("post")?;
    other.wait_timeout(T).at("wait")?;
    Ok(())
}

fn ring_anon_run(_: &str) -> Result<(), Refused> {
    let ring = ipckit::ring::Ring::anonymous()
        .capacity(8)
        .create()
        .at("Ring anonymous create")?;
    let mut tx = ring.sender().at("sender")?;
    let mut rx = ring.receiver().at("receiver")?;
    tx.send(b"x").at("send")?;
    rx.recv_timeout(T).at("recv")?;
    Ok(())
}

fn memfd_run(_: &str) -> Result<(), Refused> {
    let m = ipckit::shm::Memfd::create("exhaust", 64 << 10).at("Memfd create")?;
    m.write(0, b"x").at("write")?;
    Ok(())
}

fn pipe_run(_: &str) -> Result<(), Refused> {
    let (r, w) = ipckit::pipe::pipe().at("pipe")?;
    let mut w = ipckit::pipe::Sender::new(w).at("Sender new")?;
    let mut r = ipckit::pipe::Receiver::new(r).at("Receiver new")?;
    w.send(b"x").at("send")?;
    r.recv_timeout(T).at("recv")?;
    Ok(())
}

fn prop_run(store: &str) -> Result<(), Refused> {
    let _d = ipckit::prop::PropServer::builder(store)
        .start()
        .at("PropServer start")?;
    let props = ipckit::prop::Properties::open(store).at("Properties open")?;
    props.set("exhaust.a", "1").at("set")?;
    let v = props.get("exhaust.a").at("get")?;
    assert_eq!(v.as_deref(), Some("1"));
    Ok(())
}

fn prop_left(store: &str) -> Option<String> {
    let p = format!("/dev/shm/ipckit-prop.{store}");
    Path::new(&p).exists().then_some(p)
}

fn broker_path(name: &str) -> String {
    format!("{}/{name}.sock", std::env::temp_dir().display())
}

fn broker_run(name: &str) -> Result<(), Refused> {
    let path = broker_path(name);
    let _b = ipckit::mailbox::Broker::builder()
        .socket(&path)
        .spawn()
        .at("Broker spawn")?;
    let mut c = ipckit::mailbox::Client::connect_to(&path).at("Client connect_to")?;
    c.stat(None).at("stat")?;
    Ok(())
}

fn socket_left(name: &str, path: String) -> Option<String> {
    let _ = name;
    Path::new(&path).exists().then_some(path)
}

fn binder_path(name: &str) -> String {
    format!("{}/{name}.binder", std::env::temp_dir().display())
}

fn binder_run(name: &str) -> Result<(), Refused> {
    use ipckit::binder::{ServiceManager, ServiceManagerServer};
    let path = binder_path(name);
    let addr: ipckit::socket::unix::UnixAddr = path.parse().at("parse")?;
    let _sm = ServiceManagerServer::builder()
        .bind(&addr)
        .at("ServiceManager bind")?;
    let sm = ServiceManager::connect_to(&addr).at("ServiceManager connect_to")?;
    sm.list_services().at("list_services")?;
    Ok(())
}

fn no_left(_: &str) -> Option<String> {
    None
}

fn kinds() -> Vec<Kind> {
    vec![
        registry_kind!("fifo"),
        registry_kind!("unix"),
        registry_kind!("unix-dgram"),
        registry_kind!("unix-seq"),
        registry_kind!("tcp"),
        registry_kind!("udp"),
        registry_kind!("mq"),
        registry_kind!("sysv-mq"),
        registry_kind!("ring"),
        registry_kind!("mailbox"),
        Kind {
            name: "pipe",
            run: pipe_run,
            left: no_left,
        },
        Kind {
            name: "shm",
            run: shm_run,
            left: |n| left_at(format!("shm:/{n}")),
        },
        Kind {
            name: "memfd",
            run: memfd_run,
            left: no_left,
        },
        Kind {
            name: "sem",
            run: sem_run,
            left: |n| left_at(format!("sem:/{n}")),
        },
        Kind {
            name: "ring-anonymous",
            run: ring_anon_run,
            left: no_left,
        },
        Kind {
            name: "prop",
            run: prop_run,
            left: prop_left,
        },
        Kind {
            name: "broker",
            run: broker_run,
            left: |n| socket_left(n, broker_path(n)),
        },
        Kind {
            name: "binder",
            run: binder_run,
            left: |n| socket_left(n, binder_path(n)),
        },
    ]
}

/// The descriptors this process has open, by number.
fn open_fds() -> io::Result<Vec<i32>> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The directory's own descriptor is in the list; it is closed now.
    fds.retain(|&fd| nix_fcntl_ok(fd));
    Ok(fds)
}

fn nix_fcntl_ok(fd: i32) -> bool {
    // SAFETY: F_GETFD on any number only reads the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn set_nofile(soft: u64) -> io::Result<()> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `now` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    now.rlim_cur = soft;
    // SAFETY: `now` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills every hole in the descriptor table (the limit is on numbers,
/// and the lowest free one is used) and lowers the open-file limit so
/// that exactly `k` more descriptors can be made. The fillers are
/// returned, to be closed once the limit is raised again.
fn leave_descriptors(k: u64) -> io::Result<Vec<std::fs::File>> {
    let top = *open_fds()?.last().unwrap_or(&2);
    let mut fillers = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null")?;
        if f.as_raw_fd() > top {
            break;
        }
        fillers.push(f);
    }
    set_nofile(top as u64 + 1 + k)?;
    Ok(fillers)
}

/// A peer's argument `A:B:C` as its three fields (missing ones empty).
fn fields(arg: &str) -> [&str; 3] {
    let mut parts = arg.splitn(3, ':');
    [(); 3].map(|()| parts.next().unwrap_or(""))
}

/// `budget:KIND:K:NAME`: fills every hole in the descriptor table, lowers
/// the open-file limit so that exactly `K` more descriptors can be made,
/// runs KIND's scenario, drops all it made, raises the limit again and
/// prints `ok` or `refused at STEP: ERROR`, then `leaked: FDS`.
fn budget(arg: &str) -> io::Result<()> {
    let [kind, k, name] = fields(arg);
    let k: u64 = k.parse().map_err(io::Error::other)?;
    let kind = kinds()
        .into_iter()
        .find(|x| x.name == kind)
        .ok_or_else(|| io::Error::other(format!("no kind {kind}")))?;
    let before = open_fds()?;
    let original = {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is a valid rlimit to fill in.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        r.rlim_cur
    };
    let fillers = leave_descriptors(k)?;
    let result = (kind.run)(name);
    set_nofile(original)?;
    drop(fillers);
    // Threads that end on their own (a server's connection being set up
    // when its client gave up) may hold a descriptor a little longer.
    let end = Instant::now() + Duration::from_secs(3);
    let after = loop {
        let mut after = open_fds()?;
        after.retain(|fd| !before.contains(fd));
        if after.is_empty() || Instant::now() > end {
            break after;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    match result {
        Ok(()) => println!("ok"),
        Err(r) => println!("refused at {}: {}", r.step, r.error),
    }
    println!("leaked: {after:?}");
    Ok(())
}

/// `msgqueue:NAME`: with `RLIMIT_MSGQUEUE` at 16 KiB, a small queue is
/// made and two that would pass the limit are refused (through the
/// builder and the registry); prints the refusals.
fn msgqueue(name: &str) -> io::Result<()> {
    use ipckit::mq::PosixQueue;
    let limit = libc::rlimit {
        rlim_cur: 16 << 10,
        rlim_max: 16 << 10,
    };
    // SAFETY: `limit` is a valid rlimit; lowering a limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_MSGQUEUE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let small = PosixQueue::builder(format!("/{name}-small"))
        .capacity(4, 1024)
        .create()?;
    let e = PosixQueue::builder(format!("/{name}-big"))
        .capacity(10, 8192)
        .create()
        .expect_err("a queue past RLIMIT_MSGQUEUE was made");
    println!("builder: {e}");
    let addr: Address = format!("mq:/{name}-default")
        .parse()
        .map_err(io::Error::other)?;
    let e = ipckit::listen(&addr)
        .map(drop)
        .expect_err("a queue past RLIMIT_MSGQUEUE was made through the registry");
    println!("registry: {e}");
    drop(small);
    Ok(())
}

/// `devshm:NAME`: in a mount namespace of its own with a 256 KiB tmpfs on
/// `/dev/shm`, first filled to the last page: shared memory, a named
/// semaphore, a ring and a property area are each refused, with what to
/// do, and leave nothing there. Prints each refusal, then what
/// `/dev/shm` holds.
fn devshm(name: &str) -> io::Result<()> {
    // SAFETY: flags only; this process is single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: null source, type and data are allowed for a propagation
    // change; the target is a NUL-terminated literal.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: NUL-terminated literals; tmpfs takes its size as data.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=256k,mode=1777".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Room for half: a 192 KiB object does not fit beside the filler.
    std::fs::write("/dev/shm/filler", vec![1u8; 128 << 10])?;
    let e = ipckit::shm::Shm::builder(format!("/{name}"))
        .size(192 << 10)
        .create()
        .expect_err("shared memory past the space");
    println!("shm: {e}");
    let e = ipckit::ring::Ring::builder(name)
        .capacity(64)
        .max_message_size(4096)
        .create()
        .expect_err("a ring past the space");
    println!("ring: {e}");
    // To the last page: nothing more fits.
    let free = {
        let st = free_bytes("/dev/shm")?;
        st as usize
    };
    std::fs::write("/dev/shm/filler2", vec![1u8; free])?;
    let e = ipckit::sem::NamedSemaphore::builder(format!("/{name}"))
        .create()
        .expect_err("a semaphore with no space");
    println!("sem: {e}");
    let e = ipckit::prop::PropServer::builder(name)
        .start()
        .map(drop)
        .expect_err("a property area with no space");
    println!("prop: {e}");
    let mut left: Vec<String> = std::fs::read_dir("/dev/shm")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("filler"))
        .collect();
    left.sort();
    println!("left: {left:?}");
    Ok(())
}

/// Free bytes of the file system at `path` (`statvfs(3)`).
fn free_bytes(path: &str) -> io::Result<u64> {
    let c = std::ffi::CString::new(path).map_err(io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated; statvfs fills `st`.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: filled by a successful statvfs.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail * st.f_frsize)
}

/// `daemon:KIND:NAME:SPARE`: runs a daemon of KIND (`prop`, `broker`,
/// `broker-max3` with `max_connections(3)`, `binder`) for NAME, then
/// lowers its open-file limit so that SPARE more descriptors can be made,
/// says `ready` and serves until standard input closes.
fn daemon(arg: &str) -> io::Result<()> {
    let [kind, name, spare] = fields(arg);
    let spare: u64 = spare.parse().map_err(io::Error::other)?;
    let held: Box<dyn std::any::Any> = match kind {
        "prop" => Box::new(ipckit::prop::PropServer::builder(name).start()?),
        "broker" => Box::new(
            ipckit::mailbox::Broker::builder()
                .socket(broker_path(name))
                .spawn()?,
        ),
        "broker-max3" => Box::new(
            ipckit::mailbox::Broker::builder()
                .socket(broker_path(name))
                .max_connections(3)
                .spawn()?,
        ),
        "binder" => {
            let addr: ipckit::socket::unix::UnixAddr =
                binder_path(name).parse().map_err(io::Error::other)?;
            Box::new(
                ipckit::binder::ServiceManagerServer::builder()
                    .bind(&addr)
                    .map_err(io::Error::other)?,
            )
        }
        _ => return Err(io::Error::other(format!("no daemon {kind}"))),
    };
    let _fillers = leave_descriptors(spare)?;
    println!("ready");
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    drop(held);
    Ok(())
}

fn peer(spec: &str) -> io::Result<()> {
    common::by_role(
        spec,
        &[
            ("budget", budget),
            ("msgqueue", msgqueue),
            ("devshm", devshm),
            ("daemon", daemon),
        ],
    )
}

/// Runs a peer to its end (killed after `T`): its exit status, standard
/// output and standard error (both read as they come, so a talkative
/// peer cannot block on a full pipe).
fn run_peer(role: &str, arg: &str) -> Result<(std::process::ExitStatus, String, String), Failed> {
    let mut child: Child = peer_command(VAR, role, arg)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().ok_or("no stdout")?));
    let err = drain(Box::new(child.stderr.take().ok_or("no stderr")?));
    let status = common::wait_bounded(&mut child, T, &format!("{role}:{arg}"))?;
    Ok((
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}

/// For every kind, with 0, 1, 2… descriptors to spare until it works: a
/// refusal is `EMFILE` in words ("open files"), nothing named is left,
/// and no descriptor stays open. Prints how many each kind needs.
fn every_kind_at_every_descriptor_budget() -> Result<(), Failed> {
    let mut needs = Vec::new();
    for kind in kinds() {
        let mut worked = None;
        let mut refusals = Vec::new();
        for k in 0..=MOST {
            let name = unique(&format!("fd{k}"));
            let (status, out, err) = run_peer("budget", &format!("{}:{k}:{name}", kind.name))?;
            let what = format!("{} with {k} descriptors to spare", kind.name);
            ensure(status.success(), || {
                format!("{what}: the peer ended with {status}: {out}{err}")
            })?;
            let mut lines = out.lines();
            let outcome = lines.next().unwrap_or_default().to_owned();
            let leaked = lines.next().unwrap_or_default();
            ensure(leaked == "leaked: []", || {
                format!("{what}: {outcome}; {leaked}")
            })?;
            if let Some(left) = (kind.left)(&name) {
                return Err(format!("{what}: {outcome}; {left} was left behind").into());
            }
            if outcome == "ok" {
                worked = Some(k);
                break;
            }
            ensure(outcome.starts_with("refused at "), || {
                format!("{what}: {out}{err}")
            })?;
            let named = [
                "open files",
                "open-file",
                "RLIMIT_NOFILE",
                "file descriptors",
            ];
            ensure(named.iter().any(|n| outcome.contains(n)), || {
                format!("{what}: the error does not name the limit: {outcome}")
            })?;
            refusals.push(outcome);
        }
        let Some(k) = worked else {
            return Err(format!("{} never worked with up to {MOST} descriptors", kind.name).into());
        };
        needs.push(format!("{} {k}", kind.name));
        for r in &refusals {
            eprintln!("  {}: {r}", kind.name);
        }
    }
    eprintln!("descriptors needed: {}", needs.join(", "));
    Ok(())
}

/// Over `RLIMIT_MSGQUEUE`: the error names the limit, how much the queue
/// needs and what to do, and no queue is left.
fn posix_queues_past_rlimit_msgqueue() -> Result<(), Failed> {
    let name = unique("mq");
    let (status, out, err) = run_peer("msgqueue", &name)?;
    ensure(status.success(), || format!("{status}: {out}{err}"))?;
    for line in out.lines() {
        ensure(
            line.contains("RLIMIT_MSGQUEUE")
                && line.contains("ulimit -q")
                && line.contains("ipc rm mq:/NAME"),
            || format!("the refusal does not say what to do: {line}"),
        )?;
    }
    ensure(out.lines().count() == 2, || out.clone())?;
    for q in ["small", "big", "default"] {
        let a: Address = format!("mq:/{name}-{q}").parse()?;
        ensure(!object_exists(&a), || format!("{a} was left"))?;
    }
    eprint!("{out}");
    Ok(())
}

/// A full `/dev/shm` (a small tmpfs in a mount namespace of the peer's
/// own): each kind that lives there is refused with words that say
/// `/dev/shm` is full, and nothing half made is left; no SIGBUS later,
/// since what is made is allocated at once.
fn full_dev_shm() -> Result<(), Failed> {
    let (status, out, err) = run_peer("devshm", &unique("full"))?;
    ensure(status.success(), || format!("{status}: {out}{err}"))?;
    for kind in ["shm", "ring", "sem", "prop"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{kind}: ")))
            .ok_or_else(|| format!("no {kind} line: {out}"))?;
        ensure(line.contains("/dev/shm") && line.contains("full"), || {
            format!("the refusal does not say /dev/shm is full: {line}")
        })?;
    }
    ensure(out.contains("left: []"), || format!("left behind: {out}"))?;
    eprint!("{out}");
    Ok(())
}

/// CPU ticks (user + system) process `pid` has used.
fn cpu_ticks(pid: u32) -> Result<u64, Failed> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// A client of each daemon, made and held by this process.
fn hold_client(kind: &str, name: &str) -> Result<Box<dyn std::any::Any>, String> {
    match kind {
        "prop" => {
            // A raw connection: the daemon gives it a thread and a
            // descriptor until it hangs up.
            let addr: ipckit::socket::unix::UnixAddr = format!("@ipckit-prop.{name}")
                .parse()
                .map_err(|e: io::Error| e.to_string())?;
            let mut c =
                ipckit::socket::unix::UnixStream::connect(&addr).map_err(|e| e.to_string())?;
            // A refusal comes at once, before any request: code, words.
            match c.recv_timeout(Duration::from_millis(100)) {
                Ok(reply) => Err(String::from_utf8_lossy(reply.get(4..).unwrap_or(&[])).into()),
                Err(ipckit::RecvTimeoutError::Timeout) => Ok(Box::new(c)),
                Err(e) => Err(e.to_string()),
            }
        }
        "broker" | "broker-max3" => ipckit::mailbox::Client::connect_to(broker_path(name))
            .map(|c| Box::new(c) as Box<dyn std::any::Any>)
            .map_err(|e| e.to_string()),
        _ => {
            let addr: ipckit::socket::unix::UnixAddr = binder_path(name)
                .parse()
                .map_err(|e: io::Error| e.to_string())?;
            ipckit::binder::ServiceManager::connect_to(&addr)
                .and_then(|sm| sm.list_services().map(|_| sm))
                .map(|c| Box::new(c) as Box<dyn std::any::Any>)
                .map_err(|e| e.to_string())
        }
    }
}

/// One request a client of `kind` makes and ends: how it went.
fn one_request(kind: &str, name: &str) -> Result<(), String> {
    match kind {
        "prop" => ipckit::prop::Properties::open(name)
            .and_then(|p| p.set("clients.n", "1"))
            .map_err(|e| e.to_string()),
        _ => hold_client(kind, name).map(drop),
    }
}

/// Daemons with more clients than descriptors (or than they take): a
/// client past the limit is told so at once, in words that name it, the
/// daemon does not spin, and once clients leave a new one is served.
fn daemons_refuse_clients_past_their_limits() -> Result<(), Failed> {
    for (kind, spare, says) in [
        ("prop", 4, "out of file descriptors"),
        ("prop", 200, "serving 64 clients, its most"),
        ("broker", 6, "out of file descriptors"),
        ("broker-max3", 100, "max_connections"),
        ("binder", 12, "out of file descriptors"),
    ] {
        let name = unique(kind);
        let d = common::start_serving(VAR, "daemon", &format!("{kind}:{name}:{spare}"))?;
        let pid = d.child.id();
        let mut held = Vec::new();
        let refusal = loop {
            if held.len() > 200 {
                return Err(format!("{kind}: 200 clients and no refusal").into());
            }
            let t0 = Instant::now();
            match hold_client(kind, &name) {
                Ok(c) => held.push(c),
                Err(e) => break (e, t0.elapsed()),
            }
        };
        let (e, took) = refusal;
        ensure(e.contains(says), || {
            format!("{kind}: refusal {e:?} does not say {says:?}")
        })?;
        ensure(took < Duration::from_secs(5), || {
            format!("{kind}: the refusal took {took:?}: {e}")
        })?;
        // A request refused again, then: no busy loop over it.
        let before = cpu_ticks(pid)?;
        let again = one_request(kind, &name);
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_ticks(pid)? - before;
        ensure(again.is_err(), || format!("{kind}: served past its limit"))?;
        ensure(used <= 10, || {
            format!("{kind}: the daemon used {used} ticks in 0.5 s at its limit")
        })?;
        let n = held.len();
        held.clear();
        // The daemon sees its clients go; then it serves again.
        let end = Instant::now() + T;
        let served = loop {
            match one_request(kind, &name) {
                Ok(()) => break true,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break false,
            }
        };
        ensure(served, || {
            format!("{kind}: not served after its clients left")
        })?;
        eprintln!("{kind}: {n} clients, then: {e}");
        drop(d);
    }
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(&[(VAR, peer)], "exhaustion tests", Duration::from_secs(600));
    if let Err(e) = common::start_broker() {
        eprintln!("cannot start the test broker: {e:?}");
        std::process::exit(1);
    }
    common::run_cases(vec![
        (
            "descriptors::every_kind_at_every_budget",
            every_kind_at_every_descriptor_budget,
        ),
        (
            "descriptors::daemons_refuse_clients_past_their_limits",
            daemons_refuse_clients_past_their_limits,
        ),
        (
            "msgqueue::posix_queues_past_rlimit_msgqueue",
            posix_queues_past_rlimit_msgqueue,
        ),
        ("devshm::full_dev_shm", full_dev_shm),
    ]);
}
