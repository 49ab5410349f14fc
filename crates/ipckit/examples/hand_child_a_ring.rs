//! A parent hands a child process a ring and a memfd (beyond stdin and
//! stdout), by name; the child reads the data the parent left in the memfd
//! and sends it back over the ring, in upper case.
//!
//! ```sh
//! cargo run -p ipckit --example hand_child_a_ring
//! ```

use std::io;
use std::process::Command;

use ipckit::prelude::*;
use ipckit::process::{inherited_fd, pass_fds};
use ipckit::ring::Ring;
use ipckit::shm::Memfd;

fn main() -> io::Result<()> {
    if std::env::var_os("HAND_CHILD_A_RING_CHILD").is_some() {
        return child();
    }
    // The data, in anonymous memory sealed against shrinking.
    let text = b"hello from the parent";
    let data = Memfd::create("greeting", 4096)?;
    data.write(0, &(text.len() as u32).to_le_bytes())?;
    data.write(4, text)?;
    // The way back: a ring in anonymous memory.
    let ring = Ring::anonymous().capacity(8).create()?;
    let mut replies = ring.receiver()?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("HAND_CHILD_A_RING_CHILD", "1");
    pass_fds(
        &mut cmd,
        [
            ("data", data.fd().try_clone_to_owned()?, 3),
            ("replies", ring.fd().try_clone_to_owned()?, 4),
        ],
    )?;
    let mut child = cmd.spawn()?;
    let reply = replies.recv_timeout(std::time::Duration::from_secs(10))?;
    println!("the child answered: {}", String::from_utf8_lossy(&reply));
    child.wait()?;
    Ok(())
}

fn child() -> io::Result<()> {
    let data = Memfd::from_fd(inherited_fd("data")?, true)?;
    let mut len = [0u8; 4];
    data.read(0, &mut len)?;
    let mut text = vec![0u8; u32::from_le_bytes(len).min(4092) as usize];
    data.read(4, &mut text)?;
    let mut tx = Ring::from_fd(inherited_fd("replies")?)?.sender()?;
    tx.send(text.to_ascii_uppercase())?;
    Ok(())
}
