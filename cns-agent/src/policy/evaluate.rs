//! The reference evaluator: whether the policies admit one flow, decided directly on the
//! k8s objects (selectors, ipBlocks with excepts by address, ports, named ports against the
//! receiving pod), without identities or partitions. Tests check the compiler against it;
//! `policy explain` prints its verdicts.
//!
//! The tiers as the ClusterNetworkPolicy spec states them, per direction: the Admin tier's
//! rules (policies by priority, then by name; rules in order): the first matching rule's
//! Accept or Deny decides, its Pass skips the rest of the tier; then NetworkPolicy, which
//! decides for a pod it isolates; then the Baseline tier the same way (Pass: no decision);
//! then allow. Ingress from the node's own addresses is always allowed.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use serde::Serialize;

use super::{
    cluster::{Action, ClusterPeer, ClusterRule, Tier},
    model::{Direction, NodeContext, ObjectRef, PodInfo, Snapshot},
    selector::{matches, matches_opt, namespace_labels, pod_labels},
    tiers::{Ranked, ranked},
    view::{
        Peer, PodIndex, PortSpec, RuleView, classify_peer, classify_port, isolating_policies,
        named_port_numbers, policy_rules,
    },
};

/// One packet's worth of flow, as the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number: 1 ICMP, 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
}

/// The verdict of one direction: egress of the source pod, or ingress of the destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum DirectionVerdict {
    /// The address is no pod's: nothing to enforce there.
    NotAPod,
    /// No policy selects the pod for this direction.
    NotIsolated,
    /// Ingress from an address of the node: always admitted.
    FromHost,
    /// Admitted by these (policy, rule index) pairs.
    Allowed { by: Vec<(ObjectRef, usize)> },
    /// Isolated by these policies, none of which admits the flow.
    Denied { isolated_by: Vec<ObjectRef> },
    /// Decided by a ClusterNetworkPolicy rule (Accept or Deny); `passed` are the Admin
    /// rules whose Pass skipped the rest of the Admin tier before a Baseline decision.
    Cluster {
        rule: RuleRef,
        passed: Option<RuleRef>,
    },
}

/// A ClusterNetworkPolicy rule, as a verdict names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub policy: String,
    pub tier: Tier,
    pub priority: i32,
    pub index: usize,
    /// Its name, or `#index`.
    pub rule: String,
    pub action: Action,
}

impl DirectionVerdict {
    /// Whether this direction lets the flow through.
    pub fn allows(&self) -> bool {
        match self {
            DirectionVerdict::Denied { .. } => false,
            DirectionVerdict::Cluster { rule, .. } => rule.action != Action::Deny,
            _ => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowVerdict {
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
}

impl FlowVerdict {
    /// Whether both directions let the flow through.
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

/// The dry-run policies a direction's would-be verdict names: the allowing, isolating or
/// deciding policies that are dry-run.
pub fn dry_run_policies(snapshot: &Snapshot, v: &DirectionVerdict) -> Vec<String> {
    use crate::policy::mode::{cluster_policy_name, network_policy_name, policy_dry_run};
    let np = |r: &ObjectRef| {
        snapshot
            .policies
            .get(r)
            .filter(|np| policy_dry_run(&np.metadata))
            .map(|_| network_policy_name(&r.namespace, &r.name))
    };
    let cnp = |rule: &RuleRef| {
        snapshot
            .cluster_policies
            .get(rule.policy.as_str())
            .filter(|p| policy_dry_run(&p.metadata))
            .map(|_| cluster_policy_name(&rule.policy))
    };
    let mut out: Vec<String> = match v {
        DirectionVerdict::Allowed { by } => by.iter().filter_map(|(r, _)| np(r)).collect(),
        DirectionVerdict::Denied { isolated_by } => isolated_by.iter().filter_map(np).collect(),
        DirectionVerdict::Cluster { rule, passed } => {
            passed.iter().chain([rule]).filter_map(cnp).collect()
        }
        _ => Vec::new(),
    };
    out.dedup();
    out
}

/// `snapshot` without its dry-run policies (`mode::policy_dry_run`): what a flow's enforced
/// verdict reads. Its would-be verdict reads `snapshot` as it is.
pub fn enforced_only(snapshot: &Snapshot) -> Snapshot {
    let mut s = snapshot.clone();
    s.policies
        .retain(|_, np| !super::mode::policy_dry_run(&np.metadata));
    s.cluster_policies
        .retain(|_, p| !super::mode::policy_dry_run(&p.metadata));
    s
}

/// Evaluates `flow` against the policies of `snapshot` (the node only says which addresses
/// are the host's).
pub fn evaluate(snapshot: &Snapshot, node: &NodeContext, flow: &Flow) -> FlowVerdict {
    let index = PodIndex::new(snapshot, node);
    let ev = Evaluator {
        snapshot,
        index: &index,
        flow,
    };
    FlowVerdict {
        egress: ev.direction(Direction::Egress, node),
        ingress: ev.direction(Direction::Ingress, node),
    }
}

struct Evaluator<'a> {
    snapshot: &'a Snapshot,
    index: &'a PodIndex<'a>,
    flow: &'a Flow,
}

impl Evaluator<'_> {
    fn direction(&self, dir: Direction, node: &NodeContext) -> DirectionVerdict {
        let (local, remote) = match dir {
            Direction::Egress => (self.flow.src, self.flow.dst),
            Direction::Ingress => (self.flow.dst, self.flow.src),
        };
        let Some((r, pod)) = self.index.get(local) else {
            return DirectionVerdict::NotAPod;
        };
        let isolating: Vec<_> = isolating_policies(self.snapshot, r, pod, dir).collect();
        let ns = self.snapshot.namespaces.get(&*r.namespace).map(|n| &**n);
        let ns_labels = namespace_labels(&r.namespace, ns);
        let ranked = ranked(self.snapshot);
        let selecting: Vec<&Ranked<'_>> = ranked
            .iter()
            .filter(|p| p.selects(&ns_labels, pod_labels(pod)) && !p.rules(dir).is_empty())
            .collect();
        if isolating.is_empty() && selecting.is_empty() {
            return DirectionVerdict::NotIsolated;
        }
        if dir == Direction::Ingress && node.node_ips.contains(&remote) {
            return DirectionVerdict::FromHost;
        }
        let tier = |tier: Tier| {
            for p in selecting.iter().filter(|p| p.tier() == tier) {
                for rule in p.rules(dir) {
                    if self.cluster_rule_matches(rule, dir, pod, remote) {
                        return Some(RuleRef {
                            policy: p.name.to_string(),
                            tier,
                            priority: p.policy.spec.priority,
                            index: rule.index,
                            rule: rule.label(),
                            action: rule.action,
                        });
                    }
                }
            }
            None
        };
        let passed = match tier(Tier::Admin) {
            Some(rule) if rule.action != Action::Pass => {
                return DirectionVerdict::Cluster { rule, passed: None };
            }
            passed => passed,
        };
        if isolating.is_empty() {
            return match tier(Tier::Baseline) {
                Some(rule) if rule.action != Action::Pass => {
                    DirectionVerdict::Cluster { rule, passed }
                }
                _ => DirectionVerdict::NotIsolated,
            };
        }
        let mut by = Vec::new();
        for (pr, np) in &isolating {
            for (i, rule) in policy_rules(np, dir).iter().enumerate() {
                if self.rule_admits(&pr.namespace, rule, dir, pod, remote) {
                    by.push(((*pr).clone(), i));
                }
            }
        }
        if by.is_empty() {
            DirectionVerdict::Denied {
                isolated_by: isolating.into_iter().map(|(pr, _)| pr.clone()).collect(),
            }
        } else {
            DirectionVerdict::Allowed { by }
        }
    }

    /// Whether a rule of a policy in `policy_ns`, of local pod `local`, admits the flow
    /// with `remote` at the other end.
    fn rule_admits(
        &self,
        policy_ns: &str,
        rule: &RuleView<'_>,
        dir: Direction,
        local: &PodInfo,
        remote: IpAddr,
    ) -> bool {
        let peer_ok = rule.peers.is_empty()
            || rule
                .peers
                .iter()
                .any(|p| self.peer_matches(policy_ns, &classify_peer(p), remote));
        // The pod receiving the traffic, against which named ports resolve.
        let receiver = match dir {
            Direction::Ingress => Some(local),
            Direction::Egress => self.index.get(remote).map(|(_, p)| p),
        };
        peer_ok
            && (rule.ports.is_empty() || rule.ports.iter().any(|p| self.port_matches(p, receiver)))
    }

    fn peer_matches(&self, policy_ns: &str, peer: &Peer<'_>, addr: IpAddr) -> bool {
        match peer {
            Peer::Nothing => false,
            Peer::Block(b) => b.contains(addr),
            Peer::Pods { namespace, pod } => {
                let Some((r, p)) = self.index.get(addr) else {
                    return false;
                };
                let ns_ok = match namespace {
                    None => *r.namespace == *policy_ns,
                    Some(sel) => {
                        let ns_obj = self.snapshot.namespaces.get(&*r.namespace).map(|n| &**n);
                        matches(sel, &namespace_labels(&r.namespace, ns_obj))
                    }
                };
                ns_ok && matches_opt(*pod, pod_labels(p))
            }
        }
    }

    /// Whether a ClusterNetworkPolicy rule of local pod `local` matches the flow with
    /// `remote` at the other end.
    fn cluster_rule_matches(
        &self,
        rule: &ClusterRule<'_>,
        dir: Direction,
        local: &PodInfo,
        remote: IpAddr,
    ) -> bool {
        let remote_pod = self.index.get(remote);
        let peer_ok = rule.peers.iter().any(|peer| match peer {
            ClusterPeer::Namespaces(sel) => remote_pod.is_some_and(|(r, _)| {
                let ns = self.snapshot.namespaces.get(&*r.namespace).map(|n| &**n);
                matches(sel, &namespace_labels(&r.namespace, ns))
            }),
            ClusterPeer::Pods(np) => remote_pod.is_some_and(|(r, p)| {
                let ns = self.snapshot.namespaces.get(&*r.namespace).map(|n| &**n);
                matches(&np.namespace_selector, &namespace_labels(&r.namespace, ns))
                    && matches(&np.pod_selector, pod_labels(p))
            }),
            ClusterPeer::Nodes(sel) => self
                .snapshot
                .nodes
                .values()
                .any(|n| matches(sel, &n.labels) && n.addresses.contains(&remote)),
            ClusterPeer::Networks(nets) => nets.iter().any(|n| n.contains(remote)),
            ClusterPeer::DomainNames => rule.action != Action::Accept,
        });
        let receiver = match dir {
            Direction::Ingress => Some(local),
            Direction::Egress => remote_pod.map(|(_, p)| p),
        };
        let Flow { proto, dport, .. } = *self.flow;
        peer_ok
            && rule.ports.admits(proto, dport, |name, p| {
                receiver.map_or_else(Vec::new, |pod| {
                    named_port_numbers(pod, name, p).into_iter().collect()
                })
            })
    }

    fn port_matches(&self, port: &NetworkPolicyPort, receiver: Option<&PodInfo>) -> bool {
        let Flow { proto, dport, .. } = *self.flow;
        match classify_port(port) {
            PortSpec::Named(p, name) => {
                p.number() == proto
                    && receiver
                        .is_some_and(|pod| named_port_numbers(pod, &name, p).contains(&dport))
            }
            spec => spec.admits_numeric(proto, dport),
        }
    }
}
