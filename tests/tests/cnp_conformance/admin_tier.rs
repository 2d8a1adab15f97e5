//! The standard Admin-tier tests: upstream's `conformance/tests/admin-network-policy-
//! standard-*.go` (10 tests, 53 subtests), transcribed step by step (one probe a line, so
//! the data is not left to rustfmt). Comments are upstream's (some are copy slips there, as
//! "ALLOWED" above a probe that expects a drop: the boolean is what upstream asserts).

use super::{
    manifests::{
        ADMIN_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES, ADMIN_TIER_STANDARD_EGRESS_SCTP_RULES,
        ADMIN_TIER_STANDARD_EGRESS_TCP_RULES, ADMIN_TIER_STANDARD_EGRESS_UDP_RULES,
        ADMIN_TIER_STANDARD_GRESS_RULES_COMBINED, ADMIN_TIER_STANDARD_INGRESS_SCTP_RULES,
        ADMIN_TIER_STANDARD_INGRESS_TCP_RULES, ADMIN_TIER_STANDARD_INGRESS_UDP_RULES,
        ADMIN_TIER_STANDARD_PRIORITY_FIELD, API_INTEGRATION_STANDARD_ANP_NP_BANP,
    },
    suite::{Action::*, Dir::*, Feature::*, Proto::*, Subtest, Test, *},
};

/// `CNPAdminTierEgressInlineCIDRPeers` (`conformance/tests/admin-network-policy-standard-egress-inline-cidr-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_INLINE_CIDR_PEERS: Test = Test {
    short_name: "CNPAdminTierEgressInlineCIDRPeers",
    description: "Tests support for egress traffic to CIDR peers using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES],
    subtests: &[
        Subtest {
            name: "Should support a 'deny-egress' rule policy for egress-cidr-peer",
            steps: &[
                // harry-potter-1 is our client pod in gryffindor namespace
                // Let us pick a pod in ravenclaw namespace and try to connect, it won't work
                // ensure egress is DENIED to 0.0.0.0/0 from gryffindor; egressRule at index1 should take effect
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-0", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "ravenclaw/luna-lovegood-0", 53, false),
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-0", 9003, false),
                // Let us pick a pod in hufflepuff namespace and try to connect, it won't work
                // ensure egress is DENIED to 0.0.0.0/0 from gryffindor; egressRule at index1 should take effect
                // cedric-diggory-0 is our server pod in hufflepuff namespace
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-0", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-0", 53, false),
                poke("gryffindor/harry-potter-1", Sctp, "hufflepuff/cedric-diggory-0", 9003, false),
                // Let us pick a pod in slytherin namespace and try to connect, it will work since we have a higher priority allow rule
                // ensure traffic is allowed to slytherin; egressRule at index0 should take effect
                // draco-malfoy-0 is our server pod in slytherin namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 80, true),
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 53, true),
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9003, true),
                // update namespace label for slytherin to "conformance-house": "denied-namespace-label" to no longer match ingressRule at index0
                set_namespace_labels("slytherin", &[("conformance-house", "denied-namespace-label")]),
                // ensure traffic is no longer allowed to slytherin since the namespace label no longer matches
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 53, false),
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9003, false),
                // update namespace label for slytherin back to "conformance-house": "slytherin" to match ingressRule at index0 again
                set_namespace_labels("slytherin", &[("conformance-house", "slytherin")]),
                // ensure traffic is allowed to slytherin again since the namespace label matches again
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 80, true),
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 53, true),
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9003, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-egress' rule policy for egress-cidr-peer",
            steps: &[
                // To test allow CIDR rule, insert the following rule at index0
                // - name: "allow-egress-to-specific-podIPs"
                // action: "Accept"
                // to:
                // - networks:
                // - luna-lovegood-0.IP
                // - cedric-diggory-0.IP
                // insert new rule at index0; append the rest of the rules in the inline-cidr-as-peers-example
                prepend_networks("inline-cidr-as-peers-example", "allow-egress-to-specific-podIPs", Accept, &["ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0"]),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to luna-lovegood-0.IP and cedric-diggory-0.IP
                // new egressRule at index0 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-0", 80, true),
                poke("gryffindor/harry-potter-1", Udp, "ravenclaw/luna-lovegood-0", 53, true),
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-0", 9003, true),
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-0", 80, true),
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-0", 53, true),
                poke("gryffindor/harry-potter-1", Sctp, "hufflepuff/cedric-diggory-0", 9003, true),
                // ensure other pods are still unreachable: luna-lovegood-1.IP and cedric-diggory-1.IP
                // deny at egress rule index2 should kick in
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to luna-lovegood-0.IP and cedric-diggory-0.IP
                // new egressRule at index0 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-1", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "ravenclaw/luna-lovegood-1", 53, false),
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-1", 9003, false),
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-1", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-1", 53, false),
                poke("gryffindor/harry-potter-1", Sctp, "hufflepuff/cedric-diggory-1", 9003, false),
            ],
        },
    ],
};

/// `CNPAdminTierEgressSCTP` (`conformance/tests/admin-network-policy-standard-egress-sctp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_SCTP: Test = Test {
    short_name: "CNPAdminTierEgressSCTP",
    description: "Tests support for egress traffic (SCTP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_EGRESS_SCTP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure egress is ALLOWED to gryffindor from ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Sctp, "gryffindor/harry-potter-0", 9003, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-0", 9005, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-egress' policy for SCTP protocol at the specified port",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure egress is ALLOWED to hufflepuff from ravenclaw at port 9003; egressRule at index5 should take effect
                poke("ravenclaw/luna-lovegood-0", Sctp, "hufflepuff/cedric-diggory-1", 9003, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                // ensure egress is DENIED to hufflepuff from ravenclaw for rest of the traffic; egressRule at index6 should take effect
                poke("ravenclaw/luna-lovegood-1", Sctp, "hufflepuff/cedric-diggory-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-egress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // swap rules at index0 and index1
                swap("egress-sctp", Egress, 0, 1),
                // luna-lovegood-0 is our client pod in gryffindor namespace
                // ensure egress is DENIED to gryffindor from ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Sctp, "gryffindor/harry-potter-1", 9003, false),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-egress' policy for SCTP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure egress to slytherin is DENIED from ravenclaw at port 9003; egressRule at index3 should take effect
                poke("ravenclaw/luna-lovegood-0", Sctp, "slytherin/draco-malfoy-0", 9003, false),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                // ensure egress to slytherin is ALLOWED from ravenclaw for rest of the traffic; matches no rules hence allowed
                poke("ravenclaw/luna-lovegood-1", Sctp, "slytherin/draco-malfoy-0", 9005, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-egress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // swap rules at index0 and index2
                swap("egress-sctp", Egress, 0, 2),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure egress is PASSED from gryffindor to ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Sctp, "gryffindor/harry-potter-1", 9003, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-1", 9005, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' policy for SCTP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // swap rules at index3 and index4
                swap("egress-sctp", Egress, 3, 4),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure egress to slytherin is PASSED from ravenclaw at port 9003; egressRule at index3 should take effect
                poke("ravenclaw/luna-lovegood-0", Sctp, "slytherin/draco-malfoy-0", 9003, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                // ensure egress to slytherin is ALLOWED from ravenclaw for rest of the traffic; matches no rules hence allowed
                poke("ravenclaw/luna-lovegood-1", Sctp, "slytherin/draco-malfoy-0", 9005, true),
            ],
        },
    ],
};

/// `CNPAdminTierEgressTCP` (`conformance/tests/admin-network-policy-standard-egress-tcp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_TCP: Test = Test {
    short_name: "CNPAdminTierEgressTCP",
    description: "Tests support for egress traffic (TCP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_EGRESS_TCP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to ravenclaw from gryffindor
                // egressRule at index0 will take precedence over egressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-0", 80, true),
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-egress' policy for TCP protocol at the specified port",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 8080; egressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "hufflepuff/cedric-diggory-1", 8080, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-1", 80, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-egress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1
                swap("egress-tcp", Egress, 0, 1),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is DENIED to ravenclaw from gryffindor
                // egressRule at index0 will take precedence over egressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-1", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-1", 8080, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-egress' policy for TCP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 80; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-egress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // swap rules at index0 and index2
                swap("egress-tcp", Egress, 0, 2),
                // harry-potter-0 is our server pod in gryffindor namespace
                // ensure egress is PASSED from gryffindor to ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-0", 80, true),
                // harry-potter-1 is our server pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "ravenclaw/luna-lovegood-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' policy for TCP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // swap rules at index3 and index4
                swap("egress-tcp", Egress, 3, 4),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is PASSED to slytherin at port 80; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is ALLOWED to slytherin for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
            ],
        },
    ],
};

/// `CNPAdminTierEgressUDP` (`conformance/tests/admin-network-policy-standard-egress-udp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_EGRESS_UDP: Test = Test {
    short_name: "CNPAdminTierEgressUDP",
    description: "Tests support for egress traffic (UDP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_EGRESS_UDP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-egress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress is ALLOWED to ravenclaw from hufflepuff
                // egressRule at index0 will take precedence over egressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("hufflepuff/cedric-diggory-0", Udp, "ravenclaw/luna-lovegood-0", 53, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                poke("hufflepuff/cedric-diggory-1", Udp, "ravenclaw/luna-lovegood-0", 5353, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-egress' policy for UDP protocol at the specified port",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress is ALLOWED to gryffindor from hufflepuff at port 53; egressRule at index5
                poke("hufflepuff/cedric-diggory-0", Udp, "gryffindor/harry-potter-1", 53, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure egress is DENIED to gryffindor from hufflepuff for rest of the traffic; egressRule at index6
                poke("hufflepuff/cedric-diggory-1", Udp, "gryffindor/harry-potter-1", 5353, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1
                swap("egress-udp", Egress, 0, 1),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress is DENIED to ravenclaw to hufflepuff
                // egressRule at index0 will take precedence over egressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("hufflepuff/cedric-diggory-0", Udp, "ravenclaw/luna-lovegood-1", 53, false),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                poke("hufflepuff/cedric-diggory-1", Udp, "ravenclaw/luna-lovegood-1", 5353, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-egress' policy for UDP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress to slytherin is DENIED from hufflepuff at port 80; egressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "slytherin/draco-malfoy-0", 5353, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress to slytherin is ALLOWED from hufflepuff for rest of the traffic; matches no rules hence allowed
                poke("hufflepuff/cedric-diggory-1", Udp, "slytherin/draco-malfoy-0", 53, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-egress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index2
                swap("egress-udp", Egress, 0, 2),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress is PASSED to ravenclaw from hufflepuff
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("hufflepuff/cedric-diggory-0", Udp, "ravenclaw/luna-lovegood-1", 5353, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                poke("hufflepuff/cedric-diggory-1", Udp, "ravenclaw/luna-lovegood-1", 53, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' policy for UDP protocol at the specified port",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // swap rules at index3 and index4
                swap("egress-udp", Egress, 3, 4),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress to slytherin is PASSED from hufflepuff at port 5353; egressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "slytherin/draco-malfoy-0", 5353, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure egress to slytherin is ALLOWED from hufflepuff for rest of the traffic; matches no rules hence allowed
                poke("hufflepuff/cedric-diggory-1", Udp, "slytherin/draco-malfoy-0", 53, true),
            ],
        },
    ],
};

/// `CNPAdminTierGress` (`conformance/tests/admin-network-policy-standard-gress-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_GRESS: Test = Test {
    short_name: "CNPAdminTierGress",
    description: "Tests support for combined ingress and egress traffic rules in the cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_GRESS_RULES_COMBINED],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-gress' policy across different protocols",
            steps: &[
                // First; let's test egress works!
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // harry-potter-x is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to ravenclaw from gryffindor
                // egressRule at index0 will take precedence over egressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-0", 80, true),
                poke("gryffindor/harry-potter-1", Udp, "ravenclaw/luna-lovegood-0", 53, true),
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-0", 9003, true),
                // Second; let's test ingress works!
                // harry-potter-0 is our server pod in gryffindor namespace
                // luna-lovegood-x is our client pod in ravenclaw namespace
                // ensure ingress is ALLOWED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                poke("ravenclaw/luna-lovegood-1", Udp, "gryffindor/harry-potter-0", 53, true),
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-0", 9003, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-gress' policy across different protocols at the specified ports",
            steps: &[
                // First; let's test egress works!
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 8080; egressRule at index5
                poke("gryffindor/harry-potter-0", Tcp, "hufflepuff/cedric-diggory-1", 8080, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-1", 80, false),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 5353; egressRule at index5
                poke("gryffindor/harry-potter-0", Udp, "hufflepuff/cedric-diggory-1", 5353, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-1", 53, false),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 9003; egressRule at index5
                poke("gryffindor/harry-potter-0", Sctp, "hufflepuff/cedric-diggory-1", 9003, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6
                poke("gryffindor/harry-potter-1", Sctp, "hufflepuff/cedric-diggory-1", 9005, false),
                // Second; let's test ingress works!
                // harry-potter-1 is our server pod in gryffindor namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 80; ingressRule at index5
                poke("hufflepuff/cedric-diggory-0", Tcp, "gryffindor/harry-potter-1", 80, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6
                poke("hufflepuff/cedric-diggory-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 5353; ingressRule at index5
                poke("hufflepuff/cedric-diggory-0", Udp, "gryffindor/harry-potter-1", 5353, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6
                poke("hufflepuff/cedric-diggory-1", Udp, "gryffindor/harry-potter-1", 53, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 9003; ingressRule at index5
                poke("hufflepuff/cedric-diggory-0", Sctp, "gryffindor/harry-potter-1", 9003, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6
                poke("hufflepuff/cedric-diggory-1", Sctp, "gryffindor/harry-potter-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-gress' policy across different protocols",
            steps: &[
                // First; let's test egress works!
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1 for both ingress and egress
                swap("gress-rules", Egress, 0, 1),
                swap("gress-rules", Ingress, 0, 1),
                // harry-potter-x is our client pod in gryffindor namespace
                // ensure egress is DENIED to ravenclaw from gryffindor
                // egressRule at index0 will take precedence over egressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-1", 80, false),
                poke("gryffindor/harry-potter-1", Udp, "ravenclaw/luna-lovegood-1", 53, false),
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-1", 9003, false),
                // Second; let's test ingress works!
                // harry-potter-1 is our server pod in gryffindor namespace
                // luna-lovegood-x is our client pod in ravenclaw namespace
                // ensure ingress is DENIED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-1", 80, false),
                poke("ravenclaw/luna-lovegood-1", Udp, "gryffindor/harry-potter-1", 53, false),
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-1", 9003, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-gress' policy across different protocols at the specified ports",
            steps: &[
                // First; let's test egress works!
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 80; egressRule at index3
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 53; egressRule at index3
                poke("gryffindor/harry-potter-0", Udp, "slytherin/draco-malfoy-0", 53, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 5353, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 53; egressRule at index3
                poke("gryffindor/harry-potter-0", Sctp, "slytherin/draco-malfoy-0", 9003, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9005, true),
                // Second; let's test ingress works!
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3
                poke("slytherin/draco-malfoy-0", Udp, "gryffindor/harry-potter-0", 53, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Udp, "gryffindor/harry-potter-0", 5353, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3
                poke("slytherin/draco-malfoy-0", Sctp, "gryffindor/harry-potter-0", 9003, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Sctp, "gryffindor/harry-potter-0", 9005, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-gress' policy across different protocols",
            steps: &[
                // First; let's test egress works!
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // swap rules at index0 and index2 for both ingress and egress
                swap("gress-rules", Egress, 0, 2),
                swap("gress-rules", Ingress, 0, 2),
                // harry-potter-0 is our server pod in gryffindor namespace
                // ensure egress is PASSED from gryffindor to ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Tcp, "ravenclaw/luna-lovegood-0", 80, true),
                // harry-potter-0 is our server pod in gryffindor namespace
                // ensure egress is PASSED from gryffindor to ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Udp, "ravenclaw/luna-lovegood-0", 5353, true),
                // harry-potter-0 is our server pod in gryffindor namespace
                // ensure egress is PASSED from gryffindor to ravenclaw
                // egressRule at index0 will take precedence over egressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-0", 9003, true),
                // Second; let's test ingress works!
                // harry-potter-0 is our server pod in gryffindor namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is PASSED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Udp, "gryffindor/harry-potter-0", 53, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Sctp, "gryffindor/harry-potter-0", 9003, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-gress' policy across different protocols at the specified ports",
            steps: &[
                // First; let's test egress works!
                // draco-malfoy-0 is our server pod in slytherin namespace
                // swap rules at index3 and index4
                swap("gress-rules", Egress, 3, 4),
                swap("gress-rules", Ingress, 3, 4),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is PASSED to slytherin at port 80; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is ALLOWED to slytherin for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is PASSED to slytherin at port 53; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Udp, "slytherin/draco-malfoy-0", 53, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is ALLOWED to slytherin for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 5353, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is PASSED to slytherin at port 80; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Sctp, "slytherin/draco-malfoy-0", 9003, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress from gryffindor is ALLOWED to slytherin for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9005, true),
                // Second; let's test ingress works!
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to gryffindor at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to gryffindor at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Udp, "gryffindor/harry-potter-0", 53, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Udp, "gryffindor/harry-potter-0", 5353, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to gryffindor at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Sctp, "gryffindor/harry-potter-0", 9003, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Sctp, "gryffindor/harry-potter-0", 9005, true),
            ],
        },
    ],
};

/// `CNPAdminTierIngressSCTP` (`conformance/tests/admin-network-policy-standard-ingress-sctp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_INGRESS_SCTP: Test = Test {
    short_name: "CNPAdminTierIngressSCTP",
    description: "Tests support for ingress traffic (SCTP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_INGRESS_SCTP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-ingress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is ALLOWED from gryffindor to ravenclaw
                // ingressRule at index0 will take precedence over ingressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-0", 9003, true),
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-0", 9005, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-ingress' policy for SCTP protocol at the specified port",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to ravenclaw at port 9003; ingressRule at index5 should take effect
                poke("hufflepuff/cedric-diggory-0", Sctp, "ravenclaw/luna-lovegood-1", 9003, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to ravenclaw for rest of the traffic; ingressRule at index6 should take effect
                poke("hufflepuff/cedric-diggory-1", Sctp, "ravenclaw/luna-lovegood-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-ingress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1
                swap("ingress-sctp", Ingress, 0, 1),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is DENIED from gryffindor to ravenclaw
                // ingressRule at index0 will take precedence over ingressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-1", 9003, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-ingress' policy for SCTP protocol at the specified port",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to ravenclaw at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Sctp, "ravenclaw/luna-lovegood-0", 9003, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to ravenclaw for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Sctp, "ravenclaw/luna-lovegood-0", 9005, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-ingress' policy for SCTP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index2
                swap("ingress-sctp", Ingress, 0, 2),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is PASSED from gryffindor to ravenclaw
                // ingressRule at index0 will take precedence over ingressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("gryffindor/harry-potter-0", Sctp, "ravenclaw/luna-lovegood-1", 9003, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Sctp, "ravenclaw/luna-lovegood-1", 9005, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-ingress' policy for SCTP protocol at the specified port",
            steps: &[
                // luna-lovegood-0 is our server pod in ravenclaw namespace
                // swap rules at index3 and index4
                swap("ingress-sctp", Ingress, 3, 4),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to ravenclaw at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Sctp, "ravenclaw/luna-lovegood-0", 9003, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to ravenclaw for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Sctp, "ravenclaw/luna-lovegood-0", 9005, true),
            ],
        },
    ],
};

/// `CNPAdminTierIngressTCP` (`conformance/tests/admin-network-policy-standard-ingress-tcp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_INGRESS_TCP: Test = Test {
    short_name: "CNPAdminTierIngressTCP",
    description: "Tests support for ingress traffic (TCP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_INGRESS_TCP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is ALLOWED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                poke("ravenclaw/luna-lovegood-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-ingress' policy for TCP protocol at the specified port",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 80; ingressRule at index5 should take effect
                poke("hufflepuff/cedric-diggory-0", Tcp, "gryffindor/harry-potter-1", 80, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6 should take effect
                poke("hufflepuff/cedric-diggory-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // swap rules at index0 and index1
                swap("ingress-tcp", Ingress, 0, 1),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is DENIED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-1", 80, false),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-ingress' policy for TCP protocol at the specified port",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-ingress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // swap rules at index0 and index2
                swap("ingress-tcp", Ingress, 0, 2),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is PASSED from ravenclaw to gryffindor
                // ingressRule at index0 will take precedence over ingressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-ingress' policy for TCP protocol at the specified port",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // swap rules at index3 and index4
                swap("ingress-tcp", Ingress, 3, 4),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to gryffindor at port 9003; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
    ],
};

/// `CNPAdminTierIngressUDP` (`conformance/tests/admin-network-policy-standard-ingress-udp-rules.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_INGRESS_UDP: Test = Test {
    short_name: "CNPAdminTierIngressUDP",
    description: "Tests support for ingress traffic (UDP protocol) using cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_INGRESS_UDP_RULES],
    subtests: &[
        Subtest {
            name: "Should support an 'allow-ingress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // cedric-diggory-0 is our server pod in hufflepuff namespace
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is ALLOWED from ravenclaw to hufflepuff
                // ingressRule at index0 will take precedence over ingressRule at index1; thus ALLOW takes precedence over DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Udp, "hufflepuff/cedric-diggory-0", 53, true),
                poke("ravenclaw/luna-lovegood-1", Udp, "hufflepuff/cedric-diggory-0", 5353, true),
            ],
        },
        Subtest {
            name: "Should support an 'allow-ingress' policy for UDP protocol at the specified port",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is ALLOWED from gryffindor to hufflepuff at port 53; ingressRule at index5
                poke("gryffindor/harry-potter-0", Udp, "hufflepuff/cedric-diggory-1", 53, true),
                // harry-potter-1 is our client pod in gryfindor namespace
                // ensure ingress is DENIED from gryffindor to hufflepuff for rest of the traffic; ingressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-1", 5353, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-ingress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // swap rules at index0 and index1
                swap("ingress-udp", Ingress, 0, 1),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is DENIED from ravenclaw to hufflepuff
                // ingressRule at index0 will take precedence over ingressRule at index1; thus DENY takes precedence over ALLOW since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Udp, "hufflepuff/cedric-diggory-1", 53, false),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Udp, "hufflepuff/cedric-diggory-1", 5353, false),
            ],
        },
        Subtest {
            name: "Should support a 'deny-ingress' policy for UDP protocol at the specified port",
            steps: &[
                // cedric-diggory-0 is our server pod in hufflepuff namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to hufflepuff at port 80; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Udp, "hufflepuff/cedric-diggory-0", 5353, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to hufflepuff for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Udp, "hufflepuff/cedric-diggory-0", 53, true),
            ],
        },
        Subtest {
            name: "Should support an 'pass-ingress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // cedric-diggory-1 is our server pod in hufflepuff namespace
                // swap rules at index0 and index2
                swap("ingress-udp", Ingress, 0, 2),
                // luna-lovegood-0 is our client pod in ravenclaw namespace
                // ensure ingress is PASSED from ravenclaw to hufflepuff
                // ingressRule at index0 will take precedence over ingressRule at index1&index2; thus PASS takes precedence over ALLOW/DENY since rules are ordered
                poke("ravenclaw/luna-lovegood-0", Udp, "hufflepuff/cedric-diggory-1", 5353, true),
                // luna-lovegood-1 is our client pod in ravenclaw namespace
                poke("ravenclaw/luna-lovegood-1", Udp, "hufflepuff/cedric-diggory-1", 53, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-ingress' policy for UDP protocol at the specified port",
            steps: &[
                // cedric-diggory-0 is our server pod in hufflepuff namespace
                // swap rules at index3 and index4
                swap("ingress-udp", Ingress, 3, 4),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is PASSED to hufflepuff at port 5353; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Udp, "hufflepuff/cedric-diggory-0", 5353, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to hufflepuff for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Udp, "hufflepuff/cedric-diggory-0", 53, true),
            ],
        },
    ],
};

/// `CNPAdminTierIntegration` (`conformance/tests/admin-network-policy-standard-integration.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_INTEGRATION: Test = Test {
    short_name: "CNPAdminTierIntegration",
    description: "Tests integration support for gress traffic between admin CNP, NP and baseline CNP using PASS action based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[API_INTEGRATION_STANDARD_ANP_NP_BANP],
    subtests: &[
        Subtest {
            name: "Should Deny traffic from slytherin to gryffindor respecting admin CNP",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress is DENIED to gryffindor from slytherin
                // inressRule at index0 will take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, false),
            ],
        },
        Subtest {
            name: "Should Deny traffic to slytherin from gryffindor respecting admin CNP",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is DENIED to slytherin from gryffindor
                // egressRule at index0 will take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, false),
            ],
        },
        Subtest {
            name: "Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy",
            steps: &[
                // and alters the ingress rule action to "pass"
                // change ingress rule from "deny" to "pass"
                set_action("pass-example", Ingress, 0, Pass),
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress is PASSED to gryffindor from slytherin - the underlying network policy ALLOW should take effect
                // inressRule at index0 will take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' policy for admin CNP and respect the match for network policy",
            steps: &[
                // and alters the egress rule action to "pass"
                // change egress rule from "deny" to "pass"
                set_action("pass-example", Egress, 0, Pass),
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is PASSED from gryffindor to slytherin - the underlying network policy ALLOW should take effect
                // egressRule at index0 will take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
            ],
        },
        Subtest {
            name: "Should support a 'pass-ingress' policy for admin CNP and respect the match for baseline cluster network policy",
            steps: &[
                // delete network policy so that baseline CNP takes effect
                delete_network_policy("gryffindor", "allow-gress-from-to-slytherin-to-gryffindor"),
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress is PASSED to gryffindor from slytherin - the baseline cluster network policy DENY should take effect
                // inressRule at index0 will take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, false),
            ],
        },
        Subtest {
            name: "Should support a 'pass-egress' policy for admin CNP and respect the match for baseline cluster network policy",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is PASSED to gryffindor from slytherin - the underlying baseline cluster network policy DENY should take effect
                // egressRule at index0 will take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, false),
            ],
        },
    ],
};

/// `CNPAdminTierPriorityField` (`conformance/tests/admin-network-policy-standard-priority.go`).
#[rustfmt::skip]
pub const CNP_ADMIN_TIER_PRIORITY_FIELD: Test = Test {
    short_name: "CNPAdminTierPriorityField",
    description: "Tests support for cluster network policy API's .spec.priority field based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[ADMIN_TIER_STANDARD_PRIORITY_FIELD],
    subtests: &[
        Subtest {
            name: "Should Deny traffic from slytherin to gryffindor respecting admin CNP",
            steps: &[
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress is DENIED to gryffindor from slytherin
                // inressRule at index0 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, false),
            ],
        },
        Subtest {
            name: "Should Deny traffic to slytherin from gryffindor respecting admin CNP",
            steps: &[
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is DENIED to gryffindor from slytherin
                // egressRule at index0 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, false),
            ],
        },
        Subtest {
            name: "Should respect admin CNP priority field; thus passing both ingress and egress traffic over to baseline CNP",
            steps: &[
                // change priority from 60 to 40
                set_priority("old-priority-60-new-priority-40-example", 40),
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress is PASSED to gryffindor from slytherin - the baseline cluster network policy ALLOW should take effect
                // inressRule at index0 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, true),
                // draco-malfoy-1 is our client pod in slytherin namespace
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
                // draco-malfoy-0 is our server pod in slytherin namespace
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure ingress is PASSED to gryffindor from slytherin - the baseline cluster network policy ALLOW should take effect
                // egressRule at index0 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
            ],
        },
    ],
};
