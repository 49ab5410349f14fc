//! Raw sockets (note 000): IP packets of one protocol with their headers
//! ([`RawSocket`], `raw(7)`), and whole link-layer frames of one network
//! interface ([`PacketSocket`], `packet(7)`).
//!
//! A raw socket sees what the kernel's TCP and UDP see, and more: every
//! packet of its protocol that reaches the host (a raw ICMP socket gets
//! every ICMP message; a raw UDP socket a copy of every UDP datagram, with
//! its IP and UDP headers), and it sends packets whose protocol header it
//! writes itself. A packet socket goes one layer lower, to the frames of
//! an interface, link header included. Both need `CAP_NET_RAW` (root has
//! it); without it, opening one fails with an error that says so.
//!
//! These are not channels between two programs: a packet comes from the
//! network stack, and messages are whatever the protocol says. Parse and
//! build headers with a packet crate (the tests and `examples/raw_ping.rs`
//! use `etherparse`).
//!
//! What a receive returns, per `raw(7)` and `ipv6(7)`:
//! - IPv4 ([`RawSocket::ipv4`]): the whole packet, IPv4 header first.
//! - IPv6 ([`RawSocket::ipv6`]): the payload after the IPv6 header (the
//!   kernel keeps the header; the source address is returned beside it).
//! - A packet socket: the frame from its link header on (on `lo`, an
//!   Ethernet header of zero addresses).
//!
//! Sends: on IPv4 and IPv6 the kernel writes the IP header (unless
//! [`RawSocket::set_header_included`]); a packet socket sends the frame as
//! given, link header and all.
//!
//! # Example
//!
//! ```no_run
//! use ipckit::socket::raw::RawSocket;
//!
//! // ICMP (protocol 1): an echo request to 127.0.0.1, the reply back.
//! let sock = RawSocket::ipv4(1)?;
//! let mut request = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
//! let sum = !request.chunks(2).fold(0u32, |s, c| {
//!     let s = s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
//!     (s & 0xffff) + (s >> 16)
//! }) as u16;
//! request[2..4].copy_from_slice(&sum.to_be_bytes());
//! sock.send_to(&request, "127.0.0.1".parse()?)?;
//! let mut buf = [0u8; 65535];
//! let (n, from) = sock.recv_from(&mut buf)?; // the IPv4 header, then ICMP
//! println!("{n} bytes from {from}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//! `raw(7)`, `ip(7)` (`IP_HDRINCL`), `ipv6(7)`, `packet(7)`,
//! `capabilities(7)` (`CAP_NET_RAW`), `if_nametoindex(3)`.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys::fd::{poll, Interest};
use crate::sys::raw as sys;

/// The largest IP packet: a buffer of this size never truncates one.
pub const MAX_PACKET: usize = 65535;

/// `ETH_P_ALL`: every protocol, for [`PacketSocket::bind`].
pub const ETH_P_ALL: u16 = 0x0003;
/// `ETH_P_IP`: IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_IPV6`: IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// Adds what to do when opening a raw or packet socket is not allowed.
fn opening(e: io::Error, what: &str) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot open {what}: it needs CAP_NET_RAW (run as root, or give the program \
                 the capability: setcap cap_net_raw+ep PROGRAM)"
            ),
        ),
        _ => io::Error::new(e.kind(), format!("cannot open {what}: {e}")),
    }
}

fn truncated(n: usize, have: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "a packet of {n} bytes arrived for a {have}-byte buffer and was cut (the rest is \
             lost): receive into a buffer of {MAX_PACKET} bytes (MAX_PACKET)"
        ),
    )
}

/// Waits until `fd` is readable or `deadline` passes.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant, what: &str) -> io::Result<()> {
    if poll(fd, Interest::Read, Some(deadline))? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {what} arrived in time"),
        ))
    }
}

/// Receives with `recv` (which reports the real length) into `buf`,
/// within `timeout` if there is one; a packet cut short is an error.
fn receive<T>(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
    what: &str,
    recv: impl Fn(BorrowedFd<'_>, &mut [u8], libc::c_int) -> io::Result<(usize, T)>,
) -> io::Result<(usize, T)> {
    let Some(t) = timeout else {
        let (n, from) = recv(fd, buf, 0)?;
        return if n > buf.len() {
            Err(truncated(n, buf.len()))
        } else {
            Ok((n, from))
        };
    };
    let deadline = Instant::now() + t;
    loop {
        match recv(fd, buf, libc::MSG_DONTWAIT) {
            Ok((n, _)) if n > buf.len() => return Err(truncated(n, buf.len())),
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(fd, deadline, what)?,
            Err(e) => return Err(e),
        }
    }
}

/// A raw IP socket for one protocol (`socket(AF_INET[6], SOCK_RAW, protocol)`).
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    v6: bool,
    protocol: u8,
}

impl RawSocket {
    /// A raw IPv4 socket for IP protocol number `protocol` (1 ICMP, 6 TCP,
    /// 17 UDP, …; `/etc/protocols`). Needs `CAP_NET_RAW`.
    pub fn ipv4(protocol: u8) -> io::Result<Self> {
        Self::open(false, protocol)
    }

    /// A raw IPv6 socket for next-header number `protocol` (58 ICMPv6, …).
    /// Needs `CAP_NET_RAW`.
    pub fn ipv6(protocol: u8) -> io::Result<Self> {
        Self::open(true, protocol)
    }

    fn open(v6: bool, protocol: u8) -> io::Result<Self> {
        let (domain, name) = if v6 {
            (libc::AF_INET6, "IPv6")
        } else {
            (libc::AF_INET, "IPv4")
        };
        let fd = sys::socket_raw(domain, protocol.into())
            .map_err(|e| opening(e, &format!("a raw {name} socket for protocol {protocol}")))?;
        Ok(RawSocket { fd, v6, protocol })
    }

    /// The protocol number it was opened for.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Whether it is an IPv6 socket.
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// IPv4 only: from now on the packets sent start with their IPv4
    /// header, written by the caller (`IP_HDRINCL`; the kernel still
    /// fills in the checksum and, when zero, the id and source address).
    pub fn set_header_included(&self, on: bool) -> io::Result<()> {
        if self.v6 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "set_header_included is for IPv4 raw sockets (IPv6 takes the header's fields \
                 as socket options and ancillary data instead)",
            ));
        }
        sys::set_int_option(
            self.fd.as_fd(),
            libc::IPPROTO_IP,
            libc::IP_HDRINCL,
            on.into(),
        )
    }

    /// Sends one packet to `to`: the protocol's header and data (the
    /// kernel puts the IP header in front, unless the header is included).
    pub fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<()> {
        if to.is_ipv6() != self.v6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot send to {to} on an {} raw socket",
                    if self.v6 { "IPv6" } else { "IPv4" }
                ),
            ));
        }
        let n = sys::sendto_ip(self.fd.as_fd(), packet, to, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot send a packet to {to}: {e}")))?;
        if n != packet.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {n} of the packet's {} bytes were sent", packet.len()),
            ));
        }
        Ok(())
    }

    /// Waits for the next packet: its length in `buf` and its source
    /// address. A packet larger than `buf` is an error (a buffer of
    /// [`MAX_PACKET`] bytes holds any).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        receive(self.fd.as_fd(), buf, None, "packet", sys::recvfrom_ip)
    }

    /// [`recv_from`](Self::recv_from) waiting at most `timeout`
    /// (`ErrorKind::TimedOut` after it).
    pub fn recv_from_timeout(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<(usize, IpAddr)> {
        receive(
            self.fd.as_fd(),
            buf,
            Some(timeout),
            "packet",
            sys::recvfrom_ip,
        )
    }
}

impl AsFd for RawSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Who a frame was for, as the kernel classed it (`sll_pkttype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// For this host (`PACKET_HOST`).
    Host,
    /// Broadcast (`PACKET_BROADCAST`).
    Broadcast,
    /// Multicast (`PACKET_MULTICAST`).
    Multicast,
    /// For another host, seen in promiscuous mode (`PACKET_OTHERHOST`).
    OtherHost,
    /// Sent by this host (`PACKET_OUTGOING`): on `lo` every frame is seen
    /// once going out and once coming in.
    Outgoing,
    /// Another value.
    Other(u8),
}

/// Where a frame came from ([`PacketSocket::recv`]).
#[derive(Debug, Clone)]
pub struct FrameInfo {
    /// The frame's protocol (EtherType, host byte order).
    pub ethertype: u16,
    /// The interface it came on.
    pub interface_index: u32,
    /// Who it was for.
    pub kind: FrameKind,
    source: [u8; 8],
    source_len: u8,
}

impl FrameInfo {
    /// The sender's link-layer address (a MAC address on Ethernet).
    pub fn source(&self) -> &[u8] {
        &self.source[..usize::from(self.source_len)]
    }
}

/// A packet socket bound to one network interface: whole frames, link
/// header included (`socket(AF_PACKET, SOCK_RAW, protocol)`).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    interface: String,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a packet socket receiving the frames of `ethertype`
    /// ([`ETH_P_ALL`], [`ETH_P_IP`], …) on `interface` (`lo`, `eth0`, …;
    /// `ip link` lists them), and sending frames there. Needs
    /// `CAP_NET_RAW`.
    pub fn bind(interface: &str, ethertype: u16) -> io::Result<Self> {
        let ifindex = sys::interface_index(interface).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no network interface named {interface:?} (ip link lists them)"),
                )
            } else {
                io::Error::new(
                    e.kind(),
                    format!("cannot find interface {interface:?}: {e}"),
                )
            }
        })?;
        let proto = ethertype.to_be();
        let what = format!("a packet socket on {interface}");
        let fd = sys::socket_raw(libc::AF_PACKET, proto.into()).map_err(|e| opening(e, &what))?;
        sys::bind_packet(fd.as_fd(), ifindex, proto)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {what}: {e}")))?;
        Ok(PacketSocket {
            fd,
            interface: interface.to_string(),
            ifindex,
        })
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface's index.
    pub fn interface_index(&self) -> u32 {
        self.ifindex
    }

    /// Sends one frame on the interface, from its link header on.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let n = crate::sys::socket::send(self.fd.as_fd(), frame, 0).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot send a frame on {}: {e}", self.interface),
            )
        })?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {n} of the frame's {} bytes were sent", frame.len()),
            ));
        }
        Ok(())
    }

    /// Waits for the next frame: its length in `buf` and where it came
    /// from. A frame larger than `buf` is an error.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, FrameInfo)> {
        receive(self.fd.as_fd(), buf, None, "frame", Self::recv_info)
    }

    /// [`recv`](Self::recv) waiting at most `timeout`
    /// (`ErrorKind::TimedOut` after it).
    pub fn recv_timeout(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<(usize, FrameInfo)> {
        receive(
            self.fd.as_fd(),
            buf,
            Some(timeout),
            "frame",
            Self::recv_info,
        )
    }

    fn recv_info(
        fd: BorrowedFd<'_>,
        buf: &mut [u8],
        flags: libc::c_int,
    ) -> io::Result<(usize, FrameInfo)> {
        let (n, from) = sys::recvfrom_packet(fd, buf, flags)?;
        let kind = match from.pkttype {
            0 => FrameKind::Host,
            1 => FrameKind::Broadcast,
            2 => FrameKind::Multicast,
            3 => FrameKind::OtherHost,
            4 => FrameKind::Outgoing,
            k => FrameKind::Other(k),
        };
        Ok((
            n,
            FrameInfo {
                ethertype: u16::from_be(from.protocol_be),
                interface_index: from.ifindex,
                kind,
                source: from.addr,
                source_len: from.addr_len,
            },
        ))
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
