use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use super::{cidrs::cidrs_text, *};
use crate::source::{LastGood, load};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn snapshot(yaml: &str) -> Snapshot {
    let (s, errors) = load(
        &[(PathBuf::from("t.yaml"), Ok(yaml.to_owned()))],
        &mut LastGood::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    s
}

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {podIP: 10.0.2.10}
";

const ALLOW_CLIENT: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
";

fn diff_of(old: &str, new: &str, node: Option<&str>) -> Diff {
    let (old, new) = (snapshot(old), snapshot(new));
    let node = node.map(|n| NodeContext {
        node_name: n.into(),
        ..NodeContext::default()
    });
    compare(
        &old,
        &states_of(&old, node.as_ref()),
        &new,
        &states_of(&new, node.as_ref()),
    )
}

/// `+ from PEER PORTS` / `- ...` per rule, for compact expectations.
fn rule_lines(d: &DirectionDiff) -> Vec<String> {
    let added = d
        .rules_added
        .iter()
        .map(|r| format!("+ {} {}", r.peer, r.ports));
    let removed = d
        .rules_removed
        .iter()
        .map(|r| format!("- {} {}", r.peer, r.ports));
    added.chain(removed).collect()
}

#[test]
fn lpm_ranges_flatten_nested_prefixes() {
    let r = lpm_ranges(&[
        (net("10.0.0.0/8"), 1),
        (net("10.1.0.0/16"), 2),
        (net("10.1.2.0/24"), 1),
        (net("192.168.0.0/16"), 3),
    ]);
    let a = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
    assert_eq!(
        r,
        vec![
            (a("10.0.0.0"), a("10.1.0.0"), 1),
            (a("10.1.0.0"), a("10.1.2.0"), 2),
            (a("10.1.2.0"), a("10.1.3.0"), 1),
            (a("10.1.3.0"), a("10.2.0.0"), 2),
            (a("10.2.0.0"), a("11.0.0.0"), 1),
            (a("192.168.0.0"), a("192.169.0.0"), 3),
        ]
    );
    assert_eq!(lpm_ranges(&[]), vec![]);
}

#[test]
fn ranges_become_the_fewest_cidrs() {
    assert_eq!(range_to_cidrs(false, 0, 1 << 32), vec![net("0.0.0.0/0")]);
    let a = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
    assert_eq!(
        range_to_cidrs(false, a("10.0.0.1"), a("10.0.0.8")),
        vec![net("10.0.0.1/32"), net("10.0.0.2/31"), net("10.0.0.4/30")]
    );
    assert_eq!(
        range_to_cidrs(false, a("255.255.255.254"), 1 << 32),
        vec![net("255.255.255.254/31")]
    );
}

#[test]
fn ipv6_ranges_reach_the_end_of_the_space() {
    let r = lpm_ranges(&[(net("::/0"), 1), (net("fd00::/8"), 2)]);
    let fd = u128::from("fd00::".parse::<std::net::Ipv6Addr>().unwrap());
    let fe = u128::from("fe00::".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(r, vec![(0, fd, 1), (fd, fe, 2), (fe, u128::MAX, 1)]);
    assert_eq!(range_to_cidrs(true, 0, u128::MAX), vec![net("::/0")]);
    assert_eq!(range_to_cidrs(true, fd, fe), vec![net("fd00::/8")]);
    let all_but_fd: Vec<IpNetwork> = range_to_cidrs(true, 0, fd)
        .into_iter()
        .chain(range_to_cidrs(true, fe, u128::MAX))
        .collect();
    assert_eq!(cidrs_text(&all_but_fd), "::/0 except fd00::/8");
    let both = [net("10.0.0.0/8"), net("fd00::/8")];
    assert_eq!(cidrs_text(&both), "10.0.0.0/8,fd00::/8");
}

#[test]
fn cidr_lists_read_as_an_except_when_shorter() {
    let text = |nets: &[&str]| cidrs_text(&nets.iter().map(|n| net(n)).collect::<Vec<_>>());
    assert_eq!(text(&["10.0.0.0/24"]), "10.0.0.0/24");
    assert_eq!(
        text(&["10.0.0.0/24", "10.0.2.0/24"]),
        "10.0.0.0/24,10.0.2.0/24"
    );
    let all_but_ten = range_to_cidrs(false, 0, 10 << 24)
        .into_iter()
        .chain(range_to_cidrs(false, 11 << 24, 1 << 32))
        .collect::<Vec<_>>();
    assert_eq!(cidrs_text(&all_but_ten), "0.0.0.0/0 except 10.0.0.0/8");
    // Two holes in a /16.
    let a = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
    let nets: Vec<IpNetwork> = range_to_cidrs(false, a("10.1.0.0"), a("10.1.3.0"))
        .into_iter()
        .chain(range_to_cidrs(false, a("10.1.4.0"), a("10.1.200.7")))
        .chain(range_to_cidrs(false, a("10.1.200.8"), a("10.2.0.0")))
        .collect();
    assert_eq!(
        cidrs_text(&nets),
        "10.1.0.0/16 except 10.1.3.0/24,10.1.200.7/32"
    );
}

#[test]
fn a_new_policy_isolates_and_adds_rules() {
    let d = diff_of(CLUSTER, &format!("{CLUSTER}---{ALLOW_CLIENT}"), Some("n1"));
    assert_eq!(d.policies_added, vec!["a/allow-client"]);
    assert_eq!(d.endpoints.len(), 1, "{d:#?}");
    let e = &d.endpoints[0];
    assert_eq!((e.pod.as_str(), e.change), ("a/web", "changed"));
    assert_eq!(
        e.ingress.isolation_change,
        Some(Change {
            from: Some(false),
            to: Some(true)
        })
    );
    assert_eq!(rule_lines(&e.ingress), vec!["+ pods b:app=client TCP 8080"]);
    assert_eq!(e.ingress.rules_added[0].policies, vec!["a/allow-client"]);
    assert!(e.egress.is_empty());
    // Node n2 has only the client, which nothing isolates: no endpoint differs.
    let d = diff_of(CLUSTER, &format!("{CLUSTER}---{ALLOW_CLIENT}"), Some("n2"));
    assert!(d.endpoints.is_empty());
    assert!(!d.is_empty(), "a policy was added");
}

#[test]
fn the_same_rules_under_another_name_change_no_endpoint() {
    let old = format!("{CLUSTER}---{ALLOW_CLIENT}");
    let new = format!(
        "{CLUSTER}---{}",
        ALLOW_CLIENT.replace("allow-client", "renamed")
    );
    let d = diff_of(&old, &new, None);
    assert_eq!(d.policies_added, vec!["a/renamed"]);
    assert_eq!(d.policies_removed, vec!["a/allow-client"]);
    assert!(d.endpoints.is_empty(), "{d:#?}");
    assert_eq!(d.endpoints_compared, 2);
    assert!(diff_of(&old, &old, None).is_empty());
}

#[test]
fn ip_blocks_read_back_as_their_cidrs_whatever_the_partition() {
    let egress = |rules: &str| {
        format!(
            "{CLUSTER}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: out, namespace: b}}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
  egress:{rules}
"
        )
    };
    let one = "
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 443}]";
    let two = "
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 443}]
  - to: [{ipBlock: {cidr: 10.1.2.0/24}}]
    ports: [{port: 53, protocol: UDP}]";
    let d = diff_of(CLUSTER, &egress(one), None);
    assert_eq!(
        rule_lines(&d.endpoints[0].egress),
        vec!["+ cidrs 10.0.0.0/8 except 10.1.0.0/16 TCP 443"]
    );
    // A second block inside the first one's except changes the partition, not the first rule.
    let d = diff_of(&egress(one), &egress(two), None);
    assert_eq!(
        rule_lines(&d.endpoints[0].egress),
        vec!["+ cidrs 10.1.2.0/24 UDP 53"]
    );
}

#[test]
fn api_server_defaults_are_no_change() {
    let written = format!("{CLUSTER}---{ALLOW_CLIENT}");
    // As the API server returns it: policyTypes, protocol and empty lists filled in.
    let returned = written
        .replace(
            "  podSelector: {matchLabels: {app: web}}\n  ingress:",
            "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n  egress: []\n  ingress:",
        )
        .replace("ports: [{port: http}]", "ports: [{port: http, protocol: TCP}]")
        .replace("namespaceSelector: {}", "namespaceSelector: {matchLabels: {}}");
    assert_ne!(written, returned);
    assert!(diff_of(&written, &returned, None).is_empty());
    let udp = written.replace(
        "ports: [{port: http}]",
        "ports: [{port: http, protocol: UDP}]",
    );
    assert_eq!(
        diff_of(&written, &udp, None).policies_changed,
        vec!["a/allow-client"]
    );
}

#[test]
fn mode_annotation_and_new_endpoints() {
    let annotated = CLUSTER.replace(
        "metadata: {name: a, labels: {team: a}}",
        "metadata: {name: a, labels: {team: a}, annotations: {cns.io/policy-audit-mode: \"false\"}}",
    );
    let d = diff_of(CLUSTER, &annotated, None);
    assert_eq!(d.endpoints.len(), 1);
    assert_eq!(
        d.endpoints[0].mode,
        Some(Change {
            from: Some("global"),
            to: Some("blocking")
        })
    );
    let more = format!(
        "{CLUSTER}---
apiVersion: v1
kind: Pod
metadata: {{name: new, namespace: b}}
spec: {{nodeName: n2, containers: [{{name: c, image: i}}]}}
status: {{podIP: 10.0.2.11}}
"
    );
    let d = diff_of(CLUSTER, &more, Some("n2"));
    assert_eq!(d.endpoints.len(), 1);
    assert_eq!(
        (d.endpoints[0].pod.as_str(), d.endpoints[0].change),
        ("b/new", "added")
    );
    assert_eq!(
        d.endpoints[0].ingress.isolation_change,
        Some(Change {
            from: None,
            to: Some(false)
        })
    );
}

#[test]
fn replace_keeps_the_kinds_dir_lacks_and_merge_removes_nothing() {
    let live = snapshot(&format!("{CLUSTER}---{ALLOW_CLIENT}"));
    let other = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: other, namespace: b}
spec: {podSelector: {}}
";
    let replaced = combine(&live, snapshot(other), Apply::Replace);
    assert_eq!(replaced.pods.len(), 2);
    assert_eq!(replaced.namespaces.len(), 2);
    assert_eq!(
        replaced
            .policies
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["b/other"]
    );
    let merged = combine(&live, snapshot(other), Apply::Merge);
    assert_eq!(
        merged
            .policies
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["a/allow-client", "b/other"]
    );
    let pods_only = snapshot(
        "
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: a}
spec: {containers: [{name: c, image: i}]}
",
    );
    let replaced = combine(&live, pods_only, Apply::Replace);
    assert_eq!(replaced.pods.len(), 1);
    assert!(replaced.policies.is_empty());
}

#[test]
fn the_live_state_survives_the_socket_and_compiles_alike() {
    let live = snapshot(&format!("{CLUSTER}---{ALLOW_CLIENT}"));
    let node = NodeContext {
        node_name: "n1".into(),
        node_ips: [IpAddr::from([192, 168, 0, 1])].into(),
    };
    let sent = serde_json::to_string(&LiveState::new(&live, &node, "manifests:/x".into())).unwrap();
    let (got, got_node) = serde_json::from_str::<LiveState>(&sent)
        .unwrap()
        .into_parts();
    assert_eq!(got_node.node_name, "n1");
    assert_eq!(got_node.node_ips, node.node_ips);
    assert_eq!(
        compile(&got, &got_node, &Allocations::default()),
        compile(&live, &node, &Allocations::default())
    );
    assert!(
        compare(
            &live,
            &states_of(&live, Some(&node)),
            &got,
            &states_of(&got, Some(&node))
        )
        .is_empty()
    );
    assert!(!sent.contains("\"image\""), "pods are trimmed: {sent}");
}

#[tokio::test]
async fn asks_the_running_agent_over_the_control_socket() {
    use crate::{
        cli::{ClientArgs, DiffArgs, Output},
        control::{self, Reply, Request},
    };
    let dir = std::env::temp_dir().join(format!("cns-diff-test-{}", std::process::id()));
    let socket = dir.join("agent.sock");
    let listener = control::bind(&socket).unwrap();
    let (requests, mut served) = tokio::sync::mpsc::channel(4);
    let (events, _) = tokio::sync::broadcast::channel(1);
    tokio::spawn(control::serve(listener, requests, events));
    // A stand-in for the agent thread, answering with its live state.
    let live = snapshot(&format!("{CLUSTER}---{ALLOW_CLIENT}"));
    tokio::spawn(async move {
        while let Some((req, reply)) = served.recv().await {
            assert_eq!(req, Request::Snapshot);
            let node = NodeContext {
                node_name: "n1".into(),
                ..NodeContext::default()
            };
            _ = reply.send(Reply::ok(LiveState::new(&live, &node, "test".into())));
        }
    });
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let args = |socket: &std::path::Path| DiffArgs {
        dir: manifests.clone(),
        from: None,
        node_name: None,
        merge: false,
        client: ClientArgs {
            socket: socket.to_path_buf(),
        },
        output: Output::Json,
    };
    let write = |text: String| std::fs::write(manifests.join("all.yaml"), text).unwrap();

    write(format!("{CLUSTER}---{ALLOW_CLIENT}"));
    assert_eq!(command::run(&args(&socket)).await, command::EXIT_SAME);
    write(CLUSTER.to_owned());
    assert_eq!(command::run(&args(&socket)).await, command::EXIT_DIFFERENT);
    write("kind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Near}]}}\n".into());
    assert_eq!(command::run(&args(&socket)).await, command::EXIT_ERROR);
    write(CLUSTER.to_owned());
    assert_eq!(
        command::run(&args(&dir.join("no-agent.sock"))).await,
        command::EXIT_ERROR
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
