//! The shared message traits.
//!
//! Every message-capable mechanism in ipckit implements [`MessageSender`]
//! and/or [`MessageReceiver`], so code written against them works over a
//! pipe, a FIFO, a Unix or TCP socket, a datagram socket, and later message
//! queues and shared-memory rings.
//!
//! # The contract
//!
//! - A message is a whole byte string, delivered whole and in order, or not
//!   at all. Byte-stream mechanisms frame messages (see [`crate::frame`]);
//!   datagram mechanisms use the kernel's own boundaries.
//! - Each operation comes in three forms: blocking (`send`, `recv`),
//!   non-blocking (`try_send`, `try_recv`) and with a timeout
//!   (`send_timeout`, `recv_timeout`). Implementations write one method,
//!   [`MessageSender::send_until`] or [`MessageReceiver::recv_until`], that
//!   takes a [`Deadline`]; the three forms are derived from it.
//! - Send errors hand the message back. `Full`/`Empty` and `Timeout` mean
//!   "try again later"; `Disconnected` means the peer is gone for good.
//! - A receiver never allocates more than its `max_message_size` for one
//!   message, whatever the peer announces.

use std::time::{Duration, Instant};

use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::wait::WaitStrategy;

/// When a send or receive gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Wait as long as it takes.
    Never,
    /// Do not wait at all.
    Now,
    /// Wait until this instant.
    At(Instant),
}

impl Deadline {
    /// A deadline `timeout` from now. A timeout too large to represent
    /// means [`Deadline::Never`].
    pub fn after(timeout: Duration) -> Deadline {
        Instant::now()
            .checked_add(timeout)
            .map_or(Deadline::Never, Deadline::At)
    }

    /// The instant, if there is one (`Now` is the current instant).
    pub fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Never => None,
            Deadline::Now => Some(Instant::now()),
            Deadline::At(t) => Some(t),
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(self) -> bool {
        match self {
            Deadline::Never => false,
            Deadline::Now => true,
            Deadline::At(t) => Instant::now() >= t,
        }
    }
}

/// An endpoint that sends whole messages of bytes.
///
/// The convenience forms (`send`, `try_send`, `send_timeout`) take any
/// `AsRef<[u8]>` and hand it back on failure; being generic, they live in
/// [`MessageSenderExt`], implemented for every sender including
/// `dyn MessageSender`. Import both (or [`crate::prelude`]).
pub trait MessageSender {
    /// Sends one message, waiting until `deadline` at the most.
    ///
    /// The one method an implementation writes. `Err(Timeout(()))` is only
    /// returned when the deadline is not [`Deadline::Never`].
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>>;
}

/// The blocking, non-blocking and timed forms of [`MessageSender::send_until`],
/// for every sender, trait objects included.
///
/// ```
/// use ipckit::prelude::*;
///
/// let (tx, mut rx) = ipckit::pipe::channel()?;
/// let mut boxed: Box<dyn MessageSender + Send> = Box::new(tx);
/// boxed.send(b"through a trait object")?;
/// assert_eq!(rx.recv()?, b"through a trait object");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait MessageSenderExt: MessageSender {
    /// Sends one message, blocking until the channel takes it.
    fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.send_until(msg.as_ref(), Deadline::Never)
            .map_err(|e| e.without_deadline(msg))
    }

    /// Sends one message if the channel can take it now, without blocking.
    fn try_send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), TrySendError<M>> {
        match self.send_until(msg.as_ref(), Deadline::Now) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(())) => Err(TrySendError::Full(msg)),
            Err(SendTimeoutError::Disconnected(())) => Err(TrySendError::Disconnected(msg)),
            Err(SendTimeoutError::Io(e, ())) => Err(TrySendError::Io(e, msg)),
        }
    }

    /// Sends one message, waiting at most `timeout` for the channel to take it.
    fn send_timeout<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<M>> {
        self.send_until(msg.as_ref(), Deadline::after(timeout))
            .map_err(|e| e.map(|()| msg))
    }
}

impl<T: MessageSender + ?Sized> MessageSenderExt for T {}

/// An endpoint that receives whole messages of bytes.
pub trait MessageReceiver {
    /// Receives one message into `buf` (replacing its contents), waiting
    /// until `deadline` at the most. The one method an implementation writes.
    fn recv_until(&mut self, buf: &mut Vec<u8>, deadline: Deadline)
        -> Result<(), RecvTimeoutError>;

    /// The largest message this receiver accepts.
    fn max_message_size(&self) -> usize;

    /// Sets the largest message this receiver accepts; a larger one is
    /// refused with [`crate::MessageTooLarge`] before anything is allocated.
    fn set_max_message_size(&mut self, max: usize);

    /// Sets how a receive waits for data (see [`WaitStrategy`]).
    fn set_wait_strategy(&mut self, strategy: WaitStrategy);

    /// Receives one message into `buf`, blocking until one arrives.
    /// Reusing `buf` across calls avoids an allocation per message.
    fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), RecvError> {
        self.recv_until(buf, Deadline::Never)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives one message into `buf` if one is waiting, without blocking.
    fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), TryRecvError> {
        match self.recv_until(buf, Deadline::Now) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
            Err(RecvTimeoutError::Disconnected) => Err(TryRecvError::Disconnected),
            Err(RecvTimeoutError::Io(e)) => Err(TryRecvError::Io(e)),
        }
    }

    /// Receives one message into `buf`, waiting at most `timeout`.
    fn recv_timeout_into(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RecvTimeoutError> {
        self.recv_until(buf, Deadline::after(timeout))
    }

    /// Receives one message, blocking until one arrives.
    fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf).map(|()| buf)
    }

    /// Receives one message if one is waiting, without blocking.
    fn try_recv(&mut self) -> Result<Vec<u8>, TryRecvError> {
        let mut buf = Vec::new();
        self.try_recv_into(&mut buf).map(|()| buf)
    }

    /// Receives one message, waiting at most `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_timeout_into(&mut buf, timeout).map(|()| buf)
    }
}

/// Endpoints behind a `Box` or a `&mut` (for example a typed sender and a
/// typed receiver over one two-way endpoint) are endpoints too.
macro_rules! forward_endpoint {
    ($($ptr:tt)*) => {
        impl<T: MessageSender + ?Sized> MessageSender for $($ptr)* {
            fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
                (**self).send_until(msg, deadline)
            }
        }

        impl<T: MessageReceiver + ?Sized> MessageReceiver for $($ptr)* {
            fn recv_until(
                &mut self,
                buf: &mut Vec<u8>,
                deadline: Deadline,
            ) -> Result<(), RecvTimeoutError> {
                (**self).recv_until(buf, deadline)
            }
            fn max_message_size(&self) -> usize {
                (**self).max_message_size()
            }
            fn set_max_message_size(&mut self, max: usize) {
                (**self).set_max_message_size(max)
            }
            fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
                (**self).set_wait_strategy(strategy)
            }
        }
    };
}

forward_endpoint!(Box<T>);
forward_endpoint!(&mut T);
