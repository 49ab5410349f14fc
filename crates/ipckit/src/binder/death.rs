//! The death watcher: one thread per process, started by the first
//! `link_to_death`, waiting in `epoll` on the pidfd of every linked peer
//! (readable when the process exits, even by `kill -9`) and on a
//! connection of its session (hung up when the peer closes it). Either
//! ends the session, which runs the proxies' death callbacks.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::conn::Conn;
use super::session::Session;
use super::status::{Error, Result};
use crate::sys::epoll;

struct Watched {
    session: Weak<Session>,
    /// Our own duplicates of what is watched: the kernel drops a watch
    /// when the last descriptor of its file closes.
    _fds: Vec<OwnedFd>,
}

struct Watcher {
    ep: OwnedFd,
    watched: Mutex<(u64, HashMap<u64, Watched>)>,
}

static WATCHER: OnceLock<std::result::Result<Arc<Watcher>, String>> = OnceLock::new();

fn watcher() -> Result<Arc<Watcher>> {
    WATCHER
        .get_or_init(|| {
            let ep = epoll::create().map_err(|e| format!("epoll_create1: {e}"))?;
            let w = Arc::new(Watcher {
                ep,
                watched: Mutex::new((1, HashMap::new())),
            });
            let t = w.clone();
            std::thread::Builder::new()
                .name("ipckit-binder-death".into())
                .spawn(move || run(&t))
                .map_err(|e| format!("cannot start the death watcher thread: {e}"))?;
            Ok(w)
        })
        .clone()
        .map_err(|e| Error::new(super::Status::NoInit, e))
}

/// Watches `session`'s peer: its pidfd and `conn`'s hang-up.
pub(crate) fn watch(
    session: &Arc<Session>,
    pidfd: Option<BorrowedFd<'_>>,
    conn: Option<Arc<Conn>>,
) -> Result<()> {
    let w = watcher()?;
    let mut fds = Vec::new();
    let mut g = w.watched.lock().unwrap_or_else(|p| p.into_inner());
    let token = g.0;
    g.0 += 1;
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Error::io(e, "cannot watch the peer"))
    };
    if let Some(p) = pidfd {
        let d = dup(p)?;
        epoll::add_events(w.ep.as_fd(), d.as_fd(), libc::EPOLLIN, token)
            .map_err(|e| Error::io(e, "cannot watch the peer's pidfd"))?;
        fds.push(d);
    }
    if let Some(c) = conn {
        let d = dup(c.fd())?;
        epoll::add_events(
            w.ep.as_fd(),
            d.as_fd(),
            libc::EPOLLRDHUP | libc::EPOLLHUP,
            token,
        )
        .map_err(|e| Error::io(e, "cannot watch the connection"))?;
        fds.push(d);
    }
    g.1.insert(
        token,
        Watched {
            session: Arc::downgrade(session),
            _fds: fds,
        },
    );
    Ok(())
}

fn run(w: &Watcher) {
    let mut ready = Vec::new();
    loop {
        ready.clear();
        if epoll::wait(w.ep.as_fd(), &mut ready, 64, None).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        for token in ready.drain(..) {
            let gone = w
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .remove(&token);
            if let Some(s) = gone.and_then(|g| g.session.upgrade()) {
                s.shutdown();
            }
        }
    }
}
