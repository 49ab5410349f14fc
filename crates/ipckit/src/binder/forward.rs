//! References to third processes' objects: ipckit's extension of the
//! RPC binder protocol.
//!
//! libbinder's RPC binder cannot send a proxy to a third process (its
//! addresses name objects of the two ends of one session). The kernel
//! driver can, and the model depends on it: a service manager hands out
//! other processes' objects. ipckit does it this way, with the call going
//! straight to the object's process afterwards (and that process seeing
//! the real caller's pid and uid):
//!
//! 1. B holds a proxy of A's object and sends it to C. The address B
//!    writes carries [`ADDRESS_FORWARD`](wire::ADDRESS_FORWARD) and names
//!    a node of B's that holds the proxy (counted like any object sent).
//! 2. C, reading it, asks B: `RESOLVE(address)`.
//! 3. B asks A: `MINT(A's address, C's pid, C's uid)` — the pid and uid
//!    of B's session with C, from the kernel. A keeps the object under a
//!    random 16-byte *ticket* for that process, for 30 s, and answers with
//!    the ticket and its *home*: an abstract socket
//!    `@ipckit-binder-home-PID-RANDOM`, listened on from the first ticket.
//! 4. C connects to A's home (once per process; the session is reused),
//!    and trades the ticket: `REDEEM(ticket)`. A checks the session's
//!    peer is the pid and uid the ticket was made for and sends the
//!    object, counted as usual. C drops the reference it got from B, which
//!    lets B's proxy go.
//!
//! Forwarded references go only where both ends said `HELLO` (ipckit's
//! special transaction at session set-up, which libbinder and rsbinder
//! answer `UNKNOWN_TRANSACTION`): sending a third process's object to or
//! through a libbinder peer fails with `INVALID_OPERATION`, naming it.
//! The process hosting the object must take calls from B at the time
//! (it is calling B, or opened incoming connections).
//!
//! Abstract sockets belong to a network namespace: C must share A's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::object::{Kind, Object, ProxyInner};
use super::parcel::Parcel;
use super::server::{Connector, Server};
use super::session::Session;
use super::status::{Error, Result, Status};
use super::wire;
use crate::socket::unix::UnixAddr;

/// How long a ticket waits to be redeemed.
const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// At most this many tickets wait at once (a peer minting without end is
/// refused, not fed).
const MAX_TICKETS: usize = 10_000;

const TICKET_LEN: usize = 16;

/// How long one step (`MINT`, `RESOLVE`, connecting, `REDEEM`) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of every home address; a `RESOLVE` reply naming anything
/// else is refused (a peer does not get to make this process connect to
/// an address of its choosing).
const HOME_PREFIX: &str = "@ipckit-binder-home-";

struct Ticket {
    object: Object,
    pid: i32,
    uid: u32,
    expires: Instant,
}

struct Home {
    name: String,
    _server: Server,
}

static HOME: Mutex<Option<Arc<Home>>> = Mutex::new(None);

fn tickets() -> &'static Mutex<HashMap<[u8; TICKET_LEN], Ticket>> {
    static T: OnceLock<Mutex<HashMap<[u8; TICKET_LEN], Ticket>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Sessions with other processes' homes, by home address.
fn direct() -> &'static Mutex<HashMap<String, Weak<Session>>> {
    static D: OnceLock<Mutex<HashMap<String, Weak<Session>>>> = OnceLock::new();
    D.get_or_init(Default::default)
}

/// This process's home, started on first use.
fn home() -> Result<Arc<Home>> {
    let mut h = HOME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = &*h {
        return Ok(h.clone());
    }
    let mut r = [0u8; 8];
    crate::sys::process::random_bytes(&mut r)
        .map_err(|e| Error::io(e, "cannot make a home address"))?;
    let name = format!(
        "{HOME_PREFIX}{}-{}",
        std::process::id(),
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let addr: UnixAddr = name
        .parse()
        .map_err(|e| Error::io(e, "cannot make a home address"))?;
    // Its root answers nothing: all it is for is REDEEM.
    let root = Object::from_fn(|_, _, _, _| Err(Status::UnknownTransaction.into()));
    let server = Server::builder(root).threads(2).bind(&addr)?;
    let home = Arc::new(Home {
        name,
        _server: server,
    });
    *h = Some(home.clone());
    Ok(home)
}

/// A ticket for `object`, redeemable by process `pid` of user `uid`.
fn mint(object: Object, pid: i32, uid: u32) -> Result<(String, [u8; TICKET_LEN])> {
    let home = home()?;
    let mut ticket = [0u8; TICKET_LEN];
    crate::sys::process::random_bytes(&mut ticket)
        .map_err(|e| Error::io(e, "cannot make a ticket"))?;
    let now = Instant::now();
    let expired: Vec<Ticket> = {
        let mut t = tickets().lock().unwrap_or_else(|p| p.into_inner());
        let old: Vec<[u8; TICKET_LEN]> = t
            .iter()
            .filter(|(_, v)| v.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        let expired = old.iter().filter_map(|k| t.remove(k)).collect();
        if t.len() >= MAX_TICKETS {
            return Err(Error::new(
                Status::NoMemory,
                format!("{MAX_TICKETS} references wait to be picked up already"),
            ));
        }
        t.insert(
            ticket,
            Ticket {
                object,
                pid,
                uid,
                expires: now + TICKET_LIFETIME,
            },
        );
        expired
    };
    // Dropped outside the lock: a proxy's drop may send a message.
    drop(expired);
    Ok((home.name.clone(), ticket))
}

/// The object a ticket was made for, if `pid`/`uid` may have it.
fn take(ticket: &[u8], pid: i32, uid: u32) -> Result<Object> {
    let mut t = tickets().lock().unwrap_or_else(|p| p.into_inner());
    let found = <[u8; TICKET_LEN]>::try_from(ticket)
        .ok()
        .and_then(|k| t.get(&k).map(|v| (k, v)));
    match found {
        Some((k, v)) if v.pid == pid && v.uid == uid && v.expires > Instant::now() => {
            Ok(t.remove(&k).expect("found").object)
        }
        Some(_) => Err(Error::new(
            Status::PermissionDenied,
            "this reference was handed to another process",
        )),
        None => Err(Error::new(
            Status::NameNotFound,
            "no such reference waits here (expired after 30 s, or already picked up)",
        )),
    }
}

/// Trades `ticket` at `home` for the object.
fn redeem(home_name: &str, ticket: &[u8]) -> Result<Object> {
    let me = std::process::id() as i32;
    let mine = HOME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|h| h.name == home_name);
    if mine {
        return take(ticket, me, crate::sys::process::euid());
    }
    if !home_name.starts_with(HOME_PREFIX) {
        return Err(Error::bad(format!(
            "a forwarded reference resolved to {home_name:?}, which is no ipckit home"
        )));
    }
    let addr: UnixAddr = home_name
        .parse()
        .map_err(|_| Error::bad(format!("a malformed home address {home_name:?}")))?;
    for attempt in 0..2 {
        let known = direct()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(home_name)
            .and_then(Weak::upgrade)
            .filter(|s| !s.is_dead());
        // The root, held until the ticket is traded: the session lives
        // while it has an object.
        let (session, _root) = match known {
            Some(s) => (s, None),
            None => {
                let root = Connector::new(&addr)
                    .incoming_threads(1)
                    .timeout(STEP_TIMEOUT)
                    .connect()?;
                let Kind::Remote(p) = root.kind() else {
                    return Err(Error::bad("a home answered with a local object"));
                };
                let s = p.session.clone();
                let mut d = direct().lock().unwrap_or_else(|p| p.into_inner());
                // Forget the homes whose sessions ended.
                d.retain(|_, w| w.strong_count() > 0);
                d.insert(home_name.to_owned(), Arc::downgrade(&s));
                drop(d);
                (s, Some(root))
            }
        };
        let mut d = Parcel::new();
        d.write_byte_array(Some(ticket))?;
        match session.transact_raw(0, wire::SPECIAL_IPK_REDEEM, d, Some(STEP_TIMEOUT)) {
            Ok(mut r) => {
                return r
                    .read_object()?
                    .ok_or_else(|| Error::bad("a home traded a ticket for nothing"))
            }
            // The session ended as it was picked up: once more, anew.
            Err(e) if e.status() == Status::DeadObject && attempt == 0 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::dead(format!(
        "the home {home_name} keeps hanging up"
    )))
}

impl Session {
    /// Runs one of ipckit's special transactions.
    pub(super) fn run_extension(
        self: &Arc<Self>,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
    ) -> Result<()> {
        match code {
            wire::SPECIAL_IPK_HELLO => {
                self.set_ext();
                reply.write_i32(1);
                Ok(())
            }
            wire::SPECIAL_IPK_MINT => {
                let addr = data.read_u64()?;
                let pid = data.read_i32()?;
                let uid = data.read_u32()?;
                let object = self.sent_local(addr)?;
                let (home, ticket) = mint(object, pid, uid)?;
                reply.write_string8(&home)?;
                reply.write_byte_array(Some(&ticket))
            }
            wire::SPECIAL_IPK_RESOLVE => {
                let addr = data.read_u64()?;
                let proxy = self.forwarded(addr)?;
                let mut m = Parcel::new();
                m.write_u64(proxy.address);
                m.write_i32(self.peer.pid);
                m.write_u32(self.peer.uid);
                let mut r = proxy
                    .session
                    .transact_raw(0, wire::SPECIAL_IPK_MINT, m, Some(STEP_TIMEOUT))
                    .map_err(|e| {
                        Error::new(
                            e.status(),
                            format!(
                                "pid {} would not hand out its object: {e}",
                                proxy.session.peer_pid()
                            ),
                        )
                    })?;
                let home = r.read_string8()?;
                let ticket = r.read_byte_array()?;
                reply.write_string8(&home)?;
                reply.write_byte_array(ticket.as_deref())
            }
            wire::SPECIAL_IPK_REDEEM => {
                let ticket = data
                    .read_byte_array()?
                    .ok_or_else(|| Error::bad("REDEEM without a ticket"))?;
                let object = take(&ticket, self.peer.pid, self.peer.uid)?;
                reply.write_object(Some(&object));
                Ok(())
            }
            _ => Err(Status::UnknownTransaction.into()),
        }
    }

    /// Says hello to the server (client side, at set-up): ipckit servers
    /// answer, others answer `UNKNOWN_TRANSACTION`.
    pub(super) fn hello(self: &Arc<Self>, timeout: Duration) -> Result<()> {
        let mut d = Parcel::new();
        d.write_i32(1);
        match self.transact_raw(0, wire::SPECIAL_IPK_HELLO, d, Some(timeout)) {
            Ok(_) => {
                self.set_ext();
                Ok(())
            }
            Err(e) if e.status() == Status::UnknownTransaction => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Turns a forwarded reference read from this session into a proxy
    /// straight to the object's process.
    pub(super) fn resolve_forward(self: &Arc<Self>, placeholder: Object) -> Result<Object> {
        let Kind::Remote(p) = placeholder.kind() else {
            return Ok(placeholder);
        };
        let p: &Arc<ProxyInner> = p;
        let mut d = Parcel::new();
        d.write_u64(p.address);
        // B's MINT to A may take its own STEP_TIMEOUT.
        let mut r = self.transact_raw(0, wire::SPECIAL_IPK_RESOLVE, d, Some(2 * STEP_TIMEOUT))?;
        let home = r.read_string8()?;
        let ticket = r
            .read_byte_array()?
            .ok_or_else(|| Error::bad("a forwarded reference resolved without a ticket"))?;
        let object = redeem(&home, &ticket)?;
        drop(placeholder);
        Ok(object)
    }
}
