//! Request/reply between processes: a server process on every address
//! kind, many threads calling through one client at once (each gets its
//! own reply although the server answers out of order), errors from the
//! server, timeouts with late replies, a server that dies, and a hostile
//! client that sends garbage or names someone else's queue as its inbox.
//!
//! This test binary re-executed with `IPCKIT_RPC_PEER=<role>:<arg>` plays
//! the server (or the hostile client).

use std::io;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipckit::rpc::{CallError, Client, Server};
use ipckit::{listen, Address, MessageReceiver, MessageSenderExt, RecvTimeoutError};
use libtest_mimic::Failed;
use serde::{Deserialize, Serialize};

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_RPC_PEER";

#[derive(Serialize, Deserialize, Debug)]
enum Req {
    /// Answered with `(caller, seq, server pid)` after `delay_ms`.
    Echo {
        caller: u32,
        seq: u32,
        delay_ms: u32,
    },
    /// Makes the handler panic.
    Panic,
}

type Resp = (u32, u32, u32);

fn handle(req: Req) -> Resp {
    match req {
        Req::Echo {
            caller,
            seq,
            delay_ms,
        } => {
            std::thread::sleep(Duration::from_millis(delay_ms.into()));
            (caller, seq, std::process::id())
        }
        Req::Panic => panic!("asked to panic"),
    }
}

/// `serve:ADDR`: listens, prints the address clients use, serves forever.
fn serve(addr: &str) -> io::Result<()> {
    let listener = listen(&addr.parse()?)?;
    println!("{}", listener.local_address()?);
    Server::new(listener).workers(4).serve(handle)
}

/// Starts a server process on `addr` and returns it with the address to
/// call.
fn start_server(addr: &str) -> Result<(Child, Address), Failed> {
    let mut child = peer_command(VAR, "serve", addr)?
        .stdout(Stdio::piped())
        .spawn()?;
    let line = common::first_line(&mut child)?;
    let addr: Address = line
        .trim()
        .parse()
        .map_err(|e| format!("server said {line:?}: {e}"))?;
    Ok((child, addr))
}

/// Stops a server process and removes what it made (killed, it cannot).
fn stop_server(mut child: Child, addr: &Address) {
    let _ = child.kill();
    let _ = child.wait();
    common::remove_left_object(addr);
}

/// Every mechanism in the registry, a server process each.
fn every_address() -> Result<(), Failed> {
    for m in ipckit::registry::MECHANISMS {
        let text = m.scratch_address(&unique("rpc")).to_string();
        let (server, addr) = start_server(&text)?;
        let result = concurrent_callers(&addr, server.id());
        stop_server(server, &addr);
        result.map_err(|e| format!("{text}: {}", e.message().unwrap_or("failed")))?;
    }
    Ok(())
}

/// Eight threads call through one client; the server's four workers
/// answer requests that take different times, so replies come back out
/// of order and each caller must still get its own.
fn concurrent_callers(addr: &Address, server_pid: u32) -> Result<(), Failed> {
    let client = Arc::new(Client::<Req, Resp>::connect_timeout(addr, T)?);
    let threads: Vec<_> = (0..8u32)
        .map(|caller| {
            let client = client.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for seq in 0..25u32 {
                    let delay_ms = (caller * 7 + seq * 3) % 4;
                    let req = Req::Echo {
                        caller,
                        seq,
                        delay_ms,
                    };
                    let got = client.call(&req, T).map_err(|e| e.to_string())?;
                    if got != (caller, seq, server_pid) {
                        return Err(format!("{req:?} answered with {got:?}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a caller panicked")??;
    }
    Ok(())
}

/// A handler that panics answers that one call with an error; the server
/// goes on. A request of the wrong type is an error naming the type.
fn server_errors() -> Result<(), Failed> {
    let (server, addr) = start_server(&format!("unix:@{}", unique("err")))?;
    let result = (|| -> Result<(), Failed> {
        let client = Client::<Req, Resp>::connect_timeout(&addr, T)?;
        match client.call(&Req::Panic, T) {
            Err(CallError::Remote(why)) => ensure(
                why.contains("panicked") && why.contains("asked to panic"),
                || why.clone(),
            )?,
            other => return Err(format!("a panicking handler: {other:?}").into()),
        }
        let echo = Req::Echo {
            caller: 1,
            seq: 2,
            delay_ms: 0,
        };
        ensure(client.call(&echo, T)?.1 == 2, || "after a panic".into())?;
        let wrong = Client::<String, Resp>::connect_timeout(&addr, T)?;
        match wrong.call(&"x".repeat(40), T) {
            Err(CallError::Remote(why)) => ensure(why.contains("Req"), || why.clone())?,
            other => return Err(format!("a request of the wrong type: {other:?}").into()),
        }
        Ok(())
    })();
    stop_server(server, &addr);
    result
}

/// A call that times out gets `Timeout`; its reply, coming later, is not
/// taken by the next call. A server that dies is `Disconnected`, at once.
fn timeouts_and_death() -> Result<(), Failed> {
    let (server, addr) = start_server(&format!("unix-seq:@{}", unique("late")))?;
    let pid = server.id();
    let client = Client::<Req, Resp>::connect_timeout(&addr, T)?;
    let slow = Req::Echo {
        caller: 9,
        seq: 1,
        delay_ms: 300,
    };
    let result = (|| -> Result<(), Failed> {
        match client.call(&slow, Duration::from_millis(50)) {
            Err(CallError::Timeout) => {}
            other => return Err(format!("a slow call: {other:?}").into()),
        }
        let next = Req::Echo {
            caller: 9,
            seq: 2,
            delay_ms: 0,
        };
        let got = client.call(&next, T)?;
        ensure(got == (9, 2, pid), || format!("the next call got {got:?}"))?;
        Ok(())
    })();
    stop_server(server, &addr);
    result?;
    let start = Instant::now();
    match client.call(&slow, T) {
        Err(CallError::Disconnected) | Err(CallError::Io(_)) => {}
        other => return Err(format!("a call to a dead server: {other:?}").into()),
    }
    ensure(start.elapsed() < Duration::from_secs(2), || {
        format!("noticed the death after {:?}", start.elapsed())
    })
}

/// `hostile:ADDR|VICTIM`: sends garbage, then a well-formed request whose
/// reply address is the victim queue.
fn hostile(arg: &str) -> io::Result<()> {
    let (addr, victims) = arg.split_once('|').expect("ADDR|VICTIM...");
    let mut c = ipckit::connect_timeout(&addr.parse()?, Some(T))?;
    for junk in [&b""[..], b"\x01", &[0xff; 9], &[0xff; 64]] {
        c.send_timeout(junk, T).map_err(io::Error::from)?;
    }
    for victim in victims.split('|') {
        let mut msg = 7u64.to_le_bytes().to_vec();
        msg.extend_from_slice(&(victim.len() as u16).to_le_bytes());
        msg.extend_from_slice(victim.as_bytes());
        msg.extend_from_slice(b"\x00\x01\x02\x00");
        c.send_timeout(msg, T).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Garbage does not stop the server, and it does not send replies to an
/// address that is not an inbox of its own.
fn hostile_client() -> Result<(), Failed> {
    // A POSIX queue server, and a System V one: the victim is another
    // queue of the same kind (for System V, named as a reply address of
    // that queue); the System V server is also asked to reply with type
    // 1, its own requests' type.
    let sysv_victim = common::unique_key();
    for (service, victim, extra) in [
        (
            format!("mq:/{}", unique("svc")),
            format!("mq:/{}", unique("victim")),
            String::new(),
        ),
        (
            format!("sysv-mq:{}", common::unique_key()),
            format!("sysv-mq:{sysv_victim}"),
            format!("|sysv-mq:{sysv_victim}.reply.4294967296"),
        ),
    ] {
        let victim: Address = victim.parse()?;
        let victim_listener = listen(&victim)?;
        let mut victim_rx = victim_listener.accept()?;
        let (server, addr) = start_server(&service)?;
        let result = (|| -> Result<(), Failed> {
            let mut victims = format!("{victim}{extra}");
            if service.starts_with("sysv-mq:") {
                victims.push_str(&format!("|{addr}.reply.1"));
            }
            let out = peer_command(VAR, "hostile", &format!("{addr}|{victims}"))?.output()?;
            ensure(out.status.success(), || {
                String::from_utf8_lossy(&out.stderr).into_owned()
            })?;
            let client = Client::<Req, Resp>::connect_timeout(&addr, T)?;
            let echo = Req::Echo {
                caller: 3,
                seq: 4,
                delay_ms: 0,
            };
            ensure(client.call(&echo, T)?.1 == 4, || "after garbage".into())?;
            if let Address::SysvMq(key) = victim {
                // Any type at all, not only what a listener takes.
                let n = ipckit::sysv::MessageQueue::builder(key)
                    .open()?
                    .status()?
                    .messages;
                ensure(n == 0, || format!("{n} messages in the victim"))?;
            }
            match victim_rx.recv_timeout(Duration::from_millis(200)) {
                Err(RecvTimeoutError::Timeout) => Ok(()),
                other => {
                    Err(format!("{service}: the server wrote to the victim: {other:?}").into())
                }
            }
        })();
        stop_server(server, &addr);
        result?;
    }
    Ok(())
}

/// `call:ADDR`: ten calls, each checked.
fn call_ten(addr: &str) -> io::Result<()> {
    let client = Client::<Req, Resp>::connect_timeout(&addr.parse()?, T)?;
    for seq in 0..10 {
        let req = Req::Echo {
            caller: 7,
            seq,
            delay_ms: 0,
        };
        let (c, s, _) = client.call(&req, T)?;
        if (c, s) != (7, seq) {
            return Err(io::Error::other(format!("{req:?} answered with {c} {s}")));
        }
    }
    Ok(())
}

/// A server on its own threads answers a client process, then stops at
/// once when told and removes what it made.
fn spawned_server_stops_and_cleans_up() -> Result<(), Failed> {
    for m in ipckit::registry::MECHANISMS {
        let addr = m.scratch_address(&unique("stop"));
        let listener = listen(&addr)?;
        let target = listener.local_address()?;
        let server = Server::new(listener).workers(2).spawn(handle)?;
        let out = peer_command(VAR, "call", &target.to_string())?.output()?;
        ensure(out.status.success(), || {
            format!("{target}: {}", String::from_utf8_lossy(&out.stderr))
        })?;
        let start = Instant::now();
        server.stop()?;
        ensure(start.elapsed() < Duration::from_secs(2), || {
            format!("{target}: stopping took {:?}", start.elapsed())
        })?;
        // A queue, ring, FIFO or mailbox is removed; nobody listens on a
        // socket (UDP cannot tell: a datagram to nobody is sent all the
        // same).
        let gone = match &addr {
            Address::Mq(_) | Address::Ring(_) | Address::Fifo(_) | Address::Mailbox(_) => {
                !common::object_exists(&addr)
            }
            Address::Udp(_) => true,
            _ => ipckit::connect(&target)
                .and_then(|mut c| {
                    c.send_timeout(b"x", Duration::from_millis(100))
                        .map_err(io::Error::from)
                })
                .is_err(),
        };
        ensure(gone, || format!("{target}: still there after stop"))?;
    }
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[("serve", serve), ("hostile", hostile), ("call", call_ten)],
            )
        })],
        "rpc",
        Duration::from_secs(120),
    );
    common::start_broker().expect("a mailbox broker for the registry's mailbox: entry");
    common::run_cases(vec![
        ("every_address", every_address),
        ("server_errors", server_errors),
        ("timeouts_and_death", timeouts_and_death),
        ("hostile_client", hostile_client),
        (
            "spawned_server_stops_and_cleans_up",
            spawned_server_stops_and_cleans_up,
        ),
    ]);
}
