//! The ring in its shared segment: layout, opening and checking, the
//! processes attached to it, and the sending and receiving ends.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{self, Corrupt, Layout, Side, Signal};
use super::{shm_name, validate_name};
use crate::error::{MessageTooLarge, RecvTimeoutError, SendTimeoutError, Unit};
use crate::message::Deadline;
use crate::shm::{Memfd, Region, Shm};
use crate::sys::mman::Mapping;
use crate::wait::WaitStrategy;

// ---- Layout --------------------------------------------------------------
//
// Line 0, written once by the creator:
//   0 magic u64 | 8 version u32 | 12 flags u32 | 16 capacity u32 |
//   20 slot size u32 | 24 max message u32 | 28 ready u32 |
//   32 creator pid u32 | 36 creator start u32 | 40 creator closed u32
// Each counter and futex word pair on its own line (no false sharing):
//   64 tail u64 (producers) | 128 head u64 (consumers)
//   192 data word, waiters | 256 space word, waiters
//   320 generation u32 (bumped on every attach and detach) |
//       324 senders ever u32 | 328 receivers ever u32
// 384..1408: MAX_PEERS entries of 16 bytes: pid u32, role u32, start u32.
// 2048..: the slots, each: stamp u64 | length u32 | writer pid u32 | payload.
// In a multi ring a sender first puts the position (low 32 bits) in the
// length field and its pid beside it, so that a receiver can tell a slot
// whose writer died half-way (and skip it) from one being written; a
// receiver that takes a message puts its own pid there, with the top bit
// set, so that a sender can free a slot whose reader died before freeing it.

const MAGIC: u64 = u64::from_le_bytes(*b"ipckring");
/// 2: senders and receivers announce the position they are about to
/// claim (`OFF_INTENTS`); a version-1 process would not, so the two never
/// share a ring.
const VERSION: u32 = 2;
const READY: u32 = 0x5245_4459;
const FLAG_MULTI: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_FLAGS: usize = 12;
const OFF_CAPACITY: usize = 16;
const OFF_SLOT_SIZE: usize = 20;
const OFF_MAX_MESSAGE: usize = 24;
pub(crate) const OFF_READY: usize = 28;
const OFF_CREATOR_PID: usize = 32;
const OFF_CREATOR_START: usize = 36;
const OFF_CREATOR_CLOSED: usize = 40;
/// What `OFF_CREATOR_CLOSED` holds once the creator closed the ring: it
/// left it in place, or removed its name (no receiver can come any more).
const CLOSED_KEPT: u32 = 1;
const CLOSED_REMOVED: u32 = 2;
const OFF_TAIL: usize = 64;
const OFF_HEAD: usize = 128;
const OFF_DATA: usize = 192;
const OFF_SPACE: usize = 256;
const OFF_GENERATION: usize = 320;
const OFF_SENDERS_EVER: usize = 324;
const OFF_RECEIVERS_EVER: usize = 328;
const OFF_PEERS: usize = 384;
const PEER_SIZE: usize = 16;
/// How many processes may be attached at once.
const MAX_PEERS: usize = 64;
/// Per peer entry, the position its sender or receiver is about to claim,
/// bitwise negated (0: none yet): see `RingReceiver::skip_dead_writes` and
/// `RingSender::free_dead_reads`.
const OFF_INTENTS: usize = OFF_PEERS + MAX_PEERS * PEER_SIZE;
const OFF_SLOTS: usize = 2048;
const _: () = assert!(OFF_INTENTS + MAX_PEERS * 8 <= OFF_SLOTS);
const SLOT_HEADER: usize = 16;
/// Marks a reader's pid in a slot header (pids stay below 2^22).
const READER: u32 = 1 << 31;

/// The length of a slot its sender gave back (a dropped [`Loan`]):
/// receivers skip it.
const CANCELLED: u32 = u32::MAX;
const LINE: usize = 64;

/// The largest slot count a ring may have.
const MAX_CAPACITY: usize = 1 << 20;
/// The largest message a ring may be made for (1 GiB).
const MAX_MESSAGE: usize = 1 << 30;
/// The default slot count and largest message.
const DEFAULT_CAPACITY: usize = 256;
const DEFAULT_MAX_MESSAGE: usize = 4096 - SLOT_HEADER;

/// How often a waiting side looks at the processes on the other side.
const CHECK_PEERS: Duration = Duration::from_millis(50);
/// How long `open` waits for a creator to finish setting a ring up.
const SETUP_WAIT: Duration = Duration::from_secs(2);

const ROLE_SENDER: u32 = 1;
const ROLE_RECEIVER: u32 = 2;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Removes the ring called `name` (processes that have it open keep using
/// it; new ones can no longer open it).
pub fn unlink(name: &str) -> io::Result<()> {
    validate_name(name)?;
    crate::shm::unlink(&shm_name(name)).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(e.kind(), format!("no ring named {name}"))
        } else {
            e
        }
    })
}

/// Where the segment comes from.
#[derive(Debug)]
enum Backing {
    Named(Shm),
    Anonymous(Memfd),
}

impl Backing {
    fn region(&self) -> &Region {
        match self {
            Backing::Named(s) => s.region(),
            Backing::Anonymous(m) => m.region(),
        }
    }
}

/// The mapped segment and its geometry, as checked when it was opened.
#[derive(Debug)]
struct Segment {
    backing: Backing,
    name: Option<String>,
    capacity: u64,
    slot_size: usize,
    max_message: usize,
    multi: bool,
    /// Made by this process.
    created: bool,
    /// Made by this process, or taken over from a creator that died: on
    /// drop it marks the ring closed by its creator (as opposed to left
    /// behind by one that died).
    owned: bool,
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owned {
            // Set before the name goes (the backing is dropped after this).
            let removed = matches!(&self.backing, Backing::Named(s) if s.removes_on_drop());
            let closed = if removed { CLOSED_REMOVED } else { CLOSED_KEPT };
            self.u32_at(OFF_CREATOR_CLOSED)
                .store(closed, Ordering::Release);
        }
    }
}

/// Geometry for a new ring.
fn geometry(capacity: usize, max_message: usize) -> io::Result<(usize, usize)> {
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(invalid(format!(
            "a ring's capacity must be 1 to {MAX_CAPACITY} slots, not {capacity}"
        )));
    }
    if max_message > MAX_MESSAGE {
        return Err(invalid(format!(
            "a ring's largest message can be at most {MAX_MESSAGE} bytes, not {max_message}"
        )));
    }
    // At least two slots: with one, a stamp could not tell a full slot
    // from a free one (see `core`).
    let capacity = capacity.max(2).next_power_of_two();
    let slot_size = (SLOT_HEADER + max_message).div_ceil(LINE) * LINE;
    let total = capacity
        .checked_mul(slot_size)
        .and_then(|s| s.checked_add(OFF_SLOTS))
        .filter(|t| *t <= isize::MAX as usize)
        .ok_or_else(|| {
            invalid(format!(
                "a ring of {capacity} slots of {slot_size} bytes is too large"
            ))
        })?;
    Ok((capacity, total))
}

impl Segment {
    fn map(&self) -> &Mapping {
        self.backing.region().mapping()
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.map().place(off)
    }

    fn slot(&self, pos: u64) -> usize {
        OFF_SLOTS + (pos & (self.capacity - 1)) as usize * self.slot_size
    }

    /// Writes the header and the initial stamps of a new segment.
    fn init(region: &Region, capacity: usize, max_message: usize, multi: bool) {
        let m = region.mapping();
        let slot_size = (SLOT_HEADER + max_message).div_ceil(LINE) * LINE;
        m.write(OFF_MAGIC, MAGIC);
        m.write(OFF_VERSION, VERSION);
        m.write(OFF_FLAGS, if multi { FLAG_MULTI } else { 0 });
        m.write(OFF_CAPACITY, capacity as u32);
        m.write(OFF_SLOT_SIZE, slot_size as u32);
        m.write(OFF_MAX_MESSAGE, max_message as u32);
        let pid = std::process::id();
        m.write(OFF_CREATOR_PID, pid);
        m.write(OFF_CREATOR_START, crate::sys::sync::start_time(pid));
        for i in 0..capacity {
            m.place::<AtomicU64>(OFF_SLOTS + i * slot_size)
                .store(i as u64, Ordering::Relaxed);
        }
        // Last: openers wait for this, and then see everything above.
        m.place::<AtomicU32>(OFF_READY)
            .store(READY, Ordering::Release);
    }

    /// Checks the header of a mapped segment and takes its geometry.
    fn open(backing: Backing, name: Option<String>, what: &str) -> io::Result<Segment> {
        let region = backing.region();
        let len = region.len();
        if len < OFF_SLOTS || !region.is_writable() {
            return Err(corrupt(format!(
                "{what} is not a ring: {len} bytes{}",
                if region.is_writable() {
                    ""
                } else {
                    ", read-only"
                }
            )));
        }
        let m = region.mapping();
        let until = Instant::now() + SETUP_WAIT;
        while m.place::<AtomicU32>(OFF_READY).load(Ordering::Acquire) != READY {
            if Instant::now() >= until {
                return Err(corrupt(format!(
                    "{what} is not a ring, or its creator died while setting it up \
                     (no ready mark after {SETUP_WAIT:?}; remove it with ipc rm)"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let magic: u64 = m.read(OFF_MAGIC);
        let version: u32 = m.read(OFF_VERSION);
        if magic != MAGIC || version != VERSION {
            return Err(corrupt(format!(
                "{what} is not a ring of this version (magic {magic:#x}, version {version}; \
                 this is version {VERSION})"
            )));
        }
        let flags: u32 = m.read(OFF_FLAGS);
        let capacity = m.read::<u32>(OFF_CAPACITY) as usize;
        let slot_size = m.read::<u32>(OFF_SLOT_SIZE) as usize;
        let max_message = m.read::<u32>(OFF_MAX_MESSAGE) as usize;
        let sane = capacity.is_power_of_two()
            && (2..=MAX_CAPACITY).contains(&capacity)
            && max_message <= MAX_MESSAGE
            && slot_size == (SLOT_HEADER + max_message).div_ceil(LINE) * LINE
            && flags & !FLAG_MULTI == 0;
        let total = geometry(capacity.max(1), max_message).map(|(_, t)| t);
        match total {
            Ok(total) if sane && total <= len => {}
            _ => {
                return Err(corrupt(format!(
                    "{what} has an impossible geometry: {capacity} slots of {slot_size} bytes \
                     for messages up to {max_message} bytes, flags {flags:#x}, in {len} bytes"
                )))
            }
        }
        Ok(Segment {
            backing,
            name,
            capacity: capacity as u64,
            slot_size,
            max_message,
            multi: flags & FLAG_MULTI != 0,
            created: false,
            owned: false,
        })
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("ring {n}"),
            None => "the anonymous ring".to_string(),
        }
    }

    /// The position the sender of entry `k` announced last (negated).
    fn intent(&self, k: usize) -> &AtomicU64 {
        self.map().place(OFF_INTENTS + k * 8)
    }

    /// Whether a live process attached as `role` announced `pos`: it may
    /// be between winning the position and tagging its slot.
    fn announced_by_live(&self, role: u32, pos: u64) -> bool {
        (0..MAX_PEERS).any(|k| {
            let (p, r, s) = self.peer_words(k);
            let pid = p.load(Ordering::Acquire);
            pid != 0
                && r.load(Ordering::Acquire) == role
                && self.intent(k).load(Ordering::Acquire) == !pos
                && !crate::sys::sync::thread_exited(pid, Some(s.load(Ordering::Relaxed)))
        })
    }

    /// Claims the next position for `side` as the process in table entry
    /// `entry` (pid `pid`). In a multi ring the position is announced in
    /// the entry before the compare-and-swap that wins it, and the slot is
    /// tagged once won: a sender writes its pid, then the position that
    /// vouches for it (a receiver reads them the other way round); a
    /// receiver writes its pid with the reader bit. A process killed
    /// between the win and the tag is found by its announcement
    /// (`RingReceiver::skip_dead_writes`, `RingSender::free_dead_reads`).
    fn claim(&self, side: Side, entry: usize, pid: u32) -> Result<Option<u64>, Corrupt> {
        if !self.multi {
            return core::claim(self, side, false, |_| {});
        }
        let intent = self.intent(entry);
        // Release: a process that sees this announcement also sees the tag
        // of the position announced before it.
        let won = core::claim(self, side, true, |pos| {
            intent.store(!pos, Ordering::Release)
        })?;
        if let Some(pos) = won {
            let at = self.slot(pos);
            match side {
                Side::Send => {
                    self.u32_at(at + 12).store(pid, Ordering::Relaxed);
                    self.u32_at(at + 8).store(pos as u32, Ordering::Release);
                }
                Side::Recv => self.u32_at(at + 12).store(pid | READER, Ordering::Relaxed),
            }
        }
        Ok(won)
    }

    fn peer_words(&self, k: usize) -> (&AtomicU32, &AtomicU32, &AtomicU32) {
        let off = OFF_PEERS + k * PEER_SIZE;
        (self.u32_at(off), self.u32_at(off + 4), self.u32_at(off + 8))
    }

    /// Records this process in the table as `role`; returns its entry.
    fn attach(&self, role: u32) -> io::Result<usize> {
        let pid = std::process::id();
        let start = crate::sys::sync::start_time(pid);
        for pass in 0..2 {
            for k in 0..MAX_PEERS {
                let (p, r, s) = self.peer_words(k);
                if p.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    s.store(start, Ordering::Relaxed);
                    // What a dead process in this entry announced is not
                    // this one's.
                    self.intent(k).store(0, Ordering::Relaxed);
                    r.store(role, Ordering::Release);
                    let ever = match role {
                        ROLE_SENDER => OFF_SENDERS_EVER,
                        _ => OFF_RECEIVERS_EVER,
                    };
                    self.u32_at(ever).fetch_add(1, Ordering::AcqRel);
                    self.changed();
                    return Ok(k);
                }
            }
            if pass == 0 {
                // Full: make room from processes that died attached.
                self.live(ROLE_SENDER);
                self.live(ROLE_RECEIVER);
            }
        }
        Err(io::Error::other(format!(
            "{} already has {MAX_PEERS} processes attached",
            self.describe()
        )))
    }

    fn detach(&self, k: usize) {
        let (p, r, _) = self.peer_words(k);
        r.store(0, Ordering::Relaxed);
        p.store(0, Ordering::Release);
        self.changed();
    }

    /// Tells waiting processes that the set of attached ones changed.
    fn changed(&self) {
        self.u32_at(OFF_GENERATION).fetch_add(1, Ordering::AcqRel);
        for s in [self.data(), self.space()] {
            s.word.fetch_add(1, Ordering::Release);
            self.unpark(s.word);
        }
    }

    fn generation(&self) -> u32 {
        self.u32_at(OFF_GENERATION).load(Ordering::Acquire)
    }

    /// How many processes attached as `role` are alive, and how many were
    /// found dead (their entries are freed).
    fn live(&self, role: u32) -> (usize, usize) {
        let (mut live, mut died) = (0, 0);
        for k in 0..MAX_PEERS {
            let (p, r, s) = self.peer_words(k);
            let pid = p.load(Ordering::Acquire);
            if pid == 0 || r.load(Ordering::Acquire) != role {
                continue;
            }
            let start = s.load(Ordering::Relaxed);
            if crate::sys::sync::thread_exited(pid, Some(start)) {
                if p.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    died += 1;
                }
            } else {
                live += 1;
            }
        }
        (live, died)
    }

    fn ever(&self, role: u32) -> u32 {
        let off = match role {
            ROLE_SENDER => OFF_SENDERS_EVER,
            _ => OFF_RECEIVERS_EVER,
        };
        self.u32_at(off).load(Ordering::Acquire)
    }

    /// Whether the creator died (without closing it) and no process is
    /// attached: the ring is left over and may be replaced. A ring its
    /// creator closed and kept is not.
    fn abandoned(&self) -> bool {
        let m = self.map();
        let pid: u32 = m.read(OFF_CREATOR_PID);
        let start: u32 = m.read(OFF_CREATOR_START);
        self.u32_at(OFF_CREATOR_CLOSED).load(Ordering::Acquire) == 0
            && crate::sys::sync::thread_exited(pid, Some(start))
            && self.live(ROLE_SENDER).0 == 0
            && self.live(ROLE_RECEIVER).0 == 0
    }

    /// Whether messages wait in the ring (sent, or claimed by a sender
    /// that died writing, and not yet taken).
    fn holds_messages(&self) -> bool {
        let tail = self.tail().load(Ordering::Acquire);
        tail.wrapping_sub(self.head().load(Ordering::Acquire)) as i64 > 0
    }

    /// Makes this process the creator of a ring whose creator died (see
    /// `create_or_open`), unless another process got there first.
    fn take_over(&mut self, keep: bool) {
        let me = std::process::id();
        let creator = self.u32_at(OFF_CREATOR_PID);
        let dead = creator.load(Ordering::Acquire);
        if creator
            .compare_exchange(dead, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.u32_at(OFF_CREATOR_START)
            .store(crate::sys::sync::start_time(me), Ordering::Release);
        self.owned = true;
        if let Backing::Named(shm) = &mut self.backing {
            if !keep {
                shm.remove_on_drop();
            }
        }
    }

    fn corrupt_error(&self, c: Corrupt) -> io::Error {
        corrupt(format!(
            "{} is in a state no honest ring can be in (slot stamp {} at position {}): another \
             process wrote into its memory",
            self.describe(),
            c.stamp,
            c.pos
        ))
    }

    fn check_intact(&self, what: &str) -> io::Result<()> {
        self.backing.region().check_intact(what)
    }
}

impl Layout for Segment {
    #[inline]
    fn capacity(&self) -> u64 {
        self.capacity
    }
    #[inline]
    fn stamp(&self, i: u64) -> &AtomicU64 {
        self.map().place(OFF_SLOTS + i as usize * self.slot_size)
    }
    #[inline]
    fn tail(&self) -> &AtomicU64 {
        self.map().place(OFF_TAIL)
    }
    #[inline]
    fn head(&self) -> &AtomicU64 {
        self.map().place(OFF_HEAD)
    }
    #[inline]
    fn data(&self) -> Signal<'_> {
        Signal {
            word: self.u32_at(OFF_DATA),
            waiters: self.u32_at(OFF_DATA + 4),
        }
    }
    #[inline]
    fn space(&self) -> Signal<'_> {
        Signal {
            word: self.u32_at(OFF_SPACE),
            waiters: self.u32_at(OFF_SPACE + 4),
        }
    }
    fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
        // Errors (EINTR, EAGAIN) only mean "look again", as a wake does.
        let _ = crate::sys::sync::futex_wait(word, expected, deadline);
    }
    fn unpark(&self, word: &AtomicU32) {
        let _ = crate::sys::sync::futex_wake(word, u32::MAX);
    }
}

// ---- Builder and handle --------------------------------------------------

/// Makes or opens a ring: [`Ring::builder`] for a named one,
/// [`Ring::anonymous`] for one in a memfd.
#[derive(Debug, Clone)]
pub struct RingBuilder {
    name: Option<String>,
    capacity: usize,
    capacity_bytes: Option<usize>,
    max_message: usize,
    multi: bool,
    mode: u32,
    keep: bool,
}

impl RingBuilder {
    /// How many messages the ring holds (default 256; rounded up to a power
    /// of two, at least 2).
    pub fn capacity(mut self, slots: usize) -> Self {
        self.capacity = slots;
        self.capacity_bytes = None;
        self
    }

    /// How many bytes of slots the ring may take instead: as many slots as
    /// fit (a power of two, at least 2). A slot is the largest message plus
    /// 16 bytes, rounded up to 64.
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity_bytes = Some(bytes);
        self
    }

    /// The largest message, in bytes (default 4080, so that a slot is 4
    /// KiB). Every slot has room for it: the segment is about
    /// `capacity × (max + 16)` bytes, and pages are only used once touched.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Allows several senders and several receivers at once (default: one
    /// of each, which saves an atomic compare-and-swap per message).
    pub fn multi(mut self, multi: bool) -> Self {
        self.multi = multi;
        self
    }

    /// Permission bits of a new named ring (default `0o600`, whatever the
    /// umask).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Leaves a named ring in place when the [`Ring`] that created it is
    /// dropped (default: it is removed).
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new ring; a named one fails if the name is taken.
    pub fn create(self) -> io::Result<Ring> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        let slots = match self.capacity_bytes {
            None => self.capacity,
            Some(bytes) => {
                let slot = (SLOT_HEADER + self.max_message.min(MAX_MESSAGE)).div_ceil(LINE) * LINE;
                let fit = bytes / slot;
                if fit < 2 {
                    return Err(invalid(format!(
                        "capacity_bytes({bytes}) holds fewer than the 2 slots a ring needs \
                         ({slot} bytes each for messages of up to {} bytes)",
                        self.max_message
                    )));
                }
                // The largest power of two that fits.
                1 << (usize::BITS - 1 - fit.leading_zeros())
            }
        };
        let (capacity, total) = geometry(slots, self.max_message)?;
        let backing = match &self.name {
            Some(name) => {
                let shm = Shm::builder(shm_name(name))
                    .size(total)
                    .mode(self.mode)
                    .keep(self.keep)
                    .create()
                    .map_err(|e| self.explain(e))?;
                // The mode asked for, whatever the umask took away.
                crate::sys::fd::fchmod(shm.as_fd(), self.mode)?;
                Backing::Named(shm)
            }
            None => Backing::Anonymous(Memfd::create("ipckit-ring", total)?),
        };
        Segment::init(backing.region(), capacity, self.max_message, self.multi);
        let what = self.what();
        let mut seg = Segment::open(backing, self.name, &what)?;
        seg.created = true;
        seg.owned = true;
        Ok(Ring { seg: Arc::new(seg) })
    }

    /// Opens an existing named ring (its geometry is the creator's).
    pub fn open(self) -> io::Result<Ring> {
        let Some(name) = &self.name else {
            return Err(invalid(
                "an anonymous ring is opened with Ring::from_fd, not by name".into(),
            ));
        };
        validate_name(name)?;
        let until = Instant::now() + SETUP_WAIT;
        let shm = loop {
            match Shm::builder(shm_name(name)).open() {
                // Created but not sized yet: the creator is at work.
                Err(e) if e.kind() == io::ErrorKind::InvalidData && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                r => break r.map_err(|e| self.explain(e))?,
            }
        };
        let what = self.what();
        Ok(Ring {
            seg: Arc::new(Segment::open(
                Backing::Named(shm),
                self.name.clone(),
                &what,
            )?),
        })
    }

    /// Opens the named ring, creating it if it does not exist.
    ///
    /// A ring left behind by a creator that died, with no process attached,
    /// is taken over if it still holds messages: they are delivered, not
    /// lost (its geometry is kept), and this call becomes its creator (it
    /// is removed on drop unless [`keep`](Self::keep)). An empty one is
    /// replaced by a new ring of this builder's geometry. Otherwise only a
    /// ring this call created is removed on drop.
    pub fn create_or_open(self) -> io::Result<Ring> {
        for _ in 0..3 {
            match self.clone().create() {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                r => return r,
            }
            match self.clone().open() {
                Ok(mut ring) if ring.seg.abandoned() => {
                    if ring.seg.holds_messages() {
                        if let Some(seg) = Arc::get_mut(&mut ring.seg) {
                            seg.take_over(self.keep);
                        }
                        return Ok(ring);
                    }
                    drop(ring);
                    let name = self.name.as_deref().unwrap_or_default();
                    let _ = unlink(name);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => return r,
            }
        }
        Err(io::Error::other(format!(
            "{}: created and removed by other processes again and again; try later",
            self.what()
        )))
    }

    fn what(&self) -> String {
        match &self.name {
            Some(n) => format!("ring {n}"),
            None => "the anonymous ring".into(),
        }
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let what = self.what();
        match e.kind() {
            io::ErrorKind::AlreadyExists => {
                io::Error::new(e.kind(), format!("{what} already exists"))
            }
            io::ErrorKind::NotFound => {
                io::Error::new(e.kind(), format!("no {what} (create it first)"))
            }
            _ => io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }
}

/// A snapshot of a ring's header, from [`Ring::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStatus {
    /// Messages sent and not yet received (at most the capacity).
    pub queued: usize,
    /// The live processes attached as senders (a process with several
    /// senders appears once per sender).
    pub senders: Vec<u32>,
    /// The live processes attached as receivers.
    pub receivers: Vec<u32>,
    /// The process that made the ring.
    pub creator_pid: u32,
    /// Whether that process is still alive (the same process, not one that
    /// reused its pid).
    pub creator_alive: bool,
    /// Whether the creator let go of it on purpose, keeping it
    /// ([`RingBuilder::keep`]): then it is not abandoned even with its
    /// creator dead.
    pub creator_closed: bool,
}

/// A ring channel's segment. Make ends with [`sender`](Ring::sender) and
/// [`receiver`](Ring::receiver); the segment stays mapped while any of
/// them lives.
#[derive(Debug, Clone)]
pub struct Ring {
    seg: Arc<Segment>,
}

impl Ring {
    /// A builder for the ring called `name` (address `ring:NAME`).
    pub fn builder(name: impl Into<String>) -> RingBuilder {
        let name = name.into();
        RingBuilder {
            name: Some(name),
            ..Ring::anonymous()
        }
    }

    /// A builder for a ring in anonymous memory (a memfd sealed against
    /// shrinking): hand [`fd`](Ring::fd) to the other process, which calls
    /// [`from_fd`](Ring::from_fd).
    pub fn anonymous() -> RingBuilder {
        RingBuilder {
            name: None,
            capacity: DEFAULT_CAPACITY,
            capacity_bytes: None,
            max_message: DEFAULT_MAX_MESSAGE,
            multi: false,
            mode: 0o600,
            keep: false,
        }
    }

    /// Opens an anonymous ring from its memfd (received over a Unix socket
    /// or inherited). Refused unless the memfd is sealed against shrinking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Ring> {
        let memfd = Memfd::from_fd(fd, false)?;
        Ok(Ring {
            seg: Arc::new(Segment::open(
                Backing::Anonymous(memfd),
                None,
                "the anonymous ring",
            )?),
        })
    }

    /// The descriptor of the segment: for an anonymous ring, the memfd to
    /// pass to another process ([`Ring::from_fd`]); for a named one, the
    /// shared memory object.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.seg.backing {
            Backing::Named(s) => s.as_fd(),
            Backing::Anonymous(m) => m.fd(),
        }
    }

    /// The ring's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.seg.name.as_deref()
    }

    /// How many messages the ring holds.
    pub fn capacity(&self) -> usize {
        self.seg.capacity as usize
    }

    /// The largest message the ring carries.
    pub fn max_message_size(&self) -> usize {
        self.seg.max_message
    }

    /// Whether this handle made the ring (`create`, or a `create_or_open`
    /// that found none or replaced a stale one).
    pub fn created(&self) -> bool {
        self.seg.created
    }

    /// Whether several senders and receivers may be attached at once.
    pub fn is_multi(&self) -> bool {
        self.seg.multi
    }

    /// Who is attached and how full it is, read from the ring's header
    /// without changing anything (for tools such as `ipc ls`). The header
    /// is in memory every attached process can write: the figures are
    /// clamped to what the ring can hold, and are a snapshot that may be
    /// stale when it returns.
    ///
    /// ```
    /// use ipckit::ring::Ring;
    /// use ipckit::MessageSenderExt;
    ///
    /// let ring = Ring::builder(format!("doc-status-{}", std::process::id())).create()?;
    /// let mut tx = ring.sender()?;
    /// tx.send(b"one")?;
    /// let st = ring.status();
    /// assert_eq!(st.queued, 1);
    /// assert_eq!(st.senders, [std::process::id()]);
    /// assert!(st.receivers.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn status(&self) -> RingStatus {
        let seg = &self.seg;
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for k in 0..MAX_PEERS {
            let (p, r, s) = seg.peer_words(k);
            let pid = p.load(Ordering::Acquire);
            if pid == 0 || crate::sys::sync::thread_exited(pid, Some(s.load(Ordering::Relaxed))) {
                continue;
            }
            match r.load(Ordering::Acquire) {
                ROLE_SENDER => senders.push(pid),
                ROLE_RECEIVER => receivers.push(pid),
                _ => {}
            }
        }
        let tail = seg.tail().load(Ordering::Acquire);
        let head = seg.head().load(Ordering::Acquire);
        let m = seg.map();
        let creator_pid: u32 = m.read(OFF_CREATOR_PID);
        let creator_start: u32 = m.read(OFF_CREATOR_START);
        RingStatus {
            queued: tail.saturating_sub(head).min(seg.capacity) as usize,
            senders,
            receivers,
            creator_pid,
            creator_alive: !crate::sys::sync::thread_exited(creator_pid, Some(creator_start)),
            creator_closed: seg.u32_at(OFF_CREATOR_CLOSED).load(Ordering::Acquire) != 0,
        }
    }

    /// Attaches this process as a sender. A single-producer ring refuses a
    /// second live sender.
    pub fn sender(&self) -> io::Result<RingSender> {
        let entry = self.attach(ROLE_SENDER, "sender")?;
        Ok(RingSender {
            seg: self.seg.clone(),
            entry,
            pid: std::process::id(),
            wait: WaitStrategy::ADAPTIVE,
            watch: Watch::new(&self.seg),
            fresh: true,
        })
    }

    /// Attaches this process as a receiver. A single-consumer ring refuses
    /// a second live receiver.
    pub fn receiver(&self) -> io::Result<RingReceiver> {
        let entry = self.attach(ROLE_RECEIVER, "receiver")?;
        Ok(RingReceiver {
            seg: self.seg.clone(),
            entry,
            notifier: None,
            pid: std::process::id(),
            wait: WaitStrategy::ADAPTIVE,
            max: self.seg.max_message,
            watch: Watch::new(&self.seg),
            died: 0,
            lost: 0,
        })
    }

    fn attach(&self, role: u32, what: &str) -> io::Result<usize> {
        let seg = &self.seg;
        let entry = seg.attach(role)?;
        if !seg.multi && seg.live(role).0 > 1 {
            seg.detach(entry);
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is single-producer, single-consumer and already has a {what}; make \
                     it with RingBuilder::multi(true) for several",
                    seg.describe()
                ),
            ));
        }
        if !seg.multi {
            seg.repair_after_dead(role);
        }
        Ok(entry)
    }
}

impl Segment {
    /// The one sender (or receiver) of a single-producer ring attaches, so
    /// the one before it is gone: if it died between taking a position and
    /// finishing with it, finish for it. A slot claimed and never published
    /// is published as given back (receivers skip it); a message taken and
    /// never freed is freed.
    fn repair_after_dead(&self, role: u32) {
        let cap = self.capacity;
        if role == ROLE_SENDER {
            let pos = self.tail().load(Ordering::Relaxed).wrapping_sub(1);
            let stamp = self.stamp(pos & (cap - 1));
            let head = self.head().load(Ordering::Relaxed);
            // Claimed (the tail is past it), not published, not consumed.
            if head.wrapping_sub(pos) as i64 <= 0 && stamp.load(Ordering::Acquire) == pos {
                self.u32_at(self.slot(pos) + 8)
                    .store(CANCELLED, Ordering::Relaxed);
                core::commit_send(self, pos);
            }
        } else {
            let pos = self.head().load(Ordering::Relaxed).wrapping_sub(1);
            let stamp = self.stamp(pos & (cap - 1));
            // Taken (the head is past it), never freed.
            if self.tail().load(Ordering::Relaxed).wrapping_sub(pos) as i64 > 0
                && stamp.load(Ordering::Acquire) == pos.wrapping_add(1)
            {
                core::release_recv(self, pos);
            }
        }
    }
}

// ---- Waiting -------------------------------------------------------------

/// One wait for the other side: spins or parks per `strategy` until
/// `ready` or the deadline; `Ok(false)` on timeout.
struct Waiter {
    strategy: WaitStrategy,
    deadline: Deadline,
    spin_until: Option<Instant>,
    spins: u32,
}

/// What a wait turn found.
enum Turn {
    /// Look at the ring again.
    Again,
    /// Look at the other processes (and then at the ring again).
    CheckPeers,
    Timeout,
}

impl Waiter {
    fn new(strategy: WaitStrategy, deadline: Deadline) -> Waiter {
        Waiter {
            strategy,
            deadline,
            spin_until: None,
            spins: 0,
        }
    }

    /// One turn of waiting, after the ring had nothing for us.
    fn turn(&mut self, park: impl FnOnce(Option<Instant>), since_check: Instant) -> Turn {
        let deadline = match self.deadline {
            Deadline::Now => return Turn::Timeout,
            Deadline::Never => None,
            Deadline::At(t) => Some(t),
        };
        let spin = match self.strategy {
            WaitStrategy::Spin => true,
            WaitStrategy::Block => false,
            // The window is timed from the 256th turn on: a message that
            // comes within those (the busy case) costs no clock read.
            WaitStrategy::Adaptive { spin_for } => {
                self.spins < 256 || {
                    let until = *self
                        .spin_until
                        .get_or_insert_with(|| Instant::now() + spin_for);
                    !self.spins.is_multiple_of(64) || Instant::now() < until
                }
            }
        };
        self.spins = self.spins.wrapping_add(1);
        if spin {
            std::hint::spin_loop();
            // The clock only now and then.
            if !self.spins.is_multiple_of(1024) {
                return Turn::Again;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Turn::Timeout;
            }
            if now >= since_check + CHECK_PEERS {
                return Turn::CheckPeers;
            }
            return Turn::Again;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Turn::Timeout;
        }
        let wake = since_check + CHECK_PEERS;
        if now >= wake {
            return Turn::CheckPeers;
        }
        park(Some(deadline.map_or(wake, |d| d.min(wake))));
        Turn::Again
    }
}

/// When an end last looked at the processes on the other side, and the
/// attach generation it saw then.
#[derive(Debug)]
struct Watch {
    generation: u32,
    checked: Instant,
}

impl Watch {
    fn new(seg: &Segment) -> Watch {
        Watch {
            generation: seg.generation(),
            checked: Instant::now(),
        }
    }

    fn looked(&mut self, seg: &Segment) {
        self.generation = seg.generation();
        self.checked = Instant::now();
    }

    /// One turn of waiting, and whether to look at the other side now: at
    /// once when a process attached or left (the generation moved), else
    /// at least every `CHECK_PEERS`; a non-blocking call that finds nothing
    /// looks only in those cases.
    fn turn(
        &self,
        seg: &Segment,
        waiter: &mut Waiter,
        park: impl FnOnce(Option<Instant>),
    ) -> (Turn, bool) {
        let moved = seg.generation() != self.generation;
        let turn = if moved {
            Turn::CheckPeers
        } else {
            waiter.turn(park, self.checked)
        };
        let check = match turn {
            Turn::Again => false,
            Turn::CheckPeers => true,
            Turn::Timeout => moved || self.checked.elapsed() >= CHECK_PEERS,
        };
        (turn, check)
    }
}

// ---- Ends ----------------------------------------------------------------

/// The sending end of a ring.
#[derive(Debug)]
pub struct RingSender {
    seg: Arc<Segment>,
    entry: usize,
    /// This process's id, for the slot tags (`getpid` is a system call).
    pid: u32,
    wait: WaitStrategy,
    watch: Watch,
    /// Nothing sent yet (see `claim_until`).
    fresh: bool,
}

impl RingSender {
    /// The largest message this ring carries.
    pub fn max_message_size(&self) -> usize {
        self.seg.max_message
    }

    /// Sets how a send waits for a free slot (default
    /// [`WaitStrategy::ADAPTIVE`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    /// Whether every receiver has gone (at least one attached once).
    fn gone(&mut self) -> bool {
        let seg = &self.seg;
        self.watch.looked(seg);
        let gone = seg.ever(ROLE_RECEIVER) > 0 && seg.live(ROLE_RECEIVER).0 == 0;
        if seg.multi && !gone {
            self.free_dead_reads();
        }
        gone
    }

    /// Frees the slot at the tail if a receiver took its message and died
    /// before freeing it (a multi ring would otherwise wait at it for ever
    /// once it came round): taken (the head is past it), not freed (the
    /// stamp still holds last lap's message), and either tagged by a
    /// reader that has exited, or not tagged by a reader at all while no
    /// live receiver announces the position (its winner was killed between
    /// winning it and tagging the slot; see `skip_dead_writes`).
    fn free_dead_reads(&self) {
        let seg = &*self.seg;
        let cap = seg.capacity;
        let pos = seg.tail().load(Ordering::Relaxed);
        let last = pos.wrapping_sub(cap);
        // Acquire: the winning compare-and-swap released its receiver's
        // announcement.
        let taken = seg.head().load(Ordering::Acquire).wrapping_sub(last) as i64 > 0;
        let stamp = seg.stamp(pos & (cap - 1));
        if !taken || stamp.load(Ordering::Acquire) != last.wrapping_add(1) {
            return;
        }
        let reader = || {
            let r = seg.u32_at(seg.slot(pos) + 12).load(Ordering::Relaxed);
            (r & READER != 0).then_some(r & !READER)
        };
        let dead = match reader() {
            Some(pid) => crate::sys::sync::thread_exited(pid, None),
            None if seg.announced_by_live(ROLE_RECEIVER, last) => false,
            // Tagged meanwhile: judged by its tag next time.
            None if reader().is_some() => false,
            None => true,
        };
        if !dead {
            return;
        }
        // As the reader would have: free for this lap's writer (a
        // compare-and-swap, in case another sender got there first).
        if stamp
            .compare_exchange(
                last.wrapping_add(1),
                pos,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            core::notify_space(seg);
        }
    }
}

impl RingSender {
    /// Waits until a slot is this sender's, per the wait strategy, and
    /// returns its position. In a multi ring the slot is tagged with the
    /// position and this process's pid first (see `skip_dead_writes`).
    fn claim_until(&mut self, deadline: Deadline) -> Result<u64, SendTimeoutError<()>> {
        let seg = self.seg.clone();
        let seg = &*seg;
        // A receiver that closed its end bumped the generation: look before
        // filling a ring that nobody will read.
        if seg.generation() != self.watch.generation && self.gone() {
            return Err(SendTimeoutError::Disconnected(()));
        }
        // A sender that came after every receiver had gone from a ring its
        // creator has removed: nobody can ever read it (no receiver can
        // find it by name any more), so say so rather than fill it. A ring
        // kept in place holds what is sent for the next receiver.
        if self.fresh {
            self.fresh = false;
            let removed = seg.u32_at(OFF_CREATOR_CLOSED).load(Ordering::Acquire) == CLOSED_REMOVED;
            if removed && seg.live(ROLE_RECEIVER).0 == 0 {
                return Err(SendTimeoutError::Disconnected(()));
            }
        }
        let mut waiter = Waiter::new(self.wait, deadline);
        loop {
            // A segment truncated under this process reads as zeros (the
            // SIGBUS guard): a ring that never fills or drains. Say so.
            seg.check_intact("send")
                .map_err(|e| SendTimeoutError::Io(e, ()))?;
            match seg.claim(Side::Send, self.entry, self.pid) {
                Ok(Some(pos)) => return Ok(pos),
                Ok(None) => {}
                Err(c) => return Err(SendTimeoutError::Io(seg.corrupt_error(c), ())),
            }
            let (turn, check) = self
                .watch
                .turn(seg, &mut waiter, |d| core::park_send(seg, d));
            if check && self.gone() {
                return Err(SendTimeoutError::Disconnected(()));
            }
            if matches!(turn, Turn::Timeout) {
                return Err(SendTimeoutError::Timeout(()));
            }
        }
    }

    /// Publishes the slot at `pos` holding `len` bytes (or [`CANCELLED`]).
    fn publish(&self, pos: u64, len: u32) -> io::Result<()> {
        let seg = &*self.seg;
        // Atomic, like every header word another process may look at
        // meanwhile; the stamp's release store publishes it.
        seg.u32_at(seg.slot(pos) + 8).store(len, Ordering::Relaxed);
        core::commit_send(seg, pos);
        seg.check_intact("send")
    }

    fn too_large(&self, len: usize) -> io::Error {
        let seg = &*self.seg;
        invalid(format!(
            "a message of {len} bytes is larger than {} carries ({} bytes: its slot size, set \
             when it was made with RingBuilder::max_message_size)",
            seg.describe(),
            seg.max_message
        ))
    }

    /// Borrows the next free slot to write a message in place, waiting for
    /// one (zero-copy: see [`Loan`]).
    pub fn loan(&mut self) -> Result<Loan<'_>, SendTimeoutError<()>> {
        self.loan_until(Deadline::Never)
    }

    /// [`loan`](Self::loan), waiting until `deadline` at the most.
    pub fn loan_until(&mut self, deadline: Deadline) -> Result<Loan<'_>, SendTimeoutError<()>> {
        let pos = self.claim_until(deadline)?;
        Ok(Loan {
            tx: self,
            pos,
            done: false,
        })
    }
}

impl crate::MessageSender for RingSender {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        if msg.len() > self.seg.max_message {
            return Err(SendTimeoutError::Io(self.too_large(msg.len()), ()));
        }
        let pos = self.claim_until(deadline)?;
        let seg = &*self.seg;
        seg.map().copy_in(seg.slot(pos) + SLOT_HEADER, msg);
        self.publish(pos, msg.len() as u32)
            .map_err(|e| SendTimeoutError::Io(e, ()))
    }
}

/// A slot of the ring borrowed by a sender to write one message in place,
/// from [`RingSender::loan`]: nothing is copied on the way, whatever the
/// size. Write into it with [`write`](Loan::write) (checked, at any
/// offset) or through [`as_mut_slice`](Loan::as_mut_slice), then
/// [`commit`](Loan::commit) the length. Dropped without a commit, the slot
/// is given back: receivers skip it.
#[derive(Debug)]
pub struct Loan<'a> {
    tx: &'a mut RingSender,
    pos: u64,
    done: bool,
}

impl Loan<'_> {
    /// How many bytes the slot holds (the ring's largest message).
    pub fn capacity(&self) -> usize {
        self.tx.seg.max_message
    }

    /// Copies `bytes` into the slot at `offset`.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let seg = &*self.tx.seg;
        match offset.checked_add(bytes.len()) {
            Some(end) if end <= seg.max_message => {
                seg.map()
                    .copy_in(seg.slot(self.pos) + SLOT_HEADER + offset, bytes);
                seg.check_intact("write into a loaned slot")
            }
            _ => Err(invalid(format!(
                "{} bytes at offset {offset} do not fit in a slot of {} bytes",
                bytes.len(),
                seg.max_message
            ))),
        }
    }

    /// The slot's bytes, to write the message in place.
    ///
    /// # Safety
    /// No other process may write this slot while the slice lives. Honest
    /// ones never do (the slot is this sender's until the commit); a
    /// hostile process with the ring mapped could.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        let seg = &*self.tx.seg;
        // SAFETY: the range is this slot's payload, inside the mapping (its
        // geometry was checked when the ring was opened); `&mut self` keeps
        // this process from making a second slice, and the caller vouches
        // for the other processes.
        unsafe {
            seg.map()
                .get_mut::<u8>(seg.slot(self.pos) + SLOT_HEADER, seg.max_message)
        }
    }

    /// Publishes the first `len` bytes of the slot as one message.
    pub fn commit(mut self, len: usize) -> io::Result<()> {
        if len > self.capacity() {
            return Err(self.tx.too_large(len));
        }
        self.done = true;
        self.tx.publish(self.pos, len as u32)
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A claimed position cannot be handed back: publish it as a
            // message the receivers skip.
            let _ = self.tx.publish(self.pos, CANCELLED);
        }
    }
}

impl Drop for RingSender {
    fn drop(&mut self) {
        self.seg.detach(self.entry);
    }
}

/// The receiving end of a ring.
#[derive(Debug)]
pub struct RingReceiver {
    seg: Arc<Segment>,
    entry: usize,
    /// The eventfd and its signalling thread, once asked for.
    notifier: Option<Notifier>,
    /// This process's id, for the slot tags (`getpid` is a system call).
    pid: u32,
    wait: WaitStrategy,
    max: usize,
    watch: Watch,
    died: usize,
    lost: usize,
}

impl RingReceiver {
    /// How many senders this receiver found dead (killed, or exited
    /// without dropping their end) rather than closed.
    pub fn senders_died(&self) -> usize {
        self.died
    }

    /// How many messages were dropped because their sender died while
    /// writing them (a multi ring skips such a slot once its writer is
    /// certainly dead; the messages behind it then arrive).
    pub fn messages_lost(&self) -> usize {
        self.lost
    }

    /// Whether every sender has gone (at least one attached once).
    fn gone(&mut self) -> bool {
        let seg = self.seg.clone();
        self.watch.looked(&seg);
        let (live, died) = seg.live(ROLE_SENDER);
        self.died += died;
        if seg.multi {
            self.skip_dead_writes();
        }
        seg.ever(ROLE_SENDER) > 0 && live == 0
    }

    /// Skips the slots at the head that a sender claimed and then died
    /// before committing: claimed (the tail is past them), never committed
    /// (the stamp still says free for this lap), and either tagged with
    /// their position and a writer that has exited, or not tagged at all
    /// while no live sender announces the position (its winner was killed
    /// between winning it and tagging the slot: every sender announces
    /// the position it is about to win before the compare-and-swap that
    /// wins it, and keeps the announcement until its next claim).
    fn skip_dead_writes(&mut self) {
        let seg = self.seg.clone();
        loop {
            let pos = seg.head().load(Ordering::Relaxed);
            // Acquire: the winning compare-and-swap released its sender's
            // announcement.
            let claimed = seg.tail().load(Ordering::Acquire).wrapping_sub(pos) as i64 > 0;
            let at = seg.slot(pos);
            let uncommitted = seg.stamp(pos & (seg.capacity - 1)).load(Ordering::Acquire) == pos;
            if !claimed || !uncommitted {
                return;
            }
            // Tagged for this position, the pid beside it is this lap's
            // writer's (a reader's tag, with the top bit, is last lap's).
            let tagged = |seg: &Segment| {
                let writer = seg.u32_at(at + 12).load(Ordering::Relaxed);
                (seg.u32_at(at + 8).load(Ordering::Acquire) == pos as u32
                    && writer != 0
                    && writer & READER == 0)
                    .then_some(writer)
            };
            let dead = match tagged(&seg) {
                Some(writer) => crate::sys::sync::thread_exited(writer, None),
                // Untagged: dead if no live sender announces it, and still
                // untagged after looking (a winner that tagged it meanwhile
                // is judged by its tag on the next turn).
                None if seg.announced_by_live(ROLE_SENDER, pos) => false,
                None if tagged(&seg).is_some() => continue,
                None => true,
            };
            if !dead {
                return;
            }
            if seg
                .head()
                .compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                core::release_recv(&*seg, pos);
                self.lost += 1;
            }
        }
    }

    /// Checks the length of the message at `pos`: `Ok(Some(len))`, or
    /// `Ok(None)` for a slot given back by its sender (freed here), or an
    /// error (the slot freed, the message dropped).
    fn length(&self, pos: u64) -> Result<Option<usize>, RecvTimeoutError> {
        let seg = &*self.seg;
        let len = seg.u32_at(seg.slot(pos) + 8).load(Ordering::Relaxed);
        let fail = |e: io::Error| {
            core::release_recv(seg, pos);
            Err(RecvTimeoutError::Io(e))
        };
        if len == CANCELLED {
            core::release_recv(seg, pos);
            return Ok(None);
        }
        let len = len as usize;
        if len > seg.max_message {
            return fail(corrupt(format!(
                "{} holds a message of {len} bytes, more than its maximum of {}: another \
                 process wrote into its memory (the message was dropped)",
                seg.describe(),
                seg.max_message
            )));
        }
        if len > self.max {
            return fail(
                MessageTooLarge {
                    len: len as u64,
                    max: self.max,
                    unit: Unit::Message,
                }
                .into_io(),
            );
        }
        Ok(Some(len))
    }

    /// Waits for the next message, per the wait strategy: its position and
    /// length (slots given back by their senders are skipped).
    fn claim_until(&mut self, deadline: Deadline) -> Result<(u64, usize), RecvTimeoutError> {
        let seg = self.seg.clone();
        let mut waiter = Waiter::new(self.wait, deadline);
        loop {
            seg.check_intact("receive").map_err(RecvTimeoutError::Io)?;
            match seg.claim(Side::Recv, self.entry, self.pid) {
                Ok(Some(pos)) => match self.length(pos)? {
                    Some(len) => return Ok((pos, len)),
                    None => continue,
                },
                Ok(None) => {}
                Err(c) => return Err(RecvTimeoutError::Io(seg.corrupt_error(c))),
            }
            let (turn, check) = self
                .watch
                .turn(&seg, &mut waiter, |d| core::park_recv(&*seg, d));
            if check && self.gone() {
                // Messages sent before the last sender left still count.
                loop {
                    match seg.claim(Side::Recv, self.entry, self.pid) {
                        Ok(Some(pos)) => match self.length(pos)? {
                            Some(len) => return Ok((pos, len)),
                            None => continue,
                        },
                        _ => return Err(RecvTimeoutError::Disconnected),
                    }
                }
            }
            if matches!(turn, Turn::Timeout) {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// An eventfd (`eventfd(2)`) that becomes readable when a message
    /// waits in the ring, for `poll`, `epoll` or an async runtime: when it
    /// is, read it (8 bytes) and take messages with `try_recv` until the
    /// ring is empty.
    ///
    /// A thread of this process does the signalling: it sleeps on the
    /// ring's futex like a receiver, so senders need no descriptor of
    /// this process and pay nothing more than for any sleeping receiver;
    /// while a signalled message waits to be taken, each message taken
    /// costs this receiver one futex wake. The thread ends with the
    /// receiver.
    pub fn notify_fd(&mut self) -> io::Result<BorrowedFd<'_>> {
        if self.notifier.is_none() {
            self.notifier = Some(Notifier::start(&self.seg)?);
        }
        Ok(self.notifier.as_ref().expect("just made").fd.as_fd())
    }

    /// Receives the next message in place, waiting for one (zero-copy: see
    /// [`Sample`]).
    pub fn recv_in_place(&mut self) -> Result<Sample<'_>, crate::RecvError> {
        self.recv_in_place_until(Deadline::Never)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// [`recv_in_place`](Self::recv_in_place), waiting until `deadline` at
    /// the most.
    pub fn recv_in_place_until(
        &mut self,
        deadline: Deadline,
    ) -> Result<Sample<'_>, RecvTimeoutError> {
        let (pos, len) = self.claim_until(deadline)?;
        Ok(Sample { rx: self, pos, len })
    }
}

/// Ready when a message waits in the ring, through
/// [`notify_fd`](RingReceiver::notify_fd).
impl crate::select::Selectable for RingReceiver {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        let seg = self.seg.clone();
        let check: crate::select::Check = Arc::new(move || core::message_waiting(&*seg));
        Ok(crate::select::Readiness::signalled(
            self.notify_fd()?,
            check,
        ))
    }
}

impl crate::MessageReceiver for RingReceiver {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let (pos, len) = self.claim_until(deadline)?;
        let seg = &*self.seg;
        buf.clear();
        seg.map().append_to(seg.slot(pos) + SLOT_HEADER, len, buf);
        core::release_recv(seg, pos);
        seg.check_intact("receive").map_err(RecvTimeoutError::Io)
    }

    fn max_message_size(&self) -> usize {
        self.max
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = max.min(self.seg.max_message);
    }

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }
}

impl Drop for RingReceiver {
    fn drop(&mut self) {
        if let Some(n) = self.notifier.take() {
            n.stop(&self.seg);
        }
        self.seg.detach(self.entry);
    }
}

/// A receiver's eventfd, and the thread of this process that signals it.
#[derive(Debug)]
struct Notifier {
    fd: OwnedFd,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Notifier {
    fn start(seg: &Arc<Segment>) -> io::Result<Notifier> {
        let fd = crate::sys::fd::eventfd()?;
        let theirs = fd.try_clone()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seg, flag) = (seg.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ipckit-ring-notify".into())
            .spawn(move || notify_loop(&seg, &theirs, &flag))?;
        Ok(Notifier {
            fd,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self, seg: &Segment) {
        self.stop.store(true, Ordering::Release);
        for s in [seg.data(), seg.space()] {
            s.word.fetch_add(1, Ordering::Release);
            seg.unpark(s.word);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Signals `fd` whenever a message waits at the head: then waits until a
/// receiver takes it (the head moves) before looking again; with nothing
/// there, parks like a receiver (a sender wakes it).
fn notify_loop(seg: &Segment, fd: &OwnedFd, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let deadline = Some(Instant::now() + CHECK_PEERS);
        let head = seg.head().load(Ordering::Relaxed);
        if core::message_waiting(seg) {
            let _ = crate::sys::fd::eventfd_signal(fd.as_fd());
            core::park_space_while(
                seg,
                || !stop.load(Ordering::Acquire) && seg.head().load(Ordering::Relaxed) == head,
                deadline,
            );
        } else {
            core::park_recv(seg, deadline);
        }
    }
}

/// A message read in place, from [`RingReceiver::recv_in_place`]: nothing
/// is copied until asked for. Its slot stays the receiver's until the
/// sample is dropped, so a sender cannot overwrite it meanwhile.
#[derive(Debug)]
pub struct Sample<'a> {
    rx: &'a mut RingReceiver,
    pos: u64,
    len: usize,
}

impl Sample<'_> {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `buf.len()` bytes of the message from `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        let seg = &*self.rx.seg;
        match offset.checked_add(buf.len()) {
            Some(end) if end <= self.len => {
                seg.map()
                    .copy_out(seg.slot(self.pos) + SLOT_HEADER + offset, buf);
                seg.check_intact("read a received message")
            }
            _ => Err(invalid(format!(
                "{} bytes at offset {offset} are beyond a message of {} bytes",
                buf.len(),
                self.len
            ))),
        }
    }

    /// The whole message, copied.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let seg = &*self.rx.seg;
        let mut v = Vec::new();
        seg.map()
            .append_to(seg.slot(self.pos) + SLOT_HEADER, self.len, &mut v);
        seg.check_intact("read a received message")?;
        Ok(v)
    }

    /// The message's bytes, in place.
    ///
    /// # Safety
    /// No process may write this slot while the slice lives. Honest ones
    /// never do (the slot is this receiver's until the sample is dropped);
    /// a hostile process with the ring mapped could.
    pub unsafe fn as_slice(&self) -> &[u8] {
        let seg = &*self.rx.seg;
        // SAFETY: the range is this message, inside the mapping (its length
        // was checked against the slot size); the caller vouches that no
        // process writes it meanwhile.
        unsafe {
            seg.map()
                .get::<u8>(seg.slot(self.pos) + SLOT_HEADER, self.len)
        }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        core::release_recv(&*self.rx.seg, self.pos);
    }
}

/// A sender and a receiver used as one endpoint: for two rings, one each
/// way (request and reply).
#[derive(Debug)]
pub struct Duplex {
    /// The ring this end sends on.
    pub tx: RingSender,
    /// The ring this end receives from.
    pub rx: RingReceiver,
}

/// Ready when a message waits on `rx`.
impl crate::select::Selectable for Duplex {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        self.rx.readiness()
    }
}

impl crate::MessageSender for Duplex {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        self.tx.send_until(msg, deadline)
    }
}

impl crate::MessageReceiver for Duplex {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        self.rx.recv_until(buf, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.rx.max_message_size()
    }
    fn set_max_message_size(&mut self, max: usize) {
        self.rx.set_max_message_size(max)
    }
    /// Applies to both directions (a send waits on a full `tx`).
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.rx.set_wait_strategy(strategy);
        self.tx.set_wait_strategy(strategy);
    }
}
