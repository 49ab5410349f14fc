//! # ipckit
//!
//! Every Linux inter-process communication mechanism as a safe Rust API that
//! keeps what is special about each one, plus shared traits
//! ([`MessageSender`], [`MessageReceiver`]) so that any message-capable
//! mechanism moves whole messages the same way: blocking, non-blocking
//! (`try_`) or with a timeout; typed ([`typed`]), as request/reply
//! ([`rpc`]), and many at once ([`select`]).
//!
//! ## Choose a mechanism
//!
//! | you need | use | address |
//! |---|---|---|
//! | the fastest messages between processes on one machine | [`ring`]: slots in shared memory, no system call while both sides are busy | `ring:NAME` |
//! | a server that many clients connect to | Unix stream sockets ([`socket::unix`]); TCP past one machine | `unix:@NAME`, `unix:PATH`, `tcp:HOST:PORT` |
//! | messages that keep their boundaries, many senders, one receiver | Unix datagrams; POSIX queues (with priorities, persistent, by name) | `unix-dgram:@NAME`, `mq:/NAME` |
//! | to talk to shell tools (`cat`, `echo`, `nc`) | a FIFO or a socket with line framing ([`endpoint::Options::framing`]) | `fifo:PATH` |
//! | a child process's input and output | anonymous pipes ([`pipe`], [`process`] to hand it more descriptors) | — |
//! | shared state (counters, buffers) with a lock | [`shm`]: memory, a robust mutex and a condition variable inside it | `shm:/NAME`, `sysv-shm:KEY` |
//! | a counter to take turns (P and V) | [`sem`] | `sem:/NAME`, `sysv-sem:KEY` |
//! | to poke a process, with a value | [`signal`]: realtime signals carry an integer | — |
//! | to react to SIGTERM, SIGHUP... safely | [`signal::Handler`]: your code runs on a normal thread | — |
//! | a global value many processes read, one writes | [`prop`]: shared-memory properties, futex waits, a daemon checking writers | `ipc propd` |
//! | System V's selective receive by type | [`mq::sysv`] | `sysv-mq:KEY` |
//!
//! `ipc bench` measures them all on your machine, and [`registry`] lists
//! what each message mechanism is (the notes' comparison table).
//!
//! ## One address, any mechanism
//!
//! An [`Address`] names an endpoint of any mechanism; [`connect`] and
//! [`listen`] open it, so changing the mechanism means changing a string:
//!
//! ```text
//! fifo:PATH                    a named pipe
//! unix:PATH | unix:@NAME       a Unix stream socket (a path, or an abstract name)
//! unix-dgram:PATH | :@NAME     a Unix datagram socket
//! unix-seq:PATH | :@NAME       a Unix seqpacket socket
//! tcp:HOST:PORT                TCP (IPv6 as [::1]:PORT)
//! udp:HOST:PORT                UDP
//! mq:/NAME                     a POSIX message queue
//! sysv-mq:KEY                  a System V message queue (decimal, 0x hex, or PATH:PROJ for ftok)
//! ring:NAME                    a shared-memory ring
//! mailbox:NAME | pid:PID      a broker's mailbox; a process's inbox
//! shm:/NAME  sysv-shm:KEY  sem:/NAME  sysv-sem:KEY   objects (not message channels)
//! ```
//!
//! ```
//! use ipckit::prelude::*;
//! use std::time::Duration;
//!
//! # let me = std::process::id();
//! for text in [format!("unix:@doc-{me}"), format!("mq:/doc-{me}"), format!("ring:doc-{me}")] {
//!     let addr: ipckit::Address = text.parse()?;
//!     let listener = ipckit::listen(&addr)?;
//!     let mut tx = ipckit::connect(&addr)?;
//!     tx.send(b"the same code")?;
//!     let mut rx = listener.accept_timeout(Duration::from_secs(5))?;
//!     assert_eq!(rx.recv()?, b"the same code");
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## The modules
//!
//! | module | mechanism | data | participants |
//! |---|---|---|---|
//! | [`pipe`] | anonymous pipes (`pipe(2)`) | byte stream, framed | related processes |
//! | [`fifo`] | named pipes (`mkfifo(3)`) | byte stream, framed | any process that can open the path |
//! | [`mq`] | message queues: POSIX (`mq_overview(7)`) and System V ([`mq::sysv`], `msgop(2)`) | messages with priorities; with types and selective receive | many processes, by name or key |
//! | [`sysv`] | System V keys (`ftok(3)`) and limits; the System V queue re-exported | — | — |
//! | [`shm`] | shared memory: POSIX (`shm_open(3)`), System V (`shmget(2)`), memfd, mapped files; futexes, a robust mutex and a condition variable inside it | raw bytes, typed views, atomics | any process that maps it |
//! | [`sem`] | semaphores: POSIX named and unnamed (`sem_overview(7)`), System V sets (`semop(2)`) | a counter (P and V) | any process that opens it |
//! | [`signal`] | signals (`signal(7)`): `kill`, `sigqueue` with a value, masks, a `signalfd` receiver | a signal number (+ an integer for realtime signals) | any process of the same user |
//! | [`socket::unix`] | Unix domain sockets: stream, datagram, seqpacket | stream (framed) or datagrams | two processes (stream) or many (datagram) |
//! | [`socket::inet`] | TCP and UDP on loopback or a network | stream (framed) or datagrams | two processes, any host |
//! | [`ring`] | a ring of message slots in shared memory (POSIX or memfd), futex wake-ups | messages | one or many senders and receivers |
//! | [`endpoint`] | [`connect`] and [`listen`]: any of the message mechanisms above from an [`Address`] | messages | as the mechanism |
//! | [`typed`] | typed messages over any of them (postcard or JSON), with iterators | values of a `serde` type | as the mechanism underneath |
//! | [`rpc`] | request/reply with correlation ids, a threaded server | typed requests and responses | many callers, one server |
//! | [`select`] | waiting on many receivers and listeners at once (`epoll(7)`) | readiness | — |
//! | [`mailbox`] | mailboxes and process inboxes through a broker (`ipc broker`): acks, redelivery, dead letters, groups, fan-out | messages with priority, type, id, sender | many senders and receivers |
//! | `aio` (Cargo feature `tokio`) | async receive and send on a tokio runtime: any selectable end, typed, as a `Stream` | messages, values | as the mechanism |
//!
//! [`named`] removes exactly the FIFO or socket file one made, even from
//! another thread (a signal handler's), and nothing put in its place.
//!
//! ```
//! use ipckit::prelude::*;
//!
//! let (mut tx, mut rx) = ipckit::pipe::channel()?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

macro_rules! impl_message_sender {
    ($ty:ty => $($field:ident).+) => {
        impl $crate::MessageSender for $ty {
            fn send_until(
                &mut self,
                msg: &[u8],
                deadline: $crate::Deadline,
            ) -> Result<(), $crate::SendTimeoutError<()>> {
                self.$($field).+.send(msg, &[], deadline)
            }
        }
    };
}

macro_rules! impl_message_receiver {
    ($ty:ty => $($field:ident).+) => {
        impl $crate::MessageReceiver for $ty {
            fn recv_until(
                &mut self,
                buf: &mut Vec<u8>,
                deadline: $crate::Deadline,
            ) -> Result<(), $crate::RecvTimeoutError> {
                self.$($field).+.recv(buf, None, deadline)
            }
            fn max_message_size(&self) -> usize {
                self.$($field).+.max()
            }
            fn set_max_message_size(&mut self, max: usize) {
                self.$($field).+.set_max(max)
            }
            fn set_wait_strategy(&mut self, strategy: $crate::WaitStrategy) {
                self.$($field).+.wait = strategy;
            }
        }
    };
}

pub mod address;
#[cfg(not(loom))]
pub mod binder;
// Registers descriptors with tokio's reactor (an `unsafe` contract).
#[cfg(all(feature = "tokio", not(loom)))]
#[allow(unsafe_code)]
pub mod aio;
mod dgram;
// Uses the ring's segment, which the loom build (ring protocol only) leaves out.
#[cfg(not(loom))]
pub mod endpoint;
pub mod error;
mod fdio;
pub mod fifo;
pub mod frame;
// Uses the mailbox and the ring's segment, which the loom build leaves out.
#[cfg(all(any(test, feature = "fuzz"), not(loom)))]
#[doc(hidden)]
pub mod fuzz;
#[cfg(not(loom))]
pub mod mailbox;
pub mod message;
pub mod mq;
pub mod named;
pub mod pipe;
mod policy;
pub mod process;
pub mod prop;
pub mod registry;
// The ring's zero-copy views into its mapped slots (`Loan`, `Sample`).
#[allow(unsafe_code)]
pub mod ring;
#[cfg(not(loom))]
pub mod rpc;
pub mod select;
pub mod sem;
// Views into mapped memory: thin `unsafe` accessors over `sys::mman`.
#[allow(unsafe_code)]
pub mod shm;
pub mod signal;
pub mod socket;
#[allow(unsafe_code)]
mod sys;
pub mod sysv;
pub mod typed;
pub mod wait;

pub use address::Address;
pub use dgram::DIRECT_LIMIT;
#[cfg(not(loom))]
pub use endpoint::{
    connect, connect_timeout, connect_with, listen, listen_with, Connection, Listener,
};
pub use error::{
    MessageTooLarge, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, Unit,
};
pub use message::{Deadline, MessageReceiver, MessageSender, MessageSenderExt};
pub use wait::WaitStrategy;

/// The traits that give every endpoint its methods: `use ipckit::prelude::*;`.
pub mod prelude {
    pub use crate::message::{MessageReceiver, MessageSender, MessageSenderExt};
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
