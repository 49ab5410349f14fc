//! `ipc shm` and `ipc sem`: shared memory and semaphores from the shell,
//! each command its own process, as two terminals would use them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn ok(args: &[&str]) -> String {
    let out = run(ipc().args(args));
    assert!(out.status.success(), "ipc {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Removes what a test made, however it ends.
struct Rm(String);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = run(ipc().args(["rm", &self.0]));
    }
}

fn sysv_key() -> String {
    format!("{:#x}", 0x3200_0000 | (std::process::id() & 0xff_ffff))
}

#[test]
fn shm_written_by_one_process_is_read_by_another() {
    let addr = format!("shm:/{}", unique("shm"));
    ok(&["shm", "create", &addr, "--size", "64"]);
    let _rm = Rm(addr.clone());
    ok(&["shm", "write", &addr, "hello, world!"]);
    ok(&[
        "shm",
        "write",
        &addr,
        "--offset",
        "32",
        "--hex",
        "de ad be ef",
    ]);
    assert_eq!(
        ok(&["shm", "read", &addr]),
        "00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 00 00 00  |hello, world!...|\n\
         00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         00000020  de ad be ef 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         00000030  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         00000040\n"
    );
    assert_eq!(
        ok(&["shm", "read", &addr, "--offset", "7", "--length", "5", "--format", "raw"]),
        "world"
    );
    assert_eq!(
        ok(&["shm", "read", &addr, "--offset", "32", "--length", "4", "--format", "hex"]),
        "deadbeef\n"
    );
    // From standard input.
    let mut c = ipc()
        .args(["shm", "write", &addr, "--offset", "16"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), b"from stdin").unwrap();
    let out = finish(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ok(&["shm", "read", &addr, "--offset", "16", "--length", "10", "--format", "raw"]),
        "from stdin"
    );
    // Nothing is written that would not fit; reads past the end refused.
    fails_with(
        ipc().args(["shm", "write", &addr, "--offset", "60", "too long"]),
        "would go past the end",
    );
    assert_eq!(
        ok(&["shm", "read", &addr, "--offset", "60", "--format", "hex"]),
        "00000000\n"
    );
    fails_with(
        ipc().args(["shm", "read", &addr, "--offset", "65"]),
        "past the end",
    );
    fails_with(
        ipc().args(["shm", "read", &addr, "--offset", "60", "--length", "5"]),
        "goes past the end",
    );
    fails_with(
        ipc().args(["shm", "write", &addr, "--hex", "abc"]),
        "odd number",
    );
    fails_with(
        ipc().args(["shm", "create", &addr, "--size", "64"]),
        "exists",
    );
    // stat: size, mode, and this test process, which maps it.
    let mapped = ipckit::shm::Shm::builder(&addr[4..]).open().unwrap();
    let st = ok(&["shm", "stat", &addr]);
    assert!(st.contains("size: 64 bytes"), "{st}");
    assert!(st.contains("mode: 0600"), "{st}");
    assert!(
        st.contains(&format!("({})", std::process::id())),
        "this process maps it: {st}"
    );
    drop(mapped);
}

#[test]
fn sysv_shm_by_key_and_by_id() {
    let addr = format!("sysv-shm:{}", sysv_key());
    ok(&["shm", "create", &addr, "--size", "4K", "--mode", "644"]);
    let _rm = Rm(addr.clone());
    ok(&["shm", "write", &addr, "--offset", "4090", "ends"]);
    let st = ok(&["shm", "stat", &addr]);
    assert!(
        st.contains("size: 4096 bytes") && st.contains("mode: 0644"),
        "{st}"
    );
    let id: i32 = st
        .split("id ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{st}"));
    let by_id = format!("sysv-shm:id={id}");
    assert_eq!(
        ok(&["shm", "read", &by_id, "--offset", "4090", "--length", "4", "--format", "raw"]),
        "ends"
    );
    fails_with(
        ipc().args(["shm", "create", &by_id, "--size", "1"]),
        "give a key",
    );
    fails_with(ipc().args(["shm", "read", "mq:/x"]), "is not shared memory");
    if is_root() {
        // 0644: another user may read, not write.
        let nobody = |args: &[&str]| {
            run(Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_ipc"))
                .args(args))
        };
        let out = nobody(&["shm", "read", &addr, "--offset", "4090", "--format", "raw"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "ends\0\0");
        let out = nobody(&["shm", "write", &addr, "x"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

/// A P in one process sleeps until a V from another wakes it; `get`
/// shows the sleeper meanwhile.
#[test]
fn p_in_one_terminal_v_in_another() {
    let key = sysv_key();
    for addr in [
        format!("sem:/{}", unique("sem")),
        format!("sysv-sem:{}", key.replace("0x32", "0x33")),
    ] {
        let sysv = addr.starts_with("sysv");
        ok(&["sem", "create", &addr, "--value", "0"]);
        let _rm = Rm(addr.clone());
        let waiter = ipc()
            .args(["sem", "wait", &addr, "--timeout", "20"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if sysv {
            wait_for(
                || ok(&["sem", "get", &addr]).contains("1 waiting to take"),
                "the waiter to sleep",
            );
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(ok(&["sem", "get", &addr]).lines().count(), 1);
        let t0 = Instant::now();
        ok(&["sem", "post", &addr]);
        let out = finish(waiter);
        assert!(out.status.success(), "{addr}: {}", stderr(&out));
        assert!(t0.elapsed() < T);
        let v = ok(&["sem", "get", &addr]);
        assert!(v == "0\n" || v.starts_with("0: value 0,"), "{addr}: {v}");
        // A P that cannot happen times out with status 1.
        let out = run(ipc().args(["sem", "wait", &addr, "--timeout", "0.2"]));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    }
}

/// SEM_UNDO gives back what a process took when it exits; -n on a System
/// V set is all or nothing; POSIX semaphores refuse what they lack.
#[test]
fn undo_and_all_or_nothing() {
    let addr = format!("sysv-sem:{}", sysv_key().replace("0x32", "0x34"));
    ok(&["sem", "create", &addr, "--count", "2", "--value", "1"]);
    let _rm = Rm(addr.clone());
    let holder = ipc()
        .args(["sem", "wait", &addr, "--undo", "--hold", "20"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || ok(&["sem", "get", &addr, "--index", "0"]) == "0\n",
        "the P",
    );
    // Killed while holding it: the kernel gives it back.
    let _ = Command::new("kill")
        .args(["-KILL", &holder.id().to_string()])
        .status();
    let _ = finish(holder);
    assert_eq!(ok(&["sem", "get", &addr, "--index", "0"]), "1\n");
    // Without --undo it stays taken.
    ok(&["sem", "wait", &addr]);
    assert_eq!(ok(&["sem", "get", &addr, "--index", "0"]), "0\n");
    // -n 2 of a value of 1: nothing taken.
    let out = run(ipc().args([
        "sem",
        "wait",
        &addr,
        "--index",
        "1",
        "-n",
        "2",
        "--timeout",
        "0.2",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing taken"), "{}", stderr(&out));
    assert_eq!(ok(&["sem", "get", &addr, "--index", "1"]), "1\n");
    ok(&["sem", "post", &addr, "--index", "1", "-n", "3"]);
    assert_eq!(ok(&["sem", "get", &addr, "--index", "1"]), "4\n");
    fails_with(
        ipc().args(["sem", "post", &addr, "--index", "2"]),
        "out of range",
    );

    let posix = format!("sem:/{}", unique("undo"));
    ok(&["sem", "create", &posix, "--value", "1"]);
    let _rm2 = Rm(posix.clone());
    fails_with(
        ipc().args(["sem", "wait", &posix, "--undo"]),
        "--undo is for System V sets",
    );
    fails_with(
        ipc().args([
            "sem",
            "create",
            &format!("sem:/{}", unique("c")),
            "--count",
            "2",
        ]),
        "--count is for System V sets",
    );
    // POSIX takes one at a time: a timeout keeps what was taken, and says
    // how to give it back.
    let out = run(ipc().args(["sem", "wait", &posix, "-n", "2", "--timeout", "0.2"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("took 1 of 2, which stay taken"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(&["sem", "get", &posix]), "0\n");
    fails_with(ipc().args(["sem", "get", "shm:/x"]), "is not a semaphore");
}
