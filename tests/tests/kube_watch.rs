//! Kubernetes mode through the real agent binary and its real kube client, against the fake
//! API server over HTTP (`cns_tests::fakeapi`): enforcement follows watch events (of
//! NetworkPolicies, ClusterNetworkPolicies, Namespaces and Nodes), and the watch survives an
//! API server restart, `410 Gone` on resume, a slow server, a malformed object, and a
//! cluster without the ClusterNetworkPolicy CRD (installed later).

use std::{net::Ipv4Addr, time::Duration};

use cns_tests::{
    PodNet, VirtualNode, eventually,
    fakeapi::{ALL, FakeApi, Res},
    kernel_or_skip,
    kube::{KubeAgent, config, json},
    manifests::{namespace, pod},
    traffic::{tcp_echo_server, tcp_ok},
};
use serde_json::{Value, json};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const WAIT: Duration = Duration::from_secs(20);

struct KubeCluster {
    // Field order is drop order: the agent goes before its node.
    agent: KubeAgent,
    api: FakeApi,
    client: PodNet,
    _server: PodNet,
    _node: VirtualNode,
}

/// Namespaces alpha and beta; alpha/server (app=server, TCP echo on 8080) and beta/client.
fn seed(api: &FakeApi) {
    api.apply_quietly(
        Res::Namespaces,
        json(&namespace("alpha", &[("team", "alpha")])),
    );
    api.apply_quietly(
        Res::Namespaces,
        json(&namespace("beta", &[("team", "beta")])),
    );
    let server = pod(
        "alpha",
        "server",
        &[("app", "server")],
        SERVER,
        &[("http", 8080, "TCP")],
    );
    api.apply_quietly(Res::Pods, json(&server));
    let client = pod("beta", "client", &[("role", "client")], CLIENT, &[]);
    api.apply_quietly(Res::Pods, json(&client));
    api.apply_quietly(Res::ConfigMaps, config(false));
}

impl KubeCluster {
    /// The node, its pods and the fake API server (seeded, plus `before`), without the agent.
    fn prepare(before: impl FnOnce(&FakeApi)) -> (VirtualNode, PodNet, PodNet, FakeApi) {
        let mut node = VirtualNode::new();
        let server = node.add_pod(SERVER);
        let client = node.add_pod(CLIENT);
        tcp_echo_server(&server.netns, 8080);
        let api = FakeApi::start(&node.node);
        seed(&api);
        before(&api);
        (node, server, client, api)
    }

    fn start(before: impl FnOnce(&FakeApi)) -> Self {
        let (node, server, client, api) = Self::prepare(before);
        let agent = KubeAgent::start(&node, &api, &[]);
        Self {
            agent,
            api,
            client,
            _server: server,
            _node: node,
        }
    }

    fn reaches_server(&self) -> bool {
        tcp_ok(&self.client.netns, SERVER, 8080)
    }

    /// Waits until the client's connections to the server are `allowed` (or not).
    fn until_allowed(&self, allowed: bool, what: &str) {
        assert!(
            eventually(WAIT, || self.reaches_server() == allowed),
            "{what}: the server is still {}reachable\n{}",
            if allowed { "not " } else { "" },
            self.agent.log()
        );
    }
}

/// Denies every ingress to the pods of `alpha`.
fn deny_alpha(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "alpha"},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
}

/// Allows ingress to alpha's pods from namespace beta.
fn allow_from_beta() -> Value {
    json!({"metadata": {"name": "allow-beta", "namespace": "alpha"},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "beta"}}}]}]}})
}

#[test]
fn enforcement_follows_watch_events() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|_| {});
    assert!(c.reaches_server(), "no policy yet");
    assert!(c.agent.errors().is_empty(), "{:?}", c.agent.errors());
    c.api.apply(Res::NetworkPolicies, deny_alpha("deny"));
    c.until_allowed(false, "after the deny policy's ADDED event");
    c.api.apply(Res::NetworkPolicies, allow_from_beta());
    c.until_allowed(true, "after the allow policy's ADDED event");
    // A label change of the client's namespace takes it out of the allowed set.
    c.api.apply(
        Res::Namespaces,
        json(&namespace("beta", &[("team", "other")])),
    );
    c.until_allowed(false, "after the namespace's MODIFIED event");
    c.api.delete(Res::NetworkPolicies, "alpha", "deny", false);
    c.api
        .delete(Res::NetworkPolicies, "alpha", "allow-beta", false);
    c.until_allowed(true, "after the DELETED events");
    // Nothing was listed twice: every change came as a watch event.
    for res in ALL {
        assert_eq!(c.api.lists(res), 1, "{res:?}");
    }
}

#[test]
fn api_server_restart_mid_watch_resumes_without_relisting() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|_| {});
    assert!(eventually(WAIT, || ALL
        .iter()
        .all(|&r| c.api.open_watches(r) == 1)));
    // Bookmarks move every watcher to the current revision.
    for res in ALL {
        c.api.bookmark(res);
    }
    let rv = c.api.revision();
    c.api.restart(Duration::from_secs(2));
    // A change made while the server is down: the resumed watch replays it.
    c.api.apply(Res::NetworkPolicies, deny_alpha("deny"));
    c.until_allowed(false, "after the restart");
    for res in ALL {
        assert_eq!(c.api.lists(res), 1, "{res:?} re-listed after a restart");
        let versions = c.api.watch_versions(res);
        assert!(versions.len() >= 2, "{res:?}: {versions:?}");
        assert_eq!(
            versions.last(),
            Some(&rv.to_string()),
            "{res:?}: {versions:?}"
        );
    }
    assert!(c.agent.ready());
}

#[test]
fn gone_on_resume_relists_and_forgets_what_was_deleted_meanwhile() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c =
        KubeCluster::start(|api| _ = api.apply_quietly(Res::NetworkPolicies, deny_alpha("deny")));
    assert!(!c.reaches_server(), "the listed deny policy is enforced");
    assert!(eventually(WAIT, || c
        .api
        .open_watches(Res::NetworkPolicies)
        == 1));
    // Deleted while the watcher was away, and the server compacted past its version.
    c.api.delete(Res::NetworkPolicies, "alpha", "deny", true);
    c.api.gone_next(Res::NetworkPolicies, 1);
    c.api.drop_watches(Res::NetworkPolicies);
    c.until_allowed(true, "after the re-list");
    assert_eq!(c.api.lists(Res::NetworkPolicies), 2);
    assert_eq!(c.api.lists(Res::Pods), 1);
    assert!(c.agent.ready());
    // `status` says so: each watch synced, the policies' listed twice.
    let status = c.agent.status();
    let watches = status["watches"].as_array().expect("watches in status");
    let lists = |res: &str| {
        let w = watches.iter().find(|w| w["resource"] == res);
        w.unwrap_or_else(|| panic!("no {res} watch: {watches:?}"))["lists"].as_u64()
    };
    assert_eq!(lists("networkpolicies"), Some(2), "{watches:?}");
    assert_eq!(lists("pods"), Some(1), "{watches:?}");
    assert!(watches.iter().all(|w| w["synced"] == true), "{watches:?}");
    // The new watch delivers.
    c.api.apply(Res::NetworkPolicies, deny_alpha("deny-again"));
    c.until_allowed(false, "after an event on the new watch");
}

#[test]
fn a_slow_server_delays_readiness_but_nothing_half_synced_is_enforced() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let (node, server, client, api) = KubeCluster::prepare(|api| {
        api.apply_quietly(Res::NetworkPolicies, deny_alpha("deny"));
        api.set_delay(Duration::from_secs(3));
    });
    let mut agent = KubeAgent::spawn(&node, &api, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!agent.ready(), "ready before any list came back");
    agent.wait_ready(Duration::from_secs(60));
    let c = KubeCluster {
        agent,
        api,
        client,
        _server: server,
        _node: node,
    };
    assert!(!c.reaches_server(), "the deny policy is enforced");
    // Events still flow on the (slowly opened) watches.
    c.api.delete(Res::NetworkPolicies, "alpha", "deny", false);
    c.until_allowed(true, "after the DELETED event");
}

#[test]
fn a_malformed_object_is_reported_and_the_rest_enforced() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|api| {
        // A port number that is a string: the pod cannot be decoded.
        let mut bad = json(&pod(
            "beta",
            "bad",
            &[("role", "bad")],
            Ipv4Addr::new(10, 0, 2, 99),
            &[("http", 80, "TCP")],
        ));
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        api.apply_quietly(Res::Pods, bad);
        api.apply_quietly(Res::NetworkPolicies, deny_alpha("deny"));
    });
    assert!(!c.reaches_server(), "the policy listed with it is enforced");
    let errors = c.agent.errors();
    assert!(
        errors.iter().any(|e| e.contains("Pod beta/bad")
            && e.contains("spec.containers[0].ports[0].containerPort")),
        "{errors:?}"
    );
    // The other objects still follow their events; the bad one, fixed, clears its error.
    c.api.apply(Res::NetworkPolicies, allow_from_beta());
    c.until_allowed(true, "after the allow policy");
    c.api.apply(
        Res::Pods,
        json(&pod(
            "beta",
            "bad",
            &[("role", "bad")],
            Ipv4Addr::new(10, 0, 2, 99),
            &[],
        )),
    );
    assert!(
        eventually(WAIT, || c.agent.errors().is_empty()),
        "{:?}",
        c.agent.errors()
    );
}

/// An Admin-tier ClusterNetworkPolicy denying ingress to alpha's pods from beta's.
fn admin_deny_beta_to_alpha(name: &str) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"tier": "Admin", "priority": 10,
                    "subject": {"namespaces": {"matchLabels": {"team": "alpha"}}},
                    "ingress": [{"name": "no-beta", "action": "Deny",
                                 "from": [{"namespaces": {"matchLabels": {"team": "beta"}}}]}]}})
}

/// Denies egress from beta's pods to the addresses of the nodes labelled `role: gateway`.
fn admin_deny_beta_to_gateways() -> Value {
    json!({"metadata": {"name": "no-gateways"},
           "spec": {"tier": "Admin", "priority": 20,
                    "subject": {"namespaces": {"matchLabels": {"team": "beta"}}},
                    "egress": [{"action": "Deny",
                                "to": [{"nodes": {"matchLabels": {"role": "gateway"}}}]}]}})
}

/// A Node of the fake cluster. It claims the server pod's address (the test has no second
/// host to reach; a `nodes` peer matches node addresses as `networks` do, pods' included).
fn gateway_node(role: &str) -> Value {
    json!({"metadata": {"name": "gateway-1", "labels": {"role": role}},
           "status": {"addresses": [{"type": "InternalIP", "address": SERVER.to_string()},
                                    {"type": "Hostname", "address": "gateway-1"}]}})
}

/// `status -o json`'s entry for watch `resource`.
fn watch_status(agent: &KubeAgent, resource: &str) -> Value {
    let status = agent.status();
    let watches = status["watches"].as_array().expect("watches in status");
    watches
        .iter()
        .find(|w| w["resource"] == resource)
        .unwrap_or_else(|| panic!("no {resource} watch: {watches:?}"))
        .clone()
}

#[test]
fn cluster_network_policies_and_nodes_follow_watch_events() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|_| {});
    assert!(c.reaches_server(), "no policy yet");
    c.api.apply(
        Res::ClusterNetworkPolicies,
        admin_deny_beta_to_alpha("admin-deny"),
    );
    c.until_allowed(false, "after the ClusterNetworkPolicy's ADDED event");
    // The Admin tier comes before NetworkPolicies: an allowing one changes nothing.
    c.api.apply(Res::NetworkPolicies, allow_from_beta());
    std::thread::sleep(Duration::from_secs(1));
    c.agent.cli(&["sync"]).expect("sync");
    assert!(
        !c.reaches_server(),
        "allowed by a NetworkPolicy under an Admin deny"
    );
    c.api
        .delete(Res::ClusterNetworkPolicies, "", "admin-deny", false);
    c.until_allowed(true, "after the ClusterNetworkPolicy's DELETED event");

    // A nodes peer follows the Node objects: added, relabelled, deleted.
    c.api
        .apply(Res::ClusterNetworkPolicies, admin_deny_beta_to_gateways());
    c.api.apply(Res::Nodes, gateway_node("gateway"));
    c.until_allowed(false, "after the gateway Node's ADDED event");
    c.api.apply(Res::Nodes, gateway_node("worker"));
    c.until_allowed(true, "after the Node's relabelling (MODIFIED)");
    c.api.apply(Res::Nodes, gateway_node("gateway"));
    c.until_allowed(false, "after the Node's relabelling back");
    c.api.delete(Res::Nodes, "", "gateway-1", false);
    c.until_allowed(true, "after the Node's DELETED event");
    assert!(c.agent.errors().is_empty(), "{:?}", c.agent.errors());
    for res in ALL {
        assert_eq!(c.api.lists(res), 1, "{res:?}");
    }
    let w = watch_status(&c.agent, "clusternetworkpolicies");
    assert!(w["synced"] == true && w["absent"] == false, "{w}");
}

#[test]
fn a_malformed_cluster_network_policy_is_reported_and_the_rest_enforced() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|api| {
        // A string where the priority number goes (does not decode), and a priority out of
        // range (does not validate); the API server's schema would refuse both.
        let mut malformed = admin_deny_beta_to_alpha("malformed");
        malformed["spec"]["priority"] = json!("high");
        api.apply_quietly(Res::ClusterNetworkPolicies, malformed);
        let mut invalid = admin_deny_beta_to_alpha("invalid");
        invalid["spec"]["priority"] = json!(5000);
        api.apply_quietly(Res::ClusterNetworkPolicies, invalid);
        api.apply_quietly(
            Res::ClusterNetworkPolicies,
            admin_deny_beta_to_alpha("good"),
        );
    });
    assert!(
        !c.reaches_server(),
        "the good policy listed with them is enforced"
    );
    let errors = c.agent.errors();
    for name in ["malformed", "invalid"] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("ClusterNetworkPolicy {name}"))
                    && e.contains("spec.priority")),
            "{name}: {errors:?}"
        );
    }
    // The others follow their events; the bad ones, fixed, clear their errors (and deny).
    c.api.delete(Res::ClusterNetworkPolicies, "", "good", false);
    c.until_allowed(true, "after the good policy's deletion");
    for name in ["malformed", "invalid"] {
        c.api
            .apply(Res::ClusterNetworkPolicies, admin_deny_beta_to_alpha(name));
    }
    c.until_allowed(false, "after the fixed policies");
    assert!(
        eventually(WAIT, || c.agent.errors().is_empty()),
        "{:?}",
        c.agent.errors()
    );
}

#[test]
fn without_the_crd_the_agent_is_ready_and_enforces_cluster_policies_once_installed() {
    if !kernel_or_skip("kube_watch") {
        return;
    }
    let c = KubeCluster::start(|api| {
        api.remove_crd(Res::ClusterNetworkPolicies);
        api.apply_quietly(Res::NetworkPolicies, deny_alpha("deny"));
    });
    // Ready, with the NetworkPolicies enforced and no error: the CRD is absent.
    assert!(!c.reaches_server(), "the NetworkPolicy is enforced");
    assert!(c.agent.errors().is_empty(), "{:?}", c.agent.errors());
    let w = watch_status(&c.agent, "clusternetworkpolicies");
    assert!(
        w["synced"] == true && w["absent"] == true && w["errors"] == 0,
        "{w}"
    );
    let text = c.agent.cli(&["status"]).expect("status");
    assert!(
        text.lines()
            .any(|l| l.contains("watch clusternetworkpolicies") && l.contains("absent")),
        "{text}"
    );
    assert!(c.api.not_found(Res::ClusterNetworkPolicies) >= 1);
    c.api.delete(Res::NetworkPolicies, "alpha", "deny", false);
    c.until_allowed(true, "after the NetworkPolicy's deletion");

    // The CRD is installed and a policy created: the agent finds it (its checks back off,
    // so this can take a few tens of seconds) and enforces it.
    c.api.install_crd(Res::ClusterNetworkPolicies);
    c.api.apply(
        Res::ClusterNetworkPolicies,
        admin_deny_beta_to_alpha("admin-deny"),
    );
    assert!(
        eventually(Duration::from_secs(90), || !c.reaches_server()),
        "the ClusterNetworkPolicy is not enforced after the CRD appeared\n{}",
        c.agent.log()
    );
    let w = watch_status(&c.agent, "clusternetworkpolicies");
    assert!(w["absent"] == false && w["lists"] == 1, "{w}");
    // Watched: the next change comes as an event.
    assert!(eventually(WAIT, || c
        .api
        .open_watches(Res::ClusterNetworkPolicies)
        == 1));
    c.api
        .delete(Res::ClusterNetworkPolicies, "", "admin-deny", false);
    c.until_allowed(true, "after the ClusterNetworkPolicy's DELETED event");

    // The CRD is deleted again (its objects with it): absent again, nothing left of them.
    c.api.apply(
        Res::ClusterNetworkPolicies,
        admin_deny_beta_to_alpha("admin-deny"),
    );
    c.until_allowed(false, "after the second ClusterNetworkPolicy");
    c.api.remove_crd(Res::ClusterNetworkPolicies);
    c.until_allowed(true, "after the CRD's deletion");
    assert!(
        eventually(
            WAIT,
            || watch_status(&c.agent, "clusternetworkpolicies")["absent"] == true
        ),
        "{}",
        watch_status(&c.agent, "clusternetworkpolicies")
    );
    assert!(c.agent.ready());
}
