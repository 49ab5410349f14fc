//! Shared memory.
//!
//! Shared memory is the fastest IPC: once two processes map the same pages,
//! the kernel steps out, and every byte one writes the other can read
//! without a system call. The price is that the processes must bring their
//! own synchronisation.
//!
//! | type | object | found by |
//! |---|---|---|
//! | [`Shm`] | POSIX shared memory (`shm_open(3)`), a file in `/dev/shm` | name (`/something`) |
//! | [`Memfd`] | anonymous memory (`memfd_create(2)`), optionally sealed | its descriptor, inherited or passed over a Unix socket |
//! | [`MappedFile`] | a regular file (`mmap(2)` with `MAP_SHARED`) | path; the data persists, [`MappedFile::flush`] writes it back |
//! | [`SysvShm`] | System V shared memory (`shmget(2)`, `shmat(2)`) | [`crate::sysv::Key`] |
//!
//! Each derefs to a [`Region`], the mapped bytes.
//!
//! # Synchronisation inside the region
//!
//! | type | what | wraps |
//! |---|---|---|
//! | [`Futex`] | sleep until a 32-bit word changes, wake sleepers in any process | `futex(2)` |
//! | [`Mutex`] | a lock guarding a `T` beside it, robust: a holder's death is reported to the next locker ([`LockError::OwnerDied`]) | ipckit's own lock word on a futex (the owner's thread id), checked for a dead owner by the waiters; no glibc object, nothing another process can write crashes it |
//! | [`Condvar`] | wait until another process changes the data behind a [`Mutex`] | a sequence number on a futex |
//! | [`crate::sem::UnnamedSemaphore`] | P and V on a counter | ipckit's futex code on the bytes of a pshared `sem_t` |
//!
//! Each takes a fixed number of bytes at an offset that one process
//! initialises (`init`) and the others open (`open`), which checks a marker
//! so that uninitialised memory is refused rather than used.
//!
//! # What a [`Region`] can and cannot promise
//!
//! Rust's references promise that nobody changes the bytes behind a `&[u8]`
//! and that nobody else sees the bytes behind a `&mut [u8]`. Another process
//! can break both promises at any moment, and nothing in this process can
//! stop it. So the safe API never hands out plain references into the
//! region:
//!
//! - [`Region::read`] / [`Region::write`] copy bytes out and in. If another
//!   process writes the same bytes at the same time, the copy may be torn
//!   (part old, part new), never undefined behaviour on this side.
//! - If another process shrinks the object under the mapping (POSIX shared
//!   memory, a mapped file, a memfd not sealed against it), touching the
//!   lost pages would kill this process with `SIGBUS`. ipckit catches that
//!   fault for its own mappings, puts zero-filled private memory in their
//!   place, and every later operation on the region fails with an error
//!   ([`Region::is_truncated`]). Memfds are sealed against shrinking when
//!   created, and a received memfd is refused unless it is sealed.
//! - Typed views ([`Region::view`], [`Region::array`]) do the same for a
//!   `T` that is valid for every bit pattern (`bytemuck::Pod`): `load` and
//!   `store` copy a whole `T`. The region refuses views that do not fit or
//!   are misaligned, with an error that says so.
//! - [`Region::atomic_u32`] and [`Region::atomic_u64`] hand out real
//!   references, because atomics stay sound under concurrent access from
//!   anywhere: they are the building block of every protocol between the
//!   processes (flags, counters, sequence numbers, futexes).
//! - `unsafe` accessors ([`Region::as_slice`], [`View::get`], ...) give
//!   references for zero-copy access when the caller knows no one writes
//!   meanwhile, for example while holding a lock.
//!
//! # Example: the notes' structured sharing, an array of 10 integers
//!
//! ```
//! use ipckit::shm::Shm;
//!
//! let name = format!("/ipckit-doc-shm-{}", std::process::id());
//! let shm = Shm::builder(&name).size(4096).create()?; // unlinked on drop
//! let numbers = shm.view::<[i32; 10]>(0)?;
//! numbers.store(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])?;
//! // Another process: Shm::builder(&name).open()?.view::<[i32; 10]>(0)?.load()
//! assert_eq!(numbers.load()?[9], 10);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `shm_overview(7)`, `shm_open(3)`, `memfd_create(2)`, `mmap(2)`,
//! `msync(2)`, `fcntl(2)` (file seals), `shmget(2)`, `shmop(2)`, `shmctl(2)`,
//! `futex(2)`, and for comparison `pthread_mutexattr_setrobust(3)`,
//! `pthread_mutex_consistent(3)`.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::mman::{InPlace, Mapping};

/// The parts every mapped object shares: `region()`, `region_mut()`,
/// `Deref<Target = Region>`, and `AsFd` for the descriptor in `$fd` if
/// there is one.
macro_rules! impl_region_object {
    ($ty:ty) => {
        impl $ty {
            /// The mapped bytes.
            pub fn region(&self) -> &Region {
                &self.region
            }

            /// The mapped bytes, for the `&mut` accessors.
            pub fn region_mut(&mut self) -> &mut Region {
                &mut self.region
            }
        }

        impl std::ops::Deref for $ty {
            type Target = Region;
            fn deref(&self) -> &Region {
                &self.region
            }
        }
    };
    ($ty:ty => $fd:ident) => {
        impl_region_object!($ty);

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(&self.$fd)
            }
        }
    };
}

mod file;
mod layout;
mod memfd;
mod posix;
mod sync;
mod sysv;

pub use file::MappedFile;
pub use layout::{HoldsRegion, Layout, OwnedCondvar, OwnedMutex};
pub use memfd::{Memfd, Seals};
pub use posix::{unlink, validate_name, Shm, ShmBuilder};
pub use sync::{Condvar, Futex, Init, LockError, Mutex, MutexGuard};
pub use sysv::{remove_sysv, remove_sysv_id, SysvShm, SysvShmBuilder, SysvShmStatus};

/// Plain data that may live in shared memory, and its derive macros:
/// re-exported from `bytemuck`, so that no dependency of your own is
/// needed. Derive both on a `#[repr(C)]` struct without padding, and tell
/// the derive where bytemuck is:
///
/// ```
/// use ipckit::shm::{Memfd, Pod, Zeroable};
///
/// #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
/// #[bytemuck(crate = "ipckit::shm::bytemuck")]
/// #[repr(C)]
/// struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// let m = Memfd::create("points", 4096)?;
/// m.view::<Point>(0)?.store(&Point { x: 1, y: 2 })?;
/// assert_eq!(m.view::<Point>(0)?.load()?, Point { x: 1, y: 2 });
/// # Ok::<(), std::io::Error>(())
/// ```
pub use bytemuck::{Pod, Zeroable};

/// The `bytemuck` crate itself, for the derives' `crate` attribute.
pub use bytemuck;

/// Mapped shared bytes: the part every shared-memory object has in common.
#[derive(Debug)]
pub struct Region {
    map: Mapping,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Region {
    pub(crate) fn new(map: Mapping) -> Region {
        Region { map }
    }

    /// The mapping, for ipckit's own protocols in shared memory.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The region's size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty (never true: empty mappings are refused).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether the region is mapped for writing.
    pub fn is_writable(&self) -> bool {
        self.map.writable()
    }

    /// Whether another process shrank the object under this mapping (for
    /// example `truncate -s 0 /dev/shm/NAME`). Touching the lost pages would
    /// have killed this process with `SIGBUS`; instead ipckit put private
    /// zero-filled memory in the region's place, and every operation on it
    /// now fails with an error that says so. The region no longer shares
    /// anything with other processes: open the object again.
    pub fn is_truncated(&self) -> bool {
        self.map.truncated()
    }

    /// An error if the region was truncated (see [`Region::is_truncated`]).
    pub(crate) fn check_intact(&self, what: &str) -> io::Result<()> {
        if self.map.truncated() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "cannot {what}: the shared memory was truncated by another process while \
                     mapped here (its contents are lost to this mapping; open the object again)"
                ),
            ));
        }
        Ok(())
    }

    /// The first byte (for code that synchronises itself; see the module
    /// docs).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Checks that `len` bytes at `offset` lie inside the region (and that
    /// it is writable, for writes).
    fn check(
        &self,
        what: impl fmt::Display,
        offset: usize,
        len: usize,
        write: bool,
    ) -> io::Result<()> {
        if write && !self.is_writable() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("cannot {what}: the region is mapped read-only"),
            ));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(invalid(format!(
                "cannot {what}: {len} bytes at offset {offset} do not fit in the \
                 {}-byte region",
                self.len()
            ))),
        }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        self.check("read", offset, buf.len(), false)?;
        self.map.copy_out(offset, buf);
        self.check_intact("read")
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check("write", offset, data.len(), true)?;
        self.map.copy_in(offset, data);
        self.check_intact("write")
    }

    /// The whole region as a byte slice.
    ///
    /// # Safety
    /// No process may write the region while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller rules out writers; the range is the mapping.
        unsafe { self.map.get::<u8>(0, self.len()) }
    }

    /// The whole region as a mutable byte slice (panics if read-only).
    ///
    /// # Safety
    /// No other process may read or write the region while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(self.is_writable(), "as_mut_slice on a read-only region");
        // SAFETY: `&mut self` excludes this process; the caller excludes
        // the others.
        unsafe { self.map.get_mut::<u8>(0, self.len()) }
    }

    /// Checks that a `what` of `size` bytes fits at `offset`, aligned to
    /// `align`, in a writable region (a store to a read-only mapping would
    /// fault).
    fn check_place(&self, what: &str, offset: usize, size: usize, align: usize) -> io::Result<()> {
        // format_args!: the message is only built if the check fails.
        self.check(format_args!("place {what}"), offset, size, true)?;
        if !offset.is_multiple_of(align) {
            return Err(invalid(format!(
                "{what} of {size} bytes at offset {offset} is misaligned: use a multiple of {align}"
            )));
        }
        Ok(())
    }

    /// The synchronisation object or atomic `T` at `offset`, checked.
    pub(crate) fn place<T: InPlace>(
        &self,
        what: &str,
        offset: usize,
        align: usize,
    ) -> io::Result<&T> {
        self.check_place(what, offset, size_of::<T>(), align.max(align_of::<T>()))?;
        Ok(self.map.place(offset))
    }

    /// The 4-byte atomic at byte `offset` (a multiple of 4); refused on a
    /// read-only region, where a store would fault (read with
    /// [`Region::view`] there).
    pub fn atomic_u32(&self, offset: usize) -> io::Result<&AtomicU32> {
        self.place("an atomic", offset, 4)
    }

    /// The 8-byte atomic at byte `offset` (a multiple of 8); refused on a
    /// read-only region, where a store would fault.
    pub fn atomic_u64(&self, offset: usize) -> io::Result<&AtomicU64> {
        self.place("an atomic", offset, 8)
    }

    fn check_view<T>(&self, offset: usize, count: usize) -> io::Result<()> {
        let (size, align) = (size_of::<T>(), align_of::<T>());
        let ty = std::any::type_name::<T>();
        let bytes = size
            .checked_mul(count)
            .ok_or_else(|| invalid(format!("{count} × {ty} overflows")))?;
        if !offset.is_multiple_of(align) {
            return Err(invalid(format!(
                "a view of {ty} (align {align}) at offset {offset} is misaligned: use a \
                 multiple of {align}"
            )));
        }
        if offset.checked_add(bytes).is_none_or(|end| end > self.len()) {
            return Err(invalid(format!(
                "the region of {} bytes is too small for {count} × {ty} ({bytes} bytes) at \
                 offset {offset}",
                self.len()
            )));
        }
        Ok(())
    }

    /// A typed view of one `T` at `offset`: refused if it does not fit or
    /// is misaligned. `T` may be an array, `[i32; 10]`.
    pub fn view<T: Pod>(&self, offset: usize) -> io::Result<View<'_, T>> {
        self.check_view::<T>(offset, 1)?;
        Ok(View {
            region: self,
            offset,
            _t: PhantomData,
        })
    }

    /// A typed view of `len` consecutive `T`s at `offset` (a length chosen
    /// at run time): refused if they do not fit or are misaligned.
    pub fn array<T: Pod>(&self, offset: usize, len: usize) -> io::Result<ArrayView<'_, T>> {
        self.check_view::<T>(offset, len)?;
        Ok(ArrayView {
            region: self,
            offset,
            len,
            _t: PhantomData,
        })
    }
}

/// One `T` inside a [`Region`] ([`Region::view`]).
pub struct View<'a, T> {
    region: &'a Region,
    offset: usize,
    _t: PhantomData<T>,
}

impl<T> fmt::Debug for View<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "View<{}> at offset {}",
            std::any::type_name::<T>(),
            self.offset
        )
    }
}

impl<T: Pod> View<'_, T> {
    /// Copies the value out (an error only if the memory was truncated
    /// under it: [`Region::is_truncated`]).
    pub fn load(&self) -> io::Result<T> {
        let v = self.region.map.read(self.offset);
        self.region.check_intact("load").map(|()| v)
    }

    /// Copies `value` in (an error on a read-only region).
    pub fn store(&self, value: &T) -> io::Result<()> {
        self.region
            .check("store", self.offset, size_of::<T>(), true)?;
        self.region.map.write(self.offset, *value);
        self.region.check_intact("store")
    }

    /// A reference to the value in place.
    ///
    /// # Safety
    /// No process may write it while the reference lives.
    pub unsafe fn get(&self) -> &T {
        // SAFETY: the caller rules out writers; fit and alignment were
        // checked when the view was made.
        unsafe { &self.region.map.get::<T>(self.offset, 1)[0] }
    }
}

/// `len` consecutive `T`s inside a [`Region`] ([`Region::array`]).
pub struct ArrayView<'a, T> {
    region: &'a Region,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> fmt::Debug for ArrayView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ArrayView<{}; {}> at offset {}",
            std::any::type_name::<T>(),
            self.len,
            self.offset
        )
    }
}

impl<T: Pod> ArrayView<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, i: usize) -> Option<usize> {
        (i < self.len).then(|| self.offset + i * size_of::<T>())
    }

    fn index(&self, i: usize) -> io::Result<usize> {
        self.at(i).ok_or_else(|| {
            invalid(format!(
                "index {i} is out of range for an array of {}",
                self.len
            ))
        })
    }

    /// Copies element `i` out (an error past the end, or if the memory was
    /// truncated under it).
    pub fn get(&self, i: usize) -> io::Result<T> {
        let v = self.region.map.read(self.index(i)?);
        self.region.check_intact("load").map(|()| v)
    }

    /// Copies `value` into element `i`.
    pub fn set(&self, i: usize, value: T) -> io::Result<()> {
        let o = self.index(i)?;
        self.region.check("store", o, size_of::<T>(), true)?;
        self.region.map.write(o, value);
        self.region.check_intact("store")
    }

    /// Copies every element out.
    pub fn to_vec(&self) -> io::Result<Vec<T>> {
        let v = (0..self.len)
            .map(|i| self.region.map.read(self.offset + i * size_of::<T>()))
            .collect();
        self.region.check_intact("load").map(|()| v)
    }

    /// The elements in place.
    ///
    /// # Safety
    /// No process may write them while the slice lives.
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: the caller rules out writers; fit and alignment were
        // checked when the view was made.
        unsafe { self.region.map.get::<T>(self.offset, self.len) }
    }
}
