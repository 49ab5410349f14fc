//! What every named object's builder shares (queues, shared memory,
//! semaphores, FIFOs).

use std::fmt::Display;
use std::io;

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
