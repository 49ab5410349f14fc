//! `ipc send ADDR [MESSAGE...] [--file PATH]... [--whole | -0] [--lines] [--timeout SECS]`

use std::ffi::OsString;
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ipckit::frame::Framing;
use ipckit::{Deadline, MessageSender, SendTimeoutError};

use crate::addr::{Addr, AddrExt, FORMS};
use crate::TimedOut;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to send.
    #[arg(value_name = "ADDR", long_help = format!(
        "Where to send: {FORMS}. Several processes may write to one FIFO, but \
         only writes of at most PIPE_BUF ({PIPE_BUF}) bytes are atomic: larger \
         messages from several writers interleave and corrupt the stream, so \
         ipc send warns about them (give each writer its own FIFO, or use \
         unix-dgram: or mq: for many writers)."))]
    addr: Addr,
    /// Messages to send, one message each; with none (and no --file), each
    /// line of standard input is one message.
    #[arg(value_name = "MESSAGE")]
    messages: Vec<OsString>,
    /// Send the contents of the file at PATH as one message (again for
    /// more; after the MESSAGE arguments).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Standard input, all of it, is one message (newlines included).
    #[arg(long, conflicts_with_all = ["messages", "files", "null"])]
    whole: bool,
    /// Messages on standard input end with a NUL byte instead of a newline
    /// (as from find -print0), so they may contain newlines.
    #[arg(short = '0', long = "null", conflicts_with_all = ["messages", "files"])]
    null: bool,
    /// The largest message to send, in bytes (default 16 MiB, as ipc recv
    /// takes by default): a larger one is refused before anything of it is
    /// sent. Give the receiver the same --max-size.
    #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
    max_size: Option<usize>,
    /// On byte streams (fifo, unix, tcp), send each message as one line
    /// instead of a length-prefixed frame (for cat, socat, nc).
    #[arg(long)]
    lines: bool,
    /// Give up after SECS seconds (waiting for the peer to open, accept or
    /// take a message; 0: only if that needs no waiting).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// Priority of each message on a POSIX queue (mq:, 0 to 32767) or a
    /// mailbox (mailbox:, pid:, 0 to 4294967295); higher priorities are
    /// received first.
    #[arg(long, value_name = "P")]
    priority: Option<u32>,
    /// Type of each message on a System V queue (sysv-mq:) or a mailbox, 1
    /// or more (default 1); receivers select messages by type.
    #[arg(long = "type", value_name = "T", allow_negative_numbers = true)]
    mtype: Option<i64>,
    /// On a mailbox: the message's id (at most 255 bytes). The broker
    /// stores a message with an id it saw within the mailbox's dedup window
    /// only once, so a send can be retried safely. With several messages
    /// they get ID.1, ID.2, ...
    #[arg(long, value_name = "ID")]
    id: Option<String>,
}

/// Sends to a mailbox or a process's inbox with the type, priority and id
/// ipc send was given, and says when the broker did not store a message.
struct MailboxOut {
    client: ipckit::mailbox::Client,
    to: String,
    addr: String,
    mtype: i64,
    priority: u32,
    id: Option<String>,
    /// Messages in all (ids get a suffix when more than one).
    total: usize,
    sent: usize,
}

impl MessageSender for MailboxOut {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        use ipckit::mailbox::{Message, Outcome};
        self.sent += 1;
        let id = self.id.as_ref().map(|id| {
            if self.total == 1 {
                id.clone()
            } else {
                format!("{id}.{}", self.sent)
            }
        });
        let mut m = Message::new(msg)
            .with_type(self.mtype)
            .with_priority(self.priority);
        if let Some(id) = &id {
            m = m.with_id(id);
        }
        match self.client.send_message(&self.to, m, deadline) {
            Ok(r) => {
                match r.outcome {
                    Outcome::Stored => {}
                    Outcome::Duplicate => eprintln!(
                        "ipc send: {} already had a message with id {} (seq {}): not stored again",
                        self.addr,
                        id.as_deref().unwrap_or(""),
                        r.seq
                    ),
                    Outcome::NoReceivers => eprintln!(
                        "ipc send: nobody receives from {} (a mailbox with retention interest keeps \
                         messages for its receivers only), so the message was dropped",
                        self.addr
                    ),
                }
                Ok(())
            }
            Err(e) => Err(e.into_send_error(deadline)),
        }
    }
}

/// The largest write to a pipe or FIFO that is atomic (`pipe(7)`).
const PIPE_BUF: usize = 4096;

/// The largest message `ipc send` takes without --max-size: the largest
/// message a framed stream carries by default.
const DEFAULT_MAX: usize = ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE;

/// Reads one record ended by `end` (without it) into `line`; false at the
/// end of input. Stops reading, with an error, as soon as a record is
/// longer than `max`: nothing more is read or kept.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, end: u8, max: usize) -> Result<bool> {
    line.clear();
    loop {
        let buf = input.fill_buf().context("reading standard input")?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|&b| b == end) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            let what = if end == 0 {
                "a NUL-ended message"
            } else {
                "a line"
            };
            anyhow::bail!(
                "{what} of standard input is longer than {max} bytes, the largest message ipc \
                 send takes (--max-size raises it): stopped reading there, and nothing of it \
                 was sent"
            );
        }
        line.extend_from_slice(&buf[..take]);
        input.consume(take + usize::from(done));
        if done {
            return Ok(true);
        }
    }
}

/// Reads all of `input` as one message, refusing (before sending anything)
/// more than `max` bytes; `what` names it in errors.
fn read_whole(input: impl Read, what: &str, max: usize) -> Result<Vec<u8>> {
    let mut msg = Vec::new();
    input
        .take(max as u64 + 1)
        .read_to_end(&mut msg)
        .with_context(|| format!("reading {what}"))?;
    if msg.len() > max {
        anyhow::bail!(
            "{what} is longer than {max} bytes, the largest message ipc send takes (--max-size \
             raises it): nothing was sent"
        );
    }
    Ok(msg)
}

/// Opens the file at `path` to be sent as one message, its size checked
/// before anything is read (and before anything is sent).
fn open_file(path: &Path, max: usize) -> Result<(std::fs::File, String)> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("--file {}: cannot open it", path.display()))?;
    let what = format!("--file {}", path.display());
    let meta = f.metadata().with_context(|| what.clone())?;
    if meta.is_dir() {
        anyhow::bail!("{what} is a directory: give a file");
    }
    if meta.is_file() && meta.len() > max as u64 {
        anyhow::bail!(
            "{what} has {} bytes, more than the largest message ipc send takes ({max}; \
             --max-size raises it): nothing was sent",
            meta.len()
        );
    }
    Ok((f, what))
}

/// Refuses a message `ipc send` must not send: over the limit, or holding
/// a newline where a newline ends messages.
fn check(msg: &[u8], max: usize, lines: bool) -> Result<()> {
    if msg.len() > max {
        anyhow::bail!(
            "a message of {} bytes is longer than {max}, the largest ipc send takes (--max-size \
             raises it): it was not sent",
            msg.len()
        );
    }
    if lines && msg.contains(&b'\n') {
        anyhow::bail!(
            "a message holds a newline, and with --lines a newline ends a message: the receiver \
             would get it in pieces, so it was not sent (leave out --lines to send it in one \
             length-prefixed frame)"
        );
    }
    Ok(())
}

/// Warns (and returns true) if a message to a FIFO is too large to be
/// written atomically: several writers' messages could interleave.
fn warn_if_not_atomic(addr: &Addr, len: usize, lines: bool) -> bool {
    // The header (4 bytes) or the newline goes in the same write.
    let (extra, what) = if lines {
        (1, "newline")
    } else {
        (4, "4-byte header")
    };
    if !matches!(addr, Addr::Fifo(_)) || len + extra <= PIPE_BUF {
        return false;
    }
    eprintln!(
        "ipc: warning: a message of {len} bytes is over PIPE_BUF ({PIPE_BUF}) with its {what}: \
         if other processes write to {addr} at the same time, the messages can interleave and \
         the reader gets garbage (one FIFO per writer, or unix-dgram: or mq:, avoids that)"
    );
    true
}

/// Opens (creating if needed, mode 0600) a POSIX queue that stays after exit.
pub fn open_queue(name: &str, access: ipckit::mq::Access) -> Result<ipckit::mq::PosixQueue> {
    Ok(ipckit::mq::PosixQueue::builder(name)
        .access(access)
        .keep(true)
        .create_or_open()?)
}

/// Rings `ipc` makes: 64 slots for messages up to 64 KiB, for many
/// senders and receivers.
const RING_SLOTS: usize = 64;
const RING_MAX_MESSAGE: usize = 64 * 1024;

/// Opens (creating if needed, mode 0600) a ring that stays after exit.
pub fn open_ring(name: &str) -> Result<ipckit::ring::Ring> {
    Ok(ipckit::ring::Ring::builder(name)
        .capacity(RING_SLOTS)
        .max_message_size(RING_MAX_MESSAGE)
        .multi(true)
        .keep(true)
        .create_or_open()?)
}

/// How `ipc` opens what it sends to: queues and rings are made if missing
/// (mode 0600) and stay for the next command.
pub fn options(lines: bool, timeout: Option<Duration>) -> ipckit::endpoint::Options {
    ipckit::endpoint::Options::new()
        .framing(if lines {
            Framing::Lines
        } else {
            Framing::LengthPrefixed
        })
        .create(true)
        .keep(true)
        .timeout(timeout)
        .ring_capacity(RING_SLOTS)
        .ring_max_message_size(RING_MAX_MESSAGE)
}

/// Opens (creating if needed, mode 0600) a System V queue that stays after exit.
pub fn open_sysv(
    key: ipckit::sysv::Key,
    access: ipckit::sysv::Access,
) -> Result<ipckit::sysv::MessageQueue> {
    Ok(ipckit::sysv::MessageQueue::builder(key)
        .access(access)
        .keep(true)
        .create_or_open()?)
}

/// Opens a sending endpoint for `addr`.
fn open_with(addr: &Addr, opts: &ipckit::endpoint::Options) -> Result<Box<dyn MessageSender>> {
    let conn = ipckit::connect_with(addr, opts).map_err(|e| timeout_or(e, addr))?;
    Ok(Box::new(conn))
}

fn timeout_or(e: io::Error, addr: &Addr) -> anyhow::Error {
    if e.kind() == io::ErrorKind::TimedOut {
        TimedOut(format!("{addr}: {e}")).into()
    } else if let (Addr::Fifo(path), io::ErrorKind::NotFound) = (addr, e.kind()) {
        // In the shell's words rather than the library's.
        let path = path.display();
        anyhow::anyhow!(
            "cannot open {addr}: there is no FIFO at {path}: start the reader first (ipc recv \
             {addr} makes it), or make it with mkfifo {path}"
        )
    } else {
        anyhow::Error::new(e).context(format!("cannot open {addr}"))
    }
}

pub fn run(args: Args) -> Result<()> {
    args.addr.check_channel()?;
    let timeout = args.timeout;
    let deadline = timeout.map_or(Deadline::Never, Deadline::after);
    let mailbox = matches!(args.addr, Addr::Mailbox(_) | Addr::Pid(_));
    if args.mtype.is_some() && !mailbox && !matches!(args.addr, Addr::SysvMq(_)) {
        anyhow::bail!(
            "--type applies to System V queues (sysv-mq:KEY) and mailboxes (mailbox:NAME, \
             pid:PID) only"
        );
    }
    if args.id.is_some() && !mailbox {
        anyhow::bail!("--id applies to mailboxes (mailbox:NAME, pid:PID) only");
    }
    if let Addr::Mailbox(name) = &args.addr {
        ipckit::mailbox::validate_name(name).map_err(|_| {
            anyhow::anyhow!(
                "{} is a pattern: a message goes to one mailbox (patterns are for ipc recv)",
                args.addr
            )
        })?;
    }
    if let Some(t) = args.mtype.filter(|&t| t < 1) {
        anyhow::bail!(
            "--type {t} is out of range: a message's type is 1 or more (0 and negative values \
             only select messages in ipc recv)"
        );
    }
    if let Some(id) = &args.id {
        if id.is_empty() || id.len() > 255 {
            anyhow::bail!("--id takes 1 to 255 bytes, not {}", id.len());
        }
    }
    // Everything that can be checked is checked before anything is opened
    // or sent.
    let max = args.max_size.unwrap_or(DEFAULT_MAX);
    for m in &args.messages {
        check(m.as_bytes(), max, args.lines)?;
    }
    let files = args
        .files
        .iter()
        .map(|p| open_file(p, max))
        .collect::<Result<Vec<_>>>()?;
    let whole = if args.whole {
        let msg = read_whole(io::stdin().lock(), "standard input", max)?;
        check(&msg, max, args.lines)?;
        Some(msg)
    } else {
        None
    };
    let total = args.messages.len() + files.len() + whole.is_some() as usize;
    let mut tx: Box<dyn MessageSender> = match (&args.addr, args.priority) {
        (Addr::Mailbox(_) | Addr::Pid(_), p) => {
            let client = crate::mailbox::connect(None)?;
            let to = match &args.addr {
                Addr::Mailbox(n) => n.clone(),
                Addr::Pid(0) => ipckit::mailbox::inbox(client.me().pid),
                Addr::Pid(p) => ipckit::mailbox::inbox(*p as i32),
                _ => unreachable!(),
            };
            Box::new(MailboxOut {
                client,
                to,
                addr: args.addr.to_string(),
                mtype: args.mtype.unwrap_or(1),
                priority: p.unwrap_or(0),
                id: args.id.clone(),
                // Lines of standard input: each gets a numbered id.
                total: if total == 0 { 2 } else { total },
                sent: 0,
            })
        }
        (Addr::SysvMq(key), None) => {
            let t = args.mtype.unwrap_or(1);
            if t < 1 {
                anyhow::bail!(
                    "--type {t} is out of range: a System V message's type is 1 or more \
                     (0 and negative values only select messages in ipc recv)"
                );
            }
            let mut q = open_sysv(*key, ipckit::sysv::Access::Send)?;
            q.set_default_type(t)?;
            Box::new(q)
        }
        (Addr::Mq(name), Some(p)) => {
            if p >= ipckit::mq::PRIO_MAX {
                anyhow::bail!(
                    "--priority {p} is out of range: POSIX queues take 0 to {}",
                    ipckit::mq::PRIO_MAX - 1
                );
            }
            let mut q = open_queue(name, ipckit::mq::Access::Send)?;
            q.set_default_priority(p)?;
            Box::new(q)
        }
        (_, Some(_)) => anyhow::bail!(
            "--priority applies to POSIX queues (mq:/NAME) and mailboxes (mailbox:NAME, pid:PID) only"
        ),
        _ => {
            let mut opts = options(args.lines, timeout);
            if let Some(max) = args.max_size {
                opts = opts.max_message_size(max);
            }
            open_with(&args.addr, &opts)?
        }
    };
    let mut warned = false;
    let mut send =
        |msg: &[u8]| -> Result<()> {
            check(msg, max, args.lines)?;
            if !warned {
                warned = warn_if_not_atomic(&args.addr, msg.len(), args.lines);
            }
            match tx.send_until(msg, deadline) {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Timeout(())) => Err(TimedOut(format!(
                    "timed out sending to {} ({} bytes not sent)",
                    args.addr,
                    msg.len()
                ))
                .into()),
                // Time ran out in the middle of a message on a byte stream.
                Err(SendTimeoutError::Io(e, ())) if e.kind() == io::ErrorKind::TimedOut => {
                    Err(TimedOut(format!("sending to {}: {e}", args.addr)).into())
                }
                Err(e) => Err(anyhow::Error::new(io::Error::from(e))
                    .context(format!("sending to {}", args.addr))),
            }
        };
    if let Some(msg) = whole {
        send(&msg)?;
    } else if args.messages.is_empty() && files.is_empty() {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        let end = if args.null { 0 } else { b'\n' };
        while read_line(&mut stdin, &mut line, end, max)? {
            send(&line)?;
        }
    } else {
        for m in &args.messages {
            send(m.as_bytes())?;
        }
        for (f, what) in files {
            send(&read_whole(f, &what, max)?)?;
        }
    }
    Ok(())
}
