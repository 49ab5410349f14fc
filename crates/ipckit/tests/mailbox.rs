//! Mailboxes between real processes: a broker process, producer and
//! consumer processes. Exactly-once through a receiver group with ids
//! (clients on shared-memory lanes, and on the socket alone); a client
//! that breaks its lanes is cut off alone; a selector wakes for what comes
//! through lanes;
//! messages a SIGKILLed consumer held go to another; dead letters after
//! max-deliver; each when-full policy; another user refused; a broker
//! killed with SIGKILL is seen by its clients and replaced on restart; a
//! broker with a store killed with SIGKILL mid-stream loses nothing it
//! confirmed.
//!
//! This test binary re-executed with `IPCKIT_MAILBOX_PEER=<role>:<arg>`
//! plays the broker, a producer or a consumer.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ipckit::mailbox::{
    AckPolicy, Broker, Client, Config, ErrorKind, Message, Outcome, Retention, SubscribeOptions,
    WhenFull,
};
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, T};

const VAR: &str = "IPCKIT_MAILBOX_PEER";

/// Producers × messages each in the exactly-once test (the 4 ×
/// 100k; `IPCKIT_MAILBOX_N` overrides for a quick run).
fn per_producer() -> usize {
    std::env::var("IPCKIT_MAILBOX_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn split<const N: usize>(arg: &str) -> [&str; N] {
    let v: Vec<&str> = arg.splitn(N, '|').collect();
    v.try_into().expect("the role's fields")
}

/// `broker:PATH`: runs a broker until killed.
fn role_broker(arg: &str) -> io::Result<()> {
    Broker::builder().socket(arg).bind()?.run()
}

/// `broker_no_lanes:PATH`: a broker that keeps clients on their sockets.
fn role_broker_no_lanes(arg: &str) -> io::Result<()> {
    Broker::builder().socket(arg).lanes(false).bind()?.run()
}

/// `durable_broker:PATH|STORE`: runs a broker with a store until killed.
fn role_durable_broker(arg: &str) -> io::Result<()> {
    let [path, store] = split(arg);
    Broker::builder().socket(path).store(store).bind()?.run()
}

/// Connects, retrying while the broker restarts.
fn connect_retry(path: &str) -> io::Result<Client> {
    let end = Instant::now() + T;
    loop {
        match Client::connect_to(path) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > end => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// `produce_retry:PATH|MAILBOX|P|N`: sends `N` messages "P-i" with ids
/// "P-i" in batches, printing each id once its send is confirmed; when
/// the broker goes, reconnects and sends again what was not confirmed.
fn role_produce_retry(arg: &str) -> io::Result<()> {
    let [path, mailbox, p, n] = split(arg);
    let n: usize = n.parse().expect("N");
    let mut out = io::stdout().lock();
    let mut c = connect_retry(path)?;
    let mut left: Vec<String> = (0..n).map(|i| format!("{p}-{i}")).collect();
    left.reverse();
    while !left.is_empty() {
        let batch: Vec<String> = left.iter().rev().take(200).cloned().collect();
        let msgs: Vec<Message<'_>> = batch
            .iter()
            .map(|id| Message::new(id.as_bytes()).with_id(id))
            .collect();
        let mut lost = false;
        for (id, r) in batch.iter().zip(c.send_batch(mailbox, &msgs)) {
            match r {
                Ok(_) if !lost => {
                    writeln!(out, "{id}")?;
                    left.pop();
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Disconnected => lost = true,
                Err(e) => return Err(e.into()),
            }
        }
        out.flush()?;
        if lost {
            c = connect_retry(path)?;
        }
    }
    Ok(())
}

/// `consume_retry:PATH|MAILBOX`: prints every message it gets and its
/// sequence number, one per line, reconnecting when the broker goes,
/// until killed.
fn role_consume_retry(arg: &str) -> io::Result<()> {
    let [path, mailbox] = split(arg);
    let mut out = io::stdout().lock();
    let mut first = true;
    loop {
        let mut c = connect_retry(path)?;
        c.subscribe(mailbox, &SubscribeOptions::default())?;
        if std::mem::take(&mut first) {
            writeln!(out, "subscribed")?;
            out.flush()?;
        }
        loop {
            match c.recv() {
                Ok(d) => {
                    out.write_all(&d.payload)?;
                    writeln!(out, " {}", d.seq)?;
                    out.flush()?;
                }
                Err(e) if e.kind() == ErrorKind::Disconnected => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `produce:PATH|MAILBOX|P|N`: sends `N` messages "P i" with ids "P-i",
/// in batches.
fn role_produce(arg: &str) -> io::Result<()> {
    let [path, mailbox, p, n] = split(arg);
    let n: usize = n.parse().expect("N");
    let mut c = Client::connect_to(path)?;
    let texts: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{p} {i}"), format!("{p}-{i}")))
        .collect();
    for chunk in texts.chunks(500) {
        let msgs: Vec<Message<'_>> = chunk
            .iter()
            .map(|(t, id)| Message::new(t.as_bytes()).with_id(id))
            .collect();
        for r in c.send_batch(mailbox, &msgs) {
            r?;
        }
    }
    Ok(())
}

/// `consume:PATH|MAILBOX|GROUP`: prints every message it gets, one per
/// line, until the mailbox is removed; acknowledges each when it asks for
/// the next.
fn role_consume(arg: &str) -> io::Result<()> {
    let [path, mailbox, group] = split(arg);
    let mut c = Client::connect_to(path)?;
    let opts = SubscribeOptions {
        group: (!group.is_empty()).then(|| group.to_string()),
        ..SubscribeOptions::default()
    };
    c.subscribe(mailbox, &opts)?;
    let out = io::stdout();
    let mut out = io::BufWriter::new(out.lock());
    writeln!(out, "subscribed")?;
    out.flush()?;
    loop {
        match c.recv() {
            Ok(d) => {
                out.write_all(&d.payload)?;
                writeln!(out, " {}", d.deliveries)?;
            }
            Err(e) if e.kind() == ErrorKind::Disconnected => break,
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()
}

/// `hold:PATH|MAILBOX|N`: takes `N` messages without acknowledging them,
/// says so, and waits to be killed.
fn role_hold(arg: &str) -> io::Result<()> {
    let [path, mailbox, n] = split(arg);
    let mut c = Client::connect_to(path)?;
    let opts = SubscribeOptions {
        ack: AckPolicy::Explicit,
        max_in_flight: 1000,
        ..SubscribeOptions::default()
    };
    c.subscribe(mailbox, &opts)?;
    for _ in 0..n.parse::<usize>().expect("N") {
        c.recv_timeout(T)?;
    }
    println!("holding");
    std::thread::sleep(T * 3);
    Ok(())
}

/// `send:PATH|MAILBOX|TEXT|TIMEOUT_MS`: one send; prints the outcome or
/// the error's kind.
fn role_send(arg: &str) -> io::Result<()> {
    let [path, mailbox, text, ms] = split(arg);
    let mut c = Client::connect_to(path)?;
    let deadline = match ms {
        "never" => ipckit::Deadline::Never,
        ms => ipckit::Deadline::after(Duration::from_millis(ms.parse().expect("MS"))),
    };
    match c.send_message(mailbox, Message::new(text.as_bytes()), deadline) {
        Ok(r) => println!("{:?}", r.outcome),
        Err(e) => println!("{:?}: {e}", e.kind()),
    }
    Ok(())
}

/// `send_slowly:PATH|MAILBOX|N`: sends `0`..`N` to MAILBOX, 20 ms apart.
fn role_send_slowly(arg: &str) -> io::Result<()> {
    let [path, mailbox, n] = split(arg);
    let mut c = Client::connect_to(path)?;
    for i in 0..n.parse::<u32>().expect("N") {
        std::thread::sleep(Duration::from_millis(20));
        c.send(mailbox, i.to_string().as_bytes())?;
    }
    Ok(())
}

const ROLES: &[(&str, common::Role)] = &[
    ("broker", role_broker),
    ("broker_no_lanes", role_broker_no_lanes),
    ("send_slowly", role_send_slowly),
    ("durable_broker", role_durable_broker),
    ("produce_retry", role_produce_retry),
    ("consume_retry", role_consume_retry),
    ("produce", role_produce),
    ("consume", role_consume),
    ("hold", role_hold),
    ("send", role_send),
];

fn peer(arg: &str) -> io::Result<()> {
    common::by_role(arg, ROLES)
}

/// A broker process on a socket in its own directory; killed on drop.
struct BrokerProc {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerProc {
    fn start() -> Result<BrokerProc, Failed> {
        BrokerProc::start_as("broker")
    }

    /// A broker played by `role` (`broker`, `broker_no_lanes`).
    fn start_as(role: &str) -> Result<BrokerProc, Failed> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker.sock");
        let child = spawn_broker_as(role, &path.display().to_string(), &path)?;
        Ok(BrokerProc {
            child,
            path,
            _dir: dir,
        })
    }

    fn arg(&self, rest: &str) -> String {
        format!("{}|{rest}", self.path.display())
    }

    fn client(&self) -> Result<Client, Failed> {
        Ok(Client::connect_to(&self.path)?)
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(path: &Path) -> Result<Child, Failed> {
    spawn_broker_as("broker", &path.display().to_string(), path)
}

fn spawn_broker_as(role: &str, arg: &str, path: &Path) -> Result<Child, Failed> {
    let child = peer_command(VAR, role, arg)?.spawn()?;
    let end = Instant::now() + T;
    while Client::connect_to(path).is_err() {
        if Instant::now() > end {
            return Err("the broker did not start".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

fn spawn(role: &str, arg: &str) -> Result<Child, Failed> {
    Ok(peer_command(VAR, role, arg)?
        .stdout(Stdio::piped())
        .spawn()?)
}

fn wait_exit(child: &mut Child) -> Result<std::process::ExitStatus, Failed> {
    let end = Instant::now() + T * 6;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            return Err("a peer did not exit in time".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `f` holds of the mailbox's state.
fn until_stat(
    c: &mut Client,
    name: &str,
    f: impl Fn(&ipckit::mailbox::MailboxInfo) -> bool,
) -> Result<(), Failed> {
    let end = Instant::now() + T * 6;
    loop {
        let s = c.stat(Some(name))?;
        if s.first().is_some_and(&f) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("mailbox {name} never reached the state wanted: {s:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 4 producers × N messages with ids through one mailbox to a group of 3
/// consumers: every message arrives once, none twice. The clients on
/// shared-memory lanes (the default), or on their sockets alone.
fn exactly_once_through_a_group(broker: &str) -> Result<(), Failed> {
    let b = BrokerProc::start_as(broker)?;
    let mut admin = b.client()?;
    let config = Config {
        retention: Retention::Interest,
        ..Config::default()
    };
    admin.create("orders", &config)?;
    let mut consumers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = spawn("consume", &b.arg("orders|workers"))?;
        ensure(common::first_line(&mut c)? == "subscribed", || {
            "consumer did not subscribe".into()
        })?;
        // Read as it prints, so a full pipe never stops it.
        let out = c.stdout.take().ok_or("no stdout")?;
        readers.push(std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .collect::<io::Result<Vec<String>>>()
        }));
        consumers.push(Guard(c));
    }
    let n = per_producer();
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..4 {
        producers.push(Guard(spawn("produce", &b.arg(&format!("orders|{p}|{n}")))?));
    }
    for p in &mut producers {
        ensure(wait_exit(&mut p.0)?.success(), || {
            "a producer failed".into()
        })?;
    }
    until_stat(&mut admin, "orders", |m| m.depth == 0 && m.in_flight == 0)?;
    let took = started.elapsed();
    admin.delete("orders")?;
    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    let mut per_consumer = Vec::new();
    let mut redelivered = 0;
    for (c, reader) in consumers.iter_mut().zip(readers) {
        ensure(wait_exit(&mut c.0)?.success(), || {
            "a consumer failed".into()
        })?;
        let lines = reader.join().map_err(|_| "a reader thread panicked")??;
        let mut k = 0;
        for line in lines {
            let mut w = line.split(' ');
            let (p, i, d) = (w.next(), w.next(), w.next());
            let key = (
                p.and_then(|p| p.parse().ok()).ok_or("bad line")?,
                i.and_then(|i| i.parse().ok()).ok_or("bad line")?,
            );
            if d != Some("1") {
                redelivered += 1;
            }
            *seen.entry(key).or_default() += 1;
            k += 1;
        }
        per_consumer.push(k);
    }
    let dup = seen.values().filter(|&&v| v > 1).count();
    let total = 4 * n;
    ensure(seen.len() == total && dup == 0, || {
        format!("{} distinct of {total}, {dup} duplicated", seen.len())
    })?;
    ensure(redelivered == 0, || format!("{redelivered} redelivered"))?;
    ensure(per_consumer.iter().all(|&k| k > 0), || {
        format!("a consumer got nothing: {per_consumer:?}")
    })?;
    eprintln!(
        "  {total} messages, 4 producers → 3 consumers {per_consumer:?} in {took:?} ({:.0}/s)",
        total as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// How many mappings of shared-memory lanes this process has.
fn lanes_mapped() -> Result<usize, Failed> {
    Ok(std::fs::read_to_string("/proc/self/maps")?
        .matches("memfd:ipckit-lanes")
        .count())
}

/// A client that writes an impossible position into its lanes, or bytes
/// that are no frame, is cut off (its socket ends) and nothing else
/// changes: the broker's memfd cannot be resized by it, and an honest
/// client, on lanes, goes on. The hostile client speaks the wire by hand:
/// the broker's frames are length-prefixed messages, as ipckit's stream
/// socket frames them.
fn hostile_lanes_client() -> Result<(), Failed> {
    use ipckit::shm::Memfd;
    use ipckit::socket::unix::{UnixAddr, UnixStream};
    use ipckit::{MessageReceiver, MessageSenderExt, RecvTimeoutError};
    use std::sync::atomic::Ordering;
    let b = BrokerProc::start()?;
    let before = lanes_mapped()?;
    let mut honest = b.client()?;
    ensure(lanes_mapped()? == before + 1, || {
        "the client did not map lanes".into()
    })?;
    honest.create("q", &Config::default())?;
    honest.subscribe("q", &SubscribeOptions::default())?;
    // Lane 0 (client to broker): its tail at 128, its bytes from 4096;
    // lane 1's tail at 384, its bytes after lane 0's.
    for attack in ["impossible position", "no frame"] {
        let mut s = UnixStream::connect(&UnixAddr::path(&b.path))?;
        // HELLO, version 1, flags 2: lanes wanted.
        s.send(&[0x01u8, 1, 0, 2][..]).map_err(|e| e.to_string())?;
        let mut welcome = Vec::new();
        let fds = s.recv_with_fds(&mut welcome)?;
        ensure(welcome.first() == Some(&0x81) && fds.len() == 1, || {
            format!("welcome {welcome:?} with {} descriptors", fds.len())
        })?;
        let fd = fds.into_iter().next().ok_or("no memfd")?;
        let f = std::fs::File::from(fd.try_clone()?);
        ensure(f.set_len(0).is_err() && f.set_len(1 << 30).is_err(), || {
            "the lanes' memfd could be resized".into()
        })?;
        let mem = Memfd::from_fd(fd, false)?;
        let r = mem.region();
        let mut cap = [0u8; 4];
        r.read(12, &mut cap)?;
        let cap = u32::from_le_bytes(cap) as usize;
        if attack == "impossible position" {
            r.atomic_u64(128)?.store(cap as u64 + 1, Ordering::Release);
        } else {
            r.write(4096, &[4, 0, 0, 0, 0xee, 0, 0, 0])?;
            r.atomic_u64(128)?.store(8, Ordering::Release);
        }
        // Any byte on the socket wakes a sleeping broker.
        s.send(&[0u8][..]).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        match s.recv_timeout_into(&mut buf, T) {
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("{attack}: the broker did not cut the client off").into())
            }
            Err(_) => {}
            Ok(()) => return Err(format!("{attack}: the broker answered {buf:?}").into()),
        }
        if attack == "no frame" {
            // Told why, through the lanes, before the end.
            let tail = r.atomic_u64(384)?.load(Ordering::Acquire) as usize;
            let mut said = vec![0u8; tail.min(cap)];
            r.read(4096 + cap, &mut said)?;
            let said = String::from_utf8_lossy(&said);
            ensure(said.contains("unknown request opcode 0xee"), || {
                format!("the broker said {said:?}")
            })?;
        }
    }
    honest.send("q", b"still here")?;
    let d = honest.recv_timeout(T)?;
    ensure(d.payload == b"still here", || format!("{d:?}"))
}

/// A selector waiting on a mailbox receiver on lanes wakes for each
/// message a peer process sends (20 ms apart, so the receiver sleeps in
/// between), and for messages that came while it was not waiting.
fn selector_wakes_for_lanes() -> Result<(), Failed> {
    use ipckit::mailbox::MailboxReceiver;
    use ipckit::select::Selector;
    use ipckit::MessageReceiver;
    let b = BrokerProc::start()?;
    let mut admin = b.client()?;
    admin.create("sel", &Config::default())?;
    let mut rx = MailboxReceiver::new(b.client()?, "sel", &SubscribeOptions::default())?;
    let mut sel = Selector::new()?;
    sel.register(&mut rx)?;
    let mut peer = Guard(spawn("send_slowly", &b.arg("sel|5"))?);
    let mut got = Vec::new();
    while got.len() < 5 {
        let ready = sel.select(Some(T))?;
        ensure(!ready.is_empty(), || format!("no wake-up after {got:?}"))?;
        // One message per wake-up: any other must wake the next select.
        match rx.try_recv() {
            Ok(m) => got.push(String::from_utf8(m)?),
            Err(ipckit::TryRecvError::Empty) => {}
            Err(e) => return Err(e.to_string().into()),
        }
    }
    ensure(got == ["0", "1", "2", "3", "4"], || format!("{got:?}"))?;
    ensure(wait_exit(&mut peer.0)?.success(), || {
        "the sender failed".into()
    })?;
    // Three sent while nobody waits: the selector sees them at once.
    admin.send("sel", b"a")?;
    admin.send("sel", b"b")?;
    admin.send("sel", b"c")?;
    for want in ["a", "b", "c"] {
        ensure(!sel.select(Some(T))?.is_empty(), || {
            format!("no wake-up for {want}")
        })?;
        let m = rx.recv_timeout(T)?;
        ensure(m == want.as_bytes(), || format!("{m:?} for {want}"))?;
    }
    Ok(())
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A consumer killed with SIGKILL while holding unacknowledged messages:
/// another consumer gets them, marked as a second delivery.
fn killed_consumers_messages_go_to_another() -> Result<(), Failed> {
    let b = BrokerProc::start()?;
    let mut c = b.client()?;
    let mut holder = Guard(spawn("hold", &b.arg("jobs|5"))?);
    for i in 0..5 {
        c.send("jobs", format!("job {i}").as_bytes())?;
    }
    ensure(common::first_line(&mut holder.0)? == "holding", || {
        "the holder did not hold".into()
    })?;
    until_stat(&mut c, "jobs", |m| m.in_flight == 5)?;
    let mut rx = b.client()?;
    rx.subscribe("jobs", &SubscribeOptions::default())?;
    ensure(rx.recv_timeout(Duration::from_millis(200)).is_err(), || {
        "a held message went to the second consumer while the first lived".into()
    })?;
    holder.0.kill()?;
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = rx.recv_timeout(T)?;
        ensure(d.deliveries == 2, || format!("deliveries {}", d.deliveries))?;
        got.push(String::from_utf8(d.payload)?);
    }
    got.sort();
    ensure(got == ["job 0", "job 1", "job 2", "job 3", "job 4"], || {
        format!("{got:?}")
    })
}

/// A message nacked up to max-deliver lands in dead.NAME with the reason;
/// a rejected one at once.
fn dead_letters_with_reason() -> Result<(), Failed> {
    let b = BrokerProc::start()?;
    let mut c = b.client()?;
    let config = Config {
        max_deliver: Some(3),
        ..Config::default()
    };
    c.create("pay", &config)?;
    c.send("pay", b"poison")?;
    c.send("pay", b"refused")?;
    let mut rx = b.client()?;
    rx.subscribe(
        "pay",
        &SubscribeOptions {
            ack: AckPolicy::Explicit,
            ..SubscribeOptions::default()
        },
    )?;
    let mut dead = b.client()?;
    dead.subscribe("dead.pay", &SubscribeOptions::default())?;
    let mut nacks = 0;
    loop {
        let d = rx.recv_timeout(T)?;
        if d.payload == b"refused" {
            rx.reject(&d, "card number is malformed")?;
        } else {
            nacks += 1;
            rx.nack(&d, None)?;
        }
        if nacks == 3 {
            break;
        }
    }
    let mut reasons = HashMap::new();
    for _ in 0..2 {
        let d = dead.recv_timeout(T)?;
        reasons.insert(
            String::from_utf8(d.payload)?,
            d.dead_reason.unwrap_or_default(),
        );
    }
    ensure(
        reasons["poison"].contains("negatively acknowledged after each of 3 deliveries"),
        || format!("{reasons:?}"),
    )?;
    ensure(
        reasons["refused"].contains("card number is malformed"),
        || format!("{reasons:?}"),
    )?;
    let s = c.stat(Some("pay"))?;
    ensure(s[0].depth == 0 && s[0].dead_letters == 2, || {
        format!("{s:?}")
    })
}

/// Each when-full policy, with the sender a process of its own.
fn when_full_policies() -> Result<(), Failed> {
    let b = BrokerProc::start()?;
    let mut c = b.client()?;
    for (name, when_full) in [
        ("blk", WhenFull::Block),
        ("fail", WhenFull::Fail),
        ("drop", WhenFull::DropOldest),
    ] {
        let config = Config {
            max_msgs: Some(2),
            when_full,
            ..Config::default()
        };
        c.create(name, &config)?;
        c.send(name, b"1")?;
        c.send(name, b"2")?;
    }
    let said = |arg: &str| -> Result<String, Failed> {
        let mut p = Guard(spawn("send", &b.arg(arg))?);
        let line = common::first_line(&mut p.0)?;
        wait_exit(&mut p.0)?;
        Ok(line)
    };
    let fail = said("fail|3|never")?;
    ensure(fail.starts_with("Full: mailbox fail is full"), || {
        fail.clone()
    })?;
    let timeout = said("blk|3|300")?;
    ensure(timeout.starts_with("Timeout:"), || timeout.clone())?;
    ensure(said("drop|3|never")? == "Stored", || "drop-oldest".into())?;
    // A blocked sender goes on once a receiver makes room.
    let mut blocked = Guard(spawn("send", &b.arg("blk|3|never"))?);
    until_stat(&mut c, "blk", |m| m.blocked_senders == 1)?;
    let mut rx = b.client()?;
    rx.subscribe("blk", &SubscribeOptions::default())?;
    ensure(rx.recv_timeout(T)?.payload == b"1", || "first".into())?;
    rx.flush()?;
    let line = common::first_line(&mut blocked.0)?;
    ensure(line == "Stored", || line.clone())?;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(rx.recv_timeout(T)?.payload);
    }
    ensure(got == [b"2".to_vec(), b"3".to_vec()], || format!("{got:?}"))?;
    let mut drx = b.client()?;
    drx.subscribe("drop", &SubscribeOptions::default())?;
    let first = drx.recv_timeout(T)?.payload;
    ensure(first == b"2", || "drop-oldest kept the oldest".into())
}

/// Another user may not send to or receive from a 0600 mailbox, may with
/// 0666, and may not remove it; its messages carry its own uid.
fn another_user_is_refused() -> Result<(), Failed> {
    if common::my_uid() != 0 {
        eprintln!("  skipped: needs root to run a peer as another user");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755))?;
    let path = dir.path().join("broker.sock");
    let _broker = Guard(spawn_broker(&path)?);
    let mut c = Client::connect_to(&path)?;
    c.create("private", &Config::default())?;
    c.create(
        "open",
        &Config {
            mode: 0o666,
            ..Config::default()
        },
    )?;
    let mut rx = Client::connect_to(&path)?;
    rx.subscribe("open", &SubscribeOptions::default())?;
    let exe_dir = tempfile::tempdir()?;
    let run = |arg: &str| -> Result<String, Failed> {
        let mut cmd = common::other_user_cmd(&exe_dir)?;
        let out = cmd
            .env(VAR, format!("send:{}|{arg}", path.display()))
            .stderr(Stdio::inherit())
            .output()?;
        Ok(String::from_utf8(out.stdout)?.trim_end().to_string())
    };
    let denied = run("private|x|never")?;
    ensure(
        denied.starts_with("Denied: uid 65534 may not send to mailbox private"),
        || denied.clone(),
    )?;
    let ok = run("open|from nobody|never")?;
    ensure(ok == "Stored", || ok.clone())?;
    let d = rx.recv_timeout(T)?;
    ensure(d.sender.uid == 65534 && d.payload == b"from nobody", || {
        format!("{d:?}")
    })?;
    let inbox = run(&format!("{}|x|never", ipckit::mailbox::inbox(c.me().pid)))?;
    ensure(inbox.starts_with("Denied"), || inbox.clone())?;
    Ok(())
}

/// A broker killed with SIGKILL: its clients see it gone at once; a new
/// broker replaces the stale socket file; the client library says what to
/// do when none runs.
fn broker_killed_and_restarted() -> Result<(), Failed> {
    let mut b = BrokerProc::start()?;
    let mut rx = b.client()?;
    rx.subscribe("q", &SubscribeOptions::default())?;
    b.child.kill()?;
    b.child.wait()?;
    let e = rx.recv_timeout(T).unwrap_err();
    ensure(e.kind() == ErrorKind::Disconnected, || format!("{e:?}"))?;
    let e = Client::connect_to(&b.path).unwrap_err();
    ensure(
        e.kind() == ErrorKind::NotRunning && e.to_string().contains("start one with `ipc broker`"),
        || e.to_string(),
    )?;
    b.child = spawn_broker(&b.path)?;
    let mut c = b.client()?;
    ensure(c.send("q", b"again")?.outcome == Outcome::Stored, || {
        "send".into()
    })
}

/// Collects a child's stdout lines on a thread.
fn collect_lines(
    child: &mut Child,
) -> Result<std::sync::Arc<std::sync::Mutex<Vec<String>>>, Failed> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let to = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            to.lock().expect("lines").push(line);
        }
    });
    Ok(lines)
}

/// A broker with a store, killed with SIGKILL while 2 producers send to a
/// durable mailbox and a consumer receives, then restarted on the same
/// store: every send confirmed to a producer (each resends what was not
/// confirmed, with the same id) reaches the consumer, and no id twice in
/// the mailbox (deduplication holds across the restart); the consumer
/// sees again at most what it held unacknowledged when the broker died.
fn durable_mailbox_survives_sigkill() -> Result<(), Failed> {
    let n = (per_producer() / 5).max(1000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broker.sock");
    let arg = format!("{}|{}", path.display(), dir.path().join("store").display());
    let mut broker = Guard(spawn_broker_as("durable_broker", &arg, &path)?);
    let mut admin = Client::connect_to(&path)?;
    let durable = Config {
        durable: true,
        ..Config::default()
    };
    admin.create("orders", &durable)?;
    drop(admin);
    let q = format!("{}|orders", path.display());
    let mut consumer = Guard(spawn("consume_retry", &q)?);
    ensure(common::first_line(&mut consumer.0)? == "subscribed", || {
        "consumer".into()
    })?;
    let got = collect_lines(&mut consumer.0)?;
    let mut producers = Vec::new();
    let mut confirmed = Vec::new();
    for p in ["a", "b"] {
        let mut g = Guard(spawn("produce_retry", &format!("{q}|{p}|{n}"))?);
        confirmed.push(collect_lines(&mut g.0)?);
        producers.push(g);
    }
    // Mid-stream: some confirmed, not all.
    let end = Instant::now() + T;
    while confirmed
        .iter()
        .map(|c| c.lock().unwrap().len())
        .sum::<usize>()
        < n / 2
    {
        ensure(Instant::now() < end, || {
            "the producers made no progress".into()
        })?;
        std::thread::sleep(Duration::from_millis(1));
    }
    broker.0.kill()?;
    broker.0.wait()?;
    let at_kill: usize = confirmed.iter().map(|c| c.lock().unwrap().len()).sum();
    broker.0 = spawn_broker_as("durable_broker", &arg, &path)?;
    for p in &mut producers {
        ensure(wait_exit(&mut p.0)?.success(), || {
            "a producer failed".into()
        })?;
    }
    let want: Vec<String> = confirmed
        .iter()
        .flat_map(|c| c.lock().unwrap().clone())
        .collect();
    ensure(want.len() == 2 * n, || {
        format!("{} of {} confirmed", want.len(), 2 * n)
    })?;
    let end = Instant::now() + T * 3;
    loop {
        let seen: std::collections::HashSet<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| Some(l.split_once(' ')?.0.to_string()))
            .collect();
        let missing = want.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        ensure(Instant::now() < end, || {
            format!("{missing} confirmed messages never arrived ({at_kill} confirmed at the kill)")
        })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = got.lock().unwrap().clone();
    // id → (deliveries, sequence numbers).
    let mut counts: HashMap<&str, (usize, Vec<&str>)> = HashMap::new();
    for g in &got {
        let (id, seq) = g.split_once(' ').ok_or("a line without a seq")?;
        let e = counts.entry(id).or_default();
        e.0 += 1;
        if !e.1.contains(&seq) {
            e.1.push(seq);
        }
    }
    // A second delivery is of the same stored message, never a second
    // copy: the retried send was recognised by its id.
    let stored_twice: Vec<_> = counts.iter().filter(|(_, c)| c.1.len() > 1).collect();
    ensure(stored_twice.is_empty(), || {
        format!("stored twice: {stored_twice:?}")
    })?;
    let twice = counts.values().filter(|c| c.0 > 1).count();
    ensure(counts.values().all(|c| c.0 <= 2), || {
        "a message arrived three times".into()
    })?;
    // Redelivered: at most what the consumer held unacknowledged (its
    // default window) when the broker died.
    ensure(twice <= 256, || format!("{twice} messages arrived twice"))?;
    // The mailbox holds nothing more: every id stored once.
    let mut c = Client::connect_to(&path)?;
    until_stat(&mut c, "orders", |m| m.depth == 0 && m.in_flight == 0)?;
    eprintln!(
        "  {} confirmed ({at_kill} before the SIGKILL), all received; {twice} delivered twice",
        want.len()
    );
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(&[(VAR, peer)], "mailbox", Duration::from_secs(600));
    common::run_cases(vec![
        ("exactly_once_through_a_group", || {
            exactly_once_through_a_group("broker")
        }),
        ("exactly_once_on_sockets_alone", || {
            exactly_once_through_a_group("broker_no_lanes")
        }),
        (
            "hostile_lanes_client_is_cut_off_alone",
            hostile_lanes_client,
        ),
        ("selector_wakes_for_lanes", selector_wakes_for_lanes),
        (
            "killed_consumers_messages_go_to_another",
            killed_consumers_messages_go_to_another,
        ),
        ("dead_letters_with_reason", dead_letters_with_reason),
        ("when_full_policies", when_full_policies),
        ("another_user_is_refused", another_user_is_refused),
        ("broker_killed_and_restarted", broker_killed_and_restarted),
        (
            "durable_mailbox_survives_sigkill",
            durable_mailbox_survives_sigkill,
        ),
    ]);
}
