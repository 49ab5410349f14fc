//! `ipc broker`, `ipc mailbox` and `ipc send`/`ipc recv` on `mailbox:` and
//! `pid:` addresses, each command its own process, as in a shell.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

mod common;
use common::*;

/// An `ipc broker` on a socket of its own; stopped with SIGTERM on drop
/// (which must remove the socket file).
struct BrokerCmd {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerCmd {
    fn start() -> BrokerCmd {
        Self::start_in(tempfile::tempdir().expect("tempdir"), &["--no-store"])
    }

    /// A broker with its socket in `dir` and these arguments.
    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> BrokerCmd {
        let path = dir.path().join("broker.sock");
        let child = Self::spawn(&path, args);
        BrokerCmd {
            child,
            path,
            _dir: dir,
        }
    }

    fn spawn(path: &std::path::Path, args: &[&str]) -> Child {
        let child = ipc()
            .args(["broker", "-q", "--socket"])
            .arg(path)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ipc broker");
        // Connectable, not only there: a killed broker leaves its socket
        // file behind until the next one replaces it.
        wait_for(
            || std::os::unix::net::UnixStream::connect(path).is_ok(),
            "the broker's socket",
        );
        child
    }

    /// `ipc ARGS…` with this broker as the default.
    fn ipc(&self, args: &[&str]) -> Command {
        let mut c = ipc();
        c.env("IPCKIT_BROKER", &self.path).args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = run(&mut self.ipc(args));
        assert!(out.status.success(), "ipc {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn stat(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["mailbox", "stat", name, "--json"])).expect("json")
    }
}

impl Drop for BrokerCmd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        assert!(
            std::thread::panicking() || !self.path.exists(),
            "ipc broker left its socket file after SIGTERM"
        );
    }
}

/// `ipc broker --store`: a durable mailbox made with `ipc mailbox create
/// --durable` keeps what was sent through a SIGKILL of the broker; a
/// second broker on the same store is refused with the reason.
#[test]
fn durable_mailbox_through_a_killed_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store_arg = store.to_str().expect("utf-8").to_string();
    // This broker sleeps as soon as it is idle (the others poll 50 µs).
    let mut b = BrokerCmd::start_in(
        dir,
        &["--store", &store_arg, "--fsync", "always", "--spin", "0"],
    );
    b.ok(&[
        "mailbox",
        "create",
        "jobs",
        "--durable",
        "--max-msgs",
        "100",
    ]);
    b.ok(&[
        "send",
        "mailbox:jobs",
        "one",
        "two",
        "three",
        "--id",
        "batch",
    ]);
    assert_eq!(b.ok(&["recv", "mailbox:jobs", "-n", "1", "-q"]), "one\n");
    let other = dir_path(&b).join("other.sock");
    let second = run(ipc()
        .args(["broker", "--socket"])
        .arg(&other)
        .args(["--store", &store_arg]));
    assert!(
        stderr(&second).contains("in use by another broker"),
        "{}",
        stderr(&second)
    );
    b.child.kill().expect("SIGKILL");
    b.child.wait().expect("wait");
    b.child = BrokerCmd::spawn(&b.path, &["--store", &store_arg]);
    let s = b.stat("jobs");
    assert_eq!(
        (s["depth"].as_u64(), s["durable"].as_bool()),
        (Some(2), Some(true)),
        "{s}"
    );
    // The ids survived too: the same batch again is recognised.
    let again = run(&mut b.ipc(&["send", "mailbox:jobs", "two", "--id", "batch.1"]));
    assert!(stderr(&again).contains("already had"), "{}", stderr(&again));
    assert_eq!(
        b.ok(&["recv", "mailbox:jobs", "-n", "2", "-q"]),
        "two\nthree\n"
    );
    let mut out = run(&mut b.ipc(&["broker", "--fsync", "sometimes"]));
    assert_eq!(out.status.code(), Some(2));
    out.stderr.truncate(4096);
    assert!(
        stderr(&out).contains("always, never, or an interval"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut b.ipc(&["broker", "--spin", "2000000"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--spin"), "{}", stderr(&out));
}

fn dir_path(b: &BrokerCmd) -> std::path::PathBuf {
    b.path.parent().expect("a directory").to_path_buf()
}

#[test]
fn recv_acknowledges_only_what_it_printed() {
    let b = BrokerCmd::start();
    b.ok(&["send", "mailbox:jobs", "low", "--priority", "1"]);
    b.ok(&["send", "mailbox:jobs", "a", "b"]);
    b.ok(&["send", "mailbox:jobs", "urgent", "--priority", "9"]);
    // Highest priority first, FIFO within one; -n 2 leaves the rest.
    assert_eq!(
        b.ok(&["recv", "mailbox:jobs", "-n", "2", "-q"]),
        "urgent\nlow\n"
    );
    let s = b.stat("jobs");
    assert_eq!(
        (s["depth"].as_u64(), s["in_flight"].as_u64()),
        (Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(b.ok(&["recv", "mailbox:jobs", "-n", "2", "-q"]), "a\nb\n");
    assert_eq!(b.stat("jobs")["depth"], 0);
    let out = run(&mut b.ipc(&["recv", "mailbox:jobs", "--timeout", "0.2", "-q"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn json_carries_sender_type_id_and_deliveries() {
    let b = BrokerCmd::start();
    b.ok(&["send", "mailbox:t", "x", "--type", "3", "--id", "order-1"]);
    let again = run(&mut b.ipc(&["send", "mailbox:t", "x", "--id", "order-1"]));
    assert!(
        stderr(&again).contains("already had a message with id order-1"),
        "{}",
        stderr(&again)
    );
    let line = b.ok(&[
        "recv",
        "mailbox:t",
        "-n",
        "1",
        "-q",
        "--format",
        "json",
        "--type",
        "3",
    ]);
    let j: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(j["text"], "x");
    assert_eq!(j["type"], 3);
    assert_eq!(j["id"], "order-1");
    assert_eq!(j["deliveries"], 1);
    assert_eq!(j["mailbox"], "t");
    assert!(j["pid"].as_i64().unwrap() > 0);
}

#[test]
fn create_with_settings_and_dead_letters() {
    let b = BrokerCmd::start();
    b.ok(&[
        "mailbox",
        "create",
        "pay",
        "--max-msgs",
        "5",
        "--when-full",
        "fail",
        "--max-deliver",
        "1",
        "--ack-wait",
        "0.2",
        "--mode",
        "640",
    ]);
    let s = b.stat("pay");
    assert_eq!(s["max_msgs"], 5);
    assert_eq!(s["when_full"], "fail");
    assert_eq!(s["mode"], "0640");
    fails_with(
        &mut b.ipc(&["mailbox", "create", "pay"]),
        "mailbox pay exists",
    );
    b.ok(&["mailbox", "create", "pay", "--exist-ok"]);
    for i in 0..5 {
        b.ok(&["send", "mailbox:pay", &i.to_string()]);
    }
    fails_with(
        &mut b.ipc(&["send", "mailbox:pay", "6"]),
        "mailbox pay is full",
    );
    // A message over ipc recv's --max-size is refused to the dead letters,
    // with the reason.
    b.ok(&["recv", "mailbox:pay", "-n", "4", "-q"]);
    b.ok(&["send", "mailbox:pay", "big"]);
    fails_with(
        &mut b.ipc(&["recv", "mailbox:pay", "--max-size", "1", "-q"]),
        "moved to the dead letters of pay",
    );
    let dead = b.ok(&[
        "recv",
        "mailbox:dead.pay",
        "-n",
        "1",
        "-q",
        "--format",
        "json",
    ]);
    let first: serde_json::Value = serde_json::from_str(dead.trim_end()).expect("json");
    let reason = first["dead_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("over ipc recv's --max-size 1"), "{first}");
    assert_eq!(first["text"], "big");
    assert_eq!(b.stat("pay")["dead_letters"], 1);
    let ls = b.ok(&["mailbox", "ls"]);
    assert!(ls.contains("dead.pay") && ls.contains("pay "), "{ls}");
    b.ok(&["mailbox", "rm", "dead.pay"]);
    b.ok(&["rm", "mailbox:pay"]);
    fails_with(&mut b.ipc(&["mailbox", "stat", "pay"]), "no mailbox pay");
}

#[test]
fn direct_to_a_process_inbox() {
    let b = BrokerCmd::start();
    let rx = b
        .ipc(&["recv", "pid:self", "-n", "1", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = rx.id();
    wait_for(
        || b.ok(&["mailbox", "ls"]).contains(&format!("pid.{pid}")),
        "the receiver's inbox",
    );
    b.ok(&["send", &format!("pid:{pid}"), "hello you"]);
    let out = finish(rx);
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(j["text"], "hello you");
    fails_with(
        &mut b.ipc(&["send", &format!("pid:{pid}"), "late"]),
        &format!("no process {pid} is connected to the broker"),
    );
}

#[test]
fn clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let none = dir.path().join("none.sock");
    fails_with(
        ipc()
            .env("IPCKIT_BROKER", &none)
            .args(["send", "mailbox:x", "y"]),
        "no mailbox broker is running at",
    );
    fails_with(
        ipc().env("IPCKIT_BROKER", &none).args(["mailbox", "ls"]),
        "start one with `ipc broker`",
    );
    fails_with(ipc().args(["send", "mailbox:a.*", "y"]), "is a pattern");
    fails_with(ipc().args(["send", "mailbox:a..b", "y"]), "single dots");
    fails_with(ipc().args(["recv", "pid:1"]), "another process's inbox");
    fails_with(
        ipc().args(["send", "mq:/x", "y", "--id", "1"]),
        "--id applies to mailboxes",
    );
    let b = BrokerCmd::start();
    fails_with(
        &mut b.ipc(&["send", "mailbox:pid.1", "y"]),
        "no process 1 is connected",
    );
    fails_with(
        &mut b.ipc(&["mailbox", "create", "dead.x"]),
        "belong to the broker",
    );
    fails_with(
        &mut b.ipc(&["mailbox", "create", "d", "--durable"]),
        "cannot make a durable mailbox",
    );
    let second = run(ipc().args(["broker", "--socket"]).arg(&b.path));
    assert_eq!(second.status.code(), Some(2));
    assert!(stderr(&second).contains("running"), "{}", stderr(&second));
}

/// `ipc ls` lists the broker's mailboxes with their fill, mode and owner;
/// with no broker running it lists none and says nothing about it.
#[test]
fn ipc_ls_shows_mailboxes() {
    let b = BrokerCmd::start();
    b.ok(&["mailbox", "create", "jobs", "--mode", "0640"]);
    b.ok(&["send", "mailbox:jobs", "one"]);
    b.ok(&["send", "mailbox:jobs", "three"]);
    let json: serde_json::Value =
        serde_json::from_str(&b.ok(&["ls", "--kind", "mailbox", "--json"])).expect("json");
    let objects = json["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 1, "{json}");
    let o = &objects[0];
    assert_eq!(o["kind"], "mailbox");
    assert_eq!(o["address"], "mailbox:jobs");
    assert_eq!(o["messages"], 2);
    assert_eq!(o["bytes"], 8);
    assert_eq!(o["mode"], "0640");
    assert_eq!(o["orphan"], false);
    let note = o["note"].as_str().expect("note");
    assert!(
        note.contains("0 consumer(s)") && note.contains("work-queue"),
        "{note}"
    );
    let table = b.ok(&["ls", "--kind", "mailbox"]);
    assert!(
        table.contains("mailbox:jobs") && table.contains("2 msgs, 8 B"),
        "{table}"
    );

    let none = b.path.with_file_name("no-broker.sock");
    let mut ls = b.ipc(&["ls", "--kind", "mailbox", "--json", "--broker"]);
    let out = run(ls.arg(&none));
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(json["objects"].as_array().map(Vec::len), Some(0), "{json}");
    assert!(!stderr(&out).contains("mailbox"), "{}", stderr(&out));
}
