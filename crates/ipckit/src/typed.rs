//! Typed messages over any endpoint: [`Sender<T>`] and [`Receiver<T>`]
//! encode and decode a `T: Serialize + DeserializeOwned` per message, with
//! postcard by default ([`Postcard`]: compact, for Rust on both sides) or
//! JSON ([`Json`]: for talking to other languages); another format is a
//! small [`Codec`] implementation.
//!
//! The endpoint's message limit applies to the encoded bytes before
//! anything is decoded, and a message that does not decode as `T` is an
//! error naming the type ([`DecodeError`]), never a panic; the next message
//! is received normally.
//!
//! ```
//! use ipckit::typed::{Receiver, Sender};
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! enum Op { Add(i64, i64), Quit }
//!
//! let (tx, rx) = ipckit::pipe::channel()?;
//! let (mut tx, mut rx) = (Sender::<Op, _>::new(tx), Receiver::<Op, _>::new(rx));
//! tx.send(Op::Add(1, 2))?;
//! tx.send(Op::Quit)?;
//! drop(tx);
//! let all: Vec<Op> = rx.iter().collect::<Result<_, _>>()?;
//! assert_eq!(all, [Op::Add(1, 2), Op::Quit]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError};
use crate::message::{Deadline, MessageReceiver, MessageSender};

/// How values become message bytes and back.
pub trait Codec {
    /// The format's name, for error messages.
    fn name(&self) -> &'static str;
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String>;
    /// Decodes one value from the whole of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// The postcard format (compact, schema in the Rust types).
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Codec for Postcard {
    fn name(&self) -> &'static str {
        "postcard"
    }
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        let bytes = postcard::to_extend(value, std::mem::take(out)).map_err(|e| e.to_string())?;
        *out = bytes;
        Ok(())
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!("{} bytes left over after the value", rest.len()));
        }
        Ok(v)
    }
}

/// JSON, one document per message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    fn name(&self) -> &'static str {
        "JSON"
    }
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A message that did not decode as the expected type (inside an
/// `io::Error` of kind `InvalidData`; find it with [`DecodeError::find`]).
#[derive(Debug, Clone)]
pub struct DecodeError {
    /// The type it was decoded as.
    pub type_name: &'static str,
    /// The format.
    pub codec: &'static str,
    /// The message's length in bytes.
    pub len: usize,
    /// What the decoder said.
    pub reason: String,
}

impl DecodeError {
    /// Finds a `DecodeError` inside an I/O error, if that is what it is.
    pub fn find(err: &io::Error) -> Option<&DecodeError> {
        err.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a message of {} bytes is not a {} {}: {} (does the sender use the same type and \
             codec?)",
            self.len, self.codec, self.type_name, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

fn encode_failed(codec: &str, type_name: &str, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot encode a {type_name} as {codec}: {why}"),
    )
}

/// Encodes `value` into `buf` (cleared first).
pub(crate) fn encode<T: Serialize, C: Codec>(
    codec: &C,
    value: &T,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    codec
        .encode(value, buf)
        .map_err(|why| encode_failed(codec.name(), std::any::type_name::<T>(), why))
}

/// Decodes one `T` from `buf`.
pub(crate) fn decode<T: DeserializeOwned, C: Codec>(codec: &C, buf: &[u8]) -> io::Result<T> {
    codec.decode(buf).map_err(|reason| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            DecodeError {
                type_name: std::any::type_name::<T>(),
                codec: codec.name(),
                len: buf.len(),
                reason,
            },
        )
    })
}

fn no_deadline<T>(e: SendTimeoutError<T>) -> SendError<T> {
    match e {
        SendTimeoutError::Disconnected(v) => SendError::Disconnected(v),
        SendTimeoutError::Io(e, v) => SendError::Io(e, v),
        SendTimeoutError::Timeout(v) => SendError::Io(
            io::Error::new(io::ErrorKind::TimedOut, "unexpected timeout"),
            v,
        ),
    }
}

fn try_from_timeout<T>(r: Result<T, RecvTimeoutError>) -> Result<T, TryRecvError> {
    match r {
        Ok(v) => Ok(v),
        Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
        Err(RecvTimeoutError::Disconnected) => Err(TryRecvError::Disconnected),
        Err(RecvTimeoutError::Io(e)) => Err(TryRecvError::Io(e)),
    }
}

/// Sends values of type `T` over a message endpoint `S`.
#[derive(Debug)]
pub struct Sender<T, S, C = Postcard> {
    inner: S,
    codec: C,
    buf: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

impl<T: Serialize, S: MessageSender, C: Codec + Default> Sender<T, S, C> {
    /// Wraps `inner` with the default codec `C`.
    pub fn new(inner: S) -> Self {
        Self::with_codec(inner, C::default())
    }
}

impl<T: Serialize, S: MessageSender, C: Codec> Sender<T, S, C> {
    /// Wraps `inner` with `codec`.
    pub fn with_codec(inner: S, codec: C) -> Self {
        Sender {
            inner,
            codec,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Sends one value, waiting until `deadline` at the most; the value is
    /// handed back on failure.
    pub fn send_until(&mut self, value: T, deadline: Deadline) -> Result<(), SendTimeoutError<T>> {
        if let Err(e) = encode(&self.codec, &value, &mut self.buf) {
            return Err(SendTimeoutError::Io(e, value));
        }
        self.inner
            .send_until(&self.buf, deadline)
            .map_err(|e| e.map(|()| value))
    }

    /// Sends one value, blocking until the endpoint takes it.
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        self.send_until(value, Deadline::Never).map_err(no_deadline)
    }

    /// Sends one value, waiting at most `timeout`.
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Deadline::after(timeout))
    }

    /// The endpoint underneath.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the endpoint.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Receives values of type `T` from a message endpoint `R`.
#[derive(Debug)]
pub struct Receiver<T, R, C = Postcard> {
    inner: R,
    codec: C,
    buf: Vec<u8>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned, R: MessageReceiver, C: Codec + Default> Receiver<T, R, C> {
    /// Wraps `inner` with the default codec `C`.
    pub fn new(inner: R) -> Self {
        Self::with_codec(inner, C::default())
    }
}

impl<T: DeserializeOwned, R: MessageReceiver, C: Codec> Receiver<T, R, C> {
    /// Wraps `inner` with `codec`.
    pub fn with_codec(inner: R, codec: C) -> Self {
        Receiver {
            inner,
            codec,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Receives one value, waiting until `deadline` at the most.
    pub fn recv_until(&mut self, deadline: Deadline) -> Result<T, RecvTimeoutError> {
        self.inner.recv_until(&mut self.buf, deadline)?;
        decode(&self.codec, &self.buf).map_err(RecvTimeoutError::Io)
    }

    /// Receives one value, blocking until one arrives.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_until(Deadline::Never)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives one value if one is waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        try_from_timeout(self.recv_until(Deadline::Now))
    }

    /// Receives one value, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// The values as they come, until the other side is gone. A message
    /// that does not decode is an `Err` item and the iteration goes on; any
    /// other error is the last item.
    pub fn iter(&mut self) -> Iter<'_, T, R, C> {
        Iter {
            rx: self,
            done: false,
        }
    }

    /// Sets the largest encoded message accepted (checked before decoding).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.inner.set_max_message_size(max);
    }

    /// The endpoint underneath.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the endpoint.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The values of a [`Receiver`], until disconnection.
#[derive(Debug)]
pub struct Iter<'a, T, R, C> {
    rx: &'a mut Receiver<T, R, C>,
    done: bool,
}

impl<T: DeserializeOwned, R: MessageReceiver, C: Codec> Iterator for Iter<'_, T, R, C> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.rx.recv() {
            Ok(v) => Some(Ok(v)),
            Err(RecvError::Disconnected) => {
                self.done = true;
                None
            }
            Err(RecvError::Io(e)) => {
                // A message that did not decode was still a whole message:
                // the next one can be read.
                self.done = DecodeError::find(&e).is_none();
                Some(Err(RecvError::Io(e)))
            }
        }
    }
}

/// Typed messages both ways over one two-way endpoint: `Out` values sent,
/// `In` values received (for example requests and replies over a Unix
/// stream or TCP). It derefs to the [`Receiver`] side for `recv`,
/// `try_recv`, `recv_timeout` and `iter`.
#[derive(Debug)]
pub struct Duplex<Out, In, E, C = Postcard> {
    rx: Receiver<In, E, C>,
    sbuf: Vec<u8>,
    _t: PhantomData<fn(Out)>,
}

impl<Out: Serialize, In: DeserializeOwned, E, C: Codec + Default> Duplex<Out, In, E, C>
where
    E: MessageSender + MessageReceiver,
{
    /// Wraps `inner` with the default codec `C`.
    pub fn new(inner: E) -> Self {
        Self::with_codec(inner, C::default())
    }
}

impl<Out: Serialize, In: DeserializeOwned, E, C: Codec> Duplex<Out, In, E, C>
where
    E: MessageSender + MessageReceiver,
{
    /// Wraps `inner` with `codec`.
    pub fn with_codec(inner: E, codec: C) -> Self {
        Duplex {
            rx: Receiver::with_codec(inner, codec),
            sbuf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Sends one value, waiting until `deadline` at the most.
    pub fn send_until(
        &mut self,
        value: Out,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<Out>> {
        if let Err(e) = encode(&self.rx.codec, &value, &mut self.sbuf) {
            return Err(SendTimeoutError::Io(e, value));
        }
        self.rx
            .inner
            .send_until(&self.sbuf, deadline)
            .map_err(|e| e.map(|()| value))
    }

    /// Sends one value, blocking until the endpoint takes it.
    pub fn send(&mut self, value: Out) -> Result<(), SendError<Out>> {
        self.send_until(value, Deadline::Never).map_err(no_deadline)
    }

    /// Unwraps the endpoint.
    pub fn into_inner(self) -> E {
        self.rx.inner
    }
}

impl<Out, In, E, C> std::ops::Deref for Duplex<Out, In, E, C> {
    type Target = Receiver<In, E, C>;
    fn deref(&self) -> &Receiver<In, E, C> {
        &self.rx
    }
}

impl<Out, In, E, C> std::ops::DerefMut for Duplex<Out, In, E, C> {
    fn deref_mut(&mut self) -> &mut Receiver<In, E, C> {
        &mut self.rx
    }
}

impl<T, R: crate::select::Selectable, C> crate::select::Selectable for Receiver<T, R, C> {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        self.inner.readiness()
    }
}

impl<Out, In, E: crate::select::Selectable, C> crate::select::Selectable for Duplex<Out, In, E, C> {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        self.inner.readiness()
    }
}
