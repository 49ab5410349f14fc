//! Signals: the software model of an interrupt.
//!
//! A signal is a small number delivered to a process (or one thread) at
//! any moment. It can be blocked (held pending until unblocked), and the
//! realtime signals (`SIGRTMIN` to `SIGRTMAX`) can carry an integer sent
//! with `sigqueue`.
//!
//! - Send: [`kill`] (a process), [`kill_group`] (a process group),
//!   [`queue`] (`sigqueue`, with a value), [`raise`] (this thread).
//! - Receive without writing a signal handler: [`SignalReceiver`] blocks
//!   the signals and reads each delivery from a `signalfd`, with the
//!   sender's pid and uid, the value, and why it was sent ([`Code`]).
//! - Choose what a signal does: [`ignore`] and [`set_default`] return a
//!   guard that restores the previous action; [`disposition`] tells the
//!   current one.
//! - Handle without the re-entrancy trap: [`Handler`] installs a signal
//!   handler that only records each delivery (async-signal-safe), and your
//!   code runs on a normal thread: an iterator, a wait with a timeout, or a
//!   closure ([`on`]). Works in any thread, no mask to set up.
//! - Masks: [`block`] returns a guard that restores the previous mask;
//!   [`pending`] lists what waits.
//! - Timers: [`Timer`] sends a signal with a value once or at an interval.
//! - Messages: [`SignalSender`] and [`SignalReceiver`] implement the shared
//!   message traits, a realtime signal being a 4-byte message.
//!
//! # Standard signals coalesce, realtime signals queue
//!
//! While a standard signal (1 to 31) is blocked, sending it ten times
//! leaves it pending once: one delivery, the others are lost. Realtime
//! signals are queued: ten `sigqueue` calls give ten deliveries, each with
//! its value, in the order sent (lowest signal number first across
//! different realtime signals). The queue is bounded by `RLIMIT_SIGPENDING`
//! (`ulimit -i`); beyond it `sigqueue` fails with `EAGAIN`. Use realtime
//! signals when every event counts.
//!
//! ```
//! use ipckit::signal::{self, Signal, SignalReceiver};
//! use std::time::Duration;
//!
//! let sig: Signal = "SIGRTMIN+3".parse()?;
//! let rx = SignalReceiver::new(&[sig])?; // blocks it in this thread
//! signal::queue(std::process::id(), sig, 42)?;
//! let got = rx.recv_info_timeout(Duration::from_secs(1))?.expect("delivered");
//! assert_eq!((got.signal, got.value), (sig, Some(42)));
//! assert_eq!(got.pid, std::process::id());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `signal(7)`, `kill(2)`, `sigqueue(3)`, `pthread_sigmask(3)`,
//! `sigpending(2)`, `signalfd(2)`, `timer_create(2)`, `sigaction(2)`,
//! `signal-safety(7)`.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::sys;
use crate::{Deadline, MessageSender, SendTimeoutError};

mod handler;
mod recv;

pub use handler::{
    disposition, ignore, on, set_default, Disposition, DispositionGuard, Handler, HandlerThread,
};
pub use recv::{Code, SignalInfo, SignalReceiver};

/// The bytes of a signal's value, the largest "message" a signal carries.
pub const VALUE_SIZE: usize = 4;

/// Sends one signal per message to a process: a 4-byte message is the
/// value of a `sigqueue` (little-endian `i32`), an empty one a plain
/// `kill` (standard signals only: a realtime signal always carries its
/// value, since `kill` loses it silently when the receiver's queue is
/// full); anything longer is refused. Implements [`MessageSender`]:
/// a full queue of pending signals (`EAGAIN`) is "full" (retried until
/// the deadline), a process that no longer exists is "disconnected".
///
/// ```
/// use ipckit::signal::{Signal, SignalReceiver, SignalSender};
/// use ipckit::prelude::*;
///
/// let sig = Signal::realtime(2)?;
/// let mut rx = SignalReceiver::new(&[sig])?;
/// let mut tx = SignalSender::new(std::process::id(), sig);
/// tx.send(7i32.to_le_bytes())?;
/// assert_eq!(MessageReceiver::recv(&mut rx)?, 7i32.to_le_bytes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SignalSender {
    pid: u32,
    signal: Signal,
}

impl SignalSender {
    /// Messages to process `pid`, as `signal`.
    pub fn new(pid: u32, signal: Signal) -> SignalSender {
        SignalSender { pid, signal }
    }
}

impl MessageSender for SignalSender {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        let pid = match pid_arg(self.pid, "process") {
            Ok(p) => p,
            Err(e) => return Err(SendTimeoutError::Io(e, ())),
        };
        let sig = self.signal;
        let attempt = || match *msg {
            [] if sig.is_realtime() => Err(invalid(format!(
                "{sig} is a realtime signal: send its {VALUE_SIZE}-byte value (an empty message \
                 would go with kill(2), which loses the signal without an error when the \
                 receiver's queue is full)"
            ))),
            [] => sys::signal::kill(pid, sig.0),
            [a, b, c, d] => sys::signal::queue(pid, sig.0, i32::from_le_bytes([a, b, c, d])),
            _ => Err(invalid(format!(
                "a signal carries an empty message (kill) or exactly {VALUE_SIZE} bytes (the \
                 sigqueue value), not {}",
                msg.len()
            ))),
        };
        loop {
            let e = match attempt() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EAGAIN) if !deadline.expired() => {
                    std::thread::sleep(std::time::Duration::from_micros(50))
                }
                Some(libc::EAGAIN) => return Err(SendTimeoutError::Timeout(())),
                Some(libc::ESRCH) => return Err(SendTimeoutError::Disconnected(())),
                _ => {
                    let e = explain_send(e, &format!("process {}", self.pid), sig);
                    return Err(SendTimeoutError::Io(e, ()));
                }
            }
        }
    }
}

/// The standard signals with names, on Linux.
const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGILL, "ILL"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGBUS, "BUS"),
    (libc::SIGFPE, "FPE"),
    (libc::SIGKILL, "KILL"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGSEGV, "SEGV"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGPIPE, "PIPE"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGSTKFLT, "STKFLT"),
    (libc::SIGCHLD, "CHLD"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGSTOP, "STOP"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGURG, "URG"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

/// A signal number, valid on this system (1 to `SIGRTMAX`).
///
/// Parsed from `SIGUSR1`, `USR1`, `usr1`, `10`, `SIGRTMIN+3`, `RTMIN`,
/// `SIGRTMAX-2`; displayed as `SIGUSR1` or `SIGRTMIN+3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT` (Ctrl-C).
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGKILL`: cannot be caught, blocked or ignored.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGPIPE`.
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// `SIGALRM`.
    pub const ALRM: Signal = Signal(libc::SIGALRM);
    /// `SIGTERM`.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCHLD`.
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    /// `SIGSTOP`: cannot be caught, blocked or ignored.
    pub const STOP: Signal = Signal(libc::SIGSTOP);

    /// The signal with number `n`, if it exists here.
    pub fn new(n: i32) -> io::Result<Signal> {
        let (_, max) = sys::signal::rt_range();
        if (1..=max).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(invalid(format!(
                "{n} is not a signal number: signals are 1 to {max} here (kill -l lists them)"
            )))
        }
    }

    /// Realtime signal `SIGRTMIN + n`.
    pub fn realtime(n: i32) -> io::Result<Signal> {
        let (min, max) = sys::signal::rt_range();
        match min.checked_add(n) {
            Some(s) if n >= 0 && s <= max => Ok(Signal(s)),
            _ => Err(invalid(format!(
                "SIGRTMIN+{n} does not exist: realtime signals are SIGRTMIN+0 to SIGRTMIN+{} \
                 here",
                max - min
            ))),
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// Whether it is a realtime signal (queued, carries a value).
    pub fn is_realtime(self) -> bool {
        self.0 >= sys::signal::rt_range().0
    }

    /// False for `SIGKILL` and `SIGSTOP`, which no process can catch,
    /// block or ignore.
    pub fn can_be_caught(self) -> bool {
        self != Signal::KILL && self != Signal::STOP
    }

    /// Refuses `SIGKILL` and `SIGSTOP` with an error saying why.
    pub(crate) fn check_catchable(self) -> io::Result<()> {
        if self.can_be_caught() {
            Ok(())
        } else {
            Err(invalid(format!(
                "{self} cannot be caught, blocked or ignored (signal(7)): only its default \
                 action, {}, ever happens",
                if self == Signal::KILL {
                    "killing the process"
                } else {
                    "stopping the process"
                }
            )))
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((_, name)) = NAMES.iter().find(|(n, _)| *n == self.0) {
            return write!(f, "SIG{name}");
        }
        let (min, max) = sys::signal::rt_range();
        if self.0 == max {
            f.write_str("SIGRTMAX")
        } else if self.0 >= min {
            write!(f, "SIGRTMIN+{}", self.0 - min)
        } else {
            write!(f, "SIG{}", self.0)
        }
    }
}

impl FromStr for Signal {
    type Err = io::Error;

    /// Parses `SIGUSR1`, `USR1`, `usr1`, `10`, `SIG10` (how a signal
    /// without a name, such as 32, is displayed), `SIGRTMIN+3`, `RTMIN`,
    /// `SIGRTMAX-2`.
    fn from_str(s: &str) -> io::Result<Signal> {
        if let Ok(n) = s.parse::<i32>() {
            return Signal::new(n);
        }
        let up = s.to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        if let Some((n, _)) = NAMES.iter().find(|(_, nm)| *nm == name) {
            return Ok(Signal(*n));
        }
        if !name.is_empty() && name.len() < 4 && name.bytes().all(|b| b.is_ascii_digit()) {
            return Signal::new(name.parse().expect("up to 3 digits"));
        }
        if name == "POLL" {
            return Ok(Signal(libc::SIGIO));
        }
        if name == "IOT" {
            return Ok(Signal(libc::SIGABRT));
        }
        let (min, max) = sys::signal::rt_range();
        let offset = |rest: &str, sign: i32| -> io::Result<i32> {
            if rest.is_empty() {
                return Ok(0);
            }
            let digits = match (sign, rest.as_bytes()[0]) {
                (1, b'+') | (-1, b'-') => &rest[1..],
                _ => return Err(unknown(s)),
            };
            // Digits only: "RTMAX--5" or "RTMIN++1" are not offsets.
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unknown(s));
            }
            digits.parse::<i32>().map_err(|_| unknown(s))
        };
        if let Some(rest) = name.strip_prefix("RTMIN") {
            return Signal::realtime(offset(rest, 1)?);
        }
        if let Some(rest) = name.strip_prefix("RTMAX") {
            let n = offset(rest, -1)?;
            return match max.checked_sub(n) {
                Some(v) if v >= min => Ok(Signal(v)),
                _ => Err(invalid(format!(
                    "SIGRTMAX-{n} does not exist: realtime signals are SIGRTMAX-{} to SIGRTMAX \
                     here",
                    max - min
                ))),
            };
        }
        Err(unknown(s))
    }
}

fn unknown(s: &str) -> io::Error {
    invalid(format!(
        "unknown signal {s:?}: use a name (SIGUSR1, USR1), a number (10) or SIGRTMIN+N / \
         SIGRTMAX-N (kill -l lists them)"
    ))
}

fn explain_send(e: io::Error, what: &str, sig: Signal) -> io::Error {
    let msg = match e.raw_os_error() {
        Some(libc::ESRCH) => format!("no {what} (it does not exist, or has exited)"),
        Some(libc::EPERM) => format!(
            "permission denied sending {sig} to {what}: it belongs to another user (only root \
             or a process of the same user may signal it)"
        ),
        Some(libc::EAGAIN) => format!(
            "cannot queue {sig} to {what}: its queue of pending signals is full \
             (RLIMIT_SIGPENDING, ulimit -i)"
        ),
        _ => format!("sending {sig} to {what}: {e}"),
    };
    io::Error::new(e.kind(), msg)
}

fn pid_arg(pid: u32, what: &str) -> io::Result<i32> {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(format!(
            "{pid} is not a {what} id (use a positive number)"
        ))),
    }
}

/// Sends `sig` to process `pid` (`kill(2)`).
///
/// A realtime signal goes with `sigqueue(3)` and the value 0 instead:
/// `kill` reports success even when the receiver's queue of pending
/// signals is full and the signal is lost, `sigqueue` says so (the
/// receiver then sees [`Code::Queue`] and a value of 0).
pub fn kill(pid: u32, sig: Signal) -> io::Result<()> {
    let p = pid_arg(pid, "process")?;
    let sent = if sig.is_realtime() {
        sys::signal::queue(p, sig.0, 0)
    } else {
        sys::signal::kill(p, sig.0)
    };
    sent.map_err(|e| explain_send(e, &format!("process {pid}"), sig))
}

/// Sends `sig` to every process of group `pgid` (`kill(2)` with `-pgid`).
pub fn kill_group(pgid: u32, sig: Signal) -> io::Result<()> {
    let p = pid_arg(pgid, "process group")?;
    sys::signal::kill(-p, sig.0).map_err(|e| explain_send(e, &format!("process group {pgid}"), sig))
}

/// Sends `sig` with an integer `value` to process `pid` (`sigqueue(3)`).
/// With a realtime signal every call is queued and delivered in order;
/// a standard signal coalesces like [`kill`] (only one value survives).
pub fn queue(pid: u32, sig: Signal, value: i32) -> io::Result<()> {
    let p = pid_arg(pid, "process")?;
    sys::signal::queue(p, sig.0, value).map_err(|e| explain_send(e, &format!("process {pid}"), sig))
}

/// Sends `sig` to the calling thread (`raise(3)`).
pub fn raise(sig: Signal) -> io::Result<()> {
    sys::signal::raise(sig.0).map_err(|e| explain_send(e, "this thread", sig))
}

/// A timer that delivers a signal carrying `value` to this process on
/// expiry, once or at an interval (POSIX timers, `timer_create(2)` on the
/// monotonic clock). Received like any signal: [`SignalInfo::code`] is
/// [`Code::Timer`] and the value is the timer's. Deleted on drop.
///
/// A realtime signal is the right choice: it is not merged with other
/// sources of the same signal. Expirations that happen while the previous
/// one is still pending are counted by [`Timer::overrun`], not queued.
///
/// ```
/// use std::time::Duration;
/// use ipckit::signal::{Code, Signal, SignalReceiver, Timer};
///
/// let sig = Signal::realtime(4)?;
/// let rx = SignalReceiver::new(&[sig])?; // before the timer can fire
/// let timer = Timer::new(sig, 7)?;
/// timer.start(Duration::from_millis(10), None)?; // once, in 10 ms
/// let got = rx.recv_info_timeout(Duration::from_secs(1))?.expect("fired");
/// assert_eq!((got.code, got.value), (Code::Timer, Some(7)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Timer {
    raw: sys::signal::SignalTimer,
    signal: Signal,
}

impl Timer {
    /// A disarmed timer that will send `signal` with `value`. `SIGKILL` and
    /// `SIGSTOP` are refused.
    pub fn new(signal: Signal, value: i32) -> io::Result<Timer> {
        signal.check_catchable()?;
        Ok(Timer {
            raw: sys::signal::SignalTimer::new(signal.0, value)?,
            signal,
        })
    }

    /// The signal it sends.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Fires after `first`, then every `interval` if given. `first` must
    /// not be zero (use [`stop`](Self::stop) to disarm).
    pub fn start(
        &self,
        first: std::time::Duration,
        interval: Option<std::time::Duration>,
    ) -> io::Result<()> {
        if first.is_zero() {
            return Err(invalid(
                "a timer's first expiry must be after a non-zero time (zero disarms it)".into(),
            ));
        }
        self.raw.set(first, interval.unwrap_or_default())
    }

    /// Disarms the timer.
    pub fn stop(&self) -> io::Result<()> {
        self.raw
            .set(std::time::Duration::ZERO, std::time::Duration::ZERO)
    }

    /// Expirations lost (merged) since the last delivered one
    /// (`timer_getoverrun(2)`).
    pub fn overrun(&self) -> io::Result<u32> {
        self.raw.overrun()
    }
}

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(sys::signal::SigSet);

impl SignalSet {
    /// The empty set.
    pub fn empty() -> SignalSet {
        SignalSet(sys::signal::SigSet::empty())
    }

    /// Adds `sig`.
    pub fn add(&mut self, sig: Signal) {
        self.0.add(sig.0);
    }

    /// Whether `sig` is in the set.
    pub fn contains(&self, sig: Signal) -> bool {
        self.0.contains(sig.0)
    }

    /// The signals in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Signal> + '_ {
        let (_, max) = sys::signal::rt_range();
        (1..=max).map(Signal).filter(move |s| self.contains(*s))
    }

    fn check_catchable(&self) -> io::Result<()> {
        [Signal::KILL, Signal::STOP]
            .into_iter()
            .filter(|s| self.contains(*s))
            .try_for_each(Signal::check_catchable)
    }
}

impl FromIterator<Signal> for SignalSet {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> SignalSet {
        let mut s = SignalSet::empty();
        iter.into_iter().for_each(|sig| s.add(sig));
        s
    }
}

impl<'a> FromIterator<&'a Signal> for SignalSet {
    fn from_iter<I: IntoIterator<Item = &'a Signal>>(iter: I) -> SignalSet {
        iter.into_iter().copied().collect()
    }
}

impl fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|s| s.to_string()))
            .finish()
    }
}

impl PartialEq for SignalSet {
    fn eq(&self, other: &SignalSet) -> bool {
        self.iter().eq(other.iter())
    }
}

/// Restores the calling thread's previous signal mask when dropped
/// ([`block`], [`unblock`]). Not `Send`: a mask belongs to a thread.
#[must_use = "the previous mask is restored when the guard is dropped"]
pub struct MaskGuard {
    old: sys::signal::SigSet,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl fmt::Debug for MaskGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskGuard")
            .field("restores", &SignalSet(self.old))
            .finish()
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = sys::signal::thread_mask(libc::SIG_SETMASK, Some(&self.old));
    }
}

/// Blocks `set` in the calling thread until the guard is dropped: the
/// signals stay pending instead of being delivered (`pthread_sigmask(3)`,
/// `SIG_BLOCK`). Threads started meanwhile inherit the mask. `SIGKILL` and
/// `SIGSTOP` are refused.
pub fn block(set: &SignalSet) -> io::Result<MaskGuard> {
    set.check_catchable()?;
    let old = sys::signal::thread_mask(libc::SIG_BLOCK, Some(&set.0))?;
    Ok(MaskGuard {
        old,
        _not_send: std::marker::PhantomData,
    })
}

/// Unblocks `set` in the calling thread until the guard is dropped: any of
/// them pending is delivered now.
pub fn unblock(set: &SignalSet) -> io::Result<MaskGuard> {
    let old = sys::signal::thread_mask(libc::SIG_UNBLOCK, Some(&set.0))?;
    Ok(MaskGuard {
        old,
        _not_send: std::marker::PhantomData,
    })
}

/// The signals blocked in the calling thread.
pub fn blocked() -> io::Result<SignalSet> {
    sys::signal::thread_mask(libc::SIG_BLOCK, None).map(SignalSet)
}

/// The signals pending for this thread or the process (blocked and sent,
/// not yet delivered; `sigpending(2)`).
pub fn pending() -> io::Result<SignalSet> {
    sys::signal::pending().map(SignalSet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        let (min, max) = sys::signal::rt_range();
        for (text, n) in [
            ("SIGUSR1", libc::SIGUSR1),
            ("USR1", libc::SIGUSR1),
            ("usr1", libc::SIGUSR1),
            ("10", 10),
            ("SIGRTMIN", min),
            ("SIGRTMIN+3", min + 3),
            ("RTMIN+3", min + 3),
            ("SIGRTMAX", max),
            ("SIGRTMAX-2", max - 2),
            ("SIGPOLL", libc::SIGIO),
        ] {
            assert_eq!(text.parse::<Signal>().unwrap().number(), n, "{text}");
        }
        assert_eq!(Signal::new(min + 3).unwrap().to_string(), "SIGRTMIN+3");
        assert_eq!(Signal::USR1.to_string(), "SIGUSR1");
        assert_eq!(Signal::new(max).unwrap().to_string(), "SIGRTMAX");
        for bad in [
            "",
            "0",
            "65",
            "-1",
            "SIGFOO",
            "RTMIN+99",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+x",
            "RTMAX--5",
            "RTMIN++1",
            "RTMAX-+1",
            "SIGRTMIN+-1",
            "RTMIN+ 1",
            "RTMIN+",
        ] {
            let e = bad.parse::<Signal>().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        assert!(Signal::realtime(3).unwrap().is_realtime());
        assert!(!Signal::TERM.is_realtime());
        // A signal set is made by sigemptyset(3), a C library call Miri
        // cannot run.
        if !cfg!(miri) {
            let e = block(&[Signal::KILL].iter().collect()).unwrap_err();
            assert!(e.to_string().contains("cannot be caught, blocked"), "{e}");
        }
    }
}
