//! Dry-run policies (`cns.io/policy-audit-mode: "true"` on the policy) on the virtual node,
//! through the real agent in blocking mode: they never change a verdict; the flows they
//! would change are counted per policy (pinned: kept across SIGKILL), reported in events
//! and in `policy rollout`; removing the annotation enforces them at the next sync.

use std::time::Duration;

use cns_tests::{
    Family,
    cluster::{Cluster, ONLY_BETA, SERVER},
    kernel_or_skip,
    netns::v6_of,
    traffic::{in_netns, tcp_ok},
};

/// A dry-run deny-all for ingress to beta, which no policy isolates (blocking mode).
const BETA_LOCKDOWN: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: lockdown
  namespace: beta
  annotations: {cns.io/policy-audit-mode: \"true\"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// A dry-run allow of gamma into alpha, which `ONLY_BETA` isolates.
fn allow_gamma(dry_run: bool) -> String {
    let annotations = if dry_run {
        "  annotations: {cns.io/policy-audit-mode: \"true\"}\n"
    } else {
        ""
    };
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-gamma
  namespace: alpha
{annotations}spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: gamma}}}}}}]
    ports: [{{port: 8080}}]
"
    )
}

/// A dry-run Admin Deny of beta -> alpha on 8090 (the NetworkPolicy allows it today).
const ADMIN_DRY_RUN: &str = "
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: no-beta-8090
  annotations: {cns.io/policy-audit-mode: \"true\"}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {team: alpha}}}
  ingress:
  - name: deny-8090
    action: Deny
    from: [{namespaces: {matchLabels: {team: beta}}}]
    protocols: [{tcp: {destinationPort: {number: 8090}}}]
";

const SETTLE: Duration = Duration::from_millis(300);

fn dry_run_count(c: &Cluster, policy: &str, direction: &str, outcome: &str) -> f64 {
    c.agent
        .metric(
            "cns_policy_dry_run_flows_total",
            &[
                ("policy", policy),
                ("direction", direction),
                ("outcome", outcome),
            ],
        )
        .unwrap_or(0.0)
}

/// The first event that names dry-run policy `policy` (after the events settle).
fn dry_run_event(c: &Cluster, policy: &str) -> serde_json::Value {
    std::thread::sleep(SETTLE);
    let events = c.agent.events();
    events
        .iter()
        .find(|e| e["dry_run"]["policy"] == policy)
        .cloned()
        .unwrap_or_else(|| panic!("no dry-run event of {policy}: {events:#?}"))
}

fn rollout(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["policy", "rollout", "-o", "json"];
    all.extend_from_slice(args);
    let out = c.agent.cli(&all).expect("policy rollout");
    serde_json::from_str(&out).expect("rollout json")
}

fn policy_report<'a>(report: &'a serde_json::Value, policy: &str) -> &'a serde_json::Value {
    report["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["policy"] == policy))
        .unwrap_or_else(|| panic!("{policy} not in {report:#}"))
}

#[test]
fn dry_run_denies_drop_nothing_and_report_every_would_be_drop() {
    if !kernel_or_skip("dry-run denies") {
        return;
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let policies = [
            ("np.yaml", ONLY_BETA),
            ("lockdown.yaml", BETA_LOCKDOWN),
            ("cnp.yaml", ADMIN_DRY_RUN),
        ];
        let c = Cluster::start_in(family, false, &policies, &[]);
        let addr = |v4: std::net::Ipv4Addr| -> std::net::IpAddr {
            match family {
                Family::Ipv6 => v6_of(v4).into(),
                _ => v4.into(),
            }
        };
        let gamma = &c.gamma_client.netns;
        let beta = &c.beta_client.netns;
        // Nothing the dry-run policies would drop is dropped.
        for _ in 0..3 {
            assert!(tcp_ok(gamma, addr(c.beta_other.ip), 8080), "{family:?}");
        }
        assert!(
            tcp_ok(beta, addr(SERVER), 8090),
            "{family:?}: dry-run Admin"
        );
        assert!(tcp_ok(beta, addr(SERVER), 8080), "{family:?}");
        // The enforced policy still drops what it drops.
        assert!(!tcp_ok(gamma, addr(SERVER), 8080), "{family:?}");

        let lockdown = "NetworkPolicy/beta/lockdown";
        let admin = "ClusterNetworkPolicy/no-beta-8090";
        assert!(dry_run_count(&c, lockdown, "ingress", "would-drop") >= 3.0);
        assert_eq!(dry_run_count(&c, lockdown, "ingress", "would-allow"), 0.0);
        assert!(dry_run_count(&c, admin, "ingress", "would-drop") >= 1.0);
        // 8080 is not the Admin rule's port: no would-be drop for it beyond 8090's.
        assert_eq!(dry_run_count(&c, admin, "egress", "would-drop"), 0.0);
        // The namespace counters count what happened: forwarded, nothing dropped.
        assert_eq!(
            c.agent
                .metric("hubble_drop_total", &[("destination", "beta")])
                .unwrap_or(0.0),
            0.0
        );

        let e = dry_run_event(&c, lockdown);
        assert_eq!(e["verdict"], "AUDIT");
        assert_eq!(e["dry_run"]["outcome"], "would-drop");
        assert_eq!(e["policies"][0], lockdown);
        assert_eq!(e["destination"]["pod_name"], "other");
        let e = dry_run_event(&c, admin);
        assert_eq!(e["verdict"], "AUDIT");
        assert_eq!(e["drop_reason_desc"], "ADMIN_POLICY_DENIED");
        assert_eq!(e["ingress_denied_by"][0]["rule"], "deny-8090");
        assert_eq!(
            e["dry_run"]["rule"],
            "Admin ClusterNetworkPolicy/no-beta-8090 rule deny-8090 (Deny)"
        );

        // The report: not safe, the flows from gamma/client first.
        let report = rollout(&c, &["--since", "1h"]);
        let p = policy_report(&report, lockdown);
        assert_eq!(p["verdict"]["state"], "not-safe", "{p:#}");
        let text = p["verdict"]["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("from gamma/client would be dropped: last"),
            "{text}"
        );
        assert_eq!(p["top_flows"][0]["source"], "gamma/client");
        assert_eq!(p["top_flows"][0]["destination"], "beta/other");
        assert_eq!(p["top_flows"][0]["port"], 8080);
        // A connection it would cut, held open: not safe however long ago it started.
        let (other, port) = (addr(c.beta_other.ip), 8090);
        let held = in_netns(gamma, move || {
            let mut s = std::net::TcpStream::connect((other, port)).expect("connect");
            std::io::Write::write_all(&mut s, b"held").expect("write");
            let mut buf = [0u8; 4];
            std::io::Read::read_exact(&mut s, &mut buf).expect("echo");
            s
        });
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let report = rollout(&c, &["--since", "1h", "--at", &later.to_string()]);
        let p = policy_report(&report, lockdown);
        assert_eq!(p["verdict"]["state"], "not-safe", "{p:#}");
        assert_eq!(p["open_connections"], 1, "{p:#}");
        assert_eq!(p["open_flows"][0]["source"], "gamma/client");
        assert_eq!(p["open_flows"][0]["port"], 8090);
        // Closed, and two hours on with no more offending traffic, the same report says safe
        // (the report's clock, not a sleep).
        drop(held);
        std::thread::sleep(SETTLE);
        let report = rollout(&c, &["--since", "1h", "--at", &later.to_string()]);
        let p = policy_report(&report, lockdown);
        assert_eq!(p["verdict"]["state"], "safe", "{p:#}");
        assert!(
            p["verdict"]["text"]
                .as_str()
                .is_some_and(|t| t.ends_with(": safe to enforce")),
            "{p:#}"
        );
        // The text form names the verdict.
        let text = c.agent.cli(&["policy", "rollout"]).expect("rollout");
        assert!(
            text.contains("NetworkPolicy/beta/lockdown [NOT SAFE]"),
            "{text}"
        );
    }
}

#[test]
fn dry_run_allows_pass_nothing_new_and_enforce_once_the_annotation_goes() {
    if !kernel_or_skip("dry-run allows") {
        return;
    }
    let dry = allow_gamma(true);
    let policies = [("np.yaml", ONLY_BETA), ("allow-gamma.yaml", dry.as_str())];
    let mut c = Cluster::start(false, &policies);
    let gamma = &c.gamma_client.netns;
    for _ in 0..2 {
        assert!(
            !tcp_ok(gamma, SERVER, 8080),
            "a dry-run allow passes nothing"
        );
    }
    assert!(!tcp_ok(gamma, SERVER, 8090), "not the dry-run rule's port");
    let policy = "NetworkPolicy/alpha/allow-gamma";
    let allows = dry_run_count(&c, policy, "ingress", "would-allow");
    assert!(allows >= 2.0, "{allows}");
    assert_eq!(dry_run_count(&c, policy, "ingress", "would-drop"), 0.0);
    let e = dry_run_event(&c, policy);
    assert_eq!(e["verdict"], "DROPPED");
    assert_eq!(e["dry_run"]["outcome"], "would-allow");
    assert_eq!(e["dry_run"]["rule"], "alpha/allow-gamma");
    // The report: would-be allows never make a policy unsafe.
    let report = rollout(&c, &[]);
    let p = policy_report(&report, policy);
    assert!(p["would_allow"]["ingress"].as_u64() >= Some(2), "{p:#}");
    assert_ne!(p["verdict"]["state"], "not-safe", "{p:#}");

    // The counts are pinned: a SIGKILLed agent's successor finds them.
    c.agent.stop(nix::sys::signal::Signal::SIGKILL);
    c.agent.restart();
    assert!(
        !tcp_ok(gamma, SERVER, 8080),
        "still dry-run after the restart"
    );
    let after = dry_run_count(&c, policy, "ingress", "would-allow");
    assert!(after >= allows + 1.0, "{allows} before, {after} after");

    // Enforced: the next sync lets gamma in on 8080, and the counts go.
    c.agent.apply("allow-gamma.yaml", &allow_gamma(false));
    assert!(tcp_ok(gamma, SERVER, 8080), "enforced");
    assert!(!tcp_ok(gamma, SERVER, 8090), "only its port");
    assert_eq!(
        c.agent.metric(
            "cns_policy_dry_run_flows_total",
            &[("policy", policy), ("outcome", "would-allow")]
        ),
        None
    );
    let report = rollout(&c, &[]);
    assert_eq!(report["policies"].as_array().map(Vec::len), Some(0));
}

/// Audit mode composes: an audited flow a dry-run policy would allow is reported on its
/// audit event, and passes as audit mode passes it.
#[test]
fn in_audit_mode_a_would_be_allow_rides_on_the_audit_event() {
    if !kernel_or_skip("dry-run in audit mode") {
        return;
    }
    let dry = allow_gamma(true);
    let policies = [("np.yaml", ONLY_BETA), ("allow-gamma.yaml", dry.as_str())];
    let c = Cluster::start(true, &policies);
    assert!(tcp_ok(&c.gamma_client.netns, SERVER, 8080), "audit passes");
    let policy = "NetworkPolicy/alpha/allow-gamma";
    assert!(dry_run_count(&c, policy, "ingress", "would-allow") >= 1.0);
    let e = dry_run_event(&c, policy);
    assert_eq!(e["verdict"], "AUDIT");
    assert_eq!(e["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(e["policies"][0], "alpha/only-beta");
    assert_eq!(e["dry_run"]["outcome"], "would-allow");
}
