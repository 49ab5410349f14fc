//! Binder between processes: calls with the caller's identity, nested
//! calls through three processes on the waiting threads, descriptors both
//! ways, one-way ordering under load from several threads, objects
//! passed both ways and released when nobody holds them, timeouts, and
//! death notices after `kill -9`.
//!
//! This test binary re-executed with `IPCKIT_BINDER_PEER=svc:ADDR` is a
//! service process: it serves [`Service`] at `ADDR`, prints `ready`, and
//! exits when its standard input closes.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipckit::binder::{
    self, Binder, Call, Connector, Object, Parcel, Policy, Result, Server, ServiceManager,
    ServiceManagerServer, Status,
};
use ipckit::socket::unix::UnixAddr;
use libtest_mimic::Failed;

mod common;
use common::{ensure, unique, T};

const VAR: &str = "IPCKIT_BINDER_PEER";

const ECHO: u32 = 1;
const CALL_BACK: u32 = 2;
const READ_FD: u32 = 3;
const RECORD: u32 = 4;
const RECORDED: u32 = 5;
const HOLD: u32 = 6;
const RELEASE: u32 = 7;
const NEW_OBJECT: u32 = 8;
const LIVE_OBJECTS: u32 = 9;
const SLEEP: u32 = 10;
const MAKE_PIPE: u32 = 11;
const CHAIN: u32 = 12;
const CALL_HELD_LATER: u32 = 13;
const GIVE: u32 = 14;
const CALL_HELD: u32 = 15;
const HELD_BACK: u32 = 16;

/// Objects made by `NEW_OBJECT` that are still alive, in the service.
static LIVE: AtomicI32 = AtomicI32::new(0);

struct Counted;
impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
impl Binder for Counted {
    fn on_transact(&self, _: u32, _: &mut Parcel, reply: &mut Parcel, _: &Call) -> Result<()> {
        reply.write(&(std::process::id() as i32))
    }
}

#[derive(Default)]
struct Service {
    recorded: Mutex<Vec<(i32, i32)>>,
    held: Mutex<Option<Object>>,
}

impl Binder for Service {
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> Result<()> {
        match code {
            ECHO => {
                let s: String = data.read()?;
                reply.write(&format!("echo {s}"))?;
                reply.write(&call.pid())?;
                reply.write(&call.uid())?;
                reply.write(&call.gid())
            }
            CALL_BACK => {
                // Calls the object it was given with `depth - 1`, nested in
                // the caller's call.
                let cb: Object = data.read()?;
                let depth: i32 = data.read()?;
                let mut p = Parcel::new();
                p.write(&(depth - 1))?;
                let got: i32 = cb.call(1, p)?.read()?;
                reply.write(&(got + 1))
            }
            CHAIN => {
                // B in A -> B -> C: asks C to call back into a local object
                // of B's, which calls A's object, all nested.
                let a_cb: Object = data.read()?;
                let c_addr: String = data.read()?;
                let c = binder::connect(&c_addr.parse().map_err(|_| Status::BadValue)?)?;
                let b_cb = Object::from_fn(move |_, d, r, call| {
                    let depth: i32 = d.read()?;
                    let mut p = Parcel::new();
                    p.write(&depth)?;
                    let from_a: i32 = a_cb.call(1, p)?.read()?;
                    r.write(&from_a)?;
                    r.write(&call.pid())
                });
                let mut p = Parcel::new();
                p.write(&b_cb)?;
                p.write(&3i32)?;
                let mut got = c.call(CALL_BACK, p)?;
                reply.write(&got.read::<i32>()?)?;
                reply.write(&c.host_pid())
            }
            READ_FD => {
                let fd = data.read_fd()?;
                let mut s = String::new();
                std::fs::File::from(fd)
                    .read_to_string(&mut s)
                    .map_err(|_| Status::BadValue)?;
                reply.write(&s)
            }
            MAKE_PIPE => {
                let (r, mut w) = io::pipe().map_err(|_| Status::NoMemory)?;
                write!(w, "from pid {}", std::process::id()).map_err(|_| Status::NoMemory)?;
                drop(w);
                reply.write_fd(r.as_fd())
            }
            RECORD => {
                let t: i32 = data.read()?;
                let seq: i32 = data.read()?;
                self.recorded.lock().unwrap().push((t, seq));
                Ok(())
            }
            RECORDED => {
                let r = self.recorded.lock().unwrap();
                let flat: Vec<i32> = r.iter().flat_map(|(t, s)| [*t, *s]).collect();
                reply.write(&flat)
            }
            HOLD => {
                *self.held.lock().unwrap() = Some(data.read()?);
                Ok(())
            }
            CALL_HELD_LATER => {
                // Calls the held object from a thread of its own (not a
                // nested call), passing a new object; replies with the
                // call's status.
                let held = self.held.lock().unwrap().clone().ok_or(Status::NoInit)?;
                let status = std::thread::spawn(move || {
                    LIVE.fetch_add(1, Ordering::SeqCst);
                    let mut p = Parcel::new();
                    p.write(&Object::new(Counted))?;
                    held.call(1, p).map(drop)
                })
                .join()
                .map_err(|_| Status::UnknownError)?
                .err()
                .map_or(0, |e| e.status().code());
                reply.write(&status)
            }
            GIVE => {
                // B in A -> B -> C: hands the object it is given to the
                // service at the address it is given, and lets go of it.
                let obj: Object = data.read()?;
                let c_addr: String = data.read()?;
                let c = binder::connect(&c_addr.parse().map_err(|_| Status::BadValue)?)?;
                let mut p = Parcel::new();
                p.write(&obj)?;
                c.call(HOLD, p).map(drop)
            }
            CALL_HELD => {
                // Calls the held object; replies with its answer and the
                // pid hosting it.
                let held = self.held.lock().unwrap().clone().ok_or(Status::NoInit)?;
                let got: i32 = held.call(1, Parcel::new())?.read()?;
                reply.write(&got)?;
                reply.write(&held.host_pid())
            }
            HELD_BACK => {
                let held = self.held.lock().unwrap().clone().ok_or(Status::NoInit)?;
                reply.write(&held)
            }
            RELEASE => {
                self.held.lock().unwrap().take();
                Ok(())
            }
            NEW_OBJECT => {
                LIVE.fetch_add(1, Ordering::SeqCst);
                reply.write(&Object::new(Counted))
            }
            LIVE_OBJECTS => reply.write(&LIVE.load(Ordering::SeqCst)),
            SLEEP => {
                let ms: i32 = data.read()?;
                std::thread::sleep(Duration::from_millis(ms as u64));
                reply.write(&ms)
            }
            _ => Err(Status::UnknownTransaction.into()),
        }
    }
}

/// `svc:ADDR`: serves [`Service`] until standard input closes.
fn svc(addr: &str) -> io::Result<()> {
    let addr: UnixAddr = addr.parse()?;
    let _server = Server::builder(Object::new(Service::default()))
        .threads(4)
        .bind(&addr)?;
    println!("ready");
    io::stdout().flush()?;
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    Ok(())
}

/// `sm:ADDR[|POLICY-FILE]`: a service manager until standard input closes.
fn sm_role(arg: &str) -> io::Result<()> {
    let (addr, policy) = match arg.split_once('|') {
        Some((a, p)) => (a, Policy::load(p)?),
        None => (arg, Policy::default()),
    };
    let _sm = ServiceManagerServer::builder()
        .policy(policy)
        .bind(&addr.parse()?)?;
    println!("ready");
    io::stdout().flush()?;
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    Ok(())
}

/// `pub:ADDR|NAME`: publishes a [`Service`] as `NAME` with the service
/// manager at `ADDR` until standard input closes.
fn pub_role(arg: &str) -> io::Result<()> {
    let (addr, name) = arg.split_once('|').ok_or(io::ErrorKind::InvalidInput)?;
    let sm = ServiceManager::connect_to(&addr.parse()?)?;
    let _p = sm.publish(name, &Object::new(Service::default()))?;
    println!("ready");
    io::stdout().flush()?;
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    Ok(())
}

/// `find:ADDR|NAME…`: for each name, what `check_service` says (`found
/// PID ECHO-REPLY`, `none` or the error), then what `list_services` and
/// an `add_service` of the first name say.
fn find_role(arg: &str) -> io::Result<()> {
    let mut parts = arg.split('|');
    let addr = parts.next().ok_or(io::ErrorKind::InvalidInput)?;
    let names: Vec<&str> = parts.collect();
    let sm = ServiceManager::connect_to(&addr.parse()?)?;
    for name in &names {
        match sm.check_service(name) {
            Ok(Some(o)) => {
                let mut p = Parcel::new();
                p.write("x")?;
                let got: String = o.call(ECHO, p)?.read()?;
                println!("{name}: found {} {got}", o.host_pid());
            }
            Ok(None) => println!("{name}: none"),
            Err(e) => println!("{name}: {:?} {e}", e.status()),
        }
    }
    println!("list: {:?}", sm.list_services()?);
    let mine = Object::new(Service::default());
    match sm.add_service(names[0], &mine) {
        Ok(()) => println!("add: ok"),
        Err(e) => println!("add: {:?} {e}", e.status()),
    }
    Ok(())
}

/// `dial:ADDR`: connects, calls, and prints `ok`, or the error's status
/// and words.
fn dial_role(addr: &str) -> io::Result<()> {
    match binder::connect(&addr.parse()?).and_then(|o| o.ping()) {
        Ok(()) => println!("ok"),
        Err(e) => println!("{:?} {e}", e.status()),
    }
    Ok(())
}

/// A service process and its address; it ends when dropped.
struct Svc {
    peer: common::Serving,
    addr: UnixAddr,
}

fn start_svc() -> std::result::Result<Svc, Failed> {
    let addr = format!("@{}", unique("binder"));
    start_role("svc", &addr, &addr)
}

/// Starts a peer playing `role` with `arg`, waiting for its `ready`.
fn start_role(role: &str, arg: &str, addr: &str) -> std::result::Result<Svc, Failed> {
    Ok(Svc {
        peer: common::start_serving(VAR, role, arg)?,
        addr: addr.parse()?,
    })
}

fn parcel(build: impl FnOnce(&mut Parcel) -> Result<()>) -> std::result::Result<Parcel, Failed> {
    let mut p = Parcel::new();
    build(&mut p)?;
    Ok(p)
}

type TestResult = std::result::Result<(), Failed>;

/// Every call carries the caller's pid, uid and gid as the kernel knows
/// them; the proxy knows the process behind it.
fn caller_identity() -> TestResult {
    let svc = start_svc()?;
    let remote = binder::connect(&svc.addr)?;
    ensure(remote.host_pid() == svc.peer.child.id() as i32, || {
        format!("host pid {} vs {}", remote.host_pid(), svc.peer.child.id())
    })?;
    let mut r = remote.call(ECHO, parcel(|p| p.write("hi"))?)?;
    ensure(r.read::<String>()? == "echo hi", || "echo".into())?;
    let (pid, uid, gid): (i32, u32, u32) = (r.read()?, r.read()?, r.read()?);
    ensure(pid == std::process::id() as i32, || {
        format!("caller pid {pid}")
    })?;
    ensure(uid == common::my_uid(), || format!("caller uid {uid}"))?;
    let my_gid = my_gid();
    ensure(gid == my_gid, || format!("caller gid {gid}, mine {my_gid}"))?;
    let e = remote.call(999, Parcel::new()).unwrap_err();
    ensure(e.status() == Status::UnknownTransaction, || e.to_string())?;
    remote.ping()?;
    Ok(())
}

fn my_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.gid())
        .unwrap_or(0)
}

/// A -> B -> C, C calls B's object, which calls A's: each nested call
/// runs on the thread waiting in the call it is nested in. This process
/// opens no incoming connections, so only its calling thread can run it.
fn nested_three_processes() -> TestResult {
    let b = start_svc()?;
    let c = start_svc()?;
    let me = std::thread::current().id();
    let ran_on = Arc::new(Mutex::new(None));
    let r2 = ran_on.clone();
    let a_cb = Object::from_fn(move |_, d, r, call| {
        *r2.lock().unwrap() = Some((std::thread::current().id(), call.pid()));
        let depth: i32 = d.read()?;
        r.write(&(depth * 100))
    });
    let remote = Connector::new(&b.addr).incoming_threads(0).connect()?;
    let mut r = remote.call(
        CHAIN,
        parcel(|p| {
            p.write(&a_cb)?;
            p.write(&c.addr.to_string())
        })?,
    )?;
    let got: i32 = r.read()?;
    let c_pid: i32 = r.read()?;
    // C calls B's object with depth 3 - 1 = 2; A answers 200; C adds 1.
    ensure(got == 201, || format!("chain returned {got}"))?;
    ensure(c_pid == c.peer.child.id() as i32, || {
        format!("C is pid {c_pid}")
    })?;
    let ran = ran_on.lock().unwrap().take();
    ensure(ran == Some((me, b.peer.child.id() as i32)), || {
        format!("A's object ran on {ran:?}; the caller is {me:?}")
    })?;
    // Depth: A calls B, which calls A back, 20 levels deep.
    let deep = Object::from_fn(|_, d, r, _| {
        let depth: i32 = d.read()?;
        r.write(&depth)
    });
    let got: i32 = remote
        .call(
            CALL_BACK,
            parcel(|p| {
                p.write(&deep)?;
                p.write(&5i32)
            })?,
        )?
        .read()?;
    ensure(got == 5, || format!("callback returned {got}"))
}

/// A descriptor opened here is read there, and one made there is read
/// here.
fn descriptors_both_ways() -> TestResult {
    let svc = start_svc()?;
    let remote = binder::connect(&svc.addr)?;
    let mut f = tempfile::tempfile()?;
    f.write_all(b"the file's contents")?;
    use std::io::Seek;
    f.rewind()?;
    let mut r = remote.call(READ_FD, parcel(|p| p.write_fd(f.as_fd()))?)?;
    let s: String = r.read()?;
    ensure(s == "the file's contents", || format!("read there: {s:?}"))?;
    let mut r = remote.call(MAKE_PIPE, Parcel::new())?;
    let mut s = String::new();
    std::fs::File::from(r.read_fd()?).read_to_string(&mut s)?;
    ensure(s == format!("from pid {}", svc.peer.child.id()), || {
        format!("read here: {s:?}")
    })
}

/// Four threads send 2000 one-way calls each on as many connections; the
/// service runs each thread's calls in the order sent.
fn oneway_order_under_load() -> TestResult {
    let svc = start_svc()?;
    let remote = binder::connect(&svc.addr)?;
    const N: i32 = 2000;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let remote = remote.clone();
            std::thread::spawn(move || -> Result<()> {
                for seq in 0..N {
                    let mut p = Parcel::new();
                    p.write(&t)?;
                    p.write(&seq)?;
                    remote.oneway(RECORD, p)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a sender panicked")??;
    }
    // A synchronous call on the same object comes after all of them
    // only per connection; wait until all arrived.
    let end = Instant::now() + T;
    let flat = loop {
        let flat: Vec<i32> = remote.call(RECORDED, Parcel::new())?.read()?;
        if flat.len() as i32 == 2 * 4 * N || Instant::now() > end {
            break flat;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    ensure(flat.len() as i32 == 2 * 4 * N, || {
        format!("{} recorded", flat.len() / 2)
    })?;
    let mut next = [0i32; 4];
    for pair in flat.chunks(2) {
        let (t, seq) = (pair[0] as usize, pair[1]);
        ensure(seq == next[t], || {
            format!("thread {t}: {seq} ran when {} was due", next[t])
        })?;
        next[t] += 1;
    }
    Ok(())
}

/// Objects passed both ways live while someone holds them: the service's
/// objects die when this process drops its proxies, and this process's
/// object is released when the service lets go of it.
fn references_released() -> TestResult {
    let svc = start_svc()?;
    let remote = binder::connect(&svc.addr)?;
    let live =
        |remote: &Object| -> Result<i32> { remote.call(LIVE_OBJECTS, Parcel::new())?.read() };
    let objs: Vec<Object> = (0..3)
        .map(|_| remote.call(NEW_OBJECT, Parcel::new())?.read())
        .collect::<Result<_>>()?;
    ensure(live(&remote)? == 3, || "three objects made".into())?;
    let pid: i32 = objs[1].call(1, Parcel::new())?.read()?;
    ensure(pid == svc.peer.child.id() as i32, || {
        format!("object in pid {pid}")
    })?;
    drop(objs);
    let end = Instant::now() + T;
    while live(&remote)? != 0 {
        ensure(Instant::now() < end, || {
            "the service's objects were not released".into()
        })?;
        std::thread::sleep(Duration::from_millis(5));
    }
    struct Mine(#[allow(dead_code)] Arc<()>);
    impl Binder for Mine {
        fn on_transact(&self, _: u32, _: &mut Parcel, _: &mut Parcel, _: &Call) -> Result<()> {
            Ok(())
        }
    }
    let token = Arc::new(());
    let mine = Object::new(Mine(token.clone()));
    remote.call(HOLD, parcel(|p| p.write(&mine))?)?;
    drop(mine);
    ensure(Arc::strong_count(&token) == 2, || {
        "held by the service".into()
    })?;
    remote.call(RELEASE, Parcel::new())?;
    let end = Instant::now() + T;
    while Arc::strong_count(&token) != 1 {
        ensure(Instant::now() < end, || {
            "our object was not released".into()
        })?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A call that cannot be sent (the service calls this process, which
/// opened no incoming connections, from outside any call of ours) is
/// refused with `INVALID_OPERATION`, and holds nothing: neither the
/// object it would have passed nor the object it would have called.
fn refused_call_holds_nothing() -> TestResult {
    let svc = start_svc()?;
    let remote = Connector::new(&svc.addr).incoming_threads(0).connect()?;
    let token = Arc::new(());
    let t2 = token.clone();
    let mine = Object::from_fn(move |_, _, _, _| {
        let _ = &t2;
        Ok(())
    });
    remote.call(HOLD, parcel(|p| p.write(&mine))?)?;
    drop(mine);
    let status: i32 = remote.call(CALL_HELD_LATER, Parcel::new())?.read()?;
    ensure(status == Status::InvalidOperation.code(), || {
        format!("the refused call's status: {status}")
    })?;
    let live: i32 = remote.call(LIVE_OBJECTS, Parcel::new())?.read()?;
    ensure(live == 0, || {
        format!("{live} objects held for a call never sent")
    })?;
    remote.call(RELEASE, Parcel::new())?;
    let end = Instant::now() + T;
    while Arc::strong_count(&token) != 1 {
        ensure(Instant::now() < end, || "our object is still held".into())?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A -> B -> C, then C calls A: this process (A) gives its object to
/// service B, which gives it to service C and lets go; C's calls then go
/// straight to this process (the object sees C's pid, and C's proxy is
/// hosted here). C handing the object back here gives this process its
/// own local object. The object is released when C lets go.
fn third_party_reference() -> TestResult {
    let b = start_svc()?;
    let c = start_svc()?;
    let callers = Arc::new(Mutex::new(Vec::new()));
    let token = Arc::new(());
    let (cl, t2) = (callers.clone(), token.clone());
    let x = Object::from_fn(move |_, _, r, call| {
        let _ = &t2;
        cl.lock().unwrap().push(call.pid());
        r.write(&1234i32)
    });
    // No incoming connections: B's question to this process comes while
    // this process waits in its call to B.
    let to_b = Connector::new(&b.addr).incoming_threads(0).connect()?;
    to_b.call(
        GIVE,
        parcel(|p| {
            p.write(&x)?;
            p.write(&c.addr.to_string())
        })?,
    )?;
    let to_c = binder::connect(&c.addr)?;
    let mut r = to_c.call(CALL_HELD, Parcel::new())?;
    let (got, host): (i32, i32) = (r.read()?, r.read()?);
    ensure(got == 1234, || format!("the object answered {got}"))?;
    ensure(host == std::process::id() as i32, || {
        format!("C's proxy is hosted by pid {host}, not this process")
    })?;
    let seen = callers.lock().unwrap().clone();
    ensure(seen == vec![c.peer.child.id() as i32], || {
        format!(
            "the object was called by {seen:?}; C is {}",
            c.peer.child.id()
        )
    })?;
    // Back home: this process's own object, not a proxy.
    let back: Object = to_c.call(HELD_BACK, Parcel::new())?.read()?;
    ensure(back == x && !back.is_remote(), || {
        format!("came back as {back:?}")
    })?;
    drop((back, x));
    ensure(Arc::strong_count(&token) == 2, || {
        "C holds the object, nobody else".into()
    })?;
    to_c.call(RELEASE, Parcel::new())?;
    let end = Instant::now() + T;
    while Arc::strong_count(&token) != 1 {
        ensure(Instant::now() < end, || "the object is still held".into())?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A service manager in its own process: services published by two
/// processes, one waited for before it registers (pushed, not polled),
/// called directly (the service sees this process as its caller), listed
/// with pid and uid, removed when their process is killed or unpublishes.
fn service_manager() -> TestResult {
    let addr = format!("@{}", unique("sm"));
    let _sm = start_role("sm", &addr, &addr)?;
    let sm = ServiceManager::connect_to(&addr.parse()?)?;
    let waiter = {
        let sm = sm.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            sm.wait_for_service("test.late", T)
                .map(|o| (o, t0.elapsed()))
        })
    };
    let mut echo = start_role("pub", &format!("{addr}|test.echo"), &addr)?;
    let late = start_role("pub", &format!("{addr}|test.late"), &addr)?;
    let (late_obj, waited) = waiter.join().map_err(|_| "the waiter panicked")??;
    println!("wait_for_service returned {waited:?} after it started (a process start included)");
    ensure(late_obj.host_pid() == late.peer.child.id() as i32, || {
        format!("test.late is in pid {}", late_obj.host_pid())
    })?;
    let found = sm
        .check_service("test.echo")?
        .ok_or("test.echo not found")?;
    let mut r = found.call(ECHO, parcel(|p| p.write("hi"))?)?;
    let (s, caller): (String, i32) = (r.read()?, r.read()?);
    ensure(
        s == "echo hi" && caller == std::process::id() as i32,
        || format!("{s:?} from caller {caller}"),
    )?;
    ensure(sm.check_service("test.none")?.is_none(), || {
        "an unknown name was found".into()
    })?;
    let infos = sm.services()?;
    let want = |name: &str, pid: u32| {
        infos
            .iter()
            .any(|i| i.name == name && i.pid == pid as i32 && i.uid == common::my_uid())
    };
    ensure(
        want("test.echo", echo.peer.child.id()) && want("test.late", late.peer.child.id()),
        || format!("services: {infos:?}"),
    )?;
    let e = sm.add_service("bad name", &late_obj).unwrap_err();
    ensure(e.status() == Status::BadValue, || e.to_string())?;
    echo.peer.child.kill()?;
    drop(late);
    let end = Instant::now() + T;
    loop {
        let names = sm.list_services()?;
        if names.is_empty() {
            break;
        }
        ensure(Instant::now() < end, || format!("still listed: {names:?}"))?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The service manager killed and started again: a published service is
/// registered again with the new one, and found there.
fn service_manager_restart() -> TestResult {
    let addr = format!("@{}", unique("sm"));
    let mut first = start_role("sm", &addr, &addr)?;
    let svc = start_role("pub", &format!("{addr}|test.echo"), &addr)?;
    first.peer.child.kill()?;
    first.peer.child.wait()?;
    let _second = start_role("sm", &addr, &addr)?;
    let t0 = Instant::now();
    let sm = ServiceManager::connect_to(&addr.parse()?)?;
    let o = sm.wait_for_service("test.echo", T)?;
    println!(
        "registered again {:?} after the new service manager started",
        t0.elapsed()
    );
    ensure(o.host_pid() == svc.peer.child.id() as i32, || {
        format!("test.echo is in pid {}", o.host_pid())
    })?;
    o.ping()?;
    Ok(())
}

/// Policy between users: as root, this process registers two services
/// with a root service manager whose policy lets everyone find one of
/// them; a process of user nobody finds and calls that one, is refused
/// the other (`PERMISSION_DENIED`, and it is not listed), and cannot take
/// its name.
fn service_manager_policy() -> TestResult {
    if common::my_uid() != 0 {
        eprintln!("  skipped: needs root to run a peer as another user");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy");
    std::fs::write(
        &policy,
        "# test
find test.public *
",
    )?;
    let addr = format!("@{}", unique("sm"));
    let _smp = start_role("sm", &format!("{addr}|{}", policy.display()), &addr)?;
    let sm = ServiceManager::connect_to(&addr.parse()?)?;
    let private = Object::new(Service::default());
    let public = Object::new(Service::default());
    sm.add_service("test.private", &private)?;
    sm.add_service("test.public", &public)?;
    let exe_dir = tempfile::tempdir()?;
    let out = common::other_user_cmd(&exe_dir)?
        .env(VAR, format!("find:{addr}|test.private|test.public"))
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    let me = std::process::id();
    ensure(
        out.status.success()
            && lines.len() == 4
            && lines[0].starts_with("test.private: PermissionDenied uid 65534 may not find")
            && lines[1] == format!("test.public: found {me} echo x")
            && lines[2] == r#"list: ["test.public"]"#
            && lines[3]
                .starts_with(r#"add: PermissionDenied "test.private" is registered by uid 0"#),
        || format!("{:?}: {text}", out.status),
    )
}

/// A hostile client speaking raw bytes: a body of 4 GiB announced, a
/// body too short for its transaction, a parcel longer than its body, a
/// call to an object never sent, junk instead of a header. Each ends (at
/// most) its own session, with an error reply or a hang-up; the service
/// stays up and serves a well-behaved client afterwards.
fn hostile_peer() -> TestResult {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let mut svc = start_svc()?;
    let name = svc.addr.to_string();
    let name = name.trim_start_matches('@').to_owned();
    let session = || -> std::result::Result<UnixStream, Failed> {
        let mut s = UnixStream::connect_addr(&SocketAddr::from_abstract_name(&name)?)?;
        s.set_read_timeout(Some(T))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&1u32.to_le_bytes());
        h[5] = 1; // fd mode: Unix
        s.write_all(&h)?;
        s.write_all(b"cci\0\0\0\0\0")?;
        let mut r = [0u8; 8];
        s.read_exact(&mut r)?;
        Ok(s)
    };
    let header = |command: u32, body: u32| {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&command.to_le_bytes());
        h[4..8].copy_from_slice(&body.to_le_bytes());
        h
    };
    let transaction = |address: u64, code: u32, parcel_len: u32| {
        let mut t = [0u8; 40];
        t[0..8].copy_from_slice(&address.to_le_bytes());
        t[8..12].copy_from_slice(&code.to_le_bytes());
        t[24..28].copy_from_slice(&parcel_len.to_le_bytes());
        t
    };
    // Reads until the service hangs up, or the first reply header: its
    // status must be an error.
    let outcome = |s: &mut UnixStream| -> std::result::Result<String, Failed> {
        let mut h = [0u8; 16];
        match s.read_exact(&mut h) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok("hung up".into()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok("hung up".into()),
            Err(e) => Err(format!("neither a reply nor a hang-up: {e}").into()),
            Ok(()) => {
                let mut body = vec![0u8; u32::from_le_bytes(h[4..8].try_into()?) as usize];
                s.read_exact(&mut body)?;
                let status = i32::from_le_bytes(body[0..4].try_into()?);
                ensure(status != 0, || "a hostile call succeeded".into())?;
                Ok(format!("reply status {status}"))
            }
        }
    };
    let mut s = session()?;
    s.write_all(&header(0, 0xFFFF_FFF0))?;
    println!("4 GiB body: {}", outcome(&mut s)?);
    let mut s = session()?;
    s.write_all(&header(0, 8))?;
    s.write_all(&[7u8; 8])?;
    println!("short body: {}", outcome(&mut s)?);
    let mut s = session()?;
    s.write_all(&header(0, 40 + 8))?;
    s.write_all(&transaction(wire_address(9), ECHO, 1000))?;
    s.write_all(&[0u8; 8])?;
    println!("parcel past its body: {}", outcome(&mut s)?);
    let mut s = session()?;
    s.write_all(&header(0, 40 + 8))?;
    s.write_all(&transaction(wire_address(12345), ECHO, 8))?;
    s.write_all(&[0u8; 8])?;
    println!("unknown object: {}", outcome(&mut s)?);
    let mut s = session()?;
    s.write_all(&[0xA5u8; 4096])?;
    println!("junk: {}", outcome(&mut s)?);
    // A first connection that never says anything, left open meanwhile.
    let _silent = UnixStream::connect_addr(&SocketAddr::from_abstract_name(&name)?)?;
    ensure(svc.peer.child.try_wait()?.is_none(), || {
        "the service died".into()
    })?;
    let remote = binder::connect(&svc.addr)?;
    let mut r = remote.call(ECHO, parcel(|p| p.write("still here"))?)?;
    ensure(r.read::<String>()? == "echo still here", || "echo".into())
}

/// A server-made address (`CREATED | FOR_SERVER`) with id `id`.
fn wire_address(id: u32) -> u64 {
    (id as u64) << 32 | 3
}

/// A call that times out gets `TIMED_OUT`; the next call gets its own
/// reply, not the late one.
fn timeouts() -> TestResult {
    let svc = start_svc()?;
    let remote = Connector::new(&svc.addr).max_outgoing(1).connect()?;
    // Not before the timeout, whichever way the wait is made.
    for ms in [5, 50, 120] {
        let started = Instant::now();
        let e = remote
            .call_timeout(
                SLEEP,
                parcel(|p| p.write(&300i32))?,
                Duration::from_millis(ms),
            )
            .unwrap_err();
        let took = started.elapsed();
        ensure(e.status() == Status::TimedOut, || e.to_string())?;
        ensure(took >= Duration::from_millis(ms), || {
            format!("a {ms} ms timeout after {took:?}")
        })?;
    }
    let got: i32 = remote.call(SLEEP, parcel(|p| p.write(&1i32))?)?.read()?;
    ensure(got == 1, || format!("the next call got {got}"))
}

/// A server's connection filter (libbinder's `setConnectionFilter`):
/// another process it refuses is told so in words, with
/// `PERMISSION_DENIED`; this process, which it lets in, calls.
fn filter_refuses_a_process() -> TestResult {
    let addr: UnixAddr = format!("@{}", unique("filter")).parse()?;
    let me = std::process::id() as i32;
    let _server = Server::builder(Object::new(Service::default()))
        .filter(move |pid, _, _| pid == me)
        .bind(&addr)?;
    let out = common::peer_command(VAR, "dial", &addr.to_string())?
        .stdout(Stdio::piped())
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.success() && said.starts_with("PermissionDenied") && said.contains("refuses"),
        || format!("the refused peer said {said:?}"),
    )?;
    binder::connect(&addr)?.ping()?;
    Ok(())
}

/// `kill -9` of the service: the death notice comes at once (measured
/// and printed; the goal is 100 ms), and calls fail with `DEAD_OBJECT`.
fn death_after_sigkill() -> TestResult {
    let mut svc = start_svc()?;
    let remote = binder::connect(&svc.addr)?;
    let obj: Object = remote.call(NEW_OBJECT, Parcel::new())?.read()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    remote.link_to_death(move || {
        let _ = tx.send(Instant::now());
    })?;
    obj.link_to_death(move || {
        let _ = tx2.send(Instant::now());
    })?;
    let killed = Instant::now();
    svc.peer.child.kill()?;
    let first = rx.recv_timeout(T).map_err(|_| "no death notice")?;
    let second = rx
        .recv_timeout(T)
        .map_err(|_| "no death notice for the second object")?;
    let took = first.max(second).duration_since(killed);
    println!("death notice {took:?} after kill -9");
    ensure(took < Duration::from_secs(1), || {
        format!("death noticed after {took:?}")
    })?;
    let e = remote.call(ECHO, parcel(|p| p.write("x"))?).unwrap_err();
    ensure(e.is_dead(), || e.to_string())?;
    ensure(!obj.is_alive(), || "the object looks alive".into())?;
    let _ = svc.peer.child.wait();
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("svc", svc),
                    ("sm", sm_role),
                    ("pub", pub_role),
                    ("find", find_role),
                    ("dial", dial_role),
                ],
            )
        })],
        "binder",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("caller_identity", caller_identity),
        ("nested_three_processes", nested_three_processes),
        ("descriptors_both_ways", descriptors_both_ways),
        ("oneway_order_under_load", oneway_order_under_load),
        ("references_released", references_released),
        ("timeouts", timeouts),
        ("hostile_peer", hostile_peer),
        ("refused_call_holds_nothing", refused_call_holds_nothing),
        ("third_party_reference", third_party_reference),
        ("service_manager", service_manager),
        ("service_manager_restart", service_manager_restart),
        ("service_manager_policy", service_manager_policy),
        ("death_after_sigkill", death_after_sigkill),
        ("filter_refuses_a_process", filter_refuses_a_process),
    ]);
}
