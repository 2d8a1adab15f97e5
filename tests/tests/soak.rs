//! Churn while traffic flows: pods added, relabelled and deleted over and over, with an
//! established connection echoing throughout. Verdicts are checked at every step; at the
//! end the maps are back at their baseline and the agent's memory has not grown.
//!
//! Short in CI (`CNS_SOAK_SECS`, default 15 s); `cargo xtask soak` runs it for minutes.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use cns_tests::{
    cluster::{Cluster, cluster_yaml},
    kernel_or_skip,
    manifests::pod,
    traffic::{in_netns, tcp_echo_server, tcp_ok},
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);

const CLIENTS_ONLY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-only, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}, namespaceSelector: {}}]
";

fn map_usage(c: &Cluster) -> Vec<(String, u64)> {
    let status: serde_json::Value =
        serde_json::from_str(&c.agent.cli(&["status", "-o", "json"]).expect("status")).unwrap();
    status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["map"].as_str().unwrap().to_owned(),
                m["entries"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn churn_leaves_no_trace_and_verdicts_stay_right() {
    if !kernel_or_skip("soak") {
        return;
    }
    let secs: u64 = std::env::var("CNS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut c = Cluster::start(false, &[("p.yaml", CLIENTS_ONLY)]);
    let mut conn = in_netns(&c.beta_client.netns, || {
        TcpStream::connect_timeout(&SocketAddr::from((SERVER, 8080)), Duration::from_secs(2))
            .expect("connect")
    });
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let baseline_maps = map_usage(&c);
    // Warm up once so allocator growth of the first round does not count as a leak.
    let mut rss_baseline = 0;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut round = 0u32;
    while round < 2 || Instant::now() < deadline {
        let ip = Ipv4Addr::new(10, 0, 1, 100 + (round % 100) as u8);
        // A new pod in alpha (isolated by clients-only).
        let p = c.node.add_pod(ip);
        tcp_echo_server(&p.netns, 8080);
        let name = format!("churn{round}.yaml");
        c.agent.apply(
            &name,
            &pod(
                "alpha",
                &format!("churn{round}"),
                &[("app", "churn")],
                ip,
                &[],
            ),
        );
        assert!(
            tcp_ok(&c.beta_client.netns, ip, 8080),
            "round {round}: client admitted"
        );
        // Relabel the client: no longer admitted anywhere in alpha.
        c.agent.apply("cluster.yaml", &cluster_yaml("former"));
        assert!(
            !tcp_ok(&c.beta_client.netns, ip, 8080),
            "round {round}: relabelled client denied"
        );
        c.agent.apply("cluster.yaml", &cluster_yaml("client"));
        // Delete the pod: manifest and network.
        c.agent.remove(&name);
        c.node.remove_pod(&p.netns);
        c.agent.sync().expect("sync after delete");
        // The long-lived connection of an admitted client never broke... except while its
        // client was relabelled: a tightened policy cuts established flows on their next
        // packet, so ping it only now that it is admitted again.
        let mut buf = [0u8; 4];
        conn.write_all(b"ping").unwrap();
        conn.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("round {round}: connection: {e}"));
        if round == 1 {
            rss_baseline = c.agent.rss_kib();
        }
        round += 1;
    }
    assert_eq!(
        map_usage(&c),
        baseline_maps,
        "maps back at baseline after {round} rounds"
    );
    let rss = c.agent.rss_kib();
    eprintln!("soak: {round} rounds in {secs}s, agent RSS {rss_baseline} -> {rss} KiB");
    assert!(
        rss < rss_baseline + 8 * 1024,
        "agent memory grew from {rss_baseline} to {rss} KiB over {round} rounds"
    );
}
