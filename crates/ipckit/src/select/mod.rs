//! Waiting on many endpoints at once, the notes' `select()`: a
//! [`Selector`] registers receivers of different mechanisms and returns
//! those that have a message (or a connection to accept), with a timeout.
//!
//! Underneath is one `epoll(7)` instance, level-triggered: an endpoint is
//! reported for as long as a receive would not wait, whether or not it
//! was reported before. Beyond the descriptor, the selector knows where
//! a message can wait in user space:
//!
//! - a framed stream (pipe, FIFO, Unix or TCP stream) may have read a
//!   whole message ahead into its buffer; it is reported while one is
//!   there, though its descriptor has nothing to read;
//! - a [`ring`](crate::ring) receiver has no descriptor: its
//!   [`notify_fd`](crate::ring::RingReceiver::notify_fd) eventfd (a
//!   thread of this process sleeping on the ring's futex) stands in, and
//!   the selector checks the ring itself, so the report is exact;
//! - System V queues and semaphores have no descriptor and nothing in the
//!   kernel that wakes one: a *helper thread* of this process sleeps in
//!   the object's own blocking call (`msgrcv` with a zero-byte buffer,
//!   which fails with `E2BIG` and leaves the message queued; `semop`) and
//!   writes an eventfd when it returns. It sleeps in the kernel all along
//!   (no polling) and is woken once per burst, not per message: one
//!   thread and one eventfd per registered object is the cost. Details
//!   (what it takes ahead, how it stops) with
//!   [`MessageQueue`](crate::mq::sysv::MessageQueue#waiting-on-it-with-others)
//!   and [`sem::Waiter`](crate::sem::Waiter).
//!
//! What it costs, measured by `ipc bench --select` (64-byte round trips
//! between two processes, each waiting for every message in a selector,
//! against the same with a blocking receive; 3 runs on a 2-CPU VM): about
//! nothing for a pipe, FIFO or POSIX queue (×0.94–1.10), ×1.17–1.23 for a
//! Unix stream, ×1.21–1.26 for a System V queue (the helper thread: 4–5 µs
//! a wake-up), ×1.45–1.59 for a ring (its futex wake-up goes through the
//! notifying thread).
//!
//! Semaphores join through [`sem::Waiter`](crate::sem::Waiter) (its
//! helper does the P and holds the unit for you), signals through a
//! [`SignalReceiver`](crate::signal::SignalReceiver) (a `signalfd`).
//!
//! A reported endpoint's message can still be taken by someone else first
//! (another process on the same queue): receive with `try_recv`, and
//! select again on `Empty`. Registering borrows the endpoint only for the
//! call; deregister before dropping an endpoint (a dropped one is
//! forgotten by the kernel unless its descriptor was duplicated).
//!
//! ```
//! use ipckit::prelude::*;
//! use ipckit::select::Selector;
//! use std::time::Duration;
//!
//! let (mut tx1, mut rx1) = ipckit::pipe::channel()?;
//! let (mut tx2, mut rx2) = ipckit::socket::unix::UnixDatagram::pair()?;
//! let mut sel = Selector::new()?;
//! let a = sel.register(&mut rx1)?;
//! let b = sel.register(&mut rx2)?;
//! assert!(sel.select(Some(Duration::from_millis(10)))?.is_empty());
//!
//! tx2.send(b"to b")?;
//! assert_eq!(sel.select(Some(Duration::from_secs(5)))?, [b]);
//! assert_eq!(rx2.try_recv()?, b"to b");
//! tx1.send(b"one")?;
//! tx1.send(b"two")?;
//! assert_eq!(sel.select(None)?, [a]);
//! assert_eq!(rx1.try_recv()?, b"one"); // read "two" ahead as well
//! assert_eq!(sel.select(None)?, [a]); // ... so `a` is still ready
//! # drop(tx2);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys;

pub(crate) mod helper;

/// How a [`Selector`] learns that an endpoint is ready: a descriptor, and
/// what else to look at (made by each endpoint's
/// [`Selectable::readiness`]).
pub struct Readiness<'a> {
    fd: BorrowedFd<'a>,
    how: How,
}

impl fmt::Debug for Readiness<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.how {
            How::Descriptor => "descriptor",
            How::ReadAhead(_) => "descriptor or read-ahead",
            How::Signalled(_) => "eventfd, then check",
        };
        write!(f, "Readiness({}, {how})", self.fd.as_raw_fd())
    }
}

/// A check, on any thread, that a message waits where no descriptor shows.
pub(crate) type Check = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
enum How {
    /// Ready when the descriptor is readable.
    Descriptor,
    /// Also ready while the flag is set (a whole message read ahead).
    ReadAhead(Arc<AtomicBool>),
    /// The descriptor is an eventfd someone signals; on a signal, empty it
    /// and ask the check. Ready whenever the check says so.
    Signalled(Check),
}

impl<'a> Readiness<'a> {
    /// Ready when `fd` is readable.
    pub(crate) fn descriptor(fd: BorrowedFd<'a>) -> Self {
        Readiness {
            fd,
            how: How::Descriptor,
        }
    }

    /// Ready when `fd` is readable or `flag` is set.
    pub(crate) fn read_ahead(fd: BorrowedFd<'a>, flag: Arc<AtomicBool>) -> Self {
        Readiness {
            fd,
            how: How::ReadAhead(flag),
        }
    }

    /// Ready when `check` says so; `eventfd` is signalled when it may.
    pub(crate) fn signalled(eventfd: BorrowedFd<'a>, check: Check) -> Self {
        Readiness {
            fd: eventfd,
            how: How::Signalled(check),
        }
    }
}

/// An endpoint a [`Selector`] can wait on.
pub trait Selectable {
    /// What to wait on. `&mut`: a ring starts its notifying thread, a
    /// stream starts keeping its read-ahead flag.
    fn readiness(&mut self) -> io::Result<Readiness<'_>>;
}

impl<T: Selectable + ?Sized> Selectable for Box<T> {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        (**self).readiness()
    }
}

impl<T: Selectable + ?Sized> Selectable for &mut T {
    fn readiness(&mut self) -> io::Result<Readiness<'_>> {
        (**self).readiness()
    }
}

/// Which registration is ready, as [`Selector::register`] returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u64);

/// What a registration watches, owned: the descriptor number, our own
/// duplicate of a signalled eventfd, and what else to look at. Shared by
/// [`Selector`] and the async wrappers.
pub(crate) struct Watch {
    /// The descriptor number watched (for `EPOLL_CTL_DEL`).
    pub(crate) fd: RawFd,
    /// An eventfd of our own, duplicated, for `Signalled`.
    eventfd: Option<OwnedFd>,
    how: How,
}

impl Watch {
    pub(crate) fn new(r: Readiness<'_>) -> io::Result<Watch> {
        Ok(match r.how {
            How::Signalled(_) => {
                // Our own copy: emptied here, and alive as long as we are.
                let own = r.fd.try_clone_to_owned()?;
                Watch {
                    fd: own.as_raw_fd(),
                    eventfd: Some(own),
                    how: r.how,
                }
            }
            _ => Watch {
                fd: r.fd.as_raw_fd(),
                eventfd: None,
                how: r.how,
            },
        })
    }

    /// Whether a message waits where the descriptor does not show it.
    pub(crate) fn ready_now(&self) -> bool {
        match &self.how {
            How::Descriptor => false,
            How::ReadAhead(flag) => flag.load(Ordering::Acquire),
            How::Signalled(check) => check(),
        }
    }

    /// After the descriptor was readable: whether a message may be there
    /// (a signalled eventfd is emptied and the check asked).
    pub(crate) fn after_wake(&self) -> io::Result<bool> {
        match (&self.how, &self.eventfd) {
            (How::Signalled(check), Some(efd)) => {
                sys::epoll::eventfd_drain(efd.as_fd())?;
                Ok(check())
            }
            _ => Ok(true),
        }
    }
}

/// Waits on many endpoints (see the module docs).
pub struct Selector {
    epoll: OwnedFd,
    regs: HashMap<u64, Watch>,
    next: u64,
    events: Vec<u64>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({} registered)", self.regs.len())
    }
}

impl Selector {
    /// An empty selector (`epoll_create1(2)`).
    pub fn new() -> io::Result<Self> {
        Ok(Selector {
            epoll: sys::epoll::create()?,
            regs: HashMap::new(),
            next: 0,
            events: Vec::new(),
        })
    }

    /// Starts watching `endpoint` for messages (for a listener:
    /// connections); the token comes back from [`select`](Self::select)
    /// when it is ready.
    pub fn register<S: Selectable + ?Sized>(&mut self, endpoint: &mut S) -> io::Result<Token> {
        let r = endpoint.readiness()?;
        let key = self.next;
        let own = r.fd;
        let watch = Watch::new(r)?;
        let watched = watch.eventfd.as_ref().map_or(own, |e| e.as_fd());
        sys::epoll::add(self.epoll.as_fd(), watched, key).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "this endpoint (its descriptor) is already registered with this selector",
                )
            } else {
                e
            }
        })?;
        self.next += 1;
        self.regs.insert(key, watch);
        Ok(Token(key))
    }

    /// Stops watching what `token` names. Call it before dropping the
    /// endpoint; if the endpoint is gone already, this only forgets it.
    pub fn deregister(&mut self, token: Token) -> io::Result<()> {
        let reg = self.regs.remove(&token.0).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no such registration: deregistered already, or from another selector",
            )
        })?;
        match sys::epoll::delete(self.epoll.as_fd(), reg.fd) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT)) => Ok(()),
            r => r,
        }
    }

    /// How many endpoints are registered.
    pub fn len(&self) -> usize {
        self.regs.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// Waits at most `timeout` (`None`: as long as it takes) for
    /// registered endpoints to be ready and returns their tokens, in
    /// registration order; empty when the timeout passed first.
    pub fn select(&mut self, timeout: Option<Duration>) -> io::Result<Vec<Token>> {
        let mut ready = Vec::new();
        self.select_into(&mut ready, timeout)?;
        Ok(ready)
    }

    /// [`select`](Self::select) into a vector (cleared first), to reuse it.
    pub fn select_into(
        &mut self,
        ready: &mut Vec<Token>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        ready.clear();
        if self.regs.is_empty() && timeout.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing is registered with this selector: select(None) would wait for ever",
            ));
        }
        let until = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            for (key, watch) in &self.regs {
                if watch.ready_now() {
                    ready.push(Token(*key));
                }
            }
            let wait = if !ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                match until {
                    None | Some(None) => None,
                    Some(Some(t)) => Some(t.saturating_duration_since(Instant::now())),
                }
            };
            self.events.clear();
            sys::epoll::wait(self.epoll.as_fd(), &mut self.events, self.regs.len(), wait)?;
            for key in &self.events {
                let Some(watch) = self.regs.get(key) else {
                    continue;
                };
                if watch.after_wake()? {
                    ready.push(Token(*key));
                }
            }
            if !ready.is_empty() || wait == Some(Duration::ZERO) {
                ready.sort_unstable();
                ready.dedup();
                return Ok(());
            }
        }
    }
}
