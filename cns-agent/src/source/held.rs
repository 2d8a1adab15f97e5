//! The objects held in place of invalid input, kept across restarts.
//!
//! When a manifest file turns invalid, the last good versions of its objects stay enforced
//! ([`load`](super::load)). A new agent never saw those versions: without this store, a
//! restart (an upgrade, an OOM kill, a crash) would drop them and open what they protected.
//! After every read that changes them, the source writes the last good objects of each file
//! with a problem to a file beside the control socket (`agent.sock.held.json`: on the host's
//! `/run/cns` in the DaemonSet), and a starting agent takes them as those files' last good
//! versions. A file fixed or removed while no agent ran is read as it is now.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{Object, ObjectKey, SourceError, parse_object};

/// What a file gave: each object with its key.
pub type Given = Vec<(Arc<ObjectKey>, Object)>;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<StoredFile>,
}

/// One file's held objects, as Kubernetes objects (what the file gave when it was good).
#[derive(Serialize, Deserialize)]
struct StoredFile {
    file: PathBuf,
    objects: Vec<serde_json::Value>,
}

/// The store file, and what it holds as far as this process knows.
#[derive(Debug)]
pub struct HeldStore {
    path: PathBuf,
    /// The text the file holds (`None`: no file).
    written: Option<String>,
    /// Why the store could not be read or written (reported with the source's errors).
    pub errors: Vec<SourceError>,
}

impl HeldStore {
    /// Reads the store at `path`: the held objects by file (none if there is no store).
    /// An unreadable store or object is reported in `errors`, never fatal.
    pub fn open(path: PathBuf) -> (Self, BTreeMap<PathBuf, Given>) {
        let mut store = Self {
            path,
            written: None,
            errors: Vec::new(),
        };
        let text = match std::fs::read_to_string(&store.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (store, BTreeMap::new()),
            Err(e) => {
                store.error(format!("failed to read: {e}"));
                return (store, BTreeMap::new());
            }
        };
        store.written = Some(text.clone());
        let stored: Stored = match serde_json::from_str(&text) {
            Ok(
                s @ Stored {
                    version: VERSION, ..
                },
            ) => s,
            Ok(Stored { version, .. }) => {
                store.error(format!("unknown version {version} (expected {VERSION})"));
                return (store, BTreeMap::new());
            }
            Err(e) => {
                store.error(format!("invalid: {e}"));
                return (store, BTreeMap::new());
            }
        };
        let mut held = BTreeMap::new();
        for StoredFile { file, objects } in stored.files {
            let mut given = Given::new();
            for (i, doc) in objects.into_iter().enumerate() {
                match parse_object(doc, format!("{} object {i}", file.display())) {
                    Ok((key, obj)) => given.push((Arc::new(key), obj)),
                    Err(bad) => store.error(format!("{}: {}", bad.object, bad.message)),
                }
            }
            held.insert(file, given);
        }
        (store, held)
    }

    fn error(&mut self, message: String) {
        self.errors.push(SourceError {
            file: self.path.clone(),
            object: "held objects".into(),
            field: None,
            message: format!(
                "{message}; the last good versions of invalid objects from before the \
                 restart are not enforced"
            ),
            kept_last_good: false,
        });
    }

    /// Makes the store hold `held` (each file with its held objects; empty: removes it).
    /// A failure is reported in `errors` and retried at the next call.
    pub fn save<'a>(
        &mut self,
        held: impl IntoIterator<Item = (&'a Path, &'a [(Arc<ObjectKey>, Object)])>,
    ) {
        let files: Vec<StoredFile> = held
            .into_iter()
            .map(|(file, given)| StoredFile {
                file: file.to_owned(),
                objects: given.iter().map(|(k, o)| to_json(k, o)).collect(),
            })
            .collect();
        let text = (!files.is_empty()).then(|| {
            serde_json::to_string(&Stored {
                version: VERSION,
                files,
            })
            .expect("Kubernetes objects serialize")
        });
        if text == self.written {
            return;
        }
        self.errors.clear();
        match self.write(text.as_deref()) {
            Ok(()) => self.written = text,
            Err(e) => self.errors.push(SourceError {
                file: self.path.clone(),
                object: "held objects".into(),
                field: None,
                message: format!(
                    "failed to save: {e}; a restart would stop enforcing the last good \
                     versions of invalid objects"
                ),
                kept_last_good: false,
            }),
        }
    }

    /// Replaces the file atomically (write beside, rename), or removes it.
    fn write(&self, text: Option<&str>) -> std::io::Result<()> {
        let Some(text) = text else {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The object as the Kubernetes object it was read from.
fn to_json(key: &ObjectKey, obj: &Object) -> serde_json::Value {
    let value = match obj {
        Object::Namespace(ns) => serde_json::to_value(&**ns),
        Object::Pod(pod) => serde_json::to_value(pod.to_pod(&key.object_ref())),
        Object::NetworkPolicy(np) => serde_json::to_value(&**np),
        Object::ClusterNetworkPolicy(cnp) => serde_json::to_value(&**cnp),
        Object::Node(node) => serde_json::to_value(node.to_node(&key.name)),
    };
    value.expect("Kubernetes objects serialize")
}
