//! Mailboxes: indirect and direct message passing through a broker.
//!
//! Note 001 describes message passing in two forms: *direct*, where the
//! sender names the receiving process, and *indirect*, through a mailbox
//! (信箱) that many processes send to and many receive from. A mailbox
//! broker gives both, with what kernel queues lack: acknowledgements and
//! redelivery, dead letters with a reason, fan-out to many receivers,
//! receiver groups, limits with a choice of what happens when full, and
//! the sender's credentials on every message.
//!
//! The broker is a process of its own (`ipc broker`) or a thread of
//! yours ([`Broker::builder`]`().spawn()`); clients reach it over a Unix
//! socket ([`default_socket`]). A client never starts a broker by itself:
//! without one, [`Client::connect`] says how to start it.
//!
//! | you want | do |
//! |---|---|
//! | a queue many processes share, each message to one of them | send to a name; every receiver of it competes (the default [`Retention::WorkQueue`]) |
//! | every receiver to get every message | create the mailbox with [`Retention::Interest`] (or [`Retention::Limits`] to keep a log) |
//! | some receivers to share, others to see all | receivers with the same [`SubscribeOptions::group`] share |
//! | to receive from many mailboxes | a pattern: `orders.*` (one word), `orders.>` (the rest) |
//! | a message to one process | send to its inbox [`inbox`]`(pid)`; it receives with [`Client::subscribe_inbox`] |
//! | urgent messages first | [`Message::with_priority`]: highest first, FIFO within a priority |
//! | messages by kind | [`Message::with_type`] and [`SubscribeOptions::selector`], as System V `msgrcv(2)` |
//! | to survive a receiver's crash | acknowledge after handling ([`AckPolicy`]): what it held goes to another receiver |
//! | to give up on a poison message | [`Config::max_deliver`], [`Client::reject`]: it lands in `dead.NAME` with the reason |
//! | to retry sends safely | [`Message::with_id`]: duplicates within the window are not stored twice |
//! | messages to survive the broker's crash | a broker with a store ([`BrokerBuilder::store`], `ipc broker`) and [`Config::durable`] |
//!
//! ```
//! use ipckit::mailbox::{Broker, Client, SubscribeOptions};
//!
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("broker.sock");
//! let broker = Broker::builder().socket(&path).spawn()?;  // or `ipc broker`
//! let mut tx = Client::connect_to(&path)?;
//! let mut rx = Client::connect_to(&path)?;
//! rx.subscribe("jobs", &SubscribeOptions::default())?;
//! tx.send("jobs", b"resize photo 7")?;
//! let msg = rx.recv()?;
//! assert_eq!(msg.payload, b"resize photo 7");
//! assert_eq!(msg.sender.pid, std::process::id() as i32);
//! # drop(broker);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How the bytes travel
//!
//! A client connects to the broker's socket (which gives the broker its
//! credentials) and asks for *lanes*: the broker answers with a memfd of
//! two byte rings, one each way (256 KiB each, sealed so that neither side
//! can resize it), and from then on every frame goes through shared
//! memory. The socket stays for what memory cannot do: it tells the
//! broker that the client has gone, and it wakes a side that sleeps. A
//! side about to sleep raises a flag in the lanes and looks once more;
//! the other side, having written, sees the flag and sends one byte on
//! the socket (io_uring's need-wakeup flag, for its polling thread). So a
//! busy client and a busy broker, both spinning for a while before they
//! sleep, exchange messages with no system call at all, and an idle pair
//! costs one `send(2)` to wake, as before. The broker trusts nothing a
//! client writes there: it keeps its own positions, checks the client's
//! against the rings' capacity, copies the bytes out before reading a
//! frame, and cuts off a client whose lanes make no sense
//! ([`BrokerBuilder::lanes`] turns lanes off; `ipc broker --no-lanes`).
//!
//! `ipc bench mailbox` measures both ways on your machine. On the 2-CPU
//! VM this was written on, a 64-byte round trip through the broker (two
//! confirmed sends, two deliveries) took 8.7 µs with lanes and 26 µs on
//! the sockets alone, against 92 to 154 µs through nats-server; most of
//! what is left is the scheduler handing a CPU between the broker and the
//! client that shares it (about 1.6 µs per hand-over there). A broker
//! with a CPU of its own never waits for one: pinned so (`taskset -c 1
//! ipc broker`), both clients sharing the other CPU, the round trip took
//! 4.0 µs, 1.2 to 1.4 times a bare Unix socket pair's on two CPUs.
//!
//! ## Access
//!
//! A mailbox has an owner (the user that made it, by sending to or
//! receiving from a free name, or by [`Client::create`]) and a mode like a
//! file's: `w` lets a user send, `r` receive; default 0600. The broker
//! checks every request against the credentials the kernel gives for the
//! connection (`SO_PEERCRED`), never against anything the client says;
//! the group bits apply to the owner's primary group.
//!
//! ## Past one machine: NATS
//!
//! With the `nats` feature, a broker bridges chosen mailboxes to a NATS
//! server (`BrokerBuilder::nats`, `ipc broker --nats URL --bridge
//! 'orders.> jobs'`), and brokers on several machines connected to it
//! share those mailboxes: a message sent to one reaches the receivers of
//! the others. A work queue's message goes to one receiver anywhere
//! (this broker's receivers and the bridge compete for it; what the
//! bridge takes goes to one other broker); an interest or limits
//! mailbox's message goes to every broker. A durable mailbox's messages
//! travel through JetStream (stream `IPCKIT_…`, subjects
//! `$IPCKIT.work.NAME` and `$IPCKIT.fan.NAME`),
//! the others as NATS requests on subject `NAME` answered by the broker
//! that stored them.
//!
//! Each hop lets go of a message only once the next has stored it (the
//! bridge acknowledges to its broker when NATS or JetStream has it, and
//! to NATS when its broker has stored it), and every message crosses
//! with an id (the sender's or one the bridge makes), so a message
//! delivered twice on the way is stored once: acknowledgement,
//! redelivery, dead letters and deduplication work for a receiver on
//! another machine as for a local one. What does not cross: the order
//! between messages (NATS may hand them to the other broker in another
//! order), and the sender's credentials (a message that came through the
//! bridge was sent by the bridge, the receiving broker's own process;
//! the original sender's pid, uid and gid travel in NATS header
//! `Ipckit-Sender`, for information). The mailbox must exist on each
//! broker (the bridge makes none), with the same retention. Process
//! inboxes and dead letters stay on their broker. A mailbox's mode is
//! checked against local users only: whoever may publish on the NATS
//! server may send to the bridged mailboxes, so restrict it with NATS's
//! own accounts and permissions.
//!
//! A work queue's durable message can come back from JetStream to the
//! broker that published it (they all pull from one consumer): that
//! broker hands it back at once the first time, then after 1 ms doubling
//! up to 1 s, so that another broker gets it and a broker alone on NATS
//! does not spin. `ipc bench mailbox` measures both routes through two
//! brokers and a nats-server of its own.
//!
//! ## Durability
//!
//! A broker given a store directory ([`BrokerBuilder::store`]; `ipc broker`
//! uses [`default_store`]) keeps each mailbox made with
//! [`Config::durable`] in an append-only log there, and loads it again
//! when it starts ([`Broker::store_report`]). Whatever a turn of the
//! broker's loop stored is written to the log before any of that turn's
//! sends is confirmed, so a send confirmed to its sender survives the
//! broker being killed (`SIGKILL`); what survives the machine losing
//! power is what the [`Fsync`] policy has synced. Acknowledged messages
//! are recorded as removed; message ids stay known for the deduplication
//! window, so a sender that retries after a crash does not store a
//! message twice. Each record carries a CRC-32; a record the crash cut
//! short is cut off the log when the broker starts, never loaded.
//!
//! After a restart, deliveries start again: a message that was in flight
//! is delivered again (at least once), its count of deliveries starts
//! from one, and receiver groups of a [`Retention::Limits`] mailbox start
//! from its oldest message. An [`Retention::Interest`] mailbox's messages
//! go to the first receiver group that comes.

pub mod config;
pub mod name;

#[cfg(feature = "nats")]
mod bridge;
mod broker;
mod client;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod wire;

pub use crate::mq::sysv::Selector;
pub use broker::{
    default_socket, default_store, Broker, BrokerBuilder, EmbeddedBroker, Stopper,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE, DEFAULT_SPIN, LANE_CAPACITY,
};
pub use client::{
    AckPolicy, Client, Delivery, Error, ErrorKind, MailboxReceiver, MailboxSender, Message,
    Outcome, Receipt, Sender, SubscribeOptions, Subscription,
};
pub use config::{Config, MailboxInfo, Retention, WhenFull};
pub use name::{validate_name, Pattern};
pub use store::{Fsync, StoreReport};

/// A small deterministic generator (xorshift64) for the randomized tests.
#[cfg(test)]
pub(crate) struct Rng(pub(crate) u64);

#[cfg(test)]
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The mailbox that is process `pid`'s inbox: `pid.PID`. A process has one
/// while it is connected to the broker.
pub fn inbox(pid: i32) -> String {
    format!("pid.{pid}")
}
