//! The kernel boundary.
//!
//! Every raw system call ipckit makes lives below this module, and so does
//! every `unsafe` block except the few that must map memory. The rest of the
//! crate calls these small, safe functions and never sees a raw pointer.
//!
//! Conventions (after rustix and mio):
//! - [`syscall!`] turns "call libc, check for -1, read errno" into one line and
//!   retries `EINTR` in that one place.
//! - Functions return [`std::io::Result`]; errno values are mapped to
//!   ipckit's message errors only in [`crate::error`].

pub(crate) mod alarm;
pub(crate) mod epoll;
pub(crate) mod fd;
pub(crate) mod mman;
pub(crate) mod mq;
pub(crate) mod msg;
pub(crate) mod process;
pub(crate) mod raw;
pub(crate) mod sem;
pub(crate) mod sigbus;
pub(crate) mod sighandler;
pub(crate) mod signal;
pub(crate) mod socket;
pub(crate) mod sync;

/// Calls a libc function, turns `-1` into the thread's `errno` and retries
/// while the call was interrupted by a signal (`EINTR`).
///
/// The caller writes the `unsafe` block's justification as a `// SAFETY:`
/// comment in front of each use: the macro itself only forwards arguments.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        loop {
            #[allow(clippy::undocumented_unsafe_blocks)]
            let res = unsafe { ::libc::$fn($($arg),*) };
            if res == -1 {
                let err = ::std::io::Error::last_os_error();
                if err.kind() == ::std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(err);
            }
            break Ok(res);
        }
    }};
}
pub(crate) use syscall;

/// Converts a path to a NUL-terminated C string, refusing interior NULs with
/// a clear error instead of truncating the path.
pub(crate) fn cstr(path: &std::path::Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// A duration as a `timespec` (saturating at the largest `time_t`).
pub(crate) fn timespec(d: std::time::Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// `deadline` as an absolute `CLOCK_MONOTONIC` time, for the calls that take
/// one (`FUTEX_WAIT_BITSET`).
/// `Instant` uses the same clock, but does not expose its value.
// time_t and c_long are i64 here but narrower on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn monotonic_at(deadline: std::time::Instant) -> libc::timespec {
    let mut now = std::mem::MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: `now` is writable; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) };
    // SAFETY: zero-initialised, then filled by clock_gettime.
    let now = unsafe { now.assume_init() };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let nanos = now.tv_nsec as i64 + i64::from(left.subsec_nanos());
    let secs = (now.tv_sec as i64)
        .saturating_add(left.as_secs().min(i64::MAX as u64 / 2) as i64)
        .saturating_add(nanos / 1_000_000_000);
    libc::timespec {
        tv_sec: secs.min(libc::time_t::MAX as i64) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}
