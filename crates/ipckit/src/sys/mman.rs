//! Memory mapping and the objects behind it: `memfd_create`, `shm_open`,
//! `ftruncate`, `fallocate`, `mmap`, `msync`, `munmap`, file seals.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};

use super::syscall;

fn off(len: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))
}

/// `memfd_create(2)` with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated name.
    let fd = syscall!(memfd_create(
        c.as_ptr(),
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
    ))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_open(3)` with `O_CLOEXEC` (always set by glibc too).
pub(crate) fn shm_open(name: &CStr, oflag: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated.
    let fd = syscall!(shm_open(
        name.as_ptr(),
        oflag | libc::O_CLOEXEC,
        mode as libc::mode_t
    ))?;
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_unlink(3)`.
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    syscall!(shm_unlink(name.as_ptr()))?;
    Ok(())
}

/// `ftruncate(2)`.
pub(crate) fn truncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = off(len)?;
    // SAFETY: no pointers.
    syscall!(ftruncate(fd.as_raw_fd(), len))?;
    Ok(())
}

/// `fallocate(2)` of the first `len` bytes: reserves the pages now, so that
/// a full tmpfs is an `ENOSPC` error here instead of a `SIGBUS` on first
/// write.
pub(crate) fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = off(len)?;
    // SAFETY: no pointers.
    syscall!(fallocate(fd.as_raw_fd(), 0, 0, len))?;
    Ok(())
}

/// Size of the file behind `fd` (`fstat(2)`).
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is writable.
    syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(u64::try_from(unsafe { st.assume_init() }.st_size).unwrap_or(0))
}

/// `fcntl(F_ADD_SEALS)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals))?;
    Ok(())
}

/// `fcntl(F_GET_SEALS)`.
pub(crate) fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: integer arguments only.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_GET_SEALS))
}

/// A shared mapping; unmapped on drop.
///
/// Every accessor checks that the bytes it touches lie inside the mapping
/// (panicking otherwise: callers check first and report errors), and the
/// writing ones that the mapping is writable.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// Attached with `shmat` (detached with `shmdt`), not `mmap`ed.
    sysv: bool,
    /// Turns a `SIGBUS` from a file that shrank under the mapping into
    /// [`Mapping::truncated`] (`None` for System V segments, which cannot
    /// shrink).
    guard: Option<super::sigbus::Guard>,
}

// SAFETY: the mapping is plain memory owned by this value; shared access
// goes through atomics, copies or the callers' own synchronisation, as the
// `shm` module documents.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(2)` of `len` bytes of `fd` from `offset` (a multiple of the
    /// page size), `MAP_SHARED`, read-write or read-only.
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty region",
            ));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let mut map = Mapping::mmap(
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off(offset)?,
            writable,
        )?;
        map.guard = Some(super::sigbus::Guard::register(map.as_ptr(), len)?);
        Ok(map)
    }

    /// `mmap(2)` at an address the kernel chooses, without a `SIGBUS`
    /// guard.
    fn mmap(
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: RawFd,
        offset: libc::off_t,
        writable: bool,
    ) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps
        // nothing Rust owns.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping {
            ptr,
            len,
            writable,
            sysv: false,
            guard: None,
        })
    }

    /// `shmat(2)` of System V segment `id`, whose size is `len`, at an
    /// address the kernel chooses; read-only with `SHM_RDONLY`.
    pub(crate) fn attach(id: libc::c_int, len: usize, writable: bool) -> io::Result<Self> {
        let flags = if writable { 0 } else { libc::SHM_RDONLY };
        // SAFETY: a null address lets the kernel choose a place that
        // overlaps nothing Rust owns.
        let p = unsafe { libc::shmat(id, ptr::null(), flags) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("shmat returned null"))?;
        Ok(Mapping {
            ptr,
            len,
            writable,
            sysv: true,
            guard: None,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Whether the file behind the mapping shrank under an access (see
    /// `sys::sigbus`): the mapping then holds private zeros.
    pub(crate) fn truncated(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.truncated())
    }

    fn check(&self, offset: usize, len: usize, write: bool) {
        let end = offset.checked_add(len).expect("range overflows");
        assert!(
            end <= self.len,
            "range {offset}..{end} beyond a {}-byte mapping",
            self.len
        );
        assert!(!write || self.writable, "write to a read-only mapping");
    }

    /// Copies `dst.len()` bytes from `offset` out of the mapping.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), false);
        // SAFETY: the source range is inside the mapping (checked) and
        // cannot overlap `dst`, a Rust-owned buffer. Another process may
        // write concurrently: the bytes may then be torn, which `u8` can
        // hold whatever they are.
        unsafe { ptr::copy_nonoverlapping(self.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// Appends `len` bytes from `offset` of the mapping to `v` (no
    /// zero-filling of `v` first).
    pub(crate) fn append_to(&self, offset: usize, len: usize, v: &mut Vec<u8>) {
        self.check(offset, len, false);
        v.reserve(len);
        let old = v.len();
        // SAFETY: the source range is inside the mapping (checked); `reserve`
        // made room for `len` bytes past `old` in `v`, a Rust-owned buffer
        // that cannot overlap the mapping. Torn bytes from a concurrent
        // writer are still bytes.
        unsafe {
            ptr::copy_nonoverlapping(self.as_ptr().add(offset), v.as_mut_ptr().add(old), len);
            v.set_len(old + len);
        }
    }

    /// Copies `src` into the mapping at `offset`.
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), true);
        // SAFETY: the destination range is inside a writable mapping
        // (checked); no Rust reference to it exists except through the
        // `unsafe` slice accessors, whose callers promise exclusivity.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(offset), src.len()) }
    }

    /// Reads a `T` at `offset` (aligned for `T`).
    pub(crate) fn read<T: bytemuck::AnyBitPattern>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>(), false);
        let p = self.as_ptr().wrapping_add(offset);
        assert!(p.cast::<T>().is_aligned(), "misaligned read");
        // SAFETY: inside the mapping and aligned (checked); every bit
        // pattern is a valid T.
        unsafe { ptr::read_volatile(p.cast::<T>()) }
    }

    /// Writes `v` at `offset` (aligned for `T`).
    pub(crate) fn write<T: bytemuck::NoUninit>(&self, offset: usize, v: T) {
        self.check(offset, size_of::<T>(), true);
        let p = self.as_ptr().wrapping_add(offset);
        assert!(p.cast::<T>().is_aligned(), "misaligned write");
        // SAFETY: inside a writable mapping and aligned (checked); T has no
        // padding, so no uninitialised bytes reach the other process.
        unsafe { ptr::write_volatile(p.cast::<T>(), v) }
    }

    /// A reference to the `T` at `offset` (aligned, inside the mapping).
    ///
    /// # Safety
    /// No one (in this or another process) may write those bytes while the
    /// reference lives, unless `T` is made of atomics.
    pub(crate) unsafe fn get<T: bytemuck::AnyBitPattern>(
        &self,
        offset: usize,
        count: usize,
    ) -> &[T] {
        let bytes = size_of::<T>().checked_mul(count).expect("size overflows");
        self.check(offset, bytes, false);
        let p = self.as_ptr().wrapping_add(offset).cast::<T>();
        assert!(p.is_aligned(), "misaligned view");
        // SAFETY: inside the mapping and aligned (checked), valid for every
        // bit pattern; the caller rules out concurrent writes.
        unsafe { std::slice::from_raw_parts(p, count) }
    }

    /// A mutable reference to `count` `T`s at `offset`.
    ///
    /// # Safety
    /// No one else (in this or another process) may read or write those
    /// bytes while the reference lives.
    #[allow(clippy::mut_from_ref)] // the mapping is shared memory, not Rust-owned data
    pub(crate) unsafe fn get_mut<T: bytemuck::Pod>(&self, offset: usize, count: usize) -> &mut [T] {
        let bytes = size_of::<T>().checked_mul(count).expect("size overflows");
        self.check(offset, bytes, true);
        let p = self.as_ptr().wrapping_add(offset).cast::<T>();
        assert!(p.is_aligned(), "misaligned view");
        // SAFETY: inside a writable mapping and aligned (checked), valid for
        // every bit pattern; the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(p, count) }
    }

    /// The `T` at `offset` (aligned, inside the mapping): an atomic or a
    /// synchronisation object that lives in shared memory.
    pub(crate) fn place<T: InPlace>(&self, offset: usize) -> &T {
        self.check(offset, size_of::<T>(), false);
        let p = self.as_ptr().wrapping_add(offset).cast::<T>();
        assert!(p.is_aligned(), "misaligned {}", std::any::type_name::<T>());
        // SAFETY: inside the mapping and aligned (checked), and `T: InPlace`
        // is valid for every bit pattern and only accessed atomically or by
        // thread-safe calls, so concurrent access from any process is
        // sound. A store through it to a read-only mapping faults, so the
        // caller checks `writable` before handing it out.
        unsafe { &*p }
    }

    /// `msync(2)` of the pages covering `offset..offset + len`.
    pub(crate) fn sync(&self, offset: usize, len: usize, wait: bool) -> io::Result<()> {
        self.check(offset, len, false);
        let page = page_size();
        let start = offset / page * page;
        let flags = if wait { libc::MS_SYNC } else { libc::MS_ASYNC };
        // SAFETY: the range lies inside this mapping, whose start is
        // page-aligned, so `start` is too.
        syscall!(msync(
            self.as_ptr().wrapping_add(start).cast(),
            offset + len - start,
            flags
        ))?;
        Ok(())
    }
}

/// Types that may be placed in shared memory and used there through a
/// shared reference ([`Mapping::place`]).
///
/// # Safety
/// Every bit pattern must be a valid value, and every access must be atomic
/// or made by thread-safe calls (interior mutability), so that other
/// processes writing the bytes at any time cannot cause undefined behaviour
/// in this one.
pub(crate) unsafe trait InPlace: Sized {}
// SAFETY: integer atomics: any bits are a valid integer, every access is atomic.
unsafe impl InPlace for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU64 {}

/// The page size (`sysconf(_SC_PAGESIZE)`).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
impl Mapping {
    /// `len` bytes of private anonymous memory (`MAP_PRIVATE |
    /// MAP_ANONYMOUS`), for tests of what reads and writes mappings: Miri
    /// can run those (it cannot map a file). The memory is always
    /// read-write (Miri maps nothing else); `writable` is what the
    /// accessors check, so a write refused is the check's doing, not a
    /// fault's.
    pub(crate) fn private(len: usize, writable: bool) -> io::Result<Self> {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        Mapping::mmap(
            len,
            rw,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
            writable,
        )
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unguard before unmapping: the addresses may be reused at once.
        drop(self.guard.take());
        if self.sysv {
            // SAFETY: `ptr` is an attachment this value made and that
            // nothing borrows any more (borrows are tied to `&self`).
            unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
        } else {
            // SAFETY: `ptr`/`len` describe a mapping this value created and
            // that nothing borrows any more (borrows are tied to `&self`).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// `shmget(2)`.
pub(crate) fn shmget(key: libc::key_t, size: usize, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: integer arguments only.
    syscall!(shmget(key, size, flags))
}

/// A segment's `struct shmid_ds`, in fixed-width types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawShmStatus {
    pub perm: super::msg::RawPerm,
    pub size: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
}

/// `shmctl(IPC_STAT)`.
// Field widths differ between targets: some casts are no-ops here.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn shm_stat(id: libc::c_int) -> io::Result<RawShmStatus> {
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: `ds` is writable and of the type IPC_STAT fills.
    syscall!(shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()))?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    let ds = unsafe { ds.assume_init() };
    Ok(RawShmStatus {
        perm: super::msg::RawPerm::from(&ds.shm_perm),
        size: ds.shm_segsz as u64,
        atime: ds.shm_atime as i64,
        dtime: ds.shm_dtime as i64,
        ctime: ds.shm_ctime as i64,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
        nattch: ds.shm_nattch as u64,
    })
}

/// `shmctl(IPC_RMID)`: marks the segment for removal; it goes when the last
/// process detaches.
pub(crate) fn shm_remove(id: libc::c_int) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    syscall!(shmctl(id, libc::IPC_RMID, ptr::null_mut()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The accessors every view of shared memory goes through, at the edges
    //! of a mapping and past them; `tools/miri.sh` runs these under Miri,
    //! which checks each raw access for bounds, alignment and aliasing.

    use super::Mapping;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    const LEN: usize = 4096;

    /// Every accessor reaches the last bytes of the mapping.
    #[test]
    fn accessors_reach_the_last_byte() {
        let m = Mapping::private(LEN, true).unwrap();
        m.write::<u64>(LEN - 8, 0x0102_0304_0506_0708);
        assert_eq!(m.read::<u64>(LEN - 8), 0x0102_0304_0506_0708);
        assert_eq!(m.read::<u8>(LEN - 1), 0x01);
        m.copy_in(LEN - 3, &[7, 8, 9]);
        let mut out = [0u8; 3];
        m.copy_out(LEN - 3, &mut out);
        assert_eq!(out, [7, 8, 9]);
        let mut v = vec![1];
        m.append_to(LEN - 2, 2, &mut v);
        assert_eq!(v, [1, 8, 9]);
        m.append_to(LEN, 0, &mut v);
        assert_eq!(v.len(), 3);
        // SAFETY: nothing else touches the mapping during the test.
        unsafe {
            m.get_mut::<u32>(LEN - 8, 2).copy_from_slice(&[5, 6]);
            assert_eq!(m.get::<u32>(LEN - 8, 2), [5, 6]);
            assert!(m.get::<u64>(LEN, 0).is_empty());
        }
        assert_eq!(m.place::<AtomicU32>(LEN - 4).load(Ordering::Relaxed), 6);
    }

    /// One byte past the end, a misaligned place, a length that overflows
    /// and a write to a read-only mapping: each a panic before any access.
    #[test]
    fn accessors_refuse_past_the_end() {
        let m = Mapping::private(LEN, true).unwrap();
        let ro = Mapping::private(LEN, false).unwrap();
        type Access<'a> = Box<dyn Fn() + 'a>;
        let refused: [(&str, Access); 11] = [
            ("read", Box::new(|| _ = m.read::<u64>(LEN - 7))),
            ("read, misaligned", Box::new(|| _ = m.read::<u64>(4))),
            ("write", Box::new(|| m.write::<u32>(LEN - 3, 1))),
            ("copy_out", Box::new(|| m.copy_out(LEN - 1, &mut [0; 2]))),
            (
                "copy_in, overflowing",
                Box::new(|| m.copy_in(usize::MAX, &[1, 2])),
            ),
            (
                "append_to",
                Box::new(|| m.append_to(LEN + 1, 0, &mut Vec::new())),
            ),
            (
                "get, overflowing",
                Box::new(|| {
                    // SAFETY: refused before any reference is made.
                    _ = unsafe { m.get::<u64>(0, usize::MAX / 4) }
                }),
            ),
            (
                "get_mut",
                Box::new(|| {
                    // SAFETY: refused before any reference is made.
                    _ = unsafe { m.get_mut::<u8>(LEN - 1, 2) }
                }),
            ),
            ("place", Box::new(|| _ = m.place::<AtomicU64>(LEN - 4))),
            (
                "place, misaligned",
                Box::new(|| _ = m.place::<AtomicU64>(12)),
            ),
            ("write, read-only", Box::new(|| ro.copy_in(0, &[1]))),
        ];
        for (what, f) in refused {
            assert!(
                catch_unwind(AssertUnwindSafe(f)).is_err(),
                "{what} was allowed"
            );
        }
        assert_eq!(m.read::<u64>(LEN - 8), 0, "nothing was written");
    }

    /// Atomics placed in the mapping are shared between threads as they
    /// are between processes.
    #[test]
    fn atomics_in_place_count_every_increment() {
        let m = Mapping::private(LEN, true).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..100 {
                        m.place::<AtomicU64>(64).fetch_add(1, Ordering::AcqRel);
                    }
                });
            }
        });
        assert_eq!(m.read::<u64>(64), 200);
    }
}
