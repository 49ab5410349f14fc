//! Process placement: which CPUs a process may run on.
//!
//! IPC latency depends on where the two processes run: on one core they
//! take turns, on two cores they run at once, across sockets every cache
//! line travels further. `ipc bench` pins its two processes with these.
//!
//! # References
//! `sched_setaffinity(2)`, `sched_getaffinity(2)`.

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
