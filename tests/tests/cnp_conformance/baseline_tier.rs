//! The standard Baseline-tier tests: upstream's `conformance/tests/baseline-admin-network-
//! policy-standard-*.go` (8 tests, 30 subtests), transcribed step by step (one probe a
//! line, so the data is not left to rustfmt). Comments are upstream's (some are copy slips
//! there: the boolean is what upstream asserts).

use super::{
    manifests::{
        BASELINE_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES, BASELINE_TIER_STANDARD_EGRESS_SCTP_RULES,
        BASELINE_TIER_STANDARD_EGRESS_TCP_RULES, BASELINE_TIER_STANDARD_EGRESS_UDP_RULES,
        BASELINE_TIER_STANDARD_GRESS_RULES_COMBINED, BASELINE_TIER_STANDARD_INGRESS_SCTP_RULES,
        BASELINE_TIER_STANDARD_INGRESS_TCP_RULES, BASELINE_TIER_STANDARD_INGRESS_UDP_RULES,
    },
    suite::{Action::*, Dir::*, Feature::*, Proto::*, Subtest, Test, *},
};

/// `CNPBaselineTierEgressInlineCIDRPeers` (`conformance/tests/baseline-admin-network-policy-standard-egress-inline-cidr-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_INLINE_CIDR_PEERS: Test = Test {
    short_name: "CNPBaselineTierEgressInlineCIDRPeers",
    description: "Tests support for egress traffic to CIDR peers using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES],
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
                // insert new rule at index0; append the rest of the rules in the default baseline CNP
                prepend_networks("default", "allow-egress-to-specific-podIPs", Accept, &["ravenclaw/luna-lovegood-0", "hufflepuff/cedric-diggory-0"]),
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

/// `CNPBaselineTierEgressSCTP` (`conformance/tests/baseline-admin-network-policy-standard-egress-sctp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_SCTP: Test = Test {
    short_name: "CNPBaselineTierEgressSCTP",
    description: "Tests support for egress traffic (SCTP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_EGRESS_SCTP_RULES],
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
                swap("default", Egress, 0, 1),
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
    ],
};

/// `CNPBaselineTierEgressTCP` (`conformance/tests/baseline-admin-network-policy-standard-egress-tcp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_TCP: Test = Test {
    short_name: "CNPBaselineTierEgressTCP",
    description: "Tests support for egress traffic (TCP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_EGRESS_TCP_RULES],
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
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 80; egressRule at index5 should take effect
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
                swap("default", Egress, 0, 1),
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
    ],
};

/// `CNPBaselineTierEgressUDP` (`conformance/tests/baseline-admin-network-policy-standard-egress-udp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_EGRESS_UDP: Test = Test {
    short_name: "CNPBaselineTierEgressUDP",
    description: "Tests support for egress traffic (UDP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_EGRESS_UDP_RULES],
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
                // ensure egress is ALLOWED to gryffindor from hufflepuff at port 53; egressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "gryffindor/harry-potter-1", 53, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure egress is DENIED to gryffindor from hufflepuff for rest of the traffic; egressRule at index4 should take effect
                poke("hufflepuff/cedric-diggory-1", Udp, "gryffindor/harry-potter-1", 5353, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-egress' policy for UDP protocol; ensure rule ordering is respected",
            steps: &[
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1
                swap("default", Egress, 0, 1),
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
                // ensure egress to slytherin is DENIED from hufflepuff at port 80; egressRule at index2 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "slytherin/draco-malfoy-0", 5353, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure egress to slytherin is ALLOWED from hufflepuff for rest of the traffic; matches no rules hence allowed
                poke("hufflepuff/cedric-diggory-1", Udp, "slytherin/draco-malfoy-0", 53, true),
            ],
        },
    ],
};

/// `CNPBaselineTierGress` (`conformance/tests/baseline-admin-network-policy-standard-gress-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_GRESS: Test = Test {
    short_name: "CNPBaselineTierGress",
    description: "Tests support for combined ingress and egress traffic rules in the baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_GRESS_RULES_COMBINED],
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
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 8080; egressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "hufflepuff/cedric-diggory-1", 8080, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Tcp, "hufflepuff/cedric-diggory-1", 80, false),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 5353; egressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Udp, "hufflepuff/cedric-diggory-1", 5353, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Udp, "hufflepuff/cedric-diggory-1", 53, false),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress is ALLOWED to hufflepuff from gryffindor at port 9003; egressRule at index5 should take effect
                poke("gryffindor/harry-potter-0", Sctp, "hufflepuff/cedric-diggory-1", 9003, true),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress is DENIED to hufflepuff from gryffindor for rest of the traffic; egressRule at index6 should take effect
                poke("gryffindor/harry-potter-1", Sctp, "hufflepuff/cedric-diggory-1", 9005, false),
                // Second; let's test ingress works!
                // harry-potter-1 is our server pod in gryffindor namespace
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 80; ingressRule at index5 should take effect
                poke("hufflepuff/cedric-diggory-0", Tcp, "gryffindor/harry-potter-1", 80, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6 should take effect
                poke("hufflepuff/cedric-diggory-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 5353; ingressRule at index5 should take effect
                poke("hufflepuff/cedric-diggory-0", Udp, "gryffindor/harry-potter-1", 5353, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6 should take effect
                poke("hufflepuff/cedric-diggory-1", Udp, "gryffindor/harry-potter-1", 53, false),
                // cedric-diggory-0 is our client pod in hufflepuff namespace
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 9003; ingressRule at index5 should take effect
                poke("hufflepuff/cedric-diggory-0", Sctp, "gryffindor/harry-potter-1", 9003, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index6 should take effect
                poke("hufflepuff/cedric-diggory-1", Sctp, "gryffindor/harry-potter-1", 9005, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-gress' policy across different protocols",
            steps: &[
                // First; let's test egress works!
                // luna-lovegood-1 is our server pod in ravenclaw namespace
                // swap rules at index0 and index1 for both ingress and egress
                swap("default", Egress, 0, 1),
                swap("default", Ingress, 0, 1),
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
                // ensure egress to slytherin is DENIED from gryffindor at port 80; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Tcp, "slytherin/draco-malfoy-0", 80, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Tcp, "slytherin/draco-malfoy-0", 8080, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 53; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Udp, "slytherin/draco-malfoy-0", 53, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Udp, "slytherin/draco-malfoy-0", 5353, true),
                // harry-potter-0 is our client pod in gryffindor namespace
                // ensure egress to slytherin is DENIED from gryffindor at port 53; egressRule at index3 should take effect
                poke("gryffindor/harry-potter-0", Sctp, "slytherin/draco-malfoy-0", 9003, false),
                // harry-potter-1 is our client pod in gryffindor namespace
                // ensure egress to slytherin is ALLOWED from gryffindor for rest of the traffic; matches no rules hence allowed
                poke("gryffindor/harry-potter-1", Sctp, "slytherin/draco-malfoy-0", 9005, true),
                // Second; let's test ingress works!
                // harry-potter-0 is our server pod in gryffindor namespace
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Udp, "gryffindor/harry-potter-0", 53, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Udp, "gryffindor/harry-potter-0", 5353, true),
                // draco-malfoy-0 is our client pod in slytherin namespace
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index3 should take effect
                poke("slytherin/draco-malfoy-0", Sctp, "gryffindor/harry-potter-0", 9003, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Sctp, "gryffindor/harry-potter-0", 9005, true),
            ],
        },
    ],
};

/// `CNPBaselineTierIngressSCTP` (`conformance/tests/baseline-admin-network-policy-standard-ingress-sctp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_INGRESS_SCTP: Test = Test {
    short_name: "CNPBaselineTierIngressSCTP",
    description: "Tests support for ingress traffic (SCTP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_INGRESS_SCTP_RULES],
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
                swap("default", Ingress, 0, 1),
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
    ],
};

/// `CNPBaselineTierIngressTCP` (`conformance/tests/baseline-admin-network-policy-standard-ingress-tcp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_INGRESS_TCP: Test = Test {
    short_name: "CNPBaselineTierIngressTCP",
    description: "Tests support for ingress traffic (TCP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_INGRESS_TCP_RULES],
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
                // ensure ingress is ALLOWED from hufflepuff to gryffindor at port 80; ingressRule at index3 should take effect
                poke("hufflepuff/cedric-diggory-0", Tcp, "gryffindor/harry-potter-1", 80, true),
                // cedric-diggory-1 is our client pod in hufflepuff namespace
                // ensure ingress is DENIED from hufflepuff to gryffindor for rest of the traffic; ingressRule at index4 should take effect
                poke("hufflepuff/cedric-diggory-1", Tcp, "gryffindor/harry-potter-1", 8080, false),
            ],
        },
        Subtest {
            name: "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected",
            steps: &[
                // harry-potter-1 is our server pod in gryffindor namespace
                // swap rules at index0 and index1
                swap("default", Ingress, 0, 1),
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
                // ensure ingress from slytherin is DENIED to gryffindor at port 80; ingressRule at index2 should take effect
                poke("slytherin/draco-malfoy-0", Tcp, "gryffindor/harry-potter-0", 80, false),
                // draco-malfoy-1 is our client pod in slytherin namespace
                // ensure ingress from slytherin is ALLOWED to gryffindor for rest of the traffic; matches no rules hence allowed
                poke("slytherin/draco-malfoy-1", Tcp, "gryffindor/harry-potter-0", 8080, true),
            ],
        },
    ],
};

/// `CNPBaselineTierIngressUDP` (`conformance/tests/baseline-admin-network-policy-standard-ingress-udp-rules.go`).
#[rustfmt::skip]
pub const CNP_BASELINE_TIER_INGRESS_UDP: Test = Test {
    short_name: "CNPBaselineTierIngressUDP",
    description: "Tests support for ingress traffic (UDP protocol) using baseline cluster network policy API based on a server and client model",
    features: &[ClusterNetworkPolicy],
    manifests: &[BASELINE_TIER_STANDARD_INGRESS_UDP_RULES],
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
                // ensure ingress is ALLOWED from gryffindor to hufflepuff at port 53; ingressRule at index5 should take effect
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
                swap("default", Ingress, 0, 1),
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
    ],
};
