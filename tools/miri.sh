#!/usr/bin/env bash
# Miri, the interpreter that checks Rust code for undefined behaviour (out of
# bounds or misaligned accesses, data races, invalid values, aliasing
# violations, arithmetic overflow in tests), on the library's logic that does
# not need another process:
#
#   - framing: whole frames out of a pipe written in chunks of any size;
#   - every text parser (addresses, System V keys, signals, mailbox names and
#     patterns, the service manager's and property daemon's policy files);
#   - the decoders of bytes from other processes: binder parcels and wire
#     headers, the mailbox wire protocol (hostile, cut and mutated inputs);
#   - the mailbox state machine (not its durable store, which opens
#     directories to sync them, O_DIRECTORY, which Miri cannot);
#   - the ring's protocol on threads (`ring::core::model`): positions that
#     wrap past u64::MAX, several producers and consumers; run again under
#     16 scheduler seeds (other interleavings and weak-memory outcomes: a
#     Release store weakened to Relaxed in `commit_send` is reported as a
#     data race on the slot);
#   - the accessors every view of shared memory goes through
#     (`sys::mman`), at the edges of a mapping and past them.
#
# Usage:
#   tools/miri.sh            # all of the above
#   tools/miri.sh FILTER...  # the unit tests whose names contain a FILTER
#
# Miri has no model of many system calls (poll, sigaction, F_GETPIPE_SZ,
# mappings of files, System V IPC, anything between processes): the rest is
# for the other tests, fuzzing (tools/fuzz.sh) and the chaos and soak runs.
# Randomised tests take fewer steps under Miri (`cfg!(miri)`).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 ||
  rustup component add --toolchain nightly miri rust-src

# The mailbox state machine reads the wall clock: isolation off.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"

if [ $# -gt 0 ]; then
  filters=("$@")
else
  filters=(
    frame::tests::frames_survive_any_chunking
    address:: sysv::tests signal::tests registry::
    mailbox::name mailbox::config mailbox::wire mailbox::state
    binder::parcel binder::wire binder::sm binder::status
    prop::server
    ring::core::model sys::mman
    --skip durable --skip a_damaged_tail
  )
fi
cargo +nightly miri test -q -p ipckit --lib -- "${filters[@]}"
if [ $# -eq 0 ]; then
  echo "== the ring's protocol and atomics in place, 16 scheduler seeds"
  MIRIFLAGS="$MIRIFLAGS -Zmiri-many-seeds=0..16" \
    cargo +nightly miri test -q -p ipckit --lib -- ring::core::model sys::mman::tests::atomics
fi
