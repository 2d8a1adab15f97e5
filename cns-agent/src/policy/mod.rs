//! The pure policy core: validate objects, compile a snapshot into the desired datapath
//! state, and evaluate flows against the same snapshot (the reference the tests and
//! `policy explain` use). No I/O, no clock, no tokio, no aya in here.
//!
//! Where to start: `model` (the interface), `compile` (snapshot to `Desired`; `incremental`
//! keeps its state between syncs, `select` its selector answers), `evaluate`
//! (the reference verdict for one flow). `view` is how both read the k8s objects,
//! `selector` matches labels, `alloc` keeps numbers stable, `cidr` builds the per-endpoint
//! address partition, `validate` reports bad fields, `addr` is where the address family matters.

pub mod addr;
mod alloc;
mod cidr;
pub mod cluster;
pub mod compile;
pub mod evaluate;
pub mod incremental;
mod index;
pub mod labels;
pub mod mode;
pub mod model;
mod ports;
mod select;
pub mod selector;
pub mod tiers;
pub mod validate;
pub mod view;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod compile_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use evaluate::{DirectionVerdict, Flow, FlowVerdict, evaluate};
pub use incremental::{Compiler, compile};
pub use mode::{AuditMode, Modes};
pub use validate::{FieldError, validate_namespace, validate_pod, validate_policy};
