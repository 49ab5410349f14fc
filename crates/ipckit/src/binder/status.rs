//! Binder status codes and the error every binder operation returns.
//!
//! A transaction's outcome travels on the wire as libbinder's `status_t`
//! (`utils/Errors.h`): zero, a negated errno, or one of a few codes of its
//! own. [`Status`] names them; [`Error`] is a status with words saying
//! what happened and what to do, which is what the API returns.

use std::fmt;
use std::io;

/// A binder `status_t`, as carried in a reply (`RpcWireReply::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `UNKNOWN_ERROR`.
    UnknownError,
    /// `NO_MEMORY` (`-ENOMEM`): a size beyond the limits.
    NoMemory,
    /// `INVALID_OPERATION` (`-ENOSYS`).
    InvalidOperation,
    /// `BAD_VALUE` (`-EINVAL`): malformed data.
    BadValue,
    /// `BAD_TYPE`: the parcel holds something else at this position.
    BadType,
    /// `NAME_NOT_FOUND` (`-ENOENT`): no such service.
    NameNotFound,
    /// `PERMISSION_DENIED` (`-EPERM`).
    PermissionDenied,
    /// `NO_INIT` (`-ENODEV`).
    NoInit,
    /// `ALREADY_EXISTS` (`-EEXIST`).
    AlreadyExists,
    /// `DEAD_OBJECT` (`-EPIPE`): the process hosting the object is gone.
    DeadObject,
    /// `FAILED_TRANSACTION`: the transaction could not be delivered.
    FailedTransaction,
    /// `BAD_INDEX` (`-EOVERFLOW`).
    BadIndex,
    /// `NOT_ENOUGH_DATA` (`-ENODATA`): read past the end of a parcel.
    NotEnoughData,
    /// `WOULD_BLOCK` (`-EWOULDBLOCK`).
    WouldBlock,
    /// `TIMED_OUT` (`-ETIMEDOUT`).
    TimedOut,
    /// `UNKNOWN_TRANSACTION` (`-EBADMSG`): the object has no such code.
    UnknownTransaction,
    /// `FDS_NOT_ALLOWED`: descriptors where the session carries none.
    FdsNotAllowed,
    /// `UNEXPECTED_NULL`: a null where a value was required.
    UnexpectedNull,
    /// Any other code.
    Other(i32),
}

const STATUS_BASE: i32 = i32::MIN;

impl Status {
    /// The code on the wire.
    pub fn code(self) -> i32 {
        match self {
            Status::UnknownError => STATUS_BASE,
            Status::NoMemory => -libc::ENOMEM,
            Status::InvalidOperation => -libc::ENOSYS,
            Status::BadValue => -libc::EINVAL,
            Status::BadType => STATUS_BASE + 1,
            Status::NameNotFound => -libc::ENOENT,
            Status::PermissionDenied => -libc::EPERM,
            Status::NoInit => -libc::ENODEV,
            Status::AlreadyExists => -libc::EEXIST,
            Status::DeadObject => -libc::EPIPE,
            Status::FailedTransaction => STATUS_BASE + 2,
            Status::BadIndex => -libc::EOVERFLOW,
            Status::NotEnoughData => -libc::ENODATA,
            Status::WouldBlock => -libc::EWOULDBLOCK,
            Status::TimedOut => -libc::ETIMEDOUT,
            Status::UnknownTransaction => -libc::EBADMSG,
            Status::FdsNotAllowed => STATUS_BASE + 7,
            Status::UnexpectedNull => STATUS_BASE + 8,
            Status::Other(c) => c,
        }
    }

    /// The status a wire code stands for (`0`, success, is not a status:
    /// `None`).
    pub fn from_code(code: i32) -> Option<Status> {
        const ALL: [Status; 18] = [
            Status::UnknownError,
            Status::NoMemory,
            Status::InvalidOperation,
            Status::BadValue,
            Status::BadType,
            Status::NameNotFound,
            Status::PermissionDenied,
            Status::NoInit,
            Status::AlreadyExists,
            Status::DeadObject,
            Status::FailedTransaction,
            Status::BadIndex,
            Status::NotEnoughData,
            Status::WouldBlock,
            Status::TimedOut,
            Status::UnknownTransaction,
            Status::FdsNotAllowed,
            Status::UnexpectedNull,
        ];
        if code == 0 {
            return None;
        }
        Some(
            ALL.into_iter()
                .find(|s| s.code() == code)
                .unwrap_or(Status::Other(code)),
        )
    }

    fn name(self) -> &'static str {
        match self {
            Status::UnknownError => "UNKNOWN_ERROR",
            Status::NoMemory => "NO_MEMORY",
            Status::InvalidOperation => "INVALID_OPERATION",
            Status::BadValue => "BAD_VALUE",
            Status::BadType => "BAD_TYPE",
            Status::NameNotFound => "NAME_NOT_FOUND",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::NoInit => "NO_INIT",
            Status::AlreadyExists => "ALREADY_EXISTS",
            Status::DeadObject => "DEAD_OBJECT",
            Status::FailedTransaction => "FAILED_TRANSACTION",
            Status::BadIndex => "BAD_INDEX",
            Status::NotEnoughData => "NOT_ENOUGH_DATA",
            Status::WouldBlock => "WOULD_BLOCK",
            Status::TimedOut => "TIMED_OUT",
            Status::UnknownTransaction => "UNKNOWN_TRANSACTION",
            Status::FdsNotAllowed => "FDS_NOT_ALLOWED",
            Status::UnexpectedNull => "UNEXPECTED_NULL",
            Status::Other(_) => "status",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Other(c) => write!(f, "status {c}"),
            s => write!(f, "{} ({})", s.name(), s.code()),
        }
    }
}

/// What went wrong in a binder operation: a [`Status`] (what a peer
/// would be told) and a sentence for people.
#[derive(Debug)]
pub struct Error {
    status: Status,
    message: String,
    source: Option<io::Error>,
    service_specific: Option<i32>,
}

impl Error {
    /// An error of `status` saying `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
            source: None,
            service_specific: None,
        }
    }

    /// A service's own error code, sent as AIDL's `EX_SERVICE_SPECIFIC`
    /// exception ([`Parcel::write_service_specific_error`](super::Parcel::write_service_specific_error)).
    pub fn service_specific_error(error: i32, message: impl Into<String>) -> Self {
        let message = message.into();
        Error {
            status: Status::UnknownError,
            message: format!("{message} (service-specific error {error})"),
            source: None,
            service_specific: Some(error),
        }
    }

    /// The service's own error code, when the call failed with AIDL's
    /// service-specific exception ([`Parcel::read_exception`](super::Parcel::read_exception)).
    pub fn service_specific(&self) -> Option<i32> {
        self.service_specific
    }

    /// The status a peer is told (and the kind of failure).
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether the object's process is gone (`DEAD_OBJECT`): its
    /// references will never work again.
    pub fn is_dead(&self) -> bool {
        self.status == Status::DeadObject
    }

    pub(crate) fn io(e: io::Error, what: &str) -> Self {
        let status = match e.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionAborted => Status::DeadObject,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Status::TimedOut,
            io::ErrorKind::PermissionDenied => Status::PermissionDenied,
            io::ErrorKind::NotFound => Status::NameNotFound,
            _ => Status::FailedTransaction,
        };
        Error {
            status,
            message: format!("{what}: {e}"),
            source: Some(e),
            service_specific: None,
        }
    }

    pub(crate) fn dead(what: impl Into<String>) -> Self {
        Error::new(Status::DeadObject, what)
    }

    pub(crate) fn bad(what: impl Into<String>) -> Self {
        Error::new(Status::BadValue, what)
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = match status {
            Status::DeadObject => "the process hosting the object is gone".to_string(),
            Status::UnknownTransaction => "the object does not know this transaction code".into(),
            Status::PermissionDenied => "the peer refused the call (permission denied)".into(),
            s => format!("the call failed with {s}"),
        };
        Error::new(status, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.status {
            Status::DeadObject => io::ErrorKind::BrokenPipe,
            Status::TimedOut => io::ErrorKind::TimedOut,
            Status::PermissionDenied => io::ErrorKind::PermissionDenied,
            Status::NameNotFound => io::ErrorKind::NotFound,
            Status::BadValue | Status::BadType | Status::NotEnoughData => {
                io::ErrorKind::InvalidData
            }
            Status::AlreadyExists => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The result of a binder operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [-1, -2, -12, -22, -32, -74, i32::MIN, i32::MIN + 2, -999, 7] {
            let s = Status::from_code(code).unwrap();
            assert_eq!(s.code(), code);
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(-32), Some(Status::DeadObject));
        assert_eq!(Status::from_code(-74), Some(Status::UnknownTransaction));
    }
}
