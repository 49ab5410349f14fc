//! Mailboxes: asked of the broker (`ipc broker`) at the default socket or
//! `--broker PATH`. A broker that is not running has none, and says
//! nothing; one that cannot be asked is named in `unseen`.

use std::collections::BTreeMap;
use std::path::Path;

use ipckit::mailbox::{Client, ErrorKind};

use super::{owner, Object};

/// Adds every mailbox the broker at `socket` shows this user.
pub fn objects(socket: &Path, found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    let list = Client::connect_to(socket).and_then(|mut c| Ok((c.stat(None)?, c.me().pid)));
    let (list, me) = match list {
        Ok(found) => found,
        Err(e) if e.kind() == ErrorKind::NotRunning => return,
        Err(e) => {
            unseen.push(format!("mailboxes at {}: {e}", socket.display()));
            return;
        }
    };
    // Not the inbox this run has as a client of the broker.
    let mine = format!("pid.{me}");
    for m in list.into_iter().filter(|m| m.name != mine) {
        let c = &m.config;
        let mut note = format!(
            "{} consumer(s), {} in flight, {} dead letter(s); {}{}",
            m.consumers,
            m.in_flight,
            m.dead_letters,
            c.retention,
            if c.durable { ", durable" } else { "" }
        );
        if m.blocked_senders > 0 {
            note.push_str(&format!(
                "; {} sender(s) waiting for room",
                m.blocked_senders
            ));
        }
        note.push_str(&format!("; broker {}", socket.display()));
        let address = format!("mailbox:{}", m.name);
        found.insert(
            address.clone(),
            Object {
                kind: "mailbox",
                name: m.name.clone(),
                address: Some(address),
                mode: Some(format!("{:04o}", c.mode & 0o777)),
                owner: Some(owner(m.owner)),
                bytes: Some(m.bytes),
                messages: Some(m.depth),
                note: Some(note),
                ..Object::default()
            },
        );
    }
}
