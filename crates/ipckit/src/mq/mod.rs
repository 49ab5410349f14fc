//! Message queues, both families of the notes: POSIX queues (this module's
//! [`PosixQueue`], `mq_overview(7)`) and System V queues ([`sysv`],
//! `msgop(2)`).
//!
//! | | [`PosixQueue`] | [`sysv::MessageQueue`] |
//! |---|---|---|
//! | found by | a name (`/jobs`) | a key (a number, or `ftok` of a path) |
//! | a receiver chooses | the highest priority first | by type: any, one, all but one, lowest up to a bound |
//! | waiting | a file descriptor: `poll`, every wait strategy, `mq_notify` | no descriptor: blocking calls, timeouts by an alarm |
//! | limits | `/proc/sys/fs/mqueue` | `/proc/sys/kernel/msg{max,mnb,mni}` |
//!
//! # POSIX queues
//!
//! A message queue is the one IPC mechanism whose unit is the message
//! itself: the kernel keeps whole messages, each with a priority, in a named
//! queue that outlives the processes using it (until it is unlinked or the
//! machine restarts). Any number of processes may send and receive.
//!
//! - Messages are received highest priority first, in FIFO order within one
//!   priority ([`PosixQueue::send_priority`], [`PosixQueue::recv_priority`]).
//! - A queue has a capacity (number of messages, largest message) fixed when
//!   it is created, bounded by `/proc/sys/fs/mqueue/{msg_max,msgsize_max}`
//!   for unprivileged processes; exceeding a limit is an error that names it.
//! - On Linux a queue descriptor is a file descriptor: it can be polled
//!   ([`AsFd`](std::os::fd::AsFd)) together with sockets and pipes, and every [`WaitStrategy`](crate::WaitStrategy)
//!   works. [`QueueBuilder::nonblocking`] puts it in `O_NONBLOCK` mode for an
//!   event loop.
//! - [`PosixQueue::notify_signal`] asks the kernel for a signal when a
//!   message arrives on the empty queue (`mq_notify(3)`).
//!
//! # Example
//!
//! ```
//! use ipckit::mq::PosixQueue;
//!
//! let name = format!("/ipckit-doc-{}", std::process::id());
//! let mut q = PosixQueue::builder(&name).capacity(8, 1024).create()?; // unlinked on drop
//! q.send_priority(b"routine", 1)?;
//! q.send_priority(b"urgent", 9)?;
//! let mut buf = Vec::new();
//! assert_eq!(q.recv_priority(&mut buf)?, 9);
//! assert_eq!(buf, b"urgent");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//! `mq_overview(7)`, `mq_open(3)`, `mq_send(3)`, `mq_receive(3)`,
//! `mq_getattr(3)`, `mq_notify(3)`, `mq_unlink(3)`.

mod posix;
pub mod sysv;

pub use posix::*;
