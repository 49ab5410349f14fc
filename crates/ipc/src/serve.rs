//! `ipc serve ADDR -- COMMAND ARGS...`: request/reply from the shell, as
//! inetd or `socat EXEC:` do: each request runs COMMAND with the request on
//! its standard input, and what it prints is the reply. Served by the
//! library's [`ipckit::rpc::Server`], so Rust clients and `ipc call` both
//! talk to it.

use std::io::{self, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipckit::rpc::Server;

use crate::addr::{Addr, AddrExt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to serve (any message mechanism; clients use the same
    /// address with ipc call or ipckit::rpc::Client).
    #[arg(value_name = "ADDR")]
    addr: Addr,
    /// The command to run for each request, and its arguments (after --).
    #[arg(value_name = "COMMAND", required = true, last = true)]
    command: Vec<String>,
    /// How many requests may run at once (each runs its own COMMAND).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Kill a COMMAND still running after SECS seconds; its caller gets an
    /// error saying so.
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
    command_timeout: Option<Duration>,
    /// Requests and replies are JSON documents (for clients using the
    /// library's Json codec, or ipc call --json): COMMAND reads the JSON
    /// text and must print one JSON document.
    #[arg(long)]
    json: bool,
    /// The largest request, in bytes (default 16 MiB); a larger one is
    /// refused before anything is allocated for it.
    #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
    max_size: Option<usize>,
    /// Say nothing on stderr about where it listens.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    args.addr.check_channel()?;
    crate::cleanup::install_cleanup()
        .context("setting up the cleanup on SIGINT, SIGTERM and SIGHUP")?;
    // Queues and rings stay, as ipc recv leaves them (requests sent while
    // no server runs wait there); a socket file or FIFO goes on exit.
    let keep = matches!(args.addr, Addr::Mq(_) | Addr::SysvMq(_) | Addr::Ring(_));
    let listener = ipckit::listen_with(&args.addr, &ipckit::endpoint::Options::new().keep(keep))?;
    crate::cleanup::remove_on_signal(listener.created_path());
    if !args.quiet {
        eprintln!(
            "ipc serve: listening on {} (each request runs: {})",
            listener.local_address()?,
            args.command.join(" ")
        );
    }
    let runner = Arc::new(Runner {
        command: args.command,
        timeout: args.command_timeout,
        count: AtomicU64::new(0),
    });
    let max = args
        .max_size
        .unwrap_or(ipckit::frame::DEFAULT_MAX_MESSAGE_SIZE);
    let workers = usize::from(args.workers);
    if args.json {
        Server::<serde_json::Value, serde_json::Value, _>::with_codec(
            listener,
            ipckit::typed::Json,
        )
        .workers(workers)
        .max_request_size(max)
        .serve_fallible(move |req: serde_json::Value| {
            let out = runner.run(req.to_string().as_bytes())?;
            serde_json::from_slice(&out).map_err(|e| {
                format!(
                    "{} printed something that is not one JSON document ({e})",
                    runner.command[0]
                )
            })
        })?;
    } else {
        Server::<Vec<u8>, Vec<u8>>::new(listener)
            .workers(workers)
            .max_request_size(max)
            .serve_fallible(move |req| runner.run(&req))?;
    }
    Ok(())
}

struct Runner {
    command: Vec<String>,
    timeout: Option<Duration>,
    /// Requests so far, to tell them apart on stderr.
    count: AtomicU64,
}

/// The most of a failed command's stderr that goes back to its caller.
const MAX_REASON: usize = 1024;

impl Runner {
    /// Runs the command with `request` on its stdin; its stdout is the
    /// reply. A command that cannot start, fails, or runs out of time is
    /// the caller's error, with its stderr's end; the stderr of one that
    /// succeeds goes to this process's stderr.
    fn run(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let name = &self.command[0];
        let mut child = Command::new(name)
            .args(&self.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ipc serve could not run {name}: {e}"))?;
        // Fed on a thread of its own, so that a command that answers before
        // reading all of its input cannot stall against this one.
        let mut stdin = child.stdin.take().expect("piped");
        let input = request.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut out_pipe = child.stdout.take().expect("piped");
        let mut err_pipe = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let _ = err_pipe.read_to_end(&mut stderr);
            stderr
        });
        // The child is waited for (and killed, past --command-timeout) by
        // the thread that owns it, so it is never signalled once reaped.
        let limit = self.timeout;
        let waiter = std::thread::spawn(move || -> io::Result<(ExitStatus, bool)> {
            let Some(limit) = limit else {
                return Ok((child.wait()?, false));
            };
            let end = Instant::now() + limit;
            loop {
                if let Some(st) = child.try_wait()? {
                    return Ok((st, false));
                }
                if Instant::now() >= end {
                    child.kill()?;
                    return Ok((child.wait()?, true));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let read = out_pipe.read_to_end(&mut stdout);
        let waited = waiter
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the waiting thread panicked")));
        let _ = feeder.join();
        let stderr = err_reader.join().unwrap_or_default();
        let (status, killed) = waited.map_err(|e| format!("waiting for {name}: {e}"))?;
        read.map_err(|e| format!("reading what {name} printed: {e}"))?;
        if killed {
            return Err(format!(
                "{name} took longer than --command-timeout {} s and was killed",
                self.timeout.unwrap_or_default().as_secs_f64()
            ));
        }
        if !status.success() {
            let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(MAX_REASON)..]);
            let tail = tail.trim_end();
            return Err(format!(
                "{name} failed ({status}){}{tail}",
                if tail.is_empty() { "" } else { ": " }
            ));
        }
        if !stderr.is_empty() {
            let text = String::from_utf8_lossy(&stderr);
            for line in text.lines() {
                eprintln!("ipc serve: request {n}: {name}: {line}");
            }
        }
        Ok(stdout)
    }
}
