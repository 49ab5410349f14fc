//! `ipc recv ADDR [-n N] [--timeout SECS] [--lines]`

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use ipckit::frame::Framing;
use ipckit::named::CreatedPath;
use ipckit::{Deadline, MessageReceiver, RecvTimeoutError};

use crate::addr::{Addr, AddrExt, FORMS};
use crate::send::{open_queue, open_sysv};
use crate::{StdoutClosed, TimedOut};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to receive.
    #[arg(value_name = "ADDR", long_help = format!(
        "Where to receive: {FORMS}. unix, unix-seq and tcp listen and accept \
         connections one after another; unix-dgram and udp bind; fifo creates \
         the FIFO if it is missing (and removes it on exit)."))]
    addr: Addr,
    /// Stop after N messages (default: when the peer closes; datagrams: never).
    #[arg(short = 'n', value_name = "N", value_parser = crate::args::count)]
    count: Option<u64>,
    /// Give up after SECS seconds in all, exiting with status 1 (0: take
    /// only what is there already).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// On byte streams (fifo, unix, tcp), a message is one line instead of a
    /// length-prefixed frame (for echo, cat, socat, nc).
    #[arg(long)]
    lines: bool,
    /// On a POSIX queue (mq:), print each message's priority first,
    /// separated from the message by a tab.
    #[arg(long)]
    show_priority: bool,
    /// On a System V queue (sysv-mq:), which messages to take, as msgrcv's
    /// msgtyp: 0 the first of any type (default), T > 0 the first of type T,
    /// T < 0 the first of the lowest type up to |T|.
    #[arg(long = "type", value_name = "T", allow_negative_numbers = true)]
    mtype: Option<i64>,
    /// With --type T > 0: take the first message NOT of type T (MSG_EXCEPT).
    #[arg(long)]
    except: bool,
    /// On a System V queue (sysv-mq:), print each message's type first,
    /// separated from the message by a tab.
    #[arg(long)]
    show_type: bool,
}

/// Paths this process created and must remove even when interrupted: each
/// is removed only while it still is the file created (a file put there in
/// the meantime stays).
static CLEANUP: Mutex<Vec<CreatedPath>> = Mutex::new(Vec::new());

/// On SIGINT, SIGTERM or SIGHUP, removes the paths registered with
/// [`remove_on_signal`] and exits with the conventional status 128 + signal.
/// Installed before anything is created, so no interrupt can slip between.
fn install_cleanup() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            for p in CLEANUP.lock().expect("cleanup list").iter() {
                let _ = p.remove();
            }
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

fn remove_on_signal(created: Option<CreatedPath>) {
    if let Some(c) = created {
        CLEANUP.lock().expect("cleanup list").push(c);
    }
}

/// A message over the limit, in the words of `ipc recv`.
fn too_large(big: &ipckit::MessageTooLarge) -> String {
    let max = big.max;
    match big.unit {
        ipckit::Unit::Line => format!(
            "no newline in the first {} bytes: ipc recv --lines takes lines of at most {max} \
             bytes (does the peer end each message with a newline?)",
            big.len
        ),
        ipckit::Unit::Frame => format!(
            "a message announced as {} bytes, over ipc recv's limit of {max}: is the peer \
             speaking ipc's framing (a 4-byte little-endian length, then the payload)? For \
             newline-separated text, use --lines",
            big.len
        ),
        ipckit::Unit::Message => format!(
            "a message of {} bytes, over ipc recv's limit of {max}",
            big.len
        ),
    }
}

/// Why a receive loop on one endpoint stopped.
enum Stop {
    /// The requested number of messages arrived.
    Done,
    /// The peer closed the connection (or the FIFO's last writer left).
    PeerClosed,
}

struct Printer {
    out: io::StdoutLock<'static>,
    left: Option<u64>,
    deadline: Deadline,
    addr: String,
}

impl Printer {
    fn drain(&mut self, rx: &mut dyn MessageReceiver) -> Result<Stop> {
        self.drain_with(|buf, d| rx.recv_until(buf, d).map(|()| None))
    }

    /// Prints what `recv` returns, with its tag (a priority or a type)
    /// first when there is one.
    fn drain_with(
        &mut self,
        mut recv: impl FnMut(&mut Vec<u8>, Deadline) -> Result<Option<i64>, RecvTimeoutError>,
    ) -> Result<Stop> {
        let mut buf = Vec::new();
        loop {
            if self.left == Some(0) {
                return Ok(Stop::Done);
            }
            match recv(&mut buf, self.deadline) {
                Ok(tag) => {
                    let prefix = tag.map(|t| format!("{t}\t")).unwrap_or_default();
                    let written = self
                        .out
                        .write_all(prefix.as_bytes())
                        .and_then(|()| self.out.write_all(&buf))
                        .and_then(|()| self.out.write_all(b"\n"))
                        .and_then(|()| self.out.flush());
                    match written {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                            return Err(StdoutClosed.into())
                        }
                        r => r.context("writing to stdout")?,
                    }
                    self.left = self.left.map(|n| n - 1);
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(Stop::PeerClosed),
                Err(RecvTimeoutError::Timeout) => return Err(self.timed_out()),
                Err(RecvTimeoutError::Io(e)) => {
                    if let Some(big) = ipckit::MessageTooLarge::find(&e) {
                        anyhow::bail!("receiving on {}: {}", self.addr, too_large(big));
                    }
                    return Err(
                        anyhow::Error::new(e).context(format!("receiving on {}", self.addr))
                    );
                }
            }
        }
    }

    fn timed_out(&self) -> anyhow::Error {
        TimedOut(format!("timed out waiting for a message on {}", self.addr)).into()
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .instant()
            .map(|t| t.saturating_duration_since(std::time::Instant::now()))
    }

    /// Whether to go on with the next connection after `stop`.
    fn again(&self, stop: Stop) -> bool {
        matches!(stop, Stop::PeerClosed) && self.left.is_some()
    }

    fn accept_err(&self, e: io::Error) -> anyhow::Error {
        if e.kind() == io::ErrorKind::TimedOut {
            self.timed_out()
        } else {
            anyhow::Error::new(e).context(format!("accepting on {}", self.addr))
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    args.addr.check_channel()?;
    let timeout = args.timeout;
    if args.show_priority && !matches!(args.addr, Addr::Mq(_)) {
        anyhow::bail!("--show-priority applies to POSIX queues (mq:/NAME) only");
    }
    let sysv = matches!(args.addr, Addr::SysvMq(_));
    if (args.show_type || args.except || args.mtype.is_some()) && !sysv {
        anyhow::bail!(
            "--type, --except and --show-type apply to System V queues (sysv-mq:KEY) only"
        );
    }
    let selector = ipckit::sysv::Selector::from_msgtyp(args.mtype.unwrap_or(0), args.except)
        .map_err(|_| anyhow::anyhow!("--except needs --type T with T greater than 0"))?;
    let framing = if args.lines {
        Framing::Lines
    } else {
        Framing::LengthPrefixed
    };
    install_cleanup().context("setting up the cleanup on SIGINT, SIGTERM and SIGHUP")?;
    let mut p = Printer {
        out: io::stdout().lock(),
        left: args.count,
        deadline: timeout.map_or(Deadline::Never, Deadline::after),
        addr: args.addr.to_string(),
    };
    match &args.addr {
        Addr::Fifo(_)
        | Addr::Unix(_)
        | Addr::UnixSeq(_)
        | Addr::Tcp(_)
        | Addr::UnixDgram(_)
        | Addr::Udp(_) => {
            // What it makes (a socket file, a FIFO) goes when it exits.
            let opts = ipckit::endpoint::Options::new().framing(framing);
            let l = ipckit::listen_with(&args.addr, &opts)?;
            remove_on_signal(l.created_path());
            if l.has_connections() {
                // Connections, or a FIFO's writers as they come and go,
                // one after another.
                serve(&mut p, |t| timed(t, |t| l.accept_timeout(t), || l.accept()))?;
            } else {
                p.drain(&mut l.accept()?)?;
            }
        }
        Addr::Mq(name) => {
            let mut q = open_queue(name, ipckit::mq::Access::Receive)?;
            if args.show_priority {
                p.drain_with(|buf, d| q.recv_priority_until(buf, d).map(|p| Some(p.into())))?;
            } else {
                p.drain(&mut q)?;
            }
        }
        Addr::Shm(_) | Addr::SysvShm(_) | Addr::Sem(_) | Addr::SysvSem(_) => {
            return Err(args.addr.not_a_channel())
        }
        Addr::Ring(name) => {
            let mut rx = crate::send::open_ring(name)?.receiver()?;
            let mut told = 0;
            loop {
                let stop = p.drain(&mut rx)?;
                // Every sender has gone: say whether one died rather than
                // closed (once per death).
                let died = rx.senders_died();
                if matches!(stop, Stop::PeerClosed) && died > told {
                    eprintln!(
                        "ipc recv: {} of the senders on {} died without closing (killed, or \
                         crashed); messages they were writing are lost",
                        died - told,
                        args.addr
                    );
                    told = died;
                }
                // With -n not reached, wait for the next sender, as for a
                // FIFO's next writer.
                if !p.again(stop) {
                    break;
                }
                if p.remaining() == Some(Duration::ZERO) {
                    return Err(p.timed_out());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Addr::SysvMq(key) => {
            let mut q = open_sysv(*key, ipckit::sysv::Access::Receive)?;
            let show = args.show_type;
            p.drain_with(|buf, d| {
                let t = q.recv_select_until(buf, selector, d)?;
                Ok(show.then_some(t))
            })?;
        }
    }
    Ok(())
}

/// Takes connections one after another (`open` gets the time left) and
/// prints their messages, until `-n` is reached or, without `-n`, the first
/// connection ends.
fn serve<C: MessageReceiver>(
    p: &mut Printer,
    mut open: impl FnMut(Option<Duration>) -> io::Result<C>,
) -> Result<()> {
    loop {
        let mut c = open(p.remaining()).map_err(|e| p.accept_err(e))?;
        let stop = p.drain(&mut c)?;
        if !p.again(stop) {
            return Ok(());
        }
    }
}

/// Calls the timed variant when there is a time limit.
fn timed<C>(
    limit: Option<Duration>,
    with: impl FnOnce(Duration) -> io::Result<C>,
    without: impl FnOnce() -> io::Result<C>,
) -> io::Result<C> {
    match limit {
        Some(t) => with(t),
        None => without(),
    }
}
