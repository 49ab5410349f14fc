//! The bench's side of setting up each mechanism between this process
//! and a peer process (the peer's side is [`super::peer`]): the peer's
//! command line, the objects made for it, and the endpoint this side
//! measures through.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipckit::fifo::Fifo;
use ipckit::mq::sysv::{MessageQueue, Selector};
use ipckit::mq::{Duplex as MqDuplex, PosixQueue};
use ipckit::pipe;
use ipckit::ring::{Duplex as RingDuplex, Ring};
use ipckit::socket::inet::{TcpListener, UdpSocket};
use ipckit::socket::unix::{SeqpacketListener, UnixAddr, UnixDatagram, UnixListener};
use ipckit::{MessageReceiver, MessageSender, WaitStrategy};

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
            if let Some(st) = self.0.try_wait()? {
                if !st.success() {
                    let mut why = String::new();
                    if let Some(mut e) = self.0.stderr.take() {
                        let _ = io::Read::read_to_string(&mut e, &mut why);
                    }
                    let why = why.trim().trim_start_matches("ipc: ");
                    if why.is_empty() {
                        bail!("the peer process failed ({st})");
                    }
                    bail!("the peer process failed ({st}): {why}");
                }
                return Ok(());
            }
            if Instant::now() > end {
                bail!("the peer process did not exit");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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
}

impl Ctx {
    pub(super) fn peer_cmd(&self, role: Role) -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe().context("locating the ipc binary")?);
        let role = clap::ValueEnum::to_possible_value(&role).expect("every role has a name");
        cmd.arg(crate::BENCH_PEER).arg(role.get_name());
        if let Some((_, b)) = self.cpus {
            cmd.arg("--cpu").arg(b.to_string());
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
        let mut ep: Box<dyn Endpoint>;
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
            Mech::Unix | Mech::UnixSeq => {
                let name = format!("@{}", self.unique("listen"));
                let addr: UnixAddr = name.parse()?;
                cmd.arg("--addr").arg(&name);
                if mech == Mech::Unix {
                    let l = UnixListener::bind(&addr)?;
                    peer = Peer::spawn(&mut cmd)?;
                    ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
                } else {
                    let l = SeqpacketListener::bind(&addr)?;
                    peer = Peer::spawn(&mut cmd)?;
                    ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
                }
            }
            Mech::UnixDgram => {
                let name = format!("@{}", self.unique("dgram"));
                let mut s = UnixDatagram::bind(&name.parse()?)?;
                cmd.arg("--addr").arg(&name);
                peer = Peer::spawn(&mut cmd)?;
                // The peer binds NAME-peer and says hello from there.
                let hello = s
                    .recv_timeout(SETUP_TIMEOUT)
                    .context("waiting for the peer")?;
                let back: UnixAddr = String::from_utf8(hello)?.parse()?;
                s.connect(&back)?;
                ep = selected::boxed(s, sel)?;
            }
            Mech::Tcp => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                cmd.arg("--addr").arg(l.local_addr()?.port().to_string());
                peer = Peer::spawn(&mut cmd)?;
                ep = selected::boxed(l.accept_timeout(SETUP_TIMEOUT)?, sel)?;
            }
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
            Mech::Signal => bail!("the signal bench has its own protocol (bench/signal.rs)"),
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
            Mech::Udp => {
                let mut s = UdpSocket::bind("127.0.0.1:0")?;
                cmd.arg("--addr").arg(s.local_addr()?.port().to_string());
                peer = Peer::spawn(&mut cmd)?;
                let hello = s
                    .recv_timeout(SETUP_TIMEOUT)
                    .context("waiting for the peer")?;
                s.connect(format!("127.0.0.1:{}", String::from_utf8(hello)?))?;
                ep = selected::boxed(s, sel)?;
            }
        }
        ep.set_wait_strategy(wait);
        ep.set_max_message_size(size.max(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE));
        Ok((ep, peer))
    }
}
