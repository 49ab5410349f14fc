//! `ping` with a raw socket: ICMP echo requests to a host (127.0.0.1 by
//! default), each reply matched, its checksum verified and its round trip
//! printed.
//!
//! ```text
//! sudo cargo run -p ipckit --example raw_ping -- 127.0.0.1 3
//! ```
//!
//! Needs `CAP_NET_RAW` (root has it); without it, the error says so.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, SlicedPacket, TransportSlice};
use ipckit::socket::raw::{RawSocket, MAX_PACKET};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host: IpAddr = args.next().as_deref().unwrap_or("127.0.0.1").parse()?;
    let count: u16 = args.next().as_deref().unwrap_or("3").parse()?;
    if !host.is_ipv4() {
        return Err("this example pings IPv4 addresses (ICMPv6 is protocol 58)".into());
    }
    let sock = RawSocket::ipv4(1)?;
    let id = std::process::id() as u16;
    let mut buf = vec![0u8; MAX_PACKET];
    for seq in 1..=count {
        let echo = IcmpEchoHeader { id, seq };
        let payload = *b"ipckit raw_ping payload, 32 byte";
        let request = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &payload);
        let mut packet = request.to_bytes().to_vec();
        packet.extend_from_slice(&payload);
        let sent = Instant::now();
        sock.send_to(&packet, host)?;
        let deadline = sent + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, from) = match sock.recv_from_timeout(&mut buf, left) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    println!("seq {seq}: no reply within 2 s");
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            // Every ICMP message reaching the host comes here: keep ours.
            let Ok(p) = SlicedPacket::from_ip(&buf[..n]) else {
                continue;
            };
            let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
                continue;
            };
            if icmp.icmp_type() != Icmpv4Type::EchoReply(echo) || from != host {
                continue;
            }
            let want = Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
            let ok = if want.checksum == icmp.checksum() {
                "checksum ok"
            } else {
                "BAD CHECKSUM"
            };
            println!(
                "{n} bytes from {from}: seq {seq}, {ok}, {:.1} µs",
                sent.elapsed().as_secs_f64() * 1e6
            );
            break;
        }
    }
    Ok(())
}
