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

/// `sized:ADDR`: connects with a 4 KiB limit, sends 100 bytes, then 2000
/// (over the listener's limit); to a FIFO, with a 16-byte limit, it must
/// refuse 17 bytes itself, then sends `ok`.
fn client_sized(addr: &str) -> io::Result<()> {
    let addr: Address = addr.parse()?;
    let fifo = matches!(addr, Address::Fifo(_));
    let max = if fifo { 16 } else { 4096 };
    let opts = ipckit::endpoint::Options::new()
        .timeout(Some(T))
        .max_message_size(max);
    let mut c = ipckit::connect_with(&addr, &opts)?;
    if fifo {
        match c.send_timeout([7u8; 17], T) {
            Err(ipckit::SendTimeoutError::Io(e, _)) if e.kind() == io::ErrorKind::InvalidInput => {}
            other => return Err(io::Error::other(format!("17 bytes over 16: {other:?}"))),
        }
        return c.send_timeout("ok", T).map_err(io::Error::from);
    }
    c.send_timeout([1u8; 100], T).map_err(io::Error::from)?;
    c.send_timeout([2u8; 2000], T).map_err(io::Error::from)?;
    // Stay until the server has read (or refused) it.
    let _ = c.recv_timeout(T);
    Ok(())
}

/// `Options::max_message_size` reaches accepted connections and a FIFO's
/// writer; `peer_credentials` names the connecting process.
fn limits_and_credentials() -> Result<(), Failed> {
    let opts = ipckit::endpoint::Options::new().max_message_size(1024);
    for text in [
        format!("unix:@{}", unique("sized")),
        format!("unix-seq:@{}", unique("sized")),
    ] {
        let addr: Address = text.parse()?;
        let l = ipckit::listen_with(&addr, &opts)?;
        let mut child = peer_command(VAR, "sized", &text)?.spawn()?;
        let mut c = l.accept_timeout(T)?;
        let who = c.peer_credentials().ok_or("no credentials")?;
        ensure(who.pid == child.id() as i32, || {
            format!("{text}: pid {} is not the client's {}", who.pid, child.id())
        })?;
        ensure(c.recv_timeout(T)?.len() == 100, || format!("{text}: 100"))?;
        match c.recv_timeout(T) {
            Err(RecvTimeoutError::Io(e)) => {
                let big = ipckit::MessageTooLarge::find(&e).ok_or_else(|| format!("{e}"))?;
                ensure(big.max == 1024, || format!("{text}: {big:?}"))?;
            }
            other => return Err(format!("{text}: 2000 bytes over 1024: {other:?}").into()),
        }
        drop(c);
        ensure(child.wait()?.success(), || {
            format!("{text}: the client failed")
        })?;
    }
    // Other mechanisms know no single sender.
    let q: Address = format!("mq:/{}", unique("nocreds")).parse()?;
    let l = listen(&q)?;
    ensure(l.accept()?.peer_credentials().is_none(), || "mq".into())?;
    let dir = tempfile::tempdir()?;
    let text = format!("fifo:{}", dir.path().join("f").display());
    let l = ipckit::listen_with(&text.parse()?, &opts)?;
    let mut child = peer_command(VAR, "sized", &text)?.spawn()?;
    let mut c = l.accept_timeout(T)?;
    ensure(c.recv_timeout(T)? == b"ok", || "fifo".into())?;
    ensure(child.wait()?.success(), || "the FIFO writer failed".into())
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

/// `listen` on a mailbox that exists leaves it in place when dropped, and
/// on the broker's own names (`dead.NAME`) receives without trying to
/// make them: a message a peer process sent, refused here, comes out of
/// `dead.NAME`.
fn mailboxes_it_did_not_make() -> Result<(), Failed> {
    use ipckit::mailbox::{Client, Config, SubscribeOptions};
    let name = unique("dead");
    let addr: Address = format!("mailbox:{name}").parse()?;
    let mut admin = Client::connect()?;
    admin.create(&name, &Config::default())?;
    drop(listen(&addr)?);
    ensure(common::object_exists(&addr), || {
        format!("mailbox {name}, which listen did not make, was removed")
    })?;
    let letters = listen(&format!("mailbox:dead.{name}").parse()?)?;
    let mut letters = letters.accept()?;
    admin.subscribe(&name, &SubscribeOptions::default())?;
    let mut child = peer_command(VAR, "send", &addr.to_string())?.spawn()?;
    let first = admin.recv_timeout(T)?;
    admin.reject(&first, "refused by the test")?;
    let dead = letters
        .recv_timeout(T)
        .map_err(|e| format!("dead.{name}: {e}"))?;
    ensure(dead == b"m0", || format!("{dead:?}"))?;
    ensure(child.wait()?.success(), || "the sender failed".into())?;
    drop(letters);
    admin.delete(&name)?;
    // Dead letters outlive their mailbox until removed.
    admin.delete(&format!("dead.{name}"))?;
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("send", client_send),
                    ("hello", client_hello),
                    ("sized", client_sized),
                ],
            )
        })],
        "endpoint",
        Duration::from_secs(120),
    );
    common::start_broker().expect("a mailbox broker for the registry's mailbox: entry");
    common::run_cases(vec![
        ("same_code_every_address", same_code_every_address),
        ("several_clients", several_clients),
        ("wrong_way_is_clear", wrong_way_is_clear),
        ("limits_and_credentials", limits_and_credentials),
        ("mailboxes_it_did_not_make", mailboxes_it_did_not_make),
    ]);
}
