//! The upstream ClusterNetworkPolicy conformance suite, ported to the virtual node.
//!
//! Source: kubernetes-sigs/network-policy-api `conformance/` at commit
//! 0eec1b0e5fa92715b4c0f4c48d3c8d2913ed2159 (2026-07-01): tag v0.2.0 (a17adecd) plus the two
//! commits that add the namespace-relabel steps to the two inline-CIDR tests (d4a027d,
//! 371fc24); the manifests are the same as at v0.2.0. Every test (`suite.ConformanceTest`) of
//! both profiles is here, every subtest (`t.Run`) in it, and every probe (`PokeServer`):
//! 24 tests, 92 subtests, 301 probes.
//!
//! It is data: the manifests are upstream's files, verbatim
//! (`cnp_conformance/upstream/`), the fixture is read from upstream's `manifests.yaml`
//! (`cnp_conformance::model`), and each subtest is the list of upstream's steps, its edits
//! of the cluster and its probes with upstream's `shouldConnect`
//! (`cnp_conformance::{admin_tier, baseline_tier, experimental}`, shaped by
//! `cnp_conformance::suite`), never computed by our evaluator. Each probe is also checked
//! against the reference evaluator (`cns_agent::policy::evaluate`) once
//! `cnp_conformance::evaluator::EVALUATOR_KNOWS_CLUSTER_NETWORK_POLICY` says it understands
//! ClusterNetworkPolicy.
//!
//! Each Rust test is one upstream test (the `ShortName` in snake case), in `standard` or
//! `experimental` by upstream's profile. It runs on the real agent in three virtual nodes at
//! once (IPv4-only, IPv6-only, dual-stack, shared by the whole file: `cnp_conformance::
//! harness`), every subtest from the state upstream's earlier subtests leave, and fails with
//! every probe of every subtest that was not as upstream expects. `CNP_FAMILIES=ipv4` and
//! `CNP_SUBTEST=<part of a name>` narrow a run.
//!
//! Any error the agent reports at a sync (a manifest it refuses) fails the test.
//!
//! ## Differences from upstream
//!
//! | upstream | here | why |
//! |---|---|---|
//! | a cluster of nodes; the StatefulSets' pods wherever the scheduler puts them | every pod on node-1, the agent's node; the host-network pods centaur-0 on node-1 (its uplink address 10.255.0.1, fd00:ff::1) and centaur-1 on node-2, the virtual node's "outside" netns (10.255.0.2, fd00:ff::2), a host on the node's uplink | one agent enforces its own node's pods; node-2 is a real, routed address to probe |
//! | the StatefulSet controller makes the pods | Pod objects as it would: the template's labels plus `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, the template's spec (containers, named ports `web`/`dns`, `hostNetwork`) with `nodeName`, status `Running` with the addresses of `model`'s table | no API server or controllers |
//! | the kubelet's Node objects | `node-1` and `node-2`, labels `kubernetes.io/os: linux` (what the node peers select), `kubernetes.io/arch`, `kubernetes.io/hostname`; `status.addresses` InternalIP (each address of the node's family) and Hostname | the agent reads Nodes from the manifests |
//! | node peer probes go to centaur-1 only, on whichever node it runs | upstream's probes to centaur-1 (node-2), and each also to centaur-0 (node-1, the client's own node) with the same expectation, marked `added_poke` (9 probes) | upstream's cluster may put centaur-1 on the client's node or another: both placements are covered |
//! | `PokeServer`: `agnhost connect --timeout=3s` from the client pod, polled up to 10 s until it gives the expected result | real sockets from the client pod's netns; a first try of 0.5 s, a second of 2 s for every probe not as expected | no containers; a dropped probe costs its timeout, connections here take well under a millisecond |
//! | "should not connect" means `TIMEOUT` (a refusal fails) | the same: a drop must time out; refused or unreachable fails | |
//! | TCP: the handshake | the handshake and an echo of a payload | stronger |
//! | UDP: `serve-hostname --udp` answers a datagram | an echo server answers it; every probe from a source port of its own | an earlier allowed probe's tracked connection cannot let a later one through |
//! | SCTP: `agnhost porter` servers, an SCTP association | a raw SCTP INIT from the client, connected when a raw socket in the server's netns receives it (`cns_tests::sctp`); a source port and initiate tag of its own per probe | this kernel has no SCTP stack (`CONFIG_IP_SCTP` unset) |
//! | `netexec` host-network UDP servers listen on `$(HOST_IP)` only | on every address of the node | nothing probes another address |
//! | the subtests of a test run in order on one copy of the policies | each subtest starts from the test's manifests with every edit of the subtests before it made (`suite::Test::start_of`), written and synced before its first probe; the probes see the same policies as upstream's | every subtest starts from a clean state and can run alone |
//! | `PatchClusterNetworkPolicy`, `Client.Delete(np)` | the object edited as the Go code edits it (`model::ClusterState::apply`), its file rewritten (or removed), the agent synced | no API server; the agent reads a directory |
//! | `PatchNamespace` with `SetLabels({conformance-house: ...})`: the merge patch drops every other label, the API server keeps `kubernetes.io/metadata.name` | the Namespace written with only that label; the agent adds `kubernetes.io/metadata.name` | as the API server |
//! | one cluster of one family per run | the three families on three nodes at once; on the dual-stack node every probe over IPv4 and IPv6, both as expected | one run covers every family |
//! | `CNP*EgressInlineCIDRPeers` "allow-egress": inserts a `networks` rule with each pod's `Status.PodIP` + `/32` or `/128` | the same; on the dual-stack node with both addresses of each pod | an IPv4 /32 says nothing of the IPv6 probe; upstream probes the primary family only |
//! | IPv6 in the CIDR policies | none to add: upstream's `networks` already list `0.0.0.0/0` and `::/0` | |
//! | manifests applied as objects | written as upstream's text while unchanged (`podSelector:` left null in `standard-anp-np-banp.yaml`, comments kept), as the edited object otherwise | the agent parses upstream's YAML itself |
//! | `domainNames` peers | none: no upstream conformance test (v0.2.0 or later) uses them, so nothing is ported. This project's rule (a policy with `domainNames` is unsupported: an Accept rule with them matches nothing, a Deny or Pass rule with them denies all) is not exercised here | |
//! | suite options (`NamespaceLabels`, `SkipTests`, `HostNetworkPortRangeStart`), conformance reports | not ported; the host network ports are upstream's defaults (34345-34352) | test configuration, not behaviour |
//!
//! ## Tests
//!
//! | upstream test | Rust test | subtests | probes | protocols |
//! |---|---|---|---|---|
//! | `CNPAdminTierEgressTCP` | `standard::cnp_admin_tier_egress_tcp` | 6 | 12 | TCP |
//! | `CNPAdminTierEgressUDP` | `standard::cnp_admin_tier_egress_udp` | 6 | 12 | UDP |
//! | `CNPAdminTierEgressSCTP` | `standard::cnp_admin_tier_egress_sctp` | 6 | 12 | SCTP |
//! | `CNPAdminTierIngressTCP` | `standard::cnp_admin_tier_ingress_tcp` | 6 | 12 | TCP |
//! | `CNPAdminTierIngressUDP` | `standard::cnp_admin_tier_ingress_udp` | 6 | 12 | UDP |
//! | `CNPAdminTierIngressSCTP` | `standard::cnp_admin_tier_ingress_sctp` | 6 | 12 | SCTP |
//! | `CNPAdminTierGress` | `standard::cnp_admin_tier_gress` | 6 | 54 | TCP, UDP, SCTP |
//! | `CNPAdminTierEgressInlineCIDRPeers` | `standard::cnp_admin_tier_egress_inline_cidr_peers` | 2 | 27 | TCP, UDP, SCTP |
//! | `CNPAdminTierIntegration` | `standard::cnp_admin_tier_integration` | 6 | 12 | TCP |
//! | `CNPAdminTierPriorityField` | `standard::cnp_admin_tier_priority_field` | 3 | 8 | TCP |
//! | `CNPBaselineTierEgressTCP` | `standard::cnp_baseline_tier_egress_tcp` | 4 | 8 | TCP |
//! | `CNPBaselineTierEgressUDP` | `standard::cnp_baseline_tier_egress_udp` | 4 | 8 | UDP |
//! | `CNPBaselineTierEgressSCTP` | `standard::cnp_baseline_tier_egress_sctp` | 4 | 8 | SCTP |
//! | `CNPBaselineTierIngressTCP` | `standard::cnp_baseline_tier_ingress_tcp` | 4 | 8 | TCP |
//! | `CNPBaselineTierIngressUDP` | `standard::cnp_baseline_tier_ingress_udp` | 4 | 8 | UDP |
//! | `CNPBaselineTierIngressSCTP` | `standard::cnp_baseline_tier_ingress_sctp` | 4 | 8 | SCTP |
//! | `CNPBaselineTierGress` | `standard::cnp_baseline_tier_gress` | 4 | 36 | TCP, UDP, SCTP |
//! | `CNPBaselineTierEgressInlineCIDRPeers` | `standard::cnp_baseline_tier_egress_inline_cidr_peers` | 2 | 27 | TCP, UDP, SCTP |
//! | `CNPAdminTierEgressNamedPort` | `experimental::cnp_admin_tier_egress_named_port` | 1 | 2 | TCP |
//! | `CNPAdminTierIngressNamedPort` | `experimental::cnp_admin_tier_ingress_named_port` | 1 | 2 | UDP |
//! | `CNPAdminTierEgressNodePeers` | `experimental::cnp_admin_tier_egress_node_peers` | 3 | 5 + 5 added | TCP, UDP, SCTP |
//! | `CNPBaselineTierEgressNamedPort` | `experimental::cnp_baseline_tier_egress_named_port` | 1 | 2 | UDP |
//! | `CNPBaselineTierIngressNamedPort` | `experimental::cnp_baseline_tier_ingress_named_port` | 1 | 2 | TCP |
//! | `CNPBaselineTierEgressNodePeers` | `experimental::cnp_baseline_tier_egress_node_peers` | 2 | 4 + 4 added | TCP, UDP, SCTP |
//!
//! Standard: 18 tests, 83 subtests, 284 probes. Experimental: 6 tests, 9 subtests, 17
//! probes (+ 9 added).

mod cnp_conformance {
    pub mod admin_tier;
    pub mod baseline_tier;
    pub mod evaluator;
    pub mod experimental;
    pub mod harness;
    pub mod manifests;
    pub mod model;
    pub mod probe;
    pub mod suite;
}

use cnp_conformance::{
    admin_tier::*, baseline_tier::*, experimental::*, harness::run, suite::Test,
};

/// Every upstream test, in upstream's registration order within each profile.
pub const ALL: [&Test; 24] = [
    &CNP_ADMIN_TIER_EGRESS_TCP,
    &CNP_ADMIN_TIER_EGRESS_UDP,
    &CNP_ADMIN_TIER_EGRESS_SCTP,
    &CNP_ADMIN_TIER_INGRESS_TCP,
    &CNP_ADMIN_TIER_INGRESS_UDP,
    &CNP_ADMIN_TIER_INGRESS_SCTP,
    &CNP_ADMIN_TIER_GRESS,
    &CNP_ADMIN_TIER_EGRESS_INLINE_CIDR_PEERS,
    &CNP_ADMIN_TIER_INTEGRATION,
    &CNP_ADMIN_TIER_PRIORITY_FIELD,
    &CNP_BASELINE_TIER_EGRESS_TCP,
    &CNP_BASELINE_TIER_EGRESS_UDP,
    &CNP_BASELINE_TIER_EGRESS_SCTP,
    &CNP_BASELINE_TIER_INGRESS_TCP,
    &CNP_BASELINE_TIER_INGRESS_UDP,
    &CNP_BASELINE_TIER_INGRESS_SCTP,
    &CNP_BASELINE_TIER_GRESS,
    &CNP_BASELINE_TIER_EGRESS_INLINE_CIDR_PEERS,
    &CNP_ADMIN_TIER_EGRESS_NAMED_PORT,
    &CNP_ADMIN_TIER_INGRESS_NAMED_PORT,
    &CNP_ADMIN_TIER_EGRESS_NODE_PEERS,
    &CNP_BASELINE_TIER_EGRESS_NAMED_PORT,
    &CNP_BASELINE_TIER_INGRESS_NAMED_PORT,
    &CNP_BASELINE_TIER_EGRESS_NODE_PEERS,
];

/// The 18 tests of upstream's standard profile (feature `ClusterNetworkPolicy`).
mod standard {
    use super::*;

    /// `CNPAdminTierEgressTCP`
    #[test]
    fn cnp_admin_tier_egress_tcp() {
        run(&CNP_ADMIN_TIER_EGRESS_TCP);
    }

    /// `CNPAdminTierEgressUDP`
    #[test]
    fn cnp_admin_tier_egress_udp() {
        run(&CNP_ADMIN_TIER_EGRESS_UDP);
    }

    /// `CNPAdminTierEgressSCTP`
    #[test]
    fn cnp_admin_tier_egress_sctp() {
        run(&CNP_ADMIN_TIER_EGRESS_SCTP);
    }

    /// `CNPAdminTierIngressTCP`
    #[test]
    fn cnp_admin_tier_ingress_tcp() {
        run(&CNP_ADMIN_TIER_INGRESS_TCP);
    }

    /// `CNPAdminTierIngressUDP`
    #[test]
    fn cnp_admin_tier_ingress_udp() {
        run(&CNP_ADMIN_TIER_INGRESS_UDP);
    }

    /// `CNPAdminTierIngressSCTP`
    #[test]
    fn cnp_admin_tier_ingress_sctp() {
        run(&CNP_ADMIN_TIER_INGRESS_SCTP);
    }

    /// `CNPAdminTierGress`
    #[test]
    fn cnp_admin_tier_gress() {
        run(&CNP_ADMIN_TIER_GRESS);
    }

    /// `CNPAdminTierEgressInlineCIDRPeers`
    #[test]
    fn cnp_admin_tier_egress_inline_cidr_peers() {
        run(&CNP_ADMIN_TIER_EGRESS_INLINE_CIDR_PEERS);
    }

    /// `CNPAdminTierIntegration`
    #[test]
    fn cnp_admin_tier_integration() {
        run(&CNP_ADMIN_TIER_INTEGRATION);
    }

    /// `CNPAdminTierPriorityField`
    #[test]
    fn cnp_admin_tier_priority_field() {
        run(&CNP_ADMIN_TIER_PRIORITY_FIELD);
    }

    /// `CNPBaselineTierEgressTCP`
    #[test]
    fn cnp_baseline_tier_egress_tcp() {
        run(&CNP_BASELINE_TIER_EGRESS_TCP);
    }

    /// `CNPBaselineTierEgressUDP`
    #[test]
    fn cnp_baseline_tier_egress_udp() {
        run(&CNP_BASELINE_TIER_EGRESS_UDP);
    }

    /// `CNPBaselineTierEgressSCTP`
    #[test]
    fn cnp_baseline_tier_egress_sctp() {
        run(&CNP_BASELINE_TIER_EGRESS_SCTP);
    }

    /// `CNPBaselineTierIngressTCP`
    #[test]
    fn cnp_baseline_tier_ingress_tcp() {
        run(&CNP_BASELINE_TIER_INGRESS_TCP);
    }

    /// `CNPBaselineTierIngressUDP`
    #[test]
    fn cnp_baseline_tier_ingress_udp() {
        run(&CNP_BASELINE_TIER_INGRESS_UDP);
    }

    /// `CNPBaselineTierIngressSCTP`
    #[test]
    fn cnp_baseline_tier_ingress_sctp() {
        run(&CNP_BASELINE_TIER_INGRESS_SCTP);
    }

    /// `CNPBaselineTierGress`
    #[test]
    fn cnp_baseline_tier_gress() {
        run(&CNP_BASELINE_TIER_GRESS);
    }

    /// `CNPBaselineTierEgressInlineCIDRPeers`
    #[test]
    fn cnp_baseline_tier_egress_inline_cidr_peers() {
        run(&CNP_BASELINE_TIER_EGRESS_INLINE_CIDR_PEERS);
    }
}

/// The 6 tests upstream's experimental features add (`ClusterNetworkPolicyNamedPorts`,
/// `ClusterNetworkPolicyEgressNodePeers`).
mod experimental {
    use super::*;

    /// `CNPAdminTierEgressNamedPort`
    #[test]
    fn cnp_admin_tier_egress_named_port() {
        run(&CNP_ADMIN_TIER_EGRESS_NAMED_PORT);
    }

    /// `CNPAdminTierIngressNamedPort`
    #[test]
    fn cnp_admin_tier_ingress_named_port() {
        run(&CNP_ADMIN_TIER_INGRESS_NAMED_PORT);
    }

    /// `CNPAdminTierEgressNodePeers`
    #[test]
    fn cnp_admin_tier_egress_node_peers() {
        run(&CNP_ADMIN_TIER_EGRESS_NODE_PEERS);
    }

    /// `CNPBaselineTierEgressNamedPort`
    #[test]
    fn cnp_baseline_tier_egress_named_port() {
        run(&CNP_BASELINE_TIER_EGRESS_NAMED_PORT);
    }

    /// `CNPBaselineTierIngressNamedPort`
    #[test]
    fn cnp_baseline_tier_ingress_named_port() {
        run(&CNP_BASELINE_TIER_INGRESS_NAMED_PORT);
    }

    /// `CNPBaselineTierEgressNodePeers`
    #[test]
    fn cnp_baseline_tier_egress_node_peers() {
        run(&CNP_BASELINE_TIER_EGRESS_NODE_PEERS);
    }
}

/// The data itself, without a kernel: the transcription is whole and consistent.
mod data {
    use std::collections::BTreeSet;

    use cns_tests::Family;

    use super::{
        ALL,
        cnp_conformance::{
            model::{ClusterState, Fixture},
            suite::{Profile, Proto, Step},
        },
    };

    #[test]
    fn every_upstream_test_subtest_and_probe_is_here() {
        let profile = |p| ALL.iter().filter(move |t| t.profile() == p);
        assert_eq!(profile(Profile::Standard).count(), 18);
        assert_eq!(profile(Profile::Experimental).count(), 6);
        let subtests = |p| profile(p).map(|t| t.subtests.len()).sum::<usize>();
        assert_eq!(subtests(Profile::Standard), 83);
        assert_eq!(subtests(Profile::Experimental), 9);
        let pokes = ALL
            .iter()
            .flat_map(|t| t.subtests)
            .flat_map(|s| s.steps)
            .filter_map(|s| match s {
                Step::Poke(p) => Some(p),
                Step::Edit(_) => None,
            });
        // Upstream's `PokeServer` calls, and those added here (node peers on node-1).
        assert_eq!(pokes.clone().filter(|p| !p.added).count(), 301);
        assert_eq!(pokes.filter(|p| p.added).count(), 9);
        let names: BTreeSet<_> = ALL.iter().map(|t| t.short_name).collect();
        assert_eq!(names.len(), ALL.len(), "a test twice");
        for t in ALL {
            let subs: BTreeSet<_> = t.subtests.iter().map(|s| s.name).collect();
            assert_eq!(
                subs.len(),
                t.subtests.len(),
                "{}: a subtest twice",
                t.short_name
            );
        }
    }

    #[test]
    fn the_fixture_is_upstreams() {
        let f = Fixture::upstream();
        assert_eq!(f.namespaces.len(), 5);
        let keys: Vec<String> = f.pods.iter().map(|p| p.key()).collect();
        assert_eq!(
            keys,
            [
                "gryffindor/harry-potter-0",
                "gryffindor/harry-potter-1",
                "slytherin/draco-malfoy-0",
                "slytherin/draco-malfoy-1",
                "hufflepuff/cedric-diggory-0",
                "hufflepuff/cedric-diggory-1",
                "ravenclaw/luna-lovegood-0",
                "ravenclaw/luna-lovegood-1",
                "forbidden-forrest/centaur-0",
                "forbidden-forrest/centaur-1",
            ]
        );
        let pod = f.pod("ravenclaw/luna-lovegood-1");
        assert_eq!(pod.ip, Some("10.0.4.11".parse().unwrap()));
        assert_eq!(
            pod.servers,
            [
                (Proto::Tcp, 80),
                (Proto::Tcp, 8080),
                (Proto::Udp, 5353),
                (Proto::Udp, 53),
                (Proto::Sctp, 9003),
                (Proto::Sctp, 9005),
            ]
        );
        let centaur = f.pod("forbidden-forrest/centaur-1");
        assert!(centaur.host_network && centaur.ip.is_none());
        assert_eq!(
            centaur.servers,
            [
                (Proto::Tcp, 34345),
                (Proto::Tcp, 34346),
                (Proto::Tcp, 34348),
                (Proto::Udp, 34347),
                (Proto::Tcp, 34350),
                (Proto::Udp, 34349),
                (Proto::Sctp, 34351),
                (Proto::Sctp, 34352),
            ]
        );
        // The named ports the experimental tests use.
        let ports = &pod.spec["containers"];
        let named: Vec<(String, u64)> = ports
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                let name = p["name"].as_str().unwrap().to_owned();
                (name, p["containerPort"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(named, [("web".to_owned(), 80), ("dns".to_owned(), 53)]);
    }

    /// Every probe names pods of the fixture and a port its server serves; every edit
    /// applies (its policy exists, its indices are in range) in every family.
    #[test]
    fn every_step_fits_the_fixture_and_the_manifests() {
        let f = Fixture::upstream();
        for t in ALL {
            for family in Family::ALL {
                let mut state = ClusterState::new(&f, t.manifests);
                for (i, sub) in t.subtests.iter().enumerate() {
                    let mut replay = ClusterState::new(&f, t.manifests);
                    for e in t.start_of(i) {
                        replay.apply(e, &f, family);
                    }
                    assert_eq!(
                        replay.files(&f, family),
                        state.files(&f, family),
                        "{}: subtest {i} does not start where the ones before it end",
                        t.short_name
                    );
                    for step in sub.steps {
                        match step {
                            Step::Edit(e) => state.apply(e, &f, family),
                            Step::Poke(p) => {
                                let client = f.pod(p.client);
                                assert!(!client.host_network, "{p:?}");
                                let server = f.pod(p.server);
                                assert!(
                                    server.servers.contains(&(p.proto, p.port)),
                                    "{}: {p:?}: the server does not serve it",
                                    t.short_name
                                );
                            }
                        }
                    }
                }
                for file in state.files(&f, family).values() {
                    let docs: Vec<serde_json::Value> =
                        serde_saphyr::from_multiple(file).unwrap_or_else(|e| panic!("{e}\n{file}"));
                    assert!(!docs.is_empty());
                }
            }
        }
    }
}
