//! Addresses on the command line: `fifo:PATH`, `unix:PATH` or `unix:@NAME`,
//! `unix-dgram:…`, `unix-seq:…`, `tcp:HOST:PORT`, `udp:HOST:PORT`, `mq:/NAME`,
//! `sysv-mq:KEY`, `ring:NAME`; for `ipc rm` also `shm:/NAME`, `sysv-shm:KEY`, `sem:/NAME`,
//! `sysv-sem:KEY`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use ipckit::socket::unix::UnixAddr;
use ipckit::sysv::Key;

impl Addr {
    /// The error for an address that names no message channel.
    pub fn not_a_channel(&self) -> anyhow::Error {
        let what = match self {
            Addr::Sem(_) | Addr::SysvSem(_) => "a semaphore",
            _ => "shared memory",
        };
        anyhow!(
            "{self} is {what}, not a message channel: ipc send and ipc recv cannot use it \
             (ipc rm {self} removes it)"
        )
    }

    /// Refuses an address that names no message channel (`ipc send`/`recv`).
    pub fn check_channel(&self) -> Result<()> {
        match self {
            Addr::Shm(_) | Addr::SysvShm(_) | Addr::Sem(_) | Addr::SysvSem(_) => {
                Err(self.not_a_channel())
            }
            _ => Ok(()),
        }
    }
}

/// One IPC endpoint named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Fifo(PathBuf),
    Unix(UnixAddr),
    UnixDgram(UnixAddr),
    UnixSeq(UnixAddr),
    Tcp(String),
    Udp(String),
    /// A POSIX message queue: `mq:/NAME`.
    Mq(String),
    /// A System V message queue: `sysv-mq:KEY` (decimal, 0x hex, PATH:PROJ).
    SysvMq(Key),
    /// A shared-memory ring channel: `ring:NAME`.
    Ring(String),
    /// A POSIX shared memory object: `shm:/NAME` (for `ipc rm`).
    Shm(String),
    /// A System V shared memory segment: `sysv-shm:KEY` (for `ipc rm`).
    SysvShm(Key),
    /// A POSIX named semaphore: `sem:/NAME` (for `ipc rm`).
    Sem(String),
    /// A System V semaphore set: `sysv-sem:KEY` (for `ipc rm`).
    SysvSem(Key),
}

pub const FORMS: &str = "fifo:PATH, unix:PATH, unix:@NAME, unix-dgram:PATH|@NAME, \
                         unix-seq:PATH|@NAME, tcp:HOST:PORT, udp:HOST:PORT, mq:/NAME, \
                         sysv-mq:KEY (decimal, 0x hex or PATH:PROJ), ring:NAME";

/// Resolves `HOST:PORT` (IPv6 as `[::1]:PORT`).
pub fn resolve(hostport: &str) -> Result<SocketAddr> {
    hostport
        .to_socket_addrs()
        .with_context(|| {
            format!("cannot resolve {hostport:?} (expected HOST:PORT, IPv6 as [::1]:PORT)")
        })?
        .next()
        .ok_or_else(|| anyhow!("{hostport:?} resolves to no address"))
}

fn check_hostport(s: &str) -> Result<String> {
    let (_, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{s:?} lacks a port: expected HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| anyhow!("{port:?} is not a port number (0-65535)"))?;
    Ok(s.to_string())
}

/// A System V key that other processes can find (not `IPC_PRIVATE`).
fn public_key(s: &str) -> Result<Key> {
    let key: Key = s.parse()?;
    if key == Key::PRIVATE {
        bail!(
            "key 0 is IPC_PRIVATE, which makes a new object no other process can find by key; \
             choose another key"
        );
    }
    Ok(key)
}

impl FromStr for Addr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("{s:?} is not an address; expected one of {FORMS}"))?;
        if rest.is_empty() {
            bail!("{s:?} has nothing after {scheme:?}; expected one of {FORMS}");
        }
        let unix = |r: &str| -> Result<UnixAddr> { Ok(r.parse::<UnixAddr>()?) };
        Ok(match scheme {
            "fifo" => Addr::Fifo(PathBuf::from(rest)),
            "unix" => Addr::Unix(unix(rest)?),
            "unix-dgram" => Addr::UnixDgram(unix(rest)?),
            "unix-seq" => Addr::UnixSeq(unix(rest)?),
            "tcp" => Addr::Tcp(check_hostport(rest)?),
            "udp" => Addr::Udp(check_hostport(rest)?),
            "mq" => {
                ipckit::mq::validate_name(rest)?;
                Addr::Mq(rest.to_string())
            }
            "shm" => {
                ipckit::shm::validate_name(rest)?;
                Addr::Shm(rest.to_string())
            }
            "sem" => {
                ipckit::sem::validate_name(rest)?;
                Addr::Sem(rest.to_string())
            }
            "sysv-mq" => Addr::SysvMq(public_key(rest)?),
            "ring" => {
                ipckit::ring::validate_name(rest)?;
                Addr::Ring(rest.to_string())
            }
            "sysv-shm" => Addr::SysvShm(public_key(rest)?),
            "sysv-sem" => Addr::SysvSem(public_key(rest)?),
            other => bail!("unknown mechanism {other:?}; expected one of {FORMS}"),
        })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Fifo(p) => write!(f, "fifo:{}", p.display()),
            Addr::Unix(a) => write!(f, "unix:{a}"),
            Addr::UnixDgram(a) => write!(f, "unix-dgram:{a}"),
            Addr::UnixSeq(a) => write!(f, "unix-seq:{a}"),
            Addr::Tcp(a) => write!(f, "tcp:{a}"),
            Addr::Udp(a) => write!(f, "udp:{a}"),
            Addr::Mq(n) => write!(f, "mq:{n}"),
            Addr::SysvMq(k) => write!(f, "sysv-mq:{k}"),
            Addr::Ring(n) => write!(f, "ring:{n}"),
            Addr::Shm(n) => write!(f, "shm:{n}"),
            Addr::SysvShm(k) => write!(f, "sysv-shm:{k}"),
            Addr::Sem(n) => write!(f, "sem:{n}"),
            Addr::SysvSem(k) => write!(f, "sysv-sem:{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "fifo:/tmp/f".parse::<Addr>().unwrap(),
            Addr::Fifo("/tmp/f".into())
        );
        assert_eq!(
            "unix:@x".parse::<Addr>().unwrap(),
            Addr::Unix(UnixAddr::Abstract(b"x".to_vec()))
        );
        assert!(matches!(
            "unix-seq:/s".parse::<Addr>().unwrap(),
            Addr::UnixSeq(UnixAddr::Path(_))
        ));
        assert_eq!(
            "tcp:[::1]:80".parse::<Addr>().unwrap(),
            Addr::Tcp("[::1]:80".into())
        );
        assert_eq!(
            "udp:127.0.0.1:9".parse::<Addr>().unwrap().to_string(),
            "udp:127.0.0.1:9"
        );
        assert_eq!(
            "sysv-mq:5678".parse::<Addr>().unwrap().to_string(),
            "sysv-mq:0x0000162e"
        );
        assert_eq!(
            "sysv-mq:0x162e".parse::<Addr>().unwrap(),
            Addr::SysvMq(Key::new(5678))
        );
        assert_eq!(
            "sysv-mq:/:A".parse::<Addr>().unwrap(),
            Addr::SysvMq(Key::ftok("/", b'A').unwrap())
        );
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
            ("sysv-mq:/no/such/file:1", "existing file"),
        ] {
            let e = bad.parse::<Addr>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
