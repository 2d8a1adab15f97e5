//! The XDP program on the node's uplink: an early filter for traffic from outside the node
//! to local pods isolated for ingress. It drops what TC on the pod's veth would drop, before
//! the kernel builds an skb, with the same maps and the same decision code (`policy`):
//!
//! - IPv4 to a local pod (`CNS_LOCAL_IPS` -> endpoint) isolated for ingress, not a fragment
//!   and not an ICMP error: a live conntrack entry passes (a reply of the pod's connection,
//!   an established allowed flow); otherwise policy decides as in TC. A drop in blocking
//!   mode is `XDP_DROP`, counted and reported like TC's (same counter key, same event, the
//!   pod veth's ifindex). An allowed or audited new flow passes with its conntrack entries
//!   created here, so TC on the veth takes its fast path (one conntrack lookup) and counts
//!   the packet: every packet is counted once per endpoint.
//! - Everything else passes unchanged to TC, which keeps the full rules (fragments, ICMP
//!   errors, IPv6, VLAN tags, malformed headers, pods not isolated, addresses that are not
//!   local pods). XDP never lets through what TC would drop.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use cns_common::{
    DIR_INGRESS, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{STAT_XDP_ALLOWED, STAT_XDP_AUDIT, STAT_XDP_DROPPED},
};

use crate::{
    conntrack,
    maps::{CNS_ENDPOINTS, CNS_LOCAL_IPS},
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
    // SAFETY: written by the agent only.
    let Some(&ifindex) = (unsafe { CNS_LOCAL_IPS.get(p.daddr) }) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: as above.
    let Some(ep) = (unsafe { CNS_ENDPOINTS.get(ifindex) }) else {
        return xdp_action::XDP_PASS;
    };
    if ep.ip != p.daddr || !policy::isolated(ep, DIR_INGRESS) {
        return xdp_action::XDP_PASS;
    }
    let cfg = policy::config();
    let key = conntrack::key(&p, DIR_INGRESS);
    if let Some(e) = conntrack::lookup(&key, &p) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &*e };
        if policy::current(e, cfg, || policy::audits(ep, cfg)) {
            return xdp_action::XDP_PASS;
        }
    }
    let d = policy::decide(cfg, ep, DIR_INGRESS, &p);
    let dropped = d.verdict == VERDICT_DROPPED;
    let count = if dropped { Some(ctx.frame_len()) } else { None };
    policy::record(cfg, ep, ifindex, DIR_INGRESS, &p, &key, &d, count);
    if dropped {
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
