//! Upstream's `conformance/base/` files (verbatim copies in `upstream/`, see its README),
//! as the [`Manifest`]s the tests name, and the template values they are expanded with.

use super::suite::Manifest;

/// `s.HostNetworkPorts`: upstream's default range (`HostNetworkPortRangeStart` 34345, eight
/// ports), which `{{ index .HostNetworkPorts N }}` in the manifests expands to.
pub const HNP: [u16; 8] = [34345, 34346, 34347, 34348, 34349, 34350, 34351, 34352];

macro_rules! upstream {
    ($path:literal) => {
        Manifest {
            path: $path,
            text: include_str!(concat!("upstream/", $path)),
        }
    };
}

/// `base/manifests.yaml`: the namespaces and StatefulSets every test runs on.
pub const BASE: Manifest = upstream!("manifests.yaml");
pub const ADMIN_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES: Manifest =
    upstream!("admin_tier/experimental-egress-selector-rules.yaml");
pub const ADMIN_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES: Manifest =
    upstream!("admin_tier/standard-egress-inline-cidr-rules.yaml");
pub const ADMIN_TIER_STANDARD_EGRESS_SCTP_RULES: Manifest =
    upstream!("admin_tier/standard-egress-sctp-rules.yaml");
pub const ADMIN_TIER_STANDARD_EGRESS_TCP_RULES: Manifest =
    upstream!("admin_tier/standard-egress-tcp-rules.yaml");
pub const ADMIN_TIER_STANDARD_EGRESS_UDP_RULES: Manifest =
    upstream!("admin_tier/standard-egress-udp-rules.yaml");
pub const ADMIN_TIER_STANDARD_GRESS_RULES_COMBINED: Manifest =
    upstream!("admin_tier/standard-gress-rules-combined.yaml");
pub const ADMIN_TIER_STANDARD_INGRESS_SCTP_RULES: Manifest =
    upstream!("admin_tier/standard-ingress-sctp-rules.yaml");
pub const ADMIN_TIER_STANDARD_INGRESS_TCP_RULES: Manifest =
    upstream!("admin_tier/standard-ingress-tcp-rules.yaml");
pub const ADMIN_TIER_STANDARD_INGRESS_UDP_RULES: Manifest =
    upstream!("admin_tier/standard-ingress-udp-rules.yaml");
pub const ADMIN_TIER_STANDARD_PRIORITY_FIELD: Manifest =
    upstream!("admin_tier/standard-priority-field.yaml");
pub const BASELINE_TIER_EXPERIMENTAL_EGRESS_SELECTOR_RULES: Manifest =
    upstream!("baseline_tier/experimental-egress-selector-rules.yaml");
pub const BASELINE_TIER_STANDARD_EGRESS_INLINE_CIDR_RULES: Manifest =
    upstream!("baseline_tier/standard-egress-inline-cidr-rules.yaml");
pub const BASELINE_TIER_STANDARD_EGRESS_SCTP_RULES: Manifest =
    upstream!("baseline_tier/standard-egress-sctp-rules.yaml");
pub const BASELINE_TIER_STANDARD_EGRESS_TCP_RULES: Manifest =
    upstream!("baseline_tier/standard-egress-tcp-rules.yaml");
pub const BASELINE_TIER_STANDARD_EGRESS_UDP_RULES: Manifest =
    upstream!("baseline_tier/standard-egress-udp-rules.yaml");
pub const BASELINE_TIER_STANDARD_GRESS_RULES_COMBINED: Manifest =
    upstream!("baseline_tier/standard-gress-rules-combined.yaml");
pub const BASELINE_TIER_STANDARD_INGRESS_SCTP_RULES: Manifest =
    upstream!("baseline_tier/standard-ingress-sctp-rules.yaml");
pub const BASELINE_TIER_STANDARD_INGRESS_TCP_RULES: Manifest =
    upstream!("baseline_tier/standard-ingress-tcp-rules.yaml");
pub const BASELINE_TIER_STANDARD_INGRESS_UDP_RULES: Manifest =
    upstream!("baseline_tier/standard-ingress-udp-rules.yaml");
pub const API_INTEGRATION_STANDARD_ANP_NP_BANP: Manifest =
    upstream!("api_integration/standard-anp-np-banp.yaml");

/// A manifest's text with upstream's Go template expanded as its `Applier` does
/// (`applyTemplate`): `{{ index .HostNetworkPorts N }}` is the Nth host network port.
pub fn expand(text: &str) -> String {
    let mut out = text.to_owned();
    for (n, port) in HNP.iter().enumerate() {
        out = out.replace(
            &format!("{{{{ index .HostNetworkPorts {n} }}}}"),
            &port.to_string(),
        );
    }
    assert!(
        !out.contains("{{"),
        "a template expression is left unexpanded:\n{out}"
    );
    out
}
