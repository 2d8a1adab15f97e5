//! The upstream Kubernetes NetworkPolicy e2e suite, ported to the virtual node.
//!
//! Source: kubernetes/kubernetes `test/e2e/network/netpol/network_policy.go` at commit
//! 9db638c0807a720aa050ebcef69c32e4d4cce280, the version with the full model (namespaces x,
//! y, z with pods a, b, c: 81 pairs per matrix); checked against the latest stored version
//! (008b3652959ca58af8be3fb5b6ecfe9ae7638282), which has the same cases and policies but
//! builds each case on a subset of the nine pods. Every policy below is the one the
//! upstream case builds (same names, selectors, ports, policy types), and every expected
//! matrix is built with the upstream case's own `Reachability` calls (`NewReachability`,
//! `Expect`, `ExpectPeer`, `ExpectAllIngress`, `ExpectAllEgress`, see `conformance::model`),
//! never from our evaluator. `ValidateOrFail` probes all 9x9 pairs in parallel (loopback
//! ignored, a second try on a wrong first one, as upstream), prints upstream's truth
//! tables on a mismatch, and also checks that the reference evaluator
//! (`cns_agent::policy::evaluate`) agrees with the expectation.
//!
//! Rust test names are the upstream `It` names in snake case, in one module per upstream
//! `Context`: `between_server_and_client` ("NetworkPolicy between server and client"),
//! `using_udp` ("... using UDP"), `using_sctp` ("... using SCTP").
//!
//! The model here: the nine pods run on the test's node (`spec.nodeName: node-1`) at
//! 10.0.<1+ns>.<10+pod>, each serving TCP and UDP on 80 and 81 with container ports
//! `serve-<port>-<tcp|udp>` (upstream names); namespaces carry `ns: <name>` (upstream) and
//! `kubernetes.io/metadata.name` (added by the agent as by the API server). One node and
//! one blocking-mode agent are shared by all cases; each case starts with no policy and the
//! initial labels.
//!
//! ## Differences from upstream, and what is not ported
//!
//! | upstream | here | why |
//! |---|---|---|
//! | probes go to the pod's Service (`s-<ns>-<pod>.<ns>.svc`, kube-proxy DNAT) | probes go to the pod's IP | no Services, DNS or kube-proxy on the virtual node; policy applies after DNAT, to the same pod address |
//! | "... using SCTP" context: agnhost `porter` SCTP servers, SCTP connect | a real SCTP INIT sent from a raw socket (protocol 132) in the client, counted as connected when a raw socket in the server's netns receives it | this kernel has no SCTP stack (`CONFIG_IP_SCTP` unset), so no SCTP sockets or association; the policy (`protocol: SCTP`) and the packets are real, only the handshake's reply is missing |
//! | pod restarts and relabels through the API | the manifests are edited (`cluster.yaml`) and the agent synced | no API server; labels are what the agent reads |
//! | one cluster of one family per run (IPv4, IPv6 or dual-stack; `hostMask = 128` in the CIDR cases on IPv6) | every case on three nodes at once: IPv4-only, IPv6-only (pods at fd00:10:0:\<1+ns\>::\<10+pod\>) and dual-stack, where each validation probes over both families | one run covers every family; on dual-stack, upstream probes the Service's primary family only, here both must agree |
//! | CIDR cases: one ipBlock of the cluster's family | one ipBlock per family of the node (dual-stack: both, as a dual-stack policy would say) | an IPv4 block says nothing about IPv6 traffic |
//! | Windows model (TCP only, 3 s timeouts) | Linux | n/a |
//! | `network_policy_api.go`: "should support creating NetworkPolicy API operations", "... API with endport field", "... with Status subresource" | not ported | they test the API server's CRUD, watch and validation, not enforcement; there is no API server |
//! | `network_legacy.go` (the pre-model suite: client pods against Services, removed upstream) | not ported | superseded upstream by `network_policy.go`; it needs Services |
//!
//! ## Cases
//!
//! Every case of `network_policy.go` is ported and runs; none is ignored.
//!
//! | upstream context / case | Rust test | probes |
//! |---|---|---|
//! | server and client / should support a 'default-deny-ingress' policy | `should_support_a_default_deny_ingress_policy` | TCP 80 |
//! | ... should support a 'default-deny-all' policy | `should_support_a_default_deny_all_policy` | TCP 80 |
//! | ... should enforce policy to allow traffic from pods within server namespace based on PodSelector | `..._within_server_namespace_based_on_pod_selector` | TCP 80 |
//! | ... should enforce policy to allow ingress traffic for a target | `..._allow_ingress_traffic_for_a_target` | TCP 80 |
//! | ... should enforce policy to allow ingress traffic from pods in all namespaces | `..._from_pods_in_all_namespaces` | TCP 80 |
//! | ... should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector | `..._only_from_a_different_namespace_based_on_namespace_selector` | TCP 80 |
//! | ... should enforce policy based on PodSelector with MatchExpressions | `..._pod_selector_with_match_expressions` | TCP 80 |
//! | ... should enforce policy based on NamespaceSelector with MatchExpressions | `..._namespace_selector_with_match_expressions` | TCP 80 |
//! | ... should enforce policy based on PodSelector or NamespaceSelector | `..._pod_selector_or_namespace_selector` | TCP 80 |
//! | ... should enforce policy based on PodSelector and NamespaceSelector | `..._pod_selector_and_namespace_selector` | TCP 80 |
//! | ... should enforce policy based on Multiple PodSelectors and NamespaceSelectors | `..._multiple_pod_selectors_and_namespace_selectors` | TCP 80 |
//! | ... should enforce policy based on any PodSelectors | `..._any_pod_selectors` | TCP 80 |
//! | ... should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector | `..._pod_in_a_different_namespace_...` | TCP 80 |
//! | ... should enforce policy based on Ports | `should_enforce_policy_based_on_ports` | TCP 81 |
//! | ... should enforce multiple, stacked policies with overlapping podSelectors | `..._stacked_policies_...` | TCP 81, 80, 80 |
//! | ... should support allow-all policy | `should_support_allow_all_policy` | TCP 80, 81 |
//! | ... should allow ingress access on one named port | `..._ingress_access_on_one_named_port` | TCP 81, 80 |
//! | ... should allow ingress access from namespace on one named port | `..._from_namespace_on_one_named_port` | TCP 80, 81 |
//! | ... should allow egress access on one named port | `..._egress_access_on_one_named_port` | TCP 80, 81 |
//! | ... should enforce updated policy | `should_enforce_updated_policy` | TCP 81, 81 |
//! | ... should allow ingress access from updated namespace | `..._from_updated_namespace` | TCP 80, 80 |
//! | ... should allow ingress access from updated pod | `..._from_updated_pod` | TCP 80, 80 |
//! | ... should deny ingress from pods on other namespaces | `..._from_pods_on_other_namespaces` | TCP 80 |
//! | ... should deny ingress access to updated pod | `..._access_to_updated_pod` | TCP 80, 80 |
//! | ... should deny egress from pods based on PodSelector | `..._egress_from_pods_based_on_pod_selector` | TCP 80 |
//! | ... should deny egress from all pods in a namespace | `..._egress_from_all_pods_in_a_namespace` | TCP 80 |
//! | ... should work with Ingress, Egress specified together | `should_work_with_ingress_egress_specified_together` | TCP 80, 81 |
//! | ... should support denying of egress traffic on the client side (even if the server explicitly allows this traffic) | `..._on_the_client_side_...` | TCP 80 |
//! | ... should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector | `should_enforce_egress_policy_...` | TCP 80 |
//! | ... should enforce ingress policy allowing any port traffic to a server on a specific protocol | `should_enforce_ingress_policy_...` | TCP 80, UDP 80 |
//! | ... should enforce multiple ingress policies with ingress allow-all policy taking precedence | `..._ingress_allow_all_...` | TCP 81, 81 |
//! | ... should enforce multiple egress policies with egress allow-all policy taking precedence | `..._egress_allow_all_...` | TCP 81, 81 |
//! | ... should stop enforcing policies after they are deleted | `should_stop_enforcing_policies_after_they_are_deleted` | TCP 80, 80 |
//! | ... should allow egress access to server in CIDR block | `should_allow_egress_access_to_server_in_cidr_block` | TCP 80 |
//! | ... should enforce except clause while egress access to server in CIDR block | `..._except_clause_...` | TCP 80 |
//! | ... should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed | `..._overlapping_both_...` | TCP 80, 80 |
//! | ... should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector | `..._controlled_independently_...` | TCP 80, 80 |
//! | ... should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP | `should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_...` | TCP 81 |
//! | ... should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP | `should_properly_isolate_pods_...` | TCP 81 |
//! | ... should not allow access by TCP when a policy specifies only UDP | `should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp` | TCP 81 |
//! | ... should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label | `..._match_labels_using_default_ns_label` | TCP 80 |
//! | ... should enforce policy based on NamespaceSelector with MatchExpressions using default ns label | `..._match_expressions_using_default_ns_label` | TCP 80 |
//! | using UDP / should support a 'default-deny-ingress' policy | `using_udp::should_support_a_default_deny_ingress_policy` | UDP 80 |
//! | using UDP / should enforce policy based on Ports | `using_udp::should_enforce_policy_based_on_ports` | UDP 81 |
//! | using UDP / should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector | `using_udp::...` | UDP 80 |
//! | using SCTP / should support a 'default-deny-ingress' policy | `using_sctp::should_support_a_default_deny_ingress_policy` | SCTP 80 (raw INIT) |
//! | using SCTP / should enforce policy based on Ports | `using_sctp::should_enforce_policy_based_on_ports` | SCTP 81 (raw INIT) |
//! | using SCTP / should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector | `using_sctp::...` | SCTP 80 (raw INIT) |

mod conformance {
    pub mod harness;
    pub mod model;
    pub mod probe;
}

use conformance::{
    harness::run,
    model::{Peer, Proto, Reachability},
};

fn x() -> Peer {
    Peer::ns("x")
}

fn any() -> Peer {
    Peer::any()
}

/// "NetworkPolicy between server and client"
mod between_server_and_client {
    use super::*;

    /// should support a 'default-deny-ingress' policy
    #[test]
    fn should_support_a_default_deny_ingress_policy() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(any(), x(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should support a 'default-deny-all' policy
    #[test]
    fn should_support_a_default_deny_all_policy() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: []
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(any(), x(), false);
            r.expect_peer(x(), any(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow traffic from pods within server namespace based on PodSelector
    #[test]
    fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-a-allows-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            r.expect("x/b", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow ingress traffic for a target
    #[test]
    fn should_enforce_policy_to_allow_ingress_traffic_for_a_target() {
        run(module_path!(), |k8s| {
            // "having a deny all ingress policy"
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
",
            );
            // Allow Ingress traffic only to pod x/a from any pod
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-to-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: {}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", true);
            r.expect_all_ingress("x/b", false);
            r.expect_all_ingress("x/c", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow ingress traffic from pods in all namespaces
    #[test]
    fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-another-ns, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {}}
",
            );
            let r = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector
    #[test]
    fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
",
            );
            let mut r = Reachability::new(true);
            // disallow all traffic from the x or z namespaces
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on PodSelector with MatchExpressions
    #[test]
    fn should_enforce_policy_based_on_pod_selector_with_match_expressions() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-a-allows-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: pod, operator: In, values: [b]}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            r.expect("x/b", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on NamespaceSelector with MatchExpressions
    #[test]
    fn should_enforce_policy_based_on_namespace_selector_with_match_expressions() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: In, values: ['y']}
",
            );
            let mut r = Reachability::new(true);
            // disallow all traffic from the x or z namespaces
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on PodSelector or NamespaceSelector
    #[test]
    fn should_enforce_policy_based_on_pod_selector_or_namespace_selector() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
    - podSelector: {matchLabels: {pod: b}}
",
            );
            let mut r = Reachability::new(true);
            r.expect("x/a", "x/a", false);
            r.expect("x/c", "x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on PodSelector and NamespaceSelector
    #[test]
    fn should_enforce_policy_based_on_pod_selector_and_namespace_selector() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-podselector-and-nsselector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
      podSelector: {matchLabels: {pod: b}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            r.expect("y/b", "x/a", true);
            r.expect("z/b", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on Multiple PodSelectors and NamespaceSelectors
    #[test]
    fn should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-z-pod-b-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}
      podSelector:
        matchExpressions:
        - {key: pod, operator: In, values: [b, c]}
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect("y/a", "x/a", false);
            r.expect("z/a", "x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on any PodSelectors
    #[test]
    fn should_enforce_policy_based_on_any_pod_selectors() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-x-pod-b-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - podSelector: {matchLabels: {pod: c}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            // Connect Pods b and c to pod a from namespace nsX
            r.expect("x/b", "x/a", true);
            r.expect("x/c", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
    #[test]
    fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(NS_Y_POD_A_INGRESS);
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            r.expect("y/a", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// `allow-ns-y-pod-a-via-namespace-pod-selector`, the policy of the "only from a pod in
    /// a different namespace based on PodSelector and NamespaceSelector" cases.
    pub const NS_Y_POD_A_INGRESS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-pod-a-via-namespace-pod-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
      podSelector: {matchLabels: {pod: a}}
";

    /// `allowPort81Policy`: ingress to x/a from namespace y on port 81 over `proto`.
    pub fn allow_port_81_policy(name: &str, proto: &str) -> String {
        format!(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: 'y'}}}}
    ports:
    - {{port: 81, protocol: {proto}}}
"
        )
    }

    /// should enforce policy based on Ports
    #[test]
    fn should_enforce_policy_based_on_ports() {
        run(module_path!(), |k8s| {
            // "Creating a network allowPort81Policy which only allows allow listed namespaces
            // (y) to connect on exactly one port (81)"
            k8s.create_policy(&allow_port_81_policy(
                "allow-client-a-via-ns-selector",
                "TCP",
            ));
            let mut r = Reachability::new(true);
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("y"), Peer::pod("x", "a"), true);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
        });
    }

    /// should enforce multiple, stacked policies with overlapping podSelectors
    #[test]
    fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors() {
        run(module_path!(), |k8s| {
            k8s.create_policy(&allow_port_81_policy(
                "allow-client-a-via-ns-selector",
                "TCP",
            ));
            let mut allow = Reachability::new(true);
            allow.expect_peer(x(), Peer::pod("x", "a"), false);
            allow.expect_peer(Peer::ns("y"), Peer::pod("x", "a"), true);
            allow.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            // "Verifying traffic on port 81."
            k8s.validate_or_fail(81, Proto::Tcp, &allow);

            let mut deny = Reachability::new(true);
            deny.expect_all_ingress("x/a", false);
            // "Verifying traffic on port 80."
            k8s.validate_or_fail(80, Proto::Tcp, &deny);

            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
    ports:
    - {port: 80, protocol: TCP}
",
            );
            // "Verifying that we can add a policy to unblock port 80"
            k8s.validate_or_fail(80, Proto::Tcp, &allow);
        });
    }

    /// should support allow-all policy
    #[test]
    fn should_support_allow_all_policy() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - {}
",
            );
            // "Testing pods can connect to both ports when an 'allow-all' policy is present."
            let r = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
        });
    }

    /// should allow ingress access on one named port
    #[test]
    fn should_allow_ingress_access_on_one_named_port() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: serve-81-tcp
",
            );
            // "Blocking all ports other then 81 in the entire namespace"
            let port81 = Reachability::new(true);
            k8s.validate_or_fail(81, Proto::Tcp, &port81);
            // disallow all traffic to the x namespace
            let mut port80 = Reachability::new(true);
            port80.expect_peer(any(), x(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &port80);
        });
    }

    /// should allow ingress access from namespace on one named port
    #[test]
    fn should_allow_ingress_access_from_namespace_on_one_named_port() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
    ports:
    - {port: serve-80-tcp, protocol: TCP}
",
            );
            let mut r = Reachability::new(true);
            // disallow all traffic from the x or z namespaces
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            // "Verify that port 80 is allowed for namespace y"
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            // "Verify that port 81 is blocked for all namespaces including y"
            let mut fail = Reachability::new(true);
            fail.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(81, Proto::Tcp, &fail);
        });
    }

    /// should allow egress access on one named port
    #[test]
    fn should_allow_egress_access_on_one_named_port() {
        run(module_path!(), |k8s| {
            // "validating egress from port 81 to port 80"
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Egress]
  egress:
  - ports:
    - port: serve-80-tcp
",
            );
            let port80 = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &port80);
            // meanwhile no traffic over 81 should work, since our egress policy is on 80
            let mut port81 = Reachability::new(true);
            port81.expect_peer(x(), any(), false);
            k8s.validate_or_fail(81, Proto::Tcp, &port81);
        });
    }

    /// should enforce updated policy
    #[test]
    fn should_enforce_updated_policy() {
        run(module_path!(), |k8s| {
            // "Using the simplest possible mutation: start with allow all, then switch to deny all"
            // part 1) allow all
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-mutate-to-deny-all, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - {}
",
            );
            let r = Reachability::new(true);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
            // part 2) update the policy to deny all
            k8s.update_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-mutate-to-deny-all, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress: []
",
            );
            let mut deny = Reachability::new(true);
            deny.expect_peer(any(), x(), false);
            k8s.validate_or_fail(81, Proto::Tcp, &deny);
        });
    }

    /// should allow ingress access from updated namespace
    #[test]
    fn should_allow_ingress_access_from_updated_namespace() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns2: updated}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            // add a new label
            k8s.add_namespace_label("y", "ns2", "updated");
            // anything from namespace 'y' should be able to get to x/a
            let mut with_label = Reachability::new(true);
            with_label.expect_all_ingress("x/a", false);
            with_label.expect_peer(Peer::ns("y"), any(), true);
            k8s.validate_or_fail(80, Proto::Tcp, &with_label);
        });
    }

    /// should allow ingress access from updated pod
    #[test]
    fn should_allow_ingress_access_from_updated_pod() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-pod-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b, pod2: updated}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            k8s.add_pod_labels("x/b", &[("pod", "b"), ("pod2", "updated")]);
            // "x/b is able to reach x/a when label is updated"
            let mut with_label = Reachability::new(true);
            with_label.expect_all_ingress("x/a", false);
            with_label.expect("x/b", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &with_label);
        });
    }

    /// should deny ingress from pods on other namespaces
    #[test]
    fn should_deny_ingress_from_pods_on_other_namespaces() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-empty-policy, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(Peer::ns("y"), x(), false);
            r.expect_peer(Peer::ns("z"), x(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should deny ingress access to updated pod
    #[test]
    fn should_deny_ingress_access_to_updated_pod() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress-via-label-selector, namespace: x}
spec:
  podSelector: {matchLabels: {target: isolated}}
  policyTypes: [Ingress]
  ingress: []
",
            );
            // "Verify that everything can reach x/a"
            let r = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            k8s.add_pod_labels("x/a", &[("target", "isolated")]);
            let mut isolated = Reachability::new(true);
            isolated.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &isolated);
        });
    }

    /// should deny egress from pods based on PodSelector
    #[test]
    fn should_deny_egress_from_pods_based_on_pod_selector() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: []
",
            );
            let mut r = Reachability::new(true);
            r.expect_all_egress("x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should deny egress from all pods in a namespace
    #[test]
    fn should_deny_egress_from_all_pods_in_a_namespace() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-ns-x, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: []
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(x(), any(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should work with Ingress, Egress specified together
    #[test]
    fn should_work_with_ingress_egress_specified_together() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-pod-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress, Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
  egress:
  - ports:
    - port: 80
",
            );
            let mut port80 = Reachability::new(true);
            port80.expect_all_ingress("x/a", false);
            port80.expect("x/b", "x/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &port80);
            // "validating that port 81 doesn't work"
            // meanwhile no egress traffic on 81 should work, since our egress policy is on 80
            let mut port81 = Reachability::new(true);
            port81.expect_all_ingress("x/a", false);
            port81.expect_all_egress("x/a", false);
            port81.expect("x/b", "x/a", true);
            k8s.validate_or_fail(81, Proto::Tcp, &port81);
        });
    }

    /// should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)
    #[test]
    fn should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic()
     {
        run(module_path!(), |k8s| {
            // Building egress policy for x/a to y/a only
            k8s.create_policy(EGRESS_X_A_TO_Y_A);
            // Creating ingress policy to allow from x/a to y/a and y/b
            for (name, target) in [
                ("allow-from-xa-on-ya-match-selector", "a"),
                ("allow-from-xa-on-yb-match-selector", "b"),
            ] {
                k8s.create_policy(&format!(
                    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: 'y'}}
spec:
  podSelector: {{matchLabels: {{pod: {target}}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: x}}}}
      podSelector: {{matchLabels: {{pod: a}}}}
"
                ));
            }
            let mut r = Reachability::new(true);
            // Default all traffic flows.
            // Exception: x/a can only egress to y/a, others are false
            // Exception: y/a can only allow ingress from x/a, others are false
            // Exception: y/b has no allowed traffic (due to limit on x/a egress)
            r.expect_peer(Peer::pod("x", "a"), any(), false);
            r.expect_peer(any(), Peer::pod("y", "a"), false);
            r.expect_peer(Peer::pod("x", "a"), Peer::pod("y", "a"), true);
            r.expect_peer(any(), Peer::pod("y", "b"), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// `allow-to-ns-y-pod-a`: egress of x/a only to y/a.
    const EGRESS_X_A_TO_Y_A: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-to-ns-y-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
      podSelector: {matchLabels: {pod: a}}
";

    /// should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector
    #[test]
    fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(EGRESS_X_A_TO_Y_A);
            let mut r = Reachability::new(true);
            r.expect_all_egress("x/a", false);
            r.expect("x/a", "y/a", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce ingress policy allowing any port traffic to a server on a specific protocol
    #[test]
    fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol()
    {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-by-proto, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - protocol: TCP
",
            );
            let tcp = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &tcp);
            let mut udp = Reachability::new(true);
            udp.expect_peer(any(), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(80, Proto::Udp, &udp);
        });
    }

    /// should enforce multiple ingress policies with ingress allow-all policy taking precedence
    #[test]
    fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: 80
",
            );
            // "The policy targets port 80 -- so let's make sure traffic on port 81 is blocked"
            let mut r = Reachability::new(true);
            r.expect_peer(any(), x(), false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
            // "Allowing all ports"
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Ingress]
  ingress:
  - {}
",
            );
            let all = Reachability::new(true);
            k8s.validate_or_fail(81, Proto::Tcp, &all);
        });
    }

    /// should enforce multiple egress policies with egress allow-all policy taking precedence
    #[test]
    fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Egress]
  egress:
  - ports:
    - port: 80
",
            );
            // "Making sure ingress doesn't work other than port 80"
            let mut r = Reachability::new(true);
            r.expect_peer(x(), any(), false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
            // "Allowing all ports"
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress, namespace: x}
spec:
  podSelector: {matchLabels: {}}
  policyTypes: [Egress]
  egress:
  - {}
",
            );
            let all = Reachability::new(true);
            k8s.validate_or_fail(81, Proto::Tcp, &all);
        });
    }

    /// should stop enforcing policies after they are deleted
    #[test]
    fn should_stop_enforcing_policies_after_they_are_deleted() {
        run(module_path!(), |k8s| {
            // "Creating a network policy for the server which denies all traffic."
            // Deny all traffic into and out of "x".
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: []
",
            );
            let mut r = Reachability::new(true);
            // Expect all traffic into, and out of "x" to be False.
            r.expect_peer(x(), any(), false);
            r.expect_peer(any(), x(), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            k8s.clean_policies();
            // Now the policy is deleted, we expect all connectivity to work again.
            let all = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &all);
        });
    }

    /// `allow-client-a-via-cidr-egress-rule`: egress of x/a to ipBlocks, one per family of
    /// the node (as a dual-stack cluster's policy lists both): (cidr, excepts) each.
    fn egress_x_a_to_cidr(blocks: &[(String, Vec<String>)]) -> String {
        let peers: String = blocks
            .iter()
            .map(|(cidr, except)| {
                let except = if except.is_empty() {
                    String::new()
                } else {
                    format!("\n        except: [\"{}\"]", except.join("\", \""))
                };
                format!("    - ipBlock:\n        cidr: \"{cidr}\"{except}\n")
            })
            .collect();
        format!(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-client-a-via-cidr-egress-rule, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to:
{peers}"
        )
    }

    /// Each of `cidrs` with no except.
    fn alone(cidrs: Vec<String>) -> Vec<(String, Vec<String>)> {
        cidrs.into_iter().map(|c| (c, Vec::new())).collect()
    }

    /// should allow egress access to server in CIDR block
    #[test]
    fn should_allow_egress_access_to_server_in_cidr_block() {
        run(module_path!(), |k8s| {
            let pod_server_cidr = k8s.cidrs("y/b", 32, 128);
            k8s.create_policy(&egress_x_a_to_cidr(&alone(pod_server_cidr)));
            let mut r = Reachability::new(true);
            r.expect_all_egress("x/a", false);
            r.expect("x/a", "y/b", true);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce except clause while egress access to server in CIDR block
    #[test]
    fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() {
        run(module_path!(), |k8s| {
            // Upstream writes x/a's address with /4 (host bits set) and excepts x/b (in
            // each family of the node).
            let allow = k8s.cidrs("x/a", 4, 4);
            let except = k8s.cidrs("x/b", 32, 128);
            let blocks: Vec<_> = allow
                .into_iter()
                .zip(except)
                .map(|(a, e)| (a, vec![e]))
                .collect();
            k8s.create_policy(&egress_x_a_to_cidr(&blocks));
            let mut r = Reachability::new(true);
            r.expect("x/a", "x/b", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed
    #[test]
    fn should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed() {
        run(module_path!(), |k8s| {
            let allow = k8s.cidrs("x/a", 4, 4);
            let pod_b_ip = k8s.cidrs("x/b", 32, 128);
            let blocks: Vec<_> = allow
                .into_iter()
                .zip(pod_b_ip.clone())
                .map(|(a, e)| (a, vec![e]))
                .collect();
            k8s.create_policy(&egress_x_a_to_cidr(&blocks));
            let mut r = Reachability::new(true);
            r.expect("x/a", "x/b", false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
            // Create NetworkPolicy which allows access to the podServer using podServer's IP
            // in allow CIDR (upstream: UpdatePolicy, same name).
            k8s.update_policy(&egress_x_a_to_cidr(&alone(pod_b_ip)));
            let mut allow_b = Reachability::new(true);
            allow_b.expect_all_egress("x/a", false);
            allow_b.expect("x/a", "x/b", true);
            k8s.validate_or_fail(80, Proto::Tcp, &allow_b);
        });
    }

    /// should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector
    #[test]
    fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector()
     {
        run(module_path!(), |k8s| {
            // "Creating a network policy for pod-a which allows Egress traffic to pod-b."
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress-for-target, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - {}
",
            );
            let allow_egress = Reachability::new(true);
            k8s.validate_or_fail(80, Proto::Tcp, &allow_egress);
            // "Creating a network policy for pod-a that denies traffic from pod-b."
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress-via-label-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress: []
",
            );
            let mut deny_ingress_to_x = Reachability::new(true);
            deny_ingress_to_x.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(80, Proto::Tcp, &deny_ingress_to_x);
        });
    }

    /// should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP
    #[test]
    fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp()
     {
        run(module_path!(), |k8s| {
            // "Creating a default-deny ingress policy."
            // Empty podSelector blocks the entire namespace
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
",
            );
            // "Creating a network policy for the server which allows traffic only via SCTP on port 81."
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-only-sctp-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: SCTP}
",
            );
            // "Trying to connect to TCP port 81, which should be blocked by the deny-ingress policy."
            let mut r = Reachability::new(true);
            r.expect_peer(any(), x(), false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
        });
    }

    /// should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP
    #[test]
    fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp()
     {
        run(module_path!(), |k8s| {
            // "Creating a network policy for the server which allows traffic only via SCTP on port 80."
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-only-sctp-ingress-on-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 80, protocol: SCTP}
",
            );
            // "Trying to connect to TCP port 81, which should be blocked by implicit isolation."
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
        });
    }

    /// should not allow access by TCP when a policy specifies only UDP
    #[test]
    fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp() {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-only-udp-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: UDP}
",
            );
            // Probing with TCP, so all traffic should be dropped.
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            k8s.validate_or_fail(81, Proto::Tcp, &r);
        });
    }

    /// should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label
    #[test]
    fn should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector-for-immutable-ns-label, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: 'y'}}
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }

    /// should enforce policy based on NamespaceSelector with MatchExpressions using default ns label
    #[test]
    fn should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label()
     {
        run(module_path!(), |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-match-selector-for-immutable-ns-label, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: ['y']}
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(Peer::pod("x", "a"), Peer::ns("y"), false);
            k8s.validate_or_fail(80, Proto::Tcp, &r);
        });
    }
}

/// The three cases the "using UDP" and "using SCTP" contexts share, over `proto`.
mod per_protocol {
    use super::{
        between_server_and_client::{NS_Y_POD_A_INGRESS, allow_port_81_policy},
        *,
    };

    fn name(proto: Proto) -> &'static str {
        match proto {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// should support a 'default-deny-ingress' policy
    pub fn default_deny_ingress(test: &str, proto: Proto) {
        run(test, |k8s| {
            k8s.create_policy(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: []
",
            );
            let mut r = Reachability::new(true);
            r.expect_peer(any(), x(), false);
            k8s.validate_or_fail(80, proto, &r);
        });
    }

    /// should enforce policy based on Ports
    pub fn based_on_ports(test: &str, proto: Proto) {
        run(test, |k8s| {
            k8s.create_policy(&allow_port_81_policy(
                "allow-ingress-on-port-81-ns-x",
                name(proto),
            ));
            let mut r = Reachability::new(true);
            r.expect_peer(x(), Peer::pod("x", "a"), false);
            r.expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false);
            k8s.validate_or_fail(81, proto, &r);
        });
    }

    /// should enforce policy to allow traffic only from a pod in a different namespace based
    /// on PodSelector and NamespaceSelector
    pub fn pod_in_a_different_namespace(test: &str, proto: Proto) {
        run(test, |k8s| {
            k8s.create_policy(NS_Y_POD_A_INGRESS);
            let mut r = Reachability::new(true);
            r.expect_all_ingress("x/a", false);
            r.expect("y/a", "x/a", true);
            k8s.validate_or_fail(80, proto, &r);
        });
    }
}

/// "NetworkPolicy between server and client using UDP"
mod using_udp {
    use super::{Proto, per_protocol};

    /// should support a 'default-deny-ingress' policy
    #[test]
    fn should_support_a_default_deny_ingress_policy() {
        per_protocol::default_deny_ingress(module_path!(), Proto::Udp);
    }

    /// should enforce policy based on Ports
    #[test]
    fn should_enforce_policy_based_on_ports() {
        per_protocol::based_on_ports(module_path!(), Proto::Udp);
    }

    /// should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
    #[test]
    fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
     {
        per_protocol::pod_in_a_different_namespace(module_path!(), Proto::Udp);
    }
}

/// "NetworkPolicy between server and client using SCTP" (probed with raw SCTP INITs, see
/// the table at the top).
mod using_sctp {
    use super::{Proto, per_protocol};

    /// should support a 'default-deny-ingress' policy
    #[test]
    fn should_support_a_default_deny_ingress_policy() {
        per_protocol::default_deny_ingress(module_path!(), Proto::Sctp);
    }

    /// should enforce policy based on Ports
    #[test]
    fn should_enforce_policy_based_on_ports() {
        per_protocol::based_on_ports(module_path!(), Proto::Sctp);
    }

    /// should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector
    #[test]
    fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
     {
        per_protocol::pod_in_a_different_namespace(module_path!(), Proto::Sctp);
    }
}
