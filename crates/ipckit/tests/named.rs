//! `create_or_open` between racing processes: for every kind of named
//! object, several processes start at once and exactly one of them reports
//! that it created the object (`created()`), so that exactly one
//! initialises it.
//!
//! This test binary re-executed with `IPCKIT_NAMED_PEER=<kind>:<name>`
//! plays a racer.

use std::io::{self, BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use ipckit::fifo::Fifo;
use ipckit::mq::PosixQueue;
use ipckit::ring::Ring;
use ipckit::sem::NamedSemaphore;
use ipckit::shm::Shm;
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, unique};

const VAR: &str = "IPCKIT_NAMED_PEER";

/// Opens or creates the object, says which, and holds it until stdin
/// closes.
fn racer(spec: &str) -> io::Result<()> {
    let (kind, name) = spec.split_once(':').expect("kind:name");
    let created = match kind {
        "shm" => keep_until_eof(Shm::builder(name).size(4096).create_or_open()?.created()),
        "mq" => keep_until_eof(
            PosixQueue::builder(name)
                .capacity(4, 64)
                .create_or_open()?
                .created(),
        ),
        "sem" => keep_until_eof(NamedSemaphore::builder(name).create_or_open()?.created()),
        "fifo" => keep_until_eof(Fifo::builder(name).create_or_open()?.created()),
        "ring" => keep_until_eof(Ring::builder(name).create_or_open()?.created()),
        other => return Err(io::Error::other(format!("unknown kind {other}"))),
    };
    created
}

/// Prints whether the object was created, then waits for stdin to close.
/// (Evaluated while the object is still alive: the caller's value lives
/// until this returns.)
fn keep_until_eof(created: bool) -> io::Result<()> {
    println!("{}", if created { "created" } else { "opened" });
    let _ = io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn race(kind: &str, name: &str) -> Result<(), Failed> {
    let mut racers = (0..6)
        .map(|_| {
            peer_command(VAR, kind, name)
                .and_then(|mut c| c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn())
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut said = Vec::new();
    for r in &mut racers {
        let mut line = String::new();
        BufReader::new(r.stdout.as_mut().ok_or("no stdout")?).read_line(&mut line)?;
        said.push(line.trim().to_string());
    }
    for mut r in racers {
        drop(r.stdin.take());
        ensure(r.wait()?.success(), || format!("{kind}: a racer failed"))?;
    }
    let created = said.iter().filter(|s| *s == "created").count();
    ensure(created == 1, || format!("{kind}: {said:?}"))
}

fn create_or_open_says_who_created() -> Result<(), Failed> {
    race("shm", &format!("/{}", unique("race")))?;
    race("mq", &format!("/{}", unique("race")))?;
    race("sem", &format!("/{}", unique("race")))?;
    race("ring", &unique("race"))?;
    let dir = tempfile::tempdir()?;
    race("fifo", dir.path().join("f").to_str().ok_or("path")?)
}

fn main() {
    common::play_peer_or_arm_watchdog(&[(VAR, racer)], "named", Duration::from_secs(120));
    common::run_cases(vec![(
        "create_or_open_says_who_created",
        create_or_open_says_who_created,
    )]);
}
