//! Binder on any Linux, in user space: objects served by one process and
//! called by others, over Unix sockets (note 004's Binder, without the
//! kernel driver).
//!
//! - An [`Object`] is a local object (anything implementing [`Binder`])
//!   or a proxy of one in another process; both are called the same way:
//!   [`Object::call`] waits for the reply, [`Object::oneway`] does not
//!   (one-way calls to one object run in order).
//! - Arguments and results travel in a [`Parcel`]: numbers, strings,
//!   arrays, [`parcelable!`](crate::parcelable) structs, object references
//!   (which the receiver can call) and file descriptors.
//! - A call that the callee makes back into the calling process while
//!   the caller waits runs on the waiting thread (nested calls), so call
//!   chains between processes do not deadlock.
//! - An object reference passed on to a third process works there too:
//!   the third process's calls go straight to the object's process, which
//!   sees who calls (ipckit's extension of the protocol, between ipckit
//!   processes; see `forward.rs`).
//! - Every call carries the caller's pid, uid and gid ([`Call`]), from the
//!   kernel.
//! - [`Object::link_to_death`] runs a callback when the object's process
//!   dies, within milliseconds, even after `kill -9`.
//!
//! A [`Server`] serves a root object on a socket; [`connect`] returns the
//! root object of the server at an address. The service manager ([`sm`]:
//! [`ServiceManagerServer`], [`ServiceManager`]) finds objects by name.
//!
//! # Wire
//!
//! The sessions speak the RPC binder protocol of AOSP's libbinder
//! ([`wire`](self#wire) formats, protocol version 1), so libbinder's and
//! other implementations' RPC clients and servers can talk to these.
//!
//! # Example
//!
//! ```
//! use ipckit::binder::{self, Binder, Call, Object, Parcel, Result, Server};
//! use ipckit::socket::unix::UnixAddr;
//!
//! struct Counter(std::sync::atomic::AtomicI64);
//!
//! impl Binder for Counter {
//!     fn on_transact(&self, code: u32, data: &mut Parcel, reply: &mut Parcel, _: &Call) -> Result<()> {
//!         use std::sync::atomic::Ordering;
//!         let by: i64 = data.read()?;
//!         reply.write(&(self.0.fetch_add(by, Ordering::SeqCst) + by))
//!     }
//! }
//!
//! let addr: UnixAddr = format!("@ipckit-doc-counter-{}", std::process::id()).parse()?;
//! let server = Server::builder(Object::new(Counter(0.into()))).bind(&addr)?;
//!
//! // In another process, typically:
//! let counter = binder::connect(&addr)?;
//! let mut data = Parcel::new();
//! data.write(&5i64)?;
//! assert_eq!(counter.call(1, data)?.read::<i64>()?, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # References
//! AOSP `frameworks/native/libs/binder`: `RpcWireFormat.h`, `RpcState.cpp`,
//! `RpcSession.cpp`, `RpcServer.cpp`, `Parcel.cpp`; `unix(7)`
//! (`SCM_RIGHTS`, `SO_PEERCRED`, `SO_PEERPIDFD`), `pidfd_open(2)`.

mod conn;
mod death;
mod forward;
mod object;
mod parcel;
mod server;
mod session;
pub mod sm;
mod status;
mod wire;

pub use object::{
    Binder, Call, DeathLink, Object, FIRST_CALL_TRANSACTION, FLAG_ONEWAY, INTERFACE_TRANSACTION,
    LAST_CALL_TRANSACTION, PING_TRANSACTION,
};
pub use parcel::{
    Deserialize, DeserializeArray, DeserializeOption, Parcel, ParcelFileDescriptor, Serialize,
    SerializeArray, SerializeOption, DEFAULT_MAX_PARCEL, EX_ILLEGAL_ARGUMENT, EX_ILLEGAL_STATE,
    EX_NONE, EX_NULL_POINTER, EX_SECURITY, EX_SERVICE_SPECIFIC, EX_UNSUPPORTED_OPERATION, MAX_FDS,
};
pub use server::{
    connect, ConnectionFilter, Connector, Server, ServerBuilder, SessionInfo, DEFAULT_THREADS,
};
pub use sm::{
    check_name, service_manager_addr, Notifications, Policy, PolicyError, Publication, ServiceInfo,
    ServiceManager, ServiceManagerBuilder, ServiceManagerServer, DEFAULT_SERVICE_MANAGER,
    SERVICE_CALLBACK_DESCRIPTOR, SERVICE_MANAGER_DESCRIPTOR, SERVICE_MANAGER_ENV,
};
pub use status::{Error, Result, Status};
pub use wire::PROTOCOL_VERSION;
