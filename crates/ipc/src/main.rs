//! `ipc`: send, receive and benchmark Linux IPC from the shell.
//!
//! Exit status: 0 on success (also when stdout is a closed pipe, as in
//! `ipc recv … | head -1`), 1 when a `--timeout` expired, 2 on any other
//! error, which is printed as one line on stderr (a usage error as clap
//! words it: what is wrong, a suggestion, the usage line).

mod addr;
mod args;
mod bench;
mod binder;
mod broker;
mod call;
mod cleanup;
mod completions;
mod format;
mod ls;
mod mailbox;
mod prop;
mod propd;
mod recv;
mod rm;
mod sem;
mod send;
mod serve;
mod shm;
mod signal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Send, receive and benchmark Linux IPC mechanisms.
#[derive(Parser, Debug)]
#[command(
    name = "ipc",
    version,
    about,
    long_about = None,
    after_help = "Addresses: fifo:PATH, unix:PATH, unix:@NAME, unix-dgram:…, unix-seq:…, \
                  tcp:HOST:PORT, udp:HOST:PORT, mq:/NAME, sysv-mq:KEY, ring:NAME, mailbox:NAME, \
                  pid:PID; for ipc rm also shm:/NAME, \
                  sysv-shm:KEY, sem:/NAME, sysv-sem:KEY\n\
                  Exit status: 0 done (also when stdout was closed early), 1 timed out, 2 error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send messages: each MESSAGE argument is one message; with none, each
    /// line of standard input is a message.
    Send(send::Args),
    /// Receive messages and print each on its own line.
    Recv(recv::Args),
    /// List every IPC object on the machine and who holds it.
    Ls(ls::Args),
    /// Remove named IPC objects (queues, shared memory, semaphores, FIFOs).
    Rm(rm::Args),
    /// Send one request and print its reply (to ipc serve, or a Rust
    /// ipckit::rpc::Server).
    Call(call::Args),
    /// Answer requests by running a command for each (request on its
    /// stdin, reply from its stdout), many at once, like inetd.
    Serve(serve::Args),
    /// Shared memory from the shell: create, write, read and stat POSIX
    /// (shm:/NAME) and System V (sysv-shm:KEY) objects.
    Shm(shm::Args),
    /// Semaphores from the shell: create, post (V), wait (P) and get POSIX
    /// named semaphores (sem:/NAME) and System V sets (sysv-sem:KEY).
    Sem(sem::Args),
    /// Send a signal (with a value: sigqueue), or wait for signals and
    /// print each delivery with its sender and value.
    Signal(signal::Args),
    /// Run the mailbox broker (mailbox: and pid: addresses reach it).
    Broker(broker::Args),
    /// Mailboxes at the broker: create (with limits, retention, ack and
    /// dead-letter settings), ls, stat, rm.
    Mailbox(mailbox::Args),
    /// Binder in user space: list services (ls), call one (call), run the
    /// service manager (service-manager).
    Binder(binder::Args),
    /// Properties: get, set, ls and watch named values every process reads
    /// from shared memory (ipc propd writes them).
    Prop(prop::Args),
    /// Run the property daemon: the one writer of a property store, which
    /// checks who may set what.
    Propd(propd::Args),
    /// Measure every mechanism between two real processes.
    Bench(bench::Args),
    /// Print a completion script: ipc completions bash >
    /// ~/.local/share/bash-completion/completions/ipc (zsh, fish too).
    Completions(completions::Args),
    /// Print the man page (ipc.1), or write one per subcommand with --dir.
    Man(completions::ManArgs),
}

/// A `--timeout` that expired: exit status 1.
#[derive(Debug)]
pub struct TimedOut(pub String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Standard output was closed by its reader (`ipc recv … | head -1`):
/// a normal way to stop, exit status 0.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// A failure already reported on stderr (each on its own line, as `ipc rm`
/// does for several objects): exit status 2, nothing more printed.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (reported above)")
    }
}

impl std::error::Error for Reported {}

/// The other process of `ipc bench`, `ipc __bench-peer …`: internal, so
/// parsed apart from the user's commands (and absent from their help,
/// completions and man pages).
#[derive(Parser, Debug)]
#[command(name = "ipc __bench-peer")]
struct BenchPeer {
    #[command(flatten)]
    args: bench::PeerArgs,
}

/// The name the bench re-executes `ipc` with for its peer.
pub const BENCH_PEER: &str = "__bench-peer";

fn main() -> ExitCode {
    // A usage error gets clap's whole message (which argument is missing,
    // "a similar subcommand exists", the possible values, the usage line)
    // and exit status 2; --help and --version print and exit 0.
    let mut argv = std::env::args_os();
    let res = if argv.nth(1).is_some_and(|a| a == BENCH_PEER) {
        bench::peer(BenchPeer::parse_from(std::env::args_os().skip(1)).args)
    } else {
        run(Cli::parse())
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Reported>().is_some() => ExitCode::from(2),
        Err(e) => {
            eprintln!("ipc: {e:#}{}", hint(&e));
            if e.downcast_ref::<TimedOut>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Send(a) => send::run(a),
        Command::Recv(a) => recv::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Call(a) => call::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Shm(a) => shm::run(a),
        Command::Sem(a) => sem::run(a),
        Command::Signal(a) => signal::run(a),
        Command::Broker(a) => broker::run(a),
        Command::Mailbox(a) => mailbox::run(a),
        Command::Binder(a) => binder::run(a),
        Command::Prop(a) => prop::run(a),
        Command::Propd(a) => propd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => completions::man(a),
    }
}

/// What to do about an error whose cause is a process limit, in shell
/// terms: appended to the error line.
fn hint(e: &anyhow::Error) -> String {
    // The errno, as a raw OS error, or in the text of an error that added
    // context to one (io::Error's text always ends in "(os error N)").
    let text = format!("{e:#}");
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>()?.raw_os_error())
        .or_else(|| {
            ["(os error 24)", "(os error 23)"]
                .iter()
                .find(|t| text.contains(*t))
                .map(|t| if t.contains("24") { 24 } else { 23 })
        });
    match errno {
        Some(24) => {
            // EMFILE: this process's own limit; say what it is, if there is
            // a descriptor left to read it with.
            let soft = std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| {
                    l.lines()
                        .find(|l| l.starts_with("Max open files"))
                        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
                });
            let limit = soft.map_or_else(
                || "has as many open files as its limit allows".into(),
                |n| format!("may have at most {n} open files"),
            );
            format!(" (this process {limit}: raise the limit with `ulimit -n 1024` in the shell that runs ipc)")
        }
        // ENFILE: the whole system's table.
        Some(23) => " (the system-wide limit on open files is reached: see \
                      /proc/sys/fs/file-max and what holds so many files)"
            .into(),
        _ => String::new(),
    }
}
