//! `ipc signal send PID SIGNAL [--value N]`,
//! `ipc signal wait SIGNAL... [-n N] [--timeout SECS]` and
//! `ipc signal show PID [--all]`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipckit::signal::{self, Signal, SignalReceiver};

use crate::{StdoutClosed, TimedOut};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Send SIGNAL to process PID: kill(2), or sigqueue(3) with --value.
    /// Realtime signals always go with sigqueue (value 0 without --value),
    /// so that a full queue of pending signals is an error, not a loss.
    Send {
        /// The process to signal.
        #[arg(value_name = "PID")]
        pid: u32,
        /// A name (SIGUSR1, USR1), a number (10), or SIGRTMIN+N / SIGRTMAX-N.
        #[arg(value_name = "SIGNAL", value_parser = parse_signal)]
        signal: Signal,
        /// Send this integer with the signal (sigqueue); a realtime signal
        /// queues each one, a standard signal keeps only one pending.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        value: Option<i32>,
        /// Signal PID even if it is init (1), the shell or process that ran
        /// ipc, or the leader of ipc's own process group, which ipc
        /// otherwise refuses as a likely mistake.
        #[arg(long)]
        force: bool,
    },
    /// Block SIGNALs and print one line per delivery: the signal, the
    /// sender's pid and uid, the value (- for none) and why it was sent.
    /// Prints its own pid on stderr first, for another shell to target.
    Wait {
        /// The signals to wait for (not SIGKILL or SIGSTOP).
        #[arg(value_name = "SIGNAL", required = true, value_parser = parse_signal)]
        signals: Vec<Signal>,
        /// Stop after N deliveries (default: never).
        #[arg(short = 'n', value_name = "N", value_parser = crate::args::count)]
        count: Option<u64>,
        /// Give up after SECS seconds in all, exiting with status 1 (0: only
        /// what is pending already).
        #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
        timeout: Option<Duration>,
    },
    /// What each signal does in process PID: its disposition (default,
    /// ignored, caught by a handler), whether its threads block it, and
    /// whether it is pending, from /proc/PID/status and each thread's.
    /// Lists the signals that differ from the default unless --all.
    Show {
        /// The process to inspect.
        #[arg(value_name = "PID")]
        pid: u32,
        /// List every signal, also those with the default action, not
        /// blocked and not pending.
        #[arg(long)]
        all: bool,
    },
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    s.parse().map_err(|e: io::Error| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Send {
            pid,
            signal,
            value,
            force,
        } => {
            if !force {
                if let Some(who) = risky(pid) {
                    anyhow::bail!(
                        "process {pid} is {who}: {signal} was not sent (add --force if that is \
                         what you mean)"
                    );
                }
            }
            match value {
                Some(v) => signal::queue(pid, signal, v)?,
                None => signal::kill(pid, signal)?,
            }
        }
        Command::Wait {
            signals,
            count,
            timeout,
        } => wait(&signals, count, timeout)?,
        Command::Show { pid, all } => show(pid, all)?,
    }
    Ok(())
}

/// Why signalling `pid` is more likely a mistake than meant: init, or a
/// process ipc runs under (the shell that ran it, as with `$$` typed for
/// `$!`, or anything above it), or the leader of ipc's own process group
/// (the job or script ipc belongs to).
fn risky(pid: u32) -> Option<String> {
    use procfs::process::Process;
    if pid == 1 {
        return Some("init, the first process: a signal to it can shut the system down".into());
    }
    let me = Process::myself().and_then(|p| p.stat()).ok()?;
    if i64::from(pid) == i64::from(me.pgrp) {
        return Some(
            "the leader of ipc's own process group (the job or script ipc runs in)".into(),
        );
    }
    // Up the parents (a bounded walk: a loop cannot happen, but a
    // vanishing parent can).
    let mut ppid = me.ppid;
    for depth in 0..64 {
        if ppid <= 1 {
            break;
        }
        if i64::from(pid) == i64::from(ppid) {
            let who = if depth == 0 {
                "the process that ran ipc (your shell, or the script or program running ipc)"
            } else {
                "one that ipc runs under (a shell or program above the one that ran ipc)"
            };
            return Some(who.into());
        }
        ppid = Process::new(ppid).and_then(|p| p.stat()).ok()?.ppid;
    }
    None
}

fn wait(signals: &[Signal], count: Option<u64>, timeout: Option<Duration>) -> Result<()> {
    // ipc is single-threaded here, so blocking in this thread blocks them
    // for the process.
    let rx = SignalReceiver::new(signals)?;
    let names: Vec<String> = signals.iter().map(|s| s.to_string()).collect();
    eprintln!(
        "ipc: pid {} waiting for {}",
        std::process::id(),
        names.join(" ")
    );
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut out = io::stdout().lock();
    let mut left = count;
    while left != Some(0) {
        let got = match deadline {
            None => rx.recv_info()?,
            Some(d) => match rx.recv_info_timeout(d.saturating_duration_since(Instant::now()))? {
                Some(i) => i,
                None => {
                    return Err(TimedOut(format!(
                        "timed out after {} s waiting for {}",
                        timeout.unwrap_or_default().as_secs_f64(),
                        names.join(" ")
                    ))
                    .into())
                }
            },
        };
        let line = format!(
            "{} pid={} uid={} value={} code={}\n",
            got.signal,
            got.pid,
            got.uid,
            got.value.map_or("-".to_string(), |v| v.to_string()),
            got.code.name()
        );
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(StdoutClosed.into()),
            r => r.context("writing to stdout")?,
        }
        left = left.map(|n| n - 1);
    }
    Ok(())
}

/// The masks of /proc/PID/status (bit N-1 for signal N): the process's
/// ignored and caught sets, shared pending, and per thread the blocked
/// and pending sets.
fn show(pid: u32, all: bool) -> Result<()> {
    use comfy_table::{presets::NOTHING, Table};
    use procfs::process::Process;
    let gone = || format!("no process {pid} (it does not exist, or has exited)");
    let id = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .with_context(gone)?;
    let proc = Process::new(id).with_context(gone)?;
    let status = proc.status().with_context(gone)?;
    let mut threads = Vec::new();
    for task in proc.tasks().with_context(gone)?.flatten() {
        if let Ok(st) = task.status() {
            threads.push((st.sigblk, st.sigpnd));
        }
    }
    let n = threads.len().max(1);
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_header(["SIGNAL", "DISPOSITION", "BLOCKED", "PENDING"]);
    let mut rows = 0;
    for sig in (1..=64).filter_map(|n| Signal::new(n).ok()) {
        let bit = 1u64 << (sig.number() - 1);
        let disposition = if status.sigcgt & bit != 0 {
            "caught"
        } else if status.sigign & bit != 0 {
            "ignored"
        } else {
            "default"
        };
        let blocked = threads.iter().filter(|(b, _)| b & bit != 0).count();
        let blocked = match blocked {
            0 => String::new(),
            b if b == n && n == 1 => "yes".into(),
            b if b == n => format!("all {n} threads"),
            b => format!("{b} of {n} threads"),
        };
        let mut pending = Vec::new();
        if status.shdpnd & bit != 0 {
            pending.push("process".to_string());
        }
        let for_threads = threads.iter().filter(|(_, p)| p & bit != 0).count();
        if for_threads > 0 {
            pending.push(format!("{for_threads} thread(s)"));
        }
        if !all && disposition == "default" && blocked.is_empty() && pending.is_empty() {
            continue;
        }
        t.add_row([
            sig.to_string(),
            disposition.to_string(),
            blocked,
            pending.join(", "),
        ]);
        rows += 1;
    }
    if rows == 0 {
        println!("process {pid}: every signal has its default action, none blocked or pending");
    } else {
        println!("{t}");
    }
    Ok(())
}
