//! The experimental tests: upstream's `conformance/tests/*-experimental-*.go` (6 tests, 9
//! subtests; features `ClusterNetworkPolicyNamedPorts` and
//! `ClusterNetworkPolicyEgressNodePeers`), transcribed step by step (one probe a line, so
//! the data is not left to rustfmt). Comments are upstream's; `added_poke`s are not
//! upstream's probes (see the table at the top of `cnp_conformance.rs`).

use super::{
    manifests::{
        ADMIN_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES, ADMIN_TIER_STANDARD_EGRESS_TCP_RULES,
        ADMIN_TIER_STANDARD_INGRESS_UDP_RULES, BASELINE_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES,
        BASELINE_TIER_STANDARD_EGRESS_UDP_RULES, BASELINE_TIER_STANDARD_INGRESS_TCP_RULES, HNP,
    },
    suite::{Dir::*, Feature::*, Proto::*, Subtest, Test, *},
};

/// `CNPAdminTierEgressNamedPort` (`conformance/tests/admin-network-policy-experimental-egress-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_NAMED_PORT: Test = Test {
    short_name: "CNPAdminTierEgressNamedPort",
    description: "Tests support for egress traffic on a named port using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyNamedPorts],
    manifests: &[ADMIN_TIER_STANDARD_EGRESS_TCP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' policy for named port",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // replace the tcp port 8080 rule as named port rule which translate to tcp port 80 instead
                named_port("egress-tcp", Egress, 5, "web"),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at the web port, which is defined as TCP at port 80 in pod spec
                // egressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "hufflepuff/cedric-diggory-1", 80, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-1", 8080, false),
            ],
        },
    ],
};

/// `CNPAdminTierEgressNodePeers` (`conformance/tests/admin-network-policy-experimental-egress-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_NODE_PEERS: Test = Test {
    short_name: "CNPAdminTierEgressNodePeers",
    description: "Tests support for egress traffic to node peers using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyEgressNodePeers],
    manifests: &[ADMIN_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES],
    // centaur-1 is our server host-networked pod in forbidden-forrest namespace
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' rule policy for egress-node-peer",
            steps: &[
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to forbidden-forrest from gryffindor at the s.HostNetworkPorts[0] TCP port
                // egressRule at index0 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-1", HNP[0], true),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-0", HNP[0], true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' rule policy for egress-node-peer",
            steps: &[
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is PASSED to forbidden-forrest from gryffindor at the s.HostNetworkPorts[2] UDP port
                // egressRule at index1 should take effect
                poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-1", HNP[2], true),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-0", HNP[2], true),
            ],
        },
        Subtest {
            name: "Should support a 'deny-egress' rule policy for egress-node-peer",
            steps: &[
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to rest of the nodes from gryffindor; egressRule at index2 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-1", HNP[1], false),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-0", HNP[1], false),
                poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-1", HNP[4], false),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-0", HNP[4], false),
                poke("gryffindor/harry-potter-1", Sctp, "forbidden-forrest/centaur-1", HNP[6], false),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Sctp, "forbidden-forrest/centaur-0", HNP[6], false),
            ],
        },
    ],
};

/// `CNPAdminTierIngressNamedPort` (`conformance/tests/admin-network-policy-experimental-ingress-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_INGRESS_NAMED_PORT: Test = Test {
    short_name: "CNPAdminTierIngressNamedPort",
    description: "Tests support for ingress traffic on a named port using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyNamedPorts],
    manifests: &[ADMIN_TIER_STANDARD_INGRESS_UDP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-ingress' policy for named port",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // rewrite the udp port 53 rule as named port rule
                named_port("ingress-udp", Ingress, 5, "dns"),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is ALLOWED from gryffindor to hufflepuff at the dns port, which is defined as UDP at port 53 in pod spec
                // modified ingressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Udp, "hufflepuff/cedric-diggory-1", 53, true),
                // harry-potter-1 is our client pod in gryfindor namespace
                // ensure ingress is DENIED from gryffindor to hufflepuff for rest of the traffic; ingressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-1", 5353, false),
            ],
        },
    ],
};

/// `CNPBaselineTierEgressNamedPort` (`conformance/tests/baseline-admin-network-policy-experimental-egress-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_NAMED_PORT: Test = Test {
    short_name: "CNPBaselineTierEgressNamedPort",
    description: "Tests support for egress traffic on a named port using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyNamedPorts],
    manifests: &[BASELINE_TIER_STANDARD_EGRESS_UDP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' policy for named port",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // rewrite the udp port 53 rule as named port rule
                named_port("default", Egress, 3, "dns"),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress is ALLOWED to gryffindor from hufflepuff at the dns port, which is defined as UDP at port 53 in pod spec
                // modified ingressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "gryffindor/harry-potter-1", 53, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure egress is DENIED to gryffindor from hufflepuff for rest of the traffic; egressRule at index4 should take effect
                poke("hufflepuff/cedric-diggory-1", Udp, "gryffindor/harry-potter-1", 5353, false),
            ],
        },
    ],
};

/// `CNPBaselineTierEgressNodePeers` (`conformance/tests/baseline-admin-network-policy-experimental-egress-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_NODE_PEERS: Test = Test {
    short_name: "CNPBaselineTierEgressNodePeers",
    description: "Tests support for egress traffic to node peers using  baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyEgressNodePeers],
    manifests: &[BASELINE_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES],
    // centaur-1 is our server host-networked pod in forbidden-forrest namespace
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' rule policy for egress-node-peer",
            steps: &[
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to forbidden-forrest from gryffindor at the s.HostNetworkPorts[0] TCP port
                // egressRule at index0 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "forbidden-forrest/centaur-1", HNP[0], true),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-0", Tcp, "forbidden-forrest/centaur-0", HNP[0], true),
                poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-1", HNP[1], true),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Tcp, "forbidden-forrest/centaur-0", HNP[1], true),
            ],
        },
        Subtest {
            name: "Should support a 'deny-egress' rule policy for egress-node-peer",
            steps: &[
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to rest of the nodes from gryffindor; egressRule at index1 should take effect
                poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-1", HNP[4], false),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Udp, "forbidden-forrest/centaur-0", HNP[4], false),
                poke("gryffindor/harry-potter-1", Sctp, "forbidden-forrest/centaur-1", HNP[6], false),
                // added: the same probe to centaur-0, the host-network pod on the agent's own node
                added_poke("gryffindor/harry-potter-1", Sctp, "forbidden-forrest/centaur-0", HNP[6], false),
            ],
        },
    ],
};

/// `CNPBaselineTierIngressNamedPort` (`conformance/tests/baseline-admin-network-policy-experimental-ingress-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_INGRESS_NAMED_PORT: Test = Test {
    short_name: "CNPBaselineTierIngressNamedPort",
    description: "Tests support for ingress traffic on a named port using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy, ClusterNetworkPolicyNamedPorts],
    manifests: &[BASELINE_TIER_STANDARD_INGRESS_TCP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-ingress' policy for named port",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // rewrite the tcp port 80 rule as named port rule
                named_port("default", Ingress, 3, "web"),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at at the web port, which is defined as TCP at port 80 in pod spec
                // ingressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Tcp, "gryffindor/harry-potter-1", 80, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index4 should take effect
                poke("hufflepuff/cedric-diggory-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
            ],
        },
    ],
};
