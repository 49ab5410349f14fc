//! `ipc bench --html PATH`: the run as one self-contained page (inline
//! SVG, no script, nothing fetched when viewed): the notes' comparison
//! table filled in with this run's figures, a latency-percentile chart per
//! mechanism, throughput against message size, and the machine.

use std::fmt::Write as _;

use super::{Machine, Mech, Row, Stats, ROUNDS};

/// Text for HTML (element content and attribute values).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What each mechanism is good at and where it stops, after the notes.
fn strengths_and_limits(m: Mech) -> (&'static str, &'static str) {
    match m {
        Mech::Pipe => (
            "simplest; kernel-buffered; writes up to PIPE_BUF are atomic",
            "related processes only; one-way; small buffer (64 KiB)",
        ),
        Mech::Fifo => (
            "a pipe with a name: unrelated processes",
            "one-way; several writers interleave above PIPE_BUF; a file to clean up",
        ),
        Mech::Unix => (
            "two-way; passes descriptors; tells the peer's pid and uid",
            "local only; a byte stream (ipckit frames it)",
        ),
        Mech::UnixDgram => (
            "message boundaries; reliable and ordered on Linux; many senders",
            "local only; message size bounded by socket buffers",
        ),
        Mech::UnixSeq => (
            "message boundaries on a connection",
            "local only; two processes per connection",
        ),
        Mech::Tcp => (
            "reaches other hosts; reliable stream",
            "the dearest local path; a byte stream",
        ),
        Mech::Udp => (
            "other hosts; message boundaries; many peers",
            "loses and reorders messages; 65507 bytes at most",
        ),
        Mech::Mq => (
            "messages outlive their sender; priorities; pollable; mq_notify",
            "size and count limits (msgsize_max, msg_max); one-way",
        ),
        Mech::SysvMq => (
            "messages outlive their sender; selection by type; one queue, many conversations",
            "msgmax per message; not pollable; keys can collide",
        ),
        Mech::ShmSpin => (
            "the fastest: no kernel on the data path",
            "each waiting side keeps a CPU busy",
        ),
        Mech::ShmFutex => (
            "shared-memory copies, sleeping only when there is nothing to do",
            "you write the synchronisation yourself",
        ),
        Mech::ShmSem => (
            "the textbook P/V bounded buffer; no system call unless someone sleeps",
            "a crashed process can leave a count wrong",
        ),
        Mech::SysvSem => (
            "atomic operations on several counters; SEM_UNDO on a crash",
            "a system call on every operation",
        ),
        Mech::Signal => (
            "wakes or notifies any process; realtime signals queue with a value",
            "4 bytes at most; not a data channel",
        ),
        Mech::SignalHandler => (
            "a handler: no mask to set up in every thread, user code off the signal context",
            "4 bytes at most; one more write(2) and read(2) than the signalfd",
        ),
        Mech::Ring | Mech::RingMpmc => (
            "shared-memory speed behind the message API; no system call while busy; \
             many senders and receivers (ring-mpmc)",
            "fixed slot size (the largest message); local processes only",
        ),
        // The registry has no words for these: where to read them.
        Mech::Other(m) => ("—", m.reference),
    }
}

const PALETTE: [&str; 16] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#e7ba52", "#5254a3",
];

/// One line of a chart: its label and its points (x index or value, y).
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// An SVG line chart with a logarithmic y axis (and a logarithmic x axis
/// when `x_log`); `x_ticks` label x positions.
fn chart(
    title: &str,
    y_unit: &str,
    series: &[Series],
    x_ticks: &[(f64, String)],
    x_log: bool,
) -> String {
    let (w, h, left, right, top, bottom) = (560.0, 280.0, 64.0, 150.0, 30.0, 40.0);
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| *y > 0.0)
        .collect();
    let xs: Vec<f64> = x_ticks.iter().map(|t| t.0).collect();
    if ys.is_empty() || xs.is_empty() {
        return format!("<p>{}: nothing measured.</p>", esc(title));
    }
    let (ymin, ymax) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let (lo, hi) = (
        ymin.log10().floor(),
        ymax.log10().ceil().max(ymin.log10().floor() + 1.0),
    );
    let fx = |x: f64| if x_log { x.log2() } else { x };
    let (xmin, xmax) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| {
        (a.min(fx(x)), b.max(fx(x)))
    });
    let span = (xmax - xmin).max(1.0);
    let px = |x: f64| left + (fx(x) - xmin) / span * (w - left - right);
    let py = |y: f64| top + (hi - y.log10()) / (hi - lo) * (h - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    let mut d = lo;
    while d <= hi {
        let y = py(10f64.powf(d));
        let _ = write!(
            svg,
            r#"<line x1="{left}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{v}</text>"#,
            x2 = w - right,
            tx = left - 6.0,
            ty = y + 4.0,
            v = esc(&human(10f64.powf(d), y_unit))
        );
        d += 1.0;
    }
    for (x, label) in x_ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
            px(*x),
            h - bottom + 16.0,
            esc(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in s.points.iter().filter(|p| p.1 > 0.0) {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {}</title></circle>"#,
                px(p.0),
                py(p.1),
                esc(&s.label),
                esc(&human(p.1, y_unit))
            );
        }
        let ly = top + 14.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{ry:.1}" width="10" height="10" fill="{color}"/><text x="{tx}" y="{ty:.1}" class="key">{}</text>"#,
            esc(&s.label),
            lx = w - right + 10.0,
            ry = ly - 9.0,
            tx = w - right + 24.0,
            ty = ly
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A value with an SI prefix and its unit.
fn human(v: f64, unit: &str) -> String {
    let (scaled, prefix) = match unit {
        "ns" if v >= 1e6 => (v / 1e6, "m"),
        "ns" if v >= 1e3 => (v / 1e3, "µ"),
        "ns" => (v, "n"),
        _ if v >= 1e9 => (v / 1e9, "G"),
        _ if v >= 1e6 => (v / 1e6, "M"),
        _ if v >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let unit = if unit == "ns" { "s" } else { unit };
    if scaled >= 100.0 || scaled == scaled.trunc() {
        format!("{scaled:.0} {prefix}{unit}")
    } else {
        format!("{scaled:.2} {prefix}{unit}")
    }
}

fn measured(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| r.skipped.is_none())
}

/// The whole page.
pub fn page(machine: &Machine, floor: &Stats, rows: &[Row], duration_ms: u64) -> String {
    let mut mechs: Vec<&str> = Vec::new();
    for r in rows {
        if !mechs.contains(&r.mechanism) {
            mechs.push(r.mechanism);
        }
    }
    let mut h = String::from(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ipc bench: IPC on this machine</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;white-space:nowrap}
svg{margin:0.5em 1em 0.5em 0;border:1px solid #eee}
svg .title{font-weight:bold;font-size:14px}svg .tick{font-size:11px;fill:#555}
svg .key{font-size:11px}svg .grid{stroke:#eee}
.charts{display:flex;flex-wrap:wrap}
</style></head><body>
"#,
    );
    let _ = write!(
        h,
        "<h1>IPC on this machine</h1><p>{} — {} CPUs, kernel {}; {}; ipckit {}. Each figure: {} \
         rounds of {} ms. The floor, one cache line bounced between the two CPUs, took \
         <b>{} ns</b> (p50) per round trip: no IPC can beat it.</p>",
        esc(&machine.cpu_model),
        machine.cpus_allowed,
        esc(&machine.kernel),
        match machine.pinned_cpus {
            Some([a, b]) => format!("processes pinned to CPUs {a} and {b}"),
            None => "one CPU, processes not pinned".into(),
        },
        machine.ipckit_version,
        ROUNDS,
        duration_ms / u64::from(ROUNDS),
        floor.p50
    );
    // The notes' comparison table, filled in.
    let sizes: Vec<usize> = {
        let mut v: Vec<usize> = measured(rows)
            .filter(|r| !Mech::by_name(r.mechanism).is_signal())
            .map(|r| r.size)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (small, large) = (sizes.first().copied(), sizes.last().copied());
    h.push_str(
        "<h2>各种进程间通信方式优劣比较 — how the mechanisms compare</h2><table><tr>\
         <th>mechanism</th><th>data</th><th>participants</th><th>direction</th>\
         <th>kernel implementation</th><th>strengths</th><th>limits</th>\
         <th>rtt p50</th><th>msgs/s</th><th>bytes/s, largest size</th></tr>",
    );
    for name in &mechs {
        let m = Mech::by_name(name);
        let (data, who, dir) = m.traits();
        let (good, bad) = strengths_and_limits(m);
        let at = |size: Option<usize>| {
            measured(rows)
                .filter(|r| r.mechanism == *name)
                .find(|r| size.is_none_or(|s| r.size == s) || m.is_signal())
        };
        let (rtt, rate) = match at(small) {
            Some(r) => (
                format!(
                    "{} ({} B, {})",
                    human(r.rtt_ns.map_or(0, |s| s.p50) as f64, "ns"),
                    r.size,
                    esc(&r.wait)
                ),
                human(r.throughput.map_or(0.0, |t| t.msgs_per_s), ""),
            ),
            None => ("—".into(), "—".into()),
        };
        let bytes = match at(large) {
            Some(r) => format!(
                "{} ({} B)",
                human(r.throughput.map_or(0.0, |t| t.bytes_per_s), "B/s"),
                r.size
            ),
            None => "—".into(),
        };
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(name),
            esc(data),
            esc(who),
            esc(dir),
            esc(m.kernel()),
            esc(good),
            esc(bad),
            rtt,
            esc(&rate),
            esc(&bytes)
        );
    }
    h.push_str("</table>");
    // Latency percentiles, one chart per mechanism.
    h.push_str(
        "<h2>Round-trip latency percentiles</h2><p>Each line is one message size and wait \
         strategy: min, p50, p99, p99.9 and max of every round trip measured (log scale).</p>\
         <div class=charts>",
    );
    let ticks: Vec<(f64, String)> = ["min", "p50", "p99", "p99.9", "max"]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as f64, (*t).to_string()))
        .collect();
    for name in &mechs {
        let series: Vec<Series> = measured(rows)
            .filter(|r| r.mechanism == *name)
            .filter_map(|r| {
                let s = r.rtt_ns?;
                Some(Series {
                    label: format!("{} B {}", r.size, r.wait),
                    points: [s.min, s.p50, s.p99, s.p999, s.max]
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, *v as f64))
                        .collect(),
                })
            })
            .collect();
        h.push_str(&chart(name, "ns", &series, &ticks, false));
    }
    h.push_str("</div>");
    // Throughput against size.
    if sizes.len() > 1 {
        let series: Vec<Series> = mechs
            .iter()
            .filter(|n| !Mech::by_name(n).is_signal())
            .filter_map(|name| {
                let first_wait = measured(rows).find(|r| r.mechanism == *name)?.wait.clone();
                let points: Vec<(f64, f64)> = measured(rows)
                    .filter(|r| r.mechanism == *name && r.wait == first_wait)
                    .map(|r| (r.size as f64, r.throughput.map_or(0.0, |t| t.bytes_per_s)))
                    .collect();
                Some(Series {
                    label: format!("{name} ({first_wait})"),
                    points,
                })
            })
            .collect();
        let ticks: Vec<(f64, String)> = sizes
            .iter()
            .map(|&s| (s as f64, format!("{s} B")))
            .collect();
        h.push_str("<h2>Throughput against message size</h2>");
        h.push_str(&chart(
            "one-way bytes per second",
            "B/s",
            &series,
            &ticks,
            true,
        ));
    }
    // Every figure.
    h.push_str(
        "<h2>Every figure</h2><table><tr><th>mechanism</th><th>size B</th><th>wait</th>\
         <th>rtt min</th><th>rtt p50</th><th>rtt p99</th><th>rtt p99.9</th><th>± rtt</th>\
         <th>msgs/s</th><th>bytes/s</th><th>± msgs/s</th></tr>",
    );
    for r in rows {
        match (&r.rtt_ns, &r.throughput, &r.skipped) {
            (Some(s), Some(t), None) => {
                let sp = r
                    .spread
                    .map_or((0.0, 0.0), |s| (s.rtt_p50_pct, s.msgs_per_s_pct));
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
                     <td class=n>{}</td><td class=n>{}</td><td class=n>±{:.0}%</td><td class=n>{}</td>\
                     <td class=n>{}</td><td class=n>±{:.0}%</td></tr>",
                    esc(r.mechanism),
                    r.size,
                    esc(&r.wait),
                    human(s.min as f64, "ns"),
                    human(s.p50 as f64, "ns"),
                    human(s.p99 as f64, "ns"),
                    human(s.p999 as f64, "ns"),
                    sp.0,
                    human(t.msgs_per_s, ""),
                    human(t.bytes_per_s, "B/s"),
                    sp.1
                );
            }
            _ => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td colspan=8>skipped: {}</td></tr>",
                    esc(r.mechanism),
                    r.size,
                    esc(&r.wait),
                    esc(r.skipped.as_deref().unwrap_or(""))
                );
            }
        }
    }
    h.push_str("</table><p>Made by <code>ipc bench</code>; reproduce with <code>cargo run --release -- bench</code>.</p></body></html>\n");
    h
}
