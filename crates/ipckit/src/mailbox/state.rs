//! The broker's state: mailboxes, receiver groups, deliveries, timers.
//!
//! Pure logic, no I/O: the event loop ([`super::broker`]) hands it whole
//! frames and the time, and sends what it leaves in each connection's
//! output buffer. Everything a client sends is checked here (names,
//! access, sizes, tags): a bad frame closes that connection, a refused
//! request gets a `FAIL` naming what to do, and nothing a client sends can
//! make the broker panic.
//!
//! ## How messages move
//!
//! A mailbox keeps its messages in arrival order (`slots`, indexed by
//! sequence number). Each receiver group has its own queue of sequence
//! numbers ready for it (by priority, then arrival), the messages it has
//! in flight (delivered, not acknowledged) and the ones waiting out a
//! backoff. A work-queue mailbox has one group every receiver joins; with
//! interest or limits retention each receiver has a group of its own
//! unless it names one to share. A message stays while a group still
//! needs it (work queue, interest) or until limits push it out (limits).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use super::config::{Config, MailboxInfo, Retention, WhenFull};
use super::name::{self, Pattern};
use super::store::{Fsync, Log, Recovered, Store};
use super::wire::{self, AckMode, Code, DeliverHead, Request, WireError};
// Maps keyed by numbers the broker assigns (sequence numbers, delivery
// tags, mailbox and connection ids) hash with Fx, several times cheaper
// than SipHash on the per-message path; maps keyed by what a client
// chooses (names, message ids, subscription numbers) keep SipHash.
use crate::mq::sysv::Selector;
use rustc_hash::{FxHashMap, FxHashSet};

/// A connection, as the event loop numbers them.
pub(crate) type ConnId = u64;

/// Who is on the other end of a connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Sends a connection may have waiting for room before the broker stops
/// reading from it.
pub(crate) const MAX_PARKED: usize = 1024;
/// Payload bytes a connection may have waiting for room before the broker
/// stops reading from it.
pub(crate) const MAX_PARKED_BYTES: usize = 64 << 20;
/// Output a connection may have queued before it gets no more deliveries
/// until it reads.
pub(crate) const OUT_HIGH: usize = 4 << 20;

/// A dead-letter mailbox's settings: kept until read, the oldest dropped
/// past 100 000 or 64 MiB.
fn dead_config(origin: &Config) -> Config {
    Config {
        max_msgs: Some(100_000),
        when_full: WhenFull::DropOldest,
        mode: origin.mode,
        durable: origin.durable,
        ..Config::default()
    }
}

/// A process inbox's settings: a send to a process that does not read
/// fails once 10 000 messages or 16 MiB wait, instead of blocking.
fn inbox_config() -> Config {
    Config {
        max_msgs: Some(10_000),
        max_bytes: Some(16 << 20),
        when_full: WhenFull::Fail,
        ..Config::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Inbox(i32),
    Dead,
}

/// A message in a mailbox.
#[derive(Debug)]
pub(crate) struct Stored {
    pub mtype: i64,
    pub priority: u32,
    pub sender: Cred,
    pub id: Option<Box<str>>,
    pub reason: Option<Box<str>>,
    pub payload: Box<[u8]>,
    pub at: Instant,
    /// Groups that still need it (work queue, interest).
    pub refs: u32,
    /// The store segment its record is in (durable mailboxes).
    pub disk: u32,
    /// It came from another broker, through this broker's NATS bridge:
    /// the bridge does not take it back out.
    pub remote: bool,
}

#[derive(Debug)]
struct Member {
    conn: ConnId,
    sub: u32,
    selector: Selector,
    ack: AckMode,
    max_in_flight: u32,
    in_flight: u32,
    /// The NATS bridge: takes no remote message.
    local_only: bool,
}

#[derive(Debug)]
struct Flight {
    conn: ConnId,
    sub: u32,
    tag: u64,
    deliveries: u32,
}

#[derive(Debug, Default)]
struct Group {
    /// `None`: one receiver's own (fan-out); removed when it leaves.
    name: Option<String>,
    members: Vec<Member>,
    rr: usize,
    /// Ready sequence numbers by priority (highest first), oldest first.
    ready: BTreeMap<Reverse<u32>, VecDeque<u64>>,
    /// Deliveries so far of messages back in `ready` or `delayed`.
    failed: FxHashMap<u64, u32>,
    delayed: FxHashSet<u64>,
    inflight: FxHashMap<u64, Flight>,
    /// (deadline, seq, deliveries) in delivery order.
    ack_order: VecDeque<(Instant, u64, u32)>,
    ack_timer: bool,
    /// The NATS bridge's own: remote messages are not for it.
    local_only: bool,
}

impl Group {
    fn push_ready(&mut self, seq: u64, priority: u32) {
        let q = self.ready.entry(Reverse(priority)).or_default();
        match q.back() {
            Some(&last) if last > seq => {
                let at = q.partition_point(|&s| s < seq);
                q.insert(at, seq);
            }
            _ => q.push_back(seq),
        }
    }

    fn member(&mut self, conn: ConnId, sub: u32) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.conn == conn && m.sub == sub)
    }

    /// Every sequence number this group still holds.
    fn held(&self) -> impl Iterator<Item = u64> + '_ {
        self.ready
            .values()
            .flatten()
            .copied()
            .chain(self.inflight.keys().copied())
            .chain(self.delayed.iter().copied())
    }
}

#[derive(Debug)]
struct Parked {
    conn: ConnId,
    corr: u32,
    msg: Stored,
}

#[derive(Debug)]
struct Mailbox {
    name: String,
    owner: u32,
    gid: u32,
    config: Config,
    kind: Kind,
    base: u64,
    slots: VecDeque<Option<Stored>>,
    count: u64,
    bytes: u64,
    groups: FxHashMap<u32, Group>,
    next_group: u32,
    /// A work queue's one group.
    shared: Option<u32>,
    named: HashMap<String, u32>,
    parked: VecDeque<Parked>,
    dedup: HashMap<Box<str>, u64>,
    dedup_order: VecDeque<(Instant, Box<str>)>,
    expiry: bool,
    dead_letters: u64,
    discarded: u64,
    received: u64,
    /// Its log on disk (durable).
    log: Option<Log>,
    /// Recovered messages of an interest mailbox, waiting for the first
    /// receiver group.
    orphans: bool,
}

impl Mailbox {
    fn new(name: String, owner: Cred, config: Config, kind: Kind) -> Mailbox {
        let mut m = Mailbox {
            name,
            owner: owner.uid,
            gid: owner.gid,
            config,
            kind,
            base: 1,
            slots: VecDeque::new(),
            count: 0,
            bytes: 0,
            groups: FxHashMap::default(),
            next_group: 0,
            shared: None,
            named: HashMap::new(),
            parked: VecDeque::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            expiry: false,
            dead_letters: 0,
            discarded: 0,
            received: 0,
            log: None,
            orphans: false,
        };
        if m.config.retention == Retention::WorkQueue {
            m.shared = Some(m.add_group(None, false));
        }
        m
    }

    fn add_group(&mut self, name: Option<String>, local_only: bool) -> u32 {
        let gid = self.next_group;
        self.next_group += 1;
        if let Some(n) = &name {
            self.named.insert(n.clone(), gid);
        }
        self.groups.insert(
            gid,
            Group {
                name,
                local_only,
                ..Group::default()
            },
        );
        gid
    }

    fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    fn slot(&self, seq: u64) -> Option<&Stored> {
        let i = seq.checked_sub(self.base)?;
        self.slots.get(usize::try_from(i).ok()?)?.as_ref()
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Stored> {
        let i = seq.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)?.as_mut()
    }

    fn fits(&self, len: usize) -> bool {
        self.config.max_msgs.is_none_or(|m| self.count < m)
            && self
                .config
                .max_bytes
                .is_none_or(|m| self.bytes + len as u64 <= m)
    }

    fn remove(&mut self, seq: u64) -> Option<Stored> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let s = self.slots.get_mut(i)?.take()?;
        if let Some(log) = &mut self.log {
            log.removed(seq, &s);
        }
        self.count -= 1;
        self.bytes -= s.payload.len() as u64;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(s)
    }

    fn oldest(&self) -> Option<u64> {
        self.slots
            .iter()
            .position(Option::is_some)
            .map(|i| self.base + i as u64)
    }

    fn may(&self, who: Cred, bit: u32) -> bool {
        if who.uid == 0 {
            return true;
        }
        let shift = if who.uid == self.owner {
            6
        } else if who.gid == self.gid {
            3
        } else {
            0
        };
        (self.config.mode >> shift) & bit != 0
    }

    fn describe_owner(&self) -> String {
        format!("owner uid {}, mode {:04o}", self.owner, self.config.mode)
    }

    fn in_flight(&self) -> u64 {
        self.groups.values().map(|g| g.inflight.len() as u64).sum()
    }

    fn info(&self) -> MailboxInfo {
        MailboxInfo {
            name: self.name.clone(),
            owner: self.owner,
            group: self.gid,
            config: self.config.clone(),
            depth: self.count,
            bytes: self.bytes,
            consumers: self.groups.values().map(|g| g.members.len() as u32).sum(),
            in_flight: self.in_flight(),
            blocked_senders: self.parked.len() as u32,
            dead_letters: self.dead_letters,
            discarded: self.discarded,
            received: self.received,
        }
    }

    /// Gives the messages of an interest mailbox recovered from its log
    /// to the first group made after the restart (nobody received them
    /// before).
    fn adopt_orphans(&mut self, gid: u32) {
        let g = self.groups.get_mut(&gid).expect("just made");
        // They wait for a group of this broker's receivers.
        if g.local_only || !std::mem::take(&mut self.orphans) {
            return;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(m) = slot {
                m.refs += 1;
                g.push_ready(self.base + i as u64, m.priority);
            }
        }
    }

    /// Reclaims the log's oldest segments that can go (see
    /// [`super::store`]), then writes what is pending.
    fn write_log(&mut self, now: Instant, wall: u64, policy: Fsync) -> io::Result<()> {
        let next_seq = self.next_seq();
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let wall_of = |at: Instant| wall.saturating_sub(now.duration_since(at).as_millis() as u64);
        // Only segments older than this turn's newest, so that what is
        // copied out is never copied again in the same turn.
        let before = log.newest();
        let window = self.config.dedup_window;
        while let Some((front, next_head, copy)) = log.reclaimable(before, wall, window) {
            if copy {
                let end = next_head
                    .saturating_sub(self.base)
                    .min(self.slots.len() as u64);
                for (i, slot) in self.slots.iter_mut().take(end as usize).enumerate() {
                    if let Some(m) = slot.as_mut().filter(|m| m.disk == front) {
                        m.disk = log.moved(self.base + i as u64, m, wall_of(m.at));
                    }
                }
            }
            log.drop_front(next_seq, policy)?;
        }
        log.write(next_seq, policy)
    }
}

#[derive(Debug)]
struct Sub {
    pattern: Pattern,
    group: String,
    selector: Selector,
    ack: AckMode,
    max_in_flight: u32,
    attached: Vec<(u32, u32)>,
}

/// One client connection's state.
#[derive(Debug)]
pub(crate) struct Conn {
    pub cred: Cred,
    /// Frames to send to the client.
    pub out: Vec<u8>,
    /// Sends waiting for room.
    pub parked: usize,
    /// Their payload bytes.
    parked_bytes: usize,
    greeted: bool,
    /// The broker's own NATS bridge: what it sends is remote, and it
    /// receives only what is not.
    bridge: bool,
    /// Asked in `HELLO` for shared-memory lanes; taken by the loop.
    wants_lanes: bool,
    dirty: bool,
    subs: HashMap<u32, Sub>,
    /// Delivery tag → (mailbox, group, sequence number).
    inflight: FxHashMap<u64, (u32, u32, u64)>,
    next_tag: u64,
    parked_in: FxHashSet<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    AckWait { mbox: u32, group: u32 },
    Redeliver { mbox: u32, group: u32, seq: u64 },
    Expire { mbox: u32 },
    SendTimeout { mbox: u32, conn: ConnId, corr: u32 },
}

type Refusal = (Code, String);

/// The whole broker (see the module docs).
#[derive(Debug)]
pub(crate) struct State {
    /// The largest payload accepted.
    pub max_message: usize,
    /// The broker's process: only it may be the NATS bridge.
    own_pid: i32,
    /// The time of the current event-loop turn.
    pub now: Instant,
    /// The same moment by the wall clock (ms since the Unix epoch), for
    /// the store.
    pub wall: u64,
    /// Where durable mailboxes are kept, if anywhere.
    store: Option<Store>,
    /// The durable mailboxes.
    durable: BTreeSet<u32>,
    mailboxes: FxHashMap<u32, Mailbox>,
    names: BTreeMap<String, u32>,
    next_mbox: u32,
    conns: FxHashMap<ConnId, Conn>,
    wild: Vec<(ConnId, u32)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    inboxes: FxHashMap<i32, (u32, u32)>,
    /// Connections with output to send.
    pub dirty: Vec<ConnId>,
    /// Connections whose parked sends were settled (the loop reads them
    /// again).
    pub resumed: Vec<ConnId>,
}

macro_rules! mbox {
    ($s:expr, $id:expr) => {
        match $s.mailboxes.get_mut(&$id) {
            Some(m) => m,
            None => return,
        }
    };
}

impl State {
    pub(crate) fn new(max_message: usize) -> State {
        State {
            max_message,
            own_pid: std::process::id() as i32,
            now: Instant::now(),
            wall: super::store::wall_ms(),
            store: None,
            durable: BTreeSet::new(),
            mailboxes: FxHashMap::default(),
            names: BTreeMap::new(),
            next_mbox: 1,
            conns: FxHashMap::default(),
            wild: Vec::new(),
            timers: BinaryHeap::new(),
            inboxes: FxHashMap::default(),
            dirty: Vec::new(),
            resumed: Vec::new(),
        }
    }

    /// The longest frame a client may send.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_message + wire::OVERHEAD
    }

    pub(crate) fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id)
    }

    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// Whether connection `id` has just asked for lanes (once).
    pub(crate) fn take_lanes_wanted(&mut self, id: ConnId) -> bool {
        self.conns
            .get_mut(&id)
            .is_some_and(|c| std::mem::take(&mut c.wants_lanes))
    }

    /// Marks a connection's output as sent up to `n` bytes.
    pub(crate) fn sent(&mut self, id: ConnId, n: usize) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.out.drain(..n);
        }
    }

    /// A connection's output went below the high mark: its receivers may
    /// get messages again.
    pub(crate) fn drained(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        let attached: Vec<(u32, u32)> = c
            .subs
            .values()
            .flat_map(|s| s.attached.iter().copied())
            .collect();
        for (mb, gid) in attached {
            self.dispatch(mb, gid);
        }
    }

    /// Whether the loop should stop reading a connection (too many of its
    /// sends wait for room).
    pub(crate) fn blocked(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.parked >= MAX_PARKED || c.parked_bytes >= MAX_PARKED_BYTES)
    }

    /// Notes that connection `id` has output to send.
    pub(crate) fn mark(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Takes the list of connections with output, clearing their marks.
    pub(crate) fn take_dirty(&mut self) -> Vec<ConnId> {
        let d = std::mem::take(&mut self.dirty);
        for id in &d {
            if let Some(c) = self.conns.get_mut(id) {
                c.dirty = false;
            }
        }
        d
    }

    fn out(&mut self, id: ConnId) -> Option<&mut Vec<u8>> {
        self.mark(id);
        self.conns.get_mut(&id).map(|c| &mut c.out)
    }

    fn fail(&mut self, id: ConnId, corr: u32, (code, text): Refusal) {
        if let Some(out) = self.out(id) {
            wire::fail(out, corr, code, &text);
        }
    }

    fn done(&mut self, id: ConnId, corr: u32, value: u64) {
        if let Some(out) = self.out(id) {
            wire::done(out, corr, value);
        }
    }

    fn timer(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    /// When the next timer (or `fsync` round) is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let sync = self.store.as_ref().and_then(|st| {
            let unsynced = self
                .durable
                .iter()
                .any(|mb| self.mailboxes[mb].log.as_ref().is_some_and(Log::unsynced));
            st.sync_due(unsynced)
        });
        match (timer, sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ------------------------------------------------------------------ store

    /// Uses `store` for durable mailboxes, loading those it recovered.
    pub(crate) fn use_store(&mut self, store: Store, recovered: Vec<Recovered>) {
        self.store = Some(store);
        for r in recovered {
            let kind = if r.dead { Kind::Dead } else { Kind::User };
            if self.names.contains_key(&r.name) {
                continue;
            }
            let mb = self.add_mailbox(&r.name, r.owner, r.config, kind);
            self.durable.insert(mb);
            let now = self.now;
            let m = self.mailboxes.get_mut(&mb).expect("just made");
            m.base = r.msgs.keys().next().copied().unwrap_or(r.next_seq);
            let shared = m.shared;
            for (seq, mut msg) in r.msgs {
                while m.next_seq() < seq {
                    m.slots.push_back(None);
                }
                if let Some(g) = shared.and_then(|g| m.groups.get_mut(&g)) {
                    g.push_ready(seq, msg.priority);
                    msg.refs = 1;
                }
                m.count += 1;
                m.bytes += msg.payload.len() as u64;
                m.slots.push_back(Some(msg));
            }
            while m.next_seq() < r.next_seq {
                m.slots.push_back(None);
            }
            m.orphans = m.config.retention == Retention::Interest && m.count > 0;
            let mut ids = r.ids;
            ids.sort_by_key(|&(_, wall, _)| wall);
            for (seq, wall, id) in ids {
                let age = Duration::from_millis(self.wall.saturating_sub(wall));
                if age < m.config.dedup_window {
                    let at = now.checked_sub(age).unwrap_or(now);
                    m.dedup.insert(id.clone(), seq);
                    m.dedup_order.push_back((at, id));
                }
            }
            m.log = Some(r.log);
            if let (Some(age), Some(oldest)) = (m.config.max_age, m.oldest()) {
                let at = m.slot(oldest).expect("oldest is live").at + age;
                m.expiry = true;
                self.timer(at, Timer::Expire { mbox: mb });
            }
        }
    }

    /// Writes every durable mailbox's news to its log, and syncs as the
    /// policy says. Called before the turn's output is sent: a failure
    /// means confirmations must not go out.
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let policy = store.policy;
        let (now, wall) = (self.now, self.wall);
        let mut wrote = false;
        for mb in &self.durable {
            let m = self.mailboxes.get_mut(mb).expect("a durable mailbox");
            if m.log.as_ref().is_some_and(Log::pending) {
                m.write_log(now, wall, policy)?;
                wrote = true;
            }
        }
        let due = match policy {
            Fsync::Always => wrote,
            Fsync::Every(d) => now >= store.last_sync + d,
            Fsync::Never => false,
        };
        if due {
            self.sync_all()?;
        }
        Ok(())
    }

    /// `fsync(2)` of every log written since its last.
    pub(crate) fn sync_all(&mut self) -> io::Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        store.last_sync = self.now;
        for mb in &self.durable {
            if let Some(log) = self.mailboxes.get_mut(mb).and_then(|m| m.log.as_mut()) {
                log.sync()?;
            }
        }
        Ok(())
    }

    /// Makes the log of a new durable mailbox `name`.
    fn new_log(
        &mut self,
        name: &str,
        owner: Cred,
        kind: Kind,
        config: &Config,
    ) -> Result<Log, Refusal> {
        let Some(store) = self.store.as_mut() else {
            return Err((
                Code::Storage,
                "this broker keeps no store, so it cannot make a durable mailbox: start it with \
                 a store (BrokerBuilder::store, or ipc broker --store DIR)"
                    .into(),
            ));
        };
        store
            .create(name, owner, kind == Kind::Dead, config)
            .map_err(|e| {
                (
                    Code::Storage,
                    format!("cannot make durable mailbox {name}: {e}"),
                )
            })
    }

    // ------------------------------------------------------------ connections

    pub(crate) fn connect(&mut self, id: ConnId, cred: Cred) {
        self.conns.insert(
            id,
            Conn {
                cred,
                out: Vec::new(),
                parked: 0,
                parked_bytes: 0,
                greeted: false,
                bridge: false,
                wants_lanes: false,
                dirty: false,
                subs: HashMap::new(),
                inflight: FxHashMap::default(),
                next_tag: 1,
                parked_in: FxHashSet::default(),
            },
        );
    }

    /// Forgets a connection: its receivers leave (their messages in flight
    /// go to others at once), its waiting sends are dropped, and its
    /// process's inbox goes with its last connection.
    pub(crate) fn disconnect(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let subs: Vec<u32> = conn.subs.keys().copied().collect();
        let parked_in: Vec<u32> = conn.parked_in.iter().copied().collect();
        let (pid, greeted) = (conn.cred.pid, conn.greeted);
        for sub in subs {
            self.unsubscribe(id, sub);
        }
        for mb in parked_in {
            if let Some(m) = self.mailboxes.get_mut(&mb) {
                m.parked.retain(|p| p.conn != id);
            }
        }
        self.conns.remove(&id);
        self.wild.retain(|(c, _)| *c != id);
        if greeted {
            if let Some((mb, n)) = self.inboxes.get_mut(&pid) {
                *n -= 1;
                if *n == 0 {
                    let mb = *mb;
                    self.inboxes.remove(&pid);
                    self.remove_mailbox(mb, "its process disconnected");
                }
            }
        }
    }

    /// Handles one whole frame from connection `id`. An error means the
    /// frame was malformed: the loop tells the client and closes.
    pub(crate) fn handle(&mut self, id: ConnId, frame: &[u8]) -> Result<(), WireError> {
        let req = wire::read_request(frame)?;
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let (cred, bridge) = (conn.cred, conn.bridge);
        if !conn.greeted {
            let Request::Hello {
                version,
                bridge,
                lanes,
            } = req
            else {
                return Err(WireError("the first frame must be HELLO".into()));
            };
            if version != wire::VERSION {
                return Err(WireError(format!(
                    "the client speaks protocol version {version} and this broker {}: \
                     use the same ipckit version on both sides",
                    wire::VERSION
                )));
            }
            if bridge && cred.pid != self.own_pid {
                return Err(WireError(format!(
                    "process {} asked to be the NATS bridge; only the broker's own process \
                     (pid {}) may",
                    cred.pid, self.own_pid
                )));
            }
            conn.greeted = true;
            conn.bridge = bridge;
            conn.wants_lanes = lanes;
            let max = self.max_message as u32;
            if let Some(out) = self.out(id) {
                wire::welcome(out, cred.pid, cred.uid, cred.gid, max);
            }
            self.open_inbox(cred);
            return Ok(());
        }
        match req {
            Request::Hello { .. } => return Err(WireError("HELLO sent twice".into())),
            Request::Send {
                corr,
                mtype,
                priority,
                timeout_ms,
                target,
                id: msg_id,
                payload,
            } => match self.resolve_target(cred, target) {
                Err(r) => self.fail(id, corr, r),
                Ok(_) if mtype < 1 => self.fail(
                    id,
                    corr,
                    (
                        Code::Invalid,
                        format!("message type {mtype}: a type is 1 or more"),
                    ),
                ),
                Ok(mb) => {
                    let msg = Stored {
                        mtype,
                        priority,
                        sender: cred,
                        id: msg_id.map(Into::into),
                        reason: None,
                        payload: payload.into(),
                        at: self.now,
                        refs: 0,
                        disk: 0,
                        remote: bridge,
                    };
                    self.publish(mb, id, corr, msg, timeout_ms);
                }
            },
            Request::Subscribe {
                corr,
                sub,
                max_in_flight,
                ack,
                selector,
                pattern,
                group,
            } => match self.subscribe(id, sub, max_in_flight, ack, selector, pattern, group) {
                Ok(n) => self.done(id, corr, n),
                Err(r) => self.fail(id, corr, r),
            },
            Request::Unsubscribe { corr, sub } => {
                if self.unsubscribe(id, sub) {
                    self.done(id, corr, 0)
                } else {
                    self.fail(id, corr, (Code::Invalid, format!("no subscription {sub}")))
                }
            }
            Request::Ack { tags } => {
                let mut touched = Vec::new();
                for tag in wire::tags(tags) {
                    if let Some(at) = self.ack(id, tag) {
                        if !touched.contains(&at) {
                            touched.push(at);
                        }
                    }
                }
                for (mb, g) in touched {
                    self.trim_ack_order(mb, g);
                    self.dispatch(mb, g);
                    self.unpark(mb);
                }
            }
            Request::Release { tags } => {
                let mut touched = Vec::new();
                for tag in wire::tags(tags) {
                    if let Some((mb, g, seq, deliveries)) = self.take_flight(id, tag) {
                        self.give_back(mb, g, seq, deliveries - 1);
                        if !touched.contains(&(mb, g)) {
                            touched.push((mb, g));
                        }
                    }
                }
                for (mb, g) in touched {
                    self.trim_ack_order(mb, g);
                    self.dispatch(mb, g);
                }
            }
            Request::Nack { tag, delay_ms } => {
                if let Some((mb, g, seq, deliveries)) = self.take_flight(id, tag) {
                    let delay = (delay_ms != wire::BY_BACKOFF)
                        .then(|| Duration::from_millis(delay_ms as u64));
                    self.failed(mb, g, seq, deliveries, delay, "negatively acknowledged");
                    self.dispatch(mb, g);
                }
            }
            Request::Reject { tag, reason } => {
                if let Some((mb, g, seq, _)) = self.take_flight(id, tag) {
                    let why = format!("rejected by the receiver (pid {}): {reason}", cred.pid);
                    self.dead_letter(mb, g, seq, &why);
                    self.dispatch(mb, g);
                    self.unpark(mb);
                }
            }
            Request::Create {
                corr,
                exist_ok,
                config,
                name,
            } => match self.create(cred, name, config, exist_ok) {
                Ok(made) => self.done(id, corr, made as u64),
                Err(r) => self.fail(id, corr, r),
            },
            Request::Delete { corr, name } => match self.delete(cred, name) {
                Ok(()) => self.done(id, corr, 0),
                Err(r) => self.fail(id, corr, r),
            },
            Request::Stat { corr, pattern } => match self.stat(cred, pattern) {
                Ok(list) => {
                    if let Some(out) = self.out(id) {
                        wire::info(out, corr, &list);
                    }
                }
                Err(r) => self.fail(id, corr, r),
            },
        }
        Ok(())
    }

    // --------------------------------------------------------------- mailboxes

    fn add_mailbox(&mut self, name: &str, owner: Cred, config: Config, kind: Kind) -> u32 {
        let id = self.next_mbox;
        self.next_mbox += 1;
        self.mailboxes
            .insert(id, Mailbox::new(name.to_string(), owner, config, kind));
        self.names.insert(name.to_string(), id);
        // Receivers waiting with a matching pattern join.
        let wild: Vec<(ConnId, u32)> = self.wild.clone();
        for (conn, sub) in wild {
            let ok = self
                .conns
                .get(&conn)
                .and_then(|c| c.subs.get(&sub))
                .is_some_and(|s| s.pattern.matches(name));
            if ok {
                let _ = self.attach(conn, sub, id);
            }
        }
        id
    }

    fn open_inbox(&mut self, cred: Cred) {
        if let Some((_, n)) = self.inboxes.get_mut(&cred.pid) {
            *n += 1;
            return;
        }
        let name = format!("pid.{}", cred.pid);
        if let Some(&old) = self.names.get(&name) {
            // A previous process with this pid left its inbox behind: not
            // possible while connections are counted, but never reuse it.
            self.remove_mailbox(old, "its pid was reused");
        }
        let mb = self.add_mailbox(&name, cred, inbox_config(), Kind::Inbox(cred.pid));
        self.inboxes.insert(cred.pid, (mb, 1));
    }

    /// The mailbox a send to `target` goes to, made with the default
    /// settings if it is a free user name.
    fn resolve_target(&mut self, who: Cred, target: &str) -> Result<u32, Refusal> {
        let mb = self.lookup_or_make(who, target)?;
        let m = &self.mailboxes[&mb];
        if !m.may(who, 2) {
            return Err((
                Code::Denied,
                format!(
                    "uid {} may not send to mailbox {target} ({})",
                    who.uid,
                    m.describe_owner()
                ),
            ));
        }
        Ok(mb)
    }

    fn lookup_or_make(&mut self, who: Cred, name: &str) -> Result<u32, Refusal> {
        if let Some(&mb) = self.names.get(name) {
            return Ok(mb);
        }
        if let Some(pid) = name.strip_prefix("pid.") {
            return Err((
                Code::NoSuchProcess,
                format!(
                    "no process {pid} is connected to the broker (a process is reachable as \
                     pid:{pid} while it is connected)"
                ),
            ));
        }
        if let Some(origin) = name.strip_prefix("dead.") {
            // A receiver may wait for dead letters before there are any.
            let Some(&o) = self.names.get(origin) else {
                return Err((
                    Code::NoSuchMailbox,
                    format!("no mailbox {origin}, so no dead letters {name}"),
                ));
            };
            return Ok(self.dead_box(o));
        }
        name::validate_user_name(name).map_err(|e| (Code::Invalid, e.to_string()))?;
        Ok(self.add_mailbox(name, who, Config::default(), Kind::User))
    }

    /// The dead-letter mailbox of `origin`, made if need be.
    fn dead_box(&mut self, origin: u32) -> u32 {
        let o = &self.mailboxes[&origin];
        let name = format!("dead.{}", o.name);
        if let Some(&d) = self.names.get(&name) {
            return d;
        }
        let owner = Cred {
            pid: 0,
            uid: o.owner,
            gid: o.gid,
        };
        let mut config = dead_config(&o.config);
        // A durable mailbox's dead letters are durable too, if the store
        // can take them (else they are kept in memory).
        let log = if config.durable {
            self.new_log(&name, owner, Kind::Dead, &config).ok()
        } else {
            None
        };
        config.durable = log.is_some();
        let d = self.add_mailbox(&name, owner, config, Kind::Dead);
        if log.is_some() {
            self.mailboxes.get_mut(&d).expect("just made").log = log;
            self.durable.insert(d);
        }
        d
    }

    fn create(
        &mut self,
        who: Cred,
        name: &str,
        config: Config,
        exist_ok: bool,
    ) -> Result<bool, Refusal> {
        name::validate_user_name(name).map_err(|e| (Code::Invalid, e.to_string()))?;
        config
            .validate()
            .map_err(|e| (Code::Invalid, e.to_string()))?;
        if let Some(&mb) = self.names.get(name) {
            let m = &self.mailboxes[&mb];
            if exist_ok {
                return Ok(false);
            }
            return Err((
                Code::Exists,
                format!("mailbox {name} exists ({})", m.describe_owner()),
            ));
        }
        let log = if config.durable {
            Some(self.new_log(name, who, Kind::User, &config)?)
        } else {
            None
        };
        let mb = self.add_mailbox(name, who, config, Kind::User);
        if log.is_some() {
            self.mailboxes.get_mut(&mb).expect("just made").log = log;
            self.durable.insert(mb);
        }
        Ok(true)
    }

    fn delete(&mut self, who: Cred, name: &str) -> Result<(), Refusal> {
        let Some(&mb) = self.names.get(name) else {
            return Err((Code::NoSuchMailbox, format!("no mailbox {name}")));
        };
        let m = &self.mailboxes[&mb];
        if let Kind::Inbox(pid) = m.kind {
            return Err((
                Code::Denied,
                format!("{name} is the inbox of process {pid}; it goes away with the process"),
            ));
        }
        if who.uid != 0 && who.uid != m.owner {
            return Err((
                Code::Denied,
                format!(
                    "uid {} may not remove mailbox {name} ({}): only its owner and root may",
                    who.uid,
                    m.describe_owner()
                ),
            ));
        }
        if let (Some(log), Some(store)) = (&m.log, self.store.as_mut()) {
            store
                .remove(log)
                .map_err(|e| (Code::Storage, format!("cannot remove mailbox {name}: {e}")))?;
        }
        self.remove_mailbox(mb, "it was removed");
        Ok(())
    }

    fn remove_mailbox(&mut self, mb: u32, why: &str) {
        let Some(m) = self.mailboxes.remove(&mb) else {
            return;
        };
        self.durable.remove(&mb);
        self.names.remove(&m.name);
        for g in m.groups.values() {
            for mem in &g.members {
                if let Some(c) = self.conns.get_mut(&mem.conn) {
                    if let Some(s) = c.subs.get_mut(&mem.sub) {
                        s.attached.retain(|(b, _)| *b != mb);
                    }
                    wire::closed(&mut c.out, mem.sub, &m.name);
                }
                self.mark(mem.conn);
            }
            for f in g.inflight.values() {
                if let Some(c) = self.conns.get_mut(&f.conn) {
                    c.inflight.remove(&f.tag);
                }
            }
        }
        for p in m.parked {
            if let Some(c) = self.conns.get_mut(&p.conn) {
                c.parked -= 1;
                c.parked_bytes -= p.msg.payload.len();
                c.parked_in.remove(&mb);
                wire::fail(
                    &mut c.out,
                    p.corr,
                    Code::NoSuchMailbox,
                    &format!("mailbox {} went away while this send waited: {why}", m.name),
                );
                self.resumed.push(p.conn);
            }
            self.mark(p.conn);
        }
    }

    fn stat(&self, who: Cred, pattern: &str) -> Result<Vec<MailboxInfo>, Refusal> {
        let pat = if pattern.is_empty() {
            None
        } else {
            Some(Pattern::new(pattern).map_err(|e| (Code::Invalid, e.to_string()))?)
        };
        Ok(self
            .names
            .iter()
            .filter(|(n, _)| pat.as_ref().is_none_or(|p| p.matches(n)))
            .map(|(_, mb)| &self.mailboxes[mb])
            .filter(|m| m.may(who, 4) || m.may(who, 2) || m.owner == who.uid)
            .map(Mailbox::info)
            .collect())
    }

    // ---------------------------------------------------------------- sending

    fn publish(&mut self, mb: u32, conn: ConnId, corr: u32, mut msg: Stored, timeout_ms: u32) {
        let now = self.now;
        let m = mbox!(self, mb);
        if let Some(id) = &msg.id {
            let window = m.config.dedup_window;
            while let Some((at, old)) = m.dedup_order.front() {
                if now.duration_since(*at) < window {
                    break;
                }
                m.dedup.remove(old);
                m.dedup_order.pop_front();
            }
            if let Some(&seq) = m.dedup.get(id) {
                if let Some(out) = self.out(conn) {
                    wire::confirm(out, corr, wire::DUPLICATE, seq);
                }
                return;
            }
        }
        let len = msg.payload.len();
        if m.config.max_bytes.is_some_and(|max| len as u64 > max) {
            let text = format!(
                "a message of {len} bytes cannot fit in mailbox {} (max-bytes {})",
                m.name,
                m.config.max_bytes.unwrap_or(0)
            );
            return self.fail(conn, corr, (Code::TooLarge, text));
        }
        let wanted = m.groups.values().any(|g| !(msg.remote && g.local_only));
        if m.config.retention == Retention::Interest && !wanted {
            m.discarded += 1;
            if let Some(out) = self.out(conn) {
                wire::confirm(out, corr, wire::NO_RECEIVERS, 0);
            }
            return;
        }
        if !m.parked.is_empty() || !m.fits(len) {
            match m.config.when_full {
                WhenFull::DropOldest => {
                    while !m.fits(len) {
                        let Some(seq) = m.oldest() else { break };
                        m.remove(seq);
                        m.discarded += 1;
                    }
                }
                WhenFull::Fail => {
                    let text = format!(
                        "mailbox {} is full ({} messages, {} bytes): its receivers have not \
                         kept up; try again later",
                        m.name, m.count, m.bytes
                    );
                    return self.fail(conn, corr, (Code::Full, text));
                }
                WhenFull::Block if timeout_ms == 0 => {
                    let text = format!(
                        "mailbox {} is full ({} messages, {} bytes)",
                        m.name, m.count, m.bytes
                    );
                    return self.fail(conn, corr, (Code::Full, text));
                }
                WhenFull::Block => {
                    msg.at = now;
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.parked += 1;
                        c.parked_bytes += len;
                        c.parked_in.insert(mb);
                    }
                    m.parked.push_back(Parked { conn, corr, msg });
                    if timeout_ms != wire::FOREVER {
                        let at = now + Duration::from_millis(timeout_ms as u64);
                        self.timer(
                            at,
                            Timer::SendTimeout {
                                mbox: mb,
                                conn,
                                corr,
                            },
                        );
                    }
                    return;
                }
            }
        }
        let seq = self.store(mb, msg);
        if let Some(out) = self.out(conn) {
            wire::confirm(out, corr, wire::STORED, seq);
        }
    }

    /// Adds a message that fits, hands it to every group and delivers.
    fn store(&mut self, mb: u32, mut msg: Stored) -> u64 {
        let m = &mut self.mailboxes.get_mut(&mb).expect("a live mailbox");
        let seq = m.next_seq();
        msg.at = self.now;
        let mut refs = 0;
        for g in m.groups.values_mut() {
            if !(msg.remote && g.local_only) {
                g.push_ready(seq, msg.priority);
                refs += 1;
            }
        }
        msg.refs = if m.config.retention == Retention::Limits {
            0
        } else {
            refs
        };
        if let Some(id) = &msg.id {
            m.dedup.insert(id.clone(), seq);
            m.dedup_order.push_back((self.now, id.clone()));
        }
        m.count += 1;
        m.bytes += msg.payload.len() as u64;
        m.received += 1;
        if let Some(log) = &mut m.log {
            msg.disk = log.append(seq, &msg, self.wall);
        }
        m.slots.push_back(Some(msg));
        let arm = m
            .config
            .max_age
            .filter(|_| !m.expiry)
            .map(|age| self.now + age);
        if arm.is_some() {
            m.expiry = true;
        }
        let groups: Vec<u32> = m.groups.keys().copied().collect();
        if let Some(at) = arm {
            self.timer(at, Timer::Expire { mbox: mb });
        }
        for g in groups {
            self.dispatch(mb, g);
        }
        seq
    }

    /// Stores waiting sends while there is room.
    fn unpark(&mut self, mb: u32) {
        loop {
            let m = mbox!(self, mb);
            let Some(p) = m.parked.front() else { return };
            if !m.fits(p.msg.payload.len()) {
                return;
            }
            let p = m.parked.pop_front().expect("a front");
            let still = m.parked.iter().any(|q| q.conn == p.conn);
            if let Some(c) = self.conns.get_mut(&p.conn) {
                c.parked -= 1;
                c.parked_bytes -= p.msg.payload.len();
                if !still {
                    c.parked_in.remove(&mb);
                }
            }
            self.resumed.push(p.conn);
            let seq = self.store(mb, p.msg);
            if let Some(out) = self.out(p.conn) {
                wire::confirm(out, p.corr, wire::STORED, seq);
            }
        }
    }

    // -------------------------------------------------------------- receiving

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        conn: ConnId,
        sub: u32,
        max_in_flight: u32,
        ack: AckMode,
        selector: Selector,
        pattern: &str,
        group: &str,
    ) -> Result<u64, Refusal> {
        let invalid = |e: std::io::Error| (Code::Invalid, e.to_string());
        let pat = Pattern::new(pattern).map_err(invalid)?;
        if !group.is_empty() {
            name::validate_name(group).map_err(|e| {
                (
                    Code::Invalid,
                    e.to_string().replace("mailbox name", "group name"),
                )
            })?;
        }
        if max_in_flight == 0 {
            return Err((Code::Invalid, "max in flight must be at least 1".into()));
        }
        let c = self.conns.get_mut(&conn).expect("a live connection");
        let who = c.cred;
        if c.subs.contains_key(&sub) {
            return Err((Code::Invalid, format!("subscription {sub} is in use")));
        }
        c.subs.insert(
            sub,
            Sub {
                pattern: pat.clone(),
                group: group.to_string(),
                selector,
                ack,
                max_in_flight,
                attached: Vec::new(),
            },
        );
        if !pat.is_wild() {
            let r = self.lookup_or_make(who, pattern).and_then(|mb| {
                if !self.mailboxes[&mb].may(who, 4) {
                    let m = &self.mailboxes[&mb];
                    return Err((
                        Code::Denied,
                        format!(
                            "uid {} may not receive from mailbox {pattern} ({})",
                            who.uid,
                            m.describe_owner()
                        ),
                    ));
                }
                self.attach(conn, sub, mb)
            });
            if let Err(e) = r {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.subs.remove(&sub);
                }
                return Err(e);
            }
            return Ok(1);
        }
        self.wild.push((conn, sub));
        let matching: Vec<u32> = self
            .names
            .iter()
            .filter(|(n, _)| pat.matches(n))
            .map(|(_, &mb)| mb)
            .collect();
        let mut n = 0;
        for mb in matching {
            if self.attach(conn, sub, mb).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Joins subscription `sub` to mailbox `mb` (a group of the mailbox).
    fn attach(&mut self, conn: ConnId, sub: u32, mb: u32) -> Result<(), Refusal> {
        let c = self.conns.get_mut(&conn).expect("a live connection");
        let (who, bridge) = (c.cred, c.bridge);
        let s = c.subs.get_mut(&sub).expect("a live subscription");
        let m = self.mailboxes.get_mut(&mb).expect("a live mailbox");
        if !m.may(who, 4) {
            return Err((
                Code::Denied,
                format!("uid {} may not receive from {}", who.uid, m.name),
            ));
        }
        let gid = match (m.config.retention, s.group.as_str()) {
            (Retention::WorkQueue, "") => m.shared.expect("a work queue's group"),
            (Retention::WorkQueue, g) => {
                return Err((
                    Code::Invalid,
                    format!(
                        "mailbox {} is a work queue: every receiver already shares its messages \
                         (each goes to one of them), so group {g} does not apply; groups are for \
                         mailboxes made with retention interest or limits",
                        m.name
                    ),
                ))
            }
            (_, "") => {
                let gid = m.add_group(None, bridge);
                m.adopt_orphans(gid);
                gid
            }
            (retention, g) => match m.named.get(g) {
                Some(&gid) => gid,
                None => {
                    let gid = m.add_group(Some(g.to_string()), bridge);
                    m.adopt_orphans(gid);
                    // (The bridge forwards what comes from now on.)
                    if retention == Retention::Limits && !bridge {
                        // A new group of a log starts at its oldest message.
                        let live: Vec<(u64, u32)> = m
                            .slots
                            .iter()
                            .enumerate()
                            .filter_map(|(i, s)| {
                                s.as_ref().map(|s| (m.base + i as u64, s.priority))
                            })
                            .collect();
                        let grp = m.groups.get_mut(&gid).expect("just made");
                        for (seq, p) in live {
                            grp.push_ready(seq, p);
                        }
                    }
                    gid
                }
            },
        };
        m.groups
            .get_mut(&gid)
            .expect("a live group")
            .members
            .push(Member {
                conn,
                sub,
                selector: s.selector,
                ack: s.ack,
                max_in_flight: s.max_in_flight,
                in_flight: 0,
                local_only: bridge,
            });
        s.attached.push((mb, gid));
        self.dispatch(mb, gid);
        Ok(())
    }

    /// Ends a subscription; false if there was none.
    fn unsubscribe(&mut self, conn: ConnId, sub: u32) -> bool {
        let Some(s) = self.conns.get_mut(&conn).and_then(|c| c.subs.remove(&sub)) else {
            return false;
        };
        self.wild.retain(|&(c, s)| (c, s) != (conn, sub));
        for (mb, gid) in s.attached {
            self.detach(conn, sub, mb, gid);
        }
        true
    }

    fn detach(&mut self, conn: ConnId, sub: u32, mb: u32, gid: u32) {
        let m = mbox!(self, mb);
        let Some(g) = m.groups.get_mut(&gid) else {
            return;
        };
        g.members.retain(|x| !(x.conn == conn && x.sub == sub));
        // Its messages in flight go to the others at once.
        let mine: Vec<u64> = g
            .inflight
            .iter()
            .filter(|(_, f)| f.conn == conn && f.sub == sub)
            .map(|(&seq, _)| seq)
            .collect();
        let flights: Vec<(u64, Flight)> = mine
            .into_iter()
            .map(|seq| (seq, g.inflight.remove(&seq).expect("listed")))
            .collect();
        for (seq, f) in flights {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.inflight.remove(&f.tag);
            }
            if let Some(p) = m.slot(seq).map(|s| s.priority) {
                let g = m.groups.get_mut(&gid).expect("a live group");
                g.failed.insert(seq, f.deliveries);
                g.push_ready(seq, p);
            }
        }
        let g = m.groups.get_mut(&gid).expect("a live group");
        // A receiver's own group goes with it, an interest group with its
        // last member; a work queue's one group and a log's groups stay.
        let drop_group = g.members.is_empty()
            && m.shared != Some(gid)
            && (g.name.is_none() || m.config.retention == Retention::Interest);
        if drop_group {
            let g = m.groups.remove(&gid).expect("a live group");
            if let Some(n) = &g.name {
                m.named.remove(n);
            }
            if m.config.retention != Retention::Limits {
                let held: HashSet<u64> = g.held().collect();
                for seq in held {
                    self.release(mb, seq);
                }
            }
            self.unpark(mb);
        } else {
            self.dispatch(mb, gid);
        }
    }

    /// One group no longer needs message `seq`: gone when none does.
    fn release(&mut self, mb: u32, seq: u64) {
        let m = mbox!(self, mb);
        if m.config.retention == Retention::Limits {
            return;
        }
        let gone = match m.slot_mut(seq) {
            Some(s) => {
                s.refs = s.refs.saturating_sub(1);
                s.refs == 0
            }
            None => false,
        };
        if gone {
            m.remove(seq);
        }
    }

    /// The next ready message for a receiver with this selector, taken off
    /// the ready queue. Messages removed meanwhile (limits, age) are
    /// dropped from the queue on the way.
    fn take(m: &Mailbox, g: &mut Group, selector: Selector, local_only: bool) -> Option<u64> {
        if selector == Selector::Any && !local_only {
            loop {
                let mut e = g.ready.first_entry()?;
                let q = e.get_mut();
                while let Some(&seq) = q.front() {
                    q.pop_front();
                    if m.slot(seq).is_some() {
                        if q.is_empty() {
                            e.remove();
                        }
                        return Some(seq);
                    }
                    g.failed.remove(&seq);
                }
                e.remove();
            }
        }
        // Selection by type scans the ready messages, as msgrcv(2) scans a
        // queue: (priority key, index, type).
        let mut best: Option<(Reverse<u32>, usize, i64)> = None;
        'scan: for (&p, q) in &g.ready {
            for (i, &seq) in q.iter().enumerate() {
                let Some(s) = m.slot(seq) else { continue };
                if local_only && s.remote {
                    continue;
                }
                let t = s.mtype;
                match selector {
                    Selector::Any => {
                        best = Some((p, i, t));
                        break 'scan;
                    }
                    Selector::Type(want) if t == want => {
                        best = Some((p, i, t));
                        break 'scan;
                    }
                    Selector::NotType(not) if t != not => {
                        best = Some((p, i, t));
                        break 'scan;
                    }
                    Selector::UpTo(max) if t <= max && best.is_none_or(|b| t < b.2) => {
                        best = Some((p, i, t));
                    }
                    _ => {}
                }
            }
        }
        let (p, i, _) = best?;
        let q = g.ready.get_mut(&p).expect("scanned");
        let seq = q.remove(i).expect("scanned");
        if q.is_empty() {
            g.ready.remove(&p);
        }
        Some(seq)
    }

    /// Delivers ready messages of group `gid` to its members with room,
    /// round robin.
    fn dispatch(&mut self, mb: u32, gid: u32) {
        let now = self.now;
        let Some(m) = self.mailboxes.get_mut(&mb) else {
            return;
        };
        let Some(mut g) = m.groups.remove(&gid) else {
            return;
        };
        let mut done_now: Vec<u64> = Vec::new();
        let mut arm: Option<Instant> = None;
        'outer: while !g.ready.is_empty() && !g.members.is_empty() {
            let n = g.members.len();
            for k in 0..n {
                let idx = (g.rr + k) % n;
                let mem = &g.members[idx];
                if mem.ack == AckMode::Explicit && mem.in_flight >= mem.max_in_flight {
                    continue;
                }
                let (mconn, msub, selector, ack, local_only) =
                    (mem.conn, mem.sub, mem.selector, mem.ack, mem.local_only);
                let Some(conn) = self.conns.get_mut(&mconn) else {
                    continue;
                };
                if conn.out.len() >= OUT_HIGH {
                    continue;
                }
                let Some(seq) = Self::take(m, &mut g, selector, local_only) else {
                    if selector == Selector::Any && !local_only {
                        break 'outer;
                    }
                    continue;
                };
                let s = m.slot(seq).expect("taken live");
                let deliveries = g.failed.remove(&seq).unwrap_or(0) + 1;
                let tag = if ack == AckMode::Explicit {
                    let tag = conn.next_tag;
                    conn.next_tag += 1;
                    conn.inflight.insert(tag, (mb, gid, seq));
                    tag
                } else {
                    0
                };
                let head = DeliverHead {
                    sub: msub,
                    tag,
                    seq,
                    mtype: s.mtype,
                    priority: s.priority,
                    pid: s.sender.pid,
                    uid: s.sender.uid,
                    gid: s.sender.gid,
                    deliveries,
                };
                wire::deliver(
                    &mut conn.out,
                    &head,
                    &m.name,
                    s.id.as_deref(),
                    s.reason.as_deref(),
                    &s.payload,
                );
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(mconn);
                }
                if tag == 0 {
                    done_now.push(seq);
                } else {
                    let deadline = now + m.config.ack_wait;
                    g.inflight.insert(
                        seq,
                        Flight {
                            conn: mconn,
                            sub: msub,
                            tag,
                            deliveries,
                        },
                    );
                    g.members[idx].in_flight += 1;
                    g.ack_order.push_back((deadline, seq, deliveries));
                    if !g.ack_timer {
                        g.ack_timer = true;
                        arm = Some(deadline);
                    }
                }
                g.rr = idx + 1;
                continue 'outer;
            }
            break;
        }
        m.groups.insert(gid, g);
        if let Some(at) = arm {
            self.timer(
                at,
                Timer::AckWait {
                    mbox: mb,
                    group: gid,
                },
            );
        }
        if !done_now.is_empty() {
            for seq in done_now {
                self.release(mb, seq);
            }
            self.unpark(mb);
        }
    }

    /// Takes delivery `tag` of connection `conn` out of flight: (mailbox,
    /// group, seq, deliveries so far).
    fn take_flight(&mut self, conn: ConnId, tag: u64) -> Option<(u32, u32, u64, u32)> {
        let (mb, gid, seq) = self.conns.get_mut(&conn)?.inflight.remove(&tag)?;
        let g = self.mailboxes.get_mut(&mb)?.groups.get_mut(&gid)?;
        let f = g.inflight.remove(&seq)?;
        if f.tag != tag {
            // Not this delivery's (cannot happen: tags are per connection
            // and unique); put it back.
            g.inflight.insert(seq, f);
            return None;
        }
        if let Some(mem) = g.member(f.conn, f.sub) {
            mem.in_flight -= 1;
        }
        Some((mb, gid, seq, f.deliveries))
    }

    fn ack(&mut self, conn: ConnId, tag: u64) -> Option<(u32, u32)> {
        let (mb, gid, seq, _) = self.take_flight(conn, tag)?;
        self.release(mb, seq);
        Some((mb, gid))
    }

    /// Drops acknowledged deliveries from the front of a group's ack-wait
    /// order, so it holds only about what is in flight.
    fn trim_ack_order(&mut self, mb: u32, gid: u32) {
        let Some(g) = self
            .mailboxes
            .get_mut(&mb)
            .and_then(|m| m.groups.get_mut(&gid))
        else {
            return;
        };
        while let Some(&(_, seq, d)) = g.ack_order.front() {
            if g.inflight.get(&seq).is_some_and(|f| f.deliveries == d) {
                break;
            }
            g.ack_order.pop_front();
        }
    }

    /// Puts message `seq` back in group `gid`'s ready queue, as delivered
    /// `deliveries` times.
    fn give_back(&mut self, mb: u32, gid: u32, seq: u64, deliveries: u32) {
        let m = mbox!(self, mb);
        let Some(p) = m.slot(seq).map(|s| s.priority) else {
            return;
        };
        let Some(g) = m.groups.get_mut(&gid) else {
            return;
        };
        if deliveries > 0 {
            g.failed.insert(seq, deliveries);
        }
        g.push_ready(seq, p);
    }

    /// A delivery failed (nack, ack wait over): deliver again after the
    /// delay or the backoff, or dead-letter it after max-deliver.
    fn failed(
        &mut self,
        mb: u32,
        gid: u32,
        seq: u64,
        deliveries: u32,
        delay: Option<Duration>,
        why: &str,
    ) {
        let now = self.now;
        let m = mbox!(self, mb);
        if let Some(max) = m.config.max_deliver {
            if deliveries >= max {
                let why =
                    format!("{why} after each of {deliveries} deliveries (max-deliver {max})");
                self.dead_letter(mb, gid, seq, &why);
                self.unpark(mb);
                return;
            }
        }
        let delay = delay.unwrap_or_else(|| m.config.backoff_after(deliveries));
        let Some(p) = m.slot(seq).map(|s| s.priority) else {
            return;
        };
        let Some(g) = m.groups.get_mut(&gid) else {
            return;
        };
        g.failed.insert(seq, deliveries);
        if delay.is_zero() {
            g.push_ready(seq, p);
        } else {
            g.delayed.insert(seq);
            self.timer(
                now + delay,
                Timer::Redeliver {
                    mbox: mb,
                    group: gid,
                    seq,
                },
            );
        }
    }

    /// Moves message `seq` (taken out of group `gid`) to `dead.NAME` with
    /// the reason. A dead letter that fails again, or an inbox message, is
    /// dropped.
    fn dead_letter(&mut self, mb: u32, gid: u32, seq: u64, why: &str) {
        let m = mbox!(self, mb);
        if let Some(g) = m.groups.get_mut(&gid) {
            g.failed.remove(&seq);
        }
        if m.kind == Kind::User {
            if let Some(s) = m.slot(seq) {
                let copy = Stored {
                    mtype: s.mtype,
                    priority: s.priority,
                    sender: s.sender,
                    id: s.id.clone(),
                    reason: Some(why.into()),
                    payload: s.payload.clone(),
                    at: self.now,
                    refs: 0,
                    disk: 0,
                    remote: s.remote,
                };
                m.dead_letters += 1;
                let d = self.dead_box(mb);
                let dm = self.mailboxes.get_mut(&d).expect("just found");
                while !dm.fits(copy.payload.len()) {
                    let Some(old) = dm.oldest() else { break };
                    dm.remove(old);
                    dm.discarded += 1;
                }
                if dm.fits(copy.payload.len()) {
                    self.store(d, copy);
                }
            }
        }
        self.release(mb, seq);
    }

    // ------------------------------------------------------------------ timers

    /// Runs every timer due by `self.now`.
    pub(crate) fn fire_timers(&mut self) {
        while let Some(Reverse((at, t))) = self.timers.peek().copied() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            match t {
                Timer::AckWait { mbox: mb, group } => self.ack_wait_over(mb, group),
                Timer::Redeliver {
                    mbox: mb,
                    group,
                    seq,
                } => {
                    let Some(m) = self.mailboxes.get_mut(&mb) else {
                        continue;
                    };
                    let p = m.slot(seq).map(|s| s.priority);
                    let Some(g) = m.groups.get_mut(&group) else {
                        continue;
                    };
                    if g.delayed.remove(&seq) {
                        match p {
                            Some(p) => g.push_ready(seq, p),
                            None => {
                                g.failed.remove(&seq);
                            }
                        }
                        self.dispatch(mb, group);
                    }
                }
                Timer::Expire { mbox: mb } => self.expire(mb),
                Timer::SendTimeout {
                    mbox: mb,
                    conn,
                    corr,
                } => {
                    let Some(m) = self.mailboxes.get_mut(&mb) else {
                        continue;
                    };
                    let Some(i) = m
                        .parked
                        .iter()
                        .position(|p| p.conn == conn && p.corr == corr)
                    else {
                        continue;
                    };
                    let gone = m.parked.remove(i).map_or(0, |p| p.msg.payload.len());
                    let still = m.parked.iter().any(|q| q.conn == conn);
                    let text = format!(
                        "mailbox {} stayed full ({} messages, {} bytes) until the send's \
                         timeout: nothing was stored",
                        m.name, m.count, m.bytes
                    );
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.parked -= 1;
                        c.parked_bytes -= gone;
                        if !still {
                            c.parked_in.remove(&mb);
                        }
                    }
                    self.resumed.push(conn);
                    self.fail(conn, corr, (Code::Timeout, text));
                    // The send at the front may have been this one.
                    self.unpark(mb);
                }
            }
        }
    }

    fn ack_wait_over(&mut self, mb: u32, gid: u32) {
        let now = self.now;
        let mut expired = Vec::new();
        {
            let Some(g) = self
                .mailboxes
                .get_mut(&mb)
                .and_then(|m| m.groups.get_mut(&gid))
            else {
                return;
            };
            g.ack_timer = false;
            while let Some(&(deadline, seq, d)) = g.ack_order.front() {
                let live = g.inflight.get(&seq).is_some_and(|f| f.deliveries == d);
                if !live {
                    g.ack_order.pop_front();
                    continue;
                }
                if deadline > now {
                    break;
                }
                g.ack_order.pop_front();
                let f = g.inflight.remove(&seq).expect("live");
                if let Some(mem) = g.member(f.conn, f.sub) {
                    mem.in_flight -= 1;
                }
                expired.push((seq, f));
            }
            if let Some(&(deadline, _, _)) = g.ack_order.front() {
                g.ack_timer = true;
                self.timers.push(Reverse((
                    deadline,
                    Timer::AckWait {
                        mbox: mb,
                        group: gid,
                    },
                )));
            }
        }
        for (seq, f) in expired {
            if let Some(c) = self.conns.get_mut(&f.conn) {
                c.inflight.remove(&f.tag);
            }
            self.failed(
                mb,
                gid,
                seq,
                f.deliveries,
                None,
                "not acknowledged within the ack wait",
            );
        }
        self.dispatch(mb, gid);
    }

    fn expire(&mut self, mb: u32) {
        let now = self.now;
        let m = mbox!(self, mb);
        m.expiry = false;
        let Some(age) = m.config.max_age else { return };
        while let Some(seq) = m.oldest() {
            let at = m.slot(seq).expect("oldest is live").at;
            if now.duration_since(at) < age {
                m.expiry = true;
                let next = at + age;
                self.timer(next, Timer::Expire { mbox: mb });
                break;
            }
            m.remove(seq);
            m.discarded += 1;
        }
        self.unpark(mb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Cred = Cred {
        pid: 100,
        uid: 1000,
        gid: 1000,
    };

    struct T {
        s: State,
        corr: u32,
    }

    /// What a client got, decoded.
    #[derive(Debug, PartialEq)]
    enum Got {
        Welcome,
        Stored(u64),
        Duplicate(u64),
        NoReceivers,
        Fail(Code, String),
        Done(u64),
        Msg {
            tag: u64,
            mailbox: String,
            payload: Vec<u8>,
            deliveries: u32,
            reason: Option<String>,
            mtype: i64,
        },
        Closed(String),
        Info(Vec<MailboxInfo>),
    }

    impl T {
        fn new() -> T {
            T {
                s: State::new(1 << 20),
                corr: 0,
            }
        }
        fn join(&mut self, id: ConnId, cred: Cred) {
            self.s.connect(id, cred);
            let mut b = Vec::new();
            wire::hello(&mut b, false, false);
            self.s.handle(id, &b).unwrap();
            assert_eq!(self.drain(id), [Got::Welcome]);
        }
        fn req(&mut self, id: ConnId, f: impl FnOnce(&mut Vec<u8>, u32)) {
            self.corr += 1;
            let mut b = Vec::new();
            f(&mut b, self.corr);
            self.s.handle(id, &b).unwrap();
        }
        fn send(&mut self, id: ConnId, to: &str, payload: &str) {
            self.send_full(id, to, payload, 1, 0, None, wire::FOREVER);
        }
        #[allow(clippy::too_many_arguments)]
        fn send_full(
            &mut self,
            id: ConnId,
            to: &str,
            payload: &str,
            mtype: i64,
            prio: u32,
            msg_id: Option<&str>,
            timeout: u32,
        ) {
            self.req(id, |b, c| {
                wire::send(b, c, to, mtype, prio, timeout, msg_id, payload.as_bytes())
            });
        }
        fn sub(
            &mut self,
            id: ConnId,
            sub: u32,
            pattern: &str,
            group: &str,
            sel: Selector,
            max: u32,
        ) {
            self.req(id, |b, c| {
                wire::subscribe(b, c, sub, max, AckMode::Explicit, sel, pattern, group)
            });
        }
        /// Handles a frame `f` writes (acks, nacks: no correlation number).
        fn raw(&mut self, id: ConnId, f: impl FnOnce(&mut Vec<u8>)) {
            let mut b = Vec::new();
            f(&mut b);
            self.s.handle(id, &b).unwrap();
        }
        fn ack(&mut self, id: ConnId, tags: &[u64]) {
            self.raw(id, |b| wire::ack(b, tags));
        }
        fn drain(&mut self, id: ConnId) -> Vec<Got> {
            let out = std::mem::take(&mut self.s.conn_mut(id).unwrap().out);
            let mut got = Vec::new();
            let mut at = 0;
            while at < out.len() {
                let n = wire::frame_len(&out[at..], usize::MAX).unwrap().unwrap();
                got.push(match wire::read_event(&out[at..at + n]).unwrap() {
                    wire::Event::Welcome { .. } => Got::Welcome,
                    wire::Event::Confirm { outcome, seq, .. } => match outcome {
                        wire::STORED => Got::Stored(seq),
                        wire::DUPLICATE => Got::Duplicate(seq),
                        _ => Got::NoReceivers,
                    },
                    wire::Event::Fail { code, text, .. } => Got::Fail(code, text.into()),
                    wire::Event::Done { value, .. } => Got::Done(value),
                    wire::Event::Deliver(d) => Got::Msg {
                        tag: d.head.tag,
                        mailbox: d.mailbox.into(),
                        payload: d.payload.into(),
                        deliveries: d.head.deliveries,
                        reason: d.reason.map(Into::into),
                        mtype: d.head.mtype,
                    },
                    wire::Event::Closed { mailbox, .. } => Got::Closed(mailbox.into()),
                    wire::Event::Info { entries, .. } => Got::Info(entries),
                });
                at += n;
            }
            got
        }
        fn payloads(&mut self, id: ConnId) -> Vec<(String, u64)> {
            self.drain(id)
                .into_iter()
                .filter_map(|g| match g {
                    Got::Msg { payload, tag, .. } => {
                        Some((String::from_utf8(payload).unwrap(), tag))
                    }
                    _ => None,
                })
                .collect()
        }
        fn create(&mut self, id: ConnId, name: &str, config: Config) {
            self.req(id, |b, c| wire::create(b, c, false, name, &config));
            assert_eq!(self.drain(id), [Got::Done(1)]);
        }
        fn tick(&mut self, d: Duration) {
            self.s.now += d;
            self.s.wall += d.as_millis() as u64;
            self.s.fire_timers();
        }
        /// A state using the store in `dir` (segments of `seg` bytes),
        /// and what it recovered.
        fn durable(dir: &std::path::Path, seg: u64) -> (T, super::super::store::StoreReport) {
            let s = State::new(1);
            Self::durable_at(dir, seg, (s.now, s.wall))
        }
        /// The same, with the clocks at `(now, wall)`.
        fn durable_at(
            dir: &std::path::Path,
            seg: u64,
            (now, wall): (Instant, u64),
        ) -> (T, super::super::store::StoreReport) {
            let mut t = T::new();
            (t.s.now, t.s.wall) = (now, wall);
            let (st, found, report) =
                Store::open(dir, Fsync::Never, 1 << 20, seg, t.s.now, t.s.wall).unwrap();
            t.s.use_store(st, found);
            (t, report)
        }
        /// A turn's end: what was stored goes to the log.
        fn commit(&mut self) {
            self.s.commit().unwrap();
        }
    }

    /// What a durable mailbox holds: next sequence number, live messages
    /// (seq, payload's length and checksum, type, priority, id), ids
    /// deduplicated.
    type Snapshot = (
        u64,
        Vec<(u64, usize, u32, i64, u32, Option<String>)>,
        Vec<String>,
    );

    fn snapshot(s: &State) -> BTreeMap<String, Snapshot> {
        s.durable
            .iter()
            .map(|mb| {
                let m = &s.mailboxes[mb];
                let live = m
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| {
                        x.as_ref().map(|x| {
                            (
                                m.base + i as u64,
                                x.payload.len(),
                                crc32fast::hash(&x.payload),
                                x.mtype,
                                x.priority,
                                x.id.as_deref().map(String::from),
                            )
                        })
                    })
                    .collect();
                // Those still in the window (expired ones go lazily).
                let mut ids: Vec<String> = m
                    .dedup_order
                    .iter()
                    .filter(|(at, _)| s.now.duration_since(*at) < m.config.dedup_window)
                    .map(|(_, k)| k.to_string())
                    .collect();
                ids.sort();
                (m.name.clone(), (m.next_seq(), live, ids))
            })
            .collect()
    }

    fn other(pid: i32) -> Cred {
        Cred { pid, ..ME }
    }

    /// The broker's own process, as its NATS bridge connects.
    fn bridge(t: &mut T, id: ConnId) {
        let cred = other(std::process::id() as i32);
        t.s.connect(id, cred);
        let mut b = Vec::new();
        wire::hello(&mut b, true, false);
        t.s.handle(id, &b).unwrap();
        assert_eq!(t.drain(id), [Got::Welcome]);
    }

    #[test]
    fn the_bridge_takes_local_messages_only() {
        let mut t = T::new();
        // Another process may not claim to be the bridge.
        t.s.connect(9, other(9));
        let mut b = Vec::new();
        wire::hello(&mut b, true, false);
        let e = t.s.handle(9, &b).unwrap_err();
        assert!(e.0.contains("only the broker's own process"), "{e}");

        bridge(&mut t, 1);
        t.join(2, other(2));
        t.join(3, other(3));
        // Work queue: the bridge competes for local messages only; a
        // remote one waits for a local receiver.
        t.sub(1, 1, "jobs", "", Selector::Any, 100);
        t.send(1, "jobs", "remote-1");
        t.send(2, "jobs", "local-1");
        let _ = t.drain(2);
        let got: Vec<String> = t.payloads(1).into_iter().map(|p| p.0).collect();
        assert_eq!(got, ["local-1"]);
        t.send(1, "jobs", "remote-2");
        let got: Vec<String> = t.payloads(1).into_iter().map(|p| p.0).collect();
        assert!(got.is_empty(), "{got:?}");
        t.sub(3, 1, "jobs", "", Selector::Any, 100);
        let got: Vec<String> = t.payloads(3).into_iter().map(|p| p.0).collect();
        assert_eq!(got, ["remote-1", "remote-2"]);

        // Interest: the bridge's group does not hold remote messages, and
        // keeps none alive by itself.
        t.create(
            2,
            "news",
            Config {
                retention: Retention::Interest,
                ..Config::default()
            },
        );
        t.sub(1, 2, "news", "", Selector::Any, 100);
        t.send(1, "news", "remote-0");
        assert_eq!(t.drain(1), [Got::Done(1), Got::NoReceivers]);
        t.sub(3, 2, "news", "", Selector::Any, 100);
        t.send(1, "news", "remote-3");
        t.send(2, "news", "local-3");
        let _ = t.drain(2);
        let b: Vec<String> = t.payloads(1).into_iter().map(|p| p.0).collect();
        let (mut l, tags): (Vec<String>, Vec<u64>) = t.payloads(3).into_iter().unzip();
        assert_eq!(b, ["local-3"]);
        l.sort();
        assert_eq!(l, ["local-3", "remote-3"]);
        // Once the local receiver acks, only the bridge holds local-3.
        t.ack(3, &tags);
        let news = t.s.stat(ME, "news").unwrap();
        assert_eq!(news[0].depth, 1);
    }

    #[test]
    fn work_queue_shares_messages_and_acks_remove_them() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.join(3, other(3));
        for i in 0..4 {
            t.send(1, "jobs", &format!("m{i}"));
        }
        assert_eq!(
            t.drain(1),
            [
                Got::Stored(1),
                Got::Stored(2),
                Got::Stored(3),
                Got::Stored(4)
            ]
        );
        t.sub(2, 1, "jobs", "", Selector::Any, 2);
        t.sub(3, 1, "jobs", "", Selector::Any, 2);
        let a = t.payloads(2);
        let b = t.payloads(3);
        // Receiver 2 joined first and took two (its limit), 3 the rest.
        assert_eq!(
            a.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["m0", "m1"]
        );
        assert_eq!(
            b.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["m2", "m3"]
        );
        t.ack(2, &[a[0].1, a[1].1]);
        t.ack(3, &[b[0].1]);
        t.req(1, |buf, c| wire::stat(buf, c, "jobs"));
        let [Got::Info(info)] = &t.drain(1)[..] else {
            panic!()
        };
        assert_eq!(
            (info[0].depth, info[0].in_flight, info[0].consumers),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_work_queue_outlives_its_receivers() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.sub(2, 1, "jobs", "", Selector::Any, 10);
        t.s.disconnect(2);
        t.send(1, "jobs", "later");
        t.join(3, other(3));
        t.sub(3, 1, "jobs", "", Selector::Any, 10);
        assert_eq!(t.payloads(3)[0].0, "later");
    }

    #[test]
    fn released_messages_do_not_count_as_deliveries() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.send(1, "jobs", "x");
        t.sub(2, 1, "jobs", "", Selector::Any, 10);
        let tag = t.payloads(2)[0].1;
        t.raw(2, |b| wire::release(b, &[tag]));
        let got = t.drain(2);
        assert!(
            matches!(&got[..], [Got::Msg { deliveries: 1, .. }]),
            "{got:?}"
        );
    }

    #[test]
    fn disconnect_gives_messages_in_flight_to_another() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.join(3, other(3));
        t.sub(2, 1, "jobs", "", Selector::Any, 10);
        t.send(1, "jobs", "x");
        assert_eq!(t.payloads(2).len(), 1);
        t.sub(3, 1, "jobs", "", Selector::Any, 10);
        assert!(t.payloads(3).is_empty());
        t.s.disconnect(2);
        let got = t.drain(3);
        assert!(
            matches!(&got[..], [Got::Msg { deliveries: 2, .. }]),
            "{got:?}"
        );
    }

    #[test]
    fn fan_out_and_groups_with_interest() {
        let mut t = T::new();
        for id in 1..=4 {
            t.join(id, other(id as i32));
        }
        t.create(
            1,
            "news",
            Config {
                retention: Retention::Interest,
                ..Config::default()
            },
        );
        t.send(1, "news", "nobody");
        assert_eq!(t.drain(1), [Got::NoReceivers]);
        t.sub(2, 1, "news", "", Selector::Any, 10);
        t.sub(3, 1, "news", "g", Selector::Any, 10);
        t.sub(4, 1, "news", "g", Selector::Any, 10);
        t.drain(2);
        t.drain(3);
        t.drain(4);
        t.send(1, "news", "a");
        t.send(1, "news", "b");
        assert_eq!(t.payloads(2).len(), 2, "a fan-out receiver gets all");
        assert_eq!(
            t.payloads(3).len() + t.payloads(4).len(),
            2,
            "the group shares"
        );
    }

    #[test]
    fn limits_retention_replays_for_new_groups() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.create(
            1,
            "log",
            Config {
                retention: Retention::Limits,
                max_msgs: Some(2),
                when_full: WhenFull::DropOldest,
                ..Config::default()
            },
        );
        for m in ["1", "2", "3"] {
            t.send(1, "log", m);
        }
        t.sub(2, 1, "log", "replay", Selector::Any, 10);
        let got: Vec<String> = t.payloads(2).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["2", "3"]);
    }

    #[test]
    fn priority_then_fifo_and_selection_by_type() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        for (p, m) in [(1, "low1"), (5, "high1"), (1, "low2"), (5, "high2")] {
            t.send_full(1, "q", m, 1, p, None, wire::FOREVER);
        }
        t.sub(2, 1, "q", "", Selector::Any, 10);
        let got: Vec<String> = t.payloads(2).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["high1", "high2", "low1", "low2"]);

        t.join(3, other(3));
        t.join(4, other(4));
        for (ty, m) in [(3, "t3"), (2, "t2a"), (5, "t5"), (2, "t2b")] {
            t.send_full(3, "typed", m, ty, 0, None, wire::FOREVER);
        }
        t.sub(4, 1, "typed", "", Selector::UpTo(4), 1);
        let first = t.payloads(4);
        assert_eq!(first[0].0, "t2a", "lowest type up to 4 first");
        t.ack(4, &[first[0].1]);
        assert_eq!(t.payloads(4)[0].0, "t2b");
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        for (ty, m) in [(3, "t3"), (2, "t2"), (5, "t5")] {
            t.send_full(1, "typed", m, ty, 0, None, wire::FOREVER);
        }
        t.sub(2, 1, "typed", "", Selector::Type(5), 10);
        assert_eq!(t.payloads(2)[0].0, "t5");
        t.sub(2, 2, "typed", "", Selector::NotType(3), 10);
        assert_eq!(t.payloads(2)[0].0, "t2");
    }

    #[test]
    fn ack_wait_backoff_and_dead_letters() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        t.create(
            1,
            "jobs",
            Config {
                ack_wait: Duration::from_secs(1),
                max_deliver: Some(3),
                backoff: vec![Duration::from_secs(2)],
                ..Config::default()
            },
        );
        t.send(1, "jobs", "poison");
        assert_eq!(t.drain(1), [Got::Stored(1)]);
        t.sub(2, 1, "jobs", "", Selector::Any, 10);
        t.drain(2);
        t.tick(Duration::from_millis(1001));
        // Waits out its 2 s backoff first.
        assert!(t.payloads(2).is_empty());
        t.tick(Duration::from_secs(2));
        let got = t.drain(2);
        assert!(
            matches!(&got[..], [Got::Msg { deliveries: 2, tag, .. }] if *tag > 0),
            "{got:?}"
        );
        let Got::Msg { tag, .. } = got[0] else {
            unreachable!()
        };
        t.raw(2, |b| wire::nack(b, tag, 0));
        let got = t.drain(2);
        let [Got::Msg {
            deliveries: 3, tag, ..
        }] = got[..]
        else {
            panic!("{got:?}")
        };
        t.raw(2, |b| wire::nack(b, tag, wire::BY_BACKOFF));
        // The third failure: to dead.jobs with the reason.
        t.sub(2, 2, "dead.jobs", "", Selector::Any, 10);
        let got = t.drain(2);
        let dead = got.iter().find_map(|g| match g {
            Got::Msg {
                mailbox,
                reason,
                payload,
                ..
            } if mailbox == "dead.jobs" => Some((reason.clone(), payload.clone())),
            _ => None,
        });
        let (reason, payload) = dead.expect("a dead letter");
        assert_eq!(payload, b"poison");
        assert!(reason
            .unwrap()
            .contains("negatively acknowledged after each of 3 deliveries (max-deliver 3)"));
        t.req(1, |b, c| wire::stat(b, c, "jobs"));
        let [Got::Info(i)] = &t.drain(1)[..] else {
            panic!()
        };
        assert_eq!((i[0].depth, i[0].dead_letters), (0, 1));
    }

    #[test]
    fn when_full_policies() {
        let mut t = T::new();
        t.join(1, other(1));
        t.join(2, other(2));
        let small = |when_full| Config {
            max_msgs: Some(1),
            when_full,
            ..Config::default()
        };
        t.create(1, "f", small(WhenFull::Fail));
        t.create(1, "d", small(WhenFull::DropOldest));
        t.create(1, "b", small(WhenFull::Block));
        t.send(1, "f", "1");
        t.send(1, "f", "2");
        let got = t.drain(1);
        assert!(
            matches!(&got[..], [Got::Stored(1), Got::Fail(Code::Full, _)]),
            "{got:?}"
        );
        t.send(1, "d", "1");
        t.send(1, "d", "2");
        t.drain(1);
        t.sub(2, 1, "d", "", Selector::Any, 10);
        assert_eq!(t.payloads(2)[0].0, "2");

        t.send(1, "b", "1");
        t.send_full(1, "b", "2", 1, 0, None, 0);
        t.send_full(1, "b", "3", 1, 0, None, 500);
        t.send(1, "b", "4");
        let got = t.drain(1);
        assert!(
            matches!(&got[..], [Got::Stored(1), Got::Fail(Code::Full, _)]),
            "{got:?}"
        );
        assert_eq!(t.s.conn(1).unwrap().parked, 2);
        t.tick(Duration::from_millis(501));
        let got = t.drain(1);
        assert!(matches!(&got[..], [Got::Fail(Code::Timeout, _)]), "{got:?}");
        t.sub(2, 2, "b", "", Selector::Any, 10);
        let one = t.payloads(2);
        t.ack(2, &[one[0].1]);
        // Room: the parked "4" is stored and delivered.
        assert_eq!(t.drain(1), [Got::Stored(2)]);
        assert_eq!(t.payloads(2)[0].0, "4");
    }

    #[test]
    fn dedup_access_inbox_and_removal() {
        let mut t = T::new();
        t.join(1, ME);
        t.send_full(1, "q", "a", 1, 0, Some("id1"), wire::FOREVER);
        t.send_full(1, "q", "a", 1, 0, Some("id1"), wire::FOREVER);
        assert_eq!(t.drain(1), [Got::Stored(1), Got::Duplicate(1)]);
        let stranger = Cred {
            pid: 7,
            uid: 2000,
            gid: 2000,
        };
        t.join(7, stranger);
        t.send(7, "q", "x");
        t.sub(7, 1, "q", "", Selector::Any, 1);
        t.req(7, |b, c| wire::delete(b, c, "q"));
        let got = t.drain(7);
        assert!(
            got.iter()
                .filter(|g| matches!(g, Got::Fail(Code::Denied, _)))
                .count()
                == 3,
            "{got:?}"
        );
        // Direct: pid 7 may not write to pid 100's inbox (another user),
        // but the same user may.
        t.send(7, "pid.100", "hi");
        assert!(matches!(&t.drain(7)[..], [Got::Fail(Code::Denied, _)]));
        t.join(2, other(101));
        t.send(2, "pid.100", "hi");
        assert_eq!(t.drain(2), [Got::Stored(1)]);
        t.send(2, "pid.555", "hi");
        assert!(matches!(
            &t.drain(2)[..],
            [Got::Fail(Code::NoSuchProcess, _)]
        ));
        t.sub(1, 2, "pid.100", "", Selector::Any, 5);
        let got = t.drain(1);
        assert!(
            matches!(&got[..], [Got::Msg { payload, .. }, Got::Done(1)] if payload == b"hi"),
            "{got:?}"
        );
        t.s.disconnect(1);
        t.send(2, "pid.100", "gone");
        assert!(matches!(
            &t.drain(2)[..],
            [Got::Fail(Code::NoSuchProcess, _)]
        ));

        t.sub(2, 1, "q", "", Selector::Any, 5);
        t.drain(2);
        t.req(2, |b, c| wire::delete(b, c, "q"));
        let got = t.drain(2);
        assert_eq!(got, [Got::Closed("q".into()), Got::Done(0)]);
    }

    #[test]
    fn wildcards_attach_to_new_mailboxes() {
        let mut t = T::new();
        t.join(1, ME);
        t.join(2, other(2));
        t.send(1, "orders.eu", "1");
        t.sub(2, 1, "orders.*", "", Selector::Any, 10);
        t.send(1, "orders.us", "2");
        t.send(1, "orders.us.west", "3");
        let got: Vec<String> = t.payloads(2).into_iter().map(|x| x.0).collect();
        assert_eq!(got, ["1", "2"]);
    }

    /// A small deterministic generator (xorshift), for the random walks.
    use super::super::Rng;

    /// Random requests from three clients (sends, receives with every
    /// selector, acks of real and made-up tags, nacks, rejects, releases,
    /// unsubscribes, disconnects, time passing), mutated frames among
    /// them: the broker never panics, answers every frame or refuses it,
    /// and ends with its counts consistent.
    #[test]
    fn random_walks_never_panic() {
        // Miri interprets every step: fewer walks there.
        for seed in 1..=if cfg!(miri) { 2 } else { 40u64 } {
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut t = T::new();
            let names = ["a", "b", "a.x", "pid.1", "dead.a", "pid.2"];
            for id in 1..=3 {
                t.join(id, other(id as i32));
            }
            t.create(
                1,
                "b",
                Config {
                    retention: Retention::Interest,
                    max_msgs: Some(5),
                    when_full: WhenFull::DropOldest,
                    max_deliver: Some(2),
                    ack_wait: Duration::from_millis(50),
                    ..Config::default()
                },
            );
            let mut tags: Vec<(ConnId, u64)> = Vec::new();
            for _ in 0..400 {
                let id = 1 + r.below(3);
                if t.s.conn(id).is_none() {
                    t.join(id, other(id as i32));
                }
                let name = names[r.below(names.len() as u64) as usize];
                let mut b = Vec::new();
                match r.below(12) {
                    0..=2 => wire::send(
                        &mut b,
                        1,
                        name,
                        1 + r.below(4) as i64,
                        r.below(3) as u32,
                        [0, 50, wire::FOREVER][r.below(3) as usize],
                        (r.below(2) == 0).then_some("id"),
                        b"m",
                    ),
                    3 => {
                        let sel = [
                            Selector::Any,
                            Selector::Type(2),
                            Selector::NotType(1),
                            Selector::UpTo(3),
                        ][r.below(4) as usize];
                        let pat = ["a", "b", "a.*", ">", "dead.>"][r.below(5) as usize];
                        let group = ["", "g"][r.below(2) as usize];
                        wire::subscribe(
                            &mut b,
                            1,
                            r.below(4) as u32,
                            1 + r.below(3) as u32,
                            AckMode::Explicit,
                            sel,
                            pat,
                            group,
                        )
                    }
                    4 | 5 => {
                        let mine: Vec<u64> =
                            tags.iter().filter(|(c, _)| *c == id).map(|x| x.1).collect();
                        let tag = if !mine.is_empty() && r.below(4) != 0 {
                            mine[r.below(mine.len() as u64) as usize]
                        } else {
                            r.next() % 64
                        };
                        match r.below(4) {
                            0 => wire::ack(&mut b, &[tag]),
                            1 => wire::nack(
                                &mut b,
                                tag,
                                [0, 10, wire::BY_BACKOFF][r.below(3) as usize],
                            ),
                            2 => wire::reject(&mut b, tag, "no"),
                            _ => wire::release(&mut b, &[tag]),
                        }
                    }
                    6 => wire::unsubscribe(&mut b, 1, r.below(4) as u32),
                    7 => wire::stat(&mut b, 1, ""),
                    8 => wire::delete(&mut b, 1, name),
                    9 => {
                        t.s.disconnect(id);
                        tags.retain(|(c, _)| *c != id);
                        continue;
                    }
                    10 => {
                        t.tick(Duration::from_millis(r.below(80)));
                        continue;
                    }
                    _ => {
                        // A valid frame, mutated.
                        wire::send(&mut b, 1, name, 1, 0, 0, None, b"xyz");
                        let i = 4 + r.below(b.len() as u64 - 4) as usize;
                        b[i] ^= 1 << r.below(8);
                        if r.below(2) == 0 {
                            let cut = 5 + r.below(b.len() as u64 - 5) as usize;
                            b.truncate(cut);
                            let len = (cut - 4) as u32;
                            b[..4].copy_from_slice(&len.to_le_bytes());
                        }
                    }
                }
                if t.s.handle(id, &b).is_err() {
                    t.s.disconnect(id);
                    tags.retain(|(c, _)| *c != id);
                    continue;
                }
                for got in t.drain(id) {
                    if let Got::Msg { tag, .. } = got {
                        if tag != 0 {
                            tags.push((id, tag));
                        }
                    }
                }
            }
            for m in t.s.mailboxes.values() {
                let live = m.slots.iter().flatten().count() as u64;
                let bytes: u64 = m
                    .slots
                    .iter()
                    .flatten()
                    .map(|s| s.payload.len() as u64)
                    .sum();
                assert_eq!((m.count, m.bytes), (live, bytes), "seed {seed}");
            }
        }
    }

    #[test]
    fn garbage_frames_are_errors() {
        let mut s = State::new(1024);
        s.connect(1, ME);
        assert!(s.handle(1, &[1, 0, 0, 0, SEND_OP]).is_err());
        let mut b = Vec::new();
        wire::send(&mut b, 1, "q", 1, 0, 0, None, b"x");
        assert!(s.handle(1, &b).is_err(), "not greeted");
    }
    const SEND_OP: u8 = 0x02;

    fn durable(retention: Retention) -> Config {
        Config {
            retention,
            durable: true,
            ..Config::default()
        }
    }

    #[test]
    fn durable_mailboxes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let before;
        {
            let (mut t, report) = T::durable(dir.path(), super::super::store::SEGMENT_BYTES);
            assert_eq!((report.mailboxes, report.problems.len()), (0, 0));
            t.join(1, ME);
            t.create(1, "jobs", durable(Retention::WorkQueue));
            t.create(1, "fan", durable(Retention::Interest));
            t.create(1, "log", durable(Retention::Limits));
            t.create(1, "plain", Config::default());
            for i in 1..=5 {
                let id = format!("i{i}");
                t.send_full(
                    1,
                    "jobs",
                    &format!("job {i}"),
                    i,
                    i as u32 % 2,
                    Some(&id),
                    0,
                );
            }
            t.send(1, "plain", "gone with the broker");
            t.send(1, "log", "kept");
            t.sub(1, 1, "fan", "", Selector::Any, 10);
            t.send(1, "fan", "for whoever comes next");
            t.sub(1, 2, "jobs", "", Selector::Any, 2);
            t.drain(1);
            // Two delivered: one acknowledged, one rejected to dead.jobs.
            let jobs = t.s.names["jobs"];
            let mut got: Vec<u64> =
                t.s.conn(1)
                    .unwrap()
                    .inflight
                    .iter()
                    .filter(|(_, at)| at.0 == jobs)
                    .map(|(&tag, _)| tag)
                    .collect();
            got.sort();
            assert_eq!(got.len(), 2);
            t.ack(1, &got[..1]);
            t.raw(1, |b| wire::reject(b, got[1], "bad input"));
            t.s.unsubscribe(1, 2);
            t.commit();
            before = snapshot(&t.s);
            // Dropped without a clean stop, as SIGKILL would leave it.
        }
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            ["dead.jobs", "fan", "jobs", "log"]
        );
        let (mut t, report) = T::durable(dir.path(), super::super::store::SEGMENT_BYTES);
        assert_eq!(report.mailboxes, 4, "{report}");
        assert_eq!(report.messages, 3 + 1 + 1 + 1, "{report}");
        assert!(report.problems.is_empty(), "{report}");
        assert_eq!(snapshot(&t.s), before);
        assert!(!t.s.names.contains_key("plain"));
        t.join(2, ME);
        // An id confirmed before the restart is still recognised.
        t.send_full(2, "jobs", "again", 1, 0, Some("i1"), 0);
        assert_eq!(t.drain(2), [Got::Duplicate(1)]);
        t.send(2, "jobs", "new");
        assert_eq!(t.drain(2), [Got::Stored(6)]);
        // The interest mailbox's message goes to the first receiver.
        t.sub(2, 1, "fan", "", Selector::Any, 10);
        let got = t.payloads(2);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "for whoever comes next");
        let dead = t.s.names["dead.jobs"];
        assert_eq!(t.s.mailboxes[&dead].count, 1);
        // Removal takes the files too.
        t.req(2, |b, c| wire::delete(b, c, "log"));
        assert_eq!(t.drain(2), [Got::Done(0)]);
        t.commit();
        drop(t);
        let (t, report) = T::durable(dir.path(), super::super::store::SEGMENT_BYTES);
        assert_eq!(report.mailboxes, 3, "{report}");
        assert!(!t.s.names.contains_key("log"));
        // One broker per store.
        let e = Store::open(dir.path(), Fsync::Never, 1 << 20, 1 << 20, t.s.now, 0).unwrap_err();
        assert!(e.to_string().contains("in use by another broker"), "{e}");
    }

    #[test]
    fn a_durable_mailbox_needs_a_store() {
        let mut t = T::new();
        t.join(1, ME);
        t.req(1, |b, c| {
            wire::create(b, c, false, "d", &durable(Retention::WorkQueue))
        });
        let got = t.drain(1);
        assert!(
            matches!(&got[..], [Got::Fail(Code::Storage, text)] if text.contains("--store")),
            "{got:?}"
        );
    }

    /// Random sends, receives, acks, nacks, rejects, drops and time over
    /// two durable mailboxes with small segments (so segments fill, go,
    /// and have their live messages copied out); at random points the
    /// broker "crashes" after a turn: what it recovers is exactly what it
    /// held.
    #[test]
    fn durable_random_walks_recover_what_was_held() {
        // Segments removed, messages copied out of them: over all seeds.
        let mut reclaimed = (0, 0);
        // Miri interprets every step: fewer walks there.
        for seed in 1..=if cfg!(miri) { 2 } else { 24u64 } {
            let dir = tempfile::tempdir().unwrap();
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let seg = 300 + r.below(2000);
            let (mut t, _) = T::durable(dir.path(), seg);
            t.join(1, ME);
            // A short dedup window, so that segments holding ids can go.
            let window = Duration::from_secs(2);
            t.create(
                1,
                "w",
                Config {
                    max_deliver: Some(3),
                    dedup_window: window,
                    ..durable(Retention::WorkQueue)
                },
            );
            t.create(
                1,
                "l",
                Config {
                    max_msgs: Some(15),
                    when_full: WhenFull::DropOldest,
                    dedup_window: window,
                    ..durable(Retention::Limits)
                },
            );
            let mut crashes = 0;
            for step in 0..400 {
                if t.s.conn(1).is_none() {
                    t.join(1, ME);
                }
                match r.below(10) {
                    0..=3 => {
                        let to = ["w", "l"][r.below(2) as usize];
                        let id = (r.below(3) == 0).then(|| format!("id{}", r.below(40)));
                        let body = "x".repeat(r.below(90) as usize);
                        t.send_full(
                            1,
                            to,
                            &body,
                            1 + r.below(3) as i64,
                            r.below(3) as u32,
                            id.as_deref(),
                            0,
                        );
                    }
                    4 => {
                        let to = ["w", "l", "dead.w"][r.below(3) as usize];
                        let sub = r.below(4) as u32;
                        t.sub(1, sub, to, "", Selector::Any, 1 + r.below(4) as u32);
                    }
                    5 | 6 => {
                        let tags: Vec<u64> =
                            t.s.conn(1).unwrap().inflight.keys().copied().collect();
                        if let Some(&tag) = tags.get(r.below(tags.len() as u64 + 1) as usize) {
                            match r.below(3) {
                                0 => t.ack(1, &[tag]),
                                1 => t.raw(1, |b| wire::nack(b, tag, 0)),
                                _ => t.raw(1, |b| wire::reject(b, tag, "no")),
                            }
                        }
                    }
                    7 => {
                        t.s.unsubscribe(1, r.below(4) as u32);
                    }
                    8 => t.tick(Duration::from_millis(r.below(400))),
                    _ => {
                        t.commit();
                        let before = snapshot(&t.s);
                        for mb in &t.s.durable {
                            let (d, c) = t.s.mailboxes[mb].log.as_ref().unwrap().reclaimed();
                            reclaimed.0 += d;
                            reclaimed.1 += c;
                        }
                        let (now, wall) = (t.s.now, t.s.wall);
                        drop(t);
                        let (t2, report) = T::durable_at(dir.path(), seg, (now, wall));
                        assert!(
                            report.problems.is_empty(),
                            "seed {seed} step {step}: {report}"
                        );
                        let after = snapshot(&t2.s);
                        for (name, b) in &before {
                            let a = &after[name];
                            assert_eq!(a.0, b.0, "seed {seed} step {step} {name}: next seq");
                            let sa: Vec<u64> = a.1.iter().map(|x| x.0).collect();
                            let sb: Vec<u64> = b.1.iter().map(|x| x.0).collect();
                            assert_eq!(sa, sb, "seed {seed} step {step} {name}: seqs");
                            assert_eq!(a.1, b.1, "seed {seed} step {step} {name}: messages");
                            assert_eq!(a.2, b.2, "seed {seed} step {step} {name}: ids");
                        }
                        assert_eq!(after.len(), before.len());
                        t = t2;
                        crashes += 1;
                        continue;
                    }
                }
                t.drain(1);
                t.commit();
            }
            assert!(crashes > 10, "seed {seed}: {crashes} restarts");
            // Counts stay consistent with what is held.
            for m in t.s.mailboxes.values() {
                assert_eq!(
                    m.count,
                    m.slots.iter().flatten().count() as u64,
                    "seed {seed}"
                );
            }
        }
        assert!(reclaimed.0 > 100 && reclaimed.1 > 20, "{reclaimed:?}");
    }

    /// A log whose newest segment was cut short or damaged at any byte:
    /// recovery loads the records before the damage, cuts the rest off the
    /// file (a second start finds nothing wrong), and never panics.
    #[test]
    fn a_damaged_tail_is_cut_not_loaded() {
        let payload = |i: u64| format!("message number {i}");
        let dir = tempfile::tempdir().unwrap();
        let seg_file;
        let records: Vec<u64>;
        {
            let (mut t, _) = T::durable(dir.path(), 1 << 20);
            t.join(1, ME);
            t.create(1, "q", durable(Retention::WorkQueue));
            for i in 1..=12 {
                t.send(1, "q", &payload(i));
                t.commit();
            }
            let mb = t.s.names["q"];
            let log = t.s.mailboxes[&mb].log.as_ref().unwrap();
            seg_file = log.newest_path();
            // Where each message's record ends.
            let mut end = 17u64;
            records = (1..=12)
                .map(|i| {
                    end += t.s.mailboxes[&mb]
                        .slot(i)
                        .map(super::super::store::msg_len)
                        .unwrap();
                    end
                })
                .collect();
        }
        let pristine = std::fs::read(&seg_file).unwrap();
        assert_eq!(pristine.len() as u64, *records.last().unwrap());
        let mut r = Rng(0x1234_5678_9abc_def1);
        for trial in 0..200 {
            let mut bytes = pristine.clone();
            let at = r.below(bytes.len() as u64) as usize;
            let truncated = trial % 2 == 0;
            if truncated {
                bytes.truncate(at);
            } else {
                bytes[at] ^= 1 << r.below(8);
            }
            std::fs::write(&seg_file, &bytes).unwrap();
            // Messages whose records end before the damage survive.
            let whole = records.iter().filter(|&&end| end <= at as u64).count();
            let (t, report) = T::durable(dir.path(), 1 << 20);
            let mb = t.s.names["q"];
            let m = &t.s.mailboxes[&mb];
            assert_eq!(m.count, whole as u64, "trial {trial} at {at}: {report}");
            for i in 1..=whole as u64 {
                assert_eq!(&*m.slot(i).unwrap().payload, payload(i).as_bytes());
            }
            let boundary = [0, 17].contains(&at) || records.contains(&(at as u64));
            assert_eq!(
                report.problems.is_empty(),
                truncated && boundary,
                "trial {trial} at {at}: {report}"
            );
            drop(t);
            let (t, report) = T::durable(dir.path(), 1 << 20);
            assert!(report.problems.is_empty(), "second start: {report}");
            assert_eq!(t.s.mailboxes[&t.s.names["q"]].count, whole as u64);
        }
    }
}
