//! Objects: local ones that this process serves, and proxies of objects
//! that live in other processes, behind one type, [`Object`].

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::parcel::Parcel;
use super::session::Session;
use super::status::{Error, Result, Status};

/// `FLAG_ONEWAY`: the caller does not wait and gets no reply.
pub const FLAG_ONEWAY: u32 = 0x01;

/// The first code free for an interface's own transactions
/// (`FIRST_CALL_TRANSACTION`).
pub const FIRST_CALL_TRANSACTION: u32 = 1;
/// The last such code (`LAST_CALL_TRANSACTION`).
pub const LAST_CALL_TRANSACTION: u32 = 0x00ff_ffff;

const fn pack(s: &[u8; 4]) -> u32 {
    (s[0] as u32) << 24 | (s[1] as u32) << 16 | (s[2] as u32) << 8 | s[3] as u32
}

/// `PING_TRANSACTION` (`'_PNG'`): answered by every object, empty reply.
pub const PING_TRANSACTION: u32 = pack(b"_PNG");
/// `INTERFACE_TRANSACTION` (`'_NTF'`): the reply holds the object's
/// interface descriptor as a string.
pub const INTERFACE_TRANSACTION: u32 = pack(b"_NTF");

/// An object that other processes can call: implement this and wrap it
/// with [`Object::new`].
///
/// `on_transact` runs on a thread of the server's pool (or on the thread
/// of a caller that is itself waiting in a call to the caller's process:
/// a nested call), possibly on several threads at once.
pub trait Binder: Send + Sync + 'static {
    /// Handles transaction `code`: reads its arguments from `data` and
    /// writes results to `reply` (ignored for one-way calls). An error is
    /// sent back as its [`Status`].
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> Result<()>;

    /// The interface descriptor (`android.os.IServiceManager`, say),
    /// returned for [`INTERFACE_TRANSACTION`]; empty by default.
    fn descriptor(&self) -> &str {
        ""
    }
}

/// Who made the call being served, from the kernel (the socket's peer
/// credentials, `SO_PEERCRED`), never from anything the caller wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) flags: u32,
}

impl Call {
    /// The calling process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its effective user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Its effective group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Whether the caller does not wait for a reply.
    pub fn is_oneway(&self) -> bool {
        self.flags & FLAG_ONEWAY != 0
    }

    pub(crate) fn this_process(flags: u32) -> Call {
        Call {
            pid: std::process::id() as i32,
            uid: crate::sys::process::euid(),
            gid: crate::sys::process::egid(),
            flags,
        }
    }
}

/// A local object: what the process serves.
pub(crate) struct LocalInner {
    pub(crate) binder: Box<dyn Binder>,
    any: Option<Box<dyn Any + Send + Sync>>,
}

impl LocalInner {
    pub(crate) fn dispatch(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> Result<()> {
        match code {
            PING_TRANSACTION => Ok(()),
            INTERFACE_TRANSACTION => reply.write_string16(Some(self.binder.descriptor())),
            _ => self.binder.on_transact(code, data, reply, call),
        }
    }
}

type DeathFn = Box<dyn FnOnce() + Send>;

/// A proxy: a strong reference to an object of another process, through
/// one session. Dropping the last one tells that process.
pub(crate) struct ProxyInner {
    pub(crate) session: Arc<Session>,
    pub(crate) address: u64,
    /// The stability it arrived with, written back with it.
    pub(crate) stability: i32,
    links: Mutex<Vec<(u64, DeathFn)>>,
    died: AtomicBool,
}

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

impl ProxyInner {
    pub(crate) fn new(session: Arc<Session>, address: u64, stability: i32) -> Self {
        ProxyInner {
            session,
            address,
            stability,
            links: Mutex::new(Vec::new()),
            died: AtomicBool::new(false),
        }
    }

    /// Runs the death callbacks (once).
    pub(crate) fn send_obituary(&self) {
        if self.died.swap(true, Ordering::AcqRel) {
            return;
        }
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, f) in links {
            f();
        }
    }
}

impl Drop for ProxyInner {
    fn drop(&mut self) {
        self.session
            .proxy_dropped(self.address, self as *const ProxyInner);
    }
}

#[derive(Clone)]
pub(crate) enum Kind {
    Local(Arc<LocalInner>),
    Remote(Arc<ProxyInner>),
}

/// A reference to an object: one this process serves, or a proxy of one
/// in another process. Cloning makes another reference to the same
/// object; an object lives while someone, in any process, holds one.
///
/// # Example
///
/// ```
/// use ipckit::binder::{Binder, Call, Object, Parcel, Result};
///
/// struct Adder;
/// impl Binder for Adder {
///     fn on_transact(&self, _code: u32, data: &mut Parcel, reply: &mut Parcel, _: &Call) -> Result<()> {
///         let (a, b): (i32, i32) = (data.read()?, data.read()?);
///         reply.write(&(a + b))
///     }
/// }
///
/// let adder = Object::new(Adder);
/// let mut data = Parcel::new();
/// data.write(&2i32)?;
/// data.write(&3i32)?;
/// let mut reply = adder.call(1, data)?;
/// assert_eq!(reply.read::<i32>()?, 5);
/// # Ok::<(), ipckit::binder::Error>(())
/// ```
#[derive(Clone)]
pub struct Object(pub(crate) Kind);

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Local(l) => write!(f, "Object(local {:p})", Arc::as_ptr(l)),
            Kind::Remote(r) => write!(
                f,
                "Object(remote {:#x} in pid {})",
                r.address,
                r.session.peer_pid()
            ),
        }
    }
}

impl PartialEq for Object {
    /// The same object (a process holds one proxy per remote object).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Kind::Local(a), Kind::Local(b)) => Arc::ptr_eq(a, b),
            (Kind::Remote(a), Kind::Remote(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
impl Eq for Object {}

impl Object {
    /// A local object serving `binder`.
    pub fn new<B: Binder>(binder: B) -> Object {
        Object(Kind::Local(Arc::new(LocalInner {
            binder: Box::new(binder),
            any: None,
        })))
    }

    /// A local object serving `binder` that [`downcast`](Self::downcast)
    /// can give back.
    pub fn new_shared<B: Binder>(binder: Arc<B>) -> Object {
        struct Shared<B>(Arc<B>);
        impl<B: Binder> Binder for Shared<B> {
            fn on_transact(
                &self,
                c: u32,
                d: &mut Parcel,
                r: &mut Parcel,
                call: &Call,
            ) -> Result<()> {
                self.0.on_transact(c, d, r, call)
            }
            fn descriptor(&self) -> &str {
                self.0.descriptor()
            }
        }
        let any: Box<dyn Any + Send + Sync> = Box::new(binder.clone());
        Object(Kind::Local(Arc::new(LocalInner {
            binder: Box::new(Shared(binder)),
            any: Some(any),
        })))
    }

    /// A local object that runs `f` for every transaction.
    pub fn from_fn<F>(f: F) -> Object
    where
        F: Fn(u32, &mut Parcel, &mut Parcel, &Call) -> Result<()> + Send + Sync + 'static,
    {
        struct FnBinder<F>(F);
        impl<F> Binder for FnBinder<F>
        where
            F: Fn(u32, &mut Parcel, &mut Parcel, &Call) -> Result<()> + Send + Sync + 'static,
        {
            fn on_transact(
                &self,
                c: u32,
                d: &mut Parcel,
                r: &mut Parcel,
                call: &Call,
            ) -> Result<()> {
                (self.0)(c, d, r, call)
            }
        }
        Object::new(FnBinder(f))
    }

    /// The object made with [`new_shared`](Self::new_shared) from an
    /// `Arc<B>`, if this is that local object.
    pub fn downcast<B: Binder>(&self) -> Option<Arc<B>> {
        match &self.0 {
            Kind::Local(l) => l.any.as_ref()?.downcast_ref::<Arc<B>>().cloned(),
            Kind::Remote(_) => None,
        }
    }

    /// Whether the object lives in another process.
    pub fn is_remote(&self) -> bool {
        matches!(self.0, Kind::Remote(_))
    }

    /// The stability level written with a reference to it (parcel.rs).
    pub(crate) fn stability(&self) -> i32 {
        match &self.0 {
            Kind::Local(_) => super::parcel::STABILITY_SYSTEM,
            Kind::Remote(r) => r.stability,
        }
    }

    /// The process hosting the object (this one for a local object).
    pub fn host_pid(&self) -> i32 {
        match &self.0 {
            Kind::Local(_) => std::process::id() as i32,
            Kind::Remote(r) => r.session.peer_pid(),
        }
    }

    /// Whether the object's process is still there, as far as this process
    /// knows (no call is made; [`ping`](Self::ping) makes one).
    pub fn is_alive(&self) -> bool {
        match &self.0 {
            Kind::Local(_) => true,
            Kind::Remote(r) => !r.died.load(Ordering::Acquire) && !r.session.is_dead(),
        }
    }

    /// Calls [`PING_TRANSACTION`]: `Ok` if the object answers.
    pub fn ping(&self) -> Result<()> {
        self.call(PING_TRANSACTION, Parcel::new()).map(drop)
    }

    /// The object's interface descriptor ([`INTERFACE_TRANSACTION`]).
    pub fn descriptor(&self) -> Result<String> {
        match &self.0 {
            Kind::Local(l) => Ok(l.binder.descriptor().to_string()),
            Kind::Remote(_) => Ok(self
                .call(INTERFACE_TRANSACTION, Parcel::new())?
                .read_string16()?
                .unwrap_or_default()),
        }
    }

    /// A synchronous call: sends `data` as transaction `code` and waits
    /// for the reply. While it waits, calls that the callee makes back
    /// into this process run on this thread (nested calls).
    pub fn call(&self, code: u32, data: Parcel) -> Result<Parcel> {
        self.transact(code, data, 0, None)
    }

    /// [`call`](Self::call), giving up after `timeout` with
    /// [`Status::TimedOut`] (the late reply is dropped when it comes).
    pub fn call_timeout(&self, code: u32, data: Parcel, timeout: Duration) -> Result<Parcel> {
        self.transact(code, data, 0, Some(timeout))
    }

    /// A one-way call: sends and returns at once, without a reply. One-way
    /// calls to one object run in the order they were sent.
    pub fn oneway(&self, code: u32, data: Parcel) -> Result<()> {
        self.transact(code, data, FLAG_ONEWAY, None).map(drop)
    }

    /// Sends transaction `code` with `flags` ([`FLAG_ONEWAY`] or 0).
    pub fn transact(
        &self,
        code: u32,
        mut data: Parcel,
        flags: u32,
        timeout: Option<Duration>,
    ) -> Result<Parcel> {
        match &self.0 {
            Kind::Local(l) => {
                let mut reply = Parcel::new();
                data.set_position(0);
                l.dispatch(code, &mut data, &mut reply, &Call::this_process(flags))?;
                reply.set_position(0);
                Ok(reply)
            }
            Kind::Remote(r) => r
                .session
                .transact(self, r.address, code, data, flags, timeout),
        }
    }

    /// Calls `f` once when the object's process dies (or its session
    /// ends): at once if that has happened. No thread pool is needed: a
    /// thread of ipckit's watches the process (a pidfd) and the socket.
    /// [`DeathLink::unlink`] cancels it.
    pub fn link_to_death(&self, f: impl FnOnce() + Send + 'static) -> Result<DeathLink> {
        let Kind::Remote(r) = &self.0 else {
            return Err(Error::new(
                Status::InvalidOperation,
                "link_to_death on a local object: it dies with this process",
            ));
        };
        let id = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
        r.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, Box::new(f)));
        r.session.watch_death()?;
        if r.died.load(Ordering::Acquire) || r.session.is_dead() {
            r.died.store(false, Ordering::Release);
            r.send_obituary();
        }
        Ok(DeathLink {
            proxy: Arc::downgrade(r),
            id,
        })
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.0
    }
}

/// A death notification set up by [`Object::link_to_death`]. Dropping it
/// leaves the notification in place; [`unlink`](Self::unlink) cancels it.
#[derive(Debug)]
pub struct DeathLink {
    proxy: std::sync::Weak<ProxyInner>,
    id: u64,
}

impl DeathLink {
    /// Cancels the notification; `false` if it already ran.
    pub fn unlink(self) -> bool {
        self.remove()
    }

    fn remove(&self) -> bool {
        let Some(p) = self.proxy.upgrade() else {
            return false;
        };
        let mut links = p.links.lock().unwrap_or_else(|p| p.into_inner());
        let before = links.len();
        links.retain(|(id, _)| *id != self.id);
        links.len() != before
    }
}

impl fmt::Debug for ProxyInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyInner({:#x})", self.address)
    }
}
