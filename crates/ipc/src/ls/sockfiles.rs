//! Stale socket files: socket files in the places where servers put them
//! (`/tmp`, `/var/tmp`, `/run`, `$XDG_RUNTIME_DIR`) that no socket is bound
//! to any more, left by a server that exited without removing its file.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::Object;

/// How deep below each directory to look.
const DEPTH: usize = 3;
/// How many directory entries to look at in all, so that a huge /tmp
/// cannot make `ipc ls` slow.
const BUDGET: usize = 50_000;

/// Adds each stale socket file as an orphan `unix` object.
pub fn objects(found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    // Paths that live sockets are bound to (in this network namespace):
    // those are not asked.
    let bound: HashSet<PathBuf> = procfs::net::unix()
        .map(|v| v.into_iter().filter_map(|e| e.path).collect())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = ["/tmp", "/var/tmp", "/run"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let x = PathBuf::from(x);
        if !dirs.iter().any(|d| x.starts_with(d)) {
            dirs.push(x);
        }
    }
    let mut walk = Walk {
        budget: BUDGET,
        unreadable: 0,
        files: Vec::new(),
    };
    for d in &dirs {
        walk.dir(d, DEPTH);
    }
    if walk.budget == 0 {
        unseen.push(format!(
            "socket files: stopped after {BUDGET} directory entries under {}: stale socket \
             files further on are not listed",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if walk.unreadable > 0 {
        unseen.push(format!(
            "socket files: {} directories could not be read (other users'): stale socket files \
             in them are not listed",
            walk.unreadable
        ));
    }
    let mut unasked = 0;
    for path in walk.files {
        if bound.contains(&path) {
            continue;
        }
        // Asked with a connection attempt that cannot block: refused means
        // nothing is bound to the file. Connecting needs write permission
        // on it: another user's file may not be askable.
        match ipckit::socket::unix::is_stale(&path) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    unasked += 1;
                }
                continue;
            }
        }
        let meta = std::fs::symlink_metadata(&path).ok();
        let name = path.display().to_string();
        let mut o = super::procs::described("unix", name.clone(), meta.as_ref());
        o.address = Some(format!("unix:{name}"));
        o.orphan = true;
        o.note = Some("stale socket file: no socket is bound to it".into());
        found.insert(format!("sockfile:{name}"), o);
    }
    if unasked > 0 {
        unseen.push(format!(
            "socket files: {unasked} that no socket here is bound to could not be asked whether \
             they are stale (no write permission on them): not listed"
        ));
    }
}

struct Walk {
    budget: usize,
    unreadable: usize,
    files: Vec<PathBuf>,
}

impl Walk {
    /// Collects the socket files under `dir`, `depth` levels down, never
    /// following a symbolic link.
    fn dir(&mut self, dir: &Path, depth: usize) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    self.unreadable += 1;
                }
                return;
            }
        };
        for e in entries.flatten() {
            if self.budget == 0 {
                return;
            }
            self.budget -= 1;
            // The entry's own type (lstat): a link is neither.
            let Ok(t) = e.file_type() else { continue };
            if t.is_socket() {
                self.files.push(e.path());
            } else if t.is_dir() && depth > 1 {
                self.dir(&e.path(), depth - 1);
            }
        }
    }
}
