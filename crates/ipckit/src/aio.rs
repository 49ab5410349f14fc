//! Async send and receive on a tokio runtime (Cargo feature `tokio`).
//!
//! [`AsyncReceiver`] wraps any receiving end that a [`Selector`](crate::select::Selector)
//! can wait on and waits the same way, through tokio's reactor
//! (`AsyncFd`): on the descriptor, on a stream's read-ahead (a message
//! already read is taken at once), and for a ring on its eventfd, checked
//! exactly. Receiving is cancel-safe: a `recv` dropped before it finished
//! (in `tokio::select!`, say) took nothing.
//!
//! [`AsyncSender`] sends without waiting when the channel has room, which
//! is nearly always; when it is full, the send goes to tokio's blocking
//! pool (`spawn_blocking`) and the task waits for it there: one pool
//! thread per full channel, for as long as it stays full. A send dropped
//! while it waits still completes: the message is not lost, but its
//! result (an error) is.
//!
//! System V queues and semaphores have no descriptor: wrapping one is the
//! same `Unsupported` error as selecting on it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use ipckit::aio::{AsyncReceiver, AsyncSender};
//!
//! let (tx, rx) = ipckit::pipe::channel()?;
//! let mut tx = AsyncSender::new(tx);
//! let mut rx = AsyncReceiver::new(rx)?;
//! tx.send(b"hello".to_vec()).await?;
//! assert_eq!(rx.recv().await?, b"hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::error::{RecvError, SendError, SendTimeoutError, TryRecvError, TrySendError};
use crate::message::{Deadline, MessageReceiver, MessageSender, MessageSenderExt};
use crate::select::{Selectable, Watch};

/// The descriptor number tokio watches; the endpoint that owns it outlives
/// the registration (field order in [`AsyncReceiver`]).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// An async receiving end (see the module docs).
pub struct AsyncReceiver<R> {
    // Dropped first: tokio forgets the descriptor while it is still open.
    afd: AsyncFd<Fd>,
    watch: Watch,
    inner: R,
}

impl<R> fmt::Debug for AsyncReceiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncReceiver({})", self.watch.fd)
    }
}

impl<R: MessageReceiver + Selectable> AsyncReceiver<R> {
    /// Wraps `inner`; must be called inside a tokio runtime.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let watch = Watch::new(inner.readiness()?)?;
        // SAFETY: the descriptor is open and stays the same file until the
        // `AsyncFd` is dropped: it belongs to `inner` (or, for a signalled
        // eventfd, to `watch`), both owned by the value built here and
        // dropped after `afd` (field order, and `into_inner`); `inner` is
        // never handed out by `&mut`, so it cannot be swapped meanwhile.
        let afd =
            unsafe { AsyncFd::register_with_interest(Fd(watch.fd), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(AsyncReceiver { afd, watch, inner })
    }

    /// Receives one message into `buf` (replacing its contents), waiting
    /// for one without blocking the thread.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), RecvError> {
        loop {
            match self.inner.try_recv_into(buf) {
                Ok(()) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(RecvError::Disconnected),
                Err(TryRecvError::Io(e)) => return Err(RecvError::Io(e)),
                Err(TryRecvError::Empty) => {}
            }
            if self.watch.ready_now() {
                continue;
            }
            let mut guard = self.afd.readable().await.map_err(RecvError::Io)?;
            self.watch.after_wake().map_err(RecvError::Io)?;
            // Anything that came before this point is found by the next
            // try; anything after makes the descriptor ready again.
            guard.clear_ready();
        }
    }

    /// Receives one message.
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf).await.map(|()| buf)
    }

    /// The wrapped end.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Receives a message if one is waiting, without waiting.
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), TryRecvError> {
        self.inner.try_recv_into(buf)
    }

    /// Sets the largest message accepted (see
    /// [`MessageReceiver::set_max_message_size`]). (The end itself is not
    /// lent out mutably: it must stay the one registered.)
    pub fn set_max_message_size(&mut self, max: usize) {
        self.inner.set_max_message_size(max);
    }

    /// Unwraps the end (deregistered from the runtime).
    pub fn into_inner(self) -> R {
        let AsyncReceiver { afd, watch, inner } = self;
        drop(afd);
        drop(watch);
        inner
    }
}

/// A send on the blocking pool: the end, the message and how it went.
type Waiting<S> = JoinHandle<(S, Vec<u8>, Result<(), SendTimeoutError<()>>)>;

/// An async sending end (see the module docs).
pub struct AsyncSender<S> {
    /// `None` while a send waits on the blocking pool.
    inner: Option<S>,
    waiting: Option<Waiting<S>>,
}

impl<S> fmt::Debug for AsyncSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.waiting.is_some() {
            "waiting for room"
        } else {
            "ready"
        };
        write!(f, "AsyncSender({state})")
    }
}

impl<S: MessageSender + Send + 'static> AsyncSender<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        AsyncSender {
            inner: Some(inner),
            waiting: None,
        }
    }

    /// The end back from a send that waited on the blocking pool (one
    /// dropped before it finished, too).
    async fn settle(&mut self) -> io::Result<()> {
        if let Some(h) = self.waiting.take() {
            let (s, _msg, _result_of_a_dropped_send) = h
                .await
                .map_err(|e| io::Error::other(format!("a send's blocking task failed: {e}")))?;
            self.inner = Some(s);
        }
        Ok(())
    }

    /// Sends one message, waiting (without blocking the thread) while the
    /// channel is full. Errors hand the message back.
    pub async fn send(&mut self, msg: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        if let Err(e) = self.settle().await {
            return Err(SendError::Io(e, msg));
        }
        let mut s = self.inner.take().expect("settled");
        match s.try_send(msg) {
            Ok(()) => {
                self.inner = Some(s);
                Ok(())
            }
            Err(TrySendError::Full(msg)) => {
                self.waiting = Some(tokio::task::spawn_blocking(move || {
                    let r = s.send_until(&msg, Deadline::Never);
                    (s, msg, r)
                }));
                // If this future is dropped here, the send still completes
                // and the next call takes the end back (`settle`).
                let h = self.waiting.as_mut().expect("just set");
                let done = h.await;
                self.waiting = None;
                let (s, msg, r) = done.map_err(|e| {
                    SendError::Io(
                        io::Error::other(format!("a send's blocking task failed: {e}")),
                        Vec::new(),
                    )
                })?;
                self.inner = Some(s);
                r.map_err(|e| e.without_deadline(msg))
            }
            Err(TrySendError::Disconnected(msg)) => {
                self.inner = Some(s);
                Err(SendError::Disconnected(msg))
            }
            Err(TrySendError::Io(e, msg)) => {
                self.inner = Some(s);
                Err(SendError::Io(e, msg))
            }
        }
    }

    /// The wrapped end, once no send is waiting.
    pub async fn get_mut(&mut self) -> io::Result<&mut S> {
        self.settle().await?;
        Ok(self.inner.as_mut().expect("settled"))
    }

    /// Unwraps the end, once no send is waiting.
    pub async fn into_inner(mut self) -> io::Result<S> {
        self.settle().await?;
        Ok(self.inner.take().expect("settled"))
    }
}
