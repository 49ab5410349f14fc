//! Named pipes (FIFOs, `fifo(7)`).
//!
//! A FIFO is a pipe with a name in the filesystem: unrelated processes that
//! can open the path exchange bytes through it. The name lives on disk, the
//! data only in the kernel. Opening one end blocks until the other end is
//! opened too; [`open_reader`] and [`open_writer`] take a timeout for that
//! wait. Once open, a FIFO behaves exactly like an anonymous pipe, so the
//! ends are [`PipeReader`]/[`PipeWriter`] and the message ends are
//! [`pipe::Sender`]/[`pipe::Receiver`].
//!
//! # Several writers
//!
//! Writes of at most `PIPE_BUF` (4096) bytes are atomic. A framed message
//! whose header (4 bytes) plus payload fits in `PIPE_BUF` is written with a
//! single `writev`, so any number of writers may share one FIFO and the
//! reader still sees whole messages. Larger messages from several writers can
//! interleave and corrupt the stream: give each writer its own FIFO, or use a
//! datagram socket or a message queue.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ipckit::{fifo::Fifo, MessageReceiver, MessageSender, MessageSenderExt};
//!
//! let dir = tempfile::tempdir()?;
//! let fifo = Fifo::create(dir.path().join("jobs"))?; // removed on drop
//! let path = fifo.path().to_owned();
//! let writer = std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut tx = ipckit::fifo::open_sender(&path, Some(Duration::from_secs(5)))?;
//!     tx.send(b"job 1")?;
//!     Ok(())
//! });
//! let mut rx = fifo.open_receiver(Some(Duration::from_secs(5)))?;
//! assert_eq!(rx.recv()?, b"job 1");
//! writer.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `mkfifo(3)`, `fifo(7)`, `open(2)`, `pipe(7)` (`PIPE_BUF`).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::named::{remove_if_same, CreatedPath, FileId};
use crate::pipe::{self, PipeReader, PipeWriter};
use crate::sys;

/// Default permission bits of a new FIFO: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// A FIFO in the filesystem. If this value created it, dropping it removes
/// the path (unless [`Fifo::keep`] was called), and only if the path still
/// is the FIFO it created.
#[derive(Debug)]
pub struct Fifo {
    path: PathBuf,
    /// The FIFO this value created, if it did.
    created: Option<FileId>,
    remove_on_drop: bool,
}

/// Creates or opens a [`Fifo`].
#[derive(Debug, Clone)]
pub struct FifoBuilder {
    path: PathBuf,
    mode: u32,
    keep: bool,
}

impl FifoBuilder {
    /// Permission bits for a new FIFO (default `0o600`, then the umask applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Leave the FIFO in place when the [`Fifo`] is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new FIFO; fails if anything exists at the path.
    pub fn create(self) -> io::Result<Fifo> {
        validate(&self.path)?;
        sys::fd::mkfifo(&self.path, self.mode).map_err(|e| {
            let what = describe_path(&self.path);
            match e.kind() {
                io::ErrorKind::AlreadyExists => io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create FIFO {}: {what} already exists there",
                        self.path.display()
                    ),
                ),
                _ => io::Error::new(
                    e.kind(),
                    format!("cannot create FIFO {}: {e}", self.path.display()),
                ),
            }
        })?;
        let created = FileId::of_made(&self.path, "FIFO", FileTypeExt::is_fifo)?;
        Ok(Fifo {
            path: self.path,
            created: Some(created),
            remove_on_drop: !self.keep,
        })
    }

    /// Opens an existing FIFO; it is not removed on drop.
    pub fn open(self) -> io::Result<Fifo> {
        open_path(&self.path)?;
        Ok(Fifo {
            path: self.path,
            created: None,
            remove_on_drop: false,
        })
    }

    /// Opens the FIFO at the path, creating it if nothing is there. Only a
    /// FIFO this call created is removed on drop.
    pub fn create_or_open(self) -> io::Result<Fifo> {
        crate::named::create_or_open(
            &format_args!("FIFO {}", self.path.display()),
            || self.clone().create(),
            || self.clone().open(),
        )
    }
}

impl Fifo {
    /// A builder for the FIFO at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> FifoBuilder {
        FifoBuilder {
            path: path.into(),
            mode: DEFAULT_MODE,
            keep: false,
        }
    }

    /// Creates a new FIFO with mode `0o600`, removed when dropped.
    #[doc(alias = "mkfifo")]
    pub fn create(path: impl Into<PathBuf>) -> io::Result<Fifo> {
        Fifo::builder(path).create()
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this value made the FIFO (`create`, or a `create_or_open`
    /// that found none).
    pub fn created(&self) -> bool {
        self.created.is_some()
    }

    /// Whether dropping this value removes the FIFO (it created it and
    /// was not told to keep it).
    pub fn removes_on_drop(&self) -> bool {
        self.remove_on_drop
    }

    /// Leaves the FIFO in place when this value is dropped.
    pub fn keep(mut self) -> Self {
        self.remove_on_drop = false;
        self
    }

    /// The path and the FIFO this value created there, for removing it
    /// from elsewhere (a signal handler thread): `None` if it opened an
    /// existing FIFO.
    pub fn created_path(&self) -> Option<CreatedPath> {
        self.created
            .map(|id| CreatedPath::new(self.path.clone(), id))
    }

    /// Opens the read end; see [`open_reader`].
    pub fn open_reader(&self, timeout: Option<Duration>) -> io::Result<PipeReader> {
        open_reader(&self.path, timeout)
    }

    /// Opens the write end; see [`open_writer`].
    pub fn open_writer(&self, timeout: Option<Duration>) -> io::Result<PipeWriter> {
        open_writer(&self.path, timeout)
    }

    /// Opens the read end at once, without waiting for a writer
    /// (`O_NONBLOCK`, then cleared), for a reactor: until a writer comes a
    /// read sees end-of-file, but `epoll` reports nothing until a writer
    /// has written, or come and gone (`pipe(7)`, `fifo(7)`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn open_reader_now(&self) -> io::Result<PipeReader> {
        let (fifo, meta) = open_path(&self.path)?;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
        let fd = sys::fd::open(&by_fd, libc::O_RDONLY | libc::O_NONBLOCK)
            .map_err(|e| explain_open(e, &self.path, &meta))?;
        sys::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&fd), false)?;
        Ok(PipeReader::from(fd))
    }

    /// Opens the read end for framed messages.
    pub fn open_receiver(&self, timeout: Option<Duration>) -> io::Result<pipe::Receiver> {
        pipe::Receiver::new(self.open_reader(timeout)?)
    }

    /// Opens the write end for framed messages.
    pub fn open_sender(&self, timeout: Option<Duration>) -> io::Result<pipe::Sender> {
        pipe::Sender::new(self.open_writer(timeout)?)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if let (true, Some(id)) = (self.remove_on_drop, self.created) {
            let _ = remove_if_same(&self.path, id);
        }
    }
}

fn validate(path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a FIFO path cannot be empty",
        ));
    }
    sys::cstr(path).map(drop)
}

/// What a file is, in words, for error messages.
fn describe(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a device or other special file"
    }
}

/// What is at `path` (not following a symlink), in words.
fn describe_path(path: &Path) -> &'static str {
    std::fs::symlink_metadata(path).map_or("nothing", |m| describe(&m))
}

/// Opens the FIFO at `path` itself, once: `O_PATH` (which reads and writes
/// nothing) with `O_NOFOLLOW`, then checks on the descriptor that it is a
/// FIFO. A symbolic link, or anything else, is refused; the ends are then
/// opened through this descriptor, so the path cannot be swapped in
/// between.
fn open_path(path: &Path) -> io::Result<(File, Metadata)> {
    validate(path)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                e.kind(),
                format!(
                    "no FIFO at {} (create one with mkfifo or Fifo::create)",
                    path.display()
                ),
            ),
            _ => io::Error::new(
                e.kind(),
                format!("cannot open FIFO {}: {e}", path.display()),
            ),
        })?;
    let m = f.metadata()?;
    if m.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link, not a FIFO: refused (links are not followed, as one in \
                 a shared directory could point anywhere; use the FIFO's own path)",
                path.display()
            ),
        ));
    }
    if !m.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} exists but is not a FIFO (it is {}); remove it or choose another path",
                path.display(),
                describe(&m)
            ),
        ));
    }
    Ok((f, m))
}

/// Removes the FIFO at `path`. A symbolic link (even to a FIFO) or
/// anything else there is left alone and reported.
pub fn remove(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let (_, m) = open_path(path)?;
    if remove_if_same(path, FileId::of(&m))? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the FIFO at {} was removed or replaced while being removed; left alone",
                path.display()
            ),
        ))
    }
}

/// Opens the FIFO's read end, waiting for a writer at most `timeout`
/// (`None`: as long as it takes).
pub fn open_reader(path: impl AsRef<Path>, timeout: Option<Duration>) -> io::Result<PipeReader> {
    open_end(path.as_ref(), libc::O_RDONLY, libc::O_WRONLY, timeout).map(PipeReader::from)
}

/// Opens the FIFO's write end, waiting for a reader at most `timeout`
/// (`None`: as long as it takes).
pub fn open_writer(path: impl AsRef<Path>, timeout: Option<Duration>) -> io::Result<PipeWriter> {
    open_end(path.as_ref(), libc::O_WRONLY, libc::O_RDONLY, timeout).map(PipeWriter::from)
}

/// Opens the read end for framed messages; see [`open_reader`].
pub fn open_receiver(
    path: impl AsRef<Path>,
    timeout: Option<Duration>,
) -> io::Result<pipe::Receiver> {
    pipe::Receiver::new(open_reader(path, timeout)?)
}

/// Opens the write end for framed messages; see [`open_writer`].
pub fn open_sender(path: impl AsRef<Path>, timeout: Option<Duration>) -> io::Result<pipe::Sender> {
    pipe::Sender::new(open_writer(path, timeout)?)
}

/// Adds the FIFO's owner and mode to a permission error.
fn explain_open(e: io::Error, path: &Path, m: &Metadata) -> io::Error {
    if e.kind() != io::ErrorKind::PermissionDenied {
        return io::Error::new(
            e.kind(),
            format!("cannot open FIFO {}: {e}", path.display()),
        );
    }
    io::Error::new(
        e.kind(),
        format!(
            "permission denied opening FIFO {}: it has mode {:04o}, owner uid {} gid {}, and this \
             process runs as uid {}",
            path.display(),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            sys::process::euid(),
        ),
    )
}

/// A blocking `open` bounded by a timeout, of the FIFO that [`open_path`]
/// found (reopened through `/proc/self/fd`, so it is that FIFO).
///
/// The blocking open runs on a helper thread. If the timeout passes first,
/// this thread opens the opposite end itself (non-blocking, which always
/// succeeds while the helper waits), which releases the helper; both
/// descriptors are then closed and `TimedOut` is returned. No polling, no
/// thread left behind. A descriptor is held in reserve for that release
/// while the helper waits: a process at its open-file limit gets `EMFILE`
/// before the helper starts, not a helper it can never release.
fn open_end(
    path: &Path,
    flags: libc::c_int,
    opposite: libc::c_int,
    timeout: Option<Duration>,
) -> io::Result<std::os::fd::OwnedFd> {
    let (fifo, meta) = open_path(path)?;
    let fifo = Arc::new(fifo);
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
    let role = if flags == libc::O_RDONLY {
        "writer"
    } else {
        "reader"
    };
    let Some(timeout) = timeout else {
        return sys::fd::open(&by_fd, flags).map_err(|e| explain_open(e, path, &meta));
    };
    if flags == libc::O_WRONLY {
        // A reader there already: the end opens at once, without a thread
        // (`ENXIO`: no reader, `fifo(7)`).
        match sys::fd::open(&by_fd, flags | libc::O_NONBLOCK) {
            Ok(fd) => {
                sys::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&fd), false)?;
                return Ok(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => return Err(explain_open(e, path, &meta)),
        }
    }
    let reserve = fifo.try_clone().map_err(|e| explain_open(e, path, &meta))?;
    let (tx, rx) = mpsc::channel();
    let (held, helper_path) = (Arc::clone(&fifo), by_fd.clone());
    let helper = std::thread::Builder::new()
        .name("ipckit-fifo-open".into())
        .spawn(move || {
            let _ = tx.send(sys::fd::open(&helper_path, flags));
            drop(held);
        })?;
    match rx.recv_timeout(timeout) {
        Ok(res) => {
            let _ = helper.join();
            res.map_err(|e| explain_open(e, path, &meta))
        }
        Err(_) => {
            drop(reserve);
            match sys::fd::open(&by_fd, opposite | libc::O_NONBLOCK) {
                Ok(release) => {
                    let _ = helper.join();
                    drop(release);
                    drop(rx.try_recv());
                }
                // We may not open the other end (its permission bits); the
                // helper then finishes when a peer finally opens the FIFO,
                // and closes what it got since nobody receives it.
                Err(_) => drop(helper),
            }
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {:?} waiting for a {role} to open FIFO {}",
                    timeout,
                    path.display()
                ),
            ))
        }
    }
}
