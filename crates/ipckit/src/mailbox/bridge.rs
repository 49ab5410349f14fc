//! The broker's bridge to NATS: chosen mailboxes past one machine.
//!
//! A broker started with [`BrokerBuilder::nats`](super::BrokerBuilder::nats)
//! runs this bridge in its own process. It is two clients of the broker
//! (marked as its bridge, which only the broker's own process may be) and
//! one NATS connection:
//!
//! - **Out.** The bridge receives from every bridged mailbox, as one more
//!   receiver: a work queue's messages it competes for with the local
//!   receivers (what it takes is for the other brokers' receivers), a
//!   fan-out mailbox's (interest, limits) it gets all of, in a group of
//!   its own. It publishes each to NATS and acknowledges it to the broker
//!   only once NATS has it: a durable mailbox's to JetStream (subject
//!   `$IPCKIT.work.NAME` or `$IPCKIT.fan.NAME`, the stream's
//!   acknowledgement), the others as a NATS
//!   request on subject `NAME` answered by a broker that stored it. When
//!   that fails (no other broker, NATS down), the message is given back
//!   and tried again after a while; it never leaves the mailbox unstored.
//! - **In.** Every message from NATS for a bridged mailbox that exists on
//!   this broker is sent to it, marked remote (the bridge never takes a
//!   remote message back out, so nothing loops), with the message's id:
//!   a message delivered twice by NATS is stored once. Only then is it
//!   acknowledged to NATS. A work queue's messages go to one broker (a
//!   NATS queue group, a JetStream consumer all brokers share, which a
//!   broker pulls from only while it has receivers of its own for them),
//!   a fan-out mailbox's to every broker (a subscription, a JetStream
//!   consumer per broker).
//!
//! So each hop hands a message on only once the next one has stored it:
//! acknowledgement, redelivery and deduplication hold end to end, and a
//! receiver on another machine sees them as a local one does. What it
//! does not see is the original sender: a message that came through the
//! bridge carries the bridge's credentials (this broker's process); NATS
//! headers keep the original's (`Ipckit-Sender: pid uid gid`, from the
//! other machine, for information only).
//!
//! ## On the NATS side
//!
//! | header | meaning |
//! |---|---|
//! | `Nats-Msg-Id` | the message id (the sender's, or one the bridge makes): deduplicated by JetStream and by every broker |
//! | `Ipckit-Origin` | the id of the broker it came from |
//! | `Ipckit-Kind` | `work` (to one broker) or `fan` (to every broker); absent: as the receiving broker's mailbox says |
//! | `Ipckit-Type`, `Ipckit-Priority` | the message's type and priority |
//!
//! Any NATS client may take part: a request to `NAME` (or a JetStream
//! publish to `$IPCKIT.work.NAME`, for one broker, or `$IPCKIT.fan.NAME`,
//! for each) reaches mailbox `NAME` of the brokers that bridge it. The
//! two JetStream subjects keep the two routes apart: the work consumer
//! that all brokers share sees only work messages, each broker's own
//! consumer only fan-out ones, so that no message waits for a consumer
//! it is not for (the stream keeps a message while a consumer it is for
//! has not acknowledged it).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc as amp, oneshot};

use super::client::{AckPolicy, Client, Delivery, ErrorKind, Message, Outcome, SubscribeOptions};
use super::config::Retention;
use super::name::Pattern;

const H_ORIGIN: &str = "Ipckit-Origin";
const H_KIND: &str = "Ipckit-Kind";
const H_TYPE: &str = "Ipckit-Type";
const H_PRIORITY: &str = "Ipckit-Priority";
const H_SENDER: &str = "Ipckit-Sender";
const H_ERROR: &str = "Ipckit-Error";
/// Prefix of the subjects JetStream keeps (durable mailboxes).
const JS_PREFIX: &str = "$IPCKIT.";
/// The NATS queue group and the shared JetStream consumer of work queues.
const WORK: &str = "ipckit-work";
/// How long a request for a non-durable message waits for a broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A message NATS would not take is tried again after this.
const RETRY: Duration = Duration::from_millis(500);
/// How long what the bridge knows of a local mailbox holds.
const META_TTL: Duration = Duration::from_secs(2);
/// How long JetStream waits for this broker to have stored a message
/// before it gives it to another (or again to this one, which knows it
/// by its id).
const JS_ACK_WAIT: Duration = Duration::from_secs(5);
/// Messages the bridge holds from the broker, per mailbox, at most.
const OUT_WINDOW: u32 = 1024;

/// What [`BrokerBuilder::nats`](super::BrokerBuilder::nats) was given.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: String,
    pub patterns: Vec<String>,
}

impl Settings {
    pub(crate) fn new(url: &str, patterns: &[&str]) -> io::Result<Settings> {
        if patterns.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the NATS bridge needs at least one mailbox name or pattern to bridge",
            ));
        }
        for p in patterns {
            Pattern::new(p)?;
            if p.split('.')
                .next()
                .is_some_and(|t| super::name::RESERVED.contains(&t))
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{p}: process inboxes (pid.…) and dead letters (dead.…) stay on their \
                         broker and cannot be bridged"
                    ),
                ));
            }
        }
        // Checked now: a bad URL found by the bridge's thread would only
        // be a line on stderr of a broker that runs on without it.
        url.parse::<async_nats::ServerAddr>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NATS server {url:?}: {e} (like nats://host:4222)"),
            )
        })?;
        Ok(Settings {
            url: url.to_string(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        })
    }
}

/// Eight random bytes as hex.
fn random_id() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// This broker's id on NATS: kept in the store (`DIR/bridge-id`) so that
/// its JetStream consumer is the same after a restart; random without a
/// store.
pub(crate) fn broker_id(store: Option<&Path>) -> io::Result<String> {
    let Some(dir) = store else {
        return Ok(random_id());
    };
    let path = dir.join("bridge-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
    let id = random_id();
    let tmp = dir.join("bridge-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

fn say(what: std::fmt::Arguments<'_>) {
    eprintln!("ipckit nats bridge: {what}");
}

/// The JetStream stream of a pattern: a name NATS accepts, with a hash
/// of the pattern so that two patterns never share one.
fn stream_name(pattern: &str) -> String {
    let readable: String = pattern
        .chars()
        .map(|c| match c {
            '.' => '_',
            '*' => 'S',
            '>' => 'R',
            c => c,
        })
        .collect();
    format!(
        "IPCKIT_{readable}_{:08x}",
        crc32fast::hash(pattern.as_bytes())
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// To one broker (a work queue).
    Work,
    /// To every broker (interest or limits retention).
    Fan,
}

impl Kind {
    fn of(r: Retention) -> Kind {
        if r == Retention::WorkQueue {
            Kind::Work
        } else {
            Kind::Fan
        }
    }
    fn word(self) -> &'static str {
        match self {
            Kind::Work => "work",
            Kind::Fan => "fan",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    durable: bool,
    kind: Kind,
}

/// What the bridge knows of local mailboxes, briefly.
#[derive(Default)]
struct Metas(HashMap<String, (Instant, Option<Meta>)>);

impl Metas {
    fn get(&mut self, client: &mut Client, name: &str) -> Result<Option<Meta>, super::Error> {
        if let Some((at, m)) = self.0.get(name) {
            if at.elapsed() < META_TTL {
                return Ok(*m);
            }
        }
        let m = client
            .stat(Some(name))?
            .into_iter()
            .find(|i| i.name == name)
            .map(|i| Meta {
                durable: i.config.durable,
                kind: Kind::of(i.config.retention),
            });
        self.0.insert(name.to_string(), (Instant::now(), m));
        Ok(m)
    }
}

/// A message on its way out, and what became of it.
struct Out {
    d: Delivery,
    meta: Meta,
}

enum OutResult {
    Done,
    Retry(String),
    Reject(String),
}

/// What the NATS side asks of the broker side.
enum In {
    /// Store a message.
    Store(Incoming),
    /// Whether a mailbox under `pattern` has receivers of this broker's
    /// own (not only the bridge).
    Receivers {
        pattern: String,
        reply: oneshot::Sender<bool>,
    },
}

/// A message on its way in.
struct Incoming {
    mailbox: String,
    /// How it came: by the work-queue route or the fan-out one.
    via: Kind,
    kind: Option<Kind>,
    mtype: i64,
    priority: u32,
    id: Option<String>,
    payload: Bytes,
    reply: oneshot::Sender<InResult>,
}

#[derive(Debug)]
enum InResult {
    Stored,
    /// Not for this route, or this broker has no such mailbox.
    NotMine,
    /// This broker has no such mailbox.
    Absent,
    /// It could not be stored now; maybe later.
    Retry(String),
    /// It can never be stored here.
    Refused(String),
}

/// Starts the bridge on threads of its own; it ends when the broker
/// does (its clients see the broker gone).
pub(crate) fn start(settings: Settings, socket: PathBuf, id: String) -> io::Result<()> {
    let out_client = Client::connect_bridge(&socket).map_err(io::Error::from)?;
    let in_client = Client::connect_bridge(&socket).map_err(io::Error::from)?;
    let (out_tx, out_rx) = amp::unbounded_channel::<Out>();
    let (res_tx, res_rx) = mpsc::channel::<(Delivery, OutResult)>();
    let (in_tx, in_rx) = mpsc::channel::<In>();
    let patterns = settings.patterns.clone();
    std::thread::Builder::new()
        .name("ipckit-bridge-out".into())
        .spawn(move || outbound(out_client, patterns, out_tx, res_rx))?;
    std::thread::Builder::new()
        .name("ipckit-bridge-in".into())
        .spawn({
            let patterns = settings.patterns.clone();
            move || inbound(in_client, &patterns, in_rx)
        })?;
    std::thread::Builder::new()
        .name("ipckit-bridge".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return say(format_args!("cannot start: {e}")),
            };
            rt.block_on(nats_side(settings, id, out_rx, res_tx, in_tx));
        })?;
    Ok(())
}

// ------------------------------------------------------------ broker side

/// Receives what is to go out, hands it to the NATS side, and settles it
/// with the broker as NATS answers.
fn outbound(
    mut c: Client,
    patterns: Vec<String>,
    tx: amp::UnboundedSender<Out>,
    results: mpsc::Receiver<(Delivery, OutResult)>,
) {
    let opts = SubscribeOptions {
        ack: AckPolicy::Explicit,
        max_in_flight: OUT_WINDOW,
        ..SubscribeOptions::default()
    };
    // A wildcard pattern takes mailboxes as they come; an exact name is
    // subscribed to once it exists (the bridge makes no mailbox).
    let mut subs: Vec<(String, Option<super::Subscription>)> =
        patterns.into_iter().map(|p| (p, None)).collect();
    let mut metas = Metas::default();
    let mut next_look = Instant::now();
    let mut pending = 0usize;
    loop {
        if Instant::now() >= next_look {
            next_look = Instant::now() + Duration::from_secs(1);
            for (p, sub) in subs.iter_mut() {
                if sub.is_some_and(|s| c.is_closed(s)) {
                    let _ = c.unsubscribe(sub.take().expect("some"));
                }
                if sub.is_some() {
                    continue;
                }
                let wild = Pattern::new(p).map(|p| p.is_wild()).unwrap_or(false);
                let exists =
                    wild || matches!(c.stat(Some(p)), Ok(l) if l.iter().any(|i| &i.name == p));
                if exists {
                    match c.subscribe(p, &opts) {
                        Ok(s) => *sub = Some(s),
                        Err(e) => say(format_args!("cannot receive from {p}: {e}")),
                    }
                }
            }
        }
        while let Ok((d, r)) = results.try_recv() {
            pending -= 1;
            match r {
                OutResult::Done => c.ack(&d),
                OutResult::Retry(why) => {
                    if d.deliveries == 1 {
                        say(format_args!(
                            "{} #{}: {why}; trying again",
                            d.mailbox, d.seq
                        ));
                    }
                    let _ = c.nack(&d, Some(RETRY));
                }
                OutResult::Reject(why) => {
                    let _ = c.reject(&d, &why);
                }
            }
        }
        let wait = if pending > 0 {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        match c.recv_timeout(wait) {
            Ok(d) => {
                let meta = match metas.get(&mut c, &d.mailbox) {
                    Ok(Some(m)) => m,
                    // Removed meanwhile: nothing to forward it from.
                    Ok(None) => continue,
                    Err(e) => return say(format_args!("the broker went away: {e}")),
                };
                pending += 1;
                if tx.send(Out { d, meta }).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {}
            Err(e) => {
                if e.kind() != ErrorKind::Disconnected {
                    say(format_args!("the broker went away: {e}"));
                }
                return;
            }
        }
        if c.flush().is_err() {
            return;
        }
    }
}

/// Stores what came from NATS, in batches, and says how it went;
/// answers whether a bridged pattern has receivers here.
fn inbound(mut c: Client, patterns: &[String], rx: mpsc::Receiver<In>) {
    let patterns: Vec<Pattern> = patterns
        .iter()
        .filter_map(|p| Pattern::new(p).ok())
        .collect();
    let mut metas = Metas::default();
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                In::Store(m) => batch.push(m),
                In::Receivers { pattern, reply } => {
                    match has_receivers(&mut c, &patterns, &pattern) {
                        Ok(yes) => {
                            let _ = reply.send(yes);
                        }
                        Err(_) => return,
                    }
                }
            }
            if batch.len() < 256 {
                next = rx.try_recv().ok();
            }
        }
        // Consecutive messages to one mailbox go in one batch.
        let mut rest = batch.into_iter().peekable();
        while let Some(m) = rest.next() {
            let meta = match metas.get(&mut c, &m.mailbox) {
                Ok(meta) => meta,
                Err(e) => {
                    let _ = m.reply.send(InResult::Retry(e.to_string()));
                    return;
                }
            };
            let verdict = match meta {
                None => Some(InResult::Absent),
                Some(meta) if m.kind.unwrap_or(meta.kind) != m.via => Some(InResult::NotMine),
                Some(_) => None,
            };
            if let Some(v) = verdict {
                let _ = m.reply.send(v);
                continue;
            }
            let mut group = vec![m];
            while let Some(next) = rest.next_if(|n| {
                n.mailbox == group[0].mailbox
                    && n.via == group[0].via
                    && n.kind.unwrap_or(meta.expect("some").kind) == n.via
            }) {
                group.push(next);
            }
            let msgs: Vec<Message<'_>> = group
                .iter()
                .map(|m| {
                    let mut msg = Message::new(&m.payload)
                        .with_type(m.mtype)
                        .with_priority(m.priority);
                    if let Some(id) = &m.id {
                        msg = msg.with_id(id);
                    }
                    msg
                })
                .collect();
            let results = c.send_batch(&group[0].mailbox, &msgs);
            drop(msgs);
            for (m, r) in group.into_iter().zip(results) {
                let v = match r {
                    Ok(r) if r.outcome == Outcome::NoReceivers => InResult::NotMine,
                    Ok(_) => InResult::Stored,
                    Err(e) => match e.kind() {
                        ErrorKind::Full | ErrorKind::Timeout | ErrorKind::Storage => {
                            InResult::Retry(e.to_string())
                        }
                        ErrorKind::NoSuchMailbox => InResult::Absent,
                        ErrorKind::Disconnected | ErrorKind::Io | ErrorKind::Protocol => {
                            let _ = m.reply.send(InResult::Retry(e.to_string()));
                            return;
                        }
                        _ => InResult::Refused(e.to_string()),
                    },
                };
                let _ = m.reply.send(v);
            }
        }
    }
}

/// Whether a mailbox matching `pattern` has a receiver besides the
/// bridge (a member of its groups for each bridged pattern it matches).
fn has_receivers(c: &mut Client, bridged: &[Pattern], pattern: &str) -> Result<bool, super::Error> {
    Ok(c.stat(Some(pattern))?.iter().any(|i| {
        let bridge = bridged.iter().filter(|p| p.matches(&i.name)).count();
        i.consumers as usize > bridge
    }))
}

// -------------------------------------------------------------- NATS side

async fn nats_side(
    s: Settings,
    id: String,
    mut out_rx: amp::UnboundedReceiver<Out>,
    res_tx: mpsc::Sender<(Delivery, OutResult)>,
    in_tx: mpsc::Sender<In>,
) {
    let nc = match async_nats::ConnectOptions::new()
        .name(format!("ipckit broker {id}"))
        .no_echo()
        .retry_on_initial_connect()
        .connect(s.url.as_str())
        .await
    {
        Ok(nc) => nc,
        Err(e) => return say(format_args!("cannot connect to {}: {e}", s.url)),
    };
    let js = jetstream::new(nc.clone());
    // Ids for messages sent without one: unique to this run of the
    // broker (a durable mailbox's: to the broker and the message, so that
    // one sent again after a restart has the same).
    let run = random_id();
    for p in &s.patterns {
        for (via, queue) in [(Kind::Fan, None), (Kind::Work, Some(WORK))] {
            let sub = match queue {
                None => nc.subscribe(p.clone()).await,
                Some(q) => nc.queue_subscribe(p.clone(), q.to_string()).await,
            };
            match sub {
                Ok(sub) => {
                    tokio::spawn(core_in(nc.clone(), sub, via, in_tx.clone()));
                }
                Err(e) => say(format_args!("cannot subscribe to {p}: {e}")),
            }
        }
        tokio::spawn(js_in(js.clone(), p.clone(), id.clone(), in_tx.clone()));
    }
    let max_payload = nc.server_info().max_payload;
    while let Some(o) = out_rx.recv().await {
        let (nc, js, res_tx) = (nc.clone(), js.clone(), res_tx.clone());
        let gen_id = if o.meta.durable {
            format!("{id}-{}-{}", o.d.mailbox, o.d.seq)
        } else {
            format!("{run}-{}-{}", o.d.mailbox, o.d.seq)
        };
        let origin = id.clone();
        tokio::spawn(async move {
            let r = publish(&nc, &js, &o, &origin, gen_id, max_payload).await;
            let _ = res_tx.send((o.d, r));
        });
    }
}

async fn publish(
    nc: &async_nats::Client,
    js: &jetstream::Context,
    o: &Out,
    origin: &str,
    gen_id: String,
    max_payload: usize,
) -> OutResult {
    let d = &o.d;
    if max_payload > 0 && d.payload.len() + 1024 > max_payload {
        return OutResult::Reject(format!(
            "{} bytes is more than this NATS server takes (max_payload {max_payload})",
            d.payload.len()
        ));
    }
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        d.id.clone().unwrap_or(gen_id).as_str(),
    );
    h.insert(H_ORIGIN, origin);
    h.insert(H_KIND, o.meta.kind.word());
    h.insert(H_TYPE, d.mtype.to_string().as_str());
    h.insert(H_PRIORITY, d.priority.to_string().as_str());
    let sender = format!("{} {} {}", d.sender.pid, d.sender.uid, d.sender.gid);
    h.insert(H_SENDER, sender.as_str());
    let payload = Bytes::copy_from_slice(&d.payload);
    if o.meta.durable {
        let subject = format!("{JS_PREFIX}{}.{}", o.meta.kind.word(), d.mailbox);
        let sent = js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(h),
            )
            .await;
        match sent {
            Ok(ack) => match ack.await {
                Ok(_) => OutResult::Done,
                Err(e) => OutResult::Retry(format!("JetStream did not take it: {e}")),
            },
            Err(e) => OutResult::Retry(format!("JetStream did not take it: {e}")),
        }
    } else {
        let req = async_nats::Request::new()
            .payload(payload)
            .headers(h)
            .timeout(Some(REQUEST_TIMEOUT));
        match nc.send_request(d.mailbox.clone(), req).await {
            Ok(reply) => match reply.headers.as_ref().and_then(|h| h.get(H_ERROR)) {
                None => OutResult::Done,
                Some(e) => OutResult::Retry(format!("the other broker: {e}")),
            },
            Err(e) => OutResult::Retry(format!("no broker took it ({e})")),
        }
    }
}

/// A message from NATS, as its headers describe it.
struct Fields {
    mailbox: String,
    kind: Option<Kind>,
    mtype: i64,
    priority: u32,
    id: Option<String>,
    origin: Option<String>,
}

/// The fields of a message from NATS, checked.
fn read_in(headers: Option<&HeaderMap>, subject: &str) -> Result<Fields, String> {
    let get = |k: &str| {
        headers
            .and_then(|h| h.get(k))
            .map(|v| v.as_str().to_string())
    };
    // A JetStream subject says the route; a core NATS one is the name.
    let (mailbox, routed) = match subject.strip_prefix(JS_PREFIX) {
        None => (subject, None),
        Some(rest) => match rest.split_once('.') {
            Some(("work", name)) => (name, Some(Kind::Work)),
            Some(("fan", name)) => (name, Some(Kind::Fan)),
            _ => return Err(format!("{subject}: neither {JS_PREFIX}work.… nor …fan.…")),
        },
    };
    let mailbox = mailbox.to_string();
    super::name::validate_name(&mailbox).map_err(|e| e.to_string())?;
    let kind = match get(H_KIND).as_deref() {
        _ if routed.is_some() => routed,
        None => None,
        Some("work") => Some(Kind::Work),
        Some("fan") => Some(Kind::Fan),
        Some(k) => return Err(format!("{H_KIND}: {k:?} is neither work nor fan")),
    };
    let mtype = match get(H_TYPE) {
        None => 1,
        Some(t) => match t.parse::<i64>() {
            Ok(t) if t >= 1 => t,
            _ => return Err(format!("{H_TYPE}: {t:?} is not a type (1 or more)")),
        },
    };
    let priority = match get(H_PRIORITY) {
        None => 0,
        Some(p) => p
            .parse::<u32>()
            .map_err(|_| format!("{H_PRIORITY}: {p:?} is not a priority"))?,
    };
    let id = headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
        .filter(|i| !i.is_empty() && i.len() <= 255);
    Ok(Fields {
        mailbox,
        kind,
        mtype,
        priority,
        id,
        origin: get(H_ORIGIN),
    })
}

/// Hands a message to the broker side and waits for its verdict.
async fn store_in(in_tx: &mpsc::Sender<In>, f: Fields, via: Kind, payload: Bytes) -> InResult {
    let (reply, verdict) = oneshot::channel();
    let m = In::Store(Incoming {
        mailbox: f.mailbox,
        via,
        kind: f.kind,
        mtype: f.mtype,
        priority: f.priority,
        id: f.id,
        payload,
        reply,
    });
    if in_tx.send(m).is_err() {
        return InResult::Retry("the broker went away".into());
    }
    verdict
        .await
        .unwrap_or_else(|_| InResult::Retry("the broker went away".into()))
}

/// Requests from other brokers (and NATS clients) for non-durable
/// mailboxes.
async fn core_in(
    nc: async_nats::Client,
    mut sub: async_nats::Subscriber,
    via: Kind,
    in_tx: mpsc::Sender<In>,
) {
    while let Some(msg) = sub.next().await {
        let (nc, in_tx) = (nc.clone(), in_tx.clone());
        tokio::spawn(async move {
            let answer = match read_in(msg.headers.as_ref(), &msg.subject) {
                Err(e) => Some(Err(e)),
                Ok(f) => {
                    match store_in(&in_tx, f, via, msg.payload).await {
                        InResult::Stored => Some(Ok(())),
                        // Another broker's to answer (the fan-out route
                        // stays quiet for mailboxes it lacks; the work
                        // route says so, and the sender tries again).
                        InResult::NotMine => None,
                        InResult::Absent if via == Kind::Fan => None,
                        InResult::Absent => Some(Err("no such mailbox on this broker".into())),
                        InResult::Retry(e) | InResult::Refused(e) => Some(Err(e)),
                    }
                }
            };
            if let (Some(reply), Some(answer)) = (msg.reply, answer) {
                let mut h = HeaderMap::new();
                if let Err(e) = &answer {
                    h.insert(H_ERROR, e.as_str());
                }
                let _ = nc.publish_with_headers(reply, h, Bytes::new()).await;
            }
        });
    }
}

/// The JetStream side of pattern `p`: its stream, the work-queue
/// consumer all brokers share and this broker's own.
async fn js_in(js: jetstream::Context, p: String, id: String, in_tx: mpsc::Sender<In>) {
    let name = stream_name(&p);
    let mut told = false;
    let stream = loop {
        let made = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![
                    format!("{JS_PREFIX}{}.{p}", Kind::Work.word()),
                    format!("{JS_PREFIX}{}.{p}", Kind::Fan.word()),
                ],
                retention: stream::RetentionPolicy::Interest,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await;
        match made {
            Ok(s) => break s,
            Err(e) => {
                if !told {
                    say(format_args!(
                        "JetStream stream {name} for {p}: {e}; trying again"
                    ));
                    told = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    for (via, durable) in [
        (Kind::Work, WORK.to_string()),
        (Kind::Fan, format!("ipckit-{id}")),
    ] {
        let stream = stream.clone();
        let in_tx = in_tx.clone();
        let id = id.clone();
        // Only the route's own subject (see the module docs).
        let filter = format!("{JS_PREFIX}{}.{p}", via.word());
        let p = p.clone();
        tokio::spawn(async move {
            let consumer = loop {
                let made = stream
                    .get_or_create_consumer(
                        &durable,
                        consumer::pull::Config {
                            durable_name: Some(durable.clone()),
                            filter_subject: filter.clone(),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: JS_ACK_WAIT,
                            ..Default::default()
                        },
                    )
                    .await;
                match made {
                    Ok(c) => break c,
                    Err(e) => {
                        say(format_args!(
                            "JetStream consumer {durable}: {e}; trying again"
                        ));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            loop {
                // Work messages are pulled only while this broker has
                // receivers for them: the consumer is shared, and what a
                // broker without receivers pulls it must give back (its
                // own messages, on their way to another broker's
                // receivers, most of all: they went round with growing
                // delays, the durable route's p99 of 24 ms).
                if via == Kind::Work && !has_receivers_here(&in_tx, &p).await {
                    tokio::time::sleep(JS_IDLE_LOOK).await;
                    continue;
                }
                // Pulled in batches of 1000 (async-nats's default is
                // 200): each message waits for the broker's confirmation
                // before it is acknowledged, so more in flight means more
                // per second. (One stream, ended only when the receivers
                // go: a pull of its own every few milliseconds would lose
                // what the server hands a pull as it expires, until the
                // ack wait gives it again.)
                let pulled = consumer
                    .stream()
                    .max_messages_per_batch(JS_PULL_BATCH)
                    .messages()
                    .await;
                let msgs = match pulled {
                    Ok(m) => m,
                    Err(e) => {
                        say(format_args!(
                            "JetStream consumer {durable}: {e}; trying again"
                        ));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // The work route stops when this broker's receivers go.
                let gone = std::pin::pin!(async {
                    if via == Kind::Fan {
                        return std::future::pending().await;
                    }
                    loop {
                        tokio::time::sleep(JS_IDLE_LOOK).await;
                        if !has_receivers_here(&in_tx, &p).await {
                            return;
                        }
                    }
                });
                let mut msgs = msgs.take_until(gone);
                while let Some(m) = msgs.next().await {
                    let Ok(m) = m else { continue };
                    let (in_tx, id) = (in_tx.clone(), id.clone());
                    tokio::spawn(async move { js_one(m, via, &id, &in_tx).await });
                }
            }
        });
    }
}

/// How long a work message this broker published, and pulled back itself
/// for the `delivered`th time, waits before JetStream offers it again:
/// not at all the first 4 times (another broker's pull is likely next),
/// then 10 ms doubling up to 1 s, so that a broker that is alone on NATS
/// does not spin its own messages round. (`None`, not a delay of 0:
/// with delays of 0 and 1 ms doubling, as before, the durable round
/// trip's p99 through two brokers on nats-server 2.9 was 24 ms; without
/// a delay, 1.9 ms.)
fn own_work_delay(delivered: i64) -> Option<Duration> {
    match delivered {
        ..=4 => None,
        n => Some(Duration::from_millis(10 << (n - 5).min(7) as u32).min(Duration::from_secs(1))),
    }
}

/// Messages asked of a JetStream consumer at once.
const JS_PULL_BATCH: usize = 1000;

/// How often the work route looks again whether this broker has
/// receivers.
const JS_IDLE_LOOK: Duration = Duration::from_millis(50);

/// Whether this broker has receivers of its own for `pattern`; false if
/// the broker side has gone.
async fn has_receivers_here(in_tx: &mpsc::Sender<In>, pattern: &str) -> bool {
    let (reply, answer) = oneshot::channel();
    let asked = In::Receivers {
        pattern: pattern.to_string(),
        reply,
    };
    in_tx.send(asked).is_ok() && answer.await.unwrap_or(false)
}

async fn js_one(m: jetstream::Message, via: Kind, me: &str, in_tx: &mpsc::Sender<In>) {
    let ack = match read_in(m.headers.as_ref(), &m.subject) {
        Err(e) => {
            say(format_args!("dropping a message on {}: {e}", m.subject));
            AckKind::Term
        }
        Ok(f) if f.origin.as_deref() == Some(me) => match via {
            // This broker's own: every other broker's, not its.
            Kind::Fan => AckKind::Ack,
            Kind::Work => AckKind::Nak(own_work_delay(m.info().map_or(1, |i| i.delivered))),
        },
        Ok(f) => {
            let payload = m.payload.clone();
            match store_in(in_tx, f, via, payload).await {
                InResult::Stored | InResult::NotMine => AckKind::Ack,
                InResult::Absent if via == Kind::Fan => AckKind::Ack,
                InResult::Absent => AckKind::Nak(Some(Duration::from_secs(1))),
                InResult::Retry(_) => AckKind::Nak(Some(RETRY)),
                InResult::Refused(e) => {
                    say(format_args!("{} refused a message: {e}", m.subject));
                    AckKind::Term
                }
            }
        }
    };
    let _ = m.ack_with(ack).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_work_goes_back_at_once_then_ever_later_up_to_a_second() {
        let ms = |n| own_work_delay(n).map(|d| d.as_millis());
        assert_eq!([ms(0), ms(1), ms(4)], [None, None, None]);
        assert_eq!([ms(5), ms(6), ms(7)], [Some(10), Some(20), Some(40)]);
        assert_eq!(ms(11), Some(640));
        assert_eq!(ms(12), Some(1000));
        assert_eq!(ms(i64::MAX), Some(1000));
    }

    #[test]
    fn the_jetstream_subject_says_the_route_and_the_name() {
        let f = read_in(None, "$IPCKIT.work.orders.eu").unwrap();
        assert_eq!(
            (f.mailbox.as_str(), f.kind),
            ("orders.eu", Some(Kind::Work))
        );
        let mut h = HeaderMap::new();
        h.insert(H_KIND, "work");
        // The subject wins over a header that says otherwise.
        let f = read_in(Some(&h), "$IPCKIT.fan.news").unwrap();
        assert_eq!((f.mailbox.as_str(), f.kind), ("news", Some(Kind::Fan)));
        // Core NATS: the subject is the name, the header the route.
        let f = read_in(Some(&h), "jobs").unwrap();
        assert_eq!((f.mailbox.as_str(), f.kind), ("jobs", Some(Kind::Work)));
        assert!(read_in(None, "$IPCKIT.orders").is_err());
        assert!(read_in(None, "$IPCKIT.other.orders").is_err());
    }
}
