//! `ipc ls`: objects made between real processes are found with the right
//! holders, ends and peers; orphans are marked; `-p` and `--kind` filter.

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

mod common;
use common::*;

/// A child that sleeps holding `stdin` as its descriptor 0; killed on drop.
struct Holder(Child);

impl Holder {
    fn new(stdin: Stdio) -> Holder {
        Holder(
            Command::new("sleep")
                .arg("30")
                .stdin(stdin)
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> i64 {
        i64::from(self.0.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes POSIX shared memory when the test ends, however it ends.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = ipckit::shm::unlink(&self.0);
    }
}

/// Held by the tests that make orphans or remove them: `ipc rm --orphans`
/// removes every orphan of a kind, including another test's.
static ORPHANS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn orphans_lock() -> std::sync::MutexGuard<'static, ()> {
    ORPHANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// POSIX shared memory made, kept and let go (nobody maps it any more),
/// removed when the returned `Unlink` drops; and one this process maps.
fn unheld_and_held(tag: &str) -> (String, Unlink, String, ipckit::shm::Shm) {
    let unheld = format!("/{}", unique(tag));
    let gone = Unlink(unheld.clone());
    drop(
        ipckit::shm::Shm::builder(&unheld)
            .size(4096)
            .keep(true)
            .create()
            .unwrap(),
    );
    let held = format!("/{}-held", unique(tag));
    let mapped = ipckit::shm::Shm::builder(&held)
        .size(4096)
        .create()
        .unwrap();
    (unheld, gone, held, mapped)
}

fn ls(args: &[&str]) -> Vec<serde_json::Value> {
    let out = run(ipc().arg("ls").arg("--json").args(args));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["objects"].as_array().unwrap().clone()
}

/// Whether process `pid` holds `o` as `end` (any descriptor, or a mapping).
fn held_by(o: &serde_json::Value, pid: i64, end: &str) -> bool {
    o["holders"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["pid"].as_i64() == Some(pid) && h["end"] == end)
}

fn holds(o: &serde_json::Value, pid: i64, fd: i64, end: &str) -> bool {
    o["holders"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["pid"].as_i64() == Some(pid) && h["fd"].as_i64() == Some(fd) && h["end"] == end)
}

/// A pipe shows both ends and both processes; a socket pair between two
/// processes shows each end's peer (sock_diag); `-p` keeps only what a
/// process holds.
#[test]
fn pipes_and_socket_peers_with_their_holders() {
    let me = i64::from(std::process::id());
    let (r, w) = std::io::pipe().unwrap();
    let reader = Holder::new(Stdio::from(OwnedFd::from(r)));
    let fd_w = {
        use std::os::fd::AsRawFd;
        i64::from(w.as_raw_fd())
    };
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let peer = Holder::new(Stdio::from(OwnedFd::from(b)));
    let fd_a = {
        use std::os::fd::AsRawFd;
        i64::from(a.as_raw_fd())
    };

    let all = ls(&[]);
    let pipe = all
        .iter()
        .find(|o| o["kind"] == "pipe" && holds(o, reader.pid(), 0, "read"))
        .unwrap_or_else(|| panic!("no pipe read by {}: {all:#?}", reader.pid()));
    assert!(holds(pipe, me, fd_w, "write"), "{pipe:#}");
    let mine = all
        .iter()
        .find(|o| o["kind"] == "unix" && holds(o, me, fd_a, "read-write"))
        .unwrap_or_else(|| panic!("no socket at fd {fd_a}: {all:#?}"));
    assert_eq!(
        mine["peer"].as_str().unwrap(),
        format!("sleep({}) fd 0", peer.pid()),
        "{mine:#}"
    );
    assert_eq!(mine["name"], "(unnamed)");

    let only = ls(&["-p", &peer.pid().to_string()]);
    assert!(
        !only.is_empty()
            && only.iter().all(|o| o["holders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["pid"].as_i64() == Some(peer.pid()))),
        "{only:#?}"
    );
    let kinds = ls(&["--kind", "pipe"]);
    assert!(kinds.iter().all(|o| o["kind"] == "pipe"), "{kinds:#?}");
    drop((w, a));
}

/// A System V queue with its key, mode, owner and fill; a private one by
/// the id `ipc rm` takes; POSIX shared memory nobody maps is an orphan,
/// and one a process maps is not.
#[test]
fn queues_and_shared_memory_with_fill_and_orphans() {
    let _one_at_a_time = orphans_lock();
    let key = 0x3100_0000 | (std::process::id() & 0xff_ffff);
    let mut q = ipckit::sysv::MessageQueue::builder(ipckit::sysv::Key::new(key as i32))
        .create()
        .unwrap();
    ipckit::MessageSender::send_until(&mut q, b"hello", ipckit::Deadline::Never).unwrap();
    let private = ipckit::sysv::MessageQueue::private().create().unwrap();
    let (unheld, _gone, held, mapped) = unheld_and_held("orphan");

    let seg = ipckit::shm::SysvShm::builder(ipckit::sysv::Key::PRIVATE)
        .size(4096)
        .create()
        .unwrap();
    let all = ls(&["--kind", "sysv-mq,shm,sysv-shm"]);
    let find = |addr: &str| {
        all.iter()
            .find(|o| o["address"] == addr)
            .unwrap_or_else(|| panic!("{addr} not listed: {all:#?}"))
            .clone()
    };
    let o = find(&format!("sysv-mq:{key:#010x}"));
    assert_eq!(
        (o["messages"].as_u64(), o["bytes"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(o["mode"], "0600");
    assert!(!o["owner"].as_str().unwrap().is_empty(), "{o:#}");
    find(&format!("sysv-mq:id={}", private.id()));
    let o = find(&format!("shm:{unheld}"));
    assert_eq!(o["orphan"], is_root(), "{o:#}"); // without root, others' holds are unseen
    assert_eq!(o["bytes"].as_u64(), Some(4096));
    let me = i64::from(std::process::id());
    let o = find(&format!("shm:{held}"));
    assert_eq!(o["orphan"], false, "{o:#}");
    assert!(held_by(&o, me, "mapped"), "{o:#}");
    // A segment this process has attached: its holder, by its id.
    let o = find(&format!("sysv-shm:id={}", seg.id()));
    assert!(held_by(&o, me, "mapped"), "{o:#}");
    assert_eq!(
        (o["bytes"].as_u64(), &o["orphan"]),
        (Some(4096), &serde_json::json!(false))
    );
    let orphans = ls(&["--orphans"]);
    assert!(orphans.iter().all(|o| o["orphan"] == true), "{orphans:#?}");
    assert!(orphans
        .iter()
        .all(|o| o["address"] != format!("shm:{held}").as_str()));
    drop((mapped, q, private, seg));
}

/// Without root, `ipc ls` lists what it can see and says what it could
/// not (other users' processes); nothing is called an orphan then, since
/// an unseen process may hold it.
#[test]
fn another_user_sees_less_and_is_told() {
    if !is_root() {
        return;
    }
    let _one_at_a_time = orphans_lock();
    let unheld = format!("/{}", unique("unseen"));
    let _gone = Unlink(unheld.clone());
    let shm = ipckit::shm::Shm::builder(&unheld)
        .size(4096)
        .mode(0o644)
        .keep(true)
        .create()
        .unwrap();
    drop(shm);
    let out = run(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ipc"))
        .args(["ls", "--json", "--kind", "shm"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let unseen = v["unseen"].as_array().unwrap();
    assert!(
        unseen
            .iter()
            .any(|u| u.as_str().unwrap().contains("could not be looked into")),
        "{v:#}"
    );
    let o = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["address"] == format!("shm:{unheld}").as_str())
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(o["orphan"], false, "{o:#}");
}

/// A stale socket file (its server killed) is an orphan; `ipc rm --orphans
/// --dry-run` names it and removes nothing, `ipc rm --orphans` removes it
/// and an unmapped POSIX segment, and leaves a live socket file and a
/// mapped segment alone. Another user's `ipc rm --orphans` cannot remove
/// this user's stale file, and says so.
#[test]
fn rm_orphans_removes_only_orphans() {
    let _one_at_a_time = orphans_lock();
    let dir = tempfile::Builder::new()
        .prefix("ipc-ls-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let stale = dir.path().join("stale.sock");
    let live = dir.path().join("live.sock");
    // A server that dies without removing its socket file.
    let mut server = Command::new(env!("CARGO_BIN_EXE_ipc"))
        .args(["recv", "-q"])
        .arg(format!("unix:{}", stale.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| stale.exists(), "the server's socket file");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(stale.exists(), "SIGKILL left no stale file");
    let _listening =
        ipckit::socket::unix::UnixListener::bind(&ipckit::socket::unix::UnixAddr::path(&live))
            .unwrap();
    let (unheld, _gone, held, _mapped) = unheld_and_held("rm-orphan");
    let stale_addr = format!("unix:{}", stale.display());
    let o = ls(&["--orphans", "--kind", "unix"]);
    assert!(
        o.iter().any(|o| o["address"] == stale_addr.as_str()),
        "{o:#?}"
    );
    assert!(
        !o.iter()
            .any(|o| o["name"].as_str().unwrap_or("").contains("live.sock")),
        "{o:#?}"
    );

    if is_root() {
        // Another user cannot even ask (connecting needs write permission
        // on the 0600 file): not called an orphan, and said so.
        let out = run(Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ipc"))
            .args(["rm", "--orphans", "--kind", "unix"]));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("could not be asked whether they are stale"),
            "{}",
            stderr(&out)
        );
        assert!(stale.exists(), "nobody removed root's socket file");
        // Named explicitly, refused as another user's.
        let out = run(Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ipc"))
            .args(["rm", &stale_addr]));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("socket file of another user"),
            "{}",
            stderr(&out)
        );
        assert!(stale.exists(), "nobody removed root's socket file");
    }

    let out = run(ipc().args(["rm", "--orphans", "--dry-run", "--kind", "unix,shm"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("would remove {stale_addr} (stale socket file")),
        "{said}"
    );
    assert!(stale.exists(), "--dry-run removed it");
    if is_root() {
        assert!(
            said.contains(&format!("would remove shm:{unheld}")),
            "{said}"
        );
    }
    assert!(!said.contains(&held), "{said}");

    let out = run(ipc().args(["rm", "--orphans", "--kind", "unix,shm"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("removed {stale_addr}\n")),
        "{}",
        stdout(&out)
    );
    assert!(!stale.exists(), "the stale socket file is still there");
    assert!(live.exists(), "the live socket file was removed");
    let shm = |name: &str| std::path::Path::new("/dev/shm").join(&name[1..]).exists();
    assert!(shm(&held), "a mapped segment was removed");
    // Without root other users' holds are unseen, so nothing is an orphan.
    assert_eq!(shm(&unheld), !is_root(), "{}", stdout(&out));
    // An explicit unix:PATH removes only a stale file.
    let out = run(ipc().args(["rm", &format!("unix:{}", live.display())]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is live"), "{}", stderr(&out));
    assert!(live.exists());
}

/// A ring's header: what is queued, which holder receives, the creator;
/// once every side is gone, an orphan.
#[test]
fn rings_from_their_headers() {
    let _one_at_a_time = orphans_lock();
    let name = unique("ring");
    let addr = format!("ring:{name}");
    let out = run(ipc().args(["send", &addr, "a", "b", "c"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let find = || {
        ls(&["--kind", "ring"])
            .into_iter()
            .find(|o| o["address"] == addr.as_str())
            .unwrap_or_else(|| panic!("{addr} not listed"))
    };
    let o = find();
    assert_eq!(o["messages"], 3, "{o:#}");
    assert!(o["note"].as_str().unwrap().contains("creator pid"), "{o:#}");
    // A receiver that took them and waits for more.
    let mut r = ipc()
        .args(["recv", "-q", &addr, "-n", "10", "--timeout", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i64::from(r.id());
    wait_for(
        || {
            let o = find();
            o["messages"] == 0 && held_by(&o, pid, "receive")
        },
        "the receiver attached and the ring emptied",
    );
    assert!(find()["note"].as_str().unwrap().contains("1 receiver(s)"));
    r.kill().unwrap();
    r.wait().unwrap();
    let o = find();
    assert_eq!(o["orphan"], is_root(), "{o:#}");
    let out = run(ipc().args(["rm", &addr]));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A POSIX queue no process has open is listed with its fill, through a
/// private mount of the mqueue file system when it is not mounted (root);
/// another user is told how to mount it. Nothing is left mounted.
#[test]
fn posix_queues_nobody_has_open() {
    let _one_at_a_time = orphans_lock();
    let q = format!("mq:/{}", unique("mq"));
    let out = run(ipc().args(["send", &q, "hello", "world!"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mounts_before = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if is_root() {
        let o = ls(&["--kind", "mq"])
            .into_iter()
            .find(|o| o["address"] == q.as_str())
            .unwrap_or_else(|| panic!("{q} not listed"));
        assert_eq!(o["bytes"], 11, "{o:#}");
        assert_eq!(o["mode"], "0600", "{o:#}");
        assert_eq!(o["orphan"], true, "{o:#}");
        assert_eq!(
            std::fs::read_to_string("/proc/self/mounts").unwrap(),
            mounts_before,
            "a mount was left"
        );
        let out = run(Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ipc"))
            .args(["ls", "--json", "--kind", "mq"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let unseen = v["unseen"].to_string();
        if !mounts_before.contains(" mqueue ") {
            assert!(unseen.contains("mount -t mqueue none /dev/mqueue"), "{v:#}");
        }
    }
    let out = run(ipc().args(["rm", &q]));
    assert!(out.status.success(), "{}", stderr(&out));
}
