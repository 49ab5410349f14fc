//! Soak: several producer processes send many messages each through every
//! many-to-one mechanism to one consumer process, which checks every
//! message as it arrives. Each producer's messages must all arrive, once
//! each, in the order it sent them, intact: **0 lost, 0 duplicated, 0
//! reordered, 0 corrupt** per producer (UDP, which may lose, is held to
//! the rest and its losses counted).
//!
//! The mechanisms, and how one consumer hears many producers:
//!
//! - an anonymous **pipe** whose writing end every producer inherits, and
//!   a **FIFO** every producer opens (a framed message of at most
//!   `PIPE_BUF` is one atomic write);
//! - **Unix stream, Unix seqpacket and TCP** listeners: a connection per
//!   producer, all waited on at once with a [`Selector`] (the notes'
//!   `select()`);
//! - **Unix datagram and UDP** sockets, **POSIX and System V queues**,
//!   the multi-producer **ring**, a **mailbox** (behind a broker process
//!   of the soak's own): one receiving end that everyone sends to;
//! - **realtime signals** queued with `sigqueue` to the consumer's pid,
//!   each carrying its producer and sequence number in its value.
//!
//! The consumer reports its progress every tenth of the run (the parent
//! fails it if it goes quiet for a minute) and, at the end, its
//! descriptors and memory after the first tenth and at the end, which
//! this test prints with the rates: a soak is also where a leak shows.
//!
//! `IPCKIT_SOAK_MESSAGES` sets the messages per producer (default 20 000),
//! `IPCKIT_SOAK_PRODUCERS` the producers (default 4). The long form, 4 ×
//! 1 000 000 messages per mechanism:
//! `IPCKIT_SOAK_MESSAGES=1000000 cargo test -p ipckit --release --test soak`.
//!
//! This test binary re-executed with `IPCKIT_SOAK_PEER=<role>:<arg>` plays
//! a participant.

use std::collections::BTreeMap;
use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipckit::prelude::*;
use ipckit::registry::{self, Mechanism};
use ipckit::select::Selector;
use ipckit::signal::{Signal, SignalReceiver, SignalSender};
use ipckit::{Address, Connection, MessageReceiver, MessageSender, RecvTimeoutError, TryRecvError};
use libtest_mimic::{Failed, Trial};

#[path = "common/mod.rs"]
mod common;

use common::{check_numbered, ensure, numbered, report, unique, Part};

const VAR: &str = "IPCKIT_SOAK_PEER";
/// How long a consumer waits for the next message before it calls the
/// run stalled (no producer is killed here: only a bug or a starved
/// machine stops the flow).
const STALL: Duration = Duration::from_secs(20);
/// How long a UDP consumer waits for more once a datagram may have been
/// lost (the last ones may never come).
const UDP_QUIET: Duration = Duration::from_secs(2);
/// How long a producer waits for room for one message.
const SEND_WAIT: Duration = Duration::from_secs(20);
/// The realtime signal the signal soak uses (`SIGRTMIN+3`).
const SIGNAL: i32 = 3;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn per_producer() -> u64 {
    env_or("IPCKIT_SOAK_MESSAGES", 20_000)
}

fn producers() -> u32 {
    env_or("IPCKIT_SOAK_PRODUCERS", 4) as u32
}

// ---------------------------------------------------------------- mechanisms

#[derive(Clone, Copy)]
enum Mech {
    Pipe,
    Registry(&'static Mechanism),
    Signal,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Pipe => "pipe",
            Mech::Registry(m) => m.scheme,
            Mech::Signal => "signal",
        }
    }

    fn from_name(name: &str) -> Mech {
        match name {
            "pipe" => Mech::Pipe,
            "signal" => Mech::Signal,
            s => Mech::Registry(registry::find(s).unwrap_or_else(|| panic!("no mechanism {s}"))),
        }
    }

    fn lossy(self) -> bool {
        matches!(self, Mech::Registry(m) if m.lossy)
    }
}

fn mechanisms() -> Vec<Mech> {
    let mut v = vec![Mech::Pipe];
    v.extend(registry::MECHANISMS.iter().map(Mech::Registry));
    v.push(Mech::Signal);
    v
}

// ---------------------------------------------------------------- the consumer

/// What the consumer knows of one producer.
#[derive(Default)]
struct Heard {
    /// The sequence number expected next.
    next: u64,
    /// Messages that never came (a gap; UDP only).
    lost: u64,
}

/// Every message checked as it arrives.
struct Tally {
    producers: u32,
    per_producer: u64,
    lossy: bool,
    heard: BTreeMap<u32, Heard>,
    received: u64,
    /// Where progress is reported next.
    next_report: u64,
    /// Descriptors and memory after the first tenth.
    warm: Option<Usage>,
}

impl Tally {
    fn new(producers: u32, per_producer: u64, lossy: bool) -> Tally {
        Tally {
            producers,
            per_producer,
            lossy,
            heard: BTreeMap::new(),
            received: 0,
            next_report: (u64::from(producers) * per_producer / 10).max(1),
            warm: None,
        }
    }

    fn total(&self) -> u64 {
        u64::from(self.producers) * self.per_producer
    }

    /// Takes message `seq` of producer `p`: it must be the next one (or,
    /// where messages may be lost, a later one).
    fn take(&mut self, p: u32, seq: u64) -> io::Result<()> {
        if p >= self.producers || seq >= self.per_producer {
            return Err(io::Error::other(format!(
                "BAD message {p}/{seq}: no such producer or sequence number"
            )));
        }
        let h = self.heard.entry(p).or_default();
        if seq < h.next {
            return Err(io::Error::other(format!(
                "BAD producer {p}: message {seq} after {} (duplicated or reordered)",
                h.next - 1
            )));
        }
        if seq > h.next {
            if !self.lossy {
                return Err(io::Error::other(format!(
                    "BAD producer {p}: message {seq} where {} was next ({} lost)",
                    h.next,
                    seq - h.next
                )));
            }
            h.lost += seq - h.next;
        }
        h.next = seq + 1;
        self.received += 1;
        if self.received >= self.next_report {
            if self.warm.is_none() {
                self.warm = Some(Usage::now()?);
            }
            report(format_args!("at {}", self.received));
            self.next_report += (self.total() / 10).max(1);
        }
        Ok(())
    }

    fn take_message(&mut self, m: &[u8]) -> io::Result<()> {
        let (p, seq) = check_numbered(m).map_err(|e| io::Error::other(format!("BAD {e}")))?;
        self.take(p, seq)
    }

    /// Every producer's last message has come.
    fn complete(&self) -> bool {
        self.heard.len() == self.producers as usize
            && self.heard.values().all(|h| h.next == self.per_producer)
    }

    /// `got P RECEIVED LOST` per producer, the usage, and `end WHY`.
    fn finish(&self, why: &str) -> io::Result<()> {
        for p in 0..self.producers {
            let (next, lost) = self.heard.get(&p).map_or((0, 0), |h| (h.next, h.lost));
            report(format_args!("got {p} {} {lost}", next - lost));
        }
        let end = Usage::now()?;
        let warm = self.warm.unwrap_or(end);
        report(format_args!(
            "usage {} {} {} {}",
            warm.fds, end.fds, warm.rss_kib, end.rss_kib
        ));
        report(format_args!("end {why}"));
        Ok(())
    }
}

/// This process's open descriptors and resident memory.
#[derive(Clone, Copy)]
struct Usage {
    fds: usize,
    rss_kib: u64,
}

impl Usage {
    fn now() -> io::Result<Usage> {
        Usage::of("self")
    }

    fn of(pid: &str) -> io::Result<Usage> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))?;
        Ok(Usage { fds, rss_kib })
    }
}

/// Receives from one end everyone sends to, until every message came or
/// the flow stops.
fn consume_one(rx: &mut dyn MessageReceiver, tally: &mut Tally) -> io::Result<&'static str> {
    let mut buf = Vec::new();
    let mut quiet = STALL;
    while !tally.complete() {
        match rx.recv_timeout_into(&mut buf, quiet) {
            Ok(()) => tally.take_message(&buf)?,
            Err(RecvTimeoutError::Timeout) if tally.lossy => return Ok("quiet"),
            Err(RecvTimeoutError::Timeout) => return Ok("stalled"),
            Err(RecvTimeoutError::Disconnected) => return Ok("disconnected"),
            Err(RecvTimeoutError::Io(e)) => return Err(e),
        }
        if tally.lossy && tally.heard.values().any(|h| h.lost > 0) {
            quiet = UDP_QUIET;
        }
    }
    Ok("all")
}

/// A FIFO: the reading end for the writers open at the time, again
/// whenever they all have closed while some have yet to come.
fn consume_fifo(l: &ipckit::Listener, tally: &mut Tally) -> io::Result<&'static str> {
    while !tally.complete() {
        let mut rx = match l.accept_timeout(STALL) {
            Ok(rx) => rx,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok("stalled"),
            Err(e) => return Err(e),
        };
        match consume_one(&mut rx, tally)? {
            "disconnected" => continue,
            why => return Ok(why),
        }
    }
    Ok("all")
}

/// A listener with a connection per producer: the listener and every
/// connection in one [`Selector`].
fn consume_selecting(l: &mut ipckit::Listener, tally: &mut Tally) -> io::Result<&'static str> {
    let mut sel = Selector::new()?;
    let listening = sel.register(&mut *l)?;
    let mut conns: BTreeMap<ipckit::select::Token, Connection> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut ready = Vec::new();
    while !tally.complete() {
        sel.select_into(&mut ready, Some(STALL))?;
        if ready.is_empty() {
            return Ok("stalled");
        }
        for t in ready.drain(..) {
            if t == listening {
                let mut c = l.accept_timeout(Duration::ZERO)?;
                let token = sel.register(&mut c)?;
                conns.insert(token, c);
                continue;
            }
            let c = conns.get_mut(&t).expect("a registered connection");
            loop {
                match c.try_recv_into(&mut buf) {
                    Ok(()) => tally.take_message(&buf)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        sel.deregister(t)?;
                        conns.remove(&t);
                        break;
                    }
                    Err(TryRecvError::Io(e)) => return Err(e),
                }
            }
        }
    }
    Ok("all")
}

/// Realtime signals: the value is `producer << 24 | seq`, and every
/// signal of a producer must come from the same process.
fn consume_signals(rx: &SignalReceiver, tally: &mut Tally) -> io::Result<&'static str> {
    let mut pids: BTreeMap<u32, u32> = BTreeMap::new();
    while !tally.complete() {
        let Some(info) = rx.recv_info_timeout(STALL)? else {
            return Ok("stalled");
        };
        let Some(v) = info.value else {
            return Err(io::Error::other(format!(
                "BAD a signal without a value: {info:?}"
            )));
        };
        let (p, seq) = ((v as u32) >> 24, u64::from(v as u32 & 0xff_ffff));
        if *pids.entry(p).or_insert(info.pid) != info.pid {
            return Err(io::Error::other(format!(
                "BAD producer {p}'s message {seq} from pid {}, not {}",
                info.pid, pids[&p]
            )));
        }
        tally.take(p, seq)?;
    }
    Ok("all")
}

/// `recv:MECH ADDR PRODUCERS PER_PRODUCER`: makes the receiving end, says
/// `ready ADDR`, and consumes.
fn peer_recv(spec: &str) -> io::Result<()> {
    let w: Vec<&str> = spec.split(' ').collect();
    let [mech, addr, producers, per] = w[..] else {
        panic!("recv: MECH ADDR PRODUCERS PER_PRODUCER, not {spec:?}")
    };
    let mech = Mech::from_name(mech);
    let mut tally = Tally::new(
        producers.parse().expect("producers"),
        per.parse().expect("messages per producer"),
        mech.lossy(),
    );
    let why = match mech {
        Mech::Pipe => {
            report(format_args!("ready -"));
            consume_one(&mut ipckit::pipe::Receiver::from_stdin()?, &mut tally)?
        }
        Mech::Signal => {
            let rx = SignalReceiver::new(&[Signal::realtime(SIGNAL)?])?;
            report(format_args!("ready {}", std::process::id()));
            consume_signals(&rx, &mut tally)?
        }
        Mech::Registry(m) => {
            let mut l = ipckit::listen(&addr.parse()?)?;
            report(format_args!("ready {}", l.local_address()?));
            if m.scheme == "fifo" {
                consume_fifo(&l, &mut tally)?
            } else if m.connections {
                consume_selecting(&mut l, &mut tally)?
            } else {
                let mut rx = l.accept_timeout(STALL)?;
                consume_one(&mut rx, &mut tally)?
            }
        }
    };
    tally.finish(why)
}

// ---------------------------------------------------------------- producers

/// Sends `n` messages as producer `p`, each confirmed before the next:
/// `end done N`, or `end WHY` at the first refusal.
fn produce(tx: &mut dyn MessageSender, p: u32, n: u64, msg: impl Fn(u32, u64) -> Vec<u8>) {
    for seq in 0..n {
        if let Err(e) = tx.send_timeout(&msg(p, seq), SEND_WAIT) {
            let why = match e {
                ipckit::SendTimeoutError::Timeout(_) => "timeout".to_string(),
                ipckit::SendTimeoutError::Disconnected(_) => "disconnected".to_string(),
                ipckit::SendTimeoutError::Io(e, _) => format!("error {:?}: {e}", e.kind()),
            };
            report(format_args!("end {why} after {seq}"));
            return;
        }
    }
    report(format_args!("end done {n}"));
}

/// `send:MECH ADDR P N`: reaches the consumer and sends.
fn peer_send(spec: &str) -> io::Result<()> {
    let w: Vec<&str> = spec.split(' ').collect();
    let [mech, addr, p, n] = w[..] else {
        panic!("send: MECH ADDR P N, not {spec:?}")
    };
    let (p, n): (u32, u64) = (p.parse().expect("P"), n.parse().expect("N"));
    match Mech::from_name(mech) {
        Mech::Pipe => produce(&mut ipckit::pipe::Sender::from_stdout()?, p, n, numbered),
        Mech::Signal => {
            let pid = addr.parse().expect("the consumer's pid");
            let mut tx = SignalSender::new(pid, Signal::realtime(SIGNAL)?);
            assert!(
                p < 128 && n <= 1 << 24,
                "a signal's value holds p < 128, seq < 2^24"
            );
            produce(&mut tx, p, n, |p, seq| {
                ((p << 24) | seq as u32).to_le_bytes().to_vec()
            })
        }
        Mech::Registry(_) => {
            let addr: Address = addr.parse()?;
            let mut tx = ipckit::connect_timeout(&addr, Some(common::T))?;
            produce(&mut tx, p, n, numbered)
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the parent

fn soak(mech: Mech) -> Result<(), Failed> {
    let name = mech.name();
    let (producers, per) = (producers(), per_producer());
    let tag = unique(&format!("soak-{name}"));
    let addr = match mech {
        Mech::Registry(m) => m.scratch_address(&tag).to_string(),
        Mech::Pipe | Mech::Signal => "-".into(),
    };
    // The mailbox's broker is the soak's own, found through IPCKIT_BROKER.
    let mut own =
        common::OwnBroker::start(VAR, name, matches!(mech, Mech::Registry(m) if m.broker))?;
    let socket = own.socket.clone();
    let mut broker = own.part.take();
    let peer = |role: &str, arg: &str| own.peer(VAR, role, arg);
    let start = Instant::now();
    let mut consumer_cmd = peer("recv", &format!("{name} {addr} {producers} {per}"))?;
    // A pipe: every producer writes into the one the consumer reads.
    let mut pipe_writer = None;
    if let Mech::Pipe = mech {
        let (r, w) = ipckit::pipe::pipe()?;
        consumer_cmd.stdin(Stdio::from(r));
        pipe_writer = Some(std::os::fd::OwnedFd::from(w));
    }
    let mut consumer = Part::start(format!("{name} consumer"), consumer_cmd)?;
    let reach = consumer.ready()?;
    let mut senders = Vec::new();
    for p in 0..producers {
        let mut cmd = peer("send", &format!("{name} {reach} {p} {per}"))?;
        if let Some(w) = &pipe_writer {
            cmd.stdout(Stdio::from(w.try_clone()?));
        }
        senders.push(Part::start(format!("{name} producer {p}"), cmd)?);
    }
    // Only the producers hold the pipe's writing end: the consumer sees
    // its end when the last one is done.
    drop(pipe_writer);
    consumer.finish_talking(Duration::from_secs(60))?;
    let elapsed = start.elapsed();
    for s in &mut senders {
        s.finish(Instant::now() + common::T)?;
    }
    let broker_usage = match &mut broker {
        Some(b) => {
            let u = Usage::of(&b.child.id().to_string())?;
            // The mailbox went with its consumer.
            let Address::Mailbox(mb) = addr.parse()? else {
                unreachable!("a mailbox address")
            };
            let left = ipckit::mailbox::Client::connect_to(&socket)?.stat(Some(&mb))?;
            ensure(left.iter().all(|m| m.name != mb), || {
                format!("{name}: {addr} left at the broker")
            })?;
            b.kill();
            b.finish(Instant::now() + common::T)?;
            Some(u)
        }
        None => None,
    };

    let end = consumer.ending().unwrap_or("(nothing)").to_string();
    for s in &senders {
        let said = s.ending().unwrap_or("(nothing)");
        ensure(said == format!("done {per}"), || {
            format!("{}: ended {said:?}", s.what)
        })?;
    }
    let got = consumer.events("got");
    let lost: BTreeMap<u32, u64> = consumer
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("got "))
        .map(|l| {
            let w: Vec<u64> = l.split(' ').map(|x| x.parse().expect("a number")).collect();
            (w[0] as u32, w[2])
        })
        .collect();
    ensure(got.len() == producers as usize, || {
        format!("{name}: the consumer ended {end:?} and reported {got:?}")
    })?;
    let received: u64 = got.iter().map(|(_, n)| n).sum();
    let lost_total: u64 = lost.values().sum();
    if !mech.lossy() {
        ensure(
            end == "all" && received == u64::from(producers) * per,
            || format!("{name}: the consumer ended {end:?} with {got:?} of {per} per producer"),
        )?;
    } else {
        // What did not come was lost, never duplicated or reordered (the
        // consumer checked); and something came from everyone.
        ensure(got.iter().all(|(_, n)| *n > 0), || {
            format!("{name}: a producer was never heard: {got:?}")
        })?;
    }
    let usage: Vec<u64> = consumer
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("usage "))
        .map(|l| l.split(' ').map(|x| x.parse().expect("a number")).collect())
        .ok_or_else(|| format!("{name}: the consumer reported no usage"))?;
    // After the first tenth every connection is open (or gone): a
    // descriptor more at the end is a leak.
    ensure(usage[1] <= usage[0], || {
        format!(
            "{name}: the consumer had {} descriptors after the first tenth, {} at the end",
            usage[0], usage[1]
        )
    })?;
    let secs = elapsed.as_secs_f64();
    println!(
        "soak {name}: {producers} producers x {per}: {received} received in {secs:.1} s \
         ({:.0}/s), {lost_total} lost{}, 0 duplicated, 0 reordered, 0 corrupt; consumer \
         descriptors {} -> {}, resident {} -> {} KiB{}",
        received as f64 / secs,
        if mech.lossy() { " (UDP may lose)" } else { "" },
        usage[0],
        usage[1],
        usage[2],
        usage[3],
        broker_usage.map_or(String::new(), |u| format!(
            "; broker resident {} KiB, {} descriptors",
            u.rss_kib, u.fds
        ))
    );
    // Nothing left behind: the consumer made the object and exited.
    if let (Ok(obj), None) = (addr.parse::<Address>(), &broker) {
        ensure(!common::object_exists(&obj), || {
            format!("{name}: {addr} left behind")
        })?;
    }
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec| {
            let (role, arg) = spec.split_once(':').expect("role:arg");
            match role {
                "recv" => peer_recv(arg),
                "send" => peer_send(arg),
                "broker" => common::play_own_broker(arg),
                _ => panic!("unknown role {role}"),
            }
        })],
        "soak",
        Duration::from_secs(3600 * 4),
    );
    let args = libtest_mimic::Arguments::from_args();
    let trials = mechanisms()
        .into_iter()
        .map(|m| Trial::test(format!("soak::{}", m.name()), move || soak(m)))
        .collect();
    common::run_trials(&args, trials)
}
