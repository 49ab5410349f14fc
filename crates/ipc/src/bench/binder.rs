//! `ipc bench binder`: `ipckit::binder` between this process (serving an
//! object) and a peer process (calling it), at [`SIZE`] bytes:
//!
//! - synchronous call round trip: a byte array of SIZE bytes in, the same
//!   back, every call timed; beside it, in the same run and interleaved
//!   with it round by round, a bare Unix seqpacket round trip of the same
//!   SIZE bytes (`send`/`recv` through `std`, a thread here echoing), the
//!   goal's yardstick: binder's p50 at most 1.5 times the socket's.
//! - one-way throughput: one-way calls of SIZE bytes for the duration;
//!   the rate is the number sent over the time until this side has run
//!   them all, checked in order.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use ipckit::binder::{self, Object, Parcel, Server, Status};
use serde::Serialize;

use super::measure::Stats;
use super::{new_hist, Ctx, Role, MSG_TIMEOUT, SETUP_TIMEOUT};

/// The payload of each call, and of each seqpacket message.
pub const SIZE: usize = 64;
/// Interleaved rounds of the two round trips.
const ROUNDS: u32 = 6;

const ECHO: u32 = 1;
const ONEWAY: u32 = 2;
const RAN: u32 = 3;

/// The binder table's figures.
#[derive(Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct BinderRow {
    pub seqpacket_rtt_ns: Option<Stats>,
    pub call_rtt_ns: Option<Stats>,
    /// `call_rtt_ns.p50 / seqpacket_rtt_ns.p50`.
    pub call_vs_seqpacket: Option<f64>,
    pub calls: u64,
    pub oneway_per_s: Option<f64>,
    pub skipped: Option<String>,
}

/// The object served: echoes, counts one-way calls (checking their
/// order), says how many ran.
struct Bench {
    ran: AtomicU64,
    out_of_order: AtomicU64,
}

impl binder::Binder for Bench {
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        _: &binder::Call,
    ) -> binder::Result<()> {
        match code {
            ECHO => {
                let b = data.read_byte_array()?;
                reply.write_byte_array(b.as_deref())
            }
            ONEWAY => {
                let seq = data.read_u64()?;
                if seq != self.ran.fetch_add(1, Ordering::AcqRel) {
                    self.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            RAN => {
                reply.write_u64(self.ran.load(Ordering::Acquire));
                reply.write_u64(self.out_of_order.load(Ordering::Relaxed));
                Ok(())
            }
            _ => Err(Status::UnknownTransaction.into()),
        }
    }
}

pub fn measure(ctx: &mut Ctx, d: Duration) -> BinderRow {
    measure_inner(ctx, d).unwrap_or_else(|e| BinderRow {
        skipped: Some(format!("{e:#}")),
        ..BinderRow::default()
    })
}

fn measure_inner(ctx: &mut Ctx, d: Duration) -> Result<BinderRow> {
    let addr: ipckit::socket::unix::UnixAddr = format!("@{}", ctx.unique("binder")).parse()?;
    let server = Server::builder(Object::new(Bench {
        ran: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
    }))
    .threads(1)
    .bind(&addr)?;
    // The bare yardstick: a seqpacket pair, one end the peer's stdin,
    // this side echoing on a thread.
    let (a, b) = ipckit::socket::unix::SeqpacketStream::pair()?;
    let mine = UnixDatagram::from(a.as_fd().try_clone_to_owned()?);
    let theirs: OwnedFd = b.as_fd().try_clone_to_owned()?;
    drop((a, b));
    mine.set_read_timeout(Some(MSG_TIMEOUT + d))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; SIZE];
        loop {
            let n = mine.recv(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            mine.send(&buf[..n])?;
        }
    });
    let mut cmd = ctx.peer_cmd(Role::BinderCall)?;
    cmd.stdin(Stdio::from(theirs));
    let line = Ctx::figures(&mut cmd, &addr.to_string(), SIZE, d);
    // The peer's end now stays open nowhere: the echo ends.
    drop(cmd);
    drop(server);
    let _ = echo.join();
    let line = line?;
    let row: BinderRow =
        serde_json::from_str(&line).map_err(|_| anyhow!("the peer said {line:?}"))?;
    Ok(row)
}

/// The peer's side: interleaved rounds of seqpacket and binder round
/// trips, then one-way calls; prints a [`BinderRow`] as JSON.
pub fn peer(addr: &str, size: usize, d: Duration) -> Result<()> {
    let sock = UnixDatagram::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    sock.set_read_timeout(Some(MSG_TIMEOUT))?;
    let obj = binder::Connector::new(&addr.parse()?)
        .timeout(SETUP_TIMEOUT)
        .connect()?;
    let payload = vec![0x5Au8; size];
    let (mut hs, mut hb) = (new_hist(), new_hist());
    let mut buf = vec![0u8; size];
    let mut calls = 0u64;
    let call = |payload: &[u8]| -> Result<()> {
        let mut p = Parcel::new();
        p.write_byte_array(Some(payload))?;
        let got = obj.call_timeout(ECHO, p, MSG_TIMEOUT)?.read_byte_array()?;
        if got.as_deref() != Some(payload) {
            bail!("the echo came back changed");
        }
        Ok(())
    };
    // Warm both up.
    for _ in 0..100 {
        sock.send(&payload)?;
        sock.recv(&mut buf)?;
        call(&payload)?;
    }
    for _ in 0..ROUNDS {
        let end = Instant::now() + d / ROUNDS / 2;
        while Instant::now() < end {
            let t0 = Instant::now();
            sock.send(&payload)?;
            let n = sock.recv(&mut buf)?;
            hs.record((t0.elapsed().as_nanos() as u64).max(1))?;
            if n != size {
                bail!("the seqpacket echo returned {n} bytes of {size}");
            }
        }
        let end = Instant::now() + d / ROUNDS / 2;
        while Instant::now() < end {
            let t0 = Instant::now();
            call(&payload)?;
            hb.record((t0.elapsed().as_nanos() as u64).max(1))?;
            calls += 1;
        }
    }
    drop(sock);
    // One-way: as many as fit in the duration, then until all ran.
    let start = Instant::now();
    let end = start + d;
    let mut sent = 0u64;
    while Instant::now() < end {
        let mut p = Parcel::new();
        p.write_u64(sent);
        p.write_byte_array(Some(&payload))?;
        obj.oneway(ONEWAY, p)?;
        sent += 1;
    }
    let deadline = Instant::now() + MSG_TIMEOUT;
    let (ran, disorder) = loop {
        let mut r = obj.call_timeout(RAN, Parcel::new(), MSG_TIMEOUT)?;
        let (ran, disorder) = (r.read_u64()?, r.read_u64()?);
        if ran >= sent || Instant::now() > deadline {
            break (ran, disorder);
        }
    };
    let took = start.elapsed();
    if ran != sent || disorder != 0 {
        bail!("{sent} one-way calls sent, {ran} ran, {disorder} out of order");
    }
    let (s, b) = (Stats::of(&hs), Stats::of(&hb));
    let row = BinderRow {
        call_vs_seqpacket: Some(b.p50 as f64 / s.p50.max(1) as f64),
        seqpacket_rtt_ns: Some(s),
        call_rtt_ns: Some(b),
        calls,
        oneway_per_s: Some(sent as f64 / took.as_secs_f64()),
        skipped: None,
    };
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}

/// The table.
pub fn table(r: &BinderRow) -> comfy_table::Table {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["", "p50", "p99", "min", "one-way calls/s"]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    if let Some(why) = &r.skipped {
        t.add_row([Cell::new("binder"), Cell::new(format!("skipped: {why}"))]);
        return t;
    }
    for (name, st, rate) in [
        ("unix seqpacket, bare (send/recv)", r.seqpacket_rtt_ns, None),
        (
            "binder call (ipckit::binder)",
            r.call_rtt_ns,
            r.oneway_per_s,
        ),
    ] {
        let Some(st) = st else { continue };
        let mut row = super::latency_row(name, &st);
        row.push(right(rate.map_or(String::new(), |r| format!("{r:.0}"))));
        t.add_row(row);
    }
    t
}
