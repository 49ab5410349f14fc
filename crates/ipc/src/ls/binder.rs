//! Binder: the services registered with the service manager at
//! `$IPCKIT_SERVICE_MANAGER` (else the default address), and the
//! connections of ipckit's binder sessions (Unix sockets of the service
//! manager and of processes' homes, `@ipckit-binder-…`, which
//! [`super::procs`] lists with kind `binder`). A service manager that is
//! not running has no services, and says nothing.

use std::collections::BTreeMap;

use ipckit::binder::ServiceManager;

use super::{owner, Holder, Object};

/// Where ipckit's binder sockets are bound: the default service manager
/// and every process's home (`ipckit::binder`'s forwarded references).
pub const SOCKET_PREFIX: &str = "@ipckit-binder";

/// Adds every service the service manager shows this user.
pub fn objects(found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    let sm = match ServiceManager::connect() {
        Ok(sm) => sm,
        Err(e) if e.status() == ipckit::binder::Status::PermissionDenied => {
            unseen.push(format!("binder services: {e}"));
            return;
        }
        // None running.
        Err(_) => return,
    };
    let services = match sm.services() {
        Ok(s) => s,
        Err(e) => {
            unseen.push(format!("binder services at {}: {e}", sm.addr()));
            return;
        }
    };
    for s in services {
        let command = std::fs::read_to_string(format!("/proc/{}/comm", s.pid))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        found.insert(
            format!("binder-service:{}", s.name),
            Object {
                kind: "binder",
                name: s.name.clone(),
                owner: Some(owner(s.uid)),
                holders: vec![Holder {
                    pid: s.pid,
                    command,
                    fd: None,
                    end: "serves",
                }],
                note: Some(format!(
                    "service at the service manager {} (pid {})",
                    sm.addr(),
                    sm.pid()
                )),
                ..Object::default()
            },
        );
    }
}
