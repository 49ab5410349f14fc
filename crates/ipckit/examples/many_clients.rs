//! A server for many clients at once: four client processes, two threads
//! each, all calling one request/reply server over one Unix socket
//! address; the server runs its handler on a pool of threads and stops
//! cleanly at the end.
//!
//! ```text
//! cargo run -p ipckit --example many_clients
//! ```

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipckit::rpc::{Client, Server};
use ipckit::Address;

const CALLS: u32 = 200;

/// `many_clients client ADDR`: two threads share one client.
fn client(addr: &Address) -> Result<(), Box<dyn std::error::Error>> {
    let client = Arc::new(Client::<(u32, u32), u32>::connect_timeout(
        addr,
        Duration::from_secs(5),
    )?);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || -> Result<(), ipckit::rpc::CallError> {
                for i in 0..CALLS / 2 {
                    // The server answers with the sum: each caller checks
                    // that it got its own answer back.
                    let got = client.call(&(std::process::id(), i), Duration::from_secs(5))?;
                    assert_eq!(got, std::process::id() + i);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread")?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        return client(&args[2].parse()?);
    }
    let addr: Address = format!("unix:@many-clients-{}", std::process::id()).parse()?;
    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let tally = seen.clone();
    let server =
        Server::new(ipckit::listen(&addr)?)
            .workers(4)
            .spawn(move |(pid, i): (u32, u32)| {
                *tally.lock().unwrap().entry(pid).or_default() += 1;
                pid + i
            })?;
    let mut children = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["client", &addr.to_string()])
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for c in &mut children {
        assert!(c.wait()?.success(), "a client failed");
    }
    server.stop()?;
    let seen = seen.lock().unwrap();
    for c in &children {
        println!("client {}: {} calls answered", c.id(), seen[&c.id()]);
        assert_eq!(seen[&c.id()], CALLS);
    }
    Ok(())
}
