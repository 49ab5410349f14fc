//! The atomics the ring's protocol uses: `std`'s, or `loom`'s when the
//! crate is built with `--cfg loom` to model-check it (as crossbeam does).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
