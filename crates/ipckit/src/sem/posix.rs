//! POSIX semaphores: named (as `sem_open(3)` makes them) and unnamed in
//! shared memory (as `sem_init(3)` with `pshared`).
//!
//! Both are ipckit's own code on a futex, over the same bytes glibc uses
//! for a `sem_t` (a 64-bit word: the value in the low half, the number of
//! sleepers in the high half; then a flag word), so C programs calling
//! `sem_post`/`sem_wait` on the same semaphore interoperate. glibc's own
//! functions are never called on these bytes: another process can write
//! anything there, and glibc aborts the process on values it does not
//! expect. This code takes every bit pattern as some count and some number
//! of sleepers, and at worst miscounts.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::mq::validate_posix_name;
use crate::named::{remove_if_same, FileId};
use crate::shm::Region;
use crate::sys;
use crate::sys::mman::Mapping;
use crate::sys::sync::{futex_wait_low, futex_wake_low};

/// Default permission bits of a new semaphore: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// The largest value a POSIX semaphore holds (`SEM_VALUE_MAX`).
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// glibc keeps a named semaphore in `/dev/shm/sem.NAME`: four bytes of the
/// file name go to the prefix.
const SEM_NAME_MAX: usize = 255 - 4;

/// Where named semaphores live, as glibc's `sem_open` puts them.
const SEM_DIR: &str = "/dev/shm";

/// The size of a `sem_t`: a named semaphore's file is at least this long.
const SEM_T: usize = size_of::<libc::sem_t>();

/// A counting semaphore on one 64-bit word in shared memory, laid out as
/// glibc's (x86-64 and other 64-bit targets): the value in the low 32 bits,
/// which is the futex, and the number of sleepers in the high 32 bits, so
/// that a post sees in one atomic step whether to wake anyone.
#[derive(Debug, Clone, Copy)]
struct SemWord<'a>(&'a AtomicU64);

const VALUE: u64 = 0xffff_ffff;
const SLEEPER: u64 = 1 << 32;

impl SemWord<'_> {
    fn value(self) -> u32 {
        (self.0.load(Ordering::Relaxed) & VALUE) as u32
    }

    fn try_wait(self) -> bool {
        let mut d = self.0.load(Ordering::Relaxed);
        while d & VALUE != 0 {
            match self
                .0
                .compare_exchange_weak(d, d - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => d = now,
            }
        }
        false
    }

    /// Takes one, sleeping while the value is 0; false if `deadline` passed.
    fn wait_until(self, deadline: Option<Instant>) -> io::Result<bool> {
        if self.try_wait() {
            return Ok(true);
        }
        // Count this thread as a sleeper: from now on a post wakes someone.
        let mut d = self
            .0
            .fetch_add(SLEEPER, Ordering::Relaxed)
            .wrapping_add(SLEEPER);
        let r = loop {
            if d & VALUE != 0 {
                // Take one and stop being a sleeper, in one step.
                let new = (d - 1).wrapping_sub(SLEEPER);
                match self
                    .0
                    .compare_exchange_weak(d, new, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(true),
                    Err(now) => d = now,
                }
                continue;
            }
            if deadline.is_some_and(|t| Instant::now() >= t) {
                break Ok(false);
            }
            if let Err(e) = futex_wait_low(self.0, 0, deadline) {
                break Err(e);
            }
            d = self.0.load(Ordering::Relaxed);
        };
        self.0.fetch_sub(SLEEPER, Ordering::Relaxed);
        r
    }

    /// Takes one, or sleeps once while the value is 0 (as a counted
    /// sleeper, so a post wakes it) and tries again: false if it still
    /// got none (woken for another reason). For a waiting helper thread,
    /// which a futex wake stops.
    fn wait_once(self) -> io::Result<bool> {
        if self.try_wait() {
            return Ok(true);
        }
        let d = self
            .0
            .fetch_add(SLEEPER, Ordering::Relaxed)
            .wrapping_add(SLEEPER);
        let r = if d & VALUE == 0 {
            futex_wait_low(self.0, 0, None).map(drop)
        } else {
            Ok(())
        };
        self.0.fetch_sub(SLEEPER, Ordering::Relaxed);
        r.map(|()| self.try_wait())
    }

    /// Wakes every sleeper (each tries again).
    fn wake_all(self) -> io::Result<()> {
        futex_wake_low(self.0, i32::MAX as u32).map(drop)
    }

    fn post(self) -> io::Result<()> {
        let mut d = self.0.load(Ordering::Relaxed);
        loop {
            if d & VALUE >= u64::from(SEM_VALUE_MAX) {
                return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
            }
            match self
                .0
                .compare_exchange_weak(d, d + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => d = now,
            }
        }
        if d >> 32 != 0 {
            futex_wake_low(self.0, 1)?;
        }
        Ok(())
    }
}

/// glibc's flag word for a semaphore shared between processes
/// (`FUTEX_SHARED`, which is `FUTEX_PRIVATE_FLAG`: glibc flips the bit),
/// so that C programs using it sleep on a shared futex too.
const SHARED: u32 = 128;

/// The bytes of a fresh `sem_t` holding `value`, shared between processes.
fn sem_bytes(value: u32) -> [u8; SEM_T] {
    let mut b = [0u8; SEM_T];
    b[..8].copy_from_slice(&u64::from(value).to_ne_bytes());
    b[8..12].copy_from_slice(&SHARED.to_ne_bytes());
    b
}

/// The semaphore word at `offset` of `region`.
fn sem_word<'r>(region: &'r Region, offset: usize) -> io::Result<SemWord<'r>> {
    region
        .place::<AtomicU64>("a semaphore", offset, 8)
        .map(SemWord)
}

fn init_word(region: &Region, offset: usize, value: u32) -> io::Result<()> {
    region.write(offset + 8, &sem_bytes(value)[8..])?;
    sem_word(region, offset)?
        .0
        .store(u64::from(value), Ordering::Release);
    Ok(())
}

fn explain_op(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EOVERFLOW) => io::Error::new(
            e.kind(),
            format!("semaphore value would exceed SEM_VALUE_MAX ({SEM_VALUE_MAX})"),
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

    /// Permission bits for a new semaphore (default `0o600`), set exactly,
    /// whatever the umask.
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
        validate_name(&self.name)?;
        if self.mode & !0o777 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mode {:o} has bits beyond the permission bits 0o777",
                    self.mode
                ),
            ));
        }
        let path = PathBuf::from(format!("{SEM_DIR}/sem.{}", &self.name[1..]));
        let file = if create != 0 {
            self.create_file(&path)
        } else {
            // Opened once, without following a symlink; then checked on
            // the descriptor.
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        }
        .map_err(|e| self.explain(e))?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() || meta.len() < SEM_T as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a POSIX semaphore (not a regular file of at least {SEM_T} bytes)",
                    path.display()
                ),
            ));
        }
        let region = Region::new(Mapping::map(file.as_fd(), 0, SEM_T, true)?);
        let sem = NamedSemaphore {
            id: FileId::of(&meta),
            region,
            unlink_on_drop: create != 0 && !self.keep,
            created: create != 0,
            name: self.name,
            path,
        };
        // Placing the word checks the mapping once: every later use of it
        // cannot fail.
        sem.word()?;
        Ok(sem)
    }

    /// Makes the semaphore's file complete before it has a name (as glibc
    /// does): an anonymous file in `/dev/shm` with the exact mode and the
    /// initial value, then linked to its name, which fails if the name
    /// exists.
    fn create_file(&self, path: &std::path::Path) -> io::Result<File> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(self.mode)
            .open(SEM_DIR)?;
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        file.write_all(&sem_bytes(self.value))?;
        sys::fd::link_anonymous(file.as_fd(), path)?;
        Ok(file)
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
            Some(libc::ELOOP) => format!(
                "/dev/shm/sem.{} is a symbolic link, not POSIX semaphore {name}: refused",
                &name[1..]
            ),
            Some(libc::ENOSPC) => {
                return crate::named::dev_shm_full(e, &format!("POSIX semaphore {name}"))
            }
            _ => {
                return io::Error::new(e.kind(), format!("cannot open POSIX semaphore {name}: {e}"))
            }
        };
        io::Error::new(e.kind(), msg)
    }
}

/// A POSIX named semaphore, shared by every process that opens the same
/// name: the file `/dev/shm/sem.NAME` that `sem_open(3)` uses, so C
/// programs and ipckit share named semaphores.
///
/// The file is opened once without following symbolic links and checked on
/// the descriptor; the semaphore itself is ipckit's futex code, safe
/// against whatever another process writes into the file (see
/// [the module docs](crate::sem#safe-against-the-other-process)). The creator unlinks the name on drop (unless kept), and only if
/// the name still leads to the file it created; processes that have it
/// open keep using it until they drop it.
#[derive(Debug)]
pub struct NamedSemaphore {
    region: Region,
    id: FileId,
    name: String,
    path: PathBuf,
    unlink_on_drop: bool,
    created: bool,
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

    /// Whether this handle made the object (`create`, or a
    /// `create_or_open` that found none): the creator initialises it, the
    /// others wait for that.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the name in place when this value is dropped.
    pub fn keep(&mut self) {
        self.unlink_on_drop = false;
    }

    /// Removes the name now (as `sem_unlink(3)`), if it still leads to
    /// this semaphore; the semaphore lives on for the processes that have
    /// it open.
    pub fn unlink(&mut self) -> io::Result<()> {
        self.unlink_on_drop = false;
        if remove_if_same(&self.path, self.id)? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is no longer POSIX semaphore {} (removed or replaced): left alone",
                    self.path.display(),
                    self.name
                ),
            ))
        }
    }

    fn word(&self) -> io::Result<SemWord<'_>> {
        sem_word(&self.region, 0)
    }
}

impl_posix_sem_ops!(NamedSemaphore, self => self.word()?, self.region);

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = remove_if_same(&self.path, self.id);
        }
    }
}

/// Removes the named semaphore `name` (as `sem_unlink(3)`), as `rm
/// /dev/shm/sem.NAME` would.
pub fn unlink(name: &str) -> io::Result<()> {
    validate_name(name)?;
    std::fs::remove_file(format!("{SEM_DIR}/sem.{}", &name[1..])).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOENT) => {
                io::Error::new(e.kind(), format!("no POSIX semaphore named {name}"))
            }
            Some(libc::EACCES) => io::Error::new(
                e.kind(),
                format!("removing POSIX semaphore {name}: permission denied"),
            ),
            _ => io::Error::new(e.kind(), format!("removing POSIX semaphore {name}: {e}")),
        }
    })
}

/// Marks an initialised [`UnnamedSemaphore`] ("sem1").
const MAGIC: u32 = 0x7365_6d31;

/// A POSIX unnamed semaphore living inside shared memory (as `sem_init(3)`
/// with `pshared` set), usable by every process that maps the region.
///
/// It takes [`UnnamedSemaphore::SIZE`] bytes at an offset that is a
/// multiple of 8: a marker word saying it was initialised, then the bytes
/// of a `sem_t` (a C program may `sem_post` the `sem_t` at offset + 8).
/// One process calls [`init`](Self::init) once; the others
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
/// What another process writes over these bytes is read as some count and
/// some number of sleepers: it can make waits succeed or time out when
/// they should not, and posts fail with "would exceed SEM_VALUE_MAX", never
/// crash or hang this process past a timeout.
#[derive(Debug, Clone, Copy)]
pub struct UnnamedSemaphore<'r> {
    raw: SemWord<'r>,
    region: &'r Region,
}

impl<'r> UnnamedSemaphore<'r> {
    /// The bytes a semaphore takes in a region.
    pub const SIZE: usize = 8 + SEM_T;

    fn slot(region: &'r Region, offset: usize) -> io::Result<(&'r AtomicU32, SemWord<'r>)> {
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
        let raw = sem_word(region, offset + 8)?;
        Ok((magic, raw))
    }

    /// Initialises a semaphore with `value` at `offset` of `region`. Call
    /// it once, in one process, before any process opens it; initialising
    /// one that processes are using breaks it for them.
    pub fn init(region: &'r Region, offset: usize, value: u32) -> io::Result<Self> {
        check_value(value)?;
        let (magic, raw) = Self::slot(region, offset)?;
        magic.store(0, Ordering::Relaxed);
        init_word(region, offset + 8, value)?;
        magic.store(MAGIC, Ordering::Release);
        Ok(UnnamedSemaphore { raw, region })
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
        Ok(UnnamedSemaphore { raw, region })
    }
}

impl_posix_sem_ops!(UnnamedSemaphore<'_>, self => self.raw, self.region);
