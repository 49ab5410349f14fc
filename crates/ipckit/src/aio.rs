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
//! result (an error) is. [`AsyncSender`] and [`TypedSender`] are also
//! `Sink`s (`futures_sink`), [`AsyncReceiver`] and [`TypedReceiver`]
//! `Stream`s, for `forward` and the combinators of the futures crates.
//!
//! A System V queue has no descriptor: it is waited on through the same
//! helper thread as for a selector (see [`crate::select`]). Beyond
//! messages: [`AsyncWaiter`] does a semaphore's P (POSIX named or System
//! V) without blocking the thread, and an `AsyncReceiver` over a
//! [`SignalReceiver`](crate::signal::SignalReceiver) gives each signal
//! with its sender and value ([`AsyncReceiver::recv_info`]).
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
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::address::Address;
use crate::endpoint::{Connection, Listener};
use crate::error::{
    MessageTooLarge, RecvError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::message::{Deadline, MessageReceiver, MessageSender, MessageSenderExt};
use crate::rpc::{self, CallError, ReplyFrom};
use crate::select::{Selectable, Watch};
use crate::typed::{self, Codec, Postcard};

/// An error, rather than tokio's panic, for a call outside a runtime.
fn in_runtime(what: &str) -> io::Result<()> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| {
            io::Error::other(format!(
                "{what} needs a tokio runtime: call it inside one (#[tokio::main], \
             Runtime::block_on or Runtime::enter)"
            ))
        })
}

/// The descriptor number tokio watches; the endpoint that owns it outlives
/// the registration (field order in [`AsyncReceiver`]).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A registration with tokio's reactor: the descriptor a [`Watch`] watches.
struct Registered {
    // Dropped first: tokio forgets the descriptor while it is still open.
    afd: AsyncFd<Fd>,
    watch: Watch,
}

impl Registered {
    /// Registers what `r` watches.
    ///
    /// # Safety
    ///
    /// The descriptor of `r` must stay open, the same file, until the
    /// returned value is dropped: it belongs to the registration itself
    /// (a signalled eventfd, duplicated into the watch) or to an object
    /// the caller keeps, unmoved out of its owner, and drops after it.
    unsafe fn new(what: &str, r: crate::select::Readiness<'_>) -> io::Result<Registered> {
        in_runtime(what)?;
        let watch = Watch::new(r)?;
        // SAFETY: the caller's contract above; a watch's own eventfd lives
        // in `watch`, dropped after `afd` (field order).
        let afd =
            unsafe { AsyncFd::register_with_interest(Fd(watch.fd), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(Registered { afd, watch })
    }

    /// Polls until `attempt` succeeds (`Some`): between attempts, waits
    /// for the descriptor (or what else the watch looks at).
    fn poll_until<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            if let Some(t) = attempt() {
                return Poll::Ready(Ok(t));
            }
            if self.watch.ready_now() {
                continue;
            }
            let mut guard = match self.afd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(g)) => g,
            };
            self.watch.after_wake()?;
            // Anything that came before this point is found by the next
            // attempt; anything after makes the descriptor ready again.
            guard.clear_ready();
        }
    }
}

/// An async receiving end (see the module docs).
pub struct AsyncReceiver<R> {
    // Dropped first: the registration goes while `inner` still holds the
    // descriptor.
    reg: Registered,
    inner: R,
}

impl<R> fmt::Debug for AsyncReceiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncReceiver({})", self.reg.watch.fd)
    }
}

impl<R: MessageReceiver + Selectable> AsyncReceiver<R> {
    /// Wraps `inner`; must be called inside a tokio runtime (outside one,
    /// an error says so).
    pub fn new(mut inner: R) -> io::Result<Self> {
        // SAFETY: the descriptor belongs to `inner` (or, for a signalled
        // eventfd, to the registration), both owned by the value built
        // here, `inner` dropped after the registration (field order, and
        // `into_inner`); `inner` is never handed out by `&mut`, so it
        // cannot be swapped meanwhile.
        let reg = unsafe { Registered::new("AsyncReceiver::new", inner.readiness()?)? };
        Ok(AsyncReceiver { reg, inner })
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
        let inner = &mut self.inner;
        self.reg
            .poll_until(cx, || match inner.try_recv_into(buf) {
                Ok(()) => Some(Ok(())),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
                Err(TryRecvError::Io(e)) => Some(Err(RecvError::Io(e))),
            })
            .map(|r| r.unwrap_or_else(|e| Err(RecvError::Io(e))))
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

    /// The wrapped end as a sender, for a two-way end (a socket, a duplex
    /// pair): send through it while receiving here.
    pub fn sender(&mut self) -> &mut (dyn MessageSender + '_)
    where
        R: MessageSender,
    {
        &mut self.inner
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
        let AsyncReceiver { reg, inner } = self;
        drop(reg);
        inner
    }
}

/// Signals as values, asynchronously: the `signalfd` of a
/// [`SignalReceiver`](crate::signal::SignalReceiver) through tokio's
/// reactor (create the receiver before the runtime starts its threads, as
/// its docs say, so that no thread leaves the signals unblocked).
impl AsyncReceiver<crate::signal::SignalReceiver> {
    /// The next signal with who sent it and its value, without blocking
    /// the thread.
    pub async fn recv_info(&mut self) -> io::Result<crate::signal::SignalInfo> {
        std::future::poll_fn(|cx| {
            let inner = &self.inner;
            self.reg
                .poll_until(cx, || inner.try_recv_info().transpose())
                .map(|r| r.and_then(|r| r))
        })
        .await
    }
}

/// Async P on a semaphore: a [`Waiter`](crate::sem::Waiter) through
/// tokio's reactor (its helper thread's eventfd). Cancel-safe: an
/// `acquire` dropped before it finished took nothing (a unit the helper
/// took meanwhile stays held for the next `acquire`, or goes back to the
/// semaphore with the waiter).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use ipckit::aio::AsyncWaiter;
/// use ipckit::sem::{NamedSemaphore, Waiter};
///
/// let name = format!("/ipckit-doc-async-sem-{}", std::process::id());
/// let sem = Arc::new(NamedSemaphore::builder(&name).value(0).create()?);
/// let mut turn = AsyncWaiter::new(Waiter::named(sem.clone())?)?;
/// sem.post()?; // another process's V, say
/// turn.acquire().await?; // P, without blocking the runtime's thread
/// assert_eq!(sem.value()?, 0);
/// # Ok(())
/// # }
/// ```
pub struct AsyncWaiter {
    // Dropped first: the registration watches the waiter's eventfd.
    reg: Registered,
    inner: crate::sem::Waiter,
}

impl fmt::Debug for AsyncWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncWaiter({:?})", self.inner)
    }
}

impl AsyncWaiter {
    /// Wraps `inner`; must be called inside a tokio runtime (outside one,
    /// an error says so).
    pub fn new(mut inner: crate::sem::Waiter) -> io::Result<Self> {
        // SAFETY: the descriptor is the registration's own duplicate of
        // the waiter's eventfd, dropped with it.
        let reg = unsafe { Registered::new("AsyncWaiter::new", inner.readiness()?)? };
        Ok(AsyncWaiter { reg, inner })
    }

    /// P: waits until the helper took a unit for this waiter (or one can
    /// be taken at once), without blocking the thread. The unit is yours:
    /// post it back when done.
    pub async fn acquire(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_acquire(cx)).await
    }

    /// The poll form of [`acquire`](Self::acquire).
    pub fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut self.inner;
        self.reg
            .poll_until(cx, || match inner.try_take() {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .map(|r| r.and_then(|r| r))
    }

    /// [`Waiter::try_take`](crate::sem::Waiter::try_take): the P without
    /// waiting.
    pub fn try_acquire(&mut self) -> io::Result<bool> {
        self.inner.try_take()
    }

    /// Unwraps the waiter (deregistered from the runtime).
    pub fn into_inner(self) -> crate::sem::Waiter {
        let AsyncWaiter { reg, inner } = self;
        drop(reg);
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

impl<S: MessageSender + Send + 'static> AsyncSender<S> {
    /// Polls a send waiting on the blocking pool to its end: the end back,
    /// and that send's outcome (the message is lost if it failed).
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(h) = self.waiting.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = match Pin::new(h).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        self.waiting = None;
        let (s, _msg, r) =
            done.map_err(|e| io::Error::other(format!("a send's blocking task failed: {e}")))?;
        self.inner = Some(s);
        Poll::Ready(r.map_err(|e| io::Error::from(e.without_deadline(()))))
    }
}

/// Messages sent as a `Sink` (`SinkExt::send`, `forward` a stream into
/// it): `poll_ready` waits while a send into a full channel is under way,
/// `start_send` sends at once or hands the send to the blocking pool,
/// `poll_flush` waits for it. A failed send is reported by the next
/// `poll_ready`, `poll_flush` or `poll_close`; unlike
/// [`send`](AsyncSender::send), it cannot hand the message back.
impl<S: MessageSender + Send + Unpin + 'static> futures_sink::Sink<Vec<u8>> for AsyncSender<S> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_settle(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Vec<u8>) -> io::Result<()> {
        let me = self.get_mut();
        let mut s = me.inner.take().ok_or_else(|| {
            io::Error::other("start_send before poll_ready returned Ready (Sink contract)")
        })?;
        match s.try_send(msg) {
            Ok(()) => {
                me.inner = Some(s);
                Ok(())
            }
            Err(TrySendError::Full(msg)) => {
                me.waiting = Some(tokio::task::spawn_blocking(move || {
                    let r = s.send_until(&msg, Deadline::Never);
                    (s, msg, r)
                }));
                Ok(())
            }
            Err(e) => {
                me.inner = Some(s);
                Err(io::Error::from(e.map(|_| ())))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_settle(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_settle(cx)
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

/// Values sent as a `Sink`: encoded, then as [`AsyncSender`]'s `Sink`. A
/// value that does not encode is an error of `start_send`.
impl<T: Serialize, S: MessageSender + Send + Unpin + 'static, C: Codec + Unpin>
    futures_sink::Sink<T> for TypedSender<T, S, C>
{
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().tx.poll_settle(cx)
    }

    fn start_send(self: Pin<&mut Self>, value: T) -> io::Result<()> {
        let me = self.get_mut();
        let mut bytes = Vec::new();
        typed::encode(&me.codec, &value, &mut bytes)?;
        Pin::new(&mut me.tx).start_send(bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().tx.poll_settle(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().tx.poll_settle(cx)
    }
}

/// The calls waiting for replies, by id.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    /// The replies stopped: no more will come.
    closed: bool,
}

fn lock(p: &StdMutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// An async request/reply client (see [`crate::rpc`] for the addresses,
/// the wire format and the server): many tasks call through one client at
/// once; a task of the runtime reads the replies and hands each to its
/// caller. A call dropped before its reply (a timeout, `select!`) leaves
/// nothing behind: its reply, if it comes, is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ipckit::aio::AsyncClient;
/// use ipckit::rpc::Server;
/// use std::time::Duration;
///
/// let addr: ipckit::Address = format!("unix:@ipckit-doc-aio-rpc-{}", std::process::id()).parse()?;
/// let server = Server::new(ipckit::listen(&addr)?).spawn(|x: u32| x * 2)?;
/// let client = AsyncClient::<u32, u32>::connect(&addr, Duration::from_secs(5)).await?;
/// assert_eq!(client.call(&21, Duration::from_secs(5)).await?, 42);
/// server.stop()?;
/// # Ok(())
/// # }
/// ```
pub struct AsyncClient<Req, Resp, C = Postcard> {
    tx: tokio::sync::Mutex<AsyncSender<Connection>>,
    pending: Arc<StdMutex<Pending>>,
    reader: JoinHandle<()>,
    next_id: AtomicU64,
    reply_to: String,
    addr: Address,
    codec: C,
    _types: PhantomData<fn(&Req) -> Resp>,
}

impl<Req, Resp, C> fmt::Debug for AsyncClient<Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncClient({})", self.addr)
    }
}

impl<Req, Resp, C> Drop for AsyncClient<Req, Resp, C> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> AsyncClient<Req, Resp, Postcard> {
    /// Connects to a server at `addr`, waiting at most `timeout` for it
    /// to be there.
    pub async fn connect(addr: &Address, timeout: Duration) -> io::Result<Self> {
        Self::connect_with(addr, timeout, Postcard).await
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, C: Codec> AsyncClient<Req, Resp, C> {
    /// Connects with another codec (the server must use the same).
    pub async fn connect_with(addr: &Address, timeout: Duration, codec: C) -> io::Result<Self> {
        // Connecting may wait (a server still starting, a FIFO's reader).
        let a = addr.clone();
        let (tx, from, reply_to) =
            tokio::task::spawn_blocking(move || rpc::open_client(&a, Some(timeout)))
                .await
                .map_err(io::Error::other)??;
        let pending = Arc::new(StdMutex::new(Pending::default()));
        let (first, fifo) = match from {
            ReplyFrom::Ready(rx) => (Some(AsyncReceiver::new(rx)?), None),
            ReplyFrom::Fifo(l) => (None, Some(Arc::new(l))),
        };
        let reader = tokio::spawn(read_replies(first, fifo, pending.clone()));
        Ok(AsyncClient {
            tx: tokio::sync::Mutex::new(AsyncSender::new(tx)),
            pending,
            reader,
            next_id: AtomicU64::new(1),
            reply_to,
            addr: addr.clone(),
            codec,
            _types: PhantomData,
        })
    }

    /// Sends `req` and waits at most `timeout` for its reply.
    pub async fn call(&self, req: &Req, timeout: Duration) -> Result<Resp, CallError> {
        let until = tokio::time::Instant::now() + timeout;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = rpc::request_message(&self.codec, id, &self.reply_to, req)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if p.closed {
                return Err(CallError::Disconnected);
            }
            p.calls.insert(id, tx);
        }
        // However this call ends (dropped too), its entry goes.
        let _forget = Forget(&self.pending, id);
        let sent =
            tokio::time::timeout_at(until, async { self.tx.lock().await.send(msg).await }).await;
        match sent {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(SendError::Disconnected(_))) => return Err(CallError::Disconnected),
            Ok(Err(SendError::Io(e, _))) => return Err(CallError::Io(e)),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(until, rx).await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(_)) => Err(CallError::Disconnected),
            Ok(Ok(reply)) => rpc::finish_reply(&self.codec, &reply),
        }
    }
}

/// Removes a call's entry when the call ends.
struct Forget<'a>(&'a StdMutex<Pending>, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.0).calls.remove(&self.1);
    }
}

/// Reads replies and hands each to its caller, until the replies stop;
/// then every waiting call learns it. A FIFO inbox is opened when the
/// server's writer comes, and again after the server closes it.
async fn read_replies(
    mut rx: Option<AsyncReceiver<Connection>>,
    fifo: Option<Arc<Listener>>,
    pending: Arc<StdMutex<Pending>>,
) {
    loop {
        let r = match &mut rx {
            Some(r) => r,
            None => {
                let Some(l) = &fifo else { break };
                let opened = accept_fifo(l).await.unwrap_or_else(|| l.accept());
                match opened.and_then(AsyncReceiver::new) {
                    Ok(r) => rx.insert(r),
                    Err(_) => break,
                }
            }
        };
        match r.recv().await {
            Ok(buf) => {
                if let Some((id, reply)) = rpc::split_reply(buf) {
                    if let Some(tx) = lock(&pending).calls.remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
            }
            Err(RecvError::Disconnected) if fifo.is_some() => rx = None,
            // A reply over the limit was refused: the next one may do.
            Err(RecvError::Io(e)) if MessageTooLarge::find(&e).is_some() => {}
            Err(_) => break,
        }
    }
    let mut p = lock(&pending);
    p.closed = true;
    p.calls.clear();
}

/// The async serving side of request/reply: an async handler per request,
/// each request its own task, so a slow one holds up no other (see
/// [`crate::rpc`] for addresses and the wire format; clients may be
/// [`rpc::Client`] or [`AsyncClient`]).
///
/// Connections are accepted through the runtime's reactor; a FIFO's
/// writers, one after another, through its reading end opened at once
/// and watched until a writer comes (no thread waits in `open(2)`).
/// [`serve`](AsyncServer::serve) runs until accepting fails;
/// dropping its future (a `select!` with a shutdown signal, or aborting
/// its task) stops every connection and request task it started, and
/// drops the listener, removing what it made.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ipckit::aio::{AsyncClient, AsyncServer};
/// use std::time::Duration;
///
/// let addr: ipckit::Address = format!("mq:/ipckit-doc-aio-server-{}", std::process::id()).parse()?;
/// let server = AsyncServer::<String, usize>::new(ipckit::listen(&addr)?);
/// let serving = tokio::spawn(server.serve(|s: String| async move { s.len() }));
/// let client = AsyncClient::<String, usize>::connect(&addr, Duration::from_secs(5)).await?;
/// assert_eq!(client.call(&"four".to_string(), Duration::from_secs(5)).await?, 4);
/// serving.abort();
/// # Ok(())
/// # }
/// ```
pub struct AsyncServer<Req, Resp, C = Postcard> {
    listener: Arc<Listener>,
    codec: Arc<C>,
    max_request: usize,
    reply_timeout: Duration,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, C> fmt::Debug for AsyncServer<Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncServer({})", self.listener.address())
    }
}

impl<Req, Resp> AsyncServer<Req, Resp, Postcard>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// A server on `listener` (from [`crate::listen`]).
    pub fn new(listener: Listener) -> Self {
        Self::with_codec(listener, Postcard)
    }
}

/// Where one request's reply goes.
enum AsyncReply {
    Conn(Arc<tokio::sync::Mutex<AsyncSender<Connection>>>),
    To(String),
}

/// The reply connections to client inboxes, by address.
type Inboxes = StdMutex<HashMap<String, Arc<tokio::sync::Mutex<AsyncSender<Connection>>>>>;

impl<Req, Resp, C> AsyncServer<Req, Resp, C>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    C: Codec + Send + Sync + 'static,
{
    /// A server with another codec (the clients must use the same).
    pub fn with_codec(listener: Listener, codec: C) -> Self {
        AsyncServer {
            listener: Arc::new(listener),
            codec: Arc::new(codec),
            max_request: crate::frame::DEFAULT_MAX_MESSAGE_SIZE,
            reply_timeout: Duration::from_secs(5),
            _types: PhantomData,
        }
    }

    /// The largest request accepted (default 16 MiB).
    pub fn max_request_size(mut self, max: usize) -> Self {
        self.max_request = max;
        self
    }

    /// How long a reply may wait for a client that does not read (default
    /// 5 s); after that it is dropped.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Serves until accepting fails (see the type's docs for stopping).
    pub async fn serve<F, Fut>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Resp> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let own = self.listener.local_address()?;
        let broker: Option<std::path::PathBuf> = self.listener.broker().map(Into::into);
        let inboxes: Arc<Inboxes> = Arc::default();
        let max = rpc::max_request_message(self.max_request);
        // Every task this server starts: dropped with the `serve` future.
        let mut tasks = tokio::task::JoinSet::new();
        let mut accept = AsyncAccept::new(self.listener.clone())?;
        let connections = self.listener.has_connections();
        let fifo = matches!(self.listener.address(), Address::Fifo(_));
        loop {
            let conn = if connections {
                accept.next().await?
            } else {
                self.listener.accept()?
            };
            let (reply, mut rx) = if conn.can_send() && own.is_connection() {
                let (tx, rx) = conn.split()?;
                (
                    Some(Arc::new(tokio::sync::Mutex::new(AsyncSender::new(tx)))),
                    rx,
                )
            } else {
                (None, conn)
            };
            rx.set_max_message_size(max);
            let mut rx = AsyncReceiver::new(rx)?;
            let (handler, codec, inboxes, own, broker) = (
                handler.clone(),
                self.codec.clone(),
                inboxes.clone(),
                own.clone(),
                broker.clone(),
            );
            let reply_timeout = self.reply_timeout;
            let conn_task = async move {
                let mut requests = tokio::task::JoinSet::new();
                loop {
                    let buf = match rx.recv().await {
                        Ok(b) => b,
                        Err(RecvError::Io(e))
                            if reply.is_none() && MessageTooLarge::find(&e).is_some() =>
                        {
                            continue
                        }
                        Err(_) => break,
                    };
                    let Some((id, to, body)) = rpc::parse_request_parts(&buf, &own) else {
                        continue;
                    };
                    let path = match (to, &reply) {
                        (None, Some(tx)) => AsyncReply::Conn(tx.clone()),
                        (Some(to), _) => AsyncReply::To(to.to_owned()),
                        (None, None) => continue,
                    };
                    let body = body.to_vec();
                    let (handler, codec, inboxes, own, broker) = (
                        handler.clone(),
                        codec.clone(),
                        inboxes.clone(),
                        own.clone(),
                        broker.clone(),
                    );
                    requests.spawn(async move {
                        let outcome = match typed::decode::<Req, C>(&codec, &body) {
                            Err(e) => Err(e.to_string()),
                            Ok(req) => {
                                // Its own task, so that a panic is caught.
                                match tokio::spawn(handler(req)).await {
                                    Ok(resp) => rpc::encode_response(&*codec, &resp),
                                    Err(e) if e.is_panic() => {
                                        Err(rpc::panic_message(&*e.into_panic()))
                                    }
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                        };
                        let msg = rpc::reply_message(id, outcome);
                        send_reply(&own, broker, path, msg, &inboxes, reply_timeout).await;
                    });
                    // Finished request tasks are reaped as we go.
                    while requests.try_join_next().is_some() {}
                }
                while requests.join_next().await.is_some() {}
            };
            if !connections {
                // The one receiving end, served in this future: dropping
                // it drops the queue or ring at once.
                conn_task.await;
                return Ok(());
            }
            if fifo {
                // A FIFO's writers come in turn, through one reading end
                // at a time (two would split the stream between them).
                conn_task.await;
                continue;
            }
            tasks.spawn(conn_task);
            while tasks.try_join_next().is_some() {}
        }
    }
}

/// Sends one reply (dropped if it cannot go within `timeout`).
async fn send_reply(
    own: &Address,
    broker: Option<std::path::PathBuf>,
    path: AsyncReply,
    msg: Vec<u8>,
    inboxes: &Inboxes,
    timeout: Duration,
) {
    let tx = match path {
        AsyncReply::Conn(tx) => tx,
        AsyncReply::To(to) => {
            let known = inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&to)
                .cloned();
            match known {
                Some(tx) => tx,
                None => {
                    // Connecting may wait (a FIFO, for its reader).
                    let (own, to2) = (own.clone(), to.clone());
                    let conn = tokio::task::spawn_blocking(move || {
                        rpc::open_reply(&own, broker.as_deref(), &to2, timeout)
                    })
                    .await;
                    let Ok(Ok(conn)) = conn else {
                        return;
                    };
                    let tx = Arc::new(tokio::sync::Mutex::new(AsyncSender::new(conn)));
                    let mut all = inboxes.lock().unwrap_or_else(|e| e.into_inner());
                    if all.len() >= rpc::MAX_INBOXES {
                        all.clear();
                    }
                    all.insert(to, tx.clone());
                    tx
                }
            }
        }
    };
    let _ = tokio::time::timeout(timeout, async { tx.lock().await.send(msg).await }).await;
}

/// The next writer of a `fifo:` listener (`None` for other mechanisms):
/// the reading end is opened at once and waited on through the reactor
/// until a writer has written or come and gone, so no thread sleeps in
/// `open(2)`, and dropping the future closes it.
async fn accept_fifo(listener: &Listener) -> Option<io::Result<Connection>> {
    let (conn, fd) = match listener.fifo_reader_now()? {
        Ok(opened) => opened,
        Err(e) => return Some(Err(e)),
    };
    let writer_came = async {
        // SAFETY: `fd` is the reading end `conn` owns; `conn` is alive
        // until after this block, where `afd` is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        afd.readable().await.map(drop)
    };
    Some(writer_came.await.map(|()| conn))
}

/// Accepts connections through the reactor.
struct AsyncAccept {
    // Dropped first: tokio forgets the descriptor while it is still open.
    afd: Option<AsyncFd<Fd>>,
    listener: Arc<Listener>,
}

impl AsyncAccept {
    fn new(listener: Arc<Listener>) -> io::Result<Self> {
        in_runtime("AsyncServer::serve")?;
        let afd = match listener.readiness_fd() {
            Some(fd) => {
                // SAFETY: the descriptor is the listening socket's, open as
                // long as `listener`, which this value holds (an `Arc`) and
                // drops after `afd` (field order).
                Some(
                    unsafe {
                        AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE)
                    }
                    .map_err(io::Error::from)?,
                )
            }
            None => None,
        };
        Ok(AsyncAccept { afd, listener })
    }

    async fn next(&mut self) -> io::Result<Connection> {
        if let Some(conn) = accept_fifo(&self.listener).await {
            return conn;
        }
        let Some(afd) = &self.afd else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this listener has no connections to accept",
            ));
        };
        loop {
            match self.listener.accept_timeout(Duration::ZERO) {
                Ok(c) => return Ok(c),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
            let mut guard = afd.readable().await?;
            guard.clear_ready();
        }
    }
}
