//! POSIX shared memory objects (`shm_open(3)`): named files in `/dev/shm`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::Region;
use crate::mq::validate_posix_name;
use crate::sys;
use crate::sys::mman::Mapping;

/// Default permission bits of a new object: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// Validates a shared memory name: one leading slash, no other, 1 to 255
/// bytes after it.
pub fn validate_name(name: &str) -> io::Result<CString> {
    validate_posix_name("POSIX shared memory", "/frames", name)
}

/// Creates or opens a [`Shm`].
#[derive(Debug, Clone)]
pub struct ShmBuilder {
    name: String,
    size: Option<usize>,
    mode: u32,
    read_only: bool,
    keep: bool,
}

impl ShmBuilder {
    /// The size in bytes: required to create; when opening, the object must
    /// be at least this large and only this much is mapped (default: all
    /// of it).
    pub fn size(mut self, size: usize) -> Self {
        self.size = Some(size);
        self
    }

    /// Permission bits for a new object (default `0o600`; the umask
    /// applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Map the memory read-only (`PROT_READ`; the object is opened
    /// `O_RDONLY` unless this call creates it).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Leave the object in place when the [`Shm`] that created it is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new object of [`size`](ShmBuilder::size) bytes (zero-filled,
    /// its memory reserved now, so that a full `/dev/shm` is an error here
    /// rather than a crash on first write); fails if one of that name exists.
    pub fn create(self) -> io::Result<Shm> {
        let cname = validate_name(&self.name)?;
        let size = match self.size {
            Some(0) | None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "creating POSIX shared memory {} needs a size of at least 1 byte \
                         (ShmBuilder::size)",
                        self.name
                    ),
                ))
            }
            Some(s) => s,
        };
        let fd = sys::mman::shm_open(
            &cname,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            self.mode,
        )
        .map_err(|e| self.explain(e))?;
        // From here on, a failure removes the half-made object again.
        let undo = |e: io::Error| {
            let _ = sys::mman::shm_unlink(&cname);
            e
        };
        sys::mman::truncate(fd.as_fd(), size as u64).map_err(undo)?;
        sys::mman::allocate(fd.as_fd(), size as u64)
            .map_err(|e| self.explain_space(e, size))
            .map_err(undo)?;
        let map = Mapping::map(fd.as_fd(), 0, size, !self.read_only).map_err(undo)?;
        Ok(Shm {
            fd,
            region: Region::new(map),
            unlink_on_drop: !self.keep,
            created: true,
            name: self.name,
            cname,
        })
    }

    /// Opens an existing object; it is not unlinked on drop.
    pub fn open(self) -> io::Result<Shm> {
        let cname = validate_name(&self.name)?;
        let flags = if self.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        let fd = sys::mman::shm_open(&cname, flags, 0).map_err(|e| self.explain(e))?;
        let len = sys::mman::file_size(fd.as_fd())?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let size = match self.size {
            Some(s) if s > len => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "POSIX shared memory {} is {len} bytes, smaller than the {s} asked for",
                        self.name
                    ),
                ))
            }
            Some(s) => s,
            None => len,
        };
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "POSIX shared memory {} is empty (its creator may not have sized it yet)",
                    self.name
                ),
            ));
        }
        let map = Mapping::map(fd.as_fd(), 0, size, !self.read_only)?;
        Ok(Shm {
            fd,
            region: Region::new(map),
            unlink_on_drop: false,
            created: false,
            name: self.name,
            cname,
        })
    }

    /// Opens the object, creating it if it does not exist. Only an object
    /// this call created is unlinked on drop.
    pub fn create_or_open(self) -> io::Result<Shm> {
        crate::named::create_or_open(
            &format_args!("POSIX shared memory {}", self.name),
            || self.clone().create(),
            || self.clone().open(),
        )
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let name = &self.name;
        let msg =
            match e.raw_os_error() {
                Some(libc::EEXIST) => format!("POSIX shared memory {name} already exists"),
                Some(libc::ENOENT) => {
                    format!("no POSIX shared memory named {name} (create it first)")
                }
                Some(libc::EACCES) => {
                    format!(
                "permission denied opening POSIX shared memory {name}{}: check the owner and \
                 mode of /dev/shm{name}",
                if self.read_only { " read-only" } else { " for writing" }
            )
                }
                _ => {
                    return io::Error::new(
                        e.kind(),
                        format!("cannot open POSIX shared memory {name}: {e}"),
                    )
                }
            };
        io::Error::new(e.kind(), msg)
    }

    fn explain_space(&self, e: io::Error, size: usize) -> io::Error {
        crate::named::dev_shm_full(
            e,
            &format!("{size} bytes of POSIX shared memory {}", self.name),
        )
    }
}

/// A POSIX shared memory object, mapped. Derefs to its [`Region`].
#[derive(Debug)]
pub struct Shm {
    fd: OwnedFd,
    region: Region,
    name: String,
    cname: CString,
    unlink_on_drop: bool,
    created: bool,
}

impl Shm {
    /// A builder for the object called `name` (`/something`).
    pub fn builder(name: impl Into<String>) -> ShmBuilder {
        ShmBuilder {
            name: name.into(),
            size: None,
            mode: DEFAULT_MODE,
            read_only: false,
            keep: false,
        }
    }

    /// Whether this handle made the object (`create`, or a
    /// `create_or_open` that found none): the creator initialises it, the
    /// others wait for that.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the object when this value is dropped, as its creator
    /// would (a ring taken over from a creator that died).
    pub(crate) fn remove_on_drop(&mut self) {
        self.unlink_on_drop = true;
    }

    /// Whether dropping this value removes the object.
    pub(crate) fn removes_on_drop(&self) -> bool {
        self.unlink_on_drop
    }

    /// Leaves the object in place when this value is dropped.
    pub fn keep(&mut self) {
        self.unlink_on_drop = false;
    }

    /// Removes the name now (`shm_unlink(3)`); the memory stays mapped
    /// here and in every process that has it mapped.
    pub fn unlink(&mut self) -> io::Result<()> {
        self.unlink_on_drop = false;
        sys::mman::shm_unlink(&self.cname)
    }
}

impl_region_object!(Shm => fd);

impl Drop for Shm {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            // Only the object this value created: /dev/shm/NAME may have
            // been removed and made anew by someone else since.
            let ours = crate::named::FileId::of_fd(self.fd.as_fd());
            if let Ok(id) = ours {
                let path = format!("/dev/shm{}", self.name);
                let _ = crate::named::remove_if_same(std::path::Path::new(&path), id);
            }
        }
    }
}

/// Removes the POSIX shared memory object called `name`.
#[doc(alias = "shm_unlink")]
pub fn unlink(name: &str) -> io::Result<()> {
    let c = validate_name(name)?;
    sys::mman::shm_unlink(&c).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => {
            io::Error::new(e.kind(), format!("no POSIX shared memory named {name}"))
        }
        _ => io::Error::new(
            e.kind(),
            format!("cannot remove POSIX shared memory {name}: {e}"),
        ),
    })
}
