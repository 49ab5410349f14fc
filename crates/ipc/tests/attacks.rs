//! `ipc` attacked by another user of the same machine: paths swapped in a
//! shared directory, files planted where the CLI cleans up, sockets that
//! belong to someone else, a hostile umask. Each test is named after the
//! attack it stops. As root, the attacker runs as `nobody`.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::*;

/// A sticky, world-writable directory, like `/tmp`, for this test alone.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

/// `sh -c script` as another user (`nobody`) when the tests run as root,
/// else as this user.
fn as_other_user(script: &str) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Kills the attacker when the test ends, however it ends.
struct Attacker(Child);

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another user flips PATH between a FIFO and a symlink to a root-owned
/// file while `ipc send fifo:PATH` runs again and again: the file is never
/// written (the path is opened once, without following links, and checked
/// on the descriptor).
#[test]
fn fifo_swap_race_never_writes_through_a_symlink() {
    let dir = shared_dir();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, PermissionsExt::from_mode(0o644)).unwrap();
    let p = dir.path().join("p");
    let d = dir.path().display();
    let mut attacker = Attacker(
        as_other_user(&format!(
            "cd {d} && while [ ! -e stop ]; do \
               mkfifo -m 666 f.new 2>/dev/null; mv -f f.new p; \
               ln -sfn {d}/victim l.new; mv -f l.new p; \
             done"
        ))
        .spawn()
        .unwrap(),
    );
    wait_for(|| p.exists() || p.is_symlink(), "the attacker to start");
    let addr = format!("fifo:{}", p.display());
    for _ in 0..15 {
        let out = run(ipc().args(["send", &addr, "--timeout", "0.2", "OVERWRITTEN"]));
        assert!(
            !out.status.success(),
            "a send without a reader succeeded: {}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"precious",
            "ipc send wrote through the symlink"
        );
    }
    // Let it stop by itself: killed, the shell would leave an `ln` or
    // `mv` running that plants a file as the directory is removed.
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    wait_for(
        || attacker.0.try_wait().is_ok_and(|s| s.is_some()),
        "the attacker to stop",
    );
}

/// While `ipc recv` runs, someone replaces its FIFO or socket file with a
/// regular file; on SIGINT (and on a normal exit) the CLI removes only
/// what it created, so the planted file stays.
#[test]
fn cleanup_deletes_only_what_it_created() {
    for how in ["signal", "exit"] {
        let dir = shared_dir();
        for kind in ["fifo", "unix", "unix-dgram", "unix-seq"] {
            let path = dir.path().join(kind);
            let addr = format!("{kind}:{}", path.display());
            let timeout = if how == "exit" { "1" } else { "20" };
            let r = recv(&[&addr, "--timeout", timeout]);
            wait_for(|| path.exists(), "the receiver's file");
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"someone else's").unwrap();
            if how == "signal" {
                let k = run(Command::new("kill").arg("-INT").arg(r.id().to_string()));
                assert!(k.status.success());
            }
            let out = finish(r);
            assert!(!out.status.success(), "{how} {addr}: {}", stderr(&out));
            assert_eq!(
                std::fs::read(&path).ok().as_deref(),
                Some(&b"someone else's"[..]),
                "{how} on {addr} removed a file it did not create"
            );
        }
    }
}

/// A socket file of user `nobody`, bound but with nothing listening (so it
/// looks stale), is not removed and replaced by root's `ipc recv`; the
/// error says whose it is.
#[test]
fn another_users_socket_is_not_taken_over() {
    if !is_root() {
        eprintln!("needs root to make a file of another user: not run");
        return;
    }
    let dir = shared_dir();
    let path = dir.path().join("s");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    fails_with(
        ipc().args([
            "recv",
            &format!("unix:{}", path.display()),
            "--timeout",
            "1",
        ]),
        "another user (uid 65534",
    );
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(
        m.file_type().is_socket() && m.uid() == 65534,
        "nobody's socket was replaced"
    );
}

/// Under `umask 000`, every socket file the CLI binds is 0600 (and never
/// more open: the mode is set on the socket before bind).
#[test]
fn socket_files_are_0600_under_umask_000() {
    let dir = shared_dir();
    for kind in ["unix", "unix-dgram", "unix-seq"] {
        let path = dir.path().join(kind);
        let r = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "umask 000; exec {} recv {kind}:{} --timeout 20",
                    env!("CARGO_BIN_EXE_ipc"),
                    path.display()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = Attacker(r);
        wait_for(|| path.exists(), "the socket file");
        let mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{kind} socket file has mode {mode:o}");
        drop(r);
    }
}

/// `ipc rm fifo:LINK` on a symlink to a FIFO removes nothing and says so
/// (it used to remove the link, leave the FIFO and exit 0).
#[test]
fn rm_fifo_refuses_a_symlink() {
    let dir = shared_dir();
    let fifo = dir.path().join("f");
    let link = dir.path().join("l");
    assert!(run(Command::new("mkfifo").arg(&fifo)).status.success());
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    fails_with(
        ipc().args(["rm", &format!("fifo:{}", link.display())]),
        "symbolic link",
    );
    assert!(link.is_symlink() && is_fifo(&fifo), "something was removed");
}

/// A dangling symlink at a `fifo:` path is named as such, not reported as
/// "kept appearing and disappearing".
#[test]
fn dangling_symlink_at_a_fifo_path_is_named() {
    let dir = shared_dir();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    let addr = format!("fifo:{}", link.display());
    fails_with(
        ipc().args(["send", &addr, "x", "--timeout", "1"]),
        "symbolic link",
    );
    fails_with(
        ipc().args(["recv", &addr, "--timeout", "1"]),
        "symbolic link",
    );
    assert!(link.is_symlink() && !dir.path().join("nowhere").exists());
}

fn is_fifo(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

/// `ipc send --timeout 2` to a receiver that stopped reading (SIGSTOP) in
/// the middle of a large message: it exits 1 within its timeout, saying
/// the rest was abandoned; it used to hang forever in the stream's drop.
#[test]
fn send_timeout_bounds_a_half_written_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for addr in [
        format!("unix:{}", dir.path().join("s").display()),
        format!("fifo:{}", dir.path().join("f").display()),
        format!("tcp:127.0.0.1:{port}"),
    ] {
        let r = recv(&[&addr, "-n", "2", "--timeout", "30"]);
        let stopped = Stopped(r.id());
        // A small message gets through first: the receiver is there.
        send(&addr, &["hello"]);
        let r = Attacker(r);
        let mut s = ipc()
            .args(["send", &addr, "--timeout", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The sender connects (or opens the FIFO) before it reads its
        // input: stop the receiver once they are connected, then feed a
        // message far larger than what the kernel buffers.
        std::thread::sleep(std::time::Duration::from_millis(300));
        stopped.stop();
        let mut input = s.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let line = vec![b'x'; 8 << 20];
            let _ = input.write_all(&line).and_then(|()| input.write_all(b"\n"));
        });
        let t0 = std::time::Instant::now();
        let out = finish(s);
        let took = t0.elapsed();
        stopped.resume();
        drop(r);
        let _ = feeder.join();
        assert_eq!(out.status.code(), Some(1), "{addr}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("abandoned"),
            "{addr}: {}",
            stderr(&out)
        );
        assert!(
            took < std::time::Duration::from_secs(6),
            "{addr}: took {took:?}"
        );
    }
}

/// A process stopped with SIGSTOP, resumed (SIGCONT) when dropped.
struct Stopped(u32);

impl Stopped {
    fn stop(&self) {
        assert!(
            run(Command::new("kill").args(["-STOP", &self.0.to_string()]))
                .status
                .success()
        );
    }

    fn resume(&self) {
        let _ = run(Command::new("kill").args(["-CONT", &self.0.to_string()]));
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume();
    }
}

/// `head -c 300000000 /dev/zero | ipc send unix:…`: one line far over the
/// 16 MiB message limit. ipc stops reading at the limit (it used to read
/// 277 MB first) and says so.
#[test]
fn stdin_stops_at_the_message_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut s = ipc()
        .args([
            "send",
            &format!("unix:{}", path.display()),
            "--timeout",
            "10",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = s.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![0u8; 1 << 20];
        let mut fed = 0usize;
        while fed < 300_000_000 {
            match input.write(&chunk) {
                Ok(n) => fed += n,
                Err(_) => break,
            }
        }
        fed
    });
    let out = finish(s);
    let fed = feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("longer than 16777216"),
        "{}",
        stderr(&out)
    );
    assert!(
        fed < 20 << 20,
        "ipc read {fed} bytes of a line it could never send"
    );
}

/// A realtime signal sent without a value to a process whose queue of
/// pending signals is full is an error, not a silent loss: `ipc signal
/// send` uses sigqueue (value 0) for realtime signals. With kill(2), three
/// sends returned 0 and one signal arrived.
#[test]
fn realtime_signal_without_a_value_reports_a_full_queue() {
    use std::os::unix::process::CommandExt;
    let sig = ipckit::signal::Signal::realtime(1).unwrap();
    let n = sig.number();
    let mut cmd = Command::new("sleep");
    cmd.arg("20").stdin(Stdio::null());
    // SAFETY: between fork and exec the closure only calls async-signal-
    // safe functions (sigemptyset, sigaddset, sigprocmask) on local data.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, n);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let target = Attacker(cmd.spawn().unwrap());
    let pid = target.0.id().to_string();
    let status = || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    wait_for(|| status().contains("Name:\tsleep"), "the target to exec");
    // The limit counts every signal queued to this user: allow one more
    // than are queued now ("SigQ: queued/limit").
    let queued: u64 = status()
        .lines()
        .find_map(|l| l.strip_prefix("SigQ:\t"))
        .and_then(|q| q.split('/').next()?.parse().ok())
        .unwrap();
    let limit = libc::rlimit {
        rlim_cur: queued + 1,
        rlim_max: queued + 1,
    };
    // SAFETY: `limit` is a valid rlimit; a null old-limit pointer is allowed.
    let r = unsafe {
        libc::prlimit(
            target.0.id() as libc::pid_t,
            libc::RLIMIT_SIGPENDING,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let outs: Vec<_> = (0..3)
        .map(|_| run(ipc().args(["signal", "send", &pid, "SIGRTMIN+1"])))
        .collect();
    assert!(outs[0].status.success(), "{}", stderr(&outs[0]));
    for o in &outs[1..] {
        assert_eq!(
            o.status.code(),
            Some(2),
            "a lost signal was reported as sent"
        );
        assert!(stderr(o).contains("full"), "{}", stderr(o));
    }
    let status = status();
    let shdpnd = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:\t"))
        .unwrap();
    assert_ne!(shdpnd.trim_start_matches('0'), "", "nothing pending");
}

/// Malformed realtime offsets are refused, not read as other signals
/// (`RTMAX--5` used to become signal 69, shown as SIGRTMIN+35).
#[test]
fn malformed_realtime_offsets_are_refused() {
    // A pid no process has: were a string wrongly accepted, nothing would
    // be signalled (init, for one, takes some realtime signals as orders).
    for bad in ["RTMAX--5", "RTMIN++1", "RTMAX-+1", "SIGRTMIN+-2"] {
        fails_with(
            ipc().args(["signal", "send", "2147483647", bad]),
            "unknown signal",
        );
    }
}

/// A line over the limit with `--lines` is called a line with no newline,
/// in ipc's words; it used to suggest checking ipckit's framing.
#[test]
fn over_long_line_is_named_as_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let addr = format!("unix:{}", path.display());
    let r = recv(&[&addr, "--lines", "--timeout", "20"]);
    wait_for(|| path.exists(), "the receiver");
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..17 {
            if c.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let out = finish(r);
    let _ = writer.join();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no newline") && err.contains("--lines") && !err.contains("framing"),
        "{err}"
    );
}

/// With `ulimit -n 5`, the error says which limit and how to raise it
/// (it used to be a bare "Too many open files").
#[test]
fn too_many_open_files_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["unix", "fifo"] {
        let path = dir.path().join(kind);
        let out = run(Command::new("sh").args([
            "-c",
            &format!(
                "ulimit -n 5; exec {} recv {kind}:{} --timeout 1",
                env!("CARGO_BIN_EXE_ipc"),
                path.display()
            ),
        ]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("ulimit -n") && err.contains(&path.display().to_string()),
            "{kind}: {err}"
        );
    }
}

/// A FIFO message that cannot be written atomically (over PIPE_BUF with
/// its header) is sent with a warning that says what can go wrong; one
/// that fits is not. Several such writers used to corrupt the stream
/// silently ("incoming message of 1886417008 bytes").
#[test]
fn fifo_message_over_pipe_buf_warns() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("fifo:{}", dir.path().join("f").display());
    for (len, warns) in [(4092, false), (4093, true)] {
        let r = recv(&[&addr, "-n", "1", "--timeout", "20"]);
        let msg = "m".repeat(len);
        let end = std::time::Instant::now() + T;
        let out = loop {
            let out = run(ipc().args(["send", &addr, &msg, "--timeout", "5"]));
            if out.status.success() || std::time::Instant::now() > end {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("over PIPE_BUF (4096)"),
            warns,
            "{len} bytes: {}",
            stderr(&out)
        );
        assert!(finish(r).status.success());
    }
    let help = run(ipc().args(["send", "--help"]));
    assert!(stdout(&help).contains("PIPE_BUF"), "{}", stdout(&help));
}
