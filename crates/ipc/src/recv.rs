//! `ipc recv ADDR [-n N] [--timeout SECS] [--lines] [-k] [--format F] [-0]`

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipckit::frame::Framing;
use ipckit::{Deadline, MessageReceiver, RecvTimeoutError};

use crate::addr::{Addr, AddrExt, FORMS};
use crate::format::{Format, Meta, Writer};
use crate::send::{open_queue, open_sysv};
use crate::{StdoutClosed, TimedOut};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to receive.
    #[arg(value_name = "ADDR", long_help = format!(
        "Where to receive: {FORMS}. unix, unix-seq and tcp listen, print the \
         address they listen on (the port bound for tcp:HOST:0) and take one \
         connection; with -n or -k the next ones, one after another. \
         unix-dgram and udp bind; fifo creates the FIFO if it is missing (and \
         removes it on exit) and reads one writer after another like \
         connections; queues and rings are made if missing and kept."))]
    addr: Addr,
    /// Stop after N messages (default: when the peer closes; datagrams and
    /// queues: never).
    #[arg(short = 'n', value_name = "N", value_parser = crate::args::count)]
    count: Option<u64>,
    /// Keep going when a peer closes: take the next connection (unix, tcp,
    /// unix-seq), the FIFO's next writer, or the ring's next sender, until
    /// -n messages or --timeout.
    #[arg(short = 'k', long)]
    keep: bool,
    /// How to print each message. text: as it is, or, if it holds a newline
    /// or another control character, is not UTF-8 or starts with $', quoted
    /// as bash's $'…' (pasted into bash it gives the same bytes). hex: two
    /// hex digits per byte. raw: the bytes as they are. json: one object per
    /// line, {"len":N,"text":"…"} (or "base64":"…" when not UTF-8), with
    /// "priority" (mq:), "type" (sysv-mq:), "pid" and "uid" of the sender
    /// (unix:, unix-seq:) and "conn" (which connection, from 1) where known.
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    format: Format,
    /// End each message with a NUL byte instead of a newline (for xargs -0);
    /// newlines in a message then print as they are.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// The largest message to take, in bytes (default 16 MiB; a queue or
    /// ring never carries more than its own limit). A larger one is an
    /// error, refused before anything is allocated for it.
    #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
    max_size: Option<usize>,
    /// Say nothing on stderr about where it listens or what it waits for.
    #[arg(short, long)]
    quiet: bool,
    /// Give up after SECS seconds in all, exiting with status 1 (0: take
    /// only what is there already).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// On byte streams (fifo, unix, tcp), a message is one line instead of a
    /// length-prefixed frame (for echo, cat, socat, nc).
    #[arg(long)]
    lines: bool,
    /// On a POSIX queue (mq:), print each message's priority first,
    /// separated from the message by a tab (json always has it).
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
    /// On a System V queue (sysv-mq:) or a mailbox, print each message's
    /// type first, separated from the message by a tab (json always has
    /// it).
    #[arg(long)]
    show_type: bool,
    /// On a mailbox: receive as a member of group G; the members of a
    /// group share its messages, each message going to one of them (for
    /// mailboxes made with --retention interest or limits; a work queue's
    /// receivers always share).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// On a mailbox: acknowledge each message once it is printed (the
    /// default), so what is not printed (ipc recv killed, or -n reached)
    /// goes to another receiver.
    #[arg(long, overrides_with = "no_ack")]
    ack: bool,
    /// On a mailbox: take messages without acknowledging them (at most
    /// once: a message is done once the broker has sent it here).
    #[arg(long, overrides_with = "ack")]
    no_ack: bool,
}

/// A message over the limit, in the words of `ipc recv`.
fn too_large(big: &ipckit::MessageTooLarge) -> String {
    let max = big.max;
    match big.unit {
        ipckit::Unit::Line => format!(
            "no newline in the first {} bytes: ipc recv --lines takes lines of at most {max} \
             bytes (--max-size raises that; does the peer end each message with a newline?)",
            big.len
        ),
        ipckit::Unit::Frame => format!(
            "a message announced as {} bytes, over ipc recv's limit of {max} (--max-size \
             raises it): is the peer speaking ipc's framing (a 4-byte little-endian length, \
             then the payload)? For newline-separated text, use --lines",
            big.len
        ),
        ipckit::Unit::Message => format!(
            "a message of {} bytes, over ipc recv's limit of {max} (--max-size raises it, up \
             to the queue's or ring's own limit)",
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

/// What `ipc recv` is waiting for, said on stderr once a wait has lasted
/// a second (so a silent terminal is never a mystery).
#[derive(Clone)]
struct Notice {
    state: Option<Arc<Mutex<Waiting>>>,
}

struct Waiting {
    /// What it waits for now (`None`: busy).
    what: Option<Wait>,
    since: Instant,
    told: bool,
    /// Where, as a peer would name it.
    addr: String,
    /// Whether the peer should send lines (for the suggested command).
    lines: bool,
}

/// What `ipc recv` can be waiting for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Message,
    Connection,
    Writer,
    Sender,
}

impl Waiting {
    /// The notice, built only when it is said.
    fn text(&self, what: Wait) -> String {
        let addr = &self.addr;
        let lines = if self.lines { " --lines" } else { "" };
        let try_it = format!("(try: ipc send{lines} {addr} hello)");
        match what {
            Wait::Message => format!("a message on {addr}"),
            Wait::Connection => format!("a connection on {addr} {try_it}"),
            Wait::Writer => format!("a writer to open {addr} {try_it}"),
            Wait::Sender => format!("a sender on {addr} {try_it}"),
        }
    }
}

/// How long a wait lasts before ipc recv says what it is waiting for.
const SILENCE: Duration = Duration::from_secs(1);

impl Notice {
    /// With `quiet`, says nothing (and starts no thread).
    fn new(quiet: bool, addr: String, lines: bool) -> Notice {
        if quiet {
            return Notice { state: None };
        }
        let state = Arc::new(Mutex::new(Waiting {
            what: None,
            since: Instant::now(),
            told: false,
            addr,
            lines,
        }));
        let watched = Arc::downgrade(&state);
        // Looks four times a second: cheaper for the receive loop than
        // waking this thread on every message.
        std::thread::spawn(move || loop {
            std::thread::sleep(SILENCE / 4);
            let Some(state) = watched.upgrade() else {
                return;
            };
            let mut w = state.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(what), false) = (w.what, w.told) {
                if w.since.elapsed() >= SILENCE {
                    eprintln!("ipc recv: waiting for {}", w.text(what));
                    w.told = true;
                }
            }
        });
        Notice { state: Some(state) }
    }

    /// A wait for `what` begins (said after a second): no allocation, as
    /// it happens for every message.
    fn waiting(&self, what: Wait) {
        if let Some(s) = &self.state {
            let mut w = s.lock().unwrap_or_else(|e| e.into_inner());
            w.what = Some(what);
            w.since = Instant::now();
            w.told = false;
        }
    }

    /// The address found once listening (the port bound for tcp:…:0).
    fn set_address(&self, addr: &str) {
        if let Some(s) = &self.state {
            s.lock().unwrap_or_else(|e| e.into_inner()).addr = addr.to_owned();
        }
    }

    /// The wait is over.
    fn done(&self) {
        if let Some(s) = &self.state {
            s.lock().unwrap_or_else(|e| e.into_inner()).what = None;
        }
    }
}

struct Printer {
    out: io::StdoutLock<'static>,
    writer: Writer,
    scratch: Vec<u8>,
    left: Option<u64>,
    keep: bool,
    deadline: Deadline,
    /// The address as a peer would use it (the bound port for tcp:…:0).
    addr: String,
    /// On a byte stream with length-prefixed frames (not --lines).
    framed: bool,
    notice: Notice,
    /// What is known of every message on the current connection.
    meta: Meta,
}

impl Printer {
    fn drain(&mut self, rx: &mut dyn MessageReceiver) -> Result<Stop> {
        self.drain_with(|buf, d, _| rx.recv_until(buf, d))
    }

    /// Prints what `recv` returns, with what it adds to the metadata.
    fn drain_with(
        &mut self,
        mut recv: impl FnMut(&mut Vec<u8>, Deadline, &mut Meta) -> Result<(), RecvTimeoutError>,
    ) -> Result<Stop> {
        let mut buf = Vec::new();
        loop {
            if self.left == Some(0) {
                return Ok(Stop::Done);
            }
            self.notice.waiting(Wait::Message);
            let got = recv(&mut buf, self.deadline, &mut self.meta);
            self.notice.done();
            match got {
                Ok(()) => {
                    match self
                        .writer
                        .write(&mut self.out, &mut self.scratch, &buf, &self.meta)
                    {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                            return Err(StdoutClosed.into())
                        }
                        r => r.context("writing to stdout")?,
                    }
                    self.left = self.left.map(|n| n - 1);
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(Stop::PeerClosed),
                Err(RecvTimeoutError::Timeout) => return Err(self.timed_out()),
                Err(RecvTimeoutError::Io(e)) => return Err(self.failed(e)),
            }
        }
    }

    /// A receive that failed, with what to do about it in ipc recv's terms.
    fn failed(&self, e: io::Error) -> anyhow::Error {
        if let Some(big) = ipckit::MessageTooLarge::find(&e) {
            return anyhow::anyhow!("receiving on {}: {}", self.addr, too_large(big));
        }
        // A frame cut short: often a peer that writes text, not frames
        // (`printf ab | nc`: "got 2 of the 4 header bytes").
        if self.framed && e.kind() == io::ErrorKind::UnexpectedEof {
            return anyhow::anyhow!(
                "receiving on {}: {e} (if the peer sends lines of text, as echo, nc or socat do, \
                 use --lines)",
                self.addr
            );
        }
        anyhow::Error::new(e).context(format!("receiving on {}", self.addr))
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
        matches!(stop, Stop::PeerClosed) && (self.left.is_some() || self.keep)
    }

    fn accept_err(&self, e: io::Error) -> anyhow::Error {
        if e.kind() == io::ErrorKind::TimedOut {
            let what = if self.addr.starts_with("fifo:") {
                "a writer to open"
            } else {
                "a connection on"
            };
            TimedOut(format!("timed out waiting for {what} {}", self.addr)).into()
        } else {
            anyhow::Error::new(e).context(format!("accepting on {}", self.addr))
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    args.addr.check_channel()?;
    let timeout = args.timeout;
    let mailbox = matches!(args.addr, Addr::Mailbox(_) | Addr::Pid(_));
    if args.show_priority && !mailbox && !matches!(args.addr, Addr::Mq(_)) {
        anyhow::bail!(
            "--show-priority applies to POSIX queues (mq:/NAME) and mailboxes (mailbox:NAME) only"
        );
    }
    let sysv = matches!(args.addr, Addr::SysvMq(_));
    if (args.show_type || args.except || args.mtype.is_some()) && !sysv && !mailbox {
        anyhow::bail!(
            "--type, --except and --show-type apply to System V queues (sysv-mq:KEY) and \
             mailboxes (mailbox:NAME) only"
        );
    }
    if (args.group.is_some() || args.ack || args.no_ack) && !mailbox {
        anyhow::bail!(
            "--group, --ack and --no-ack apply to mailboxes (mailbox:NAME, pid:self) only"
        );
    }
    if let Addr::Pid(p) = args.addr {
        if p != 0 && p != std::process::id() {
            anyhow::bail!(
                "pid:{p} is another process's inbox: ipc recv takes its own, pid:self (send to \
                 pid:{p} with ipc send)"
            );
        }
    }
    let selector = ipckit::sysv::Selector::from_msgtyp(args.mtype.unwrap_or(0), args.except)
        .map_err(|_| anyhow::anyhow!("--except needs --type T with T greater than 0"))?;
    let framing = if args.lines {
        Framing::Lines
    } else {
        Framing::LengthPrefixed
    };
    crate::cleanup::install_cleanup()
        .context("setting up the cleanup on SIGINT, SIGTERM and SIGHUP")?;
    let mut p = Printer {
        out: io::stdout().lock(),
        writer: Writer {
            format: args.format,
            end: if args.null { 0 } else { b'\n' },
            tag: args.show_priority || args.show_type,
        },
        scratch: Vec::new(),
        left: args.count,
        keep: args.keep,
        deadline: timeout.map_or(Deadline::Never, Deadline::after),
        addr: args.addr.to_string(),
        framed: !args.lines && matches!(args.addr, Addr::Fifo(_) | Addr::Unix(_) | Addr::Tcp(_)),
        notice: Notice::new(args.quiet, args.addr.to_string(), args.lines),
        meta: Meta::default(),
    };
    let limit = |rx: &mut dyn MessageReceiver| {
        if let Some(max) = args.max_size {
            rx.set_max_message_size(max);
        }
    };
    match &args.addr {
        Addr::Fifo(_)
        | Addr::Unix(_)
        | Addr::UnixSeq(_)
        | Addr::Tcp(_)
        | Addr::UnixDgram(_)
        | Addr::Udp(_) => {
            // What it makes (a socket file, a FIFO) goes when it exits.
            let mut opts = ipckit::endpoint::Options::new().framing(framing);
            if let Some(max) = args.max_size {
                opts = opts.max_message_size(max);
            }
            let l = ipckit::listen_with(&args.addr, &opts)?;
            crate::cleanup::remove_on_signal(l.created_path());
            p.addr = l.local_address()?.to_string();
            p.notice.set_address(&p.addr);
            if !args.quiet {
                eprintln!("ipc recv: listening on {}", p.addr);
            }
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
            limit(&mut q);
            p.drain_with(|buf, d, meta| {
                meta.priority = Some(q.recv_priority_until(buf, d)?);
                Ok(())
            })?;
        }
        Addr::Shm(_) | Addr::SysvShm(_) | Addr::Sem(_) | Addr::SysvSem(_) => {
            return Err(args.addr.not_a_channel())
        }
        Addr::Ring(name) => {
            let mut rx = crate::send::open_ring(name)?.receiver()?;
            limit(&mut rx);
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
                // With -n not reached, or -k, wait for the next sender, as
                // for a FIFO's next writer.
                if !p.again(stop) {
                    break;
                }
                if p.remaining() == Some(Duration::ZERO) {
                    return Err(p.timed_out());
                }
                p.notice.waiting(Wait::Sender);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Addr::Mailbox(_) | Addr::Pid(_) => recv_mailbox(&mut p, &args, selector)?,
        Addr::SysvMq(key) => {
            let mut q = open_sysv(*key, ipckit::sysv::Access::Receive)?;
            limit(&mut q);
            p.drain_with(|buf, d, meta| {
                meta.mtype = Some(q.recv_select_until(buf, selector, d)?);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Receives from a mailbox (or this process's inbox), acknowledging each
/// message once it is printed (without --no-ack).
fn recv_mailbox(p: &mut Printer, args: &Args, selector: ipckit::sysv::Selector) -> Result<()> {
    use ipckit::mailbox::{AckPolicy, SubscribeOptions};
    let mut client = crate::mailbox::connect(None)?;
    let opts = SubscribeOptions {
        group: args.group.clone(),
        selector,
        ack: if args.no_ack {
            AckPolicy::None
        } else {
            AckPolicy::Explicit
        },
        // No more messages held here than -n takes.
        max_in_flight: args.count.map_or(256, |n| n.clamp(1, 256) as u32),
    };
    let pattern = match &args.addr {
        Addr::Mailbox(n) => n.clone(),
        _ => ipckit::mailbox::inbox(client.me().pid),
    };
    client
        .subscribe(&pattern, &opts)
        .with_context(|| format!("receiving from {}", args.addr))?;
    if !args.quiet {
        eprintln!("ipc recv: receiving from mailbox {pattern}");
    }
    let max = args
        .max_size
        .unwrap_or(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE);
    let mut pending: Option<ipckit::mailbox::Delivery> = None;
    let r = p.drain_with(|buf, deadline, meta| {
        // The message before this one was printed: it is done.
        if let Some(d) = pending.take() {
            client.ack(&d);
        }
        let d = client
            .recv_until(deadline)
            .map_err(ipckit::mailbox::Error::into_recv_error)?;
        if d.payload.len() > max {
            let why = format!("{} bytes, over ipc recv's --max-size {max}", d.payload.len());
            let _ = client.reject(&d, &why);
            return Err(RecvTimeoutError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a message of {} (moved to the dead letters of {}; --max-size raises the limit)",
                    why, d.mailbox
                ),
            )));
        }
        *meta = Meta {
            priority: Some(d.priority),
            mtype: Some(d.mtype),
            from: Some(ipckit::socket::unix::PeerCredentials {
                pid: d.sender.pid,
                uid: d.sender.uid,
                gid: d.sender.gid,
            }),
            conn: None,
            mailbox: Some(crate::format::MailboxMeta {
                mailbox: d.mailbox.clone(),
                seq: d.seq,
                id: d.id.clone(),
                deliveries: d.deliveries,
                dead_reason: d.dead_reason.clone(),
            }),
        };
        buf.clear();
        buf.extend_from_slice(&d.payload);
        pending = Some(d);
        Ok(())
    });
    // The last message printed is done too (unless printing failed).
    if let (Some(d), Ok(_)) = (pending.take(), &r) {
        client.ack(&d);
    }
    client
        .flush()
        .context("acknowledging the messages printed")?;
    match r? {
        Stop::Done => Ok(()),
        Stop::PeerClosed => {
            if !args.quiet {
                eprintln!("ipc recv: {} was removed", args.addr);
            }
            Ok(())
        }
    }
}

/// Takes connections one after another (`open` gets the time left) and
/// prints their messages, until `-n` is reached or, without `-n` or `-k`,
/// the first connection ends.
fn serve(
    p: &mut Printer,
    mut open: impl FnMut(Option<Duration>) -> io::Result<ipckit::Connection>,
) -> Result<()> {
    let mut n = 0;
    loop {
        p.notice.waiting(if p.addr.starts_with("fifo:") {
            Wait::Writer
        } else {
            Wait::Connection
        });
        let opened = open(p.remaining());
        p.notice.done();
        let mut c = opened.map_err(|e| p.accept_err(e))?;
        n += 1;
        p.meta = Meta {
            from: c.peer_credentials(),
            conn: Some(n),
            ..Meta::default()
        };
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
