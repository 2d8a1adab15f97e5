//! The agent's own sync (`Agent::sync`, in-process, with its real manifest source and real
//! BPF maps): a single change costs what it touches, never the whole state. This is the
//! regression test of issue 16's defect (every sync re-encoded the whole desired state and
//! diffed the whole IP cache), asserted on the work the agent reports in `sync`, `status`
//! and the metrics.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use cns_agent::{
    agent::{Agent, AgentConfig, SyncReport},
    datapath::Datapath,
    metrics::AgentMetrics,
    policy::AuditMode,
    source::ManifestSource,
    uplink::XdpInterfaces,
};
use cns_common::maps::{IPCACHE, Remote};
use cns_tests::{
    kernel::{NODE, PinDir},
    kernel_or_skip, unique,
};

/// Remote pods, each in a file of its own.
const REMOTE_PODS: u32 = 300;

fn pod_yaml(i: u32, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: r{i}, namespace: shop, labels: {{app: {app}}}}}\n\
         spec: {{nodeName: node-2, containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: {}}}\n",
        remote_ip(i)
    )
}

fn remote_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 20, 0, 0)) + i)
}

const LOCAL: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.21.0.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
";

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a manifest");
}

fn ipcache_identity(pin_dir: &Path, ip: Ipv4Addr) -> Option<u32> {
    let path = cns_agent::paths::pinned_map(pin_dir, IPCACHE);
    let map: aya::maps::HashMap<_, u32, Remote> = aya::maps::HashMap::try_from(
        aya::maps::Map::HashMap(aya::maps::MapData::from_pin(&path).expect("pinned ipcache")),
    )
    .expect("ipcache map");
    map.get(&u32::from_ne_bytes(ip.octets()), 0)
        .ok()
        .map(|r| r.identity)
}

/// The real agent on `manifests`, with fresh maps in `pin_dir`.
fn start(manifests: &Path, pin_dir: &Path, mode: AuditMode, metrics: &AgentMetrics) -> Agent {
    cns_agent::paths::prepare_pin_dir(pin_dir).expect("pin dir");
    let datapath = Datapath::load(pin_dir).expect("load programs");
    let cfg = AgentConfig {
        node_name: NODE.into(),
        audit_mode: mode,
        pin_dir: pin_dir.to_path_buf(),
        resync_interval: Duration::from_secs(5),
        event_rate: 0,
        event_burst: 0,
        policy_verdict_events: false,
        // Never the machine's own interfaces.
        xdp_interfaces: XdpInterfaces::None,
        pins: cns_agent::instance::PinDurability::Durable,
    };
    Agent::new(
        cfg,
        Box::new(ManifestSource::new(manifests.to_owned())),
        datapath,
        metrics.clone(),
    )
    .expect("agent")
}

fn sync(agent: &mut Agent) -> SyncReport {
    let report = agent
        .sync()
        .unwrap_or_else(|e| panic!("sync: {}", cns_agent::error_chain(&e)));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report
}

#[test]
fn a_single_change_encodes_and_diffs_what_it_touches() {
    if !kernel_or_skip("agent sync work") {
        return;
    }
    let dir = Dir(std::env::temp_dir().join(unique("cns-agent-sync-")));
    std::fs::create_dir_all(&dir.0).expect("manifests dir");
    write(&dir.0, "00-local.yaml", LOCAL);
    for i in 0..REMOTE_PODS {
        write(&dir.0, &format!("pod-{i}.yaml"), &pod_yaml(i, "web"));
    }
    let pin_dir = PinDir::new("cns-test-agent-sync-");
    let metrics = AgentMetrics::default();
    let mut agent = start(&dir.0, &pin_dir, AuditMode::Blocking, &metrics);

    // A start: everything, whole.
    let first = sync(&mut agent);
    assert!(first.work.read_whole, "{:?}", first.work);
    assert!(
        first.work.encoded_entries > REMOTE_PODS as usize,
        "{:?}",
        first.work
    );
    assert!(
        first.work.diffed_addresses >= REMOTE_PODS as usize,
        "{:?}",
        first.work
    );
    let before = ipcache_identity(&pin_dir, remote_ip(7)).expect("pod r7 in the IP cache");

    // One remote pod relabelled in its own file.
    write(&dir.0, "pod-7.yaml", &pod_yaml(7, "other"));
    let change = sync(&mut agent);
    assert!(change.changes > 0, "the relabel reaches the maps");
    let after = ipcache_identity(&pin_dir, remote_ip(7)).expect("pod r7 in the IP cache");
    assert_ne!(
        before, after,
        "r7 has a new identity in the kernel's IP cache"
    );
    // The defect: every sync encoded the whole state and diffed the whole IP cache.
    assert!(!change.work.read_whole, "{:?}", change.work);
    assert!(
        change.work.diffed_addresses <= 2,
        "a single relabel compares its address, not the IP cache: {:?}",
        change.work
    );
    assert!(
        change.work.encoded_entries < 20,
        "a single relabel encodes its address and this node's few entries: {:?}",
        change.work
    );

    // Nothing changed: nothing to compare in the IP cache.
    let idle = sync(&mut agent);
    assert_eq!(idle.changes, 0);
    assert_eq!(idle.work.diffed_addresses, 0, "{:?}", idle.work);

    // What status and the metrics say is the last sync's work.
    assert_eq!(agent.status().last_sync_work, Some(idle.work));
    assert_eq!(
        metrics.sync_diffed.get(),
        i64::try_from(idle.work.diffed_addresses).unwrap()
    );
    assert_eq!(
        metrics.sync_encoded.get(),
        i64::try_from(idle.work.encoded_entries).unwrap()
    );
}

/// An audit-mode annotation that cannot be read is reported by `sync` and `status`, and its
/// namespace is enforced in blocking mode even though the agent audits (issue 18, finding
/// 2: `"False"` used to be ignored, leaving the namespace in audit).
#[test]
fn an_unreadable_audit_annotation_is_reported_and_enforced_as_blocking() {
    if !kernel_or_skip("agent audit annotation") {
        return;
    }
    let dir = Dir(std::env::temp_dir().join(unique("cns-agent-annotation-")));
    std::fs::create_dir_all(&dir.0).expect("manifests dir");
    let pods = |annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, annotations: {{cns.io/policy-audit-mode: {annotation}}}}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: api, namespace: shop}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, podIP: 10.21.0.1}}\n"
        )
    };
    write(&dir.0, "m.yaml", &pods("\"False\""));
    let pin_dir = PinDir::new("cns-test-agent-annotation-");
    let mut agent = start(&dir.0, &pin_dir, AuditMode::Audit, &AgentMetrics::default());
    let mode = |agent: &Agent| agent.status().endpoints[0].mode;
    sync(&mut agent);
    assert_eq!(mode(&agent), AuditMode::Blocking, "\"False\" is false");

    write(&dir.0, "m.yaml", &pods("nope"));
    let report = agent.sync().expect("sync");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let e = &report.errors[0];
    assert!(
        e.contains("Namespace shop")
            && e.contains("cns.io/policy-audit-mode")
            && e.contains("\"nope\""),
        "{e}"
    );
    assert_eq!(agent.status().errors, report.errors);
    assert_eq!(mode(&agent), AuditMode::Blocking, "never the weaker mode");

    write(&dir.0, "m.yaml", &pods("\"true\""));
    sync(&mut agent);
    assert_eq!(mode(&agent), AuditMode::Audit);
}
