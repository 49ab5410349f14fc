//! Every message mechanism that an [`Address`] reaches, in one table: what
//! it carries, who takes part, which way it goes, how the kernel carries
//! it (the notes' comparison table), and a throwaway address for trying
//! it.
//!
//! A mechanism is added by giving it an [`Address`] form, its arms in
//! [`crate::connect`] and [`crate::listen`], and an entry here: `ipc send`
//! and `ipc recv` reach it by its address, `ipc bench` measures it (set up
//! through its scratch addresses, its table columns from this entry), and
//! the tests that walk this table (`tests/endpoint.rs`, `rpc.rs`,
//! `select.rs`, `aio.rs`: messages both ways, request/reply, waiting in a
//! selector and in a runtime, nothing left behind) test it unasked.
//!
//! ```
//! use ipckit::registry::{self, Direction};
//!
//! for m in registry::MECHANISMS {
//!     println!("{:<11} {:<9} {}", m.scheme, m.direction.to_string(), m.data);
//! }
//! let unix = registry::find("unix").unwrap();
//! assert!(unix.connections && unix.direction == Direction::TwoWay);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;

use crate::address::Address;

/// Which way messages go between the ends [`crate::connect`] and
/// [`crate::listen`] give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ends send and receive.
    TwoWay,
    /// The connecting end sends, the listening end receives.
    OneWay,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::TwoWay => "two-way",
            Direction::OneWay => "one-way",
        })
    }
}

/// One mechanism (see the module docs).
#[derive(Debug)]
pub struct Mechanism {
    /// The address scheme: `unix` in `unix:@name`.
    pub scheme: &'static str,
    /// The address forms.
    pub forms: &'static str,
    /// What one message is (the notes' "data abstraction").
    pub data: &'static str,
    /// Who can take part.
    pub participants: &'static str,
    /// Which way messages go.
    pub direction: Direction,
    /// Whether each client gets a connection of its own.
    pub connections: bool,
    /// Whether an empty message can be sent.
    pub empty_messages: bool,
    /// Whether messages can be lost (UDP).
    pub lossy: bool,
    /// How the kernel carries it.
    pub kernel: &'static str,
    /// The man page or module to read.
    pub reference: &'static str,
    /// Whether it needs a running mailbox broker (`ipc broker`, or
    /// [`Broker::builder`](crate::mailbox::Broker::builder) in a process),
    /// found at [`default_socket`](crate::mailbox::default_socket)
    /// (`$IPCKIT_BROKER` names another).
    pub broker: bool,
    scratch: fn(&str) -> String,
}

impl Mechanism {
    /// A private address of this mechanism for a throwaway endpoint named
    /// after `tag` (letters, digits, `-`, `_`): an abstract socket name, a
    /// queue or ring called `tag`, a FIFO in the temporary directory, a
    /// System V key made from `tag`, or port 0 on loopback (the listener's
    /// [`local_address`](crate::Listener::local_address) tells the port).
    pub fn scratch_address(&self, tag: &str) -> Address {
        (self.scratch)(tag)
            .parse()
            .expect("a registry entry makes a valid address")
    }
}

fn key_from(tag: &str) -> i32 {
    // FNV-1a, with the top bit clear and never 0 (IPC_PRIVATE).
    let mut h: u32 = 0x811c_9dc5;
    for b in tag.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    ((h & 0x7fff_ffff) | 1) as i32
}

/// The mechanisms, in the notes' order.
pub static MECHANISMS: &[Mechanism] = &[
    Mechanism {
        scheme: "fifo",
        forms: "fifo:PATH",
        data: "byte stream (framed)",
        participants: "any processes that can open the path",
        direction: Direction::OneWay,
        connections: true,
        empty_messages: true,
        lossy: false,
        kernel: "a pipe buffer (pipefs), 64 KiB unless resized, found by a path",
        reference: "fifo(7), crate::fifo",
        broker: false,
        scratch: |t| format!("fifo:{}", std::env::temp_dir().join(t).display()),
    },
    Mechanism {
        scheme: "unix",
        forms: "unix:PATH, unix:@NAME",
        data: "byte stream (framed)",
        participants: "2 processes per connection",
        direction: Direction::TwoWay,
        connections: true,
        empty_messages: true,
        lossy: false,
        kernel: "AF_UNIX socket buffers, copied once into the peer's queue",
        reference: "unix(7), crate::socket::unix",
        broker: false,
        scratch: |t| format!("unix:@{t}"),
    },
    Mechanism {
        scheme: "unix-dgram",
        forms: "unix-dgram:PATH, unix-dgram:@NAME",
        data: "datagram (reliable, ordered)",
        participants: "many senders, one receiver",
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: false,
        kernel: "AF_UNIX datagrams queued on the receiving socket",
        reference: "unix(7), crate::socket::unix::UnixDatagram",
        broker: false,
        scratch: |t| format!("unix-dgram:@{t}"),
    },
    Mechanism {
        scheme: "unix-seq",
        forms: "unix-seq:PATH, unix-seq:@NAME",
        data: "datagram on a connection",
        participants: "2 processes per connection",
        direction: Direction::TwoWay,
        connections: true,
        empty_messages: false,
        lossy: false,
        kernel: "AF_UNIX packets on a connection",
        reference: "unix(7) SOCK_SEQPACKET, crate::socket::unix::SeqpacketStream",
        broker: false,
        scratch: |t| format!("unix-seq:@{t}"),
    },
    Mechanism {
        scheme: "tcp",
        forms: "tcp:HOST:PORT",
        data: "byte stream (framed)",
        participants: "2 processes per connection, any host",
        direction: Direction::TwoWay,
        connections: true,
        empty_messages: true,
        lossy: false,
        kernel: "the TCP/IP stack (loopback on one machine)",
        reference: "tcp(7), crate::socket::inet",
        broker: false,
        scratch: |_| "tcp:127.0.0.1:0".into(),
    },
    Mechanism {
        scheme: "udp",
        forms: "udp:HOST:PORT",
        data: "datagram, may be lost",
        participants: "many processes, any host",
        // The listening socket receives from anyone and has no one to
        // answer (request/reply gives each client an address of its own).
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: true,
        kernel: "the UDP/IP stack; dropped when buffers fill",
        reference: "udp(7), crate::socket::inet::UdpSocket",
        broker: false,
        scratch: |_| "udp:127.0.0.1:0".into(),
    },
    Mechanism {
        scheme: "mq",
        forms: "mq:/NAME",
        data: "message with a priority",
        participants: "many processes, by name",
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: false,
        kernel: "the mqueue filesystem; messages kept in kernel memory",
        reference: "mq_overview(7), crate::mq",
        broker: false,
        scratch: |t| format!("mq:/{t}"),
    },
    Mechanism {
        scheme: "sysv-mq",
        forms: "sysv-mq:KEY (decimal, 0x hex, or PATH:PROJ for ftok)",
        data: "message with a type",
        participants: "many processes, by key",
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: false,
        kernel: "a System V msg_queue in kernel memory (per IPC namespace)",
        reference: "msgop(2), crate::mq::sysv",
        broker: false,
        scratch: |t| format!("sysv-mq:{}", key_from(t)),
    },
    Mechanism {
        scheme: "ring",
        forms: "ring:NAME",
        data: "message in a shared-memory slot",
        participants: "many senders and receivers, by name",
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: false,
        kernel: "shared pages (POSIX shm); futex(2) only to sleep and wake",
        reference: "crate::ring",
        broker: false,
        scratch: |t| format!("ring:{t}"),
    },
    Mechanism {
        scheme: "mailbox",
        forms: "mailbox:NAME (receivers: mailbox:PATTERN), pid:PID, pid:self",
        data: "message with a type, a priority and the sender's credentials",
        participants: "many senders and receivers, by name, through a broker",
        direction: Direction::OneWay,
        connections: false,
        empty_messages: true,
        lossy: false,
        kernel: "a broker process: frames in shared-memory lanes, a Unix socket to wake and to end",
        reference: "crate::mailbox, ipc broker",
        broker: true,
        scratch: |t| format!("mailbox:{t}"),
    },
];

/// The entry for `scheme` (`"unix"`, `"mq"`, ...).
pub fn find(scheme: &str) -> Option<&'static Mechanism> {
    MECHANISMS.iter().find(|m| m.scheme == scheme)
}

impl Address {
    /// The address's scheme: `unix` for `unix:@name`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Fifo(_) => "fifo",
            Address::Unix(_) => "unix",
            Address::UnixDgram(_) => "unix-dgram",
            Address::UnixSeq(_) => "unix-seq",
            Address::Tcp(_) => "tcp",
            Address::Udp(_) => "udp",
            Address::Mq(_) => "mq",
            Address::SysvMq(_) => "sysv-mq",
            Address::Ring(_) => "ring",
            Address::Shm(_) => "shm",
            Address::SysvShm(_) => "sysv-shm",
            Address::Sem(_) => "sem",
            Address::SysvSem(_) => "sysv-sem",
            Address::Mailbox(_) => "mailbox",
            Address::Pid(_) => "pid",
        }
    }

    /// The mechanism's entry, for a message channel (`None` for shared
    /// memory and semaphores).
    pub fn mechanism(&self) -> Option<&'static Mechanism> {
        find(self.scheme())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_consistent() {
        for m in MECHANISMS {
            let a = m.scratch_address("ipckit-registry-test");
            assert_eq!(a.scheme(), m.scheme);
            assert!(a.is_channel());
            assert_eq!(a.mechanism().map(|x| x.scheme), Some(m.scheme));
            assert_eq!(a.is_connection(), m.connections && m.scheme != "fifo");
            assert!(
                crate::address::FORMS.contains(&format!("{}:", m.scheme)),
                "{} missing from FORMS",
                m.scheme
            );
        }
    }
}
