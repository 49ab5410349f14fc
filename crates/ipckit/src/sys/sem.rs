//! Semaphores: POSIX (`sem_overview(7)`: `sem_open(3)`, `sem_init(3)`,
//! `sem_wait(3)`, `sem_post(3)`) and System V (`semget(2)`, `semop(2)`,
//! `semctl(2)`).

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::msg::RawPerm;
use super::{monotonic_at, syscall, timespec};

extern "C" {
    // glibc 2.30 and later; not (yet) declared by the libc crate.
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// A POSIX semaphore in memory shared with other processes: a named one
/// mapped by `sem_open`, or an unnamed one inside a shared region.
///
/// Only ever handled by reference to memory that stays mapped while the
/// reference lives (a [`NamedSem`] or a `Mapping`).
#[repr(transparent)]
pub(crate) struct RawSem(UnsafeCell<libc::sem_t>);

// SAFETY: the sem_* functions are thread-safe on a shared semaphore; this
// type is only accessed through them.
unsafe impl Sync for RawSem {}

// SAFETY: all bytes of a `sem_t` are plain integers (glibc: a 64-bit
// value-and-waiters word and a private flag), accessed only through the
// sem_* calls, which use atomics and futexes: any bit pattern written by
// another process gives wrong counts, never memory unsafety here.
unsafe impl super::mman::InPlace for RawSem {}

impl std::fmt::Debug for RawSem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sem_t")
    }
}

impl RawSem {
    fn ptr(&self) -> *mut libc::sem_t {
        self.0.get()
    }

    /// `sem_init(3)` with `pshared` set: usable by every process mapping it.
    pub(crate) fn init(&self, value: u32) -> io::Result<()> {
        // SAFETY: the semaphore lies in mapped memory (type invariant); the
        // caller initialises it before anyone uses it.
        syscall!(sem_init(self.ptr(), 1, value))?;
        Ok(())
    }

    /// `sem_wait(3)`, retried when a signal interrupts it.
    pub(crate) fn wait(&self) -> io::Result<()> {
        // SAFETY: a mapped semaphore (type invariant).
        syscall!(sem_wait(self.ptr()))?;
        Ok(())
    }

    /// `sem_trywait(3)`: false if the value is 0.
    pub(crate) fn try_wait(&self) -> io::Result<bool> {
        // SAFETY: a mapped semaphore (type invariant).
        match syscall!(sem_trywait(self.ptr())) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `sem_clockwait(3)` on `CLOCK_MONOTONIC` until `deadline`: false on
    /// timeout.
    pub(crate) fn wait_until(&self, deadline: Instant) -> io::Result<bool> {
        let at = monotonic_at(deadline);
        loop {
            // SAFETY: a mapped semaphore (type invariant); `at` is valid.
            let r = unsafe { sem_clockwait(self.ptr(), libc::CLOCK_MONOTONIC, &at) };
            if r == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// `sem_post(3)`.
    pub(crate) fn post(&self) -> io::Result<()> {
        // SAFETY: a mapped semaphore (type invariant).
        syscall!(sem_post(self.ptr()))?;
        Ok(())
    }

    /// `sem_getvalue(3)`.
    pub(crate) fn value(&self) -> io::Result<u32> {
        let mut v: libc::c_int = 0;
        // SAFETY: a mapped semaphore (type invariant); `v` is writable.
        syscall!(sem_getvalue(self.ptr(), &mut v))?;
        Ok(v.max(0) as u32)
    }
}

/// A named semaphore opened with `sem_open(3)`; closed (`sem_close`) on
/// drop.
#[derive(Debug)]
pub(crate) struct NamedSem(NonNull<libc::sem_t>);

// SAFETY: the pointer is to a process-wide mapping made by sem_open, valid
// until sem_close, and the sem_* calls are thread-safe.
unsafe impl Send for NamedSem {}
// SAFETY: as above.
unsafe impl Sync for NamedSem {}

impl NamedSem {
    /// `sem_open(3)`; `value` is used only when `oflag` has `O_CREAT`.
    pub(crate) fn open(
        name: &CStr,
        oflag: libc::c_int,
        mode: u32,
        value: u32,
    ) -> io::Result<NamedSem> {
        loop {
            // SAFETY: `name` is NUL-terminated; the variadic mode and value
            // are passed with the types sem_open reads (mode_t, unsigned int).
            let p = unsafe {
                libc::sem_open(
                    name.as_ptr(),
                    oflag,
                    mode as libc::mode_t,
                    value as libc::c_uint,
                )
            };
            if p != libc::SEM_FAILED {
                if let Some(p) = NonNull::new(p) {
                    return Ok(NamedSem(p));
                }
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(crate) fn raw(&self) -> &RawSem {
        // SAFETY: sem_open's mapping stays valid until sem_close in drop, so
        // for as long as `self` is borrowed; RawSem is a transparent wrapper.
        unsafe { &*self.0.as_ptr().cast::<RawSem>() }
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        // SAFETY: opened by sem_open and closed only here.
        unsafe { libc::sem_close(self.0.as_ptr()) };
    }
}

/// `sem_unlink(3)`.
pub(crate) fn unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    syscall!(sem_unlink(name.as_ptr()))?;
    Ok(())
}

// ---- System V ----

/// `semget(2)`.
pub(crate) fn get(key: libc::key_t, nsems: usize, flags: libc::c_int) -> io::Result<libc::c_int> {
    let n = libc::c_int::try_from(nsems)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many semaphores"))?;
    // SAFETY: plain integer arguments.
    syscall!(semget(key, n, flags))
}

/// One `struct sembuf`.
pub(crate) fn sembuf(num: u16, op: i16, flags: i16) -> libc::sembuf {
    libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: flags,
    }
}

/// One `semtimedop(2)` (`semop` without a timeout). Not retried: `EINTR`
/// and a timeout (`EAGAIN`, reported as `WouldBlock` like `IPC_NOWAIT`)
/// are for the caller to handle.
pub(crate) fn op(
    id: libc::c_int,
    ops: &mut [libc::sembuf],
    timeout: Option<Duration>,
) -> io::Result<()> {
    let ts = timeout.map(timespec);
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `ops` is a valid array of `ops.len()` sembufs, `tsp` null or a
    // valid timespec, both readable for the call. glibc has no wrapper in
    // the libc crate, hence the raw system call.
    let r = unsafe { libc::syscall(libc::SYS_semtimedop, id, ops.as_mut_ptr(), ops.len(), tsp) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The fourth argument of `semctl(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
union Semun {
    val: libc::c_int,
    buf: *mut libc::semid_ds,
    array: *mut libc::c_ushort,
}

fn ctl(id: libc::c_int, num: usize, cmd: libc::c_int, arg: Semun) -> io::Result<libc::c_int> {
    let num = libc::c_int::try_from(num)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "semaphore number too large"))?;
    // SAFETY: `arg` is the union semctl reads for `cmd`; the callers below
    // make any pointer in it valid for what `cmd` reads or writes.
    syscall!(semctl(id, num, cmd, arg))
}

/// `semctl` GETVAL, GETNCNT, GETZCNT or GETPID of semaphore `num`.
pub(crate) fn get_one(id: libc::c_int, num: usize, cmd: libc::c_int) -> io::Result<i32> {
    ctl(id, num, cmd, Semun { val: 0 })
}

/// `semctl(SETVAL)`.
pub(crate) fn set_one(id: libc::c_int, num: usize, value: u16) -> io::Result<()> {
    ctl(
        id,
        num,
        libc::SETVAL,
        Semun {
            val: libc::c_int::from(value),
        },
    )?;
    Ok(())
}

/// `semctl(GETALL)` of a set of `n` semaphores.
pub(crate) fn get_all(id: libc::c_int, n: usize) -> io::Result<Vec<u16>> {
    let mut v = vec![0 as libc::c_ushort; n];
    ctl(
        id,
        0,
        libc::GETALL,
        Semun {
            array: v.as_mut_ptr(),
        },
    )?;
    Ok(v)
}

/// `semctl(SETALL)`; `values.len()` must be the set's size.
pub(crate) fn set_all(id: libc::c_int, values: &[u16]) -> io::Result<()> {
    // SETALL only reads the array; the kernel copies nsems values.
    let mut v = values.to_vec();
    ctl(
        id,
        0,
        libc::SETALL,
        Semun {
            array: v.as_mut_ptr(),
        },
    )?;
    Ok(())
}

/// A set's `struct semid_ds`, in fixed-width types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSemStatus {
    pub perm: RawPerm,
    pub nsems: u64,
    pub otime: i64,
    pub ctime: i64,
}

fn stat_ds(id: libc::c_int) -> io::Result<libc::semid_ds> {
    let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
    ctl(
        id,
        0,
        libc::IPC_STAT,
        Semun {
            buf: ds.as_mut_ptr(),
        },
    )?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    Ok(unsafe { ds.assume_init() })
}

/// `semctl(IPC_STAT)`.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn stat(id: libc::c_int) -> io::Result<RawSemStatus> {
    let ds = stat_ds(id)?;
    Ok(RawSemStatus {
        perm: RawPerm::from(&ds.sem_perm),
        nsems: ds.sem_nsems as u64,
        otime: ds.sem_otime as i64,
        ctime: ds.sem_ctime as i64,
    })
}

/// `semctl(IPC_SET)` of the permission bits, keeping the owner.
pub(crate) fn set_mode(id: libc::c_int, mode: u32) -> io::Result<()> {
    let mut ds = stat_ds(id)?;
    ds.sem_perm.mode = (ds.sem_perm.mode & !0o777) | (mode & 0o777) as libc::c_ushort;
    ctl(id, 0, libc::IPC_SET, Semun { buf: &mut ds })?;
    Ok(())
}

/// `semctl(IPC_RMID)`: removes the set, waking every waiting process with
/// `EIDRM`.
pub(crate) fn remove(id: libc::c_int) -> io::Result<()> {
    ctl(id, 0, libc::IPC_RMID, Semun { val: 0 })?;
    Ok(())
}
