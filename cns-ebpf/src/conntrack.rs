//! Connection tracking: one LRU hash lookup per packet of an established flow.

use aya_ebpf::bindings::BPF_ANY;
use cns_common::{
    DIR_EGRESS, DIR_INGRESS, PROTO_TCP,
    maps::{CT_REPLY, CtEntry, STAT_CONNTRACK_INSERT_FAILED},
};

use crate::{
    clock,
    family::Family,
    parse::{Inner, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

/// Timeouts in seconds, as Cilium's defaults: established TCP 6h, TCP closing 10s, TCP
/// opening and everything else (UDP, SCTP, ICMP) 60s since the last packet.
const TCP_ESTABLISHED: u64 = 21_600;
const TCP_CLOSING: u64 = 10;
const OTHER: u64 = 60;

#[inline(always)]
pub fn key<F: Family>(p: &Packet<F>, dir: u8) -> F::CtKey {
    F::ct_key(&p.saddr, &p.daddr, p.sport, p.dport, p.proto, dir)
}

#[inline(always)]
fn other(dir: u8) -> u8 {
    if dir == DIR_INGRESS {
        DIR_EGRESS
    } else {
        DIR_INGRESS
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

/// Looks the packet's tuple up; returns the live entry, refreshing its expiry (`hz`:
/// jiffies per second). Stale entries are treated as missing.
#[inline(always)]
pub fn lookup<F: Family>(k: &F::CtKey, p: &Packet<F>, hz: u32) -> Option<*mut CtEntry> {
    let e = F::conntrack().get_ptr_mut(k)?;
    let now = clock::now();
    // SAFETY: a pointer into the map value, valid for this program run.
    let entry = unsafe { &mut *e };
    if entry.expires < now {
        return None;
    }
    let closing = p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    let hz = u64::from(hz);
    let expires = now + lifetime(p.proto, p.tcp_flags | (entry.tcp_flags & TCP_ACK)) * hz;
    // Write only when it matters (once a second, or on close) to keep cache lines clean.
    if closing || expires > entry.expires + hz {
        entry.expires = expires;
        entry.tcp_flags |= p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST);
    }
    Some(e)
}

/// The live entry of the connection an ICMP error `p` (seen by the program of direction
/// `dir`) is about: the quoted packet travelled the other way, and the error goes back to
/// the quoted packet's source; out of the pod, it also comes from the quoted packet's
/// destination (the pod itself: a pod cannot pass errors with another source or to
/// another destination as related).
#[inline(always)]
pub fn related<F: Family>(p: &Packet<F>, inner: &Inner<F>, dir: u8) -> Option<CtEntry> {
    if !F::same(&p.daddr, &inner.saddr) || (dir != DIR_INGRESS && !F::same(&p.saddr, &inner.daddr))
    {
        return None;
    }
    let k = F::ct_key(
        &inner.saddr,
        &inner.daddr,
        inner.sport,
        inner.dport,
        inner.proto,
        other(dir),
    );
    // SAFETY: a copy of a map value.
    let e = unsafe { F::conntrack().get(&k) }.copied()?;
    (e.expires >= clock::now()).then_some(e)
}

/// Records an allowed (or audited) flow: the original tuple and its reply (`hz`: jiffies
/// per second).
#[inline(always)]
pub fn create<F: Family>(k: &F::CtKey, dir: u8, p: &Packet<F>, entry: &CtEntry, hz: u32) {
    let mut e = *entry;
    e.expires = clock::now() + lifetime(p.proto, p.tcp_flags) * u64::from(hz);
    e.tcp_flags = p.tcp_flags;
    e.flags = 0;
    let map = F::conntrack();
    let fwd = map.insert(k, &e, BPF_ANY as u64);
    // The reply: the same entry seen from the other side (one copy on the stack, not two).
    e.flags = CT_REPLY;
    core::mem::swap(&mut e.src_identity, &mut e.dst_identity);
    core::mem::swap(&mut e.src_ns, &mut e.dst_ns);
    // The reply's counter key differs (namespaces swapped): its first packet looks it up.
    e.counter = 0;
    if fwd.is_err()
        || map
            .insert(F::ct_reverse(k, other(dir)), &e, BPF_ANY as u64)
            .is_err()
    {
        stats::incr(STAT_CONNTRACK_INSERT_FAILED);
    }
}
