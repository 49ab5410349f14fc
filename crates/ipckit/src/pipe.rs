//! Anonymous pipes (`pipe(7)`).
//!
//! A pipe is a kernel buffer with a read end and a write end: one direction,
//! bytes in FIFO order, no name, so it is shared by inheritance (a child
//! process gets the ends on its standard input/output or as inherited
//! descriptors). Two pipes make a duplex channel.
//!
//! - [`pipe`] gives the raw ends ([`PipeReader`], [`PipeWriter`]): byte
//!   streams with `Read`/`Write`, capacity control and non-blocking mode.
//! - [`channel`] and [`duplex`] give message endpoints ([`Sender`],
//!   [`Receiver`], [`Duplex`]) that frame each message (see
//!   [`crate::frame`]).
//! - [`spawn`] and [`popen`] start a child process with pipes on its
//!   standard input and/or output; in the child, [`Duplex::from_stdio`]
//!   ([`Receiver::from_stdin`], [`Sender::from_stdout`]) takes them as
//!   message endpoints, out of the way of `println!`.
//!
//! Behaviour worth knowing, all of it tested:
//! - reading returns end-of-file (a message receive returns
//!   `Disconnected`) once every write end, in every process, is closed;
//! - writing when every read end is closed fails with `EPIPE` (a message send
//!   returns `Disconnected` with the message). It never kills the process:
//!   ipckit suppresses `SIGPIPE` for its own writes when the process has not
//!   already ignored it;
//! - writes of at most `PIPE_BUF` (4096) bytes are atomic;
//! - all descriptors are created close-on-exec, so only the ends you hand to
//!   a child reach it.
//!
//! # Example
//!
//! ```
//! use ipckit::{pipe, MessageReceiver, MessageSender, MessageSenderExt};
//!
//! let (mut a, mut b) = pipe::duplex()?;
//! a.send(b"ping")?;
//! assert_eq!(b.recv()?, b"ping");
//! b.send(b"pong")?;
//! assert_eq!(a.recv()?, b"pong");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `pipe(2)`, `pipe(7)`, `popen(3)`, `fcntl(2)` (`F_GETPIPE_SZ`, `F_SETPIPE_SZ`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

use crate::fdio::{FdIo, Kind};
use crate::frame::Stream;
use crate::sys;

/// The atomic write size of a pipe (`PIPE_BUF`): a write of at most this
/// many bytes is never interleaved with another writer's data.
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// Creates a pipe (`pipe2(2)` with `O_CLOEXEC`).
#[doc(alias = "pipe2")]
pub fn pipe() -> io::Result<(PipeReader, PipeWriter)> {
    let (r, w) = sys::fd::pipe()?;
    Ok((PipeReader { fd: r }, PipeWriter { fd: w }))
}

/// The read end of a pipe or FIFO, as a raw byte stream.
#[derive(Debug)]
pub struct PipeReader {
    fd: OwnedFd,
}

/// The write end of a pipe or FIFO, as a raw byte stream.
#[derive(Debug)]
pub struct PipeWriter {
    fd: OwnedFd,
}

fn capacity_error(err: io::Error, requested: usize) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "pipe capacity of {requested} bytes is above /proc/sys/fs/pipe-max-size \
                     ({max}) for an unprivileged process; raise it with \
                     `sysctl fs.pipe-max-size={requested}`"
                ),
            )
        }
        Some(libc::EBUSY) => io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("the pipe holds more data than the requested capacity of {requested} bytes"),
        ),
        _ => err,
    }
}

macro_rules! raw_end {
    ($ty:ident) => {
        impl $ty {
            /// The pipe's capacity in bytes (`F_GETPIPE_SZ`).
            pub fn capacity(&self) -> io::Result<usize> {
                sys::fd::pipe_capacity(self.fd.as_fd())
            }

            /// Sets the pipe's capacity (`F_SETPIPE_SZ`); the kernel rounds
            /// it up to a power-of-two number of pages and returns what it
            /// set. Above `/proc/sys/fs/pipe-max-size` an unprivileged
            /// process gets a `PermissionDenied` error saying so.
            pub fn set_capacity(&self, bytes: usize) -> io::Result<usize> {
                let arg = libc::c_int::try_from(bytes).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "pipe capacity too large")
                })?;
                sys::fd::set_pipe_capacity(self.fd.as_fd(), arg)
                    .map_err(|e| capacity_error(e, bytes))
            }

            /// Sets or clears `O_NONBLOCK`: reads and writes that cannot
            /// proceed fail with `WouldBlock` instead of waiting.
            pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
                sys::fd::set_nonblocking(self.fd.as_fd(), nonblocking)
            }

            /// Whether `O_NONBLOCK` is set.
            pub fn is_nonblocking(&self) -> io::Result<bool> {
                sys::fd::is_nonblocking(self.fd.as_fd())
            }
        }

        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }

        impl From<OwnedFd> for $ty {
            /// Wraps a descriptor that must be the matching end of a pipe or FIFO.
            fn from(fd: OwnedFd) -> Self {
                $ty { fd }
            }
        }

        impl From<$ty> for OwnedFd {
            fn from(end: $ty) -> OwnedFd {
                end.fd
            }
        }

        impl From<$ty> for Stdio {
            /// Hands the end to a child process as one of its standard streams.
            fn from(end: $ty) -> Stdio {
                Stdio::from(end.fd)
            }
        }
    };
}
raw_end!(PipeReader);
raw_end!(PipeWriter);

impl From<ChildStdout> for PipeReader {
    /// The parent's end of a child's piped standard output
    /// (`Stdio::piped()`).
    fn from(out: ChildStdout) -> PipeReader {
        PipeReader::from(OwnedFd::from(out))
    }
}

impl From<ChildStdin> for PipeWriter {
    /// The parent's end of a child's piped standard input
    /// (`Stdio::piped()`).
    fn from(input: ChildStdin) -> PipeWriter {
        PipeWriter::from(OwnedFd::from(input))
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::fd::read(self.fd.as_fd(), buf)
    }
}

impl Write for PipeWriter {
    /// Writes like `write(2)`, except that a pipe without readers is an
    /// `EPIPE` error and never a `SIGPIPE` that kills the process.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::fdio::write_pipe(self.fd.as_fd(), &[io::IoSlice::new(buf)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sending end of a framed message pipe.
#[derive(Debug)]
pub struct Sender {
    s: Stream,
}

/// The receiving end of a framed message pipe.
#[derive(Debug)]
pub struct Receiver {
    s: Stream,
}

impl Sender {
    /// Chooses how messages are delimited (default: length-prefixed).
    pub fn set_framing(&mut self, framing: crate::frame::Framing) {
        self.s.set_framing(framing);
    }

    /// Frames messages over the write end of a pipe or FIFO.
    pub fn new(end: PipeWriter) -> io::Result<Self> {
        Ok(Sender {
            s: Stream::new(FdIo::new(end.fd, Kind::Pipe)?),
        })
    }

    /// Sets the largest message this end will send (default 16 MiB).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.s.set_max(max);
    }

    /// Sets how a send waits for room in a full pipe.
    pub fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
        self.s.wait = strategy;
    }

    /// Blocks until the rest of a frame a non-blocking send started is
    /// written (see [`crate::frame`]).
    pub fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }

    /// The pipe's capacity in bytes.
    pub fn capacity(&self) -> io::Result<usize> {
        sys::fd::pipe_capacity(self.s.io.fd())
    }
}

impl Receiver {
    /// Chooses how messages are delimited (default: length-prefixed).
    pub fn set_framing(&mut self, framing: crate::frame::Framing) {
        self.s.set_framing(framing);
    }

    /// Reads framed messages from the read end of a pipe or FIFO.
    pub fn new(end: PipeReader) -> io::Result<Self> {
        Ok(Receiver {
            s: Stream::new(FdIo::new(end.fd, Kind::Pipe)?),
        })
    }

    /// The pipe's capacity in bytes.
    pub fn capacity(&self) -> io::Result<usize> {
        sys::fd::pipe_capacity(self.s.io.fd())
    }
}

impl_message_sender!(Sender => s);
impl_message_receiver!(Receiver => s);

impl crate::select::Selectable for Receiver {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(self.s.readiness())
    }
}

impl crate::select::Selectable for Duplex {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(self.rx.s.readiness())
    }
}

impl Receiver {
    /// The child's side of a pipe its parent put on its standard input
    /// ([`spawn`] with [`Direction::Write`], `Stdio::from(writer's peer)`,
    /// a shell's `|`): standard input as a framed receiver.
    ///
    /// Descriptor 0 is moved to a new close-on-exec descriptor and pointed
    /// at `/dev/null`, so nothing else in the process reads the messages
    /// and no child inherits the pipe. Call it before anything reads
    /// `std::io::stdin()` (whose buffer could hold the first bytes).
    /// Standard input that is not the read end of a pipe or FIFO (a
    /// terminal, a file, a socket) is refused, and nothing is changed.
    pub fn from_stdin() -> io::Result<Receiver> {
        let fd = standard_pipe_end(io::stdin().as_fd(), false)?;
        take_standard(fd, 0).and_then(|fd| Receiver::new(PipeReader::from(fd)))
    }
}

impl Sender {
    /// The child's side of a pipe its parent reads from its standard
    /// output ([`spawn`] with [`Direction::Read`]): standard output as a
    /// framed sender.
    ///
    /// What `std::io::stdout()` holds is flushed first; then descriptor 1
    /// is moved to a new close-on-exec descriptor and pointed at
    /// `/dev/null`, so that a stray `println!` cannot break a frame, and
    /// the parent sees end of file when the sender is dropped (not only
    /// when the process exits). Standard output that is not the write end
    /// of a pipe or FIFO is refused, and nothing is changed.
    pub fn from_stdout() -> io::Result<Sender> {
        io::stdout().flush()?;
        let fd = standard_pipe_end(io::stdout().as_fd(), true)?;
        take_standard(fd, 1).and_then(|fd| Sender::new(PipeWriter::from(fd)))
    }
}

impl Duplex {
    /// The child's side of [`spawn`] with [`Direction::Both`] (or of any
    /// parent that put a pipe on each of its standard input and output):
    /// [`Receiver::from_stdin`] and [`Sender::from_stdout`] in one, both
    /// checked before either is taken.
    ///
    /// ```no_run
    /// use ipckit::prelude::*;
    ///
    /// // In the child: echo every message back to the parent.
    /// let mut parent = ipckit::pipe::Duplex::from_stdio()?;
    /// while let Ok(msg) = parent.recv() {
    ///     parent.send(msg)?;
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_stdio() -> io::Result<Duplex> {
        io::stdout().flush()?;
        let rx = standard_pipe_end(io::stdin().as_fd(), false)?;
        let tx = standard_pipe_end(io::stdout().as_fd(), true)?;
        let rx = take_standard(rx, 0)?;
        let tx = take_standard(tx, 1)?;
        Duplex::new(PipeReader::from(rx), PipeWriter::from(tx))
    }
}

/// A close-on-exec duplicate of standard descriptor `fd` when it is a
/// pipe or FIFO open for `write` (or for reading); an error naming the
/// stream otherwise.
fn standard_pipe_end(fd: BorrowedFd<'_>, write: bool) -> io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    let name = if write {
        "standard output"
    } else {
        "standard input"
    };
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} is {what}, not the {} end of a pipe: start this process with a pipe \
                 there (ipckit::pipe::spawn, or Stdio::from a pipe end)",
                if write { "write" } else { "read" }
            ),
        )
    };
    let dup = fd
        .try_clone_to_owned()
        .map_err(|e| bad(format!("not open ({e})")))?;
    let file = std::fs::File::from(dup);
    let kind = file.metadata()?.file_type();
    if !kind.is_fifo() {
        let what = if kind.is_char_device() {
            "a character device (a terminal or /dev/null)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "something else"
        };
        return Err(bad(what.into()));
    }
    let mode = sys::fd::access_mode(file.as_fd())?;
    let ok = match mode {
        libc::O_RDWR => true,
        libc::O_WRONLY => write,
        _ => !write,
    };
    if !ok {
        return Err(bad(format!(
            "the {} end of a pipe",
            if write { "read" } else { "write" }
        )));
    }
    Ok(OwnedFd::from(file))
}

/// Gives up standard descriptor `target` (now pointing at `/dev/null`)
/// and returns `end`, its close-on-exec duplicate.
fn take_standard(end: OwnedFd, target: RawFd) -> io::Result<OwnedFd> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    sys::fd::replace_standard(null.as_fd(), target)?;
    Ok(end)
}

/// Creates a pipe and frames messages over it.
pub fn channel() -> io::Result<(Sender, Receiver)> {
    let (r, w) = pipe()?;
    Ok((Sender::new(w)?, Receiver::new(r)?))
}

/// One side of a duplex pipe channel: a [`Sender`] and a [`Receiver`] on two
/// pipes going opposite ways.
#[derive(Debug)]
pub struct Duplex {
    /// Messages from this side.
    pub tx: Sender,
    /// Messages to this side.
    pub rx: Receiver,
}

impl Duplex {
    /// Chooses how messages are delimited in both directions.
    pub fn set_framing(&mut self, framing: crate::frame::Framing) {
        self.tx.set_framing(framing);
        self.rx.set_framing(framing);
    }

    /// Joins two ends into one duplex endpoint.
    pub fn new(rx: PipeReader, tx: PipeWriter) -> io::Result<Self> {
        Ok(Duplex {
            tx: Sender::new(tx)?,
            rx: Receiver::new(rx)?,
        })
    }
}

impl_message_sender!(Duplex => tx.s);

/// Receives on `rx`; the largest message size applies both ways, as on a
/// two-way socket (a send checks that the peer would accept it).
impl crate::MessageReceiver for Duplex {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: crate::Deadline,
    ) -> Result<(), crate::RecvTimeoutError> {
        self.rx.s.recv(buf, None, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.rx.s.max()
    }
    fn set_max_message_size(&mut self, max: usize) {
        self.rx.s.set_max(max);
        self.tx.s.set_max(max);
    }
    fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
        self.rx.s.wait = strategy;
        self.tx.s.wait = strategy;
    }
}

/// Two connected duplex endpoints (two pipes): whatever one side sends, the
/// other receives.
pub fn duplex() -> io::Result<(Duplex, Duplex)> {
    let (r1, w1) = pipe()?;
    let (r2, w2) = pipe()?;
    Ok((Duplex::new(r1, w2)?, Duplex::new(r2, w1)?))
}

/// Which of a child's standard streams get a pipe (the parent's view, as in
/// `popen(3)`'s `"r"` and `"w"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read the child's standard output (`"r"`).
    Read,
    /// Write to the child's standard input (`"w"`).
    Write,
    /// Both.
    Both,
}

/// A child process with pipes on its standard input and/or output.
#[derive(Debug)]
pub struct PipedChild {
    /// The process.
    pub child: Child,
    /// Write end connected to the child's standard input.
    pub stdin: Option<PipeWriter>,
    /// Read end connected to the child's standard output.
    pub stdout: Option<PipeReader>,
}

impl PipedChild {
    /// Closes the pipes (so the child sees end-of-file) and waits for the
    /// child to exit, like `pclose(3)`.
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        self.stdin.take();
        self.stdout.take();
        self.child.wait()
    }
}

/// Starts `cmd` with pipes on its standard input and/or output.
///
/// Streams not named by `dir` are inherited. The child's ends are the only
/// pipe descriptors it inherits (every ipckit descriptor is close-on-exec).
pub fn spawn(cmd: &mut Command, dir: Direction) -> io::Result<PipedChild> {
    if matches!(dir, Direction::Write | Direction::Both) {
        cmd.stdin(Stdio::piped());
    }
    if matches!(dir, Direction::Read | Direction::Both) {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().map(PipeWriter::from);
    let stdout = child.stdout.take().map(PipeReader::from);
    Ok(PipedChild {
        child,
        stdin,
        stdout,
    })
}

/// Runs `command` with `/bin/sh -c`, like `popen(3)`.
pub fn popen(command: &str, dir: Direction) -> io::Result<PipedChild> {
    spawn(Command::new("/bin/sh").arg("-c").arg(command), dir)
}
