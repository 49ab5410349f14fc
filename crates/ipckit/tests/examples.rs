//! Runs every example as a user would (`cargo run --example NAME`), each
//! in its own processes, and checks what it prints: examples that rot
//! fail here.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples`, next to this test's `deps` directory.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// Runs an example (bounded: 60 s) and returns its standard output.
fn run(name: &str) -> String {
    let path = examples_dir().join(name);
    assert!(
        path.exists(),
        "{} was not built: `cargo test` builds the examples unless a --test \
         filter is given (then run `cargo build -p ipckit --examples`, with \
         the same features, first)",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{name} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn typed_service_runs_over_three_mechanisms() {
    let out = run("typed_service");
    for scheme in ["unix:", "mq:", "ring:"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(scheme))
            .unwrap_or_else(|| panic!("no {scheme} line in\n{out}"));
        assert!(
            line.contains("Sum(42)") && line.contains("OVER ANY MECHANISM"),
            "{line}"
        );
    }
}

#[test]
fn many_clients_each_get_their_answers() {
    let out = run("many_clients");
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("200 calls answered"))
            .count(),
        4,
        "{out}"
    );
}

#[test]
fn select_many_takes_a_message_from_each() {
    let out = run("select_many");
    // (In the order they came: usually mq, unix-dgram, ring, 200 ms apart;
    // a loaded machine may start a sender late, so the order is not checked.)
    let mut from: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    from.sort_unstable();
    assert_eq!(from, ["mq", "ring", "unix-dgram"], "{out}");
}

#[test]
fn hand_child_a_ring_gets_the_answer() {
    let out = run("hand_child_a_ring");
    assert!(
        out.contains("the child answered: HELLO FROM THE PARENT"),
        "{out}"
    );
}

#[test]
fn shared_counter_survives_a_dead_owner() {
    let out = run("shared_counter");
    assert!(out.contains("the counter is 30000"), "{out}");
}

#[cfg(feature = "tokio")]
#[test]
fn async_service_overlaps_its_handlers_and_stops() {
    let out = run("async_service");
    for scheme in ["unix:", "sysv-mq:"] {
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(scheme)).collect();
        assert!(
            lines.len() == 2
                && lines[0].contains("100 calls answered")
                && lines[1].contains("server stopped: exit status: 0"),
            "{out}"
        );
        // The handlers wait concurrently: many were running at once.
        let most: usize = lines[0]
            .rsplit("up to ")
            .next()
            .and_then(|t| t.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        assert!(most > 10, "{}", lines[0]);
    }
}

#[test]
fn raw_ping_gets_its_replies() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        // Without CAP_NET_RAW the example ends with the error that says so
        // (tests/raw.rs checks those words); nothing to ping with.
        eprintln!("not root: raw_ping not run");
        return;
    }
    let out = run("raw_ping");
    for seq in 1..=3 {
        assert!(
            out.lines()
                .any(|l| l.contains("from 127.0.0.1")
                    && l.contains(&format!("seq {seq}, checksum ok"))),
            "no good reply {seq} in\n{out}"
        );
    }
}

#[test]
fn signal_shutdown_reloads_then_stops_cleanly() {
    let out = run("signal_shutdown");
    for want in [
        "server: reloaded the configuration (generation 2)",
        "server: reloaded the configuration (generation 3)",
        "server: SIGTERM from pid",
        "server: clean shutdown:",
        "configuration generation 3",
        "the server exited: exit status: 0",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}
