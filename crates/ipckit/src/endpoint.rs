//! Any mechanism from an address: [`connect`] to send (and receive, where
//! the mechanism goes both ways) and [`listen`] to receive, so that
//! changing the mechanism means changing a string.
//!
//! | address | [`connect`] gives | [`listen`] gives, per [`Listener::accept`] |
//! |---|---|---|
//! | `unix:`, `unix-seq:`, `tcp:` | a two-way connection | each client's two-way connection, one after another |
//! | `udp:` | a two-way socket (bound to any port, connected) | the bound socket, once |
//! | `unix-dgram:` | a sending socket (unbound: no replies) | the bound socket, once |
//! | `fifo:` | the writing end (waits for a reader) | the reading end for each writer in turn (the FIFO is made if missing) |
//! | `mq:`, `sysv-mq:`, `ring:` | the sending side | the receiving side, once (made if missing) |
//! | `mailbox:` | a sender to the mailbox, through the broker ([`Options::broker`]) | a receiver of the mailbox (made if missing) or of a pattern (`orders.*`), once |
//! | `pid:` | a sender to that process's inbox (`pid:self`: this process's) | this process's inbox (`pid:self` only), once |
//!
//! What `listen` made (a socket file, a FIFO, a queue, a ring, a mailbox)
//! is removed when the listener and what it gave are dropped, unless
//! [`Options::keep`] says otherwise.
//!
//! Using a one-way end the wrong way is an `InvalidInput` error that says
//! which way it goes.
//!
//! A `sysv-mq:` address is the conversation of message type 1 on its
//! queue: `connect` sends type 1 and `listen` receives type 1 only, so
//! other types on the same queue stay for other conversations (the
//! replies of [`rpc`](crate::rpc) go there). For other types use
//! [`crate::sysv::MessageQueue`] itself.
//!
//! ```
//! use ipckit::{connect, listen, Address, MessageReceiver, MessageSender, MessageSenderExt};
//! use std::time::Duration;
//!
//! let addr: Address = format!("unix:@ipckit-doc-endpoint-{}", std::process::id()).parse()?;
//! let server = listen(&addr)?;
//! let mut client = connect(&addr)?;
//! client.send(b"hi")?;
//! let mut conn = server.accept_timeout(Duration::from_secs(5))?;
//! assert_eq!(conn.recv()?, b"hi");
//! conn.send(b"hello")?;
//! assert_eq!(client.recv()?, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

use crate::address::{resolve, Address};
use crate::error::{RecvTimeoutError, SendTimeoutError};
use crate::fifo::Fifo;
use crate::frame::Framing;
use crate::message::{Deadline, MessageReceiver, MessageSender};
use crate::named::CreatedPath;
use crate::select::{Readiness, Selectable};
use crate::socket::inet::{TcpListener, TcpStream, UdpSocket};
use crate::socket::unix::{
    PeerCredentials, SeqpacketListener, SeqpacketStream, UnixDatagram, UnixListener, UnixStream,
};
use crate::wait::WaitStrategy;

type BoxSender = Box<dyn MessageSender + Send>;
type BoxReceiver = Box<dyn RecvEnd>;

/// A receiving end, for boxing.
trait RecvEnd: MessageReceiver + Selectable + Send {}
impl<T: MessageReceiver + Selectable + Send> RecvEnd for T {}

/// Both message traits, for boxing, and a split into one end per way.
trait TwoWay: MessageSender + MessageReceiver + Selectable + Send {
    fn split(self: Box<Self>) -> io::Result<(BoxSender, BoxReceiver)>;
    /// Who is at the other end, where the kernel tells (connected Unix
    /// sockets).
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        None
    }
}

macro_rules! two_way {
    ($($ty:ty $(=> $creds:ident)?),*) => {$(
        impl TwoWay for $ty {
            fn split(self: Box<Self>) -> io::Result<(BoxSender, BoxReceiver)> {
                let (tx, rx) = (*self).split()?;
                Ok((Box::new(tx), Box::new(rx)))
            }
            $(
                fn $creds(&self) -> Option<PeerCredentials> {
                    <$ty>::peer_credentials(self).ok()
                }
            )?
        }
    )*};
}

two_way!(
    UnixStream => peer_credentials,
    SeqpacketStream => peer_credentials,
    UnixDatagram,
    TcpStream,
    UdpSocket
);

/// How a call gets a named object: `connect` opens (or, told to, makes),
/// `listen` makes or opens, a private inbox must be new.
#[derive(Clone, Copy)]
enum Make {
    Open,
    Create,
    CreateOrOpen,
}

/// The builders of the named objects an address can name.
trait Named: Sized {
    type Object;
    fn create(self) -> io::Result<Self::Object>;
    fn open(self) -> io::Result<Self::Object>;
    fn create_or_open(self) -> io::Result<Self::Object>;
    fn make(self, how: Make) -> io::Result<Self::Object> {
        match how {
            Make::Open => self.open(),
            Make::Create => self.create(),
            Make::CreateOrOpen => self.create_or_open(),
        }
    }
}

macro_rules! named {
    ($($builder:ty => $object:ty),*) => {$(
        impl Named for $builder {
            type Object = $object;
            fn create(self) -> io::Result<$object> {
                <$builder>::create(self)
            }
            fn open(self) -> io::Result<$object> {
                <$builder>::open(self)
            }
            fn create_or_open(self) -> io::Result<$object> {
                <$builder>::create_or_open(self)
            }
        }
    )*};
}

named!(
    crate::mq::QueueBuilder => crate::mq::PosixQueue,
    crate::sysv::QueueBuilder => crate::sysv::MessageQueue,
    crate::ring::RingBuilder => crate::ring::Ring,
    crate::fifo::FifoBuilder => Fifo
);

enum Way {
    Both(Box<dyn TwoWay>),
    Send(BoxSender),
    Recv(BoxReceiver),
}

/// An endpoint of any mechanism, from [`connect`] or [`Listener::accept`]:
/// it implements both message traits; a one-way end refuses the other way
/// with an error that says so ([`can_send`](Connection::can_send),
/// [`can_receive`](Connection::can_receive) tell beforehand; a sending-only
/// end's `max_message_size` is 0, and setting it or the wait strategy does
/// nothing).
pub struct Connection {
    way: Way,
    addr: Address,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let way = match self.way {
            Way::Both(_) => "two-way",
            Way::Send(_) => "sending",
            Way::Recv(_) => "receiving",
        };
        write!(f, "Connection({way}, {})", self.addr)
    }
}

impl Connection {
    /// The address it was made for.
    pub fn address(&self) -> &Address {
        &self.addr
    }

    /// Who is at the other end of a connected Unix socket (`unix:`,
    /// `unix-seq:`, either side): the process that connected, or the one
    /// that accepted, as the kernel recorded it then (`SO_PEERCRED`, see
    /// `unix(7)`); `None` for every other mechanism, whose messages do not
    /// come from one known process. Nothing the peer writes goes into it.
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        match &self.way {
            Way::Both(e) => e.peer_credentials(),
            _ => None,
        }
    }

    /// Whether it can send.
    pub fn can_send(&self) -> bool {
        !matches!(self.way, Way::Recv(_))
    }

    /// Whether it can receive.
    pub fn can_receive(&self) -> bool {
        !matches!(self.way, Way::Send(_))
    }

    /// Splits a two-way connection into a sending and a receiving one, so
    /// that one thread can wait for messages while another sends (both
    /// are halves of one socket: it closes when both are dropped; pending
    /// bytes of a non-blocking send go with the sending half, messages
    /// read ahead with the receiving one). A one-way end is an
    /// `InvalidInput` error.
    ///
    /// ```
    /// use ipckit::prelude::*;
    /// use std::time::Duration;
    ///
    /// let addr: ipckit::Address = format!("unix-seq:@ipckit-doc-split-{}", std::process::id()).parse()?;
    /// let server = ipckit::listen(&addr)?;
    /// let (mut tx, mut rx) = ipckit::connect(&addr)?.split()?;
    /// let waiting = std::thread::spawn(move || rx.recv());
    /// let mut conn = server.accept_timeout(Duration::from_secs(5))?;
    /// tx.send(b"ping")?;
    /// assert_eq!(conn.recv()?, b"ping");
    /// conn.send(b"pong")?;
    /// assert_eq!(waiting.join().unwrap()?, b"pong");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn split(self) -> io::Result<(Connection, Connection)> {
        match self.way {
            Way::Both(e) => {
                let (tx, rx) = e.split()?;
                Ok((
                    Connection {
                        way: Way::Send(tx),
                        addr: self.addr.clone(),
                    },
                    Connection {
                        way: Way::Recv(rx),
                        addr: self.addr,
                    },
                ))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} carries messages one way: only a two-way connection splits",
                    self.addr
                ),
            )),
        }
    }

    fn wrong_way(&self, doing: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "this end of {} only {}, so it cannot {doing} (a mechanism that goes one way: connect \
                 to send, listen to receive; a split connection: use the other half)",
                self.addr,
                if self.can_send() { "sends" } else { "receives" }
            ),
        )
    }
}

impl MessageSender for Connection {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        match &mut self.way {
            Way::Both(e) => e.send_until(msg, deadline),
            Way::Send(e) => e.send_until(msg, deadline),
            Way::Recv(_) => Err(SendTimeoutError::Io(self.wrong_way("send"), ())),
        }
    }
}

impl MessageReceiver for Connection {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        match &mut self.way {
            Way::Both(e) => e.recv_until(buf, deadline),
            Way::Recv(e) => e.recv_until(buf, deadline),
            Way::Send(_) => Err(RecvTimeoutError::Io(self.wrong_way("receive"))),
        }
    }
    fn max_message_size(&self) -> usize {
        match &self.way {
            Way::Both(e) => e.max_message_size(),
            Way::Recv(e) => e.max_message_size(),
            Way::Send(_) => 0,
        }
    }
    fn set_max_message_size(&mut self, max: usize) {
        match &mut self.way {
            Way::Both(e) => e.set_max_message_size(max),
            Way::Recv(e) => e.set_max_message_size(max),
            Way::Send(_) => {}
        }
    }
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        match &mut self.way {
            Way::Both(e) => e.set_wait_strategy(strategy),
            Way::Recv(e) => e.set_wait_strategy(strategy),
            Way::Send(_) => {}
        }
    }
}

/// Ready when a message waits (see [`crate::select`]); a sending-only end
/// is an `InvalidInput` error.
impl Selectable for Connection {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        match &mut self.way {
            Way::Both(e) => e.readiness(),
            Way::Recv(e) => e.readiness(),
            Way::Send(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "this end of {} only sends: there is nothing to select on",
                    self.addr
                ),
            )),
        }
    }
}

fn not_a_channel(addr: &Address) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{addr} is an object, not a message channel: it cannot be connected to or listened on"
        ),
    )
}

/// How [`connect_with`] and [`listen_with`] open an endpoint, beyond the
/// address; the defaults are what [`connect`] and [`listen`] do.
///
/// ```
/// use ipckit::endpoint::Options;
/// use ipckit::frame::Framing;
/// use std::time::Duration;
///
/// // What `ipc send` does: lines for text tools, queues made if missing
/// // and left for the next command.
/// let opts = Options::new()
///     .framing(Framing::Lines)
///     .create(true)
///     .keep(true)
///     .timeout(Some(Duration::from_secs(5)));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    framing: Framing,
    create: bool,
    keep: bool,
    timeout: Option<Duration>,
    ring_capacity: Option<usize>,
    ring_max_message_size: Option<usize>,
    max_message_size: Option<usize>,
    broker: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// The defaults: length-prefixed frames, nothing made by `connect`,
    /// what `listen` made removed when dropped, no time limit.
    pub fn new() -> Self {
        Options {
            framing: Framing::LengthPrefixed,
            create: false,
            keep: false,
            timeout: None,
            ring_capacity: None,
            ring_max_message_size: None,
            max_message_size: None,
            broker: None,
        }
    }

    /// How messages are delimited on byte streams (`fifo:`, `unix:`,
    /// `tcp:`): [`Framing::Lines`] to talk with `cat`, `socat` or `nc`.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// `connect` makes a queue or ring that does not exist yet (mode
    /// 0600), so that a sender can start before any receiver.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Leaves the queue, ring, FIFO or socket file this call makes in
    /// place when the endpoint is dropped (for a shell, where the next
    /// command uses it).
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// `connect`: how long to keep trying while the other side is not
    /// there yet (a server still starting; a FIFO's reader).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// A ring this call makes: how many slots (see
    /// [`RingBuilder::capacity`](crate::ring::RingBuilder::capacity)).
    pub fn ring_capacity(mut self, slots: usize) -> Self {
        self.ring_capacity = Some(slots);
        self
    }

    /// A ring this call makes: the largest message (see
    /// [`RingBuilder::max_message_size`](crate::ring::RingBuilder::max_message_size)).
    pub fn ring_max_message_size(mut self, max: usize) -> Self {
        self.ring_max_message_size = Some(max);
        self
    }

    /// The largest message the endpoints sent and received through will
    /// take (see [`MessageReceiver::set_max_message_size`]; default 16 MiB
    /// on byte streams and sockets): applied to what `connect` gives,
    /// including a FIFO's writing end, and to every connection `accept`
    /// gives. Queues and rings keep their own limit, set when they are
    /// made.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = Some(max);
        self
    }

    /// `mailbox:` and `pid:` addresses: the socket of the broker to use
    /// (default [`crate::mailbox::default_socket`], which
    /// `$IPCKIT_BROKER` overrides).
    pub fn broker(mut self, socket: impl Into<std::path::PathBuf>) -> Self {
        self.broker = Some(socket.into());
        self
    }

    fn mailbox_client(&self) -> Result<crate::mailbox::Client, crate::mailbox::Error> {
        match &self.broker {
            Some(path) => crate::mailbox::Client::connect_to(path),
            None => crate::mailbox::Client::connect(),
        }
    }

    fn ring(&self, name: &str) -> crate::ring::RingBuilder {
        let mut b = crate::ring::Ring::builder(name).multi(true).keep(self.keep);
        if let Some(n) = self.ring_capacity {
            b = b.capacity(n);
        }
        if let Some(m) = self.ring_max_message_size {
            b = b.max_message_size(m);
        }
        b
    }
}

/// Connects to `addr`, waiting as long as a FIFO needs for its reader.
pub fn connect(addr: &Address) -> io::Result<Connection> {
    connect_with(addr, &Options::new())
}

/// Connects to `addr`; with a `timeout`, keeps trying while the other side
/// is not there yet (a server still starting) until it passes.
pub fn connect_timeout(addr: &Address, timeout: Option<Duration>) -> io::Result<Connection> {
    connect_with(addr, &Options::new().timeout(timeout))
}

/// Connects to `addr` as `opts` say.
pub fn connect_with(addr: &Address, opts: &Options) -> io::Result<Connection> {
    let until = opts.timeout.map(|t| Instant::now() + t);
    loop {
        match connect_once(addr, opts) {
            Err(e)
                if until.is_some_and(|u| Instant::now() < u)
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn connect_once(addr: &Address, opts: &Options) -> io::Result<Connection> {
    let timeout = opts.timeout;
    let make = if opts.create {
        Make::CreateOrOpen
    } else {
        Make::Open
    };
    let way = match addr {
        Address::Unix(a) => {
            let mut s = UnixStream::connect(a)?;
            s.set_framing(opts.framing);
            Way::Both(Box::new(s))
        }
        Address::UnixSeq(a) => Way::Both(Box::new(SeqpacketStream::connect(a)?)),
        Address::UnixDgram(a) => Way::Send(Box::new(UnixDatagram::connect_to(a)?)),
        Address::Tcp(hp) => {
            let sa = resolve(hp)?;
            let mut s = match timeout {
                Some(t) => TcpStream::connect_timeout(&sa, t)?,
                None => TcpStream::connect(sa)?,
            };
            s.set_framing(opts.framing);
            Way::Both(Box::new(s))
        }
        Address::Udp(hp) => {
            let sa = resolve(hp)?;
            let any = if sa.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(any)?;
            s.connect(sa)?;
            Way::Both(Box::new(s))
        }
        Address::Fifo(path) => {
            let mut tx = crate::fifo::open_sender(path, timeout)?;
            tx.set_framing(opts.framing);
            if let Some(max) = opts.max_message_size {
                tx.set_max_message_size(max);
            }
            Way::Send(Box::new(tx))
        }
        Address::Mq(name) => Way::Send(Box::new(
            crate::mq::PosixQueue::builder(name)
                .access(crate::mq::Access::Send)
                .keep(opts.keep)
                .make(make)?,
        )),
        Address::SysvMq(key) => Way::Send(Box::new(
            crate::sysv::MessageQueue::builder(*key)
                .access(crate::mq::Access::Send)
                .keep(opts.keep)
                .make(make)?,
        )),
        Address::Ring(name) => Way::Send(Box::new(opts.ring(name).make(make)?.sender()?)),
        Address::Mailbox(name) => {
            let client = opts.mailbox_client()?;
            Way::Send(Box::new(crate::mailbox::MailboxSender::new(client, name)?))
        }
        Address::Pid(pid) => {
            let client = opts.mailbox_client()?;
            let pid = match *pid {
                0 => client.me().pid,
                p => p as i32,
            };
            let to = crate::mailbox::inbox(pid);
            Way::Send(Box::new(crate::mailbox::MailboxSender::new(client, &to)?))
        }
        Address::Shm(_) | Address::SysvShm(_) | Address::Sem(_) | Address::SysvSem(_) => {
            return Err(not_a_channel(addr))
        }
    };
    let mut c = Connection {
        way,
        addr: addr.clone(),
    };
    if let Some(max) = opts.max_message_size {
        c.set_max_message_size(max);
    }
    Ok(c)
}

enum Serving {
    Unix(UnixListener),
    Seq(SeqpacketListener),
    Tcp(TcpListener),
    Fifo(Fifo),
    /// Connectionless: one receiving end, handed out by the first accept.
    Once(std::sync::Mutex<Option<Connection>>),
}

/// Where connections (or messages) come in, from [`listen`].
pub struct Listener {
    serving: Serving,
    addr: Address,
    /// The address clients use (the port bound for TCP and UDP port 0).
    local: Address,
    /// For accepted streams.
    framing: Framing,
    /// The socket file or FIFO this listener made, removed when it is
    /// dropped.
    created: Option<CreatedPath>,
    /// For every connection handed out.
    max_message_size: Option<usize>,
    /// The broker of a `mailbox:` or `pid:` listener, when not the default.
    broker: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listener({})", self.addr)
    }
}

/// Listens on `addr` (see the module docs for what each mechanism gives).
/// A socket file, FIFO, queue or ring this call made is removed when the
/// listener is dropped; queues and rings that existed are opened.
pub fn listen(addr: &Address) -> io::Result<Listener> {
    listen_with(addr, &Options::new())
}

/// [`listen`] as `opts` say (framing of accepted streams, keeping what it
/// makes, the geometry of a ring it makes).
pub fn listen_with(addr: &Address, opts: &Options) -> io::Result<Listener> {
    listen_inner(addr, opts, false)
}

/// [`listen`], but a FIFO, queue or ring that already exists is an
/// `AlreadyExists` error rather than opened (a private inbox nobody else
/// made).
pub(crate) fn listen_new(addr: &Address) -> io::Result<Listener> {
    listen_inner(addr, &Options::new(), true)
}

/// The message type of a `sysv-mq:` connection: `connect` sends it,
/// `listen` receives it.
pub(crate) const SYSV_TYPE: i64 = 1;

/// The receiving end of messages of type `mtype` on the existing System
/// V queue `key` (a request/reply client's inbox), as a listener.
pub(crate) fn sysv_inbox(key: crate::sysv::Key, mtype: i64) -> io::Result<Listener> {
    let addr = Address::SysvMq(key);
    let mut q = crate::sysv::MessageQueue::builder(key)
        .access(crate::mq::Access::Receive)
        .open()?;
    q.set_default_selector(crate::sysv::Selector::Type(mtype))?;
    Ok(Listener {
        serving: Serving::Once(std::sync::Mutex::new(Some(Connection {
            way: Way::Recv(Box::new(q)),
            addr: addr.clone(),
        }))),
        local: addr.clone(),
        addr,
        framing: Options::new().framing,
        created: None,
        max_message_size: None,
        broker: None,
    })
}

/// A sender of messages of type `mtype` to the System V queue `key` (a
/// request/reply server's path to a client's inbox).
pub(crate) fn sysv_sender(key: crate::sysv::Key, mtype: i64) -> io::Result<Connection> {
    let mut q = crate::sysv::MessageQueue::builder(key)
        .access(crate::mq::Access::Send)
        .open()?;
    q.set_default_type(mtype)?;
    Ok(Connection {
        way: Way::Send(Box::new(q)),
        addr: Address::SysvMq(key),
    })
}

fn listen_inner(addr: &Address, opts: &Options, new: bool) -> io::Result<Listener> {
    let make = if new {
        Make::Create
    } else {
        Make::CreateOrOpen
    };
    let mut local = None;
    let mut created = None;
    let once = |way: Way| {
        Serving::Once(std::sync::Mutex::new(Some(Connection {
            way,
            addr: addr.clone(),
        })))
    };
    let serving = match addr {
        Address::Unix(a) => {
            let mut l = UnixListener::bind(a)?;
            if opts.keep {
                l.keep();
            }
            created = l.created_path();
            Serving::Unix(l)
        }
        Address::UnixSeq(a) => {
            let mut l = SeqpacketListener::bind(a)?;
            if opts.keep {
                l.keep();
            }
            created = l.created_path();
            Serving::Seq(l)
        }
        Address::Tcp(hp) => {
            let l = TcpListener::bind(resolve(hp)?)?;
            local = Some(Address::Tcp(l.local_addr()?.to_string()));
            Serving::Tcp(l)
        }
        Address::Fifo(path) => {
            let f = Fifo::builder(path).keep(opts.keep).make(make)?;
            if f.removes_on_drop() {
                created = f.created_path();
            }
            Serving::Fifo(f)
        }
        Address::UnixDgram(a) => {
            let s = UnixDatagram::bind(a)?;
            if !opts.keep {
                created = s.created_path();
            }
            once(Way::Both(Box::new(s)))
        }
        Address::Udp(hp) => {
            let s = UdpSocket::bind(resolve(hp)?)?;
            local = Some(Address::Udp(s.local_addr()?.to_string()));
            once(Way::Both(Box::new(s)))
        }
        Address::Mq(name) => once(Way::Recv(Box::new(
            crate::mq::PosixQueue::builder(name)
                .access(crate::mq::Access::Receive)
                .keep(opts.keep)
                .make(make)?,
        ))),
        Address::SysvMq(key) => {
            let mut q = crate::sysv::MessageQueue::builder(*key)
                .access(crate::mq::Access::Receive)
                .keep(opts.keep)
                .make(make)?;
            // The type `connect` sends; other types are other
            // conversations on the queue (request/reply's replies).
            q.set_default_selector(crate::sysv::Selector::Type(SYSV_TYPE))?;
            once(Way::Recv(Box::new(q)))
        }
        Address::Ring(name) => once(Way::Recv(Box::new(opts.ring(name).make(make)?.receiver()?))),
        Address::Mailbox(pattern) => {
            use crate::mailbox::{Config, MailboxReceiver, Pattern, SubscribeOptions};
            let mut client = opts.mailbox_client()?;
            // A name (not a pattern) is made if missing, like a queue, and
            // goes with the listener unless kept; the broker's own names
            // (`dead.NAME`, `pid.PID`) are only received from.
            let ours = !Pattern::new(pattern)?.is_wild()
                && crate::mailbox::name::validate_user_name(pattern).is_ok();
            let made = match ours {
                false => false,
                true if new => client.create(pattern, &Config::default()).map(|()| true)?,
                true => client.create_or_open(pattern, &Config::default())?,
            };
            let mut rx = MailboxReceiver::new(client, pattern, &SubscribeOptions::default())?;
            if made && !opts.keep {
                rx.remove_on_drop(pattern);
            }
            once(Way::Recv(Box::new(rx)))
        }
        Address::Pid(0) => {
            let client = opts.mailbox_client()?;
            once(Way::Recv(Box::new(crate::mailbox::MailboxReceiver::inbox(
                client,
            )?)))
        }
        Address::Pid(p) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "pid:{p} is another process's inbox: a process receives from its own only \
                     (listen on pid:self; send to pid:{p})"
                ),
            ))
        }
        Address::Shm(_) | Address::SysvShm(_) | Address::Sem(_) | Address::SysvSem(_) => {
            return Err(not_a_channel(addr))
        }
    };
    Ok(Listener {
        serving,
        local: local.unwrap_or_else(|| addr.clone()),
        addr: addr.clone(),
        framing: opts.framing,
        created,
        max_message_size: opts.max_message_size,
        broker: opts.broker.clone(),
    })
}

impl Listener {
    /// The broker a `mailbox:` or `pid:` listener was given
    /// ([`Options::broker`]); `None` for the default.
    pub(crate) fn broker(&self) -> Option<&std::path::Path> {
        self.broker.as_deref()
    }
}

/// Ready when a client waits to be accepted (`unix:`, `unix-seq:`,
/// `tcp:`). A FIFO's writer cannot be seen before opening it, and a
/// connectionless listener's end is selected on as the [`Connection`]
/// `accept` gives: both are errors.
impl Selectable for Listener {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        match &mut self.serving {
            Serving::Unix(l) => l.readiness(),
            Serving::Seq(l) => l.readiness(),
            Serving::Tcp(l) => l.readiness(),
            Serving::Fifo(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: a FIFO shows no writer before it is opened; accept() and select on the \
                     connection it gives",
                    self.addr
                ),
            )),
            Serving::Once(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has no connections to wait for: select on the receiving end accept() \
                     gives",
                    self.addr
                ),
            )),
        }
    }
}

impl Listener {
    /// The address it listens on, as given (a TCP port 0 stays 0: see
    /// [`local_address`](Self::local_address)).
    pub fn address(&self) -> &Address {
        &self.addr
    }

    /// The address clients connect to: for TCP and UDP the port actually
    /// bound (when port 0 asked the system to choose one).
    pub fn local_address(&self) -> io::Result<Address> {
        Ok(self.local.clone())
    }

    /// The socket file or FIFO this listener made (to remove it from a
    /// signal handler's thread, say, with [`crate::named`]); `None` when it
    /// made none or keeps it.
    pub fn created_path(&self) -> Option<CreatedPath> {
        self.created.clone()
    }

    /// The listening socket's descriptor, for a reactor (none for a FIFO
    /// or a connectionless mechanism).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn readiness_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::{AsFd, AsRawFd};
        match &self.serving {
            Serving::Unix(l) => Some(l.as_fd().as_raw_fd()),
            Serving::Seq(l) => Some(l.as_fd().as_raw_fd()),
            Serving::Tcp(l) => Some(l.as_fd().as_raw_fd()),
            Serving::Fifo(_) | Serving::Once(_) => None,
        }
    }

    /// For `fifo:`: the reading end opened at once (see
    /// [`Fifo::open_reader_now`]) as the next connection, and its
    /// descriptor for a reactor to wait on until a writer comes; `None`
    /// for other mechanisms.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn fifo_reader_now(&self) -> Option<io::Result<(Connection, std::os::fd::RawFd)>> {
        use std::os::fd::{AsFd, AsRawFd};
        let Serving::Fifo(f) = &self.serving else {
            return None;
        };
        Some((|| {
            let reader = f.open_reader_now()?;
            let fd = reader.as_fd().as_raw_fd();
            let mut rx = crate::pipe::Receiver::new(reader)?;
            rx.set_framing(self.framing);
            let mut conn = Connection {
                way: Way::Recv(Box::new(rx)),
                addr: self.addr.clone(),
            };
            if let Some(max) = self.max_message_size {
                conn.set_max_message_size(max);
            }
            Ok((conn, fd))
        })())
    }

    /// Whether clients connect one by one (`unix:`, `unix-seq:`, `tcp:`,
    /// and `fifo:`, whose writers come in turn); `false` when the first
    /// [`accept`](Self::accept) hands out the one receiving end.
    pub fn has_connections(&self) -> bool {
        !matches!(self.serving, Serving::Once(_))
    }

    /// The next connection (or, for a connectionless mechanism, the one
    /// receiving end), waiting for it.
    pub fn accept(&self) -> io::Result<Connection> {
        self.accept_inner(None)
    }

    /// [`accept`](Self::accept), waiting at most `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Connection> {
        self.accept_inner(Some(timeout))
    }

    /// The connections as they come (until an error).
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<Connection>> + '_ {
        std::iter::repeat_with(move || self.accept())
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> io::Result<Connection> {
        let mut c = self.accept_way(timeout)?;
        if let Some(max) = self.max_message_size {
            c.set_max_message_size(max);
        }
        Ok(c)
    }

    fn accept_way(&self, timeout: Option<Duration>) -> io::Result<Connection> {
        let wrap = |way: Way| Connection {
            way,
            addr: self.addr.clone(),
        };
        Ok(match &self.serving {
            Serving::Unix(l) => {
                let mut c = match timeout {
                    Some(t) => l.accept_timeout(t)?,
                    None => l.accept()?,
                };
                c.set_framing(self.framing);
                wrap(Way::Both(Box::new(c)))
            }
            Serving::Seq(l) => wrap(Way::Both(Box::new(match timeout {
                Some(t) => l.accept_timeout(t)?,
                None => l.accept()?,
            }))),
            Serving::Tcp(l) => {
                let mut c = match timeout {
                    Some(t) => l.accept_timeout(t)?,
                    None => l.accept()?,
                };
                c.set_framing(self.framing);
                wrap(Way::Both(Box::new(c)))
            }
            Serving::Fifo(f) => {
                let mut rx = f.open_receiver(timeout)?;
                rx.set_framing(self.framing);
                wrap(Way::Recv(Box::new(rx)))
            }
            Serving::Once(c) => c
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} has no connections: its one receiving end was handed out by \
                             the first accept, and it receives from every sender",
                            self.addr
                        ),
                    )
                })?,
        })
    }
}
