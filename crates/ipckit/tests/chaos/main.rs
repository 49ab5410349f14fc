//! Chaos: every mechanism with two or more processes runs a checked
//! workload while one participant, chosen at random, is killed with
//! SIGKILL at a random moment; then no survivor may hang, nothing corrupt
//! or duplicated may have been delivered, nothing confirmed may be lost
//! and nothing may be left behind. What each family checks is in its
//! module: [`messages`] (pipe, FIFO, sockets, queues, rings), [`locks`]
//! (robust mutex and condition variable, semaphores of both families) and
//! [`services`] (mailbox broker, binder, property daemon).
//!
//! `IPCKIT_CHAOS_KILLS` sets the kills per mechanism (default 8; the long
//! form is 1000: `IPCKIT_CHAOS_KILLS=1000 cargo test -p ipckit --release
//! --test chaos`); `IPCKIT_CHAOS_SEED` replays a run. Each test prints its
//! counts.
//!
//! This test binary re-executed with `IPCKIT_CHAOS_PEER=<role>:<arg>`
//! plays a participant; every participant reports on stderr, one line per
//! event.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

#[path = "../common/mod.rs"]
mod common;
mod locks;
mod messages;
mod services;

const VAR: &str = "IPCKIT_CHAOS_PEER";
/// How long the survivors of a kill may take to end.
const SURVIVE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- participants

/// Reports an event on stderr, one line.
fn report(line: std::fmt::Arguments<'_>) {
    // One write(2) per line, before the next message: a kill leaves whole
    // lines only (stderr writes each piece of a format on its own).
    let line = format!("{line}\n");
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

// ---------------------------------------------------------------- the parent

/// A participant and the lines it reports, read on a thread of their own
/// (so a participant never waits for this process to read).
struct Part {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    killed: bool,
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
    fn start(what: String, mut cmd: Command) -> io::Result<Part> {
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
    fn ready(&mut self) -> Result<String, Failed> {
        match self.lines.recv_timeout(SURVIVE) {
            Ok(l) if l.starts_with("ready ") => Ok(l["ready ".len()..].to_string()),
            Ok(l) => Err(format!("{}: {l}", self.what).into()),
            Err(_) => Err(format!("{}: not ready after {SURVIVE:?}", self.what).into()),
        }
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.killed = true;
    }

    /// Waits for the end (by `deadline`) and takes every line.
    fn finish(&mut self, deadline: Instant) -> Result<(), Failed> {
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                self.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "{} still running {SURVIVE:?} after the kill (hung); said {:?}",
                    self.what,
                    self.seen.last()
                )
                .into());
            }
            self.drain(Duration::from_millis(5));
        }
        let status = self.child.wait()?;
        // The reader thread ends at end of file.
        while let Ok(l) = self.lines.recv_timeout(SURVIVE) {
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

    fn drain(&mut self, wait: Duration) {
        if let Ok(l) = self.lines.recv_timeout(wait) {
            self.seen.push(l);
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
        }
    }

    /// `(producer, seq)` of each line starting with `tag`.
    fn events(&self, tag: &str) -> Vec<(u32, u64)> {
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

    fn ending(&self) -> Option<&str> {
        self.seen
            .iter()
            .rev()
            .find(|l| l.starts_with("end "))
            .map(|l| &l[4..])
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // xorshift64*: the state's low bits alone are poorly mixed (a run
        // drew the mailbox's consumer as victim 2 times in 40 of 4 choices).
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}

fn seed() -> u64 {
    std::env::var("IPCKIT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

fn kills() -> usize {
    std::env::var("IPCKIT_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// The named object a round's consumer makes at `addr`, if any (abandoned
/// sockets and ports go with their descriptors).
/// Runs `kills()` rounds of `round`, each killing one participant, and
/// prints the tally.
fn campaign<T: Default + fmt::Display>(
    name: &str,
    mut round: impl FnMut(&mut Rng, &mut T) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut tally = T::default();
    for i in 0..kills() {
        round(&mut rng, &mut tally).map_err(|e| {
            format!(
                "round {i} (IPCKIT_CHAOS_SEED={seed}): {}",
                e.message().unwrap_or("?")
            )
        })?;
    }
    println!("chaos {name}: {tally}");
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec| {
            let (role, arg) = spec.split_once(':').expect("role:arg");
            messages::peer(role, arg)
                .or_else(|| locks::peer(role, arg))
                .or_else(|| services::peer(role, arg))
                .unwrap_or_else(|| panic!("unknown role {role}"))
        })],
        "chaos",
        Duration::from_secs(3600 * 4),
    );
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = messages::trials();
    trials.extend(locks::trials());
    trials.extend(services::trials());
    common::run_trials(&args, trials)
}
