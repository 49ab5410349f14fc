//! The `SIGBUS` guard: a process that shrinks a shared file (POSIX shared
//! memory, an unsealed memfd, a mapped file) makes every other process
//! that touches the vanished pages die with `SIGBUS`. The guard turns that
//! into an error, as libwayland-server does for its clients' memory pools.
//!
//! Each guarded mapping is registered in a lock-free table. A `SIGBUS`
//! handler, installed once, looks the faulting address up: inside a
//! registered mapping, it maps anonymous zero-filled memory over the whole
//! mapping (`mmap(2)` with `MAP_FIXED`, which the kernel does atomically),
//! marks the mapping truncated and returns, so the access completes and
//! reads zeros; the code that made it then sees the mark and reports the
//! truncation. A fault anywhere else, or a `SIGBUS` sent with `kill`, goes
//! to the handler that was installed before, or kills the process as it
//! would have without the guard.
//!
//! A program that installs its own `SIGBUS` handler after ipckit's replaces
//! the guard (and then dies as before on a truncation).

use std::cell::UnsafeCell;
use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// One guarded mapping: `start` is 0 when the slot is free and 1 while it
/// is being filled in.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    truncated: AtomicBool,
}

const FREE: usize = 0;
const FILLING: usize = 1;
const SLOTS_PER_CHUNK: usize = 256;
const CHUNKS: usize = 256;

type Chunk = [Slot; SLOTS_PER_CHUNK];

/// Chunks of slots, allocated as needed and never freed (so the handler
/// can read them at any time): up to 65 536 guarded mappings at once.
static TABLE: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS];

/// The disposition `SIGBUS` had before the guard, for faults that are not
/// ours. Written once, before the handler is installed.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once inside `INSTALL` before the handler that reads it
// is installed, read-only afterwards.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::zeroed()));
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn chunk(entry: &AtomicPtr<Chunk>) -> Option<&'static Chunk> {
    let p = entry.load(Ordering::Acquire);
    // SAFETY: a non-null entry points to a leaked, never-freed chunk.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// A guarded mapping's registration; unregistered on drop (before the
/// caller unmaps).
pub(crate) struct Guard {
    slot: &'static Slot,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Guard({} bytes at {:#x}{})",
            self.slot.len.load(Ordering::Relaxed),
            self.slot.start.load(Ordering::Relaxed),
            if self.truncated() { ", truncated" } else { "" }
        )
    }
}

impl Guard {
    /// Guards `len` bytes at `start` (a mapping this process made).
    pub(crate) fn register(start: *mut u8, len: usize) -> io::Result<Guard> {
        install()?;
        for entry in &TABLE {
            let c = match chunk(entry) {
                Some(c) => c,
                None => {
                    let fresh: Box<Chunk> = Box::new(std::array::from_fn(|_| Slot {
                        start: AtomicUsize::new(FREE),
                        len: AtomicUsize::new(0),
                        truncated: AtomicBool::new(false),
                    }));
                    let fresh = Box::into_raw(fresh);
                    match entry.compare_exchange(
                        ptr::null_mut(),
                        fresh,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {}
                        // SAFETY: ours, never shared: another thread won.
                        Err(_) => drop(unsafe { Box::from_raw(fresh) }),
                    }
                    chunk(entry).expect("a chunk was just stored")
                }
            };
            for slot in c {
                if slot
                    .start
                    .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    slot.len.store(len, Ordering::Relaxed);
                    slot.truncated.store(false, Ordering::Relaxed);
                    slot.start.store(start as usize, Ordering::Release);
                    return Ok(Guard { slot });
                }
            }
        }
        Err(io::Error::other(
            "more than 65536 shared mappings at once: cannot guard another against truncation",
        ))
    }

    /// Whether the file behind the mapping shrank under it: the pages
    /// that were touched since read zeros, and the mapping no longer
    /// shares anything with other processes.
    pub(crate) fn truncated(&self) -> bool {
        self.slot.truncated.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.start.store(FREE, Ordering::Release);
    }
}

fn install() -> io::Result<()> {
    INSTALL.call_once(|| {
        let mut action = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: `action` is zeroed plain data; the fields set are the
        // handler (with the SA_SIGINFO signature) and its flags; the mask
        // is initialised by sigemptyset. PREVIOUS is written here, before
        // the handler that reads it can run, and never again.
        let ok = unsafe {
            let a = action.as_mut_ptr();
            (*a).sa_sigaction = on_sigbus as *const () as usize;
            (*a).sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut (*a).sa_mask);
            libc::sigaction(libc::SIGBUS, a, (*PREVIOUS.0.get()).as_mut_ptr()) == 0
        };
        INSTALLED.store(ok, Ordering::Release);
    });
    if INSTALLED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(io::Error::other(
            "cannot install the SIGBUS handler that guards shared memory",
        ))
    }
}

/// The `SIGBUS` handler. Async-signal-safe: atomics, `mmap`, `sigaction`
/// and the previous handler only; errno is preserved.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; saved and restored around our calls.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let handled = code > 0 && repair(addr);
    if !handled {
        // SAFETY: PREVIOUS was written before this handler was installed.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Maps zeros over the guarded mapping that holds `addr`, if any.
fn repair(addr: usize) -> bool {
    for entry in &TABLE {
        let Some(c) = chunk(entry) else {
            return false;
        };
        for slot in c {
            let start = slot.start.load(Ordering::Acquire);
            if start <= FILLING {
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed);
            if addr < start || addr - start >= len {
                continue;
            }
            // SAFETY: the range is a mapping this process made and still
            // has (the code touching it borrows it, so it cannot be
            // unmapped meanwhile); MAP_FIXED replaces it in one step with
            // private zero-filled pages, which every access can complete
            // on.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return false;
            }
            slot.truncated.store(true, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Hands a `SIGBUS` that is not ours to the previous disposition: its
/// handler, or the default action (the fault repeats on return and kills
/// the process, as it would have without the guard).
///
/// # Safety
/// Called from the signal handler with its arguments, after `install`.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written by `install` before this handler ran.
    let prev = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        let mut dfl = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; for a
        // signal sent with kill, raise it again now that it kills.
        unsafe {
            libc::sigaction(sig, dfl.as_mut_ptr(), ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(sig);
            }
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was installed with this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
