//! `ipc bench --select`: each receive waits in an
//! [`ipckit::select::Selector`] (one registered endpoint) and then takes
//! the message without blocking, as a program waiting on many endpoints
//! does. Measured round for round with the direct receive, the ratio is
//! what waiting through a selector costs: an `epoll_wait` for the
//! descriptor-based mechanisms, the helper thread's wake-up for System V
//! queues, the notifying thread's for rings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipckit::select::{Selectable, Selector, Token};
use ipckit::{
    Deadline, MessageReceiver, MessageSender, RecvTimeoutError, SendTimeoutError, TryRecvError,
    WaitStrategy,
};

use super::{Endpoint, Mech};

/// Whether `mech`'s bench endpoint can be waited on through a selector.
/// (The shared-memory turn-taking entries and the semaphore set have no
/// receiver to register; signals have their own protocol; zero-copy ring
/// endpoints are the bench's own.)
pub(super) fn supported(mech: Mech, zero_copy: bool) -> bool {
    (mech.registered().is_some() || mech == Mech::Pipe) && !(zero_copy && mech.is_ring())
}

/// `ep` boxed, waiting through a selector when `via_select`.
pub(super) fn boxed<E: Endpoint + Selectable + 'static>(
    ep: E,
    via_select: bool,
) -> std::io::Result<Box<dyn Endpoint>> {
    Ok(if via_select {
        Box::new(Selected::new(ep)?)
    } else {
        Box::new(ep)
    })
}

/// Waits this process did in a selector (all [`Selected`] endpoints).
static WAITS: AtomicU64 = AtomicU64::new(0);

/// How many times this process has waited in a selector so far.
pub(super) fn waits() -> u64 {
    WAITS.load(Ordering::Relaxed)
}

/// An endpoint whose receives wait in a selector.
pub(super) struct Selected<E: Endpoint + Selectable> {
    ep: E,
    sel: Selector,
    token: Token,
}

impl<E: Endpoint + Selectable> Selected<E> {
    pub(super) fn new(mut ep: E) -> std::io::Result<Self> {
        let mut sel = Selector::new()?;
        let token = sel.register(&mut ep)?;
        Ok(Selected { ep, sel, token })
    }
}

impl<E: Endpoint + Selectable> Drop for Selected<E> {
    fn drop(&mut self) {
        // Before the endpoint goes (its helper thread, if any, stops).
        let _ = self.sel.deregister(self.token);
    }
}

impl<E: Endpoint + Selectable> MessageSender for Selected<E> {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        self.ep.send_until(msg, deadline)
    }
}

impl<E: Endpoint + Selectable> MessageReceiver for Selected<E> {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        loop {
            match self.ep.try_recv_into(buf) {
                Ok(()) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Io(e)) => return Err(RecvTimeoutError::Io(e)),
                Err(TryRecvError::Empty) => {}
            }
            let timeout = match deadline {
                Deadline::Never => None,
                Deadline::Now => return Err(RecvTimeoutError::Timeout),
                Deadline::At(t) => match t.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(RecvTimeoutError::Timeout),
                },
            };
            // Ready or not (a timeout), the next try says.
            WAITS.fetch_add(1, Ordering::Relaxed);
            self.sel.select(timeout).map_err(RecvTimeoutError::Io)?;
        }
    }

    fn max_message_size(&self) -> usize {
        self.ep.max_message_size()
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.ep.set_max_message_size(max);
    }

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.ep.set_wait_strategy(strategy);
    }
}
