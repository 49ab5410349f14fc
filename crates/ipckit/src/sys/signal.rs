//! Signals: `kill(2)`, `sigqueue(3)`, `raise(3)`, `pthread_sigmask(3)`,
//! `sigpending(2)`, `signalfd(2)`.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall;

/// A `sigset_t`.
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    pub(crate) fn empty() -> SigSet {
        let mut s = MaybeUninit::<libc::sigset_t>::zeroed();
        // SAFETY: `s` is writable; sigemptyset initialises it.
        unsafe { libc::sigemptyset(s.as_mut_ptr()) };
        // SAFETY: initialised above.
        SigSet(unsafe { s.assume_init() })
    }

    /// Adds `sig` (the caller checks it is a valid number).
    pub(crate) fn add(&mut self, sig: i32) {
        // SAFETY: the set is initialised; an invalid number only gives EINVAL.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }

    pub(crate) fn contains(&self, sig: i32) -> bool {
        // SAFETY: the set is initialised; sigismember only reads it.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }
}

/// `kill(2)`: `pid` > 0 is a process, `-pgid` a process group.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    syscall!(kill(pid, sig))?;
    Ok(())
}

/// `sigqueue(3)` with an integer value.
pub(crate) fn queue(pid: i32, sig: i32, value: i32) -> io::Result<()> {
    // The value travels in the union's int member: the low 32 bits of the
    // pointer-sized field, as `sigval`'s declaration here has only the
    // pointer.
    let v = libc::sigval {
        sival_ptr: value as isize as *mut libc::c_void,
    };
    // SAFETY: plain arguments; the pointer is never dereferenced.
    syscall!(sigqueue(pid, sig, v))?;
    Ok(())
}

/// `raise(3)`: to the calling thread.
pub(crate) fn raise(sig: i32) -> io::Result<()> {
    // SAFETY: plain integer argument.
    if unsafe { libc::raise(sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pthread_sigmask(3)` of the calling thread; returns the previous mask.
pub(crate) fn thread_mask(how: libc::c_int, set: Option<&SigSet>) -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    let p = set.map_or(std::ptr::null(), |s| &s.0 as *const libc::sigset_t);
    // SAFETY: `p` is null or a valid set; `old` is writable.
    let r = unsafe { libc::pthread_sigmask(how, p, &mut old.0) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(old)
}

/// `sigpending(2)`: signals pending for the thread or the process.
pub(crate) fn pending() -> io::Result<SigSet> {
    let mut s = SigSet::empty();
    // SAFETY: `s` is a valid, writable set.
    syscall!(sigpending(&mut s.0))?;
    Ok(s)
}

/// `signalfd(2)` for `set`, close-on-exec and non-blocking.
pub(crate) fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: `set` is a valid set; -1 asks for a new descriptor.
    let fd = syscall!(signalfd(-1, &set.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `struct signalfd_siginfo` from a signalfd (`WouldBlock` if none).
pub(crate) fn read_info(fd: BorrowedFd<'_>) -> io::Result<libc::signalfd_siginfo> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is writable for `size` bytes.
    let n = syscall!(read(fd.as_raw_fd(), info.as_mut_ptr().cast(), size))?;
    if n as usize != size {
        return Err(io::Error::other("short read from a signalfd"));
    }
    // SAFETY: zero-initialised plain data, filled by the kernel.
    Ok(unsafe { info.assume_init() })
}

/// The realtime signal range of this C library (`SIGRTMIN`, `SIGRTMAX`):
/// glibc keeps the first two kernel realtime signals for itself.
pub(crate) fn rt_range() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// A POSIX timer (`timer_create(2)`, `CLOCK_MONOTONIC`) that sends a
/// signal with a value to this process on expiry; deleted on drop.
#[derive(Debug)]
pub(crate) struct SignalTimer(libc::timer_t);

// SAFETY: a timer id is a process-wide handle; the timer_* calls are
// thread-safe.
unsafe impl Send for SignalTimer {}
// SAFETY: as above.
unsafe impl Sync for SignalTimer {}

impl SignalTimer {
    pub(crate) fn new(sig: i32, value: i32) -> io::Result<SignalTimer> {
        // SAFETY: all-zero is a valid sigevent to fill in.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = sig;
        sev.sigev_value = libc::sigval {
            sival_ptr: value as isize as *mut libc::c_void,
        };
        let mut t = MaybeUninit::<libc::timer_t>::uninit();
        // SAFETY: `sev` is a valid sigevent; `t` is writable.
        syscall!(timer_create(
            libc::CLOCK_MONOTONIC,
            &mut sev,
            t.as_mut_ptr()
        ))?;
        // SAFETY: timer_create succeeded and wrote the id.
        Ok(SignalTimer(unsafe { t.assume_init() }))
    }

    /// `timer_settime(2)`, relative; zero `first` disarms.
    pub(crate) fn set(
        &self,
        first: std::time::Duration,
        interval: std::time::Duration,
    ) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: super::timespec(interval),
            it_value: super::timespec(first),
        };
        // SAFETY: the timer is live (owned by self); `spec` is valid.
        syscall!(timer_settime(self.0, 0, &spec, std::ptr::null_mut()))?;
        Ok(())
    }

    /// `timer_getoverrun(2)`: expirations lost since the last delivery.
    pub(crate) fn overrun(&self) -> io::Result<u32> {
        // SAFETY: the timer is live.
        syscall!(timer_getoverrun(self.0)).map(|n| n as u32)
    }
}

impl Drop for SignalTimer {
    fn drop(&mut self) {
        // SAFETY: the timer is live and owned by this value.
        unsafe { libc::timer_delete(self.0) };
    }
}
