//! How `ipc recv` prints a message: `--format text|hex|json|raw` and `-0`.

use std::io::{self, Write};

use base64::Engine as _;

/// The output formats of `ipc recv --format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The message as it is, unless that could be mistaken for something
    /// else: then quoted as bash's $'…' would (see --help).
    #[default]
    Text,
    /// Two lowercase hex digits per byte.
    Hex,
    /// One JSON object per message (see --help).
    Json,
    /// The bytes as they are, whatever they are.
    Raw,
}

/// What is known about a message besides its bytes.
#[derive(Debug, Default, Clone)]
pub struct Meta {
    /// A POSIX queue message's priority.
    pub priority: Option<u32>,
    /// A System V queue message's type.
    pub mtype: Option<i64>,
    /// The sending process, where the kernel tells (connected Unix sockets).
    pub from: Option<ipckit::socket::unix::PeerCredentials>,
    /// Which connection it came on (1 for the first), on listeners that
    /// take connections one after another.
    pub conn: Option<u64>,
    /// What a mailbox delivery adds.
    pub mailbox: Option<MailboxMeta>,
}

/// A mailbox message's particulars (`--format json`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MailboxMeta {
    /// The mailbox it came from.
    pub mailbox: String,
    /// Its sequence number there.
    pub seq: u64,
    /// The id its sender gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
    /// Why it is a dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
}

/// Writes messages in one format, each followed by the terminator.
#[derive(Debug, Clone, Copy)]
pub struct Writer {
    pub format: Format,
    /// b'\n', or b'\0' with -0.
    pub end: u8,
    /// With --show-priority / --show-type: the tag first, then a tab
    /// (text, hex and raw; json always has them).
    pub tag: bool,
}

impl Writer {
    /// Formats `msg` into `out` (cleared first).
    pub fn format(&self, out: &mut Vec<u8>, msg: &[u8], meta: &Meta) {
        out.clear();
        if self.format == Format::Json {
            json(out, msg, meta);
            out.push(self.end);
            return;
        }
        if self.tag {
            if let Some(t) = meta.priority.map(i64::from).or(meta.mtype) {
                let _ = write!(out, "{t}\t");
            }
        }
        match self.format {
            Format::Raw => out.extend_from_slice(msg),
            Format::Hex => {
                for b in msg {
                    let _ = write!(out, "{b:02x}");
                }
            }
            Format::Text => text(out, msg, self.end),
            Format::Json => unreachable!("handled above"),
        }
        out.push(self.end);
    }

    /// Formats and writes one message.
    pub fn write(
        &self,
        out: &mut impl Write,
        scratch: &mut Vec<u8>,
        msg: &[u8],
        meta: &Meta,
    ) -> io::Result<()> {
        self.format(scratch, msg, meta);
        out.write_all(scratch)?;
        out.flush()
    }
}

/// The message as it is when it is printable UTF-8 (tabs allowed; with -0,
/// newlines too) and cannot be mistaken for a quoted one; otherwise quoted
/// as bash's `$'…'`, which gives back the same bytes when pasted into bash.
fn text(out: &mut Vec<u8>, msg: &[u8], end: u8) {
    let plain = |s: &str| {
        !s.starts_with("$'")
            && s.chars().all(|c| {
                c == '\t' || (c == '\n' && end != b'\n') || !(c.is_control() || c == '\u{2028}')
            })
    };
    match std::str::from_utf8(msg) {
        Ok(s) if plain(s) => out.extend_from_slice(msg),
        _ => quote(out, msg),
    }
}

/// `$'…'` quoting: `\\`, `\'`, `\n`, `\t`, `\r`, and `\xNN` for any other
/// control byte or byte that is not valid UTF-8; other characters as they
/// are.
fn quote(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(b"$'");
    for chunk in msg.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '\'' => out.extend_from_slice(b"\\'"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\r' => out.extend_from_slice(b"\\r"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => {
                    let mut b = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push(b'\'');
}

/// One `--format json` object. The shape is documented in `ipc recv
/// --help`; fields that are not known are left out.
#[derive(serde::Serialize)]
struct Json<'a> {
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    mtype: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    mailbox: Option<&'a MailboxMeta>,
}

/// One JSON object: `len`, then `text` (valid UTF-8) or `base64`, then what
/// is known: `priority`, `type`, `pid`, `uid`, `conn`; from a mailbox
/// `mailbox`, `seq`, `id`, `deliveries`, `dead_reason`.
fn json(out: &mut Vec<u8>, msg: &[u8], meta: &Meta) {
    let text = std::str::from_utf8(msg).ok();
    let j = Json {
        len: msg.len(),
        text,
        base64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(msg)),
        priority: meta.priority,
        mtype: meta.mtype,
        pid: meta.from.map(|c| c.pid),
        uid: meta.from.map(|c| c.uid),
        conn: meta.conn,
        mailbox: meta.mailbox.as_ref(),
    };
    serde_json::to_writer(out, &j).expect("plain values always serialize");
}

/// A byte as a dump's text column shows it: printable ASCII as itself,
/// anything else as `.` (`ipc shm read`, `ipc binder call`).
pub fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' {
        b as char
    } else {
        '.'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(format: Format, end: u8, msg: &[u8]) -> String {
        let w = Writer {
            format,
            end,
            tag: false,
        };
        let mut out = Vec::new();
        w.format(&mut out, msg, &Meta::default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_quotes_only_what_could_be_mistaken() {
        assert_eq!(show(Format::Text, b'\n', b"hello world"), "hello world\n");
        assert_eq!(
            show(Format::Text, b'\n', "tab\there, ünïcode".as_bytes()),
            "tab\there, ünïcode\n"
        );
        assert_eq!(show(Format::Text, b'\n', b"two\nlines"), "$'two\\nlines'\n");
        assert_eq!(
            show(Format::Text, b'\n', b"$'looks quoted'"),
            "$'$\\'looks quoted\\''\n"
        );
        assert_eq!(
            show(Format::Text, b'\n', b"a\\b\x00\xff\r"),
            "$'a\\\\b\\x00\\xff\\r'\n"
        );
        assert_eq!(show(Format::Text, b'\n', b""), "\n");
        // With -0 a newline is plain, a NUL is quoted.
        assert_eq!(show(Format::Text, 0, b"two\nlines"), "two\nlines\0");
        assert_eq!(show(Format::Text, 0, b"nul\0"), "$'nul\\x00'\0");
    }

    #[test]
    fn hex_raw_and_json() {
        assert_eq!(show(Format::Hex, b'\n', b"\x00\xffA"), "00ff41\n");
        assert_eq!(show(Format::Raw, b'\n', b"a\nb"), "a\nb\n");
        assert_eq!(
            show(Format::Json, b'\n', b"a\"b\n"),
            "{\"len\":4,\"text\":\"a\\\"b\\n\"}\n"
        );
        assert_eq!(
            show(Format::Json, b'\n', b"\xff\x00"),
            "{\"len\":2,\"base64\":\"/wA=\"}\n"
        );
        let w = Writer {
            format: Format::Json,
            end: b'\n',
            tag: false,
        };
        let mut out = Vec::new();
        let meta = Meta {
            priority: Some(7),
            conn: Some(2),
            ..Meta::default()
        };
        w.format(&mut out, b"x", &meta);
        assert_eq!(
            out,
            b"{\"len\":1,\"text\":\"x\",\"priority\":7,\"conn\":2}\n"
        );
    }

    #[test]
    fn tags_come_first() {
        let w = Writer {
            format: Format::Hex,
            end: b'\n',
            tag: true,
        };
        let mut out = Vec::new();
        let meta = Meta {
            mtype: Some(3),
            ..Meta::default()
        };
        w.format(&mut out, b"A", &meta);
        assert_eq!(out, b"3\t41\n");
    }
}
