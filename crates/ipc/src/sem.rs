//! `ipc sem create|post|wait|get ADDR`: semaphores from the shell, so that
//! a learner can watch P and V from two terminals (POSIX named semaphores
//! `sem:/NAME`, System V sets `sysv-sem:KEY` or `sysv-sem:id=ID`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ipckit::sem::{NamedSemaphore, SemOp, SemaphoreSet};

use crate::addr::{parse_target, Addr, Target};
use crate::TimedOut;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a semaphore (sem:/NAME) or a set of --count semaphores
    /// (sysv-sem:KEY), each starting at --value; it stays until `ipc rm
    /// ADDR`.
    Create {
        /// sem:/NAME or sysv-sem:KEY.
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
        /// The starting value (of each semaphore of a set).
        #[arg(long, value_name = "N", default_value_t = 0)]
        value: u32,
        /// System V: how many semaphores the set has.
        #[arg(long, value_name = "N", default_value_t = 1)]
        count: usize,
        /// Permission bits, in octal (default 600: this user only).
        #[arg(long, value_name = "MODE", value_parser = crate::args::mode, default_value = "600")]
        mode: u32,
    },
    /// V: add one (-n N: N), waking processes waiting in P. On a System V
    /// set, -n N is one operation.
    Post {
        #[command(flatten)]
        op: Op,
    },
    /// P: take one (-n N: N), sleeping while the value is too low. On a
    /// System V set, -n N is one operation: all N or none (POSIX takes them
    /// one by one, and keeps what it took when --timeout ends the wait).
    Wait {
        #[command(flatten)]
        op: Op,
        /// Give up after SECS seconds in all, exiting with status 1 (0: only
        /// if it can take them at once).
        #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
        timeout: Option<Duration>,
        /// Stay SECS seconds after taking them before exiting (to watch the
        /// value, or the undo, from another terminal).
        #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
        hold: Option<Duration>,
    },
    /// Print the value; for a System V set without --index, one line per
    /// semaphore with its value, waiters and the last process to use it.
    Get {
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
        /// System V: only this semaphore's value.
        #[arg(long, value_name = "I")]
        index: Option<u16>,
    },
}

/// What P and V act on, and how.
#[derive(clap::Args, Debug)]
struct Op {
    #[arg(value_name = "ADDR", value_parser = parse_target)]
    target: Target,
    /// System V: which semaphore of the set (from 0).
    #[arg(long, value_name = "I", default_value_t = 0)]
    index: u16,
    /// How many.
    #[arg(short = 'n', value_name = "N", value_parser = crate::args::count, default_value = "1")]
    count: u64,
    /// System V: SEM_UNDO, the kernel reverts this operation when ipc exits
    /// (see it with wait --hold).
    #[arg(long)]
    undo: bool,
}

impl Op {
    /// The semaphore, checked to have what the options ask for; and the
    /// options.
    fn open(&self) -> Result<(Sem, u16, u64, bool)> {
        let sem = open(&self.target)?;
        sysv_only(&sem, self.index, self.undo)?;
        Ok((sem, self.index, self.count, self.undo))
    }
}

/// A semaphore of either family.
enum Sem {
    Posix(NamedSemaphore),
    Sysv(SemaphoreSet),
}

fn not_sem(t: &Target) -> anyhow::Error {
    anyhow::anyhow!(
        "{t} is not a semaphore: ipc sem takes sem:/NAME, sysv-sem:KEY or sysv-sem:id=ID"
    )
}

/// Opens the existing semaphore `t` (never creates it).
fn open(t: &Target) -> Result<Sem> {
    Ok(match t {
        Target::Addr(Addr::Sem(name)) => Sem::Posix(NamedSemaphore::builder(name).open()?),
        Target::Addr(Addr::SysvSem(key)) => Sem::Sysv(SemaphoreSet::builder(*key).open()?),
        Target::SysvId("sem", id) => Sem::Sysv(SemaphoreSet::open_id(*id)?),
        _ => return Err(not_sem(t)),
    })
}

/// Refuses what only System V sets have, on a POSIX semaphore.
fn sysv_only(sem: &Sem, index: u16, undo: bool) -> Result<()> {
    if let Sem::Posix(_) = sem {
        if undo {
            bail!(
                "--undo is for System V sets (sysv-sem:KEY): the kernel does not track who took \
                 a POSIX semaphore, so it cannot give it back when a process exits"
            );
        }
        if index != 0 {
            bail!("--index is for System V sets (sysv-sem:KEY): a POSIX semaphore is just one");
        }
    }
    Ok(())
}

/// -n N as one System V operation's amount.
fn delta(n: u64) -> Result<i16> {
    i16::try_from(n).map_err(|_| {
        anyhow::anyhow!(
            "-n {n} is too many for one System V operation (at most {})",
            i16::MAX
        )
    })
}

fn op(op: SemOp, undo: bool) -> SemOp {
    if undo {
        op.undo()
    } else {
        op
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Create {
            target,
            value,
            count,
            mode,
        } => match &target {
            Target::Addr(Addr::Sem(name)) => {
                if count != 1 {
                    bail!("--count is for System V sets: a POSIX semaphore is just one");
                }
                NamedSemaphore::builder(name)
                    .value(value)
                    .mode(mode)
                    .keep(true)
                    .create()?;
                Ok(())
            }
            Target::Addr(Addr::SysvSem(key)) => {
                let v = u16::try_from(value).map_err(|_| {
                    anyhow::anyhow!(
                        "--value {value} is out of range: a System V semaphore holds 0 to {}",
                        u16::MAX
                    )
                })?;
                SemaphoreSet::builder(*key)
                    .len(count)
                    .values(&vec![v; count])
                    .mode(mode)
                    .keep(true)
                    .create()?;
                Ok(())
            }
            Target::SysvId(..) => {
                bail!("{target} names an existing set: to make one, give a key (sysv-sem:KEY)")
            }
            _ => Err(not_sem(&target)),
        },
        Command::Post { op: o } => {
            let (sem, index, count, undo) = o.open()?;
            match &sem {
                Sem::Posix(s) => {
                    for _ in 0..count {
                        s.post()?;
                    }
                }
                Sem::Sysv(s) => s.apply(&[op(SemOp::add(index, delta(count)?), undo)])?,
            }
            Ok(())
        }
        Command::Wait {
            op: o,
            timeout,
            hold,
        } => {
            let (sem, index, count, undo) = o.open()?;
            let target = o.target;
            let end = timeout.and_then(|t| Instant::now().checked_add(t));
            let left = || end.map(|e| e.saturating_duration_since(Instant::now()));
            match &sem {
                Sem::Posix(s) => {
                    for taken in 0..count {
                        let got = match left() {
                            None => s.wait().map(|()| true)?,
                            Some(t) => s.wait_timeout(t)?,
                        };
                        if !got {
                            let kept = if taken > 0 {
                                format!(
                                    " (took {taken} of {count}, which stay taken: ipc sem post \
                                     -n {taken} {target} gives them back)"
                                )
                            } else {
                                String::new()
                            };
                            return Err(
                                TimedOut(format!("timed out waiting for {target}{kept}")).into()
                            );
                        }
                    }
                }
                Sem::Sysv(s) => {
                    let take = [op(SemOp::add(index, -delta(count)?), undo)];
                    let got = match left() {
                        None => s.apply(&take).map(|()| true)?,
                        Some(t) => s.apply_timeout(&take, t)?,
                    };
                    if !got {
                        return Err(TimedOut(format!(
                            "timed out waiting for {target} (nothing taken)"
                        ))
                        .into());
                    }
                }
            }
            if let Some(h) = hold {
                std::thread::sleep(h);
            }
            Ok(())
        }
        Command::Get { target, index } => {
            let sem = open(&target)?;
            match (&sem, index) {
                (Sem::Posix(s), None) => println!("{}", s.value()?),
                (Sem::Posix(_), Some(_)) => sysv_only(&sem, 1, false)?,
                (Sem::Sysv(s), Some(i)) => println!("{}", s.get(usize::from(i))?),
                (Sem::Sysv(s), None) => {
                    for (i, v) in s.get_all()?.into_iter().enumerate() {
                        println!(
                            "{i}: value {v}, {} waiting to take, {} waiting for 0, last used by \
                             {}",
                            s.waiting(i)?,
                            s.waiting_for_zero(i)?,
                            s.last_pid(i)?
                                .map_or_else(|| "nobody yet".into(), |p| format!("pid {p}"))
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
