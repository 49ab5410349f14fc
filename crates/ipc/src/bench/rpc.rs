//! `ipc bench`'s request/reply table: `ipckit::rpc` over every mechanism
//! of the library's registry, between two processes. This process serves
//! (a server on its own threads, handler inline); the peer calls, first
//! from one thread (the latency of a call), then from four threads through
//! one client at once (calls per second, with replies matched to callers
//! by correlation id).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipckit::registry::Mechanism;
use ipckit::rpc::{Client, Server};
use serde::Serialize;

use super::{new_hist, Ctx, Role, SETUP_TIMEOUT};

/// The size of each request and reply.
pub const SIZE: usize = 64;
/// Callers sharing one client in the second measurement.
const CALLERS: usize = 4;

/// One row of the table.
#[derive(Serialize, Clone, Debug)]
pub struct RpcRow {
    pub mechanism: &'static str,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub calls: u64,
    pub calls_per_s_1: Option<f64>,
    pub calls_per_s_4: Option<f64>,
    pub skipped: Option<String>,
}

/// Serves on a scratch address of `m`, has a peer call it, and returns
/// what the peer measured.
pub fn measure(ctx: &mut Ctx, m: &'static Mechanism, duration: Duration) -> RpcRow {
    let row = |r: Result<(u64, u64, u64, f64, f64)>| match r {
        Ok((p50, p99, calls, one, four)) => RpcRow {
            mechanism: m.scheme,
            p50_ns: Some(p50),
            p99_ns: Some(p99),
            calls,
            calls_per_s_1: Some(one),
            calls_per_s_4: Some(four),
            skipped: None,
        },
        Err(e) => RpcRow {
            mechanism: m.scheme,
            p50_ns: None,
            p99_ns: None,
            calls: 0,
            calls_per_s_1: None,
            calls_per_s_4: None,
            skipped: Some(format!("{e:#}")),
        },
    };
    row(measure_inner(ctx, m, duration))
}

fn measure_inner(
    ctx: &mut Ctx,
    m: &'static Mechanism,
    duration: Duration,
) -> Result<(u64, u64, u64, f64, f64)> {
    let tag = ctx.unique("rpc");
    let addr = m.scratch_address(&tag);
    let mut cmd = ctx.peer_cmd(Role::Rpc)?;
    let opts = ctx.with_broker(m, &mut cmd, ipckit::endpoint::Options::new())?;
    let listener =
        ipckit::listen_with(&addr, &opts).with_context(|| format!("listening on {addr}"))?;
    let target = listener.local_address()?;
    let server = Server::new(listener).workers(0).spawn(|req: Vec<u8>| req)?;
    let line = Ctx::figures(&mut cmd, &target.to_string(), SIZE, duration);
    server.stop()?;
    let line = line?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|w| w.parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("the peer said {line:?}"))?;
    let [p50, p99, calls, one, four] = f[..] else {
        bail!("the peer said {line:?}");
    };
    Ok((p50 as u64, p99 as u64, calls as u64, one, four))
}

/// The peer's side: calls `addr` for `duration` from one thread, then
/// from [`CALLERS`] threads through one client; prints `p50 p99 calls
/// calls/s calls/s` (nanoseconds).
pub fn peer(addr: &str, size: usize, duration: Duration) -> Result<()> {
    let addr: ipckit::Address = addr.parse()?;
    let client = Arc::new(Client::<Vec<u8>, Vec<u8>>::connect_timeout(
        &addr,
        SETUP_TIMEOUT,
    )?);
    let req = vec![0x5Au8; size];
    // The first call may go before a datagram server is reading: retry.
    let setup = Instant::now() + SETUP_TIMEOUT;
    while let Err(e) = client.call(&req, Duration::from_millis(200)) {
        if Instant::now() > setup {
            return Err(anyhow!("the first call: {e}"));
        }
    }
    let timeout = Duration::from_secs(5);
    let mut h = new_hist();
    let start = Instant::now();
    let end = start + duration;
    let mut calls = 0u64;
    while Instant::now() < end {
        let t0 = Instant::now();
        let reply = client.call(&req, timeout)?;
        h.record((t0.elapsed().as_nanos() as u64).max(1))?;
        if reply.len() != size {
            bail!("a reply of {} bytes to a request of {size}", reply.len());
        }
        calls += 1;
    }
    let one = calls as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, req) = (client.clone(), req.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut n = 0;
                while Instant::now() < end {
                    client.call(&req, timeout)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut many = 0;
    for t in threads {
        many += t.join().map_err(|_| anyhow!("a caller panicked"))??;
    }
    let four = many as f64 / start.elapsed().as_secs_f64();
    println!(
        "{} {} {calls} {one:.0} {four:.0}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99)
    );
    Ok(())
}

/// The table: each mechanism's call latency and calls per second. (No
/// ratio to the ping-pong table: measured minutes apart, the two can meet
/// the machine in different states; a VM's adaptive halt-polling, for one,
/// changes wake-up costs several-fold.)
pub fn table(rows: &[RpcRow]) -> comfy_table::Table {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "mechanism",
        "call p50",
        "call p99",
        "calls/s, 1 caller",
        "calls/s, 4 callers",
    ]);
    for r in rows {
        let cells = match (r.p50_ns, r.p99_ns) {
            (Some(p50), Some(p99)) => vec![
                super::ns(p50),
                super::ns(p99),
                format!("{:.0}", r.calls_per_s_1.unwrap_or(0.0)),
                format!("{:.0}", r.calls_per_s_4.unwrap_or(0.0)),
            ],
            _ => vec![
                format!("skipped: {}", r.skipped.as_deref().unwrap_or_default()),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        let mut row = vec![Cell::new(r.mechanism)];
        row.extend(
            cells
                .into_iter()
                .map(|c| Cell::new(c).set_alignment(CellAlignment::Right)),
        );
        t.add_row(row);
    }
    t
}
