//! Header parsing, generic over how bytes are read ([`Bytes`]): TC uses
//! `bpf_skb_load_bytes` (works on non-linear skbs too), XDP reads the frame directly.
//! Both programs get the same [`Packet`] from the same code.

use aya_ebpf::programs::{TcContext, XdpContext};
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

/// Reading packet bytes: what parsing needs of a program context.
pub trait Bytes {
    /// `size_of::<T>()` bytes at `off` from the start of the frame, or `None` past its end.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    /// The frame's length, Ethernet header included (what the counters count).
    fn frame_len(&self) -> u32;
}

impl Bytes for TcContext {
    /// Direct packet access when the bytes are in the skb's linear part (headers nearly
    /// always are); `bpf_skb_load_bytes` otherwise (non-linear skbs).
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.data();
        let end = self.data_end();
        if start + off + core::mem::size_of::<T>() <= end {
            // SAFETY: within [data, data_end), checked above; unaligned reads are allowed.
            return Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
        }
        TcContext::load(self, off).ok()
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }
}

impl Bytes for XdpContext {
    /// Direct packet access, bounds-checked against `data_end` as the verifier requires.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.data();
        let end = self.data_end();
        if start + off + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: within [data, data_end), checked above; unaligned reads are allowed.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }
}

#[inline(always)]
pub fn parse<C: Bytes>(ctx: &C) -> L3 {
    let Some(ethertype) = ctx.load::<u16>(12) else {
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
fn parse_ipv4<C: Bytes>(ctx: &C) -> Option<Packet> {
    // version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum,
    // source, destination: the fixed 20 bytes.
    let hdr: [u8; 20] = ctx.load(ETH_HLEN)?;
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
            let h: [u8; 14] = ctx.load(l4)?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        PROTO_UDP | PROTO_SCTP => {
            let h: [u8; 4] = ctx.load(l4)?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
        }
        PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(l4)?;
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
fn parse_inner<C: Bytes>(ctx: &C, off: usize) -> Option<Inner> {
    let hdr: [u8; 20] = ctx.load(off)?;
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if hdr[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = hdr[9];
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let h: [u8; 4] = ctx.load(off + ihl)?;
            (
                u16::from_ne_bytes([h[0], h[1]]),
                u16::from_ne_bytes([h[2], h[3]]),
            )
        }
        PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(off + ihl)?;
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
