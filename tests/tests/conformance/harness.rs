//! One virtual node per address family (IPv4-only, IPv6-only, dual-stack) with the nine
//! model pods and one blocking-mode agent, each shared by every case of the file (upstream
//! builds the model once per test; building it here costs ~2 s and the agent's start more,
//! so the cases take turns on one). Every case runs on the three nodes at once; each starts
//! from the model's initial state (no policies, initial labels), whatever the previous case
//! left. On the dual-stack node every validation probes over both families, and both must
//! match the expectation.
//!
//! The shared nodes live in statics, which Rust never drops: an `atexit` handler drops them
//! when the test binary exits (also after failed tests), so the agents are stopped and the
//! namespaces removed.

use std::{
    collections::BTreeSet,
    sync::{Mutex, Once, PoisonError},
    time::Instant,
};

use cns_agent::{
    policy::{Flow, evaluate, model::NodeContext},
    source::{self, LastGood},
};
use cns_tests::{
    AgentProcess, Family, PodNet, VirtualNode,
    agent::NODE_NAME,
    kernel_or_skip,
    netns::{NODE_UPLINK_IP, NODE_UPLINK_IP6, v6_of},
    traffic::{tcp_echo_server, udp_echo_server},
};

use super::{
    model::{
        ClusterState, N, PORTS, Proto, Reachability, Table, comparison, differences, index, ip,
        pod_string, pretty,
    },
    probe::probe_matrix,
};

const CLUSTER_FILE: &str = "cluster.yaml";
/// Every policy file is `np-<namespace>-<name>.yaml`.
const POLICY_PREFIX: &str = "np-";

struct Shared {
    // Field order is drop order: the agent goes before its node.
    agent: AgentProcess,
    pods: Vec<PodNet>,
    state: ClusterState,
    family: Family,
    node: VirtualNode,
}

/// The shared node of each family, in `Family::ALL`'s order.
static SHARED: [Mutex<Option<Shared>>; 3] = [const { Mutex::new(None) }; 3];
static AT_EXIT: Once = Once::new();

extern "C" fn drop_shared() {
    for shared in &SHARED {
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        drop(shared.take());
    }
}

impl Shared {
    fn start(family: Family) -> Self {
        let started = Instant::now();
        let mut node = VirtualNode::with_family(family);
        let pods: Vec<PodNet> = (0..N).map(|i| node.add_pod(ip(i))).collect();
        for p in &pods {
            for port in PORTS {
                tcp_echo_server(&p.netns, port);
                udp_echo_server(&p.netns, port);
            }
        }
        let state = ClusterState::default();
        let agent = AgentProcess::start(&node, false, &[(CLUSTER_FILE, &state.yaml(family))]);
        eprintln!(
            "conformance ({}): 9 pods and the agent (blocking mode) ready in {:?}",
            family.name(),
            started.elapsed()
        );
        Self {
            agent,
            pods,
            state,
            family,
            node,
        }
    }

    /// Whether the node is still whole: every netns there and the agent running. (Something
    /// outside the test may remove them: `.ci/run` deletes every `cns*` netns it finds.)
    fn healthy(&mut self) -> Result<(), String> {
        let netns = std::iter::once(&self.node.node).chain(self.pods.iter().map(|p| &p.netns));
        for ns in netns {
            if !std::path::Path::new("/run/netns").join(ns).exists() {
                return Err(format!("netns {ns} is gone"));
            }
        }
        if self.agent.exited() {
            return Err(format!("the agent exited:\n{}", self.agent.log()));
        }
        Ok(())
    }

    fn remove_policies(&mut self) {
        for entry in std::fs::read_dir(&self.agent.manifests).expect("read manifests dir") {
            let name = entry.expect("dir entry").file_name();
            let name = name.to_string_lossy();
            if name.starts_with(POLICY_PREFIX) {
                self.agent.remove(&name);
            }
        }
    }

    fn sync(&self) {
        if let Err(e) = self.agent.sync() {
            panic!("sync failed: {e}\n{}", self.agent.log());
        }
    }

    /// Back to the model's initial state: no policy, initial labels.
    fn reset(&mut self) {
        self.remove_policies();
        if self.state != ClusterState::default() {
            self.state = ClusterState::default();
            self.agent
                .write(CLUSTER_FILE, &self.state.yaml(self.family));
        }
        self.sync();
    }
}

/// Runs one upstream case on the shared node of every family, at once (skipped without
/// root/BPF, see `kernel_or_skip`); a failure in any family fails the case.
/// `name` is a fallback: libtest names each test's thread after the test.
pub fn run(name: &str, body: impl Fn(&mut Case<'_>) + Sync) {
    let thread = std::thread::current();
    let name = thread.name().filter(|n| *n != "main").unwrap_or(name);
    if !kernel_or_skip(name) {
        return;
    }
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" function without arguments.
        let rc = unsafe { nix::libc::atexit(drop_shared) };
        assert_eq!(rc, 0, "atexit");
    });
    let body = &body;
    let failed: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = Family::ALL
            .iter()
            .zip(&SHARED)
            .map(|(&family, shared)| {
                let label = format!("{name} [{}]", family.name());
                (
                    label.clone(),
                    s.spawn(move || run_in(&label, family, shared, body)),
                )
            })
            .collect();
        runs.into_iter()
            .filter_map(|(label, h)| h.join().err().map(|e| panic_text(&label, e.as_ref())))
            .collect()
    });
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn panic_text(label: &str, e: &(dyn std::any::Any + Send)) -> String {
    let msg = e
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| e.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    format!("{label} failed: {msg}")
}

/// [`run`] on one family's node.
fn run_in(
    name: &str,
    family: Family,
    shared: &Mutex<Option<Shared>>,
    body: &dyn Fn(&mut Case<'_>),
) {
    let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(Err(e)) = guard.as_mut().map(Shared::healthy) {
        eprintln!("conformance: the shared node is broken ({e}); building a new one");
        drop(guard.take());
    }
    if guard.is_none() {
        *guard = Some(Shared::start(family));
    }
    let shared = guard.as_mut().expect("started");
    shared.reset();
    let started = Instant::now();
    let mut case = Case {
        shared,
        name,
        validations: 0,
    };
    body(&mut case);
    eprintln!(
        "{name}: {} validations passed in {:?}",
        case.validations,
        started.elapsed()
    );
}

/// One case's handle on the cluster: upstream's `CreatePolicy`, `UpdatePolicy`,
/// `cleanNetworkPolicies`, `AddNamespaceLabel`, `AddPodLabels` and `ValidateOrFail`.
pub struct Case<'a> {
    shared: &'a mut Shared,
    name: &'a str,
    validations: usize,
}

impl Case<'_> {
    /// The family of this case's node.
    pub fn family(&self) -> Family {
        self.shared.family
    }

    /// `pod`'s addresses, each as `ADDR/BITS` with `v4_bits` for IPv4, `v6_bits` for IPv6
    /// (`/4` in both is upstream's "large CIDR around the pod"; hosts are /32 and /128).
    pub fn cidrs(&self, pod: &str, v4_bits: u8, v6_bits: u8) -> Vec<String> {
        let v4 = ip(index(pod));
        let family = self.family();
        let mut out = Vec::new();
        if family.has_v4() {
            out.push(format!("{v4}/{v4_bits}"));
        }
        if family.has_v6() {
            out.push(format!("{}/{v6_bits}", v6_of(v4)));
        }
        out
    }

    /// Creates (or, with the same namespace and name, replaces) a NetworkPolicy and waits
    /// until the agent has it in the maps.
    pub fn create_policy(&mut self, yaml: &str) {
        let doc: serde_json::Value =
            serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad policy YAML: {e}"));
        let meta = &doc["metadata"];
        let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
            panic!("policy without metadata.namespace and metadata.name:\n{yaml}");
        };
        self.shared
            .agent
            .apply(&format!("{POLICY_PREFIX}{ns}-{name}.yaml"), yaml);
    }

    /// `UpdatePolicy`: the same object, changed.
    pub fn update_policy(&mut self, yaml: &str) {
        self.create_policy(yaml);
    }

    /// `k8s.cleanNetworkPolicies`: deletes every policy.
    pub fn clean_policies(&mut self) {
        self.shared.remove_policies();
        self.shared.sync();
    }

    pub fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) {
        let mut state = self.shared.state.clone();
        state.add_namespace_label(ns, key, value);
        self.set_state(state);
    }

    pub fn add_pod_labels(&mut self, pod: &str, labels: &[(&str, &str)]) {
        let mut state = self.shared.state.clone();
        state.add_pod_labels(pod, labels);
        self.set_state(state);
    }

    fn set_state(&mut self, state: ClusterState) {
        if state != self.shared.state {
            self.shared
                .agent
                .apply(CLUSTER_FILE, &state.yaml(self.shared.family));
            self.shared.state = state;
        }
    }

    /// The reference evaluator's table for the manifests the agent has now, over IPv6 (`v6`)
    /// or IPv4.
    fn evaluated(&self, proto: Proto, port: u16, v6: bool) -> Table {
        let files = source::read_dir(&self.shared.agent.manifests).expect("read manifests");
        let (snapshot, errors) = source::load(&files, &mut LastGood::default());
        assert!(errors.is_empty(), "manifests rejected: {errors:?}");
        let node = NodeContext {
            node_name: NODE_NAME.into(),
            node_ips: BTreeSet::from([NODE_UPLINK_IP.into(), NODE_UPLINK_IP6.into()]),
        };
        let mut table = [[true; N]; N];
        for (f, row) in table.iter_mut().enumerate() {
            for (t, cell) in row.iter_mut().enumerate() {
                let pods = &self.shared.pods;
                let flow = Flow {
                    src: pods[f].addr(v6),
                    dst: pods[t].addr(v6),
                    proto: proto.number(),
                    dport: port,
                };
                *cell = f == t || evaluate(&snapshot, &node, &flow).allowed();
            }
        }
        table
    }

    /// `ValidateOrFail(k8s, &TestCase{ToPort: port, Protocol: proto, Reachability: r})`:
    /// probes the matrix (a second time if the first is wrong, as upstream does) and fails
    /// with the truth tables if the kernel or the reference evaluator disagrees with the
    /// expectation. Loopback is ignored, as upstream does.
    /// On a dual-stack node, once per family.
    pub fn validate_or_fail(&mut self, port: u16, proto: Proto, reachability: &Reachability) {
        self.validations += 1;
        let family = self.family();
        for v6 in [false, true] {
            if (v6 && family.has_v6()) || (!v6 && family.has_v4()) {
                self.validate_family(port, proto, reachability, v6);
            }
        }
    }

    fn validate_family(&mut self, port: u16, proto: Proto, reachability: &Reachability, v6: bool) {
        let step = self.validations;
        let over = if v6 { "IPv6" } else { "IPv4" };
        let expected = &reachability.expected;
        let evaluated = self.evaluated(proto, port, v6);
        if let Err(e) = self.shared.healthy() {
            panic!("{}: cannot probe: {e}", self.name);
        }
        let started = Instant::now();
        let mut observed = probe_matrix(&self.shared.pods, proto, port, v6);
        let mut wrong = differences(expected, &observed);
        let mut tries = 1;
        if !wrong.is_empty() {
            eprintln!(
                "{}: validation {step} ({proto:?} {port} over {over}): {} wrong on the first try, probing again",
                self.name,
                wrong.len()
            );
            observed = probe_matrix(&self.shared.pods, proto, port, v6);
            wrong = differences(expected, &observed);
            tries = 2;
        }
        let eval_wrong = differences(expected, &evaluated);
        eprintln!(
            "{}: validation {step} ({proto:?} {port} over {over}) probed {tries}x in {:?}: {} wrong, evaluator {} wrong",
            self.name,
            started.elapsed(),
            wrong.len(),
            eval_wrong.len()
        );
        if wrong.is_empty() && eval_wrong.is_empty() {
            return;
        }
        let describe = |cells: &[(usize, usize)], what: &str| -> String {
            cells
                .iter()
                .map(|&(f, t)| {
                    format!(
                        "  {} -> {}: expected {}, {what} {}\n",
                        pod_string(f),
                        pod_string(t),
                        verdict(expected[f][t]),
                        verdict(!expected[f][t]),
                    )
                })
                .collect()
        };
        let log = self.shared.agent.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{name}: validation {step}, {proto:?} port {port} over {over}: the datapath got {} pair(s) wrong, \
             the reference evaluator {}\n{}{}\nexpected:\n{}\nobserved:\n{}\ncomparison (X: observed differs):\n{}\n\
             evaluator comparison (X: evaluator differs):\n{}\n--- last agent log lines ---\n{}",
            wrong.len(),
            eval_wrong.len(),
            describe(&wrong, "observed"),
            describe(&eval_wrong, "evaluator says"),
            pretty(expected),
            pretty(&observed),
            comparison(expected, &observed),
            comparison(expected, &evaluated),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            name = self.name,
        );
    }
}

fn verdict(connected: bool) -> &'static str {
    if connected { "connected" } else { "blocked" }
}
