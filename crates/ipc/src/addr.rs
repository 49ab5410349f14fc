//! Addresses on the command line: the grammar is the library's
//! ([`ipckit::Address`]); here only what the CLI says about them.

use anyhow::anyhow;
pub use ipckit::address::FORMS;
pub use ipckit::Address as Addr;

/// The CLI's words for addresses that name no message channel.
pub trait AddrExt {
    /// The error for an address that names no message channel.
    fn not_a_channel(&self) -> anyhow::Error;
    /// Refuses an address that names no message channel (`ipc send`/`recv`).
    fn check_channel(&self) -> anyhow::Result<()>;
}

impl AddrExt for Addr {
    fn not_a_channel(&self) -> anyhow::Error {
        let what = match self {
            Addr::Sem(_) | Addr::SysvSem(_) => "a semaphore",
            _ => "shared memory",
        };
        anyhow!(
            "{self} is {what}, not a message channel: ipc send and ipc recv cannot use it \
             (ipc rm {self} removes it)"
        )
    }

    fn check_channel(&self) -> anyhow::Result<()> {
        if self.is_channel() {
            Ok(())
        } else {
            Err(self.not_a_channel())
        }
    }
}
