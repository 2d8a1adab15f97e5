//! Header parsing with `bpf_skb_load_bytes` (works on non-linear skbs too).

use aya_ebpf::programs::TcContext;
use cns_common::{PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;

pub enum L3 {
    Ipv4(Packet),
    Ipv6,
    /// ARP: not subject to NetworkPolicy.
    Arp,
    /// Anything else (VLAN tags, other protocols): isolated endpoints never accept it.
    Unsupported,
    /// Truncated or malformed IPv4.
    Malformed,
}

/// What policy needs of an IPv4 packet. Addresses and ports in network order.
pub struct Packet {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// A non-first fragment: no L4 header, ports are 0.
    pub later_fragment: bool,
    /// The first fragment of a fragmented datagram (more fragments follow).
    pub first_fragment: bool,
    /// The IP identification field (network order), which ties fragments together.
    pub ip_id: u16,
    /// For an ICMP error: the tuple of the packet it is about (as that packet was sent).
    pub inner: Option<Inner>,
}

/// The offending packet's tuple inside an ICMP error.
pub struct Inner {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Destination unreachable, source quench, redirect, time exceeded, parameter problem:
/// errors that quote the packet they are about.
const fn is_icmp_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> L3 {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return L3::Malformed;
    };
    match u16::from_be(ethertype) {
        ETH_P_IP => match parse_ipv4(ctx) {
            Some(p) => L3::Ipv4(p),
            None => L3::Malformed,
        },
        ETH_P_IPV6 => L3::Ipv6,
        ETH_P_ARP => L3::Arp,
        _ => L3::Unsupported,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext) -> Option<Packet> {
    // version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum,
    // source, destination: the fixed 20 bytes.
    let hdr: [u8; 20] = ctx.load(ETH_HLEN).ok()?;
    if hdr[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let later_fragment = frag & 0x1fff != 0;
    let first_fragment = !later_fragment && frag & 0x2000 != 0;
    let proto = hdr[9];
    let mut p = Packet {
        saddr: u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]),
        daddr: u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]),
        sport: 0,
        dport: 0,
        proto,
        tcp_flags: 0,
        later_fragment,
        first_fragment,
        ip_id: u16::from_ne_bytes([hdr[4], hdr[5]]),
        inner: None,
    };
    if later_fragment {
        return Some(p);
    }
    let l4 = ETH_HLEN + ihl;
    match proto {
        PROTO_TCP => {
            let h: [u8; 14] = ctx.load(l4).ok()?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        PROTO_UDP | PROTO_SCTP => {
            let h: [u8; 4] = ctx.load(l4).ok()?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
        }
        PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(l4).ok()?;
            // Echo request and reply share their identifier: use it as both "ports" so a
            // reply's reversed tuple matches the request's.
            if h[0] == ICMP_ECHO_REQUEST || h[0] == ICMP_ECHO_REPLY {
                let id = u16::from_ne_bytes([h[4], h[5]]);
                p.sport = id;
                p.dport = id;
            } else if is_icmp_error(h[0]) {
                p.inner = parse_inner(ctx, l4 + 8);
            }
        }
        _ => {}
    }
    Some(p)
}

/// The quoted IPv4 header and first L4 bytes of an ICMP error.
#[inline(always)]
fn parse_inner(ctx: &TcContext, off: usize) -> Option<Inner> {
    let hdr: [u8; 20] = ctx.load(off).ok()?;
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if hdr[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = hdr[9];
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let h: [u8; 4] = ctx.load(off + ihl).ok()?;
            (
                u16::from_ne_bytes([h[0], h[1]]),
                u16::from_ne_bytes([h[2], h[3]]),
            )
        }
        PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(off + ihl).ok()?;
            let id = u16::from_ne_bytes([h[4], h[5]]);
            (id, id)
        }
        _ => return None,
    };
    Some(Inner {
        saddr: u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]),
        daddr: u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]),
        sport,
        dport,
        proto,
    })
}
