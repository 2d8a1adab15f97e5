//! The XDP program on the node's uplink: an early filter for traffic from outside the node
//! to local pods isolated for ingress. It drops what TC on the pod's veth would drop, before
//! the kernel builds an skb, with the same maps and the same decision code (`policy`):
//!
//! - IPv4 to a local pod (`CNS_LOCAL_IPS` -> its veth), not a fragment and not an ICMP
//!   error: a live conntrack entry passes (a reply of the pod's connection, an established
//!   allowed flow); otherwise a current deny cache entry drops (TCP and UDP: see below);
//!   otherwise, for a pod (`CNS_ENDPOINTS`) isolated for ingress, policy decides as in TC. A
//!   drop in blocking mode is `XDP_DROP`, counted and reported like TC's (same counter key,
//!   same event, the pod veth's ifindex). An allowed or audited new flow passes with its
//!   conntrack entries created here, so TC on the veth takes its fast path (one conntrack
//!   lookup) and counts the packet: every packet is counted once per endpoint.
//! - Everything else passes unchanged to TC, which keeps the full rules (fragments, ICMP
//!   errors, IPv6, VLAN tags, malformed headers, pods not isolated, addresses that are not
//!   local pods). XDP never lets through what TC would drop.
//!
//! The deny cache (`CNS_DENY_CACHE`) makes a flood cheap: a TCP or UDP packet policy dropped
//! leaves an entry keyed by what the decision depended on (addresses, protocol, destination
//! port: not the source port, which floods vary), stamped with the policy revision read
//! before any other map, the pod's veth and its audit flags. A later packet with that key and
//! no live conntrack entry (so replies of the pod's own connections still pass) is dropped on
//! the entry while the revision is unchanged, the address still belongs to that veth and the
//! pod does not audit: one hash lookup instead of the endpoint, IP cache, ipBlock and policy
//! lookups and the counter slot's. The agent bumps the revision after every map change, so an
//! entry never outlives the maps it was decided on.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cns_common::{
    DIR_INGRESS, PROTO_TCP, PROTO_UDP, REASON_POLICY_DENIED, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{
        CONFIG_NO_DENY_CACHE, DenyEntry, DenyKey, EP_AUDIT_ON, EP_AUDIT_OVERRIDE, Endpoint, Event,
        NO_COUNTER, STAT_XDP_ALLOWED, STAT_XDP_AUDIT, STAT_XDP_DROPPED,
    },
};

use crate::{
    conntrack,
    maps::{CNS_DENY_CACHE, CNS_ENDPOINTS, CNS_LOCAL_IPS},
    parse::{self, Bytes as _, L3},
    policy, stats,
};

#[inline(always)]
pub fn handle(ctx: &XdpContext) -> u32 {
    let L3::Ipv4(p) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    if p.later_fragment || p.first_fragment || p.inner.is_some() {
        return xdp_action::XDP_PASS;
    }
    let cfg = policy::config();
    // The revision before any map the decision reads: the agent bumps it after writing the
    // maps, so a deny cache entry stamped with it was decided on maps at least that new.
    // SAFETY: a read of a map value (volatile: read here, once, not later).
    let revision = unsafe { core::ptr::read_volatile(&cfg.revision) };
    // SAFETY: written by the agent only.
    let Some(&ifindex) = (unsafe { CNS_LOCAL_IPS.get(p.daddr) }) else {
        return xdp_action::XDP_PASS;
    };
    // The pod, if it is this address's and isolated for ingress (else XDP leaves it to TC).
    let endpoint = || -> Option<&'static Endpoint> {
        // SAFETY: as above.
        let ep = unsafe { CNS_ENDPOINTS.get(ifindex) }?;
        (ep.ip == p.daddr && policy::isolated(ep, DIR_INGRESS)).then_some(ep)
    };
    let key = conntrack::key(&p, DIR_INGRESS);
    if let Some(e) = conntrack::lookup(&key, &p) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &*e };
        if policy::current(e, cfg, || {
            endpoint().is_none_or(|ep| policy::audits(ep, cfg))
        }) {
            return xdp_action::XDP_PASS;
        }
    }
    let deny_key = ((p.proto == PROTO_TCP || p.proto == PROTO_UDP)
        && cfg.flags & CONFIG_NO_DENY_CACHE == 0)
        .then_some(DenyKey {
            saddr: p.saddr,
            daddr: p.daddr,
            dport: p.dport,
            proto: p.proto,
            _pad: 0,
        });
    if let Some(k) = &deny_key
        // SAFETY: a pointer into the map value, valid for this program run.
        && let Some(d) = unsafe { CNS_DENY_CACHE.get(k) }
        && d.revision == revision
        && d.ifindex == ifindex
        && !policy::flags_audit(d.ep_flags, cfg)
    {
        stats::add(d.counter, ctx.frame_len());
        let ev = Event {
            ts_ns: 0, // stamped by stats::event
            saddr: policy::v4_bytes(p.saddr),
            daddr: policy::v4_bytes(p.daddr),
            family: cns_common::maps::FAMILY_IPV4,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            dir: DIR_INGRESS,
            verdict: VERDICT_DROPPED,
            reason: REASON_POLICY_DENIED,
            src_identity: d.src_identity,
            dst_identity: d.dst_identity,
            ifindex,
            ep_id: d.ep_id,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            policy_id: u32::MAX,
            _pad: [0; 7],
        };
        stats::event(cfg, &ev);
        stats::incr(STAT_XDP_DROPPED);
        return xdp_action::XDP_DROP;
    }
    let Some(ep) = endpoint() else {
        return xdp_action::XDP_PASS;
    };
    let d = policy::decide(cfg, ep, DIR_INGRESS, &p);
    let dropped = d.verdict == VERDICT_DROPPED;
    let count = if dropped { Some(ctx.frame_len()) } else { None };
    let slot = policy::record(cfg, ep, ifindex, DIR_INGRESS, &p, &key, &d, count);
    if dropped {
        if let Some(k) = &deny_key
            && d.reason == REASON_POLICY_DENIED
            && slot != NO_COUNTER
        {
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
                _pad: 0,
            };
            // A failed insert only means the next packet decides again.
            _ = CNS_DENY_CACHE.insert(k, &entry, 0);
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
