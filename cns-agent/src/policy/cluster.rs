//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, network-policy-api v0.2.0):
//! the API types as the manifests and the API server carry them, their validation (the
//! CRD's schema and CEL rules), and the view the compiler and the evaluator read them
//! through ([`rules`], [`ClusterPeer`], [`ClusterPorts`]). k8s-openapi has no such type.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::{
    model::{Direction, Protocol},
    validate::{FieldError, validate_selector},
    view::parse_cidr,
};

pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
pub const KIND: &str = "ClusterNetworkPolicy";
/// Highest `spec.priority`.
pub const MAX_PRIORITY: i32 = 1000;
/// At most this many rules per direction, peers per rule, protocols per rule, networks per
/// peer.
pub const MAX_ITEMS: usize = 25;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClusterNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterNetworkPolicyStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    pub tier: Tier,
    pub priority: i32,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Tier {
    #[default]
    Admin,
    Baseline,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Action {
    #[default]
    Accept,
    Deny,
    Pass,
}

/// Exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: Action,
    pub from: Vec<IngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub action: Action,
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolMatch>>,
}

/// Exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// Exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// Exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRangeSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRangeSpec {
    pub start: i32,
    pub end: i32,
}

impl ClusterNetworkPolicy {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its rules in `dir`, in order.
    pub fn rules(&self, dir: Direction) -> Vec<ClusterRule<'_>> {
        rules(&self.spec, dir)
    }
}

// ---- The view: both directions' rules as one shape. ----

/// A peer, classified.
#[derive(Clone, Debug)]
pub enum ClusterPeer<'a> {
    /// Every pod (not host-network) of the namespaces the selector picks.
    Namespaces(&'a LabelSelector),
    /// The pods the pod selector picks in the namespaces the namespace selector picks.
    Pods(&'a NamespacedPod),
    /// The addresses (`status.addresses`) of the nodes the selector picks.
    Nodes(&'a LabelSelector),
    /// Any address in these networks (pods' included).
    Networks(Vec<IpNetwork>),
    /// Not supported: an Accept rule matches nothing through it, a Deny or Pass rule
    /// matches everything (the spec's rule for peers an implementation does not know).
    DomainNames,
}

/// What a rule's protocols admit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterPorts {
    /// Every protocol and port (no `protocols`).
    All,
    /// Any of these.
    Some(Vec<ClusterPort>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterPort {
    /// Every port of a protocol (`tcp: {}` is refused by the schema; kept for completeness).
    Proto(Protocol),
    Range(Protocol, super::model::PortRange),
    /// `destinationNamedPort`: the destination pod's container port of that name, any
    /// protocol it is declared with.
    Named(String),
}

/// One rule of either direction.
#[derive(Clone, Debug)]
pub struct ClusterRule<'a> {
    pub index: usize,
    pub name: &'a str,
    pub action: Action,
    pub peers: Vec<ClusterPeer<'a>>,
    pub ports: ClusterPorts,
}

impl ClusterRule<'_> {
    /// The rule's name, or its index when it has none (as events and `explain` name it).
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("#{}", self.index)
        } else {
            self.name.to_owned()
        }
    }
}

pub fn rules(spec: &ClusterNetworkPolicySpec, dir: Direction) -> Vec<ClusterRule<'_>> {
    match dir {
        Direction::Ingress => spec
            .ingress
            .iter()
            .enumerate()
            .map(|(index, r)| ClusterRule {
                index,
                name: &r.name,
                action: r.action,
                peers: r.from.iter().map(ingress_peer).collect(),
                ports: ports(r.protocols.as_deref()),
            })
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .enumerate()
            .map(|(index, r)| ClusterRule {
                index,
                name: &r.name,
                action: r.action,
                peers: r.to.iter().filter_map(egress_peer).collect(),
                ports: ports(r.protocols.as_deref()),
            })
            .collect(),
    }
}

fn ingress_peer(p: &IngressPeer) -> ClusterPeer<'_> {
    match (&p.namespaces, &p.pods) {
        (Some(ns), _) => ClusterPeer::Namespaces(ns),
        (None, Some(pods)) => ClusterPeer::Pods(pods),
        // Refused by validation; matches nothing.
        (None, None) => ClusterPeer::Networks(Vec::new()),
    }
}

fn egress_peer(p: &EgressPeer) -> Option<ClusterPeer<'_>> {
    Some(if let Some(ns) = &p.namespaces {
        ClusterPeer::Namespaces(ns)
    } else if let Some(pods) = &p.pods {
        ClusterPeer::Pods(pods)
    } else if let Some(nodes) = &p.nodes {
        ClusterPeer::Nodes(nodes)
    } else if let Some(nets) = &p.networks {
        ClusterPeer::Networks(nets.iter().filter_map(|n| parse_cidr(n).ok()).collect())
    } else if p.domain_names.is_some() {
        ClusterPeer::DomainNames
    } else {
        return None;
    })
}

fn ports(protocols: Option<&[ProtocolMatch]>) -> ClusterPorts {
    let Some(protocols) = protocols else {
        return ClusterPorts::All;
    };
    let one = |proto: Protocol, p: &ProtocolPort| match &p.destination_port {
        None => ClusterPort::Proto(proto),
        Some(Port {
            number: Some(n), ..
        }) => {
            let n = u16::try_from(*n).unwrap_or(0);
            ClusterPort::Range(proto, super::model::PortRange { start: n, end: n })
        }
        Some(Port { range: Some(r), .. }) => ClusterPort::Range(
            proto,
            super::model::PortRange {
                start: u16::try_from(r.start).unwrap_or(0),
                end: u16::try_from(r.end).unwrap_or(0),
            },
        ),
        Some(_) => ClusterPort::Proto(proto),
    };
    ClusterPorts::Some(
        protocols
            .iter()
            .filter_map(|m| {
                Some(if let Some(p) = &m.tcp {
                    one(Protocol::Tcp, p)
                } else if let Some(p) = &m.udp {
                    one(Protocol::Udp, p)
                } else if let Some(p) = &m.sctp {
                    one(Protocol::Sctp, p)
                } else {
                    ClusterPort::Named(m.destination_named_port.clone()?)
                })
            })
            .collect(),
    )
}

impl ClusterPorts {
    /// Whether a packet of `proto` to `dport` matches; `named` gives the destination pod's
    /// port numbers for a name and protocol (`None`: not a pod).
    pub fn admits(
        &self,
        proto: u8,
        dport: u16,
        named: impl Fn(&str, Protocol) -> Vec<u16>,
    ) -> bool {
        match self {
            ClusterPorts::All => true,
            ClusterPorts::Some(ports) => ports.iter().any(|p| match p {
                ClusterPort::Proto(p) => p.number() == proto,
                ClusterPort::Range(p, r) => {
                    p.number() == proto && (r.start..=r.end).contains(&dport)
                }
                ClusterPort::Named(name) => [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                    .into_iter()
                    .any(|p| p.number() == proto && named(name, p).contains(&dport)),
            }),
        }
    }
}

/// Whether the (not host-network) pod with these namespace and pod labels is selected by
/// a subject or a pod-ish peer.
pub fn selects_pod(
    namespaces: Option<&LabelSelector>,
    pods: Option<&NamespacedPod>,
    ns_labels: &super::labels::Labels,
    pod_labels: &super::labels::Labels,
) -> bool {
    use super::selector::matches;
    match (namespaces, pods) {
        (Some(ns), _) => matches(ns, ns_labels),
        (None, Some(p)) => {
            matches(&p.namespace_selector, ns_labels) && matches(&p.pod_selector, pod_labels)
        }
        (None, None) => false,
    }
}

/// Whether the policy uses a feature cns does not enforce (`domainNames`): `sync`,
/// `status` and `policy check` say so.
pub fn unsupported(cnp: &ClusterNetworkPolicy) -> Option<String> {
    cnp.spec
        .egress
        .iter()
        .enumerate()
        .find(|(_, r)| r.to.iter().any(|p| p.domain_names.is_some()))
        .map(|(i, _)| {
            format!(
                "spec.egress[{i}].to: domainNames peers are not supported: an Accept rule \
                 matches nothing through them, a Deny or Pass rule matches all traffic"
            )
        })
}

// ---- Validation: the CRD's schema and CEL rules. ----

pub fn validate_cluster_policy(cnp: &ClusterNetworkPolicy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: &str| {
        errs.push(FieldError {
            field,
            message: message.to_owned(),
        })
    };
    let spec = &cnp.spec;
    if !(0..=MAX_PRIORITY).contains(&spec.priority) {
        err("spec.priority".into(), "must be between 0 and 1000");
    }
    match (&spec.subject.namespaces, &spec.subject.pods) {
        (Some(_), Some(_)) | (None, None) => err(
            "spec.subject".into(),
            "must set exactly one of namespaces or pods",
        ),
        _ => {}
    }
    let mut selectors: Vec<(String, &LabelSelector)> = Vec::new();
    if let Some(s) = &spec.subject.namespaces {
        selectors.push(("spec.subject.namespaces".into(), s));
    }
    if let Some(p) = &spec.subject.pods {
        selectors.push((
            "spec.subject.pods.namespaceSelector".into(),
            &p.namespace_selector,
        ));
        selectors.push(("spec.subject.pods.podSelector".into(), &p.pod_selector));
    }
    for (dir, len) in [
        ("ingress", spec.ingress.len()),
        ("egress", spec.egress.len()),
    ] {
        if len > MAX_ITEMS {
            err(format!("spec.{dir}"), "at most 25 rules");
        }
    }
    for (i, r) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        rule_common(
            &at,
            &r.name,
            r.from.len(),
            "from",
            r.protocols.as_deref(),
            &mut err,
        );
        for (j, p) in r.from.iter().enumerate() {
            let at = format!("{at}.from[{j}]");
            if usize::from(p.namespaces.is_some()) + usize::from(p.pods.is_some()) != 1 {
                err(at.clone(), "must set exactly one of namespaces or pods");
            }
            peer_selectors(
                &at,
                p.namespaces.as_ref(),
                p.pods.as_ref(),
                None,
                &mut selectors,
            );
        }
    }
    for (i, r) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        rule_common(
            &at,
            &r.name,
            r.to.len(),
            "to",
            r.protocols.as_deref(),
            &mut err,
        );
        let mut addressed = false;
        for (j, p) in r.to.iter().enumerate() {
            let at = format!("{at}.to[{j}]");
            let set = [
                p.namespaces.is_some(),
                p.pods.is_some(),
                p.nodes.is_some(),
                p.networks.is_some(),
                p.domain_names.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                err(
                    at.clone(),
                    "must set exactly one of namespaces, pods, nodes, networks or domainNames",
                );
            }
            addressed |= p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some();
            if let Some(nets) = &p.networks {
                if nets.is_empty() || nets.len() > MAX_ITEMS {
                    err(format!("{at}.networks"), "must have 1 to 25 CIDRs");
                }
                for (k, n) in nets.iter().enumerate() {
                    if let Err(e) = parse_cidr(n) {
                        err(
                            format!("{at}.networks[{k}]"),
                            &format!("Invalid CIDR format provided: {e}"),
                        );
                    }
                }
            }
            if let Some(names) = &p.domain_names {
                if names.is_empty() || names.len() > MAX_ITEMS {
                    err(
                        format!("{at}.domainNames"),
                        "must have 1 to 25 domain names",
                    );
                }
                if r.action != Action::Accept {
                    err(format!("{at}.domainNames"), "only allowed in Accept rules");
                }
            }
            peer_selectors(
                &at,
                p.namespaces.as_ref(),
                p.pods.as_ref(),
                p.nodes.as_ref(),
                &mut selectors,
            );
        }
        let named = r
            .protocols
            .iter()
            .flatten()
            .any(|p| p.destination_named_port.is_some());
        if addressed && named {
            err(
                format!("{at}.protocols"),
                "networks/nodes/domainNames peer cannot be set with namedPorts since there are no \
                 namedPorts for networks/nodes/domainNames",
            );
        }
    }
    for (field, sel) in selectors {
        errs.extend(validate_selector(&field, sel));
    }
    errs
}

fn peer_selectors<'a>(
    at: &str,
    namespaces: Option<&'a LabelSelector>,
    pods: Option<&'a NamespacedPod>,
    nodes: Option<&'a LabelSelector>,
    out: &mut Vec<(String, &'a LabelSelector)>,
) {
    if let Some(s) = namespaces {
        out.push((format!("{at}.namespaces"), s));
    }
    if let Some(p) = pods {
        out.push((
            format!("{at}.pods.namespaceSelector"),
            &p.namespace_selector,
        ));
        out.push((format!("{at}.pods.podSelector"), &p.pod_selector));
    }
    if let Some(s) = nodes {
        out.push((format!("{at}.nodes"), s));
    }
}

fn rule_common(
    at: &str,
    name: &str,
    peers: usize,
    peers_field: &str,
    protocols: Option<&[ProtocolMatch]>,
    err: &mut impl FnMut(String, &str),
) {
    if name.len() > 100 {
        err(format!("{at}.name"), "at most 100 characters");
    }
    if peers == 0 || peers > MAX_ITEMS {
        err(format!("{at}.{peers_field}"), "must have 1 to 25 peers");
    }
    let Some(protocols) = protocols else {
        return;
    };
    if protocols.is_empty() || protocols.len() > MAX_ITEMS {
        err(format!("{at}.protocols"), "must have 1 to 25 items");
    }
    for (k, p) in protocols.iter().enumerate() {
        let at = format!("{at}.protocols[{k}]");
        let set = [
            p.tcp.is_some(),
            p.udp.is_some(),
            p.sctp.is_some(),
            p.destination_named_port.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            err(
                at.clone(),
                "must set exactly one of tcp, udp, sctp or destinationNamedPort",
            );
        }
        if p.destination_named_port.as_deref() == Some("") {
            err(format!("{at}.destinationNamedPort"), "must not be empty");
        }
        for (proto, pp) in [("tcp", &p.tcp), ("udp", &p.udp), ("sctp", &p.sctp)] {
            let Some(pp) = pp else { continue };
            let at = format!("{at}.{proto}");
            let Some(port) = &pp.destination_port else {
                err(at, "must set destinationPort");
                continue;
            };
            let at = format!("{at}.destinationPort");
            let valid = |n: i32| (1..=65535).contains(&n);
            match (port.number, &port.range) {
                (Some(n), None) => {
                    if !valid(n) {
                        err(format!("{at}.number"), "must be between 1 and 65535");
                    }
                }
                (None, Some(r)) => {
                    if !valid(r.start) || !valid(r.end) {
                        err(
                            format!("{at}.range"),
                            "start and end must be between 1 and 65535",
                        );
                    } else if r.start >= r.end {
                        err(
                            format!("{at}.range"),
                            "Start port must be less than End port",
                        );
                    }
                }
                _ => err(at, "must set exactly one of number or range"),
            }
        }
    }
}

/// What the agent reads of a node (`Node` objects; for `nodes` peers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub labels: std::sync::Arc<super::labels::Labels>,
    /// `status.addresses[*].address` that are IP addresses (InternalIP, ExternalIP).
    pub addresses: Box<[IpAddr]>,
}

impl From<&k8s_openapi::api::core::v1::Node> for NodeInfo {
    fn from(node: &k8s_openapi::api::core::v1::Node) -> Self {
        Self {
            labels: std::sync::Arc::new(
                node.metadata
                    .labels
                    .as_ref()
                    .map(super::labels::Labels::from)
                    .unwrap_or_default(),
            ),
            addresses: node
                .status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        }
    }
}

impl NodeInfo {
    /// A `Node` named `name` that converts back into `self`.
    pub fn to_node(&self, name: &str) -> k8s_openapi::api::core::v1::Node {
        use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
        let mut node = Node::default();
        node.metadata.name = Some(name.to_owned());
        node.metadata.labels = Some(self.labels.to_map());
        node.status = Some(NodeStatus {
            addresses: Some(
                self.addresses
                    .iter()
                    .map(|a| NodeAddress {
                        type_: "InternalIP".to_owned(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        });
        node
    }
}
