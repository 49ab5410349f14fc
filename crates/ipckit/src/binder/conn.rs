//! One socket connection of a session: whole messages in, whole messages
//! out.
//!
//! Reads take whatever the socket holds (up to 64 KiB) in one `recvmsg`
//! and cut messages from it, so a reply and the reference-count message
//! before it cost one system call. Descriptors arrive with the socket
//! buffer that carried them; Linux ends a `recvmsg` right after a buffer
//! with descriptors (`unix_stream_read_generic`), and each message is
//! written with one `sendmsg` whose descriptors ride on its first byte,
//! so the descriptors of a read belong to the message holding the last
//! byte read. Each is kept with that offset and handed to that message.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;
use std::time::Instant;

use super::status::{Error, Result, Status};
use super::wire;
use crate::fdio::RecvTimeout;
use crate::sys::fd::{poll, Interest};
use crate::sys::socket as sock;
use crate::wait::Mode;

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// A message read from a connection.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) command: u32,
    pub(crate) body: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

#[derive(Debug, Default)]
struct ReadBuf {
    buf: Vec<u8>,
    /// First unread byte of `buf`.
    head: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Received descriptors, each with the stream offset of the last byte
    /// of the read that brought it.
    fds: VecDeque<(u64, OwnedFd)>,
    /// The socket's receive timeout: a wait with a deadline is one
    /// blocking `recvmsg`, not a `poll` and a `recvmsg`.
    timeout: RecvTimeout,
}

/// A connection: the socket, a lock for whole-message writes and the read
/// state (used by one thread at a time: whoever holds the connection).
#[derive(Debug)]
pub(crate) struct Conn {
    fd: OwnedFd,
    write: Mutex<()>,
    read: Mutex<ReadBuf>,
    /// Replies still to come for calls that timed out: the next user reads
    /// and drops them first.
    pub(crate) abandoned: AtomicU32,
}

impl Conn {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Conn {
            fd,
            write: Mutex::new(()),
            read: Mutex::new(ReadBuf::default()),
            abandoned: AtomicU32::new(0),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Wakes whoever reads or writes it: both directions shut down.
    pub(crate) fn shutdown(&self) {
        let _ = sock::shutdown_both(self.fd.as_fd());
    }

    /// Writes `parts` as one message, with `fds` on its first byte,
    /// blocking while the socket is full: only where the peer is known to
    /// be reading.
    pub(crate) fn write(&self, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<()> {
        self.write_with(parts, fds, None)
    }

    /// [`write`](Self::write) that, while the socket is full, runs
    /// `drain` (which reads what the peer sent meanwhile: a peer blocked
    /// writing to us does not read) and waits to be writable or readable.
    /// For the holder of the connection only.
    pub(crate) fn write_with(
        &self,
        parts: &[&[u8]],
        fds: &[OwnedFd],
        mut drain: Option<&mut dyn FnMut() -> Result<()>>,
    ) -> Result<()> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let mut sent = 0usize;
        let mut first = true;
        while sent < total {
            // The slices from `sent` on.
            let mut skip = sent;
            let mut slices = Vec::with_capacity(parts.len());
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                slices.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
            let with = if first { &borrowed[..] } else { &[][..] };
            let flags = if drain.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
            match sock::sendmsg(self.fd.as_fd(), &slices, with, flags) {
                Ok(n) => {
                    sent += n;
                    first = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(d) = drain.as_mut() {
                        d()?;
                    }
                    poll(self.fd.as_fd(), Interest::ReadWrite, None)
                        .map_err(|e| Error::io(e, "cannot wait for the binder peer"))?;
                }
                Err(e) => return Err(Error::io(e, "cannot send to the binder peer")),
            }
        }
        Ok(())
    }

    /// Writes a small message if the socket has room now: `Ok(false)`,
    /// nothing written, if it has not.
    pub(crate) fn try_write(&self, msg: &[u8]) -> Result<bool> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match sock::send(self.fd.as_fd(), msg, libc::MSG_DONTWAIT) {
                Ok(n) if n == msg.len() => return Ok(true),
                Ok(n) => {
                    // A stream may take part of it: the rest must follow.
                    drop(_g);
                    return self.write(&[&msg[n..]], &[]).map(|()| true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(Error::io(e, "cannot send to the binder peer")),
            }
        }
    }

    /// Reads exactly `N` bytes (connection set-up structures).
    pub(crate) fn read_exact<const N: usize>(&self, deadline: Option<Instant>) -> Result<[u8; N]> {
        let mut r = self.read.lock().unwrap_or_else(|p| p.into_inner());
        self.fill(&mut r, N, deadline)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&r.buf[r.head..r.head + N]);
        r.head += N;
        Ok(out)
    }

    /// Reads the next message, refusing a body above `max_body` bytes
    /// before reading it.
    pub(crate) fn read_message(
        &self,
        deadline: Option<Instant>,
        max_body: usize,
    ) -> Result<Message> {
        let mut r = self.read.lock().unwrap_or_else(|p| p.into_inner());
        self.fill(&mut r, wire::WIRE_HEADER_LEN, deadline)?;
        let h: [u8; wire::WIRE_HEADER_LEN] = r.buf[r.head..r.head + wire::WIRE_HEADER_LEN]
            .try_into()
            .expect("16 bytes");
        let (command, size) = wire::decode_header(&h);
        let size = size as usize;
        if size > max_body {
            return Err(Error::new(
                Status::NoMemory,
                format!(
                    "the peer announced a {size}-byte message; the limit is {max_body} bytes \
                     (raise it with max_parcel on both sides)"
                ),
            ));
        }
        let total = wire::WIRE_HEADER_LEN + size;
        self.fill(&mut r, total, deadline)?;
        let start = r.head + wire::WIRE_HEADER_LEN;
        let body = r.buf[start..r.head + total].to_vec();
        let end = r.base + (r.head + total) as u64;
        r.head += total;
        let mut fds = Vec::new();
        while r.fds.front().is_some_and(|(at, _)| *at < end) {
            fds.push(r.fds.pop_front().expect("checked").1);
        }
        Ok(Message { command, body, fds })
    }

    /// Makes `need` unread bytes available, reading as needed.
    fn fill(&self, r: &mut ReadBuf, need: usize, deadline: Option<Instant>) -> Result<()> {
        if r.buf.len() - r.head >= need {
            return Ok(());
        }
        // Move what is unread to the front.
        if r.head > 0 {
            let head = r.head;
            r.buf.drain(..head);
            r.base += head as u64;
            r.head = 0;
        }
        let timed_out = || Error::new(Status::TimedOut, "timed out waiting for the peer");
        let mode = deadline.map_or(Mode::Blocking, Mode::Until);
        while r.buf.len() < need {
            let flags = r
                .timeout
                .flags(self.fd.as_fd(), mode)
                .map_err(|e| Error::io(e, "cannot set the binder socket's timeout"))?;
            if flags & libc::MSG_DONTWAIT != 0 {
                // Too close to the deadline for the socket's timeout.
                let ready = poll(self.fd.as_fd(), Interest::Read, deadline)
                    .map_err(|e| Error::io(e, "cannot wait for the binder peer"))?;
                if !ready {
                    return Err(timed_out());
                }
            }
            let want = (need - r.buf.len()).max(READ_CHUNK);
            match sock::recvmsg_spare(self.fd.as_fd(), &mut r.buf, want, flags, true) {
                Ok(got) if got.len == 0 => {
                    return Err(Error::dead("the peer closed the connection"));
                }
                Ok(got) => {
                    if got.fds_truncated {
                        return Err(Error::bad(
                            "descriptors the peer sent were dropped by the kernel: more than one \
                             message may carry, or this process is at its open-file limit \
                             (RLIMIT_NOFILE, `ulimit -n`)",
                        ));
                    }
                    let last = r.base + r.buf.len() as u64 - 1;
                    r.fds.extend(got.fds.into_iter().map(|f| (last, f)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket's timeout, set a little short of the
                    // deadline, or a stale one from an earlier wait.
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(timed_out());
                    }
                }
                Err(e) => return Err(Error::io(e, "cannot read from the binder peer")),
            }
        }
        Ok(())
    }
}
