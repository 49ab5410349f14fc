//! nats-server's round trip, beside the mailbox broker's: when
//! `nats-server` is installed, the bench starts one on a free loopback
//! port, a peer process answers requests on a subject, and this process
//! times request → reply (async-nats, core NATS request/reply: the same
//! two hops through a server each way as a mailbox round trip).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;

use super::measure::{RoundTrips, Stats};
use super::{cleanup, Ctx, Mech, Peer, Role, MSG_TIMEOUT, SETUP_TIMEOUT};

/// `nats-server` on `PATH`, or where Debian's package puts it.
pub fn server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A nats-server process on a free loopback port; killed on drop.
pub struct NatsServer {
    _proc: Peer,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl NatsServer {
    /// Starts `bin` and waits until it takes connections; with JetStream
    /// when `jetstream` names a directory for its store.
    pub fn start(bin: &PathBuf, jetstream: Option<&std::path::Path>) -> Result<NatsServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(dir) = jetstream {
            cmd.arg("-js").arg("-sd").arg(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Peer::spawn(&mut cmd).context("starting nats-server")?;
        let end = Instant::now() + SETUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > end {
                bail!("nats-server did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(NatsServer {
            _proc: proc,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

/// Round trips of `size`-byte requests through a nats-server for `d`;
/// `None` when nats-server is not installed.
pub fn round_trips(ctx: &mut Ctx, size: usize, d: Duration) -> Result<Option<Stats>> {
    let Some(bin) = server_binary() else {
        return Ok(None);
    };
    let server = NatsServer::start(&bin, None)?;
    let subject = ctx.unique("echo").replace('-', ".");
    let mut cmd = ctx.peer_cmd(Role::NatsEcho)?;
    cmd.arg("--mech")
        .arg(Mech::Tcp.name())
        .arg("--addr")
        .arg(format!("{}|{subject}", server.url))
        .stdout(Stdio::piped());
    let mut peer = Peer::spawn(&mut cmd)?;
    let mut ready = String::new();
    BufReader::new(peer.0.stdout.take().expect("piped")).read_line(&mut ready)?;
    if ready.trim() != "ready" {
        bail!("the NATS peer did not start");
    }
    let stats = runtime()?.block_on(async {
        let c = async_nats::connect(&server.url).await?;
        let msg = bytes(vec![0x5A; size]);
        let mut rtt = RoundTrips::new(d);
        while let Some(start) = rtt.next() {
            let reply = tokio::time::timeout(MSG_TIMEOUT, c.request(subject.clone(), msg.clone()))
                .await
                .map_err(|_| anyhow!("no reply from the NATS peer"))??;
            if reply.payload.len() != size {
                bail!("a reply of {} bytes", reply.payload.len());
            }
            rtt.done(start)?;
        }
        c.publish(subject.clone(), bytes(Vec::new())).await?;
        c.flush().await?;
        Ok::<_, anyhow::Error>(rtt.stats())
    })?;
    peer.finish()?;
    cleanup::point_done();
    Ok(Some(stats))
}

fn bytes(v: Vec<u8>) -> bytes::Bytes {
    v.into()
}

/// The peer's side: `--addr URL|SUBJECT`; answers every request on
/// SUBJECT with its payload until an empty message; prints `ready` once
/// subscribed.
pub fn peer(addr: &str) -> Result<()> {
    let (url, subject) = addr
        .split_once('|')
        .ok_or_else(|| anyhow!("--addr URL|SUBJECT"))?;
    runtime()?.block_on(async {
        let c = async_nats::connect(url).await?;
        let mut sub = c.subscribe(subject.to_string()).await?;
        c.flush().await?;
        println!("ready");
        while let Some(m) = tokio::time::timeout(MSG_TIMEOUT, sub.next())
            .await
            .map_err(|_| anyhow!("no request in time"))?
        {
            if m.payload.is_empty() {
                return Ok(());
            }
            if let Some(reply) = m.reply {
                c.publish(reply, m.payload).await?;
            }
        }
        Ok(())
    })
}
