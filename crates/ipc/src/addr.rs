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

/// A named object on the command line (`ipc rm`, `ipc shm`, `ipc sem`):
/// an address, or a System V object by id.
#[derive(Debug, Clone)]
pub enum Target {
    Addr(Addr),
    /// A System V object by identifier: its kind (`mq`, `shm`, `sem`).
    SysvId(&'static str, i32),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::SysvId(kind, id) => write!(f, "sysv-{kind}:id={id}"),
        }
    }
}

pub fn parse_target(s: &str) -> Result<Target, String> {
    for kind in ["mq", "shm", "sem"] {
        if let Some(id) = s.strip_prefix(&format!("sysv-{kind}:id=")) {
            return match id.parse::<i32>() {
                Ok(id) if id >= 0 => Ok(Target::SysvId(kind, id)),
                _ => Err(format!(
                    "{id:?} is not a System V identifier (a whole number, 0 or more, as ipcs \
                     shows it)"
                )),
            };
        }
    }
    for kind in ["mq", "shm", "sem"] {
        let key = s.strip_prefix(&format!("sysv-{kind}:"));
        if key.and_then(|k| k.parse::<ipckit::sysv::Key>().ok()) == Some(ipckit::sysv::Key::PRIVATE)
        {
            let flag = &kind[..1];
            return Err(format!(
                "key 0 is IPC_PRIVATE: a private object has no key to find it by; remove it \
                 by id, sysv-{kind}:id=ID (ipcs -{flag} shows the ids)"
            ));
        }
    }
    let addr = s.parse::<Addr>().map_err(|e| e.to_string())?;
    Ok(Target::Addr(addr))
}
