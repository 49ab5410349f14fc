//! `create_or_open` between racing processes: for every kind of named
//! object, several processes start at once and exactly one of them reports
//! that it created the object (`created()`), so that exactly one
//! initialises it.
//!
//! This test binary re-executed with `IPCKIT_NAMED_PEER=<kind>:<name>`
//! plays a racer.

use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use ipckit::fifo::Fifo;
use ipckit::mq::sysv::MessageQueue;
use ipckit::mq::PosixQueue;
use ipckit::prelude::*;
use ipckit::ring::Ring;
use ipckit::sem::NamedSemaphore;
use ipckit::sem::SemaphoreSet;
use ipckit::shm::SysvShm;
use ipckit::shm::{HoldsRegion, Layout, Memfd, Mutex, OwnedCondvar, OwnedMutex, Shm};
use ipckit::socket::unix::UnixStream;
use ipckit::sysv::Key;
use libtest_mimic::Failed;
use std::sync::Arc;

mod common;
use common::{ensure, peer_command, unique, unique_key, T};

const VAR: &str = "IPCKIT_NAMED_PEER";

/// Opens or creates the object, says which, and holds it until stdin
/// closes.
fn racer(spec: &str) -> io::Result<()> {
    let (kind, name) = spec.split_once(':').expect("kind:name");
    if kind == "init" {
        return init_racer(name);
    }
    if kind == "child" {
        return child_with_fds();
    }
    let created = match kind {
        "shm" => keep_until_eof(Shm::builder(name).size(4096).create_or_open()?.created()),
        "mq" => keep_until_eof(
            PosixQueue::builder(name)
                .capacity(4, 64)
                .create_or_open()?
                .created(),
        ),
        "sem" => keep_until_eof(NamedSemaphore::builder(name).create_or_open()?.created()),
        "fifo" => keep_until_eof(Fifo::builder(name).create_or_open()?.created()),
        "ring" => keep_until_eof(Ring::builder(name).create_or_open()?.created()),
        "sysv-mq" => keep_until_eof(
            MessageQueue::builder(key(name)?)
                .create_or_open()?
                .created(),
        ),
        "sysv-shm" => keep_until_eof(
            SysvShm::builder(key(name)?)
                .size(4096)
                .create_or_open()?
                .created(),
        ),
        "sysv-sem" => keep_until_eof(
            SemaphoreSet::builder(key(name)?)
                .values(&[1, 0])
                .create_or_open()?
                .created(),
        ),
        other => return Err(io::Error::other(format!("unknown kind {other}"))),
    };
    created
}

fn key(name: &str) -> io::Result<Key> {
    name.parse()
}

/// Prints whether the object was created, then waits for stdin to close.
/// (Evaluated while the object is still alive: the caller's value lives
/// until this returns.)
fn keep_until_eof(created: bool) -> io::Result<()> {
    println!("{}", if created { "created" } else { "opened" });
    let _ = io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// `init:N`: on the memfd on stdin, `init_or_open` a mutex (value: this
/// pid) and a condition variable, add 1 to the value N times under the
/// lock, and say which of the two this process created.
fn init_racer(n: &str) -> io::Result<()> {
    let n: u64 = n.parse().map_err(io::Error::other)?;
    let m = Memfd::from_fd(io::stdin().as_fd().try_clone_to_owned()?, false)?;
    let (mutex_at, condvar_at) = race_layout();
    let region: Arc<dyn HoldsRegion> = Arc::new(m);
    let init = OwnedMutex::<u64>::init_or_open(
        region.clone(),
        mutex_at,
        u64::from(std::process::id()),
        T,
    )?;
    let created = init.created();
    let owned = init.into_inner();
    let mutex = owned.get()?;
    let cv = OwnedCondvar::init_or_open(region.clone(), condvar_at, T)?;
    let cv_created = cv.created();
    let cv = cv.into_inner();
    for _ in 0..n {
        let mut g = mutex.lock().map_err(|e| io::Error::other(e.to_string()))?;
        let v = g.get();
        g.set(v + 1);
        drop(g);
        cv.get()?.notify_all()?;
    }
    println!("{created} {cv_created}");
    Ok(())
}

/// Where the racers put their mutex and condition variable: computed the
/// same way in every process.
fn race_layout() -> (usize, usize) {
    let mut l = Layout::new();
    (l.mutex::<u64>(), l.condvar())
}

/// Six processes `init_or_open` one mutex and one condition variable in a
/// fresh region at once: exactly one initialises each, nobody sees a half
/// made one, and every increment counts from the creator's value.
fn init_or_open_between_processes() -> Result<(), Failed> {
    let m = Memfd::create("init-race", 4096)?;
    let n = 1000u64;
    let racers = (0..6)
        .map(|_| {
            peer_command(VAR, "init", &n.to_string()).and_then(|mut c| {
                c.stdin(Stdio::from(m.fd().try_clone_to_owned()?))
                    .stdout(Stdio::piped())
                    .spawn()
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut creator = None;
    let mut cv_creators = 0;
    for r in racers {
        let pid = r.id();
        let out = r.wait_with_output()?;
        ensure(out.status.success(), || "a racer failed".into())?;
        let text = String::from_utf8(out.stdout)?;
        let mut it = text.split_whitespace();
        if it.next() == Some("true") {
            ensure(creator.replace(pid).is_none(), || {
                "two created the mutex".into()
            })?;
        }
        if it.next() == Some("true") {
            cv_creators += 1;
        }
    }
    let creator = creator.ok_or("nobody created the mutex")?;
    ensure(cv_creators == 1, || {
        format!("{cv_creators} created the condvar")
    })?;
    let mutex = Mutex::<u64>::open(&m, race_layout().0)?;
    let v = mutex.lock().map_err(|e| e.to_string())?.get();
    ensure(v == u64::from(creator) + 6 * n, || {
        format!("value {v}, expected {} + {}", creator, 6 * n)
    })
}

/// The child of `descriptors_beyond_stdio`: takes the ring and the socket
/// its parent passed by name, and uses both.
fn child_with_fds() -> io::Result<()> {
    use ipckit::process::inherited_fd;
    let ring = Ring::from_fd(inherited_fd("jobs")?)?;
    let mut sock = UnixStream::from_owned_fd(inherited_fd("sock")?)?;
    let again = inherited_fd("jobs").unwrap_err();
    if again.kind() != io::ErrorKind::AlreadyExists {
        return Err(io::Error::other(format!("taken twice: {again}")));
    }
    let none = inherited_fd("nope").unwrap_err();
    if none.kind() != io::ErrorKind::NotFound {
        return Err(io::Error::other(format!("unknown name: {none}")));
    }
    ring.sender()?.send(b"hello").map_err(io::Error::from)?;
    if sock.recv_timeout(T)? != b"ping" {
        return Err(io::Error::other("no ping"));
    }
    sock.send(b"pong").map_err(io::Error::from)
}

/// A parent hands a child a ring's memfd and one end of a socket pair as
/// descriptors 10 and 11, by name; the child takes them (once each, and
/// only those) and uses them.
fn descriptors_beyond_stdio() -> Result<(), Failed> {
    let ring = Ring::anonymous().capacity(4).create()?;
    let mut rx = ring.receiver()?;
    let (mut mine, theirs) = UnixStream::pair()?;
    let mut cmd = peer_command(VAR, "child", "-")?;
    ipckit::process::pass_fds(
        &mut cmd,
        [
            ("jobs", ring.fd().try_clone_to_owned()?, 10),
            ("sock", theirs.as_fd().try_clone_to_owned()?, 11),
        ],
    )?;
    let mut child = cmd.spawn()?;
    drop(theirs);
    ensure(rx.recv_timeout(T)? == b"hello", || {
        "nothing on the ring".into()
    })?;
    mine.send(b"ping")?;
    ensure(mine.recv_timeout(T)? == b"pong", || "no pong".into())?;
    ensure(child.wait()?.success(), || "the child failed".into())?;
    // Bad requests are refused before anything starts.
    let mut cmd = peer_command(VAR, "child", "-")?;
    let e = ipckit::process::pass_fds(&mut cmd, [("x", ring.fd().try_clone_to_owned()?, 1)])
        .unwrap_err();
    ensure(e.to_string().contains("3 or above"), || e.to_string())
}

fn race(kind: &str, name: &str) -> Result<(), Failed> {
    let mut racers = (0..6)
        .map(|_| {
            peer_command(VAR, kind, name)
                .and_then(|mut c| c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn())
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut said = Vec::new();
    for r in &mut racers {
        let mut line = String::new();
        BufReader::new(r.stdout.as_mut().ok_or("no stdout")?).read_line(&mut line)?;
        said.push(line.trim().to_string());
    }
    for mut r in racers {
        drop(r.stdin.take());
        ensure(r.wait()?.success(), || format!("{kind}: a racer failed"))?;
    }
    let created = said.iter().filter(|s| *s == "created").count();
    ensure(created == 1, || format!("{kind}: {said:?}"))
}

fn create_or_open_says_who_created() -> Result<(), Failed> {
    race("shm", &format!("/{}", unique("race")))?;
    race("mq", &format!("/{}", unique("race")))?;
    race("sem", &format!("/{}", unique("race")))?;
    race("ring", &unique("race"))?;
    race("sysv-mq", &unique_key().to_string())?;
    race("sysv-shm", &unique_key().to_string())?;
    race("sysv-sem", &unique_key().to_string())?;
    let dir = tempfile::tempdir()?;
    race("fifo", dir.path().join("f").to_str().ok_or("path")?)
}

fn main() {
    common::play_peer_or_arm_watchdog(&[(VAR, racer)], "named", Duration::from_secs(120));
    common::run_cases(vec![
        (
            "create_or_open_says_who_created",
            create_or_open_says_who_created,
        ),
        (
            "init_or_open_between_processes",
            init_or_open_between_processes,
        ),
        ("descriptors_beyond_stdio", descriptors_beyond_stdio),
    ]);
}
