//! Raw IP sockets (`raw(7)`) and packet sockets (`packet(7)`): the calls
//! std does not make, with the addresses they take in kernel form.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::syscall;

/// `socket(domain, SOCK_RAW, protocol)` with `SOCK_CLOEXEC`.
pub(crate) fn socket_raw(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let fd = syscall!(socket(
        domain,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        protocol
    ))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An IP address in kernel form (`sockaddr_in` or `sockaddr_in6`), port 0.
fn sockaddr_ip(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // sockaddr, sockaddr_in included.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// `sendto(2)` of one packet to an IP address; `MSG_NOSIGNAL` is added.
pub(crate) fn sendto_ip(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    addr: IpAddr,
    flags: libc::c_int,
) -> io::Result<usize> {
    let (ss, len) = sockaddr_ip(addr);
    // SAFETY: `buf` is valid for its length; `ss` holds a sockaddr of
    // length `len`.
    let n = syscall!(sendto(
        fd.as_raw_fd(),
        buf.as_ptr().cast(),
        buf.len(),
        flags | libc::MSG_NOSIGNAL,
        (&ss as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    Ok(n as usize)
}

/// `recvfrom(2)` with `MSG_TRUNC` of one packet: its real length (which
/// may exceed `buf`) and the IP address it came from.
pub(crate) fn recvfrom_ip(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, IpAddr)> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length; `ss` has room for `len`
    // bytes of address, and `len` is updated with what was written.
    let n = syscall!(recvfrom(
        fd.as_raw_fd(),
        buf.as_mut_ptr().cast(),
        buf.len(),
        flags | libc::MSG_TRUNC,
        ss.as_mut_ptr().cast(),
        &mut len
    ))?;
    // SAFETY: zero-initialised, then partly written by the kernel: every
    // byte is initialised.
    let ss = unsafe { ss.assume_init() };
    let from = match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
        f => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a packet from an address of family {f}, not IP"),
            ))
        }
    };
    Ok((n as usize, from))
}

/// `setsockopt(level, name, int)`.
pub(crate) fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid int for the length given.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const libc::c_int).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t
    ))?;
    Ok(())
}

/// `if_nametoindex(3)`: the index of the network interface `name`.
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an interface name contains a NUL byte",
        )
    })?;
    // SAFETY: `c` is a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// A link-layer address in kernel form (`sockaddr_ll`).
fn sockaddr_ll(ifindex: u32, protocol_be: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = protocol_be;
    sll.sll_ifindex = ifindex as libc::c_int;
    sll
}

/// `bind(2)` of a packet socket to an interface and protocol (the
/// EtherType in network byte order, as `packet(7)` takes it).
pub(crate) fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, protocol_be: u16) -> io::Result<()> {
    let sll = sockaddr_ll(ifindex, protocol_be);
    // SAFETY: `sll` is a valid sockaddr_ll of the length given.
    syscall!(bind(
        fd.as_raw_fd(),
        (&sll as *const libc::sockaddr_ll).cast(),
        mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t
    ))?;
    Ok(())
}

/// What `recvfrom(2)` says of a packet socket's frame (`sockaddr_ll`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkFrom {
    pub(crate) protocol_be: u16,
    pub(crate) ifindex: u32,
    pub(crate) pkttype: u8,
    pub(crate) addr: [u8; 8],
    pub(crate) addr_len: u8,
}

/// `recvfrom(2)` with `MSG_TRUNC` on a packet socket: the frame's real
/// length and where it came from.
pub(crate) fn recvfrom_packet(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, LinkFrom)> {
    let mut sll = MaybeUninit::<libc::sockaddr_ll>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length; `sll` has room for `len`
    // bytes of address, and `len` is updated with what was written.
    let n = syscall!(recvfrom(
        fd.as_raw_fd(),
        buf.as_mut_ptr().cast(),
        buf.len(),
        flags | libc::MSG_TRUNC,
        sll.as_mut_ptr().cast(),
        &mut len
    ))?;
    // SAFETY: zero-initialised, then partly written by the kernel.
    let sll = unsafe { sll.assume_init() };
    Ok((
        n as usize,
        LinkFrom {
            protocol_be: sll.sll_protocol,
            ifindex: sll.sll_ifindex as u32,
            pkttype: sll.sll_pkttype,
            addr: sll.sll_addr,
            addr_len: sll.sll_halen.min(8),
        },
    ))
}
