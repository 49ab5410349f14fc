//! What `ipc recv` and `ipc serve` made (a socket file, a FIFO) removed
//! even when they are interrupted.

use anyhow::Result;
use ipckit::named::CreatedPath;
use std::sync::Mutex;

/// Paths this process created and must remove even when interrupted: each
/// is removed only while it still is the file created (a file put there in
/// the meantime stays).
static CLEANUP: Mutex<Vec<CreatedPath>> = Mutex::new(Vec::new());

/// On SIGINT, SIGTERM or SIGHUP, removes the paths registered with
/// [`remove_on_signal`] and exits with the conventional status 128 + signal.
/// Installed before anything is created, so no interrupt can slip between.
pub fn install_cleanup() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            for p in CLEANUP.lock().expect("cleanup list").iter() {
                let _ = p.remove();
            }
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// Registers a path for removal on SIGINT, SIGTERM or SIGHUP.
pub fn remove_on_signal(created: Option<CreatedPath>) {
    if let Some(c) = created {
        CLEANUP.lock().expect("cleanup list").push(c);
    }
}
