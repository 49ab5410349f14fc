//! How a receive (or a send on a full channel) waits.
//!
//! - [`WaitStrategy::Block`]: let the kernel put the thread to sleep. Costs
//!   no CPU while waiting, but each wake-up goes through the scheduler.
//!   Without a deadline it is one blocking call. With one, a socket
//!   receive is one blocking call too, under `SO_RCVTIMEO` (`socket(7)`; set
//!   on the socket, so other holders of the same descriptor see it), a
//!   POSIX queue's one `mq_timedreceive`/`mq_timedsend`; everything else
//!   makes a non-blocking attempt and then sleeps in `poll(2)`.
//! - [`WaitStrategy::Spin`]: retry the non-blocking call in a loop. Lowest
//!   latency when the peer runs on another core, at the price of a core
//!   spent at 100% while waiting. Never use it on an overloaded machine.
//! - [`WaitStrategy::Adaptive`]: spin for a bounded time, then block. Close
//!   to `Spin` for a busy channel and close to `Block` for an idle one.
//!
//! `ipc bench --wait block,spin,adaptive` shows what each costs on your
//! machine.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::message::Deadline;
use crate::sys::alarm::Alarm;
use crate::sys::fd::{poll, Interest};
use std::os::fd::AsFd;

/// How to wait for data (or for room to write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Sleep in the kernel until ready.
    #[default]
    Block,
    /// Busy-poll with non-blocking calls.
    Spin,
    /// Busy-poll for `spin_for`, then sleep in the kernel.
    Adaptive {
        /// How long to spin before blocking.
        spin_for: Duration,
    },
}

impl WaitStrategy {
    /// The spin time of [`WaitStrategy::ADAPTIVE`].
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
    /// Adaptive waiting with the default spin time (50 µs).
    pub const ADAPTIVE: WaitStrategy = WaitStrategy::Adaptive {
        spin_for: Self::DEFAULT_SPIN,
    };

    /// The strategy's short name: `block`, `spin` or `adaptive`.
    pub fn name(&self) -> &'static str {
        match self {
            WaitStrategy::Block => "block",
            WaitStrategy::Spin => "spin",
            WaitStrategy::Adaptive { .. } => "adaptive",
        }
    }
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitStrategy::Adaptive { spin_for } if *spin_for != Self::DEFAULT_SPIN => {
                write!(f, "adaptive:{}us", spin_for.as_micros())
            }
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for WaitStrategy {
    type Err = String;

    /// Parses `block`, `spin`, `adaptive` or `adaptive:MICROSus`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(WaitStrategy::Block),
            "spin" => Ok(WaitStrategy::Spin),
            "adaptive" => Ok(WaitStrategy::ADAPTIVE),
            _ => {
                let us = s
                    .strip_prefix("adaptive:")
                    .map(|r| r.strip_suffix("us").unwrap_or(r))
                    .and_then(|r| r.parse::<u64>().ok());
                match us {
                    Some(us) => Ok(WaitStrategy::Adaptive {
                        spin_for: Duration::from_micros(us),
                    }),
                    None => Err(format!(
                        "unknown wait strategy {s:?}: expected block, spin, adaptive or adaptive:MICROSus"
                    )),
                }
            }
        }
    }
}

/// Whether one attempt may block in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Blocking,
    NonBlocking,
    /// May sleep in the kernel until about this instant, never later, if
    /// the call has a timeout of its own (a socket's `SO_RCVTIMEO`,
    /// `mq_timedreceive`): one system call instead of an attempt, a
    /// `poll` and another attempt. Calls without one (a pipe's `read`,
    /// every send) treat it as [`Mode::NonBlocking`]; a `WouldBlock` from
    /// either leaves the rest of the wait to `poll`.
    Until(Instant),
}

impl Mode {
    /// Whether the attempt must return at once when it cannot proceed (for
    /// calls without a timeout of their own).
    pub(crate) fn nonblocking(self) -> bool {
        self != Mode::Blocking
    }
}

/// Why [`wait_io`] stopped without a result.
pub(crate) enum WaitError {
    Timeout,
    Io(io::Error),
}

/// What the spin phase of a wait ended with.
enum Spun<T> {
    /// A result (or the deadline passed).
    Done(Result<T, WaitError>),
    /// Nothing yet: block, until this instant if there is one.
    Block(Option<Instant>),
}

/// The part of every wait before it blocks: one non-blocking attempt for
/// `Deadline::Now`, spinning for `Spin` and `Adaptive`.
fn spin<T>(
    strategy: WaitStrategy,
    deadline: Deadline,
    attempt: &mut impl FnMut(Mode) -> io::Result<T>,
) -> Spun<T> {
    let would_block = |e: &io::Error| e.kind() == io::ErrorKind::WouldBlock;
    let end = match deadline {
        Deadline::Now => {
            return Spun::Done(match attempt(Mode::NonBlocking) {
                Err(e) if would_block(&e) => Err(WaitError::Timeout),
                r => r.map_err(WaitError::Io),
            });
        }
        Deadline::Never => None,
        Deadline::At(t) => Some(t),
    };
    let spin_end = match strategy {
        WaitStrategy::Block => return Spun::Block(end),
        WaitStrategy::Spin => end,
        WaitStrategy::Adaptive { spin_for } => {
            let t = Instant::now() + spin_for;
            Some(end.map_or(t, |e| e.min(t)))
        }
    };
    loop {
        match attempt(Mode::NonBlocking) {
            Err(e) if would_block(&e) => {}
            r => return Spun::Done(r.map_err(WaitError::Io)),
        }
        if spin_end.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        // No pause instruction: each attempt is a system call, long
        // enough, and a pause would only delay noticing the peer.
    }
    if strategy == WaitStrategy::Spin {
        Spun::Done(Err(WaitError::Timeout))
    } else {
        Spun::Block(end)
    }
}

/// Runs `attempt` until it stops answering `WouldBlock`, waiting between
/// tries as `strategy` says, and gives up at `deadline`.
///
/// `attempt(io, Mode::Blocking)` may sleep in the kernel (used only when
/// there is no deadline); `attempt(io, Mode::NonBlocking)` must not;
/// `attempt(io, Mode::Until(t))` may until `t`. With a deadline, the
/// blocking phase sleeps in `poll(2)` on `io` when an attempt could not.
#[inline]
pub(crate) fn wait_io<S: AsFd, T>(
    io: &mut S,
    interest: Interest,
    strategy: WaitStrategy,
    deadline: Deadline,
    mut attempt: impl FnMut(&mut S, Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    // The common case first, with nothing else around it: the call can
    // proceed (or, blocking, waits in the kernel by itself).
    match attempt(io, immediate_mode(strategy, deadline)) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        r => return r.map_err(WaitError::Io),
    }
    wait_io_again(io, interest, strategy, deadline, attempt)
}

/// [`wait_io`] after its first attempt: spinning, then blocking.
#[inline(never)]
fn wait_io_slow<S: AsFd, T>(
    io: &mut S,
    interest: Interest,
    strategy: WaitStrategy,
    deadline: Deadline,
    mut attempt: impl FnMut(&mut S, Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    let end = match spin(strategy, deadline, &mut |m| attempt(io, m)) {
        Spun::Done(r) => return r,
        Spun::Block(end) => end,
    };
    block(io, interest, end, false, attempt)
}

/// The blocking phase: attempts (blocking without a deadline) and polls
/// until one succeeds or `end` passes; `poll_first` after an attempt the
/// caller already made.
fn block<S: AsFd, T>(
    io: &mut S,
    interest: Interest,
    end: Option<Instant>,
    mut poll_first: bool,
    mut attempt: impl FnMut(&mut S, Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    loop {
        if poll_first && !poll(io.as_fd(), interest, end).map_err(WaitError::Io)? {
            return Err(WaitError::Timeout);
        }
        poll_first = true;
        let mode = match end {
            None => Mode::Blocking,
            Some(t) => Mode::Until(t),
        };
        match attempt(io, mode) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r.map_err(WaitError::Io),
        }
    }
}

/// Like [`wait_io`] for a call that is not on a file descriptor and has no
/// timeout of its own (System V `msgsnd`/`msgrcv`).
///
/// `attempt(Mode::Blocking)` sleeps in the kernel and is made once: it
/// returns `Interrupted` when a signal arrives. With a deadline, an
/// [`Alarm`] interrupts it then; the thread sleeps until a result or the
/// deadline, without polling.
#[inline]
pub(crate) fn wait_call<T>(
    strategy: WaitStrategy,
    deadline: Deadline,
    mut attempt: impl FnMut(Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    // The common case first: the call proceeds (or, blocking without a
    // deadline, waits in the kernel by itself).
    let mode = match (strategy, deadline) {
        (WaitStrategy::Block, Deadline::Never) => Mode::Blocking,
        _ => Mode::NonBlocking,
    };
    match attempt(mode) {
        Err(e)
            if e.kind() == io::ErrorKind::Interrupted
                || (e.kind() == io::ErrorKind::WouldBlock && mode == Mode::NonBlocking) => {}
        r => return r.map_err(WaitError::Io),
    }
    wait_call_slow(strategy, deadline, attempt)
}

/// [`wait_call`] after a first non-blocking attempt found nothing.
#[inline(never)]
fn wait_call_slow<T>(
    strategy: WaitStrategy,
    deadline: Deadline,
    mut attempt: impl FnMut(Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    if deadline == Deadline::Now {
        return Err(WaitError::Timeout);
    }
    let end = match spin(strategy, deadline, &mut attempt) {
        Spun::Done(r) => return r,
        Spun::Block(end) => end,
    };
    if let Some(t) = end {
        // A message may already be there: no alarm needed then.
        match attempt(Mode::NonBlocking) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r.map_err(WaitError::Io),
        }
        if Instant::now() >= t {
            return Err(WaitError::Timeout);
        }
    }
    let _alarm = end.map(Alarm::arm).transpose().map_err(WaitError::Io)?;
    loop {
        match attempt(Mode::Blocking) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if end.is_some_and(|t| Instant::now() >= t) {
                    return Err(WaitError::Timeout);
                }
            }
            r => return r.map_err(WaitError::Io),
        }
    }
}

/// The mode of a first attempt that must not wait longer than `strategy`
/// and `deadline` allow: blocking for a blocking wait, until the deadline
/// if there is one.
#[inline]
pub(crate) fn immediate_mode(strategy: WaitStrategy, deadline: Deadline) -> Mode {
    match (strategy, deadline) {
        (WaitStrategy::Block, Deadline::Never) => Mode::Blocking,
        (WaitStrategy::Block, Deadline::At(t)) => Mode::Until(t),
        _ => Mode::NonBlocking,
    }
}

/// [`wait_io`] after the caller's own attempt in [`immediate_mode`] found
/// nothing to do (`WouldBlock`): waits first, so that a miss costs no
/// second attempt before the wait.
pub(crate) fn wait_io_again<S: AsFd, T>(
    io: &mut S,
    interest: Interest,
    strategy: WaitStrategy,
    deadline: Deadline,
    attempt: impl FnMut(&mut S, Mode) -> io::Result<T>,
) -> Result<T, WaitError> {
    let end = match (strategy, deadline) {
        (_, Deadline::Now) => return Err(WaitError::Timeout),
        // Spinning repeats attempts anyway: the usual path.
        (WaitStrategy::Spin | WaitStrategy::Adaptive { .. }, _) => {
            return wait_io_slow(io, interest, strategy, deadline, attempt)
        }
        (WaitStrategy::Block, Deadline::Never) => None,
        (WaitStrategy::Block, Deadline::At(t)) => Some(t),
    };
    block(io, interest, end, true, attempt)
}

/// How long a caller that makes its own attempts may keep spinning: until
/// the deadline for [`WaitStrategy::Spin`], for the spin window (or the
/// deadline, if sooner) for [`WaitStrategy::Adaptive`]; `None` for
/// [`WaitStrategy::Block`]. With no end, checking costs no clock read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpinBudget {
    end: Option<Instant>,
}

impl SpinBudget {
    pub(crate) fn new(strategy: WaitStrategy, deadline: Deadline) -> Option<SpinBudget> {
        let end = match deadline {
            Deadline::Never => None,
            Deadline::Now => Some(Instant::now()),
            Deadline::At(t) => Some(t),
        };
        match strategy {
            WaitStrategy::Block => None,
            WaitStrategy::Spin => Some(SpinBudget { end }),
            WaitStrategy::Adaptive { spin_for } => {
                let t = Instant::now() + spin_for;
                Some(SpinBudget {
                    end: Some(end.map_or(t, |e| e.min(t))),
                })
            }
        }
    }

    /// Whether there is time for another attempt.
    pub(crate) fn more(&self) -> bool {
        self.end.is_none_or(|t| Instant::now() < t)
    }
}
