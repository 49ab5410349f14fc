//! Addresses: one string names an IPC endpoint of any mechanism, and
//! [`Address`] parses and prints them (`FromStr` and `Display` round-trip).
//!
//! | form | mechanism |
//! |---|---|
//! | `fifo:PATH` | a named pipe |
//! | `unix:PATH`, `unix:@NAME` | a Unix stream socket (a path, or an abstract name) |
//! | `unix-dgram:PATH`, `unix-dgram:@NAME` | a Unix datagram socket |
//! | `unix-seq:PATH`, `unix-seq:@NAME` | a Unix seqpacket socket |
//! | `tcp:HOST:PORT` | TCP (IPv6 as `[::1]:PORT`) |
//! | `udp:HOST:PORT` | UDP |
//! | `mq:/NAME` | a POSIX message queue |
//! | `sysv-mq:KEY` | a System V message queue (decimal, `0x` hex, or `PATH:PROJ` for `ftok`) |
//! | `ring:NAME` | a shared-memory ring ([`crate::ring`]) |
//! | `mailbox:NAME` | a broker's mailbox ([`crate::mailbox`]); receivers may use a pattern (`orders.*`, `orders.>`) |
//! | `pid:PID`, `pid:self` | a process's inbox at the broker (direct message passing) |
//! | `shm:/NAME`, `sysv-shm:KEY`, `sem:/NAME`, `sysv-sem:KEY` | shared memory and semaphores (objects, not message channels) |
//!
//! ```
//! use ipckit::Address;
//! let a: Address = "unix:@service".parse()?;
//! assert_eq!(a.to_string(), "unix:@service");
//! assert!("pipe:x".parse::<Address>().unwrap_err().to_string().contains("unknown mechanism"));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use crate::socket::unix::UnixAddr;
use crate::sysv::Key;

/// One IPC endpoint, named by a string (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A FIFO: `fifo:PATH`.
    Fifo(PathBuf),
    /// A Unix stream socket: `unix:PATH` or `unix:@NAME`.
    Unix(UnixAddr),
    /// A Unix datagram socket: `unix-dgram:PATH` or `unix-dgram:@NAME`.
    UnixDgram(UnixAddr),
    /// A Unix seqpacket socket: `unix-seq:PATH` or `unix-seq:@NAME`.
    UnixSeq(UnixAddr),
    /// TCP: `tcp:HOST:PORT`.
    Tcp(String),
    /// UDP: `udp:HOST:PORT`.
    Udp(String),
    /// A POSIX message queue: `mq:/NAME`.
    Mq(String),
    /// A System V message queue: `sysv-mq:KEY` (decimal, 0x hex, PATH:PROJ).
    SysvMq(Key),
    /// A shared-memory ring channel: `ring:NAME`.
    Ring(String),
    /// A POSIX shared memory object: `shm:/NAME`.
    Shm(String),
    /// A System V shared memory segment: `sysv-shm:KEY`.
    SysvShm(Key),
    /// A POSIX named semaphore: `sem:/NAME`.
    Sem(String),
    /// A System V semaphore set: `sysv-sem:KEY`.
    SysvSem(Key),
    /// A mailbox at the broker, or a receiver's pattern of them:
    /// `mailbox:NAME`, `mailbox:orders.*`.
    Mailbox(String),
    /// A process's inbox at the broker: `pid:PID`; `pid:self` (held as 0)
    /// is this process's own.
    Pid(u32),
}

/// Every address form, for error messages and help texts.
pub const FORMS: &str = "fifo:PATH, unix:PATH, unix:@NAME, unix-dgram:PATH|@NAME, \
                         unix-seq:PATH|@NAME, tcp:HOST:PORT, udp:HOST:PORT, mq:/NAME, \
                         sysv-mq:KEY (decimal, 0x hex or PATH:PROJ), ring:NAME, \
                         mailbox:NAME, pid:PID";

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Resolves `HOST:PORT` (IPv6 as `[::1]:PORT`) to its first socket address.
pub fn resolve(hostport: &str) -> io::Result<SocketAddr> {
    hostport
        .to_socket_addrs()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot resolve {hostport:?} (expected HOST:PORT, IPv6 as [::1]:PORT): {e}"
                ),
            )
        })?
        .next()
        .ok_or_else(|| invalid(format!("{hostport:?} resolves to no address")))
}

fn check_hostport(s: &str) -> io::Result<String> {
    let (_, port) = s
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("{s:?} lacks a port: expected HOST:PORT")))?;
    port.parse::<u16>()
        .map_err(|_| invalid(format!("{port:?} is not a port number (0-65535)")))?;
    Ok(s.to_string())
}

/// A System V key that other processes can find (not `IPC_PRIVATE`).
fn public_key(s: &str) -> io::Result<Key> {
    let key: Key = s.parse()?;
    if key == Key::PRIVATE {
        return Err(invalid(
            "key 0 is IPC_PRIVATE, which makes a new object no other process can find by key; \
             choose another key"
                .into(),
        ));
    }
    Ok(key)
}

impl Address {
    /// Whether clients make connections, each a two-way channel of its own
    /// (`unix:`, `unix-seq:`, `tcp:`).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Address::Unix(_) | Address::UnixSeq(_) | Address::Tcp(_)
        )
    }

    /// Whether the address names a message channel (not shared memory or a
    /// semaphore).
    pub fn is_channel(&self) -> bool {
        !matches!(
            self,
            Address::Shm(_) | Address::SysvShm(_) | Address::Sem(_) | Address::SysvSem(_)
        )
    }
}

impl FromStr for Address {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Self> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| invalid(format!("{s:?} is not an address; expected one of {FORMS}")))?;
        if rest.is_empty() {
            return Err(invalid(format!(
                "{s:?} has nothing after {scheme:?}; expected one of {FORMS}"
            )));
        }
        let unix = |r: &str| -> io::Result<UnixAddr> { r.parse::<UnixAddr>() };
        Ok(match scheme {
            "fifo" => Address::Fifo(PathBuf::from(rest)),
            "unix" => Address::Unix(unix(rest)?),
            "unix-dgram" => Address::UnixDgram(unix(rest)?),
            "unix-seq" => Address::UnixSeq(unix(rest)?),
            "tcp" => Address::Tcp(check_hostport(rest)?),
            "udp" => Address::Udp(check_hostport(rest)?),
            "mq" => {
                crate::mq::validate_name(rest)?;
                Address::Mq(rest.to_string())
            }
            "shm" => {
                crate::shm::validate_name(rest)?;
                Address::Shm(rest.to_string())
            }
            "sem" => {
                crate::sem::validate_name(rest)?;
                Address::Sem(rest.to_string())
            }
            "sysv-mq" => Address::SysvMq(public_key(rest)?),
            "sysv-shm" => Address::SysvShm(public_key(rest)?),
            "sysv-sem" => Address::SysvSem(public_key(rest)?),
            "ring" => {
                crate::ring::validate_name(rest)?;
                Address::Ring(rest.to_string())
            }
            #[cfg(not(loom))]
            "mailbox" => {
                crate::mailbox::Pattern::new(rest)?;
                Address::Mailbox(rest.to_string())
            }
            "pid" if rest == "self" => Address::Pid(0),
            "pid" => match rest.parse::<u32>() {
                Ok(p) if p > 0 && p <= i32::MAX as u32 => Address::Pid(p),
                _ => {
                    return Err(invalid(format!(
                        "{rest:?} is not a process id: pid:PID takes a number above 0 (pid:self \
                         is this process's own inbox)"
                    )))
                }
            },
            other => {
                return Err(invalid(format!(
                    "unknown mechanism {other:?}; expected one of {FORMS}"
                )))
            }
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Fifo(p) => write!(f, "fifo:{}", p.display()),
            Address::Unix(a) => write!(f, "unix:{a}"),
            Address::UnixDgram(a) => write!(f, "unix-dgram:{a}"),
            Address::UnixSeq(a) => write!(f, "unix-seq:{a}"),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
            Address::Udp(a) => write!(f, "udp:{a}"),
            Address::Mq(n) => write!(f, "mq:{n}"),
            Address::SysvMq(k) => write!(f, "sysv-mq:{k}"),
            Address::Ring(n) => write!(f, "ring:{n}"),
            Address::Shm(n) => write!(f, "shm:{n}"),
            Address::SysvShm(k) => write!(f, "sysv-shm:{k}"),
            Address::Sem(n) => write!(f, "sem:{n}"),
            Address::SysvSem(k) => write!(f, "sysv-sem:{k}"),
            Address::Mailbox(n) => write!(f, "mailbox:{n}"),
            Address::Pid(0) => write!(f, "pid:self"),
            Address::Pid(p) => write!(f, "pid:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "fifo:/tmp/f".parse::<Address>().unwrap(),
            Address::Fifo("/tmp/f".into())
        );
        assert_eq!(
            "unix:@x".parse::<Address>().unwrap(),
            Address::Unix(UnixAddr::Abstract(b"x".to_vec()))
        );
        assert!(matches!(
            "unix-seq:/s".parse::<Address>().unwrap(),
            Address::UnixSeq(UnixAddr::Path(_))
        ));
        assert_eq!(
            "tcp:[::1]:80".parse::<Address>().unwrap(),
            Address::Tcp("[::1]:80".into())
        );
        assert_eq!(
            "udp:127.0.0.1:9".parse::<Address>().unwrap().to_string(),
            "udp:127.0.0.1:9"
        );
        assert_eq!(
            "sysv-mq:5678".parse::<Address>().unwrap().to_string(),
            "sysv-mq:0x0000162e"
        );
        assert_eq!(
            "sysv-mq:0x162e".parse::<Address>().unwrap(),
            Address::SysvMq(Key::new(5678))
        );
        for a in ["mailbox:orders.>", "pid:12", "pid:self"] {
            assert_eq!(a.parse::<Address>().unwrap().to_string(), a);
        }
        // ftok(3) is a C library call, which Miri cannot run.
        if !cfg!(miri) {
            assert_eq!(
                "sysv-mq:/:A".parse::<Address>().unwrap(),
                Address::SysvMq(Key::ftok("/", b'A').unwrap())
            );
        }
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        for (bad, why) in [
            ("nothing", "not an address"),
            ("pipe:x", "unknown mechanism"),
            ("tcp:localhost", "port"),
            ("tcp:h:99999", "not a port"),
            ("unix:", "nothing after"),
            ("unix:@", "cannot be empty"),
            ("mq:jobs", "must start with a slash"),
            ("mq:/a/b", "second slash"),
            ("sysv-mq:0", "IPC_PRIVATE"),
            ("shm:frames", "POSIX shared memory name"),
            ("sem:jobs", "POSIX semaphore name"),
            ("sysv-sem:0", "IPC_PRIVATE"),
            ("sysv-mq:0xzz", "hex"),
            ("sysv-mq:jobs", "not a number"),
            ("mailbox:a..b", "single dots"),
            ("pid:x", "not a process id"),
            ("pid:0", "not a process id"),
        ]
        .into_iter()
        // ftok(3) is a C library call, which Miri cannot run.
        .chain((!cfg!(miri)).then_some(("sysv-mq:/no/such/file:1", "existing file")))
        {
            let e = bad.parse::<Address>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
