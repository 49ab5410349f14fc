//! Chaos for what guards shared memory: the robust mutex with its
//! condition variable, and semaphores of both families used as a lock.
//! Three worker processes take turns updating a shared state in two steps
//! (so a kill between them leaves it torn), and one of them is killed with
//! SIGKILL at a random moment, often inside its critical section. Then:
//!
//! - **no survivor hangs**: with the robust mutex and with System V's
//!   `SEM_UNDO`, the survivors carry on to the end (the next locker is told
//!   `OwnerDied`, or the kernel gives the semaphore back); with a plain
//!   semaphore (POSIX named or unnamed, System V without undo) a lock that
//!   died with its holder is never given back, and the survivors end on
//!   their timeout, within the bound;
//! - **no one enters a critical section that is not free**: a worker that
//!   gets the lock finds the state whole, unless the kill left it torn, and
//!   then it was told so (`OwnerDied`) or finds the dead holder's mark
//!   (after `SEM_UNDO`); either way the state is repaired and the tally
//!   goes on;
//! - **nothing is lost**: the count at the end is the increments the
//!   workers confirmed, plus at most the one the killed worker made
//!   without confirming;
//! - **nothing is leaked**: the shared memory and the semaphores are gone
//!   once the round's owner drops them.

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipckit::sem::{NamedSemaphore, SemOp, SemaphoreSet, UnnamedSemaphore};
use ipckit::shm::{Condvar, LockError, Mutex, MutexGuard, Region, Shm};
use ipckit::sysv::Key;
use ipckit::Address;
use libtest_mimic::{Failed, Trial};

use crate::common::{self, ensure, peer_command, unique, unique_key};
use crate::{campaign, report, Part, Rng, SURVIVE, VAR};

/// Worker processes per round.
const WORKERS: u64 = 3;
/// Increments each worker makes (most rounds kill one before the end).
const STEPS: u64 = 300;
/// How long a worker waits for the lock before it decides the lock died
/// with its holder (never, for the robust mutex and `SEM_UNDO`).
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// Inside the critical section, between the two halves of an update: a
/// kill lands there often.
const TORN: Duration = Duration::from_micros(100);

// The shared page.
const MUTEX: usize = 0;
const CONDVAR: usize = 128;
/// The pid of the semaphore's holder, 0 when free.
const HOLDER: usize = 256;
/// The semaphores' count and its complement (the two halves).
const COUNT: usize = 264;
const SHADOW: usize = 272;
const UNNAMED: usize = 320;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The robust mutex and its condition variable.
    Mutex,
    /// A POSIX named semaphore (no undo).
    Named,
    /// A POSIX unnamed semaphore in the shared page (no undo).
    Unnamed,
    /// A System V semaphore taken without `SEM_UNDO`.
    Sysv,
    /// A System V semaphore taken with `SEM_UNDO`.
    SysvUndo,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Mutex,
        Kind::Named,
        Kind::Unnamed,
        Kind::Sysv,
        Kind::SysvUndo,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "shm-mutex-condvar",
            Kind::Named => "sem-named",
            Kind::Unnamed => "sem-unnamed",
            Kind::Sysv => "sysv-sem",
            Kind::SysvUndo => "sysv-sem-undo",
        }
    }

    fn parse(s: &str) -> Kind {
        *Kind::ALL
            .iter()
            .find(|k| k.name() == s)
            .unwrap_or_else(|| panic!("a lock kind: {s}"))
    }

    /// A lock that died with its holder comes back.
    fn recovers(self) -> bool {
        matches!(self, Kind::Mutex | Kind::SysvUndo)
    }
}

/// The semaphore a round uses, however it is made.
enum Sem<'r> {
    Named(NamedSemaphore),
    Unnamed(UnnamedSemaphore<'r>),
    Sysv(SemaphoreSet, bool),
}

impl Sem<'_> {
    fn open<'r>(kind: Kind, page: &'r Region, name: &str) -> io::Result<Sem<'r>> {
        Ok(match kind {
            Kind::Named => Sem::Named(NamedSemaphore::builder(name).open()?),
            Kind::Unnamed => Sem::Unnamed(UnnamedSemaphore::open(page, UNNAMED)?),
            Kind::Sysv | Kind::SysvUndo => Sem::Sysv(
                SemaphoreSet::builder(name.parse::<Key>()?).open()?,
                kind == Kind::SysvUndo,
            ),
            Kind::Mutex => unreachable!("not a semaphore"),
        })
    }

    fn p(&self, timeout: Duration) -> io::Result<bool> {
        match self {
            Sem::Named(s) => s.wait_timeout(timeout),
            Sem::Unnamed(s) => s.wait_timeout(timeout),
            Sem::Sysv(s, undo) => {
                let op = SemOp::wait(0);
                s.apply_timeout(&[if *undo { op.undo() } else { op }], timeout)
            }
        }
    }

    fn v(&self) -> io::Result<()> {
        match self {
            Sem::Named(s) => s.post(),
            Sem::Unnamed(s) => s.post(),
            Sem::Sysv(s, undo) => {
                let op = SemOp::post(0);
                s.apply(&[if *undo { op.undo() } else { op }])
            }
        }
    }

    fn value(&self) -> io::Result<u32> {
        match self {
            Sem::Named(s) => s.value(),
            Sem::Unnamed(s) => s.value(),
            Sem::Sysv(s, _) => s.get(0).map(u32::from),
        }
    }
}

// ---------------------------------------------------------------- workers

/// Under the mutex a torn state is one whose halves disagree; the one
/// told `OwnerDied` completes it (the dead worker's increment stands) and
/// says `recovered`.
fn repaired<'a>(mut g: MutexGuard<'a, [u64; 2]>) -> io::Result<MutexGuard<'a, [u64; 2]>> {
    let [v, s] = g.get();
    report(format_args!("recovered {}", u8::from(s != !v)));
    g.set([v, !v]);
    g.make_consistent()?;
    Ok(g)
}

fn whole(g: &MutexGuard<'_, [u64; 2]>) -> io::Result<()> {
    let [v, s] = g.get();
    if s != !v {
        return Err(io::Error::other(format!(
            "BAD a torn state ({v}, {s:#x}) under a lock no one died holding"
        )));
    }
    Ok(())
}

/// `lock:mutex SHM W`: increments the count `STEPS` times under the
/// robust mutex, `i W` after each; every fourth time waits on the
/// condition variable for another worker's increment first.
fn mutex_worker(page: &Region, w: &str) -> io::Result<()> {
    let mutex = Mutex::<[u64; 2]>::open(page, MUTEX)?;
    let cv = Condvar::open(page, CONDVAR)?;
    let lock = || match mutex.lock_timeout(LOCK_WAIT) {
        Ok(Some(g)) => whole(&g).map(|()| g),
        Err(LockError::OwnerDied(g)) => repaired(g),
        Ok(None) => Err(io::Error::other(format!(
            "BAD the robust mutex not free after {LOCK_WAIT:?}"
        ))),
        Err(e) => Err(io::Error::other(format!("BAD {e}"))),
    };
    for i in 0..STEPS {
        let mut g = lock()?;
        if i % 4 == 3 {
            // A waiter relocks after a holder's death like `lock` does.
            let before = g.get()[0];
            let deadline = Instant::now() + Duration::from_millis(5);
            while g.get()[0] == before && Instant::now() < deadline {
                g = match cv.wait_timeout(g, Duration::from_millis(5)) {
                    Ok((g, _)) => {
                        whole(&g)?;
                        g
                    }
                    Err(LockError::OwnerDied(g)) => repaired(g)?,
                    Err(e) => return Err(io::Error::other(format!("BAD condvar: {e}"))),
                };
            }
        }
        let [v, s] = g.get();
        g.set([v + 1, s]);
        std::thread::sleep(TORN);
        g.set([v + 1, !(v + 1)]);
        cv.notify_all()?;
        drop(g);
        report(format_args!("i {w} {}", v + 1));
    }
    report(format_args!("end done"));
    Ok(())
}

/// `lock:KIND SHM SEM W` for a semaphore: the same increments, the
/// semaphore as the lock, the holder's pid in the page while it holds it.
fn sem_worker(kind: Kind, page: &Region, sem: &str, w: &str) -> io::Result<()> {
    let sem = Sem::open(kind, page, sem)?;
    let holder = page.atomic_u32(HOLDER)?;
    let (count, shadow) = (page.atomic_u64(COUNT)?, page.atomic_u64(SHADOW)?);
    let me = std::process::id();
    for _ in 0..STEPS {
        if !sem.p(LOCK_WAIT)? {
            report(format_args!(
                "end timeout {}",
                holder.load(Ordering::Acquire)
            ));
            return Ok(());
        }
        let was = holder.swap(me, Ordering::AcqRel);
        let v = count.load(Ordering::Acquire);
        if was != 0 {
            // Its holder died inside; the parent checks it was the one
            // it killed (a live one would mean two inside at once).
            report(format_args!("took {was}"));
            if shadow.swap(!v, Ordering::AcqRel) != !v {
                report(format_args!("torn"));
            }
        } else if shadow.load(Ordering::Acquire) != !v {
            return Err(io::Error::other(format!(
                "BAD a torn count {v} with no holder's mark"
            )));
        }
        count.store(v + 1, Ordering::Release);
        std::thread::sleep(TORN);
        shadow.store(!(v + 1), Ordering::Release);
        holder.store(0, Ordering::Release);
        sem.v()?;
        report(format_args!("i {w} {}", v + 1));
    }
    report(format_args!("end done"));
    Ok(())
}

/// Plays `lock:…`.
pub fn peer(role: &str, arg: &str) -> Option<io::Result<()>> {
    if role != "lock" {
        return None;
    }
    let w: Vec<&str> = arg.split(' ').collect();
    let [kind, shm, sem, worker] = w[..] else {
        panic!("lock:KIND SHM SEM W, not {arg}")
    };
    Some(
        Shm::builder(shm)
            .open()
            .and_then(|page| match Kind::parse(kind) {
                Kind::Mutex => mutex_worker(&page, worker),
                k => sem_worker(k, &page, sem, worker),
            }),
    )
}

// ---------------------------------------------------------------- the parent

#[derive(Default)]
struct Tally {
    rounds: usize,
    /// Kills that left the lock held (told `OwnerDied`, taken over after
    /// undo, or ending the survivors on their timeout).
    holding: usize,
    /// Of those, the ones that left the state torn.
    torn: usize,
    increments: u64,
    timeouts: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kills survived, {} while holding the lock ({} leaving the state torn), \
             {} increments checked, {} survivors ended on their timeout",
            self.rounds, self.holding, self.torn, self.increments, self.timeouts
        )
    }
}

/// What the round made, in the order it must go.
struct Objects {
    page: Shm,
    named: Option<NamedSemaphore>,
    sysv: Option<SemaphoreSet>,
    sem: String,
}

fn make(kind: Kind) -> io::Result<Objects> {
    let page = Shm::builder(format!("/{}", unique("chaos-lock")))
        .size(4096)
        .create()?;
    let (mut named, mut sysv) = (None, None);
    let sem = match kind {
        Kind::Mutex => {
            Mutex::init(&page, MUTEX, [0u64, !0])?;
            Condvar::init(&page, CONDVAR)?;
            "-".to_string()
        }
        Kind::Named => {
            let name = format!("/{}", unique("chaos-sem"));
            named = Some(NamedSemaphore::builder(&name).value(1).create()?);
            name
        }
        Kind::Unnamed => {
            UnnamedSemaphore::init(&page, UNNAMED, 1)?;
            "-".to_string()
        }
        Kind::Sysv | Kind::SysvUndo => {
            let key = unique_key();
            sysv = Some(SemaphoreSet::builder(key).values(&[1]).create()?);
            key.to_string()
        }
    };
    if kind != Kind::Mutex {
        page.atomic_u64(SHADOW)?.store(!0, Ordering::Release);
    }
    Ok(Objects {
        page,
        named,
        sysv,
        sem,
    })
}

fn round(kind: Kind, rng: &mut Rng, tally: &mut Tally) -> Result<(), Failed> {
    let name = kind.name();
    let objs = make(kind)?;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(Part::start(
            format!("{name} worker {w}"),
            peer_command(
                VAR,
                "lock",
                &format!("{name} {} {} {w}", objs.page.name(), objs.sem),
            )?,
        )?);
    }
    std::thread::sleep(Duration::from_micros(5_000 + rng.below(60_000)));
    let victim = rng.below(WORKERS) as usize;
    workers[victim].kill();
    let dead = workers[victim].child.id();
    let deadline = Instant::now() + SURVIVE;
    for w in &mut workers {
        w.finish(deadline)?;
    }
    tally.rounds += 1;

    let confirmed: u64 = workers.iter().map(|w| w.events("i").len() as u64).sum();
    let said = |tag: &str| -> Vec<String> {
        workers
            .iter()
            .flat_map(|w| w.seen.iter())
            .filter(|l| l.starts_with(tag))
            .cloned()
            .collect()
    };
    let mut recovered = said("recovered ");
    let took = said("took ");
    let timeouts = said("end timeout");
    tally.timeouts += timeouts.len();
    for w in workers.iter().filter(|w| !w.killed) {
        let end = w.ending().unwrap_or("nothing");
        ensure(end == "done" || end.starts_with("timeout"), || {
            format!("{}: ended with {end}", w.what)
        })?;
    }

    // The count as the last one left it, repaired if it died holding.
    let count = match kind {
        Kind::Mutex => {
            let mutex = Mutex::<[u64; 2]>::open(&objs.page, MUTEX)?;
            let g = match mutex.lock_timeout(LOCK_WAIT) {
                Ok(Some(g)) => g,
                Err(LockError::OwnerDied(g)) => {
                    let [v, s] = g.get();
                    recovered.push(format!("recovered {}", u8::from(s != !v)));
                    repaired(g)?
                }
                other => return Err(format!("{name}: the parent's lock: {other:?}").into()),
            };
            whole(&g)?;
            g.get()[0]
        }
        _ => {
            let sem = Sem::open(kind, &objs.page, &objs.sem)?;
            let holder = objs.page.atomic_u32(HOLDER)?.load(Ordering::Acquire);
            let value = sem.value()?;
            let (count, shadow) = (
                objs.page.atomic_u64(COUNT)?.load(Ordering::Acquire),
                objs.page.atomic_u64(SHADOW)?.load(Ordering::Acquire),
            );
            // The semaphore is taken at the end only if its holder died
            // with it, and only without undo. The holder's mark is set
            // inside (cleared just before the post, so a kill between the
            // two leaves none).
            let taken = value == 0;
            ensure(value <= 1 && !(taken && kind.recovers()), || {
                format!("{name}: semaphore {value} at the end")
            })?;
            ensure(holder == 0 || holder == dead, || {
                format!("{name}: marked held at the end by {holder}, not the killed {dead}")
            })?;
            ensure(taken || kind.recovers() || holder == 0, || {
                format!("{name}: marked held by {holder}, but the semaphore is free")
            })?;
            ensure(shadow == !count || holder == dead, || {
                format!("{name}: torn at the end ({count}, {shadow:#x}) with no dead holder")
            })?;
            for t in &timeouts {
                ensure(
                    taken && (t == "end timeout 0" || t == &format!("end timeout {dead}")),
                    || format!("{name}: {t}, but the semaphore is free or {dead} was killed"),
                )?;
            }
            for t in &took {
                ensure(kind.recovers() && t == &format!("took {dead}"), || {
                    format!("{name}: {t} (killed {dead}): two inside at once")
                })?;
            }
            if taken || !took.is_empty() || holder == dead {
                tally.holding += 1;
                tally.torn += usize::from(shadow != !count) + said("torn").len();
            }
            count
        }
    };
    ensure(recovered.len() <= 1 && took.len() <= 1, || {
        format!("{name}: one kill, but {recovered:?} {took:?}")
    })?;
    for r in &recovered {
        tally.holding += 1;
        tally.torn += usize::from(r == "recovered 1");
    }
    ensure(count == confirmed || count == confirmed + 1, || {
        format!("{name}: count {count}, {confirmed} increments confirmed")
    })?;
    tally.increments += count;

    let addrs = [
        Some(Address::Shm(objs.page.name().to_string())),
        objs.named
            .as_ref()
            .map(|s| Address::Sem(s.name().to_string())),
        objs.sysv.as_ref().map(|s| Address::SysvSem(s.key())),
    ];
    drop(objs);
    for a in addrs.iter().flatten() {
        ensure(!common::object_exists(a), || {
            format!("{name}: {a} left behind")
        })?;
    }
    Ok(())
}

/// One trial per kind of lock.
pub fn trials() -> Vec<Trial> {
    Kind::ALL
        .into_iter()
        .map(|k| {
            Trial::test(format!("kill::{}", k.name()), move || {
                campaign(k.name(), |rng, t| round(k, rng, t))
            })
        })
        .collect()
}
