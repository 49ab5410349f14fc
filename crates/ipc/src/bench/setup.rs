//! The bench's side of setting up each mechanism between this process
//! and a peer process (the peer's side is [`super::peer`]): the peer's
//! command line, the objects made for it, and the endpoint this side
//! measures through.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipckit::fifo::Fifo;
use ipckit::frame::Framing;
use ipckit::mq::sysv::{MessageQueue, Selector};
use ipckit::mq::{Duplex as MqDuplex, PosixQueue};
use ipckit::pipe;
use ipckit::registry::{Direction, Mechanism};
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::select::{Readiness, Selectable};
use ipckit::{
    Connection, Deadline, Listener, MessageReceiver, MessageSender, RecvTimeoutError,
    SendTimeoutError, WaitStrategy,
};

use super::mechs::ring_capacity;
use super::shm::ShmChannel;
use super::{cleanup, selected, zerocopy, Mech, Role, MSG_TIMEOUT, SETUP_TIMEOUT};

pub(super) trait Endpoint: MessageSender + MessageReceiver {}
impl<T: MessageSender + MessageReceiver> Endpoint for T {}

/// The child process; killed if still running when dropped.
pub(super) struct Peer(pub(super) Child);

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Peer {
    /// Starts `cmd` (from [`Ctx::peer_cmd`]) and registers it for the
    /// cleanup of an interrupted bench.
    pub(super) fn spawn(cmd: &mut Command) -> Result<Peer> {
        let child = cmd.spawn().context("starting the peer process")?;
        cleanup::peer(child.id());
        Ok(Peer(child))
    }

    /// Waits for the peer to exit on its own, then checks its status; a
    /// failure carries the peer's own error message.
    pub(super) fn finish(mut self) -> Result<()> {
        let end = Instant::now() + MSG_TIMEOUT;
        loop {
            if self.0.try_wait()?.is_some() {
                return self.why_failed().map_or(Ok(()), Err);
            }
            if Instant::now() > end {
                bail!("the peer process did not exit");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// When the peer has exited unsuccessfully: its status and its own
    /// error message.
    pub(super) fn why_failed(&mut self) -> Option<anyhow::Error> {
        let st = self.0.try_wait().ok()??;
        if st.success() {
            return None;
        }
        let mut why = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = io::Read::read_to_string(&mut e, &mut why);
        }
        let why = why.trim().trim_start_matches("ipc: ");
        Some(if why.is_empty() {
            anyhow!("the peer process failed ({st})")
        } else {
            anyhow!("the peer process failed ({st}): {why}")
        })
    }
}

pub(super) struct Ctx {
    pub(super) cpus: Option<(usize, usize)>,
    /// Every CPU this process was allowed before it pinned itself (for a
    /// third process, such as the mailbox broker, that belongs to neither).
    pub(super) all_cpus: Vec<usize>,
    /// Whether both processes run on one CPU (decided before pinning: a
    /// pinned process sees only its own CPU).
    pub(super) shared_cpu: bool,
    pub(super) tmp: tempfile::TempDir,
    pub(super) counter: u64,
    /// Rings move messages with loans and in-place receives.
    pub(super) zero_copy: bool,
    /// `--select`: each point is also measured through a selector.
    pub(super) select: bool,
    /// Both processes wait for each message in a selector (the `--select`
    /// half of a point is being measured).
    pub(super) via_select: bool,
    /// `--by-address`: every registry mechanism is set up through its
    /// address.
    pub(super) by_address: bool,
    /// The broker for the registry's mechanisms that need one (`mailbox:`),
    /// started when the first of them is measured.
    pub(super) broker: Option<super::mailbox::BrokerProc>,
}

impl Ctx {
    pub(super) fn peer_cmd(&self, role: Role) -> Result<Command> {
        self.peer_cmd_on(role, self.cpus.map(|(_, b)| b))
    }

    /// Runs a measuring peer (`cmd` from [`Self::peer_cmd`], given
    /// `--addr ADDR --size SIZE --duration-ms D` here) to its end, and
    /// returns the line of figures it printed.
    pub(super) fn figures(
        cmd: &mut Command,
        addr: &str,
        size: usize,
        d: Duration,
    ) -> Result<String> {
        cmd.arg("--addr")
            .arg(addr)
            .arg("--size")
            .arg(size.to_string())
            .arg("--duration-ms")
            .arg(d.as_millis().to_string())
            .stdout(Stdio::piped());
        let mut peer = Peer::spawn(cmd)?;
        let out = peer.0.stdout.take().expect("piped");
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
            .context("reading the peer's figures");
        peer.finish()?;
        read?;
        Ok(line)
    }

    /// [`Self::peer_cmd`], the peer pinned to `cpu` (when given).
    pub(super) fn peer_cmd_on(&self, role: Role, cpu: Option<usize>) -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe().context("locating the ipc binary")?);
        let role = clap::ValueEnum::to_possible_value(&role).expect("every role has a name");
        cmd.arg(crate::BENCH_PEER).arg(role.get_name());
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        if self.shared_cpu {
            cmd.arg("--shared-cpu");
        }
        cmd.arg("--parent").arg(std::process::id().to_string());
        // stderr is kept: a failed row says why the peer failed.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    pub(super) fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!(
            "ipckit-bench-{}-{}-{what}",
            std::process::id(),
            self.counter
        )
    }

    /// Starts a peer in `role` and connects to it.
    pub(super) fn connect(
        &mut self,
        mech: Mech,
        role: Role,
        size: usize,
        wait: WaitStrategy,
    ) -> Result<(Box<dyn Endpoint>, Peer)> {
        let mut cmd = self.peer_cmd(role)?;
        cmd.arg("--mech")
            .arg(mech.name())
            .arg("--size")
            .arg(size.to_string())
            .arg("--wait")
            .arg(wait.to_string());
        if self.via_select {
            cmd.arg("--select");
        }
        let sel = self.via_select;
        let (mut ep, peer) = match self.addressed(mech) {
            Some(m) => {
                cmd.arg("--by-address");
                let opts = self.with_broker(m, &mut cmd, address_options(size))?;
                self.set_up_by_address(m, cmd, &opts, sel)?
            }
            None => self.specially(mech, cmd, size, sel)?,
        };
        ep.set_wait_strategy(wait);
        ep.set_max_message_size(size.max(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE));
        Ok((ep, peer))
    }

    /// For a mechanism that needs a broker (`mailbox:`): `opts` and the
    /// peer's `cmd` made to use the bench's, started if need be, so that
    /// both processes are its clients. Others: `opts` as they are.
    pub(super) fn with_broker(
        &mut self,
        m: &Mechanism,
        cmd: &mut Command,
        opts: ipckit::endpoint::Options,
    ) -> Result<ipckit::endpoint::Options> {
        if !m.broker {
            return Ok(opts);
        }
        if self.broker.is_none() {
            self.broker = Some(super::mailbox::start_broker(self, &[])?);
        }
        let socket = &self.broker.as_ref().expect("just started").socket;
        cmd.env("IPCKIT_BROKER", socket);
        Ok(opts.broker(socket))
    }

    /// The registry mechanism `mech` is set up through, when it is set up
    /// by its address: the socket kinds and mechanisms new to the
    /// registry, or with `--by-address` every registered one (but
    /// ring-mpmc, a way of using a ring).
    pub(super) fn addressed(&self, mech: Mech) -> Option<&'static Mechanism> {
        mech.by_address()
            .or_else(|| self.by_address.then(|| mech.address_setup()).flatten())
    }

    /// The bench's own setup of `mech`, made for measuring it.
    fn specially(
        &mut self,
        mech: Mech,
        mut cmd: Command,
        size: usize,
        sel: bool,
    ) -> Result<(Box<dyn Endpoint>, Peer)> {
        let ep: Box<dyn Endpoint>;
        let peer;
        match mech {
            Mech::Pipe => {
                let (to_child_r, to_child_w) = pipe::pipe()?;
                let (from_child_r, from_child_w) = pipe::pipe()?;
                cmd.stdin(Stdio::from(to_child_r))
                    .stdout(Stdio::from(from_child_w));
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(pipe::Duplex::new(from_child_r, to_child_w)?, sel)?;
            }
            Mech::Fifo => {
                let name = self.unique("fifo");
                let dir = self.tmp.path().join(name);
                std::fs::create_dir(&dir)?;
                let a2b = Fifo::create(dir.join("a2b"))?;
                let b2a = Fifo::create(dir.join("b2a"))?;
                cmd.arg("--addr").arg(&dir);
                peer = Peer::spawn(&mut cmd)?;
                let tx = a2b.open_sender(Some(SETUP_TIMEOUT))?;
                let rx = b2a.open_receiver(Some(SETUP_TIMEOUT))?;
                ep = selected::boxed(pipe::Duplex { tx, rx }, sel)?;
            }
            Mech::Unix
            | Mech::UnixSeq
            | Mech::UnixDgram
            | Mech::Tcp
            | Mech::Udp
            | Mech::Other(_) => unreachable!("{mech} is set up by its address"),
            Mech::Mq => {
                let base = format!("/{}", self.unique("mq"));
                let q = |dir: &str| {
                    PosixQueue::builder(format!("{base}-{dir}"))
                        .capacity(10, size)
                        .create()
                };
                let (tx, rx) = cleanup::making(|r| {
                    r.mqueue(&format!("{base}-a2b"));
                    r.mqueue(&format!("{base}-b2a"));
                    Ok((q("a2b")?, q("b2a")?))
                })?;
                cmd.arg("--addr").arg(&base);
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(MqDuplex { tx, rx }, sel)?;
            }
            Mech::SysvMq => {
                // One private queue: type 1 to the peer, type 2 back.
                let mut q = cleanup::making(|r| {
                    let q = MessageQueue::private().create()?;
                    r.sysv_queue(q.id());
                    Ok(q)
                })?;
                q.set_default_type(1)?;
                q.set_default_selector(Selector::Type(2))?;
                cmd.arg("--addr").arg(q.id().to_string());
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(q, sel)?;
            }
            Mech::ShmSpin | Mech::ShmFutex | Mech::ShmSem | Mech::SysvSem => {
                let turns = mech.turns().expect("a shared-memory mechanism");
                let ch = cleanup::making(|r| {
                    let ch = ShmChannel::create(turns, size, self.shared_cpu)?;
                    if let Some(id) = ch.set_id() {
                        r.sysv_set(id);
                    }
                    Ok(ch)
                })?;
                cmd.stdin(Stdio::from(ch.region().fd().try_clone_to_owned()?));
                if let Some(id) = ch.set_id() {
                    cmd.arg("--addr").arg(id.to_string());
                }
                peer = Peer::spawn(&mut cmd)?;
                ep = Box::new(ch);
            }
            Mech::Signal | Mech::SignalHandler => {
                bail!("the signal bench has its own protocol (bench/signal.rs)")
            }
            Mech::Ring | Mech::RingMpmc => {
                // Two anonymous rings, one each way: the peer gets them as
                // its standard input (ours to it) and output (its to us).
                let ring = || {
                    Ring::anonymous()
                        .capacity(ring_capacity(size))
                        .max_message_size(size)
                        .multi(mech == Mech::RingMpmc)
                        .create()
                };
                let (a2b, b2a) = (ring()?, ring()?);
                cmd.stdin(Stdio::from(a2b.fd().try_clone_to_owned()?))
                    .stdout(Stdio::from(b2a.fd().try_clone_to_owned()?));
                let (tx, rx) = (a2b.sender()?, b2a.receiver()?);
                if self.zero_copy {
                    cmd.arg("--zero-copy");
                }
                peer = Peer::spawn(&mut cmd)?;
                ep = if self.zero_copy {
                    Box::new(zerocopy::ZeroCopy(RingDuplex { tx, rx }))
                } else {
                    selected::boxed(RingDuplex { tx, rx }, sel)?
                };
            }
        }
        Ok((ep, peer))
    }

    /// Sets up registry mechanism `m` through its addresses alone, as a
    /// program would: a two-way one is listened on here and connected to
    /// by the peer (`--addr`); a one-way one takes two channels, one
    /// listened on in each process (the peer's at `--listen`, whose
    /// address, with the port a port 0 became, it prints on its standard
    /// output).
    fn set_up_by_address(
        &mut self,
        m: &'static Mechanism,
        mut cmd: Command,
        opts: &ipckit::endpoint::Options,
        sel: bool,
    ) -> Result<(Box<dyn Endpoint>, Peer)> {
        let scratch = |ctx: &mut Ctx, what: &str| m.scratch_address(&ctx.unique(what));
        let here = scratch(self, "listen");
        let there = scratch(self, "peer");
        let l = cleanup::making(|r| {
            // Registered for an interrupted bench: the peer's as well, which
            // a killed peer cannot remove.
            r.address(&here);
            r.address(&there);
            Ok(ipckit::listen_with(&here, opts)?)
        })?;
        cmd.arg("--addr").arg(l.local_address()?.to_string());
        if m.direction == Direction::TwoWay {
            let mut peer = Peer::spawn(&mut cmd)?;
            let conn = accept_from(&l, &mut peer)?;
            return Ok((selected::boxed(conn, sel)?, peer));
        }
        cmd.arg("--listen").arg(there.to_string());
        cmd.stdout(Stdio::piped());
        let mut peer = Peer::spawn(&mut cmd)?;
        // A peer killed on a failure (or at the end) cannot remove it.
        let theirs_made = Leftover(there);
        let said = peer.0.stdout.take().expect("piped");
        let mut said = ipckit::pipe::Receiver::new(said.into())?;
        said.set_framing(Framing::Lines);
        let theirs = match said.recv_timeout(SETUP_TIMEOUT) {
            Ok(line) => String::from_utf8(line)?,
            Err(e) => {
                // An end of file: it failed, and its stderr says why. A
                // timeout: it hangs, and is stopped here.
                let why = match peer.0.try_wait() {
                    Ok(Some(_)) => peer.why_failed(),
                    _ => {
                        let _ = peer.0.kill();
                        let _ = peer.0.wait();
                        None
                    }
                };
                return Err(
                    why.unwrap_or_else(|| anyhow!("the peer never said where it listens ({e})"))
                );
            }
        };
        // Receive first: a FIFO's reader and writer wait for each other.
        let rx = accept_from(&l, &mut peer)?;
        let tx = ipckit::connect_with(&theirs.parse()?, opts)
            .with_context(|| format!("connecting to the peer's {theirs}"))?;
        let pair = Pair {
            tx,
            rx,
            _l: l,
            _theirs: Some(theirs_made),
        };
        Ok((selected::boxed(pair, sel)?, peer))
    }
}

/// What the peer listened on, removed (as `ipc rm ADDR` would) when the
/// bench is done with it: the peer removes it itself when it ends well,
/// but not when it is killed.
pub(super) struct Leftover(ipckit::Address);

impl Drop for Leftover {
    fn drop(&mut self) {
        // Nothing to remove for most (abstract sockets, ports), or the
        // peer removed it already.
        let _ = crate::rm::remove_object(&self.0);
    }
}

/// How both sides listen and connect by address for `size`-byte messages:
/// a ring made for them holds messages of that size (other mechanisms
/// take the defaults a program would get).
pub(super) fn address_options(size: usize) -> ipckit::endpoint::Options {
    ipckit::endpoint::Options::new()
        .ring_capacity(ring_capacity(size))
        .ring_max_message_size(size)
        .max_message_size(size.max(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE))
        .timeout(Some(SETUP_TIMEOUT))
}

/// The peer's connection on `l`, or why there is none (the peer's own
/// words when it failed).
fn accept_from(l: &Listener, peer: &mut Peer) -> Result<Connection> {
    l.accept_timeout(SETUP_TIMEOUT).map_err(|e| {
        peer.why_failed()
            .unwrap_or_else(|| anyhow::Error::from(e).context("waiting for the peer to connect"))
    })
}

/// Two one-way channels as one two-way endpoint: messages go out on `tx`
/// and come in on `rx` (and the listener `rx` came from stays open).
pub(super) struct Pair {
    pub(super) tx: Connection,
    pub(super) rx: Connection,
    pub(super) _l: Listener,
    /// The bench's side: what the peer made.
    pub(super) _theirs: Option<Leftover>,
}

impl MessageSender for Pair {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        self.tx.send_until(msg, deadline)
    }
}

impl MessageReceiver for Pair {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        self.rx.recv_until(buf, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.rx.max_message_size()
    }
    fn set_max_message_size(&mut self, max: usize) {
        self.rx.set_max_message_size(max);
        self.tx.set_max_message_size(max);
    }
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.rx.set_wait_strategy(strategy);
        self.tx.set_wait_strategy(strategy);
    }
}

impl Selectable for Pair {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        self.rx.readiness()
    }
}
