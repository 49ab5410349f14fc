//! Chaos for the message mechanisms: a consumer process and producer
//! processes move checksummed, sequence-numbered messages, and one of them
//! (chosen at random) is killed with SIGKILL at a random moment. Then:
//!
//! - **no survivor hangs**: each ends within a bound, told `Disconnected`,
//!   end of stream, an error naming a cut-off message, or its own idle
//!   timeout (where a mechanism has no connection to lose);
//! - **nothing corrupt or duplicated is delivered**: every message's
//!   checksum holds and each producer's sequence numbers only go up (the
//!   consumer checks as it receives);
//! - **what was confirmed is delivered**: while the consumer lives, every
//!   message a producer's send confirmed reaches it (all mechanisms but
//!   UDP); where a queue outlives its processes (POSIX and System V queues,
//!   rings), what a killed consumer had not taken is still there for the
//!   next one, less at most the one message it was taking;
//! - **nothing is leaked**: what the consumer made is gone once everyone
//!   has exited, or, when the consumer was the one killed, is still there
//!   to be removed by name (what `ipc rm` does), and then gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipckit::prelude::*;
use ipckit::registry::{self, Mechanism};
use ipckit::{Address, MessageReceiver, MessageSender, RecvTimeoutError, SendTimeoutError};
use libtest_mimic::{Failed, Trial};

use crate::common::{self, check_numbered, ensure, numbered, peer_command, unique};
use crate::{campaign, report, Part, Rng, SURVIVE, VAR};

/// Messages each producer sends (most rounds kill it before the end).
const MESSAGES: u64 = 3000;
/// How long a consumer waits for the next message before it calls the
/// conversation over (mechanisms without a connection cannot tell it).
const IDLE: Duration = Duration::from_millis(400);
/// How long a producer waits for room before it gives up.
const SEND_WAIT: Duration = Duration::from_secs(1);
/// How long a consumer waits for a connection, and a producer to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- mechanisms

/// What the chaos runs through: every mechanism of the address registry
/// (the mailbox with a broker process of its own, which may be the one
/// killed), an anonymous pipe between two processes, and a
/// single-producer ring.
#[derive(Clone, Copy)]
enum Mech {
    Registry(&'static Mechanism),
    Pipe,
    RingSpsc,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Registry(m) => m.scheme,
            Mech::Pipe => "pipe",
            Mech::RingSpsc => "ring-spsc",
        }
    }
    fn producers(self) -> u32 {
        match self {
            // One connection per producer, and the consumer takes one.
            Mech::Registry(m) if m.connections || m.lossy => 1,
            Mech::Registry(_) => 2,
            Mech::Pipe | Mech::RingSpsc => 1,
        }
    }
    /// Messages outlive the consumer (a queue in the kernel or in shared
    /// memory): a new consumer finds what the killed one left.
    fn durable(self) -> bool {
        match self {
            // The mailbox while its broker lives.
            Mech::Registry(m) => matches!(m.scheme, "mq" | "sysv-mq" | "ring" | "mailbox"),
            Mech::Pipe => false,
            Mech::RingSpsc => true,
        }
    }
    fn lossy(self) -> bool {
        matches!(self, Mech::Registry(m) if m.lossy)
    }
    fn broker(self) -> bool {
        matches!(self, Mech::Registry(m) if m.broker)
    }
    /// The consumer learns that its producers died (a connection, or a
    /// ring, which checks on its senders), rather than waiting idle.
    fn notices_death(self) -> bool {
        match self {
            Mech::Registry(m) => m.connections || matches!(m.scheme, "fifo" | "ring"),
            Mech::Pipe | Mech::RingSpsc => true,
        }
    }
}

fn mechanisms() -> Vec<Mech> {
    let mut v = vec![Mech::Pipe];
    v.extend(registry::MECHANISMS.iter().map(Mech::Registry));
    v.push(Mech::RingSpsc);
    v
}

/// Receives until the conversation ends, checking each message: `g P SEQ`
/// per message, then `end WHY`.
fn consume(rx: &mut dyn MessageReceiver) -> io::Result<()> {
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    let mut buf = Vec::new();
    loop {
        match rx.recv_timeout_into(&mut buf, IDLE) {
            Ok(()) => {
                let (p, seq) =
                    check_numbered(&buf).map_err(|e| io::Error::other(format!("BAD {e}")))?;
                if let Some(&l) = last.get(&p) {
                    if seq <= l {
                        return Err(io::Error::other(format!(
                            "BAD producer {p}: {seq} after {l} (duplicated or reordered)"
                        )));
                    }
                }
                last.insert(p, seq);
                report(format_args!("g {p} {seq}"));
            }
            Err(RecvTimeoutError::Timeout) => {
                report(format_args!("end idle"));
                return Ok(());
            }
            Err(RecvTimeoutError::Disconnected) => {
                report(format_args!("end disconnected"));
                return Ok(());
            }
            Err(RecvTimeoutError::Io(e)) => {
                report(format_args!("end error {:?}: {e}", e.kind()));
                return Ok(());
            }
        }
    }
}

/// Sends `MESSAGES` messages as producer `p`: `s P SEQ` after each
/// confirmed send, then `end WHY`.
fn produce(tx: &mut dyn MessageSender, p: u32) -> io::Result<()> {
    for seq in 0..MESSAGES {
        match tx.send_timeout(&numbered(p, seq), SEND_WAIT) {
            Ok(()) => report(format_args!("s {p} {seq}")),
            Err(e) => {
                let why = match e {
                    SendTimeoutError::Timeout(_) => "timeout".to_string(),
                    SendTimeoutError::Disconnected(_) => "disconnected".to_string(),
                    SendTimeoutError::Io(e, _) => format!("error {:?}: {e}", e.kind()),
                };
                report(format_args!("end {why}"));
                return Ok(());
            }
        }
    }
    report(format_args!("end done"));
    Ok(())
}

/// `recv:MECH ADDR`: makes the mechanism's receiving side, says
/// `ready ADDR` (the address others reach it at), and consumes.
fn peer_recv(spec: &str) -> io::Result<()> {
    let (mech, addr) = spec.split_once(' ').expect("MECH ADDR");
    match mech {
        "pipe" => {
            report(format_args!("ready -"));
            let mut rx = ipckit::pipe::Receiver::from_stdin()?;
            consume(&mut rx)
        }
        "ring-spsc" => {
            let ring = ipckit::ring::Ring::builder(addr)
                .multi(false)
                .create_or_open()?;
            let mut rx = ring.receiver()?;
            report(format_args!("ready {addr}"));
            consume(&mut rx)
        }
        _ => {
            let addr: Address = addr.parse()?;
            let l = ipckit::listen(&addr)?;
            report(format_args!("ready {}", l.local_address()?));
            // A producer killed before it connected never comes.
            match l.accept_timeout(CONNECT_WAIT) {
                Ok(mut c) => consume(&mut c),
                Err(e) => {
                    report(format_args!("end no producer: {e}"));
                    Ok(())
                }
            }
        }
    }
}

/// `send:MECH ADDR P`: reaches the receiving side and produces.
fn peer_send(spec: &str) -> io::Result<()> {
    let mut it = spec.splitn(3, ' ');
    let (mech, addr, p) = (
        it.next().expect("MECH"),
        it.next().expect("ADDR"),
        it.next()
            .expect("P")
            .parse::<u32>()
            .expect("a producer number"),
    );
    match mech {
        "pipe" => produce(&mut ipckit::pipe::Sender::from_stdout()?, p),
        "ring-spsc" => {
            let ring = ipckit::ring::Ring::builder(addr).open()?;
            produce(&mut ring.sender()?, p)
        }
        _ => {
            let addr: Address = addr.parse()?;
            // A consumer killed before this connects is not there to take it.
            match ipckit::connect_timeout(&addr, Some(CONNECT_WAIT)) {
                Ok(mut c) => produce(&mut c, p),
                Err(e) => {
                    report(format_args!("end no consumer: {e}"));
                    Ok(())
                }
            }
        }
    }
}

fn object(mech: Mech, addr: &str) -> io::Result<Option<Address>> {
    Ok(match mech {
        Mech::Pipe => None,
        Mech::RingSpsc => Some(Address::Ring(addr.to_string())),
        Mech::Registry(_) => Some(addr.parse()?),
    })
}

#[derive(Default, Debug)]
struct Tally {
    rounds: usize,
    consumer_killed: usize,
    producer_killed: usize,
    messages: usize,
    /// Confirmed messages a killed consumer took with it (at most one per
    /// kill on a durable mechanism).
    in_flight_lost: usize,
    broker_killed: usize,
    /// Messages a killed consumer took unacknowledged, delivered again.
    redelivered: usize,
    endings: BTreeMap<String, usize>,
}

/// One round: start, kill someone, check.
fn round(mech: Mech, rng: &mut Rng, tally: &mut Tally) -> Result<(), Failed> {
    let name = mech.name();
    let tag = unique(&format!("chaos-{name}"));
    let addr = match mech {
        Mech::Registry(m) => m.scratch_address(&tag).to_string(),
        Mech::Pipe => "-".into(),
        Mech::RingSpsc => tag.clone(),
    };
    // A broker of the round's own, which its clients find through
    // `IPCKIT_BROKER`.
    let mut own = common::OwnBroker::start(VAR, name, mech.broker())?;
    let socket = own.socket.clone();
    let mut broker = own.part.take();
    let peer = |role: &str, arg: &str| own.peer(VAR, role, arg);
    let mut producers = Vec::new();
    let mut consumer;
    if let Mech::Pipe = mech {
        // The producer's standard output is the consumer's standard input.
        let mut cmd = peer_command(VAR, "send", "pipe - 0")?;
        cmd.stdout(Stdio::piped());
        let mut p = Part::start("pipe producer 0".into(), cmd)?;
        let out = p.child.stdout.take().expect("piped");
        let mut cmd = peer_command(VAR, "recv", "pipe -")?;
        cmd.stdin(Stdio::from(out));
        consumer = Part::start("pipe consumer".into(), cmd)?;
        consumer.ready()?;
        producers.push(p);
    } else {
        consumer = Part::start(
            format!("{name} consumer"),
            peer("recv", &format!("{name} {addr}"))?,
        )?;
        let reach = consumer.ready()?;
        for p in 0..mech.producers() {
            producers.push(Part::start(
                format!("{name} producer {p}"),
                peer("send", &format!("{name} {reach} {p}"))?,
            )?);
        }
    }
    // Let them work a random while, then kill one.
    std::thread::sleep(Duration::from_micros(rng.below(30_000)));
    let victim = rng.below(1 + producers.len() as u64 + u64::from(broker.is_some())) as usize;
    if victim == 0 {
        consumer.kill();
        tally.consumer_killed += 1;
    } else if let Some(p) = producers.get_mut(victim - 1) {
        p.kill();
        tally.producer_killed += 1;
    } else if let Some(b) = &mut broker {
        b.kill();
        tally.broker_killed += 1;
    }
    let broker_killed = broker.as_ref().is_some_and(|b| b.killed);
    let deadline = Instant::now() + SURVIVE;
    consumer.finish(deadline)?;
    for p in &mut producers {
        p.finish(deadline)?;
    }
    tally.rounds += 1;
    // A producer killed before it confirmed a message may have died before
    // it attached or connected: then there was no one to see die.
    let victim_began = producers
        .iter()
        .any(|p| p.killed && !p.events("s").is_empty());
    for (part, role) in producers
        .iter()
        .map(|p| (p, "producer"))
        .chain([(&consumer, "consumer")])
    {
        if part.killed {
            continue;
        }
        let end = part.ending().ok_or_else(|| {
            format!(
                "{} ended without saying why: {:?}",
                part.what,
                part.seen.last()
            )
        })?;
        // `error UnexpectedEof: …` counts as `error UnexpectedEof`.
        let kind = end.split([':', ' ']).take(2).collect::<Vec<_>>().join(" ");
        if role == "consumer" && mech.notices_death() && victim_began {
            ensure(!end.starts_with("idle"), || {
                format!("{name}: the consumer did not notice its producer's death: {end}")
            })?;
        }
        // Its clients are told when the broker dies, rather than waiting
        // for room or for messages.
        if broker_killed {
            ensure(
                !end.starts_with("idle") && !end.starts_with("timeout"),
                || format!("{}: did not notice the broker's death: {end}", part.what),
            )?;
        }
        *tally.endings.entry(format!("{role} {kind}")).or_default() += 1;
    }

    // What was confirmed, and what arrived.
    let mut sent: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for p in &producers {
        for (pr, s) in p.events("s") {
            sent.entry(pr).or_default().insert(s);
        }
    }
    let mut got: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, s) in consumer.events("g") {
        got.entry(p).or_default().push(s);
    }
    // A durable mechanism whose consumer died: the next consumer finds the
    // rest (it drains until idle).
    let mut left_for_next = 0;
    let mut next_end = None;
    if consumer.killed && mech.durable() {
        let mut next = Part::start(
            format!("{name} second consumer"),
            peer("recv", &format!("{name} {addr}"))?,
        )?;
        next.ready()?;
        next.finish(Instant::now() + SURVIVE)?;
        for (p, s) in next.events("g") {
            got.entry(p).or_default().push(s);
            left_for_next += 1;
        }
        next_end = next.ending().map(str::to_owned);
    }
    // A killed mailbox consumer's messages it had not yet acknowledged go to
    // the next consumer: delivered twice, as at-least-once promises. A
    // message is acknowledged when the next is asked for, and the ack
    // travels behind it (the next one may already be in the client's
    // lanes), so these are the last ones the killed consumer took: a tail
    // of what it received, at most its subscription's in-flight limit.
    let mut twice: BTreeSet<(u32, u64)> = BTreeSet::new();
    for (p, seqs) in &got {
        let mut seen = BTreeSet::new();
        twice.extend(seqs.iter().filter(|s| !seen.insert(**s)).map(|s| (*p, *s)));
    }
    if !twice.is_empty() {
        let taken = consumer.events("g");
        let first = taken.iter().position(|m| twice.contains(m));
        let tail: BTreeSet<(u32, u64)> =
            first.map_or(BTreeSet::new(), |i| taken[i..].iter().copied().collect());
        let max_in_flight = ipckit::mailbox::SubscribeOptions::default().max_in_flight;
        ensure(
            mech.broker()
                && consumer.killed
                && tail == twice
                && twice.len() <= max_in_flight as usize,
            || {
                format!(
                    "{name}: delivered twice: {twice:?}; consumer killed: {}, the last {} it took: \
                     {:?}",
                    consumer.killed,
                    tail.len(),
                    tail
                )
            },
        )?;
        tally.redelivered += twice.len();
    }
    for (p, seqs) in &got {
        tally.messages += seqs.len();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        // Nothing that was not sent (a killed producer's last send may have
        // arrived before it could say so).
        let confirmed = sent.get(p).cloned().unwrap_or_default();
        let top = confirmed.last().map_or(0, |s| s + 1);
        ensure(unique.iter().all(|s| *s <= top), || {
            format!(
                "{name}: producer {p}: delivered {:?}, sent up to {top}",
                unique.last()
            )
        })?;
    }
    // (A broker's mailboxes are in its memory: killed, it takes them along.)
    if !mech.lossy() && !broker_killed && (!consumer.killed || mech.durable()) {
        for (p, confirmed) in &sent {
            let arrived: BTreeSet<u64> = got
                .get(p)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let missing: Vec<u64> = confirmed.difference(&arrived).copied().collect();
            let allowed = usize::from(consumer.killed);
            ensure(missing.len() <= allowed, || {
                format!(
                    "{name}: producer {p}: {} confirmed messages never delivered (first {:?}); \
                     consumer killed: {}, {left_for_next} found by the next consumer, \
                     which ended: {next_end:?}",
                    missing.len(),
                    missing.first(),
                    consumer.killed
                )
            })?;
            tally.in_flight_lost += missing.len();
        }
    }

    // Leftovers: none from a consumer that exited; what a killed one made
    // can be removed by name (as `ipc rm` does).
    if let Some(b) = &mut broker {
        if !b.killed {
            // The mailbox goes with the consumer that made it; one left by
            // a killed consumer is removed by name.
            let Address::Mailbox(mb) = addr.parse()? else {
                unreachable!("a mailbox address")
            };
            let mut c = ipckit::mailbox::Client::connect_to(&socket)?;
            let there = |c: &mut ipckit::mailbox::Client| -> io::Result<bool> {
                Ok(c.stat(Some(&mb))?.iter().any(|m| m.name == mb))
            };
            if consumer.killed {
                c.delete(&mb)?;
            } else {
                ensure(!there(&mut c)?, || {
                    format!("{name}: {addr} left behind by a consumer that exited")
                })?;
            }
            ensure(!there(&mut c)?, || {
                format!("{name}: {addr} still there after removal")
            })?;
            // The broker is the round's own: it goes with the round.
            b.kill();
        }
        b.finish(Instant::now() + SURVIVE)?;
    } else if let Some(obj) = object(mech, &addr)? {
        if consumer.killed {
            common::remove_left_object(&obj);
        } else {
            ensure(!common::object_exists(&obj), || {
                format!("{name}: {addr} left behind by a consumer that exited")
            })?;
        }
        ensure(!common::object_exists(&obj), || {
            format!("{name}: {addr} still there after removal")
        })?;
    }
    Ok(())
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kills survived ({} consumers, {} producers, {} brokers), {} messages checked, \
             {} confirmed lost with a killed consumer, {} redelivered; endings {:?}",
            self.rounds,
            self.consumer_killed,
            self.producer_killed,
            self.broker_killed,
            self.messages,
            self.in_flight_lost,
            self.redelivered,
            self.endings
        )
    }
}

/// One trial per mechanism.
pub fn trials() -> Vec<Trial> {
    mechanisms()
        .into_iter()
        .map(|m| {
            Trial::test(format!("kill::{}", m.name()), move || {
                campaign(m.name(), |rng, t| round(m, rng, t))
            })
        })
        .collect()
}

/// Plays `recv:…` or `send:…`.
pub fn peer(role: &str, arg: &str) -> Option<io::Result<()>> {
    match role {
        "recv" => Some(peer_recv(arg)),
        "send" => Some(peer_send(arg)),
        "broker" => Some(common::play_own_broker(arg)),
        _ => None,
    }
}
