//! The real `cns-agent` binary started with exactly the arguments, stdout and limits a test
//! chooses (where [`crate::AgentProcess`] fixes them): for tests of how the agent copes with
//! its surroundings (a stdout nobody reads, few file descriptors, idle clients).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent::{agent_bin, metric_in, rss_kib, scrape_metrics},
    unique,
};

pub struct CustomAgent {
    pub child: Child,
    pub dir: PathBuf,
    pub manifests: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub node_netns: String,
    log: PathBuf,
}

/// How to start a [`CustomAgent`].
pub struct Options<'a> {
    pub manifests: &'a [(&'a str, &'a str)],
    /// Arguments after `run --manifests --node-name --socket --bpffs-dir`.
    pub args: &'a [&'a str],
    /// The agent's stdout (default: a file `events.jsonl` in its directory).
    pub stdout: Option<Stdio>,
    /// Soft and hard RLIMIT_NOFILE of the agent (through `prlimit`).
    pub nofile: Option<(u64, u64)>,
    /// Wait until the first sync answered.
    pub wait_ready: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            manifests: &[],
            args: &[],
            stdout: None,
            nofile: None,
            wait_ready: true,
        }
    }
}

impl CustomAgent {
    pub fn start(node_netns: &str, opts: Options<'_>) -> Self {
        let dir = std::env::temp_dir().join(unique("cns-test-"));
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).expect("create test dir");
        for (name, yaml) in opts.manifests {
            std::fs::write(manifests.join(name), yaml).expect("write manifest");
        }
        let socket = dir.join("agent.sock");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-test-"));
        let log = dir.join("agent.log");
        let mut cmd = match opts.nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg("nsenter");
                c
            }
            None => Command::new("nsenter"),
        };
        cmd.arg(format!("--net=/run/netns/{node_netns}"))
            .arg(agent_bin())
            .arg("run")
            .arg("--manifests")
            .arg(&manifests)
            .args(["--node-name", crate::agent::NODE_NAME])
            .arg("--socket")
            .arg(&socket)
            .arg("--bpffs-dir")
            .arg(&pin_dir)
            .args(opts.args)
            .env("CNS_LOG", "info,cns_agent=debug")
            .stdin(Stdio::null())
            .stdout(opts.stdout.unwrap_or_else(|| {
                std::fs::File::create(dir.join("events.jsonl"))
                    .expect("open events log")
                    .into()
            }))
            .stderr(std::fs::File::create(&log).expect("open log"));
        let child = cmd.spawn().expect("spawn cns-agent");
        let mut agent = Self {
            child,
            dir,
            manifests,
            socket,
            pin_dir,
            node_netns: node_netns.to_owned(),
            log,
        };
        if opts.wait_ready {
            agent.wait_ready();
        }
        agent
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cns-agent exited with {status}:\n{}", self.log());
            }
            // Ready once a first sync completed (with or without errors in the source).
            if self.socket.exists() && self.cli(&["status", "--ready"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cns-agent did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the agent process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Runs a client command against this agent, giving up after `timeout`: Ok(stdout) or
    /// Err(stdout + stderr, or "timed out").
    pub fn cli_within(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut child = Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cns-agent client");
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait client").is_none() {
            if Instant::now() > deadline {
                _ = child.kill();
                _ = child.wait();
                return Err(format!(
                    "`cns-agent {}` timed out after {timeout:?}",
                    args.join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("client output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        self.cli_within(args, Duration::from_secs(30))
    }

    /// `cns-agent status -o json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "-o", "json"]).expect("status");
        serde_json::from_str(&out).expect("status json")
    }

    /// Writes (or replaces) a manifest file, by rename as editors and ConfigMaps do.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(name)).expect("rename manifest");
    }

    /// `GET /metrics` on 127.0.0.1:9965 in the node's netns.
    pub fn scrape(&self) -> String {
        scrape_metrics(&self.node_netns)
    }

    /// The sum of the samples `name{labels}` (labels in any order, all must match).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_in(&self.scrape(), name, labels)
    }

    /// The agent's soft RLIMIT_NOFILE, from /proc/PID/limits.
    pub fn nofile_soft(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("agent limits");
        limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("Max open files")
    }

    /// The agent's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for CustomAgent {
    fn drop(&mut self) {
        if !self.exited() {
            _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.exited() {
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
