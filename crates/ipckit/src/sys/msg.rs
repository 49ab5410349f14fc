//! System V message queue calls: `msgget(2)`, `msgsnd(2)`, `msgrcv(2)`,
//! `msgctl(2)`, and `ftok(3)` for keys.
//!
//! `msgsnd` and `msgrcv` are made once (`EINTR` is returned, not retried):
//! a timed wait interrupts them with [`super::alarm::Alarm`] and decides
//! itself whether to try again.

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};

use super::syscall;

/// `ftok(3)`: a key from an existing path's inode and device and the low
/// 8 bits of `proj`.
pub(crate) fn ftok(path: &CStr, proj: u8) -> io::Result<libc::key_t> {
    // SAFETY: `path` is NUL-terminated; ftok only reads it (via stat).
    syscall!(ftok(path.as_ptr(), libc::c_int::from(proj)))
}

/// `msgget(2)`: the queue id for `key`. The low 9 bits of `flags` are the
/// new queue's mode with `IPC_CREAT`, otherwise the permissions asked for.
pub(crate) fn get(key: libc::key_t, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: plain integer arguments.
    syscall!(msgget(key, flags))
}

/// The kernel's message buffer: a `long` type, then the payload
/// (`struct msgbuf` of `msgop(2)`). Kept in `c_long`s so the type is
/// aligned, and reused across calls.
#[derive(Debug, Default)]
pub(crate) struct MsgBuf {
    words: Vec<libc::c_long>,
}

const WORD: usize = size_of::<libc::c_long>();

impl MsgBuf {
    /// Makes room for a payload of `len` bytes.
    fn reserve(&mut self, len: usize) {
        let words = 1 + len.div_ceil(WORD);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
    }

    /// The payload area (everything after the type).
    fn payload_mut(&mut self) -> &mut [u8] {
        let len = (self.words.len() - 1) * WORD;
        // SAFETY: the words after the first are initialised memory of
        // `len` bytes owned by `self.words`; u8 has no alignment or validity
        // requirements, and the borrow of `self` keeps the Vec in place.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().add(1).cast(), len) }
    }

    /// The first `len` payload bytes of a received message.
    #[inline]
    pub(crate) fn payload(&self, len: usize) -> &[u8] {
        let avail = self.words.len().saturating_sub(1) * WORD;
        assert!(len <= avail, "payload length beyond the buffer");
        // SAFETY: as in `payload_mut`, for `len <= avail` bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().add(1).cast(), len) }
    }

    /// The type of the message last received into (or loaded in) the buffer.
    // `c_long` is i64 here but i32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    pub(crate) fn mtype(&self) -> i64 {
        i64::from(self.words.first().copied().unwrap_or(0))
    }

    /// Puts a message of type `mtype` in the buffer, ready for [`snd`].
    #[inline]
    pub(crate) fn load(&mut self, mtype: libc::c_long, payload: &[u8]) {
        self.reserve(payload.len());
        self.words[0] = mtype;
        self.payload_mut()[..payload.len()].copy_from_slice(payload);
    }
}

/// One `msgsnd(2)` of the first `len` payload bytes of `buf`.
#[inline]
pub(crate) fn snd(id: libc::c_int, buf: &MsgBuf, len: usize, flags: libc::c_int) -> io::Result<()> {
    assert!(
        len <= (buf.words.len() - 1) * WORD,
        "send beyond the buffer"
    );
    // SAFETY: `buf.words` holds the type and at least `len` payload bytes,
    // readable for the whole call.
    let r = unsafe { libc::msgsnd(id, buf.words.as_ptr().cast(), len, flags) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `msgrcv(2)` of a message of at most `max` payload bytes into `buf`;
/// returns the payload length (the type is [`MsgBuf::mtype`]). An empty
/// queue under `IPC_NOWAIT` (`ENOMSG`) is reported as `WouldBlock`, like a
/// full one for [`snd`] (`EAGAIN`).
#[inline]
pub(crate) fn rcv(
    id: libc::c_int,
    buf: &mut MsgBuf,
    max: usize,
    msgtyp: libc::c_long,
    flags: libc::c_int,
) -> io::Result<usize> {
    buf.reserve(max);
    // SAFETY: `buf.words` has room for the type and `max` payload bytes,
    // writable for the whole call; the kernel writes no more than that.
    let n = unsafe { libc::msgrcv(id, buf.words.as_mut_ptr().cast(), max, msgtyp, flags) };
    if n == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOMSG) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// A System V object's `struct ipc_perm`, in fixed-width types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawPerm {
    pub key: libc::key_t,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
}

impl From<&libc::ipc_perm> for RawPerm {
    fn from(p: &libc::ipc_perm) -> RawPerm {
        RawPerm {
            key: p.__key,
            uid: p.uid,
            gid: p.gid,
            cuid: p.cuid,
            cgid: p.cgid,
            mode: u32::from(p.mode),
        }
    }
}

/// A queue's `struct msqid_ds`, in fixed-width types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawStatus {
    pub perm: RawPerm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
}

fn stat_ds(id: libc::c_int) -> io::Result<libc::msqid_ds> {
    let mut ds = MaybeUninit::<libc::msqid_ds>::zeroed();
    // SAFETY: `ds` is writable and of the type IPC_STAT fills.
    syscall!(msgctl(id, libc::IPC_STAT, ds.as_mut_ptr()))?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    Ok(unsafe { ds.assume_init() })
}

/// `msgctl(IPC_STAT)`.
// Field widths differ between targets: some casts are no-ops here.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn stat(id: libc::c_int) -> io::Result<RawStatus> {
    let ds = stat_ds(id)?;
    Ok(RawStatus {
        perm: RawPerm::from(&ds.msg_perm),
        stime: ds.msg_stime as i64,
        rtime: ds.msg_rtime as i64,
        ctime: ds.msg_ctime as i64,
        cbytes: ds.__msg_cbytes as u64,
        qnum: ds.msg_qnum as u64,
        qbytes: ds.msg_qbytes as u64,
        lspid: ds.msg_lspid,
        lrpid: ds.msg_lrpid,
    })
}

/// `msgctl(IPC_SET)`: changes the permission bits and/or the byte limit,
/// keeping the owner.
pub(crate) fn set(id: libc::c_int, mode: Option<u32>, qbytes: Option<u64>) -> io::Result<()> {
    let mut ds = stat_ds(id)?;
    if let Some(m) = mode {
        ds.msg_perm.mode = (ds.msg_perm.mode & !0o777) | (m & 0o777) as libc::c_ushort;
    }
    if let Some(q) = qbytes {
        #[allow(clippy::useless_conversion)] // msglen_t is narrower on some targets
        let q = q
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "byte limit too large"))?;
        ds.msg_qbytes = q;
    }
    // SAFETY: IPC_SET only reads the structure, which is valid plain data.
    syscall!(msgctl(id, libc::IPC_SET, &mut ds))?;
    Ok(())
}

/// `msgctl(IPC_RMID)`: removes the queue, waking every waiting process.
pub(crate) fn remove(id: libc::c_int) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    syscall!(msgctl(id, libc::IPC_RMID, std::ptr::null_mut()))?;
    Ok(())
}

/// `msgctl(IPC_INFO)`: the system limits (msgmax, msgmnb, msgmni) of this
/// IPC namespace, as `/proc/sys/kernel/msg*` show them.
pub(crate) fn info() -> io::Result<(usize, usize, usize)> {
    let mut mi = MaybeUninit::<libc::msginfo>::zeroed();
    // SAFETY: IPC_INFO writes a `struct msginfo` through the pointer (it is
    // declared as msqid_ds*, the kernel's documented cast); `mi` is writable.
    syscall!(msgctl(0, libc::IPC_INFO, mi.as_mut_ptr().cast()))?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    let mi = unsafe { mi.assume_init() };
    let n = |v: libc::c_int| usize::try_from(v).unwrap_or(0);
    Ok((n(mi.msgmax), n(mi.msgmnb), n(mi.msgmni)))
}
