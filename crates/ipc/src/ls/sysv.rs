//! System V queues, segments and semaphore sets from `/proc/sysvipc`
//! (`proc(5)`), with the processes attached to each segment.

use std::collections::{BTreeMap, HashMap};

use super::procs::{owner, Procs};
use super::Object;

/// The rows of a `/proc/sysvipc` table, each a map from column name
/// (`key`, `msqid`, `perms`, ...) to value.
fn table(name: &str) -> Option<Vec<HashMap<String, i64>>> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{name}")).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    Some(
        lines
            .map(|l| {
                header
                    .iter()
                    .zip(l.split_whitespace())
                    .filter_map(|(h, v)| {
                        // Permissions are printed in octal.
                        let radix = if *h == "perms" { 8 } else { 10 };
                        Some((h.to_string(), i64::from_str_radix(v, radix).ok()?))
                    })
                    .collect()
            })
            .collect(),
    )
}

pub fn objects(procs: &Procs, found: &mut BTreeMap<String, Object>, unseen: &mut Vec<String>) {
    for (file, kind, id_col) in [
        ("msg", "sysv-mq", "msqid"),
        ("shm", "sysv-shm", "shmid"),
        ("sem", "sysv-sem", "semid"),
    ] {
        let Some(rows) = table(file) else {
            unseen.push(format!("/proc/sysvipc/{file} cannot be read"));
            continue;
        };
        for r in rows {
            let get = |c: &str| r.get(c).copied();
            let (Some(key), Some(id)) = (get("key"), get(id_col)) else {
                continue;
            };
            // key_t is an int; shown as unsigned hex, as ipcs does.
            let key = key as i32 as u32;
            let (name, address) = if key == 0 {
                (format!("id {id} (private)"), format!("{kind}:id={id}"))
            } else {
                (
                    format!("{key:#010x} (id {id})"),
                    format!("{kind}:{key:#010x}"),
                )
            };
            // A segment's holders were found in the processes' mappings.
            let mut o = match kind {
                "sysv-shm" => found.remove(&format!("sysv-shm:{id}")).unwrap_or_default(),
                _ => Object::default(),
            };
            o.kind = kind;
            o.name = name;
            o.address = Some(address);
            o.mode = get("perms").map(|p| format!("{:04o}", p & 0o777));
            o.owner = get("uid").map(|u| owner(u as u32));
            match file {
                "msg" => {
                    o.bytes = get("cbytes").map(|b| b as u64);
                    o.messages = get("qnum").map(|n| n as u64);
                }
                "shm" => {
                    o.bytes = get("size").map(|b| b as u64);
                    // Nobody attached and the creator gone (proc(5)'s
                    // nattch and cpid): nothing will ever remove it.
                    let nattch = get("nattch").unwrap_or(1);
                    let cpid = get("cpid").unwrap_or(0) as i32;
                    o.orphan = nattch == 0 && !procs.alive(cpid);
                    if o.holders.is_empty() && nattch > 0 {
                        o.note = Some(format!("{nattch} attached"));
                    }
                }
                _ => {
                    o.note = get("nsems").map(|n| format!("{n} semaphores"));
                }
            }
            found.insert(format!("{kind}:{id}"), o);
        }
    }
    // Segments processes map that /proc/sysvipc did not list (removed
    // between the two reads, or the table unreadable): still named.
    for (key, o) in found.iter_mut() {
        if let (Some(id), "") = (key.strip_prefix("sysv-shm:"), o.kind) {
            o.kind = "sysv-shm";
            o.name = format!("id {id}");
            o.address = Some(format!("sysv-shm:id={id}"));
        }
    }
}
