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
//! - past one machine: when `nats-server` is installed, the same round
//!   trip and one-way 1→1 through two brokers (`ipc broker --nats URL
//!   --bridge 'bench.>'`) and a nats-server with JetStream started here:
//!   this process a client of one broker, the peer of the other; the
//!   sending mailbox holds at most `BRIDGE_WINDOW` messages, so that what
//!   is sent in the duration can cross soon after.
//!
//! Each of those plain and durable. The broker is a third process on a
//! machine that may have two CPUs: it is left free to run on either
//! rather than pinned beside one of the two clients; one more row pins
//! it to a CPU of its own, both clients sharing the other (on two CPUs,
//! the placement that suits a broker best).

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
const MAILBOX_SOCKET: &str = "mailbox, no lanes (broker --no-lanes)";
const MAILBOX_OWN_CPU: &str = "mailbox, broker on a CPU of its own";
const NATS: &str = "nats-server (request/reply)";
const BRIDGE: &str = "2 brokers bridged by nats-server";
const BRIDGE_DURABLE: &str = "2 brokers bridged, durable (JetStream)";
/// The bridged pattern's prefix: `bench.>` is bridged.
const BRIDGED_PREFIX: &str = "bench.";
/// The most messages a bridged one-way run's sending mailbox holds.
const BRIDGE_WINDOW: u64 = 4096;
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
pub(super) struct BrokerProc {
    peer: Peer,
    pub(super) socket: PathBuf,
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

/// Starts `ipc broker` with a store and these further arguments, free to
/// run on any CPU.
pub(super) fn start_broker(ctx: &mut Ctx, args: &[&str]) -> Result<BrokerProc> {
    start_broker_on(ctx, args, None)
}

/// [`start_broker`], pinned to `cpu` when given.
fn start_broker_on(ctx: &mut Ctx, args: &[&str], cpu: Option<usize>) -> Result<BrokerProc> {
    let (sock, store) = (ctx.unique("broker"), ctx.unique("store"));
    let dir = ctx.tmp.path();
    let socket = dir.join(format!("{sock}.sock"));
    let store = dir.join(store);
    let mut cmd = Command::new(std::env::current_exe().context("locating the ipc binary")?);
    cmd.args(["broker", "-q", "--fsync", FSYNC, "--socket"])
        .arg(&socket)
        .arg("--store")
        .arg(&store)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The broker is a third process: free to run on any CPU, not tied to
    // this process's (unless told where).
    match cpu {
        Some(c) => ipckit::process::pin_to_cpu(c)?,
        None if ctx.cpus.is_some() => ipckit::process::pin_to_cpus(&ctx.all_cpus)?,
        None => {}
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

/// A peer in `role`, on the bench's peer CPU or on `cpu`.
fn spawn_peer(
    ctx: &Ctx,
    role: Role,
    addr: &str,
    wait: WaitStrategy,
    cpu: Option<usize>,
) -> Result<(Peer, BufReader<ChildStdout>)> {
    let mut cmd = match cpu {
        Some(c) => ctx.peer_cmd_on(role, Some(c))?,
        None => ctx.peer_cmd(role)?,
    };
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

/// Where the messages go: from a client of `from` to a client of `to`
/// (another broker when they cross the NATS bridge).
#[derive(Clone, Copy)]
struct Route<'a> {
    from: &'a BrokerProc,
    to: &'a BrokerProc,
    /// The CPU the peers are pinned to, when not the bench's peer CPU.
    peer_cpu: Option<usize>,
}

impl<'a> Route<'a> {
    fn local(b: &'a BrokerProc) -> Self {
        Route {
            from: b,
            to: b,
            peer_cpu: None,
        }
    }

    fn bridged(&self) -> bool {
        !std::ptr::eq(self.from, self.to)
    }

    /// A fresh mailbox name (under the bridged pattern when bridged).
    fn name(&self, ctx: &mut Ctx, what: &str) -> String {
        let n = ctx.unique(what);
        if self.bridged() {
            format!("{BRIDGED_PREFIX}{n}")
        } else {
            n
        }
    }

    /// Makes `names` at both ends (the bridge makes no mailbox); returns
    /// the sender's client and, when bridged, one of the receiving
    /// broker.
    fn create(&self, names: &[(&str, Config)]) -> Result<(Client, Option<Client>)> {
        let mut c = connect(&self.from.socket)?;
        for (n, cfg) in names {
            c.create(n, cfg)?;
        }
        let other = if self.bridged() {
            let mut o = connect(&self.to.socket)?;
            for (n, cfg) in names {
                o.create(n, cfg)?;
            }
            Some(o)
        } else {
            None
        };
        Ok((c, other))
    }

    fn delete(&self, c: &mut Client, other: Option<Client>, names: &[&str]) -> Result<()> {
        for n in names {
            c.delete(n)?;
        }
        if let Some(mut o) = other {
            for n in names {
                o.delete(n)?;
            }
        }
        Ok(())
    }
}

/// Round trips through the broker (or brokers) for `d`, both clients
/// waiting as `wait` says.
fn round_trips(
    ctx: &mut Ctx,
    r: Route<'_>,
    durable: bool,
    wait: WaitStrategy,
    d: Duration,
) -> Result<Stats> {
    let (ping, pong) = (r.name(ctx, "ping"), r.name(ctx, "pong"));
    let (mut c, other) = r.create(&[(&ping, config(durable)), (&pong, config(durable))])?;
    c.set_wait_strategy(wait);
    c.subscribe(&pong, &SubscribeOptions::default())?;
    let addr = format!("{}|{ping}|{pong}", r.to.socket.display());
    let (peer, _out) = spawn_peer(ctx, Role::MailboxEcho, &addr, wait, r.peer_cpu)?;
    let msg = vec![0x5Au8; SIZE];
    if r.bridged() {
        // The first crossing waits for the bridges to see the new
        // mailboxes (a message that finds no way yet is retried).
        c.send(&ping, &msg)?;
        c.recv_timeout(SETUP_TIMEOUT)
            .context("the first message through the bridge")?;
    }
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
    r.delete(&mut c, other, &[&ping, &pong])?;
    Ok(rtt.stats())
}

/// One-way messages per second to `sinks` receivers for `d`. Through the
/// bridge, the sender's mailbox holds at most `BRIDGE_WINDOW` messages (a
/// full one blocks the sender), so what is sent in `d` can cross soon
/// after.
fn one_way(ctx: &mut Ctx, r: Route<'_>, durable: bool, sinks: usize, d: Duration) -> Result<f64> {
    let q = r.name(ctx, "queue");
    let mut cfg = config(durable);
    if r.bridged() {
        cfg.max_msgs = Some(BRIDGE_WINDOW);
    }
    let (mut c, other) = r.create(&[(&q, cfg)])?;
    let addr = format!("{}|{q}", r.to.socket.display());
    let mut peers = Vec::new();
    for _ in 0..sinks {
        peers.push(spawn_peer(
            ctx,
            Role::MailboxSink,
            &addr,
            WaitStrategy::ADAPTIVE,
            r.peer_cpu,
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
    // One end marker per sink. In one broker, order is kept and each sink
    // stops at its first; across the bridge it is not, so the (single)
    // sink's marker says how many to wait for.
    let end = if r.bridged() {
        format!("end {sent}").into_bytes()
    } else {
        Vec::new()
    };
    let ends: Vec<Message<'_>> = (0..sinks).map(|_| Message::new(&end)).collect();
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
    r.delete(&mut c, other, &[&q])?;
    if got != sent {
        bail!("{sent} sent, {got} received");
    }
    Ok(sent as f64 / elapsed.as_secs_f64())
}

/// The default row again through a broker that keeps every byte on the
/// sockets (`ipc broker --no-lanes`): what the lanes buy.
fn measure_socket_only(ctx: &mut Ctx, d: Duration) -> MailboxRow {
    measured_row(MAILBOX_SOCKET, |row| {
        let broker = start_broker(ctx, &["--no-lanes"])?;
        let route = Route::local(&broker);
        let wait = WaitStrategy::ADAPTIVE;
        row.rtt_ns = Some(round_trips(ctx, route, false, wait, d).context("round trip")?);
        row.msgs_per_s_1 = Some(one_way(ctx, route, false, 1, d).context("1 receiver")?);
        Ok(())
    })
}

/// The default row again with the broker pinned to one CPU and both
/// clients (this process and its peer) to the other: on two CPUs, a
/// spinning broker then never waits for a client's CPU, and the two
/// clients hand theirs to each other only when one has sent and waits.
fn measure_own_cpu(ctx: &mut Ctx, d: Duration) -> MailboxRow {
    measured_row(MAILBOX_OWN_CPU, |row| {
        let Some((a, b)) = ctx.cpus else {
            bail!("needs two CPUs to pin to (this process may use one)");
        };
        let broker = start_broker_on(ctx, &[], Some(b))?;
        let route = Route {
            peer_cpu: Some(a),
            ..Route::local(&broker)
        };
        let wait = WaitStrategy::ADAPTIVE;
        row.rtt_ns = Some(round_trips(ctx, route, false, wait, d).context("round trip")?);
        row.msgs_per_s_1 = Some(one_way(ctx, route, false, 1, d).context("1 receiver")?);
        Ok(())
    })
}

/// A row called `path` with what `measure` filled in, or why it could
/// not (the error in its `skipped`); the point's cleanup done either way.
fn measured_row(
    path: impl Into<String>,
    measure: impl FnOnce(&mut MailboxRow) -> Result<()>,
) -> MailboxRow {
    let mut row = MailboxRow {
        path: path.into(),
        ..MailboxRow::default()
    };
    if let Err(e) = measure(&mut row) {
        row.skipped = Some(format!("{e:#}"));
    }
    cleanup::point_done();
    row
}

/// Two brokers bridged through a nats-server with JetStream (started
/// here): round trips and one way, plain and durable. One row saying why
/// when nats-server is not installed.
fn measure_bridge(ctx: &mut Ctx, d: Duration) -> Vec<MailboxRow> {
    let skipped = |path: &str, why: String| MailboxRow {
        path: path.into(),
        skipped: Some(why),
        ..MailboxRow::default()
    };
    let Some(bin) = super::nats::server_binary() else {
        let why = "nats-server is not installed (apt-get install nats-server)";
        return vec![skipped(BRIDGE, why.into())];
    };
    let setup = (|| -> Result<_> {
        let js = ctx.unique("jetstream");
        let js = ctx.tmp.path().join(js);
        let server = super::nats::NatsServer::start(&bin, Some(&js))?;
        let pattern = format!("{BRIDGED_PREFIX}>");
        let args = ["--nats", server.url.as_str(), "--bridge", pattern.as_str()];
        let a = start_broker(ctx, &args)?;
        let b = start_broker(ctx, &args)?;
        Ok((server, a, b))
    })();
    let (server, a, b) = match setup {
        Ok(s) => s,
        Err(e) => return vec![skipped(BRIDGE, format!("{e:#}"))],
    };
    let route = Route {
        from: &a,
        to: &b,
        peer_cpu: None,
    };
    let mut rows = Vec::new();
    for (path, durable) in [(BRIDGE, false), (BRIDGE_DURABLE, true)] {
        rows.push(measured_row(path, |row| {
            let wait = WaitStrategy::ADAPTIVE;
            row.rtt_ns = Some(round_trips(ctx, route, durable, wait, d).context("round trip")?);
            row.msgs_per_s_1 = Some(one_way(ctx, route, durable, 1, d).context("one way")?);
            Ok(())
        }));
    }
    drop((a, b, server));
    rows
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
    let broker = match start_broker(ctx, &[]) {
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
        rows.push(measured_row(path, |row| {
            let route = Route::local(&broker);
            row.rtt_ns = Some(round_trips(ctx, route, durable, wait, d).context("round trip")?);
            if wait != WaitStrategy::Block {
                row.msgs_per_s_1 = Some(one_way(ctx, route, durable, 1, d).context("1 receiver")?);
                row.msgs_per_s_4 = Some(one_way(ctx, route, durable, 4, d).context("4 receivers")?);
            }
            Ok(())
        }));
    }
    drop(broker);
    rows.push(measure_socket_only(ctx, d));
    rows.push(measure_own_cpu(ctx, d));
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
    rows.extend(measure_bridge(ctx, d));
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
            let (mut n, mut want) = (0u64, None);
            loop {
                if want.is_some_and(|w| n >= w) {
                    c.flush()?;
                    println!("{n}");
                    return Ok(());
                }
                let m = c.recv_timeout(MSG_TIMEOUT)?;
                match m.payload.strip_prefix(b"end ") {
                    _ if m.payload.is_empty() => want = Some(n),
                    Some(count) => {
                        let count = std::str::from_utf8(count).ok().and_then(|c| c.parse().ok());
                        want = Some(count.ok_or_else(|| anyhow!("a bad end marker"))?);
                    }
                    None => n += 1,
                }
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
        let own = match p50(find(MAILBOX_OWN_CPU)) {
            Some(o) => format!(
                "; {:.1}× with the broker on a CPU of its own (the clients sharing the other, \
                 the socket pair on two)",
                o / u
            ),
            None => String::new(),
        };
        out.push(format!(
            "mailbox round trip: {:.1}× the bare Unix socket's, both waiting adaptively{own}\
             {blocking} (goal: at most 2×)",
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
