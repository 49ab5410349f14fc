//! The ring's synchronisation, apart from where its words live, so that
//! `loom` can check it (`RUSTFLAGS="--cfg loom" cargo test -p ipckit --lib
//! --release ring::core::model`).
//!
//! The queue is Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue",
//! 1024cores.net, 2010; crossbeam's `ArrayQueue` is built on it): slot `i`
//! carries a sequence *stamp*. For position `pos` (which maps to slot
//! `pos % capacity`), stamp `pos` means free for the producer of `pos`,
//! `pos + 1` means holding the message of `pos`, and the consumer frees it
//! for the next lap by writing `pos + capacity`. Producers and consumers
//! each claim positions from their own counter (`tail`, `head`), with a
//! compare-and-swap when there may be several of them and a plain store
//! when there is one (SPSC). A side only ever reads the other side's stamps,
//! never its counter, so a message and its stamp share the cache lines
//! that move between the CPUs, and nothing else does.
//!
//! Waiting: a side that finds nothing to do may park on a futex word
//! ([`Signal`]). It counts itself in `waiters` first and checks again; the
//! other side, after publishing a stamp, looks at `waiters` and only then
//! bumps the word and wakes. A SeqCst fence on both sides (the
//! store-buffering pattern) makes sure one of them sees the other, so no
//! wake-up is lost, and a busy channel never makes a system call.
//!
//! Nothing read from the shared words is trusted: positions are reduced
//! modulo the capacity before use, and a stamp that cannot occur in an
//! honest ring is reported as [`Corrupt`] instead of being spun on.

use super::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Where the shared words of one ring are, and how to sleep on a word.
pub(crate) trait Layout {
    /// The number of slots: a power of two, at least 2 (with one slot,
    /// "holds the message of `pos`" and "free for `pos + 1`" would be the
    /// same stamp).
    fn capacity(&self) -> u64;
    /// The stamp of slot `i`, for `i < capacity`.
    fn stamp(&self, i: u64) -> &AtomicU64;
    /// The producers' next position.
    fn tail(&self) -> &AtomicU64;
    /// The consumers' next position.
    fn head(&self) -> &AtomicU64;
    /// Consumers wait here for messages.
    fn data(&self) -> Signal<'_>;
    /// Producers wait here for free slots.
    fn space(&self) -> Signal<'_>;
    /// Sleeps while `*word == expected`, until woken or `deadline`.
    fn park(&self, word: &AtomicU32, expected: u32, deadline: Option<std::time::Instant>);
    /// Wakes every sleeper on `word`.
    fn unpark(&self, word: &AtomicU32);
}

/// A futex word and the count of those about to sleep on it.
#[derive(Clone, Copy)]
pub(crate) struct Signal<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) waiters: &'a AtomicU32,
}

/// The shared words hold a state no honest ring can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt {
    pub(crate) pos: u64,
    pub(crate) stamp: u64,
}

/// Which side claims: senders (the tail) or receivers (the head); each
/// needs its own stamp at a position to proceed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Send,
    Recv,
}

impl Side {
    fn counter<L: Layout>(self, l: &L) -> &AtomicU64 {
        match self {
            Side::Send => l.tail(),
            Side::Recv => l.head(),
        }
    }

    /// The stamp that lets this side take position `pos`.
    fn ready(self, pos: u64) -> u64 {
        match self {
            Side::Send => pos,
            Side::Recv => pos.wrapping_add(1),
        }
    }
}

/// Claims the next position for `side`: `Ok(Some(pos))`, `Ok(None)` when
/// there is none (ring full for a sender, empty for a receiver): a slot to
/// write, or a message to read. When
/// several claim (`shared`), `announce(pos)` runs before each attempt to
/// win `pos`, and the winning compare-and-swap releases what it wrote: a
/// process that sees the counter past `pos` sees the announcement too.
#[inline]
pub(crate) fn claim<L: Layout>(
    l: &L,
    side: Side,
    shared: bool,
    announce: impl Fn(u64),
) -> Result<Option<u64>, Corrupt> {
    let counter = side.counter(l);
    let mask = l.capacity() - 1;
    let mut pos = counter.load(Ordering::Relaxed);
    loop {
        let stamp = l.stamp(pos & mask).load(Ordering::Acquire);
        let diff = stamp.wrapping_sub(side.ready(pos)) as i64;
        if diff == 0 {
            if !shared {
                counter.store(pos.wrapping_add(1), Ordering::Relaxed);
                return Ok(Some(pos));
            }
            announce(pos);
            match counter.compare_exchange_weak(
                pos,
                pos.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(Some(pos)),
                Err(now) => pos = now,
            }
        } else if diff < 0 {
            // The slot still holds the previous lap: full, or empty.
            return Ok(None);
        } else {
            // Another claimant took `pos` and the slot moved on; honestly,
            // the counter has moved on too.
            let now = counter.load(Ordering::Relaxed);
            if now == pos || !shared {
                return Err(Corrupt { pos, stamp });
            }
            pos = now;
        }
    }
}

/// Publishes the message written at `pos` and wakes a parked receiver.
#[inline]
pub(crate) fn commit_send<L: Layout>(l: &L, pos: u64) {
    let mask = l.capacity() - 1;
    l.stamp(pos & mask)
        .store(pos.wrapping_add(1), Ordering::Release);
    notify(l, l.data());
}

/// Frees the slot of the message read at `pos` for the next lap and wakes a
/// parked sender.
#[inline]
pub(crate) fn release_recv<L: Layout>(l: &L, pos: u64) {
    let cap = l.capacity();
    l.stamp(pos & (cap - 1))
        .store(pos.wrapping_add(cap), Ordering::Release);
    notify(l, l.space());
}

/// Wakes a parked sender, for a slot freed other than by `release_recv`.
pub(crate) fn notify_space<L: Layout>(l: &L) {
    notify(l, l.space());
}

#[inline]
fn notify<L: Layout>(l: &L, s: Signal<'_>) {
    // Pairs with the fence in `park_until`: either the waiter sees the new
    // stamp, or we see its count and wake it.
    fence(Ordering::SeqCst);
    if s.waiters.load(Ordering::Relaxed) != 0 {
        wake(l, s);
    }
}

#[cold]
fn wake<L: Layout>(l: &L, s: Signal<'_>) {
    s.word.fetch_add(1, Ordering::Release);
    l.unpark(s.word);
}

/// Whether `side` could take its next position now (or the state is
/// corrupt, which the claim will report).
fn could_proceed<L: Layout>(l: &L, side: Side) -> bool {
    let pos = side.counter(l).load(Ordering::Relaxed);
    let stamp = l.stamp(pos & (l.capacity() - 1)).load(Ordering::Acquire);
    stamp.wrapping_sub(side.ready(pos)) as i64 >= 0
}

/// Whether a message waits at the consumers' position (or the state is
/// corrupt, which a claim will report).
pub(crate) fn message_waiting<L: Layout>(l: &L) -> bool {
    could_proceed(l, Side::Recv)
}

/// Parks on the space signal (bumped when a slot is freed, if anyone
/// waits) while `still()` holds, or until `deadline`.
pub(crate) fn park_space_while<L: Layout>(
    l: &L,
    still: impl Fn() -> bool,
    deadline: Option<std::time::Instant>,
) {
    let s = l.space();
    let seq = s.word.load(Ordering::Acquire);
    s.waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if still() {
        l.park(s.word, seq, deadline);
    }
    s.waiters.fetch_sub(1, Ordering::SeqCst);
}

/// Parks a receiver until a message may be there, or `deadline`.
pub(crate) fn park_recv<L: Layout>(l: &L, deadline: Option<std::time::Instant>) {
    park_until(l, Side::Recv, l.data(), deadline)
}

/// Parks a sender until a slot may be free, or `deadline`.
pub(crate) fn park_send<L: Layout>(l: &L, deadline: Option<std::time::Instant>) {
    park_until(l, Side::Send, l.space(), deadline)
}

fn park_until<L: Layout>(l: &L, side: Side, s: Signal<'_>, deadline: Option<std::time::Instant>) {
    let seq = s.word.load(Ordering::Acquire);
    s.waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if !could_proceed(l, side) {
        l.park(s.word, seq, deadline);
    }
    s.waiters.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
#[allow(unsafe_code)] // an UnsafeCell stands for the slot payloads
mod model {
    //! The protocol on a ring in ordinary memory, between threads. Built
    //! with `--cfg loom`, the model checker explores every interleaving
    //! (and every weak-memory outcome it models) of the small scenarios
    //! (`loom` below); otherwise they run on real threads, with larger
    //! ones that loom could not finish: positions wrapping past
    //! `u64::MAX`, several producers and consumers. Under Miri
    //! (`tools/miri.sh`) those show any data race on a slot, any
    //! arithmetic overflow of a position, and any undefined behaviour.

    use super::*;
    #[cfg(loom)]
    use loom::{
        cell::UnsafeCell,
        sync::{Arc, Condvar, Mutex},
        thread,
    };
    #[cfg(not(loom))]
    use std::{
        sync::{Arc, Condvar, Mutex},
        thread,
    };

    /// loom's `UnsafeCell`, on `std`'s.
    #[cfg(not(loom))]
    struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }
        fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A ring in ordinary memory, parking on a mutex and condition variable
    /// with the futex's contract: the check of the word and the sleep are
    /// atomic with respect to a wake.
    struct Model {
        stamps: Vec<AtomicU64>,
        slots: Vec<UnsafeCell<u64>>,
        tail: AtomicU64,
        head: AtomicU64,
        words: [AtomicU32; 4],
        lock: Mutex<()>,
        cv: Condvar,
    }

    // SAFETY: the slots are only touched between a claim and its
    // commit/release, which the protocol under test makes exclusive (loom
    // checks exactly that: a racy access fails the model).
    unsafe impl Sync for Model {}

    impl Model {
        fn new(cap: u64) -> Model {
            Model::starting_at(cap, 0)
        }

        /// A ring whose both counters are at `start` (as after `start`
        /// messages), every slot free for its next position.
        fn starting_at(cap: u64, start: u64) -> Model {
            let mask = cap - 1;
            Model {
                stamps: (0..cap)
                    .map(|i| AtomicU64::new(start.wrapping_add(i.wrapping_sub(start) & mask)))
                    .collect(),
                slots: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
                tail: AtomicU64::new(start),
                head: AtomicU64::new(start),
                words: [
                    AtomicU32::new(0),
                    AtomicU32::new(0),
                    AtomicU32::new(0),
                    AtomicU32::new(0),
                ],
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }
        }

        fn send(&self, v: u64, shared: bool) {
            loop {
                if let Some(pos) = claim(self, Side::Send, shared, |_| {}).expect("honest ring") {
                    let i = (pos % self.capacity()) as usize;
                    // SAFETY: the claim makes this slot ours until the
                    // commit; loom fails the model if it does not.
                    self.slots[i].with_mut(|p| unsafe { *p = v });
                    commit_send(self, pos);
                    return;
                }
                park_send(self, None);
            }
        }

        fn recv(&self, shared: bool) -> u64 {
            loop {
                if let Some(pos) = claim(self, Side::Recv, shared, |_| {}).expect("honest ring") {
                    let i = (pos % self.capacity()) as usize;
                    // SAFETY: the claim makes this message ours until the
                    // release; loom fails the model if it does not.
                    let v = self.slots[i].with(|p| unsafe { *p });
                    release_recv(self, pos);
                    return v;
                }
                park_recv(self, None);
            }
        }
    }

    impl Layout for Model {
        fn capacity(&self) -> u64 {
            self.stamps.len() as u64
        }
        fn stamp(&self, i: u64) -> &AtomicU64 {
            &self.stamps[i as usize]
        }
        fn tail(&self) -> &AtomicU64 {
            &self.tail
        }
        fn head(&self) -> &AtomicU64 {
            &self.head
        }
        fn data(&self) -> Signal<'_> {
            Signal {
                word: &self.words[0],
                waiters: &self.words[1],
            }
        }
        fn space(&self) -> Signal<'_> {
            Signal {
                word: &self.words[2],
                waiters: &self.words[3],
            }
        }
        fn park(&self, word: &AtomicU32, expected: u32, _deadline: Option<std::time::Instant>) {
            let mut g = self.lock.lock().unwrap();
            while word.load(Ordering::SeqCst) == expected {
                g = self.cv.wait(g).unwrap();
            }
        }
        fn unpark(&self, _word: &AtomicU32) {
            let _g = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }

    /// Under loom, explores interleavings with at most three preemptions
    /// (loom's advice for models this size: the bugs it finds need few);
    /// otherwise runs once, on real threads.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        #[cfg(loom)]
        {
            let mut b = loom::model::Builder::new();
            b.preemption_bound = Some(3);
            b.check(f);
        }
        #[cfg(not(loom))]
        f();
    }

    /// SPSC through a ring of two slots, three messages (so the ring
    /// wraps and fills): every message arrives, in order, and neither side
    /// sleeps through the other's wake-up.
    #[test]
    fn spsc_no_lost_wakeup() {
        model(|| {
            let m = Arc::new(Model::new(2));
            let p = m.clone();
            let t = thread::spawn(move || {
                for v in 1..=3 {
                    p.send(v, false);
                }
            });
            for v in 1..=3 {
                assert_eq!(m.recv(false), v);
            }
            t.join().unwrap();
        });
    }

    /// Two producers and a consumer on two slots: each message is taken
    /// exactly once.
    #[test]
    fn mpmc_each_message_once() {
        model(|| {
            let m = Arc::new(Model::new(2));
            let producers: Vec<_> = [10, 20]
                .into_iter()
                .map(|v| {
                    let p = m.clone();
                    thread::spawn(move || p.send(v, true))
                })
                .collect();
            let mut got = [m.recv(true), m.recv(true)];
            for p in producers {
                p.join().unwrap();
            }
            got.sort();
            assert_eq!(got, [10, 20]);
        });
    }

    /// Two consumers race for one message each: neither takes the other's.
    #[test]
    fn mpmc_consumers_race() {
        model(|| {
            let m = Arc::new(Model::new(2));
            m.send(1, true);
            m.send(2, true);
            let c = m.clone();
            let other = thread::spawn(move || c.recv(true));
            let mine = m.recv(true);
            let theirs = other.join().unwrap();
            let mut got = [mine, theirs];
            got.sort();
            assert_eq!(got, [1, 2]);
        });
    }

    /// A full ring parks the producer until the consumer frees a slot.
    #[test]
    fn full_ring_parks_and_wakes_the_producer() {
        model(|| {
            let m = Arc::new(Model::new(2));
            m.send(1, false);
            m.send(2, false);
            let p = m.clone();
            let t = thread::spawn(move || p.send(3, false));
            assert_eq!(m.recv(false), 1);
            assert_eq!(m.recv(false), 2);
            assert_eq!(m.recv(false), 3);
            t.join().unwrap();
        });
    }

    /// One producer and one consumer over positions that wrap past
    /// `u64::MAX`: every message, in order (an overflowing position would
    /// panic in a test build, and Miri checks the slots for races).
    #[cfg(not(loom))]
    #[test]
    fn positions_wrap_around() {
        for cap in [2, 4] {
            let m = Arc::new(Model::starting_at(cap, u64::MAX - 5));
            let p = m.clone();
            let t = thread::spawn(move || (0..40).for_each(|v| p.send(v, false)));
            for v in 0..40 {
                assert_eq!(m.recv(false), v);
            }
            t.join().unwrap();
            assert_eq!(m.tail.load(Ordering::Relaxed), 34);
        }
    }

    /// Three producers and two consumers over a ring of four slots, from
    /// near the wrap: every message once, and each consumer sees each
    /// producer's messages in the order they were sent.
    #[cfg(not(loom))]
    #[test]
    fn mpmc_across_the_wrap() {
        const PER: u64 = 60;
        let m = Arc::new(Model::starting_at(4, u64::MAX - 100));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let m = m.clone();
                thread::spawn(move || (0..PER).for_each(|i| m.send(p << 32 | i, true)))
            })
            .collect();
        // Between them the consumers take exactly what was sent: the
        // first takes half, the second the rest.
        let take = |m: Arc<Model>, n: u64| {
            thread::spawn(move || (0..n).map(|_| m.recv(true)).collect::<Vec<u64>>())
        };
        let a = take(m.clone(), 3 * PER / 2);
        let b = take(m.clone(), 3 * PER - 3 * PER / 2);
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        producers.into_iter().for_each(|p| p.join().unwrap());
        for got in [&a, &b] {
            for p in 0..3 {
                let mine: Vec<u64> = got.iter().filter(|v| *v >> 32 == p).copied().collect();
                assert!(
                    mine.windows(2).all(|w| w[0] < w[1]),
                    "producer {p} reordered: {mine:?}"
                );
            }
        }
        let mut all: Vec<u64> = a.into_iter().chain(b).collect();
        all.sort_unstable();
        let want: Vec<u64> = (0..3)
            .flat_map(|p| (0..PER).map(move |i| p << 32 | i))
            .collect();
        assert_eq!(all, want);
    }
}
