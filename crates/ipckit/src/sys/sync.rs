//! Process-shared synchronisation: futexes (`futex(2)`), the calling
//! thread's identity, and whether another thread still lives.
//!
//! Nothing here keeps a pointer or a glibc object in shared memory: the
//! words the futex calls take are plain integers that another process may
//! set to anything, and the kernel only compares them.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Once;
use std::time::Instant;

use super::monotonic_at;

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
    futex_wait_at(word.as_ptr(), expected, deadline)
}

/// [`futex_wait`] on the low 32 bits of a 64-bit word (the value half of a
/// semaphore that keeps its waiter count in the high half, as glibc's
/// `sem_t` does).
pub(crate) fn futex_wait_low(
    word: &AtomicU64,
    expected: u32,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    futex_wait_at(low_half(word), expected, deadline)
}

/// [`futex_wake`] on the low 32 bits of a 64-bit word.
pub(crate) fn futex_wake_low(word: &AtomicU64, n: u32) -> io::Result<usize> {
    futex_wake_at(low_half(word), n)
}

/// The address of the less significant half of `word`: the kernel reads
/// it; Rust code never makes a reference to it.
fn low_half(word: &AtomicU64) -> *mut u32 {
    let offset = if cfg!(target_endian = "little") { 0 } else { 1 };
    word.as_ptr().cast::<u32>().wrapping_add(offset)
}

fn futex_wait_at(word: *mut u32, expected: u32, deadline: Option<Instant>) -> io::Result<bool> {
    let at = deadline.map(monotonic_at);
    let atp = at
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` points to an aligned u32 inside an atomic the caller
    // borrows for the whole call (the kernel only reads it); `atp` is null
    // or a valid timespec; the unused uaddr2 is null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
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
    futex_wake_at(word.as_ptr(), n)
}

fn futex_wake_at(word: *mut u32, n: u32) -> io::Result<usize> {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: `word` points to an aligned u32 inside an atomic the caller
    // borrows; FUTEX_WAKE only uses its address as a key.
    let r = unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, n) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// The calling thread: its id (`gettid(2)`) and a stamp of its start time,
/// so that a thread id the kernel has given to a new thread since is not
/// taken for the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadId {
    pub tid: u32,
    pub start: u32,
}

thread_local! {
    static ME: Cell<Option<ThreadId>> = const { Cell::new(None) };
}

/// After `fork`, the child's only thread has a new id: forget the cached
/// one.
extern "C" fn forget_after_fork() {
    ME.with(|me| me.set(None));
}

/// The calling thread's id and start stamp, cached per thread (a fork
/// clears the cache in the child).
pub(crate) fn current_thread() -> ThreadId {
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only resets a thread-local
        // cell, which is async-signal-safe and valid in the forked child.
        unsafe { libc::pthread_atfork(None, None, Some(forget_after_fork)) };
    });
    ME.with(|me| {
        if let Some(id) = me.get() {
            return id;
        }
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        let start = thread_stat(tid).map_or(0, |s| s.start);
        let id = ThreadId { tid, start };
        me.set(Some(id));
        id
    })
}

/// The start time of process (or thread) `pid`, in clock ticks since boot
/// truncated to 32 bits, as [`thread_exited`] compares it; 0 if unknown.
pub(crate) fn start_time(pid: u32) -> u32 {
    thread_stat(pid).map_or(0, |s| s.start)
}

/// What `/proc/TID/stat` says of a thread.
struct ThreadStat {
    /// Exited (a zombie, or dead and not yet reaped).
    exited: bool,
    /// Its start time in clock ticks since boot, truncated to 32 bits.
    start: u32,
}

fn thread_stat(tid: u32) -> Option<ThreadStat> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and ')': skip past the
    // last ')'. Field 3 is the state, field 22 the start time.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let start: u64 = fields.nth(18)?.parse().ok()?;
    Some(ThreadStat {
        exited: matches!(state, "Z" | "X" | "x"),
        start: start as u32,
    })
}

/// Whether thread `tid` has certainly exited: no such thread (`kill(2)`
/// with signal 0 says `ESRCH`), or it is a zombie, or a thread with a
/// different start time holds the id now (when `start` is known).
///
/// Never claims a live thread exited: where the answer cannot be read
/// (`/proc` hidden, another user's thread), the thread counts as alive.
/// Thread ids are those of this process's PID namespace.
pub(crate) fn thread_exited(tid: u32, start: Option<u32>) -> bool {
    let Ok(pid) = libc::pid_t::try_from(tid) else {
        return true; // no thread has such an id
    };
    if pid <= 0 {
        return false; // not a thread id; kill would reach a group
    }
    // SAFETY: signal 0 sends nothing; it only checks that `pid` exists.
    if unsafe { libc::kill(pid, 0) } == -1
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return true;
    }
    match thread_stat(tid) {
        Some(s) => s.exited || start.is_some_and(|st| st != 0 && s.start != 0 && st != s.start),
        None => false,
    }
}
