//! The peer process's side of `ipc bench` (`ipc __bench-peer`): it
//! connects to what the bench made and echoes, counts, or bounces the
//! floor's cache line.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipckit::mq::sysv::{MessageQueue, Selector};
use ipckit::mq::{Duplex as MqDuplex, PosixQueue};
use ipckit::pipe;
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::shm::Memfd;
use ipckit::{MessageReceiver, MessageSender, RecvTimeoutError, WaitStrategy};

use super::setup::{address_options, Pair};
use super::shm::ShmChannel;
use super::{
    get_seq, raw, selected, seq_mask, signal, spin_until, zerocopy, Endpoint, Mech, MSG_TIMEOUT,
    SETUP_TIMEOUT,
};

/// The peer's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Send every message back.
    Echo,
    /// Count and check numbered messages, then report.
    Sink,
    /// Bounce the shared cache line.
    Floor,
    /// Call a request/reply server (`--addr`), measuring.
    Rpc,
    /// Send every message of one mailbox to another (`--addr
    /// SOCKET|IN|OUT`).
    MailboxEcho,
    /// Count a mailbox's messages until an empty one (`--addr
    /// SOCKET|MAILBOX`).
    MailboxSink,
    /// Answer NATS requests on a subject (`--addr URL|SUBJECT`).
    NatsEcho,
    /// Call a binder object (`--addr @NAME`) and echo on a seqpacket
    /// socket (stdin), measuring ([`super::binder`]).
    BinderCall,
    /// Watch a property of store `--addr`, reporting each wake
    /// ([`super::prop`]).
    PropWatch,
}

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    #[arg(value_enum)]
    pub(super) role: Role,
    #[arg(long, value_parser = Mech::parse)]
    pub(super) mech: Option<Mech>,
    #[arg(long, default_value_t = 1)]
    pub(super) size: usize,
    #[arg(long, default_value = "block")]
    pub(super) wait: WaitStrategy,
    #[arg(long)]
    pub(super) cpu: Option<usize>,
    /// The two processes share one CPU: spin loops yield it.
    #[arg(long)]
    pub(super) shared_cpu: bool,
    /// The bench's pid: the peer exits when that process does.
    #[arg(long)]
    pub(super) parent: Option<u32>,
    /// Echo with bare system calls (`ipc bench --raw`).
    #[arg(long)]
    pub(super) raw: bool,
    /// Mechanism-specific rendezvous: a path, an abstract name or a port;
    /// for a mechanism set up by address, the bench's address.
    #[arg(long)]
    pub(super) addr: Option<String>,
    /// For a one-way mechanism set up by address: where to listen (the
    /// address is printed on standard output, with a port 0 filled in).
    #[arg(long)]
    pub(super) listen: Option<String>,
    /// Set up through the address (`--addr`, `--listen`), not the
    /// mechanism's own way.
    #[arg(long)]
    pub(super) by_address: bool,
    /// Rings: loans and in-place receives (`ipc bench --zero-copy`).
    #[arg(long)]
    pub(super) zero_copy: bool,
    /// Wait for each message in a selector (`ipc bench --select`).
    #[arg(long)]
    pub(super) select: bool,
    /// How long to measure (request/reply).
    #[arg(long, default_value_t = 400)]
    pub(super) duration_ms: u64,
}

/// The peer's side of [`Ctx::connect`].
fn peer_connect(a: &PeerArgs) -> Result<Box<dyn Endpoint>> {
    let mech = a.mech.ok_or_else(|| anyhow!("--mech is required"))?;
    let addr = || a.addr.clone().ok_or_else(|| anyhow!("--addr is required"));
    let sel = a.select;
    let mut ep: Box<dyn Endpoint> = match mech {
        _ if a.by_address => by_address(&addr()?, a.listen.as_deref(), a.size, sel)?,
        Mech::Pipe => selected::boxed(pipe::Duplex::from_stdio()?, sel)?,
        Mech::Fifo => {
            let dir = PathBuf::from(addr()?);
            let rx = ipckit::fifo::open_receiver(dir.join("a2b"), Some(SETUP_TIMEOUT))?;
            let tx = ipckit::fifo::open_sender(dir.join("b2a"), Some(SETUP_TIMEOUT))?;
            selected::boxed(pipe::Duplex { tx, rx }, sel)?
        }
        Mech::Unix | Mech::UnixSeq | Mech::UnixDgram | Mech::Tcp | Mech::Udp | Mech::Other(_) => {
            bail!("{mech} is set up by its address: --by-address is missing")
        }
        Mech::Mq => {
            let base = addr()?;
            let d = MqDuplex {
                tx: PosixQueue::builder(format!("{base}-b2a")).open()?,
                rx: PosixQueue::builder(format!("{base}-a2b")).open()?,
            };
            selected::boxed(d, sel)?
        }
        Mech::SysvMq => {
            let mut q = MessageQueue::open_id(addr()?.parse().context("--addr is a queue id")?)?;
            q.set_default_type(2)?;
            q.set_default_selector(Selector::Type(1))?;
            selected::boxed(q, sel)?
        }
        Mech::ShmSpin | Mech::ShmFutex | Mech::ShmSem | Mech::SysvSem => {
            let turns = mech.turns().expect("a shared-memory mechanism");
            let set_id = match &a.addr {
                Some(id) => Some(id.parse().context("--addr is a semaphore set id")?),
                None => None,
            };
            let fd = io::stdin().as_fd().try_clone_to_owned()?;
            Box::new(ShmChannel::open(turns, a.size, fd, set_id, a.shared_cpu)?)
        }
        Mech::Signal | Mech::SignalHandler => {
            bail!("the signal bench has its own protocol (bench/signal.rs)")
        }
        Mech::Ring | Mech::RingMpmc => {
            let a2b = Ring::from_fd(io::stdin().as_fd().try_clone_to_owned()?)?;
            let b2a = Ring::from_fd(io::stdout().as_fd().try_clone_to_owned()?)?;
            let d = RingDuplex {
                rx: a2b.receiver()?,
                tx: b2a.sender()?,
            };
            if a.zero_copy {
                Box::new(zerocopy::ZeroCopy(d))
            } else {
                selected::boxed(d, sel)?
            }
        }
    };
    ep.set_wait_strategy(a.wait);
    ep.set_max_message_size(a.size.max(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE));
    Ok(ep)
}

/// The peer's side of [`Ctx::set_up_by_address`](super::setup): connect to the
/// bench's address; for a one-way mechanism also listen on `listen` and
/// say where on standard output.
fn by_address(
    bench: &str,
    listen: Option<&str>,
    size: usize,
    sel: bool,
) -> Result<Box<dyn Endpoint>> {
    let bench: ipckit::Address = bench.parse()?;
    let opts = address_options(size);
    let connect = || {
        ipckit::connect_with(&bench, &opts)
            .with_context(|| format!("connecting to the bench's {bench}"))
    };
    let Some(listen) = listen else {
        return Ok(selected::boxed(connect()?, sel)?);
    };
    let l = ipckit::listen_with(&listen.parse()?, &opts)?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        writeln!(out, "{}", l.local_address()?)?;
        out.flush()?;
    }
    // Send first: the bench receives first (a FIFO's ends wait for each
    // other).
    let tx = connect()?;
    let rx = l.accept_timeout(SETUP_TIMEOUT)?;
    Ok(selected::boxed(
        Pair {
            tx,
            rx,
            _l: l,
            _theirs: None,
        },
        sel,
    )?)
}

pub fn peer(a: PeerArgs) -> Result<()> {
    if let Some(parent) = a.parent {
        ipckit::process::exit_with_parent(parent)?;
    }
    if let Some(cpu) = a.cpu {
        ipckit::process::pin_to_cpu(cpu)?;
    }
    if a.role == Role::Floor {
        return peer_floor(a.shared_cpu);
    }
    if a.role == Role::Rpc {
        let addr = a
            .addr
            .as_deref()
            .ok_or_else(|| anyhow!("--addr is required"))?;
        return super::rpc::peer(addr, a.size, Duration::from_millis(a.duration_ms));
    }
    if a.role == Role::PropWatch {
        return super::prop::peer(a.addr.as_deref().context("--addr is required")?);
    }
    if a.role == Role::BinderCall {
        let addr = a.addr.as_deref().context("--addr is required")?;
        return super::binder::peer(addr, a.size, Duration::from_millis(a.duration_ms));
    }
    if a.role == Role::NatsEcho {
        let addr = a
            .addr
            .as_deref()
            .ok_or_else(|| anyhow!("--addr is required"))?;
        return super::nats::peer(addr);
    }
    if matches!(a.role, Role::MailboxEcho | Role::MailboxSink) {
        let addr = a
            .addr
            .as_deref()
            .ok_or_else(|| anyhow!("--addr is required"))?;
        return super::mailbox::peer(a.role, addr, a.wait);
    }
    if let Some(m) = a.mech.filter(|m| m.is_signal()) {
        return signal::peer(m, a.role, a.wait);
    }
    if a.raw {
        return raw::peer(&a);
    }
    let mut ep = peer_connect(&a)?;
    let mut buf = Vec::new();
    match a.role {
        Role::Echo => loop {
            match ep.recv_timeout_into(&mut buf, MSG_TIMEOUT) {
                Ok(()) if buf.len() == a.size => {
                    ep.send_until(&buf, ipckit::Deadline::Never)
                        .map_err(io::Error::from)?;
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        },
        Role::Sink => {
            let mask = seq_mask(a.size);
            let (mut count, mut lost, mut errors) = (0u64, 0u64, 0u64);
            let mut expected = 0u64;
            let mut first: Option<Instant> = None;
            // No clock reads per message (they cost as much as a message
            // through the ring): the time runs from the first message to
            // the end marker, which follows the last at once. Only a lossy
            // mechanism waits with a timeout (its marker may be lost); the
            // others end with the parent, which takes its peers with it.
            let lossy = a.mech.is_some_and(Mech::lossy);
            let last = loop {
                let deadline = if lossy {
                    ipckit::Deadline::after(MSG_TIMEOUT)
                } else {
                    ipckit::Deadline::Never
                };
                ep.recv_until(&mut buf, deadline)
                    .context("waiting for the next message")?;
                if buf.len() != a.size {
                    break Instant::now();
                }
                if first.is_none() {
                    first = Some(Instant::now());
                }
                let seq = get_seq(&buf);
                if seq != expected & mask {
                    // Gaps are losses (UDP); anything else is corruption.
                    let gap = seq.wrapping_sub(expected) & mask;
                    if gap < mask / 2 {
                        lost += gap;
                        expected += gap;
                    } else {
                        errors += 1;
                    }
                }
                expected += 1;
                count += 1;
            };
            let elapsed = first.map_or(0, |f| (last - f).as_nanos() as u64);
            let report = format!("{count} {lost} {errors} {elapsed}");
            ep.send_until(report.as_bytes(), ipckit::Deadline::Never)
                .map_err(io::Error::from)?;
            // Stay until the parent has read the report (it says so, closes,
            // or the time passes), so a closing socket cannot discard it.
            let _ = ep.recv_timeout_into(&mut buf, Duration::from_millis(500));
            Ok(())
        }
        Role::Floor
        | Role::Rpc
        | Role::MailboxEcho
        | Role::MailboxSink
        | Role::NatsEcho
        | Role::BinderCall
        | Role::PropWatch => {
            unreachable!("handled above")
        }
    }
}

fn peer_floor(single: bool) -> Result<()> {
    let region = Memfd::from_fd(io::stdin().as_fd().try_clone_to_owned()?, false)?;
    let word = region.atomic_u64(0)?;
    let mut seen = 0;
    loop {
        spin_until(
            || {
                let v = word.load(Ordering::Acquire);
                v != seen && (v % 2 == 1 || v == u64::MAX)
            },
            single,
        )?;
        let v = word.load(Ordering::Acquire);
        if v == u64::MAX {
            return Ok(());
        }
        seen = v + 1;
        word.store(seen, Ordering::Release);
    }
}
