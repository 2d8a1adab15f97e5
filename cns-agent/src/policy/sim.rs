//! A simulated datapath over [`Desired`], doing what the kernel programs do with the maps:
//! the endpoint by address, the remote identity from the IP cache (world if absent), then
//! the longest match among the rules for that identity and among those for the set
//! identity the longest-prefix match of the remote address yields, and the tiers on both
//! (`cns_common::maps::resolve_merged`, the datapath's own function).

use std::{net::IpAddr, sync::Arc};

use cns_common::{
    IDENTITY_HOST, IDENTITY_NAMESPACE_BASE, IDENTITY_WORLD, NS_WORLD,
    maps::{INCLUDES_ADDRESS, INCLUDES_NAMESPACE, PolicyValue, dry_run_diff, resolve_merged},
};

use crate::encode::{self, policy_value};

use super::{
    evaluate::Flow,
    model::{Desired, Direction, DryRunCause, LocalEndpoint, PortMatch},
};

/// Per direction: `None` when the local address is no endpoint, else whether it passes;
/// `would_*`: the same in the would-be view (dry-run policies too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimVerdict {
    pub egress: Option<bool>,
    pub ingress: Option<bool>,
    pub would_egress: Option<bool>,
    pub would_ingress: Option<bool>,
    /// Where the views differ: the dry-run policy the datapath names (`None` when
    /// `Desired::dry_run_causes` does not know the cause).
    pub egress_cause: Option<Arc<str>>,
    pub ingress_cause: Option<Arc<str>>,
}

pub fn sim(desired: &Desired, flow: &Flow) -> SimVerdict {
    let e = direction(desired, flow, Direction::Egress);
    let i = direction(desired, flow, Direction::Ingress);
    SimVerdict {
        egress: e.as_ref().map(|v| v.0),
        ingress: i.as_ref().map(|v| v.0),
        would_egress: e.as_ref().map(|v| v.1),
        would_ingress: i.as_ref().map(|v| v.1),
        egress_cause: e.and_then(|v| v.2),
        ingress_cause: i.and_then(|v| v.2),
    }
}

fn endpoint(desired: &Desired, ip: IpAddr) -> Option<&LocalEndpoint> {
    desired.endpoints.values().find(|ep| ep.addrs.contains(ip))
}

/// (enforced verdict, would-be verdict, the dry-run policy named for a difference).
fn direction(
    desired: &Desired,
    flow: &Flow,
    dir: Direction,
) -> Option<(bool, bool, Option<Arc<str>>)> {
    let (local, remote) = match dir {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    let ep = endpoint(desired, local)?;
    let (isolated, would_isolate, tiered) = match dir {
        Direction::Ingress => (
            ep.ingress_isolated,
            ep.ingress_would_isolate,
            ep.ingress_tiered,
        ),
        Direction::Egress => (
            ep.egress_isolated,
            ep.egress_would_isolate,
            ep.egress_tiered,
        ),
    };
    if !isolated && !tiered && !ep.dry_run {
        return Some((true, true, None));
    }
    let (identity, ns) = desired
        .ipcache
        .get(&remote)
        .map_or((IDENTITY_WORLD, NS_WORLD), |r| (r.identity, r.ns_id));
    if dir == Direction::Ingress && identity == IDENTITY_HOST {
        return Some((true, true, None));
    }
    // The longest match: a port range (they never overlap), the protocol, any protocol.
    let lookup = |identity: u32| {
        desired
            .rules
            .iter()
            .filter(|(k, _)| {
                k.ep_id == ep.ep_id
                    && k.dir == dir
                    && k.identity == identity
                    && port_matches(&k.ports, flow.proto, flow.dport)
            })
            .max_by_key(|(k, _)| (k.ports.proto.is_some(), k.ports.ports.is_some()))
            .map_or(PolicyValue::EMPTY, |(_, v)| policy_value(v))
    };
    let set = desired
        .cidrs
        .iter()
        .filter(|(k, _)| k.ep_id == ep.ep_id && k.dir == dir && k.net.contains(remote))
        .max_by_key(|(k, _)| k.net.prefix())
        .map(|(_, id)| *id);
    // As the datapath: what the identity's entry already includes is not looked up.
    let mut v = lookup(identity);
    if v.includes & INCLUDES_NAMESPACE == 0 {
        v = v.merge(&lookup(IDENTITY_NAMESPACE_BASE | u32::from(ns)));
    }
    if v.includes & INCLUDES_ADDRESS == 0 {
        v = v.merge(&set.map_or(PolicyValue::EMPTY, lookup));
    }
    let e = resolve_merged(isolated, &v);
    if !ep.dry_run {
        return Some((e.allowed, e.allowed, None));
    }
    let w = resolve_merged(would_isolate, &v.would());
    let d = encode::dir(dir);
    // As the agent reads it back from an event.
    let cause = dry_run_diff(isolated, would_isolate, &v, &e, &w, ep.ep_id, d).and_then(|d| {
        let cause = DryRunCause::from_datapath(d.event_id, ep.ep_id, dir);
        desired.dry_run_causes.get(&cause).cloned()
    });
    Some((e.allowed, w.allowed, cause))
}

fn port_matches(m: &PortMatch, proto: u8, port: u16) -> bool {
    match m.proto {
        None => true,
        Some(p) if p.number() != proto => false,
        Some(_) => m.ports.is_none_or(|r| r.start <= port && port <= r.end),
    }
}
