//! Semaphores: counters kept by the kernel (or in shared memory) that
//! processes use to take turns.
//!
//! A semaphore is a non-negative integer that, apart from its initial
//! value, is only changed by two atomic operations, named by Dijkstra:
//!
//! - **P** (*proberen*, wait, `sem_wait`): if the value is above 0, take one
//!   and go on; otherwise sleep until someone posts.
//! - **V** (*verhogen*, post, signal, `sem_post`): add one, waking a sleeper.
//!
//! Each type here has `wait`/`post` and the textbook `p`/`v` as aliases.
//! A semaphore with the value 1 is a lock that any process may release (a
//! mutex must be released by its owner: see [`crate::shm::Mutex`]); one with
//! the value N counts N free resources; one starting at 0 tells another
//! process that something happened.
//!
//! | type | kind | found by | special |
//! |---|---|---|---|
//! | [`NamedSemaphore`] | POSIX named (as `sem_open(3)`), a file `/dev/shm/sem.NAME` | name (`/something`) | simple, fast (no system call when uncontended) |
//! | [`UnnamedSemaphore`] | POSIX unnamed (as `sem_init(3)` with pshared) inside a [`crate::shm::Region`] | its offset in shared memory | the fastest: lives beside the data it guards |
//!
//! # Safe against the other process
//!
//! The two POSIX kinds live in memory that other processes write: a file
//! in `/dev/shm`, or a shared region. They are ipckit's own code on a
//! futex, over the bytes glibc uses for a `sem_t` (a 64-bit word, the value
//! in its low half and the number of sleepers in its high half, then a flag
//! word), so C programs share them with `sem_post`/`sem_wait`. glibc's own
//! functions are never called on those bytes: they abort the process when
//! another process has written values they do not expect ("The futex
//! facility returned an unexpected error code."). Here every bit pattern is
//! some count and some number of sleepers: a hostile writer can make waits
//! succeed or time out when they should not, and posts fail with "would
//! exceed SEM_VALUE_MAX", never crash this process, make it touch memory
//! outside the semaphore, or wait past a timeout. The value and the
//! sleepers share one word, so a post sees in one atomic step whether
//! anyone must be woken (no lost wake-up between two words). A named
//! semaphore's file is opened once without following links and checked on
//! the descriptor; if another process truncates it, every operation fails
//! saying so instead of dying of `SIGBUS`.
//! | [`SemaphoreSet`] | System V set (`semget(2)`) | [`crate::sysv::Key`] | N counters changed atomically together, wait-for-zero, `SEM_UNDO` (given back when a process dies) |
//!
//! # Example: one process waits for another
//!
//! ```
//! use std::time::Duration;
//! use ipckit::sem::NamedSemaphore;
//!
//! let name = format!("/ipckit-doc-sem-{}", std::process::id());
//! let ready = NamedSemaphore::builder(&name).value(0).create()?; // unlinked on drop
//! // Another process: NamedSemaphore::builder(&name).open()?.post()?  (V)
//! ready.post()?;
//! assert!(ready.wait_timeout(Duration::from_secs(1))?); // P
//! assert!(!ready.try_wait()?); // the value is 0 again
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `sem_overview(7)`, `sem_open(3)`, `sem_init(3)`, `sem_wait(3)`,
//! `sem_post(3)`, `sem_getvalue(3)`, `sem_unlink(3)`, `semget(2)`,
//! `semop(2)`, `semctl(2)`.

/// The inherent methods every POSIX semaphore type has, on its `SemWord`
/// (the expression `$raw` of `self`, which may use `?`) in the `Region`
/// `$region`, which is checked for truncation after each operation.
macro_rules! impl_posix_sem_ops {
    ($ty:ty, $self:ident => $raw:expr, $region:expr) => {
        impl $ty {
            /// Takes one from the value, sleeping while it is 0 (the P
            /// operation; `sem_wait(3)`).
            #[doc(alias = "P")]
            #[doc(alias = "sem_wait")]
            pub fn wait(&$self) -> std::io::Result<()> {
                let r = $raw.wait_until(None).map(drop);
                $region.check_intact("wait on the semaphore")?;
                r
            }

            /// P: the textbook name of [`wait`](Self::wait).
            pub fn p(&self) -> std::io::Result<()> {
                self.wait()
            }

            /// Takes one if the value is above 0, without sleeping; false if
            /// it is 0 (`sem_trywait(3)`).
            #[doc(alias = "sem_trywait")]
            pub fn try_wait(&$self) -> std::io::Result<bool> {
                let r = $raw.try_wait();
                $region.check_intact("wait on the semaphore")?;
                Ok(r)
            }

            /// Like [`wait`](Self::wait), giving up after `timeout`: false if
            /// it timed out (as `sem_clockwait(3)` on the monotonic clock, so
            /// changes to the wall clock do not matter).
            #[doc(alias = "sem_timedwait")]
            #[doc(alias = "sem_clockwait")]
            pub fn wait_timeout(&$self, timeout: std::time::Duration) -> std::io::Result<bool> {
                let r = $raw.wait_until(std::time::Instant::now().checked_add(timeout));
                $region.check_intact("wait on the semaphore")?;
                r
            }

            /// Adds one to the value, waking one waiter (the V operation;
            /// `sem_post(3)`).
            #[doc(alias = "V")]
            #[doc(alias = "sem_post")]
            #[doc(alias = "signal")]
            pub fn post(&$self) -> std::io::Result<()> {
                let r = $raw.post().map_err(explain_op);
                $region.check_intact("post the semaphore")?;
                r
            }

            /// V: the textbook name of [`post`](Self::post).
            pub fn v(&self) -> std::io::Result<()> {
                self.post()
            }

            /// The current value (`sem_getvalue(3)`); already stale when it
            /// returns if other processes use the semaphore.
            #[doc(alias = "sem_getvalue")]
            pub fn value(&$self) -> std::io::Result<u32> {
                let r = $raw.value();
                $region.check_intact("read the semaphore")?;
                Ok(r)
            }

            /// For a [`Waiter`](crate::sem::Waiter)'s helper: one P,
            /// sleeping once at most (`true`: took one).
            pub(crate) fn wait_once(&$self) -> std::io::Result<bool> {
                let r = $raw.wait_once();
                $region.check_intact("wait on the semaphore")?;
                r
            }

            /// Wakes every thread sleeping on the semaphore (they try
            /// again).
            pub(crate) fn wake_all(&$self) -> std::io::Result<()> {
                $raw.wake_all()
            }
        }
    };
}

mod posix;
mod sysv;
mod waiter;

pub use posix::{
    unlink, validate_name, NamedSemaphore, SemaphoreBuilder, UnnamedSemaphore, SEM_VALUE_MAX,
};
pub use sysv::{
    remove_set, remove_set_id, SemOp, SemaphoreSet, SemaphoreSetBuilder, SetStatus, SEMVMX,
};
pub use waiter::Waiter;
