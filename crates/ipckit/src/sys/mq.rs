//! POSIX message queue calls (`mq_overview(7)`). On Linux a queue
//! descriptor is a file descriptor, so it can be polled and owned.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::syscall;

/// A timestamp already in the past: turns the timed calls into
/// non-blocking ones without touching `O_NONBLOCK`.
const PAST: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// `mq_open(3)` with `O_CLOEXEC`; `attr` is (max messages, max message size)
/// for a queue this call creates.
pub(crate) fn open(
    name: &CStr,
    oflag: libc::c_int,
    mode: u32,
    attr: Option<(i64, i64)>,
) -> io::Result<OwnedFd> {
    // SAFETY: mq_attr is plain data; all zeroes is valid.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    let attr_ptr = match attr {
        Some((maxmsg, msgsize)) => {
            a.mq_maxmsg = maxmsg as _;
            a.mq_msgsize = msgsize as _;
            &mut a as *mut libc::mq_attr
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: `name` is NUL-terminated; mode and attr are the variadic
    // arguments mq_open reads when O_CREAT is set; `a` outlives the call.
    let fd = syscall!(mq_open(
        name.as_ptr(),
        oflag | libc::O_CLOEXEC,
        mode as libc::mode_t,
        attr_ptr
    ))?;
    // SAFETY: a fresh queue descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mq_unlink(3)`.
pub(crate) fn unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    syscall!(mq_unlink(name.as_ptr()))?;
    Ok(())
}

/// Sets or clears `O_NONBLOCK` on the queue descriptor (`mq_setattr(3)`;
/// the only attribute it changes).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: mq_attr is plain data; all zeroes is valid.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    a.mq_flags = if on { libc::O_NONBLOCK as _ } else { 0 };
    // SAFETY: `a` is a valid attribute struct; the old one is not asked for.
    syscall!(mq_setattr(fd.as_raw_fd(), &a, std::ptr::null_mut()))?;
    Ok(())
}

/// `mq_getattr(3)`: (flags, max messages, max message size, current messages).
// `c_long` is i64 here but i32 on 32-bit targets: the conversion is needed there.
#[allow(clippy::useless_conversion)]
pub(crate) fn getattr(fd: BorrowedFd<'_>) -> io::Result<(i64, i64, i64, i64)> {
    let mut a = MaybeUninit::<libc::mq_attr>::zeroed();
    // SAFETY: `a` is writable.
    syscall!(mq_getattr(fd.as_raw_fd(), a.as_mut_ptr()))?;
    // SAFETY: filled by mq_getattr.
    let a = unsafe { a.assume_init() };
    Ok((
        i64::from(a.mq_flags),
        i64::from(a.mq_maxmsg),
        i64::from(a.mq_msgsize),
        i64::from(a.mq_curmsgs),
    ))
}

/// How long a queue call may wait: `None` for as long as it takes,
/// `Some(ZERO)` not at all, `Some(d)` at most about `d`.
pub(crate) type Wait = Option<Duration>;

/// The absolute `CLOCK_REALTIME` time the timed calls take, `d` from now
/// (the past for zero: they fail at once, without touching `O_NONBLOCK`).
#[cold]
fn abs_time(d: Duration) -> io::Result<libc::timespec> {
    if d.is_zero() {
        return Ok(PAST);
    }
    let mut now = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `now` is writable.
    syscall!(clock_gettime(libc::CLOCK_REALTIME, now.as_mut_ptr()))?;
    // SAFETY: filled by clock_gettime.
    let now = unsafe { now.assume_init() };
    let nsec = now.tv_nsec as u64 + u64::from(d.subsec_nanos());
    Ok(libc::timespec {
        tv_sec: now.tv_sec
            + d.as_secs().min(i32::MAX as u64) as libc::time_t
            + (nsec / 1_000_000_000) as libc::time_t,
        tv_nsec: (nsec % 1_000_000_000) as _,
    })
}

/// `mq_send(3)`, or `mq_timedsend` waiting at most as `wait` says (for a
/// zero wait it fails with `WouldBlock` at once on a full queue).
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, msg: &[u8], prio: u32, wait: Wait) -> io::Result<()> {
    let res = if let Some(d) = wait {
        let at = abs_time(d)?;
        // SAFETY: `msg` is readable for its length; `at` is a valid timespec.
        syscall!(mq_timedsend(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            prio,
            &at
        ))
    } else {
        // SAFETY: `msg` is readable for its length.
        syscall!(mq_send(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            prio
        ))
    };
    res.map(drop).map_err(timed_out_is_would_block)
}

/// `mq_receive(3)` appending to `v` (which gets room for `msgsize` bytes);
/// returns the message priority. Waits as for [`send`].
#[inline]
pub(crate) fn receive(
    fd: BorrowedFd<'_>,
    v: &mut Vec<u8>,
    msgsize: usize,
    wait: Wait,
) -> io::Result<u32> {
    v.reserve(msgsize);
    let old = v.len();
    let mut prio: libc::c_uint = 0;
    // SAFETY: `reserve` made room for `msgsize` bytes past `len`.
    let dst: *mut libc::c_char = unsafe { v.as_mut_ptr().add(old) }.cast();
    let n = if let Some(d) = wait {
        let at = abs_time(d)?;
        // SAFETY: `dst` is writable for `msgsize` bytes; `prio` is writable;
        // `at` is a valid timespec.
        syscall!(mq_timedreceive(
            fd.as_raw_fd(),
            dst,
            msgsize,
            &mut prio,
            &at
        ))
    } else {
        // SAFETY: as above.
        syscall!(mq_receive(fd.as_raw_fd(), dst, msgsize, &mut prio))
    }
    .map_err(timed_out_is_would_block)?;
    // SAFETY: the kernel initialised `n <= msgsize` bytes.
    unsafe { v.set_len(old + n as usize) };
    Ok(prio)
}

fn timed_out_is_would_block(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ETIMEDOUT) {
        io::Error::from(io::ErrorKind::WouldBlock)
    } else {
        e
    }
}

/// `mq_notify(3)`: with `Some(signal)`, asks for `signal` (with
/// `si_code == SI_MESGQ`) when a message arrives on the empty queue; with
/// `None`, cancels this process's registration.
pub(crate) fn notify(fd: BorrowedFd<'_>, signal: Option<libc::c_int>) -> io::Result<()> {
    match signal {
        Some(sig) => {
            // SAFETY: all-zero is a valid sigevent to fill in.
            let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
            sev.sigev_notify = libc::SIGEV_SIGNAL;
            sev.sigev_signo = sig;
            // SAFETY: `sev` is a valid SIGEV_SIGNAL request, read during the call.
            syscall!(mq_notify(fd.as_raw_fd(), &sev))?;
        }
        // SAFETY: a null sigevent cancels the registration.
        None => drop(syscall!(mq_notify(fd.as_raw_fd(), std::ptr::null()))?),
    }
    Ok(())
}
