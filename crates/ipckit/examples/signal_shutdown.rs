//! A server that reloads its configuration on SIGHUP and shuts down
//! cleanly on SIGTERM (or Ctrl-C), with ipckit's signal handler: the
//! handler only records each signal, and the reaction runs as ordinary
//! code in the main thread while a worker thread goes on working.
//!
//! Run alone, it starts itself as the server, sends it two SIGHUPs and a
//! SIGTERM, and prints what the server said. To drive a server by hand:
//!
//! ```sh
//! cargo run -p ipckit --example signal_shutdown -- serve
//! ipc signal send PID HUP        # from another shell
//! ipc signal send PID TERM
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipckit::signal::{self, Handler, Signal};

fn main() -> io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let mut server = Command::new(std::env::current_exe()?)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let mut lines = BufReader::new(server.stdout.take().expect("piped")).lines();
    let mut next = || -> io::Result<String> {
        let line = lines
            .next()
            .unwrap_or_else(|| Err(io::Error::other("the server ended early")))?;
        println!("server: {line}");
        Ok(line)
    };
    next()?; // serving as pid ...
    for _ in 0..2 {
        signal::kill(pid, Signal::HUP)?;
        next()?; // reloaded ...
    }
    signal::kill(pid, Signal::TERM)?;
    while let Ok(line) = next() {
        if line.starts_with("clean shutdown") {
            break;
        }
    }
    let status = server.wait()?;
    println!("the server exited: {status}");
    Ok(())
}

/// The server: a worker thread counts "requests", the main thread reacts
/// to signals.
fn serve() -> io::Result<()> {
    // Installed before anything else, so no signal finds the default action
    // (which for SIGHUP and SIGTERM is to terminate).
    let handler = Handler::new(&[Signal::HUP, Signal::TERM, Signal::INT])?;
    let generation = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (generation, stop) = (generation.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut served = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Work done with whatever configuration is current.
                let _config = generation.load(Ordering::Relaxed);
                served += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            served
        })
    };
    println!("serving as pid {}", std::process::id());
    io::stdout().flush()?;
    for info in handler.iter() {
        let info = info?;
        if info.signal == Signal::HUP {
            // Ordinary code: reading files, allocating, locking are fine.
            let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
            println!(
                "reloaded the configuration (generation {g}), asked by pid {}",
                info.pid
            );
            io::stdout().flush()?;
            continue;
        }
        println!("{} from pid {}: shutting down", info.signal, info.pid);
        break;
    }
    stop.store(true, Ordering::Relaxed);
    let served = worker.join().expect("the worker panicked");
    // Dropping the handler gives the signals their default actions back.
    drop(handler);
    println!(
        "clean shutdown: work items done {served}, configuration generation {}",
        generation.load(Ordering::Relaxed)
    );
    Ok(())
}
