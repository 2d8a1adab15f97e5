//! How the policy core reads the k8s objects: which pods count and at which address, what a
//! peer, a port and a policy's types mean. Both the compiler and the reference evaluator go
//! through these small readings, so they agree on the facts and differ only in method.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnetwork::IpNetwork;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{
    addr::{ALL_V4, ALL_V6, PodAddrs, masked},
    model::{Direction, NodeContext, ObjectRef, PodInfo, PortRange, Protocol, Snapshot},
    selector,
};

/// Parses a protocol name; absent means TCP, unknown means `None`.
pub fn parse_protocol(s: Option<&str>) -> Option<Protocol> {
    match s {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(_) => None,
    }
}

/// Parses `addr/prefix` (IPv4 or IPv6, prefix in digits) as Kubernetes does.
pub fn parse_cidr(s: &str) -> Result<IpNetwork, String> {
    let Some((_, prefix)) = s.split_once('/') else {
        return Err("missing prefix length".to_string());
    };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid prefix length {prefix:?}"));
    }
    s.parse::<IpNetwork>().map_err(|e| e.to_string())
}

/// A pod's addresses (see [`PodAddrs`]).
pub fn pod_addrs(pod: &PodInfo) -> PodAddrs {
    PodAddrs::of(pod)
}

/// A pod that policies apply to: an address, own network namespace, not finished.
pub fn pod_is_active(pod: &PodInfo) -> bool {
    let finished = pod
        .phase
        .as_deref()
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !pod.host_network && !finished && !pod_addrs(pod).is_empty()
}

/// The pod at each address: active pods only; a node address is never a pod's (the node
/// wins), and of two pods claiming one address the first by namespace/name wins.
#[derive(Clone, Debug, Default)]
pub struct PodIndex<'a> {
    by_ip: BTreeMap<IpAddr, (&'a ObjectRef, &'a PodInfo)>,
}

impl<'a> PodIndex<'a> {
    pub fn new(snapshot: &'a Snapshot, node: &NodeContext) -> Self {
        let mut by_ip = BTreeMap::new();
        for (r, pod) in &snapshot.pods {
            if !pod_is_active(pod) {
                continue;
            }
            for ip in pod_addrs(pod).iter() {
                if !node.node_ips.contains(&ip) {
                    by_ip.entry(ip).or_insert((r, &**pod));
                }
            }
        }
        Self { by_ip }
    }

    pub fn get(&self, ip: IpAddr) -> Option<(&'a ObjectRef, &'a PodInfo)> {
        self.by_ip.get(&ip).copied()
    }

    /// Every (address, pod), by address (a dual-stack pod twice).
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &'a ObjectRef, &'a PodInfo)> + '_ {
        self.by_ip.iter().map(|(ip, (r, p))| (*ip, *r, *p))
    }

    /// Whether `r` is the pod owning its address `ip`.
    pub fn owns(&self, r: &ObjectRef, ip: IpAddr) -> bool {
        self.get(ip).is_some_and(|(owner, _)| owner == r)
    }
}

/// The port numbers a pod's containers declare under `name` for `proto`.
pub fn named_port_numbers(pod: &PodInfo, name: &str, proto: Protocol) -> BTreeSet<u16> {
    pod.ports
        .iter()
        .filter(|p| p.name.as_deref() == Some(name))
        .filter(|p| parse_protocol(p.protocol.as_deref()) == Some(proto))
        .filter_map(|p| u16::try_from(p.container_port).ok().filter(|n| *n != 0))
        .collect()
}

/// Whether the policy has `dir` in its effective `policyTypes`: as listed, or when absent
/// or empty, Ingress always and Egress iff it has egress rules.
pub fn policy_applies(np: &NetworkPolicy, dir: Direction) -> bool {
    let spec = np.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(types) if !types.is_empty() => {
            let want = match dir {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            };
            types.iter().any(|t| t == want)
        }
        _ => match dir {
            Direction::Ingress => true,
            Direction::Egress => spec
                .and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        },
    }
}

/// Whether the policy (in namespace `policy_ns`) selects pod `pod` (in namespace `pod_ns`).
pub fn policy_selects(np: &NetworkPolicy, policy_ns: &str, pod_ns: &str, pod: &PodInfo) -> bool {
    let sel = np.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    policy_ns == pod_ns && selector::matches_opt(sel, selector::pod_labels(pod))
}

/// The policies isolating pod `r` in `dir` (those of its namespace: a range of the map).
pub fn isolating_policies<'a>(
    snapshot: &'a Snapshot,
    r: &'a ObjectRef,
    pod: &'a PodInfo,
    dir: Direction,
) -> impl Iterator<Item = (&'a ObjectRef, &'a NetworkPolicy)> + 'a {
    snapshot
        .policies
        .range(ObjectRef::new(&*r.namespace, "")..)
        .take_while(move |(pr, _)| pr.namespace == r.namespace)
        .filter(move |(pr, np)| {
            policy_applies(np, dir) && policy_selects(np, &pr.namespace, &r.namespace, pod)
        })
        .map(|(pr, np)| (pr, &**np))
}

/// One rule of a policy in one direction: its peers (`from`/`to`) and its ports.
#[derive(Clone, Copy, Debug)]
pub struct RuleView<'a> {
    pub peers: &'a [NetworkPolicyPeer],
    pub ports: &'a [NetworkPolicyPort],
}

/// The rules of `np` in `dir`, in order.
pub fn policy_rules(np: &NetworkPolicy, dir: Direction) -> Vec<RuleView<'_>> {
    let Some(spec) = np.spec.as_ref() else {
        return Vec::new();
    };
    match dir {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| RuleView {
                peers: r.from.as_deref().unwrap_or_default(),
                ports: r.ports.as_deref().unwrap_or_default(),
            })
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| RuleView {
                peers: r.to.as_deref().unwrap_or_default(),
                ports: r.ports.as_deref().unwrap_or_default(),
            })
            .collect(),
    }
}

/// An ipBlock, masked: `net` minus every `except` (validation keeps them in one family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub net: IpNetwork,
    pub excepts: Vec<IpNetwork>,
}

impl Block {
    /// Every address of both families (an absent or empty peer list): two blocks.
    pub fn any() -> [Self; 2] {
        [ALL_V4, ALL_V6].map(|net| Self {
            net,
            excepts: Vec::new(),
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(ip) && !self.excepts.iter().any(|e| e.contains(ip))
    }
}

/// What a peer designates.
#[derive(Clone, Debug)]
pub enum Peer<'a> {
    /// Addresses (ipBlock); they may be pods' too.
    Block(Block),
    /// Pods: of the policy's namespace unless `namespace` is given; `None` selectors match all.
    Pods {
        namespace: Option<&'a LabelSelector>,
        pod: Option<&'a LabelSelector>,
    },
    /// Nothing: an invalid peer.
    Nothing,
}

pub fn classify_peer(peer: &NetworkPolicyPeer) -> Peer<'_> {
    let has_selector = peer.namespace_selector.is_some() || peer.pod_selector.is_some();
    match (&peer.ip_block, has_selector) {
        (Some(_), true) | (None, false) => Peer::Nothing,
        (None, true) => Peer::Pods {
            namespace: peer.namespace_selector.as_ref(),
            pod: peer.pod_selector.as_ref(),
        },
        (Some(b), false) => {
            let Ok(net) = parse_cidr(&b.cidr).map(masked) else {
                return Peer::Nothing;
            };
            let mut excepts = Vec::new();
            for e in b.except.iter().flatten() {
                match parse_cidr(e) {
                    Ok(n) if n.is_ipv4() == net.is_ipv4() => excepts.push(masked(n)),
                    _ => return Peer::Nothing,
                }
            }
            Peer::Block(Block { net, excepts })
        }
    }
}

/// The peers of a rule; an empty list means every address.
pub fn rule_peers<'a>(rule: &RuleView<'a>) -> Vec<Peer<'a>> {
    if rule.peers.is_empty() {
        Block::any().map(Peer::Block).into()
    } else {
        rule.peers.iter().map(classify_peer).collect()
    }
}

/// What a `NetworkPolicyPort` admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Every protocol and port (a rule without ports).
    All,
    /// Every port of a protocol.
    Proto(Protocol),
    Range(Protocol, PortRange),
    /// A container port name, resolved against the pod receiving the traffic.
    Named(Protocol, String),
    /// An invalid port: admits nothing.
    Nothing,
}

impl PortSpec {
    /// Whether a numeric spec admits (`proto`, `port`); `Named` needs a pod and says no.
    pub fn admits_numeric(&self, proto: u8, port: u16) -> bool {
        match self {
            PortSpec::All => true,
            PortSpec::Proto(p) => p.number() == proto,
            PortSpec::Range(p, r) => p.number() == proto && r.start <= port && port <= r.end,
            PortSpec::Named(..) | PortSpec::Nothing => false,
        }
    }
}

pub fn classify_port(port: &NetworkPolicyPort) -> PortSpec {
    let Some(proto) = parse_protocol(port.protocol.as_deref()) else {
        return PortSpec::Nothing;
    };
    match (&port.port, port.end_port) {
        (None, None) => PortSpec::Proto(proto),
        (None, Some(_)) => PortSpec::Nothing,
        (Some(IntOrString::String(name)), None) => PortSpec::Named(proto, name.clone()),
        (Some(IntOrString::String(_)), Some(_)) => PortSpec::Nothing,
        (Some(IntOrString::Int(p)), end) => {
            let start = u16::try_from(*p).ok().filter(|p| *p != 0);
            let end = match end {
                None => start,
                Some(e) => u16::try_from(e).ok(),
            };
            match (start, end) {
                (Some(start), Some(end)) if start <= end => {
                    PortSpec::Range(proto, PortRange { start, end })
                }
                _ => PortSpec::Nothing,
            }
        }
    }
}

/// The port specs of a rule; an empty list means everything.
pub fn rule_ports(rule: &RuleView<'_>) -> Vec<PortSpec> {
    if rule.ports.is_empty() {
        vec![PortSpec::All]
    } else {
        rule.ports.iter().map(classify_port).collect()
    }
}
