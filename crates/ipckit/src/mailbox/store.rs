//! The store: durable mailboxes on disk, surviving a crash of the broker.
//!
//! Each durable mailbox is an append-only log: a directory of segment
//! files, written at the end of each turn of the broker's loop (one
//! `write(2)` per mailbox with news) before any confirmation of that turn
//! is sent, so a send confirmed to its sender is in the kernel's hands
//! when the sender learns it: a broker killed with `SIGKILL` loses
//! nothing confirmed. What survives a crash of the whole machine is what
//! the [`Fsync`] policy has synced.
//!
//! ## Layout
//!
//! ```text
//! DIR/lock                       flock(2)ed by the broker using the store
//! DIR/mailboxes/ID/meta          name, owner, kind, settings (written once)
//! DIR/mailboxes/ID/SEGMENT.log   records, oldest segment first
//! ```
//!
//! A record is `u32` length, `u32` CRC-32 (of what follows), a kind and
//! its body, little endian: `HEAD` (the next sequence number when the
//! segment began), `MSG` (a message with its sequence number), `REMOTE`
//! (the same, for a message that came from another broker through the
//! NATS bridge), `REMOVE` (sequence numbers that left the mailbox).
//!
//! ## Recovery
//!
//! On start every segment is read in order, every record checked: a
//! short or corrupt record at the end of the newest segment (a write the
//! crash cut) is cut off the file, not loaded; one inside an older
//! segment ends the reading of that segment, and the report says so.
//!
//! ## Reclaiming space
//!
//! A segment grows to [`SEGMENT_BYTES`], then the next begins. The oldest
//! segment goes once none of its messages is left; when at most a quarter
//! of its bytes are messages still live, those are copied to the newest
//! segment first. A segment holding a message sent with an id stays until
//! that message is older than the mailbox's deduplication window, so that
//! a send retried across a restart is still recognised.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::config::Config;
use super::state::{Cred, Stored};
use super::wire::{self, Rd, WireError};

/// A segment file's size before the next one begins (32 MiB).
pub(crate) const SEGMENT_BYTES: u64 = 32 << 20;

const HEAD: u8 = 1;
const MSG: u8 = 2;
const REMOVE: u8 = 3;
const REMOTE: u8 = 4;

const META_MAGIC: &[u8; 8] = b"IPCKMBX1";
/// A record's length and checksum.
const RECORD_HEAD: usize = 8;
/// A `MSG` record's bytes besides its id, reason and payload.
const MSG_FIXED: usize = RECORD_HEAD + 1 + 8 * 3 + 4 * 4 + 1 + 2;

/// When a durable mailbox's writes are forced to the disk (`fsync(2)`).
///
/// Whatever the policy, a confirmed send has been written to the file
/// (`write(2)`) before it is confirmed, so it survives the broker being
/// killed; the policy decides what survives the machine losing power.
///
/// ```
/// use ipckit::mailbox::Fsync;
/// use std::time::Duration;
///
/// assert_eq!("10ms".parse::<Fsync>()?, Fsync::Every(Duration::from_millis(10)));
/// assert_eq!("always".parse::<Fsync>()?, Fsync::Always);
/// assert_eq!(Fsync::default().to_string(), "100ms");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before any send written in a turn of the broker's loop is
    /// confirmed (the sends of one turn share one `fsync`).
    Always,
    /// At most this long after a write (default 100 ms): a power loss
    /// loses at most that much of what was confirmed.
    Every(Duration),
    /// Never (the kernel writes back when it likes).
    Never,
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Every(Duration::from_millis(100))
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::Every(d) if d.subsec_millis() == 0 && !d.is_zero() => {
                write!(f, "{}s", d.as_secs())
            }
            Fsync::Every(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

impl FromStr for Fsync {
    type Err = io::Error;

    /// `always`, `never`, or an interval: `10ms`, `2s`.
    fn from_str(s: &str) -> io::Result<Fsync> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{s:?} is not an fsync policy: always, never, or an interval like 10ms or 1s"
                ),
            )
        };
        match s {
            "always" => return Ok(Fsync::Always),
            "never" => return Ok(Fsync::Never),
            _ => {}
        }
        let (n, unit) = match s.strip_suffix("ms") {
            Some(n) => (n, 1),
            None => (s.strip_suffix('s').ok_or_else(bad)?, 1000),
        };
        let n: u64 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Ok(Fsync::Always);
        }
        Ok(Fsync::Every(Duration::from_millis(n.saturating_mul(unit))))
    }
}

/// What a broker found in its store when it started.
#[derive(Debug, Clone, Default)]
pub struct StoreReport {
    /// The store's directory.
    pub dir: PathBuf,
    /// Durable mailboxes loaded.
    pub mailboxes: usize,
    /// Messages loaded.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// What was wrong and what was done about it (a cut tail, a skipped
    /// segment), one line each.
    pub problems: Vec<String>,
}

impl fmt::Display for StoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store {}: {} durable mailbox{}, {} message{} ({} bytes)",
            self.dir.display(),
            self.mailboxes,
            if self.mailboxes == 1 { "" } else { "es" },
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            self.bytes
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn err(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Makes `dir` (mode 0700) if missing; an existing one must be this
/// user's directory, not a link, and writable by nobody else.
fn own_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let me = crate::sys::process::euid();
            // Opened once without following a link, checked on the
            // descriptor.
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(dir)
                .map_err(|e| {
                    err(
                        e,
                        format_args!("cannot open store directory {}", dir.display()),
                    )
                })?;
            let meta = f.metadata()?;
            if meta.uid() != me || meta.mode() & 0o022 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {} with mode {:04o}: a store must be a directory of \
                         this user (uid {me}) that no one else may write",
                        dir.display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    ),
                ));
            }
            Ok(())
        }
        Err(e) => Err(err(
            e,
            format_args!("cannot make store directory {}", dir.display()),
        )),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn record(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEAD]);
    buf.push(kind);
    body(buf);
    let len = (buf.len() - at - RECORD_HEAD) as u32;
    let crc = crc32fast::hash(&buf[at + RECORD_HEAD..]);
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    buf.len() - at
}

/// The bytes a message's record takes.
pub(crate) fn msg_len(m: &Stored) -> u64 {
    (MSG_FIXED
        + m.id.as_ref().map_or(0, |i| i.len())
        + m.reason.as_ref().map_or(0, |r| r.len())
        + m.payload.len()) as u64
}

/// One segment file, as the log accounts for it.
#[derive(Debug, Clone, Copy)]
struct Seg {
    id: u32,
    /// The next sequence number when it began: every message first
    /// written to it has this number or a later one.
    head: u64,
    size: u64,
    live: u64,
    live_bytes: u64,
    /// When (wall clock, ms) the newest message with an id was written
    /// to it; 0 for none.
    id_wall: u64,
}

fn seg_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.log"))
}

/// One durable mailbox's log (see the module docs).
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    segs: VecDeque<Seg>,
    /// The newest segment, open for appending.
    file: File,
    /// Records not yet written.
    buf: Vec<u8>,
    removes: Vec<u64>,
    /// Written since the last `fsync`.
    unsynced: bool,
    /// A segment's size before the next begins.
    segment_bytes: u64,
    /// Segments removed, and messages copied out of them, since the log
    /// was opened.
    reclaimed: (u64, u64),
}

impl Log {
    fn begin(dir: PathBuf, id: u32, head: u64, segment_bytes: u64) -> io::Result<Log> {
        let mut log = Log {
            file: Self::new_segment(&dir, id)?,
            dir,
            segs: VecDeque::new(),
            buf: Vec::new(),
            removes: Vec::new(),
            unsynced: false,
            segment_bytes,
            reclaimed: (0, 0),
        };
        log.start_segment(id, head);
        Ok(log)
    }

    fn new_segment(dir: &Path, id: u32) -> io::Result<File> {
        let path = seg_path(dir, id);
        OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(e, format_args!("cannot make {}", path.display())))
    }

    /// Accounts for segment `id` and queues its `HEAD` record (counted in
    /// its size when written).
    fn start_segment(&mut self, id: u32, head: u64) {
        record(&mut self.buf, HEAD, |b| {
            b.extend_from_slice(&head.to_le_bytes())
        });
        self.segs.push_back(Seg {
            id,
            head,
            size: 0,
            live: 0,
            live_bytes: 0,
            id_wall: 0,
        });
    }

    fn seg_mut(&mut self, id: u32) -> Option<&mut Seg> {
        let i = self.segs.binary_search_by_key(&id, |s| s.id).ok()?;
        self.segs.get_mut(i)
    }

    /// Appends message `seq`; returns the segment it went to.
    pub(crate) fn append(&mut self, seq: u64, m: &Stored, wall_ms: u64) -> u32 {
        let kind = if m.remote { REMOTE } else { MSG };
        let n = record(&mut self.buf, kind, |b| {
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&wall_ms.to_le_bytes());
            b.extend_from_slice(&m.mtype.to_le_bytes());
            b.extend_from_slice(&m.priority.to_le_bytes());
            b.extend_from_slice(&m.sender.pid.to_le_bytes());
            b.extend_from_slice(&m.sender.uid.to_le_bytes());
            b.extend_from_slice(&m.sender.gid.to_le_bytes());
            wire::put_str8(b, m.id.as_deref().unwrap_or(""));
            wire::put_str16(b, m.reason.as_deref().unwrap_or(""));
            b.extend_from_slice(&m.payload);
        });
        debug_assert_eq!(n as u64, msg_len(m));
        let back = self.segs.back_mut().expect("a log has a segment");
        back.live += 1;
        back.live_bytes += n as u64;
        if m.id.is_some() {
            back.id_wall = back.id_wall.max(wall_ms);
        }
        back.id
    }

    /// Message `seq` (in segment `seg`) left the mailbox.
    pub(crate) fn removed(&mut self, seq: u64, m: &Stored) {
        let len = msg_len(m);
        if let Some(s) = self.seg_mut(m.disk) {
            s.live -= 1;
            s.live_bytes -= len;
        }
        self.removes.push(seq);
        if self.removes.len() >= 8192 {
            self.flush_removes();
        }
    }

    fn flush_removes(&mut self) {
        if self.removes.is_empty() {
            return;
        }
        let removes = std::mem::take(&mut self.removes);
        record(&mut self.buf, REMOVE, |b| {
            for s in &removes {
                b.extend_from_slice(&s.to_le_bytes());
            }
        });
        self.removes = removes;
        self.removes.clear();
    }

    /// The oldest segment, if it can go now (it is older than segment
    /// `before`, and its messages' ids are out of the deduplication window
    /// `window` at wall-clock time `wall`): (its id, the next segment's
    /// head, whether live messages must be copied out first).
    pub(crate) fn reclaimable(
        &self,
        before: u32,
        wall: u64,
        window: Duration,
    ) -> Option<(u32, u64, bool)> {
        let (front, next) = (self.segs.front()?, self.segs.get(1)?);
        if front.id >= before || front.id_wall.saturating_add(window.as_millis() as u64) > wall {
            return None;
        }
        if front.live == 0 {
            return Some((front.id, next.head, false));
        }
        (front.live_bytes * 4 <= front.size).then_some((front.id, next.head, true))
    }

    /// Copies a live message out of segment `from` (which is about to
    /// go) to the newest; returns the segment it is in now.
    pub(crate) fn moved(&mut self, seq: u64, m: &Stored, wall_ms: u64) -> u32 {
        let len = msg_len(m);
        if let Some(s) = self.seg_mut(m.disk) {
            s.live -= 1;
            s.live_bytes -= len;
        }
        self.reclaimed.1 += 1;
        self.append(seq, m, wall_ms)
    }

    /// The newest segment's id.
    pub(crate) fn newest(&self) -> u32 {
        self.segs.back().map_or(0, |s| s.id)
    }

    /// Removes the oldest segment, once what was copied out of it is
    /// written (and synced, unless the policy is never to).
    pub(crate) fn drop_front(&mut self, next_seq: u64, policy: Fsync) -> io::Result<()> {
        self.write(next_seq, policy)?;
        if policy != Fsync::Never {
            self.sync()?;
        }
        let front = self.segs.pop_front().expect("a reclaimable segment");
        self.reclaimed.0 += 1;
        let path = seg_path(&self.dir, front.id);
        fs::remove_file(&path).map_err(|e| err(e, format_args!("cannot remove {}", path.display())))
    }

    /// Whether there is anything to write.
    pub(crate) fn pending(&self) -> bool {
        !self.buf.is_empty() || !self.removes.is_empty()
    }

    /// Writes what is pending; begins a new segment when this one is
    /// full (syncing the full one unless the policy is `never`).
    pub(crate) fn write(&mut self, next_seq: u64, policy: Fsync) -> io::Result<()> {
        self.flush_removes();
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = || seg_path(&self.dir, self.segs.back().map_or(0, |s| s.id));
        self.file
            .write_all(&self.buf)
            .map_err(|e| err(e, format_args!("cannot write {}", path().display())))?;
        let back = self.segs.back_mut().expect("a log has a segment");
        back.size += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        let (full, id) = (back.size >= self.segment_bytes, back.id + 1);
        if full {
            if policy != Fsync::Never {
                self.sync()?;
            }
            self.file = Self::new_segment(&self.dir, id)?;
            self.start_segment(id, next_seq);
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// `fsync(2)` of the newest segment, if written since the last.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data().map_err(|e| {
                let p = seg_path(&self.dir, self.segs.back().map_or(0, |s| s.id));
                err(e, format_args!("cannot fsync {}", p.display()))
            })?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Whether written and not yet synced.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Segments removed and messages copied out of them (for tests).
    #[cfg(test)]
    pub(crate) fn reclaimed(&self) -> (u64, u64) {
        self.reclaimed
    }

    /// The newest segment's file (for tests and the fuzzers).
    #[cfg(any(test, feature = "fuzz"))]
    pub(crate) fn newest_path(&self) -> PathBuf {
        seg_path(&self.dir, self.segs.back().map_or(0, |s| s.id))
    }
}

/// A durable mailbox as recovered from its log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub name: String,
    pub owner: Cred,
    pub dead: bool,
    pub config: Config,
    /// The sequence number the next message gets.
    pub next_seq: u64,
    /// Its messages by sequence number, `at` set from their wall-clock
    /// time.
    pub msgs: BTreeMap<u64, Stored>,
    /// Message ids with their sequence numbers and wall-clock times
    /// (milliseconds), for deduplication.
    pub ids: Vec<(u64, u64, Box<str>)>,
    pub log: Log,
}

/// The directory of durable mailboxes a broker keeps (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    _lock: File,
    pub(crate) policy: Fsync,
    segment_bytes: u64,
    next_id: u64,
    /// When the last `fsync` round was (for [`Fsync::Every`]).
    pub(crate) last_sync: Instant,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (making it if need be) and locks the store in `root`, and
    /// recovers every durable mailbox in it. `max_message` bounds a
    /// record read back; `now` and `wall` (ms) are the same moment.
    pub(crate) fn open(
        root: &Path,
        policy: Fsync,
        max_message: usize,
        segment_bytes: u64,
        now: Instant,
        wall: u64,
    ) -> io::Result<(Store, Vec<Recovered>, StoreReport)> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| err(e, format_args!("cannot make {}", parent.display())))?;
        }
        own_dir(root)?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| err(e, format_args!("cannot open {}", lock_path.display())))?;
        if !crate::sys::fd::try_lock_exclusive(lock.as_fd())? {
            let pid = fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "store {} is in use by another broker (pid {}): give each broker its own \
                     store directory",
                    root.display(),
                    pid.trim()
                ),
            ));
        }
        lock.set_len(0)?;
        (&lock).write_all(std::process::id().to_string().as_bytes())?;
        let dir = root.join("mailboxes");
        own_dir(&dir)?;
        let mut store = Store {
            dir,
            _lock: lock,
            policy,
            segment_bytes,
            next_id: 1,
            last_sync: now,
        };
        let mut report = StoreReport {
            dir: root.to_path_buf(),
            ..StoreReport::default()
        };
        let mut found = Vec::new();
        let mut entries: Vec<(u64, PathBuf, bool)> = Vec::new();
        for e in fs::read_dir(&store.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let (num, gone) = match name.strip_suffix(".gone") {
                Some(n) => (n, true),
                None => (&*name, false),
            };
            let Ok(id) = num.parse::<u64>() else {
                report.problems.push(format!(
                    "{}: not a mailbox of this store, left alone",
                    e.path().display()
                ));
                continue;
            };
            store.next_id = store.next_id.max(id + 1);
            entries.push((id, e.path(), gone));
        }
        entries.sort();
        for (_, path, gone) in entries {
            if gone {
                // Removed, but the crash came before the files went.
                fs::remove_dir_all(&path)?;
                continue;
            }
            let found_one = recover_mailbox(
                &path,
                max_message,
                segment_bytes,
                (now, wall),
                &mut report.problems,
            )?;
            match found_one {
                Some(r) => {
                    report.mailboxes += 1;
                    report.messages += r.msgs.len() as u64;
                    report.bytes += r.msgs.values().map(|m| m.payload.len() as u64).sum::<u64>();
                    found.push(r);
                }
                None => continue,
            }
        }
        Ok((store, found, report))
    }

    /// Makes the log of a new durable mailbox.
    pub(crate) fn create(
        &mut self,
        name: &str,
        owner: Cred,
        dead: bool,
        config: &Config,
    ) -> io::Result<Log> {
        let id = self.next_id;
        self.next_id += 1;
        let dir = self.dir.join(format!("{id:08}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| err(e, format_args!("cannot make {}", dir.display())))?;
        let mut meta = Vec::new();
        record(&mut meta, 0, |b| {
            b.extend_from_slice(META_MAGIC);
            b.push(dead as u8);
            b.extend_from_slice(&owner.uid.to_le_bytes());
            b.extend_from_slice(&owner.gid.to_le_bytes());
            wire::put_str16(b, name);
            wire::put_config(b, config);
        });
        let tmp = dir.join("meta.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&meta)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join("meta"))?;
        let mut log = Log::begin(dir.clone(), 1, 1, self.segment_bytes)?;
        log.write(1, self.policy)?;
        log.sync()?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(log)
    }

    /// Removes a durable mailbox's files: renamed out of the way first, so
    /// a crash in between cannot bring part of it back.
    pub(crate) fn remove(&mut self, log: &Log) -> io::Result<()> {
        let dir = &log.dir;
        let mut gone = dir.clone().into_os_string();
        gone.push(".gone");
        fs::rename(dir, &gone)
            .map_err(|e| err(e, format_args!("cannot remove {}", dir.display())))?;
        sync_dir(&self.dir)?;
        fs::remove_dir_all(&gone)
    }

    /// When the next `fsync` round is due, if something waits for one.
    pub(crate) fn sync_due(&self, unsynced: bool) -> Option<Instant> {
        match self.policy {
            Fsync::Every(d) if unsynced => Some(self.last_sync + d),
            _ => None,
        }
    }
}

fn read_meta(path: &Path) -> Result<(String, Cred, bool, Config), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let mut at = 0;
    let Some(Ok((0, body))) = next_record(&bytes, &mut at, 1 << 20) else {
        return Err("not a valid meta record".into());
    };
    let parse = || -> Result<_, WireError> {
        let mut r = Rd { b: body };
        if r.take(8)? != META_MAGIC {
            return Err(WireError("not a mailbox meta file".into()));
        }
        let dead = r.u8()? != 0;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let name = r.str16()?.to_string();
        let config = r.config()?;
        r.finish()?;
        Ok((name, Cred { pid: 0, uid, gid }, dead, config))
    };
    parse().map_err(|e| e.to_string())
}

/// The next record at `*at`: `None` at the end, an error for a short or
/// corrupt one (`*at` stays at its start).
fn next_record<'a>(
    b: &'a [u8],
    at: &mut usize,
    max: usize,
) -> Option<Result<(u8, &'a [u8]), String>> {
    let rest = &b[*at..];
    if rest.is_empty() {
        return None;
    }
    if rest.len() < RECORD_HEAD + 1 {
        return Some(Err(format!("{} bytes, too short for a record", rest.len())));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > max {
        return Some(Err(format!("a record length of {len} bytes")));
    }
    if rest.len() - RECORD_HEAD < len {
        return Some(Err(format!(
            "a record of {len} bytes with {} left in the file",
            rest.len() - RECORD_HEAD
        )));
    }
    let data = &rest[RECORD_HEAD..RECORD_HEAD + len];
    if crc32fast::hash(data) != crc {
        return Some(Err("a record whose checksum does not match".into()));
    }
    *at += RECORD_HEAD + len;
    Some(Ok((data[0], &data[1..])))
}

/// One mailbox directory: its meta and segments, the bad tail of the
/// newest segment cut. `None` if it holds nothing to load.
fn recover_mailbox(
    dir: &Path,
    max_message: usize,
    segment_bytes: u64,
    (now, wall): (Instant, u64),
    problems: &mut Vec<String>,
) -> io::Result<Option<Recovered>> {
    let meta_path = dir.join("meta");
    let mut segs: Vec<u32> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".log")) {
            if let Ok(id) = id.parse() {
                segs.push(id);
            }
        }
    }
    segs.sort_unstable();
    if !meta_path.exists() {
        if segs.is_empty() {
            // Its creation was cut short: nothing was ever stored in it.
            fs::remove_dir_all(dir)?;
        } else {
            problems.push(format!("{}: no meta file, left alone", dir.display()));
        }
        return Ok(None);
    }
    let (name, owner, dead, config) = match read_meta(&meta_path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("{}: {e}; left alone", meta_path.display()));
            return Ok(None);
        }
    };
    let max = max_message + wire::OVERHEAD + MSG_FIXED;
    let mut msgs: BTreeMap<u64, Stored> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut next_seq = 1u64;
    let mut accounts: VecDeque<Seg> = VecDeque::new();
    let at_of = |w: u64| {
        now.checked_sub(Duration::from_millis(wall.saturating_sub(w)))
            .unwrap_or(now)
    };
    for (k, &id) in segs.iter().enumerate() {
        let path = seg_path(dir, id);
        let bytes = fs::read(&path)?;
        let mut seg = Seg {
            id,
            head: next_seq,
            size: 0,
            live: 0,
            live_bytes: 0,
            id_wall: 0,
        };
        let mut at = 0;
        let mut first = true;
        loop {
            let start = at;
            let Some(r) = next_record(&bytes, &mut at, max) else {
                break;
            };
            let r = r.and_then(|(kind, body)| {
                let into = (&mut msgs, &mut accounts, &mut ids, &mut next_seq);
                apply(kind, body, id, &mut seg, into, at_of, first).map_err(|e| e.to_string())
            });
            first = false;
            if let Err(e) = r {
                let lost = bytes.len() - start;
                if k + 1 == segs.len() {
                    problems.push(format!(
                        "{} (mailbox {name}): cut {lost} bytes at offset {start}: {e}",
                        path.display()
                    ));
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(start as u64)?;
                    f.sync_all()?;
                } else {
                    problems.push(format!(
                        "{} (mailbox {name}): skipped its last {lost} bytes from offset {start}: {e}",
                        path.display()
                    ));
                }
                at = start;
                break;
            }
        }
        seg.size = at as u64;
        next_seq = next_seq.max(seg.head);
        accounts.push_back(seg);
    }
    // Appends go to the newest segment (a new one if there is none).
    let log = match accounts.back() {
        Some(last) => {
            let file = OpenOptions::new()
                .append(true)
                .open(seg_path(dir, last.id))?;
            Log {
                dir: dir.to_path_buf(),
                segs: accounts,
                file,
                buf: Vec::new(),
                removes: Vec::new(),
                unsynced: false,
                segment_bytes,
                reclaimed: (0, 0),
            }
        }
        None => Log::begin(dir.to_path_buf(), 1, next_seq, segment_bytes)?,
    };
    Ok(Some(Recovered {
        name,
        owner,
        dead,
        config,
        next_seq,
        msgs,
        ids,
        log,
    }))
}

/// What recovery builds: messages, the older segments' accounts, ids, and
/// the next sequence number.
type Found<'a> = (
    &'a mut BTreeMap<u64, Stored>,
    &'a mut VecDeque<Seg>,
    &'a mut Vec<(u64, u64, Box<str>)>,
    &'a mut u64,
);

/// Applies one record read back from segment `seg_id`.
fn apply(
    kind: u8,
    body: &[u8],
    seg_id: u32,
    seg: &mut Seg,
    (msgs, older, ids, next_seq): Found<'_>,
    at_of: impl Fn(u64) -> Instant,
    first: bool,
) -> Result<(), WireError> {
    let mut r = Rd { b: body };
    let mut unaccount = |m: &Stored, seg: &mut Seg| {
        let len = msg_len(m);
        let s = if m.disk == seg_id {
            Some(seg)
        } else {
            older.iter_mut().find(|s| s.id == m.disk)
        };
        if let Some(s) = s {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(len);
        }
    };
    match kind {
        HEAD if first => {
            seg.head = r.u64()?;
            r.finish()?;
        }
        MSG | REMOTE => {
            let seq = r.u64()?;
            let wall = r.u64()?;
            let mtype = r.i64()?;
            let priority = r.u32()?;
            let pid = r.i32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let id = r.str8()?;
            let reason = r.str16()?;
            let payload = r.rest();
            if seq == 0 || seq == u64::MAX || mtype < 1 {
                return Err(WireError(format!("message {seq} of type {mtype}")));
            }
            *next_seq = (*next_seq).max(seq + 1);
            let m = Stored {
                mtype,
                priority,
                sender: Cred { pid, uid, gid },
                id: (!id.is_empty()).then(|| id.into()),
                reason: (!reason.is_empty()).then(|| reason.into()),
                payload: payload.into(),
                at: at_of(wall),
                refs: 0,
                disk: seg_id,
                remote: kind == REMOTE,
            };
            if let Some(id) = &m.id {
                ids.push((seq, wall, id.clone()));
                seg.id_wall = seg.id_wall.max(wall);
            }
            seg.live += 1;
            seg.live_bytes += msg_len(&m);
            // A copy made when an older segment was reclaimed replaces
            // the original.
            if let Some(old) = msgs.insert(seq, m) {
                unaccount(&old, seg);
            }
        }
        REMOVE => {
            if !r.b.len().is_multiple_of(8) {
                return Err(WireError(format!("a remove record of {} bytes", r.b.len())));
            }
            while !r.b.is_empty() {
                let seq = r.u64()?;
                if let Some(old) = msgs.remove(&seq) {
                    unaccount(&old, seg);
                }
            }
        }
        k => return Err(WireError(format!("record kind {k}"))),
    }
    Ok(())
}
