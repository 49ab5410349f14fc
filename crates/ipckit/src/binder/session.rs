//! A session: the connections between two processes, the objects each
//! has sent the other, and the transactions between them
//! (libbinder's `RpcSession` and `RpcState`).
//!
//! # Connections and threads
//!
//! A client opens the session's first connection, then as many more as
//! the server has threads for (`GET_MAX_THREADS`), and optionally some
//! *incoming* ones on which the server calls it. Each connection is
//! served by one thread on the side that receives calls on it; the other
//! side takes a free one for each call it makes (the *pool*). A thread
//! serving a call keeps its connection: a call it makes to the caller's
//! process goes back on that connection, where the caller's thread, which
//! is waiting for its reply, runs it (a nested call).
//!
//! # Reference counts
//!
//! As libbinder counts them: each side records, per address, how many
//! times it sent the object (`times_sent`: it holds the object while
//! that is above zero) and how many times it received it (`times_recd`:
//! given back with a `DEC_STRONG` message when its proxy goes, or at once
//! for its own objects coming back). A transaction's target counts as
//! sent and is given back after the call. A session whose last object is
//! gone ends.

use std::cell::RefCell;
use std::collections::{BTreeMap, BinaryHeap};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::conn::{Conn, Message};
use super::object::{Call, Kind, LocalInner, Object, ProxyInner, FLAG_ONEWAY};
use super::parcel::{Parcel, MAX_FDS};
use super::status::{Error, Result, Status};
use super::wire;

/// More one-way calls than this waiting for an earlier one end the
/// session (libbinder's `kArbitraryOnewayCallTerminateLevel`).
const MAX_ONEWAY_BACKLOG: usize = 10_000;

/// More objects than this in one session are refused (libbinder's limit).
const MAX_NODES: usize = 100_000;

/// Which end of the session this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// The process at the other end, from the first connection's socket.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pidfd: Option<OwnedFd>,
}

impl Peer {
    pub(crate) fn of(fd: std::os::fd::BorrowedFd<'_>) -> Result<Peer> {
        let c = crate::sys::socket::peer_cred(fd)
            .map_err(|e| Error::io(e, "cannot read the peer's credentials"))?;
        let pidfd = crate::sys::socket::peer_pidfd(fd)
            .or_else(|_| crate::sys::process::pidfd_open(c.pid))
            .ok();
        Ok(Peer {
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
            pidfd,
        })
    }
}

/// Settings fixed when the session is made.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) version: u32,
    pub(crate) fd_mode: u8,
    pub(crate) max_parcel: usize,
    /// Threads this side runs for calls from the peer (`GET_MAX_THREADS`).
    pub(crate) threads: usize,
}

enum NodeRef {
    Local(Weak<LocalInner>),
    Remote(Weak<ProxyInner>),
    /// A proxy of a third process's object, sent to this session's peer
    /// as a forwarded reference (ipckit's extension, `forward.rs`): held
    /// (in `sent_ref`) until the peer has resolved it.
    Forward(Weak<ProxyInner>),
}

/// A one-way call waiting for the ones before it.
struct Todo {
    async_number: u64,
    code: u32,
    flags: u32,
    data: Vec<u8>,
    objects: Vec<u32>,
    fds: Vec<OwnedFd>,
}

impl PartialEq for Todo {
    fn eq(&self, o: &Self) -> bool {
        self.async_number == o.async_number
    }
}
impl Eq for Todo {}
impl PartialOrd for Todo {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Todo {
    /// Lowest number first out of the (max-)heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.async_number.cmp(&self.async_number)
    }
}

struct Node {
    r: NodeRef,
    /// Held while the peer has references it was sent.
    sent_ref: Option<Object>,
    times_sent: u64,
    times_recd: u64,
    /// Local: the next one-way number to run; remote: the next to send.
    async_number: u64,
    todo: BinaryHeap<Todo>,
}

impl Node {
    fn new(r: NodeRef) -> Node {
        Node {
            r,
            sent_ref: None,
            times_sent: 0,
            times_recd: 0,
            async_number: 0,
            todo: BinaryHeap::new(),
        }
    }
}

#[derive(Default)]
struct Nodes {
    /// Every object of the session by address. Ordered maps: addresses
    /// come from the peer, and a few comparisons cost less than hashing.
    by_addr: BTreeMap<u64, Node>,
    /// Local objects' and forwarded proxies' addresses, by pointer.
    local: BTreeMap<usize, u64>,
    next_id: u32,
    terminated: bool,
}

/// What to drop or do once the node lock is released.
#[derive(Default)]
#[must_use]
struct Released {
    held: Option<Object>,
    end_session: bool,
}

impl Nodes {
    /// libbinder's `tryEraseNode`.
    fn try_erase(&mut self, addr: u64) -> Released {
        let mut out = Released::default();
        let Some(node) = self.by_addr.get_mut(&addr) else {
            return out;
        };
        if node.times_sent == 0 {
            out.held = node.sent_ref.take();
            if node.times_recd == 0 && node.todo.is_empty() {
                match &node.r {
                    NodeRef::Local(w) => {
                        self.local.remove(&(w.as_ptr() as usize));
                    }
                    NodeRef::Forward(w) => {
                        self.local.remove(&(w.as_ptr() as usize));
                    }
                    NodeRef::Remote(_) => {}
                }
                self.by_addr.remove(&addr);
                out.end_session = self.by_addr.is_empty();
            }
        }
        out
    }
}

/// The connections this side calls on.
#[derive(Default)]
struct Pool {
    free: Vec<Arc<Conn>>,
    total: usize,
    /// Threads waiting in `acquire`: a connection coming back wakes one
    /// only if there are (a wake-up is a system call).
    waiting: usize,
}

thread_local! {
    /// The connections this thread is serving calls on, innermost last,
    /// with their session: a call back into that session goes there.
    static SERVING: RefCell<Vec<(usize, Arc<Conn>)>> = const { RefCell::new(Vec::new()) };
}

/// A connection held for one call.
struct Lease<'a> {
    session: &'a Session,
    conn: Arc<Conn>,
    pooled: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.pooled {
            let mut pool = self.session.lock_pool();
            pool.free.push(self.conn.clone());
            let waiting = pool.waiting > 0;
            drop(pool);
            if waiting {
                self.session.pool_cv.notify_one();
            }
        }
    }
}

type ShutdownHook = Box<dyn FnOnce() + Send>;

/// A session (see the module docs).
pub(crate) struct Session {
    pub(crate) side: Side,
    pub(crate) id: Mutex<Vec<u8>>,
    pub(crate) settings: Settings,
    pub(crate) peer: Peer,
    /// The object handed out for `GET_ROOT` (server side).
    root: Option<Object>,
    pool: Mutex<Pool>,
    pool_cv: Condvar,
    /// Every connection, to shut them all down.
    conns: Mutex<Vec<Arc<Conn>>>,
    nodes: Mutex<Nodes>,
    dead: AtomicBool,
    /// `DEC_STRONG`s waiting for a connection to go on.
    pending_dec: Mutex<Vec<(u64, u32)>>,
    watched: AtomicBool,
    on_shutdown: Mutex<Vec<ShutdownHook>>,
    /// The peer is ipckit (it said hello): it takes forwarded references.
    ext: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("peer_pid", &self.peer.pid)
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(
        side: Side,
        id: Vec<u8>,
        settings: Settings,
        peer: Peer,
        root: Option<Object>,
    ) -> Arc<Session> {
        Arc::new(Session {
            side,
            id: Mutex::new(id),
            settings,
            peer,
            root,
            pool: Mutex::new(Pool::default()),
            pool_cv: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            nodes: Mutex::new(Nodes::default()),
            dead: AtomicBool::new(false),
            pending_dec: Mutex::new(Vec::new()),
            watched: AtomicBool::new(false),
            on_shutdown: Mutex::new(Vec::new()),
            ext: AtomicBool::new(false),
        })
    }

    fn lock_nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn peer_pid(&self) -> i32 {
        self.peer.pid
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Whether the peer is ipckit (said hello), so takes forwarded
    /// references and answers ipckit's special transactions.
    pub(crate) fn is_ext(&self) -> bool {
        self.ext.load(Ordering::Acquire)
    }

    pub(crate) fn set_ext(&self) {
        self.ext.store(true, Ordering::Release);
    }

    fn key(&self) -> usize {
        self as *const Session as usize
    }

    /// Largest message body accepted.
    fn max_body(&self) -> usize {
        self.settings.max_parcel + wire::TRANSACTION_LEN + 4 * MAX_FDS
    }

    /// Adds a connection this side calls on.
    pub(crate) fn add_pool_conn(&self, conn: Arc<Conn>) {
        self.add_conn(&conn);
        let mut pool = self.lock_pool();
        pool.total += 1;
        pool.free.push(conn);
        drop(pool);
        self.pool_cv.notify_one();
    }

    /// Adds a connection the peer opened to take this side's calls, once
    /// `greet` (which writes the connection's init) has succeeded. The
    /// pool is held meanwhile: the peer goes on the moment it reads the
    /// init, and may at once have a third process reach it through this
    /// side (a service manager handing out a service that just
    /// registered), so the connection must be in the pool by then.
    pub(crate) fn add_pool_conn_greeted(
        &self,
        conn: Arc<Conn>,
        greet: impl FnOnce(&Conn) -> Result<()>,
    ) {
        self.add_conn(&conn);
        let mut pool = self.lock_pool();
        if greet(&conn).is_err() {
            drop(pool);
            conn.shutdown();
            return;
        }
        pool.total += 1;
        pool.free.push(conn);
        drop(pool);
        self.pool_cv.notify_one();
    }

    /// How many connections the session has.
    pub(crate) fn conn_count(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Records a connection (to shut it down with the session).
    pub(crate) fn add_conn(&self, conn: &Arc<Conn>) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.clone());
        if self.is_dead() {
            conn.shutdown();
        }
    }

    /// Runs `f` when the session ends.
    pub(crate) fn on_shutdown(&self, f: impl FnOnce() + Send + 'static) {
        if self.is_dead() {
            f();
            return;
        }
        self.on_shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Ends the session: connections shut down, proxies told their
    /// objects died, everything sent released.
    pub(crate) fn shutdown(&self) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            c.shutdown();
        }
        self.pool_cv.notify_all();
        let mut nodes = self.lock_nodes();
        nodes.terminated = true;
        let proxies: Vec<Arc<ProxyInner>> = nodes
            .by_addr
            .values()
            .filter_map(|n| match &n.r {
                NodeRef::Remote(w) => w.upgrade(),
                NodeRef::Local(_) | NodeRef::Forward(_) => None,
            })
            .collect();
        let old = std::mem::take(&mut nodes.by_addr);
        nodes.local.clear();
        drop(nodes);
        for p in &proxies {
            p.send_obituary();
        }
        drop(proxies);
        drop(old);
        let hooks =
            std::mem::take(&mut *self.on_shutdown.lock().unwrap_or_else(|p| p.into_inner()));
        for h in hooks {
            h();
        }
    }

    /// Watches the peer for death (once): its pidfd and a connection's
    /// hang-up, on ipckit's watcher thread.
    pub(crate) fn watch_death(self: &Arc<Self>) -> Result<()> {
        if self.watched.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned();
        super::death::watch(self, self.peer.pidfd.as_ref().map(|f| f.as_fd()), conn)
    }

    // ---- objects crossing the session ----

    /// An object is being sent: its address here (libbinder's
    /// `onBinderLeaving`).
    pub(crate) fn object_leaving(&self, obj: &Object) -> Result<u64> {
        let mut nodes = self.lock_nodes();
        if nodes.terminated {
            return Err(Error::dead("the session has ended"));
        }
        match obj.kind() {
            Kind::Local(l) => {
                let key = Arc::as_ptr(l) as usize;
                if let Some(&a) = nodes.local.get(&key) {
                    let node = nodes.by_addr.get_mut(&a).expect("indexed node");
                    node.times_sent += 1;
                    node.sent_ref = Some(obj.clone());
                    return Ok(a);
                }
                let a = self.new_address(&mut nodes)?;
                let mut node = Node::new(NodeRef::Local(Arc::downgrade(l)));
                node.times_sent = 1;
                node.sent_ref = Some(obj.clone());
                nodes.by_addr.insert(a, node);
                nodes.local.insert(key, a);
                Ok(a)
            }
            Kind::Remote(r) if std::ptr::eq(Arc::as_ptr(&r.session), self) => {
                let node = nodes
                    .by_addr
                    .get_mut(&r.address)
                    .ok_or_else(|| Error::dead("the session has ended"))?;
                node.times_sent += 1;
                node.sent_ref = Some(obj.clone());
                Ok(r.address)
            }
            Kind::Remote(r) if self.is_ext() && r.session.is_ext() => {
                // A third process's object: sent as a forwarded reference,
                // which the peer resolves to a session of its own with
                // that process (`forward.rs`); this side holds the proxy
                // until then.
                let key = Arc::as_ptr(r) as usize;
                if let Some(&a) = nodes.local.get(&key) {
                    let node = nodes.by_addr.get_mut(&a).expect("indexed node");
                    node.times_sent += 1;
                    node.sent_ref = Some(obj.clone());
                    return Ok(a);
                }
                let a = self.new_address(&mut nodes)? | wire::ADDRESS_FORWARD as u64;
                let mut node = Node::new(NodeRef::Forward(Arc::downgrade(r)));
                node.times_sent = 1;
                node.sent_ref = Some(obj.clone());
                nodes.by_addr.insert(a, node);
                nodes.local.insert(key, a);
                Ok(a)
            }
            Kind::Remote(r) => {
                let not_ipckit = if self.is_ext() {
                    r.session.peer_pid()
                } else {
                    self.peer.pid
                };
                Err(Error::new(
                    Status::InvalidOperation,
                    format!(
                        "cannot pass a reference to an object of pid {} to pid {}: pid {} is not \
                         an ipckit binder (libbinder's RPC binder has no references to third \
                         processes' objects; pass an address to connect to instead)",
                        r.session.peer_pid(),
                        self.peer.pid,
                        not_ipckit
                    ),
                ))
            }
        }
    }

    /// A fresh address for an object this side sends.
    fn new_address(&self, nodes: &mut Nodes) -> Result<u64> {
        if nodes.by_addr.len() >= MAX_NODES {
            return Err(Error::new(
                Status::NoMemory,
                format!("more than {MAX_NODES} objects sent in one session"),
            ));
        }
        loop {
            let id = nodes.next_id;
            nodes.next_id = nodes.next_id.wrapping_add(1);
            let a = wire::make_address(id, self.side == Side::Server);
            if !nodes.by_addr.contains_key(&a)
                && !nodes
                    .by_addr
                    .contains_key(&(a | wire::ADDRESS_FORWARD as u64))
            {
                return Ok(a);
            }
        }
    }

    /// The local object at `addr`, which the peer holds (for `MINT`).
    pub(crate) fn sent_local(&self, addr: u64) -> Result<Object> {
        let nodes = self.lock_nodes();
        match nodes.by_addr.get(&addr) {
            Some(Node {
                r: NodeRef::Local(w),
                times_sent: 1..,
                ..
            }) => w.upgrade().map(|l| Object(Kind::Local(l))),
            _ => None,
        }
        .ok_or_else(|| {
            Error::bad(format!(
                "no object {addr:#x} of this process is held by pid {}",
                self.peer.pid
            ))
        })
    }

    /// The proxy forwarded at `addr`, which the peer holds (for `RESOLVE`).
    pub(crate) fn forwarded(&self, addr: u64) -> Result<Arc<ProxyInner>> {
        let nodes = self.lock_nodes();
        match nodes.by_addr.get(&addr) {
            Some(Node {
                r: NodeRef::Forward(w),
                times_sent: 1..,
                ..
            }) => w.upgrade(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::bad(format!(
                "no forwarded reference {addr:#x} is held by pid {}",
                self.peer.pid
            ))
        })
    }

    /// An address arrived in a parcel: the object it names (libbinder's
    /// `onBinderEntering` and `flushExcessBinderRefs`).
    pub(crate) fn object_entering(self: &Arc<Self>, addr: u64, stability: i32) -> Result<Object> {
        let mut known = wire::ADDRESS_CREATED | wire::ADDRESS_FOR_SERVER;
        if self.is_ext() {
            known |= wire::ADDRESS_FORWARD;
        }
        let options = wire::address_options(addr);
        if options & !known != 0 || options & wire::ADDRESS_CREATED == 0 {
            return Err(Error::bad(format!(
                "object address {addr:#x} of an unknown kind"
            )));
        }
        let mut nodes = self.lock_nodes();
        if nodes.terminated {
            return Err(Error::dead("the session has ended"));
        }
        if let Some(node) = nodes.by_addr.get_mut(&addr) {
            node.times_recd += 1;
            match &node.r {
                NodeRef::Local(w) => {
                    let Some(l) = w.upgrade() else {
                        return Err(Error::bad(format!(
                            "object {addr:#x} came back after it was released"
                        )));
                    };
                    drop(nodes);
                    // Our own object: nothing to hold on its behalf.
                    self.dec_strong_to_target(addr, 0);
                    return Ok(Object(Kind::Local(l)));
                }
                NodeRef::Remote(w) => {
                    if let Some(p) = w.upgrade() {
                        return Ok(Object(Kind::Remote(p)));
                    }
                    let p = Arc::new(ProxyInner::new(self.clone(), addr, stability));
                    node.r = NodeRef::Remote(Arc::downgrade(&p));
                    return Ok(Object(Kind::Remote(p)));
                }
                NodeRef::Forward(w) => {
                    // A third process's object this side forwarded, back.
                    let Some(p) = w.upgrade() else {
                        return Err(Error::bad(format!(
                            "reference {addr:#x} came back after it was released"
                        )));
                    };
                    drop(nodes);
                    self.dec_strong_to_target(addr, 0);
                    return Ok(Object(Kind::Remote(p)));
                }
            }
        }
        let made_by_server = options & wire::ADDRESS_FOR_SERVER != 0;
        if made_by_server == (self.side == Side::Server) {
            return Err(Error::bad(format!(
                "object address {addr:#x} is one this side would have made, and it did not"
            )));
        }
        if nodes.by_addr.len() >= MAX_NODES {
            return Err(Error::new(
                Status::NoMemory,
                format!("more than {MAX_NODES} objects received in one session"),
            ));
        }
        let p = Arc::new(ProxyInner::new(self.clone(), addr, stability));
        let mut node = Node::new(NodeRef::Remote(Arc::downgrade(&p)));
        node.times_recd = 1;
        nodes.by_addr.insert(addr, node);
        Ok(Object(Kind::Remote(p)))
    }

    /// The last reference to the proxy at `addr` went.
    pub(crate) fn proxy_dropped(&self, addr: u64, proxy: *const ProxyInner) {
        {
            let nodes = self.lock_nodes();
            match nodes.by_addr.get(&addr).map(|n| &n.r) {
                Some(NodeRef::Remote(w)) if w.as_ptr() == proxy => {}
                // Replaced by a newer proxy, or the session ended.
                _ => return,
            }
        }
        self.dec_strong_to_target(addr, 0);
    }

    /// Gives back all but `target` of the references received for `addr`.
    fn dec_strong_to_target(&self, addr: u64, target: u64) {
        let (amount, rel) = {
            let mut nodes = self.lock_nodes();
            let Some(node) = nodes.by_addr.get_mut(&addr) else {
                return;
            };
            if node.times_recd <= target {
                return;
            }
            let amount = node.times_recd - target;
            node.times_recd = target;
            (amount, nodes.try_erase(addr))
        };
        drop(rel.held);
        self.send_dec_strong(addr, amount.min(u32::MAX as u64) as u32);
        if rel.end_session {
            self.shutdown();
        }
    }

    /// Counts the reference the transaction's target took and gives it
    /// back: the frame to send with the reply.
    fn flush_excess(
        &self,
        addr: u64,
    ) -> Option<[u8; wire::WIRE_HEADER_LEN + wire::DEC_STRONG_LEN]> {
        let mut nodes = self.lock_nodes();
        let node = nodes.by_addr.get_mut(&addr)?;
        if !matches!(node.r, NodeRef::Local(_)) || node.times_recd == 0 {
            return None;
        }
        let amount = node.times_recd;
        node.times_recd = 0;
        let rel = nodes.try_erase(addr);
        drop(nodes);
        drop(rel.held);
        Some(dec_strong_frame(addr, amount.min(u32::MAX as u64) as u32))
    }

    /// Sends a `DEC_STRONG`: on the connection this thread serves for
    /// the session (its peer waits on it), else on a free pool connection,
    /// else later, with the next message this side sends.
    fn send_dec_strong(&self, addr: u64, amount: u32) {
        if self.is_dead() {
            return;
        }
        let f = dec_strong_frame(addr, amount);
        let sent = if let Some(c) = self.nested_conn() {
            c.write(&[&f], &[])
        } else {
            let free = self.lock_pool().free.pop();
            match free {
                Some(conn) => {
                    let lease = Lease {
                        session: self,
                        conn,
                        pooled: true,
                    };
                    let pending = self.take_pending();
                    self.write_leased(&lease.conn, &[&pending, &f], &[])
                }
                None => {
                    self.pending_dec
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((addr, amount));
                    Ok(())
                }
            }
        };
        if sent.is_err() {
            self.shutdown();
        }
    }

    /// Writes on a connection this thread holds, reading (and handling)
    /// what the peer sends meanwhile when the socket is full: a peer
    /// blocked writing its reference counts to us does not read.
    fn write_leased(&self, conn: &Conn, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<()> {
        let max = self.max_body();
        let mut drain = || -> Result<()> {
            loop {
                match conn.read_message(Some(Instant::now()), max) {
                    Ok(m) if m.command == wire::COMMAND_DEC_STRONG => {
                        self.process_dec_strong(&m.body)?
                    }
                    Ok(m) => {
                        return Err(Error::bad(format!(
                            "command {} before this side's call was sent",
                            m.command
                        )))
                    }
                    Err(e) if e.status() == Status::TimedOut => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        conn.write_with(parts, fds, Some(&mut drain))
    }

    /// The queued `DEC_STRONG` frames, to go before the next message.
    fn take_pending(&self) -> Vec<u8> {
        let pending =
            std::mem::take(&mut *self.pending_dec.lock().unwrap_or_else(|p| p.into_inner()));
        pending
            .into_iter()
            .flat_map(|(a, n)| dec_strong_frame(a, n))
            .collect()
    }

    fn process_dec_strong(&self, body: &[u8]) -> Result<()> {
        let (addr, amount) = wire::decode_dec_strong(body)?;
        let rel = {
            let mut nodes = self.lock_nodes();
            let Some(node) = nodes.by_addr.get_mut(&addr) else {
                return Ok(());
            };
            if node.times_sent < amount as u64 {
                // libbinder logs and ignores this too.
                return Ok(());
            }
            node.times_sent -= amount as u64;
            nodes.try_erase(addr)
        };
        drop(rel.held);
        if rel.end_session {
            self.shutdown();
        }
        Ok(())
    }

    /// Gives written objects their addresses and checks what can be sent.
    fn prepare(&self, p: &mut Parcel) -> Result<()> {
        if p.len() > self.settings.max_parcel {
            return Err(Error::new(
                Status::NoMemory,
                format!(
                    "a parcel of {} bytes is over the session's limit of {} bytes",
                    p.len(),
                    self.settings.max_parcel
                ),
            ));
        }
        if p.fd_count() > 0
            && (self.settings.fd_mode == wire::FD_MODE_NONE || self.settings.version == 0)
        {
            return Err(Error::new(
                Status::FdsNotAllowed,
                "this session carries no file descriptors (the peer did not ask for them, \
                 or speaks protocol version 0, which has no object table)",
            ));
        }
        let mut counted = Vec::new();
        for (at, obj) in p.take_objects() {
            match self.object_leaving(&obj) {
                Ok(addr) => {
                    p.patch_u64(at as usize + 4, addr);
                    counted.push(addr);
                }
                Err(e) => {
                    // The parcel is not sent: the ones counted are not either.
                    self.undo_leaving(&counted);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Takes back `object_leaving` for objects that were not sent.
    fn undo_leaving(&self, addrs: &[u64]) {
        let mut held = Vec::new();
        let mut end = false;
        {
            let mut nodes = self.lock_nodes();
            for a in addrs {
                if let Some(node) = nodes.by_addr.get_mut(a) {
                    node.times_sent = node.times_sent.saturating_sub(1);
                    let rel = nodes.try_erase(*a);
                    held.push(rel.held);
                    end |= rel.end_session;
                }
            }
        }
        drop(held);
        if end {
            self.shutdown();
        }
    }

    // ---- connections ----

    fn nested_conn(&self) -> Option<Arc<Conn>> {
        let key = self.key();
        SERVING.with(|s| {
            s.borrow()
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, c)| c.clone())
        })
    }

    /// A connection to call on: the one this thread serves for this
    /// session, else a free pool connection (waiting for one).
    fn acquire(&self, deadline: Option<Instant>) -> Result<Lease<'_>> {
        if let Some(conn) = self.nested_conn() {
            return Ok(Lease {
                session: self,
                conn,
                pooled: false,
            });
        }
        let mut pool = self.lock_pool();
        loop {
            if self.is_dead() {
                return Err(Error::dead(format!(
                    "the session with pid {} has ended",
                    self.peer.pid
                )));
            }
            if let Some(conn) = pool.free.pop() {
                return Ok(Lease {
                    session: self,
                    conn,
                    pooled: true,
                });
            }
            if pool.total == 0 {
                return Err(Error::new(
                    Status::InvalidOperation,
                    format!(
                        "pid {} takes no calls from this side outside of its own calls to it \
                         (it opened no incoming connections: a client calls \
                         Connector::incoming_threads to be called back at any time)",
                        self.peer.pid
                    ),
                ));
            }
            pool.waiting += 1;
            pool = match deadline {
                None => self.pool_cv.wait(pool).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        pool.waiting -= 1;
                        return Err(Error::new(
                            Status::TimedOut,
                            "timed out waiting for a free connection",
                        ));
                    }
                    self.pool_cv
                        .wait_timeout(pool, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            pool.waiting -= 1;
        }
    }

    /// Reads and handles messages until a reply comes, running the calls
    /// that arrive meanwhile (nested calls).
    fn wait_reply(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        deadline: Option<Instant>,
    ) -> Result<Message> {
        loop {
            let m = conn.read_message(deadline, self.max_body())?;
            match m.command {
                wire::COMMAND_REPLY => return Ok(m),
                _ => self.process(conn, m)?,
            }
        }
    }

    /// Handles one message that is not a reply.
    fn process(self: &Arc<Self>, conn: &Arc<Conn>, m: Message) -> Result<()> {
        match m.command {
            wire::COMMAND_TRANSACT => self.process_transact(conn, m.body, m.fds),
            wire::COMMAND_DEC_STRONG => self.process_dec_strong(&m.body),
            wire::COMMAND_REPLY => Err(Error::bad("a reply to no call")),
            c => Err(Error::bad(format!("unknown command {c}"))),
        }
    }

    /// Serves calls on `conn` until it or the session ends.
    pub(crate) fn serve(self: &Arc<Self>, conn: Arc<Conn>) {
        loop {
            let r = conn
                .read_message(None, self.max_body())
                .and_then(|m| self.process(&conn, m));
            if r.is_err() || self.is_dead() {
                break;
            }
        }
        self.shutdown();
    }

    /// Sends a call on `address` and, unless one-way, waits for its reply.
    pub(crate) fn transact(
        self: &Arc<Self>,
        target: &Object,
        address: u64,
        code: u32,
        mut data: Parcel,
        flags: u32,
        timeout: Option<Duration>,
    ) -> Result<Parcel> {
        let oneway = flags & FLAG_ONEWAY != 0;
        let deadline = timeout.map(|t| Instant::now() + t);
        // A connection first: a call that cannot be sent must not leave
        // its target and arguments counted as sent (held until the
        // session ends).
        let lease = self.acquire(deadline)?;
        self.drain_abandoned(&lease.conn, deadline)?;
        self.prepare(&mut data)?;
        let async_number = {
            let mut nodes = self.lock_nodes();
            let node = nodes
                .by_addr
                .get_mut(&address)
                .ok_or_else(|| Error::dead("the session has ended"))?;
            node.times_sent += 1;
            node.sent_ref = Some(target.clone());
            if oneway {
                node.async_number += 1;
                node.async_number - 1
            } else {
                0
            }
        };
        self.send_on(lease, address, code, data, flags, async_number, timeout)
    }

    /// Sends a call to address 0 (a special transaction).
    pub(crate) fn transact_raw(
        self: &Arc<Self>,
        address: u64,
        code: u32,
        data: Parcel,
        timeout: Option<Duration>,
    ) -> Result<Parcel> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let lease = self.acquire(deadline)?;
        self.drain_abandoned(&lease.conn, deadline)?;
        self.send_on(lease, address, code, data, 0, 0, timeout)
    }

    /// Sends a prepared call on `lease` and, unless one-way, waits for
    /// its reply.
    #[allow(clippy::too_many_arguments)]
    fn send_on(
        self: &Arc<Self>,
        lease: Lease<'_>,
        address: u64,
        code: u32,
        data: Parcel,
        flags: u32,
        async_number: u64,
        timeout: Option<Duration>,
    ) -> Result<Parcel> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let oneway = flags & FLAG_ONEWAY != 0;
        let t = wire::Transaction {
            address,
            code,
            flags,
            async_number,
            parcel_len: data.len() as u32,
        }
        .encode();
        let table: Vec<u8> = data
            .fd_positions()
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        let body = wire::TRANSACTION_LEN + data.len() + table.len();
        let h = wire::encode_header(wire::COMMAND_TRANSACT, body)?;
        let pending = self.take_pending();
        let w = if lease.pooled {
            self.write_leased(
                &lease.conn,
                &[&pending, &h, &t, data.as_bytes(), &table],
                data.fds(),
            )
        } else {
            lease
                .conn
                .write(&[&pending, &h, &t, data.as_bytes(), &table], data.fds())
        };
        if let Err(e) = w {
            self.shutdown();
            return Err(e);
        }
        if oneway {
            return Ok(Parcel::new());
        }
        let m = match self.wait_reply(&lease.conn, deadline) {
            Ok(m) => m,
            Err(e) if e.status() == Status::TimedOut => {
                lease.conn.abandoned.fetch_add(1, Ordering::AcqRel);
                return Err(Error::new(
                    Status::TimedOut,
                    format!(
                        "no reply from pid {} within {:?}",
                        self.peer.pid,
                        timeout.unwrap_or_default()
                    ),
                ));
            }
            Err(e) => {
                self.shutdown();
                return Err(if e.status() == Status::DeadObject {
                    Error::dead(format!(
                        "pid {} is gone (or ended the session) before replying",
                        self.peer.pid
                    ))
                } else {
                    e
                });
            }
        };
        drop(lease);
        self.reply_parcel(m)
    }

    fn reply_parcel(self: &Arc<Self>, m: Message) -> Result<Parcel> {
        let Message { body, fds, .. } = m;
        let (status, b) = match wire::decode_reply(&body, self.settings.version) {
            Ok(x) => x,
            Err(e) => {
                self.shutdown();
                return Err(e);
            }
        };
        if status != 0 {
            let s = Status::from_code(status).unwrap_or(Status::UnknownError);
            return Err(Error::from(s));
        }
        if b.objects.len() != fds.len() {
            self.shutdown();
            return Err(Error::bad(format!(
                "a reply naming {} descriptors came with {}",
                b.objects.len(),
                fds.len()
            )));
        }
        let objects = b.objects;
        let start = wire::reply_len(self.settings.version);
        let len = b.parcel.len();
        let mut data = body;
        data.drain(..start);
        data.truncate(len);
        Ok(Parcel::received(data, objects, fds, self.clone()))
    }

    /// Reads and drops the replies to calls that timed out on `conn`.
    fn drain_abandoned(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        while conn.abandoned.load(Ordering::Acquire) > 0 {
            match self.wait_reply(conn, deadline) {
                Ok(_) => {
                    conn.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
                Err(e) if e.status() == Status::TimedOut => {
                    return Err(Error::new(
                        Status::TimedOut,
                        "timed out: the connection still waits for the reply to an earlier \
                         call that timed out",
                    ))
                }
                Err(e) => {
                    self.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Handles a `TRANSACT` that arrived on `conn`.
    fn process_transact(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        body: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        let (t, b) = wire::decode_transaction(&body, self.settings.version)?;
        if b.objects.len() != fds.len() {
            return Err(Error::bad(format!(
                "a transaction naming {} descriptors came with {}",
                b.objects.len(),
                fds.len()
            )));
        }
        let objects = b.objects;
        let len = b.parcel.len();
        let mut data = body;
        data.drain(..wire::TRANSACTION_LEN);
        data.truncate(len);
        let oneway = t.flags & FLAG_ONEWAY != 0;
        if t.address == 0 {
            let data = Parcel::received(data, objects, fds, self.clone());
            return self.run_special(conn, t, data, oneway);
        }
        let local = match self.target_entering(t.address) {
            Ok(l) => l,
            Err(e) => {
                if !oneway {
                    self.write_reply(conn, None, e.status().code(), Parcel::new())?;
                }
                return Err(e);
            }
        };
        let mut todo = Todo {
            async_number: t.async_number,
            code: t.code,
            flags: t.flags,
            data,
            objects,
            fds,
        };
        if !oneway {
            let (status, reply) = self.run(conn, &local, todo);
            let dec = self.flush_excess(t.address);
            return self.write_reply(conn, dec, status, reply);
        }
        loop {
            {
                let mut nodes = self.lock_nodes();
                let Some(node) = nodes.by_addr.get_mut(&t.address) else {
                    return Ok(());
                };
                if node.async_number != todo.async_number {
                    node.todo.push(todo);
                    if node.todo.len() > MAX_ONEWAY_BACKLOG {
                        return Err(Error::new(
                            Status::FailedTransaction,
                            format!("more than {MAX_ONEWAY_BACKLOG} one-way calls out of order"),
                        ));
                    }
                    return Ok(());
                }
            }
            let _ = self.run(conn, &local, todo);
            let mut nodes = self.lock_nodes();
            let Some(node) = nodes.by_addr.get_mut(&t.address) else {
                return Ok(());
            };
            node.async_number += 1;
            match node.todo.peek() {
                Some(next) if next.async_number == node.async_number => {
                    todo = node.todo.pop().expect("peeked");
                }
                _ => break,
            }
        }
        // The caller of one-way calls may not be reading: a full socket
        // must not stop this thread, so the count waits for the next
        // message if it does not fit now.
        let mut nodes = self.lock_nodes();
        let amount = match nodes.by_addr.get_mut(&t.address) {
            Some(node) if node.times_recd > 0 => std::mem::take(&mut node.times_recd),
            _ => return Ok(()),
        };
        let rel = nodes.try_erase(t.address);
        drop(nodes);
        drop(rel.held);
        let amount = amount.min(u32::MAX as u64) as u32;
        if !conn.try_write(&dec_strong_frame(t.address, amount))? {
            self.pending_dec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t.address, amount));
        }
        Ok(())
    }

    /// The local object a transaction is for; counts the reference.
    fn target_entering(&self, addr: u64) -> Result<Arc<LocalInner>> {
        let mut nodes = self.lock_nodes();
        let node = nodes.by_addr.get_mut(&addr).ok_or_else(|| {
            Error::bad(format!(
                "a call to object {addr:#x}, which this side never sent"
            ))
        })?;
        let NodeRef::Local(w) = &node.r else {
            return Err(Error::bad(format!(
                "a call to {addr:#x}, which is not an object of this process"
            )));
        };
        let l = w
            .upgrade()
            .ok_or_else(|| Error::bad(format!("a call to object {addr:#x} after its release")))?;
        node.times_recd += 1;
        Ok(l)
    }

    /// Runs one call on a local object, on this thread, serving `conn`.
    fn run(self: &Arc<Self>, conn: &Arc<Conn>, local: &LocalInner, t: Todo) -> (i32, Parcel) {
        let call = Call {
            pid: self.peer.pid,
            uid: self.peer.uid,
            gid: self.peer.gid,
            flags: t.flags,
        };
        let mut data = Parcel::received(t.data, t.objects, t.fds, self.clone());
        let mut reply = Parcel::new();
        // Only a caller waiting for its reply reads `conn` meanwhile, so
        // only a synchronous call's calls back go there (libbinder's
        // `allowNested`); a one-way call's go on the pool.
        let _serving =
            (t.flags & FLAG_ONEWAY == 0).then(|| Serving::enter(self.key(), conn.clone()));
        let r = local.dispatch(t.code, &mut data, &mut reply, &call);
        drop(data);
        match r {
            Ok(()) => (0, reply),
            Err(e) => (e.status().code(), Parcel::new()),
        }
    }

    fn run_special(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        t: wire::Transaction,
        mut data: Parcel,
        oneway: bool,
    ) -> Result<()> {
        let mut reply = Parcel::new();
        let status = match t.code {
            wire::SPECIAL_IPK_HELLO
            | wire::SPECIAL_IPK_RESOLVE
            | wire::SPECIAL_IPK_MINT
            | wire::SPECIAL_IPK_REDEEM => match self.run_extension(t.code, &mut data, &mut reply) {
                Ok(()) => 0,
                Err(e) => {
                    reply = Parcel::new();
                    e.status().code()
                }
            },
            wire::SPECIAL_GET_ROOT => match &self.root {
                Some(root) if self.side == Side::Server => {
                    reply.write_object(Some(root));
                    0
                }
                _ => Status::UnknownTransaction.code(),
            },
            wire::SPECIAL_GET_MAX_THREADS => {
                reply.write_i32(self.settings.threads.min(i32::MAX as usize) as i32);
                0
            }
            wire::SPECIAL_GET_SESSION_ID => {
                let id = self.id.lock().unwrap_or_else(|p| p.into_inner()).clone();
                reply.write_byte_array(Some(&id))?;
                0
            }
            _ => Status::UnknownTransaction.code(),
        };
        if oneway {
            return Ok(());
        }
        self.write_reply(conn, None, status, reply)
    }

    fn write_reply(
        &self,
        conn: &Arc<Conn>,
        dec: Option<[u8; wire::WIRE_HEADER_LEN + wire::DEC_STRONG_LEN]>,
        mut status: i32,
        mut reply: Parcel,
    ) -> Result<()> {
        if status == 0 {
            if let Err(e) = self.prepare(&mut reply) {
                status = e.status().code();
                reply = Parcel::new();
            }
        } else {
            reply = Parcel::new();
        }
        let table: Vec<u8> = reply
            .fd_positions()
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        let (r, rlen) = wire::encode_reply(status, reply.len() as u32, self.settings.version);
        let body = rlen + reply.len() + table.len();
        let h = wire::encode_header(wire::COMMAND_REPLY, body)?;
        let pending = self.take_pending();
        let dec: &[u8] = match &dec {
            Some(d) => d,
            None => &[],
        };
        conn.write(
            &[&pending, dec, &h, &r[..rlen], reply.as_bytes(), &table],
            reply.fds(),
        )
    }
}

/// A `DEC_STRONG` message.
fn dec_strong_frame(addr: u64, amount: u32) -> [u8; wire::WIRE_HEADER_LEN + wire::DEC_STRONG_LEN] {
    let mut f = [0u8; wire::WIRE_HEADER_LEN + wire::DEC_STRONG_LEN];
    let h = wire::encode_header(wire::COMMAND_DEC_STRONG, wire::DEC_STRONG_LEN).expect("small");
    f[..wire::WIRE_HEADER_LEN].copy_from_slice(&h);
    f[wire::WIRE_HEADER_LEN..].copy_from_slice(&wire::encode_dec_strong(addr, amount));
    f
}

/// This thread serves a call on a connection while it lives.
struct Serving;

impl Serving {
    fn enter(key: usize, conn: Arc<Conn>) -> Serving {
        SERVING.with(|s| s.borrow_mut().push((key, conn)));
        Serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.with(|s| {
            s.borrow_mut().pop();
        });
    }
}
