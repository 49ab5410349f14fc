//! The shared-memory entries of `ipc bench`: the textbook bounded buffer.
//! Each direction has [`SLOTS`] message slots in a memfd and two counting
//! semaphores, `empty` (free slots, starting at [`SLOTS`]) and `full`
//! (messages waiting, starting at 0). The sender does P(empty), writes the
//! next slot, V(full); the receiver P(full), reads, V(empty). With one
//! sender and one receiver per direction, no lock is needed.
//!
//! The four entries differ only in what the semaphores are (the notes:
//! shared memory is the fastest IPC, but brings its own synchronisation):
//!
//! - `shm-spin`: counters in the region, busy-polled.
//! - `shm-futex`: the same counters, slept on with `futex(2)` when 0.
//! - `shm-sem`: POSIX unnamed semaphores in the region (`sem_init`).
//! - `sysv-sem`: one System V set of four semaphores.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ipckit::sem::{SemOp, SemaphoreSet, UnnamedSemaphore};
use ipckit::shm::{Futex, Memfd};
use ipckit::{
    Deadline, MessageReceiver, MessageSender, RecvTimeoutError, SendTimeoutError, WaitStrategy,
};

/// How the two processes take turns on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turns {
    Spin,
    Futex,
    PosixSem,
    SysvSem,
}

/// Message slots per direction.
pub const SLOTS: usize = 8;

/// The four semaphores sit at `index * 64`: index `2 * direction` is that
/// direction's `empty`, `2 * direction + 1` its `full`.
const SEM_STRIDE: usize = 64;
/// Where the slots start.
const SLOTS_AT: usize = 4 * SEM_STRIDE;

/// Counter words (spin and futex): the count in the low bits, and a bit a
/// waiter sets before sleeping on the futex.
const SLEEPING: u32 = 1 << 31;

/// The smallest slot: room for the sink's report and the end markers.
const MIN_SLOT: usize = 64;

/// One end of the channel.
#[derive(Debug)]
pub struct ShmChannel {
    shm: Memfd,
    set: Option<SemaphoreSet>,
    turns: Turns,
    /// Bytes a slot holds.
    slot: usize,
    /// My outgoing and incoming directions (0 or 1).
    tx: usize,
    rx: usize,
    /// Next slot to write and to read.
    head: usize,
    tail: usize,
    wait: WaitStrategy,
    max: usize,
    /// Both processes share one CPU: spinning yields it to the other.
    single_cpu: bool,
}

/// Bytes from one slot to the next: a length word, then the message.
fn slot_stride(slot: usize) -> usize {
    (8 + slot).next_multiple_of(64)
}

fn region_len(slot: usize) -> usize {
    SLOTS_AT + 2 * SLOTS * slot_stride(slot)
}

fn empty(dir: usize) -> usize {
    2 * dir
}

fn full(dir: usize) -> usize {
    2 * dir + 1
}

impl ShmChannel {
    /// Creates the region (and the semaphore set) for messages of up to
    /// `size` bytes; the creator sends on direction 0.
    pub fn create(turns: Turns, size: usize, shared_cpu: bool) -> io::Result<ShmChannel> {
        let slot = size.max(MIN_SLOT);
        let shm = Memfd::create("ipc-bench-slots", region_len(slot))?;
        let initial = |sem: usize| {
            if sem.is_multiple_of(2) {
                SLOTS as u32
            } else {
                0
            }
        };
        let mut set = None;
        match turns {
            Turns::Spin | Turns::Futex => {
                for sem in 0..4 {
                    shm.atomic_u32(sem * SEM_STRIDE)?
                        .store(initial(sem), Ordering::Release);
                }
            }
            Turns::PosixSem => {
                for sem in 0..4 {
                    UnnamedSemaphore::init(&shm, sem * SEM_STRIDE, initial(sem))?;
                }
            }
            Turns::SysvSem => {
                let values: Vec<u16> = (0..4).map(|s| initial(s) as u16).collect();
                set = Some(SemaphoreSet::private().values(&values).create()?);
            }
        }
        Ok(Self::new(shm, set, turns, slot, 0, shared_cpu))
    }

    /// The peer's end: the region from `fd`, the set by id.
    pub fn open(
        turns: Turns,
        size: usize,
        fd: OwnedFd,
        set_id: Option<i32>,
        shared_cpu: bool,
    ) -> io::Result<Self> {
        let slot = size.max(MIN_SLOT);
        let shm = Memfd::from_fd(fd, false)?;
        if shm.len() < region_len(slot) {
            return Err(io::Error::other("the shared region is too small"));
        }
        let set = match (turns, set_id) {
            (Turns::SysvSem, Some(id)) => Some(SemaphoreSet::open_id(id)?),
            (Turns::SysvSem, None) => return Err(io::Error::other("no semaphore set id")),
            _ => None,
        };
        Ok(Self::new(shm, set, turns, slot, 1, shared_cpu))
    }

    fn new(
        shm: Memfd,
        set: Option<SemaphoreSet>,
        turns: Turns,
        slot: usize,
        me: usize,
        shared_cpu: bool,
    ) -> ShmChannel {
        ShmChannel {
            shm,
            set,
            turns,
            slot,
            tx: me,
            rx: 1 - me,
            head: 0,
            tail: 0,
            wait: WaitStrategy::Block,
            max: usize::MAX,
            single_cpu: shared_cpu,
        }
    }

    /// The memory, to hand to the peer.
    pub fn region(&self) -> &Memfd {
        &self.shm
    }

    /// The System V set's id, to hand to the peer.
    pub fn set_id(&self) -> Option<i32> {
        self.set.as_ref().map(|s| s.id())
    }

    /// Where slot `i` of direction `dir` starts.
    fn slot_at(&self, dir: usize, i: usize) -> usize {
        SLOTS_AT + (dir * SLOTS + i % SLOTS) * slot_stride(self.slot)
    }

    /// P on semaphore `sem`, waiting as the strategy says; false if the
    /// deadline passed first.
    fn acquire(&self, sem: usize, deadline: Deadline) -> io::Result<bool> {
        let end = deadline.instant();
        let spin_until = match (self.turns, self.wait) {
            (Turns::Spin, _) | (_, WaitStrategy::Spin) => end,
            (_, WaitStrategy::Block) => Some(Instant::now()),
            (_, WaitStrategy::Adaptive { spin_for }) => {
                let t = Instant::now() + spin_for;
                Some(end.map_or(t, |e| e.min(t)))
            }
        };
        // Spin phase: non-blocking attempts (at least one).
        loop {
            if self.try_acquire(sem)? {
                return Ok(true);
            }
            if spin_until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if self.single_cpu {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if self.turns == Turns::Spin
            || self.wait == WaitStrategy::Spin
            || end.is_some_and(|t| Instant::now() >= t)
        {
            return Ok(false);
        }
        self.block(sem, end)
    }

    fn try_acquire(&self, sem: usize) -> io::Result<bool> {
        match self.turns {
            Turns::Spin | Turns::Futex => {
                let word = self.shm.atomic_u32(sem * SEM_STRIDE)?;
                let mut v = word.load(Ordering::Acquire);
                loop {
                    if v & !SLEEPING == 0 {
                        return Ok(false);
                    }
                    match word.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Acquire)
                    {
                        Ok(_) => return Ok(true),
                        Err(now) => v = now,
                    }
                }
            }
            Turns::PosixSem => self.sem(sem)?.try_wait(),
            Turns::SysvSem => self.sysv()?.try_apply(&[SemOp::wait(sem as u16)]),
        }
    }

    fn block(&self, sem: usize, end: Option<Instant>) -> io::Result<bool> {
        let left = || end.map(|t| t.saturating_duration_since(Instant::now()));
        match self.turns {
            Turns::Spin => Ok(false),
            Turns::Futex => {
                // One waiter per semaphore (one sender, one receiver): it
                // sets SLEEPING, and the poster that sees it clears it and
                // wakes.
                let word = self.shm.atomic_u32(sem * SEM_STRIDE)?;
                let f = Futex::new(word);
                loop {
                    if self.try_acquire(sem)? {
                        return Ok(true);
                    }
                    let v = word.load(Ordering::Acquire);
                    if v & !SLEEPING != 0 {
                        continue;
                    }
                    if v != SLEEPING
                        && word
                            .compare_exchange(v, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                    {
                        continue;
                    }
                    let woke = match left() {
                        None => f.wait(SLEEPING).map(|()| true)?,
                        Some(d) => f.wait_timeout(SLEEPING, d)?,
                    };
                    if !woke {
                        return self.try_acquire(sem);
                    }
                }
            }
            Turns::PosixSem => {
                let s = self.sem(sem)?;
                match left() {
                    None => s.wait().map(|()| true),
                    Some(d) => s.wait_timeout(d),
                }
            }
            Turns::SysvSem => {
                let op = [SemOp::wait(sem as u16)];
                match left() {
                    None => self.sysv()?.apply(&op).map(|()| true),
                    Some(d) => self.sysv()?.apply_timeout(&op, d),
                }
            }
        }
    }

    /// V on semaphore `sem`, waking the other side if it sleeps.
    fn release(&self, sem: usize) -> io::Result<()> {
        match self.turns {
            Turns::Spin | Turns::Futex => {
                let word = self.shm.atomic_u32(sem * SEM_STRIDE)?;
                let prev = word.fetch_add(1, Ordering::Release);
                if prev & SLEEPING != 0 {
                    word.fetch_and(!SLEEPING, Ordering::Release);
                    Futex::new(word).wake(1)?;
                }
                Ok(())
            }
            Turns::PosixSem => self.sem(sem)?.post(),
            Turns::SysvSem => self.sysv()?.post(sem as u16),
        }
    }

    fn sem(&self, sem: usize) -> io::Result<UnnamedSemaphore<'_>> {
        UnnamedSemaphore::open(&self.shm, sem * SEM_STRIDE)
    }

    fn sysv(&self) -> io::Result<&SemaphoreSet> {
        self.set
            .as_ref()
            .ok_or_else(|| io::Error::other("no semaphore set"))
    }

    /// Sends `msg` into the next slot; false if no slot freed up in time.
    fn put(&mut self, msg: &[u8], deadline: Deadline) -> io::Result<bool> {
        if msg.len() > self.slot {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes do not fit a {}-byte slot", msg.len(), self.slot),
            ));
        }
        if !self.acquire(empty(self.tx), deadline)? {
            return Ok(false);
        }
        let at = self.slot_at(self.tx, self.head);
        self.shm.view::<u64>(at)?.store(&(msg.len() as u64))?;
        self.shm.write(at + 8, msg)?;
        self.head += 1;
        self.release(full(self.tx))?;
        Ok(true)
    }

    /// Takes the next message into `buf`; false if none came in time.
    fn take(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> io::Result<bool> {
        if !self.acquire(full(self.rx), deadline)? {
            return Ok(false);
        }
        let at = self.slot_at(self.rx, self.tail);
        // Never trust the peer: the length must fit the slot and our limit.
        let len = self.shm.view::<u64>(at)?.load()?;
        if len > self.slot.min(self.max) as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer announced {len} bytes in a {}-byte slot",
                    self.slot
                ),
            ));
        }
        buf.resize(len as usize, 0);
        self.shm.read(at + 8, buf)?;
        self.tail += 1;
        self.release(empty(self.rx))?;
        Ok(true)
    }
}

impl MessageSender for ShmChannel {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        match self.put(msg, deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendTimeoutError::Timeout(())),
            Err(e) => Err(SendTimeoutError::Io(e, ())),
        }
    }
}

impl MessageReceiver for ShmChannel {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        match self.take(buf, deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RecvTimeoutError::Timeout),
            Err(e) => Err(RecvTimeoutError::Io(e)),
        }
    }

    fn max_message_size(&self) -> usize {
        self.max
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = max;
    }

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipckit::MessageSenderExt;
    use std::os::fd::AsFd;

    /// Two ends over one region (in one process: this checks the slot
    /// logic, the multi-process runs are `ipc bench` itself).
    fn pair(turns: Turns) -> (ShmChannel, ShmChannel) {
        let a = ShmChannel::create(turns, 100, false).unwrap();
        let fd = a.region().as_fd().try_clone_to_owned().unwrap();
        let b = ShmChannel::open(turns, 100, fd, a.set_id(), false).unwrap();
        (a, b)
    }

    #[test]
    fn slots_fill_up_and_drain_in_order() {
        for turns in [Turns::Spin, Turns::Futex, Turns::PosixSem, Turns::SysvSem] {
            let (mut a, mut b) = pair(turns);
            for i in 0..SLOTS {
                a.try_send([i as u8; 3]).unwrap();
            }
            assert!(
                a.try_send([0u8; 3]).is_err(),
                "{turns:?}: a ninth message fit"
            );
            for i in 0..SLOTS {
                assert_eq!(b.try_recv().unwrap(), [i as u8; 3], "{turns:?}");
            }
            assert!(b.try_recv().is_err(), "{turns:?}: a message from nowhere");
            b.send(b"back").unwrap();
            assert_eq!(a.recv().unwrap(), b"back");
        }
    }

    #[test]
    fn a_length_beyond_the_slot_is_refused() {
        let (mut a, mut b) = pair(Turns::Futex);
        a.send(b"x").unwrap();
        // The peer lies about the length of what it wrote.
        let at = b.slot_at(b.rx, 0);
        b.shm.view::<u64>(at).unwrap().store(&u64::MAX).unwrap();
        let e = b.try_recv().unwrap_err().to_string();
        assert!(e.contains("announced"), "{e}");
        let e = a.try_send(vec![0u8; 101]).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
    }
}
