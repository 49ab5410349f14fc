//! `ipc bench [MECHANISM...] [--sizes …] [--wait …] [--duration-ms N]
//! [--cpus A,B] [--json PATH]`
//!
//! Every measurement runs between this process and a second, real process:
//! this binary re-executed with the hidden `__bench-peer` command, pinned to
//! another CPU when there is one.
//!
//! - Floor: one cache line bounced between the two CPUs through shared
//!   memory, every round trip timed on its own (as every other row). No
//!   IPC mechanism can beat it; every latency is also shown as a multiple
//!   of it.
//! - Latency: ping-pong of one message of SIZE bytes; after a warm-up, every
//!   round trip goes into an HDR histogram.
//! - Throughput: one-way stream of numbered messages; the receiver checks
//!   the sequence numbers and times first to last arrival.
//!
//! The shared-memory entries (`shm-spin`, `shm-futex`, `shm-sem`,
//! `sysv-sem`) carry the same messages through a bounded buffer in a memfd
//! handed to the peer: see [`shm`].

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ipckit::fifo::Fifo;
use ipckit::mq::{Duplex as MqDuplex, PosixQueue};
use ipckit::pipe;
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::shm::Memfd;
use ipckit::socket::inet::{TcpListener, UdpSocket};
use ipckit::socket::unix::{SeqpacketListener, UnixAddr, UnixDatagram, UnixListener};
use ipckit::sysv::{MessageQueue, Selector};
use ipckit::{MessageReceiver, MessageSender, RecvTimeoutError, WaitStrategy};
use serde::Serialize;

mod cleanup;
mod html;
mod mechs;
mod peer;
mod raw;
mod report;
mod rpc;
mod selected;
mod shm;
mod signal;
mod zerocopy;
use mechs::ring_capacity;
pub use mechs::Mech;
pub use peer::{peer, PeerArgs, Role};
use shm::ShmChannel;

// The table's shared-memory rows say "8 slots each way".
const _: () = assert!(shm::SLOTS == 8);

/// How long setup steps (connect, accept, FIFO open) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Round trips (and one-way messages) a run measures at the least, however
/// long they take (up to [`MSG_TIMEOUT`] past the duration).
const MIN_SAMPLES: u64 = 3;
/// How long one message may take before a run is declared stuck.
const MSG_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Mechanisms to measure (default: all).
    #[arg(value_enum, value_name = "MECHANISM")]
    mechanisms: Vec<Mech>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,4096,65536", value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Wait strategies for receives: block, spin, adaptive.
    #[arg(long, value_delimiter = ',', default_value = "block")]
    wait: Vec<WaitStrategy>,
    /// Measuring time per latency and per throughput run, in milliseconds.
    #[arg(long, default_value_t = 400)]
    duration_ms: u64,
    /// The two CPUs to pin this process and its peer to (default: the
    /// first two this process may use).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    cpus: Option<Vec<usize>>,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Show every column, however wide the table gets (by default the
    /// least important ones are left out to fit the terminal).
    #[arg(long)]
    wide: bool,
    /// Also write the results as a self-contained HTML page to PATH: the
    /// notes' comparison table with these figures, latency-percentile and
    /// throughput charts (inline SVG; nothing is fetched when it is viewed).
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Also measure each kernel mechanism's round trip with bare system
    /// calls (std's read/write, send/recv; fixed size, no framing, no
    /// checks), round for round with ipckit's, and show the ratio: what the
    /// library costs. Not for the queues (see tools/pingpong.c).
    #[arg(long)]
    raw: bool,
    /// Compare with a saved run (the --json of an earlier ipc bench): the
    /// ratio of this run's round trips and messages per second to it.
    #[arg(long, value_name = "OLD.json")]
    baseline: Option<PathBuf>,
    /// For ring and ring-mpmc: send with loans and receive in place,
    /// writing and reading only each message's first 64 bytes, so that the
    /// size costs nothing but the transport (sizes up to 64 MiB make sense).
    #[arg(long)]
    zero_copy: bool,
    /// Also measure each message mechanism's round trip with both
    /// processes waiting for every message in an `ipckit::select::Selector`
    /// (epoll; the helper thread for System V queues, the notifying thread
    /// for rings), round for round with the direct receive, and show the
    /// ratio: what waiting on many endpoints costs.
    #[arg(long)]
    select: bool,
}

/// The largest message size `ipc bench` measures.
const MAX_SIZE: usize = 1 << 30;

fn parse_size(s: &str) -> Result<usize, String> {
    let n: u128 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes"))?;
    if n == 0 {
        return Err("sizes start at 1 byte".into());
    }
    if n > MAX_SIZE as u128 {
        return Err(format!(
            "{s} bytes is too large: ipc bench measures messages of up to 1 GiB ({MAX_SIZE} bytes)"
        ));
    }
    Ok(n as usize)
}

trait Endpoint: MessageSender + MessageReceiver {}
impl<T: MessageSender + MessageReceiver> Endpoint for T {}

/// The child process; killed if still running when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Peer {
    /// Starts `cmd` (from [`Ctx::peer_cmd`]) and registers it for the
    /// cleanup of an interrupted bench.
    fn spawn(cmd: &mut Command) -> Result<Peer> {
        let child = cmd.spawn().context("starting the peer process")?;
        cleanup::peer(child.id());
        Ok(Peer(child))
    }

    /// Waits for the peer to exit on its own, then checks its status; a
    /// failure carries the peer's own error message.
    fn finish(mut self) -> Result<()> {
        let end = Instant::now() + MSG_TIMEOUT;
        loop {
            if let Some(st) = self.0.try_wait()? {
                if !st.success() {
                    let mut why = String::new();
                    if let Some(mut e) = self.0.stderr.take() {
                        let _ = io::Read::read_to_string(&mut e, &mut why);
                    }
                    let why = why.trim().trim_start_matches("ipc: ");
                    if why.is_empty() {
                        bail!("the peer process failed ({st})");
                    }
                    bail!("the peer process failed ({st}): {why}");
                }
                return Ok(());
            }
            if Instant::now() > end {
                bail!("the peer process did not exit");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Ctx {
    cpus: Option<(usize, usize)>,
    /// Whether both processes run on one CPU (decided before pinning: a
    /// pinned process sees only its own CPU).
    shared_cpu: bool,
    tmp: tempfile::TempDir,
    counter: u64,
    /// Rings move messages with loans and in-place receives.
    zero_copy: bool,
    /// `--select`: each point is also measured through a selector.
    select: bool,
    /// Both processes wait for each message in a selector (the `--select`
    /// half of a point is being measured).
    via_select: bool,
}

impl Ctx {
    fn peer_cmd(&self, role: Role) -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe().context("locating the ipc binary")?);
        cmd.arg("__bench-peer")
            .arg(format!("{role:?}").to_lowercase());
        if let Some((_, b)) = self.cpus {
            cmd.arg("--cpu").arg(b.to_string());
        }
        if self.shared_cpu {
            cmd.arg("--shared-cpu");
        }
        cmd.arg("--parent").arg(std::process::id().to_string());
        // stderr is kept: a failed row says why the peer failed.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!(
            "ipckit-bench-{}-{}-{what}",
            std::process::id(),
            self.counter
        )
    }

    /// Starts a peer in `role` and connects to it.
    fn connect(
        &mut self,
        mech: Mech,
        role: Role,
        size: usize,
        wait: WaitStrategy,
    ) -> Result<(Box<dyn Endpoint>, Peer)> {
        let mut cmd = self.peer_cmd(role)?;
        cmd.arg("--mech")
            .arg(mech.name())
            .arg("--size")
            .arg(size.to_string())
            .arg("--wait")
            .arg(wait.to_string());
        if self.via_select {
            cmd.arg("--select");
        }
        let sel = self.via_select;
        let mut ep: Box<dyn Endpoint>;
        let peer;
        match mech {
            Mech::Pipe => {
                let (to_child_r, to_child_w) = pipe::pipe()?;
                let (from_child_r, from_child_w) = pipe::pipe()?;
                cmd.stdin(Stdio::from(to_child_r))
                    .stdout(Stdio::from(from_child_w));
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(pipe::Duplex::new(from_child_r, to_child_w)?, sel)?;
            }
            Mech::Fifo => {
                let name = self.unique("fifo");
                let dir = self.tmp.path().join(name);
                std::fs::create_dir(&dir)?;
                let a2b = Fifo::create(dir.join("a2b"))?;
                let b2a = Fifo::create(dir.join("b2a"))?;
                cmd.arg("--addr").arg(&dir);
                peer = Peer::spawn(&mut cmd)?;
                let tx = a2b.open_sender(Some(SETUP_TIMEOUT))?;
                let rx = b2a.open_receiver(Some(SETUP_TIMEOUT))?;
                ep = selected::boxed(pipe::Duplex { tx, rx }, sel)?;
            }
            Mech::Unix | Mech::UnixSeq => {
                let name = format!("@{}", self.unique("listen"));
                let addr: UnixAddr = name.parse()?;
                cmd.arg("--addr").arg(&name);
                if mech == Mech::Unix {
                    let l = UnixListener::bind(&addr)?;
                    peer = Peer::spawn(&mut cmd)?;
                    ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
                } else {
                    let l = SeqpacketListener::bind(&addr)?;
                    peer = Peer::spawn(&mut cmd)?;
                    ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
                }
            }
            Mech::UnixDgram => {
                let name = format!("@{}", self.unique("dgram"));
                let mut s = UnixDatagram::bind(&name.parse()?)?;
                cmd.arg("--addr").arg(&name);
                peer = Peer::spawn(&mut cmd)?;
                // The peer binds NAME-peer and says hello from there.
                let hello = s
                    .recv_timeout(SETUP_TIMEOUT)
                    .context("waiting for the peer")?;
                let back: UnixAddr = String::from_utf8(hello)?.parse()?;
                s.connect(&back)?;
                ep = selected::boxed(s, sel)?;
            }
            Mech::Tcp => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                cmd.arg("--addr").arg(l.local_addr()?.port().to_string());
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
            }
            Mech::Mq => {
                let base = format!("/{}", self.unique("mq"));
                let q = |dir: &str| {
                    PosixQueue::builder(format!("{base}-{dir}"))
                        .capacity(10, size)
                        .create()
                };
                let (tx, rx) = cleanup::making(|r| {
                    r.mqueue(&format!("{base}-a2b"));
                    r.mqueue(&format!("{base}-b2a"));
                    Ok((q("a2b")?, q("b2a")?))
                })?;
                cmd.arg("--addr").arg(&base);
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(MqDuplex { tx, rx }, sel)?;
            }
            Mech::SysvMq => {
                // One private queue: type 1 to the peer, type 2 back.
                let mut q = cleanup::making(|r| {
                    let q = MessageQueue::private().create()?;
                    r.sysv_queue(q.id());
                    Ok(q)
                })?;
                q.set_default_type(1)?;
                q.set_default_selector(Selector::Type(2))?;
                cmd.arg("--addr").arg(q.id().to_string());
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(q, sel)?;
            }
            Mech::ShmSpin | Mech::ShmFutex | Mech::ShmSem | Mech::SysvSem => {
                let turns = mech.turns().expect("a shared-memory mechanism");
                let ch = cleanup::making(|r| {
                    let ch = ShmChannel::create(turns, size, self.shared_cpu)?;
                    if let Some(id) = ch.set_id() {
                        r.sysv_set(id);
                    }
                    Ok(ch)
                })?;
                cmd.stdin(Stdio::from(ch.region().fd().try_clone_to_owned()?));
                if let Some(id) = ch.set_id() {
                    cmd.arg("--addr").arg(id.to_string());
                }
                peer = Peer::spawn(&mut cmd)?;
                ep = Box::new(ch);
            }
            Mech::Signal => bail!("the signal bench has its own protocol (bench/signal.rs)"),
            Mech::Ring | Mech::RingMpmc => {
                // Two anonymous rings, one each way: the peer gets them as
                // its standard input (ours to it) and output (its to us).
                let ring = || {
                    Ring::anonymous()
                        .capacity(ring_capacity(size))
                        .max_message_size(size)
                        .multi(mech == Mech::RingMpmc)
                        .create()
                };
                let (a2b, b2a) = (ring()?, ring()?);
                cmd.stdin(Stdio::from(a2b.fd().try_clone_to_owned()?))
                    .stdout(Stdio::from(b2a.fd().try_clone_to_owned()?));
                let (tx, rx) = (a2b.sender()?, b2a.receiver()?);
                if self.zero_copy {
                    cmd.arg("--zero-copy");
                }
                peer = Peer::spawn(&mut cmd)?;
                ep = if self.zero_copy {
                    Box::new(zerocopy::ZeroCopy(RingDuplex { tx, rx }))
                } else {
                    selected::boxed(RingDuplex { tx, rx }, sel)?
                };
            }
            Mech::Udp => {
                let mut s = UdpSocket::bind("127.0.0.1:0")?;
                cmd.arg("--addr").arg(s.local_addr()?.port().to_string());
                peer = Peer::spawn(&mut cmd)?;
                let hello = s
                    .recv_timeout(SETUP_TIMEOUT)
                    .context("waiting for the peer")?;
                s.connect(format!("127.0.0.1:{}", String::from_utf8(hello)?))?;
                ep = selected::boxed(s, sel)?;
            }
        }
        ep.set_wait_strategy(wait);
        ep.set_max_message_size(size.max(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE));
        Ok((ep, peer))
    }
}

/// A marker message that ends a run: any length other than the run's size.
fn end_marker(size: usize) -> Vec<u8> {
    vec![0xEE; if size == 1 { 2 } else { 1 }]
}

fn put_seq(msg: &mut [u8], seq: u64) {
    let n = msg.len().min(8);
    msg[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

fn get_seq(msg: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = msg.len().min(8);
    b[..n].copy_from_slice(&msg[..n]);
    u64::from_le_bytes(b)
}

/// The largest sequence number representable in a `size`-byte message.
fn seq_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}

/// Spins until `cond` holds, for at most [`MSG_TIMEOUT`].
fn spin_until(mut cond: impl FnMut() -> bool, single_cpu: bool) -> Result<()> {
    let start = Instant::now();
    let mut i = 0u32;
    while !cond() {
        i = i.wrapping_add(1);
        if single_cpu {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        if i.is_multiple_of(65536) && start.elapsed() > MSG_TIMEOUT {
            bail!("the other process stopped answering");
        }
    }
    Ok(())
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Serialize, Clone, Copy, Debug)]
struct Stats {
    min: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: u64,
}

impl Stats {
    fn of(h: &Histogram<u64>) -> Stats {
        Stats {
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean().round() as u64,
        }
    }
}

fn measure_floor(ctx: &Ctx, duration: Duration) -> Result<Stats> {
    let region = Memfd::create("ipc-bench-floor", 4096)?;
    let mut cmd = ctx.peer_cmd(Role::Floor)?;
    cmd.stdin(Stdio::from(region.fd().try_clone_to_owned()?));
    let peer = Peer::spawn(&mut cmd)?;
    let word: &AtomicU64 = region.atomic_u64(0)?;
    let mut h = new_hist();
    let mut v = 0u64;
    let start = Instant::now();
    let (warm, end) = (start + duration / 5, start + duration);
    loop {
        // One round trip per sample, like every other row: a preemption
        // spoils one sample, not a batch.
        let t0 = Instant::now();
        word.store(v + 1, Ordering::Release);
        spin_until(|| word.load(Ordering::Acquire) == v + 2, ctx.shared_cpu)?;
        let t1 = Instant::now();
        v += 2;
        if t0 >= warm {
            h.record((t1 - t0).as_nanos().max(1) as u64)?;
        }
        if t1 >= end {
            break;
        }
    }
    word.store(u64::MAX, Ordering::Release);
    peer.finish()?;
    Ok(Stats::of(&h))
}

fn latency(
    ep: &mut dyn Endpoint,
    size: usize,
    duration: Duration,
    lossy: bool,
) -> Result<(Histogram<u64>, u64)> {
    let mut msg = vec![0x5Au8; size];
    let mut buf = Vec::with_capacity(size);
    let mut h = new_hist();
    let mask = seq_mask(size);
    let start = Instant::now();
    let warmup = start + duration / 10;
    let end = warmup + duration;
    let mut seq = 0u64;
    let mut samples = 0;
    // Two clock reads per round trip, as in tools/pingpong.c: the end of
    // one round trip is also the time checked against the duration.
    let mut now = start;
    loop {
        // Large messages: go on past the duration until a few round trips
        // are in (bounded), rather than report none.
        if now >= end && (samples >= MIN_SAMPLES || now >= end + MSG_TIMEOUT) {
            break;
        }
        put_seq(&mut msg, seq);
        let t0 = Instant::now();
        ep.send_until(&msg, ipckit::Deadline::Never)
            .map_err(io::Error::from)?;
        loop {
            match ep.recv_timeout_into(
                &mut buf,
                if lossy {
                    Duration::from_millis(200)
                } else {
                    MSG_TIMEOUT
                },
            ) {
                Ok(()) if buf.len() == size && get_seq(&buf) == seq & mask => break,
                // A late echo of a round trip already given up on (UDP).
                Ok(()) if lossy => continue,
                Ok(()) => bail!("the echo did not match what was sent (sequence {seq})"),
                Err(RecvTimeoutError::Timeout) if lossy => break,
                Err(e) => return Err(e.into()),
            }
        }
        now = Instant::now();
        let rtt = (now - t0).as_nanos() as u64;
        if t0 >= warmup && buf.len() == size && get_seq(&buf) == seq & mask {
            h.record(rtt.max(1))?;
            samples += 1;
        }
        seq += 1;
    }
    ep.send_until(&end_marker(size), ipckit::Deadline::Never)
        .map_err(io::Error::from)?;
    if samples == 0 {
        bail!("no round trip completed");
    }
    Ok((h, samples))
}

#[derive(Serialize, Clone, Copy, Debug)]
struct Throughput {
    msgs_per_s: f64,
    bytes_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost: Option<u64>,
}

fn throughput(
    ep: &mut dyn Endpoint,
    size: usize,
    duration: Duration,
    lossy: bool,
) -> Result<Throughput> {
    let mut msg = vec![0xA5u8; size];
    let end = Instant::now() + duration;
    let mut seq = 0u64;
    // Check the clock every few messages (it is cheap, but not free): 64
    // small ones, or about a MiB's worth, or every large one.
    let batch = (1 << 20) / size.max(1);
    let batch = batch.clamp(1, 64);
    while Instant::now() < end || seq < MIN_SAMPLES {
        for _ in 0..batch {
            put_seq(&mut msg, seq);
            ep.send_until(&msg, ipckit::Deadline::Never)
                .map_err(io::Error::from)?;
            seq += 1;
        }
    }
    let marker = end_marker(size);
    let mut buf = Vec::new();
    let report = loop {
        ep.send_until(&marker, ipckit::Deadline::Never)
            .map_err(io::Error::from)?;
        let wait = if lossy {
            Duration::from_millis(200)
        } else {
            MSG_TIMEOUT
        };
        match ep.recv_timeout_into(&mut buf, wait) {
            Ok(()) => {
                // Tell the peer it was read, so it exits now (shared memory
                // and queues have no hang-up to wait for). Lossy: best effort.
                let _ = ep.send_until(b"read", ipckit::Deadline::after(MSG_TIMEOUT));
                break String::from_utf8(buf.clone())?;
            }
            Err(RecvTimeoutError::Timeout) if lossy => continue,
            Err(e) => return Err(e).context("waiting for the receiver's report"),
        }
    };
    let f: Vec<u64> = report
        .split_whitespace()
        .map(u64::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad report {report:?}"))?;
    let [count, lost, errors, elapsed_ns] = f[..] else {
        bail!("bad report {report:?}");
    };
    if errors > 0 || (!lossy && (lost > 0 || count != seq)) {
        bail!("the receiver saw {errors} out-of-order and {lost} missing messages of {seq}");
    }
    if elapsed_ns == 0 || count < 2 {
        bail!("too few messages arrived to time ({count})");
    }
    let msgs_per_s = (count - 1) as f64 * 1e9 / elapsed_ns as f64;
    Ok(Throughput {
        msgs_per_s,
        bytes_per_s: msgs_per_s * size as f64,
        lost: lossy.then_some(seq - count),
    })
}

#[derive(Serialize, Debug)]
struct Row {
    mechanism: &'static str,
    size: usize,
    wait: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ns: Option<Stats>,
    samples: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    throughput: Option<Throughput>,
    /// How much the figure moved between the measuring rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    spread: Option<Spread>,
    /// `--raw`: the same round trip with bare system calls, and ipckit's
    /// rtt p50 divided by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_rtt_ns: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_raw: Option<f64>,
    /// `--select`: the same round trip with both processes waiting in a
    /// selector, and its p50 divided by the direct one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    select_rtt_ns: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    select_vs_direct: Option<f64>,
    /// `--select`: how many times this process waited in its selector
    /// during those runs (about one per message it received).
    #[serde(skip_serializing_if = "Option::is_none")]
    select_waits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

/// Rounds each point is measured in: the spread between them says how
/// far to trust the figure.
const ROUNDS: u32 = 3;

/// Half the range of a figure across the rounds, in percent of its median
/// (10 means ±10 %).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
struct Spread {
    rounds: u32,
    rtt_p50_pct: f64,
    msgs_per_s_pct: f64,
}

fn spread_pct(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let range = values[values.len() - 1] - values[0];
    if median > 0.0 {
        (range / 2.0 / median * 100.0 * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Serialize, Debug)]
struct Machine {
    cpus_allowed: usize,
    cpu_model: String,
    kernel: String,
    pinned_cpus: Option<[usize; 2]>,
    ipckit_version: &'static str,
}

#[derive(Serialize, Debug)]
struct Report {
    machine: Machine,
    floor_rtt_ns: Stats,
    results: Vec<Row>,
    request_reply: Vec<rpc::RpcRow>,
}

fn machine(cpus: Option<(usize, usize)>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpus_allowed: ipckit::process::allowed_cpus().map_or(1, |c| c.len()),
        cpu_model,
        kernel,
        pinned_cpus: cpus.map(|(a, b)| [a, b]),
        ipckit_version: env!("CARGO_PKG_VERSION"),
    }
}

fn choose_cpus(asked: Option<Vec<usize>>) -> Result<Option<(usize, usize)>> {
    let allowed = ipckit::process::allowed_cpus()?;
    match asked {
        Some(v) => match v[..] {
            [a, b] if a != b => {
                for c in [a, b] {
                    if !allowed.contains(&c) {
                        bail!("--cpus: CPU {c} is not available to this process (allowed: {allowed:?})");
                    }
                }
                Ok(Some((a, b)))
            }
            _ => bail!("--cpus takes two different CPU numbers, like --cpus 0,1"),
        },
        None if allowed.len() >= 2 => Ok(Some((allowed[0], allowed[1]))),
        None => Ok(None),
    }
}

/// One round of a point: the round trips' histogram, their number, and
/// the one-way throughput.
struct Round {
    hist: Histogram<u64>,
    samples: u64,
    tp: Throughput,
}

#[allow(clippy::too_many_arguments)]
fn run_point(
    ctx: &mut Ctx,
    mech: Mech,
    size: usize,
    wait: WaitStrategy,
    d: Duration,
    signals: Option<&ipckit::signal::SignalReceiver>,
    with_raw: bool,
) -> Result<Row> {
    let mut rounds = Vec::new();
    let with_raw = with_raw && raw::supported(mech);
    let with_select = ctx.select && selected::supported(mech, ctx.zero_copy);
    let (mut raw_hist, mut select_hist) = (new_hist(), new_hist());
    let waits_before = selected::waits();
    for _ in 0..ROUNDS {
        rounds.push(measure_round(ctx, mech, size, wait, d / ROUNDS, signals)?);
        // Round for round, so that both see the same machine.
        if with_raw {
            let h = raw::measure(ctx, mech, size, wait, d / ROUNDS).context("--raw")?;
            raw_hist.add(&h)?;
        }
        if with_select {
            ctx.via_select = true;
            let r = measure_round(ctx, mech, size, wait, d / ROUNDS, signals);
            ctx.via_select = false;
            select_hist.add(&r.context("--select")?.hist)?;
        }
    }
    let raw_rtt_ns = with_raw.then(|| Stats::of(&raw_hist));
    let select_rtt_ns = with_select.then(|| Stats::of(&select_hist));
    let select_waits = with_select.then(|| selected::waits() - waits_before);
    let mut hist = new_hist();
    for r in &rounds {
        hist.add(&r.hist)?;
    }
    let mut p50s: Vec<f64> = rounds
        .iter()
        .map(|r| r.hist.value_at_quantile(0.5) as f64)
        .collect();
    let mut rates: Vec<f64> = rounds.iter().map(|r| r.tp.msgs_per_s).collect();
    let size = if mech == Mech::Signal {
        signal::SIZE
    } else {
        size
    };
    let msgs_per_s = median(&mut rates.clone());
    let rtt_ns = Stats::of(&hist);
    Ok(Row {
        mechanism: mech.name(),
        size,
        wait: if ctx.zero_copy && mech.is_ring() {
            format!("{}, zero-copy", mech.wait_name(wait))
        } else {
            mech.wait_name(wait)
        },
        rtt_ns: Some(rtt_ns),
        samples: rounds.iter().map(|r| r.samples).sum(),
        throughput: Some(Throughput {
            msgs_per_s,
            bytes_per_s: msgs_per_s * size as f64,
            lost: rounds
                .iter()
                .map(|r| r.tp.lost)
                .try_fold(0, |a, l| l.map(|l| a + l)),
        }),
        spread: Some(Spread {
            rounds: ROUNDS,
            rtt_p50_pct: spread_pct(&mut p50s),
            msgs_per_s_pct: spread_pct(&mut rates),
        }),
        raw_rtt_ns,
        vs_raw: raw_rtt_ns.map(|r| rtt_ns.p50 as f64 / r.p50.max(1) as f64),
        select_rtt_ns,
        select_vs_direct: select_rtt_ns.map(|s| s.p50 as f64 / rtt_ns.p50.max(1) as f64),
        select_waits,
        skipped: None,
    })
}

fn measure_round(
    ctx: &mut Ctx,
    mech: Mech,
    size: usize,
    wait: WaitStrategy,
    d: Duration,
    signals: Option<&ipckit::signal::SignalReceiver>,
) -> Result<Round> {
    if let (Mech::Signal, Some(rx)) = (mech, signals) {
        let cmd = |role| -> Result<Command> {
            let mut c = ctx.peer_cmd(role)?;
            c.args(["--mech", "signal", "--wait", &wait.to_string()]);
            Ok(c)
        };
        let (hist, samples, tp) = signal::measure(cmd(Role::Echo)?, cmd(Role::Sink)?, rx, wait, d)?;
        return Ok(Round { hist, samples, tp });
    }
    let lossy = mech == Mech::Udp;
    let (mut ep, peer) = ctx.connect(mech, Role::Echo, size, wait)?;
    let (hist, samples) = latency(ep.as_mut(), size, d, lossy)?;
    // The peer exits on the end marker: wait for that before dropping this
    // end, which removes what it created (a System V set the peer may still
    // be posting to).
    peer.finish()?;
    drop(ep);
    let (mut ep, peer) = ctx.connect(mech, Role::Sink, size, wait)?;
    let tp = throughput(ep.as_mut(), size, d, lossy)?;
    peer.finish()?;
    drop(ep);
    Ok(Round { hist, samples, tp })
}

fn ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", v as f64 / 1e3),
        _ => format!("{:.1} ms", v as f64 / 1e6),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mechs = if args.mechanisms.is_empty() {
        Mech::ALL.to_vec()
    } else {
        args.mechanisms.clone()
    };
    if args.duration_ms == 0 {
        bail!("--duration-ms must be at least 1");
    }
    if args.zero_copy && !mechs.iter().any(|m| m.is_ring()) {
        bail!("--zero-copy applies to ring and ring-mpmc only: add one of them");
    }
    let d = Duration::from_millis(args.duration_ms);
    let baseline: Option<serde_json::Value> = match &args.baseline {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--baseline: reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| {
                format!(
                    "--baseline: {} is not the JSON of ipc bench --json",
                    p.display()
                )
            })?)
        }
        None => None,
    };
    // Blocked before any thread or peer starts (they inherit the mask), so
    // the signal can only be read, never delivered with its default action.
    let signals = if mechs.contains(&Mech::Signal) {
        Some(signal::receiver()?)
    } else {
        None
    };
    cleanup::install()?;
    let cpus = choose_cpus(args.cpus.clone())?;
    let m = machine(cpus); // before pinning narrows the allowed set
    let noise_before = report::Noise::sample(m.cpus_allowed);
    if let Some((a, _)) = cpus {
        ipckit::process::pin_to_cpu(a)?;
    }
    let mut ctx = Ctx {
        cpus,
        shared_cpu: cpus.is_none(),
        tmp: tempfile::Builder::new().prefix("ipc-bench-").tempdir()?,
        counter: 0,
        zero_copy: args.zero_copy,
        select: args.select,
        via_select: false,
    };
    cleanup::tmp(ctx.tmp.path().to_owned());
    let mut points: Vec<(Mech, usize, WaitStrategy)> = Vec::new();
    for &m in &mechs {
        // A signal carries one 32-bit value: measured at that size only.
        let sizes = if m == Mech::Signal {
            vec![signal::SIZE]
        } else {
            args.sizes.clone()
        };
        for &s in &sizes {
            for &w in &args.wait {
                points.push((m, s, w));
            }
        }
    }
    // Request/reply over the registry's mechanisms (those asked for).
    let rpc_mechs: Vec<&'static ipckit::registry::Mechanism> = ipckit::registry::MECHANISMS
        .iter()
        .filter(|m| args.mechanisms.is_empty() || mechs.iter().any(|x| x.name() == m.scheme))
        .collect();
    let bar = ProgressBar::new(points.len() as u64 + rpc_mechs.len() as u64 + 1);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid progress template"),
    );
    bar.set_message("floor: cache line between the two CPUs");
    let floor =
        measure_floor(&ctx, d.min(Duration::from_millis(300))).context("measuring the floor")?;
    cleanup::point_done();
    bar.inc(1);
    let mut rows = Vec::new();
    for (mech, size, wait) in points {
        bar.set_message(format!("{mech} {size} B {wait}"));
        let row = match mech.cannot_carry(size) {
            Some(why) => Err(anyhow!(why)),
            None => run_point(&mut ctx, mech, size, wait, d, signals.as_ref(), args.raw),
        };
        cleanup::point_done();
        rows.push(row.unwrap_or_else(|e| Row {
            mechanism: mech.name(),
            size,
            wait: wait.to_string(),
            rtt_ns: None,
            samples: 0,
            throughput: None,
            spread: None,
            raw_rtt_ns: None,
            vs_raw: None,
            select_rtt_ns: None,
            select_vs_direct: None,
            select_waits: None,
            skipped: Some(format!("{e:#}")),
        }));
        bar.inc(1);
    }
    let mut rpc_rows = Vec::new();
    for m in rpc_mechs {
        bar.set_message(format!("request/reply over {}", m.scheme));
        rpc_rows.push(rpc::measure(&mut ctx, m, d));
        cleanup::point_done();
        bar.inc(1);
    }
    bar.finish_and_clear();
    let noise_after = report::Noise::sample(m.cpus_allowed);
    println!(
        "ipc bench: {} on {} CPUs, kernel {}; {}",
        m.cpu_model,
        m.cpus_allowed,
        m.kernel,
        match cpus {
            Some((a, b)) => format!("processes pinned to CPUs {a} and {b}"),
            None => "one CPU: processes not pinned".into(),
        }
    );
    println!(
        "floor (one cache line, round trip between the CPUs): p50 {}, min {}",
        ns(floor.p50),
        ns(floor.min)
    );
    let width = if args.wide {
        None
    } else {
        report::terminal_width()
    };
    println!("{}", report::table(&rows, &floor, width));
    for r in rows.iter().filter(|r| r.skipped.is_some()) {
        println!(
            "skipped {} {} B {}: {}",
            r.mechanism,
            r.size,
            r.wait,
            r.skipped.as_deref().unwrap_or_default()
        );
    }
    let say = |text: &str, indent: usize| println!("{}", report::wrap(text, width, indent));
    say(
        &format!(
            "rtt: round trip of one message (ping-pong); ±: half the range of the figure across \
             its {ROUNDS} rounds ({} each); msgs/s and MB/s: one way, counted by the receiver.",
            humantime(d / ROUNDS)
        ),
        0,
    );
    if !rpc_rows.is_empty() {
        println!(
            "Request/reply (ipckit::rpc: typed {}-byte requests and replies with correlation ids; \
             each mechanism's default wait, so the ring spins briefly before sleeping):",
            rpc::SIZE
        );
        println!("{}", rpc::table(&rpc_rows));
    }
    println!("What they are:");
    for l in report::legend(&rows) {
        say(&l, 13);
    }
    for w in report::warnings(&rows, &noise_before, &noise_after) {
        say(&format!("warning: {w}"), 2);
    }
    println!("On this machine, from this run:");
    for l in report::recommend(&rows) {
        say(&format!("- {l}"), 2);
    }
    if let (Some(base), Some(path)) = (&baseline, &args.baseline) {
        println!("Against {} (now / then):", path.display());
        for l in report::compare(&rows, &floor, base) {
            println!("{l}");
        }
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::page(&m, &floor, &rows, args.duration_ms))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let report = Report {
            machine: m,
            floor_rtt_ns: floor,
            results: rows,
            request_reply: rpc_rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
