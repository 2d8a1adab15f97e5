//! The agent against its surroundings (issue 18): it does not wake itself up, event output
//! nobody reads cannot stall it, idle or hostile clients cannot exhaust it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, TcpStream},
    os::unix::net::UnixStream,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cns_tests::{
    VirtualNode,
    agent::agent_bin,
    cluster::{SERVER, cluster_yaml},
    custom_agent::{CustomAgent, Options},
    eventually, kernel_or_skip,
    traffic::in_netns,
};

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

/// Whether `pod`'s ingress is isolated, as `status` shows it.
fn ingress_isolated(agent: &CustomAgent, pod: &str) -> bool {
    agent.status()["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["pod"] == pod))
        .is_some_and(|e| e["ingress_isolated"] == true)
}

/// Finding 7: 1100 idle connections to /metrics exhausted the agent's file descriptors, and
/// syncs failed with "Too many open files" (policy changes not applied).
#[test]
fn idle_metrics_connections_do_not_stop_policy_changes() {
    if !kernel_or_skip("idle_metrics_connections") {
        return;
    }
    let node = VirtualNode::new();
    let cluster = cluster_yaml("client");
    let agent = CustomAgent::start(
        &node.node,
        Options {
            manifests: &[("cluster.yaml", &cluster)],
            args: &["--policy-audit-mode=false", "--resync-interval", "30"],
            nofile: Some((200, 300)),
            ..Options::default()
        },
    );
    assert_eq!(
        agent.nofile_soft(),
        300,
        "the soft open files limit was not raised to the hard one"
    );
    // Twice as many idle connections as the agent may open files.
    let idle = in_netns(&node.node, || {
        (0..600)
            .map(|_| TcpStream::connect(("127.0.0.1", 9965)).expect("connect to metrics"))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_secs(1));
    agent.write("deny.yaml", DENY_INGRESS);
    if let Err(e) = agent.cli_within(&["sync"], Duration::from_secs(10)) {
        panic!(
            "sync with 600 idle metrics connections: {e}\n{}",
            agent.log()
        );
    }
    assert!(
        ingress_isolated(&agent, "alpha/server"),
        "the policy change was not applied:\n{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("Too many open files"),
        "the agent ran out of file descriptors:\n{}",
        agent.log()
    );
    drop(idle);
    assert!(
        eventually(Duration::from_secs(20), || agent
            .metric("cns_policies", &[])
            .is_some_and(|n| n == 1.0)),
        "metrics did not come back after the idle connections went"
    );
}

/// Finding 7: a slowloris client kept a metrics connection forever; one 1 GiB line on the
/// control socket took the agent's RSS from 19 MB to 1.07 GB.
#[test]
fn slow_and_huge_clients_are_cut_off() {
    if !kernel_or_skip("slow_and_huge_clients") {
        return;
    }
    let node = VirtualNode::new();
    let agent = CustomAgent::start(
        &node.node,
        Options {
            args: &["--resync-interval", "30"],
            ..Options::default()
        },
    );
    // Slowloris: headers that never end, one line a second.
    let closed_after = in_netns(&node.node, || {
        let mut s = TcpStream::connect(("127.0.0.1", 9965)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let start = Instant::now();
        _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n");
        while start.elapsed() < Duration::from_secs(40) {
            if s.write_all(b"X-Slow: 1\r\n").is_err() {
                return Some(start.elapsed());
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Closed, reset, or answered (408) and closed.
                _ => return Some(start.elapsed()),
            }
        }
        None
    });
    let closed_after = closed_after.expect("a slowloris metrics connection stayed open for 40 s");
    assert!(
        closed_after < Duration::from_secs(20),
        "closed after {closed_after:?}"
    );

    // One endless request line on the control socket: refused, memory flat.
    let rss_before = agent.rss_kib();
    let mut s = UnixStream::connect(&agent.socket).expect("connect to the control socket");
    let chunk = vec![b'a'; 1 << 20];
    let sent_mib = (0..256).take_while(|_| s.write_all(&chunk).is_ok()).count();
    assert!(
        sent_mib < 256,
        "the agent read a 256 MiB request line without refusing it"
    );
    let mut reply = String::new();
    _ = s.read_to_string(&mut reply);
    let grown = agent.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB on a huge request line"
    );
    assert!(
        reply.is_empty() || reply.contains("larger than"),
        "unexpected reply: {reply}"
    );

    // A client that connects and says nothing is let go.
    let mut idle = UnixStream::connect(&agent.socket).expect("connect to the control socket");
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut reply = String::new();
    _ = idle.read_to_string(&mut reply);
    assert!(
        started.elapsed() < Duration::from_secs(15) && reply.contains("no request within"),
        "an idle control client was kept {:?}: {reply:?}",
        started.elapsed()
    );
    assert!(agent.cli(&["status"]).is_ok(), "status after the attacks");
}

/// Finding 8: SIGHUP killed the agent; `--event-burst 0` silently suppressed every event.
#[test]
fn sighup_resyncs_and_a_zero_event_burst_is_refused() {
    if !kernel_or_skip("sighup_and_event_burst") {
        return;
    }
    let node = VirtualNode::new();
    let mut agent = CustomAgent::start(
        &node.node,
        Options {
            args: &["--resync-interval", "30"],
            ..Options::default()
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = syncs(&agent);
    nix::sys::signal::kill(agent.pid(), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        eventually(Duration::from_secs(5), || syncs(&agent) > before),
        "SIGHUP did not resync:\n{}",
        agent.log()
    );
    assert!(!agent.exited(), "SIGHUP killed the agent:\n{}", agent.log());
    agent.cli(&["status"]).expect("status after SIGHUP");

    // While it starts (loading its programs): no harm either.
    let mut starting = CustomAgent::start(
        &node.node,
        Options {
            wait_ready: false,
            ..Options::default()
        },
    );
    std::thread::sleep(Duration::from_millis(30));
    nix::sys::signal::kill(starting.pid(), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    starting.wait_ready();
    assert!(
        !starting.exited(),
        "SIGHUP at start killed the agent:\n{}",
        starting.log()
    );
    drop(starting);

    let mut refused = CustomAgent::start(
        &node.node,
        Options {
            args: &["--event-burst", "0", "--metrics-addr", "none"],
            wait_ready: false,
            ..Options::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused.exited() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        refused.exited(),
        "an agent with --event-burst 0 kept running:\n{}",
        refused.log()
    );
    assert!(
        refused.log().contains("--event-burst 0"),
        "the error does not name the flag:\n{}",
        refused.log()
    );
}
