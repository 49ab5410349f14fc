//! `ipc broker [--socket PATH] [--store DIR | --no-store] [--fsync POLICY]
//! [--nats URL --bridge 'SUBJECTS'] [--max-size BYTES] [--max-connections N]
//! [--spin MICROS] [--no-lanes]`:
//! the mailbox broker, in the foreground until SIGINT, SIGTERM or SIGHUP.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ipckit::mailbox::{Broker, Fsync};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The socket clients connect to (default: $IPCKIT_BROKER, else
    /// /run/ipckit/broker.sock for root, $XDG_RUNTIME_DIR/ipckit/broker.sock
    /// for others, /tmp/ipckit-UID/broker.sock without XDG_RUNTIME_DIR).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where durable mailboxes are kept (default: $IPCKIT_STORE, else
    /// /var/lib/ipckit for root, $XDG_STATE_HOME/ipckit or
    /// ~/.local/state/ipckit for others); one broker per store.
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    store: Option<PathBuf>,
    /// Keep no store: `ipc mailbox create --durable` is refused.
    #[arg(long)]
    no_store: bool,
    /// When durable mailboxes' writes are forced to disk: always (before
    /// each confirmation), never, or an interval like 10ms or 1s (default
    /// 100ms). A confirmed send survives the broker being killed whatever
    /// the policy; this says what survives a power loss.
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<Fsync>,
    /// A NATS server (nats://host:4222) to bridge the --bridge mailboxes
    /// through, to brokers on other machines connected to it: durable
    /// mailboxes through JetStream, the others as NATS requests.
    #[arg(long, value_name = "URL", requires = "bridge")]
    nats: Option<String>,
    /// The mailboxes to bridge to --nats: names or patterns separated by
    /// spaces or commas ('orders.> jobs'); may be given more than once.
    #[arg(long, value_name = "SUBJECTS", requires = "nats")]
    bridge: Vec<String>,
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
    /// Microseconds the broker keeps polling without sleeping after its
    /// last event (default 50; 0: sleep at once). Saves a scheduler
    /// wake-up per message on a busy broker, for that much CPU after each
    /// burst.
    #[arg(long, value_name = "MICROS", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    spin: Option<u64>,
    /// Keep every client's bytes on its socket: no shared-memory lanes
    /// (by default each ipckit client gets a memfd of two 256 KiB byte
    /// rings, through which its messages pass with no system call while
    /// both sides are busy).
    #[arg(long)]
    no_lanes: bool,
    /// Say nothing on stderr about where it listens.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_fsync(s: &str) -> Result<Fsync, String> {
    s.parse().map_err(|e: std::io::Error| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let mut b = Broker::builder();
    if !args.no_store {
        b = b.store(
            args.store
                .clone()
                .unwrap_or_else(ipckit::mailbox::default_store),
        );
    }
    if let Some(f) = args.fsync {
        b = b.fsync(f);
    }
    if let Some(url) = &args.nats {
        let subjects: Vec<&str> = args
            .bridge
            .iter()
            .flat_map(|s| s.split([',', ' ', '\t']))
            .filter(|s| !s.is_empty())
            .collect();
        b = b.nats(url, &subjects).context("--nats, --bridge")?;
    }
    if let Some(p) = &args.socket {
        b = b.socket(p);
    }
    if let Some(n) = args.max_size {
        b = b.max_message_size(n);
    }
    if let Some(n) = args.max_connections {
        b = b.max_connections(n.min(usize::MAX as u64) as usize);
    }
    if let Some(us) = args.spin {
        b = b.spin(std::time::Duration::from_micros(us));
    }
    if let Some(m) = args.socket_mode {
        b = b.socket_mode(m);
    }
    if args.no_lanes {
        b = b.lanes(false);
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
        if let Some(r) = broker.store_report() {
            eprintln!("ipc broker: {r}");
        }
        if let Some(url) = &args.nats {
            eprintln!(
                "ipc broker: bridging {} through NATS at {url}",
                args.bridge.join(" ")
            );
        }
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
