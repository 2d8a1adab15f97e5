//! The manifests directory as a source of [`Snapshot`]s: every `*.yaml`/`*.yml` file,
//! multi-document, kinds Namespace, Pod, NetworkPolicy and Node read into k8s-openapi types (the
//! same ones the Kubernetes source yields) and ClusterNetworkPolicy into `policy::cluster`'s;
//! a pod is kept as its `PodInfo` once validated, a node as its `NodeInfo`.
//!
//! Bad input never empties the datapath: an object that fails to parse or validate keeps its
//! last good version (if it had one), a file that fails to parse keeps the objects it last
//! gave, and every problem is reported with its file, object and field. [`load`] is pure;
//! [`read_dir`] is the only I/O.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use serde::Serialize;

#[cfg(test)]
mod fuzz;
mod held;
mod manifests;

use held::HeldStore;
pub use manifests::ManifestSource;

use crate::policy::{
    cluster::{self, validate_cluster_policy},
    model::{ClusterNetworkPolicy, NodeInfo, ObjectRef, PodInfo, Snapshot, SnapshotUpdate, intern},
    validate::{FieldError, validate_namespace, validate_pod, validate_policy},
};

pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    ClusterNetworkPolicy,
    Node,
}

impl Kind {
    /// Whether its objects are cluster-scoped (no namespace).
    pub fn cluster_scoped(&self) -> bool {
        matches!(
            self,
            Kind::Namespace | Kind::ClusterNetworkPolicy | Kind::Node
        )
    }
}

/// Kind, namespace (empty for namespaces) and name; the strings are the ones the
/// snapshot's keys share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    /// Its namespace/name, sharing the strings.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{:?} {}", self.kind, self.name)
        } else {
            write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Arc<Namespace>),
    /// Validated as a `Pod`, kept as what the agent reads of it.
    Pod(Arc<PodInfo>),
    NetworkPolicy(Arc<NetworkPolicy>),
    ClusterNetworkPolicy(Arc<ClusterNetworkPolicy>),
    /// Validated as a `Node`, kept as what the agent reads of it.
    Node(Arc<NodeInfo>),
}

/// A problem with the input, and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceError {
    pub file: PathBuf,
    /// The object ("NetworkPolicy demo/allow-web") or, before its name is known, the
    /// document ("document 2").
    pub object: String,
    /// The field at fault ("spec.ingress[0].from[0].ipBlock.cidr"), when known.
    pub field: Option<String>,
    pub message: String,
    /// Whether a previous good version is still enforced in its place.
    pub kept_last_good: bool,
}

impl SourceError {
    /// The file as a whole cannot be read or parsed.
    fn of_file(file: &Path, message: String, kept_last_good: bool) -> Self {
        Self {
            file: file.to_owned(),
            object: "file".into(),
            field: None,
            message: bounded(message, 4 * MAX_PART_BYTES),
            kept_last_good,
        }
    }

    /// An object of the file is invalid.
    fn of_object(file: &Path, bad: &BadObject, kept_last_good: bool) -> Self {
        Self {
            file: file.to_owned(),
            object: bad.object.clone(),
            field: bad.field.clone(),
            message: bad.message.clone(),
            kept_last_good,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.object)?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)?;
        if self.kept_last_good {
            write!(f, " (keeping its last good version)")?;
        }
        Ok(())
    }
}

/// At most this many bytes of one part (object, field, message) of an error: errors quote
/// the values at fault, and a 4 MB value must not make a 4 MB log line, `status` and reply.
const MAX_PART_BYTES: usize = 512;

/// `text`, cut to at most `max` bytes (at a character boundary) with its length said.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let total = text.len();
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
        text.push_str(&format!("... ({total} bytes in all)"));
    }
    text
}

/// What survives between loads: the last good version of every object, which file each
/// came from, and what each file gave (its content hash and errors), so that an unchanged file
/// is not parsed again.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    /// What each file gave: the last good version of each of its objects.
    by_file: BTreeMap<PathBuf, Vec<(Arc<ObjectKey>, Object)>>,
    parsed: BTreeMap<PathBuf, Parsed>,
    /// Some file gave an object another file gave too (what each file gives then depends
    /// on the others).
    duplicates: bool,
}

/// The outcome of parsing one file's text.
#[derive(Clone, Debug)]
struct Parsed {
    hash: u64,
    /// Errors of the file itself (unparsable text, invalid objects), not duplicates.
    errors: Vec<SourceError>,
}

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl LastGood {
    /// Every object the files give now.
    pub fn snapshot(&self) -> Snapshot {
        // In key order, so every map is built in one pass.
        let mut all: Vec<&(Arc<ObjectKey>, Object)> = self.by_file.values().flatten().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (mut namespaces, mut pods, mut policies) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cluster_policies, mut nodes) = (Vec::new(), Vec::new());
        for (key, obj) in all {
            match obj {
                Object::Namespace(ns) => namespaces.push((key.name.to_string(), ns.clone())),
                Object::Pod(pod) => pods.push((key.object_ref(), pod.clone())),
                Object::NetworkPolicy(np) => policies.push((key.object_ref(), np.clone())),
                Object::ClusterNetworkPolicy(cnp) => {
                    cluster_policies.push((key.name.clone(), cnp.clone()))
                }
                Object::Node(node) => nodes.push((key.name.clone(), node.clone())),
            }
        }
        Snapshot {
            namespaces: namespaces.into_iter().collect(),
            pods: pods.into_iter().collect(),
            policies: policies.into_iter().collect(),
            cluster_policies: cluster_policies.into_iter().collect(),
            nodes: nodes.into_iter().collect(),
        }
    }

    /// The file an object was loaded from.
    pub fn file_of(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Path> {
        let key = ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        self.by_file
            .iter()
            .find(|(_, objects)| objects.iter().any(|(k, _)| **k == key))
            .map(|(f, _)| f.as_path())
    }
}

/// What a source of cluster state gives the agent at each sync.
#[derive(Clone, Debug)]
pub struct SourceState {
    pub update: SnapshotUpdate,
    /// Problems with single objects or files; everything else is in the snapshot.
    pub errors: Vec<SourceError>,
    /// `policyAuditMode` as the source configures it (the Kubernetes ConfigMap); `None`
    /// leaves the `--policy-audit-mode` flag in charge.
    pub audit_mode: Option<crate::policy::AuditMode>,
}

impl SourceState {
    /// The snapshot of a full update (tests).
    #[cfg(test)]
    pub fn full(&self) -> &Snapshot {
        match &self.update {
            SnapshotUpdate::Full(s) => s,
            SnapshotUpdate::Changes(_) => panic!("not a full update"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceFailure {
    #[error("failed to read the manifests directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Nothing is enforced from a half-synced cache: the last state stays in force.
    #[error("the source is not synced yet: {what}")]
    NotReady { what: String },
}

/// Where the agent's snapshots come from: a manifests directory or the Kubernetes API.
/// `read` is called on the agent thread at every sync and must not block for long.
pub trait SnapshotSource: Send {
    /// The cluster as it is now: what changed since the previous read, or (always when
    /// `full`, which the agent asks for when the previous read may not have reached the
    /// compiler) the whole of it.
    fn read(&mut self, full: bool) -> Result<SourceState, SourceFailure>;
    /// For `status` ("manifests:/etc/cns", "kubernetes").
    fn describe(&self) -> String;
    /// For `status`: the state of each watch of a source that watches an API (none here).
    fn watches(&self) -> Vec<WatchStatus> {
        Vec::new()
    }
}

/// The state of one watch of the Kubernetes source, for `status` and readiness.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WatchStatus {
    /// "namespaces", "pods", "networkpolicies", "clusternetworkpolicies", "nodes",
    /// "configmap".
    pub resource: &'static str,
    /// The first list is complete (stays true while re-listing: the cache keeps the last
    /// state), or the resource is absent.
    pub synced: bool,
    /// The API server does not serve the resource (`404`: the ClusterNetworkPolicy CRD is
    /// not installed): there are none, and the source checks again with back-off.
    pub absent: bool,
    /// Lists completed since start (1 + re-lists after 410 Gone or errors).
    pub lists: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Reads the manifest files of `dir` (sorted by name); unreadable files are reported as
/// errors by [`load`].
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, Result<String, String>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // As the agent's listing: a dangling link or a loop is kept, so reading it reports it.
        .filter(|p| is_manifest(p) && !matches!(std::fs::metadata(p), Ok(m) if !m.is_file()))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let text = read_file(&p);
            (p, text)
        })
        .collect())
}

/// Whether `path` names a manifest file (`*.yaml`, `*.yml`).
fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// A manifest file's text, or why it cannot be read (reported by [`load`]).
pub fn read_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("failed to read: {e}"))?;
    text_of(bytes)
}

/// A file's bytes as text, or where they stop being UTF-8 (YAML files are UTF-8 text; a
/// UTF-16 or Latin-1 file is refused with its first bad byte, not misread).
pub fn text_of(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format!(
            "not UTF-8 text: invalid byte 0x{:02x} at offset {at} (line {line}); save the file \
             as UTF-8",
            bytes[at]
        )
    })
}

/// Turns the files into a snapshot, using and updating `last` for the objects that fail.
pub fn load(
    files: &[(PathBuf, Result<String, String>)],
    last: &mut LastGood,
) -> (Snapshot, Vec<SourceError>) {
    load_each(files.iter().cloned(), last)
}

/// [`load`], taking the files one at a time (in name order): only one file's text and
/// parse are held at once, not the cluster's YAML.
pub fn load_each(
    files: impl IntoIterator<Item = (PathBuf, Result<String, String>)>,
    last: &mut LastGood,
) -> (Snapshot, Vec<SourceError>) {
    let mut errors = Vec::new();
    let old = std::mem::take(&mut last.by_file);
    // The last good version of every object, by key: built only when an error asks.
    let mut previous: Option<HashMap<Arc<ObjectKey>, Object>> = None;
    let mut previous = |key: &ObjectKey| -> Option<Object> {
        previous
            .get_or_insert_with(|| old.values().flatten().cloned().collect())
            .get(key)
            .cloned()
    };
    // Every key given so far, with the index (in `files`) of the file that gave it.
    let mut seen: HashMap<Arc<ObjectKey>, usize> = HashMap::new();
    let mut by_file: BTreeMap<PathBuf, Vec<(Arc<ObjectKey>, Object)>> = BTreeMap::new();
    let mut parsed: BTreeMap<PathBuf, Parsed> = BTreeMap::new();
    let mut any_duplicates = false;
    // The files so far, for the duplicates' messages.
    let mut paths: Vec<PathBuf> = Vec::new();
    for (index, (file, text)) in files.into_iter().enumerate() {
        paths.push(file.clone());
        let file = &file;
        let mut given: Vec<(Arc<ObjectKey>, Object)> = Vec::new();
        // A file whose text is what it was gives what it gave: its objects and its errors.
        // Files that had duplicates are parsed again, since what they give depends on the
        // other files; so is a file whose objects another file gave first this time.
        let hash = text.as_ref().ok().map(|t| content_hash(t));
        if let (Some(hash), Some(before)) = (hash, last.parsed.get(file))
            && before.hash == hash
        {
            let objects = old.get(file).map_or(&[][..], Vec::as_slice);
            if objects.iter().all(|(k, _)| !seen.contains_key(k)) {
                for (k, _) in objects {
                    seen.insert(k.clone(), index);
                }
                if !objects.is_empty() {
                    by_file.insert(file.clone(), objects.to_vec());
                }
                errors.extend(before.errors.iter().cloned());
                parsed.insert(file.clone(), before.clone());
                continue;
            }
        }
        let errors_before = errors.len();
        let mut duplicates = false;
        let docs = match parse_text(&text) {
            Ok(docs) => docs,
            Err(message) => {
                // Keep what this file gave last time (what no file before it gives now).
                let kept = old.get(file).map_or(&[][..], Vec::as_slice);
                for (key, obj) in kept {
                    if !seen.contains_key(key) {
                        seen.insert(key.clone(), index);
                        given.push((key.clone(), obj.clone()));
                    }
                }
                errors.push(SourceError::of_file(file, message, !given.is_empty()));
                if !given.is_empty() {
                    by_file.insert(file.clone(), given);
                }
                continue;
            }
        };
        for doc in docs {
            match doc {
                Ok((key, obj)) => {
                    if let Some(first) = seen.get(&key) {
                        duplicates = true;
                        errors.push(SourceError {
                            file: file.clone(),
                            object: key.to_string(),
                            field: None,
                            message: format!(
                                "duplicate of the object in {}; ignored",
                                paths[*first].display()
                            ),
                            kept_last_good: false,
                        });
                        continue;
                    }
                    let key = Arc::new(key);
                    seen.insert(key.clone(), index);
                    given.push((key, obj));
                }
                Err(bad) => {
                    let bad = *bad;
                    // Its last good version, unless a file before gives the object now.
                    let kept = bad
                        .key
                        .as_ref()
                        .filter(|k| !seen.contains_key(*k))
                        .and_then(&mut previous);
                    errors.push(SourceError::of_object(file, &bad, kept.is_some()));
                    if let (Some(key), Some(obj)) = (bad.key, kept) {
                        let key = Arc::new(key);
                        seen.insert(key.clone(), index);
                        given.push((key, obj));
                    }
                }
            }
        }
        if !given.is_empty() {
            by_file.insert(file.clone(), given);
        }
        any_duplicates |= duplicates;
        if let (Some(hash), false) = (hash, duplicates) {
            let file_errors = errors[errors_before..].to_vec();
            parsed.insert(
                file.clone(),
                Parsed {
                    hash,
                    errors: file_errors,
                },
            );
        }
    }
    drop(seen);
    last.parsed = parsed;
    last.duplicates = any_duplicates;
    last.by_file = by_file;
    (last.snapshot(), errors)
}

/// One document's object, or what is wrong with it.
pub(crate) type Document = Result<(ObjectKey, Object), Box<BadObject>>;

/// The limits of one manifest file: serde-saphyr's budget, with its defaults (1,024
/// documents, 250,000 nodes, 1,000,000 events, 64 MiB of text) raised so that any file a
/// cluster can produce fits. What stays at its default guards against hostile YAML that is
/// small on disk and huge in memory (aliases, anchors, nesting depth).
pub const MAX_DOCUMENTS: usize = 100_000;
/// See [`MAX_DOCUMENTS`]: nodes (mappings, sequences, scalars) in one file.
pub const MAX_NODES: usize = 50_000_000;
/// See [`MAX_DOCUMENTS`]: bytes of text (scalars) in one file.
pub const MAX_TEXT_BYTES: usize = 1 << 30;

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES + 2 * MAX_DOCUMENTS,
            max_total_scalar_bytes: MAX_TEXT_BYTES,
        },
    }
}

/// A file's objects in document order (empty documents left out; the items of a `kind:
/// List`, as `kubectl get -o yaml` prints several objects, in their place), or why the file
/// as a whole cannot be read. Pure: what other files give is the caller's business.
pub(crate) fn parse_text(text: &Result<String, String>) -> Result<Vec<Document>, String> {
    let docs = match text {
        Ok(text) => {
            serde_saphyr::from_multiple_with_options::<serde_json::Value>(text, yaml_options())
                .map_err(|e| {
                    use serde_saphyr::budget::BudgetBreach as B;
                    match e.without_snippet() {
                        serde_saphyr::Error::Budget {
                            breach:
                                breach @ (B::Documents { .. }
                                | B::Nodes { .. }
                                | B::Events { .. }
                                | B::ScalarBytes { .. }),
                            ..
                        } => format!(
                            "too large: {breach:?} (a file may hold at most {MAX_DOCUMENTS} \
                             documents, {MAX_NODES} YAML nodes and {} MiB of text; split it)",
                            MAX_TEXT_BYTES >> 20
                        ),
                        // Nesting, aliases, anchors: the parser's guards against YAML bombs.
                        serde_saphyr::Error::Budget { breach, .. } => format!(
                            "refused by the YAML parser's limits against YAML bombs: \
                             {breach:?} (at most 64 levels of nesting, 50000 aliases and \
                             50000 anchors)"
                        ),
                        _ => format!("invalid YAML: {e}"),
                    }
                })?
        }
        Err(e) => return Err(e.clone()),
    };
    let mut objects = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
        let doc_name = format!("document {}", i + 1);
        match list_items(doc) {
            Doc::One(doc) => objects.push(parse_object(doc, doc_name)),
            Doc::List(item_kind, items) => {
                for (j, mut item) in items.into_iter().enumerate() {
                    // A typed list (`PodList`) may leave its items' kind out.
                    if let (Some(kind), Some(obj)) = (item_kind, item.as_object_mut()) {
                        obj.entry("kind").or_insert_with(|| kind.into());
                    }
                    objects.push(parse_object(item, format!("{doc_name} items[{j}]")));
                }
            }
            Doc::BadList(message) => objects.push(Err(Box::new(BadObject {
                key: None,
                object: doc_name,
                field: Some("items".into()),
                message,
            }))),
        }
    }
    Ok(objects)
}

/// A document: one object, or a list of them.
enum Doc {
    One(serde_json::Value),
    /// The kind its items have when they leave it out (a typed list), and the items.
    List(Option<&'static str>, Vec<serde_json::Value>),
    BadList(String),
}

fn list_items(mut doc: serde_json::Value) -> Doc {
    let item_kind = match doc.get("kind").and_then(|k| k.as_str()) {
        Some("List") => None,
        Some("NamespaceList") => Some("Namespace"),
        Some("PodList") => Some("Pod"),
        Some("NetworkPolicyList") => Some("NetworkPolicy"),
        _ => return Doc::One(doc),
    };
    match doc.get_mut("items").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => Doc::List(item_kind, items),
        None | Some(serde_json::Value::Null) => Doc::List(item_kind, Vec::new()),
        Some(_) => Doc::BadList("a list's items must be a sequence".into()),
    }
}

pub(crate) struct BadObject {
    key: Option<ObjectKey>,
    object: String,
    field: Option<String>,
    message: String,
}

fn parse_object(
    doc: serde_json::Value,
    doc_name: String,
) -> Result<(ObjectKey, Object), Box<BadObject>> {
    let str_at = |ptr: &str| doc.pointer(ptr).and_then(|v| v.as_str()).map(str::to_owned);
    let kind_str = str_at("/kind");
    let name = str_at("/metadata/name");
    let bad = |key: Option<ObjectKey>, object: String, field: Option<&str>, message: String| {
        Box::new(BadObject {
            key,
            object: bounded(object, MAX_PART_BYTES),
            field: field.map(|f| bounded(f.to_owned(), MAX_PART_BYTES)),
            message,
        })
    };
    let kind = match kind_str.as_deref() {
        Some("Namespace") => Kind::Namespace,
        Some("Pod") => Kind::Pod,
        Some("NetworkPolicy") => Kind::NetworkPolicy,
        Some(cluster::KIND) => Kind::ClusterNetworkPolicy,
        Some("Node") => Kind::Node,
        Some(other) => {
            return Err(bad(
                None,
                format!("{doc_name} ({other} {})", name.unwrap_or_default()),
                Some("kind"),
                bounded(
                    format!(
                        "unsupported kind {other:?}: expected Namespace, Pod, NetworkPolicy, ClusterNetworkPolicy or Node"
                    ),
                    MAX_PART_BYTES,
                ),
            ));
        }
        None => return Err(bad(None, doc_name, Some("kind"), "missing kind".into())),
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(bad(
            None,
            format!("{doc_name} ({kind:?})"),
            Some("metadata.name"),
            "missing name".into(),
        ));
    };
    let namespace = match kind {
        ref k if k.cluster_scoped() => String::new(),
        _ => str_at("/metadata/namespace").unwrap_or_else(|| "default".into()),
    };
    let key = ObjectKey {
        kind: kind.clone(),
        namespace: intern(&namespace),
        name: name.as_str().into(),
    };
    let object = key.to_string();
    let typed = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        bad(
            Some(key.clone()),
            object.clone(),
            // The document as a whole (k8s-openapi checks `apiVersion` against the kind).
            Some(path.as_str()).filter(|p| *p != "."),
            bounded(e.into_inner().to_string(), MAX_PART_BYTES),
        )
    };
    // Fields the types do not have: misspelt ones would otherwise be dropped without a word.
    let mut unknown = Vec::new();
    let (obj, field_errors): (Object, Vec<FieldError>) = match kind {
        Kind::Namespace => {
            let mut ns: Namespace = decode(doc, &mut unknown).map_err(typed)?;
            ns.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(NAMESPACE_NAME_LABEL.into(), name.clone());
            let errs = validate_namespace(&ns);
            (Object::Namespace(Arc::new(ns)), errs)
        }
        Kind::Pod => {
            let mut pod: Pod = decode(doc, &mut unknown).map_err(typed)?;
            pod.metadata.namespace = Some(namespace.clone());
            let errs = validate_pod(&pod);
            (Object::Pod(Arc::new(PodInfo::from(&pod))), errs)
        }
        Kind::NetworkPolicy => {
            let mut np: NetworkPolicy = decode(doc, &mut unknown).map_err(typed)?;
            np.metadata.namespace = Some(namespace.clone());
            let errs = validate_policy(&np);
            (Object::NetworkPolicy(Arc::new(np)), errs)
        }
        Kind::ClusterNetworkPolicy => {
            let cnp: ClusterNetworkPolicy = decode(doc, &mut unknown).map_err(typed)?;
            let errs = validate_cluster_policy(&cnp);
            (Object::ClusterNetworkPolicy(Arc::new(cnp)), errs)
        }
        Kind::Node => {
            let node: Node = decode(doc, &mut unknown).map_err(typed)?;
            (Object::Node(Arc::new(NodeInfo::from(&node))), Vec::new())
        }
    };
    let field_errors: Vec<FieldError> = unknown
        .into_iter()
        .filter(|field| refuses_unknown(&kind, field))
        .map(|field| FieldError {
            field,
            message: "unknown field (a misspelling? kubectl refuses it too; ignoring it could \
                      change what is enforced)"
                .into(),
        })
        .chain(field_errors)
        .collect();
    if let Some(first) = field_errors.first() {
        let part = |text: &str| bounded(text.to_owned(), MAX_PART_BYTES);
        let message = field_errors
            .iter()
            .skip(1)
            .fold(part(&first.message), |acc, e| {
                format!("{acc}; {}: {}", part(&e.field), part(&e.message))
            });
        return Err(bad(Some(key), object, Some(&first.field), message));
    }
    Ok((key, obj))
}

/// Deserializes `doc` as `T`, naming the field at fault, and collects in `unknown` the fields
/// `T` does not have (as paths like the validators': `spec.ingress[0].from[0].ipBlock.excpet`).
fn decode<T: serde::de::DeserializeOwned>(
    doc: serde_json::Value,
    unknown: &mut Vec<String>,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    let mut ignored = |path: serde_ignored::Path| unknown.push(field_path(&path));
    serde_path_to_error::deserialize(serde_ignored::Deserializer::new(doc, &mut ignored))
}

fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Whether an unknown `field` of a `kind` is an error. Everything in a NetworkPolicy counts
/// (`excpet` for `except` would widen an allow rule, `podSelectr` would select every pod)
/// but its `status`, which the agent never reads (older clusters printed `status: {}`); of
/// namespaces and pods, only `metadata` counts (`lables` would leave a pod unselected, so
/// unisolated), since their other fields change from one Kubernetes version to the next and
/// the agent reads little of them.
fn refuses_unknown(kind: &Kind, field: &str) -> bool {
    let under = |prefix: &str| {
        field == prefix
            || field
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    };
    match kind {
        Kind::NetworkPolicy | Kind::ClusterNetworkPolicy => !under("status"),
        Kind::Namespace | Kind::Pod | Kind::Node => under("metadata"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> (PathBuf, Result<String, String>) {
        (PathBuf::from(name), Ok(text.to_owned()))
    }

    const NS_AND_POLICY: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny
  namespace: demo
spec:
  podSelector: {}
";

    const BAD_CIDR: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny
  namespace: demo
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.0.0/33
";

    #[test]
    fn reads_multi_document_files_and_labels_namespaces() {
        let mut last = LastGood::default();
        let (snap, errors) = load(&[file("a.yaml", NS_AND_POLICY)], &mut last);
        assert!(errors.is_empty(), "{errors:?}");
        let ns = &snap.namespaces["demo"];
        assert_eq!(
            ns.metadata.labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
            "demo"
        );
        assert!(snap.policies.contains_key(&ObjectRef::new("demo", "deny")));
    }

    /// More documents than serde-saphyr's default budget (1,024) are read; past ours the
    /// error names the limit.
    #[test]
    fn files_of_many_documents_are_read_and_the_limit_is_named() {
        let many: String = (0..3000)
            .map(|i| format!("---\nkind: Namespace\napiVersion: v1\nmetadata: {{name: ns{i}}}\n"))
            .collect();
        let (snap, errors) = load(&[file("many.yaml", &many)], &mut LastGood::default());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(snap.namespaces.len(), 3000);

        let too_many = "---\n".repeat(MAX_DOCUMENTS + 1);
        let (_, errors) = load(&[file("storm.yaml", &too_many)], &mut LastGood::default());
        let message = &errors[0].message;
        assert!(
            message.contains("too large")
                && message.contains(&format!("at most {MAX_DOCUMENTS} documents")),
            "{message}"
        );
    }

    /// `kubectl get -o yaml` prints several objects as one `kind: List`; typed lists may
    /// leave their items' kind out.
    #[test]
    fn lists_are_read_item_by_item() {
        let list = "
apiVersion: v1
kind: List
metadata: {resourceVersion: ''}
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: demo}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: demo}
  spec: {podSelector: {}}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: bad, namespace: demo}
  spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}
---
apiVersion: v1
kind: NamespaceList
items:
- metadata: {name: other}
";
        let (snap, errors) = load(&[file("list.yaml", list)], &mut LastGood::default());
        assert!(snap.namespaces.contains_key("demo") && snap.namespaces.contains_key("other"));
        assert!(snap.policies.contains_key(&ObjectRef::new("demo", "deny")));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].object.contains("demo/bad"), "{errors:?}");

        let (_, errors) = load(
            &[file("l.yaml", "kind: List\nitems: {a: b}\n")],
            &mut LastGood::default(),
        );
        assert_eq!(errors[0].field.as_deref(), Some("items"), "{errors:?}");
    }

    /// Unchanged files are taken from the cache: the result is what parsing them again gives,
    /// errors included, and duplicates across files resolve as files change.
    #[test]
    fn unchanged_files_give_what_they_gave() {
        let ns = NS_AND_POLICY.split("---").next().unwrap();
        let with_bad = format!("{ns}---{BAD_CIDR}");
        let policy = NS_AND_POLICY.split("---").nth(1).unwrap();
        let steps: Vec<Vec<(PathBuf, Result<String, String>)>> = vec![
            vec![file("a.yaml", NS_AND_POLICY)],
            vec![file("a.yaml", NS_AND_POLICY), file("b.yaml", policy)],
            vec![file("a.yaml", NS_AND_POLICY), file("b.yaml", policy)],
            vec![file("a.yaml", ns), file("b.yaml", policy)],
            vec![file("a.yaml", ns), file("b.yaml", policy)],
            vec![file("a.yaml", &with_bad), file("b.yaml", "")],
            vec![file("a.yaml", &with_bad), file("b.yaml", "")],
            vec![file("a.yaml", "key: [unclosed"), file("b.yaml", "")],
            vec![file("a.yaml", "key: [unclosed"), file("b.yaml", "")],
            vec![file("a.yaml", NS_AND_POLICY)],
        ];
        let mut cached = LastGood::default();
        let mut fresh_history = LastGood::default();
        for (i, files) in steps.iter().enumerate() {
            let (snap, errors) = load(files, &mut cached);
            // The same history without the cache: clear what would let it be used.
            fresh_history.parsed.clear();
            let (want_snap, want_errors) = load(files, &mut fresh_history);
            assert_eq!(errors, want_errors, "step {i}");
            assert_eq!(format!("{snap:?}"), format!("{want_snap:?}"), "step {i}");
        }
        // The duplicate (step 1: the policy in a.yaml and b.yaml) was reported each time
        // until a.yaml dropped it, then b.yaml's copy is the policy.
        let (snap, _) = load(&steps[3], &mut LastGood::default());
        assert!(snap.policies.contains_key(&ObjectRef::new("demo", "deny")));
    }

    #[test]
    fn invalid_object_keeps_its_last_good_version_and_names_the_field() {
        let mut last = LastGood::default();
        let (_, errors) = load(&[file("a.yaml", NS_AND_POLICY)], &mut last);
        assert!(errors.is_empty());
        let ns = NS_AND_POLICY.split("---").next().unwrap();
        let text = format!("{ns}---{BAD_CIDR}");
        let (snap, errors) = load(&[file("a.yaml", &text)], &mut last);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.object, "NetworkPolicy demo/deny");
        assert_eq!(
            e.field.as_deref(),
            Some("spec.ingress[0].from[0].ipBlock.cidr")
        );
        assert!(e.kept_last_good);
        assert!(
            e.to_string()
                .starts_with("a.yaml: NetworkPolicy demo/deny: spec.ingress"),
            "{e}"
        );
        // The old (valid) version is still there.
        let np = &snap.policies[&ObjectRef::new("demo", "deny")];
        assert!(np.spec.as_ref().unwrap().ingress.is_none());
    }

    #[test]
    fn unparsable_file_keeps_what_it_gave_last_time() {
        let mut last = LastGood::default();
        load(
            &[file("a.yaml", NS_AND_POLICY), file("b.yaml", "")],
            &mut last,
        );
        let (snap, errors) = load(
            &[file("a.yaml", "kind: [unclosed"), file("b.yaml", "")],
            &mut last,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, PathBuf::from("a.yaml"));
        assert!(errors[0].kept_last_good);
        assert_eq!(snap.policies.len(), 1);
        assert_eq!(snap.namespaces.len(), 1);
    }

    #[test]
    fn new_invalid_object_is_left_out_with_an_error() {
        let mut last = LastGood::default();
        let (snap, errors) = load(&[file("a.yaml", BAD_CIDR)], &mut last);
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].kept_last_good);
        assert!(snap.policies.is_empty());
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: demo
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 80
      endPort: eighty
";
        let (_, errors) = load(&[file("a.yaml", text)], &mut LastGood::default());
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].field.as_deref(),
            Some("spec.ingress[0].ports[0].endPort")
        );
    }

    /// A field a type does not have is an error naming it (in a policy anywhere but its
    /// `status`; in a namespace or pod, in its `metadata`), not dropped: `excpet` would widen
    /// an allow rule, `lables` would leave a pod unselected.
    #[test]
    fn unknown_fields_are_errors_where_they_could_change_enforcement() {
        let text = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: demo}
spec:
  podSelector: {}
  egress:
  - to:
    - ipBlock: {cidr: 0.0.0.0/0, excpet: [10.0.0.0/8]}
  - ports: [{port: 80, protocl: UDP}]
status: {}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, lables: {app: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: demo, labels: {app: db}}
spec: {containers: [{name: c, someNewField: 1}]}
status: {podIP: 10.0.0.1, fieldOfAFutureRelease: x}
";
        let (snap, errors) = load(&[file("a.yaml", text)], &mut LastGood::default());
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "a.yaml: NetworkPolicy demo/p: spec.egress[0].to[0].ipBlock.excpet: unknown field \
                 (a misspelling? kubectl refuses it too; ignoring it could change what is \
                 enforced); spec.egress[1].ports[0].protocl: unknown field (a misspelling? \
                 kubectl refuses it too; ignoring it could change what is enforced)",
                "a.yaml: Pod demo/web: metadata.lables: unknown field (a misspelling? kubectl \
                 refuses it too; ignoring it could change what is enforced)",
            ]
        );
        assert!(snap.policies.is_empty());
        assert_eq!(
            snap.pods
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["demo/db"]
        );
    }

    /// Errors quote the values at fault, cut to a bounded length; a breach of the parser's
    /// guards against YAML bombs says so, not "split the file".
    #[test]
    fn errors_are_bounded_and_name_the_limit_hit() {
        let huge = format!(
            "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: p}}\n\
             spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 1.2.3.4/{}}}}}]}}]}}\n",
            "x".repeat(1 << 20)
        );
        let deep = format!("a:\n{}x\n", "- ".repeat(100));
        let (_, errors) = load(
            &[file("huge.yaml", &huge), file("deep.yaml", &deep)],
            &mut LastGood::default(),
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        let huge = errors[0].to_string();
        assert!(huge.len() < 2000, "{} bytes", huge.len());
        assert!(
            huge.contains("invalid CIDR") && huge.contains("bytes in all"),
            "{huge}"
        );
        let deep = &errors[1].message;
        assert!(
            deep.contains("against YAML bombs") && deep.contains("Depth"),
            "{deep}"
        );
    }

    #[test]
    fn unknown_kinds_and_duplicates_are_errors() {
        let text = "kind: Deployment\nmetadata:\n  name: web\n";
        let (_, errors) = load(
            &[
                file("a.yaml", text),
                file("b.yaml", NS_AND_POLICY),
                file("c.yaml", NS_AND_POLICY),
            ],
            &mut LastGood::default(),
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].message.contains("unsupported kind"));
        assert!(errors[1].message.contains("duplicate"));
    }

    mod fuzz {
        //! Bad input at scale: whatever the files hold, loading and compiling neither panics
        //! nor hangs, and every error names its file.
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::*;
        use crate::policy::{
            compile,
            model::{Allocations, NodeContext},
        };

        const KEYS: [&str; 22] = [
            "podSelector",
            "namespaceSelector",
            "ingress",
            "egress",
            "from",
            "to",
            "ports",
            "port",
            "endPort",
            "protocol",
            "ipBlock",
            "cidr",
            "except",
            "matchLabels",
            "matchExpressions",
            "key",
            "operator",
            "values",
            "policyTypes",
            "app",
            "containers",
            "status",
        ];

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                (0u32..70000).prop_map(|n| json!(n)),
                prop::sample::select(vec![
                    "10.0.0.0/8",
                    "10.0.0.1/33",
                    "::/0",
                    "1.2.3.4",
                    "garbage",
                    "",
                    "TCP",
                    "UDP",
                    "SCTP",
                    "ICMP",
                    "In",
                    "NotIn",
                    "Exists",
                    "Bogus",
                    "Ingress",
                    "Egress",
                    "http",
                    "0.0.0.0/0",
                    "10.244.1.7/4",
                ])
                .prop_map(|s| json!(s)),
                ".{0,12}".prop_map(Value::String),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..5)
                        .prop_map(|kv| {
                            Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                        }),
                ]
            })
        }

        fn document() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["NetworkPolicy", "Pod", "Namespace"]),
                value(),
                value(),
            )
                .prop_map(|(kind, spec, status)| {
                    json!({
                        "apiVersion": "v1",
                        "kind": kind,
                        "metadata": {"name": "x", "namespace": "ns", "labels": {"app": "a"}},
                        "spec": spec,
                        "status": status,
                    })
                    .to_string()
                })
        }

        proptest! {
            #![proptest_config(crate::fuzz_config(512))]

            #[test]
            fn structured_garbage_never_panics(docs in prop::collection::vec(document(), 1..4)) {
                let text = docs.join("\n---\n");
                let (snapshot, errors) = load(&[file("f.yaml", &text)], &mut LastGood::default());
                for e in &errors {
                    prop_assert_eq!(&e.file, &PathBuf::from("f.yaml"));
                }
                let node = NodeContext { node_name: "n".into(), node_ips: Default::default() };
                let _ = compile(&snapshot, &node, &Allocations::default());
            }

            #[test]
            fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
                let (snapshot, _) = load(&[file("f.yaml", &text)], &mut LastGood::default());
                let node = NodeContext { node_name: "n".into(), node_ips: Default::default() };
                let _ = compile(&snapshot, &node, &Allocations::default());
            }
        }
    }
}
