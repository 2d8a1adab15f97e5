//! `cargo xtask kind up|load|deploy|bench|down`: a kind cluster to run the agent on real
//! Kubernetes nodes (kernel-level benchmarks, end-to-end checks).
//!
//! - `up`: creates the cluster of `deploy/kind/cluster.yaml` (kindnet disabled: it enforces
//!   NetworkPolicy itself and would hide the agent), then installs the ptp + host-local CNI
//!   plugins the node image ships: one conflist per node for its podCIDR, routes to the
//!   other nodes' pod CIDRs, masquerade to outside the pod network only (pod-to-pod traffic
//!   keeps its source address, which the policies match on).
//! - `load`: builds the image (`Dockerfile`) and loads it into the nodes.
//! - `deploy`: `kubectl apply -k deploy/kubernetes`, waits for the DaemonSet.
//! - `bench`: runs the benchmark workloads in pods (a server, an allowed and a denied
//!   client under a default-deny policy) and prints their results and the agent's counters.
//! - `down`: deletes the cluster.
//!
//! Each command first checks that docker, kind and kubectl are there and says which are
//! missing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct KindArgs {
    #[command(subcommand)]
    pub command: KindCmd,
    /// The kind cluster's name.
    #[arg(long, default_value = "cns", global = true)]
    pub name: String,
    /// The agent image (what deploy/kubernetes/kustomization.yaml names).
    #[arg(long, default_value = "cns-agent:dev", global = true)]
    pub image: String,
}

#[derive(Subcommand, Debug)]
pub enum KindCmd {
    /// Create the cluster and install the ptp CNI on every node.
    Up,
    /// Build the agent image and load it into the cluster's nodes.
    Load,
    /// Apply deploy/kubernetes and wait for the agent on every node.
    Deploy,
    /// Run the benchmark workloads in pods and print their results.
    Bench {
        /// Requests each client makes.
        #[arg(long, default_value_t = 1000)]
        requests: u32,
    },
    /// Delete the cluster.
    Down,
}

/// The tools each command runs.
fn tools_for(cmd: &KindCmd) -> &'static [&'static str] {
    match cmd {
        KindCmd::Up => &["docker", "kind", "kubectl"],
        KindCmd::Load => &["docker", "kind"],
        KindCmd::Deploy | KindCmd::Bench { .. } => &["kubectl"],
        KindCmd::Down => &["kind"],
    }
}

/// The tools of `tools` that `PATH` lacks.
pub fn missing_tools(tools: &[&str], path: Option<&std::ffi::OsStr>) -> Vec<String> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    tools
        .iter()
        .filter(|t| !dirs.iter().any(|d| d.join(t).is_file()))
        .map(|t| t.to_string())
        .collect()
}

fn check_tools(cmd: &KindCmd) -> anyhow::Result<()> {
    require("cargo xtask kind", tools_for(cmd))
}

/// Fails, naming what is missing, unless every one of `tools` is on PATH.
pub fn require(what: &str, tools: &[&str]) -> anyhow::Result<()> {
    let missing = missing_tools(tools, std::env::var_os("PATH").as_deref());
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "`{what}` needs {} on PATH, and {} missing here. Install docker \
         (https://docs.docker.com/engine/install/), kind (https://kind.sigs.k8s.io/) and \
         kubectl, on a machine where containers can run; nothing was changed.",
        tools.join(", "),
        if missing.len() == 1 {
            format!("{} is", missing[0])
        } else {
            format!("{} are", missing.join(", "))
        }
    )
}

/// Fails clearly when the docker CLI is there but no daemon answers (as on machines with
/// the client package and no container engine running).
pub fn require_docker_daemon() -> anyhow::Result<()> {
    let answered = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !answered {
        bail!(
            "docker is installed but no docker daemon answers (`docker info` failed): start \
             the daemon, or run this on a machine with a container engine; nothing was changed."
        );
    }
    Ok(())
}

/// `docker build -t TAG .` in the workspace (the `Dockerfile`): `cargo xtask image` and
/// `cargo xtask kind load`.
pub fn build_image(root: &Path, tag: &str) -> anyhow::Result<()> {
    require("docker build", &["docker"])?;
    require_docker_daemon()?;
    let status = Command::new("docker")
        .args(["build", "-t", tag, "."])
        .current_dir(root)
        .status()
        .context("failed to start docker build")?;
    if !status.success() {
        bail!("docker build -t {tag} . failed with {status}");
    }
    Ok(())
}

pub fn run(args: KindArgs, root: &Path) -> anyhow::Result<()> {
    check_tools(&args.command)?;
    if tools_for(&args.command).contains(&"docker") {
        require_docker_daemon()?;
    }
    let kind = Kind {
        name: args.name,
        image: args.image,
        root: root.to_path_buf(),
    };
    match args.command {
        KindCmd::Up => kind.up(),
        KindCmd::Load => kind.load(),
        KindCmd::Deploy => kind.deploy(),
        KindCmd::Bench { requests } => kind.bench(requests),
        KindCmd::Down => kind.down(),
    }
}

struct Kind {
    name: String,
    image: String,
    root: PathBuf,
}

impl Kind {
    fn context(&self) -> String {
        format!("kind-{}", self.name)
    }

    fn kubectl(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.args(["--context", &self.context()]);
        c
    }

    fn status(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let shown = format!("{cmd:?}");
        eprintln!("xtask kind: {shown}");
        let status = cmd
            .current_dir(&self.root)
            .status()
            .with_context(|| format!("failed to start {shown}"))?;
        if !status.success() {
            bail!("{shown} failed with {status}");
        }
        Ok(())
    }

    fn output(&self, cmd: &mut Command) -> anyhow::Result<String> {
        let shown = format!("{cmd:?}");
        let out = cmd
            .current_dir(&self.root)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("failed to start {shown}"))?;
        if !out.status.success() {
            bail!("{shown} failed with {}", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn with_stdin(&self, cmd: &mut Command, input: &str) -> anyhow::Result<()> {
        let shown = format!("{cmd:?}");
        eprintln!("xtask kind: {shown} < (generated)");
        let mut child = cmd
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {shown}"))?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {shown}"))?;
        let status = child.wait()?;
        if !status.success() {
            bail!("{shown} failed with {status}");
        }
        Ok(())
    }

    fn up(&self) -> anyhow::Result<()> {
        let clusters = self.output(Command::new("kind").args(["get", "clusters"]))?;
        if clusters.lines().any(|c| c == self.name) {
            eprintln!("xtask kind: cluster {} exists", self.name);
        } else {
            self.status(Command::new("kind").args([
                "create",
                "cluster",
                "--name",
                &self.name,
                "--config",
                "deploy/kind/cluster.yaml",
            ]))?;
        }
        // Nodes, their pod CIDR and address.
        let mut nodes = Vec::new();
        for node in self
            .output(Command::new("kind").args(["get", "nodes", "--name", &self.name]))?
            .lines()
        {
            let cidr = self.output(self.kubectl().args([
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.spec.podCIDR}",
            ]))?;
            let ip = self.output(Command::new("docker").args([
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.kind.IPAddress}}",
                node,
            ]))?;
            nodes.push(Node {
                name: node.to_owned(),
                pod_cidr: cidr,
                ip,
            });
        }
        let pod_subnet = pod_subnet(&self.root)?;
        for node in &nodes {
            self.with_stdin(
                Command::new("docker").args([
                    "exec",
                    "-i",
                    &node.name,
                    "sh",
                    "-c",
                    "mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-cns-ptp.conflist",
                ]),
                &ptp_conflist(&node.pod_cidr),
            )?;
            for args in node_network_commands(node, &nodes, &pod_subnet) {
                self.status(Command::new("docker").args(["exec", &node.name]).args(args))?;
            }
        }
        self.status(self.kubectl().args([
            "wait",
            "--for=condition=Ready",
            "nodes",
            "--all",
            "--timeout=180s",
        ]))
    }

    fn load(&self) -> anyhow::Result<()> {
        build_image(&self.root, &self.image)?;
        self.status(Command::new("kind").args([
            "load",
            "docker-image",
            &self.image,
            "--name",
            &self.name,
        ]))
    }

    fn deploy(&self) -> anyhow::Result<()> {
        self.status(self.kubectl().args(["apply", "-k", "deploy/kubernetes"]))?;
        self.status(self.kubectl().args([
            "-n",
            "cns-system",
            "rollout",
            "status",
            "daemonset/cns-agent",
            "--timeout=300s",
        ]))
    }

    fn bench(&self, requests: u32) -> anyhow::Result<()> {
        self.with_stdin(
            self.kubectl().args(["apply", "-f", "-"]),
            &bench_manifests(requests),
        )?;
        for job in ["allowed", "denied"] {
            // The denied client fails by design (blocking mode) or passes (audit mode).
            _ = self.status(self.kubectl().args([
                "-n",
                BENCH_NS,
                "wait",
                "--for=condition=complete",
                &format!("job/client-{job}"),
                "--timeout=600s",
            ]));
            self.status(self.kubectl().args([
                "-n",
                BENCH_NS,
                "logs",
                &format!("job/client-{job}"),
            ]))?;
        }
        self.status(self.kubectl().args([
            "-n",
            "cns-system",
            "exec",
            "daemonset/cns-agent",
            "-c",
            "cns-agent",
            "--",
            "cns-agent",
            "counters",
        ]))
    }

    fn down(&self) -> anyhow::Result<()> {
        self.status(Command::new("kind").args(["delete", "cluster", "--name", &self.name]))
    }
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub pod_cidr: String,
    pub ip: String,
}

/// `networking.podSubnet` of deploy/kind/cluster.yaml.
fn pod_subnet(root: &Path) -> anyhow::Result<String> {
    let path = root.join("deploy/kind/cluster.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("podSubnet:"))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .with_context(|| format!("{}: no networking.podSubnet", path.display()))
}

/// The CNI configuration of a node: ptp (a veth per pod, host routes) with host-local
/// addresses from the node's pod CIDR, and portmap. No masquerade here: ptp's would also
/// rewrite pod-to-pod traffic to other nodes, and the policies match the pod's address.
pub fn ptp_conflist(pod_cidr: &str) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "cns-kind",
  "plugins": [
    {{
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {{
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "ranges": [[{{ "subnet": "{pod_cidr}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#
    )
}

/// What `node` runs (after `docker exec NODE`): a route to every other node's pod CIDR via
/// that node, and masquerade for traffic leaving the pod network.
pub fn node_network_commands(node: &Node, nodes: &[Node], pod_subnet: &str) -> Vec<Vec<String>> {
    let mut cmds: Vec<Vec<String>> = nodes
        .iter()
        .filter(|n| n.name != node.name)
        .map(|n| {
            ["ip", "route", "replace", &n.pod_cidr, "via", &n.ip]
                .map(str::to_owned)
                .to_vec()
        })
        .collect();
    let rule = format!(
        "-s {pod_subnet} ! -d {pod_subnet} -m comment --comment cns-kind-masquerade -j MASQUERADE"
    );
    cmds.push(vec![
        "sh".into(),
        "-c".into(),
        format!("iptables -t nat -C POSTROUTING {rule} 2>/dev/null || iptables -t nat -A POSTROUTING {rule}"),
    ]);
    cmds
}

const BENCH_NS: &str = "cns-bench";

/// The benchmark workloads: an HTTP server behind a default-deny ingress policy that admits
/// the `allowed` client only; each client makes `requests` requests and prints how many
/// succeeded and how long they took.
pub fn bench_manifests(requests: u32) -> String {
    let client = |name: &str| {
        format!(
            r#"---
apiVersion: batch/v1
kind: Job
metadata:
  name: client-{name}
  namespace: {BENCH_NS}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels:
        role: client-{name}
    spec:
      restartPolicy: Never
      containers:
        - name: client
          image: busybox:1.36
          command:
            - sh
            - -c
            - |
              ok=0; fail=0; start=$(date +%s)
              for i in $(seq {requests}); do
                if wget -q -T 2 -O /dev/null http://server.{BENCH_NS}.svc:8080/; then ok=$((ok+1)); else fail=$((fail+1)); fi
              done
              echo "client-{name}: {requests} requests, $ok ok, $fail failed, $(( $(date +%s) - start ))s"
"#
        )
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {BENCH_NS}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: server
  namespace: {BENCH_NS}
spec:
  replicas: 2
  selector:
    matchLabels:
      role: server
  template:
    metadata:
      labels:
        role: server
    spec:
      containers:
        - name: server
          image: busybox:1.36
          command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && httpd -f -p 8080 -h /www"]
          ports:
            - name: http
              containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: {BENCH_NS}
spec:
  selector:
    role: server
  ports:
    - port: 8080
      targetPort: http
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: {BENCH_NS}
spec:
  podSelector: {{}}
  policyTypes: ["Ingress"]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-client
  namespace: {BENCH_NS}
spec:
  podSelector:
    matchLabels:
      role: server
  ingress:
    - from:
        - podSelector:
            matchLabels:
              role: client-allowed
      ports:
        - port: http
{}{}"#,
        client("allowed"),
        client("denied")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<Node> {
        (0..3)
            .map(|i| Node {
                name: format!("cns-worker{i}"),
                pod_cidr: format!("10.244.{i}.0/24"),
                ip: format!("172.18.0.{}", i + 2),
            })
            .collect()
    }

    #[test]
    fn missing_tools_are_named() {
        let dir = std::env::temp_dir().join(format!("xtask-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kind"), "").unwrap();
        let missing = missing_tools(&["docker", "kind", "kubectl"], Some(dir.as_os_str()));
        assert_eq!(missing, ["docker", "kubectl"]);
        assert_eq!(missing_tools(&["kind"], None), ["kind"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflist_is_ptp_without_masquerade_on_the_node_cidr() {
        let text = ptp_conflist("10.244.3.0/24");
        let compact: String = text.split_whitespace().collect();
        assert!(compact.contains(r#""type":"ptp","ipMasq":false"#), "{text}");
        assert!(compact.contains(r#""type":"host-local""#), "{text}");
        assert!(
            compact.contains(r#""ranges":[[{"subnet":"10.244.3.0/24"}]]"#),
            "{text}"
        );
        assert!(compact.contains(r#""type":"portmap""#), "{text}");
        // Balanced braces and brackets (well-formed enough for a fixed template).
        for (open, close) in [('{', '}'), ('[', ']')] {
            assert_eq!(text.matches(open).count(), text.matches(close).count());
        }
    }

    #[test]
    fn routes_to_the_other_nodes_and_masquerade_outside_the_pod_network() {
        let all = nodes();
        let cmds = node_network_commands(&all[0], &all, "10.244.0.0/16");
        assert_eq!(cmds.len(), 3);
        assert_eq!(
            cmds[0],
            [
                "ip",
                "route",
                "replace",
                "10.244.1.0/24",
                "via",
                "172.18.0.3"
            ]
        );
        assert_eq!(cmds[1][3], "10.244.2.0/24");
        let masq = &cmds[2][2];
        assert!(
            masq.contains("-s 10.244.0.0/16 ! -d 10.244.0.0/16"),
            "{masq}"
        );
        assert!(masq.contains("-C POSTROUTING") && masq.contains("-A POSTROUTING"));
    }

    #[test]
    fn pod_subnet_comes_from_the_kind_config() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_eq!(pod_subnet(&root).unwrap(), "10.244.0.0/16");
    }

    #[test]
    fn bench_manifests_are_well_formed() {
        let text = bench_manifests(50);
        let docs: Vec<&str> = text.split("\n---\n").collect();
        let kinds: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("kind: ")))
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "Deployment",
                "Service",
                "NetworkPolicy",
                "NetworkPolicy",
                "Job",
                "Job"
            ]
        );
        assert!(text.contains("seq 50"));
        assert!(!text.contains('\t'), "YAML must not contain tabs");
    }
}
