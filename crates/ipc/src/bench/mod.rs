//! `ipc bench [MECHANISM...] [--sizes …] [--wait …] [--duration-ms N]
//! [--cpus A,B] [--json PATH]`
//!
//! Every measurement runs between this process and a second, real process:
//! this binary re-executed with the internal `__bench-peer` command, pinned to
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
//!
//! The mechanisms come from `ipckit::registry`: the socket kinds, and any
//! mechanism added to the registry, are set up through their addresses
//! alone (`ipckit::listen` here, `ipckit::connect` in the peer; a one-way
//! mechanism as two channels, one listened on in each process), so a new
//! mechanism gets its rows without code here. Pipes, FIFOs, the queues and
//! rings have setups of their own (sized for the message, handed over
//! anonymously); `--by-address` sets those up by address too.
//!
//! The files: [`mechs`] (what is measured, from `ipckit::registry`),
//! [`setup`] and [`peer`] (the two sides of setting each one up),
//! [`measure`] (floor, round trips, throughput, rounds), [`report`] and
//! [`html`] (what is printed), [`rpc`] (the request/reply table), and the
//! variants [`raw`], [`selected`], [`zerocopy`], [`signal`], [`shm`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ipckit::WaitStrategy;
use serde::Serialize;

mod binder;
mod cleanup;
mod html;
mod mailbox;
mod measure;
mod mechs;
mod nats;
mod peer;
mod prop;
mod raw;
mod report;
mod rpc;
mod selected;
mod setup;
mod shm;
mod signal;
mod zerocopy;
use measure::{
    get_seq, measure_floor, new_hist, run_point, seq_mask, spin_until, Spread, Stats, Throughput,
    ROUNDS,
};
pub use mechs::Mech;
pub use peer::{peer, PeerArgs, Role};
use setup::{Ctx, Endpoint, Peer};

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
    /// Mechanisms to measure (default: all); `mailbox` (messages through
    /// an `ipc broker` process) also gets a table of its own: groups,
    /// durability, and nats-server beside it.
    #[arg(value_name = "MECHANISM", value_parser = mechanism_names())]
    mechanisms: Vec<String>,
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
    /// Set up every mechanism that has an address (fifo, the sockets, mq,
    /// sysv-mq, ring, mailbox) through `ipckit::listen` and
    /// `ipckit::connect` on that address alone, with the library's
    /// defaults, as a program that knows only the address would; without
    /// it, the queues, FIFOs and rings are set up the bench's own way
    /// (queues and rings sized for the message, rings handed over
    /// anonymously). The socket kinds and the mailbox go by address either
    /// way.
    #[arg(long, conflicts_with = "zero_copy")]
    by_address: bool,
}

/// The mechanism that also has a section of its own.
const MAILBOX: &str = "mailbox";
/// Not a message mechanism: its own table ([`binder`]).
const BINDER: &str = "binder";
/// Not a message mechanism: its own table ([`prop`]).
const PROP: &str = "prop";

fn mechanism_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        Mech::all().iter().map(|m| m.name()).chain([BINDER, PROP]),
    )
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mailbox: Vec<mailbox::MailboxRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binder: Option<binder::BinderRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prop: Option<prop::PropRow>,
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

/// A table's name cell, then p50, p99 and min of `st`, right-aligned.
fn latency_row(name: &str, st: &measure::Stats) -> Vec<comfy_table::Cell> {
    use comfy_table::{Cell, CellAlignment};
    let mut row = vec![Cell::new(name)];
    row.extend(
        [st.p50, st.p99, st.min].map(|v| Cell::new(ns(v)).set_alignment(CellAlignment::Right)),
    );
    row
}

fn ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", v as f64 / 1e3),
        _ => format!("{:.1} ms", v as f64 / 1e6),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mechs: Vec<Mech> = if args.mechanisms.is_empty() {
        Mech::all().to_vec()
    } else {
        let mut v: Vec<Mech> = args
            .mechanisms
            .iter()
            .filter(|n| *n != BINDER && *n != PROP)
            .map(|n| Mech::by_name(n))
            .collect();
        v.dedup();
        v
    };
    let with_binder = args.mechanisms.is_empty() || args.mechanisms.iter().any(|n| n == BINDER);
    let with_prop = args.mechanisms.is_empty() || args.mechanisms.iter().any(|n| n == PROP);
    let with_mailbox = args.mechanisms.is_empty() || args.mechanisms.iter().any(|n| n == MAILBOX);
    if args.duration_ms == 0 {
        bail!("--duration-ms must be at least 1");
    }
    if args.zero_copy && !mechs.iter().any(|m| m.is_ring()) {
        bail!("--zero-copy applies to ring and ring-mpmc only: add one of them");
    }
    if args.by_address && !mechs.iter().any(|&m| m.address_setup().is_some()) {
        bail!(
            "--by-address applies to mechanisms with an address ({}): add one of them",
            Mech::all()
                .iter()
                .filter(|&&m| m.address_setup().is_some())
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
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
    let all_cpus = ipckit::process::allowed_cpus()?;
    let noise_before = report::Noise::sample(m.cpus_allowed);
    if let Some((a, _)) = cpus {
        ipckit::process::pin_to_cpu(a)?;
    }
    let mut ctx = Ctx {
        cpus,
        all_cpus,
        shared_cpu: cpus.is_none(),
        tmp: tempfile::Builder::new().prefix("ipc-bench-").tempdir()?,
        counter: 0,
        zero_copy: args.zero_copy,
        select: args.select,
        via_select: false,
        by_address: args.by_address,
        broker: None,
    };
    cleanup::tmp(ctx.tmp.path().to_owned());
    let mut points: Vec<(Mech, usize, WaitStrategy)> = Vec::new();
    for &m in &mechs {
        // A signal carries one 32-bit value: measured at that size only.
        let sizes = if m.is_signal() {
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
    let bar = ProgressBar::new(
        points.len() as u64
            + rpc_mechs.len() as u64
            + 1
            + u64::from(with_mailbox)
            + u64::from(with_binder)
            + u64::from(with_prop),
    );
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
    let binder_row = with_binder.then(|| {
        bar.set_message("binder calls");
        let r = binder::measure(&mut ctx, d);
        cleanup::point_done();
        bar.inc(1);
        r
    });
    let prop_row = with_prop.then(|| {
        bar.set_message("property store");
        let r = prop::measure(&mut ctx, d);
        cleanup::point_done();
        bar.inc(1);
        r
    });
    let mut mailbox_rows = Vec::new();
    if with_mailbox {
        bar.set_message("mailboxes through a broker process");
        // A bare Unix socket's round trip for scale: this run's, or one
        // measured now.
        let unix_rtt = [WaitStrategy::Block, WaitStrategy::ADAPTIVE].map(|wait| {
            rows.iter()
                .find(|r| r.mechanism == "unix" && r.size == mailbox::SIZE && r.wait == wait.name())
                .and_then(|r| r.rtt_ns)
                .or_else(|| {
                    let r = run_point(&mut ctx, Mech::Unix, mailbox::SIZE, wait, d, None, false);
                    cleanup::point_done();
                    r.ok().and_then(|r| r.rtt_ns)
                })
        });
        mailbox_rows = mailbox::measure(&mut ctx, d, unix_rtt);
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
    if !rows.is_empty() {
        println!("{}", report::table(&rows, &floor, width));
    }
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
    if !rows.is_empty() {
        say(
            &format!(
                "rtt: round trip of one message (ping-pong); ±: half the range of the figure \
                 across its {ROUNDS} rounds ({} each); msgs/s and MB/s: one way, counted by the \
                 receiver.",
                humantime(d / ROUNDS)
            ),
            0,
        );
    }
    if !rpc_rows.is_empty() {
        println!(
            "Request/reply (ipckit::rpc: typed {}-byte requests and replies with correlation ids; \
             each mechanism's default wait, so the ring spins briefly before sleeping):",
            rpc::SIZE
        );
        println!("{}", rpc::table(&rpc_rows));
    }
    if let Some(r) = &binder_row {
        println!(
            "Binder (ipckit::binder: synchronous calls with a {}-byte byte array in and out, \
             beside a bare seqpacket round trip of {} bytes, rounds interleaved; one-way calls \
             of {} bytes, run in order):",
            binder::SIZE,
            binder::SIZE,
            binder::SIZE
        );
        println!("{}", binder::table(r));
        if let Some(x) = r.call_vs_seqpacket {
            say(
                &format!("- binder call p50 / bare seqpacket p50: {x:.2}× (goal: at most 1.5×)"),
                2,
            );
        }
    }
    if let Some(r) = &prop_row {
        println!(
            "Property store (ipckit::prop: this process its daemon, a {}-byte value; reads \
             beside a bare pread of the same bytes, rounds alternating; sets through the \
             daemon's socket, a watcher process asleep in Properties::wait):",
            prop::SIZE
        );
        println!("{}", prop::table(r));
        if let Some(x) = r.get_vs_pread {
            say(
                &format!("- property get / bare pread(2): {x:.2}× (a read makes no system call)"),
                2,
            );
        }
    }
    if !mailbox_rows.is_empty() {
        println!(
            "Mailboxes ({} B through an `ipc broker` process, free to run on either CPU, \
             polling 50 µs after each event; each client's frames through its shared-memory \
             lanes unless the row says no lanes; the clients' default adaptive wait unless the \
             row says they block; confirmed sends, each message acknowledged on the next receive; \
             durable: a store with fsync every 10 ms):",
            mailbox::SIZE
        );
        println!("{}", mailbox::table(&mailbox_rows));
        for l in mailbox::against_goals(&mailbox_rows) {
            say(&format!("- {l}"), 2);
        }
    }
    if !rows.is_empty() {
        println!("What they are:");
        for l in report::legend(&rows) {
            say(&l, 13);
        }
    }
    for w in report::warnings(&rows, &noise_before, &noise_after) {
        say(&format!("warning: {w}"), 2);
    }
    if !rows.is_empty() {
        println!("On this machine, from this run:");
        for l in report::recommend(&rows) {
            say(&format!("- {l}"), 2);
        }
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
            mailbox: mailbox_rows,
            binder: binder_row,
            prop: prop_row,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
