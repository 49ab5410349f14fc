//! `Selector` between processes: one selector over endpoints of every
//! kind, each woken by a client process in turn; messages read ahead
//! by a stream keep it ready; a ring and a System V queue (through their
//! helper threads) are reported exactly; a System V queue's messages stay
//! queued while watched, an empty one taken ahead is delivered in order
//! or handed back; a sending end says it cannot be selected.
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
    // Every mechanism in the registry.
    let addrs: Vec<String> = ipckit::registry::MECHANISMS
        .iter()
        .map(|m| m.scratch_address(&unique("sel")).to_string())
        .collect();
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
    // Nothing is ready before anyone sent. A mailbox may be reported once
    // for a wake-up byte its broker sent as the client returned from its
    // last call (the selector's contract: receive, and select again on
    // `Empty`); it must then find nothing and go quiet.
    for t in sel.select(Some(Duration::from_millis(50)))? {
        let i = end_tokens
            .iter()
            .position(|e| *e == t)
            .ok_or("a listener ready before anyone connected")?;
        let early = ends[i].try_recv();
        ensure(matches!(early, Err(ipckit::TryRecvError::Empty)), || {
            format!("{}: ready before anyone sent: {early:?}", ends[i].address())
        })?;
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

/// A ring and a System V queue are reported when a message waits and not
/// otherwise: no spurious wake-ups from their eventfds, through bursts.
fn signalled_kinds_are_exact() -> Result<(), Failed> {
    for addr in [
        format!("ring:{}", unique("ring")),
        format!("sysv-mq:{}", unique_key()),
    ] {
        let addr: Address = addr.parse()?;
        let l = listen(&addr)?;
        let mut rx = l.accept()?;
        let mut sel = Selector::new()?;
        let t = sel.register(&mut rx)?;
        for round in 0..3 {
            let start = Instant::now();
            let ready = sel.select(Some(Duration::from_millis(60)))?;
            ensure(
                ready.is_empty() && start.elapsed() >= Duration::from_millis(55),
                || {
                    format!(
                        "{addr} round {round}: {ready:?} after {:?}",
                        start.elapsed()
                    )
                },
            )?;
            let mut child = spawn_send(2, 0, &addr)?;
            for i in 0..2 {
                expect_ready(&mut sel, t, &format!("{addr} round {round} message {i}"))?;
                ensure(rx.try_recv()? == format!("m{i}").as_bytes(), || {
                    format!("{addr}: wrong message")
                })?;
            }
            ensure(child.wait()?.success(), || "client".into())?;
        }
        sel.deregister(t)?;
    }
    Ok(())
}

/// Threads of this process now (`/proc/self/task`).
fn threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Waits up to `T` for this process to have at most `n` threads (the
/// helpers gone; other threads of the harness may end meanwhile).
fn threads_become(n: usize) -> Result<(), Failed> {
    let end = Instant::now() + T;
    while threads()? > n {
        ensure(Instant::now() < end, || {
            format!("{} threads, wanted {n}", threads().unwrap_or(0))
        })?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A watched System V queue: a message reported ready is still in the
/// kernel's queue (another process could take it); the helper thread
/// ends with the handle, even while it sleeps in msgrcv.
fn sysv_queue_keeps_messages_queued() -> Result<(), Failed> {
    use ipckit::mq::sysv::MessageQueue;
    let key = unique_key();
    let addr: Address = format!("sysv-mq:{key}").parse()?;
    let mut owner = MessageQueue::builder(key).create()?;
    let mut q = MessageQueue::builder(key).open()?;
    let before = threads()?;
    let mut sel = Selector::new()?;
    let t = sel.register(&mut q)?;
    ensure(threads()? == before + 1, || "one helper thread".into())?;
    let mut child = spawn_send(1, 0, &addr)?;
    expect_ready(&mut sel, t, "sysv-mq")?;
    ensure(child.wait()?.success(), || "client".into())?;
    // Still queued: the other handle (standing in for any process) takes it.
    ensure(owner.status()?.messages == 1, || "not in the queue".into())?;
    ensure(owner.try_recv()? == b"m0", || "wrong message".into())?;
    // The selector now finds nothing (and re-arms the helper).
    ensure(
        sel.select(Some(Duration::from_millis(50)))?.is_empty(),
        || "ready with an empty queue".into(),
    )?;
    // The helper sleeps in msgrcv; dropping the handle stops it.
    sel.deregister(t)?;
    drop(q);
    threads_become(before)?;
    ensure(owner.status()?.messages == 0, || "queue changed".into())
}

/// Empty messages fit the helper's zero-byte msgrcv and are taken: the
/// handle's next receive returns them first, in order; one never
/// received is handed back to the queue when the handle is dropped.
fn sysv_empty_messages_are_held() -> Result<(), Failed> {
    use ipckit::mq::sysv::MessageQueue;
    let key = unique_key();
    let mut owner = MessageQueue::builder(key).create()?;
    let mut q = MessageQueue::builder(key).open()?;
    let mut sel = Selector::new()?;
    let t = sel.register(&mut q)?;
    // Another process sends "", "", "x".
    let addr = format!("sysv-mq:{key}");
    let mut child = peer_command(VAR, "sysv-empty", &addr)?.spawn()?;
    ensure(child.wait()?.success(), || "client".into())?;
    for want in [&b""[..], b"", b"x"] {
        expect_ready(&mut sel, t, "sysv-mq")?;
        let got = q.try_recv()?;
        ensure(got == want, || format!("{got:?}, wanted {want:?}"))?;
    }
    ensure(
        sel.select(Some(Duration::from_millis(50)))?.is_empty(),
        || "ready with an empty queue".into(),
    )?;
    // One more empty message, taken ahead and never received: back in the
    // queue when the handle goes.
    owner.send_type(b"", 3).map_err(io::Error::from)?;
    expect_ready(&mut sel, t, "sysv-mq held")?;
    sel.deregister(t)?;
    drop(q);
    ensure(owner.status()?.messages == 1, || {
        "the held message was lost".into()
    })?;
    let mut buf = Vec::new();
    ensure(
        owner.recv_select(&mut buf, ipckit::mq::sysv::Selector::Any)? == 3 && buf.is_empty(),
        || "wrong message back".into(),
    )
}

/// `sysv-empty:ADDR`: sends "", "" and "x" to the System V queue `ADDR`.
fn client_sysv_empty(arg: &str) -> io::Result<()> {
    let mut q = ipckit::connect(&arg.parse()?)?;
    for m in [&b""[..], b"", b"x"] {
        q.send(m).map_err(io::Error::from)?;
    }
    Ok(())
}

/// `post:named|NAME|N` or `post:set|ID|N`: posts the semaphore N times.
/// `take:NAME`: waits for the named semaphore (P), then exits.
fn client_post(arg: &str) -> io::Result<()> {
    let mut it = arg.split('|');
    let (kind, name, n) = (it.next(), it.next().expect("NAME"), it.next());
    let n: usize = n.expect("N").parse().expect("N");
    for _ in 0..n {
        match kind {
            Some("named") => ipckit::sem::NamedSemaphore::builder(name).open()?.post()?,
            Some("unnamed") => {
                let shm = ipckit::shm::Shm::builder(name).open()?;
                ipckit::sem::UnnamedSemaphore::open(&shm, 0)?.post()?
            }
            _ => ipckit::sem::SemaphoreSet::open_id(name.parse().expect("ID"))?.post(0)?,
        }
    }
    Ok(())
}

fn client_take(name: &str) -> io::Result<()> {
    let sem = ipckit::sem::NamedSemaphore::builder(name).open()?;
    if sem.wait_timeout(T)? {
        Ok(())
    } else {
        Err(io::Error::other("never got the semaphore"))
    }
}

/// P operations in a selector beside a pipe: a POSIX named semaphore, one
/// in shared memory and a System V set, each posted by another process,
/// each reported alone and exactly; the unit is taken for the waiter; one
/// taken and never claimed goes back; the helper threads end with their
/// waiters.
fn semaphores_in_a_selector() -> Result<(), Failed> {
    use ipckit::sem::{NamedSemaphore, SemOp, SemaphoreSet, UnnamedSemaphore, Waiter};
    use std::sync::Arc;
    let name = format!("/{}", unique("selsem"));
    let named = Arc::new(NamedSemaphore::builder(&name).value(0).create()?);
    let shm_name = format!("/{}", unique("selshm"));
    let shm = Arc::new(
        ipckit::shm::Shm::builder(&shm_name)
            .size(UnnamedSemaphore::SIZE)
            .create()?,
    );
    let unnamed = UnnamedSemaphore::init(&shm, 0, 0)?;
    let set = SemaphoreSet::private().values(&[0]).create()?;
    let (_tx, mut pipe) = ipckit::pipe::channel()?;
    let before = threads()?;
    let mut wn = Waiter::named(named.clone())?;
    let mut wu = Waiter::unnamed(shm.clone(), 0)?;
    let mut ws = Waiter::set(&set, &[SemOp::wait(0).undo()])?;
    let mut sel = Selector::new()?;
    let tp = sel.register(&mut pipe)?;
    let tn = sel.register(&mut wn)?;
    let tu = sel.register(&mut wu)?;
    let ts = sel.register(&mut ws)?;
    ensure(
        sel.select(Some(Duration::from_millis(50)))?.is_empty(),
        || "ready before any post".into(),
    )?;
    for (t, w, arg) in [
        (tn, &mut wn, format!("named|{name}|1")),
        (tu, &mut wu, format!("unnamed|{shm_name}|1")),
        (ts, &mut ws, format!("set|{}|1", set.id())),
    ] {
        let mut child = peer_command(VAR, "post", &arg)?.spawn()?;
        expect_ready(&mut sel, t, &arg)?;
        ensure(child.wait()?.success(), || "poster".into())?;
        ensure(w.try_take()?, || format!("{arg}: nothing to take"))?;
        ensure(!w.try_take()?, || format!("{arg}: took twice"))?;
        let ready = sel.select(Some(Duration::from_millis(50)))?;
        ensure(ready.is_empty(), || format!("{arg}: then {ready:?}"))?;
    }
    let values =
        || -> io::Result<[u32; 3]> { Ok([named.value()?, unnamed.value()?, set.get(0)? as u32]) };
    ensure(values()? == [0; 3], || "values".into())?;
    ensure(threads()? == before + 3, || "one helper each".into())?;
    // Taken by the helpers, never claimed: back when the waiters go.
    named.post()?;
    unnamed.post()?;
    set.post(0)?;
    // All become ready (level-triggered: the first stay so meanwhile).
    let end = Instant::now() + T;
    let mut got = Vec::new();
    while got != [tn, tu, ts] && Instant::now() < end {
        got = sel.select(Some(T))?;
    }
    ensure(got == [tn, tu, ts], || format!("ready {got:?}"))?;
    for t in [tp, tn, tu, ts] {
        sel.deregister(t)?;
    }
    drop((wn, wu, ws));
    threads_become(before)?;
    ensure(values()? == [1; 3], || "held units not given back".into())?;
    // A waiter only waits.
    let e = Waiter::set(&set, &[SemOp::post(0)]).unwrap_err();
    ensure(e.to_string().contains("only waits"), || e.to_string())
}

/// The helper is one more sleeper on a POSIX semaphore, not a thief of
/// wake-ups: another process sleeping on it is woken by the posts too.
fn semaphore_helper_steals_no_wakeup() -> Result<(), Failed> {
    use ipckit::sem::{NamedSemaphore, Waiter};
    use std::sync::Arc;
    let name = format!("/{}", unique("steal"));
    let sem = Arc::new(NamedSemaphore::builder(&name).value(0).create()?);
    let mut w = Waiter::named(sem.clone())?;
    let mut sel = Selector::new()?;
    let t = sel.register(&mut w)?;
    let mut other = peer_command(VAR, "take", &name)?.spawn()?;
    // Let the other process fall asleep on the semaphore too.
    std::thread::sleep(Duration::from_millis(100));
    sem.post()?;
    sem.post()?;
    ensure(other.wait()?.success(), || {
        "the other process was never woken".into()
    })?;
    expect_ready(&mut sel, t, "waiter")?;
    ensure(w.try_take()?, || "nothing for the waiter".into())?;
    sel.deregister(t)?;
    ensure(sem.value()? == 0, || "a unit too many".into())
}

/// Another process cuts a named semaphore's file short while the helper
/// sleeps on it: taking says so clearly, and dropping the waiter still
/// stops its thread (no hang, no SIGBUS).
fn semaphore_cut_short_under_the_helper() -> Result<(), Failed> {
    use ipckit::sem::{NamedSemaphore, Waiter};
    use std::sync::Arc;
    let name = format!("/{}", unique("cut"));
    let sem = Arc::new(NamedSemaphore::builder(&name).value(0).create()?);
    let before = threads()?;
    let mut w = Waiter::named(sem.clone())?;
    let mut sel = Selector::new()?;
    let t = sel.register(&mut w)?;
    std::thread::sleep(Duration::from_millis(50));
    let path = format!("/dev/shm/sem.{}", &name[1..]);
    let st = std::process::Command::new("truncate")
        .args(["-s", "0", &path])
        .status()?;
    ensure(st.success(), || "truncate failed".into())?;
    let e = w.try_take().unwrap_err();
    ensure(
        e.to_string().contains("truncated") || e.to_string().contains("cut"),
        || e.to_string(),
    )?;
    sel.deregister(t)?;
    drop(w);
    threads_become(before)
}

/// A sending end cannot be selected on, and says so.
fn sending_end_is_clear() -> Result<(), Failed> {
    let q: Address = format!("mq:/{}", unique("snd")).parse()?;
    let l = listen(&q)?;
    let mut tx = ipckit::connect(&q)?;
    let e = Selector::new()?.register(&mut tx).unwrap_err();
    ensure(e.to_string().contains("only sends"), || e.to_string())?;
    drop(l);
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("send", client_send),
                    ("sysv-empty", client_sysv_empty),
                    ("post", client_post),
                    ("take", client_take),
                ],
            )
        })],
        "select",
        Duration::from_secs(120),
    );
    common::start_broker().expect("a mailbox broker for the registry's mailbox: entry");
    common::run_cases(vec![
        ("every_kind", every_kind),
        ("read_ahead_keeps_ready", read_ahead_keeps_ready),
        ("signalled_kinds_are_exact", signalled_kinds_are_exact),
        (
            "sysv_queue_keeps_messages_queued",
            sysv_queue_keeps_messages_queued,
        ),
        ("sysv_empty_messages_are_held", sysv_empty_messages_are_held),
        ("semaphores_in_a_selector", semaphores_in_a_selector),
        (
            "semaphore_helper_steals_no_wakeup",
            semaphore_helper_steals_no_wakeup,
        ),
        (
            "semaphore_cut_short_under_the_helper",
            semaphore_cut_short_under_the_helper,
        ),
        ("sending_end_is_clear", sending_end_is_clear),
    ]);
}
