//! The control plane (issues 7 and 16): the agent's own sync on synthetic clusters.
//!
//! Every size runs in a child process (`cns-bench control-child ...`) so that its peak
//! memory (VmHWM) is its own. The child writes the manifests as YAML files into a directory
//! of its own (what `cns-agent run --manifests` reads) and runs the real [`Agent`] on it,
//! in-process, with its real manifest source and real BPF maps in a pin directory of its
//! own: the cold sync (a fresh agent on empty maps), then single changes (a pod added, a
//! label changed, a policy edited, 1000 policies edited), each timed from the file's write
//! to `Agent::sync` returning (what `cns-agent sync` waits for; the file watcher's debounce
//! not included), with the work the agent reports (entries encoded, addresses diffed).

use std::{fmt::Write as _, path::PathBuf, process::Command, time::Instant};

use cns_agent::{
    agent::{Agent, AgentConfig, SyncReport},
    datapath::Datapath,
    metrics::AgentMetrics,
    policy::AuditMode,
    source::ManifestSource,
    uplink::XdpInterfaces,
};
use serde_json::{Value, json};

use super::{Options, Summary, heap, percentile, proc_status_mib, round3};
use crate::unique;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Pods with six labels; selector-based policies (pod, namespace and both, In/NotIn).
    Label,
    /// Pods with two labels; ipBlock-based policies (with except).
    Cidr,
    /// Label-heavy, plus 100 ClusterNetworkPolicies (50 Admin, 50 Baseline).
    Tiers,
}

/// ClusterNetworkPolicies of the [`Mix::Tiers`] mix.
const CLUSTER_POLICIES: usize = 100;

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Label => "label-heavy",
            Mix::Cidr => "cidr-heavy",
            Mix::Tiers => "label-heavy+100-cnp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "label" | "label-heavy" => Some(Mix::Label),
            "cidr" | "cidr-heavy" => Some(Mix::Cidr),
            "tiers" | "label-heavy+100-cnp" => Some(Mix::Tiers),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub pods: usize,
    pub policies: usize,
    pub mix: Mix,
}

const NODE: &str = "node-0";

impl Spec {
    fn namespaces(&self) -> usize {
        (self.pods / 100).clamp(10, 500)
    }

    fn nodes(&self) -> usize {
        (self.pods / 100).max(10)
    }

    fn node_of(&self, i: usize) -> usize {
        // A multiplicative hash, so that a node's pods spread over namespaces and apps.
        ((i as u64).wrapping_mul(2_654_435_761) >> 7) as usize % self.nodes()
    }

    fn namespace_yaml(&self, k: usize) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{k}\n  labels: {{team: t{}, env: {}}}\n",
            k % 20,
            if k.is_multiple_of(2) {
                "prod"
            } else {
                "staging"
            }
        )
    }

    /// Pod `i`'s labels (from `i` and `app`), at address 10.16.0.0 + `ip_index`.
    fn pod_yaml(
        &self,
        name: &str,
        ns: usize,
        app: usize,
        i: usize,
        ip_index: usize,
        node: &str,
    ) -> String {
        let tier = ["web", "api", "db"][i % 3];
        let labels = match self.mix {
            Mix::Label | Mix::Tiers => format!(
                "{{app: a{app}, tier: {tier}, version: v{}, track: {}, component: c{}, team: t{}}}",
                i % 5,
                if i.is_multiple_of(7) {
                    "canary"
                } else {
                    "stable"
                },
                i % 50,
                i % 20
            ),
            Mix::Cidr => format!("{{app: a{app}, tier: {tier}}}"),
        };
        let ip = std::net::Ipv4Addr::from(u32::from_be_bytes([10, 16, 0, 0]) + ip_index as u32);
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: ns{ns}\n  labels: {labels}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: registry.example/app:1\n    ports:\n    - {{name: http, containerPort: 8080, protocol: TCP}}\nstatus:\n  phase: Running\n  podIP: {ip}\n"
        )
    }

    fn pod(&self, i: usize) -> String {
        let ns = i % self.namespaces();
        let app = (i / self.namespaces()) % 200;
        let node = format!("node-{}", self.node_of(i));
        self.pod_yaml(&format!("p{i}"), ns, app, i, i, &node)
    }

    /// Policy `j`; `alt` changes its first ingress port (the "policy edited" change).
    fn policy(&self, name: &str, j: usize, alt: bool) -> String {
        let nss = self.namespaces();
        let ns = j % nss;
        let a = j / nss;
        let selector = if j.is_multiple_of(10) {
            "{}".to_owned()
        } else {
            format!("{{matchLabels: {{app: a{}}}}}", a % 200)
        };
        let port = if alt { "8081" } else { "http" };
        let (ingress, egress) = match self.mix {
            Mix::Label | Mix::Tiers => (
                format!(
                    "  - from:\n    - podSelector: {{matchLabels: {{app: a{}}}}}\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector:\n        matchExpressions:\n        - {{key: app, operator: In, values: [a{}, a{}]}}\n        - {{key: tier, operator: In, values: [web, api]}}\n        - {{key: version, operator: NotIn, values: [v0]}}\n    ports:\n    - {{protocol: TCP, port: {port}}}\n    - {{protocol: TCP, port: 9000, endPort: 9010}}\n",
                    (a + 1) % 200,
                    j % 20,
                    (a + 2) % 200,
                    (a + 3) % 200
                ),
                format!(
                    "  - to:\n    - podSelector: {{matchLabels: {{app: a{}}}}}\n    ports: [{{protocol: TCP, port: 8080}}]\n  - to:\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}\n    ports: [{{protocol: UDP, port: 53}}]\n",
                    (a + 4) % 200
                ),
            ),
            Mix::Cidr => (
                format!(
                    "  - from:\n    - ipBlock: {{cidr: 172.{}.{}.0/24}}\n    - ipBlock: {{cidr: 10.{}.0.0/16, except: [10.{}.{}.0/24]}}\n    ports: [{{protocol: TCP, port: {port}}}, {{protocol: TCP, port: 443}}]\n",
                    16 + j % 16,
                    (j / 16) % 256,
                    j % 200,
                    j % 200,
                    j % 256
                ),
                format!(
                    "  - to:\n    - ipBlock: {{cidr: 192.168.{}.0/24}}\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]}}\n    ports: [{{protocol: TCP, port: 443}}]\n",
                    j % 256
                ),
            ),
        };
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: ns{ns}\nspec:\n  podSelector: {selector}\n  policyTypes: [Ingress, Egress]\n  ingress:\n{ingress}  egress:\n{egress}"
        )
    }

    /// ClusterNetworkPolicy `j`: Admin (j < 50) or Baseline, ten priorities, subjects by
    /// namespace labels or by pods, four rules a direction (pods of an app in one team's
    /// namespaces on a port range, namespaces, networks, ports, every action).
    fn cluster_policy(&self, j: usize) -> String {
        let tier = if j < CLUSTER_POLICIES / 2 {
            "Admin"
        } else {
            "Baseline"
        };
        let subject = if j.is_multiple_of(2) {
            format!("namespaces: {{matchLabels: {{team: t{}}}}}", j % 20)
        } else {
            format!(
                "pods: {{namespaceSelector: {{matchLabels: {{env: prod}}}}, podSelector: {{matchLabels: {{app: a{}}}}}}}",
                j % 200
            )
        };
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: cnp{j}\nspec:\n  tier: {tier}\n  priority: {}\n  subject: {{{subject}}}\n  ingress:\n  - {{name: deny-db, action: Deny, from: [{{namespaces: {{matchLabels: {{team: t{}}}}}}}], protocols: [{{tcp: {{destinationPort: {{number: 5432}}}}}}]}}\n  - {{name: pass-prod, action: Pass, from: [{{namespaces: {{matchLabels: {{env: prod}}}}}}]}}\n  - {{name: accept-app, action: Accept, from: [{{pods: {{namespaceSelector: {{matchLabels: {{team: t{}}}}}, podSelector: {{matchLabels: {{app: a{}}}}}}}}}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 8080, end: 8089}}}}}}}}]}}\n  - {{name: deny-rest, action: Deny, from: [{{namespaces: {{matchLabels: {{team: t{}}}}}}}]}}\n  egress:\n  - {{name: accept-dns, action: Accept, to: [{{networks: [10.96.0.10/32]}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: deny-metadata, action: Deny, to: [{{networks: [169.254.169.254/32]}}]}}\n  - {{name: pass-cluster, action: Pass, to: [{{networks: [10.0.0.0/8]}}]}}\n  - {{name: deny-world, action: Deny, to: [{{networks: [0.0.0.0/0]}}], protocols: [{{tcp: {{destinationPort: {{number: 25}}}}}}]}}\n",
            (j % 10) * 10,
            (j + 1) % 20,
            (j + 2) % 20,
            (j + 3) % 200,
            (j + 5) % 20,
        )
    }

    /// The manifest files, one at a time (so that the bench never holds the cluster's YAML
    /// beside the agent): namespaces, pods and policies in chunks of 1000 documents.
    fn for_each_file(
        &self,
        mut f: impl FnMut(PathBuf, String) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let chunk = |docs: Vec<String>| docs.join("---\n");
        f(
            "00-namespaces.yaml".into(),
            chunk(
                (0..self.namespaces())
                    .map(|k| self.namespace_yaml(k))
                    .collect(),
            ),
        )?;
        for c in 0..self.pods.div_ceil(1000) {
            let docs = (c * 1000..((c + 1) * 1000).min(self.pods))
                .map(|i| self.pod(i))
                .collect();
            f(format!("10-pods-{c:03}.yaml").into(), chunk(docs))?;
        }
        for c in 0..self.policies.div_ceil(1000) {
            let docs = (c * 1000..((c + 1) * 1000).min(self.policies))
                .map(|j| self.policy(&format!("pol{j}"), j, false))
                .collect();
            f(format!("20-policies-{c:03}.yaml").into(), chunk(docs))?;
        }
        if self.mix == Mix::Tiers {
            let docs = (0..CLUSTER_POLICIES)
                .map(|j| self.cluster_policy(j))
                .collect();
            f("30-cluster-policies.yaml".into(), chunk(docs))?;
        }
        Ok(())
    }
}

/// One size's figures.
#[derive(Clone, Debug)]
pub struct ControlResult {
    pub pods: usize,
    pub policies: usize,
    pub mix: String,
    pub yaml_mib: f64,
    pub identities: usize,
    pub endpoints: usize,
    pub ipcache: usize,
    pub policy_entries: usize,
    pub cidr_entries: usize,
    pub parse_ms: Summary,
    pub compile_ms: Summary,
    pub encode_diff_ms: Summary,
    /// A fresh agent's first sync, from loading the programs to the maps written.
    pub cold_start_ms: Summary,
    /// First write of every entry to the BPF maps (None without a datapath).
    pub apply_ms: Option<f64>,
    pub apply_failures: usize,
    pub peak_rss_mib: f64,
    pub rss_after_mib: f64,
    /// Heap bytes the pipeline holds after the cold sync (the source's, the compiler's and
    /// the encoded maps' state; not the YAML text, not the allocator's free memory).
    pub heap_mib: f64,
}

impl ControlResult {
    pub fn json(&self) -> Value {
        json!({
            "pods": self.pods,
            "policies": self.policies,
            "mix": self.mix,
            "yaml_mib": round3(self.yaml_mib),
            "identities": self.identities,
            "local_endpoints": self.endpoints,
            "ipcache_entries": self.ipcache,
            "policy_entries": self.policy_entries,
            "cidr_entries": self.cidr_entries,
            "parse_ms": self.parse_ms.json(),
            "compile_ms": self.compile_ms.json(),
            "encode_diff_ms": self.encode_diff_ms.json(),
            "cold_start_ms": self.cold_start_ms.json(),
            "apply_ms": self.apply_ms.map(round3),
            "apply_failures": self.apply_failures,
            "peak_rss_mib": round3(self.peak_rss_mib),
            "rss_after_mib": round3(self.rss_after_mib),
            "heap_mib": round3(self.heap_mib),
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let s = |v: &Value| -> Option<Summary> {
            Some(Summary {
                median: v["median"].as_f64()?,
                min: v["min"].as_f64()?,
                max: v["max"].as_f64()?,
                n: v["trials"].as_u64()? as usize,
            })
        };
        Some(Self {
            pods: v["pods"].as_u64()? as usize,
            policies: v["policies"].as_u64()? as usize,
            mix: v["mix"].as_str()?.to_owned(),
            yaml_mib: v["yaml_mib"].as_f64()?,
            identities: v["identities"].as_u64()? as usize,
            endpoints: v["local_endpoints"].as_u64()? as usize,
            ipcache: v["ipcache_entries"].as_u64()? as usize,
            policy_entries: v["policy_entries"].as_u64()? as usize,
            cidr_entries: v["cidr_entries"].as_u64()? as usize,
            parse_ms: s(&v["parse_ms"])?,
            compile_ms: s(&v["compile_ms"])?,
            encode_diff_ms: s(&v["encode_diff_ms"])?,
            // Reports before the bench drove the agent lack it.
            cold_start_ms: s(&v["cold_start_ms"]).unwrap_or_default(),
            apply_ms: v["apply_ms"].as_f64(),
            apply_failures: v["apply_failures"].as_u64()? as usize,
            peak_rss_mib: v["peak_rss_mib"].as_f64()?,
            rss_after_mib: v["rss_after_mib"].as_f64()?,
            // Reports before it was measured lack it.
            heap_mib: v["heap_mib"].as_f64().unwrap_or(0.0),
        })
    }
}

/// One kind of single change at one size.
#[derive(Clone, Debug)]
pub struct Incremental {
    pub change: String,
    pub pods: usize,
    pub policies: usize,
    pub mix: String,
    pub iterations: usize,
    /// Map operations per iteration (the last one).
    pub ops: usize,
    /// Entries the agent encoded and IP cache addresses it compared (the last iteration).
    pub encoded: usize,
    pub diffed: usize,
    pub parse_p50_ms: f64,
    pub compile_p50_ms: f64,
    pub encode_diff_p50_ms: f64,
    pub apply_p50_ms: f64,
    /// Publishing the names after the sync (not in the totals).
    pub names_p50_ms: f64,
    pub total_p50_ms: f64,
    pub total_p99_ms: f64,
    pub total_max_ms: f64,
}

impl Incremental {
    pub fn json(&self) -> Value {
        json!({
            "change": self.change,
            "pods": self.pods,
            "policies": self.policies,
            "mix": self.mix,
            "iterations": self.iterations,
            "map_ops": self.ops,
            "encoded_entries": self.encoded,
            "diffed_addresses": self.diffed,
            "parse_p50_ms": round3(self.parse_p50_ms),
            "compile_p50_ms": round3(self.compile_p50_ms),
            "encode_diff_p50_ms": round3(self.encode_diff_p50_ms),
            "apply_p50_ms": round3(self.apply_p50_ms),
            "names_p50_ms": round3(self.names_p50_ms),
            "total_p50_ms": round3(self.total_p50_ms),
            "total_p99_ms": round3(self.total_p99_ms),
            "total_max_ms": round3(self.total_max_ms),
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v[k].as_f64();
        Some(Self {
            change: v["change"].as_str()?.to_owned(),
            pods: v["pods"].as_u64()? as usize,
            policies: v["policies"].as_u64()? as usize,
            mix: v["mix"].as_str()?.to_owned(),
            iterations: v["iterations"].as_u64()? as usize,
            ops: v["map_ops"].as_u64()? as usize,
            // Reports before the bench drove the agent lack them.
            encoded: v["encoded_entries"].as_u64().unwrap_or(0) as usize,
            diffed: v["diffed_addresses"].as_u64().unwrap_or(0) as usize,
            parse_p50_ms: f("parse_p50_ms")?,
            compile_p50_ms: f("compile_p50_ms")?,
            encode_diff_p50_ms: f("encode_diff_p50_ms")?,
            apply_p50_ms: f("apply_p50_ms")?,
            // Reports before it was measured lack it.
            names_p50_ms: f("names_p50_ms").unwrap_or(0.0),
            total_p50_ms: f("total_p50_ms")?,
            total_p99_ms: f("total_p99_ms")?,
            total_max_ms: f("total_max_ms")?,
        })
    }
}

/// The sizes of a run.
pub fn plan(opts: &Options) -> (Vec<Spec>, usize, usize) {
    let s = |pods, policies, mix| Spec {
        pods,
        policies,
        mix,
    };
    if opts.quick {
        (
            vec![
                s(1_000, 100, Mix::Label),
                s(1_000, 100, Mix::Cidr),
                s(5_000, 500, Mix::Label),
                s(5_000, 500, Mix::Tiers),
            ],
            2,
            4,
        )
    } else {
        (
            vec![
                s(1_000, 1_000, Mix::Label),
                s(5_000, 1_000, Mix::Label),
                s(50_000, 1_000, Mix::Label),
                s(50_000, 1_000, Mix::Cidr),
                s(50_000, 1_000, Mix::Tiers),
            ],
            3,
            10,
        )
    }
}

/// Fewer single-change iterations for the largest clusters (each one is a full sync).
fn iterations_for(spec: &Spec, iterations: usize) -> usize {
    if spec.pods > 10_000 {
        iterations.min(4)
    } else {
        iterations
    }
}

/// Runs every size in a child process (this binary, `control-child`).
pub fn run(
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<(Vec<ControlResult>, Vec<Incremental>)> {
    let (specs, trials, iterations) = plan(opts);
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    let mut incs = Vec::new();
    for spec in specs {
        let t0 = Instant::now();
        let out = Command::new(&exe)
            .args([
                "control-child",
                &spec.pods.to_string(),
                &spec.policies.to_string(),
                spec.mix.name(),
                &trials.to_string(),
                &iterations_for(&spec, iterations).to_string(),
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "control-child {spec:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))?;
        let r = ControlResult::from_json(&v["size"])
            .ok_or_else(|| anyhow::anyhow!("bad child output: {stdout}"))?;
        progress(&format!(
            "control: {} pods x {} policies ({}): compile {:.0} ms, peak RSS {:.0} MiB, {:.1}s",
            r.pods,
            r.policies,
            r.mix,
            r.compile_ms.median,
            r.peak_rss_mib,
            t0.elapsed().as_secs_f64()
        ));
        results.push(r);
        for i in v["incremental"].as_array().into_iter().flatten() {
            incs.push(
                Incremental::from_json(i)
                    .ok_or_else(|| anyhow::anyhow!("bad child output: {i}"))?,
            );
        }
    }
    Ok((results, incs))
}

/// The real agent on its own pin directory, removed (maps and all) when dropped.
struct Pipeline {
    agent: Option<Agent>,
    pin_dir: PathBuf,
}

#[derive(Default)]
struct Timings {
    parse: f64,
    compile: f64,
    encode_diff: f64,
    apply: f64,
    /// After the maps: attaching, XDP, names, metrics (in the total).
    names: f64,
    /// From the file's write to the sync's return.
    total: f64,
    ops: usize,
    encoded: usize,
    diffed: usize,
}

impl Timings {
    fn of(report: &SyncReport, total: f64) -> Self {
        let t = &report.timings;
        Self {
            parse: t.read_ms,
            compile: t.compile_ms,
            encode_diff: t.plan_ms,
            apply: t.write_ms,
            names: t.finish_ms,
            total,
            ops: report.changes,
            encoded: report.work.encoded_entries,
            diffed: report.work.diffed_addresses,
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Pipeline {
    /// A fresh agent (fresh maps) on the manifests in `dir`, as `cns-agent run --manifests
    /// DIR --node-name NODE --xdp-interfaces none` starts one.
    fn start(dir: &std::path::Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            nix::unistd::geteuid().is_root(),
            "the control section runs the agent on real BPF maps: run as root"
        );
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-bench-cp-"));
        cns_agent::paths::prepare_pin_dir(&pin_dir)?;
        let mut p = Self {
            agent: None,
            pin_dir,
        };
        let datapath = Datapath::load(&p.pin_dir)?;
        let cfg = AgentConfig {
            node_name: NODE.into(),
            audit_mode: AuditMode::Audit,
            pin_dir: p.pin_dir.clone(),
            resync_interval: std::time::Duration::from_secs(5),
            event_rate: 0,
            event_burst: 0,
            policy_verdict_events: false,
            xdp_interfaces: XdpInterfaces::None,
            pins: cns_agent::instance::PinDurability::Durable,
        };
        let source = Box::new(ManifestSource::new(dir.to_owned()));
        p.agent = Some(Agent::new(cfg, source, datapath, AgentMetrics::default())?);
        Ok(p)
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("started")
    }

    /// One sync of the agent, timed from `since` (the source event).
    fn sync(&mut self, since: Instant) -> anyhow::Result<Timings> {
        let report = self
            .agent()
            .sync()
            .map_err(|e| anyhow::anyhow!(cns_agent::error_chain(&e)))?;
        let total = ms(since);
        if let Some(e) = report.errors.first() {
            anyhow::bail!(
                "the agent reports {} errors for the generated manifests, first: {e}",
                report.errors.len()
            );
        }
        Ok(Timings::of(&report, total))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        drop(self.agent.take());
        _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// The manifests directory of a child, removed when done.
struct ManifestDir(PathBuf);

impl ManifestDir {
    fn write(&self, path: &std::path::Path, text: &str) -> anyhow::Result<()> {
        let path = self.0.join(path);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

impl Drop for ManifestDir {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cns-bench control-child PODS POLICIES MIX TRIALS ITERATIONS`: prints one JSON line.
pub fn child(args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| -> anyhow::Result<usize> {
        Ok(args
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("missing argument {i}"))?
            .parse()?)
    };
    let spec = Spec {
        pods: arg(0)?,
        policies: arg(1)?,
        mix: Mix::parse(args.get(2).map_or("", String::as_str))
            .ok_or_else(|| anyhow::anyhow!("mix: label, cidr or tiers"))?,
    };
    let (trials, iterations) = (arg(3)?, arg(4)?);
    let dir = ManifestDir(std::env::temp_dir().join(unique("cns-bench-manifests-")));
    std::fs::create_dir_all(&dir.0)?;
    let mut yaml_bytes = 0;
    spec.for_each_file(|path, text| {
        yaml_bytes += text.len();
        dir.write(&path, &text)
    })?;
    let yaml_mib = yaml_bytes as f64 / 1048576.0;
    // What the agent holds is the heap beyond what the child held before.
    let heap_before = heap::live_mib();

    // Cold syncs: a fresh agent on empty maps, `trials` times; the last one stays for the
    // single changes.
    let (mut parse, mut comp, mut enc, mut cold) = (vec![], vec![], vec![], vec![]);
    let mut apply_ms = None;
    let mut pipeline = None;
    for trial in 0..trials {
        let t0 = Instant::now();
        let mut p = Pipeline::start(&dir.0)?;
        let t = p.sync(t0)?;
        parse.push(t.parse);
        comp.push(t.compile);
        enc.push(t.encode_diff);
        cold.push(t.total);
        apply_ms = Some(t.apply);
        if trial + 1 == trials {
            pipeline = Some(p);
        }
    }
    let mut p = pipeline.expect("at least one trial");
    let (identities, endpoints) = {
        let d = p.agent().desired();
        (d.allocations.identities.len(), d.endpoints.len())
    };
    let written = p.agent().written();
    let result = ControlResult {
        pods: spec.pods,
        policies: spec.policies,
        mix: spec.mix.name().into(),
        yaml_mib,
        identities,
        endpoints,
        ipcache: written.ipcache.len(),
        policy_entries: written.policy.len(),
        cidr_entries: written.cidrs.len(),
        parse_ms: Summary::of(&parse),
        compile_ms: Summary::of(&comp),
        encode_diff_ms: Summary::of(&enc),
        cold_start_ms: Summary::of(&cold),
        apply_ms,
        apply_failures: 0,
        peak_rss_mib: 0.0,
        rss_after_mib: 0.0,
        heap_mib: heap::live_mib() - heap_before,
    };

    // Single changes: each toggles between two states of one file (an extra small file, or
    // the first chunk of policies), so that no second copy of the cluster is held.
    let new_pod = spec.pod_yaml("bench-new", 0, 1, 0, spec.pods + 10, NODE);
    let label = |app: usize| spec.pod_yaml("bench-label", 0, app, 1, spec.pods + 11, NODE);
    let pol = |alt: bool| spec.policy("bench-policy", 0, alt);
    let chunk = |alt: bool| -> String {
        (0..spec.policies.min(1000))
            .map(|j| spec.policy(&format!("pol{j}"), j, alt))
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let extra = PathBuf::from("30-change.yaml");
    let first_policies = PathBuf::from("20-policies-000.yaml");
    type States = [(PathBuf, String); 2];
    let mut changes: Vec<(&str, States)> = vec![
        (
            "one pod added (local)",
            [(extra.clone(), String::new()), (extra.clone(), new_pod)],
        ),
        (
            "one label changed (local pod)",
            [(extra.clone(), label(1)), (extra.clone(), label(2))],
        ),
        (
            "one policy edited",
            [(extra.clone(), pol(false)), (extra.clone(), pol(true))],
        ),
    ];
    if spec.policies >= 1000 {
        changes.push((
            "1000 policies edited",
            [
                (first_policies.clone(), chunk(false)),
                (first_policies, chunk(true)),
            ],
        ));
    }
    let mut incs = Vec::new();
    for (name, states) in &changes {
        // Settle in state 0 first (not timed).
        dir.write(&states[0].0, &states[0].1)?;
        p.sync(Instant::now())?;
        let mut ts = Vec::new();
        for it in 0..iterations {
            let (path, text) = &states[(it + 1) % 2];
            let t0 = Instant::now();
            dir.write(path, text)?;
            ts.push(p.sync(t0)?);
        }
        dir.write(&states[0].0, &states[0].1)?;
        let col = |f: fn(&Timings) -> f64| ts.iter().map(f).collect::<Vec<f64>>();
        let total = col(|t| t.total);
        incs.push(Incremental {
            change: (*name).into(),
            pods: spec.pods,
            policies: spec.policies,
            mix: spec.mix.name().into(),
            iterations,
            ops: ts.last().map_or(0, |t| t.ops),
            encoded: ts.last().map_or(0, |t| t.encoded),
            diffed: ts.last().map_or(0, |t| t.diffed),
            parse_p50_ms: percentile(&col(|t| t.parse), 50.0),
            compile_p50_ms: percentile(&col(|t| t.compile), 50.0),
            encode_diff_p50_ms: percentile(&col(|t| t.encode_diff), 50.0),
            apply_p50_ms: percentile(&col(|t| t.apply), 50.0),
            names_p50_ms: percentile(&col(|t| t.names), 50.0),
            total_p50_ms: percentile(&total, 50.0),
            total_p99_ms: percentile(&total, 99.0),
            total_max_ms: percentile(&total, 100.0),
        });
    }
    drop(changes);
    let mut result = result;
    result.peak_rss_mib = proc_status_mib("VmHWM").unwrap_or(0.0);
    result.rss_after_mib = proc_status_mib("VmRSS").unwrap_or(0.0);
    drop(p);
    let mut line = String::new();
    let _ = write!(
        line,
        "{}",
        json!({
            "size": result.json(),
            "incremental": incs.iter().map(Incremental::json).collect::<Vec<_>>(),
        })
    );
    println!("{line}");
    Ok(())
}
