//! The cns node agent.
//!
//! Where to start: `policy` is the pure core (validate, compile, evaluate); `encode` turns
//! its output into map keys; `reconcile` diffs desired against the maps and applies the
//! difference; `loader` loads and attaches the kernel programs; `source` reads manifests;
//! `agent` ties them together behind the control socket (`control`); `cli` is the command
//! line.

pub mod policy;
