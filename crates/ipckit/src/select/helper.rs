//! The helper thread that gives a descriptor to objects without one
//! (System V queues and semaphores, and semaphores in shared memory).
//!
//! Nothing in the kernel turns "a message arrived on System V queue 7" into
//! a readable descriptor. A [`Helper`] is a thread of this process that
//! sleeps in the object's own blocking call (`msgrcv`, `semop`, a futex
//! wait) and writes an eventfd when it returns; a selector or an async
//! runtime watches the eventfd. The thread sleeps in the kernel all along:
//! no polling, no core burnt. Its cost: one thread (its stack mostly
//! untouched) per watched object, and one eventfd write and read per wake.
//!
//! The state machine, under one mutex:
//!
//! - **armed**: the thread is in (or about to enter) the blocking call. A
//!   check then reports what was taken ahead only, and trusts the thread
//!   to signal the rest.
//! - **parked**: the thread returned, signalled the eventfd and waits to be
//!   armed again. A check now asks the object itself, without blocking
//!   ([`Helper::check`]): something there is reported (level-triggered);
//!   nothing there arms the thread again. So the thread is woken once per
//!   burst, not once per message.
//!
//! Some calls cannot look without taking (`semop` takes the units it waits
//! for; `msgrcv` takes an empty message, which fits any buffer): what they
//! take is *held*, in order, for the object's owner to take first
//! ([`Helper::take_held`]), and handed back when the helper stops if
//! nobody did.
//!
//! Stopping: a flag, then a *kick* repeated every [`KICK_EVERY`] until the
//! thread answers: `SIGURG` to the thread (`msgrcv` and `semop` return
//! `EINTR`, `signal(7)`), and a futex wake for a futex sleeper. A look
//! that fails while the object may be fine ([`Found::Failed`]) is reported
//! ready, and the owner's next take returns the error: a readiness never
//! stays with nothing to take.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys;

/// How often a stopping helper is kicked until it answers.
pub(crate) const KICK_EVERY: Duration = Duration::from_millis(2);

/// What one look at the object found.
#[derive(Debug)]
pub(crate) enum Found<T> {
    /// Something is there; `Some` if the look took it (held from now on).
    There(Option<T>),
    /// Nothing there (or, for the blocking look, interrupted).
    Nothing,
    /// The object is gone or failing: report it ready, so that the
    /// owner's own call returns the error. The helper thread ends.
    Gone,
    /// The wait itself failed although the object may be fine: reported
    /// ready, and the owner's next take returns this error.
    Failed(String),
}

/// The blocking look (in the helper thread) and the non-blocking one (in
/// [`Helper::check`]).
pub(crate) trait Look: Send + Sync + 'static {
    /// What a look may take ahead.
    type Held: Send + 'static;
    /// Sleeps until something is there (returns `Nothing` when interrupted).
    fn wait(&self) -> Found<Self::Held>;
    /// Looks without sleeping.
    fn now(&self) -> Found<Self::Held>;
    /// Wakes a thread sleeping in [`wait`](Self::wait) (thread id `tid`).
    fn kick(&self, tid: libc::pid_t);
    /// Gives back what was held and never taken (the helper is stopping).
    fn give_back(&self, held: Self::Held);
}

struct State<T> {
    armed: bool,
    stop: bool,
    exited: bool,
    gone: bool,
    /// The thread itself could not work (its signal setup failed): said
    /// by [`Helper::take_held`], so that the owner does not spin on a
    /// readiness that never turns into a message.
    failed: Option<String>,
    tid: Option<libc::pid_t>,
    held: VecDeque<T>,
}

struct Shared<L: Look> {
    look: L,
    state: Mutex<State<L::Held>>,
    cv: Condvar,
    /// Ours to write; the selector or runtime reads a duplicate.
    eventfd: OwnedFd,
}

impl<L: Look> Shared<L> {
    fn lock(&self) -> MutexGuard<'_, State<L::Held>> {
        // A panic elsewhere while holding it leaves the state usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self) {
        // Only fails if the counter would overflow: it is readable then.
        let _ = sys::fd::eventfd_signal(self.eventfd.as_fd());
    }
}

/// A thread that signals an eventfd when its object is ready (see the
/// module docs). Stopped and joined on drop.
pub(crate) struct Helper<L: Look> {
    shared: Arc<Shared<L>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<L: Look> std::fmt::Debug for Helper<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Helper({:?})", self.shared.eventfd)
    }
}

impl<L: Look> Helper<L> {
    /// Starts the thread, armed.
    pub(crate) fn start(name: &str, look: L) -> io::Result<Helper<L>> {
        let shared = Arc::new(Shared {
            look,
            state: Mutex::new(State {
                armed: true,
                stop: false,
                exited: false,
                gone: false,
                failed: None,
                tid: None,
                held: VecDeque::new(),
            }),
            cv: Condvar::new(),
            eventfd: sys::fd::eventfd()?,
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .stack_size(64 * 1024)
            .spawn(move || run(&theirs))?;
        Ok(Helper {
            shared,
            thread: Some(thread),
        })
    }

    /// The eventfd written when the object may be ready.
    pub(crate) fn eventfd(&self) -> BorrowedFd<'_> {
        self.shared.eventfd.as_fd()
    }

    /// Whether the object is ready now (level-triggered); arms the thread
    /// again when it is not. Callable from any thread.
    pub(crate) fn check(&self) -> bool {
        let s = &*self.shared;
        let mut st = s.lock();
        if st.stop {
            // Stopped by its owner: a registration left behind is never
            // ready again.
            return false;
        }
        if !st.held.is_empty() || st.gone {
            return true;
        }
        if st.armed {
            // The thread will signal.
            return false;
        }
        match s.look.now() {
            Found::There(taken) => {
                st.held.extend(taken);
                true
            }
            Found::Gone => true,
            Found::Failed(why) => {
                st.failed = Some(why);
                st.gone = true;
                true
            }
            Found::Nothing => {
                st.armed = true;
                s.cv.notify_all();
                false
            }
        }
    }

    /// A check for a [`Selector`](super::Selector) or an async wrapper.
    pub(crate) fn checker(&self) -> super::Check {
        let h = Helper {
            shared: self.shared.clone(),
            thread: None,
        };
        Arc::new(move || h.check())
    }

    /// The oldest thing a look took ahead, if any: the owner takes it
    /// before asking the object again. An error if the helper thread
    /// could not do its work.
    pub(crate) fn take_held(&self) -> io::Result<Option<L::Held>> {
        let mut st = self.shared.lock();
        if let Some(t) = st.held.pop_front() {
            return Ok(Some(t));
        }
        match &st.failed {
            Some(why) => Err(io::Error::other(format!(
                "the helper thread that waits on this object for a selector or runtime \
                 failed: {why}; wait on the object directly instead"
            ))),
            None => Ok(None),
        }
    }

    /// The object's look.
    pub(crate) fn look(&self) -> &L {
        &self.shared.look
    }
}

impl<L: Look> Drop for Helper<L> {
    fn drop(&mut self) {
        // Only the owning handle stops the thread (checkers hold copies).
        let Some(thread) = self.thread.take() else {
            return;
        };
        let s = &*self.shared;
        let mut st = s.lock();
        st.stop = true;
        s.cv.notify_all();
        while !st.exited {
            if let Some(tid) = st.tid.filter(|_| st.armed) {
                s.look.kick(tid);
            }
            st =
                s.cv.wait_timeout(st, KICK_EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
        }
        let held = std::mem::take(&mut st.held);
        drop(st);
        let _ = thread.join();
        for h in held {
            s.look.give_back(h);
        }
    }
}

fn run<L: Look>(s: &Shared<L>) {
    let ready = sys::alarm::interruptible();
    {
        let mut st = s.lock();
        st.tid = Some(sys::alarm::thread_id());
        if let Err(e) = &ready {
            // Could not be stopped from a System V call: end at once and
            // report the object ready; its owner's next call says why.
            st.gone = true;
            st.failed = Some(format!("unblocking SIGURG for it: {e}"));
        }
    }
    if ready.is_err() {
        s.signal();
    }
    loop {
        {
            let mut st = s.lock();
            while !st.armed && !st.stop && !st.gone {
                st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.stop || st.gone {
                break;
            }
        }
        let found = s.look.wait();
        let mut st = s.lock();
        match found {
            Found::Nothing => continue,
            Found::There(taken) => {
                st.held.extend(taken);
                st.armed = false;
            }
            Found::Gone => {
                st.gone = true;
                st.armed = false;
            }
            Found::Failed(why) => {
                st.failed = Some(why);
                st.gone = true;
                st.armed = false;
            }
        }
        drop(st);
        s.signal();
    }
    let mut st = s.lock();
    st.exited = true;
    st.armed = false;
    s.cv.notify_all();
}
