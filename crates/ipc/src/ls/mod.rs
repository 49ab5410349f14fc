//! `ipc ls [-p PID] [--kind KIND] [--orphans] [--json]`: every IPC object
//! on the machine and who holds it, from `/proc` (each process's
//! descriptors and mappings, `/proc/sysvipc`), the kernel's `sock_diag(7)`
//! (Unix sockets and their peers), `/dev/shm` and `/dev/mqueue`, the
//! mailboxes of the broker at the default socket (or `--broker PATH`), and
//! the binder services of the service manager (`$IPCKIT_SERVICE_MANAGER`,
//! else its default address); ipckit's binder connections show as kind
//! `binder`.
//!
//! Objects held through descriptors are grouped by the file they are, so a
//! pipe shows both ends and every process that has either; a connected
//! Unix socket shows the process at the other end.
//!
//! JSON shape (`--json`): `{"objects": [OBJECT...], "unseen": [TEXT...]}`,
//! an OBJECT being `{"kind", "name", "address"?, "inode"?, "mode"?,
//! "owner"?, "bytes"?, "messages"?, "peer"?, "holders": [{"pid",
//! "command", "fd"?, "end"}], "orphan", "note"?}`; `unseen` says what this
//! run could not look at (other users' processes without root, sock_diag
//! refused, /dev/mqueue not mounted).

mod binder;
mod mailbox;
mod procs;
mod sockdiag;
mod sockfiles;
mod sysv;

use std::collections::BTreeMap;

pub use procs::owner;

use anyhow::Result;
use serde::Serialize;

/// The kinds `--kind` takes, as `ipc ls` names them.
pub const KINDS: &[&str] = &[
    "pipe",
    "fifo",
    "unix",
    "unix-dgram",
    "unix-seq",
    "tcp",
    "udp",
    "mq",
    "sysv-mq",
    "shm",
    "sysv-shm",
    "sem",
    "sysv-sem",
    "ring",
    "memfd",
    "eventfd",
    "signalfd",
    "mailbox",
    "binder",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only the objects process PID holds (with every holder of each).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pid: Option<i32>,
    /// Only objects of these kinds (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(KINDS))]
    kind: Vec<String>,
    /// Only orphans: objects nobody holds whose creator is gone (System V
    /// objects with no process attached and a dead creator, POSIX objects
    /// no process has open or mapped, rings nobody has mapped, socket files
    /// in /tmp, /var/tmp, /run or $XDG_RUNTIME_DIR no socket is bound to).
    #[arg(long)]
    orphans: bool,
    /// Print JSON: {"objects": [{"kind", "name", "address", "inode", "mode",
    /// "owner", "bytes", "messages", "peer", "holders": [{"pid", "command",
    /// "fd", "end"}], "orphan", "note"}], "unseen": [TEXT]} (absent fields
    /// are unknown).
    #[arg(long)]
    json: bool,
    /// The mailbox broker whose mailboxes to list (default: $IPCKIT_BROKER,
    /// else the default socket `ipc broker` listens on).
    #[arg(long, value_name = "PATH")]
    broker: Option<std::path::PathBuf>,
}

/// One process's hold on an object.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub pid: i32,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// `read`, `write`, `read-write` (descriptors), `mapped`, or for a ring
    /// `send`, `receive` or `send+receive` (attached ends).
    pub end: &'static str,
}

/// One IPC object.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Object {
    pub kind: &'static str,
    pub name: String,
    /// What `ipc rm` (or `ipc send`) takes for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Bytes: a segment's size, or what is queued in a pipe, socket or
    /// queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// The other end of a connected socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub holders: Vec<Holder>,
    pub orphan: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a run found, and what it could not look at.
#[derive(Serialize, Debug, Default)]
pub struct Listing {
    pub objects: Vec<Object>,
    pub unseen: Vec<String>,
}

/// Looks at everything (see the module docs); mailboxes too when `broker`
/// names the socket of the broker to ask.
pub fn list(broker: Option<&std::path::Path>) -> Listing {
    let mut found: BTreeMap<String, Object> = BTreeMap::new();
    let mut unseen = Vec::new();
    let procs = procs::scan(&mut unseen);
    procs::objects(&procs, &mut found, &mut unseen);
    sysv::objects(&procs, &mut found, &mut unseen);
    sockfiles::objects(&mut found, &mut unseen);
    if let Some(b) = broker {
        mailbox::objects(b, &mut found, &mut unseen);
    }
    binder::objects(&mut found, &mut unseen);
    let mut objects: Vec<Object> = found.into_values().collect();
    for o in &mut objects {
        if o.kind == "ring" {
            ring_status(o);
        }
        o.holders.sort();
        o.holders.dedup();
    }
    objects.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Listing { objects, unseen }
}

/// A ring's header: messages queued, and which of its holders send and
/// which receive (a ring this user may not open is left as found).
fn ring_status(o: &mut Object) {
    let Some(name) = o.address.as_deref().and_then(|a| a.strip_prefix("ring:")) else {
        return;
    };
    let Ok(ring) = ipckit::ring::Ring::builder(name).open() else {
        return;
    };
    let st = ring.status();
    o.messages = Some(st.queued as u64);
    for h in &mut o.holders {
        let pid = h.pid as u32;
        h.end = match (st.senders.contains(&pid), st.receivers.contains(&pid)) {
            (true, true) => "send+receive",
            (true, false) => "send",
            (false, true) => "receive",
            (false, false) => h.end,
        };
    }
    let creator = if st.creator_alive {
        "alive"
    } else if st.creator_closed {
        "gone, kept it"
    } else {
        "dead"
    };
    o.note = Some(format!(
        "{} sender(s), {} receiver(s); creator pid {} {creator}",
        st.senders.len(),
        st.receivers.len(),
        st.creator_pid
    ));
}

pub fn run(args: Args) -> Result<()> {
    let broker = args
        .broker
        .clone()
        .unwrap_or_else(ipckit::mailbox::default_socket);
    let mut l = list(Some(&broker));
    l.objects.retain(|o| {
        (args.kind.is_empty() || args.kind.iter().any(|k| k == o.kind))
            && (!args.orphans || o.orphan)
            && args
                .pid
                .is_none_or(|p| o.holders.iter().any(|h| h.pid == p))
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(());
    }
    println!("{}", table(&l.objects));
    for u in &l.unseen {
        eprintln!("ipc ls: {u}");
    }
    Ok(())
}

fn table(objects: &[Object]) -> comfy_table::Table {
    use comfy_table::{presets::NOTHING, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["KIND", "NAME", "MODE", "OWNER", "FILL", "HOLDERS / PEER"]);
    for o in objects {
        let fill = match (o.messages, o.bytes) {
            (Some(m), Some(b)) => format!("{m} msgs, {b} B"),
            (None, Some(b)) => format!("{b} B"),
            (Some(m), None) => format!("{m} msgs"),
            (None, None) => String::new(),
        };
        let mut who: Vec<String> = o
            .holders
            .iter()
            .map(|h| match h.fd {
                Some(fd) => format!("{}({}) fd {fd} {}", h.command, h.pid, h.end),
                None => format!("{}({}) {}", h.command, h.pid, h.end),
            })
            .collect();
        if let Some(p) = &o.peer {
            who.push(format!("peer: {p}"));
        }
        if o.orphan {
            who.push("ORPHAN".into());
        }
        if let Some(n) = &o.note {
            who.push(n.clone());
        }
        t.add_row([
            o.kind.to_string(),
            o.address.clone().unwrap_or_else(|| o.name.clone()),
            o.mode.clone().unwrap_or_default(),
            o.owner.clone().unwrap_or_default(),
            fill,
            who.join("; "),
        ]);
    }
    t
}
