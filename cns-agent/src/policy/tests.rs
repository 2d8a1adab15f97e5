//! Scenario tests of the compiler against the reference evaluator: each case states the
//! expected outcome, and both the evaluator and the simulated datapath must give it.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{
    evaluate::{DirectionVerdict, evaluate},
    fixtures::{NODE_IP, assert_flows, flow, namespace, node, pod, policy, snapshot},
    incremental::compile,
    model::{Allocations, ObjectRef},
};

/// prod (team=a): web 10.0.0.1 (http 8080), db 10.0.0.2 (pg 5432)
/// dev (team=b): web 10.0.1.1 (http 80), client 10.0.1.2
pub(super) fn cluster(policies: Vec<NetworkPolicy>) -> super::model::Snapshot {
    snapshot(
        vec![namespace("prod", "team=a"), namespace("dev", "team=b")],
        vec![
            pod("prod", "web", "app=web", "10.0.0.1", &["http:8080/TCP"]),
            pod("prod", "db", "app=db", "10.0.0.2", &["pg:5432/TCP"]),
            pod("dev", "web", "app=web", "10.0.1.1", &["http:80/TCP"]),
            pod("dev", "client", "app=client", "10.0.1.2", &[]),
        ],
        policies,
    )
}

#[test]
fn no_policy_allows_everything() {
    assert_flows(
        &cluster(vec![]),
        &[
            ("10.0.1.2 -> 10.0.0.1 tcp/1", true),
            ("192.0.2.1 -> 10.0.0.2 icmp", true),
        ],
    );
}

#[test]
fn policy_types_defaults() {
    let ingress_only = policy(
        "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
",
    );
    assert_flows(
        &cluster(vec![ingress_only]),
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", true),
            ("10.0.1.2 -> 10.0.0.2 tcp/5432", false),
            // Egress of db is not isolated.
            ("10.0.0.2 -> 192.0.2.1 tcp/443", true),
        ],
    );

    let with_egress = policy(
        "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24}}]}]
",
    );
    assert_flows(
        &cluster(vec![with_egress]),
        &[
            ("10.0.0.2 -> 192.0.2.1 tcp/443", true),
            ("10.0.0.2 -> 198.51.100.1 tcp/443", false),
            // Ingress is isolated too, with no rule.
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", false),
        ],
    );

    let explicit_egress_only = policy(
        "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  ingress: [{from: [{podSelector: {matchLabels: {app: nothing}}}]}]
",
    );
    assert_flows(
        &cluster(vec![explicit_egress_only]),
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", true),
            ("10.0.0.2 -> 10.0.0.1 tcp/8080", false),
        ],
    );

    let empty_types_with_egress = policy(
        "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {}
  policyTypes: []
  egress: [{}]
",
    );
    assert_flows(
        &cluster(vec![empty_types_with_egress]),
        &[
            ("10.0.0.2 -> 10.0.1.1 udp/53", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/8080", false),
        ],
    );

    // An empty egress list is no egress: ingress only.
    let empty_egress = policy(
        "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  egress: []
",
    );
    assert_flows(
        &cluster(vec![empty_egress]),
        &[
            ("10.0.0.2 -> 192.0.2.1 tcp/443", true),
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", false),
        ],
    );

    let empty_spec = policy("metadata: {name: deny, namespace: prod}\nspec: {}");
    assert_flows(
        &cluster(vec![empty_spec]),
        &[
            ("10.0.1.2 -> 10.0.0.1 tcp/8080", false),
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", false),
            ("10.0.0.1 -> 10.0.1.1 tcp/80", true),
        ],
    );
}

#[test]
fn namespace_and_pod_selector_combinations() {
    // (peer, [from prod/db, from dev/web, from dev/client]) into prod/web.
    let cases: &[(&str, [bool; 3])] = &[
        ("{podSelector: {}}", [true, false, false]),
        (
            "{podSelector: {matchLabels: {app: web}}}",
            [false, false, false],
        ),
        ("{namespaceSelector: {}}", [true, true, true]),
        (
            "{namespaceSelector: {matchLabels: {team: b}}}",
            [false, true, true],
        ),
        (
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}, podSelector: {matchLabels: {app: web}}}",
            [false, true, false],
        ),
        (
            "{namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [a]}]}, podSelector: {matchExpressions: [{key: app, operator: Exists}]}}",
            [false, true, true],
        ),
    ];
    for (peer, want) in cases {
        let np = policy(&format!(
            "
metadata: {{name: p, namespace: prod}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{from: [{peer}]}}]
"
        ));
        let snap = cluster(vec![np]);
        assert_flows(
            &snap,
            &[
                ("10.0.0.2 -> 10.0.0.1 tcp/8080", want[0]),
                ("10.0.1.1 -> 10.0.0.1 tcp/8080", want[1]),
                ("10.0.1.2 -> 10.0.0.1 tcp/8080", want[2]),
                ("192.0.2.1 -> 10.0.0.1 tcp/8080", false),
            ],
        );
    }
}

#[test]
fn namespace_without_object_is_matched_by_name() {
    let snap = snapshot(
        vec![namespace("prod", "")],
        vec![
            pod("prod", "web", "app=web", "10.0.0.1", &[]),
            pod("ghost", "a", "app=a", "10.0.2.1", &[]),
        ],
        vec![policy(
            "
metadata: {name: p, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ghost}}}]}]
",
        )],
    );
    assert_flows(&snap, &[("10.0.2.1 -> 10.0.0.1 tcp/1", true)]);
    let desired = compile(&snap, &node(), &Allocations::default());
    assert!(desired.allocations.namespaces.contains_key("ghost"));
}

#[test]
fn ip_blocks_with_excepts() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25, 192.0.2.64/26]}}]
",
    );
    assert_flows(
        &cluster(vec![np.clone()]),
        &[
            ("192.0.2.1 -> 10.0.0.1 tcp/8080", true),
            ("192.0.2.63 -> 10.0.0.1 udp/53", true),
            ("192.0.2.64 -> 10.0.0.1 tcp/8080", false),
            ("192.0.2.200 -> 10.0.0.1 tcp/8080", false),
            ("198.51.100.1 -> 10.0.0.1 tcp/8080", false),
            // ipBlocks match pod addresses too.
            ("10.0.0.2 -> 10.0.0.1 tcp/8080", false),
        ],
    );

    // Another policy's except-free block overlapping the except still admits it, on its
    // own ports only.
    let other = policy(
        "
metadata: {name: b, namespace: prod}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.192/26}}]
    ports: [{port: 443}]
",
    );
    assert_flows(
        &cluster(vec![np, other]),
        &[
            ("192.0.2.200 -> 10.0.0.1 tcp/443", true),
            ("192.0.2.200 -> 10.0.0.1 tcp/8080", false),
            ("192.0.2.130 -> 10.0.0.1 tcp/443", false),
            ("192.0.2.10 -> 10.0.0.1 tcp/8080", true),
        ],
    );
}

#[test]
fn ip_block_covering_pods_and_excepting_one() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.2/32]}}]}]
",
    );
    assert_flows(
        &cluster(vec![np]),
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", true),
            ("10.0.0.1 -> 10.0.1.1 tcp/80", true),
            ("10.0.0.1 -> 10.0.1.2 tcp/80", false),
            ("10.0.0.1 -> 10.1.0.1 tcp/80", false),
        ],
    );
}

#[test]
fn host_bits_are_masked() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: 192.0.2.77/24, except: [192.0.2.200/25]}}]}]
",
    );
    let snap = cluster(vec![np]);
    assert_flows(
        &snap,
        &[
            ("192.0.2.1 -> 10.0.0.1 tcp/1", true),
            ("192.0.2.129 -> 10.0.0.1 tcp/1", false),
        ],
    );
    let desired = compile(&snap, &node(), &Allocations::default());
    let nets: Vec<String> = desired.cidrs.keys().map(|k| k.net.to_string()).collect();
    assert_eq!(nets, ["192.0.2.0/24", "192.0.2.128/25"]);
}

#[test]
fn ipv6_blocks_are_ignored() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: '::/0'}}]}]
",
    );
    assert_flows(
        &cluster(vec![np]),
        &[("192.0.2.1 -> 10.0.0.1 tcp/1", false)],
    );
}

#[test]
fn ports_protocols_and_end_port() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 8000, endPort: 8100}, {protocol: UDP, port: 53}, {protocol: SCTP}]
",
    );
    assert_flows(
        &cluster(vec![np]),
        &[
            ("10.0.1.2 -> 10.0.0.1 tcp/7999", false),
            ("10.0.1.2 -> 10.0.0.1 tcp/8000", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/8100", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/8101", false),
            ("10.0.1.2 -> 10.0.0.1 udp/8050", false),
            ("10.0.1.2 -> 10.0.0.1 udp/53", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/53", false),
            ("10.0.1.2 -> 10.0.0.1 sctp/1", true),
            ("10.0.1.2 -> 10.0.0.1 sctp/65535", true),
            // ICMP matches only rules without ports.
            ("10.0.1.2 -> 10.0.0.1 icmp", false),
        ],
    );
    let no_ports = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {}}]}]
",
    );
    assert_flows(
        &cluster(vec![no_ports]),
        &[("10.0.1.2 -> 10.0.0.1 icmp", true)],
    );
}

#[test]
fn named_ports_on_ingress_resolve_against_the_endpoint() {
    // `http` is 8080 on prod/web and 80 on dev/web.
    let np = |ns: &str| {
        policy(&format!(
            "
metadata: {{name: a, namespace: {ns}}}
spec:
  podSelector: {{}}
  ingress: [{{ports: [{{port: http}}, {{port: pg, protocol: UDP}}]}}]
"
        ))
    };
    assert_flows(
        &cluster(vec![np("prod"), np("dev")]),
        &[
            ("10.0.1.2 -> 10.0.0.1 tcp/8080", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/80", false),
            ("10.0.1.2 -> 10.0.1.1 tcp/80", true),
            ("10.0.1.2 -> 10.0.1.1 tcp/8080", false),
            // db declares no `http`, and `pg` only for TCP.
            ("10.0.1.2 -> 10.0.0.2 tcp/8080", false),
            ("10.0.1.2 -> 10.0.0.2 udp/5432", false),
        ],
    );
}

#[test]
fn named_ports_on_egress_resolve_per_destination_pod() {
    let np = policy(
        "
metadata: {name: a, namespace: dev}
spec:
  podSelector: {matchLabels: {app: client}}
  egress:
  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: pg}]
",
    );
    assert_flows(
        &cluster(vec![np]),
        &[
            ("10.0.1.2 -> 10.0.0.1 tcp/8080", true),
            ("10.0.1.2 -> 10.0.0.1 tcp/80", false),
            ("10.0.1.2 -> 10.0.1.1 tcp/80", true),
            ("10.0.1.2 -> 10.0.1.1 tcp/8080", false),
            ("10.0.1.2 -> 10.0.0.2 tcp/5432", true),
            // Named ports never match addresses that are no pod's.
            ("10.0.1.2 -> 192.0.2.1 tcp/5432", false),
        ],
    );
}

#[test]
fn named_port_differing_within_one_identity_stays_exact() {
    // Two replicas with equal labels declare `http` on different numbers.
    let snap = snapshot(
        vec![namespace("prod", "")],
        vec![
            pod("prod", "client", "app=client", "10.0.0.9", &[]),
            pod("prod", "web-1", "app=web", "10.0.0.1", &["http:80/TCP"]),
            pod("prod", "web-2", "app=web", "10.0.0.2", &["http:81/TCP"]),
            pod("prod", "web-3", "app=web", "10.0.0.3", &["http:80/TCP"]),
        ],
        vec![policy(
            "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: client}}
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
  - to: [{ipBlock: {cidr: 10.0.0.0/31}}]
    ports: [{port: http, protocol: TCP}]
",
        )],
    );
    assert_flows(
        &snap,
        &[
            ("10.0.0.9 -> 10.0.0.1 tcp/80", true),
            ("10.0.0.9 -> 10.0.0.1 tcp/81", false),
            ("10.0.0.9 -> 10.0.0.2 tcp/81", true),
            ("10.0.0.9 -> 10.0.0.2 tcp/80", false),
            ("10.0.0.9 -> 10.0.0.3 tcp/80", true),
        ],
    );
}

#[test]
fn policies_add_up() {
    let a = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
",
    );
    let b = policy(
        "
metadata: {name: b, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}], ports: [{port: 9000}]}]
",
    );
    let snap = cluster(vec![a, b]);
    assert_flows(
        &snap,
        &[
            ("10.0.0.1 -> 10.0.0.2 tcp/5432", true),
            ("10.0.0.1 -> 10.0.0.2 tcp/9000", false),
            ("10.0.1.2 -> 10.0.0.2 tcp/9000", true),
            ("10.0.1.2 -> 10.0.0.2 tcp/5432", false),
            ("10.0.1.2 -> 10.0.0.1 tcp/9000", true),
        ],
    );
    let verdict = evaluate(&snap, &node(), &flow("10.0.1.2 -> 10.0.0.2 tcp/9000"));
    assert_eq!(
        verdict.ingress,
        DirectionVerdict::Allowed {
            by: vec![(ObjectRef::new("prod", "b"), 0)]
        }
    );
    assert_eq!(verdict.egress, DirectionVerdict::NotIsolated);
    let verdict = evaluate(&snap, &node(), &flow("10.0.1.2 -> 10.0.0.2 tcp/1"));
    assert_eq!(
        verdict.ingress,
        DirectionVerdict::Denied {
            isolated_by: vec![ObjectRef::new("prod", "a"), ObjectRef::new("prod", "b")]
        }
    );
    assert!(!verdict.allowed());
}

#[test]
fn host_and_non_pod_addresses() {
    let deny = policy("metadata: {name: deny, namespace: prod}\nspec: {podSelector: {}}");
    let snap = cluster(vec![deny]);
    assert_flows(
        &snap,
        &[
            (&format!("{NODE_IP} -> 10.0.0.1 tcp/8080"), true),
            ("192.0.2.1 -> 10.0.0.1 tcp/8080", false),
        ],
    );
    let v = evaluate(
        &snap,
        &node(),
        &flow(&format!("{NODE_IP} -> 10.0.0.1 tcp/8080")),
    );
    assert_eq!(v.ingress, DirectionVerdict::FromHost);
    assert_eq!(v.egress, DirectionVerdict::NotAPod);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["ingress"]["verdict"], "from_host");
}
