//! `ipc call` and `ipc serve`: request/reply from the shell, between
//! processes, many clients at once, and with Rust clients and servers of
//! the library on the other side.

use std::process::{Child, Command, Stdio};

use ipckit::rpc::{Client, Server};

mod common;
use common::*;

/// `ipc serve ARGS…` in the background; SIGTERM on drop (so that it
/// removes what it made), then waited for.
struct Serving(Option<Child>);

impl Serving {
    fn start(args: &[&str]) -> Serving {
        Serving(Some(
            ipc()
                .arg("serve")
                .arg("-q")
                .args(args)
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ipc serve"),
        ))
    }

    /// Stops it with SIGTERM; its stderr.
    fn stop(&mut self) -> String {
        let c = self.0.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        stderr(&finish(c))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.stop();
        }
    }
}

/// `ipc call ARGS…`, its server given time to start.
fn call(args: &[&str]) -> std::process::Output {
    run(ipc().arg("call").args(["--timeout", "20"]).args(args))
}

#[test]
fn each_request_runs_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let addr = format!("unix:{}", path.display());
    let mut s = Serving::start(&[&addr, "--", "tr", "a-z", "A-Z"]);
    let out = call(&[&addr, "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "HELLO\n");
    // The request from standard input, the reply in hex.
    let mut c = ipc()
        .args(["call", &addr, "--format", "hex", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), b"ab\n").unwrap();
    let out = finish(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "41420a\n");
    assert!(path.exists());
    s.stop();
    assert!(
        !path.exists(),
        "ipc serve left its socket file after SIGTERM"
    );
}

/// Three requests run their commands at the same time: each command says
/// it arrived (a V) and waits for the test's go (a P); the test gives it
/// only once all three have arrived, which a server running one command
/// at a time never reaches.
#[test]
fn requests_run_concurrently() {
    let arrived = format!("sem:/{}", unique("arrived"));
    let go = format!("sem:/{}", unique("go"));
    for s in [&arrived, &go] {
        let out = run(ipc().args(["sem", "create", s]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ipc_bin = env!("CARGO_BIN_EXE_ipc");
    let script = format!(
        "{ipc_bin} sem post {arrived} && {ipc_bin} sem wait {go} --timeout 20 && tr a-z A-Z"
    );
    let addr = format!("unix:@{}", unique("conc"));
    let _s = Serving::start(&[&addr, "--", "sh", "-c", &script]);
    let callers: Vec<Child> = ["one", "two", "three"]
        .iter()
        .map(|m| {
            ipc()
                .args(["call", &addr, m, "--timeout", "20"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for(
        || {
            let out = run(ipc().args(["sem", "get", &arrived]));
            stdout(&out) == "3\n"
        },
        "three commands running at once",
    );
    let out = run(ipc().args(["sem", "post", &go, "-n", "3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut replies: Vec<String> = callers
        .into_iter()
        .map(|c| {
            let out = finish(c);
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
        })
        .collect();
    replies.sort();
    assert_eq!(replies, ["ONE\n", "THREE\n", "TWO\n"]);
    let out = run(ipc().args(["rm", &arrived, &go]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_failing_or_slow_command_is_the_callers_error() {
    let addr = format!("unix:@{}", unique("fail"));
    let _s = Serving::start(&[&addr, "--", "sh", "-c", "echo 'no such user' >&2; exit 3"]);
    let out = call(&[&addr, "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("refused the request: sh failed (exit status: 3): no such user"),
        "{err}"
    );
    let slow = format!("unix:@{}", unique("slow"));
    let _s2 = Serving::start(&[&slow, "--command-timeout", "0.3", "--", "sleep", "30"]);
    let out = call(&[&slow, "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sleep took longer than --command-timeout 0.3 s and was killed"),
        "{}",
        stderr(&out)
    );
    let missing = format!("unix:@{}", unique("missing"));
    let _s3 = Serving::start(&[&missing, "--", "/nonexistent/command"]);
    let out = call(&[&missing, "x"]);
    assert!(
        stderr(&out).contains("could not run /nonexistent/command"),
        "{}",
        stderr(&out)
    );
    // A call with nobody there times out with status 1.
    let q = format!("mq:/{}", unique("nobody"));
    let out = run(ipc().args(["call", &q, "x", "--timeout", "0.3"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no server at"), "{}", stderr(&out));
    // Without --timeout, not waited for.
    let out = run(ipc().args(["call", &q, "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("give --timeout to wait"),
        "{}",
        stderr(&out)
    );
    // There, but silent: no reply before the timeout.
    let silent = format!("unix:@{}", unique("silent"));
    let _s4 = Serving::start(&[&silent, "--", "sleep", "3"]);
    wait_for(
        || std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| t.contains(&silent[5..])),
        "the silent server",
    );
    let out = run(ipc().args(["call", &silent, "x", "--timeout", "0.5"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no reply"), "{}", stderr(&out));
}

/// ipc call against the library's servers (this test process), and the
/// library's client against ipc serve.
#[test]
fn the_library_on_the_other_side() {
    let addr: ipckit::Address = format!("unix:@{}", unique("lib")).parse().unwrap();
    let bytes = Server::<String, String>::new(ipckit::listen(&addr).unwrap())
        .spawn(|s| s.to_uppercase())
        .unwrap();
    let out = call(&[&addr.to_string(), "from the shell"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "FROM THE SHELL\n");
    // The other codec: told to add --json.
    let out = call(&["--json", &addr.to_string(), "\"x\""]);
    assert!(
        stderr(&out).contains("leave out --json"),
        "{}",
        stderr(&out)
    );
    bytes.stop().unwrap();

    let q: ipckit::Address = format!("mq:/{}", unique("json")).parse().unwrap();
    let json =
        Server::<(i64, i64), i64, _>::with_codec(ipckit::listen(&q).unwrap(), ipckit::typed::Json)
            .spawn(|(a, b)| a + b)
            .unwrap();
    let out = call(&["--json", &q.to_string(), "[2, 3]"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5\n");
    let out = call(&[&q.to_string(), "[2, 3]"]);
    assert!(stderr(&out).contains("add --json"), "{}", stderr(&out));
    json.stop().unwrap();

    let served = format!("unix:@{}", unique("served"));
    let _s = Serving::start(&[&served, "--", "rev"]);
    let client = Client::<Vec<u8>, Vec<u8>>::connect_timeout(&served.parse().unwrap(), T).unwrap();
    assert_eq!(client.call(&b"abc\n".to_vec(), T).unwrap(), b"cba\n");
    let served_json = format!("unix:@{}", unique("served-json"));
    let _s2 = Serving::start(&[&served_json, "--json", "--", "sh", "-c", "cat; echo"]);
    let client = Client::<Vec<u32>, Vec<u32>, _>::connect_with(
        &served_json.parse().unwrap(),
        Some(T),
        ipckit::typed::Json,
    )
    .unwrap();
    assert_eq!(client.call(&vec![1, 2], T).unwrap(), [1, 2]);
    // A command that prints something that is not JSON: the caller's error.
    let bad_json = format!("unix:@{}", unique("bad-json"));
    let _s3 = Serving::start(&[&bad_json, "--json", "--", "echo", "not json"]);
    let out = call(&["--json", &bad_json, "1"]);
    assert!(
        stderr(&out).contains("echo printed something that is not one JSON document"),
        "{}",
        stderr(&out)
    );
}
