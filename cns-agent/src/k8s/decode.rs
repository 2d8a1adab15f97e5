//! What the watchers keep of each object, decoded one object at a time.
//!
//! The watchers do not watch k8s-openapi types directly: they watch [`Decoded<T>`], whose
//! `Deserialize` turns each object of a list or watch event into what the caches keep
//! ([`Keep`]) at once — a pod into its compact [`PodInfo`] (validated first), a node into
//! its [`NodeInfo`], other kinds into their slimmed objects. So every pod of the cluster is held once, compact, and an
//! object that does not fit its type (a string where a port number goes) becomes an
//! [`Invalid`] entry naming the field, instead of failing the whole list (a typed
//! `ObjectList<Pod>` fails as a whole, and the watcher would retry it forever).

use std::{borrow::Cow, fmt, sync::Arc};

use k8s_openapi::{
    ClusterResourceScope,
    api::{
        core::v1::{ConfigMap, Namespace, Node, Pod},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::Resource;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::snapshot::{slim_metadata, slim_pod};
use crate::policy::{
    cluster,
    model::{ClusterNetworkPolicy, NodeInfo, ObjectRef, PodInfo},
    validate::{FieldError, validate_pod},
};

/// Why an object cannot be used: the field at fault (when known) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: Option<String>,
    pub message: String,
}

impl Invalid {
    /// The first field's error, with the others appended (as the manifests source says it).
    pub fn of_fields(errors: &[FieldError]) -> Option<Self> {
        let first = errors.first()?;
        let message = errors.iter().skip(1).fold(first.message.clone(), |acc, e| {
            format!("{acc}; {}: {}", e.field, e.message)
        });
        Some(Self {
            field: Some(first.field.clone()),
            message,
        })
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One cached object: what is kept of it, or why it cannot be used.
pub type Entry<T> = Result<Arc<T>, Arc<Invalid>>;

/// What a cache keeps of one kind: `Api` is the API's type, `keep` makes the kept form
/// (compared with the cached one: an update that keeps the same is not a change).
pub trait Keep: Sized + PartialEq + Send + Sync + fmt::Debug + 'static {
    type Api: Resource<DynamicType = ()> + DeserializeOwned;
    fn keep(obj: Self::Api) -> Result<Self, Invalid>;
}

impl Keep for Namespace {
    type Api = Namespace;
    fn keep(mut ns: Namespace) -> Result<Self, Invalid> {
        slim_metadata(&mut ns.metadata);
        Ok(ns)
    }
}

impl Keep for NetworkPolicy {
    type Api = NetworkPolicy;
    fn keep(mut np: NetworkPolicy) -> Result<Self, Invalid> {
        slim_metadata(&mut np.metadata);
        Ok(np)
    }
}

impl Keep for ConfigMap {
    type Api = ConfigMap;
    fn keep(mut cm: ConfigMap) -> Result<Self, Invalid> {
        slim_metadata(&mut cm.metadata);
        Ok(cm)
    }
}

/// Validated at each read (`validate_cluster_policy`), like a NetworkPolicy; its status
/// (conditions other controllers write) is never read.
impl Keep for ClusterNetworkPolicy {
    type Api = ClusterNetworkPolicy;
    fn keep(mut cnp: ClusterNetworkPolicy) -> Result<Self, Invalid> {
        slim_metadata(&mut cnp.metadata);
        cnp.status = None;
        Ok(cnp)
    }
}

/// Only a node's labels and addresses are kept: a kubelet's status updates (heartbeats,
/// conditions, images) then leave the cache as it was.
impl Keep for NodeInfo {
    type Api = Node;
    fn keep(node: Node) -> Result<Self, Invalid> {
        Ok(NodeInfo::from(&node))
    }
}

/// The group of ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`).
const CNP_GROUP: &str = "policy.networking.k8s.io";
const CNP_VERSION: &str = "v1alpha2";
const CNP_PLURAL: &str = "clusternetworkpolicies";

/// ClusterNetworkPolicy for kube's `Api`: a cluster-scoped custom resource. Written by hand
/// (k8s-openapi has no such type): kube's `CustomResource` derive would generate the
/// top-level struct itself from the spec, a second definition of the type in
/// `policy::cluster` (which the manifests source also reads, `apiVersion` and `kind`
/// included), and needs a JSON schema derive on every type of the spec.
impl Resource for ClusterNetworkPolicy {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        cluster::KIND.into()
    }
    fn group((): &()) -> Cow<'_, str> {
        CNP_GROUP.into()
    }
    fn version((): &()) -> Cow<'_, str> {
        CNP_VERSION.into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        CNP_PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A pod is validated as a `Pod` when its event arrives, then only its [`PodInfo`] is kept.
impl Keep for PodInfo {
    type Api = Pod;
    fn keep(mut pod: Pod) -> Result<Self, Invalid> {
        slim_pod(&mut pod);
        match Invalid::of_fields(&validate_pod(&pod)) {
            Some(invalid) => Err(invalid),
            None => Ok(PodInfo::from(&pod)),
        }
    }
}

/// An object of a list or watch event: its name, namespace and resource version (what the
/// watcher and the caches need) and what is kept of it.
#[derive(Debug)]
pub struct Decoded<T> {
    metadata: ObjectMeta,
    pub kept: Entry<T>,
}

impl<T> Clone for Decoded<T> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            kept: self.kept.clone(),
        }
    }
}

impl<T> Decoded<T> {
    /// Where the caches file it (namespaces under an empty namespace).
    pub fn key(&self) -> ObjectRef {
        ObjectRef::new(
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl<T: Keep> Resource for Decoded<T> {
    type DynamicType = ();
    type Scope = <T::Api as Resource>::Scope;

    fn kind((): &()) -> Cow<'_, str> {
        T::Api::kind(&())
    }
    fn group((): &()) -> Cow<'_, str> {
        T::Api::group(&())
    }
    fn version((): &()) -> Cow<'_, str> {
        T::Api::version(&())
    }
    fn plural((): &()) -> Cow<'_, str> {
        T::Api::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata the watcher and the caches read, taken leniently (whatever else is wrong).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

impl<'de, T: Keep> Deserialize<'de> for Decoded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a `Value`, one object at a time: a type error stays this object's.
        let value = serde_json::Value::deserialize(d)?;
        let id = value
            .get("metadata")
            .and_then(|m| Identity::deserialize(m).ok())
            .unwrap_or_default();
        let kept = serde_path_to_error::deserialize::<_, T::Api>(value)
            .map_err(|e| Invalid {
                field: Some(e.path().to_string()),
                message: e.into_inner().to_string(),
            })
            .and_then(T::keep)
            .map(Arc::new)
            .map_err(Arc::new);
        Ok(Self {
            metadata: ObjectMeta {
                name: id.name,
                namespace: id.namespace,
                resource_version: id.resource_version,
                ..ObjectMeta::default()
            },
            kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_is_kept_compact_and_validated() {
        let pod: Decoded<PodInfo> = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "7",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                     "ports": [{"containerPort": 80, "name": "http"}]}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running"},
        }))
        .expect("decodes");
        assert_eq!(pod.key(), ObjectRef::new("demo", "web"));
        assert_eq!(pod.resource_version().as_deref(), Some("7"));
        let info = pod.kept.expect("valid");
        assert_eq!(&info.labels["app"], "web");
        assert_eq!(info.ports[0].container_port, 80);
        assert_eq!(info.pod_ip, "10.0.0.1".parse().ok());

        let bad: Decoded<PodInfo> = serde_json::from_value(json!({
            "metadata": {"name": "weird", "namespace": "demo"},
            "status": {"podIP": "not-an-ip"},
        }))
        .expect("decodes");
        let e = bad.kept.expect_err("invalid");
        assert_eq!(e.field.as_deref(), Some("status.podIP"));
    }

    #[test]
    fn a_malformed_object_names_its_field_and_keeps_its_name() {
        // As in a list: the other items still decode.
        let list: Vec<Decoded<PodInfo>> = serde_json::from_value(json!([
            {"metadata": {"name": "bad", "namespace": "demo", "resourceVersion": "3"},
             "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}},
            {"metadata": {"name": "good", "namespace": "demo"}},
        ]))
        .expect("the list decodes");
        assert_eq!(list[0].key(), ObjectRef::new("demo", "bad"));
        assert_eq!(list[0].resource_version().as_deref(), Some("3"));
        let e = list[0].kept.as_ref().expect_err("malformed");
        assert_eq!(
            e.field.as_deref(),
            Some("spec.containers[0].ports[0].containerPort")
        );
        assert!(e.message.contains("invalid type"), "{e}");
        assert!(list[1].kept.is_ok());

        let ns: Decoded<Namespace> =
            serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"a": 1}}}))
                .expect("decodes");
        assert_eq!(ns.key(), ObjectRef::new("", "x"));
        assert_eq!(
            ns.kept.expect_err("malformed").field.as_deref(),
            Some("metadata.labels.a")
        );
    }

    #[test]
    fn a_cluster_network_policy_is_a_cluster_scoped_resource() {
        assert_eq!(
            ClusterNetworkPolicy::url_path(&(), None),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
        );
        assert_eq!(ClusterNetworkPolicy::api_version(&()), cluster::API_VERSION);
        assert_eq!(ClusterNetworkPolicy::kind(&()), "ClusterNetworkPolicy");
        assert_eq!(
            Decoded::<ClusterNetworkPolicy>::url_path(&(), None),
            ClusterNetworkPolicy::url_path(&(), None)
        );
    }

    #[test]
    fn a_cluster_network_policy_is_kept_typed_without_its_status() {
        let spec = json!({"tier": "Admin", "priority": 10,
            "subject": {"namespaces": {}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]});
        let cnp: Decoded<ClusterNetworkPolicy> = serde_json::from_value(json!({
            "apiVersion": cluster::API_VERSION, "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny", "resourceVersion": "4",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": spec,
            "status": {"conditions": []},
        }))
        .expect("decodes");
        assert_eq!(cnp.key(), ObjectRef::new("", "deny"));
        let kept = cnp.kept.expect("valid");
        assert_eq!(kept.spec.priority, 10);
        assert!(kept.status.is_none() && kept.metadata.managed_fields.is_none());

        let bad: Decoded<ClusterNetworkPolicy> = serde_json::from_value(json!({
            "metadata": {"name": "bad"},
            "spec": {"tier": "Admin", "priority": "high", "subject": {"namespaces": {}}},
        }))
        .expect("decodes");
        assert_eq!(bad.key(), ObjectRef::new("", "bad"));
        let e = bad.kept.expect_err("malformed");
        assert_eq!(e.field.as_deref(), Some("spec.priority"));
    }

    #[test]
    fn a_node_is_kept_as_its_labels_and_addresses() {
        let node: Decoded<NodeInfo> = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.0.2"},
                {"type": "Hostname", "address": "n1"}],
                "images": [{"names": ["nginx"], "sizeBytes": 1}]},
        }))
        .expect("decodes");
        assert_eq!(node.key(), ObjectRef::new("", "n1"));
        let info = node.kept.expect("valid");
        assert_eq!(info.labels.get("zone"), Some("a"));
        assert_eq!(
            *info.addresses,
            ["192.168.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
    }
}
