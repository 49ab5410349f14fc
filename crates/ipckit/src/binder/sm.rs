//! The service manager: services found by name (Android's
//! `servicemanager`, speaking its AIDL interface `android.os.IServiceManager`
//! over RPC binder).
//!
//! - [`ServiceManagerServer`] is the service manager itself, embeddable
//!   (`ipc binder service-manager` runs one): it keeps name → object,
//!   drops a service when its process dies, pushes registrations to
//!   whoever waits for them, and asks a [`Policy`] who may register and
//!   find which names.
//! - [`ServiceManager`] is a client: [`add_service`](ServiceManager::add_service),
//!   [`check_service`](ServiceManager::check_service),
//!   [`wait_for_service`](ServiceManager::wait_for_service) (a push from
//!   the service manager, no polling), [`list_services`](ServiceManager::list_services),
//!   [`services`](ServiceManager::services) (with pid and uid), and
//!   [`publish`](ServiceManager::publish), which registers again when the
//!   service manager restarts.
//!
//! The service objects handed out are other processes' objects: a client
//! calls a service's process directly (see the module docs on third-party
//! references). Clients that are not ipckit (libbinder's or rsbinder's
//! RPC clients) can register and list, but cannot be handed a service.
//!
//! The address is `$IPCKIT_SERVICE_MANAGER`, else
//! `@ipckit-binder-servicemanager`. A client refuses a service manager
//! run by a user other than itself or root, unless it named the address.
//!
//! # Example
//!
//! ```
//! use ipckit::binder::{Object, Parcel, ServiceManager, ServiceManagerServer};
//! use ipckit::socket::unix::UnixAddr;
//!
//! let addr: UnixAddr = format!("@ipckit-doc-sm-{}", std::process::id()).parse()?;
//! let _sm = ServiceManagerServer::builder().bind(&addr)?;
//!
//! let sm = ServiceManager::connect_to(&addr)?;
//! let echo = Object::from_fn(|_, data, reply, _| reply.write(&data.read::<String>()?));
//! sm.add_service("doc.echo", &echo)?;
//! assert_eq!(sm.list_services()?, ["doc.echo"]);
//! let found = sm.check_service("doc.echo")?.expect("registered");
//! let mut data = Parcel::new();
//! data.write("hi")?;
//! assert_eq!(found.call(1, data)?.read::<String>()?, "hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//! AOSP `frameworks/native/cmds/servicemanager` (`ServiceManager.cpp`),
//! `libs/binder/aidl/android/os/IServiceManager.aidl`, `IServiceCallback.aidl`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::object::{Call, DeathLink, Kind, Object, FIRST_CALL_TRANSACTION, FLAG_ONEWAY};
use super::parcel::{Parcel, EX_ILLEGAL_ARGUMENT, EX_ILLEGAL_STATE, EX_SECURITY};
use super::server::{Connector, Server, SessionInfo};
use super::status::{Error, Result, Status};
use crate::policy::Pattern;
pub use crate::policy::PolicyError;
use crate::socket::unix::UnixAddr;

/// The service manager's interface descriptor.
pub const SERVICE_MANAGER_DESCRIPTOR: &str = "android.os.IServiceManager";

/// The registration callback's interface descriptor.
pub const SERVICE_CALLBACK_DESCRIPTOR: &str = "android.os.IServiceCallback";

/// The environment variable naming the service manager's address.
pub const SERVICE_MANAGER_ENV: &str = "IPCKIT_SERVICE_MANAGER";

/// The service manager's address when the environment names none.
pub const DEFAULT_SERVICE_MANAGER: &str = "@ipckit-binder-servicemanager";

/// `IServiceManager`'s transaction codes (AIDL order, from
/// `FIRST_CALL_TRANSACTION`), as Android 14 and Android 15 up to r5
/// number them. Android 15 r6 and later insert `getService2` at 2 and
/// shift every code after it by one (and `checkService` returns a
/// `Service` union there): their clients do not match these.
pub mod code {
    /// `getService(String) -> IBinder?`
    pub const GET_SERVICE: u32 = 1;
    /// `checkService(String) -> IBinder?`
    pub const CHECK_SERVICE: u32 = 2;
    /// `addService(String, IBinder, boolean allowIsolated, int dumpPriority)`
    pub const ADD_SERVICE: u32 = 3;
    /// `listServices(int dumpPriority) -> String[]`
    pub const LIST_SERVICES: u32 = 4;
    /// `registerForNotifications(String, IServiceCallback)`
    pub const REGISTER_FOR_NOTIFICATIONS: u32 = 5;
    /// `unregisterForNotifications(String, IServiceCallback)`
    pub const UNREGISTER_FOR_NOTIFICATIONS: u32 = 6;
    /// `tryUnregisterService(String, IBinder)`
    pub const TRY_UNREGISTER_SERVICE: u32 = 13;
    /// `getServiceDebugInfo() -> ServiceDebugInfo[]` (name, pid)
    pub const GET_SERVICE_DEBUG_INFO: u32 = 14;
    /// ipckit: `services() -> ServiceInfo[]` (name, pid, uid).
    pub const IPK_SERVICES: u32 = 0x00FF_0001;
}

/// `IServiceCallback.onRegistration(String, IBinder)`, one-way.
const ON_REGISTRATION: u32 = FIRST_CALL_TRANSACTION;

/// Android's longest service name.
const MAX_NAME: usize = 127;

/// How soon a [`Publication`] first tries a service manager that went,
/// and how long it waits between tries at most (doubling in between).
const RETRY: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_millis(250);

crate::parcelable! {
    /// A registered service, as [`ServiceManager::services`] lists it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ServiceInfo {
        /// Its name.
        pub name: String,
        /// The process serving it.
        pub pid: i32,
        /// That process's user (who registered it).
        pub uid: u32,
    }
}

crate::parcelable! {
    /// AIDL `android.os.ServiceDebugInfo`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct ServiceDebugInfo {
        name: String,
        debug_pid: i32,
    }
}

/// Checks a service name as Android's service manager does: 1 to 127
/// characters out of letters, digits, `_`, `-`, `.` and `/`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Status::BadValue,
            format!(
                "invalid service name {name:?}: 1 to {MAX_NAME} characters out of letters, \
                 digits, '_', '-', '.' and '/'"
            ),
        ))
    }
}

// ---- policy ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Add,
    Find,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    action: Action,
    pattern: Pattern,
    /// `None`: everyone.
    uids: Option<Vec<u32>>,
}

impl Rule {
    fn matches(&self, action: Action, name: &str) -> bool {
        self.action == action && self.pattern.matches(name)
    }
}

/// Who may register and find which services.
///
/// The default (an empty policy): anyone may register a name no other
/// user's live service holds, and a service is found (and listed) only by
/// its own user. Root may do everything.
///
/// A policy file adds rules, one per line (`#` starts a comment):
///
/// ```text
/// # ACTION  NAME      UIDS
/// add       media.*   1013
/// find      media.*   *
/// find      clock     1000,1001
/// ```
///
/// `NAME` is a name, a prefix ending in `*`, or `*`; `UIDS` is a list of
/// numeric uids or `*` for everyone. For each action the first rule whose
/// name matches decides; with none, the default does. Even when allowed
/// to register a name, a user cannot take it from another user's live
/// service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads a policy file.
    pub fn load(path: impl AsRef<std::path::Path>) -> std::io::Result<Policy> {
        crate::policy::load(path.as_ref())
    }

    fn rule(&self, action: Action, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(action, name))
    }

    /// Whether user `uid` may register `name`.
    pub fn may_add(&self, uid: u32, name: &str) -> bool {
        uid == 0
            || match self.rule(Action::Add, name) {
                Some(r) => r.uids.as_ref().is_none_or(|u| u.contains(&uid)),
                None => true,
            }
    }

    /// Whether user `uid` may find `name`, registered by user `owner`.
    pub fn may_find(&self, uid: u32, name: &str, owner: u32) -> bool {
        uid == 0
            || match self.rule(Action::Find, name) {
                Some(r) => r.uids.as_ref().is_none_or(|u| u.contains(&uid)),
                None => uid == owner,
            }
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> std::result::Result<Policy, PolicyError> {
        let rules = crate::policy::parse_lines(text, |words| {
            let [action, pattern, uids] = words[..] else {
                return Err(format!(
                    "{:?}: expected three words, ACTION NAME UIDS (like `find media.* 1000`)",
                    words.join(" ")
                ));
            };
            let action = match action {
                "add" => Action::Add,
                "find" => Action::Find,
                a => return Err(format!("unknown action {a:?}: add or find")),
            };
            Ok(Rule {
                action,
                pattern: Pattern::parse(pattern, "service name", |n| check_name(n).is_ok())?,
                uids: crate::policy::parse_uids(uids)?,
            })
        })?;
        Ok(Policy { rules })
    }
}

// ---- the service manager ----

struct Entry {
    object: Object,
    pid: i32,
    uid: u32,
    /// Tells apart registrations of one name (for the death callback).
    serial: u64,
    _death: Option<DeathLink>,
}

struct Watcher {
    name: String,
    callback: Object,
    uid: u32,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, Entry>,
    watchers: Vec<Watcher>,
    serial: u64,
}

/// The service manager's object.
struct Registry {
    policy: Policy,
    state: Mutex<State>,
    me: Weak<Registry>,
}

fn exception(reply: &mut Parcel, code: i32, message: String) -> Result<()> {
    *reply = Parcel::new();
    reply.write_exception(code, &message)
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn infos(&self, uid: u32) -> Vec<ServiceInfo> {
        self.lock()
            .services
            .iter()
            .filter(|(name, e)| self.policy.may_find(uid, name, e.uid))
            .map(|(name, e)| ServiceInfo {
                name: name.clone(),
                pid: e.pid,
                uid: e.uid,
            })
            .collect()
    }

    fn add(&self, name: String, object: Object, call: &Call, reply: &mut Parcel) -> Result<()> {
        if let Err(e) = check_name(&name) {
            return exception(reply, EX_ILLEGAL_ARGUMENT, e.to_string());
        }
        if !self.policy.may_add(call.uid(), &name) {
            return exception(
                reply,
                EX_SECURITY,
                format!("uid {} may not register {name:?} (policy)", call.uid()),
            );
        }
        let pid = if object.is_remote() {
            object.host_pid()
        } else {
            std::process::id() as i32
        };
        let serial = {
            let mut state = self.lock();
            state.serial += 1;
            state.serial
        };
        // Removed when its process dies (linked before it is listed: a
        // death in between finds it gone below).
        let death = if object.is_remote() {
            let me = self.me.clone();
            let n = name.clone();
            let link = object.link_to_death(move || {
                if let Some(r) = me.upgrade() {
                    let gone = {
                        let mut s = r.lock();
                        match s.services.get(&n) {
                            Some(e) if e.serial == serial => s.services.remove(&n),
                            _ => None,
                        }
                    };
                    drop(gone);
                }
            });
            match link {
                Ok(l) => Some(l),
                Err(e) => return exception(reply, EX_ILLEGAL_STATE, e.to_string()),
            }
        } else {
            None
        };
        let (old, watchers) = {
            let mut state = self.lock();
            // Checked here, with the insertion: two users registering one
            // name at once cannot both pass.
            if let Some(old) = state.services.get(&name) {
                if old.uid != call.uid() && call.uid() != 0 && old.object.is_alive() {
                    let (uid, pid) = (old.uid, old.pid);
                    drop(state);
                    return exception(
                        reply,
                        EX_SECURITY,
                        format!("{name:?} is registered by uid {uid} (pid {pid})"),
                    );
                }
            }
            if !object.is_alive() {
                drop(state);
                return exception(
                    reply,
                    EX_ILLEGAL_STATE,
                    format!("the process serving {name:?} is gone"),
                );
            }
            let old = state.services.insert(
                name.clone(),
                Entry {
                    object: object.clone(),
                    pid,
                    uid: call.uid(),
                    serial,
                    _death: death,
                },
            );
            let watchers: Vec<Object> = state
                .watchers
                .iter()
                .filter(|w| w.name == name && self.policy.may_find(w.uid, &name, call.uid()))
                .map(|w| w.callback.clone())
                .collect();
            (old, watchers)
        };
        drop(old);
        for w in watchers {
            // A watcher that is gone is dropped by its death link.
            let _ = notify(&w, &name, &object);
        }
        reply.write_no_exception();
        Ok(())
    }

    fn find(&self, name: &str, call: &Call, reply: &mut Parcel) -> Result<()> {
        let found = {
            let state = self.lock();
            match state.services.get(name) {
                Some(e) if !self.policy.may_find(call.uid(), name, e.uid) => Err(e.uid),
                Some(e) => Ok(Some(e.object.clone())),
                None => Ok(None),
            }
        };
        match found {
            Err(owner) => exception(
                reply,
                EX_SECURITY,
                format!(
                    "uid {} may not find {name:?}, registered by uid {owner} (policy)",
                    call.uid()
                ),
            ),
            Ok(object) => {
                reply.write_no_exception();
                reply.write_object(object.as_ref());
                Ok(())
            }
        }
    }

    fn watch(&self, name: String, callback: Object, call: &Call, reply: &mut Parcel) -> Result<()> {
        if let Err(e) = check_name(&name) {
            return exception(reply, EX_ILLEGAL_ARGUMENT, e.to_string());
        }
        if callback.is_remote() {
            let me = self.me.clone();
            let cb = callback.clone();
            let link = callback.link_to_death(move || {
                if let Some(r) = me.upgrade() {
                    let gone: Vec<Watcher> = {
                        let mut s = r.lock();
                        let (gone, keep) = std::mem::take(&mut s.watchers)
                            .into_iter()
                            .partition(|w| w.callback == cb);
                        s.watchers = keep;
                        gone
                    };
                    drop(gone);
                }
            });
            // Dropping the link leaves it in place, until the callback's
            // process dies.
            drop(link);
        }
        // Looked up and watched in one hold of the lock: a registration
        // in between would be neither present nor pushed.
        let present = {
            let mut state = self.lock();
            state.watchers.push(Watcher {
                name: name.clone(),
                callback: callback.clone(),
                uid: call.uid(),
            });
            state
                .services
                .get(&name)
                .filter(|e| self.policy.may_find(call.uid(), &name, e.uid))
                .map(|e| e.object.clone())
        };
        if let Some(object) = present {
            let _ = notify(&callback, &name, &object);
        }
        reply.write_no_exception();
        Ok(())
    }

    fn unwatch(&self, name: &str, callback: &Object, reply: &mut Parcel) -> Result<()> {
        let gone: Vec<Watcher> = {
            let mut s = self.lock();
            let (gone, keep) = std::mem::take(&mut s.watchers)
                .into_iter()
                .partition(|w| w.name == name && w.callback == *callback);
            s.watchers = keep;
            gone
        };
        if gone.is_empty() {
            return exception(
                reply,
                EX_ILLEGAL_STATE,
                format!("no such callback registered for {name:?}"),
            );
        }
        drop(gone);
        reply.write_no_exception();
        Ok(())
    }

    fn remove(&self, name: &str, object: &Object, call: &Call, reply: &mut Parcel) -> Result<()> {
        let gone = {
            let mut s = self.lock();
            match s.services.get(name) {
                Some(e) if e.object == *object && (e.uid == call.uid() || call.uid() == 0) => {
                    s.services.remove(name)
                }
                Some(_) => {
                    drop(s);
                    return exception(
                        reply,
                        EX_ILLEGAL_STATE,
                        format!("{name:?} is registered with another object or by another user"),
                    );
                }
                None => None,
            }
        };
        drop(gone);
        reply.write_no_exception();
        Ok(())
    }
}

fn notify(callback: &Object, name: &str, object: &Object) -> Result<()> {
    let mut p = Parcel::new();
    p.write_interface_token(SERVICE_CALLBACK_DESCRIPTOR)?;
    p.write_string16(Some(name))?;
    p.write_object(Some(object));
    callback
        .transact(ON_REGISTRATION, p, FLAG_ONEWAY, None)
        .map(drop)
}

impl super::Binder for Registry {
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> Result<()> {
        data.enforce_interface(SERVICE_MANAGER_DESCRIPTOR)?;
        match code {
            code::GET_SERVICE | code::CHECK_SERVICE => {
                let name: String = data.read()?;
                self.find(&name, call, reply)
            }
            code::ADD_SERVICE => {
                let name: String = data.read()?;
                let object = data
                    .read_object()?
                    .ok_or_else(|| Error::new(Status::UnexpectedNull, "addService of null"))?;
                let _allow_isolated = data.read_i32()?;
                let _dump_priority = data.read_i32()?;
                self.add(name, object, call, reply)
            }
            code::LIST_SERVICES => {
                let _dump_priority = data.read_i32()?;
                let names: Vec<String> =
                    self.infos(call.uid()).into_iter().map(|i| i.name).collect();
                reply.write_no_exception();
                reply.write(&names)
            }
            code::REGISTER_FOR_NOTIFICATIONS => {
                let name: String = data.read()?;
                let cb = data.read_object()?.ok_or_else(|| {
                    Error::new(Status::UnexpectedNull, "registerForNotifications of null")
                })?;
                self.watch(name, cb, call, reply)
            }
            code::UNREGISTER_FOR_NOTIFICATIONS => {
                let name: String = data.read()?;
                let cb = data.read_object()?.ok_or_else(|| {
                    Error::new(Status::UnexpectedNull, "unregisterForNotifications of null")
                })?;
                self.unwatch(&name, &cb, reply)
            }
            code::TRY_UNREGISTER_SERVICE => {
                let name: String = data.read()?;
                let object = data.read_object()?.ok_or_else(|| {
                    Error::new(Status::UnexpectedNull, "tryUnregisterService of null")
                })?;
                self.remove(&name, &object, call, reply)
            }
            code::GET_SERVICE_DEBUG_INFO => {
                let infos: Vec<ServiceDebugInfo> = self
                    .infos(call.uid())
                    .into_iter()
                    .map(|i| ServiceDebugInfo {
                        name: i.name,
                        debug_pid: i.pid,
                    })
                    .collect();
                reply.write_no_exception();
                reply.write(&infos)
            }
            code::IPK_SERVICES => {
                reply.write_no_exception();
                reply.write(&self.infos(call.uid()))
            }
            _ => Err(Status::UnknownTransaction.into()),
        }
    }

    fn descriptor(&self) -> &str {
        SERVICE_MANAGER_DESCRIPTOR
    }
}

/// A service manager serving on a socket (see the [module docs](self)).
/// Dropping it stops it.
pub struct ServiceManagerServer {
    registry: Arc<Registry>,
    server: Server,
}

impl fmt::Debug for ServiceManagerServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceManagerServer")
            .field("addr", self.server.local_addr())
            .finish()
    }
}

/// Settings for a [`ServiceManagerServer`].
#[derive(Debug, Default)]
pub struct ServiceManagerBuilder {
    policy: Policy,
}

impl ServiceManagerBuilder {
    /// Who may register and find what (default [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Serves at `addr`. A socket file is made 0666: every user may
    /// connect, and the policy decides what they may do.
    pub fn bind(self, addr: &UnixAddr) -> Result<ServiceManagerServer> {
        let registry = Arc::new_cyclic(|me| Registry {
            policy: self.policy,
            state: Mutex::new(State::default()),
            me: me.clone(),
        });
        let mut b = Server::builder(Object::new_shared(registry.clone())).threads(2);
        if matches!(addr, UnixAddr::Path(_)) {
            b = b.mode(0o666);
        }
        let server = b.bind(addr).map_err(|e| {
            if e.to_string().contains("in use") {
                Error::new(
                    Status::AlreadyExists,
                    format!("a service manager already serves {addr}: {e}"),
                )
            } else {
                e
            }
        })?;
        Ok(ServiceManagerServer { registry, server })
    }
}

impl ServiceManagerServer {
    /// A service manager to configure and [`bind`](ServiceManagerBuilder::bind).
    pub fn builder() -> ServiceManagerBuilder {
        ServiceManagerBuilder::default()
    }

    /// The services registered now.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.registry.infos(0)
    }

    /// The client sessions open now.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.server.sessions()
    }

    /// The address served.
    pub fn local_addr(&self) -> &UnixAddr {
        self.server.local_addr()
    }

    /// Serves until the socket fails: for daemons.
    pub fn join(self) {
        self.server.join()
    }
}

// ---- the client ----

/// The service manager's address: `$IPCKIT_SERVICE_MANAGER`, else
/// [`DEFAULT_SERVICE_MANAGER`].
pub fn service_manager_addr() -> Result<UnixAddr> {
    let s = std::env::var(SERVICE_MANAGER_ENV).unwrap_or_else(|_| DEFAULT_SERVICE_MANAGER.into());
    s.parse().map_err(|e| {
        Error::new(
            Status::BadValue,
            format!("{SERVICE_MANAGER_ENV}={s:?} is not a socket address: {e}"),
        )
    })
}

/// A connection to a service manager (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct ServiceManager {
    addr: UnixAddr,
    root: Object,
}

impl ServiceManager {
    /// Connects to the service manager at [`service_manager_addr`],
    /// refusing one run by a user other than this process's or root.
    pub fn connect() -> Result<ServiceManager> {
        let addr = service_manager_addr()?;
        let sm = Self::connect_to(&addr)?;
        let uid = sm.uid();
        let me = crate::sys::process::euid();
        if uid != 0 && uid != me {
            return Err(Error::new(
                Status::PermissionDenied,
                format!(
                    "the service manager at {addr} runs as uid {uid}, neither root nor this \
                     user ({me}); set {SERVICE_MANAGER_ENV} to trust another one"
                ),
            ));
        }
        Ok(sm)
    }

    /// Connects to the service manager at `addr`.
    pub fn connect_to(addr: &UnixAddr) -> Result<ServiceManager> {
        // One incoming connection: registrations are pushed to this
        // process, and its services are fetched from it, at any time.
        let root = Connector::new(addr)
            .incoming_threads(1)
            .connect()
            .map_err(|e| {
                Error::new(
                    e.status(),
                    format!("cannot reach the service manager at {addr}: {e}"),
                )
            })?;
        Ok(ServiceManager {
            addr: addr.clone(),
            root,
        })
    }

    /// The service manager's address.
    pub fn addr(&self) -> &UnixAddr {
        &self.addr
    }

    /// The service manager's process.
    pub fn pid(&self) -> i32 {
        self.root.host_pid()
    }

    /// The service manager's user.
    pub fn uid(&self) -> u32 {
        match self.root.kind() {
            Kind::Remote(p) => p.session.peer.uid,
            Kind::Local(_) => crate::sys::process::euid(),
        }
    }

    /// The service manager's object (for raw calls).
    pub fn object(&self) -> &Object {
        &self.root
    }

    fn call(&self, code: u32, build: impl FnOnce(&mut Parcel) -> Result<()>) -> Result<Parcel> {
        let mut p = Parcel::new();
        p.write_interface_token(SERVICE_MANAGER_DESCRIPTOR)?;
        build(&mut p)?;
        let mut r = self.root.call(code, p)?;
        r.read_exception()?;
        Ok(r)
    }

    /// Registers `object` as `name` (`addService`); it is removed when its
    /// process dies.
    pub fn add_service(&self, name: &str, object: &Object) -> Result<()> {
        check_name(name)?;
        self.call(code::ADD_SERVICE, |p| {
            p.write(name)?;
            p.write_object(Some(object));
            p.write_i32(0);
            p.write_i32(0);
            Ok(())
        })
        .map(drop)
    }

    /// The service registered as `name`, if any, now (`checkService`).
    pub fn check_service(&self, name: &str) -> Result<Option<Object>> {
        self.call(code::CHECK_SERVICE, |p| p.write(name))?
            .read_object()
    }

    /// Removes `name` if it is registered with `object` by this user
    /// (`tryUnregisterService`).
    pub fn remove_service(&self, name: &str, object: &Object) -> Result<()> {
        self.call(code::TRY_UNREGISTER_SERVICE, |p| {
            p.write(name)?;
            p.write_object(Some(object));
            Ok(())
        })
        .map(drop)
    }

    /// The names of the services this user may find (`listServices`).
    pub fn list_services(&self) -> Result<Vec<String>> {
        self.call(code::LIST_SERVICES, |p| {
            p.write_i32(0xF); // DUMP_FLAG_PRIORITY_ALL
            Ok(())
        })?
        .read()
    }

    /// The services this user may find, with their pid and uid (ipckit's
    /// own transaction).
    pub fn services(&self) -> Result<Vec<ServiceInfo>> {
        self.call(code::IPK_SERVICES, |_| Ok(()))?.read()
    }

    /// Calls `f(name, object)` whenever a service registers as `name`, and
    /// at once if one is registered (`registerForNotifications`), until
    /// the returned [`Notifications`] is dropped.
    pub fn register_for_notifications(
        &self,
        name: &str,
        f: impl Fn(&str, Object) + Send + Sync + 'static,
    ) -> Result<Notifications> {
        check_name(name)?;
        let callback = Object::from_fn(move |code, data, _, _| {
            if code != ON_REGISTRATION {
                return Err(Status::UnknownTransaction.into());
            }
            data.enforce_interface(SERVICE_CALLBACK_DESCRIPTOR)?;
            let name: String = data.read()?;
            let object = data
                .read_object()?
                .ok_or_else(|| Error::new(Status::UnexpectedNull, "onRegistration of null"))?;
            f(&name, object);
            Ok(())
        });
        self.call(code::REGISTER_FOR_NOTIFICATIONS, |p| {
            p.write(name)?;
            p.write_object(Some(&callback));
            Ok(())
        })?;
        Ok(Notifications {
            sm: self.clone(),
            name: name.to_owned(),
            callback,
        })
    }

    /// Waits up to `timeout` for a service to register as `name`: pushed
    /// by the service manager the moment it does, no polling.
    pub fn wait_for_service(&self, name: &str, timeout: Duration) -> Result<Object> {
        let (tx, rx) = mpsc::sync_channel(1);
        let _n = self.register_for_notifications(name, move |_, object| {
            let _ = tx.try_send(object);
        })?;
        // Registered before this call: looked up once more after watching,
        // as libbinder's waitForService does, so that it is found even if
        // the service manager's immediate callback does not arrive.
        if let Some(o) = self.check_service(name)? {
            return Ok(o);
        }
        rx.recv_timeout(timeout).map_err(|_| {
            Error::new(
                Status::TimedOut,
                format!("no service registered as {name:?} within {timeout:?}"),
            )
        })
    }

    /// Registers `object` as `name` and keeps it registered: if the
    /// service manager restarts, registers again with the new one. Stops
    /// (and unregisters) when the [`Publication`] is dropped.
    pub fn publish(&self, name: &str, object: &Object) -> Result<Publication> {
        self.add_service(name, object)?;
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        self.root.link_to_death(move || {
            let _ = t.send(Publish::Died);
        })?;
        let (sm, n, o) = (self.clone(), name.to_owned(), object.clone());
        let death_tx = tx.clone();
        let thread = std::thread::Builder::new()
            .name("ipckit-publish".into())
            .spawn(move || republish(sm, &n, &o, &rx, &death_tx))
            .map_err(|e| Error::io(e, "cannot start the publishing thread"))?;
        Ok(Publication {
            name: name.to_owned(),
            stop: tx,
            thread: Some(thread),
        })
    }
}

enum Publish {
    Died,
    Stop,
}

/// Waits for the service manager's death, registers again with the next
/// one at the same address, and so on; unregisters when told to stop.
fn republish(
    mut sm: ServiceManager,
    name: &str,
    object: &Object,
    rx: &mpsc::Receiver<Publish>,
    tx: &mpsc::Sender<Publish>,
) {
    loop {
        match rx.recv() {
            Ok(Publish::Died) => {}
            Ok(Publish::Stop) | Err(_) => {
                let _ = sm.remove_service(name, object);
                return;
            }
        }
        // Gone: try the address until a service manager answers.
        let mut wait = RETRY;
        sm = loop {
            match rx.recv_timeout(wait) {
                Ok(Publish::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Publish::Died) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
            let Ok(next) = ServiceManager::connect_to(&sm.addr) else {
                continue;
            };
            if next.add_service(name, object).is_err() {
                continue;
            }
            let t = tx.clone();
            let linked = next.root.link_to_death(move || {
                let _ = t.send(Publish::Died);
            });
            if linked.is_ok() {
                break next;
            }
        };
    }
}

/// Keeps a service registered ([`ServiceManager::publish`]); dropping it
/// unregisters the service.
pub struct Publication {
    name: String,
    stop: mpsc::Sender<Publish>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publication")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        let _ = self.stop.send(Publish::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A registration callback ([`ServiceManager::register_for_notifications`]);
/// dropping it unregisters.
pub struct Notifications {
    sm: ServiceManager,
    name: String,
    callback: Object,
}

impl fmt::Debug for Notifications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifications")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = self.sm.call(code::UNREGISTER_FOR_NOTIFICATIONS, |p| {
            p.write(name.as_str())?;
            p.write_object(Some(&self.callback));
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules() {
        let p: Policy = "# comment\nadd media.* 1013\nfind media.* *\nfind clock 1000,1001 # x\n"
            .parse()
            .unwrap();
        assert!(p.may_add(1013, "media.player"));
        assert!(!p.may_add(1000, "media.player"));
        assert!(p.may_add(0, "media.player"));
        assert!(p.may_add(1000, "other"));
        assert!(p.may_find(5, "media.player", 1013));
        assert!(p.may_find(1001, "clock", 7));
        assert!(!p.may_find(1002, "clock", 7));
        assert!(p.may_find(7, "other", 7));
        assert!(!p.may_find(8, "other", 7));
        assert!(p.may_find(0, "other", 7));
    }

    #[test]
    fn policy_errors_name_the_line() {
        for (text, want) in [
            ("add x", "line 1: \"add x\": expected three words"),
            ("\nremove x 1", "line 2: unknown action \"remove\""),
            ("find a*b 1", "line 1: \"a*b\" is not a service name"),
            ("find x root", "line 1: \"root\" is not a numeric uid"),
        ] {
            let e = text.parse::<Policy>().unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("android.os.IFoo/default").is_ok());
        for bad in ["", "a b", "x\u{e9}", &"n".repeat(128)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
