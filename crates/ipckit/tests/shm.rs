//! Shared memory between real processes: this test binary re-executed with
//! `IPCKIT_SHM_PEER=<role>:<argument>` plays the other process.

use std::io;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipckit::shm::{MappedFile, Memfd, Seals, Shm, SysvShm};
use ipckit::socket::unix::{UnixListener, UnixStream};
use ipckit::sysv::Key;
use libtest_mimic::Failed;

mod common;
use common::{ensure, unique, unique_key, Peer, T};

const NUMBERS: [i32; 10] = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55];

fn peer(role: &str, arg: &str) -> io::Result<Command> {
    common::peer_command("IPCKIT_SHM_PEER", role, arg)
}

fn spawn(role: &str, arg: &str) -> Result<Peer, Failed> {
    Ok(Peer {
        child: peer(role, arg)?.spawn()?,
        _dir: None,
    })
}

fn denied(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::PermissionDenied && e.to_string().contains("read-only") {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "expected a read-only refusal, got {e}"
        )))
    }
}

fn peer_main(spec: &str) -> io::Result<()> {
    let (role, arg) = spec.split_once(':').expect("role:arg");
    match role {
        // Check what the parent wrote, answer at offset 100, count at 64.
        "posix" => {
            let shm = Shm::builder(arg).open()?;
            let mut head = [0u8; 5];
            shm.read(0, &mut head)?;
            let numbers = shm.view::<[i32; 10]>(16)?.load()?;
            if &head != b"hello" || numbers != NUMBERS {
                return Err(io::Error::other(format!("{head:?} {numbers:?}")));
            }
            shm.write(100, b"hello back")?;
            shm.atomic_u64(64)?.fetch_add(1, Ordering::Release);
            Ok(())
        }
        // Read-only: reads work, every kind of write is refused.
        "posix-ro" => {
            let shm = Shm::builder(arg).read_only(true).open()?;
            if shm.is_writable() || shm.view::<[i32; 10]>(16)?.load()? != NUMBERS {
                return Err(io::Error::other("read-only view wrong"));
            }
            denied(shm.write(0, b"x").unwrap_err())?;
            denied(shm.view::<u32>(0)?.store(&1).unwrap_err())?;
            denied(shm.atomic_u32(0).map(drop).unwrap_err())
        }
        // Receive a sealed memfd over a Unix socket and check it.
        "memfd" => {
            let mut s = UnixStream::connect(&arg.parse()?)?;
            let mut buf = Vec::new();
            let mut fds = s.recv_with_fds(&mut buf)?;
            let fd = fds.pop().ok_or_else(|| io::Error::other("no descriptor"))?;
            let m = Memfd::from_fd(fd, false)?;
            let seals = m.seals()?;
            if !seals.contains(Seals::SHRINK | Seals::GROW | Seals::FUTURE_WRITE) {
                return Err(io::Error::other(format!("seals {seals:?}")));
            }
            if m.is_writable() || m.len() != 8192 {
                return Err(io::Error::other("expected a read-only 8192-byte mapping"));
            }
            let big = m.array::<u64>(0, 1024)?;
            if (0..1024).any(|i| big.get(i).ok() != Some(i as u64 * 3)) {
                return Err(io::Error::other("memfd contents differ"));
            }
            denied(m.write(0, b"x").unwrap_err())?;
            // The writer keeps its mapping: it sees the sealed data too.
            ipckit::MessageSenderExt::send(&mut s, buf).map_err(io::Error::from)?;
            Ok(())
        }
        // Write into a mapped file and flush it.
        "file" => {
            let f = MappedFile::open(arg)?;
            f.write(0, b"written by the peer")?;
            f.flush_range(0, 19)?;
            f.flush_async()?;
            f.flush()
        }
        // Attach by key, check, answer, report the attach count.
        "sysv" => {
            let key: Key = arg.parse()?;
            let shm = SysvShm::builder(key).size(4096).open()?;
            let numbers = shm.view::<[i32; 10]>(16)?.load()?;
            if numbers != NUMBERS {
                return Err(io::Error::other(format!("{numbers:?}")));
            }
            shm.write(100, b"sysv back")?;
            let st = shm.status()?;
            if st.attached != 2 || st.creator_pid == Some(std::process::id()) {
                return Err(io::Error::other(format!("{st:?}")));
            }
            Ok(())
        }
        // Attach by id, say so (flag 1), wait for flag 2 (set after the
        // segment was marked for removal), read the value left then.
        "sysv-removed" => {
            let shm = SysvShm::open_id(arg.parse().map_err(io::Error::other)?, false)?;
            let flag = shm.atomic_u32(0)?;
            flag.store(1, Ordering::Release);
            let end = std::time::Instant::now() + T;
            while flag.load(Ordering::Acquire) != 2 {
                if std::time::Instant::now() > end {
                    return Err(io::Error::other("no flag 2"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            match shm.view::<u64>(8)?.load()? {
                42 => Ok(()),
                v => Err(io::Error::other(format!("value {v}"))),
            }
        }
        other => Err(io::Error::other(format!("unknown role {other}"))),
    }
}

/// Bytes, a typed array and an atomic cross between two processes.
fn posix_across_processes() -> Result<(), Failed> {
    let name = format!("/{}", unique("shm"));
    let shm = Shm::builder(&name).size(4096).create()?;
    shm.write(0, b"hello")?;
    shm.view::<[i32; 10]>(16)?.store(&NUMBERS)?;
    let mut p = spawn("posix", &name)?;
    ensure(p.wait()?, || "peer failed".into())?;
    ensure(shm.atomic_u64(64)?.load(Ordering::Acquire) == 1, || {
        "peer's count missing".into()
    })?;
    let mut back = [0u8; 10];
    shm.read(100, &mut back)?;
    ensure(&back == b"hello back", || format!("{back:?}"))?;
    let mut ro = spawn("posix-ro", &name)?;
    ensure(ro.wait()?, || "read-only peer failed".into())
}

/// Names, sizes and the create/open/remove rules.
fn posix_names_and_sizes() -> Result<(), Failed> {
    for (bad, why) in [
        ("frames", "must start with a slash"),
        ("/", "empty after the slash"),
        ("/a/b", "second slash"),
    ] {
        let e = Shm::builder(bad).size(10).create().unwrap_err();
        ensure(
            e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains(why),
            || e.to_string(),
        )?;
    }
    let name = format!("/{}", unique("rules"));
    for b in [Shm::builder(&name), Shm::builder(&name).size(0)] {
        let e = b.create().unwrap_err();
        ensure(e.to_string().contains("needs a size"), || e.to_string())?;
    }
    let e = Shm::builder(&name).open().unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("no POSIX shared memory"),
        || e.to_string(),
    )?;
    let first = Shm::builder(&name).size(100).create()?;
    ensure(first.len() == 100, || format!("len {}", first.len()))?;
    let e = Shm::builder(&name).size(100).create().unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    let e = Shm::builder(&name).size(200).open().unwrap_err();
    ensure(e.to_string().contains("smaller than the 200"), || {
        e.to_string()
    })?;
    drop(Shm::builder(&name).size(100).create_or_open()?);
    ensure(Shm::builder(&name).open().is_ok(), || {
        "an opener unlinked it".into()
    })?;
    let mode = std::fs::metadata(format!("/dev/shm{name}"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)?;
    ensure(mode == 0o600, || format!("mode {mode:o}"))?;
    drop(first);
    ensure(Shm::builder(&name).open().is_err(), || {
        "the creator left it".into()
    })?;
    let mut kept = Shm::builder(&name).size(10).keep(true).create()?;
    drop(Shm::builder(&name).open()?);
    kept.unlink()?;
    let e = ipckit::shm::unlink(&name).unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())
}

/// Views that do not fit or are misaligned are refused, saying why.
fn views_refused() -> Result<(), Failed> {
    let m = Memfd::create("views", 4096)?;
    let cases: [(io::Result<()>, &str); 6] = [
        (m.view::<u64>(4).map(drop), "misaligned"),
        (m.view::<[u8; 5000]>(0).map(drop), "too small"),
        (m.array::<u32>(4092, 2).map(drop), "too small"),
        (m.array::<u64>(0, usize::MAX).map(drop), "overflows"),
        (m.atomic_u32(2).map(drop), "misaligned"),
        (m.write(4090, b"1234567"), "do not fit"),
    ];
    for (r, why) in cases {
        let e = r.err().ok_or("accepted")?;
        ensure(
            e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains(why),
            || format!("{why}: {e}"),
        )?;
    }
    let a = m.array::<u32>(8, 4)?;
    a.set(3, 7)?;
    ensure(a.get(3)? == 7 && a.get(4).is_err(), || "get".into())?;
    ensure(a.set(4, 1).is_err(), || "set past the end".into())?;
    ensure(a.to_vec()? == [0, 0, 0, 7], || format!("{:?}", a.to_vec()))?;
    let e = Memfd::create("empty", 0).unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())
}

/// A memfd passed over a Unix socket, sealed so that the receiver can
/// trust its size and contents.
fn memfd_over_socket() -> Result<(), Failed> {
    let m = Memfd::create("sealed", 8192)?;
    let a = m.array::<u64>(0, 1024)?;
    for i in 0..1024 {
        a.set(i, i as u64 * 3)?;
    }
    m.add_seals(Seals::SHRINK | Seals::GROW | Seals::FUTURE_WRITE)?;
    let e = m.add_seals(Seals::WRITE).unwrap_err();
    ensure(e.to_string().contains("writable mapping"), || e.to_string())?;
    let addr = format!("@{}", unique("memfd"));
    let l = UnixListener::bind(&addr.parse()?)?;
    let mut p = spawn("memfd", &addr)?;
    let mut s = l.accept_timeout(T)?;
    s.send_with_fds(b"take this", &[m.fd()])?;
    let echo = ipckit::MessageReceiver::recv_timeout(&mut s, T)?;
    ensure(echo == b"take this", || format!("{echo:?}"))?;
    ensure(p.wait()?, || "peer failed".into())?;
    // The existing writable mapping still works after FUTURE_WRITE.
    m.write(0, b"still mine")?;
    Ok(())
}

/// A regular file mapped by two processes; the peer's flushed write is in
/// the file.
fn mapped_file() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("data");
    let f = MappedFile::create(&path, 4096)?;
    let e = MappedFile::create(&path, 4096).unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    let mut p = spawn("file", path.to_str().ok_or("path")?)?;
    ensure(p.wait()?, || "peer failed".into())?;
    let mut got = [0u8; 19];
    f.read(0, &mut got)?;
    ensure(&got == b"written by the peer", || format!("{got:?}"))?;
    let on_disk = std::fs::read(&path)?;
    ensure(
        on_disk.len() == 4096 && on_disk.starts_with(b"written by the peer"),
        || "file contents differ".into(),
    )?;
    let ro = MappedFile::open_read_only(&path)?;
    ensure(!ro.is_writable() && ro.write(0, b"x").is_err(), || {
        "read-only mapping wrote".into()
    })?;
    ensure(f.flush_range(4000, 200).is_err(), || {
        "flush past the end".into()
    })?;
    std::fs::write(dir.path().join("empty"), b"")?;
    let e = MappedFile::open(dir.path().join("empty")).unwrap_err();
    ensure(e.to_string().contains("is empty"), || e.to_string())?;
    let e = MappedFile::open(dir.path()).unwrap_err();
    ensure(
        e.to_string().contains("not a regular file") || e.kind() == io::ErrorKind::IsADirectory,
        || e.to_string(),
    )
}

/// A System V segment shared by key; status counts and pids.
fn sysv_across_processes() -> Result<(), Failed> {
    let key = unique_key();
    let shm = SysvShm::builder(key).size(4096).create()?;
    shm.view::<[i32; 10]>(16)?.store(&NUMBERS)?;
    let mut p = spawn("sysv", &key.value().to_string())?;
    let child = p.child.id();
    ensure(p.wait()?, || "peer failed".into())?;
    let mut back = [0u8; 9];
    shm.read(100, &mut back)?;
    ensure(&back == b"sysv back", || format!("{back:?}"))?;
    let st = shm.status()?;
    ensure(
        st.perm.key == key
            && st.size == 4096
            && st.attached == 1
            && st.creator_pid == Some(std::process::id())
            && st.last_pid == Some(child)
            && st.perm.mode == 0o600
            && !st.removal_pending
            && st.last_detach.is_some(),
        || format!("{st:?}"),
    )?;
    let ro = SysvShm::builder(key).read_only(true).open()?;
    ensure(!ro.is_writable() && ro.write(0, b"x").is_err(), || {
        "read-only attach wrote".into()
    })?;
    Ok(())
}

/// Removal marks a segment that is still attached elsewhere: the key goes
/// at once, the memory stays usable until the last detach.
fn sysv_removal_while_attached() -> Result<(), Failed> {
    let key = unique_key();
    let mut shm = SysvShm::builder(key).size(64).create()?;
    let id = shm.id();
    let mut p = spawn("sysv-removed", &id.to_string())?;
    let flag = shm.atomic_u32(0)?;
    let end = std::time::Instant::now() + T;
    while flag.load(Ordering::Acquire) != 1 {
        ensure(std::time::Instant::now() < end, || {
            "peer never attached".into()
        })?;
        std::thread::sleep(Duration::from_millis(1));
    }
    shm.remove()?;
    let st = shm.status()?;
    ensure(st.removal_pending && st.attached == 2, || format!("{st:?}"))?;
    let e = SysvShm::builder(key).open().unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())?;
    shm.view::<u64>(8)?.store(&42)?;
    shm.atomic_u32(0)?.store(2, Ordering::Release);
    ensure(p.wait()?, || "peer failed".into())?;
    drop(shm);
    ensure(SysvShm::open_id(id, true).is_err(), || {
        "segment outlived its last detach".into()
    })
}

/// Bad sizes, modes and keys give clear errors; only the creator removes.
fn sysv_errors_and_rules() -> Result<(), Failed> {
    let key = unique_key();
    let e = SysvShm::builder(key).create().unwrap_err();
    ensure(e.to_string().contains("needs a size"), || e.to_string())?;
    let e = SysvShm::builder(key)
        .size(8)
        .mode(0o7777)
        .create()
        .unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())?;
    let e = SysvShm::builder(key).open().unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("no System V shared memory"),
        || e.to_string(),
    )?;
    let e = SysvShm::private().open().unwrap_err();
    ensure(e.to_string().contains("open_id"), || e.to_string())?;
    let e = ipckit::shm::remove_sysv(key).unwrap_err();
    ensure(e.kind() == io::ErrorKind::NotFound, || e.to_string())?;
    let first = SysvShm::builder(key).size(100).create()?;
    let e = SysvShm::builder(key).size(100).create().unwrap_err();
    ensure(e.kind() == io::ErrorKind::AlreadyExists, || e.to_string())?;
    let e = SysvShm::builder(key).size(1 << 20).open().unwrap_err();
    ensure(e.to_string().contains("smaller than"), || e.to_string())?;
    drop(SysvShm::builder(key).size(100).create_or_open()?);
    ensure(SysvShm::builder(key).open().is_ok(), || {
        "an opener removed it".into()
    })?;
    drop(first);
    ensure(SysvShm::builder(key).open().is_err(), || {
        "the creator left it".into()
    })?;
    drop(SysvShm::builder(key).size(10).keep(true).create()?);
    ipckit::shm::remove_sysv(key)?;
    ensure(SysvShm::builder(key).open().is_err(), || {
        "not removed".into()
    })
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[("IPCKIT_SHM_PEER", peer_main)],
        "shm tests",
        Duration::from_secs(120),
    );
    common::run_cases(vec![
        (
            "posix::drop_removes_only_the_object_it_created",
            drop_removes_only_its_own,
        ),
        ("posix::data_across_processes", posix_across_processes),
        ("posix::names_sizes_and_removal", posix_names_and_sizes),
        ("views::refuse_what_does_not_fit", views_refused),
        ("memfd::sealed_and_passed_over_a_socket", memfd_over_socket),
        ("file::mapped_by_two_processes_and_flushed", mapped_file),
        (
            "sysv::data_and_status_across_processes",
            sysv_across_processes,
        ),
        ("sysv::removal_while_attached", sysv_removal_while_attached),
        ("sysv::errors_and_rules", sysv_errors_and_rules),
    ]);
}

/// The creator's drop removes /dev/shm/NAME only while it is the object
/// it created: one made anew under the same name (by anyone) stays.
fn drop_removes_only_its_own() -> Result<(), Failed> {
    let name = format!("/{}", unique("replaced"));
    let shm = Shm::builder(&name).size(4096).create()?;
    ipckit::shm::unlink(&name)?;
    let other = Shm::builder(&name).size(4096).keep(true).create()?;
    drop(shm);
    let still = Shm::builder(&name).open().is_ok();
    drop(other);
    ipckit::shm::unlink(&name)?;
    ensure(still, || {
        "the first creator removed the second object".into()
    })
}
