//! Header parsing, generic over how bytes are read ([`Bytes`]): TC uses
//! `bpf_skb_load_bytes` (works on non-linear skbs too), XDP reads the frame directly
//! ([`Frame`]).
//! Both programs get the same [`Packet`] from the same code.
//!
//! Each family has its own header parser ([`ipv4`], [`ipv6`]); what follows the IP
//! header(s) (ports, ICMP echo identifiers, the packet an ICMP error quotes) is parsed once
//! for both ([`upper`]).

use core::mem::MaybeUninit;

use aya_ebpf::programs::{TcContext, XdpContext};
use cns_common::{PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::{
    family::{Family, Frag6, V4, V6},
    words,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;

/// What the Ethernet header says follows.
pub enum L3 {
    Ipv4,
    Ipv6,
    /// ARP: not subject to NetworkPolicy.
    Arp,
    /// Anything else (VLAN tags, other protocols): isolated endpoints never accept it.
    Unsupported,
    /// Shorter than an Ethernet header.
    Malformed,
}

/// What policy needs of an IP packet. Addresses and ports in network order. (`repr(C)`,
/// 8-byte aligned: an IPv6 packet lives in memory (see [`ipv6`]), where its addresses are
/// then copied into keys as 8-byte words, not byte by byte.)
#[repr(C, align(8))]
pub struct Packet<F: Family> {
    pub saddr: F::Addr,
    pub daddr: F::Addr,
    pub sport: u16,
    pub dport: u16,
    /// The upper-layer protocol (IPv6: the header after the extension headers walked).
    pub proto: u8,
    pub tcp_flags: u8,
    /// A non-first fragment: no upper-layer header, ports are 0.
    pub later_fragment: bool,
    /// The first fragment of a fragmented datagram (more fragments follow).
    pub first_fragment: bool,
    /// What ties the fragments together (see [`Family::FragId`]).
    pub frag_id: F::FragId,
    /// For an ICMP error: the offset of the packet it quotes (its tuple is read only when
    /// needed, by [`Packet::inner`]); 0 for anything else.
    pub quote: u16,
}

impl<F: Family> Packet<F> {
    /// The tuple of the packet an ICMP error is about (as that packet was sent), if this is
    /// an ICMP error quoting a packet cns could track.
    #[inline(always)]
    pub fn inner<C: Bytes>(&self, ctx: &C) -> Option<Inner<F>> {
        if self.quote == 0 {
            return None;
        }
        // Masked so that the verifier knows the offset's bounds whatever it kept of them.
        F::inner(ctx, usize::from(self.quote & 0x7fff))
    }
}

/// The offending packet's tuple inside an ICMP error.
pub struct Inner<F: Family> {
    pub saddr: F::Addr,
    pub daddr: F::Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Reading packet bytes: what parsing needs of a program context.
pub trait Bytes {
    /// `size_of::<T>()` bytes at `off` from the start of the frame, or `None` past its end.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    /// Copies `N` bytes (a multiple of 4) at `off` to `dst` (memory the caller keeps: not
    /// through registers), a word at a time (`words`); `None` past the frame's end.
    ///
    /// # Safety
    /// `dst` is valid for writing `N` bytes and 4-byte aligned.
    unsafe fn copy<const N: usize>(&self, off: usize, dst: *mut u8) -> Option<()>;
    /// The frame's length, Ethernet header included (what the counters count).
    fn frame_len(&self) -> u32;
    /// `4 * N` bytes at `off` as `N` (at most 5) words as the bytes lie (`words`): one load
    /// per word used instead of four; `None` past the frame's end.
    fn words<const N: usize>(&self, off: usize) -> Option<[u32; N]>;
}

/// `bpf_skb_load_bytes`: `len` bytes at `off` into `dst` (non-linear skbs).
///
/// # Safety
/// `dst` is valid for writing `len` bytes.
#[inline(always)]
unsafe fn copy_slow(ctx: &TcContext, off: usize, dst: *mut u8, len: u32) -> Option<()> {
    // SAFETY: `dst` is `len` writable bytes (the caller's contract).
    let r = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(ctx.skb.skb.cast(), off as u32, dst.cast(), len)
    };
    (r == 0).then_some(())
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

    /// The kernel copies (`bpf_skb_load_bytes`), straight into `dst`: one helper call
    /// instead of byte-wide loads and stores (BPF has no unaligned wide loads).
    #[inline(always)]
    unsafe fn copy<const N: usize>(&self, off: usize, dst: *mut u8) -> Option<()> {
        let start = self.data();
        if start + off + N <= self.data_end() {
            // SAFETY: within [data, data_end); `dst` is N writable, aligned bytes.
            unsafe { words::copy::<N>(start + off, dst) };
            return Some(());
        }
        // SAFETY: `dst` is N writable bytes (the caller's contract).
        unsafe { copy_slow(self, off, dst, N as u32) }
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }

    /// Direct packet access as in [`Bytes::load`], else `bpf_skb_load_bytes` into words.
    #[inline(always)]
    fn words<const N: usize>(&self, off: usize) -> Option<[u32; N]> {
        let start = self.data();
        if start + off + 4 * N <= self.data_end() {
            // SAFETY: within [data, data_end), checked above.
            return Some(unsafe { words::read::<N>(start + off) });
        }
        let mut w = [0u32; N];
        // SAFETY: `w` is 4 * N writable bytes.
        unsafe { copy_slow(self, off, w.as_mut_ptr().cast(), (4 * N) as u32) }?;
        Some(w)
    }
}

/// A frame in memory, as XDP sees it: direct access within `[start, end)`. XDP reads its
/// context's two pointers once, into this, so that a parser called as a function of its
/// own gets them as pointers (given the context, the compiler would pass the 32-bit fields
/// and widen them in the callee, which the verifier refuses on packet pointers).
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl Bytes for Frame {
    /// Direct packet access, bounds-checked against `end` as the verifier requires.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        if self.start + off + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: within [start, end), checked above; unaligned reads are allowed.
        Some(unsafe { core::ptr::read_unaligned((self.start + off) as *const T) })
    }

    #[inline(always)]
    unsafe fn copy<const N: usize>(&self, off: usize, dst: *mut u8) -> Option<()> {
        if self.start + off + N > self.end {
            return None;
        }
        // SAFETY: the source is within [start, end), checked above; `dst` is N writable,
        // aligned bytes (the caller's contract).
        unsafe { words::copy::<N>(self.start + off, dst) };
        Some(())
    }

    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.end - self.start) as u32
    }

    #[inline(always)]
    fn words<const N: usize>(&self, off: usize) -> Option<[u32; N]> {
        if self.start + off + 4 * N > self.end {
            return None;
        }
        // SAFETY: within [start, end), checked above.
        Some(unsafe { words::read::<N>(self.start + off) })
    }
}

#[inline(always)]
pub fn l3<C: Bytes>(ctx: &C) -> L3 {
    let Some(ethertype) = ctx.load::<u16>(12) else {
        return L3::Malformed;
    };
    match u16::from_be(ethertype) {
        ETH_P_IP => L3::Ipv4,
        ETH_P_IPV6 => L3::Ipv6,
        ETH_P_ARP => L3::Arp,
        _ => L3::Unsupported,
    }
}

/// An IPv4 packet; `None` when truncated or malformed.
#[inline(always)]
pub fn ipv4<C: Bytes>(ctx: &C) -> Option<Packet<V4>> {
    // version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol, checksum,
    // source, destination: the fixed 20 bytes.
    // Five words (little-endian: a word's first byte is its low byte).
    let w: [u32; 5] = ctx.words(ETH_HLEN)?;
    let vihl = w[0] as u8;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let frag = u16::from_be((w[1] >> 16) as u16);
    let later_fragment = frag & 0x1fff != 0;
    let first_fragment = !later_fragment && frag & 0x2000 != 0;
    let mut p = Packet {
        saddr: w[3],
        daddr: w[4],
        sport: 0,
        dport: 0,
        proto: (w[2] >> 8) as u8,
        tcp_flags: 0,
        later_fragment,
        first_fragment,
        frag_id: w[1] as u16,
        quote: 0,
    };
    if later_fragment {
        return Some(p);
    }
    let u = upper::<V4, C>(ctx, p.proto, ETH_HLEN + ihl)?;
    p.sport = u.sport;
    p.dport = u.dport;
    p.tcp_flags = u.tcp_flags;
    p.quote = u.quote;
    Some(p)
}

/// Why an IPv6 packet is not a [`Packet`].
pub enum Skip6 {
    /// ICMPv6 Neighbor Discovery (router solicitation and advertisement, neighbor
    /// solicitation and advertisement, redirect): the link's own business, always passes.
    Neighbor,
    /// More extension headers than [`MAX_EXT_HEADERS`]: the upper layer is unknown.
    Chain,
    /// Truncated (inside the header, an extension header or the upper-layer header) or
    /// not version 6.
    Malformed,
}

/// How many extension headers the programs walk before the upper-layer header: 8. A packet
/// that follows RFC 8200 (section 4.1: each header at most once, Destination Options at
/// most twice) carries at most 6 of the kinds walked here (Hop-by-Hop, Destination Options,
/// Routing, Fragment, AH, Destination Options; ESP ends the walk as an upper layer), so 8
/// leaves room for what the RFC tolerates, and the bounded walk (unrolled by the compiler,
/// each step one 8-byte load) keeps the verifier's work far below its limit. A longer
/// chain is `REASON_IPV6_HEADER_CHAIN`.
pub const MAX_EXT_HEADERS: usize = 8;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// ICMPv6 Neighbor Discovery: router solicitation (133) to redirect (137).
const fn is_neighbor_discovery(t: u8) -> bool {
    matches!(t, 133..=137)
}

/// An IPv6 packet: the fixed header, then the extension headers (Hop-by-Hop, Routing,
/// Destination Options, Fragment, AH; at most [`MAX_EXT_HEADERS`]) up to the upper-layer
/// header. Any other next header (ESP, No Next Header, anything) is the upper layer: the
/// packet is judged as that protocol with no ports. A fragment after the first stops at
/// its Fragment header (the rest is payload).
///
/// A function of its own (a BPF-to-BPF call, on the IPv6 path only) that writes the packet
/// into the caller's `out` (every field, before `Ok`): the packet then stays in the
/// caller's stack memory, read field by field where needed, instead of being split into
/// registers that spill around every helper call, or copied out of a `Result` (16-byte
/// addresses would otherwise take most of the 512 bytes of stack). The addresses are
/// copied into it as one block of memory, and its other fields written one by one: BPF has
/// no unaligned wide loads, so an address loaded into registers is 16 byte loads, shifts
/// and byte stores, and a packet built whole is zeroed first with a `memset` call (a byte
/// loop) the backend does not expand.
#[inline(never)]
pub fn ipv6<C: Bytes>(ctx: &C, out: &mut MaybeUninit<Packet<V6>>) -> Result<(), Skip6> {
    // version/traffic class/flow label, payload length, next header, hop limit.
    let hdr: [u8; 8] = ctx.load(ETH_HLEN).ok_or(Skip6::Malformed)?;
    if hdr[0] >> 4 != 6 {
        return Err(Skip6::Malformed);
    }
    let p = out.as_mut_ptr();
    // Both addresses (adjacent in the header and in `Packet`) copied straight into the
    // packet's memory, never through registers.
    const _: () = assert!(
        core::mem::offset_of!(Packet<V6>, saddr) == 0
            && core::mem::offset_of!(Packet<V6>, daddr) == 16
    );
    // SAFETY: the first 32 bytes of `out`: its two addresses.
    unsafe { ctx.copy::<32>(ETH_HLEN + 8, p.cast()) }.ok_or(Skip6::Malformed)?;
    let mut next = hdr[6];
    let mut off = ETH_HLEN + 40;
    let mut frag_id = Frag6 { id: 0, next: 0 };
    let mut first_fragment = false;
    let mut later_fragment = false;
    for _ in 0..MAX_EXT_HEADERS {
        if !matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
        ) {
            break;
        }
        // Every extension header is at least 8 bytes: next header, length, 6 more.
        let h: [u8; 8] = ctx.load(off).ok_or(Skip6::Malformed)?;
        if next == NEXTHDR_FRAGMENT {
            // Offset (13 bits), 2 reserved bits, M; then the identification.
            let offset_m = u16::from_be_bytes([h[2], h[3]]);
            frag_id = Frag6 {
                id: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
                next: h[0],
            };
            if offset_m & 0xfff8 != 0 {
                // A later fragment: the rest is payload, judged as the next header.
                later_fragment = true;
                next = h[0];
                break;
            }
            first_fragment = offset_m & 1 != 0;
            off += 8;
        } else if next == NEXTHDR_AUTH {
            // AH's length is in 4-byte units, minus 2.
            off += (h[1] as usize + 2) * 4;
        } else {
            // Hop-by-Hop, Routing, Destination Options: 8-byte units, minus 1.
            off += (h[1] as usize + 1) * 8;
        }
        next = h[0];
    }
    let u = if later_fragment {
        Upper::NONE
    } else {
        if matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
        ) {
            return Err(Skip6::Chain);
        }
        if next == PROTO_ICMPV6 {
            // Type, code, checksum and 4 more bytes: every ICMPv6 message has them. (Not a
            // 1-byte load: the compiler turns its bounds check into one the verifier
            // cannot use.)
            let h: [u8; 8] = ctx.load(off).ok_or(Skip6::Malformed)?;
            if is_neighbor_discovery(h[0]) {
                return Err(Skip6::Neighbor);
            }
        }
        upper::<V6, C>(ctx, next, off).ok_or(Skip6::Malformed)?
    };
    // SAFETY: every other field of `out`, written one by one (the addresses are written
    // above): `out` is then a whole packet.
    unsafe {
        use core::ptr::addr_of_mut;
        addr_of_mut!((*p).sport).write(u.sport);
        addr_of_mut!((*p).dport).write(u.dport);
        addr_of_mut!((*p).proto).write(next);
        addr_of_mut!((*p).tcp_flags).write(u.tcp_flags);
        addr_of_mut!((*p).later_fragment).write(later_fragment);
        addr_of_mut!((*p).first_fragment).write(first_fragment);
        addr_of_mut!((*p).frag_id).write(frag_id);
        addr_of_mut!((*p).quote).write(u.quote);
    }
    Ok(())
}

/// What the upper-layer header says: ports, TCP flags, where an ICMP error's quote starts.
struct Upper {
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    quote: u16,
}

impl Upper {
    const NONE: Self = Self {
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        quote: 0,
    };
}

/// The upper-layer header of protocol `proto` at `off`: ports (TCP, UDP, SCTP), the echo
/// identifier or the quoted packet's offset (this family's ICMP). Other protocols have no
/// ports. `None` when truncated.
#[inline(always)]
fn upper<F: Family, C: Bytes>(ctx: &C, proto: u8, off: usize) -> Option<Upper> {
    let mut u = Upper::NONE;
    match proto {
        PROTO_TCP => {
            // Ports, then the word holding the flags (byte 13): 16 bytes (a TCP header has
            // 20), so a header cut inside that word is malformed.
            let [ports, _, _, flags]: [u32; 4] = ctx.words(off)?;
            u.sport = ports as u16;
            u.dport = (ports >> 16) as u16;
            u.tcp_flags = (flags >> 8) as u8;
        }
        PROTO_UDP | PROTO_SCTP => {
            let [ports]: [u32; 1] = ctx.words(off)?;
            u.sport = ports as u16;
            u.dport = (ports >> 16) as u16;
        }
        p if p == F::PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(off)?;
            // Echo request and reply share their identifier: use it as both "ports" so a
            // reply's reversed tuple matches the request's.
            if F::icmp_echo(h[0]) {
                let id = u16::from_ne_bytes([h[4], h[5]]);
                u.sport = id;
                u.dport = id;
            } else if F::icmp_error(h[0]) {
                u.quote = (off + 8) as u16;
            }
        }
        _ => {}
    }
    Some(u)
}

/// The ports of a quoted packet's upper-layer header at `off`: TCP, UDP, SCTP ports or the
/// ICMP identifier; `None` for other protocols.
#[inline(always)]
fn quoted_ports<F: Family, C: Bytes>(ctx: &C, proto: u8, off: usize) -> Option<(u16, u16)> {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let h: [u8; 4] = ctx.load(off)?;
            Some((
                u16::from_ne_bytes([h[0], h[1]]),
                u16::from_ne_bytes([h[2], h[3]]),
            ))
        }
        p if p == F::PROTO_ICMP => {
            let h: [u8; 8] = ctx.load(off)?;
            let id = u16::from_ne_bytes([h[4], h[5]]);
            Some((id, id))
        }
        _ => None,
    }
}

/// The quoted IPv4 header and first L4 bytes of an ICMP error.
#[inline(always)]
pub fn inner_v4<C: Bytes>(ctx: &C, off: usize) -> Option<Inner<V4>> {
    let hdr: [u8; 20] = ctx.load(off)?;
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if hdr[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = hdr[9];
    let (sport, dport) = quoted_ports::<V4, C>(ctx, proto, off + ihl)?;
    Some(Inner {
        saddr: u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]),
        daddr: u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]),
        sport,
        dport,
        proto,
    })
}

/// The quoted IPv6 header and first upper-layer bytes of an ICMPv6 error. The quoted
/// packet's upper-layer header must follow its fixed header: a quote with extension
/// headers relates to no connection (the error is then judged by policy as ICMPv6).
#[inline(always)]
pub fn inner_v6<C: Bytes>(ctx: &C, off: usize) -> Option<Inner<V6>> {
    let hdr: [u8; 8] = ctx.load(off)?;
    if hdr[0] >> 4 != 6 {
        return None;
    }
    let proto = hdr[6];
    let (sport, dport) = quoted_ports::<V6, C>(ctx, proto, off + 40)?;
    Some(Inner {
        saddr: ctx.load(off + 8)?,
        daddr: ctx.load(off + 24)?,
        sport,
        dport,
        proto,
    })
}
