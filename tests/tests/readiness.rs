//! `cns-agent status --ready` (the DaemonSet's readiness probe): ready only once a sync is in
//! the maps, never from a half-synced source.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cns_tests::{agent::agent_bin, cluster::Cluster, kernel_or_skip, netns::VirtualNode, unique};

#[test]
fn ready_after_the_first_sync() {
    if !kernel_or_skip("readiness") {
        return;
    }
    let c = Cluster::start(false, &[]);
    assert_eq!(
        c.agent
            .cli(&["status", "--ready"])
            .map(|s| s.trim().to_owned()),
        Ok("ready".to_owned())
    );
}

/// In Kubernetes mode against an API server that cannot be reached, the agent runs and
/// answers `status`, but is not ready: nothing was listed, nothing is enforced from it.
#[test]
fn not_ready_while_the_api_server_is_unreachable() {
    if !kernel_or_skip("readiness") {
        return;
    }
    let node = VirtualNode::new();
    let dir = std::env::temp_dir().join(unique("cns-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // Port 9 on the node netns' loopback: nothing listens (connection refused).
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\n\
         clusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\", insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: x}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let socket = dir.join("agent.sock");
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-test-"));
    let mut agent = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.node))
        .arg(agent_bin())
        .args(["run", "--node-name", "node-1", "--xdp-interfaces", "none"])
        .arg("--cleanup-on-exit")
        .arg("--socket")
        .arg(&socket)
        .arg("--bpffs-dir")
        .arg(&pin_dir)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .expect("spawn cns-agent");
    let cli = |args: &[&str]| {
        Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run cns-agent")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(&["status"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the agent never answered: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give the watchers time to fail a few lists: still not ready.
    std::thread::sleep(Duration::from_secs(2));
    let out = cli(&["status", "--ready"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ready without a sync");
    assert!(stderr.contains("not ready"), "{stderr}");

    _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    _ = agent.wait();
    _ = std::fs::remove_dir_all(&pin_dir);
    _ = std::fs::remove_dir_all(&dir);
}
