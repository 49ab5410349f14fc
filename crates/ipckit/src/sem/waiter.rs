//! A P operation that a [`Selector`](crate::select::Selector) or an async
//! task can wait on, beside messages and connections.

use std::io;
use std::sync::Arc;

use super::{NamedSemaphore, SemOp, SemaphoreSet, UnnamedSemaphore};
use crate::select::helper::{Found, Helper, Look};
use crate::select::{Readiness, Selectable};
use crate::shm::HoldsRegion;
use crate::sys;

/// A semaphore wait that a [`Selector`](crate::select::Selector) (or
/// `aio::AsyncWaiter`, with the feature `tokio`) waits on
/// together with endpoints: the notes' `select()` over P operations too.
///
/// Semaphores have no descriptor, and the kernel has no "wait until the
/// value is above 0" that does not take: so a helper thread of this
/// process *performs* the P (sleeping in `semop(2)`, or as a counted
/// sleeper on a POSIX semaphore's futex; no polling), holds what it took,
/// and signals an eventfd. When the selector reports the waiter ready,
/// [`try_take`](Self::try_take) hands you the held unit without a system
/// call (`true`: the P is done, the unit is yours; post it back when you
/// are finished, as after any wait). A unit the helper took and you never
/// took is given back when the waiter is dropped. The helper sleeps in
/// the kernel all along and stops with the waiter (a `SIGURG` to it; for
/// a POSIX semaphore a futex wake as well). If another process cuts a
/// named semaphore's file short, [`try_take`](Self::try_take) says so and
/// the thread still stops.
///
/// Fairness as the semaphore's own: the helper queues like any other
/// waiter.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ipckit::prelude::*;
/// use ipckit::select::Selector;
/// use ipckit::sem::{NamedSemaphore, Waiter};
///
/// let name = format!("/ipckit-doc-waiter-{}", std::process::id());
/// let sem = Arc::new(NamedSemaphore::builder(&name).value(0).create()?);
/// let (mut tx, mut rx) = ipckit::pipe::channel()?;
/// let mut turn = Waiter::named(sem.clone())?;
/// let mut sel = Selector::new()?;
/// let a = sel.register(&mut rx)?;
/// let b = sel.register(&mut turn)?;
/// sem.post()?; // another process's V, say
/// assert_eq!(sel.select(Some(Duration::from_secs(5)))?, [b]);
/// assert!(turn.try_take()?); // P done: the unit is ours
/// assert_eq!(sem.value()?, 0);
/// # let _ = (a, &mut tx);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Waiter {
    helper: Helper<SemLook>,
}

/// What a waiter waits for.
enum SemLook {
    Named(Arc<NamedSemaphore>),
    /// An [`UnnamedSemaphore`] at an offset of a region the waiter holds.
    Unnamed(Arc<dyn HoldsRegion>, usize),
    Set(SemaphoreSet, Vec<SemOp>),
}

impl std::fmt::Debug for SemLook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SemLook::Named(sem) => write!(f, "{sem:?}"),
            SemLook::Unnamed(_, offset) => write!(f, "UnnamedSemaphore (offset {offset})"),
            SemLook::Set(set, ops) => write!(f, "{set:?} {ops:?}"),
        }
    }
}

impl Waiter {
    /// Waits for P on `sem` (one unit).
    pub fn named(sem: Arc<NamedSemaphore>) -> io::Result<Waiter> {
        sem.value()?;
        Ok(Waiter {
            helper: Helper::start("ipckit-sem-wait", SemLook::Named(sem))?,
        })
    }

    /// Waits for P on the [`UnnamedSemaphore`] at `offset` of `region`
    /// (one unit), holding a share of the region (as
    /// [`OwnedMutex`](crate::shm::OwnedMutex) does) for its helper thread.
    pub fn unnamed(region: Arc<dyn HoldsRegion>, offset: usize) -> io::Result<Waiter> {
        UnnamedSemaphore::open(region.region(), offset)?;
        Ok(Waiter {
            helper: Helper::start("ipckit-sem-wait", SemLook::Unnamed(region, offset))?,
        })
    }

    /// Waits until `ops` can all be applied at once, and applies them
    /// (`semop(2)`): each a P ([`SemOp::wait`], any negative delta,
    /// [`SemOp::undo`] allowed) or a wait for zero ([`SemOp::wait_zero`]).
    /// Posts are refused: apply those yourself.
    pub fn set(set: &SemaphoreSet, ops: &[SemOp]) -> io::Result<Waiter> {
        if let Some(op) = ops.iter().find(|o| o.delta > 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a Waiter only waits: {op:?} adds to semaphore {} (apply posts with \
                     SemaphoreSet::apply)",
                    op.num
                ),
            ));
        }
        set.check_ops(ops)?;
        let look = SemLook::Set(set.share(), ops.to_vec());
        let w = Waiter {
            helper: Helper::start("ipckit-sem-wait", look)?,
        };
        Ok(w)
    }

    /// Takes what the helper holds, or does the P now if it can without
    /// waiting: `true` if the P is done (the unit is yours), `false` if it
    /// would wait (select again).
    pub fn try_take(&mut self) -> io::Result<bool> {
        if self.helper.take_held()?.is_some() {
            return Ok(true);
        }
        match self.helper.look() {
            SemLook::Named(sem) => sem.try_wait(),
            SemLook::Unnamed(region, at) => {
                UnnamedSemaphore::open(region.region(), *at)?.try_wait()
            }
            SemLook::Set(set, ops) => set.try_apply(ops),
        }
    }
}

/// Ready when the P has been done for you (see [`Waiter`]).
impl Selectable for Waiter {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        Ok(Readiness::signalled(
            self.helper.eventfd(),
            self.helper.checker(),
        ))
    }
}

impl Look for SemLook {
    type Held = ();

    fn wait(&self) -> Found<()> {
        self.look(false)
    }

    fn now(&self) -> Found<()> {
        self.look(true)
    }

    fn kick(&self, tid: libc::pid_t) {
        // A futex wake, and the signal too: if another process cut the
        // file short, the wake cannot reach the sleeper, but the restarted
        // wait finds the page gone and fails.
        let _ = match self {
            SemLook::Named(sem) => sem.wake_all(),
            SemLook::Unnamed(region, at) => {
                UnnamedSemaphore::open(region.region(), *at).and_then(|s| s.wake_all())
            }
            SemLook::Set(..) => Ok(()),
        };
        let _ = sys::alarm::interrupt(tid);
    }

    fn give_back(&self, (): ()) {
        match self {
            SemLook::Named(sem) => {
                let _ = sem.post();
            }
            SemLook::Unnamed(region, at) => {
                let _ = UnnamedSemaphore::open(region.region(), *at).and_then(|s| s.post());
            }
            SemLook::Set(set, ops) => {
                let back: Vec<SemOp> = ops
                    .iter()
                    .filter(|o| o.delta < 0)
                    .map(|o| SemOp {
                        delta: -o.delta,
                        ..*o
                    })
                    .collect();
                if !back.is_empty() {
                    let _ = set.op_once(&back, true);
                }
            }
        }
    }
}

impl SemLook {
    fn look(&self, nowait: bool) -> Found<()> {
        let took = match self {
            SemLook::Named(sem) if nowait => sem.try_wait(),
            SemLook::Named(sem) => sem.wait_once(),
            SemLook::Unnamed(region, at) => match UnnamedSemaphore::open(region.region(), *at) {
                Ok(sem) if nowait => sem.try_wait(),
                Ok(sem) => sem.wait_once(),
                // Another process overwrote its header: try_take says so.
                Err(_) => return Found::Gone,
            },
            SemLook::Set(set, ops) => match set.op_once(ops, nowait) {
                Some(t) => Ok(t),
                // The set is gone or refuses: `try_apply` says why.
                None => return Found::Gone,
            },
        };
        match took {
            Ok(true) => Found::There(Some(())),
            Ok(false) => Found::Nothing,
            Err(e) => Found::Failed(format!("waiting on the semaphore: {e}")),
        }
    }
}
