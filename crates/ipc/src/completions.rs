//! `ipc completions SHELL` and `ipc man [--dir DIR]`: shell completions
//! (clap_complete) and man pages (clap_mangen), generated from the same
//! definitions as the parser, so they never disagree with it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write ipc.1 and one page per subcommand (ipc-recv.1, …) into DIR
    /// instead of printing ipc.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The parser's definition (the bench's internal peer command is parsed
/// apart, so it is not in it).
fn command() -> clap::Command {
    crate::Cli::command()
}

pub fn run(args: Args) -> Result<()> {
    let mut cmd = command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "ipc", &mut buf);
    print(&buf)
}

/// Writes to stdout; a reader that closed it (`| head`) ends ipc quietly.
fn print(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(crate::StdoutClosed.into()),
        r => r.context("writing to stdout"),
    }
}

pub fn man(args: ManArgs) -> Result<()> {
    let cmd = command();
    let Some(dir) = args.dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return print(&buf);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
    let write = |name: &str, c: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands() {
        let name = format!("ipc-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        write(&name, page)?;
    }
    write("ipc", cmd)
}
