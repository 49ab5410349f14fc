//! What every named object shares (queues, shared memory, semaphores,
//! FIFOs, socket files): `create_or_open`, and removing exactly the object
//! one made.

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
