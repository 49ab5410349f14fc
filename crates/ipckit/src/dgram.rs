//! Message I/O on sockets that keep message boundaries themselves
//! (`SOCK_DGRAM`, `SOCK_SEQPACKET`, UDP).
//!
//! A receive learns the datagram's real length with `MSG_TRUNC` and never
//! truncates silently:
//! - when `max_message_size` is at most [`DIRECT_LIMIT`], one `recvmsg`
//!   reads straight into a buffer of that size; a longer datagram is
//!   reported as [`MessageTooLarge`] (and is gone, as the kernel dropped it);
//! - otherwise the length is peeked first (`MSG_PEEK | MSG_TRUNC`), checked
//!   against the limit, and only then is room made for it. A refused
//!   datagram is discarded, and the next receive gets the next one.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::error::{MessageTooLarge, RecvTimeoutError, SendTimeoutError};
use crate::fdio::FdIo;
use crate::frame::{recv_failure, send_failure, DEFAULT_MAX_MESSAGE_SIZE};
use crate::message::Deadline;
use crate::sys::fd::Interest;
use crate::wait::{wait_io, Mode, WaitStrategy};

/// Limits up to which a receive reads directly, in one system call.
pub const DIRECT_LIMIT: usize = 64 << 10;

#[derive(Debug)]
pub(crate) struct DgramIo {
    pub(crate) io: FdIo,
    pub(crate) max: usize,
    pub(crate) wait: WaitStrategy,
    /// `SOCK_SEQPACKET`: an empty read is the end of the connection, so an
    /// empty message cannot be sent.
    pub(crate) seqpacket: bool,
}

impl DgramIo {
    pub(crate) fn new(io: FdIo, seqpacket: bool) -> Self {
        DgramIo {
            io,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            wait: WaitStrategy::default(),
            seqpacket,
        }
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
            |io, mode| io.writev(&[IoSlice::new(msg)], fds, mode),
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
        let direct = max <= DIRECT_LIMIT;
        // First call: the real read (direct) or the peek (otherwise).
        let first = wait_io(
            &mut self.io,
            Interest::Read,
            self.wait,
            deadline,
            |io, mode| {
                if direct {
                    io.recv_datagram(out, max, false, mode)
                } else {
                    io.recv_datagram(out, 0, true, mode)
                }
            },
        )
        .map_err(recv_failure)?;
        let mut chunk = first;
        if !direct {
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
}
