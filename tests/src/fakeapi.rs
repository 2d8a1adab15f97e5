//! A fake Kubernetes API server over real HTTP (axum), for the real agent's real kube
//! client: list and `?watch=1` of Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies
//! and Nodes (cluster-wide) and the agent's ConfigMaps (`/api/v1/namespaces/{ns}/configmaps`, `fieldSelector
//! metadata.name=`), as JSON, with one resourceVersion counter for everything (as etcd's
//! revision), pagination (`limit`/`continue`), bookmarks for watches that ask for them
//! (`allowWatchBookmarks`), a replay of the events after the watch's resourceVersion, and
//! `410 Gone` (an `ERROR` event with a `Status`, as the API server sends it) on a
//! resourceVersion older than the last compaction.
//!
//! Controls for tests: add/modify/delete objects (sending watch events, or quietly, as
//! changes a disconnected watcher misses), a restart (every watch dropped, requests refused
//! with 503 for a while), the next watch answered 410, slow responses, an object served
//! as raw text (malformed JSON), and a CRD removed or installed (its resource answered 404
//! while it is not).
//!
//! It listens on 127.0.0.1 of the node's netns (bound by a thread that entered the netns:
//! a socket keeps its netns), so the agent, which runs in that netns, reaches it with
//! plain http and no route to the host. [`FakeApi::kubeconfig`] writes the agent's
//! kubeconfig.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, Uri, header},
    response::Response,
};
use futures::channel::mpsc;
use serde_json::{Value, json};

/// The kinds the agent watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Namespaces,
    Pods,
    NetworkPolicies,
    /// Served by a CRD: see [`FakeApi::remove_crd`].
    ClusterNetworkPolicies,
    Nodes,
    ConfigMaps,
}

pub const ALL: [Res; 6] = [
    Res::Namespaces,
    Res::Pods,
    Res::NetworkPolicies,
    Res::ClusterNetworkPolicies,
    Res::Nodes,
    Res::ConfigMaps,
];

impl Res {
    fn kind(self) -> (&'static str, &'static str) {
        match self {
            Res::Namespaces => ("Namespace", "v1"),
            Res::Pods => ("Pod", "v1"),
            Res::NetworkPolicies => ("NetworkPolicy", "networking.k8s.io/v1"),
            Res::ClusterNetworkPolicies => {
                ("ClusterNetworkPolicy", "policy.networking.k8s.io/v1alpha2")
            }
            Res::Nodes => ("Node", "v1"),
            Res::ConfigMaps => ("ConfigMap", "v1"),
        }
    }

    /// The resource and namespace a request path names.
    fn of_path(path: &str) -> Option<(Self, Option<String>)> {
        match path.trim_end_matches('/') {
            "/api/v1/namespaces" => Some((Res::Namespaces, None)),
            "/api/v1/pods" => Some((Res::Pods, None)),
            "/apis/networking.k8s.io/v1/networkpolicies" => Some((Res::NetworkPolicies, None)),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies" => {
                Some((Res::ClusterNetworkPolicies, None))
            }
            "/api/v1/nodes" => Some((Res::Nodes, None)),
            p => {
                let ns = p
                    .strip_prefix("/api/v1/namespaces/")?
                    .strip_suffix("/configmaps")?;
                Some((Res::ConfigMaps, Some(ns.to_owned())))
            }
        }
    }
}

/// An object as served: its namespace, name, resourceVersion and JSON text.
#[derive(Clone)]
struct Stored {
    namespace: String,
    name: String,
    rv: u64,
    text: Arc<str>,
}

struct Watch {
    tx: mpsc::UnboundedSender<Result<Bytes, Infallible>>,
    bookmarks: bool,
    namespace: Option<String>,
    name: Option<String>,
}

impl Watch {
    fn wants(&self, o: &Stored) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == o.namespace)
            && self.name.as_ref().is_none_or(|n| *n == o.name)
    }
}

#[derive(Default)]
struct Resource {
    /// By "namespace/name".
    objects: BTreeMap<String, Stored>,
    /// The events since the start (watches replay those after their resourceVersion).
    log: Vec<(Stored, &'static str)>,
    watches: Vec<Watch>,
    lists: usize,
    /// The resourceVersion of each watch request.
    watch_versions: Vec<String>,
    /// Watch requests to answer with 410 Gone.
    gone_next: usize,
    /// Requests answered 404 (its CRD not installed).
    not_found: usize,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    /// Watches from before this revision get 410 Gone (the last compaction).
    compacted: u64,
    resources: HashMap<Res, Resource>,
    delay: Duration,
    down_until: Option<Instant>,
    /// When the first list request came in.
    first_list: Option<Instant>,
    /// Resources whose CRD is not installed: answered 404.
    missing: HashSet<Res>,
}

/// The server; it stops when dropped.
pub struct FakeApi {
    state: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

type Shared = Arc<Mutex<Inner>>;

impl FakeApi {
    /// Starts the server on 127.0.0.1 (a random port) of network namespace `netns`.
    pub fn start(netns: &str) -> Self {
        let listener = crate::traffic::in_netns(netns, || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        let addr = listener.local_addr().expect("local address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fake API server");
        let state: Shared = Arc::default();
        let app = Router::new().fallback(handle).with_state(state.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            state,
            addr,
            runtime: Some(runtime),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a kubeconfig pointing at this server (plain http, no credentials).
    pub fn kubeconfig(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]\n\
                 current-context: fake\n",
                self.addr
            ),
        )
        .expect("write kubeconfig");
    }

    /// Creates or replaces an object (JSON, without `apiVersion`/`kind` if you like), sending
    /// ADDED or MODIFIED to the watches. Returns its resourceVersion.
    pub fn apply(&self, res: Res, obj: Value) -> u64 {
        self.put(res, obj, true)
    }

    /// Like [`FakeApi::apply`], but no watch sees it and no replay gives it (a change a
    /// disconnected watcher misses; or seeding before the agent starts).
    pub fn apply_quietly(&self, res: Res, obj: Value) -> u64 {
        self.put(res, obj, false)
    }

    fn put(&self, res: Res, mut obj: Value, notify: bool) -> u64 {
        let (kind, api_version) = res.kind();
        obj["kind"] = json!(kind);
        obj["apiVersion"] = json!(api_version);
        let meta = &obj["metadata"];
        let namespace = meta["namespace"].as_str().unwrap_or_default().to_owned();
        let name = meta["name"].as_str().expect("metadata.name").to_owned();
        let mut inner = self.lock();
        inner.revision += 1;
        let rv = inner.revision;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let text: Arc<str> = serde_json::to_string(&obj).expect("json").into();
        let stored = Stored {
            namespace,
            name,
            rv,
            text,
        };
        Self::store(&mut inner, res, stored, notify);
        rv
    }

    /// Serves `text` verbatim as object `namespace/name` (e.g. malformed JSON), with a
    /// watch event. Text that is not JSON at all breaks the whole list for any client;
    /// text of the wrong types (a string where a number goes) breaks only that object.
    pub fn apply_raw(&self, res: Res, namespace: &str, name: &str, text: &str) -> u64 {
        let mut inner = self.lock();
        inner.revision += 1;
        let rv = inner.revision;
        let stored = Stored {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            rv,
            text: text.into(),
        };
        Self::store(&mut inner, res, stored, true);
        rv
    }

    fn store(inner: &mut Inner, res: Res, stored: Stored, notify: bool) {
        let r = inner.resources.entry(res).or_default();
        let key = format!("{}/{}", stored.namespace, stored.name);
        let event = if r.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if notify {
            send(r, &stored, event);
            r.log.push((stored.clone(), event));
        }
        r.objects.insert(key, stored);
    }

    /// Deletes an object, sending DELETED (with a new resourceVersion) to the watches;
    /// `quietly`: no watch sees it (see [`FakeApi::apply_quietly`]).
    pub fn delete(&self, res: Res, namespace: &str, name: &str, quietly: bool) {
        let mut inner = self.lock();
        inner.revision += 1;
        let rv = inner.revision;
        let r = inner.resources.entry(res).or_default();
        let Some(old) = r.objects.remove(&format!("{namespace}/{name}")) else {
            panic!("fake API: no {res:?} {namespace}/{name} to delete");
        };
        if quietly {
            return;
        }
        let mut obj: Value = serde_json::from_str(&old.text)
            .unwrap_or_else(|_| json!({"metadata": {"name": name, "namespace": namespace}}));
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = Stored {
            rv,
            text: serde_json::to_string(&obj).expect("json").into(),
            ..old
        };
        send(r, &stored, "DELETED");
        r.log.push((stored, "DELETED"));
    }

    /// Sends a BOOKMARK at the current revision to the watches of `res` that asked for them.
    pub fn bookmark(&self, res: Res) -> u64 {
        let mut inner = self.lock();
        let rv = inner.revision;
        let (kind, api_version) = res.kind();
        let line = event_line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv.to_string()}})
            .to_string(),
        );
        let r = inner.resources.entry(res).or_default();
        r.watches
            .retain(|w| !w.bookmarks || w.tx.unbounded_send(Ok(line.clone())).is_ok());
        rv
    }

    /// A restart: every watch connection ends, and requests are refused (503) for `down`.
    pub fn restart(&self, down: Duration) {
        let mut inner = self.lock();
        inner.down_until = Some(Instant::now() + down);
        for r in inner.resources.values_mut() {
            r.watches.clear();
        }
    }

    /// The CRD serving `res` is deleted, as the API server does it: each object is deleted
    /// (DELETED to the watches), the watches end, then the resource is answered 404 until
    /// [`FakeApi::install_crd`]. Before the agent starts: a cluster without the CRD.
    pub fn remove_crd(&self, res: Res) {
        let keys: Vec<(String, String)> = {
            let mut inner = self.lock();
            let r = inner.resources.entry(res).or_default();
            r.objects
                .values()
                .map(|o| (o.namespace.clone(), o.name.clone()))
                .collect()
        };
        for (namespace, name) in keys {
            self.delete(res, &namespace, &name, false);
        }
        let mut inner = self.lock();
        inner.missing.insert(res);
        inner.resources.entry(res).or_default().watches.clear();
    }

    /// The CRD serving `res` is installed (again): served, with no objects.
    pub fn install_crd(&self, res: Res) {
        self.lock().missing.remove(&res);
    }

    /// Requests for `res` answered 404 (its CRD not installed).
    pub fn not_found(&self, res: Res) -> usize {
        self.lock().resources.get(&res).map_or(0, |r| r.not_found)
    }

    /// The next `n` watch requests for `res` get 410 Gone.
    pub fn gone_next(&self, res: Res, n: usize) {
        self.lock().resources.entry(res).or_default().gone_next = n;
    }

    /// A compaction: watches from before the current revision get 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.revision;
    }

    /// Every response waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Drops every watch of `res` (a dropped connection).
    pub fn drop_watches(&self, res: Res) {
        self.lock()
            .resources
            .entry(res)
            .or_default()
            .watches
            .clear();
    }

    pub fn lists(&self, res: Res) -> usize {
        self.lock().resources.get(&res).map_or(0, |r| r.lists)
    }

    pub fn watch_versions(&self, res: Res) -> Vec<String> {
        let inner = self.lock();
        inner
            .resources
            .get(&res)
            .map_or_else(Vec::new, |r| r.watch_versions.clone())
    }

    /// Open watches of `res` (those whose client is still there when an event is sent).
    pub fn open_watches(&self, res: Res) -> usize {
        let mut inner = self.lock();
        let r = inner.resources.entry(res).or_default();
        r.watches.retain(|w| !w.tx.is_closed());
        r.watches.len()
    }

    /// When the first list request came in (a client's cold start begins there).
    pub fn first_list(&self) -> Option<Instant> {
        self.lock().first_list
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn event_line(kind: &str, object: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
}

fn send(r: &mut Resource, stored: &Stored, event: &str) {
    let line = event_line(event, &stored.text);
    r.watches
        .retain(|w| !w.wants(stored) || w.tx.unbounded_send(Ok(line.clone())).is_ok());
}

fn status(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code.as_u16()})
}

fn json_response(code: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("response")
}

async fn handle(
    State(state): State<Shared>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let delay = state.lock().unwrap_or_else(|e| e.into_inner()).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut inner = state.lock().unwrap_or_else(|e| e.into_inner());
    if inner.down_until.is_some_and(|t| Instant::now() < t) {
        let s = status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "restarting",
        );
        return json_response(StatusCode::SERVICE_UNAVAILABLE, s.to_string());
    }
    let Some((res, namespace)) = Res::of_path(uri.path()) else {
        let s = status(StatusCode::NOT_FOUND, "NotFound", "no such resource");
        return json_response(StatusCode::NOT_FOUND, s.to_string());
    };
    if inner.missing.contains(&res) {
        inner.resources.entry(res).or_default().not_found += 1;
        let s = status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
        return json_response(StatusCode::NOT_FOUND, s.to_string());
    }
    let name = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_owned);
    let revision = inner.revision;
    let compacted = inner.compacted;
    let r = inner.resources.entry(res).or_default();
    let wanted = |o: &Stored| {
        namespace.as_ref().is_none_or(|n| *n == o.namespace)
            && name.as_ref().is_none_or(|n| *n == o.name)
    };
    if q.get("watch").is_some_and(|w| w == "1" || w == "true") {
        let from = q.get("resourceVersion").cloned().unwrap_or_default();
        r.watch_versions.push(from.clone());
        let from_rv = match from.parse::<u64>() {
            Ok(0) | Err(_) => revision,
            Ok(rv) => rv,
        };
        if r.gone_next > 0 || from_rv < compacted {
            r.gone_next = r.gone_next.saturating_sub(1);
            let message = format!("too old resource version: {from} ({compacted})");
            let s = status(StatusCode::GONE, "Expired", &message);
            return json_response(StatusCode::OK, event_line("ERROR", &s.to_string()));
        }
        let (tx, rx) = mpsc::unbounded();
        let watch = Watch {
            tx,
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
            namespace,
            name,
        };
        for (o, event) in &r.log {
            if o.rv > from_rv && watch.wants(o) {
                _ = watch.tx.unbounded_send(Ok(event_line(event, &o.text)));
            }
        }
        r.watches.push(watch);
        return json_response(StatusCode::OK, Body::from_stream(rx));
    }
    r.lists += 1;
    inner.first_list.get_or_insert_with(Instant::now);
    let r = inner.resources.entry(res).or_default();
    let items: Vec<&Stored> = r.objects.values().filter(|o| wanted(o)).collect();
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let page = &items[offset.min(items.len())..];
    let (page, more) = if page.len() > limit {
        (&page[..limit], true)
    } else {
        (page, false)
    };
    let (kind, api_version) = res.kind();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if more {
        metadata["continue"] = json!((offset + limit).to_string());
    }
    let mut body = format!(
        "{{\"kind\":\"{kind}List\",\"apiVersion\":\"{api_version}\",\"metadata\":{metadata},\"items\":["
    )
    .into_bytes();
    for (i, o) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(o.text.as_bytes());
    }
    body.extend_from_slice(b"]}");
    json_response(StatusCode::OK, body)
}
