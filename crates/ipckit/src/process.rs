//! Process placement (which CPUs a process may run on), lifetime (a
//! helper process that must not outlive the one that started it), and
//! descriptors handed to a child beyond its standard input and output
//! ([`pass_fds`] in the parent, [`inherited_fd`] in the child).
//!
//! IPC latency depends on where the two processes run: on one core they
//! take turns, on two cores they run at once, across sockets every cache
//! line travels further. `ipc bench` pins its two processes with these.
//!
//! # Handing a child descriptors
//!
//! ```no_run
//! use std::process::Command;
//! use ipckit::ring::Ring;
//!
//! // Parent: the child gets the ring's memfd as descriptor 3, named "jobs".
//! let ring = Ring::anonymous().create()?;
//! let mut cmd = Command::new("worker");
//! ipckit::process::pass_fds(&mut cmd, [("jobs", ring.fd().try_clone_to_owned()?, 3)])?;
//! let child = cmd.spawn()?;
//!
//! // Child (the worker): take it by name.
//! let jobs = Ring::from_fd(ipckit::process::inherited_fd("jobs")?)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `sched_setaffinity(2)`, `sched_getaffinity(2)`, `prctl(2)`
//! (`PR_SET_PDEATHSIG`), `fcntl(2)` (`FD_CLOEXEC`).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Mutex;

/// The environment variable that tells a child which descriptors its
/// parent passed: `NAME=FD:DEV:INO,...`.
pub const FDS_VAR: &str = "IPCKIT_FDS";

/// Arranges for the child that `cmd` starts to get each `(name, fd,
/// child_fd)`'s `fd` as descriptor `child_fd` (3 and up), findable by
/// `name` with [`inherited_fd`]. All of a command's descriptors are passed
/// in one call. Uses the `command-fds` crate for the mapping.
pub fn pass_fds<'a>(
    cmd: &mut Command,
    fds: impl IntoIterator<Item = (&'a str, OwnedFd, RawFd)>,
) -> io::Result<()> {
    let mut mappings = Vec::new();
    let mut spec = Vec::new();
    for (name, fd, child_fd) in fds {
        if child_fd < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {child_fd} is standard input, output or error: pass {name:?} as 3 or above"),
            ));
        }
        if name.is_empty() || name.contains([',', '=', ':']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a passed descriptor's name cannot be empty or hold ',', '=' or ':' ({name:?})"
                ),
            ));
        }
        let (dev, ino) = crate::sys::fd::identity(fd.as_raw_fd()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an open descriptor"),
            )
        })?;
        spec.push(format!("{name}={child_fd}:{dev}:{ino}"));
        mappings.push(command_fds::FdMapping {
            parent_fd: fd,
            child_fd,
        });
    }
    command_fds::CommandFdExt::fd_mappings(cmd, mappings).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "two passed descriptors want the same number in the child",
        )
    })?;
    cmd.env(FDS_VAR, spec.join(","));
    Ok(())
}

/// Takes the descriptor the parent passed under `name` ([`pass_fds`]): once
/// per name, and only while it is still the file the parent passed (its
/// device and inode are checked), so that it can never take a descriptor
/// this process opened itself. It is made close-on-exec.
pub fn inherited_fd(name: &str) -> io::Result<OwnedFd> {
    static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);
    let spec = std::env::var(FDS_VAR).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no descriptors were passed to this process ({FDS_VAR} is not set)"),
        )
    })?;
    let entry = spec
        .split(',')
        .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no descriptor named {name:?} was passed ({FDS_VAR}={spec})"),
            )
        })?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad {FDS_VAR} entry {entry:?}"),
        )
    };
    let mut it = entry.split(':');
    let mut num = || {
        it.next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(bad)
    };
    let fd = RawFd::try_from(num()?).map_err(|_| bad())?;
    let (dev, ino) = (num()?, num()?);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    if !taken.insert(fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("the descriptor named {name:?} (number {fd}) was already taken"),
        ));
    }
    crate::sys::fd::claim_inherited(fd, dev, ino).inspect_err(|_| {
        taken.remove(&fd);
    })
}

/// The CPUs this process is allowed to run on.
#[doc(alias = "sched_getaffinity")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    crate::sys::process::allowed_cpus()
}

/// Pins the calling thread to `cpu`.
#[doc(alias = "sched_setaffinity")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    crate::sys::process::pin_to_cpus(&[cpu])
        .map_err(|e| io::Error::new(e.kind(), format!("cannot pin to CPU {cpu}: {e}")))
}

/// Lets the calling thread run on the CPUs `cpus` only (and the
/// processes it starts after this, which inherit it): [`allowed_cpus`]
/// taken before a [`pin_to_cpu`] undoes it.
#[doc(alias = "sched_setaffinity")]
pub fn pin_to_cpus(cpus: &[usize]) -> io::Result<()> {
    crate::sys::process::pin_to_cpus(cpus)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot pin to CPUs {cpus:?}: {e}")))
}

/// Makes the kernel kill this process (`SIGKILL`) when its parent exits
/// (`prctl(2)` `PR_SET_PDEATHSIG`), for a helper process that must not be
/// left running by a parent that was killed. `parent` is the pid the
/// parent gave the helper: if the parent died before this call (the
/// helper's parent is then another process), this fails with an error
/// saying so, and the helper should exit.
///
/// Strictly, the signal comes when the *thread* that started the process
/// ends: start helpers from a thread that lives as long as they should.
#[doc(alias = "PR_SET_PDEATHSIG")]
pub fn exit_with_parent(parent: u32) -> io::Result<()> {
    crate::sys::process::set_parent_death_signal(libc::SIGKILL)?;
    let now = crate::sys::process::parent_pid();
    if now != parent {
        return Err(io::Error::other(format!(
            "the parent process {parent} has already exited (this process's parent is now {now})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own: affinity belongs to the thread.
    #[test]
    fn pinning_narrows_and_widens_again_and_refuses_nonsense() {
        std::thread::spawn(|| {
            let all = allowed_cpus().unwrap();
            pin_to_cpu(all[0]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), [all[0]]);
            pin_to_cpus(&all).unwrap();
            assert_eq!(allowed_cpus().unwrap(), all);
            let e = pin_to_cpus(&[]).unwrap_err();
            assert!(e.to_string().contains("no CPU given"), "{e}");
            let e = pin_to_cpu(1 << 20).unwrap_err();
            assert!(e.to_string().contains("CPU 1048576"), "{e}");
        })
        .join()
        .unwrap();
    }
}
