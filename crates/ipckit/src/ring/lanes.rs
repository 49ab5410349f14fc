//! Lanes: a stream socket's bytes through shared memory.
//!
//! Two single-producer, single-consumer byte rings in one sealed memfd,
//! one each way between two processes that are already connected by a
//! Unix stream socket. The bytes go through the rings with no system
//! call; the socket stays for what a ring cannot do: passing the memfd,
//! telling each side that the other has gone (end of file), and waking a
//! side that sleeps. A side about to sleep raises its flag, looks once
//! more, and then sleeps in `poll(2)` on the socket; the other side, after
//! it publishes bytes (or frees room), sees the flag and sends one byte on
//! the socket ("a kick"), whose content means nothing. This is how
//! io_uring's submission thread is woken (`IORING_SQ_NEED_WAKEUP`): a busy
//! pair never enters the kernel, an idle one costs one `send(2)` to wake.
//!
//! The creator (the mailbox broker) makes the memfd, seals its size and
//! sends it; the opener (a client) checks what it received. Neither side
//! trusts the other's words in the shared memory: each keeps its own read
//! and write positions in its own memory and only reads the other's,
//! checking that it is one the other can honestly have (no further ahead
//! than a ring's capacity) before using it; offsets are reduced modulo
//! the capacity, so every copy stays inside the mapping. The worst a
//! hostile peer can do is write bytes that the protocol on top refuses,
//! or stop: an error, never undefined behaviour.
//!
//! Layout (little-endian, each line written by one side only):
//!
//! ```text
//!    0 magic "ipcklane" u64 | 8 version u32 | 12 capacity u32 (per lane)
//!  lane k (k = 0: opener to creator, 1: creator to opener), at 128 + 256 k:
//!   +0   writer's line: tail u64 (bytes written, ever) | +8 waits u32
//!   +64  reader's line: head u64 (bytes read, ever)    | +72 sleeps u32
//! 4096 + k * capacity: lane k's bytes
//! ```
//!
//! References: `memfd_create(2)`, `fcntl(2)` (file seals), `poll(2)`,
//! `io_uring_setup(2)` (`IORING_SETUP_SQPOLL`, the need-wakeup flag).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::sys::mman::{self, Mapping};

const MAGIC: u64 = u64::from_le_bytes(*b"ipcklane");
const VERSION: u32 = 1;
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_CAPACITY: usize = 12;
const OFF_LANES: usize = 128;
const LANE_STRIDE: usize = 256;
const READER_LINE: usize = 64;
const OFF_DATA: usize = 4096;
/// The smallest and largest capacity of a lane.
const MIN_CAPACITY: usize = 4096;
const MAX_CAPACITY: usize = 1 << 30;

/// Which end of the lanes this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Made the memfd: writes lane 1, reads lane 0.
    Creator,
    /// Received it: writes lane 0, reads lane 1.
    Opener,
}

/// One end of a pair of lanes (see the [module docs](self)). Holds the
/// mapping only: the memfd's descriptor is let go once sent (creator) or
/// mapped (opener), so that lanes cost no descriptor.
#[derive(Debug)]
pub(crate) struct Lanes {
    map: Mapping,
    capacity: u64,
    /// The lane this end writes and the one it reads.
    out: usize,
    inp: usize,
    /// This end's own positions: bytes written to `out`, read from `inp`.
    /// Never read back from the shared memory.
    written: u64,
    read: u64,
}

/// The other side moved a position to one it cannot honestly have.
fn corrupt(what: &str, pos: u64, own: u64, capacity: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the other process wrote an impossible {what} position into the shared lanes \
             ({pos}, against this side's {own}, with {capacity} bytes of room): it is broken \
             or hostile, and the connection is closed"
        ),
    )
}

impl Lanes {
    /// Makes lanes of `capacity` bytes each way (a power of two, at least
    /// 4 KiB) in a memfd sealed against any change of size (and of its
    /// seals); returns them and the memfd, to send to the other process
    /// and then close.
    pub(crate) fn create(capacity: usize) -> io::Result<(Lanes, OwnedFd)> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("lanes of {capacity} bytes: use a power of two from 4 KiB to 1 GiB"),
            ));
        }
        let len = OFF_DATA + 2 * capacity;
        let fd = mman::memfd("ipckit-lanes")?;
        mman::truncate(fd.as_fd(), len as u64)?;
        mman::allocate(fd.as_fd(), len as u64)?;
        mman::add_seals(
            fd.as_fd(),
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )?;
        let m = Mapping::map(fd.as_fd(), 0, len, true)?;
        m.write(OFF_VERSION, VERSION);
        m.write(OFF_CAPACITY, capacity as u32);
        // The magic last: a half-made header does not look like lanes.
        m.write(OFF_MAGIC, MAGIC);
        Ok((Lanes::new(m, capacity as u64, End::Creator), fd))
    }

    /// Takes the other end of lanes received from their creator, after
    /// checking their seals and what they say about themselves against
    /// the memory's size.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Lanes> {
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the shared lanes received are not usable: {why}"),
            )
        };
        let fixed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        if mman::seals(fd.as_fd()).unwrap_or(0) & fixed != fixed {
            return Err(bad("their size is not sealed".into()));
        }
        let len = mman::file_size(fd.as_fd())?;
        if len < (OFF_DATA + 2 * MIN_CAPACITY) as u64 || len > (OFF_DATA + 2 * MAX_CAPACITY) as u64
        {
            return Err(bad(format!("{len} bytes is not a size lanes have")));
        }
        let m = Mapping::map(fd.as_fd(), 0, len as usize, true)?;
        if m.read::<u64>(OFF_MAGIC) != MAGIC {
            return Err(bad("they do not start with the lanes' mark".into()));
        }
        let version = m.read::<u32>(OFF_VERSION);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, where this side knows {VERSION}"
            )));
        }
        let capacity = m.read::<u32>(OFF_CAPACITY) as usize;
        if !capacity.is_power_of_two() || OFF_DATA + 2 * capacity != m.len() {
            return Err(bad(format!(
                "a capacity of {capacity} bytes in {} bytes of memory",
                m.len()
            )));
        }
        Ok(Lanes::new(m, capacity as u64, End::Opener))
    }

    fn new(map: Mapping, capacity: u64, end: End) -> Lanes {
        let (out, inp) = match end {
            End::Creator => (1, 0),
            End::Opener => (0, 1),
        };
        Lanes {
            map,
            capacity,
            out,
            inp,
            written: 0,
            read: 0,
        }
    }

    fn map(&self) -> &Mapping {
        &self.map
    }

    fn u64_at(&self, lane: usize, off: usize) -> &AtomicU64 {
        self.map().place(OFF_LANES + lane * LANE_STRIDE + off)
    }

    fn u32_at(&self, lane: usize, off: usize) -> &AtomicU32 {
        self.map().place(OFF_LANES + lane * LANE_STRIDE + off)
    }

    fn tail(&self, lane: usize) -> &AtomicU64 {
        self.u64_at(lane, 0)
    }

    fn waits(&self, lane: usize) -> &AtomicU32 {
        self.u32_at(lane, 8)
    }

    fn head(&self, lane: usize) -> &AtomicU64 {
        self.u64_at(lane, READER_LINE)
    }

    fn sleeps(&self, lane: usize) -> &AtomicU32 {
        self.u32_at(lane, READER_LINE + 8)
    }

    /// Bytes of `out` not yet read by the other side, checked.
    fn unread_out(&self) -> io::Result<u64> {
        let head = self.head(self.out).load(Ordering::Acquire);
        let used = self.written.wrapping_sub(head);
        if used > self.capacity {
            return Err(corrupt("read", head, self.written, self.capacity));
        }
        Ok(used)
    }

    /// Bytes waiting in `inp`, checked.
    fn waiting_in(&self) -> io::Result<u64> {
        let tail = self.tail(self.inp).load(Ordering::Acquire);
        let avail = tail.wrapping_sub(self.read);
        if avail > self.capacity {
            return Err(corrupt("write", tail, self.read, self.capacity));
        }
        Ok(avail)
    }

    /// Writes as much of `bytes` as there is room for; how much.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.capacity - self.unread_out()?;
        let n = (bytes.len() as u64).min(room) as usize;
        if n == 0 {
            return Ok(0);
        }
        let base = OFF_DATA + self.out * self.capacity as usize;
        let at = (self.written % self.capacity) as usize;
        let first = n.min(self.capacity as usize - at);
        let m = self.map();
        m.copy_in(base + at, &bytes[..first]);
        m.copy_in(base, &bytes[first..n]);
        self.written = self.written.wrapping_add(n as u64);
        self.tail(self.out).store(self.written, Ordering::Release);
        Ok(n)
    }

    /// Appends up to `max` waiting bytes to `v`; how many (0: none yet).
    pub(crate) fn read_into(&mut self, v: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let n = self.waiting_in()?.min(max as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let base = OFF_DATA + self.inp * self.capacity as usize;
        let at = (self.read % self.capacity) as usize;
        let first = n.min(self.capacity as usize - at);
        let m = self.map();
        m.append_to(base + at, first, v);
        m.append_to(base, n - first, v);
        self.read = self.read.wrapping_add(n as u64);
        self.head(self.inp).store(self.read, Ordering::Release);
        Ok(n)
    }

    /// Whether bytes wait to be read.
    pub(crate) fn readable(&self) -> io::Result<bool> {
        Ok(self.waiting_in()? > 0)
    }

    /// Whether there is room to write.
    pub(crate) fn writable(&self) -> io::Result<bool> {
        Ok(self.unread_out()? < self.capacity)
    }

    /// After a [`write`](Self::write): whether the reader sleeps with
    /// bytes it has not read, and must be kicked. A reader that raised its
    /// flag after taking everything (it returned to its caller) is not
    /// kicked: the kick would wake whoever waits on its socket for nothing.
    pub(crate) fn reader_sleeps(&self) -> bool {
        // Pairs with the fence in `sleep`: either the reader sees the new
        // tail when it looks again, or this sees its flag. Its head (only a
        // hint: a peer lying about it loses its own wake-ups) at the tail
        // means it has seen the tail.
        fence(Ordering::SeqCst);
        self.sleeps(self.out).load(Ordering::Relaxed) != 0
            && self.head(self.out).load(Ordering::Acquire) != self.written
    }

    /// After a [`read_into`](Self::read_into): whether the writer waits
    /// for room and must be kicked.
    pub(crate) fn writer_waits(&self) -> bool {
        fence(Ordering::SeqCst);
        self.waits(self.inp).load(Ordering::Relaxed) != 0
    }

    /// Raises (or lowers) this side's "kick me when bytes come" flag.
    /// Raised, the caller must look again ([`readable`](Self::readable))
    /// before it sleeps.
    pub(crate) fn sleep(&self, on: bool) {
        self.sleeps(self.inp).store(on as u32, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Raises (or lowers) this side's "kick me when there is room" flag.
    /// Raised, the caller must look again ([`writable`](Self::writable))
    /// before it sleeps.
    pub(crate) fn wait_for_room(&self, on: bool) {
        self.waits(self.out).store(on as u32, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::{Memfd, Seals};

    fn pair(capacity: usize) -> (Lanes, Lanes) {
        let (a, fd) = Lanes::create(capacity).unwrap();
        (a, Lanes::open(fd).unwrap())
    }

    #[test]
    fn bytes_cross_both_ways_and_wrap() {
        let (mut a, mut b) = pair(4096);
        let mut got = Vec::new();
        let mut sent = 0u64;
        for round in 0..100u32 {
            let chunk: Vec<u8> = (0..1000u32).map(|i| (i + round) as u8).collect();
            assert_eq!(b.write(&chunk).unwrap(), 1000);
            sent += 1000;
            got.clear();
            assert_eq!(a.read_into(&mut got, usize::MAX).unwrap(), 1000);
            assert_eq!(got, chunk);
            assert_eq!(a.write(&chunk[..7]).unwrap(), 7);
            got.clear();
            assert_eq!(b.read_into(&mut got, 3).unwrap(), 3);
            assert_eq!(b.read_into(&mut got, 10).unwrap(), 4);
            assert_eq!(got, &chunk[..7]);
        }
        assert_eq!(a.read, sent);
    }

    #[test]
    fn a_full_lane_takes_what_fits_and_says_so() {
        let (mut a, mut b) = pair(4096);
        assert_eq!(b.write(&[1; 5000]).unwrap(), 4096);
        assert!(!b.writable().unwrap());
        assert_eq!(b.write(&[1; 10]).unwrap(), 0);
        b.wait_for_room(true);
        let mut v = Vec::new();
        assert_eq!(a.read_into(&mut v, 100).unwrap(), 100);
        assert!(a.writer_waits());
        assert!(b.writable().unwrap());
        b.wait_for_room(false);
        assert!(!a.writer_waits());
    }

    #[test]
    fn the_sleep_flag_is_seen_by_the_writer() {
        let (mut a, mut b) = pair(4096);
        assert!(!b.readable().unwrap());
        b.sleep(true);
        a.write(b"x").unwrap();
        assert!(a.reader_sleeps());
        assert!(b.readable().unwrap());
        b.sleep(false);
        assert!(!a.reader_sleeps());
        // Asleep with everything read: nothing to wake it for.
        b.read_into(&mut Vec::new(), 10).unwrap();
        b.sleep(true);
        assert!(!a.reader_sleeps());
        a.write(b"y").unwrap();
        assert!(a.reader_sleeps());
    }

    #[test]
    fn impossible_positions_are_errors() {
        let (mut a, mut b) = pair(4096);
        // The opener claims to have written more than fits.
        b.tail(0).store(4097, Ordering::Release);
        let e = a.read_into(&mut Vec::new(), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(a.readable().is_err());
        // Or a tail behind what was read: the same.
        b.tail(0).store(u64::MAX, Ordering::Release);
        assert!(a.readable().is_err());
        // A reader position ahead of what was written.
        b.head(1).store(5, Ordering::Release);
        assert!(a.write(b"x").is_err());
        assert!(a.writable().is_err());
        // The victim's own positions were never taken from the memory.
        assert_eq!((a.written, a.read), (0, 0));
        let _ = b.write(b"");
    }

    #[test]
    fn only_sealed_lanes_of_the_right_shape_are_opened() {
        let m = Memfd::create("not-lanes", OFF_DATA + 2 * 4096).unwrap();
        let fd = m.fd().try_clone_to_owned().unwrap();
        let e = Lanes::open(fd).unwrap_err().to_string();
        assert!(e.contains("not sealed"), "{e}");
        let m = Memfd::create_with_seals(
            "not-lanes",
            OFF_DATA + 2 * 4096,
            Seals::SHRINK | Seals::GROW,
        )
        .unwrap();
        let fd = m.fd().try_clone_to_owned().unwrap();
        let e = Lanes::open(fd).unwrap_err().to_string();
        assert!(e.contains("mark"), "{e}");
        // Made by create: sealed for good, so no one can resize them.
        let (_a, fd) = Lanes::create(4096).unwrap();
        let f = std::fs::File::from(fd);
        assert!(f.set_len(4096).is_err());
        assert!(f.set_len(1 << 20).is_err());
        assert!(Lanes::create(5000).is_err());
        assert!(Lanes::create(2048).is_err());
    }
}
