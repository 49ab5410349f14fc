//! Errors of the message traits.
//!
//! Send errors hand the unsent message back (after crossbeam-channel), so a
//! caller never loses data to an error. Receive errors tell an empty channel
//! and a timeout apart from a peer that is gone. Everything else is the
//! underlying [`std::io::Error`], with a message that says what to do.
//!
//! errno values are classified here and nowhere else.

use std::fmt;
use std::io;

/// How an I/O failure affects a message operation.
pub(crate) enum Failure {
    /// The operation would block (`EAGAIN`).
    WouldBlock,
    /// The peer is gone: `EPIPE`, `ECONNRESET`, `ECONNREFUSED` (a datagram
    /// peer that closed), `ENOTCONN`, `ESHUTDOWN`.
    Disconnected,
    /// Anything else.
    Other(io::Error),
}

/// The one place where errno values become message-level outcomes.
pub(crate) fn classify(err: io::Error) -> Failure {
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Failure::WouldBlock,
        Some(
            libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN | libc::ESHUTDOWN,
        ) => Failure::Disconnected,
        _ if err.kind() == io::ErrorKind::WouldBlock => Failure::WouldBlock,
        _ => Failure::Other(err),
    }
}

/// A message larger than the receiver's limit, refused before anything was
/// allocated for it. Carried inside an [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`]; see [`MessageTooLarge::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTooLarge {
    /// The length the peer announced, the datagram's real length, or for a
    /// line, how far the receiver read without finding its end.
    pub len: u64,
    /// The limit in force (`max_message_size`).
    pub max: usize,
    /// What was too large.
    pub unit: Unit,
}

/// What a [`MessageTooLarge`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A length-prefixed frame on a byte stream: its header announced the
    /// length (a peer that does not speak the framing looks like this).
    Frame,
    /// A line ([`crate::frame::Framing::Lines`]): no newline within the
    /// limit.
    Line,
    /// A datagram or a queue message.
    Message,
}

impl MessageTooLarge {
    /// Finds a `MessageTooLarge` inside an I/O error, if that is what it is.
    pub fn find(err: &io::Error) -> Option<&MessageTooLarge> {
        err.get_ref()?.downcast_ref()
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (len, max) = (self.len, self.max);
        match self.unit {
            Unit::Frame => write!(
                f,
                "incoming message of {len} bytes exceeds the limit of {max} bytes; raise it with \
                 set_max_message_size, or check that the peer speaks ipckit framing (a 4-byte \
                 little-endian length, then the payload)"
            ),
            Unit::Line => write!(
                f,
                "incoming line is longer than the limit of {max} bytes (no newline in the first \
                 {len}); raise it with set_max_message_size, or check that the peer ends each \
                 message with a newline"
            ),
            Unit::Message => write!(
                f,
                "incoming message of {len} bytes exceeds the limit of {max} bytes; raise it with \
                 set_max_message_size"
            ),
        }
    }
}

impl std::error::Error for MessageTooLarge {}

macro_rules! send_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $kind:ident, $text:literal),* $(,)? }) => {
        $(#[$doc])*
        pub enum $name<M> {
            $($(#[$vdoc])* $variant(M),)*
            /// Another I/O error; the message was not sent.
            Io(io::Error, M),
        }

        impl<M> $name<M> {
            /// The message that was not sent.
            pub fn into_inner(self) -> M {
                match self {
                    $($name::$variant(m) => m,)*
                    $name::Io(_, m) => m,
                }
            }

            /// Replaces the carried message, keeping the kind of failure.
            pub fn map<N>(self, f: impl FnOnce(M) -> N) -> $name<N> {
                match self {
                    $($name::$variant(m) => $name::$variant(f(m)),)*
                    $name::Io(e, m) => $name::Io(e, f(m)),
                }
            }
        }

        impl<M> fmt::Debug for $name<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($name), "::", stringify!($variant), "(..)")),)*
                    $name::Io(e, _) => write!(f, concat!(stringify!($name), "::Io({:?}, ..)"), e),
                }
            }
        }

        impl<M> fmt::Display for $name<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str($text),)*
                    $name::Io(e, _) => write!(f, "sending failed: {e}"),
                }
            }
        }

        impl<M> std::error::Error for $name<M> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Io(e, _) => Some(e),
                    _ => None,
                }
            }
        }

        impl<M> From<$name<M>> for io::Error {
            fn from(e: $name<M>) -> io::Error {
                match e {
                    $name::Io(e, _) => e,
                    other => {
                        let text = other.to_string();
                        let kind = match other {
                            $($name::$variant { .. } => io::ErrorKind::$kind,)*
                            _ => io::ErrorKind::Other,
                        };
                        io::Error::new(kind, text)
                    }
                }
            }
        }
    };
}

macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $kind:ident, $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// Another I/O error, such as a refused oversized message or a
            /// peer that closed in the middle of one.
            Io(io::Error),
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant => f.write_str($text),)*
                    $name::Io(e) => write!(f, "receiving failed: {e}"),
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Io(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl From<$name> for io::Error {
            fn from(e: $name) -> io::Error {
                match e {
                    $name::Io(e) => e,
                    other => {
                        let text = other.to_string();
                        let kind = match other {
                            $($name::$variant { .. } => io::ErrorKind::$kind,)*
                            _ => io::ErrorKind::Other,
                        };
                        io::Error::new(kind, text)
                    }
                }
            }
        }
    };
}

send_error! {
    /// Error of a blocking send; the message is handed back.
    SendError {
        /// The receiving side is gone.
        Disconnected => BrokenPipe, "the peer is gone: no process has the receiving end open any more",
    }
}

send_error! {
    /// Error of a non-blocking send; the message is handed back.
    TrySendError {
        /// The channel cannot take the message now without blocking.
        Full => WouldBlock, "the channel is full: the message was not sent",
        /// The receiving side is gone.
        Disconnected => BrokenPipe, "the peer is gone: no process has the receiving end open any more",
    }
}

send_error! {
    /// Error of a send with a timeout; the message is handed back.
    SendTimeoutError {
        /// The timeout passed before the channel could take the message.
        Timeout => TimedOut, "timed out before the message could be sent",
        /// The receiving side is gone.
        Disconnected => BrokenPipe, "the peer is gone: no process has the receiving end open any more",
    }
}

recv_error! {
    /// Error of a blocking receive.
    RecvError {
        /// The sending side is gone and nothing is left to read.
        Disconnected => BrokenPipe, "the peer is gone: the sending end was closed and nothing is left to read",
    }
}

recv_error! {
    /// Error of a non-blocking receive.
    TryRecvError {
        /// No message is waiting.
        Empty => WouldBlock, "no message is waiting: the channel is empty",
        /// The sending side is gone and nothing is left to read.
        Disconnected => BrokenPipe, "the peer is gone: the sending end was closed and nothing is left to read",
    }
}

recv_error! {
    /// Error of a receive with a timeout.
    RecvTimeoutError {
        /// The timeout passed before a message arrived.
        Timeout => TimedOut, "timed out waiting for a message",
        /// The sending side is gone and nothing is left to read.
        Disconnected => BrokenPipe, "the peer is gone: the sending end was closed and nothing is left to read",
    }
}

impl SendTimeoutError<()> {
    /// The error of a send that had no deadline, with `msg` handed back.
    /// (A timeout cannot happen then; if it did, it is reported as an I/O
    /// error rather than a panic.)
    pub(crate) fn without_deadline<M>(self, msg: M) -> SendError<M> {
        match self {
            SendTimeoutError::Disconnected(()) => SendError::Disconnected(msg),
            SendTimeoutError::Io(e, ()) => SendError::Io(e, msg),
            SendTimeoutError::Timeout(()) => SendError::Io(
                io::Error::new(io::ErrorKind::TimedOut, "unexpected timeout"),
                msg,
            ),
        }
    }
}

impl RecvTimeoutError {
    /// The error of a receive that had no deadline.
    pub(crate) fn without_deadline(self) -> RecvError {
        match self {
            RecvTimeoutError::Disconnected => RecvError::Disconnected,
            RecvTimeoutError::Io(e) => RecvError::Io(e),
            RecvTimeoutError::Timeout => RecvError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "unexpected timeout",
            )),
        }
    }
}
