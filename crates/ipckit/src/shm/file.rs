//! Regular files mapped into memory (`mmap(2)` with `MAP_SHARED`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Region;
use crate::sys;
use crate::sys::mman::Mapping;

/// A regular file mapped shared: every process mapping it sees the same
/// pages, and the kernel writes them back to the file, which outlives the
/// processes (it is not removed on drop: persistence is the point).
/// [`MappedFile::flush`] waits for the data to reach the file;
/// [`MappedFile::flush_async`] only starts the write-back. Derefs to its
/// [`Region`].
///
/// If another program truncates the file while it is mapped, touching the
/// pages past the new end crashes with `SIGBUS`; share files only with
/// programs that leave their size alone (or use a sealed [`super::Memfd`]).
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    path: PathBuf,
    region: Region,
}

impl MappedFile {
    /// Creates a new file of `len` zero bytes (mode 0600; fails if it
    /// exists) and maps it read-write.
    pub fn create(path: impl AsRef<Path>, len: usize) -> io::Result<MappedFile> {
        let path = path.as_ref();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a mapped file needs a size of at least 1 byte ({})",
                    path.display()
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| explain(e, path))?;
        let id = crate::named::FileId::of(&file.metadata()?);
        let made = (|| {
            file.set_len(len as u64)?;
            sys::mman::allocate(file.as_fd(), len as u64)?;
            Mapping::map(file.as_fd(), 0, len, true)
        })();
        match made {
            Ok(map) => Ok(MappedFile {
                file,
                path: path.to_path_buf(),
                region: Region::new(map),
            }),
            Err(e) => {
                let _ = crate::named::remove_if_same(path, id);
                Err(explain(e, path))
            }
        }
    }

    /// Maps an existing file, all of it, read-write.
    pub fn open(path: impl AsRef<Path>) -> io::Result<MappedFile> {
        Self::open_with(path.as_ref(), true)
    }

    /// Maps an existing file, all of it, read-only.
    pub fn open_read_only(path: impl AsRef<Path>) -> io::Result<MappedFile> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, writable: bool) -> io::Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| explain(e, path))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let len = usize::try_from(meta.len()).map_err(|_| io::Error::other("file too large"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is empty: give it a size before mapping it",
                    path.display()
                ),
            ));
        }
        let map = Mapping::map(file.as_fd(), 0, len, writable).map_err(|e| explain(e, path))?;
        Ok(MappedFile {
            file,
            path: path.to_path_buf(),
            region: Region::new(map),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes changed pages back to the file and waits until they are
    /// written (`msync(MS_SYNC)`).
    #[doc(alias = "msync")]
    pub fn flush(&self) -> io::Result<()> {
        self.region.map.sync(0, self.region.len(), true)
    }

    /// Starts writing changed pages back without waiting (`MS_ASYNC`).
    pub fn flush_async(&self) -> io::Result<()> {
        self.region.map.sync(0, self.region.len(), false)
    }

    /// Writes back the pages covering `len` bytes at `offset` and waits.
    pub fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|e| e > self.region.len())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot flush {len} bytes at offset {offset} of a {}-byte mapping",
                    self.region.len()
                ),
            ));
        }
        self.region.map.sync(offset, len, true)
    }
}

fn explain(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot map {}: {e}", path.display()))
}

impl_region_object!(MappedFile => file);
