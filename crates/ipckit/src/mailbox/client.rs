//! The client: one connection to the broker, used from one thread.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::WaitStrategy;

use super::config::{Config, MailboxInfo};
use super::name::{self, Pattern};
use super::wire::{self, AckMode, Code, Event};
use crate::message::Deadline;
use crate::mq::sysv::Selector;
use crate::ring::lanes::Lanes;
use crate::sys::socket as sock;

/// Acknowledgements held before they are sent on their own.
const ACK_BATCH: usize = 64;
/// Sends of one [`Client::send_batch`] in flight at once.
const WINDOW: usize = 1024;

/// What went wrong, in a word; [`Error`] carries the whole story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No broker listens at the socket.
    NotRunning,
    /// No such mailbox (or dead-letter mailbox of one).
    NoSuchMailbox,
    /// No such process connected (a send to `pid.PID`).
    NoSuchProcess,
    /// The mailbox's owner and mode do not allow it.
    Denied,
    /// The mailbox is full and refuses (`fail`), or the send did not wait.
    Full,
    /// The mailbox stayed full until the send's timeout; nothing was stored.
    Timeout,
    /// The mailbox exists already.
    Exists,
    /// The message is above the broker's or the mailbox's limit.
    TooLarge,
    /// A name, pattern or setting was refused.
    Invalid,
    /// The broker cannot store it (a durable mailbox without a store).
    Storage,
    /// The broker went away.
    Disconnected,
    /// The broker sent something this client cannot read.
    Protocol,
    /// A system call failed.
    Io,
}

/// A failed mailbox operation: its kind and a message that says what to
/// do.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn io(e: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: e.to_string(),
            source: Some(e),
        }
    }

    fn disconnected() -> Error {
        Error::new(
            ErrorKind::Disconnected,
            "the broker closed the connection (it stopped, or refused this client)",
        )
    }

    /// What went wrong, in a word.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// As the message traits' send error: a full mailbox or its timeout is
    /// `Timeout` when the send had a deadline, a broker gone is
    /// `Disconnected`, anything else an I/O error with this message.
    pub fn into_send_error(self, deadline: Deadline) -> crate::SendTimeoutError<()> {
        use crate::SendTimeoutError as E;
        match self.kind {
            ErrorKind::Full | ErrorKind::Timeout if deadline != Deadline::Never => E::Timeout(()),
            ErrorKind::Disconnected => E::Disconnected(()),
            _ => E::Io(self.into(), ()),
        }
    }

    /// As the message traits' receive error: no message in time is
    /// `Timeout`, a broker or mailbox gone `Disconnected`, anything else an
    /// I/O error with this message.
    pub fn into_recv_error(self) -> crate::RecvTimeoutError {
        use crate::RecvTimeoutError as E;
        match self.kind {
            ErrorKind::Timeout => E::Timeout,
            ErrorKind::Disconnected => E::Disconnected,
            _ => E::Io(self.into()),
        }
    }

    fn from_code(code: Code, text: &str) -> Error {
        let kind = match code {
            Code::Protocol => ErrorKind::Protocol,
            Code::Invalid => ErrorKind::Invalid,
            Code::NoSuchMailbox => ErrorKind::NoSuchMailbox,
            Code::Denied => ErrorKind::Denied,
            Code::Full => ErrorKind::Full,
            Code::Timeout => ErrorKind::Timeout,
            Code::Exists => ErrorKind::Exists,
            Code::TooLarge => ErrorKind::TooLarge,
            Code::NoSuchProcess => ErrorKind::NoSuchProcess,
            Code::Storage => ErrorKind::Storage,
        };
        Error::new(kind, text)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        if let Some(src) = e.source {
            return src;
        }
        let kind = match e.kind {
            ErrorKind::NotRunning => io::ErrorKind::NotFound,
            ErrorKind::NoSuchMailbox | ErrorKind::NoSuchProcess => io::ErrorKind::NotFound,
            ErrorKind::Denied => io::ErrorKind::PermissionDenied,
            ErrorKind::Full => io::ErrorKind::WouldBlock,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Exists => io::ErrorKind::AlreadyExists,
            ErrorKind::TooLarge | ErrorKind::Protocol => io::ErrorKind::InvalidData,
            ErrorKind::Invalid => io::ErrorKind::InvalidInput,
            ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
            ErrorKind::Storage | ErrorKind::Io => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.message)
    }
}

/// A message to send: the payload and what receivers select it by.
///
/// ```
/// use ipckit::mailbox::Message;
/// let m = Message::new(b"charge card 42").with_priority(5).with_type(2).with_id("order-42");
/// assert_eq!(m.priority(), 5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    payload: &'a [u8],
    mtype: i64,
    priority: u32,
    id: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message of type 1, priority 0, without id.
    pub fn new(payload: &'a [u8]) -> Self {
        Message {
            payload,
            mtype: 1,
            priority: 0,
            id: None,
        }
    }

    /// Its type (1 or more; receivers select by type as `msgrcv(2)` does).
    pub fn with_type(mut self, mtype: i64) -> Self {
        self.mtype = mtype;
        self
    }

    /// Its priority: higher ones are delivered first, FIFO within one (as
    /// POSIX queues do).
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Its id (at most 255 bytes): a second send with the same id within
    /// the mailbox's dedup window is confirmed without being stored again,
    /// so a sender may retry safely.
    pub fn with_id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The type.
    pub fn mtype(&self) -> i64 {
        self.mtype
    }

    /// The priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }
}

/// How a send ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (and, for a durable mailbox, written as its fsync policy says).
    Stored,
    /// A message with the same id was stored before, within the dedup
    /// window: this one was not stored again.
    Duplicate,
    /// The mailbox keeps messages for its receivers only (interest
    /// retention) and had none: the message was dropped.
    NoReceivers,
}

/// The broker's confirmation of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// What happened.
    pub outcome: Outcome,
    /// The message's sequence number in the mailbox (of the first one
    /// stored, for a duplicate; 0 when dropped).
    pub seq: u64,
}

/// The process that sent a message, from its socket's credentials
/// (`SO_PEERCRED`): a sender cannot forge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// Its process id (as the broker's pid namespace sees it).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The mailbox it came from (a pattern's subscriber learns which).
    pub mailbox: String,
    /// Its sequence number in that mailbox.
    pub seq: u64,
    /// Its type.
    pub mtype: i64,
    /// Its priority.
    pub priority: u32,
    /// The id its sender gave.
    pub id: Option<String>,
    /// Who sent it.
    pub sender: Sender,
    /// How many times it has been delivered, this one included (above 1:
    /// an earlier receiver did not acknowledge it).
    pub deliveries: u32,
    /// For a dead letter: why it was moved here.
    pub dead_reason: Option<String>,
    /// The bytes.
    pub payload: Vec<u8>,
    tag: u64,
    sub: u32,
}

/// When a received message counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// When the receiver asks for the next message (or drops the client,
    /// or calls [`Client::flush`]): a receiver that dies while handling a
    /// message has it delivered again.
    #[default]
    OnNext,
    /// Only by [`Client::ack`] (or [`Client::nack`], [`Client::reject`]).
    Explicit,
    /// Never: a message is done once the broker has written it to this
    /// receiver (at most once).
    None,
}

/// How to receive ([`Client::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// A receiver group to share the messages with (each goes to one
    /// member); none: this receiver gets every message of a mailbox with
    /// interest or limits retention (a work queue's receivers always
    /// share).
    pub group: Option<String>,
    /// Which messages, by type (as `msgrcv(2)`); highest priority first
    /// among them.
    pub selector: Selector,
    /// When a message counts as done.
    pub ack: AckPolicy,
    /// Messages delivered to this receiver and not yet acknowledged, at
    /// most (per mailbox), before the broker waits.
    pub max_in_flight: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            group: None,
            selector: Selector::Any,
            ack: AckPolicy::OnNext,
            max_in_flight: 256,
        }
    }
}

/// A subscription of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription(u32);

#[derive(Debug)]
struct SubState {
    ack: AckPolicy,
    /// Names one mailbox (not a pattern).
    exact: bool,
    closed: bool,
}

#[derive(Debug)]
enum Reply {
    Confirm(u8, u64),
    Fail(Code, String),
    Done(u64),
    Info(Vec<MailboxInfo>),
}

/// A connection to the broker (see the [module docs](super)).
#[derive(Debug)]
pub struct Client {
    fd: OwnedFd,
    /// The frames' way when the broker gave lanes (the socket then
    /// carries wake-ups and the end).
    lanes: Option<Lanes>,
    /// This side's "kick me" flag in the lanes is up: the broker wakes
    /// the socket for what it writes. Down only while this client spins
    /// on the lanes itself.
    kick_me: bool,
    path: PathBuf,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    max_message: usize,
    me: Sender,
    next_corr: u32,
    next_sub: u32,
    deliveries: VecDeque<Delivery>,
    subs: FxHashMap<u32, SubState>,
    to_ack: Vec<u64>,
    on_next: Option<u64>,
    replies: FxHashMap<u32, Reply>,
    /// Mailbox INFO frames gathered for a STAT in progress.
    info: FxHashMap<u32, Vec<MailboxInfo>>,
    wait: WaitStrategy,
    broken: bool,
}

impl Client {
    /// Connects to the broker at [`default_socket`](super::default_socket).
    pub fn connect() -> Result<Client, Error> {
        Client::connect_to(super::default_socket())
    }

    /// Connects to the broker at `path`.
    pub fn connect_to(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_as(path.as_ref(), false)
    }

    /// Whether `sub` names one mailbox that was removed.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn is_closed(&self, sub: Subscription) -> bool {
        self.subs.get(&sub.0).is_some_and(|s| s.closed)
    }

    /// Connects as the broker's NATS bridge (from the broker's process
    /// only): what it sends is marked remote, and it receives only what
    /// is not.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn connect_bridge(path: &Path) -> Result<Client, Error> {
        Client::connect_as(path, true)
    }

    fn connect_as(path: &Path, bridge: bool) -> Result<Client, Error> {
        let sa = sock::SockAddrUn::path(path.as_os_str().as_encoded_bytes()).map_err(Error::io)?;
        let fd = sock::socket(libc::AF_UNIX, libc::SOCK_STREAM).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot connect to the broker at {}: {e}", path.display()),
            )
        })?;
        if let Err(e) = sock::connect(fd.as_fd(), &sa) {
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT | libc::ECONNREFUSED) => Error::new(
                    ErrorKind::NotRunning,
                    format!(
                        "no mailbox broker is running at {}: start one with `ipc broker`, or \
                         run one in this process with mailbox::Broker::builder().spawn()",
                        path.display()
                    ),
                ),
                Some(libc::EACCES) => Error::new(
                    ErrorKind::Denied,
                    format!(
                        "may not connect to the broker at {}: {e} (the socket file's or its \
                         directory's permissions)",
                        path.display()
                    ),
                ),
                _ => Error::new(
                    ErrorKind::Io,
                    format!("cannot connect to the broker at {}: {e}", path.display()),
                ),
            });
        }
        let mut c = Client {
            fd,
            lanes: None,
            kick_me: false,
            path: path.to_owned(),
            rbuf: Vec::with_capacity(64 << 10),
            wbuf: Vec::with_capacity(64 << 10),
            max_message: 0,
            me: Sender {
                pid: 0,
                uid: 0,
                gid: 0,
            },
            next_corr: 1,
            next_sub: 1,
            deliveries: VecDeque::new(),
            subs: FxHashMap::default(),
            to_ack: Vec::new(),
            on_next: None,
            replies: FxHashMap::default(),
            info: FxHashMap::default(),
            wait: WaitStrategy::ADAPTIVE,
            broken: false,
        };
        crate::sys::fd::set_nonblocking(c.fd.as_fd(), true).map_err(Error::io)?;
        wire::hello(&mut c.wbuf, bridge, true);
        match c.write_out() {
            Err(e) if e.kind() == ErrorKind::Disconnected => return Err(c.refused()),
            r => r?,
        }
        c.welcome()?;
        Ok(c)
    }

    /// Waits for the `WELCOME`, which brings the lanes' memfd when the
    /// broker gives lanes: every later frame goes through them.
    fn welcome(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lanes = None;
        while self.max_message == 0 {
            match sock::recvmsg_spare(self.fd.as_fd(), &mut self.rbuf, 4096, 0, true) {
                Ok(r) if r.len == 0 => return Err(self.refused()),
                Ok(r) => {
                    if r.fds_truncated {
                        // The kernel could not give this process the
                        // lanes' descriptor; the broker, which sent it,
                        // would wait on lanes nobody reads.
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "the broker at {} sent its lanes (a shared memory descriptor) \
                                 and this process could not receive it: it is at its open-file \
                                 limit (RLIMIT_NOFILE, `ulimit -n`); close descriptors or raise \
                                 the limit",
                                self.path.display()
                            ),
                        ));
                    }
                    if lanes.is_none() {
                        lanes = r.fds.into_iter().next();
                    }
                    self.take_frames()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = crate::sys::fd::poll(
                        self.fd.as_fd(),
                        crate::sys::fd::Interest::Read,
                        Some(deadline),
                    )
                    .map_err(Error::io)?;
                    if !ready {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "{} accepted the connection but did not answer within 10 s: \
                                 is it an ipckit broker?",
                                self.path.display()
                            ),
                        ));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Err(self.refused()),
                Err(e) => return Err(Error::io(e)),
            }
        }
        if let Some(fd) = lanes {
            let l = Lanes::open(fd).map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("the broker at {}: {e}", self.path.display()),
                )
            })?;
            l.sleep(true);
            self.lanes = Some(l);
            self.kick_me = true;
        }
        Ok(())
    }

    /// The broker closed the connection before its `WELCOME`.
    fn refused(&self) -> Error {
        Error::new(
            ErrorKind::Disconnected,
            format!(
                "the broker at {} closed the connection before welcoming this client: it \
                 serves as many clients as it may (Broker::builder().max_connections, \
                 `ipc broker --max-connections`), is out of file descriptors, or is stopping",
                self.path.display()
            ),
        )
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// This process as the broker sees it; its inbox is
    /// [`inbox`](super::inbox)`(me().pid)`.
    pub fn me(&self) -> Sender {
        self.me
    }

    /// The largest message the broker accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// How this client waits for the broker. The default,
    /// [`WaitStrategy::ADAPTIVE`], first retries a non-blocking `recv(2)`
    /// for up to 50 µs (yielding the CPU between tries) before it sleeps
    /// in `poll(2)`: a receive or a confirmation that comes quickly then
    /// costs no scheduler wake-up, which on many machines is most of a
    /// round trip (`ipc bench mailbox` measures both). A client that
    /// mostly waits long, or must not spend that CPU, can choose
    /// [`WaitStrategy::Block`].
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    // ------------------------------------------------------------------ I/O

    fn write_out(&mut self) -> Result<(), Error> {
        if self.lanes.is_some() {
            return self.write_lanes();
        }
        let mut at = 0;
        while at < self.wbuf.len() {
            match sock::send(self.fd.as_fd(), &self.wbuf[at..], libc::MSG_NOSIGNAL) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::sys::fd::poll(self.fd.as_fd(), crate::sys::fd::Interest::Write, None)
                        .map_err(Error::io)?;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                    self.broken = true;
                    return Err(Error::disconnected());
                }
                Err(e) => return Err(Error::io(e)),
            }
        }
        self.wbuf.clear();
        Ok(())
    }

    /// [`write_out`](Self::write_out) through the lanes: waits (for the
    /// broker's kick) while they are full.
    fn write_lanes(&mut self) -> Result<(), Error> {
        let Some(lanes) = self.lanes.as_mut() else {
            return Ok(());
        };
        let mut at = 0;
        let mut waiting = false;
        let r = loop {
            match lanes.write(&self.wbuf[at..]) {
                Ok(0) => {}
                Ok(n) => {
                    at += n;
                    if lanes.reader_sleeps() {
                        kick(self.fd.as_fd());
                    }
                }
                Err(e) => break Err(Error::new(ErrorKind::Protocol, e.to_string())),
            }
            if at == self.wbuf.len() {
                break Ok(());
            }
            if !waiting {
                // Full: ask for a kick when there is room, then look again.
                waiting = true;
                lanes.wait_for_room(true);
                continue;
            }
            let r = crate::sys::fd::poll(self.fd.as_fd(), crate::sys::fd::Interest::Read, None);
            if let Err(e) = r
                .map_err(Error::io)
                .and_then(|_| take_kicks(self.fd.as_fd()))
            {
                break Err(e);
            }
        };
        if waiting {
            lanes.wait_for_room(false);
        }
        match r {
            Ok(()) => {
                self.wbuf.clear();
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Takes what waits in the lanes into `rbuf`: whether anything came.
    fn fill_from_lanes(&mut self) -> Result<bool, Error> {
        let Some(lanes) = self.lanes.as_mut() else {
            return Ok(false);
        };
        match lanes.read_into(&mut self.rbuf, 256 << 10) {
            Ok(0) => Ok(false),
            Ok(_) => {
                if lanes.writer_waits() {
                    kick(self.fd.as_fd());
                }
                Ok(true)
            }
            Err(e) => {
                self.broken = true;
                Err(Error::new(ErrorKind::Protocol, e.to_string()))
            }
        }
    }

    /// Raises or lowers this side's "kick me" flag; raised, takes in what
    /// came meanwhile (so that a caller waiting on the socket finds it
    /// read ahead): whether anything did.
    fn set_kick_me(&mut self, on: bool) -> Result<bool, Error> {
        let Some(lanes) = &self.lanes else {
            return Ok(false);
        };
        if self.kick_me != on {
            lanes.sleep(on);
            self.kick_me = on;
        }
        if on && self.fill_from_lanes()? {
            self.take_frames()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Sends what is buffered, waits (until `deadline`) for input and
    /// takes in every whole frame; false on timeout.
    fn pump(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        if self.broken {
            return Err(Error::disconnected());
        }
        if !self.to_ack.is_empty() {
            wire::ack(&mut self.wbuf, &self.to_ack);
            self.to_ack.clear();
        }
        if !self.wbuf.is_empty() {
            self.write_out()?;
        }
        if self.lanes.is_none() {
            return self.pump_socket(deadline);
        }
        let r = self.pump_lanes(deadline);
        // Back to the caller: the broker kicks the socket for what comes
        // from now on, so that whoever waits on it is woken.
        let more = self.set_kick_me(true)?;
        r.map(|got| got || more)
    }

    /// [`pump`](Self::pump) through the lanes: spins on them (if the
    /// strategy says so), then sleeps in `poll(2)` on the socket with the
    /// flag up until the broker's kick (or the end).
    fn pump_lanes(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let mut spin = Spin::new(self.wait, deadline);
        let mut turns = 0u32;
        loop {
            let spinning = spin.now();
            if spinning {
                self.set_kick_me(false)?;
            }
            if self.fill_from_lanes()? {
                break;
            }
            if spinning {
                turns = turns.wrapping_add(1);
                if turns.is_multiple_of(1024) {
                    // A broker that died sends no kick: its end shows on
                    // the socket.
                    take_kicks(self.fd.as_fd()).inspect_err(|_| self.broken = true)?;
                }
                std::thread::yield_now();
                continue;
            }
            spin.stop();
            if self.set_kick_me(true)? {
                return Ok(true);
            }
            let ready =
                crate::sys::fd::poll(self.fd.as_fd(), crate::sys::fd::Interest::Read, deadline)
                    .map_err(Error::io)?;
            if ready {
                take_kicks(self.fd.as_fd()).inspect_err(|_| self.broken = true)?;
            } else if !self.fill_from_lanes()? {
                return Ok(false);
            } else {
                break;
            }
        }
        self.take_frames()?;
        Ok(true)
    }

    /// [`pump`](Self::pump) on the socket alone.
    fn pump_socket(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let mut spin = Spin::new(self.wait, deadline);
        let want = 256 << 10;
        loop {
            match crate::sys::fd::read_spare(self.fd.as_fd(), &mut self.rbuf, want) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::disconnected());
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    self.broken = true;
                    return Err(Error::disconnected());
                }
                Err(e) => return Err(Error::io(e)),
            }
            if spin.now() {
                // Lets the broker (or the peer) run if it shares this CPU;
                // alone on it, this returns at once.
                std::thread::yield_now();
                continue;
            }
            spin.stop();
            let ready =
                crate::sys::fd::poll(self.fd.as_fd(), crate::sys::fd::Interest::Read, deadline)
                    .map_err(Error::io)?;
            if !ready {
                return Ok(false);
            }
        }
        self.take_frames()?;
        Ok(true)
    }

    fn take_frames(&mut self) -> Result<(), Error> {
        let max = self.max_message.max(1 << 20) + wire::OVERHEAD;
        let mut at = 0;
        let rbuf = std::mem::take(&mut self.rbuf);
        let r = loop {
            match wire::frame_len(&rbuf[at..], max) {
                Ok(Some(n)) => {
                    if let Err(e) = self.event(&rbuf[at..at + n]) {
                        break Err(e);
                    }
                    at += n;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Error::new(ErrorKind::Protocol, e.to_string())),
            }
        };
        self.rbuf = rbuf;
        self.rbuf.drain(..at);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn event(&mut self, frame: &[u8]) -> Result<(), Error> {
        let ev =
            wire::read_event(frame).map_err(|e| Error::new(ErrorKind::Protocol, e.to_string()))?;
        match ev {
            Event::Welcome {
                pid,
                uid,
                gid,
                max_message,
                ..
            } => {
                self.me = Sender { pid, uid, gid };
                self.max_message = (max_message as usize).max(1);
            }
            Event::Confirm { corr, outcome, seq } => {
                self.replies.insert(corr, Reply::Confirm(outcome, seq));
            }
            Event::Fail { corr: 0, text, .. } => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("the broker closed the connection: {text}"),
                ))
            }
            Event::Fail { corr, code, text } => {
                self.replies
                    .insert(corr, Reply::Fail(code, text.to_string()));
            }
            Event::Done { corr, value } => {
                self.replies.insert(corr, Reply::Done(value));
            }
            Event::Deliver(wire::DeliverView {
                head: d,
                mailbox,
                id,
                reason,
                payload,
            }) => {
                if !self.subs.contains_key(&d.sub) {
                    // A delivery racing an unsubscribe: give it back,
                    // uncounted.
                    if d.tag != 0 {
                        wire::release(&mut self.wbuf, &[d.tag]);
                    }
                    return Ok(());
                }
                self.deliveries.push_back(Delivery {
                    mailbox: mailbox.to_string(),
                    seq: d.seq,
                    mtype: d.mtype,
                    priority: d.priority,
                    id: id.map(str::to_string),
                    sender: Sender {
                        pid: d.pid,
                        uid: d.uid,
                        gid: d.gid,
                    },
                    deliveries: d.deliveries,
                    dead_reason: reason.map(str::to_string),
                    payload: payload.to_vec(),
                    tag: d.tag,
                    sub: d.sub,
                });
            }
            Event::Closed { sub, .. } => {
                if let Some(s) = self.subs.get_mut(&sub) {
                    if s.exact {
                        s.closed = true;
                    }
                }
            }
            Event::Info {
                corr,
                more,
                entries,
            } => {
                let acc = self.info.entry(corr).or_default();
                acc.extend(entries);
                if !more {
                    let all = self.info.remove(&corr).unwrap_or_default();
                    self.replies.insert(corr, Reply::Info(all));
                }
            }
        }
        Ok(())
    }

    fn corr(&mut self) -> u32 {
        let c = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1).max(1);
        c
    }

    /// Waits for the answer to request `corr`.
    fn answer(&mut self, corr: u32, deadline: Option<Instant>) -> Result<Reply, Error> {
        loop {
            if let Some(r) = self.replies.remove(&corr) {
                return Ok(r);
            }
            if !self.pump(deadline)? {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "the broker did not answer in time (it may be overloaded or stopped)",
                ));
            }
        }
    }

    fn expect_done(&mut self, corr: u32) -> Result<u64, Error> {
        match self.answer(corr, None)? {
            Reply::Done(v) => Ok(v),
            Reply::Fail(code, text) => Err(Error::from_code(code, &text)),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("an unexpected answer from the broker: {other:?}"),
            )),
        }
    }

    // ------------------------------------------------------------ mailboxes

    /// Makes mailbox `name` with `config`; [`ErrorKind::Exists`] if it
    /// exists.
    pub fn create(&mut self, name: &str, config: &Config) -> Result<(), Error> {
        self.make(name, config, false).map(|_| ())
    }

    /// Makes mailbox `name` unless it exists; whether it made it (an
    /// existing one keeps its own settings).
    pub fn create_or_open(&mut self, name: &str, config: &Config) -> Result<bool, Error> {
        self.make(name, config, true)
    }

    fn make(&mut self, name: &str, config: &Config, exist_ok: bool) -> Result<bool, Error> {
        name::validate_user_name(name)
            .map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        config
            .validate()
            .map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        let corr = self.corr();
        wire::create(&mut self.wbuf, corr, exist_ok, name, config);
        Ok(self.expect_done(corr)? == 1)
    }

    /// Removes mailbox `name` (its owner or root only); its receivers are
    /// told, its waiting senders get [`ErrorKind::NoSuchMailbox`].
    pub fn delete(&mut self, name: &str) -> Result<(), Error> {
        name::validate_name(name).map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        let corr = self.corr();
        wire::delete(&mut self.wbuf, corr, name);
        self.expect_done(corr).map(|_| ())
    }

    /// The mailboxes matching `pattern` (all with `None`) that this user
    /// may see, by name.
    pub fn stat(&mut self, pattern: Option<&str>) -> Result<Vec<MailboxInfo>, Error> {
        if let Some(p) = pattern {
            Pattern::new(p).map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        }
        let corr = self.corr();
        wire::stat(&mut self.wbuf, corr, pattern.unwrap_or(""));
        match self.answer(corr, None)? {
            Reply::Info(list) => Ok(list),
            Reply::Fail(code, text) => Err(Error::from_code(code, &text)),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("an unexpected answer from the broker: {other:?}"),
            )),
        }
    }

    // --------------------------------------------------------------- sending

    /// Sends `payload` to mailbox `to` (made with the default settings if
    /// it does not exist; `pid.PID` is a process's inbox) and waits for
    /// the broker's confirmation, as long as a full mailbox makes it.
    pub fn send(&mut self, to: &str, payload: &[u8]) -> Result<Receipt, Error> {
        self.send_message(to, Message::new(payload), Deadline::Never)
    }

    /// Sends one message, waiting for room in a full mailbox until
    /// `deadline` at the most ([`Deadline::Now`]: not at all, a full
    /// mailbox is [`ErrorKind::Full`]).
    pub fn send_message(
        &mut self,
        to: &str,
        msg: Message<'_>,
        deadline: Deadline,
    ) -> Result<Receipt, Error> {
        let corr = self.queue_send(to, &msg, deadline)?;
        self.receipt(corr)
    }

    /// Sends many messages to one mailbox, many frames per system call,
    /// and waits for all their confirmations: one result per message, in
    /// order. The fast way to send a stream.
    pub fn send_batch(&mut self, to: &str, msgs: &[Message<'_>]) -> Vec<Result<Receipt, Error>> {
        let mut out = Vec::with_capacity(msgs.len());
        for chunk in msgs.chunks(WINDOW) {
            let mut corrs = Vec::with_capacity(chunk.len());
            for m in chunk {
                corrs.push(self.queue_send(to, m, Deadline::Never));
            }
            for c in corrs {
                out.push(c.and_then(|c| self.receipt(c)));
            }
        }
        out
    }

    fn queue_send(
        &mut self,
        to: &str,
        msg: &Message<'_>,
        deadline: Deadline,
    ) -> Result<u32, Error> {
        name::validate_name(to).map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        if msg.payload.len() > self.max_message {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "a message of {} bytes is above the broker's limit of {} bytes",
                    msg.payload.len(),
                    self.max_message
                ),
            ));
        }
        if msg.mtype < 1 {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("message type {}: a type is 1 or more", msg.mtype),
            ));
        }
        if let Some(id) = msg.id {
            if id.is_empty() || id.len() > wire::MAX_ID {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!(
                        "a message id is 1 to {} bytes, not {}",
                        wire::MAX_ID,
                        id.len()
                    ),
                ));
            }
        }
        let timeout_ms = match deadline {
            Deadline::Never => wire::FOREVER,
            Deadline::Now => 0,
            Deadline::At(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                ms.clamp(1, (wire::FOREVER - 1) as u128) as u32
            }
        };
        let corr = self.corr();
        wire::send(
            &mut self.wbuf,
            corr,
            to,
            msg.mtype,
            msg.priority,
            timeout_ms,
            msg.id,
            msg.payload,
        );
        if self.wbuf.len() >= 256 << 10 {
            self.write_out()?;
        }
        Ok(corr)
    }

    fn receipt(&mut self, corr: u32) -> Result<Receipt, Error> {
        match self.answer(corr, None)? {
            Reply::Confirm(outcome, seq) => Ok(Receipt {
                outcome: match outcome {
                    wire::STORED => Outcome::Stored,
                    wire::DUPLICATE => Outcome::Duplicate,
                    _ => Outcome::NoReceivers,
                },
                seq,
            }),
            Reply::Fail(code, text) => Err(Error::from_code(code, &text)),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("an unexpected answer from the broker: {other:?}"),
            )),
        }
    }

    // ------------------------------------------------------------- receiving

    /// Receives from the mailboxes `pattern` matches (one name, or `*` and
    /// `>` wildcards, which take in mailboxes made later too). A name that
    /// does not exist is made with the default settings. Messages come
    /// through [`recv`](Self::recv).
    pub fn subscribe(
        &mut self,
        pattern: &str,
        opts: &SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let pat =
            Pattern::new(pattern).map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        if opts.max_in_flight == 0 {
            return Err(Error::new(
                ErrorKind::Invalid,
                "max_in_flight must be at least 1",
            ));
        }
        let sub = self.next_sub;
        self.next_sub += 1;
        let corr = self.corr();
        let ack = match opts.ack {
            AckPolicy::None => AckMode::None,
            _ => AckMode::Explicit,
        };
        self.subs.insert(
            sub,
            SubState {
                ack: opts.ack,
                exact: !pat.is_wild(),
                closed: false,
            },
        );
        wire::subscribe(
            &mut self.wbuf,
            corr,
            sub,
            opts.max_in_flight,
            ack,
            opts.selector,
            pattern,
            opts.group.as_deref().unwrap_or(""),
        );
        match self.expect_done(corr) {
            Ok(_) => Ok(Subscription(sub)),
            Err(e) => {
                self.subs.remove(&sub);
                Err(e)
            }
        }
    }

    /// Receives from this process's own inbox ([`inbox`](super::inbox)),
    /// where `pid.PID` sends arrive.
    pub fn subscribe_inbox(&mut self, opts: &SubscribeOptions) -> Result<Subscription, Error> {
        let name = super::inbox(self.me.pid);
        self.subscribe(&name, opts)
    }

    /// Ends a subscription; its messages not yet acknowledged go back to
    /// the mailbox for others.
    pub fn unsubscribe(&mut self, sub: Subscription) -> Result<(), Error> {
        self.flush_acks();
        // Those not handed out yet go back to the mailbox uncounted.
        let unseen: Vec<u64> = self
            .deliveries
            .iter()
            .filter(|d| d.sub == sub.0 && d.tag != 0)
            .map(|d| d.tag)
            .collect();
        self.deliveries.retain(|d| d.sub != sub.0);
        wire::release(&mut self.wbuf, &unseen);
        let corr = self.corr();
        wire::unsubscribe(&mut self.wbuf, corr, sub.0);
        self.subs.remove(&sub.0);
        self.expect_done(corr).map(|_| ())
    }

    fn flush_acks(&mut self) {
        if let Some(t) = self.on_next.take() {
            self.to_ack.push(t);
        }
    }

    /// The next message, waiting as long as it takes.
    /// [`ErrorKind::Disconnected`] when the broker is gone, or when every
    /// subscription named one mailbox and all of them were removed.
    pub fn recv(&mut self) -> Result<Delivery, Error> {
        self.recv_until(Deadline::Never)
    }

    /// The next message within `timeout` ([`ErrorKind::Timeout`] if none).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Delivery, Error> {
        self.recv_until(Deadline::after(timeout))
    }

    /// The next message if one is here ([`ErrorKind::Timeout`] if not).
    pub fn try_recv(&mut self) -> Result<Delivery, Error> {
        self.recv_until(Deadline::Now)
    }

    /// The next message, waiting until `deadline` at the most.
    pub fn recv_until(&mut self, deadline: Deadline) -> Result<Delivery, Error> {
        self.flush_acks();
        if self.to_ack.len() >= ACK_BATCH {
            wire::ack(&mut self.wbuf, &self.to_ack);
            self.to_ack.clear();
            self.write_out()?;
        }
        loop {
            if let Some(d) = self.deliveries.pop_front() {
                if self.subs.get(&d.sub).map(|s| s.ack) == Some(AckPolicy::OnNext) {
                    self.on_next = Some(d.tag);
                }
                return Ok(d);
            }
            if !self.subs.is_empty() && self.subs.values().all(|s| s.exact && s.closed) {
                return Err(Error::new(
                    ErrorKind::Disconnected,
                    "the mailbox was removed (every subscription's mailbox is gone)",
                ));
            }
            let poll_deadline = match deadline {
                Deadline::Never => None,
                Deadline::Now => Some(Instant::now()),
                Deadline::At(t) => Some(t),
            };
            if !self.pump(poll_deadline)? {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "no message before the timeout",
                ));
            }
        }
    }

    /// Acknowledges a message: it is done (sent with the next request or
    /// wait, or by [`flush`](Self::flush)).
    pub fn ack(&mut self, d: &Delivery) {
        if d.tag != 0 {
            if self.on_next == Some(d.tag) {
                self.on_next = None;
            }
            self.to_ack.push(d.tag);
        }
    }

    /// Gives a message back: delivered again (to any receiver) after
    /// `delay`, or after the mailbox's backoff with `None`; past the
    /// mailbox's max-deliver it goes to the dead letters.
    pub fn nack(&mut self, d: &Delivery, delay: Option<Duration>) -> Result<(), Error> {
        if d.tag == 0 {
            return Ok(());
        }
        if self.on_next == Some(d.tag) {
            self.on_next = None;
        }
        let ms = delay.map_or(wire::BY_BACKOFF, |d| {
            d.as_millis().min((wire::BY_BACKOFF - 1) as u128) as u32
        });
        wire::nack(&mut self.wbuf, d.tag, ms);
        self.write_out()
    }

    /// Refuses a message for good: it goes to the dead-letter mailbox
    /// `dead.NAME` at once, with `reason` (at most 1024 bytes kept).
    pub fn reject(&mut self, d: &Delivery, reason: &str) -> Result<(), Error> {
        if d.tag == 0 {
            return Ok(());
        }
        if self.on_next == Some(d.tag) {
            self.on_next = None;
        }
        wire::reject(&mut self.wbuf, d.tag, reason);
        self.write_out()
    }

    /// Sends every acknowledgement held (the last message of an
    /// [`AckPolicy::OnNext`] receiver included).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.flush_acks();
        if !self.to_ack.is_empty() {
            wire::ack(&mut self.wbuf, &self.to_ack);
            self.to_ack.clear();
        }
        if self.broken {
            return Err(Error::disconnected());
        }
        self.write_out()
    }
}

/// How long a wait spins (yielding the CPU) before it sleeps in
/// `poll(2)`, as the client's [`WaitStrategy`] says.
struct Spin(Option<Option<Instant>>);

impl Spin {
    /// Spinning until `deadline` (`Spin`), for the strategy's window
    /// (`Adaptive`, at most until `deadline`), or not at all (`Block`).
    fn new(wait: WaitStrategy, deadline: Option<Instant>) -> Spin {
        Spin(match wait {
            WaitStrategy::Block => None,
            WaitStrategy::Spin => Some(deadline),
            WaitStrategy::Adaptive { spin_for } => {
                let t = Instant::now() + spin_for;
                Some(Some(deadline.map_or(t, |d| d.min(t))))
            }
        })
    }

    /// Whether to spin on now.
    fn now(&self) -> bool {
        match self.0 {
            Some(None) => true,
            Some(Some(t)) => Instant::now() < t,
            None => false,
        }
    }

    /// Sleeps from now on, whatever the time (once woken from a sleep).
    fn stop(&mut self) {
        self.0 = None;
    }
}

/// Wakes a broker that sleeps: one byte on the socket, whose content
/// means nothing (a full socket already holds a wake-up).
fn kick(fd: BorrowedFd<'_>) {
    let _ = sock::send(fd, &[0], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

/// Empties the socket of wake-ups; an error once the broker has gone.
fn take_kicks(fd: BorrowedFd<'_>) -> Result<(), Error> {
    let mut buf = [0u8; 256];
    loop {
        match crate::sys::fd::read(fd, &mut buf) {
            Ok(0) => return Err(Error::disconnected()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                return Err(Error::disconnected())
            }
            Err(e) => return Err(Error::io(e)),
        }
    }
}

/// The socket to the broker, non-blocking, for `poll(2)` or `epoll(7)`:
/// readable when the broker sent something since this client last
/// returned. (With lanes, the broker's frames come through shared memory
/// and the socket is woken for them whenever the client is not spinning
/// on them itself, which is whenever it is not inside one of its calls;
/// so, as with any non-blocking source, receive until
/// [`try_recv`](Client::try_recv) finds nothing, then wait.) Reading or
/// writing it directly would break the client's framing.
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Client {
    /// Sends the acknowledgements held and gives back, uncounted, the
    /// messages received but never handed out.
    fn drop(&mut self) {
        if !self.broken {
            let unseen: Vec<u64> = self
                .deliveries
                .iter()
                .filter(|d| d.tag != 0)
                .map(|d| d.tag)
                .collect();
            wire::release(&mut self.wbuf, &unseen);
            let _ = self.flush();
        }
    }
}

/// A [`Client`] that sends to one mailbox, as a [`MessageSender`](crate::MessageSender)
/// (what [`crate::connect`] gives for `mailbox:NAME` and `pid:PID`).
#[derive(Debug)]
pub struct MailboxSender {
    client: Client,
    to: String,
}

impl MailboxSender {
    /// Sends to mailbox `to` through `client`.
    pub fn new(client: Client, to: &str) -> Result<MailboxSender, Error> {
        name::validate_name(to).map_err(|e| Error::new(ErrorKind::Invalid, e.to_string()))?;
        Ok(MailboxSender {
            client,
            to: to.to_string(),
        })
    }

    /// The client underneath.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl crate::MessageSender for MailboxSender {
    fn send_until(
        &mut self,
        msg: &[u8],
        deadline: Deadline,
    ) -> Result<(), crate::SendTimeoutError<()>> {
        self.client
            .send_message(&self.to, Message::new(msg), deadline)
            .map(|_| ())
            .map_err(|e| e.into_send_error(deadline))
    }
}

/// A [`Client`] subscribed to one pattern, as a [`MessageReceiver`](crate::MessageReceiver) (what
/// [`crate::listen`] gives for `mailbox:PATTERN` and `pid:self`): a
/// message is acknowledged when the next one is asked for
/// ([`AckPolicy::OnNext`]).
#[derive(Debug)]
pub struct MailboxReceiver {
    client: Client,
    max: usize,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    last: Option<Delivery>,
    /// The mailbox [`crate::listen`] made, removed on drop.
    made: Option<String>,
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        if let Some(name) = self.made.take() {
            let _ = self.client.delete(&name);
        }
    }
}

impl MailboxReceiver {
    /// Receives from `pattern` through `client` (options as given, the
    /// ack policy [`AckPolicy::OnNext`]).
    pub fn new(
        mut client: Client,
        pattern: &str,
        opts: &SubscribeOptions,
    ) -> Result<MailboxReceiver, Error> {
        let opts = SubscribeOptions {
            ack: AckPolicy::OnNext,
            ..opts.clone()
        };
        client.subscribe(pattern, &opts)?;
        Ok(MailboxReceiver::wrap(client))
    }

    /// Receives from this process's inbox through `client`.
    pub fn inbox(mut client: Client) -> Result<MailboxReceiver, Error> {
        client.subscribe_inbox(&SubscribeOptions::default())?;
        Ok(MailboxReceiver::wrap(client))
    }

    fn wrap(client: Client) -> MailboxReceiver {
        let max = client.max_message_size();
        MailboxReceiver {
            client,
            max,
            ready: Default::default(),
            last: None,
            made: None,
        }
    }

    /// Removes mailbox `name` when this receiver is dropped (what
    /// [`crate::listen`] made).
    pub(crate) fn remove_on_drop(&mut self, name: &str) {
        self.made = Some(name.to_string());
    }

    /// The last message received, with its type, priority, sender and
    /// delivery count.
    pub fn last(&self) -> Option<&Delivery> {
        self.last.as_ref()
    }

    /// The client underneath.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl crate::MessageReceiver for MailboxReceiver {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), crate::RecvTimeoutError> {
        use crate::RecvTimeoutError as E;
        let r = self.client.recv_until(deadline);
        self.ready.store(
            !self.client.deliveries.is_empty(),
            std::sync::atomic::Ordering::Release,
        );
        match r {
            Ok(d) if d.payload.len() > self.max => {
                let len = d.payload.len();
                let why = format!(
                    "{len} bytes, above the receiver's max_message_size {}",
                    self.max
                );
                let _ = self.client.reject(&d, &why);
                Err(E::Io(
                    crate::error::MessageTooLarge {
                        len: len as u64,
                        max: self.max,
                        unit: crate::Unit::Message,
                    }
                    .into_io(),
                ))
            }
            Ok(mut d) => {
                buf.clear();
                std::mem::swap(buf, &mut d.payload);
                self.last = Some(d);
                Ok(())
            }
            Err(e) => Err(e.into_recv_error()),
        }
    }

    fn max_message_size(&self) -> usize {
        self.max
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = max;
    }

    fn set_wait_strategy(&mut self, strategy: crate::WaitStrategy) {
        self.client.set_wait_strategy(strategy);
    }
}

/// Ready when a message was read ahead or the socket is readable. The
/// socket may hold only a wake-up the broker sent as the client returned
/// from a call with what it was waking it for: a receive then finds
/// nothing (`Empty`), takes the wake-up, and the next select does not
/// report it again.
impl crate::select::Selectable for MailboxReceiver {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::read_ahead(
            self.client.fd.as_fd(),
            self.ready.clone(),
        ))
    }
}
