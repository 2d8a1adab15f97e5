//! The compiler that keeps its state from one sync to the next, so that a change costs what
//! it touches, not the size of the cluster.
//!
//! [`Compiler::update`] takes the next [`Snapshot`], finds the objects that changed (by
//! pointer, then by value: sources share unchanged objects) and updates its indexes:
//! identities and namespaces in use (reference counts, numbered one key at a time as
//! `alloc::allocate` would), the pods claiming each address, the IP cache entries of the
//! addresses that changed hands, and each selector's identities (`select`). The local part
//! (endpoints, rules, address partitions: a node's hundred pods, not the cluster's
//! thousands) is rebuilt by `compile::local` when anything it reads changed.
//!
//! The result is exactly what a fresh compile of the same snapshot with the same previous
//! numbers gives ([`compile`] is this compiler run once; the property tests check a
//! run of updates against it).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Namespace;

use super::{
    alloc::{Free, allocate},
    index::{Dirty, Facts, Index},
    mode::AuditMode,
    model::{
        Allocations, Desired, IdentityKey, Lookups, NodeContext, ObjectRef, PodInfo, RemoteInfo,
        Snapshot, SnapshotChanges, SnapshotUpdate,
    },
    select::Selections,
    selector::namespace_labels,
};
use cns_common::{IDENTITY_FIRST_POD, IDENTITY_HOST, IDENTITY_NAMESPACE_BASE, NS_FIRST, NS_HOST};

/// Compiles `snapshot` for `node`, keeping the numbers of `prev` where they still apply:
/// a [`Compiler`] run once (the agent keeps one from sync to sync instead).
pub fn compile(snapshot: &Snapshot, node: &NodeContext, prev: &Allocations) -> Desired {
    let mut compiler = Compiler::new(node.clone(), prev.clone());
    compiler.update(snapshot.clone());
    compiler.into_desired()
}

/// The compiler and everything it keeps between updates.
#[derive(Debug)]
pub struct Compiler {
    node: NodeContext,
    snapshot: Snapshot,
    desired: Desired,
    /// Nothing compiled yet (or the node changed): the next update starts from scratch,
    /// keeping the numbers of `desired.allocations`.
    fresh: bool,
    index: Index,
    ids_free: Free,
    ns_free: Free,
    selections: Selections,
    /// The last local pass read destination pods' named ports.
    uses_members: bool,
    lookups: Lookups,
    /// Runtime per-namespace audit modes (they win over the namespace annotation).
    overrides: BTreeMap<String, AuditMode>,
    /// The local part must be rebuilt at the next update (the overrides changed).
    local_dirty: bool,
}

/// Which IP cache addresses an update may have changed (`None`: any).
pub type ChangedAddresses = Option<BTreeSet<IpAddr>>;

impl Compiler {
    /// A compiler for `node` that keeps the numbers of `prev` where they still apply.
    pub fn new(node: NodeContext, prev: Allocations) -> Self {
        Self {
            node,
            snapshot: Snapshot::default(),
            desired: Desired {
                allocations: prev,
                ..Desired::default()
            },
            fresh: true,
            index: Index::default(),
            ids_free: Free::default(),
            ns_free: Free::default(),
            selections: Selections::default(),
            uses_members: false,
            lookups: Lookups::default(),
            overrides: BTreeMap::new(),
            local_dirty: false,
        }
    }

    /// Sets the runtime per-namespace audit modes (`cns-agent mode --namespace`), which
    /// win over the namespace annotation; they apply from the next update.
    pub fn set_audit_overrides(&mut self, overrides: &BTreeMap<String, AuditMode>) {
        if *overrides != self.overrides {
            self.overrides = overrides.clone();
            self.local_dirty = true;
        }
    }

    /// The result of the last update.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    pub fn into_desired(self) -> Desired {
        self.desired
    }

    /// The snapshot of the last update.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The lookups of the last update, for the names the agent publishes.
    pub fn lookups(&self) -> &Lookups {
        &self.lookups
    }

    /// Sets this node's addresses and name; a change means a fresh compile at the next update.
    pub fn set_node(&mut self, node: NodeContext) {
        if node.node_name != self.node.node_name || node.node_ips != self.node.node_ips {
            self.node = node;
            self.fresh = true;
        }
    }

    /// Compiles `snapshot`; returns the IP cache addresses that may have changed.
    pub fn update(&mut self, snapshot: Snapshot) -> ChangedAddresses {
        if std::mem::replace(&mut self.fresh, true) {
            self.rebuild(snapshot);
            return None;
        }
        // `fresh` stays set until the update is complete: should it not complete (a panic the
        // agent survives), the next update starts from scratch instead of from half-updated
        // indexes.
        let old = std::mem::replace(&mut self.snapshot, snapshot);
        let delta = Delta::between(&old, &self.snapshot);
        drop(old);
        let changed = self.apply(delta);
        if changed.is_some() {
            self.fresh = false;
        }
        changed
    }

    /// Compiles the snapshot of the last update with `changes` made; returns the IP cache
    /// addresses that may have changed. Costs what the changes touch.
    pub fn apply_changes(&mut self, changes: SnapshotChanges) -> ChangedAddresses {
        if self.fresh {
            let mut snapshot = std::mem::take(&mut self.snapshot);
            changes.apply_to(&mut snapshot);
            return self.update(snapshot);
        }
        self.fresh = true;
        let delta = Delta::patch(&mut self.snapshot, changes);
        let changed = self.apply(delta);
        if changed.is_some() {
            self.fresh = false;
        }
        changed
    }

    /// Either kind of update.
    pub fn update_with(&mut self, update: SnapshotUpdate) -> ChangedAddresses {
        match update {
            SnapshotUpdate::Full(snapshot) => self.update(snapshot),
            SnapshotUpdate::Changes(changes) => self.apply_changes(changes),
        }
    }

    /// Applies what changed (already in `self.snapshot`) on a compiler that compiled before.
    fn apply(&mut self, delta: Delta) -> ChangedAddresses {
        let mut d = Dirty::default();
        self.pods_changed(&delta.pods, &mut d);
        self.namespaces_changed(&delta.namespaces, &mut d);
        let policies_changed = delta.policies;
        drop(delta);
        if !self.renumber(&d) {
            // A numbering ran out: number everything again from scratch (as `allocate`
            // would, retrying the keys left without a number).
            let snapshot = std::mem::take(&mut self.snapshot);
            self.rebuild(snapshot);
            return None;
        }
        let owners_changed = self.readdress(&d.ips);
        if policies_changed {
            let keys: BTreeSet<ObjectRef> = self.snapshot.policies.keys().cloned().collect();
            let a = &mut self.desired.allocations;
            a.policies = allocate(&keys, &a.policies, 1, u32::MAX);
        }
        let selections_changed = self.reselect(&d);
        if d.local
            || self.local_dirty
            || policies_changed
            || selections_changed
            || owners_changed
            || (d.pods && self.uses_members)
        {
            self.local_pass();
        }
        Some(d.ips)
    }

    /// Everything from scratch, keeping the numbers of `desired.allocations`.
    fn rebuild(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
        self.index = Index::default();
        self.selections = Selections::default();
        self.lookups = Lookups::default();
        let mut d = Dirty::default();
        for (r, pod) in &self.snapshot.pods {
            let facts = Facts::of(r, pod, &self.node);
            self.index.pod(r, &facts, true, &mut d);
            self.index.facts.insert(r.clone(), facts);
        }
        for name in self.snapshot.namespaces.keys() {
            self.index.namespace(name, true, &mut d);
        }
        let prev = std::mem::take(&mut self.desired.allocations);
        let namespaces: BTreeSet<String> = self.index.ns_refs.keys().cloned().collect();
        let identities: BTreeSet<IdentityKey> = self.index.identity_refs.keys().cloned().collect();
        let policies: BTreeSet<ObjectRef> = self.snapshot.policies.keys().cloned().collect();
        let ns_prev = prev
            .namespaces
            .iter()
            .map(|(k, v)| (k.clone(), u32::from(*v)))
            .collect();
        let ns_max = u32::from(u16::MAX);
        let ns_ids = allocate(&namespaces, &ns_prev, u32::from(NS_FIRST), ns_max);
        let id_max = IDENTITY_NAMESPACE_BASE - 1;
        let ids = allocate(&identities, &prev.identities, IDENTITY_FIRST_POD, id_max);
        self.ns_free = Free::of(ns_ids.values(), u32::from(NS_FIRST), ns_max);
        self.ids_free = Free::of(ids.values(), IDENTITY_FIRST_POD, id_max);
        self.lookups.identities = ids.iter().map(|(k, id)| (*id, k.clone())).collect();
        self.desired = Desired {
            allocations: Allocations {
                namespaces: ns_ids
                    .into_iter()
                    .filter_map(|(k, v)| u16::try_from(v).ok().map(|v| (k, v)))
                    .collect(),
                identities: ids,
                endpoints: prev.endpoints,
                policies: allocate(&policies, &prev.policies, 1, u32::MAX),
            },
            ..Desired::default()
        };
        for ns in &namespaces {
            let labels = namespace_labels(ns, self.snapshot.namespaces.get(ns).map(|n| &**n));
            self.index.ns_labels.insert(ns.clone(), labels);
        }
        for ip in &self.node.node_ips {
            let host = RemoteInfo {
                identity: IDENTITY_HOST,
                ns_id: NS_HOST,
            };
            self.desired.ipcache.insert(*ip, host);
        }
        self.readdress(&d.ips);
        self.fresh = false;
        self.local_pass();
    }

    fn pods_changed(&mut self, pods: &[Change<ObjectRef, PodInfo>], d: &mut Dirty) {
        for (r, before, after) in pods {
            let (before, after) = (before.as_ref(), after.as_ref());
            d.pods = true;
            if let Some(facts) = before.and_then(|_| self.index.facts.remove(r)) {
                self.index.pod(r, &facts, false, d);
            }
            if let Some(pod) = after {
                let facts = Facts::of(r, pod, &self.node);
                self.index.pod(r, &facts, true, d);
                self.index.facts.insert(r.clone(), facts);
            }
            let on_node = |p: Option<&Arc<PodInfo>>| {
                p.and_then(|p| p.node_name.as_deref()) == Some(self.node.node_name.as_str())
            };
            // A local pod's labels and ports are read by the local pass, active or not.
            if on_node(before) || on_node(after) {
                d.local = true;
            }
        }
    }

    fn namespaces_changed(&mut self, namespaces: &[Change<String, Namespace>], d: &mut Dirty) {
        for (name, before, after) in namespaces {
            // Labels select peers; the audit annotation is the endpoints' mode.
            d.local = true;
            match (before, after) {
                (None, Some(_)) => self.index.namespace(name, true, d),
                (Some(_), None) => self.index.namespace(name, false, d),
                _ => {}
            }
            d.relabelled.insert(name.clone());
        }
    }

    /// Numbers the identities and namespaces that appeared, frees those that went, and
    /// keeps the namespaces' labels. False when a numbering ran out.
    fn renumber(&mut self, d: &Dirty) -> bool {
        let a = &mut self.desired.allocations;
        for ns in &d.ns_removed {
            if let Some(id) = a.namespaces.remove(ns) {
                self.ns_free.release(u32::from(id));
            }
            self.index.ns_labels.remove(ns);
        }
        for key in &d.ids_removed {
            if let Some(id) = a.identities.remove(key) {
                self.ids_free.release(id);
                self.selections.forget(id);
                self.lookups.identities.remove(&id);
            }
        }
        for ns in &d.ns_added {
            match self.ns_free.take().and_then(|n| u16::try_from(n).ok()) {
                Some(id) => _ = a.namespaces.insert(ns.clone(), id),
                None => return false,
            }
        }
        for ns in d.ns_added.iter().chain(&d.relabelled) {
            if a.namespaces.contains_key(ns) {
                let obj = self.snapshot.namespaces.get(ns).map(|n| &**n);
                self.index
                    .ns_labels
                    .insert(ns.clone(), namespace_labels(ns, obj));
            }
        }
        for key in &d.ids_added {
            match self.ids_free.take() {
                Some(id) => {
                    a.identities.insert(key.clone(), id);
                    self.lookups.identities.insert(id, key.clone());
                }
                None => return false,
            }
        }
        true
    }

    /// Brings the IP cache, owners and members up to date for `ips`. True when a local
    /// pod gained or lost its address.
    fn readdress(&mut self, ips: &BTreeSet<IpAddr>) -> bool {
        let mut local_changed = false;
        let a = &self.desired.allocations;
        for ip in ips {
            let owner = if self.node.node_ips.contains(ip) {
                None
            } else {
                self.index.claims.get(ip).and_then(|c| c.first())
            };
            let entry = owner.and_then(|r| {
                let (_, key) = self.index.facts.get(r)?.active.as_ref()?;
                let identity = *a.identities.get(key)?;
                let ns_id = a.namespaces.get(&*r.namespace).copied().unwrap_or_default();
                Some((r.clone(), RemoteInfo { identity, ns_id }))
            });
            let before = self.index.owners.remove(ip);
            self.lookups.pods_by_ip.remove(ip);
            if let Some((r, id)) = &before {
                self.index.members.remove(&(*id, *ip));
                local_changed |= self.index.local.contains(r);
            }
            match entry {
                Some((r, info)) => {
                    local_changed |= self.index.local.contains(&r);
                    self.index.members.insert((info.identity, *ip));
                    self.lookups.pods_by_ip.insert(*ip, r.clone());
                    self.index.owners.insert(*ip, (r, info.identity));
                    self.desired.ipcache.insert(*ip, info);
                }
                None if self.node.node_ips.contains(ip) => {}
                None => _ = self.desired.ipcache.remove(ip),
            }
        }
        local_changed
    }

    /// Brings each selector's identities up to date; true when one changed.
    fn reselect(&mut self, d: &Dirty) -> bool {
        let a = &self.desired.allocations;
        let mut changed = false;
        for key in &d.ids_added {
            if let Some(&id) = a.identities.get(key) {
                changed |= self.selections.add(key, id, &self.index.ns_labels);
            }
        }
        for ns in &d.relabelled {
            let ids = a
                .identities
                .range(
                    IdentityKey {
                        namespace: ns.as_str().into(),
                        labels: Arc::default(),
                    }..,
                )
                .take_while(|(k, _)| *k.namespace == **ns);
            for (key, &id) in ids {
                changed |= self.selections.recheck(key, id, &self.index.ns_labels);
            }
        }
        changed | !d.ids_removed.is_empty()
    }

    fn local_pass(&mut self) {
        let endpoints: BTreeSet<ObjectRef> = self
            .index
            .local
            .iter()
            .filter(|r| self.index.owns(r))
            .cloned()
            .collect();
        let a = &mut self.desired.allocations;
        a.endpoints = allocate(&endpoints, &a.endpoints, 1, u32::MAX);
        let local = super::compile::local(
            &self.snapshot,
            &self.desired.allocations,
            &self.index,
            &mut self.selections,
            &self.overrides,
        );
        self.local_dirty = false;
        self.uses_members = local.uses_members;
        self.desired.endpoints = local.endpoints;
        self.desired.rules = local.rules;
        self.desired.cluster_rules = local.cluster_rules;
        self.desired.cidrs = local.cidrs;
        self.desired.dry_run_causes = local.dry_run_causes;
        self.desired.dry_run_policies = super::compile::dry_run_policies(&self.snapshot);
    }
}

/// A key, its object before and after.
type Change<K, V> = (K, Option<Arc<V>>, Option<Arc<V>>);

/// What changed between two snapshots.
#[derive(Debug, Default)]
struct Delta {
    pods: Vec<Change<ObjectRef, PodInfo>>,
    namespaces: Vec<Change<String, Namespace>>,
    policies: bool,
}

impl Delta {
    /// By walking both snapshots (unchanged objects cost a pointer comparison each).
    fn between(old: &Snapshot, new: &Snapshot) -> Self {
        fn owned<K: Clone, V>((k, a, b): (&K, Option<&Arc<V>>, Option<&Arc<V>>)) -> Change<K, V> {
            (k.clone(), a.cloned(), b.cloned())
        }
        Self {
            pods: changed(&old.pods, &new.pods).map(owned).collect(),
            namespaces: changed(&old.namespaces, &new.namespaces)
                .map(owned)
                .collect(),
            policies: changed(&old.policies, &new.policies).next().is_some()
                || changed(&old.cluster_policies, &new.cluster_policies)
                    .next()
                    .is_some()
                || changed(&old.nodes, &new.nodes).next().is_some(),
        }
    }

    /// By making `changes` in `snapshot` (an object changed back and forth counts as the
    /// changes it went through).
    fn patch(snapshot: &mut Snapshot, changes: SnapshotChanges) -> Self {
        fn put<K: Ord + Clone, V: PartialEq>(
            map: &mut BTreeMap<K, Arc<V>>,
            changes: Vec<(K, Option<Arc<V>>)>,
            out: &mut Vec<Change<K, V>>,
        ) {
            for (k, after) in changes {
                let before = super::model::set(map, k.clone(), after.clone());
                let same = match (&before, &after) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    out.push((k, before, after));
                }
            }
        }
        let mut delta = Self::default();
        put(&mut snapshot.pods, changes.pods, &mut delta.pods);
        put(
            &mut snapshot.namespaces,
            changes.namespaces,
            &mut delta.namespaces,
        );
        let mut policies = Vec::new();
        put(&mut snapshot.policies, changes.policies, &mut policies);
        let mut cluster = Vec::new();
        put(
            &mut snapshot.cluster_policies,
            changes.cluster_policies,
            &mut cluster,
        );
        let mut nodes = Vec::new();
        put(&mut snapshot.nodes, changes.nodes, &mut nodes);
        delta.policies = !policies.is_empty() || !cluster.is_empty() || !nodes.is_empty();
        delta
    }
}

/// The keys whose objects differ between `old` and `new`, with both versions. Unchanged
/// objects are the same `Arc` (compared by pointer); others are compared by value.
fn changed<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, Arc<V>>,
    new: &'a BTreeMap<K, Arc<V>>,
) -> impl Iterator<Item = (&'a K, Option<&'a Arc<V>>, Option<&'a Arc<V>>)> + 'a {
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    std::iter::from_fn(move || {
        loop {
            let next = match (old.peek(), new.peek()) {
                (None, None) => return None,
                (Some(_), None) => old.next().map(|(k, a)| (k, Some(a), None)),
                (None, Some(_)) => new.next().map(|(k, b)| (k, None, Some(b))),
                (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => old.next().map(|(k, a)| (k, Some(a), None)),
                    std::cmp::Ordering::Greater => new.next().map(|(k, b)| (k, None, Some(b))),
                    std::cmp::Ordering::Equal => {
                        let ((k, a), (_, b)) = (old.next()?, new.next()?);
                        if Arc::ptr_eq(a, b) || **a == **b {
                            continue;
                        }
                        Some((k, Some(a), Some(b)))
                    }
                },
            };
            return next;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::fixtures::{namespace, node, pod, policy, snapshot};

    /// Updates `compiler` to `snap` and checks it against a fresh compile.
    fn step(compiler: &mut Compiler, snap: &Snapshot, prev: &Allocations) -> Desired {
        compiler.update(snap.clone());
        let fresh = compile(snap, &node(), prev);
        assert_eq!(compiler.desired(), &fresh);
        fresh
    }

    #[test]
    fn a_remote_pod_taking_a_local_pods_address_ends_its_endpoint() {
        let deny = policy("metadata: {name: deny, namespace: prod}\nspec: {}");
        let mut snap = snapshot(
            vec![namespace("prod", "")],
            vec![pod("prod", "b", "app=db", "10.0.0.5", &[])],
            vec![deny],
        );
        let mut compiler = Compiler::new(node(), Allocations::default());
        let first = step(&mut compiler, &snap, &Allocations::default());
        assert_eq!(first.endpoints.len(), 1);
        // Same labels (same identity), another node, a name that sorts first.
        let mut remote = PodInfo::from(&pod("prod", "a", "app=db", "10.0.0.5", &[]));
        remote.node_name = Some("node-2".into());
        snap.pods
            .insert(ObjectRef::new("prod", "a"), Arc::new(remote));
        let second = step(&mut compiler, &snap, &first.allocations);
        assert!(second.endpoints.is_empty());
    }

    #[test]
    fn unchanged_snapshot_changes_nothing() {
        let snap = snapshot(
            vec![namespace("prod", "")],
            vec![pod("prod", "b", "app=db", "10.0.0.5", &[])],
            vec![],
        );
        let mut compiler = Compiler::new(node(), Allocations::default());
        assert_eq!(compiler.update(snap.clone()), None);
        assert_eq!(compiler.update(snap.clone()), Some(BTreeSet::new()));
    }
}
