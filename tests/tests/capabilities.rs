//! The agent as deployed (issue 18, finding 9): root with only the capabilities the
//! DaemonSet grants, read from `deploy/kubernetes/daemonset.yaml`, in its bounding set
//! (`setpriv`). It loads, attaches, enforces, serves metrics and survives restarts; with one
//! of them removed it refuses to start, naming the capability.
//!
//! This file holds one test: it points `CNS_AGENT_BIN` at a `setpriv` wrapper for the whole
//! test process, so the virtual node's agent runs capped.

use std::{path::PathBuf, process::Command, time::Duration};

use cns_tests::{
    agent::{NODE_NAME, agent_bin},
    cluster::{Cluster, ONLY_BETA, SERVER},
    kernel_or_skip,
    process::Background,
    traffic::tcp_ok,
    unique,
};
use nix::sys::signal::Signal;

/// The capabilities the agent container adds (`capabilities: add: [...]`), e.g. `BPF`.
fn daemonset_caps() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/daemonset.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("add:"))
        .unwrap_or_else(|| panic!("{path} adds no capabilities"));
    let caps: Vec<String> = serde_json::from_str(line.trim()).expect("add: [\"CAP\", ...]");
    assert!(!caps.is_empty(), "{path}: no capabilities added");
    caps
}

/// The capability's number (`linux/capability.h`), for the ones the DaemonSet uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("the DaemonSet adds {other}: teach this test its number"),
    }
}

/// This process's bounding set: what it can grant at all.
fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// The arguments of `setpriv` that leave exactly `caps` to the program it runs as root.
fn setpriv_args(caps: &[String]) -> Vec<String> {
    let bounding: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    vec![
        format!("--bounding-set=-all,{}", bounding.join(",")),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        "--".into(),
    ]
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_each_is_needed() {
    if !kernel_or_skip("capabilities") {
        return;
    }
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv (util-linux) is missing: scripts/setup.sh installs it"
    );
    let bin = agent_bin().canonicalize().expect("the agent binary");
    let bounding = own_bounding_set();
    let (caps, unavailable): (Vec<String>, Vec<String>) = daemonset_caps()
        .into_iter()
        .partition(|c| bounding & (1 << cap_bit(c)) != 0);
    // A capability this machine withholds from the test cannot be granted; the agent then
    // runs with fewer than the DaemonSet's, which is the stricter test.
    if !unavailable.is_empty() {
        eprintln!(
            "note: {unavailable:?} of the DaemonSet's capabilities is not in this test's bounding set; the agent runs without it"
        );
    }
    let required = ["BPF", "NET_ADMIN", "PERFMON"];
    for r in required {
        assert!(
            caps.iter().any(|c| c == r),
            "{r} must be granted by the DaemonSet and available here: {caps:?}"
        );
    }

    let dir = std::env::temp_dir().join(unique("cns-caps-"));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("cns-agent-capped");
    let args = setpriv_args(&caps).join(" ");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv {args} '{}' \"$@\"\n",
            bin.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // SAFETY: this test binary holds only this test, and no other thread reads the
    // environment while it is set (the cluster is started afterwards).
    unsafe { std::env::set_var("CNS_AGENT_BIN", &wrapper) };

    let mut c = Cluster::start(false, &[("p.yaml", ONLY_BETA)]);
    // The agent: the process running the binary with this agent's socket.
    let agent_pid = || {
        let socket = c.agent.socket.display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                exe.is_ok_and(|e| e == bin) && String::from_utf8_lossy(&cmdline).contains(&socket)
            })
            .expect("the capped agent's pid")
    };
    let eff = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap();
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(
        eff(&agent_pid()),
        want,
        "the agent runs with exactly {caps:?}"
    );

    // Loads, attaches, enforces, serves metrics.
    let check = |c: &Cluster, when: &str| {
        assert!(
            tcp_ok(&c.beta_client.netns, SERVER, 8080),
            "{when}: beta -> alpha allowed"
        );
        assert!(
            !tcp_ok(&c.gamma_client.netns, SERVER, 8080),
            "{when}: gamma -> alpha denied"
        );
        assert!(
            c.agent.metric("cns_map_capacity", &[]).unwrap_or(0.0) > 0.0,
            "{when}: metrics served"
        );
        assert_eq!(c.agent.status()["mode"], "blocking", "{when}");
    };
    check(&c, "capped");
    c.agent.apply(
        "p.yaml",
        &ONLY_BETA.replace("{matchLabels: {team: beta}}", "{}"),
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "a change reaches the maps"
    );
    c.agent.apply("p.yaml", ONLY_BETA);

    // Restarts: the capped agent takes over the pinned programs.
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        c.agent.stop(signal);
        c.agent.restart();
        check(&c, &format!("after {signal} and a restart"));
    }
    assert!(
        c.agent
            .log()
            .contains("took over the programs pinned by an earlier agent"),
        "{}",
        c.agent.log()
    );

    // One capability fewer: refused at start, naming it.
    let manifests = c.agent.manifests.clone();
    for gone in required {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != gone).cloned().collect();
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-test-"));
        let mut bg = Background::spawn(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", c.node.node))
                .arg("setpriv")
                .args(setpriv_args(&fewer))
                .arg(&bin)
                .arg("run")
                .arg("--manifests")
                .arg(&manifests)
                .args(["--node-name", NODE_NAME, "--metrics-addr", "none"])
                .arg("--socket")
                .arg(dir.join(format!("{gone}.sock")))
                .arg("--bpffs-dir")
                .arg(&pin_dir),
        );
        let status = bg.wait_exit(Duration::from_secs(20));
        let stderr = bg.stderr();
        _ = std::fs::remove_dir_all(&pin_dir);
        assert!(
            status.is_some_and(|s| !s.success()),
            "without {gone}: {status:?}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("missing capability CAP_{gone} (")),
            "without {gone}, the error names it:\n{stderr}"
        );
    }
    check(&c, "after the refused agents");
    drop(c);
    _ = std::fs::remove_dir_all(&dir);
}
