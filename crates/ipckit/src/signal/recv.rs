//! Receiving signals from a `signalfd(2)`: no handler to write.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Signal, SignalSet};
use crate::sys;
use crate::sys::fd::{poll, Interest};
use crate::wait::{wait_io, WaitError, WaitStrategy};
use crate::{Deadline, MessageReceiver, RecvTimeoutError};

/// Why a signal was sent (`si_code`, `sigaction(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `kill(2)` or `raise(3)` (`SI_USER`).
    User,
    /// `sigqueue(3)` (`SI_QUEUE`): the value is the sender's.
    Queue,
    /// `tkill`/`tgkill`, to one thread (`SI_TKILL`).
    Thread,
    /// The kernel (`SI_KERNEL`).
    Kernel,
    /// A POSIX timer expired (`SI_TIMER`).
    Timer,
    /// A message arrived on an empty POSIX queue (`SI_MESGQ`).
    MessageQueue,
    /// Anything else: a signal-specific code (a child's exit for
    /// `SIGCHLD`, a fault address for `SIGSEGV`...).
    Other(i32),
}

impl Code {
    fn from_raw(c: i32) -> Code {
        match c {
            libc::SI_USER => Code::User,
            libc::SI_QUEUE => Code::Queue,
            libc::SI_TKILL => Code::Thread,
            libc::SI_KERNEL => Code::Kernel,
            libc::SI_TIMER => Code::Timer,
            libc::SI_MESGQ => Code::MessageQueue,
            other => Code::Other(other),
        }
    }

    /// A short lower-case name: `user`, `queue`, `thread`, `kernel`,
    /// `timer`, `mesgq`, or the number.
    pub fn name(&self) -> String {
        match self {
            Code::User => "user".into(),
            Code::Queue => "queue".into(),
            Code::Thread => "thread".into(),
            Code::Kernel => "kernel".into(),
            Code::Timer => "timer".into(),
            Code::MessageQueue => "mesgq".into(),
            Code::Other(n) => n.to_string(),
        }
    }
}

/// One delivered signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo {
    /// Which signal.
    pub signal: Signal,
    /// Why it was sent.
    pub code: Code,
    /// The sending process (0 when the kernel sent it).
    pub pid: u32,
    /// The sender's real user id.
    pub uid: u32,
    /// The value sent with `sigqueue` (also set for timers and message
    /// queue notifications); `None` for `kill`.
    pub value: Option<i32>,
}

impl SignalInfo {
    /// From the fields of a `siginfo_t` (the value counts only for the
    /// codes that carry one).
    pub(super) fn from_raw(signo: i32, code: i32, pid: u32, uid: u32, int: i32) -> SignalInfo {
        SignalInfo {
            signal: Signal(signo),
            code: Code::from_raw(code),
            pid,
            uid,
            value: matches!(code, libc::SI_QUEUE | libc::SI_TIMER | libc::SI_MESGQ).then_some(int),
        }
    }
}

/// Receives signals as values: blocks them in the calling thread and reads
/// each delivery from a `signalfd`.
///
/// A process-directed signal goes to any thread that does not block it, so
/// create the receiver before starting other threads (they inherit the
/// mask), or block the signals in every thread. The signals stay blocked
/// when the receiver is dropped: unblocking them then could let one
/// arrive with its default action (often: terminate). Scope a mask with
/// [`super::block`] instead.
///
/// The receiver is a descriptor ([`AsFd`]): poll it with others.
///
/// # As a message receiver
/// [`MessageReceiver`] yields each delivery as a message: the 4 bytes of
/// the `sigqueue` value (little-endian), or an empty message for a signal
/// sent without one (`kill`). Which signal it was is not part of the
/// message: give the receiver one signal for that use. Realtime signals
/// keep every message and its order; standard ones may merge.
#[derive(Debug)]
pub struct SignalReceiver {
    fd: OwnedFd,
    set: SignalSet,
    wait: WaitStrategy,
}

impl SignalReceiver {
    /// Blocks `signals` in the calling thread and receives them. `SIGKILL`
    /// and `SIGSTOP` are refused.
    pub fn new(signals: &[Signal]) -> io::Result<SignalReceiver> {
        let set: SignalSet = signals.iter().collect();
        if signals.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a signal receiver needs at least one signal",
            ));
        }
        set.check_catchable()?;
        sys::signal::thread_mask(libc::SIG_BLOCK, Some(&set.0))?;
        let fd = sys::signal::signalfd(&set.0)?;
        Ok(SignalReceiver {
            fd,
            set,
            wait: WaitStrategy::Block,
        })
    }

    /// The signals it receives.
    pub fn signals(&self) -> SignalSet {
        self.set
    }

    /// Takes the next pending signal, if any, without waiting.
    pub fn try_recv_info(&self) -> io::Result<Option<SignalInfo>> {
        match sys::signal::read_info(self.fd.as_fd()) {
            Ok(i) => Ok(Some(SignalInfo::from_raw(
                i.ssi_signo as i32,
                i.ssi_code,
                i.ssi_pid,
                i.ssi_uid,
                i.ssi_int,
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the next signal.
    pub fn recv_info(&self) -> io::Result<SignalInfo> {
        loop {
            if let Some(i) = self.recv_until(None)? {
                return Ok(i);
            }
        }
    }

    /// Waits at most `timeout` for the next signal; `None` if none came.
    pub fn recv_info_timeout(&self, timeout: Duration) -> io::Result<Option<SignalInfo>> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> io::Result<Option<SignalInfo>> {
        loop {
            if let Some(i) = self.try_recv_info()? {
                return Ok(Some(i));
            }
            if !poll(self.fd.as_fd(), Interest::Read, deadline)? {
                return Ok(None);
            }
        }
    }
}

impl AsFd for SignalReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Ready when a signal is pending (its `signalfd(2)`).
impl crate::select::Selectable for SignalReceiver {
    fn readiness(&mut self) -> std::io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::descriptor(self.fd.as_fd()))
    }
}

impl MessageReceiver for SignalReceiver {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let strategy = self.wait;
        let got = wait_io(self, Interest::Read, strategy, deadline, |rx, _| {
            rx.try_recv_info()?
                .ok_or_else(|| io::ErrorKind::WouldBlock.into())
        });
        match got {
            Ok(info) => {
                buf.clear();
                if let Some(v) = info.value {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                Ok(())
            }
            Err(WaitError::Timeout) => Err(RecvTimeoutError::Timeout),
            Err(WaitError::Io(e)) => Err(RecvTimeoutError::Io(e)),
        }
    }

    /// Always 4: a signal carries one 32-bit value.
    fn max_message_size(&self) -> usize {
        super::VALUE_SIZE
    }

    /// Has no effect: a signal never carries more than 4 bytes, so nothing
    /// is ever allocated beyond that.
    fn set_max_message_size(&mut self, _max: usize) {}

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }
}
