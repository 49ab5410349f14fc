//! `ipc propd [--policy FILE] [--persist DIR]`: the property daemon.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ipckit::prop::{Policy, PropServer, DEFAULT_STORE};
use ipckit::signal::{Handler, Signal};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Who may set which properties: lines of NAME UIDS (`net.* 1000,1001`,
    /// `persist.* *`). Without it, only this user (and root) may set.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Save persist.* properties in DIR/persist.json (atomically, at each
    /// change) and load them at start.
    #[arg(long, value_name = "DIR")]
    persist: Option<PathBuf>,
    /// The store to serve (its area is /dev/shm/ipckit-prop.STORE).
    #[arg(long, value_name = "STORE", default_value = DEFAULT_STORE)]
    name: String,
    /// The area's permission bits, in octal: 0644 lets every user read
    /// (default 0600: this user only).
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    mode: u32,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a mode like 0600 or 0644"))
}

pub fn run(args: Args) -> Result<()> {
    let policy = match &args.policy {
        Some(p) => Policy::load(p).context("--policy")?,
        None => Policy::default(),
    };
    if let Some(dir) = &args.persist {
        anyhow::ensure!(
            dir.is_dir(),
            "--persist {}: not a directory (create it first)",
            dir.display()
        );
    }
    // Handled before serving, so a stop request always finds the handler.
    let stop = Handler::new(&[Signal::TERM, Signal::INT, Signal::HUP])?;
    let mut b = PropServer::builder(&args.name)
        .policy(policy)
        .mode(args.mode);
    if let Some(dir) = &args.persist {
        b = b.persist_dir(dir);
    }
    let server = b.start()?;
    // Written without failing: a daemon whose stderr was closed goes on.
    let _ = writeln!(
        io::stderr(),
        "ipc propd: serving property store {:?} (/dev/shm/ipckit-prop.{}), pid {}",
        args.name,
        args.name,
        std::process::id()
    );
    let why = stop.recv_info()?;
    let _ = writeln!(
        io::stderr(),
        "ipc propd: {} from pid {}: stopping",
        why.signal,
        why.pid
    );
    drop(server);
    Ok(())
}
