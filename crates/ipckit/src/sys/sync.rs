//! Process-shared synchronisation: futexes (`futex(2)`) and robust,
//! process-shared pthread mutexes (`pthread_mutexattr_setrobust(3)`,
//! `pthread_mutexattr_setpshared(3)`).

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use super::monotonic_at;

extern "C" {
    // glibc 2.30 and later; not (yet) declared by the libc crate.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// `FUTEX_WAIT_BITSET` (absolute `CLOCK_MONOTONIC` deadline) on a word that
/// may be shared with other processes (no `FUTEX_PRIVATE_FLAG`): sleeps
/// while `*word == expected`. Returns false if the deadline passed; true
/// when woken, when the word no longer held `expected`, or on a signal
/// (callers recheck their condition in all three cases).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let at = deadline.map(monotonic_at);
    let atp = at
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the whole call; `atp` is
    // null or a valid timespec; the unused uaddr2 is null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            atp,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(true),
        Some(libc::ETIMEDOUT) => Ok(false),
        _ => Err(e),
    }
}

/// `FUTEX_WAKE`: wakes up to `n` waiters on `word`, in any process; returns
/// how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> io::Result<usize> {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE reads nothing else.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// A `pthread_mutex_t` in shared memory, initialised robust, process-shared
/// and error-checking by [`RawMutex::init`].
#[repr(transparent)]
pub(crate) struct RawMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: the pthread_mutex_* functions are thread-safe; this type is only
// accessed through them.
unsafe impl Sync for RawMutex {}

// SAFETY: a glibc pthread_mutex_t is integers (lock word, owner tid,
// counters, kind) and the robust-list links, which are only followed by the
// owning thread and by the kernel in the owner's address space. Garbage
// written by another process can make a lock fail (EINVAL) or misbehave for
// the processes sharing it, but glibc validates the kind before use.
unsafe impl super::mman::InPlace for RawMutex {}

/// How a lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Normally.
    Clean,
    /// The previous owner died holding it (`EOWNERDEAD`): the data may be
    /// half-updated; `consistent` must be called before unlocking, or the
    /// mutex becomes unusable (`ENOTRECOVERABLE`).
    OwnerDied,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

fn locked(r: libc::c_int) -> io::Result<Locked> {
    match r {
        0 => Ok(Locked::Clean),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl RawMutex {
    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }

    /// `pthread_mutex_init` with the robust, process-shared and
    /// error-checking attributes.
    pub(crate) fn init(&self) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable; init fills it.
        check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let attr_ptr = attr.as_mut_ptr();
        let r = (|| {
            // SAFETY: `attr` was initialised above.
            check(unsafe { libc::pthread_mutexattr_setpshared(attr_ptr, 1) })?;
            // SAFETY: as above.
            check(unsafe {
                libc::pthread_mutexattr_setrobust(attr_ptr, libc::PTHREAD_MUTEX_ROBUST)
            })?;
            // SAFETY: as above.
            check(unsafe {
                libc::pthread_mutexattr_settype(attr_ptr, libc::PTHREAD_MUTEX_ERRORCHECK)
            })?;
            // SAFETY: the mutex lies in mapped memory (type invariant) and is
            // initialised before anyone uses it (the caller's protocol).
            check(unsafe { libc::pthread_mutex_init(self.ptr(), attr_ptr) })
        })();
        // SAFETY: `attr` was initialised above and is not used again.
        unsafe { libc::pthread_mutexattr_destroy(attr_ptr) };
        r
    }

    /// `pthread_mutex_lock`, or `pthread_mutex_clocklock` on
    /// `CLOCK_MONOTONIC` with a deadline (`ETIMEDOUT` then).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> io::Result<Locked> {
        match deadline {
            // SAFETY: a mapped mutex (type invariant).
            None => locked(unsafe { libc::pthread_mutex_lock(self.ptr()) }),
            Some(d) => {
                let at = monotonic_at(d);
                // SAFETY: a mapped mutex (type invariant); `at` is valid.
                locked(unsafe { pthread_mutex_clocklock(self.ptr(), libc::CLOCK_MONOTONIC, &at) })
            }
        }
    }

    /// `pthread_mutex_trylock` (`EBUSY` when held).
    pub(crate) fn try_lock(&self) -> io::Result<Locked> {
        // SAFETY: a mapped mutex (type invariant).
        locked(unsafe { libc::pthread_mutex_trylock(self.ptr()) })
    }

    /// `pthread_mutex_consistent`: the data was repaired after `OwnerDied`.
    pub(crate) fn consistent(&self) -> io::Result<()> {
        // SAFETY: a mapped mutex (type invariant), held by this thread.
        check(unsafe { libc::pthread_mutex_consistent(self.ptr()) })
    }

    /// `pthread_mutex_unlock`.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: a mapped mutex (type invariant), held by this thread.
        check(unsafe { libc::pthread_mutex_unlock(self.ptr()) })
    }
}
