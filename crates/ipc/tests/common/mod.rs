//! Helpers shared by the `ipc` binary's test files.

#![allow(dead_code)] // each test file uses its own subset

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(20);

pub fn ipc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ipc"));
    c.stdin(Stdio::null());
    c
}

pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ipc-cli-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts `ipc recv ARGS…` with captured output.
pub fn recv(args: &[&str]) -> Child {
    ipc()
        .arg("recv")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipc recv")
}

/// Waits for a child at most `T`; one that hangs gets SIGTERM (so that
/// `ipc` removes what it made), then SIGKILL two seconds later.
pub fn finish(mut child: Child) -> Output {
    // Read the pipes meanwhile: a child writing more than a pipe holds
    // (64 KiB) would otherwise wait for us while we wait for it.
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let end = Instant::now() + T;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > end {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(2);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(10));
            }
            child.kill().ok();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!("timed out; stderr: {}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Output {
        status: child.wait().expect("wait"),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

pub fn run(cmd: &mut Command) -> Output {
    finish(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    )
}

/// `ipc send`, retried while the receiver is not there yet.
pub fn send(addr: &str, msgs: &[&str]) {
    let end = Instant::now() + T;
    loop {
        let out = run(ipc()
            .arg("send")
            .arg(addr)
            .args(msgs)
            .args(["--timeout", "5"]));
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < end,
            "send never got through: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs `cmd`, which must fail with status 2 and `text` in its error: one
/// line (`ipc: …`), or, for a usage error, clap's message (`error: …`, a
/// tip or usage, then where to read more).
pub fn fails_with(cmd: &mut Command, text: &str) {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(text), "expected {text:?} in {err:?}");
    if err.starts_with("error: ") {
        assert!(
            err.trim_end()
                .ends_with("For more information, try '--help'."),
            "a usage error as clap words it: {err:?}"
        );
    } else {
        assert!(err.starts_with("ipc"), "{err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    }
}
