//! The property area: its layout, the lock-free reads every process makes,
//! and the writes only the daemon makes.
//!
//! ```text
//! 0    header (128 bytes)
//!      0 magic  4 version  8 size (bytes in use)  12 closed
//!      32..128 backup: the value being replaced, while its property is dirty
//! 128  root node, then nodes, property records and long values, appended
//! ```
//!
//! A **node** is one segment of a dotted name (`net`, `wifi`, `state`):
//! `serial` (bumped after every change below it: the futex to wait on a
//! prefix; the root's is "any change"), `prop` (its property record, or 0),
//! `left`/`right` (siblings, a binary search tree ordered by length then
//! bytes), `children` (the root of the next level's tree), the segment's
//! length and bytes. A **property record** is a `serial` and 92 bytes of
//! value. All links are 32-bit offsets from the start of the area, set once
//! (after what they point to is written) and never changed: the area only
//! grows, so a reader may follow any link it has seen.
//!
//! The **serial** of a record: bits 24–31 the value's length (0–92, or 255
//! for a long value, whose record holds the offset and length of an
//! immutable block instead), bits 1–23 a counter, bit 0 "dirty". The
//! writer copies the old value to the backup, sets dirty, writes the new
//! value, then stores the new serial (counter + 1, dirty clear). A reader
//! loads the serial, copies the value (from the backup while dirty), and
//! loads the serial again: equal, the copy is whole; different, it reads
//! again. Readers never wait for the writer and never write.
//!
//! Nothing read from the area is trusted: every offset and length is
//! checked against the bytes in use before it is followed, walks are
//! bounded (a cycle in a corrupt area is an error, not a hang), and a file
//! shrunk under the mapping reads as zeros through the `SIGBUS` guard and
//! is reported.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Instant;

use crate::sys;
use crate::sys::mman::Mapping;

pub(crate) const MAGIC: u32 = 0x5052_4b49; // "IKRP"
pub(crate) const VERSION: u32 = 1;
const HEADER: usize = 128;
const SIZE_AT: usize = 8;
const CLOSED_AT: usize = 12;
const BACKUP_AT: usize = 32;
pub(crate) const ROOT: usize = HEADER;

/// The longest value held in the property's own record.
pub const VALUE_MAX: usize = 92;
/// The longest value at all (a "long" value, kept in a block of its own).
pub const LONG_VALUE_MAX: usize = 64 * 1024;
/// The longest property name.
pub const NAME_MAX: usize = 255;
/// The largest an area grows (each reader maps this much address space;
/// only the bytes in use are ever touched).
pub(crate) const AREA_MAX: usize = 64 << 20;
/// An area's first size.
pub(crate) const AREA_INITIAL: usize = 128 << 10;

const LONG: u32 = 255;
const DIRTY: u32 = 1;

// Node fields.
const N_SERIAL: usize = 0;
const N_PROP: usize = 4;
const N_LEFT: usize = 8;
const N_RIGHT: usize = 12;
const N_CHILDREN: usize = 16;
const N_NAMELEN: usize = 20;
const N_NAME: usize = 24;
// Record fields.
const R_SERIAL: usize = 0;
const R_VALUE: usize = 4;
const RECORD: usize = 4 + VALUE_MAX;

/// Steps any one walk may take before the area is called corrupt.
const BUDGET: usize = 1 << 22;

fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the property area is corrupt: {what}"),
    )
}

fn value_len(serial: u32) -> u32 {
    serial >> 24
}

/// A view of an area for reading: the mapping and the bytes in use when
/// the view was taken (every offset is checked against it).
pub(crate) struct View<'a> {
    map: &'a Mapping,
    size: usize,
}

impl<'a> View<'a> {
    pub(crate) fn new(map: &'a Mapping) -> io::Result<View<'a>> {
        let size = map.place::<AtomicU32>(SIZE_AT).load(Ordering::Acquire) as usize;
        if map.truncated() {
            return Err(truncated());
        }
        if !(ROOT + N_NAME..=map.len().min(AREA_MAX)).contains(&size) {
            return Err(corrupt(format_args!("{size} bytes in use")));
        }
        Ok(View { map, size })
    }

    fn check(&self, off: usize, len: usize) -> io::Result<()> {
        match off.checked_add(len) {
            Some(end) if off >= ROOT && off.is_multiple_of(4) && end <= self.size => Ok(()),
            _ if self.map.truncated() => Err(truncated()),
            _ => Err(corrupt(format_args!(
                "{len} bytes at offset {off}, {} bytes in use",
                self.size
            ))),
        }
    }

    fn word(&self, off: usize) -> io::Result<&'a AtomicU32> {
        self.check(off, 4)?;
        Ok(self.map.place::<AtomicU32>(off))
    }

    fn link(&self, off: usize) -> io::Result<usize> {
        Ok(self.word(off)?.load(Ordering::Acquire) as usize)
    }

    pub(crate) fn node_serial(&self, node: usize) -> io::Result<&'a AtomicU32> {
        self.word(node + N_SERIAL)
    }

    pub(crate) fn closed(&self) -> bool {
        self.map
            .place::<AtomicU32>(CLOSED_AT)
            .load(Ordering::Acquire)
            != 0
    }

    fn segment(&self, node: usize) -> io::Result<Vec<u8>> {
        let len = self.word(node + N_NAMELEN)?.load(Ordering::Relaxed) as usize;
        if len > NAME_MAX {
            return Err(corrupt(format_args!("a name segment of {len} bytes")));
        }
        self.check(node + N_NAME, len.div_ceil(4) * 4)?;
        let mut b = vec![0; len];
        self.map.copy_out(node + N_NAME, &mut b);
        Ok(b)
    }

    /// How `seg` sorts against the segment of `node` (no allocation: the
    /// lookups of every read pass here).
    fn compare(&self, seg: &[u8], node: usize) -> io::Result<std::cmp::Ordering> {
        let len = self.word(node + N_NAMELEN)?.load(Ordering::Relaxed) as usize;
        if len > NAME_MAX {
            return Err(corrupt(format_args!("a name segment of {len} bytes")));
        }
        if len != seg.len() {
            return Ok(seg.len().cmp(&len));
        }
        self.check(node + N_NAME, len.div_ceil(4) * 4)?;
        let mut buf = [0u8; NAME_MAX];
        self.map.copy_out(node + N_NAME, &mut buf[..len]);
        Ok(seg.cmp(&buf[..len]))
    }

    /// The most nodes the bytes in use can hold: a walk that visits more
    /// goes round a cycle. (A bound by the area, not a constant: a cycle
    /// in a small area is found after a few thousand steps, not millions.)
    fn node_budget(&self) -> usize {
        self.size / N_NAME + 1
    }

    /// The child of `parent` named `seg`, if any.
    fn child(&self, parent: usize, seg: &[u8], budget: &mut usize) -> io::Result<Option<usize>> {
        let mut at = self.link(parent + N_CHILDREN)?;
        while at != 0 {
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| corrupt("a walk that does not end (a cycle)"))?;
            at = match self.compare(seg, at)? {
                std::cmp::Ordering::Equal => return Ok(Some(at)),
                std::cmp::Ordering::Less => self.link(at + N_LEFT)?,
                std::cmp::Ordering::Greater => self.link(at + N_RIGHT)?,
            };
        }
        Ok(None)
    }

    /// The node of `name` (dotted; empty: the root), if it exists.
    pub(crate) fn find(&self, name: &str) -> io::Result<Option<usize>> {
        let mut budget = self.node_budget();
        let mut at = ROOT;
        if name.is_empty() {
            return Ok(Some(at));
        }
        for seg in name.split('.') {
            match self.child(at, seg.as_bytes(), &mut budget)? {
                Some(n) => at = n,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// The record of the property at `node`, if it has one.
    pub(crate) fn record(&self, node: usize) -> io::Result<Option<usize>> {
        let r = self.link(node + N_PROP)?;
        if r == 0 {
            return Ok(None);
        }
        self.check(r, RECORD)?;
        Ok(Some(r))
    }

    pub(crate) fn record_serial(&self, record: usize) -> io::Result<&'a AtomicU32> {
        self.word(record + R_SERIAL)
    }

    /// A consistent copy of the value in `record` and its serial (dirty
    /// bit clear).
    pub(crate) fn read(&self, record: usize) -> io::Result<(Vec<u8>, u32)> {
        let serial = self.record_serial(record)?;
        for _ in 0..BUDGET {
            let s1 = serial.load(Ordering::Acquire);
            let from = if s1 & DIRTY != 0 {
                BACKUP_AT
            } else {
                record + R_VALUE
            };
            let len = value_len(s1);
            let mut value = if len == LONG {
                let mut w = [0u8; 8];
                self.map.copy_out(from, &mut w);
                let off = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as usize;
                let n = u32::from_ne_bytes([w[4], w[5], w[6], w[7]]) as usize;
                fence(Ordering::Acquire);
                if serial.load(Ordering::Relaxed) != s1 {
                    continue;
                }
                // A long value's block never changes once linked.
                if n > LONG_VALUE_MAX {
                    return Err(corrupt(format_args!("a value of {n} bytes")));
                }
                self.check(off, n)?;
                let mut v = vec![0; n];
                self.map.copy_out(off, &mut v);
                v
            } else if len as usize <= VALUE_MAX {
                let mut v = vec![0; len as usize];
                self.map.copy_out(from, &mut v);
                v
            } else {
                return Err(corrupt(format_args!("a value of {len} bytes in a record")));
            };
            fence(Ordering::Acquire);
            if serial.load(Ordering::Relaxed) == s1 {
                if self.map.truncated() {
                    return Err(truncated());
                }
                value.shrink_to_fit();
                return Ok((value, s1 & !DIRTY));
            }
        }
        Err(corrupt("a value that never stays still"))
    }

    /// Every property under `node` (itself included), with `prefix` (the
    /// node's dotted name) in front, as (name, record).
    pub(crate) fn walk(&self, node: usize, prefix: &str) -> io::Result<Vec<(String, usize)>> {
        let mut out = Vec::new();
        let mut budget = self.node_budget();
        let mut stack = vec![(node, prefix.to_owned(), false)];
        // Entries: (node, its full name, whether to visit its siblings too).
        while let Some((at, name, siblings)) = stack.pop() {
            budget = budget
                .checked_sub(1)
                .ok_or_else(|| corrupt("a walk that does not end (a cycle)"))?;
            if let Some(r) = self.record(at)? {
                out.push((name.clone(), r));
            }
            let parent = if at == node {
                prefix.to_owned()
            } else {
                name.rsplit_once('.')
                    .map_or(String::new(), |(p, _)| p.to_owned())
            };
            if siblings {
                for link in [N_LEFT, N_RIGHT] {
                    let s = self.link(at + link)?;
                    if s != 0 {
                        stack.push((s, join(&parent, &self.segment(s)?)?, true));
                    }
                }
            }
            let c = self.link(at + N_CHILDREN)?;
            if c != 0 {
                stack.push((c, join(&name, &self.segment(c)?)?, true));
            }
        }
        if self.map.truncated() {
            return Err(truncated());
        }
        out.sort();
        Ok(out)
    }
}

fn join(parent: &str, seg: &[u8]) -> io::Result<String> {
    let seg = std::str::from_utf8(seg).map_err(|_| corrupt("a name that is not UTF-8"))?;
    // No name set is longer: a longer one is a path round a cycle.
    if parent.len() + 1 + seg.len() > NAME_MAX {
        return Err(corrupt(format_args!(
            "a name longer than {NAME_MAX} bytes under {parent:?}"
        )));
    }
    Ok(if parent.is_empty() {
        seg.to_owned()
    } else {
        format!("{parent}.{seg}")
    })
}

pub(crate) fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the property area shrank under this process (its file was truncated): the values \
         read are gone; open the store again",
    )
}

/// Sleeps while `word` holds `seen` (woken by the writer's `FUTEX_WAKE`);
/// false at the deadline.
pub(crate) fn wait_word(
    word: &AtomicU32,
    seen: u32,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    sys::sync::futex_wait(word, seen, deadline)
}

/// The writer's side: the daemon's read-write mapping and the file.
///
/// The bytes in use are counted here, in this process, and only published
/// in the area: any process that can write the file (its owner's) could
/// put anything in the area's count, and the writer must never place a
/// node where that says (a misaligned or out-of-file offset), nor read
/// past the file's end, where the `SIGBUS` guard would take the shared
/// mapping from it.
pub(crate) struct Writer {
    map: Mapping,
    fd: OwnedFd,
    capacity: usize,
    size: usize,
}

impl Writer {
    /// Formats a new, empty area in `fd` (a fresh, empty file).
    pub(crate) fn create(fd: OwnedFd) -> io::Result<Writer> {
        sys::mman::truncate(fd.as_fd(), AREA_INITIAL as u64)?;
        sys::mman::allocate(fd.as_fd(), AREA_INITIAL as u64).map_err(|e| {
            crate::named::dev_shm_full(e, &format!("a property area of {AREA_INITIAL} bytes"))
        })?;
        let map = Mapping::map(fd.as_fd(), 0, AREA_MAX, true)?;
        map.write(0, MAGIC);
        map.write(4, VERSION);
        map.place::<AtomicU32>(SIZE_AT)
            .store((ROOT + N_NAME) as u32, Ordering::Release);
        Ok(Writer {
            map,
            fd,
            capacity: AREA_INITIAL,
            size: ROOT + N_NAME,
        })
    }

    /// Takes over an existing area (a daemon restarted after a crash):
    /// checks it, and finishes the one write a crash may have cut short
    /// (its record is dirty: the backup holds the old value, which is put
    /// back).
    pub(crate) fn adopt(fd: OwnedFd) -> io::Result<Writer> {
        let capacity = sys::mman::file_size(fd.as_fd())? as usize;
        if !(ROOT + N_NAME..=AREA_MAX).contains(&capacity) {
            return Err(corrupt(format_args!("a file of {capacity} bytes")));
        }
        let map = Mapping::map(fd.as_fd(), 0, AREA_MAX, true)?;
        let (magic, version): (u32, u32) = (map.read(0), map.read(4));
        if magic != MAGIC || version != VERSION {
            return Err(corrupt(format_args!(
                "magic {magic:#x} version {version} (not an ipckit property area of version \
                 {VERSION})"
            )));
        }
        let size = View::new(&map)?.size;
        if size > capacity || !size.is_multiple_of(4) {
            return Err(corrupt(format_args!(
                "{size} bytes in use in a {capacity}-byte file"
            )));
        }
        let w = Writer {
            map,
            fd,
            capacity,
            size,
        };
        let view = w.view()?;
        for (_, r) in view.walk(ROOT, "")? {
            let serial = view.record_serial(r)?;
            let s = serial.load(Ordering::Acquire);
            if s & DIRTY != 0 {
                let mut backup = [0u8; VALUE_MAX];
                w.map.copy_out(BACKUP_AT, &mut backup);
                w.map.copy_in(r + R_VALUE, &backup);
                serial.store(next_serial(s, value_len(s)), Ordering::Release);
            }
        }
        w.map
            .place::<AtomicU32>(CLOSED_AT)
            .store(0, Ordering::Release);
        Ok(w)
    }

    /// The area as the writer sees it: its own count of bytes in use, not
    /// the area's (see [`Writer`]).
    pub(crate) fn view(&self) -> io::Result<View<'_>> {
        Ok(View {
            map: &self.map,
            size: self.size,
        })
    }

    /// Marks the area closed: readers get an error from then on.
    pub(crate) fn close(&self) {
        let closed = self.map.place::<AtomicU32>(CLOSED_AT);
        closed.store(1, Ordering::Release);
        // Wake every waiter (they see "closed").
        let _ = sys::sync::futex_wake(self.map.place::<AtomicU32>(ROOT + N_SERIAL), u32::MAX);
    }

    /// `len` fresh zeroed bytes (4-aligned) at the end, growing the file
    /// first if needed; published in `size` once zeroed.
    fn alloc(&mut self, len: usize) -> io::Result<usize> {
        let size_word = self.map.place::<AtomicU32>(SIZE_AT);
        let at = self.size;
        let end = at + len.div_ceil(4) * 4;
        if end > AREA_MAX {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the property area is full ({} MiB, the most it grows to)",
                    AREA_MAX >> 20
                ),
            ));
        }
        if end > self.capacity {
            let new = (self.capacity * 2)
                .max(end.next_multiple_of(4096))
                .min(AREA_MAX);
            sys::mman::allocate(self.fd.as_fd(), new as u64).map_err(|e| {
                let e = crate::named::dev_shm_full(e, &format!("the property area's {new} bytes"));
                io::Error::new(
                    e.kind(),
                    format!("growing the property area to {new} bytes: {e}"),
                )
            })?;
            self.capacity = new;
        }
        self.size = end;
        size_word.store(end as u32, Ordering::Release);
        Ok(at)
    }

    /// Finds or adds the nodes of `name`; returns them root first.
    fn path(&mut self, name: &str) -> io::Result<Vec<usize>> {
        let mut path = vec![ROOT];
        for seg in name.split('.') {
            let parent = *path.last().expect("root");
            let mut budget = BUDGET;
            if let Some(n) = self.view()?.child(parent, seg.as_bytes(), &mut budget)? {
                path.push(n);
                continue;
            }
            let node = self.alloc(N_NAME + seg.len())?;
            self.map.write(node + N_NAMELEN, seg.len() as u32);
            self.map.copy_in(node + N_NAME, seg.as_bytes());
            // Link it where the search ended: an empty slot.
            let mut slot = parent + N_CHILDREN;
            loop {
                let view = self.view()?;
                let at = view.link(slot)?;
                if at == 0 {
                    break;
                }
                slot = match view.compare(seg.as_bytes(), at)? {
                    std::cmp::Ordering::Less => at + N_LEFT,
                    _ => at + N_RIGHT,
                };
            }
            self.map
                .place::<AtomicU32>(slot)
                .store(node as u32, Ordering::Release);
            path.push(node);
        }
        Ok(path)
    }

    /// Sets `name` to `value` (checked by the caller), visible to every
    /// reader when this returns; wakes the waiters of the property, of
    /// each prefix and of "any". Returns whether the property is new.
    pub(crate) fn set(&mut self, name: &str, value: &[u8]) -> io::Result<bool> {
        if value.len() > LONG_VALUE_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a value of {} bytes: the most is {LONG_VALUE_MAX}",
                    value.len()
                ),
            ));
        }
        let path = self.path(name)?;
        let node = *path.last().expect("root");
        // The new value's bytes: inline, or a block and its (offset, length).
        let (len, bytes) = if value.len() <= VALUE_MAX {
            (value.len() as u32, value.to_vec())
        } else {
            let block = self.alloc(value.len())?;
            self.map.copy_in(block, value);
            let mut w = (block as u32).to_ne_bytes().to_vec();
            w.extend_from_slice(&(value.len() as u32).to_ne_bytes());
            (LONG, w)
        };
        let existing = self.view()?.record(node)?;
        let record = match existing {
            Some(r) => {
                let serial = self.map.place::<AtomicU32>(r + R_SERIAL);
                let s = serial.load(Ordering::Relaxed);
                let mut old = [0u8; VALUE_MAX];
                self.map.copy_out(r + R_VALUE, &mut old);
                self.map.copy_in(BACKUP_AT, &old);
                serial.store(s | DIRTY, Ordering::Release);
                fence(Ordering::SeqCst);
                let mut padded = [0u8; VALUE_MAX];
                padded[..bytes.len()].copy_from_slice(&bytes);
                self.map.copy_in(r + R_VALUE, &padded);
                serial.store(next_serial(s, len), Ordering::Release);
                r
            }
            None => {
                let r = self.alloc(RECORD)?;
                self.map.copy_in(r + R_VALUE, &bytes);
                self.map
                    .place::<AtomicU32>(r + R_SERIAL)
                    .store(next_serial(0, len), Ordering::Relaxed);
                self.map
                    .place::<AtomicU32>(node + N_PROP)
                    .store(r as u32, Ordering::Release);
                r
            }
        };
        // The property's waiters, then each prefix's, deepest first, then
        // "any" (the root).
        let _ = sys::sync::futex_wake(self.map.place::<AtomicU32>(record + R_SERIAL), u32::MAX);
        for &n in path.iter().rev() {
            let w = self.map.place::<AtomicU32>(n + N_SERIAL);
            w.fetch_add(1, Ordering::Release);
            let _ = sys::sync::futex_wake(w, u32::MAX);
        }
        Ok(existing.is_none())
    }
}

/// The serial after a write of a value of `len` (or [`LONG`]): counter + 1
/// (23 bits, wrapping), dirty clear.
fn next_serial(old: u32, len: u32) -> u32 {
    let counter = ((old >> 1) + 1) & 0x7f_ffff;
    (len << 24) | (counter << 1)
}
