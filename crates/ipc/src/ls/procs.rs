//! What processes hold: each one's descriptors (`/proc/PID/fd`, with
//! `fdinfo` for the open mode) and shared mappings (`/proc/PID/maps`),
//! turned into objects with their holders.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, MMapPath};

use super::{sockdiag, Holder, Object};

/// What one descriptor refers to.
#[derive(Debug)]
pub enum Target {
    Pipe(u64),
    Socket(u64),
    Path(PathBuf),
    Memfd(String),
    Anon(String),
}

#[derive(Debug)]
pub struct Fd {
    pub fd: i32,
    pub target: Target,
    /// `O_ACCMODE` of the open file: 0 read, 1 write, 2 both.
    pub access: u32,
    /// `eventfd-id` from fdinfo (the same eventfd in several processes).
    pub eventfd_id: Option<u64>,
    pub meta: Option<std::fs::Metadata>,
}

/// A shared mapping of an object.
#[derive(Debug)]
pub enum Mapped {
    /// A file (in /dev/shm, a memfd): its path as maps shows it, inode.
    File(String, u64),
    /// A System V segment: its id.
    SysvShm(i32),
}

#[derive(Debug)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub fds: Vec<Fd>,
    pub maps: Vec<Mapped>,
}

/// The processes this run can look into; what it cannot is said in
/// `unseen`. The second value: whether every process was visible (only
/// then can an object be called unheld).
pub struct Procs {
    pub list: Vec<Proc>,
    pub complete: bool,
}

impl Procs {
    /// Whether the process `pid` exists (whether or not it is visible).
    pub fn alive(&self, pid: i32) -> bool {
        pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
    }
}

pub fn scan(unseen: &mut Vec<String>) -> Procs {
    let mut list = Vec::new();
    let mut hidden = 0;
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        unseen.push("/proc cannot be read: no process's objects are shown".into());
        return Procs {
            list,
            complete: false,
        };
    };
    for p in all.flatten() {
        if p.pid == me {
            continue;
        }
        let comm = p.stat().map(|s| s.comm).unwrap_or_default();
        let Ok(fds) = p.fd() else {
            // Gone meanwhile, or another user's (EACCES).
            if Path::new(&format!("/proc/{}", p.pid)).exists() {
                hidden += 1;
            }
            continue;
        };
        let mut proc = Proc {
            pid: p.pid,
            comm,
            fds: Vec::new(),
            maps: Vec::new(),
        };
        for fd in fds.flatten() {
            let target = match fd.target {
                FDTarget::Pipe(ino) => Target::Pipe(ino),
                FDTarget::Socket(ino) => Target::Socket(ino),
                FDTarget::Path(path) => Target::Path(path),
                FDTarget::MemFD(name) => Target::Memfd(name),
                FDTarget::AnonInode(what) => Target::Anon(what),
                FDTarget::Net(_) | FDTarget::Other(..) => continue,
            };
            let (access, eventfd_id) = fdinfo(p.pid, fd.fd);
            let meta = std::fs::metadata(format!("/proc/{}/fd/{}", p.pid, fd.fd)).ok();
            proc.fds.push(Fd {
                fd: fd.fd,
                target,
                access,
                eventfd_id,
                meta,
            });
        }
        if let Ok(maps) = p.maps() {
            for m in maps {
                match m.pathname {
                    MMapPath::Vsys(_) => proc.maps.push(Mapped::SysvShm(m.inode as i32)),
                    MMapPath::Path(path) => {
                        let s = path.to_string_lossy();
                        if s.starts_with("/dev/shm/") || s.starts_with("/memfd:") {
                            proc.maps.push(Mapped::File(s.into_owned(), m.inode));
                        }
                    }
                    _ => {}
                }
            }
        }
        list.push(proc);
    }
    if hidden > 0 {
        unseen.push(format!(
            "{hidden} processes of other users could not be looked into: their objects and \
             holds are missing (run as root to see them)"
        ));
    }
    Procs {
        list,
        complete: hidden == 0,
    }
}

/// The access mode and eventfd id from `/proc/PID/fdinfo/FD`.
fn fdinfo(pid: i32, fd: i32) -> (u32, Option<u64>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let access = field("flags:")
        .and_then(|f| u32::from_str_radix(&f, 8).ok())
        .map_or(2, |f| f & 3);
    (access, field("eventfd-id:").and_then(|v| v.parse().ok()))
}

fn end(access: u32) -> &'static str {
    match access {
        0 => "read",
        1 => "write",
        _ => "read-write",
    }
}

/// The user name of `uid` (from /etc/passwd), or the number.
pub fn owner(uid: u32) -> String {
    static USERS: std::sync::OnceLock<HashMap<u32, String>> = std::sync::OnceLock::new();
    let users = USERS.get_or_init(|| {
        std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
            })
            .collect()
    });
    users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
}

pub(super) fn described(
    kind: &'static str,
    name: String,
    meta: Option<&std::fs::Metadata>,
) -> Object {
    Object {
        kind,
        name,
        inode: meta.map(|m| m.ino()),
        mode: meta.map(|m| format!("{:04o}", m.mode() & 0o7777)),
        owner: meta.map(|m| owner(m.uid())),
        ..Object::default()
    }
}

/// The objects the processes hold through descriptors and mappings, and
/// the POSIX objects in /dev/shm and /dev/mqueue, held or not.
pub fn objects(procs: &Procs, found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    let socks = match sockdiag::unix_sockets() {
        Ok(s) => Some(s),
        Err(e) => {
            unseen.push(format!(
                "sock_diag (netlink) refused ({e}): Unix sockets are shown without their peers"
            ));
            None
        }
    };
    let inet = inet_sockets();
    // Who holds each socket inode, to name a socket's peer.
    let mut sock_holders: HashMap<u64, Vec<Holder>> = HashMap::new();
    for p in &procs.list {
        for fd in &p.fds {
            let holder = Holder {
                pid: p.pid,
                command: p.comm.clone(),
                fd: Some(fd.fd),
                end: end(fd.access),
            };
            let (key, obj) = match &fd.target {
                Target::Pipe(ino) => (
                    format!("pipe:{ino}"),
                    Object {
                        kind: "pipe",
                        name: format!("pipe:[{ino}]"),
                        inode: Some(*ino),
                        ..Object::default()
                    },
                ),
                Target::Socket(ino) => {
                    sock_holders.entry(*ino).or_default().push(holder.clone());
                    match socket_object(*ino, socks.as_ref(), &inet) {
                        Some(o) => (format!("sock:{ino}"), o),
                        None => continue,
                    }
                }
                Target::Memfd(name) => {
                    let ino = fd.meta.as_ref().map_or(0, |m| m.ino());
                    let mut o = described("memfd", format!("memfd:{name}"), fd.meta.as_ref());
                    o.bytes = fd.meta.as_ref().map(|m| m.size());
                    (format!("memfd:{ino}"), o)
                }
                Target::Anon(what) if what == "[eventfd]" => {
                    let key = match fd.eventfd_id {
                        Some(id) => format!("eventfd:{id}"),
                        None => format!("eventfd:{}:{}", p.pid, fd.fd),
                    };
                    let name = match fd.eventfd_id {
                        Some(id) => format!("eventfd id {id}"),
                        None => "eventfd".into(),
                    };
                    (
                        key,
                        Object {
                            kind: "eventfd",
                            name,
                            ..Object::default()
                        },
                    )
                }
                Target::Anon(what) if what == "[signalfd]" => (
                    format!("signalfd:{}:{}", p.pid, fd.fd),
                    Object {
                        kind: "signalfd",
                        name: "signalfd".into(),
                        ..Object::default()
                    },
                ),
                Target::Anon(_) => continue,
                Target::Path(path) => match path_object(path, fd.meta.as_ref()) {
                    Some(ko) => ko,
                    None => continue,
                },
            };
            let o = found.entry(key).or_insert(obj);
            o.holders.push(holder);
        }
        for m in &p.maps {
            let holder = Holder {
                pid: p.pid,
                command: p.comm.clone(),
                fd: None,
                end: "mapped",
            };
            let (key, obj) = match m {
                Mapped::SysvShm(id) => (format!("sysv-shm:{id}"), None),
                Mapped::File(path, ino) => match path.strip_prefix("/dev/shm/") {
                    Some(name) => (format!("devshm:{name}"), dev_shm_object(name)),
                    None => {
                        let name = path.trim_end_matches(" (deleted)").trim_start_matches('/');
                        (
                            format!("memfd:{ino}"),
                            Some(Object {
                                kind: "memfd",
                                name: name.to_string(),
                                inode: Some(*ino),
                                ..Object::default()
                            }),
                        )
                    }
                },
            };
            match (found.get_mut(&key), obj) {
                (Some(o), _) => o.holders.push(holder),
                (None, Some(mut o)) => {
                    o.holders.push(holder);
                    found.insert(key, o);
                }
                // A System V segment: filled in from /proc/sysvipc.
                (None, None) => {
                    found.insert(
                        key,
                        Object {
                            holders: vec![holder],
                            ..Object::default()
                        },
                    );
                }
            }
        }
    }
    // Peers: the process at the other end of a connected Unix socket.
    if let Some(socks) = &socks {
        for (key, o) in found.iter_mut() {
            let Some(ino) = key
                .strip_prefix("sock:")
                .and_then(|i| i.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(peer) = socks.get(&ino).and_then(|s| s.peer) else {
                continue;
            };
            o.peer = Some(match sock_holders.get(&peer) {
                Some(hs) => hs
                    .iter()
                    .map(|h| format!("{}({}) fd {}", h.command, h.pid, h.fd.unwrap_or(-1)))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => format!("socket:[{peer}] (no process seen holding it)"),
            });
        }
    }
    dev_shm(procs, found);
    dev_mqueue(procs, found, unseen);
}

/// An object for what a descriptor's path is: a FIFO, something in
/// /dev/shm, or a POSIX queue (whose descriptor shows as `/NAME`).
fn path_object(path: &Path, meta: Option<&std::fs::Metadata>) -> Option<(String, Object)> {
    let meta_ok = meta?;
    let s = path.to_string_lossy();
    if meta_ok.file_type().is_fifo() {
        let mut o = described("fifo", s.to_string(), meta);
        o.address = Some(format!("fifo:{s}"));
        return Some((format!("file:{}:{}", meta_ok.dev(), meta_ok.ino()), o));
    }
    if let Some(name) = s.strip_prefix("/dev/shm/") {
        let mut o = dev_shm_object(name)?;
        o.inode = Some(meta_ok.ino());
        return Some((format!("devshm:{name}"), o));
    }
    // A POSIX queue: its descriptor reads `/NAME`, a name at the root of
    // the mqueue file system, not of this one.
    let name = s.strip_prefix('/')?;
    if name.contains('/') || !meta_ok.is_file() {
        return None;
    }
    let here = std::fs::symlink_metadata(path).ok();
    if here.is_some_and(|h| h.dev() == meta_ok.dev() && h.ino() == meta_ok.ino()) {
        return None;
    }
    let mut o = described("mq", s.to_string(), meta);
    o.address = Some(format!("mq:{s}"));
    Some((format!("mq:{s}"), o))
}

/// What a file in /dev/shm is: a named semaphore (`sem.NAME`), an ipckit
/// ring (`ipckit-ring.NAME`) or shared memory.
fn dev_shm_object(file: &str) -> Option<Object> {
    let meta = std::fs::symlink_metadata(format!("/dev/shm/{file}")).ok();
    let (kind, address) = if let Some(n) = file.strip_prefix("sem.") {
        ("sem", format!("sem:/{n}"))
    } else if let Some(n) = file.strip_prefix("ipckit-ring.") {
        ("ring", format!("ring:{n}"))
    } else {
        ("shm", format!("shm:/{file}"))
    };
    let mut o = described(kind, format!("/dev/shm/{file}"), meta.as_ref());
    o.address = Some(address);
    o.bytes = meta.as_ref().map(|m| m.size());
    Some(o)
}

/// Every file in /dev/shm, held or not: unheld ones are orphans when all
/// processes were visible.
fn dev_shm(procs: &Procs, found: &mut BTreeMap<String, Object>) {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) =
            found.entry(format!("devshm:{name}"))
        {
            if let Some(mut o) = dev_shm_object(&name) {
                o.orphan = procs.complete;
                slot.insert(o);
            }
        }
    }
}

/// POSIX queues, each with its fill, held or not: through the mqueue file
/// system where it is mounted, or (as root) a private mount of it (see
/// `ipckit::mq::list`); unheld ones are orphans.
fn dev_mqueue(procs: &Procs, found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    let queues = match ipckit::mq::list() {
        Ok(q) => q,
        Err(e) => {
            unseen.push(format!(
                "POSIX queues that no process has open are not listed, and queue fill is \
                 unknown: {e}"
            ));
            return;
        }
    };
    for q in queues {
        let key = format!("mq:{}", q.name);
        let o = found.entry(key.clone()).or_insert_with(|| {
            let mut o = Object {
                kind: "mq",
                name: q.name.clone(),
                ..Object::default()
            };
            o.address = Some(key);
            o.orphan = procs.complete;
            o
        });
        o.mode = Some(format!("{:04o}", q.mode));
        o.owner = Some(owner(q.uid));
        o.bytes = Some(q.bytes);
    }
}

/// TCP and UDP sockets on loopback, by inode: (kind, "local → remote",
/// queued bytes).
fn inet_sockets() -> HashMap<u64, (&'static str, String, u64)> {
    let mut out = HashMap::new();
    let loopback = |a: &std::net::SocketAddr| a.ip().is_loopback();
    for (kind, entries) in [
        ("tcp", procfs::net::tcp().unwrap_or_default()),
        ("tcp", procfs::net::tcp6().unwrap_or_default()),
    ] {
        for e in entries {
            if loopback(&e.local_address) {
                let name = if e.remote_address.port() == 0 {
                    e.local_address.to_string()
                } else {
                    format!("{} → {}", e.local_address, e.remote_address)
                };
                out.insert(e.inode, (kind, name, u64::from(e.rx_queue)));
            }
        }
    }
    for (kind, entries) in [
        ("udp", procfs::net::udp().unwrap_or_default()),
        ("udp", procfs::net::udp6().unwrap_or_default()),
    ] {
        for e in entries {
            if loopback(&e.local_address) {
                out.insert(
                    e.inode,
                    (kind, e.local_address.to_string(), u64::from(e.rx_queue)),
                );
            }
        }
    }
    out
}

fn socket_object(
    ino: u64,
    socks: Option<&HashMap<u64, sockdiag::UnixSock>>,
    inet: &HashMap<u64, (&'static str, String, u64)>,
) -> Option<Object> {
    if let Some((kind, name, queued)) = inet.get(&ino) {
        return Some(Object {
            kind,
            name: name.clone(),
            inode: Some(ino),
            bytes: Some(*queued),
            ..Object::default()
        });
    }
    let s = socks?.get(&ino)?;
    let kind = match s.kind {
        1 => "unix",
        2 => "unix-dgram",
        5 => "unix-seq",
        _ => return None,
    };
    let listening = s.state == 10;
    // ipckit's binder sessions: the service manager's and the homes'
    // connections (accepted ones carry the listener's name).
    let binder = kind == "unix"
        && s.name
            .as_deref()
            .is_some_and(|n| n.starts_with(super::binder::SOCKET_PREFIX));
    let kind = if binder { "binder" } else { kind };
    Some(Object {
        kind,
        address: s.name.as_ref().map(|n| format!("{kind}:{n}")),
        name: s.name.clone().unwrap_or_else(|| "(unnamed)".into()),
        inode: Some(ino),
        // A listener's queue is of connections, not bytes.
        bytes: s.queued.filter(|_| !listening),
        note: match (listening, binder) {
            (true, _) => Some("listening".into()),
            (false, true) => Some("binder session connection".into()),
            (false, false) => None,
        },
        ..Object::default()
    })
}
