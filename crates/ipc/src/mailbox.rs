//! `ipc mailbox create|ls|stat|rm`: mailboxes at the broker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::{presets::NOTHING, Table};
use ipckit::mailbox::{Client, Config, MailboxInfo, Retention, WhenFull};

use crate::Reported;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The broker's socket (default: $IPCKIT_BROKER, else the default
    /// socket `ipc broker` listens on).
    #[arg(long, value_name = "PATH", global = true)]
    broker: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a mailbox with chosen limits and behaviour (a send or receive
    /// on a free name makes one with the defaults).
    Create(CreateArgs),
    /// List the mailboxes this user may see: depth, receivers, messages
    /// in flight, dead letters.
    Ls(LsArgs),
    /// Everything about one mailbox.
    Stat(StatArgs),
    /// Remove mailboxes (their owner or root only): their receivers are
    /// told, their waiting senders get an error.
    Rm(RmArgs),
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// The name: words of letters, digits, '_' and '-' separated by dots
    /// (orders.eu.new).
    name: String,
    /// Keep it on disk, surviving a broker crash (the broker needs a store).
    #[arg(long)]
    durable: bool,
    /// Keep at most N messages (default 1000000).
    #[arg(long, value_name = "N", value_parser = crate::args::count)]
    max_msgs: Option<u64>,
    /// Keep at most N payload bytes (default 64 MiB; K, M, G suffixes).
    #[arg(long, value_name = "N", value_parser = crate::args::size)]
    max_bytes: Option<usize>,
    /// Discard messages older than SECS seconds (default: never).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
    max_age: Option<Duration>,
    /// When full: block the sender until there is room (default), fail
    /// the send, or drop the oldest messages.
    #[arg(long, value_name = "POLICY", value_parser = clap::builder::PossibleValuesParser::new(WhenFull::WORDS))]
    when_full: Option<String>,
    /// work-queue: each message to one receiver, gone once acknowledged
    /// (default). interest: every receiver (or group) gets every message,
    /// gone once all have acknowledged it; dropped if nobody receives.
    /// limits: kept until the limits push it out; new groups replay.
    #[arg(long, value_name = "R", value_parser = clap::builder::PossibleValuesParser::new(Retention::WORDS))]
    retention: Option<String>,
    /// Who may send (w) and receive (r), octal like a file's (default
    /// 600: only you).
    #[arg(long, value_name = "MODE", value_parser = crate::args::mode)]
    mode: Option<u32>,
    /// A message not acknowledged within SECS goes to another receiver
    /// (default 30).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
    ack_wait: Option<Duration>,
    /// After N deliveries without an acknowledgement, move the message to
    /// dead.NAME with the reason (default: no limit).
    #[arg(long, value_name = "N", value_parser = crate::args::count)]
    max_deliver: Option<u64>,
    /// Wait before each redelivery, in seconds, comma-separated; the last
    /// repeats (0.1,1,10).
    #[arg(long, value_name = "SECS,...", value_delimiter = ',', value_parser = crate::args::seconds)]
    backoff: Vec<Duration>,
    /// Remember message ids this long to drop duplicate sends (default
    /// 120).
    #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
    dedup_window: Option<Duration>,
    /// An existing mailbox is fine (it keeps its own settings).
    #[arg(long)]
    exist_ok: bool,
}

#[derive(clap::Args, Debug)]
struct LsArgs {
    /// Only mailboxes matching PATTERN (orders.*, orders.>).
    pattern: Option<String>,
    /// One JSON object per mailbox, one per line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct StatArgs {
    /// The mailbox.
    name: String,
    /// As one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RmArgs {
    /// The mailboxes.
    #[arg(required = true)]
    names: Vec<String>,
}

/// Connects to the broker `--broker` names, or the default one.
pub fn connect(broker: Option<&PathBuf>) -> Result<Client> {
    let c = match broker {
        Some(p) => Client::connect_to(p),
        None => Client::connect(),
    };
    c.map_err(|e| {
        if e.kind() == ipckit::mailbox::ErrorKind::NotRunning {
            let at = broker
                .cloned()
                .unwrap_or_else(ipckit::mailbox::default_socket);
            anyhow::anyhow!(
                "no mailbox broker is running at {}: start one with `ipc broker` (in another \
                 terminal, or `ipc broker &`)",
                at.display()
            )
        } else {
            e.into()
        }
    })
}

pub fn run(args: Args) -> Result<()> {
    let mut c = connect(args.broker.as_ref())?;
    match args.command {
        Command::Create(a) => create(&mut c, a),
        Command::Ls(a) => {
            let list = c.stat(a.pattern.as_deref())?;
            if a.json {
                for m in &list {
                    println!("{}", json(m));
                }
            } else {
                print_table(&list);
            }
            Ok(())
        }
        Command::Stat(a) => {
            ipckit::mailbox::validate_name(&a.name)?;
            let list = c.stat(Some(&a.name))?;
            let Some(m) = list.first() else {
                anyhow::bail!(
                    "no mailbox {} (or this user may not see it): ipc mailbox ls lists them",
                    a.name
                );
            };
            if a.json {
                println!("{}", json(m));
            } else {
                print_stat(m);
            }
            Ok(())
        }
        Command::Rm(a) => {
            let mut failed = 0;
            for n in &a.names {
                match c.delete(n) {
                    Ok(()) => {}
                    Err(e) => {
                        eprintln!("ipc mailbox rm: {n}: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(Reported.into());
            }
            Ok(())
        }
    }
}

fn create(c: &mut Client, a: CreateArgs) -> Result<()> {
    let d = Config::default();
    let config = Config {
        retention: a.retention.as_deref().map_or(Ok(d.retention), str::parse)?,
        max_msgs: a.max_msgs.or(d.max_msgs),
        max_bytes: a.max_bytes.map(|b| b as u64).or(d.max_bytes),
        max_age: a.max_age,
        when_full: a.when_full.as_deref().map_or(Ok(d.when_full), str::parse)?,
        mode: a.mode.unwrap_or(d.mode),
        ack_wait: a.ack_wait.unwrap_or(d.ack_wait),
        max_deliver: match a.max_deliver {
            None => None,
            Some(n) if n >= 1 && n <= u32::MAX as u64 => Some(n as u32),
            Some(n) => anyhow::bail!("--max-deliver {n}: give 1 to {}", u32::MAX),
        },
        backoff: a.backoff,
        dedup_window: a.dedup_window.unwrap_or(d.dedup_window),
        durable: a.durable,
    };
    if config.ack_wait.is_zero() {
        anyhow::bail!("--ack-wait must be longer than 0");
    }
    if config.backoff.len() > ipckit::mailbox::config::MAX_BACKOFF_STEPS {
        anyhow::bail!(
            "--backoff takes at most {} steps (the last one repeats)",
            ipckit::mailbox::config::MAX_BACKOFF_STEPS
        );
    }
    let made = if a.exist_ok {
        c.create_or_open(&a.name, &config)
    } else {
        c.create(&a.name, &config).map(|()| true)
    }
    .with_context(|| format!("creating mailbox {}", a.name))?;
    if !made {
        eprintln!("ipc mailbox: {} exists; it keeps its own settings", a.name);
    }
    Ok(())
}

fn limit(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

fn print_table(list: &[MailboxInfo]) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "NAME",
        "RETENTION",
        "DEPTH",
        "BYTES",
        "RECEIVERS",
        "IN-FLIGHT",
        "BLOCKED",
        "DEAD",
        "OWNER",
        "MODE",
    ]);
    for m in list {
        t.add_row([
            m.name.clone(),
            m.config.retention.to_string(),
            m.depth.to_string(),
            m.bytes.to_string(),
            m.consumers.to_string(),
            m.in_flight.to_string(),
            m.blocked_senders.to_string(),
            m.dead_letters.to_string(),
            m.owner.to_string(),
            format!("{:04o}", m.config.mode),
        ]);
    }
    println!("{t}");
}

fn print_stat(m: &MailboxInfo) {
    let c = &m.config;
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    let rows: Vec<(&str, String)> = vec![
        ("name", m.name.clone()),
        ("owner", format!("uid {} gid {}", m.owner, m.group)),
        ("mode", format!("{:04o}", c.mode)),
        ("retention", c.retention.to_string()),
        ("when full", c.when_full.to_string()),
        ("durable", c.durable.to_string()),
        ("max msgs", limit(c.max_msgs)),
        ("max bytes", limit(c.max_bytes)),
        ("max age", c.max_age.map_or("-".into(), secs)),
        ("ack wait", secs(c.ack_wait)),
        ("max deliver", limit(c.max_deliver.map(u64::from))),
        (
            "backoff",
            if c.backoff.is_empty() {
                "-".into()
            } else {
                c.backoff
                    .iter()
                    .map(|d| secs(*d))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ),
        ("dedup window", secs(c.dedup_window)),
        ("depth", m.depth.to_string()),
        ("bytes", m.bytes.to_string()),
        ("receivers", m.consumers.to_string()),
        ("in flight", m.in_flight.to_string()),
        ("blocked senders", m.blocked_senders.to_string()),
        ("received", m.received.to_string()),
        ("dead letters", m.dead_letters.to_string()),
        ("discarded", m.discarded.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<16} {v}");
    }
}

fn json(m: &MailboxInfo) -> serde_json::Value {
    let c = &m.config;
    serde_json::json!({
        "name": m.name,
        "owner": m.owner,
        "group": m.group,
        "mode": format!("{:04o}", c.mode),
        "retention": c.retention.to_string(),
        "when_full": c.when_full.to_string(),
        "durable": c.durable,
        "max_msgs": c.max_msgs,
        "max_bytes": c.max_bytes,
        "max_age_secs": c.max_age.map(|d| d.as_secs_f64()),
        "ack_wait_secs": c.ack_wait.as_secs_f64(),
        "max_deliver": c.max_deliver,
        "backoff_secs": c.backoff.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
        "dedup_window_secs": c.dedup_window.as_secs_f64(),
        "depth": m.depth,
        "bytes": m.bytes,
        "receivers": m.consumers,
        "in_flight": m.in_flight,
        "blocked_senders": m.blocked_senders,
        "received": m.received,
        "dead_letters": m.dead_letters,
        "discarded": m.discarded,
    })
}
