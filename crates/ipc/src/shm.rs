//! `ipc shm create|write|read|stat ADDR`: shared memory from the shell, so
//! that two terminals can watch the same bytes (POSIX `shm:/NAME` and
//! System V `sysv-shm:KEY` or `sysv-shm:id=ID`).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use ipckit::shm::{Region, Shm, SysvShm};

use crate::addr::{parse_target, Addr, Target};
use crate::StdoutClosed;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// shm:/NAME, sysv-shm:KEY (decimal, 0x hex or PATH:PROJ) or
/// sysv-shm:id=ID.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a shared memory object of --size bytes, zero-filled, that stays
    /// until `ipc rm ADDR`.
    Create {
        /// shm:/NAME or sysv-shm:KEY.
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
        /// Its size in bytes (K, M, G suffixes: 64K).
        #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
        size: usize,
        /// Permission bits, in octal (default 600: this user only).
        #[arg(long, value_name = "MODE", value_parser = crate::args::mode, default_value = "600")]
        mode: u32,
    },
    /// Write bytes at --offset: DATA as given, or --hex, --file, or
    /// standard input. Nothing is written if it would not fit.
    Write {
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
        /// The bytes to write, as text (none: --hex, --file or stdin).
        #[arg(value_name = "DATA", conflicts_with_all = ["hex", "file"])]
        data: Option<String>,
        /// The bytes to write, in hex (`68656c6c6f` or `68 65 6c`).
        #[arg(long, value_name = "HEX", conflicts_with = "file")]
        hex: Option<String>,
        /// Write the contents of this file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Where to write, in bytes from the start.
        #[arg(long, value_name = "BYTES", default_value = "0", value_parser = crate::args::offset)]
        offset: usize,
    },
    /// Print bytes from --offset (default: all of them).
    Read {
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
        /// Where to start, in bytes from the start.
        #[arg(long, value_name = "BYTES", default_value = "0", value_parser = crate::args::offset)]
        offset: usize,
        /// How many bytes (default: up to the end).
        #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
        length: Option<usize>,
        /// dump: offset, 16 bytes in hex and as text per line, repeated
        /// lines shown once as `*` (as hexdump -C); hex: one line of hex;
        /// raw: the bytes as they are.
        #[arg(long, value_enum, default_value_t = ReadFormat::Dump)]
        format: ReadFormat,
    },
    /// Print its size, mode, owner and who has it mapped; for System V, its
    /// attachments, creator and last user.
    Stat {
        #[arg(value_name = "ADDR", value_parser = parse_target)]
        target: Target,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReadFormat {
    Dump,
    Hex,
    Raw,
}

/// A mapped object of either family.
enum Seg {
    Posix(Shm),
    Sysv(SysvShm),
}

impl std::ops::Deref for Seg {
    type Target = Region;
    fn deref(&self) -> &Region {
        match self {
            Seg::Posix(s) => s,
            Seg::Sysv(s) => s,
        }
    }
}

fn not_shm(t: &Target) -> anyhow::Error {
    anyhow::anyhow!(
        "{t} is not shared memory: ipc shm takes shm:/NAME, sysv-shm:KEY or sysv-shm:id=ID"
    )
}

/// Maps the existing object `t` (never creates it).
fn open(t: &Target, read_only: bool) -> Result<Seg> {
    Ok(match t {
        Target::Addr(Addr::Shm(name)) => {
            Seg::Posix(Shm::builder(name).read_only(read_only).open()?)
        }
        Target::Addr(Addr::SysvShm(key)) => {
            Seg::Sysv(SysvShm::builder(*key).read_only(read_only).open()?)
        }
        Target::SysvId("shm", id) => Seg::Sysv(SysvShm::open_id(*id, read_only)?),
        _ => return Err(not_shm(t)),
    })
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Create { target, size, mode } => {
            match &target {
                Target::Addr(Addr::Shm(name)) => {
                    Shm::builder(name)
                        .size(size)
                        .mode(mode)
                        .keep(true)
                        .create()?;
                }
                Target::Addr(Addr::SysvShm(key)) => {
                    SysvShm::builder(*key)
                        .size(size)
                        .mode(mode)
                        .keep(true)
                        .create()?;
                }
                Target::SysvId(..) => bail!(
                    "{target} names an existing segment: to make one, give a key (sysv-shm:KEY)"
                ),
                _ => return Err(not_shm(&target)),
            }
            Ok(())
        }
        Command::Write {
            target,
            data,
            hex,
            file,
            offset,
        } => {
            let seg = open(&target, false)?;
            let room = seg.len().saturating_sub(offset);
            let bytes = match (data, hex, file) {
                (Some(d), _, _) => d.into_bytes(),
                (_, Some(h), _) => parse_hex(&h)?,
                (_, _, Some(f)) => {
                    let f = std::fs::File::open(&f)
                        .with_context(|| format!("--file {}: cannot open it", f.display()))?;
                    limited(f, room, &target, offset, seg.len())?
                }
                _ => limited(io::stdin().lock(), room, &target, offset, seg.len())?,
            };
            if offset > seg.len() || bytes.len() > room {
                bail!(
                    "{} bytes at offset {offset} would go past the end of {target}, which has {} \
                     bytes: nothing was written",
                    bytes.len(),
                    seg.len()
                );
            }
            seg.write(offset, &bytes)?;
            Ok(())
        }
        Command::Read {
            target,
            offset,
            length,
            format,
        } => {
            let seg = open(&target, true)?;
            if offset > seg.len() {
                bail!(
                    "--offset {offset} is past the end of {target}, which has {} bytes",
                    seg.len()
                );
            }
            let len = length.unwrap_or(seg.len() - offset);
            if len > seg.len() - offset {
                bail!(
                    "--length {len} from offset {offset} goes past the end of {target}, which \
                     has {} bytes",
                    seg.len()
                );
            }
            let mut buf = vec![0; len];
            seg.read(offset, &mut buf)?;
            let mut out = io::stdout().lock();
            let written = match format {
                ReadFormat::Raw => out.write_all(&buf),
                ReadFormat::Hex => {
                    let mut s = String::with_capacity(buf.len() * 2 + 1);
                    for b in &buf {
                        s.push_str(&format!("{b:02x}"));
                    }
                    s.push('\n');
                    out.write_all(s.as_bytes())
                }
                ReadFormat::Dump => out.write_all(dump(&buf, offset).as_bytes()),
            };
            match written.and_then(|()| out.flush()) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
                r => Ok(r.context("writing to stdout")?),
            }
        }
        Command::Stat { target } => stat(&target),
    }
}

/// Reads all of `input`, refusing more than `room` bytes before writing
/// anything.
fn limited(
    input: impl Read,
    room: usize,
    target: &Target,
    offset: usize,
    len: usize,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input
        .take(room as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the data")?;
    if bytes.len() > room {
        bail!(
            "the data is longer than the {room} bytes from offset {offset} to the end of {target} \
             ({len} bytes): nothing was written"
        );
    }
    Ok(bytes)
}

/// `68656c6c6f`, `68 65 6c`, `0x68,0x65`: pairs of hex digits.
fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let digits: String = s
        .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
        .map(|w| w.strip_prefix("0x").unwrap_or(w))
        .collect();
    if !digits.len().is_multiple_of(2) {
        bail!("--hex {s:?}: an odd number of hex digits (each byte is two)");
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| anyhow::anyhow!("--hex {s:?}: {:?} is not hex", &digits[i..i + 2]))
        })
        .collect()
}

/// hexdump -C's layout: offset, 16 bytes in hex, the printable ones as
/// text; a line equal to the one before is shown once as `*`; the end
/// offset last.
fn dump(buf: &[u8], base: usize) -> String {
    let mut s = String::new();
    let mut last: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in buf.chunks(16).enumerate() {
        if last == Some(line) && line.len() == 16 {
            if !starred {
                s.push_str("*\n");
                starred = true;
            }
            continue;
        }
        starred = false;
        last = Some(line);
        s.push_str(&format!("{:08x}  ", base + i * 16));
        for j in 0..16 {
            match line.get(j) {
                Some(b) => s.push_str(&format!("{b:02x} ")),
                None => s.push_str("   "),
            }
            if j == 7 {
                s.push(' ');
            }
        }
        s.push_str(" |");
        s.extend(line.iter().map(|&b| crate::format::printable(b)));
        s.push_str("|\n");
    }
    s.push_str(&format!("{:08x}\n", base + buf.len()));
    s
}

/// How long ago `t` was, in words.
fn ago(t: Option<SystemTime>) -> String {
    match t.map(|t| SystemTime::now().duration_since(t)) {
        None => "never".into(),
        Some(Ok(d)) => format!("{} s ago", d.as_secs()),
        Some(Err(_)) => "in the future (clock changed)".into(),
    }
}

fn stat(target: &Target) -> Result<()> {
    let seg = open(target, true)?;
    let mut out = String::new();
    // ipc ls's holders: who has it mapped (as far as this user can see).
    let addresses: Vec<String> = match &seg {
        Seg::Posix(s) => vec![format!("shm:{}", s.name())],
        Seg::Sysv(s) => vec![
            format!("sysv-shm:{}", s.key()),
            format!("sysv-shm:id={}", s.id()),
        ],
    };
    match &seg {
        Seg::Posix(s) => {
            let m = std::fs::File::from(s.as_fd().try_clone_to_owned()?).metadata()?;
            use std::os::unix::fs::MetadataExt;
            out.push_str(&format!(
                "{target}\n  size: {} bytes\n  mode: {:04o}, owner {}\n  changed: {}\n",
                m.size(),
                m.mode() & 0o777,
                crate::ls::owner(m.uid()),
                ago(m.modified().ok()),
            ));
        }
        Seg::Sysv(s) => {
            let st = s.status()?;
            out.push_str(&format!(
                "{target} (key {}, id {})\n  size: {} bytes\n  mode: {:04o}, owner {}, created by \
                 {}\n  attached: {} (this one included)\n  creator pid: {}\n  last attach or \
                 detach by pid: {}\n  last attach: {}\n  last detach: {}\n  last change: {}\n",
                s.key(),
                s.id(),
                st.size,
                st.perm.mode & 0o777,
                crate::ls::owner(st.perm.owner.uid),
                crate::ls::owner(st.perm.creator.uid),
                st.attached,
                pid(st.creator_pid),
                pid(st.last_pid),
                ago(st.last_attach),
                ago(st.last_detach),
                ago(st.last_change),
            ));
            if st.removal_pending {
                out.push_str("  removal pending: gone once every process detaches\n");
            }
        }
    }
    let me = std::process::id() as i32;
    let listing = crate::ls::list(None);
    let holders: Vec<String> = listing
        .objects
        .iter()
        .filter(|o| o.address.as_ref().is_some_and(|a| addresses.contains(a)))
        .flat_map(|o| o.holders.iter())
        .filter(|h| h.pid != me)
        .map(|h| format!("{}({})", h.command, h.pid))
        .collect();
    out.push_str(&format!(
        "  mapped by: {}\n",
        if holders.is_empty() {
            "no other process".into()
        } else {
            holders.join(", ")
        }
    ));
    for u in &listing.unseen {
        if u.contains("processes") {
            out.push_str(&format!("  ({u})\n"));
        }
    }
    print!("{out}");
    Ok(())
}

fn pid(p: Option<u32>) -> String {
    p.map_or_else(|| "none".into(), |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_dump() {
        assert_eq!(parse_hex("68656c").unwrap(), b"hel");
        assert_eq!(parse_hex("68 65, 0x6c:6c").unwrap(), b"hell");
        assert!(parse_hex("6").is_err() && parse_hex("zz").is_err());
        let mut buf = b"hello, world!\n".to_vec();
        buf.resize(64, 0);
        assert_eq!(
            dump(&buf, 0),
            "00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 00  |hello, world!...|\n\
             00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000040\n"
        );
        assert_eq!(
            dump(b"ab", 16),
            "00000010  61 62                                             |ab|\n00000012\n"
        );
    }
}
