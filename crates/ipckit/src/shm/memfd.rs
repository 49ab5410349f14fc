//! Anonymous shared memory (`memfd_create(2)`), optionally sealed.

use std::io;
use std::ops::BitOr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::Region;
use crate::sys;
use crate::sys::mman::Mapping;

/// File seals (`fcntl(2)`, "File seals"): restrictions that, once added to
/// a memfd, hold for every process that has it, forever. A receiver can
/// check them ([`Memfd::seals`]) to know the sender cannot shrink the
/// memory under it (which would crash the receiver with `SIGBUS`) or change
/// data it already checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seals(i32);

impl Seals {
    /// No seals.
    pub const NONE: Seals = Seals(0);
    /// No more seals may be added (`F_SEAL_SEAL`).
    pub const SEAL: Seals = Seals(libc::F_SEAL_SEAL);
    /// The size may not shrink (`F_SEAL_SHRINK`).
    pub const SHRINK: Seals = Seals(libc::F_SEAL_SHRINK);
    /// The size may not grow (`F_SEAL_GROW`).
    pub const GROW: Seals = Seals(libc::F_SEAL_GROW);
    /// The contents may not change at all (`F_SEAL_WRITE`); refused while
    /// any writable mapping exists, including this process's own.
    pub const WRITE: Seals = Seals(libc::F_SEAL_WRITE);
    /// No new writable mappings or writes, while existing writable mappings
    /// keep working (`F_SEAL_FUTURE_WRITE`, Linux 5.1): one writer, many
    /// read-only readers.
    pub const FUTURE_WRITE: Seals = Seals(libc::F_SEAL_FUTURE_WRITE);

    /// Whether every seal in `other` is in `self`.
    pub fn contains(self, other: Seals) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Seals {
    type Output = Seals;
    fn bitor(self, rhs: Seals) -> Seals {
        Seals(self.0 | rhs.0)
    }
}

/// Anonymous shared memory: no name, found only through its descriptor,
/// which a child inherits or a Unix socket passes
/// ([`crate::socket::unix::UnixStream::send_with_fds`]). Freed when the
/// last descriptor and mapping are gone, so nothing can be left behind.
/// Derefs to its [`Region`].
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
    region: Region,
}

impl Memfd {
    /// Creates zero-filled memory of `len` bytes (reserved now, so that a
    /// lack of memory is an error here, not a crash on first write),
    /// mapped read-write, and sealed against shrinking
    /// ([`Seals::SHRINK`]): no process it reaches can take pages from
    /// under another's mapping, and receivers ([`Memfd::from_fd`]) insist
    /// on that seal. `name` shows in `/proc/PID/fd` as `memfd:NAME`.
    #[doc(alias = "memfd_create")]
    pub fn create(name: &str, len: usize) -> io::Result<Memfd> {
        Memfd::create_with_seals(name, len, Seals::SHRINK)
    }

    /// Like [`create`](Self::create), with `seals` instead of
    /// [`Seals::SHRINK`] ([`Seals::NONE`] for memory that may shrink, or
    /// [`Seals::SHRINK`] `|` [`Seals::GROW`] for a fixed size). Seals that
    /// forbid writing are refused here: add them with
    /// [`add_seals`](Self::add_seals) once the memory is filled.
    pub fn create_with_seals(name: &str, len: usize, seals: Seals) -> io::Result<Memfd> {
        if seals.contains(Seals::WRITE) || seals.contains(Seals::FUTURE_WRITE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Memfd::create_with_seals: seal WRITE or FUTURE_WRITE after filling the memory \
                 (Memfd::add_seals), or it could never be written",
            ));
        }
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a memfd region needs a size of at least 1 byte",
            ));
        }
        let fd = sys::mman::memfd(name)?;
        sys::mman::truncate(fd.as_fd(), len as u64)?;
        sys::mman::allocate(fd.as_fd(), len as u64)?;
        let map = Mapping::map(fd.as_fd(), 0, len, true)?;
        let m = Memfd {
            fd,
            region: Region::new(map),
        };
        if seals != Seals::NONE {
            m.add_seals(seals)?;
        }
        Ok(m)
    }

    /// Maps memory received from another process: the whole file,
    /// read-write, or read-only if it is sealed against writing (or
    /// `read_only` is asked for).
    ///
    /// Refused unless the sender sealed it against shrinking
    /// ([`Seals::SHRINK`], as [`Memfd::create`] does): otherwise the sender
    /// could take the pages away while this process reads them. Use
    /// [`from_fd_unsealed`](Self::from_fd_unsealed) for a sender you
    /// trust, or one that cannot seal.
    pub fn from_fd(fd: OwnedFd, read_only: bool) -> io::Result<Memfd> {
        let seals = sys::mman::seals(fd.as_fd())
            .map(Seals)
            .unwrap_or(Seals::NONE);
        if !seals.contains(Seals::SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "refused memory from another process that is not sealed against shrinking \
                 (F_SEAL_SHRINK): the sender could take the pages away under this process. Seal \
                 it (Memfd::create does), or accept it with Memfd::from_fd_unsealed",
            ));
        }
        Memfd::from_fd_unsealed(fd, read_only)
    }

    /// Maps memory received from another process whether or not it is
    /// sealed against shrinking. If the sender shrinks it, this process
    /// does not die of `SIGBUS`: the region reads zeros and reports the
    /// truncation ([`Region::is_truncated`]) on every operation.
    pub fn from_fd_unsealed(fd: OwnedFd, read_only: bool) -> io::Result<Memfd> {
        let len = sys::mman::file_size(fd.as_fd())?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("region too large"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the received memory region is empty",
            ));
        }
        let sealed = sys::mman::seals(fd.as_fd())
            .map(|s| Seals(s).contains(Seals::WRITE) || Seals(s).contains(Seals::FUTURE_WRITE))
            .unwrap_or(false);
        let map = Mapping::map(fd.as_fd(), 0, len, !(read_only || sealed))?;
        Ok(Memfd {
            fd,
            region: Region::new(map),
        })
    }

    /// The descriptor, to hand to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Adds `seals` (they can never be removed).
    pub fn add_seals(&self, seals: Seals) -> io::Result<()> {
        sys::mman::add_seals(self.fd.as_fd(), seals.0).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::EBUSY) => {
                    "a writable mapping exists (this one included): use Seals::FUTURE_WRITE, \
                     or seal WRITE on a read-only copy"
                }
                Some(libc::EPERM) => "the memfd is sealed against further seals (Seals::SEAL)",
                Some(libc::EINVAL) => "this kernel does not know one of the seals",
                _ => return e,
            };
            io::Error::new(e.kind(), format!("cannot add seals {seals:?}: {why}"))
        })
    }

    /// The seals in force.
    pub fn seals(&self) -> io::Result<Seals> {
        sys::mman::seals(self.fd.as_fd()).map(Seals)
    }
}

impl_region_object!(Memfd => fd);
