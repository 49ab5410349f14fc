//! `ipc broker --nats URL --bridge 'SUBJECTS'`: two brokers, each in a
//! network namespace of its own (two hosts, as far as the network goes),
//! exchange messages through one nats-server.
//!
//! Needs `nats-server` (Debian's package; `.ci/run` installs it) and, for
//! the namespaces, root and `ip` (iproute2); without those the brokers
//! share the machine's network and the test says so.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipckit::mailbox::{AckPolicy, Client, Message, Outcome, SubscribeOptions};

mod common;
use common::*;

/// How long messages get to cross.
const CROSS: Duration = Duration::from_secs(60);

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A nats-server with JetStream on all addresses; killed on drop.
struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Option<Nats> {
        if !have("nats-server") {
            eprintln!(
                "SKIPPED: nats-server is not installed (apt-get install nats-server; .ci/run does)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("nats-server")
            .args(["-a", "0.0.0.0", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        wait_for(
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "nats-server",
        );
        Some(Nats {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two network namespaces, each joined to this one by a veth pair: the
/// brokers' two hosts. Removed on drop.
struct Hosts {
    /// Namespace names (none: both brokers on this host's network).
    ns: Option<[String; 2]>,
    /// This namespace's ends of the veth pairs.
    links: Vec<String>,
    /// The address each host reaches nats-server at.
    nats_ip: [String; 2],
}

impl Hosts {
    fn make() -> Hosts {
        if !(is_root() && have("ip")) {
            eprintln!(
                "NOTE: not root or no `ip`: both brokers use this host's network \
                 (still two processes, two sockets, two stores)"
            );
            return Hosts {
                ns: None,
                links: Vec::new(),
                nats_ip: ["127.0.0.1".into(), "127.0.0.1".into()],
            };
        }
        // Unique per test: several run at once in one process.
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 5000) * 10 + n % 10;
        let subnet = 16 + (std::process::id() * 7 + n) % 200;
        // Made before what it names, so that a failure halfway still
        // removes what was made.
        let mut hosts = Hosts {
            ns: Some([format!("ipckit-{id}-a"), format!("ipckit-{id}-b")]),
            links: Vec::new(),
            nats_ip: [format!("10.{subnet}.1.1"), format!("10.{subnet}.2.1")],
        };
        let ok = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for (k, side) in ["a", "b"].iter().enumerate() {
            let ns = hosts.ns.as_ref().expect("namespaces")[k].clone();
            let (host_if, ns_if) = (format!("ipk{id}{side}"), format!("ipk{id}{side}n"));
            let host_ip = hosts.nats_ip[k].clone();
            let ns_ip = format!("10.{subnet}.{}.2", k + 1);
            ok(&["netns", "add", &ns]);
            ok(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]);
            hosts.links.push(host_if.clone());
            ok(&["link", "set", &ns_if, "netns", &ns]);
            ok(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
            ok(&["link", "set", &host_if, "up"]);
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ok(&all);
            };
            in_ns(&["addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if]);
            in_ns(&["link", "set", &ns_if, "up"]);
            in_ns(&["link", "set", "lo", "up"]);
        }
        // Each sees nats-server, not the other's address.
        let other = format!("10.{subnet}.2.2");
        let mut probe = hosts.cmd(0, "ping");
        let seen = probe
            .args(["-c", "1", "-W", "1", &other])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(!seen, "host a reaches host b directly");
        hosts
    }

    /// `program` to run on host `k`.
    fn cmd(&self, k: usize, program: &str) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns[k], program]);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", l])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(ns) = &self.ns {
            for n in ns {
                let _ = Command::new("ip")
                    .args(["netns", "del", n])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// An `ipc broker` on host `k` bridging `subjects` through nats-server.
struct Broker {
    child: Child,
    sock: PathBuf,
    args: Vec<String>,
    host: usize,
}

impl Broker {
    fn start(hosts: &Hosts, k: usize, nats: &Nats, dir: &Path, subjects: &str) -> Broker {
        let sock = dir.join(format!("broker{k}.sock"));
        let store = dir.join(format!("store{k}"));
        let args = vec![
            "broker".to_string(),
            "-q".into(),
            "--socket".into(),
            sock.to_str().expect("utf-8").into(),
            "--store".into(),
            store.to_str().expect("utf-8").into(),
            "--nats".into(),
            format!("nats://{}:{}", hosts.nats_ip[k], nats.port),
            "--bridge".into(),
            subjects.into(),
        ];
        Broker {
            child: Self::spawn(hosts, k, &args, &sock),
            sock,
            args,
            host: k,
        }
    }

    fn spawn(hosts: &Hosts, k: usize, args: &[String], sock: &Path) -> Child {
        let child = hosts
            .cmd(k, env!("CARGO_BIN_EXE_ipc"))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ipc broker");
        wait_for(
            || std::os::unix::net::UnixStream::connect(sock).is_ok(),
            "the broker's socket",
        );
        child
    }

    fn kill_and_restart(&mut self, hosts: &Hosts) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
        self.child = Self::spawn(hosts, self.host, &self.args, &self.sock);
    }

    fn ipc(&self, args: &[&str]) -> Command {
        let mut c = ipc();
        c.env("IPCKIT_BROKER", &self.sock).args(args);
        c
    }

    fn ok(&self, args: &[&str]) {
        let out = run(&mut self.ipc(args));
        assert!(out.status.success(), "ipc {args:?}: {}", stderr(&out));
    }

    fn client(&self) -> Client {
        Client::connect_to(&self.sock).expect("connect")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A durable work queue on both brokers: 3000 messages sent with ids on
/// host a, received on host b by `ipc recv` processes, one of them killed
/// holding unacknowledged messages, and broker b killed (SIGKILL) and
/// restarted mid-stream. Every message arrives; one that arrives twice
/// was delivered again (its count of deliveries says so), never stored
/// twice.
#[test]
fn durable_work_queue_between_two_hosts() {
    let Some(nats) = Nats::start() else { return };
    let hosts = Hosts::make();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Broker::start(&hosts, 0, &nats, dir.path(), "jobs");
    let mut b = Broker::start(&hosts, 1, &nats, dir.path(), "jobs");
    a.ok(&["mailbox", "create", "jobs", "--durable"]);
    b.ok(&["mailbox", "create", "jobs", "--durable"]);

    const N: usize = 3000;
    let sock_a = a.sock.clone();
    let producer = std::thread::spawn(move || {
        let mut c = Client::connect_to(&sock_a).expect("connect a");
        let ids: Vec<String> = (0..N).map(|i| format!("m{i:05}")).collect();
        for chunk in ids.chunks(100) {
            let msgs: Vec<Message<'_>> = chunk
                .iter()
                .map(|id| Message::new(id.as_bytes()).with_id(id))
                .collect();
            for r in c.send_batch("jobs", &msgs) {
                assert_eq!(r.expect("send").outcome, Outcome::Stored);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A sender retrying: recognised, not stored again.
        let again: Vec<Message<'_>> = ids[..300]
            .iter()
            .map(|id| Message::new(id.as_bytes()).with_id(id))
            .collect();
        for r in c.send_batch("jobs", &again) {
            assert_eq!(r.expect("send").outcome, Outcome::Duplicate);
        }
    });

    let mut seen: HashMap<String, u32> = HashMap::new();
    // A receiver on host b takes 800 and exits; its acks are in.
    let first = finish(
        b.ipc(&["recv", "mailbox:jobs", "-n", "800", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    for l in stdout(&first).lines() {
        *seen.entry(l.to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), 800);
    // Broker b dies while messages still cross.
    b.kill_and_restart(&hosts);
    // A receiver killed after printing 300: what it held goes again.
    let mut second = b
        .ipc(&["recv", "mailbox:jobs", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(second.stdout.take().expect("stdout")).lines();
    for _ in 0..300 {
        let l = lines.next().expect("a line").expect("read");
        *seen.entry(l).or_default() += 1;
    }
    second.kill().expect("SIGKILL");
    second.wait().expect("wait");
    // What it printed (and so acknowledged) before it died.
    for l in lines {
        *seen.entry(l.expect("read")).or_default() += 1;
    }
    producer.join().expect("the producer");

    // The rest, by this process on host b.
    let mut c = b.client();
    c.subscribe(
        "jobs",
        &SubscribeOptions {
            ack: AckPolicy::Explicit,
            ..SubscribeOptions::default()
        },
    )
    .expect("subscribe");
    let end = Instant::now() + CROSS;
    let mut again = 0;
    while seen.len() < N {
        if Instant::now() >= end {
            let missing: Vec<String> = (0..N)
                .map(|i| format!("m{i:05}"))
                .filter(|id| !seen.contains_key(id))
                .take(20)
                .collect();
            panic!(
                "only {} of {N} messages crossed in {CROSS:?}; missing {missing:?}; \
                 broker a: {:?}; broker b: {:?}",
                seen.len(),
                a.client().stat(Some("jobs")),
                c.stat(Some("jobs"))
            );
        }
        let Ok(d) = c.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let id = String::from_utf8(d.payload.clone()).expect("utf-8");
        assert_eq!(
            d.id.as_deref(),
            Some(id.as_str()),
            "the sender's id crossed"
        );
        let n = seen.entry(id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            again += 1;
            assert!(
                d.deliveries > 1,
                "{id} was stored twice on broker b (a second delivery counted as the first)"
            );
        }
        c.ack(&d);
    }
    c.flush().expect("flush");
    // Nothing more is on its way.
    assert!(c.recv_timeout(Duration::from_secs(2)).is_err());
    let info = &c.stat(Some("jobs")).expect("stat")[0];
    assert_eq!((info.depth, info.in_flight), (0, 0));
    let info_a = &a.client().stat(Some("jobs")).expect("stat")[0];
    assert_eq!(info_a.depth, 0, "broker a still holds messages");
    eprintln!(
        "{N} crossed; {again} delivered again after the killed receiver; namespaces: {}",
        hosts.ns.is_some()
    );
}

/// Non-durable fan-out (interest) both ways, and the local semantics on
/// a message that crossed: a receiver that nacks gets it again, and one
/// that rejects sends it to the dead letters with the reason.
#[test]
fn fan_out_both_ways_and_dead_letters() {
    let Some(nats) = Nats::start() else { return };
    let hosts = Hosts::make();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Broker::start(&hosts, 0, &nats, dir.path(), "news,tasks");
    let b = Broker::start(&hosts, 1, &nats, dir.path(), "news tasks");
    for br in [&a, &b] {
        br.ok(&["mailbox", "create", "news", "--retention", "interest"]);
        br.ok(&["mailbox", "create", "tasks", "--max-deliver", "3"]);
    }
    // NATS subscriptions are made in the background: a message sent
    // before the other broker subscribed reaches no one there, so first
    // wait until one crosses each way, then until the bridges hold
    // nothing more (a probe that found no one is sent again).
    for (from, to) in [(&a, &b), (&b, &a)] {
        let mut probe_rx = to.client();
        probe_rx
            .subscribe("news", &SubscribeOptions::default())
            .expect("subscribe");
        let mut tx = from.client();
        let end = Instant::now() + CROSS;
        loop {
            tx.send("news", b"probe").expect("send");
            if probe_rx.recv_timeout(Duration::from_millis(300)).is_ok() {
                break;
            }
            assert!(Instant::now() < end, "nothing crossed");
        }
    }
    let news = |br: &Broker| br.client().stat(Some("news")).expect("stat")[0].clone();
    for br in [&a, &b] {
        wait_for(
            || {
                let n = news(br);
                (n.depth, n.consumers) == (0, 1)
            },
            "the probes to settle",
        );
    }
    // One receiver on each host, as processes.
    let rx: Vec<Child> = [&a, &b]
        .iter()
        .map(|br| {
            br.ipc(&["recv", "mailbox:news", "-n", "200", "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for br in [&a, &b] {
        wait_for(|| news(br).consumers == 2, "the receivers");
    }
    for (k, br) in [&a, &b].iter().enumerate() {
        let mut tx = br.client();
        for i in 0..100 {
            let m = format!("host{k}-{i:03}");
            tx.send("news", m.as_bytes()).expect("send");
        }
    }
    let want: Vec<String> = (0..2)
        .flat_map(|k| (0..100).map(move |i| format!("host{k}-{i:03}")))
        .collect();
    for (k, child) in rx.into_iter().enumerate() {
        let out = finish(child);
        assert!(out.status.success(), "host {k}: {}", stderr(&out));
        let mut got: Vec<String> = stdout(&out).lines().map(String::from).collect();
        got.sort();
        assert_eq!(got, want, "host {k}");
    }

    // A work-queue message from host a, handled on host b.
    let mut rb = b.client();
    rb.subscribe(
        "tasks",
        &SubscribeOptions {
            ack: AckPolicy::Explicit,
            ..SubscribeOptions::default()
        },
    )
    .expect("subscribe");
    let mut ra = a.client();
    ra.send_message(
        "tasks",
        Message::new(b"poison").with_id("task-1"),
        ipckit::Deadline::Never,
    )
    .expect("send");
    // Broker a's bridge competes with no local receiver: it goes out.
    let d = rb.recv_timeout(CROSS).expect("crossed");
    assert_eq!((d.payload.as_slice(), d.deliveries), (&b"poison"[..], 1));
    rb.nack(&d, Some(Duration::from_millis(10))).expect("nack");
    let d = rb.recv_timeout(T).expect("again");
    assert_eq!(d.deliveries, 2);
    rb.reject(&d, "cannot parse it").expect("reject");
    let mut dead = b.client();
    dead.subscribe("dead.tasks", &SubscribeOptions::default())
        .expect("subscribe");
    let d = dead.recv_timeout(T).expect("a dead letter");
    assert_eq!(d.payload, b"poison");
    assert!(
        d.dead_reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot parse it")),
        "{:?}",
        d.dead_reason
    );
}

/// Bad `--nats` and `--bridge` are refused before the broker starts,
/// naming what is wrong; nothing is left behind.
#[test]
fn bad_bridge_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("b.sock");
    let sock = sock.to_str().expect("utf-8");
    let base = ["broker", "--no-store", "--socket", sock];
    for (extra, text) in [
        (
            vec!["--nats", "nats://x:99999", "--bridge", "jobs"],
            "NATS server",
        ),
        (
            vec!["--nats", "nats://x:4222", "--bridge", "pid.>"],
            "cannot be bridged",
        ),
        (
            vec!["--nats", "nats://x:4222", "--bridge", "a..b"],
            "is not valid",
        ),
        (
            vec!["--nats", "nats://x:4222", "--bridge", " , "],
            "at least one",
        ),
    ] {
        let mut c = ipc();
        c.args(base).args(&extra);
        fails_with(&mut c, text);
    }
    let mut c = ipc();
    c.args(base).args(["--nats", "nats://x:4222"]);
    fails_with(&mut c, "--bridge");
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none());
}
