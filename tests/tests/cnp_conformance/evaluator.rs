//! The reference evaluator (`cns_agent::policy::evaluate`) on each probe, as the
//! NetworkPolicy suite checks it: the expectation is upstream's, and the evaluator must
//! agree with it as the datapath must.
//!
//! [`EVALUATOR_KNOWS_CLUSTER_NETWORK_POLICY`] is the one switch (off, an evaluator without
//! ClusterNetworkPolicy says nothing about these tests), and [`Reference`] the one place
//! that calls the evaluator (wire it there if its inputs change).

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use cns_agent::{
    policy::{Flow, evaluate, model::NodeContext, model::Snapshot},
    source::{self, LastGood},
};
use cns_tests::{
    Family,
    agent::NODE_NAME,
    netns::{NODE_UPLINK_IP, NODE_UPLINK_IP6},
};

use super::suite::Proto;

/// Whether `cns_agent::policy::evaluate` decides ClusterNetworkPolicy tiers (Admin,
/// NetworkPolicy, Baseline) and `nodes` peers (it does since 698d77f).
pub const EVALUATOR_KNOWS_CLUSTER_NETWORK_POLICY: bool = true;

/// The evaluator over the manifests the agent has now.
pub struct Reference {
    snapshot: Snapshot,
    node: NodeContext,
}

impl Reference {
    /// Loads the agent's manifests directory; `None` while the evaluator does not know
    /// ClusterNetworkPolicy. Panics if the manifests have errors.
    pub fn load(manifests: &Path, family: Family) -> Option<Self> {
        if !EVALUATOR_KNOWS_CLUSTER_NETWORK_POLICY {
            return None;
        }
        let files = source::read_dir(manifests).expect("read manifests");
        let (snapshot, errors) = source::load(&files, &mut LastGood::default());
        assert!(errors.is_empty(), "manifests rejected: {errors:?}");
        let mut node_ips = BTreeSet::new();
        if family.has_v4() {
            node_ips.insert(IpAddr::from(NODE_UPLINK_IP));
        }
        if family.has_v6() {
            node_ips.insert(IpAddr::from(NODE_UPLINK_IP6));
        }
        Some(Self {
            snapshot,
            node: NodeContext {
                node_name: NODE_NAME.into(),
                node_ips,
            },
        })
    }

    /// Whether the evaluator lets `src` reach `dst:port` over `proto`.
    pub fn allows(&self, src: IpAddr, dst: IpAddr, proto: Proto, port: u16) -> bool {
        let flow = Flow {
            src,
            dst,
            proto: proto.number(),
            dport: port,
        };
        evaluate(&self.snapshot, &self.node, &flow).allowed()
    }
}
