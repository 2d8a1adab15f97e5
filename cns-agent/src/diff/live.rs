//! The agent's side of `policy diff`: its live snapshot and node as the control socket
//! carries them (request `snapshot`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Container, ContainerPort, Namespace, Pod, PodSpec, PodStatus},
    networking::v1::NetworkPolicy,
};
use serde::{Deserialize, Serialize};

use crate::policy::{
    compile::AUDIT_ANNOTATION,
    model::{NodeContext, ObjectRef, Snapshot},
};

/// The agent's live snapshot and node, as the control socket sends them to `policy diff`:
/// trimmed to what the compiler reads (labels, the audit annotation, pod addresses, node
/// and container ports, whole policies without managed fields).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LiveState {
    /// The agent's source (`manifests:DIR`, `kubernetes`).
    pub source: String,
    pub node_name: String,
    pub node_ips: BTreeSet<Ipv4Addr>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// By namespace, then name.
    pub pods: BTreeMap<String, BTreeMap<String, Pod>>,
    /// By namespace, then name.
    pub policies: BTreeMap<String, BTreeMap<String, NetworkPolicy>>,
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
                .entry(r.namespace.clone())
                .or_default()
                .insert(r.name.clone(), slim_pod(pod));
        }
        for (r, np) in &snapshot.policies {
            let mut np = NetworkPolicy::clone(np);
            np.metadata.managed_fields = None;
            out.policies
                .entry(r.namespace.clone())
                .or_default()
                .insert(r.name.clone(), np);
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
            pods: flatten(self.pods),
            policies: flatten(self.policies),
        };
        let node = NodeContext {
            node_name: self.node_name,
            node_ips: self.node_ips,
        };
        (snapshot, node)
    }
}

/// Namespace -> name -> object, keyed by [`ObjectRef`].
fn flatten<T>(m: BTreeMap<String, BTreeMap<String, T>>) -> BTreeMap<ObjectRef, Arc<T>> {
    m.into_iter()
        .flat_map(|(ns, objs)| {
            objs.into_iter()
                .map(move |(name, o)| (ObjectRef::new(ns.clone(), name), Arc::new(o)))
        })
        .collect()
}

/// A pod with only what the compiler reads.
fn slim_pod(pod: &Pod) -> Pod {
    let mut out = Pod::default();
    out.metadata.name = pod.metadata.name.clone();
    out.metadata.namespace = pod.metadata.namespace.clone();
    out.metadata.labels = pod.metadata.labels.clone();
    out.spec = pod.spec.as_ref().map(|s| PodSpec {
        node_name: s.node_name.clone(),
        host_network: s.host_network,
        containers: s
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                ports: c.ports.as_ref().map(|ports| {
                    ports
                        .iter()
                        .map(|p| ContainerPort {
                            name: p.name.clone(),
                            container_port: p.container_port,
                            protocol: p.protocol.clone(),
                            ..ContainerPort::default()
                        })
                        .collect()
                }),
                ..Container::default()
            })
            .collect(),
        ..PodSpec::default()
    });
    out.status = pod.status.as_ref().map(|s| PodStatus {
        phase: s.phase.clone(),
        pod_ip: s.pod_ip.clone(),
        pod_ips: s.pod_ips.clone(),
        ..PodStatus::default()
    });
    out
}
