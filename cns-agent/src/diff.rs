//! `cns-agent policy diff`: what would change in enforcement if other manifests replaced the
//! policy source, as `kubectl diff` does for objects.
//!
//! Both sides go through the agent's own compiler; [`endpoint_states`] then reads each
//! compiled [`Desired`] back into terms that do not depend on the compiler's numbering
//! (identities as namespace + labels, ipBlock sets as the smallest list of CIDRs they cover,
//! policy ids as names), and [`compare`] lists, per endpoint, isolation, mode and the rules
//! added and removed, plus the policies added, changed and removed. All of that is pure;
//! [`command`] is the I/O (reading directories, asking the agent for its [`LiveState`]) and
//! [`render`] the text output.

mod cidrs;
pub mod command;
mod live;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use cns_common::IDENTITY_CIDR_BASE;
use ipnetwork::IpNetwork;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use serde::Serialize;

use self::cidrs::{cidrs_text, merge_ranges};
pub use self::cidrs::{lpm_ranges, range_to_cidrs};
pub use self::live::LiveState;
use crate::policy::{
    AuditMode,
    incremental::compile,
    model::{
        Allocations, Desired, Direction, IdentityKey, NodeContext, ObjectRef, PortMatch, Protocol,
        RuleValue, Snapshot,
    },
    view,
};

/// Who a rule admits, without the compiler's numbers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKey {
    /// The pods of one identity.
    Pods(IdentityKey),
    /// The addresses of ipBlocks (and named-port destinations resolved by address), as the
    /// smallest list of CIDRs covering exactly them.
    Cidrs(Vec<IpNetwork>),
    /// An identity the compiler's allocations do not name (not expected).
    Identity(u32),
}

impl std::fmt::Display for PeerKey {
    /// As `policy show` prints peers: `pods ns:k=v,...`, `cidrs 10.0.0.0/8,...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Pods(k) => {
                let labels: Vec<String> =
                    k.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "pods {}:{}", k.namespace, labels.join(","))
            }
            PeerKey::Cidrs(nets) => write!(f, "cidrs {}", cidrs_text(nets)),
            PeerKey::Identity(id) => write!(f, "identity:{id}"),
        }
    }
}

/// A port match as `policy show` prints it: `any`, `TCP`, `UDP 53`, `TCP 8000-8100`.
pub fn ports_name(m: &PortMatch) -> String {
    let proto = |p: Protocol| match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    match (m.proto, m.ports) {
        (None, _) => "any".into(),
        (Some(p), None) => proto(p).into(),
        (Some(p), Some(r)) if r.start == r.end => format!("{} {}", proto(p), r.start),
        (Some(p), Some(r)) => format!("{} {}-{}", proto(p), r.start, r.end),
    }
}

/// What one endpoint enforces in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionState {
    pub isolated: bool,
    /// Each allowed (peer, ports), with the policies the compiler credits for it.
    pub rules: BTreeMap<(PeerKey, PortMatch), BTreeSet<String>>,
}

/// What one local endpoint enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointState {
    /// `audit` or `blocking` from the namespace annotation, or `global` (the agent's mode).
    pub mode: &'static str,
    pub ingress: DirectionState,
    pub egress: DirectionState,
}

impl EndpointState {
    fn direction(&self, dir: Direction) -> &DirectionState {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Reads a compiled state back per endpoint, in terms independent of its numbering.
pub fn endpoint_states(desired: &Desired) -> BTreeMap<ObjectRef, EndpointState> {
    let a = &desired.allocations;
    let identities: BTreeMap<u32, &IdentityKey> =
        a.identities.iter().map(|(k, id)| (*id, k)).collect();
    let policies: BTreeMap<u32, String> = a
        .policies
        .iter()
        .map(|(r, id)| (*id, r.to_string()))
        .collect();
    let policy_name = |id: u32| {
        policies
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("policy-id:{id}"))
    };
    // Every policy and rule a value names: the allowing NetworkPolicy, the first rule of
    // each tier (with its action).
    let names_of =
        |dir: Direction, v: &RuleValue| v.names(dir, &desired.cluster_rules, policy_name);
    let pods: BTreeMap<u32, &ObjectRef> = desired
        .endpoints
        .iter()
        .map(|(r, ep)| (ep.ep_id, r))
        .collect();

    let mut out: BTreeMap<ObjectRef, EndpointState> = desired
        .endpoints
        .iter()
        .map(|(r, ep)| {
            let state = EndpointState {
                mode: ep.audit_override.map_or("global", AuditMode::as_str),
                ingress: DirectionState {
                    isolated: ep.ingress_isolated,
                    rules: BTreeMap::new(),
                },
                egress: DirectionState {
                    isolated: ep.egress_isolated,
                    rules: BTreeMap::new(),
                },
            };
            (r.clone(), state)
        })
        .collect();

    // ipBlock-set rules and prefixes, per (endpoint, direction), resolved below.
    type Sets = BTreeMap<PortMatch, (BTreeSet<u32>, BTreeSet<String>)>;
    let mut sets: BTreeMap<(u32, Direction), Sets> = BTreeMap::new();
    for (key, policy) in &desired.rules {
        if key.identity >= IDENTITY_CIDR_BASE {
            let (ids, names) = sets
                .entry((key.ep_id, key.dir))
                .or_default()
                .entry(key.ports)
                .or_default();
            ids.insert(key.identity);
            names.extend(names_of(key.dir, policy));
            continue;
        }
        let Some(state) = pods.get(&key.ep_id).and_then(|r| out.get_mut(*r)) else {
            continue;
        };
        let peer = identities
            .get(&key.identity)
            .map_or(PeerKey::Identity(key.identity), |k| {
                PeerKey::Pods((*k).clone())
            });
        let dir = match key.dir {
            Direction::Ingress => &mut state.ingress,
            Direction::Egress => &mut state.egress,
        };
        dir.rules
            .entry((peer, key.ports))
            .or_default()
            .extend(names_of(key.dir, policy));
    }
    // Per endpoint, direction and family (ranges never mix families).
    let mut prefixes: BTreeMap<(u32, Direction, bool), Vec<(IpNetwork, u32)>> = BTreeMap::new();
    for (key, &set) in &desired.cidrs {
        prefixes
            .entry((key.ep_id, key.dir, key.net.is_ipv6()))
            .or_default()
            .push((key.net, set));
    }
    for ((ep_id, dir), by_ports) in sets {
        let Some(state) = pods.get(&ep_id).and_then(|r| out.get_mut(*r)) else {
            continue;
        };
        let ranges = [false, true].map(|v6| {
            let prefixes = prefixes.get(&(ep_id, dir, v6));
            (v6, lpm_ranges(prefixes.map_or(&[][..], Vec::as_slice)))
        });
        let dir = match dir {
            Direction::Ingress => &mut state.ingress,
            Direction::Egress => &mut state.egress,
        };
        for (ports, (ids, names)) in by_ports {
            let mut nets: Vec<IpNetwork> = Vec::new();
            for (v6, ranges) in &ranges {
                let covered = merge_ranges(
                    ranges
                        .iter()
                        .filter(|(_, _, id)| ids.contains(id))
                        .map(|(s, e, _)| (*s, *e)),
                );
                nets.extend(
                    covered
                        .into_iter()
                        .flat_map(|(s, e)| range_to_cidrs(*v6, s, e)),
                );
            }
            if !nets.is_empty() {
                dir.rules
                    .entry((PeerKey::Cidrs(nets), ports))
                    .or_default()
                    .extend(names);
            }
        }
    }
    out
}

/// Compiles `snapshot` for `node` and reads the result per endpoint. Without a node, every
/// pod counts as local (as if one node ran them all): the whole cluster's enforcement.
pub fn states_of(
    snapshot: &Snapshot,
    node: Option<&NodeContext>,
) -> BTreeMap<ObjectRef, EndpointState> {
    let desired = match node {
        Some(node) => compile(snapshot, node, &Allocations::default()),
        None => {
            const EVERY_NODE: &str = "(every node)";
            let mut all = snapshot.clone();
            for pod in all.pods.values_mut() {
                std::sync::Arc::make_mut(pod).node_name = Some(EVERY_NODE.into());
            }
            let node = NodeContext {
                node_name: EVERY_NODE.into(),
                ..NodeContext::default()
            };
            compile(&all, &node, &Allocations::default())
        }
    };
    endpoint_states(&desired)
}

/// How DIR's objects take the place of the current ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// DIR's NetworkPolicies replace all current ones (a policy missing from DIR is
    /// removed); its Namespaces and Pods replace the current ones when it has any, else the
    /// current ones stay (so a directory of policies is diffed against the real pods).
    Replace,
    /// DIR's objects are added, replacing those of the same kind, namespace and name;
    /// nothing is removed (like `kubectl apply`).
    Merge,
}

/// The snapshot the agent would have if `dir` became its source.
pub fn combine(current: &Snapshot, dir: Snapshot, apply: Apply) -> Snapshot {
    match apply {
        Apply::Replace => Snapshot {
            namespaces: if dir.namespaces.is_empty() {
                current.namespaces.clone()
            } else {
                dir.namespaces
            },
            pods: if dir.pods.is_empty() {
                current.pods.clone()
            } else {
                dir.pods
            },
            policies: dir.policies,
            cluster_policies: dir.cluster_policies,
            nodes: if dir.nodes.is_empty() {
                current.nodes.clone()
            } else {
                dir.nodes
            },
        },
        Apply::Merge => {
            let mut out = current.clone();
            out.namespaces.extend(dir.namespaces);
            out.pods.extend(dir.pods);
            out.policies.extend(dir.policies);
            out.cluster_policies.extend(dir.cluster_policies);
            out.nodes.extend(dir.nodes);
            out
        }
    }
}

/// A value before and after; `None` where the endpoint does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    pub from: Option<T>,
    pub to: Option<T>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// `pods NAMESPACE:LABELS` or `cidrs CIDR,...`.
    pub peer: String,
    /// `any`, `TCP`, `UDP 53`, `TCP 8000-8100`.
    pub ports: String,
    /// The policies credited for it.
    pub policies: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionDiff {
    /// Whether the endpoint is isolated in this direction after the change (before it, for
    /// a removed endpoint).
    pub isolated: bool,
    /// Set when isolation changes.
    pub isolation_change: Option<Change<bool>>,
    pub rules_added: Vec<Rule>,
    pub rules_removed: Vec<Rule>,
}

impl DirectionDiff {
    pub fn is_empty(&self) -> bool {
        self.isolation_change.is_none()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointDiff {
    /// `NAMESPACE/POD`.
    pub pod: String,
    /// `added` (a new endpoint), `removed`, or `changed`.
    pub change: &'static str,
    /// Set when the mode changes: `audit`/`blocking` (namespace annotation) or `global`.
    pub mode: Option<Change<&'static str>>,
    pub ingress: DirectionDiff,
    pub egress: DirectionDiff,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub policies_added: Vec<String>,
    pub policies_changed: Vec<String>,
    pub policies_removed: Vec<String>,
    /// Endpoints whose enforcement differs, by pod.
    pub endpoints: Vec<EndpointDiff>,
    /// Endpoints on either side.
    pub endpoints_compared: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.policies_added.is_empty()
            && self.policies_changed.is_empty()
            && self.policies_removed.is_empty()
            && self.endpoints.is_empty()
    }
}

fn rules_only_in(a: &DirectionState, b: &DirectionState) -> Vec<Rule> {
    a.rules
        .iter()
        .filter(|(k, _)| !b.rules.contains_key(k))
        .map(|((peer, ports), policies)| Rule {
            peer: peer.to_string(),
            ports: ports_name(ports),
            policies: policies.iter().cloned().collect(),
        })
        .collect()
}

/// A policy's spec with the defaults the API server fills in (`policyTypes`, `protocol:
/// TCP`, `podSelector: {}`) and empty lists as absent, so that a manifest and the object the
/// API returns for it compare equal.
fn with_defaults(np: &NetworkPolicy) -> NetworkPolicySpec {
    fn none_if_empty<T>(v: &mut Option<Vec<T>>) {
        if v.as_ref().is_some_and(Vec::is_empty) {
            *v = None;
        }
    }
    fn selector(s: &mut LabelSelector) {
        if s.match_labels.as_ref().is_some_and(BTreeMap::is_empty) {
            s.match_labels = None;
        }
        none_if_empty(&mut s.match_expressions);
    }
    fn peers_and_ports(
        peers: &mut Option<Vec<NetworkPolicyPeer>>,
        ports: &mut Option<Vec<NetworkPolicyPort>>,
    ) {
        none_if_empty(peers);
        none_if_empty(ports);
        for p in peers.iter_mut().flatten() {
            p.namespace_selector.iter_mut().for_each(selector);
            p.pod_selector.iter_mut().for_each(selector);
        }
        for p in ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
    let mut spec = np.spec.clone().unwrap_or_default();
    let types: Vec<String> = [Direction::Ingress, Direction::Egress]
        .into_iter()
        .filter(|d| view::policy_applies(np, *d))
        .map(|d| match d {
            Direction::Ingress => "Ingress".to_owned(),
            Direction::Egress => "Egress".to_owned(),
        })
        .collect();
    spec.policy_types = Some(types);
    selector(spec.pod_selector.get_or_insert_with(LabelSelector::default));
    none_if_empty(&mut spec.ingress);
    none_if_empty(&mut spec.egress);
    for r in spec.ingress.iter_mut().flatten() {
        peers_and_ports(&mut r.from, &mut r.ports);
    }
    for r in spec.egress.iter_mut().flatten() {
        peers_and_ports(&mut r.to, &mut r.ports);
    }
    spec
}

/// Policies added, changed (spec up to defaults, or labels) and removed.
fn policy_changes(old: &Snapshot, new: &Snapshot) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (r, np) in &new.policies {
        match old.policies.get(r) {
            None => added.push(r.to_string()),
            Some(o)
                if with_defaults(o) != with_defaults(np)
                    || o.metadata.labels.clone().unwrap_or_default()
                        != np.metadata.labels.clone().unwrap_or_default() =>
            {
                changed.push(r.to_string());
            }
            Some(_) => {}
        }
    }
    removed.extend(
        old.policies
            .keys()
            .filter(|r| !new.policies.contains_key(*r))
            .map(ToString::to_string),
    );
    (added, changed, removed)
}

/// What differs between two enforcement states (`old_snapshot`/`new_snapshot` give the
/// policy changes). Rules are compared by peer and ports: a rule that another policy now
/// allows is not a change of enforcement, only of credit.
pub fn compare(
    old_snapshot: &Snapshot,
    old: &BTreeMap<ObjectRef, EndpointState>,
    new_snapshot: &Snapshot,
    new: &BTreeMap<ObjectRef, EndpointState>,
) -> Diff {
    let (policies_added, policies_changed, policies_removed) =
        policy_changes(old_snapshot, new_snapshot);
    let empty = EndpointState::default();
    let pods: BTreeSet<&ObjectRef> = old.keys().chain(new.keys()).collect();
    let endpoints_compared = pods.len();
    let mut endpoints = Vec::new();
    for pod in pods {
        let (before, after) = (old.get(pod), new.get(pod));
        let change = match (before, after) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
        let direction = |dir: Direction| {
            let (bd, ad) = (b.direction(dir), a.direction(dir));
            let isolation_change = (before.map(|_| bd.isolated) != after.map(|_| ad.isolated))
                .then(|| Change {
                    from: before.map(|_| bd.isolated),
                    to: after.map(|_| ad.isolated),
                });
            DirectionDiff {
                isolation_change,
                isolated: if after.is_some() {
                    ad.isolated
                } else {
                    bd.isolated
                },
                rules_added: rules_only_in(ad, bd),
                rules_removed: rules_only_in(bd, ad),
            }
        };
        let mode = (before.map(|s| s.mode) != after.map(|s| s.mode)).then(|| Change {
            from: before.map(|s| s.mode),
            to: after.map(|s| s.mode),
        });
        let d = EndpointDiff {
            pod: pod.to_string(),
            change,
            mode,
            ingress: direction(Direction::Ingress),
            egress: direction(Direction::Egress),
        };
        if d.mode.is_some() || !d.ingress.is_empty() || !d.egress.is_empty() {
            endpoints.push(d);
        }
    }
    Diff {
        policies_added,
        policies_changed,
        policies_removed,
        endpoints,
        endpoints_compared,
    }
}

#[cfg(test)]
mod tests;
