//! Turning the datapath's numbers back into names: namespace ids, identities, policy ids,
//! endpoint ids. The agent publishes a fresh [`Names`] after every sync (a `watch` channel,
//! see `Agent::names`), so readers of the pinned maps (metrics, events) can label what they
//! read without asking the agent thread.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use cns_common::{IDENTITY_HOST, IDENTITY_UNKNOWN, IDENTITY_WORLD, NS_HOST, NS_UNKNOWN, NS_WORLD};
use serde::Serialize;

use crate::policy::{
    AuditMode,
    model::{
        ClusterRuleName, Desired, Direction, DryRunCause, IdentityKey, Lookups, ObjectRef, Snapshot,
    },
    view,
};

pub const RESERVED_HOST: &str = "reserved:host";
pub const RESERVED_WORLD: &str = "reserved:world";
pub const RESERVED_UNKNOWN: &str = "reserved:unknown";

/// A local endpoint as the datapath knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointName {
    pub pod: ObjectRef,
    pub addrs: crate::policy::addr::PodAddrs,
    /// The veth the programs are attached to, once found.
    pub interface: Option<String>,
    /// The policies isolating the pod for ingress (what a drop there is "because of").
    pub ingress_policies: Vec<ObjectRef>,
    /// The policies isolating the pod for egress.
    pub egress_policies: Vec<ObjectRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// The global policy audit mode.
    pub audit_mode: AuditMode,
    pub namespaces: BTreeMap<u16, String>,
    pub identities: imbl::OrdMap<u32, IdentityKey>,
    pub policies: BTreeMap<u32, ObjectRef>,
    /// ClusterNetworkPolicy rules, by direction and id (`cns_common::maps::RULE_*`).
    pub cluster_rules: BTreeMap<(Direction, u32), ClusterRuleName>,
    /// By endpoint id.
    pub endpoints: BTreeMap<u32, EndpointName>,
    /// Every pod address, to the pod owning it (the one the IP cache names).
    pub pods_by_ip: imbl::OrdMap<IpAddr, ObjectRef>,
    /// The dry-run policy of each cause an event can carry.
    pub dry_run_causes: BTreeMap<DryRunCause, Arc<str>>,
    /// The dry-run policies, by the hash the counters key them with.
    pub dry_run_policies: BTreeMap<u64, Arc<str>>,
}

impl Names {
    /// The local endpoint with id `ep_id`.
    pub fn endpoint(&self, ep_id: u32) -> Option<&EndpointName> {
        self.endpoints.get(&ep_id)
    }
}

pub type SharedNames = Arc<Names>;

impl Names {
    /// The names behind `desired` (compiled from `snapshot`, with `lookups`); `interfaces`
    /// maps local pods to their veth names. Costs the namespaces, policies and local
    /// endpoints, not the cluster's pods and identities (shared with `lookups`).
    pub fn new(
        desired: &Desired,
        snapshot: &Snapshot,
        lookups: &Lookups,
        interfaces: &BTreeMap<ObjectRef, String>,
        audit_mode: AuditMode,
    ) -> Self {
        // The enforced ones: a dry-run policy never drops.
        let isolating = |pod: &ObjectRef, dir| {
            snapshot.pods.get(pod).map_or_else(Vec::new, |p| {
                view::isolating_policies(snapshot, pod, p, dir)
                    .filter(|(_, np)| !crate::policy::mode::policy_dry_run(&np.metadata))
                    .map(|(r, _)| r.clone())
                    .collect()
            })
        };
        let a = &desired.allocations;
        Self {
            audit_mode,
            namespaces: a
                .namespaces
                .iter()
                .map(|(n, id)| (*id, n.clone()))
                .collect(),
            identities: lookups.identities.clone(),
            policies: a.policies.iter().map(|(p, id)| (*id, p.clone())).collect(),
            cluster_rules: desired.cluster_rules.clone(),
            endpoints: desired
                .endpoints
                .iter()
                .map(|(pod, ep)| {
                    let name = EndpointName {
                        pod: pod.clone(),
                        addrs: ep.addrs,
                        interface: interfaces.get(pod).cloned(),
                        ingress_policies: isolating(pod, Direction::Ingress),
                        egress_policies: isolating(pod, Direction::Egress),
                    };
                    (ep.ep_id, name)
                })
                .collect(),
            pods_by_ip: lookups.pods_by_ip.clone(),
            dry_run_causes: desired.dry_run_causes.clone(),
            dry_run_policies: desired
                .dry_run_policies
                .iter()
                .map(|p| {
                    (
                        cns_common::maps::dry_run_policy_hash(p.as_bytes()),
                        p.clone(),
                    )
                })
                .collect(),
        }
    }

    /// A namespace id's name; reserved ids have `reserved:` names.
    pub fn namespace(&self, id: u16) -> String {
        match id {
            NS_HOST => RESERVED_HOST.into(),
            NS_WORLD => RESERVED_WORLD.into(),
            NS_UNKNOWN => RESERVED_UNKNOWN.into(),
            _ => self
                .namespaces
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("namespace-id:{id}")),
        }
    }

    /// An identity as `namespace:k=v,k=v`, or its reserved name.
    pub fn identity(&self, id: u32) -> String {
        match id {
            IDENTITY_HOST => RESERVED_HOST.into(),
            IDENTITY_WORLD => RESERVED_WORLD.into(),
            IDENTITY_UNKNOWN => RESERVED_UNKNOWN.into(),
            _ if id >= cns_common::IDENTITY_CIDR_BASE => {
                format!("cidr-set:{}", id - cns_common::IDENTITY_CIDR_BASE)
            }
            _ if id >= cns_common::IDENTITY_NAMESPACE_BASE => {
                let ns = u16::try_from(id - cns_common::IDENTITY_NAMESPACE_BASE).unwrap_or(0);
                format!("namespace:{}", self.namespace(ns))
            }
            _ => self.identities.get(&id).map_or_else(
                || format!("identity:{id}"),
                |k| {
                    let labels: Vec<String> =
                        k.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}:{}", k.namespace, labels.join(","))
                },
            ),
        }
    }

    pub fn policy(&self, id: u32) -> Option<&ObjectRef> {
        self.policies.get(&id)
    }

    /// What a policy entry says, in tier order: "Admin ClusterNetworkPolicy/X rule r
    /// (Deny); allowed by ns/np; Baseline ...".
    pub fn describe_value(&self, dir: Direction, v: &cns_common::maps::PolicyValue) -> String {
        crate::encode::rule_value(v)
            .names(dir, &self.cluster_rules, |id| {
                self.policy(id)
                    .map_or_else(|| format!("policy-id:{id}"), ToString::to_string)
            })
            .join("; ")
    }

    /// The ClusterNetworkPolicy rule a policy id names in `dir`, if it names one.
    pub fn cluster_rule(&self, dir: Direction, id: u32) -> Option<&ClusterRuleName> {
        self.cluster_rules.get(&(dir, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_unknown_ids_have_names() {
        let mut n = Names::default();
        n.namespaces.insert(16, "alpha".into());
        assert_eq!(n.namespace(16), "alpha");
        assert_eq!(n.namespace(NS_WORLD), RESERVED_WORLD);
        assert_eq!(n.namespace(99), "namespace-id:99");
        n.identities.insert(
            256,
            IdentityKey {
                namespace: "alpha".into(),
                labels: Arc::new([("app".to_owned(), "web".to_owned())].into()),
            },
        );
        assert_eq!(n.identity(256), "alpha:app=web");
        assert_eq!(n.identity(IDENTITY_HOST), RESERVED_HOST);
        assert_eq!(n.identity(cns_common::IDENTITY_CIDR_BASE + 3), "cidr-set:3");
    }
}
