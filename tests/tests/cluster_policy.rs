//! ClusterNetworkPolicy on the virtual node, through the real agent: an Admin Deny over a
//! NetworkPolicy allow, a Baseline Deny for a pod no NetworkPolicy isolates, what audit mode
//! does to a Deny, and the events and metrics that name the deciding rule.

use std::time::Duration;

use cns_tests::{
    Family,
    cluster::{Cluster, ONLY_BETA, SERVER, UDP_PORT},
    kernel_or_skip,
    netns::v6_of,
    traffic::{tcp_ok, udp_probe},
};

/// Admin: beta may not reach alpha over UDP 5353, whatever alpha's NetworkPolicy allows.
/// Baseline: beta pods (no NetworkPolicy isolates them) may not open TCP 9090 anywhere.
const CLUSTER_POLICIES: &str = "
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: alpha-no-beta-dns}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: alpha}}}
  ingress:
  - name: deny-beta-dns
    action: Deny
    from: [{namespaces: {matchLabels: {team: beta}}}]
    protocols: [{udp: {destinationPort: {number: 5353}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: beta-baseline}
spec:
  tier: Baseline
  priority: 50
  subject: {pods: {namespaceSelector: {matchLabels: {team: beta}}, podSelector: {}}}
  egress:
  - name: no-9090
    action: Deny
    to: [{networks: [0.0.0.0/0, '::/0']}]
    protocols: [{tcp: {destinationPort: {range: {start: 9000, end: 9999}}}}]
";

const QUICK: Duration = Duration::from_millis(300);
const PATIENT: Duration = Duration::from_secs(3);

fn policies() -> [(&'static str, &'static str); 2] {
    [("np.yaml", ONLY_BETA), ("cnp.yaml", CLUSTER_POLICIES)]
}

#[test]
fn admin_deny_beats_a_networkpolicy_allow_and_baseline_applies_to_unisolated_pods() {
    if !kernel_or_skip("cluster policy") {
        return;
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let c = Cluster::start_in(family, false, &policies(), &[]);
        let addr = |v4: std::net::Ipv4Addr| -> std::net::IpAddr {
            match family {
                Family::Ipv6 => v6_of(v4).into(),
                _ => v4.into(),
            }
        };
        let server = addr(SERVER);
        let beta = &c.beta_client.netns;
        // The NetworkPolicy allows beta; the Admin rule denies UDP 5353 before it.
        assert!(
            tcp_ok(beta, server, 8080),
            "{family:?}: beta -> alpha tcp/8080"
        );
        assert!(
            !udp_probe(beta, server, UDP_PORT, QUICK),
            "{family:?}: Admin Deny"
        );
        // Baseline: beta is isolated by no NetworkPolicy, so its Deny applies.
        assert!(!tcp_ok(beta, server, 9090), "{family:?}: Baseline Deny");
        // gamma: not allowed by alpha's NetworkPolicy, not touched by the cluster policies.
        assert!(!tcp_ok(&c.gamma_client.netns, server, 8080), "{family:?}");
        assert!(
            tcp_ok(&c.gamma_client.netns, addr(c.beta_other.ip), 9090),
            "{family:?}"
        );

        let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
        assert!(
            m(
                "hubble_drop_total",
                &[
                    ("source", "beta"),
                    ("destination", "alpha"),
                    ("reason", "ADMIN_POLICY_DENIED")
                ]
            ) >= 1.0
        );
        assert!(
            m(
                "hubble_drop_total",
                &[("source", "beta"), ("reason", "BASELINE_POLICY_DENIED")]
            ) >= 1.0
        );
        assert_eq!(m("cns_cluster_policies", &[]), 2.0);
        std::thread::sleep(QUICK);
        let events = c.agent.events();
        let admin = events
            .iter()
            .find(|e| e["drop_reason_desc"] == "ADMIN_POLICY_DENIED")
            .unwrap_or_else(|| panic!("{family:?}: no Admin drop event in {events:#?}"));
        assert_eq!(admin["verdict"], "DROPPED");
        assert_eq!(admin["traffic_direction"], "INGRESS");
        assert_eq!(
            admin["policies"][0],
            "ClusterNetworkPolicy/alpha-no-beta-dns"
        );
        let by = &admin["ingress_denied_by"][0];
        assert_eq!(by["name"], "alpha-no-beta-dns");
        assert_eq!(by["kind"], "ClusterNetworkPolicy");
        assert_eq!(by["tier"], "Admin");
        assert_eq!(by["priority"], 10);
        assert_eq!(by["rule"], "deny-beta-dns");
        assert_eq!(by["action"], "Deny");
        let baseline = events
            .iter()
            .find(|e| e["drop_reason_desc"] == "BASELINE_POLICY_DENIED")
            .unwrap_or_else(|| panic!("{family:?}: no Baseline drop event"));
        assert_eq!(baseline["traffic_direction"], "EGRESS");
        assert_eq!(baseline["egress_denied_by"][0]["rule"], "no-9090");
    }
}

#[test]
fn audit_mode_passes_a_cluster_deny_and_counts_it_audit() {
    if !kernel_or_skip("cluster policy audit") {
        return;
    }
    let c = Cluster::start(true, &policies());
    let beta = &c.beta_client.netns;
    assert!(udp_probe(beta, SERVER, UDP_PORT, PATIENT), "audit passes");
    assert!(tcp_ok(beta, SERVER, 9090), "audit passes");
    let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
    assert!(
        m(
            "hubble_flows_processed_total",
            &[
                ("source", "beta"),
                ("destination", "alpha"),
                ("verdict", "AUDIT")
            ]
        ) >= 2.0
    );
    assert_eq!(m("hubble_drop_total", &[("source", "beta")]), 0.0);
    std::thread::sleep(QUICK);
    let events = c.agent.events();
    let audit = events
        .iter()
        .find(|e| e["verdict"] == "AUDIT" && e["drop_reason_desc"] == "ADMIN_POLICY_DENIED")
        .unwrap_or_else(|| panic!("no Admin audit event in {events:#?}"));
    assert_eq!(audit["ingress_denied_by"][0]["name"], "alpha-no-beta-dns");

    // Blocking at runtime: the same flows drop.
    c.agent.cli(&["mode", "blocking"]).expect("mode blocking");
    assert!(!udp_probe(beta, SERVER, UDP_PORT, QUICK), "blocking drops");
}
