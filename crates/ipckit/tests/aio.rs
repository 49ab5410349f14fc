//! Async receive and send between processes (feature `tokio`): one
//! thread's runtime waits on an end of every mechanism at once; a
//! cancelled receive loses nothing; messages read ahead come at once; a
//! send into a full ring waits without blocking the runtime's thread.
//!
//! This test binary re-executed with `IPCKIT_AIO_PEER=<role>:<arg>` plays
//! the other process.

use std::io::{self, BufRead};
use std::process::{Child, Stdio};
use std::time::Duration;

use ipckit::aio::{AsyncReceiver, AsyncSender};
use ipckit::prelude::*;
use ipckit::{listen, Address, Connection};
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_AIO_PEER";

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `send:DELAY_MS|N|ADDR`: connects, waits, sends `m0`..`m{N-1}`, stays a
/// moment (so a stream's reader sees messages, not the end).
fn client_send(arg: &str) -> io::Result<()> {
    let mut it = arg.splitn(3, '|');
    let delay: u64 = it.next().and_then(|d| d.parse().ok()).expect("DELAY");
    let n: usize = it.next().and_then(|d| d.parse().ok()).expect("N");
    let addr: Address = it.next().expect("ADDR").parse()?;
    let mut c = ipckit::connect_timeout(&addr, Some(T))?;
    std::thread::sleep(Duration::from_millis(delay));
    for i in 0..n {
        c.send_timeout(format!("m{i}"), T)
            .map_err(io::Error::from)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn spawn_send(delay_ms: u64, n: usize, addr: &Address) -> io::Result<Child> {
    peer_command(VAR, "send", &format!("{delay_ms}|{n}|{addr}"))?.spawn()
}

/// The receiving end of `listener` once a client process is there.
fn end_for(listener: &ipckit::Listener) -> io::Result<Connection> {
    listener.accept_timeout(T)
}

/// One runtime thread waits on every mechanism's end at once; the clients
/// send at different times; every message arrives.
fn every_mechanism_at_once() -> Result<(), Failed> {
    let rt = runtime()?;
    let mut listeners = Vec::new();
    let mut children = Vec::new();
    for (i, m) in ipckit::registry::MECHANISMS.iter().enumerate() {
        let addr = m.scratch_address(&unique("aio"));
        let l = listen(&addr)?;
        let target = l.local_address()?;
        children.push(spawn_send(50 * i as u64, 1, &target)?);
        listeners.push((m.scheme, l));
    }
    let ends = listeners
        .iter()
        .map(|(s, l)| Ok((*s, end_for(l)?)))
        .collect::<io::Result<Vec<_>>>()?;
    let got = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (scheme, end) in ends {
            let mut rx = AsyncReceiver::new(end)?;
            set.spawn(async move { (scheme, rx.recv().await.map_err(|e| e.to_string())) });
        }
        tokio::time::timeout(T, async {
            let mut got = Vec::new();
            while let Some(r) = set.join_next().await {
                got.push(r.map_err(|e| io::Error::other(e.to_string()))?);
            }
            Ok::<_, io::Error>(got)
        })
        .await
        .map_err(|_| io::Error::other("not every message came"))?
    });
    let got = got?;
    for (scheme, msg) in &got {
        ensure(msg.as_deref() == Ok(&b"m0"[..]), || {
            format!("{scheme}: {msg:?}")
        })?;
    }
    ensure(got.len() == listeners.len(), || format!("{got:?}"))?;
    for mut c in children {
        ensure(c.wait()?.success(), || "a client failed".into())?;
    }
    Ok(())
}

/// Outside a runtime, wrapping is an error that says what to do (not
/// tokio's panic).
fn outside_a_runtime_is_an_error() -> Result<(), Failed> {
    let (_tx, rx) = ipckit::pipe::channel()?;
    let e = AsyncReceiver::new(rx).unwrap_err();
    ensure(e.to_string().contains("needs a tokio runtime"), || {
        e.to_string()
    })
}

/// A receive cancelled by `select!` takes nothing; three messages read
/// ahead in one go come one after another without waiting.
fn cancel_safe_and_read_ahead() -> Result<(), Failed> {
    let rt = runtime()?;
    let addr: Address = format!("unix:@{}", unique("cancel")).parse()?;
    let l = listen(&addr)?;
    let mut child = spawn_send(300, 3, &addr)?;
    let end = end_for(&l)?;
    rt.block_on(async {
        let mut rx = AsyncReceiver::new(end)?;
        // Nothing before 300 ms: the timer wins and the receive is dropped.
        tokio::select! {
            m = rx.recv() => return Err(format!("early: {m:?}").into()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        for i in 0..3 {
            let m = tokio::time::timeout(T, rx.recv())
                .await
                .map_err(|_| format!("message {i} never came"))??;
            ensure(m == format!("m{i}").as_bytes(), || format!("{m:?}"))?;
        }
        Ok::<(), Failed>(())
    })?;
    ensure(child.wait()?.success(), || "client".into())
}

/// `slowring:NAME`: makes a two-slot ring, says so, waits 300 ms, then
/// receives `m0`..`m9` in order.
fn slow_ring(name: &str) -> io::Result<()> {
    let addr: Address = format!("ring:{name}").parse()?;
    let opts = ipckit::endpoint::Options::new().ring_capacity(2);
    let l = ipckit::listen_with(&addr, &opts)?;
    let mut rx = l.accept()?;
    println!("ready");
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        let m = rx.recv_timeout(T).map_err(io::Error::from)?;
        if m != format!("m{i}").as_bytes() {
            return Err(io::Error::other(format!("message {i}: {m:?}")));
        }
    }
    Ok(())
}

/// Ten sends into a two-slot ring whose reader starts late, with
/// `send` and again through the `Sink`: the sends wait on the blocking
/// pool while the runtime's one thread keeps running other tasks (a
/// ticker).
fn full_send_does_not_block_the_runtime() -> Result<(), Failed> {
    for sink in [false, true] {
        full_send(sink).map_err(|e| format!("sink {sink}: {}", e.message().unwrap_or("")))?;
    }
    Ok(())
}

/// Sends `msg` through the `Sink` interface, as `SinkExt::send` does.
async fn sink_send<K: futures_sink::Sink<Vec<u8>, Error = io::Error> + Unpin>(
    k: &mut K,
    msg: Vec<u8>,
) -> io::Result<()> {
    use std::pin::Pin;
    std::future::poll_fn(|cx| Pin::new(&mut *k).poll_ready(cx)).await?;
    Pin::new(&mut *k).start_send(msg)?;
    std::future::poll_fn(|cx| Pin::new(&mut *k).poll_flush(cx)).await
}

fn full_send(sink: bool) -> Result<(), Failed> {
    let rt = runtime()?;
    let name = unique("full");
    let mut child = peer_command(VAR, "slowring", &name)?
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    ensure(line.trim() == "ready", || line.clone())?;
    let addr: Address = format!("ring:{name}").parse()?;
    let conn = ipckit::connect_timeout(&addr, Some(T))?;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = ticks.clone();
    let waited = rt.block_on(async {
        let ticker = tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            loop {
                iv.tick().await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut tx = AsyncSender::new(conn);
        let start = tokio::time::Instant::now();
        for i in 0..10 {
            let m = format!("m{i}").into_bytes();
            let r = if sink {
                tokio::time::timeout(T, sink_send(&mut tx, m)).await
            } else {
                tokio::time::timeout(T, async { tx.send(m).await.map_err(io::Error::from) }).await
            };
            r.map_err(|_| "a send never finished")?
                .map_err(|e| e.to_string())?;
        }
        let waited = start.elapsed();
        ticker.abort();
        Ok::<_, Failed>(waited)
    })?;
    ensure(waited >= Duration::from_millis(200), || {
        format!("the sends did not wait for the late reader: {waited:?}")
    })?;
    // The runtime's one thread ticked every 20 ms meanwhile.
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    ensure(ticks >= 5, || format!("only {ticks} ticks in {waited:?}"))?;
    ensure(child.wait()?.success(), || "the reader failed".into())
}

/// A waiting receive leaves the runtime's one thread free: a task on the
/// same thread sends the message it waits for (a receive that blocked the
/// thread would wait for ever). Every selectable mechanism.
fn recv_leaves_the_thread_free() -> Result<(), Failed> {
    for m in ipckit::registry::MECHANISMS {
        let addr = m.scratch_address(&unique("free"));
        let l = listen(&addr)?;
        let target = l.local_address()?;
        let (tx, end) = if l.has_connections() {
            // A FIFO's writer and reader open together: from two threads.
            let t = target.clone();
            let h = std::thread::spawn(move || ipckit::connect_timeout(&t, Some(T)));
            let end = l.accept_timeout(T)?;
            (h.join().map_err(|_| "connect panicked")??, end)
        } else {
            let end = l.accept()?;
            (ipckit::connect_timeout(&target, Some(T))?, end)
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let scheme = m.scheme;
        std::thread::spawn(move || {
            let r = runtime().and_then(|rt| {
                rt.block_on(async move {
                    let mut rx = AsyncReceiver::new(end)?;
                    let mut tx = tx;
                    let sender = tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        tx.send(b"from the same thread").map_err(io::Error::from)?;
                        Ok::<_, io::Error>(tx)
                    });
                    let got = rx.recv().await.map_err(io::Error::from)?;
                    let _tx = sender.await.map_err(io::Error::other)??;
                    Ok(got)
                })
            });
            let _ = done_tx.send(r);
        });
        let got = done_rx
            .recv_timeout(T)
            .map_err(|_| format!("{scheme}: the receive blocked the runtime's thread"))??;
        ensure(got == b"from the same thread", || {
            format!("{scheme}: {got:?}")
        })?;
    }
    Ok(())
}

/// `typed:ADDR`: sends five `(u32, String)` values, then closes.
fn typed_sender(addr: &str) -> io::Result<()> {
    let c = ipckit::connect_timeout(&addr.parse()?, Some(T))?;
    let mut tx = ipckit::typed::Sender::<(u32, String), _>::new(c);
    for i in 0..5 {
        tx.send((i, format!("value {i}")))
            .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Typed values from another process, as a `Stream` that ends when the
/// sender closes.
fn typed_stream_until_the_end() -> Result<(), Failed> {
    use futures_core::Stream;
    let rt = runtime()?;
    let addr: Address = format!("unix:@{}", unique("typed")).parse()?;
    let l = listen(&addr)?;
    let mut child = peer_command(VAR, "typed", &addr.to_string())?.spawn()?;
    let end = end_for(&l)?;
    let got = rt.block_on(async {
        let mut rx = ipckit::aio::TypedReceiver::<(u32, String), _>::new(AsyncReceiver::new(end)?);
        let mut got = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut rx).poll_next(cx));
            match tokio::time::timeout(T, next).await {
                Err(_) => return Err(io::Error::other("the stream stalled")),
                Ok(None) => return Ok(got),
                Ok(Some(v)) => got.push(v?),
            }
        }
    })?;
    let want: Vec<(u32, String)> = (0..5).map(|i| (i, format!("value {i}"))).collect();
    ensure(got == want, || format!("{got:?}"))?;
    ensure(child.wait()?.success(), || "the sender failed".into())
}

/// Typed values through a mailbox as an async `Stream`: the sender is
/// another process that knows only the address `mailbox:NAME` (and the
/// broker's socket from `IPCKIT_BROKER`); the broker runs embedded here.
fn typed_async_through_a_mailbox() -> Result<(), Failed> {
    use futures_core::Stream;
    use ipckit::mailbox::{Broker, Client, Config, MailboxReceiver, SubscribeOptions};
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("broker.sock");
    let _broker = Broker::builder().socket(&socket).spawn()?;
    let name = unique("typed").replace('-', "_");
    let mut admin = Client::connect_to(&socket)?;
    admin.create(&name, &Config::default())?;
    let rx = MailboxReceiver::new(
        Client::connect_to(&socket)?,
        &name,
        &SubscribeOptions::default(),
    )?;
    let mut child = peer_command(VAR, "typed", &format!("mailbox:{name}"))?
        .env("IPCKIT_BROKER", &socket)
        .spawn()?;
    let rt = runtime()?;
    let got = rt.block_on(async {
        let mut rx = ipckit::aio::TypedReceiver::<(u32, String), _>::new(AsyncReceiver::new(rx)?);
        let mut got = Vec::new();
        // A mailbox outlives its senders: take the five, then stop.
        while got.len() < 5 {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut rx).poll_next(cx));
            match tokio::time::timeout(T, next).await {
                Err(_) => return Err(io::Error::other(format!("the stream stalled at {got:?}"))),
                Ok(None) => return Err(io::Error::other("the stream ended")),
                Ok(Some(v)) => got.push(v?),
            }
        }
        Ok(got)
    })?;
    let want: Vec<(u32, String)> = (0..5).map(|i| (i, format!("value {i}"))).collect();
    ensure(got == want, || format!("{got:?}"))?;
    ensure(child.wait()?.success(), || "the sender failed".into())?;
    // Every message was taken and acknowledged (the last one when the
    // receiver closed, which the broker may read after this asks).
    let end = std::time::Instant::now() + T;
    loop {
        let info = admin.stat(Some(&name))?;
        if info.len() == 1 && info[0].depth == 0 {
            break;
        }
        ensure(std::time::Instant::now() < end, || format!("{info:?}"))?;
        std::thread::sleep(Duration::from_millis(5));
    }
    admin.delete(&name)?;
    Ok(())
}

/// `serve:ADDR`: a request/reply server (`x -> 2x + 1`; 999 takes 300
/// ms) that prints the address to call, then serves until killed.
fn serve(addr: &str) -> io::Result<()> {
    let l = listen(&addr.parse()?)?;
    println!("{}", l.local_address()?);
    ipckit::rpc::Server::new(l).workers(4).serve(|x: u32| {
        if x == 999 {
            std::thread::sleep(Duration::from_millis(300));
        }
        x * 2 + 1
    })
}

/// Forty calls at once from one runtime thread through one async client,
/// to a server process on every mechanism; a call that times out does not
/// take the reply of the next.
fn async_calls_over_every_address() -> Result<(), Failed> {
    let rt = runtime()?;
    for m in ipckit::registry::MECHANISMS {
        let mut server = peer_command(
            VAR,
            "serve",
            &m.scratch_address(&unique("arpc")).to_string(),
        )?
        .stdout(Stdio::piped())
        .spawn()?;
        let mut line = String::new();
        io::BufReader::new(server.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr: Address = line.trim().parse()?;
        let result = rt.block_on(async {
            let client =
                std::sync::Arc::new(ipckit::aio::AsyncClient::<u32, u32>::connect(&addr, T).await?);
            let mut set = tokio::task::JoinSet::new();
            for i in 0..40u32 {
                let c = client.clone();
                set.spawn(async move { (i, c.call(&i, T).await) });
            }
            while let Some(r) = set.join_next().await {
                let (i, got) = r.map_err(io::Error::other)?;
                let got = got.map_err(io::Error::from)?;
                if got != 2 * i + 1 {
                    return Err(io::Error::other(format!("call {i} got {got}")));
                }
            }
            match client.call(&999, Duration::from_millis(50)).await {
                Err(ipckit::rpc::CallError::Timeout) => {}
                other => return Err(io::Error::other(format!("a slow call: {other:?}"))),
            }
            let next = client.call(&5, T).await.map_err(io::Error::from)?;
            if next != 11 {
                return Err(io::Error::other(format!(
                    "the call after a timeout got {next}"
                )));
            }
            Ok(())
        });
        let _ = server.kill();
        let _ = server.wait();
        common::remove_left_object(&addr);
        result.map_err(|e| format!("{addr}: {e}"))?;
    }
    Ok(())
}

/// `call:ADDR`: four threads of one blocking client, twenty calls each
/// (`x -> 3x`), then one that makes the handler panic.
fn call_async_server(addr: &str) -> io::Result<()> {
    let client = std::sync::Arc::new(ipckit::rpc::Client::<u32, u32>::connect_timeout(
        &addr.parse()?,
        T,
    )?);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let c = client.clone();
            std::thread::spawn(move || -> io::Result<()> {
                for i in 0..20 {
                    let x = t * 100 + i;
                    let got = c.call(&x, T)?;
                    if got != 3 * x {
                        return Err(io::Error::other(format!("{x} answered with {got}")));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a caller panicked"))??;
    }
    match client.call(&777, T) {
        Err(ipckit::rpc::CallError::Remote(why)) if why.contains("panicked") => Ok(()),
        other => Err(io::Error::other(format!("a panicking handler: {other:?}"))),
    }
}

/// An async server in this process, on every mechanism with a reply
/// path (a FIFO's clients one after the other), answers a client
/// process's concurrent calls (handlers that take
/// turns sleeping, and one that panics); aborting it removes what it made.
fn async_server_over_every_address() -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for m in ipckit::registry::MECHANISMS {
        let addr = m.scratch_address(&unique("asrv"));
        let l = listen(&addr)?;
        let target = l.local_address()?;
        let server = {
            let _g = rt.enter();
            let s = ipckit::aio::AsyncServer::<u32, u32>::new(l);
            rt.spawn(s.serve(|x: u32| async move {
                if x == 777 {
                    panic!("asked to panic");
                }
                tokio::time::sleep(Duration::from_millis(u64::from(x % 3))).await;
                3 * x
            }))
        };
        // A FIFO's writers come in turn: a second client after the first.
        let clients = if m.scheme == "fifo" { 2 } else { 1 };
        let mut outs = Vec::new();
        for _ in 0..clients {
            outs.push(peer_command(VAR, "call", &target.to_string())?.output()?);
        }
        server.abort();
        let _ = rt.block_on(server);
        for out in outs {
            ensure(out.status.success(), || {
                format!("{target}: {}", String::from_utf8_lossy(&out.stderr))
            })?;
        }
        ensure(!common::object_exists(&addr), || {
            format!("{target}: still there after the server stopped")
        })?;
    }
    Ok(())
}

/// `post:DELAY_MS|ID`: waits, then posts semaphore 0 of System V set `ID`.
fn post_later(arg: &str) -> io::Result<()> {
    let (delay, id) = arg.split_once('|').expect("DELAY|ID");
    std::thread::sleep(Duration::from_millis(delay.parse().expect("DELAY")));
    ipckit::sem::SemaphoreSet::open_id(id.parse().expect("ID"))?.post(0)
}

/// P operations in a runtime, posted by another process: an acquire
/// cancelled by a timeout takes nothing; one in `select!` beside a
/// receive finishes when the other process posts; the thread stays free.
fn semaphore_acquire_async() -> Result<(), Failed> {
    use ipckit::aio::AsyncWaiter;
    use ipckit::sem::{SemOp, SemaphoreSet, Waiter};
    let rt = runtime()?;
    let _in_rt = rt.enter();
    let set = SemaphoreSet::private().values(&[0]).create()?;
    let mut w = AsyncWaiter::new(Waiter::set(&set, &[SemOp::wait(0)])?)?;
    let (_tx, rx) = ipckit::pipe::channel()?;
    let mut rx = AsyncReceiver::new(rx)?;
    rt.block_on(async {
        let early = tokio::time::timeout(Duration::from_millis(50), w.acquire()).await;
        ensure(early.is_err(), || "acquired with nothing posted".into())?;
        let mut child = peer_command(VAR, "post", &format!("200|{}", set.id()))?.spawn()?;
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let t2 = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        tokio::select! {
            r = w.acquire() => r?,
            m = rx.recv() => return Err(format!("the pipe: {m:?}").into()),
            _ = tokio::time::sleep(T) => return Err("never acquired".into()),
        }
        ticker.abort();
        // The runtime's one thread ran other tasks while waiting.
        let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
        ensure(n >= 5, || format!("the thread was blocked: {n} ticks"))?;
        ensure(child.wait()?.success(), || "poster".into())?;
        ensure(set.get(0)? == 0, || "value after the P".into())?;
        Ok::<(), Failed>(())
    })
}

/// `signals`: receives three realtime signals through the runtime and
/// checks their values 1, 2, 3; prints `ready` first.
fn signals_peer(_: &str) -> io::Result<()> {
    use ipckit::signal::{Signal, SignalReceiver};
    use std::io::Write;
    let sig = Signal::realtime(3)?;
    // Before the runtime's threads exist: they inherit the mask.
    let rx = SignalReceiver::new(&[sig])?;
    let rt = runtime()?;
    let _in_rt = rt.enter();
    let mut rx = AsyncReceiver::new(rx)?;
    println!("ready");
    io::stdout().flush()?;
    rt.block_on(async {
        for want in 1..=3 {
            let info = tokio::time::timeout(T, rx.recv_info())
                .await
                .map_err(|_| io::Error::other(format!("signal {want} never came")))??;
            if info.signal != sig || info.value != Some(want) {
                return Err(io::Error::other(format!("{info:?}, wanted value {want}")));
            }
        }
        Ok(())
    })
}

/// Signals with values from another process, received asynchronously.
fn signals_async() -> Result<(), Failed> {
    use ipckit::signal::Signal;
    let mut child = peer_command(VAR, "signals", "")?
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    ensure(line.trim() == "ready", || format!("peer said {line:?}"))?;
    for v in 1..=3 {
        ipckit::signal::queue(child.id(), Signal::realtime(3)?, v)?;
    }
    ensure(child.wait()?.success(), || "the receiver failed".into())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("send", client_send),
                    ("slowring", slow_ring),
                    ("typed", typed_sender),
                    ("serve", serve),
                    ("call", call_async_server),
                    ("post", post_later),
                    ("signals", signals_peer),
                ],
            )
        })],
        "aio",
        Duration::from_secs(120),
    );
    common::start_broker().expect("a mailbox broker for the registry's mailbox: entry");
    common::run_cases(vec![
        ("every_mechanism_at_once", every_mechanism_at_once),
        (
            "outside_a_runtime_is_an_error",
            outside_a_runtime_is_an_error,
        ),
        ("cancel_safe_and_read_ahead", cancel_safe_and_read_ahead),
        ("recv_leaves_the_thread_free", recv_leaves_the_thread_free),
        ("typed_stream_until_the_end", typed_stream_until_the_end),
        (
            "typed_async_through_a_mailbox",
            typed_async_through_a_mailbox,
        ),
        (
            "async_calls_over_every_address",
            async_calls_over_every_address,
        ),
        (
            "async_server_over_every_address",
            async_server_over_every_address,
        ),
        (
            "full_send_does_not_block_the_runtime",
            full_send_does_not_block_the_runtime,
        ),
        ("semaphore_acquire_async", semaphore_acquire_async),
        ("signals_async", signals_async),
    ]);
}
