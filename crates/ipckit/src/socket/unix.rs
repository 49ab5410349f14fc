//! Unix domain sockets (`unix(7)`): stream, datagram and seqpacket.
//!
//! Local-only sockets that skip the network stack: data is copied from one
//! process to the other, and they can carry file descriptors
//! ([`UnixStream::send_with_fds`]) and tell who the peer is
//! ([`UnixStream::peer_credentials`]).
//!
//! | type | kernel type | messages | connection |
//! |---|---|---|---|
//! | [`UnixStream`] / [`UnixListener`] | `SOCK_STREAM` | framed (see [`crate::frame`]) | yes |
//! | [`UnixDatagram`] | `SOCK_DGRAM` | one datagram each, reliable and ordered on Linux | optional |
//! | [`SeqpacketStream`] / [`SeqpacketListener`] | `SOCK_SEQPACKET` | one packet each | yes |
//!
//! # Addresses
//!
//! [`UnixAddr`] is a filesystem path (`/run/app.sock`) or, on Linux, an
//! abstract name written `@name`, which lives in the network namespace, not
//! on disk, and disappears with its last socket.
//!
//! Binding a path that holds a socket file left behind by a dead server of
//! the same user replaces the stale file; binding a path where a server is
//! still listening fails with `AddrInUse`, and a path that holds anything
//! other than a socket, or another user's socket file, is never touched.
//! Socket files are created with mode 0600 whatever the umask (the socket
//! is `fchmod`ed before `bind`, so the file is never more open). A bound
//! path is removed again when its socket is dropped, if it is still the
//! same file.
//!
//! # Example
//!
//! ```
//! use ipckit::socket::unix::{UnixAddr, UnixListener, UnixStream};
//! use ipckit::prelude::*;
//!
//! let addr: UnixAddr = format!("@ipckit-doc-{}", std::process::id()).parse()?;
//! let listener = UnixListener::bind(&addr)?;
//! let mut client = UnixStream::connect(&addr)?;
//! let mut server = listener.accept()?;
//! client.send(b"hi")?;
//! assert_eq!(server.recv()?, b"hi");
//! assert_eq!(server.peer_credentials()?.pid, std::process::id() as i32);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `unix(7)`, `socket(2)`, `bind(2)`, `connect(2)`, `accept(2)`,
//! `sendmsg(2)`/`recvmsg(2)` (`SCM_RIGHTS`), `socket(7)` (`SO_PEERCRED`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::dgram::DgramIo;
use crate::error::RecvTimeoutError;
use crate::fdio::{FdIo, Kind};
use crate::frame::Stream;
use crate::message::Deadline;
use crate::named::{remove_if_same, CreatedPath, FileId};
use crate::sys::socket::{self as sock, SockAddrUn};
use crate::{RecvError, SendError, SendTimeoutError};

/// The most descriptors one message can carry (`SCM_MAX_FD`).
pub const MAX_FDS: usize = sock::MAX_FDS;

/// A Unix socket address: a filesystem path or an abstract name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file at this path.
    Path(PathBuf),
    /// A name in the abstract namespace (written `@name`), not on disk.
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// A path address.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        UnixAddr::Path(path.into())
    }

    /// An abstract-namespace address (`@name`).
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Self {
        UnixAddr::Abstract(name.into())
    }

    fn sockaddr(&self) -> io::Result<SockAddrUn> {
        match self {
            UnixAddr::Path(p) => SockAddrUn::path(p.as_os_str().as_bytes()),
            UnixAddr::Abstract(n) => SockAddrUn::abstract_name(n),
        }
    }
}

impl FromStr for UnixAddr {
    type Err = io::Error;

    /// `@name` is an abstract name; anything else is a path.
    fn from_str(s: &str) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        match s.strip_prefix('@') {
            Some("") => Err(bad("an abstract socket name cannot be empty (write @name)")),
            Some(name) => Ok(UnixAddr::Abstract(name.as_bytes().to_vec())),
            None if s.is_empty() => Err(bad("a socket path cannot be empty")),
            None => Ok(UnixAddr::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// Who is at the other end of a connected Unix socket (`SO_PEERCRED`):
/// the process that connected (or created the pair), as the kernel saw it
/// then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process ID.
    pub pid: i32,
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
}

fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let c = sock::peer_cred(fd)?;
    Ok(PeerCredentials {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// A socket bound to an address; a bound path is removed on drop if it is
/// still the file this socket created.
#[derive(Debug)]
struct Bound {
    fd: OwnedFd,
    /// The socket file we created.
    file: Option<CreatedPath>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = f.remove();
        }
    }
}

/// The mode of every socket file ipckit creates, whatever the umask.
const SOCKET_MODE: u32 = 0o600;

fn kind_name(ty: libc::c_int) -> &'static str {
    match ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        _ => "seqpacket",
    }
}

/// Binds a new socket of type `ty`, replacing a stale socket file of our
/// own user. The file gets mode 0600 whatever the umask, with no moment
/// in which it is more open.
fn bind(ty: libc::c_int, addr: &UnixAddr) -> io::Result<Bound> {
    let sa = addr.sockaddr()?;
    let fd = sock::socket(libc::AF_UNIX, ty).map_err(|e| context(e, "make a socket for", addr))?;
    // The file takes the socket's mode less the umask: never above 0600.
    crate::sys::fd::fchmod(fd.as_fd(), SOCKET_MODE)?;
    match sock::bind(fd.as_fd(), &sa) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => match addr {
            UnixAddr::Abstract(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("the abstract name {addr} is already bound by another socket"),
                ))
            }
            UnixAddr::Path(path) => {
                replace_stale(ty, addr, path, &sa)?;
                sock::bind(fd.as_fd(), &sa).map_err(|e| context(e, "bind", addr))?;
            }
        },
        Err(e) => return Err(context(e, "bind", addr)),
    }
    let file = match addr {
        UnixAddr::Path(path) => {
            let made = FileId::of_made(path, "socket file", FileTypeExt::is_socket)?;
            let created = CreatedPath::new(path.clone(), made);
            let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
            if mode != SOCKET_MODE {
                // A umask above 077 took bits from 0600: give them back,
                // on the file we made only.
                restore_mode(path, &created, SOCKET_MODE)?;
            }
            Some(created)
        }
        UnixAddr::Abstract(_) => None,
    };
    Ok(Bound { fd, file })
}

/// Removes the socket file at `path` if it is stale (nothing accepts
/// connections on it) and ours: another user's socket file, or anything
/// that is not a socket, is never touched.
fn replace_stale(ty: libc::c_int, addr: &UnixAddr, path: &Path, sa: &SockAddrUn) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} exists and is not a socket; refusing to replace it \
                 (remove it yourself or choose another path)"
            ),
        ));
    }
    let me = crate::sys::process::euid();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} is a socket file of another user (uid {}; this process runs as uid {me}): \
                 not replacing it, live or not (choose another path)",
                meta.uid()
            ),
        ));
    }
    let answer = probe(ty, sa).map_err(|e| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} exists and cannot be asked whether it is live ({e}); not replacing it"),
        )
    })?;
    match answer {
        Probe::Stale => {
            remove_if_same(path, FileId::of(&meta))?;
            Ok(())
        }
        Probe::OtherType => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is in use by a live socket of another type"),
        )),
        Probe::Live => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} is in use by a running {} server; not replacing it",
                kind_name(ty)
            ),
        )),
    }
}

/// What a connection attempt says about a socket file.
enum Probe {
    /// Refused: no socket is bound to the file any more.
    Stale,
    /// Bound by a socket of another type.
    OtherType,
    /// Something accepts (or would, once its backlog has room).
    Live,
}

/// Asks the socket file at `sa` whether anything is bound to it, with a
/// connection of type `ty` that never blocks on a full backlog (and is
/// closed at once if it was accepted).
fn probe(ty: libc::c_int, sa: &SockAddrUn) -> io::Result<Probe> {
    let probe = sock::socket(libc::AF_UNIX, ty | libc::SOCK_NONBLOCK)?;
    match sock::connect(probe.as_fd(), sa) {
        Ok(()) => Ok(Probe::Live),
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Ok(Probe::Stale),
            Some(libc::EPROTOTYPE) => Ok(Probe::OtherType),
            // A full backlog: a server that is there.
            Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(Probe::Live),
            // No permission to connect (write permission on the file is
            // needed), or gone meanwhile: no answer.
            _ => Err(e),
        },
    }
}

/// Whether the file at `path` is a stale Unix socket file: a socket file
/// that no socket is bound to any more (its server exited without
/// removing it), so a connection to it is refused (`ECONNREFUSED`, see
/// `unix(7)`). A live socket file, of any type, is not stale; a path that
/// is not a socket file (or a symbolic link) is an `InvalidInput` error.
///
/// The question is asked with a connection attempt that cannot block; a
/// server whose socket is bound but not yet listening looks stale for
/// that moment. Connecting needs write permission on the file: without
/// it the answer is a `PermissionDenied` error.
pub fn is_stale(path: impl AsRef<Path>) -> io::Result<bool> {
    let path = path.as_ref();
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(not_a_socket_file(path));
    }
    let sa = UnixAddr::Path(path.to_owned()).sockaddr()?;
    Ok(matches!(probe(libc::SOCK_STREAM, &sa)?, Probe::Stale))
}

/// Removes the stale socket file at `path` (see [`is_stale`]), the way a
/// server replaces its own on bind: only this user's, and only the file
/// that was found stale (a file put there since is left alone). A live
/// socket file is an `AddrInUse` error, another user's a
/// `PermissionDenied` one, anything but a socket file `InvalidInput`.
pub fn remove_stale(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(not_a_socket_file(path));
    }
    let me = crate::sys::process::euid();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a socket file of another user (uid {}; this process runs as uid {me}): \
                 left alone",
                path.display(),
                meta.uid()
            ),
        ));
    }
    let sa = UnixAddr::Path(path.to_owned()).sockaddr()?;
    if !matches!(probe(libc::SOCK_STREAM, &sa)?, Probe::Stale) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is live: a socket is bound to it, so it is not removed",
                path.display()
            ),
        ));
    }
    if remove_if_same(path, FileId::of(&meta))? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} was removed or replaced while being removed; left alone",
                path.display()
            ),
        ))
    }
}

fn not_a_socket_file(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a socket file (symbolic links are not followed)",
            path.display()
        ),
    )
}

/// Sets the socket file we created to mode 0600, through a descriptor of
/// the file itself (`O_PATH | O_NOFOLLOW`, checked to be the file created).
fn restore_mode(path: &Path, created: &CreatedPath, mode: u32) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if CreatedPath::new(path.to_owned(), FileId::of(&f.metadata()?)) != *created {
        return Err(io::Error::other(format!(
            "{} was replaced right after bind: not changing its mode",
            path.display()
        )));
    }
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", f.as_raw_fd()),
        std::fs::Permissions::from_mode(mode),
    )
}

fn context(e: io::Error, what: &str, addr: &UnixAddr) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) if what == "connect to" => {
            ": no socket exists at that path (is the server running?)"
        }
        Some(libc::ENOENT) => ": the directory does not exist",
        Some(libc::ECONNREFUSED) => {
            ": nothing is listening there (a stale socket file, or a server that is not accepting)"
        }
        Some(libc::EACCES) => {
            ": permission denied (check the socket file's and its directory's permissions)"
        }
        Some(libc::EPROTOTYPE) => {
            ": the socket there is of another type (stream, datagram or seqpacket)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("cannot {what} {addr}: {e}{hint}"))
}

fn connect(ty: libc::c_int, addr: &UnixAddr) -> io::Result<OwnedFd> {
    let sa = addr.sockaddr()?;
    let fd = sock::socket(libc::AF_UNIX, ty).map_err(|e| context(e, "make a socket for", addr))?;
    match sock::connect(fd.as_fd(), &sa) {
        Ok(()) => Ok(fd),
        // The connection goes on after EINTR; wait for it to finish.
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            crate::sys::fd::poll(fd.as_fd(), crate::sys::fd::Interest::Write, None)?;
            Ok(fd)
        }
        Err(e) => Err(context(e, "connect to", addr)),
    }
}

/// A connected `SOCK_STREAM` socket's bare descriptor, errors worded as
/// [`UnixStream::connect`]'s.
pub(crate) fn connect_stream_fd(addr: &UnixAddr) -> io::Result<OwnedFd> {
    connect(libc::SOCK_STREAM, addr)
}

fn accept_timeout(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<OwnedFd> {
    if let Some(t) = timeout {
        let deadline = Deadline::after(t).instant();
        if !crate::sys::fd::poll(fd, crate::sys::fd::Interest::Read, deadline)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {t:?} waiting for a connection"),
            ));
        }
    }
    sock::accept(fd)
}

macro_rules! listener {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $conn:ident, $wrap:path) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            bound: Bound,
            addr: UnixAddr,
        }

        impl $name {
            /// Binds `addr` and listens (backlog 128). See the module docs
            /// for how an existing socket file is handled.
            pub fn bind(addr: &UnixAddr) -> io::Result<Self> {
                let bound = bind($ty, addr)?;
                sock::listen(bound.fd.as_fd(), 128)?;
                Ok($name { bound, addr: addr.clone() })
            }

            /// The address this listener is bound to.
            pub fn local_addr(&self) -> &UnixAddr {
                &self.addr
            }

            /// Waits for the next connection.
            pub fn accept(&self) -> io::Result<$conn> {
                $wrap(sock::accept(self.bound.fd.as_fd())?)
            }

            /// Waits for the next connection; its bare descriptor.
            #[allow(dead_code)]
            pub(crate) fn accept_fd(&self) -> io::Result<OwnedFd> {
                sock::accept(self.bound.fd.as_fd())
            }

            /// At the open-file limit: takes one waiting connection with
            /// the reserve (see `sys::socket::Spare::shed`) and hands it
            /// to `answer`, to tell the client why; whether one was taken.
            #[allow(dead_code)]
            pub(crate) fn shed(&self, spare: &mut sock::Spare, answer: impl FnOnce($conn)) -> bool {
                spare.shed(self.bound.fd.as_fd(), |fd| {
                    if let Ok(c) = $wrap(fd) {
                        answer(c)
                    }
                })
            }

            /// Waits at most `timeout` for the next connection.
            pub fn accept_timeout(&self, timeout: Duration) -> io::Result<$conn> {
                $wrap(accept_timeout(self.bound.fd.as_fd(), Some(timeout))?)
            }

            /// Sets the socket file's mode (connecting needs write
            /// permission on it), on the file this listener made only.
            pub fn set_mode(&self, mode: u32) -> io::Result<()> {
                match &self.bound.file {
                    Some(created) => restore_mode(created.path(), created, mode),
                    None => Ok(()),
                }
            }

            /// Keeps the socket file when this listener is dropped.
            pub fn keep(&mut self) {
                self.bound.file = None;
            }

            /// The socket file this listener created (to remove it from a
            /// signal handler thread, say); `None` for an abstract name or
            /// after [`keep`](Self::keep).
            pub fn created_path(&self) -> Option<CreatedPath> {
                self.bound.file.clone()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.bound.fd.as_fd()
            }
        }

        /// Ready when a connection waits to be accepted.
        impl crate::select::Selectable for $name {
            fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
                Ok(crate::select::Readiness::descriptor(self.bound.fd.as_fd()))
            }
        }
    };
}

listener!(
    /// A listening `SOCK_STREAM` Unix socket.
    UnixListener, libc::SOCK_STREAM, UnixStream, UnixStream::from_fd
);
listener!(
    /// A listening `SOCK_SEQPACKET` Unix socket.
    SeqpacketListener, libc::SOCK_SEQPACKET, SeqpacketStream, SeqpacketStream::from_fd
);

/// A connected `SOCK_STREAM` Unix socket carrying framed messages, with
/// descriptor passing and peer credentials.
#[derive(Debug)]
pub struct UnixStream {
    s: Stream,
}

impl UnixStream {
    /// Chooses how messages are delimited (default: length-prefixed).
    pub fn set_framing(&mut self, framing: crate::frame::Framing) {
        self.s.set_framing(framing);
    }

    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(UnixStream {
            s: Stream::new(FdIo::new(fd, Kind::UnixSocket)?),
        })
    }

    /// Connects to a listening stream socket.
    pub fn connect(addr: &UnixAddr) -> io::Result<Self> {
        Self::from_fd(connect(libc::SOCK_STREAM, addr)?)
    }

    /// Two connected streams (`socketpair(2)`), for example to hand one end
    /// to a child process.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = sock::socketpair(libc::SOCK_STREAM)?;
        Ok((Self::from_fd(a)?, Self::from_fd(b)?))
    }

    /// Wraps a descriptor that must be a connected `SOCK_STREAM` Unix socket.
    pub fn from_owned_fd(fd: OwnedFd) -> io::Result<Self> {
        check_type(fd.as_fd(), libc::SOCK_STREAM)?;
        Self::from_fd(fd)
    }

    /// A sending and a receiving stream over this socket.
    pub(crate) fn split(self) -> io::Result<(Self, Self)> {
        let (tx, rx) = self.s.split()?;
        Ok((UnixStream { s: tx }, UnixStream { s: rx }))
    }

    /// The credentials of the peer process.
    pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        peer_credentials(self.s.io.fd())
    }

    /// Sends one message with descriptors attached (`SCM_RIGHTS`). The
    /// receiver gets duplicates; the originals stay open here.
    pub fn send_with_fds<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError<M>> {
        send_fds(msg, |m| self.s.send(m, fds, Deadline::Never))
    }

    /// Receives one message and the descriptors sent with it (close-on-exec).
    ///
    /// The first call switches descriptor passing on (see
    /// [`set_receive_fds`](Self::set_receive_fds)). If plain receives
    /// before it already read bytes of later messages ahead, it fails with
    /// `InvalidInput` instead: any descriptors sent with those bytes were
    /// closed by the kernel. A stream whose protocol mixes messages with and
    /// without descriptors calls `set_receive_fds(true)` first.
    pub fn recv_with_fds(&mut self, buf: &mut Vec<u8>) -> Result<Vec<OwnedFd>, RecvError> {
        recv_fds(|out, fds| self.s.recv(out, Some(fds), Deadline::Never), buf)
    }

    /// Switches descriptor passing on or off for receiving (default: off
    /// until the first [`recv_with_fds`](Self::recv_with_fds)).
    ///
    /// On, every read is a `recvmsg(2)` with room for `SCM_RIGHTS`
    /// (`unix(7)`), about 150 ns more per read than the plain `recv(2)`
    /// used while it is off; descriptors that arrive with a message read
    /// by [`recv`](crate::MessageReceiver::recv) are closed. Off, the
    /// kernel closes descriptors that arrive. Sending descriptors needs no
    /// setting.
    pub fn set_receive_fds(&mut self, on: bool) {
        self.s.io.set_recv_fds(on);
    }

    /// Sets the largest message accepted and sent (default 16 MiB).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.s.set_max(max);
    }

    /// Closes the writing direction: the peer reads end-of-file after the
    /// messages already sent.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.s.flush()?;
        sock::shutdown_write(self.s.io.fd())
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.s.io.fd()
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.s.io.fd().as_raw_fd()
    }
}

impl_message_sender!(UnixStream => s);
impl_message_receiver!(UnixStream => s);

impl crate::select::Selectable for UnixStream {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(self.s.readiness())
    }
}

fn check_type(fd: BorrowedFd<'_>, want: libc::c_int) -> io::Result<()> {
    let ty = sock::socket_type(fd)?;
    if ty != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the descriptor is a {} socket, not a {} socket",
                kind_name(ty),
                kind_name(want)
            ),
        ));
    }
    Ok(())
}

fn send_fds<M: AsRef<[u8]>>(
    msg: M,
    send: impl FnOnce(&[u8]) -> Result<(), SendTimeoutError<()>>,
) -> Result<(), SendError<M>> {
    send(msg.as_ref()).map_err(|e| e.without_deadline(msg))
}

fn recv_fds(
    recv: impl FnOnce(&mut Vec<u8>, &mut Vec<OwnedFd>) -> Result<(), RecvTimeoutError>,
    buf: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>, RecvError> {
    let mut fds = Vec::new();
    recv(buf, &mut fds)
        .map(|()| fds)
        .map_err(RecvTimeoutError::without_deadline)
}

macro_rules! packet_socket_common {
    ($name:ident) => {
        impl $name {
            /// The credentials of the peer process (connected sockets and pairs).
            pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
                peer_credentials(self.d.io.fd())
            }

            /// Sends one message with descriptors attached (`SCM_RIGHTS`).
            pub fn send_with_fds<M: AsRef<[u8]>>(
                &mut self,
                msg: M,
                fds: &[BorrowedFd<'_>],
            ) -> Result<(), SendError<M>> {
                send_fds(msg, |m| self.d.send(m, fds, Deadline::Never))
            }

            /// Receives one message and the descriptors sent with it.
            pub fn recv_with_fds(&mut self, buf: &mut Vec<u8>) -> Result<Vec<OwnedFd>, RecvError> {
                recv_fds(|out, fds| self.d.recv(out, Some(fds), Deadline::Never), buf)
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.d.io.fd()
            }
        }

        impl crate::select::Selectable for $name {
            fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
                Ok(crate::select::Readiness::descriptor(self.d.io.fd()))
            }
        }

        impl_message_sender!($name => d);
        impl_message_receiver!($name => d);
    };
}

/// A connected `SOCK_SEQPACKET` Unix socket: a connection, like a stream,
/// that keeps message boundaries, like datagrams. An empty message cannot be
/// sent (it would read as end-of-connection).
#[derive(Debug)]
pub struct SeqpacketStream {
    d: DgramIo,
}

impl SeqpacketStream {
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(SeqpacketStream {
            d: DgramIo::new(FdIo::new(fd, Kind::UnixSocket)?, true),
        })
    }

    /// Connects to a listening seqpacket socket.
    pub fn connect(addr: &UnixAddr) -> io::Result<Self> {
        Self::from_fd(connect(libc::SOCK_SEQPACKET, addr)?)
    }

    /// Two connected seqpacket sockets (`socketpair(2)`).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = sock::socketpair(libc::SOCK_SEQPACKET)?;
        Ok((Self::from_fd(a)?, Self::from_fd(b)?))
    }

    /// A sending and a receiving half over this socket.
    pub(crate) fn split(self) -> io::Result<(Self, Self)> {
        let (tx, rx) = self.d.split()?;
        Ok((SeqpacketStream { d: tx }, SeqpacketStream { d: rx }))
    }
}

packet_socket_common!(SeqpacketStream);

/// A `SOCK_DGRAM` Unix socket. On Linux, Unix datagrams are reliable and
/// ordered: a full receiver makes the sender wait rather than dropping.
///
/// The message traits send to the connected peer ([`UnixDatagram::connect`])
/// and receive from anyone who sends here.
#[derive(Debug)]
pub struct UnixDatagram {
    d: DgramIo,
    _bound: Option<Bound>,
}

impl UnixDatagram {
    fn new(fd: OwnedFd, bound: Option<Bound>) -> io::Result<Self> {
        let io = FdIo::new(fd, Kind::UnixSocket)?;
        Ok(UnixDatagram {
            d: DgramIo::new(io, false),
            _bound: bound,
        })
    }

    /// A datagram socket bound to `addr`, so others can send to it.
    pub fn bind(addr: &UnixAddr) -> io::Result<Self> {
        let bound = bind(libc::SOCK_DGRAM, addr)?;
        let fd = bound.fd.try_clone()?;
        Self::new(fd, Some(bound))
    }

    /// The socket file [`bind`](Self::bind) created (to remove it from a
    /// signal handler thread, say); `None` for an abstract name or an
    /// unbound socket.
    pub fn created_path(&self) -> Option<CreatedPath> {
        self._bound.as_ref().and_then(|b| b.file.clone())
    }

    /// An unbound datagram socket (it can send; replies need a bound one).
    pub fn unbound() -> io::Result<Self> {
        Self::new(sock::socket(libc::AF_UNIX, libc::SOCK_DGRAM)?, None)
    }

    /// Two connected datagram sockets (`socketpair(2)`).
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = sock::socketpair(libc::SOCK_DGRAM)?;
        Ok((Self::new(a, None)?, Self::new(b, None)?))
    }

    /// Sets the default destination: sends go to `addr`, and only datagrams
    /// from `addr` are received.
    pub fn connect(&mut self, addr: &UnixAddr) -> io::Result<()> {
        let sa = addr.sockaddr()?;
        sock::connect(self.d.io.fd(), &sa).map_err(|e| context(e, "connect to", addr))
    }

    /// A sending and a receiving half over this socket; the receiving one
    /// keeps the bound name (removed when it is dropped).
    pub(crate) fn split(self) -> io::Result<(Self, Self)> {
        let (tx, rx) = self.d.split()?;
        Ok((
            UnixDatagram {
                d: tx,
                _bound: None,
            },
            UnixDatagram {
                d: rx,
                _bound: self._bound,
            },
        ))
    }

    /// An unbound datagram socket connected to `addr`.
    pub fn connect_to(addr: &UnixAddr) -> io::Result<Self> {
        let mut s = Self::unbound()?;
        s.connect(addr)?;
        Ok(s)
    }
}

packet_socket_common!(UnixDatagram);
