//! `connect` and `listen` between processes: the same code over every
//! message mechanism with only the address changed, a listener taking
//! several clients, and one-way ends refusing the other way clearly.
//!
//! This test binary re-executed with `IPCKIT_ENDPOINT_PEER=<role>:<arg>`
//! plays the client.

use std::io;
use std::time::Duration;

use ipckit::{
    connect_timeout, listen, Address, MessageReceiver, MessageSenderExt, RecvTimeoutError,
};
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_ENDPOINT_PEER";

/// `send:ADDR`: connects (waiting for the listener) and sends m0, m1, m2
/// and `end`.
fn client_send(addr: &str) -> io::Result<()> {
    let addr: Address = addr.parse()?;
    let mut c = connect_timeout(&addr, Some(T))?;
    for m in ["m0", "m1", "m2", "end"] {
        c.send_timeout(m, T).map_err(io::Error::from)?;
    }
    Ok(())
}

/// `hello:ADDR:ID`: connects and sends its id.
fn client_hello(arg: &str) -> io::Result<()> {
    let (addr, id) = arg.rsplit_once(':').expect("ADDR:ID");
    let mut c = connect_timeout(&addr.parse()?, Some(T))?;
    c.send_timeout(id, T).map_err(io::Error::from)?;
    // Stay until the server has read it (a closing stream is fine either way).
    let _ = c.recv_timeout(Duration::from_millis(500));
    Ok(())
}

/// One listener per mechanism, one client process each, the same code.
fn same_code_every_address() -> Result<(), Failed> {
    // Every mechanism in the registry: a new one is tested here unasked.
    let addrs = ipckit::registry::MECHANISMS
        .iter()
        .map(|m| m.scratch_address(&unique("ep")).to_string());
    for text in addrs {
        let addr: Address = text.parse()?;
        let listener = listen(&addr)?;
        let target = listener.local_address()?.to_string();
        let mut child = peer_command(VAR, "send", &target)?.spawn()?;
        let mut conn = listener.accept_timeout(T)?;
        let mut got = Vec::new();
        loop {
            let m = conn.recv_timeout(T).map_err(|e| format!("{target}: {e}"))?;
            if m == b"end" {
                break;
            }
            got.push(String::from_utf8(m)?);
        }
        ensure(got == ["m0", "m1", "m2"], || format!("{target}: {got:?}"))?;
        ensure(child.wait()?.success(), || {
            format!("{target}: the client failed")
        })?;
        // What the listener made goes with it.
        drop(conn);
        drop(listener);
        ensure(!common::object_exists(&addr), || {
            format!("{target}: left behind")
        })?;
    }
    Ok(())
}

/// A stream listener takes several clients that connect at once.
fn several_clients() -> Result<(), Failed> {
    for text in [
        format!("unix:@{}", unique("many")),
        "tcp:127.0.0.1:0".into(),
    ] {
        let listener = listen(&text.parse()?)?;
        let target = listener.local_address()?.to_string();
        let mut children = (0..3)
            .map(|i| peer_command(VAR, "hello", &format!("{target}:{i}"))?.spawn())
            .collect::<io::Result<Vec<_>>>()?;
        let mut ids = Vec::new();
        for conn in listener.incoming().take(3) {
            let mut conn = conn?;
            ids.push(String::from_utf8(conn.recv_timeout(T)?)?);
        }
        ids.sort();
        ensure(ids == ["0", "1", "2"], || format!("{target}: {ids:?}"))?;
        for c in &mut children {
            ensure(c.wait()?.success(), || "a client failed".into())?;
        }
    }
    Ok(())
}

/// One-way ends say which way they go; objects are not channels; a
/// connectionless listener hands out its end once.
fn wrong_way_is_clear() -> Result<(), Failed> {
    let addr: Address = format!("mq:/{}", unique("way")).parse()?;
    let listener = listen(&addr)?;
    let mut tx = connect_timeout(&addr, Some(T))?;
    ensure(tx.can_send() && !tx.can_receive(), || "mq connect".into())?;
    match tx.recv_timeout(T) {
        Err(RecvTimeoutError::Io(e)) => ensure(
            e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains("one way"),
            || e.to_string(),
        )?,
        other => return Err(format!("a receive on a sending end: {other:?}").into()),
    }
    let mut rx = listener.accept()?;
    ensure(rx.send(b"x").is_err(), || {
        "a send on a receiving end".into()
    })?;
    tx.send(b"through")?;
    ensure(rx.recv_timeout(T)? == b"through", || "mq message".into())?;
    let again = listener.accept().unwrap_err();
    ensure(again.to_string().contains("first accept"), || {
        again.to_string()
    })?;
    if let Address::Mq(name) = &addr {
        ipckit::mq::unlink(name)?;
    }
    let e = listen(&"shm:/something".parse()?).unwrap_err();
    ensure(e.to_string().contains("not a message channel"), || {
        e.to_string()
    })
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(spec, &[("send", client_send), ("hello", client_hello)])
        })],
        "endpoint",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("same_code_every_address", same_code_every_address),
        ("several_clients", several_clients),
        ("wrong_way_is_clear", wrong_way_is_clear),
    ]);
}
