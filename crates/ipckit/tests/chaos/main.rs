//! Chaos: every mechanism with two or more processes runs a checked
//! workload while one participant, chosen at random, is killed with
//! SIGKILL at a random moment; then no survivor may hang, nothing corrupt
//! or duplicated may have been delivered, nothing confirmed may be lost
//! and nothing may be left behind. What each family checks is in its
//! module: [`messages`] (pipe, FIFO, sockets, queues, rings), [`locks`]
//! (robust mutex and condition variable, semaphores of both families) and
//! [`services`] (mailbox broker, binder, property daemon).
//!
//! `IPCKIT_CHAOS_KILLS` sets the kills per mechanism (default 8; the long
//! form is 1000: `IPCKIT_CHAOS_KILLS=1000 cargo test -p ipckit --release
//! --test chaos`); `IPCKIT_CHAOS_SEED` replays a run. Each test prints its
//! counts.
//!
//! This test binary re-executed with `IPCKIT_CHAOS_PEER=<role>:<arg>`
//! plays a participant; every participant reports on stderr, one line per
//! event.

use std::fmt;
use std::time::Duration;

use libtest_mimic::Failed;

#[path = "../common/mod.rs"]
mod common;
mod locks;
mod messages;
mod services;

use common::{report, Part};

const VAR: &str = "IPCKIT_CHAOS_PEER";
/// How long the survivors of a kill may take to end.
const SURVIVE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- participants

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // xorshift64*: the state's low bits alone are poorly mixed (a run
        // drew the mailbox's consumer as victim 2 times in 40 of 4 choices).
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}

fn seed() -> u64 {
    std::env::var("IPCKIT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

fn kills() -> usize {
    std::env::var("IPCKIT_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// The named object a round's consumer makes at `addr`, if any (abandoned
/// sockets and ports go with their descriptors).
/// Runs `kills()` rounds of `round`, each killing one participant, and
/// prints the tally.
fn campaign<T: Default + fmt::Display>(
    name: &str,
    mut round: impl FnMut(&mut Rng, &mut T) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut tally = T::default();
    for i in 0..kills() {
        round(&mut rng, &mut tally).map_err(|e| {
            format!(
                "round {i} (IPCKIT_CHAOS_SEED={seed}): {}",
                e.message().unwrap_or("?")
            )
        })?;
    }
    println!("chaos {name}: {tally}");
    Ok(())
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec| {
            let (role, arg) = spec.split_once(':').expect("role:arg");
            messages::peer(role, arg)
                .or_else(|| locks::peer(role, arg))
                .or_else(|| services::peer(role, arg))
                .unwrap_or_else(|| panic!("unknown role {role}"))
        })],
        "chaos",
        Duration::from_secs(3600 * 4),
    );
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = messages::trials();
    trials.extend(locks::trials());
    trials.extend(services::trials());
    common::run_trials(&args, trials)
}
