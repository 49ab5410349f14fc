//! TCP and UDP sockets (`tcp(7)`, `udp(7)`), over IPv4 or IPv6.
//!
//! [`TcpStream`] carries framed messages with `TCP_NODELAY` set, so a small
//! message leaves at once instead of waiting for Nagle's algorithm.
//! [`UdpSocket`] sends one datagram per message; UDP may drop, duplicate or
//! reorder datagrams (rarely on loopback, but under load it drops), and one
//! datagram carries at most 65507 bytes over IPv4.
//!
//! # Example
//!
//! ```
//! use ipckit::socket::inet::{TcpListener, TcpStream};
//! use ipckit::prelude::*;
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! let mut server = listener.accept()?;
//! client.send(b"ping")?;
//! assert_eq!(server.recv()?, b"ping");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `tcp(7)` (`TCP_NODELAY`), `udp(7)`, `socket(2)`, `ip(7)`, `ipv6(7)`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::dgram::DgramIo;
use crate::fdio::{FdIo, Kind};
use crate::frame::Stream;
use crate::message::Deadline;
use crate::sys::fd::{poll, Interest};

fn with_context(e: io::Error, what: &str, addr: impl std::fmt::Debug) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {addr:?}: {e}"))
}

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
}

impl TcpListener {
    /// Binds and listens; port 0 picks a free port (see [`Self::local_addr`]).
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let inner =
            std::net::TcpListener::bind(&addr).map_err(|e| with_context(e, "listen on", &addr))?;
        Ok(TcpListener { inner })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<TcpStream> {
        let (s, _) = self.inner.accept()?;
        TcpStream::from_std(s)
    }

    /// Waits at most `timeout` for the next connection.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<TcpStream> {
        if !poll(
            self.inner.as_fd(),
            Interest::Read,
            Deadline::after(timeout).instant(),
        )? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?} waiting for a connection"),
            ));
        }
        self.accept()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// A TCP connection carrying framed messages (`TCP_NODELAY` on).
#[derive(Debug)]
pub struct TcpStream {
    s: Stream,
    peer: SocketAddr,
}

impl TcpStream {
    /// Chooses how messages are delimited (default: length-prefixed).
    pub fn set_framing(&mut self, framing: crate::frame::Framing) {
        self.s.set_framing(framing);
    }

    fn from_std(s: std::net::TcpStream) -> io::Result<Self> {
        s.set_nodelay(true)?;
        let peer = s.peer_addr()?;
        Ok(TcpStream {
            s: Stream::new(FdIo::new(OwnedFd::from(s), Kind::InetSocket)?),
            peer,
        })
    }

    /// Connects to `addr`.
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let s = std::net::TcpStream::connect(&addr)
            .map_err(|e| with_context(e, "connect to", &addr))?;
        Self::from_std(s)
    }

    /// Connects to `addr`, giving up after `timeout`. A zero timeout makes
    /// one plain attempt (a port nobody listens on refuses at once; the
    /// handshake itself is not cut short).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<Self> {
        if timeout.is_zero() {
            return Self::connect(addr);
        }
        let s = std::net::TcpStream::connect_timeout(addr, timeout)
            .map_err(|e| with_context(e, "connect to", addr))?;
        Self::from_std(s)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sets the largest message accepted and sent (default 16 MiB).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.s.set_max(max);
    }

    /// A sending and a receiving stream over this socket.
    pub(crate) fn split(self) -> io::Result<(Self, Self)> {
        let (tx, rx) = self.s.split()?;
        Ok((
            TcpStream {
                s: tx,
                peer: self.peer,
            },
            TcpStream {
                s: rx,
                peer: self.peer,
            },
        ))
    }

    /// Closes the writing direction; the peer reads end-of-file.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.s.flush()?;
        crate::sys::socket::shutdown_write(self.s.io.fd())
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.s.io.fd()
    }
}

impl_message_sender!(TcpStream => s);
impl_message_receiver!(TcpStream => s);

impl crate::select::Selectable for TcpStream {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(self.s.readiness())
    }
}

impl crate::select::Selectable for TcpListener {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::descriptor(AsFd::as_fd(&*self)))
    }
}

/// A UDP socket. The message traits send to the connected peer
/// ([`UdpSocket::connect`]) and receive from anyone.
#[derive(Debug)]
pub struct UdpSocket {
    inner: std::net::UdpSocket,
    d: DgramIo,
}

impl UdpSocket {
    /// The most a UDP datagram can carry over IPv4.
    pub const MAX_DATAGRAM: usize = 65507;

    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let inner = std::net::UdpSocket::bind(&addr).map_err(|e| with_context(e, "bind", &addr))?;
        let fd = OwnedFd::from(inner.try_clone()?);
        let mut d = DgramIo::new(FdIo::new(fd, Kind::InetSocket)?, false);
        d.max = Self::MAX_DATAGRAM.min(d.max);
        Ok(UdpSocket { inner, d })
    }

    /// Sets the default destination; only datagrams from it are received.
    pub fn connect(&self, addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<()> {
        self.inner
            .connect(&addr)
            .map_err(|e| with_context(e, "connect to", &addr))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A sending and a receiving half over this socket.
    pub(crate) fn split(self) -> io::Result<(Self, Self)> {
        let inner = self.inner.try_clone()?;
        let (tx, rx) = self.d.split()?;
        Ok((
            UdpSocket { inner, d: tx },
            UdpSocket {
                inner: self.inner,
                d: rx,
            },
        ))
    }

    /// Sends one datagram to `addr`.
    pub fn send_to(&self, msg: &[u8], addr: impl ToSocketAddrs) -> io::Result<()> {
        let n = self.inner.send_to(msg, addr)?;
        debug_assert_eq!(n, msg.len());
        Ok(())
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl_message_sender!(UdpSocket => d);
impl_message_receiver!(UdpSocket => d);

impl crate::select::Selectable for UdpSocket {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::descriptor(AsFd::as_fd(&*self)))
    }
}
