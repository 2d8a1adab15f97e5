//! The policy model: what the compiler takes (a [`Snapshot`] of k8s-openapi objects, pods as
//! [`PodInfo`], and the
//! [`NodeContext`]) and what it gives ([`Desired`]), in domain terms and host byte order.
//! `crate::encode` turns a `Desired` into the `cns-common` map keys; nothing here knows
//! about BPF.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    sync::Arc,
};

use ipnetwork::IpNetwork;
use k8s_openapi::api::{
    core::v1::{Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus},
    networking::v1::NetworkPolicy,
};
use serde::Serialize;

pub use super::cluster::{ClusterNetworkPolicy, NodeInfo};
pub use super::labels::{Labels, intern};

/// A namespaced object's name. Every index of the compiler and the sources keys pods by
/// it: shared strings make a copy two reference counts (the namespace interned, so one
/// string serves all its pods), not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    #[serde(serialize_with = "serialize_shared")]
    pub namespace: Arc<str>,
    #[serde(serialize_with = "serialize_shared")]
    pub name: Arc<str>,
}

impl ObjectRef {
    pub fn new(namespace: impl AsRef<str>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: intern(namespace.as_ref()),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the agent reads of a pod (its namespace and name are the key it is filed under).
/// A k8s-openapi `Pod` is over 2 KB before its containers (over 2 KB each), even emptied;
/// every pod of the cluster is kept, so sources convert each (validated) `Pod` into this:
/// addresses parsed, and the strings pods repeat (node, phase, port names) interned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Shared with the compiler's identity keys (`IdentityKey::labels`).
    pub labels: Arc<Labels>,
    /// `spec.nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// The ports of every container (`spec.containers[*].ports`), in order.
    pub ports: Box<[PodPort]>,
    /// `status.phase`.
    pub phase: Option<Arc<str>>,
    /// `status.podIP` (validated: a pod whose address does not parse is rejected).
    pub pod_ip: Option<IpAddr>,
    /// `status.podIPs[*].ip`.
    pub pod_ips: Box<[IpAddr]>,
}

/// A container port (`spec.containers[*].ports[*]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPort {
    pub name: Option<Arc<str>>,
    pub container_port: i32,
    pub protocol: Option<Arc<str>>,
}

impl From<&Pod> for PodInfo {
    /// An address that does not parse is left out (validation rejects such a pod).
    fn from(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let interned = |s: &Option<String>| s.as_deref().map(intern);
        Self {
            labels: Arc::new(
                pod.metadata
                    .labels
                    .as_ref()
                    .map(Labels::from)
                    .unwrap_or_default(),
            ),
            node_name: spec.and_then(|s| interned(&s.node_name)),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            ports: spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| PodPort {
                    name: interned(&p.name),
                    container_port: p.container_port,
                    protocol: interned(&p.protocol),
                })
                .collect(),
            phase: status.and_then(|s| interned(&s.phase)),
            pod_ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            pod_ips: status
                .iter()
                .flat_map(|s| s.pod_ips.iter().flatten())
                .filter_map(|p| p.ip.parse().ok())
                .collect(),
        }
    }
}

impl PodInfo {
    /// A `Pod` named `r` that converts back into `self` (its ports in one container), for
    /// where a `Pod` is the wire format (`policy diff`'s live state).
    pub fn to_pod(&self, r: &ObjectRef) -> Pod {
        let owned = |s: &Option<Arc<str>>| s.as_deref().map(str::to_owned);
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(r.namespace.to_string());
        pod.metadata.name = Some(r.name.to_string());
        pod.metadata.labels = Some(self.labels.to_map());
        pod.spec = Some(PodSpec {
            node_name: owned(&self.node_name),
            host_network: self.host_network.then_some(true),
            containers: vec![Container {
                name: "c".to_owned(),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|p| ContainerPort {
                            name: owned(&p.name),
                            container_port: p.container_port,
                            protocol: owned(&p.protocol),
                            ..ContainerPort::default()
                        })
                        .collect(),
                ),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: owned(&self.phase),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            pod_ips: Some(
                self.pod_ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.to_string() })
                    .collect(),
            ),
            ..PodStatus::default()
        });
        pod
    }
}

/// A consistent view of the cluster (from Kubernetes or from a manifests directory): the
/// compiler's only input besides the node. Objects are already validated
/// (`policy::validate`); namespaces carry the `kubernetes.io/metadata.name` label.
/// Objects are shared (`Arc`): a source hands the same object to every snapshot until it
/// changes, so a snapshot is cheap to build and the compiler tells what changed by pointer.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// By name.
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub pods: BTreeMap<ObjectRef, Arc<PodInfo>>,
    pub policies: BTreeMap<ObjectRef, Arc<NetworkPolicy>>,
    /// ClusterNetworkPolicies, by name.
    pub cluster_policies: BTreeMap<Arc<str>, Arc<ClusterNetworkPolicy>>,
    /// Nodes, by name (their addresses are what `nodes` peers select).
    pub nodes: BTreeMap<Arc<str>, Arc<NodeInfo>>,
}

/// Objects that changed since a source's previous update, each with its new version
/// (`None`: gone), in the order they changed.
#[derive(Clone, Debug, Default)]
pub struct SnapshotChanges {
    pub namespaces: Vec<(String, Option<Arc<Namespace>>)>,
    pub pods: Vec<(ObjectRef, Option<Arc<PodInfo>>)>,
    pub policies: Vec<(ObjectRef, Option<Arc<NetworkPolicy>>)>,
    pub cluster_policies: Vec<(Arc<str>, Option<Arc<ClusterNetworkPolicy>>)>,
    pub nodes: Vec<(Arc<str>, Option<Arc<NodeInfo>>)>,
}

impl SnapshotChanges {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.pods.is_empty()
            && self.policies.is_empty()
            && self.cluster_policies.is_empty()
            && self.nodes.is_empty()
    }

    /// `snapshot` with these changes made.
    pub fn apply_to(self, snapshot: &mut Snapshot) {
        fn put<K: Ord, V>(map: &mut BTreeMap<K, Arc<V>>, changes: Vec<(K, Option<Arc<V>>)>) {
            for (k, v) in changes {
                set(map, k, v);
            }
        }
        put(&mut snapshot.namespaces, self.namespaces);
        put(&mut snapshot.pods, self.pods);
        put(&mut snapshot.policies, self.policies);
        put(&mut snapshot.cluster_policies, self.cluster_policies);
        put(&mut snapshot.nodes, self.nodes);
    }
}

/// Sets `key` to `value` (`None`: removes it); returns what it was.
pub(crate) fn set<K: Ord, V>(
    map: &mut BTreeMap<K, Arc<V>>,
    key: K,
    value: Option<Arc<V>>,
) -> Option<Arc<V>> {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    }
}

/// What a source hands the compiler: the whole cluster, or what changed since its previous
/// update (only valid for a compiler that received every update before it).
#[derive(Clone, Debug)]
pub enum SnapshotUpdate {
    Full(Snapshot),
    Changes(SnapshotChanges),
}

/// Lookups the compiler keeps for the names the agent publishes after every sync (events
/// and metrics label what they read with them). Persistent maps: a copy costs nothing and an
/// update what it changes, so publishing them does not cost the size of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Every numbered pod identity, by number.
    pub identities: imbl::OrdMap<u32, IdentityKey>,
    /// The pod owning each pod address (the one the IP cache names).
    pub pods_by_ip: imbl::OrdMap<IpAddr, ObjectRef>,
}

/// The node the policies are enforced on.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    /// Pods whose `spec.nodeName` equals this are local endpoints.
    pub node_name: String,
    /// Every address of the node's own interfaces, both families (identity "host").
    pub node_ips: BTreeSet<IpAddr>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The datapath's `DIR_*` byte (anything but `DIR_INGRESS` is egress).
    pub fn from_dir(dir: u8) -> Self {
        if dir == cns_common::DIR_INGRESS {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }

    /// `ingress` or `egress`, as metrics and reports label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => cns_common::PROTO_TCP,
            Protocol::Udp => cns_common::PROTO_UDP,
            Protocol::Sctp => cns_common::PROTO_SCTP,
        }
    }
}

/// Inclusive port range, host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// What traffic a rule entry admits, on top of its peer: every protocol and port
/// (`proto: None`), every port of one protocol (`ports: None`), or a port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortMatch {
    pub proto: Option<Protocol>,
    pub ports: Option<PortRange>,
}

/// Labels that make an identity: pods with equal namespace and labels share one.
/// `labels` is the pods' own copy (`PodInfo::labels`), shared; keys compare, order, hash
/// and serialize by value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IdentityKey {
    #[serde(serialize_with = "serialize_shared")]
    pub namespace: Arc<str>,
    #[serde(serialize_with = "serialize_shared")]
    pub labels: Arc<Labels>,
}

/// Serializes what the `Arc` points to (serde's `rc` feature is not enabled).
fn serialize_shared<T: Serialize + ?Sized, S: serde::Serializer>(
    value: &Arc<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    T::serialize(value, serializer)
}

/// Numeric ids that must stay stable from one compile to the next (conntrack entries,
/// counters and map keys refer to them). Passed back into the next compile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// At or above `cns_common::NS_FIRST`.
    pub namespaces: BTreeMap<String, u16>,
    /// At or above `cns_common::IDENTITY_FIRST_POD`.
    pub identities: BTreeMap<IdentityKey, u32>,
    /// Local endpoints, from 1.
    pub endpoints: BTreeMap<ObjectRef, u32>,
    /// Policies, from 1 (0 is never used).
    pub policies: BTreeMap<ObjectRef, u32>,
}

/// What the IP cache says about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteInfo {
    pub identity: u32,
    pub ns_id: u16,
}

/// A pod on this node that gets programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocalEndpoint {
    pub ep_id: u32,
    /// Its addresses (at least one).
    pub addrs: super::addr::PodAddrs,
    pub identity: u32,
    pub ns_id: u16,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    /// Some ClusterNetworkPolicy selects it in that direction.
    pub ingress_tiered: bool,
    pub egress_tiered: bool,
    /// Some dry-run policy applies to it (it takes the tiered lookups, both views).
    pub dry_run: bool,
    /// Isolated in that direction in the would-be view (by any NetworkPolicy, dry-run or
    /// not); `*_isolated` are the enforced view's.
    pub ingress_would_isolate: bool,
    pub egress_would_isolate: bool,
    /// The namespace's own mode (`mode::namespace_override`: the runtime override, else the
    /// `cns.io/policy-audit-mode` annotation); `None` follows the agent's global mode.
    pub audit_override: Option<super::mode::AuditMode>,
}

/// One policy entry: what endpoint `ep_id` says, in `dir`, of traffic with remote
/// `identity` (a pod identity, or an address-set identity from `Desired::cidrs`) matching
/// `ports` (a [`RuleValue`]). The entries of one endpoint, direction and identity never
/// overlap partially: a more specific one holds everything a broader one says, so the
/// kernel's longest match is the whole answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleKey {
    pub ep_id: u32,
    pub dir: Direction,
    pub identity: u32,
    pub ports: PortMatch,
}

/// Per endpoint and direction, a prefix of the address space whose addresses all fall in the
/// same set of ipBlocks (longest prefix wins in the kernel's LPM trie).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CidrKey {
    pub ep_id: u32,
    pub dir: Direction,
    #[serde(serialize_with = "serialize_display")]
    pub net: IpNetwork,
}

/// Serializes as the `Display` string (ipnetwork's own serde support is not enabled).
fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// The full desired content of the datapath for one node. Deterministic for a given input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub allocations: Allocations,
    /// Every pod IP in the cluster, and every node address (identity host).
    pub ipcache: BTreeMap<IpAddr, RemoteInfo>,
    /// Pods of this node.
    pub endpoints: BTreeMap<ObjectRef, LocalEndpoint>,
    /// Value: an identity at or above `cns_common::IDENTITY_CIDR_BASE`.
    pub cidrs: BTreeMap<CidrKey, u32>,
    pub rules: BTreeMap<RuleKey, RuleValue>,
    /// Every ClusterNetworkPolicy rule that some entry of `rules` names, by direction and
    /// policy id (`cns_common::maps::RULE_ADMIN`/`RULE_BASELINE` and its rank).
    pub cluster_rules: BTreeMap<(Direction, u32), ClusterRuleName>,
    /// What each cause of a dry-run difference the datapath can report belongs to: the
    /// dry-run policy's name (`DryRun::name`).
    pub dry_run_causes: BTreeMap<DryRunCause, Arc<str>>,
    /// Every dry-run policy of the snapshot, by name (`Kind/namespace/name`).
    pub dry_run_policies: BTreeSet<Arc<str>>,
}

/// What makes a flow's would-be verdict differ (`cns_common::maps::DryRunCause`): a dry-run
/// NetworkPolicy (its id) or ClusterNetworkPolicy rule (`RULE_*` id), or the isolation of an
/// endpoint (its id) in a direction by dry-run NetworkPolicies only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DryRunCause {
    Rule(u32),
    Isolation(u32, Direction),
}

impl DryRunCause {
    /// The cause as the datapath reports it (`Event::dry_run_id`, `CtEntry::dry_run_drop`:
    /// a rule or policy id, or `NO_POLICY` for the isolation of endpoint `ep_id` in `dir`).
    pub fn from_datapath(id: u32, ep_id: u32, dir: Direction) -> Self {
        if id == cns_common::maps::NO_POLICY {
            DryRunCause::Isolation(ep_id, dir)
        } else {
            DryRunCause::Rule(id)
        }
    }
}

/// A ClusterNetworkPolicy rule's place in its tier: `rank` orders the tier's rules (lower
/// first: by priority, then by the policy's name, then by the rule's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TierRule {
    pub rank: u32,
    pub action: super::cluster::Action,
}

/// What one [`RuleKey`] says in each tier: the first Admin rule matching it, the smallest
/// id of the NetworkPolicies allowing it, the first Baseline rule matching it
/// (`cns_common::maps::PolicyValue`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleValue {
    pub admin: Option<TierRule>,
    pub allow: Option<u32>,
    pub baseline: Option<TierRule>,
    /// `cns_common::maps::INCLUDES_*`: a pod identity's entry that already holds what its
    /// namespace's and address set's entries say (the datapath skips those lookups).
    pub includes: u8,
    /// The would-be view: what the rules say with dry-run policies too. `None`: the same
    /// as the fields above (no dry-run policy says anything of this key).
    pub would: Option<Verdicts>,
}

/// What one key says in each tier, in one view (enforced, or with dry-run policies too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Verdicts {
    pub admin: Option<TierRule>,
    pub allow: Option<u32>,
    pub baseline: Option<TierRule>,
}

impl Verdicts {
    fn merge(self, other: Self) -> Self {
        fn first<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Self {
            admin: first(self.admin, other.admin),
            allow: first(self.allow, other.allow),
            baseline: first(self.baseline, other.baseline),
        }
    }
}

impl RuleValue {
    pub fn allow(policy: u32) -> Self {
        Self {
            allow: Some(policy),
            ..Self::default()
        }
    }

    /// The enforced view.
    pub fn enforced(&self) -> Verdicts {
        Verdicts {
            admin: self.admin,
            allow: self.allow,
            baseline: self.baseline,
        }
    }

    /// The would-be view (dry-run policies too).
    pub fn would_view(&self) -> Verdicts {
        self.would.unwrap_or(self.enforced())
    }

    /// What a dry-run policy's rule says: nothing in the enforced view, `self` in the
    /// would-be view.
    pub fn dry_run(self) -> Self {
        Self {
            would: Some(self.would_view()),
            includes: self.includes,
            ..Self::default()
        }
    }

    /// Both together: the first rule of each tier, the smallest allowing policy, in each
    /// view.
    pub fn merge(self, other: Self) -> Self {
        let enforced = self.enforced().merge(other.enforced());
        let would = match (self.would, other.would) {
            (None, None) => None,
            _ => Some(self.would_view().merge(other.would_view())),
        };
        Self {
            admin: enforced.admin,
            allow: enforced.allow,
            baseline: enforced.baseline,
            includes: self.includes | other.includes,
            would: would.filter(|w| *w != enforced),
        }
    }
}

impl RuleValue {
    /// What it names, in tier order: the first Admin rule, the allowing NetworkPolicy
    /// (`policy` names an id), the first Baseline rule; rules by `cluster_rules` (a
    /// `Desired`'s), an unknown one by its id.
    pub fn names(
        &self,
        dir: Direction,
        cluster_rules: &BTreeMap<(Direction, u32), ClusterRuleName>,
        policy: impl Fn(u32) -> String,
    ) -> Vec<String> {
        use cns_common::maps::{RULE_ADMIN, RULE_BASELINE};
        let rule = |id: u32| {
            cluster_rules
                .get(&(dir, id))
                .map_or_else(|| format!("rule-id:{id}"), ToString::to_string)
        };
        let view = |v: Verdicts| {
            let mut out = Vec::new();
            out.extend(v.admin.map(|t| rule(RULE_ADMIN | t.rank)));
            out.extend(v.allow.map(&policy));
            out.extend(v.baseline.map(|t| rule(RULE_BASELINE | t.rank)));
            out
        };
        let mut out = view(self.enforced());
        if let Some(w) = self.would {
            let names = view(w);
            out.push(format!(
                "with dry-run policies: {}",
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        }
        out
    }
}

/// A ClusterNetworkPolicy rule, as events, metrics and `explain` name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterRuleName {
    #[serde(serialize_with = "serialize_shared")]
    pub policy: Arc<str>,
    pub tier: super::cluster::Tier,
    pub priority: i32,
    /// Its `name`, or `#index` when it has none.
    pub rule: String,
    pub action: super::cluster::Action,
}

impl fmt::Display for ClusterRuleName {
    /// `Admin ClusterNetworkPolicy/NAME rule RULE (Deny)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ClusterNetworkPolicy/{} rule {} ({:?})",
            self.tier, self.policy, self.rule, self.action
        )
    }
}
