//! The property daemon: the one writer of a store's area.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::area::Writer;
use super::{area_name, check_name, check_store, socket_addr};
use crate::named::FileId;
use crate::policy::Pattern;
pub use crate::policy::PolicyError;
use crate::socket::unix::{UnixListener, UnixStream};
use crate::sys;
use crate::{MessageReceiver, MessageSenderExt};

/// How long the daemon and a client wait for each other's message.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest reply (a status and an explanation).
pub(crate) const REPLY_MAX: usize = 4096;
/// The largest request: an op, a name and a long value.
const REQUEST_MAX: usize = 3 + super::NAME_MAX + super::LONG_VALUE_MAX;
/// Connections served at once; more are refused.
const CLIENTS_MAX: usize = 64;
const OP_SET: u8 = 1;
/// The file of saved `persist.*` properties in the persist directory.
const PERSIST_FILE: &str = "persist.json";

/// A set request: `[op][u16 name length][name][value]`.
pub(crate) fn request(name: &str, value: &str) -> Vec<u8> {
    let mut r = Vec::with_capacity(3 + name.len() + value.len());
    r.push(OP_SET);
    r.extend_from_slice(&(name.len() as u16).to_le_bytes());
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(value.as_bytes());
    r
}

fn parse_request(r: &[u8]) -> Result<(&str, &str), String> {
    let [op, a, b, rest @ ..] = r else {
        return Err(format!("a request of {} bytes is too short", r.len()));
    };
    if *op != OP_SET {
        return Err(format!("unknown request {op}"));
    }
    let n = u16::from_le_bytes([*a, *b]) as usize;
    if n > rest.len() {
        return Err(format!("a name of {n} bytes in a request of {}", r.len()));
    }
    let name = std::str::from_utf8(&rest[..n]).map_err(|_| "the name is not UTF-8")?;
    let value = std::str::from_utf8(&rest[n..]).map_err(|_| "the value is not UTF-8")?;
    Ok((name, value))
}

/// A reply: `[i32 errno, 0 for done][explanation]`.
fn reply(code: i32, msg: &str) -> Vec<u8> {
    let mut r = code.to_le_bytes().to_vec();
    r.extend_from_slice(msg.as_bytes());
    r
}

pub(crate) fn parse_reply(r: &[u8]) -> io::Result<()> {
    let [a, b, c, d, msg @ ..] = r else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the property daemon's reply was cut short",
        ));
    };
    match i32::from_le_bytes([*a, *b, *c, *d]) {
        0 => Ok(()),
        code => Err(io::Error::new(
            io::Error::from_raw_os_error(code).kind(),
            String::from_utf8_lossy(msg).into_owned(),
        )),
    }
}

// ---- policy ----

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Pattern,
    /// `None`: everyone.
    uids: Option<Vec<u32>>,
}

/// Who may set which properties.
///
/// A policy file has one rule per line (`#` starts a comment):
///
/// ```text
/// # NAME          UIDS
/// net.*           1000,1001
/// persist.*       *
/// debug.level     1000
/// ```
///
/// `NAME` is a property name, a prefix ending in `*` (`net.*` covers
/// `net.wifi.state`), or `*`; `UIDS` a comma-separated list of numeric
/// uids, or `*` for everyone. The first rule whose name matches decides.
/// With no matching rule (and with the empty, default policy) only the
/// daemon's own user may set a property. Root may always.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads a policy file.
    pub fn load(path: impl AsRef<Path>) -> io::Result<Policy> {
        crate::policy::load(path.as_ref())
    }

    /// Why user `uid` may not set `name` (the daemon runs as `daemon`), or
    /// `None` if it may.
    fn refusal(&self, uid: u32, daemon: u32, name: &str) -> Option<String> {
        if uid == 0 {
            return None;
        }
        match self.rules.iter().find(|r| r.pattern.matches(name)) {
            Some(r) => match &r.uids {
                None => None,
                Some(u) if u.contains(&uid) => None,
                Some(u) => Some(format!(
                    "uid {uid} may not set {name}: the daemon's policy gives {} to uid{} {}",
                    r.pattern.as_str(),
                    if u.len() == 1 { "" } else { "s" },
                    u.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                )),
            },
            None if uid == daemon => None,
            None => Some(format!(
                "uid {uid} may not set {name}: no rule of the daemon's policy covers it, so \
                 only its own user (uid {daemon}) and root may (ipc propd --policy FILE adds \
                 rules)"
            )),
        }
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Policy, PolicyError> {
        let rules = crate::policy::parse_lines(text, |words| {
            let [pattern, uids] = words[..] else {
                return Err(format!(
                    "{:?}: expected two words, NAME UIDS (like `net.* 1000,1001`)",
                    words.join(" ")
                ));
            };
            Ok(Rule {
                pattern: Pattern::parse(pattern, "property name", |n| check_name(n).is_ok())?,
                uids: crate::policy::parse_uids(uids)?,
            })
        })?;
        Ok(Policy { rules })
    }
}

// ---- the daemon ----

/// Builds a [`PropServer`].
#[derive(Debug, Clone)]
pub struct PropServerBuilder {
    store: String,
    policy: Policy,
    persist: Option<PathBuf>,
    mode: u32,
    keep: bool,
}

impl PropServerBuilder {
    /// Who may set what (default: only this process's user, and root).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Saves `persist.*` properties in `dir/persist.json` (atomically, on
    /// every change) and loads them at start.
    pub fn persist_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persist = Some(dir.into());
        self
    }

    /// The area's permission bits (default 0600, whatever the umask):
    /// 0644 lets every user read the properties.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Leaves the area in place when the server stops (default: marked
    /// closed and removed).
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Takes the store's socket (refused if another daemon serves it),
    /// creates its area or takes over the one a crashed daemon left,
    /// loads the saved `persist.*` properties, and serves on a thread of
    /// its own until dropped.
    pub fn start(self) -> io::Result<PropServer> {
        check_store(&self.store)?;
        let addr = socket_addr(&self.store);
        // The socket first: while another daemon serves the store, its
        // area is not ours to take.
        let listener = UnixListener::bind(&addr).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    e.kind(),
                    format!(
                        "another daemon already serves property store {:?} (its socket @{} is \
                         taken)",
                        self.store,
                        &area_name(&self.store)[1..]
                    ),
                )
            } else {
                e
            }
        })?;
        let spare = sys::socket::Spare::new()?;
        let (writer, id) = open_area(&self.store, self.mode)?;
        let uid = sys::process::euid();
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            writer: Mutex::new(writer),
            policy: self.policy,
            persist: self.persist,
            saved: Mutex::new(BTreeMap::new()),
            uid,
            stop: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
        });
        // Nothing served (a bad persist file, no thread): the area made
        // for it goes too.
        let abandon = |e: io::Error| {
            shared
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close();
            let path = Path::new("/dev/shm").join(&area_name(&shared.store)[1..]);
            let _ = crate::named::remove_if_same(&path, id);
            e
        };
        shared.load_persisted().map_err(abandon)?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ipckit-propd".into())
            .spawn(move || accept_loop(&s, &listener, spare))
            .map_err(abandon)?;
        Ok(PropServer {
            shared,
            thread: Some(thread),
            area: id,
            keep: self.keep,
        })
    }
}

/// Creates the area, or takes over this user's existing one.
fn open_area(store: &str, mode: u32) -> io::Result<(Writer, FileId)> {
    let name = std::ffi::CString::new(area_name(store)).expect("checked name");
    let path = Path::new("/dev/shm").join(&area_name(store)[1..]);
    let flags = libc::O_RDWR | libc::O_NOFOLLOW;
    match sys::mman::shm_open(&name, flags | libc::O_CREAT | libc::O_EXCL, 0o600) {
        Ok(fd) => {
            sys::fd::fchmod(fd.as_fd(), mode)?;
            let id = FileId::of_fd(fd.as_fd())?;
            match Writer::create(fd) {
                Ok(w) => Ok((w, id)),
                Err(e) => {
                    let _ = crate::named::remove_if_same(&path, id);
                    Err(e)
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let fd = sys::mman::shm_open(&name, flags, 0)?;
            let meta = sys::fd::fstat(fd.as_fd())?;
            if meta.st_uid != sys::process::euid() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {}, not to this user: it is not taken over or \
                         replaced (a daemon of that user serves store {store:?}, or it is left \
                         from one)",
                        path.display(),
                        meta.st_uid
                    ),
                ));
            }
            sys::fd::fchmod(fd.as_fd(), mode)?;
            let w = Writer::adopt(fd).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} cannot be taken over: {e} (remove it with `ipc rm shm:{}` to start \
                         afresh)",
                        path.display(),
                        area_name(store)
                    ),
                )
            })?;
            Ok((w, FileId::of_stat(&meta)))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", path.display()),
        )),
    }
}

struct Shared {
    store: String,
    writer: Mutex<Writer>,
    policy: Policy,
    persist: Option<PathBuf>,
    /// The `persist.*` properties as last saved.
    saved: Mutex<BTreeMap<String, String>>,
    uid: u32,
    stop: AtomicBool,
    clients: AtomicUsize,
}

impl Shared {
    fn load_persisted(&self) -> io::Result<()> {
        let Some(dir) = &self.persist else {
            return Ok(());
        };
        // Refused now rather than at the first persist.* set.
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the persist directory {} (PropServerBuilder::persist_dir) is not a \
                     directory: create it first",
                    dir.display()
                ),
            ));
        }
        let path = dir.join(PERSIST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", path.display()),
                ))
            }
        };
        let saved: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a saved property file: {e}", path.display()),
            )
        })?;
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for (name, value) in &saved {
            if !name.starts_with("persist.") || check_name(name).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} holds {name:?}, not a persist.* name", path.display()),
                ));
            }
            w.set(name, value.as_bytes())?;
        }
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        Ok(())
    }

    /// Writes `saved` to the persist file: a new file, flushed, renamed
    /// over the old one, and the directory flushed.
    fn save(&self, dir: &Path, saved: &BTreeMap<String, String>) -> io::Result<()> {
        let tmp = dir.join(format!(".{PERSIST_FILE}.tmp"));
        let text = serde_json::to_string_pretty(saved).map_err(io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(PERSIST_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// One set request from user `uid`: `Ok(())` once visible, or the
    /// errno and words of a refusal.
    fn set(&self, uid: u32, name: &str, value: &str) -> Result<(), (i32, String)> {
        check_name(name).map_err(|e| (libc::EINVAL, e.to_string()))?;
        if let Some(why) = self.policy.refusal(uid, self.uid, name) {
            return Err((libc::EPERM, why));
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if name.starts_with("ro.") {
            let view = w.view().map_err(|e| (libc::EIO, e.to_string()))?;
            let old = match view.find(name).and_then(|n| match n {
                Some(n) => view.record(n),
                None => Ok(None),
            }) {
                Ok(r) => r,
                Err(e) => return Err((libc::EIO, e.to_string())),
            };
            if let Some(r) = old {
                let (v, _) = view.read(r).map_err(|e| (libc::EIO, e.to_string()))?;
                return Err((
                    libc::EROFS,
                    format!(
                        "{name} is read-only once set (ro.* properties are set once), and it is \
                         {:?}",
                        String::from_utf8_lossy(&v)
                    ),
                ));
            }
        }
        let persist = match (&self.persist, name.starts_with("persist.")) {
            (Some(dir), true) => {
                let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone();
                saved.insert(name.to_owned(), value.to_owned());
                self.save(dir, &saved).map_err(|e| {
                    (
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!(
                            "{name} was not set: saving it in {} failed: {e}",
                            dir.join(PERSIST_FILE).display()
                        ),
                    )
                })?;
                Some(saved)
            }
            _ => None,
        };
        w.set(name, value.as_bytes()).map_err(|e| {
            (
                e.raw_os_error().unwrap_or(match e.kind() {
                    io::ErrorKind::StorageFull => libc::ENOSPC,
                    io::ErrorKind::InvalidInput => libc::EINVAL,
                    _ => libc::EIO,
                }),
                e.to_string(),
            )
        })?;
        if let Some(saved) = persist {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        }
        Ok(())
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener, mut spare: sys::socket::Spare) {
    while !shared.stop.load(Ordering::Acquire) {
        let mut conn = match listener.accept_timeout(Duration::from_millis(50)) {
            Ok(c) => c,
            Err(e) if sys::socket::out_of_descriptors(&e) => {
                // Tell the waiting client, rather than leave it in the
                // backlog and spin on it.
                let told = listener.shed(&mut spare, |mut c| {
                    let msg = format!(
                        "the daemon of property store {:?} (pid {}) is out of file \
                         descriptors: try again, or raise its limit (RLIMIT_NOFILE, \
                         `ulimit -n`)",
                        shared.store,
                        std::process::id()
                    );
                    let _ = c.send_timeout(reply(libc::EMFILE, &msg), Duration::from_millis(100));
                });
                if !told {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            Err(_) => continue,
        };
        if shared.clients.fetch_add(1, Ordering::AcqRel) >= CLIENTS_MAX {
            shared.clients.fetch_sub(1, Ordering::AcqRel);
            let msg = format!(
                "the daemon of property store {:?} is serving {CLIENTS_MAX} clients, its most: \
                 try again",
                shared.store
            );
            let _ = conn.send_timeout(reply(libc::EBUSY, &msg), Duration::from_millis(100));
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ipckit-propd-client".into())
            .spawn(move || {
                serve(&s, conn);
                s.clients.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Answers one client's requests until it hangs up (or is silent for
/// [`TIMEOUT`]).
fn serve(shared: &Shared, mut conn: UnixStream) {
    let Ok(cred) = conn.peer_credentials() else {
        return;
    };
    conn.set_max_message_size(REQUEST_MAX);
    let mut buf = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        if conn.recv_timeout_into(&mut buf, TIMEOUT).is_err() {
            return;
        }
        let answer = match parse_request(&buf) {
            Ok((name, value)) => match shared.set(cred.uid, name, value) {
                Ok(()) => reply(0, ""),
                Err((code, why)) => reply(code, &why),
            },
            Err(why) => reply(libc::EINVAL, &why),
        };
        if conn.send_timeout(answer, TIMEOUT).is_err() {
            return;
        }
    }
}

/// The daemon of a property store, serving on a thread of its own: the one
/// process that writes the store's area. Dropping it stops serving and
/// (unless [`PropServerBuilder::keep`]) marks the area closed and removes
/// it. `ipc propd` runs one.
pub struct PropServer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    area: FileId,
    keep: bool,
}

impl fmt::Debug for PropServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropServer")
            .field("store", &self.shared.store)
            .finish()
    }
}

impl PropServer {
    /// A daemon for store `store` (letters, digits, `_`, `-`, `.`).
    pub fn builder(store: &str) -> PropServerBuilder {
        PropServerBuilder {
            store: store.to_owned(),
            policy: Policy::default(),
            persist: None,
            mode: 0o600,
            keep: false,
        }
    }

    /// The store it serves.
    pub fn store(&self) -> &str {
        &self.shared.store
    }

    /// Sets a property directly (as the daemon itself: no policy check,
    /// but `ro.*` and `persist.*` rules apply).
    pub fn set(&self, name: &str, value: &str) -> io::Result<()> {
        self.shared
            .set(0, name, value)
            .map_err(|(code, why)| io::Error::new(io::Error::from_raw_os_error(code).kind(), why))
    }
}

impl Drop for PropServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.keep {
            let w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.close();
            let path = Path::new("/dev/shm").join(&area_name(&self.shared.store)[1..]);
            let _ = crate::named::remove_if_same(&path, self.area);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules_and_refusals() {
        let p: Policy = "# comment\nnet.* 1000,1001\npersist.* *\ndebug.level 7 # one\n"
            .parse()
            .unwrap();
        assert_eq!(p.refusal(1000, 5, "net.wifi.state"), None);
        assert_eq!(p.refusal(9, 5, "persist.x"), None);
        assert_eq!(p.refusal(7, 5, "debug.level"), None);
        assert_eq!(p.refusal(0, 5, "anything"), None);
        assert_eq!(p.refusal(5, 5, "other.thing"), None);
        let why = p.refusal(9, 5, "net.x").unwrap();
        assert!(why.contains("gives net.* to uids 1000,1001"), "{why}");
        let why = p.refusal(9, 5, "debug.levelx").unwrap();
        assert!(why.contains("no rule"), "{why}");
        for bad in ["net.*", "a b c", "n..x 1", "net.* x", "a*b 1"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
        let e = "ok 1\nnet.* abc".parse::<Policy>().unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let r = request("net.state", "up");
        assert_eq!(parse_request(&r).unwrap(), ("net.state", "up"));
        for bad in [&[][..], &[1, 5, 0, b'a'], &[9, 0, 0], &[1, 1, 0, 0xff]] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        assert!(parse_reply(&reply(0, "")).is_ok());
        let e = parse_reply(&reply(libc::EPERM, "no")).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (io::ErrorKind::PermissionDenied, "no".into())
        );
        assert!(parse_reply(&[1, 2]).is_err());
    }
}
