//! Shared memory.
//!
//! Shared memory is the fastest IPC: once two processes map the same pages,
//! the kernel steps out, and the processes must bring their own
//! synchronisation. This module so far holds an anonymous region
//! (`memfd_create(2)`) whose descriptor can be inherited by or passed to
//! another process, with atomic words as the safe way to share it.
//! POSIX and System V segments, mapped files and typed views arrive with
//! the shared-memory issue.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use ipckit::shm::MemfdRegion;
//!
//! let region = MemfdRegion::create("counter", 4096)?;
//! region.atomic_u64(0).unwrap().store(7, Ordering::Release);
//! // Another process maps the same memory from the descriptor:
//! let again = MemfdRegion::from_fd(region.fd().try_clone_to_owned()?)?;
//! assert_eq!(again.atomic_u64(0).unwrap().load(Ordering::Acquire), 7);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `memfd_create(2)`, `mmap(2)`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use crate::sys::mman::{self, Mapping};

/// An anonymous shared-memory region backed by a memfd, mapped read-write.
#[derive(Debug)]
pub struct MemfdRegion {
    fd: OwnedFd,
    map: Mapping,
}

impl MemfdRegion {
    /// Creates a zero-filled region of `len` bytes; `name` shows up in
    /// `/proc/PID/fd` as `memfd:NAME`.
    #[doc(alias = "memfd_create")]
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let fd = mman::memfd(name, len)?;
        let map = Mapping::shared(fd.as_fd(), len)?;
        Ok(MemfdRegion { fd, map })
    }

    /// Maps a region from a memfd received from another process (whole
    /// file, read-write).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let len = mman::file_size(fd.as_fd())?;
        let map = Mapping::shared(fd.as_fd(), len)?;
        Ok(MemfdRegion { fd, map })
    }

    /// The region's size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty (never true: empty regions are refused).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The descriptor, to hand to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The `index`-th 8-byte word as an atomic, or `None` past the end.
    pub fn atomic_u64(&self, index: usize) -> Option<&AtomicU64> {
        self.map.atomic_u64(index)
    }
}
