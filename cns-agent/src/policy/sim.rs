//! A simulated datapath over [`Desired`], doing what the kernel programs do with the maps:
//! the endpoint by address, the remote identity from the IP cache (world if absent), then
//! the longest match among the rules for that identity and among those for the set
//! identity the longest-prefix match of the remote address yields, and the tiers on both
//! (`cns_common::maps::resolve_merged`, the datapath's own function).

use std::net::IpAddr;

use cns_common::{
    IDENTITY_HOST, IDENTITY_NAMESPACE_BASE, IDENTITY_WORLD, NS_WORLD,
    maps::{INCLUDES_ADDRESS, INCLUDES_NAMESPACE, PolicyValue, resolve_merged},
};

use crate::encode::policy_value;

use super::{
    evaluate::Flow,
    model::{Desired, Direction, LocalEndpoint, PortMatch},
};

/// Per direction: `None` when the local address is no endpoint, else whether it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimVerdict {
    pub egress: Option<bool>,
    pub ingress: Option<bool>,
}

pub fn sim(desired: &Desired, flow: &Flow) -> SimVerdict {
    SimVerdict {
        egress: direction(desired, flow, Direction::Egress),
        ingress: direction(desired, flow, Direction::Ingress),
    }
}

fn endpoint(desired: &Desired, ip: IpAddr) -> Option<&LocalEndpoint> {
    desired.endpoints.values().find(|ep| ep.addrs.contains(ip))
}

fn direction(desired: &Desired, flow: &Flow, dir: Direction) -> Option<bool> {
    let (local, remote) = match dir {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    let ep = endpoint(desired, local)?;
    let (isolated, tiered) = match dir {
        Direction::Ingress => (ep.ingress_isolated, ep.ingress_tiered),
        Direction::Egress => (ep.egress_isolated, ep.egress_tiered),
    };
    if !isolated && !tiered {
        return Some(true);
    }
    let (identity, ns) = desired
        .ipcache
        .get(&remote)
        .map_or((IDENTITY_WORLD, NS_WORLD), |r| (r.identity, r.ns_id));
    if dir == Direction::Ingress && identity == IDENTITY_HOST {
        return Some(true);
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
    Some(resolve_merged(isolated, &v).allowed)
}

fn port_matches(m: &PortMatch, proto: u8, port: u16) -> bool {
    match m.proto {
        None => true,
        Some(p) if p.number() != proto => false,
        Some(_) => m.ports.is_none_or(|r| r.start <= port && port <= r.end),
    }
}
