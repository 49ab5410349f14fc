//! What a bench makes, so that an interrupted one (SIGINT, SIGTERM,
//! SIGHUP) removes it all before it exits: its temporary directory (FIFOs,
//! socket files), System V queues and semaphore sets (private ones, which
//! `ipc rm` cannot name), POSIX queues, and its peer processes.
//!
//! Objects are registered when made and forgotten once the measurement
//! that made them has removed them (so that an id reused by someone else
//! later is never touched). A peer also dies by itself if the bench does
//! (`ipckit::process::exit_with_parent`), for the one signal no handler
//! sees: SIGKILL.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use anyhow::Result;

struct Made {
    tmp: Option<PathBuf>,
    sysv_queues: Vec<i32>,
    sysv_sets: Vec<i32>,
    mqueues: Vec<String>,
    addresses: Vec<ipckit::Address>,
    peers: Vec<u32>,
}

static MADE: Mutex<Made> = Mutex::new(Made {
    tmp: None,
    sysv_queues: Vec::new(),
    sysv_sets: Vec::new(),
    mqueues: Vec::new(),
    addresses: Vec::new(),
    peers: Vec::new(),
});

fn lock() -> MutexGuard<'static, Made> {
    // A poisoned lock still holds the list: use it.
    MADE.lock().unwrap_or_else(|e| e.into_inner())
}

fn made(f: impl FnOnce(&mut Made)) {
    f(&mut lock());
}

/// Records what a `making` call made.
pub struct Registrar<'a>(MutexGuard<'a, Made>);

impl Registrar<'_> {
    /// A System V message queue, by id.
    pub fn sysv_queue(&mut self, id: i32) {
        self.0.sysv_queues.push(id);
    }

    /// A System V semaphore set, by id.
    pub fn sysv_set(&mut self, id: i32) {
        self.0.sysv_sets.push(id);
    }

    /// A POSIX message queue, by name.
    pub fn mqueue(&mut self, name: &str) {
        self.0.mqueues.push(name.to_owned());
    }

    /// What listening on `addr` makes, if anything (a queue, a ring, a
    /// FIFO, a socket file): removed as `ipc rm ADDR` would.
    pub fn address(&mut self, addr: &ipckit::Address) {
        self.0.addresses.push(addr.clone());
    }
}

/// Makes kernel objects and registers them under one lock, which the
/// cleanup on a signal holds until the process has exited: nothing can be
/// made after the cleanup ran, or between being made and being
/// registered.
pub fn making<T>(f: impl FnOnce(&mut Registrar<'_>) -> Result<T>) -> Result<T> {
    f(&mut Registrar(lock()))
}

/// The bench's temporary directory.
pub fn tmp(path: PathBuf) {
    made(|m| m.tmp = Some(path));
}

/// A peer process.
pub fn peer(pid: u32) {
    made(|m| m.peers.push(pid));
}

/// The measurement is over and removed what it made: forget it.
pub fn point_done() {
    made(|m| {
        m.sysv_queues.clear();
        m.sysv_sets.clear();
        m.mqueues.clear();
        m.addresses.clear();
        m.peers.clear();
    });
}

/// On SIGINT, SIGTERM or SIGHUP: kills the peers, removes everything
/// registered, and exits with status 128 + signal. Installed before
/// anything is made.
pub fn install() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("ipc-bench-cleanup".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Held until the exit: nothing more is made meanwhile.
                let m = lock();
                remove_all(&m);
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

fn remove_all(m: &Made) {
    {
        for &pid in &m.peers {
            let _ = ipckit::signal::kill(pid, ipckit::signal::Signal::KILL);
        }
        for &id in &m.sysv_queues {
            let _ = ipckit::sysv::MessageQueue::open_id(id).and_then(|q| q.remove());
        }
        for &id in &m.sysv_sets {
            let _ = ipckit::sem::SemaphoreSet::open_id(id).and_then(|s| s.remove());
        }
        for name in &m.mqueues {
            let _ = ipckit::mq::unlink(name);
        }
        for a in &m.addresses {
            // Most make nothing to remove (abstract sockets, ports).
            let _ = crate::rm::remove_object(a);
        }
        if let Some(dir) = &m.tmp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
