//! `ipc bench --raw`: each kernel mechanism's round trip made again with
//! bare system calls through `std` (`read`/`write`, `send`/`recv`), fixed
//! size, no framing and no checks, in the same run and the same rounds as
//! ipckit's, so that the table can say what the library costs.
//!
//! Spinning (`--wait spin` or `adaptive`) sets the descriptors
//! non-blocking and retries until the call succeeds, as `tools/pingpong.c`
//! does. The queues (`mq`, `sysv-mq`) have no `std` twin: compare them
//! with `tools/pingpong.c`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ipckit::WaitStrategy;

use super::{new_hist, Ctx, Mech, Peer, PeerArgs, Role, MSG_TIMEOUT, SETUP_TIMEOUT};

/// Whether `mech` has a bare twin here.
pub fn supported(mech: Mech) -> bool {
    matches!(
        mech,
        Mech::Pipe
            | Mech::Fifo
            | Mech::Unix
            | Mech::UnixDgram
            | Mech::UnixSeq
            | Mech::Tcp
            | Mech::Udp
    )
}

/// One end of a bare channel.
enum End {
    /// Pipes and FIFOs: read one, write the other.
    Files {
        r: File,
        w: File,
    },
    Stream(UnixStream),
    Tcp(TcpStream),
    /// Unix datagram and seqpacket sockets (`send`/`recv` on a connected
    /// socket of either type).
    Dgram(UnixDatagram),
    Udp(UdpSocket),
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn write_all(w: &mut impl Write, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = retry(|| w.write(buf))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = retry(|| r.read(&mut buf[got..]))?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(())
}

impl End {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            End::Files { r, w } => {
                for f in [r, w] {
                    // A FIFO's or pipe's descriptor, through a socket-free
                    // std call: File has none, so use the one UnixStream
                    // shares (it only sets O_NONBLOCK on the descriptor).
                    let s = UnixStream::from(f.as_fd().try_clone_to_owned()?);
                    s.set_nonblocking(true)?;
                    drop(OwnedFd::from(s));
                }
                Ok(())
            }
            End::Stream(s) => s.set_nonblocking(true),
            End::Tcp(s) => s.set_nonblocking(true),
            End::Dgram(s) => s.set_nonblocking(true),
            End::Udp(s) => s.set_nonblocking(true),
        }
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            End::Files { w, .. } => write_all(w, buf),
            End::Stream(s) => write_all(s, buf),
            End::Tcp(s) => write_all(s, buf),
            End::Dgram(s) => retry(|| s.send(buf)).map(drop),
            End::Udp(s) => retry(|| s.send(buf)).map(drop),
        }
    }

    /// Receives one message of `buf.len()` bytes; `Ok(false)` when a UDP
    /// datagram did not come in time (lost).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self {
            End::Files { r, .. } => read_exact(r, buf).map(|()| true),
            End::Stream(s) => read_exact(s, buf).map(|()| true),
            End::Tcp(s) => read_exact(s, buf).map(|()| true),
            End::Dgram(s) => {
                let n = retry(|| s.recv(buf))?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(true)
            }
            End::Udp(s) => {
                let give_up = Instant::now() + Duration::from_millis(200);
                loop {
                    match s.recv(buf) {
                        Ok(_) => return Ok(true),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            if Instant::now() >= give_up {
                                return Ok(false);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

fn spins(wait: WaitStrategy) -> bool {
    wait != WaitStrategy::Block
}

/// Makes both ends, starts the peer with its end, and returns ours.
fn connect(ctx: &mut Ctx, mech: Mech, size: usize, wait: WaitStrategy) -> Result<(End, Peer)> {
    let mut cmd = ctx.peer_cmd(Role::Echo)?;
    cmd.args(["--raw", "--mech", mech.name(), "--size", &size.to_string()])
        .args(["--wait", &wait.to_string()]);
    let (mine, peer) = match mech {
        Mech::Pipe => {
            let (to_r, to_w) = std::io::pipe()?;
            let (from_r, from_w) = std::io::pipe()?;
            cmd.stdin(Stdio::from(OwnedFd::from(to_r)))
                .stdout(Stdio::from(OwnedFd::from(from_w)));
            let peer = Peer::spawn(&mut cmd)?;
            let end = End::Files {
                r: File::from(OwnedFd::from(from_r)),
                w: File::from(OwnedFd::from(to_w)),
            };
            (end, peer)
        }
        Mech::Fifo => {
            let name = ctx.unique("raw-fifo");
            let dir = ctx.tmp.path().join(name);
            std::fs::create_dir(&dir)?;
            let a2b = ipckit::fifo::Fifo::create(dir.join("a2b"))?.keep();
            let b2a = ipckit::fifo::Fifo::create(dir.join("b2a"))?.keep();
            // Opened read-write, a FIFO end never waits for the other side.
            let open = |p: &std::path::Path| OpenOptions::new().read(true).write(true).open(p);
            let end = End::Files {
                r: open(b2a.path())?,
                w: open(a2b.path())?,
            };
            cmd.arg("--addr").arg(&dir);
            (end, Peer::spawn(&mut cmd)?)
        }
        Mech::Unix => {
            let (a, b) = UnixStream::pair()?;
            cmd.stdin(Stdio::from(OwnedFd::from(b)));
            (End::Stream(a), Peer::spawn(&mut cmd)?)
        }
        Mech::UnixDgram => {
            let (a, b) = UnixDatagram::pair()?;
            cmd.stdin(Stdio::from(OwnedFd::from(b)));
            (End::Dgram(a), Peer::spawn(&mut cmd)?)
        }
        Mech::UnixSeq => {
            let (a, b) = ipckit::socket::unix::SeqpacketStream::pair()?;
            cmd.stdin(Stdio::from(b.as_fd().try_clone_to_owned()?));
            let mine = UnixDatagram::from(a.as_fd().try_clone_to_owned()?);
            (End::Dgram(mine), Peer::spawn(&mut cmd)?)
        }
        Mech::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            cmd.arg("--addr").arg(l.local_addr()?.port().to_string());
            let peer = Peer::spawn(&mut cmd)?;
            l.set_nonblocking(true)?;
            let end = Instant::now() + SETUP_TIMEOUT;
            let s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => return Err(e).context("waiting for the peer to connect"),
                }
            };
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            (End::Tcp(s), peer)
        }
        Mech::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            cmd.arg("--addr").arg(s.local_addr()?.port().to_string());
            let peer = Peer::spawn(&mut cmd)?;
            s.set_read_timeout(Some(SETUP_TIMEOUT))?;
            let mut hello = [0u8; 16];
            let (_, from) = s.recv_from(&mut hello).context("waiting for the peer")?;
            s.connect(from)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            (End::Udp(s), peer)
        }
        other => bail!("{other} has no bare twin in ipc bench --raw"),
    };
    if spins(wait) {
        mine.set_nonblocking()?;
    }
    Ok((mine, peer))
}

/// The round trips of one bare ping-pong lasting about `d`.
pub fn measure(
    ctx: &mut Ctx,
    mech: Mech,
    size: usize,
    wait: WaitStrategy,
    d: Duration,
) -> Result<Histogram<u64>> {
    let (mut end_, peer) = connect(ctx, mech, size, wait)?;
    let mut msg = vec![b'P'; size];
    let mut buf = vec![0u8; size];
    let mut h = new_hist();
    let start = Instant::now();
    let (warm, stop) = (start + d / 10, start + d / 10 + d);
    let mut now = start;
    let mut samples = 0u64;
    while now < stop || samples < super::MIN_SAMPLES {
        if now >= stop + MSG_TIMEOUT {
            break;
        }
        let t0 = Instant::now();
        end_.send(&msg).context("bare send")?;
        let got = end_.recv(&mut buf).context("bare receive")?;
        now = Instant::now();
        if got && t0 >= warm {
            h.record((now - t0).as_nanos().max(1) as u64)?;
            samples += 1;
        }
    }
    msg[0] = b'E';
    end_.send(&msg).context("bare send")?;
    peer.finish()?;
    drop(end_);
    if samples == 0 {
        bail!("no bare round trip completed");
    }
    Ok(h)
}

/// The peer's side: echo every message until the one that starts with
/// `E`.
pub fn peer(a: &PeerArgs) -> Result<()> {
    let mech = a.mech.context("--mech is required")?;
    let stdin = || io::stdin().as_fd().try_clone_to_owned();
    let mut end_ = match mech {
        Mech::Pipe => End::Files {
            r: File::from(stdin()?),
            w: File::from(io::stdout().as_fd().try_clone_to_owned()?),
        },
        Mech::Fifo => {
            let dir = std::path::PathBuf::from(a.addr.clone().context("--addr is required")?);
            let open = |p: std::path::PathBuf| OpenOptions::new().read(true).write(true).open(p);
            End::Files {
                r: open(dir.join("a2b"))?,
                w: open(dir.join("b2a"))?,
            }
        }
        Mech::Unix => End::Stream(UnixStream::from(stdin()?)),
        Mech::UnixDgram | Mech::UnixSeq => End::Dgram(UnixDatagram::from(stdin()?)),
        Mech::Tcp => {
            let port = a.addr.clone().context("--addr is required")?;
            let s = TcpStream::connect(format!("127.0.0.1:{port}"))?;
            s.set_nodelay(true)?;
            End::Tcp(s)
        }
        Mech::Udp => {
            let port = a.addr.clone().context("--addr is required")?;
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(format!("127.0.0.1:{port}"))?;
            s.send(b"hello")?;
            s.set_read_timeout(Some(MSG_TIMEOUT))?;
            End::Udp(s)
        }
        other => bail!("{other} has no bare twin in ipc bench --raw"),
    };
    if spins(a.wait) {
        end_.set_nonblocking()?;
    }
    let mut buf = vec![0u8; a.size];
    loop {
        if !end_.recv(&mut buf)? {
            continue; // UDP: a lost datagram; the parent moves on
        }
        if buf.first() == Some(&b'E') {
            return Ok(());
        }
        end_.send(&buf)?;
    }
}
