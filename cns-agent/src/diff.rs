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

pub mod command;
pub mod render;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use cns_common::IDENTITY_CIDR_BASE;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::{
    core::v1::{Container, ContainerPort, Namespace, Pod, PodSpec, PodStatus},
    networking::v1::NetworkPolicy,
};
use serde::{Deserialize, Serialize};

use crate::{
    history,
    policy::{
        compile::{AUDIT_ANNOTATION, compile},
        model::{
            Allocations, Desired, Direction, IdentityKey, NodeContext, ObjectRef, PortMatch,
            Protocol, Snapshot,
        },
    },
};

/// Who a rule admits, without the compiler's numbers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKey {
    /// The pods of one identity.
    Pods(IdentityKey),
    /// The addresses of ipBlocks (and named-port destinations resolved by address), as the
    /// smallest list of CIDRs covering exactly them.
    Cidrs(Vec<Ipv4Network>),
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

/// Sorted disjoint CIDRs as a list, or as `NET except A,B` (as an ipBlock is written)
/// when that is shorter: `0.0.0.0/0 except 10.0.0.0/8` rather than eight prefixes.
fn cidrs_text(nets: &[Ipv4Network]) -> String {
    let join = |nets: &[Ipv4Network]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let (Some(first), Some(last)) = (nets.first(), nets.last()) else {
        return String::new();
    };
    let (start, end) = (bounds(*first).0, bounds(*last).1);
    // The smallest prefix holding them all, and what of it they leave out.
    let host_bits = 64 - (start ^ (end - 1)).leading_zeros();
    let outer_start = start >> host_bits << host_bits;
    let outer_end = outer_start + (1 << host_bits);
    let mut gaps = Vec::new();
    let mut pos = outer_start;
    for n in nets {
        let (s, e) = bounds(*n);
        gaps.extend(range_to_cidrs(pos, s));
        pos = e;
    }
    gaps.extend(range_to_cidrs(pos, outer_end));
    match range_to_cidrs(outer_start, outer_end).as_slice() {
        [outer] if !gaps.is_empty() && gaps.len() + 1 < nets.len() => {
            format!("{outer} except {}", join(&gaps))
        }
        _ => join(nets),
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
                mode: match ep.audit_override {
                    Some(true) => "audit",
                    Some(false) => "blocking",
                    None => "global",
                },
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
    for (key, &policy) in &desired.rules {
        if key.identity >= IDENTITY_CIDR_BASE {
            let (ids, names) = sets
                .entry((key.ep_id, key.dir))
                .or_default()
                .entry(key.ports)
                .or_default();
            ids.insert(key.identity);
            names.insert(policy_name(policy));
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
            .insert(policy_name(policy));
    }
    let mut prefixes: BTreeMap<(u32, Direction), Vec<(Ipv4Network, u32)>> = BTreeMap::new();
    for (key, &set) in &desired.cidrs {
        prefixes
            .entry((key.ep_id, key.dir))
            .or_default()
            .push((key.net, set));
    }
    for ((ep_id, dir), by_ports) in sets {
        let Some(state) = pods.get(&ep_id).and_then(|r| out.get_mut(*r)) else {
            continue;
        };
        let ranges = lpm_ranges(prefixes.get(&(ep_id, dir)).map_or(&[][..], Vec::as_slice));
        let dir = match dir {
            Direction::Ingress => &mut state.ingress,
            Direction::Egress => &mut state.egress,
        };
        for (ports, (ids, names)) in by_ports {
            let covered = merge_ranges(
                ranges
                    .iter()
                    .filter(|(_, _, id)| ids.contains(id))
                    .map(|(s, e, _)| (*s, *e)),
            );
            let nets: Vec<Ipv4Network> = covered
                .into_iter()
                .flat_map(|(s, e)| range_to_cidrs(s, e))
                .collect();
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

/// The first address of `net` and one past its last, as integers.
fn bounds(net: Ipv4Network) -> (u64, u64) {
    let start = u64::from(u32::from(net.network()));
    (start, start + (1u64 << (32 - u32::from(net.prefix()))))
}

/// What a longest-prefix lookup over `prefixes` answers, as disjoint address ranges
/// `[start, end)` with their value, in address order (adjacent equal values merged).
/// Prefixes must be distinct; any two are nested or disjoint, as prefixes are.
pub fn lpm_ranges(prefixes: &[(Ipv4Network, u32)]) -> Vec<(u64, u64, u32)> {
    let mut sorted: Vec<(u64, u64, u32)> = prefixes
        .iter()
        .map(|(net, v)| {
            let (s, e) = bounds(*net);
            (s, e, *v)
        })
        .collect();
    // By start, the wider prefix first: a prefix comes after every prefix containing it.
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    let mut emit = |s: u64, e: u64, v: u32| {
        if s >= e {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == v => last.1 = e,
            _ => out.push((s, e, v)),
        }
    };
    // The prefixes containing the current position, innermost last.
    let mut open: Vec<(u64, u64, u32)> = Vec::new();
    let mut pos = 0u64;
    for p in sorted {
        while let Some(&(_, end, v)) = open.last() {
            if end > p.0 {
                break;
            }
            emit(pos, end, v);
            pos = end;
            open.pop();
        }
        if let Some(&(_, _, v)) = open.last() {
            emit(pos, p.0, v);
        }
        pos = p.0;
        open.push(p);
    }
    while let Some((_, end, v)) = open.pop() {
        emit(pos, end, v);
        pos = end;
    }
    out
}

/// Sorted, disjoint ranges merged where they touch.
fn merge_ranges(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The smallest list of CIDRs covering exactly `[start, end)`.
pub fn range_to_cidrs(mut start: u64, end: u64) -> Vec<Ipv4Network> {
    let mut out = Vec::new();
    while start < end {
        let mut bits = start.trailing_zeros().min(32);
        while (1u64 << bits) > end - start {
            bits -= 1;
        }
        let addr = Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX));
        let prefix = u8::try_from(32 - bits).unwrap_or(32);
        if let Ok(net) = Ipv4Network::new(addr, prefix) {
            out.push(net);
        }
        start += 1u64 << bits;
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
                pod.spec.get_or_insert_with(PodSpec::default).node_name = Some(EVERY_NODE.into());
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
        },
        Apply::Merge => {
            let mut out = current.clone();
            out.namespaces.extend(dir.namespaces);
            out.pods.extend(dir.pods);
            out.policies.extend(dir.policies);
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
        history::policy_changes(old_snapshot, new_snapshot);
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

/// The agent's live snapshot and node, as the control socket sends them to `policy diff`:
/// trimmed to what the compiler reads (labels, the audit annotation, pod addresses, node
/// and container ports, whole policies without managed fields).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LiveState {
    /// The agent's source (`manifests:DIR`, `kubernetes`).
    pub source: String,
    pub node_name: String,
    pub node_ips: BTreeSet<Ipv4Addr>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// By namespace, then name.
    pub pods: BTreeMap<String, BTreeMap<String, Pod>>,
    /// By namespace, then name.
    pub policies: BTreeMap<String, BTreeMap<String, NetworkPolicy>>,
}

impl LiveState {
    pub fn new(snapshot: &Snapshot, node: &NodeContext, source: String) -> Self {
        let mut out = Self {
            source,
            node_name: node.node_name.clone(),
            node_ips: node.node_ips.clone(),
            ..Self::default()
        };
        for (name, ns) in &snapshot.namespaces {
            let mut slim = Namespace::default();
            slim.metadata.name = ns.metadata.name.clone();
            slim.metadata.labels = ns.metadata.labels.clone();
            slim.metadata.annotations = ns
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(AUDIT_ANNOTATION))
                .map(|v| [(AUDIT_ANNOTATION.to_owned(), v.clone())].into());
            out.namespaces.insert(name.clone(), slim);
        }
        for (r, pod) in &snapshot.pods {
            out.pods
                .entry(r.namespace.clone())
                .or_default()
                .insert(r.name.clone(), slim_pod(pod));
        }
        for (r, np) in &snapshot.policies {
            let mut np = np.clone();
            np.metadata.managed_fields = None;
            out.policies
                .entry(r.namespace.clone())
                .or_default()
                .insert(r.name.clone(), np);
        }
        out
    }

    pub fn into_parts(self) -> (Snapshot, NodeContext) {
        let snapshot = Snapshot {
            namespaces: self.namespaces,
            pods: flatten(self.pods),
            policies: flatten(self.policies),
        };
        let node = NodeContext {
            node_name: self.node_name,
            node_ips: self.node_ips,
        };
        (snapshot, node)
    }
}

/// Namespace -> name -> object, keyed by [`ObjectRef`].
fn flatten<T>(m: BTreeMap<String, BTreeMap<String, T>>) -> BTreeMap<ObjectRef, T> {
    m.into_iter()
        .flat_map(|(ns, objs)| {
            objs.into_iter()
                .map(move |(name, o)| (ObjectRef::new(ns.clone(), name), o))
        })
        .collect()
}

/// A pod with only what the compiler reads.
fn slim_pod(pod: &Pod) -> Pod {
    let mut out = Pod::default();
    out.metadata.name = pod.metadata.name.clone();
    out.metadata.namespace = pod.metadata.namespace.clone();
    out.metadata.labels = pod.metadata.labels.clone();
    out.spec = pod.spec.as_ref().map(|s| PodSpec {
        node_name: s.node_name.clone(),
        host_network: s.host_network,
        containers: s
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                ports: c.ports.as_ref().map(|ports| {
                    ports
                        .iter()
                        .map(|p| ContainerPort {
                            name: p.name.clone(),
                            container_port: p.container_port,
                            protocol: p.protocol.clone(),
                            ..ContainerPort::default()
                        })
                        .collect()
                }),
                ..Container::default()
            })
            .collect(),
        ..PodSpec::default()
    });
    out.status = pod.status.as_ref().map(|s| PodStatus {
        phase: s.phase.clone(),
        pod_ip: s.pod_ip.clone(),
        pod_ips: s.pod_ips.clone(),
        ..PodStatus::default()
    });
    out
}

#[cfg(test)]
mod tests;
