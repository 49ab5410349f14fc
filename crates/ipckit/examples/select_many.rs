//! The notes' `select()`: one thread waits on a Unix datagram socket, a
//! POSIX message queue and a shared-memory ring at once, and takes each
//! message as it comes from three child processes.
//!
//! ```text
//! cargo run -p ipckit --example select_many
//! ```

use std::process::Command;
use std::time::Duration;

use ipckit::prelude::*;
use ipckit::select::Selector;
use ipckit::Address;

/// `select_many send ADDR DELAY_MS`: waits, then sends one message.
fn send(addr: &Address, delay: Duration) -> std::io::Result<()> {
    std::thread::sleep(delay);
    let mut tx = ipckit::connect_timeout(addr, Some(Duration::from_secs(5)))?;
    tx.send(format!("hello from {} after {delay:?}", std::process::id()))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("send") {
        return Ok(send(
            &args[2].parse()?,
            Duration::from_millis(args[3].parse()?),
        )?);
    }
    let me = std::process::id();
    let addrs: Vec<Address> = [
        format!("unix-dgram:@select-many-{me}"),
        format!("mq:/select-many-{me}"),
        format!("ring:select-many-{me}"),
    ]
    .iter()
    .map(|a| a.parse())
    .collect::<Result<_, _>>()?;
    // Listening on each gives its receiving end (made here, removed when
    // dropped).
    let listeners = addrs
        .iter()
        .map(ipckit::listen)
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ends = listeners
        .iter()
        .map(|l| l.accept())
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut sel = Selector::new()?;
    let tokens = ends
        .iter_mut()
        .map(|e| sel.register(e))
        .collect::<std::io::Result<Vec<_>>>()?;
    // The ring's sender comes last, the socket's first.
    let mut children = Vec::new();
    for (addr, delay) in addrs.iter().zip([300, 100, 500]) {
        children.push(
            Command::new(std::env::current_exe()?)
                .args(["send", &addr.to_string(), &delay.to_string()])
                .spawn()?,
        );
    }
    let mut got = 0;
    while got < addrs.len() {
        let ready = sel.select(Some(Duration::from_secs(5)))?;
        if ready.is_empty() {
            return Err("nothing came within 5 s".into());
        }
        for t in ready {
            let i = tokens.iter().position(|x| *x == t).expect("our token");
            // Someone else could have taken it first: try, do not wait.
            if let Ok(msg) = ends[i].try_recv() {
                println!(
                    "{:<28} {}",
                    addrs[i].to_string(),
                    String::from_utf8_lossy(&msg)
                );
                got += 1;
            }
        }
    }
    for mut c in children {
        c.wait()?;
    }
    Ok(())
}
