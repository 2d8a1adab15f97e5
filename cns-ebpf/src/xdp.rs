//! The XDP program on the node's uplink: an early filter for traffic from outside the node
//! to local pods some policy applies to for ingress (a NetworkPolicy isolates them, or a
//! ClusterNetworkPolicy selects them). It drops what TC on the pod's veth would drop, before
//! the kernel builds an skb, with the same maps and the same decision code (`policy`):
//!
//! - IPv4 or IPv6 to a local pod (`CNS_LOCAL_IPS`/`CNS_LOCAL_IPS6` -> its veth), not a
//!   fragment and not an ICMP error: a live conntrack entry passes (a reply of the pod's
//!   connection, an established allowed flow); otherwise a current deny cache entry drops
//!   (TCP and UDP: see below); otherwise, for a pod (`CNS_ENDPOINTS`) policy applies to for
//!   ingress (`policy::enforced`), policy decides as in TC, every tier included. A
//!   drop in blocking mode is `XDP_DROP`, counted and reported like TC's (same counter key,
//!   same event, the pod veth's ifindex). An allowed or audited new flow passes with its
//!   conntrack entries created here, so TC on the veth takes its fast path (one conntrack
//!   lookup) and counts the packet: every packet is counted once per endpoint.
//! - Everything else passes unchanged to TC, which keeps the full rules (fragments, ICMP
//!   errors, IPv6 Neighbor Discovery and header chains longer than the walk, VLAN tags,
//!   malformed headers, pods no policy applies to, pods with dry-run policies (TC resolves
//!   and reports both views of their entries), addresses that are not local pods). XDP
//!   never lets through what TC would drop.
//!
//! Both families run the same code ([`handle_ip`]), each in a function of its own (as in
//! TC, `policy::handle`: neither frame under the other's). The IPv4 path is a call here
//! where it used to be inlined into the entry; measured, that costs nothing once no helper
//! is given a pointer into the parsed packet (see `family`).
//!
//! The deny cache (`CNS_DENY_CACHE`) makes a flood cheap: a TCP or UDP packet policy dropped
//! (a NetworkPolicy's isolation, an Admin or a Baseline Deny: the entry keeps the reason and
//! the rule for the event) leaves an entry keyed by what the decision depended on
//! (addresses, protocol, destination port: not the source port, which floods vary), stamped
//! with the policy revision read before any other map, the pod's veth and its audit flags. A
//! later packet with that key and no live conntrack entry (so replies of the pod's own
//! connections still pass) is dropped on the entry while the revision is unchanged and the
//! pod does not audit: one hash lookup instead of the endpoint, IP cache, ipBlock, namespace
//! and policy lookups. The agent bumps the revision after every map change (the local
//! addresses included), so an entry never outlives the maps it was decided on.
//!
//! Normally the deny cache is read last, after the local-pod and conntrack lookups, so that
//! traffic that is no flood pays nothing for it. Once this CPU has dropped on it within the
//! last 100 ms (`CNS_XDP_FLOOD`: a flood is under way), it is read first: a TCP packet that
//! opens a connection (SYN without ACK, RST or FIN) is then dropped on the entry after that
//! one lookup (it is no reply of the pod's own connection, short of a simultaneous open);
//! anything else still needs no live conntrack entry (two lookups).

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cns_common::{
    DIR_INGRESS, PROTO_TCP, PROTO_UDP, REASON_ADMIN_DENIED, REASON_BASELINE_DENIED,
    REASON_POLICY_DENIED, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{
        CONFIG_NO_DENY_CACHE, Config, DenyEntry, EP_AUDIT_ON, EP_AUDIT_OVERRIDE, EP_DRY_RUN,
        Endpoint, Event, NO_COUNTER, STAT_XDP_ALLOWED, STAT_XDP_AUDIT, STAT_XDP_DROPPED,
        XDP_FLOOD_JIFFIES_PER_SECOND,
    },
};

use crate::{
    clock, conntrack,
    family::{Family, V6},
    maps::{CNS_ENDPOINTS, CNS_XDP_FLOOD},
    parse::{self, Bytes as _, Frame, L3, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    policy, stats,
};

/// Reads the Ethernet type and calls the path for it, each a BPF-to-BPF call of its own
/// (see `policy::handle`).
#[inline(always)]
pub fn handle(ctx: &XdpContext) -> u32 {
    let frame = Frame::new(ctx);
    match parse::l3(&frame) {
        L3::Ipv4 => handle_ipv4(&frame),
        L3::Ipv6 => handle_ipv6(&frame),
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(never)]
fn handle_ipv4(ctx: &Frame) -> u32 {
    match parse::ipv4(ctx) {
        Some(p) => handle_ip(ctx, &p),
        None => xdp_action::XDP_PASS,
    }
}

/// Neighbor Discovery, chains longer than the walk and malformed headers go to TC.
#[inline(never)]
fn handle_ipv6(ctx: &Frame) -> u32 {
    let mut p = MaybeUninit::uninit();
    match parse::ipv6(ctx, &mut p) {
        // SAFETY: `ipv6` wrote the packet: it returned `Ok`.
        Ok(()) => handle_ip::<V6>(ctx, unsafe { p.assume_init_ref() }),
        Err(_) => xdp_action::XDP_PASS,
    }
}

/// The pod behind `ifindex` if it is `daddr`'s and policy applies to it for ingress (else
/// XDP leaves the packet to TC).
#[inline(always)]
fn endpoint<F: Family>(ifindex: u32, daddr: &F::Addr) -> Option<&'static Endpoint> {
    // SAFETY: written by the agent only. (Not through this CPU's copies, `endpoints`: that
    // takes the verifier past its limit here.)
    let ep = unsafe { CNS_ENDPOINTS.get(ifindex) }?;
    // Dry-run policies are resolved (and reported) by TC only.
    (F::is_own(ep, daddr) && policy::enforced(ep, DIR_INGRESS) && ep.flags & EP_DRY_RUN == 0)
        .then_some(ep)
}

/// Whether a live conntrack entry lets the packet pass (an audited flow's reply only while
/// its pod audits: `ifindex`, the pod's veth, is only looked up for those).
#[inline(always)]
fn tracked<F: Family>(
    p: &Packet<F>,
    key: &F::CtKey,
    cfg: &Config,
    ifindex: impl FnOnce() -> Option<u32>,
) -> bool {
    conntrack::lookup(key, p, cfg.hz).is_some_and(|e| {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &*e };
        policy::current(e, cfg, || {
            ifindex()
                .and_then(|i| endpoint::<F>(i, &p.daddr))
                .is_none_or(|ep| policy::audits(ep, cfg))
        })
    })
}

/// The deny cache's entry for `key` if it is current: made under `revision` (which the
/// agent bumps after every map change, the local addresses included) and for a pod that
/// does not audit now.
#[inline(always)]
fn cached_drop<F: Family>(
    key: &F::DenyKey,
    revision: u32,
    cfg: &Config,
) -> Option<&'static DenyEntry> {
    // SAFETY: a pointer into the map value, valid for this program run.
    let d = unsafe { F::deny_cache().get(key) }?;
    (d.revision == revision && !policy::flags_audit(d.ep_flags, cfg)).then_some(d)
}

/// Whether a drop on the deny cache on this CPU was recent enough that a flood is under
/// way (`CNS_XDP_FLOOD`): then the deny cache is read first.
#[inline(always)]
fn flooded(cfg: &Config) -> bool {
    CNS_XDP_FLOOD.get(0).is_some_and(|last| {
        clock::now().wrapping_sub(*last) <= u64::from(cfg.hz / XDP_FLOOD_JIFFIES_PER_SECOND)
    })
}

/// Drops on the deny cache entry `d`: counted and reported as a full decision's drop.
#[inline(always)]
fn drop_cached<F: Family>(ctx: &Frame, cfg: &Config, p: &Packet<F>, d: &DenyEntry) -> u32 {
    stats::add(d.counter, ctx.frame_len());
    if let Some(last) = CNS_XDP_FLOOD.get_ptr_mut(0) {
        let now = clock::now();
        // SAFETY: per-CPU value, only this CPU writes it; written once a jiffy at most.
        unsafe {
            if *last != now {
                *last = now;
            }
        }
    }
    stats::event(cfg, || Event {
        ts_ns: 0, // stamped by stats::event
        saddr: F::event_addr(&p.saddr),
        daddr: F::event_addr(&p.daddr),
        family: F::FAMILY,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        dir: DIR_INGRESS,
        verdict: VERDICT_DROPPED,
        reason: d.reason,
        src_identity: d.src_identity,
        dst_identity: d.dst_identity,
        ifindex: d.ifindex,
        ep_id: d.ep_id,
        src_ns: d.src_ns,
        dst_ns: d.dst_ns,
        policy_id: d.policy_id,
        dry_run: 0,
        _pad: [0; 2],
        dry_run_id: 0,
    });
    stats::incr(STAT_XDP_DROPPED);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn handle_ip<F: Family>(ctx: &Frame, p: &Packet<F>) -> u32 {
    if p.later_fragment || p.first_fragment || p.quote != 0 {
        return xdp_action::XDP_PASS;
    }
    let cfg = policy::config();
    // The revision before any map the decision reads (the deny cache's entry is stamped
    // with it).
    let revision = policy::revision(cfg);
    let key = conntrack::key(p, DIR_INGRESS);
    // The deny cache's key, built once, in place (for IPv6 a copy out of an `Option`
    // would cost two more copies of the addresses).
    let cacheable =
        (p.proto == PROTO_TCP || p.proto == PROTO_UDP) && cfg.flags & CONFIG_NO_DENY_CACHE == 0;
    let deny_key = &F::deny_key(&p.saddr, &p.daddr, p.dport, p.proto).0;
    // Under a flood, the deny cache first: a TCP packet that opens a connection is never a
    // reply of the pod's own (short of a simultaneous open), so it drops on the entry alone;
    // anything else drops only without a live conntrack entry, as below.
    let flood = cacheable && flooded(cfg);
    if flood && let Some(d) = cached_drop::<F>(deny_key, revision, cfg) {
        let opens = p.proto == PROTO_TCP
            && p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
        if opens || !tracked(p, &key, cfg, || F::local_ifindex(&p.daddr)) {
            return drop_cached(ctx, cfg, p, d);
        }
        return xdp_action::XDP_PASS;
    }
    let Some(ifindex) = F::local_ifindex(&p.daddr) else {
        return xdp_action::XDP_PASS;
    };
    if tracked(p, &key, cfg, || Some(ifindex)) {
        return xdp_action::XDP_PASS;
    }
    if cacheable
        && !flood
        && let Some(d) = cached_drop::<F>(deny_key, revision, cfg)
    {
        return drop_cached(ctx, cfg, p, d);
    }
    let Some(ep) = endpoint::<F>(ifindex, &p.daddr) else {
        return xdp_action::XDP_PASS;
    };
    let d = policy::decide::<F, false>(cfg, revision, ep, DIR_INGRESS, p);
    let dropped = d.verdict == VERDICT_DROPPED;
    let count = if dropped { Some(ctx.frame_len()) } else { None };
    let slot = policy::record(cfg, ep, ifindex, DIR_INGRESS, p, &key, &d, count);
    if dropped {
        let denied_by_policy = matches!(
            d.reason,
            REASON_POLICY_DENIED | REASON_ADMIN_DENIED | REASON_BASELINE_DENIED
        );
        // (Slot 0: lost a race for a counter slot; the next drop decides again.)
        if cacheable && denied_by_policy && slot != NO_COUNTER && slot != 0 {
            let entry = DenyEntry {
                revision,
                ep_id: ep.ep_id,
                ifindex,
                counter: slot,
                src_identity: d.src_identity,
                dst_identity: d.dst_identity,
                src_ns: d.src_ns,
                dst_ns: d.dst_ns,
                ep_flags: ep.flags & (EP_AUDIT_OVERRIDE | EP_AUDIT_ON),
                reason: d.reason,
                _pad: 0,
                policy_id: d.policy_id,
            };
            // A failed insert only means the next packet decides again.
            _ = F::deny_cache().insert(deny_key, &entry, 0);
        }
        stats::incr(STAT_XDP_DROPPED);
        xdp_action::XDP_DROP
    } else {
        stats::incr(if d.verdict == VERDICT_AUDIT {
            STAT_XDP_AUDIT
        } else {
            STAT_XDP_ALLOWED
        });
        xdp_action::XDP_PASS
    }
}
