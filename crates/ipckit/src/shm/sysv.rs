//! System V shared memory (`shmget(2)`, `shmat(2)`, `shmdt(2)`, `shmctl(2)`).

use std::io;
use std::time::SystemTime;

use super::Region;
use crate::sys;
use crate::sys::mman::Mapping;
use crate::sysv::{pid, time, Key, Perm, DEFAULT_MODE};

/// `SHM_DEST` in a segment's mode: marked for removal, gone when the last
/// process detaches.
const SHM_DEST: u32 = 0o1000;

/// A segment's status (`shmctl(IPC_STAT)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysvShmStatus {
    /// Key, owner, creator and mode.
    pub perm: Perm,
    /// Its size in bytes (`shm_segsz`).
    pub size: u64,
    /// How many attachments exist, in all processes (`shm_nattch`).
    pub attached: u64,
    /// The process that created it (`shm_cpid`).
    pub creator_pid: Option<u32>,
    /// The process that last attached or detached (`shm_lpid`).
    pub last_pid: Option<u32>,
    /// Last attach (`shm_atime`).
    pub last_attach: Option<SystemTime>,
    /// Last detach (`shm_dtime`).
    pub last_detach: Option<SystemTime>,
    /// Creation or last `IPC_SET` (`shm_ctime`).
    pub last_change: Option<SystemTime>,
    /// Marked for removal (`IPC_RMID`): it disappears once detached everywhere.
    pub removal_pending: bool,
}

/// Creates or attaches a [`SysvShm`].
#[derive(Debug, Clone)]
pub struct SysvShmBuilder {
    key: Key,
    size: Option<usize>,
    mode: u32,
    read_only: bool,
    keep: bool,
}

impl SysvShmBuilder {
    /// The size in bytes: required to create; when attaching, the segment
    /// must be at least this large.
    pub fn size(mut self, size: usize) -> Self {
        self.size = Some(size);
        self
    }

    /// Permission bits for a new segment (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Attach read-only (`SHM_RDONLY`).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Leave the segment in place when the [`SysvShm`] that created it is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new zero-filled segment and attaches it; fails if one with
    /// this key exists. With [`Key::PRIVATE`], always a new segment.
    #[doc(alias = "IPC_EXCL")]
    pub fn create(self) -> io::Result<SysvShm> {
        let size = match self.size {
            Some(s) if s > 0 => s,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "creating System V shared memory {} needs a size of at least 1 byte",
                        self.key
                    ),
                ))
            }
        };
        if self.mode & !0o777 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "mode {:o} has bits beyond the permission bits 0o777",
                    self.mode
                ),
            ));
        }
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as libc::c_int;
        let id = sys::mman::shmget(self.key.value(), size, flags).map_err(|e| self.explain(e))?;
        match SysvShm::attach(id, self.key, !self.read_only, !self.keep) {
            Ok(mut s) => {
                s.created = true;
                Ok(s)
            }
            Err(e) => {
                let _ = sys::mman::shm_remove(id);
                Err(e)
            }
        }
    }

    /// Attaches an existing segment; it is not removed on drop.
    pub fn open(self) -> io::Result<SysvShm> {
        if self.key == Key::PRIVATE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a private segment cannot be opened by key: use SysvShm::open_id with its id",
            ));
        }
        let asked = if self.read_only { 0o400 } else { 0o600 };
        let id = sys::mman::shmget(self.key.value(), 0, asked).map_err(|e| self.explain(e))?;
        let s = SysvShm::attach(id, self.key, !self.read_only, false)?;
        match self.size {
            Some(want) if want > s.len() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "System V shared memory {} is {} bytes, smaller than the {want} asked for",
                    self.key,
                    s.len()
                ),
            )),
            _ => Ok(s),
        }
    }

    /// Attaches the segment, creating it if it does not exist. Only a
    /// segment this call created is removed on drop.
    pub fn create_or_open(self) -> io::Result<SysvShm> {
        let key = self.key;
        crate::sysv::create_or_open(
            "System V shared memory",
            key,
            || self.clone().create(),
            || self.clone().open(),
        )
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let key = self.key;
        let msg =
            match e.raw_os_error() {
                Some(libc::EEXIST) => format!("System V shared memory {key} already exists"),
                Some(libc::ENOENT) => {
                    format!("no System V shared memory with key {key} (create it first)")
                }
                Some(libc::EACCES) => {
                    format!(
                "permission denied attaching System V shared memory {key}{}: check its owner \
                 and mode (ipcs -m)",
                if self.read_only { " read-only" } else { " for writing" }
            )
                }
                Some(libc::EINVAL) => format!(
                    "System V shared memory {key}: a size of {} bytes is outside shmmin..shmmax \
                 (see /proc/sys/kernel/shmmax), or the existing segment is smaller",
                    self.size.unwrap_or(0)
                ),
                Some(libc::ENOSPC) => format!(
                    "System V shared memory limit reached creating {key}: see \
                 /proc/sys/kernel/shmmni and shmall (ipcs -lm)"
                ),
                _ => {
                    return io::Error::new(
                        e.kind(),
                        format!("cannot get System V shared memory {key}: {e}"),
                    )
                }
            };
        io::Error::new(e.kind(), msg)
    }
}

/// An attached System V shared memory segment. Derefs to its [`Region`].
///
/// Dropping it detaches; the creator also marks the segment for removal
/// (unless kept), and the kernel frees it once every process has detached.
#[derive(Debug)]
pub struct SysvShm {
    region: Region,
    id: libc::c_int,
    key: Key,
    remove_on_drop: bool,
    created: bool,
}

impl SysvShm {
    /// A builder for the segment with `key`.
    pub fn builder(key: Key) -> SysvShmBuilder {
        SysvShmBuilder {
            key,
            size: None,
            mode: DEFAULT_MODE,
            read_only: false,
            keep: false,
        }
    }

    /// A builder for a new private segment (`IPC_PRIVATE`), reachable
    /// through its [`id`](SysvShm::id).
    pub fn private() -> SysvShmBuilder {
        Self::builder(Key::PRIVATE)
    }

    /// Attaches the segment with identifier `id` (as `ipcs -m` shows it);
    /// it is not removed on drop.
    pub fn open_id(id: i32, read_only: bool) -> io::Result<SysvShm> {
        let st = sys::mman::shm_stat(id).map_err(|e| {
            io::Error::new(e.kind(), format!("System V shared memory id {id}: {e}"))
        })?;
        Self::attach(id, Key::new(st.perm.key), !read_only, false)
    }

    fn attach(id: libc::c_int, key: Key, writable: bool, remove: bool) -> io::Result<SysvShm> {
        let st = sys::mman::shm_stat(id)?;
        let len = usize::try_from(st.size).map_err(|_| io::Error::other("segment too large"))?;
        let map = Mapping::attach(id, len, writable).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) => io::Error::new(
                e.kind(),
                format!(
                    "permission denied attaching System V shared memory {key}{}",
                    if writable { " for writing" } else { "" }
                ),
            ),
            _ => e,
        })?;
        Ok(SysvShm {
            region: Region::new(map),
            id,
            key,
            remove_on_drop: remove,
            created: false,
        })
    }

    /// The segment's identifier (`shmid`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The key it was opened with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether this handle made the object (`create`, or a
    /// `create_or_open` that found none): the creator initialises it, the
    /// others wait for that.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Leaves the segment in place when this value is dropped.
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    /// The segment's status.
    pub fn status(&self) -> io::Result<SysvShmStatus> {
        let s = sys::mman::shm_stat(self.id)?;
        Ok(SysvShmStatus {
            perm: s.perm.into(),
            size: s.size,
            attached: s.nattch,
            creator_pid: pid(s.cpid),
            last_pid: pid(s.lpid),
            last_attach: time(s.atime),
            last_detach: time(s.dtime),
            last_change: time(s.ctime),
            removal_pending: s.perm.mode & SHM_DEST != 0,
        })
    }

    /// Marks the segment for removal (`IPC_RMID`): its key is freed now, and
    /// the memory once every process has detached (this one keeps it until
    /// dropped).
    #[doc(alias = "IPC_RMID")]
    pub fn remove(&mut self) -> io::Result<()> {
        self.remove_on_drop = false;
        sys::mman::shm_remove(self.id)
    }
}

impl_region_object!(SysvShm);

impl Drop for SysvShm {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = sys::mman::shm_remove(self.id);
        }
    }
}

/// Marks the System V segment with `key` for removal, as `ipcrm -M` does.
pub fn remove_sysv(key: Key) -> io::Result<()> {
    if key == Key::PRIVATE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a private segment has no key to find it by: remove it by id (ipcrm -m ID)",
        ));
    }
    let id = sys::mman::shmget(key.value(), 0, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::new(
            e.kind(),
            format!("no System V shared memory with key {key}"),
        ),
        _ => io::Error::new(e.kind(), format!("System V shared memory {key}: {e}")),
    })?;
    sys::mman::shm_remove(id).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => io::Error::new(
            e.kind(),
            format!(
                "removing System V shared memory {key}: only its owner or creator, or a \
                 privileged process, may do that"
            ),
        ),
        _ => e,
    })
}

/// Marks the System V segment with identifier `id` (as `ipcs -m` shows it)
/// for removal, as `ipcrm -m ID` does: the only way to name a private
/// segment (key 0) from outside.
pub fn remove_sysv_id(id: i32) -> io::Result<()> {
    sys::mman::shm_remove(id)
        .map_err(|e| crate::sysv::explain_remove_id(e, "shared memory segment", id))
}
