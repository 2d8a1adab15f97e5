//! Reference floors for the benchmark (issue 17): programs that do only the irreducible
//! work of each of cns's packet paths, built with the same toolchain in the same build
//! (`cns-agent/build.rs` builds every binary of this crate), so that `cargo xtask bench` can
//! report each cns path as a ratio to its floor, measured in the same run on the same packet.
//!
//! This is a separate object (`cns-floor`), not part of `cns`: the agent never loads it, so
//! its maps (own names, never pinned, created only by the bench) cost the agent nothing. The
//! maps have the types, key and value layouts and sizes of the cns maps they stand for
//! (`cns_common::maps`); where cns's own choice is cheaper than the textbook one (the IP
//! cache is a hash of /32s, not an LPM trie; policy is one exact hash lookup before any trie)
//! the floor makes the same cheaper choice, so a floor never flatters cns.
//!
//! - [`floor_established`]: parse Ethernet + IPv4 + L4 ports, one conntrack lookup (LRU hash,
//!   cns's key and entry) that hits, one per-CPU counter add in the slot the entry carries,
//!   `TC_ACT_OK`. A miss drops, so a bench that forgot to fill the map fails its verdict check.
//! - [`floor_new`] / [`floor_new_egress`]: parse, conntrack miss, IP cache lookup of the remote
//!   address (the source into the pod, the destination out of it), one policy hash lookup
//!   (cns's `PolicyKey`: endpoint, identity, direction, protocol, port), one per-CPU counter
//!   add indexed by the remote's namespace and the verdict, then the verdict (`TC_ACT_OK` or
//!   `TC_ACT_SHOT`). The endpoint is a constant ([`FLOOR_EP_ID`]), as in a datapath that
//!   compiles each endpoint's id into its program; cns looks its endpoint up by ifindex.
//! - [`floor_xdp_drop`]: XDP, parse, one hash lookup of the source address, `XDP_DROP` on a
//!   hit (`XDP_PASS` otherwise).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

/// Packet words read as cns reads them.
#[path = "words.rs"]
#[allow(dead_code, reason = "the floors read words; they copy none")]
mod words;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, map, xdp},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use cns_common::{
    DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP,
    maps::{
        CONNTRACK_CAPACITY, COUNTERS_CAPACITY, Counter, CtEntry, CtKey, DENY_CACHE_CAPACITY,
        IPCACHE_CAPACITY, POLICY_CAPACITY, PolicyKey, PolicyValue, Remote,
    },
};

/// The endpoint whose policy [`floor_new`] looks up (the bench's pod under test).
pub const FLOOR_EP_ID: u32 = 1;

/// Keyed like `CNS_CONNTRACK`; every entry is written with `dir` = `DIR_INGRESS`.
#[map]
static FLOOR_CONNTRACK: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CONNTRACK_CAPACITY, 0);
/// As `CNS_IPCACHE`.
#[map]
static FLOOR_IPCACHE: HashMap<u32, Remote> = HashMap::with_max_entries(IPCACHE_CAPACITY, 0);
/// As `CNS_POLICY_EXACT` (not preallocated, like it).
#[map]
static FLOOR_POLICY: HashMap<PolicyKey, PolicyValue> =
    HashMap::with_max_entries(POLICY_CAPACITY, BPF_F_NO_PREALLOC);
/// As `CNS_COUNTERS`.
#[map]
static FLOOR_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTERS_CAPACITY, 0);
/// Source addresses to drop, sized as `CNS_DENY_CACHE`.
#[map]
static FLOOR_DENY: HashMap<u32, u32> = HashMap::with_max_entries(DENY_CACHE_CAPACITY, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

/// What the floors need of a packet; addresses and ports in network order.
struct Tuple {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// `size_of::<T>()` bytes at `off` in `[start, end)`: direct packet access.
#[inline(always)]
fn load<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: within [start, end), checked above; unaligned reads are allowed.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// `N` words at `off` in `[start, end)` (`words`: as cns reads its headers).
#[inline(always)]
fn words<const N: usize>(start: usize, end: usize, off: usize) -> Option<[u32; N]> {
    if start + off + 4 * N > end {
        return None;
    }
    // SAFETY: within [start, end), checked above.
    Some(unsafe { words::read::<N>(start + off) })
}

/// Ethernet + IPv4 (with options) + TCP/UDP ports: nothing else.
#[inline(always)]
fn parse(start: usize, end: usize) -> Option<Tuple> {
    if u16::from_be(load::<u16>(start, end, 12)?) != ETH_P_IP {
        return None;
    }
    let hdr: [u32; 5] = words(start, end, ETH_HLEN)?;
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    let proto = (hdr[2] >> 8) as u8;
    let (sport, dport) = if proto == PROTO_TCP || proto == PROTO_UDP {
        let [ports]: [u32; 1] = words(start, end, ETH_HLEN + ihl)?;
        (ports as u16, (ports >> 16) as u16)
    } else {
        (0, 0)
    };
    Some(Tuple {
        saddr: hdr[3],
        daddr: hdr[4],
        sport,
        dport,
        proto,
    })
}

/// Keys are written a word at a time, as cns writes them (`cns_common::keys`).
#[inline(always)]
fn ct_key(t: &Tuple) -> CtKey {
    CtKey::new(t.saddr, t.daddr, t.sport, t.dport, t.proto, DIR_INGRESS)
}

#[inline(always)]
fn count(slot: u32, bytes: u32) {
    if let Some(c) = FLOOR_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(bytes);
        }
    }
}

/// Established flow: one conntrack hit, one counter add.
#[classifier]
pub fn floor_established(ctx: TcContext) -> i32 {
    let Some(t) = parse(ctx.data(), ctx.data_end()) else {
        return TC_ACT_OK as i32;
    };
    // SAFETY: a read of a map value.
    match unsafe { FLOOR_CONNTRACK.get(&ct_key(&t)) } {
        Some(e) => {
            count(e.counter, ctx.len());
            TC_ACT_OK as i32
        }
        None => TC_ACT_SHOT as i32,
    }
}

/// New flow into the pod: the remote is the source.
#[classifier]
pub fn floor_new(ctx: TcContext) -> i32 {
    new_flow(&ctx, DIR_INGRESS)
}

/// New flow out of the pod: the remote is the destination.
#[classifier]
pub fn floor_new_egress(ctx: TcContext) -> i32 {
    new_flow(&ctx, DIR_EGRESS)
}

const WORLD: Remote = Remote {
    identity: cns_common::IDENTITY_WORLD,
    ns_id: cns_common::NS_WORLD,
    _pad: 0,
};

#[inline(always)]
fn new_flow(ctx: &TcContext, dir: u8) -> i32 {
    let Some(t) = parse(ctx.data(), ctx.data_end()) else {
        return TC_ACT_OK as i32;
    };
    // SAFETY (the three lookups): reads of map values.
    if let Some(e) = unsafe { FLOOR_CONNTRACK.get(&ct_key(&t)) } {
        count(e.counter, ctx.len());
        return TC_ACT_OK as i32;
    }
    let remote_addr = if dir == DIR_INGRESS { t.saddr } else { t.daddr };
    let remote = unsafe { FLOOR_IPCACHE.get(&remote_addr) }.unwrap_or(&WORLD);
    let key = PolicyKey::aligned(FLOOR_EP_ID, remote.identity, dir, t.proto, t.dport);
    let allowed = unsafe { FLOOR_POLICY.get(&key.0) }.is_some();
    count(u32::from(remote.ns_id) * 2 + u32::from(allowed), ctx.len());
    if allowed {
        TC_ACT_OK as i32
    } else {
        TC_ACT_SHOT as i32
    }
}

/// A denied flood on the uplink: one hash lookup of the source address, then drop.
#[xdp]
pub fn floor_xdp_drop(ctx: XdpContext) -> u32 {
    let Some(t) = parse(ctx.data(), ctx.data_end()) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: a read of a map value.
    if unsafe { FLOOR_DENY.get(&t.saddr) }.is_some() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
