//! The RPC binder wire format of AOSP's libbinder (`RpcWireFormat.h`,
//! `RpcState.cpp`, `RpcSession.cpp`, `RpcServer.cpp`), protocol version 1
//! (Android 14 and 15; version 0 replies are understood too).
//!
//! All integers little-endian; every structure is a fixed size:
//!
//! | structure | bytes | fields |
//! |---|---:|---|
//! | `RpcConnectionHeader` | 16 | `u32 version, u8 options, u8 fdMode, u8 reserved[8], u16 sessionIdSize` |
//! | `RpcNewSessionResponse` | 8 | `u32 version, u8 reserved[4]` |
//! | `RpcOutgoingConnectionInit` | 8 | `"cci\0"`, 4 reserved |
//! | `RpcWireHeader` | 16 | `u32 command, u32 bodySize, u32 reserved[2]` |
//! | `RpcWireTransaction` | 40 | `u64 address, u32 code, u32 flags, u64 asyncNumber, u32 parcelDataSize, u32 reserved[3]` |
//! | `RpcWireReply` | 20 | `i32 status, u32 parcelDataSize, u32 reserved[3]` (version 0: the status only) |
//! | `RpcDecStrong` | 16 | `u64 address, u32 amount, u32 reserved` |
//!
//! A transaction's or reply's body is its structure, the parcel's bytes,
//! then the object table (`u32` offsets of the descriptors in the
//! parcel), whose descriptors travel with the message as `SCM_RIGHTS`.
//! There is no magic and no resynchronisation: a frame this side cannot
//! parse ends the connection.

use super::status::{Error, Result};

/// The newest protocol version spoken here (`RPC_WIRE_PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: u32 = 1;

/// `RPC_WIRE_PROTOCOL_VERSION_EXPERIMENTAL`: accepted and answered with
/// [`PROTOCOL_VERSION`].
pub(crate) const PROTOCOL_VERSION_EXPERIMENTAL: u32 = 0xF000_0000;

/// Size of a session id (`RpcSession::kSessionIdBytes`).
pub const SESSION_ID_LEN: usize = 32;

/// `RPC_CONNECTION_OPTION_INCOMING`: the connection carries calls from
/// the server to the client.
pub(crate) const OPTION_INCOMING: u8 = 1;

/// `FileDescriptorTransportMode::NONE` / `UNIX`.
pub(crate) const FD_MODE_NONE: u8 = 0;
pub(crate) const FD_MODE_UNIX: u8 = 1;

pub(crate) const CONNECTION_HEADER_LEN: usize = 16;
pub(crate) const NEW_SESSION_RESPONSE_LEN: usize = 8;
pub(crate) const CONNECTION_INIT: [u8; 8] = *b"cci\0\0\0\0\0";
pub(crate) const WIRE_HEADER_LEN: usize = 16;
pub(crate) const TRANSACTION_LEN: usize = 40;
pub(crate) const REPLY_LEN: usize = 20;
pub(crate) const DEC_STRONG_LEN: usize = 16;

/// `RPC_COMMAND_*`.
pub(crate) const COMMAND_TRANSACT: u32 = 0;
pub(crate) const COMMAND_REPLY: u32 = 1;
pub(crate) const COMMAND_DEC_STRONG: u32 = 2;

/// `RPC_SPECIAL_TRANSACT_*`: codes of transactions to address 0.
pub(crate) const SPECIAL_GET_ROOT: u32 = 0;
pub(crate) const SPECIAL_GET_MAX_THREADS: u32 = 1;
pub(crate) const SPECIAL_GET_SESSION_ID: u32 = 2;

/// ipckit's own special transactions (see `forward.rs`), far from
/// libbinder's codes: libbinder and rsbinder answer them
/// `UNKNOWN_TRANSACTION`, which is how a session learns its peer is not
/// ipckit.
///
/// `HELLO`: the client says it is ipckit; a reply says the server is.
pub(crate) const SPECIAL_IPK_HELLO: u32 = 0x4950_4B01;
/// `RESOLVE(u64 address)`: a receiver asks the sender of a forwarded
/// reference where the object lives; reply `String8 home, byte[] ticket`.
pub(crate) const SPECIAL_IPK_RESOLVE: u32 = 0x4950_4B02;
/// `MINT(u64 address, i32 pid, u32 uid)`: the sender asks the object's
/// process for a ticket for that receiver; reply as `RESOLVE`'s.
pub(crate) const SPECIAL_IPK_MINT: u32 = 0x4950_4B03;
/// `REDEEM(byte[] ticket)`: the receiver, connected to the object's
/// process, trades the ticket for the object; reply the object.
pub(crate) const SPECIAL_IPK_REDEEM: u32 = 0x4950_4B04;

/// `RPC_WIRE_ADDRESS_OPTION_*`.
pub(crate) const ADDRESS_CREATED: u32 = 1;
pub(crate) const ADDRESS_FOR_SERVER: u32 = 1 << 1;
/// ipckit's option: the address names a reference to a third process's
/// object, to be resolved with `RESOLVE` (only sent to ipckit peers).
pub(crate) const ADDRESS_FORWARD: u32 = 1 << 31;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The options half of an address.
pub(crate) fn address_options(address: u64) -> u32 {
    address as u32
}

/// An address made by one side: `options | id << 32`.
pub(crate) fn make_address(id: u32, for_server: bool) -> u64 {
    let options = ADDRESS_CREATED | if for_server { ADDRESS_FOR_SERVER } else { 0 };
    options as u64 | (id as u64) << 32
}

/// `RpcConnectionHeader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionHeader {
    pub(crate) version: u32,
    pub(crate) options: u8,
    pub(crate) fd_mode: u8,
    pub(crate) session_id_len: u16,
}

impl ConnectionHeader {
    pub(crate) fn encode(&self) -> [u8; CONNECTION_HEADER_LEN] {
        let mut b = [0u8; CONNECTION_HEADER_LEN];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4] = self.options;
        b[5] = self.fd_mode;
        b[14..16].copy_from_slice(&self.session_id_len.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; CONNECTION_HEADER_LEN]) -> Self {
        ConnectionHeader {
            version: u32_at(b, 0),
            options: b[4],
            fd_mode: b[5],
            session_id_len: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// `RpcNewSessionResponse`.
pub(crate) fn encode_new_session_response(version: u32) -> [u8; NEW_SESSION_RESPONSE_LEN] {
    let mut b = [0u8; NEW_SESSION_RESPONSE_LEN];
    b[0..4].copy_from_slice(&version.to_le_bytes());
    b
}

pub(crate) fn decode_new_session_response(b: &[u8; NEW_SESSION_RESPONSE_LEN]) -> u32 {
    u32_at(b, 0)
}

/// `RpcWireHeader`.
pub(crate) fn encode_header(command: u32, body: usize) -> Result<[u8; WIRE_HEADER_LEN]> {
    let body = u32::try_from(body).map_err(|_| Error::bad("message too large for the wire"))?;
    let mut b = [0u8; WIRE_HEADER_LEN];
    b[0..4].copy_from_slice(&command.to_le_bytes());
    b[4..8].copy_from_slice(&body.to_le_bytes());
    Ok(b)
}

/// `(command, bodySize)` of an `RpcWireHeader`.
pub(crate) fn decode_header(b: &[u8; WIRE_HEADER_LEN]) -> (u32, u32) {
    (u32_at(b, 0), u32_at(b, 4))
}

/// An `RpcWireTransaction` without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transaction {
    pub(crate) address: u64,
    pub(crate) code: u32,
    pub(crate) flags: u32,
    pub(crate) async_number: u64,
    pub(crate) parcel_len: u32,
}

impl Transaction {
    pub(crate) fn encode(&self) -> [u8; TRANSACTION_LEN] {
        let mut b = [0u8; TRANSACTION_LEN];
        b[0..8].copy_from_slice(&self.address.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.async_number.to_le_bytes());
        b[24..28].copy_from_slice(&self.parcel_len.to_le_bytes());
        b
    }
}

/// The parts of a transaction or reply body: the parcel's bytes and the
/// object table, checked against each other.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Body<'a> {
    pub(crate) parcel: &'a [u8],
    pub(crate) objects: Vec<u32>,
}

/// Splits what follows a structure into the parcel (`parcel_len` bytes)
/// and the object table, checking every offset: ascending, 4-aligned,
/// with a whole object (8 bytes) inside the parcel.
fn split_body(rest: &[u8], parcel_len: u32) -> Result<Body<'_>> {
    let parcel_len = parcel_len as usize;
    if parcel_len > rest.len() {
        return Err(Error::bad(format!(
            "parcel size {parcel_len} larger than the {} bytes sent",
            rest.len()
        )));
    }
    let (parcel, table) = rest.split_at(parcel_len);
    if !table.len().is_multiple_of(4) {
        return Err(Error::bad(format!(
            "object table of {} bytes is not a whole number of offsets",
            table.len()
        )));
    }
    let mut objects = Vec::with_capacity(table.len() / 4);
    let mut min = 0usize;
    for c in table.chunks_exact(4) {
        let at = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        let a = at as usize;
        if a < min || !a.is_multiple_of(4) || a.checked_add(8).is_none_or(|e| e > parcel.len()) {
            return Err(Error::bad(format!(
                "object offset {at} out of order or outside the {}-byte parcel",
                parcel.len()
            )));
        }
        min = a + 8;
        objects.push(at);
    }
    Ok(Body { parcel, objects })
}

/// Parses a transaction body (`RpcWireTransaction`, parcel, table). In
/// protocol version 0 `parcelDataSize` was reserved: the parcel is the
/// rest of the body, with no object table.
pub(crate) fn decode_transaction(body: &[u8], version: u32) -> Result<(Transaction, Body<'_>)> {
    if body.len() < TRANSACTION_LEN {
        return Err(Error::bad(format!(
            "transaction of {} bytes, shorter than its {TRANSACTION_LEN}-byte header",
            body.len()
        )));
    }
    let t = Transaction {
        address: u64_at(body, 0),
        code: u32_at(body, 8),
        flags: u32_at(body, 12),
        async_number: u64_at(body, 16),
        parcel_len: u32_at(body, 24),
    };
    let rest = &body[TRANSACTION_LEN..];
    let b = if version == 0 {
        Body {
            parcel: rest,
            objects: Vec::new(),
        }
    } else {
        split_body(rest, t.parcel_len)?
    };
    Ok((t, b))
}

/// The size of `RpcWireReply` in protocol `version`.
pub(crate) fn reply_len(version: u32) -> usize {
    if version == 0 {
        4
    } else {
        REPLY_LEN
    }
}

/// An `RpcWireReply` for protocol `version`.
pub(crate) fn encode_reply(status: i32, parcel_len: u32, version: u32) -> ([u8; REPLY_LEN], usize) {
    let mut b = [0u8; REPLY_LEN];
    b[0..4].copy_from_slice(&status.to_le_bytes());
    b[4..8].copy_from_slice(&parcel_len.to_le_bytes());
    (b, reply_len(version))
}

/// Parses a reply body: the status and, when it is 0, the parcel.
pub(crate) fn decode_reply(body: &[u8], version: u32) -> Result<(i32, Body<'_>)> {
    let len = reply_len(version);
    if body.len() < len {
        return Err(Error::bad(format!(
            "reply of {} bytes, shorter than its {len}-byte header",
            body.len()
        )));
    }
    let status = u32_at(body, 0) as i32;
    let rest = &body[len..];
    let b = if version == 0 {
        Body {
            parcel: rest,
            objects: Vec::new(),
        }
    } else {
        split_body(rest, u32_at(body, 4))?
    };
    Ok((status, b))
}

/// An `RpcDecStrong`.
pub(crate) fn encode_dec_strong(address: u64, amount: u32) -> [u8; DEC_STRONG_LEN] {
    let mut b = [0u8; DEC_STRONG_LEN];
    b[0..8].copy_from_slice(&address.to_le_bytes());
    b[8..12].copy_from_slice(&amount.to_le_bytes());
    b
}

/// `(address, amount)` of an `RpcDecStrong` body.
pub(crate) fn decode_dec_strong(body: &[u8]) -> Result<(u64, u32)> {
    if body.len() != DEC_STRONG_LEN {
        return Err(Error::bad(format!(
            "dec-strong of {} bytes (expected {DEC_STRONG_LEN})",
            body.len()
        )));
    }
    Ok((u64_at(body, 0), u32_at(body, 8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_layout() {
        let h = ConnectionHeader {
            version: 1,
            options: OPTION_INCOMING,
            fd_mode: FD_MODE_UNIX,
            session_id_len: 32,
        };
        let b = h.encode();
        assert_eq!(b, [1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0]);
        assert_eq!(ConnectionHeader::decode(&b), h);
        let t = Transaction {
            address: make_address(5, true),
            code: 3,
            flags: 1,
            async_number: 9,
            parcel_len: 8,
        };
        let e = t.encode();
        // options (CREATED | FOR_SERVER) then the id, as RpcWireAddress.
        assert_eq!(&e[0..8], &[3, 0, 0, 0, 5, 0, 0, 0]);
        let mut body = e.to_vec();
        body.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&0u32.to_le_bytes());
        let (d, b) = decode_transaction(&body, 1).unwrap();
        assert_eq!(d, t);
        assert_eq!(b.objects, [0]);
        assert_eq!(
            encode_header(COMMAND_REPLY, 20).unwrap()[0..8],
            [1, 0, 0, 0, 20, 0, 0, 0]
        );
    }

    #[test]
    fn bodies_are_checked() {
        let t = Transaction {
            address: 0,
            code: 0,
            flags: 0,
            async_number: 0,
            parcel_len: 8,
        };
        let mut body = t.encode().to_vec();
        assert!(decode_transaction(&body, 1).is_err(), "parcel missing");
        body.extend_from_slice(&[0; 8]);
        assert!(decode_transaction(&body, 1).is_ok());
        body.extend_from_slice(&[4, 0, 0, 0]);
        assert!(
            decode_transaction(&body, 1).is_err(),
            "object runs past the parcel"
        );
        body.truncate(TRANSACTION_LEN + 8);
        body.extend_from_slice(&[1, 0]);
        assert!(decode_transaction(&body, 1).is_err(), "half an offset");
        assert!(decode_reply(&[0, 0], 1).is_err());
        // Version 0: the parcel is what follows, whatever the reserved word.
        let mut v0 = t.encode().to_vec();
        v0.extend_from_slice(&[5, 0, 0, 0, 6, 0, 0, 0, 1, 2, 3, 4]);
        let (_, b) = decode_transaction(&v0, 0).unwrap();
        assert_eq!(b.parcel.len(), 12);
        assert!(b.objects.is_empty());
        assert_eq!(decode_reply(&[7, 0, 0, 0], 0).unwrap().0, 7);
        assert!(decode_dec_strong(&[0; 15]).is_err());
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        // Miri interprets every step: fewer of them there.
        for _ in 0..if cfg!(miri) { 500 } else { 50_000 } {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 80) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (rng >> (i % 56)) as u8).collect();
            let _ = decode_transaction(&bytes, 1);
            let _ = decode_reply(&bytes, 1);
            let _ = decode_reply(&bytes, 0);
            let _ = decode_dec_strong(&bytes);
        }
    }
}
