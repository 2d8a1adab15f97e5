//! The compiler: a [`Snapshot`] and the node in, the [`Desired`] datapath state out.
//!
//! Pure and deterministic. Numbers (namespaces, identities, endpoints, policies) stay as
//! they were in the previous [`Allocations`] (see `alloc`). Pods share an identity when
//! they share namespace and labels, so selector peers become identity rules. ipBlocks (and
//! "any" peers) become a per-endpoint address partition (see `cidr`). Named ports resolve
//! against the endpoint itself for ingress; for egress against each destination pod: by
//! identity when every pod of the identity resolves the name alike, otherwise by address
//! (a /32 in the partition), so the result is exact either way.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    rc::Rc,
};

use cns_common::{IDENTITY_CIDR_BASE, IDENTITY_FIRST_POD, IDENTITY_HOST, NS_FIRST, NS_HOST};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::LabelSelector};

use super::{
    alloc::{allocate, allocate_u16},
    cidr::{AddrGrant, BlockGrant, partition},
    model::{
        Allocations, CidrKey, Desired, Direction, IdentityKey, Labels, LocalEndpoint, NodeContext,
        ObjectRef, PortMatch, PortRange, Protocol, RemoteInfo, RuleKey, Snapshot,
    },
    selector::{matches, matches_opt, namespace_labels, pod_labels},
    view::{
        Peer, PodIndex, PortSpec, isolating_policies, named_port_numbers, pod_ipv4, pod_is_active,
        policy_rules, rule_peers, rule_ports,
    },
};

/// The namespace annotation that overrides the agent's audit mode for its pods.
pub const AUDIT_ANNOTATION: &str = "cns.io/policy-audit-mode";

/// Compiles `snapshot` for `node`, keeping the numbers of `prev` where they still apply.
pub fn compile(snapshot: &Snapshot, node: &NodeContext, prev: &Allocations) -> Desired {
    let index = PodIndex::new(snapshot, node);
    let allocations = allocations(snapshot, node, &index, prev);
    let cluster = Cluster::new(snapshot, &index, &allocations);

    let mut desired = Desired::default();
    for (ip, r, pod) in index.iter() {
        if let Some(identity) = cluster.identity_of(r, pod) {
            let ns_id = allocations
                .namespaces
                .get(&r.namespace)
                .copied()
                .unwrap_or_default();
            desired.ipcache.insert(ip, RemoteInfo { identity, ns_id });
        }
    }
    for ip in &node.node_ips {
        let host = RemoteInfo {
            identity: IDENTITY_HOST,
            ns_id: NS_HOST,
        };
        desired.ipcache.insert(*ip, host);
    }

    for (r, &ep_id) in &allocations.endpoints {
        let Some(pod) = snapshot.pods.get(r) else {
            continue;
        };
        let (Some(ip), Some(identity)) = (pod_ipv4(pod), cluster.identity_of(r, pod)) else {
            continue;
        };
        let isolated = |dir| isolating_policies(snapshot, r, pod, dir).next().is_some();
        let ep = LocalEndpoint {
            ep_id,
            ip,
            identity,
            ns_id: allocations
                .namespaces
                .get(&r.namespace)
                .copied()
                .unwrap_or_default(),
            ingress_isolated: isolated(Direction::Ingress),
            egress_isolated: isolated(Direction::Egress),
            audit_override: audit_override(snapshot, &r.namespace),
        };
        for dir in [Direction::Ingress, Direction::Egress] {
            let on = match dir {
                Direction::Ingress => ep.ingress_isolated,
                Direction::Egress => ep.egress_isolated,
            };
            if on {
                let mut out = EndpointOut {
                    ep_id,
                    dir,
                    rules: &mut desired.rules,
                    blocks: Vec::new(),
                    addrs: Vec::new(),
                };
                cluster.endpoint_rules(r, pod, &mut out);
                out.finish(&mut desired.cidrs);
            }
        }
        desired.endpoints.insert(r.clone(), ep);
    }
    desired.allocations = allocations;
    desired
}

fn audit_override(snapshot: &Snapshot, namespace: &str) -> Option<bool> {
    let ns = snapshot.namespaces.get(namespace)?;
    match ns
        .metadata
        .annotations
        .as_ref()?
        .get(AUDIT_ANNOTATION)?
        .as_str()
    {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn identity_key(r: &ObjectRef, pod: &Pod) -> IdentityKey {
    IdentityKey {
        namespace: r.namespace.clone(),
        labels: pod_labels(pod).clone(),
    }
}

fn allocations(
    snapshot: &Snapshot,
    node: &NodeContext,
    index: &PodIndex<'_>,
    prev: &Allocations,
) -> Allocations {
    let namespaces: BTreeSet<String> = snapshot
        .namespaces
        .keys()
        .cloned()
        .chain(snapshot.pods.keys().map(|r| r.namespace.clone()))
        .collect();
    let active = || snapshot.pods.iter().filter(|(_, p)| pod_is_active(p));
    let identities: BTreeSet<IdentityKey> = active().map(|(r, p)| identity_key(r, p)).collect();
    let endpoints: BTreeSet<ObjectRef> = active()
        .filter(|(_, p)| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.node_name.as_str())
        })
        .filter(|(r, p)| index.owns(r, p))
        .map(|(r, _)| r.clone())
        .collect();
    let policies: BTreeSet<ObjectRef> = snapshot.policies.keys().cloned().collect();
    Allocations {
        namespaces: allocate_u16(&namespaces, &prev.namespaces, NS_FIRST, u16::MAX),
        identities: allocate(
            &identities,
            &prev.identities,
            IDENTITY_FIRST_POD,
            IDENTITY_CIDR_BASE - 1,
        ),
        endpoints: allocate(&endpoints, &prev.endpoints, 1, u32::MAX),
        policies: allocate(&policies, &prev.policies, 1, u32::MAX),
    }
}

/// What the compiler looks things up in.
struct Cluster<'a> {
    snapshot: &'a Snapshot,
    index: &'a PodIndex<'a>,
    alloc: &'a Allocations,
    /// Labels of every namespace that has identities.
    ns_labels: BTreeMap<&'a str, Labels>,
    /// The addressed pods (those in the IP cache) of each identity.
    members: BTreeMap<u32, Vec<(Ipv4Addr, &'a Pod)>>,
    /// [`Cluster::select`]'s answers: every local endpoint a policy selects, and every port
    /// of a rule, asks the same question, and each answer is a scan of all identities.
    selected: RefCell<HashMap<SelectKey, Rc<[u32]>>>,
}

/// A selector peer as [`Cluster::select`] sees it: the policy's namespace and the selectors.
type SelectKey = (String, Option<String>, Option<String>);

impl<'a> Cluster<'a> {
    fn new(snapshot: &'a Snapshot, index: &'a PodIndex<'a>, alloc: &'a Allocations) -> Self {
        let ns_labels = alloc
            .identities
            .keys()
            .map(|k| k.namespace.as_str())
            .map(|ns| (ns, namespace_labels(ns, snapshot.namespaces.get(ns).map(|n| &**n))))
            .collect();
        let mut cluster = Self {
            snapshot,
            index,
            alloc,
            ns_labels,
            members: BTreeMap::new(),
            selected: RefCell::default(),
        };
        let mut members: BTreeMap<u32, Vec<(Ipv4Addr, &'a Pod)>> = BTreeMap::new();
        for (ip, r, pod) in index.iter() {
            if let Some(id) = cluster.identity_of(r, pod) {
                members.entry(id).or_default().push((ip, pod));
            }
        }
        cluster.members = members;
        cluster
    }

    fn identity_of(&self, r: &ObjectRef, pod: &Pod) -> Option<u32> {
        self.alloc.identities.get(&identity_key(r, pod)).copied()
    }

    /// The identities a selector peer of a policy in `policy_ns` designates.
    fn select(
        &self,
        policy_ns: &str,
        namespace: Option<&LabelSelector>,
        pod: Option<&LabelSelector>,
    ) -> Rc<[u32]> {
        let key = (
            policy_ns.to_owned(),
            namespace.map(|s| format!("{s:?}")),
            pod.map(|s| format!("{s:?}")),
        );
        if let Some(ids) = self.selected.borrow().get(&key) {
            return ids.clone();
        }
        let ids: Rc<[u32]> = self.scan(policy_ns, namespace, pod).into();
        self.selected.borrow_mut().insert(key, ids.clone());
        ids
    }

    fn scan(
        &self,
        policy_ns: &str,
        namespace: Option<&LabelSelector>,
        pod: Option<&LabelSelector>,
    ) -> Vec<u32> {
        self.alloc
            .identities
            .iter()
            .filter(|(key, _)| match namespace {
                None => key.namespace == policy_ns,
                Some(sel) => self
                    .ns_labels
                    .get(key.namespace.as_str())
                    .is_some_and(|l| matches(sel, l)),
            })
            .filter(|(key, _)| matches_opt(pod, &key.labels))
            .map(|(_, id)| *id)
            .collect()
    }

    /// Collects everything endpoint pod `r` admits in `out.dir`.
    fn endpoint_rules(&self, r: &ObjectRef, pod: &Pod, out: &mut EndpointOut<'_>) {
        for (pr, np) in isolating_policies(self.snapshot, r, pod, out.dir) {
            let Some(&policy) = self.alloc.policies.get(pr) else {
                continue;
            };
            for rule in policy_rules(np, out.dir) {
                let ports = rule_ports(&rule);
                for peer in rule_peers(&rule) {
                    for spec in &ports {
                        self.grant(&pr.namespace, pod, policy, &peer, spec, out);
                    }
                }
            }
        }
    }

    /// One (peer, port) pair of a rule of policy id `policy` (in namespace `policy_ns`).
    fn grant(
        &self,
        policy_ns: &str,
        endpoint: &Pod,
        policy: u32,
        peer: &Peer<'_>,
        spec: &PortSpec,
        out: &mut EndpointOut<'_>,
    ) {
        let fixed: Vec<PortMatch> = match spec {
            PortSpec::All => vec![PortMatch {
                proto: None,
                ports: None,
            }],
            PortSpec::Proto(p) => vec![PortMatch {
                proto: Some(*p),
                ports: None,
            }],
            PortSpec::Range(p, r) => vec![PortMatch {
                proto: Some(*p),
                ports: Some(*r),
            }],
            PortSpec::Nothing => return,
            PortSpec::Named(p, name) => match out.dir {
                Direction::Ingress => named_port_numbers(endpoint, name, *p)
                    .into_iter()
                    .map(|n| single(*p, n))
                    .collect(),
                Direction::Egress => {
                    return self.grant_named_egress(policy_ns, policy, peer, *p, name, out);
                }
            },
        };
        match peer {
            Peer::Nothing => {}
            Peer::Pods { namespace, pod } => {
                for &id in self.select(policy_ns, *namespace, *pod).iter() {
                    for m in &fixed {
                        out.rule(id, *m, policy);
                    }
                }
            }
            Peer::Block(block) => {
                for m in fixed {
                    out.blocks.push(BlockGrant {
                        block: block.clone(),
                        ports: m,
                        policy,
                    });
                }
            }
        }
    }

    /// An egress named port: resolved per destination pod.
    fn grant_named_egress(
        &self,
        policy_ns: &str,
        policy: u32,
        peer: &Peer<'_>,
        proto: Protocol,
        name: &str,
        out: &mut EndpointOut<'_>,
    ) {
        // (identity, address, port numbers) of each destination pod.
        let mut dests: Vec<(u32, Ipv4Addr, BTreeSet<u16>)> = Vec::new();
        match peer {
            Peer::Nothing => {}
            Peer::Pods { namespace, pod } => {
                for &id in self.select(policy_ns, *namespace, *pod).iter() {
                    for (ip, p) in self.members.get(&id).into_iter().flatten() {
                        dests.push((id, *ip, named_port_numbers(p, name, proto)));
                    }
                }
            }
            Peer::Block(block) => {
                for (ip, r, p) in self.index.iter() {
                    if let (true, Some(id)) = (block.contains(ip), self.identity_of(r, p)) {
                        dests.push((id, ip, named_port_numbers(p, name, proto)));
                    }
                }
            }
        }
        let mut by_identity: BTreeMap<u32, Vec<(Ipv4Addr, BTreeSet<u16>)>> = BTreeMap::new();
        for (id, ip, ports) in dests {
            by_identity.entry(id).or_default().push((ip, ports));
        }
        for (id, dests) in by_identity {
            let all_members = self.members.get(&id).map_or(0, Vec::len) == dests.len();
            let alike = dests.windows(2).all(|w| w[0].1 == w[1].1);
            if all_members && alike {
                for n in dests.first().map(|d| d.1.clone()).unwrap_or_default() {
                    out.rule(id, single(proto, n), policy);
                }
            } else {
                for (ip, ports) in dests {
                    for n in ports {
                        out.addrs.push(AddrGrant {
                            ip,
                            ports: single(proto, n),
                            policy,
                        });
                    }
                }
            }
        }
    }
}

fn single(proto: Protocol, port: u16) -> PortMatch {
    PortMatch {
        proto: Some(proto),
        ports: Some(PortRange {
            start: port,
            end: port,
        }),
    }
}

/// What one endpoint admits in one direction, as it is collected.
struct EndpointOut<'d> {
    ep_id: u32,
    dir: Direction,
    rules: &'d mut BTreeMap<RuleKey, u32>,
    blocks: Vec<BlockGrant>,
    addrs: Vec<AddrGrant>,
}

impl EndpointOut<'_> {
    fn rule(&mut self, identity: u32, ports: PortMatch, policy: u32) {
        let key = RuleKey {
            ep_id: self.ep_id,
            dir: self.dir,
            identity,
            ports,
        };
        let e = self.rules.entry(key).or_insert(policy);
        *e = (*e).min(policy);
    }

    /// Turns the collected address grants into partition entries and their rules.
    fn finish(mut self, cidrs: &mut BTreeMap<CidrKey, u32>) {
        let part = partition(&self.blocks, &self.addrs);
        let set_identity =
            |i: usize| IDENTITY_CIDR_BASE.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        for (net, i) in &part.prefixes {
            let key = CidrKey {
                ep_id: self.ep_id,
                dir: self.dir,
                net: *net,
            };
            cidrs.insert(key, set_identity(*i));
        }
        for (i, set) in part.sets.iter().enumerate() {
            for (ports, policy) in set {
                self.rule(set_identity(i), *ports, *policy);
            }
        }
    }
}
