//! The shared-memory ring channel: messages between processes without a
//! system call on the way.
//!
//! The notes call shared memory the fastest IPC, "but you bring your own
//! synchronisation". A ring is that synchronisation, built in: a bounded
//! queue of slots in a shared segment, behind the same
//! [`MessageSender`](crate::MessageSender) /
//! [`MessageReceiver`](crate::MessageReceiver) API as a pipe. A busy ring
//! never enters the kernel: a sender writes a message into a slot and
//! publishes it with one atomic store; a receiver that waits spins a while
//! and then sleeps on a futex, and a sender only makes the `futex(2)` call
//! that wakes it when someone is actually asleep.
//!
//! | | |
//! |---|---|
//! | segment | a named POSIX shared memory object (`/dev/shm/ipckit-ring.NAME`, mode 0600, address `ring:NAME`), or an anonymous memfd sealed against shrinking, inherited by a child or passed over a Unix socket |
//! | queue | Vyukov's bounded MPMC queue: a sequence stamp per slot (see the `core` module); a plain store instead of a compare-and-swap when the ring is single-producer, single-consumer |
//! | messages | any length up to the ring's maximum, one per slot; a slot is the maximum plus a 16-byte header, rounded up to a cache line |
//! | waiting | [`WaitStrategy::Adaptive`](crate::WaitStrategy::Adaptive) by default: spin for the window, then park on a futex; `Spin` never parks; `Block` parks at once; [`RingReceiver::notify_fd`] gives an eventfd for `poll`/`epoll` |
//! | zero-copy | [`RingSender::loan`] writes a message in its slot, [`RingReceiver::recv_in_place`] reads it there |
//! | ends | a receiver gets `Disconnected` once every sender has gone (closed, or died: each side records its pid and start time, and a waiting side checks on the others at least every 50 ms); a sender gets it once every receiver has gone |
//!
//! # Example
//!
//! ```
//! use ipckit::ring::Ring;
//! use ipckit::prelude::*;
//!
//! let name = format!("doc-{}", std::process::id());
//! let ring = Ring::builder(&name).capacity(64).max_message_size(1024).create()?;
//! // Another process: Ring::builder(&name).open()?.receiver()?
//! let mut rx = ring.receiver()?;
//! let mut tx = ring.sender()?;
//! tx.send(b"hello")?;
//! assert_eq!(rx.recv()?, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Not trusting the other process
//!
//! The segment holds no pointer and no glibc object. Its geometry (slot
//! count, slot size, maximum message) is read once when it is opened,
//! checked, and kept in this process; the mapping's size is this
//! process's own. Positions are reduced modulo the slot count, a message
//! length is checked against the maximum before anything is copied, and a
//! stamp no honest ring can hold is an error, not a reason to spin. A peer
//! that truncates the segment is caught by the `SIGBUS` guard of
//! [`crate::shm`]. The worst another process can do is stall the ring or
//! make it fail with an error that says so.
//!
//! # When a process dies
//!
//! A message is never delivered half-written. A sender or receiver killed
//! in the middle of its work leaves a slot the others must not wait at for
//! ever, and they do not: in a single-producer ring the next sender (or
//! receiver) to attach finishes for the dead one; in a multi ring each
//! slot carries its writer's and then its reader's pid, and the others
//! skip or free a slot whose owner has exited
//! ([`RingReceiver::messages_lost`] counts skipped messages). A process
//! killed in the few instructions between winning a position and tagging
//! its slot leaves the slot untagged: every sender and receiver announces
//! the position it is about to win in its entry of the ring's process
//! table before the compare-and-swap that wins it, so the others skip or
//! free such a slot once no live process of that side announces its
//! position. A sender that attaches after every receiver has gone from a
//! ring its creator has removed is told so at its first send (a ring kept
//! in place holds what it sends for the next receiver).
//!
//! # References
//! `shm_overview(7)`, `memfd_create(2)`, `futex(2)`; D. Vyukov, "Bounded
//! MPMC queue" (1024cores.net).

mod atomic;
mod core;

#[cfg(not(loom))]
pub(crate) mod segment;

#[cfg(not(loom))]
pub(crate) mod lanes;

#[cfg(not(loom))]
pub use segment::{
    unlink, Duplex, Loan, Ring, RingBuilder, RingReceiver, RingSender, RingStatus, Sample,
};

/// Checks a ring name: 1 to 200 bytes of ASCII letters, digits, `.`, `_`
/// and `-`, not starting with `.` (it becomes part of a file name in
/// `/dev/shm`).
pub fn validate_name(name: &str) -> std::io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "invalid ring name {name:?}: use 1 to 200 letters, digits, '.', '_' or '-' \
             (not starting with '.')"
            ),
        ))
    }
}

/// The POSIX shared memory name of the ring called `name`
/// (`/ipckit-ring.NAME`, the file `/dev/shm/ipckit-ring.NAME`).
pub fn shm_name(name: &str) -> String {
    format!("/ipckit-ring.{name}")
}
