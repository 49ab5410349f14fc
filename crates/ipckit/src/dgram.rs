//! Message I/O on sockets that keep message boundaries themselves
//! (`SOCK_DGRAM`, `SOCK_SEQPACKET`, UDP).
//!
//! A receive learns the datagram's real length with `MSG_TRUNC` and never
//! truncates silently. It takes one `recvmsg` when it can:
//! - the buffer read into is as large as the smaller of
//!   `max_message_size` and the largest datagram the kernel delivers on
//!   this kind of socket (UDP: 65 535 bytes; `AF_UNIX`: the sender's send
//!   buffer, at most twice `net.core.wmem_max`), so every datagram that
//!   can arrive fits. It is a buffer of the socket's own, reused, copied
//!   into the caller's `Vec` unless that already has the room; so `recv`
//!   never hands out a `Vec` with a large unused capacity;
//! - a datagram over `max_message_size` is reported as
//!   [`MessageTooLarge`] (it is gone: the kernel dropped what did not fit),
//!   and the next receive gets the next one;
//! - when that buffer would be larger than [`DIRECT_LIMIT`] (a much
//!   raised `wmem_max`), the length is peeked first (`MSG_PEEK | MSG_TRUNC`),
//!   checked against the limit, and only then is room made for it: two
//!   system calls.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use crate::error::{MessageTooLarge, RecvTimeoutError, SendTimeoutError};
use crate::fdio::{FdIo, Kind};
use crate::frame::{recv_failure, send_failure, DEFAULT_MAX_MESSAGE_SIZE};
use crate::message::Deadline;
use crate::sys::fd::Interest;
use crate::wait::{wait_io, Mode, WaitStrategy};

/// The largest receive buffer a datagram socket reads into directly, in
/// one system call (see the module docs); above it, receives peek first.
/// The buffer is address space: only the bytes datagrams fill are ever
/// touched, so a socket costs memory for what it receives, not for this.
pub const DIRECT_LIMIT: usize = 16 << 20;

/// The largest datagram the kernel delivers on sockets of `kind`, as a
/// receiver can know it: UDP's 65 535 bytes; for `AF_UNIX`, the sender's
/// send buffer, which `SO_SNDBUF` sets to at most twice
/// `net.core.wmem_max` (a privileged sender's `SO_SNDBUFFORCE` can go
/// further: such a datagram is reported, not cut silently).
fn largest_datagram(kind: Kind) -> usize {
    static UNIX: OnceLock<usize> = OnceLock::new();
    match kind {
        Kind::InetSocket => 65_535,
        Kind::UnixSocket => *UNIX.get_or_init(|| {
            let wmem = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(212_992);
            wmem.saturating_mul(2)
        }),
        Kind::Pipe => usize::MAX,
    }
}

#[derive(Debug)]
pub(crate) struct DgramIo {
    pub(crate) io: FdIo,
    pub(crate) max: usize,
    pub(crate) wait: WaitStrategy,
    /// `SOCK_SEQPACKET`: an empty read is the end of the connection, so an
    /// empty message cannot be sent.
    pub(crate) seqpacket: bool,
    /// The receive buffer, reused (see the module docs).
    rbuf: Vec<u8>,
}

impl DgramIo {
    pub(crate) fn new(io: FdIo, seqpacket: bool) -> Self {
        DgramIo {
            io,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            wait: WaitStrategy::default(),
            seqpacket,
            rbuf: Vec::new(),
        }
    }

    /// A sending and a receiving half over one socket (see
    /// `FdIo::try_clone_socket`).
    pub(crate) fn split(self) -> io::Result<(DgramIo, DgramIo)> {
        let sending = DgramIo {
            io: self.io.try_clone_socket()?,
            max: self.max,
            wait: self.wait,
            seqpacket: self.seqpacket,
            rbuf: Vec::new(),
        };
        Ok((sending, self))
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub(crate) fn send(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        if self.seqpacket && msg.is_empty() {
            return Err(SendTimeoutError::Io(
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a SOCK_SEQPACKET socket cannot carry an empty message: the receiver \
                     could not tell it from the end of the connection",
                ),
                (),
            ));
        }
        let res = wait_io(
            &mut self.io,
            Interest::Write,
            self.wait,
            deadline,
            |io, mode| {
                if fds.is_empty() {
                    io.write(msg, mode) // send: no msghdr to build and copy in
                } else {
                    io.writev(&[IoSlice::new(msg)], fds, mode)
                }
            },
        );
        match res {
            Ok(_) => Ok(()),
            Err(crate::wait::WaitError::Io(e)) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                Err(SendTimeoutError::Io(
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        match self.io.kind() {
                            crate::fdio::Kind::InetSocket => format!(
                                "a datagram of {} bytes is larger than UDP can carry \
                                 (65507 bytes over IPv4)",
                                msg.len()
                            ),
                            _ => format!(
                                "a message of {} bytes is larger than this Unix socket can \
                                 send at once (bounded by SO_SNDBUF, see \
                                 /proc/sys/net/core/wmem_max)",
                                msg.len()
                            ),
                        },
                    ),
                    (),
                ))
            }
            Err(e) => Err(send_failure(e)),
        }
    }

    pub(crate) fn recv(
        &mut self,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let max = self.max;
        out.clear();
        let cap = max.min(largest_datagram(self.io.kind()));
        if cap <= DIRECT_LIMIT {
            return self.recv_direct(out, fds, cap, deadline);
        }
        // A buffer that large is not kept around: peek at the length first.
        let first = wait_io(
            &mut self.io,
            Interest::Read,
            self.wait,
            deadline,
            |io, mode| io.recv_datagram(out, 0, true, mode),
        )
        .map_err(recv_failure)?;
        let mut chunk = first;
        {
            let len = chunk.len;
            if len > max {
                // Discard it: a zero-length read consumes the datagram.
                let _ = self.io.recv_datagram(out, 0, false, Mode::NonBlocking);
                return Err(RecvTimeoutError::Io(
                    MessageTooLarge {
                        len: len as u64,
                        max,
                        unit: crate::error::Unit::Message,
                    }
                    .into_io(),
                ));
            }
            chunk = self
                .io
                .recv_datagram(out, len, false, Mode::NonBlocking)
                .map_err(RecvTimeoutError::Io)?;
            if chunk.len > len {
                out.clear();
                return Err(RecvTimeoutError::Io(io::Error::other(
                    "a different datagram arrived between peek and read: is another \
                     process reading from this socket?",
                )));
            }
        }
        if chunk.len > max {
            out.clear();
            return Err(RecvTimeoutError::Io(
                MessageTooLarge {
                    len: chunk.len as u64,
                    max,
                    unit: crate::error::Unit::Message,
                }
                .into_io(),
            ));
        }
        if self.seqpacket && chunk.len == 0 {
            return Err(RecvTimeoutError::Disconnected);
        }
        if let Some(dst) = fds {
            dst.extend(chunk.fds);
        }
        Ok(())
    }

    /// One `recvmsg` into a buffer of `cap` bytes: the caller's if it has
    /// the room, else the socket's own, then copied.
    fn recv_direct(
        &mut self,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        cap: usize,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let into_out = out.capacity() >= cap;
        let buf = if into_out { &mut *out } else { &mut self.rbuf };
        buf.clear();
        // Each datagram stands alone: a caller that takes no descriptors
        // needs no control buffer (the kernel closes any that came).
        let with_fds = fds.is_some();
        let chunk = wait_io(
            &mut self.io,
            Interest::Read,
            self.wait,
            deadline,
            |io, mode| io.recv_datagram_fds(buf, cap, false, mode, with_fds),
        )
        .map_err(recv_failure)?;
        let len = chunk.len;
        if len > self.max {
            out.clear();
            return Err(RecvTimeoutError::Io(
                MessageTooLarge {
                    len: len as u64,
                    max: self.max,
                    unit: crate::error::Unit::Message,
                }
                .into_io(),
            ));
        }
        if len > cap {
            out.clear();
            return Err(RecvTimeoutError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a datagram of {len} bytes arrived, more than a socket of this kind sends \
                     unless forced ({cap} bytes, twice net.core.wmem_max): it was cut and is \
                     lost; raise /proc/sys/net/core/wmem_max"
                ),
            )));
        }
        if self.seqpacket && len == 0 {
            return Err(RecvTimeoutError::Disconnected);
        }
        if !into_out {
            out.extend_from_slice(&self.rbuf[..len]);
        }
        if let Some(dst) = fds {
            dst.extend(chunk.fds);
        }
        Ok(())
    }
}
