//! Connection tracking: one LRU hash lookup per packet of an established flow.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_coarse_ns};
use cns_common::{
    DIR_EGRESS, DIR_INGRESS, PROTO_TCP,
    maps::{CT_REPLY, CtEntry, CtKey, STAT_CONNTRACK_INSERT_FAILED},
};

use crate::{
    maps::CNS_CONNTRACK,
    parse::{Inner, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

const SEC: u64 = 1_000_000_000;
/// Timeouts as Cilium's defaults: established TCP 6h, TCP closing 10s, TCP opening and
/// everything else (UDP, SCTP, ICMP) 60s since the last packet.
const TCP_ESTABLISHED: u64 = 21_600 * SEC;
const TCP_CLOSING: u64 = 10 * SEC;
const OTHER: u64 = 60 * SEC;

#[inline(always)]
pub fn key(p: &Packet, dir: u8) -> CtKey {
    CtKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        dir,
        _pad: 0,
    }
}

#[inline(always)]
fn reverse(k: &CtKey) -> CtKey {
    CtKey {
        saddr: k.daddr,
        daddr: k.saddr,
        sport: k.dport,
        dport: k.sport,
        proto: k.proto,
        dir: if k.dir == DIR_INGRESS {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        },
        _pad: 0,
    }
}

#[inline(always)]
fn lifetime(proto: u8, tcp_flags: u8) -> u64 {
    if proto != PROTO_TCP {
        OTHER
    } else if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        TCP_CLOSING
    } else if tcp_flags & TCP_ACK != 0 {
        TCP_ESTABLISHED
    } else {
        OTHER
    }
}

/// Looks the packet's tuple up; returns the live entry, refreshing its expiry. Stale
/// entries are treated as missing.
#[inline(always)]
pub fn lookup(k: &CtKey, p: &Packet) -> Option<*mut CtEntry> {
    let e = CNS_CONNTRACK.get_ptr_mut(k)?;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a pointer into the map value, valid for this program run.
    let entry = unsafe { &mut *e };
    if entry.expires_ns < now {
        return None;
    }
    let closing = p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    let expires = now + lifetime(p.proto, p.tcp_flags | (entry.tcp_flags & TCP_ACK));
    // Write only when it matters (once a second, or on close) to keep cache lines clean.
    if closing || expires > entry.expires_ns + SEC {
        entry.expires_ns = expires;
        entry.tcp_flags |= p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST);
    }
    Some(e)
}

/// The live entry of the connection an ICMP error (seen by the program of direction `dir`)
/// is about: the quoted packet travelled the other way.
#[inline(always)]
pub fn related(inner: &Inner, dir: u8) -> Option<CtEntry> {
    let k = CtKey {
        saddr: inner.saddr,
        daddr: inner.daddr,
        sport: inner.sport,
        dport: inner.dport,
        proto: inner.proto,
        dir: if dir == DIR_INGRESS {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        },
        _pad: 0,
    };
    // SAFETY: a copy of a map value.
    let e = unsafe { CNS_CONNTRACK.get(k) }.copied()?;
    (e.expires_ns >= unsafe { bpf_ktime_get_coarse_ns() }).then_some(e)
}

/// Records an allowed (or audited) flow: the original tuple and its reply.
#[inline(always)]
pub fn create(k: &CtKey, p: &Packet, entry: &CtEntry) {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut fwd = *entry;
    fwd.expires_ns = now + lifetime(p.proto, p.tcp_flags);
    fwd.tcp_flags = p.tcp_flags;
    fwd.flags = 0;
    let mut rev = fwd;
    rev.flags = CT_REPLY;
    rev.src_identity = fwd.dst_identity;
    rev.dst_identity = fwd.src_identity;
    rev.src_ns = fwd.dst_ns;
    rev.dst_ns = fwd.src_ns;
    // The reply's counter key differs (namespaces swapped): its first packet looks it up.
    rev.counter = 0;
    if CNS_CONNTRACK.insert(k, fwd, BPF_ANY as u64).is_err()
        || CNS_CONNTRACK
            .insert(reverse(k), rev, BPF_ANY as u64)
            .is_err()
    {
        stats::incr(STAT_CONNTRACK_INSERT_FAILED);
    }
}
