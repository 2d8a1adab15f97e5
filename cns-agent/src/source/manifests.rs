//! The manifests directory as a source that reads only what changed.
//!
//! [`ManifestSource`] stats every manifest file at each read and reads only the files whose
//! stat changed (device, inode, size, mtime, ctime), or that changed so recently that a later
//! write could leave the stat as it is (git's "racily clean" rule: a stamp is trusted once
//! the file's ctime is [`SETTLE`] older than the read that recorded it). A file read again
//! whose text hashes as before changes nothing. The objects of the files that changed are
//! handed to the compiler as [`SnapshotChanges`], so a one-pod edit costs that file, not the
//! cluster.
//!
//! This is exactly what a full [`load`](super::load) of every file would give, as long as files do not
//! interact: when a changed file gives an object another file gives (a duplicate, an object
//! moving between files) or the last load found duplicates, the read falls back to a full
//! [`load`](super::load) of every file and hands over the whole snapshot.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{
    HeldStore, LastGood, Object, ObjectKey, Parsed, SnapshotSource, SourceError, SourceFailure,
    SourceState, content_hash, is_manifest, load_each, parse_text, read_file,
};
use crate::policy::model::{SnapshotChanges, SnapshotUpdate};

/// How old a file's ctime must be, when its stat is recorded, for the stat to be trusted
/// at the next read (timestamps are coarser than the clock; some filesystems' much coarser).
const SETTLE: Duration = Duration::from_secs(2);

/// What a file looked like when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least `settle` before `now`.
    fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let ctime = Duration::new(
            u64::try_from(self.ctime.0).unwrap_or(0),
            u32::try_from(self.ctime.1).unwrap_or(0),
        );
        now.duration_since(SystemTime::UNIX_EPOCH)
            .is_ok_and(|now| ctime + settle < now)
    }
}

/// The manifests directory as a source.
pub struct ManifestSource {
    dir: PathBuf,
    last_good: LastGood,
    /// The stat of each file when it was last read, if trusted at the next read.
    stamps: BTreeMap<PathBuf, Option<Stamp>>,
    /// The problems each file had at its last read.
    errors: BTreeMap<PathBuf, Vec<SourceError>>,
    /// The file giving each object (built when first needed after a full load).
    owners: Option<HashMap<Arc<ObjectKey>, Arc<Path>>>,
    /// [`SETTLE`], but for tests.
    settle: Duration,
    /// How many files the last read read.
    files_read: usize,
    /// Where the last good versions of invalid objects outlive the process, if anywhere.
    held: Option<HeldStore>,
}

impl ManifestSource {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            last_good: LastGood::default(),
            stamps: BTreeMap::new(),
            errors: BTreeMap::new(),
            owners: None,
            settle: SETTLE,
            files_read: 0,
            held: None,
        }
    }

    /// Keeps the last good versions of invalid objects in the store at `path`, and takes
    /// those it holds (from an agent before this one) as the last good versions of their
    /// files ([`super::held`]).
    pub fn with_held_store(mut self, path: PathBuf) -> Self {
        let (store, held) = HeldStore::open(path);
        self.last_good.by_file = held;
        self.held = Some(store);
        self
    }

    /// Saves what is held now: the last good versions kept for errors (a whole file's for
    /// a file that did not parse).
    fn save_held(&mut self) {
        let Some(store) = &mut self.held else { return };
        let mut held: Vec<(&Path, super::held::Given)> = Vec::new();
        for (file, errors) in &self.errors {
            let kept: Vec<&SourceError> = errors.iter().filter(|e| e.kept_last_good).collect();
            let Some(given) = self
                .last_good
                .by_file
                .get(file)
                .filter(|_| !kept.is_empty())
            else {
                continue;
            };
            // An object's error names it as its key prints (`NetworkPolicy ns/name`).
            let objects = given
                .iter()
                .filter(|(key, _)| {
                    kept.iter()
                        .any(|e| e.object == "file" || e.object == key.to_string())
                })
                .cloned()
                .collect();
            held.push((file.as_path(), objects));
        }
        store.save(held.iter().map(|(f, given)| (*f, given.as_slice())));
    }

    /// The manifest files of the directory (sorted) with their stat, if they have one.
    fn list(&self) -> Result<Vec<(PathBuf, Option<Stamp>)>, SourceFailure> {
        let failed = |source| SourceFailure::ReadDir {
            path: self.dir.clone(),
            source,
        };
        let mut files: Vec<(PathBuf, Option<Stamp>)> = std::fs::read_dir(&self.dir)
            .map_err(failed)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_manifest(p))
            .filter_map(|p| match std::fs::metadata(&p) {
                Ok(meta) if meta.is_file() => Some((p, Some(Stamp::of(&meta)))),
                Ok(_) => None,
                // Gone since the listing, or unreadable: reading it says which.
                Err(_) => Some((p, None)),
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// The files whose stat is not the trusted one of the last read, with their text, and
    /// the files gone since (`None`).
    fn changed_files(
        &self,
        listed: &[(PathBuf, Option<Stamp>)],
    ) -> Vec<(PathBuf, Option<Result<String, String>>)> {
        let mut changed: Vec<(PathBuf, Option<Result<String, String>>)> = listed
            .iter()
            .filter(|(p, stamp)| stamp.is_none() || self.stamps.get(p) != Some(stamp))
            .map(|(p, _)| (p.clone(), Some(read_file(p))))
            .collect();
        let listed: HashSet<&PathBuf> = listed.iter().map(|(p, _)| p).collect();
        changed.extend(
            self.stamps
                .keys()
                .filter(|p| !listed.contains(p))
                .map(|p| (p.clone(), None)),
        );
        changed
    }

    fn all_errors(&self) -> Vec<SourceError> {
        let held = self.held.iter().flat_map(|h| &h.errors);
        self.errors
            .values()
            .flatten()
            .chain(held)
            .cloned()
            .collect()
    }

    /// Every file read and loaded; the whole snapshot.
    fn read_all(&mut self, listed: &[(PathBuf, Option<Stamp>)]) -> SnapshotUpdate {
        // Read one at a time, each file's text dropped once loaded.
        let files = listed.iter().map(|(p, _)| (p.clone(), read_file(p)));
        self.files_read = listed.len();
        let (snapshot, errors) = load_each(files, &mut self.last_good);
        self.errors = BTreeMap::new();
        for e in errors {
            self.errors.entry(e.file.clone()).or_default().push(e);
        }
        self.owners = None;
        SnapshotUpdate::Full(snapshot)
    }
}

impl SnapshotSource for ManifestSource {
    fn read(&mut self, full: bool) -> Result<SourceState, SourceFailure> {
        let now = SystemTime::now();
        // Stat before reading: a file written after its stat is read again next time.
        let listed = self.list()?;
        let update = if full || self.stamps.is_empty() || self.last_good.duplicates {
            None
        } else {
            let changed = self.changed_files(&listed);
            self.files_read = changed.iter().filter(|(_, text)| text.is_some()).count();
            let owners = self.owners.get_or_insert_with(|| owners(&self.last_good));
            apply_files(&mut self.last_good, owners, &mut self.errors, changed)
                .map(SnapshotUpdate::Changes)
        };
        let update = match update {
            Some(update) => update,
            None => self.read_all(&listed),
        };
        self.stamps = listed
            .into_iter()
            .map(|(p, stamp)| (p, stamp.filter(|s| s.settled(now, self.settle))))
            .collect();
        self.save_held();
        Ok(SourceState {
            update,
            errors: self.all_errors(),
            audit_mode: None,
        })
    }

    fn describe(&self) -> String {
        format!("manifests:{}", self.dir.display())
    }
}

fn owners(last: &LastGood) -> HashMap<Arc<ObjectKey>, Arc<Path>> {
    let mut owners = HashMap::new();
    for (file, objects) in &last.by_file {
        let file: Arc<Path> = file.as_path().into();
        for (key, _) in objects {
            owners.insert(key.clone(), file.clone());
        }
    }
    owners
}

/// What one changed file gives now.
struct Outcome {
    file: PathBuf,
    given: Vec<(Arc<ObjectKey>, Object)>,
    errors: Vec<SourceError>,
    /// The file's text hash and errors, when it parsed (`None`: removed or unparsable).
    parsed: Option<Parsed>,
}

/// Loads the `changed` files (`None`: removed) into `last` and returns what changed, or
/// `None` (and nothing touched) when the files interact and a full [`load`](super::load) must decide.
fn apply_files(
    last: &mut LastGood,
    owners: &mut HashMap<Arc<ObjectKey>, Arc<Path>>,
    errors: &mut BTreeMap<PathBuf, Vec<SourceError>>,
    changed: Vec<(PathBuf, Option<Result<String, String>>)>,
) -> Option<SnapshotChanges> {
    let mut outcomes = Vec::new();
    for (file, text) in changed {
        let old = last.by_file.get(&file).map_or(&[][..], Vec::as_slice);
        let Some(text) = text else {
            outcomes.push(Outcome {
                file,
                given: Vec::new(),
                errors: Vec::new(),
                parsed: None,
            });
            continue;
        };
        let hash = text.as_ref().ok().map(|t| content_hash(t));
        if hash.is_some() && last.parsed.get(&file).map(|p| p.hash) == hash {
            continue;
        }
        outcomes.push(outcome(file, &text, hash, old, owners)?);
    }
    // Two changed files giving one object: which one wins depends on the others.
    let mut claimed = HashSet::new();
    if !outcomes
        .iter()
        .flat_map(|o| &o.given)
        .all(|(k, _)| claimed.insert(k.clone()))
    {
        return None;
    }
    drop(claimed);
    let mut changes = SnapshotChanges::default();
    for mut o in outcomes {
        let old = last.by_file.remove(&o.file).unwrap_or_default();
        let file: Arc<Path> = o.file.as_path().into();
        let mut before: HashMap<&ObjectKey, &Object> = old.iter().map(|(k, v)| (&**k, v)).collect();
        for (key, obj) in &mut o.given {
            match before.remove(&**key) {
                // Unchanged objects stay the same `Arc`, so later comparisons are cheap.
                Some(was) if same(was, obj) => *obj = was.clone(),
                Some(_) => change(&mut changes, key, Some(obj)),
                None => {
                    owners.insert(key.clone(), file.clone());
                    change(&mut changes, key, Some(obj));
                }
            }
        }
        for key in before.into_keys() {
            owners.remove(key);
            change(&mut changes, key, None);
        }
        if !o.given.is_empty() {
            last.by_file.insert(o.file.clone(), o.given);
        }
        match o.parsed {
            Some(parsed) => last.parsed.insert(o.file.clone(), parsed),
            None => last.parsed.remove(&o.file),
        };
        if o.errors.is_empty() {
            errors.remove(&o.file);
        } else {
            errors.insert(o.file, o.errors);
        }
    }
    Some(changes)
}

/// What `file` gives with `text`, as [`load`](super::load) would decide it; `None` when that depends on
/// other files (an object another file gives, the same object twice).
fn outcome(
    file: PathBuf,
    text: &Result<String, String>,
    hash: Option<u64>,
    old: &[(Arc<ObjectKey>, Object)],
    owners: &HashMap<Arc<ObjectKey>, Arc<Path>>,
) -> Option<Outcome> {
    let mut given: Vec<(Arc<ObjectKey>, Object)> = Vec::new();
    let mut errors = Vec::new();
    let docs = match parse_text(text) {
        Ok(docs) => docs,
        Err(message) => {
            // Keep what this file gave last time (no other file gives it).
            errors.push(SourceError::of_file(&file, message, !old.is_empty()));
            return Some(Outcome {
                file,
                given: old.to_vec(),
                errors,
                parsed: None,
            });
        }
    };
    let mut seen: HashSet<ObjectKey> = HashSet::new();
    let elsewhere = |key: &ObjectKey| owners.get(key).is_some_and(|f| **f != *file);
    for doc in docs {
        match doc {
            Ok((key, obj)) => {
                if elsewhere(&key) || !seen.insert(key.clone()) {
                    return None;
                }
                given.push((Arc::new(key), obj));
            }
            Err(bad) => {
                if bad.key.as_ref().is_some_and(&elsewhere) {
                    return None;
                }
                // Its last good version: this file's, since no other file gives it.
                let kept = bad
                    .key
                    .as_ref()
                    .filter(|k| !seen.contains(*k))
                    .and_then(|k| old.iter().find(|(o, _)| **o == *k));
                errors.push(SourceError::of_object(&file, &bad, kept.is_some()));
                if let Some((key, obj)) = kept {
                    seen.insert((**key).clone());
                    given.push((key.clone(), obj.clone()));
                }
            }
        }
    }
    let parsed = hash.map(|hash| Parsed {
        hash,
        errors: errors.clone(),
    });
    Some(Outcome {
        file,
        given,
        errors,
        parsed,
    })
}

/// The same object: the same `Arc`, or equal values.
fn same(a: &Object, b: &Object) -> bool {
    fn eq<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
        Arc::ptr_eq(a, b) || **a == **b
    }
    match (a, b) {
        (Object::Namespace(a), Object::Namespace(b)) => eq(a, b),
        (Object::Pod(a), Object::Pod(b)) => eq(a, b),
        (Object::NetworkPolicy(a), Object::NetworkPolicy(b)) => eq(a, b),
        (Object::ClusterNetworkPolicy(a), Object::ClusterNetworkPolicy(b)) => eq(a, b),
        (Object::Node(a), Object::Node(b)) => eq(a, b),
        _ => false,
    }
}

/// Records that `key` now has `obj` (`None`: gone).
fn change(changes: &mut SnapshotChanges, key: &ObjectKey, obj: Option<&Object>) {
    let r = || key.object_ref();
    match (obj, &key.kind) {
        (Some(Object::Namespace(ns)), _) => changes
            .namespaces
            .push((key.name.to_string(), Some(ns.clone()))),
        (Some(Object::Pod(pod)), _) => changes.pods.push((r(), Some(pod.clone()))),
        (Some(Object::NetworkPolicy(np)), _) => changes.policies.push((r(), Some(np.clone()))),
        (None, super::Kind::Namespace) => changes.namespaces.push((key.name.to_string(), None)),
        (None, super::Kind::Pod) => changes.pods.push((r(), None)),
        (None, super::Kind::NetworkPolicy) => changes.policies.push((r(), None)),
        (Some(Object::ClusterNetworkPolicy(cnp)), _) => changes
            .cluster_policies
            .push((key.name.clone(), Some(cnp.clone()))),
        (None, super::Kind::ClusterNetworkPolicy) => {
            changes.cluster_policies.push((key.name.clone(), None))
        }
        (Some(Object::Node(node)), _) => changes.nodes.push((key.name.clone(), Some(node.clone()))),
        (None, super::Kind::Node) => changes.nodes.push((key.name.clone(), None)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::{
        policy::model::{ObjectRef, Snapshot},
        source::load,
    };

    /// A directory of its own under the system's temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("cns-manifests-{}-{n}", std::process::id()));
            _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Object `i` of a small pool (namespaces, pods, policies), in one of three versions;
    /// version 2 of a pod or policy is invalid.
    fn doc(i: u8, version: u8) -> String {
        let ns = ["a", "b"][usize::from(i % 2)];
        match i % 3 {
            0 => format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{v: '{version}'}}\n"
            ),
            1 => {
                let ip = if version == 2 {
                    "bogus".into()
                } else {
                    format!("10.0.0.{i}")
                };
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{}\n  namespace: {ns}\n  labels: {{v: '{version}'}}\nspec:\n  nodeName: node-1\nstatus:\n  podIP: {ip}\n",
                    i % 4
                )
            }
            _ => {
                let cidr = if version == 2 {
                    "10.0.0.0/33".into()
                } else {
                    format!("10.{version}.0.0/16")
                };
                format!(
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np{}\n  namespace: {ns}\nspec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {cidr}}}\n",
                    i % 4
                )
            }
        }
    }

    /// What a step does to one of four files.
    #[derive(Clone, Debug)]
    enum Edit {
        Write(Vec<(u8, u8)>),
        Garbage,
        Remove,
    }

    fn edit() -> impl Strategy<Value = (usize, Edit)> {
        let write = vec((0u8..12, 0u8..3), 0..4).prop_map(Edit::Write);
        (
            0usize..4,
            prop_oneof![6 => write, 1 => Just(Edit::Garbage), 1 => Just(Edit::Remove)],
        )
    }

    fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
        a.namespaces == b.namespaces && a.pods == b.pods && a.policies == b.policies
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Reading only what changed (one or two files edited between reads) gives what a
        /// full load of every file gives: the same
        /// objects and the same errors, step after step (duplicates, invalid objects kept at
        /// their last good version, unparsable and removed files included). And an agent
        /// restarted after any step, with the held store, gives the same again: a restart
        /// never drops what an invalid object's last good version enforced.
        #[test]
        fn reading_changes_gives_what_a_full_load_gives(steps in vec(vec(edit(), 1..3), 1..12)) {
            check_steps(steps)?;
        }
    }

    /// [`reading_changes_gives_what_a_full_load_gives`] on `steps`.
    fn check_steps(steps: Vec<Vec<(usize, Edit)>>) -> Result<(), TestCaseError> {
        let dir = Dir::new();
        let store = dir.0.join("held.json");
        let mut source = ManifestSource::new(dir.0.clone()).with_held_store(store.clone());
        let mut reference = LastGood::default();
        let mut tracked = Snapshot::default();
        for (step, edits) in steps.into_iter().enumerate() {
            for (file, edit) in edits {
                let path = dir.0.join(format!("f{file}.yaml"));
                match edit {
                    Edit::Write(docs) => {
                        let text: Vec<String> = docs.iter().map(|(i, v)| doc(*i, *v)).collect();
                        std::fs::write(&path, text.join("---\n")).unwrap();
                    }
                    Edit::Garbage => std::fs::write(&path, "kind: [unclosed").unwrap(),
                    Edit::Remove => _ = std::fs::remove_file(&path),
                }
            }
            let state = source.read(false).unwrap();
            match state.update {
                SnapshotUpdate::Full(s) => tracked = s,
                SnapshotUpdate::Changes(c) => c.apply_to(&mut tracked),
            }
            let files = crate::source::read_dir(&dir.0).unwrap();
            let (expected, errors) = load(&files, &mut reference);
            prop_assert!(
                same_snapshot(&tracked, &expected),
                "step {}: {:?} vs {:?}",
                step,
                tracked,
                expected
            );
            prop_assert_eq!(&state.errors, &errors, "step {}", step);
            // A copy: the restarted source writes its store too.
            let copy = dir.0.join("held-copy.json");
            _ = std::fs::remove_file(&copy);
            if store.exists() {
                std::fs::copy(&store, &copy).unwrap();
            }
            let restarted = ManifestSource::new(dir.0.clone())
                .with_held_store(copy)
                .read(false)
                .unwrap();
            prop_assert!(
                same_snapshot(restarted.full(), &expected),
                "step {} restarted: {:?} vs {:?}",
                step,
                restarted.full(),
                expected
            );
            // The same problems; which file is said to keep an object that moved between
            // files may differ (a file read again vs. one whose text is unchanged), and so
            // which file a later duplicate of it is said to repeat.
            let unflagged = |errors: &[SourceError]| -> Vec<SourceError> {
                errors
                    .iter()
                    .map(|e| SourceError {
                        kept_last_good: false,
                        message: if e.message.starts_with("duplicate of the object in ") {
                            "duplicate".into()
                        } else {
                            e.message.clone()
                        },
                        ..e.clone()
                    })
                    .collect()
            };
            prop_assert_eq!(
                unflagged(&restarted.errors),
                unflagged(&errors),
                "step {} restarted",
                step
            );
            prop_assert_eq!(store.exists(), errors.iter().any(|e| e.kept_last_good));
        }
        Ok(())
    }

    /// A case the property found: an invalid object in one file, its valid version in a later
    /// one, then the invalid version in a file between them.
    #[test]
    fn an_invalid_object_between_its_valid_version_and_an_unchanged_file() {
        let steps = vec![
            vec![(0, Edit::Write(vec![(11, 2)]))],
            vec![(2, Edit::Write(vec![(11, 0)]))],
            vec![(1, Edit::Write(vec![(11, 2)]))],
        ];
        check_steps(steps).unwrap();
    }

    #[test]
    fn reads_only_the_files_that_changed() {
        let dir = Dir::new();
        for f in 0..3 {
            std::fs::write(dir.0.join(format!("f{f}.yaml")), doc(f * 3 + 1, 0)).unwrap();
        }
        let mut source = ManifestSource::new(dir.0.clone());
        source.settle = Duration::ZERO;
        let first = source.read(false).unwrap();
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(matches!(first.update, SnapshotUpdate::Full(_)));
        assert_eq!(source.files_read, 3);
        let state = source.read(false).unwrap();
        assert_eq!(source.files_read, 0);
        let SnapshotUpdate::Changes(changes) = state.update else {
            panic!("expected changes")
        };
        assert!(changes.is_empty());
        // A size of its own: written within the clock's tick, the stat could be the same
        // (what `settle` is for, set to zero here).
        std::fs::write(dir.0.join("f1.yaml"), doc(4, 1) + "# edited\n").unwrap();
        let SnapshotUpdate::Changes(changes) = source.read(false).unwrap().update else {
            panic!("expected changes")
        };
        assert_eq!(source.files_read, 1);
        assert_eq!(changes.pods.len(), 1, "{changes:?}");
        assert_eq!(changes.pods[0].0, ObjectRef::new("a", "p0"));
        // Asked for the whole of it (the agent lost the previous read): a full snapshot.
        assert!(matches!(
            source.read(true).unwrap().update,
            SnapshotUpdate::Full(_)
        ));
    }
}
