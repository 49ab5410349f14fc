//! ipckit's binder against an independent implementation of the RPC
//! binder protocol: the `rsbinder` crate (its `rpc` feature, AIDL
//! interfaces from its `#[interface]` macro), in real processes both ways.
//!
//! - `rsbinder_client_calls_ipckit`: an rsbinder client process calls an
//!   ipckit service through the AIDL-generated proxy: strings, the caller's
//!   pid as the ipckit service sees it, a file descriptor, a callback
//!   object of the client's called back during the call (and calling the
//!   service again from there), 1000 one-way calls in order, a
//!   service-specific error, an object made by the service, called and
//!   released.
//! - `ipckit_client_calls_rsbinder`: the same interface served by an
//!   rsbinder process and called from ipckit with raw parcels; plus the
//!   death notice after `kill -9`, and a forwarded reference (an object of
//!   a third process), which an rsbinder peer cannot take, refused before
//!   anything is sent.
//! - `rsbinder_server_without_fds`: a server that accepts no file
//!   descriptors (libbinder's default) is still reached; a descriptor is
//!   then refused on this side with `FDS_NOT_ALLOWED`.
//!
//! This test binary re-executed with `IPCKIT_RSBINDER_PEER=ROLE:ARG` plays
//! the rsbinder side (roles `client` and `server`) or an ipckit service
//! (`ipckit`).

use std::io::{self, Read, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipckit::binder::{self, Binder, Call, Object, Parcel, Result, Server, Status};
use ipckit::socket::unix::UnixAddr;
use libtest_mimic::Failed;
use rsbinder::rpc::{FileDescriptorTransportMode, RpcClientConfig, RpcServer, RpcSession};
use rsbinder::{interface, BinderResult, FromIBinder, Interface, ParcelFileDescriptor, Strong};

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_RSBINDER_PEER";

const INTEROP: &str = "ipckit.test.IInterop";
const HIT: &str = "ipckit.test.IHit";

// The transaction codes AIDL gives IInterop's methods, in order.
const ECHO: u32 = 1;
const CALLER_PID: u32 = 2;
const READ_FD: u32 = 3;
const CALL_BACK: u32 = 4;
const PUSH: u32 = 5;
const PUSHED: u32 = 6;
const FAIL: u32 = 7;
const MAKE: u32 = 8;
const LIVE: u32 = 9;
const HIT_CODE: u32 = 1;

/// The interface both sides serve, as AIDL would declare it.
#[interface(descriptor = "ipckit.test.IInterop")]
pub trait IInterop {
    /// `"<implementation>:<msg>"`.
    fn echo(&self, msg: &str) -> BinderResult<String>;
    /// The pid the service sees calling, or -1 when it cannot know.
    fn caller_pid(&self) -> BinderResult<i32>;
    /// What the descriptor reads.
    fn read_fd(&self, fd: &ParcelFileDescriptor) -> BinderResult<String>;
    /// `cb.hit(depth) + 1`, called during this call.
    fn call_back(&self, cb: &Strong<dyn IHit>, depth: i32) -> BinderResult<i32>;
    #[oneway]
    fn push(&self, n: i32) -> BinderResult<()>;
    /// Every `n` pushed so far, in arrival order.
    fn pushed(&self) -> BinderResult<Vec<i32>>;
    /// Fails with service-specific error `code`.
    fn fail(&self, code: i32) -> BinderResult<()>;
    /// A new object whose `hit(n)` is `n * 2`.
    fn make(&self) -> BinderResult<Strong<dyn IHit>>;
    /// How many objects `make` returned are still alive.
    fn live(&self) -> BinderResult<i32>;
}

#[interface(descriptor = "ipckit.test.IHit")]
pub trait IHit {
    fn hit(&self, n: i32) -> BinderResult<i32>;
}

fn io_err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("{e:?}"))
}

// ---- the rsbinder side ------------------------------------------------

/// The rsbinder implementation of the service.
#[derive(Default)]
struct RsInterop {
    pushed: Mutex<Vec<i32>>,
    live: Arc<AtomicI32>,
}

struct RsDoubler(Arc<AtomicI32>);
impl Drop for RsDoubler {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
impl Interface for RsDoubler {}
impl IHit for RsDoubler {
    fn hit(&self, n: i32) -> BinderResult<i32> {
        Ok(n * 2)
    }
}

impl Interface for RsInterop {}
impl IInterop for RsInterop {
    fn echo(&self, msg: &str) -> BinderResult<String> {
        Ok(format!("rsbinder:{msg}"))
    }
    fn caller_pid(&self) -> BinderResult<i32> {
        Ok(-1)
    }
    fn read_fd(&self, fd: &ParcelFileDescriptor) -> BinderResult<String> {
        let mut s = String::new();
        let mut f: &ParcelFileDescriptor = fd;
        f.read_to_string(&mut s)
            .map_err(|_| rsbinder::StatusCode::BadValue)?;
        Ok(s)
    }
    fn call_back(&self, cb: &Strong<dyn IHit>, depth: i32) -> BinderResult<i32> {
        Ok(cb.hit(depth)? + 1)
    }
    fn push(&self, n: i32) -> BinderResult<()> {
        self.pushed.lock().unwrap().push(n);
        Ok(())
    }
    fn pushed(&self) -> BinderResult<Vec<i32>> {
        Ok(self.pushed.lock().unwrap().clone())
    }
    fn fail(&self, code: i32) -> BinderResult<()> {
        Err(rsbinder::Status::new_service_specific_error(
            code,
            Some("failed on purpose".into()),
        ))
    }
    fn make(&self) -> BinderResult<Strong<dyn IHit>> {
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(BnHit::new_binder(RsDoubler(self.live.clone())))
    }
    fn live(&self) -> BinderResult<i32> {
        Ok(self.live.load(Ordering::SeqCst))
    }
}

/// The rsbinder client's callback: `hit(n)` is `n * 100` plus the length
/// of what the service's `echo("x")` says, asked during the callback.
struct RsHit(Strong<dyn IInterop>);
impl Interface for RsHit {}
impl IHit for RsHit {
    fn hit(&self, n: i32) -> BinderResult<i32> {
        Ok(n * 100 + self.0.echo("x")?.len() as i32)
    }
}

/// `server:NAME[|nofd]`: serves [`RsInterop`] with rsbinder at the
/// abstract socket `NAME` until standard input closes.
fn rs_server(arg: &str) -> io::Result<()> {
    let (name, fds) = match arg.split_once('|') {
        Some((n, "nofd")) => (n, false),
        _ => (arg, true),
    };
    let server = RpcServer::setup_unix_server_abstract(name.as_bytes()).map_err(io_err)?;
    server.set_android13plus(1);
    if fds {
        server.set_supported_fd_modes(&[
            FileDescriptorTransportMode::None,
            FileDescriptorTransportMode::Unix,
        ]);
    }
    server.set_max_threads(4);
    let root = BnInterop::new_binder(RsInterop::default());
    server.set_root(root.as_binder()).map_err(io_err)?;
    let _bg = server.run_background();
    println!("ready");
    io::stdout().flush()?;
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    server.terminate();
    Ok(())
}

/// `client:NAME|FILE`: calls the service at the abstract socket `NAME`
/// with rsbinder, printing one line per check.
fn rs_client(arg: &str) -> io::Result<()> {
    let (name, file) = arg.split_once('|').ok_or(io::ErrorKind::InvalidInput)?;
    let cfg = RpcClientConfig::unix_abstract(name.as_bytes(), 1)
        .fd_mode(FileDescriptorTransportMode::Unix);
    let session = RpcSession::setup_client_android13plus_with_config(cfg).map_err(io_err)?;
    let svc: Strong<dyn IInterop> =
        FromIBinder::try_from(session.get_root().map_err(io_err)?).map_err(io_err)?;
    println!("echo {}", svc.echo("héllo, 世界").map_err(io_err)?);
    println!("caller {}", svc.caller_pid().map_err(io_err)?);
    let fd = ParcelFileDescriptor::new(std::fs::File::open(file)?);
    println!("fd {}", svc.read_fd(&fd).map_err(io_err)?);
    let hit = BnHit::new_binder(RsHit(svc.clone()));
    println!("callback {}", svc.call_back(&hit, 3).map_err(io_err)?);
    for n in 0..1000 {
        svc.push(n).map_err(io_err)?;
    }
    let pushed = svc.pushed().map_err(io_err)?;
    println!("pushed {}", pushed == (0..1000).collect::<Vec<_>>());
    match svc.fail(42) {
        Ok(()) => println!("fail none"),
        Err(e) => println!("fail {:?} {:?}", e.service_specific_error(), e.message()),
    }
    let made = svc.make().map_err(io_err)?;
    println!("made {}", made.hit(21).map_err(io_err)?);
    println!("live {}", svc.live().map_err(io_err)?);
    drop(made);
    // The release travels on its own; wait (bounded) for the service to
    // see it.
    let end = Instant::now() + T;
    let mut live = svc.live().map_err(io_err)?;
    while live != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
        live = svc.live().map_err(io_err)?;
    }
    println!("released {live}");
    Ok(())
}

// ---- the ipckit side --------------------------------------------------

/// The ipckit implementation of the service, AIDL conventions written by
/// hand: the interface token checked, an exception header on each reply.
#[derive(Default)]
struct IpkInterop {
    pushed: Mutex<Vec<i32>>,
    live: Arc<AtomicI32>,
}

struct IpkDoubler(Arc<AtomicI32>);
impl Drop for IpkDoubler {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
impl Binder for IpkDoubler {
    fn descriptor(&self) -> &str {
        HIT
    }
    fn on_transact(&self, _: u32, data: &mut Parcel, reply: &mut Parcel, _: &Call) -> Result<()> {
        data.enforce_interface(HIT)?;
        let n: i32 = data.read()?;
        reply.write_no_exception();
        reply.write(&(n * 2))
    }
}

impl Binder for IpkInterop {
    fn descriptor(&self) -> &str {
        INTEROP
    }
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> Result<()> {
        data.enforce_interface(INTEROP)?;
        if code == PUSH {
            self.pushed.lock().unwrap().push(data.read()?);
            return Ok(());
        }
        if code == FAIL {
            let n: i32 = data.read()?;
            return reply.write_service_specific_error(n, "failed on purpose");
        }
        reply.write_no_exception();
        match code {
            ECHO => reply.write(&format!("ipckit:{}", data.read::<String>()?)),
            CALLER_PID => reply.write(&call.pid()),
            READ_FD => {
                let fd: binder::ParcelFileDescriptor = data.read()?;
                let mut s = String::new();
                std::fs::File::from(fd.0)
                    .read_to_string(&mut s)
                    .map_err(|_| Status::BadValue)?;
                reply.write(&s)
            }
            CALL_BACK => {
                let cb: Object = data.read()?;
                let depth: i32 = data.read()?;
                let mut p = Parcel::new();
                p.write_interface_token(HIT)?;
                p.write(&depth)?;
                let mut r = cb.call(HIT_CODE, p)?;
                r.read_exception()?;
                reply.write(&(r.read::<i32>()? + 1))
            }
            PUSHED => reply.write(&*self.pushed.lock().unwrap()),
            MAKE => {
                self.live.fetch_add(1, Ordering::SeqCst);
                reply.write(&Object::new(IpkDoubler(self.live.clone())))
            }
            LIVE => reply.write(&self.live.load(Ordering::SeqCst)),
            _ => Err(Status::UnknownTransaction.into()),
        }
    }
}

/// `ipckit:ADDR`: serves an [`IpkInterop`] until standard input closes.
fn ipk_server(addr: &str) -> io::Result<()> {
    let _server = Server::builder(Object::new(IpkInterop::default()))
        .threads(4)
        .bind(&addr.parse()?)?;
    println!("ready");
    io::stdout().flush()?;
    let _ = io::copy(&mut io::stdin(), &mut io::sink());
    Ok(())
}

/// A call of IInterop from ipckit: the token, the arguments, the call,
/// the exception header.
fn aidl_call(
    obj: &Object,
    code: u32,
    args: impl FnOnce(&mut Parcel) -> Result<()>,
) -> Result<Parcel> {
    let mut p = Parcel::new();
    p.write_interface_token(INTEROP)?;
    args(&mut p)?;
    let mut r = obj.call(code, p)?;
    r.read_exception()?;
    Ok(r)
}

// ---- peers ------------------------------------------------------------

type TestResult = std::result::Result<(), Failed>;

fn rsbinder_client_calls_ipckit() -> TestResult {
    let name = unique("rsb-ipk");
    let addr: UnixAddr = format!("@{name}").parse()?;
    let svc = IpkInterop::default();
    let live = svc.live.clone();
    let server = Server::builder(Object::new(svc)).threads(4).bind(&addr)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("note");
    std::fs::write(&file, "read through a descriptor from rsbinder")?;

    let mut child = peer_command(VAR, "client", &format!("{name}|{}", file.display()))?
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = common::rest_of_output(&mut child);
    let status = child.wait()?;
    let out = out?;
    ensure(status.success(), || {
        format!("the rsbinder client failed ({status}): {out}")
    })?;
    let want = [
        "echo ipckit:héllo, 世界".to_string(),
        format!("caller {pid}"),
        "fd read through a descriptor from rsbinder".into(),
        // hit(3) = 300 + len("ipckit:x"), then + 1.
        "callback 309".into(),
        "pushed true".into(),
        "fail 42 Some(\"failed on purpose\")".into(),
        "made 42".into(),
        "live 1".into(),
        "released 0".into(),
    ];
    let got: Vec<&str> = out.lines().collect();
    ensure(got == want, || {
        format!(
            "the rsbinder client said\n{out}\nwanted\n{}",
            want.join("\n")
        )
    })?;
    ensure(live.load(Ordering::SeqCst) == 0, || {
        "an object leaked".into()
    })?;
    // The rsbinder client's session is gone from the server.
    let end = Instant::now() + T;
    while !server.sessions().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    ensure(server.sessions().is_empty(), || {
        format!("sessions left: {:?}", server.sessions())
    })
}

/// A callback of ipckit's for the rsbinder service: `hit(n)` is `n * 100`
/// plus the length of the service's `echo("x")`, asked during the callback.
struct IpkHit(Object);
impl Binder for IpkHit {
    fn descriptor(&self) -> &str {
        HIT
    }
    fn on_transact(&self, _: u32, data: &mut Parcel, reply: &mut Parcel, _: &Call) -> Result<()> {
        data.enforce_interface(HIT)?;
        let n: i32 = data.read()?;
        let echoed: String = aidl_call(&self.0, ECHO, |p| p.write("x"))?.read()?;
        reply.write_no_exception();
        reply.write(&(n * 100 + echoed.len() as i32))
    }
}

fn ipckit_client_calls_rsbinder() -> TestResult {
    let name = unique("ipk-rsb");
    let mut peer = common::start_serving(VAR, "server", &name)?;
    let rs = binder::connect(&format!("@{name}").parse()?)?;
    ensure(rs.descriptor()? == INTEROP, || "a wrong descriptor".into())?;
    ensure(rs.host_pid() == peer.child.id() as i32, || {
        format!("host pid {} for {}", rs.host_pid(), peer.child.id())
    })?;

    let s: String = aidl_call(&rs, ECHO, |p| p.write("héllo, 世界"))?.read()?;
    ensure(s == "rsbinder:héllo, 世界", || s.clone())?;

    let (r, mut w) = std::io::pipe()?;
    w.write_all(b"through a pipe to rsbinder")?;
    drop(w);
    let fd = binder::ParcelFileDescriptor(r.into());
    let s: String = aidl_call(&rs, READ_FD, |p| p.write(&fd))?.read()?;
    ensure(s == "through a pipe to rsbinder", || s.clone())?;

    // Nested: rsbinder calls the callback during the call, which calls
    // rsbinder again. hit(3) = 300 + len("rsbinder:x"), then + 1.
    let cb = Object::new(IpkHit(rs.clone()));
    let n: i32 = aidl_call(&rs, CALL_BACK, |p| {
        p.write(&cb)?;
        p.write(&3i32)
    })?
    .read()?;
    ensure(n == 311, || format!("call_back gave {n}"))?;

    for n in 0..1000i32 {
        let mut p = Parcel::new();
        p.write_interface_token(INTEROP)?;
        p.write(&n)?;
        rs.oneway(PUSH, p)?;
    }
    let pushed: Vec<i32> = aidl_call(&rs, PUSHED, |_| Ok(()))?.read()?;
    ensure(pushed == (0..1000).collect::<Vec<_>>(), || {
        format!("{} pushed, out of order or lost", pushed.len())
    })?;

    let e = aidl_call(&rs, FAIL, |p| p.write(&42i32)).unwrap_err();
    ensure(e.service_specific() == Some(42), || e.to_string())?;
    ensure(e.to_string().contains("failed on purpose"), || {
        e.to_string()
    })?;

    // An object made by rsbinder, called, then released.
    let made: Object = aidl_call(&rs, MAKE, |_| Ok(()))?.read()?;
    let mut p = Parcel::new();
    p.write_interface_token(HIT)?;
    p.write(&21i32)?;
    let mut r = made.call(HIT_CODE, p)?;
    r.read_exception()?;
    ensure(r.read::<i32>()? == 42, || "hit(21) is not 42".into())?;
    let live = || -> Result<i32> { aidl_call(&rs, LIVE, |_| Ok(()))?.read() };
    ensure(live()? == 1, || "the made object is not counted".into())?;
    drop(made);
    let end = Instant::now() + T;
    while live()? != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    ensure(live()? == 0, || "rsbinder kept the released object".into())?;

    // An rsbinder peer cannot take a reference to a third process's
    // object: refused on this side, naming the peer, nothing sent.
    let third_addr = format!("@{}", unique("third"));
    let _third = common::start_serving(VAR, "ipckit", &third_addr)?;
    let third = binder::connect(&third_addr.parse()?)?;
    let e = aidl_call(&rs, CALL_BACK, |p| {
        p.write(&third)?;
        p.write(&1i32)
    })
    .unwrap_err();
    ensure(e.status() == Status::InvalidOperation, || e.to_string())?;
    let s: String = aidl_call(&rs, ECHO, |p| p.write("still"))?.read()?;
    ensure(s == "rsbinder:still", || s.clone())?;

    // Death of the rsbinder process, after kill -9: noticed without any
    // thread of this process's serving the session.
    let (tx, rx) = std::sync::mpsc::channel();
    let _link = rs.link_to_death(move || {
        let _ = tx.send(Instant::now());
    })?;
    peer.child.kill()?;
    let killed = Instant::now();
    let died = rx.recv_timeout(T).map_err(|_| "no death notice")?;
    let _ = peer.child.wait();
    ensure(
        died.duration_since(killed) < Duration::from_millis(100),
        || format!("death noticed after {:?}", died.duration_since(killed)),
    )?;
    let e = aidl_call(&rs, ECHO, |p| p.write("x")).unwrap_err();
    ensure(e.is_dead(), || e.to_string())
}

fn rsbinder_server_without_fds() -> TestResult {
    let name = unique("rsb-nofd");
    let _peer = common::start_serving(VAR, "server", &format!("{name}|nofd"))?;
    let rs = binder::connect(&format!("@{name}").parse()?)?;
    let s: String = aidl_call(&rs, ECHO, |p| p.write("no fds"))?.read()?;
    ensure(s == "rsbinder:no fds", || s.clone())?;
    let (r, _w) = std::io::pipe()?;
    let fd = binder::ParcelFileDescriptor(r.into());
    let e = aidl_call(&rs, READ_FD, |p| p.write(&fd)).unwrap_err();
    ensure(e.status() == Status::FdsNotAllowed, || e.to_string())?;
    let s: String = aidl_call(&rs, ECHO, |p| p.write("after"))?.read()?;
    ensure(s == "rsbinder:after", || s.clone())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("client", rs_client),
                    ("server", rs_server),
                    ("ipckit", ipk_server),
                ],
            )
        })],
        "binder_rsbinder",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("rsbinder_client_calls_ipckit", rsbinder_client_calls_ipckit),
        ("ipckit_client_calls_rsbinder", ipckit_client_calls_rsbinder),
        ("rsbinder_server_without_fds", rsbinder_server_without_fds),
    ]);
}
