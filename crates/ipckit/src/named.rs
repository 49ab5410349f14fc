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

    /// The file at `path` itself (a symbolic link is not followed).
    pub(crate) fn of_path(path: &Path) -> io::Result<FileId> {
        std::fs::symlink_metadata(path).map(|m| FileId::of(&m))
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
