//! `ipc binder service-manager`, `ipc binder ls`, `ipc binder call` and
//! `ipc ls` on binder, each command its own process; the service they
//! find and call is served by this test process (through `ipckit`).

use std::io::Write;
use std::process::{Child, Stdio};

use ipckit::binder::{Binder, Call, Object, Parcel, Result, ServiceManager};
use ipckit::socket::unix::UnixAddr;

mod common;
use common::*;

/// `ipc binder service-manager` at an address of its own; killed on drop.
struct SmCmd {
    child: Child,
    addr: String,
}

impl SmCmd {
    fn start() -> SmCmd {
        let addr = format!("@{}", unique("sm"));
        let child = ipc()
            .args(["binder", "service-manager", "--sm", &addr])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ipc binder service-manager");
        let a: UnixAddr = addr.parse().unwrap();
        wait_for(
            || ServiceManager::connect_to(&a).is_ok(),
            "the service manager",
        );
        SmCmd { child, addr }
    }

    fn client(&self) -> ServiceManager {
        ServiceManager::connect_to(&self.addr.parse().unwrap()).expect("connect")
    }
}

impl Drop for SmCmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Code 1: reads an i32, an i64, a String16, a String8 and a descriptor;
/// replies (AIDL) with the i32, the i64, the String16 and the file's
/// text as a String16.
struct Echo;

impl Binder for Echo {
    fn on_transact(&self, code: u32, d: &mut Parcel, r: &mut Parcel, _: &Call) -> Result<()> {
        assert_eq!(code, 1);
        d.enforce_interface("test.IEcho")?;
        let (a, b) = (d.read_i32()?, d.read_i64()?);
        let s16 = d.read_string16()?.unwrap_or_default();
        let s8 = d.read_string8()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(d.read_fd()?), &mut text)
            .map_err(|_| ipckit::binder::Status::BadValue)?;
        r.write_no_exception();
        r.write_i32(a);
        r.write_i64(b);
        r.write_string16(Some(&s16))?;
        r.write_string16(Some(&format!("{s8}+{text}")))
    }

    fn descriptor(&self) -> &str {
        "test.IEcho"
    }
}

#[test]
fn ls_and_call() {
    let sm = SmCmd::start();
    let echo = Object::new(Echo);
    sm.client().add_service("test.echo", &echo).unwrap();

    let out = run(ipc().args(["binder", "ls", "--sm", &sm.addr]));
    assert!(out.status.success(), "{}", stderr(&out));
    let me = std::process::id().to_string();
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"test.echo") && w.get(1) == Some(&me.as_str())
        }),
        "{text}"
    );

    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"file").unwrap();
    let fd_arg = format!("fd:{}", f.path().display());
    let out = run(ipc().args([
        "binder",
        "call",
        "--sm",
        &sm.addr,
        "test.echo",
        "1",
        "i32:7",
        "i64:-9",
        "s16:hi",
        "s:there",
        &fd_arg,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // EX_NONE, 7, -9 (two words), "hi" (length 2, 'h' 'i', 0 and padding).
    // Then the String8 and the file, sent as s: and fd:, read there.
    assert!(
        text.starts_with("Result: Parcel(0x00000000: 00000000 00000007 fffffff7 ffffffff")
            && text.contains("  0x00000010: 00000002 00690068 00000000 0000000a '....h.i.")
            && text.contains("00680074 00720065 002b0065 00690066 't.h.e.r.e.+.f.i.'"),
        "{text}"
    );

    // Without the interface token the service refuses the call.
    fails_with(
        ipc().args([
            "binder",
            "call",
            "--sm",
            &sm.addr,
            "--no-token",
            "test.echo",
            "1",
            "i32:1",
        ]),
        "test.echo: transaction 1 failed",
    );
    fails_with(
        ipc().args(["binder", "call", "--sm", &sm.addr, "nope", "1"]),
        "no service \"nope\" (see `ipc binder ls`)",
    );
    fails_with(
        ipc().args(["binder", "call", "--sm", &sm.addr, "test.echo", "1", "x:1"]),
        "unknown type \"x\"",
    );

    // ipc ls shows the service, served by this process.
    let out = run(ipc()
        .env("IPCKIT_SERVICE_MANAGER", &sm.addr)
        .args(["ls", "--kind", "binder", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v["objects"].as_array().unwrap().iter().any(|o| {
        o["name"] == "test.echo"
            && o["holders"][0]["pid"] == std::process::id()
            && o["holders"][0]["end"] == "serves"
    });
    assert!(found, "{v:#}");
    drop(echo);
}

#[test]
fn no_service_manager() {
    let addr = format!("@{}", unique("none"));
    fails_with(
        ipc().args(["binder", "ls", "--sm", &addr]),
        "start it with `ipc binder service-manager`",
    );
}
