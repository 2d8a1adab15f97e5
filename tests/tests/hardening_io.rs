//! The agent against its surroundings (issue 18): it does not wake itself up, event output
//! nobody reads cannot stall it, idle or hostile clients cannot exhaust it.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use cns_tests::{
    VirtualNode,
    agent::agent_bin,
    cluster::cluster_yaml,
    custom_agent::{CustomAgent, Options},
    eventually, kernel_or_skip,
    traffic::in_netns,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const GAMMA_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 10);

const DENY_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: alpha}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// Syncs so far (the count of the total-phase sync histogram).
fn syncs(agent: &CustomAgent) -> f64 {
    agent
        .metric("cns_sync_duration_seconds_count", &[("phase", "total")])
        .unwrap_or(0.0)
}

/// Finding 6: the manifest watcher reacted to the agent's own reads (open/close-nowrite),
/// so each sync triggered the next (about 7 per second with nothing changing).
#[test]
fn an_idle_agent_syncs_at_most_once_per_resync_interval() {
    if !kernel_or_skip("idle_agent") {
        return;
    }
    let node = VirtualNode::new();
    let cluster = cluster_yaml("client");
    let agent = CustomAgent::start(
        &node.node,
        Options {
            // An invalid file too: its error comes back at every sync.
            manifests: &[("cluster.yaml", &cluster), ("broken.yaml", "kind: [\n")],
            args: &["--resync-interval", "30"],
            ..Options::default()
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = syncs(&agent);
    std::thread::sleep(Duration::from_secs(5));
    let after = syncs(&agent);
    assert!(
        after - before <= 1.0,
        "{} syncs in 5 s with nothing changing (resync interval 30 s):\n{}",
        after - before,
        agent.log()
    );
    // Changes are still seen: a new policy is picked up without a `sync`.
    agent.write("deny.yaml", DENY_INGRESS);
    assert!(
        eventually(Duration::from_secs(10), || agent
            .metric("cns_policies", &[])
            .is_some_and(|n| n == 1.0)),
        "the new policy file was not picked up by the watcher:\n{}",
        agent.log()
    );
}

/// Sends `n` UDP datagrams from `netns` to the server without waiting for replies.
fn udp_flood(netns: &str, n: u32) {
    in_netns(netns, move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for i in 0..n {
            // Paced a little so the veth backlog does not overflow before TC sees it.
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ = s.send_to(&[0u8; 64], (SERVER, 5353));
        }
    });
}

/// The stdout sink's entry of `status -o json`'s `event_sinks`.
fn stdout_sink(agent: &CustomAgent, bound: Duration) -> serde_json::Value {
    let out = agent
        .cli_within(&["status", "-o", "json"], bound)
        .unwrap_or_else(|e| panic!("status: {e}\n{}", agent.log()));
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    status["event_sinks"]
        .as_array()
        .and_then(|sinks| sinks.iter().find(|s| s["sink"] == "stdout"))
        .cloned()
        .unwrap_or_else(|| panic!("no stdout sink in status: {status}"))
}

/// Finding 5: with stdout a pipe nobody reads, printing events blocked a runtime worker
/// (`status`, `sync`, metrics and `monitor` stalled); with the reader gone, the event task
/// panicked on the broken pipe and every event stopped, `status` showing nothing wrong.
#[test]
fn event_output_nobody_reads_cannot_stall_or_silence_the_agent() {
    if !kernel_or_skip("event_output") {
        return;
    }
    let mut node = VirtualNode::new();
    let _server = node.add_pod(SERVER);
    let client = node.add_pod(GAMMA_CLIENT);
    let cluster = cluster_yaml("client");
    let mut agent = CustomAgent::start(
        &node.node,
        Options {
            manifests: &[("cluster.yaml", &cluster), ("deny.yaml", DENY_INGRESS)],
            args: &[
                "--policy-audit-mode=false",
                "--event-rate",
                "100000",
                "--event-burst",
                "100000",
            ],
            // A pipe the test never reads: it fills after about a hundred events.
            stdout: Some(Stdio::piped()),
            ..Options::default()
        },
    );
    // Far more drop events than the pipe and the agent's queue hold.
    udp_flood(&client.netns, 4000);
    let bound = Duration::from_secs(5);
    for _ in 0..3 {
        if let Err(e) = agent.cli_within(&["sync"], bound) {
            panic!("sync with a blocked stdout: {e}\n{}", agent.log());
        }
    }
    let sink = stdout_sink(&agent, bound);
    assert_eq!(sink["state"], "stalled", "{sink}");
    assert!(sink["dropped"].as_u64().unwrap_or(0) > 0, "{sink}");
    assert!(
        agent
            .metric("cns_events_dropped_total", &[("sink", "stdout")])
            .unwrap_or(0.0)
            > 0.0,
        "cns_events_dropped_total{{sink=\"stdout\"}} does not count the lost events"
    );

    // The reader goes away: stdout fails for good, the agent and `monitor` go on.
    drop(agent.child.stdout.take());
    let mut monitor = Command::new(agent_bin())
        .arg("monitor")
        .arg("--socket")
        .arg(&agent.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start monitor");
    let (lines_tx, lines) = mpsc::channel();
    let out = monitor.stdout.take().expect("monitor stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = (0..10).find_map(|_| {
        udp_flood(&client.netns, 20);
        lines.recv_timeout(Duration::from_secs(1)).ok()
    });
    _ = monitor.kill();
    _ = monitor.wait();
    let line = got.unwrap_or_else(|| panic!("monitor got no event:\n{}", agent.log()));
    assert!(line.contains("DROPPED"), "{line}");
    assert!(!agent.exited(), "the agent exited:\n{}", agent.log());
    assert!(
        eventually(Duration::from_secs(10), || {
            udp_flood(&client.netns, 5);
            stdout_sink(&agent, bound)["state"] == "failed"
        }),
        "a closed stdout is not shown as a failed sink: {}",
        stdout_sink(&agent, bound)
    );
    let sink = stdout_sink(&agent, bound);
    assert!(
        sink["error"].as_str().is_some_and(|e| e.contains("stdout")),
        "{sink}"
    );
    agent
        .cli_within(&["sync"], bound)
        .unwrap_or_else(|e| panic!("sync after stdout closed: {e}\n{}", agent.log()));
}
