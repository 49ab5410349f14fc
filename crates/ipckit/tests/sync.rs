//! Semaphores, futexes, the robust mutex and the condition variable between
//! real processes: this test binary re-executed with
//! `IPCKIT_SYNC_PEER=<role>:<argument>` plays the other process. Peers that
//! share memory get it as a memfd on their standard input.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipckit::sem::{NamedSemaphore, SemOp, SemaphoreSet, UnnamedSemaphore};
use ipckit::shm::{Condvar, Futex, LockError, Memfd, Mutex};
use ipckit::sysv::Key;
use libtest_mimic::Failed;

mod common;
use common::{ensure, unique, unique_key, Peer, T};

/// Where the tests put things in a shared region.
const SEM_A: usize = 0;
const SEM_B: usize = 64;
const MUTEX: usize = 128;
const CONDVAR: usize = 256;
const FLAG: usize = 512;
const COUNT: usize = 520;

fn peer_cmd(role: &str, arg: &str) -> io::Result<Command> {
    common::peer_command("IPCKIT_SYNC_PEER", role, arg)
}

fn spawn(role: &str, arg: &str) -> Result<Peer, Failed> {
    Ok(Peer {
        child: peer_cmd(role, arg)?.spawn()?,
        _dir: None,
    })
}

/// Spawns a peer with `shm` on its standard input.
fn spawn_with(role: &str, arg: &str, shm: &Memfd) -> Result<Peer, Failed> {
    let fd: OwnedFd = shm.as_fd().try_clone_to_owned()?;
    Ok(Peer {
        child: peer_cmd(role, arg)?.stdin(Stdio::from(fd)).spawn()?,
        _dir: None,
    })
}

fn region() -> Result<Memfd, Failed> {
    Ok(Memfd::create("sync-test", 4096)?)
}

/// Waits (bounded) until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let end = Instant::now() + T;
    while !cond()? {
        if Instant::now() > end {
            return Err(io::Error::other(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn fail(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn peer_main(spec: &str) -> io::Result<()> {
    let (role, arg) = spec.split_once(':').expect("role:arg");
    let shm = || Memfd::from_fd(io::stdin().as_fd().try_clone_to_owned()?, false);
    match role {
        "named-post" => {
            let s = NamedSemaphore::builder(arg).open()?;
            s.post()?;
            s.v()?;
            s.post()
        }
        "named-wait" => {
            let s = NamedSemaphore::builder(arg).open()?;
            match s.wait_timeout(T)? {
                true => Ok(()),
                false => Err(fail("never posted".into())),
            }
        }
        // Ping-pong on two unnamed semaphores: wait A, count, post B.
        "unnamed" => {
            let m = shm()?;
            let (a, b) = (
                UnnamedSemaphore::open(&m, SEM_A)?,
                UnnamedSemaphore::open(&m, SEM_B)?,
            );
            let count = m.atomic_u64(COUNT)?;
            for _ in 0..arg.parse::<u64>().map_err(io::Error::other)? {
                if !a.wait_timeout(T)? {
                    return Err(fail("no post on A".into()));
                }
                count.fetch_add(1, Ordering::Relaxed);
                b.post()?;
            }
            Ok(())
        }
        // glibc's sem_open/sem_post/sem_wait on ipckit's named semaphores
        // "UP,DOWN": post UP 3 times, then sleep in sem_wait on DOWN until
        // the parent posts it.
        "glibc-sem" => {
            let open = |name: &str| {
                let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
                // SAFETY: a NUL-terminated name; no O_CREAT, so no variadics.
                let sem = unsafe { libc::sem_open(c.as_ptr(), 0) };
                if sem == libc::SEM_FAILED {
                    return Err(io::Error::last_os_error());
                }
                Ok(sem)
            };
            let (up, down) = arg.split_once(',').expect("UP,DOWN");
            let (up, down) = (open(up)?, open(down)?);
            for _ in 0..3 {
                // SAFETY: `up` was opened above and is never closed.
                if unsafe { libc::sem_post(up) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // SAFETY: as above, for `down`.
            if unsafe { libc::sem_wait(down) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        // A thread takes the lock and ends without unlocking: the main
        // thread gets OwnerDied, not a deadlock.
        "thread-dies-holding" => {
            let m = shm()?;
            let mutex = Mutex::<u64>::open(&m, MUTEX)?;
            std::thread::scope(|s| {
                s.spawn(|| {
                    let g = mutex.lock().map_err(io::Error::from)?;
                    std::mem::forget(g);
                    io::Result::Ok(())
                })
                .join()
                .map_err(|_| fail("the locking thread panicked".into()))?
            })?;
            let r = match mutex.lock_timeout(T) {
                Err(LockError::OwnerDied(mut g)) => g.make_consistent(),
                other => Err(fail(format!("expected OwnerDied, got {other:?}"))),
            };
            r
        }
        // Take semaphores 0 and 1 of a set together.
        "sysv-both" => {
            let set = SemaphoreSet::builder(arg.parse()?)
                .len(2)
                .create_or_open()?;
            match set.apply_timeout(&[SemOp::wait(0), SemOp::wait(1)], T)? {
                true => Ok(()),
                false => Err(fail("never got both".into())),
            }
        }
        "sysv-zero" => {
            let set = SemaphoreSet::builder(arg.parse()?).open()?;
            match set.apply_timeout(&[SemOp::wait_zero(0)], T)? {
                true => Ok(()),
                false => Err(fail("never zero".into())),
            }
        }
        // Take semaphore 0 (with or without SEM_UNDO), then hang until killed.
        "sysv-hold" | "sysv-hold-no-undo" => {
            let set = SemaphoreSet::builder(arg.parse()?).open()?;
            let op = SemOp::wait(0);
            set.apply(&[if role == "sysv-hold" { op.undo() } else { op }])?;
            std::thread::sleep(T);
            Err(fail("not killed".into()))
        }
        // Wait on a set that the parent removes.
        "sysv-removed" => {
            let set = SemaphoreSet::open_id(arg.parse().map_err(io::Error::other)?)?;
            match set.apply_timeout(&[SemOp::wait(0)], T) {
                Err(e) if e.to_string().contains("was removed") => Ok(()),
                other => Err(fail(format!("expected a removal error, got {other:?}"))),
            }
        }
        // Lock, write 7, raise the flag, hang until killed.
        "die-holding" => {
            let m = shm()?;
            let mutex = Mutex::<u64>::open(&m, MUTEX)?;
            let mut g = mutex.lock().map_err(io::Error::from)?;
            g.set(7);
            m.atomic_u32(FLAG)?.store(1, Ordering::Release);
            std::thread::sleep(T);
            drop(g);
            Err(fail("not killed".into()))
        }
        // The lock is held by the parent: try_lock and lock_timeout fail.
        "lock-busy" => {
            let m = shm()?;
            let mutex = Mutex::<u64>::open(&m, MUTEX)?;
            if mutex.try_lock().map_err(io::Error::from)?.is_some() {
                return Err(fail("try_lock succeeded on a held lock".into()));
            }
            let t0 = Instant::now();
            if mutex
                .lock_timeout(Duration::from_millis(200))
                .map_err(io::Error::from)?
                .is_some()
            {
                return Err(fail("lock_timeout succeeded on a held lock".into()));
            }
            if t0.elapsed() < Duration::from_millis(200) {
                return Err(fail(format!("gave up after {:?}", t0.elapsed())));
            }
            Ok(())
        }
        // Increment both halves of a pair, non-atomically, under the lock.
        "stress" => {
            let m = shm()?;
            let mutex = Mutex::<[u64; 2]>::open(&m, MUTEX)?;
            for i in 0..arg.parse::<u64>().map_err(io::Error::other)? {
                let mut g = mutex.lock().map_err(io::Error::from)?;
                let [a, b] = g.get();
                if a != b {
                    return Err(fail(format!("torn pair {a} {b}")));
                }
                g.set([a + 1, a]);
                if i % 16 == 0 {
                    std::thread::yield_now();
                }
                g.set([a + 1, b + 1]);
            }
            Ok(())
        }
        // Take items one at a time, announced on condvar "more"; say so on
        // "room". [available, taken, done]. Waits without a timeout: a lost
        // wake-up hangs this process, and the parent's bounded wait fails.
        "consumer" => {
            let m = shm()?;
            let mutex = Mutex::<[u32; 3]>::open(&m, MUTEX)?;
            let more = Condvar::open(&m, CONDVAR)?;
            let room = Condvar::open(&m, CONDVAR + 64)?;
            let mut g = mutex.lock().map_err(io::Error::from)?;
            loop {
                while g.get()[0] == 0 && g.get()[2] == 0 {
                    g = more.wait(g).map_err(io::Error::from)?;
                }
                let [available, taken, done] = g.get();
                if available == 0 && done == 1 {
                    return Ok(());
                }
                g.set([available - 1, taken + 1, done]);
                room.notify_one()?;
            }
        }
        // Sleep on a futex until the word changes.
        "futex" => {
            let m = shm()?;
            let f = Futex::new(m.atomic_u32(FLAG)?);
            let end = Instant::now() + T;
            while f.word().load(Ordering::Acquire) == 0 {
                if Instant::now() > end {
                    return Err(fail("never woken".into()));
                }
                f.wait_timeout(0, T)?;
            }
            Ok(())
        }
        other => Err(fail(format!("unknown role {other}"))),
    }
}

/// A named semaphore posted by one process wakes another; a waiting peer
/// sleeps until posted.
fn named_across_processes() -> Result<(), Failed> {
    let name = format!("/{}", unique("sem"));
    let s = NamedSemaphore::builder(&name).value(0).create()?;
    let mut poster = spawn("named-post", &name)?;
    for i in 0..3 {
        ensure(s.wait_timeout(T)?, || format!("post {i} never came"))?;
    }
    ensure(poster.wait()?, || "the poster failed".into())?;
    ensure(!s.try_wait()?, || "a fourth post appeared".into())?;

    let mut waiter = spawn("named-wait", &name)?;
    std::thread::sleep(Duration::from_millis(200));
    ensure(waiter.child.try_wait()?.is_none(), || {
        "the waiter did not wait for a post".into()
    })?;
    s.v()?;
    ensure(waiter.wait()?, || "the waiter failed".into())?;
    ensure(s.value()? == 0, || {
        "the waiter did not take the post".into()
    })
}

/// Timeouts end waits that nothing satisfies, having waited the time.
fn timed_waits_time_out() -> Result<(), Failed> {
    let name = format!("/{}", unique("sem"));
    let s = NamedSemaphore::builder(&name).create()?;
    let t0 = Instant::now();
    ensure(!s.wait_timeout(Duration::from_millis(150))?, || {
        "a wait on 0 succeeded".into()
    })?;
    ensure(t0.elapsed() >= Duration::from_millis(150), || {
        format!("gave up after {:?}", t0.elapsed())
    })?;
    let set = SemaphoreSet::private().len(1).create()?;
    let t0 = Instant::now();
    ensure(
        !set.apply_timeout(&[SemOp::wait(0)], Duration::from_millis(150))?,
        || "a System V wait on 0 succeeded".into(),
    )?;
    ensure(t0.elapsed() >= Duration::from_millis(150), || {
        format!("System V wait gave up after {:?}", t0.elapsed())
    })?;
    ensure(!set.try_apply(&[SemOp::wait(0)])?, || {
        "IPC_NOWAIT took from 0".into()
    })?;
    let m = region()?;
    let mutex = Mutex::init(&m, MUTEX, 0u32)?;
    let cv = Condvar::init(&m, CONDVAR)?;
    let g = mutex.lock().map_err(io::Error::from)?;
    let t0 = Instant::now();
    let (_g, timed_out) = cv
        .wait_timeout(g, Duration::from_millis(150))
        .map_err(io::Error::from)?;
    ensure(
        timed_out && t0.elapsed() >= Duration::from_millis(150),
        || {
            format!(
                "condvar wait: timed out {timed_out} after {:?}",
                t0.elapsed()
            )
        },
    )?;
    let f = Futex::new(m.atomic_u32(FLAG)?);
    ensure(!f.wait_timeout(0, Duration::from_millis(50))?, || {
        "futex wait did not time out".into()
    })?;
    // A futex whose word differs returns at once.
    ensure(f.wait_timeout(1, T)?, || {
        "futex waited on a changed word".into()
    })
}

/// Names, values, create/open rules and removal of named semaphores.
fn named_rules_and_errors() -> Result<(), Failed> {
    let err = |r: io::Result<NamedSemaphore>| r.map(drop).unwrap_err();
    for (bad, why) in [
        ("nosl", "start with a slash"),
        ("/a/b", "second slash"),
        ("/", "empty"),
    ] {
        let e = err(NamedSemaphore::builder(bad).create());
        ensure(e.to_string().contains(why), || format!("{bad}: {e}"))?;
    }
    let long = format!("/{}", "x".repeat(252));
    let e = err(NamedSemaphore::builder(&long).create());
    ensure(e.to_string().contains("at most 251"), || e.to_string())?;
    let name = format!("/{}", unique("sem"));
    let e = err(NamedSemaphore::builder(&name).value(u32::MAX).create());
    ensure(e.to_string().contains("SEM_VALUE_MAX"), || e.to_string())?;
    let e = err(NamedSemaphore::builder(&name).open());
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("create it first"),
        || e.to_string(),
    )?;

    let s = NamedSemaphore::builder(&name).value(2).create()?;
    let file = format!("/dev/shm/sem.{}", &name[1..]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
    ensure(mode == 0o600, || format!("mode {mode:o}"))?;
    let e = err(NamedSemaphore::builder(&name).create());
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    let other = NamedSemaphore::builder(&name).value(9).create_or_open()?;
    ensure(other.value()? == 2, || {
        "create_or_open reset the value".into()
    })?;
    ensure(s.try_wait()? && s.try_wait()? && !s.try_wait()?, || {
        "value 2 did not allow exactly two".into()
    })?;
    drop(other); // opened, not created: the name stays
    ensure(std::fs::metadata(&file).is_ok(), || {
        "an opener unlinked".into()
    })?;
    drop(s);
    ensure(std::fs::metadata(&file).is_err(), || {
        "the creator left it".into()
    })?;

    let mut kept = NamedSemaphore::builder(&name).keep(true).create()?;
    kept.keep();
    drop(kept);
    ipckit::sem::unlink(&name)?;
    let e = ipckit::sem::unlink(&name).unwrap_err();
    ensure(e.to_string().contains("no POSIX semaphore"), || {
        e.to_string()
    })?;
    // V beyond SEM_VALUE_MAX.
    let full = NamedSemaphore::builder(&name)
        .value(ipckit::sem::SEM_VALUE_MAX)
        .create()?;
    let e = full.post().unwrap_err();
    ensure(e.to_string().contains("SEM_VALUE_MAX"), || e.to_string())
}

/// ipckit's named semaphores are glibc's: a C program's sem_post reaches
/// an ipckit waiter, ipckit's post wakes a C program in sem_wait, and a
/// semaphore made by sem_open opens in ipckit.
fn named_interop_with_glibc() -> Result<(), Failed> {
    let (up, down) = (format!("/{}", unique("up")), format!("/{}", unique("down")));
    let up_sem = NamedSemaphore::builder(&up).value(0).create()?;
    let down_sem = NamedSemaphore::builder(&down).value(0).create()?;
    let mut peer = spawn("glibc-sem", &format!("{up},{down}"))?;
    for i in 0..3 {
        ensure(up_sem.wait_timeout(T)?, || {
            format!("post {i} from glibc never came")
        })?;
    }
    // The peer is (or soon will be) asleep in glibc's sem_wait.
    std::thread::sleep(Duration::from_millis(50));
    down_sem.post()?;
    ensure(peer.wait()?, || "glibc's sem_wait was not woken".into())?;

    let other = format!("/{}", unique("sem"));
    let c = std::ffi::CString::new(other.clone())?;
    // SAFETY: a NUL-terminated name; O_CREAT takes a mode_t and an unsigned
    // value, passed with those types.
    let sem = unsafe {
        libc::sem_open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL,
            0o600 as libc::mode_t,
            2 as libc::c_uint,
        )
    };
    ensure(sem != libc::SEM_FAILED, || "sem_open failed".into())?;
    let opened = NamedSemaphore::builder(&other).open();
    // SAFETY: opened above, not used again.
    unsafe { libc::sem_close(sem) };
    let v = opened.and_then(|o| o.value());
    ipckit::sem::unlink(&other)?;
    ensure(v? == 2, || "ipckit read another value".into())
}

/// A symbolic link planted at a semaphore's name is refused, not
/// followed; the creator's drop removes only the file it created.
fn named_symlink_and_replaced_file() -> Result<(), Failed> {
    let name = format!("/{}", unique("sem"));
    let file = format!("/dev/shm/sem.{}", &name[1..]);
    let target = format!("/dev/shm/{}", unique("target"));
    std::fs::write(&target, [0u8; 32])?;
    std::os::unix::fs::symlink(&target, &file)?;
    let e = NamedSemaphore::builder(&name).open().map(drop).unwrap_err();
    std::fs::remove_file(&file)?;
    std::fs::remove_file(&target)?;
    ensure(e.to_string().contains("symbolic link"), || e.to_string())?;

    let s = NamedSemaphore::builder(&name).create()?;
    std::fs::remove_file(&file)?;
    std::fs::write(&file, b"someone else's")?;
    drop(s);
    let kept = std::fs::read(&file);
    std::fs::remove_file(&file)?;
    ensure(kept.is_ok(), || {
        "the creator removed a file it did not create".into()
    })
}

/// Unnamed semaphores in a memfd drive a ping-pong with another process;
/// misplaced ones are refused.
fn unnamed_in_shared_memory() -> Result<(), Failed> {
    let m = region()?;
    let e = UnnamedSemaphore::open(&m, SEM_A).unwrap_err();
    ensure(e.to_string().contains("has not run"), || e.to_string())?;
    let a = UnnamedSemaphore::init(&m, SEM_A, 0)?;
    let b = UnnamedSemaphore::init(&m, SEM_B, 0)?;
    let n = 1000;
    let mut peer = spawn_with("unnamed", &n.to_string(), &m)?;
    for i in 0..n {
        a.post()?;
        ensure(b.wait_timeout(T)?, || format!("round {i}: no answer"))?;
    }
    ensure(peer.wait()?, || "the peer failed".into())?;
    let count = m.atomic_u64(COUNT)?.load(Ordering::Relaxed);
    ensure(count == n, || format!("the peer counted {count}"))?;
    for (off, why) in [(4, "misaligned"), (4096 - 8, "do not fit")] {
        let e = UnnamedSemaphore::init(&m, off, 0).unwrap_err();
        ensure(e.to_string().contains(why), || format!("{off}: {e}"))?;
    }
    let ro = Memfd::from_fd(m.as_fd().try_clone_to_owned()?, true)?;
    let e = UnnamedSemaphore::open(&ro, SEM_A).unwrap_err();
    ensure(e.to_string().contains("read-only"), || e.to_string())
}

/// A set's operations apply atomically across processes; wait-for-zero.
fn sysv_atomic_ops_and_zero() -> Result<(), Failed> {
    let key = unique_key();
    let set = SemaphoreSet::builder(key)
        .values(&[1, 0])
        .create_or_open()?;
    let mut both = spawn("sysv-both", &key.to_string())?;
    until("the peer to wait", || Ok(set.waiting(1)? == 1))?;
    // Semaphore 0 could be taken, but not alone: nothing was applied.
    ensure(set.get_all()? == [1, 0], || "a partial operation".into())?;
    ensure(set.waiting(0)? == 0, || "counted as waiting on 0".into())?;
    set.v(1)?;
    ensure(both.wait()?, || "the peer failed".into())?;
    ensure(set.get_all()? == [0, 0], || format!("{:?}", set.get_all()))?;
    ensure(set.last_pid(0)? == Some(both.child.id()), || {
        "GETPID is not the peer".into()
    })?;

    set.set(0, 2)?;
    let mut zero = spawn("sysv-zero", &key.to_string())?;
    until("the peer to wait for zero", || {
        Ok(set.waiting_for_zero(0)? == 1)
    })?;
    set.p(0)?;
    ensure(zero.child.try_wait()?.is_none(), || {
        "woke before zero".into()
    })?;
    set.wait(0)?;
    ensure(zero.wait()?, || "the zero waiter failed".into())
}

/// SEM_UNDO gives back what a process killed with SIGKILL held; without
/// it, the count stays taken.
fn sysv_sem_undo_after_kill() -> Result<(), Failed> {
    for (role, restored) in [("sysv-hold", true), ("sysv-hold-no-undo", false)] {
        let key = unique_key();
        let set = SemaphoreSet::builder(key).values(&[1]).create()?;
        let mut holder = spawn(role, &key.to_string())?;
        until("the peer to take it", || Ok(set.get(0)? == 0))?;
        holder.child.kill()?; // SIGKILL
        holder.child.wait()?;
        until("the kernel to clean up", || {
            Ok(!std::path::Path::new(&format!("/proc/{}", holder.child.id())).exists())
        })?;
        let v = set.get(0)?;
        ensure(v == u16::from(restored), || {
            format!("{role}: value {v} after kill -9")
        })?;
    }
    Ok(())
}

/// Removing a set wakes a process waiting on it with a clear error.
fn sysv_removal_wakes_waiters() -> Result<(), Failed> {
    let set = SemaphoreSet::private().len(1).create()?;
    let mut waiter = spawn("sysv-removed", &set.id().to_string())?;
    until("the peer to wait", || Ok(set.waiting(0)? == 1))?;
    let id = set.id();
    set.remove()?;
    ensure(waiter.wait()?, || {
        "the waiter did not report the removal".into()
    })?;
    let e = SemaphoreSet::open_id(id).unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())
}

/// Values, limits, status and the create/open/remove rules of sets.
fn sysv_values_and_rules() -> Result<(), Failed> {
    let key = unique_key();
    let e = SemaphoreSet::builder(key).create().unwrap_err();
    ensure(e.to_string().contains("at least one"), || e.to_string())?;
    let e = SemaphoreSet::builder(key)
        .values(&[40000])
        .create()
        .unwrap_err();
    ensure(e.to_string().contains("32767"), || e.to_string())?;
    let e = SemaphoreSet::builder(key).open().unwrap_err();
    ensure(e.to_string().contains("create it first"), || e.to_string())?;

    let set = SemaphoreSet::builder(key).values(&[3, 0, 5]).create()?;
    ensure(set.len() == 3 && set.get_all()? == [3, 0, 5], || {
        "initial values".into()
    })?;
    let st = set.status()?;
    ensure(
        st.len == 3 && st.perm.mode == 0o600 && st.perm.key == key && st.last_op.is_some(),
        || format!("{st:?}"),
    )?;
    let e = SemaphoreSet::builder(key).len(1).create().unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    let e = SemaphoreSet::builder(key).len(4).open().unwrap_err();
    ensure(e.to_string().contains("fewer than the 4"), || e.to_string())?;
    let e = set.get(3).unwrap_err();
    ensure(e.to_string().contains("out of range"), || e.to_string())?;
    let e = set.apply(&[SemOp::post(7)]).unwrap_err();
    ensure(e.to_string().contains("out of range"), || e.to_string())?;
    set.set_all(&[1, 2, 32767])?;
    let e = set.post(2).unwrap_err();
    ensure(e.to_string().contains("SEMVMX"), || e.to_string())?;
    ensure(set.get_all()? == [1, 2, 32767], || {
        "ERANGE changed values".into()
    })?;
    let e = set.set_all(&[1]).unwrap_err();
    ensure(e.to_string().contains("1 values for a set of 3"), || {
        e.to_string()
    })?;
    set.apply(&[SemOp::add(1, -2), SemOp::add(0, 4)])?;
    ensure(set.get_all()? == [5, 0, 32767], || {
        format!("{:?}", set.get_all())
    })?;
    set.set_mode(0o640)?;
    ensure(set.status()?.perm.mode == 0o640, || "mode not set".into())?;

    let opened = SemaphoreSet::builder(key).open()?;
    ensure(opened.id() == set.id() && opened.len() == 3, || {
        "open".into()
    })?;
    drop(opened);
    let kept = SemaphoreSet::builder(unique_key())
        .len(1)
        .keep(true)
        .create()?;
    let kept_key = kept.key();
    drop(kept);
    ipckit::sem::remove_set(kept_key)?;
    let e = ipckit::sem::remove_set(kept_key).unwrap_err();
    ensure(e.to_string().contains("no System V semaphore set"), || {
        e.to_string()
    })?;
    let e = ipckit::sem::remove_set(Key::PRIVATE).unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())?;
    drop(set);
    ensure(SemaphoreSet::builder(key).open().is_err(), || {
        "the creator left it".into()
    })
}

/// The robust mutex: a holder killed with SIGKILL is reported to the next
/// locker, who repairs; not repairing makes the mutex unusable.
fn mutex_owner_death() -> Result<(), Failed> {
    for repair in [true, false] {
        let m = region()?;
        let mutex = Mutex::init(&m, MUTEX, 0u64)?;
        let flag = m.atomic_u32(FLAG)?;
        let mut holder = spawn_with("die-holding", "", &m)?;
        until("the peer to lock", || Ok(flag.load(Ordering::Acquire) == 1))?;
        holder.child.kill()?;
        holder.child.wait()?;
        match mutex.lock_timeout(T) {
            Err(LockError::OwnerDied(mut g)) => {
                ensure(g.is_inconsistent() && g.get() == 7, || {
                    format!("{g:?} value {}", g.get())
                })?;
                if repair {
                    g.set(8);
                    g.make_consistent()?;
                }
            }
            other => return Err(format!("expected OwnerDied, got {other:?}").into()),
        }
        match (repair, mutex.lock()) {
            (true, Ok(g)) => ensure(g.get() == 8 && !g.is_inconsistent(), || {
                "repair lost".into()
            })?,
            (false, Err(LockError::NotRecoverable)) => {}
            (_, other) => return Err(format!("repair {repair}: {other:?}").into()),
        };
    }
    Ok(())
}

/// A thread that ends holding the lock is a dead owner too.
fn mutex_thread_death() -> Result<(), Failed> {
    let m = region()?;
    Mutex::init(&m, MUTEX, 0u64)?;
    let mut peer = spawn_with("thread-dies-holding", "", &m)?;
    ensure(peer.wait()?, || "the peer failed (see its stderr)".into())
}

/// Mutex errors: held elsewhere, relocked by its holder, not initialised,
/// another type, misplaced.
fn mutex_rules() -> Result<(), Failed> {
    let m = region()?;
    let e = Mutex::<u64>::open(&m, MUTEX).unwrap_err();
    ensure(e.to_string().contains("has not run"), || e.to_string())?;
    let mutex = Mutex::init(&m, MUTEX, 5u64)?;
    let e = Mutex::<[u64; 2]>::open(&m, MUTEX).unwrap_err();
    ensure(e.to_string().contains("guards 8 bytes"), || e.to_string())?;
    let e = Mutex::init(&m, 4, 0u64).unwrap_err();
    ensure(e.to_string().contains("misaligned"), || e.to_string())?;
    let e = Mutex::init(&m, 4096 - 16, 0u64).unwrap_err();
    ensure(e.to_string().contains("do not fit"), || e.to_string())?;
    let e = Condvar::open(&m, CONDVAR).unwrap_err();
    ensure(e.to_string().contains("has not run"), || e.to_string())?;

    let g = mutex.lock().map_err(io::Error::from)?;
    match mutex.try_lock() {
        Err(LockError::Io(e)) if e.to_string().contains("already holds") => {}
        other => return Err(format!("relock: {other:?}").into()),
    }
    let mut busy = spawn_with("lock-busy", "", &m)?;
    ensure(busy.wait()?, || "the peer got a held lock".into())?;
    drop(g);
    let g = mutex.try_lock().map_err(io::Error::from)?;
    ensure(g.is_some_and(|g| g.get() == 5), || {
        "try_lock on a free lock".into()
    })
}

/// Four processes increment a pair under the lock: no update is lost and
/// no one sees a half-written pair.
fn mutex_stress_across_processes() -> Result<(), Failed> {
    let m = region()?;
    let mutex = Mutex::init(&m, MUTEX, [0u64; 2])?;
    let (procs, each) = (4, 3000u64);
    let mut peers = (0..procs)
        .map(|_| spawn_with("stress", &each.to_string(), &m))
        .collect::<Result<Vec<_>, _>>()?;
    for p in &mut peers {
        ensure(p.wait()?, || "a peer failed".into())?;
    }
    let v = mutex.lock().map_err(io::Error::from)?.get();
    ensure(v == [procs * each; 2], || format!("pair {v:?}"))
}

/// A producer hands items one by one to three consumer processes through
/// two condition variables (every wake-up must arrive, or a process hangs
/// and the bounded waits fail); a futex wakes a sleeping process.
fn condvar_and_futex_across_processes() -> Result<(), Failed> {
    let m = region()?;
    let mutex = Mutex::init(&m, MUTEX, [0u32; 3])?;
    let more = Condvar::init(&m, CONDVAR)?;
    let room = Condvar::init(&m, CONDVAR + 64)?;
    let n = 600;
    let mut consumers = (0..3)
        .map(|_| spawn_with("consumer", "", &m))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..n {
        let mut g = mutex.lock().map_err(io::Error::from)?;
        while g.get()[0] != 0 {
            let (next, timed_out) = room.wait_timeout(g, T).map_err(io::Error::from)?;
            g = next;
            ensure(!timed_out, || {
                format!("item {i}: no consumer took the last one")
            })?;
        }
        g.update(|v| v[0] = 1);
        drop(g);
        more.notify_one()?;
    }
    mutex.lock().map_err(io::Error::from)?.update(|v| v[2] = 1);
    more.notify_all()?;
    for c in &mut consumers {
        ensure(c.wait()?, || "a consumer failed or hung".into())?;
    }
    let v = mutex.lock().map_err(io::Error::from)?.get();
    ensure(v == [0, n, 1], || format!("state {v:?}"))?;

    let mut sleeper = spawn_with("futex", "", &m)?;
    std::thread::sleep(Duration::from_millis(100));
    let word = m.atomic_u32(FLAG)?;
    word.store(1, Ordering::Release);
    Futex::new(word).wake_all()?;
    ensure(sleeper.wait()?, || "the futex sleeper failed".into())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[("IPCKIT_SYNC_PEER", peer_main)],
        "sync tests",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("posix_sem::named_across_processes", named_across_processes),
        (
            "posix_sem::named_interop_with_glibc",
            named_interop_with_glibc,
        ),
        (
            "posix_sem::named_symlink_refused_and_replaced_file_kept",
            named_symlink_and_replaced_file,
        ),
        (
            "mutex::thread_exiting_while_holding_is_owner_death",
            mutex_thread_death,
        ),
        (
            "posix_sem::names_values_and_removal",
            named_rules_and_errors,
        ),
        (
            "posix_sem::unnamed_in_shared_memory",
            unnamed_in_shared_memory,
        ),
        ("timeouts::every_wait_times_out", timed_waits_time_out),
        (
            "sysv_sem::atomic_ops_and_wait_for_zero",
            sysv_atomic_ops_and_zero,
        ),
        ("sysv_sem::sem_undo_after_kill_9", sysv_sem_undo_after_kill),
        (
            "sysv_sem::removal_wakes_waiters",
            sysv_removal_wakes_waiters,
        ),
        ("sysv_sem::values_limits_and_rules", sysv_values_and_rules),
        (
            "mutex::owner_death_reported_and_repaired",
            mutex_owner_death,
        ),
        ("mutex::errors_and_rules", mutex_rules),
        (
            "mutex::stress_across_processes",
            mutex_stress_across_processes,
        ),
        (
            "condvar::notify_across_processes_and_futex",
            condvar_and_futex_across_processes,
        ),
        ("sysv_sem::private_set_by_id", sysv_private_by_id),
    ]);
}

/// A private set is reached by id, and not by key.
fn sysv_private_by_id() -> Result<(), Failed> {
    let set = SemaphoreSet::private().values(&[2]).create()?;
    let other = SemaphoreSet::open_id(set.id())?;
    other.p(0)?;
    ensure(set.get(0)? == 1, || "not the same set".into())?;
    let e = SemaphoreSet::builder(Key::PRIVATE).open().unwrap_err();
    ensure(e.to_string().contains("open_id"), || e.to_string())
}
