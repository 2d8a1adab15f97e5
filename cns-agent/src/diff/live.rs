//! The agent's side of `policy diff`: its live snapshot and node as the control socket
//! carries them (request `snapshot`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use serde::{Deserialize, Serialize};

use crate::policy::{
    mode::AUDIT_ANNOTATION,
    model::{ClusterNetworkPolicy, NodeContext, NodeInfo, ObjectRef, PodInfo, Snapshot},
};

/// The agent's live snapshot and node, as the control socket sends them to `policy diff`:
/// trimmed to what the compiler reads (labels, the audit annotation, pod addresses, node
/// and container ports, whole policies without managed fields).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LiveState {
    /// The agent's source (`manifests:DIR`, `kubernetes`).
    pub source: String,
    pub node_name: String,
    pub node_ips: BTreeSet<IpAddr>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// By namespace, then name.
    pub pods: BTreeMap<String, BTreeMap<String, Pod>>,
    /// By namespace, then name.
    pub policies: BTreeMap<String, BTreeMap<String, NetworkPolicy>>,
    /// By name.
    #[serde(default)]
    pub cluster_policies: BTreeMap<String, ClusterNetworkPolicy>,
    /// By name.
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
}

impl LiveState {
    pub fn new(snapshot: &Snapshot, node: &NodeContext, source: String) -> Self {
        let mut out = Self {
            source,
            node_name: node.node_name.clone(),
            node_ips: node.node_ips.clone(),
            ..Self::default()
        };
        for (name, ns) in &snapshot.namespaces {
            let mut slim = Namespace::default();
            slim.metadata.name = ns.metadata.name.clone();
            slim.metadata.labels = ns.metadata.labels.clone();
            slim.metadata.annotations = ns
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(AUDIT_ANNOTATION))
                .map(|v| [(AUDIT_ANNOTATION.to_owned(), v.clone())].into());
            out.namespaces.insert(name.clone(), slim);
        }
        for (r, pod) in &snapshot.pods {
            out.pods
                .entry(r.namespace.to_string())
                .or_default()
                .insert(r.name.to_string(), pod.to_pod(r));
        }
        for (r, np) in &snapshot.policies {
            let mut np = NetworkPolicy::clone(np);
            np.metadata.managed_fields = None;
            out.policies
                .entry(r.namespace.to_string())
                .or_default()
                .insert(r.name.to_string(), np);
        }
        for (name, cnp) in &snapshot.cluster_policies {
            let mut cnp = ClusterNetworkPolicy::clone(cnp);
            cnp.metadata.managed_fields = None;
            out.cluster_policies.insert(name.to_string(), cnp);
        }
        for (name, node) in &snapshot.nodes {
            out.nodes.insert(name.to_string(), node.to_node(name));
        }
        out
    }

    pub fn into_parts(self) -> (Snapshot, NodeContext) {
        let snapshot = Snapshot {
            namespaces: self
                .namespaces
                .into_iter()
                .map(|(n, ns)| (n, Arc::new(ns)))
                .collect(),
            pods: flatten(self.pods, |pod| PodInfo::from(&pod)),
            policies: flatten(self.policies, |np| np),
            cluster_policies: self
                .cluster_policies
                .into_iter()
                .map(|(n, p)| (n.into(), Arc::new(p)))
                .collect(),
            nodes: self
                .nodes
                .into_iter()
                .map(|(n, node)| (n.into(), Arc::new(NodeInfo::from(&node))))
                .collect(),
        };
        let node = NodeContext {
            node_name: self.node_name,
            node_ips: self.node_ips,
        };
        (snapshot, node)
    }
}

/// Namespace -> name -> object, keyed by [`ObjectRef`], as the snapshot holds it (`hold`).
fn flatten<T, V>(
    m: BTreeMap<String, BTreeMap<String, T>>,
    hold: impl Fn(T) -> V + Copy,
) -> BTreeMap<ObjectRef, Arc<V>> {
    m.into_iter()
        .flat_map(|(ns, objs)| {
            objs.into_iter()
                .map(move |(name, o)| (ObjectRef::new(ns.clone(), name), Arc::new(hold(o))))
        })
        .collect()
}
