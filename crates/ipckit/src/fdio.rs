//! One descriptor and the cheapest way to do blocking and non-blocking I/O
//! on it.
//!
//! Sockets take per-call flags (`MSG_DONTWAIT`, `MSG_NOSIGNAL`), so their
//! descriptor stays blocking and a blocking receive is a single system call.
//! Pipes and FIFOs have no per-call flag: `O_NONBLOCK` is switched only when
//! the mode actually changes, so a run of blocking (or of spinning) calls
//! costs no extra `fcntl`. A pipe write is guarded against `SIGPIPE` when the
//! process still has that signal's default (fatal) action.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;
use crate::wait::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A pipe or FIFO.
    Pipe,
    /// A Unix socket: reads use `recvmsg` once descriptors may arrive.
    UnixSocket,
    /// A TCP or UDP socket.
    InetSocket,
}

#[derive(Debug)]
pub(crate) struct FdIo {
    fd: OwnedFd,
    kind: Kind,
    /// Current `O_NONBLOCK` state (pipes only).
    nonblocking: bool,
    /// Whether pipe writes must suppress `SIGPIPE`.
    guard_sigpipe: bool,
    /// Whether stream reads take descriptors (`recvmsg` with a control
    /// buffer, about 150 ns more per read than `recv`; Unix sockets only).
    recv_fds: bool,
    /// The socket's `SO_RCVTIMEO` as last set here.
    rcvtimeo: RecvTimeout,
}

/// A socket's `SO_RCVTIMEO` (`socket(7)`) as last set by its one reader
/// (zero: none), and how to receive in a [`Mode`] with it.
#[derive(Debug, Default)]
pub(crate) struct RecvTimeout(Duration);

impl RecvTimeout {
    /// The flags for a socket receive in `mode`: blocking ones sleep in the
    /// kernel, for a deadline with `SO_RCVTIMEO` set at most to it, so that
    /// the whole wait is one system call. The timeout is set again only
    /// when it would wake late or much too early, so that a run of
    /// receives with the same timeout sets it once. A deadline within two
    /// ticks gives `MSG_DONTWAIT`: the caller waits with `poll`. A receive
    /// with a deadline may still fail with `EAGAIN` before it: the caller
    /// asks again.
    #[inline]
    pub(crate) fn flags(&mut self, fd: BorrowedFd<'_>, mode: Mode) -> io::Result<libc::c_int> {
        match mode {
            Mode::NonBlocking => Ok(libc::MSG_DONTWAIT),
            Mode::Blocking => {
                if !self.0.is_zero() {
                    sys::socket::set_rcvtimeo(fd, Duration::ZERO)?;
                    self.0 = Duration::ZERO;
                }
                Ok(0)
            }
            Mode::Until(t) => {
                let left = t.saturating_duration_since(Instant::now());
                let Some(most) = left.checked_sub(TICK).filter(|m| *m >= TICK) else {
                    return Ok(libc::MSG_DONTWAIT);
                };
                let cur = self.0;
                if cur.is_zero() || cur > most || cur + 2 * TICK < most {
                    // Whole ticks, rounded down: a next receive with the
                    // same timeout finds it still fits.
                    let ticks = most.as_millis() / TICK.as_millis();
                    let set = TICK * ticks as u32;
                    sys::socket::set_rcvtimeo(fd, set)?;
                    self.0 = set;
                }
                Ok(0)
            }
        }
    }
}

/// The flag for a socket call that has no timeout of its own (sends).
fn dontwait(mode: Mode) -> libc::c_int {
    if mode.nonblocking() {
        libc::MSG_DONTWAIT
    } else {
        0
    }
}

/// The kernel rounds `SO_RCVTIMEO` up to a clock tick (10 ms at `HZ=100`,
/// the coarsest): the socket's timeout is set a tick short of the
/// deadline, so that a receive never wakes late; short waits go to `poll`.
const TICK: Duration = Duration::from_millis(10);

/// Bytes and descriptors from one read.
pub(crate) struct Chunk {
    pub(crate) len: usize,
    pub(crate) fds: Vec<OwnedFd>,
}

impl FdIo {
    pub(crate) fn new(fd: OwnedFd, kind: Kind) -> io::Result<Self> {
        let nonblocking = sys::fd::is_nonblocking(fd.as_fd())?;
        if kind != Kind::Pipe && nonblocking {
            // Sockets stay blocking; per-call flags choose the mode.
            sys::fd::set_nonblocking(fd.as_fd(), false)?;
        }
        Ok(FdIo {
            fd,
            kind,
            nonblocking: nonblocking && kind == Kind::Pipe,
            guard_sigpipe: kind == Kind::Pipe && sys::process::sigpipe_is_default(),
            recv_fds: false,
            rcvtimeo: RecvTimeout::default(),
        })
    }

    /// A second `FdIo` on a duplicate of a socket's descriptor (`dup(2)`),
    /// for the other direction when a connection is split into halves.
    /// Sockets take per-call flags, so the two share no mode state; the
    /// socket's `SO_RCVTIMEO` is only ever set by the receiving half.
    pub(crate) fn try_clone_socket(&self) -> io::Result<Self> {
        debug_assert!(self.kind != Kind::Pipe, "O_NONBLOCK would be shared");
        Ok(FdIo {
            fd: self.fd.try_clone()?,
            kind: self.kind,
            nonblocking: false,
            guard_sigpipe: false,
            recv_fds: false,
            rcvtimeo: RecvTimeout::default(),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether stream reads take the descriptors that come with the bytes.
    pub(crate) fn recv_fds(&self) -> bool {
        self.recv_fds
    }

    /// From now on stream reads take descriptors (Unix sockets only); when
    /// off, the kernel closes descriptors that arrive with the bytes.
    pub(crate) fn set_recv_fds(&mut self, on: bool) {
        self.recv_fds = on && self.kind == Kind::UnixSocket;
    }

    /// The flags for a socket receive in `mode` ([`RecvTimeout::flags`]).
    #[inline]
    fn recv_flags(&mut self, mode: Mode) -> io::Result<libc::c_int> {
        self.rcvtimeo.flags(self.fd.as_fd(), mode)
    }

    #[inline]
    fn pipe_mode(&mut self, mode: Mode) -> io::Result<()> {
        let want = mode.nonblocking();
        if self.nonblocking != want {
            sys::fd::set_nonblocking(self.fd.as_fd(), want)?;
            self.nonblocking = want;
        }
        Ok(())
    }

    /// Appends up to `want` bytes to `v` where no descriptor can come
    /// with them (a pipe, TCP, or a Unix stream not taking descriptors);
    /// `0` means end of stream.
    #[inline]
    pub(crate) fn read_plain(
        &mut self,
        v: &mut Vec<u8>,
        want: usize,
        mode: Mode,
    ) -> io::Result<usize> {
        debug_assert!(!self.recv_fds);
        match self.kind {
            Kind::Pipe => {
                self.pipe_mode(mode)?;
                sys::fd::read_spare(self.fd.as_fd(), v, want)
            }
            Kind::InetSocket | Kind::UnixSocket => {
                let flags = self.recv_flags(mode)?;
                sys::socket::recv_spare(self.fd.as_fd(), v, want, flags)
            }
        }
    }

    /// Appends up to `want` bytes to `v`, with the descriptors that came
    /// with them; `len == 0` means end of stream.
    pub(crate) fn read_spare(
        &mut self,
        v: &mut Vec<u8>,
        want: usize,
        mode: Mode,
    ) -> io::Result<Chunk> {
        match self.kind {
            // No descriptors possible or wanted: plain read or recv.
            _ if !self.recv_fds => Ok(Chunk {
                len: self.read_plain(v, want, mode)?,
                fds: Vec::new(),
            }),
            // A Unix socket taking descriptors.
            _ => {
                let flags = self.recv_flags(mode)?;
                let r = sys::socket::recvmsg_spare(self.fd.as_fd(), v, want, flags, true)?;
                if r.fds_truncated {
                    return Err(io::Error::other(format!(
                        "the peer sent more descriptors than one message may carry ({}); \
                         the extra ones were closed by the kernel",
                        sys::socket::MAX_FDS
                    )));
                }
                Ok(Chunk {
                    len: r.len,
                    fds: r.fds,
                })
            }
        }
    }

    /// Receives one datagram: appends up to `want` bytes to `v`, and
    /// returns the datagram's real length (`MSG_TRUNC`).
    pub(crate) fn recv_datagram(
        &mut self,
        v: &mut Vec<u8>,
        want: usize,
        peek: bool,
        mode: Mode,
    ) -> io::Result<Chunk> {
        self.recv_datagram_fds(v, want, peek, mode, true)
    }

    /// [`recv_datagram`](Self::recv_datagram); without `with_fds` no
    /// control buffer is given, and the kernel closes descriptors that came
    /// with the datagram (cheaper, for callers that would close them).
    pub(crate) fn recv_datagram_fds(
        &mut self,
        v: &mut Vec<u8>,
        want: usize,
        peek: bool,
        mode: Mode,
        with_fds: bool,
    ) -> io::Result<Chunk> {
        let mut flags = libc::MSG_TRUNC | self.recv_flags(mode)?;
        if peek {
            flags |= libc::MSG_PEEK;
        }
        if !with_fds || self.kind != Kind::UnixSocket {
            // No descriptors wanted or possible: plain recv, no msghdr.
            let len = sys::socket::recv_spare(self.fd.as_fd(), v, want, flags)?;
            return Ok(Chunk {
                len,
                fds: Vec::new(),
            });
        }
        let fds = true;
        let r = sys::socket::recvmsg_spare(self.fd.as_fd(), v, want, flags, fds)?;
        Ok(Chunk {
            len: r.len,
            fds: r.fds,
        })
    }

    /// Writes one buffer (one `write` or `send`: cheaper in the kernel than
    /// a `writev` of several slices).
    #[inline]
    pub(crate) fn write(&mut self, buf: &[u8], mode: Mode) -> io::Result<usize> {
        match self.kind {
            Kind::Pipe => {
                self.pipe_mode(mode)?;
                if self.guard_sigpipe {
                    sys::process::without_sigpipe(|| sys::fd::write(self.fd.as_fd(), buf))
                } else {
                    sys::fd::write(self.fd.as_fd(), buf)
                }
            }
            Kind::UnixSocket | Kind::InetSocket => {
                sys::socket::send(self.fd.as_fd(), buf, dontwait(mode))
            }
        }
    }

    /// Writes from `bufs` (one system call), with descriptors if any.
    pub(crate) fn writev(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        mode: Mode,
    ) -> io::Result<usize> {
        match self.kind {
            Kind::Pipe => {
                debug_assert!(fds.is_empty(), "pipes cannot carry descriptors");
                self.pipe_mode(mode)?;
                guarded_writev(self.fd.as_fd(), bufs, self.guard_sigpipe)
            }
            Kind::UnixSocket | Kind::InetSocket => {
                sys::socket::sendmsg(self.fd.as_fd(), bufs, fds, dontwait(mode))
            }
        }
    }
}

fn guarded_writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], guard: bool) -> io::Result<usize> {
    if guard {
        sys::process::without_sigpipe(|| sys::fd::writev(fd, bufs))
    } else {
        sys::fd::writev(fd, bufs)
    }
}

/// A write to a pipe that reports a missing reader as `EPIPE` and never
/// lets `SIGPIPE` kill the process.
pub(crate) fn write_pipe(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    guarded_writev(fd, bufs, sys::process::sigpipe_is_default())
}

impl AsFd for FdIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
