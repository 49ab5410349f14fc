//! Parcels: the data of a transaction, laid out as libbinder lays it out.
//!
//! A [`Parcel`] is a buffer of 4-byte-aligned little-endian values plus
//! the objects that cannot travel as bytes: file descriptors (sent with
//! `SCM_RIGHTS`) and object references ([`Object`]). Values are written in
//! order and read back in the same order; every read checks that the
//! bytes are there and well formed, so a parcel from a hostile peer gives
//! an [`Error`], never a panic or an out-of-bounds read, and no length
//! read from it allocates more than the parcel holds.
//!
//! The layout is libbinder's RPC parcel (`Parcel.cpp`), so AIDL-generated
//! code of other implementations reads what this writes:
//!
//! | value | bytes |
//! |---|---|
//! | `bool`, `i8`, `u8`, `u16`, `i32`, `u32` | `i32` |
//! | `i64`, `u64`, `f64` | 8 bytes |
//! | `String`/`&str` (AIDL `String`) | `i32` UTF-16 length (`-1`: null), UTF-16 units, a zero unit, padding |
//! | [`Parcel::write_string8`] | `i32` byte length, the bytes, a zero byte, padding |
//! | `Vec<u8>` (AIDL `byte[]`) | `i32` length (`-1`: null), the bytes, padding |
//! | `Vec<T>` | `i32` length (`-1`: null), each element |
//! | a [`parcelable!`](crate::parcelable) struct | `i32` 1 (present), `i32` size, its fields |
//! | [`Object`] | `i32` 1 and the `u64` address (`i32` 0: null) |
//! | descriptor | `i32` 2 (`TYPE_NATIVE_FILE_DESCRIPTOR`), `i32` index into the descriptors sent |
//!
//! # Example
//!
//! ```
//! use ipckit::binder::Parcel;
//!
//! let mut p = Parcel::new();
//! p.write(&42i32)?;
//! p.write("héllo")?;
//! p.write(&vec![1u8, 2, 3])?;
//! p.set_position(0);
//! assert_eq!(p.read::<i32>()?, 42);
//! assert_eq!(p.read::<String>()?, "héllo");
//! assert_eq!(p.read::<Vec<u8>>()?, [1, 2, 3]);
//! assert!(p.read::<i32>().is_err()); // nothing left
//! # Ok::<(), ipckit::binder::Error>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::object::Object;
use super::session::Session;
use super::status::{Error, Result, Status};

/// The default largest parcel, in bytes, that is sent or accepted: the
/// kernel binder driver's per-process buffer (1 MiB).
pub const DEFAULT_MAX_PARCEL: usize = 1 << 20;

/// The most descriptors one transaction carries (`SCM_MAX_FD`, less the
/// ones libbinder keeps for itself).
pub const MAX_FDS: usize = 253;

/// `RpcFields::TYPE_NATIVE_FILE_DESCRIPTOR`.
const TYPE_FD: i32 = 2;

/// libbinder's stability levels (`Stability::Level`), written after each
/// object reference: a null one is `UNDECLARED`; this side's own objects
/// are `SYSTEM`, what libbinder outside a vendor build marks its own
/// with (and requires before calling one); a proxy is written back with
/// the level it came with.
pub(crate) const STABILITY_UNDECLARED: i32 = 0;
const STABILITY_VENDOR: i32 = 0b00_0011;
pub(crate) const STABILITY_SYSTEM: i32 = 0b00_1100;
const STABILITY_VINTF: i32 = 0b11_1111;

/// AIDL's exception codes (`binder::Status::Exception`), written first in
/// an AIDL reply: success.
pub const EX_NONE: i32 = 0;
/// AIDL: the caller may not do this.
pub const EX_SECURITY: i32 = -1;
/// AIDL: a bad argument.
pub const EX_ILLEGAL_ARGUMENT: i32 = -3;
/// AIDL: a null where a value was required.
pub const EX_NULL_POINTER: i32 = -4;
/// AIDL: not now, in this state.
pub const EX_ILLEGAL_STATE: i32 = -5;
/// AIDL: not supported.
pub const EX_UNSUPPORTED_OPERATION: i32 = -7;
/// AIDL: a service-specific error code follows.
pub const EX_SERVICE_SPECIFIC: i32 = -8;
/// AIDL: a parcelable describing the exception follows.
const EX_PARCELABLE: i32 = -9;
/// Java's "fat" reply header before a successful result.
const EX_HAS_REPLY_HEADER: i32 = -128;

/// Transaction data: values, descriptors and object references.
#[derive(Default)]
pub struct Parcel {
    data: Vec<u8>,
    pos: usize,
    /// Descriptors in index order (the ones to send, or the ones received).
    fds: Vec<OwnedFd>,
    /// Positions of descriptor objects (the wire's object table), ascending.
    fd_positions: Vec<u32>,
    /// References written here, by the position of their `i32` marker;
    /// their addresses are filled in when the parcel is sent.
    objects: Vec<(u32, Object)>,
    /// The session a received parcel came from: addresses in it are that
    /// session's.
    session: Option<Arc<Session>>,
    /// Reads stop here (the end of the structured parcelable being read);
    /// `None`: at the end of the data.
    limit: Option<usize>,
}

impl fmt::Debug for Parcel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parcel")
            .field("len", &self.data.len())
            .field("position", &self.pos)
            .field("fds", &self.fds.len())
            .field("objects", &self.objects.len())
            .finish()
    }
}

fn short(what: &str, need: usize, have: usize) -> Error {
    Error::new(
        Status::NotEnoughData,
        format!("parcel too short: reading {what} needs {need} bytes, {have} left"),
    )
}

/// Rounds up to the parcel's 4-byte alignment.
fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl Parcel {
    /// An empty parcel.
    pub fn new() -> Self {
        Parcel::default()
    }

    /// A parcel holding `data` (no descriptors, no objects), for example
    /// bytes captured from the wire; read it from the start.
    pub fn from_bytes(data: impl Into<Vec<u8>>) -> Self {
        Parcel {
            data: data.into(),
            ..Parcel::default()
        }
    }

    pub(crate) fn received(
        data: Vec<u8>,
        fd_positions: Vec<u32>,
        fds: Vec<OwnedFd>,
        session: Arc<Session>,
    ) -> Self {
        Parcel {
            data,
            pos: 0,
            fds,
            fd_positions,
            objects: Vec::new(),
            session: Some(session),
            limit: None,
        }
    }

    /// The bytes written (or received).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the parcel holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The read position.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves the read position (clamped to the length).
    pub fn set_position(&mut self, pos: usize) {
        self.pos = pos.min(self.data.len());
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.end() - self.pos
    }

    fn end(&self) -> usize {
        self.limit
            .map_or(self.data.len(), |l| l.min(self.data.len()))
    }

    /// Number of descriptors carried.
    pub fn fd_count(&self) -> usize {
        self.fds.len()
    }

    pub(crate) fn fd_positions(&self) -> &[u32] {
        &self.fd_positions
    }

    pub(crate) fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// The references written, to be given addresses when sent.
    pub(crate) fn take_objects(&mut self) -> Vec<(u32, Object)> {
        std::mem::take(&mut self.objects)
    }

    pub(crate) fn patch_u64(&mut self, at: usize, v: u64) {
        self.data[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    // ---- writing ----

    fn put(&mut self, bytes: &[u8]) {
        let padded = pad4(self.data.len() + bytes.len());
        if self.data.capacity() < padded {
            // Doubling from 8 bytes would reallocate five times on the way
            // to a typical call's size: start at 256.
            self.data.reserve(padded.max(256) - self.data.len());
        }
        self.data.extend_from_slice(bytes);
        self.data.resize(padded, 0);
    }

    /// Writes any [`Serialize`] value.
    pub fn write<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(self)
    }

    /// Writes an `i32`.
    pub fn write_i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }

    /// Writes a `u32`.
    pub fn write_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    /// Writes an `i64`.
    pub fn write_i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }

    /// Writes a `u64`.
    pub fn write_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    /// Writes a UTF-16 string (AIDL `String`, libbinder `writeString16`);
    /// `None` writes a null string.
    pub fn write_string16(&mut self, s: Option<&str>) -> Result<()> {
        let Some(s) = s else {
            self.write_i32(-1);
            return Ok(());
        };
        let units: Vec<u16> = s.encode_utf16().collect();
        let n = i32::try_from(units.len()).map_err(|_| Error::bad("string too long"))?;
        self.write_i32(n);
        let mut bytes = Vec::with_capacity((units.len() + 1) * 2);
        for u in units.iter().chain(std::iter::once(&0)) {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        self.put(&bytes);
        Ok(())
    }

    /// Writes an 8-bit string (libbinder `writeString8`): its byte length,
    /// the bytes and a zero byte.
    pub fn write_string8(&mut self, s: &str) -> Result<()> {
        let n = i32::try_from(s.len()).map_err(|_| Error::bad("string too long"))?;
        self.write_i32(n);
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.put(&bytes);
        Ok(())
    }

    /// Writes a byte array (AIDL `byte[]`, libbinder `writeByteVector`);
    /// `None` writes a null array.
    pub fn write_byte_array(&mut self, b: Option<&[u8]>) -> Result<()> {
        let Some(b) = b else {
            self.write_i32(-1);
            return Ok(());
        };
        let n = i32::try_from(b.len()).map_err(|_| Error::bad("byte array too long"))?;
        self.write_i32(n);
        self.put(b);
        Ok(())
    }

    /// Writes an AIDL interface token (`writeInterfaceToken`): on RPC
    /// binder, the interface's descriptor as a String16.
    pub fn write_interface_token(&mut self, descriptor: &str) -> Result<()> {
        self.write_string16(Some(descriptor))
    }

    /// Reads an AIDL interface token and checks it names `descriptor`
    /// (`enforceInterface`); otherwise `BAD_TYPE`.
    pub fn enforce_interface(&mut self, descriptor: &str) -> Result<()> {
        match self.read_string16()? {
            Some(d) if d == descriptor => Ok(()),
            got => Err(Error::new(
                Status::BadType,
                format!("a call for interface {got:?} on {descriptor:?}"),
            )),
        }
    }

    /// Writes AIDL's reply header for success (`EX_NONE`), before the
    /// return value (`binder::Status::writeToParcel`).
    pub fn write_no_exception(&mut self) {
        self.write_i32(EX_NONE);
    }

    /// Writes an AIDL exception reply (`binder::Status::writeToParcel`):
    /// the code (an `EX_*` constant), the message and an empty stack
    /// trace header. For [`EX_SERVICE_SPECIFIC`] the error code written
    /// is 0; [`write_service_specific_error`](Self::write_service_specific_error)
    /// chooses it.
    pub fn write_exception(&mut self, code: i32, message: &str) -> Result<()> {
        self.write_i32(code);
        self.write_string16(Some(message))?;
        self.write_i32(0);
        if code == EX_SERVICE_SPECIFIC {
            self.write_i32(0);
        }
        Ok(())
    }

    /// Writes an AIDL service-specific exception with its error code
    /// (`binder::Status::fromServiceSpecificError`), which the caller
    /// reads back with [`Error::service_specific`].
    pub fn write_service_specific_error(&mut self, error: i32, message: &str) -> Result<()> {
        self.write_i32(EX_SERVICE_SPECIFIC);
        self.write_string16(Some(message))?;
        self.write_i32(0);
        self.write_i32(error);
        Ok(())
    }

    /// Reads AIDL's reply header: `Ok` for `EX_NONE` (the return value
    /// follows), else the exception as an [`Error`] with its message
    /// (`EX_SECURITY` is `PERMISSION_DENIED`, `EX_ILLEGAL_ARGUMENT`
    /// `BAD_VALUE`, `EX_ILLEGAL_STATE` `INVALID_OPERATION`; a
    /// service-specific error keeps its code, [`Error::service_specific`]).
    /// Headers a Java peer adds are skipped, their sizes checked
    /// (`binder::Status::readFromParcel`).
    pub fn read_exception(&mut self) -> Result<()> {
        let mut code = self.read_i32()?;
        if code == EX_HAS_REPLY_HEADER {
            self.skip_sized("a reply header")?;
            code = EX_NONE;
        }
        if code == EX_NONE {
            return Ok(());
        }
        let message = self.read_string16()?.unwrap_or_default();
        self.skip_sized("a remote stack trace")?;
        let status = match code {
            EX_SECURITY => Status::PermissionDenied,
            EX_ILLEGAL_ARGUMENT => Status::BadValue,
            EX_ILLEGAL_STATE => Status::InvalidOperation,
            EX_UNSUPPORTED_OPERATION => Status::UnknownTransaction,
            EX_NULL_POINTER => Status::UnexpectedNull,
            _ => Status::UnknownError,
        };
        if code == EX_SERVICE_SPECIFIC {
            let error = self.read_i32()?;
            return Err(Error::service_specific_error(error, message));
        }
        if code == EX_PARCELABLE {
            self.skip_sized("an exception parcelable")?;
        }
        Err(Error::new(status, message))
    }

    /// Skips a block whose size (its own 4 bytes included) comes first.
    fn skip_sized(&mut self, what: &str) -> Result<()> {
        let start = self.position();
        let size = self.read_i32()?;
        match usize::try_from(size) {
            Ok(n) if n <= self.remaining() + 4 => {
                if n != 0 {
                    self.set_position(start + n.max(4));
                }
                Ok(())
            }
            _ => Err(Error::bad(format!(
                "{what} of {size} bytes where {} are left",
                self.remaining() + 4
            ))),
        }
    }

    /// Writes a reference to an object (local or remote); `None` writes a
    /// null reference. The address is assigned when the parcel is sent.
    /// Layout (libbinder `flattenBinder` on RPC): 1 and the 64-bit
    /// address, or 0; then the object's stability level.
    pub fn write_object(&mut self, o: Option<&Object>) {
        match o {
            None => {
                self.write_i32(0);
                self.write_i32(STABILITY_UNDECLARED);
            }
            Some(o) => {
                let at = self.data.len() as u32;
                self.write_i32(1);
                self.write_u64(0);
                self.write_i32(o.stability());
                self.objects.push((at, o.clone()));
            }
        }
    }

    /// Writes a file descriptor (libbinder `writeFileDescriptor`): a
    /// duplicate travels with the transaction, and arrives as a new
    /// descriptor of the receiving process.
    pub fn write_fd(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let owned = fd
            .try_clone_to_owned()
            .map_err(|e| Error::io(e, "cannot duplicate the descriptor to send"))?;
        self.write_owned_fd(owned)
    }

    /// Writes a file descriptor, handing it over (closed here once sent).
    pub fn write_owned_fd(&mut self, fd: OwnedFd) -> Result<()> {
        if self.fds.len() >= MAX_FDS {
            return Err(Error::bad(format!(
                "a parcel carries at most {MAX_FDS} file descriptors"
            )));
        }
        let at = u32::try_from(self.data.len()).map_err(|_| Error::bad("parcel too large"))?;
        self.fd_positions.push(at);
        self.write_i32(TYPE_FD);
        self.write_i32(self.fds.len() as i32);
        self.fds.push(fd);
        Ok(())
    }

    /// Writes a structured parcelable's body (AIDL layout): its size, then
    /// what `body` writes. Used by [`parcelable!`](crate::parcelable).
    pub fn write_structured(&mut self, body: impl FnOnce(&mut Parcel) -> Result<()>) -> Result<()> {
        let start = self.data.len();
        self.write_i32(0);
        body(self)?;
        let size = i32::try_from(self.data.len() - start)
            .map_err(|_| Error::bad("parcelable too large"))?;
        self.data[start..start + 4].copy_from_slice(&size.to_le_bytes());
        Ok(())
    }

    // ---- reading ----

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let padded = pad4(n);
        if padded > self.remaining() || padded < n {
            return Err(short(what, padded, self.remaining()));
        }
        let start = self.pos;
        self.pos += padded;
        Ok(&self.data[start..start + n])
    }

    /// Reads any [`Deserialize`] value.
    pub fn read<T: Deserialize>(&mut self) -> Result<T> {
        T::deserialize(self)
    }

    /// Reads an `i32`.
    pub fn read_i32(&mut self) -> Result<i32> {
        let b = self.take(4, "an i32")?;
        Ok(i32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Reads a `u32`.
    pub fn read_u32(&mut self) -> Result<u32> {
        Ok(self.read_i32()? as u32)
    }

    /// Reads an `i64`.
    pub fn read_i64(&mut self) -> Result<i64> {
        let b = self.take(8, "an i64")?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads a `u64`.
    pub fn read_u64(&mut self) -> Result<u64> {
        Ok(self.read_i64()? as u64)
    }

    /// Reads a length: `-1` is null (`None`); others must be non-negative
    /// and, at `unit` bytes each, fit in what is left of the parcel.
    fn read_len(&mut self, unit: usize, what: &str) -> Result<Option<usize>> {
        let n = self.read_i32()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n)
            .map_err(|_| Error::bad(format!("{what} with a negative length ({n})")))?;
        match n.checked_mul(unit) {
            Some(bytes) if bytes <= self.remaining() => Ok(Some(n)),
            _ => Err(short(what, n.saturating_mul(unit), self.remaining())),
        }
    }

    /// Reads a UTF-16 string (`None`: a null string).
    pub fn read_string16(&mut self) -> Result<Option<String>> {
        let Some(n) = self.read_len(2, "a string")? else {
            return Ok(None);
        };
        let b = self.take((n + 1) * 2, "a string")?;
        if b[n * 2..] != [0, 0] {
            return Err(Error::bad("a string without its terminating zero"));
        }
        let units = b[..n * 2]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Some)
            .map_err(|_| Error::bad("a string that is not valid UTF-16"))
    }

    /// Reads an 8-bit string written by [`write_string8`](Self::write_string8).
    pub fn read_string8(&mut self) -> Result<String> {
        let n = self
            .read_len(1, "a string8")?
            .ok_or_else(|| Error::new(Status::UnexpectedNull, "a null string8"))?;
        let b = self.take(n + 1, "a string8")?;
        if b[n] != 0 {
            return Err(Error::bad("a string8 without its terminating zero"));
        }
        String::from_utf8(b[..n].to_vec()).map_err(|_| Error::bad("a string8 that is not UTF-8"))
    }

    /// Reads a byte array (`None`: a null array).
    pub fn read_byte_array(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(n) = self.read_len(1, "a byte array")? else {
            return Ok(None);
        };
        Ok(Some(self.take(n, "a byte array")?.to_vec()))
    }

    /// Reads an object reference (`None`: a null reference). A reference
    /// received from another process becomes a proxy that calls it. A
    /// reference to a third process's object (forwarded by an ipckit
    /// peer) is fetched from that process first: this call then waits
    /// for two round trips and, the first time, a connection to it.
    pub fn read_object(&mut self) -> Result<Option<Object>> {
        let at = self.pos as u32;
        let present = self.read_i32()?;
        if present & 1 == 0 {
            match self.read_i32()? {
                STABILITY_UNDECLARED => return Ok(None),
                s => {
                    return Err(Error::new(
                        Status::BadType,
                        format!("a null object reference with stability {s} (not 0)"),
                    ))
                }
            }
        }
        let address = self.read_u64()?;
        let stability = self.read_i32()?;
        if !matches!(
            stability,
            STABILITY_UNDECLARED | STABILITY_VENDOR | STABILITY_SYSTEM | STABILITY_VINTF
        ) {
            return Err(Error::new(
                Status::BadType,
                format!("an object reference with unknown stability level {stability}"),
            ));
        }
        // A reference written into this very parcel.
        if let Some((_, o)) = self.objects.iter().find(|(p, _)| *p == at) {
            return Ok(Some(o.clone()));
        }
        let Some(session) = self.session.clone() else {
            return Err(Error::bad(
                "an object reference in a parcel that came from no session",
            ));
        };
        let object = session.object_entering(address, stability)?;
        if super::wire::address_options(address) & super::wire::ADDRESS_FORWARD != 0 {
            // A third process's object: fetched from that process.
            return session.resolve_forward(object).map(Some);
        }
        Ok(Some(object))
    }

    /// Reads a file descriptor: a duplicate of the one received, owned by
    /// the caller (the parcel keeps its own until dropped).
    pub fn read_fd(&mut self) -> Result<OwnedFd> {
        let at = self.pos;
        if self
            .fd_positions
            .binary_search(&u32::try_from(at).unwrap_or(u32::MAX))
            .is_err()
        {
            return Err(Error::new(
                Status::BadType,
                format!("no file descriptor at parcel offset {at}"),
            ));
        }
        let ty = self.read_i32()?;
        if ty != TYPE_FD {
            return Err(Error::new(
                Status::BadType,
                format!("object type {ty} at parcel offset {at} is not a file descriptor"),
            ));
        }
        let index = self.read_i32()?;
        let fd = usize::try_from(index)
            .ok()
            .and_then(|i| self.fds.get(i))
            .ok_or_else(|| {
                Error::bad(format!(
                    "file descriptor index {index} out of range ({} received)",
                    self.fds.len()
                ))
            })?;
        fd.try_clone()
            .map_err(|e| Error::io(e, "cannot duplicate a received descriptor"))
    }

    /// Reads a structured parcelable's body (AIDL layout): its size, then
    /// what `body` reads; the position ends after the size given, whatever
    /// `body` read (a newer peer's extra fields are skipped). `body` gets
    /// the end offset, for [`read_field`](Self::read_field).
    pub fn read_structured<T>(
        &mut self,
        body: impl FnOnce(&mut Parcel, usize) -> Result<T>,
    ) -> Result<T> {
        let start = self.pos;
        let left = self.remaining();
        let size = self.read_i32()?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s >= 4 && *s <= left)
            .ok_or_else(|| {
                Error::bad(format!(
                    "parcelable size {size} out of range ({left} bytes left)"
                ))
            })?;
        let end = start + size;
        // Fields read inside must not run past the parcelable's end.
        let outer = self.limit.replace(end);
        let r = body(self, end);
        self.limit = outer;
        let v = r?;
        self.pos = end;
        Ok(v)
    }

    /// Reads one field of a structured parcelable ending at `end`: a field
    /// an older peer did not send takes its [`Deserialize::absent`] value.
    pub fn read_field<T: Deserialize>(&mut self, end: usize, name: &str) -> Result<T> {
        if self.pos >= end {
            return T::absent().ok_or_else(|| {
                Error::bad(format!(
                    "parcelable field `{name}` is missing (sent by an older version?)"
                ))
            });
        }
        T::deserialize(self)
    }
}

/// A value that can be written into a parcel.
pub trait Serialize {
    /// Writes `self`.
    fn serialize(&self, p: &mut Parcel) -> Result<()>;
}

/// A value that can be read from a parcel.
pub trait Deserialize: Sized {
    /// Reads a value.
    fn deserialize(p: &mut Parcel) -> Result<Self>;

    /// The value of a parcelable field that an older peer did not send;
    /// `None`: the field is required.
    fn absent() -> Option<Self> {
        None
    }
}

/// A value that may be null on the wire, as `Option<Self>`.
pub trait SerializeOption: Serialize {
    /// Writes `Some` value or the type's null.
    fn serialize_option(v: Option<&Self>, p: &mut Parcel) -> Result<()>;
}

/// Reads what [`SerializeOption`] writes.
pub trait DeserializeOption: Deserialize {
    /// Reads a value or the type's null.
    fn deserialize_option(p: &mut Parcel) -> Result<Option<Self>>;
}

/// How a slice of this type is written (element by element unless the
/// type has a denser form, as bytes do).
pub trait SerializeArray: Serialize + Sized {
    /// Writes `items` (`None`: a null array).
    fn serialize_array(items: Option<&[Self]>, p: &mut Parcel) -> Result<()> {
        let Some(items) = items else {
            p.write_i32(-1);
            return Ok(());
        };
        let n = i32::try_from(items.len()).map_err(|_| Error::bad("array too long"))?;
        p.write_i32(n);
        items.iter().try_for_each(|x| x.serialize(p))
    }
}

/// How an array of this type is read.
pub trait DeserializeArray: Deserialize {
    /// Reads an array (`None`: a null array).
    fn deserialize_array(p: &mut Parcel) -> Result<Option<Vec<Self>>> {
        // Every element takes at least 4 bytes: a length beyond what is
        // left is refused before anything is allocated.
        let Some(n) = p.read_len(4, "an array")? else {
            return Ok(None);
        };
        (0..n)
            .map(|_| Self::deserialize(p))
            .collect::<Result<_>>()
            .map(Some)
    }
}

macro_rules! int_as_i32 {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize(&self, p: &mut Parcel) -> Result<()> {
                p.write_i32(*self as i32);
                Ok(())
            }
        }
        impl Deserialize for $t {
            fn deserialize(p: &mut Parcel) -> Result<Self> {
                let v = p.read_i32()?;
                <$t>::try_from(v).map_err(|_| {
                    Error::bad(format!("{v} does not fit in {}", stringify!($t)))
                })
            }
            fn absent() -> Option<Self> {
                Some(0)
            }
        }
    )*};
}
int_as_i32!(i8, i16, u16, i32);

impl Serialize for u8 {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_i32(*self as i8 as i32);
        Ok(())
    }
}
impl Deserialize for u8 {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        Ok(p.read_i32()? as u8)
    }
    fn absent() -> Option<Self> {
        Some(0)
    }
}

impl Serialize for u32 {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_u32(*self);
        Ok(())
    }
}
impl Deserialize for u32 {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        p.read_u32()
    }
    fn absent() -> Option<Self> {
        Some(0)
    }
}

impl Serialize for bool {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_i32(*self as i32);
        Ok(())
    }
}
impl Deserialize for bool {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        Ok(p.read_i32()? != 0)
    }
    fn absent() -> Option<Self> {
        Some(false)
    }
}

macro_rules! wide {
    ($($t:ty => $w:ident, $r:ident, $as:ty);*) => {$(
        impl Serialize for $t {
            fn serialize(&self, p: &mut Parcel) -> Result<()> {
                p.$w(*self as $as);
                Ok(())
            }
        }
        impl Deserialize for $t {
            fn deserialize(p: &mut Parcel) -> Result<Self> {
                Ok(p.$r()? as $t)
            }
            fn absent() -> Option<Self> {
                Some(0 as $t)
            }
        }
    )*};
}
wide!(i64 => write_i64, read_i64, i64; u64 => write_u64, read_u64, u64);

impl Serialize for f32 {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_u32(self.to_bits());
        Ok(())
    }
}
impl Deserialize for f32 {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        Ok(f32::from_bits(p.read_u32()?))
    }
    fn absent() -> Option<Self> {
        Some(0.0)
    }
}
impl Serialize for f64 {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_u64(self.to_bits());
        Ok(())
    }
}
impl Deserialize for f64 {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        Ok(f64::from_bits(p.read_u64()?))
    }
    fn absent() -> Option<Self> {
        Some(0.0)
    }
}

impl Serialize for str {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_string16(Some(self))
    }
}
impl Serialize for String {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_string16(Some(self))
    }
}
impl SerializeOption for String {
    fn serialize_option(v: Option<&Self>, p: &mut Parcel) -> Result<()> {
        p.write_string16(v.map(|s| s.as_str()))
    }
}
impl Deserialize for String {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        p.read_string16()?
            .ok_or_else(|| Error::new(Status::UnexpectedNull, "a null string"))
    }
    fn absent() -> Option<Self> {
        Some(String::new())
    }
}
impl DeserializeOption for String {
    fn deserialize_option(p: &mut Parcel) -> Result<Option<Self>> {
        p.read_string16()
    }
}

macro_rules! arrays_of {
    ($($t:ty),*) => {$(
        impl SerializeArray for $t {}
        impl DeserializeArray for $t {}
    )*};
}
arrays_of!(i16, u16, i32, u32, i64, u64, f32, f64, bool, String);

impl SerializeArray for u8 {
    fn serialize_array(items: Option<&[Self]>, p: &mut Parcel) -> Result<()> {
        p.write_byte_array(items)
    }
}
impl DeserializeArray for u8 {
    fn deserialize_array(p: &mut Parcel) -> Result<Option<Vec<Self>>> {
        p.read_byte_array()
    }
}
impl SerializeArray for i8 {
    fn serialize_array(items: Option<&[Self]>, p: &mut Parcel) -> Result<()> {
        let bytes: Option<Vec<u8>> = items.map(|i| i.iter().map(|b| *b as u8).collect());
        p.write_byte_array(bytes.as_deref())
    }
}
impl DeserializeArray for i8 {
    fn deserialize_array(p: &mut Parcel) -> Result<Option<Vec<Self>>> {
        Ok(p.read_byte_array()?
            .map(|v| v.into_iter().map(|b| b as i8).collect()))
    }
}

impl<T: SerializeArray> Serialize for [T] {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        T::serialize_array(Some(self), p)
    }
}
impl<T: SerializeArray> Serialize for Vec<T> {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        T::serialize_array(Some(self), p)
    }
}
impl<T: SerializeArray> SerializeOption for Vec<T> {
    fn serialize_option(v: Option<&Self>, p: &mut Parcel) -> Result<()> {
        T::serialize_array(v.map(|v| v.as_slice()), p)
    }
}
impl<T: DeserializeArray> Deserialize for Vec<T> {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        T::deserialize_array(p)?.ok_or_else(|| Error::new(Status::UnexpectedNull, "a null array"))
    }
    fn absent() -> Option<Self> {
        Some(Vec::new())
    }
}
impl<T: DeserializeArray> DeserializeOption for Vec<T> {
    fn deserialize_option(p: &mut Parcel) -> Result<Option<Self>> {
        T::deserialize_array(p)
    }
}

impl<T: SerializeOption> Serialize for Option<T> {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        T::serialize_option(self.as_ref(), p)
    }
}
impl<T: DeserializeOption> Deserialize for Option<T> {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        T::deserialize_option(p)
    }
    fn absent() -> Option<Self> {
        Some(None)
    }
}

impl<T: Serialize + ?Sized> Serialize for &T {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        (**self).serialize(p)
    }
}

impl Serialize for Object {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_object(Some(self));
        Ok(())
    }
}
impl SerializeOption for Object {
    fn serialize_option(v: Option<&Self>, p: &mut Parcel) -> Result<()> {
        p.write_object(v);
        Ok(())
    }
}
impl Deserialize for Object {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        p.read_object()?
            .ok_or_else(|| Error::new(Status::UnexpectedNull, "a null object reference"))
    }
}
impl DeserializeOption for Object {
    fn deserialize_option(p: &mut Parcel) -> Result<Option<Self>> {
        p.read_object()
    }
}
impl SerializeArray for Object {}
impl DeserializeArray for Object {}

/// A file descriptor as AIDL's `ParcelFileDescriptor` writes it: a
/// present marker, a zero (no comm channel), then the descriptor.
#[derive(Debug)]
pub struct ParcelFileDescriptor(pub OwnedFd);

impl AsFd for ParcelFileDescriptor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Serialize for ParcelFileDescriptor {
    fn serialize(&self, p: &mut Parcel) -> Result<()> {
        p.write_i32(1);
        p.write_i32(0);
        p.write_fd(self.0.as_fd())
    }
}
impl SerializeOption for ParcelFileDescriptor {
    fn serialize_option(v: Option<&Self>, p: &mut Parcel) -> Result<()> {
        match v {
            Some(v) => v.serialize(p),
            None => {
                p.write_i32(0);
                Ok(())
            }
        }
    }
}
impl Deserialize for ParcelFileDescriptor {
    fn deserialize(p: &mut Parcel) -> Result<Self> {
        Self::deserialize_option(p)?
            .ok_or_else(|| Error::new(Status::UnexpectedNull, "a null ParcelFileDescriptor"))
    }
}
impl DeserializeOption for ParcelFileDescriptor {
    fn deserialize_option(p: &mut Parcel) -> Result<Option<Self>> {
        if p.read_i32()? == 0 {
            return Ok(None);
        }
        let has_comm = p.read_i32()?;
        let fd = p.read_fd()?;
        if has_comm != 0 {
            // A comm channel follows; this side does not use it.
            drop(p.read_fd()?);
        }
        Ok(Some(ParcelFileDescriptor(fd)))
    }
}

/// Declares a struct that travels in parcels as an AIDL structured
/// parcelable: a present marker, its size, then its fields in order.
/// A reader skips fields it does not know (sent by a newer peer) and
/// gives fields an older peer did not send their [`Deserialize::absent`]
/// value (zero, empty, `None`), as AIDL does.
///
/// ```
/// ipckit::parcelable! {
///     /// A point on screen.
///     #[derive(Debug, PartialEq)]
///     pub struct Point {
///         pub x: i32,
///         pub y: i32,
///         pub label: Option<String>,
///     }
/// }
///
/// let mut p = ipckit::binder::Parcel::new();
/// let a = Point { x: 1, y: -2, label: Some("a".into()) };
/// p.write(&a)?;
/// p.set_position(0);
/// assert_eq!(p.read::<Point>()?, a);
/// # Ok::<(), ipckit::binder::Error>(())
/// ```
#[macro_export]
macro_rules! parcelable {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::binder::Serialize for $name {
            fn serialize(&self, p: &mut $crate::binder::Parcel) -> $crate::binder::Result<()> {
                p.write_i32(1);
                p.write_structured(|p| {
                    $( $crate::binder::Serialize::serialize(&self.$field, p)?; )*
                    Ok(())
                })
            }
        }

        impl $crate::binder::SerializeOption for $name {
            fn serialize_option(
                v: Option<&Self>,
                p: &mut $crate::binder::Parcel,
            ) -> $crate::binder::Result<()> {
                match v {
                    Some(v) => $crate::binder::Serialize::serialize(v, p),
                    None => {
                        p.write_i32(0);
                        Ok(())
                    }
                }
            }
        }

        impl $crate::binder::Deserialize for $name {
            fn deserialize(p: &mut $crate::binder::Parcel) -> $crate::binder::Result<Self> {
                <Self as $crate::binder::DeserializeOption>::deserialize_option(p)?.ok_or_else(|| {
                    $crate::binder::Error::new(
                        $crate::binder::Status::UnexpectedNull,
                        concat!("a null ", stringify!($name)),
                    )
                })
            }
        }

        impl $crate::binder::DeserializeOption for $name {
            fn deserialize_option(
                p: &mut $crate::binder::Parcel,
            ) -> $crate::binder::Result<Option<Self>> {
                if p.read_i32()? == 0 {
                    return Ok(None);
                }
                p.read_structured(|_p, _end| {
                    Ok(Some($name {
                        $( $field: _p.read_field(_end, stringify!($field))?, )*
                    }))
                })
            }
        }

        impl $crate::binder::SerializeArray for $name {}
        impl $crate::binder::DeserializeArray for $name {}
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::parcelable! {
        #[derive(Debug, PartialEq, Clone)]
        struct Inner { a: i64, name: String }
    }

    crate::parcelable! {
        #[derive(Debug, PartialEq, Clone)]
        struct Outer { id: i32, inner: Inner, more: Vec<Inner>, maybe: Option<Inner>, bytes: Vec<u8> }
    }

    crate::parcelable! {
        #[derive(Debug, PartialEq)]
        struct OuterV1 { id: i32 }
    }

    crate::parcelable! {
        #[derive(Debug, PartialEq)]
        struct OuterV3 { id: i32, inner: Inner, more: Vec<Inner>, maybe: Option<Inner>, bytes: Vec<u8>, extra: Option<String>, count: u32 }
    }

    fn sample() -> Outer {
        Outer {
            id: 7,
            inner: Inner {
                a: -5,
                name: "ü".into(),
            },
            more: vec![Inner {
                a: 1,
                name: String::new(),
            }],
            maybe: None,
            bytes: vec![9, 8, 7, 6, 5],
        }
    }

    #[test]
    fn layout_matches_libbinder() {
        let mut p = Parcel::new();
        p.write("ab").unwrap();
        // len 2, 'a' 0 'b' 0, NUL unit, padded to 4.
        assert_eq!(p.as_bytes(), [2, 0, 0, 0, b'a', 0, b'b', 0, 0, 0, 0, 0]);
        let mut p = Parcel::new();
        p.write(&vec![1u8, 2, 3, 4, 5]).unwrap();
        assert_eq!(p.as_bytes(), [5, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0]);
        let mut p = Parcel::new();
        p.write_string8("abc").unwrap();
        assert_eq!(p.as_bytes(), [3, 0, 0, 0, b'a', b'b', b'c', 0]);
        let mut p = Parcel::new();
        p.write(&Option::<String>::None).unwrap();
        p.write(&true).unwrap();
        p.write(&-1i64).unwrap();
        assert_eq!(
            p.as_bytes(),
            [255, 255, 255, 255, 1, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
    }

    #[test]
    fn aidl_exceptions_as_libbinder_reads_them() {
        // A service-specific error keeps its code.
        let mut p = Parcel::new();
        p.write_service_specific_error(42, "no such thing").unwrap();
        p.set_position(0);
        let e = p.read_exception().unwrap_err();
        assert_eq!(e.service_specific(), Some(42));
        assert!(e.to_string().contains("no such thing"), "{e}");
        // Java's fat reply header is skipped: success, the value follows.
        let mut p = Parcel::new();
        p.write_i32(EX_HAS_REPLY_HEADER);
        p.write_i32(12);
        p.write_i32(7);
        p.write_i32(8);
        p.write_i32(99);
        p.set_position(0);
        p.read_exception().unwrap();
        assert_eq!(p.read_i32().unwrap(), 99);
        // A stack trace header is skipped before the error code.
        let mut p = Parcel::new();
        p.write_i32(EX_SERVICE_SPECIFIC);
        p.write_string16(Some("m")).unwrap();
        p.write_i32(8);
        p.write_i32(-1);
        p.write_i32(5);
        p.set_position(0);
        assert_eq!(p.read_exception().unwrap_err().service_specific(), Some(5));
        // A header claiming more than the parcel holds is refused.
        for size in [-4, 1000] {
            let mut p = Parcel::new();
            p.write_i32(EX_SECURITY);
            p.write_string16(Some("m")).unwrap();
            p.write_i32(size);
            p.set_position(0);
            let e = p.read_exception().unwrap_err();
            assert_eq!(e.status(), Status::BadValue, "{e}");
        }
        // The others map to statuses.
        let mut p = Parcel::new();
        p.write_exception(EX_SECURITY, "not you").unwrap();
        p.set_position(0);
        let e = p.read_exception().unwrap_err();
        assert_eq!(
            (e.status(), e.service_specific()),
            (Status::PermissionDenied, None)
        );
    }

    #[test]
    fn parcelables_round_trip_and_evolve() {
        let mut p = Parcel::new();
        p.write(&sample()).unwrap();
        p.write(&5i32).unwrap();
        p.set_position(0);
        assert_eq!(p.read::<Outer>().unwrap(), sample());
        assert_eq!(p.read::<i32>().unwrap(), 5);
        // A newer reader of an older writer: extra fields take defaults.
        p.set_position(0);
        let v3: OuterV3 = p.read().unwrap();
        assert_eq!(v3.extra, None);
        assert_eq!(v3.count, 0);
        assert_eq!(p.read::<i32>().unwrap(), 5);
        // An older reader of a newer writer: unknown fields skipped.
        p.set_position(0);
        assert_eq!(p.read::<OuterV1>().unwrap(), OuterV1 { id: 7 });
        assert_eq!(p.read::<i32>().unwrap(), 5);
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        for bytes in [
            vec![0xff, 0xff, 0xff, 0x7f],
            vec![0xfe, 0xff, 0xff, 0xff],
            vec![0x10, 0, 0, 0, 1, 2],
        ] {
            for read in [
                |p: &mut Parcel| p.read::<String>().map(drop),
                |p: &mut Parcel| p.read::<Vec<u8>>().map(drop),
                |p: &mut Parcel| p.read::<Vec<i64>>().map(drop),
                |p: &mut Parcel| p.read_string8().map(drop),
                |p: &mut Parcel| p.read::<Outer>().map(drop),
            ] {
                let mut p = Parcel::from_bytes(bytes.clone());
                assert!(read(&mut p).is_err());
            }
        }
    }

    /// Every prefix and every single-byte change of a valid parcel reads
    /// as a value or an error, never a panic.
    #[test]
    fn mutated_parcels_never_panic() {
        let mut p = Parcel::new();
        p.write(&sample()).unwrap();
        p.write(&vec![sample(), sample()]).unwrap();
        let good = p.as_bytes().to_vec();
        for cut in 0..good.len() {
            let mut p = Parcel::from_bytes(good[..cut].to_vec());
            let _ = p.read::<Outer>();
            let _ = p.read::<Vec<Outer>>();
        }
        let mut rng = 0x9e3779b97f4a7c15u64;
        // Miri interprets every step: fewer of them there.
        for _ in 0..if cfg!(miri) { 300 } else { 20_000 } {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut bytes = good.clone();
            let at = (rng as usize) % bytes.len();
            bytes[at] = (rng >> 32) as u8;
            let mut p = Parcel::from_bytes(bytes);
            let _ = p.read::<Outer>();
            let _ = p.read::<Vec<Outer>>();
            let _ = p.read_object();
            let _ = p.read_fd();
        }
    }

    #[test]
    fn fds_are_checked_against_the_object_table() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut p = Parcel::new();
        p.write_i32(2);
        p.write_i32(0);
        p.write_fd(a.as_fd()).unwrap();
        p.set_position(0);
        // Looks like a descriptor, but is not in the object table.
        assert_eq!(p.read_fd().unwrap_err().status(), Status::BadType);
        p.set_position(8);
        assert!(p.read_fd().is_ok());
    }
}
