//! Socket calls that std does not offer: `SOCK_SEQPACKET`, abstract Unix
//! names for every socket type, `sendmsg`/`recvmsg` with `SCM_RIGHTS`,
//! `SO_PEERCRED`, and per-call flags (`MSG_DONTWAIT`, `MSG_NOSIGNAL`).

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::syscall;

/// Largest number of descriptors ipckit sends or accepts with one message
/// (the kernel's own limit, `SCM_MAX_FD`, is 253).
pub(crate) const MAX_FDS: usize = 253;

/// A Unix socket address in kernel form.
pub(crate) struct SockAddrUn {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl SockAddrUn {
    /// Offset of `sun_path` in `sockaddr_un`.
    const PATH_OFFSET: usize = mem::offset_of!(libc::sockaddr_un, sun_path);
    /// Capacity of `sun_path`.
    pub(crate) const PATH_CAPACITY: usize = 108;

    fn empty() -> Self {
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        SockAddrUn {
            addr,
            len: Self::PATH_OFFSET as libc::socklen_t,
        }
    }

    /// A filesystem path address; the path must leave room for its NUL.
    pub(crate) fn path(bytes: &[u8]) -> io::Result<Self> {
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path contains a NUL byte",
            ));
        }
        Self::raw(bytes, 0, 1)
    }

    /// An abstract-namespace address: a leading NUL, then `name`.
    pub(crate) fn abstract_name(name: &[u8]) -> io::Result<Self> {
        Self::raw(name, 1, 0)
    }

    fn raw(bytes: &[u8], lead: usize, trail: usize) -> io::Result<Self> {
        if lead + bytes.len() + trail > Self::PATH_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Unix socket address is {} bytes long; the kernel allows at most {} \
                     (sun_path): use a shorter path or an abstract name (@name)",
                    bytes.len(),
                    Self::PATH_CAPACITY - lead - trail
                ),
            ));
        }
        let mut a = Self::empty();
        for (dst, src) in a.addr.sun_path[lead..].iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        a.len = (Self::PATH_OFFSET + lead + bytes.len() + trail) as libc::socklen_t;
        Ok(a)
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.addr as *const libc::sockaddr_un).cast()
    }
}

/// `socket(2)` with `SOCK_CLOEXEC`.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = syscall!(socket(domain, ty | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `socketpair(AF_UNIX, ty)` with `SOCK_CLOEXEC`.
pub(crate) fn socketpair(ty: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors written.
    syscall!(socketpair(
        libc::AF_UNIX,
        ty | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr()
    ))?;
    // SAFETY: two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `bind(2)` to a Unix address.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SockAddrUn) -> io::Result<()> {
    // SAFETY: `addr` is a valid sockaddr_un of length `addr.len`.
    syscall!(bind(fd.as_raw_fd(), addr.as_ptr(), addr.len))?;
    Ok(())
}

/// `connect(2)` to a Unix address.
pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &SockAddrUn) -> io::Result<()> {
    // SAFETY: `addr` is a valid sockaddr_un of length `addr.len`.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr(), addr.len) };
    if rc == -1 {
        // An interrupted connect continues in the background; it must not
        // be retried (that would fail with EALREADY), so EINTR is passed up.
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `listen(2)`.
pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(())
}

/// `accept4(2)` with `SOCK_CLOEXEC`, honouring `nonblocking` for this call.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers ask for no peer address.
    let c = syscall!(accept4(
        fd.as_raw_fd(),
        ptr::null_mut(),
        ptr::null_mut(),
        libc::SOCK_CLOEXEC
    ))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has
/// no descriptor left to give.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held in reserve by a server, so that at its open-file
/// limit it can still take a waiting connection off its listener, tell
/// the client why, and close it. Without it the connection stays in the
/// backlog, `poll` reports the listener ready at once, and the server
/// spins while the client waits for an answer that never comes (the
/// technique libev and nginx document for `EMFILE` from `accept`).
#[derive(Debug)]
pub(crate) struct Spare(Option<OwnedFd>);

impl Spare {
    /// Reserves one descriptor (`/dev/null`). A server takes it before it
    /// serves: one that starts at its limit fails to start, with `EMFILE`.
    pub(crate) fn new() -> io::Result<Spare> {
        match super::fd::dev_null() {
            Ok(fd) => Ok(Spare(Some(fd))),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot reserve the descriptor a server keeps for refusing clients: {e}"),
            )),
        }
    }

    /// After `accept` failed for want of descriptors: frees the reserve,
    /// takes one waiting connection, hands it to `answer` (which tells the
    /// client why, or not, and closes it) and reserves again. Returns
    /// whether a connection was taken; `false` (nothing waiting, or the
    /// reserve was lost to another thread) means the caller should pause
    /// or wait for the next event rather than spin.
    pub(crate) fn shed(&mut self, listener: BorrowedFd<'_>, answer: impl FnOnce(OwnedFd)) -> bool {
        let taken = match self.0.take() {
            Some(reserve) => {
                drop(reserve);
                accept(listener).ok()
            }
            None => None,
        };
        let took = taken.is_some();
        if let Some(c) = taken {
            answer(c);
        }
        self.0 = super::fd::dev_null().ok();
        took
    }
}

/// `shutdown(2)` of the write direction.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers.
    syscall!(shutdown(fd.as_raw_fd(), libc::SHUT_WR))?;
    Ok(())
}

/// `shutdown(2)` of both directions: the peer reads end-of-file.
pub(crate) fn shutdown_both(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers.
    syscall!(shutdown(fd.as_raw_fd(), libc::SHUT_RDWR))?;
    Ok(())
}

/// `recv(2)` appending up to `want` bytes to `v`; returns what the call
/// returned (with `MSG_TRUNC` on a datagram socket: the datagram's real
/// length, which may exceed `want`).
#[inline]
pub(crate) fn recv_spare(
    fd: BorrowedFd<'_>,
    v: &mut Vec<u8>,
    want: usize,
    flags: libc::c_int,
) -> io::Result<usize> {
    v.reserve(want);
    let old = v.len();
    // SAFETY: `reserve` made room for `want` bytes past `len`; the kernel
    // writes at most `want` bytes there.
    let n = syscall!(recv(
        fd.as_raw_fd(),
        v.as_mut_ptr().add(old).cast(),
        want,
        flags
    ))? as usize;
    // SAFETY: the first `min(n, want)` spare bytes were written by the kernel.
    unsafe { v.set_len(old + n.min(want)) };
    Ok(n)
}

/// Sets `SO_RCVTIMEO` (`socket(7)`): how long a blocking receive sleeps
/// before failing with `EAGAIN`; zero for no limit.
pub(crate) fn set_rcvtimeo(fd: BorrowedFd<'_>, d: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval for the length given.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        (&tv as *const libc::timeval).cast(),
        std::mem::size_of::<libc::timeval>() as libc::socklen_t
    ))?;
    Ok(())
}

/// `send(2)` of one buffer; `MSG_NOSIGNAL` is always added.
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid and readable for its length for the whole call.
    let n = syscall!(send(
        fd.as_raw_fd(),
        buf.as_ptr().cast(),
        buf.len(),
        flags | libc::MSG_NOSIGNAL
    ))?;
    Ok(n as usize)
}

/// `sendmsg(2)` of several slices with optional descriptors (`SCM_RIGHTS`).
/// `MSG_NOSIGNAL` is always added: a closed peer is an error, not a signal.
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message; the kernel accepts at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let fd_bytes = mem::size_of_val(fds) as u32;
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(fd_bytes) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len();
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) bytes, aligned
        // for cmsghdr, so the first header and its data fit inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, f) in fds.iter().enumerate() {
                data.add(i).write_unaligned(f.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at live iovecs (IoSlice is iovec-compatible) and
    // a live control buffer for the duration of the call.
    let n = syscall!(sendmsg(fd.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL))?;
    Ok(n as usize)
}

/// What one `recvmsg(2)` delivered.
pub(crate) struct Received {
    /// Bytes received; with `MSG_TRUNC` the datagram's full length.
    pub(crate) len: usize,
    /// Descriptors that came with the data (already close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel dropped descriptors because the control buffer was full.
    pub(crate) fds_truncated: bool,
}

/// `recvmsg(2)` appending up to `want` bytes to `v` (no zero-filling).
/// With `MSG_TRUNC`, `len` may exceed `want`; only `want` bytes are kept.
pub(crate) fn recvmsg_spare(
    fd: BorrowedFd<'_>,
    v: &mut Vec<u8>,
    want: usize,
    flags: libc::c_int,
    with_fds: bool,
) -> io::Result<Received> {
    v.reserve(want);
    let old = v.len();
    // SAFETY: `reserve` made room for `want` bytes past `len`; the kernel
    // writes at most `want` bytes there.
    let r = unsafe { recvmsg_raw(fd, v.as_mut_ptr().add(old), want, flags, with_fds)? };
    // SAFETY: the first `min(len, want)` spare bytes were written by the kernel.
    unsafe { v.set_len(old + r.len.min(want)) };
    Ok(r)
}

/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recvmsg_raw(
    fd: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    flags: libc::c_int,
    with_fds: bool,
) -> io::Result<Received> {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as u32) } as usize;
    // Not zeroed (a kilobyte per receive): the kernel writes the first
    // `msg_controllen` bytes it reports, and only those are read below.
    let mut control = mem::MaybeUninit::<[u64; 136]>::uninit();
    debug_assert!(space <= mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if with_fds {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
    }
    // SAFETY: `msg` points at a live, writable iovec and control buffer
    // (uninitialised memory the kernel only writes).
    let n = syscall!(recvmsg(
        fd.as_raw_fd(),
        &mut msg,
        flags | libc::MSG_CMSG_CLOEXEC
    ))?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of
    // well-formed cmsg headers (and set it to 0 when it wrote none, or when
    // no control buffer was given); CMSG_FIRSTHDR/NXTHDR stay inside them, and
    // each SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4` fresh
    // descriptors that now belong to this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// The credentials of a connected Unix peer (`SO_PEERCRED`).
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes and `len` is a valid in/out size.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        cred.as_mut_ptr().cast(),
        &mut len
    ))?;
    // SAFETY: zero-initialised and filled by the kernel.
    Ok(unsafe { cred.assume_init() })
}

/// A pidfd for the connected Unix peer (`SO_PEERPIDFD`, Linux 6.5): it
/// names the process that connected even after its pid is reused.
pub(crate) fn peer_pidfd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` is a writable int and `len` its size.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERPIDFD,
        (&mut pidfd as *mut libc::c_int).cast(),
        &mut len
    ))?;
    if pidfd < 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: the kernel made a fresh descriptor for this process.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// `getsockopt(SOL_SOCKET, SO_TYPE)`.
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut ty: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` is a writable int and `len` its size.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TYPE,
        (&mut ty as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(ty)
}
