//! Nobody gets in where they don't belong: every kind of named object
//! ipckit creates, made with its defaults by a process whose umask is
//! 000, is 0600 (directories of its own 0700), and a process of another
//! user (`nobody`, when the tests run as root) is refused each one with
//! `PermissionDenied`. Once its creator ends, each object is gone. In a
//! world-writable directory, symbolic links planted by another user where
//! a FIFO or socket file is to be made are never followed, and another
//! user's FIFO or socket file is never replaced.
//!
//! This test binary re-executed with `IPCKIT_ACCESS_PEER=<role>:<arg>`
//! plays the creator (`make:TAG DIR`) or the other user (`try:TAG DIR`,
//! `plant:DIR`).

use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ipckit::mailbox::{Broker, Client, Config};
use ipckit::mq::PosixQueue;
use ipckit::prop::{PropServer, Properties};
use ipckit::ring::Ring;
use ipckit::sem::{NamedSemaphore, SemaphoreSet};
use ipckit::shm::{Shm, SysvShm};
use ipckit::sysv::{Key, MessageQueue};
use ipckit::Address;
use libtest_mimic::Failed;

mod common;
use common::{ensure, first_line, my_uid, other_user_cmd, peer_command, unique, T};

const VAR: &str = "IPCKIT_ACCESS_PEER";

/// The names of one test's objects.
struct Names {
    dir: PathBuf,
    fifo: PathBuf,
    socket: PathBuf,
    mq: String,
    shm: String,
    sem: String,
    sysv: [Key; 3],
    ring: String,
    store: PathBuf,
    prop: String,
    persist: PathBuf,
}

impl Names {
    fn new(tag: &str, dir: &Path) -> Names {
        // Three System V keys from the tag (the tag is unique to this run).
        let h = crc32fast::hash(tag.as_bytes()) as i32 & 0x0fff_ffff;
        Names {
            dir: dir.to_owned(),
            fifo: dir.join("fifo"),
            socket: dir.join("socket"),
            mq: format!("/{tag}-mq"),
            shm: format!("/{tag}-shm"),
            sem: format!("/{tag}-sem"),
            sysv: [
                Key::new(0x4000_0000 | h),
                Key::new(0x5000_0000 | h),
                Key::new(0x6000_0000 | h),
            ],
            ring: format!("{tag}-ring"),
            store: dir.join("store"),
            prop: format!("{tag}-prop"),
            persist: dir.join("persist"),
        }
    }
}

fn parse(arg: &str) -> Names {
    let (tag, dir) = arg.split_once(' ').expect("TAG DIR");
    Names::new(tag, Path::new(dir))
}

/// `make:TAG DIR` with umask 000: one of each kind, with defaults; `ready`
/// once made; everything dropped when standard input closes.
fn make(n: &Names) -> io::Result<()> {
    // SAFETY: umask(2) only sets this process's file creation mask.
    unsafe { libc::umask(0) };
    let _fifo = ipckit::fifo::Fifo::builder(&n.fifo).create()?;
    let _socket = ipckit::listen(&Address::Unix(n.socket.to_str().expect("utf-8").parse()?))?;
    let _mq = PosixQueue::builder(&n.mq).create()?;
    let _shm = Shm::builder(&n.shm).size(4096).create()?;
    let _sem = NamedSemaphore::builder(&n.sem).create()?;
    let _sysv_shm = SysvShm::builder(n.sysv[0]).size(4096).create()?;
    let _sysv_sem = SemaphoreSet::builder(n.sysv[1]).len(1).create()?;
    let _sysv_mq = MessageQueue::builder(n.sysv[2]).create()?;
    let _ring = Ring::builder(&n.ring).create()?;
    // A durable mailbox with a message in its store.
    let broker = Broker::builder()
        .socket(n.dir.join("broker.sock"))
        .store(&n.store)
        .bind()?;
    let path = broker.socket_path().to_owned();
    std::thread::spawn(move || broker.run());
    let mut c = Client::connect_to(&path)?;
    let durable = Config {
        durable: true,
        ..Config::default()
    };
    c.create("kept", &durable)?;
    c.send("kept", b"in the store")?;
    // A property store with a saved persist property (its directory made
    // by its user).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&n.persist)?;
    let props = PropServer::builder(&n.prop)
        .persist_dir(&n.persist)
        .start()?;
    props.set("persist.access", "1")?;
    props.set("plain.access", "1")?;
    println!("ready");
    io::stdout().flush()?;
    let _ = io::stdin().lock().lines().count();
    drop(c);
    Ok(())
}

/// What `nobody` may not do, each with its outcome: `KIND denied`, or
/// `KIND ALLOWED …` / `KIND other …`.
fn attempts(n: &Names) -> Vec<(&'static str, io::Result<()>)> {
    let t = Some(Duration::from_millis(200));
    let mut v: Vec<(&'static str, io::Result<()>)> = vec![
        ("fifo", ipckit::fifo::open_reader(&n.fifo, t).map(drop)),
        (
            "socket file",
            std::os::unix::net::UnixStream::connect(&n.socket).map(drop),
        ),
        ("posix mq", PosixQueue::builder(&n.mq).open().map(drop)),
        ("posix shm", Shm::builder(&n.shm).open().map(drop)),
        (
            "named sem",
            NamedSemaphore::builder(&n.sem).open().map(drop),
        ),
        ("sysv shm", SysvShm::builder(n.sysv[0]).open().map(drop)),
        (
            "sysv sem",
            SemaphoreSet::builder(n.sysv[1]).open().map(drop),
        ),
        ("sysv mq", MessageQueue::builder(n.sysv[2]).open().map(drop)),
        ("ring", Ring::builder(&n.ring).open().map(drop)),
        ("property area", Properties::open(&n.prop).map(drop)),
    ];
    for (what, dir) in [("mailbox store", &n.store), ("persist dir", &n.persist)] {
        v.push((what, std::fs::read_dir(dir).map(drop)));
    }
    v
}

fn try_all(n: &Names) -> io::Result<()> {
    for (what, r) in attempts(n) {
        match r {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => println!("{what}: denied"),
            Err(e) => println!("{what}: other {:?} {e}", e.kind()),
            Ok(()) => println!("{what}: ALLOWED"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the parent

/// Mode bits of `path` (not following a final symlink).
fn mode(path: &Path) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
}

/// The mode `/proc/sysvipc/KIND` lists for `key`.
fn sysv_mode(kind: &str, key: Key) -> io::Result<u32> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))?;
    for line in text.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first().and_then(|k| k.parse::<i32>().ok()) == Some(key.value()) {
            return u32::from_str_radix(w[2], 8).map_err(io::Error::other);
        }
    }
    Err(io::Error::other(format!(
        "{key} not in /proc/sysvipc/{kind}"
    )))
}

/// Every file and directory under `dir` (and `dir`).
fn tree(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    out.push(dir.to_owned());
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            tree(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn modes_and_refusals() -> Result<(), Failed> {
    let tag = unique("access");
    let base = tempfile::tempdir()?;
    // The objects' directory: others may look in (the modes are what
    // keeps them out).
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755))?;
    let n = Names::new(&tag, base.path());
    let arg = format!("{tag} {}", base.path().display());
    let mut maker = peer_command(VAR, "make", &arg)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }
    let line = first_line(&mut maker)?;
    let mut maker = Reap(maker);
    ensure(line == "ready", || format!("the maker said {line:?}"))?;

    // Every kind 0600 (made under umask 000), directories 0700.
    let shm = |name: &str| PathBuf::from(format!("/dev/shm/{}", &name[1..]));
    let mut files = vec![
        ("fifo", n.fifo.clone()),
        ("socket file", n.socket.clone()),
        ("posix shm", shm(&n.shm)),
        (
            "named sem",
            PathBuf::from(format!("/dev/shm/sem.{}", &n.sem[1..])),
        ),
        ("ring", shm(&ipckit::ring::shm_name(&n.ring))),
        ("property area", shm(&format!("/ipckit-prop.{}", n.prop))),
    ];
    for (what, dir) in [("mailbox store", &n.store), ("persist dir", &n.persist)] {
        let mut all = Vec::new();
        tree(dir, &mut all)?;
        if what == "persist dir" {
            // (Made by the test, not by ipckit.)
            all.remove(0);
        }
        ensure(all.iter().any(|p| p.is_file()), || {
            format!("{what}: no file in {}", dir.display())
        })?;
        files.extend(all.into_iter().map(|p| (what, p)));
    }
    let mut checked = Vec::new();
    for (what, p) in &files {
        let m = mode(p)?;
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        ensure(m == want, || {
            format!("{what} {}: mode {m:o}, not {want:o}", p.display())
        })?;
        checked.push(format!("{what} {m:o}"));
    }
    let queues = ipckit::mq::list()?;
    let q = queues
        .iter()
        .find(|q| q.name == n.mq)
        .ok_or("the POSIX queue is not listed")?;
    ensure(q.mode & 0o777 == 0o600, || {
        format!("posix mq: mode {:o}", q.mode)
    })?;
    for (kind, key) in ["shm", "sem", "msg"].iter().zip(n.sysv) {
        let m = sysv_mode(kind, key)? & 0o777;
        ensure(m == 0o600, || format!("sysv {kind} {key}: mode {m:o}"))?;
    }
    println!(
        "  0600 under umask 000: {} paths, the POSIX queue, 3 System V objects",
        checked.len()
    );

    // Another user is refused each.
    if my_uid() == 0 {
        let exe_dir = tempfile::tempdir()?;
        let out = other_user_cmd(&exe_dir)?
            .env(VAR, format!("try:{arg}"))
            .stderr(Stdio::inherit())
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout);
        ensure(out.status.success(), || {
            format!("the other user failed: {said}")
        })?;
        let lines: Vec<&str> = said.lines().collect();
        ensure(lines.len() == attempts(&n).len(), || format!("{lines:?}"))?;
        for l in &lines {
            ensure(l.ends_with(": denied"), || format!("as nobody: {l}"))?;
        }
        println!("  refused to nobody: {}", lines.len());
    } else {
        eprintln!("  (not root: the other-user half needs root to become nobody)");
    }

    // The creator removes everything when it ends.
    drop(maker.0.stdin.take());
    let end = std::time::Instant::now() + T;
    while maker.0.try_wait()?.is_none() {
        ensure(std::time::Instant::now() < end, || {
            "the maker did not end".into()
        })?;
        std::thread::sleep(Duration::from_millis(5));
    }
    for (what, p) in files
        .iter()
        .filter(|(w, _)| !w.contains("store") && !w.contains("persist"))
    {
        ensure(!p.exists() && !p.is_symlink(), || {
            format!("{what} {} left behind", p.display())
        })?;
    }
    ensure(ipckit::mq::list()?.iter().all(|q| q.name != n.mq), || {
        "the POSIX queue left behind".into()
    })?;
    for (kind, key) in ["shm", "sem", "msg"].iter().zip(n.sysv) {
        ensure(sysv_mode(kind, key).is_err(), || {
            format!("sysv {kind} {key} left behind")
        })?;
    }
    Ok(())
}

/// `plant:DIR` (as the other user): in the shared directory `DIR`,
/// symbolic links where the victim will create a FIFO and a socket file,
/// pointing at paths it would then have made; and a FIFO and a socket
/// file of its own.
fn plant(dir: &Path) -> io::Result<()> {
    for name in ["fifo", "socket"] {
        std::os::unix::fs::symlink(dir.join(format!("{name}-target")), dir.join(name))?;
    }
    ipckit::fifo::Fifo::builder(dir.join("theirs-fifo"))
        .mode(0o666)
        .keep(true)
        .create()?;
    // Bound and left behind, as by a process that exited.
    drop(std::os::unix::net::UnixListener::bind(
        dir.join("theirs-socket"),
    )?);
    Ok(())
}

/// In a world-writable directory (like `/tmp`) another user planted
/// symbolic links at the paths where this process creates a FIFO and a
/// socket file, and left a FIFO and a socket file of its own: creating
/// never follows a link (nothing appears at the link's target, the link
/// stays), and another user's FIFO or socket file is never replaced or
/// removed.
fn planted_links_and_others_objects() -> Result<(), Failed> {
    let base = tempfile::tempdir()?;
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o1777))?;
    let dir = base.path();
    let exe_dir = tempfile::tempdir()?;
    let st = other_user_cmd(&exe_dir)?
        .env(VAR, format!("plant:{}", dir.display()))
        .status()?;
    ensure(st.success(), || "the planter failed".into())?;
    let unix = |name: &str| -> Result<Address, Failed> {
        Ok(Address::Unix(
            dir.join(name).to_str().ok_or("utf-8")?.parse()?,
        ))
    };
    let fifo = |name: &str| ipckit::fifo::Fifo::builder(dir.join(name));

    let mut refused = Vec::new();
    let outcomes: Vec<(&str, io::Result<()>)> = vec![
        ("FIFO create on a link", fifo("fifo").create().map(drop)),
        (
            "FIFO create_or_open on a link",
            fifo("fifo").create_or_open().map(drop),
        ),
        ("FIFO open on a link", fifo("fifo").open().map(drop)),
        (
            "socket listen on a link",
            ipckit::listen(&unix("socket")?).map(drop),
        ),
        (
            "FIFO create on another user's",
            fifo("theirs-fifo").create().map(drop),
        ),
        (
            "socket listen on another user's",
            ipckit::listen(&unix("theirs-socket")?).map(drop),
        ),
    ];
    for (what, r) in outcomes {
        match r {
            Ok(()) => return Err(format!("{what}: allowed").into()),
            Err(e) => refused.push(format!("{what}: {e}")),
        }
    }
    for name in ["fifo-target", "socket-target"] {
        ensure(!dir.join(name).exists(), || {
            format!("{name} was created through the link")
        })?;
    }
    for name in ["fifo", "socket"] {
        ensure(dir.join(name).is_symlink(), || {
            format!("the link {name} was removed")
        })?;
    }
    for name in ["theirs-fifo", "theirs-socket"] {
        let m = std::fs::symlink_metadata(dir.join(name))?;
        ensure(m.uid() != my_uid() || my_uid() != 0, || {
            format!("{name} was replaced: it is ours now")
        })?;
    }
    for r in &refused {
        println!("  {r}");
    }
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            let (role, arg) = spec.split_once(':').expect("role:arg");
            match role {
                "make" => make(&parse(arg)),
                "try" => try_all(&parse(arg)),
                "plant" => plant(Path::new(arg)),
                _ => panic!("unknown role {role}"),
            }
        })],
        "access",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("modes_and_refusals", modes_and_refusals),
        (
            "planted_links_and_others_objects",
            planted_links_and_others_objects,
        ),
    ])
}
