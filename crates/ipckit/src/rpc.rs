//! Request/reply over any message mechanism: a [`Client`] whose
//! [`call`](Client::call) sends a typed request and waits for its reply,
//! and a [`Server`] that runs a handler per request.
//!
//! Each request carries a correlation id, so many threads can call through
//! one client (one connection) at once and each gets its own answer, in
//! whatever order the server replies. Nobody reads on a helper thread: the
//! first waiting caller reads for everyone and hands the other callers
//! their replies.
//!
//! | address | requests go | replies come back |
//! |---|---|---|
//! | `unix:`, `unix-seq:`, `tcp:` | over the connection | over the same connection |
//! | `mq:`, `ring:`, `fifo:`, `unix-dgram:`, `mailbox:` | to the server's queue, ring, FIFO, socket or mailbox | to the client's own inbox of the same kind, named `ADDRESS.reply.PID.N` (made exclusively, mode 0600, removed when the client is dropped) |
//! | `udp:` | to the server's socket | to the client's own socket (bound to port 0) |
//! | `sysv-mq:` | to the server's queue, as type 1 | to the same queue, as the client's own type (`PID << 32 \| N`), the reply address being `ADDRESS.reply.TYPE` (the classic System V pattern) |
//!
//! A server replies only to an inbox of its own address's kind named
//! `ADDRESS.reply.…` (a UDP server: to an IP address, a loopback one if it
//! listens on loopback; a System V server: to its own queue, with a type
//! above 1), so a client cannot make it write elsewhere.
//!
//! # Wire format
//!
//! A request is `id: u64 LE | reply-address length: u16 LE | reply
//! address (UTF-8, empty on a connection) | request`; a reply is `id: u64
//! LE | status: u8 | body`, the body being the encoded response (status 0)
//! or a UTF-8 explanation (status 1: the request did not decode, or the
//! handler panicked). Values are encoded with the [`Codec`] (postcard by
//! default).
//!
//! ```
//! use ipckit::rpc::{Client, Server};
//! use std::time::Duration;
//!
//! let addr: ipckit::Address = format!("unix:@ipckit-doc-rpc-{}", std::process::id()).parse()?;
//! let listener = ipckit::listen(&addr)?;
//! std::thread::spawn(move || Server::new(listener).serve(|(a, b): (i64, i64)| a + b));
//!
//! let client = Client::<(i64, i64), i64>::connect_timeout(&addr, Duration::from_secs(5))?;
//! assert_eq!(client.call(&(2, 3), Duration::from_secs(5))?, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::address::{resolve, Address};
use crate::endpoint::{self, Connection, Listener};
use crate::error::{MessageTooLarge, RecvTimeoutError, SendTimeoutError};
use crate::message::{Deadline, MessageReceiver, MessageSender};
use crate::typed::{self, Codec, Postcard};

const REQUEST_HEADER: usize = 10;
const REPLY_HEADER: usize = 9;
const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

/// Why a [`Client::call`] did not return a response.
#[derive(Debug)]
pub enum CallError {
    /// No reply came before the timeout. A reply that comes later is
    /// dropped.
    Timeout,
    /// The connection (or the server's queue) is gone; this client will
    /// not get more replies.
    Disconnected,
    /// The server answered with an error: the request did not decode as
    /// its request type, its handler panicked, or it refused the request
    /// ([`Server::serve_fallible`]) with this reason.
    Remote(String),
    /// Sending, receiving or decoding failed (a reply that does not decode
    /// as the response type carries a [`typed::DecodeError`]).
    Io(io::Error),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => write!(f, "no reply before the timeout"),
            CallError::Disconnected => write!(f, "the server is gone (disconnected)"),
            CallError::Remote(why) => write!(f, "the server answered with an error: {why}"),
            CallError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CallError> for io::Error {
    fn from(e: CallError) -> io::Error {
        match e {
            CallError::Timeout => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            CallError::Disconnected => io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()),
            CallError::Remote(_) => io::Error::other(e.to_string()),
            CallError::Io(e) => e,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where replies come from: the connection's receiving half, or the
/// client's own inbox (a FIFO inbox is opened when the first reply's
/// writer comes, and again if the server closes its end).
enum Inbox {
    Ready(Box<dyn MessageReceiver + Send>),
    Fifo(Box<Listener>, Option<Box<dyn MessageReceiver + Send>>),
}

struct State {
    /// `None` while a caller is reading.
    inbox: Option<Inbox>,
    /// The calls waiting, and the replies read for them.
    waiting: HashMap<u64, Option<Vec<u8>>>,
    disconnected: bool,
}

/// The calling side of request/reply (see the module docs); `Sync`, so
/// threads can share one client and call at once.
pub struct Client<Req, Resp, C = Postcard> {
    tx: Mutex<Box<dyn MessageSender + Send>>,
    state: Mutex<State>,
    replied: Condvar,
    next_id: AtomicU64,
    reply_to: String,
    max_reply: usize,
    addr: Address,
    codec: C,
    _types: PhantomData<fn(&Req) -> Resp>,
}

impl<Req, Resp, C> fmt::Debug for Client<Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc::Client({})", self.addr)
    }
}

/// Numbers the inboxes of one process's clients.
static INBOXES: AtomicU64 = AtomicU64::new(0);

/// The client's own inbox for replies on a one-way mechanism.
fn make_inbox(addr: &Address) -> io::Result<(String, Listener)> {
    match addr {
        Address::Mq(_)
        | Address::Ring(_)
        | Address::Fifo(_)
        | Address::UnixDgram(_)
        | Address::Mailbox(_) => {
            let reply = format!(
                "{addr}.reply.{}.{}",
                std::process::id(),
                INBOXES.fetch_add(1, Ordering::Relaxed)
            );
            let listener = endpoint::listen_new(&reply.parse()?)?;
            Ok((reply, listener))
        }
        Address::Udp(hp) => {
            // The local address that reaches the server, port chosen by the system.
            let probe = std::net::UdpSocket::bind(match resolve(hp)? {
                SocketAddr::V4(_) => "0.0.0.0:0",
                SocketAddr::V6(_) => "[::]:0",
            })?;
            probe.connect(resolve(hp)?)?;
            let local = SocketAddr::new(probe.local_addr()?.ip(), 0);
            let listener = endpoint::listen(&Address::Udp(local.to_string()))?;
            Ok((listener.local_address()?.to_string(), listener))
        }
        Address::SysvMq(key) => {
            let n = INBOXES.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
            let mtype = (i64::from(std::process::id()) << 32) | n as i64;
            let listener = endpoint::sysv_inbox(*key, mtype)?;
            Ok((format!("{addr}.reply.{mtype}"), listener))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{addr}: request/reply has no reply path over this mechanism yet; use \
                 unix:, unix-seq:, tcp:, udp:, unix-dgram:, mq:, ring:, fifo:, sysv-mq: or \
                 mailbox:"
            ),
        )),
    }
}

/// The client's type in a System V reply address `to` of a server at
/// `own`: `Some` only for `OWN.reply.TYPE` with a type above 1 (type 1
/// carries requests).
fn sysv_reply_type(own: &Address, to: &str) -> Option<i64> {
    let Address::SysvMq(_) = own else {
        return None;
    };
    let t: i64 = to.strip_prefix(&format!("{own}.reply."))?.parse().ok()?;
    // Canonical digits only ("+5" or "05" would parse too).
    (t > endpoint::SYSV_TYPE && format!("{own}.reply.{t}") == to).then_some(t)
}

/// Opens the path to a client's inbox `to` (already allowed by
/// [`reply_allowed`]) for a server at `own` (through its listener's
/// `broker`, for a mailbox); may wait up to `timeout` (a FIFO, for its
/// reader).
pub(crate) fn open_reply(
    own: &Address,
    broker: Option<&std::path::Path>,
    to: &str,
    timeout: Duration,
) -> io::Result<Connection> {
    if let (Address::SysvMq(key), Some(t)) = (own, sysv_reply_type(own, to)) {
        return endpoint::sysv_sender(*key, t);
    }
    let mut opts = endpoint::Options::new().timeout(Some(timeout));
    if let Some(b) = broker {
        opts = opts.broker(b);
    }
    endpoint::connect_with(&to.parse()?, &opts)
}

impl<Req: Serialize, Resp: DeserializeOwned> Client<Req, Resp, Postcard> {
    /// Connects to a [`Server`] at `addr`.
    pub fn connect(addr: &Address) -> io::Result<Self> {
        Self::connect_with(addr, None, Postcard)
    }

    /// Connects to a [`Server`] at `addr`, waiting at most `timeout` for
    /// it to be there (a server still starting).
    pub fn connect_timeout(addr: &Address, timeout: Duration) -> io::Result<Self> {
        Self::connect_with(addr, Some(timeout), Postcard)
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, C: Codec> Client<Req, Resp, C> {
    /// Connects with another codec (the server must use the same).
    pub fn connect_with(addr: &Address, timeout: Option<Duration>, codec: C) -> io::Result<Self> {
        let (tx, from, reply_to) = open_client(addr, timeout)?;
        let inbox = match from {
            ReplyFrom::Ready(rx) => Inbox::Ready(Box::new(rx)),
            ReplyFrom::Fifo(l) => Inbox::Fifo(Box::new(l), None),
        };
        Ok(Client {
            tx: Mutex::new(Box::new(tx)),
            state: Mutex::new(State {
                inbox: Some(inbox),
                waiting: HashMap::new(),
                disconnected: false,
            }),
            replied: Condvar::new(),
            next_id: AtomicU64::new(1),
            reply_to,
            max_reply: crate::frame::DEFAULT_MAX_MESSAGE_SIZE,
            addr: addr.clone(),
            codec,
            _types: PhantomData,
        })
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        &self.addr
    }

    /// Where replies come back: the client's inbox address, or `None` on a
    /// connection.
    pub fn reply_address(&self) -> Option<&str> {
        Some(self.reply_to.as_str()).filter(|r| !r.is_empty())
    }

    /// Sends `req` and waits at most `timeout` for its reply.
    pub fn call(&self, req: &Req, timeout: Duration) -> Result<Resp, CallError> {
        let deadline = Deadline::after(timeout);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = request_message(&self.codec, id, &self.reply_to, req)?;

        lock(&self.state).waiting.insert(id, None);
        let result = self.send_and_wait(id, &msg, deadline);
        let mut st = lock(&self.state);
        st.waiting.remove(&id);
        drop(st);
        finish_reply(&self.codec, &result?)
    }

    /// Sends the request, then reads replies (or waits for another caller
    /// to read them) until this call's comes: the status byte and body.
    fn send_and_wait(&self, id: u64, msg: &[u8], deadline: Deadline) -> Result<Vec<u8>, CallError> {
        match lock(&self.tx).send_until(msg, deadline) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(())) => return Err(CallError::Timeout),
            Err(SendTimeoutError::Disconnected(())) => return Err(CallError::Disconnected),
            Err(SendTimeoutError::Io(e, ())) => return Err(CallError::Io(e)),
        }
        let mut st = lock(&self.state);
        loop {
            if let Some(reply) = st.waiting.get_mut(&id).and_then(Option::take) {
                return Ok(reply);
            }
            if st.disconnected {
                return Err(CallError::Disconnected);
            }
            if let Some(mut inbox) = st.inbox.take() {
                drop(st);
                let got = self.read_reply(&mut inbox, deadline);
                st = lock(&self.state);
                st.inbox = Some(inbox);
                // Whoever is waiting now reads next, or finds its reply.
                self.replied.notify_all();
                match got {
                    Ok(Some((rid, reply))) => {
                        if let Some(slot) = st.waiting.get_mut(&rid) {
                            *slot = Some(reply);
                        }
                        // Otherwise the reply of a call that gave up: dropped.
                    }
                    Ok(None) => {}
                    Err(CallError::Disconnected) => {
                        st.disconnected = true;
                        return Err(CallError::Disconnected);
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            st = match deadline.instant() {
                None => self.replied.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let left = t.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(CallError::Timeout);
                    }
                    self.replied
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// One message from the inbox: `Some((id, status and body))`, or
    /// `None` for a message too short to be a reply (dropped).
    fn read_reply(
        &self,
        inbox: &mut Inbox,
        deadline: Deadline,
    ) -> Result<Option<(u64, Vec<u8>)>, CallError> {
        let rx = match inbox {
            Inbox::Ready(rx) => rx,
            Inbox::Fifo(listener, rx) => match rx {
                Some(rx) => rx,
                None => {
                    let timeout = deadline
                        .instant()
                        .map(|t| t.saturating_duration_since(std::time::Instant::now()));
                    let conn = match timeout {
                        None => listener.accept(),
                        Some(t) => listener.accept_timeout(t),
                    };
                    match conn {
                        Ok(c) => rx.insert(Box::new(c)),
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return Err(CallError::Timeout)
                        }
                        Err(e) => return Err(CallError::Io(e)),
                    }
                }
            },
        };
        rx.set_max_message_size(REPLY_HEADER + self.max_reply);
        let mut buf = Vec::new();
        match rx.recv_until(&mut buf, deadline) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => return Err(CallError::Timeout),
            Err(RecvTimeoutError::Disconnected) => {
                if let Inbox::Fifo(_, rx) = inbox {
                    // The server closed its writing end: the next reply
                    // opens it again.
                    *rx = None;
                    return Ok(None);
                }
                return Err(CallError::Disconnected);
            }
            Err(RecvTimeoutError::Io(e)) => return Err(CallError::Io(e)),
        }
        Ok(split_reply(buf))
    }
}

/// Where a client's replies come from.
pub(crate) enum ReplyFrom {
    /// The receiving half of the connection, or the client's inbox.
    Ready(Connection),
    /// A FIFO inbox: its reading end opens when the server's writer does.
    Fifo(Listener),
}

/// Connects a client to `addr`: the sending end, where replies come
/// from, and the reply address to put in requests (empty on a
/// connection).
pub(crate) fn open_client(
    addr: &Address,
    timeout: Option<Duration>,
) -> io::Result<(Connection, ReplyFrom, String)> {
    let conn = endpoint::connect_timeout(addr, timeout)?;
    if conn.address().is_connection() {
        let (tx, rx) = conn.split()?;
        return Ok((tx, ReplyFrom::Ready(rx), String::new()));
    }
    let (reply_to, listener) = make_inbox(addr)?;
    let from = if listener.has_connections() {
        ReplyFrom::Fifo(listener)
    } else {
        ReplyFrom::Ready(listener.accept()?)
    };
    Ok((conn, from, reply_to))
}

/// A request on the wire (see the module docs).
pub(crate) fn request_message<Req: Serialize, C: Codec>(
    codec: &C,
    id: u64,
    reply_to: &str,
    req: &Req,
) -> Result<Vec<u8>, CallError> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&id.to_le_bytes());
    msg.extend_from_slice(&(reply_to.len() as u16).to_le_bytes());
    msg.extend_from_slice(reply_to.as_bytes());
    let mut body = Vec::new();
    typed::encode(codec, req, &mut body).map_err(CallError::Io)?;
    msg.extend_from_slice(&body);
    Ok(msg)
}

/// A reply's id, and its status byte and body; `None` for a message too
/// short to be a reply.
pub(crate) fn split_reply(mut buf: Vec<u8>) -> Option<(u64, Vec<u8>)> {
    if buf.len() < REPLY_HEADER {
        return None;
    }
    let id = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    buf.drain(..8);
    Some((id, buf))
}

/// The response a reply's status byte and body carry.
pub(crate) fn finish_reply<Resp: DeserializeOwned, C: Codec>(
    codec: &C,
    reply: &[u8],
) -> Result<Resp, CallError> {
    match reply[0] {
        STATUS_OK => typed::decode(codec, &reply[1..]).map_err(CallError::Io),
        _ => Err(CallError::Remote(
            String::from_utf8_lossy(&reply[1..]).into_owned(),
        )),
    }
}

/// A reply on the wire: the encoded response, or why there is none.
pub(crate) fn reply_message(id: u64, outcome: Result<Vec<u8>, String>) -> Vec<u8> {
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&id.to_le_bytes());
    match outcome {
        Ok(body) => {
            reply.push(STATUS_OK);
            reply.extend_from_slice(&body);
        }
        Err(why) => {
            reply.push(STATUS_ERROR);
            reply.extend_from_slice(why.as_bytes());
        }
    }
    reply
}

/// A request's id, where its reply goes (`None`: on the connection) and
/// its body; `None` for a message that is not a request, or whose reply
/// address is not allowed.
pub(crate) fn parse_request_parts<'m>(
    msg: &'m [u8],
    own: &Address,
) -> Option<(u64, Option<&'m str>, &'m [u8])> {
    if msg.len() < REQUEST_HEADER {
        return None;
    }
    let id = u64::from_le_bytes(msg[..8].try_into().ok()?);
    let len = u16::from_le_bytes(msg[8..10].try_into().ok()?) as usize;
    let to = msg.get(REQUEST_HEADER..REQUEST_HEADER + len)?;
    let body = &msg[REQUEST_HEADER + len..];
    if to.is_empty() {
        return Some((id, None, body));
    }
    let to = std::str::from_utf8(to).ok()?;
    reply_allowed(own, to).then_some((id, Some(to), body))
}

/// The largest request message for requests of up to `max_request`
/// bytes: with its header and the longest reply address.
pub(crate) fn max_request_message(max_request: usize) -> usize {
    REQUEST_HEADER + u16::MAX as usize + max_request
}

/// A response's encoding, or why there is none (for the reply).
pub(crate) fn encode_response<Resp: Serialize, C: Codec>(
    codec: &C,
    resp: &Resp,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    typed::encode(codec, resp, &mut body)
        .map(|()| body)
        .map_err(|e| e.to_string())
}

/// What a panic carried, for the client.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("the handler panicked: {what}")
}

/// A request as the server reads it.
struct Job {
    id: u64,
    body: Vec<u8>,
    reply: ReplyPath,
}

#[derive(Clone)]
enum ReplyPath {
    /// The sending half of the request's connection.
    Conn(Arc<Mutex<Box<dyn MessageSender + Send>>>),
    /// A client's inbox address.
    To(String),
}

/// The serving side of request/reply: reads requests from every client of
/// a [`Listener`] and answers each with the handler's response.
///
/// Each connection has a thread that reads its requests; the handler runs
/// on a pool of [`workers`](Server::workers) threads (by default one per
/// CPU), so a slow request does not hold up the others. With
/// `workers(0)`, each connection's thread runs the handler itself, one
/// request at a time, in order.
pub struct Server<Req, Resp, C = Postcard> {
    listener: Listener,
    workers: usize,
    max_request: usize,
    reply_timeout: Duration,
    codec: C,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, C> fmt::Debug for Server<Req, Resp, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc::Server({})", self.listener.address())
    }
}

impl<Req, Resp> Server<Req, Resp, Postcard>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// A server on `listener` (from [`crate::listen`]).
    pub fn new(listener: Listener) -> Self {
        Self::with_codec(listener, Postcard)
    }
}

struct Shared<C, F> {
    codec: C,
    handler: F,
    own: Address,
    /// The listener's broker, for replies to mailboxes.
    broker: Option<std::path::PathBuf>,
    reply_timeout: Duration,
    inboxes: Mutex<HashMap<String, Arc<Mutex<Connection>>>>,
    stop: Arc<AtomicBool>,
}

/// The most client inboxes a server keeps open (connections to them are
/// made again when needed).
pub(crate) const MAX_INBOXES: usize = 256;

impl<Req, Resp, C> Server<Req, Resp, C>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    C: Codec + Send + Sync + 'static,
{
    /// A server with another codec (the clients must use the same).
    pub fn with_codec(listener: Listener, codec: C) -> Self {
        Server {
            listener,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_request: crate::frame::DEFAULT_MAX_MESSAGE_SIZE,
            reply_timeout: Duration::from_secs(5),
            codec,
            _types: PhantomData,
        }
    }

    /// How many threads run the handler (0: each connection's reading
    /// thread runs it).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The largest request accepted (default 16 MiB); a larger one is
    /// refused before anything is allocated.
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

    /// Serves requests on this thread until accepting a connection fails
    /// (for a connectionless mechanism: until its one receiving end
    /// fails).
    pub fn serve<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Req) -> Resp + Send + Sync + 'static,
    {
        self.serve_fallible(move |req| Ok(handler(req)))
    }

    /// [`serve`](Self::serve) with a handler that may refuse a request:
    /// its `Err(reason)` reaches the caller as [`CallError::Remote`] with
    /// that reason (as a request that did not decode does).
    ///
    /// ```
    /// use ipckit::rpc::{CallError, Client, Server};
    /// use std::time::Duration;
    ///
    /// let addr: ipckit::Address = format!("unix:@ipckit-doc-rpc-refuse-{}", std::process::id()).parse()?;
    /// let listener = ipckit::listen(&addr)?;
    /// std::thread::spawn(move || {
    ///     Server::new(listener).serve_fallible(|(a, b): (i64, i64)| {
    ///         a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by 0"))
    ///     })
    /// });
    /// let client = Client::<(i64, i64), i64>::connect_timeout(&addr, Duration::from_secs(5))?;
    /// assert_eq!(client.call(&(6, 3), Duration::from_secs(5))?, 2);
    /// match client.call(&(1, 0), Duration::from_secs(5)) {
    ///     Err(CallError::Remote(why)) => assert_eq!(why, "cannot divide 1 by 0"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serve_fallible<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Req) -> Result<Resp, String> + Send + Sync + 'static,
    {
        self.run(handler, Arc::new(AtomicBool::new(false)))
    }

    /// Serves requests on threads of its own until
    /// [`ServerHandle::stop`]: then the listener is dropped, removing what
    /// it made (a queue, a ring, a socket file).
    pub fn spawn<F>(self, handler: F) -> io::Result<ServerHandle>
    where
        F: Fn(Req) -> Resp + Send + Sync + 'static,
    {
        self.spawn_fallible(move |req| Ok(handler(req)))
    }

    /// [`spawn`](Self::spawn) with a handler that may refuse a request
    /// (see [`serve_fallible`](Self::serve_fallible)).
    pub fn spawn_fallible<F>(self, handler: F) -> io::Result<ServerHandle>
    where
        F: Fn(Req) -> Result<Resp, String> + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let main = std::thread::Builder::new()
            .name("ipckit-rpc-server".into())
            .spawn(move || self.run(handler, flag))?;
        Ok(ServerHandle {
            stop,
            main: Some(main),
        })
    }

    fn run<F>(self, handler: F, stop: Arc<AtomicBool>) -> io::Result<()>
    where
        F: Fn(Req) -> Result<Resp, String> + Send + Sync + 'static,
    {
        let own = self.listener.local_address()?;
        let shared = Arc::new(Shared {
            codec: self.codec,
            handler,
            own: own.clone(),
            broker: self.listener.broker().map(Into::into),
            reply_timeout: self.reply_timeout,
            inboxes: Mutex::new(HashMap::new()),
            stop,
        });
        let mut threads = Vec::new();
        let jobs = if self.workers == 0 {
            None
        } else {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..self.workers {
                let (rx, shared) = (rx.clone(), shared.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name("ipckit-rpc-worker".into())
                        .spawn(move || loop {
                            let job = match lock(&rx).recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            };
                            shared.answer(job);
                        })?,
                );
            }
            Some(tx)
        };
        let max = max_request_message(self.max_request);
        let result = if !self.listener.has_connections() {
            let mut conn = self.listener.accept()?;
            conn.set_max_message_size(max);
            read_requests(&mut conn, None, &shared, jobs.as_ref())
        } else {
            accept_loop(
                &self.listener,
                &own,
                &shared,
                jobs.as_ref(),
                max,
                &mut threads,
            )
        };
        // Readers end within a tick of the stop; then the workers, once
        // the last sender of jobs is gone.
        drop(jobs);
        for t in threads {
            let _ = t.join();
        }
        result
    }
}

/// Accepts connections until the stop, a reading thread each (a FIFO's
/// writers share one reader, on this thread).
fn accept_loop<Req, Resp, C, F>(
    listener: &Listener,
    own: &Address,
    shared: &Arc<Shared<C, F>>,
    jobs: Option<&mpsc::Sender<Job>>,
    max: usize,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> io::Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    C: Codec + Send + Sync + 'static,
    F: Fn(Req) -> Result<Resp, String> + Send + Sync + 'static,
{
    loop {
        let conn = match listener.accept_timeout(TICK) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if matches!(own, Address::Fifo(_)) {
            // One reader at a time: the writers that come share it.
            let mut conn = conn;
            conn.set_max_message_size(max);
            read_requests(&mut conn, None, shared, jobs)?;
            continue;
        }
        let (shared, jobs) = (shared.clone(), jobs.cloned());
        threads.retain(|t| !t.is_finished());
        threads.push(
            std::thread::Builder::new()
                .name("ipckit-rpc-conn".into())
                .spawn(move || {
                    let (reply, mut rx) = if conn.can_send() {
                        match conn.split() {
                            Ok((tx, rx)) => (
                                Some(Arc::new(Mutex::new(
                                    Box::new(tx) as Box<dyn MessageSender + Send>
                                ))),
                                rx,
                            ),
                            Err(_) => return,
                        }
                    } else {
                        (None, conn)
                    };
                    rx.set_max_message_size(max);
                    let _ = read_requests(&mut rx, reply, &shared, jobs.as_ref());
                })?,
        );
    }
}

/// How often idle server threads look whether they should stop.
const TICK: Duration = Duration::from_millis(200);

/// A server running on its own threads, from [`Server::spawn`].
#[derive(Debug)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    main: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// Stops the server: requests being handled are answered, the
    /// threads end (within 200 ms of being idle) and the listener is
    /// dropped. Returns why the server had stopped by itself, if it had.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.main.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

/// Reads requests from one connection (or the one receiving end) until it
/// ends, answering each on this thread or handing it to the workers.
fn read_requests<Req, Resp, C, F>(
    rx: &mut Connection,
    conn_reply: Option<Arc<Mutex<Box<dyn MessageSender + Send>>>>,
    shared: &Shared<C, F>,
    jobs: Option<&mpsc::Sender<Job>>,
) -> io::Result<()>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    C: Codec,
    F: Fn(Req) -> Result<Resp, String>,
{
    let mut buf = Vec::new();
    loop {
        match rx.recv_until(&mut buf, Deadline::after(TICK)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
            // A datagram over the limit was refused and skipped: go on (a
            // stream cannot find the next message after one: it ends).
            Err(RecvTimeoutError::Io(e))
                if conn_reply.is_none() && MessageTooLarge::find(&e).is_some() =>
            {
                continue
            }
            Err(RecvTimeoutError::Io(e)) => return Err(e),
        }
        let Some(job) = parse_request(&buf, conn_reply.as_ref(), &shared.own) else {
            continue;
        };
        match jobs {
            Some(jobs) => {
                if jobs.send(job).is_err() {
                    return Ok(());
                }
            }
            None => shared.answer(job),
        }
    }
}

/// The job for one request (see [`parse_request_parts`]).
fn parse_request(
    msg: &[u8],
    conn_reply: Option<&Arc<Mutex<Box<dyn MessageSender + Send>>>>,
    own: &Address,
) -> Option<Job> {
    let (id, to, body) = parse_request_parts(msg, own)?;
    let reply = match to {
        None => ReplyPath::Conn(conn_reply?.clone()),
        Some(to) => ReplyPath::To(to.to_owned()),
    };
    Some(Job {
        id,
        body: body.to_vec(),
        reply,
    })
}

/// Whether a server at `own` may send replies to `to`: an inbox of its
/// own kind named after it, or for UDP an IP address (loopback if the
/// server is on loopback).
fn reply_allowed(own: &Address, to: &str) -> bool {
    match own {
        Address::Udp(hp) => {
            let Some(rest) = to.strip_prefix("udp:") else {
                return false;
            };
            let Ok(sa) = rest.parse::<SocketAddr>() else {
                return false;
            };
            let own_ip: Option<IpAddr> = hp.parse::<SocketAddr>().ok().map(|s| s.ip());
            let own_loopback = own_ip.is_some_and(|ip| ip.is_loopback());
            sa.port() != 0 && (sa.ip().is_loopback() || !own_loopback)
        }
        Address::Mq(_)
        | Address::Ring(_)
        | Address::Fifo(_)
        | Address::UnixDgram(_)
        | Address::Mailbox(_) => {
            let prefix = format!("{own}.reply.");
            to.strip_prefix(&prefix).is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            })
        }
        Address::SysvMq(_) => sysv_reply_type(own, to).is_some(),
        _ => false,
    }
}

impl<C: Codec, F> Shared<C, F> {
    /// Runs the handler on one request and sends the reply (dropped if the
    /// client does not take it within the reply timeout).
    fn answer<Req, Resp>(&self, job: Job)
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        F: Fn(Req) -> Result<Resp, String>,
    {
        let outcome = typed::decode::<Req, C>(&self.codec, &job.body)
            .map_err(|e| e.to_string())
            .and_then(|req| {
                catch_unwind(AssertUnwindSafe(|| (self.handler)(req)))
                    .map_err(|p| panic_message(&*p))
                    .and_then(|r| r)
            })
            .and_then(|resp| encode_response(&self.codec, &resp));
        let reply = reply_message(job.id, outcome);
        let deadline = Deadline::after(self.reply_timeout);
        match job.reply {
            ReplyPath::Conn(tx) => {
                let _ = lock(&tx).send_until(&reply, deadline);
            }
            ReplyPath::To(to) => {
                let known = lock(&self.inboxes).get(&to).cloned();
                let conn = match known {
                    Some(c) => c,
                    None => {
                        // Connecting may wait (a FIFO, for its reader): not
                        // under the lock.
                        let broker = self.broker.as_deref();
                        let Ok(c) = open_reply(&self.own, broker, &to, self.reply_timeout) else {
                            return;
                        };
                        let c = Arc::new(Mutex::new(c));
                        let mut inboxes = lock(&self.inboxes);
                        if inboxes.len() >= MAX_INBOXES {
                            inboxes.clear();
                        }
                        inboxes.insert(to.clone(), c.clone());
                        c
                    }
                };
                let sent = lock(&conn).send_until(&reply, deadline);
                if sent.is_err() {
                    lock(&self.inboxes).remove(&to);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_reply_addresses() {
        let own: Address = "sysv-mq:0x1234".parse().unwrap();
        let ok = format!("{own}.reply.{}", 7i64 << 32);
        assert_eq!(sysv_reply_type(&own, &ok), Some(7 << 32));
        assert!(reply_allowed(&own, &ok));
        for bad in ["1", "0", "-5", "05", "+9", "", "9x", "99999999999999999999"] {
            let to = format!("{own}.reply.{bad}");
            assert_eq!(sysv_reply_type(&own, &to), None, "{to}");
            assert!(!reply_allowed(&own, &to), "{to}");
        }
        assert!(!reply_allowed(&own, "sysv-mq:0x1235.reply.9"));
        assert!(!reply_allowed(&own, "mq:/x.reply.9"));
    }
}
