//! `ipc send` and `ipc recv` as someone at a shell meets them: where recv
//! listens and what it waits for, several connections, output formats,
//! whole messages and files, size limits, and `ipc signal send` refusing
//! likely mistakes. Real processes, every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The next line of a child's stderr (bounded by the child's own
/// --timeout, which every test gives).
fn next_line(err: &mut BufReader<ChildStderr>) -> String {
    let mut line = String::new();
    err.read_line(&mut line).expect("stderr");
    line
}

/// Starts `ipc recv ARGS…` and reads the address it says it listens on.
fn listening(args: &[&str]) -> (Child, BufReader<ChildStderr>, String) {
    let mut r = recv(args);
    let mut err = BufReader::new(r.stderr.take().unwrap());
    let line = next_line(&mut err);
    let addr = line
        .strip_prefix("ipc recv: listening on ")
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .trim_end()
        .to_owned();
    (r, err, addr)
}

/// Runs `ipc send ADDR ARGS…` with `input` on stdin; returns its output
/// and its pid.
fn send_with(addr: &str, args: &[&str], input: &[u8]) -> (std::process::Output, u32) {
    let mut c = ipc()
        .arg("send")
        .arg(addr)
        .args(args)
        .args(["--timeout", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipc send");
    let pid = c.id();
    c.stdin.take().unwrap().write_all(input).unwrap();
    (finish(c), pid)
}

fn rest(mut err: BufReader<ChildStderr>) -> String {
    let mut s = String::new();
    err.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn recv_says_the_port_it_bound_and_what_it_waits_for() {
    let (r, mut err, addr) = listening(&["tcp:127.0.0.1:0", "-n", "1", "--timeout", "20"]);
    let port: u16 = addr
        .strip_prefix("tcp:127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}"));
    assert_ne!(port, 0);
    // After a second of silence it says what it waits for, and how to
    // send it something.
    let t0 = Instant::now();
    let line = next_line(&mut err);
    assert!(t0.elapsed() >= Duration::from_millis(700), "{line}");
    assert_eq!(
        line.trim_end(),
        format!("ipc recv: waiting for a connection on {addr} (try: ipc send {addr} hello)")
    );
    let (out, _) = send_with(&addr, &["hello"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let res = finish(r);
    assert!(res.status.success(), "{}", rest(err));
    assert_eq!(stdout(&res), "hello\n");
}

#[test]
fn quiet_and_short_waits_say_nothing_more() {
    let q = format!("mq:/{}", unique("quiet"));
    // A wait under a second: no notice; the timeout is the only line.
    let out = run(ipc().args(["recv", &q, "--timeout", "0.5"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // Over a second: the notice, then the timeout.
    let out = run(ipc().args(["recv", &q, "--timeout", "1.6"]));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("ipc recv: waiting for a message on {q}\n")),
        "{err}"
    );
    // -q: only the timeout.
    let out = run(ipc().args(["recv", &q, "-q", "--timeout", "1.6"]));
    assert_eq!(
        stderr(&out).trim_end(),
        format!("ipc: timed out waiting for a message on {q}")
    );
    let out = run(ipc().args(["rm", &q]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn keep_takes_connection_after_connection_and_json_says_who_sent() {
    let sock = format!("unix:@{}", unique("keep"));
    let mut r = recv(&[&sock, "-k", "--format", "json", "--timeout", "20", "-q"]);
    let mut out = BufReader::new(r.stdout.take().unwrap());
    let mut pids = Vec::new();
    for msg in ["first", "second"] {
        // Retried until the receiver listens (the first time).
        let end = Instant::now() + T;
        loop {
            let (o, pid) = send_with(&sock, &[msg], b"");
            if o.status.success() {
                pids.push(pid);
                break;
            }
            assert!(Instant::now() < end, "{}", stderr(&o));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    for (i, msg) in ["first", "second"].iter().enumerate() {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["text"], *msg, "{line}");
        assert_eq!(v["len"], msg.len(), "{line}");
        assert_eq!(v["pid"], pids[i], "{line}");
        assert_eq!(v["uid"], uid, "{line}");
        assert_eq!(v["conn"], i + 1, "{line}");
    }
    // Still there for a third connection: ended by SIGTERM.
    assert!(r.try_wait().unwrap().is_none(), "-k stopped after two");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &r.id().to_string()])
        .status();
    let res = finish(r);
    assert_eq!(res.status.code(), Some(128 + 15));
}

#[test]
fn formats_make_every_message_recognisable() {
    let q = format!("mq:/{}", unique("fmt"));
    let msgs: [&[u8]; 5] = [b"plain", b"two\nlines", b"\xff\x00bin", b"$'x'", b""];
    // --whole: stdin as one message, newlines and all; -0: NUL-ended.
    for m in msgs {
        let (o, _) = send_with(&q, &["--whole", "--priority", "2"], m);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (o, _) = send_with(&q, &["-0"], b"a\nb\0c");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = run(ipc().args(["recv", &q, "-n", "5", "--timeout", "5"]));
    assert_eq!(
        stdout(&out),
        "plain\n$'two\\nlines'\n$'\\xff\\x00bin'\n$'$\\'x\\''\n\n"
    );
    let out = run(ipc().args(["recv", &q, "-n", "2", "--timeout", "5", "-0"]));
    assert_eq!(out.stdout, b"a\nb\0c\0");
    for m in msgs {
        let (o, _) = send_with(&q, &["--whole", "--priority", "5"], m);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let out = run(ipc().args(["recv", &q, "-n", "5", "--timeout", "5", "--format", "json"]));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{}", stdout(&out));
    assert_eq!(lines[1]["text"], "two\nlines");
    assert_eq!(lines[2]["base64"], "/wBiaW4=");
    assert!(lines.iter().all(|v| v["priority"] == 5));
    for m in &msgs[..3] {
        let (o, _) = send_with(&q, &["--whole"], m);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let out = run(ipc().args(["recv", &q, "-n", "3", "--timeout", "5", "--format", "hex"]));
    assert_eq!(stdout(&out), "706c61696e\n74776f0a6c696e6573\nff0062696e\n");
    let out = run(ipc().args(["rm", &q]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn files_and_max_size_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"small\nfile").unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 3000]).unwrap();
    let sock = format!("unix:@{}", unique("files"));
    // Refused before anything is opened: no receiver is needed to learn it.
    let out = run(ipc()
        .args(["send", &sock, "--max-size", "1K", "--file"])
        .arg(&big));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("has 3000 bytes") && err.contains("--max-size"),
        "{err}"
    );
    let out = run(ipc().args(["send", &sock, "--file"]).arg(dir.path()));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    let out = run(ipc().args(["send", "--lines", &sock, "two\nlines"]));
    assert!(stderr(&out).contains("holds a newline"), "{}", stderr(&out));
    // A receiver with a 1 KiB limit: the small file arrives whole, the big
    // one is refused with the option to raise the limit.
    let r = recv(&[
        &sock,
        "--max-size",
        "1K",
        "-n",
        "2",
        "--timeout",
        "20",
        "-q",
    ]);
    let end = Instant::now() + T;
    loop {
        let out = run(ipc()
            .args(["send", &sock, "--timeout", "5", "--file"])
            .arg(&small)
            .arg("--file")
            .arg(&big));
        if !stderr(&out).contains("no socket exists") {
            break;
        }
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    }
    let res = finish(r);
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(stdout(&res), "$'small\\nfile'\n");
    let err = stderr(&res);
    assert!(
        err.contains(
            "announced as 3000 bytes, over ipc recv's limit of 1024 (--max-size raises it)"
        ),
        "{err}"
    );
}

#[test]
fn a_peer_writing_text_to_a_framed_receiver_is_told_to_use_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let addr = format!("unix:{}", path.display());
    let r = recv(&[&addr, "--timeout", "20"]);
    wait_for(|| path.exists(), "the socket");
    // This test process writes as `printf ab | nc -U PATH` would.
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.write_all(b"ab").unwrap();
    drop(c);
    let res = finish(r);
    assert_eq!(res.status.code(), Some(2));
    let err = stderr(&res);
    assert!(
        err.contains("got 2 of the 4 header bytes") && err.contains("use --lines"),
        "{err}"
    );
}

#[test]
fn signal_send_refuses_init_and_its_own_shell_without_force() {
    let out = run(ipc().args(["signal", "send", "1", "USR1"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is init"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    // `$$` where `$!` was meant: the shell that runs ipc. Refused, the
    // shell lives on; with --force it gets the signal (and traps it).
    let ipc = env!("CARGO_BIN_EXE_ipc");
    let script = format!(
        "trap 'echo trapped' USR1; {ipc} signal send $$ USR1; echo \"rc=$?\"; \
         {ipc} signal send --force $$ USR1; echo \"rc=$?\""
    );
    let out = run(std::process::Command::new("bash").arg("-c").arg(&script));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "rc=2\ntrapped\nrc=0\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is the process that ran ipc"),
        "{}",
        stderr(&out)
    );
    // A grandparent too (a shell above a subshell).
    let script = format!("trap 'echo trapped' USR1; ( {ipc} signal send $$ USR1; echo \"rc=$?\" )");
    let out = run(std::process::Command::new("bash").arg("-c").arg(&script));
    assert_eq!(stdout(&out), "rc=2\n", "{}", stderr(&out));
}

#[test]
fn hints_are_in_the_shells_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-reads");
    let addr = format!("fifo:{}", path.display());
    let out = run(ipc().args(["send", &addr, "x"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("ipc recv {addr} makes it"))
            && err.contains(&format!("mkfifo {}", path.display())),
        "{err}"
    );
    assert!(!err.contains("Fifo::") && !err.contains("set_max"), "{err}");
}

/// Completions and man pages come from the parser's own definitions: every
/// subcommand and option is there, and nothing internal.
#[test]
fn completions_and_man_pages() {
    let out = run(ipc().args(["completions", "bash"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    for word in ["recv", "serve", "shm", "--keep", "--max-size", "--orphans"] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
    assert!(
        !script.contains("__bench-peer"),
        "the internal peer is offered"
    );
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ipc.bash");
    std::fs::write(&file, &script).unwrap();
    let check = run(std::process::Command::new("bash").arg("-n").arg(&file));
    assert!(check.status.success(), "{}", stderr(&check));
    for shell in ["zsh", "fish"] {
        let out = run(ipc().args(["completions", shell]));
        assert!(
            out.status.success() && stdout(&out).contains("recv"),
            "{shell}"
        );
    }
    fails_with(ipc().args(["completions", "tcsh"]), "possible values");

    let out = run(ipc().args(["man", "--dir"]).arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert!(page("ipc.1").starts_with(".ie") && page("ipc.1").contains(".TH ipc 1"));
    let recv = page("ipc-recv.1");
    assert!(recv.contains(".TH ipc-recv 1  \"ipc-recv 0."), "{recv}");
    assert!(
        recv.contains("\\-\\-keep") && recv.contains("\\-\\-format"),
        "{recv}"
    );
    for sub in [
        "send", "ls", "rm", "call", "serve", "shm", "sem", "signal", "bench",
    ] {
        assert!(
            dir.path().join(format!("ipc-{sub}.1")).exists(),
            "ipc-{sub}.1"
        );
    }
    assert!(!dir.path().join("ipc-__bench-peer.1").exists());
    // To stdout, and quietly into a closed pipe.
    let out = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} man | head -c 10", env!("CARGO_BIN_EXE_ipc"))));
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
}
