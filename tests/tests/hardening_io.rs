//! The agent against its surroundings (issue 18): it does not wake itself up, event output
//! nobody reads cannot stall it, idle or hostile clients cannot exhaust it.

use std::time::Duration;

use cns_tests::{
    VirtualNode,
    cluster::cluster_yaml,
    custom_agent::{CustomAgent, Options},
    eventually, kernel_or_skip,
};

const DENY_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: alpha}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// Syncs so far (the count of the total-phase sync histogram).
fn syncs(agent: &CustomAgent) -> f64 {
    agent
        .metric("cns_sync_duration_seconds_count", &[("phase", "total")])
        .unwrap_or(0.0)
}

/// Finding 6: the manifest watcher reacted to the agent's own reads (open/close-nowrite),
/// so each sync triggered the next (about 7 per second with nothing changing).
#[test]
fn an_idle_agent_syncs_at_most_once_per_resync_interval() {
    if !kernel_or_skip("idle_agent") {
        return;
    }
    let node = VirtualNode::new();
    let cluster = cluster_yaml("client");
    let agent = CustomAgent::start(
        &node.node,
        Options {
            // An invalid file too: its error comes back at every sync.
            manifests: &[("cluster.yaml", &cluster), ("broken.yaml", "kind: [\n")],
            args: &["--resync-interval", "30"],
            ..Options::default()
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = syncs(&agent);
    std::thread::sleep(Duration::from_secs(5));
    let after = syncs(&agent);
    assert!(
        after - before <= 1.0,
        "{} syncs in 5 s with nothing changing (resync interval 30 s):\n{}",
        after - before,
        agent.log()
    );
    // Changes are still seen: a new policy is picked up without a `sync`.
    agent.write("deny.yaml", DENY_INGRESS);
    assert!(
        eventually(Duration::from_secs(10), || agent
            .metric("cns_policies", &[])
            .is_some_and(|n| n == 1.0)),
        "the new policy file was not picked up by the watcher:\n{}",
        agent.log()
    );
}
