//! `ipc call ADDR [MESSAGE]`: one request to an `ipc serve` or a Rust
//! [`ipckit::rpc::Server`], and its reply printed.

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipckit::rpc::{CallError, Client};

use crate::addr::{Addr, AddrExt};
use crate::format::{Format, Meta, Writer};
use crate::{StdoutClosed, TimedOut};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's address (any message mechanism: unix:@NAME, tcp:…,
    /// mq:/NAME, sysv-mq:KEY, ring:NAME, …).
    #[arg(value_name = "ADDR")]
    addr: Addr,
    /// The request (none: all of standard input is the request).
    #[arg(value_name = "MESSAGE")]
    message: Option<String>,
    /// Give up after SECS seconds, exiting with status 1: waiting for the
    /// server to be there, and for the reply (without it: a server that is
    /// not there is an error at once, and the reply is waited for as long
    /// as it takes).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// The request and reply are JSON documents (a server using the
    /// library's Json codec); without it they are bytes (a Rust server's
    /// Vec<u8> or String with the default postcard codec, or ipc serve).
    #[arg(long)]
    json: bool,
    /// How to print the reply (as ipc recv --format).
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    format: Format,
    /// The largest request from standard input, in bytes (default 16 MiB).
    #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
    max_size: Option<usize>,
}

/// How long a call waits without --timeout: as long as it takes.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub fn run(args: Args) -> Result<()> {
    args.addr.check_channel()?;
    let max = args
        .max_size
        .unwrap_or(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE);
    let request = match args.message {
        Some(m) => m.into_bytes(),
        None => {
            let mut buf = Vec::new();
            io::stdin()
                .lock()
                .take(max as u64 + 1)
                .read_to_end(&mut buf)
                .context("reading standard input")?;
            if buf.len() > max {
                bail!(
                    "standard input is longer than {max} bytes, the largest request ipc call \
                     takes (--max-size raises it): nothing was sent"
                );
            }
            buf
        }
    };
    let timeout = args.timeout.unwrap_or(FOREVER);
    let reply = if args.json {
        let req: serde_json::Value = serde_json::from_slice(&request).map_err(|e| {
            anyhow::anyhow!("the request is not JSON ({e}); leave out --json to send bytes")
        })?;
        let client: Client<serde_json::Value, serde_json::Value, _> =
            Client::connect_with(&args.addr, args.timeout, ipckit::typed::Json)
                .map_err(|e| connect_err(e, &args.addr, args.timeout))?;
        let v = client
            .call(&req, timeout)
            .map_err(|e| call_err(e, &args.addr, args.json))?;
        serde_json::to_vec(&v)?
    } else {
        let client: Client<Vec<u8>, Vec<u8>> =
            Client::connect_with(&args.addr, args.timeout, ipckit::typed::Postcard)
                .map_err(|e| connect_err(e, &args.addr, args.timeout))?;
        client
            .call(&request, timeout)
            .map_err(|e| call_err(e, &args.addr, args.json))?
    };
    let w = Writer {
        format: args.format,
        end: b'\n',
        tag: false,
    };
    match w.write(
        &mut io::stdout().lock(),
        &mut Vec::new(),
        &reply,
        &Meta::default(),
    ) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => Ok(r.context("writing to stdout")?),
    }
}

/// A server that is not there: waited for until --timeout (status 1), or,
/// without it, not waited for.
fn connect_err(e: io::Error, addr: &Addr, timeout: Option<Duration>) -> anyhow::Error {
    let absent = matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
    );
    match (absent, timeout) {
        (true, Some(_)) => TimedOut(format!(
            "no server at {addr} before the timeout (start one: ipc serve {addr} -- COMMAND)"
        ))
        .into(),
        (true, None) => anyhow::anyhow!(
            "no server at {addr} ({e}): start one (ipc serve {addr} -- COMMAND), or give \
             --timeout to wait for it"
        ),
        _ => anyhow::Error::new(e).context(format!("cannot reach a server at {addr}")),
    }
}

fn call_err(e: CallError, addr: &Addr, json: bool) -> anyhow::Error {
    match e {
        CallError::Timeout => TimedOut(format!("no reply from {addr} before the timeout")).into(),
        CallError::Disconnected => {
            anyhow::anyhow!("the server at {addr} went away without answering")
        }
        CallError::Remote(why) => {
            // A server of the other codec cannot read the request.
            let hint = match (json, why.contains(" not a JSON ")) {
                (false, true) => " (this server speaks JSON: add --json)",
                (true, false) if why.contains(" not a postcard ") => {
                    " (this server does not speak JSON: leave out --json)"
                }
                _ => "",
            };
            anyhow::anyhow!("the server at {addr} refused the request: {why}{hint}")
        }
        CallError::Io(e) => anyhow::Error::new(e).context(format!("calling {addr}")),
    }
}
