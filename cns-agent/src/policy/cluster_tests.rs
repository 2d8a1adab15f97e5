//! ClusterNetworkPolicy: validation, and the tiers on small clusters (the evaluator and
//! the compiled datapath, simulated, against stated outcomes).

use std::sync::Arc;

use super::{
    cluster::{ClusterNetworkPolicy, validate_cluster_policy},
    evaluate::{DirectionVerdict, evaluate},
    fixtures::{assert_flows, flow, namespace, node, pod, policy, snapshot},
    model::Snapshot,
};

fn cnp(yaml: &str) -> ClusterNetworkPolicy {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("cnp yaml: {e}\n{yaml}"))
}

fn with(mut snap: Snapshot, cnps: &[&str]) -> Snapshot {
    for y in cnps {
        let c = cnp(y);
        assert_eq!(validate_cluster_policy(&c), vec![], "{y}");
        snap.cluster_policies.insert(c.name().into(), Arc::new(c));
    }
    snap
}

/// Namespaces prod (web 10.0.0.1, db 10.0.0.2) and dev (app 10.0.0.3).
fn cluster() -> Snapshot {
    snapshot(
        vec![namespace("prod", "env=prod"), namespace("dev", "env=dev")],
        vec![
            pod("prod", "web", "app=web", "10.0.0.1", &["http:8080/TCP"]),
            pod("prod", "db", "app=db", "10.0.0.2", &["pg:5432/TCP"]),
            pod("dev", "app", "app=x", "10.0.0.3", &[]),
        ],
        vec![],
    )
}

const ALLOW_WEB_TO_DB: &str = "
metadata: {name: allow-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
";

#[test]
fn validation_names_the_field() {
    let fields = |y: &str| -> Vec<String> {
        validate_cluster_policy(&cnp(y))
            .into_iter()
            .map(|e| e.field)
            .collect()
    };
    assert_eq!(
        fields(
            "metadata: {name: x}
spec:
  tier: Admin
  priority: 1001
  subject: {namespaces: {}, pods: {podSelector: {}}}
  egress:
  - action: Deny
    to: [{networks: [10.0.0.0/33]}]
    protocols: [{destinationNamedPort: http}, {tcp: {destinationPort: {range: {start: 90, end: 80}}}}]
  - action: Deny
    to: [{domainNames: [example.com]}]
"
        ),
        [
            "spec.priority",
            "spec.subject",
            "spec.egress[0].protocols[1].tcp.destinationPort.range",
            "spec.egress[0].to[0].networks[0]",
            "spec.egress[0].protocols",
            "spec.egress[1].to[0].domainNames",
        ]
    );
}

#[test]
fn admin_deny_overrides_a_networkpolicy_allow() {
    let snap = with(
        snapshot(
            cluster()
                .namespaces
                .values()
                .map(|n| (**n).clone())
                .collect(),
            vec![
                pod("prod", "web", "app=web", "10.0.0.1", &[]),
                pod("prod", "db", "app=db", "10.0.0.2", &[]),
            ],
            vec![policy(ALLOW_WEB_TO_DB)],
        ),
        &["
metadata: {name: no-db}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: deny-5432
    action: Deny
    from: [{namespaces: {}}]
    protocols: [{tcp: {destinationPort: {number: 5432}}}]
"],
    );
    assert_flows(
        &snap,
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", false),
            ("10.0.0.1 -> 10.0.0.2 tcp/80", true),
        ],
    );
    let v = evaluate(&snap, &node(), &flow("10.0.0.1 -> 10.0.0.2 tcp/5432"));
    let DirectionVerdict::Cluster { rule, .. } = v.ingress else {
        panic!("{v:?}")
    };
    assert_eq!(
        (rule.policy.as_str(), rule.rule.as_str()),
        ("no-db", "deny-5432")
    );
}

#[test]
fn pass_goes_to_networkpolicy_then_baseline() {
    let pass = "
metadata: {name: pass-prod}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - action: Pass
    from: [{namespaces: {matchLabels: {env: prod}}}]
  - action: Accept
    from: [{namespaces: {}}]
";
    let baseline = "
metadata: {name: baseline-deny}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
";
    // web -> db passes to NetworkPolicy (which isolates db and allows web); dev -> db is
    // accepted by the second Admin rule; dev -> web passes nothing (web is not isolated):
    // the second rule accepts it. prod/web <- prod/db: Pass, web not isolated: Baseline denies.
    let snap = with(
        snapshot(
            cluster()
                .namespaces
                .values()
                .map(|n| (**n).clone())
                .collect(),
            cluster()
                .pods
                .keys()
                .map(|r| match &*r.name {
                    "web" => pod("prod", "web", "app=web", "10.0.0.1", &[]),
                    "db" => pod("prod", "db", "app=db", "10.0.0.2", &[]),
                    _ => pod("dev", "app", "app=x", "10.0.0.3", &[]),
                })
                .collect(),
            vec![policy(ALLOW_WEB_TO_DB)],
        ),
        &[pass, baseline],
    );
    assert_flows(
        &snap,
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/80", true),
            ("10.0.0.3 -> 10.0.0.2 tcp/80", true),
            ("10.0.0.2 -> 10.0.0.1 tcp/80", false),
            ("10.0.0.3 -> 10.0.0.1 tcp/80", true),
            // dev/app is selected by the Baseline policy only: denied from everywhere.
            ("10.0.0.1 -> 10.0.0.3 tcp/80", false),
        ],
    );
}

#[test]
fn same_priority_is_ordered_by_name() {
    let a = "
metadata: {name: a-deny}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to: [{networks: [10.0.0.0/24]}]
";
    let b = "
metadata: {name: b-accept}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - action: Accept
    to: [{pods: {namespaceSelector: {}, podSelector: {}}}]
";
    let snap = with(cluster(), &[a, b]);
    assert_flows(&snap, &[("10.0.0.1 -> 10.0.0.2 tcp/80", false)]);
    let c = b.replace("b-accept", "0-accept");
    let snap = with(cluster(), &[a, &c]);
    assert_flows(&snap, &[("10.0.0.1 -> 10.0.0.2 tcp/80", true)]);
}

#[test]
fn unsupported_domain_names_fail_closed_for_deny_and_match_nothing_for_accept() {
    let accept = "
metadata: {name: dns-accept}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - action: Accept
    to: [{domainNames: [example.com]}]
  - action: Deny
    to: [{networks: [0.0.0.0/0]}]
";
    let snap = with(cluster(), &[accept]);
    assert_flows(&snap, &[("10.0.0.1 -> 192.0.2.1 tcp/443", false)]);
    assert!(super::cluster::unsupported(&cnp(accept)).is_some());
}

#[test]
fn node_peers_select_node_addresses() {
    let mut snap = with(
        cluster(),
        &["
metadata: {name: no-nodes}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to: [{nodes: {matchLabels: {role: worker}}}]
"],
    );
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n2", "labels": {"role": "worker"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}, {"type": "Hostname", "address": "n2"}]},
    }))
    .unwrap();
    snap.nodes
        .insert("n2".into(), Arc::new(super::cluster::NodeInfo::from(&node)));
    assert_flows(
        &snap,
        &[
            ("10.0.0.1 -> 192.0.2.10 tcp/10250", false),
            ("10.0.0.1 -> 192.0.2.11 tcp/10250", true),
        ],
    );
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let snap = with(
        cluster(),
        &["
metadata: {name: http-only}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {env: dev}}}
  egress:
  - action: Accept
    to: [{namespaces: {matchLabels: {env: prod}}}]
    protocols: [{destinationNamedPort: http}]
  - action: Deny
    to: [{namespaces: {matchLabels: {env: prod}}}]
"],
    );
    assert_flows(
        &snap,
        &[
            ("10.0.0.3 -> 10.0.0.1 tcp/8080", true),
            ("10.0.0.3 -> 10.0.0.1 tcp/80", false),
            ("10.0.0.3 -> 10.0.0.2 tcp/8080", false),
        ],
    );
}
