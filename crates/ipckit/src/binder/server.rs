//! Serving objects on a socket ([`Server`]) and connecting to one
//! ([`Connector`], [`connect`]), with libbinder's RPC session set-up.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::object::Object;
use super::parcel::{Parcel, DEFAULT_MAX_PARCEL};
use super::session::{Peer, Session, Settings, Side};
use super::status::{Error, Result, Status};
use super::wire;
use crate::socket::unix::{UnixAddr, UnixListener};

/// How long a new connection may take to say what it is.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Threads a server runs per client session unless told otherwise.
pub const DEFAULT_THREADS: usize = 4;

/// Who may open a session: given the connecting process's pid, uid and
/// gid, `true` to accept.
pub type ConnectionFilter = dyn Fn(i32, u32, u32) -> bool + Send + Sync;

struct Shared {
    root: Object,
    threads: usize,
    max_parcel: usize,
    filter: Option<Box<ConnectionFilter>>,
    sessions: Mutex<HashMap<Vec<u8>, Arc<Session>>>,
    stopping: AtomicBool,
}

/// One client session of a [`Server`], as [`Server::sessions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The client process.
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// The protocol version spoken.
    pub version: u32,
}

/// Serves a root object on a Unix stream socket to any number of client
/// sessions (libbinder's `RpcServer`). Each session gets up to
/// [`threads`](ServerBuilder::threads) connections, each served by a
/// thread of its own.
///
/// Dropping the server stops accepting, ends every session (their
/// clients' proxies report the objects dead) and removes the socket file.
///
/// # Example
///
/// ```
/// use ipckit::binder::{self, Object, Parcel, Server};
/// use ipckit::socket::unix::UnixAddr;
///
/// let addr: UnixAddr = format!("@ipckit-doc-binder-{}", std::process::id()).parse()?;
/// let echo = Object::from_fn(|_code, data, reply, call| {
///     let s: String = data.read()?;
///     reply.write(&format!("{s} from uid {}", call.uid()))
/// });
/// let _server = Server::builder(echo).bind(&addr)?;
///
/// let remote = binder::connect(&addr)?;
/// let mut data = Parcel::new();
/// data.write("hi")?;
/// let mut reply = remote.call(1, data)?;
/// assert!(reply.read::<String>()?.starts_with("hi from uid"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    shared: Arc<Shared>,
    listener: Arc<UnixListener>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", self.listener.local_addr())
            .field("threads", &self.shared.threads)
            .finish()
    }
}

/// Settings for a [`Server`].
pub struct ServerBuilder {
    root: Object,
    threads: usize,
    max_parcel: usize,
    filter: Option<Box<ConnectionFilter>>,
    mode: Option<u32>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("threads", &self.threads)
            .field("max_parcel", &self.max_parcel)
            .finish()
    }
}

impl ServerBuilder {
    /// Threads per client session, each serving one connection
    /// (`setMaxThreads`; default [`DEFAULT_THREADS`], at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The largest parcel accepted or sent (default 1 MiB).
    pub fn max_parcel(mut self, bytes: usize) -> Self {
        self.max_parcel = bytes;
        self
    }

    /// Accepts a session only if `f(pid, uid, gid)` of the connecting
    /// process says so (libbinder's `setConnectionFilter`).
    pub fn filter(mut self, f: impl Fn(i32, u32, u32) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Box::new(f));
        self
    }

    /// The socket file's mode (default 0600: only this user connects).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Binds `addr` and starts accepting sessions.
    pub fn bind(self, addr: &UnixAddr) -> Result<Server> {
        let listener = UnixListener::bind(addr).map_err(|e| Error::io(e, "cannot serve binder"))?;
        if let Some(m) = self.mode {
            listener
                .set_mode(m)
                .map_err(|e| Error::io(e, "cannot set the socket file's mode"))?;
        }
        let listener = Arc::new(listener);
        let spare =
            crate::sys::socket::Spare::new().map_err(|e| Error::io(e, "cannot serve binder"))?;
        let shared = Arc::new(Shared {
            root: self.root,
            threads: self.threads,
            max_parcel: self.max_parcel,
            filter: self.filter,
            sessions: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        });
        let (s, l) = (shared.clone(), listener.clone());
        let accept = std::thread::Builder::new()
            .name("ipckit-binder-accept".into())
            .spawn(move || accept_loop(&s, &l, spare))
            .map_err(|e| Error::io(e, "cannot start the accept thread"))?;
        Ok(Server {
            shared,
            listener,
            accept: Some(accept),
        })
    }
}

impl Server {
    /// A server of `root`, to configure and [`bind`](ServerBuilder::bind).
    pub fn builder(root: Object) -> ServerBuilder {
        ServerBuilder {
            root,
            threads: DEFAULT_THREADS,
            max_parcel: DEFAULT_MAX_PARCEL,
            filter: None,
            mode: None,
        }
    }

    /// The address served.
    pub fn local_addr(&self) -> &UnixAddr {
        self.listener.local_addr()
    }

    /// The root object served.
    pub fn root(&self) -> &Object {
        &self.shared.root
    }

    /// The client sessions open now.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sessions
            .values()
            .filter(|s| !s.is_dead())
            .map(|s| SessionInfo {
                pid: s.peer.pid,
                uid: s.peer.uid,
                gid: s.peer.gid,
                version: s.settings.version,
            })
            .collect()
    }

    /// Serves until the accept thread stops (it does not, unless the
    /// socket fails): for daemons.
    pub fn join(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Wakes the accept call.
        let _ = crate::sys::socket::shutdown_both(self.listener.as_fd());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let sessions: Vec<_> = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in sessions {
            s.shutdown();
        }
    }
}

fn accept_loop(
    shared: &Arc<Shared>,
    listener: &UnixListener,
    mut spare: crate::sys::socket::Spare,
) {
    // Checked on every turn: at the open-file limit `accept` fails at once
    // (before looking for a connection), also once the listener is shut.
    while !shared.stopping.load(Ordering::Acquire) {
        let fd = match listener.accept_fd() {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if crate::sys::socket::out_of_descriptors(&e) => {
                // Close the waiting connection (the client is told the
                // connection was closed before its session began) rather
                // than leave it in the backlog; pause when even that fails.
                if !listener.shed(&mut spare, drop) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(_) => return,
        };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("ipckit-binder".into())
            .spawn(move || establish(&s, fd));
    }
}

/// Sets up one accepted connection (libbinder's
/// `RpcServer::establishConnection`) and, if it carries calls to this
/// side, serves it.
fn establish(shared: &Arc<Shared>, fd: OwnedFd) {
    let conn = Arc::new(Conn::new(fd));
    let deadline = Some(Instant::now() + SETUP_TIMEOUT);
    let Ok(h) = conn.read_exact::<{ wire::CONNECTION_HEADER_LEN }>(deadline) else {
        return;
    };
    let h = wire::ConnectionHeader::decode(&h);
    let session_id = match h.session_id_len as usize {
        0 => None,
        wire::SESSION_ID_LEN => match conn.read_exact::<{ wire::SESSION_ID_LEN }>(deadline) {
            Ok(id) => Some(id.to_vec()),
            Err(_) => return,
        },
        _ => return,
    };
    let incoming = h.options & wire::OPTION_INCOMING != 0;
    let version = if h.version == wire::PROTOCOL_VERSION_EXPERIMENTAL {
        wire::PROTOCOL_VERSION
    } else {
        h.version.min(wire::PROTOCOL_VERSION)
    };
    let Ok(peer) = Peer::of(conn.fd()) else {
        return;
    };
    let session = match session_id {
        None => {
            if conn
                .write(&[&wire::encode_new_session_response(version)], &[])
                .is_err()
            {
                return;
            }
            if incoming {
                return;
            }
            if h.fd_mode != wire::FD_MODE_NONE && h.fd_mode != wire::FD_MODE_UNIX {
                return;
            }
            if let Some(f) = &shared.filter {
                if !f(peer.pid, peer.uid, peer.gid) {
                    return;
                }
            }
            let mut id = vec![0u8; wire::SESSION_ID_LEN];
            if crate::sys::process::random_bytes(&mut id).is_err() {
                return;
            }
            let settings = Settings {
                version,
                fd_mode: h.fd_mode,
                max_parcel: shared.max_parcel,
                threads: shared.threads,
            };
            let session = Session::new(
                Side::Server,
                id.clone(),
                settings,
                peer,
                Some(shared.root.clone()),
            );
            let weak = Arc::downgrade(shared);
            let key = id.clone();
            session.on_shutdown(move || {
                if let Some(s) = weak.upgrade() {
                    s.sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            });
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if shared.stopping.load(Ordering::Acquire) {
                return;
            }
            sessions.insert(id, session.clone());
            session
        }
        Some(id) => {
            let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = sessions.get(&id).cloned() else {
                return;
            };
            drop(sessions);
            // The id is a secret of the session's process; another
            // user's process holding it is refused all the same.
            if s.peer.uid != peer.uid {
                return;
            }
            let threads = s.settings.threads;
            if !incoming && s.conn_count() > threads {
                return;
            }
            s
        }
    };
    if incoming {
        session.add_pool_conn_greeted(conn, |c| c.write(&[&wire::CONNECTION_INIT], &[]));
        return;
    }
    session.add_conn(&conn);
    match conn.read_exact::<8>(deadline) {
        Ok(init) if init[..4] == wire::CONNECTION_INIT[..4] => session.serve(conn),
        _ => session.shutdown(),
    }
}

/// Settings for connecting to a [`Server`] (or any RPC binder server).
#[derive(Debug, Clone)]
pub struct Connector {
    addr: UnixAddr,
    incoming_threads: usize,
    max_outgoing: usize,
    max_parcel: usize,
    timeout: Duration,
}

impl Connector {
    /// A connector for `addr`.
    pub fn new(addr: &UnixAddr) -> Self {
        Connector {
            addr: addr.clone(),
            incoming_threads: 0,
            max_outgoing: usize::MAX,
            max_parcel: DEFAULT_MAX_PARCEL,
            timeout: SETUP_TIMEOUT,
        }
    }

    /// Threads (and connections) on which the server can call this
    /// process at any time, as opposed to only during this process's own
    /// calls to it (`setMaxIncomingThreads`; default 0).
    pub fn incoming_threads(mut self, n: usize) -> Self {
        self.incoming_threads = n;
        self
    }

    /// At most this many connections for calls to the server
    /// (`setMaxOutgoingConnections`; default: as many as it has threads).
    pub fn max_outgoing(mut self, n: usize) -> Self {
        self.max_outgoing = n.max(1);
        self
    }

    /// The largest parcel accepted or sent (default 1 MiB).
    pub fn max_parcel(mut self, bytes: usize) -> Self {
        self.max_parcel = bytes;
        self
    }

    /// How long setting up the session may take (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn open(&self, header: wire::ConnectionHeader, id: &[u8], init: bool) -> Result<Arc<Conn>> {
        let fd = crate::socket::unix::connect_stream_fd(&self.addr)
            .map_err(|e| Error::io(e, "cannot connect to the binder server"))?;
        let conn = Arc::new(Conn::new(fd));
        let h = header.encode();
        let init_bytes: &[u8] = if init { &wire::CONNECTION_INIT } else { &[] };
        conn.write(&[&h, id, init_bytes], &[])?;
        Ok(conn)
    }

    /// Opens a session and returns the server's root object.
    ///
    /// The session carries file descriptors when the server agrees. A
    /// server that accepts none (libbinder's `RpcServer` unless told
    /// otherwise) closes a connection asking for them: this side then
    /// connects again without, and a parcel with a descriptor is refused
    /// on the session with `FDS_NOT_ALLOWED`.
    ///
    /// A server that hangs up on the session's first call both times
    /// refused this process (a [`ServerBuilder::filter`], libbinder's
    /// connection filter): the error says so, with `PERMISSION_DENIED`.
    pub fn connect(&self) -> Result<Object> {
        let hung_up = match self.connect_with(wire::FD_MODE_UNIX) {
            Err((_, true)) => self.connect_with(wire::FD_MODE_NONE),
            r => return r.map_err(|(e, _)| e),
        };
        hung_up.map_err(|(e, again)| {
            if !again {
                return e;
            }
            Error::new(
                Status::PermissionDenied,
                format!(
                    "the binder server at {} closed every session this process began, at its \
                     first call: it refuses this process (a connection filter on its side), or \
                     it is not an RPC binder server ({e})",
                    self.addr
                ),
            )
        })
    }

    /// [`connect`](Self::connect) asking for `fd_mode`; the error says
    /// whether the server hung up at the first call (as one refusing the
    /// mode does, or refusing this process).
    fn connect_with(&self, fd_mode: u8) -> std::result::Result<Object, (Error, bool)> {
        let deadline = Some(Instant::now() + self.timeout);
        let header = |options, id_len| wire::ConnectionHeader {
            version: wire::PROTOCOL_VERSION,
            options,
            fd_mode,
            session_id_len: id_len,
        };
        let plain = |e| (e, false);
        let first = self.open(header(0, 0), &[], true).map_err(plain)?;
        let r = first
            .read_exact::<{ wire::NEW_SESSION_RESPONSE_LEN }>(deadline)
            .map_err(|e| plain(self.closed_early(e)))?;
        let version = wire::decode_new_session_response(&r);
        if version > wire::PROTOCOL_VERSION {
            return Err(plain(Error::bad(format!(
                "the server chose protocol version {version}, newer than this side's {}",
                wire::PROTOCOL_VERSION
            ))));
        }
        let peer = Peer::of(first.fd()).map_err(plain)?;
        let settings = Settings {
            version,
            fd_mode,
            max_parcel: self.max_parcel,
            threads: self.incoming_threads,
        };
        let session = Session::new(Side::Client, Vec::new(), settings, peer, None);
        session.add_pool_conn(first);
        if let Err(e) = session.hello(self.timeout) {
            session.shutdown();
            let hung_up = e.is_dead();
            return Err((e, hung_up));
        }
        let setup = || -> Result<Object> {
            let threads = session
                .call_special(wire::SPECIAL_GET_MAX_THREADS, self.timeout)?
                .read_i32()?;
            let threads = usize::try_from(threads)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::bad(format!("the server offers {threads} threads")))?;
            let id = session
                .call_special(wire::SPECIAL_GET_SESSION_ID, self.timeout)?
                .read_byte_array()?
                .filter(|id| id.len() == wire::SESSION_ID_LEN)
                .ok_or_else(|| Error::bad("the server sent a malformed session id"))?;
            *session.id.lock().unwrap_or_else(|p| p.into_inner()) = id.clone();
            for _ in 1..threads.min(self.max_outgoing) {
                let c = self.open(header(0, wire::SESSION_ID_LEN as u16), &id, true)?;
                session.add_pool_conn(c);
            }
            for _ in 0..self.incoming_threads {
                let h = header(wire::OPTION_INCOMING, wire::SESSION_ID_LEN as u16);
                let c = self.open(h, &id, false)?;
                let init = c.read_exact::<8>(deadline)?;
                if init[..4] != wire::CONNECTION_INIT[..4] {
                    return Err(Error::bad(
                        "the server did not accept an incoming connection",
                    ));
                }
                session.add_conn(&c);
                let s = session.clone();
                std::thread::Builder::new()
                    .name("ipckit-binder".into())
                    .spawn(move || s.serve(c))
                    .map_err(|e| Error::io(e, "cannot start an incoming thread"))?;
            }
            session
                .call_special(wire::SPECIAL_GET_ROOT, self.timeout)?
                .read_object()?
                .ok_or_else(|| Error::new(Status::NameNotFound, "the server has no root object"))
        };
        let root = setup();
        if root.is_err() {
            session.shutdown();
        }
        root.map_err(|e| plain(self.closed_early(e)))
    }

    /// A dead peer while the session is set up, in words that say why a
    /// server does that.
    fn closed_early(&self, e: Error) -> Error {
        if !e.is_dead() {
            return e;
        }
        Error::dead(format!(
            "the binder server at {} closed a connection before the session was set up: it is \
             out of file descriptors, stopping, or refuses this process ({e})",
            self.addr
        ))
    }
}

/// Connects to the binder server at `addr` and returns its root object
/// ([`Connector`] with its defaults).
pub fn connect(addr: &UnixAddr) -> Result<Object> {
    Connector::new(addr).connect()
}

impl Session {
    /// A transaction to address 0 (`RPC_SPECIAL_TRANSACT_*`).
    pub(crate) fn call_special(self: &Arc<Self>, code: u32, timeout: Duration) -> Result<Parcel> {
        self.transact_raw(0, code, Parcel::new(), Some(timeout))
    }
}
