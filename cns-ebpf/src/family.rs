//! Where the address family matters: the one module of the programs that tells IPv4 from
//! IPv6 (besides the header parsers in `parse`, which read each family's own header).
//!
//! A [`Family`] ([`V4`] or [`V6`]) names its address type, builds its map keys and reaches
//! its maps: the IP cache, local addresses, the ipBlock trie, conntrack, fragments and the
//! deny cache (`cns_common::maps`, "Where the address family matters"). Everything else
//! (`conntrack`, `fragments`, `policy`, `xdp` and the upper-layer part of `parse`) is
//! written once, generic over `F: Family`, and monomorphised: the IPv4 programs are the
//! code they were, with the same 16-byte conntrack keys and no test of the family on any
//! path. Endpoints, policy and counters are shared: a pod has one identity, one set of
//! rules and one set of counters whatever the family of its packets.

use aya_ebpf::maps::{LruHashMap, lpm_trie::Key};
use cns_common::{
    PROTO_ICMP, PROTO_ICMPV6,
    keys::Aligned,
    maps::{
        CIDR_PREFIX_BASE, CidrKey, CidrKey6, CtEntry, CtKey, CtKey6, DenyEntry, DenyKey, DenyKey6,
        Endpoint, FAMILY_IPV4, FAMILY_IPV6, FragKey, FragKey6, FragValue, Ip6, Remote,
    },
};

use crate::{
    maps::{
        CNS_CIDRS, CNS_CIDRS6, CNS_CONNTRACK, CNS_CONNTRACK6, CNS_DENY_CACHE, CNS_DENY_CACHE6,
        CNS_FRAGMENTS, CNS_FRAGMENTS6, CNS_IPCACHE, CNS_IPCACHE6, CNS_LOCAL_IPS, CNS_LOCAL_IPS6,
    },
    parse::{self, Bytes, Inner},
};

/// An address family: its addresses, keys and maps. All of it is resolved at compile time.
pub trait Family: Sized + 'static {
    /// `FAMILY_IPV4` or `FAMILY_IPV6` (events).
    const FAMILY: u8;
    /// This family's ICMP: its protocol number and which of its message types are echo
    /// (request, reply: the identifier stands for both ports) and which are errors quoting
    /// the packet they are about.
    const PROTO_ICMP: u8;
    fn icmp_echo(t: u8) -> bool;
    fn icmp_error(t: u8) -> bool;

    /// An address as the packet carries it (network order).
    type Addr: Copy;
    /// What ties the fragments of a datagram together besides its addresses.
    type FragId: Copy;
    type CtKey: 'static;
    type FragKey: 'static;
    type DenyKey: 'static;

    fn same(a: &Self::Addr, b: &Self::Addr) -> bool;
    /// An address in an event's 16-byte field.
    fn event_addr(a: &Self::Addr) -> Ip6;
    /// Whether `a` is the endpoint's own address of this family (never when it has none).
    fn is_own(ep: &Endpoint, a: &Self::Addr) -> bool;

    /// The IP cache: the identity and namespace of a cluster or node address.
    fn ipcache(a: &Self::Addr) -> Option<&'static Remote>;
    /// The veth ifindex of a local pod's address (`CNS_LOCAL_IPS*`).
    fn local_ifindex(a: &Self::Addr) -> Option<u32>;
    /// The identity of the ipBlock set `a` falls in for this endpoint and direction.
    fn cidr_identity(ep_id: u32, dir: u8, a: &Self::Addr) -> Option<u32>;

    fn conntrack() -> &'static LruHashMap<Self::CtKey, CtEntry>;
    fn ct_key(
        saddr: &Self::Addr,
        daddr: &Self::Addr,
        sport: u16,
        dport: u16,
        proto: u8,
        dir: u8,
    ) -> Self::CtKey;
    /// The reply's tuple, as the program of the other direction sees it.
    fn ct_reverse(k: &Self::CtKey, dir: u8) -> Self::CtKey;

    fn fragments() -> &'static LruHashMap<Self::FragKey, FragValue>;
    fn frag_key(
        saddr: &Self::Addr,
        daddr: &Self::Addr,
        id: Self::FragId,
        proto: u8,
        dir: u8,
    ) -> Self::FragKey;

    fn deny_cache() -> &'static LruHashMap<Self::DenyKey, DenyEntry>;
    /// The deny cache's key, in 8-byte-aligned memory (`cns_common::keys`).
    fn deny_key(
        saddr: &Self::Addr,
        daddr: &Self::Addr,
        dport: u16,
        proto: u8,
    ) -> Aligned<Self::DenyKey>;

    /// The quoted header and first upper-layer bytes of an ICMP error, at `off`.
    fn inner<C: Bytes>(ctx: &C, off: usize) -> Option<Inner<Self>>;
}

pub struct V4;

impl Family for V4 {
    const FAMILY: u8 = FAMILY_IPV4;
    const PROTO_ICMP: u8 = PROTO_ICMP;

    #[inline(always)]
    fn icmp_echo(t: u8) -> bool {
        t == 0 || t == 8
    }

    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    #[inline(always)]
    fn icmp_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }

    type Addr = u32;
    /// The IP identification field (network order).
    type FragId = u16;
    type CtKey = CtKey;
    type FragKey = FragKey;
    type DenyKey = DenyKey;

    #[inline(always)]
    fn same(a: &u32, b: &u32) -> bool {
        a == b
    }

    #[inline(always)]
    fn event_addr(a: &u32) -> Ip6 {
        let b = a.to_ne_bytes();
        [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[inline(always)]
    fn is_own(ep: &Endpoint, a: &u32) -> bool {
        *a == ep.ip && ep.ip != 0
    }

    /// The key is a copy (`*a`): a helper given a pointer into the packet would keep the
    /// whole packet in memory instead of in registers.
    #[inline(always)]
    fn ipcache(a: &u32) -> Option<&'static Remote> {
        // SAFETY: written by the agent only.
        unsafe { CNS_IPCACHE.get(*a) }
    }

    #[inline(always)]
    fn local_ifindex(a: &u32) -> Option<u32> {
        // SAFETY: as above.
        unsafe { CNS_LOCAL_IPS.get(*a) }.copied()
    }

    #[inline(always)]
    fn cidr_identity(ep_id: u32, dir: u8, a: &u32) -> Option<u32> {
        let key = Key::new(
            CIDR_PREFIX_BASE + 32,
            CidrKey {
                ep_id: ep_id.to_be_bytes(),
                dir,
                _pad: [0; 3],
                addr: a.to_ne_bytes(),
            },
        );
        CNS_CIDRS.get(&key).copied()
    }

    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<CtKey, CtEntry> {
        &CNS_CONNTRACK
    }

    #[inline(always)]
    fn ct_key(saddr: &u32, daddr: &u32, sport: u16, dport: u16, proto: u8, dir: u8) -> CtKey {
        CtKey::new(*saddr, *daddr, sport, dport, proto, dir)
    }

    #[inline(always)]
    fn ct_reverse(k: &CtKey, dir: u8) -> CtKey {
        Self::ct_key(&k.daddr, &k.saddr, k.dport, k.sport, k.proto, dir)
    }

    #[inline(always)]
    fn fragments() -> &'static LruHashMap<FragKey, FragValue> {
        &CNS_FRAGMENTS
    }

    #[inline(always)]
    fn frag_key(saddr: &u32, daddr: &u32, id: u16, proto: u8, dir: u8) -> FragKey {
        FragKey {
            saddr: *saddr,
            daddr: *daddr,
            id,
            proto,
            dir,
        }
    }

    #[inline(always)]
    fn deny_cache() -> &'static LruHashMap<DenyKey, DenyEntry> {
        &CNS_DENY_CACHE
    }

    #[inline(always)]
    fn deny_key(saddr: &u32, daddr: &u32, dport: u16, proto: u8) -> Aligned<DenyKey> {
        DenyKey::aligned(*saddr, *daddr, dport, proto)
    }

    #[inline(always)]
    fn inner<C: Bytes>(ctx: &C, off: usize) -> Option<Inner<V4>> {
        parse::inner_v4(ctx, off)
    }
}

pub struct V6;

/// What ties IPv6 fragments together: the Fragment header's identification (network
/// order) and its next header, the same in every fragment of a datagram (the upper-layer
/// protocol a first fragment is judged on may come after more extension headers, which
/// later fragments do not carry).
#[derive(Clone, Copy)]
pub struct Frag6 {
    pub id: u32,
    pub next: u8,
}

impl Family for V6 {
    const FAMILY: u8 = FAMILY_IPV6;
    const PROTO_ICMP: u8 = PROTO_ICMPV6;

    #[inline(always)]
    fn icmp_echo(t: u8) -> bool {
        t == 128 || t == 129
    }

    /// Destination unreachable, packet too big, time exceeded, parameter problem.
    #[inline(always)]
    fn icmp_error(t: u8) -> bool {
        matches!(t, 1..=4)
    }

    type Addr = Ip6;
    type FragId = Frag6;
    type CtKey = CtKey6;
    type FragKey = FragKey6;
    type DenyKey = DenyKey6;

    /// Two 8-byte compares (a byte array's `==` may become a `bcmp` loop).
    #[inline(always)]
    fn same(a: &Ip6, b: &Ip6) -> bool {
        halves(a) == halves(b)
    }

    #[inline(always)]
    fn event_addr(a: &Ip6) -> Ip6 {
        *a
    }

    /// All zero is "no IPv6 address": nothing is its own then.
    #[inline(always)]
    fn is_own(ep: &Endpoint, a: &Ip6) -> bool {
        let own = halves(&ep.ip6);
        halves(a) == own && own != (0, 0)
    }

    /// The key is the packet's own copy of the address (the IPv6 packet is in memory).
    #[inline(always)]
    fn ipcache(a: &Ip6) -> Option<&'static Remote> {
        // SAFETY: written by the agent only.
        unsafe { CNS_IPCACHE6.get(a) }
    }

    #[inline(always)]
    fn local_ifindex(a: &Ip6) -> Option<u32> {
        // SAFETY: as above.
        unsafe { CNS_LOCAL_IPS6.get(a) }.copied()
    }

    #[inline(always)]
    fn cidr_identity(ep_id: u32, dir: u8, a: &Ip6) -> Option<u32> {
        let key = Key::new(
            CIDR_PREFIX_BASE + 128,
            CidrKey6 {
                ep_id: ep_id.to_be_bytes(),
                dir,
                _pad: [0; 3],
                addr: *a,
            },
        );
        CNS_CIDRS6.get(&key).copied()
    }

    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<CtKey6, CtEntry> {
        &CNS_CONNTRACK6
    }

    #[inline(always)]
    fn ct_key(saddr: &Ip6, daddr: &Ip6, sport: u16, dport: u16, proto: u8, dir: u8) -> CtKey6 {
        CtKey6 {
            saddr: *saddr,
            daddr: *daddr,
            sport,
            dport,
            proto,
            dir,
            _pad: 0,
        }
    }

    #[inline(always)]
    fn ct_reverse(k: &CtKey6, dir: u8) -> CtKey6 {
        Self::ct_key(&k.daddr, &k.saddr, k.dport, k.sport, k.proto, dir)
    }

    #[inline(always)]
    fn fragments() -> &'static LruHashMap<FragKey6, FragValue> {
        &CNS_FRAGMENTS6
    }

    /// Keyed by the Fragment header's next header, not `proto` (see [`Frag6`]).
    #[inline(always)]
    fn frag_key(saddr: &Ip6, daddr: &Ip6, id: Frag6, _proto: u8, dir: u8) -> FragKey6 {
        FragKey6 {
            saddr: *saddr,
            daddr: *daddr,
            id: id.id,
            proto: id.next,
            dir,
            _pad: 0,
        }
    }

    #[inline(always)]
    fn deny_cache() -> &'static LruHashMap<DenyKey6, DenyEntry> {
        &CNS_DENY_CACHE6
    }

    #[inline(always)]
    fn deny_key(saddr: &Ip6, daddr: &Ip6, dport: u16, proto: u8) -> Aligned<DenyKey6> {
        Aligned(DenyKey6 {
            saddr: *saddr,
            daddr: *daddr,
            dport,
            proto,
            _pad: 0,
        })
    }

    #[inline(always)]
    fn inner<C: Bytes>(ctx: &C, off: usize) -> Option<Inner<V6>> {
        parse::inner_v6(ctx, off)
    }
}

/// An IPv6 address as two native 8-byte words (for comparing, not for keys).
#[inline(always)]
fn halves(a: &Ip6) -> (u64, u64) {
    // SAFETY: 16 bytes, read unaligned.
    unsafe {
        (
            core::ptr::read_unaligned(a.as_ptr().cast::<u64>()),
            core::ptr::read_unaligned(a.as_ptr().add(8).cast::<u64>()),
        )
    }
}
