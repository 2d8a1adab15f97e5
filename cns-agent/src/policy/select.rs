//! Selector peers and the identities they designate, kept from one compile to the next.
//!
//! A selector peer (a policy's namespace, `namespaceSelector`, `podSelector`) designates
//! every identity whose namespace and labels it matches. The first time a compile asks, the
//! answer is a scan of all identities; after that it is kept up to date as identities come
//! and go and namespaces change labels, so a pod change costs one match per selector in use.
//! Selectors no compile asked for in the last local pass are dropped ([`Selections::sweep`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    model::{IdentityKey, Labels},
    selector::{matches, matches_opt},
};

/// A selector peer: the policy's namespace and its selectors (as text, for hashing).
type SelectKey = (String, Option<String>, Option<String>);

#[derive(Debug)]
struct Selection {
    policy_ns: String,
    namespace: Option<LabelSelector>,
    pod: Option<LabelSelector>,
    ids: BTreeSet<u32>,
    /// `ids` as handed out, until they change.
    shared: Option<Arc<[u32]>>,
    /// The local pass that last asked.
    pass: u64,
}

impl Selection {
    fn matches(&self, key: &IdentityKey, ns_labels: &BTreeMap<String, Labels>) -> bool {
        let ns_ok = match &self.namespace {
            None => *key.namespace == *self.policy_ns,
            Some(sel) => ns_labels
                .get(&*key.namespace)
                .is_some_and(|l| matches(sel, l)),
        };
        ns_ok && matches_opt(self.pod.as_ref(), &key.labels)
    }

    /// Puts `id` in or out; true when that changed the set.
    fn set(&mut self, id: u32, member: bool) -> bool {
        let changed = if member {
            self.ids.insert(id)
        } else {
            self.ids.remove(&id)
        };
        if changed {
            self.shared = None;
        }
        changed
    }
}

/// Every selector peer a compile asked about, with its identities.
#[derive(Debug, Default)]
pub struct Selections {
    map: HashMap<SelectKey, Selection>,
    pass: u64,
}

impl Selections {
    /// Starts a local pass: selectors it does not ask for are dropped at [`Self::sweep`].
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Drops the selectors the current pass did not ask for.
    pub fn sweep(&mut self) {
        let pass = self.pass;
        self.map.retain(|_, s| s.pass == pass);
    }

    /// The identities (numeric order) a selector peer of a policy in `policy_ns` designates.
    pub fn select(
        &mut self,
        policy_ns: &str,
        namespace: Option<&LabelSelector>,
        pod: Option<&LabelSelector>,
        identities: &BTreeMap<IdentityKey, u32>,
        ns_labels: &BTreeMap<String, Labels>,
    ) -> Arc<[u32]> {
        let key = (
            policy_ns.to_owned(),
            namespace.map(|s| format!("{s:?}")),
            pod.map(|s| format!("{s:?}")),
        );
        let pass = self.pass;
        let s = self.map.entry(key).or_insert_with(|| {
            let mut s = Selection {
                policy_ns: policy_ns.to_owned(),
                namespace: namespace.cloned(),
                pod: pod.cloned(),
                ids: BTreeSet::new(),
                shared: None,
                pass,
            };
            s.ids = identities
                .iter()
                .filter(|(k, _)| s.matches(k, ns_labels))
                .map(|(_, id)| *id)
                .collect();
            s
        });
        s.pass = pass;
        s.shared
            .get_or_insert_with(|| s.ids.iter().copied().collect())
            .clone()
    }

    /// A new identity: every selector that matches it gains it. True when one did.
    pub fn add(
        &mut self,
        key: &IdentityKey,
        id: u32,
        ns_labels: &BTreeMap<String, Labels>,
    ) -> bool {
        let mut changed = false;
        for s in self.map.values_mut() {
            if s.matches(key, ns_labels) {
                changed |= s.set(id, true);
            }
        }
        changed
    }

    /// An identity whose namespace changed labels: matched again by every namespace
    /// selector. True when a set changed.
    pub fn recheck(
        &mut self,
        key: &IdentityKey,
        id: u32,
        ns_labels: &BTreeMap<String, Labels>,
    ) -> bool {
        let mut changed = false;
        for s in self.map.values_mut().filter(|s| s.namespace.is_some()) {
            let member = s.matches(key, ns_labels);
            changed |= s.set(id, member);
        }
        changed
    }

    /// An identity that is gone (its number may be handed out again).
    pub fn forget(&mut self, id: u32) {
        for s in self.map.values_mut() {
            s.set(id, false);
        }
    }
}
