//! Several objects in one region without hand-computed offsets
//! ([`Layout`]), and a mutex that owns a share of its region
//! ([`OwnedMutex`]), so that a struct can hold both.

use std::io;
use std::sync::Arc;

use super::{Condvar, Init, Mutex, Pod, Region};
use crate::sem::UnnamedSemaphore;

/// Hands out offsets for objects placed one after another in a region,
/// each aligned as it needs. Every process computes the same layout from
/// the same calls, so they agree without sharing numbers.
///
/// ```
/// use ipckit::shm::{Condvar, Layout, Memfd, Mutex};
///
/// let mut l = Layout::new();
/// let counter = l.mutex::<u64>();
/// let changed = l.condvar();
/// let flags = l.array::<u32>(16);
/// let m = Memfd::create("state", l.size())?;
/// let counter = Mutex::init(&m, counter, 0u64)?;
/// let changed = Condvar::init(&m, changed)?;
/// m.array::<u32>(flags, 16)?.set(3, 1)?;
/// # let _ = (counter, changed);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Layout {
    next: usize,
}

impl Layout {
    /// An empty layout: the first object goes at offset 0.
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Reserves `size` bytes aligned to `align`; returns their offset.
    pub fn bytes(&mut self, size: usize, align: usize) -> usize {
        let at = self.next.next_multiple_of(align.max(1));
        self.next = at + size;
        at
    }

    /// The offset for a [`Mutex<T>`].
    pub fn mutex<T: Pod>(&mut self) -> usize {
        self.bytes(Mutex::<T>::SIZE, align_of::<T>().max(8))
    }

    /// The offset for a [`Condvar`].
    pub fn condvar(&mut self) -> usize {
        self.bytes(Condvar::SIZE, 8)
    }

    /// The offset for an [`UnnamedSemaphore`].
    pub fn semaphore(&mut self) -> usize {
        self.bytes(UnnamedSemaphore::SIZE, 8)
    }

    /// The offset for one `T` (a view, or an atomic of that size).
    pub fn value<T: Pod>(&mut self) -> usize {
        self.bytes(size_of::<T>(), align_of::<T>())
    }

    /// The offset for `n` consecutive `T`s.
    pub fn array<T: Pod>(&mut self, n: usize) -> usize {
        self.bytes(size_of::<T>() * n, align_of::<T>())
    }

    /// The bytes the region needs for everything placed so far.
    pub fn size(&self) -> usize {
        self.next.max(1)
    }
}

/// Anything that holds a mapped [`Region`] (`Shm`, `Memfd`, `MappedFile`,
/// `SysvShm`), shareable between threads.
pub trait HoldsRegion: Send + Sync {
    /// The region.
    fn region(&self) -> &Region;
}

impl<T: std::ops::Deref<Target = Region> + Send + Sync> HoldsRegion for T {
    fn region(&self) -> &Region {
        self
    }
}

/// A [`Mutex`] together with a shared handle on its region (an `Arc`), so
/// that it can live in a struct on its own: no borrow of the region to
/// thread through. [`get`](OwnedMutex::get) gives the mutex to lock.
///
/// ```
/// use std::sync::Arc;
/// use ipckit::shm::{Layout, Memfd, OwnedMutex};
///
/// struct Stats {
///     hits: OwnedMutex<u64>,
/// }
///
/// let mut l = Layout::new();
/// let at = l.mutex::<u64>();
/// let region = Arc::new(Memfd::create("stats", l.size())?);
/// let stats = Stats { hits: OwnedMutex::init(region, at, 0)? };
/// stats.hits.get()?.lock().unwrap().update(|n| *n += 1);
/// assert_eq!(stats.hits.get()?.lock().unwrap().get(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct OwnedMutex<T> {
    region: Arc<dyn HoldsRegion>,
    offset: usize,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for OwnedMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OwnedMutex<{}> (offset {})",
            std::any::type_name::<T>(),
            self.offset
        )
    }
}

impl<T: Pod> OwnedMutex<T> {
    /// Initialises a mutex holding `value` at `offset` of `region`.
    pub fn init(region: Arc<dyn HoldsRegion>, offset: usize, value: T) -> io::Result<Self> {
        Mutex::init(region.region(), offset, value)?;
        Ok(Self::at(region, offset))
    }

    /// Opens the mutex another process initialised at `offset`.
    pub fn open(region: Arc<dyn HoldsRegion>, offset: usize) -> io::Result<Self> {
        Mutex::<T>::open(region.region(), offset)?;
        Ok(Self::at(region, offset))
    }

    /// [`Mutex::init_or_open`], owned.
    pub fn init_or_open(
        region: Arc<dyn HoldsRegion>,
        offset: usize,
        value: T,
        timeout: std::time::Duration,
    ) -> io::Result<Init<Self>> {
        let made = Mutex::init_or_open(region.region(), offset, value, timeout)?.created();
        let me = Self::at(region, offset);
        Ok(if made {
            Init::Created(me)
        } else {
            Init::Opened(me)
        })
    }

    fn at(region: Arc<dyn HoldsRegion>, offset: usize) -> Self {
        OwnedMutex {
            region,
            offset,
            _t: std::marker::PhantomData,
        }
    }

    /// The mutex, borrowing this handle (checked once more: cheap).
    pub fn get(&self) -> io::Result<Mutex<'_, T>> {
        Mutex::open(self.region.region(), self.offset)
    }
}

/// A [`Condvar`] together with a shared handle on its region, to sit next
/// to an [`OwnedMutex`] in a struct of one's own.
///
/// ```
/// use std::sync::Arc;
/// use ipckit::shm::{Layout, Memfd, OwnedCondvar, OwnedMutex};
///
/// struct Queue {
///     len: OwnedMutex<u32>,
///     grew: OwnedCondvar,
/// }
///
/// let mut l = Layout::new();
/// let (m, c) = (l.mutex::<u32>(), l.condvar());
/// let region = Arc::new(Memfd::create("queue", l.size())?);
/// let q = Queue {
///     len: OwnedMutex::init(region.clone(), m, 0)?,
///     grew: OwnedCondvar::init(region, c)?,
/// };
/// let mutex = q.len.get()?;
/// let mut g = mutex.lock().unwrap();
/// g.update(|n| *n += 1);
/// q.grew.get()?.notify_all()?;
/// assert_eq!(g.get(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct OwnedCondvar {
    region: Arc<dyn HoldsRegion>,
    offset: usize,
}

impl std::fmt::Debug for OwnedCondvar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnedCondvar (offset {})", self.offset)
    }
}

impl OwnedCondvar {
    /// Initialises a condition variable at `offset` of `region`.
    pub fn init(region: Arc<dyn HoldsRegion>, offset: usize) -> io::Result<Self> {
        Condvar::init(region.region(), offset)?;
        Ok(OwnedCondvar { region, offset })
    }

    /// Opens the condition variable another process initialised at `offset`.
    pub fn open(region: Arc<dyn HoldsRegion>, offset: usize) -> io::Result<Self> {
        Condvar::open(region.region(), offset)?;
        Ok(OwnedCondvar { region, offset })
    }

    /// [`Condvar::init_or_open`], owned.
    pub fn init_or_open(
        region: Arc<dyn HoldsRegion>,
        offset: usize,
        timeout: std::time::Duration,
    ) -> io::Result<Init<Self>> {
        let made = Condvar::init_or_open(region.region(), offset, timeout)?.created();
        let me = OwnedCondvar { region, offset };
        Ok(if made {
            Init::Created(me)
        } else {
            Init::Opened(me)
        })
    }

    /// The condition variable, borrowing this handle.
    pub fn get(&self) -> io::Result<Condvar<'_>> {
        Condvar::open(self.region.region(), self.offset)
    }
}
