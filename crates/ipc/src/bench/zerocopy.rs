//! `ipc bench --zero-copy`: the ring rows sent with loans and received in
//! place. Only a message's first 64 bytes (one cache line: the bench's
//! sequence number, or a whole small message such as the sink's report) are
//! written and read; the rest of the slot is left as it lies, which is what
//! a program that builds its data in the slot pays for the transport.

use ipckit::ring::Duplex as RingDuplex;
use ipckit::WaitStrategy;
use ipckit::{Deadline, MessageReceiver, MessageSender, RecvTimeoutError, SendTimeoutError};

/// A ring endpoint that moves messages without copying them: the bench's
/// message traits on top of `loan`/`commit` and `recv_in_place`.
#[derive(Debug)]
pub struct ZeroCopy(pub RingDuplex);

/// The part of a message that is really written and read.
const TOUCHED: usize = 64;

impl MessageSender for ZeroCopy {
    fn send_until(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError<()>> {
        let mut loan = self.0.tx.loan_until(deadline)?;
        let head = &msg[..msg.len().min(TOUCHED)];
        loan.write(0, head)
            .map_err(|e| SendTimeoutError::Io(e, ()))?;
        loan.commit(msg.len())
            .map_err(|e| SendTimeoutError::Io(e, ()))
    }
}

impl MessageReceiver for ZeroCopy {
    /// Leaves `buf` at the message's length with only its first 64 bytes
    /// read (a buffer already that long is not touched beyond them).
    fn recv_until(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
    ) -> Result<(), RecvTimeoutError> {
        let s = self.0.rx.recv_in_place_until(deadline)?;
        buf.resize(s.len(), 0);
        let n = s.len().min(TOUCHED);
        s.read(0, &mut buf[..n]).map_err(RecvTimeoutError::Io)
    }
    fn max_message_size(&self) -> usize {
        self.0.max_message_size()
    }
    fn set_max_message_size(&mut self, max: usize) {
        self.0.set_max_message_size(max)
    }
    fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.0.set_wait_strategy(strategy)
    }
}
