//! Sockets: Unix domain ([`unix`]), Internet ([`inet`]: TCP and UDP), and
//! raw ([`raw`]: IP packets and link-layer frames, headers included).
//!
//! A socket is the one mechanism that works both on one machine and across
//! a network. On one machine, Unix domain sockets are the faster choice:
//! they skip the protocol stack (no checksums, sequence numbers or
//! acknowledgements), and can pass descriptors and credentials.
//! `ipc bench unix tcp` shows the difference on your machine.

pub mod inet;
pub mod raw;
pub mod unix;
