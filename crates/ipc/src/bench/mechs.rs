//! The mechanisms `ipc bench` measures: their names, what they are (the
//! notes' comparison table) and what each needs.

use std::fmt;

use ipckit::socket::inet::UdpSocket;
use ipckit::WaitStrategy;

use super::shm::{self, Turns};

/// The mechanisms `ipc bench` knows, in the notes' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    Ring,
    RingMpmc,
}

impl Mech {
    pub(super) const ALL: [Mech; 16] = [
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
        Mech::Ring,
        Mech::RingMpmc,
    ];

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
            Mech::Ring => "ring",
            Mech::RingMpmc => "ring-mpmc",
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
        *Mech::ALL
            .iter()
            .find(|m| m.name() == name)
            .expect("a mechanism's own name")
    }

    /// How the kernel carries it (the notes' "kernel implementation").
    pub(super) fn kernel(self) -> &'static str {
        match self {
            Mech::Pipe => "a pipe buffer (pipefs), 64 KiB unless resized",
            Mech::Fifo => "the same pipe buffer, found by a path",
            Mech::Unix => "AF_UNIX socket buffers, copied once into the peer's queue",
            Mech::UnixDgram => "AF_UNIX datagrams queued on the receiving socket",
            Mech::UnixSeq => "AF_UNIX packets on a connection",
            Mech::Tcp => "the TCP/IP stack over loopback",
            Mech::Udp => "the UDP/IP stack over loopback; dropped when buffers fill",
            Mech::Mq => "the mqueue filesystem; messages kept in kernel memory",
            Mech::SysvMq => "a System V msg_queue in kernel memory (per IPC namespace)",
            Mech::ShmSpin => "shared pages (memfd); no kernel on the data path",
            Mech::ShmFutex => "shared pages; futex(2) to sleep and wake",
            Mech::ShmSem => "shared pages; POSIX semaphores (futex underneath)",
            Mech::SysvSem => "shared pages; a System V semaphore set (semop(2) each time)",
            Mech::Signal => "the receiver's queue of pending realtime signals",
            Mech::Ring | Mech::RingMpmc => {
                "shared pages (memfd); ipckit's ring, futex only to sleep and wake"
            }
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
            Mech::Signal => "a signal carries only 4 bytes",
            Mech::Ring | Mech::RingMpmc => {
                "one copy in, one copy out, and no system call while both sides are busy"
            }
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

    pub(super) fn traits(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Mech::Pipe => (
                "byte stream",
                "2 related processes",
                "one-way (2 pipes here)",
            ),
            Mech::Fifo => (
                "byte stream",
                "any processes, by path",
                "one-way (2 FIFOs here)",
            ),
            Mech::Unix => ("byte stream", "2 processes", "two-way"),
            Mech::UnixDgram => ("datagram", "many processes", "two-way"),
            Mech::UnixSeq => ("datagram, connected", "2 processes", "two-way"),
            Mech::Tcp => ("byte stream", "2 processes, any host", "two-way"),
            Mech::Udp => ("datagram, lossy", "many processes, any host", "two-way"),
            Mech::Mq => (
                "message + priority",
                "many processes, by name",
                "one-way (2 queues here)",
            ),
            Mech::SysvMq => (
                "message + type",
                "many processes, by key",
                "two-way (1 queue, 2 types)",
            ),
            Mech::ShmSpin => (
                "shared bytes + busy-waited flag",
                "processes mapping it",
                "two-way (8 slots each way)",
            ),
            Mech::ShmFutex => (
                "shared bytes + futex",
                "processes mapping it",
                "two-way (8 slots each way)",
            ),
            Mech::ShmSem => (
                "shared bytes + POSIX semaphores",
                "processes mapping it",
                "two-way (8 slots each way)",
            ),
            Mech::SysvSem => (
                "shared bytes + System V semaphores",
                "processes mapping it",
                "two-way (8 slots each way)",
            ),
            Mech::Signal => (
                "one 32-bit value (realtime signal)",
                "processes of the same user",
                "two-way (sigqueue each way)",
            ),
            Mech::Ring => (
                "message (slots in shared memory)",
                "2 processes (one sender, one receiver per ring)",
                "one-way (2 rings here)",
            ),
            Mech::RingMpmc => (
                "message (slots in shared memory)",
                "many senders and receivers",
                "one-way (2 rings here)",
            ),
        }
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
