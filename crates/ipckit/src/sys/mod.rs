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
pub(crate) mod fd;
pub(crate) mod mman;
pub(crate) mod mq;
pub(crate) mod msg;
pub(crate) mod process;
pub(crate) mod socket;

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
