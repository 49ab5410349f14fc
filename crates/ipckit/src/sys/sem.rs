//! System V semaphores (`semget(2)`, `semop(2)`, `semctl(2)`). POSIX
//! semaphores are ipckit's own code on futexes (`crate::sem`), not glibc's.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use super::msg::RawPerm;
use super::{syscall, timespec};

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
