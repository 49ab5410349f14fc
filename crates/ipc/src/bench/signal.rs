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
//!
//! `signal` reads them from a `signalfd` (the signal blocked in every
//! thread); `signal-handler` lets `ipckit::signal::Handler`'s handler run
//! (`SIGRTMIN+2`, blocked nowhere), which writes each to a pipe read by
//! normal code: one `write(2)` and one `read(2)` more per signal, and the
//! cost of entering and leaving a handler.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ipckit::signal::{self, Handler, Signal, SignalInfo, SignalReceiver};
use ipckit::WaitStrategy;

use super::{new_hist, Mech, Peer, Role, Throughput, MSG_TIMEOUT, SETUP_TIMEOUT};

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

/// The signal of the `signal-handler` entry.
fn handler_sig() -> Signal {
    Signal::realtime(2).expect("SIGRTMIN+2 exists")
}

/// Handles `SIGRTMIN+2` (in any thread) for the `signal-handler` entry.
pub fn handler() -> Result<Handler> {
    Handler::new(&[handler_sig()]).context("installing a handler for SIGRTMIN+2")
}

/// Where the values are read from.
pub enum Rx<'a> {
    /// A `signalfd` (`signal`).
    Fd(&'a SignalReceiver),
    /// ipckit's handler (`signal-handler`).
    Handler(&'a Handler),
}

impl Rx<'_> {
    fn sig(&self) -> Signal {
        match self {
            Rx::Fd(_) => sig(),
            Rx::Handler(_) => handler_sig(),
        }
    }

    fn try_recv(&self) -> std::io::Result<Option<SignalInfo>> {
        match self {
            Rx::Fd(r) => r.try_recv_info(),
            Rx::Handler(h) => h.try_recv_info(),
        }
    }

    fn recv_timeout(&self, t: Duration) -> std::io::Result<Option<SignalInfo>> {
        match self {
            Rx::Fd(r) => r.recv_info_timeout(t),
            Rx::Handler(h) => h.recv_info_timeout(t),
        }
    }
}

/// Blocks the signal in this thread (and the threads and processes it
/// starts later) and receives it: call before anything else starts.
pub fn receiver() -> Result<SignalReceiver> {
    SignalReceiver::new(&[sig()]).context("blocking SIGRTMIN+1 for the signal bench")
}

/// Sends `value` to `pid` as `sig`, waiting while its signal queue is full.
fn send(pid: u32, sig: Signal, value: i32) -> Result<()> {
    let end = Instant::now() + MSG_TIMEOUT;
    loop {
        match signal::queue(pid, sig, value) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::yield_now()
            }
            r => return r.with_context(|| format!("sigqueue to {pid}")),
        }
    }
}

/// The next value, waiting as `wait` says, at most `timeout`.
fn next(rx: &Rx, wait: WaitStrategy, timeout: Duration) -> Result<i32> {
    let end = Instant::now() + timeout;
    let spin_until = match wait {
        WaitStrategy::Block => Instant::now(),
        WaitStrategy::Spin => end,
        WaitStrategy::Adaptive { spin_for } => Instant::now() + spin_for,
    };
    loop {
        if let Some(i) = rx.try_recv()? {
            return Ok(i.value.unwrap_or(i32::MIN));
        }
        if Instant::now() >= spin_until {
            break;
        }
        std::hint::spin_loop();
    }
    match rx.recv_timeout(end.saturating_duration_since(Instant::now()))? {
        Some(i) => Ok(i.value.unwrap_or(i32::MIN)),
        None => bail!("no signal came back within {timeout:?}"),
    }
}

fn start(cmd: Command, rx: &Rx, wait: WaitStrategy) -> Result<Peer> {
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
    rx: &Rx,
    wait: WaitStrategy,
    d: Duration,
) -> Result<(Histogram<u64>, u64, Throughput)> {
    let sig = rx.sig();
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
        send(pid, sig, seq)?;
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
    send(pid, sig, END)?;
    peer.finish()?;

    // Timed here, from the first signal sent to the receiver's count,
    // which it sends once it has taken everything: what arrived late in a
    // backlog counts at the rate it really moved.
    let peer = start(sink, rx, wait)?;
    let pid = peer.0.id();
    let t0 = Instant::now();
    let end = t0 + d;
    let mut sent = 0i32;
    while Instant::now() < end && sent < i32::MAX {
        send(pid, sig, sent)?;
        sent += 1;
    }
    send(pid, sig, END)?;
    let count = next(rx, wait, MSG_TIMEOUT)?;
    let elapsed = t0.elapsed();
    peer.finish()?;
    // A handler that cannot keep up loses what its pipe cannot hold (and
    // says so); a signalfd never does.
    let lossy = matches!(rx, Rx::Handler(_));
    if count > sent || (!lossy && count != sent) {
        bail!("the receiver counted {count} of {sent} signals in order");
    }
    if count < 2 {
        bail!("too few signals arrived to time ({count})");
    }
    let msgs_per_s = f64::from(count) / elapsed.as_secs_f64();
    Ok((
        h,
        samples,
        Throughput {
            msgs_per_s,
            bytes_per_s: msgs_per_s * SIZE as f64,
            lost: lossy.then(|| u64::try_from(sent - count).unwrap_or(0)),
        },
    ))
}

/// The peer's side: echo each value, or count them and report.
pub fn peer(mech: Mech, role: Role, wait: WaitStrategy) -> Result<()> {
    let (fd, handler);
    let rx = if mech == Mech::SignalHandler {
        handler = self::handler()?;
        Rx::Handler(&handler)
    } else {
        fd = receiver()?;
        Rx::Fd(&fd)
    };
    let sig = rx.sig();
    let parent = std::os::unix::process::parent_id();
    send(parent, sig, READY)?;
    match role {
        Role::Echo => loop {
            match next(&rx, wait, MSG_TIMEOUT)? {
                END => return Ok(()),
                v => send(parent, sig, v)?,
            }
        },
        Role::Sink => {
            // In order; a handler's may have gaps (what it lost), never a
            // value twice or out of order.
            let (mut count, mut expect) = (0i32, 0i32);
            loop {
                let v = next(&rx, wait, MSG_TIMEOUT)?;
                if v == END {
                    break;
                }
                let gap_ok = matches!(rx, Rx::Handler(_)) && v > expect;
                if v != expect && !gap_ok {
                    bail!("signal {v} arrived where {expect} was expected");
                }
                expect = v + 1;
                count += 1;
            }
            if let Rx::Handler(h) = rx {
                if u64::try_from(expect - count).unwrap_or(0) != h.lost() {
                    bail!(
                        "{} signals missing, the handler counted {} lost",
                        expect - count,
                        h.lost()
                    );
                }
            }
            send(parent, sig, count)
        }
        Role::Floor
        | Role::Rpc
        | Role::MailboxEcho
        | Role::MailboxSink
        | Role::NatsEcho
        | Role::BinderCall
        | Role::PropWatch => {
            bail!("the signal bench has no {role:?} role")
        }
    }
}
