//! The `ipc` binary, tested as a user runs it: separate processes, real
//! kernel objects, every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Whether something is bound to UDP `port` (readiness without a probe
/// message, which the receiver would count).
fn udp_bound(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|s| s.contains(&needle)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn roundtrip(addr: &str) {
    let r = recv(&[addr, "-n", "2", "--timeout", "20"]);
    send(addr, &["hello", "wide world"]);
    let out = finish(r);
    assert!(out.status.success(), "{addr}: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\nwide world\n", "{addr}");
}

#[test]
fn fifo_roundtrip_creates_and_removes_the_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let addr = format!("fifo:{}", path.display());
    let r = recv(&[&addr, "-n", "2", "--timeout", "20"]);
    wait_for(|| path.exists(), "the FIFO");
    send(&addr, &["hello", "wide world"]);
    let out = finish(r);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\nwide world\n");
    assert!(!path.exists(), "ipc recv left the FIFO it created");
}

#[test]
fn unix_path_roundtrip_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    roundtrip(&format!("unix:{}", path.display()));
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn unix_abstract_roundtrip() {
    roundtrip(&format!("unix:@{}", unique("abs")));
}

#[test]
fn unix_dgram_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    roundtrip(&format!("unix-dgram:{}", path.display()));
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn unix_seq_roundtrip() {
    roundtrip(&format!("unix-seq:@{}", unique("seq")));
}

#[test]
fn tcp_roundtrip_ipv4_and_ipv6() {
    roundtrip(&format!("tcp:127.0.0.1:{}", free_port()));
    roundtrip(&format!("tcp:[::1]:{}", free_port()));
}

#[test]
fn udp_roundtrip() {
    let port = free_port();
    let addr = format!("udp:127.0.0.1:{port}");
    let r = recv(&[&addr, "-n", "2", "--timeout", "20"]);
    wait_for(|| udp_bound(port), "the UDP socket");
    send(&addr, &["hello", "wide world"]);
    let out = finish(r);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\nwide world\n");
}

#[test]
fn send_reads_stdin_lines_and_recv_stops_when_the_peer_closes() {
    let addr = format!("unix:@{}", unique("stdin"));
    let r = recv(&[&addr, "--timeout", "20"]); // no -n: until the peer closes
    let end = Instant::now() + T;
    loop {
        let mut s = ipc()
            .args(["send", &addr])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // If the receiver is not listening yet, `ipc send` exits before
        // reading stdin; its exit status (below) decides whether to retry.
        let _ = s.stdin.take().unwrap().write_all(b"first line\nsecond\n");
        if finish(s).status.success() {
            break;
        }
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = finish(r);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "first line\nsecond\n");
}

#[test]
fn lines_mode_talks_to_shell_tools() {
    // FIFO written by the shell.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let addr = format!("fifo:{}", path.display());
    let r = recv(&[&addr, "--lines", "-n", "2", "--timeout", "20"]);
    wait_for(|| path.exists(), "the FIFO");
    let sh = run(Command::new("sh")
        .arg("-c")
        .arg(format!("printf 'x 1\\ny 2\\n' > '{}'", path.display())));
    assert!(sh.status.success());
    let out = finish(r);
    assert_eq!(stdout(&out), "x 1\ny 2\n", "{}", stderr(&out));

    // TCP written by a plain socket.
    let port = free_port();
    let addr = format!("tcp:127.0.0.1:{port}");
    let r = recv(&[&addr, "--lines", "-n", "1", "--timeout", "20"]);
    let mut conn = None;
    wait_for(
        || {
            conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
            conn.is_some()
        },
        "the listener",
    );
    conn.unwrap().write_all(b"plain text\n").unwrap();
    let out = finish(r);
    assert_eq!(stdout(&out), "plain text\n", "{}", stderr(&out));

    // ipc send --lines to a plain reader.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp:{}", l.local_addr().unwrap());
    let out = run(ipc().args(["send", &addr, "--lines", "m1", "m2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = String::new();
    l.accept().unwrap().0.read_to_string(&mut got).unwrap();
    assert_eq!(got, "m1\nm2\n");
}

#[test]
fn timeout_exits_1_and_says_so() {
    let t0 = Instant::now();
    let out = run(ipc().args([
        "recv",
        &format!("unix:@{}", unique("nobody")),
        "-n",
        "1",
        "--timeout",
        "0.3",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn broken_stdout_is_a_normal_exit() {
    let addr = format!("unix-dgram:@{}", unique("head"));
    let mut r = recv(&[&addr, "-n", "3", "--timeout", "20"]);
    let mut out = BufReader::new(r.stdout.take().unwrap());
    send(&addr, &["one"]);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    drop(out); // like `| head -1`
    send(&addr, &["two"]); // printing it fails with EPIPE: a quiet exit
    let res = finish(r);
    assert_eq!(res.status.code(), Some(0), "{}", stderr(&res));
    // Nothing but where it listened.
    assert!(
        stderr(&res)
            .lines()
            .all(|l| l.starts_with("ipc recv: listening on unix-dgram:@")),
        "{}",
        stderr(&res)
    );
}

#[test]
fn bad_addresses_are_refused_clearly() {
    fails_with(ipc().args(["send", "nothing", "x"]), "not an address");
    fails_with(
        ipc().args(["send", "carrier-pigeon:x", "x"]),
        "unknown mechanism",
    );
    fails_with(ipc().args(["recv", "tcp:localhost"]), "lacks a port");
    fails_with(
        ipc().args(["send", "unix:/nonexistent/dir/s", "x"]),
        "is the server running",
    );
}

#[test]
fn a_regular_file_is_neither_fifo_nor_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    fails_with(
        ipc().args(["send", &format!("fifo:{}", file.display()), "x"]),
        "not a FIFO",
    );
    fails_with(
        ipc().args(["recv", &format!("fifo:{}", file.display())]),
        "not a FIFO",
    );
    fails_with(
        ipc().args(["recv", &format!("unix:{}", file.display())]),
        "not a socket",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn address_already_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let addr = format!("unix:{}", path.display());
    let first = recv(&[&addr, "-n", "1", "--timeout", "20"]);
    wait_for(|| path.exists(), "the first listener");
    fails_with(
        ipc().args(["recv", &addr, "--timeout", "1"]),
        "in use by a running stream server",
    );
    send(&addr, &["done"]);
    assert!(finish(first).status.success());

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fails_with(
        ipc().args(["recv", &format!("tcp:{}", l.local_addr().unwrap())]),
        "in use",
    );
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file
    roundtrip(&format!("unix:{}", path.display()));
}

#[test]
fn permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The directory is open to all, so the denial comes from the FIFO itself.
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let path = dir.path().join("f");
    let made = run(Command::new("mkfifo").arg("-m").arg("600").arg(&path));
    assert!(made.status.success());
    let mut cmd = if is_root() {
        // Root bypasses permission bits: run a copy of ipc as nobody.
        use std::os::unix::process::CommandExt;
        // Copied by a child process: a copy this process held open for
        // writing could be inherited by a peer another test thread forks,
        // and running it would then fail with ETXTBSY.
        let exe = dir.path().join("ipc");
        let copied = Command::new("install")
            .args(["-m", "0755", env!("CARGO_BIN_EXE_ipc")])
            .arg(&exe)
            .status()
            .unwrap();
        assert!(copied.success(), "install: {copied}");
        let mut c = Command::new(exe);
        c.stdin(Stdio::null()).uid(65534).gid(65534);
        c
    } else {
        std::fs::set_permissions(&path, PermissionsExt::from_mode(0o000)).unwrap();
        ipc()
    };
    cmd.args([
        "send",
        &format!("fifo:{}", path.display()),
        "x",
        "--timeout",
        "2",
    ]);
    fails_with(&mut cmd, "ermission denied");
}

#[test]
fn an_oversized_frame_is_refused() {
    let name = unique("big");
    let r = recv(&[&format!("unix:@{name}"), "-n", "1", "--timeout", "20"]);
    use std::os::linux::net::SocketAddrExt;
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut conn = None;
    wait_for(
        || {
            conn = std::os::unix::net::UnixStream::connect_addr(&sa).ok();
            conn.is_some()
        },
        "the listener",
    );
    conn.unwrap().write_all(&u32::MAX.to_le_bytes()).unwrap();
    let out = finish(r);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("announced as 4294967295 bytes, over ipc recv's limit of 16777216"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_peer_dying_mid_message_is_reported() {
    let name = unique("mid");
    let r = recv(&[&format!("unix:@{name}"), "-n", "1", "--timeout", "20"]);
    use std::os::linux::net::SocketAddrExt;
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut conn = None;
    wait_for(
        || {
            conn = std::os::unix::net::UnixStream::connect_addr(&sa).ok();
            conn.is_some()
        },
        "the listener",
    );
    let mut c = conn.unwrap();
    c.write_all(&100u32.to_le_bytes()).unwrap();
    c.write_all(b"only part").unwrap();
    drop(c);
    let out = finish(r);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("got 9 of 100 payload bytes"),
        "{}",
        stderr(&out)
    );
}

/// Runs `ipc bench ARGS… --json FILE`, checks it succeeded, and returns
/// the table it printed and the JSON report.
fn bench_json(args: &[&str]) -> (String, serde_json::Value) {
    let _one_at_a_time = bench_lock();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let out = run(ipc()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env_remove("COLUMNS"));
    assert!(out.status.success(), "{}", stderr(&out));
    let v = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (stdout(&out), v)
}

#[test]
fn bench_writes_the_documented_json() {
    let (table, v) = bench_json(&[
        "pipe",
        "unix-seq",
        "udp",
        "mq",
        "sysv-mq",
        "--sizes",
        "64,65536",
        "--duration-ms",
        "30",
    ]);
    for m in [
        "pipe",
        "unix-seq",
        "udp",
        "byte stream",
        "floor",
        "× floor",
        "rtt p99.9 µs",
        "lowest latency",
    ] {
        assert!(table.contains(m), "{m} missing from\n{table}");
    }
    assert!(v["machine"]["kernel"].is_string());
    assert!(v["floor_rtt_ns"]["p50"].as_u64().unwrap() > 0);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    for r in results {
        let (mech, size) = (
            r["mechanism"].as_str().unwrap(),
            r["size"].as_u64().unwrap(),
        );
        assert_eq!(r["wait"], "block");
        if mech == "udp" && size == 65536 {
            assert!(r["skipped"].as_str().unwrap().contains("65507"), "{r}");
            continue;
        }
        let msgmax = ipckit::sysv::limits().unwrap().max_message_size;
        if mech == "sysv-mq" && size as usize > msgmax {
            assert!(r["skipped"].as_str().unwrap().contains("msgmax"), "{r}");
            continue;
        }
        // Above msgsize_max only a privileged process may create the queue.
        if let Some(why) = r["skipped"]
            .as_str()
            .filter(|_| mech == "mq" && size == 65536)
        {
            assert!(why.contains("msgsize_max"), "{r}");
            continue;
        }
        assert!(r.get("skipped").is_none(), "{r}");
        for k in ["min", "p50", "p99", "p999", "max", "mean"] {
            assert!(r["rtt_ns"][k].as_u64().unwrap() > 0, "{k} in {r}");
        }
        assert!(r["samples"].as_u64().unwrap() > 0);
        assert_eq!(r["spread"]["rounds"], 3, "{r}");
        assert!(r["spread"]["rtt_p50_pct"].as_f64().unwrap() >= 0.0);
        assert!(r["spread"]["msgs_per_s_pct"].as_f64().unwrap() >= 0.0);
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0);
        let bps = r["throughput"]["bytes_per_s"].as_f64().unwrap();
        let mps = r["throughput"]["msgs_per_s"].as_f64().unwrap();
        assert!((bps / mps - size as f64).abs() < 1e-6 * size as f64);
    }
}

/// The request/reply table covers the registry's mechanisms among those
/// asked for, with figures, and says why one has none.
#[test]
fn bench_measures_request_reply_over_the_registry() {
    let (table, v) = bench_json(&[
        "unix",
        "mq",
        "sysv-mq",
        "ring",
        "--sizes",
        "64",
        "--duration-ms",
        "30",
    ]);
    assert!(table.contains("Request/reply"), "{table}");
    let rows = v["request_reply"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["mechanism"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["unix", "mq", "sysv-mq", "ring"]);
    for r in rows {
        assert!(r["skipped"].is_null(), "{r}");
        let (p50, p99) = (r["p50_ns"].as_u64().unwrap(), r["p99_ns"].as_u64().unwrap());
        assert!(p50 > 0 && p99 >= p50, "{r}");
        assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
        assert!(r["calls_per_s_1"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["calls_per_s_4"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// `ipc bench mailbox`: round trips and one-way rates through a broker
/// process, plain and durable, with adaptive and blocking clients, beside
/// a bare Unix socket's round trips (both waits); nats-server's and two
/// brokers bridged through it when it is installed (else rows say how to
/// get it); and the mailbox in the main and request/reply tables.
#[test]
fn bench_measures_mailboxes_through_a_broker() {
    let (table, v) = bench_json(&["mailbox", "--duration-ms", "30"]);
    assert!(table.contains("through an `ipc broker` process"), "{table}");
    assert!(table.contains("goal: at most 2×"), "{table}");
    let rows = v["mailbox"].as_array().unwrap();
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    let installed = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let mut want = vec![
        "unix socket (bare, block)",
        "unix socket (bare, adaptive)",
        "mailbox, clients block",
        "mailbox",
        "mailbox, durable (fsync 10ms)",
        "mailbox, no lanes (broker --no-lanes)",
        "mailbox, broker on a CPU of its own",
        "nats-server (request/reply)",
        "2 brokers bridged by nats-server",
    ];
    if installed {
        want.push("2 brokers bridged, durable (JetStream)");
    }
    assert_eq!(paths, want);
    // The row that pins the broker apart needs two CPUs.
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let measured: Vec<&serde_json::Value> = if installed {
        rows.iter().collect()
    } else {
        rows[..7].iter().collect()
    };
    let measured: Vec<&serde_json::Value> = measured
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != 6 || two_cpus)
        .map(|(_, r)| r)
        .collect();
    for r in &measured {
        assert!(r["skipped"].is_null(), "{r}");
        let (p50, p99) = (
            r["rtt_ns"]["p50"].as_u64().unwrap(),
            r["rtt_ns"]["p99"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p99 >= p50, "{r}");
    }
    // Clients that block: a round trip only.
    assert!(rows[2]["msgs_per_s_1"].is_null(), "{}", rows[2]);
    for r in &rows[3..5] {
        assert!(r["msgs_per_s_1"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["msgs_per_s_4"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Without lanes: a round trip and one way to one receiver.
    assert!(
        rows[5]["msgs_per_s_1"].as_f64().unwrap() > 0.0,
        "{}",
        rows[5]
    );
    assert!(rows[5]["msgs_per_s_4"].is_null(), "{}", rows[5]);
    // The broker pinned apart from both clients: the same, one way 1→1.
    if two_cpus {
        assert!(
            rows[6]["msgs_per_s_1"].as_f64().unwrap() > 0.0,
            "{}",
            rows[6]
        );
    } else {
        assert!(rows[6]["skipped"]
            .as_str()
            .unwrap()
            .contains("needs two CPUs"));
    }
    if installed {
        for r in &rows[8..] {
            assert!(r["msgs_per_s_1"].as_f64().unwrap() > 0.0, "{r}");
        }
    } else {
        for r in &rows[7..] {
            assert!(
                r["skipped"]
                    .as_str()
                    .unwrap()
                    .contains("apt-get install nats-server"),
                "{r}"
            );
        }
    }
    // The mailbox is also a mechanism of the main table and of the
    // request/reply table, through its address and the bench's broker.
    let main = v["results"].as_array().unwrap();
    let sizes: Vec<u64> = main.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [64, 4096, 65536], "{v}");
    for r in main {
        assert_eq!(r["mechanism"], "mailbox", "{r}");
        assert!(r["rtt_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    let rpc = v["request_reply"].as_array().unwrap();
    assert_eq!(rpc.len(), 1, "{v}");
    assert_eq!(rpc[0]["mechanism"], "mailbox", "{v}");
    assert!(rpc[0]["calls_per_s_1"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_refuses_bad_arguments() {
    fails_with(
        ipc().args(["bench", "--cpus", "0"]),
        "two different CPU numbers",
    );
    let out = run(ipc().args(["bench", "--sizes", "0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sizes start at 1 byte"));
    fails_with(
        ipc().args(["bench", "pipe", "ring-mpmc", "--by-address"]),
        "--by-address applies to mechanisms with an address (fifo, unix,",
    );
    // These panicked ("capacity overflow", exit 101) and aborted (exit 134),
    // leaving their temporary directory.
    for huge in [
        "18446744073709551615",
        "1000000000000",
        "99999999999999999999999",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        fails_with(
            ipc()
                .args(["bench", "pipe", "--sizes", huge])
                .env("TMPDIR", tmp.path()),
            "up to 1 GiB",
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{huge}");
    }
}

#[test]
fn recv_on_an_existing_fifo_leaves_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs");
    assert!(run(Command::new("mkfifo").arg(&path)).status.success());
    let addr = format!("fifo:{}", path.display());
    let r = recv(&[&addr, "--timeout", "20"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        run(Command::new("kill").arg("-INT").arg(r.id().to_string()))
            .status
            .success()
    );
    finish(r);
    assert!(path.exists(), "removed a FIFO it did not create");
}

#[test]
fn an_interrupted_recv_still_removes_what_it_created() {
    for sig in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let sock = dir.path().join("s");
        for (addr, path) in [
            (format!("fifo:{}", fifo.display()), &fifo),
            (format!("unix:{}", sock.display()), &sock),
        ] {
            let r = recv(&[&addr, "--timeout", "20"]);
            wait_for(|| path.exists(), "the receiver's file");
            let k = run(Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(r.id().to_string()));
            assert!(k.status.success());
            let out = finish(r);
            assert!(
                out.status.code().is_some_and(|c| c > 128),
                "SIG{sig} on {addr}: {:?}",
                out.status
            );
            assert!(!path.exists(), "SIG{sig} left {}", path.display());
        }
    }
}

/// Removes a POSIX queue when the test ends, however it ends.
struct QueueGuard(String);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let _ = run(ipc().args(["rm", &format!("mq:{}", self.0)]));
    }
}

fn queue_exists(name: &str) -> bool {
    ipckit::mq::PosixQueue::builder(name).open().is_ok()
}

#[test]
fn posix_queue_outlives_its_sender_and_keeps_priorities() {
    let name = format!("/{}", unique("mq"));
    let _guard = QueueGuard(name.clone());
    let addr = format!("mq:{name}");
    for (msgs, prio) in [(vec!["low"], "1"), (vec!["high", "urgent"], "9")] {
        let out = run(ipc().args(["send", &addr, "--priority", prio]).args(&msgs));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(run(ipc().args(["send", &addr, "plain"])).status.success());
    // Nobody was receiving: the queue kept everything.
    let out = run(ipc().args([
        "recv",
        &addr,
        "-n",
        "4",
        "--show-priority",
        "--timeout",
        "5",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "9\thigh\n9\turgent\n1\tlow\n0\tplain\n");
    // And it is still there for the next one, until ipc rm.
    assert!(queue_exists(&name));
    let out = run(ipc().args(["recv", &addr, "-n", "1", "--timeout", "0.2"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(!queue_exists(&name));
    fails_with(ipc().args(["rm", &addr]), "no POSIX queue named");
}

#[test]
fn posix_queue_bad_input() {
    let name = format!("/{}", unique("mqbad"));
    let addr = format!("mq:{name}");
    fails_with(
        ipc().args(["send", &addr, "x", "--priority", "40000"]),
        "out of range",
    );
    assert!(!queue_exists(&name), "a refused send created the queue");
    fails_with(
        ipc().args(["send", "mq:noslash", "x"]),
        "must start with a slash",
    );
    fails_with(
        ipc().args(["send", "unix:@x", "x", "--priority", "1"]),
        "applies to POSIX queues (mq:/NAME) and mailboxes (mailbox:NAME, pid:PID) only",
    );
    fails_with(
        ipc().args(["recv", "unix:@x", "--show-priority"]),
        "applies to POSIX queues (mq:/NAME) and mailboxes (mailbox:NAME) only",
    );
    fails_with(ipc().args(["rm", "tcp:127.0.0.1:1"]), "not a named object");
}

/// A System V key for this test run: a marker bit, the pid, a counter.
fn unique_key() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) & 0xff;
    format!(
        "{:#x}",
        0x2000_0000 | (std::process::id() & 0x1f_ffff) << 8 | n
    )
}

/// Removes a System V queue when the test ends, however it ends.
struct SysvGuard(String);

impl Drop for SysvGuard {
    fn drop(&mut self) {
        let _ = run(ipc().args(["rm", &self.0]));
    }
}

fn sysv_exists(addr: &str) -> bool {
    let key = addr.strip_prefix("sysv-mq:").unwrap().parse().unwrap();
    ipckit::sysv::MessageQueue::builder(key).open().is_ok()
}

#[test]
fn sysv_queue_outlives_its_sender_and_selects_by_type() {
    let addr = format!("sysv-mq:{}", unique_key());
    let _guard = SysvGuard(addr.clone());
    for (msgs, t) in [
        (vec!["a3"], "3"),
        (vec!["b1"], "1"),
        (vec!["c7", "d3"], "7"),
    ] {
        let out = run(ipc().args(["send", &addr, "--type", t]).args(&msgs));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(run(ipc().args(["send", &addr, "plain"])).status.success()); // type 1
    let take = |args: &[&str]| {
        let out = run(ipc()
            .args(["recv", &addr, "--show-type", "--timeout", "5"])
            .args(args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // Queue: a3 b1 c7 d3(7) plain(1).
    assert_eq!(take(&["-n", "1", "--type", "7"]), "7\tc7\n");
    assert_eq!(take(&["-n", "1", "--type", "3", "--except"]), "1\tb1\n");
    assert_eq!(take(&["-n", "2", "--type", "-5"]), "1\tplain\n3\ta3\n");
    assert_eq!(take(&["-n", "1"]), "7\td3\n");
    // Empty now, but still there for the next one, until ipc rm.
    let out = run(ipc().args(["recv", &addr, "-n", "1", "--timeout", "0.2"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(sysv_exists(&addr));
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(!sysv_exists(&addr));
    fails_with(ipc().args(["rm", &addr]), "no System V queue with key");
}

#[test]
fn sysv_queue_by_ftok_path_between_a_waiting_receiver_and_a_sender() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "").unwrap();
    let addr = format!("sysv-mq:{}:7", file.display());
    let _guard = SysvGuard(addr.clone());
    // The receiver starts first and creates the queue; the sender finds it.
    let r = recv(&[&addr, "-n", "2", "--type", "2"]);
    wait_for(|| sysv_exists(&addr), "the receiver to create the queue");
    let out = run(ipc().args(["send", &addr, "--type", "2", "one", "two"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = finish(r);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\n");
}

#[test]
fn sysv_queue_bad_input() {
    let addr = format!("sysv-mq:{}", unique_key());
    let _guard = SysvGuard(addr.clone());
    fails_with(ipc().args(["send", &addr, "x", "--type", "0"]), "1 or more");
    fails_with(
        ipc().args(["send", &addr, "x", "--type", "-2"]),
        "1 or more",
    );
    assert!(!sysv_exists(&addr), "a refused send created the queue");
    fails_with(
        ipc().args(["recv", &addr, "--except"]),
        "--except needs --type",
    );
    fails_with(
        ipc().args(["recv", &addr, "--type", "-1", "--except"]),
        "--except needs --type",
    );
    fails_with(ipc().args(["send", "sysv-mq:0", "x"]), "IPC_PRIVATE");
    fails_with(ipc().args(["send", "sysv-mq:0xnope", "x"]), "hex");
    fails_with(
        ipc().args(["send", "sysv-mq:/no/such:1", "x"]),
        "existing file",
    );
    fails_with(
        ipc().args(["send", "mq:/x", "x", "--type", "2"]),
        "System V queues (sysv-mq:KEY) and mailboxes (mailbox:NAME, pid:PID) only",
    );
    fails_with(
        ipc().args(["recv", "mq:/x", "--show-type"]),
        "System V queues (sysv-mq:KEY) and mailboxes (mailbox:NAME) only",
    );
    let big = "x".repeat(ipckit::sysv::limits().unwrap().max_message_size + 1);
    fails_with(ipc().args(["send", &addr, &big]), "msgmax is");
}

#[test]
fn shm_can_be_removed_but_not_sent_to() {
    let name = format!("/{}", unique("shm"));
    let shm = ipckit::shm::Shm::builder(&name)
        .size(64)
        .keep(true)
        .create()
        .unwrap();
    let addr = format!("shm:{name}");
    fails_with(ipc().args(["send", &addr, "x"]), "not a message channel");
    fails_with(ipc().args(["recv", &addr]), "not a message channel");
    fails_with(ipc().args(["rm", "shm:frames"]), "must start with a slash");
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(ipckit::shm::Shm::builder(&name).open().is_err());
    fails_with(ipc().args(["rm", &addr]), "no POSIX shared memory named");
    drop(shm);

    let key = unique_key();
    let seg = ipckit::shm::SysvShm::builder(key.parse().unwrap())
        .size(64)
        .keep(true)
        .create()
        .unwrap();
    let addr = format!("sysv-shm:{key}");
    fails_with(ipc().args(["recv", &addr]), "not a message channel");
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(seg.status().unwrap().removal_pending);
    drop(seg);
    fails_with(ipc().args(["rm", &addr]), "no System V shared memory");
}

#[test]
fn semaphores_can_be_removed_but_not_sent_to() {
    let name = format!("/{}", unique("sem"));
    let sem = ipckit::sem::NamedSemaphore::builder(&name)
        .keep(true)
        .create()
        .unwrap();
    let addr = format!("sem:{name}");
    fails_with(
        ipc().args(["send", &addr, "x"]),
        "a semaphore, not a message channel",
    );
    fails_with(ipc().args(["rm", "sem:jobs"]), "must start with a slash");
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(ipckit::sem::NamedSemaphore::builder(&name).open().is_err());
    fails_with(ipc().args(["rm", &addr]), "no POSIX semaphore named");
    drop(sem);

    let key = unique_key();
    let set = ipckit::sem::SemaphoreSet::builder(key.parse().unwrap())
        .len(2)
        .keep(true)
        .create()
        .unwrap();
    let addr = format!("sysv-sem:{key}");
    fails_with(
        ipc().args(["recv", &addr]),
        "a semaphore, not a message channel",
    );
    fails_with(ipc().args(["rm", "sysv-sem:0"]), "IPC_PRIVATE");
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(set.get(0).unwrap_err().to_string().contains("was removed"));
    fails_with(ipc().args(["rm", &addr]), "no System V semaphore set");
}

#[test]
fn bench_measures_shared_memory_with_each_kind_of_turn_taking() {
    let (table, v) = bench_json(&[
        "shm-spin",
        "shm-futex",
        "shm-sem",
        "sysv-sem",
        "--sizes",
        "1,65536",
        "--wait",
        "block,adaptive",
        "--duration-ms",
        "20",
    ]);
    for m in ["shared bytes + futex", "shared bytes + System V semaphores"] {
        assert!(table.contains(m), "{m} missing from\n{table}");
    }
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 16);
    for r in results {
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["samples"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Starts `ipc signal wait ARGS…` and returns it with the pid it printed.
fn signal_waiter(args: &[&str]) -> (Child, u32) {
    let mut child = ipc()
        .args(["signal", "wait"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipc signal wait");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(err).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T).expect("the waiter printed its pid");
    let pid = line
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    assert_eq!(pid, child.id(), "{line}");
    (child, pid)
}

#[test]
fn signal_wait_prints_each_delivery_with_sender_and_value() {
    let (waiter, pid) = signal_waiter(&["SIGRTMIN+1", "usr2", "-n", "4", "--timeout", "15"]);
    let pid = pid.to_string();
    for (sig, value) in [
        ("SIGRTMIN+1", Some("7")),
        ("SIGRTMIN+1", Some("-8")),
        ("SIGRTMIN+1", Some("9")),
        ("12", None),
    ] {
        let mut cmd = ipc();
        cmd.args(["signal", "send", &pid, sig]);
        if let Some(v) = value {
            cmd.args(["--value", v]);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = finish(waiter);
    assert!(out.status.success(), "{}", stderr(&out));
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap();
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert!(l.contains(&format!(" uid={uid} ")), "{l}");
    }
    // The kernel delivers lower-numbered pending signals first: SIGUSR2 may
    // overtake the realtime ones, which keep their own order.
    let (usr2, rt): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|l| l.starts_with("SIGUSR2 pid="));
    assert_eq!(usr2.len(), 1, "{lines:?}");
    assert!(usr2[0].ends_with("value=- code=user"), "{}", usr2[0]);
    for (line, v) in rt.iter().zip(["7", "-8", "9"]) {
        assert!(line.starts_with("SIGRTMIN+1 pid="), "{line}");
        assert!(line.ends_with(&format!("value={v} code=queue")), "{line}");
    }
}

#[test]
fn signal_show_reads_dispositions_masks_and_pending() {
    // A shell that ignores SIGUSR1 and traps SIGUSR2 (a handler).
    let mut sh = Command::new("sh")
        .args([
            "-c",
            "trap '' USR1; trap ':' USR2; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // Stopped, it keeps a signal sent to it pending.
    let id = sh.id().to_string();
    assert!(run(Command::new("kill").args(["-STOP", &id]))
        .status
        .success());
    for _ in 0..100 {
        let state = std::fs::read_to_string(format!("/proc/{id}/stat")).unwrap();
        if state
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T')
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(run(ipc().args(["signal", "send", &id, "USR2"]))
        .status
        .success());
    let out = run(ipc().args(["signal", "show", &id]));
    let _ = sh.kill();
    let _ = sh.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = |sig: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(sig))
            .unwrap_or_else(|| panic!("no {sig} in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // (The shell may have been stopped with every signal blocked, as dash
    // does around a fork: the BLOCKED column is not checked here.)
    assert_eq!(row("SIGUSR1")[1], "ignored", "{text}");
    let usr2 = row("SIGUSR2");
    assert_eq!(usr2[1], "caught", "{text}");
    assert_eq!(usr2.last().map(String::as_str), Some("process"), "{text}");

    // A waiter blocks the signals it reads from a signalfd.
    let (waiter, pid) = signal_waiter(&["SIGRTMIN+2", "-n", "1", "--timeout", "15"]);
    let out = run(ipc().args(["signal", "show", &pid.to_string()]));
    let text = stdout(&out);
    assert!(text.contains("SIGRTMIN+2 "), "{text}");
    assert!(!text.contains("SIGWINCH"), "default rows listed:\n{text}");
    let out = run(ipc().args(["signal", "show", &pid.to_string(), "--all"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rt = text
        .lines()
        .find(|l| l.trim_start().starts_with("SIGRTMIN+2 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rt.contains("default") && rt.contains("yes"), "{rt}");
    assert!(
        text.contains("SIGWINCH"),
        "--all lists every signal:\n{text}"
    );
    run(ipc().args(["signal", "send", &pid.to_string(), "SIGRTMIN+2"]));
    assert!(finish(waiter).status.success());

    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    fails_with(
        ipc().args(["signal", "show", &gone.id().to_string()]),
        "no process",
    );
}

#[test]
fn signal_bad_input_and_timeouts() {
    fails_with(
        ipc().args(["signal", "wait", "SIGKILL"]),
        "cannot be caught, blocked or ignored",
    );
    fails_with(ipc().args(["signal", "wait", "STOP"]), "cannot be caught");
    fails_with(
        ipc().args(["signal", "send", "1", "SIGFOO"]),
        "unknown signal",
    );
    fails_with(
        ipc().args(["signal", "send", "1", "99"]),
        "not a signal number",
    );
    fails_with(
        ipc().args(["signal", "send", "1", "SIGRTMIN+99"]),
        "does not exist",
    );
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    fails_with(
        ipc().args(["signal", "send", &gone.id().to_string(), "TERM"]),
        "no process",
    );
    let out = run(ipc().args(["signal", "wait", "USR1", "--timeout", "0.2"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

#[test]
fn bench_signal_measures_a_realtime_signal_with_a_value() {
    let (table, v) = bench_json(&[
        "signal",
        "signal-handler",
        "--sizes",
        "64,4096",
        "--wait",
        "block,spin",
        "--duration-ms",
        "20",
    ]);
    assert!(table.contains("one 32-bit value (realtime signal)"));
    assert!(table.contains("one 32-bit value (realtime signal, to a handler)"));
    let results = v["results"].as_array().unwrap();
    // One size (the 4-byte value), two wait strategies, read from a
    // signalfd and from a handler (which reports what it lost).
    assert_eq!(results.len(), 4, "{results:?}");
    for r in results {
        let handled = r["mechanism"] == "signal-handler";
        assert!(handled || r["mechanism"] == "signal", "{r}");
        assert_eq!(r["throughput"].get("lost").is_some(), handled, "{r}");
        assert_eq!(r["size"], 4);
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["rtt_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Peer processes of a bench whose temporary directory is `tmp` (they
/// inherit its TMPDIR).
fn bench_peers(tmp: &std::path::Path) -> Vec<u32> {
    let marker = format!("TMPDIR={}", tmp.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            env.split(|&b| b == 0).any(|v| v == marker.as_bytes())
                && cmd.windows(12).any(|w| w == b"__bench-peer")
        })
        .collect()
}

/// Starts `ipc bench ARGS…` with its temporary files in `tmp` (so that
/// its peers can be found by it) and its stderr kept for the failure.
fn spawn_bench(args: &[&str], tmp: &std::path::Path) -> Child {
    ipc()
        .arg("bench")
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The ids of private (key 0) System V objects of `kind` ("msg", "sem").
fn private_ids(kind: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"0")).then(|| f.get(1).map(|s| s.to_string()))?
        })
        .collect()
}

/// Benches run one at a time in this test binary: the interrupted-bench
/// test compares the private System V objects before and after.
static BENCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bench_lock() -> std::sync::MutexGuard<'static, ()> {
    BENCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bench interrupted at several moments (SIGINT, SIGTERM, SIGHUP)
/// removes what it made: its temporary directory, private System V queues
/// and semaphore sets, POSIX queues, and its peer processes; killed with
/// SIGKILL, its peers still exit by themselves.
#[test]
fn an_interrupted_bench_leaves_nothing_behind() {
    for (sig, after_ms) in [
        ("INT", 300),
        ("TERM", 700),
        ("HUP", 1200),
        ("INT", 1800),
        ("KILL", 900),
    ] {
        let _one_at_a_time = bench_lock();
        let tmp = tempfile::tempdir().unwrap();
        let before = (private_ids("msg"), private_ids("sem"));
        let b = spawn_bench(
            &[
                "sysv-mq",
                "sysv-sem",
                "mq",
                "fifo",
                "unix",
                "shm-sem",
                "--sizes",
                "64",
                "--duration-ms",
                "600",
            ],
            tmp.path(),
        );
        let pid = b.id();
        std::thread::sleep(Duration::from_millis(after_ms));
        // Interrupt it in the middle of a measurement, with a peer running.
        let mut peers = Vec::new();
        wait_for(
            || {
                peers = bench_peers(tmp.path());
                !peers.is_empty()
            },
            "a peer to be running",
        );
        assert!(run(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()))
        .status
        .success());
        let out = finish(b);
        if sig != "KILL" {
            assert_eq!(
                out.status.code(),
                Some(
                    128 + match sig {
                        "INT" => 2,
                        "TERM" => 15,
                        _ => 1,
                    }
                ),
                "SIG{sig}: {}",
                stderr(&out)
            );
        }
        wait_for(|| bench_peers(tmp.path()).is_empty(), "the peers to exit");
        assert!(
            !peers.is_empty(),
            "SIG{sig} at {after_ms} ms: no peer was running"
        );
        if sig == "KILL" {
            // No handler runs on SIGKILL: only the peers' exit is promised.
            // What it left is removed here (POSIX queues too: once, this
            // test left them, unseen without /dev/mqueue).
            for (kind, ids) in [("msg", &before.0), ("sem", &before.1)] {
                for id in private_ids(kind).difference(ids) {
                    let _ = run(Command::new("ipcrm")
                        .arg(if kind == "msg" { "-q" } else { "-s" })
                        .arg(id));
                }
            }
            let prefix = format!("/ipckit-bench-{pid}-");
            for q in ipckit::mq::list().unwrap_or_default() {
                if q.name.starts_with(&prefix) {
                    let _ = ipckit::mq::unlink(&q.name);
                }
            }
            continue;
        }
        for (kind, ids) in [("msg", &before.0), ("sem", &before.1)] {
            let left: Vec<_> = private_ids(kind).difference(ids).cloned().collect();
            assert!(
                left.is_empty(),
                "SIG{sig} at {after_ms} ms left System V {kind} {left:?}"
            );
        }
        for n in 1..200 {
            for dir in ["a2b", "b2a"] {
                let name = format!("/ipckit-bench-{pid}-{n}-mq-{dir}");
                assert!(
                    ipckit::mq::PosixQueue::builder(&name).open().is_err(),
                    "SIG{sig}: {name} left"
                );
            }
        }
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "SIG{sig} at {after_ms} ms left {left:?}");
    }
}

/// Whether a bench with `pid` left a queue, ring or FIFO at one of the
/// scratch addresses it makes by address (`ipckit-bench-PID-N-listen` and
/// `-peer`, the peer's, which a killed peer cannot remove).
fn left_by_address(pid: u32) -> Vec<String> {
    use ipckit::Address;
    let mut left = Vec::new();
    for m in ipckit::registry::MECHANISMS {
        for n in 1..120 {
            for what in ["listen", "peer"] {
                let a = m.scratch_address(&format!("ipckit-bench-{pid}-{n}-{what}"));
                let there = match &a {
                    Address::Mq(name) => ipckit::mq::PosixQueue::builder(name).open().is_ok(),
                    Address::SysvMq(key) => {
                        ipckit::sysv::MessageQueue::builder(*key).open().is_ok()
                    }
                    Address::Ring(name) => {
                        std::path::Path::new(&format!("/dev/shm/ipckit-ring.{name}")).exists()
                    }
                    Address::Fifo(path) => path.symlink_metadata().is_ok(),
                    _ => false,
                };
                if there {
                    left.push(a.to_string());
                }
            }
        }
    }
    left
}

/// `--by-address`: every mechanism with an address is set up through
/// `ipckit::listen` and `ipckit::connect` alone (the registry's scratch
/// addresses; one-way ones as two channels), measured like the others,
/// and nothing is left behind, whether the bench ends or is interrupted.
#[test]
fn bench_by_address_uses_the_address_alone() {
    let _one_at_a_time = bench_lock();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("b.json");
    let mechs = ["fifo", "unix-dgram", "tcp", "mq", "sysv-mq", "ring"];
    let json_arg = json.to_str().unwrap();
    let b = spawn_bench(
        &[
            &mechs[..],
            &["--by-address", "--sizes", "64,65536", "--duration-ms", "30"],
            &["--json", json_arg],
        ]
        .concat(),
        tmp.path(),
    );
    let pid = b.id();
    let out = finish(b);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2 * mechs.len(), "{v}");
    for r in results {
        if r["size"] == 65536 && ["mq", "sysv-mq"].contains(&r["mechanism"].as_str().unwrap()) {
            // Queues take the system's default message size; a failed
            // point still leaves nothing (checked below).
            let why = r["skipped"].as_str().unwrap();
            assert!(
                why.contains("max_message_size") || why.contains("msgmax"),
                "{r}"
            );
            continue;
        }
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["rtt_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(left_by_address(pid), Vec::<String>::new());
    std::fs::remove_file(&json).unwrap();
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "FIFOs or the bench's directory left"
    );

    // Interrupted while a peer is running: what both sides made by
    // address goes too.
    let b = spawn_bench(
        &[
            "ring",
            "mq",
            "fifo",
            "sysv-mq",
            "--by-address",
            "--sizes",
            "64",
            "--duration-ms",
            "600",
        ],
        tmp.path(),
    );
    let pid = b.id();
    std::thread::sleep(Duration::from_millis(900));
    wait_for(
        || !bench_peers(tmp.path()).is_empty(),
        "a peer to be running",
    );
    assert!(run(Command::new("kill").arg("-INT").arg(pid.to_string()))
        .status
        .success());
    let out = finish(b);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    wait_for(|| bench_peers(tmp.path()).is_empty(), "the peers to exit");
    assert_eq!(left_by_address(pid), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left {left:?}");
}

/// The table fits an 80-column terminal (least important columns left
/// out; --wide shows them), one unit per column, the static columns as a
/// legend once, a recommendation, and a comparison with a saved run.
#[test]
fn bench_report_fits_and_compares() {
    let _one_at_a_time = bench_lock();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("base.json");
    let args = [
        "bench",
        "pipe",
        "shm-spin",
        "--sizes",
        "64,4096",
        "--duration-ms",
        "30",
    ];
    let out = run(ipc()
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("COLUMNS", "80"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let table: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(['┌', '│', '╞', '└']))
        .collect();
    assert!(table.len() >= 6, "{text}");
    for l in &table {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        !text.contains("rtt p99.9 µs") && text.contains("rtt p50 µs"),
        "{text}"
    );
    assert!(text.contains("spin (always)"), "shm-spin's wait: {text}");
    assert_eq!(
        text.matches("kernel: ").count(),
        2,
        "one legend line each: {text}"
    );
    assert!(
        text.contains("lowest latency without burning a core: pipe"),
        "{text}"
    );
    let wide = run(ipc().args(args).arg("--wide").env("COLUMNS", "80"));
    assert!(stdout(&wide).contains("rtt p99.9 µs"), "{}", stdout(&wide));

    let again = run(ipc()
        .args(args)
        .arg("--baseline")
        .arg(&json)
        .env("COLUMNS", "80"));
    let text = stdout(&again);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        text.contains(&format!("Against {}", json.display())),
        "{text}"
    );
    assert_eq!(text.matches("msgs/s ×").count(), 4, "{text}");

    std::fs::write(&json, b"not json").unwrap();
    fails_with(ipc().args(args).arg("--baseline").arg(&json), "--baseline");
}

/// `ipc bench --html` writes one self-contained page (nothing fetched when
/// viewed, no script) with the notes' comparison table and the charts; a
/// real headless Chromium renders it to a screenshot without a single
/// console message. CI installs Chromium (.ci/run); elsewhere, without
/// it, only the page itself is checked.
#[test]
fn bench_html_report_renders_in_chromium() {
    let _one_at_a_time = bench_lock();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let out = run(ipc()
        .args([
            "bench", "pipe", "unix", "shm-spin", "signal", "--sizes", "64,4096",
        ])
        .args(["--duration-ms", "30", "--html"])
        .arg(&page));
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    for want in [
        "各种进程间通信方式优劣比较",
        "kernel implementation",
        "strengths",
        "Round-trip latency percentiles",
        "Throughput against message size",
        "<svg",
        "shm-spin",
        "signal",
    ] {
        assert!(html.contains(want), "{want} missing");
    }
    for never in ["<script", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(never),
            "the page fetches or runs something: {never}"
        );
    }
    let browser = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (.ci/run installs it)"
        );
        eprintln!("no chromium here: the page was checked, not rendered");
        return;
    };
    let shot = dir.path().join("report.png");
    let r = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args([
            "--window-size=1280,2000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
}

/// `--raw` measures each kernel mechanism's round trip again with bare
/// system calls, in the same rounds, and reports the ratio (table and
/// JSON); the queues have no bare twin and say so with a dash.
#[test]
fn bench_raw_twins_give_the_library_cost() {
    let (table, v) = bench_json(&[
        "pipe",
        "unix-seq",
        "udp",
        "mq",
        "--sizes",
        "64",
        "--wait",
        "block,spin",
        "--duration-ms",
        "30",
        "--raw",
    ]);
    assert!(
        table.contains("× raw") && table.contains("raw p50 µs"),
        "{table}"
    );
    for r in v["results"].as_array().unwrap() {
        let mech = r["mechanism"].as_str().unwrap();
        assert!(r.get("skipped").is_none(), "{r}");
        if mech == "mq" {
            assert!(
                r.get("raw_rtt_ns").is_none() && r.get("vs_raw").is_none(),
                "{r}"
            );
            continue;
        }
        assert!(r["raw_rtt_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
        let ratio = r["vs_raw"].as_f64().unwrap();
        let want = r["rtt_ns"]["p50"].as_f64().unwrap() / r["raw_rtt_ns"]["p50"].as_f64().unwrap();
        assert!((ratio - want).abs() < 1e-9 && ratio > 0.0, "{r}");
    }
}

/// `--select` measures each message mechanism again with both processes
/// waiting in a selector (System V queues through the helper thread),
/// round for round, and reports the ratio; this process's waits are
/// counted, so a run that did not go through the selector fails here.
/// The shared-memory entries have no receiver to select on: a dash.
#[test]
fn bench_select_gives_the_cost_of_waiting_on_many() {
    let (table, v) = bench_json(&[
        "pipe",
        "unix-dgram",
        "sysv-mq",
        "ring",
        "shm-futex",
        "--sizes",
        "64",
        "--duration-ms",
        "30",
        "--select",
    ]);
    assert!(
        table.contains("select p50 µs") && table.contains("× direct"),
        "{table}"
    );
    for r in v["results"].as_array().unwrap() {
        assert!(r.get("skipped").is_none(), "{r}");
        if r["mechanism"] == "shm-futex" {
            assert!(r.get("select_rtt_ns").is_none(), "{r}");
            continue;
        }
        assert!(r["select_rtt_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
        let ratio = r["select_vs_direct"].as_f64().unwrap();
        let want =
            r["select_rtt_ns"]["p50"].as_f64().unwrap() / r["rtt_ns"]["p50"].as_f64().unwrap();
        assert!((ratio - want).abs() < 1e-9 && ratio > 0.0, "{r}");
        // Blocking receives find nothing on the first try: they wait.
        assert!(r["select_waits"].as_u64().unwrap() >= 3, "{r}");
    }
}

/// Removes a ring when the test ends, however it ends.
struct RingGuard(String);

impl Drop for RingGuard {
    fn drop(&mut self) {
        let _ = ipckit::ring::unlink(&self.0);
    }
}

fn ring_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/ipckit-ring.{name}")).exists()
}

#[test]
fn ring_many_senders_one_receiver_until_all_are_gone() {
    let name = unique("ring");
    let _guard = RingGuard(name.clone());
    let addr = format!("ring:{name}");
    let rx = recv(&[&addr]);
    wait_for(|| ring_exists(&name), "the receiver to make the ring");
    // Two senders at once, each with its own messages in its own order.
    // Both attach (and wait on their input) before either sends, so that
    // the receiver cannot see every sender gone in between.
    let mut senders: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|_| {
            ipc()
                .arg("send")
                .arg(&addr)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ipc send")
        })
        .collect();
    for s in &senders {
        wait_for(
            || {
                std::fs::read_to_string(format!("/proc/{}/maps", s.id()))
                    .is_ok_and(|m| m.contains(&format!("ipckit-ring.{name}")))
            },
            "a sender to attach",
        );
    }
    for (s, tag) in senders.iter_mut().zip(["a", "b"]) {
        let text: String = (0..50).map(|i| format!("{tag}{i}\n")).collect();
        s.stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("write");
    }
    for s in senders {
        let out = finish(s);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Without -n, the receiver ends once every sender has gone.
    let out = finish(rx);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "a clean end says nothing");
    let got = stdout(&out);
    for tag in ["a", "b"] {
        let mine: Vec<&str> = got.lines().filter(|l| l.starts_with(tag)).collect();
        let want: Vec<String> = (0..50).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(mine, want, "sender {tag}'s messages, in its order");
    }
    // The ring stays, with what was sent while nobody received, until rm.
    assert!(run(ipc().args(["send", &addr, "kept"])).status.success());
    let out = run(ipc().args(["recv", &addr, "-n", "1", "--timeout", "5"]));
    assert_eq!(stdout(&out), "kept\n", "{}", stderr(&out));
    assert!(run(ipc().args(["rm", &addr])).status.success());
    assert!(!ring_exists(&name));
    fails_with(ipc().args(["rm", &addr]), "no ring named");
}

#[test]
fn ring_receiver_says_when_a_sender_died() {
    let name = unique("ringdie");
    let _guard = RingGuard(name.clone());
    let addr = format!("ring:{name}");
    let rx = recv(&[&addr]);
    wait_for(|| ring_exists(&name), "the receiver to make the ring");
    // A sender that sent one line and waits on its stdin: kill it.
    let mut tx = ipc()
        .args(["send", &addr])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn ipc send");
    tx.stdin
        .as_mut()
        .expect("piped")
        .write_all(b"before\n")
        .expect("write");
    wait_for(
        || {
            std::fs::read_to_string(format!("/proc/{}/status", tx.id()))
                .is_ok_and(|s| s.contains("State:\tS"))
        },
        "the sender to wait for input",
    );
    std::thread::sleep(Duration::from_millis(100));
    tx.kill().expect("kill");
    tx.wait().expect("wait");
    let out = finish(rx);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "before\n");
    assert!(
        stderr(&out).contains("died without closing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ring_bad_input() {
    fails_with(ipc().args(["send", "ring:a/b", "x"]), "invalid ring name");
    fails_with(ipc().args(["recv", "ring:.hidden"]), "invalid ring name");
    let name = unique("ringbig");
    let _guard = RingGuard(name.clone());
    let big = "x".repeat(70_000);
    fails_with(
        ipc().args(["send", &format!("ring:{name}"), &big]),
        "larger than ring",
    );
}

#[test]
fn bench_measures_the_ring_with_copies_and_zero_copy() {
    let (table, v) = bench_json(&[
        "ring",
        "ring-mpmc",
        "--sizes",
        "64,65536",
        "--wait",
        "spin,adaptive,block",
        "--duration-ms",
        "20",
    ]);
    assert!(table.contains("shared-memory slot"), "{table}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 12);
    for r in results {
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["samples"].as_u64().unwrap() > 0, "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Zero-copy: loans and in-place receives, up to a 16 MiB message.
    let (_, v) = bench_json(&[
        "ring",
        "--zero-copy",
        "--sizes",
        "64,16777216",
        "--wait",
        "spin",
        "--duration-ms",
        "20",
    ]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r.get("skipped").is_none(), "{r}");
        assert_eq!(r["wait"], "spin, zero-copy", "{r}");
        assert!(r["throughput"]["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn ring_recv_with_n_waits_for_the_next_sender() {
    let name = unique("ringn");
    let _guard = RingGuard(name.clone());
    let addr = format!("ring:{name}");
    let rx = recv(&[&addr, "-n", "2", "--timeout", "10"]);
    wait_for(|| ring_exists(&name), "the receiver to make the ring");
    // One sender comes and goes; the receiver wants two messages, so it
    // waits for the next one rather than ending.
    assert!(run(ipc().args(["send", &addr, "first"])).status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(ipc().args(["send", &addr, "second"])).status.success());
    let out = finish(rx);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "first\nsecond\n");
}

#[test]
fn bench_zero_copy_needs_a_ring() {
    fails_with(
        ipc().args(["bench", "pipe", "--zero-copy", "--duration-ms", "5"]),
        "--zero-copy applies to ring",
    );
}

/// A usage error keeps clap's detail (what is missing, "a similar … exists",
/// the possible values, where to read more), with exit status 2.
#[test]
fn usage_errors_say_what_is_wrong_and_suggest() {
    for (args, want) in [
        (&["sned"][..], "similar subcommands exist: 'sem', 'send'"),
        (&["send"], "<ADDR>"),
        (
            &["recv", "--timout", "1", "unix:@x"],
            "a similar argument exists: '--timeout'",
        ),
        (&["bench", "pip"], "possible values: pipe,"),
    ] {
        let out = run(ipc().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("try '--help'"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `--timeout 0` means "do not wait": nothing there is a timeout at once,
/// something there is taken, a peer already waiting is reached (TCP, a
/// FIFO's reader). Negative timeouts, `-n 0` and negative System V keys
/// are refused with the reason.
#[test]
fn zero_timeouts_and_refused_values() {
    let t0 = Instant::now();
    let out = run(ipc().args([
        "recv",
        &format!("unix:@{}", unique("zero")),
        "--timeout",
        "0",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(2));

    let q = format!("mq:/{}", unique("zero"));
    send(&q, &["waiting"]);
    let out = run(ipc().args(["recv", &q, "--timeout", "0", "-n", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "waiting\n");
    assert!(run(ipc().args(["rm", &q])).status.success());

    let dir = tempfile::tempdir().unwrap();
    for addr in [
        format!("tcp:127.0.0.1:{}", free_port()),
        format!("fifo:{}", dir.path().join("f").display()),
    ] {
        let r = recv(&[&addr, "-n", "1", "--timeout", "20"]);
        // The receiver is listening (or its FIFO waits for a writer) when
        // a send with no waiting at all gets through.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run(ipc().args(["send", &addr, "--timeout", "0", "now"]));
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < end, "{addr}: {}", stderr(&out));
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = finish(r);
        assert_eq!(stdout(&out), "now\n", "{addr}: {}", stderr(&out));
    }

    fails_with(
        ipc().args(["recv", "unix:@x", "--timeout", "-1"]),
        "-1 is negative",
    );
    fails_with(
        ipc().args(["recv", "unix:@x", "-n", "0"]),
        "0 would take nothing",
    );
    fails_with(
        ipc().args(["signal", "wait", "USR1", "-n", "0"]),
        "0 would take nothing",
    );
    fails_with(ipc().args(["send", "sysv-mq:-5", "x"]), "0xfffffffb");
}

/// `ipc rm` with several objects tries each: every failure on its own
/// line naming the object, the others removed, exit status 2. System V
/// objects by id, the only name a private one has.
#[test]
fn rm_tries_each_object_and_reports_each_failure() {
    let shm_name = format!("/{}", unique("rmmany"));
    let shm = ipckit::shm::Shm::builder(&shm_name)
        .size(64)
        .keep(true)
        .create()
        .unwrap();
    let q = ipckit::sysv::MessageQueue::private()
        .keep(true)
        .create()
        .unwrap();
    let set = ipckit::sem::SemaphoreSet::private()
        .len(1)
        .keep(true)
        .create()
        .unwrap();
    let missing_q = format!("mq:/{}", unique("rmmissing"));
    let out = run(ipc().args([
        "rm",
        &format!("shm:{shm_name}"),
        &missing_q,
        &format!("sysv-mq:id={}", q.id()),
        "sysv-shm:id=2147483000",
        &format!("sysv-sem:id={}", set.id()),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("ipc rm: {missing_q}: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with("ipc rm: sysv-shm:id=2147483000: no System V shared memory"),
        "{err}"
    );
    assert!(ipckit::shm::Shm::builder(&shm_name).open().is_err());
    assert!(ipckit::sysv::MessageQueue::open_id(q.id()).is_err());
    assert!(ipckit::sem::SemaphoreSet::open_id(set.id()).is_err());
    drop((shm, q, set));
    fails_with(ipc().args(["rm", "sysv-sem:0"]), "sysv-sem:id=ID");
    fails_with(
        ipc().args(["rm", "sysv-mq:id=-3"]),
        "not a System V identifier",
    );
}

#[test]
fn prop_daemon_set_get_ls_watch_persist() {
    let store = format!("cli-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy");
    std::fs::write(&policy, "open.* *\n").unwrap();
    let start = || {
        let mut d = ipc()
            .args(["propd", "--name", &store, "--persist"])
            .arg(dir.path())
            .arg("--policy")
            .arg(&policy)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(d.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("serving property store"), "{line}");
        d
    };
    let prop = |args: &[&str]| run(ipc().args(["prop", "--store", &store]).args(args));
    let mut d = start();
    let watcher = ipc()
        .args([
            "prop",
            "--store",
            &store,
            "watch",
            "net",
            "-n",
            "2",
            "--timeout",
            "15",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for (n, v) in [
        ("net.wifi.state", "up"),
        ("other.x", "1"),
        ("net.eth", "-down-"),
        ("persist.lang", "fr"),
    ] {
        let o = prop(&["set", n, v]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = finish(watcher);
    assert_eq!(
        stdout(&o),
        "net.wifi.state=up\nnet.eth=-down-\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&prop(&["get", "net.eth"])), "-down-\n");
    assert_eq!(
        stdout(&prop(&["ls", "net"])),
        "net.eth=-down-\nnet.wifi.state=up\n"
    );
    let o = prop(&["get", "net.none"]);
    assert!(stderr(&o).contains("net.none is not set"), "{}", stderr(&o));
    let o = prop(&["set", "ro.x", "1"]);
    assert!(o.status.success());
    let o = prop(&["set", "ro.x", "2"]);
    assert!(stderr(&o).contains("read-only once set"), "{}", stderr(&o));
    fails_with(
        ipc().args(["prop", "--store", &store, "set", "a..b", "x"]),
        "not a valid property name",
    );
    // Stopped with SIGTERM and started again: persist.* is back, the rest
    // is gone, and the area was removed in between.
    run(ipc().args(["signal", "send", &d.id().to_string(), "TERM"]));
    assert!(d.wait().unwrap().success());
    assert!(!std::path::Path::new(&format!("/dev/shm/ipckit-prop.{store}")).exists());
    let mut d = start();
    assert_eq!(stdout(&prop(&["get", "persist.lang"])), "fr\n");
    assert!(!prop(&["get", "net.eth"]).status.success());
    fails_with(
        ipc().args(["propd", "--name", &store]),
        "another daemon already serves",
    );
    run(ipc().args(["signal", "send", &d.id().to_string(), "TERM"]));
    assert!(d.wait().unwrap().success());
    fails_with(
        ipc().args(["prop", "--store", &store, "ls"]),
        &format!("ipc propd --name {store}"),
    );
}

#[test]
fn bench_prop_measures_reads_and_wakes() {
    let (table, v) = bench_json(&["prop", "--duration-ms", "200"]);
    assert!(table.contains("Property store"), "{table}");
    assert!(table.contains("set → watcher awake"), "{table}");
    let p = &v["prop"];
    assert!(p.get("skipped").is_none_or(|s| s.is_null()), "{p}");
    assert!(p["get_ns"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["pread_ns"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["wakes"].as_u64().unwrap() > 0, "{p}");
    assert!(p["wake_ns"]["p50"].as_u64().unwrap() > 0, "{p}");
    // Only the property store was asked for.
    assert!(v["results"].as_array().unwrap().is_empty(), "{v}");
    assert!(v.get("binder").is_none(), "{v}");
}
