//! System V message queues (`msgop(2)`, `msgctl(2)`).
//!
//! Every message carries a type, a positive number chosen by the sender,
//! and a receiver chooses which message it takes by type ([`Selector`]):
//! the first of any type, the first of one type, the first not of one type,
//! or the first of the lowest type up to a bound (a priority queue where low
//! numbers come first). One queue can so carry several conversations: the
//! classic pattern is clients sending requests of type 1 and each waiting
//! for replies of its own pid as the type.
//!
//! # Example
//!
//! ```
//! use ipckit::mq::sysv::{MessageQueue, Selector};
//!
//! let mut q = MessageQueue::private().create()?; // removed on drop
//! q.send_type(b"routine", 5)?;
//! q.send_type(b"urgent", 1)?;
//! q.send_type(b"reply", 42)?;
//! let mut buf = Vec::new();
//! // The first message of type 42, wherever it is in the queue.
//! assert_eq!(q.recv_select(&mut buf, Selector::Type(42))?, 42);
//! // The lowest type up to 10 first: "urgent" before "routine".
//! assert_eq!(q.recv_select(&mut buf, Selector::UpTo(10))?, 1);
//! assert_eq!(buf, b"urgent");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Timeouts
//!
//! `msgsnd` and `msgrcv` have no timeout. A send or receive with a deadline
//! first tries without blocking; if it has to wait, it sleeps in the kernel
//! and a per-thread POSIX timer interrupts it with `SIGURG` at the deadline
//! (a signal ignored by default; ipckit installs a no-op handler for it
//! unless the program has its own handler, which is then called). No
//! polling, no core burnt. A thread that blocks `SIGURG` has it unblocked for
//! the wait.
//!
//! # Limits
//!
//! A message holds at most `msgmax` bytes (`/proc/sys/kernel/msgmax`, 8192
//! by default) and a queue at most `msg_qbytes` bytes in all (`msgmnb` by
//! default, 16384); see [`crate::sysv::limits`]. A receive reserves `msgmax`
//! bytes once per queue handle, so a message of any size the system allows
//! can be taken off the queue and, if larger than the receiver's
//! [`max_message_size`](crate::MessageReceiver::max_message_size), refused
//! with [`MessageTooLarge`] (the kernel has no way to tell a message's size
//! before receiving it). With [`MessageQueue::set_truncate`] (`MSG_NOERROR`)
//! longer messages are cut to that size instead.
//!
//! # Waiting on it with others
//!
//! A queue has no descriptor, yet [`crate::select::Selector`] and the async
//! wrappers take it: registering starts a helper thread of this process
//! that sleeps in `msgrcv` with a zero-byte buffer and the queue's default
//! [`Selector`]. A message of one byte or more does not fit, so the call
//! fails with `E2BIG` and leaves the message in the queue, where any
//! process may still take it; the thread then signals an eventfd and waits
//! until a check finds the queue empty again (woken once per burst). An
//! *empty* message fits the zero-byte buffer and is taken: it is held for
//! this queue's next receive with that selector (which returns it before
//! asking the kernel), and sent back to the queue if this handle is
//! dropped first. Changing the default selector stops the thread (register
//! again to watch the new one). The thread is stopped with `SIGURG` (see
//! Timeouts) and ends with the queue handle.
//!
//! # Interoperability
//!
//! Messages are exactly what other programs see with the raw calls: the type
//! is the leading `long` of the kernel's `struct msgbuf`, the payload the
//! bytes after it, unchanged.

use std::io;
use std::time::SystemTime;

use super::Access;
use crate::error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError};
use crate::frame::{recv_failure, send_failure};
use crate::message::Deadline;
use crate::select::helper::{Found, Helper, Look};
use crate::sys;
use crate::sys::msg::MsgBuf;
use crate::sysv::{pid, time, Key, Perm, DEFAULT_MODE};
use crate::wait::{wait_call, Mode, WaitError, WaitStrategy};
use crate::MessageTooLarge;

/// Which message a receive takes (the `msgtyp` argument of `msgrcv(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selector {
    /// The first message in the queue (`msgtyp` 0).
    #[default]
    Any,
    /// The first message of this type (`msgtyp` > 0).
    Type(i64),
    /// The first message not of this type (`msgtyp` > 0 with `MSG_EXCEPT`).
    NotType(i64),
    /// The first message of the lowest type that is at most this bound
    /// (`msgtyp` < 0, the bound being its absolute value).
    UpTo(i64),
}

impl Selector {
    /// The selector `msgrcv(2)` means by `msgtyp`, with `MSG_EXCEPT` if
    /// `except`: 0 is [`Selector::Any`], a positive type is
    /// [`Selector::Type`] (or [`Selector::NotType`] with `except`), a
    /// negative one [`Selector::UpTo`] its absolute value. `except` needs a
    /// positive type.
    pub fn from_msgtyp(msgtyp: i64, except: bool) -> io::Result<Selector> {
        match (msgtyp, except) {
            (0, false) => Ok(Selector::Any),
            (t, false) if t > 0 => Ok(Selector::Type(t)),
            (t, true) if t > 0 => Ok(Selector::NotType(t)),
            (t, false) => Ok(Selector::UpTo(t.checked_neg().unwrap_or(i64::MAX))),
            (t, true) => Err(invalid(format!(
                "MSG_EXCEPT needs a type greater than 0, not {t} (it takes the first message \
                 not of that type)"
            ))),
        }
    }

    /// `(msgtyp, flags)` for msgrcv.
    #[inline]
    fn raw(self) -> io::Result<(libc::c_long, libc::c_int)> {
        let (t, flags) = match self {
            Selector::Any => return Ok((0, 0)),
            Selector::Type(t) => (t, 0),
            Selector::NotType(t) => (t, libc::MSG_EXCEPT),
            Selector::UpTo(t) => (t, 0),
        };
        let t = match libc::c_long::try_from(t) {
            Ok(v) if v > 0 => v,
            _ => return Err(self.bad_type()),
        };
        Ok(match self {
            Selector::UpTo(_) => (-t, flags),
            _ => (t, flags),
        })
    }
}

impl Selector {
    #[cold]
    fn bad_type(self) -> io::Error {
        invalid(format!(
            "{self:?}: the type must be from 1 to {}",
            libc::c_long::MAX
        ))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A message type as the kernel's `long`: at least 1.
fn mtype(t: i64) -> io::Result<libc::c_long> {
    match libc::c_long::try_from(t) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid(format!(
            "message type {t} is out of range: types run from 1 to {} (0 and negative \
             values only select messages on receive)",
            libc::c_long::MAX
        ))),
    }
}

/// A queue's status (`msgctl(IPC_STAT)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Key, owner, creator and mode.
    pub perm: Perm,
    /// Messages in the queue (`msg_qnum`).
    pub messages: u64,
    /// Bytes of payload in the queue (`__msg_cbytes`).
    pub bytes: u64,
    /// The most payload bytes the queue holds (`msg_qbytes`); also the most
    /// messages.
    pub max_bytes: u64,
    /// The process that sent last (`msg_lspid`), if any did.
    pub last_sender: Option<u32>,
    /// The process that received last (`msg_lrpid`), if any did.
    pub last_receiver: Option<u32>,
    /// When the last message was sent (`msg_stime`).
    pub last_send: Option<SystemTime>,
    /// When the last message was received (`msg_rtime`).
    pub last_receive: Option<SystemTime>,
    /// When the queue was created or last changed by `IPC_SET` (`msg_ctime`).
    pub last_change: Option<SystemTime>,
}

/// Creates or opens a System V [`MessageQueue`].
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    key: Key,
    mode: u32,
    access: Access,
    keep: bool,
    max_bytes: Option<u64>,
}

impl QueueBuilder {
    /// Permission bits for a new queue (default `0o600`; no umask applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The directions the queue is opened for (default both); checked
    /// against the queue's mode when it is opened.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Leave the queue in place when the [`MessageQueue`] that created it
    /// is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// The byte limit of a new queue (`msg_qbytes`; default `msgmnb`).
    /// Above `msgmnb` it needs `CAP_SYS_RESOURCE`.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Creates a new queue and fails if one with this key exists
    /// (`IPC_CREAT | IPC_EXCL`). With [`Key::PRIVATE`], always a new queue.
    #[doc(alias = "IPC_EXCL")]
    #[doc(alias = "create_exclusive")]
    pub fn create(self) -> io::Result<MessageQueue> {
        self.check_mode()?;
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as libc::c_int;
        let id = sys::msg::get(self.key.value(), flags).map_err(|e| self.explain(e))?;
        self.created(id)
    }

    /// Opens an existing queue; it is not removed on drop.
    pub fn open(self) -> io::Result<MessageQueue> {
        if self.key == Key::PRIVATE {
            return Err(invalid(
                "a private queue cannot be opened by key: use MessageQueue::open_id with its id"
                    .into(),
            ));
        }
        let id = sys::msg::get(self.key.value(), self.asked()).map_err(|e| self.explain(e))?;
        MessageQueue::with_id(id, self.key, false)
    }

    /// Opens the queue, creating it if it does not exist (`IPC_CREAT`). Only
    /// a queue this call created is removed on drop.
    pub fn create_or_open(self) -> io::Result<MessageQueue> {
        let key = self.key;
        crate::sysv::create_or_open(
            "System V queue",
            key,
            || self.clone().create(),
            || self.clone().open(),
        )
    }

    fn check_mode(&self) -> io::Result<()> {
        if self.mode & !0o777 != 0 {
            return Err(invalid(format!(
                "mode {:o} has bits beyond the permission bits 0o777",
                self.mode
            )));
        }
        Ok(())
    }

    /// The permissions `msgget` checks an existing queue for.
    fn asked(&self) -> libc::c_int {
        match self.access {
            Access::Receive => 0o400,
            Access::Send => 0o200,
            Access::Both => 0o600,
        }
    }

    fn created(&self, id: libc::c_int) -> io::Result<MessageQueue> {
        let mut q = MessageQueue::with_id(id, self.key, !self.keep)?;
        q.created = true;
        if let Some(b) = self.max_bytes {
            // Dropping `q` removes the queue again if this fails.
            q.set_max_bytes(b)?;
        }
        Ok(q)
    }

    /// Turns errno values of `msgget` into errors that say what to do.
    fn explain(&self, e: io::Error) -> io::Error {
        let key = self.key;
        let msg = match e.raw_os_error() {
            Some(libc::EEXIST) => format!("System V queue {key} already exists"),
            Some(libc::ENOENT) => format!("no System V queue with key {key} (create it first)"),
            Some(libc::EACCES) => format!(
                "permission denied opening System V queue {key} for {:?}: check its owner and \
                 mode (ipcs -q)",
                self.access
            ),
            Some(libc::ENOSPC) => format!(
                "System V queue limit: msgmni is {} queues and that many exist (see \
                 /proc/sys/kernel/msgmni; raise with sysctl kernel.msgmni=N, or remove unused \
                 queues listed by ipcs -q)",
                crate::sysv::limits().map_or("unknown".into(), |l| l.max_queues.to_string())
            ),
            _ => return io::Error::new(e.kind(), format!("cannot open System V queue {key}: {e}")),
        };
        io::Error::new(e.kind(), msg)
    }
}

/// A System V message queue.
///
/// The [`crate::MessageSender`] and [`crate::MessageReceiver`] methods send
/// with the default type ([`MessageQueue::set_default_type`], 1) and receive
/// with the default selector ([`MessageQueue::set_default_selector`], any):
/// two processes can hold one queue as a two-way channel by using different
/// types for the two directions.
#[derive(Debug)]
pub struct MessageQueue {
    id: libc::c_int,
    key: Key,
    remove_on_drop: bool,
    created: bool,
    wait: WaitStrategy,
    /// The system's largest message when last read: the receive buffer size.
    msgmax: usize,
    /// The receiver's limit (trait `max_message_size`).
    max: usize,
    truncate: bool,
    send_type: i64,
    selector: Selector,
    sbuf: MsgBuf,
    rbuf: MsgBuf,
    /// The helper thread a selector or async wrapper watches, and the
    /// selector it watches with.
    watch: Option<(Helper<QueueLook>, Selector)>,
}

impl MessageQueue {
    /// A builder for the queue with `key`.
    pub fn builder(key: Key) -> QueueBuilder {
        QueueBuilder {
            key,
            mode: DEFAULT_MODE,
            access: Access::Both,
            keep: false,
            max_bytes: None,
        }
    }

    /// A builder for a new private queue (`IPC_PRIVATE`): reachable only
    /// through its [`id`](MessageQueue::id), for example by a child process
    /// told the id.
    pub fn private() -> QueueBuilder {
        Self::builder(Key::PRIVATE)
    }

    /// Uses the queue with identifier `id` (as `ipcs -q` shows it or
    /// [`MessageQueue::id`] returned); it is not removed on drop.
    pub fn open_id(id: i32) -> io::Result<MessageQueue> {
        let st = sys::msg::stat(id).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::EINVAL | libc::EIDRM) => "no such queue".to_string(),
                Some(libc::EACCES) => "permission denied: check its owner and mode".into(),
                _ => e.to_string(),
            };
            io::Error::new(e.kind(), format!("System V queue id {id}: {why}"))
        })?;
        MessageQueue::with_id(id, Key::new(st.perm.key), false)
    }

    fn with_id(id: libc::c_int, key: Key, remove_on_drop: bool) -> io::Result<MessageQueue> {
        let mut q = MessageQueue {
            id,
            key,
            remove_on_drop,
            created: false,
            wait: WaitStrategy::default(),
            msgmax: 0,
            max: 0,
            truncate: false,
            send_type: 1,
            selector: Selector::Any,
            sbuf: MsgBuf::default(),
            rbuf: MsgBuf::default(),
            watch: None,
        };
        q.msgmax = crate::sysv::limits()?.max_message_size;
        q.max = q.msgmax;
        Ok(q)
    }

    /// The queue's identifier (`msqid`, as `ipcs -q` shows it).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The key the queue was opened with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether this handle made the object (`create`, or a
    /// `create_or_open` that found none): the creator initialises it, the
    /// others wait for that.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Leaves the queue in place when this value is dropped.
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    /// The type the [`crate::MessageSender`] methods send with (default 1).
    pub fn set_default_type(&mut self, mtype: i64) -> io::Result<()> {
        self::mtype(mtype)?;
        self.send_type = mtype;
        Ok(())
    }

    /// Which messages the [`crate::MessageReceiver`] methods take (default
    /// [`Selector::Any`]).
    ///
    /// A selector or async wrapper watching the queue stops watching (and
    /// hands back an empty message it held): register it again.
    pub fn set_default_selector(&mut self, selector: Selector) -> io::Result<()> {
        selector.raw()?;
        if self.watch.as_ref().is_some_and(|w| w.1 != selector) {
            self.watch = None;
        }
        self.selector = selector;
        Ok(())
    }

    /// With `true`, a message longer than `max_message_size` is received
    /// cut to that size (`MSG_NOERROR`) instead of being refused with
    /// [`MessageTooLarge`]. The rest of it is lost.
    #[doc(alias = "MSG_NOERROR")]
    pub fn set_truncate(&mut self, truncate: bool) {
        self.truncate = truncate;
    }

    /// Sends one message of type `mtype` (1 or more), waiting until
    /// `deadline` while the queue is full.
    pub fn send_type_until(
        &mut self,
        msg: &[u8],
        mtype: i64,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        let t = self::mtype(mtype).map_err(|e| SendTimeoutError::Io(e, ()))?;
        if msg.len() > self.msgmax {
            self.msgmax = crate::sysv::limits()
                .map_err(|e| SendTimeoutError::Io(e, ()))?
                .max_message_size;
            if msg.len() > self.msgmax {
                return Err(SendTimeoutError::Io(
                    invalid(format!(
                        "message of {} bytes is larger than System V queues take: msgmax is {} \
                         (see /proc/sys/kernel/msgmax; raise with sysctl kernel.msgmax=N)",
                        msg.len(),
                        self.msgmax
                    )),
                    (),
                ));
            }
        }
        self.sbuf.load(t, msg);
        let (id, sbuf, len, wait) = (self.id, &self.sbuf, msg.len(), self.wait);
        let attempt = |deadline| {
            wait_call(wait, deadline, |mode| {
                sys::msg::snd(id, sbuf, len, nowait(mode))
            })
        };
        // Usually there is room: no more than the one call then.
        let mut r = attempt(Deadline::Now);
        if let Err(WaitError::Timeout) = r {
            // A message larger than the queue's byte limit never fits:
            // refuse it instead of waiting forever.
            if let Ok(st) = sys::msg::stat(id) {
                if len as u64 > st.qbytes {
                    return Err(SendTimeoutError::Io(
                        invalid(format!(
                            "message of {len} bytes can never fit in System V queue {}: its byte \
                             limit is {} (raise it with set_max_bytes)",
                            self.key, st.qbytes
                        )),
                        (),
                    ));
                }
            }
            if deadline != Deadline::Now {
                r = attempt(deadline);
            }
        }
        r.map_err(|e| send_failure(self.explain(e, "sending to")))
    }

    /// Sends one message of type `mtype` (1 or more), blocking while the
    /// queue is full.
    pub fn send_type<M: AsRef<[u8]>>(&mut self, msg: M, mtype: i64) -> Result<(), SendError<M>> {
        self.send_type_until(msg.as_ref(), mtype, Deadline::Never)
            .map_err(|e| e.without_deadline(msg))
    }

    /// Receives the message `selector` picks into `buf`, waiting until
    /// `deadline`; returns its type.
    pub fn recv_select_until(
        &mut self,
        buf: &mut Vec<u8>,
        selector: Selector,
        deadline: Deadline,
    ) -> Result<i64, RecvTimeoutError> {
        buf.clear();
        let (msgtyp, sel_flags) = selector.raw().map_err(RecvTimeoutError::Io)?;
        if let Some((h, watched)) = &self.watch {
            if *watched == selector {
                if let Some(t) = h.take_held().map_err(RecvTimeoutError::Io)? {
                    // An empty message the helper took ahead, in order.
                    return Ok(t);
                }
            }
        }
        loop {
            let (size, flags) = if self.truncate {
                (self.max, sel_flags | libc::MSG_NOERROR)
            } else {
                (self.msgmax, sel_flags)
            };
            let (id, rbuf) = (self.id, &mut self.rbuf);
            let r = wait_call(self.wait, deadline, |mode| {
                sys::msg::rcv(id, rbuf, size, msgtyp, flags | nowait(mode))
            });
            let n = match r {
                Ok(n) => n,
                Err(WaitError::Io(e)) if e.raw_os_error() == Some(libc::E2BIG) => {
                    // Larger than msgmax was: it was raised. Read it again.
                    let now = crate::sysv::limits().map_err(RecvTimeoutError::Io)?;
                    if now.max_message_size > self.msgmax {
                        self.msgmax = now.max_message_size;
                        continue;
                    }
                    return Err(RecvTimeoutError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a message in System V queue {} is larger than msgmax ({} bytes); it \
                             stays in the queue",
                            self.key, self.msgmax
                        ),
                    )));
                }
                Err(e) => return Err(recv_failure(self.explain(e, "receiving from"))),
            };
            if n > self.max {
                return Err(RecvTimeoutError::Io(
                    MessageTooLarge {
                        len: n as u64,
                        max: self.max,
                        unit: crate::error::Unit::Message,
                    }
                    .into_io(),
                ));
            }
            buf.extend_from_slice(self.rbuf.payload(n));
            return Ok(self.rbuf.mtype());
        }
    }

    /// Receives the message `selector` picks into `buf`, blocking until
    /// there is one; returns its type.
    pub fn recv_select(&mut self, buf: &mut Vec<u8>, selector: Selector) -> Result<i64, RecvError> {
        self.recv_select_until(buf, selector, Deadline::Never)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// The queue's status.
    pub fn status(&self) -> io::Result<Status> {
        let s = sys::msg::stat(self.id).map_err(|e| self.explain_io(e, "reading the status of"))?;
        Ok(Status {
            perm: s.perm.into(),
            messages: s.qnum,
            bytes: s.cbytes,
            max_bytes: s.qbytes,
            last_sender: pid(s.lspid),
            last_receiver: pid(s.lrpid),
            last_send: time(s.stime),
            last_receive: time(s.rtime),
            last_change: time(s.ctime),
        })
    }

    /// Sets the queue's byte limit (`msg_qbytes`, `IPC_SET`). Raising it
    /// above `msgmnb` needs `CAP_SYS_RESOURCE`.
    pub fn set_max_bytes(&self, bytes: u64) -> io::Result<()> {
        sys::msg::set(self.id, None, Some(bytes)).map_err(|e| {
            if e.raw_os_error() != Some(libc::EPERM) || !self.owned() {
                return self.explain_io(e, "changing the byte limit of");
            }
            let mnb =
                crate::sysv::limits().map_or("unknown".into(), |l| l.max_queue_bytes.to_string());
            io::Error::new(
                e.kind(),
                format!(
                    "System V queue limit: a byte limit of {bytes} is above msgmnb ({mnb}, see \
                     /proc/sys/kernel/msgmnb), which needs CAP_SYS_RESOURCE; ask for less, or \
                     raise msgmnb with sysctl kernel.msgmnb=N"
                ),
            )
        })
    }

    /// Sets the queue's permission bits (`IPC_SET`).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        if mode & !0o777 != 0 {
            return Err(invalid(format!(
                "mode {mode:o} has bits beyond the permission bits 0o777"
            )));
        }
        sys::msg::set(self.id, Some(mode), None)
            .map_err(|e| self.explain_io(e, "changing the mode of"))
    }

    /// Removes the queue now (`IPC_RMID`). Messages in it are lost, and
    /// processes waiting on it wake with an error saying it was removed.
    #[doc(alias = "IPC_RMID")]
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_on_drop = false;
        sys::msg::remove(self.id).map_err(|e| self.explain_io(e, "removing"))
    }

    /// Whether this process's effective user owns or created the queue.
    fn owned(&self) -> bool {
        let me = sys::process::euid();
        sys::msg::stat(self.id).is_ok_and(|s| me == 0 || me == s.perm.uid || me == s.perm.cuid)
    }

    fn explain(&self, e: WaitError, what: &str) -> WaitError {
        match e {
            WaitError::Io(e) => WaitError::Io(self.explain_io(e, what)),
            t => t,
        }
    }

    /// Turns errno values of the calls on an open queue into errors that
    /// say what happened.
    fn explain_io(&self, e: io::Error, what: &str) -> io::Error {
        let (key, id) = (self.key, self.id);
        match e.raw_os_error() {
            Some(libc::EIDRM | libc::EINVAL) => io::Error::new(
                io::ErrorKind::NotFound,
                format!("System V queue {key} (id {id}) was removed (IPC_RMID)"),
            ),
            Some(libc::EACCES) => io::Error::new(
                e.kind(),
                format!(
                    "permission denied {what} System V queue {key}: check its owner and mode \
                     (ipcs -q)"
                ),
            ),
            Some(libc::EPERM) => io::Error::new(
                e.kind(),
                format!(
                    "{what} System V queue {key}: only its owner or creator, or a privileged \
                     process, may do that"
                ),
            ),
            _ => e,
        }
    }
}

/// `IPC_NOWAIT` for a non-blocking attempt.
fn nowait(mode: Mode) -> libc::c_int {
    match mode {
        Mode::Blocking => 0,
        // msgrcv has no timeout: wait_call never asks for one.
        Mode::NonBlocking | Mode::Until(_) => libc::IPC_NOWAIT,
    }
}

/// Removes the queue with `key` (`IPC_RMID`), as `ipcrm -K` does.
#[doc(alias = "ipcrm")]
pub fn remove_queue(key: Key) -> io::Result<()> {
    if key == Key::PRIVATE {
        return Err(invalid(
            "a private queue has no key to find it by: remove it by id (ipcrm -q ID)".into(),
        ));
    }
    // Removal needs ownership, not read or write permission: ask for none.
    let id = sys::msg::get(key.value(), 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::new(e.kind(), format!("no System V queue with key {key}")),
        _ => MessageQueue::builder(key).explain(e),
    })?;
    MessageQueue::with_id(id, key, false)?.remove()
}

/// Removes the System V queue with identifier `id` (as `ipcs -q` shows it),
/// as `ipcrm -q ID` does: the only way to name a private queue (key 0)
/// from outside.
pub fn remove_queue_id(id: i32) -> io::Result<()> {
    sys::msg::remove(id).map_err(|e| crate::sysv::explain_remove_id(e, "queue", id))
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = sys::msg::remove(self.id);
        }
    }
}

impl crate::MessageSender for MessageQueue {
    /// Sends with the default type ([`MessageQueue::set_default_type`]).
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        let t = self.send_type;
        self.send_type_until(msg, t, deadline)
    }
}

/// Ready when a message the default selector picks is in the queue,
/// through a helper thread (see
/// [Waiting on it with others](self#waiting-on-it-with-others)).
impl crate::select::Selectable for MessageQueue {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        if self.watch.is_none() {
            let (msgtyp, flags) = self.selector.raw()?;
            let look = QueueLook {
                id: self.id,
                msgtyp,
                flags,
            };
            self.watch = Some((Helper::start("ipckit-sysv-mq", look)?, self.selector));
        }
        let (h, _) = self.watch.as_ref().expect("just made");
        Ok(crate::select::Readiness::signalled(
            h.eventfd(),
            h.checker(),
        ))
    }
}

/// How the helper thread looks at a queue: `msgrcv` into zero bytes.
#[derive(Debug)]
struct QueueLook {
    id: libc::c_int,
    msgtyp: libc::c_long,
    flags: libc::c_int,
}

impl QueueLook {
    fn look(&self, flags: libc::c_int) -> Found<i64> {
        let mut buf = MsgBuf::default();
        match sys::msg::rcv(self.id, &mut buf, 0, self.msgtyp, self.flags | flags) {
            // An empty message fits: it was taken, and is held.
            Ok(_) => Found::There(Some(buf.mtype())),
            Err(e) => match e.raw_os_error() {
                Some(libc::E2BIG) => Found::There(None),
                Some(libc::EINTR) => Found::Nothing,
                _ if e.kind() == io::ErrorKind::WouldBlock => Found::Nothing,
                _ => Found::Gone,
            },
        }
    }
}

impl Look for QueueLook {
    type Held = i64;

    fn wait(&self) -> Found<i64> {
        self.look(0)
    }

    fn now(&self) -> Found<i64> {
        self.look(libc::IPC_NOWAIT)
    }

    fn kick(&self, tid: libc::pid_t) {
        let _ = sys::alarm::interrupt(tid);
    }

    fn give_back(&self, mtype: i64) {
        // At the tail: better late than lost. Nothing to do if it fails
        // (the queue was removed or is full).
        let mut buf = MsgBuf::default();
        if let Ok(t) = self::mtype(mtype) {
            buf.load(t, &[]);
            let _ = sys::msg::snd(self.id, &buf, 0, libc::IPC_NOWAIT);
        }
    }
}

impl crate::MessageReceiver for MessageQueue {
    /// Receives with the default selector ([`MessageQueue::set_default_selector`]).
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let s = self.selector;
        self.recv_select_until(buf, s, deadline).map(drop)
    }

    /// At most `msgmax`, the largest message the system allows.
    fn max_message_size(&self) -> usize {
        self.max
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = max.min(self.msgmax);
    }

    /// A System V queue is not a file descriptor: `Block` sleeps in
    /// `msgrcv`/`msgsnd`, `Spin` retries with `IPC_NOWAIT`.
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }
}
