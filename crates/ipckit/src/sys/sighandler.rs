//! Signal dispositions (`sigaction(2)`) and the one signal handler ipckit
//! installs for [`crate::signal::Handler`].
//!
//! The handler does only async-signal-safe work (`signal-safety(7)`): for
//! each subscriber that wants the signal it writes one fixed-size
//! [`Record`] of the `siginfo_t` to the subscriber's pipe, with atomics to
//! find the subscribers. No lock, no allocation, no call into code that
//! might hold one: it cannot deadlock with the code it interrupts, whatever
//! that code was doing. The subscriber reads the records on a normal thread.
//!
//! Why not `signal-hook-registry`: it never gives a signal its previous
//! disposition back (`unregister` leaves its handler installed, and a
//! signal whose default action was to terminate is then silently
//! swallowed), and restoring it behind the registry's back would leave the
//! registry believing its handler is still there. A disposition guard that
//! restores exactly what it replaced needs the `sigaction` in its own hands.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};

use super::syscall;

/// How many handlers ([`crate::signal::Handler`]) may exist at once in a
/// process, over all signals.
pub(crate) const SUBSCRIBERS: usize = 32;

/// One delivery as the handler writes it to a subscriber's pipe: plain
/// native-endian integers, read back by the same process.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Record {
    pub(crate) signo: i32,
    pub(crate) code: i32,
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) value: i32,
    /// Signals lost to this subscriber before this one (its pipe was full).
    pub(crate) lost_before: u32,
}

/// The record size: far below `PIPE_BUF`, so every write is atomic and
/// records never interleave, even written by several threads at once.
pub(crate) const RECORD: usize = std::mem::size_of::<Record>();
const _: () = assert!(RECORD <= libc::PIPE_BUF);

struct Slot {
    /// Bit `n - 1` is set for each signal `n` this subscriber wants.
    mask: AtomicU64,
    /// The write end of its pipe, -1 when the slot is free.
    fd: AtomicI32,
    /// Handlers running on this slot right now (on any thread).
    active: AtomicU32,
    /// Records that did not fit in the pipe, not yet reported.
    lost: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    mask: AtomicU64::new(0),
    fd: AtomicI32::new(-1),
    active: AtomicU32::new(0),
    lost: AtomicU32::new(0),
};

static SLOTS: [Slot; SUBSCRIBERS] = [FREE; SUBSCRIBERS];

fn bit(sig: i32) -> u64 {
    1u64.checked_shl((sig - 1) as u32).unwrap_or(0)
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: errno is thread-local; saved and restored so the interrupted
    // code never sees the handler's write(2) change it.
    let errno = unsafe { *libc::__errno_location() };
    let mut rec = Record {
        signo: sig,
        ..Record::default()
    };
    if !info.is_null() {
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t. The
        // pid, uid and value fields are read as the `kill`/`sigqueue`
        // layout, which every signal carries in some form: for others (a
        // child's exit, a fault) they are whatever the kernel put there,
        // never a pointer that is followed.
        unsafe {
            rec.code = (*info).si_code;
            rec.pid = (*info).si_pid() as u32;
            rec.uid = (*info).si_uid();
            rec.value = (*info).si_value().sival_ptr as usize as i32;
        }
    }
    for slot in &SLOTS {
        // Most slots do not want this signal (or are free): one load each.
        if slot.mask.load(SeqCst) & bit(sig) == 0 {
            continue;
        }
        slot.active.fetch_add(1, SeqCst);
        let fd = slot.fd.load(SeqCst);
        if fd >= 0 && slot.mask.load(SeqCst) & bit(sig) != 0 {
            rec.lost_before = slot.lost.swap(0, SeqCst);
            // SAFETY: `fd` is the write end of a pipe that stays open
            // while `active` is non-zero (`unsubscribe` waits for it);
            // `rec` is readable for RECORD bytes. write(2) is
            // async-signal-safe.
            let n = unsafe { libc::write(fd, (&rec as *const Record).cast(), RECORD) };
            if n != RECORD as isize {
                // Full pipe (the reader is behind): count it, report it
                // with the next record that fits.
                slot.lost.fetch_add(1 + rec.lost_before, SeqCst);
            }
        }
        slot.active.fetch_sub(1, SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Takes a free slot for `fd` (a pipe's non-blocking write end) wanting
/// the signals of `mask`; `None` when all are taken. The caller serialises
/// subscribe and unsubscribe.
pub(crate) fn subscribe(fd: RawFd, mask: u64) -> Option<usize> {
    let i = SLOTS.iter().position(|s| s.fd.load(SeqCst) < 0)?;
    let s = &SLOTS[i];
    s.lost.store(0, SeqCst);
    s.mask.store(mask, SeqCst);
    s.fd.store(fd, SeqCst);
    Some(i)
}

/// Frees slot `i`: once this returns, no handler touches its descriptor,
/// and the caller may close it.
pub(crate) fn unsubscribe(i: usize) {
    let s = &SLOTS[i];
    s.fd.store(-1, SeqCst);
    s.mask.store(0, SeqCst);
    // A handler that incremented `active` before the store above may still
    // be writing to the descriptor (on another thread: this thread's own
    // handler has always finished when we run). One that increments it
    // after sees -1. It takes a few microseconds at most.
    while s.active.load(SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// A signal's action, as `sigaction(2)` stores it.
#[derive(Clone, Copy)]
pub(crate) struct Action(libc::sigaction);

/// What an [`Action`] does with its signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Default,
    Ignore,
    /// A handler function; `ours` when it is ipckit's.
    Handler {
        restart: bool,
        ours: bool,
    },
}

impl Action {
    fn with(handler: libc::sighandler_t, flags: libc::c_int) -> Action {
        // SAFETY: all-zero is a valid sigaction (empty mask, no flags).
        let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
        a.sa_sigaction = handler;
        a.sa_flags = flags;
        Action(a)
    }

    pub(crate) fn default() -> Action {
        Action::with(libc::SIG_DFL, 0)
    }

    pub(crate) fn ignore() -> Action {
        Action::with(libc::SIG_IGN, 0)
    }

    /// ipckit's handler, with `SA_RESTART` if `restart`. Every signal is
    /// blocked while it runs, so it never interrupts itself on one thread.
    pub(crate) fn ours(restart: bool) -> Action {
        let handler = on_signal
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as libc::sighandler_t;
        let flags = libc::SA_SIGINFO | if restart { libc::SA_RESTART } else { 0 };
        let mut a = Action::with(handler, flags);
        // SAFETY: `sa_mask` is a writable sigset_t.
        unsafe { libc::sigfillset(&mut a.0.sa_mask) };
        a
    }

    pub(crate) fn kind(&self) -> Kind {
        match self.0.sa_sigaction {
            libc::SIG_DFL => Kind::Default,
            libc::SIG_IGN => Kind::Ignore,
            h => Kind::Handler {
                restart: self.0.sa_flags & libc::SA_RESTART != 0,
                ours: h == Action::ours(false).0.sa_sigaction,
            },
        }
    }
}

/// The current action for `sig`.
pub(crate) fn action(sig: i32) -> io::Result<Action> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is writable.
    syscall!(sigaction(sig, std::ptr::null(), old.as_mut_ptr()))?;
    // SAFETY: filled by sigaction.
    Ok(Action(unsafe { old.assume_init() }))
}

/// Sets the action for `sig`, returning the previous one.
pub(crate) fn set_action(sig: i32, new: &Action) -> io::Result<Action> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: `new` is a valid action (default, ignore, a handler saved by
    // an earlier call, or ours, whose handler is async-signal-safe); `old`
    // is writable.
    syscall!(sigaction(sig, &new.0, old.as_mut_ptr()))?;
    // SAFETY: filled by sigaction.
    Ok(Action(unsafe { old.assume_init() }))
}
