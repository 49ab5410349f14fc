//! Unix sockets as the kernel's `sock_diag(7)` netlink interface reports
//! them: type, state, bound name, peer inode (`UNIX_DIAG_PEER`) and
//! receive queue, for every Unix socket in this network namespace.

use std::collections::HashMap;
use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::unix::nlas::{Nla, UnixDiagName};
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// One Unix socket.
#[derive(Debug, Clone, Default)]
pub struct UnixSock {
    /// `SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_SEQPACKET` 5.
    pub kind: u8,
    /// TCP-like state: 1 connected, 7 unconnected, 10 listening.
    pub state: u8,
    /// The bound name: a path, or `@name` for an abstract one.
    pub name: Option<String>,
    pub peer: Option<u64>,
    /// Bytes queued to be read (for a listener: connections waiting).
    pub queued: Option<u64>,
}

/// Every Unix socket, by inode.
pub fn unix_sockets() -> io::Result<HashMap<u64, UnixSock>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::UnixRequest(UnixRequest {
            // Every state (connected, unconnected, listening, ...).
            state_flags: StateFlags::from_bits_retain(u32::MAX),
            inode: 0,
            show_flags: ShowFlags::NAME | ShowFlags::PEER | ShowFlags::RQLEN,
            cookie: [0xff; 8],
        })
        .into(),
    );
    packet.finalize();
    let mut out = vec![0; packet.header.length as usize];
    packet.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut found = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0)?;
        let mut at = 0;
        while at < size {
            let m = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[at..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                    let mut s = UnixSock {
                        kind: r.header.kind,
                        state: r.header.state,
                        ..UnixSock::default()
                    };
                    for nla in r.nlas {
                        match nla {
                            Nla::Name(UnixDiagName::Pathname(p)) => {
                                s.name = Some(p.to_string_lossy().into_owned())
                            }
                            Nla::Name(UnixDiagName::Abstract(a)) => {
                                s.name = Some(format!("@{}", String::from_utf8_lossy(&a)))
                            }
                            Nla::Peer(p) => s.peer = Some(u64::from(p)),
                            Nla::ReceiveQueueLength(q, _) => s.queued = Some(u64::from(q)),
                            _ => {}
                        }
                    }
                    found.insert(u64::from(r.header.inode), s);
                }
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag refused the dump: {e}")))
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}
