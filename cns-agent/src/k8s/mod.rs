//! The Kubernetes API as a source of [`Snapshot`](crate::policy::model::Snapshot)s
//! (`cns-agent run` without `--manifests`).
//!
//! [`KubeSource::start`] spawns one kube-runtime watcher per kind on the current tokio
//! runtime: Namespaces, Pods and NetworkPolicies of every namespace, ClusterNetworkPolicies
//! (`policy.networking.k8s.io/v1alpha2`), Nodes, and the agent's own ConfigMap (for
//! `policyAuditMode`). Each feeds the agent's own cache ([`store::Store`]) of what the agent
//! keeps of its objects ([`decode`]: a pod as its compact `PodInfo`, a node as its
//! `NodeInfo`, so every pod and node of the cluster is held once, compact), which the agent
//! thread reads with [`SnapshotSource::read`]. An object that does not decode is an entry
//! with its error: reported like an invalid object, while the rest of its list is enforced.
//! An update that keeps the same (a kubelet's status update) is not a change. Each watch
//! event also records which object it changed: a read validates just those
//! ([`snapshot::to_changes`], pure) and hands the compiler the changes, so a pod edit
//! costs that pod, not the cluster. The first read,
//! a read after a re-list (a re-list has no delete events for what went) and a read the
//! agent asks to be full turn the whole caches into the snapshot ([`snapshot::to_state`]).
//!
//! - Nothing is enforced from a half-synced cache: `read` answers
//!   [`SourceFailure::NotReady`] until every watcher has finished its first list.
//! - A cluster without the ClusterNetworkPolicy CRD is not an error: a list or watch
//!   answered `404` counts as synced with none (`absent` in `status`), and the source lists
//!   again with a growing back-off (0.8 s to 30 s, with jitter) until the CRD appears.
//! - Watch errors, dropped connections, API-server restarts and `410 Gone` do not flush
//!   anything: the watcher resumes from its last resource version (bookmarks keep it
//!   current), or re-lists after a 410; the store swaps the new list in whole once it is
//!   complete, so the caches hold the last state meanwhile.
//! - Every change calls the `notify` callback; the agent coalesces those into one resync.

pub mod decode;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod tests;

use std::{
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        utils::Backoff,
        watcher::{self, DefaultBackoff, Event},
    },
};
use tokio::task::JoinHandle;

pub use crate::source::WatchStatus;
use crate::source::{SnapshotSource, SourceFailure, SourceState};

pub use snapshot::{AUDIT_MODE_KEY, ClusterObjects, LastGood, to_state};

use self::{
    decode::{Decoded, Entry, Keep},
    store::{Store, Writer},
};
use crate::{
    error_chain,
    policy::model::{ClusterNetworkPolicy, NodeInfo, ObjectRef, PodInfo},
    source::Kind,
};

/// What the watchers changed in the caches since the last read.
#[derive(Debug, Default)]
struct Dirty {
    /// The objects changed (by events since the first list).
    changed: snapshot::Changed,
    /// A cache was (re-)listed: the whole of it may have changed.
    relisted: bool,
}

/// The change callback: called after every change to a cache (coalesce it).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "no Kubernetes configuration found (neither in-cluster service account nor kubeconfig)"
    )]
    Config(#[source] kube::Error),
    #[error("the Kubernetes source must be started inside a tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
}

/// A client from the in-cluster service account, or else `KUBECONFIG` / `~/.kube/config`.
pub async fn connect() -> Result<Client, KubeError> {
    Client::try_default().await.map_err(KubeError::Config)
}

/// How to retry after a watch error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retry {
    /// kube-runtime's default: exponential from 0.8 s to 30 s, with jitter.
    #[default]
    Default,
    /// A fixed delay (tests).
    Fixed(Duration),
}

#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// Where the agent's ConfigMap is (the agent's namespace, `cns-system`).
    pub configmap_namespace: String,
    /// Its name (`cns-config`); it may be missing (then `--policy-audit-mode` rules).
    pub configmap_name: String,
    pub retry: Retry,
}

impl KubeSourceConfig {
    pub fn new(configmap_namespace: impl Into<String>, configmap_name: impl Into<String>) -> Self {
        Self {
            configmap_namespace: configmap_namespace.into(),
            configmap_name: configmap_name.into(),
            retry: Retry::Default,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    resource: &'static str,
    /// Served by a CRD that may not be installed: `404 Not Found` is not an error.
    optional: bool,
    synced: AtomicBool,
    /// The API server does not serve it (404): synced with no objects.
    absent: AtomicBool,
    lists: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Health {
    fn new(resource: &'static str, optional: bool) -> Arc<Self> {
        Arc::new(Self {
            resource,
            optional,
            ..Default::default()
        })
    }

    fn status(&self) -> WatchStatus {
        WatchStatus {
            resource: self.resource,
            synced: self.synced.load(Ordering::Acquire),
            absent: self.absent.load(Ordering::Acquire),
            lists: self.lists.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// Cluster state from the API server, through watchers. See the module documentation.
pub struct KubeSource {
    namespaces: Arc<Store<Namespace>>,
    pods: Arc<Store<PodInfo>>,
    policies: Arc<Store<NetworkPolicy>>,
    cluster_policies: Arc<Store<ClusterNetworkPolicy>>,
    nodes: Arc<Store<NodeInfo>>,
    config: Arc<Store<ConfigMap>>,
    health: Vec<Arc<Health>>,
    dirty: Arc<Mutex<Dirty>>,
    last: LastGood,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts the watchers on the current tokio runtime (call it from inside one; the tasks
    /// run until the source is dropped). `notify` is called after every change to a cache,
    /// from a runtime thread.
    pub fn start(
        client: Client,
        cfg: KubeSourceConfig,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self, KubeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(KubeError::NoRuntime)?;
        let notify: Notify = Arc::new(notify);
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let mut tasks = Vec::new();
        let mut health = Vec::new();
        // Lists at resourceVersion=0, unpaginated: served from the API server's watch cache
        // (as client-go's informers do), since every node lists everything.
        let all = || {
            let mut c = watcher::Config::default().any_semantic();
            c.page_size = None;
            c
        };

        let mut health_of = |resource, optional| {
            let h = Health::new(resource, optional);
            health.push(h.clone());
            h
        };
        let (namespaces, t) = watch(
            &runtime,
            Api::<Decoded<Namespace>>::all(client.clone()),
            all(),
            cfg.retry,
            Some((Kind::Namespace, dirty.clone())),
            health_of("namespaces", false),
            notify.clone(),
        );
        tasks.push(t);
        let (pods, t) = watch(
            &runtime,
            Api::<Decoded<PodInfo>>::all(client.clone()),
            all(),
            cfg.retry,
            Some((Kind::Pod, dirty.clone())),
            health_of("pods", false),
            notify.clone(),
        );
        tasks.push(t);
        let (policies, t) = watch(
            &runtime,
            Api::<Decoded<NetworkPolicy>>::all(client.clone()),
            all(),
            cfg.retry,
            Some((Kind::NetworkPolicy, dirty.clone())),
            health_of("networkpolicies", false),
            notify.clone(),
        );
        tasks.push(t);
        // A custom resource: a cluster without its CRD has none (see `watch`).
        let (cluster_policies, t) = watch(
            &runtime,
            Api::<Decoded<ClusterNetworkPolicy>>::all(client.clone()),
            all(),
            cfg.retry,
            Some((Kind::ClusterNetworkPolicy, dirty.clone())),
            health_of("clusternetworkpolicies", true),
            notify.clone(),
        );
        tasks.push(t);
        let (nodes, t) = watch(
            &runtime,
            Api::<Decoded<NodeInfo>>::all(client.clone()),
            all(),
            cfg.retry,
            Some((Kind::Node, dirty.clone())),
            health_of("nodes", false),
            notify.clone(),
        );
        tasks.push(t);
        // One object by name: RBAC can then restrict the agent to it (resourceNames).
        let (config, t) = watch(
            &runtime,
            Api::<Decoded<ConfigMap>>::namespaced(client, &cfg.configmap_namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", cfg.configmap_name)),
            cfg.retry,
            // Read at every sync: one object.
            None,
            health_of("configmap", false),
            notify,
        );
        tasks.push(t);
        Ok(Self {
            namespaces,
            pods,
            policies,
            cluster_policies,
            nodes,
            config,
            health,
            dirty,
            last: LastGood::default(),
            tasks,
        })
    }

    /// Whether every watcher has finished its first list (readiness).
    pub fn is_synced(&self) -> bool {
        self.health.iter().all(|h| h.synced.load(Ordering::Acquire))
    }

    /// Per watcher: synced (or absent), lists, errors.
    pub fn watch_status(&self) -> Vec<WatchStatus> {
        self.health.iter().map(|h| h.status()).collect()
    }

    /// How many objects each cache holds: namespaces, pods, policies.
    pub fn cached(&self) -> (usize, usize, usize) {
        (
            self.namespaces.read().len(),
            self.pods.read().len(),
            self.policies.read().len(),
        )
    }

    /// The agent's ConfigMap (the watch selects it by name: at most one).
    fn config(&self) -> Option<(ObjectRef, Entry<ConfigMap>)> {
        let config = self.config.read();
        config.iter().next().map(|(k, e)| (k.clone(), e.clone()))
    }

    /// Every object the caches hold.
    fn present(&self) -> snapshot::Changed {
        let mut present = snapshot::Changed::new();
        let ns = self.namespaces.read();
        present.extend(ns.keys().map(|k| (Kind::Namespace, k.clone())));
        let pods = self.pods.read();
        present.extend(pods.keys().map(|k| (Kind::Pod, k.clone())));
        let policies = self.policies.read();
        present.extend(policies.keys().map(|k| (Kind::NetworkPolicy, k.clone())));
        let cluster_policies = self.cluster_policies.read();
        present.extend(
            cluster_policies
                .keys()
                .map(|k| (Kind::ClusterNetworkPolicy, k.clone())),
        );
        let nodes = self.nodes.read();
        present.extend(nodes.keys().map(|k| (Kind::Node, k.clone())));
        present
    }
}

impl snapshot::Kept for KubeSource {
    fn namespace(&self, name: &str) -> Option<Entry<Namespace>> {
        self.namespaces.get(&ObjectRef::new("", name))
    }

    fn pod(&self, key: &ObjectRef) -> Option<Entry<PodInfo>> {
        self.pods.get(key)
    }

    fn policy(&self, key: &ObjectRef) -> Option<Entry<NetworkPolicy>> {
        self.policies.get(key)
    }

    fn cluster_policy(&self, name: &str) -> Option<Entry<ClusterNetworkPolicy>> {
        self.cluster_policies.get(&ObjectRef::new("", name))
    }

    fn node(&self, name: &str) -> Option<Entry<NodeInfo>> {
        self.nodes.get(&ObjectRef::new("", name))
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SnapshotSource for KubeSource {
    fn read(&mut self, full: bool) -> Result<SourceState, SourceFailure> {
        let pending: Vec<&str> = self
            .health
            .iter()
            .filter(|h| !h.synced.load(Ordering::Acquire))
            .map(|h| h.resource)
            .collect();
        if !pending.is_empty() {
            return Err(SourceFailure::NotReady {
                what: format!("waiting for the first list of {}", pending.join(", ")),
            });
        }
        // Taken before the caches are read: what changes meanwhile is read again next time.
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let config = self.config();
        let config = config.as_ref().map(|(k, e)| (k, e));
        let mut last = std::mem::take(&mut self.last);
        let state = if full || dirty.relisted {
            snapshot::to_state_of(self, self.present(), config, &mut last)
        } else {
            snapshot::to_changes(self, dirty.changed, config, &mut last)
        };
        self.last = last;
        Ok(state)
    }

    fn describe(&self) -> String {
        "kubernetes".into()
    }

    fn watches(&self) -> Vec<WatchStatus> {
        self.watch_status()
    }
}

/// `Retry` as a kube-runtime backoff.
enum RetryBackoff {
    Default(Box<DefaultBackoff>),
    Fixed(Duration),
}

impl From<Retry> for RetryBackoff {
    fn from(retry: Retry) -> Self {
        match retry {
            Retry::Default => RetryBackoff::Default(Box::default()),
            Retry::Fixed(d) => RetryBackoff::Fixed(d),
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        match self {
            RetryBackoff::Default(b) => b.next(),
            RetryBackoff::Fixed(d) => Some(*d),
        }
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        if let RetryBackoff::Default(b) = self {
            b.reset();
        }
    }
}

/// Spawns a watcher for `api`: the store it feeds, and the task feeding it. The task
/// applies each event to the store, records the objects it changed in `dirty` (for the
/// kind given), then calls `notify`.
///
/// A kind served by a CRD (`health.optional`) may not be served at all: a list or watch
/// answered `404 Not Found` means there are none (the CRD is not installed, or was
/// deleted, which deletes its objects). The store is emptied, the kind counts as synced
/// (absent), and the watcher starts again from a new list after a back-off that grows
/// until the CRD appears (kube-runtime's own back-off is reset by the `Init` event each
/// list attempt begins with, so it would retry a missing CRD every 0.8 s on every node).
fn watch<T: Keep>(
    runtime: &tokio::runtime::Handle,
    api: Api<Decoded<T>>,
    config: watcher::Config,
    retry: Retry,
    dirty: Option<(Kind, Arc<Mutex<Dirty>>)>,
    health: Arc<Health>,
    notify: Notify,
) -> (Arc<Store<T>>, JoinHandle<()>) {
    let store = Arc::new(Store::default());
    let mut fed = Fed {
        writer: Writer::new(store.clone()),
        dirty,
        health,
        notify,
    };
    let task = runtime.spawn(async move {
        let mut absent_delays = RetryBackoff::from(retry);
        loop {
            let stream =
                watcher::watcher(api.clone(), config.clone()).backoff(RetryBackoff::from(retry));
            let mut stream = pin!(stream);
            while let Some(event) = stream.next().await {
                match fed.apply(event) {
                    Step::Next => {}
                    Step::Listed => absent_delays.reset(),
                    Step::Absent => break,
                }
            }
            // Not served (a watcher's stream does not end otherwise): list again later.
            let delay = absent_delays.next().unwrap_or(Duration::from_secs(30));
            tracing::debug!(
                resource = fed.health.resource,
                ?delay,
                "checking again for the resource"
            );
            tokio::time::sleep(delay).await;
        }
    });
    (store, task)
}

/// What the watch loop does after an event.
enum Step {
    Next,
    /// A list is complete (the resource is served).
    Listed,
    /// The resource is not served: start again later.
    Absent,
}

/// A watcher's store, and what it tells of its changes.
struct Fed<T> {
    writer: Writer<T>,
    dirty: Option<(Kind, Arc<Mutex<Dirty>>)>,
    health: Arc<Health>,
    notify: Notify,
}

impl<T: Keep> Fed<T> {
    fn record(&self, change: impl FnOnce(&mut Dirty)) {
        if let Some((_, dirty)) = &self.dirty {
            // A poisoned lock: a reader panicked; the agent then reads everything.
            let mut d = dirty.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut d);
        }
    }

    fn apply(&mut self, event: Result<Event<Decoded<T>>, watcher::Error>) -> Step {
        let health = &self.health;
        let changed = match &event {
            Ok(event) => self.writer.apply(event),
            Err(_) => false,
        };
        match event {
            Ok(Event::Apply(obj) | Event::Delete(obj)) => {
                // An update that keeps the same is no change to read.
                if changed {
                    if let Some((kind, _)) = &self.dirty {
                        let key = (kind.clone(), obj.key());
                        self.record(|d| _ = d.changed.insert(key));
                    }
                    (self.notify)();
                }
            }
            Ok(Event::Init) => {
                if health.lists.load(Ordering::Relaxed) > 0
                    && !health.absent.load(Ordering::Acquire)
                {
                    tracing::info!(
                        resource = health.resource,
                        "re-listing (the cache keeps the last state until the list is complete)"
                    );
                }
            }
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                health.lists.fetch_add(1, Ordering::Relaxed);
                // The store swapped the new list in: objects may have gone without a
                // delete event. (Its invalid entries are reported at the read.)
                self.record(|d| d.relisted = true);
                if health.absent.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        resource = health.resource,
                        "the resource is served now: watching it"
                    );
                }
                if !health.synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(resource = health.resource, "watch synced");
                }
                (self.notify)();
                return Step::Listed;
            }
            Err(e) if health.optional && not_found(&e) => {
                let held = self.writer.clear();
                if held {
                    self.record(|d| d.relisted = true);
                }
                let was_absent = health.absent.swap(true, Ordering::AcqRel);
                let was_synced = health.synced.swap(true, Ordering::AcqRel);
                if !was_absent {
                    tracing::info!(
                        resource = health.resource,
                        "the API server does not serve the resource (its CRD is not installed): \
                         none exist; checking again with back-off"
                    );
                }
                if held || !was_synced {
                    (self.notify)();
                }
                return Step::Absent;
            }
            Err(e) => {
                health.errors.fetch_add(1, Ordering::Relaxed);
                let message = error_chain(&e);
                tracing::warn!(resource = health.resource, error = %message, "watch error; retrying");
                if let Ok(mut last) = health.last_error.lock() {
                    *last = Some(message);
                }
            }
        }
        Step::Next
    }
}

/// Whether the API server answered a list or watch `404 Not Found`: it does not serve the
/// resource.
fn not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.is_not_found(),
        _ => false,
    }
}
