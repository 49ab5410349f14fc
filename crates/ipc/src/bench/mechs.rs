//! The mechanisms `ipc bench` measures: their names, what they are (the
//! notes' comparison table) and what each needs.

use std::fmt;

use ipckit::socket::inet::UdpSocket;
use ipckit::WaitStrategy;

use ipckit::registry::Mechanism;

use super::shm::{self, Turns};

/// The mechanisms `ipc bench` measures, in the notes' order: those it sets
/// up in a way of its own, then any other mechanism of `ipckit::registry`.
#[derive(Debug, Clone, Copy)]
pub enum Mech {
    Pipe,
    Fifo,
    Unix,
    UnixDgram,
    UnixSeq,
    Tcp,
    Udp,
    Mq,
    SysvMq,
    ShmSpin,
    ShmFutex,
    ShmSem,
    SysvSem,
    Signal,
    SignalHandler,
    Ring,
    RingMpmc,
    /// A mechanism of `ipckit::registry` with no setup of its own here:
    /// measured through `ipckit::connect` and `ipckit::listen` on its
    /// scratch addresses, as a program using only its address would.
    Other(&'static Mechanism),
}

impl PartialEq for Mech {
    fn eq(&self, other: &Mech) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Mech {}

impl Mech {
    /// The mechanisms with a setup of their own.
    const SPECIAL: [Mech; 17] = [
        Mech::Pipe,
        Mech::Fifo,
        Mech::Unix,
        Mech::UnixDgram,
        Mech::UnixSeq,
        Mech::Tcp,
        Mech::Udp,
        Mech::Mq,
        Mech::SysvMq,
        Mech::ShmSpin,
        Mech::ShmFutex,
        Mech::ShmSem,
        Mech::SysvSem,
        Mech::Signal,
        Mech::SignalHandler,
        Mech::Ring,
        Mech::RingMpmc,
    ];

    /// Every mechanism measured: [`Self::SPECIAL`], then each registry
    /// mechanism none of them is.
    pub(super) fn all() -> &'static [Mech] {
        static ALL: std::sync::OnceLock<Vec<Mech>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            let mut all = Mech::SPECIAL.to_vec();
            for m in ipckit::registry::MECHANISMS {
                let known = all
                    .iter()
                    .any(|b| b.registered().is_some_and(|r| r.scheme == m.scheme));
                if !known {
                    all.push(Mech::Other(m));
                }
            }
            all
        })
    }

    /// The mechanism called `name` (as [`Self::name`] gives it).
    pub(super) fn parse(name: &str) -> Result<Mech, String> {
        Mech::all()
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Mech::all().iter().map(|m| m.name()).collect();
                format!("no mechanism {name:?} (one of {})", names.join(", "))
            })
    }

    /// Whether it is set up through its address (`ipckit::connect`,
    /// `ipckit::listen`): the socket kinds, and whatever the registry adds.
    pub(super) fn by_address(self) -> Option<&'static Mechanism> {
        match self {
            Mech::Unix
            | Mech::UnixDgram
            | Mech::UnixSeq
            | Mech::Tcp
            | Mech::Udp
            | Mech::Other(_) => self.registered(),
            _ => None,
        }
    }

    /// The registry mechanism to set it up through when `--by-address`
    /// asks: every registered one but ring-mpmc (a way of using a ring the
    /// address cannot say).
    pub(super) fn address_setup(self) -> Option<&'static Mechanism> {
        if self == Mech::RingMpmc {
            return None;
        }
        self.registered()
    }

    /// Whether messages can be lost on the way (UDP).
    pub(super) fn lossy(self) -> bool {
        self.registered().is_some_and(|m| m.lossy)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Mech::Pipe => "pipe",
            Mech::Fifo => "fifo",
            Mech::Unix => "unix",
            Mech::UnixDgram => "unix-dgram",
            Mech::UnixSeq => "unix-seq",
            Mech::Tcp => "tcp",
            Mech::Udp => "udp",
            Mech::Mq => "mq",
            Mech::SysvMq => "sysv-mq",
            Mech::ShmSpin => "shm-spin",
            Mech::ShmFutex => "shm-futex",
            Mech::ShmSem => "shm-sem",
            Mech::SysvSem => "sysv-sem",
            Mech::Signal => "signal",
            Mech::SignalHandler => "signal-handler",
            Mech::Ring => "ring",
            Mech::RingMpmc => "ring-mpmc",
            Mech::Other(m) => m.scheme,
        }
    }

    /// How the processes take turns, for the shared-memory entries.
    pub(super) fn turns(self) -> Option<Turns> {
        match self {
            Mech::ShmSpin => Some(Turns::Spin),
            Mech::ShmFutex => Some(Turns::Futex),
            Mech::ShmSem => Some(Turns::PosixSem),
            Mech::SysvSem => Some(Turns::SysvSem),
            _ => None,
        }
    }

    /// Refuses a size whose copies (the sender's message and the
    /// receiver's buffer in each process; the slots of the shared-memory
    /// entries) would take more than half the memory available.
    pub(super) fn too_big_for_memory(self, size: usize) -> Option<String> {
        let copies = if self.turns().is_some() {
            2 * shm::SLOTS as u64 + 4
        } else if self.is_ring() {
            2 * ring_capacity(size) as u64 + 4
        } else {
            4
        };
        let need = copies.saturating_mul(size as u64);
        let avail = memory_available()?;
        (need > avail / 2).then(|| {
            format!(
                "{size}-byte messages need about {} MiB here ({copies} copies), more than half \
                 of the {} MiB of memory available",
                need >> 20,
                avail >> 20
            )
        })
    }

    /// The notes' comparison table: data abstraction, participants, direction.
    pub(super) fn by_name(name: &str) -> Mech {
        Mech::parse(name).expect("a mechanism's own name")
    }

    /// The library's registry entry for a message mechanism with an
    /// address (`ring-mpmc` is the `ring:` entry used with many senders);
    /// `None` for what has no address (pipe, the shared-memory turn-taking
    /// entries, signals).
    pub(super) fn registered(self) -> Option<&'static Mechanism> {
        match self {
            Mech::RingMpmc => ipckit::registry::find("ring"),
            Mech::Other(m) => Some(m),
            m => ipckit::registry::find(m.name()),
        }
    }

    /// How the kernel carries it (the notes' "kernel implementation"): the
    /// registry's words for what it has.
    pub(super) fn kernel(self) -> &'static str {
        if let Some(m) = self.registered() {
            return m.kernel;
        }
        match self {
            Mech::Pipe => "a pipe buffer (pipefs), 64 KiB unless resized",
            Mech::ShmSpin => "shared pages (memfd); no kernel on the data path",
            Mech::ShmFutex => "shared pages; futex(2) to sleep and wake",
            Mech::ShmSem => "shared pages; POSIX semaphores (futex underneath)",
            Mech::SysvSem => "shared pages; a System V semaphore set (semop(2) each time)",
            Mech::Signal => "the receiver's queue of pending realtime signals",
            Mech::SignalHandler => {
                "pending realtime signals; a handler writes each to a pipe (sigaction)"
            }
            m => unreachable!("{m} is in the registry"),
        }
    }

    /// Why it does well when it wins a category, in one line.
    pub(super) fn why_fast(self) -> &'static str {
        match self {
            Mech::Pipe | Mech::Fifo => {
                "the cheapest path through the kernel; one read returns many framed messages"
            }
            Mech::Unix | Mech::UnixDgram | Mech::UnixSeq => {
                "no network stack, one copy into the peer's socket"
            }
            Mech::Tcp | Mech::Udp => "the loopback network stack",
            Mech::Mq | Mech::SysvMq => "one system call per message, the kernel keeps the queue",
            Mech::ShmSpin | Mech::ShmFutex | Mech::ShmSem | Mech::SysvSem => {
                "the data never crosses the kernel; only the turn-taking does"
            }
            Mech::Signal | Mech::SignalHandler => "a signal carries only 4 bytes",
            Mech::Ring | Mech::RingMpmc => {
                "one copy in, one copy out, and no system call while both sides are busy"
            }
            Mech::Other(m) => m.kernel,
        }
    }

    /// The wait strategy as it really is for this mechanism: shm-spin
    /// always busy-polls, whatever `--wait` says.
    pub(super) fn wait_name(self, wait: WaitStrategy) -> String {
        match self {
            Mech::ShmSpin => "spin (always)".into(),
            _ => wait.to_string(),
        }
    }

    /// The notes' comparison columns: data abstraction and participants
    /// (the registry's words for what it has), and the direction as the
    /// bench uses it.
    pub(super) fn traits(self) -> (&'static str, &'static str, &'static str) {
        let direction = match self {
            Mech::Pipe => "one-way (2 pipes here)",
            Mech::Fifo => "one-way (2 FIFOs here)",
            Mech::Unix | Mech::UnixDgram | Mech::UnixSeq | Mech::Tcp | Mech::Udp => "two-way",
            Mech::Mq => "one-way (2 queues here)",
            Mech::SysvMq => "two-way (1 queue, 2 types)",
            Mech::ShmSpin | Mech::ShmFutex | Mech::ShmSem | Mech::SysvSem => {
                "two-way (8 slots each way)"
            }
            Mech::Signal | Mech::SignalHandler => "two-way (sigqueue each way)",
            Mech::Ring | Mech::RingMpmc => "one-way (2 rings here)",
            Mech::Other(m) => match m.direction {
                ipckit::registry::Direction::TwoWay => "two-way",
                ipckit::registry::Direction::OneWay => "one-way (2 channels here)",
            },
        };
        if let Some(m) = self.registered() {
            return (m.data, m.participants, direction);
        }
        let (data, participants) = match self {
            Mech::Pipe => ("byte stream", "2 related processes"),
            Mech::ShmSpin => ("shared bytes + busy-waited flag", "processes mapping it"),
            Mech::ShmFutex => ("shared bytes + futex", "processes mapping it"),
            Mech::ShmSem => ("shared bytes + POSIX semaphores", "processes mapping it"),
            Mech::SysvSem => ("shared bytes + System V semaphores", "processes mapping it"),
            Mech::Signal => (
                "one 32-bit value (realtime signal)",
                "processes of the same user",
            ),
            Mech::SignalHandler => (
                "one 32-bit value (realtime signal, to a handler)",
                "processes of the same user",
            ),
            m => unreachable!("{m} is in the registry"),
        };
        (data, participants, direction)
    }

    /// The signal entries: a 4-byte value, their own protocol.
    pub(super) fn is_signal(self) -> bool {
        matches!(self, Mech::Signal | Mech::SignalHandler)
    }

    pub(super) fn is_ring(self) -> bool {
        matches!(self, Mech::Ring | Mech::RingMpmc)
    }

    /// Why this mechanism cannot carry `size`-byte messages, if it cannot.
    pub(super) fn cannot_carry(self, size: usize) -> Option<String> {
        match self {
            Mech::Udp => (size > UdpSocket::MAX_DATAGRAM).then(|| {
                format!(
                    "UDP carries at most {} bytes per datagram",
                    UdpSocket::MAX_DATAGRAM
                )
            }),
            Mech::SysvMq => {
                let max = ipckit::sysv::limits().map_or(0, |l| l.max_message_size);
                (size > max).then(|| {
                    format!(
                        "System V queues carry at most {max} bytes per message (msgmax, \
                         /proc/sys/kernel/msgmax)"
                    )
                })
            }
            _ => None,
        }
        .or_else(|| self.too_big_for_memory(size))
    }
}

impl fmt::Display for Mech {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Slots per ring for `size`-byte messages: enough to stream, at most about
/// 64 MiB of slots.
pub(super) fn ring_capacity(size: usize) -> usize {
    ((64 << 20) / (size + 64)).clamp(2, 256)
}

/// Memory available for new allocations (`MemAvailable`), in bytes.
pub(super) fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mechanism of the library's registry is measured, once under
    /// its own name (ring-mpmc is the ring used by many), and a name
    /// finds its mechanism again.
    #[test]
    fn every_registered_mechanism_is_measured() {
        for m in ipckit::registry::MECHANISMS {
            let named: Vec<_> = Mech::all()
                .iter()
                .filter(|b| b.name() == m.scheme)
                .collect();
            assert_eq!(named.len(), 1, "{}", m.scheme);
            assert_eq!(named[0].registered().map(|r| r.scheme), Some(m.scheme));
            assert_eq!(Mech::parse(m.scheme), Ok(*named[0]));
        }
        assert!(Mech::parse("carrier-pigeon")
            .unwrap_err()
            .contains("unix-dgram"));
    }

    /// What a mechanism new to the registry would be measured as: through
    /// its address, with the registry's words in the table.
    #[test]
    fn a_registry_mechanism_without_a_setup_goes_by_address() {
        let unix = ipckit::registry::find("unix").expect("unix is registered");
        let other = Mech::Other(unix);
        assert_eq!(other.name(), "unix");
        assert!(other.by_address().is_some());
        assert_eq!(other.kernel(), unix.kernel);
        assert_eq!(other.traits().0, unix.data);
        assert!(Mech::Pipe.by_address().is_none() && Mech::Ring.by_address().is_none());
    }
}
