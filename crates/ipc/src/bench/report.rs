//! What `ipc bench` prints: the table (fitted to the terminal), the legend
//! of the notes' static columns, warnings about noise, a recommendation
//! computed from the run, and the comparison with a saved run.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use super::{Mech, Row, Stats};

/// A spread above this many percent marks a figure as noisy.
const NOISY_PCT: f64 = 20.0;

/// One table column: its header and how to fill it from a measured row.
struct Column {
    header: &'static str,
    /// Columns are dropped, highest number first, until the table fits;
    /// 0 is never dropped.
    drop_order: u8,
    cell: fn(&Row, &Stats) -> String,
}

fn rtt(r: &Row) -> &Stats {
    r.rtt_ns.as_ref().expect("a measured row")
}

fn rate(r: &Row) -> &super::Throughput {
    r.throughput.as_ref().expect("a measured row")
}

fn spread_cell(pct: Option<f64>) -> String {
    match pct {
        Some(p) if p > NOISY_PCT => format!("±{p:.0}% !"),
        Some(p) => format!("±{p:.0}%"),
        None => String::new(),
    }
}

const COLUMNS: &[Column] = &[
    Column {
        header: "mechanism",
        drop_order: 0,
        cell: |r, _| r.mechanism.to_string(),
    },
    Column {
        header: "size B",
        drop_order: 0,
        cell: |r, _| r.size.to_string(),
    },
    Column {
        header: "wait",
        drop_order: 0,
        cell: |r, _| r.wait.clone(),
    },
    Column {
        header: "rtt p50 µs",
        drop_order: 0,
        cell: |r, _| micros(rtt(r).p50),
    },
    Column {
        header: "±",
        drop_order: 0,
        cell: |r, _| spread_cell(r.spread.map(|s| s.rtt_p50_pct)),
    },
    Column {
        header: "raw p50 µs",
        drop_order: 0,
        cell: |r, _| r.raw_rtt_ns.map_or_else(|| "—".into(), |s| micros(s.p50)),
    },
    Column {
        header: "× raw",
        drop_order: 0,
        cell: |r, _| r.vs_raw.map_or_else(|| "—".into(), |v| format!("{v:.2}")),
    },
    Column {
        header: "select p50 µs",
        drop_order: 0,
        cell: |r, _| {
            r.select_rtt_ns
                .map_or_else(|| "—".into(), |s| micros(s.p50))
        },
    },
    Column {
        header: "× direct",
        drop_order: 0,
        cell: |r, _| {
            r.select_vs_direct
                .map_or_else(|| "—".into(), |v| format!("{v:.2}"))
        },
    },
    Column {
        header: "rtt p99 µs",
        drop_order: 3,
        cell: |r, _| micros(rtt(r).p99),
    },
    Column {
        header: "rtt p99.9 µs",
        drop_order: 5,
        cell: |r, _| micros(rtt(r).p999),
    },
    Column {
        header: "× floor",
        drop_order: 4,
        cell: |r, floor| format!("{:.0}", rtt(r).p50 as f64 / floor.p50.max(1) as f64),
    },
    Column {
        header: "k msgs/s",
        drop_order: 0,
        cell: |r, _| {
            let k = rate(r).msgs_per_s / 1e3;
            let mut s = if k >= 100.0 {
                format!("{k:.0}")
            } else {
                format!("{k:.1}")
            };
            if let Some(lost) = rate(r).lost.filter(|&l| l > 0) {
                s.push_str(&format!(" ({lost} lost)"));
            }
            s
        },
    },
    Column {
        header: "±",
        drop_order: 2,
        cell: |r, _| spread_cell(r.spread.map(|s| s.msgs_per_s_pct)),
    },
    Column {
        header: "MB/s",
        drop_order: 1,
        cell: |r, _| {
            let mb = rate(r).bytes_per_s / 1e6;
            if mb >= 100.0 {
                format!("{mb:.0}")
            } else if mb >= 1.0 {
                format!("{mb:.1}")
            } else {
                format!("{mb:.3}")
            }
        },
    },
];

/// Nanoseconds in microseconds, with the digits that matter.
fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 1.0 {
        format!("{us:.3}")
    } else if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn build(rows: &[Row], floor: &Stats, keep: &[bool]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let cols: Vec<&Column> = COLUMNS
        .iter()
        .zip(keep)
        .filter_map(|(c, &k)| k.then_some(c))
        .collect();
    t.set_header(cols.iter().map(|c| c.header).collect::<Vec<_>>());
    for r in rows {
        let cells = cols.iter().map(|c| {
            let text = if r.skipped.is_some() {
                match c.header {
                    "mechanism" | "size B" | "wait" => (c.cell)(r, floor),
                    "rtt p50 µs" => "skipped".into(),
                    _ => "-".into(),
                }
            } else {
                (c.cell)(r, floor)
            };
            let cell = Cell::new(text);
            match c.header {
                "mechanism" | "wait" => cell,
                _ => cell.set_alignment(CellAlignment::Right),
            }
        });
        t.add_row(cells.collect::<Vec<_>>());
    }
    t
}

fn width_of(t: &Table) -> usize {
    t.to_string()
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

/// The terminal's width: `COLUMNS`, or the tty's; `None` when the output
/// goes elsewhere (a file or a pipe gets every column).
pub fn terminal_width() -> Option<usize> {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
    {
        return Some(w);
    }
    let t = Table::new();
    t.is_tty().then(|| t.width().map(usize::from)).flatten()
}

/// The table of results, dropping the least important columns until it
/// fits in `width` (all of them when `width` is `None`).
pub fn table(rows: &[Row], floor: &Stats, width: Option<usize>) -> Table {
    // The --raw and --select columns only when there is something in them.
    let raw = rows.iter().any(|r| r.raw_rtt_ns.is_some());
    let select = rows.iter().any(|r| r.select_rtt_ns.is_some());
    let mut keep: Vec<bool> = COLUMNS
        .iter()
        .map(|c| match c.header {
            "raw p50 µs" | "× raw" => raw,
            "select p50 µs" | "× direct" => select,
            _ => true,
        })
        .collect();
    let mut t = build(rows, floor, &keep);
    let Some(width) = width else {
        return t;
    };
    let mut order: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| COLUMNS[i].drop_order > 0 && keep[i])
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(COLUMNS[i].drop_order));
    for i in order {
        if width_of(&t) <= width {
            break;
        }
        keep[i] = false;
        t = build(rows, floor, &keep);
    }
    t
}

/// `text` folded at spaces to `width` columns, continuation lines indented
/// by `indent` spaces.
pub fn wrap(text: &str, width: Option<usize>, indent: usize) -> String {
    let Some(width) = width.filter(|&w| w > indent + 20) else {
        return text.to_string();
    };
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        } else if !line.is_empty() && !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

/// What each mechanism in the run is, once: the notes' static columns.
pub fn legend(rows: &[Row]) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut lines = Vec::new();
    for r in rows {
        if seen.contains(&r.mechanism) {
            continue;
        }
        seen.push(r.mechanism);
        let m = Mech::by_name(r.mechanism);
        let (data, who, dir) = m.traits();
        lines.push(format!(
            "  {:<10} {data}; {who}; {dir}; kernel: {}",
            r.mechanism,
            m.kernel()
        ));
    }
    lines
}

/// Machine-wide signs of noise, sampled at the start and the end of a run.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    load: f64,
    cpus: usize,
    /// (steal, total) jiffies from /proc/stat.
    stat: Option<(u64, u64)>,
}

fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*f.get(7).unwrap_or(&0), f.iter().take(8).sum()))
}

impl Noise {
    pub fn sample(cpus: usize) -> Noise {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Noise {
            load,
            cpus: cpus.max(1),
            stat: cpu_jiffies(),
        }
    }
}

/// Warnings that the figures may be disturbed: noisy rows, a busy
/// machine, a hypervisor taking CPU time.
pub fn warnings(rows: &[Row], before: &Noise, after: &Noise) -> Vec<String> {
    let mut w = Vec::new();
    let noisy: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.spread
                .is_some_and(|s| s.rtt_p50_pct > NOISY_PCT || s.msgs_per_s_pct > NOISY_PCT)
        })
        .map(|r| format!("{} {} B {}", r.mechanism, r.size, r.wait))
        .collect();
    if !noisy.is_empty() {
        w.push(format!(
            "{} of {} rows moved more than {NOISY_PCT:.0} % between their {} rounds (marked !): {}; \
             run again, or with fewer other programs running",
            noisy.len(),
            rows.iter().filter(|r| r.skipped.is_none()).count(),
            super::ROUNDS,
            noisy.join(", ")
        ));
    }
    let busy = before.load.max(after.load);
    if busy > 0.5 * before.cpus as f64 {
        w.push(format!(
            "the machine was busy: load average {busy:.2} on {} CPUs (above 0.5 per CPU)",
            before.cpus
        ));
    }
    if let (Some((s0, t0)), Some((s1, t1))) = (before.stat, after.stat) {
        let (steal, total) = (s1.saturating_sub(s0), t1.saturating_sub(t0));
        if total > 0 && steal * 100 > total {
            w.push(format!(
                "the hypervisor took {:.1} % of the CPU time during the run (steal time in \
                 /proc/stat): figures on this VM vary from run to run",
                steal as f64 * 100.0 / total as f64
            ));
        }
    }
    w
}

fn measured(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| r.skipped.is_none())
}

/// Four lines of advice computed from this run's figures.
pub fn recommend(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let p50 = |r: &Row| rtt(r).p50;
    if let Some(r) = measured(rows).min_by_key(|r| p50(r)) {
        out.push(format!(
            "lowest latency: {} ({} µs round trip at {} B, {}): {}",
            r.mechanism,
            micros(p50(r)),
            r.size,
            r.wait,
            if r.wait.starts_with("spin") {
                "both sides poll instead of sleeping, each keeping a CPU busy"
            } else {
                "the cheapest wake-up of those measured"
            }
        ));
    }
    let idle = measured(rows).filter(|r| r.wait == "block");
    match idle.min_by_key(|r| p50(r)) {
        Some(r) => out.push(format!(
            "lowest latency without burning a core: {} ({} µs at {} B, blocking): {}",
            r.mechanism,
            micros(p50(r)),
            r.size,
            Mech::by_name(r.mechanism).why_fast()
        )),
        None => out.push(
            "lowest latency without burning a core: no row was measured with --wait block".into(),
        ),
    }
    // Signals have a size of their own (4 bytes): compare the others at
    // the sizes asked for.
    let signal = |r: &Row| Mech::by_name(r.mechanism).is_signal();
    let sized = |r: &&Row| !signal(r) || rows.iter().all(signal);
    let sizes: Vec<usize> = measured(rows).filter(sized).map(|r| r.size).collect();
    if let (Some(&small), Some(&large)) = (sizes.iter().min(), sizes.iter().max()) {
        let best = |size: usize, key: fn(&Row) -> f64| {
            measured(rows)
                .filter(sized)
                .filter(|r| r.size == size)
                .max_by(|a, b| key(a).total_cmp(&key(b)))
        };
        if let Some(r) = best(small, |r| rate(r).msgs_per_s) {
            out.push(format!(
                "most small messages: {} ({:.0} k msgs/s at {small} B, {}): {}",
                r.mechanism,
                rate(r).msgs_per_s / 1e3,
                r.wait,
                Mech::by_name(r.mechanism).why_fast()
            ));
        }
        if large != small {
            if let Some(r) = best(large, |r| rate(r).bytes_per_s) {
                out.push(format!(
                    "most bytes with large messages: {} ({:.0} MB/s at {large} B, {}): {}",
                    r.mechanism,
                    rate(r).bytes_per_s / 1e6,
                    r.wait,
                    Mech::by_name(r.mechanism).why_fast()
                ));
            }
        }
    }
    out
}

/// This run against a saved one (`--json` of an earlier run): the ratio
/// now / then of the round trip's p50 and of the messages per second, for
/// every row both have.
pub fn compare(rows: &[Row], floor: &Stats, base: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(then) = base["floor_rtt_ns"]["p50"].as_u64() {
        out.push(format!(
            "  floor p50 {} ns, then {then} ns (×{:.2})",
            floor.p50,
            floor.p50 as f64 / then.max(1) as f64
        ));
    }
    let empty = Vec::new();
    let old = base["results"].as_array().unwrap_or(&empty);
    for r in measured(rows) {
        let Some(o) = old.iter().find(|o| {
            o["mechanism"] == r.mechanism
                && o["size"].as_u64() == Some(r.size as u64)
                && o["wait"] == r.wait.as_str()
        }) else {
            continue;
        };
        let (Some(p), Some(m)) = (
            o["rtt_ns"]["p50"].as_u64(),
            o["throughput"]["msgs_per_s"].as_f64(),
        ) else {
            continue;
        };
        out.push(format!(
            "  {:<10} {:>8} B {:<13} rtt p50 ×{:.2}   msgs/s ×{:.2}",
            r.mechanism,
            r.size,
            r.wait,
            rtt(r).p50 as f64 / p.max(1) as f64,
            rate(r).msgs_per_s / m.max(f64::MIN_POSITIVE)
        ));
    }
    if out.len() <= 1 {
        out.push(
            "  no row of this run was in the saved one (same mechanism, size and wait)".into(),
        );
    }
    out
}
