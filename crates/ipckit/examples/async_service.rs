//! An async service (feature `tokio`): one server process answers with
//! async handlers that wait (a timer stands in for a database or another
//! service) while serving other requests, and one client task keeps 100
//! calls in flight through one connection. Run over a Unix socket and a
//! System V queue, with only the address changed. The server also stops
//! when told to: a `tokio::select!` over the service and a semaphore a
//! parent posts (a P operation through the runtime).
//!
//! ```text
//! cargo run -p ipckit --features tokio --example async_service
//! ```

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipckit::aio::{AsyncClient, AsyncServer, AsyncWaiter};
use ipckit::sem::{NamedSemaphore, Waiter};
use ipckit::Address;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Lookup {
    key: u32,
    /// How long the (pretend) backend takes, in milliseconds.
    work_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Found {
    key: u32,
    value: u64,
    /// Handlers running in the server when this one started (itself
    /// included).
    in_flight: usize,
}

/// The server process: serves `addr` until the semaphore `stop` is posted.
async fn serve(addr: &Address, stop: &str) -> std::io::Result<()> {
    let server = AsyncServer::<Lookup, Found>::new(ipckit::listen(addr)?);
    let mut stop = AsyncWaiter::new(Waiter::named(Arc::new(
        NamedSemaphore::builder(stop).open()?,
    ))?)?;
    println!("ready");
    let running = Arc::new(AtomicUsize::new(0));
    tokio::select! {
        r = server.serve(move |q: Lookup| {
            let running = running.clone();
            async move {
                let in_flight = running.fetch_add(1, Ordering::SeqCst) + 1;
                // A handler that waits does not hold up the others.
                tokio::time::sleep(Duration::from_millis(q.work_ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Found { key: q.key, value: u64::from(q.key) * 1000, in_flight }
            }
        }) => r,
        r = stop.acquire() => r, // the parent's V: stop serving
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return Ok(rt.block_on(serve(&args[2].parse()?, &args[3]))?);
    }
    let me = std::process::id();
    let stop_name = format!("/async-service-stop-{me}");
    let stop = NamedSemaphore::builder(&stop_name).value(0).create()?;
    for text in [
        format!("unix:@async-service-{me}"),
        // A System V key made of this process's id.
        format!("sysv-mq:{}", 0x5e00_0000 | (me & 0xff_ffff)),
    ] {
        let addr: Address = text.parse()?;
        let mut server = Command::new(std::env::current_exe()?)
            .args(["serve", &text, &stop_name])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
            &mut ready,
        )?;

        let (answered, most, took) = rt.block_on(async {
            let t = Duration::from_secs(10);
            let client = Arc::new(AsyncClient::<Lookup, Found>::connect(&addr, t).await?);
            let start = Instant::now();
            // 100 calls at once from one task, each taking the server 50 ms.
            let mut calls = tokio::task::JoinSet::new();
            for key in 0..100 {
                let c = client.clone();
                calls.spawn(async move { c.call(&Lookup { key, work_ms: 50 }, t).await });
            }
            let (mut answered, mut most) = (0, 0);
            while let Some(r) = calls.join_next().await {
                let found = r.expect("task")?;
                assert_eq!(found.value, u64::from(found.key) * 1000);
                answered += 1;
                most = most.max(found.in_flight);
            }
            Ok::<_, Box<dyn std::error::Error>>((answered, most, start.elapsed()))
        })?;
        // 100 × 50 ms of work: far less than 5 s when the handlers overlap.
        println!(
            "{text:<32} {answered} calls answered in {} ms, up to {most} handlers at once",
            took.as_millis()
        );
        stop.post()?;
        let status = server.wait()?;
        println!("{text:<32} server stopped: {status}");
    }
    Ok(())
}
