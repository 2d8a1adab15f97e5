//! From the watchers' caches to a [`SourceState`]: the pure part of the Kubernetes source.
//!
//! [`to_state`] gets every cached Namespace, Pod (kept as its `PodInfo`, see
//! [`super::decode`]), NetworkPolicy (all namespaces), ClusterNetworkPolicy and Node (kept
//! as its `NodeInfo`) and the agent's ConfigMap, and gives the snapshot the compiler takes; [`to_changes`] takes only
//! the objects the watch events named and gives what changed in that snapshot (the same
//! rules, one object at a time: a property test checks the two against each other). Like the manifests source,
//! it never lets bad input empty the datapath: an object that fails validation keeps its last
//! good version (if it had one) and is reported with its object and field; an object that
//! was never valid is left out. An object deleted from the API is forgotten with its last
//! good version.
//!
//! [`slim_pod`] and [`slim_metadata`] drop what the agent never reads before objects enter
//! the caches (every pod of the cluster is cached on every node, as a `PodInfo`).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Container, ContainerPort, Namespace, Node, Pod, PodSpec, PodStatus},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::decode::{Entry, Invalid, Keep};
use crate::{
    policy::{
        AuditMode,
        cluster::validate_cluster_policy,
        model::{
            ClusterNetworkPolicy, NodeInfo, ObjectRef, PodInfo, Snapshot, SnapshotChanges,
            SnapshotUpdate,
        },
        validate::{FieldError, validate_namespace, validate_policy},
    },
    source::{Kind, NAMESPACE_NAME_LABEL, SourceError, SourceState},
};

/// What [`SourceError::file`] says for objects from the API server.
pub const SOURCE_FILE: &str = "kubernetes";
/// The ConfigMap key that sets the global mode, as in Cilium's values.
pub const AUDIT_MODE_KEY: &str = "policyAuditMode";
/// Annotation `kubectl apply` leaves on objects: a full copy of the object, never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Cluster objects as the API gives them (tests and the bench build these; the source's
/// own caches keep the compact form, [`Kept`]).
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    pub namespaces: Vec<Arc<Namespace>>,
    pub pods: Vec<Arc<Pod>>,
    pub policies: Vec<Arc<NetworkPolicy>>,
    pub cluster_policies: Vec<Arc<ClusterNetworkPolicy>>,
    pub nodes: Vec<Arc<Node>>,
    /// The agent's own ConfigMap, if it exists.
    pub config: Option<Arc<ConfigMap>>,
}

/// The last valid version of every object (and of the ConfigMap's mode), and the problems
/// of the objects that are not valid, kept from one read to the next.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    namespaces: BTreeMap<String, Accepted<Namespace>>,
    pods: BTreeMap<ObjectRef, Accepted<PodInfo>>,
    policies: BTreeMap<ObjectRef, Accepted<NetworkPolicy>>,
    cluster_policies: BTreeMap<Arc<str>, Accepted<ClusterNetworkPolicy>>,
    nodes: BTreeMap<Arc<str>, Accepted<NodeInfo>>,
    /// The ConfigMap's last valid mode.
    audit_mode: Option<AuditMode>,
    /// The mode the source sets now: the last valid one, or blocking when the ConfigMap's
    /// value cannot be read and no valid one is known (never the weaker mode by default).
    mode: Option<AuditMode>,
    /// By kind, then namespace/name (cluster-scoped kinds under an empty namespace): the
    /// order they are reported in.
    errors: BTreeMap<(Kind, ObjectRef), SourceError>,
    /// The ConfigMap's (reported last).
    config_error: Option<SourceError>,
}

impl LastGood {
    fn errors(&self) -> Vec<SourceError> {
        self.errors
            .values()
            .chain(&self.config_error)
            .cloned()
            .collect()
    }
}

/// A valid object as the cache gave it, and what the snapshot holds of it (the same
/// object, labelled for a namespace): kept together so that an object the cache has not
/// replaced gives every snapshot the same `Arc` without being validated again.
#[derive(Debug)]
struct Accepted<K, V = K> {
    cached: Arc<K>,
    value: Arc<V>,
}

impl<K, V> Clone for Accepted<K, V> {
    fn clone(&self) -> Self {
        Self {
            cached: self.cached.clone(),
            value: self.value.clone(),
        }
    }
}

/// What the caches hold, by key, in the form they keep it: a pod as its `PodInfo`
/// (validated when its event came), a node as its `NodeInfo`, an object that did not
/// decode as [`Invalid`]. The Kubernetes source's stores.
pub trait Kept {
    fn namespace(&self, name: &str) -> Option<Entry<Namespace>>;
    fn pod(&self, key: &ObjectRef) -> Option<Entry<PodInfo>>;
    fn policy(&self, key: &ObjectRef) -> Option<Entry<NetworkPolicy>>;
    fn cluster_policy(&self, name: &str) -> Option<Entry<ClusterNetworkPolicy>>;
    fn node(&self, name: &str) -> Option<Entry<NodeInfo>>;
}

/// The same, holding API objects (tests and the bench): pods and nodes are kept as the
/// source's stores would keep them.
pub trait Caches {
    fn namespace(&self, name: &str) -> Option<Arc<Namespace>>;
    fn pod(&self, key: &ObjectRef) -> Option<Arc<Pod>>;
    fn policy(&self, key: &ObjectRef) -> Option<Arc<NetworkPolicy>>;
    fn cluster_policy(&self, name: &str) -> Option<Arc<ClusterNetworkPolicy>>;
    fn node(&self, name: &str) -> Option<Arc<Node>>;
}

impl<C: Caches> Kept for C {
    fn namespace(&self, name: &str) -> Option<Entry<Namespace>> {
        Caches::namespace(self, name).map(Ok)
    }

    fn pod(&self, key: &ObjectRef) -> Option<Entry<PodInfo>> {
        let pod = Caches::pod(self, key)?;
        Some(
            PodInfo::keep(Pod::clone(&pod))
                .map(Arc::new)
                .map_err(Arc::new),
        )
    }

    fn policy(&self, key: &ObjectRef) -> Option<Entry<NetworkPolicy>> {
        Caches::policy(self, key).map(Ok)
    }

    fn cluster_policy(&self, name: &str) -> Option<Entry<ClusterNetworkPolicy>> {
        Caches::cluster_policy(self, name).map(Ok)
    }

    fn node(&self, name: &str) -> Option<Entry<NodeInfo>> {
        let node = Caches::node(self, name)?;
        Some(
            NodeInfo::keep(Node::clone(&node))
                .map(Arc::new)
                .map_err(Arc::new),
        )
    }
}

/// The agent's ConfigMap as a cache holds it, with its namespace/name.
pub type Config<'a> = Option<(&'a ObjectRef, &'a Entry<ConfigMap>)>;

impl Caches for ClusterObjects {
    fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        let named = |ns: &&Arc<Namespace>| ns.metadata.name.as_deref() == Some(name);
        self.namespaces.iter().find(named).cloned()
    }

    fn pod(&self, key: &ObjectRef) -> Option<Arc<Pod>> {
        self.pods
            .iter()
            .find(|p| object_ref(&p.metadata) == *key)
            .cloned()
    }

    fn policy(&self, key: &ObjectRef) -> Option<Arc<NetworkPolicy>> {
        self.policies
            .iter()
            .find(|p| object_ref(&p.metadata) == *key)
            .cloned()
    }

    fn cluster_policy(&self, name: &str) -> Option<Arc<ClusterNetworkPolicy>> {
        self.cluster_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .cloned()
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .cloned()
    }
}

/// The objects the caches changed since a read (cluster-scoped kinds with an empty
/// namespace).
pub type Changed = std::collections::BTreeSet<(Kind, ObjectRef)>;

/// Maps the objects to the snapshot, validating every object the caches replaced; updates
/// `last`.
pub fn to_state(objects: &ClusterObjects, last: &mut LastGood) -> SourceState {
    let mut present = Changed::new();
    for ns in &objects.namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        present.insert((Kind::Namespace, ObjectRef::new("", name)));
    }
    for pod in &objects.pods {
        present.insert((Kind::Pod, object_ref(&pod.metadata)));
    }
    for np in &objects.policies {
        present.insert((Kind::NetworkPolicy, object_ref(&np.metadata)));
    }
    for cnp in &objects.cluster_policies {
        present.insert((Kind::ClusterNetworkPolicy, object_ref(&cnp.metadata)));
    }
    for node in &objects.nodes {
        present.insert((Kind::Node, object_ref(&node.metadata)));
    }
    let config = objects.config.clone().map(|cm| {
        let key = object_ref(&cm.metadata);
        (key, Ok(cm))
    });
    let config = config.as_ref().map(|(k, e)| (k, e));
    to_state_of(&Indexed::new(objects), present, config, last)
}

/// [`to_state`] for caches holding the `present` objects (every one of them).
pub fn to_state_of(
    caches: &impl Kept,
    mut present: Changed,
    config: Config<'_>,
    last: &mut LastGood,
) -> SourceState {
    // What the caches no longer hold is gone.
    let gone: Vec<(Kind, ObjectRef)> = last
        .namespaces
        .keys()
        .map(|n| (Kind::Namespace, ObjectRef::new("", n.clone())))
        .chain(last.pods.keys().map(|r| (Kind::Pod, r.clone())))
        .chain(
            last.policies
                .keys()
                .map(|r| (Kind::NetworkPolicy, r.clone())),
        )
        .chain(
            last.cluster_policies
                .keys()
                .map(|n| (Kind::ClusterNetworkPolicy, ObjectRef::new("", n.clone()))),
        )
        .chain(
            last.nodes
                .keys()
                .map(|n| (Kind::Node, ObjectRef::new("", n.clone()))),
        )
        .chain(last.errors.keys().cloned())
        .filter(|k| !present.contains(k))
        .collect();
    present.extend(gone);
    apply(caches, present, config, last);
    let snapshot = Snapshot {
        namespaces: values(&last.namespaces),
        pods: values(&last.pods),
        policies: values(&last.policies),
        cluster_policies: values(&last.cluster_policies),
        nodes: values(&last.nodes),
    };
    SourceState {
        update: SnapshotUpdate::Full(snapshot),
        errors: last.errors(),
        audit_mode: last.mode,
    }
}

/// What the `changed` objects of the caches change in the snapshot of the last read;
/// updates `last`. Costs the changed objects, not the cluster.
pub fn to_changes(
    caches: &impl Kept,
    changed: Changed,
    config: Config<'_>,
    last: &mut LastGood,
) -> SourceState {
    let changes = apply(caches, changed, config, last);
    SourceState {
        update: SnapshotUpdate::Changes(changes),
        errors: last.errors(),
        audit_mode: last.mode,
    }
}

/// [`ClusterObjects`] by key, for [`to_state`].
struct Indexed<'a> {
    namespaces: BTreeMap<&'a str, &'a Arc<Namespace>>,
    pods: BTreeMap<ObjectRef, &'a Arc<Pod>>,
    policies: BTreeMap<ObjectRef, &'a Arc<NetworkPolicy>>,
    cluster_policies: BTreeMap<&'a str, &'a Arc<ClusterNetworkPolicy>>,
    nodes: BTreeMap<&'a str, &'a Arc<Node>>,
}

impl<'a> Indexed<'a> {
    fn new(objects: &'a ClusterObjects) -> Self {
        Self {
            namespaces: objects
                .namespaces
                .iter()
                .map(|ns| (ns.metadata.name.as_deref().unwrap_or_default(), ns))
                .collect(),
            pods: objects
                .pods
                .iter()
                .map(|p| (object_ref(&p.metadata), p))
                .collect(),
            policies: objects
                .policies
                .iter()
                .map(|p| (object_ref(&p.metadata), p))
                .collect(),
            cluster_policies: objects
                .cluster_policies
                .iter()
                .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p))
                .collect(),
            nodes: objects
                .nodes
                .iter()
                .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n))
                .collect(),
        }
    }
}

impl Caches for Indexed<'_> {
    fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(name).map(|ns| Arc::clone(ns))
    }

    fn pod(&self, key: &ObjectRef) -> Option<Arc<Pod>> {
        self.pods.get(key).map(|p| Arc::clone(p))
    }

    fn policy(&self, key: &ObjectRef) -> Option<Arc<NetworkPolicy>> {
        self.policies.get(key).map(|p| Arc::clone(p))
    }

    fn cluster_policy(&self, name: &str) -> Option<Arc<ClusterNetworkPolicy>> {
        self.cluster_policies.get(name).map(|p| Arc::clone(p))
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(name).map(|n| Arc::clone(n))
    }
}

/// Validates the `changed` objects as the caches hold them now (or forgets them, gone),
/// and the ConfigMap's mode; returns what changed in the snapshot.
fn apply(
    caches: &impl Kept,
    changed: Changed,
    config: Config<'_>,
    last: &mut LastGood,
) -> SnapshotChanges {
    let mut changes = SnapshotChanges::default();
    for (kind, key) in changed {
        let object = if kind.cluster_scoped() {
            format!("{kind:?} {}", key.name)
        } else {
            format!("{kind:?} {key}")
        };
        let error_key = (kind.clone(), key.clone());
        let errors = &mut last.errors;
        match kind {
            Kind::Namespace => {
                let ns = caches.namespace(&key.name).map(|e| e.map(with_name_label));
                if let Some(change) = accept(
                    key.name.to_string(),
                    ns,
                    validate_namespace,
                    Arc::clone,
                    &object,
                    &mut last.namespaces,
                    (errors, error_key),
                ) {
                    changes.namespaces.push((key.name.to_string(), change));
                }
            }
            Kind::Pod => {
                if let Some(change) = accept(
                    key.clone(),
                    caches.pod(&key),
                    // Validated as a `Pod` when its event came (`decode::Keep`).
                    |_| Vec::new(),
                    Arc::clone,
                    &object,
                    &mut last.pods,
                    (errors, error_key),
                ) {
                    changes.pods.push((key, change));
                }
            }
            Kind::NetworkPolicy => {
                if let Some(change) = accept(
                    key.clone(),
                    caches.policy(&key),
                    validate_policy,
                    Arc::clone,
                    &object,
                    &mut last.policies,
                    (errors, error_key),
                ) {
                    changes.policies.push((key, change));
                }
            }
            Kind::ClusterNetworkPolicy => {
                if let Some(change) = accept(
                    key.name.clone(),
                    caches.cluster_policy(&key.name),
                    validate_cluster_policy,
                    Arc::clone,
                    &object,
                    &mut last.cluster_policies,
                    (errors, error_key),
                ) {
                    changes.cluster_policies.push((key.name, change));
                }
            }
            Kind::Node => {
                if let Some(change) = accept(
                    key.name.clone(),
                    caches.node(&key.name),
                    // Nothing to validate: addresses that do not parse are not kept.
                    |_| Vec::new(),
                    Arc::clone,
                    &object,
                    &mut last.nodes,
                    (errors, error_key),
                ) {
                    changes.nodes.push((key.name, change));
                }
            }
        }
    }
    last.mode = audit_mode(config, last);
    changes
}

/// The namespace with the `kubernetes.io/metadata.name` label: the API server adds it itself
/// (since 1.21); be defensive, as the selectors rely on it.
fn with_name_label(ns: Arc<Namespace>) -> Arc<Namespace> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let labelled = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NAMESPACE_NAME_LABEL))
        == Some(&name);
    if name.is_empty() || labelled {
        return ns;
    }
    let mut ns = Namespace::clone(&ns);
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(NAMESPACE_NAME_LABEL.into(), name);
    Arc::new(ns)
}

/// The mode the ConfigMap sets; an invalid value (or ConfigMap) keeps the last good one,
/// reported, or with none (e.g. after a restart) sets blocking.
fn audit_mode(config: Config<'_>, last: &mut LastGood) -> Option<AuditMode> {
    last.config_error = None;
    let Some((key, entry)) = config else {
        last.audit_mode = None;
        return None;
    };
    let (field, message) = match entry {
        Ok(cm) => match audit_mode_of(cm) {
            Ok(mode) => {
                last.audit_mode = mode;
                return mode;
            }
            Err(message) => (Some(format!("data.{AUDIT_MODE_KEY}")), message),
        },
        Err(invalid) => (invalid.field.clone(), invalid.message.clone()),
    };
    let kept = last.audit_mode.is_some();
    last.config_error = Some(SourceError {
        file: PathBuf::from(SOURCE_FILE),
        object: format!("ConfigMap {key}"),
        field,
        message: if kept {
            message
        } else {
            format!("{message}; no valid value is known: enforcing blocking")
        },
        kept_last_good: kept,
    });
    last.audit_mode.or(Some(AuditMode::Blocking))
}

/// `policyAuditMode` of the agent's ConfigMap: `None` when the key is absent.
pub fn audit_mode_of(cm: &ConfigMap) -> Result<Option<AuditMode>, String> {
    let Some(value) = cm.data.as_ref().and_then(|d| d.get(AUDIT_MODE_KEY)) else {
        return Ok(None);
    };
    AuditMode::parse(value).map(Some).map_err(|e| e.to_string())
}

/// Where an object's problem is recorded: the errors by kind and name, and its key there.
type ErrorSlot<'a> = (
    &'a mut BTreeMap<(Kind, ObjectRef), SourceError>,
    (Kind, ObjectRef),
);

/// Takes the cache's version of one object (`None`: gone) into `last`: validated, or its
/// last good version kept and the problem recorded in `errors`. The object the last read
/// accepted (the same `Arc`: the cache has not replaced it) is not validated or converted
/// again. Returns what the snapshot now holds for it, if that changed.
fn accept<Key: Ord + Clone, K: PartialEq, V>(
    key: Key,
    obj: Option<Entry<K>>,
    validate: fn(&K) -> Vec<FieldError>,
    convert: fn(&Arc<K>) -> Arc<V>,
    object: &str,
    last: &mut BTreeMap<Key, Accepted<K, V>>,
    (errors, error_key): ErrorSlot<'_>,
) -> Option<Option<Arc<V>>> {
    let Some(obj) = obj else {
        errors.remove(&error_key);
        return last.remove(&key).map(|_| None);
    };
    let obj = match obj {
        Ok(obj) => obj,
        Err(invalid) => {
            let error = SourceError {
                file: PathBuf::from(SOURCE_FILE),
                object: object.to_owned(),
                field: invalid.field.clone(),
                message: invalid.message.clone(),
                kept_last_good: last.contains_key(&key),
            };
            errors.insert(error_key, error);
            return None;
        }
    };
    if let Some(before) = last.get(&key)
        && (Arc::ptr_eq(&before.cached, &obj) || *before.cached == *obj)
    {
        errors.remove(&error_key);
        return None;
    }
    let Some(invalid) = Invalid::of_fields(&validate(&obj)) else {
        errors.remove(&error_key);
        let value = convert(&obj);
        last.insert(
            key,
            Accepted {
                cached: obj,
                value: value.clone(),
            },
        );
        return Some(Some(value));
    };
    let error = SourceError {
        file: PathBuf::from(SOURCE_FILE),
        object: object.to_owned(),
        field: invalid.field,
        message: invalid.message,
        kept_last_good: last.contains_key(&key),
    };
    errors.insert(error_key, error);
    None
}

/// What the snapshot holds of the accepted objects.
fn values<Key: Ord + Clone, K, V>(
    accepted: &BTreeMap<Key, Accepted<K, V>>,
) -> BTreeMap<Key, Arc<V>> {
    accepted
        .iter()
        .map(|(k, a)| (k.clone(), a.value.clone()))
        .collect()
}

fn object_ref(meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Drops the metadata the agent never reads (managed fields, `kubectl apply`'s copy).
pub fn slim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps of a pod only what the compiler, `status` and `explain` read: metadata (labels,
/// namespace, name, deletion), `spec.nodeName`, `spec.hostNetwork`, the containers' names and
/// ports, and `status.{phase, podIP, podIPs, hostIP}`.
pub fn slim_pod(pod: &mut Pod) {
    slim_metadata(&mut pod.metadata);
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports.map(|ports| {
                        ports
                            .into_iter()
                            .map(|p| ContainerPort {
                                container_port: p.container_port,
                                name: p.name,
                                protocol: p.protocol,
                                ..Default::default()
                            })
                            .collect()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            host_ip: status.host_ip,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::{
        compile,
        model::{Allocations, NodeContext},
    };

    fn from<K: serde::de::DeserializeOwned>(v: Value) -> Arc<K> {
        Arc::new(serde_json::from_value(v).expect("test object"))
    }

    fn ns(name: &str) -> Arc<Namespace> {
        from(json!({"metadata": {"name": name, "labels": {"team": "a"}}}))
    }

    fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Arc<Pod> {
        from(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": node, "containers": [{
                "name": "c", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "hostIP": "192.168.0.2", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn policy(ns: &str, name: &str, cidr: &str) -> Arc<NetworkPolicy> {
        from(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]},
        }))
    }

    /// Denies ingress from namespace `peer` to every pod, at `priority` (over 1000: invalid).
    fn cluster_policy(name: &str, priority: i32, peer: &str) -> Arc<ClusterNetworkPolicy> {
        from(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                     "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {
                         NAMESPACE_NAME_LABEL: peer}}}]}]},
        }))
    }

    fn node(name: &str, zone: &str, ip: &str) -> Arc<Node> {
        from(json!({
            "metadata": {"name": name, "labels": {"zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
    }

    fn config(mode: Option<&str>) -> Arc<ConfigMap> {
        let data = match mode {
            Some(m) => json!({ AUDIT_MODE_KEY: m, "monitor.eventTypes": "drop" }),
            None => json!({"monitor.eventTypes": "drop"}),
        };
        from(json!({"metadata": {"name": "cns-config", "namespace": "cns-system"}, "data": data}))
    }

    fn cluster() -> ClusterObjects {
        ClusterObjects {
            namespaces: vec![ns("demo"), ns("other")],
            pods: vec![
                pod("demo", "web", "node-1", "10.0.1.10"),
                pod("other", "client", "node-2", "10.0.2.20"),
            ],
            policies: vec![policy("demo", "allow", "10.0.0.0/16")],
            cluster_policies: vec![cluster_policy("deny-other", 10, "other")],
            nodes: vec![
                node("node-1", "a", "192.168.0.2"),
                node("node-2", "b", "192.168.0.3"),
            ],
            config: Some(config(Some("false"))),
        }
    }

    #[test]
    fn maps_every_object_and_labels_namespaces() {
        let state = to_state(&cluster(), &mut LastGood::default());
        assert!(state.errors.is_empty(), "{:?}", state.errors);
        let snap = &state.full();
        assert_eq!(
            snap.namespaces.keys().collect::<Vec<_>>(),
            ["demo", "other"]
        );
        let labels = snap.namespaces["demo"].metadata.labels.as_ref().unwrap();
        assert_eq!(labels[NAMESPACE_NAME_LABEL], "demo");
        assert_eq!(labels["team"], "a");
        assert!(snap.pods.contains_key(&ObjectRef::new("demo", "web")));
        // Pods of other nodes are kept: they feed the IP cache.
        assert!(snap.pods.contains_key(&ObjectRef::new("other", "client")));
        assert!(snap.policies.contains_key(&ObjectRef::new("demo", "allow")));
        assert_eq!(names(&snap.cluster_policies), ["deny-other"]);
        assert_eq!(names(&snap.nodes), ["node-1", "node-2"]);
        let n2 = &snap.nodes["node-2"];
        assert_eq!(n2.labels.get("zone"), Some("b"));
        assert_eq!(
            *n2.addresses,
            ["192.168.0.3".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
    }

    fn names<V>(map: &BTreeMap<Arc<str>, V>) -> Vec<&str> {
        map.keys().map(|k| &**k).collect()
    }

    #[test]
    fn an_invalid_cluster_policy_keeps_its_last_good_version_and_names_the_field() {
        let mut last = LastGood::default();
        to_state(&cluster(), &mut last);
        let mut bad = cluster();
        bad.cluster_policies = vec![
            cluster_policy("deny-other", 2000, "other"),
            cluster_policy("new-bad", -1, "demo"),
            cluster_policy("new-good", 20, "demo"),
        ];
        let state = to_state(&bad, &mut last);
        let errors: Vec<(&str, Option<&str>, bool)> = state
            .errors
            .iter()
            .map(|e| (e.object.as_str(), e.field.as_deref(), e.kept_last_good))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "ClusterNetworkPolicy deny-other",
                    Some("spec.priority"),
                    true
                ),
                ("ClusterNetworkPolicy new-bad", Some("spec.priority"), false),
            ]
        );
        assert!(
            state.errors[0]
                .to_string()
                .starts_with("kubernetes: ClusterNetworkPolicy deny-other: spec.priority: "),
            "{}",
            state.errors[0]
        );
        let snap = state.full();
        assert_eq!(names(&snap.cluster_policies), ["deny-other", "new-good"]);
        assert_eq!(snap.cluster_policies["deny-other"].spec.priority, 10);
        // Deleted: forgotten, with its error.
        let mut deleted = cluster();
        deleted.cluster_policies.clear();
        let state = to_state(&deleted, &mut last);
        assert!(state.errors.is_empty(), "{:?}", state.errors);
        assert!(state.full().cluster_policies.is_empty());
    }

    #[test]
    fn the_snapshot_compiles_for_the_local_node_only() {
        let state = to_state(&cluster(), &mut LastGood::default());
        let node = NodeContext {
            node_name: "node-1".into(),
            node_ips: Default::default(),
        };
        let desired = compile(state.full(), &node, &Allocations::default());
        assert_eq!(desired.endpoints.len(), 1);
        assert!(
            desired
                .endpoints
                .contains_key(&ObjectRef::new("demo", "web"))
        );
    }

    #[test]
    fn invalid_object_keeps_its_last_good_version_and_names_the_field() {
        let mut last = LastGood::default();
        to_state(&cluster(), &mut last);
        let mut bad = cluster();
        bad.policies = vec![policy("demo", "allow", "10.0.0.0/33")];
        let state = to_state(&bad, &mut last);
        assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
        let e = &state.errors[0];
        assert_eq!(e.object, "NetworkPolicy demo/allow");
        assert_eq!(
            e.field.as_deref(),
            Some("spec.ingress[0].from[0].ipBlock.cidr")
        );
        assert!(e.kept_last_good);
        assert!(
            e.to_string()
                .starts_with("kubernetes: NetworkPolicy demo/allow: spec.ingress[0]"),
            "{e}"
        );
        let kept = &state.full().policies[&ObjectRef::new("demo", "allow")];
        let cidr = &kept.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
            .from
            .as_ref()
            .unwrap()[0]
            .ip_block
            .as_ref()
            .unwrap()
            .cidr;
        assert_eq!(cidr, "10.0.0.0/16");
        // Still invalid at the next read: still kept.
        let state = to_state(&bad, &mut last);
        assert!(state.errors[0].kept_last_good);
        assert_eq!(state.full().policies.len(), 1);
        // Fixed: the new version.
        let mut fixed = cluster();
        fixed.policies = vec![policy("demo", "allow", "10.1.0.0/16")];
        let state = to_state(&fixed, &mut last);
        assert!(state.errors.is_empty());
    }

    #[test]
    fn new_invalid_object_is_left_out_and_deleted_objects_are_forgotten() {
        let mut last = LastGood::default();
        let mut objects = cluster();
        objects.policies.push(policy("demo", "bad", "300.0.0.0/8"));
        objects
            .pods
            .push(pod("demo", "weird", "node-1", "not-an-ip"));
        let state = to_state(&objects, &mut last);
        assert_eq!(state.errors.len(), 2, "{:?}", state.errors);
        assert!(state.errors.iter().all(|e| !e.kept_last_good));
        assert_eq!(state.errors[0].object, "Pod demo/weird");
        assert_eq!(state.errors[0].field.as_deref(), Some("status.podIP"));
        assert!(
            !state
                .full()
                .policies
                .contains_key(&ObjectRef::new("demo", "bad"))
        );
        assert!(
            !state
                .full()
                .pods
                .contains_key(&ObjectRef::new("demo", "weird"))
        );

        // Deleted from the API while valid, then re-created invalid: not resurrected.
        let mut deleted = cluster();
        deleted.policies.clear();
        let state = to_state(&deleted, &mut last);
        assert!(state.full().policies.is_empty());
        let mut recreated = cluster();
        recreated.policies = vec![policy("demo", "allow", "bogus")];
        let state = to_state(&recreated, &mut last);
        assert!(!state.errors[0].kept_last_good);
        assert!(state.full().policies.is_empty());
    }

    #[test]
    fn an_unchanged_pod_gives_every_snapshot_the_same_arc() {
        let mut last = LastGood::default();
        let objects = cluster();
        let web = ObjectRef::new("demo", "web");
        let first = to_state(&objects, &mut last).full().pods[&web].clone();
        assert_eq!(first.node_name.as_deref(), Some("node-1"));
        assert_eq!(&first.labels["app"], "web");
        let second = to_state(&objects, &mut last).full().pods[&web].clone();
        assert!(Arc::ptr_eq(&first, &second));
        // A new version of the pod: converted again.
        let mut changed = cluster();
        changed.pods[0] = pod("demo", "web", "node-1", "10.0.1.11");
        let third = to_state(&changed, &mut last).full().pods[&web].clone();
        assert_eq!(third.pod_ip, "10.0.1.11".parse().ok());
    }

    #[test]
    fn audit_mode_from_the_configmap() {
        let mut last = LastGood::default();
        let mut objects = cluster();
        for (value, want) in [
            ("true", Some(AuditMode::Audit)),
            (" False ", Some(AuditMode::Blocking)),
        ] {
            objects.config = Some(config(Some(value)));
            assert_eq!(to_state(&objects, &mut last).audit_mode, want);
        }
        // An invalid value keeps the last good one, with an error.
        objects.config = Some(config(Some("yes please")));
        let state = to_state(&objects, &mut last);
        assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
        assert_eq!(state.errors.len(), 1);
        let e = &state.errors[0];
        assert_eq!(e.object, "ConfigMap cns-system/cns-config");
        assert_eq!(e.field.as_deref(), Some("data.policyAuditMode"));
        assert!(e.kept_last_good);
        // Key removed, or ConfigMap deleted: the flag is in charge again.
        objects.config = Some(config(None));
        assert_eq!(to_state(&objects, &mut last).audit_mode, None);
        objects.config = None;
        assert_eq!(to_state(&objects, &mut last).audit_mode, None);
        // Invalid with no good value before (a restart): blocking, never the flag's audit.
        objects.config = Some(config(Some("on")));
        let state = to_state(&objects, &mut last);
        assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
        assert!(!state.errors[0].kept_last_good);
        assert!(state.errors[0].message.ends_with("enforcing blocking"));
        // Twice: still not a last good value.
        let state = to_state(&objects, &mut last);
        assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
        assert!(!state.errors[0].kept_last_good);
    }

    #[test]
    fn a_configmap_that_did_not_decode_keeps_the_last_mode_reported() {
        let mut last = LastGood::default();
        let key = ObjectRef::new("cns-system", "cns-config");
        let good: Entry<ConfigMap> = Ok(config(Some("true")));
        to_changes(&cluster(), Changed::new(), Some((&key, &good)), &mut last);
        let bad: Entry<ConfigMap> = Err(Arc::new(Invalid {
            field: Some("data.policyAuditMode".into()),
            message: "invalid type: integer `1`, expected a string".into(),
        }));
        let state = to_changes(&cluster(), Changed::new(), Some((&key, &bad)), &mut last);
        assert_eq!(state.audit_mode, Some(AuditMode::Audit));
        assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
        let e = &state.errors[0];
        assert_eq!(e.object, "ConfigMap cns-system/cns-config");
        assert_eq!(e.field.as_deref(), Some("data.policyAuditMode"));
        assert!(e.kept_last_good);
        // Gone: the flag is in charge again, and the error with it.
        let state = to_changes(&cluster(), Changed::new(), None, &mut last);
        assert_eq!((state.audit_mode, state.errors.len()), (None, 0));
    }

    #[test]
    fn slim_pod_keeps_what_the_compiler_reads() {
        let mut slim = Pod::clone(&pod("demo", "web", "node-1", "10.0.1.10"));
        slim.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                ("keep".to_owned(), "me".to_owned()),
            ]
            .into(),
        );
        slim_pod(&mut slim);
        assert!(slim.metadata.managed_fields.is_none());
        assert_eq!(
            slim.metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["keep"]
        );
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        let c = &spec.containers[0];
        assert!(c.env.is_none() && c.image.is_none());
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (
                port.container_port,
                port.name.as_deref(),
                port.protocol.as_deref()
            ),
            (8080, Some("http"), Some("TCP"))
        );
        let status = slim.status.as_ref().unwrap();
        assert!(status.conditions.is_none());
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.1.10"));
        assert_eq!(status.phase.as_deref(), Some("Running"));

        // Same compile result with the slim pods.
        let full = cluster();
        let mut slimmed = cluster();
        slimmed.pods = full
            .pods
            .iter()
            .map(|p| {
                let mut p = Pod::clone(p);
                slim_pod(&mut p);
                Arc::new(p)
            })
            .collect();
        let node = NodeContext {
            node_name: "node-1".into(),
            node_ips: Default::default(),
        };
        let a = compile(
            to_state(&full, &mut LastGood::default()).full(),
            &node,
            &Allocations::default(),
        );
        let b = compile(
            to_state(&slimmed, &mut LastGood::default()).full(),
            &node,
            &Allocations::default(),
        );
        assert_eq!(a, b);
    }

    mod changes {
        //! Reading only the changed objects gives what reading every object gives.
        use proptest::{collection::vec, prelude::*};

        use super::*;

        /// One edit: object `i` of a small pool set to version `v` (2: an invalid pod or policy)
        /// or removed.
        fn edit() -> impl Strategy<Value = (u8, Option<u8>)> {
            (0u8..15, prop::option::weighted(0.8, 0u8..3))
        }

        fn object(i: u8) -> (Kind, ObjectRef) {
            let ns = ["a", "b"][usize::from(i % 2)];
            match i % 5 {
                0 => (Kind::Namespace, ObjectRef::new("", ns)),
                1 => (Kind::Pod, ObjectRef::new(ns, format!("p{}", i / 5))),
                2 => (
                    Kind::NetworkPolicy,
                    ObjectRef::new(ns, format!("np{}", i / 5)),
                ),
                3 => (
                    Kind::ClusterNetworkPolicy,
                    ObjectRef::new("", format!("cnp{}", i / 5)),
                ),
                _ => (Kind::Node, ObjectRef::new("", format!("n{}", i / 5))),
            }
        }

        fn set(objects: &mut ClusterObjects, i: u8, v: Option<u8>) -> (Kind, ObjectRef) {
            let (kind, key) = object(i);
            let ip = if v == Some(2) {
                "bogus".to_owned()
            } else {
                format!("10.0.0.{i}")
            };
            let cidr = if v == Some(2) {
                "10.0.0.0/33".to_owned()
            } else {
                format!("10.{}.0.0/16", v.unwrap_or(0))
            };
            match kind {
                Kind::Namespace => {
                    objects
                        .namespaces
                        .retain(|n| n.metadata.name.as_deref() != Some(&key.name));
                    if let Some(v) = v {
                        objects.namespaces.push(from(
                            json!({"metadata": {"name": &*key.name, "labels": {"v": v.to_string()}}}),
                        ));
                    }
                }
                Kind::Pod => {
                    objects.pods.retain(|p| object_ref(&p.metadata) != key);
                    if v.is_some() {
                        objects
                            .pods
                            .push(pod(&key.namespace, &key.name, "node-1", &ip));
                    }
                }
                Kind::NetworkPolicy => {
                    objects.policies.retain(|p| object_ref(&p.metadata) != key);
                    if v.is_some() {
                        objects
                            .policies
                            .push(policy(&key.namespace, &key.name, &cidr));
                    }
                }
                Kind::ClusterNetworkPolicy => {
                    objects
                        .cluster_policies
                        .retain(|p| p.metadata.name.as_deref() != Some(&key.name));
                    if let Some(v) = v {
                        let priority = if v == 2 { 1001 } else { i32::from(v) };
                        objects
                            .cluster_policies
                            .push(cluster_policy(&key.name, priority, "a"));
                    }
                }
                Kind::Node => {
                    objects
                        .nodes
                        .retain(|n| n.metadata.name.as_deref() != Some(&key.name));
                    if let Some(v) = v {
                        objects.nodes.push(node(
                            &key.name,
                            &v.to_string(),
                            &format!("192.168.0.{i}"),
                        ));
                    }
                }
            }
            (kind, key)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn reading_changes_gives_what_reading_everything_gives(
                steps in vec(vec(edit(), 1..4), 1..10),
            ) {
                // A model of what must hold: per object of the pool, its last valid version
                // (forgotten when deleted) and whether its current version is invalid.
                let mut model: BTreeMap<(Kind, ObjectRef), (Option<u8>, bool)> = BTreeMap::new();
                let mut objects = ClusterObjects { config: Some(config(Some("false"))), ..ClusterObjects::default() };
                let mut by_changes = LastGood::default();
                let mut reference = LastGood::default();
                let SnapshotUpdate::Full(mut tracked) = to_state(&objects, &mut by_changes).update else {
                    unreachable!()
                };
                to_state(&objects, &mut reference);
                for (step, edits) in steps.into_iter().enumerate() {
                    let mut changed = Changed::new();
                    // The read sees each object's last edit.
                    let mut last_edit = BTreeMap::new();
                    for (i, v) in edits {
                        last_edit.insert(set(&mut objects, i, v), v);
                    }
                    for (key, v) in last_edit {
                        let m = model.entry(key.clone()).or_default();
                        // Namespaces and nodes have nothing to be invalid in.
                        *m = match v {
                            None => (None, false),
                            Some(2) if !matches!(key.0, Kind::Namespace | Kind::Node) => (m.0, true),
                            Some(v) => (Some(v), false),
                        };
                        changed.insert(key);
                    }
                    let config = objects.config.clone().map(|cm| (ObjectRef::new("cns-system", "cns-config"), Ok(cm)));
                    let config = config.as_ref().map(|(k, e)| (k, e));
                    let state = to_changes(&objects, changed, config, &mut by_changes);
                    let SnapshotUpdate::Changes(c) = state.update else { unreachable!() };
                    c.apply_to(&mut tracked);
                    let expected = to_state(&objects, &mut reference);
                    let full = expected.full();
                    prop_assert_eq!(&tracked.namespaces, &full.namespaces, "step {}", step);
                    prop_assert_eq!(&tracked.pods, &full.pods, "step {}", step);
                    prop_assert_eq!(&tracked.policies, &full.policies, "step {}", step);
                    prop_assert_eq!(&tracked.cluster_policies, &full.cluster_policies, "step {}", step);
                    prop_assert_eq!(&tracked.nodes, &full.nodes, "step {}", step);
                    prop_assert_eq!(&state.errors, &expected.errors, "step {}", step);
                    let kept = |kind: Kind| -> Vec<ObjectRef> {
                        model.iter().filter(|((k, _), m)| *k == kind && m.0.is_some()).map(|((_, r), _)| r.clone()).collect()
                    };
                    let ns: Vec<ObjectRef> = tracked.namespaces.keys().map(|n| ObjectRef::new("", n.clone())).collect();
                    prop_assert_eq!(ns, kept(Kind::Namespace), "step {}", step);
                    prop_assert_eq!(tracked.pods.keys().cloned().collect::<Vec<_>>(), kept(Kind::Pod), "step {}", step);
                    prop_assert_eq!(tracked.policies.keys().cloned().collect::<Vec<_>>(), kept(Kind::NetworkPolicy), "step {}", step);
                    let cluster_scoped = |names: Vec<&Arc<str>>| -> Vec<ObjectRef> { names.into_iter().map(|n| ObjectRef::new("", n.clone())).collect() };
                    prop_assert_eq!(cluster_scoped(tracked.cluster_policies.keys().collect()), kept(Kind::ClusterNetworkPolicy), "step {}", step);
                    prop_assert_eq!(cluster_scoped(tracked.nodes.keys().collect()), kept(Kind::Node), "step {}", step);
                    let bad: Vec<(String, bool)> = model
                        .iter()
                        .filter(|(_, m)| m.1)
                        .map(|((k, r), m)| (if k.cluster_scoped() { format!("{k:?} {}", r.name) } else { format!("{k:?} {r}") }, m.0.is_some()))
                        .collect();
                    let reported: Vec<(String, bool)> = state.errors.iter().map(|e| (e.object.clone(), e.kept_last_good)).collect();
                    prop_assert_eq!(reported, bad, "step {}", step);
                }
            }
        }
    }
}
