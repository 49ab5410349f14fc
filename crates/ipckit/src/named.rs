//! Named objects in the filesystem (FIFOs, socket files, semaphore files):
//! removing exactly the one you made.
//!
//! A path in a shared directory such as `/tmp` can be replaced between the
//! moment a program creates an object there and the moment it removes it.
//! [`CreatedPath`] remembers which file was made (device and inode, read
//! when it was made) and removes the path only while it still is that file,
//! looked at without following symbolic links: whatever was put there
//! since is left alone.

use std::fmt::Display;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `create_or_open` for a named object: the kernel cannot say "created or
/// opened" in one call, so try an exclusive create, then an open, and again
/// if the object vanished in between (another process removed it).
pub(crate) fn create_or_open<T>(
    what: &dyn Display,
    mut create: impl FnMut() -> io::Result<T>,
    mut open: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    for _ in 0..100 {
        match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            r => return r,
        }
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
    }
    Err(io::Error::other(format!(
        "{what} kept appearing and disappearing while being opened"
    )))
}

/// Which file an object is: its device and inode, read from the
/// descriptor when it was made or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The file `fd` refers to (no other descriptor is made: this works at
    /// the open-file limit, when a `Drop` must still find what to remove).
    pub(crate) fn of_fd(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FileId> {
        Ok(FileId::of_stat(&crate::sys::fd::fstat(fd)?))
    }

    /// The file an `fstat` described.
    pub(crate) fn of_stat(st: &libc::stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// The file this process has just made at `path` (`mkfifo`, `bind`):
    /// read from the path (those calls give no descriptor of the file), so
    /// it is checked to be of the kind made (`is_kind`) and this user's.
    /// Anything else was put there in between by someone else: an error,
    /// and no id, so nothing of theirs is ever removed as ours.
    pub(crate) fn of_made(
        path: &Path,
        what: &str,
        is_kind: fn(&std::fs::FileType) -> bool,
    ) -> io::Result<FileId> {
        let m = std::fs::symlink_metadata(path)?;
        if !is_kind(&m.file_type()) || m.uid() != crate::sys::process::euid() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "the {what} just made at {} was replaced by someone else's file before \
                     it could be recorded; that file is left alone",
                    path.display()
                ),
            ));
        }
        Ok(FileId::of(&m))
    }
}

/// A path and the file this process created there: removing it removes
/// that file only (see the module docs). Cheap to clone, so that a signal
/// handler thread can hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPath {
    path: std::path::PathBuf,
    id: FileId,
}

impl CreatedPath {
    pub(crate) fn new(path: std::path::PathBuf, id: FileId) -> CreatedPath {
        CreatedPath { path, id }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the path if it still is the file created there; returns
    /// whether it did (false: removed already, or replaced by something
    /// else, which is left alone).
    pub fn remove(&self) -> io::Result<bool> {
        remove_if_same(&self.path, self.id)
    }
}

/// `ENOSPC` from making or growing something in `/dev/shm` (`what`, with
/// its size), in words that say what to do; any other error unchanged.
pub(crate) fn dev_shm_full(e: io::Error, what: &str) -> io::Error {
    if e.raw_os_error() != Some(libc::ENOSPC) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "no room for {what}: /dev/shm is full (see `df /dev/shm`; `ipc ls` lists the IPC \
             objects there and `ipc rm` removes unused ones)"
        ),
    )
}

/// Removes `path` if it still is the file `id`, looked at without
/// following a symlink. Returns whether it removed it: another file put
/// there since (by anyone) is left alone, and so is a missing one.
///
/// In a sticky directory such as `/tmp` or `/dev/shm` only the file's
/// owner (or root) can remove or rename an entry, so between the check and
/// the removal only this user can swap the file.
pub(crate) fn remove_if_same(path: &Path, id: FileId) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if FileId::of(&m) == id && !m.file_type().is_symlink() => {
            std::fs::remove_file(path)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// What `mkfifo` or `bind` made is recorded only if it is still there:
    /// a file of another kind put in its place is refused, with a message
    /// that says so.
    #[test]
    fn made_file_replaced_in_between_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"someone else's").unwrap();
        let e = FileId::of_made(&path, "FIFO", FileTypeExt::is_fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("replaced"), "{e}");
        std::fs::remove_file(&path).unwrap();
        crate::sys::fd::mkfifo(&path, 0o600).unwrap();
        let id = FileId::of_made(&path, "FIFO", FileTypeExt::is_fifo).unwrap();
        assert_eq!(id, FileId::of(&std::fs::symlink_metadata(&path).unwrap()));
        // A FIFO of another user (root can make one to try) is not ours.
        if crate::sys::process::euid() == 0 {
            std::os::unix::fs::lchown(&path, Some(65534), None).unwrap();
            let e = FileId::of_made(&path, "FIFO", FileTypeExt::is_fifo).unwrap_err();
            assert!(e.to_string().contains("someone else's"), "{e}");
        }
    }
}
