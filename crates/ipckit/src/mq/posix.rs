//! POSIX message queues: see the [`mq`](crate::mq) module docs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError};
use crate::frame::{recv_failure, send_failure};
use crate::message::Deadline;
use crate::sys;
use crate::sys::fd::Interest;
use crate::wait::{wait_io, Mode, WaitStrategy};
use crate::MessageTooLarge;

/// The queue calls' own timeout for one attempt on a descriptor in
/// `nonblocking` mode or not. A wait until an instant
/// is made at most one second at a time: `mq_timedreceive` counts on the
/// wall clock, so a clock stepped back cannot stretch a wait by more than
/// that (the rest is waited in `poll`, on the monotonic clock).
fn queue_wait(mode: Mode, nonblocking: bool) -> sys::mq::Wait {
    if nonblocking {
        // Every call returns at once; waits are left to poll.
        return None;
    }
    match mode {
        Mode::Blocking => None,
        Mode::NonBlocking => Some(Duration::ZERO),
        Mode::Until(t) => Some(
            t.saturating_duration_since(std::time::Instant::now())
                .min(Duration::from_secs(1)),
        ),
    }
}

/// Default permission bits of a new queue: owner read and write.
pub const DEFAULT_MODE: u32 = 0o600;

/// Priorities run from 0 to `PRIO_MAX - 1` (`MQ_PRIO_MAX` on Linux).
pub const PRIO_MAX: u32 = 32768;

/// The longest name, not counting its leading slash (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Which directions a queue is opened for (POSIX and System V queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive only (POSIX `O_RDONLY`; System V read permission).
    Receive,
    /// Send only (POSIX `O_WRONLY`; System V write permission).
    Send,
    /// Both (POSIX `O_RDWR`; System V read and write permission).
    Both,
}

/// A queue's attributes (`mq_getattr(3)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// How many messages the queue holds at most.
    pub max_messages: usize,
    /// The largest message it accepts, in bytes.
    pub max_message_size: usize,
    /// How many messages are in it now.
    pub current_messages: usize,
    /// Whether this descriptor is in non-blocking mode (`O_NONBLOCK`).
    pub nonblocking: bool,
}

/// Creates or opens a [`PosixQueue`].
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    name: String,
    mode: u32,
    capacity: Option<(usize, usize)>,
    access: Access,
    keep: bool,
    nonblocking: bool,
}

fn read_limit(file: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Validates a queue name: one leading slash, no other, 1..=255 bytes after it.
pub fn validate_name(name: &str) -> io::Result<CString> {
    validate_posix_name("POSIX queue", "/jobs", name)
}

/// Validates a POSIX IPC name (queues, shared memory, semaphores): one
/// leading slash, no other, 1 to `NAME_MAX` bytes after it, no NUL.
pub(crate) fn validate_posix_name(what: &str, example: &str, name: &str) -> io::Result<CString> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid {what} name {name:?}: {why} (a name is one slash followed by \
                 1 to {NAME_MAX} bytes with no other slash, like {example})"
            ),
        )
    };
    let rest = name
        .strip_prefix('/')
        .ok_or_else(|| bad("it must start with a slash"))?;
    if rest.is_empty() {
        return Err(bad("it is empty after the slash"));
    }
    if rest.contains('/') {
        return Err(bad("it contains a second slash"));
    }
    if rest.len() > NAME_MAX {
        return Err(bad("it is too long"));
    }
    CString::new(name).map_err(|_| bad("it contains a NUL byte"))
}

impl QueueBuilder {
    /// Permission bits for a new queue (default `0o600`; the umask applies).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Capacity of a new queue: at most `max_messages` messages of at most
    /// `max_message_size` bytes (default: the system's defaults,
    /// `/proc/sys/fs/mqueue/msg_default` and `msgsize_default`).
    pub fn capacity(mut self, max_messages: usize, max_message_size: usize) -> Self {
        self.capacity = Some((max_messages, max_message_size));
        self
    }

    /// Which directions to open the queue for (default: both).
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Opens the descriptor in non-blocking mode (`O_NONBLOCK`), as an event
    /// loop needs it (default: blocking). ipckit's own blocking and timed
    /// calls still wait, by polling the descriptor; only other users of the
    /// descriptor see the difference. (A spinning wait strategy also sets
    /// `O_NONBLOCK`, for as long as it is in force.)
    pub fn nonblocking(mut self, nonblocking: bool) -> Self {
        self.nonblocking = nonblocking;
        self
    }

    /// Leave the queue in place when the [`PosixQueue`] that created it is dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new queue; fails if one of that name exists.
    pub fn create(self) -> io::Result<PosixQueue> {
        self.open_with(libc::O_CREAT | libc::O_EXCL)
    }

    /// Opens an existing queue; it is not unlinked on drop.
    pub fn open(self) -> io::Result<PosixQueue> {
        self.open_with(0)
    }

    /// Opens the queue, creating it if it does not exist. Only a queue this
    /// call created is unlinked on drop.
    pub fn create_or_open(self) -> io::Result<PosixQueue> {
        crate::named::create_or_open(
            &format_args!("POSIX queue {}", self.name),
            || self.clone().create(),
            || self.clone().open(),
        )
    }

    fn open_with(self, create: libc::c_int) -> io::Result<PosixQueue> {
        let cname = validate_name(&self.name)?;
        let access = match self.access {
            Access::Receive => libc::O_RDONLY,
            Access::Send => libc::O_WRONLY,
            Access::Both => libc::O_RDWR,
        };
        let attr = match self.capacity {
            Some((m, s)) if create != 0 => Some((to_i64(m)?, to_i64(s)?)),
            _ => None,
        };
        let flags = if self.nonblocking {
            libc::O_NONBLOCK
        } else {
            0
        };
        let fd = sys::mq::open(&cname, access | create | flags, self.mode, attr)
            .map_err(|e| self.explain(e, create != 0))?;
        let (_, _, msgsize, _) = sys::mq::getattr(fd.as_fd())?;
        Ok(PosixQueue {
            fd,
            name: self.name,
            cname,
            msgsize: msgsize as usize,
            unlink_on_drop: create != 0 && !self.keep,
            wait: WaitStrategy::default(),
            max: msgsize as usize,
            priority: 0,
            asked_nonblocking: self.nonblocking,
            nonblocking: self.nonblocking,
            created: create != 0,
        })
    }

    /// Turns errno values of `mq_open` into errors that say what to do.
    fn explain(&self, e: io::Error, creating: bool) -> io::Error {
        let name = &self.name;
        let msg = match e.raw_os_error() {
            Some(libc::EEXIST) => format!("POSIX queue {name} already exists"),
            Some(libc::ENOENT) => format!("no POSIX queue named {name} (create it first)"),
            Some(libc::EACCES) => format!(
                "permission denied opening POSIX queue {name} for {:?}: check the queue's owner and mode",
                self.access
            ),
            Some(libc::EINVAL) if creating => {
                let (m, s) = self.capacity.unwrap_or((0, 0));
                format!(
                    "POSIX queue limit: a capacity of {m} messages of {s} bytes is refused; \
                     msg_max is {}, msgsize_max is {} (see /proc/sys/fs/mqueue; raise with \
                     sysctl fs.mqueue.msg_max=N / fs.mqueue.msgsize_max=N); both must be at least 1",
                    read_limit("msg_max"),
                    read_limit("msgsize_max")
                )
            }
            Some(libc::ENOSPC) => format!(
                "POSIX queue limit: queues_max is {} and that many queues exist (see \
                 /proc/sys/fs/mqueue/queues_max; raise with sysctl fs.mqueue.queues_max=N)",
                read_limit("queues_max")
            ),
            // mq_open(3) says EMFILE for both: a descriptor tells which.
            Some(libc::EMFILE) if creating && sys::fd::descriptor_available() => {
                let (m, s) = self.capacity.unwrap_or_else(|| {
                    let default = |f, d| read_limit(f).trim().parse().unwrap_or(d);
                    (default("msg_default", 10), default("msgsize_default", 8192))
                });
                let limit = match sys::process::soft_limit(libc::RLIMIT_MSGQUEUE) {
                    Ok(Some(n)) => format!("{n} bytes"),
                    Ok(None) => "unlimited".into(),
                    Err(_) => "unknown".into(),
                };
                format!(
                    "cannot create POSIX queue {name}: its {m} messages of {s} bytes (over {} \
                     bytes) would take this user past RLIMIT_MSGQUEUE ({limit}, `ulimit -q`), \
                     which counts every queue the user has: remove unused ones (`ipc ls`, \
                     `ipc rm mq:/NAME`), ask for a smaller capacity, or raise the limit",
                    m.saturating_mul(s)
                )
            }
            Some(libc::EMFILE) => format!(
                "cannot open POSIX queue {name}: this process is at its open-file limit \
                 (RLIMIT_NOFILE, `ulimit -n`): close descriptors or raise the limit"
            ),
            _ => return io::Error::new(e.kind(), format!("cannot open POSIX queue {name}: {e}")),
        };
        io::Error::new(e.kind(), msg)
    }
}

fn to_i64(n: usize) -> io::Result<i64> {
    i64::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "capacity too large"))
}

/// An open POSIX message queue.
#[derive(Debug)]
pub struct PosixQueue {
    fd: OwnedFd,
    name: String,
    cname: CString,
    msgsize: usize,
    unlink_on_drop: bool,
    wait: WaitStrategy,
    max: usize,
    priority: u32,
    /// `O_NONBLOCK` as the builder asked for it, and as it is now.
    asked_nonblocking: bool,
    nonblocking: bool,
    created: bool,
}

impl PosixQueue {
    /// Puts the descriptor in `O_NONBLOCK` mode while a spinning wait
    /// strategy is set (a failed `mq_receive` on it returns at once, where
    /// an `mq_timedreceive` with a past deadline first queues the caller as
    /// a waiter, which each send must then deal with), and back when
    /// blocking again unless the builder asked for it. Returns the mode.
    fn sync_nonblocking(&mut self) -> io::Result<bool> {
        let want = self.asked_nonblocking || self.wait != WaitStrategy::Block;
        if want != self.nonblocking {
            sys::mq::set_nonblocking(self.fd.as_fd(), want)?;
            self.nonblocking = want;
        }
        Ok(want)
    }

    /// A builder for the queue called `name` (`/something`).
    pub fn builder(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder {
            name: name.into(),
            mode: DEFAULT_MODE,
            capacity: None,
            access: Access::Both,
            keep: false,
            nonblocking: false,
        }
    }

    /// Whether this handle made the object (`create`, or a
    /// `create_or_open` that found none): the creator initialises it, the
    /// others wait for that.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current attributes.
    pub fn attributes(&self) -> io::Result<Attributes> {
        let (flags, maxmsg, msgsize, cur) = sys::mq::getattr(self.fd.as_fd())?;
        Ok(Attributes {
            max_messages: maxmsg as usize,
            max_message_size: msgsize as usize,
            current_messages: cur as usize,
            nonblocking: flags & i64::from(libc::O_NONBLOCK) != 0,
        })
    }

    /// Leaves the queue in place when this value is dropped.
    pub fn keep(&mut self) {
        self.unlink_on_drop = false;
    }

    /// The priority used by the [`crate::MessageSender`] methods (default 0).
    pub fn set_default_priority(&mut self, priority: u32) -> io::Result<()> {
        check_prio(priority)?;
        self.priority = priority;
        Ok(())
    }

    /// Sends one message with `priority`, waiting until `deadline`.
    pub fn send_priority_until(
        &mut self,
        msg: &[u8],
        priority: u32,
        deadline: Deadline,
    ) -> Result<(), SendTimeoutError<()>> {
        check_prio(priority).map_err(|e| SendTimeoutError::Io(e, ()))?;
        if msg.len() > self.msgsize {
            return Err(SendTimeoutError::Io(
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "message of {} bytes is larger than queue {} accepts ({} bytes, its \
                         max_message_size)",
                        msg.len(),
                        self.name,
                        self.msgsize
                    ),
                ),
                (),
            ));
        }
        let nonblocking = self
            .sync_nonblocking()
            .map_err(|e| SendTimeoutError::Io(e, ()))?;
        wait_io(
            &mut self.fd,
            Interest::Write,
            self.wait,
            deadline,
            |fd, mode| sys::mq::send(fd.as_fd(), msg, priority, queue_wait(mode, nonblocking)),
        )
        .map_err(send_failure)
        .map_err(|e| match e {
            SendTimeoutError::Io(e, ()) if e.raw_os_error() == Some(libc::EBADF) => {
                SendTimeoutError::Io(
                    io::Error::new(
                        e.kind(),
                        format!("queue {} was not opened for sending", self.name),
                    ),
                    (),
                )
            }
            other => other,
        })
    }

    /// Sends one message with `priority`, blocking while the queue is full.
    pub fn send_priority<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        priority: u32,
    ) -> Result<(), SendError<M>> {
        self.send_priority_until(msg.as_ref(), priority, Deadline::Never)
            .map_err(|e| e.without_deadline(msg))
    }

    /// Receives the oldest message of the highest priority into `buf`,
    /// waiting until `deadline`; returns its priority.
    pub fn recv_priority_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<u32, RecvTimeoutError> {
        buf.clear();
        let msgsize = self.msgsize;
        let nonblocking = self.sync_nonblocking().map_err(RecvTimeoutError::Io)?;
        let prio = wait_io(
            &mut self.fd,
            Interest::Read,
            self.wait,
            deadline,
            |fd, mode| sys::mq::receive(fd.as_fd(), buf, msgsize, queue_wait(mode, nonblocking)),
        )
        .map_err(recv_failure)?;
        if buf.len() > self.max {
            let len = buf.len() as u64;
            buf.clear();
            return Err(RecvTimeoutError::Io(
                MessageTooLarge {
                    len,
                    max: self.max,
                    unit: crate::error::Unit::Message,
                }
                .into_io(),
            ));
        }
        Ok(prio)
    }

    /// Receives the oldest message of the highest priority, blocking while
    /// the queue is empty; returns its priority.
    pub fn recv_priority(&mut self, buf: &mut Vec<u8>) -> Result<u32, RecvError> {
        self.recv_priority_until(buf, Deadline::Never)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Asks for `signal` to be sent to this process when a message arrives
    /// on the queue while it is empty (`mq_notify(3)` with `SIGEV_SIGNAL`;
    /// the signal's `si_code` is `SI_MESGQ`, `si_pid` the sender).
    ///
    /// Install a handler first (for example with the `signal-hook` crate):
    /// most signals end the process by default. One process at a time may
    /// be registered on a queue; the registration ends when the signal is
    /// sent (register again for the next one), when it is cancelled with
    /// [`PosixQueue::cancel_notify`], or when this descriptor is closed. No
    /// signal is sent while another process is blocked receiving: that
    /// process gets the message.
    #[doc(alias = "mq_notify")]
    pub fn notify_signal(&self, signal: i32) -> io::Result<()> {
        sys::mq::notify(self.fd.as_fd(), Some(signal)).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => io::Error::new(
                e.kind(),
                format!(
                    "another process is already registered for notification on POSIX queue {} \
                     (mq_notify allows one at a time)",
                    self.name
                ),
            ),
            Some(libc::EINVAL) => invalid_signal(signal),
            _ => e,
        })
    }

    /// Cancels this process's notification request ([`PosixQueue::notify_signal`]).
    pub fn cancel_notify(&self) -> io::Result<()> {
        sys::mq::notify(self.fd.as_fd(), None)
    }

    /// Removes the queue's name now; open descriptors keep working.
    pub fn unlink(&mut self) -> io::Result<()> {
        self.unlink_on_drop = false;
        sys::mq::unlink(&self.cname)
    }
}

fn invalid_signal(signal: i32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{signal} is not a signal number (see signal(7))"),
    )
}

fn check_prio(p: u32) -> io::Result<()> {
    if p >= PRIO_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "priority {p} is out of range: POSIX queues take 0 to {}",
                PRIO_MAX - 1
            ),
        ));
    }
    Ok(())
}

/// Two queues used as one two-way channel: messages go out on `tx` and
/// come in on `rx` (the peer holds the same two the other way round).
/// Sends use `tx`'s default priority.
#[derive(Debug)]
pub struct Duplex {
    /// Outgoing messages.
    pub tx: PosixQueue,
    /// Incoming messages.
    pub rx: PosixQueue,
}

/// Ready when a message waits on `rx`.
impl crate::select::Selectable for Duplex {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        self.rx.readiness()
    }
}

impl crate::MessageSender for Duplex {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        crate::MessageSender::send_until(&mut self.tx, msg, deadline)
    }
}

impl crate::MessageReceiver for Duplex {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        crate::MessageReceiver::recv_until(&mut self.rx, buf, deadline)
    }
    fn max_message_size(&self) -> usize {
        crate::MessageReceiver::max_message_size(&self.rx)
    }
    fn set_max_message_size(&mut self, max: usize) {
        crate::MessageReceiver::set_max_message_size(&mut self.rx, max)
    }
    /// Applies to both directions (a send waits on a full `tx`).
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.rx.wait = strategy;
        self.tx.wait = strategy;
    }
}

/// Removes the queue called `name`.
#[doc(alias = "mq_unlink")]
pub fn unlink(name: &str) -> io::Result<()> {
    let c = validate_name(name)?;
    sys::mq::unlink(&c).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::new(e.kind(), format!("no POSIX queue named {name}")),
        _ => io::Error::new(e.kind(), format!("cannot remove POSIX queue {name}: {e}")),
    })
}

impl AsFd for PosixQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Ready when a message waits (a queue descriptor is pollable on Linux:
/// `mq_overview(7)`).
impl crate::select::Selectable for PosixQueue {
    fn readiness(&mut self) -> io::Result<crate::select::Readiness<'_>> {
        Ok(crate::select::Readiness::descriptor(self.fd.as_fd()))
    }
}

impl Drop for PosixQueue {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = sys::mq::unlink(&self.cname);
        }
    }
}

impl crate::MessageSender for PosixQueue {
    /// Sends with the default priority ([`PosixQueue::set_default_priority`]).
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        let p = self.priority;
        self.send_priority_until(msg, p, deadline)
    }
}

impl crate::MessageReceiver for PosixQueue {
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        self.recv_priority_until(buf, deadline).map(drop)
    }

    /// At most the queue's own `max_message_size`, which the kernel enforces.
    fn max_message_size(&self) -> usize {
        self.max
    }

    /// A message longer than `max` (but within the queue's own limit) is
    /// received and then refused with [`MessageTooLarge`]: the kernel has no
    /// way to peek at a message's size first.
    fn set_max_message_size(&mut self, max: usize) {
        self.max = max.min(self.msgsize);
    }

    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }
}

/// One POSIX message queue as the mqueue file system shows it (see
/// [`list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Its name, `/NAME`.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes of messages queued (`QSIZE`).
    pub bytes: u64,
    /// The process registered for notification (`mq_notify(3)`), if any.
    pub notify_pid: Option<u32>,
}

/// Lists the POSIX message queues of this IPC namespace, including those
/// no process has open (`mq_overview(7)`): through the mqueue file system
/// where it is mounted (usually `/dev/mqueue`); where it is not, and this
/// process may mount (`CAP_SYS_ADMIN`), through a mount of its own that
/// nobody else sees: a helper thread takes a private mount namespace,
/// mounts it on an empty directory, reads it and exits, and the mount goes
/// with it. Otherwise a `PermissionDenied` error says how to mount it.
pub fn list() -> io::Result<Vec<QueueEntry>> {
    if let Some(dir) = mqueue_mount() {
        return read_queues(&dir);
    }
    // An empty directory to mount on, made here so that it can be removed
    // here; the mount itself is only in the helper's namespace.
    let dir = private_dir()?;
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a temporary path with a NUL byte"))?;
    let at = dir.clone();
    let listed = std::thread::Builder::new()
        .name("ipckit-mqueue".into())
        .spawn(move || {
            crate::sys::process::private_mount_namespace()?;
            crate::sys::process::mount_mqueue(&target)?;
            read_queues(&at)
        })?
        .join()
        .map_err(|_| io::Error::other("the mqueue helper thread panicked"));
    let _ = std::fs::remove_dir(&dir);
    listed?.map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the mqueue file system is not mounted, and mounting it needs root \
                 (CAP_SYS_ADMIN): mount -t mqueue none /dev/mqueue",
            )
        } else {
            e
        }
    })
}

/// Where the mqueue file system is mounted, if it is.
fn mqueue_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
        // Spaces and the like are octal escapes there: such a path is
        // not worth decoding.
        (kind == "mqueue" && !at.contains('\\')).then(|| at.into())
    })
}

/// A new empty directory, mode 0700, in the temporary directory.
fn private_dir() -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for n in 0..100 {
        let p = std::env::temp_dir().join(format!("ipckit-mqueue-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name for a temporary directory"))
}

fn read_queues(dir: &std::path::Path) -> io::Result<Vec<QueueEntry>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Ok(m) = e.metadata() else { continue };
        // "QSIZE:129        NOTIFY:0     SIGNO:0     NOTIFY_PID:0"
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.parse::<u64>().ok())
        };
        out.push(QueueEntry {
            name: format!("/{}", e.file_name().to_string_lossy()),
            mode: m.mode() & 0o777,
            uid: m.uid(),
            gid: m.gid(),
            bytes: field("QSIZE:").unwrap_or(0),
            notify_pid: field("NOTIFY_PID:")
                .filter(|p| *p != 0)
                .and_then(|p| u32::try_from(p).ok()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
