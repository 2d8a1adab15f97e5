//! Kubernetes mode at scale, through the real agent binary and its real kube client: a
//! synthetic cluster (namespaces, pods on many nodes, label-heavy policies) served by the
//! fake API server over HTTP ([`crate::fakeapi`]) in the virtual node's netns.
//!
//! - cold start: from spawning the agent, and from the server's first list request, to
//!   `cns-agent status --ready` succeeding (every first list in, their sync in the maps);
//! - single change: a pod created on another node (an ADDED event), then deleted (DELETED),
//!   timed from the event sent to its entry in the pinned `CNS_IPCACHE` appearing or going
//!   (polled every 50 µs). (A remote pod's relabelling is not visible there: the freed
//!   identity number is reused for its new label set.)
//! - peak RSS of the agent process (VmHWM), and its RSS at the end (VmRSS).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use cns_common::maps::{IPCACHE, Remote};
use serde_json::{Value, json};

use super::{Options, percentile, round3};
use crate::{
    VirtualNode,
    agent::NODE_NAME,
    fakeapi::{FakeApi, Res},
    kube::{KubeAgent, config},
};

/// Pods of the node under test (with real veths).
const LOCAL_PODS: usize = 4;

#[derive(Clone, Debug)]
pub struct KubeResult {
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    /// Spawn to ready, seconds.
    pub cold_start_s: f64,
    /// The server's first list request to ready, seconds.
    pub list_to_ready_s: f64,
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    pub change_max_ms: f64,
    pub changes: usize,
    /// The agent's own mean sync time over those changes (`cns_sync_duration_seconds`,
    /// phase total): the rest of a change is the watch and the wake-up.
    pub sync_mean_ms: f64,
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

impl KubeResult {
    pub fn json(&self) -> Value {
        json!({
            "pods": self.pods,
            "policies": self.policies,
            "namespaces": self.namespaces,
            "cold_start_s": round3(self.cold_start_s),
            "list_to_ready_s": round3(self.list_to_ready_s),
            "change_p50_ms": round3(self.change_p50_ms),
            "change_p99_ms": round3(self.change_p99_ms),
            "change_max_ms": round3(self.change_max_ms),
            "changes": self.changes,
            "sync_mean_ms": round3(self.sync_mean_ms),
            "peak_rss_mib": round3(self.peak_rss_mib),
            "rss_mib": round3(self.rss_mib),
        })
    }

    pub fn headline(&self) -> String {
        format!(
            "Kubernetes mode, {} pods x {} policies over HTTP: cold start {:.2} s ({:.2} s from the first list), single change p50 {:.2} ms / p99 {:.2} ms (pod ADDED/DELETED event to CNS_IPCACHE), peak RSS {:.0} MiB",
            self.pods,
            self.policies,
            self.cold_start_s,
            self.list_to_ready_s,
            self.change_p50_ms,
            self.change_p99_ms,
            self.peak_rss_mib
        )
    }

    pub fn markdown(&self) -> String {
        format!(
            "## Kubernetes mode\n\n\
             The real agent binary and its kube client against the fake API server over HTTP \
             (`tests/src/fakeapi.rs`, in the node's netns): {} namespaces, {} pods ({} on the node \
             under test, the rest on other nodes), {} label-heavy policies, listed unpaginated. \
             Cold start: spawn (or the server's first list request) to `status --ready`. Single \
             change: a pod created on another node, then deleted (ADDED and DELETED events), \
             from the event sent to its `CNS_IPCACHE` entry appearing or going, over {} \
             changes.\n\n\
             | cold start | from first list | change p50 | change p99 | change max | agent's sync (mean) | peak RSS (VmHWM) | RSS after |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {:.2} s | {:.2} s | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} MiB | {:.0} MiB |\n\n\
             Targets (issue 16): cold start < 3 s, single change < 5 ms p99, peak RSS < 150 MiB.\n",
            self.namespaces,
            self.pods,
            LOCAL_PODS,
            self.policies,
            self.changes,
            self.cold_start_s,
            self.list_to_ready_s,
            self.change_p50_ms,
            self.change_p99_ms,
            self.change_max_ms,
            self.sync_mean_ms,
            self.peak_rss_mib,
            self.rss_mib
        )
    }
}

/// The synthetic cluster.
struct Spec {
    pods: usize,
    policies: usize,
}

impl Spec {
    fn namespaces(&self) -> usize {
        (self.pods / 100).clamp(10, 500)
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be_bytes([10, 16, 0, 1]) + i as u32)
    }

    fn namespace(k: usize) -> Value {
        json!({"metadata": {"name": format!("ns{k}"),
               "labels": {"team": format!("t{}", k % 20), "env": if k.is_multiple_of(2) { "prod" } else { "staging" }}}})
    }

    /// Pod `i`; `app` overrides its app label (the change).
    fn pod(&self, i: usize, app: Option<&str>) -> Value {
        let nss = self.namespaces();
        let node = if i < LOCAL_PODS {
            NODE_NAME.to_owned()
        } else {
            format!("node-{}", 2 + i % 100)
        };
        let app = app.map_or_else(|| format!("a{}", (i / nss) % 200), str::to_owned);
        let tier = ["web", "api", "db"][i % 3];
        json!({
            "metadata": {"name": format!("p{i}"), "namespace": format!("ns{}", i % nss),
                "labels": {"app": app, "tier": tier,
                           "version": format!("v{}", i % 5), "team": format!("t{}", i % 20)}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1",
                     "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": Self::ip(i).to_string()},
        })
    }

    fn policy(&self, j: usize) -> Value {
        let nss = self.namespaces();
        let a = j / nss;
        let selector = if j.is_multiple_of(10) {
            json!({})
        } else {
            json!({"matchLabels": {"app": format!("a{}", a % 200)}})
        };
        json!({
            "metadata": {"name": format!("np{j}"), "namespace": format!("ns{}", j % nss)},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"app": format!("a{}", (a + 1) % 200)}}},
                    {"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 20)}},
                     "podSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": [format!("a{}", (a + 2) % 200), format!("a{}", (a + 3) % 200)]},
                        {"key": "tier", "operator": "In", "values": ["web", "api"]}]}}],
                    "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": 9000, "endPort": 9010}]}],
                "egress": [
                    {"to": [{"podSelector": {"matchLabels": {"app": format!("a{}", (a + 4) % 200)}}}],
                     "ports": [{"protocol": "TCP", "port": 8080}]},
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                     "ports": [{"protocol": "UDP", "port": 53}]}]},
        })
    }
}

/// Runs the section: 50k pods x 1000 policies (quick: 5k pods).
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> anyhow::Result<KubeResult> {
    let spec = Spec {
        pods: if opts.quick { 5_000 } else { 50_000 },
        policies: 1000,
    };
    let changes = if opts.quick { 50 } else { 200 };
    let mut node = VirtualNode::new();
    let _local: Vec<_> = (0..LOCAL_PODS).map(|i| node.add_pod(Spec::ip(i))).collect();
    let api = FakeApi::start(&node.node);
    for k in 0..spec.namespaces() {
        api.apply_quietly(Res::Namespaces, Spec::namespace(k));
    }
    for i in 0..spec.pods {
        api.apply_quietly(Res::Pods, spec.pod(i, None));
    }
    for j in 0..spec.policies {
        api.apply_quietly(Res::NetworkPolicies, spec.policy(j));
    }
    api.apply_quietly(Res::ConfigMaps, config(false));
    progress(&format!(
        "kube: {} pods x {} policies served; starting the agent",
        spec.pods, spec.policies
    ));

    let spawned = Instant::now();
    let mut agent = KubeAgent::spawn(&node, &api, &[]);
    agent.wait_ready(Duration::from_secs(300));
    let ready = Instant::now();
    let cold_start_s = (ready - spawned).as_secs_f64();
    let list_to_ready_s = api
        .first_list()
        .map_or(f64::NAN, |t| (ready - t).as_secs_f64());
    progress(&format!(
        "kube: ready in {cold_start_s:.2} s ({list_to_ready_s:.2} s from the first list)"
    ));

    let data = MapData::from_pin(cns_agent::paths::pinned_map(&agent.pin_dir, IPCACHE))?;
    let ipcache: HashMap<MapData, u32, Remote> = HashMap::try_from(Map::HashMap(data))?;
    let lookup = |ip: Ipv4Addr| ipcache.get(&u32::from_ne_bytes(ip.octets()), 0).ok();
    let syncs_before = sync_seconds(&node.node);
    let mut times = Vec::with_capacity(changes);
    for c in 0..changes {
        // A pod created on another node (labels of an existing pod, a new address), then
        // deleted: its IP cache entry appears, then goes.
        let n = spec.pods + c / 2;
        let ip = Spec::ip(n);
        let mut pod = spec.pod(LOCAL_PODS + (c / 2 * 7919) % (spec.pods - LOCAL_PODS), None);
        pod["metadata"]["name"] = json!(format!("new{n}"));
        pod["status"]["podIP"] = json!(ip.to_string());
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let added = c % 2 == 0;
        let sent = Instant::now();
        if added {
            api.apply(Res::Pods, pod);
        } else {
            api.delete(Res::Pods, &namespace, &format!("new{n}"), false);
        }
        let deadline = sent + Duration::from_secs(10);
        while lookup(ip).is_some() != added {
            anyhow::ensure!(
                Instant::now() < deadline,
                "change {c}: CNS_IPCACHE entry of {ip} not {} after 10 s\n{}",
                if added { "added" } else { "removed" },
                agent.log()
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        times.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    let syncs_after = sync_seconds(&node.node);
    let sync_mean_ms =
        (syncs_after.0 - syncs_before.0) / (syncs_after.1 - syncs_before.1).max(1.0) * 1000.0;
    let result = KubeResult {
        pods: spec.pods,
        policies: spec.policies,
        namespaces: spec.namespaces(),
        cold_start_s,
        list_to_ready_s,
        change_p50_ms: percentile(&times, 50.0),
        change_p99_ms: percentile(&times, 99.0),
        change_max_ms: max,
        changes,
        sync_mean_ms,
        peak_rss_mib: agent.memory_kib("VmHWM") as f64 / 1024.0,
        rss_mib: agent.memory_kib("VmRSS") as f64 / 1024.0,
    };
    progress(&result.headline());
    Ok(result)
}

/// (sum, count) of the agent's `cns_sync_duration_seconds{phase="total"}`, scraped in `netns`.
fn sync_seconds(netns: &str) -> (f64, f64) {
    use std::io::{Read, Write};
    let text = crate::traffic::in_netns(netns, || {
        let mut out = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", 9965)) {
            _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
            _ = s.read_to_string(&mut out);
        }
        out
    });
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("phase=\"total\""))
            .find_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (
        value("cns_sync_duration_seconds_sum"),
        value("cns_sync_duration_seconds_count"),
    )
}
