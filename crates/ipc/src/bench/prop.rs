//! `ipc bench prop`: the property store (`ipckit::prop`), with this
//! process as its daemon (`PropServer`) and a peer process watching:
//!
//! - read: `Properties::get` of a [`SIZE`]-byte value from the shared
//!   area, in batches, ns per read (no system call is made); beside it, in
//!   the same rounds, a bare `pread(2)` of the same bytes from a tmpfs
//!   file, the cheapest system call that reads them.
//! - set → wake: this process sets a property through the daemon's socket
//!   (`Properties::set`, answered once visible) with the wall-clock time
//!   in the value; the peer, asleep in `Properties::wait`, wakes, reads it
//!   and takes the difference (both clocks are the machine's
//!   `CLOCK_REALTIME`), then says so on its stdout before the next set.
//!   The set's own round trip is timed here too.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use ipckit::prop::{PropServer, Properties};
use serde::Serialize;

use super::measure::Stats;
use super::{new_hist, Ctx, Peer, Role, MSG_TIMEOUT};

/// The value's size.
pub const SIZE: usize = 32;
/// Rounds of reads (each alternating the two kinds).
const ROUNDS: usize = 5;
const BATCH: u32 = 1000;

/// The property store's figures.
#[derive(Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct PropRow {
    /// ns per `Properties::get`: median of the rounds, and their range.
    pub get_ns: Option<f64>,
    pub get_ns_range: Option<(f64, f64)>,
    /// ns per bare `pread(2)` of the same bytes, same rounds.
    pub pread_ns: Option<f64>,
    /// `get_ns / pread_ns`.
    pub get_vs_pread: Option<f64>,
    /// `Properties::set` round trip (to the daemon and back, visible).
    pub set_ns: Option<Stats>,
    /// From just before the set to the watcher awake with the value.
    pub wake_ns: Option<Stats>,
    pub wakes: u64,
    pub skipped: Option<String>,
}

pub fn measure(ctx: &mut Ctx, d: Duration) -> PropRow {
    measure_inner(ctx, d).unwrap_or_else(|e| PropRow {
        skipped: Some(format!("{e:#}")),
        ..PropRow::default()
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure_inner(ctx: &mut Ctx, d: Duration) -> Result<PropRow> {
    let store = ctx.unique("prop");
    let server = PropServer::builder(&store).start()?;
    let props = Properties::open(&store)?;
    let value = "v".repeat(SIZE);
    props.set("bench.value", &value)?;

    // Reads: rounds alternating get and pread, each for d / (2 ROUNDS).
    let file_path = ctx.tmp.path().join("prop-pread");
    std::fs::write(&file_path, &value)?;
    let file = std::fs::File::open(&file_path)?;
    let slice = d / (2 * ROUNDS as u32);
    let (mut gets, mut preads) = (Vec::new(), Vec::new());
    let mut buf = [0u8; SIZE];
    for _ in 0..ROUNDS {
        let (mut n, t0) = (0u64, Instant::now());
        while t0.elapsed() < slice {
            for _ in 0..BATCH {
                let v = props.get("bench.value")?;
                if v.as_deref().map(str::len) != Some(SIZE) {
                    bail!("read {v:?}");
                }
            }
            n += u64::from(BATCH);
        }
        gets.push(t0.elapsed().as_nanos() as f64 / n as f64);
        let (mut n, t0) = (0u64, Instant::now());
        while t0.elapsed() < slice {
            for _ in 0..BATCH {
                if file.read_at(&mut buf, 0)? != SIZE {
                    bail!("a short pread");
                }
            }
            n += u64::from(BATCH);
        }
        preads.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    let range = (
        gets.iter().copied().fold(f64::INFINITY, f64::min),
        gets.iter().copied().fold(0.0, f64::max),
    );
    let (get_ns, pread_ns) = (median(&mut gets), median(&mut preads));

    // Set → wake, in lockstep with a watcher process.
    let mut cmd = ctx.peer_cmd(Role::PropWatch)?;
    cmd.arg("--addr").arg(&store).stdout(Stdio::piped());
    let mut peer = Peer::spawn(&mut cmd)?;
    let mut out = BufReader::new(peer.0.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)
        .context("waiting for the watcher")?;
    if line.trim() != "ready" {
        bail!("the watcher said {line:?}");
    }
    let mut set_h: Histogram<u64> = new_hist();
    let end = Instant::now() + d;
    let mut i = 0u64;
    while Instant::now() < end {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        let t0 = Instant::now();
        props.set("bench.ping", &format!("{i} {}", now.as_nanos()))?;
        set_h.record((t0.elapsed().as_nanos() as u64).max(1))?;
        line.clear();
        out.read_line(&mut line)?;
        if line.trim() != i.to_string() {
            bail!("the watcher said {line:?} for {i}");
        }
        i += 1;
    }
    props.set("bench.ping", "end")?;
    line.clear();
    out.read_line(&mut line)?;
    peer.finish()?;
    drop(server);
    let wake: Histogram<u64> = {
        let mut h = new_hist();
        for v in line.split_whitespace() {
            h.record(
                v.parse::<u64>()
                    .map_err(|_| anyhow!("the watcher said {line:?}"))?
                    .max(1),
            )?;
        }
        h
    };
    Ok(PropRow {
        get_ns: Some(get_ns),
        get_ns_range: Some(range),
        pread_ns: Some(pread_ns),
        get_vs_pread: Some(get_ns / pread_ns),
        set_ns: Some(Stats::of(&set_h)),
        wake_ns: (!wake.is_empty()).then(|| Stats::of(&wake)),
        wakes: wake.len(),
        skipped: None,
    })
}

/// The watcher: wakes at each change of `bench.ping`, records how long
/// after the setter's clock reading it woke, says the number; prints every
/// latency (ns) on one line at "end".
pub fn peer(store: &str) -> Result<()> {
    let props = Properties::open(store)?;
    let mut seen = props.serial("bench.ping")?;
    let mut lat = Vec::new();
    let mut o = std::io::stdout().lock();
    writeln!(o, "ready")?;
    o.flush()?;
    loop {
        seen = props
            .wait("bench.ping", seen, MSG_TIMEOUT)?
            .context("no change came")?;
        let woke = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        let v = props.get("bench.ping")?.unwrap_or_default();
        if v == "end" {
            break;
        }
        let (i, t) = v.split_once(' ').context("a value without a time")?;
        let t: u128 = t.parse()?;
        // A clock stepped back in between would give a negative: not kept.
        if let Some(ns) = woke.as_nanos().checked_sub(t) {
            lat.push(ns.to_string());
        }
        writeln!(o, "{i}")?;
        o.flush()?;
    }
    writeln!(o, "{}", lat.join(" "))?;
    o.flush()?;
    Ok(())
}

pub fn table(r: &PropRow) -> comfy_table::Table {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["", "p50", "p99", "min"]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    if let Some(why) = &r.skipped {
        t.add_row([Cell::new("prop"), Cell::new(format!("skipped: {why}"))]);
        return t;
    }
    if let (Some(g), Some((lo, hi)), Some(p)) = (r.get_ns, r.get_ns_range, r.pread_ns) {
        t.add_row(vec![
            Cell::new(format!("get, {SIZE} B (shared memory, no system call)")),
            right(format!("{g:.0} ns")),
            right(format!("rounds {lo:.0}–{hi:.0} ns")),
            right(String::new()),
        ]);
        t.add_row(vec![
            Cell::new(format!("bare pread(2) of {SIZE} B, tmpfs")),
            right(format!("{p:.0} ns")),
            right(String::new()),
            right(String::new()),
        ]);
    }
    for (name, st) in [
        ("set (through the daemon, visible)", r.set_ns),
        ("set → watcher awake", r.wake_ns),
    ] {
        let Some(st) = st else { continue };
        t.add_row(super::latency_row(name, &st));
    }
    t
}
