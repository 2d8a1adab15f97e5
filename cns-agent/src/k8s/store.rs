//! The agent's own watch caches: one [`Store`] per kind, of what [`Keep`] keeps (a pod as
//! its `PodInfo`), fed by a kube-runtime watcher through a [`Writer`]. Like kube-runtime's
//! reflector store, a (re-)list is collected aside and swapped in whole at `InitDone`, so a
//! reader sees the last complete state until then, never half a list.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock, RwLockReadGuard},
};

use kube::runtime::watcher::Event;

use super::decode::{Decoded, Entry, Keep};
use crate::policy::model::ObjectRef;

/// Objects of one kind by namespace/name (namespaces under an empty namespace).
pub type Objects<T> = HashMap<ObjectRef, Entry<T>>;

/// A cache shared by its writer (the watcher's task) and readers.
#[derive(Debug)]
pub struct Store<T> {
    objects: RwLock<Objects<T>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
        }
    }
}

impl<T> Store<T> {
    /// The objects, read-locked (keep the guard briefly: the writer waits on it).
    pub fn read(&self) -> RwLockReadGuard<'_, Objects<T>> {
        // A poisoned lock: a holder panicked between two whole updates; the map is whole.
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &ObjectRef) -> Option<Entry<T>> {
        self.read().get(key).cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<T>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies a watcher's events to its store.
#[derive(Debug)]
pub struct Writer<T> {
    store: Arc<Store<T>>,
    /// The list in progress (from `Init` to `InitDone`).
    listing: Option<Objects<T>>,
}

impl<T: Keep> Writer<T> {
    pub fn new(store: Arc<Store<T>>) -> Self {
        Self {
            store,
            listing: None,
        }
    }

    /// Applies one event; returns whether what the store holds changed. An update that
    /// keeps the same (a kubelet's status update of a pod or a node, which the kept form
    /// drops) does not, nor do the events of a list until it is swapped in at `InitDone`.
    pub fn apply(&mut self, event: &Event<Decoded<T>>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(Objects::new());
                false
            }
            Event::InitApply(obj) => {
                self.listing
                    .get_or_insert_default()
                    .insert(obj.key(), obj.kept.clone());
                false
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *self.store.write() = listed;
                true
            }
            Event::Apply(obj) => {
                let key = obj.key();
                let mut store = self.store.write();
                if store.get(&key).is_some_and(|old| same(old, &obj.kept)) {
                    return false;
                }
                store.insert(key, obj.kept.clone());
                true
            }
            Event::Delete(obj) => self.store.write().remove(&obj.key()).is_some(),
        }
    }

    /// Empties the store (the API server does not serve the kind: none exist), and drops a
    /// list in progress; returns whether the store held anything.
    pub fn clear(&mut self) -> bool {
        self.listing = None;
        let mut store = self.store.write();
        let held = !store.is_empty();
        store.clear();
        held
    }
}

/// Whether two entries keep the same.
fn same<T: PartialEq>(a: &Entry<T>, b: &Entry<T>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => Arc::ptr_eq(a, b) || **a == **b,
        (Err(a), Err(b)) => **a == **b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use serde_json::json;

    use super::*;

    fn ns(name: &str, team: &str) -> Decoded<Namespace> {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": team}}}))
            .expect("namespace")
    }

    fn teams(store: &Store<Namespace>) -> Vec<(String, String)> {
        let mut v: Vec<_> = store
            .read()
            .iter()
            .map(|(k, e)| {
                let labels = e.as_ref().expect("valid").metadata.labels.clone();
                (
                    k.name.to_string(),
                    labels.unwrap_or_default()["team"].clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_relist_is_swapped_in_whole_and_events_apply_at_once() {
        let store = Arc::new(Store::default());
        let mut w = Writer::new(store.clone());
        for e in [
            Event::Init,
            Event::InitApply(ns("a", "1")),
            Event::InitApply(ns("b", "1")),
        ] {
            w.apply(&e);
        }
        assert!(teams(&store).is_empty(), "not swapped in before InitDone");
        w.apply(&Event::InitDone);
        assert_eq!(
            teams(&store),
            [("a".into(), "1".into()), ("b".into(), "1".into())]
        );

        w.apply(&Event::Apply(ns("c", "2")));
        w.apply(&Event::Delete(ns("a", "1")));
        assert_eq!(
            teams(&store),
            [("b".into(), "1".into()), ("c".into(), "2".into())]
        );

        // A re-list (after 410 Gone): the last state holds until it is complete; then what
        // it lacks is gone.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(ns("b", "3")));
        assert_eq!(
            teams(&store),
            [("b".into(), "1".into()), ("c".into(), "2".into())]
        );
        w.apply(&Event::InitDone);
        assert_eq!(teams(&store), [("b".into(), "3".into())]);
    }

    #[test]
    fn an_update_that_keeps_the_same_is_not_a_change() {
        let store = Arc::new(Store::default());
        let mut w = Writer::new(store.clone());
        assert!(w.apply(&Event::Apply(ns("a", "1"))));
        let kept = store
            .get(&ObjectRef::new("", "a"))
            .expect("a")
            .expect("valid");
        // The same again (a status update the kept form drops): the cached `Arc` stays.
        assert!(!w.apply(&Event::Apply(ns("a", "1"))));
        let again = store
            .get(&ObjectRef::new("", "a"))
            .expect("a")
            .expect("valid");
        assert!(Arc::ptr_eq(&kept, &again));
        assert!(w.apply(&Event::Apply(ns("a", "2"))));
        assert!(w.apply(&Event::Delete(ns("a", "2"))));
        assert!(!w.apply(&Event::Delete(ns("a", "2"))), "already gone");

        // Cleared (the kind is not served): empty, and a list in progress is dropped.
        w.apply(&Event::Apply(ns("b", "1")));
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(ns("c", "1")));
        assert!(w.clear());
        assert!(!w.clear());
        assert!(teams(&store).is_empty());
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert!(teams(&store).is_empty(), "{:?}", teams(&store));
    }
}
