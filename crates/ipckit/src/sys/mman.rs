//! Memory mapping: `memfd_create`, `ftruncate`, `mmap`, `munmap`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;

use super::syscall;

/// `memfd_create(2)` with `MFD_CLOEXEC`, sized to `len` bytes.
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated name.
    let fd = syscall!(memfd_create(c.as_ptr(), libc::MFD_CLOEXEC))?;
    // SAFETY: a fresh descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: no pointers.
    syscall!(ftruncate(fd.as_raw_fd(), len))?;
    Ok(fd)
}

/// Size of the file behind `fd` (`fstat(2)`).
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is writable.
    syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() }.st_size as usize)
}

/// A shared, read-write mapping of `len` bytes of `fd`; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; access is through atomics or by
// callers that synchronise themselves, as for any shared buffer.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty region",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps
        // nothing Rust owns.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The `index`-th naturally aligned `AtomicU64` of the mapping, if it
    /// lies inside it.
    pub(crate) fn atomic_u64(&self, index: usize) -> Option<&AtomicU64> {
        let end = index.checked_add(1)?.checked_mul(8)?;
        if end > self.len {
            return None;
        }
        // SAFETY: the mapping is page-aligned, so offset `index * 8` is
        // aligned for AtomicU64 and (checked above) inside the mapping, which
        // lives as long as `&self`. Atomics are the sound way to share memory
        // with another process: any bit pattern is a valid u64, and every
        // access through this reference is atomic.
        Some(unsafe { &*self.ptr.as_ptr().add(index * 8).cast::<AtomicU64>() })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and that
        // nothing borrows any more (borrows are tied to `&self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
