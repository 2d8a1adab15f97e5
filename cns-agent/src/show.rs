//! `cns-agent policy show`: the rules in force for each local endpoint, read back from the
//! maps and decoded to names (identities as namespace + labels, ipBlock sets as their
//! prefixes, port prefixes as ranges, policy ids as names), with a warning where the maps
//! differ from what the agent meant to write.

use std::collections::BTreeMap;

use cns_common::{
    DIR_EGRESS, DIR_INGRESS, IDENTITY_CIDR_BASE, PROTO_ANY,
    maps::{
        CIDR_PREFIX_BASE, EP_AUDIT_ON, EP_AUDIT_OVERRIDE, EP_EGRESS_ISOLATED, EP_EGRESS_TIERED,
        EP_INGRESS_ISOLATED, EP_INGRESS_TIERED, POLICY_PREFIX_PROTO,
    },
};
use serde::Serialize;

use crate::{
    encode::{MapContents, decode_addr},
    names::Names,
    policy::{AuditMode, model::Direction},
};

#[derive(Debug, Serialize)]
pub struct ShownRule {
    /// "pods ns:k=v,..." / "cidrs 10.0.0.0/24,..." / a reserved name.
    pub peer: String,
    /// "any", "TCP", "TCP 80", "TCP 8000-8100".
    pub ports: String,
    pub policy: String,
}

#[derive(Debug, Serialize)]
pub struct ShownDirection {
    pub isolated: bool,
    /// Some ClusterNetworkPolicy selects the pod in this direction.
    pub cluster_policies: bool,
    pub rules: Vec<ShownRule>,
}

#[derive(Debug, Serialize)]
pub struct ShownEndpoint {
    pub pod: String,
    pub interface: Option<String>,
    pub ifindex: u32,
    pub mode: &'static str,
    pub ingress: ShownDirection,
    pub egress: ShownDirection,
    /// Differences between the maps and the agent's intent for this endpoint.
    pub warnings: Vec<String>,
}

fn proto_name(p: u8) -> String {
    match p {
        cns_common::PROTO_TCP => "TCP".into(),
        cns_common::PROTO_UDP => "UDP".into(),
        cns_common::PROTO_SCTP => "SCTP".into(),
        other => format!("proto {other}"),
    }
}

fn ports(prefix_len: u32, proto: u8, port: [u8; 2]) -> String {
    if proto == PROTO_ANY || prefix_len < POLICY_PREFIX_PROTO {
        return "any".into();
    }
    let bits = prefix_len - POLICY_PREFIX_PROTO;
    if bits == 0 {
        return proto_name(proto);
    }
    let start = u16::from_be_bytes(port);
    let end = start | u16::MAX.checked_shr(bits).unwrap_or(0);
    if start == end {
        format!("{} {start}", proto_name(proto))
    } else {
        format!("{} {start}-{end}", proto_name(proto))
    }
}

/// Decodes `actual` for the endpoints `filter` accepts (by "ns/pod"); `intended` is what
/// the agent meant to write.
pub fn show(
    actual: &MapContents,
    intended: &MapContents,
    names: &Names,
    global: AuditMode,
    filter: impl Fn(&str) -> bool,
) -> Vec<ShownEndpoint> {
    let mut out = Vec::new();
    for (ifindex, ep) in &actual.endpoints {
        let (pod, interface) = names.endpoints.get(&ep.ep_id).map_or_else(
            || (format!("endpoint-id:{}", ep.ep_id), None),
            |n| (n.pod.to_string(), n.interface.clone()),
        );
        if !filter(&pod) {
            continue;
        }
        let mode = if ep.flags & EP_AUDIT_OVERRIDE != 0 {
            AuditMode::from_audit(ep.flags & EP_AUDIT_ON != 0)
        } else {
            global
        };
        let id = ep.ep_id.to_be_bytes();
        let direction = |dir: u8, isolated: bool, cluster_policies: bool| {
            // Prefixes of each ipBlock-set identity of this endpoint and direction.
            let mut sets: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for ((len, k), identity) in &actual.cidrs {
                if k.ep_id == id && k.dir == dir {
                    let addr = decode_addr(u32::from_ne_bytes(k.addr));
                    sets.entry(*identity)
                        .or_default()
                        .push(format!("{addr}/{}", len - CIDR_PREFIX_BASE));
                }
            }
            for ((len, k), identity) in &actual.cidrs6 {
                if k.ep_id == id && k.dir == dir {
                    let addr = std::net::Ipv6Addr::from(k.addr);
                    sets.entry(*identity)
                        .or_default()
                        .push(format!("{addr}/{}", len - CIDR_PREFIX_BASE));
                }
            }
            let rules = actual
                .policy
                .iter()
                .filter(|((_, k), _)| k.ep_id == id && k.dir == dir)
                .map(|((len, k), v)| {
                    let identity = u32::from_be_bytes(k.identity);
                    let peer = if identity >= IDENTITY_CIDR_BASE {
                        let prefixes = sets.get(&identity).map(|p| p.join(",")).unwrap_or_default();
                        format!("cidrs {prefixes}")
                    } else {
                        format!("pods {}", names.identity(identity))
                    };
                    ShownRule {
                        peer,
                        ports: ports(*len, k.proto, k.port),
                        policy: names.describe_value(
                            if dir == DIR_INGRESS {
                                Direction::Ingress
                            } else {
                                Direction::Egress
                            },
                            v,
                        ),
                    }
                })
                .collect();
            ShownDirection {
                isolated,
                cluster_policies,
                rules,
            }
        };
        let mut warnings = Vec::new();
        let count = |c: &MapContents| {
            c.policy.keys().filter(|(_, k)| k.ep_id == id).count()
                + c.cidrs.keys().filter(|(_, k)| k.ep_id == id).count()
                + c.cidrs6.keys().filter(|(_, k)| k.ep_id == id).count()
        };
        let mismatched = actual.endpoints.get(ifindex) != intended.endpoints.get(ifindex)
            || actual
                .policy
                .iter()
                .filter(|((_, k), _)| k.ep_id == id)
                .ne(intended.policy.iter().filter(|((_, k), _)| k.ep_id == id))
            || actual
                .cidrs
                .iter()
                .filter(|((_, k), _)| k.ep_id == id)
                .ne(intended.cidrs.iter().filter(|((_, k), _)| k.ep_id == id))
            || actual
                .cidrs6
                .iter()
                .filter(|((_, k), _)| k.ep_id == id)
                .ne(intended.cidrs6.iter().filter(|((_, k), _)| k.ep_id == id));
        if mismatched {
            warnings.push(format!(
                "the maps differ from the agent's intent for this endpoint ({} entries in the maps, {} intended); the next resync rewrites them",
                count(actual),
                count(intended)
            ));
        }
        out.push(ShownEndpoint {
            pod,
            interface,
            ifindex: *ifindex,
            mode: mode.as_str(),
            ingress: direction(
                DIR_INGRESS,
                ep.flags & EP_INGRESS_ISOLATED != 0,
                ep.flags & EP_INGRESS_TIERED != 0,
            ),
            egress: direction(
                DIR_EGRESS,
                ep.flags & EP_EGRESS_ISOLATED != 0,
                ep.flags & EP_EGRESS_TIERED != 0,
            ),
            warnings,
        });
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_prefixes_read_back_as_ranges() {
        assert_eq!(ports(72, 0, [0, 0]), "any");
        assert_eq!(ports(80, 6, [0, 0]), "TCP");
        assert_eq!(ports(96, 17, 53u16.to_be_bytes()), "UDP 53");
        assert_eq!(ports(96 - 3, 6, 8000u16.to_be_bytes()), "TCP 8000-8007");
        assert_eq!(ports(96, 6, 8080u16.to_be_bytes()), "TCP 8080");
    }
}
