//! `epoll(7)`, level-triggered, for [`crate::select`].
//!
//! Four calls, not a crate: `mio` registers edge-triggered only (the
//! selector is level-triggered, as `select(2)` is), and `polling` (3.11),
//! level-triggered, makes five system calls per wait where this makes one:
//! `strace -c` of 1000 zero-timeout waits counted 2005 `epoll_ctl`, 1000
//! `timerfd_settime`, 1005 `read` (its notifier) and 1000 `epoll_pwait`.
//!
//! Registering takes a borrowed descriptor only for the `epoll_ctl` call:
//! the kernel forgets a registration when the last descriptor of its file
//! is closed, so nothing here can outlive what it watches.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::syscall;

/// A new epoll instance (`epoll_create1(2)`, close-on-exec).
pub(crate) fn create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers.
    let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `fd` for reading (level-triggered), reporting `data`.
pub(crate) fn add(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, data: u64) -> io::Result<()> {
    add_events(ep, fd, libc::EPOLLIN | libc::EPOLLRDHUP, data)
}

/// Watches `fd` for `events` (`EPOLL*` bits), reporting `data`.
pub(crate) fn add_events(
    ep: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    events: libc::c_int,
    data: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: data,
    };
    // SAFETY: `ev` is a valid epoll_event for the call.
    syscall!(epoll_ctl(
        ep.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        fd.as_raw_fd(),
        &mut ev
    ))?;
    Ok(())
}

/// Stops watching descriptor number `fd` (it may be closed already: then
/// the kernel forgot it, and this is `EBADF` or `ENOENT`).
pub(crate) fn delete(ep: BorrowedFd<'_>, fd: i32) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: `ev` is valid (ignored by DEL, required non-null before 2.6.9).
    syscall!(epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev))?;
    Ok(())
}

/// Waits at most `timeout` (`None`: without limit) for watched
/// descriptors to be readable; appends their data to `ready` (nothing
/// when a signal interrupted the wait).
pub(crate) fn wait(
    ep: BorrowedFd<'_>,
    ready: &mut Vec<u64>,
    max: usize,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let ms = match timeout {
        None => -1,
        // Rounded up, so a short wait is not a busy loop.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    let max = max.clamp(1, 1024);
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max];
    // SAFETY: `evs` has room for `max` events.
    // Not `syscall!`: interrupted by a signal, return, so that the caller
    // waits again only for what is left of its timeout.
    // SAFETY: `evs` has room for `max` events.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), max as libc::c_int, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    ready.extend(evs[..n].iter().map(|e| e.u64));
    Ok(())
}

/// Empties an eventfd's counter (`read(2)` of a `u64`); nothing to read
/// is not an error (the descriptor is non-blocking).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes.
    match syscall!(read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}
