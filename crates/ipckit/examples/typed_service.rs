//! A typed request/reply service, written once and run over three
//! mechanisms with only the address changed: a Unix socket, a POSIX
//! message queue and a shared-memory ring.
//!
//! ```text
//! cargo run -p ipckit --example typed_service
//! ```
//!
//! For each address this process starts a copy of itself as the server
//! (`typed_service serve ADDR`), then calls it as a client.

use std::process::{Command, Stdio};
use std::time::Duration;

use ipckit::rpc::{Client, Server};
use ipckit::Address;
use serde::{Deserialize, Serialize};

/// What clients ask.
#[derive(Serialize, Deserialize, Debug)]
enum Request {
    Add(i64, i64),
    Upper(String),
    Stats,
}

/// What the server answers.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Response {
    Sum(i64),
    Text(String),
    Served { pid: u32 },
}

fn handle(req: Request) -> Response {
    match req {
        Request::Add(a, b) => Response::Sum(a + b),
        Request::Upper(s) => Response::Text(s.to_uppercase()),
        Request::Stats => Response::Served {
            pid: std::process::id(),
        },
    }
}

fn serve(addr: &Address) -> std::io::Result<()> {
    let listener = ipckit::listen(addr)?;
    // Tell the parent we are listening, then serve until killed.
    println!("ready");
    Server::new(listener).serve(handle)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return Ok(serve(&args[2].parse()?)?);
    }
    let me = std::process::id();
    for text in [
        format!("unix:@typed-service-{me}"),
        format!("mq:/typed-service-{me}"),
        format!("ring:typed-service-{me}"),
    ] {
        let addr: Address = text.parse()?;
        let mut server = Command::new(std::env::current_exe()?)
            .args(["serve", &text])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
            &mut ready,
        )?;

        // The client: the same code whatever the address.
        let t = Duration::from_secs(5);
        let client = Client::<Request, Response>::connect_timeout(&addr, t)?;
        let sum = client.call(&Request::Add(40, 2), t)?;
        let upper = client.call(&Request::Upper("over any mechanism".into()), t)?;
        let who = client.call(&Request::Stats, t)?;
        println!("{text:<32} {sum:?} {upper:?} from {who:?}");
        assert_eq!(sum, Response::Sum(42));
        assert_eq!(who, Response::Served { pid: server.id() });

        server.kill()?;
        server.wait()?;
        // Killed, the server could not remove its queue or ring.
        match addr {
            Address::Mq(name) => ipckit::mq::unlink(&name)?,
            Address::Ring(name) => ipckit::ring::unlink(&name)?,
            _ => {}
        }
    }
    Ok(())
}
