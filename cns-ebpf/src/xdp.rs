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
//! connections still pass) is dropped on the entry while the revision is unchanged, the
//! address still belongs to that veth and the pod does not audit: one hash lookup instead of
//! the endpoint, IP cache, ipBlock, namespace and policy lookups and the counter slot's.
//! The agent bumps the revision after every map change, so an entry never outlives the maps
//! it was decided on.

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cns_common::{
    DIR_INGRESS, PROTO_TCP, PROTO_UDP, REASON_ADMIN_DENIED, REASON_BASELINE_DENIED,
    REASON_POLICY_DENIED, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{
        CONFIG_NO_DENY_CACHE, DenyEntry, EP_AUDIT_ON, EP_AUDIT_OVERRIDE, EP_DRY_RUN, Endpoint,
        Event, NO_COUNTER, STAT_XDP_ALLOWED, STAT_XDP_AUDIT, STAT_XDP_DROPPED,
    },
};

use crate::{
    conntrack,
    family::{Family, V6},
    maps::CNS_ENDPOINTS,
    parse::{self, Bytes as _, Frame, L3, Packet},
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

#[inline(always)]
fn handle_ip<F: Family>(ctx: &Frame, p: &Packet<F>) -> u32 {
    if p.later_fragment || p.first_fragment || p.quote != 0 {
        return xdp_action::XDP_PASS;
    }
    let cfg = policy::config();
    // The revision before any map the decision reads: the agent bumps it after writing the
    // maps, so a deny cache entry stamped with it was decided on maps at least that new.
    // SAFETY: a read of a map value (volatile: read here, once, not later).
    let revision = unsafe { core::ptr::read_volatile(&cfg.revision) };
    let Some(ifindex) = F::local_ifindex(&p.daddr) else {
        return xdp_action::XDP_PASS;
    };
    // The pod, if it is this address's and policy applies to it for ingress (else XDP
    // leaves it to TC).
    let endpoint = || -> Option<&'static Endpoint> {
        // SAFETY: written by the agent only.
        let ep = unsafe { CNS_ENDPOINTS.get(ifindex) }?;
        // Dry-run policies are resolved (and reported) by TC only.
        (F::is_own(ep, &p.daddr) && policy::enforced(ep, DIR_INGRESS) && ep.flags & EP_DRY_RUN == 0)
            .then_some(ep)
    };
    let key = conntrack::key(p, DIR_INGRESS);
    if let Some(e) = conntrack::lookup(&key, p, cfg.hz) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &*e };
        if policy::current(e, cfg, || {
            endpoint().is_none_or(|ep| policy::audits(ep, cfg))
        }) {
            return xdp_action::XDP_PASS;
        }
    }
    // The deny cache's key, built once, in place (for IPv6 a copy out of an `Option`
    // would cost two more copies of the addresses).
    let cacheable =
        (p.proto == PROTO_TCP || p.proto == PROTO_UDP) && cfg.flags & CONFIG_NO_DENY_CACHE == 0;
    let deny_key = F::deny_key(&p.saddr, &p.daddr, p.dport, p.proto);
    if cacheable
        // SAFETY: a pointer into the map value, valid for this program run.
        && let Some(d) = unsafe { F::deny_cache().get(&deny_key) }
        && d.revision == revision
        && d.ifindex == ifindex
        && !policy::flags_audit(d.ep_flags, cfg)
    {
        stats::add(d.counter, ctx.frame_len());
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
            ifindex,
            ep_id: d.ep_id,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            policy_id: d.policy_id,
            dry_run: 0,
            _pad: [0; 2],
            dry_run_id: 0,
        });
        stats::incr(STAT_XDP_DROPPED);
        return xdp_action::XDP_DROP;
    }
    let Some(ep) = endpoint() else {
        return xdp_action::XDP_PASS;
    };
    let d = policy::decide::<F, false>(cfg, ep, DIR_INGRESS, p);
    let dropped = d.verdict == VERDICT_DROPPED;
    let count = if dropped { Some(ctx.frame_len()) } else { None };
    let slot = policy::record(cfg, ep, ifindex, DIR_INGRESS, p, &key, &d, count);
    if dropped {
        let denied_by_policy = matches!(
            d.reason,
            REASON_POLICY_DENIED | REASON_ADMIN_DENIED | REASON_BASELINE_DENIED
        );
        if cacheable && denied_by_policy && slot != NO_COUNTER {
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
            _ = F::deny_cache().insert(&deny_key, &entry, 0);
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
