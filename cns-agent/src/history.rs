//! `cns-agent policy history`: the last enforcement changes on this node (policies added,
//! changed or removed, endpoints affected, mode changes), kept in memory and logged as
//! events, so "what changed before traffic broke?" has an answer on the node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cns_common::maps::{CidrKey, CidrKey6, PolicyKey};
use serde::Serialize;

use crate::{
    policy::model::{ClusterNetworkPolicy, ObjectRef},
    reconcile::MapOp,
};

/// How many changes are kept.
pub const CAPACITY: usize = 256;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Change {
    /// RFC 3339, UTC.
    pub time: String,
    /// The policy revision after the change.
    pub revision: u32,
    /// What caused it: "sync", "cli", "source".
    pub by: String,
    pub policies_added: Vec<String>,
    pub policies_changed: Vec<String>,
    pub policies_removed: Vec<String>,
    /// Local pods whose rules, isolation or mode changed in the maps.
    pub endpoints_affected: Vec<String>,
    /// "global: audit -> blocking", "namespace alpha: blocking -> audit".
    pub mode_change: Option<String>,
    /// Map entries written or removed.
    pub map_changes: usize,
}

#[derive(Debug, Default)]
pub struct History {
    changes: VecDeque<Change>,
}

impl History {
    pub fn record(&mut self, change: Change) {
        tracing::info!(
            revision = change.revision,
            by = %change.by,
            added = ?change.policies_added,
            changed = ?change.policies_changed,
            removed = ?change.policies_removed,
            endpoints = ?change.endpoints_affected,
            mode = ?change.mode_change,
            map_changes = change.map_changes,
            "enforcement changed"
        );
        if self.changes.len() == CAPACITY {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// The last `n` changes, newest first.
    pub fn last(&self, n: usize) -> Vec<Change> {
        self.changes.iter().rev().take(n).cloned().collect()
    }
}

/// A snapshot's policies.
type Policies =
    BTreeMap<ObjectRef, std::sync::Arc<k8s_openapi::api::networking::v1::NetworkPolicy>>;
/// A snapshot's ClusterNetworkPolicies.
type ClusterPolicies = BTreeMap<std::sync::Arc<str>, std::sync::Arc<ClusterNetworkPolicy>>;

/// Added, changed and removed, by name.
pub type PolicyChanges = (Vec<String>, Vec<String>, Vec<String>);

/// Policies of both kinds added, changed (spec or labels) and removed between two
/// snapshots; ClusterNetworkPolicies as `ClusterNetworkPolicy/NAME`.
pub fn policy_changes(
    (old, old_cluster): (&Policies, &ClusterPolicies),
    (new, new_cluster): (&Policies, &ClusterPolicies),
) -> PolicyChanges {
    let mut out = changes(
        old,
        new,
        |r| r.to_string(),
        |a, b| a.spec != b.spec || a.metadata.labels != b.metadata.labels,
    );
    let cluster = changes(
        old_cluster,
        new_cluster,
        |n| format!("ClusterNetworkPolicy/{n}"),
        |a, b| a.spec != b.spec || a.metadata.labels != b.metadata.labels,
    );
    out.0.extend(cluster.0);
    out.1.extend(cluster.1);
    out.2.extend(cluster.2);
    out
}

fn changes<K: Ord, V>(
    old: &BTreeMap<K, std::sync::Arc<V>>,
    new: &BTreeMap<K, std::sync::Arc<V>>,
    name: impl Fn(&K) -> String,
    differ: impl Fn(&V, &V) -> bool,
) -> PolicyChanges {
    let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in new {
        match old.get(k) {
            None => added.push(name(k)),
            Some(o) if differ(o, v) => changed.push(name(k)),
            Some(_) => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            removed.push(name(k));
        }
    }
    (added, changed, removed)
}

/// The local pods whose entries `ops` touch; `pods_by_ep_id` names endpoint ids (old and new)
/// and `pods_by_ifindex` names endpoint-map keys.
pub fn endpoints_affected(
    ops: &[MapOp],
    pods_by_ep_id: &BTreeMap<u32, ObjectRef>,
    pods_by_ifindex: &BTreeMap<u32, ObjectRef>,
) -> Vec<String> {
    let by_id = |id: [u8; 4]| pods_by_ep_id.get(&u32::from_be_bytes(id));
    let mut out = BTreeSet::new();
    for op in ops {
        let pod = match op {
            MapOp::UpsertPolicy((_, PolicyKey { ep_id, .. }), _)
            | MapOp::DeletePolicy((_, PolicyKey { ep_id, .. }))
            | MapOp::UpsertCidr((_, CidrKey { ep_id, .. }), _)
            | MapOp::DeleteCidr((_, CidrKey { ep_id, .. }))
            | MapOp::UpsertCidr6((_, CidrKey6 { ep_id, .. }), _)
            | MapOp::DeleteCidr6((_, CidrKey6 { ep_id, .. })) => by_id(*ep_id),
            MapOp::UpsertEndpoint(_, ep) => pods_by_ep_id.get(&ep.ep_id),
            MapOp::DeleteEndpoint(ifindex) => pods_by_ifindex.get(ifindex),
            // Derived from the entries above: the same endpoints.
            MapOp::UpsertRemote(..)
            | MapOp::DeleteRemote(..)
            | MapOp::UpsertPolicyExact(..)
            | MapOp::DeletePolicyExact(..)
            | MapOp::UpsertLocalIp(..)
            | MapOp::DeleteLocalIp(..)
            | MapOp::UpsertRemote6(..)
            | MapOp::DeleteRemote6(..)
            | MapOp::UpsertLocalIp6(..)
            | MapOp::DeleteLocalIp6(..)
            | MapOp::UpsertDryRunCause(..)
            | MapOp::DeleteDryRunCause(..) => None,
        };
        if let Some(p) = pod {
            out.insert(p.to_string());
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cns_common::maps::Endpoint;

    #[test]
    fn keeps_the_newest_and_names_affected_endpoints() {
        let mut h = History::default();
        for revision in 0..(CAPACITY as u32 + 5) {
            h.record(Change {
                revision,
                ..Change::default()
            });
        }
        let last = h.last(2);
        assert_eq!(
            last.iter().map(|c| c.revision).collect::<Vec<_>>(),
            vec![260, 259]
        );
        assert_eq!(h.last(1000).len(), CAPACITY);

        let a = ObjectRef::new("ns", "a");
        let ids = BTreeMap::from([(7, a.clone())]);
        let ifs = BTreeMap::from([(3, ObjectRef::new("ns", "gone"))]);
        let ops = [
            MapOp::DeletePolicy((
                96,
                PolicyKey {
                    ep_id: 7u32.to_be_bytes(),
                    ..PolicyKey::default()
                },
            )),
            MapOp::DeleteEndpoint(3),
            MapOp::UpsertEndpoint(
                4,
                Endpoint {
                    ep_id: 7,
                    ..Endpoint::default()
                },
            ),
        ];
        assert_eq!(
            endpoints_affected(&ops, &ids, &ifs),
            vec!["ns/a", "ns/gone"]
        );
    }
}
