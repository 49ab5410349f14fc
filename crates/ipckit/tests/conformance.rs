//! The message-trait conformance suite, written once and run against every
//! mechanism, each time with a real peer process: this test binary
//! re-executed with `IPCKIT_PEER=<mechanism>:<role>:<address>`.
//!
//! Besides the shared cases, mechanism-specific behaviour that needs a second
//! process (descriptor passing, peer credentials, SIGPIPE, FIFO opening,
//! stale sockets) is tested here too.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipckit::fifo::Fifo;
use ipckit::mq::{Duplex as MqDuplex, PosixQueue};
use ipckit::pipe::{self, PipeReader, PipeWriter};
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::select::Selectable;
use ipckit::socket::inet::{TcpListener, TcpStream, UdpSocket};
use ipckit::socket::unix::{
    self, SeqpacketListener, SeqpacketStream, UnixAddr, UnixDatagram, UnixListener, UnixStream,
};
use ipckit::sysv::{self, Key, MessageQueue, Selector};
use ipckit::{
    MessageReceiver, MessageSender, MessageSenderExt, MessageTooLarge, RecvError, RecvTimeoutError,
    SendError, TryRecvError, TrySendError,
};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::{ensure, expect_denied, my_uid, other_user_cmd, unique, unique_key, Peer, T};
use signal_hook::consts::SIGUSR1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mech {
    Pipe,
    Fifo,
    Unix,
    UnixDgram,
    UnixSeq,
    Tcp,
    Udp,
    PosixMq,
    SysvMq,
    Ring,
}

const MECHS: [Mech; 10] = [
    Mech::Pipe,
    Mech::Fifo,
    Mech::Unix,
    Mech::UnixDgram,
    Mech::UnixSeq,
    Mech::Tcp,
    Mech::Udp,
    Mech::PosixMq,
    Mech::SysvMq,
    Mech::Ring,
];

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Pipe => "pipe",
            Mech::Fifo => "fifo",
            Mech::Unix => "unix",
            Mech::UnixDgram => "unix_dgram",
            Mech::UnixSeq => "unix_seq",
            Mech::Tcp => "tcp",
            Mech::Udp => "udp",
            Mech::PosixMq => "posix_mq",
            Mech::SysvMq => "sysv_mq",
            Mech::Ring => "ring",
        }
    }

    fn parse(s: &str) -> Mech {
        *MECHS
            .iter()
            .find(|m| m.name() == s)
            .expect("known mechanism")
    }

    /// A connection that ends when the peer goes (streams, seqpacket).
    fn connected(self) -> bool {
        matches!(
            self,
            Mech::Pipe | Mech::Fifo | Mech::Unix | Mech::UnixSeq | Mech::Tcp | Mech::Ring
        )
    }

    /// A byte stream carrying frames.
    fn stream(self) -> bool {
        matches!(self, Mech::Pipe | Mech::Fifo | Mech::Unix | Mech::Tcp)
    }

    fn carries_empty(self) -> bool {
        self != Mech::UnixSeq
    }

    fn largest(self) -> usize {
        match self {
            Mech::Udp => 60_000,
            Mech::UnixDgram | Mech::UnixSeq => 100_000,
            Mech::PosixMq => 8192,
            Mech::SysvMq => sysv::limits().expect("limits").max_message_size,
            _ => 1 << 20,
        }
    }
}

trait Endpoint: MessageSender + MessageReceiver + Selectable + Send {}
impl<T: MessageSender + MessageReceiver + Selectable + Send> Endpoint for T {}

fn peer_cmd(mech: Mech, role: &str, addr: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.env("IPCKIT_PEER", format!("{}:{role}:{addr}", mech.name()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Starts a peer playing `role` and returns our connected endpoint.
fn start(mech: Mech, role: &str) -> Result<(Box<dyn Endpoint>, Peer), Failed> {
    let mut dir = None;
    let (ep, child): (Box<dyn Endpoint>, Child) = match mech {
        Mech::Pipe => {
            let (to_r, to_w) = pipe::pipe()?;
            let (from_r, from_w) = pipe::pipe()?;
            let mut cmd = peer_cmd(mech, role, "-");
            cmd.stdin(Stdio::from(to_r)).stdout(Stdio::from(from_w));
            let child = cmd.spawn()?;
            (Box::new(pipe::Duplex::new(from_r, to_w)?), child)
        }
        Mech::Fifo => {
            let d = tempfile::tempdir()?;
            let a2b = Fifo::create(d.path().join("a2b"))?.keep();
            let b2a = Fifo::create(d.path().join("b2a"))?.keep();
            let child = peer_cmd(mech, role, d.path().to_str().unwrap()).spawn()?;
            let tx = a2b.open_sender(Some(T))?;
            let rx = b2a.open_receiver(Some(T))?;
            dir = Some(d);
            (Box::new(pipe::Duplex { tx, rx }), child)
        }
        Mech::Unix => {
            let name = format!("@{}", unique("s"));
            let l = UnixListener::bind(&name.parse()?)?;
            let child = peer_cmd(mech, role, &name).spawn()?;
            (Box::new(l.accept_timeout(T)?), child)
        }
        Mech::UnixSeq => {
            let name = format!("@{}", unique("q"));
            let l = SeqpacketListener::bind(&name.parse()?)?;
            let child = peer_cmd(mech, role, &name).spawn()?;
            (Box::new(l.accept_timeout(T)?), child)
        }
        Mech::UnixDgram => {
            let d = tempfile::tempdir()?;
            let mine = UnixAddr::path(d.path().join("parent.sock"));
            let mut s = UnixDatagram::bind(&mine)?;
            let child = peer_cmd(mech, role, d.path().to_str().unwrap()).spawn()?;
            s.recv_timeout(T)?; // hello from the peer's bound socket
            s.connect(&UnixAddr::path(d.path().join("peer.sock")))?;
            dir = Some(d);
            (Box::new(s), child)
        }
        Mech::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let port = l.local_addr()?.port().to_string();
            let child = peer_cmd(mech, role, &port).spawn()?;
            (Box::new(l.accept_timeout(T)?), child)
        }
        Mech::PosixMq => {
            let base = format!("/{}", unique("mq"));
            let q = |dir: &str| {
                PosixQueue::builder(format!("{base}-{dir}"))
                    .capacity(10, 8192)
                    .create()
            };
            let (tx, rx) = (q("a2b")?, q("b2a")?);
            let child = peer_cmd(mech, role, &base).spawn()?;
            (Box::new(MqDuplex { tx, rx }), child)
        }
        Mech::SysvMq => {
            // One private queue, both directions: we send type 1 and take
            // type 2; the peer, told the id, does the opposite.
            let mut q = MessageQueue::private().create()?;
            q.set_default_type(1)?;
            q.set_default_selector(Selector::Type(2))?;
            let child = peer_cmd(mech, role, &q.id().to_string()).spawn()?;
            (Box::new(q), child)
        }
        Mech::Ring => {
            // Two rings, one each way; the peer opens them by name.
            let base = unique("ring");
            let ring = |dir: &str| {
                Ring::builder(format!("{base}-{dir}"))
                    .capacity(8)
                    .max_message_size(1 << 20)
                    .create()
            };
            let (a2b, b2a) = (ring("a2b")?, ring("b2a")?);
            let (tx, rx) = (a2b.sender()?, b2a.receiver()?);
            let child = peer_cmd(mech, role, &base).spawn()?;
            (Box::new(RingDuplex { tx, rx }), child)
        }
        Mech::Udp => {
            let mut s = UdpSocket::bind("[::1]:0")?;
            let port = s.local_addr()?.port().to_string();
            let child = peer_cmd(mech, role, &port).spawn()?;
            let hello = s.recv_timeout(T)?;
            s.connect(format!("[::1]:{}", String::from_utf8(hello)?))?;
            (Box::new(s), child)
        }
    };
    Ok((ep, Peer { child, _dir: dir }))
}

/// The peer's half of [`start`].
fn peer_connect(mech: Mech, addr: &str) -> io::Result<Box<dyn Endpoint>> {
    Ok(match mech {
        Mech::Pipe => Box::new(pipe::Duplex::from_stdio()?),
        Mech::Fifo => {
            let d = Path::new(addr);
            let rx = ipckit::fifo::open_receiver(d.join("a2b"), Some(T))?;
            let tx = ipckit::fifo::open_sender(d.join("b2a"), Some(T))?;
            Box::new(pipe::Duplex { tx, rx })
        }
        Mech::Unix => Box::new(UnixStream::connect(&addr.parse()?)?),
        Mech::UnixSeq => Box::new(SeqpacketStream::connect(&addr.parse()?)?),
        Mech::UnixDgram => {
            let d = Path::new(addr);
            let mut s = UnixDatagram::bind(&UnixAddr::path(d.join("peer.sock")))?;
            s.connect(&UnixAddr::path(d.join("parent.sock")))?;
            s.send(b"hello")?;
            Box::new(s)
        }
        Mech::Tcp => Box::new(TcpStream::connect(format!("127.0.0.1:{addr}"))?),
        Mech::PosixMq => Box::new(MqDuplex {
            tx: PosixQueue::builder(format!("{addr}-b2a")).open()?,
            rx: PosixQueue::builder(format!("{addr}-a2b")).open()?,
        }),
        Mech::SysvMq => {
            let id = addr.parse().map_err(io::Error::other)?;
            let mut q = MessageQueue::open_id(id)?;
            q.set_default_type(2)?;
            q.set_default_selector(Selector::Type(1))?;
            Box::new(q)
        }
        Mech::Ring => Box::new(RingDuplex {
            rx: Ring::builder(format!("{addr}-a2b")).open()?.receiver()?,
            tx: Ring::builder(format!("{addr}-b2a")).open()?.sender()?,
        }),
        Mech::Udp => {
            let mut s = UdpSocket::bind("[::1]:0")?;
            s.connect(format!("[::1]:{addr}"))?;
            let port = s.local_addr()?.port().to_string();
            s.send(port.as_bytes())?;
            Box::new(s)
        }
    })
}

fn stdout_end() -> PipeWriter {
    PipeWriter::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .expect("dup stdout"),
    )
}

/// Deterministic content for message `i` of `len` bytes.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Runs in the peer process; the exit status tells the parent how it went.
fn peer_main(spec: &str) -> io::Result<()> {
    let mut parts = spec.splitn(3, ':');
    let mech = Mech::parse(parts.next().unwrap_or_default());
    let role = parts.next().unwrap_or_default();
    let addr = parts.next().unwrap_or_default();
    if role == "midframe" {
        return peer_midframe(mech, addr);
    }
    let mut ep = peer_connect(mech, addr)?;
    let mut buf = Vec::new();
    match role {
        // Echo everything back until the peer leaves or says "quit".
        "echo" => loop {
            match ep.recv_timeout_into(&mut buf, T) {
                Ok(()) if buf == b"quit" => return Ok(()),
                // "later:MS": echo it after MS milliseconds.
                Ok(()) if buf.starts_with(b"later:") => {
                    let ms = std::str::from_utf8(&buf[6..])
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| io::Error::other("bad later:MS"))?;
                    std::thread::sleep(Duration::from_millis(ms));
                    ep.send(&buf).map_err(io::Error::from)?;
                }
                Ok(()) => ep.send(&buf).map_err(io::Error::from)?,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        },
        // Send 500 numbered messages of varying sizes, then "end", then leave.
        "seq" => {
            for i in 0..500 {
                ep.send(payload(i, 1 + i * 13 % 3000))?;
            }
            ep.send(b"end")?;
            Ok(())
        }
        // Send one 2048-byte message, then "after", then wait for "quit".
        "oversize" => {
            ep.send(payload(1, 2048))?;
            ep.send(b"after")?;
            let _ = ep.recv_timeout(T);
            Ok(())
        }
        // Leave after the first message.
        "exit" => {
            ep.recv_timeout(T)?;
            Ok(())
        }
        // Read nothing (the parent kills us when done).
        "idle" => {
            std::thread::sleep(T);
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other}"))),
    }
}

/// Writes a header announcing 1000 bytes, then 10 bytes, then exits.
fn peer_midframe(mech: Mech, addr: &str) -> io::Result<()> {
    let mut bytes = 1000u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[7u8; 10]);
    match mech {
        Mech::Pipe => stdout_end().write_all(&bytes),
        Mech::Fifo => {
            // Take the read end too so the parent's open completes.
            let d = Path::new(addr);
            let _rx = ipckit::fifo::open_reader(d.join("a2b"), Some(T))?;
            ipckit::fifo::open_writer(d.join("b2a"), Some(T))?.write_all(&bytes)
        }
        Mech::Unix => {
            let addr: UnixAddr = addr.parse()?;
            let UnixAddr::Abstract(name) = addr else {
                unreachable!()
            };
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            std::os::unix::net::UnixStream::connect_addr(&sa)?.write_all(&bytes)
        }
        Mech::Tcp => std::net::TcpStream::connect(format!("127.0.0.1:{addr}"))?.write_all(&bytes),
        _ => Err(io::Error::other("not a stream")),
    }
}

// ---- The shared cases -------------------------------------------------

/// Messages of many sizes come back whole and unchanged.
fn roundtrip(mech: Mech) -> Result<(), Failed> {
    let (mut ep, mut peer) = start(mech, "echo")?;
    let mut sizes: Vec<usize> = [1, 2, 3, 100, 4092, 4096, 65_536, mech.largest()]
        .into_iter()
        .filter(|&n| n <= mech.largest())
        .collect();
    if mech.carries_empty() {
        sizes.insert(0, 0);
    }
    for (i, &n) in sizes.iter().enumerate() {
        let msg = payload(i, n);
        ep.send_timeout(&msg, T)
            .map_err(|e| format!("send {n}: {e}"))?;
        let got = ep.recv_timeout(T).map_err(|e| format!("recv {n}: {e}"))?;
        ensure(got == msg, || {
            format!("{n}-byte message came back as {} bytes", got.len())
        })?;
    }
    ep.send(b"quit")?;
    ensure(peer.wait()?, || "peer failed".into())
}

/// [`roundtrip`] and [`order_and_end`] with every receive through an
/// `AsyncReceiver` on a one-thread runtime (feature `tokio`).
#[cfg(feature = "tokio")]
fn async_roundtrip_and_order(mech: Mech) -> Result<(), Failed> {
    use ipckit::aio::AsyncReceiver;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ep, mut peer) = start(mech, "echo")?;
    let _in_rt = rt.enter();
    let mut ep = AsyncReceiver::new(ep)?;
    let mut sizes: Vec<usize> = [1, 100, 4096, 65_536, mech.largest()]
        .into_iter()
        .filter(|&n| n <= mech.largest())
        .collect();
    if mech.carries_empty() {
        sizes.insert(0, 0);
    }
    rt.block_on(async {
        for (i, &n) in sizes.iter().enumerate() {
            let msg = payload(i, n);
            ep.sender()
                .send_timeout(&msg, T)
                .map_err(|e| format!("send {n}: {e}"))?;
            let got = tokio::time::timeout(T, ep.recv())
                .await
                .map_err(|_| format!("no echo of {n} bytes"))?
                .map_err(|e| format!("recv {n}: {e}"))?;
            ensure(got == msg, || {
                format!("{n}-byte message came back as {} bytes", got.len())
            })?;
        }
        ep.sender().send(b"quit")?;
        Ok::<(), Failed>(())
    })?;
    // The peer first: a System V queue goes with its creator's handle,
    // perhaps before the peer took "quit".
    ensure(peer.wait()?, || "peer failed".into())?;
    drop(_in_rt);
    drop(ep);
    // In order, many, then the end: the "seq" peer.
    let (ep, mut peer) = start(mech, "seq")?;
    let _in_rt = rt.enter();
    let mut ep = AsyncReceiver::new(ep)?;
    rt.block_on(async {
        let mut buf = Vec::new();
        for i in 0..500 {
            match tokio::time::timeout(T, ep.recv_into(&mut buf)).await {
                Ok(Ok(())) => {}
                _ if mech == Mech::Udp => return Ok(()),
                Ok(Err(e)) => return Err(format!("message {i}: {e}").into()),
                Err(_) => return Err(format!("message {i} never came").into()),
            }
            if mech == Mech::Udp && buf != payload(i, 1 + i * 13 % 3000) {
                return Ok(());
            }
            ensure(buf == payload(i, 1 + i * 13 % 3000), || {
                format!("message {i} differs")
            })?;
        }
        let end = tokio::time::timeout(T, ep.recv())
            .await
            .map_err(|_| "no end")??;
        ensure(end == b"end", || "missing end".into())
    })?;
    drop(_in_rt);
    ensure(peer.wait()?, || "peer failed".into())
}

/// Many messages of varying size arrive in order; then the end shows.
fn order_and_end(mech: Mech) -> Result<(), Failed> {
    let (mut ep, mut peer) = start(mech, "seq")?;
    let mut buf = Vec::new();
    for i in 0..500 {
        if let Err(e) = ep.recv_timeout_into(&mut buf, T) {
            // UDP may drop; nothing else may.
            if mech == Mech::Udp {
                return Ok(());
            }
            return Err(format!("message {i}: {e}").into());
        }
        if mech == Mech::Udp && buf != payload(i, 1 + i * 13 % 3000) {
            return Ok(()); // a drop shifted the sequence: allowed for UDP
        }
        ensure(buf == payload(i, 1 + i * 13 % 3000), || {
            format!("message {i} differs")
        })?;
    }
    ensure(ep.recv_timeout(T)? == b"end", || "missing end".into())?;
    ensure(peer.wait()?, || "peer failed".into())?;
    if mech.connected() {
        match ep.recv_timeout(T) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => return Err(format!("after the peer left: {other:?}").into()),
        }
    }
    Ok(())
}

/// An idle channel: try_recv says Empty, recv_timeout says Timeout on time.
fn empty_and_timeout(mech: Mech) -> Result<(), Failed> {
    let (mut ep, _peer) = start(mech, "echo")?;
    match ep.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => return Err(format!("try_recv on an idle channel: {other:?}").into()),
    }
    let t0 = Instant::now();
    match ep.recv_timeout(Duration::from_millis(150)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => return Err(format!("recv_timeout: {other:?}").into()),
    }
    let took = t0.elapsed();
    // Never early; late only by scheduling (the bound is loose for a busy
    // machine, tight enough to catch a wait that overruns its deadline).
    ensure(
        took >= Duration::from_millis(150) && took < Duration::from_millis(650),
        || format!("timed out after {took:?}"),
    )?;
    // Still usable afterwards.
    ep.send(b"x")?;
    ensure(ep.recv_timeout(T)? == b"x", || "echo after timeout".into())?;
    // A wait longer than a second (POSIX queues wait in one-second steps)
    // gets a message that comes after one.
    let t0 = Instant::now();
    ep.send(b"later:1100")?;
    ensure(
        ep.recv_timeout(Duration::from_secs(3))? == b"later:1100",
        || "a late echo".into(),
    )?;
    ensure(t0.elapsed() >= Duration::from_millis(1100), || {
        "the late echo came early".into()
    })?;
    // A receive without a deadline after timed ones waits as long as it takes.
    ep.send(b"later:300")?;
    ensure(ep.recv()? == b"later:300", || {
        "echo after timed waits".into()
    })?;
    ep.send(b"quit")?;
    Ok(())
}

/// Every wait strategy delivers, and times out on time.
fn wait_strategies(mech: Mech) -> Result<(), Failed> {
    let (mut ep, _peer) = start(mech, "echo")?;
    for w in [
        ipckit::WaitStrategy::Spin,
        ipckit::WaitStrategy::ADAPTIVE,
        ipckit::WaitStrategy::Block,
    ] {
        ep.set_wait_strategy(w);
        for i in 0..50 {
            ep.send(payload(i, 64))?;
            ensure(ep.recv_timeout(T)? == payload(i, 64), || {
                format!("{w}: echo {i}")
            })?;
        }
        let t0 = Instant::now();
        match ep.recv_timeout(Duration::from_millis(30)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => return Err(format!("{w}: {other:?}").into()),
        }
        ensure(t0.elapsed() >= Duration::from_millis(30), || {
            format!("{w}: early timeout")
        })?;
    }
    ep.send(b"quit")?;
    Ok(())
}

/// Once the peer is gone, a send fails with Disconnected and hands the
/// message back.
fn send_to_gone_peer(mech: Mech) -> Result<(), Failed> {
    let (mut ep, mut peer) = start(mech, "exit")?;
    ep.send(b"bye")?;
    ensure(peer.wait()?, || "peer failed".into())?;
    let msg = b"are you there?".to_vec();
    let end = Instant::now() + T;
    // TCP and UDP learn of the peer's exit from the first failed send.
    loop {
        match ep.send(msg.clone()) {
            Err(SendError::Disconnected(back)) => {
                return ensure(back == msg, || "a different message came back".into());
            }
            Ok(()) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            other => return Err(format!("send to a gone peer: {other:?}").into()),
        }
    }
}

/// A message above the receiver's limit is refused with MessageTooLarge.
fn oversize_refused(mech: Mech) -> Result<(), Failed> {
    let (mut ep, _peer) = start(mech, "oversize")?;
    ep.set_max_message_size(1024);
    match ep.recv_timeout(T) {
        Err(RecvTimeoutError::Io(e)) => {
            let big =
                MessageTooLarge::find(&e).ok_or_else(|| format!("not MessageTooLarge: {e}"))?;
            ensure(big.len == 2048 && big.max == 1024, || format!("{big:?}"))?;
        }
        other => return Err(format!("oversized message: {other:?}").into()),
    }
    if mech.stream() {
        // The stream cannot be resynchronised: later receives fail too.
        ensure(ep.recv_timeout(T).is_err(), || {
            "stream usable after a refused frame".into()
        })?;
    } else {
        // The datagram was discarded; the next one arrives.
        ensure(ep.recv_timeout(T)? == b"after", || {
            "next datagram lost".into()
        })?;
    }
    ep.send(b"quit").ok();
    Ok(())
}

/// A peer that dies in the middle of a frame is an error, not a short message.
fn peer_dies_mid_frame(mech: Mech) -> Result<(), Failed> {
    let (mut ep, mut peer) = start(mech, "midframe")?;
    peer.wait()?;
    match ep.recv_timeout(T) {
        Err(RecvTimeoutError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => ensure(
            e.to_string().contains("got 10 of 1000 payload bytes"),
            || format!("message: {e}"),
        ),
        other => Err(format!("truncated frame: {other:?}").into()),
    }
}

/// try_send on a full channel hands the message back as Full.
fn full_hands_message_back(mech: Mech) -> Result<(), Failed> {
    let (mut ep, _peer) = start(mech, "idle")?;
    let msg = payload(3, (16 * 1024).min(mech.largest()));
    for _ in 0..100_000 {
        match ep.try_send(msg.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(back)) => {
                return ensure(back == msg, || "a different message came back".into());
            }
            Err(e) => return Err(format!("try_send: {e}").into()),
        }
    }
    Err("the channel never filled up".into())
}

// ---- Mechanism-specific, across processes -------------------------------

/// Descriptors passed over each Unix socket type arrive usable.
fn fd_passing() -> Result<(), Failed> {
    for ty in ["stream", "seqpacket", "dgram"] {
        let dir = tempfile::tempdir()?;
        let mut file = std::fs::File::create(dir.path().join("f"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .env(
                "IPCKIT_PEER_FD",
                format!("{ty}:{}", dir.path().join("s").display()),
            )
            .stdin(Stdio::null())
            .spawn()?;
        let addr = UnixAddr::path(dir.path().join("s"));
        let fds = match ty {
            "stream" => {
                let l = UnixListener::bind(&addr)?;
                let mut c = l.accept_timeout(T)?;
                let pid = c.peer_credentials()?.pid;
                ensure(pid == child.id() as i32, || format!("peer pid {pid}"))?;
                ensure(c.peer_credentials()?.uid == my_uid(), || "peer uid".into())?;
                c.recv_with_fds(&mut Vec::new())?
            }
            "seqpacket" => {
                let l = SeqpacketListener::bind(&addr)?;
                let mut c = l.accept_timeout(T)?;
                ensure(c.peer_credentials()?.pid == child.id() as i32, || {
                    "peer pid".into()
                })?;
                c.recv_with_fds(&mut Vec::new())?
            }
            _ => {
                let mut s = UnixDatagram::bind(&addr)?;
                s.recv_with_fds(&mut Vec::new())?
            }
        };
        ensure(child.wait()?.success(), || format!("{ty}: peer failed"))?;
        ensure(fds.len() == 1, || {
            format!("{ty}: {} descriptors", fds.len())
        })?;
        // The peer wrote "via-{ty}" into a pipe and sent us its read end.
        let mut s = String::new();
        PipeReader::from(fds.into_iter().next().unwrap()).read_to_string(&mut s)?;
        ensure(s == format!("via-{ty}"), || format!("{ty}: read {s:?}"))?;
        file.write_all(b"ok")?;
    }
    Ok(())
}

/// A stream protocol that mixes messages with and without descriptors:
/// plain receives read ahead without `recvmsg`, so the first
/// `recv_with_fds` after bytes were read ahead refuses (the kernel may have
/// closed descriptors), and `set_receive_fds(true)` up front makes it work.
fn fd_passing_mixed_stream() -> Result<(), Failed> {
    for opt_in in [false, true] {
        let dir = tempfile::tempdir()?;
        let addr = UnixAddr::path(dir.path().join("s"));
        let l = UnixListener::bind(&addr)?;
        let mut child = Command::new(std::env::current_exe()?)
            .env(
                "IPCKIT_PEER_FD",
                format!("stream-mixed:{}", dir.path().join("s").display()),
            )
            .stdin(Stdio::null())
            .spawn()?;
        let mut c = l.accept_timeout(T)?;
        c.set_receive_fds(opt_in);
        // Both messages are queued before the first read takes them.
        ensure(child.wait()?.success(), || "peer failed".into())?;
        let first = c.recv_timeout(T)?;
        ensure(first == b"plain", || format!("first message {first:?}"))?;
        let mut buf = Vec::new();
        match (opt_in, c.recv_with_fds(&mut buf)) {
            (true, Ok(fds)) => {
                ensure(buf == b"fd" && fds.len() == 1, || {
                    format!("{buf:?} with {} descriptors", fds.len())
                })?;
                let mut s = String::new();
                PipeReader::from(fds.into_iter().next().unwrap()).read_to_string(&mut s)?;
                ensure(s == "via-stream-mixed", || format!("read {s:?}"))?;
            }
            (false, Err(RecvError::Io(e))) => {
                ensure(
                    e.kind() == io::ErrorKind::InvalidInput
                        && e.to_string().contains("set_receive_fds(true)"),
                    || format!("unexpected error: {e}"),
                )?;
                // Nothing was lost: the message is still there.
                let second = c.recv_timeout(T)?;
                ensure(second == b"fd", || format!("second message {second:?}"))?;
            }
            (_, r) => return Err(format!("opt-in {opt_in}: {r:?}").into()),
        }
    }
    Ok(())
}

fn peer_fd(spec: &str) -> io::Result<()> {
    let (ty, path) = spec.split_once(':').expect("type:path");
    let addr = UnixAddr::path(path);
    let (r, mut w) = pipe::pipe()?;
    w.write_all(format!("via-{ty}").as_bytes())?;
    drop(w);
    if ty == "stream-mixed" {
        let mut s = UnixStream::connect(&addr)?;
        s.send(b"plain").map_err(io::Error::from)?;
        return s
            .send_with_fds(b"fd", &[r.as_fd()])
            .map_err(io::Error::from);
    }
    let end = Instant::now() + T;
    // The parent binds after spawning us: retry until it is there.
    loop {
        let res = match ty {
            "stream" => UnixStream::connect(&addr).and_then(|mut s| {
                s.send_with_fds(b"fd", &[r.as_fd()])
                    .map_err(io::Error::from)
            }),
            "seqpacket" => SeqpacketStream::connect(&addr).and_then(|mut s| {
                s.send_with_fds(b"fd", &[r.as_fd()])
                    .map_err(io::Error::from)
            }),
            _ => UnixDatagram::connect_to(&addr).and_then(|mut s| {
                s.send_with_fds(b"fd", &[r.as_fd()])
                    .map_err(io::Error::from)
            }),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
}

/// A pipe's reader sees EOF when the writer exits; a writer whose reader
/// exited gets EPIPE and lives, even with SIGPIPE at its default action.
fn pipe_eof_and_epipe() -> Result<(), Failed> {
    // EOF: the child writes one message to its stdout and exits.
    let mut c = pipe::spawn(
        Command::new(std::env::current_exe()?).env("IPCKIT_PEER", "pipe:seq:-"),
        // The child takes both ends (Duplex::from_stdio); it only writes.
        pipe::Direction::Both,
    )?;
    drop(c.stdin.take());
    let mut rx = pipe::Receiver::new(c.stdout.take().unwrap())?;
    let mut n = 0;
    loop {
        match rx.recv_timeout(T) {
            Ok(_) => n += 1,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => return Err(e.to_string().into()),
        }
    }
    ensure(n == 501, || format!("{n} messages before EOF"))?;
    ensure(c.wait()?.success(), || "child failed".into())?;
    // EPIPE: a child with SIGPIPE at its default (std resets it for
    // children) writes to a pipe whose reader is gone.
    let out = Command::new(std::env::current_exe()?)
        .env("IPCKIT_PEER_EPIPE", "1")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.success() && text.contains("disconnected"),
        || {
            format!(
                "status {:?}, stdout {text:?}, stderr {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        },
    )
}

fn peer_epipe() -> io::Result<()> {
    let (r, w) = pipe::pipe()?;
    drop(r);
    let mut tx = pipe::Sender::new(w)?;
    match tx.send(b"into the void") {
        Err(SendError::Disconnected(_)) => println!("disconnected"),
        other => println!("unexpected: {other:?}"),
    }
    // The raw writer too.
    let (r, mut w) = pipe::pipe()?;
    drop(r);
    match w.write(b"x") {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Err(io::Error::other(format!("raw write: {other:?}"))),
    }
}

/// The child's side of `pipe::spawn`: `Duplex::from_stdio` takes the two
/// pipes, so a stray `println!` no longer reaches the parent and the parent
/// sees the end as soon as the child drops the duplex (while the child is
/// still running: it waits to be killed). Standard input that
/// is not a pipe is refused in words and nothing changes: the child's
/// stdout still carries its error message.
fn pipe_from_stdio() -> Result<(), Failed> {
    let mut c = pipe::spawn(
        Command::new(std::env::current_exe()?).env("IPCKIT_PEER_STDIO", "take"),
        pipe::Direction::Both,
    )?;
    let mut d = pipe::Duplex::new(c.stdout.take().unwrap(), c.stdin.take().unwrap())?;
    d.send(b"ping")?;
    ensure(d.recv_timeout(T)? == b"pong", || "no pong".into())?;
    match d.recv_timeout(T) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => return Err(format!("after the child dropped its ends: {other:?}").into()),
    }
    ensure(c.child.try_wait()?.is_none(), || {
        "the child exited before we saw the end: not proof the drop closed it".into()
    })?;
    c.child.kill()?;
    c.child.wait()?;

    let out = Command::new(std::env::current_exe()?)
        .env("IPCKIT_PEER_STDIO", "refused")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.success()
            && text.contains("standard input is a character device")
            && text.contains("pipe::spawn"),
        || format!("status {:?}, stdout {text:?}", out.status),
    )
}

/// The child of [`pipe_from_stdio`].
fn peer_stdio(how: &str) -> io::Result<()> {
    match how {
        "take" => {
            let mut d = pipe::Duplex::from_stdio()?;
            println!("a stray line that must not reach the parent");
            if d.recv_timeout(T)? != b"ping" {
                return Err(io::Error::other("no ping"));
            }
            d.send(b"pong").map_err(io::Error::from)?;
            drop(d);
            // Still running when the parent sees the end (it kills us):
            // the drop closed the pipes, not the exit.
            std::thread::sleep(T);
            Ok(())
        }
        _ => match pipe::Duplex::from_stdio() {
            Err(e) => {
                println!("{e}");
                Ok(())
            }
            Ok(_) => Err(io::Error::other("standard input /dev/null was taken")),
        },
    }
}

/// popen in both directions: `tr` upper-cases what we write.
fn popen_both_ways() -> Result<(), Failed> {
    let mut c = pipe::popen("tr a-z A-Z", pipe::Direction::Both)?;
    c.stdin.take().unwrap().write_all(b"hello pipes")?;
    let mut s = String::new();
    c.stdout.take().unwrap().read_to_string(&mut s)?;
    ensure(s == "HELLO PIPES", || s.clone())?;
    ensure(c.wait()?.success(), || "tr failed".into())
}

/// Capacity can be read and raised; above the limit, a clear error.
fn pipe_capacity() -> Result<(), Failed> {
    let (r, w) = pipe::pipe()?;
    ensure(r.capacity()? >= 4096, || "capacity".into())?;
    let set = w.set_capacity(1 << 20)?;
    ensure(set == 1 << 20 && r.capacity()? == 1 << 20, || {
        format!("set {set}")
    })?;
    if my_uid() != 0 {
        let e = w.set_capacity(1 << 30).unwrap_err();
        ensure(e.to_string().contains("pipe-max-size"), || e.to_string())?;
    }
    Ok(())
}

/// Opening a FIFO waits for the peer, with a timeout; non-FIFOs are refused.
fn fifo_open_rules() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let fifo = Fifo::create(dir.path().join("f"))?;
    let t0 = Instant::now();
    let e = fifo
        .open_reader(Some(Duration::from_millis(100)))
        .unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::TimedOut && t0.elapsed() >= Duration::from_millis(100),
        || e.to_string(),
    )?;
    let e = fifo
        .open_writer(Some(Duration::from_millis(100)))
        .unwrap_err();
    ensure(e.kind() == io::ErrorKind::TimedOut, || e.to_string())?;
    // A regular file is not a FIFO.
    let file = dir.path().join("regular");
    std::fs::write(&file, b"data")?;
    let e = ipckit::fifo::open_writer(&file, Some(T)).unwrap_err();
    ensure(
        e.to_string().contains("not a FIFO (it is a regular file)"),
        || e.to_string(),
    )?;
    let e = Fifo::create(&file).unwrap_err();
    ensure(
        e.to_string().contains("a regular file already exists"),
        || e.to_string(),
    )?;
    ensure(
        ipckit::fifo::remove(&file).is_err() && file.exists(),
        || "removed a regular file".into(),
    )?;
    let e = ipckit::fifo::open_reader(dir.path().join("missing"), Some(T)).unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())?;
    // Modes: 0600 by default, as asked otherwise (the umask still applies).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    ensure(mode(fifo.path())? == 0o600, || {
        "default mode is not 0600".into()
    })?;
    let custom = Fifo::builder(dir.path().join("g")).mode(0o640).create()?;
    ensure(mode(custom.path())? & 0o600 == 0o600, || {
        "custom mode".into()
    })?;
    let kept = Fifo::builder(dir.path().join("k")).keep(true).create()?;
    let kept_path = kept.path().to_owned();
    drop(kept);
    ensure(kept_path.exists(), || "a kept FIFO was removed".into())?;
    ipckit::fifo::remove(&kept_path)?;
    ensure(!kept_path.exists(), || "remove left the FIFO".into())?;
    // The creator removes it on drop.
    let path = fifo.path().to_owned();
    drop(fifo);
    ensure(!path.exists(), || "FIFO left behind".into())
}

/// Small framed messages from several writer processes never interleave.
fn fifo_many_writers() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let fifo = Fifo::create(dir.path().join("f"))?;
    let mut children = Vec::new();
    for w in 0..4 {
        children.push(
            Command::new(std::env::current_exe()?)
                .env(
                    "IPCKIT_PEER_WRITER",
                    format!("{w}:{}", fifo.path().display()),
                )
                .spawn()?,
        );
    }
    let mut rx = fifo.open_receiver(Some(T))?;
    let mut counts = [0usize; 4];
    loop {
        match rx.recv_timeout(T) {
            Ok(m) => {
                ensure(m.len() == 4000 && m.iter().all(|&b| b == m[0]), || {
                    "interleaved message".into()
                })?;
                counts[m[0] as usize] += 1;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if counts.iter().sum::<usize>() == 800 {
                    break;
                }
                // A writer may not have opened yet: wait for the next one.
                rx = fifo.open_receiver(Some(T))?;
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
    for mut c in children {
        ensure(c.wait()?.success(), || "writer failed".into())?;
    }
    ensure(counts == [200; 4], || format!("{counts:?}"))
}

fn peer_writer(spec: &str) -> io::Result<()> {
    let (w, path) = spec.split_once(':').expect("w:path");
    let w: u8 = w.parse().expect("writer number");
    let mut tx = ipckit::fifo::open_sender(path, Some(T))?;
    for _ in 0..200 {
        tx.send(vec![w; 4000])?;
    }
    Ok(())
}

/// A stale socket file is replaced; a live one is not stolen; a regular
/// file is never touched; the bound path is removed on drop.
fn unix_bind_rules() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s");
    let addr = UnixAddr::path(&path);
    // A socket file left by a "dead server" (std does not remove it).
    drop(std::os::unix::net::UnixListener::bind(&path)?);
    ensure(path.exists(), || "no stale file".into())?;
    ensure(unix::is_stale(&path)?, || {
        "a dead server's file is stale".into()
    })?;
    let live = UnixListener::bind(&addr)?;
    let e = UnixListener::bind(&addr).unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::AddrInUse && e.to_string().contains("running"),
        || e.to_string(),
    )?;
    // Live, whatever the type: not stale, not removed.
    ensure(!unix::is_stale(&path)?, || {
        "a live file called stale".into()
    })?;
    let e = unix::remove_stale(&path).unwrap_err();
    ensure(e.kind() == io::ErrorKind::AddrInUse, || e.to_string())?;
    let dgram_path = dir.path().join("d");
    let dgram = UnixDatagram::bind(&UnixAddr::path(&dgram_path))?;
    ensure(!unix::is_stale(&dgram_path)?, || {
        "a live datagram socket called stale".into()
    })?;
    drop(dgram);
    drop(live);
    // A stale one goes.
    let stale = dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    unix::remove_stale(&stale)?;
    ensure(!stale.exists(), || "the stale file is still there".into())?;
    ensure(!path.exists(), || "socket file left behind".into())?;
    std::fs::write(&path, b"precious")?;
    let e = UnixListener::bind(&addr).unwrap_err();
    ensure(e.to_string().contains("not a socket"), || e.to_string())?;
    for e in [
        unix::is_stale(&path).unwrap_err(),
        unix::remove_stale(&path).unwrap_err(),
    ] {
        ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())?;
    }
    ensure(std::fs::read(&path)? == b"precious", || {
        "regular file damaged".into()
    })?;
    let e = UnixStream::connect(&UnixAddr::path(dir.path().join("nobody"))).unwrap_err();
    ensure(e.to_string().contains("is the server running"), || {
        e.to_string()
    })?;
    let long = UnixAddr::path(dir.path().join("x".repeat(120)));
    let e = UnixListener::bind(&long).unwrap_err();
    ensure(e.to_string().contains("sun_path"), || e.to_string())?;
    let e = TcpListener::bind(TcpListener::bind("127.0.0.1:0")?.local_addr()?).unwrap_err();
    ensure(e.kind() == io::ErrorKind::AddrInUse, || e.to_string())
}

/// Seqpacket refuses an empty message instead of faking end-of-connection.
fn seqpacket_refuses_empty() -> Result<(), Failed> {
    let (mut a, _b) = SeqpacketStream::pair()?;
    match a.send(b"") {
        Err(SendError::Io(e, _)) => {
            ensure(e.to_string().contains("empty message"), || e.to_string())
        }
        other => Err(format!("{other:?}").into()),
    }
}

/// Line framing interoperates with plain text tools.
fn lines_with_sh() -> Result<(), Failed> {
    let mut c = pipe::popen("printf 'one\\ntwo\\nthree'", pipe::Direction::Read)?;
    let mut rx = pipe::Receiver::new(c.stdout.take().unwrap())?;
    rx.set_framing(ipckit::frame::Framing::Lines);
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| rx.recv_timeout(T))
        .collect::<Result<_, _>>()?;
    ensure(
        got == [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()],
        || format!("{got:?}"),
    )?;
    ensure(
        matches!(rx.recv_timeout(T), Err(RecvTimeoutError::Disconnected)),
        || "no EOF".into(),
    )?;
    c.wait()?;
    Ok(())
}

/// Another process's priorities: highest first, FIFO within one priority.
fn mq_priorities() -> Result<(), Failed> {
    let name = format!("/{}", unique("prio"));
    let mut q = PosixQueue::builder(&name).capacity(10, 64).create()?;
    let mut child = Command::new(std::env::current_exe()?)
        .env("IPCKIT_PEER_MQ", format!("send:{name}"))
        .spawn()?;
    ensure(child.wait()?.success(), || "sender failed".into())?;
    let a = q.attributes()?;
    ensure(
        a.current_messages == 6 && a.max_messages == 10 && a.max_message_size == 64,
        || format!("{a:?}"),
    )?;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..6 {
        let p = q.recv_priority_until(&mut buf, ipckit::Deadline::after(T))?;
        got.push(format!("{p}:{}", String::from_utf8_lossy(&buf)));
    }
    let want = ["7:b", "7:e", "3:a", "3:d", "0:c", "0:f"];
    ensure(got == want, || format!("{got:?}"))?;
    ensure(matches!(q.try_recv(), Err(TryRecvError::Empty)), || {
        "not empty".into()
    })?;
    let e = q.send_priority(b"x", ipckit::mq::PRIO_MAX).unwrap_err();
    ensure(e.to_string().contains("0 to 32767"), || e.to_string())
}

fn peer_mq(spec: &str) -> io::Result<()> {
    let (what, name) = spec.split_once(':').expect("what:name");
    match what {
        "send" => {
            let mut q = PosixQueue::builder(name)
                .access(ipckit::mq::Access::Send)
                .open()?;
            for (m, p) in [("a", 3), ("b", 7), ("c", 0), ("d", 3), ("e", 7), ("f", 0)] {
                q.send_priority(m, p)?;
            }
            Ok(())
        }
        // Expected to be refused: report the error on stdout.
        "open-for-send" => match PosixQueue::builder(name)
            .access(ipckit::mq::Access::Send)
            .open()
        {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                println!("{e}");
                Ok(())
            }
            other => Err(io::Error::other(format!(
                "expected permission denied, got {other:?}"
            ))),
        },
        // Register for SIGUSR1 on the empty queue, say so, and report the
        // signal when it comes.
        "notify" => {
            let got = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            signal_hook::flag::register(SIGUSR1, got.clone())?;
            let q = PosixQueue::builder(name)
                .access(ipckit::mq::Access::Receive)
                .open()?;
            q.notify_signal(SIGUSR1)?;
            println!("registered");
            let end = Instant::now() + T;
            while !got.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() > end {
                    return Err(io::Error::other("no signal"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("notified, {} waiting", q.attributes()?.current_messages);
            Ok(())
        }
        _ => Err(io::Error::other("unknown mq role")),
    }
}

/// Bad names and capacities are refused with errors that say why.
fn mq_names_and_limits() -> Result<(), Failed> {
    for (bad, why) in [
        ("jobs", "must start with a slash"),
        ("/", "empty after the slash"),
        ("/a/b", "second slash"),
        (&format!("/{}", "x".repeat(300)), "too long"),
    ] {
        let e = PosixQueue::builder(bad).create().unwrap_err();
        ensure(
            e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains(why),
            || e.to_string(),
        )?;
    }
    let name = format!("/{}", unique("limit"));
    // Above even a privileged process's hard limit (65536 messages).
    let e = PosixQueue::builder(&name)
        .capacity(1_000_000, 16)
        .create()
        .unwrap_err();
    let max = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")?;
    ensure(
        e.to_string()
            .contains(&format!("msg_max is {}", max.trim())),
        || e.to_string(),
    )?;
    ensure(e.to_string().contains("/proc/sys/fs/mqueue"), || {
        e.to_string()
    })?;
    let e = PosixQueue::builder(&name).open().unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("no POSIX queue"),
        || e.to_string(),
    )?;
    let e = ipckit::mq::unlink(&name).unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())?;
    // create_or_open: only the creator unlinks.
    let first = PosixQueue::builder(&name)
        .capacity(2, 16)
        .create_or_open()?;
    let second = PosixQueue::builder(&name).create_or_open()?;
    drop(second);
    ensure(PosixQueue::builder(&name).open().is_ok(), || {
        "the opener unlinked".into()
    })?;
    let e = PosixQueue::builder(&name).create().unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    drop(first);
    ensure(PosixQueue::builder(&name).open().is_err(), || {
        "the creator left the queue".into()
    })
}

/// A queue of mode 0400 cannot be opened for sending by another user.
fn mq_permission_denied() -> Result<(), Failed> {
    let name = format!("/{}", unique("perm"));
    let _q = PosixQueue::builder(&name)
        .mode(0o400)
        .capacity(2, 16)
        .create()?;
    let dir = tempfile::tempdir()?;
    expect_denied(other_user_cmd(&dir)?.env("IPCKIT_PEER_MQ", format!("open-for-send:{name}")))
}

/// mq_notify: another process gets its signal when a message arrives on
/// the empty queue; a second registration is refused while it holds one.
fn mq_notification() -> Result<(), Failed> {
    let name = format!("/{}", unique("notify"));
    let mut q = PosixQueue::builder(&name).capacity(4, 64).create()?;
    let child = Command::new(std::env::current_exe()?)
        .env("IPCKIT_PEER_MQ", format!("notify:{name}"))
        .stdout(Stdio::piped())
        .spawn()?;
    let mut peer = Peer { child, _dir: None };
    let mut out = io::BufReader::new(peer.child.stdout.take().expect("piped"));
    let mut line = String::new();
    io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line == "registered\n", || format!("peer said {line:?}"))?;
    let e = q.notify_signal(SIGUSR1).unwrap_err();
    ensure(e.to_string().contains("already registered"), || {
        e.to_string()
    })?;
    q.send(b"wake up")?;
    ensure(peer.wait()?, || "the peer got no signal".into())?;
    line.clear();
    io::BufRead::read_line(&mut out, &mut line)?;
    ensure(line == "notified, 1 waiting\n", || {
        format!("peer said {line:?}")
    })?;
    // The peer's registration ended with it: ours is accepted now.
    q.notify_signal(SIGUSR1)?;
    q.cancel_notify()?;
    let e = q.notify_signal(1000).unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())
}

/// A non-blocking descriptor (for event loops): O_NONBLOCK is set, yet
/// ipckit's own timed and blocking receives still wait.
fn mq_nonblocking_descriptor() -> Result<(), Failed> {
    let name = format!("/{}", unique("nb"));
    let mut q = PosixQueue::builder(&name)
        .capacity(10, 64)
        .nonblocking(true)
        .create()?;
    ensure(q.attributes()?.nonblocking, || "not O_NONBLOCK".into())?;
    let fdinfo = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&q.as_fd())
    ))?;
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .ok_or("no flags in fdinfo")?;
    ensure(flags & 0o4000 != 0, || format!("flags {flags:o}"))?;
    ensure(matches!(q.try_recv(), Err(TryRecvError::Empty)), || {
        "try_recv on empty".into()
    })?;
    let t0 = Instant::now();
    match q.recv_timeout(Duration::from_millis(100)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => return Err(format!("recv_timeout: {other:?}").into()),
    }
    ensure(t0.elapsed() >= Duration::from_millis(100), || {
        "did not wait".into()
    })?;
    let mut child = Command::new(std::env::current_exe()?)
        .env("IPCKIT_PEER_MQ", format!("send:{name}"))
        .spawn()?;
    let mut buf = Vec::new();
    q.recv_priority_until(&mut buf, ipckit::Deadline::after(T))?;
    ensure(child.wait()?.success(), || "sender failed".into())?;
    while q.try_recv().is_ok() {}
    // A spinning strategy puts a blocking descriptor in O_NONBLOCK while it
    // is in force, and only then; one the builder made non-blocking stays so.
    let mut b = PosixQueue::builder(format!("/{}", unique("nb2")))
        .capacity(10, 64)
        .create()?;
    for (strategy, nonblocking_b, nonblocking_q) in [
        (ipckit::WaitStrategy::Spin, true, true),
        (ipckit::WaitStrategy::Block, false, true),
        (ipckit::WaitStrategy::ADAPTIVE, true, true),
        (ipckit::WaitStrategy::Block, false, true),
    ] {
        for (queue, want) in [(&mut b, nonblocking_b), (&mut q, nonblocking_q)] {
            queue.set_wait_strategy(strategy);
            queue.send(b"x")?;
            ensure(queue.recv_timeout(T)? == b"x", || {
                format!("{strategy}: echo")
            })?;
            let t0 = Instant::now();
            match queue.recv_timeout(Duration::from_millis(30)) {
                Err(RecvTimeoutError::Timeout) => {}
                other => return Err(format!("{strategy}: {other:?}").into()),
            }
            ensure(t0.elapsed() >= Duration::from_millis(30), || {
                format!("{strategy}: early timeout")
            })?;
            let now = queue.attributes()?.nonblocking;
            ensure(now == want, || {
                format!("{strategy}: O_NONBLOCK is {now}, expected {want}")
            })?;
        }
    }
    Ok(())
}

// ---- System V message queues ---------------------------------------------

fn sysv_peer(spec: String) -> io::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.env("IPCKIT_PEER_SYSV", spec).stdin(Stdio::null());
    Ok(c)
}

fn run_peer(cmd: &mut Command) -> Result<String, Failed> {
    let out = cmd.output()?;
    ensure(out.status.success(), || {
        format!("peer: {}", String::from_utf8_lossy(&out.stderr))
    })?;
    Ok(String::from_utf8(out.stdout)?)
}

fn peer_sysv(spec: &str) -> io::Result<()> {
    let (what, key) = spec.split_once(':').expect("what:key");
    let key: Key = key.parse()?;
    match what {
        // Typed messages for the selection test (the key comes as PATH:PROJ).
        "send" => {
            let mut q = MessageQueue::builder(key)
                .access(sysv::Access::Send)
                .open()?;
            for (m, t) in [
                ("a3", 3),
                ("b1", 1),
                ("c7", 7),
                ("d3", 3),
                ("e2", 2),
                ("f9", 9),
            ] {
                q.send_type(m, t)?;
            }
            Ok(())
        }
        // Say "ready" (type 99), then wait for a type-1 message that never
        // comes; print how the wait ended.
        "wait" => {
            let mut q = MessageQueue::builder(key).open()?;
            q.send_type(b"ready", 99)?;
            let t0 = Instant::now();
            let r = q.recv_select_until(
                &mut Vec::new(),
                Selector::Type(1),
                ipckit::Deadline::after(T),
            );
            let ms = t0.elapsed().as_millis();
            println!("{:?} after {ms} ms", r.map_err(|e| e.to_string()));
            Ok(())
        }
        // Send "late" (type 1) after 300 ms.
        "late" => {
            let mut q = MessageQueue::builder(key).open()?;
            std::thread::sleep(Duration::from_millis(300));
            q.send_type(b"late", 1)?;
            Ok(())
        }
        "open-for-send" => match MessageQueue::builder(key).access(sysv::Access::Send).open() {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                println!("{e}");
                Ok(())
            }
            other => Err(io::Error::other(format!(
                "expected permission denied, got {other:?}"
            ))),
        },
        _ => Err(io::Error::other("unknown sysv role")),
    }
}

/// Every msgtyp mode picks the right message sent by another process.
fn sysv_selection_modes() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("keyfile");
    std::fs::write(&file, b"")?;
    let spec = format!("{}:Q", file.display());
    let key: Key = spec.parse()?;
    ensure(key == Key::ftok(&file, b'Q')?, || "ftok differs".into())?;
    let mut q = MessageQueue::builder(key).create()?;
    run_peer(&mut sysv_peer(format!("send:{spec}"))?)?;
    let st = q.status()?;
    ensure(st.messages == 6 && st.bytes == 12, || format!("{st:?}"))?;
    let mut buf = Vec::new();
    let mut take = |sel: Selector| match q.recv_select_until(&mut buf, sel, ipckit::Deadline::Now) {
        Ok(t) => format!("{t}:{}", String::from_utf8_lossy(&buf)),
        Err(e) => format!("{e:?}"),
    };
    // Queue: a3 b1 c7 d3 e2 f9.
    let got = [
        take(Selector::Type(3)),
        take(Selector::NotType(1)),
        take(Selector::UpTo(5)), // lowest type first
        take(Selector::UpTo(5)),
        take(Selector::Any),
        take(Selector::UpTo(8)), // only type 9 is left
        take(Selector::from_msgtyp(-9, false)?),
        take(Selector::Any),
    ];
    let want = [
        "3:a3", "7:c7", "1:b1", "2:e2", "3:d3", "Timeout", "9:f9", "Timeout",
    ];
    ensure(got == want, || format!("{got:?}"))?;
    let st = q.status()?;
    ensure(
        st.messages == 0 && st.last_receiver == Some(std::process::id()),
        || format!("{st:?}"),
    )
}

/// Raw msgsnd/msgrcv from another program (perl's built-ins): the type is
/// the leading long, the payload unchanged, both ways.
fn sysv_interop_raw() -> Result<(), Failed> {
    let key = unique_key();
    let mut q = MessageQueue::builder(key).create()?;
    q.send_type(b"from rust\0\xff", 7)?;
    let script = r#"
        my $id = msgget($ARGV[0], 0) // die "msgget: $!";
        defined msgrcv($id, my $buf, 100, 7, 0) or die "msgrcv: $!";
        my ($t, $text) = unpack("l! a*", $buf);
        print "$t:", unpack("H*", $text), "
";
        msgsnd($id, pack("l! a*", 42, "from perl\x00\x01"), 0) or die "msgsnd: $!";
    "#;
    let out = Command::new("perl")
        .args(["-e", script, &key.value().to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("perl (the interop peer) could not run: {e}"))?;
    ensure(out.status.success(), || {
        String::from_utf8_lossy(&out.stderr).into_owned()
    })?;
    let text = String::from_utf8(out.stdout)?;
    ensure(text.trim() == "7:66726f6d207275737400ff", || text.clone())?;
    let mut buf = Vec::new();
    let t = q.recv_select_until(&mut buf, Selector::Any, ipckit::Deadline::after(T))?;
    ensure(t == 42 && buf == b"from perl\0\x01", || {
        format!("{t} {buf:?}")
    })
}

/// Timeouts sleep (no spinning) and end on time; a message from another
/// process ends a timed wait early; non-blocking calls on an empty or full
/// queue say so and hand the message back.
fn sysv_timeouts_and_nonblocking() -> Result<(), Failed> {
    let key = unique_key();
    let mut q = MessageQueue::builder(key).max_bytes(64).create()?;
    let mut buf = Vec::new();
    match q.try_recv_into(&mut buf) {
        Err(TryRecvError::Empty) => {}
        other => return Err(format!("try_recv on empty: {other:?}").into()),
    }
    let cpu0 = thread_cpu_ticks()?;
    let t0 = Instant::now();
    match q.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => return Err(format!("recv_timeout: {other:?}").into()),
    }
    let took = t0.elapsed();
    let cpu = thread_cpu_ticks()? - cpu0;
    ensure(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        || format!("timed out after {took:?}"),
    )?;
    // Ticks are 10 ms: a spinning wait would use about 50 of them.
    ensure(cpu <= 5, || format!("the wait used {cpu} CPU ticks"))?;
    // A message sent by another process 300 ms in ends a 10 s wait early.
    let mut late = sysv_peer(format!("late:{}", key.value()))?.spawn()?;
    let t0 = Instant::now();
    let t = q.recv_select_until(&mut buf, Selector::Type(1), ipckit::Deadline::after(T))?;
    let took = t0.elapsed();
    ensure(
        t == 1 && buf == b"late" && took < Duration::from_secs(5),
        || format!("{t} {buf:?} after {took:?}"),
    )?;
    ensure(late.wait()?.success(), || "late sender failed".into())?;
    // Full: 64 bytes of limit.
    q.try_send([1u8; 40])?;
    let msg = vec![2u8; 40];
    match q.try_send(msg.clone()) {
        Err(TrySendError::Full(back)) => ensure(back == msg, || "other message back".into())?,
        other => return Err(format!("try_send on full: {other:?}").into()),
    }
    let t0 = Instant::now();
    match q.send_timeout(msg.clone(), Duration::from_millis(200)) {
        Err(ipckit::SendTimeoutError::Timeout(back)) => {
            ensure(back == msg, || "other message back".into())?
        }
        other => return Err(format!("send_timeout on full: {other:?}").into()),
    }
    ensure(t0.elapsed() >= Duration::from_millis(200), || {
        "early send timeout".into()
    })?;
    // Larger than the queue's byte limit: refused at once, never waits.
    let e = q.send(vec![0u8; 100]).unwrap_err();
    ensure(e.to_string().contains("can never fit"), || e.to_string())?;
    ensure(q.status()?.messages == 1, || "queue changed".into())
}

/// User plus system CPU time of this thread, in clock ticks.
fn thread_cpu_ticks() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(n(11) + n(12)) // utime, stime: fields 14 and 15 of stat(5)
}

/// Removing the queue wakes a receiver blocked in another process, with
/// an error that says so.
fn sysv_removed_under_receiver() -> Result<(), Failed> {
    let key = unique_key();
    let mut q = MessageQueue::builder(key).create()?;
    let child = sysv_peer(format!("wait:{}", key.value()))?
        .stdout(Stdio::piped())
        .spawn()?;
    let mut peer = Peer { child, _dir: None };
    q.recv_select_until(
        &mut Vec::new(),
        Selector::Type(99),
        ipckit::Deadline::after(T),
    )?;
    std::thread::sleep(Duration::from_millis(100)); // let it block in msgrcv
    q.remove()?;
    ensure(peer.wait()?, || "waiter failed".into())?;
    let mut out = String::new();
    peer.child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    ensure(out.contains("was removed"), || out.clone())?;
    let ms: u64 = out
        .rsplit("after ")
        .next()
        .and_then(|d| d.trim().strip_suffix(" ms"))
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("unexpected output: {out}"))?;
    ensure(ms < 5000, || format!("woke late: {out}"))?;
    ensure(MessageQueue::builder(key).open().is_err(), || {
        "queue still there".into()
    })
}

/// Status fields, IPC_SET of mode and byte limit, MSG_NOERROR truncation,
/// and the limits named in errors.
fn sysv_status_set_and_limits() -> Result<(), Failed> {
    let limits = sysv::limits()?;
    let key = unique_key();
    let mut q = MessageQueue::builder(key).create()?;
    let st = q.status()?;
    ensure(
        st.perm.key == key
            && st.perm.mode == 0o600
            && st.perm.owner.uid == my_uid()
            && st.perm.creator.uid == my_uid()
            && st.max_bytes == limits.max_queue_bytes as u64
            && st.last_sender.is_none()
            && st.last_send.is_none()
            && st.last_change.is_some(),
        || format!("{st:?}"),
    )?;
    q.set_mode(0o640)?;
    q.set_max_bytes(1000)?;
    let st = q.status()?;
    ensure(st.perm.mode == 0o640 && st.max_bytes == 1000, || {
        format!("{st:?}")
    })?;
    // Above msgmnb needs CAP_SYS_RESOURCE: either it works or the error
    // names the limit.
    let big = limits.max_queue_bytes as u64 * 2;
    match q.set_max_bytes(big) {
        Ok(()) => ensure(q.status()?.max_bytes == big, || "limit not applied".into())?,
        Err(e) => ensure(e.to_string().contains("msgmnb"), || e.to_string())?,
    }
    q.set_max_bytes(1000)?;
    // Truncation only when asked.
    q.send_type(b"0123456789", 1)?;
    q.set_max_message_size(4);
    match q.try_recv() {
        Err(TryRecvError::Io(e)) => ensure(
            MessageTooLarge::find(&e).is_some_and(|b| b.len == 10 && b.max == 4),
            || e.to_string(),
        )?,
        other => return Err(format!("oversized: {other:?}").into()),
    }
    q.send_type(b"0123456789", 1)?;
    q.set_truncate(true);
    ensure(q.try_recv()? == b"0123", || "not truncated".into())?;
    // Errors that say what to do.
    let e = q.send_type(b"x", 0).unwrap_err();
    ensure(e.to_string().contains("types run from 1"), || e.to_string())?;
    let e = Selector::from_msgtyp(-3, true).unwrap_err();
    ensure(e.to_string().contains("MSG_EXCEPT"), || e.to_string())?;
    let e = q.send(vec![0u8; limits.max_message_size + 1]).unwrap_err();
    ensure(
        e.to_string()
            .contains(&format!("msgmax is {}", limits.max_message_size)),
        || e.to_string(),
    )?;
    let other = unique_key();
    let e = MessageQueue::builder(other).open().unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("no System V queue"),
        || e.to_string(),
    )?;
    let e = sysv::remove_queue(other).unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())?;
    let e = MessageQueue::builder(key)
        .mode(0o1600)
        .create()
        .unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())?;
    // create / create_or_open / open: only the creator removes.
    let e = MessageQueue::builder(key).create().unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    drop(MessageQueue::builder(key).create_or_open()?);
    drop(MessageQueue::builder(key).open()?);
    ensure(MessageQueue::builder(key).open().is_ok(), || {
        "an opener removed it".into()
    })?;
    drop(q);
    ensure(MessageQueue::builder(key).open().is_err(), || {
        "the creator left it".into()
    })?;
    let kept = MessageQueue::builder(key).keep(true).create_or_open()?;
    let id = kept.id();
    drop(kept);
    let again = MessageQueue::open_id(id)?;
    ensure(again.key() == key, || "open_id: other key".into())?;
    sysv::remove_queue(key)?;
    ensure(MessageQueue::open_id(id).is_err(), || "not removed".into())
}

/// A queue of mode 0400 cannot be opened for sending by another user.
fn sysv_permission_denied() -> Result<(), Failed> {
    let key = unique_key();
    let _q = MessageQueue::builder(key).mode(0o400).create()?;
    let dir = tempfile::tempdir()?;
    expect_denied(
        other_user_cmd(&dir)?.env("IPCKIT_PEER_SYSV", format!("open-for-send:{}", key.value())),
    )
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[
            ("IPCKIT_PEER", peer_main),
            ("IPCKIT_PEER_FD", peer_fd),
            ("IPCKIT_PEER_EPIPE", |_| peer_epipe()),
            ("IPCKIT_PEER_STDIO", peer_stdio),
            ("IPCKIT_PEER_WRITER", peer_writer),
            ("IPCKIT_PEER_MQ", peer_mq),
            ("IPCKIT_PEER_SYSV", peer_sysv),
        ],
        "conformance",
        Duration::from_secs(300),
    );
    let args = Arguments::from_args();
    type Case = fn(Mech) -> Result<(), Failed>;
    type Applies = fn(Mech) -> bool;
    let shared: [(&str, Case, Applies); 8] = [
        ("roundtrip", roundtrip, |_| true),
        ("order_and_end", order_and_end, |_| true),
        ("empty_and_timeout", empty_and_timeout, |_| true),
        ("wait_strategies", wait_strategies, |_| true),
        // A queue outlives its users: there is no peer to be gone.
        ("send_to_gone_peer", send_to_gone_peer, |m| {
            !matches!(m, Mech::PosixMq | Mech::SysvMq)
        }),
        ("oversize_refused", oversize_refused, |_| true),
        ("peer_dies_mid_frame", peer_dies_mid_frame, Mech::stream),
        ("full_hands_message_back", full_hands_message_back, |m| {
            m != Mech::Udp
        }),
    ];
    let mut trials = Vec::new();
    #[cfg(feature = "tokio")]
    for m in MECHS {
        trials.push(Trial::test(
            format!("{}::async_roundtrip_and_order", m.name()),
            move || async_roundtrip_and_order(m),
        ));
    }
    for m in MECHS {
        for (name, case, applies) in shared {
            if applies(m) {
                trials.push(Trial::test(format!("{}::{name}", m.name()), move || {
                    case(m)
                }));
            }
        }
    }
    type Specific = fn() -> Result<(), Failed>;
    let specific: [(&str, Specific); 22] = [
        ("unix::fd_passing_and_credentials", fd_passing),
        ("unix::fd_passing_mixed_stream", fd_passing_mixed_stream),
        ("pipe::eof_and_epipe", pipe_eof_and_epipe),
        ("pipe::popen_both_ways", popen_both_ways),
        ("pipe::from_stdio", pipe_from_stdio),
        ("pipe::capacity", pipe_capacity),
        ("pipe::lines_with_sh", lines_with_sh),
        ("fifo::open_rules", fifo_open_rules),
        ("fifo::many_writers_pipe_buf", fifo_many_writers),
        ("unix::bind_rules", unix_bind_rules),
        ("unix_seq::refuses_empty", seqpacket_refuses_empty),
        ("posix_mq::priorities_across_processes", mq_priorities),
        ("posix_mq::names_and_limits", mq_names_and_limits),
        ("posix_mq::permission_denied", mq_permission_denied),
        ("posix_mq::notification_across_processes", mq_notification),
        (
            "posix_mq::nonblocking_descriptor",
            mq_nonblocking_descriptor,
        ),
        (
            "sysv_mq::selection_modes_across_processes",
            sysv_selection_modes,
        ),
        ("sysv_mq::interop_with_raw_syscalls", sysv_interop_raw),
        (
            "sysv_mq::timeouts_and_nonblocking",
            sysv_timeouts_and_nonblocking,
        ),
        (
            "sysv_mq::removed_under_waiting_receiver",
            sysv_removed_under_receiver,
        ),
        ("sysv_mq::status_set_and_limits", sysv_status_set_and_limits),
        ("sysv_mq::permission_denied", sysv_permission_denied),
    ];
    for (name, f) in specific {
        trials.push(Trial::test(name, f));
    }
    common::run_trials(&args, trials);
}
