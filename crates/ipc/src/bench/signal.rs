//! `ipc bench signal`: a realtime signal carrying a value (`sigqueue`),
//! between this process and its peer. The message is the 32-bit value
//! itself, so the entry is measured at 4 bytes whatever `--sizes` says.
//!
//! - Latency: send `SIGRTMIN+1` with a sequence number, the peer sends it
//!   back, the round trip is timed.
//! - Throughput: a stream of numbered signals (retried while the
//!   receiver's queue of pending signals is full, `RLIMIT_SIGPENDING`); the
//!   peer checks the order and reports the count and its elapsed time in
//!   two more signals.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ipckit::signal::{self, Signal, SignalReceiver};
use ipckit::WaitStrategy;

use super::{new_hist, Peer, Role, Throughput, MSG_TIMEOUT, SETUP_TIMEOUT};

/// The bytes one signal carries.
pub const SIZE: usize = 4;
/// The peer is set up and receiving.
const READY: i32 = -1;
/// The run is over.
const END: i32 = -2;

/// The signal used both ways.
pub fn sig() -> Signal {
    Signal::realtime(1).expect("SIGRTMIN+1 exists")
}

/// Blocks the signal in this thread (and the threads and processes it
/// starts later) and receives it: call before anything else starts.
pub fn receiver() -> Result<SignalReceiver> {
    SignalReceiver::new(&[sig()]).context("blocking SIGRTMIN+1 for the signal bench")
}

/// Sends `value` to `pid`, waiting while its signal queue is full.
fn send(pid: u32, value: i32) -> Result<()> {
    let end = Instant::now() + MSG_TIMEOUT;
    loop {
        match signal::queue(pid, sig(), value) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::yield_now()
            }
            r => return r.with_context(|| format!("sigqueue to {pid}")),
        }
    }
}

/// The next value, waiting as `wait` says, at most `timeout`.
fn next(rx: &SignalReceiver, wait: WaitStrategy, timeout: Duration) -> Result<i32> {
    let end = Instant::now() + timeout;
    let spin_until = match wait {
        WaitStrategy::Block => Instant::now(),
        WaitStrategy::Spin => end,
        WaitStrategy::Adaptive { spin_for } => Instant::now() + spin_for,
    };
    loop {
        if let Some(i) = rx.try_recv_info()? {
            return Ok(i.value.unwrap_or(i32::MIN));
        }
        if Instant::now() >= spin_until {
            break;
        }
        std::hint::spin_loop();
    }
    match rx.recv_info_timeout(end.saturating_duration_since(Instant::now()))? {
        Some(i) => Ok(i.value.unwrap_or(i32::MIN)),
        None => bail!("no signal came back within {timeout:?}"),
    }
}

fn start(cmd: Command, rx: &SignalReceiver, wait: WaitStrategy) -> Result<Peer> {
    let mut cmd = cmd;
    let peer = Peer::spawn(&mut cmd)?;
    match next(rx, wait, SETUP_TIMEOUT).context("waiting for the peer")? {
        READY => Ok(peer),
        v => bail!("the peer said {v} instead of ready"),
    }
}

/// The round trip, then the one-way stream.
pub fn measure(
    echo: Command,
    sink: Command,
    rx: &SignalReceiver,
    wait: WaitStrategy,
    d: Duration,
) -> Result<(Histogram<u64>, u64, Throughput)> {
    let peer = start(echo, rx, wait)?;
    let pid = peer.0.id();
    let mut h: Histogram<u64> = new_hist();
    let start_at = Instant::now();
    let warmup = start_at + d / 10;
    let end = warmup + d;
    let mut seq = 0i32;
    let mut samples = 0;
    while Instant::now() < end {
        let t0 = Instant::now();
        send(pid, seq)?;
        let back = next(rx, wait, MSG_TIMEOUT)?;
        if back != seq {
            bail!("the echo was {back}, not {seq}");
        }
        if t0 >= warmup {
            h.record((t0.elapsed().as_nanos() as u64).max(1))?;
            samples += 1;
        }
        seq = seq.wrapping_add(1) & i32::MAX;
    }
    send(pid, END)?;
    peer.finish()?;

    let peer = start(sink, rx, wait)?;
    let pid = peer.0.id();
    let end = Instant::now() + d;
    let mut sent = 0i32;
    while Instant::now() < end && sent < i32::MAX {
        send(pid, sent)?;
        sent += 1;
    }
    send(pid, END)?;
    let count = next(rx, wait, MSG_TIMEOUT)?;
    let micros = next(rx, wait, MSG_TIMEOUT)?;
    peer.finish()?;
    if count != sent {
        bail!("the receiver counted {count} of {sent} signals in order");
    }
    if count < 2 || micros <= 0 {
        bail!("too few signals arrived to time ({count})");
    }
    let msgs_per_s = f64::from(count - 1) * 1e6 / f64::from(micros);
    Ok((
        h,
        samples,
        Throughput {
            msgs_per_s,
            bytes_per_s: msgs_per_s * SIZE as f64,
            lost: None,
        },
    ))
}

/// The peer's side: echo each value, or count them and report.
pub fn peer(role: Role, wait: WaitStrategy) -> Result<()> {
    let rx = receiver()?;
    let parent = std::os::unix::process::parent_id();
    send(parent, READY)?;
    match role {
        Role::Echo => loop {
            match next(&rx, wait, MSG_TIMEOUT)? {
                END => return Ok(()),
                v => send(parent, v)?,
            }
        },
        Role::Sink => {
            let (mut count, mut first, mut last) = (0i32, None, Instant::now());
            loop {
                let v = next(&rx, wait, MSG_TIMEOUT)?;
                if v == END {
                    break;
                }
                if v != count {
                    bail!("signal {v} arrived where {count} was expected");
                }
                last = Instant::now();
                first.get_or_insert(last);
                count += 1;
            }
            let micros = first.map_or(0, |f: Instant| (last - f).as_micros());
            send(parent, count)?;
            send(parent, i32::try_from(micros).unwrap_or(i32::MAX))
        }
        Role::Floor
        | Role::Rpc
        | Role::MailboxEcho
        | Role::MailboxSink
        | Role::NatsEcho
        | Role::BinderCall => {
            bail!("the signal bench has no {role:?} role")
        }
    }
}
