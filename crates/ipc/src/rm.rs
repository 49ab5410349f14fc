//! `ipc rm ADDR...`: remove named IPC objects.

use anyhow::{bail, Context, Result};

use crate::addr::Addr;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Objects to remove: mq:/NAME (a POSIX queue), sysv-mq:KEY (a System V
    /// queue), shm:/NAME (POSIX shared memory), sysv-shm:KEY (a System V
    /// segment, removed once detached everywhere), sem:/NAME (a POSIX named
    /// semaphore), sysv-sem:KEY (a System V semaphore set; its waiters wake
    /// with an error) or fifo:PATH.
    #[arg(value_name = "ADDR", required = true)]
    addrs: Vec<Addr>,
}

pub fn run(args: Args) -> Result<()> {
    for a in &args.addrs {
        match a {
            Addr::Mq(name) => ipckit::mq::unlink(name)?,
            Addr::Ring(name) => ipckit::ring::unlink(name)?,
            Addr::SysvMq(key) => ipckit::sysv::remove_queue(*key)?,
            Addr::Shm(name) => ipckit::shm::unlink(name)?,
            Addr::SysvShm(key) => ipckit::shm::remove_sysv(*key)?,
            Addr::Sem(name) => ipckit::sem::unlink(name)?,
            Addr::SysvSem(key) => ipckit::sem::remove_set(*key)?,
            Addr::Fifo(path) => {
                ipckit::fifo::remove(path).with_context(|| format!("cannot remove {a}"))?
            }
            other => bail!("{other} is not a named object ipc rm can remove (mq:/NAME, sysv-mq:KEY, shm:/NAME, sysv-shm:KEY, sem:/NAME, sysv-sem:KEY, fifo:PATH)"),
        }
    }
    Ok(())
}
