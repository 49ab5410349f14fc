//! System V semaphore sets (`semget(2)`, `semop(2)`, `semctl(2)`).

use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::sys;
use crate::sysv::{pid, time, Key, Perm, DEFAULT_MODE};

/// The largest value of a System V semaphore (`SEMVMX`).
pub const SEMVMX: u16 = 32767;

/// How long [`SemaphoreSetBuilder::create_or_open`] waits for the creator
/// to set the initial values.
const INIT_WAIT: Duration = Duration::from_secs(2);

/// One operation of a [`SemaphoreSet::apply`] call (`struct sembuf`).
///
/// ```
/// use ipckit::sem::SemOp;
///
/// // Take one of semaphore 0 and one of semaphore 1, or neither.
/// let both = [SemOp::wait(0), SemOp::wait(1)];
/// // Take one, given back by the kernel if this process dies holding it.
/// let held = SemOp::wait(0).undo();
/// # let _ = (both, held);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemOp {
    /// Which semaphore of the set.
    pub num: u16,
    /// What to add: negative waits until the value is large enough to take
    /// it; 0 waits until the value is 0.
    pub delta: i16,
    /// Given back by the kernel when this process exits (`SEM_UNDO`).
    pub undo: bool,
}

impl SemOp {
    /// Adds `delta` to semaphore `num` (waiting, for a negative `delta`,
    /// until the value is at least `-delta`).
    pub fn add(num: u16, delta: i16) -> SemOp {
        SemOp {
            num,
            delta,
            undo: false,
        }
    }

    /// P: takes one from semaphore `num`, waiting while it is 0.
    #[doc(alias = "P")]
    pub fn wait(num: u16) -> SemOp {
        Self::add(num, -1)
    }

    /// V: adds one to semaphore `num`.
    #[doc(alias = "V")]
    pub fn post(num: u16) -> SemOp {
        Self::add(num, 1)
    }

    /// Waits until semaphore `num` is 0 (`sem_op` = 0).
    pub fn wait_zero(num: u16) -> SemOp {
        Self::add(num, 0)
    }

    /// Marks the operation `SEM_UNDO`: when this process exits, however it
    /// exits (even `kill -9`), the kernel reverses it. A process that dies
    /// holding the semaphore gives it back.
    #[doc(alias = "SEM_UNDO")]
    pub fn undo(mut self) -> SemOp {
        self.undo = true;
        self
    }
}

/// A set's status (`semctl(IPC_STAT)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetStatus {
    /// Key, owner, creator and mode.
    pub perm: Perm,
    /// How many semaphores the set has (`sem_nsems`).
    pub len: usize,
    /// Last `semop` (`sem_otime`); `None` if there was none yet.
    pub last_op: Option<SystemTime>,
    /// Creation or last change of values or mode (`sem_ctime`).
    pub last_change: Option<SystemTime>,
}

/// Creates or opens a [`SemaphoreSet`].
#[derive(Debug, Clone)]
pub struct SemaphoreSetBuilder {
    key: Key,
    len: Option<usize>,
    values: Option<Vec<u16>>,
    mode: u32,
    keep: bool,
}

impl SemaphoreSetBuilder {
    /// The number of semaphores: required to create; when opening, the set
    /// must have at least this many.
    pub fn len(mut self, len: usize) -> Self {
        self.len = Some(len);
        self
    }

    /// The initial values of a new set, one per semaphore (default: all 0).
    /// Also sets [`len`](Self::len) if it was not given.
    pub fn values(mut self, values: &[u16]) -> Self {
        self.len.get_or_insert(values.len());
        self.values = Some(values.to_vec());
        self
    }

    /// Permission bits for a new set (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Leave the set in place when the [`SemaphoreSet`] that created it is
    /// dropped.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Creates a new set with the initial values; fails if one with this
    /// key exists. With [`Key::PRIVATE`], always a new set.
    ///
    /// The values are set and then one no-op `semop` is made, so that
    /// [`create_or_open`](Self::create_or_open) in another process can tell
    /// an initialised set from one just made (`sem_otime` is no longer 0).
    #[doc(alias = "IPC_EXCL")]
    pub fn create(self) -> io::Result<SemaphoreSet> {
        let key = self.key;
        let len = match self.len {
            Some(n) if n > 0 => n,
            _ => {
                return Err(invalid(format!(
                    "creating System V semaphore set {key} needs at least one semaphore \
                     (SemaphoreSetBuilder::len)"
                )))
            }
        };
        let values = self.values.clone().unwrap_or_else(|| vec![0; len]);
        if values.len() != len {
            return Err(invalid(format!(
                "{} initial values for a set of {len} semaphores",
                values.len()
            )));
        }
        if let Some(v) = values.iter().find(|&&v| v > SEMVMX) {
            return Err(invalid(format!(
                "a System V semaphore holds at most {SEMVMX} (SEMVMX), not {v}"
            )));
        }
        if self.mode & !0o777 != 0 {
            return Err(invalid(format!(
                "mode {:o} has bits beyond the permission bits 0o777",
                self.mode
            )));
        }
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | self.mode as libc::c_int;
        let id = sys::sem::get(key.value(), len, flags).map_err(|e| self.explain(e))?;
        let mut set = SemaphoreSet {
            id,
            key,
            len,
            remove_on_drop: true,
            created: true,
        };
        sys::sem::set_all(id, &values)?;
        // A net-zero operation that sets sem_otime: "initialised".
        let touch = if values[0] < SEMVMX {
            [SemOp::add(0, 1), SemOp::add(0, -1)]
        } else {
            [SemOp::add(0, -1), SemOp::add(0, 1)]
        };
        set.try_apply(&touch)?;
        set.remove_on_drop = !self.keep;
        Ok(set)
    }

    /// Opens an existing set; it is not removed on drop.
    pub fn open(self) -> io::Result<SemaphoreSet> {
        if self.key == Key::PRIVATE {
            return Err(invalid(
                "a private set cannot be opened by key: use SemaphoreSet::open_id with its id"
                    .into(),
            ));
        }
        let id = sys::sem::get(self.key.value(), 0, 0o600).map_err(|e| self.explain(e))?;
        let set = SemaphoreSet::with_id(id, self.key)?;
        match self.len {
            Some(want) if want > set.len => Err(invalid(format!(
                "System V semaphore set {} has {} semaphores, fewer than the {want} asked for",
                self.key, set.len
            ))),
            _ => Ok(set),
        }
    }

    /// Opens the set, creating it if it does not exist. Only a set this
    /// call created is removed on drop. When another process created it,
    /// waits (up to 2 s) until that process has set the initial values.
    pub fn create_or_open(self) -> io::Result<SemaphoreSet> {
        let key = self.key;
        let set = crate::sysv::create_or_open(
            "System V semaphore set",
            key,
            || self.clone().create(),
            || self.clone().open(),
        )?;
        if !set.created {
            let end = Instant::now() + INIT_WAIT;
            while set.status()?.last_op.is_none() {
                if Instant::now() >= end {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "System V semaphore set {key} exists but was never initialised (no \
                             semop in {INIT_WAIT:?}): its creator may have died; remove it with \
                             ipc rm sysv-sem:{key}"
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(set)
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let key = self.key;
        let msg = match e.raw_os_error() {
            Some(libc::EEXIST) => format!("System V semaphore set {key} already exists"),
            Some(libc::ENOENT) => {
                format!("no System V semaphore set with key {key} (create it first)")
            }
            Some(libc::EACCES) => format!(
                "permission denied opening System V semaphore set {key}: check its owner and \
                 mode (ipcs -s)"
            ),
            Some(libc::EINVAL) => format!(
                "System V semaphore set {key}: {} semaphores is more than a set may hold \
                 (semmsl, the first number in /proc/sys/kernel/sem)",
                self.len.unwrap_or(0)
            ),
            Some(libc::ENOSPC) => format!(
                "System V semaphore limit reached creating {key}: see semmni and semmns in \
                 /proc/sys/kernel/sem (ipcs -ls)"
            ),
            _ => {
                return io::Error::new(
                    e.kind(),
                    format!("cannot get System V semaphore set {key}: {e}"),
                )
            }
        };
        io::Error::new(e.kind(), msg)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A System V semaphore set: `len` counters, from 0 to 32767, that
/// [`apply`](Self::apply) changes atomically together.
///
/// ```
/// use ipckit::sem::{SemaphoreSet, SemOp};
///
/// // Two resources, both free; a private set, removed on drop.
/// let set = SemaphoreSet::private().values(&[1, 1]).create()?;
/// // Take both at once, or wait: no deadlock from taking them one by one.
/// set.apply(&[SemOp::wait(0).undo(), SemOp::wait(1).undo()])?;
/// assert_eq!(set.get_all()?, [0, 0]);
/// set.apply(&[SemOp::post(0).undo(), SemOp::post(1).undo()])?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// The creator removes the set on drop (unless kept); it lives in the
/// kernel until then (`ipcs -s` lists it, `ipc rm sysv-sem:KEY` removes it).
#[derive(Debug)]
pub struct SemaphoreSet {
    id: libc::c_int,
    key: Key,
    len: usize,
    remove_on_drop: bool,
    created: bool,
}

impl SemaphoreSet {
    /// A builder for the set with `key`.
    pub fn builder(key: Key) -> SemaphoreSetBuilder {
        SemaphoreSetBuilder {
            key,
            len: None,
            values: None,
            mode: DEFAULT_MODE,
            keep: false,
        }
    }

    /// A builder for a new private set (`IPC_PRIVATE`), reachable through
    /// its [`id`](Self::id).
    pub fn private() -> SemaphoreSetBuilder {
        Self::builder(Key::PRIVATE)
    }

    /// Opens the set with identifier `id` (as `ipcs -s` shows it); it is
    /// not removed on drop.
    pub fn open_id(id: i32) -> io::Result<SemaphoreSet> {
        let st = sys::sem::stat(id).map_err(|e| {
            io::Error::new(e.kind(), format!("System V semaphore set id {id}: {e}"))
        })?;
        Self::with_id(id, Key::new(st.perm.key))
    }

    fn with_id(id: libc::c_int, key: Key) -> io::Result<SemaphoreSet> {
        let st = sys::sem::stat(id)?;
        Ok(SemaphoreSet {
            id,
            key,
            len: st.nsems as usize,
            remove_on_drop: false,
            created: false,
        })
    }

    /// The set's identifier (`semid`).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The key it was opened with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Whether this handle made the set (`create`, or a `create_or_open`
    /// that found none) and so set its initial values; a
    /// `create_or_open` that opened it has waited for those.
    pub fn created(&self) -> bool {
        self.created
    }

    /// How many semaphores it has.
    #[allow(clippy::len_without_is_empty)] // a set is never empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// Leaves the set in place when this value is dropped.
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    fn check_num(&self, num: usize) -> io::Result<()> {
        if num >= self.len {
            return Err(invalid(format!(
                "semaphore {num} is out of range: System V semaphore set {} has {} (0 to {})",
                self.key,
                self.len,
                self.len - 1
            )));
        }
        Ok(())
    }

    fn explain(&self, e: io::Error) -> io::Error {
        let (key, id) = (self.key, self.id);
        let msg = match e.raw_os_error() {
            Some(libc::EIDRM) | Some(libc::EINVAL) => {
                format!("System V semaphore set {key} (id {id}) was removed (IPC_RMID)")
            }
            Some(libc::ERANGE) => {
                format!("a semaphore's value would exceed {SEMVMX} (SEMVMX)")
            }
            Some(libc::E2BIG) => "too many operations in one call (semopm, the third number in \
                 /proc/sys/kernel/sem)"
                .to_string(),
            Some(libc::EACCES) => format!(
                "permission denied using System V semaphore set {key}: check its mode (ipcs -s)"
            ),
            Some(libc::EPERM) => format!(
                "only the owner or creator of System V semaphore set {key}, or a privileged \
                 process, may do that"
            ),
            Some(libc::ENOSPC) => "SEM_UNDO limit reached (semmnu)".to_string(),
            _ => return e,
        };
        io::Error::new(e.kind(), msg)
    }

    fn prepare(&self, ops: &[SemOp], nowait: bool) -> io::Result<Vec<libc::sembuf>> {
        if ops.is_empty() {
            return Err(invalid("no semaphore operations given".into()));
        }
        ops.iter()
            .map(|o| {
                self.check_num(usize::from(o.num))?;
                let mut flags = 0;
                if o.undo {
                    flags |= libc::SEM_UNDO;
                }
                if nowait {
                    flags |= libc::IPC_NOWAIT;
                }
                Ok(sys::sem::sembuf(o.num, o.delta, flags as i16))
            })
            .collect()
    }

    /// Applies every operation in `ops` atomically: all of them, or (while
    /// any one cannot proceed) none, sleeping until all can (`semop(2)`).
    ///
    /// Fails with a clear error if the set is removed while waiting.
    #[doc(alias = "semop")]
    pub fn apply(&self, ops: &[SemOp]) -> io::Result<()> {
        let mut b = self.prepare(ops, false)?;
        loop {
            match sys::sem::op(self.id, &mut b, None) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| self.explain(e)),
            }
        }
    }

    /// Applies `ops` if they can all proceed now (`IPC_NOWAIT`); false if
    /// one would have to wait.
    #[doc(alias = "IPC_NOWAIT")]
    pub fn try_apply(&self, ops: &[SemOp]) -> io::Result<bool> {
        let mut b = self.prepare(ops, true)?;
        loop {
            match sys::sem::op(self.id, &mut b, None) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(self.explain(e)),
            }
        }
    }

    /// Like [`apply`](Self::apply), giving up after `timeout`
    /// (`semtimedop(2)`): false if it timed out, with nothing applied.
    #[doc(alias = "semtimedop")]
    pub fn apply_timeout(&self, ops: &[SemOp], timeout: Duration) -> io::Result<bool> {
        let mut b = self.prepare(ops, false)?;
        let Some(end) = Instant::now().checked_add(timeout) else {
            return self.apply(ops).map(|()| true);
        };
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match sys::sem::op(self.id, &mut b, Some(left)) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(self.explain(e)),
            }
        }
    }

    /// Checks `ops` (numbers in range, not empty) without applying them.
    pub(crate) fn check_ops(&self, ops: &[SemOp]) -> io::Result<()> {
        self.prepare(ops, true).map(drop)
    }

    /// One `semop` of `ops` for a [`super::Waiter`]'s helper: `Some(true)`
    /// applied, `Some(false)` would wait or was interrupted, `None` the set
    /// is gone or refuses (the owner's own call then says why).
    pub(crate) fn op_once(&self, ops: &[SemOp], nowait: bool) -> Option<bool> {
        let mut b = self.prepare(ops, nowait).ok()?;
        match sys::sem::op(self.id, &mut b, None) {
            Ok(()) => Some(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                Some(false)
            }
            Err(_) => None,
        }
    }

    /// A handle on the same set that does not remove it on drop.
    pub(crate) fn share(&self) -> SemaphoreSet {
        SemaphoreSet {
            id: self.id,
            key: self.key,
            len: self.len,
            remove_on_drop: false,
            created: false,
        }
    }

    /// P on semaphore `num`: takes one, waiting while it is 0. Not undone
    /// at exit; use [`apply`](Self::apply) with [`SemOp::undo`] for that.
    #[doc(alias = "P")]
    pub fn wait(&self, num: u16) -> io::Result<()> {
        self.apply(&[SemOp::wait(num)])
    }

    /// P: the textbook name of [`wait`](Self::wait).
    pub fn p(&self, num: u16) -> io::Result<()> {
        self.wait(num)
    }

    /// V on semaphore `num`: adds one.
    #[doc(alias = "V")]
    pub fn post(&self, num: u16) -> io::Result<()> {
        self.apply(&[SemOp::post(num)])
    }

    /// V: the textbook name of [`post`](Self::post).
    pub fn v(&self, num: u16) -> io::Result<()> {
        self.post(num)
    }

    fn get_one(&self, num: usize, cmd: libc::c_int) -> io::Result<i32> {
        self.check_num(num)?;
        sys::sem::get_one(self.id, num, cmd).map_err(|e| self.explain(e))
    }

    /// The value of semaphore `num` (`GETVAL`).
    #[doc(alias = "GETVAL")]
    pub fn get(&self, num: usize) -> io::Result<u16> {
        self.get_one(num, libc::GETVAL).map(|v| v as u16)
    }

    /// Sets semaphore `num` to `value` (`SETVAL`), waking the processes
    /// that can then proceed, and clearing every process's `SEM_UNDO`
    /// adjustment for it.
    #[doc(alias = "SETVAL")]
    pub fn set(&self, num: usize, value: u16) -> io::Result<()> {
        self.check_num(num)?;
        if value > SEMVMX {
            return Err(invalid(format!(
                "a System V semaphore holds at most {SEMVMX} (SEMVMX), not {value}"
            )));
        }
        sys::sem::set_one(self.id, num, value).map_err(|e| self.explain(e))
    }

    /// Every value (`GETALL`).
    #[doc(alias = "GETALL")]
    pub fn get_all(&self) -> io::Result<Vec<u16>> {
        sys::sem::get_all(self.id, self.len).map_err(|e| self.explain(e))
    }

    /// Sets every value (`SETALL`); `values` must have one per semaphore.
    #[doc(alias = "SETALL")]
    pub fn set_all(&self, values: &[u16]) -> io::Result<()> {
        if values.len() != self.len {
            return Err(invalid(format!(
                "{} values for a set of {} semaphores",
                values.len(),
                self.len
            )));
        }
        if let Some(v) = values.iter().find(|&&v| v > SEMVMX) {
            return Err(invalid(format!(
                "a System V semaphore holds at most {SEMVMX} (SEMVMX), not {v}"
            )));
        }
        sys::sem::set_all(self.id, values).map_err(|e| self.explain(e))
    }

    /// How many processes wait for semaphore `num` to increase (`GETNCNT`).
    #[doc(alias = "GETNCNT")]
    pub fn waiting(&self, num: usize) -> io::Result<usize> {
        self.get_one(num, libc::GETNCNT).map(|v| v as usize)
    }

    /// How many processes wait for semaphore `num` to become 0 (`GETZCNT`).
    #[doc(alias = "GETZCNT")]
    pub fn waiting_for_zero(&self, num: usize) -> io::Result<usize> {
        self.get_one(num, libc::GETZCNT).map(|v| v as usize)
    }

    /// The last process to operate on semaphore `num` (`GETPID`).
    #[doc(alias = "GETPID")]
    pub fn last_pid(&self, num: usize) -> io::Result<Option<u32>> {
        self.get_one(num, libc::GETPID).map(pid)
    }

    /// The set's status (`IPC_STAT`).
    pub fn status(&self) -> io::Result<SetStatus> {
        let s = sys::sem::stat(self.id).map_err(|e| self.explain(e))?;
        Ok(SetStatus {
            perm: s.perm.into(),
            len: s.nsems as usize,
            last_op: time(s.otime),
            last_change: time(s.ctime),
        })
    }

    /// Changes the permission bits (`IPC_SET`).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        sys::sem::set_mode(self.id, mode).map_err(|e| self.explain(e))
    }

    /// Removes the set now (`IPC_RMID`); processes waiting on it wake with
    /// an error saying it was removed.
    #[doc(alias = "IPC_RMID")]
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_on_drop = false;
        sys::sem::remove(self.id).map_err(|e| self.explain(e))
    }
}

impl Drop for SemaphoreSet {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = sys::sem::remove(self.id);
        }
    }
}

/// Removes the System V semaphore set with `key`, as `ipcrm -S` does.
pub fn remove_set(key: Key) -> io::Result<()> {
    if key == Key::PRIVATE {
        return Err(invalid(
            "a private set has no key to find it by: remove it by id (ipcrm -s ID)".into(),
        ));
    }
    let id = sys::sem::get(key.value(), 0, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => io::Error::new(
            e.kind(),
            format!("no System V semaphore set with key {key}"),
        ),
        _ => io::Error::new(e.kind(), format!("System V semaphore set {key}: {e}")),
    })?;
    let set = SemaphoreSet {
        id,
        key,
        len: 1,
        remove_on_drop: false,
        created: false,
    };
    set.remove()
}

/// Removes the System V semaphore set with identifier `id` (as `ipcs -s`
/// shows it), as `ipcrm -s ID` does: the only way to name a private set
/// (key 0) from outside. Its waiters wake with an error.
pub fn remove_set_id(id: i32) -> io::Result<()> {
    sys::sem::remove(id).map_err(|e| crate::sysv::explain_remove_id(e, "semaphore set", id))
}
