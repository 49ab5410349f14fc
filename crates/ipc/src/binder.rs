//! `ipc binder ls`, `ipc binder call SERVICE CODE [ARG...]` and
//! `ipc binder service-manager [--policy FILE]`: binder in user space
//! (`ipckit::binder`) from the shell, like Android's `service list` and
//! `service call`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipckit::binder::{
    self, Object, Parcel, Policy, ServiceManager, ServiceManagerServer, Status,
    INTERFACE_TRANSACTION,
};
use ipckit::socket::unix::UnixAddr;

use crate::TimedOut;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List the services registered with the service manager, with the
    /// pid and uid of the process serving each.
    Ls {
        #[command(flatten)]
        sm: SmArg,
    },
    /// Call SERVICE with transaction CODE and print the reply parcel (like
    /// Android's `service call`): the interface token first (asked of the
    /// service), then each ARG: i32:N, i64:N, s16:TEXT (UTF-16 string),
    /// s:TEXT (UTF-8 string8), fd:PATH (the file, opened for reading).
    Call {
        /// The service's name.
        #[arg(value_name = "SERVICE")]
        service: String,
        /// The transaction code (1 is the first AIDL method).
        #[arg(value_name = "CODE", value_parser = parse_code)]
        code: u32,
        /// The arguments, in order.
        #[arg(value_name = "ARG", value_parser = parse_arg, allow_hyphen_values = true)]
        args: Vec<Arg>,
        /// Send without an interface token.
        #[arg(long)]
        no_token: bool,
        /// One-way: do not wait for a reply.
        #[arg(long)]
        oneway: bool,
        /// Give up after SECS seconds, exiting with status 1.
        #[arg(long, value_name = "SECS", value_parser = crate::args::seconds, allow_negative_numbers = true)]
        timeout: Option<Duration>,
        #[command(flatten)]
        sm: SmArg,
    },
    /// Run a service manager (until killed). Prints its address and pid on
    /// stderr.
    ServiceManager {
        /// The policy: who may register and find which names (lines of
        /// `add|find NAME-OR-PREFIX* UID,...|*`). Default: a service is
        /// found only by its own user; root may do everything.
        #[arg(long, value_name = "FILE")]
        policy: Option<std::path::PathBuf>,
        #[command(flatten)]
        sm: SmArg,
    },
}

#[derive(clap::Args, Debug)]
struct SmArg {
    /// The service manager's address: @NAME (abstract) or a socket PATH,
    /// optionally after `unix:` (default: $IPCKIT_SERVICE_MANAGER, else
    /// @ipckit-binder-servicemanager).
    #[arg(long = "sm", value_name = "ADDR", value_parser = parse_addr)]
    addr: Option<UnixAddr>,
}

impl SmArg {
    fn connect(&self) -> Result<ServiceManager> {
        let sm = match &self.addr {
            Some(a) => ServiceManager::connect_to(a),
            None => ServiceManager::connect(),
        };
        sm.map_err(|e| {
            let hint = if e.status() != Status::PermissionDenied {
                " (is one running? start it with `ipc binder service-manager`)"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}")
        })
    }
}

fn parse_addr(s: &str) -> Result<UnixAddr, String> {
    s.strip_prefix("unix:")
        .unwrap_or(s)
        .parse()
        .map_err(|e: std::io::Error| format!("{s:?}: {e}"))
}

fn parse_code(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.map_err(|_| format!("{s:?} is not a transaction code (a number like 1 or 0x5f504e47)"))
}

/// One argument of `ipc binder call`.
#[derive(Debug, Clone)]
enum Arg {
    I32(i32),
    I64(i64),
    S16(String),
    S8(String),
    Fd(std::path::PathBuf),
}

fn parse_arg(s: &str) -> Result<Arg, String> {
    let (kind, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: give TYPE:VALUE, with TYPE one of i32, i64, s16, s, fd"))?;
    let num = |what| format!("{s:?}: {v:?} is not an {what} number");
    Ok(match kind {
        "i32" => Arg::I32(v.parse().map_err(|_| num("i32"))?),
        "i64" => Arg::I64(v.parse().map_err(|_| num("i64"))?),
        "s16" => Arg::S16(v.to_owned()),
        "s" => Arg::S8(v.to_owned()),
        "fd" => Arg::Fd(v.into()),
        _ => {
            return Err(format!(
                "{s:?}: unknown type {kind:?} (i32, i64, s16, s, fd)"
            ))
        }
    })
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Ls { sm } => ls(&sm.connect()?),
        Command::Call {
            service,
            code,
            args,
            no_token,
            oneway,
            timeout,
            sm,
        } => call(
            &sm.connect()?,
            &service,
            code,
            &args,
            !no_token,
            oneway,
            timeout,
        ),
        Command::ServiceManager { policy, sm } => serve(policy, sm),
    }
}

fn ls(sm: &ServiceManager) -> Result<()> {
    use comfy_table::{presets::NOTHING, Table};
    let services = sm.services()?;
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_header(["SERVICE", "PID", "UID", "COMMAND"]);
    for s in services {
        t.add_row([
            s.name,
            s.pid.to_string(),
            crate::ls::owner(s.uid),
            command_of(s.pid),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn command_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

fn call(
    sm: &ServiceManager,
    service: &str,
    code: u32,
    args: &[Arg],
    token: bool,
    oneway: bool,
    timeout: Option<Duration>,
) -> Result<()> {
    binder::check_name(service)?;
    let obj = sm
        .check_service(service)?
        .with_context(|| format!("no service {service:?} (see `ipc binder ls`)"))?;
    let mut data = Parcel::new();
    if token {
        let d = descriptor(&obj, timeout).with_context(|| format!("{service}: interface"))?;
        if !d.is_empty() {
            data.write_interface_token(&d)?;
        }
    }
    for a in args {
        match a {
            Arg::I32(v) => data.write_i32(*v),
            Arg::I64(v) => data.write_i64(*v),
            Arg::S16(s) => data.write_string16(Some(s))?,
            Arg::S8(s) => data.write_string8(s)?,
            Arg::Fd(p) => {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("fd:{}: cannot open", p.display()))?;
                data.write_owned_fd(f.into())?;
            }
        }
    }
    let flags = if oneway { binder::FLAG_ONEWAY } else { 0 };
    let reply = obj.transact(code, data, flags, timeout).map_err(|e| {
        if e.status() == Status::TimedOut {
            anyhow::Error::new(TimedOut(format!("{service}: {e}")))
        } else {
            anyhow::anyhow!("{service}: transaction {code} failed: {e}")
        }
    })?;
    if !oneway {
        println!("{}", dump(&reply));
    }
    Ok(())
}

fn descriptor(obj: &Object, timeout: Option<Duration>) -> ipckit::binder::Result<String> {
    let mut r = obj.transact(INTERFACE_TRANSACTION, Parcel::new(), 0, timeout)?;
    Ok(r.read_string16()?.unwrap_or_default())
}

/// The reply as Android's `service call` prints it: 32-bit words in hex,
/// four to a line, with the bytes as text.
fn dump(p: &Parcel) -> String {
    let b = p.as_bytes();
    if b.is_empty() {
        return "Result: Parcel(empty)".into();
    }
    let mut out = String::from("Result: Parcel(");
    for (i, chunk) in b.chunks(16).enumerate() {
        if i > 0 {
            out.push_str("\n  ");
        }
        let _ = write!(out, "0x{:08x}: ", i * 16);
        for w in chunk.chunks(4) {
            let mut word = [0u8; 4];
            word[..w.len()].copy_from_slice(w);
            let _ = write!(out, "{:08x} ", u32::from_le_bytes(word));
        }
        for _ in chunk.len().div_ceil(4)..4 {
            out.push_str("         ");
        }
        out.push('\'');
        out.extend(chunk.iter().map(|&c| crate::format::printable(c)));
        out.push('\'');
    }
    out.push(')');
    if p.fd_count() > 0 {
        let _ = write!(out, " with {} descriptor(s)", p.fd_count());
    }
    out
}

fn serve(policy: Option<std::path::PathBuf>, sm: SmArg) -> Result<()> {
    let policy = match &policy {
        Some(p) => Policy::load(p).with_context(|| "--policy")?,
        None => Policy::default(),
    };
    let addr = match sm.addr {
        Some(a) => a,
        None => binder::service_manager_addr()?,
    };
    let server = ServiceManagerServer::builder()
        .policy(policy)
        .bind(&addr)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "ipc binder: service manager at {addr} (pid {})",
        std::process::id()
    );
    server.join();
    bail!("the service manager's socket failed")
}
