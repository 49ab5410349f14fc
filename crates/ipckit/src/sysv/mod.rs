//! System V IPC: keys and what they share. The queues live with the POSIX
//! ones in [`crate::mq::sysv`] (re-exported here), shared memory in
//! [`crate::shm::SysvShm`], semaphore sets in [`crate::sem`].
//!
//! System V objects are named by a numeric [`Key`] instead of a path: an
//! agreed number, a key derived from an existing file with [`Key::ftok`],
//! or [`Key::PRIVATE`] for an object only reachable through its id. They
//! live in the kernel until removed (`IPC_RMID`) or the machine restarts;
//! `ipcs -q` lists them and `ipc rm sysv-mq:KEY` (or `ipcrm`) removes one.
//!
//! See [`MessageQueue`] for the queues themselves: typed messages and
//! selective receive.
//!
//! # References
//! `sysvipc(7)`, `ftok(3)`, `msgget(2)`, `msgop(2)`, `msgctl(2)`.

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;

use crate::sys;

/// The System V message queue, which lives with the POSIX one in
/// [`crate::mq::sysv`]; re-exported here with the keys it is found by.
pub use crate::mq::sysv::{
    remove_queue, remove_queue_id, MessageQueue, QueueBuilder, Selector, Status,
};
pub use crate::mq::Access;

/// The error of `IPC_RMID` on `what` (`"queue"`) with identifier `id`, in
/// words: no such object, or not this user's to remove.
pub(crate) fn explain_remove_id(e: io::Error, what: &str, id: i32) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => format!("no System V {what} with id {id}"),
        Some(libc::EPERM) => format!(
            "System V {what} id {id} is not yours to remove: only its owner, its creator or \
             root may"
        ),
        _ => format!("System V {what} id {id}: {e}"),
    };
    io::Error::new(e.kind(), why)
}

/// Default permission bits of a new object: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// A System V IPC key (`key_t`).
///
/// Parsed from text ([`FromStr`]) as a decimal number, a `0x` hex number,
/// `IPC_PRIVATE` or `PATH:PROJ` (for [`Key::ftok`]); displayed the way
/// `ipcs` shows keys (`0x0000162e`), and what it displays parses back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(i32);

impl Key {
    /// `IPC_PRIVATE`: every creation makes a new object, reachable only
    /// through its id.
    pub const PRIVATE: Key = Key(libc::IPC_PRIVATE);

    /// A key from its number (0 is [`Key::PRIVATE`]).
    pub const fn new(key: i32) -> Key {
        Key(key)
    }

    /// The key's number.
    pub const fn value(self) -> i32 {
        self.0
    }

    /// `ftok(3)`: the key derived from an existing path's inode and device
    /// and from `proj` (1 to 255). Every program calling `ftok` with the same
    /// path and project gets the same key, as long as the file is not
    /// replaced.
    pub fn ftok(path: impl AsRef<Path>, proj: u8) -> io::Result<Key> {
        let path = path.as_ref();
        if proj == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ftok project id must be 1 to 255 (only its low 8 bits count, and 0 is reserved)",
            ));
        }
        let c = sys::cstr(path)?;
        sys::msg::ftok(&c, proj).map(Key).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "ftok({}, {proj}): {e} (ftok needs an existing file: the key comes from its inode)",
                    path.display()
                ),
            )
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Key::PRIVATE {
            f.write_str("IPC_PRIVATE")
        } else {
            write!(f, "{:#010x}", self.0 as u32)
        }
    }
}

impl FromStr for Key {
    type Err = io::Error;

    /// Parses `1234`, `0x4d2`, `IPC_PRIVATE` (as displayed), or
    /// `PATH:PROJ` with PROJ a number from 1 to 255 or a single ASCII
    /// character (`/tmp/app:A`).
    fn from_str(s: &str) -> io::Result<Key> {
        if s == "IPC_PRIVATE" {
            return Ok(Key::PRIVATE);
        }
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "invalid System V key {s:?}: {why} (a key is a decimal number, a 0x hex \
                     number, or PATH:PROJ for ftok)"
                ),
            )
        };
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            return u32::from_str_radix(hex, 16)
                .map(|v| Key(v as i32))
                .map_err(|_| bad("not a 32-bit hex number".into()));
        }
        if let Ok(v) = s.parse::<i64>() {
            if v < 0 {
                // key_t is a C int, but `ipcs` and ipckit show keys as
                // unsigned hex: -5 would silently be 0xfffffffb.
                return Err(bad(format!(
                    "keys are not negative here; the same 32 bits as unsigned are {:#010x}, \
                     write that if it is the key you mean",
                    v as i32 as u32
                )));
            }
            return u32::try_from(v)
                .map(|v| Key(v as i32))
                .map_err(|_| bad("out of the 32-bit range (0 to 4294967295)".into()));
        }
        let Some((path, proj)) = s.rsplit_once(':') else {
            return Err(bad("not a number".into()));
        };
        if path.is_empty() {
            return Err(bad("the path before ':' is empty".into()));
        }
        let proj = match (proj.parse::<u8>(), proj.as_bytes()) {
            (Ok(p), _) => p,
            (_, [c]) if c.is_ascii_graphic() => *c,
            _ => {
                return Err(bad(format!(
                    "project {proj:?} is not 1 to 255 or one character"
                )))
            }
        };
        Key::ftok(path, proj)
    }
}

/// The system limits on System V message queues (`msgctl(IPC_INFO)`, also
/// in `/proc/sys/kernel/msgmax`, `msgmnb` and `msgmni`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message, in bytes (`msgmax`).
    pub max_message_size: usize,
    /// The default byte limit of a new queue (`msgmnb`); only a privileged
    /// process (`CAP_SYS_RESOURCE`) may raise a queue's limit above it.
    pub max_queue_bytes: usize,
    /// The most queues the system holds (`msgmni`).
    pub max_queues: usize,
}

/// Reads the message queue limits of this IPC namespace.
pub fn limits() -> io::Result<Limits> {
    let (msgmax, msgmnb, msgmni) = sys::msg::info()?;
    Ok(Limits {
        max_message_size: msgmax,
        max_queue_bytes: msgmnb,
        max_queues: msgmni,
    })
}

/// A time from an `ipc_perm`-style status: 0 means never.
pub(crate) fn time(secs: i64) -> Option<std::time::SystemTime> {
    (secs > 0)
        .then(|| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
}

/// A pid from a status: 0 means none.
pub(crate) fn pid(p: i32) -> Option<u32> {
    u32::try_from(p).ok().filter(|&p| p > 0)
}

/// A user and group id pair (owner or creator of an object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Who a System V object belongs to and who may use it (`struct ipc_perm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// The key it was created with.
    pub key: Key,
    /// The owner (may be changed by `IPC_SET`).
    pub owner: Ids,
    /// The creator.
    pub creator: Ids,
    /// Permission bits (`0o600` and the like).
    pub mode: u32,
}

impl From<sys::msg::RawPerm> for Perm {
    fn from(p: sys::msg::RawPerm) -> Perm {
        Perm {
            key: Key(p.key),
            owner: Ids {
                uid: p.uid,
                gid: p.gid,
            },
            creator: Ids {
                uid: p.cuid,
                gid: p.cgid,
            },
            mode: p.mode & 0o777,
        }
    }
}

/// `create_or_open` for System V objects: `IPC_CREAT` alone cannot tell
/// "created" from "opened", so try an exclusive create, then an open, and
/// again if the object vanished in between.
pub(crate) fn create_or_open<T>(
    what: &str,
    key: Key,
    mut create: impl FnMut() -> io::Result<T>,
    open: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    if key == Key::PRIVATE {
        return create();
    }
    crate::named::create_or_open(&format_args!("{what} {key}"), create, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        assert_eq!("1234".parse::<Key>().unwrap(), Key::new(1234));
        assert_eq!("0x4d2".parse::<Key>().unwrap(), Key::new(1234));
        assert_eq!("0xffffffff".parse::<Key>().unwrap(), Key::new(-1));
        assert_eq!("4294967295".parse::<Key>().unwrap(), Key::new(-1));
        let e = "-5".parse::<Key>().unwrap_err().to_string();
        assert!(
            e.contains("not negative") && e.contains("0xfffffffb"),
            "{e}"
        );
        assert_eq!("0xfffffffb".parse::<Key>().unwrap(), Key::new(-5));
        assert_eq!(Key::new(0x162e).to_string(), "0x0000162e");
        assert_eq!(Key::PRIVATE.to_string(), "IPC_PRIVATE");
        for bad in [
            "",
            "0x",
            "0x1ffffffff",
            "4294967296",
            "abc",
            ":1",
            "/tmp:0",
            "/tmp:ab",
        ] {
            let e = bad.parse::<Key>().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        // ftok(3) is a C library call, which Miri cannot run.
        if !cfg!(miri) {
            let a: Key = "/:A".parse().unwrap();
            assert_eq!(a, Key::ftok("/", b'A').unwrap());
            assert_eq!(a, "/:65".parse().unwrap());
            let e = "/no/such/file:1".parse::<Key>().unwrap_err();
            assert!(e.to_string().contains("existing file"), "{e}");
        }
    }
}
