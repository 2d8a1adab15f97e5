//! The cns node agent.
//!
//! Where to start: [`policy`] is the pure core (validate, compile, evaluate); [`encode`]
//! turns its output into map keys; [`reconcile`] diffs desired against the maps and applies
//! the difference; [`loader`] loads and attaches the kernel programs; [`source`] reads
//! manifests; [`uplink`] finds where the XDP program goes; [`agent`] ties them together,
//! driven by [`daemon`] and the control socket
//! ([`control`]); [`cli`] is the command line. Every bpffs path is in [`paths`]; the map
//! capacities operators choose are in [`map_sizes`].

pub mod agent;
pub mod check;
pub mod cli;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod diff;
pub mod encode;
pub mod events;
pub mod explain;
pub mod history;
pub mod k8s;
pub mod loader;
pub mod logonce;
pub mod map_sizes;
pub mod metrics;
pub mod names;
pub mod netdev;
pub mod paths;
pub mod policy;
pub mod reconcile;
pub mod show;
pub mod source;
pub mod syslog;
pub mod uplink;
