//! The property store between real processes: this test binary
//! re-executed with `IPCKIT_PROP_PEER=<role>:<argument>` plays the daemon,
//! readers, watchers and setters.

use std::io::{self, BufRead, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipckit::prop::{Policy, PropServer, Properties, Serial};
use libtest_mimic::Failed;

mod common;
use common::{ensure, first_line, my_uid, other_user_cmd, peer_command, start_serving, Serving, T};

const VAR: &str = "IPCKIT_PROP_PEER";

/// The value the hammer writes for `n`: `n:` repeated to a length that
/// varies with `n` (40 to 89 bytes, inline), so a torn read shows.
fn pattern(n: u64) -> String {
    let unit = format!("{n}:");
    let len = 40 + (n % 50) as usize;
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

fn lines() -> impl Iterator<Item = String> {
    io::stdin().lock().lines().map_while(Result::ok)
}

fn say(s: impl std::fmt::Display) {
    println!("{s}");
    let _ = io::stdout().flush();
}

fn peer(spec: &str) -> io::Result<()> {
    let (role, arg) = spec.split_once(':').expect("role:arg");
    let args: Vec<&str> = arg.split(',').collect();
    match role {
        // A daemon for store args[0], with a policy file args[1], a persist
        // directory args[2] and a mode args[3] (each may be empty). Serves
        // until stdin closes; "hammer N" sets test.value N times directly.
        "daemon" => {
            let mut b = PropServer::builder(args[0]);
            if !args[1].is_empty() {
                b = b.policy(Policy::load(args[1])?);
            }
            if !args[2].is_empty() {
                b = b.persist_dir(args[2]);
            }
            if !args[3].is_empty() {
                b = b.mode(u32::from_str_radix(args[3], 8).map_err(io::Error::other)?);
            }
            let server = b.start()?;
            say("ready");
            for line in lines() {
                if let Some(n) = line.strip_prefix("hammer ") {
                    let n: u64 = n.parse().map_err(io::Error::other)?;
                    let t0 = Instant::now();
                    for i in 0..n {
                        server.set("test.value", &pattern(i))?;
                    }
                    say(format!("hammered in {:?}", t0.elapsed()));
                }
            }
            Ok(())
        }
        // Reads test.value as fast as it can until it is pattern(last):
        // every value whole, never older than one seen before.
        "reader" => {
            let props = Properties::open(args[0])?;
            let last: u64 = args[1].parse().map_err(io::Error::other)?;
            say("ready");
            let (mut reads, mut distinct, mut seen) = (0u64, 0u64, None::<u64>);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                reads += 1;
                if let Some(v) = props.get("test.value")? {
                    let n: u64 = v
                        .split(':')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| io::Error::other(format!("torn: {v:?}")))?;
                    if v != pattern(n) {
                        return Err(io::Error::other(format!("torn value {v:?}")));
                    }
                    if seen.is_some_and(|s| n < s) {
                        return Err(io::Error::other(format!("{n} after {seen:?}")));
                    }
                    if seen != Some(n) {
                        distinct += 1;
                        seen = Some(n);
                    }
                    if n == last {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(io::Error::other(format!("stuck at {seen:?}")));
                }
            }
            say(format!("reads {reads} distinct {distinct}"));
            Ok(())
        }
        // Waits for changes of args[2] (kind args[1]: property, prefix) and
        // prints the property's value after each, until it is "end".
        "watch" => {
            let props = Properties::open(args[0])?;
            let (kind, name, show) = (args[1], args[2], args[3]);
            let serial = |p: &Properties| match kind {
                "property" => p.serial(name),
                _ => p.prefix_serial(name),
            };
            let mut seen = serial(&props)?;
            say("ready");
            loop {
                let got = match kind {
                    "property" => props.wait(name, seen, T)?,
                    _ => props.wait_prefix(name, seen, T)?,
                };
                seen = got.ok_or_else(|| io::Error::other("no change came"))?;
                let v = props.get(show)?.unwrap_or_default();
                say(&v);
                if v == "end" {
                    return Ok(());
                }
            }
        }
        // One set; prints "ok" or the error.
        "set" => {
            let r = Properties::open(args[0]).and_then(|p| p.set(args[1], args[2]));
            match r {
                Ok(()) => say("ok"),
                Err(e) => say(format!("{:?}: {e}", e.kind())),
            }
            Ok(())
        }
        // Opens the store, then answers "get NAME" lines until stdin
        // closes: the same mapping all along.
        "get" => {
            let props = Properties::open(args[0])?;
            say("ready");
            for line in lines() {
                let name = line.strip_prefix("get ").unwrap_or(&line);
                match props.get(name) {
                    Ok(v) => say(format!("{v:?}")),
                    Err(e) => say(format!("error: {e}")),
                }
            }
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other}"))),
    }
}

fn store() -> String {
    common::unique("prop")
}

fn daemon(store: &str, policy: &str, persist: &str, mode: &str) -> Result<Serving, Failed> {
    start_serving(VAR, "daemon", &format!("{store},{policy},{persist},{mode}"))
}

fn tell(s: &mut Serving, line: &str) -> Result<(), Failed> {
    let stdin = s.child.stdin.as_mut().ok_or("no stdin")?;
    writeln!(stdin, "{line}")?;
    Ok(())
}

/// A peer that says "ready" first, stdin piped.
fn spawn(role: &str, arg: &str) -> Result<std::process::Child, Failed> {
    let mut c = peer_command(VAR, role, arg)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let line = first_line(&mut c)?;
    ensure(line == "ready", || format!("{role} said {line:?}"))?;
    Ok(c)
}

fn finish(c: std::process::Child) -> Result<String, Failed> {
    finish_within(c, T)
}

/// The rest of a peer's output once it has exited, waiting at most
/// `limit`.
fn finish_within(mut c: std::process::Child, limit: Duration) -> Result<String, Failed> {
    drop(c.stdin.take());
    let mut stdout = c.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let r = io::Read::read_to_string(&mut stdout, &mut s);
        let _ = tx.send(r.map(|_| s));
    });
    let out = match rx.recv_timeout(limit) {
        Ok(r) => r?,
        Err(_) => {
            let _ = c.kill();
            let _ = c.wait();
            return Err(format!("the peer did not finish within {limit:?}").into());
        }
    };
    let status = c.wait()?;
    ensure(status.success(), || format!("the peer failed: {status}"))?;
    Ok(out)
}

fn set_by(store: &str, name: &str, value: &str) -> Result<String, Failed> {
    let out = peer_command(VAR, "set", &format!("{store},{name},{value}"))?.output()?;
    ensure(out.status.success(), || "the setter failed".into())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Four reader processes read a property the daemon rewrites a million
/// times as fast as it can: no reader ever sees a torn value or one older
/// than a value it saw before.
fn readers_never_see_torn_or_old_values() -> Result<(), Failed> {
    let n: u64 = std::env::var("IPCKIT_PROP_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let s = store();
    let mut d = daemon(&s, "", "", "")?;
    let props = Properties::open(&s)?;
    props.set("test.value", &pattern(0))?;
    let readers = (0..4)
        .map(|_| spawn("reader", &format!("{s},{}", n - 1)))
        .collect::<Result<Vec<_>, _>>()?;
    tell(&mut d, &format!("hammer {n}"))?;
    // A million writes take seconds in a debug build, more on a busy
    // machine.
    for r in readers {
        let out = finish_within(r, Duration::from_secs(120))?;
        let w: Vec<&str> = out.split_whitespace().collect();
        ensure(w.len() == 4 && w[0] == "reads", || out.clone())?;
        let distinct: u64 = w[3].parse()?;
        eprintln!("reader: {}", out.trim());
        ensure(distinct > 1, || format!("a reader saw one value: {out}"))?;
    }
    let line = first_line(&mut d.child)?;
    eprintln!("daemon: {line}");
    ensure(line.starts_with("hammered"), || line.clone())
}

/// A watcher wakes after each change of one property, of anything under a
/// prefix, and of anything at all, in step with the setter.
fn watcher_wakes_after_each_change() -> Result<(), Failed> {
    let s = store();
    let _d = daemon(&s, "", "", "")?;
    let props = Properties::open(&s)?;
    for (kind, name) in [
        ("property", "net.wifi.state"),
        ("prefix", "net.wifi"),
        ("prefix", ""),
    ] {
        let mut w = spawn("watch", &format!("{s},{kind},{name},net.wifi.state"))?;
        let mut out = io::BufReader::new(w.stdout.take().ok_or("stdout")?);
        for i in 0..50 {
            let v = if i == 49 {
                "end".to_string()
            } else {
                format!("v{kind}{i}")
            };
            let t0 = Instant::now();
            props.set("net.wifi.state", &v)?;
            let mut line = String::new();
            out.read_line(&mut line)?;
            ensure(line.trim() == v, || {
                format!("{kind} {name:?}: {line:?} for {v}")
            })?;
            ensure(t0.elapsed() < T, || "late".into())?;
        }
        ensure(w.wait()?.success(), || format!("{kind} watcher failed"))?;
    }
    // A wait times out when nothing changes, and a property that does not
    // exist yet is waited for until it does.
    let seen = props.serial("net.other")?;
    ensure(seen == Serial::NONE, || format!("{seen:?}"))?;
    ensure(
        props
            .wait("net.other", seen, Duration::from_millis(50))?
            .is_none(),
        || "a change from nowhere".into(),
    )?;
    let w = spawn("watch", &format!("{s},property,late.prop,late.prop"))?;
    props.set("late.prop", "end")?;
    let out = finish(w)?;
    ensure(out.trim() == "end", || out.clone())
}

/// The policy decides who sets what, from the connection's credentials;
/// ro.* is set once; another user cannot read a 0600 area.
fn policy_ro_and_permissions() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy");
    std::fs::write(&policy, "open.* *\nnet.* 0\n")?;
    let s = store();
    let d = daemon(&s, policy.to_str().ok_or("path")?, "", "644")?;
    // This user: the daemon's own (root here, or the same user).
    ensure(set_by(&s, "net.a", "1")? == "ok", || "net.a".into())?;
    ensure(set_by(&s, "ro.build", "one")? == "ok", || "ro".into())?;
    let again = set_by(&s, "ro.build", "two")?;
    ensure(
        again.contains("read-only once set") && again.contains("\"one\""),
        || again.clone(),
    )?;
    let props = Properties::open(&s)?;
    ensure(props.get("ro.build")?.as_deref() == Some("one"), || {
        "ro changed".into()
    })?;
    if my_uid() == 0 {
        let other = |name: &str| -> Result<String, Failed> {
            let out = other_user_cmd(&dir)?
                .env(VAR, format!("set:{s},{name},x"))
                .stdin(Stdio::null())
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let no = other("net.b")?;
        ensure(
            no.starts_with("PermissionDenied") && no.contains("gives net.* to uid 0"),
            || no.clone(),
        )?;
        let no = other("misc.x")?;
        ensure(no.contains("no rule"), || no.clone())?;
        ensure(other("open.x")? == "ok", || "open.x".into())?;
        ensure(props.get("open.x")?.as_deref() == Some("x"), || {
            "open.x".into()
        })?;
        ensure(props.get("net.b")?.is_none(), || "net.b was set".into())?;
        // A 0600 store is not readable by another user at all.
        let s2 = store();
        let _d2 = daemon(&s2, "", "", "")?;
        let out = other_user_cmd(&dir)?
            .env(VAR, format!("set:{s2},any.x,1"))
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure(text.contains("not readable by this user"), || {
            text.to_string()
        })?;
    } else {
        eprintln!("not root: the other-user refusals are not run");
    }
    drop(d);
    Ok(())
}

/// persist.* properties outlive the daemon (saved atomically, loaded at
/// start); others do not.
fn persist_across_restart() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().to_str().ok_or("path")?;
    let s = store();
    let d = daemon(&s, "", p, "")?;
    let props = Properties::open(&s)?;
    props.set("persist.sys.lang", "fr")?;
    props.set("persist.sys.lang", "de")?;
    props.set("tmp.x", "gone")?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("persist.json"))?
        .permissions()
        .mode();
    ensure(mode & 0o777 == 0o600, || format!("mode {mode:o}"))?;
    drop(d);
    // The stopped daemon closed its area: the old mapping says so.
    let e = props.get("tmp.x").unwrap_err().to_string();
    ensure(e.contains("was shut down"), || e.clone())?;
    let _d = daemon(&s, "", p, "")?;
    let props = Properties::open(&s)?;
    ensure(
        props.get("persist.sys.lang")?.as_deref() == Some("de"),
        || "persist.sys.lang lost".into(),
    )?;
    ensure(props.get("tmp.x")?.is_none(), || "tmp.x survived".into())?;
    // A broken saved file stops the daemon from starting, with words.
    std::fs::write(dir.path().join("persist.json"), "{\"net.x\": \"1\"}")?;
    let s2 = store();
    let out = peer_command(VAR, "daemon", &format!("{s2},,{p},"))?.output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(
        !out.status.success() && err.contains("not a persist.* name"),
        || err.to_string(),
    )
}

/// A reader keeps its mapping while the daemon is killed (it reads the
/// last values) and restarted (the new daemon takes the area over, and the
/// reader sees its changes without opening anything again).
fn readers_survive_daemon_kill_and_restart() -> Result<(), Failed> {
    let s = store();
    let mut d = daemon(&s, "", "", "")?;
    Properties::open(&s)?.set("svc.state", "running")?;
    let mut r = spawn("get", &s)?;
    let mut out = io::BufReader::new(r.stdout.take().ok_or("stdout")?);
    let mut ask = |name: &str| -> Result<String, Failed> {
        writeln!(r.stdin.as_mut().ok_or("stdin")?, "get {name}")?;
        let mut line = String::new();
        out.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    };
    ensure(ask("svc.state")? == "Some(\"running\")", || "before".into())?;
    d.child.kill()?;
    d.child.wait()?;
    ensure(ask("svc.state")? == "Some(\"running\")", || {
        "after the kill".into()
    })?;
    let e = set_by(&s, "svc.state", "x")?;
    ensure(e.contains("cannot reach the daemon"), || e.clone())?;
    let d2 = daemon(&s, "", "", "")?;
    Properties::open(&s)?.set("svc.state", "restarted")?;
    let got = ask("svc.state")?;
    ensure(got == "Some(\"restarted\")", || got.clone())?;
    drop(d2);
    drop(r.stdin.take());
    ensure(r.wait()?.success(), || "the reader failed".into())
}

/// The area grows (here past four times its first 128 KiB) while a reader
/// process has it mapped: the reader reads what lies beyond the size it
/// first saw, without opening anything again.
fn area_grows_under_a_reader() -> Result<(), Failed> {
    let grown = |i: usize| format!("{i}:{}", "x".repeat(5000));
    let s = store();
    let _d = daemon(&s, "", "", "")?;
    let props = Properties::open(&s)?;
    props.set("grow.first", "1")?;
    let mut r = spawn("get", &s)?;
    let mut out = io::BufReader::new(r.stdout.take().ok_or("stdout")?);
    for i in 0..150 {
        props.set(&format!("grow.n{i}"), &grown(i))?;
    }
    let used = std::fs::metadata(format!("/dev/shm/ipckit-prop.{s}"))?.len();
    ensure(used >= 512 << 10, || format!("the area is {used} bytes"))?;
    for i in [0, 77, 149] {
        writeln!(r.stdin.as_mut().ok_or("stdin")?, "get grow.n{i}")?;
        let mut line = String::new();
        out.read_line(&mut line)?;
        let want = format!("{:?}", Some(grown(i)));
        ensure(line.trim() == want, || {
            format!("grow.n{i}: {}", line.trim())
        })?;
    }
    drop(r.stdin.take());
    ensure(r.wait()?.success(), || "the reader failed".into())
}

/// Bad names, values and stores are refused before anything is sent; a
/// corrupt area is an error for its readers, never a crash or a hang;
/// a second daemon for one store is refused.
fn bad_input_and_corrupt_areas() -> Result<(), Failed> {
    let s = store();
    let _d = daemon(&s, "", "", "")?;
    let props = Properties::open(&s)?;
    for bad in ["", ".a", "a..b", "a.", "a b", "a/b", &"x".repeat(300)] {
        let e = props.set(bad, "1").unwrap_err();
        ensure(e.kind() == io::ErrorKind::InvalidInput, || {
            format!("{bad}: {e}")
        })?;
        ensure(props.get(bad).is_err(), || bad.to_string())?;
    }
    let e = props
        .set("a.b", &"v".repeat(70_000))
        .unwrap_err()
        .to_string();
    ensure(e.contains("the most is 65536"), || e.clone())?;
    // A persist directory that is not there is refused at start, not at
    // the first persist.* set; the area it would have made is not left.
    let missing = store();
    let e = PropServer::builder(&missing)
        .persist_dir("/nonexistent/ipckit-persist")
        .start()
        .unwrap_err()
        .to_string();
    ensure(
        e.contains("persist_dir") && e.contains("create it first"),
        || e.clone(),
    )?;
    ensure(
        !std::path::Path::new(&format!("/dev/shm/ipckit-prop.{missing}")).exists(),
        || "the refused daemon left its area".into(),
    )?;
    // A long value round-trips.
    let long = "L".repeat(5000);
    props.set("long.value", &long)?;
    ensure(
        props.get("long.value")?.as_deref() == Some(long.as_str()),
        || "long value".into(),
    )?;
    props.set("long.value", "short again")?;
    ensure(
        props.get("long.value")?.as_deref() == Some("short again"),
        || "long to short".into(),
    )?;
    let listed = props.list("long")?;
    ensure(
        listed == [("long.value".into(), "short again".into())],
        || format!("{listed:?}"),
    )?;
    let e = Properties::open("no-such-store-here")
        .unwrap_err()
        .to_string();
    ensure(e.contains("ipc propd --name no-such-store-here"), || {
        e.clone()
    })?;
    let e = Properties::open("bad/name").unwrap_err().to_string();
    ensure(e.contains("not a valid store name"), || e.clone())?;
    let out = peer_command(VAR, "daemon", &format!("{s},,,"))?.output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(err.contains("another daemon already serves"), || {
        err.to_string()
    })?;

    // A corrupt area: valid header, links pointing anywhere.
    let bad = store();
    let path = format!("/dev/shm/ipckit-prop.{bad}");
    let mut bytes = vec![0u8; 128 << 10];
    bytes[0..4].copy_from_slice(&0x5052_4b49u32.to_ne_bytes());
    bytes[4..8].copy_from_slice(&1u32.to_ne_bytes());
    for (i, chunk) in bytes[8..].chunks_mut(4).enumerate() {
        // Sizes, links and lengths: large, misaligned, self-pointing.
        let v: u32 = match i % 4 {
            0 => 4096,
            1 => 128,
            2 => 131,
            _ => 0xffff_fff0,
        };
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    bytes[12..16].copy_from_slice(&0u32.to_ne_bytes()); // not closed
    std::fs::write(&path, &bytes)?;
    let result = (|| -> Result<(), Failed> {
        let p = Properties::open(&bad)?;
        for name in ["a", "a.b.c", "net.wifi"] {
            let e = p.get(name).unwrap_err();
            ensure(e.to_string().contains("corrupt"), || e.to_string())?;
        }
        ensure(p.list("").is_err(), || "listed a corrupt area".into())?;
        Ok(())
    })();
    std::fs::remove_file(&path)?;
    result
}

fn main() {
    common::play_peer_or_arm_watchdog(&[(VAR, peer)], "prop tests", Duration::from_secs(600));
    common::run_cases(vec![
        (
            "consistency::readers_never_see_torn_or_old_values",
            readers_never_see_torn_or_old_values,
        ),
        (
            "wait::watcher_wakes_after_each_change",
            watcher_wakes_after_each_change,
        ),
        ("policy::ro_and_permissions", policy_ro_and_permissions),
        ("persist::across_restart", persist_across_restart),
        (
            "daemon::readers_survive_kill_and_restart",
            readers_survive_daemon_kill_and_restart,
        ),
        (
            "input::bad_input_and_corrupt_areas",
            bad_input_and_corrupt_areas,
        ),
        ("area::grows_under_a_reader", area_grows_under_a_reader),
    ]);
}
