//! A deadline for blocking calls that have no timeout of their own
//! (`msgsnd(2)`, `msgrcv(2)`).
//!
//! [`Alarm::arm`] creates a POSIX timer (`timer_create(2)`) that sends
//! [`SIGNAL`] to the calling thread only (`SIGEV_THREAD_ID`) at the deadline
//! and every [`REPEAT`] after it. A signal handler interrupts those calls
//! with `EINTR` whatever its `SA_RESTART` flag (`signal(7)`, "Interruption of
//! system calls"); the caller sees the deadline has passed and stops. The
//! repeats close the one race: a signal that lands just before the thread
//! enters the call is followed by another one.
//!
//! The waiting thread sleeps in the kernel all along: no polling, no core
//! burnt. Cost: three system calls to set up and one to tear down, paid
//! only by waits that actually block.

use std::io;
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{syscall, timespec};

/// The signal used: `SIGURG`, whose default action is to ignore it, so a
/// stray one never harms a process (the Go runtime uses it for the same
/// reason). A no-op handler is installed the first time it is needed if the
/// signal has no handler yet; a handler the program installed itself is
/// kept (and is called when an alarm fires).
pub(crate) const SIGNAL: libc::c_int = libc::SIGURG;

/// How often the signal repeats after the deadline until the alarm is dropped.
pub(crate) const REPEAT: Duration = Duration::from_millis(1);

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs the no-op handler once (unless the program has its own).
fn install_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a null new action only queries; `old` is writable.
        if let Err(e) = syscall!(sigaction(SIGNAL, std::ptr::null(), old.as_mut_ptr())) {
            return Err(e.raw_os_error().unwrap_or(libc::EINVAL));
        }
        // SAFETY: filled by sigaction.
        let old = unsafe { old.assume_init() };
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Ok(());
        }
        // SAFETY: all-zero is a valid sigaction (empty mask, no flags).
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act` is a valid action whose handler is async-signal-safe
        // (it does nothing).
        syscall!(sigaction(SIGNAL, &act, std::ptr::null_mut()))
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))
    });
    r.map_err(io::Error::from_raw_os_error)
}

fn signal_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is writable; sigemptyset initialises it.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised above; SIGNAL is a valid signal number.
    unsafe { libc::sigaddset(set.as_mut_ptr(), SIGNAL) };
    // SAFETY: initialised above.
    unsafe { set.assume_init() }
}

/// An armed timer signalling this thread; disarmed and deleted on drop.
#[derive(Debug)]
pub(crate) struct Alarm {
    timer: libc::timer_t,
    /// The signal was blocked in this thread and is unblocked while armed.
    reblock: bool,
}

impl Alarm {
    /// Arms an alarm for `deadline` (a deadline already past fires at once).
    pub(crate) fn arm(deadline: Instant) -> io::Result<Alarm> {
        install_handler()?;
        let set = signal_set();
        let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY: `set` is initialised, `old` writable.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, old.as_mut_ptr()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: filled by pthread_sigmask; SIGNAL is valid.
        let reblock = unsafe { libc::sigismember(old.as_ptr(), SIGNAL) } == 1;

        // SAFETY: all-zero is a valid sigevent to fill in.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = SIGNAL;
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer = MaybeUninit::<libc::timer_t>::uninit();
        // SAFETY: `sev` is a valid sigevent; `timer` is writable.
        let created = syscall!(timer_create(
            libc::CLOCK_MONOTONIC,
            &mut sev,
            timer.as_mut_ptr()
        ));
        let alarm = match created {
            Ok(_) => Alarm {
                // SAFETY: timer_create succeeded and wrote the id.
                timer: unsafe { timer.assume_init() },
                reblock,
            },
            Err(e) => {
                restore_mask(reblock);
                return Err(e);
            }
        };
        // A zero it_value would disarm: fire in 1 ns at the earliest.
        let first = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: timespec(REPEAT),
            it_value: timespec(first),
        };
        // SAFETY: `alarm.timer` is a live timer; `spec` is valid. On error
        // `alarm` is dropped, which deletes the timer.
        syscall!(timer_settime(alarm.timer, 0, &spec, std::ptr::null_mut()))?;
        Ok(alarm)
    }
}

fn restore_mask(reblock: bool) {
    if reblock {
        let set = signal_set();
        // SAFETY: `set` is initialised; a null old set is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: the timer is live and owned by this value; deleting it
        // disarms it. A signal already pending is handled by the no-op
        // handler when it is delivered.
        unsafe { libc::timer_delete(self.timer) };
        restore_mask(self.reblock);
    }
}

/// The calling thread's id (`gettid(2)`), for [`interrupt`].
pub(crate) fn thread_id() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Makes the calling thread one that [`interrupt`] can wake from a
/// System V call: the handler installed, [`SIGNAL`] unblocked (a thread
/// inherits its creator's mask).
pub(crate) fn interruptible() -> io::Result<()> {
    install_handler()?;
    let set = signal_set();
    // SAFETY: `set` is initialised; a null old set is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Sends [`SIGNAL`] to thread `tid` of this process (`tgkill(2)`), which
/// made itself [`interruptible`]: a `msgrcv`, `msgsnd` or `semop` it sleeps
/// in returns `EINTR`. A signal that lands just before the thread enters
/// the call is lost: callers repeat until the thread answers.
pub(crate) fn interrupt(tid: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain integer arguments; the signal's handler is a no-op.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, SIGNAL) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
