//! The real agent enforcing NetworkPolicies on real TCP and UDP traffic in a virtual node.
//! See `cns_tests::cluster` for the pods and their addresses.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use cns_tests::{
    cluster::{Cluster, SERVER, UDP_PORT, cluster_yaml},
    kernel_or_skip,
    netns::OUTSIDE_IP,
    traffic::{in_netns, tcp_ok, udp_ok},
};

const BETA_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);

const DENY_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: alpha}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

const DENY_EGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: alpha}
spec:
  podSelector: {}
  policyTypes: [Egress]
";

macro_rules! kernel_test {
    () => {
        if !kernel_or_skip(module_path!()) {
            return;
        }
    };
}

#[test]
fn default_deny_ingress_blocks_new_connections_but_not_the_pods_own() {
    kernel_test!();
    let c = Cluster::start(false, &[]);
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "no policy: open"
    );
    c.agent.apply("deny.yaml", DENY_INGRESS);
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "deny ingress: blocked"
    );
    assert!(
        !udp_ok(&c.gamma_client.netns, SERVER, UDP_PORT),
        "deny ingress: UDP blocked"
    );
    // The isolated pod's own connections and their replies still flow.
    assert!(
        tcp_ok(&c.server.netns, BETA_CLIENT, 8080),
        "egress not isolated"
    );
    assert!(
        udp_ok(&c.server.netns, BETA_CLIENT, UDP_PORT),
        "egress UDP not isolated"
    );
    // Other namespaces are not affected.
    assert!(tcp_ok(&c.gamma_client.netns, BETA_CLIENT, 9090));
    // Removing the policy opens it again.
    c.agent.remove("deny.yaml");
    c.agent.sync().expect("sync");
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "policy removed: open"
    );
}

#[test]
fn default_deny_egress_keeps_replies_flowing() {
    kernel_test!();
    let c = Cluster::start(false, &[("deny.yaml", DENY_EGRESS)]);
    assert!(!tcp_ok(&c.server.netns, BETA_CLIENT, 8080), "egress denied");
    assert!(
        !udp_ok(&c.server.netns, BETA_CLIENT, UDP_PORT),
        "egress UDP denied"
    );
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "ingress open, replies flow out"
    );
    assert!(
        udp_ok(&c.beta_client.netns, SERVER, UDP_PORT),
        "UDP replies flow out"
    );
}

#[test]
fn allow_from_namespace_selector() {
    kernel_test!();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-beta, namespace: alpha}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: beta}}
";
    let c = Cluster::start(false, &[("p.yaml", policy)]);
    assert!(tcp_ok(&c.beta_client.netns, SERVER, 8080));
    assert!(tcp_ok(&c.beta_other.netns, SERVER, 9090));
    assert!(!tcp_ok(&c.gamma_client.netns, SERVER, 8080));
}

#[test]
fn allow_from_pod_and_namespace_selector() {
    kernel_test!();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-of-beta, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: team, operator: In, values: [beta]}]
      podSelector: {matchLabels: {role: client}}
";
    let c = Cluster::start(false, &[("p.yaml", policy)]);
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "beta client allowed"
    );
    assert!(
        !tcp_ok(&c.beta_other.netns, SERVER, 8080),
        "beta other: wrong pod labels"
    );
    assert!(
        !tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "gamma client: wrong namespace"
    );
}

#[test]
fn ip_block_with_except_applies_to_pods_and_outside() {
    kernel_test!();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.2.7/24
        except: [10.0.2.128/25]
    - ipBlock:
        cidr: 10.255.0.0/30
";
    let c = Cluster::start(false, &[("p.yaml", policy)]);
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "10.0.2.10 inside the block"
    );
    assert!(
        !tcp_ok(&c.beta_other.netns, SERVER, 8080),
        "10.0.2.200 excepted"
    );
    assert!(
        !tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "10.0.3.10 outside the block"
    );
    assert!(
        tcp_ok(&c.node.outside, SERVER, 8080),
        "outside 10.255.0.2 allowed"
    );
    let _ = OUTSIDE_IP;
}

#[test]
fn end_port_range_and_named_port() {
    kernel_test!();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - ports:
    - {protocol: TCP, port: 8085, endPort: 8095}
  - from: [{namespaceSelector: {}}]
    ports:
    - {port: http}
    - {port: dns, protocol: UDP}
";
    let c = Cluster::start(false, &[("p.yaml", policy)]);
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8090),
        "8090 in 8085-8095"
    );
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 9090),
        "9090 outside the range"
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "named port http = 8080"
    );
    assert!(
        udp_ok(&c.gamma_client.netns, SERVER, UDP_PORT),
        "named port dns = 5353/UDP"
    );
}

#[test]
fn policy_and_label_changes_take_effect_after_sync() {
    kernel_test!();
    let allow_clients = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}, namespaceSelector: {}}]
";
    let c = Cluster::start(false, &[("p.yaml", allow_clients)]);
    assert!(tcp_ok(&c.beta_client.netns, SERVER, 8080));
    // Relabel beta/client: it is no longer a client.
    c.agent
        .apply("cluster.yaml", &cluster_yaml("former-client"));
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "relabelled pod blocked"
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "other client still allowed"
    );
    // Edit the policy to allow the new label too.
    c.agent
        .apply("p.yaml", &allow_clients.replace("{role: client}", "{}"));
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "policy edit allows it again"
    );
}

#[test]
fn tightening_a_policy_cuts_established_connections() {
    kernel_test!();
    let c = Cluster::start(false, &[]);
    let mut conn = in_netns(&c.beta_client.netns, || {
        TcpStream::connect_timeout(&SocketAddr::from((SERVER, 8080)), Duration::from_secs(2))
            .expect("connect")
    });
    conn.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 5];
    conn.write_all(b"hello").unwrap();
    conn.read_exact(&mut buf).expect("echo before the policy");
    c.agent.apply("deny.yaml", DENY_INGRESS);
    conn.write_all(b"again").unwrap();
    assert!(
        conn.read_exact(&mut buf).is_err(),
        "the established connection must be cut"
    );
}

#[test]
fn audit_mode_passes_everything_and_counts_audit() {
    kernel_test!();
    let c = Cluster::start(true, &[("deny.yaml", DENY_INGRESS)]);
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "audit: not blocked"
    );
    assert!(
        udp_ok(&c.gamma_client.netns, SERVER, UDP_PORT),
        "audit: UDP not blocked"
    );
    assert!(
        c.agent.packets("beta", "alpha", "ingress", "audit") > 0,
        "{:?}",
        c.agent.counters()
    );
    assert!(c.agent.packets("gamma", "alpha", "ingress", "audit") > 0);
    assert_eq!(c.agent.packets("beta", "alpha", "ingress", "dropped"), 0);
    // Switching to blocking at runtime enforces without a restart.
    c.agent.cli(&["mode", "blocking"]).expect("mode blocking");
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "blocking: blocked"
    );
    assert!(c.agent.packets("beta", "alpha", "ingress", "dropped") > 0);
}

#[test]
fn mode_switch_keeps_allowed_connections() {
    kernel_test!();
    let c = Cluster::start(true, &[]);
    let mut conn = in_netns(&c.beta_client.netns, || {
        TcpStream::connect_timeout(&SocketAddr::from((SERVER, 8080)), Duration::from_secs(2))
            .expect("connect")
    });
    conn.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 5];
    for mode in ["blocking", "audit", "blocking"] {
        c.agent.cli(&["mode", mode]).expect("mode");
        conn.write_all(b"hello").unwrap();
        conn.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("connection broken after switching to {mode}: {e}"));
    }
}

#[test]
fn counters_match_a_known_amount_of_traffic() {
    kernel_test!();
    let c = Cluster::start(false, &[]);
    const N: u64 = 25;
    let sent = in_netns(&c.beta_client.netns, || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut echoed = 0;
        for _ in 0..N {
            s.send_to(&[0u8; 100], (SERVER, UDP_PORT)).unwrap();
            let mut buf = [0u8; 200];
            if s.recv_from(&mut buf).is_ok() {
                echoed += 1;
            }
        }
        echoed
    });
    assert_eq!(sent, N, "all datagrams echoed");
    // Request: leaves beta (egress of beta/client), enters alpha (ingress of alpha/server).
    assert_eq!(c.agent.packets("beta", "alpha", "egress", "forwarded"), N);
    assert_eq!(c.agent.packets("beta", "alpha", "ingress", "forwarded"), N);
    // Replies the other way.
    assert_eq!(c.agent.packets("alpha", "beta", "egress", "forwarded"), N);
    assert_eq!(c.agent.packets("alpha", "beta", "ingress", "forwarded"), N);
    // Bytes: 100 payload + 8 UDP + 20 IP + 14 Ethernet per packet.
    let bytes: u64 = c
        .agent
        .counters()
        .iter()
        .filter(|r| {
            r["source"] == "beta" && r["destination"] == "alpha" && r["direction"] == "ingress"
        })
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes, N * 142);
}

#[test]
fn traffic_from_the_node_is_always_allowed() {
    kernel_test!();
    let c = Cluster::start(false, &[("deny.yaml", DENY_INGRESS)]);
    assert!(
        tcp_ok(&c.node.node, SERVER, 8080),
        "kubelet-style probe from the node"
    );
    assert!(!tcp_ok(&c.beta_client.netns, SERVER, 8080));
}

#[test]
fn bad_input_is_reported_and_the_rest_stays_enforced() {
    kernel_test!();
    let c = Cluster::start(false, &[("deny.yaml", DENY_INGRESS)]);
    let bad = DENY_INGRESS.replace(
        "policyTypes: [Ingress]",
        "policyTypes: [Ingress]\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]",
    );
    c.agent.write("deny.yaml", &bad);
    let err = c
        .agent
        .sync()
        .expect_err("sync must fail on an invalid CIDR");
    assert!(err.contains("deny.yaml"), "{err}");
    assert!(err.contains("NetworkPolicy alpha/deny-ingress"), "{err}");
    assert!(
        err.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{err}"
    );
    // The last good version (deny all) is still enforced; the agent is alive.
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "last good policy kept"
    );
    c.agent.write("garbage.yaml", "kind: [unclosed");
    let err = c.agent.sync().expect_err("sync must fail on invalid YAML");
    assert!(err.contains("garbage.yaml"), "{err}");
    c.agent.remove("garbage.yaml");
    c.agent.apply("deny.yaml", DENY_INGRESS);
    assert!(!tcp_ok(&c.beta_client.netns, SERVER, 8080));
}

#[test]
fn pods_and_veths_that_appear_later_are_enforced() {
    kernel_test!();
    let mut c = Cluster::start(false, &[("deny.yaml", DENY_INGRESS)]);
    let late_ip = Ipv4Addr::new(10, 0, 1, 20);
    let late = c.node.add_pod(late_ip);
    cns_tests::traffic::tcp_echo_server(&late.netns, 8080);
    c.agent.apply(
        "late.yaml",
        &cns_tests::manifests::pod("alpha", "late", &[("app", "late")], late_ip, &[]),
    );
    let status = c.agent.cli(&["status", "-o", "json"]).expect("status");
    assert!(
        status.contains(&late.veth),
        "the new veth is attached: {status}"
    );
    assert!(
        !tcp_ok(&c.beta_client.netns, late_ip, 8080),
        "new pod isolated by deny-ingress"
    );
    assert!(
        tcp_ok(&late.netns, BETA_CLIENT, 8080),
        "its own connections flow"
    );
}

#[test]
fn control_socket_is_root_only() {
    kernel_test!();
    let c = Cluster::start(true, &[]);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&c.agent.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0, "socket owner");
}

fn explain(c: &Cluster, from: &str, to: &str, port: &str) -> serde_json::Value {
    let out = c
        .agent
        .cli(&[
            "policy", "explain", "--from", from, "--to", to, "--port", port, "-o", "json",
        ])
        .expect("explain");
    serde_json::from_str(&out).expect("explain json")
}

#[test]
fn policy_explain_agrees_with_the_datapath() {
    kernel_test!();
    let policies = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-clients, namespace: alpha}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}, namespaceSelector: {}}]
    ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: gamma-egress, namespace: gamma}
spec:
  podSelector: {}
  egress:
  - to: [{namespaceSelector: {matchLabels: {team: alpha}}}]
";
    let c = Cluster::start(false, &[("p.yaml", policies)]);
    let pods = [
        ("alpha/server", &c.server),
        ("beta/client", &c.beta_client),
        ("beta/other", &c.beta_other),
        ("gamma/client", &c.gamma_client),
    ];
    let mut checked = 0;
    for (from, from_net) in pods {
        for (to, to_net) in pods {
            if from == to {
                continue;
            }
            for port in [8080u16, 9090] {
                let e = explain(&c, from, to, &format!("{port}/TCP"));
                let connected = tcp_ok(&from_net.netns, to_net.ip, port);
                let expected = if connected { "forwarded" } else { "dropped" };
                assert_eq!(e["outcome"], expected, "{from} -> {to}:{port}: {e:#}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
    // The explanation names the policy and the rule.
    let e = explain(&c, "beta/client", "alpha/server", "8080/TCP");
    assert!(
        e["why"]
            .to_string()
            .contains("alpha/server-from-clients rule #0"),
        "{e:#}"
    );
    let e = explain(&c, "beta/other", "10.0.1.10", "8080");
    assert!(
        e["why"]
            .to_string()
            .contains("DENIED: isolated by alpha/server-from-clients"),
        "{e:#}"
    );
    // Bad arguments are errors naming the problem.
    let err = c.agent.cli(&[
        "policy",
        "explain",
        "--from",
        "nope/x",
        "--to",
        "alpha/server",
        "--port",
        "80",
    ]);
    assert!(err.unwrap_err().contains("no pod nope/x"));
    // In audit mode a denied flow passes, and explain says so.
    c.agent.cli(&["mode", "audit"]).expect("mode audit");
    let e = explain(&c, "beta/other", "alpha/server", "8080/TCP");
    assert_eq!(e["outcome"], "audit", "{e:#}");
    assert!(tcp_ok(&c.beta_other.netns, SERVER, 8080));
}

#[test]
fn namespace_mode_override_and_return_to_configured() {
    kernel_test!();
    let c = Cluster::start(false, &[("deny.yaml", DENY_INGRESS)]);
    assert!(!tcp_ok(&c.beta_client.netns, SERVER, 8080), "blocking");
    let out = c
        .agent
        .cli(&["mode", "audit", "--namespace", "alpha"])
        .expect("mode");
    assert!(out.contains("mode of namespace alpha: audit"), "{out}");
    assert!(tcp_ok(&c.beta_client.netns, SERVER, 8080), "alpha in audit");
    assert!(c.agent.packets("beta", "alpha", "ingress", "audit") > 0);
    let status = c.agent.cli(&["status", "-o", "json"]).expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["mode"], "blocking");
    assert_eq!(status["namespace_overrides"]["alpha"], "audit");
    let server = status["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pod"] == "alpha/server")
        .unwrap();
    assert_eq!(server["mode"], "audit", "effective mode per endpoint");
    // Back to the configured (blocking) mode.
    c.agent
        .cli(&["mode", "configured", "--namespace", "alpha"])
        .expect("mode");
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "blocking again"
    );
    // A global override and its return.
    c.agent.cli(&["mode", "audit"]).expect("mode");
    assert!(tcp_ok(&c.beta_client.netns, SERVER, 8080), "global audit");
    let out = c.agent.cli(&["mode", "configured"]).expect("mode");
    assert!(out.contains("mode: blocking"), "{out}");
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "configured blocking"
    );
}

#[test]
fn policy_show_decodes_the_maps() {
    kernel_test!();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: show-me, namespace: alpha}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: beta}}, podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 8000, endPort: 8007}]
  - from: [{ipBlock: {cidr: 10.255.0.0/30}}]
    ports: [{port: http}]
";
    let c = Cluster::start(false, &[("p.yaml", policy)]);
    let out = c
        .agent
        .cli(&["policy", "show", "--pod", "alpha/server", "-o", "json"])
        .expect("show");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let eps = shown.as_array().unwrap();
    assert_eq!(eps.len(), 1, "{shown:#}");
    let ep = &eps[0];
    assert_eq!(ep["pod"], "alpha/server");
    assert_eq!(ep["interface"], c.server.veth.as_str());
    assert_eq!(ep["ingress"]["isolated"], true);
    assert_eq!(ep["egress"]["isolated"], false);
    let rules: Vec<(String, String, String)> = ep["ingress"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["peer"].as_str().unwrap().to_owned(),
                r["ports"].as_str().unwrap().to_owned(),
                r["policy"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        rules.contains(&(
            "pods beta:role=client".into(),
            "TCP 8000-8007".into(),
            "alpha/show-me".into()
        )),
        "{rules:#?}"
    );
    assert!(
        rules.contains(&(
            "cidrs 10.255.0.0/30".into(),
            "TCP 8080".into(),
            "alpha/show-me".into()
        )),
        "{rules:#?}"
    );
    assert!(
        ep["warnings"].as_array().unwrap().is_empty(),
        "maps match intent: {ep:#}"
    );
    // The table form names the same things.
    let table = c
        .agent
        .cli(&["policy", "show", "--namespace", "alpha"])
        .expect("show");
    assert!(
        table.contains("alpha/server") && table.contains("TCP 8000-8007"),
        "{table}"
    );
}

#[test]
fn control_socket_refuses_non_root_callers() {
    kernel_test!();
    let c = Cluster::start(true, &[]);
    // The same client, as nobody: the socket's mode 0600 turns it away.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cns_tests::agent::agent_bin())
        .args(["status", "--socket"])
        .arg(&c.agent.socket)
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success(), "an unprivileged caller got through");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to reach the agent") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    // Root still gets in.
    c.agent.cli(&["status"]).expect("root");
}

#[test]
fn policy_history_records_what_changed() {
    kernel_test!();
    let c = Cluster::start(false, &[]);
    c.agent.apply("deny.yaml", DENY_INGRESS);
    c.agent
        .cli(&["mode", "audit", "--namespace", "alpha"])
        .expect("mode");
    c.agent.remove("deny.yaml");
    c.agent.sync().expect("sync");
    let out = c
        .agent
        .cli(&["policy", "history", "-n", "10", "-o", "json"])
        .expect("history");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let h = h.as_array().unwrap();
    let find = |key: &str, value: &str| {
        h.iter()
            .position(|c| c[key] == value || c[key][0] == value)
            .unwrap_or_else(|| panic!("no change with {key} = {value}: {h:#?}"))
    };
    // Newest first: the removal, then the mode change, then the addition.
    let removed = find("policies_removed", "alpha/deny-ingress");
    let mode = find("mode_change", "namespace alpha: blocking -> audit");
    let added = find("policies_added", "alpha/deny-ingress");
    assert!(removed < mode && mode < added, "{h:#?}");
    assert!(
        h[added]["endpoints_affected"]
            .as_array()
            .unwrap()
            .contains(&"alpha/server".into()),
        "{h:#?}"
    );
    let table = c.agent.cli(&["policy", "history"]).expect("history");
    assert!(table.contains("added=alpha/deny-ingress"), "{table}");
}

#[test]
fn the_agent_runs_xdp_on_the_uplink_and_drops_there() {
    kernel_test!();
    let c = Cluster::start(false, &[("deny.yaml", DENY_INGRESS)]);
    let status: serde_json::Value =
        serde_json::from_str(&c.agent.cli(&["status", "-o", "json"]).expect("status")).unwrap();
    let xdp = status["xdp"].as_array().expect("xdp in status");
    assert_eq!(xdp.len(), 1, "{status:#}");
    assert!(
        xdp[0]["interface"].as_str().unwrap().ends_with('u'),
        "the uplink: {xdp:?}"
    );
    assert_eq!(xdp[0]["mode"], "native");
    // From outside the node: denied in XDP, before the veth.
    assert!(!tcp_ok(&c.node.outside, SERVER, 8080));
    let dropped = c
        .agent
        .metric("cns_xdp_dropped_packets_total", &[])
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "XDP dropped the SYNs");
    // The node's own traffic is untouched by XDP (and always allowed by TC).
    assert!(tcp_ok(&c.node.node, SERVER, 8080));
}
