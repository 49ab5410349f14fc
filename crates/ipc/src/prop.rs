//! `ipc prop get NAME`, `ipc prop set NAME VALUE`, `ipc prop ls [PREFIX]`,
//! `ipc prop watch [PREFIX]`: the property store from the shell.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipckit::prop::{Properties, Serial, DEFAULT_STORE};

use crate::{StdoutClosed, TimedOut};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The property store (as `ipc propd --name STORE` serves it).
    #[arg(long, value_name = "STORE", default_value = DEFAULT_STORE, global = true)]
    store: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a property's value (read from shared memory: no system
    /// call); exit status 2 if it is not set.
    Get {
        /// A dotted name, like net.wifi.state.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Ask the store's daemon to set a property; returns once every reader
    /// sees the new value.
    Set {
        /// A dotted name, like net.wifi.state.
        #[arg(value_name = "NAME")]
        name: String,
        /// The value (UTF-8 text, up to 64 KiB).
        #[arg(value_name = "VALUE", allow_hyphen_values = true)]
        value: String,
    },
    /// List the properties under PREFIX (whole segments; all without),
    /// one NAME=VALUE line each, sorted.
    Ls {
        /// A dotted prefix, like net.wifi.
        #[arg(value_name = "PREFIX", default_value = "")]
        prefix: String,
    },
    /// Print each change under PREFIX (or of the property PREFIX names) as
    /// NAME=VALUE, as it happens: sleeps on a futex between changes.
    Watch {
        /// A dotted prefix or a property name (all properties without).
        #[arg(value_name = "PREFIX", default_value = "")]
        prefix: String,
        /// Stop after N changes.
        #[arg(short = 'n', value_name = "N", value_parser = crate::args::count)]
        count: Option<u64>,
        /// Give up after SECS seconds in all, exiting with status 1.
        #[arg(long, value_name = "SECS", value_parser = crate::args::seconds)]
        timeout: Option<Duration>,
    },
}

pub fn run(args: Args) -> Result<()> {
    let props = || Properties::open(&args.store);
    match args.command {
        Command::Get { name } => match props()?.get(&name)? {
            Some(v) => out(&format!("{v}\n")),
            None => anyhow::bail!("{name} is not set in store {:?}", args.store),
        },
        Command::Set { name, value } => {
            ipckit::prop::check_name(&name).context("NAME")?;
            Ok(props()?.set(&name, &value)?)
        }
        Command::Ls { prefix } => {
            let mut text = String::new();
            for (name, value) in props()?.list(&prefix)? {
                text.push_str(&format!("{name}={value}\n"));
            }
            out(&text)
        }
        Command::Watch {
            prefix,
            count,
            timeout,
        } => watch(&props()?, &prefix, count, timeout),
    }
}

fn out(text: &str) -> Result<()> {
    let mut o = io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => Ok(r.context("writing to stdout")?),
    }
}

fn watch(
    props: &Properties,
    prefix: &str,
    count: Option<u64>,
    timeout: Option<Duration>,
) -> Result<()> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let snapshot = |p: &Properties| -> Result<BTreeMap<String, Serial>> {
        Ok(p.list_with_serials(prefix)?
            .into_iter()
            .map(|(n, _, s)| (n, s))
            .collect())
    };
    let mut seen = props.prefix_serial(prefix)?;
    let mut known = snapshot(props)?;
    let mut left = count;
    while left != Some(0) {
        // In slices of a second, so a deadline far off is still kept.
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        match props.wait_prefix(prefix, seen, wait)? {
            Some(s) => seen = s,
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(TimedOut(format!(
                    "timed out after {} s watching {}",
                    timeout.unwrap_or_default().as_secs_f64(),
                    if prefix.is_empty() {
                        "the store"
                    } else {
                        prefix
                    }
                ))
                .into())
            }
            None => continue,
        }
        let mut text = String::new();
        for (name, value, serial) in props.list_with_serials(prefix)? {
            if known.get(&name) != Some(&serial) {
                text.push_str(&format!("{name}={value}\n"));
                known.insert(name, serial);
                left = left.map(|n| n.saturating_sub(1));
            }
        }
        out(&text)?;
    }
    Ok(())
}
