//! Property test: for random clusters, policies and flows, the simulated datapath of the
//! compiled state agrees with the reference evaluator in each direction.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use proptest::{collection::vec, option, prelude::*, sample::select};
use serde_json::{Value, json};

use super::{
    addr::PodAddrs,
    evaluate::{DirectionVerdict, Flow, dry_run_policies, enforced_only, evaluate},
    fixtures::{NODE, NODE_IP, NODE_IP6, node, snapshot},
    incremental::Compiler,
    incremental::compile,
    model::{Allocations, Snapshot},
    sim::sim,
    validate::{validate_namespace, validate_pod, validate_policy},
    view::PodIndex,
};

const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];

/// Label keys and the values they take (pods use the first two, namespaces the next two).
const LABELS: [(&str, [&str; 2]); 4] = [
    ("app", ["web", "db"]),
    ("tier", ["front", "back"]),
    ("team", ["a", "b"]),
    ("env", ["x", "y"]),
];

fn label_map(keys: &[usize], picks: Vec<Option<bool>>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, pick) in keys.iter().zip(picks) {
        if let Some(second) = pick {
            let (key, values) = LABELS[*k];
            m.insert(key.into(), json!(values[usize::from(second)]));
        }
    }
    Value::Object(m)
}

fn pod_labels() -> impl Strategy<Value = Value> {
    vec(option::of(any::<bool>()), 2).prop_map(|p| label_map(&[0, 1], p))
}

fn ns_labels() -> impl Strategy<Value = Value> {
    vec(option::of(any::<bool>()), 2).prop_map(|p| label_map(&[2, 3], p))
}

/// A container port named http or dns, on one of a few numbers and protocols.
fn container_port() -> impl Strategy<Value = Value> {
    (
        select(vec!["http", "dns"]),
        select(vec![53, 80, 8080, 5353]),
        select(vec!["TCP", "UDP", "SCTP"]),
        any::<bool>(),
    )
        .prop_map(|(name, port, proto, default_proto)| {
            if default_proto {
                json!({"name": name, "containerPort": port})
            } else {
                json!({"name": name, "containerPort": port, "protocol": proto})
            }
        })
}

/// The container ports of a "replica": a function of its labels, as in a Deployment.
fn replica_ports(labels: &Value) -> Value {
    match labels["app"].as_str() {
        Some("web") => json!([{"name": "http", "containerPort": 8080}]),
        Some("db") => {
            json!([{"name": "http", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}])
        }
        _ => json!([{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]),
    }
}

/// One replica: its address (`10.0.0.host`, `fd00::host` or both, by fate), its own
/// container ports (else those of its deployment) and its fate (mostly running here;
/// sometimes host-network, failed, on another node, or without address).
fn replica() -> impl Strategy<Value = (u8, Option<Vec<Value>>, u8)> {
    (
        0..24u8,
        option::weighted(0.3, vec(container_port(), 0..3)),
        0..20u8,
    )
}

/// A deployment: 1-3 pods sharing namespace and labels (hence identity).
fn deployment() -> impl Strategy<Value = Vec<Value>> {
    (0..3usize, pod_labels(), vec(replica(), 1..4)).prop_map(|(ns, labels, replicas)| {
        replicas
            .into_iter()
            .map(|(host, ports, fate)| {
                let ports = ports.map_or_else(|| replica_ports(&labels), |p| json!(p));
                let mut spec = json!({"nodeName": NODE, "containers": [{"name": "c", "ports": ports}]});
                let (v4, v6) = (format!("10.0.0.{host}"), format!("fd00::{host:x}"));
                let mut status = match (fate / 4) % 3 {
                    _ if fate < 4 => json!({"phase": "Running", "podIP": v4}),
                    0 => json!({"phase": "Running", "podIP": v4}),
                    1 => json!({"phase": "Running", "podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]}),
                    _ => json!({"phase": "Running", "podIP": v6, "podIPs": [{"ip": v6}]}),
                };
                match fate {
                    0 => spec["hostNetwork"] = json!(true),
                    1 => status["phase"] = json!("Failed"),
                    2 => spec["nodeName"] = json!("node-2"),
                    3 => status = json!({"phase": "Pending"}),
                    _ => {}
                }
                json!({"metadata": {"namespace": NAMESPACES[ns], "labels": labels}, "spec": spec, "status": status})
            })
            .collect()
    })
}

fn selector() -> impl Strategy<Value = Value> {
    let key = 0..5usize;
    let pair = (key.clone(), any::<bool>());
    let expr = (
        key,
        select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        vec(any::<bool>(), 1..3),
        select(NAMESPACES.to_vec()),
    );
    (option::of(pair), option::of(expr)).prop_map(|(pair, expr)| {
        let name_key = "kubernetes.io/metadata.name";
        let key_value = |k: usize, second: bool| match LABELS.get(k) {
            Some((key, values)) => (key.to_string(), values[usize::from(second)].to_string()),
            None => (
                name_key.to_string(),
                NAMESPACES[usize::from(second)].to_string(),
            ),
        };
        let mut sel = json!({});
        if let Some((k, second)) = pair {
            let (key, value) = key_value(k, second);
            sel["matchLabels"] = json!({key: value});
        }
        if let Some((k, op, picks, ns)) = expr {
            let (key, _) = key_value(k, false);
            let values: Vec<String> = picks
                .iter()
                .map(|second| {
                    if key == name_key {
                        ns.to_string()
                    } else {
                        key_value(k, *second).1
                    }
                })
                .collect();
            sel["matchExpressions"] = if op == "In" || op == "NotIn" {
                json!([{"key": key, "operator": op, "values": values}])
            } else {
                json!([{"key": key, "operator": op}])
            };
        }
        sel
    })
}

/// A CIDR (host bits possibly set) inside `10.0.0.0/24` or everything, with excepts
/// strictly inside it; in IPv6 (the same inside `fd00::/120`, or `::/0`) a third of the time.
fn ip_block() -> impl Strategy<Value = Value> {
    (ip_block_v4(), 0..3u8).prop_map(|(block, family)| {
        if family > 0 {
            return block;
        }
        let v6 = |cidr: &Value| {
            let (addr, len) = cidr
                .as_str()
                .unwrap_or("")
                .split_once('/')
                .unwrap_or_default();
            let len: u8 = len.parse().unwrap_or(32);
            let last: u8 = addr
                .rsplit('.')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            if len == 0 {
                json!("::/0")
            } else {
                json!(format!("fd00::{last:x}/{}", len + 96))
            }
        };
        let mut out = json!({"cidr": v6(&block["cidr"])});
        if let Some(excepts) = block["except"].as_array() {
            out["except"] = json!(excepts.iter().map(v6).collect::<Vec<_>>());
        }
        out
    })
}

/// [`ip_block`] in IPv4 (or the fixed `fd00::/8` block).
fn ip_block_v4() -> impl Strategy<Value = Value> {
    let except = (any::<u8>(), 1..9u8);
    (
        0..10u8,
        any::<u8>(),
        select(vec![24u8, 26, 27, 28, 29, 30, 31, 32]),
        vec(except, 0..3),
    )
        .prop_map(|(kind, host, len, excepts)| {
            if kind == 0 {
                return json!({"cidr": "fd00::/8", "except": ["fd00:1::/32"]});
            }
            let (base, len) = if kind == 1 {
                (0u32, 0u8)
            } else {
                (u32::from(Ipv4Addr::new(10, 0, 0, host % 32)), len)
            };
            let mut block = json!({"cidr": format!("{}/{len}", Ipv4Addr::from(base))});
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            let excepts: Vec<String> = excepts
                .into_iter()
                .filter(|_| len < 32)
                .map(|(host, extra)| {
                    // Aim excepts of "everything" at the pods' /24.
                    let net = if len == 0 { 0x0a00_0000 } else { base & mask };
                    let elen = (len.max(24) + extra).min(32);
                    let addr = net | (u32::from(host % 32) & !mask);
                    format!("{}/{elen}", Ipv4Addr::from(addr))
                })
                .collect();
            if !excepts.is_empty() {
                block["except"] = json!(excepts);
            }
            block
        })
}

fn peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        selector().prop_map(|s| json!({"namespaceSelector": s})),
        (selector(), selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        ip_block().prop_map(|b| json!({"ipBlock": b})),
        ip_block().prop_map(|b| json!({"ipBlock": b})),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    (
        option::of(select(vec!["TCP", "UDP", "SCTP"])),
        0..8u8,
        select(vec![53, 80, 443, 8080]),
        select(vec![0, 10, 8000]),
    )
        .prop_map(|(proto, kind, port, span)| {
            let mut p = match kind {
                0 => json!({}),
                1 => json!({"port": port}),
                2 => json!({"port": port, "endPort": port + span}),
                3 => json!({"port": "http"}),
                4 => json!({"port": "dns"}),
                5 | 6 => json!({"port": "http"}),
                _ => json!({"port": port}),
            };
            if let Some(proto) = proto {
                p["protocol"] = json!(proto);
            }
            p
        })
}

/// A rule; `peers_key` is "from" or "to". Peers and ports may be absent, empty or listed.
fn rule(peers_key: &'static str) -> impl Strategy<Value = Value> {
    let peers = option::weighted(0.8, vec(peer(), 0..3));
    let ports = option::weighted(0.7, vec(port(), 0..3));
    (peers, ports).prop_map(move |(peers, ports)| {
        let mut r = json!({});
        if let Some(peers) = peers {
            r[peers_key] = json!(peers);
        }
        if let Some(ports) = ports {
            r["ports"] = json!(ports);
        }
        r
    })
}

fn policy() -> impl Strategy<Value = Value> {
    let types = select(vec![
        None,
        Some(vec![]),
        Some(vec!["Ingress"]),
        Some(vec!["Egress"]),
        Some(vec!["Ingress", "Egress"]),
    ]);
    (
        0..3usize,
        prop_oneof![Just(json!({})), selector()],
        types,
        option::weighted(0.8, vec(rule("from"), 0..3)),
        option::weighted(0.8, vec(rule("to"), 0..3)),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(t) = types {
                spec["policyTypes"] = json!(t);
            }
            if let Some(i) = ingress {
                spec["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                spec["egress"] = json!(e);
            }
            json!({"metadata": {"namespace": NAMESPACES[ns]}, "spec": spec})
        })
}

/// A flow between two addresses chosen by index from pods and a few outsiders; with
/// `declared`, to a port the destination pod (or, with `.0`, any pod) declares.
#[derive(Clone, Debug)]
struct FlowPick {
    src: usize,
    dst: usize,
    proto: u8,
    dport: u16,
    declared: Option<(bool, usize)>,
}

fn flow_pick() -> impl Strategy<Value = FlowPick> {
    (
        any::<usize>(),
        any::<usize>(),
        select(vec![1u8, 6, 6, 17, 17, 132]),
        select(vec![53u16, 80, 443, 5353, 8080, 8090, 9000]),
        option::of((any::<bool>(), any::<usize>())),
    )
        .prop_map(|(src, dst, proto, dport, declared)| FlowPick {
            src,
            dst,
            proto,
            dport: if proto == 1 { 0 } else { dport },
            declared,
        })
}

impl FlowPick {
    fn flow(&self, snap: &Snapshot, addrs: &[IpAddr]) -> Flow {
        let src = addrs[self.src % addrs.len()];
        let same: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == src.is_ipv6())
            .collect();
        let dst = same[self.dst % same.len()];
        let icmp = if src.is_ipv6() { 58 } else { 1 };
        let mut flow = Flow {
            src,
            dst,
            proto: if self.proto == 1 { icmp } else { self.proto },
            dport: self.dport,
        };
        let any_pod = self.declared.is_some_and(|(any, _)| any);
        let declared: Vec<(u8, u16)> = snap
            .pods
            .values()
            .filter(|p| any_pod || PodAddrs::of(p).contains(dst))
            .flat_map(|p| &p.ports)
            .map(|p| {
                let proto = match p.protocol.as_deref() {
                    Some("UDP") => 17,
                    Some("SCTP") => 132,
                    _ => 6,
                };
                (proto, u16::try_from(p.container_port).unwrap_or_default())
            })
            .collect();
        if let Some((_, k)) = self.declared
            && !declared.is_empty()
        {
            (flow.proto, flow.dport) = declared[k % declared.len()];
        }
        flow
    }
}

fn named<T: serde::de::DeserializeOwned>(mut v: Value, name: String) -> T {
    v["metadata"]["name"] = json!(name);
    serde_json::from_value(v).expect("generated object")
}

fn build(ns_labels: Vec<Value>, pods: Vec<Value>, policies: Vec<Value>) -> Snapshot {
    let namespaces: Vec<Namespace> = ns_labels
        .into_iter()
        .enumerate()
        .map(|(i, labels)| {
            named(
                json!({"metadata": {"labels": labels}}),
                NAMESPACES[i].to_string(),
            )
        })
        .collect();
    let pods: Vec<Pod> = pods
        .into_iter()
        .enumerate()
        .map(|(i, p)| named(p, format!("pod-{i}")))
        .collect();
    // Checked here: the snapshot holds what the agent reads of them, not the `Pod`s.
    for p in &pods {
        assert_eq!(validate_pod(p), vec![], "generated pod {p:?}");
    }
    let policies: Vec<NetworkPolicy> = policies
        .into_iter()
        .enumerate()
        .map(|(i, p)| named(p, format!("np-{i}")))
        .collect();
    snapshot(namespaces, pods, policies)
}

/// Addresses flows go between: every pod's (thrice, to favour them), plus outsiders in and
/// out of the pods' range.
fn addresses(snap: &Snapshot) -> Vec<IpAddr> {
    let pod_ips: Vec<IpAddr> = snap
        .pods
        .values()
        .flat_map(|p| PodAddrs::of(p).iter())
        .collect();
    let mut out: Vec<IpAddr> = [&pod_ips[..], &pod_ips, &pod_ips].concat();
    for s in [
        "10.0.0.33",
        "10.0.0.63",
        "10.0.0.200",
        "192.168.1.1",
        NODE_IP,
        "fd00::21",
        "fd00::3f",
        "fd00::c8",
        "2001:db8::1",
        NODE_IP6,
    ] {
        out.push(s.parse().expect("address"));
    }
    out
}

fn check_direction(
    what: &str,
    flow: &Flow,
    addr: IpAddr,
    simulated: Option<bool>,
    reference: &DirectionVerdict,
    index: &PodIndex<'_>,
) -> Result<(), TestCaseError> {
    match (simulated, reference) {
        (None, DirectionVerdict::NotAPod) => Ok(()),
        (None, _) => {
            // A pod, but of another node: no endpoint here.
            let node_name = index.get(addr).and_then(|(_, p)| p.node_name.clone());
            prop_assert_ne!(
                node_name.as_deref(),
                Some(NODE),
                "{} {:?}: no endpoint",
                what,
                flow
            );
            Ok(())
        }
        (Some(allowed), v) => {
            prop_assert!(
                *v != DirectionVerdict::NotAPod,
                "{} {:?}: endpoint of no pod",
                what,
                flow
            );
            prop_assert_eq!(
                allowed,
                v.allows(),
                "{} {:?}: evaluator says {:?}",
                what,
                flow,
                v
            );
            Ok(())
        }
    }
}

/// Compiles `snap` and checks each flow's simulated verdicts against the evaluator's
/// ([`check_views`]: without dry-run policies the two views are one).
fn check_flows(snap: &Snapshot, flows: Vec<FlowPick>) -> Result<(), TestCaseError> {
    check_views(snap, flows)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn compiled_datapath_agrees_with_evaluator(
        ns_labels in vec(ns_labels(), 2..4),
        deployments in vec(deployment(), 1..6),
        policies in vec(policy(), 0..7),
        flows in vec(flow_pick(), 100),
    ) {
        let snap = build(ns_labels, deployments.concat(), policies);
        for np in snap.policies.values() {
            prop_assert_eq!(validate_policy(np), vec![], "generated policy {:?}", np);
        }
        for n in snap.namespaces.values() {
            prop_assert_eq!(validate_namespace(n), vec![]);
        }
        check_flows(&snap, flows)?;
    }
}

// ---- ClusterNetworkPolicies. ----

/// A CIDR for a `networks` peer: one of the ipBlock CIDRs (excepts dropped).
fn network() -> impl Strategy<Value = Value> {
    ip_block().prop_map(|b| b["cidr"].clone())
}

fn cnp_port() -> impl Strategy<Value = Value> {
    (
        0..6u8,
        select(vec!["tcp", "udp", "sctp"]),
        select(vec![53, 80, 443, 8080]),
        select(vec![1, 10, 8000]),
    )
        .prop_map(|(kind, proto, port, span)| match kind {
            0 | 1 => json!({proto: {"destinationPort": {"number": port}}}),
            2 => {
                json!({proto: {"destinationPort": {"range": {"start": port, "end": port + span}}}})
            }
            3 => json!({"destinationNamedPort": "http"}),
            4 => json!({"destinationNamedPort": "dns"}),
            _ => json!({proto: {"destinationPort": {"range": {"start": 1, "end": 60000}}}}),
        })
}

/// A peer; egress ones may also be networks, nodes or (unsupported) domain names.
fn cnp_peer(egress: bool) -> impl Strategy<Value = Value> {
    let kinds = if egress { 0..9u8 } else { 0..4u8 };
    let sel = || prop_oneof![Just(json!({})), selector(), selector()];
    (kinds, sel(), sel(), network(), any::<bool>()).prop_map(|(kind, a, b, net, all)| match kind {
        0 | 1 => json!({"namespaces": a}),
        2 | 3 => json!({"pods": {"namespaceSelector": a, "podSelector": b}}),
        4..=6 => json!({"networks": [net]}),
        7 => json!({"nodes": if all { json!({}) } else { json!({"matchLabels": {"zone": "a"}}) }}),
        _ => json!({"domainNames": ["example.com"]}),
    })
}

fn cnp_rule(egress: bool) -> impl Strategy<Value = Value> {
    (
        select(vec!["Accept", "Deny", "Pass"]),
        vec(cnp_peer(egress), 1..3),
        option::weighted(0.6, vec(cnp_port(), 1..3)),
        any::<bool>(),
    )
        .prop_map(move |(action, peers, ports, named)| {
            let key = if egress { "to" } else { "from" };
            let addressed = peers.iter().any(|p| {
                p.get("networks").is_some()
                    || p.get("nodes").is_some()
                    || p.get("domainNames").is_some()
            });
            let mut r = json!({"action": action, key: peers});
            if named {
                r["name"] = json!(format!("r-{action}"));
            }
            if peers_have_domain_names(&r[key]) {
                r["action"] = json!("Accept");
            }
            if let Some(mut ports) = ports {
                // Named ports are refused with address peers (CEL).
                if addressed {
                    ports.retain(|p| p.get("destinationNamedPort").is_none());
                }
                if !ports.is_empty() {
                    r["protocols"] = json!(ports);
                }
            }
            r
        })
}

fn peers_have_domain_names(peers: &Value) -> bool {
    peers
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p.get("domainNames").is_some()))
}

fn cluster_policy() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        select(vec![0, 5, 5, 10]),
        any::<bool>(),
        prop_oneof![Just(json!({})), selector()],
        prop_oneof![Just(json!({})), selector()],
        vec(cnp_rule(false), 0..3),
        vec(cnp_rule(true), 0..3),
    )
        .prop_map(|(baseline, priority, by_pods, a, b, ingress, egress)| {
            let subject = if by_pods {
                json!({"pods": {"namespaceSelector": a, "podSelector": b}})
            } else {
                json!({"namespaces": a})
            };
            json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy",
                "metadata": {},
                "spec": {
                    "tier": if baseline { "Baseline" } else { "Admin" },
                    "priority": priority,
                    "subject": subject,
                    "ingress": ingress,
                    "egress": egress,
                },
            })
        })
}

/// Two nodes: this one (its address, zone a) and another (zone b) with an address in the
/// pods' range and an outside one.
fn with_nodes_and_cluster_policies(mut snap: Snapshot, cnps: Vec<Value>) -> Snapshot {
    use std::sync::Arc;

    use super::cluster::{ClusterNetworkPolicy, NodeInfo, validate_cluster_policy};
    let node = |zone: &str, addrs: &[&str]| {
        let mut labels = super::labels::Labels::default();
        labels.insert("zone", zone);
        Arc::new(NodeInfo {
            labels: Arc::new(labels),
            addresses: addrs.iter().map(|a| a.parse().expect("address")).collect(),
        })
    };
    snap.nodes
        .insert(NODE.into(), node("a", &[NODE_IP, NODE_IP6]));
    snap.nodes
        .insert("node-2".into(), node("b", &["10.0.0.200", "192.168.1.1"]));
    for (i, v) in cnps.into_iter().enumerate() {
        let mut cnp: ClusterNetworkPolicy = named(v, format!("cnp-{i}"));
        cnp.metadata.name = Some(format!("cnp-{i}"));
        assert_eq!(validate_cluster_policy(&cnp), vec![], "generated {cnp:?}");
        snap.cluster_policies
            .insert(format!("cnp-{i}").into(), Arc::new(cnp));
    }
    snap
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// With ClusterNetworkPolicies of both tiers among the NetworkPolicies: the compiled
    /// maps, looked up as the datapath does and resolved with its own function, agree with
    /// the evaluator's literal reading of the spec.
    #[test]
    fn compiled_tiers_agree_with_evaluator(
        ns_labels in vec(ns_labels(), 2..4),
        deployments in vec(deployment(), 1..6),
        policies in vec(policy(), 0..4),
        cnps in vec(cluster_policy(), 1..5),
        flows in vec(flow_pick(), 100),
    ) {
        let snap = with_nodes_and_cluster_policies(build(ns_labels, deployments.concat(), policies), cnps);
        check_flows(&snap, flows)?;
    }
}

/// Marks the policies `picks` says (in turn, NetworkPolicies then ClusterNetworkPolicies)
/// dry-run.
fn with_dry_run(mut snap: Snapshot, picks: &[bool]) -> Snapshot {
    use std::sync::Arc;
    let mut picks = picks.iter().cycle();
    let mark = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations = Some([(super::mode::AUDIT_ANNOTATION.into(), "true".into())].into());
    };
    for np in snap.policies.values_mut() {
        if *picks.next().unwrap_or(&false) {
            mark(&mut Arc::make_mut(np).metadata);
        }
    }
    for p in snap.cluster_policies.values_mut() {
        if *picks.next().unwrap_or(&false) {
            mark(&mut Arc::make_mut(p).metadata);
        }
    }
    snap
}

/// With dry-run policies: each flow's enforced verdict (simulated) agrees with the
/// evaluator's without the dry-run policies, its would-be verdict with the evaluator's with
/// all of them, and each difference names a cause the agent knows.
fn check_views(snap: &Snapshot, flows: Vec<FlowPick>) -> Result<(), TestCaseError> {
    let node = node();
    let desired = compile(snap, &node, &Allocations::default());
    let enforced = enforced_only(snap);
    let index = PodIndex::new(snap, &node);
    let addrs = addresses(snap);
    for pick in flows {
        let flow = pick.flow(snap, &addrs);
        let simulated = sim(&desired, &flow);
        let e = evaluate(&enforced, &node, &flow);
        let w = evaluate(snap, &node, &flow);
        check_direction(
            "egress",
            &flow,
            flow.src,
            simulated.egress,
            &e.egress,
            &index,
        )?;
        check_direction(
            "ingress",
            &flow,
            flow.dst,
            simulated.ingress,
            &e.ingress,
            &index,
        )?;
        let (we, wi) = (simulated.would_egress, simulated.would_ingress);
        check_direction("would egress", &flow, flow.src, we, &w.egress, &index)?;
        check_direction("would ingress", &flow, flow.dst, wi, &w.ingress, &index)?;
        // Each difference is charged to a dry-run policy the would-be verdict names (when
        // it names one), or, where an enforced Admin rule decides today, to the dry-run Admin
        // policy whose earlier rule takes that decision away (a Pass the would-be verdict
        // does not name).
        for (what, changed, cause, would, enforced) in [
            (
                "egress",
                we != simulated.egress,
                &simulated.egress_cause,
                &w.egress,
                &e.egress,
            ),
            (
                "ingress",
                wi != simulated.ingress,
                &simulated.ingress_cause,
                &w.ingress,
                &e.ingress,
            ),
        ] {
            if !changed {
                continue;
            }
            let Some(cause) = cause else {
                return Err(TestCaseError::fail(format!(
                    "{what} {flow:?}: a difference of unknown cause"
                )));
            };
            let named = dry_run_policies(snap, would);
            let over_enforced_admin = matches!(
                enforced,
                DirectionVerdict::Cluster { rule, .. }
                    if rule.tier == super::cluster::Tier::Admin && rule.action != super::cluster::Action::Pass
            ) && cause.strip_prefix("ClusterNetworkPolicy/").is_some_and(
                |name| {
                    snap.cluster_policies.get(name).is_some_and(|p| {
                        super::mode::policy_dry_run(&p.metadata)
                            && p.spec.tier == super::cluster::Tier::Admin
                    })
                },
            );
            prop_assert!(
                named.is_empty() || named.iter().any(|n| **n == **cause) || over_enforced_admin,
                "{} {:?}: charged to {} but the would-be verdict {:?} names {:?}",
                what,
                flow,
                cause,
                would,
                named
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Dry-run NetworkPolicies and ClusterNetworkPolicies among enforced ones: both views
    /// of the compiled maps against the evaluator.
    #[test]
    fn dry_run_views_agree_with_evaluator(
        ns_labels in vec(ns_labels(), 2..4),
        deployments in vec(deployment(), 1..6),
        policies in vec(policy(), 0..5),
        cnps in vec(cluster_policy(), 0..4),
        picks in vec(any::<bool>(), 9),
        flows in vec(flow_pick(), 100),
    ) {
        let snap = with_nodes_and_cluster_policies(build(ns_labels, deployments.concat(), policies), cnps);
        check_views(&with_dry_run(snap, &picks), flows)?;
    }
}

/// Each object of `a` or `b` (by key): kept from `a` (the same `Arc`; picks 0-9), taken
/// from `b` (10), or left out (11), as `picks` say in turn: mostly small changes.
fn mix(a: &Snapshot, b: &Snapshot, picks: &[u8]) -> Snapshot {
    use std::{collections::BTreeMap, sync::Arc};
    let mut turn = picks.iter().cycle();
    let mut pick = || *turn.next().unwrap_or(&0);
    fn merge<K: Ord + Clone, V>(
        a: &BTreeMap<K, Arc<V>>,
        b: &BTreeMap<K, Arc<V>>,
        pick: &mut impl FnMut() -> u8,
    ) -> BTreeMap<K, Arc<V>> {
        let keys: std::collections::BTreeSet<&K> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let chosen = match pick() {
                    0..=9 => a.get(k).or(b.get(k)),
                    10 => b.get(k).or(a.get(k)),
                    _ => None,
                };
                chosen.map(|v| (k.clone(), v.clone()))
            })
            .collect()
    }
    Snapshot {
        namespaces: merge(&a.namespaces, &b.namespaces, &mut pick),
        pods: merge(&a.pods, &b.pods, &mut pick),
        policies: merge(&a.policies, &b.policies, &mut pick),
        cluster_policies: merge(&a.cluster_policies, &b.cluster_policies, &mut pick),
        nodes: merge(&a.nodes, &b.nodes, &mut pick),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The compiler kept from update to update gives what a fresh compile of the same
    /// snapshot (with the previous numbers) gives, and names every IP cache address that
    /// changed.
    #[test]
    fn incremental_updates_give_what_a_fresh_compile_gives(
        states in vec((vec(ns_labels(), 2..4), vec(deployment(), 1..6), vec(policy(), 0..7), vec(cluster_policy(), 0..3), vec(any::<bool>(), 4)), 2..8),
        picks in vec(0u8..12, 1..40),
        move_node_at in option::of(1usize..5),
    ) {
        // Some policies dry-run (a policy of one state may be dry-run in the next).
        let snaps: Vec<Snapshot> = states
            .into_iter()
            .map(|(n, d, p, c, dry)| {
                let snap = with_nodes_and_cluster_policies(build(n, d.concat(), p), c);
                with_dry_run(snap, &dry)
            })
            .collect();
        let mut node = node();
        let mut compiler = Compiler::new(node.clone(), Allocations::default());
        // The same updates handed over as changes (what the manifest source gives).
        let mut by_changes = Compiler::new(node.clone(), Allocations::default());
        let mut last = Snapshot::default();
        let mut prev = Allocations::default();
        let mut intended = crate::encode::MapContents::default();
        let ifindexes = std::collections::BTreeMap::new();
        let mut current = snaps[0].clone();
        for (step, next) in snaps.iter().enumerate() {
            if step > 0 {
                current = mix(&current, next, &picks[step % picks.len()..]);
            }
            if move_node_at == Some(step) {
                node.node_ips.insert(IpAddr::from([10, 0, 0, 2]));
                compiler.set_node(node.clone());
                by_changes.set_node(node.clone());
            }
            let before = compiler.desired().ipcache.clone();
            let changed = compiler.update(current.clone());
            let fresh = compile(&current, &node, &prev);
            prop_assert_eq!(compiler.desired(), &fresh, "step {}", step);
            // The lookups for the published names: what a fresh compiler keeps.
            let mut once = Compiler::new(node.clone(), prev.clone());
            once.update(current.clone());
            prop_assert_eq!(compiler.lookups(), once.lookups(), "step {}", step);
            let by_number: imbl::OrdMap<_, _> = fresh.allocations.identities.iter().map(|(k, id)| (*id, k.clone())).collect();
            prop_assert_eq!(&compiler.lookups().identities, &by_number, "step {}", step);
            let changed_too = by_changes.apply_changes(changes_between(&last, &current));
            prop_assert_eq!(by_changes.desired(), &fresh, "step {} (as changes)", step);
            prop_assert_eq!(by_changes.lookups(), once.lookups(), "step {} (as changes)", step);
            prop_assert_eq!(&changed_too, &changed, "step {} (as changes)", step);
            last = current.clone();
            crate::encode::update(&mut intended, compiler.desired(), &ifindexes, changed.as_ref());
            prop_assert_eq!(&intended, &crate::encode::encode(&fresh, &ifindexes));
            if let Some(changed) = changed {
                let after = &compiler.desired().ipcache;
                for ip in before.keys().chain(after.keys()) {
                    if before.get(ip) != after.get(ip) {
                        prop_assert!(changed.contains(ip), "step {}: {} changed, not named", step, ip);
                    }
                }
            }
            prev = fresh.allocations;
        }
    }
}

/// The changes that turn `old` into `new`, each key once, plus one object handed over again
/// unchanged (which must change nothing).
fn changes_between(old: &Snapshot, new: &Snapshot) -> crate::policy::model::SnapshotChanges {
    use std::{collections::BTreeMap, sync::Arc};
    fn diff<K: Ord + Clone, V: PartialEq>(
        old: &BTreeMap<K, Arc<V>>,
        new: &BTreeMap<K, Arc<V>>,
    ) -> Vec<(K, Option<Arc<V>>)> {
        let gone = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), None));
        let differ = new
            .iter()
            .filter(|(k, v)| old.get(*k).is_none_or(|o| **o != ***v))
            .map(|(k, v)| (k.clone(), Some(v.clone())));
        let again = new.iter().next().map(|(k, v)| (k.clone(), Some(v.clone())));
        gone.chain(differ).chain(again).collect()
    }
    crate::policy::model::SnapshotChanges {
        namespaces: diff(&old.namespaces, &new.namespaces),
        pods: diff(&old.pods, &new.pods),
        policies: diff(&old.policies, &new.policies),
        cluster_policies: diff(&old.cluster_policies, &new.cluster_policies),
        nodes: diff(&old.nodes, &new.nodes),
    }
}
