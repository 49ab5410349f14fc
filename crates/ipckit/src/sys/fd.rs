//! File-descriptor calls: read, write, poll, pipes, FIFOs, flags.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Instant;

use super::{cstr, syscall};

/// `read(2)` into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the
    // whole call, and `fd` is a live descriptor borrowed for the call.
    let n = syscall!(read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// `read(2)` appending up to `want` bytes to `v` (no zero-filling).
#[inline]
pub(crate) fn read_spare(fd: BorrowedFd<'_>, v: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    v.reserve(want);
    let old = v.len();
    // SAFETY: `reserve` made room for `want` bytes past `len`; read writes
    // at most `want` bytes there.
    let n = syscall!(read(fd.as_raw_fd(), v.as_mut_ptr().add(old).cast(), want))? as usize;
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { v.set_len(old + n) };
    Ok(n)
}

/// `writev(2)` of several slices as one write (one atomic unit on a pipe
/// when the total is at most `PIPE_BUF`).
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let cnt = bufs.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`, and every
    // slice stays borrowed (so valid and readable) for the whole call.
    let n = syscall!(writev(fd.as_raw_fd(), bufs.as_ptr().cast(), cnt))?;
    Ok(n as usize)
}

/// `write(2)` of one buffer.
#[inline]
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid and readable for its length for the whole call.
    let n = syscall!(write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// Readiness a caller can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
    /// Either.
    ReadWrite,
}

/// `poll(2)` on one descriptor until it is ready or `deadline` passes.
///
/// Returns `Ok(true)` when ready (including error and hang-up conditions,
/// which the following read or write reports), `Ok(false)` on timeout.
/// An interrupted poll is resumed with the time that is left.
pub(crate) fn poll(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
        Interest::ReadWrite => libc::POLLIN | libc::POLLOUT,
    };
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a wait never returns before its deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n > 0 {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// Sets or clears `O_NONBLOCK` on the open file description.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an integer flag argument.
        syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, new))?;
    }
    Ok(())
}

/// Whether `O_NONBLOCK` is set on the open file description.
pub(crate) fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// The open file description's access mode (`O_RDONLY`, `O_WRONLY` or
/// `O_RDWR`).
pub(crate) fn access_mode(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    Ok(flags & libc::O_ACCMODE)
}

/// Points descriptor `target` (a standard descriptor this process gives
/// up) at the file `src` is open on (`dup2(2)`; `target` is inherited by
/// children, as standard descriptors are).
pub(crate) fn replace_standard(src: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    debug_assert!((0..=2).contains(&target));
    // SAFETY: dup2 takes two integers; `target` is one of the standard
    // descriptors, which no `OwnedFd` in this process owns.
    syscall!(dup2(src.as_raw_fd(), target))?;
    Ok(())
}

/// `pipe2(2)` with `O_CLOEXEC`: returns (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(F_GETPIPE_SZ)`.
pub(crate) fn pipe_capacity(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no pointer argument.
    let n = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ))?;
    Ok(n as usize)
}

/// `fcntl(F_SETPIPE_SZ)`; returns the capacity the kernel actually set.
pub(crate) fn set_pipe_capacity(fd: BorrowedFd<'_>, size: libc::c_int) -> io::Result<usize> {
    // SAFETY: F_SETPIPE_SZ takes an integer argument.
    let n = syscall!(fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size))?;
    Ok(n as usize)
}

/// `mkfifo(3)`.
pub(crate) fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    syscall!(mkfifo(c.as_ptr(), mode as libc::mode_t))?;
    Ok(())
}

/// `open(2)` with `O_CLOEXEC` added to `flags`.
pub(crate) fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string; no mode is needed
    // because O_CREAT is never passed here.
    let fd = syscall!(open(c.as_ptr(), flags | libc::O_CLOEXEC))?;
    // SAFETY: open succeeded, so `fd` is a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the anonymous file `fd` (opened with `O_TMPFILE`) the name `path`
/// (`linkat(2)` through `/proc/self/fd` with `AT_SYMLINK_FOLLOW`, which
/// needs no privilege). Fails with `EEXIST` if `path` exists: the file
/// appears under its name complete, or not at all.
pub(crate) fn link_anonymous(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let from = cstr(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
    let to = cstr(path)?;
    // SAFETY: both are NUL-terminated strings that live across the call.
    syscall!(linkat(
        libc::AT_FDCWD,
        from.as_ptr(),
        libc::AT_FDCWD,
        to.as_ptr(),
        libc::AT_SYMLINK_FOLLOW
    ))?;
    Ok(())
}

/// `fchmod(2)`. On a socket before `bind(2)`, this sets the mode its file
/// gets (less the umask), so the file is never more open than asked.
pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    syscall!(fchmod(fd.as_raw_fd(), mode as libc::mode_t))?;
    Ok(())
}

/// `flock(2)` with `LOCK_EX | LOCK_NB`: false if another open file
/// description holds the lock.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: integer arguments only.
    match syscall!(flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `eventfd(2)`, non-blocking and close-on-exec, starting at 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter (`write(2)` of a `u64`).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: `one` is 8 readable bytes.
    syscall!(write(fd.as_raw_fd(), one.as_ptr().cast(), 8))?;
    Ok(())
}

/// The device and inode of what `fd` refers to, if it is open.
pub(crate) fn identity(fd: RawFd) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into `st`; a closed `fd` only fails.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: filled by a successful fstat.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// Whether this process can open one more descriptor now (`EMFILE` and
/// `ENFILE` say no): tells which of two limits an `EMFILE` was about.
pub(crate) fn descriptor_available() -> bool {
    dev_null().is_ok()
}

/// `/dev/null`, read-only: a descriptor that stands for nothing, to hold
/// one in reserve or to see whether one can be had.
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    open(Path::new("/dev/null"), libc::O_RDONLY)
}

/// `fstat(2)`: what `fd` refers to, read without making another
/// descriptor (a process at its open-file limit can still do it).
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into `st`, which is large enough.
    syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
    // SAFETY: filled by a successful fstat.
    Ok(unsafe { st.assume_init() })
}

/// Takes ownership of descriptor `fd`, inherited from the parent, if it
/// still refers to the file `(dev, ino)` the parent passed; marks it
/// close-on-exec. The caller makes sure this happens once per descriptor.
pub(crate) fn claim_inherited(fd: RawFd, dev: u64, ino: u64) -> io::Result<OwnedFd> {
    match identity(fd) {
        Some(id) if id == (dev, ino) => {}
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("descriptor {fd} is no longer the file the parent passed"),
            ))
        }
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("descriptor {fd} is not open in this process"),
            ))
        }
    }
    // SAFETY: F_SETFD with an integer flag; `fd` is open (checked).
    syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
    // SAFETY: the parent passed this descriptor for us to own (checked by
    // its identity above), and the caller claims each one only once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
