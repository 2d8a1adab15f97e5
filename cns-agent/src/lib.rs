//! The cns node agent.
//!
//! Where to start: [`policy`] is the pure core (validate, compile, evaluate); [`encode`]
//! turns its output into map keys; [`reconcile`] diffs desired against the maps and applies
//! the difference; [`datapath`] loads and attaches the kernel programs and writes their maps; [`source`] reads
//! manifests; [`uplink`] finds where the XDP program goes; [`agent`] ties them together,
//! driven by [`daemon`] and the control socket
//! ([`control`]); [`cli`] is the command line. Every bpffs path is in [`paths`]; the map
//! capacities operators choose are in [`map_sizes`].

pub mod agent;
pub mod capabilities;
pub mod check;
pub mod cli;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod datapath;
pub mod diff;
pub mod encode;
pub mod events;
pub mod explain;
pub mod history;
pub mod instance;
pub mod k8s;
pub mod logonce;
pub mod map_sizes;
pub mod metrics;
pub mod names;
pub mod netdev;
pub mod paths;
pub mod policy;
pub mod reconcile;
pub mod rollout;
pub mod show;
pub mod source;
pub mod syslog;
pub mod uplink;

/// The configuration of the fuzz tests (proptest): `cases` per property unless
/// `PROPTEST_CASES` says otherwise (`PROPTEST_CASES=100000` for a long run), failures saved
/// in `cns-agent/proptest-regressions/` (committed: they run first, every time).
#[cfg(test)]
pub(crate) fn fuzz_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config::with_cases(cases)
}

/// An error and its sources, one line: "failed to X: because Y: because Z" (a source whose
/// text the line already holds is not repeated: some errors include their source's text).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
