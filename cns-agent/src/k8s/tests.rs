//! The Kubernetes source against kube's real client and watchers, with a fake API server
//! behind a `tower-test` mock service: lists, watches (newline-delimited WatchEvent JSON on
//! a streamed body), bookmarks, `410 Gone`, dropped connections, failing requests, and a
//! resource that is not served (`404`: a CRD not installed).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    convert::Infallible,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::{
    policy::AuditMode,
    policy::model::{ObjectRef, SnapshotUpdate},
    source::NAMESPACE_NAME_LABEL,
};

const NAMESPACES: &str = "/api/v1/namespaces";
const PODS: &str = "/api/v1/pods";
const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";
const CLUSTER_POLICIES: &str = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies";
const NODES: &str = "/api/v1/nodes";
const CONFIGMAPS: &str = "/api/v1/namespaces/cns-system/configmaps";
const ALL: [&str; 6] = [
    NAMESPACES,
    PODS,
    POLICIES,
    CLUSTER_POLICIES,
    NODES,
    CONFIGMAPS,
];

type Chunk = Result<Frame<Bytes>, Infallible>;
type MockBody = StreamBody<mpsc::UnboundedReceiver<Chunk>>;
type Responder = mock::SendResponse<Response<MockBody>>;

#[derive(Default)]
struct Resource {
    objects: BTreeMap<String, Value>,
    watches: Vec<mpsc::UnboundedSender<Chunk>>,
    /// Query strings of the list requests.
    lists: Vec<String>,
    /// `resourceVersion` of each watch request.
    watch_versions: Vec<String>,
    /// Requests to fail (as a refused connection) before answering again.
    fail_next: usize,
    /// List requests held back until released.
    hold_lists: bool,
    held: Vec<Responder>,
}

#[derive(Default)]
struct State {
    /// Like etcd's revision: one counter for every resource.
    revision: u64,
    resources: HashMap<&'static str, Resource>,
    /// Resources answered `404 Not Found` (a CRD not installed).
    missing: HashSet<&'static str>,
}

/// A fake API server: objects by path, lists and watches.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn key_of(obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    format!("{ns}/{name}")
}

fn chunk(value: &Value) -> Chunk {
    let mut line = serde_json::to_vec(value).expect("json");
    line.push(b'\n');
    Ok(Frame::data(Bytes::from(line)))
}

fn body(bytes: Vec<u8>) -> MockBody {
    let (tx, rx) = mpsc::unbounded();
    _ = tx.unbounded_send(Ok(Frame::data(Bytes::from(bytes))));
    StreamBody::new(rx)
}

impl FakeApi {
    fn with<R>(&self, path: &'static str, f: impl FnOnce(&mut Resource, &mut u64) -> R) -> R {
        let mut state = self.0.lock().expect("lock");
        let State {
            revision,
            resources,
            ..
        } = &mut *state;
        f(resources.entry(path).or_default(), revision)
    }

    fn send(r: &mut Resource, event: &Value) {
        r.watches.retain(|w| w.unbounded_send(chunk(event)).is_ok());
    }

    /// Creates or updates an object; `notify_watches: false` for a change the watchers miss
    /// (made while their connection was down).
    fn put(&self, path: &'static str, mut obj: Value, notify_watches: bool) {
        self.with(path, |r, revision| {
            *revision += 1;
            obj["metadata"]["resourceVersion"] = json!(revision.to_string());
            let key = key_of(&obj);
            let kind = if r.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            if notify_watches {
                Self::send(r, &json!({"type": kind, "object": obj}));
            }
            r.objects.insert(key, obj);
        });
    }

    fn apply(&self, path: &'static str, obj: Value) {
        self.put(path, obj, true);
    }

    fn delete(&self, path: &'static str, key: &str, notify_watches: bool) {
        self.with(path, |r, revision| {
            *revision += 1;
            let mut obj = r.objects.remove(key).expect("deleting a missing object");
            obj["metadata"]["resourceVersion"] = json!(revision.to_string());
            if notify_watches {
                Self::send(r, &json!({"type": "DELETED", "object": obj}));
            }
        });
    }

    /// Sends a bookmark at the current revision; returns it.
    fn bookmark(&self, path: &'static str, kind: &str, api_version: &str) -> String {
        self.with(path, |r, revision| {
            *revision += 1;
            let rv = revision.to_string();
            Self::send(
                r,
                &json!({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv}}}),
            );
            rv
        })
    }

    /// Closes the open watch connections (as a restarting API server or a proxy does).
    fn drop_watches(&self, path: &'static str) {
        self.with(path, |r, _| r.watches.clear());
    }

    /// Tells the watches their resource version is too old, and closes them.
    fn gone(&self, path: &'static str) {
        self.with(path, |r, _| {
            Self::send(
                r,
                &json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version"}}),
            );
            r.watches.clear();
        });
    }

    /// The CRD serving `path` is deleted: its watches end, and lists and watches are
    /// answered 404. `quietly`: its objects go without delete events (as a watcher that
    /// missed them sees it).
    fn remove_crd(&self, path: &'static str, quietly: bool) {
        let keys: Vec<String> = self.with(path, |r, _| r.objects.keys().cloned().collect());
        for key in keys {
            self.delete(path, &key, !quietly);
        }
        self.0.lock().expect("lock").missing.insert(path);
        self.drop_watches(path);
    }

    fn install_crd(&self, path: &'static str) {
        self.0.lock().expect("lock").missing.remove(path);
    }

    /// List requests so far (answered or not).
    fn list_count(&self, path: &'static str) -> usize {
        self.with(path, |r, _| r.lists.len())
    }

    fn fail_next(&self, path: &'static str, n: usize) {
        self.with(path, |r, _| r.fail_next = n);
    }

    fn hold_lists(&self, path: &'static str) {
        self.with(path, |r, _| r.hold_lists = true);
    }

    fn release_lists(&self, path: &'static str) {
        let held = self.with(path, |r, _| {
            r.hold_lists = false;
            std::mem::take(&mut r.held)
        });
        for send in held {
            let list = self.list_body(path);
            send.send_response(Response::new(body(list)));
        }
    }

    fn lists(&self, path: &'static str) -> Vec<String> {
        self.with(path, |r, _| r.lists.clone())
    }

    fn watch_versions(&self, path: &'static str) -> Vec<String> {
        self.with(path, |r, _| r.watch_versions.clone())
    }

    fn open_watches(&self, path: &'static str) -> usize {
        self.with(path, |r, _| r.watches.len())
    }

    fn list_body(&self, path: &'static str) -> Vec<u8> {
        self.with(path, |r, revision| {
            serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": revision.to_string()},
                "items": r.objects.values().collect::<Vec<_>>(),
            }))
            .expect("json")
        })
    }

    /// Answers the client's requests until the client is dropped.
    async fn serve(self, handle: mock::Handle<Request<Body>, Response<MockBody>>) {
        let mut handle = pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or_default().to_owned();
            let served = ALL.into_iter().find(|p| *p == path).filter(|p| {
                let missing = self.0.lock().expect("lock").missing.contains(p);
                if missing {
                    // Counted: the source's checks for the CRD.
                    self.with(p, |r, _| r.lists.push(query.clone()));
                }
                !missing
            });
            let Some(path) = served else {
                let status = json!({"kind": "Status", "apiVersion": "v1", "code": 404,
                                    "status": "Failure", "reason": "NotFound", "message": path});
                let mut resp = Response::new(body(serde_json::to_vec(&status).expect("json")));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                send.send_response(resp);
                continue;
            };
            let params: HashMap<&str, &str> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let failing = self.with(path, |r, _| {
                let failing = r.fail_next > 0;
                r.fail_next = r.fail_next.saturating_sub(1);
                failing
            });
            if failing {
                send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ));
                continue;
            }
            if params.get("watch") == Some(&"true") {
                let (tx, rx) = mpsc::unbounded();
                self.with(path, |r, _| {
                    r.watch_versions
                        .push(params.get("resourceVersion").unwrap_or(&"").to_string());
                    r.watches.push(tx);
                });
                send.send_response(Response::new(StreamBody::new(rx)));
            } else {
                let held = self.with(path, |r, _| {
                    r.lists.push(query.clone());
                    r.hold_lists
                });
                if held {
                    self.with(path, |r, _| r.held.push(send));
                } else {
                    send.send_response(Response::new(body(self.list_body(path))));
                }
            }
        }
    }
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                     "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx",
                 "ports": [{"containerPort": 8080, "name": "http"}]}]},
        "status": {"phase": "Running", "podIP": ip}})
}

fn policy(ns: &str, name: &str, cidr: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}})
}

/// Denies ingress from namespace `from` to every pod (priority over 1000: invalid).
fn cluster_policy(name: &str, priority: Value, from: &str) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                 "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {
                     NAMESPACE_NAME_LABEL: from}}}]}]},
        "status": {"conditions": []}})
}

fn node(name: &str, zone: &str, ip: &str, heartbeat: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"zone": zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastHeartbeatTime": heartbeat}]}})
}

fn config(mode: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cns-config", "namespace": "cns-system"},
        "data": {"policyAuditMode": mode}})
}

fn seeded() -> FakeApi {
    let api = FakeApi::default();
    api.apply(NAMESPACES, namespace("demo"));
    api.apply(NAMESPACES, namespace("other"));
    api.apply(PODS, pod("demo", "web", "web", "10.0.1.10"));
    api.apply(PODS, pod("other", "client", "client", "10.0.2.20"));
    api.apply(POLICIES, policy("demo", "allow", "10.0.0.0/16"));
    api.apply(CONFIGMAPS, config("false"));
    api
}

struct Harness {
    api: FakeApi,
    source: KubeSource,
    notified: Arc<AtomicUsize>,
    server: Option<mock::Handle<Request<Body>, Response<MockBody>>>,
    /// The cluster as the reads so far say it is (a full read, then changes made to it).
    tracked: Option<crate::policy::model::Snapshot>,
    /// How the reads came: full or changes.
    reads: Vec<&'static str>,
}

impl Harness {
    /// Starts the source; the fake server starts answering at `serve()`.
    fn new(api: FakeApi) -> Self {
        Self::with_retry(api, Retry::Fixed(Duration::from_millis(10)))
    }

    fn with_retry(api: FakeApi, retry: Retry) -> Self {
        let (service, handle) = mock::pair::<Request<Body>, Response<MockBody>>();
        let client = Client::new(service, "default");
        let notified = Arc::new(AtomicUsize::new(0));
        let n = notified.clone();
        let mut cfg = KubeSourceConfig::new("cns-system", "cns-config");
        cfg.retry = retry;
        let source = KubeSource::start(client, cfg, move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
        .expect("inside a runtime");
        Self {
            api,
            source,
            notified,
            server: Some(handle),
            tracked: None,
            reads: Vec::new(),
        }
    }

    /// Reads as the agent does (changes since the previous read, once one went through);
    /// gives the state with the whole cluster, as the reads so far make it.
    fn read(&mut self) -> Result<SourceState, SourceFailure> {
        let mut state = self.source.read(self.tracked.is_none())?;
        let tracked =
            match std::mem::replace(&mut state.update, SnapshotUpdate::Full(Default::default())) {
                SnapshotUpdate::Full(s) => {
                    self.reads.push("full");
                    s
                }
                SnapshotUpdate::Changes(c) => {
                    self.reads.push("changes");
                    let mut s = self.tracked.take().expect("changes after a full read");
                    c.apply_to(&mut s);
                    s
                }
            };
        state.update = SnapshotUpdate::Full(tracked.clone());
        self.tracked = Some(tracked);
        Ok(state)
    }

    fn serve(&mut self) {
        if let Some(handle) = self.server.take() {
            tokio::spawn(self.api.clone().serve(handle));
        }
    }

    async fn started(api: FakeApi) -> Self {
        let mut h = Self::new(api);
        h.serve();
        _ = h.until("synced", |s| s.is_ok()).await;
        h
    }

    /// Reads until `check` holds (5 s at most); returns that read.
    async fn until(
        &mut self,
        what: &str,
        check: impl Fn(&Result<SourceState, SourceFailure>) -> bool,
    ) -> Result<SourceState, SourceFailure> {
        for _ in 0..500 {
            let state = self.read();
            if check(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: last read {:?}", self.read());
    }

    async fn until_state(
        &mut self,
        what: &str,
        check: impl Fn(&SourceState) -> bool,
    ) -> SourceState {
        self.until(what, |s| s.as_ref().is_ok_and(&check))
            .await
            .expect("checked")
    }

    async fn until_api(&self, what: &str, check: impl Fn(&FakeApi) -> bool) {
        for _ in 0..500 {
            if check(&self.api) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn app_of(state: &SourceState, ns: &str, name: &str) -> Option<String> {
    let pod = state.full().pods.get(&ObjectRef::new(ns, name))?;
    pod.labels.get("app").map(str::to_owned)
}

fn names<K, V>(map: &BTreeMap<K, V>) -> Vec<String>
where
    K: std::fmt::Display,
{
    map.keys().map(ToString::to_string).collect()
}

#[tokio::test]
async fn not_ready_until_every_list_is_in_then_the_full_snapshot() {
    let mut h = Harness::new(seeded());
    // Nothing answered yet: nothing may be enforced from the caches.
    tokio::time::sleep(Duration::from_millis(30)).await;
    match h.read() {
        Err(SourceFailure::NotReady { what }) => {
            assert!(
                what.contains("pods") && what.contains("networkpolicies"),
                "{what}"
            )
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(!h.source.is_synced());
    h.serve();
    let state = h.until_state("the first snapshot", |_| true).await;
    assert!(h.source.is_synced());
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(names(&state.full().namespaces), ["demo", "other"]);
    let demo = &state.full().namespaces["demo"];
    assert_eq!(
        demo.metadata.labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
        "demo"
    );
    assert_eq!(names(&state.full().pods), ["demo/web", "other/client"]);
    assert_eq!(names(&state.full().policies), ["demo/allow"]);
    assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
    assert_eq!(h.source.cached(), (2, 2, 1));
    // What the agent reads of the pod.
    let web = &state.full().pods[&ObjectRef::new("demo", "web")];
    assert_eq!(&web.labels["app"], "web");
    assert_eq!(web.pod_ip, "10.0.1.10".parse().ok());
    assert!(h.notified.load(Ordering::SeqCst) >= 4);

    // Lists from the API server's cache (resourceVersion=0); the ConfigMap by name;
    // watches with bookmarks from the list's version.
    let pod_lists = h.api.lists(PODS);
    assert_eq!(pod_lists.len(), 1);
    assert!(pod_lists[0].contains("resourceVersion=0"), "{pod_lists:?}");
    let cm_lists = h.api.lists(CONFIGMAPS);
    assert!(
        cm_lists[0].contains("fieldSelector=metadata.name%3Dcns-config"),
        "{cm_lists:?}"
    );
    h.until_api("the watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;
    assert_eq!(h.api.watch_versions(POLICIES), ["6"]);
    let status = h.source.watch_status();
    assert!(
        status
            .iter()
            .all(|s| s.synced && s.lists == 1 && s.errors == 0),
        "{status:?}"
    );
    assert_eq!(h.source.describe(), "kubernetes");
}

#[tokio::test]
async fn watch_events_update_the_snapshot() {
    let mut h = Harness::started(seeded()).await;
    h.until_api("the watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;
    let before = h.notified.load(Ordering::SeqCst);
    h.api.apply(PODS, pod("demo", "web", "web-v2", "10.0.1.10"));
    h.api.apply(PODS, pod("demo", "new", "new", "10.0.1.11"));
    h.api.delete(NAMESPACES, "/other", true);
    h.api
        .apply(POLICIES, policy("demo", "second", "192.168.0.0/24"));
    h.api.apply(CONFIGMAPS, config("true"));
    let state = h
        .until_state("the changes", |s| {
            app_of(s, "demo", "web").as_deref() == Some("web-v2")
                && s.full().pods.len() == 3
                && s.full().namespaces.len() == 1
                && s.full().policies.len() == 2
                && s.audit_mode == Some(AuditMode::Audit)
        })
        .await;
    assert!(state.errors.is_empty());
    assert!(h.notified.load(Ordering::SeqCst) >= before + 5);
    // After the first read, events come as changes: the source read what they changed.
    assert_eq!(h.reads.first(), Some(&"full"));
    assert_eq!(h.reads.last(), Some(&"changes"), "{:?}", h.reads);

    // An update that is invalid keeps the last good version, with the error.
    h.api
        .apply(POLICIES, policy("demo", "allow", "10.0.0.0/33"));
    let state = h.until_state("the error", |s| !s.errors.is_empty()).await;
    let e = &state.errors[0];
    assert_eq!(e.object, "NetworkPolicy demo/allow");
    assert!(e.kept_last_good, "{e}");
    assert_eq!(state.full().policies.len(), 2);
    // Deleting it removes it for good.
    h.api.delete(POLICIES, "demo/allow", true);
    let state = h
        .until_state("the deletion", |s| s.full().policies.len() == 1)
        .await;
    assert!(state.errors.is_empty());
}

#[tokio::test]
async fn a_dropped_connection_resumes_from_the_last_bookmark_without_relisting() {
    let mut h = Harness::started(seeded()).await;
    h.until_api("the watches", |api| api.open_watches(PODS) == 1)
        .await;
    // Other resources move the revision on; the bookmark tells the pod watcher.
    h.api.apply(POLICIES, policy("demo", "p2", "10.9.0.0/16"));
    let rv = h.api.bookmark(PODS, "Pod", "v1");
    h.api.drop_watches(PODS);
    h.until_api("the re-watch", |api| api.watch_versions(PODS).len() == 2)
        .await;
    assert_eq!(h.api.watch_versions(PODS)[1], rv);
    assert_eq!(h.api.lists(PODS).len(), 1, "resumed: no re-list");
    // Still synced, nothing lost, and the new watch delivers.
    let state = h.read().expect("synced");
    assert_eq!(state.full().pods.len(), 2);
    h.api.apply(PODS, pod("demo", "late", "late", "10.0.1.12"));
    h.until_state("the pod on the new watch", |s| s.full().pods.len() == 3)
        .await;
}

#[tokio::test]
async fn gone_relists_and_keeps_the_last_state_until_the_list_is_complete() {
    let mut h = Harness::started(seeded()).await;
    h.until_api("the watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;
    // Changes the watcher misses (its connection was down meanwhile)...
    h.api
        .put(PODS, pod("demo", "web", "web-v2", "10.0.1.10"), false);
    h.api.delete(PODS, "other/client", false);
    h.api.hold_lists(PODS);
    // ...and the server has compacted past its version.
    h.api.gone(PODS);
    h.until_api("the re-list", |api| api.lists(PODS).len() == 2)
        .await;
    // While the list is pending the last state stays in force: no flush, no NotReady.
    let state = h.read().expect("still synced");
    assert_eq!(names(&state.full().pods), ["demo/web", "other/client"]);
    assert_eq!(app_of(&state, "demo", "web").as_deref(), Some("web"));
    assert_eq!(h.source.cached().1, 2, "the cache keeps the last list");
    h.api.release_lists(PODS);
    let state = h
        .until_state("the re-listed pods", |s| s.full().pods.len() == 1)
        .await;
    assert_eq!(app_of(&state, "demo", "web").as_deref(), Some("web-v2"));
    assert_eq!(h.source.cached().1, 1, "the new list swapped in whole");
    // A re-list has no delete events for what went: the source read everything.
    assert_eq!(h.reads.last(), Some(&"full"), "{:?}", h.reads);
    let pods = h
        .source
        .watch_status()
        .into_iter()
        .find(|s| s.resource == "pods")
        .expect("pods");
    assert_eq!(pods.lists, 2);
    assert!(pods.errors >= 1);
    assert!(
        pods.last_error
            .is_some_and(|e| e.contains("too old resource version")),
        "{:?}",
        h.source.watch_status()
    );
}

#[tokio::test]
async fn api_server_restart_and_failed_requests_are_retried() {
    // The first pod list fails: not ready meanwhile, then synced.
    let api = seeded();
    api.fail_next(PODS, 2);
    let mut h = Harness::new(api);
    h.serve();
    _ = h.until("synced after failed lists", |s| s.is_ok()).await;
    let pods = h.source.watch_status()[1].clone();
    assert_eq!(pods.resource, "pods");
    assert!(pods.errors >= 2, "{pods:?}");
    assert!(pods.last_error.is_some());
    h.until_api("the watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;

    // The API server restarts: every connection drops and the first reconnections fail.
    for path in ALL {
        h.api.fail_next(path, 2);
        h.api.drop_watches(path);
    }
    h.until_api("the re-watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;
    let state = h.read().expect("still synced");
    assert_eq!(state.full().pods.len(), 2);
    assert_eq!(state.full().policies.len(), 1);
    assert_eq!(state.audit_mode, Some(AuditMode::Blocking));
    // Resumed from the last versions, without re-listing.
    for path in ALL {
        assert_eq!(h.api.lists(path).len(), 1, "{path}");
    }
    h.api.apply(CONFIGMAPS, config("true"));
    h.until_state("the new mode", |s| s.audit_mode == Some(AuditMode::Audit))
        .await;
}

#[tokio::test]
async fn a_malformed_object_is_reported_and_the_rest_of_its_list_enforced() {
    // A pod whose port is a string: a typed list of pods would fail as a whole.
    let malformed = || {
        let mut bad = pod("demo", "bad", "bad", "10.0.1.99");
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        bad
    };
    let api = seeded();
    api.apply(PODS, malformed());
    let mut h = Harness::started(api).await;
    let state = h.until_state("the first snapshot", |_| true).await;
    assert_eq!(names(&state.full().pods), ["demo/web", "other/client"]);
    assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
    let e = &state.errors[0];
    assert_eq!(e.object, "Pod demo/bad");
    assert_eq!(
        e.field.as_deref(),
        Some("spec.containers[0].ports[0].containerPort")
    );
    assert!(!e.kept_last_good);
    assert!(h.source.watch_status().iter().all(|s| s.errors == 0));

    // Fixed by a watch event, then malformed again: its last good version stays.
    h.api.apply(PODS, pod("demo", "bad", "bad", "10.0.1.99"));
    h.until_state("the fixed pod", |s| {
        s.full().pods.len() == 3 && s.errors.is_empty()
    })
    .await;
    h.api.apply(PODS, malformed());
    let state = h.until_state("the error", |s| !s.errors.is_empty()).await;
    assert!(state.errors[0].kept_last_good, "{}", state.errors[0]);
    assert_eq!(state.full().pods.len(), 3);
    assert_eq!(h.reads.last(), Some(&"changes"), "{:?}", h.reads);
}

fn watch_of(h: &Harness, resource: &str) -> WatchStatus {
    h.source
        .watch_status()
        .into_iter()
        .find(|w| w.resource == resource)
        .unwrap_or_else(|| panic!("no {resource} watch"))
}

fn cnp_names(state: &SourceState) -> Vec<String> {
    names(&state.full().cluster_policies)
}

#[tokio::test]
async fn cluster_policies_and_nodes_are_listed_watched_and_deleted() {
    let api = seeded();
    api.apply(
        CLUSTER_POLICIES,
        cluster_policy("deny-other", json!(10), "other"),
    );
    api.apply(
        NODES,
        node("node-1", "a", "192.168.0.2", "2026-01-01T00:00:01Z"),
    );
    let mut h = Harness::started(api).await;
    let state = h.until_state("the first snapshot", |_| true).await;
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(cnp_names(&state), ["deny-other"]);
    let kept = &state.full().cluster_policies["deny-other"];
    assert_eq!(kept.spec.priority, 10);
    assert!(kept.status.is_none(), "the status is not kept");
    assert_eq!(names(&state.full().nodes), ["node-1"]);
    assert_eq!(state.full().nodes["node-1"].labels.get("zone"), Some("a"));
    h.until_api("the watches", |api| {
        ALL.iter().all(|p| api.open_watches(p) == 1)
    })
    .await;

    // Added, modified, deleted by watch events.
    h.api.apply(
        CLUSTER_POLICIES,
        cluster_policy("deny-demo", json!(20), "demo"),
    );
    h.api.apply(
        NODES,
        node("node-2", "b", "192.168.0.3", "2026-01-01T00:00:01Z"),
    );
    h.api.apply(
        NODES,
        node("node-1", "c", "192.168.0.2", "2026-01-01T00:00:01Z"),
    );
    h.api.delete(CLUSTER_POLICIES, "/deny-other", true);
    let state = h
        .until_state("the changes", |s| {
            cnp_names(s) == ["deny-demo"]
                && s.full().nodes.len() == 2
                && s.full().nodes["node-1"].labels.get("zone") == Some("c")
        })
        .await;
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(h.reads.last(), Some(&"changes"), "{:?}", h.reads);
    let node2 = &state.full().nodes["node-2"];
    assert_eq!(
        *node2.addresses,
        ["192.168.0.3".parse::<std::net::IpAddr>().unwrap()]
    );

    // A kubelet's status update that changes nothing the agent keeps: no change to read
    // (then a new node, on the same watch, marks that the update was seen).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = h.notified.load(Ordering::SeqCst);
    h.api.apply(
        NODES,
        node("node-2", "b", "192.168.0.3", "2026-01-01T00:00:02Z"),
    );
    h.api.apply(
        NODES,
        node("node-3", "b", "192.168.0.4", "2026-01-01T00:00:02Z"),
    );
    h.until_state("the new node", |s| s.full().nodes.len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.notified.load(Ordering::SeqCst),
        before + 1,
        "only the new node was a change"
    );
    h.api.delete(NODES, "/node-1", true);
    h.until_state("the node's deletion", |s| {
        names(&s.full().nodes) == ["node-2", "node-3"]
    })
    .await;
    for resource in ["clusternetworkpolicies", "nodes"] {
        let w = watch_of(&h, resource);
        assert!(
            w.synced && !w.absent && w.lists == 1 && w.errors == 0,
            "{w:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_cluster_policy_is_reported_and_the_rest_enforced() {
    let api = seeded();
    // A string where the priority number goes (does not decode), a priority out of range
    // (does not validate), and a good one.
    api.apply(
        CLUSTER_POLICIES,
        cluster_policy("malformed", json!("high"), "other"),
    );
    api.apply(
        CLUSTER_POLICIES,
        cluster_policy("invalid", json!(5000), "other"),
    );
    api.apply(CLUSTER_POLICIES, cluster_policy("good", json!(1), "other"));
    let mut h = Harness::started(api).await;
    let state = h.until_state("the first snapshot", |_| true).await;
    assert_eq!(cnp_names(&state), ["good"]);
    let errors: Vec<(&str, Option<&str>, bool)> = state
        .errors
        .iter()
        .map(|e| (e.object.as_str(), e.field.as_deref(), e.kept_last_good))
        .collect();
    assert_eq!(
        errors,
        [
            ("ClusterNetworkPolicy invalid", Some("spec.priority"), false),
            (
                "ClusterNetworkPolicy malformed",
                Some("spec.priority"),
                false
            ),
        ],
        "{:?}",
        state.errors
    );
    assert!(
        state.errors[1].message.contains("invalid type"),
        "{}",
        state.errors[1]
    );
    assert!(h.source.watch_status().iter().all(|s| s.errors == 0));

    // Fixed by a watch event; then invalid again: the last good version stays.
    h.api.apply(
        CLUSTER_POLICIES,
        cluster_policy("malformed", json!(2), "other"),
    );
    h.until_state("the fixed policy", |s| {
        cnp_names(s) == ["good", "malformed"] && s.errors.len() == 1
    })
    .await;
    h.api.apply(
        CLUSTER_POLICIES,
        cluster_policy("malformed", json!(-1), "other"),
    );
    let state = h
        .until_state("the error", |s| {
            s.errors
                .iter()
                .any(|e| e.object == "ClusterNetworkPolicy malformed")
        })
        .await;
    let e = state
        .errors
        .iter()
        .find(|e| e.object == "ClusterNetworkPolicy malformed")
        .expect("reported");
    assert!(e.kept_last_good, "{e}");
    assert_eq!(e.field.as_deref(), Some("spec.priority"));
    assert_eq!(state.full().cluster_policies["malformed"].spec.priority, 2);
}

#[tokio::test]
async fn readiness_waits_for_the_first_list_of_cluster_policies_when_served() {
    let api = seeded();
    api.hold_lists(CLUSTER_POLICIES);
    let mut h = Harness::new(api);
    h.serve();
    h.until_api("the held list", |api| {
        api.lists(CLUSTER_POLICIES).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    match h.read() {
        Err(SourceFailure::NotReady { what }) => {
            assert!(what.contains("clusternetworkpolicies"), "{what}")
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    h.api.release_lists(CLUSTER_POLICIES);
    h.until("synced", |s| s.is_ok()).await.expect("synced");
    assert!(!watch_of(&h, "clusternetworkpolicies").absent);
}

#[tokio::test]
async fn without_the_crd_the_source_is_ready_and_watches_the_crd_once_installed() {
    let api = seeded();
    api.0.lock().expect("lock").missing.insert(CLUSTER_POLICIES);
    let mut h = Harness::started(api).await;
    let state = h.until_state("the first snapshot", |_| true).await;
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert!(state.full().cluster_policies.is_empty());
    assert_eq!(names(&state.full().pods), ["demo/web", "other/client"]);
    let w = watch_of(&h, "clusternetworkpolicies");
    assert!(w.synced && w.absent, "{w:?}");
    assert_eq!((w.lists, w.errors, w.last_error), (0, 0, None));
    // It keeps checking.
    let tries = h.api.list_count(CLUSTER_POLICIES);
    h.until_api("another check", |api| {
        api.list_count(CLUSTER_POLICIES) > tries
    })
    .await;

    // The CRD is installed, then a policy created: watched.
    h.api.install_crd(CLUSTER_POLICIES);
    h.api.apply(
        CLUSTER_POLICIES,
        cluster_policy("deny-other", json!(10), "other"),
    );
    h.until_state("the policy", |s| cnp_names(s) == ["deny-other"])
        .await;
    let w = watch_of(&h, "clusternetworkpolicies");
    assert!(w.synced && !w.absent && w.lists == 1, "{w:?}");
    h.until_api("the watch", |api| api.open_watches(CLUSTER_POLICIES) == 1)
        .await;
    h.api.apply(
        CLUSTER_POLICIES,
        cluster_policy("deny-demo", json!(20), "demo"),
    );
    h.until_state("the watch event", |s| cnp_names(s).len() == 2)
        .await;

    // The CRD is deleted, and the watcher missed the deletions of its objects: a CRD that
    // is not served has none.
    h.api.remove_crd(CLUSTER_POLICIES, true);
    let state = h
        .until_state("the policies gone", |s| {
            s.full().cluster_policies.is_empty()
        })
        .await;
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert!(watch_of(&h, "clusternetworkpolicies").absent);
    assert!(h.source.is_synced());
}

#[tokio::test(start_paused = true)]
async fn a_missing_crd_is_checked_with_a_growing_back_off() {
    let api = seeded();
    api.0.lock().expect("lock").missing.insert(CLUSTER_POLICIES);
    let mut h = Harness::with_retry(api, Retry::Default);
    h.serve();
    _ = h.until("synced", |s| s.is_ok()).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    // kube-runtime's default back-off, not reset between attempts: 0.8 s doubling to 30 s
    // (each with up to as much jitter) gives at most 8 checks in a minute; reset by each
    // list attempt's `Init`, it would check every 0.8 to 1.6 s.
    let checks = h.api.list_count(CLUSTER_POLICIES);
    assert!((3..=8).contains(&checks), "{checks} checks in a minute");
    let w = watch_of(&h, "clusternetworkpolicies");
    assert!(w.absent && w.errors == 0, "{w:?}");
}
