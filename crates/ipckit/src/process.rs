//! Process placement (which CPUs a process may run on) and lifetime (a
//! helper process that must not outlive the one that started it).
//!
//! IPC latency depends on where the two processes run: on one core they
//! take turns, on two cores they run at once, across sockets every cache
//! line travels further. `ipc bench` pins its two processes with these.
//!
//! # References
//! `sched_setaffinity(2)`, `sched_getaffinity(2)`, `prctl(2)`
//! (`PR_SET_PDEATHSIG`).

use std::io;

/// The CPUs this process is allowed to run on.
#[doc(alias = "sched_getaffinity")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    crate::sys::process::allowed_cpus()
}

/// Pins the calling thread to `cpu`.
#[doc(alias = "sched_setaffinity")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    crate::sys::process::pin_to_cpu(cpu)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot pin to CPU {cpu}: {e}")))
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
