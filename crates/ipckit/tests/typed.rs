//! Typed messages between processes: one request/reply service written
//! once and run over three mechanisms (a pipe pair, a Unix stream, two
//! rings) with only the setup changed; messages that do not decode are
//! clear, non-fatal errors; the size limit applies before decoding; JSON
//! reads as JSON; boxed and borrowed endpoints work.
//!
//! This test binary re-executed with `IPCKIT_TYPED_PEER=<role>:<arg>`
//! plays the server.

use std::io;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipckit::pipe::{self, PipeReader, PipeWriter};
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::socket::unix::{UnixAddr, UnixListener, UnixStream};
use ipckit::typed::{DecodeError, Duplex, Json, Receiver, Sender};
use ipckit::{MessageReceiver, MessageSender, MessageSenderExt, RecvError, RecvTimeoutError};
use libtest_mimic::Failed;
use serde::{Deserialize, Serialize};

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_TYPED_PEER";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    Add(i64, i64),
    Concat(Vec<String>),
    Quit,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Sum(i64),
    Text(String),
}

/// The service, written once over any two-way endpoint.
fn serve(ep: impl MessageSender + MessageReceiver) -> io::Result<()> {
    let mut ch: Duplex<Reply, Request, _> = Duplex::new(ep);
    loop {
        let reply = match ch.recv_timeout(T) {
            Ok(Request::Add(a, b)) => Reply::Sum(a + b),
            Ok(Request::Concat(parts)) => Reply::Text(parts.concat()),
            Ok(Request::Quit) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        ch.send(reply).map_err(io::Error::from)?;
    }
}

/// The client, written once too.
fn use_service(ep: impl MessageSender + MessageReceiver) -> Result<(), Failed> {
    let mut ch: Duplex<Request, Reply, _> = Duplex::new(ep);
    for i in 0..100 {
        ch.send(Request::Add(i, 2 * i))?;
        let r = ch.recv_timeout(T)?;
        ensure(r == Reply::Sum(3 * i), || format!("Add({i}): {r:?}"))?;
    }
    ch.send(Request::Concat(vec!["ip".into(), "c".into(), "kit".into()]))?;
    let r = ch.recv_timeout(T)?;
    ensure(r == Reply::Text("ipckit".into()), || format!("{r:?}"))?;
    ch.send(Request::Quit)?;
    Ok(())
}

fn peer_serve(spec: &str) -> io::Result<()> {
    let (mech, addr) = spec.split_once(':').expect("mech:addr");
    match mech {
        "pipe" => serve(pipe::Duplex::new(
            PipeReader::from(io::stdin().as_fd().try_clone_to_owned()?),
            PipeWriter::from(io::stdout().as_fd().try_clone_to_owned()?),
        )?),
        "unix" => serve(UnixStream::connect(&addr.parse()?)?),
        "ring" => serve(RingDuplex {
            rx: Ring::builder(format!("{addr}-a2b")).open()?.receiver()?,
            tx: Ring::builder(format!("{addr}-b2a")).open()?.sender()?,
        }),
        other => Err(io::Error::other(format!("unknown mechanism {other}"))),
    }
}

fn wait_ok(mut child: std::process::Child) -> Result<(), Failed> {
    let end = Instant::now() + T;
    loop {
        if let Some(st) = child.try_wait()? {
            return ensure(st.success(), || format!("the server failed: {st}"));
        }
        if Instant::now() > end {
            let _ = child.kill();
            return Err("the server did not finish".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same service over a pipe pair, a Unix stream and two rings.
fn one_service_three_mechanisms() -> Result<(), Failed> {
    // Pipes: the server's stdin and stdout.
    let (to_r, to_w) = pipe::pipe()?;
    let (from_r, from_w) = pipe::pipe()?;
    let child = peer_command(VAR, "serve", "pipe:-")?
        .stdin(Stdio::from(to_r))
        .stdout(Stdio::from(from_w))
        .spawn()?;
    use_service(pipe::Duplex::new(from_r, to_w)?)?;
    wait_ok(child)?;
    // A Unix stream: the server connects to us.
    let name = format!("@{}", unique("typed"));
    let listener = UnixListener::bind(&name.parse::<UnixAddr>()?)?;
    let child = peer_command(VAR, "serve", &format!("unix:{name}"))?.spawn()?;
    use_service(listener.accept_timeout(T)?)?;
    wait_ok(child)?;
    // Two rings, one each way.
    let base = unique("typed");
    let a2b = Ring::builder(format!("{base}-a2b")).create()?;
    let b2a = Ring::builder(format!("{base}-b2a")).create()?;
    let (tx, rx) = (a2b.sender()?, b2a.receiver()?);
    let child = peer_command(VAR, "serve", &format!("ring:{base}"))?.spawn()?;
    use_service(RingDuplex { tx, rx })?;
    wait_ok(child)
}

/// A message that is not a `T` is an error naming `T`; the next one is
/// read normally; the iterator goes on past it and ends at disconnection.
fn undecodable_messages_are_clear_and_not_fatal() -> Result<(), Failed> {
    let (mut raw_tx, rx) = pipe::channel()?;
    let mut rx: Receiver<Request, _> = Receiver::new(rx);
    raw_tx.send([0xff, 0xff, 0xff])?;
    match rx.recv_timeout(T) {
        Err(RecvTimeoutError::Io(e)) => {
            let d = DecodeError::find(&e).ok_or_else(|| format!("not a DecodeError: {e}"))?;
            ensure(d.type_name.ends_with("Request") && d.len == 3, || {
                format!("{d:?}")
            })?;
            ensure(e.to_string().contains("Request"), || e.to_string())?;
        }
        other => return Err(format!("garbage decoded: {other:?}").into()),
    }
    let mut tx: Sender<Request, _> = Sender::new(raw_tx);
    tx.send(Request::Add(1, 2))?;
    tx.get_mut().send([0xff])?;
    tx.send(Request::Quit)?;
    drop(tx);
    let items: Vec<_> = rx.iter().collect();
    ensure(items.len() == 3, || format!("{items:?}"))?;
    ensure(matches!(items[0], Ok(Request::Add(1, 2))), || {
        format!("{items:?}")
    })?;
    ensure(
        matches!(&items[1], Err(RecvError::Io(e)) if DecodeError::find(e).is_some()),
        || format!("{items:?}"),
    )?;
    ensure(matches!(items[2], Ok(Request::Quit)), || {
        format!("{items:?}")
    })?;
    Ok(())
}

/// The receiver's limit applies to the encoded bytes before any decoding.
fn size_limit_before_decoding() -> Result<(), Failed> {
    let (tx, rx) = pipe::channel()?;
    let (mut tx, mut rx) = (
        Sender::<Request, _>::new(tx),
        Receiver::<Request, _>::new(rx),
    );
    rx.set_max_message_size(64);
    tx.send(Request::Concat(vec!["x".repeat(1000)]))?;
    match rx.recv_timeout(T) {
        Err(RecvTimeoutError::Io(e)) => {
            let big = ipckit::MessageTooLarge::find(&e).ok_or_else(|| e.to_string())?;
            ensure(big.max == 64, || format!("{big:?}"))
        }
        other => Err(format!("an oversized message: {other:?}").into()),
    }
}

/// JSON goes out as JSON text, and JSON written by hand (another
/// language) comes in.
fn json_for_other_languages() -> Result<(), Failed> {
    let (tx, mut raw_rx) = pipe::channel()?;
    let mut tx: Sender<Request, _, Json> = Sender::new(tx);
    tx.send(Request::Add(4, 5))?;
    let text = String::from_utf8(raw_rx.recv_timeout(T)?)?;
    ensure(text == r#"{"Add":[4,5]}"#, || text.clone())?;
    let (mut raw_tx, rx) = pipe::channel()?;
    let mut rx: Receiver<Reply, _, Json> = Receiver::new(rx);
    raw_tx.send(r#"{"Text":"from python"}"#)?;
    let r = rx.recv_timeout(T)?;
    ensure(r == Reply::Text("from python".into()), || format!("{r:?}"))
}

/// A boxed trait object is an endpoint (`send` and friends work on it),
/// and so is a `&mut` to one: a typed sender can borrow an endpoint.
fn boxed_and_borrowed_endpoints() -> Result<(), Failed> {
    let (tx, mut rx) = pipe::channel()?;
    let mut boxed: Box<dyn MessageSender + Send> = Box::new(tx);
    boxed.send(b"boxed")?;
    boxed.try_send(b"try")?;
    boxed.send_timeout(b"timeout", T)?;
    {
        let mut typed: Sender<Reply, _> = Sender::new(&mut boxed);
        typed.send(Reply::Sum(7))?;
    }
    boxed.send(b"after")?;
    for want in [&b"boxed"[..], b"try", b"timeout"] {
        let got = rx.recv_timeout(T)?;
        ensure(got == want, || format!("{got:?}"))?;
    }
    let mut typed_rx: Receiver<Reply, _> = Receiver::new(&mut rx);
    ensure(typed_rx.recv_timeout(T)? == Reply::Sum(7), || {
        "typed".into()
    })?;
    ensure(rx.recv_timeout(T)? == b"after", || "after".into())?;
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(spec, &[("serve", peer_serve)])
        })],
        "typed",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("one_service_three_mechanisms", one_service_three_mechanisms),
        (
            "undecodable_messages_are_clear_and_not_fatal",
            undecodable_messages_are_clear_and_not_fatal,
        ),
        ("size_limit_before_decoding", size_limit_before_decoding),
        ("json_for_other_languages", json_for_other_languages),
        ("boxed_and_borrowed_endpoints", boxed_and_borrowed_endpoints),
    ]);
}
