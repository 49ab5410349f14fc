//! A counter in shared memory, guarded by ipckit's robust mutex and held in
//! an owned region: three child processes add to it at once, and one of
//! them is killed while holding the lock; the next locker is told, repairs,
//! and goes on.
//!
//! ```sh
//! cargo run -p ipckit --example shared_counter
//! ```

use std::io;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ipckit::process::{inherited_fd, pass_fds};
use ipckit::shm::{HoldsRegion, Layout, LockError, Memfd, OwnedMutex};

const ADDS: u64 = 10_000;

fn counter_at() -> usize {
    let mut l = Layout::new();
    l.mutex::<u64>()
}

fn main() -> io::Result<()> {
    match std::env::var("SHARED_COUNTER_ROLE").as_deref() {
        Ok("adder") => return adder(),
        Ok("dier") => return dier(),
        _ => {}
    }
    let memfd = Memfd::create("counter", 4096)?;
    // A descriptor to duplicate for each child.
    let fd = memfd.fd().try_clone_to_owned()?;
    let region: Arc<dyn HoldsRegion> = Arc::new(memfd);
    let counter = OwnedMutex::<u64>::init(region, counter_at(), 0)?;
    let spawn = |role: &str| -> io::Result<std::process::Child> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env("SHARED_COUNTER_ROLE", role);
        pass_fds(&mut cmd, [("counter", fd.try_clone()?, 3)])?;
        cmd.spawn()
    };
    // One child takes the lock and is killed holding it.
    let mut dier = spawn("dier")?;
    std::thread::sleep(Duration::from_millis(200));
    dier.kill()?;
    dier.wait()?;
    let adders = (0..3)
        .map(|_| spawn("adder"))
        .collect::<io::Result<Vec<_>>>()?;
    for mut a in adders {
        a.wait()?;
    }
    let total = counter
        .get()?
        .lock()
        .map_err(|e| io::Error::other(e.to_string()))?
        .get();
    println!(
        "3 processes added {ADDS} each after one died holding the lock: the counter is {total}"
    );
    Ok(())
}

fn open_counter() -> io::Result<OwnedMutex<u64>> {
    let region: Arc<dyn HoldsRegion> = Arc::new(Memfd::from_fd(inherited_fd("counter")?, false)?);
    OwnedMutex::open(region, counter_at())
}

fn adder() -> io::Result<()> {
    let counter = open_counter()?;
    let mutex = counter.get()?;
    for _ in 0..ADDS {
        let mut g = match mutex.lock() {
            Ok(g) => g,
            // The killed child held the lock: its update may be half done.
            // Here the data is one number, so it is whole: declare it so.
            Err(LockError::OwnerDied(mut g)) => {
                eprintln!(
                    "an owner died holding the lock; the counter was {}",
                    g.get()
                );
                g.make_consistent()?;
                g
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let v = g.get();
        g.set(v + 1);
    }
    Ok(())
}

fn dier() -> io::Result<()> {
    let counter = open_counter()?;
    let mutex = counter.get()?;
    let _held = mutex.lock().map_err(|e| io::Error::other(e.to_string()))?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}
