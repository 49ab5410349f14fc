//! The broker's wire protocol, on a Unix stream socket.
//!
//! Every frame is a little-endian `u32` length (of what follows), an
//! opcode byte and the opcode's fields, fixed-size integers in
//! little-endian, names as a `u8` length and bytes, texts as a `u16`
//! length and bytes, a payload as the rest of the frame. Requests carry a
//! correlation number the answer repeats; deliveries come whenever the
//! broker has them, between answers.
//!
//! Every read here is checked: a frame that is short, long, or names an
//! unknown opcode or value is a [`WireError`], never a panic; a frame
//! longer than the reader's limit is refused from its length alone,
//! before anything is allocated for it.

use std::fmt;
use std::time::Duration;

use super::config::{Config, MailboxInfo, Retention, WhenFull};
use crate::mq::sysv::Selector;

/// The protocol version a client announces in `HELLO`.
pub(crate) const VERSION: u16 = 1;
/// What a frame may carry besides its payload (fields, names, id,
/// reason), for the limit on a frame's length.
pub(crate) const OVERHEAD: usize = 4096;
/// The longest reason a dead letter or a rejection carries.
pub(crate) const MAX_REASON: usize = 1024;
/// The longest message id.
pub(crate) const MAX_ID: usize = 255;
/// Mailboxes per `INFO` frame.
pub(crate) const INFO_CHUNK: usize = 64;
/// `timeout_ms` meaning "wait as long as it takes".
pub(crate) const FOREVER: u32 = u32::MAX;
/// `delay_ms` of a `NACK` meaning "as the mailbox's backoff says".
pub(crate) const BY_BACKOFF: u32 = u32::MAX;

// Client to broker.
const HELLO: u8 = 0x01;
const SEND: u8 = 0x02;
const SUBSCRIBE: u8 = 0x03;
const UNSUBSCRIBE: u8 = 0x04;
const ACK: u8 = 0x05;
const NACK: u8 = 0x06;
const REJECT: u8 = 0x07;
const CREATE: u8 = 0x08;
const DELETE: u8 = 0x09;
const STAT: u8 = 0x0a;
const RELEASE: u8 = 0x0b;
// Broker to client.
const WELCOME: u8 = 0x81;
const CONFIRM: u8 = 0x82;
const FAIL: u8 = 0x83;
const DONE: u8 = 0x84;
const DELIVER: u8 = 0x85;
const CLOSED: u8 = 0x86;
const INFO: u8 = 0x87;

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(what.into()))
}

/// How a receiver acknowledges, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// Each message until acknowledged (or nacked, or its ack wait ends).
    Explicit,
    /// None: a message counts as acknowledged once written to the receiver.
    None,
}

/// Why a request failed (`FAIL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    Protocol = 1,
    Invalid = 2,
    NoSuchMailbox = 3,
    Denied = 4,
    Full = 5,
    Timeout = 6,
    Exists = 7,
    TooLarge = 8,
    NoSuchProcess = 9,
    Storage = 10,
}

impl Code {
    fn from_u8(v: u8) -> Result<Code, WireError> {
        Ok(match v {
            1 => Code::Protocol,
            2 => Code::Invalid,
            3 => Code::NoSuchMailbox,
            4 => Code::Denied,
            5 => Code::Full,
            6 => Code::Timeout,
            7 => Code::Exists,
            8 => Code::TooLarge,
            9 => Code::NoSuchProcess,
            10 => Code::Storage,
            _ => return bad(format!("unknown error code {v}")),
        })
    }
}

/// The outcome of a stored send (`CONFIRM`).
pub(crate) const STORED: u8 = 0;
pub(crate) const DUPLICATE: u8 = 1;
pub(crate) const NO_RECEIVERS: u8 = 2;

/// A request, as the broker reads it (borrowing the frame).
#[derive(Debug, PartialEq)]
pub(crate) enum Request<'a> {
    Hello {
        version: u16,
        /// The connection is the broker's own NATS bridge.
        bridge: bool,
        /// The client would take its bytes through shared-memory lanes
        /// ([`crate::ring::lanes`]), whose memfd comes with `WELCOME`.
        lanes: bool,
    },
    Send {
        corr: u32,
        mtype: i64,
        priority: u32,
        timeout_ms: u32,
        target: &'a str,
        id: Option<&'a str>,
        payload: &'a [u8],
    },
    Subscribe {
        corr: u32,
        sub: u32,
        max_in_flight: u32,
        ack: AckMode,
        selector: Selector,
        pattern: &'a str,
        group: &'a str,
    },
    Unsubscribe {
        corr: u32,
        sub: u32,
    },
    /// Tags, 8 bytes each.
    Ack {
        tags: &'a [u8],
    },
    /// Deliveries the client never handed to its user (it unsubscribed or
    /// closed): back to the mailbox, not counted as deliveries. Tags, 8
    /// bytes each.
    Release {
        tags: &'a [u8],
    },
    Nack {
        tag: u64,
        delay_ms: u32,
    },
    Reject {
        tag: u64,
        reason: &'a str,
    },
    Create {
        corr: u32,
        exist_ok: bool,
        config: Config,
        name: &'a str,
    },
    Delete {
        corr: u32,
        name: &'a str,
    },
    Stat {
        corr: u32,
        pattern: &'a str,
    },
}

/// One delivered message, as the client reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct DeliverView<'a> {
    pub head: DeliverHead,
    pub mailbox: &'a str,
    pub id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub payload: &'a [u8],
}

/// What the broker sends, as the client reads it.
#[derive(Debug, PartialEq)]
pub(crate) enum Event<'a> {
    Welcome {
        version: u16,
        pid: i32,
        uid: u32,
        gid: u32,
        max_message: u32,
    },
    Confirm {
        corr: u32,
        outcome: u8,
        seq: u64,
    },
    Fail {
        corr: u32,
        code: Code,
        text: &'a str,
    },
    Done {
        corr: u32,
        value: u64,
    },
    Deliver(DeliverView<'a>),
    Closed {
        sub: u32,
        mailbox: &'a str,
    },
    Info {
        corr: u32,
        more: bool,
        entries: Vec<MailboxInfo>,
    },
}

// ---------------------------------------------------------------- writing

/// Starts a frame of opcode `op` in `buf`; [`end`] writes its length.
#[inline]
fn begin(buf: &mut Vec<u8>, op: u8) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, op]);
    at
}

#[inline]
fn end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

pub(crate) fn put_str8(buf: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    buf.push(s.len() as u8);
    buf.extend_from_slice(s);
}

pub(crate) fn put_str16(buf: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_selector(buf: &mut Vec<u8>, s: Selector) {
    let (k, v) = match s {
        Selector::Any => (0u8, 0),
        Selector::Type(t) => (1, t),
        Selector::NotType(t) => (2, t),
        Selector::UpTo(t) => (3, t),
    };
    buf.push(k);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

pub(crate) fn put_config(buf: &mut Vec<u8>, c: &Config) {
    buf.push(match c.retention {
        Retention::WorkQueue => 0,
        Retention::Interest => 1,
        Retention::Limits => 2,
    });
    buf.push(match c.when_full {
        WhenFull::Block => 0,
        WhenFull::Fail => 1,
        WhenFull::DropOldest => 2,
    });
    buf.push(c.durable as u8);
    buf.extend_from_slice(&(c.mode as u16).to_le_bytes());
    for v in [
        c.max_msgs.unwrap_or(0),
        c.max_bytes.unwrap_or(0),
        c.max_age.map_or(0, |d| ms(d).max(1)),
        ms(c.ack_wait),
        ms(c.dedup_window),
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&c.max_deliver.unwrap_or(0).to_le_bytes());
    let steps = &c.backoff[..c.backoff.len().min(255)];
    buf.push(steps.len() as u8);
    for d in steps {
        buf.extend_from_slice(&ms(*d).to_le_bytes());
    }
}

/// `HELLO`: the version, then a flags byte (1: the bridge, 2: lanes
/// wanted).
pub(crate) fn hello(buf: &mut Vec<u8>, bridge: bool, lanes: bool) {
    let at = begin(buf, HELLO);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.push(bridge as u8 | (lanes as u8) << 1);
    end(buf, at);
}

/// A `SEND`; `target` is a mailbox name or `pid.PID`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send(
    buf: &mut Vec<u8>,
    corr: u32,
    target: &str,
    mtype: i64,
    priority: u32,
    timeout_ms: u32,
    id: Option<&str>,
    payload: &[u8],
) {
    let at = begin(buf, SEND);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.push(id.is_some() as u8);
    buf.extend_from_slice(&mtype.to_le_bytes());
    buf.extend_from_slice(&priority.to_le_bytes());
    buf.extend_from_slice(&timeout_ms.to_le_bytes());
    put_str8(buf, target);
    if let Some(id) = id {
        put_str8(buf, id);
    }
    buf.extend_from_slice(payload);
    end(buf, at);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn subscribe(
    buf: &mut Vec<u8>,
    corr: u32,
    sub: u32,
    max_in_flight: u32,
    ack: AckMode,
    selector: Selector,
    pattern: &str,
    group: &str,
) {
    let at = begin(buf, SUBSCRIBE);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.extend_from_slice(&sub.to_le_bytes());
    buf.extend_from_slice(&max_in_flight.to_le_bytes());
    buf.push(match ack {
        AckMode::Explicit => 0,
        AckMode::None => 1,
    });
    put_selector(buf, selector);
    put_str8(buf, pattern);
    put_str8(buf, group);
    end(buf, at);
}

pub(crate) fn unsubscribe(buf: &mut Vec<u8>, corr: u32, sub: u32) {
    let at = begin(buf, UNSUBSCRIBE);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.extend_from_slice(&sub.to_le_bytes());
    end(buf, at);
}

/// An `ACK` of `tags` (several per frame).
pub(crate) fn ack(buf: &mut Vec<u8>, tags: &[u64]) {
    tag_frames(buf, ACK, tags);
}

/// A `RELEASE` of `tags`.
pub(crate) fn release(buf: &mut Vec<u8>, tags: &[u64]) {
    tag_frames(buf, RELEASE, tags);
}

fn tag_frames(buf: &mut Vec<u8>, op: u8, tags: &[u64]) {
    for chunk in tags.chunks(8192) {
        let at = begin(buf, op);
        for t in chunk {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        end(buf, at);
    }
}

pub(crate) fn nack(buf: &mut Vec<u8>, tag: u64, delay_ms: u32) {
    let at = begin(buf, NACK);
    buf.extend_from_slice(&tag.to_le_bytes());
    buf.extend_from_slice(&delay_ms.to_le_bytes());
    end(buf, at);
}

pub(crate) fn reject(buf: &mut Vec<u8>, tag: u64, reason: &str) {
    let at = begin(buf, REJECT);
    buf.extend_from_slice(&tag.to_le_bytes());
    put_str16(buf, &reason[..floor_char(reason, MAX_REASON)]);
    end(buf, at);
}

pub(crate) fn create(buf: &mut Vec<u8>, corr: u32, exist_ok: bool, name: &str, c: &Config) {
    let at = begin(buf, CREATE);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.push(exist_ok as u8);
    put_config(buf, c);
    put_str8(buf, name);
    end(buf, at);
}

pub(crate) fn delete(buf: &mut Vec<u8>, corr: u32, name: &str) {
    let at = begin(buf, DELETE);
    buf.extend_from_slice(&corr.to_le_bytes());
    put_str8(buf, name);
    end(buf, at);
}

pub(crate) fn stat(buf: &mut Vec<u8>, corr: u32, pattern: &str) {
    let at = begin(buf, STAT);
    buf.extend_from_slice(&corr.to_le_bytes());
    put_str8(buf, pattern);
    end(buf, at);
}

pub(crate) fn welcome(buf: &mut Vec<u8>, pid: i32, uid: u32, gid: u32, max_message: u32) {
    let at = begin(buf, WELCOME);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&pid.to_le_bytes());
    buf.extend_from_slice(&uid.to_le_bytes());
    buf.extend_from_slice(&gid.to_le_bytes());
    buf.extend_from_slice(&max_message.to_le_bytes());
    end(buf, at);
}

pub(crate) fn confirm(buf: &mut Vec<u8>, corr: u32, outcome: u8, seq: u64) {
    let at = begin(buf, CONFIRM);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.push(outcome);
    buf.extend_from_slice(&seq.to_le_bytes());
    end(buf, at);
}

pub(crate) fn fail(buf: &mut Vec<u8>, corr: u32, code: Code, text: &str) {
    let at = begin(buf, FAIL);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.push(code as u8);
    put_str16(buf, text);
    end(buf, at);
}

pub(crate) fn done(buf: &mut Vec<u8>, corr: u32, value: u64) {
    let at = begin(buf, DONE);
    buf.extend_from_slice(&corr.to_le_bytes());
    buf.extend_from_slice(&value.to_le_bytes());
    end(buf, at);
}

/// The fixed fields of a `DELIVER`, ahead of its names and payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DeliverHead {
    pub sub: u32,
    pub tag: u64,
    pub seq: u64,
    pub mtype: i64,
    pub priority: u32,
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub deliveries: u32,
}

pub(crate) fn deliver(
    buf: &mut Vec<u8>,
    h: &DeliverHead,
    mailbox: &str,
    id: Option<&str>,
    reason: Option<&str>,
    payload: &[u8],
) {
    let at = begin(buf, DELIVER);
    buf.reserve(64 + mailbox.len() + payload.len());
    buf.extend_from_slice(&h.sub.to_le_bytes());
    buf.extend_from_slice(&h.tag.to_le_bytes());
    buf.extend_from_slice(&h.seq.to_le_bytes());
    buf.extend_from_slice(&h.mtype.to_le_bytes());
    buf.extend_from_slice(&h.priority.to_le_bytes());
    buf.extend_from_slice(&h.pid.to_le_bytes());
    buf.extend_from_slice(&h.uid.to_le_bytes());
    buf.extend_from_slice(&h.gid.to_le_bytes());
    buf.extend_from_slice(&h.deliveries.to_le_bytes());
    buf.push(id.is_some() as u8 | (reason.is_some() as u8) << 1);
    put_str8(buf, mailbox);
    if let Some(id) = id {
        put_str8(buf, id);
    }
    if let Some(r) = reason {
        put_str16(buf, r);
    }
    buf.extend_from_slice(payload);
    end(buf, at);
}

pub(crate) fn closed(buf: &mut Vec<u8>, sub: u32, mailbox: &str) {
    let at = begin(buf, CLOSED);
    buf.extend_from_slice(&sub.to_le_bytes());
    put_str8(buf, mailbox);
    end(buf, at);
}

/// `INFO` frames for `entries` (several when there are many; an empty
/// list is one frame).
pub(crate) fn info(buf: &mut Vec<u8>, corr: u32, entries: &[MailboxInfo]) {
    let mut chunks = entries.chunks(INFO_CHUNK).peekable();
    if chunks.peek().is_none() {
        let at = begin(buf, INFO);
        buf.extend_from_slice(&corr.to_le_bytes());
        buf.push(0);
        buf.extend_from_slice(&0u32.to_le_bytes());
        end(buf, at);
    }
    while let Some(chunk) = chunks.next() {
        let at = begin(buf, INFO);
        buf.extend_from_slice(&corr.to_le_bytes());
        buf.push(chunks.peek().is_some() as u8);
        buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for e in chunk {
            put_str8(buf, &e.name);
            buf.extend_from_slice(&e.owner.to_le_bytes());
            buf.extend_from_slice(&e.group.to_le_bytes());
            put_config(buf, &e.config);
            for v in [
                e.depth,
                e.bytes,
                e.in_flight,
                e.dead_letters,
                e.discarded,
                e.received,
            ] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            buf.extend_from_slice(&e.consumers.to_le_bytes());
            buf.extend_from_slice(&e.blocked_senders.to_le_bytes());
        }
        end(buf, at);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn floor_char(s: &str, max: usize) -> usize {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

// ---------------------------------------------------------------- reading

/// Where the next frame in `buf` ends: `Ok(None)` when it is not all
/// there yet; an error when its length is above `max` (checked from the
/// header alone) or below the opcode byte.
#[inline]
pub(crate) fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return bad("a frame of length 0 (no opcode)");
    }
    if len > max {
        return bad(format!("a frame of {len} bytes, above the limit of {max}"));
    }
    Ok(if buf.len() >= 4 + len {
        Some(4 + len)
    } else {
        None
    })
}

/// A checked cursor over one frame's bytes (or one stored record's).
pub(crate) struct Rd<'a> {
    pub(crate) b: &'a [u8],
}

impl<'a> Rd<'a> {
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return bad(format!("{} bytes missing", n - self.b.len()));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    #[inline]
    pub(crate) fn arr<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.arr::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn text(&mut self, n: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n)?).or_else(|_| bad("a name or text that is not UTF-8"))
    }
    pub(crate) fn str8(&mut self) -> Result<&'a str, WireError> {
        let n = self.u8()? as usize;
        self.text(n)
    }
    pub(crate) fn str16(&mut self) -> Result<&'a str, WireError> {
        let n = self.u16()? as usize;
        self.text(n)
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            bad(format!("{} bytes left over", self.b.len()))
        }
    }
    fn selector(&mut self) -> Result<Selector, WireError> {
        let k = self.u8()?;
        let v = self.i64()?;
        Ok(match (k, v) {
            (0, _) => Selector::Any,
            (1, t) if t > 0 => Selector::Type(t),
            (2, t) if t > 0 => Selector::NotType(t),
            (3, t) if t > 0 => Selector::UpTo(t),
            _ => return bad(format!("selector {k} with type {v}")),
        })
    }
    fn ms(&mut self) -> Result<Duration, WireError> {
        Ok(Duration::from_millis(self.u64()?))
    }
    pub(crate) fn config(&mut self) -> Result<Config, WireError> {
        let retention = match self.u8()? {
            0 => Retention::WorkQueue,
            1 => Retention::Interest,
            2 => Retention::Limits,
            v => return bad(format!("retention {v}")),
        };
        let when_full = match self.u8()? {
            0 => WhenFull::Block,
            1 => WhenFull::Fail,
            2 => WhenFull::DropOldest,
            v => return bad(format!("when-full policy {v}")),
        };
        let durable = match self.u8()? {
            0 => false,
            1 => true,
            v => return bad(format!("durable flag {v}")),
        };
        let mode = self.u16()? as u32;
        let some = |v: u64| (v != 0).then_some(v);
        let max_msgs = some(self.u64()?);
        let max_bytes = some(self.u64()?);
        let max_age = some(self.u64()?).map(Duration::from_millis);
        let ack_wait = self.ms()?;
        let dedup_window = self.ms()?;
        let max_deliver = match self.u32()? {
            0 => None,
            n => Some(n),
        };
        let steps = self.u8()? as usize;
        let mut backoff = Vec::with_capacity(steps);
        for _ in 0..steps {
            backoff.push(self.ms()?);
        }
        Ok(Config {
            retention,
            max_msgs,
            max_bytes,
            max_age,
            when_full,
            mode,
            ack_wait,
            max_deliver,
            backoff,
            dedup_window,
            durable,
        })
    }
}

/// Reads one client request; `frame` is a whole frame, header included.
pub(crate) fn read_request(frame: &[u8]) -> Result<Request<'_>, WireError> {
    let mut r = Rd { b: &frame[4..] };
    let op = r.u8()?;
    let req = match op {
        HELLO => {
            let version = r.u16()?;
            // A client of another version may say more: the version
            // check answers it. Unknown flags are ignored.
            let flags = r.rest().first().copied().unwrap_or(0);
            Request::Hello {
                version,
                bridge: flags & 1 != 0,
                lanes: flags & 2 != 0,
            }
        }
        SEND => {
            let corr = r.u32()?;
            let flags = r.u8()?;
            if flags > 1 {
                return bad(format!("send flags {flags:#x}"));
            }
            let mtype = r.i64()?;
            let priority = r.u32()?;
            let timeout_ms = r.u32()?;
            let target = r.str8()?;
            let id = if flags & 1 != 0 {
                Some(r.str8()?)
            } else {
                None
            };
            let payload = r.rest();
            Request::Send {
                corr,
                mtype,
                priority,
                timeout_ms,
                target,
                id,
                payload,
            }
        }
        SUBSCRIBE => Request::Subscribe {
            corr: r.u32()?,
            sub: r.u32()?,
            max_in_flight: r.u32()?,
            ack: match r.u8()? {
                0 => AckMode::Explicit,
                1 => AckMode::None,
                v => return bad(format!("ack mode {v}")),
            },
            selector: r.selector()?,
            pattern: r.str8()?,
            group: r.str8()?,
        },
        UNSUBSCRIBE => Request::Unsubscribe {
            corr: r.u32()?,
            sub: r.u32()?,
        },
        ACK | RELEASE => {
            let tags = r.rest();
            if !tags.len().is_multiple_of(8) {
                return bad("a list of tags whose length is not a multiple of 8");
            }
            if op == ACK {
                Request::Ack { tags }
            } else {
                Request::Release { tags }
            }
        }
        NACK => Request::Nack {
            tag: r.u64()?,
            delay_ms: r.u32()?,
        },
        REJECT => {
            let tag = r.u64()?;
            let reason = r.str16()?;
            if reason.len() > MAX_REASON {
                return bad(format!("a reason longer than {MAX_REASON} bytes"));
            }
            Request::Reject { tag, reason }
        }
        CREATE => Request::Create {
            corr: r.u32()?,
            exist_ok: r.u8()? != 0,
            config: r.config()?,
            name: r.str8()?,
        },
        DELETE => Request::Delete {
            corr: r.u32()?,
            name: r.str8()?,
        },
        STAT => Request::Stat {
            corr: r.u32()?,
            pattern: r.str8()?,
        },
        op => return bad(format!("unknown request opcode {op:#04x}")),
    };
    r.finish()?;
    Ok(req)
}

/// Iterates the tags of an `ACK`.
pub(crate) fn tags(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
}

/// Reads one broker event; `frame` is a whole frame, header included.
pub(crate) fn read_event(frame: &[u8]) -> Result<Event<'_>, WireError> {
    let mut r = Rd { b: &frame[4..] };
    let op = r.u8()?;
    let ev = match op {
        WELCOME => Event::Welcome {
            version: r.u16()?,
            pid: r.i32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            max_message: r.u32()?,
        },
        CONFIRM => {
            let corr = r.u32()?;
            let outcome = r.u8()?;
            if outcome > NO_RECEIVERS {
                return bad(format!("send outcome {outcome}"));
            }
            Event::Confirm {
                corr,
                outcome,
                seq: r.u64()?,
            }
        }
        FAIL => Event::Fail {
            corr: r.u32()?,
            code: Code::from_u8(r.u8()?)?,
            text: r.str16()?,
        },
        DONE => Event::Done {
            corr: r.u32()?,
            value: r.u64()?,
        },
        DELIVER => {
            let head = DeliverHead {
                sub: r.u32()?,
                tag: r.u64()?,
                seq: r.u64()?,
                mtype: r.i64()?,
                priority: r.u32()?,
                pid: r.i32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                deliveries: r.u32()?,
            };
            let flags = r.u8()?;
            if flags > 3 {
                return bad(format!("delivery flags {flags:#x}"));
            }
            let mailbox = r.str8()?;
            let id = if flags & 1 != 0 {
                Some(r.str8()?)
            } else {
                None
            };
            let reason = if flags & 2 != 0 {
                Some(r.str16()?)
            } else {
                None
            };
            Event::Deliver(DeliverView {
                head,
                mailbox,
                id,
                reason,
                payload: r.rest(),
            })
        }
        CLOSED => Event::Closed {
            sub: r.u32()?,
            mailbox: r.str8()?,
        },
        INFO => {
            let corr = r.u32()?;
            let more = r.u8()? != 0;
            let n = r.u32()? as usize;
            if n > INFO_CHUNK {
                return bad(format!("{n} mailboxes in one INFO frame"));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str8()?.to_string();
                let owner = r.u32()?;
                let group = r.u32()?;
                let config = r.config()?;
                entries.push(MailboxInfo {
                    name,
                    owner,
                    group,
                    config,
                    depth: r.u64()?,
                    bytes: r.u64()?,
                    in_flight: r.u64()?,
                    dead_letters: r.u64()?,
                    discarded: r.u64()?,
                    received: r.u64()?,
                    consumers: r.u32()?,
                    blocked_senders: r.u32()?,
                });
            }
            Event::Info {
                corr,
                more,
                entries,
            }
        }
        op => return bad(format!("unknown event opcode {op:#04x}")),
    };
    r.finish()?;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: DeliverHead = DeliverHead {
        sub: 1,
        tag: 2,
        seq: 3,
        mtype: 4,
        priority: 5,
        pid: 6,
        uid: 7,
        gid: 8,
        deliveries: 9,
    };

    fn one(buf: &[u8]) -> &[u8] {
        let n = frame_len(buf, 1 << 20).unwrap().unwrap();
        assert_eq!(n, buf.len(), "one whole frame");
        buf
    }

    #[test]
    fn requests_round_trip() {
        let mut b = Vec::new();
        send(&mut b, 7, "a.b", 3, 9, FOREVER, Some("id-1"), b"payload");
        assert_eq!(
            read_request(one(&b)).unwrap(),
            Request::Send {
                corr: 7,
                mtype: 3,
                priority: 9,
                timeout_ms: FOREVER,
                target: "a.b",
                id: Some("id-1"),
                payload: b"payload"
            }
        );
        b.clear();
        subscribe(
            &mut b,
            1,
            2,
            3,
            AckMode::None,
            Selector::UpTo(4),
            "a.>",
            "g",
        );
        assert!(matches!(
            read_request(one(&b)).unwrap(),
            Request::Subscribe {
                selector: Selector::UpTo(4),
                ack: AckMode::None,
                pattern: "a.>",
                group: "g",
                ..
            }
        ));
        b.clear();
        let config = Config {
            max_age: Some(Duration::from_secs(3)),
            max_deliver: Some(4),
            backoff: vec![Duration::from_millis(5)],
            durable: true,
            retention: Retention::Limits,
            when_full: WhenFull::DropOldest,
            mode: 0o640,
            ..Config::default()
        };
        create(&mut b, 5, true, "x", &config);
        assert_eq!(
            read_request(one(&b)).unwrap(),
            Request::Create {
                corr: 5,
                exist_ok: true,
                config,
                name: "x"
            }
        );
        b.clear();
        ack(&mut b, &[1, 2, 3]);
        let Request::Ack { tags: t } = read_request(one(&b)).unwrap() else {
            panic!()
        };
        assert_eq!(tags(t).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn events_round_trip() {
        let mut b = Vec::new();
        let h = HEAD;
        deliver(&mut b, &h, "m", None, Some("why"), b"p");
        let Event::Deliver(d) = read_event(one(&b)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.head, d.mailbox, d.id, d.reason, d.payload),
            (h, "m", None, Some("why"), &b"p"[..])
        );
        b.clear();
        let e = MailboxInfo {
            name: "n".into(),
            owner: 1,
            group: 2,
            config: Config::default(),
            depth: 3,
            bytes: 4,
            consumers: 5,
            in_flight: 6,
            blocked_senders: 7,
            dead_letters: 8,
            discarded: 9,
            received: 10,
        };
        let many = vec![e.clone(); INFO_CHUNK + 1];
        info(&mut b, 9, &many);
        let n = frame_len(&b, 1 << 20).unwrap().unwrap();
        let Event::Info {
            more: true,
            entries,
            ..
        } = read_event(&b[..n]).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries.len(), INFO_CHUNK);
        let Event::Info {
            more: false,
            entries,
            ..
        } = read_event(&b[n..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries, [e]);
    }

    /// Valid frames of every kind, mutated at random (bytes flipped, the
    /// length changed, cut short, random bytes added), read as the broker
    /// and the client read them (`frame_len`, then the decoder on each
    /// whole frame): every outcome is a value or an error, never a panic.
    #[test]
    fn mutated_frames_decode_or_fail() {
        let mut requests = Vec::new();
        let mut events = Vec::new();
        let mut b = Vec::new();
        let take = |b: &mut Vec<u8>, into: &mut Vec<Vec<u8>>| into.push(std::mem::take(b));
        hello(&mut b, true, true);
        take(&mut b, &mut requests);
        send(&mut b, 7, "a.b", 3, 9, FOREVER, Some("id"), b"payload");
        take(&mut b, &mut requests);
        create(&mut b, 1, true, "x.y", &Config::default());
        take(&mut b, &mut requests);
        subscribe(
            &mut b,
            2,
            3,
            8,
            AckMode::Explicit,
            Selector::UpTo(4),
            "a.>",
            "g",
        );
        take(&mut b, &mut requests);
        ack(&mut b, &[1, 2, 3]);
        take(&mut b, &mut requests);
        nack(&mut b, 4, BY_BACKOFF);
        take(&mut b, &mut requests);
        reject(&mut b, 5, "no");
        take(&mut b, &mut requests);
        stat(&mut b, 6, "*");
        take(&mut b, &mut requests);
        welcome(&mut b, 1, 2, 3, 4);
        take(&mut b, &mut events);
        confirm(&mut b, 1, STORED, 9);
        take(&mut b, &mut events);
        fail(&mut b, 1, Code::Denied, "why");
        take(&mut b, &mut events);
        deliver(&mut b, &HEAD, "m.n", Some("i"), Some("r"), b"body");
        take(&mut b, &mut events);
        closed(&mut b, 1, "m");
        take(&mut b, &mut events);
        info(&mut b, 1, &[]);
        take(&mut b, &mut events);
        let mut r = super::super::Rng(0x2545_f491_4f6c_dd1d);
        let (mut ok, mut refused) = (0u32, 0u32);
        // Miri interprets every step: fewer of them there.
        let rounds = if cfg!(miri) { 300 } else { 50_000 };
        for _ in 0..rounds {
            let request = r.below(2) == 0;
            let pool = if request { &requests } else { &events };
            let mut f = pool[r.below(pool.len() as u64) as usize].clone();
            for _ in 0..1 + r.below(4) {
                match r.below(4) {
                    0 => {
                        let at = r.below(f.len() as u64) as usize;
                        f[at] ^= 1 << r.below(8);
                    }
                    1 if f.len() > 5 => {
                        let at = 4 + r.below(f.len() as u64 - 4) as usize;
                        f.truncate(at);
                    }
                    1 => {}
                    2 => f.extend((0..r.below(16)).map(|_| r.next() as u8)),
                    _ => {
                        // A length that agrees with what is there.
                        let len = (f.len() - 4) as u32;
                        f[..4].copy_from_slice(&len.to_le_bytes());
                    }
                }
            }
            let mut at = 0;
            while let Ok(Some(n)) = frame_len(&f[at..], 1 << 16) {
                let frame = &f[at..at + n];
                let good = if request {
                    read_request(frame).is_ok()
                } else {
                    read_event(frame).is_ok()
                };
                if good {
                    ok += 1;
                } else {
                    refused += 1;
                }
                at += n;
            }
        }
        // Both outcomes were reached: the mutations were not all fatal,
        // nor all harmless.
        assert!(
            ok > rounds / 50 && refused > rounds / 50,
            "{ok} decoded, {refused} refused"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut frames = Vec::new();
        let mut b = Vec::new();
        send(&mut b, 7, "a.b", 3, 9, 0, Some("id"), b"");
        frames.push((true, std::mem::take(&mut b)));
        create(
            &mut b,
            1,
            false,
            "x",
            &Config {
                backoff: vec![Duration::from_millis(1); 3],
                ..Config::default()
            },
        );
        frames.push((true, std::mem::take(&mut b)));
        reject(&mut b, 1, "because");
        frames.push((true, std::mem::take(&mut b)));
        let h = HEAD;
        deliver(&mut b, &h, "m", Some("i"), Some("r"), b"");
        frames.push((false, std::mem::take(&mut b)));
        info(&mut b, 1, &[]);
        frames.push((false, std::mem::take(&mut b)));
        for (request, f) in frames {
            // Cut the body short at every point, keeping the header honest.
            for cut in 5..f.len() {
                let mut g = f[..cut].to_vec();
                let len = (cut - 4) as u32;
                g[..4].copy_from_slice(&len.to_le_bytes());
                if request {
                    // A SEND's payload is the rest: cut into it is a shorter payload.
                    let _ = read_request(&g);
                } else {
                    let _ = read_event(&g);
                }
            }
        }
        assert!(frame_len(&[0, 0, 0, 0], 10).is_err());
        assert!(frame_len(&11u32.to_le_bytes(), 10).is_err());
        assert_eq!(frame_len(&5u32.to_le_bytes(), 10).unwrap(), None);
        assert!(read_request(&[1, 0, 0, 0, 0x7f]).is_err());
    }
}
