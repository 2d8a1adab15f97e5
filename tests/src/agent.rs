//! The real `cns-agent` binary, running inside a virtual node's netns with its own
//! manifests directory, control socket and pin directory (removed on drop).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{VirtualNode, unique};

pub const NODE_NAME: &str = "node-1";

/// The agent binary: `$CNS_AGENT_BIN`, else the workspace's `target/debug/cns-agent`
/// (`cargo xtask test` builds it first).
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CNS_AGENT_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/cns-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p cns-agent` (cargo xtask test does), or set CNS_AGENT_BIN",
        bin.display()
    );
    bin
}

pub struct AgentProcess {
    child: Child,
    pub dir: PathBuf,
    pub manifests: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    log: PathBuf,
    node_netns: String,
    audit: bool,
    extra_args: Vec<String>,
}

impl AgentProcess {
    /// Starts the agent in `node`'s netns with the given manifests (file name, YAML) and
    /// waits until its first sync succeeded.
    pub fn start(node: &VirtualNode, audit: bool, manifests: &[(&str, &str)]) -> Self {
        Self::start_with(node, audit, manifests, &[])
    }

    /// Like [`AgentProcess::start`], with extra `cns-agent run` arguments.
    pub fn start_with(
        node: &VirtualNode,
        audit: bool,
        manifests: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(unique("cns-test-"));
        let manifests_dir = dir.join("manifests");
        std::fs::create_dir_all(&manifests_dir).expect("create test dir");
        for (name, yaml) in manifests {
            std::fs::write(manifests_dir.join(name), yaml).expect("write manifest");
        }
        let socket = dir.join("agent.sock");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-test-"));
        let log = dir.join("agent.log");
        let node_netns = node.node.clone();
        let extra_args: Vec<String> = extra_args.iter().map(ToString::to_string).collect();
        let child = Self::spawn(
            &node_netns,
            audit,
            &manifests_dir,
            &socket,
            &pin_dir,
            &log,
            &extra_args,
        );
        let mut agent = Self {
            child,
            dir,
            manifests: manifests_dir,
            socket,
            pin_dir,
            log,
            node_netns,
            audit,
            extra_args,
        };
        agent.wait_ready();
        agent
    }

    fn spawn(
        node_netns: &str,
        audit: bool,
        manifests: &Path,
        socket: &Path,
        pin_dir: &Path,
        log: &Path,
        extra_args: &[String],
    ) -> Child {
        let log_path = log;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open log");
        // nsenter enters only the network namespace; `ip netns exec` would also give the
        // agent a private mount namespace with a fresh /sys, hiding the host's bpffs (and
        // with it the pins that must outlive the agent).
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{node_netns}"))
            .arg(agent_bin())
            .arg("run")
            .arg("--manifests")
            .arg(manifests)
            .args(["--node-name", NODE_NAME])
            .arg(format!("--policy-audit-mode={audit}"))
            .arg("--socket")
            .arg(socket)
            .arg("--bpffs-dir")
            .arg(pin_dir)
            .args(["--resync-interval", "1"])
            .args(extra_args)
            .env("CNS_LOG", "info,cns_agent=debug")
            .stdin(Stdio::null())
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_path.with_file_name("events.jsonl"))
                    .expect("open events log"),
            )
            .stderr(log)
            .spawn()
            .expect("spawn cns-agent")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cns-agent exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() && self.sync().is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cns-agent did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the agent and waits for it to exit.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        _ = nix::sys::signal::kill(pid, signal);
        _ = self.child.wait();
    }

    /// Starts the agent again on the same manifests, socket and pin directory (after
    /// [`AgentProcess::stop`]) and waits until it is ready.
    pub fn restart(&mut self) {
        self.respawn();
        self.wait_ready();
    }

    /// Starts the agent again with what it was started with, without waiting.
    fn respawn(&mut self) {
        self.child = Self::spawn(
            &self.node_netns,
            self.audit,
            &self.manifests,
            &self.socket,
            &self.pin_dir,
            &self.log,
            &self.extra_args,
        );
    }

    /// Like [`AgentProcess::restart`] on input the agent reports problems with: waits until
    /// the agent answers a sync, and returns the sync's error (panics if it succeeds).
    pub fn restart_reporting(&mut self) -> String {
        self.respawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cns-agent exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() {
                match self.sync() {
                    Ok(out) => panic!("the sync reported no problem: {out}"),
                    Err(e) if !e.contains("failed to reach the agent") => return e,
                    Err(_) => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "cns-agent did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`AgentProcess::restart`], with `extra_args` in place of the extra arguments it
    /// was started with (from now on).
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(ToString::to_string).collect();
        self.restart();
    }

    /// `cns-agent status -o json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "-o", "json"]).expect("status");
        serde_json::from_str(&out).expect("status json")
    }

    /// The events the agent printed on stdout (one JSON object per line).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `GET /metrics` from the agent's metrics endpoint (inside the node's netns).
    pub fn scrape(&self) -> String {
        scrape_metrics(&self.node_netns)
    }

    /// The value of the sample `name{labels}` (labels in any order, all must match).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_in(&self.scrape(), name, labels)
    }

    /// The agent's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Whether the agent process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a client command against this agent; Ok(stdout) or Err(stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run cns-agent client");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    pub fn sync(&self) -> Result<String, String> {
        self.cli(&["sync"])
    }

    /// Writes (or replaces) a manifest file.
    pub fn write(&self, name: &str, yaml: &str) {
        // Write then rename, as editors and ConfigMap updates do.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(name)).expect("rename manifest");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).expect("remove manifest");
    }

    /// Writes, then syncs, panicking with the agent's error if the sync fails.
    pub fn apply(&self, name: &str, yaml: &str) {
        self.write(name, yaml);
        if let Err(e) = self.sync() {
            panic!("sync after writing {name} failed: {e}\n{}", self.log());
        }
    }

    /// The counters as JSON rows.
    pub fn counters(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["counters", "-o", "json"]).expect("counters");
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("counters json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Packets counted for (source ns, destination ns, direction, verdict).
    pub fn packets(&self, src: &str, dst: &str, dir: &str, verdict: &str) -> u64 {
        self.counters()
            .iter()
            .filter(|r| {
                r["source"] == src
                    && r["destination"] == dst
                    && r["direction"] == dir
                    && r["verdict"] == verdict
            })
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if !self.exited() {
            _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        _ = self.child.kill();
        _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cns-agent log ---\n{}", self.log());
        }
        _ = std::fs::remove_dir_all(&self.pin_dir);
        _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /metrics` on 127.0.0.1:9965 inside `netns` (where the agent runs).
pub fn scrape_metrics(netns: &str) -> String {
    use std::io::{Read, Write};
    crate::traffic::in_netns(netns, || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 9965)).expect("connect to metrics");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        out
    })
}

/// The sum of the samples `name{labels}` in an OpenMetrics text (labels in any order).
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = series.split_once('{').unwrap_or((series, "}"));
        if metric == name
            && labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        {
            *total.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// A process's resident memory (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
