//! A property store: named values every process reads from shared memory
//! without a system call, and one daemon writes (note 004's "simplest
//! IPC", done the way Android's system properties do it).
//!
//! Note 004: process A writes its state into a global property; process B
//! reads it again and again to learn that A's state changed. The bug it
//! warns of is reading while the writer writes. Here:
//!
//! - **Reads** ([`Properties::get`]) copy the value out of a shared
//!   memory area mapped read-only, with no lock and no system call: a
//!   per-property serial and a backup copy of the value being replaced let
//!   a reader detect a write it overlapped and read again, so a value is
//!   never torn and never older than one already seen.
//! - **Waiting** instead of reading again and again: [`Properties::wait`]
//!   sleeps on a futex until one property changes, [`Properties::wait_prefix`]
//!   until anything under a prefix (`net.wifi`) changes, or anything at
//!   all (the empty prefix).
//! - **Writes** ([`Properties::set`]) go over a Unix socket to the one
//!   daemon ([`PropServer`], `ipc propd`), which checks the caller's uid
//!   (`SO_PEERCRED`, not anything the caller says) against its [`Policy`],
//!   keeps `ro.*` properties to their first value, saves `persist.*` ones
//!   to a file (atomically: a crash leaves the old file or the new one) and
//!   loads them at start, and answers once every reader can see the value.
//!
//! Names are dotted (`net.wifi.state`): segments of ASCII letters, digits,
//! `_`, `-`, `:` and `@`, up to [`NAME_MAX`] bytes in all. Values are UTF-8
//! text: up to [`VALUE_MAX`] bytes (92, as Android) are kept in the
//! property's own record; longer ones, up to [`LONG_VALUE_MAX`], in a block
//! of their own (each change of a long value takes a new block: the area
//! grows by its size).
//!
//! The area lives in POSIX shared memory (`/dev/shm/ipckit-prop.NAME`,
//! mode 0600 by default: [`PropServerBuilder::mode`] 0644 lets other users
//! read). It grows (up to 64 MiB) without moving: readers map the largest
//! size once and only ever touch the part in use. If the daemon is killed,
//! readers keep reading the last values; a daemon started again takes the
//! same area over (finishing a write the crash cut short), so they see its
//! changes too. A daemon that stops cleanly marks the area closed and
//! removes it: readers then get an error saying so.
//!
//! ```no_run
//! use ipckit::prop::{Properties, PropServer};
//! use std::time::Duration;
//!
//! let _daemon = PropServer::builder("demo").start()?;   // or `ipc propd --name demo`
//! let props = Properties::open("demo")?;
//! props.set("net.wifi.state", "up")?;                    // confirmed: visible everywhere
//! assert_eq!(props.get("net.wifi.state")?.as_deref(), Some("up"));
//! // Another process: wait for the next change under net.wifi.
//! let seen = props.prefix_serial("net.wifi")?;
//! let _changed = props.wait_prefix("net.wifi", seen, Duration::from_secs(5))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `shm_open(3)`, `mmap(2)`, `futex(2)`, `unix(7)` (`SO_PEERCRED`);
//! Android's `system_properties` (bionic) for the design.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::socket::unix::{UnixAddr, UnixStream};
use crate::sys;
use crate::sys::mman::Mapping;
use crate::{MessageReceiver, MessageSenderExt};

pub(crate) mod area;
mod server;

pub use area::{LONG_VALUE_MAX, NAME_MAX, VALUE_MAX};
pub use server::{Policy, PolicyError, PropServer, PropServerBuilder};

/// The store used when none is named.
pub const DEFAULT_STORE: &str = "default";

/// A property's change stamp: different after every change. Returned with
/// values and by the waits; [`Serial::NONE`] stands for "does not exist".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Serial(u32);

impl Serial {
    /// The serial of a property that does not exist (yet).
    pub const NONE: Serial = Serial(u32::MAX);
}

/// [`Serial::NONE`].
impl Default for Serial {
    fn default() -> Serial {
        Serial::NONE
    }
}

/// Checks a property name: dotted segments of `[A-Za-z0-9_:@-]`.
pub fn check_name(name: &str) -> io::Result<()> {
    check_dotted(name, "property name")
}

/// Checks a prefix: empty (everything) or a name, whole segments
/// (`net.wifi` covers `net.wifi.state`, not `net.wifiX`).
fn check_prefix(prefix: &str) -> io::Result<&str> {
    let p = prefix.strip_suffix('.').unwrap_or(prefix);
    if p.is_empty() {
        return Ok(p);
    }
    check_dotted(p, "prefix")?;
    Ok(p)
}

fn check_dotted(name: &str, what: &str) -> io::Result<()> {
    let bad = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid {what}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.len() > NAME_MAX {
        return bad(format!("{} bytes, the most is {NAME_MAX}", name.len()));
    }
    if name.split('.').any(str::is_empty) {
        return bad("it has an empty segment (names look like net.wifi.state)".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return bad(format!(
            "{c:?} is not allowed (letters, digits, '_', '-', ':', '@', and '.' between \
             segments)"
        ));
    }
    Ok(())
}

fn check_store(store: &str) -> io::Result<()> {
    if store.is_empty()
        || store.len() > 64
        || !store
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{store:?} is not a valid store name: 1 to 64 letters, digits, '_', '-' or '.'"
            ),
        ));
    }
    Ok(())
}

/// The shared memory object of store `store`.
pub(crate) fn area_name(store: &str) -> String {
    format!("/ipckit-prop.{store}")
}

/// The daemon's socket (abstract namespace) for store `store`.
pub(crate) fn socket_addr(store: &str) -> UnixAddr {
    UnixAddr::abstract_name(format!("ipckit-prop.{store}"))
}

/// A store opened for reading (and for asking its daemon to write).
///
/// Reads and waits touch only the shared memory; [`set`](Self::set)
/// connects to the daemon.
pub struct Properties {
    store: String,
    map: Mapping,
    owner: u32,
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Properties")
            .field("store", &self.store)
            .field("owner", &self.owner)
            .finish()
    }
}

impl Properties {
    /// Opens store `store` (its daemon created it), read-only.
    pub fn open(store: &str) -> io::Result<Properties> {
        check_store(store)?;
        let c = std::ffi::CString::new(area_name(store)).expect("checked name");
        let fd = sys::mman::shm_open(&c, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => format!(
                    "no property store {store:?} (start its daemon: ipc propd --name {store})"
                ),
                io::ErrorKind::PermissionDenied => format!(
                    "property store {store:?} is not readable by this user (its daemon sets \
                     the mode: ipc propd --mode 0644)"
                ),
                _ => format!("opening property store {store:?}: {e}"),
            };
            io::Error::new(e.kind(), why)
        })?;
        let st = sys::fd::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_size as usize) < area::AREA_INITIAL
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/dev/shm{} is not a property area", area_name(store)),
            ));
        }
        let map = Mapping::map(fd.as_fd(), 0, area::AREA_MAX, false)?;
        let (magic, version): (u32, u32) = (map.read(0), map.read(4));
        if magic != area::MAGIC || version != area::VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "/dev/shm{} is not an ipckit property area of version {} (magic {magic:#x}, \
                     version {version})",
                    area_name(store),
                    area::VERSION
                ),
            ));
        }
        Ok(Properties {
            store: store.to_owned(),
            map,
            owner: st.st_uid,
        })
    }

    /// The store's name.
    pub fn store(&self) -> &str {
        &self.store
    }

    fn view(&self) -> io::Result<area::View<'_>> {
        let v = area::View::new(&self.map)?;
        if v.closed() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "property store {:?} was shut down (its daemon stopped): open it again once \
                     a daemon runs",
                    self.store
                ),
            ));
        }
        if self.map.truncated() {
            return Err(area::truncated());
        }
        Ok(v)
    }

    /// The value of `name`, if it is set. No system call.
    pub fn get(&self, name: &str) -> io::Result<Option<String>> {
        Ok(self.get_with_serial(name)?.map(|(v, _)| v))
    }

    /// The value of `name` and its serial, if it is set.
    pub fn get_with_serial(&self, name: &str) -> io::Result<Option<(String, Serial)>> {
        check_name(name)?;
        let view = self.view()?;
        let Some(record) = view.find(name)?.and_then(|n| view.record(n).transpose()) else {
            return Ok(None);
        };
        let (bytes, serial) = view.read(record?)?;
        let value = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the value of {name} is not UTF-8"),
            )
        })?;
        Ok(Some((value, Serial(serial))))
    }

    /// Every property under `prefix` (whole segments; empty: all), sorted
    /// by name.
    pub fn list(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        Ok(self
            .list_with_serials(prefix)?
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect())
    }

    /// As [`list`](Self::list), with each property's serial.
    pub fn list_with_serials(&self, prefix: &str) -> io::Result<Vec<(String, String, Serial)>> {
        let prefix = check_prefix(prefix)?;
        let view = self.view()?;
        let Some(node) = view.find(prefix)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, record) in view.walk(node, prefix)? {
            let (bytes, serial) = view.read(record)?;
            let value = String::from_utf8_lossy(&bytes).into_owned();
            out.push((name, value, Serial(serial)));
        }
        Ok(out)
    }

    /// The serial of `name` ([`Serial::NONE`] if it is not set), for
    /// [`wait`](Self::wait).
    pub fn serial(&self, name: &str) -> io::Result<Serial> {
        check_name(name)?;
        let view = self.view()?;
        match view
            .find(name)?
            .map(|n| view.record(n))
            .transpose()?
            .flatten()
        {
            Some(r) => Ok(Serial(view.record_serial(r)?.load(Ordering::Acquire) & !1)),
            None => Ok(Serial::NONE),
        }
    }

    /// A stamp of everything under `prefix` (empty: the whole store),
    /// different after any change below it; for
    /// [`wait_prefix`](Self::wait_prefix).
    pub fn prefix_serial(&self, prefix: &str) -> io::Result<Serial> {
        let prefix = check_prefix(prefix)?;
        let view = self.view()?;
        match view.find(prefix)? {
            Some(n) => Ok(Serial(view.node_serial(n)?.load(Ordering::Acquire))),
            None => Ok(Serial::NONE),
        }
    }

    /// Sleeps until `name`'s serial differs from `seen` (it changed, or was
    /// created), at most `timeout`; returns the new serial, or `None` at
    /// the timeout. Sleeps on a futex: no polling.
    pub fn wait(&self, name: &str, seen: Serial, timeout: Duration) -> io::Result<Option<Serial>> {
        check_name(name)?;
        self.wait_on(name, seen, timeout, Target::Property)
    }

    /// Sleeps until anything under `prefix` (empty: anything at all)
    /// changes after the stamp `seen` ([`prefix_serial`](Self::prefix_serial)),
    /// at most `timeout`; returns the new stamp, or `None` at the timeout.
    pub fn wait_prefix(
        &self,
        prefix: &str,
        seen: Serial,
        timeout: Duration,
    ) -> io::Result<Option<Serial>> {
        let prefix = check_prefix(prefix)?;
        self.wait_on(prefix, seen, timeout, Target::Prefix)
    }

    /// Waits on the futex word of `name` (its record's serial, or its
    /// node's change count), or, while that does not exist, on the root's
    /// change count until it does.
    fn wait_on(
        &self,
        name: &str,
        seen: Serial,
        timeout: Duration,
        target: Target,
    ) -> io::Result<Option<Serial>> {
        let deadline = Instant::now().checked_add(timeout);
        // A record's serial has a dirty bit, set during a write: a change
        // is a different serial with it clear. A node's count has none.
        let mask = match target {
            Target::Property => !1,
            Target::Prefix => !0,
        };
        loop {
            let view = self.view()?;
            let word = |view: &area::View<'_>| -> io::Result<Option<usize>> {
                let Some(n) = view.find(name)? else {
                    return Ok(None);
                };
                Ok(match target {
                    Target::Property => view.record(n)?,
                    Target::Prefix => Some(n),
                })
            };
            match word(&view)? {
                Some(at) => {
                    let w = match target {
                        Target::Property => view.record_serial(at)?,
                        Target::Prefix => view.node_serial(at)?,
                    };
                    let now = w.load(Ordering::Acquire);
                    // (A record being written is dirty: wait for the end.)
                    let settled = now & 1 == 0 || target == Target::Prefix;
                    if settled && now & mask != seen.0 {
                        return Ok(Some(Serial(now & mask)));
                    }
                    if !area::wait_word(w, now, deadline)? {
                        return Ok(None);
                    }
                }
                // Properties are never removed: one that was seen exists.
                None if seen != Serial::NONE => return Ok(Some(Serial::NONE)),
                None => {
                    let root = view.node_serial(area::ROOT)?;
                    let now = root.load(Ordering::Acquire);
                    // Created between the lookup and that load?
                    if word(&view)?.is_some() {
                        continue;
                    }
                    if !area::wait_word(root, now, deadline)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Asks the daemon to set `name` to `value`; returns once every reader
    /// can see it. Refused (`PermissionDenied`) if the daemon's policy does
    /// not let this user set `name`, or `name` is an `ro.*` property that
    /// is already set.
    pub fn set(&self, name: &str, value: &str) -> io::Result<()> {
        set(&self.store, Some(self.owner), name, value)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Property,
    Prefix,
}

/// Asks the daemon of `store` to set `name` to `value`; if `owner` is
/// given, the daemon must run as that uid (the owner of the area).
fn set(store: &str, owner: Option<u32>, name: &str, value: &str) -> io::Result<()> {
    check_store(store)?;
    check_name(name)?;
    if value.len() > LONG_VALUE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a value of {} bytes for {name}: the most is {LONG_VALUE_MAX}",
                value.len()
            ),
        ));
    }
    let mut conn = UnixStream::connect(&socket_addr(store)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the daemon of property store {store:?} ({e}): is `ipc propd --name \
                 {store}` running?"
            ),
        )
    })?;
    let daemon = conn.peer_credentials()?;
    if let Some(owner) = owner {
        if daemon.uid != owner && daemon.uid != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the process answering for property store {store:?} (pid {}) runs as uid {}, \
                     not as the owner of the area (uid {owner}): refusing to hand it the value",
                    daemon.pid, daemon.uid
                ),
            ));
        }
    }
    // Once the request is on its way, an error leaves it unknown whether
    // the daemon applied it: say so, in the daemon's terms.
    let lost = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "the daemon of property store {store:?} (pid {}) did not confirm setting \
                 {name} ({e}); it may or may not be set: read it back, or set it again once \
                 the daemon is running",
                daemon.pid
            ),
        )
    };
    // A daemon that refuses this client (too many clients, or out of
    // descriptors) answers before reading the request and closes: the send
    // may then fail, and the answer waiting in the socket says why.
    let sent = conn.send_timeout(server::request(name, value), server::TIMEOUT);
    conn.set_max_message_size(server::REPLY_MAX);
    let mut reply = Vec::new();
    let answer = match sent {
        Ok(()) => conn.recv_timeout_into(&mut reply, server::TIMEOUT),
        Err(e) => match conn.recv_timeout_into(&mut reply, Duration::ZERO) {
            Ok(()) => Ok(()),
            Err(_) => return Err(lost(e.into())),
        },
    };
    answer.map_err(|e| lost(e.into()))?;
    server::parse_reply(&reply)
}
