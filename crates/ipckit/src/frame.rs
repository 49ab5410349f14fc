//! Message framing for byte-stream mechanisms (pipes, FIFOs, Unix stream
//! and TCP sockets).
//!
//! # Wire format
//!
//! A message is a `u32` little-endian length followed by that many bytes.
//! Nothing else: any program can speak it (`printf '\x05\0\0\0hello'`).
//!
//! # Guarantees
//!
//! - The receiver checks the announced length against its
//!   `max_message_size` ([`DEFAULT_MAX_MESSAGE_SIZE`] unless changed) before
//!   allocating anything. A larger length is refused with
//!   [`MessageTooLarge`]; the stream cannot be resynchronised after that, so
//!   every later receive fails too.
//! - Short reads and writes are resumed. A peer that closes the stream in
//!   the middle of a frame is reported as an
//!   [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) error, never as a
//!   shorter message.
//! - A receive that times out in the middle of a frame keeps what it has
//!   read; the next receive continues the same frame.
//! - A send writes the whole frame with one `writev`. On a pipe, a frame of
//!   at most `PIPE_BUF` (4096) bytes, header included, is written
//!   atomically, so several writers never interleave such messages.
//! - No deadline is overrun, and dropping a stream never blocks. A send
//!   either does not start (and hands the message back as
//!   `Full`/`Timeout`) or writes the whole frame. If a timed send runs out
//!   of time after part of a frame was written, the rest is abandoned with
//!   an error that says so, and the stream is closed (a socket is shut
//!   down): a half-written frame would corrupt everything after it, and
//!   the peer reads the message cut short, then end-of-file. Only a
//!   non-blocking send (`try_send`) keeps the tail of a frame it started;
//!   the next send (or `flush`) finishes it first, and a tail still
//!   unwritten at drop is abandoned.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{classify, Failure, MessageTooLarge, RecvTimeoutError, SendTimeoutError};
use crate::fdio::{FdIo, Kind};
use crate::message::Deadline;
use crate::sys::fd::Interest;
use crate::wait::{immediate_mode, wait_io, wait_io_again, SpinBudget, WaitError, WaitStrategy};

/// The default largest message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// How messages are delimited on a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// A `u32` little-endian length, then the payload (the default).
    #[default]
    LengthPrefixed,
    /// One message per line, ended by `\n` (which is not part of the
    /// message), for talking to text tools: `cat`, `socat`, `nc`, shells.
    /// A message cannot contain `\n`; a last line without one still counts.
    Lines,
}

/// Read-ahead buffer size: frames that fit are parsed out of it without
/// another system call.
const READ_BUF: usize = 128 << 10;

fn too_big_to_send(len: usize, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "message of {len} bytes exceeds max_message_size of {max} bytes; the receiver would \
             refuse it (raise set_max_message_size on both ends)"
        ),
    )
}

/// Checks a message against the sender's limit.
pub(crate) fn check_send_len(len: usize, max: usize) -> Result<(), SendTimeoutError<()>> {
    if len > max || len > u32::MAX as usize {
        return Err(SendTimeoutError::Io(
            too_big_to_send(len, max.min(u32::MAX as usize)),
            (),
        ));
    }
    Ok(())
}

/// Turns a failed wait into a send error.
pub(crate) fn send_failure(e: WaitError) -> SendTimeoutError<()> {
    match e {
        WaitError::Timeout => SendTimeoutError::Timeout(()),
        WaitError::Io(e) => match classify(e) {
            Failure::Disconnected => SendTimeoutError::Disconnected(()),
            Failure::WouldBlock => SendTimeoutError::Timeout(()),
            Failure::Other(e) => SendTimeoutError::Io(e, ()),
        },
    }
}

/// Turns a failed wait into a receive error.
pub(crate) fn recv_failure(e: WaitError) -> RecvTimeoutError {
    match e {
        WaitError::Timeout => RecvTimeoutError::Timeout,
        WaitError::Io(e) => match classify(e) {
            Failure::Disconnected => RecvTimeoutError::Disconnected,
            Failure::WouldBlock => RecvTimeoutError::Timeout,
            Failure::Other(e) => RecvTimeoutError::Io(e),
        },
    }
}

/// "got X of Y payload bytes" (or of the header), for error messages;
/// `got` and `of` count the whole frame, header included.
fn progress(got: usize, of: usize) -> String {
    if got < HEADER_LEN {
        format!("got {got} of the {HEADER_LEN} header bytes")
    } else {
        format!(
            "got {} of {} payload bytes",
            got - HEADER_LEN,
            of - HEADER_LEN
        )
    }
}

/// Frames up to this size are copied into one buffer and written with one
/// `write` (at most `PIPE_BUF`, so that they stay atomic on a pipe).
const SMALL_FRAME: usize = 4096;

/// The sending half of a framed stream.
///
/// A frame is sent whole or the stream is given up: when a send with a
/// deadline (or none) cannot finish a frame it started, the rest is
/// abandoned, the stream is marked broken (and a socket shut down, so the
/// peer reads end-of-file mid-message), and every later send fails saying
/// why. Only a non-blocking send (`try_send`, [`Deadline::Now`]) keeps the
/// tail of a frame it started, for the next operation to finish first; a
/// tail still unwritten when the stream is dropped is abandoned too. So no
/// deadline is ever overrun, and dropping never blocks.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    /// The unwritten tail of a frame a non-blocking send started.
    pending: Vec<u8>,
    /// A small frame, assembled to go in one `write`.
    scratch: Vec<u8>,
    /// Why the stream can no longer carry whole messages.
    broken: Option<String>,
    pub(crate) max: usize,
    pub(crate) framing: Framing,
}

impl FrameWriter {
    pub(crate) fn new() -> Self {
        FrameWriter {
            pending: Vec::new(),
            scratch: Vec::new(),
            broken: None,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            framing: Framing::LengthPrefixed,
        }
    }

    /// Gives the stream up after a frame was cut short: later sends fail,
    /// and a socket is shut down so that the peer learns at once.
    fn abandon(&mut self, io: &mut FdIo, why: String) -> SendTimeoutError<()> {
        self.pending.clear();
        if io.kind() != Kind::Pipe {
            let _ = crate::sys::socket::shutdown_both(io.fd());
        }
        let e = io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{why}: the rest of the message was abandoned and the connection closed (a byte \
                 stream cannot carry part of a message)"
            ),
        );
        self.broken = Some(e.to_string());
        SendTimeoutError::Io(e, ())
    }

    /// Writes the pending tail, if any, before `deadline`.
    fn flush_until(
        &mut self,
        io: &mut FdIo,
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        while !self.pending.is_empty() {
            let pending = &self.pending;
            match wait_io(io, Interest::Write, strategy, deadline, |io, mode| {
                io.writev(&[IoSlice::new(pending)], &[], mode)
            }) {
                Ok(n) => drop(self.pending.drain(..n)),
                // Still pending: a non-blocking call may try again later.
                Err(WaitError::Timeout) if deadline == Deadline::Now => {
                    return Err(SendTimeoutError::Timeout(()))
                }
                Err(WaitError::Timeout) => {
                    let left = self.pending.len();
                    return Err(self.abandon(
                        io,
                        format!(
                            "timed out with {left} bytes of an earlier message (started by a \
                             non-blocking send) still unwritten"
                        ),
                    ));
                }
                Err(e) => return Err(send_failure(e)),
            }
        }
        Ok(())
    }

    /// Blocks until any pending tail is written.
    pub(crate) fn flush(&mut self, io: &mut FdIo, strategy: WaitStrategy) -> io::Result<()> {
        self.flush_until(io, strategy, Deadline::Never)
            .map_err(io::Error::from)
    }

    /// Sends one frame, with `fds` attached to its first byte.
    #[inline]
    pub(crate) fn send(
        &mut self,
        io: &mut FdIo,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        // The common case first: a small length-prefixed frame, nothing
        // pending, no descriptors: assembled in one buffer (copying it costs
        // less than the kernel's handling of slices) and one write.
        if self.framing == Framing::LengthPrefixed
            && fds.is_empty()
            && self.pending.is_empty()
            && self.broken.is_none()
            && msg.len() <= SMALL_FRAME - HEADER_LEN
            && msg.len() <= self.max
        {
            self.scratch.clear();
            self.scratch
                .extend_from_slice(&(msg.len() as u32).to_le_bytes());
            self.scratch.extend_from_slice(msg);
            let first = io.write(&self.scratch, immediate_mode(strategy, deadline));
            if matches!(first, Ok(n) if n == msg.len() + HEADER_LEN) {
                return Ok(());
            }
            return self.send_general(io, msg, fds, strategy, deadline, Some(first));
        }
        self.send_general(io, msg, fds, strategy, deadline, None)
    }

    /// [`send`](Self::send) in general; `first` is the result of the fast
    /// path's write, if it made one.
    #[inline(never)]
    fn send_general(
        &mut self,
        io: &mut FdIo,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        strategy: WaitStrategy,
        deadline: Deadline,
        first: Option<io::Result<usize>>,
    ) -> Result<(), SendTimeoutError<()>> {
        if let Some(why) = &self.broken {
            return Err(SendTimeoutError::Io(
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("this stream can no longer carry whole messages ({why})"),
                ),
                (),
            ));
        }
        check_send_len(msg.len(), self.max)?;
        let header = (msg.len() as u32).to_le_bytes();
        let parts: [&[u8]; 3] = match self.framing {
            Framing::LengthPrefixed => [&header, msg, &[]],
            Framing::Lines => {
                if msg.contains(&b'\n') {
                    return Err(SendTimeoutError::Io(
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "in line mode a message cannot contain a newline",
                        ),
                        (),
                    ));
                }
                [&[], msg, b"\n"]
            }
        };
        let total = parts.iter().map(|p| p.len()).sum::<usize>();
        let mut written = 0;
        // Nothing pending, no descriptors: one attempt without the waiting
        // machinery (unless the fast path made it); if it could not start,
        // the loop below waits before trying again.
        let mut missed = false;
        if self.pending.is_empty() && fds.is_empty() {
            let mode = immediate_mode(strategy, deadline);
            let res = if let Some(res) = first {
                res
            } else if total <= SMALL_FRAME {
                self.scratch.clear();
                for p in parts {
                    self.scratch.extend_from_slice(p);
                }
                io.write(&self.scratch, mode)
            } else {
                let slices = [
                    IoSlice::new(parts[0]),
                    IoSlice::new(parts[1]),
                    IoSlice::new(parts[2]),
                ];
                io.writev(&slices, &[], mode)
            };
            match res {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => missed = true,
                Err(e) => return Err(send_failure(WaitError::Io(e))),
            }
        } else {
            self.flush_until(io, strategy, deadline)?;
        }
        while written < total {
            let attach = if written == 0 { fds } else { &[] };
            let write = |io: &mut FdIo, mode| io.writev(&remaining(&parts, written), attach, mode);
            let res = if std::mem::take(&mut missed) {
                wait_io_again(io, Interest::Write, strategy, deadline, write)
            } else {
                wait_io(io, Interest::Write, strategy, deadline, write)
            };
            match res {
                Ok(n) => written += n,
                Err(WaitError::Timeout) if written > 0 && deadline == Deadline::Now => {
                    // A non-blocking send started the frame: keep the tail
                    // for the next operation.
                    for part in remaining(&parts, written) {
                        self.pending.extend_from_slice(&part);
                    }
                    return Ok(());
                }
                Err(WaitError::Timeout) if written > 0 => {
                    return Err(self.abandon(
                        io,
                        format!(
                            "timed out after writing {written} of the {total} bytes of a message"
                        ),
                    ));
                }
                Err(e) => {
                    let err = send_failure(e);
                    if written > 0 {
                        // The stream is now mid-frame; say so rather than
                        // handing back a message that was partly sent.
                        return Err(SendTimeoutError::Io(
                            io::Error::new(
                                io::ErrorKind::BrokenPipe,
                                format!(
                                    "the stream failed after {written} of {total} bytes of a frame \
                                     were written: {err}"
                                ),
                            ),
                            (),
                        ));
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// On drop: one non-blocking attempt to finish a pending tail; what
    /// cannot be written at once is abandoned (the peer reads a message cut
    /// short, then end-of-file).
    fn finish_without_waiting(&mut self, io: &mut FdIo, strategy: WaitStrategy) {
        let _ = self.flush_until(io, strategy, Deadline::Now);
    }
}

/// The parts of a frame not yet written, after `written` bytes.
fn remaining<'a>(parts: &[&'a [u8]; 3], mut written: usize) -> [IoSlice<'a>; 3] {
    parts.map(|p| {
        let skip = written.min(p.len());
        written -= skip;
        IoSlice::new(&p[skip..])
    })
}

/// The receiving half of a framed stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Read-ahead buffer; bytes `start..buf.len()` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    /// A frame too large for `buf`, read directly: (payload so far, length).
    large: Option<(Vec<u8>, usize)>,
    /// Stream offset of `buf[start]`, and of the end of everything read.
    pos: u64,
    read_end: u64,
    /// Descriptors received, keyed by the stream offset of the last byte of
    /// the read that delivered them (the kernel ends a read there).
    fds: VecDeque<(u64, Vec<OwnedFd>)>,
    /// Set once the stream cannot be parsed any more.
    broken: Option<(io::ErrorKind, String)>,
    /// A direct read just found nothing: the next read waits first.
    missed: bool,
    /// The direct path spun an adaptive wait's window: block from here.
    spun: bool,
    pub(crate) max: usize,
    pub(crate) framing: Framing,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            large: None,
            pos: 0,
            read_end: 0,
            fds: VecDeque::new(),
            broken: None,
            missed: false,
            spun: false,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            framing: Framing::LengthPrefixed,
        }
    }

    fn break_with(&mut self, err: io::Error) -> RecvTimeoutError {
        self.broken = Some((err.kind(), err.to_string()));
        RecvTimeoutError::Io(err)
    }

    /// One read of up to `want` bytes appended to `dst`; `got` of `of`
    /// bytes of the current frame are already in (for error messages).
    #[allow(clippy::too_many_arguments)]
    fn read_into(
        &mut self,
        io: &mut FdIo,
        dst: Dst,
        want: usize,
        strategy: WaitStrategy,
        deadline: Deadline,
        got: usize,
        of: usize,
    ) -> Result<(), RecvTimeoutError> {
        let v = match dst {
            Dst::Buf => &mut self.buf,
            Dst::Large => &mut self.large.as_mut().expect("large frame in progress").0,
        };
        // After a direct attempt that found nothing, wait before trying.
        let chunk = if std::mem::take(&mut self.missed) {
            wait_io_again(io, Interest::Read, strategy, deadline, |io, mode| {
                io.read_spare(v, want, mode)
            })
        } else {
            wait_io(io, Interest::Read, strategy, deadline, |io, mode| {
                io.read_spare(v, want, mode)
            })
        };
        self.after_read(chunk, got, of)
    }

    /// The bookkeeping after a read: the stream's end, descriptors that
    /// came with the bytes, and what an error or an end-of-file means
    /// `got` bytes into a frame of `of`.
    fn after_read(
        &mut self,
        chunk: Result<crate::fdio::Chunk, WaitError>,
        got: usize,
        of: usize,
    ) -> Result<(), RecvTimeoutError> {
        match chunk {
            Ok(c) if c.len == 0 => Err(self.end_of_stream_at(got, of)),
            Ok(c) => {
                self.read_end += c.len as u64;
                if !c.fds.is_empty() {
                    self.fds.push_back((self.read_end - 1, c.fds));
                }
                Ok(())
            }
            Err(e) => Err(self.failed_at(e, got, of)),
        }
    }

    /// End of stream while reading the first `of` bytes of a frame.
    #[cold]
    fn end_of_stream(&mut self, of: usize) -> RecvTimeoutError {
        let got = self.buffered();
        self.end_of_stream_at(got, of)
    }

    /// End of stream `got` bytes into a frame of `of`: a clean end between
    /// frames, a broken stream in the middle of one.
    #[cold]
    fn end_of_stream_at(&mut self, got: usize, of: usize) -> RecvTimeoutError {
        if got == 0 {
            return RecvTimeoutError::Disconnected;
        }
        let progress = progress(got, of);
        self.break_with(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the peer closed the stream in the middle of a message ({progress})"),
        ))
    }

    /// A failed read while reading the first `of` bytes of a frame.
    #[cold]
    fn failed(&mut self, e: WaitError, of: usize) -> RecvTimeoutError {
        let got = self.buffered();
        self.failed_at(e, got, of)
    }

    /// A failed read `got` bytes into a frame of `of`.
    #[cold]
    fn failed_at(&mut self, e: WaitError, got: usize, of: usize) -> RecvTimeoutError {
        match recv_failure(e) {
            RecvTimeoutError::Disconnected if got > 0 => self.break_with(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the connection was reset in the middle of a message ({})",
                    progress(got, of)
                ),
            )),
            other => other,
        }
    }

    /// The common case without the general machinery: a length-prefixed
    /// frame that fits the read-ahead buffer, no descriptors pending or
    /// possible. Takes it from the buffer, or after one read in
    /// [`immediate_mode`] (spinning strategies spin right here, on the bare
    /// read); `None` hands over to the general path (which then waits first
    /// if that read found nothing).
    #[inline]
    fn recv_direct(
        &mut self,
        io: &mut FdIo,
        out: &mut Vec<u8>,
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Option<Result<(), RecvTimeoutError>> {
        if self.large.is_some() || !self.fds.is_empty() || io.recv_fds() {
            return None;
        }
        if self.buffered() < HEADER_LEN {
            self.make_room(HEADER_LEN);
            let want = self.buf.capacity() - self.buf.len();
            let mode = immediate_mode(strategy, deadline);
            // The spin window starts at the first miss: a hit reads no clock.
            let mut budget: Option<SpinBudget> = None;
            loop {
                match io.read_plain(&mut self.buf, want, mode) {
                    Ok(n) if n > 0 => {
                        self.read_end += n as u64;
                        break;
                    }
                    Ok(_) => return Some(Err(self.end_of_stream(HEADER_LEN))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match strategy {
                            WaitStrategy::Block => {}
                            _ => {
                                let b = budget.get_or_insert_with(|| {
                                    SpinBudget::new(strategy, deadline)
                                        .expect("spinning strategies have a budget")
                                });
                                if b.more() {
                                    // Each attempt is a system call: no
                                    // pause instruction needed.
                                    continue;
                                }
                                if strategy == WaitStrategy::Spin {
                                    return Some(Err(RecvTimeoutError::Timeout));
                                }
                                // Adaptive: the spin window is over; block.
                                self.spun = true;
                            }
                        }
                        self.missed = true;
                        return None;
                    }
                    Err(e) => return Some(Err(self.failed(WaitError::Io(e), HEADER_LEN))),
                }
            }
            if self.buffered() < HEADER_LEN {
                return None;
            }
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let total = HEADER_LEN + len;
        if len > self.max || total > READ_BUF || self.buffered() < total {
            return None;
        }
        out.clear();
        out.extend_from_slice(&self.buf[self.start + HEADER_LEN..self.start + total]);
        self.start += total;
        self.pos += total as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Some(Ok(()))
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a receive would return at once without reading: a whole
    /// message (or a line) is buffered, or the next one is refused, or the
    /// stream is broken.
    pub(crate) fn message_ready(&self) -> bool {
        if self.broken.is_some() {
            return true;
        }
        if self.large.is_some() {
            return false;
        }
        let pending = &self.buf[self.start..];
        match self.framing {
            Framing::Lines => pending.contains(&b'\n') || pending.len() > self.max,
            Framing::LengthPrefixed => {
                if pending.len() < HEADER_LEN {
                    return false;
                }
                let len = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]]);
                let len = len as usize;
                len > self.max || pending.len() >= HEADER_LEN + len
            }
        }
    }

    /// Receives one frame into `out`; descriptors that arrived with it are
    /// appended to `fds` (or closed when `fds` is `None`).
    #[inline]
    pub(crate) fn recv(
        &mut self,
        io: &mut FdIo,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let direct = self.broken.is_none()
            && self.framing == Framing::LengthPrefixed
            && self.buf.capacity() != 0;
        if direct {
            if let Some(done) = self.recv_direct(io, out, strategy, deadline) {
                return done;
            }
        }
        self.recv_general(io, out, fds, strategy, deadline, direct)
    }

    /// [`recv`](Self::recv) in general; `tried` when the direct path has
    /// already had its go.
    #[inline(never)]
    fn recv_general(
        &mut self,
        io: &mut FdIo,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        strategy: WaitStrategy,
        deadline: Deadline,
        tried: bool,
    ) -> Result<(), RecvTimeoutError> {
        if let Some((kind, text)) = &self.broken {
            return Err(RecvTimeoutError::Io(io::Error::new(
                *kind,
                format!("the stream is unusable after an earlier error: {text}"),
            )));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(READ_BUF);
        }
        if self.framing == Framing::Lines {
            return self.recv_line(io, out, fds, strategy, deadline);
        }
        if !tried {
            if let Some(done) = self.recv_direct(io, out, strategy, deadline) {
                return done;
            }
        }
        // An adaptive wait that already spun its window now blocks.
        let strategy = if std::mem::take(&mut self.spun) {
            WaitStrategy::Block
        } else {
            strategy
        };
        if self.large.is_none() {
            // The header.
            while self.buffered() < HEADER_LEN {
                self.make_room(HEADER_LEN);
                let want = self.buf.capacity() - self.buf.len();
                let got = self.buffered();
                self.read_into(io, Dst::Buf, want, strategy, deadline, got, HEADER_LEN)?;
            }
            let h = &self.buf[self.start..self.start + HEADER_LEN];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > self.max {
                let e = MessageTooLarge {
                    len: len as u64,
                    max: self.max,
                    unit: crate::error::Unit::Frame,
                }
                .into_io();
                return Err(self.break_with(e));
            }
            let total = HEADER_LEN + len;
            if total <= READ_BUF {
                while self.buffered() < total {
                    self.make_room(total);
                    let want = self.buf.capacity() - self.buf.len();
                    let got = self.buffered();
                    self.read_into(io, Dst::Buf, want, strategy, deadline, got, total)?;
                }
                out.clear();
                out.extend_from_slice(&self.buf[self.start + HEADER_LEN..self.start + total]);
                self.consume(total, fds);
                return Ok(());
            }
            // Too large for the buffer: take what is buffered, read the rest
            // straight into the message.
            let mut payload = std::mem::take(out);
            payload.clear();
            payload.reserve_exact(len);
            let have = self.buffered() - HEADER_LEN;
            let take = have.min(len);
            payload.extend_from_slice(
                &self.buf[self.start + HEADER_LEN..self.start + HEADER_LEN + take],
            );
            self.start += HEADER_LEN + take;
            self.pos += (HEADER_LEN + take) as u64;
            self.large = Some((payload, len));
        }
        loop {
            let (got, len) = {
                let (p, len) = self.large.as_ref().expect("large frame in progress");
                (p.len(), *len)
            };
            if got == len {
                break;
            }
            self.read_into(
                io,
                Dst::Large,
                len - got,
                strategy,
                deadline,
                HEADER_LEN + got,
                HEADER_LEN + len,
            )?;
        }
        let (payload, _) = self.large.take().expect("large frame in progress");
        *out = payload;
        self.pos = self.read_end - self.buffered() as u64;
        self.hand_out_fds(fds);
        Ok(())
    }

    fn recv_line(
        &mut self,
        io: &mut FdIo,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        strategy: WaitStrategy,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start..];
            if let Some(i) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                // A line over the limit is refused however it arrived: in
                // one read with its newline as much as in pieces.
                if end > self.max {
                    return Err(self.line_too_long(end));
                }
                out.clear();
                out.extend_from_slice(&pending[..end]);
                self.consume(end + 1, fds);
                return Ok(());
            }
            scanned = pending.len();
            if scanned > self.max {
                return Err(self.line_too_long(scanned));
            }
            self.make_room(scanned + 1);
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.capacity().min(self.max + 1));
            }
            let want = self.buf.capacity() - self.buf.len();
            match self.read_into(io, Dst::Buf, want, strategy, deadline, 0, 0) {
                // A last line without a newline is still a message.
                Err(RecvTimeoutError::Disconnected) if scanned > 0 => {
                    out.clear();
                    out.extend_from_slice(&self.buf[self.start..]);
                    self.consume(scanned, fds);
                    return Ok(());
                }
                r => r?,
            }
        }
    }

    /// A line of at least `len` bytes, over the limit: the stream is
    /// broken from here (where the next line starts is unknown).
    #[cold]
    fn line_too_long(&mut self, len: usize) -> RecvTimeoutError {
        let e = MessageTooLarge {
            len: len as u64,
            max: self.max,
            unit: crate::error::Unit::Line,
        }
        .into_io();
        self.break_with(e)
    }

    /// Makes sure `need` bytes from `start` fit in the buffer.
    fn make_room(&mut self, need: usize) {
        if self.start > 0 && (self.start + need > self.buf.capacity() || self.buffered() == 0) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn consume(&mut self, n: usize, fds: Option<&mut Vec<OwnedFd>>) {
        self.start += n;
        self.pos += n as u64;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.hand_out_fds(fds);
    }

    /// Descriptors whose read ended inside the frame just returned.
    fn hand_out_fds(&mut self, mut fds: Option<&mut Vec<OwnedFd>>) {
        while let Some((off, _)) = self.fds.front() {
            if *off >= self.pos {
                break;
            }
            let (_, got) = self.fds.pop_front().expect("front exists");
            if let Some(out) = fds.as_deref_mut() {
                out.extend(got);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Dst {
    Buf,
    Large,
}

/// A framed stream: one descriptor (or one per direction for pipes), a
/// reader and a writer half, and the wait strategy for both.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) io: FdIo,
    pub(crate) rx: FrameReader,
    pub(crate) tx: FrameWriter,
    pub(crate) wait: WaitStrategy,
    /// Set after each receive while a whole message waits in the read-ahead
    /// buffer, once a selector asked (see `crate::select`).
    ready: Option<Arc<AtomicBool>>,
}

impl Stream {
    pub(crate) fn new(io: FdIo) -> Self {
        Stream {
            io,
            rx: FrameReader::new(),
            tx: FrameWriter::new(),
            wait: WaitStrategy::default(),
            ready: None,
        }
    }

    /// The descriptor and read-ahead flag a selector waits on.
    pub(crate) fn readiness(&mut self) -> crate::select::Readiness<'_> {
        let flag = self
            .ready
            .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone();
        flag.store(self.rx.message_ready(), Ordering::Release);
        crate::select::Readiness::read_ahead(self.io.fd(), flag)
    }

    #[inline]
    pub(crate) fn send(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        self.tx.send(&mut self.io, msg, fds, self.wait, deadline)
    }

    #[inline]
    pub(crate) fn recv(
        &mut self,
        out: &mut Vec<u8>,
        fds: Option<&mut Vec<OwnedFd>>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        if fds.is_some() && !self.io.recv_fds() && self.io.kind() == Kind::UnixSocket {
            self.start_recv_fds()?;
        }
        let r = self.rx.recv(&mut self.io, out, fds, self.wait, deadline);
        if let Some(flag) = &self.ready {
            flag.store(self.rx.message_ready(), Ordering::Release);
        }
        r
    }

    /// The first receive that asks for descriptors switches reads to
    /// `recvmsg`, if no read without it has taken bytes not yet handed
    /// out: descriptors that came with those were closed by the kernel.
    fn start_recv_fds(&mut self) -> Result<(), RecvTimeoutError> {
        if self.rx.buffered() > 0 || self.rx.large.is_some() {
            return Err(RecvTimeoutError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptor passing was switched on after reads without it had already taken \
                 bytes of later messages, so descriptors sent with them may have been closed by \
                 the kernel: call UnixStream::set_receive_fds(true) before the first receive on a \
                 stream that carries descriptors",
            )));
        }
        self.io.set_recv_fds(true);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.tx.flush(&mut self.io, self.wait)
    }

    /// A sending and a receiving stream over one socket: the writer (and
    /// any bytes a non-blocking send left pending) goes with the first, the
    /// reader (and its read-ahead) stays with the second.
    pub(crate) fn split(mut self) -> io::Result<(Stream, Stream)> {
        let io = self.io.try_clone_socket()?;
        let mut writer = FrameWriter::new();
        writer.max = self.tx.max;
        writer.framing = self.tx.framing;
        let tx = std::mem::replace(&mut self.tx, writer);
        let mut sending = Stream::new(io);
        sending.tx = tx;
        sending.wait = self.wait;
        sending.rx.max = self.rx.max;
        sending.rx.framing = self.rx.framing;
        Ok((sending, self))
    }

    pub(crate) fn max(&self) -> usize {
        self.rx.max
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.rx.max = max;
        self.tx.max = max;
    }

    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.rx.framing = framing;
        self.tx.framing = framing;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Never blocks: see FrameWriter.
        self.tx.finish_without_waiting(&mut self.io, self.wait);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use crate::pipe::{self, PipeWriter};
    use crate::{MessageReceiver, MessageSenderExt, RecvError, RecvTimeoutError};

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut f = (msg.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(msg);
        f
    }

    fn write_in_chunks(mut w: PipeWriter, bytes: Vec<u8>, chunk: usize) {
        std::thread::spawn(move || {
            for c in bytes.chunks(chunk) {
                w.write_all(c).unwrap();
            }
        });
    }

    /// Frames split at every kind of boundary (inside the header, inside
    /// the payload, several frames per read) come out whole.
    #[test]
    fn frames_survive_any_chunking() {
        // Miri interprets every step: smaller messages, and fewer ways to
        // cut them, but still inside the header and across frames.
        let (sizes, chunks): (&[usize], &[usize]) = if cfg!(miri) {
            (&[0, 1, 3, 4, 5, 100, 1000], &[1, 3, 4099])
        } else {
            (
                &[0, 1, 3, 4, 5, 100, 4096, 131_068, 131_073, 300_000],
                &[1, 2, 3, 5, 4099, 65_536, 1 << 20],
            )
        };
        let msgs: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
        for &chunk in chunks {
            let (r, w) = pipe::pipe().unwrap();
            write_in_chunks(w, stream.clone(), chunk);
            let mut rx = pipe::Receiver::new(r).unwrap();
            // Miri cannot run poll(2), which a deadline needs: it blocks.
            let mut recv = || match cfg!(miri) {
                true => rx.recv().map_err(|e| matches!(e, RecvError::Disconnected)),
                false => rx
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|e| matches!(e, RecvTimeoutError::Disconnected)),
            };
            for m in &msgs {
                let got = recv().unwrap();
                assert!(got == *m, "chunk {chunk}: {}-byte message", m.len());
            }
            assert_eq!(recv(), Err(true), "the end, disconnected");
        }
    }

    /// A receive that times out in the middle of a frame keeps what it read.
    #[test]
    fn a_timed_out_receive_resumes_the_frame() {
        for split in [2, 6, 150_000] {
            let msg: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
            let bytes = frame(&msg);
            let (r, mut w) = pipe::pipe().unwrap();
            w.set_capacity(1 << 20).unwrap();
            w.write_all(&bytes[..split]).unwrap();
            let mut rx = pipe::Receiver::new(r).unwrap();
            assert!(matches!(
                rx.recv_timeout(Duration::from_millis(20)),
                Err(RecvTimeoutError::Timeout)
            ));
            w.write_all(&bytes[split..]).unwrap();
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10)).unwrap(),
                msg,
                "split {split}"
            );
        }
    }

    /// A send whose deadline passes mid-frame abandons the rest, says so,
    /// and refuses further sends: the reader sees the message cut short,
    /// never a corrupt stream.
    #[test]
    fn a_deadline_send_cut_short_breaks_the_stream() {
        let (r, w) = pipe::pipe().unwrap();
        let cap = w.capacity().unwrap();
        let mut tx = pipe::Sender::new(w).unwrap();
        let big = vec![9u8; cap * 2];
        let t0 = std::time::Instant::now();
        let e = tx
            .send_timeout(&big, Duration::from_millis(20))
            .unwrap_err();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "overran its deadline"
        );
        assert!(e.to_string().contains("abandoned"), "{e}");
        let e = tx.send(b"next").unwrap_err();
        assert!(
            e.to_string().contains("no longer carry whole messages"),
            "{e}"
        );
        drop(tx);
        let mut rx = pipe::Receiver::new(r).unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Err(RecvTimeoutError::Io(e)) => assert!(e.to_string().contains("payload"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// A non-blocking send keeps the tail of a frame it started; the next
    /// send finishes it first, so the stream stays whole.
    #[test]
    fn a_try_send_tail_is_finished_by_the_next_send() {
        let (r, w) = pipe::pipe().unwrap();
        let cap = w.capacity().unwrap();
        let mut tx = pipe::Sender::new(w).unwrap();
        let big = vec![7u8; cap * 2];
        tx.try_send(big.clone()).unwrap();
        let reader = std::thread::spawn(move || {
            let mut rx = pipe::Receiver::new(r).unwrap();
            let a = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let b = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            (a, b)
        });
        tx.send(b"next").unwrap();
        let (a, b) = reader.join().unwrap();
        assert_eq!(a, big);
        assert_eq!(b, b"next");
    }

    /// A try_send that cannot start hands the message back untouched.
    #[test]
    fn try_send_on_a_full_pipe_is_full() {
        let (_r, w) = pipe::pipe().unwrap();
        let cap = w.capacity().unwrap();
        let mut tx = pipe::Sender::new(w).unwrap();
        tx.try_send(vec![1u8; cap - 4]).unwrap();
        match tx.try_send(b"more".to_vec()) {
            Err(crate::TrySendError::Full(m)) => assert_eq!(m, b"more"),
            other => panic!("{other:?}"),
        }
    }
}
