//! Synchronisation that lives inside shared memory: futexes, a robust
//! mutex guarding typed data, and a condition variable.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Pod, Region};
use crate::sys::sync::{current_thread, futex_wait, futex_wake, thread_exited, ThreadId};

/// A futex (`futex(2)`): a 32-bit word that processes sleep on until
/// another process changes it and wakes them. The kernel keys it by the
/// physical page, so it works across processes that map the word at
/// different addresses.
///
/// The building block under every lock: check the word in user space (no
/// system call), and only sleep when the answer is "not yet".
///
/// ```
/// use std::sync::atomic::Ordering;
/// use std::time::Duration;
/// use ipckit::shm::{Futex, Memfd};
///
/// let shm = Memfd::create("flag", 4096)?;
/// let flag = Futex::new(shm.atomic_u32(0)?);
/// // Another process: flag.word().store(1, Release); flag.wake_all()?;
/// while flag.word().load(Ordering::Acquire) == 0 {
///     if !flag.wait_timeout(0, Duration::from_millis(10))? {
///         break; // nobody came: stop waiting
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Futex<'a> {
    word: &'a AtomicU32,
}

impl<'a> Futex<'a> {
    /// The futex on `word` (usually [`Region::atomic_u32`]).
    pub fn new(word: &'a AtomicU32) -> Futex<'a> {
        Futex { word }
    }

    /// The word.
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// Sleeps while the word is `expected` (`FUTEX_WAIT`), until woken.
    /// May return early (a signal, a spurious wake-up, the word was already
    /// different): check your condition and wait again.
    pub fn wait(&self, expected: u32) -> io::Result<()> {
        futex_wait(self.word, expected, None).map(drop)
    }

    /// Like [`wait`](Self::wait), for at most `timeout` (measured on the
    /// monotonic clock): false if the time ran out.
    pub fn wait_timeout(&self, expected: u32, timeout: Duration) -> io::Result<bool> {
        futex_wait(self.word, expected, Instant::now().checked_add(timeout))
    }

    /// Wakes up to `n` waiters, in any process (`FUTEX_WAKE`); returns how
    /// many were woken.
    pub fn wake(&self, n: u32) -> io::Result<usize> {
        futex_wake(self.word, n)
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) -> io::Result<usize> {
        futex_wake(self.word, u32::MAX)
    }
}

/// Marks an initialised [`Mutex`] ("mtx1").
const MUTEX_MAGIC: u32 = 0x6d74_7831;
/// Marks an initialised [`Condvar`] ("cnd1").
const CONDVAR_MAGIC: u32 = 0x636e_6431;
/// Bytes before the data: the marker, the data size, the lock word, a
/// reserved word and the owner's stamp.
const MUTEX_HEADER: usize = 24;

/// The lock word's bits: the owner's thread id, and whether anyone may be
/// sleeping on the word.
const TID_MASK: u32 = 0x3fff_ffff;
const WAITERS: u32 = 0x8000_0000;
/// The lock word of a mutex whose owner died and whose next owner gave up
/// without repairing the data: no thread has this id (Linux thread ids are
/// below 2^22).
const NOT_RECOVERABLE: u32 = TID_MASK;
/// How long a waiter sleeps before it first checks that the owner lives,
/// and the longest it sleeps between checks.
const FIRST_CHECK: Duration = Duration::from_millis(1);
const MAX_CHECK: Duration = Duration::from_millis(100);
/// How many times a locker looks again before it sleeps.
const SPINS: u32 = 100;

/// How a lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locked {
    /// Normally.
    Clean,
    /// From an owner that died holding it: the data may be half-updated.
    OwnerDied,
}

/// The lock of a [`Mutex`]: a futex word holding the owner's thread id, and
/// a stamp of the owner (id and start time) beside it. Every bit pattern
/// another process can write is a state this code handles (see
/// [`Mutex`]'s "Safe against the other process").
#[derive(Debug, Clone, Copy)]
struct RobustLock<'r> {
    word: &'r AtomicU32,
    owner: &'r AtomicU64,
}

impl RobustLock<'_> {
    fn stamp(me: ThreadId) -> u64 {
        u64::from(me.tid) << 32 | u64::from(me.start)
    }

    /// Records this thread as the owner once the word says so.
    fn taken(&self, me: ThreadId, how: Locked) -> io::Result<Option<Locked>> {
        self.owner.store(Self::stamp(me), Ordering::Relaxed);
        Ok(Some(how))
    }

    /// Whether the thread that `word` names has exited: the start time is
    /// compared too, if the stamp beside the word is that thread's.
    fn owner_exited(&self, word: u32) -> bool {
        let tid = word & TID_MASK;
        let stamp = self.owner.load(Ordering::Relaxed);
        let start = (stamp >> 32 == u64::from(tid)).then_some(stamp as u32);
        thread_exited(tid, start)
    }

    /// What the word says when this thread cannot take it: an error, or
    /// `None` to wait.
    fn refuse(word: u32, me: ThreadId) -> io::Result<()> {
        match word & TID_MASK {
            NOT_RECOVERABLE => Err(io::Error::from_raw_os_error(libc::ENOTRECOVERABLE)),
            tid if tid == me.tid => Err(io::Error::from_raw_os_error(libc::EDEADLK)),
            _ => Ok(()),
        }
    }

    /// Takes the lock if it is free, or held by a thread that has exited.
    fn try_lock(&self) -> io::Result<Option<Locked>> {
        let me = current_thread();
        let v = self.word.load(Ordering::Relaxed);
        if v & TID_MASK == 0 {
            if self
                .word
                .compare_exchange(
                    v,
                    me.tid | (v & WAITERS),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return self.taken(me, Locked::Clean);
            }
            return Ok(None);
        }
        Self::refuse(v, me)?;
        if self.owner_exited(v) && self.take_from_dead(v, me) {
            return self.taken(me, Locked::OwnerDied);
        }
        Ok(None)
    }

    fn take_from_dead(&self, v: u32, me: ThreadId) -> bool {
        self.word
            .compare_exchange(v, me.tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, sleeping while another live thread holds it; `None`
    /// if `deadline` passes first.
    fn lock(&self, deadline: Option<Instant>) -> io::Result<Option<Locked>> {
        let me = current_thread();
        if self
            .word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.taken(me, Locked::Clean);
        }
        let mut spins = 0;
        let mut check = FIRST_CHECK;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & TID_MASK == 0 {
                // Free (or a stray waiters bit): take it, keeping the bit,
                // since others may sleep on the word.
                if self
                    .word
                    .compare_exchange(v, me.tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return self.taken(me, Locked::Clean);
                }
                continue;
            }
            Self::refuse(v, me)?;
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let v = v | WAITERS;
            let until = now + check;
            let slice = deadline.map_or(until, |d| d.min(until));
            if !futex_wait(self.word, v, Some(slice))? && slice == until {
                // Held for a while: is the owner still there?
                check = (check * 2).min(MAX_CHECK);
                if self.word.load(Ordering::Relaxed) == v
                    && self.owner_exited(v)
                    && self.take_from_dead(v, me)
                {
                    return self.taken(me, Locked::OwnerDied);
                }
            }
        }
    }

    /// Releases the lock, or, for an owner that gives up on data a dead
    /// owner left inconsistent, makes it unusable; wakes a sleeper (all of
    /// them in the second case).
    fn unlock(&self, inconsistent: bool) {
        let (new, wake) = if inconsistent {
            (NOT_RECOVERABLE, u32::MAX)
        } else {
            (0, 1)
        };
        let old = self.word.swap(new, Ordering::Release);
        if old & WAITERS != 0 || inconsistent {
            let _ = futex_wake(self.word, wake);
        }
    }
}

/// The error for an object not (yet) initialised: kind `WouldBlock`, so
/// that a caller can tell "try again later" from other failures (or use
/// `init_or_open`, which waits).
fn not_initialised(what: &str, offset: usize, init: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("no {what} at offset {offset} of this region: {init} has not run there (yet)"),
    )
}

/// How a shared object came to be in `init_or_open`: made by this call,
/// or found made by another process.
#[derive(Debug)]
pub enum Init<T> {
    /// This call initialised it.
    Created(T),
    /// Another process had (or was just finishing).
    Opened(T),
}

impl<T> Init<T> {
    /// Whether this call initialised the object.
    pub fn created(&self) -> bool {
        matches!(self, Init::Created(_))
    }

    /// The object, however it came to be.
    pub fn into_inner(self) -> T {
        match self {
            Init::Created(t) | Init::Opened(t) => t,
        }
    }
}

/// The marker of an object one process is initialising right now.
const INITIALISING: u32 = 0x696e_6974;

/// Decides who initialises the object whose marker is `magic` (`done`
/// once ready): `Ok(true)` for the one caller that moved it from zero (a
/// fresh region) to [`INITIALISING`], `Ok(false)` once it is `done`,
/// waiting up to `timeout` for an initialisation under way. Anything else
/// there is an error: not this kind of object.
fn claim_init(
    magic: &AtomicU32,
    done: u32,
    what: &str,
    offset: usize,
    timeout: Duration,
) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        match magic.compare_exchange(0, INITIALISING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(true),
            Err(v) if v == done => return Ok(false),
            Err(INITIALISING) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another process has been initialising the {what} at offset \
                             {offset} for over {timeout:?}: it may have died half-way \
                             ({what} init overwrites it)"
                        ),
                    ));
                }
                let _ = futex_wait(
                    magic,
                    INITIALISING,
                    Some(deadline.min(now + Duration::from_millis(10))),
                );
            }
            Err(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "offset {offset} of this region holds something other than a {what} \
                         (marker {other:#x}); init_or_open needs zeroed memory or a {what}"
                    ),
                ))
            }
        }
    }
}

/// Marks an object `done` after `claim_init` and wakes those waiting.
fn finish_init(magic: &AtomicU32, done: u32) {
    magic.store(done, Ordering::Release);
    let _ = futex_wake(magic, u32::MAX);
}

fn fits(region: &Region, what: &str, offset: usize, size: usize) -> io::Result<()> {
    if offset
        .checked_add(size)
        .is_none_or(|end| end > region.len())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} takes {size} bytes: they do not fit at offset {offset} of the {}-byte \
                 region",
                region.len()
            ),
        ));
    }
    Ok(())
}

/// A mutual-exclusion lock between processes, guarding a `T` that lives
/// beside it in shared memory, and robust: when a process dies holding it,
/// the next one to lock learns so ([`LockError::OwnerDied`]) and can repair
/// the data, instead of everyone waiting forever.
///
/// No system call when uncontended: one compare-and-swap on a futex word
/// that holds the owner's thread id (`futex(2)`). A locker that finds the
/// lock held spins briefly, then sleeps on the word, waking now and then
/// (after 1 ms, then at most every 100 ms) to check that the owner still
/// lives; when the owner has exited, the locker takes the lock over and
/// gets [`LockError::OwnerDied`]. A blocked locker learns of an owner's
/// death within about 100 ms.
///
/// Layout: [`Mutex::SIZE`] bytes at an offset that is a multiple of 8 and
/// of `T`'s alignment: a marker, `T`'s size, the lock word, a reserved
/// word, the owner's stamp (thread id and start time), then `T`. One
/// process calls [`init`](Self::init) once; the others
/// [`open`](Self::open) it at the same offset and with the same `T`.
///
/// # Safe against the other process
/// Any process that maps the region can write any bytes over the mutex.
/// Nothing in it is a pointer or a glibc object (glibc's robust mutexes
/// keep list pointers inside the mutex, which the kernel and glibc write
/// through: a peer could crash the owner or make it write where the peer
/// chose). Here every bit pattern is a state this code handles without
/// undefined behaviour: zero is free; a thread id is a holder; an id of a
/// thread that does not exist (or is a zombie, or started after the stamp
/// beside the word says) is a dead holder, so the next locker gets
/// [`LockError::OwnerDied`]; the id of a live thread is a holder to wait
/// for (a timed lock times out); this thread's own id is "already held by
/// this thread"; the top bit only causes a wake-up call. The owner's id
/// is checked with `kill(2)` (signal 0, which sends nothing) and
/// `/proc/TID/stat`. A hostile writer can therefore deny the lock, or
/// declare its owner dead, as it could by writing the data itself; it
/// cannot crash, hang past a timeout, or corrupt this process.
///
/// Processes that share a mutex must be in the same PID namespace: thread
/// ids are compared as this process sees them.
///
/// ```
/// use ipckit::shm::{Memfd, Mutex};
///
/// let shm = Memfd::create("counter", 4096)?; // shared with other processes
/// let counter = Mutex::init(&shm, 0, 0u64)?;
/// match counter.lock() {
///     Ok(mut n) => n.update(|n| *n += 1),
///     Err(ipckit::shm::LockError::OwnerDied(mut n)) => {
///         // A process died in the middle of an update: repair, then say so.
///         n.set(0);
///         n.make_consistent()?;
///     }
///     Err(e) => return Err(e.into()),
/// }
/// assert_eq!(counter.lock().map_err(std::io::Error::from)?.get(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Access to the data
/// The guard copies `T` in and out ([`MutexGuard::get`], [`set`],
/// [`update`]) rather than handing out `&mut T`: the lock only keeps out
/// processes that take it, and a reference must not be changed behind
/// Rust's back. [`MutexGuard::data_mut`] gives the reference, `unsafe`, for
/// large data and callers who know every process uses the lock.
///
/// [`set`]: MutexGuard::set
/// [`update`]: MutexGuard::update
pub struct Mutex<'r, T> {
    region: &'r Region,
    raw: RobustLock<'r>,
    data: usize,
    _t: PhantomData<T>,
}

impl<T> fmt::Debug for Mutex<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mutex<{}> (data at offset {})",
            std::any::type_name::<T>(),
            self.data
        )
    }
}

impl<'r, T: Pod> Mutex<'r, T> {
    /// Where `T` starts, from the mutex's offset.
    const DATA: usize = MUTEX_HEADER.next_multiple_of(align_of::<T>());

    /// The bytes a `Mutex<T>` takes in a region.
    pub const SIZE: usize = Self::DATA + size_of::<T>();

    fn slot(region: &'r Region, offset: usize) -> io::Result<(&'r AtomicU32, &'r AtomicU32, Self)> {
        let what = format!("a Mutex<{}>", std::any::type_name::<T>());
        fits(region, &what, offset, Self::SIZE)?;
        let align = align_of::<T>().max(8);
        let magic = region.place::<AtomicU32>(&what, offset, align)?;
        let size = region.place::<AtomicU32>(&what, offset + 4, 4)?;
        let raw = RobustLock {
            word: region.place::<AtomicU32>(&what, offset + 8, 4)?,
            owner: region.place::<AtomicU64>(&what, offset + 16, 8)?,
        };
        Ok((
            magic,
            size,
            Mutex {
                region,
                raw,
                data: offset + Self::DATA,
                _t: PhantomData,
            },
        ))
    }

    /// Initialises a mutex holding `value` at `offset` of `region`. Call it
    /// once, in one process, before any process opens it; initialising one
    /// that processes are using breaks it for them.
    pub fn init(region: &'r Region, offset: usize, value: T) -> io::Result<Self> {
        let (magic, size, m) = Self::slot(region, offset)?;
        magic.store(0, Ordering::Relaxed);
        m.fill(size, value);
        magic.store(MUTEX_MAGIC, Ordering::Release);
        Ok(m)
    }

    fn fill(&self, size: &AtomicU32, value: T) {
        self.region.map.write(self.data, value);
        self.raw.word.store(0, Ordering::Relaxed);
        self.raw.owner.store(0, Ordering::Relaxed);
        size.store(size_of::<T>() as u32, Ordering::Relaxed);
    }

    /// Initialises the mutex if no process has, or opens it if one has,
    /// race-free between processes that call this at once on a fresh
    /// (zeroed) region: exactly one gets [`Init::Created`] and puts
    /// `value` in; the others wait (up to `timeout`) for it to finish.
    pub fn init_or_open(
        region: &'r Region,
        offset: usize,
        value: T,
        timeout: Duration,
    ) -> io::Result<Init<Self>> {
        let (magic, size, m) = Self::slot(region, offset)?;
        if claim_init(magic, MUTEX_MAGIC, "Mutex", offset, timeout)? {
            m.fill(size, value);
            finish_init(magic, MUTEX_MAGIC);
            return Ok(Init::Created(m));
        }
        Self::open(region, offset).map(Init::Opened)
    }

    /// The mutex another process initialised at `offset` of `region`, with
    /// the same `T` (its size is checked).
    pub fn open(region: &'r Region, offset: usize) -> io::Result<Self> {
        let (magic, size, m) = Self::slot(region, offset)?;
        if magic.load(Ordering::Acquire) != MUTEX_MAGIC {
            return Err(not_initialised("mutex", offset, "Mutex::init"));
        }
        let theirs = size.load(Ordering::Relaxed) as usize;
        if theirs != size_of::<T>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the mutex at offset {offset} guards {theirs} bytes, not a {} of {} bytes",
                    std::any::type_name::<T>(),
                    size_of::<T>()
                ),
            ));
        }
        Ok(m)
    }

    fn outcome(
        &self,
        r: io::Result<Option<Locked>>,
    ) -> Result<Option<MutexGuard<'_, T>>, LockError<'_, T>> {
        acquired(self.region, self.raw, self.data, r)
    }

    /// Takes the lock, sleeping while another thread or process holds it.
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.outcome(self.raw.lock(None))
            .map(|g| g.expect("a lock without a deadline does not time out"))
    }

    /// Takes the lock if it is free; `Ok(None)` if it is held.
    pub fn try_lock(&self) -> Result<Option<MutexGuard<'_, T>>, LockError<'_, T>> {
        self.outcome(self.raw.try_lock())
    }

    /// Takes the lock, waiting at most `timeout`; `Ok(None)` if it is still
    /// held then.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<MutexGuard<'_, T>>, LockError<'_, T>> {
        self.outcome(self.raw.lock(Instant::now().checked_add(timeout)))
    }
}

/// The result of a lock attempt on `raw`: a guard, `None` if the lock is
/// held or the time ran out, or why not.
fn acquired<'a, T>(
    region: &'a Region,
    raw: RobustLock<'a>,
    data: usize,
    r: io::Result<Option<Locked>>,
) -> Result<Option<MutexGuard<'a, T>>, LockError<'a, T>> {
    let how = match r {
        Ok(Some(how)) => how,
        Ok(None) => return Ok(None),
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOTRECOVERABLE) => Err(LockError::NotRecoverable),
                Some(libc::EDEADLK) => Err(LockError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "this thread already holds the mutex (locking it again would deadlock)",
                ))),
                _ => Err(LockError::Io(e)),
            }
        }
    };
    let g = MutexGuard {
        region,
        raw,
        data,
        inconsistent: how == Locked::OwnerDied,
        _not_send: PhantomData,
    };
    if let Err(e) = region.check_intact("lock the mutex") {
        drop(g);
        return Err(LockError::Io(e));
    }
    match how {
        Locked::Clean => Ok(Some(g)),
        Locked::OwnerDied => Err(LockError::OwnerDied(g)),
    }
}

/// The lock on a [`Mutex`], held until dropped. Not `Send`: a thread
/// holds the lock, and only it may release it.
pub struct MutexGuard<'a, T> {
    region: &'a Region,
    raw: RobustLock<'a>,
    data: usize,
    inconsistent: bool,
    _not_send: PhantomData<*const T>,
}

impl<T> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MutexGuard<{}>{}",
            std::any::type_name::<T>(),
            if self.inconsistent {
                " (previous owner died)"
            } else {
                ""
            }
        )
    }
}

impl<T: Pod> MutexGuard<'_, T> {
    /// Copies the data out.
    pub fn get(&self) -> T {
        self.region.map.read(self.data)
    }

    /// Copies `value` in.
    pub fn set(&mut self, value: T) {
        self.region.map.write(self.data, value);
    }

    /// Copies the data out, lets `f` change it, copies it back; returns
    /// what `f` returns.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut v = self.get();
        let r = f(&mut v);
        self.set(v);
        r
    }

    /// The data in place, without copies.
    ///
    /// # Safety
    /// Every process that maps the region must touch these bytes only while
    /// holding this mutex (and this process not through [`Region`] either)
    /// while the reference lives.
    pub unsafe fn data_mut(&mut self) -> &mut T {
        // SAFETY: the caller rules out other accesses; `init`/`open`
        // checked fit, alignment and that the region is writable.
        unsafe { &mut self.region.map.get_mut::<T>(self.data, 1)[0] }
    }

    /// Whether the previous owner died holding the lock and the data has
    /// not been declared repaired yet.
    pub fn is_inconsistent(&self) -> bool {
        self.inconsistent
    }

    /// Declares the data repaired after [`LockError::OwnerDied`] (as
    /// `pthread_mutex_consistent(3)` does). Without it, unlocking leaves the
    /// mutex permanently unusable ([`LockError::NotRecoverable`] for every
    /// later lock), so that no one goes on with broken data.
    pub fn make_consistent(&mut self) -> io::Result<()> {
        self.inconsistent = false;
        Ok(())
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.raw.unlock(self.inconsistent);
    }
}

/// Why a [`Mutex`] could not simply be locked.
pub enum LockError<'a, T> {
    /// The previous owner died holding the lock (as `EOWNERDEAD`). The lock is
    /// now yours, in this guard; the data may be half-updated. Repair it
    /// and call [`MutexGuard::make_consistent`], or drop the guard to make
    /// the mutex unusable for everyone.
    OwnerDied(MutexGuard<'a, T>),
    /// An owner died and the next one dropped the lock without repairing
    /// the data (as `ENOTRECOVERABLE`): the mutex cannot be locked again until
    /// it is initialised anew.
    NotRecoverable,
    /// Any other failure, such as this thread already holding the lock.
    Io(io::Error),
}

impl<T> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(g) => f.debug_tuple("OwnerDied").field(g).finish(),
            LockError::NotRecoverable => f.write_str("NotRecoverable"),
            LockError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous owner of the mutex died holding it: the data may be inconsistent",
            ),
            LockError::NotRecoverable => f.write_str(
                "the mutex is unusable: an owner died and the data was never declared repaired \
                 (initialise it anew)",
            ),
            LockError::Io(e) => write!(f, "cannot lock the mutex: {e}"),
        }
    }
}

impl<T> std::error::Error for LockError<'_, T> {}

impl<T> From<LockError<'_, T>> for io::Error {
    /// Turns the error into an `io::Error`. For `OwnerDied` this drops the
    /// guard unrepaired, so the mutex becomes unusable: no process goes on
    /// with data a dead owner may have left half-written.
    fn from(e: LockError<'_, T>) -> io::Error {
        match e {
            LockError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// A condition variable between processes, in shared memory: wait until
/// another process changes the data behind a [`Mutex`] and notifies.
///
/// A sequence number on a futex: `wait` reads it while holding the lock,
/// unlocks, and sleeps unless it changed; `notify_*` increments it and
/// wakes. Only a count of sleepers is kept beside it (to skip the wake-up
/// call when nobody sleeps), so a waiter that dies leaves nothing that
/// matters behind. Both words are plain integers: whatever another process
/// writes there causes at worst a spurious wake-up or a missed one (a
/// timed wait then times out), never a crash. As with every condition variable, wake-ups may be
/// spurious: wait in a loop on your condition.
///
/// Layout: [`Condvar::SIZE`] bytes at an offset that is a multiple of 8.
///
/// ```
/// use std::time::Duration;
/// use ipckit::shm::{Condvar, Memfd, Mutex};
///
/// let shm = Memfd::create("jobs", 4096)?;
/// let jobs = Mutex::init(&shm, 0, 0u32)?;
/// let more = Condvar::init(&shm, 64)?;
/// // Another process: jobs.lock()?.update(|n| *n += 1); more.notify_one()?;
/// let mut g = jobs.lock().map_err(std::io::Error::from)?;
/// while g.get() == 0 {
///     let (next, timed_out) = more
///         .wait_timeout(g, Duration::from_millis(10))
///         .map_err(std::io::Error::from)?;
///     g = next;
///     if timed_out {
///         break;
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Condvar<'r> {
    seq: &'r AtomicU32,
    waiters: &'r AtomicU32,
}

impl<'r> Condvar<'r> {
    /// The bytes a condition variable takes in a region.
    pub const SIZE: usize = 16;

    fn slot(region: &'r Region, offset: usize) -> io::Result<(&'r AtomicU32, Self)> {
        fits(region, "a condition variable", offset, Self::SIZE)?;
        let at = |o: usize, align| region.place::<AtomicU32>("a condition variable", o, align);
        Ok((
            at(offset, 8)?,
            Condvar {
                seq: at(offset + 4, 4)?,
                waiters: at(offset + 8, 4)?,
            },
        ))
    }

    /// Initialises a condition variable at `offset` of `region` (once, in
    /// one process, before others open it).
    pub fn init(region: &'r Region, offset: usize) -> io::Result<Self> {
        let (magic, c) = Self::slot(region, offset)?;
        c.seq.store(0, Ordering::Relaxed);
        c.waiters.store(0, Ordering::Relaxed);
        magic.store(CONDVAR_MAGIC, Ordering::Release);
        Ok(c)
    }

    /// Initialises the condition variable if no process has, or opens it,
    /// race-free like [`Mutex::init_or_open`].
    pub fn init_or_open(
        region: &'r Region,
        offset: usize,
        timeout: Duration,
    ) -> io::Result<Init<Self>> {
        let (magic, c) = Self::slot(region, offset)?;
        if claim_init(magic, CONDVAR_MAGIC, "Condvar", offset, timeout)? {
            c.seq.store(0, Ordering::Relaxed);
            c.waiters.store(0, Ordering::Relaxed);
            finish_init(magic, CONDVAR_MAGIC);
            return Ok(Init::Created(c));
        }
        Self::open(region, offset).map(Init::Opened)
    }

    /// The condition variable another process initialised at `offset`.
    pub fn open(region: &'r Region, offset: usize) -> io::Result<Self> {
        let (magic, c) = Self::slot(region, offset)?;
        if magic.load(Ordering::Acquire) != CONDVAR_MAGIC {
            return Err(not_initialised(
                "condition variable",
                offset,
                "Condvar::init",
            ));
        }
        Ok(c)
    }

    /// Unlocks `guard`'s mutex, sleeps until notified (or spuriously), and
    /// locks it again. The relock reports a dead owner like
    /// [`Mutex::lock`]. Repair and [`make_consistent`] an inconsistent
    /// guard before waiting with it: the unlock here would otherwise make
    /// the mutex unusable.
    ///
    /// [`make_consistent`]: MutexGuard::make_consistent
    pub fn wait<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<MutexGuard<'a, T>, LockError<'a, T>> {
        self.wait_until(guard, None).map(|(g, _)| g)
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; the flag is true
    /// if the time ran out.
    pub fn wait_timeout<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(MutexGuard<'a, T>, bool), LockError<'a, T>> {
        self.wait_until(guard, Instant::now().checked_add(timeout))
    }

    fn wait_until<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> Result<(MutexGuard<'a, T>, bool), LockError<'a, T>> {
        let seq = self.seq.load(Ordering::Acquire);
        let (region, raw, data) = (guard.region, guard.raw, guard.data);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        drop(guard);
        let woke = futex_wait(self.seq, seq, deadline);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        let g = acquired(region, raw, data, raw.lock(None))?
            .expect("a lock without a deadline does not time out");
        match woke {
            Ok(woke) => Ok((g, !woke)),
            Err(e) => Err(LockError::Io(e)),
        }
    }

    fn notify(&self, n: u32) -> io::Result<()> {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex_wake(self.seq, n)?;
        }
        Ok(())
    }

    /// Wakes one waiting thread or process.
    pub fn notify_one(&self) -> io::Result<()> {
        self.notify(1)
    }

    /// Wakes every waiting thread and process.
    pub fn notify_all(&self) -> io::Result<()> {
        self.notify(u32::MAX)
    }
}
