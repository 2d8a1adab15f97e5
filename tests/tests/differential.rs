//! Differential testing of the kernel programs against the reference evaluator: random
//! namespaces, pods, labels and policies (selectors, ipBlocks with except, port ranges,
//! named ports, both directions) and ClusterNetworkPolicies of both tiers (namespaces,
//! pods and networks peers, ports and ranges, every action), compiled and written to the maps by the agent's own
//! pipeline; random flows to and from one pod run through `BPF_PROG_TEST_RUN`; the kernel's
//! verdict must equal `policy::evaluate`'s for every flow, and so must `cns_xdp`'s for
//! every ingress flow, run twice (the second run of a denied flow hits the deny cache).
//! Pods are dual-stack (pod `i` at 10.0.0.(1+i) and fd00::(1+i)), ipBlocks of either family,
//! and a third of the flows run over IPv6 (the same peer's IPv6 address: [`v6_of`]).
//!
//! `CNS_DIFF_CASES` sets the number of random clusters (default 1000, each with 24 flows);
//! run a long mode locally with e.g. `CNS_DIFF_CASES=20000`. A mismatch is shrunk by
//! proptest and printed as a minimal cluster + flow.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex, OnceLock},
};

use cns_agent::{
    agent::{Planner, Scope},
    datapath::{Datapath, PROG_FROM_POD, PROG_TO_POD, PROG_XDP, XDP_DROP, XDP_PASS},
    encode::MapContents,
    policy::{
        Flow,
        cluster::{ClusterNetworkPolicy, validate_cluster_policy},
        compile, evaluate,
        model::{Allocations, NodeContext, ObjectRef, PodInfo, Snapshot},
        validate_policy,
    },
    reconcile,
};
use cns_common::maps::{CONFIG_NO_CONNTRACK_CREATE, Config};
use cns_tests::{kernel::PinDir, kernel_or_skip, packets};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::{Value, json};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const NON_POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + i as u8)
}

const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 1);

/// A flow's IPv6 twin of an IPv4 address: pods and other 10.0.0.x at fd00::x, the node at
/// [`NODE_IP6`], anything else (the outside) in 2001:db8::/32.
fn v6_of(a: Ipv4Addr) -> Ipv6Addr {
    let [p, q, r, s] = a.octets();
    match (p, q, r) {
        _ if a == NODE_IP => NODE_IP6,
        (10, 0, 0) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, s.into()),
        _ => Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (u16::from(p) << 8) | u16::from(q),
            (u16::from(r) << 8) | u16::from(s),
        ),
    }
}

#[derive(Clone, Debug)]
struct PodSpec {
    ns: usize,
    app: &'static str,
    tier: Option<&'static str>,
    /// (name, port, protocol)
    ports: Vec<(&'static str, u16, &'static str)>,
}

#[derive(Clone, Debug)]
struct Cluster {
    ns_labels: Vec<(&'static str, Option<&'static str>)>,
    pods: Vec<PodSpec>,
    policies: Vec<(usize, Value)>,
    /// ClusterNetworkPolicy specs (either tier).
    cluster_policies: Vec<Value>,
}

#[derive(Clone, Debug)]
struct TestFlow {
    ingress: bool,
    peer: Ipv4Addr,
    /// Over IPv6: the peer's and the pod's IPv6 addresses.
    v6: bool,
    proto: u8,
    port: u16,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    let port = prop_oneof![
        Just(("http", 80, "TCP")),
        Just(("http", 8080, "TCP")),
        Just(("dns", 53, "UDP")),
        Just(("sig", 3868, "SCTP")),
    ];
    (
        0..3usize,
        prop::sample::select(vec!["web", "db", "api"]),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
        prop::collection::vec(port, 0..3),
    )
        .prop_map(|(ns, app, tier, mut ports)| {
            ports.sort();
            ports.dedup_by_key(|p| p.0);
            PodSpec {
                ns,
                app,
                tier,
                ports,
            }
        })
}

fn selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["web", "db", "api"]).prop_map(|a| json!({"matchLabels": {"app": a}})),
        prop::sample::select(vec!["web", "db"])
            .prop_map(|a| json!({"matchExpressions": [{"key": "app", "operator": "In", "values": [a, "api"]}]})),
        Just(json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
    ]
}

fn ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["a", "b"]).prop_map(|t| json!({"matchLabels": {"team": t}})),
        Just(json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]})),
        prop::sample::select(vec!["ns0", "ns1"])
            .prop_map(|n| json!({"matchLabels": {"kubernetes.io/metadata.name": n}})),
    ]
}

fn ip_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"cidr": "10.0.0.0/24"})),
        Just(json!({"cidr": "10.0.0.0/24", "except": ["10.0.0.2/32", "10.0.0.4/31"]})),
        Just(json!({"cidr": "10.0.0.0/29", "except": ["10.0.0.4/30"]})),
        Just(json!({"cidr": "10.0.0.5/30"})),
        Just(json!({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]})),
        Just(json!({"cidr": "192.168.0.0/16"})),
        Just(json!({"cidr": "10.255.0.0/30"})),
        Just(json!({"cidr": "fd00::/120"})),
        Just(json!({"cidr": "fd00::/120", "except": ["fd00::2/128", "fd00::4/127"]})),
        Just(json!({"cidr": "fd00::5/126"})),
        Just(json!({"cidr": "::/0", "except": ["fd00::/8"]})),
        Just(json!({"cidr": "2001:db8::/32"})),
        Just(json!({"cidr": "fd00:ff::/126"})),
    ]
}

fn peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"podSelector": s})),
        ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (selector(), ns_selector())
            .prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        ip_block().prop_map(|b| json!({"ipBlock": b})),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![53, 80, 3868, 8080]).prop_map(|p| json!({"port": p})),
        (
            prop::sample::select(vec!["TCP", "UDP", "SCTP"]),
            prop::sample::select(vec![53, 80, 8080])
        )
            .prop_map(|(proto, p)| json!({"protocol": proto, "port": p})),
        prop::sample::select(vec!["TCP", "UDP", "SCTP"])
            .prop_map(|proto| json!({"protocol": proto})),
        Just(json!({"protocol": "TCP", "port": 80, "endPort": 90})),
        Just(json!({"protocol": "TCP", "port": 1000, "endPort": 9000})),
        prop::sample::select(vec![
            ("http", "TCP"),
            ("dns", "UDP"),
            ("sig", "SCTP"),
            ("dns", "TCP")
        ])
        .prop_map(|(n, proto)| json!({"protocol": proto, "port": n})),
    ]
}

fn rule(peer_key: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(peer(), 0..3)),
        prop::option::of(prop::collection::vec(port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = serde_json::Map::new();
            if let Some(p) = peers {
                r.insert(peer_key.into(), Value::Array(p));
            }
            if let Some(p) = ports {
                r.insert("ports".into(), Value::Array(p));
            }
            Value::Object(r)
        })
}

fn policy() -> impl Strategy<Value = (usize, Value)> {
    let types = prop_oneof![
        Just(None),
        Just(Some(json!(["Ingress"]))),
        Just(Some(json!(["Egress"]))),
        Just(Some(json!(["Ingress", "Egress"]))),
    ];
    (
        0..3usize,
        selector(),
        types,
        prop::option::of(prop::collection::vec(rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(rule("to"), 0..3)),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = serde_json::Map::new();
            spec.insert("podSelector".into(), sel);
            if let Some(t) = types {
                spec.insert("policyTypes".into(), t);
            }
            if let Some(i) = ingress {
                spec.insert("ingress".into(), Value::Array(i));
            }
            if let Some(e) = egress {
                spec.insert("egress".into(), Value::Array(e));
            }
            (ns, Value::Object(spec))
        })
}

fn cnp_peer(egress: bool) -> impl Strategy<Value = Value> {
    let pods = (ns_selector(), selector())
        .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}}));
    let namespaces = ns_selector().prop_map(|n| json!({"namespaces": n}));
    let cidr = prop::sample::select(vec![
        "10.0.0.0/24",
        "10.0.0.4/30",
        "0.0.0.0/0",
        "192.168.0.0/16",
        "fd00::/120",
        "::/0",
    ]);
    let networks = cidr.prop_map(|c| json!({"networks": [c]}));
    if egress {
        prop_oneof![pods, namespaces, networks].boxed()
    } else {
        prop_oneof![pods, namespaces].boxed()
    }
}

fn cnp_rule(egress: bool) -> impl Strategy<Value = Value> {
    let protocol = prop_oneof![
        (
            prop::sample::select(vec!["tcp", "udp", "sctp"]),
            prop::sample::select(vec![53, 80, 8080])
        )
            .prop_map(|(p, n)| json!({p: {"destinationPort": {"number": n}}})),
        Just(json!({"tcp": {"destinationPort": {"range": {"start": 80, "end": 90}}}})),
        Just(json!({"tcp": {"destinationPort": {"range": {"start": 1000, "end": 9000}}}})),
    ];
    (
        prop::sample::select(vec!["Accept", "Deny", "Pass"]),
        prop::collection::vec(cnp_peer(egress), 1..3),
        prop::option::of(prop::collection::vec(protocol, 1..3)),
    )
        .prop_map(move |(action, peers, protocols)| {
            let mut r = json!({"action": action});
            r[if egress { "to" } else { "from" }] = json!(peers);
            if let Some(p) = protocols {
                r["protocols"] = json!(p);
            }
            r
        })
}

fn cluster_policy() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::sample::select(vec![1, 5, 5]),
        prop_oneof![
            ns_selector().prop_map(|n| json!({"namespaces": n})),
            (ns_selector(), selector())
                .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}})),
        ],
        prop::collection::vec(cnp_rule(false), 0..3),
        prop::collection::vec(cnp_rule(true), 0..3),
    )
        .prop_map(|(baseline, priority, subject, ingress, egress)| {
            json!({
                "tier": if baseline { "Baseline" } else { "Admin" },
                "priority": priority,
                "subject": subject,
                "ingress": ingress,
                "egress": egress,
            })
        })
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b"]),
                prop::option::of(Just("prod")),
            ),
            3,
        ),
        prop::collection::vec(pod_spec(), 2..6),
        prop::collection::vec(policy(), 0..5),
        prop::collection::vec(cluster_policy(), 0..3),
    )
        .prop_map(|(ns_labels, pods, policies, cluster_policies)| Cluster {
            ns_labels,
            pods,
            policies,
            cluster_policies,
        })
}

fn flows(pods: usize) -> impl Strategy<Value = Vec<TestFlow>> {
    let mut peers: Vec<Ipv4Addr> = (1..pods).map(pod_ip).collect();
    peers.extend([OUTSIDE, NON_POD, NODE_IP]);
    let flow = (
        any::<bool>(),
        prop::sample::select(peers),
        prop::sample::select(vec![1u8, 6, 17, 132]),
        prop::sample::select(vec![53u16, 80, 85, 3868, 8080, 9999]),
        prop::sample::select(vec![false, false, true]),
    )
        .prop_map(|(ingress, peer, proto, port, v6)| TestFlow {
            ingress,
            peer,
            v6,
            // ICMPv6 for an IPv6 "ICMP" flow.
            proto: if v6 && proto == 1 { 58 } else { proto },
            port,
        });
    prop::collection::vec(flow, 24)
}

fn snapshot(c: &Cluster) -> Snapshot {
    let mut s = Snapshot::default();
    for (i, name) in NAMESPACES.iter().enumerate() {
        let (team, env) = c.ns_labels[i];
        let mut labels = json!({"team": team, "kubernetes.io/metadata.name": name});
        if let Some(env) = env {
            labels["env"] = json!(env);
        }
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        s.namespaces.insert((*name).to_owned(), ns.into());
    }
    for (i, p) in c.pods.iter().enumerate() {
        let mut labels = json!({"app": p.app});
        if let Some(t) = p.tier {
            labels["tier"] = json!(t);
        }
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|(n, port, proto)| json!({"name": n, "containerPort": port, "protocol": proto}))
            .collect();
        let name = format!("pod{i}");
        let ns = NAMESPACES[p.ns];
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": pod_ip(i).to_string(),
                "podIPs": [{"ip": pod_ip(i).to_string()}, {"ip": v6_of(pod_ip(i)).to_string()}]},
        }))
        .unwrap();
        s.pods
            .insert(ObjectRef::new(ns, name), Arc::new(PodInfo::from(&pod)));
    }
    for (i, (ns, spec)) in c.policies.iter().enumerate() {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": format!("p{i}"), "namespace": NAMESPACES[*ns]},
            "spec": spec,
        }))
        .unwrap();
        let errors = validate_policy(&np);
        assert!(
            errors.is_empty(),
            "generated an invalid policy: {errors:?}\n{spec:#}"
        );
        s.policies
            .insert(ObjectRef::new(NAMESPACES[*ns], format!("p{i}")), np.into());
    }
    for (i, spec) in c.cluster_policies.iter().enumerate() {
        let name = format!("cnp{i}");
        let cnp: ClusterNetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        let errors = validate_cluster_policy(&cnp);
        assert!(
            errors.is_empty(),
            "generated an invalid ClusterNetworkPolicy: {errors:?}\n{spec:#}"
        );
        s.cluster_policies.insert(name.into(), cnp.into());
    }
    s
}

/// One datapath for all cases (loading per case would dominate the run time).
struct Kernel {
    dp: Datapath,
    written: MapContents,
    revision: u32,
}

fn kernel() -> &'static Mutex<Kernel> {
    static KERNEL: OnceLock<Mutex<Kernel>> = OnceLock::new();
    KERNEL.get_or_init(|| {
        // The kernel object lives in a static, whose Drop never runs: the pins go as soon
        // as the programs are loaded (the open map fds keep everything alive until the
        // process exits).
        let pin_dir = PinDir::new("cns-diff-");
        cns_agent::paths::prepare_pin_dir(&pin_dir).expect("pin dir");
        let dp = Datapath::load(&pin_dir).expect("load programs");
        drop(pin_dir);
        Mutex::new(Kernel {
            dp,
            written: MapContents::default(),
            revision: 0,
        })
    })
}

fn packet(src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Vec<u8> {
    let l4 = match proto {
        packets::TCP => packets::tcp(40000, port, packets::SYN),
        // An echo request.
        packets::ICMP => vec![8, 0, 0, 0, 0x12, 0x34, 0, 1],
        58 => packets::icmp6_echo(128, 0x1234, 1),
        _ => packets::ports(40000, port, 8),
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            packets::ipv4(s.octets(), d.octets(), proto, 1, 0, 0, &l4)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => packets::ipv6(s.octets(), d.octets(), &[], proto, &l4),
        _ => unreachable!("one family per flow"),
    }
}

fn check(c: &Cluster, flows: &[TestFlow]) -> Result<(), TestCaseError> {
    let snap = snapshot(c);
    let node = NodeContext {
        node_name: "node-1".into(),
        node_ips: [NODE_IP.into(), NODE_IP6.into()].into(),
    };
    let desired = compile(&snap, &node, &Allocations::default());
    let under_test = ObjectRef::new(NAMESPACES[c.pods[0].ns], "pod0");
    let mut k = kernel().lock().unwrap_or_else(|e| e.into_inner());
    // As the agent plans a sync: the whole desired state against what was written.
    let mut planner = Planner::default();
    let ifindexes = BTreeMap::from([(under_test, 1)]);
    let ops = planner
        .plan(&desired, &ifindexes, &k.written, None, Scope::WHOLE)
        .ops;
    let failed = reconcile::apply(&mut k.dp, &ops);
    prop_assert!(failed.is_empty(), "map writes failed: {failed:?}");
    k.written = planner.intended().clone();
    k.revision += 1;
    let config = Config {
        audit_mode: 0,
        revision: k.revision,
        event_rate: 0,
        event_burst: 0,
        flags: CONFIG_NO_CONNTRACK_CREATE,
        hz: 0,
    };
    k.dp.set_config(&config).expect("config");
    for f in flows {
        let (me, peer): (IpAddr, IpAddr) = if f.v6 {
            (v6_of(pod_ip(0)).into(), v6_of(f.peer).into())
        } else {
            (pod_ip(0).into(), f.peer.into())
        };
        let (src, dst, prog) = if f.ingress {
            (peer, me, PROG_TO_POD)
        } else {
            (me, peer, PROG_FROM_POD)
        };
        let dport = if f.proto == 1 || f.proto == 58 {
            0
        } else {
            f.port
        };
        let v = evaluate(
            &snap,
            &node,
            &Flow {
                src,
                dst,
                proto: f.proto,
                dport,
            },
        );
        let expected = if f.ingress {
            v.ingress.allows()
        } else {
            v.egress.allows()
        };
        let verdict =
            k.dp.test_run(prog, &packet(src, dst, f.proto, f.port))
                .expect("test run");
        prop_assert!(
            verdict == -1 || verdict == 2,
            "unexpected program return {verdict}"
        );
        prop_assert_eq!(
            verdict == -1,
            expected,
            "{} {} -> {} proto {} port {}: kernel {}, evaluator {:?}",
            if f.ingress { "ingress" } else { "egress" },
            src,
            dst,
            f.proto,
            f.port,
            if verdict == -1 { "pass" } else { "drop" },
            v
        );
        // XDP on the uplink decides ingress the same way, twice: the second run of a
        // denied flow drops on the deny cache entry the first left (entries of earlier
        // clusters carry older revisions and must be ignored).
        if f.ingress {
            for run in ["first", "cached"] {
                let xdp =
                    k.dp.test_run(PROG_XDP, &packet(src, dst, f.proto, f.port))
                        .expect("xdp test run");
                prop_assert_eq!(
                    xdp == XDP_PASS,
                    expected,
                    "XDP ({} run) ingress {} -> {} proto {} port {}: kernel {}, evaluator {:?}",
                    run,
                    src,
                    dst,
                    f.proto,
                    f.port,
                    if xdp == XDP_PASS { "pass" } else { "drop" },
                    v
                );
                prop_assert!(xdp == XDP_PASS || xdp == XDP_DROP, "XDP returned {xdp}");
            }
        }
    }
    Ok(())
}

#[test]
fn kernel_verdicts_equal_the_reference_evaluator() {
    if !kernel_or_skip("differential") {
        return;
    }
    let cases = std::env::var("CNS_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = cluster().prop_flat_map(|c| {
        let n = c.pods.len();
        (Just(c), flows(n))
    });
    if let Err(e) = runner.run(&strategy, |(c, f)| check(&c, &f)) {
        panic!("{e}");
    }
}
