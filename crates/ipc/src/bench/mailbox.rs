//! `ipc bench mailbox`: messages through a mailbox broker, a process of
//! its own (`ipc broker`, with a store and `--fsync 10ms`), between this
//! process and peer processes, at 64 bytes:
//!
//! - round trip: this process sends to `ping`, an echo peer receives it
//!   and sends it to `pong`, this process receives it (two confirmed sends,
//!   two deliveries, each acknowledged on the next receive); every round
//!   trip timed, with the clients' default adaptive wait and with clients
//!   that block. Beside it, for scale, a bare Unix socket's round trips
//!   (blocking and adaptive) measured in the same run, and nats-server's
//!   (a request and its reply
//!   through a nats-server this bench starts) when `nats-server` is
//!   installed ([`super::nats`]).
//! - one-way: this process sends numbered messages in pipelined batches
//!   (`Client::send_batch`) for the duration to a work queue that 1 or 4
//!   sink peers share; the rate is what was sent over the time from the
//!   first send until every sink has had its end marker.
//!
//! Each of those plain and durable. The broker is a third process on a
//! machine that may have two CPUs: it is left free to run on either
//! rather than pinned beside one of the two clients.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipckit::mailbox::{Client, Config, Message, SubscribeOptions};
use ipckit::WaitStrategy;
use serde::Serialize;

use super::measure::{RoundTrips, Stats};
use super::{cleanup, Ctx, Mech, Peer, Role, MSG_TIMEOUT, SETUP_TIMEOUT};

/// The message size measured.
pub const SIZE: usize = 64;
/// The rows' names, which `against_goals` looks for.
const UNIX_BLOCK: &str = "unix socket (bare, block)";
const UNIX_ADAPTIVE: &str = "unix socket (bare, adaptive)";
const MAILBOX: &str = "mailbox";
const MAILBOX_BLOCK: &str = "mailbox, clients block";
const NATS: &str = "nats-server (request/reply)";
/// Messages per pipelined batch in the one-way runs.
const BATCH: usize = 1024;
/// The durable mailboxes' fsync policy.
const FSYNC: &str = "10ms";

/// One line of the mailbox table.
#[derive(Serialize, Clone, Debug, Default)]
pub struct MailboxRow {
    /// What carried the messages.
    pub path: String,
    pub rtt_ns: Option<Stats>,
    /// One way, 1 sender → 1 receiver.
    pub msgs_per_s_1: Option<f64>,
    /// One way, 1 sender → 4 receivers sharing a work queue.
    pub msgs_per_s_4: Option<f64>,
    pub skipped: Option<String>,
}

/// The broker process; stopped (SIGTERM, then SIGKILL) on drop.
struct BrokerProc {
    peer: Peer,
    socket: PathBuf,
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.peer.0.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.peer.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn start_broker(ctx: &mut Ctx) -> Result<BrokerProc> {
    let (sock, store) = (ctx.unique("broker"), ctx.unique("store"));
    let dir = ctx.tmp.path();
    let socket = dir.join(format!("{sock}.sock"));
    let store = dir.join(store);
    let mut cmd = Command::new(std::env::current_exe().context("locating the ipc binary")?);
    cmd.args(["broker", "-q", "--fsync", FSYNC, "--socket"])
        .arg(&socket)
        .arg("--store")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The broker is a third process: free to run on any CPU, not tied to
    // this process's.
    if ctx.cpus.is_some() {
        ipckit::process::pin_to_cpus(&ctx.all_cpus)?;
    }
    let peer = Peer::spawn(&mut cmd).context("starting ipc broker");
    if let Some((a, _)) = ctx.cpus {
        ipckit::process::pin_to_cpu(a)?;
    }
    let peer = peer?;
    let b = BrokerProc { peer, socket };
    connect(&b.socket)?;
    Ok(b)
}

/// Connects, waiting for a broker that is starting.
fn connect(socket: &Path) -> Result<Client> {
    let end = Instant::now() + SETUP_TIMEOUT;
    loop {
        match Client::connect_to(socket) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > end => return Err(e).context("connecting to the broker"),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Reads one line of a peer's stdout (its "ready", its count).
fn line(out: &mut BufReader<ChildStdout>) -> Result<String> {
    let mut s = String::new();
    out.read_line(&mut s).context("reading a peer's line")?;
    if s.is_empty() {
        bail!("the peer process ended early");
    }
    Ok(s.trim_end().to_string())
}

fn spawn_peer(
    ctx: &Ctx,
    role: Role,
    addr: &str,
    wait: WaitStrategy,
) -> Result<(Peer, BufReader<ChildStdout>)> {
    let mut cmd = ctx.peer_cmd(role)?;
    cmd.arg("--mech")
        .arg(Mech::Unix.name())
        .arg("--wait")
        .arg(wait.to_string())
        .arg("--addr")
        .arg(addr)
        .stdout(Stdio::piped());
    let mut p = Peer::spawn(&mut cmd)?;
    let mut out = BufReader::new(p.0.stdout.take().expect("piped"));
    let ready = line(&mut out).map_err(|e| peer_error(&mut p, e))?;
    if ready != "ready" {
        bail!("the peer said {ready:?}");
    }
    Ok((p, out))
}

/// The peer's own reason when it failed.
fn peer_error(p: &mut Peer, e: anyhow::Error) -> anyhow::Error {
    let _ = p.0.wait();
    let mut why = String::new();
    if let Some(mut err) = p.0.stderr.take() {
        let _ = err.read_to_string(&mut why);
    }
    match why.trim() {
        "" => e,
        w => anyhow!("{e}: {w}"),
    }
}

fn config(durable: bool) -> Config {
    Config {
        durable,
        ..Config::default()
    }
}

/// Round trips through the broker for `d`, both clients waiting as `wait`
/// says.
fn round_trips(
    ctx: &mut Ctx,
    b: &BrokerProc,
    durable: bool,
    wait: WaitStrategy,
    d: Duration,
) -> Result<Stats> {
    let mut c = connect(&b.socket)?;
    c.set_wait_strategy(wait);
    let (ping, pong) = (ctx.unique("ping"), ctx.unique("pong"));
    c.create(&ping, &config(durable))?;
    c.create(&pong, &config(durable))?;
    c.subscribe(&pong, &SubscribeOptions::default())?;
    let addr = format!("{}|{ping}|{pong}", b.socket.display());
    let (peer, _out) = spawn_peer(ctx, Role::MailboxEcho, &addr, wait)?;
    let msg = vec![0x5Au8; SIZE];
    let mut rtt = RoundTrips::new(d);
    while let Some(start) = rtt.next() {
        c.send(&ping, &msg)?;
        let back = c.recv_timeout(MSG_TIMEOUT)?;
        if back.payload.len() != SIZE {
            bail!("an echo of {} bytes", back.payload.len());
        }
        rtt.done(start)?;
    }
    c.send(&ping, b"")?;
    peer.finish()?;
    c.delete(&ping)?;
    c.delete(&pong)?;
    Ok(rtt.stats())
}

/// One-way messages per second to `sinks` receivers for `d`.
fn one_way(ctx: &mut Ctx, b: &BrokerProc, durable: bool, sinks: usize, d: Duration) -> Result<f64> {
    let mut c = connect(&b.socket)?;
    let q = ctx.unique("queue");
    c.create(&q, &config(durable))?;
    let addr = format!("{}|{q}", b.socket.display());
    let mut peers = Vec::new();
    for _ in 0..sinks {
        peers.push(spawn_peer(
            ctx,
            Role::MailboxSink,
            &addr,
            WaitStrategy::ADAPTIVE,
        )?);
    }
    let bodies: Vec<Vec<u8>> = (0..BATCH as u64)
        .map(|i| {
            let mut m = vec![0u8; SIZE];
            m[..8].copy_from_slice(&i.to_le_bytes());
            m
        })
        .collect();
    let msgs: Vec<Message<'_>> = bodies.iter().map(|m| Message::new(m)).collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d || sent == 0 {
        for r in c.send_batch(&q, &msgs) {
            r?;
        }
        sent += BATCH as u64;
    }
    // One end marker per sink: each stops at its first.
    let ends: Vec<Message<'_>> = (0..sinks).map(|_| Message::new(b"")).collect();
    for r in c.send_batch(&q, &ends) {
        r?;
    }
    let mut got = 0u64;
    for (_, out) in &mut peers {
        got += line(out)?.parse::<u64>().context("a sink's count")?;
    }
    let elapsed = start.elapsed();
    for (p, _) in peers {
        p.finish()?;
    }
    c.delete(&q)?;
    if got != sent {
        bail!("{sent} sent, {got} received");
    }
    Ok(sent as f64 / elapsed.as_secs_f64())
}

/// The whole section: the broker's rows plus the Unix socket's for scale
/// and nats-server's when it is installed.
/// `unix_rtt`: a bare Unix socket's round trips with blocking and with
/// adaptive waits.
pub fn measure(ctx: &mut Ctx, d: Duration, unix_rtt: [Option<Stats>; 2]) -> Vec<MailboxRow> {
    let mut rows: Vec<MailboxRow> = [UNIX_BLOCK, UNIX_ADAPTIVE]
        .into_iter()
        .zip(unix_rtt)
        .map(|(path, rtt)| MailboxRow {
            path: path.into(),
            rtt_ns: rtt,
            skipped: rtt.is_none().then(|| "not measured".into()),
            ..MailboxRow::default()
        })
        .collect();
    let broker = match start_broker(ctx) {
        Ok(b) => b,
        Err(e) => {
            rows.push(MailboxRow {
                path: "mailbox".into(),
                skipped: Some(format!("{e:#}")),
                ..MailboxRow::default()
            });
            return rows;
        }
    };
    for (path, durable, wait) in [
        (MAILBOX_BLOCK.to_string(), false, WaitStrategy::Block),
        (MAILBOX.to_string(), false, WaitStrategy::ADAPTIVE),
        (
            format!("{MAILBOX}, durable (fsync {FSYNC})"),
            true,
            WaitStrategy::ADAPTIVE,
        ),
    ] {
        let mut row = MailboxRow {
            path,
            ..MailboxRow::default()
        };
        let r = (|| -> Result<()> {
            row.rtt_ns = Some(round_trips(ctx, &broker, durable, wait, d).context("round trip")?);
            if wait != WaitStrategy::Block {
                row.msgs_per_s_1 =
                    Some(one_way(ctx, &broker, durable, 1, d).context("1 receiver")?);
                row.msgs_per_s_4 =
                    Some(one_way(ctx, &broker, durable, 4, d).context("4 receivers")?);
            }
            Ok(())
        })();
        if let Err(e) = r {
            row.skipped = Some(format!("{e:#}"));
        }
        cleanup::point_done();
        rows.push(row);
    }
    drop(broker);
    let mut nats = MailboxRow {
        path: NATS.into(),
        ..MailboxRow::default()
    };
    match super::nats::round_trips(ctx, SIZE, d) {
        Ok(Some(rtt)) => nats.rtt_ns = Some(rtt),
        Ok(None) => {
            nats.skipped = Some("not installed (apt-get install nats-server)".into());
        }
        Err(e) => nats.skipped = Some(format!("{e:#}")),
    }
    rows.push(nats);
    rows
}

/// The peer's side: `MailboxEcho` with `--addr SOCKET|IN|OUT` sends every
/// message from IN to OUT until an empty one; `MailboxSink` with `--addr
/// SOCKET|QUEUE` counts messages until an empty one and prints the count.
/// Both print `ready` once subscribed.
pub fn peer(role: Role, addr: &str, wait: WaitStrategy) -> Result<()> {
    let parts: Vec<&str> = addr.split('|').collect();
    let mut c = connect(Path::new(parts[0]))?;
    c.set_wait_strategy(wait);
    let from = parts
        .get(1)
        .ok_or_else(|| anyhow!("--addr SOCKET|MAILBOX…"))?;
    c.subscribe(from, &SubscribeOptions::default())?;
    println!("ready");
    match role {
        Role::MailboxEcho => {
            let to = parts
                .get(2)
                .ok_or_else(|| anyhow!("--addr SOCKET|IN|OUT"))?;
            loop {
                let m = c.recv_timeout(MSG_TIMEOUT)?;
                if m.payload.is_empty() {
                    c.flush()?;
                    return Ok(());
                }
                c.send(to, &m.payload)?;
            }
        }
        _ => {
            let mut n = 0u64;
            loop {
                let m = c.recv_timeout(MSG_TIMEOUT)?;
                if m.payload.is_empty() {
                    c.flush()?;
                    println!("{n}");
                    return Ok(());
                }
                n += 1;
            }
        }
    }
}

/// The table.
pub fn table(rows: &[MailboxRow]) -> comfy_table::Table {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["path", "rtt p50", "rtt p99", "msgs/s 1→1", "msgs/s 1→4"]);
    let rate = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.0}"));
    for r in rows {
        let cells = match (&r.skipped, r.rtt_ns) {
            (Some(why), None) => vec![
                format!("skipped: {why}"),
                String::new(),
                String::new(),
                String::new(),
            ],
            (_, rtt) => vec![
                rtt.map_or(String::new(), |s| super::ns(s.p50)),
                rtt.map_or(String::new(), |s| super::ns(s.p99)),
                rate(r.msgs_per_s_1),
                rate(r.msgs_per_s_4),
            ],
        };
        let mut row = vec![Cell::new(&r.path)];
        row.extend(
            cells
                .into_iter()
                .map(|c| Cell::new(c).set_alignment(CellAlignment::Right)),
        );
        t.add_row(row);
    }
    t
}

/// The figures against the goals, in words.
pub fn against_goals(rows: &[MailboxRow]) -> Vec<String> {
    let find = |p: &str| rows.iter().find(|r| r.path == p);
    let mut out = Vec::new();
    let plain = find(MAILBOX);
    let durable = rows.iter().find(|r| r.path.starts_with("mailbox, durable"));
    let p50 = |r: Option<&MailboxRow>| r.and_then(|r| r.rtt_ns).map(|s| s.p50 as f64);
    if let (Some(u), Some(m)) = (p50(find(UNIX_ADAPTIVE)), p50(plain)) {
        let blocking = match (p50(find(UNIX_BLOCK)), p50(find(MAILBOX_BLOCK))) {
            (Some(u), Some(m)) => format!("; {:.1}× with both blocking", m / u),
            _ => String::new(),
        };
        out.push(format!(
            "mailbox round trip: {:.1}× the bare Unix socket's, both waiting adaptively{blocking} \
             (goal: at most 2×)",
            m / u
        ));
    }
    if let (Some(n), Some(m)) = (p50(find(NATS)), p50(plain)) {
        out.push(format!(
            "mailbox round trip: {:.2} of nats-server's (goal: at most 0.10)",
            m / n
        ));
    }
    if let Some(r) = plain.and_then(|r| r.msgs_per_s_1) {
        out.push(format!(
            "one way 1→1: {:.2} M msgs/s (goal: at least 1 M)",
            r / 1e6
        ));
        if let Some(d) = durable.and_then(|r| r.msgs_per_s_1) {
            out.push(format!(
                "durable one way 1→1: {:.2} of plain (goal: at least 0.5)",
                d / r
            ));
        }
    }
    out
}
