//! Test fixtures: objects from short descriptions, flows from `"10.0.0.1 -> 10.0.0.2
//! tcp/80"`, and the check that the compiled datapath (simulated) and the reference
//! evaluator agree with an expected outcome.

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use serde_json::json;

use super::{
    evaluate::{Flow, evaluate},
    incremental::compile,
    model::{Allocations, NodeContext, ObjectRef, PodInfo, Snapshot},
    sim::sim,
};

pub const NODE: &str = "node-1";
pub const NODE_IP: &str = "10.0.0.254";
pub const NODE_IP6: &str = "fd00::fe";

pub fn node() -> NodeContext {
    NodeContext {
        node_name: NODE.to_string(),
        node_ips: [NODE_IP.parse().unwrap(), NODE_IP6.parse().unwrap()].into(),
    }
}

/// `"k=v,k2=v2"` as a JSON object.
fn labels(spec: &str) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = spec
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("label k=v");
            (k.to_string(), json!(v))
        })
        .collect();
    serde_json::Value::Object(map)
}

pub fn namespace(name: &str, label_spec: &str) -> Namespace {
    let mut labels = labels(label_spec);
    labels["kubernetes.io/metadata.name"] = json!(name);
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

/// A running pod on [`NODE`] at `ip`; `ports` are `"name:number/PROTO"` container ports.
pub fn pod(ns: &str, name: &str, label_spec: &str, ip: &str, ports: &[&str]) -> Pod {
    let ports: Vec<_> = ports
        .iter()
        .map(|p| {
            let (name, rest) = p.split_once(':').expect("name:port/PROTO");
            let (num, proto) = rest.split_once('/').expect("name:port/PROTO");
            json!({"name": name, "containerPort": num.parse::<i32>().unwrap(), "protocol": proto})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels(label_spec)},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip},
    }))
    .unwrap()
}

/// A NetworkPolicy from YAML (with its metadata).
pub fn policy(yaml: &str) -> NetworkPolicy {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("policy yaml: {e}\n{yaml}"))
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

pub fn snapshot(
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
) -> Snapshot {
    Snapshot {
        namespaces: namespaces
            .into_iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n.into()))
            .collect(),
        pods: pods
            .into_iter()
            .map(|p| (key(&p.metadata), Arc::new(PodInfo::from(&p))))
            .collect(),
        policies: policies
            .into_iter()
            .map(|p| (key(&p.metadata), p.into()))
            .collect(),
        ..Snapshot::default()
    }
}

/// `"10.0.0.1 -> 10.0.0.2 tcp/80"`, `"... udp/53"`, `"... sctp/9"`, `"... icmp"`.
pub fn flow(s: &str) -> Flow {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [src, "->", dst, what] = parts[..] else {
        panic!("bad flow {s:?}")
    };
    let (proto, dport) = match what.split_once('/') {
        Some(("tcp", p)) => (6, p.parse().unwrap()),
        Some(("udp", p)) => (17, p.parse().unwrap()),
        Some(("sctp", p)) => (132, p.parse().unwrap()),
        None if what == "icmp" => (1, 0),
        _ => panic!("bad flow {s:?}"),
    };
    Flow {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        proto,
        dport,
    }
}

/// Asserts, for each `(flow, allowed)`, that the evaluator and the simulated compiled
/// datapath both give `allowed` (both directions together), and agree per direction.
pub fn assert_flows(snap: &Snapshot, cases: &[(&str, bool)]) {
    let node = node();
    let desired = compile(snap, &node, &Allocations::default());
    for (desc, want) in cases {
        let f = flow(desc);
        let reference = evaluate(snap, &node, &f);
        let simulated = sim(&desired, &f);
        assert_eq!(reference.allowed(), *want, "evaluate {desc}: {reference:?}");
        let sim_egress = simulated.egress.unwrap_or(true);
        let sim_ingress = simulated.ingress.unwrap_or(true);
        assert_eq!(sim_egress, reference.egress.allows(), "sim egress {desc}");
        assert_eq!(
            sim_ingress,
            reference.ingress.allows(),
            "sim ingress {desc}"
        );
    }
}
