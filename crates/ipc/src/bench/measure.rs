//! Measuring one point (mechanism, size, wait): the floor, round trips
//! (ping-pong, every one timed), one-way throughput, and the rounds that
//! say how far to trust a figure.

use std::io;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ipckit::shm::Memfd;
use ipckit::{RecvTimeoutError, WaitStrategy};
use serde::Serialize;

use super::setup::{Ctx, Endpoint, Peer};
use super::{raw, selected, signal, Mech, Role, Row, MIN_SAMPLES, MSG_TIMEOUT};

/// A marker message that ends a run: any length other than the run's size.
pub(super) fn end_marker(size: usize) -> Vec<u8> {
    vec![0xEE; if size == 1 { 2 } else { 1 }]
}

pub(super) fn put_seq(msg: &mut [u8], seq: u64) {
    let n = msg.len().min(8);
    msg[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

pub(super) fn get_seq(msg: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = msg.len().min(8);
    b[..n].copy_from_slice(&msg[..n]);
    u64::from_le_bytes(b)
}

/// The largest sequence number representable in a `size`-byte message.
pub(super) fn seq_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}

/// Spins until `cond` holds, for at most [`MSG_TIMEOUT`].
pub(super) fn spin_until(mut cond: impl FnMut() -> bool, single_cpu: bool) -> Result<()> {
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

pub(super) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Times round trips: a warm-up (a tenth of the duration) not recorded,
/// then every one for the duration (and at least [`MIN_SAMPLES`]).
pub(super) struct RoundTrips {
    warm: Instant,
    end: Instant,
    n: u64,
    hist: Histogram<u64>,
}

impl RoundTrips {
    pub(super) fn new(d: Duration) -> RoundTrips {
        let warm = Instant::now() + d / 10;
        RoundTrips {
            warm,
            end: warm + d,
            n: 0,
            hist: new_hist(),
        }
    }

    /// When the next round trip starts, or `None` when enough were timed.
    pub(super) fn next(&self) -> Option<Instant> {
        let now = Instant::now();
        (now <= self.end || self.n < MIN_SAMPLES).then_some(now)
    }

    /// The round trip begun at `started` is over.
    pub(super) fn done(&mut self, started: Instant) -> Result<()> {
        if started > self.warm {
            self.hist
                .record((started.elapsed().as_nanos() as u64).max(1))?;
            self.n += 1;
        }
        Ok(())
    }

    pub(super) fn stats(&self) -> Stats {
        Stats::of(&self.hist)
    }
}

#[derive(Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub(super) struct Stats {
    pub(super) min: u64,
    pub(super) p50: u64,
    pub(super) p99: u64,
    pub(super) p999: u64,
    pub(super) max: u64,
    pub(super) mean: u64,
}

impl Stats {
    pub(super) fn of(h: &Histogram<u64>) -> Stats {
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

pub(super) fn measure_floor(ctx: &Ctx, duration: Duration) -> Result<Stats> {
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

pub(super) fn latency(
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
pub(super) struct Throughput {
    pub(super) msgs_per_s: f64,
    pub(super) bytes_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) lost: Option<u64>,
}

pub(super) fn throughput(
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

/// Rounds each point is measured in: the spread between them says how
/// far to trust the figure.
pub(super) const ROUNDS: u32 = 3;

/// Half the range of a figure across the rounds, in percent of its median
/// (10 means ±10 %).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub(super) struct Spread {
    pub(super) rounds: u32,
    pub(super) rtt_p50_pct: f64,
    pub(super) msgs_per_s_pct: f64,
}

pub(super) fn spread_pct(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let range = values[values.len() - 1] - values[0];
    if median > 0.0 {
        (range / 2.0 / median * 100.0 * 10.0).round() / 10.0
    } else {
        0.0
    }
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One round of a point: the round trips' histogram, their number, and
/// the one-way throughput.
pub(super) struct Round {
    pub(super) hist: Histogram<u64>,
    pub(super) samples: u64,
    pub(super) tp: Throughput,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_point(
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
    let size = if mech.is_signal() { signal::SIZE } else { size };
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

pub(super) fn measure_round(
    ctx: &mut Ctx,
    mech: Mech,
    size: usize,
    wait: WaitStrategy,
    d: Duration,
    signals: Option<&ipckit::signal::SignalReceiver>,
) -> Result<Round> {
    if mech.is_signal() {
        let cmd = |role| -> Result<Command> {
            let mut c = ctx.peer_cmd(role)?;
            c.args(["--mech", mech.name(), "--wait", &wait.to_string()]);
            Ok(c)
        };
        let handler;
        let rx = match (mech, signals) {
            (Mech::Signal, Some(rx)) => signal::Rx::Fd(rx),
            _ => {
                handler = signal::handler()?;
                signal::Rx::Handler(&handler)
            }
        };
        let (hist, samples, tp) =
            signal::measure(cmd(Role::Echo)?, cmd(Role::Sink)?, &rx, wait, d)?;
        return Ok(Round { hist, samples, tp });
    }
    let lossy = mech.lossy();
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
