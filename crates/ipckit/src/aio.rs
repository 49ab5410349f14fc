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
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::error::{RecvError, SendError, SendTimeoutError, TryRecvError, TrySendError};
use crate::message::{Deadline, MessageReceiver, MessageSender, MessageSenderExt};
use crate::select::{Selectable, Watch};
use crate::typed::{self, Codec, Postcard};

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
        std::future::poll_fn(|cx| self.poll_recv_into(cx, buf)).await
    }

    /// The poll form of [`recv_into`](Self::recv_into), for hand-written
    /// futures: `Pending` means the task is woken when a message may be
    /// there.
    pub fn poll_recv_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<Result<(), RecvError>> {
        loop {
            match self.inner.try_recv_into(buf) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TryRecvError::Disconnected) => {
                    return Poll::Ready(Err(RecvError::Disconnected))
                }
                Err(TryRecvError::Io(e)) => return Poll::Ready(Err(RecvError::Io(e))),
                Err(TryRecvError::Empty) => {}
            }
            if self.watch.ready_now() {
                continue;
            }
            let mut guard = match self.afd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RecvError::Io(e))),
                Poll::Ready(Ok(g)) => g,
            };
            if let Err(e) = self.watch.after_wake() {
                return Poll::Ready(Err(RecvError::Io(e)));
            }
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

/// The messages as they come, until every sender is gone; an I/O error is
/// an item of its own (the stream goes on after it).
impl<R: MessageReceiver + Selectable + Unpin> futures_core::Stream for AsyncReceiver<R> {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.get_mut();
        let mut buf = Vec::new();
        match me.poll_recv_into(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(buf))),
            Poll::Ready(Err(RecvError::Disconnected)) => Poll::Ready(None),
            Poll::Ready(Err(RecvError::Io(e))) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// Typed messages over an [`AsyncReceiver`] (see [`crate::typed`]).
pub struct TypedReceiver<T, R, C = Postcard> {
    rx: AsyncReceiver<R>,
    codec: C,
    buf: Vec<u8>,
    _t: PhantomData<fn() -> T>,
}

impl<T, R, C> fmt::Debug for TypedReceiver<T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypedReceiver<{}>({:?})",
            std::any::type_name::<T>(),
            self.rx
        )
    }
}

impl<T: DeserializeOwned, R: MessageReceiver + Selectable> TypedReceiver<T, R, Postcard> {
    /// Wraps `rx`; values in postcard.
    pub fn new(rx: AsyncReceiver<R>) -> Self {
        Self::with_codec(rx, Postcard)
    }
}

impl<T: DeserializeOwned, R: MessageReceiver + Selectable, C: Codec> TypedReceiver<T, R, C> {
    /// Wraps `rx` with another codec.
    pub fn with_codec(rx: AsyncReceiver<R>, codec: C) -> Self {
        TypedReceiver {
            rx,
            codec,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Receives and decodes one value; one that does not decode is an
    /// `InvalidData` error carrying a [`crate::typed::DecodeError`], and
    /// the next receive goes on.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        self.rx.recv_into(&mut self.buf).await?;
        typed::decode(&self.codec, &self.buf).map_err(RecvError::Io)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        match self.rx.poll_recv_into(cx, &mut self.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                Poll::Ready(typed::decode(&self.codec, &self.buf).map_err(RecvError::Io))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

/// The values as they come, until every sender is gone.
impl<T: DeserializeOwned, R: MessageReceiver + Selectable + Unpin, C: Codec + Unpin>
    futures_core::Stream for TypedReceiver<T, R, C>
{
    type Item = io::Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Some(Ok(v))),
            Poll::Ready(Err(RecvError::Disconnected)) => Poll::Ready(None),
            Poll::Ready(Err(RecvError::Io(e))) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// Typed messages over an [`AsyncSender`].
pub struct TypedSender<T, S, C = Postcard> {
    tx: AsyncSender<S>,
    codec: C,
    _t: PhantomData<fn(T)>,
}

impl<T, S, C> fmt::Debug for TypedSender<T, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypedSender<{}>({:?})",
            std::any::type_name::<T>(),
            self.tx
        )
    }
}

impl<T: Serialize, S: MessageSender + Send + 'static> TypedSender<T, S, Postcard> {
    /// Wraps `tx`; values in postcard.
    pub fn new(tx: AsyncSender<S>) -> Self {
        Self::with_codec(tx, Postcard)
    }
}

impl<T: Serialize, S: MessageSender + Send + 'static, C: Codec> TypedSender<T, S, C> {
    /// Wraps `tx` with another codec.
    pub fn with_codec(tx: AsyncSender<S>, codec: C) -> Self {
        TypedSender {
            tx,
            codec,
            _t: PhantomData,
        }
    }

    /// Encodes and sends one value; errors hand it back.
    pub async fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        let mut bytes = Vec::new();
        if let Err(e) = typed::encode(&self.codec, &value, &mut bytes) {
            return Err(SendError::Io(e, value));
        }
        self.tx.send(bytes).await.map_err(|e| e.map(|_| value))
    }
}
