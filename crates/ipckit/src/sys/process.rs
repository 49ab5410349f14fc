//! Process-wide state: CPU affinity and the `SIGPIPE` disposition.

use std::io;
use std::mem::MaybeUninit;
use std::ptr;

use super::syscall;

/// The CPUs this process may run on (`sched_getaffinity(2)`).
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed();
    // SAFETY: `set` points to a writable cpu_set_t of the size passed.
    syscall!(sched_getaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        set.as_mut_ptr()
    ))?;
    // SAFETY: zero-initialised and then filled by the kernel.
    let set = unsafe { set.assume_init() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads the set, for indices below its capacity.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to the CPUs `cpus` (`sched_setaffinity(2)`).
pub(crate) fn pin_to_cpus(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no CPU given: a thread must be allowed at least one",
        ));
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if let Some(&cpu) = cpus.iter().find(|&&c| c >= max) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "CPU {cpu} is beyond the largest supported CPU number {}",
                max - 1
            ),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes one bit below the set's capacity (checked
        // above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))?;
    Ok(())
}

/// Whether `SIGPIPE` still has its default action (terminate the process).
///
/// Rust programs start with `SIGPIPE` ignored, but a library cannot rely on
/// it: a C host program or a child started with the default disposition
/// would be killed by a write to a pipe without a reader.
pub(crate) fn sigpipe_is_default() -> bool {
    // Miri cannot run sigaction(2), and raises no SIGPIPE: a write without
    // a reader is only EPIPE there.
    if cfg!(miri) {
        return false;
    }
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is writable.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return true;
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_DFL
}

/// Runs `f` with `SIGPIPE` blocked in this thread, and if `f` fails with
/// `EPIPE`, consumes the `SIGPIPE` it raised so the signal is never
/// delivered. A `SIGPIPE` that was already pending before is left alone.
pub(crate) fn without_sigpipe<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
    let mut pending = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: every set is a writable sigset_t; sigemptyset/sigaddset
    // initialise `set` before pthread_sigmask reads it.
    let was_pending = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), old.as_mut_ptr());
        libc::sigpending(pending.as_mut_ptr());
        libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1
    };
    let res = f();
    if !was_pending && matches!(&res, Err(e) if e.raw_os_error() == Some(libc::EPIPE)) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `set` holds SIGPIPE only; a zero timeout never blocks.
        unsafe { libc::sigtimedwait(set.as_ptr(), ptr::null_mut(), &zero) };
    }
    // SAFETY: `old` was filled by the first pthread_sigmask call.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), ptr::null_mut()) };
    res
}

/// `geteuid(2)`.
/// The soft limit of `resource` (`getrlimit(2)`); `None` for unlimited.
pub(crate) fn soft_limit(resource: libc::__rlimit_resource_t) -> io::Result<Option<u64>> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill in.
    syscall!(getrlimit(resource, &mut r))?;
    Ok((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `getegid(2)`.
pub(crate) fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: the kernel sends `sig` to this process
/// when the thread that created it exits.
pub(crate) fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number; the unused
    // arguments are zero.
    syscall!(prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0))?;
    Ok(())
}

/// `getppid(2)`.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// Gives the calling thread a mount namespace of its own (`unshare(2)`
/// with `CLONE_NEWNS`, which also unshares its file system attributes),
/// in which every mount is then made private, so that nothing mounted in
/// it is seen anywhere else. Needs `CAP_SYS_ADMIN`. Meant for a thread
/// that does this one job and exits: the namespace goes with it.
pub(crate) fn private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare takes flags only; CLONE_NEWNS affects this thread.
    syscall!(unshare(libc::CLONE_NEWNS))?;
    // SAFETY: the source, type and data are null (allowed for a
    // propagation change); the target is a NUL-terminated literal.
    syscall!(mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))?;
    Ok(())
}

/// Mounts the POSIX message queue file system of this process's IPC
/// namespace at `target` (`mount(2)`, as `mount -t mqueue none TARGET`).
pub(crate) fn mount_mqueue(target: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: source, target and type are NUL-terminated strings that
    // outlive the call; the data pointer is null (no options).
    syscall!(mount(
        c"mqueue".as_ptr(),
        target.as_ptr(),
        c"mqueue".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    ))?;
    Ok(())
}

/// A pidfd for process `pid` (`pidfd_open(2)`), readable once it exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers; the kernel checks the pid.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the rest of `buf` is writable for its length.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}
