//! The broker: one thread, an `epoll` loop (mio) over a Unix socket.
//!
//! Each turn reads every readable connection to the end, hands each whole
//! frame to the state machine ([`super::state`]), runs the timers that are
//! due, and writes what the turn produced with one `send(2)` per
//! connection: many messages per system call when traffic is heavy, one
//! message at once when it is light.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{UnixListener as MioListener, UnixStream as MioStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;

use super::state::{ConnId, Cred, State, OUT_HIGH};
use super::store::{self, Fsync, Store, StoreReport};
use super::wire::{self, Code};
use crate::ring::lanes::Lanes;
use crate::socket::unix::{UnixAddr, UnixListener};
use crate::sys::socket as sock;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Bytes read per `read(2)`.
const READ_CHUNK: usize = 256 << 10;
/// Spinning with every client on lanes: turns per `epoll_wait(2)`.
const LANE_TURNS: u32 = 8;

/// The largest message a broker accepts unless told otherwise (8 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 8 << 20;
/// Connections a broker serves at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long the broker polls without sleeping after its last event
/// ([`BrokerBuilder::spin`]).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Bytes each way in a client's shared-memory lanes
/// ([`BrokerBuilder::lanes`]).
pub const LANE_CAPACITY: usize = 256 << 10;

/// Where clients and brokers meet unless told otherwise: `$IPCKIT_BROKER`
/// if set; for root `/run/ipckit/broker.sock`; else
/// `$XDG_RUNTIME_DIR/ipckit/broker.sock`, or `/tmp/ipckit-UID/broker.sock`
/// without a runtime directory.
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("IPCKIT_BROKER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let uid = crate::sys::process::euid();
    if uid == 0 {
        return PathBuf::from("/run/ipckit/broker.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => Path::new(&dir).join("ipckit/broker.sock"),
        None => PathBuf::from(format!("/tmp/ipckit-{uid}/broker.sock")),
    }
}

/// Where `ipc broker` keeps durable mailboxes unless told otherwise:
/// `$IPCKIT_STORE` if set; for root `/var/lib/ipckit`; else
/// `$XDG_STATE_HOME/ipckit`, or `~/.local/state/ipckit`.
pub fn default_store() -> PathBuf {
    let var = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty());
    if let Some(p) = var("IPCKIT_STORE") {
        return PathBuf::from(p);
    }
    if crate::sys::process::euid() == 0 {
        return PathBuf::from("/var/lib/ipckit");
    }
    match (var("XDG_STATE_HOME"), var("HOME")) {
        (Some(dir), _) => Path::new(&dir).join("ipckit"),
        (None, Some(home)) => Path::new(&home).join(".local/state/ipckit"),
        (None, None) => PathBuf::from(format!("/tmp/ipckit-{}/store", crate::sys::process::euid())),
    }
}

/// Makes the directory of the default socket if it is missing: mode 0700
/// (0755 for root's `/run/ipckit`, which every user's clients reach). An
/// existing one must be a directory of this user, not a symbolic link.
fn make_socket_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() && path != default_socket() {
        return Ok(());
    }
    let me = crate::sys::process::euid();
    let mode = if me == 0 { 0o755 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() || meta.uid() != me {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is not a directory of this user (uid {me}): not putting the broker's \
                         socket there",
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot make {}: {e}", dir.display()),
        )),
    }
}

/// How to make a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    socket: Option<PathBuf>,
    max_message: usize,
    max_connections: usize,
    socket_mode: u32,
    store: Option<PathBuf>,
    fsync: Fsync,
    spin: Duration,
    lanes: bool,
    #[cfg(feature = "nats")]
    nats: Option<super::bridge::Settings>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        BrokerBuilder {
            socket: None,
            max_message: DEFAULT_MAX_MESSAGE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            socket_mode: 0o666,
            store: None,
            fsync: Fsync::default(),
            spin: DEFAULT_SPIN,
            lanes: true,
            #[cfg(feature = "nats")]
            nats: None,
        }
    }
}

impl BrokerBuilder {
    /// The socket path (default: [`default_socket`]).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// The largest message accepted (default [`DEFAULT_MAX_MESSAGE`]);
    /// a larger send is refused before the broker stores any of it.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message = max.clamp(1, u32::MAX as usize - wire::OVERHEAD);
        self
    }

    /// Connections served at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]); more are closed at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The socket file's mode (default 0666: every local user may connect,
    /// and each mailbox's own mode says what they may do; the directory's
    /// mode still applies).
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode & 0o777;
        self
    }

    /// Keeps durable mailboxes in directory `dir` (made 0700 if missing;
    /// one broker at a time), and loads those it holds when the broker
    /// starts ([`Broker::store_report`] tells what was found). Without a
    /// store, creating a durable mailbox fails with
    /// [`ErrorKind::Storage`](super::ErrorKind::Storage).
    pub fn store(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store = Some(dir.into());
        self
    }

    /// When durable mailboxes' writes are forced to the disk (default
    /// every 100 ms; see [`Fsync`]).
    pub fn fsync(mut self, policy: Fsync) -> Self {
        self.fsync = policy;
        self
    }

    /// How long the broker keeps polling its sockets without sleeping
    /// after its last event (default [`DEFAULT_SPIN`]; zero: it sleeps in
    /// `epoll_wait(2)` as soon as it has nothing to do). A busy broker
    /// then finds the next request without a scheduler wake-up, which
    /// is most of a round trip's time on many machines; an idle one
    /// spends at most this much CPU after each burst. `ipc bench
    /// mailbox` shows what it buys on yours.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin.min(Duration::from_secs(1));
        self
    }

    /// Whether clients of this broker (ipckit's [`Client`](super::Client),
    /// which asks) exchange their frames through shared memory (default
    /// true). Each such client then gets a sealed memfd of two byte rings
    /// of [`LANE_CAPACITY`] bytes, one each way, and its socket carries
    /// only wake-ups and the end of the connection: a busy client and a
    /// busy broker pass messages with no system call, and one that sleeps
    /// is woken by a one-byte `send(2)` from the other. False keeps every
    /// byte on the socket (less memory per client). The broker trusts
    /// nothing a client writes there (see
    /// [how the bytes travel](super#how-the-bytes-travel)).
    pub fn lanes(mut self, lanes: bool) -> Self {
        self.lanes = lanes;
        self
    }

    /// Bridges the mailboxes `patterns` names (`orders.>`, `jobs`) to the
    /// NATS server at `url` (`nats://host:4222`), so that brokers on
    /// other machines connected to it exchange their messages with this
    /// one: a durable mailbox's through JetStream, the others' as NATS
    /// requests. See the [bridge's docs](super#past-one-machine-nats)
    /// for what goes where. The bridge runs in the broker's process,
    /// from [`Broker::run`]; it connects in the background and says what
    /// goes wrong on the standard error (`ipckit nats bridge: …`).
    ///
    /// Fails at once if a pattern is not valid.
    ///
    /// ```no_run
    /// use ipckit::mailbox::Broker;
    ///
    /// // On each machine; a receiver of `jobs` on any of them gets what a
    /// // sender on any of them sends.
    /// Broker::builder()
    ///     .store("/var/lib/ipckit")
    ///     .nats("nats://hub.example:4222", &["jobs", "orders.>"])?
    ///     .bind()?
    ///     .run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats(mut self, url: &str, patterns: &[&str]) -> io::Result<Self> {
        self.nats = Some(super::bridge::Settings::new(url, patterns)?);
        Ok(self)
    }

    /// Binds the socket (replacing a stale socket file of this user, never
    /// a live broker's) and makes the broker, ready to [`Broker::run`].
    pub fn bind(self) -> io::Result<Broker> {
        let path = self.socket.clone().unwrap_or_else(default_socket);
        make_socket_dir(&path)?;
        let bound = UnixListener::bind(&UnixAddr::Path(path.clone())).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    e.kind(),
                    format!("{e} (is a broker running already? `ipc mailbox ls` asks it)"),
                )
            } else {
                e
            }
        })?;
        bound.set_mode(self.socket_mode)?;
        let starting = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot start the broker at {}: {e}", path.display()),
            )
        };
        let fd: OwnedFd = bound.as_fd().try_clone_to_owned().map_err(starting)?;
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let mut listener = MioListener::from_std(std_listener);
        let poll = Poll::new().map_err(starting)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(starting)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(starting)?);
        let spare = crate::sys::socket::Spare::new().map_err(starting)?;
        // The socket first: a second broker on it is told so, whatever its
        // store.
        let mut state = State::new(self.max_message);
        let report = match &self.store {
            Some(dir) => {
                let now = (state.now, state.wall);
                let seg = store::SEGMENT_BYTES;
                let (store, found, report) =
                    Store::open(dir, self.fsync, self.max_message, seg, now.0, now.1)?;
                state.use_store(store, found);
                Some(report)
            }
            None => None,
        };
        #[cfg(feature = "nats")]
        let nats = match self.nats {
            Some(s) => Some((s, super::bridge::broker_id(self.store.as_deref())?)),
            None => None,
        };
        Ok(Broker {
            #[cfg(feature = "nats")]
            nats,
            poll,
            listener,
            _bound: bound,
            path,
            state,
            report,
            conns: FxHashMap::default(),
            next: 2,
            max_connections: self.max_connections,
            spare,
            spin: self.spin,
            lanes: self.lanes,
            laned: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        })
    }

    /// Binds and runs the broker on a thread of this process (an embedded
    /// broker); it stops when the handle is dropped.
    pub fn spawn(self) -> io::Result<EmbeddedBroker> {
        let broker = self.bind()?;
        let stopper = broker.stopper();
        let path = broker.path.clone();
        let thread = std::thread::Builder::new()
            .name("ipckit-broker".into())
            .spawn(move || broker.run())?;
        Ok(EmbeddedBroker {
            stopper,
            path,
            thread: Some(thread),
        })
    }
}

/// A connection's socket and unread input.
#[derive(Debug)]
struct Io {
    stream: MioStream,
    rbuf: Vec<u8>,
    /// Stopped reading: too many of its sends wait for room.
    paused: bool,
    /// Its output was above the high mark at the last write.
    full: bool,
    closing: bool,
    /// Lanes made for it and their memfd, to be sent with the first write.
    lanes_offered: Option<(Lanes, OwnedFd)>,
    /// Its frames go through these lanes (the socket carries wake-ups and
    /// the end).
    lanes: Option<Lanes>,
    /// Output waits for room in the lanes (the flag is raised).
    waits_for_room: bool,
    /// The socket ended; closed once the lanes are read to the end.
    ended: bool,
}

/// A mailbox broker (see the [module docs](super)).
///
/// ```no_run
/// use ipckit::mailbox::Broker;
///
/// let broker = Broker::builder().socket("/tmp/my-broker.sock").bind()?;
/// broker.run()?; // until Stopper::stop
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Broker {
    /// The NATS bridge to start, and this broker's id on NATS.
    #[cfg(feature = "nats")]
    nats: Option<(super::bridge::Settings, String)>,
    poll: Poll,
    listener: MioListener,
    /// Removes the socket file when the broker goes.
    _bound: UnixListener,
    path: PathBuf,
    state: State,
    report: Option<StoreReport>,
    conns: FxHashMap<ConnId, Io>,
    next: ConnId,
    max_connections: usize,
    /// A descriptor in reserve, to close a waiting connection at the
    /// open-file limit rather than leave it in the backlog.
    spare: crate::sys::socket::Spare,
    spin: Duration,
    /// Clients that ask get lanes.
    lanes: bool,
    /// The connections on lanes.
    laned: Vec<ConnId>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

/// Stops a running broker from another thread (or a signal handler's
/// thread).
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the broker to stop; [`Broker::run`] returns soon after.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// A broker running on a thread of this process
/// ([`BrokerBuilder::spawn`]); stopped and joined on drop.
#[derive(Debug)]
pub struct EmbeddedBroker {
    stopper: Stopper,
    path: PathBuf,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EmbeddedBroker {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stops the broker and waits for its thread; its error, if it failed.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.stopper.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the broker thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

impl Broker {
    /// A builder with the defaults.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// What the store held when the broker started (`None` without a
    /// store).
    pub fn store_report(&self) -> Option<&StoreReport> {
        self.report.as_ref()
    }

    /// A handle that stops [`run`](Self::run) from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Serves clients until stopped; the socket file is removed when the
    /// broker is dropped. Errors of single connections close those
    /// connections; an error returned here is the loop's own, or the
    /// store's: when a durable mailbox's log cannot be written the broker
    /// stops at once, before confirming any send it could not store (its
    /// clients see it gone and retry against the next).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        #[cfg(feature = "nats")]
        if let Some((settings, id)) = self.nats.take() {
            // Its clients connect now and are served once the loop runs.
            let path = self.path.clone();
            std::thread::Builder::new()
                .name("ipckit-bridge-start".into())
                .spawn(move || {
                    if let Err(e) = super::bridge::start(settings, path, id) {
                        eprintln!("ipckit nats bridge: cannot start: {e}");
                    }
                })?;
        }
        // Until when the loop polls without sleeping (see `spin`).
        let mut spin_until = Instant::now();
        let mut quiet = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let next = self.state.next_deadline();
            let spinning = now < spin_until;
            let mut timeout = if spinning {
                Some(Duration::ZERO)
            } else {
                next.map(|at| at.saturating_duration_since(now))
            };
            // About to sleep: clients on lanes must kick the socket from
            // now on; what came before the flags went up is looked at
            // first.
            let sleeping = timeout != Some(Duration::ZERO) && !self.laned.is_empty();
            if sleeping && self.lanes_sleep(true) {
                timeout = Some(Duration::ZERO);
            }
            // Spinning while every client is on lanes, the sockets (new
            // connections, ends) are asked only every few turns: the lanes
            // need no system call to look at.
            quiet = quiet.wrapping_add(1);
            if spinning && self.laned.len() == self.conns.len() && !quiet.is_multiple_of(LANE_TURNS)
            {
                events.clear();
            } else if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if sleeping {
                self.lanes_sleep(false);
            }
            let lanes_ready = self.lanes_ready();
            if events.is_empty()
                && !lanes_ready
                && spinning
                && next.is_none_or(|at| Instant::now() < at)
            {
                // Nothing happened and no timer is due: poll again, after
                // letting a client that shares this CPU run.
                std::thread::yield_now();
                continue;
            }
            self.state.now = Instant::now();
            if !events.is_empty() || lanes_ready {
                spin_until = self.state.now + self.spin;
            }
            self.state.wall = store::wall_ms();
            if lanes_ready {
                self.serve_lanes();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        let id = t as ConnId;
                        if ev.is_writable() {
                            // Written at the turn's end, after the store.
                            self.state.mark(id);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id);
                        }
                    }
                }
            }
            self.state.fire_timers();
            self.turn_end()?;
        }
        self.state.commit()?;
        self.state.sync_all()
    }

    /// Resumes paused readers, then writes every connection's output.
    /// Closing a connection can give its messages to others, and settling
    /// parked sends can let a connection be read again: repeated until
    /// nothing is left to do.
    fn turn_end(&mut self) -> io::Result<()> {
        loop {
            // A closing connection is sent what it has left: stored first.
            self.state.commit()?;
            let closing: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.closing)
                .map(|(&id, _)| id)
                .collect();
            for id in &closing {
                self.close(*id);
            }
            let resumed = std::mem::take(&mut self.state.resumed);
            for &id in &resumed {
                if self.conns.get(&id).is_some_and(|c| c.paused) && !self.state.blocked(id) {
                    self.conns.get_mut(&id).expect("checked").paused = false;
                    self.parse(id);
                    self.read(id);
                }
            }
            // What this turn stored is written before anything is
            // confirmed.
            self.state.commit()?;
            let dirty = self.state.take_dirty();
            for &id in &dirty {
                self.flush(id);
            }
            if closing.is_empty() && resumed.is_empty() && dirty.is_empty() {
                return Ok(());
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors: the waiting client is closed (it is
                // told the broker closed the connection before welcoming
                // it), not left in the backlog, where it would wait until
                // another client came.
                Err(e) if crate::sys::socket::out_of_descriptors(&e) => {
                    if self.spare.shed(self.listener.as_fd(), drop) {
                        continue;
                    }
                    return;
                }
                // Out of memory: the connection waits in the backlog.
                Err(_) => return,
            };
            if self.conns.len() >= self.max_connections {
                drop(stream);
                continue;
            }
            let Ok(c) = sock::peer_cred(stream.as_fd()) else {
                continue;
            };
            let id = self.next;
            self.next += 1;
            let token = Token(id as usize);
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.state.connect(
                id,
                Cred {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                },
            );
            self.conns.insert(
                id,
                Io {
                    stream,
                    rbuf: Vec::new(),
                    paused: false,
                    full: false,
                    closing: false,
                    lanes_offered: None,
                    lanes: None,
                    waits_for_room: false,
                    ended: false,
                },
            );
        }
    }

    /// Reads everything there is (edge-triggered), handling whole frames.
    fn read(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|io| io.lanes.is_some()) {
            self.take_kicks(id);
            return self.read_lanes(id);
        }
        loop {
            let Some(io) = self.conns.get_mut(&id) else {
                return;
            };
            if io.paused || io.closing {
                return;
            }
            match crate::sys::fd::read_spare(io.stream.as_fd(), &mut io.rbuf, READ_CHUNK) {
                Ok(0) => {
                    io.closing = true;
                    return;
                }
                Ok(_) => self.parse(id),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    io.closing = true;
                    return;
                }
            }
        }
    }

    /// A connection on lanes whose socket is readable: takes the wake-ups
    /// (or the end) from it.
    fn take_kicks(&mut self, id: ConnId) {
        let Some(io) = self.conns.get_mut(&id) else {
            return;
        };
        if io.paused || io.closing {
            return;
        }
        let mut kicks = [0u8; 64];
        loop {
            match crate::sys::fd::read(io.stream.as_fd(), &mut kicks) {
                Ok(0) => {
                    io.ended = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    io.ended = true;
                    break;
                }
            }
        }
        // A kick may also say that room came for waiting output.
        if io.waits_for_room {
            self.state.mark(id);
        }
    }

    /// A connection on lanes: reads them to the end, handling whole
    /// frames. A socket that ended is closed once the lanes hold nothing
    /// more: what the client wrote before it went is served, as on a
    /// socket.
    fn read_lanes(&mut self, id: ConnId) {
        loop {
            let Some(io) = self.conns.get_mut(&id) else {
                return;
            };
            if io.paused || io.closing {
                return;
            }
            let lanes = io.lanes.as_mut().expect("a connection on lanes");
            match lanes.read_into(&mut io.rbuf, READ_CHUNK) {
                Ok(0) => {
                    io.closing = io.ended;
                    return;
                }
                Ok(_) => {
                    if lanes.writer_waits() {
                        kick(&io.stream);
                    }
                    self.parse(id);
                }
                Err(_) => {
                    io.closing = true;
                    return;
                }
            }
        }
    }

    /// Whether a connection on lanes has input, or room for output that
    /// waits (or broke its lanes, to be closed).
    fn lanes_ready(&self) -> bool {
        self.laned.iter().any(|id| {
            self.conns.get(id).is_some_and(|io| {
                let Some(l) = &io.lanes else { return false };
                !io.paused && l.readable().unwrap_or(true)
                    || io.waits_for_room && l.writable().unwrap_or(true)
            })
        })
    }

    /// Reads the lanes that have input and marks for writing those with
    /// room for waiting output.
    fn serve_lanes(&mut self) {
        for k in 0..self.laned.len() {
            let id = self.laned[k];
            let Some(io) = self.conns.get(&id) else {
                continue;
            };
            let Some(l) = &io.lanes else { continue };
            if io.waits_for_room && l.writable().unwrap_or(true) {
                self.state.mark(id);
            }
            if l.readable().unwrap_or(true) {
                self.read_lanes(id);
            }
        }
    }

    /// Raises (or lowers) every lane's "kick me" flag; raised, whether
    /// something came meanwhile (then the loop must not sleep).
    fn lanes_sleep(&mut self, on: bool) -> bool {
        let mut ready = false;
        for id in &self.laned {
            if let Some(l) = self.conns.get(id).and_then(|io| io.lanes.as_ref()) {
                l.sleep(on);
            }
        }
        if on {
            ready = self.lanes_ready();
        }
        ready
    }

    /// Handles the whole frames in a connection's input.
    fn parse(&mut self, id: ConnId) {
        let max = self.state.max_frame();
        let Some(io) = self.conns.get_mut(&id) else {
            return;
        };
        let mut at = 0;
        let mut err = None;
        while !io.closing {
            if self.state.blocked(id) {
                io.paused = true;
                break;
            }
            match wire::frame_len(&io.rbuf[at..], max) {
                Ok(Some(n)) => {
                    if let Err(e) = self.state.handle(id, &io.rbuf[at..at + n]) {
                        err = Some(e);
                        break;
                    }
                    at += n;
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        io.rbuf.drain(..at);
        if let Some(e) = err {
            io.closing = true;
            io.rbuf = Vec::new();
            if let Some(c) = self.state.conn_mut(id) {
                wire::fail(&mut c.out, 0, Code::Protocol, &e.to_string());
            }
            self.state.dirty.push(id);
            return;
        }
        if self.state.take_lanes_wanted(id) && self.lanes && io.lanes.is_none() {
            // Offered with the WELCOME, the first write; a client that
            // cannot have them (no memory) stays on the socket.
            io.lanes_offered = Lanes::create(LANE_CAPACITY).ok();
        }
    }

    /// Writes a connection's output, as much as the socket (or its lanes)
    /// takes.
    fn flush(&mut self, id: ConnId) {
        let Some(io) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(c) = self.state.conn_mut(id) else {
            return;
        };
        let was_full = io.full || c.out.len() >= OUT_HIGH;
        let mut sent = 0;
        if let Some((offer, memfd)) = io.lanes_offered.take() {
            // The WELCOME goes on the socket with the lanes' memfd; every
            // later byte through them. Only a short first write is sure
            // to go whole (a client that sent more before its welcome
            // stays on the socket).
            let all = c.out.len();
            if all <= 4096 {
                let bufs = [io::IoSlice::new(&c.out)];
                match sock::sendmsg(
                    io.stream.as_fd(),
                    &bufs,
                    &[memfd.as_fd()],
                    libc::MSG_DONTWAIT,
                ) {
                    Ok(n) if n == all => {
                        sent = all;
                        io.lanes = Some(offer);
                        self.laned.push(id);
                    }
                    _ => io.closing = true,
                }
            }
        } else if let Some(lanes) = io.lanes.as_mut() {
            loop {
                match lanes.write(&c.out[sent..]) {
                    Ok(n) => sent += n,
                    Err(_) => {
                        io.closing = true;
                        break;
                    }
                }
                if sent == c.out.len() {
                    if io.waits_for_room {
                        io.waits_for_room = false;
                        lanes.wait_for_room(false);
                    }
                    break;
                }
                // Full: the client kicks when it makes room.
                if !io.waits_for_room {
                    io.waits_for_room = true;
                    lanes.wait_for_room(true);
                    continue;
                }
                break;
            }
            if sent > 0 && lanes.reader_sleeps() {
                kick(&io.stream);
            }
        }
        while io.lanes.is_none() && !io.closing && sent < c.out.len() {
            match sock::send(io.stream.as_fd(), &c.out[sent..], libc::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    io.closing = true;
                    break;
                }
            }
        }
        self.state.sent(id, sent);
        let left = self.state.conn(id).map_or(0, |c| c.out.len());
        io.full = left >= OUT_HIGH;
        if was_full && !io.full {
            self.state.drained(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        self.laned.retain(|&l| l != id);
        if let Some(mut io) = self.conns.remove(&id) {
            // What could still be written (a protocol error's reason).
            if let Some(c) = self.state.conn(id) {
                if let Some(lanes) = io.lanes.as_mut() {
                    if lanes.write(&c.out).is_ok_and(|n| n > 0) {
                        kick(&io.stream);
                    }
                } else {
                    let _ = sock::send(io.stream.as_fd(), &c.out, libc::MSG_NOSIGNAL);
                }
            }
            let _ = self.poll.registry().deregister(&mut io.stream);
        }
        self.state.disconnect(id);
    }
}

/// Wakes a client that sleeps on its lanes: one byte on its socket,
/// whose content means nothing. A full socket already holds a wake-up; a
/// broken one is found by the loop.
fn kick(stream: &MioStream) {
    let _ = sock::send(stream.as_fd(), &[0], libc::MSG_DONTWAIT);
}
