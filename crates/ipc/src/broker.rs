//! `ipc broker [--socket PATH] [--max-size BYTES] [--max-connections N]`:
//! the mailbox broker, in the foreground until SIGINT, SIGTERM or SIGHUP.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ipckit::mailbox::Broker;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The socket clients connect to (default: $IPCKIT_BROKER, else
    /// /run/ipckit/broker.sock for root, $XDG_RUNTIME_DIR/ipckit/broker.sock
    /// for others, /tmp/ipckit-UID/broker.sock without XDG_RUNTIME_DIR).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The largest message the broker takes, in bytes (default 8 MiB); a
    /// larger send is refused before any of it is stored.
    #[arg(long, value_name = "BYTES", value_parser = crate::args::size)]
    max_size: Option<usize>,
    /// Clients served at once (default 4096); more are closed at once.
    #[arg(long, value_name = "N", value_parser = crate::args::count)]
    max_connections: Option<u64>,
    /// The socket file's mode, octal (default 666: every local user may
    /// connect, and each mailbox's own mode says what they may do).
    #[arg(long, value_name = "MODE", value_parser = crate::args::mode)]
    socket_mode: Option<u32>,
    /// Say nothing on stderr about where it listens.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut b = Broker::builder();
    if let Some(p) = &args.socket {
        b = b.socket(p);
    }
    if let Some(n) = args.max_size {
        b = b.max_message_size(n);
    }
    if let Some(n) = args.max_connections {
        b = b.max_connections(n.min(usize::MAX as u64) as usize);
    }
    if let Some(m) = args.socket_mode {
        b = b.socket_mode(m);
    }
    let broker = b.bind().context("starting the broker")?;
    let stopper = broker.stopper();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("setting up SIGINT, SIGTERM and SIGHUP")?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stopper.stop();
        }
    });
    if !args.quiet {
        eprintln!(
            "ipc broker: listening on {} (pid {}){}",
            broker.socket_path().display(),
            std::process::id(),
            if args.socket.is_some() && std::env::var_os("IPCKIT_BROKER").is_none() {
                "; clients find it with IPCKIT_BROKER set to that path"
            } else {
                ""
            }
        );
    }
    broker.run().context("running the broker")
}
