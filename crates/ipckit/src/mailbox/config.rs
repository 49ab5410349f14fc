//! What a mailbox is made with ([`Config`]) and what the broker tells
//! about it ([`MailboxInfo`]).

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// When a message leaves a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Each message goes to one receiver and leaves when that receiver
    /// acknowledges it: the notes' mailbox, a queue many processes share.
    /// All receivers compete for the messages (receiver groups do not
    /// apply).
    #[default]
    WorkQueue,
    /// Every receiver (or receiver group) gets every message; a message
    /// leaves when all those that were receiving when it came have
    /// acknowledged it. A message sent while nobody receives is dropped
    /// (the send says so: [`Outcome::NoReceivers`](crate::mailbox::Outcome)).
    Interest,
    /// Messages stay until the mailbox's limits (count, bytes, age) push
    /// them out, acknowledged or not; a new receiver group starts from the
    /// oldest message kept (a log to replay).
    Limits,
}

/// What a send to a full mailbox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The sender waits for room (up to its timeout).
    #[default]
    Block,
    /// The send fails at once with `Full`.
    Fail,
    /// The oldest messages are discarded to make room.
    DropOldest,
}

macro_rules! words {
    ($ty:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        impl $ty {
            /// Every spelling, for help texts and errors.
            pub const WORDS: &'static [&'static str] = &[$($word),+];
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $word),+ })
            }
        }
        impl FromStr for $ty {
            type Err = io::Error;
            fn from_str(s: &str) -> io::Result<Self> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    _ => Err(invalid(format!(
                        "{s:?} is not one of {}", $ty::WORDS.join(", ")
                    ))),
                }
            }
        }
    };
}

words!(Retention { WorkQueue = "work-queue", Interest = "interest", Limits = "limits" });
words!(WhenFull { Block = "block", Fail = "fail", DropOldest = "drop-oldest" });

/// A mailbox's settings, fixed when it is created
/// ([`Client::create`](crate::mailbox::Client::create)).
///
/// ```
/// use ipckit::mailbox::{Config, Retention, WhenFull};
/// use std::time::Duration;
///
/// let config = Config {
///     retention: Retention::Interest,
///     max_msgs: Some(10_000),
///     when_full: WhenFull::DropOldest,
///     max_deliver: Some(5),
///     backoff: vec![Duration::from_millis(100), Duration::from_secs(1)],
///     ..Config::default()
/// };
/// assert_eq!(config.mode, 0o600);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// When messages leave (default: a work queue).
    pub retention: Retention,
    /// At most this many messages kept (default 1 000 000).
    pub max_msgs: Option<u64>,
    /// At most this many payload bytes kept (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Messages older than this are discarded (default: no limit).
    pub max_age: Option<Duration>,
    /// What a send to a full mailbox does (default: wait for room).
    pub when_full: WhenFull,
    /// Who may send (`w`) and receive (`r`), as a file's mode: owner,
    /// group, others (default 0600, the creating user only). The owner
    /// (and root) may also remove the mailbox.
    pub mode: u32,
    /// A delivered message not acknowledged within this time goes to
    /// another receiver (default 30 s).
    pub ack_wait: Duration,
    /// After this many deliveries without an acknowledgement the message
    /// goes to the dead-letter mailbox `dead.NAME` with the reason
    /// (default: no limit).
    pub max_deliver: Option<u32>,
    /// How long a message waits before it is delivered again after its
    /// first, second, … failed delivery (a negative acknowledgement or an
    /// expired ack wait); the last step repeats. Empty: at once.
    pub backoff: Vec<Duration>,
    /// A message id a sender gives is remembered this long, and a second
    /// send with the same id is confirmed without storing it again
    /// (default 2 minutes).
    pub dedup_window: Duration,
    /// Kept on disk by the broker, surviving its crash and restart.
    pub durable: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Retention::WorkQueue,
            max_msgs: Some(1_000_000),
            max_bytes: Some(64 << 20),
            max_age: None,
            when_full: WhenFull::Block,
            mode: 0o600,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            backoff: Vec::new(),
            dedup_window: Duration::from_secs(120),
            durable: false,
        }
    }
}

/// The longest backoff schedule a mailbox takes.
pub const MAX_BACKOFF_STEPS: usize = 32;

impl Config {
    /// Checks the settings (the broker checks them again).
    pub fn validate(&self) -> io::Result<()> {
        if self.mode & !0o777 != 0 {
            return Err(invalid(format!(
                "mode {:o} has bits beyond 0777 (r: receive, w: send, for owner, group, others)",
                self.mode
            )));
        }
        if self.max_msgs == Some(0) || self.max_bytes == Some(0) {
            return Err(invalid(
                "max_msgs and max_bytes must be at least 1 (None: no limit)".into(),
            ));
        }
        if self.ack_wait.is_zero() {
            return Err(invalid("ack_wait must be longer than 0".into()));
        }
        if self.max_deliver == Some(0) {
            return Err(invalid(
                "max_deliver must be at least 1 (None: no limit)".into(),
            ));
        }
        if self.backoff.len() > MAX_BACKOFF_STEPS {
            return Err(invalid(format!(
                "backoff has {} steps; at most {MAX_BACKOFF_STEPS} (the last one repeats)",
                self.backoff.len()
            )));
        }
        Ok(())
    }

    /// The wait before delivery number `delivered + 1`, after `delivered`
    /// failed ones.
    pub(crate) fn backoff_after(&self, delivered: u32) -> Duration {
        match self.backoff.len() {
            0 => Duration::ZERO,
            n => self.backoff[(delivered.max(1) as usize - 1).min(n - 1)],
        }
    }
}

/// A mailbox as the broker reports it ([`Client::stat`](crate::mailbox::Client::stat)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Its name.
    pub name: String,
    /// The user that owns it.
    pub owner: u32,
    /// The group whose members the mode's group bits apply to.
    pub group: u32,
    /// How it was made.
    pub config: Config,
    /// Messages in it (waiting, in flight, or kept for replay).
    pub depth: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Receivers attached.
    pub consumers: u32,
    /// Messages delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Senders waiting for room.
    pub blocked_senders: u32,
    /// Messages moved to the dead-letter mailbox so far.
    pub dead_letters: u64,
    /// Messages discarded so far (full with drop-oldest, too old, or no
    /// receivers with interest retention).
    pub discarded: u64,
    /// Messages stored so far.
    pub received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_backoff_repeats() {
        for w in Retention::WORDS {
            assert_eq!(w.parse::<Retention>().unwrap().to_string(), *w);
        }
        for w in WhenFull::WORDS {
            assert_eq!(w.parse::<WhenFull>().unwrap().to_string(), *w);
        }
        assert!("queue"
            .parse::<Retention>()
            .unwrap_err()
            .to_string()
            .contains("work-queue"));
        let c = Config {
            backoff: vec![Duration::from_millis(1), Duration::from_millis(5)],
            ..Config::default()
        };
        assert_eq!(c.backoff_after(1), Duration::from_millis(1));
        assert_eq!(c.backoff_after(2), Duration::from_millis(5));
        assert_eq!(c.backoff_after(9), Duration::from_millis(5));
        assert_eq!(Config::default().backoff_after(3), Duration::ZERO);
        assert!(Config {
            mode: 0o1777,
            ..Config::default()
        }
        .validate()
        .is_err());
        assert!(Config {
            max_deliver: Some(0),
            ..Config::default()
        }
        .validate()
        .is_err());
    }
}
