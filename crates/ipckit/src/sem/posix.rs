//! POSIX semaphores: named (`sem_open(3)`) and unnamed in shared memory
//! (`sem_init(3)` with `pshared`).

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::mq::validate_posix_name;
use crate::shm::Region;
use crate::sys;
use crate::sys::sem::{NamedSem, RawSem};

/// Default permission bits of a new semaphore: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// The largest value a POSIX semaphore holds (`SEM_VALUE_MAX`).
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// glibc keeps a named semaphore in `/dev/shm/sem.NAME`: four bytes of the
/// file name go to the prefix.
const SEM_NAME_MAX: usize = 255 - 4;

fn explain_op(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EOVERFLOW) => io::Error::new(
            e.kind(),
            format!("semaphore value would exceed SEM_VALUE_MAX ({SEM_VALUE_MAX})"),
        ),
        Some(libc::EINVAL) => io::Error::new(
            e.kind(),
            "not a valid semaphore (was it initialised? has another process overwritten it?)",
        ),
        _ => e,
    }
}

/// Validates a named semaphore's name: one leading slash, no other, 1 to
/// 251 bytes after it (glibc stores it as `/dev/shm/sem.NAME`).
pub fn validate_name(name: &str) -> io::Result<CString> {
    let c = validate_posix_name("POSIX semaphore", "/jobs", name)?;
    if name.len() - 1 > SEM_NAME_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid POSIX semaphore name {name:?}: it is too long ({} bytes after the \
                 slash; at most {SEM_NAME_MAX}, as glibc adds \"sem.\")",
                name.len() - 1
            ),
        ));
    }
    Ok(c)
}

fn check_value(value: u32) -> io::Result<()> {
    if value > SEM_VALUE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a semaphore's value is at most SEM_VALUE_MAX ({SEM_VALUE_MAX}), not {value}"),
        ));
    }
    Ok(())
}

/// Creates or opens a [`NamedSemaphore`].
#[derive(Debug, Clone)]
pub struct SemaphoreBuilder {
    name: String,
    value: u32,
    mode: u32,
    keep: bool,
}

impl SemaphoreBuilder {
    /// The initial value of a new semaphore (default 0; ignored when opening).
    pub fn value(mut self, value: u32) -> Self {
        self.value = value;
        self
    }

    /// Permission bits for a new semaphore (default `0o600`; the umask
    /// applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Leave the semaphore in place when the [`NamedSemaphore`] that created
    /// it is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new semaphore with the initial [`value`](Self::value);
    /// fails if one of that name exists.
    pub fn create(self) -> io::Result<NamedSemaphore> {
        check_value(self.value)?;
        self.open_with(libc::O_CREAT | libc::O_EXCL)
    }

    /// Opens an existing semaphore; it is not unlinked on drop.
    pub fn open(self) -> io::Result<NamedSemaphore> {
        self.open_with(0)
    }

    /// Opens the semaphore, creating it with the initial value if it does
    /// not exist. Only a semaphore this call created is unlinked on drop.
    pub fn create_or_open(self) -> io::Result<NamedSemaphore> {
        crate::named::create_or_open(
            &format_args!("POSIX semaphore {}", self.name),
            || self.clone().create(),
            || self.clone().open(),
        )
    }

    fn open_with(self, create: libc::c_int) -> io::Result<NamedSemaphore> {
        let cname = validate_name(&self.name)?;
        if self.mode & !0o777 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mode {:o} has bits beyond the permission bits 0o777",
                    self.mode
                ),
            ));
        }
        let sem =
            NamedSem::open(&cname, create, self.mode, self.value).map_err(|e| self.explain(e))?;
        Ok(NamedSemaphore {
            sem,
            unlink_on_drop: create != 0 && !self.keep,
            name: self.name,
            cname,
        })
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let name = &self.name;
        let msg = match e.raw_os_error() {
            Some(libc::EEXIST) => format!("POSIX semaphore {name} already exists"),
            Some(libc::ENOENT) => format!("no POSIX semaphore named {name} (create it first)"),
            Some(libc::EACCES) => format!(
                "permission denied opening POSIX semaphore {name}: check the owner and mode of \
                 /dev/shm/sem.{}",
                &name[1..]
            ),
            _ => {
                return io::Error::new(e.kind(), format!("cannot open POSIX semaphore {name}: {e}"))
            }
        };
        io::Error::new(e.kind(), msg)
    }
}

/// A POSIX named semaphore (`sem_open(3)`), shared by every process that
/// opens the same name.
///
/// The creator unlinks the name on drop (unless kept); processes that have
/// it open keep using it until they close it.
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: NamedSem,
    name: String,
    cname: CString,
    unlink_on_drop: bool,
}

impl NamedSemaphore {
    /// A builder for the semaphore called `name` (`/something`).
    pub fn builder(name: impl Into<String>) -> SemaphoreBuilder {
        SemaphoreBuilder {
            name: name.into(),
            value: 0,
            mode: DEFAULT_MODE,
            keep: false,
        }
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the name in place when this value is dropped.
    pub fn keep(&mut self) {
        self.unlink_on_drop = false;
    }

    /// Removes the name now (`sem_unlink(3)`); the semaphore lives on for
    /// the processes that have it open.
    pub fn unlink(&mut self) -> io::Result<()> {
        self.unlink_on_drop = false;
        sys::sem::unlink(&self.cname)
    }
}

impl_posix_sem_ops!(NamedSemaphore, self => self.sem.raw());

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = sys::sem::unlink(&self.cname);
        }
    }
}

/// Removes the named semaphore `name` (`sem_unlink(3)`), as `rm
/// /dev/shm/sem.NAME` would.
pub fn unlink(name: &str) -> io::Result<()> {
    let c = validate_name(name)?;
    sys::sem::unlink(&c).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::new(e.kind(), format!("no POSIX semaphore named {name}")),
        Some(libc::EACCES) => io::Error::new(
            e.kind(),
            format!("removing POSIX semaphore {name}: permission denied"),
        ),
        _ => io::Error::new(e.kind(), format!("removing POSIX semaphore {name}: {e}")),
    })
}

/// Marks an initialised [`UnnamedSemaphore`] ("sem1").
const MAGIC: u32 = 0x7365_6d31;

/// A POSIX unnamed semaphore living inside shared memory (`sem_init(3)`
/// with `pshared` set), usable by every process that maps the region.
///
/// It takes [`UnnamedSemaphore::SIZE`] bytes at an offset that is a
/// multiple of 8: a marker word saying it was initialised, then the
/// `sem_t`. One process calls [`init`](Self::init) once; the others
/// [`open`](Self::open) it at the same offset, which checks the marker.
///
/// ```
/// use ipckit::sem::UnnamedSemaphore;
/// use ipckit::shm::Memfd;
///
/// let shm = Memfd::create("jobs", 4096)?; // pass it to another process
/// let free = UnnamedSemaphore::init(&shm, 0, 3)?; // three free slots
/// free.wait()?; // P: take one
/// assert_eq!(UnnamedSemaphore::open(&shm, 0)?.value()?, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// What another process writes over these bytes cannot harm this one's
/// memory safety, only the semaphore's count.
#[derive(Debug, Clone, Copy)]
pub struct UnnamedSemaphore<'r> {
    raw: &'r RawSem,
}

impl<'r> UnnamedSemaphore<'r> {
    /// The bytes a semaphore takes in a region.
    pub const SIZE: usize = 8 + size_of::<libc::sem_t>();

    fn slot(region: &'r Region, offset: usize) -> io::Result<(&'r AtomicU32, &'r RawSem)> {
        if offset
            .checked_add(Self::SIZE)
            .is_none_or(|end| end > region.len())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a semaphore takes {} bytes: they do not fit at offset {offset} of the \
                     {}-byte region",
                    Self::SIZE,
                    region.len()
                ),
            ));
        }
        let magic = region.place::<AtomicU32>("a semaphore", offset, 8)?;
        let raw = region.place::<RawSem>("a semaphore", offset + 8, 8)?;
        Ok((magic, raw))
    }

    /// Initialises a semaphore with `value` at `offset` of `region`. Call
    /// it once, in one process, before any process opens it; initialising
    /// one that processes are using breaks it for them.
    pub fn init(region: &'r Region, offset: usize, value: u32) -> io::Result<Self> {
        check_value(value)?;
        let (magic, raw) = Self::slot(region, offset)?;
        magic.store(0, Ordering::Relaxed);
        raw.init(value)?;
        magic.store(MAGIC, Ordering::Release);
        Ok(UnnamedSemaphore { raw })
    }

    /// The semaphore another process initialised at `offset` of `region`.
    pub fn open(region: &'r Region, offset: usize) -> io::Result<Self> {
        let (magic, raw) = Self::slot(region, offset)?;
        if magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "no semaphore at offset {offset} of this region: UnnamedSemaphore::init has \
                     not run there (yet)"
                ),
            ));
        }
        Ok(UnnamedSemaphore { raw })
    }
}

impl_posix_sem_ops!(UnnamedSemaphore<'_>, self => self.raw);
