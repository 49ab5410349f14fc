//! Chaos for the services built on the mechanisms: binder (a service
//! manager, a service, two client processes) and the property store (its
//! daemon, two setters, a reader). One participant, chosen at random, is
//! killed with SIGKILL at a random moment. Then:
//!
//! - **no survivor hangs**: binder clients finish, or are told the service
//!   died (`DEAD_OBJECT`); setters finish, or are told the daemon is gone;
//!   the property reader keeps reading the area it has mapped;
//! - **nothing corrupt or duplicated**: the service checks each call's
//!   checksum and that each caller's sequence numbers only go up; each
//!   client checks each reply; the reader checks every value is whole and
//!   never older than one it saw;
//! - **what was confirmed stays**: the service counted every call a
//!   client saw answered (plus at most the one a killed client never saw
//!   answered); every property set a setter saw confirmed is there, after
//!   a restarted daemon took over the area a killed one left, and so is
//!   every `persist.` property;
//! - **the services clean up after the dead**: the service drops the
//!   objects a dead client gave it; the service manager forgets a dead
//!   service, and a service re-registers with a restarted service
//!   manager; a property daemon stopped normally removes its area.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::process::{ChildStdin, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipckit::binder::{
    self, Binder, Call, Object, Parcel, ServiceManager, ServiceManagerServer, Status,
};
use ipckit::prop::{PropServer, Properties};
use libtest_mimic::{Failed, Trial};

use crate::common::{ensure, peer_command, unique};
use crate::{campaign, report, Part, Rng, SURVIVE, VAR};

/// Calls or sets each client makes (most rounds kill one before the end).
const STEPS: u64 = 2000;
/// How long a participant waits for a peer to come up.
const UP: Duration = Duration::from_secs(5);
/// How long the property reader waits for a change before it stops.
const IDLE: Duration = Duration::from_millis(400);

/// Waits until standard input closes (the parent's way of stopping a
/// server, which then cleans up as it does when stopped).
fn until_stdin_closes() {
    let _ = io::stdin().read_to_end(&mut Vec::new());
}

/// Starts `role:arg` with a pipe on its standard input, to stop it by
/// closing.
fn server(what: String, role: &str, arg: &str) -> Result<(Part, ChildStdin), Failed> {
    let mut cmd = peer_command(VAR, role, arg)?;
    cmd.stdin(Stdio::piped());
    let mut p = Part::start(what, cmd)?;
    let stdin = p.child.stdin.take().ok_or("no stdin")?;
    p.ready()?;
    Ok((p, stdin))
}

// ---------------------------------------------------------------- binder

const SERVICE: &str = "chaos.tally";
const ADD: u32 = 1;
const HOLD: u32 = 2;
const STATUS: u32 = 3;

/// Client `c`'s payload for call `seq` (0 to 299 bytes).
fn payload(c: i32, seq: i64) -> Vec<u8> {
    let len = ((seq * 31 + i64::from(c) * 7) % 300) as usize;
    (0..len).map(|i| (i as i64 + seq) as u8).collect()
}

/// Counts each caller's calls, checking each.
#[derive(Default)]
struct Tally {
    /// Per caller pid: last sequence number, calls counted.
    callers: Mutex<BTreeMap<i32, (i64, i64)>>,
    held: Mutex<Vec<Object>>,
}

impl Binder for Tally {
    fn on_transact(
        &self,
        code: u32,
        data: &mut Parcel,
        reply: &mut Parcel,
        call: &Call,
    ) -> binder::Result<()> {
        match code {
            ADD => {
                let (c, seq): (i32, i64) = (data.read()?, data.read()?);
                let bytes: Vec<u8> = data.read()?;
                let crc: u32 = data.read()?;
                if crc32fast::hash(&bytes) != crc || bytes != payload(c, seq) {
                    report(format_args!("BAD call {seq} from {} corrupt", call.pid()));
                    return Err(Status::BadValue.into());
                }
                let mut callers = self.callers.lock().unwrap();
                let (last, n) = callers.entry(call.pid()).or_insert((-1, 0));
                if seq <= *last {
                    report(format_args!(
                        "BAD call {seq} from {} after {last}",
                        call.pid()
                    ));
                    return Err(Status::BadValue.into());
                }
                *last = seq;
                *n += 1;
                reply.write(&seq)?;
                reply.write(&crc)
            }
            HOLD => {
                self.held.lock().unwrap().push(data.read()?);
                Ok(())
            }
            STATUS => {
                // Objects of dead clients are dropped here.
                let mut held = self.held.lock().unwrap();
                held.retain(Object::is_alive);
                reply.write(&(held.len() as i32))?;
                let callers = self.callers.lock().unwrap();
                let flat: Vec<i64> = callers
                    .iter()
                    .flat_map(|(pid, (_, n))| [i64::from(*pid), *n])
                    .collect();
                reply.write(&(flat.len() as i32))?;
                for x in flat {
                    reply.write(&x)?;
                }
                Ok(())
            }
            _ => Err(Status::UnknownTransaction.into()),
        }
    }
}

/// `binder-sm:ADDR`: a service manager until its standard input closes.
fn peer_sm(addr: &str) -> io::Result<()> {
    let _sm = ServiceManagerServer::builder().bind(&addr.parse()?)?;
    report(format_args!("ready {addr}"));
    until_stdin_closes();
    Ok(())
}

/// `binder-svc:SM`: publishes the tally with the service manager at `SM`
/// (again whenever it restarts) until its standard input closes.
fn peer_service(sm: &str) -> io::Result<()> {
    let sm = ServiceManager::connect_to(&sm.parse()?)?;
    let _p = sm.publish(SERVICE, &Object::new(Tally::default()))?;
    report(format_args!("ready -"));
    until_stdin_closes();
    Ok(())
}

/// `binder-client:SM C`: finds the tally, gives it an object to hold,
/// then calls it `STEPS` times: `s C SEQ` after each checked reply, then
/// `end WHY`.
fn peer_client(arg: &str) -> io::Result<()> {
    let (sm, c) = arg.split_once(' ').expect("SM C");
    let c: i32 = c.parse().map_err(io::Error::other)?;
    let sm = match ServiceManager::connect_to(&sm.parse()?) {
        Ok(sm) => sm,
        Err(e) => {
            report(format_args!("end no service manager: {e}"));
            return Ok(());
        }
    };
    let tally = match sm.wait_for_service(SERVICE, UP) {
        Ok(t) => t,
        Err(e) => {
            report(format_args!("end no service: {e}"));
            return Ok(());
        }
    };
    let ended = |e: binder::Error| {
        let why = if e.is_dead() {
            "dead".to_string()
        } else {
            format!("error {e}")
        };
        report(format_args!("end {why}"));
        Ok(())
    };
    let mine = Object::from_fn(|_, _, _, _| Ok(()));
    let mut p = Parcel::new();
    p.write(&mine)?;
    if let Err(e) = tally.call(HOLD, p) {
        return ended(e);
    }
    for seq in 0..STEPS as i64 {
        let bytes = payload(c, seq);
        let crc = crc32fast::hash(&bytes);
        let mut p = Parcel::new();
        p.write(&c)?;
        p.write(&seq)?;
        p.write(&bytes)?;
        p.write(&crc)?;
        let mut r = match tally.call(ADD, p) {
            Ok(r) => r,
            Err(e) => return ended(e),
        };
        let (s, k): (i64, u32) = (r.read()?, r.read()?);
        if (s, k) != (seq, crc) {
            return Err(io::Error::other(format!(
                "BAD reply ({s}, {k:#x}) to call {seq} ({crc:#x})"
            )));
        }
        report(format_args!("s {c} {seq}"));
    }
    report(format_args!("end done"));
    Ok(())
}

#[derive(Default)]
struct BinderTally {
    rounds: usize,
    killed: BTreeMap<&'static str, usize>,
    calls: i64,
    /// Calls a killed client made that the service counted but the
    /// client never saw answered.
    unanswered: i64,
    endings: BTreeMap<String, usize>,
}

impl fmt::Display for BinderTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kills survived ({:?}), {} calls checked, {} counted but unanswered at a \
             client's death; endings {:?}",
            self.rounds, self.killed, self.calls, self.unanswered, self.endings
        )
    }
}

/// The service's objects held and calls counted per pid, asked by a
/// client of the parent's own.
fn status(tally: &Object) -> binder::Result<(i32, BTreeMap<i32, i64>)> {
    let mut r = tally.call(STATUS, Parcel::new())?;
    let held: i32 = r.read()?;
    let n: i32 = r.read()?;
    let mut counts = BTreeMap::new();
    for _ in 0..n / 2 {
        let pid: i64 = r.read()?;
        counts.insert(pid as i32, r.read()?);
    }
    Ok((held, counts))
}

fn binder_round(rng: &mut Rng, t: &mut BinderTally) -> Result<(), Failed> {
    let sm_addr = format!("@{}", unique("chaos-sm"));
    let (mut sm, sm_in) = server("binder service manager".into(), "binder-sm", &sm_addr)?;
    let (mut svc, svc_in) = server("binder service".into(), "binder-svc", &sm_addr)?;
    let mut clients = Vec::new();
    for c in 0..2 {
        clients.push(Part::start(
            format!("binder client {c}"),
            peer_command(VAR, "binder-client", &format!("{sm_addr} {c}"))?,
        )?);
    }
    std::thread::sleep(Duration::from_micros(5_000 + rng.below(60_000)));
    let victim = match rng.below(4) {
        0 => {
            sm.kill();
            "service manager"
        }
        1 => {
            svc.kill();
            "service"
        }
        c => {
            clients[c as usize - 2].kill();
            "client"
        }
    };
    *t.killed.entry(victim).or_default() += 1;
    binder_after(victim, sm, sm_in, svc, svc_in, clients, &sm_addr, t)
        .map_err(|e| format!("{victim} killed: {}", e.message().unwrap_or("?")).into())
}

/// The checks of a binder round after `victim` was killed.
#[allow(clippy::too_many_arguments)]
fn binder_after(
    victim: &str,
    mut sm: Part,
    mut sm_in: ChildStdin,
    mut svc: Part,
    svc_in: ChildStdin,
    mut clients: Vec<Part>,
    sm_addr: &str,
    t: &mut BinderTally,
) -> Result<(), Failed> {
    let deadline = Instant::now() + SURVIVE;
    for c in &mut clients {
        c.finish(deadline)?;
    }
    t.rounds += 1;
    for c in clients.iter().filter(|c| !c.killed) {
        let end = c.ending().unwrap_or("nothing").to_string();
        // Told the service died; or, looking it up, that the service
        // manager died (calls go straight to the service: a client that
        // found it goes on without the service manager).
        let told = (svc.killed && end == "dead")
            || ((svc.killed || sm.killed) && end.starts_with("no service"));
        ensure(end == "done" || told, || {
            format!("{}: ended {end} ({victim} killed)", c.what)
        })?;
        let kind = match end.split_once(':') {
            Some((k, _)) => k,
            None => &end,
        };
        *t.endings.entry(format!("client {kind}")).or_default() += 1;
    }
    t.calls += clients
        .iter()
        .map(|c| c.events("s").len() as i64)
        .sum::<i64>();

    if sm.killed {
        // A new service manager: the service registers again by itself.
        sm.finish(deadline)?;
        (sm, sm_in) = server("binder service manager (2)".into(), "binder-sm", sm_addr)?;
    }
    let manager = ServiceManager::connect_to(&sm_addr.parse()?)?;
    if svc.killed {
        // The service manager forgets a dead service.
        let end = Instant::now() + SURVIVE;
        while manager.check_service(SERVICE)?.is_some() {
            ensure(Instant::now() < end, || {
                "the service manager still lists the killed service".into()
            })?;
            std::thread::sleep(Duration::from_millis(5));
        }
        svc.finish(deadline)?;
    } else {
        // (Registered again after a restart: a service manager killed
        // here once lost the registration to a race in session set-up.)
        let tally = match manager.wait_for_service(SERVICE, SURVIVE) {
            Ok(t) => t,
            Err(e) => {
                svc.kill();
                let _ = svc.finish(Instant::now() + SURVIVE);
                return Err(format!("{e}; the service said {:?}", svc.seen).into());
            }
        };
        // Each client's calls, as the service counted them; the objects of
        // clients gone (all of them now) are dropped.
        let end = Instant::now() + SURVIVE;
        let counts = loop {
            let (held, counts) = status(&tally)?;
            if held == 0 {
                break counts;
            }
            ensure(Instant::now() < end, || {
                format!("the service still holds {held} objects of exited clients")
            })?;
            std::thread::sleep(Duration::from_millis(5));
        };
        for c in &clients {
            let answered = c.events("s").len() as i64;
            let counted = counts.get(&(c.child.id() as i32)).copied().unwrap_or(0);
            ensure(
                counted == answered || (c.killed && counted == answered + 1),
                || format!("{}: {answered} calls answered, {counted} counted", c.what),
            )?;
            t.unanswered += counted - answered;
        }
        drop(svc_in);
        svc.finish(Instant::now() + SURVIVE)?;
    }
    drop(sm_in);
    sm.finish(Instant::now() + SURVIVE)?;
    Ok(())
}

// ---------------------------------------------------------------- properties

/// Setter `s`'s value number `i`: `s:i:` repeated to 20 to 79 bytes, so a
/// torn value shows.
fn value(s: u64, i: u64) -> String {
    let unit = format!("{s}:{i}:");
    let len = 20 + (i % 60) as usize;
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

/// The step a value is of, if it is whole.
fn step_of(s: u64, v: &str) -> Option<u64> {
    let mut w = v.split(':');
    let (who, i) = (w.next()?.parse::<u64>().ok()?, w.next()?.parse().ok()?);
    (who == s && v == value(s, i)).then_some(i)
}

/// `prop-daemon:STORE PERSIST`: the store's daemon until its standard
/// input closes (then it removes the area).
fn peer_prop_daemon(arg: &str) -> io::Result<()> {
    let (store, persist) = arg.split_once(' ').expect("STORE PERSIST");
    let _d = PropServer::builder(store).persist_dir(persist).start()?;
    report(format_args!("ready -"));
    until_stdin_closes();
    Ok(())
}

/// `prop-set:STORE S`: sets `chaos.sS` `STEPS` times (and every eighth
/// time `persist.chaos.sS` to the step), `s S I` after each confirmed.
fn peer_prop_set(arg: &str) -> io::Result<()> {
    let (store, s) = arg.split_once(' ').expect("STORE S");
    let s: u64 = s.parse().map_err(io::Error::other)?;
    let props = Properties::open(store)?;
    for i in 0..STEPS {
        let r = props
            .set(&format!("chaos.s{s}"), &value(s, i))
            .and_then(|()| {
                if i % 8 == 0 {
                    props.set(&format!("persist.chaos.s{s}"), &i.to_string())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = r {
            report(format_args!("end error {e}"));
            return Ok(());
        }
        report(format_args!("s {s} {i}"));
    }
    report(format_args!("end done"));
    Ok(())
}

/// `prop-read:STORE`: reads both setters' values until neither changes
/// for a while: every value whole, never older than one seen before.
fn peer_prop_read(store: &str) -> io::Result<()> {
    let props = Properties::open(store)?;
    report(format_args!("ready -"));
    let mut seen = [None::<u64>; 2];
    let mut serial = props.prefix_serial("chaos.")?;
    loop {
        for (s, last) in seen.iter_mut().enumerate() {
            let Some(v) = props.get(&format!("chaos.s{s}"))? else {
                continue;
            };
            let i = step_of(s as u64, &v)
                .ok_or_else(|| io::Error::other(format!("BAD a torn value {v:?}")))?;
            if last.is_some_and(|l| i < l) {
                return Err(io::Error::other(format!("BAD {i} after {last:?}")));
            }
            *last = Some(i);
        }
        match props.wait_prefix("chaos.", serial, IDLE)? {
            Some(now) => serial = now,
            None => break,
        }
    }
    report(format_args!("end idle {seen:?}"));
    Ok(())
}

#[derive(Default)]
struct PropTally {
    rounds: usize,
    killed: BTreeMap<&'static str, usize>,
    sets: usize,
    restarts: usize,
    endings: BTreeMap<String, usize>,
}

impl fmt::Display for PropTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kills survived ({:?}), {} confirmed sets checked, {} daemon restarts over a \
             killed one's area; endings {:?}",
            self.rounds, self.killed, self.sets, self.restarts, self.endings
        )
    }
}

fn prop_round(rng: &mut Rng, t: &mut PropTally) -> Result<(), Failed> {
    let store = unique("chaos-prop");
    let persist = tempfile::tempdir()?;
    let darg = format!("{store} {}", persist.path().display());
    let (mut daemon, mut d_in) = server("property daemon".into(), "prop-daemon", &darg)?;
    let mut reader = Part::start(
        "property reader".into(),
        peer_command(VAR, "prop-read", &store)?,
    )?;
    reader.ready()?;
    let mut setters = Vec::new();
    for s in 0..2 {
        setters.push(Part::start(
            format!("property setter {s}"),
            peer_command(VAR, "prop-set", &format!("{store} {s}"))?,
        )?);
    }
    std::thread::sleep(Duration::from_micros(5_000 + rng.below(60_000)));
    let victim = match rng.below(4) {
        0 => {
            daemon.kill();
            "daemon"
        }
        1 => {
            reader.kill();
            "reader"
        }
        s => {
            setters[s as usize - 2].kill();
            "setter"
        }
    };
    *t.killed.entry(victim).or_default() += 1;
    let deadline = Instant::now() + SURVIVE;
    for p in setters.iter_mut().chain([&mut reader]) {
        p.finish(deadline)?;
    }
    t.rounds += 1;
    for s in setters.iter().filter(|s| !s.killed) {
        let end = s.ending().unwrap_or("nothing").to_string();
        // Told the daemon is gone: before a request ("cannot reach"), or
        // during one ("did not confirm").
        let told = end.contains("cannot reach") || end.contains("did not confirm");
        ensure(end == "done" || (daemon.killed && told), || {
            format!("{}: ended {end} ({victim} killed)", s.what)
        })?;
        let kind = if told {
            "told the daemon is gone"
        } else {
            "done"
        };
        *t.endings.entry(format!("setter {kind}")).or_default() += 1;
    }
    let daemon_killed = daemon.killed;
    if daemon_killed {
        // A new daemon takes over the area the killed one left.
        daemon.finish(deadline)?;
        (daemon, d_in) = server("property daemon (2)".into(), "prop-daemon", &darg)?;
        t.restarts += 1;
    }
    // Every confirmed set is there (or the one after it, made without
    // being confirmed: its setter, or the daemon, was killed before the
    // reply); so is the last confirmed persist.
    let props = Properties::open(&store)?;
    for (s, p) in setters.iter().enumerate() {
        let confirmed = p.events("s");
        t.sets += confirmed.len();
        let Some(&(_, last)) = confirmed.last() else {
            continue;
        };
        let got = props.get(&format!("chaos.s{s}"))?.unwrap_or_default();
        let at = step_of(s as u64, &got);
        ensure(
            at == Some(last) || ((p.killed || daemon_killed) && at == Some(last + 1)),
            || format!("{}: confirmed step {last}, the store has {got:?}", p.what),
        )?;
        let saved = props
            .get(&format!("persist.chaos.s{s}"))?
            .and_then(|v| v.parse::<u64>().ok());
        let want = last - last % 8;
        ensure(
            saved.is_some_and(|v| v == want || ((p.killed || daemon_killed) && v == want + 8)),
            || {
                format!(
                    "{}: persist.chaos.s{s} is {saved:?}, confirmed {want}",
                    p.what
                )
            },
        )?;
    }
    drop(props);
    drop(d_in);
    daemon.finish(Instant::now() + SURVIVE)?;
    let area = format!("/dev/shm/ipckit-prop.{store}");
    ensure(!std::path::Path::new(&area).exists(), || {
        format!("{area} left behind")
    })?;
    Ok(())
}

// ---------------------------------------------------------------- trials

/// One trial per service.
pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("kill::binder", || campaign("binder", binder_round)),
        Trial::test("kill::prop", || campaign("prop", prop_round)),
    ]
}

/// Plays the services' roles.
pub fn peer(role: &str, arg: &str) -> Option<io::Result<()>> {
    Some(match role {
        "binder-sm" => peer_sm(arg),
        "binder-svc" => peer_service(arg),
        "binder-client" => peer_client(arg),
        "prop-daemon" => peer_prop_daemon(arg),
        "prop-set" => peer_prop_set(arg),
        "prop-read" => peer_prop_read(arg),
        _ => return None,
    })
}
