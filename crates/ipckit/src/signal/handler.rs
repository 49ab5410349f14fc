//! Choosing what a signal does: dispositions and handlers that cannot be
//! written wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Signal, SignalInfo, SignalSet};
use crate::sys;
use crate::sys::fd::{poll, Interest};
use crate::sys::sighandler::{self as raw, Action, Kind, Record, RECORD};

/// What happens when a signal arrives (`sigaction(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The default action: terminate, terminate with a core dump, stop,
    /// continue or ignore, depending on the signal (`signal(7)` lists each).
    Default,
    /// Discarded on arrival (`SIG_IGN`). Inherited by child processes,
    /// across `exec` too.
    Ignore,
    /// A handler function runs: a [`Handler`]'s or another library's.
    /// `restart` tells whether blocking calls it interrupts are restarted
    /// (`SA_RESTART`) or fail with `EINTR`. Reset to [`Default`]
    /// in a child process at `exec`.
    ///
    /// [`Default`]: Disposition::Default
    Handled {
        /// `SA_RESTART` is set.
        restart: bool,
    },
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::Default => "default",
            Disposition::Ignore => "ignored",
            Disposition::Handled { restart: true } => "handled (SA_RESTART)",
            Disposition::Handled { restart: false } => "handled (EINTR)",
        })
    }
}

fn from_kind(k: Kind) -> Disposition {
    match k {
        Kind::Default => Disposition::Default,
        Kind::Ignore => Disposition::Ignore,
        Kind::Handler { restart, .. } => Disposition::Handled { restart },
    }
}

/// The current disposition of `sig` in this process (`sigaction(2)` with
/// no new action).
pub fn disposition(sig: Signal) -> io::Result<Disposition> {
    Ok(from_kind(raw::action(sig.number())?.kind()))
}

/// Ignores `sig` until the guard is dropped, which restores exactly the
/// action it replaced (a handler included). `SIGKILL` and `SIGSTOP` are
/// refused.
///
/// Ignoring `SIGCHLD` also makes exited children vanish without a zombie
/// (`wait` then fails with `ECHILD`); ignoring `SIGURG` makes ipckit's
/// timed System V queue and semaphore waits, which an alarm on that signal
/// interrupts, wait past their deadline.
///
/// ```
/// use ipckit::signal::{self, Disposition, Signal};
///
/// let guard = signal::ignore(Signal::USR2)?;
/// assert_eq!(signal::disposition(Signal::USR2)?, Disposition::Ignore);
/// signal::raise(Signal::USR2)?; // discarded: the process lives on
/// drop(guard);
/// assert_eq!(signal::disposition(Signal::USR2)?, Disposition::Default);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ignore(sig: Signal) -> io::Result<DispositionGuard> {
    set(sig, Action::ignore())
}

/// Gives `sig` its default action until the guard is dropped, which
/// restores the action it replaced. `SIGKILL` and `SIGSTOP` are refused
/// (they only ever have it).
pub fn set_default(sig: Signal) -> io::Result<DispositionGuard> {
    set(sig, Action::default())
}

fn set(sig: Signal, action: Action) -> io::Result<DispositionGuard> {
    sig.check_catchable()?;
    let _lock = registry();
    let previous = raw::set_action(sig.number(), &action)?;
    Ok(DispositionGuard {
        signal: sig,
        previous,
    })
}

/// Restores a signal's previous action when dropped ([`ignore`],
/// [`set_default`]). Guards of one signal should be dropped in the
/// reverse order of their making, as each restores what it replaced.
#[must_use = "the previous disposition is restored when the guard is dropped"]
pub struct DispositionGuard {
    signal: Signal,
    previous: Action,
}

impl DispositionGuard {
    /// The signal it is for.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The disposition it restores.
    pub fn previous(&self) -> Disposition {
        from_kind(self.previous.kind())
    }

    /// Keeps the new disposition for good: nothing is restored.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for DispositionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispositionGuard")
            .field("signal", &self.signal)
            .field("restores", &self.previous())
            .finish()
    }
}

impl Drop for DispositionGuard {
    fn drop(&mut self) {
        let _lock = registry();
        let _ = raw::set_action(self.signal.number(), &self.previous);
    }
}

/// Which signals have ipckit's handler, how many [`Handler`]s want each,
/// and what to put back when the last goes.
struct Installed {
    handlers: usize,
    restart: bool,
    previous: Action,
}

/// The registry, by signal number. Its lock also serialises every
/// disposition change made through this module.
fn registry() -> MutexGuard<'static, BTreeMap<i32, Installed>> {
    static REGISTRY: Mutex<BTreeMap<i32, Installed>> = Mutex::new(BTreeMap::new());
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Undoes one handler's claim on signal `n`: when it was the last, puts
/// back the action ipckit's replaced, unless something else has replaced
/// ipckit's since (that newer choice is left alone).
fn release(reg: &mut BTreeMap<i32, Installed>, n: i32) {
    let Some(i) = reg.get_mut(&n) else { return };
    i.handlers -= 1;
    if i.handlers > 0 {
        return;
    }
    let previous = i.previous;
    reg.remove(&n);
    if let Ok(now) = raw::action(n) {
        if matches!(now.kind(), Kind::Handler { ours: true, .. }) {
            let _ = raw::set_action(n, &previous);
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Handles signals with ipckit's own signal handler and hands each
/// delivery, as a [`SignalInfo`], to normal code: an iterator, a wait with
/// a timeout, a descriptor to poll, or a closure on a thread
/// ([`Handler::spawn`], [`on`]).
///
/// # Nothing runs inside the signal handler
/// A signal handler interrupts a thread anywhere, in the middle of
/// `malloc` or holding a lock; if the handler then calls `malloc` or takes
/// that lock, the thread deadlocks on itself (or corrupts the allocator).
/// Only async-signal-safe functions may be called there
/// (`signal-safety(7)`), and `println!`, `format!`, `Vec::push` and
/// `Mutex::lock` are not among them. So ipckit's handler does one thing:
/// it writes a 24-byte record of the `siginfo_t` (signal, code, sender's
/// pid and uid, value) to a pipe with `write(2)`. Everything you write runs
/// later, on a normal thread, where anything is allowed.
///
/// # Any thread, no mask to set up
/// Unlike [`super::SignalReceiver`], which needs the signals blocked in
/// every thread, a handler works whichever thread the kernel picks, in a
/// program that already runs many threads.
///
/// # `SA_RESTART` or `EINTR`
/// A handler interrupts whatever blocking call its thread was in.
/// [`Handler::new`] sets `SA_RESTART`: `read`, `write`, `wait`, `accept`,
/// `recv` and the like continue as if nothing happened, so the rest of the
/// program (and libraries that do not retry `EINTR`) never notices. A few
/// calls fail with `EINTR` even so (`poll`, `epoll_wait`, `select`,
/// `nanosleep`, `semop` with a timeout, `msgrcv`...: `signal(7)`,
/// "Interruption of system calls"). [`Handler::interrupting`] leaves
/// `SA_RESTART` out: every blocking call of the thread that runs the
/// handler fails with `EINTR` (`ErrorKind::Interrupted`), the classic way
/// to break a single-threaded program out of a blocking `read` at
/// `SIGTERM`. In a multi-threaded program the kernel picks the thread, so
/// prefer `SA_RESTART` and wait on the handler instead.
///
/// # When signals come faster than they are taken
/// Standard signals merge while pending, as always; each delivery of a
/// realtime signal makes a record. The pipe holds
/// [`capacity`](Handler::capacity) records (43 690 with the 1 MiB pipe
/// asked for; 2 730 where `/proc/sys/fs/pipe-max-size` refuses it). A
/// handler cannot wait, so deliveries beyond that are counted
/// ([`Handler::lost`]), not kept. For a stream of realtime signals that
/// must not lose one at any rate, use [`super::SignalReceiver`]: the
/// kernel keeps them queued and `sigqueue` tells the sender when the queue
/// is full.
///
/// # Lifetime
/// Dropping the handler gives each signal back the action it had before
/// (when no other `Handler` of this process still wants it).
///
/// A process may have up to 32 handlers at once.
///
/// ```
/// use ipckit::signal::{self, Code, Handler, Signal};
/// use std::time::Duration;
///
/// let sig = Signal::realtime(5)?;
/// let handler = Handler::new(&[sig])?;
/// signal::queue(std::process::id(), sig, 42)?;
/// let got = handler.recv_info_timeout(Duration::from_secs(1))?.expect("handled");
/// assert_eq!((got.signal, got.value, got.code), (sig, Some(42), Code::Queue));
/// assert_eq!(got.pid, std::process::id());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # References
/// `sigaction(2)`, `signal(7)`, `signal-safety(7)`, `pipe(7)`.
pub struct Handler {
    read: OwnedFd,
    write: OwnedFd,
    slot: usize,
    set: SignalSet,
    restart: bool,
    capacity: usize,
    lost: AtomicU64,
}

/// The pipe size asked for: 1 MiB, `/proc/sys/fs/pipe-max-size`'s default
/// (43 690 records).
const PIPE_BYTES: libc::c_int = 1 << 20;

impl Handler {
    /// Handles `signals` from now on, with `SA_RESTART`. `SIGKILL` and
    /// `SIGSTOP` are refused, as is a signal another `Handler` of this
    /// process handles with the opposite `SA_RESTART` choice.
    pub fn new(signals: &[Signal]) -> io::Result<Handler> {
        Handler::install(signals, true)
    }

    /// Handles `signals` without `SA_RESTART`: a blocking call the handler
    /// interrupts fails with `EINTR` (see [the type's
    /// documentation](Handler#sa_restart-or-eintr)).
    pub fn interrupting(signals: &[Signal]) -> io::Result<Handler> {
        Handler::install(signals, false)
    }

    fn install(signals: &[Signal], restart: bool) -> io::Result<Handler> {
        if signals.is_empty() {
            return Err(invalid("a signal handler needs at least one signal".into()));
        }
        let set: SignalSet = signals.iter().collect();
        set.check_catchable()?;
        let (read, write) = sys::fd::pipe()?;
        sys::fd::set_nonblocking(read.as_fd(), true)?;
        sys::fd::set_nonblocking(write.as_fd(), true)?;
        // As many records as the system lets one pipe hold (best effort:
        // the default 64 KiB holds 2 730).
        let _ = sys::fd::set_pipe_capacity(write.as_fd(), PIPE_BYTES);
        let capacity = sys::fd::pipe_capacity(write.as_fd())? / RECORD;
        let mask = set.iter().fold(0u64, |m, s| {
            m | 1u64.checked_shl(s.number() as u32 - 1).unwrap_or(0)
        });

        let mut reg = registry();
        for sig in set.iter() {
            if let Some(i) = reg.get(&sig.number()) {
                if i.restart != restart {
                    return Err(invalid(format!(
                        "{sig} is already handled {} by another ipckit Handler in this \
                         process: one signal has one action, so all its handlers must make the \
                         same choice (Handler::new restarts, Handler::interrupting does not)",
                        if i.restart {
                            "with SA_RESTART"
                        } else {
                            "without SA_RESTART"
                        }
                    )));
                }
            }
        }
        let slot = raw::subscribe(write.as_raw_fd(), mask).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "this process already has {} signal handlers, the most ipckit allows at \
                     once: drop one, or handle several signals with one Handler",
                    raw::SUBSCRIBERS
                ),
            )
        })?;
        let mut claimed = Vec::new();
        for sig in set.iter() {
            let n = sig.number();
            if let Some(i) = reg.get_mut(&n) {
                i.handlers += 1;
                claimed.push(n);
                continue;
            }
            match raw::set_action(n, &Action::ours(restart)) {
                Ok(previous) => {
                    reg.insert(
                        n,
                        Installed {
                            handlers: 1,
                            restart,
                            previous,
                        },
                    );
                    claimed.push(n);
                }
                Err(e) => {
                    claimed.into_iter().for_each(|n| release(&mut reg, n));
                    raw::unsubscribe(slot);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("installing a handler for {sig} (sigaction): {e}"),
                    ));
                }
            }
        }
        Ok(Handler {
            read,
            write,
            slot,
            set,
            restart,
            capacity,
            lost: AtomicU64::new(0),
        })
    }

    /// The signals it handles.
    pub fn signals(&self) -> SignalSet {
        self.set
    }

    /// Whether interrupted calls are restarted (`SA_RESTART`).
    pub fn restarts(&self) -> bool {
        self.restart
    }

    /// How many deliveries can wait to be taken before more are lost.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Deliveries dropped so far because [`capacity`](Self::capacity) were
    /// already waiting (counted when the next one fits).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn try_record(&self) -> io::Result<Option<Record>> {
        let mut rec = Record::default();
        match sys::fd::read(self.read.as_fd(), bytemuck::bytes_of_mut(&mut rec)) {
            Ok(RECORD) => {
                self.lost
                    .fetch_add(u64::from(rec.lost_before), Ordering::Relaxed);
                Ok(Some(rec))
            }
            Ok(n) => Err(io::Error::other(format!(
                "a signal record of {n} bytes instead of {RECORD} (the handler's pipe was \
                 written to by something else)"
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn record_until(&self, deadline: Option<Instant>) -> io::Result<Option<Record>> {
        loop {
            if let Some(r) = self.try_record()? {
                return Ok(Some(r));
            }
            if !poll(self.read.as_fd(), Interest::Read, deadline)? {
                return Ok(None);
            }
        }
    }

    /// Takes the next handled signal, if any, without waiting.
    pub fn try_recv_info(&self) -> io::Result<Option<SignalInfo>> {
        Ok(self.try_record()?.map(info))
    }

    /// Waits for the next handled signal.
    pub fn recv_info(&self) -> io::Result<SignalInfo> {
        loop {
            if let Some(r) = self.record_until(None)? {
                return Ok(info(r));
            }
        }
    }

    /// Waits at most `timeout` for the next handled signal; `None` if none
    /// came.
    pub fn recv_info_timeout(&self, timeout: Duration) -> io::Result<Option<SignalInfo>> {
        Ok(self
            .record_until(Instant::now().checked_add(timeout))?
            .map(info))
    }

    /// Each handled signal, as it comes (never ends by itself).
    pub fn iter(&self) -> impl Iterator<Item = io::Result<SignalInfo>> + '_ {
        std::iter::from_fn(move || Some(self.recv_info()))
    }

    /// Runs `f` for each handled signal on a new thread, until the
    /// returned [`HandlerThread`] is dropped. `f` is ordinary code: it may
    /// allocate, lock, print, or do I/O. If it panics, the thread ends and
    /// later signals wait unread (counted as [`lost`](Self::lost) once
    /// the pipe is full).
    pub fn spawn<F>(self, f: F) -> io::Result<HandlerThread>
    where
        F: FnMut(SignalInfo) + Send + 'static,
    {
        let handler = Arc::new(self);
        let h = Arc::clone(&handler);
        let mut f = f;
        let thread = std::thread::Builder::new()
            .name("ipckit-signal".into())
            .spawn(move || {
                // A record of signal 0 is the stop request from `drop`.
                while let Ok(Some(r)) = h.record_until(None) {
                    if r.signo == 0 {
                        break;
                    }
                    f(info(r));
                }
            })?;
        Ok(HandlerThread {
            handler,
            thread: Some(thread),
        })
    }
}

fn info(r: Record) -> SignalInfo {
    SignalInfo::from_raw(r.signo, r.code, r.pid, r.uid, r.value)
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("signals", &self.set)
            .field("restart", &self.restart)
            .finish()
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // Actions first, then the slot: a signal arriving in between goes
        // to the restored action, not to a handler with nobody reading.
        let mut reg = registry();
        self.set.iter().for_each(|s| release(&mut reg, s.number()));
        raw::unsubscribe(self.slot);
    }
}

impl AsFd for Handler {
    /// Readable when a handled signal waits to be taken.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Ready when a handled signal waits to be taken.
impl crate::select::Selectable for Handler {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::descriptor(self.read.as_fd()))
    }
}

/// Handles `signals` (with `SA_RESTART`) and runs `f` for each delivery on
/// a thread of its own: [`Handler::new`] then [`Handler::spawn`].
///
/// ```
/// use ipckit::signal::{self, Signal};
/// use std::sync::mpsc;
///
/// let (tx, rx) = mpsc::channel();
/// let sig = Signal::realtime(6)?;
/// let thread = signal::on(&[sig], move |info| {
///     // Ordinary code: allocating, locking, sending are all fine here.
///     tx.send(format!("{} carried {:?}", info.signal, info.value)).unwrap();
/// })?;
/// signal::queue(std::process::id(), sig, 7)?;
/// let said = rx.recv_timeout(std::time::Duration::from_secs(1)).unwrap();
/// assert_eq!(said, format!("{sig} carried Some(7)"));
/// drop(thread); // stops the thread, restores the previous action
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn on<F>(signals: &[Signal], f: F) -> io::Result<HandlerThread>
where
    F: FnMut(SignalInfo) + Send + 'static,
{
    Handler::new(signals)?.spawn(f)
}

/// A thread running a closure for each signal a [`Handler`] handles. Drop
/// it to stop the thread (after the closure's current call returns) and
/// give the signals their previous actions back.
pub struct HandlerThread {
    handler: Arc<Handler>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HandlerThread {
    /// The handler the thread reads.
    pub fn handler(&self) -> &Handler {
        &self.handler
    }
}

impl fmt::Debug for HandlerThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerThread")
            .field("handler", &self.handler)
            .finish()
    }
}

impl Drop for HandlerThread {
    fn drop(&mut self) {
        let stop = Record::default();
        // The pipe is non-blocking: when it is full the thread is behind,
        // and makes room as it drains (unless it has ended: a closure that
        // panicked).
        while let Err(e) = sys::fd::write(self.handler.write.as_fd(), bytemuck::bytes_of(&stop)) {
            let ended = self.thread.as_ref().is_none_or(|t| t.is_finished());
            if e.kind() != io::ErrorKind::WouldBlock || ended {
                break;
            }
            std::thread::yield_now();
        }
        if let Some(t) = self.thread.take() {
            // Dropped by its own closure: the loop ends at the stop record.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
