//! The upstream ClusterNetworkPolicy conformance suite, as data (the harness that runs it
//! on the virtual node comes next). Source: kubernetes-sigs/network-policy-api
//! `conformance/` at commit 0eec1b0e5fa92715b4c0f4c48d3c8d2913ed2159.

mod cnp_conformance {
    pub mod admin_tier;
    pub mod baseline_tier;
    pub mod experimental;
    pub mod manifests;
    pub mod model;
    pub mod suite;
}

use cnp_conformance::{admin_tier::*, baseline_tier::*, experimental::*, suite::Test};

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
