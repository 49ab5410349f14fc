//! `Selector` between processes: one selector over endpoints of every
//! kind, each woken by a client process in turn; messages read ahead
//! by a stream keep it ready; a ring is reported exactly; what cannot be
//! selected says so.
//!
//! This test binary re-executed with `IPCKIT_SELECT_PEER=<role>:<arg>`
//! plays the client.

use std::io;
use std::time::{Duration, Instant};

use ipckit::prelude::*;
use ipckit::select::{Selector, Token};
use ipckit::{listen, Address, Connection, Listener};
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, unique, unique_key, T};

const VAR: &str = "IPCKIT_SELECT_PEER";

/// `send:N|MS|ADDR`: connects and sends `N` messages `m0`, `m1`, ...;
/// stays connected `MS` milliseconds so a stream's reader sees the
/// messages, not the end.
fn client_send(arg: &str) -> io::Result<()> {
    let (n, rest) = arg.split_once('|').expect("N|MS|ADDR");
    let (ms, addr) = rest.split_once('|').expect("N|MS|ADDR");
    let linger = Duration::from_millis(ms.parse().expect("MS"));
    let mut c = ipckit::connect_timeout(&addr.parse()?, Some(T))?;
    for i in 0..n.parse::<usize>().expect("N") {
        c.send_timeout(format!("m{i}"), T)
            .map_err(io::Error::from)?;
    }
    std::thread::sleep(linger);
    Ok(())
}

fn spawn_send(n: usize, linger_ms: u64, addr: &Address) -> io::Result<std::process::Child> {
    peer_command(VAR, "send", &format!("{n}|{linger_ms}|{addr}"))?.spawn()
}

/// Mechanisms a selector cannot wait on yet.
const NOT_SELECTABLE: &[&str] = &["sysv-mq"];

/// Selects until `want` is ready, failing if anything else is.
fn expect_ready(sel: &mut Selector, want: Token, what: &str) -> Result<(), Failed> {
    let ready = sel.select(Some(T))?;
    ensure(ready == [want], || {
        format!("{what}: ready {ready:?}, wanted {want:?}")
    })
}

/// One selector over a listener or receiving end of every mechanism; a
/// client process wakes each in turn, and only that one is reported.
fn every_kind() -> Result<(), Failed> {
    // Every mechanism in the registry, but those that say clearly that
    // they cannot be selected on.
    let mut addrs = Vec::new();
    for m in ipckit::registry::MECHANISMS {
        let a = m.scratch_address(&unique("sel"));
        if NOT_SELECTABLE.contains(&m.scheme) {
            let l = listen(&a)?;
            let mut end = l.accept()?;
            let e = Selector::new()?.register(&mut end).unwrap_err();
            ensure(e.kind() == io::ErrorKind::Unsupported, || e.to_string())?;
        } else {
            addrs.push(a.to_string());
        }
    }
    let mut sel = Selector::new()?;
    // Listeners (and a FIFO's) wait for clients; connectionless ends are
    // registered at once.
    let mut listeners: Vec<(Listener, Option<Token>)> = Vec::new();
    let mut ends: Vec<Connection> = Vec::new();
    for text in &addrs {
        let mut l = listen(&text.parse()?)?;
        let token = if l.has_connections() && !matches!(l.address(), Address::Fifo(_)) {
            Some(sel.register(&mut l)?)
        } else if !l.has_connections() {
            ends.push(l.accept()?);
            None
        } else {
            None
        };
        listeners.push((l, token));
    }
    let mut end_tokens = Vec::new();
    for e in &mut ends {
        end_tokens.push(sel.register(e)?);
    }
    ensure(
        sel.select(Some(Duration::from_millis(50)))?.is_empty(),
        || "ready before anyone sent".into(),
    )?;
    let mut next_end = 0;
    let mut children = Vec::new();
    for (l, token) in &listeners {
        let target = l.local_address()?;
        let child = spawn_send(1, 300, &target)?;
        let (mut conn, token) = match token {
            Some(lt) => {
                expect_ready(&mut sel, *lt, &format!("{target} listener"))?;
                let mut c = l.accept_timeout(T)?;
                let t = sel.register(&mut c)?;
                (Some(c), t)
            }
            None if matches!(target, Address::Fifo(_)) => {
                let mut c = l.accept_timeout(T)?;
                let t = sel.register(&mut c)?;
                (Some(c), t)
            }
            None => {
                next_end += 1;
                (None, end_tokens[next_end - 1])
            }
        };
        expect_ready(&mut sel, token, &target.to_string())?;
        let ep = match &mut conn {
            Some(c) => c,
            None => &mut ends[next_end - 1],
        };
        let got = ep.try_recv().map_err(|e| format!("{target}: {e}"))?;
        ensure(got == b"m0", || format!("{target}: {got:?}"))?;
        if conn.is_some() {
            sel.deregister(token)?;
        }
        // Waited for at the end: each lingers a second.
        children.push((target, child, conn));
    }
    for (target, mut child, _conn) in children {
        ensure(child.wait()?.success(), || format!("{target}: client"))?;
    }
    for (_, t) in &listeners {
        if let Some(t) = t {
            sel.deregister(*t)?;
        }
    }
    for t in end_tokens {
        sel.deregister(t)?;
    }
    ensure(sel.is_empty(), || "registrations left".into())?;
    let e = sel.select(None).unwrap_err();
    ensure(e.to_string().contains("nothing is registered"), || {
        e.to_string()
    })
}

/// Three messages from another process arrive in one read: the stream
/// stays ready until the last is taken, then is not.
fn read_ahead_keeps_ready() -> Result<(), Failed> {
    let addr: Address = format!("unix:@{}", unique("ahead")).parse()?;
    let l = listen(&addr)?;
    let mut child = spawn_send(3, 2000, &addr)?;
    let mut conn = l.accept_timeout(T)?;
    // Let all three arrive before the first read.
    std::thread::sleep(Duration::from_millis(100));
    let mut sel = Selector::new()?;
    let t = sel.register(&mut conn)?;
    for i in 0..3 {
        expect_ready(&mut sel, t, &format!("message {i}"))?;
        let m = conn.try_recv()?;
        ensure(m == format!("m{i}").as_bytes(), || format!("{m:?}"))?;
    }
    let ready = sel.select(Some(Duration::from_millis(100)))?;
    ensure(ready.is_empty(), || {
        format!("ready after the last: {ready:?}")
    })?;
    ensure(child.wait()?.success(), || "client".into())
}

/// A ring is reported when a message waits and not otherwise: no
/// spurious wake-ups from its eventfd.
fn ring_is_exact() -> Result<(), Failed> {
    let addr: Address = format!("ring:{}", unique("ring")).parse()?;
    let l = listen(&addr)?;
    let mut rx = l.accept()?;
    let mut sel = Selector::new()?;
    let t = sel.register(&mut rx)?;
    for round in 0..3 {
        let start = Instant::now();
        let ready = sel.select(Some(Duration::from_millis(60)))?;
        ensure(
            ready.is_empty() && start.elapsed() >= Duration::from_millis(55),
            || format!("round {round}: {ready:?} after {:?}", start.elapsed()),
        )?;
        let mut child = spawn_send(2, 0, &addr)?;
        for i in 0..2 {
            expect_ready(&mut sel, t, &format!("round {round} message {i}"))?;
            ensure(rx.try_recv()? == format!("m{i}").as_bytes(), || {
                "wrong message".into()
            })?;
        }
        ensure(child.wait()?.success(), || "client".into())?;
    }
    Ok(())
}

/// What cannot be selected on says why.
fn unsupported_is_clear() -> Result<(), Failed> {
    let key = unique_key();
    let q: Address = format!("sysv-mq:{key}").parse()?;
    let l = listen(&q)?;
    let mut rx = l.accept()?;
    let mut sel = Selector::new()?;
    let e = sel.register(&mut rx).unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::Unsupported && e.to_string().contains("mq:"),
        || e.to_string(),
    )?;
    let mut tx = ipckit::connect(&q)?;
    let e = sel.register(&mut tx).unwrap_err();
    ensure(e.to_string().contains("only sends"), || e.to_string())?;
    // The listener made the queue; dropping its end removes it (the run
    // checks that nothing is left).
    drop(rx);
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(spec, &[("send", client_send)])
        })],
        "select",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("every_kind", every_kind),
        ("read_ahead_keeps_ready", read_ahead_keeps_ready),
        ("ring_is_exact", ring_is_exact),
        ("unsupported_is_clear", unsupported_is_clear),
    ]);
}
