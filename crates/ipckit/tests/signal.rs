//! Signals between real processes: this test binary re-executed with
//! `IPCKIT_SIGNAL_PEER=<role>:<argument>` plays the receiving (or sending)
//! process. Receivers are single-threaded peers, so a process-directed
//! signal cannot reach a thread that does not block it; they report what
//! they received on stdout, one line per signal.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipckit::signal::{self, Code, Signal, SignalReceiver, SignalSender, SignalSet};
use ipckit::{MessageReceiver, MessageSenderExt, SendTimeoutError};
use libtest_mimic::Failed;

mod common;
use common::{ensure, expect_denied, my_uid, other_user_cmd, Peer, T};

fn rt(n: i32) -> Signal {
    Signal::realtime(n).expect("realtime signal")
}

fn report(i: &signal::SignalInfo) {
    println!(
        "{} {} {} {} {}",
        i.signal,
        i.pid,
        i.uid,
        i.value.map_or("-".to_string(), |v| v.to_string()),
        i.code.name()
    );
}

/// A receiver for a comma-separated list of signals; says "ready" once
/// they are blocked.
fn receiver(list: &str) -> io::Result<SignalReceiver> {
    let sigs = list
        .split(',')
        .map(str::parse)
        .collect::<io::Result<Vec<Signal>>>()?;
    let rx = SignalReceiver::new(&sigs)?;
    println!("ready");
    io::stdout().flush()?;
    Ok(rx)
}

fn peer_main(spec: &str) -> io::Result<()> {
    let (role, arg) = spec.split_once(':').expect("role:arg");
    match role {
        // Receive N signals of the listed kinds, report each.
        "recv" => {
            let (n, sigs) = arg.split_once(':').expect("N:SIG,SIG");
            let rx = receiver(sigs)?;
            for _ in 0..n.parse::<usize>().map_err(io::Error::other)? {
                match rx.recv_info_timeout(T)? {
                    Some(i) => report(&i),
                    None => return Err(io::Error::other("no signal came")),
                }
                io::stdout().flush()?;
            }
            Ok(())
        }
        // Block the signals, wait for "go" on stdin, list what is pending,
        // then drain everything that was delivered.
        "coalesce" => {
            let rx = receiver(arg)?;
            let mut line = String::new();
            io::stdin().read_line(&mut line)?;
            println!("pending {:?}", signal::pending()?);
            while let Some(i) = rx.recv_info_timeout(Duration::from_millis(200))? {
                report(&i);
            }
            Ok(())
        }
        // Receive N messages through the message trait, print their bytes.
        "messages" => {
            let (n, sig) = arg.split_once(':').expect("N:SIG");
            let mut rx = receiver(sig)?;
            rx.set_wait_strategy(ipckit::WaitStrategy::ADAPTIVE);
            let mut buf = Vec::new();
            for _ in 0..n.parse::<usize>().map_err(io::Error::other)? {
                rx.recv_timeout_into(&mut buf, T).map_err(io::Error::from)?;
                println!("{buf:?}");
                io::stdout().flush()?;
            }
            Ok(())
        }
        // An interval timer sends this process a signal with a value:
        // report three deliveries.
        "timer" => {
            let rx = receiver(arg)?;
            let timer = signal::Timer::new(arg.parse()?, 99)?;
            timer.start(Duration::from_millis(20), Some(Duration::from_millis(20)))?;
            for _ in 0..3 {
                let i = rx
                    .recv_info_timeout(T)?
                    .ok_or_else(|| io::Error::other("the timer did not fire"))?;
                report(&i);
            }
            timer.stop()?;
            if rx.recv_info_timeout(Duration::from_millis(100))?.is_some() {
                return Err(io::Error::other("the stopped timer fired"));
            }
            Ok(())
        }
        // Try to signal a process we may not signal.
        "denied" => {
            let target: u32 = arg.parse().map_err(io::Error::other)?;
            match signal::kill(target, Signal::USR1) {
                Err(e) => println!("{e}"),
                Ok(()) => println!("the signal was sent"),
            }
            Ok(())
        }
        other => Err(io::Error::other(format!("unknown role {other}"))),
    }
}

/// A peer whose stdout lines arrive on a channel.
struct Lines {
    peer: Peer,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(role: &str, arg: &str, group: bool) -> Result<Lines, Failed> {
        let mut c = Command::new(std::env::current_exe()?);
        c.env("IPCKIT_SIGNAL_PEER", format!("{role}:{arg}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if group {
            use std::os::unix::process::CommandExt;
            c.process_group(0);
        }
        let mut child = c.spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut me = Lines {
            peer: Peer { child, _dir: None },
            lines,
        };
        let first = me.next()?;
        ensure(first == "ready", || format!("the peer said {first:?}"))?;
        Ok(me)
    }

    fn pid(&self) -> u32 {
        self.peer.child.id()
    }

    fn next(&mut self) -> Result<String, Failed> {
        self.lines
            .recv_timeout(T)
            .map_err(|_| "the peer printed nothing in time".into())
    }

    fn say(&mut self, line: &str) -> Result<(), Failed> {
        let stdin = self.peer.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "{line}")?;
        Ok(())
    }

    /// The rest of the output, once the peer exited successfully.
    fn finish(mut self) -> Result<Vec<String>, Failed> {
        ensure(self.peer.wait()?, || "the peer failed".into())?;
        Ok(self.lines.try_iter().collect())
    }
}

/// Realtime signals sent with sigqueue arrive once each, with their
/// values, in order, and name the sender's pid and uid.
fn realtime_values_in_order() -> Result<(), Failed> {
    let sig = rt(1);
    let n = 100;
    let mut p = Lines::spawn("recv", &format!("{n}:{sig}"), false)?;
    for v in 0..n {
        signal::queue(p.pid(), sig, v * 1000 - 7)?;
    }
    let me = std::process::id();
    for v in 0..n {
        let line = p.next()?;
        let want = format!("{sig} {me} {} {} queue", my_uid(), v * 1000 - 7);
        ensure(line == want, || format!("got {line:?}, want {want:?}"))?;
    }
    p.finish().map(drop)
}

/// While blocked, ten standard signals leave one pending; ten realtime
/// signals stay ten, in order.
fn standard_coalesce_realtime_queue() -> Result<(), Failed> {
    let (std_sig, rt_sig) = (Signal::USR1, rt(2));
    let mut p = Lines::spawn("coalesce", &format!("{std_sig},{rt_sig}"), false)?;
    for v in 0..10 {
        signal::kill(p.pid(), std_sig)?;
        signal::queue(p.pid(), rt_sig, v)?;
    }
    p.say("go")?;
    let pending = p.next()?;
    ensure(
        pending.contains("SIGUSR1") && pending.contains(&rt_sig.to_string()),
        || pending.clone(),
    )?;
    let lines = p.finish()?;
    let of = |s: Signal| {
        lines
            .iter()
            .filter(|l| l.split(' ').next() == Some(&s.to_string()))
            .cloned()
            .collect::<Vec<_>>()
    };
    ensure(of(std_sig).len() == 1, || format!("{std_sig}: {lines:?}"))?;
    let values: Vec<String> = of(rt_sig)
        .iter()
        .map(|l| l.split(' ').nth(3).unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..10).map(|v| v.to_string()).collect();
    ensure(values == want, || format!("{rt_sig} values {values:?}"))?;
    ensure(of(std_sig)[0].ends_with(" - user"), || {
        format!("kill should carry no value: {:?}", of(std_sig))
    })
}

/// kill_group reaches a process through its group.
fn process_group() -> Result<(), Failed> {
    let mut p = Lines::spawn("recv", "1:SIGUSR2", true)?;
    signal::kill_group(p.pid(), Signal::USR2)?;
    let line = p.next()?;
    let want = format!("SIGUSR2 {} {} - user", std::process::id(), my_uid());
    ensure(line == want, || format!("got {line:?}, want {want:?}"))?;
    p.finish().map(drop)
}

/// A process of another user may not be signalled; a process that does
/// not exist is reported as such.
fn denied_and_missing() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    // As `nobody` (when we are root), signal this root-owned process;
    // otherwise signal init, which belongs to root.
    let target = if my_uid() == 0 { std::process::id() } else { 1 };
    expect_denied(
        other_user_cmd(&dir)?
            .env("IPCKIT_SIGNAL_PEER", format!("denied:{target}"))
            .stdin(Stdio::null()),
    )?;
    let mut gone = Command::new("true").spawn()?;
    gone.wait()?;
    let e = signal::kill(gone.id(), Signal::TERM).unwrap_err();
    ensure(e.to_string().contains("no process"), || e.to_string())?;
    let e = signal::queue(i32::MAX as u32, rt(0), 1).unwrap_err();
    ensure(e.to_string().contains("no process"), || e.to_string())?;
    let e = signal::kill(0, Signal::TERM).unwrap_err();
    ensure(e.to_string().contains("not a process id"), || e.to_string())
}

/// Masks are per thread and restored by their guards; a raised signal
/// waits while blocked and is read from a receiver.
fn masks_restore_and_raise() -> Result<(), Failed> {
    let before = signal::blocked()?;
    let sig = rt(5);
    {
        let set: SignalSet = [sig].iter().collect();
        let _g = signal::block(&set)?;
        ensure(signal::blocked()?.contains(sig), || "not blocked".into())?;
        {
            let _u = signal::unblock(&set)?;
            ensure(!signal::blocked()?.contains(sig), || "not unblocked".into())?;
        }
        ensure(signal::blocked()?.contains(sig), || "inner guard".into())?;
        let rx = SignalReceiver::new(&[sig])?;
        signal::raise(sig)?;
        ensure(signal::pending()?.contains(sig), || "not pending".into())?;
        let got = rx.try_recv_info()?.ok_or("raise was not received")?;
        ensure(
            got.signal == sig && got.pid == std::process::id() && got.value.is_none(),
            || format!("{got:?}"),
        )?;
        ensure(!signal::pending()?.contains(sig), || "still pending".into())?;
    }
    // The receiver left it blocked; the outer guard restored the mask.
    let after = signal::blocked()?;
    ensure(after == before, || format!("{before:?} became {after:?}"))
}

/// Receivers time out; SIGKILL and SIGSTOP are refused.
fn timeouts_and_uncatchable() -> Result<(), Failed> {
    let sig = rt(6);
    let set: SignalSet = [sig].iter().collect();
    let _g = signal::block(&set)?;
    let rx = SignalReceiver::new(&[sig])?;
    let t0 = Instant::now();
    ensure(
        rx.recv_info_timeout(Duration::from_millis(150))?.is_none(),
        || "a signal from nowhere".into(),
    )?;
    ensure(t0.elapsed() >= Duration::from_millis(150), || {
        format!("gave up after {:?}", t0.elapsed())
    })?;
    ensure(rx.try_recv_info()?.is_none(), || {
        "try_recv found one".into()
    })?;
    for s in [Signal::KILL, Signal::STOP] {
        let e = SignalReceiver::new(&[Signal::USR1, s]).unwrap_err();
        ensure(e.to_string().contains("cannot be caught"), || e.to_string())?;
        let e = signal::block(&[s].iter().collect()).unwrap_err();
        ensure(e.to_string().contains("cannot be caught"), || e.to_string())?;
    }
    let e = SignalReceiver::new(&[]).unwrap_err();
    ensure(e.to_string().contains("at least one"), || e.to_string())?;
    ensure(matches!(Code::Other(1).name().as_str(), "1"), || {
        "code".into()
    })
}

/// A realtime signal as a tiny message: 4-byte values through the shared
/// traits, in order; longer messages refused, and empty ones too (they
/// would go with kill, which loses a realtime signal silently on a full
/// queue); a process that is gone is "disconnected".
fn messages_through_the_traits() -> Result<(), Failed> {
    let sig = rt(3);
    let mut p = Lines::spawn("messages", &format!("3:{sig}"), false)?;
    let mut tx = SignalSender::new(p.pid(), sig);
    for m in [&1i32.to_le_bytes()[..], &(-2i32).to_le_bytes()] {
        tx.send(m).map_err(|e| e.to_string())?;
    }
    let e = tx.try_send([1u8; 5]).unwrap_err().to_string();
    ensure(e.contains("exactly 4 bytes"), || e.clone())?;
    let e = tx.try_send([]).unwrap_err().to_string();
    ensure(e.contains("realtime signal"), || e.clone())?;
    tx.send_timeout(i32::MAX.to_le_bytes(), T)
        .map_err(|e| e.to_string())?;
    let want = [
        "[1, 0, 0, 0]",
        "[254, 255, 255, 255]",
        "[255, 255, 255, 127]",
    ];
    for w in want {
        let got = p.next()?;
        ensure(got == w, || format!("got {got}, want {w}"))?;
    }
    let pid = p.pid();
    p.finish()?;
    let mut gone = SignalSender::new(pid, sig);
    match gone.send_timeout([0u8; 4], T) {
        Err(SendTimeoutError::Disconnected(_)) => Ok(()),
        other => Err(format!("sending to an exited process: {other:?}").into()),
    }
}

/// A timer delivers its signal with its value, at an interval, to the
/// process that made it; stopping it stops the deliveries.
fn timer_delivers_values() -> Result<(), Failed> {
    let sig = rt(4);
    let mut p = Lines::spawn("timer", &sig.to_string(), false)?;
    let t0 = Instant::now();
    for _ in 0..3 {
        let line = p.next()?;
        ensure(
            line.starts_with(&format!("{sig} ")) && line.ends_with(" 99 timer"),
            || line.clone(),
        )?;
    }
    ensure(t0.elapsed() >= Duration::from_millis(40), || {
        format!("three 20 ms expiries in {:?}", t0.elapsed())
    })?;
    p.finish().map(drop)?;
    let e = signal::Timer::new(Signal::KILL, 0).unwrap_err();
    ensure(e.to_string().contains("cannot be caught"), || e.to_string())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[("IPCKIT_SIGNAL_PEER", peer_main)],
        "signal tests",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        ("realtime::values_arrive_in_order", realtime_values_in_order),
        (
            "coalescing::standard_coalesce_realtime_queue",
            standard_coalesce_realtime_queue,
        ),
        ("send::process_group", process_group),
        ("send::denied_and_missing", denied_and_missing),
        ("mask::restore_and_raise", masks_restore_and_raise),
        ("recv::timeouts_and_uncatchable", timeouts_and_uncatchable),
        (
            "traits::realtime_signal_as_a_message",
            messages_through_the_traits,
        ),
        (
            "timer::delivers_values_at_an_interval",
            timer_delivers_values,
        ),
    ]);
}
