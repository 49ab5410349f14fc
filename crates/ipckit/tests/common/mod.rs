//! Helpers shared by the multi-process test binaries.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

/// Every wait in the tests is bounded by this.
pub const T: Duration = Duration::from_secs(10);

/// A peer process, killed on drop if still running.
pub struct Peer {
    pub child: Child,
    pub _dir: Option<tempfile::TempDir>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Waits (bounded) for the peer to exit and returns whether it succeeded.
    pub fn wait(&mut self) -> Result<bool, Failed> {
        Ok(wait_bounded(&mut self.child, T, "the peer")?.success())
    }
}

/// Waits at most `limit` for `child` to end; past it, kills and reaps it
/// and fails naming `what`.
pub fn wait_bounded(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> Result<std::process::ExitStatus, Failed> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not end within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ipckit-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// A command running this test binary as another user: `nobody` when we
/// are root (root bypasses permission bits), else ourselves. The copy of
/// the binary lives in `dir`, which must outlive the command.
pub fn other_user_cmd(dir: &tempfile::TempDir) -> io::Result<Command> {
    use std::os::unix::fs::PermissionsExt;
    if my_uid() != 0 {
        return Ok(Command::new(std::env::current_exe()?));
    }
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755))?;
    let exe = dir.path().join("peer");
    if !exe.exists() {
        install_exe(&std::env::current_exe()?, &exe)?;
    }
    let mut c = Command::new(exe);
    c.uid(65534).gid(65534);
    Ok(c)
}

/// Copies the executable `from` to `to`, mode 0755, in a child process.
///
/// Not with `std::fs::copy`: while this process holds the copy open for
/// writing, another test thread may fork a peer, whose child holds that
/// descriptor until its `exec` closes it; running the copy in that window
/// fails with ETXTBSY ("Text file busy"). A writer that lives in a process
/// of its own, gone when it exits, cannot be inherited by anybody.
pub fn install_exe(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    let st = Command::new("install")
        .args(["-m", "0755"])
        .arg(from)
        .arg(to)
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!("install {from:?} {to:?}: {st}")));
    }
    Ok(())
}

/// Runs `cmd` (a peer expected to be refused) and checks it printed
/// "permission denied".
pub fn expect_denied(cmd: &mut Command) -> Result<(), Failed> {
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.success() && text.contains("permission denied"),
        || {
            format!(
                "{:?}: {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        },
    )
}

/// A key no other test (or run) uses: a marker bit, our pid and a counter.
pub fn unique_key() -> ipckit::sysv::Key {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) & 0xff;
    ipckit::sysv::Key::new((0x4000_0000 | (std::process::id() & 0x3f_ffff) << 8 | n) as i32)
}

/// This test binary, to run as a peer: the environment variable `var`
/// names its role and argument (`role:arg`); standard input is null.
pub fn peer_command(var: &str, role: &str, arg: &str) -> io::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.env(var, format!("{role}:{arg}"))
        .stdin(std::process::Stdio::null());
    Ok(c)
}

/// A peer role: what a re-executed test binary does with its argument.
pub type Role = fn(&str) -> io::Result<()>;

/// If this process was started as a peer (one of the environment variables
/// names a role), plays it and exits: status 0, or 1 with the error on
/// stderr. Otherwise returns, and arms a watchdog so a hung test fails
/// the run after `limit` instead of hanging CI.
pub fn play_peer_or_arm_watchdog(roles: &[(&str, Role)], suite: &'static str, limit: Duration) {
    if let Ok(path) = std::env::var(BROKER_VAR) {
        play_broker(&path);
    }
    for (var, role) in roles {
        if let Ok(spec) = std::env::var(var) {
            if let Err(e) = role(&spec) {
                eprintln!("peer {spec}: {e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
    }
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("{suite}: watchdog fired after {limit:?}");
        std::process::exit(101);
    });
}

/// A plain test case.
pub type Case = fn() -> Result<(), Failed>;

/// Runs plain test cases under libtest-mimic, then checks that they left
/// no IPC object behind, and exits.
pub fn run_cases(cases: Vec<(&'static str, Case)>) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let trials = cases
        .into_iter()
        .map(|(name, f)| libtest_mimic::Trial::test(name, f))
        .collect();
    run_trials(&args, trials)
}

/// This test binary, started with `IPCKIT_TEST_BROKER=PATH`, is a
/// mailbox broker at `PATH` (see [`start_broker`]).
const BROKER_VAR: &str = "IPCKIT_TEST_BROKER";

/// The broker of this test run, if [`start_broker`] started one.
static BROKER: std::sync::Mutex<Option<TestBroker>> = std::sync::Mutex::new(None);

/// A broker process; its standard input is a pipe from this process, so
/// it ends when this process does, however that happens.
struct TestBroker {
    child: Child,
    dir: tempfile::TempDir,
}

/// Runs a broker at `path` until standard input closes, then exits.
fn play_broker(path: &str) -> ! {
    let broker = match ipckit::mailbox::Broker::builder().socket(path).spawn() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("test broker at {path}: {e}");
            std::process::exit(1);
        }
    };
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    drop(broker);
    std::process::exit(0);
}

/// Starts a mailbox broker process for this test run and points
/// `IPCKIT_BROKER` at it, for this process and every peer it starts, so
/// that `mailbox:` addresses (the registry's entry that needs a broker)
/// work like any other; [`run_trials`] stops it after checking that no
/// test left a mailbox of its own there. Call it before any test runs.
pub fn start_broker() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broker.sock");
    let child = Command::new(std::env::current_exe()?)
        .env(BROKER_VAR, &path)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let end = Instant::now() + T;
    while ipckit::mailbox::Client::connect_to(&path).is_err() {
        if Instant::now() > end {
            return Err("the test broker did not start".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Before any test thread reads the environment.
    std::env::set_var("IPCKIT_BROKER", &path);
    *BROKER.lock().unwrap() = Some(TestBroker { child, dir });
    Ok(())
}

/// The mailboxes this run left at its broker, then stops the broker.
fn stop_broker() -> Vec<String> {
    let Some(mut b) = BROKER.lock().unwrap().take() else {
        return Vec::new();
    };
    let prefix = format!("ipckit-test-{}-", std::process::id());
    let mut left: Vec<String> =
        match ipckit::mailbox::Client::connect_to(b.dir.path().join("broker.sock")) {
            Ok(mut c) => match c.stat(None) {
                Ok(all) => all
                    .into_iter()
                    .filter(|m| m.name.contains(&prefix))
                    .map(|m| format!("mailbox {}", m.name))
                    .collect(),
                Err(e) => vec![format!("the test broker: {e}")],
            },
            Err(e) => vec![format!("the test broker: {e}")],
        };
    drop(b.child.stdin.take());
    let end = Instant::now() + T;
    loop {
        match b.child.try_wait() {
            Ok(Some(st)) if st.success() => break,
            Ok(Some(st)) => {
                left.push(format!("the test broker exited with {st}"));
                break;
            }
            _ if Instant::now() > end => {
                let _ = b.child.kill();
                let _ = b.child.wait();
                left.push("the test broker did not stop".into());
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    left
}

/// Runs `trials`, then checks that they left no IPC object behind, and exits.
pub fn run_trials(args: &libtest_mimic::Arguments, trials: Vec<libtest_mimic::Trial>) -> ! {
    let conclusion = libtest_mimic::run(args, trials);
    let mut left = stop_broker();
    left.extend(leftovers());
    if !left.is_empty() {
        eprintln!("left behind by this run: {left:?}");
        std::process::exit(101);
    }
    conclusion.exit()
}

/// System V objects with a key from [`unique_key`] and POSIX objects named
/// by [`unique`] that this process made and that still exist.
pub fn leftovers() -> Vec<String> {
    let me = std::process::id() & 0x3f_ffff;
    let mut left = Vec::new();
    for kind in ["msg", "sem", "shm"] {
        let table = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let key: i64 = line
                .split_whitespace()
                .next()
                .and_then(|k| k.parse().ok())
                .unwrap_or(0);
            let key = key as u32;
            if key & 0x4000_0000 != 0 && (key >> 8) & 0x3f_ffff == me {
                left.push(format!("System V {kind} {key:#x}"));
            }
        }
    }
    let prefix = format!("ipckit-test-{}-", std::process::id());
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(&prefix) {
            left.push(format!("/dev/shm/{name}"));
        }
    }
    // Through ipckit's lister: /dev/mqueue is not mounted everywhere.
    for q in ipckit::mq::list().unwrap_or_default() {
        if q.name.contains(&prefix) {
            left.push(format!("POSIX queue {}", q.name));
        }
    }
    left
}

/// Plays the role `spec` (`role:arg`) names, one of `roles`.
pub fn by_role(spec: &str, roles: &[(&str, Role)]) -> io::Result<()> {
    let (role, arg) = spec
        .split_once(':')
        .ok_or_else(|| io::Error::other(format!("{spec:?} is not role:arg")))?;
    match roles.iter().find(|(name, _)| *name == role) {
        Some((_, play)) => play(arg),
        None => Err(io::Error::other(format!("unknown role {role}"))),
    }
}

/// Removes the queue, ring or FIFO `addr` names, made by a peer that was
/// killed and so could not (sockets go with their process).
pub fn remove_left_object(addr: &ipckit::Address) {
    use ipckit::Address;
    match addr {
        Address::Mq(name) => {
            let _ = ipckit::mq::unlink(name);
        }
        Address::Ring(name) => {
            let _ = ipckit::ring::unlink(name);
        }
        Address::SysvMq(key) => {
            let _ = ipckit::sysv::remove_queue(*key);
        }
        Address::Fifo(path) => {
            let _ = std::fs::remove_file(path);
        }
        Address::Mailbox(name) => {
            let _ = ipckit::mailbox::Client::connect().and_then(|mut c| c.delete(name));
        }
        _ => {}
    }
}

/// Whether the queue, ring, FIFO, shared memory, semaphore or mailbox
/// `addr` names still exists
/// (`false` for anything else: sockets go with their process).
pub fn object_exists(addr: &ipckit::Address) -> bool {
    use ipckit::Address;
    match addr {
        Address::Mq(name) => ipckit::mq::PosixQueue::builder(name).open().is_ok(),
        Address::Ring(name) => ipckit::ring::Ring::builder(name).open().is_ok(),
        Address::SysvMq(key) => ipckit::sysv::MessageQueue::builder(*key).open().is_ok(),
        Address::Fifo(path) => path.exists(),
        Address::Shm(name) => ipckit::shm::Shm::builder(name).open().is_ok(),
        Address::Sem(name) => ipckit::sem::NamedSemaphore::builder(name).open().is_ok(),
        Address::SysvSem(key) => ipckit::sem::SemaphoreSet::builder(*key).open().is_ok(),
        Address::Mailbox(name) => ipckit::mailbox::Client::connect()
            .and_then(|mut c| c.stat(Some(name)))
            .is_ok_and(|found| found.iter().any(|m| &m.name == name)),
        _ => false,
    }
}

/// Reads one line of a child's stdout, bounded by `T` (the child is
/// killed by the caller's guard when it hangs).
pub fn first_line(child: &mut Child) -> Result<String, Failed> {
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // A byte at a time: what follows the line stays in the pipe for
        // the next reader.
        let mut line = Vec::new();
        let mut b = [0u8];
        while let Ok(1) = io::Read::read(&mut out, &mut b) {
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        let _ = tx.send((line, out));
    });
    let (line, out) = rx
        .recv_timeout(T)
        .map_err(|_| "no line from the peer in time")?;
    child.stdout = Some(out);
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Reads a child's standard output to its end, bounded by `T` (the
/// child is killed by the caller's guard when it hangs).
pub fn rest_of_output(child: &mut Child) -> Result<String, Failed> {
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let r = io::Read::read_to_string(&mut out, &mut s);
        let _ = tx.send(r.map(|_| s));
    });
    Ok(rx
        .recv_timeout(T)
        .map_err(|_| "the peer did not finish its output in time")??)
}

/// A peer serving until its standard input closes ([`start_serving`]):
/// on drop its standard input is closed, and it is killed if it has not
/// ended within `T`.
pub struct Serving {
    pub child: Child,
}

impl Drop for Serving {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let end = Instant::now() + T;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this test binary as a peer playing `role` with `arg` (see
/// [`peer_command`]), standard input and output piped, and waits for it
/// to say `ready`.
pub fn start_serving(var: &str, role: &str, arg: &str) -> Result<Serving, Failed> {
    let child = peer_command(var, role, arg)?
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut peer = Serving { child };
    let line = first_line(&mut peer.child)?;
    ensure(line == "ready", || format!("the {role} peer said {line:?}"))?;
    Ok(peer)
}

// ---------------------------------------------------------------- participants that report

/// Reports an event on stderr, one line.
pub fn report(line: std::fmt::Arguments<'_>) {
    // One write(2) per line, before the next message: a kill leaves whole
    // lines only (stderr writes each piece of a format on its own).
    let line = format!("{line}\n");
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// A participant and the lines it reports, read on a thread of their own
/// (so a participant never waits for this process to read).
pub struct Part {
    /// Who it is, for messages.
    pub what: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// The lines read so far.
    pub seen: Vec<String>,
    /// Whether [`Part::kill`] killed it.
    pub killed: bool,
}

/// A round that fails part-way leaves no participant behind: one still
/// running (a broker or daemon waits to be stopped) is killed and reaped.
impl Drop for Part {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Part {
    /// Starts `cmd`, its standard error read line by line.
    pub fn start(what: String, mut cmd: Command) -> io::Result<Part> {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let err: ChildStderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Part {
            what,
            child,
            lines,
            seen: Vec::new(),
            killed: false,
        })
    }

    /// The first line, which must be `ready ADDR`: the address.
    pub fn ready(&mut self) -> Result<String, Failed> {
        match self.lines.recv_timeout(T) {
            Ok(l) if l.starts_with("ready ") => Ok(l["ready ".len()..].to_string()),
            Ok(l) => Err(format!("{}: {l}", self.what).into()),
            Err(_) => Err(format!("{}: not ready after {T:?}", self.what).into()),
        }
    }

    /// SIGKILL, now.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.killed = true;
    }

    /// Waits for the end (by `deadline`) and takes every line.
    pub fn finish(&mut self, deadline: Instant) -> Result<(), Failed> {
        self.finish_unless(|_| Instant::now() > deadline, "at its deadline")
    }

    /// Waits for the end for as long as it says something at least every
    /// `quiet` (a long run that reports its progress), and takes every
    /// line.
    pub fn finish_talking(&mut self, quiet: Duration) -> Result<(), Failed> {
        let mut heard = (0, Instant::now());
        self.finish_unless(
            |said| {
                if said != heard.0 {
                    heard = (said, Instant::now());
                }
                heard.1.elapsed() > quiet
            },
            &format!("silent for {quiet:?}"),
        )
    }

    /// Waits for the end unless `hung` (told how many lines were read so
    /// far) says it hangs: then kills it and says so, `how`.
    fn finish_unless(
        &mut self,
        mut hung: impl FnMut(usize) -> bool,
        how: &str,
    ) -> Result<(), Failed> {
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if hung(self.seen.len()) {
                self.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "{} still running {how} (hung); said {:?}",
                    self.what,
                    self.seen.last()
                )
                .into());
            }
            self.drain(Duration::from_millis(5));
        }
        let status = self.child.wait()?;
        // The reader thread ends at end of file.
        while let Ok(l) = self.lines.recv_timeout(T) {
            self.seen.push(l);
        }
        if !self.killed && !status.success() {
            return Err(format!("{} failed ({status}): {:?}", self.what, self.seen).into());
        }
        if let Some(bad) = self.seen.iter().find(|l| l.contains("BAD")) {
            return Err(format!("{}: {bad}", self.what).into());
        }
        Ok(())
    }

    /// Takes the lines said so far, waiting up to `wait` for the first.
    pub fn drain(&mut self, wait: Duration) {
        if let Ok(l) = self.lines.recv_timeout(wait) {
            self.seen.push(l);
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
        }
    }

    /// `(producer, seq)` of each line starting with `tag`.
    pub fn events(&self, tag: &str) -> Vec<(u32, u64)> {
        self.seen
            .iter()
            .filter_map(|l| {
                let mut w = l.split(' ');
                (w.next() == Some(tag)).then(|| {
                    let num = |x: Option<&str>| {
                        x.and_then(|x| x.parse::<u64>().ok())
                            .unwrap_or_else(|| panic!("{}: a line {l:?}", self.what))
                    };
                    (num(w.next()) as u32, num(w.next()))
                })
            })
            .collect()
    }

    /// What its last `end WHY` line says.
    pub fn ending(&self) -> Option<&str> {
        self.seen
            .iter()
            .rev()
            .find(|l| l.starts_with("end "))
            .map(|l| &l[4..])
    }
}

/// A mailbox broker process of a test's own, which the peers it starts
/// find through `IPCKIT_BROKER` (so it may be killed, or measured,
/// without touching the run's [`start_broker`]). The test binary plays it
/// with the role `broker:PATH` ([`play_own_broker`]).
pub struct OwnBroker {
    /// The broker, when one was needed.
    pub part: Option<Part>,
    /// Its socket.
    pub socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    /// Starts one (as a peer of `var`) if `needed`: the clients of
    /// `what` will find it.
    pub fn start(var: &str, what: &str, needed: bool) -> Result<OwnBroker, Failed> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("broker.sock");
        let mut part = None;
        if needed {
            let mut b = Part::start(
                format!("{what} broker"),
                peer_command(var, "broker", &socket.display().to_string())?,
            )?;
            b.ready()?;
            part = Some(b);
        }
        Ok(OwnBroker {
            part,
            socket,
            _dir: dir,
        })
    }

    /// A peer of `var` in role `role`, told where this broker is.
    pub fn peer(&self, var: &str, role: &str, arg: &str) -> io::Result<Command> {
        let mut cmd = peer_command(var, role, arg)?;
        cmd.env("IPCKIT_BROKER", &self.socket);
        Ok(cmd)
    }
}

/// Plays `broker:PATH`: a mailbox broker at `PATH`, `ready PATH` once
/// bound, until killed.
pub fn play_own_broker(path: &str) -> io::Result<()> {
    let broker = ipckit::mailbox::Broker::builder().socket(path).bind()?;
    report(format_args!("ready {path}"));
    broker.run()
}

// ---------------------------------------------------------------- checked messages

/// A message that proves itself: `[producer u32][seq u64][payload][crc32
/// of all before]`, the payload's length (0 to 199) and bytes following
/// from (producer, seq).
pub fn numbered(p: u32, seq: u64) -> Vec<u8> {
    let len = ((seq * 7 + u64::from(p) * 13) % 200) as usize;
    let mut m = Vec::with_capacity(16 + len);
    m.extend_from_slice(&p.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..len).map(|i| (seq as usize + i) as u8));
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    m
}

/// The producer and sequence number of an intact [`numbered`] message.
pub fn check_numbered(m: &[u8]) -> Result<(u32, u64), String> {
    if m.len() < 16 {
        return Err(format!("a message of {} bytes", m.len()));
    }
    let (body, crc) = m.split_at(m.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(format!(
            "a checksum that does not match ({} bytes)",
            m.len()
        ));
    }
    let p = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
    if numbered(p, seq) != m {
        return Err(format!("message {p}/{seq} with the wrong payload"));
    }
    Ok((p, seq))
}
