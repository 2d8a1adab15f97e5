//! One virtual node per address family (IPv4-only, IPv6-only, dual-stack) with upstream's
//! pods and one blocking-mode agent, shared by every test of the file (as the
//! NetworkPolicy suite's harness does). A test runs on the three nodes at once; on each,
//! every subtest starts from its upstream starting state ([`Test::start_of`]), written as
//! the agent's manifests directory and synced, whatever the subtest before left. Probes
//! of one step (the `PokeServer`s between two edits) run at once; on the dual-stack node
//! over both families, and both must be as upstream expects.
//!
//! The shared nodes live in statics, which Rust never drops: an `atexit` handler drops them
//! when the test binary exits (also after failed tests), so the agents are stopped and the
//! namespaces removed.
//!
//! Environment, to run less while working on one case: `CNP_FAMILIES` (comma-separated
//! `ipv4`, `ipv6`, `dual`; default all three) and `CNP_SUBTEST` (run only the subtests
//! whose name contains it).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{LazyLock, Mutex, Once, PoisonError},
    time::{Duration, Instant},
};

use cns_tests::{
    AgentProcess, Family, VirtualNode, kernel_or_skip,
    traffic::{tcp_echo_server, udp_echo_server},
};

use super::{
    evaluator::Reference,
    model::{ClusterState, Fixture, Node},
    probe::{Outcome, Target, probe_all},
    suite::{Poke, Proto, Step, Test},
};

/// A probe's first try; a probe that is not as expected gets a second try of
/// [`RETRY_TIMEOUT`] (upstream polls each `PokeServer` for up to 10 s with 3 s tries).
/// Connections between the namespaces of one machine take well under a millisecond, so a
/// first try this short only costs a dropped probe half a second.
const FIRST_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_TIMEOUT: Duration = Duration::from_secs(2);

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::upstream);

/// Where a pod runs on one node: its netns and addresses (IPv4 first).
struct Endpoint {
    netns: String,
    addrs: Vec<IpAddr>,
}

struct Shared {
    // Field order is drop order: the agent goes before its node.
    agent: AgentProcess,
    endpoints: BTreeMap<String, Endpoint>,
    /// What the manifests directory holds: file name, text.
    written: BTreeMap<String, String>,
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
        let fixture = &*FIXTURE;
        let mut node = VirtualNode::with_family(family);
        let mut endpoints = BTreeMap::new();
        for pod in &fixture.pods {
            let netns = match (pod.ip, pod.node) {
                (Some(ip), _) => node.add_pod(ip).netns,
                (None, Node::One) => node.node.clone(),
                (None, Node::Two) => node.outside.clone(),
            };
            for &(proto, port) in &pod.servers {
                match proto {
                    Proto::Tcp => tcp_echo_server(&netns, port),
                    Proto::Udp => udp_echo_server(&netns, port),
                    Proto::Sctp => {} // a raw receiver per probe batch
                }
            }
            endpoints.insert(
                pod.key(),
                Endpoint {
                    netns,
                    addrs: pod.addrs(family),
                },
            );
        }
        let written = ClusterState::new(fixture, &[]).files(fixture, family);
        let first: Vec<(&str, &str)> = written
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let agent = AgentProcess::start(&node, false, &first);
        eprintln!(
            "cnp conformance ({}): {} pods, 2 nodes and the agent (blocking mode) ready in {:?}",
            family.name(),
            fixture.pods.len(),
            started.elapsed()
        );
        Self {
            agent,
            endpoints,
            written,
            family,
            node,
        }
    }

    /// Whether the node is still whole: every netns there and the agent running.
    fn healthy(&mut self) -> Result<(), String> {
        let nodes = [&self.node.node, &self.node.outside];
        for ns in nodes
            .into_iter()
            .chain(self.endpoints.values().map(|e| &e.netns))
        {
            if !std::path::Path::new("/run/netns").join(ns).exists() {
                return Err(format!("netns {ns} is gone"));
            }
        }
        if self.agent.exited() {
            return Err(format!("the agent exited:\n{}", self.agent.log()));
        }
        Ok(())
    }

    /// Makes the manifests directory hold `state` (writing only what changed) and syncs.
    fn apply(&mut self, state: &ClusterState) {
        let files = state.files(&FIXTURE, self.family);
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.agent.remove(&name);
            self.written.remove(&name);
        }
        for (name, text) in files {
            if self.written.get(&name) != Some(&text) {
                self.agent.write(&name, &text);
                self.written.insert(name, text);
            }
        }
        self.sync();
    }

    /// Syncs; any error the agent reports (a manifest it refuses) fails the test.
    fn sync(&self) {
        if let Err(e) = self.agent.sync() {
            panic!(
                "the agent refused the manifests:\n{e}\n--- agent log tail ---\n{}",
                log_tail(&self.agent, 30)
            );
        }
    }
}

fn log_tail(agent: &AgentProcess, n: usize) -> String {
    let log = agent.log();
    let tail: Vec<&str> = log.lines().rev().take(n).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn families() -> Vec<Family> {
    match std::env::var("CNP_FAMILIES") {
        Ok(v) if !v.trim().is_empty() => Family::ALL
            .into_iter()
            .filter(|f| v.split(',').any(|x| x.trim() == f.name()))
            .collect(),
        _ => Family::ALL.to_vec(),
    }
}

/// Runs every subtest of `test` on the shared node of every family, at once (skipped
/// without root/BPF, see `kernel_or_skip`); fails with every wrong probe of every subtest.
pub fn run(test: &Test) {
    let thread = std::thread::current();
    let name = thread
        .name()
        .filter(|n| *n != "main")
        .unwrap_or(test.short_name);
    if !kernel_or_skip(name) {
        return;
    }
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" function without arguments.
        let rc = unsafe { nix::libc::atexit(drop_shared) };
        assert_eq!(rc, 0, "atexit");
    });
    let wanted = families();
    let failed: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = Family::ALL
            .iter()
            .zip(&SHARED)
            .filter(|(f, _)| wanted.contains(f))
            .map(|(&family, shared)| {
                let label = format!("{} [{}]", test.short_name, family.name());
                (label.clone(), s.spawn(move || run_in(test, family, shared)))
            })
            .collect();
        runs.into_iter()
            .filter_map(|(label, h)| match h.join() {
                Ok(None) => None,
                Ok(Some(report)) => Some(report),
                Err(e) => Some(format!("{label} panicked: {}", panic_text(e.as_ref()))),
            })
            .collect()
    });
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| e.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
        .to_owned()
}

/// One wrong probe.
struct Wrong {
    what: String,
}

/// [`run`] on one family's node; the report of what went wrong, if anything did.
fn run_in(test: &Test, family: Family, shared: &Mutex<Option<Shared>>) -> Option<String> {
    let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(Err(e)) = guard.as_mut().map(Shared::healthy) {
        eprintln!("cnp conformance: the shared node is broken ({e}); building a new one");
        drop(guard.take());
    }
    if guard.is_none() {
        *guard = Some(Shared::start(family));
    }
    let shared = guard.as_mut().expect("started");
    let only = std::env::var("CNP_SUBTEST").ok().filter(|s| !s.is_empty());
    let mut report = String::new();
    for (i, sub) in test.subtests.iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !sub.name.contains(o.as_str()))
        {
            continue;
        }
        let started = Instant::now();
        let label = format!("{} [{}] {:?}", test.short_name, family.name(), sub.name);
        let mut state = ClusterState::new(&FIXTURE, test.manifests);
        for edit in test.start_of(i) {
            state.apply(edit, &FIXTURE, family);
        }
        shared.apply(&state);
        let mut wrong = Vec::new();
        let mut batch: Vec<&Poke> = Vec::new();
        let mut dirty = false;
        let mut probes = 0;
        for step in sub.steps {
            match step {
                Step::Edit(edit) => {
                    if !batch.is_empty() {
                        probes += batch.len();
                        wrong.extend(validate(shared, &batch));
                        batch.clear();
                    }
                    state.apply(edit, &FIXTURE, family);
                    dirty = true;
                }
                Step::Poke(poke) => {
                    if dirty {
                        shared.apply(&state);
                        dirty = false;
                    }
                    batch.push(poke);
                }
            }
        }
        if !batch.is_empty() {
            probes += batch.len();
            wrong.extend(validate(shared, &batch));
        }
        eprintln!(
            "{label}: {probes} probes, {} wrong, in {:?}",
            wrong.len(),
            started.elapsed()
        );
        if !wrong.is_empty() {
            writeln!(report, "{label}: {} probe(s) wrong:", wrong.len()).expect("string");
            for w in &wrong {
                writeln!(report, "  {}", w.what).expect("string");
            }
        }
    }
    if report.is_empty() {
        return None;
    }
    write!(
        report,
        "--- last agent log lines ({}) ---\n{}",
        family.name(),
        log_tail(&shared.agent, 20)
    )
    .expect("string");
    Some(report)
}

/// Probes one step's pokes (over every family of the node) and checks them against
/// upstream's expectation and the reference evaluator's; what was wrong.
fn validate(shared: &Shared, pokes: &[&Poke]) -> Vec<Wrong> {
    let mut targets = Vec::new();
    let mut of = Vec::new();
    for poke in pokes {
        let client = &shared.endpoints[poke.client];
        let server = &shared.endpoints[poke.server];
        for &dst in &server.addrs {
            let src = *client
                .addrs
                .iter()
                .find(|a| a.is_ipv6() == dst.is_ipv6())
                .expect("client and server share the family");
            targets.push(Target {
                client_netns: client.netns.clone(),
                server_netns: server.netns.clone(),
                src,
                dst,
                proto: poke.proto,
                port: poke.port,
            });
            of.push(*poke);
        }
    }
    let mut outcomes = probe_all(&targets, FIRST_TIMEOUT);
    let again: Vec<usize> = (0..targets.len())
        .filter(|&i| !outcomes[i].as_expected(of[i].connect))
        .collect();
    let mut first: BTreeMap<usize, Outcome> = BTreeMap::new();
    if !again.is_empty() {
        let retry: Vec<Target> = again.iter().map(|&i| targets[i].clone()).collect();
        for (&i, outcome) in again.iter().zip(probe_all(&retry, RETRY_TIMEOUT)) {
            first.insert(i, std::mem::replace(&mut outcomes[i], outcome));
        }
    }
    let reference = Reference::load(&shared.agent.manifests, shared.family);
    let mut wrong = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let poke = of[i];
        let expected = if poke.connect {
            "to connect"
        } else {
            "a drop (timeout)"
        };
        let added = if poke.added { " [added probe]" } else { "" };
        let flow = format!(
            "{} -> {} ({}) {} {}{added}",
            poke.client,
            poke.server,
            t.dst,
            poke.proto.name(),
            poke.port
        );
        if !outcomes[i].as_expected(poke.connect) {
            let tries = first
                .get(&i)
                .map(|o| format!("first try {o}, second try "))
                .unwrap_or_default();
            wrong.push(Wrong {
                what: format!("{flow}: expected {expected}, {tries}{}", outcomes[i]),
            });
        }
        if let Some(reference) = &reference {
            let allowed = reference.allows(t.src, t.dst, poke.proto, poke.port);
            if allowed != poke.connect {
                wrong.push(Wrong {
                    what: format!(
                        "{flow}: expected {expected}, the reference evaluator says {}",
                        if allowed { "allowed" } else { "denied" }
                    ),
                });
            }
        }
    }
    wrong
}
