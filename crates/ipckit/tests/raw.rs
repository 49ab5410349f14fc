//! Raw sockets: an ICMP echo to 127.0.0.1 and its reply, checksums
//! computed and verified; a UDP datagram sent by another process, seen as
//! a raw IPv4 packet and as a loopback frame, headers parsed; a frame
//! built here (IPv6) and sent on `lo`, received by another process's
//! ordinary UDP socket; and the refusal without `CAP_NET_RAW`, as user `nobody`.
//!
//! Raw sockets need `CAP_NET_RAW`: run unprivileged, the cases that need
//! it check the refusal's words instead (and say so).
//!
//! This test binary re-executed with `IPCKIT_RAW_PEER=ROLE:ARG` is a peer:
//! `send:PORT|TEXT` sends TEXT in a UDP datagram to 127.0.0.1:PORT and
//! prints its own port; `recv:TEXT` binds a UDP socket, prints its port,
//! and prints what the first datagram said; `open:` prints what opening a
//! raw and a packet socket says.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use ipckit::socket::raw::{FrameKind, PacketSocket, RawSocket, ETH_P_IP, ETH_P_IPV6, MAX_PACKET};
use libtest_mimic::Failed;

mod common;
use common::{ensure, peer_command, unique, T};

const VAR: &str = "IPCKIT_RAW_PEER";
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `send:PORT|TEXT`.
fn send_role(arg: &str) -> io::Result<()> {
    let (port, text) = arg.split_once('|').ok_or(io::ErrorKind::InvalidInput)?;
    let port: u16 = port.parse().map_err(|_| io::ErrorKind::InvalidInput)?;
    let s = UdpSocket::bind((LOCALHOST, 0))?;
    println!("{}", s.local_addr()?.port());
    io::stdout().flush()?;
    s.send_to(text.as_bytes(), (LOCALHOST, port))?;
    Ok(())
}

/// `recv:`.
fn recv_role(_: &str) -> io::Result<()> {
    let s = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))?;
    s.set_read_timeout(Some(T))?;
    println!("{}", s.local_addr()?.port());
    io::stdout().flush()?;
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf)?;
    println!("{from} {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

/// `open:`.
fn open_role(_: &str) -> io::Result<()> {
    match RawSocket::ipv4(1) {
        Ok(_) => println!("raw: opened"),
        Err(e) => println!("raw: {:?} {e}", e.kind()),
    }
    match PacketSocket::bind("lo", ETH_P_IP) {
        Ok(_) => println!("packet: opened"),
        Err(e) => println!("packet: {:?} {e}", e.kind()),
    }
    Ok(())
}

type TestResult = Result<(), Failed>;

/// Whether this process may open raw sockets; if not, that the refusal
/// says what is needed.
fn privileged() -> Result<bool, Failed> {
    match RawSocket::ipv4(1) {
        Ok(_) => Ok(true),
        Err(e) => {
            ensure(
                e.kind() == io::ErrorKind::PermissionDenied
                    && e.to_string().contains("CAP_NET_RAW"),
                || format!("opening a raw socket said: {e}"),
            )?;
            eprintln!("not privileged: checked the refusal ({e}) instead");
            Ok(false)
        }
    }
}

fn icmp_echo_on_loopback() -> TestResult {
    if !privileged()? {
        return Ok(());
    }
    let sock = RawSocket::ipv4(1)?;
    let id = std::process::id() as u16;
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as u16;
    let payload = format!("ipckit raw ping {}", unique("icmp")).into_bytes();
    let echo = IcmpEchoHeader { id, seq };
    let request = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &payload);
    let mut packet = request.to_bytes().to_vec();
    packet.extend_from_slice(&payload);
    let sent = Instant::now();
    sock.send_to(&packet, IpAddr::V4(LOCALHOST))?;
    // A raw ICMP socket sees every ICMP message, the request going out
    // on `lo` included: wait for the reply to ours.
    let mut buf = vec![0u8; MAX_PACKET];
    let end = Instant::now() + T;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let (n, from) = sock.recv_from_timeout(&mut buf, left)?;
        let p = SlicedPacket::from_ip(&buf[..n]).map_err(|e| format!("not an IP packet: {e}"))?;
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            continue;
        };
        let Icmpv4Type::EchoReply(h) = icmp.icmp_type() else {
            continue;
        };
        if h != echo {
            continue;
        }
        let rtt = sent.elapsed();
        ensure(from == IpAddr::V4(LOCALHOST), || {
            format!("a reply from {from}")
        })?;
        ensure(icmp.payload() == payload, || {
            "the reply's payload differs".into()
        })?;
        let want = Icmpv4Header::with_checksum(Icmpv4Type::EchoReply(echo), icmp.payload());
        ensure(icmp.checksum() == want.checksum, || {
            format!(
                "checksum {:#06x}, computed {:#06x}",
                icmp.checksum(),
                want.checksum
            )
        })?;
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            return Err("no IPv4 header".into());
        };
        ensure(ip.header().destination_addr() == LOCALHOST, || {
            "the reply is for another address".into()
        })?;
        eprintln!("echo reply from {from} after {rtt:?}, {n} bytes with the IPv4 header");
        return Ok(());
    }
}

/// Checks a UDP datagram's IPv4 and UDP headers and payload.
fn check_udp(ip_packet: &[u8], from_port: u16, to_port: u16, text: &str) -> Result<bool, Failed> {
    let p = SlicedPacket::from_ip(ip_packet).map_err(|e| format!("not an IP packet: {e}"))?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (p.net, p.transport) else {
        return Ok(false);
    };
    if udp.destination_port() != to_port || udp.payload() != text.as_bytes() {
        return Ok(false);
    }
    ensure(udp.source_port() == from_port, || {
        format!("source port {} for {from_port}", udp.source_port())
    })?;
    let h = ip.header();
    ensure(
        h.source_addr() == LOCALHOST && h.destination_addr() == LOCALHOST,
        || "not 127.0.0.1 to 127.0.0.1".into(),
    )?;
    // The IPv4 header's checksum is complete. (The UDP checksum of a
    // datagram on `lo` is not: the kernel leaves it for the device to
    // finish, CHECKSUM_PARTIAL, and `lo` never does; it holds the
    // pseudo-header's sum only.)
    let header = h.to_header();
    let sum = header.calc_header_checksum();
    ensure(header.header_checksum == sum, || {
        format!(
            "IPv4 header checksum {:#06x}, computed {sum:#06x}",
            header.header_checksum
        )
    })?;
    Ok(true)
}

fn udp_datagram_from_another_process() -> TestResult {
    if !privileged()? {
        return Ok(());
    }
    let raw = RawSocket::ipv4(17)?;
    let frames = PacketSocket::bind("lo", ETH_P_IP)?;
    let receiver = UdpSocket::bind((LOCALHOST, 0))?;
    receiver.set_read_timeout(Some(T))?;
    let to_port = receiver.local_addr()?.port();
    let text = format!("to the raw socket {}", unique("udp"));
    let mut peer = peer_command(VAR, "send", &format!("{to_port}|{text}"))?
        .stdout(Stdio::piped())
        .spawn()?;
    let out = common::rest_of_output(&mut peer);
    let status = peer.wait()?;
    let from_port: u16 = out?.trim().parse()?;
    ensure(status.success(), || format!("the sender: {status}"))?;

    // As a raw IPv4 packet: IPv4 header, UDP header, the text.
    let mut buf = vec![0u8; MAX_PACKET];
    let end = Instant::now() + T;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let (n, _) = raw.recv_from_timeout(&mut buf, left)?;
        if check_udp(&buf[..n], from_port, to_port, &text)? {
            break;
        }
    }
    // As a frame on lo: an Ethernet header of zero addresses first.
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let (n, info) = frames.recv_timeout(&mut buf, left)?;
        let p = SlicedPacket::from_ethernet(&buf[..n]).map_err(|e| format!("{e}"))?;
        let Some(ether) = p.link.and_then(|l| l.to_header()) else {
            continue;
        };
        // The IPv4 packet follows the 14-byte Ethernet header.
        if check_udp(&buf[14..n], from_port, to_port, &text)? {
            ensure(info.ethertype == ETH_P_IP, || format!("{info:?}"))?;
            ensure(info.interface_index == frames.interface_index(), || {
                format!("{info:?}")
            })?;
            ensure(
                matches!(ether, etherparse::LinkHeader::Ethernet2(ref e) if e.destination == [0; 6]),
                || format!("{ether:?}"),
            )?;
            seen.push(info.kind);
            // On lo each frame passes twice: going out, coming in.
            if seen.contains(&FrameKind::Host) {
                break;
            }
        }
    }
    // And the ordinary socket it was for got it too.
    let mut b = [0u8; 2048];
    let (n, from) = receiver.recv_from(&mut b)?;
    ensure(
        &b[..n] == text.as_bytes() && from.port() == from_port,
        || format!("the UDP socket got {:?} from {from}", &b[..n]),
    )?;
    eprintln!("frames seen on lo: {seen:?}");
    Ok(())
}

/// IPv6: an IPv4 frame from 127.0.0.1 that arrives on `lo` without the
/// route its own traffic carries is a martian to the kernel's input
/// routing (unless `route_localnet` is set) and is dropped; IPv6 takes
/// `::1` on the loopback device.
fn frame_sent_on_loopback() -> TestResult {
    if !privileged()? {
        return Ok(());
    }
    let frames = PacketSocket::bind("lo", ETH_P_IPV6)?;
    let mut peer = common::Peer {
        child: peer_command(VAR, "recv", "")?
            .stdout(Stdio::piped())
            .spawn()?,
        _dir: None,
    };
    let port: u16 = common::first_line(&mut peer.child)?.parse()?;
    let text = format!("a frame built by hand {}", unique("frame"));
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv6(
            Ipv6Addr::LOCALHOST.octets(),
            Ipv6Addr::LOCALHOST.octets(),
            64,
        )
        .udp(40000, port)
        .write(&mut frame, text.as_bytes())
        .map_err(|e| format!("{e}"))?;
    frames.send(&frame)?;
    let out = common::rest_of_output(&mut peer.child);
    let ok = peer.wait()?;
    let out = out?;
    ensure(ok, || format!("the receiver failed: {out}"))?;
    ensure(out.trim() == format!("[::1]:40000 {text}"), || {
        format!("the receiver said {out:?}")
    })
}

fn refused_without_cap_net_raw() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = common::other_user_cmd(&dir)?
        .env(VAR, "open:")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(out.status.success(), || format!("{:?} {text}", out.status))?;
    for kind in ["raw", "packet"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(kind))
            .ok_or_else(|| format!("no {kind} line in {text:?}"))?;
        ensure(
            line.contains("PermissionDenied") && line.contains("CAP_NET_RAW"),
            || format!("as another user, {line}"),
        )?;
    }
    Ok(())
}

fn bad_input() -> TestResult {
    let e = PacketSocket::bind("ipckit-no-such0", ETH_P_IP).unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::NotFound && e.to_string().contains("ip link"),
        || e.to_string(),
    )?;
    if !privileged()? {
        return Ok(());
    }
    let sock = RawSocket::ipv4(1)?;
    let e = sock.send_to(b"x", "::1".parse()?).unwrap_err();
    ensure(e.kind() == io::ErrorKind::InvalidInput, || e.to_string())?;
    let e = RawSocket::ipv6(58)?.set_header_included(true).unwrap_err();
    ensure(e.kind() == io::ErrorKind::Unsupported, || e.to_string())?;
    // A buffer too small for the packet: an error that says so.
    sock.send_to(
        &{
            let echo = IcmpEchoHeader { id: 1, seq: 1 };
            let h = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &[0; 64]);
            let mut p = h.to_bytes().to_vec();
            p.extend_from_slice(&[0; 64]);
            p
        },
        IpAddr::V4(LOCALHOST),
    )?;
    let mut small = [0u8; 8];
    let e = sock
        .recv_from_timeout(&mut small, Duration::from_secs(5))
        .unwrap_err();
    ensure(
        e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("MAX_PACKET"),
        || e.to_string(),
    )
}

fn main() {
    common::play_peer_or_arm_watchdog(
        &[(VAR, |spec: &str| {
            common::by_role(
                spec,
                &[
                    ("send", send_role),
                    ("recv", recv_role),
                    ("open", open_role),
                ],
            )
        })],
        "raw",
        Duration::from_secs(60),
    );
    common::run_cases(vec![
        ("icmp_echo_on_loopback", icmp_echo_on_loopback),
        (
            "udp_datagram_from_another_process",
            udp_datagram_from_another_process,
        ),
        ("frame_sent_on_loopback", frame_sent_on_loopback),
        ("refused_without_cap_net_raw", refused_without_cap_net_raw),
        ("bad_input", bad_input),
    ]);
}
