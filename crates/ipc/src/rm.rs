//! `ipc rm ADDR...` and `ipc rm --orphans [--dry-run]`: remove named IPC
//! objects, each on its own: a failure is reported on its own line and the
//! others are still tried.

use anyhow::{anyhow, Context, Result};

use crate::addr::{parse_target, Addr, Target};
use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Objects to remove: mq:/NAME (a POSIX queue), sysv-mq:KEY (a System V
    /// queue), shm:/NAME (POSIX shared memory), sysv-shm:KEY (a System V
    /// segment, removed once detached everywhere), sem:/NAME (a POSIX named
    /// semaphore), sysv-sem:KEY (a System V semaphore set; its waiters wake
    /// with an error), ring:NAME, fifo:PATH or mailbox:NAME (at the broker:
    /// its owner or root only). System V objects also by id,
    /// as ipcs shows it: sysv-mq:id=ID, sysv-shm:id=ID, sysv-sem:id=ID (the
    /// only name a private object, key 0, has). unix:PATH removes a stale
    /// socket file (one no socket is bound to) only.
    #[arg(value_name = "ADDR", required_unless_present = "orphans", value_parser = parse_target)]
    targets: Vec<Target>,
    /// Remove every orphan `ipc ls --orphans` lists (objects nobody holds
    /// whose creator is gone, stale socket files), printing each. Nothing
    /// is called an orphan when some processes could not be seen (run as
    /// root to see them all). An object opened between the look and the
    /// removal is removed all the same, as with ipcrm.
    #[arg(long)]
    orphans: bool,
    /// With --orphans: only orphans of these kinds (comma-separated, as
    /// ipc ls names them).
    #[arg(long, requires = "orphans", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::ls::KINDS))]
    kind: Vec<String>,
    /// Print what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut targets: Vec<(Target, Option<String>)> =
        args.targets.into_iter().map(|t| (t, None)).collect();
    if args.orphans {
        // Mailboxes are never orphans: the broker keeps them.
        let found = crate::ls::list(None);
        for u in &found.unseen {
            eprintln!("ipc rm: {u}");
        }
        let wanted = |k: &str| args.kind.is_empty() || args.kind.iter().any(|w| w == k);
        for o in found
            .objects
            .into_iter()
            .filter(|o| o.orphan && wanted(o.kind))
        {
            // Every orphan ipc ls finds has an address; one without could
            // not be removed by name.
            let Some(a) = o.address else { continue };
            match parse_target(&a) {
                Ok(t) => targets.push((t, Some(o.note.unwrap_or_else(|| "orphan".into())))),
                Err(e) => eprintln!("ipc rm: {a}: {e}"),
            }
        }
    }
    let mut failed = 0;
    for (t, why) in &targets {
        if args.dry_run {
            println!(
                "would remove {t}{}",
                why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()
            );
            continue;
        }
        match remove(t) {
            Ok(()) if why.is_some() => println!("removed {t}"),
            Ok(()) => {}
            Err(e) => {
                eprintln!("ipc rm: {t}: {e:#}");
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(Reported.into()),
    }
}

fn remove(t: &Target) -> Result<()> {
    match t {
        Target::SysvId("mq", id) => Ok(ipckit::sysv::remove_queue_id(*id)?),
        Target::SysvId("shm", id) => Ok(ipckit::shm::remove_sysv_id(*id)?),
        Target::SysvId(_, id) => Ok(ipckit::sem::remove_set_id(*id)?),
        Target::Addr(a) => remove_object(a),
    }
}

/// Removes the named object at `a` (the queue, ring, FIFO, stale socket
/// file and so on), or says why it cannot.
pub fn remove_object(a: &Addr) -> Result<()> {
    match a {
        Addr::Mq(name) => ipckit::mq::unlink(name)?,
        Addr::Ring(name) => ipckit::ring::unlink(name)?,
        Addr::SysvMq(key) => ipckit::sysv::remove_queue(*key)?,
        Addr::Shm(name) => ipckit::shm::unlink(name)?,
        Addr::SysvShm(key) => ipckit::shm::remove_sysv(*key)?,
        Addr::Sem(name) => ipckit::sem::unlink(name)?,
        Addr::SysvSem(key) => ipckit::sem::remove_set(*key)?,
        Addr::Fifo(path) => ipckit::fifo::remove(path).context("cannot remove it")?,
        Addr::Mailbox(name) => {
            ipckit::mailbox::validate_name(name)
                .map_err(|_| anyhow!("{a} is a pattern: ipc rm removes one mailbox by name"))?;
            crate::mailbox::connect(None)?.delete(name)?
        }
        Addr::Unix(ipckit::socket::unix::UnixAddr::Path(path))
        | Addr::UnixDgram(ipckit::socket::unix::UnixAddr::Path(path))
        | Addr::UnixSeq(ipckit::socket::unix::UnixAddr::Path(path)) => {
            ipckit::socket::unix::remove_stale(path)?
        }
        other => {
            return Err(anyhow!(
                "{other} is not a named object ipc rm can remove (mq:/NAME, sysv-mq:KEY, \
                 shm:/NAME, sysv-shm:KEY, sem:/NAME, sysv-sem:KEY, ring:NAME, fifo:PATH, \
                 mailbox:NAME, a stale socket file unix:PATH, or sysv-mq:id=ID and the like)"
            ))
        }
    }
    Ok(())
}
