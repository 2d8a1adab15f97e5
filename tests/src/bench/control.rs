//! The control plane (issue 7, section 4): the agent's sync pipeline on synthetic clusters.
//!
//! Every size runs in a child process (`cns-bench control-child ...`) so that its peak
//! memory (VmHWM) is its own. The child writes the manifests as YAML files into a directory
//! of its own (what `cns-agent run --manifests` reads), then times the agent's manifest
//! source (`ManifestSource::read`: stat, read, parse, validate), the compiler, `encode` +
//! `reconcile::diff`, and writing the first diff to real BPF maps in a pin directory of its
//! own; then single changes (a pod added, a label changed, a policy edited, 1000 policies
//! edited) through the whole pipeline, as the agent runs it on a source event, and the
//! names the agent publishes after a sync (`Names::new`).

use std::{
    collections::BTreeMap, fmt::Write as _, path::PathBuf, process::Command, sync::Arc,
    time::Instant,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};

use cns_agent::{
    encode::{self, MapContents},
    k8s::snapshot::{Caches, ClusterObjects, LastGood as KubeLastGood, to_changes, to_state},
    loader::Datapath,
    names::Names,
    policy::{
        Compiler,
        model::{Allocations, NodeContext, ObjectRef},
    },
    reconcile,
    source::{Kind, ManifestSource, SnapshotSource},
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
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Label => "label-heavy",
            Mix::Cidr => "cidr-heavy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "label" | "label-heavy" => Some(Mix::Label),
            "cidr" | "cidr-heavy" => Some(Mix::Cidr),
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
            Mix::Label => format!(
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
            Mix::Label => (
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

    /// The manifest files: namespaces, pods and policies in chunks of 1000 documents.
    /// `alt_policies`: the first 1000 policies in their edited form.
    fn files(&self, alt_policies: bool) -> Vec<(PathBuf, Result<String, String>)> {
        let mut files = Vec::new();
        let chunk = |name: String, docs: Vec<String>| (PathBuf::from(name), Ok(docs.join("---\n")));
        files.push(chunk(
            "00-namespaces.yaml".into(),
            (0..self.namespaces())
                .map(|k| self.namespace_yaml(k))
                .collect(),
        ));
        for c in 0..self.pods.div_ceil(1000) {
            let docs = (c * 1000..((c + 1) * 1000).min(self.pods))
                .map(|i| self.pod(i))
                .collect();
            files.push(chunk(format!("10-pods-{c:03}.yaml"), docs));
        }
        for c in 0..self.policies.div_ceil(1000) {
            let docs = (c * 1000..((c + 1) * 1000).min(self.policies))
                .map(|j| self.policy(&format!("pol{j}"), j, alt_policies && j < 1000))
                .collect();
            files.push(chunk(format!("20-policies-{c:03}.yaml"), docs));
        }
        files
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
            ],
            2,
            4,
        )
    } else {
        (
            vec![
                s(1_000, 100, Mix::Label),
                s(10_000, 1_000, Mix::Label),
                s(50_000, 1_000, Mix::Label),
                s(10_000, 1_000, Mix::Cidr),
                s(50_000, 1_000, Mix::Cidr),
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

/// The agent's state across syncs, as `agent::Agent` keeps it.
struct Pipeline {
    source: ManifestSource,
    compiler: Compiler,
    /// The encoded compile, updated where it changed (as the agent keeps it).
    intended: MapContents,
    written: MapContents,
    ifindexes: BTreeMap<ObjectRef, u32>,
    dp: Option<(Datapath, PathBuf)>,
    apply_failures: usize,
}

#[derive(Default)]
struct Timings {
    parse: f64,
    compile: f64,
    encode_diff: f64,
    apply: f64,
    /// The names published after the sync (not in the total: the maps are updated first).
    names: f64,
    ops: usize,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Pipeline {
    fn sync(&mut self) -> anyhow::Result<Timings> {
        let mut t = Timings::default();
        let t0 = Instant::now();
        let state = self.source.read(false)?;
        if let Some(e) = state.errors.first() {
            anyhow::bail!(
                "generated manifests are invalid ({} errors), first: {e}",
                state.errors.len()
            );
        }
        t.parse = ms(t0);
        let t0 = Instant::now();
        let changed = self.compiler.update_with(state.update);
        let desired = self.compiler.desired();
        t.compile = ms(t0);
        let t0 = Instant::now();
        // The veths of local pods: stable made-up ifindexes.
        for pod in desired.endpoints.keys() {
            let next = 1000 + self.ifindexes.len() as u32;
            self.ifindexes.entry(pod.clone()).or_insert(next);
        }
        encode::update(
            &mut self.intended,
            desired,
            &self.ifindexes,
            changed.as_ref(),
        );
        let addresses: Option<std::collections::BTreeSet<u32>> =
            changed.map(|c| c.iter().map(|ip| encode::addr(*ip)).collect());
        let ops = reconcile::diff_at(&self.intended, &self.written, addresses.as_ref());
        t.encode_diff = ms(t0);
        t.ops = ops.len();
        let t0 = Instant::now();
        if let Some((dp, _)) = &mut self.dp {
            self.apply_failures += reconcile::apply(dp, &ops).len();
        }
        reconcile::apply(&mut self.written, &ops);
        t.apply = ms(t0);
        let t0 = Instant::now();
        let names = Names::new(
            desired,
            self.compiler.snapshot(),
            self.compiler.lookups(),
            &BTreeMap::new(),
            false,
        );
        t.names = ms(t0);
        drop(names);

        Ok(t)
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

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some((dp, pin_dir)) = self.dp.take() {
            drop(dp);
            _ = std::fs::remove_dir_all(pin_dir);
        }
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
            .ok_or_else(|| anyhow::anyhow!("mix: label or cidr"))?,
    };
    let (trials, iterations) = (arg(3)?, arg(4)?);
    let dir = ManifestDir(std::env::temp_dir().join(unique("cns-bench-manifests-")));
    std::fs::create_dir_all(&dir.0)?;
    let mut yaml_bytes = 0;
    for (path, text) in spec.files(false) {
        let text = text.map_err(|e| anyhow::anyhow!(e))?;
        yaml_bytes += text.len();
        dir.write(&path, &text)?;
    }
    let yaml_mib = yaml_bytes as f64 / 1048576.0;
    // What the pipeline holds is the heap beyond what the child held before.
    let heap_before = heap::live_mib();
    let node = NodeContext {
        node_name: NODE.into(),
        node_ips: Default::default(),
    };
    let fresh = |with_dp: bool| -> anyhow::Result<Pipeline> {
        let dp = if with_dp && nix::unistd::geteuid().is_root() {
            let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-bench-cp-"));
            cns_agent::paths::prepare_pin_dir(&pin_dir)?;
            match Datapath::load(&pin_dir) {
                Ok(dp) => Some((dp, pin_dir)),
                Err(e) => {
                    eprintln!("no BPF maps for the apply figures: {e}");
                    _ = std::fs::remove_dir_all(&pin_dir);
                    None
                }
            }
        } else {
            None
        };
        Ok(Pipeline {
            source: ManifestSource::new(dir.0.clone()),
            compiler: Compiler::new(node.clone(), Allocations::default()),
            intended: MapContents::default(),
            written: MapContents::default(),
            ifindexes: BTreeMap::new(),
            dp,
            apply_failures: 0,
        })
    };

    // Cold syncs (empty maps), `trials` times; the last one keeps its datapath for the
    // single changes.
    let (mut parse, mut comp, mut enc) = (vec![], vec![], vec![]);
    let mut apply_ms = None;
    let mut pipeline = None;
    for trial in 0..trials {
        let last = trial + 1 == trials;
        let mut p = fresh(last)?;
        let t = p.sync()?;
        parse.push(t.parse);
        comp.push(t.compile);
        enc.push(t.encode_diff);
        if last {
            if p.dp.is_some() {
                apply_ms = Some(t.apply);
            }
            pipeline = Some(p);
        }
    }
    let mut p = pipeline.expect("at least one trial");
    let d = p.compiler.desired();
    let identities = d.allocations.identities.len();
    let result = ControlResult {
        pods: spec.pods,
        policies: spec.policies,
        mix: spec.mix.name().into(),
        yaml_mib,
        identities,
        endpoints: d.endpoints.len(),
        ipcache: p.written.ipcache.len(),
        policy_entries: p.written.policy.len(),
        cidr_entries: p.written.cidrs.len(),
        parse_ms: Summary::of(&parse),
        compile_ms: Summary::of(&comp),
        encode_diff_ms: Summary::of(&enc),
        apply_ms,
        apply_failures: p.apply_failures,
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
        p.sync()?;
        let mut ts = Vec::new();
        for it in 0..iterations {
            let (path, text) = &states[(it + 1) % 2];
            dir.write(path, text)?;
            let t = p.sync()?;
            ts.push(t);
        }
        dir.write(&states[0].0, &states[0].1)?;
        let col = |f: fn(&Timings) -> f64| ts.iter().map(f).collect::<Vec<f64>>();
        let total = col(|t| t.parse + t.compile + t.encode_diff + t.apply);
        incs.push(Incremental {
            change: (*name).into(),
            pods: spec.pods,
            policies: spec.policies,
            mix: spec.mix.name().into(),
            iterations,
            ops: ts.last().map_or(0, |t| t.ops),
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
    result.apply_failures = p.apply_failures;
    result.peak_rss_mib = proc_status_mib("VmHWM").unwrap_or(0.0);
    result.rss_after_mib = proc_status_mib("VmRSS").unwrap_or(0.0);
    // After the memory figures: the watch caches' copy of the cluster is not the manifest
    // pipeline's.
    incs.push(kube_label_changes(&p, &spec, &node, iterations));
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

/// One label changed on a local pod, as the Kubernetes source syncs it: its watch caches
/// (every pod as the caches hold it, looked up by key as in the reflector stores), the
/// object the watch event named validated and converted (`k8s::snapshot::to_changes`), and
/// the compiler's update.
fn kube_label_changes(
    p: &Pipeline,
    spec: &Spec,
    node: &NodeContext,
    iterations: usize,
) -> Incremental {
    let snap = p.compiler.snapshot();
    let objects = ClusterObjects {
        namespaces: snap.namespaces.values().cloned().collect(),
        pods: snap
            .pods
            .iter()
            .map(|(r, pod)| Arc::new(pod.to_pod(r)))
            .collect(),
        policies: snap.policies.values().cloned().collect(),
        config: None,
    };
    let mut last = KubeLastGood::default();
    let mut compiler = Compiler::new(node.clone(), Allocations::default());
    compiler.update_with(to_state(&objects, &mut last).update);
    let mut caches = Stores {
        pods: objects
            .pods
            .iter()
            .map(|p| {
                let m = &p.metadata;
                let r = ObjectRef::new(
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default(),
                );
                (r, p.clone())
            })
            .collect(),
        objects,
    };
    let (local, pod) = caches
        .pods
        .iter()
        .find(|(_, p)| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE))
        .map(|(r, p)| (r.clone(), p.clone()))
        .expect("a local pod");
    let mut relabelled = Pod::clone(&pod);
    relabelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("bench".into(), "relabelled".into());
    let versions = [pod, Arc::new(relabelled)];
    let (mut source, mut compile) = (Vec::new(), Vec::new());
    for it in 0..iterations {
        // The watch event: the cache replaced the pod, and named it.
        caches
            .pods
            .insert(local.clone(), versions[(it + 1) % 2].clone());
        let changed = [(Kind::Pod, local.clone())].into_iter().collect();
        let t0 = Instant::now();
        let state = to_changes(&caches, changed, None, &mut last);
        source.push(ms(t0));
        let t0 = Instant::now();
        compiler.update_with(state.update);
        compile.push(ms(t0));
    }
    let total: Vec<f64> = source.iter().zip(&compile).map(|(a, b)| a + b).collect();
    Incremental {
        change: "one label changed (local pod), Kubernetes source: source + compile only".into(),
        pods: spec.pods,
        policies: spec.policies,
        mix: spec.mix.name().into(),
        iterations,
        ops: 0,
        parse_p50_ms: percentile(&source, 50.0),
        compile_p50_ms: percentile(&compile, 50.0),
        encode_diff_p50_ms: 0.0,
        apply_p50_ms: 0.0,
        names_p50_ms: 0.0,
        total_p50_ms: percentile(&total, 50.0),
        total_p99_ms: percentile(&total, 99.0),
        total_max_ms: percentile(&total, 100.0),
    }
}

/// Watch caches by key, as the reflector stores are.
struct Stores {
    objects: ClusterObjects,
    pods: std::collections::HashMap<ObjectRef, Arc<Pod>>,
}

impl Caches for Stores {
    fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.objects.namespace(name)
    }

    fn pod(&self, key: &ObjectRef) -> Option<Arc<Pod>> {
        self.pods.get(key).cloned()
    }

    fn policy(&self, key: &ObjectRef) -> Option<Arc<NetworkPolicy>> {
        self.objects.policy(key)
    }
}
