//! What the policies do, seen from outside: Prometheus metrics scraped over HTTP, drop and
//! audit events on stdout and through `cns-agent monitor`, the kernel's event rate limit.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::Duration,
};

use cns_tests::{
    Family,
    agent::agent_bin,
    cluster::{Cluster, SERVER, UDP_PORT},
    kernel_or_skip,
    netns::v6_of,
    traffic::{in_netns, udp_ok, udp_probe},
};

const DENY_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-beta, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: beta}}}]
";

/// How long to wait for an echo (first packets no longer wait for proxy ARP: see netns.rs).
/// Generous: a busy machine may starve the echo thread.
const ALLOWED_WAIT: Option<Duration> = Some(Duration::from_secs(3));
/// A denied datagram is never echoed: no point waiting long.
const DENIED_WAIT: Option<Duration> = Some(Duration::from_millis(100));

/// Sends `n` UDP datagrams from `netns` to the server and returns how many were echoed
/// (`reply_timeout`: how long to wait for each echo; `None`: a flood, no waiting).
fn udp_burst(netns: &str, n: u32, reply_timeout: Option<Duration>) -> u32 {
    let wait_reply = reply_timeout.is_some();
    in_netns(netns, move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(reply_timeout.unwrap_or(Duration::from_millis(1))))
            .unwrap();
        let mut echoed = 0;
        for i in 0..n {
            // Pace a flood a little so the veth backlog does not overflow before TC sees it.
            if !wait_reply && i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
            s.send_to(&[0u8; 64], (SERVER, UDP_PORT)).unwrap();
            if wait_reply {
                let mut buf = [0u8; 128];
                if s.recv_from(&mut buf).is_ok() {
                    echoed += 1;
                }
            }
        }
        echoed
    })
}

#[test]
fn metrics_count_exactly_and_drops_are_logged_with_names() {
    if !kernel_or_skip("metrics") {
        return;
    }
    let c = Cluster::start(false, &[("p.yaml", DENY_INGRESS)]);
    const N: u32 = 20;
    assert_eq!(
        udp_burst(&c.beta_client.netns, N, ALLOWED_WAIT),
        N,
        "allowed"
    );
    assert_eq!(
        udp_burst(&c.gamma_client.netns, N, DENIED_WAIT),
        0,
        "denied"
    );
    let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
    // beta -> alpha: counted leaving beta/client and entering alpha/server.
    assert_eq!(
        m(
            "hubble_flows_processed_total",
            &[
                ("source", "beta"),
                ("destination", "alpha"),
                ("verdict", "FORWARDED")
            ]
        ),
        f64::from(2 * N)
    );
    assert_eq!(
        m(
            "cns_flow_packets_total",
            &[
                ("source", "gamma"),
                ("destination", "alpha"),
                ("verdict", "DROPPED"),
                ("direction", "ingress")
            ]
        ),
        f64::from(N)
    );
    // 64 payload + 8 UDP + 20 IP + 14 Ethernet.
    assert_eq!(
        m(
            "cns_flow_bytes_total",
            &[
                ("source", "beta"),
                ("destination", "alpha"),
                ("verdict", "FORWARDED"),
                ("direction", "ingress")
            ]
        ),
        f64::from(N * 106)
    );
    // By protocol, and drops by reason (Hubble's drop metric).
    assert_eq!(
        m(
            "hubble_flows_processed_total",
            &[
                ("source", "beta"),
                ("destination", "alpha"),
                ("verdict", "FORWARDED"),
                ("protocol", "UDP")
            ]
        ),
        f64::from(2 * N)
    );
    assert_eq!(
        m(
            "hubble_flows_processed_total",
            &[("source", "beta"), ("protocol", "TCP")]
        ),
        0.0
    );
    assert_eq!(
        m(
            "hubble_drop_total",
            &[
                ("source", "gamma"),
                ("destination", "alpha"),
                ("reason", "POLICY_DENIED"),
                ("protocol", "UDP")
            ]
        ),
        f64::from(N)
    );
    assert_eq!(
        m("hubble_drop_total", &[("source", "beta")]),
        0.0,
        "nothing from beta dropped"
    );
    assert_eq!(m("cns_datapath_counter_overflow_total", &[]), 0.0);
    assert_eq!(m("cns_policies", &[]), 1.0);
    assert_eq!(m("cns_endpoints", &[]), 4.0);
    assert_eq!(m("cns_map_capacity", &[("map", "CNS_ENDPOINTS")]), 4096.0);
    assert_eq!(m("cns_policy_audit_mode", &[("namespace", "")]), 0.0);
    assert!(m("cns_last_sync_timestamp_seconds", &[]) > 1.7e9);
    assert!(m("cns_sync_duration_seconds_count", &[("phase", "total")]) >= 1.0);

    // Every dropped datagram has an event naming both ends, the port and the policy.
    std::thread::sleep(Duration::from_millis(300));
    let drops: Vec<_> = c
        .agent
        .events()
        .into_iter()
        .filter(|e| e["verdict"] == "DROPPED" && e["IP"]["source"] == "10.0.3.10")
        .collect();
    assert_eq!(drops.len(), N as usize, "one event per drop");
    let e = &drops[0];
    assert_eq!(e["event_type"], "drop");
    assert_eq!(e["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(e["traffic_direction"], "INGRESS");
    assert_eq!(e["source"]["namespace"], "gamma");
    assert_eq!(e["source"]["pod_name"], "client");
    assert_eq!(e["destination"]["namespace"], "alpha");
    assert_eq!(e["destination"]["pod_name"], "server");
    assert_eq!(e["l4"]["UDP"]["destination_port"], UDP_PORT);
    assert_eq!(e["policies"][0], "alpha/only-beta");
    assert_eq!(e["endpoint"], "alpha/server");
    // (Other drops, e.g. IPv6 neighbour discovery towards the isolated pod, count too.)
    assert!(m("cns_events_total", &[("type", "drop")]) >= f64::from(N));
}

/// IPv6 on an IPv6-only node: drops counted exactly in the same series as IPv4's (no family
/// label), each with an event carrying `ipVersion: IPv6`, the addresses and the pods' names.
#[test]
fn ipv6_drops_are_counted_exactly_and_logged_as_ipv6() {
    if !kernel_or_skip("metrics ipv6") {
        return;
    }
    let c = Cluster::start_in(Family::Ipv6, false, &[("p.yaml", DENY_INGRESS)], &[]);
    let server6 = v6_of(SERVER);
    let quick = Duration::from_millis(300);
    assert!(udp_probe(
        &c.beta_client.netns,
        server6,
        UDP_PORT,
        Duration::from_secs(3)
    ));
    const N: u64 = 5;
    for _ in 0..N {
        assert!(
            !udp_probe(&c.gamma_client.netns, server6, UDP_PORT, quick),
            "denied"
        );
    }
    let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
    assert_eq!(
        m(
            "hubble_drop_total",
            &[
                ("source", "gamma"),
                ("destination", "alpha"),
                ("reason", "POLICY_DENIED"),
                ("protocol", "UDP")
            ]
        ),
        N as f64
    );
    assert!(
        m(
            "hubble_flows_processed_total",
            &[
                ("source", "beta"),
                ("destination", "alpha"),
                ("verdict", "FORWARDED")
            ]
        ) >= 2.0
    );
    std::thread::sleep(Duration::from_millis(300));
    let source = v6_of(c.gamma_client.ip).to_string();
    let drops: Vec<_> = c
        .agent
        .events()
        .into_iter()
        .filter(|e| e["verdict"] == "DROPPED" && e["IP"]["source"] == source.as_str())
        .collect();
    assert_eq!(drops.len(), N as usize, "one event per drop");
    let e = &drops[0];
    assert_eq!(e["IP"]["ipVersion"], "IPv6");
    assert_eq!(e["IP"]["destination"], server6.to_string());
    assert_eq!(e["source"]["pod_name"], "client");
    assert_eq!(e["destination"]["pod_name"], "server");
    assert_eq!(e["l4"]["UDP"]["destination_port"], UDP_PORT);
    assert_eq!(e["policies"][0], "alpha/only-beta");
}

/// With `policy-verdict` enabled, each new connection a rule allows is one event naming the
/// policy that allowed it; its later packets, and traffic no policy isolates, are not.
#[test]
fn policy_verdict_events_name_the_allowing_policy_once_per_connection() {
    if !kernel_or_skip("policy-verdict events") {
        return;
    }
    let c = Cluster::start_with(
        false,
        &[("p.yaml", DENY_INGRESS)],
        &["--monitor-event-types", "drop,audit,policy-verdict"],
    );
    const N: u32 = 5;
    assert_eq!(
        udp_burst(&c.beta_client.netns, N, ALLOWED_WAIT),
        N,
        "allowed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let verdicts: Vec<_> = c
        .agent
        .events()
        .into_iter()
        .filter(|e| e["event_type"] == "policy-verdict")
        .collect();
    assert_eq!(
        verdicts.len(),
        1,
        "one event per new connection: {verdicts:?}"
    );
    let e = &verdicts[0];
    assert_eq!(e["verdict"], "FORWARDED");
    assert_eq!(e["traffic_direction"], "INGRESS");
    assert_eq!(e["source"]["namespace"], "beta");
    assert_eq!(e["destination"]["pod_name"], "server");
    assert_eq!(e["policies"][0], "alpha/only-beta");
    assert_eq!(e["ingress_allowed_by"][0]["name"], "only-beta");
    assert_eq!(e["ingress_allowed_by"][0]["namespace"], "alpha");
    assert_eq!(e["l4"]["UDP"]["destination_port"], UDP_PORT);
}

#[test]
fn monitor_streams_audit_events_and_audit_mode_drops_nothing() {
    if !kernel_or_skip("monitor") {
        return;
    }
    let c = Cluster::start(true, &[("p.yaml", DENY_INGRESS)]);
    let mut monitor = Command::new(agent_bin())
        .args([
            "monitor",
            "--type",
            "audit",
            "--namespace",
            "gamma",
            "-o",
            "json",
            "--socket",
        ])
        .arg(&c.agent.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("monitor");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        udp_ok(&c.gamma_client.netns, SERVER, UDP_PORT),
        "audit: passes"
    );
    let mut lines = BufReader::new(monitor.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    _ = monitor.kill();
    _ = monitor.wait();
    assert_eq!(first["verdict"], "AUDIT");
    assert_eq!(first["source"]["namespace"], "gamma");
    assert_eq!(first["policies"][0], "alpha/only-beta");
    let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
    assert_eq!(
        m("cns_flow_packets_total", &[("verdict", "DROPPED")]),
        0.0,
        "nothing dropped"
    );
    assert!(m("cns_flow_packets_total", &[("verdict", "AUDIT")]) > 0.0);
    assert_eq!(m("cns_policy_audit_mode", &[("namespace", "alpha")]), 1.0);
}

#[test]
fn a_flood_of_drops_is_rate_limited_and_counted() {
    if !kernel_or_skip("flood") {
        return;
    }
    let c = Cluster::start(false, &[("p.yaml", DENY_INGRESS)]);
    const FLOOD: u32 = 5000;
    udp_burst(&c.gamma_client.netns, FLOOD, None);
    std::thread::sleep(Duration::from_millis(500));
    let m = |name: &str, labels: &[(&str, &str)]| c.agent.metric(name, labels).unwrap_or(0.0);
    let dropped = m(
        "cns_flow_packets_total",
        &[("source", "gamma"), ("verdict", "DROPPED")],
    );
    // Every packet that reached the pod's veth was dropped and counted (a busy machine may
    // still lose a few in the backlog before TC).
    assert!(
        dropped >= 0.99 * f64::from(FLOOD),
        "dropped and counted: {dropped}"
    );
    let events = c
        .agent
        .events()
        .iter()
        .filter(|e| e["IP"]["source"] == "10.0.3.10")
        .count() as f64;
    let suppressed = m("cns_datapath_events_suppressed_total", &[]);
    assert!(suppressed > 0.0, "rate limit engaged");
    assert!(events < f64::from(FLOOD), "events limited: {events}");
    // Every flood packet became an event or was counted as suppressed (the suppressed count
    // may include a few other drops, e.g. IPv6 neighbour discovery).
    assert!(
        events + suppressed >= dropped,
        "{events} events + {suppressed} suppressed"
    );
    assert!(
        events + suppressed < dropped + 50.0,
        "{events} events + {suppressed} suppressed"
    );
}

/// Every metric the shipped Grafana dashboard queries is one the agent exports.
#[test]
fn the_grafana_dashboard_only_uses_exported_metrics() {
    if !kernel_or_skip("dashboard") {
        return;
    }
    let c = Cluster::start(false, &[("p.yaml", DENY_INGRESS)]);
    // Make every flow family non-empty.
    udp_burst(&c.gamma_client.netns, 3, DENIED_WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let scrape = c.agent.scrape();
    let exported: Vec<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let exists = |name: &str| {
        exported.iter().any(|e| {
            name == e
                || [
                    e.to_owned() + "_total",
                    e.to_owned() + "_bucket",
                    e.to_owned() + "_count",
                    e.to_owned() + "_sum",
                ]
                .contains(&name.to_owned())
        })
    };
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/cns-dashboard.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard json");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    exprs.push(
        dashboard["templating"]["list"][1]["query"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let mut checked = 0;
    for expr in &exprs {
        // Every identifier that looks like one of our metric names.
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("cns_") || word.starts_with("hubble_") {
                assert!(
                    exists(word),
                    "dashboard query `{expr}` uses {word}, which the agent does not export:\n{exported:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references found");
}

/// Drops reach a SIEM as RFC 5424 syslog (a UDP receiver inside the node's netns).
#[test]
fn drops_are_forwarded_to_syslog() {
    if !kernel_or_skip("syslog") {
        return;
    }
    let mut node = cns_tests::VirtualNode::new();
    let server = node.add_pod(SERVER);
    let gamma = node.add_pod(Ipv4Addr::new(10, 0, 3, 10));
    cns_tests::traffic::udp_echo_server(&server.netns, UDP_PORT);
    let receiver = in_netns(&node.node, || {
        let s = std::net::UdpSocket::bind(("127.0.0.1", 5514)).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    });
    let cluster = cns_tests::cluster::cluster_yaml("client");
    let agent = cns_tests::AgentProcess::start_with(
        &node,
        false,
        &[("cluster.yaml", &cluster), ("p.yaml", DENY_INGRESS)],
        &["--syslog", "udp://127.0.0.1:5514"],
    );
    assert!(!udp_ok(&gamma.netns, SERVER, UDP_PORT), "denied");
    let mut buf = [0u8; 8192];
    let msg = loop {
        let n = receiver.recv(&mut buf).expect("a syslog message");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("10.0.3.10") {
            break msg;
        }
    };
    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG; local0.warning = 132.
    assert!(msg.starts_with("<132>1 "), "{msg}");
    assert!(msg.contains(" node-1 cns-agent "), "{msg}");
    assert!(msg.contains(" drop [cns@32473 "), "{msg}");
    assert!(msg.contains(r#"reason="POLICY_DENIED""#), "{msg}");
    assert!(msg.contains(r#"policies="alpha/only-beta""#), "{msg}");
    drop(agent);
}
