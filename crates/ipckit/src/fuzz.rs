//! Entry points for the fuzzers in `fuzz/` (`cargo +nightly fuzz run
//! TARGET`, or `tools/fuzz.sh SECONDS` for all of them). Not an API: built
//! with the `fuzz` feature, and in this crate's own tests, which replay
//! every committed seed (`fuzz/seeds/TARGET/*`) through the same
//! function, so a crash once found stays fixed.
//!
//! Each target takes the bytes libFuzzer makes up and feeds them to one
//! decoder of bytes that come from another process or a user, checking
//! what must hold whatever the input: no panic, no hang, no allocation
//! sized by an unchecked length, and where a simple model of the decoder
//! exists, the same answer as the model (the framed stream reader, the
//! datagram receiver, the store's recovery read twice).

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::error::{RecvTimeoutError, TryRecvError};
use crate::frame::Framing;
use crate::message::{MessageReceiver, MessageSenderExt};

/// A fuzz target: any bytes in, a panic on what must not happen.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/seeds/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("dgram", dgram),
    ("typed", typed),
    ("parse", parse),
    ("ring", ring),
    ("mailbox_wire", mailbox_wire),
    ("mailbox_store", mailbox_store),
    ("binder", binder),
    ("prop_area", prop_area),
];

/// A little cursor over the fuzzer's bytes: zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (h, t) = self.0.split_at(n.min(self.0.len()));
        self.0 = t;
        h
    }
    fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.0)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------- frames

/// What the framed stream reader must return, message by message, for
/// `stream` read with `max` and `framing`: the model the real reader is
/// checked against.
#[derive(Debug, PartialEq)]
enum Expect {
    Msg(Vec<u8>),
    /// Refused (too large), or cut short by the end of the stream: the
    /// stream is unusable from here.
    Broken,
    /// A clean end between messages.
    End,
}

fn model_frames(stream: &[u8], max: usize, framing: Framing) -> Vec<Expect> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            out.push(Expect::End);
            return out;
        }
        match framing {
            Framing::LengthPrefixed => {
                if rest.len() < 4 {
                    out.push(Expect::Broken);
                    return out;
                }
                let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                if len > max || rest.len() < 4 + len {
                    out.push(Expect::Broken);
                    return out;
                }
                out.push(Expect::Msg(rest[4..4 + len].to_vec()));
                at += 4 + len;
            }
            Framing::Lines => match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= max => {
                    out.push(Expect::Msg(rest[..i].to_vec()));
                    at += i + 1;
                }
                // A line is refused once more than `max` bytes of it are
                // buffered; a last line without a newline is a message.
                None if rest.len() <= max => {
                    out.push(Expect::Msg(rest.to_vec()));
                    at = stream.len();
                }
                _ => {
                    out.push(Expect::Broken);
                    return out;
                }
            },
        }
    }
}

/// The framed stream reader (`crate::frame`) on a real pipe: the input's
/// first bytes choose the framing, the receiver's limit and how the rest
/// is cut into writes; the rest is the stream. Every message received,
/// between writes and after the end, must be the model's.
pub fn frame(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let framing = if flags & 1 == 0 {
        Framing::LengthPrefixed
    } else {
        Framing::Lines
    };
    let max = match flags >> 1 & 3 {
        0 => 16,
        1 => 300,
        2 => 70_000,
        _ => crate::frame::DEFAULT_MAX_MESSAGE_SIZE,
    };
    let mut cut = input.u16() as u32 | 1;
    let stream = input.rest();
    let expect = model_frames(stream, max, framing);

    let (r, mut w) = crate::pipe::pipe().expect("pipe");
    w.set_capacity(1 << 20).expect("pipe capacity");
    let mut rx = crate::pipe::Receiver::new(r).expect("receiver");
    rx.set_framing(framing);
    rx.set_max_message_size(max);
    let mut got = Vec::new();
    let take = |rx: &mut crate::pipe::Receiver, got: &mut Vec<Expect>, wait: bool| loop {
        if matches!(got.last(), Some(Expect::Broken | Expect::End)) {
            return;
        }
        let r = if wait {
            rx.recv_timeout(Duration::from_secs(10))
        } else {
            rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                TryRecvError::Io(e) => RecvTimeoutError::Io(e),
            })
        };
        match r {
            Ok(m) => {
                assert!(m.len() <= max, "a message of {} bytes over {max}", m.len());
                got.push(Expect::Msg(m));
            }
            Err(RecvTimeoutError::Timeout) if !wait => return,
            Err(RecvTimeoutError::Disconnected) => got.push(Expect::End),
            Err(RecvTimeoutError::Io(e)) => {
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ),
                    "{e}"
                );
                got.push(Expect::Broken);
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    let mut at = 0;
    while at < stream.len() {
        // A small xorshift step: cuts of 1 to 4096 bytes.
        cut ^= cut << 13;
        cut ^= cut >> 17;
        cut ^= cut << 5;
        let n = (cut as usize % 4096 + 1).min(stream.len() - at);
        w.write_all(&stream[at..at + n]).expect("write to the pipe");
        at += n;
        take(&mut rx, &mut got, false);
    }
    drop(w);
    take(&mut rx, &mut got, true);
    assert_eq!(got, expect, "framing {framing:?}, max {max}");
}

// ---------------------------------------------------------------- datagrams

/// The datagram receiver (`crate::dgram`) on a real `AF_UNIX` datagram
/// socket pair: the input describes datagrams (a length and a fill byte
/// each) and the receiver's limit; each must come out whole, or be
/// refused as too large with the next one coming out next.
pub fn dgram(data: &[u8]) {
    let mut input = Input(data);
    let max = match input.u8() & 3 {
        0 => 0,
        1 => 17,
        2 => 4096,
        _ => 100_000,
    };
    let (a, mut b) = crate::socket::unix::UnixDatagram::pair().expect("socketpair");
    b.set_max_message_size(max);
    let raw = std::os::unix::net::UnixDatagram::from(a.as_fd().try_clone_to_owned().expect("dup"));
    // A buffer kept between receives, of the input's choosing: the
    // receiver reads into it when it is large enough.
    let mut buf = Vec::with_capacity(input.u16() as usize * 4);
    let mut n = 0;
    while !input.is_empty() && n < 64 {
        n += 1;
        let len = input.u16() as usize * 3;
        let fill = input.u8();
        let msg = vec![fill; len];
        raw.send(&msg).expect("send a datagram");
        match b.recv_timeout_into(&mut buf, Duration::from_secs(10)) {
            Ok(()) => {
                assert!(len <= max, "{len} bytes received over a limit of {max}");
                assert_eq!(buf, msg);
            }
            Err(RecvTimeoutError::Io(e)) => {
                assert!(len > max, "{len} bytes refused under {max}: {e}");
                let too = crate::error::MessageTooLarge::find(&e).expect("MessageTooLarge");
                assert_eq!(too.len, len as u64);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // Nothing left behind.
    assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
}

// ---------------------------------------------------------------- typed

/// A message type with a bit of everything serde has.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Sample {
    Unit,
    Number(i64, u8, f64),
    Text { name: String, tags: Vec<String> },
    Nested(Vec<(u16, Option<Box<Sample>>)>),
    Bytes(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    Map(std::collections::BTreeMap<String, u32>),
}

/// Bytes as a sequence (serde's default), named for clarity.
mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(v, s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// Typed decoding (`crate::typed`) with both codecs: bytes decode to a
/// value or an error; a value decoded encodes and decodes to itself.
pub fn typed(data: &[u8]) {
    use crate::typed::{Codec, Json, Postcard};
    fn check<C: Codec>(codec: &C, data: &[u8]) {
        if let Ok(v) = crate::typed::decode::<Sample, C>(codec, data) {
            let mut again = Vec::new();
            codec.encode(&v, &mut again).expect("re-encode");
            let w: Sample = codec.decode(&again).expect("decode what was encoded");
            // NaN is not equal to itself: compare the encodings then.
            let mut third = Vec::new();
            codec.encode(&w, &mut third).expect("re-encode");
            assert_eq!(again, third);
        }
    }
    check(&Postcard, data);
    check(&Json, data);
}

// ---------------------------------------------------------------- text

/// Every parser of text a user types or a file holds: addresses, System V
/// keys, signals, wait strategies, Unix socket addresses, fsync policies,
/// mailbox names and patterns, the service manager's and the property
/// daemon's policy files. What parses displays as text that parses to
/// the same value.
pub fn parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    fn round_trip<T>(s: &str)
    where
        T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = s.parse::<T>() {
            let shown = v.to_string();
            match shown.parse::<T>() {
                Ok(w) => assert_eq!(v, w, "{s:?} shown as {shown:?}"),
                Err(_) => panic!("{s:?} parsed, but its display {shown:?} does not"),
            }
        }
    }
    round_trip::<crate::address::Address>(s);
    round_trip::<crate::sysv::Key>(s);
    round_trip::<crate::signal::Signal>(s);
    round_trip::<crate::wait::WaitStrategy>(s);
    round_trip::<crate::socket::unix::UnixAddr>(s);
    round_trip::<crate::mailbox::Fsync>(s);
    if crate::mailbox::validate_name(s).is_ok() {
        crate::mailbox::Pattern::new(s).expect("a valid name is a valid pattern");
    }
    let _ = crate::mailbox::Pattern::new(s);
    let _ = s.parse::<crate::binder::sm::Policy>();
    let _ = s.parse::<crate::prop::Policy>();
}

// ---------------------------------------------------------------- ring

/// A ring in shared memory scribbled on by a hostile peer (`crate::ring`):
/// the input writes bytes at offsets of its choosing into a fresh ring's
/// memory, then this process opens it and sends and receives without
/// waiting. Errors are fine; a panic, a crash or a hang is not.
pub fn ring(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let ring = crate::ring::Ring::anonymous()
        .capacity(4)
        .max_message_size(64)
        .multi(flags & 1 != 0)
        .create()
        .expect("an anonymous ring");
    let file = std::fs::File::from(ring.fd().try_clone_to_owned().expect("dup"));
    let size = file.metadata().expect("fstat").len();
    // Use it a little first (slots and indices then hold something).
    if flags & 2 != 0 {
        let mut tx = ring.sender().expect("sender");
        let _ = tx.try_send(b"before the scribbling");
    }
    let mut ready_mark = [0u8; 4];
    let ready = crate::ring::segment::OFF_READY as u64;
    file.read_exact_at(&mut ready_mark, ready).expect("pread");
    let mut writes = 0;
    while !input.is_empty() && writes < 32 {
        writes += 1;
        let off = u64::from(input.u16()) % size;
        let n = input.u8() as usize % 16 + 1;
        let bytes = input.bytes(n).to_vec();
        file.write_all_at(&bytes, off).expect("pwrite");
    }
    // The ready mark stays: without it an opener waits a few seconds for
    // the creator to finish (a bounded wait, tested in tests/ring.rs), and
    // the fuzzer would spend its time there.
    let ready = crate::ring::segment::OFF_READY as u64;
    file.write_all_at(&ready_mark, ready).expect("pwrite");
    let Ok(opened) = crate::ring::Ring::from_fd(ring.fd().try_clone_to_owned().expect("dup"))
    else {
        return;
    };
    let _ = opened.status();
    if let Ok(mut rx) = opened.receiver() {
        for _ in 0..8 {
            match rx.try_recv() {
                Ok(m) => assert!(m.len() <= 64, "a message of {} bytes", m.len()),
                Err(_) => break,
            }
        }
    }
    if let Ok(mut tx) = opened.sender() {
        for _ in 0..8 {
            if tx.try_send(b"after").is_err() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- mailbox

/// The mailbox wire protocol (`crate::mailbox`): the input is a stream of
/// frames as a client (or a broker) sends them; each is cut with the
/// broker's frame reader and read as a request and as an event.
pub fn mailbox_wire(data: &[u8]) {
    use crate::mailbox::wire;
    let mut at = 0;
    while at < data.len() {
        match wire::frame_len(&data[at..], 1 << 16) {
            Ok(Some(n)) => {
                let frame = &data[at..at + n];
                if let Ok(r) = wire::read_request(frame) {
                    let _ = format!("{r:?}");
                }
                if let Ok(e) = wire::read_event(frame) {
                    let _ = format!("{e:?}");
                }
                at += n;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// The durable mailbox store's recovery (`crate::mailbox`'s store): a
/// mailbox is made, then its segment files are replaced by the input's
/// records (given the right checksums, unless the input says to spoil
/// one) and the store opened. Whatever it recovers, opening it a second
/// time recovers the same: recovery cuts what it cannot read once and for
/// all.
pub fn mailbox_store(data: &[u8]) {
    use crate::mailbox::store::{self, Fsync, Store};
    let dir = TempDir::new();
    let root = dir.0.join("store");
    let now = std::time::Instant::now();
    let (mut s, _, _) =
        Store::open(&root, Fsync::Never, 1 << 16, 1 << 20, now, 0).expect("a new store");
    let owner = crate::mailbox::state::Cred {
        pid: 1,
        uid: 0,
        gid: 0,
    };
    let log = s
        .create("fuzz.box", owner, false, &crate::mailbox::Config::default())
        .expect("a mailbox");
    let newest = log.newest_path();
    let mbox_dir = newest.parent().expect("a mailbox directory").to_path_buf();
    drop(log);
    drop(s);
    for e in std::fs::read_dir(&mbox_dir).expect("read the mailbox directory") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "log") {
            std::fs::remove_file(p).expect("remove a segment");
        }
    }
    let mut input = Input(data);
    let mut seg = 1u32;
    let mut file = Vec::new();
    while !input.is_empty() {
        let op = input.u8();
        match op % 8 {
            // The next segment.
            0 => {
                write_segment(&mbox_dir, seg, &file);
                seg += 1;
                file.clear();
            }
            // Raw bytes (a torn or spoilt write).
            1 => {
                let n = input.u8() as usize;
                file.extend_from_slice(input.bytes(n));
            }
            // A record with the right length and checksum.
            _ => {
                let kind = input.u8() % 6;
                let n = input.u16() as usize % 512;
                let body = input.bytes(n).to_vec();
                store::record(&mut file, kind, |b| b.extend_from_slice(&body));
            }
        }
    }
    write_segment(&mbox_dir, seg, &file);
    let summary = |found: &[store::Recovered]| {
        found
            .iter()
            .map(|r| {
                for seq in r.msgs.keys() {
                    assert!(*seq < r.next_seq, "message {seq} at or past {}", r.next_seq);
                }
                (
                    r.name.clone(),
                    r.next_seq,
                    r.msgs.keys().copied().collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let first = match Store::open(&root, Fsync::Never, 1 << 16, 1 << 20, now, 0) {
        Ok((_, found, _)) => summary(&found),
        Err(_) => return,
    };
    let (_, found, _) = Store::open(&root, Fsync::Never, 1 << 16, 1 << 20, now, 0)
        .expect("a store that opened once opens again");
    assert_eq!(
        first,
        summary(&found),
        "a second recovery differs from the first"
    );
}

fn write_segment(dir: &std::path::Path, id: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut f = std::fs::File::create(dir.join(format!("{id:08}.log"))).expect("a segment");
    f.write_all(bytes).expect("write a segment");
}

/// A fresh directory under the temporary directory, removed on drop
/// (whichever way the target returns, a panic included).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ipckit-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).expect("a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- binder

/// The RPC binder wire (`crate::binder`): headers, transactions, replies
/// and dec-strong bodies of both protocol versions, then the parcel read
/// the way the input says (integers, strings of both widths, arrays,
/// objects, structured parcelables).
pub fn binder(data: &[u8]) {
    use crate::binder::wire;
    use crate::binder::Parcel;
    let mut input = Input(data);
    let version = u32::from(input.u8() & 1);
    let body = input.bytes(input.0.len() / 2).to_vec();
    if let Ok(h) = <&[u8; wire::WIRE_HEADER_LEN]>::try_from(&body[..body.len().min(8)]) {
        let _ = wire::decode_header(h);
    }
    if let Ok((t, b)) = wire::decode_transaction(&body, version) {
        assert!(b.parcel.len() <= body.len());
        let _ = format!("{t:?}");
    }
    if let Ok((_, b)) = wire::decode_reply(&body, version) {
        assert!(b.parcel.len() <= body.len());
    }
    let _ = wire::decode_dec_strong(&body);

    let ops = input.bytes(32).to_vec();
    let mut p = Parcel::from_bytes(input.rest().to_vec());
    for op in ops {
        let _ = match op % 10 {
            0 => p.read_i32().map(drop),
            1 => p.read_i64().map(drop),
            2 => p.read_string16().map(drop),
            3 => p.read_string8().map(drop),
            4 => p.read_byte_array().map(drop),
            5 => p.read_object().map(drop),
            6 => p.read::<Vec<String>>().map(drop),
            7 => p.read::<Option<Vec<i64>>>().map(drop),
            8 => p
                .read_structured(|p, end| {
                    let _ = p.read_field::<i32>(end, "a")?;
                    p.read_field::<String>(end, "b")
                })
                .map(drop),
            _ => p.read_exception().map(drop),
        };
    }
}

// ---------------------------------------------------------------- prop

/// A property area written by someone else (`crate::prop`): the input
/// overwrites a real area's bytes (after its magic and version, which
/// opening checks), then a reader looks up names, lists and reads
/// values, and a daemon taking the area over after a crash walks it.
/// Errors are fine; a panic, a crash or a hang is not.
pub fn prop_area(data: &[u8]) {
    use crate::prop::area;
    let fd = crate::sys::mman::memfd("ipckit-fuzz-prop").expect("memfd");
    let mut w = area::Writer::create(fd.try_clone().expect("dup")).expect("an area");
    for (name, value) in [
        ("a.b", "1"),
        ("a.c", "x".repeat(200).as_str()),
        ("net.wifi.on", "yes"),
    ] {
        w.set(name, value.as_bytes()).expect("set");
    }
    let file = std::fs::File::from(fd.try_clone().expect("dup"));
    let mut input = Input(data);
    let size = file.metadata().expect("fstat").len().min(1 << 20);
    while !input.is_empty() {
        // Offsets past the header (8 bytes: magic, version).
        let off = 8 + u64::from(input.u16()) % (size - 8);
        let n = input.u8() as usize % 32 + 1;
        let bytes = input.bytes(n).to_vec();
        file.write_all_at(&bytes, off).expect("pwrite");
    }
    let map = crate::sys::mman::Mapping::map(fd.as_fd(), 0, area::AREA_MAX, false).expect("map");
    if let Ok(v) = area::View::new(&map) {
        for name in ["a.b", "a.c", "net.wifi.on", "net", "zz"] {
            if let Ok(Some(node)) = v.find(name) {
                if let Ok(Some(r)) = v.record(node) {
                    if let Ok((value, _)) = v.read(r) {
                        assert!(value.len() <= area::LONG_VALUE_MAX);
                    }
                }
            }
        }
        if let Ok(all) = v.walk(area::ROOT, "") {
            for (_, r) in all {
                let _ = v.read(r);
            }
        }
    }
    drop(w);
    let _ = area::Writer::adopt(fd);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn seeds_dir() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
    }

    /// Every committed seed of every target (and every crash found and
    /// fixed, kept beside them as `crash-*`), through its target.
    #[test]
    fn seeds_replay() {
        let root = seeds_dir();
        let mut n = 0;
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (each target has seeds)", dir.display()));
            for e in entries {
                let path = e.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read a seed");
                let r = std::panic::catch_unwind(|| target(&bytes));
                assert!(r.is_ok(), "{name}: {} fails", path.display());
                n += 1;
            }
        }
        assert!(n >= super::TARGETS.len(), "{n} seeds");
    }

    /// The seeds of `fuzz/seeds/` are what the real encoders make today:
    /// a wire format that changed fails here, and
    /// `IPCKIT_WRITE_SEEDS=1 cargo test -p ipckit --lib fuzz::tests::seeds_are_current`
    /// writes them again.
    #[test]
    fn seeds_are_current() {
        use crate::binder::{wire as bw, Parcel};
        use crate::mailbox::wire as mw;
        use crate::typed::Codec;
        let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();
        let frames = |lens: &[usize]| {
            let mut v = Vec::new();
            for (i, &n) in lens.iter().enumerate() {
                v.extend_from_slice(&(n as u32).to_le_bytes());
                v.extend(std::iter::repeat_n(b'a' + i as u8, n));
            }
            v
        };
        for (name, flags, cut, body) in [
            ("small", 0u8, 7u16, frames(&[5, 0, 12, 1])),
            ("over16", 0, 3, frames(&[3, 40, 2])),
            ("large", 6, 1000, frames(&[70_000, 10])),
            ("cut", 2, 5, frames(&[100])[..60].to_vec()),
            ("lines", 1, 4, b"one\ntwo\n\nthree".to_vec()),
            (
                "long-line",
                1,
                9,
                [vec![b'x'; 40], b"\nok\n".to_vec()].concat(),
            ),
        ] {
            let mut v = vec![flags];
            v.extend_from_slice(&cut.to_le_bytes());
            v.extend(body);
            seeds.push(("frame", name, v));
        }
        seeds.push(("dgram", "mixed", vec![2, 0, 1, 4, 0, 7, 0, 0, 9, 200, 5, 1]));
        seeds.push(("dgram", "zero-max", vec![0, 0, 0, 0, 0, 1, 0, 1]));
        seeds.push((
            "dgram",
            "big",
            vec![3, 0, 0xff, 0xff, 0xff, 3, 0x10, 0x27, 4],
        ));
        let samples = [
            super::Sample::Unit,
            super::Sample::Number(-5, 7, 1.5),
            super::Sample::Text {
                name: "n".into(),
                tags: vec!["a".into(), "bc".into()],
            },
            super::Sample::Nested(vec![(1, Some(Box::new(super::Sample::Unit))), (2, None)]),
            super::Sample::Bytes(vec![1, 2, 3]),
            super::Sample::Map([("k".to_string(), 9)].into()),
        ];
        for (i, v) in samples.iter().enumerate() {
            let mut b = Vec::new();
            crate::typed::Postcard.encode(v, &mut b).unwrap();
            seeds.push((
                "typed",
                [
                    "postcard-0",
                    "postcard-1",
                    "postcard-2",
                    "postcard-3",
                    "postcard-4",
                    "postcard-5",
                ][i],
                b.clone(),
            ));
            let mut j = Vec::new();
            crate::typed::Json.encode(v, &mut j).unwrap();
            seeds.push((
                "typed",
                ["json-0", "json-1", "json-2", "json-3", "json-4", "json-5"][i],
                j,
            ));
        }
        for (i, text) in [
            "fifo:/tmp/x.fifo",
            "unix:@name",
            "unix-seq:/run/a.sock",
            "tcp:127.0.0.1:7000",
            "udp:[::1]:53",
            "mq:/queue",
            "shm:/region",
            "sem:/lock",
            "sysv-mq:0x0000162e",
            "0x0000162e",
            "/etc/passwd:7",
            "SIGRTMIN+3",
            "USR1",
            "SIGTERM",
            "34",
            "spin",
            "adaptive",
            "block",
            "@abstract",
            "100ms",
            "always",
            "orders.eu.*",
            "orders.>",
            "# services\nsvc.* 0,1000\nlog 65534\n",
            "ro.* 0\nnet.* 1000\n* 0\n",
        ]
        .iter()
        .enumerate()
        {
            seeds.push((
                "parse",
                [
                    "p00", "p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10",
                    "p11", "p12", "p13", "p14", "p15", "p16", "p17", "p18", "p19", "p20", "p21",
                    "p22", "p23", "p24",
                ][i],
                text.as_bytes().to_vec(),
            ));
        }
        seeds.push(("ring", "untouched", vec![2]));
        seeds.push((
            "ring",
            "head-tail",
            vec![
                3, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 64, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff,
            ],
        ));
        seeds.push(("ring", "slot", vec![2, 0, 1, 4, 0xff, 0xff, 0, 0]));
        let mut w = Vec::new();
        mw::hello(&mut w, false, true);
        mw::send(&mut w, 1, "orders.eu", 1, 0, 1000, Some("id-1"), b"payload");
        mw::subscribe(
            &mut w,
            2,
            1,
            16,
            mw::AckMode::Explicit,
            crate::mq::sysv::Selector::Any,
            "orders.*",
            "g",
        );
        mw::ack(&mut w, &[1, 2, 3]);
        mw::nack(&mut w, 4, 100);
        mw::reject(&mut w, 5, "bad");
        mw::create(
            &mut w,
            3,
            true,
            "orders.eu",
            &crate::mailbox::Config::default(),
        );
        mw::delete(&mut w, 4, "orders.eu");
        mw::stat(&mut w, 5, "orders.>");
        seeds.push(("mailbox_wire", "requests", w));
        let mut e = Vec::new();
        mw::welcome(&mut e, 1, 2, 3, 1 << 20);
        mw::confirm(&mut e, 1, 0, 9);
        mw::fail(&mut e, 2, mw::Code::Denied, "no");
        mw::done(&mut e, 3, 1);
        let h = mw::DeliverHead {
            sub: 1,
            tag: 2,
            seq: 3,
            mtype: 1,
            priority: 0,
            pid: 5,
            uid: 6,
            gid: 7,
            deliveries: 1,
        };
        mw::deliver(&mut e, &h, "orders.eu", Some("id"), Some("why"), b"body");
        mw::closed(&mut e, 1, "orders.eu");
        seeds.push(("mailbox_wire", "events", e));
        // Store: op 2 = a record (kind, u16 length, body); 0 = next segment.
        let rec = |kind: u8, body: &[u8]| {
            let mut v = vec![2, kind];
            v.extend_from_slice(&(body.len() as u16).to_le_bytes());
            v.extend_from_slice(body);
            v
        };
        let msg = |seq: u64| {
            let mut b = Vec::new();
            for x in [seq, 1000u64] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.extend_from_slice(&1i64.to_le_bytes());
            for x in [0u32, 10, 0, 0] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.push(0);
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(b"hello");
            b
        };
        let mut st = rec(1, &1u64.to_le_bytes());
        st.extend(rec(2, &msg(1)));
        st.extend(rec(2, &msg(2)));
        st.extend(rec(3, &1u64.to_le_bytes()));
        seeds.push(("mailbox_store", "one-segment", st.clone()));
        st.push(0);
        st.extend(rec(1, &3u64.to_le_bytes()));
        st.extend(rec(2, &msg(3)));
        st.extend([1, 5, 9, 9, 9, 9, 9]);
        seeds.push(("mailbox_store", "torn-tail", st));
        let mut p = Parcel::new();
        p.write_i32(7);
        p.write_string16(Some("text")).unwrap();
        p.write_string8("text8").unwrap();
        p.write_byte_array(Some(b"bytes")).unwrap();
        let t = bw::Transaction {
            address: 1,
            code: 2,
            flags: 0,
            async_number: 0,
            parcel_len: p.as_bytes().len() as u32,
        };
        let mut b = vec![1];
        let mut body = t.encode().to_vec();
        body.extend_from_slice(p.as_bytes());
        b.extend(&body);
        b.extend(&body[..body.len() % 2]);
        b.extend([0, 2, 3, 4, 0, 0, 0, 0]);
        b.extend(std::iter::repeat_n(0u8, 24));
        b.extend(p.as_bytes());
        seeds.push(("binder", "transaction", b));
        seeds.push(("prop_area", "untouched", Vec::new()));
        seeds.push((
            "prop_area",
            "root",
            vec![0x20, 0, 8, 1, 0, 0, 0, 0xff, 0xff, 0, 0],
        ));
        let write = std::env::var_os("IPCKIT_WRITE_SEEDS").is_some();
        for (target, name, bytes) in seeds {
            let dir = seeds_dir().join(target);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(name), bytes).unwrap();
            } else {
                let path = dir.join(name);
                let committed = std::fs::read(&path).unwrap_or_default();
                assert!(
                    committed == bytes,
                    "{} is not what the encoders make now: IPCKIT_WRITE_SEEDS=1 writes it",
                    path.display()
                );
            }
        }
    }
}
