//! The real `cns-agent` in Kubernetes mode (no `--manifests`), inside a virtual node's
//! netns, against a [`FakeApi`] listening on that netns' 127.0.0.1; and the objects to
//! seed it with, as JSON.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    VirtualNode,
    agent::{NODE_NAME, agent_bin},
    fakeapi::FakeApi,
    unique,
};

/// A manifest (one YAML document, as `crate::manifests` builds them) as JSON.
pub fn json(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The agent's ConfigMap (`cns-system/cns-config`) with `policyAuditMode`.
pub fn config(audit: bool) -> Value {
    serde_json::json!({"metadata": {"name": "cns-config", "namespace": "cns-system"},
                       "data": {"policyAuditMode": audit.to_string()}})
}

pub struct KubeAgent {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    log: PathBuf,
}

impl KubeAgent {
    /// Starts the agent in `node`'s netns against `api`, without waiting for it.
    pub fn spawn(node: &VirtualNode, api: &FakeApi, extra_args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("cns-kube-"));
        std::fs::create_dir_all(&dir).expect("create test dir");
        let kubeconfig = dir.join("kubeconfig");
        api.kubeconfig(&kubeconfig);
        let socket = dir.join("agent.sock");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-kube-"));
        let log = dir.join("agent.log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.node))
            .arg(agent_bin())
            .args(["run", "--node-name", NODE_NAME])
            .arg("--socket")
            .arg(&socket)
            .arg("--bpffs-dir")
            .arg(&pin_dir)
            .args(extra_args)
            .env("KUBECONFIG", &kubeconfig)
            .env("CNS_LOG", "info,cns_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("open log"))
            .spawn()
            .expect("spawn cns-agent");
        Self {
            child,
            dir,
            socket,
            pin_dir,
            log,
        }
    }

    /// Starts the agent and waits until it is ready.
    pub fn start(node: &VirtualNode, api: &FakeApi, extra_args: &[&str]) -> Self {
        let mut agent = Self::spawn(node, api, extra_args);
        agent.wait_ready(Duration::from_secs(60));
        agent
    }

    /// Waits until `status --ready` succeeds (a sync from complete lists is in the maps).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cns-agent exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "cns-agent did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ready(&self) -> bool {
        self.socket.exists() && self.cli(&["status", "--ready"]).is_ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run cns-agent client");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `cns-agent status -o json`.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "-o", "json"]).expect("status");
        serde_json::from_str(&out).expect("status json")
    }

    /// The source and sync errors `status` reports.
    pub fn errors(&self) -> Vec<String> {
        self.status()["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("agent status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for KubeAgent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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
