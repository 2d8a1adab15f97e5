//! The compiler's cluster-wide indexes (who claims each address, identities and namespaces
//! in use), kept up to date one object at a time by the incremental compiler.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    addr::PodAddrs,
    model::{IdentityKey, Labels, NodeContext, ObjectRef, PodInfo},
    view::{pod_addrs, pod_is_active},
};

/// What one pod contributes to the cluster-wide indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Facts {
    /// Addresses and identity of an active pod (`None` for the others).
    pub active: Option<(PodAddrs, IdentityKey)>,
    /// Active and scheduled on this node.
    pub local: bool,
}

impl Facts {
    pub(super) fn of(r: &ObjectRef, pod: &PodInfo, node: &NodeContext) -> Self {
        let active = pod_is_active(pod).then(|| pod_addrs(pod)).map(|ip| {
            let key = IdentityKey {
                namespace: r.namespace.clone(),
                // The pod's own labels, shared: not a copy per index.
                labels: pod.labels.clone(),
            };
            (ip, key)
        });
        let on_node = pod.node_name.as_deref() == Some(node.node_name.as_str());
        Self {
            local: active.is_some() && on_node,
            active,
        }
    }
}

/// The cluster-wide indexes, kept up to date one object at a time.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub facts: HashMap<ObjectRef, Facts>,
    /// Active pods by address, by namespace/name (of several, the first owns it). Nearly
    /// always one: a `Vec` of one costs its 48 bytes, a `BTreeSet`'s first node ~540.
    pub(super) claims: BTreeMap<IpAddr, Vec<ObjectRef>>,
    /// The owner of each pod address (not a node address) and its identity.
    pub owners: BTreeMap<IpAddr, (ObjectRef, u32)>,
    /// The addresses each identity owns, as (identity, address): see [`Self::members`].
    /// One set rather than a map per identity (most identities own one address).
    pub(super) members: BTreeSet<(u32, IpAddr)>,
    /// Active pods per identity key; namespace objects and pods per namespace.
    pub(super) identity_refs: HashMap<IdentityKey, usize>,
    pub(super) ns_refs: HashMap<String, usize>,
    /// The labels of every numbered namespace (with the automatic name label).
    pub ns_labels: BTreeMap<String, Labels>,
    /// Active pods of this node.
    pub local: BTreeSet<ObjectRef>,
}

/// What changed in one update, as far as the indexes are concerned.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub(super) ips: BTreeSet<IpAddr>,
    pub(super) ids_added: BTreeSet<IdentityKey>,
    pub(super) ids_removed: BTreeSet<IdentityKey>,
    pub(super) ns_added: BTreeSet<String>,
    pub(super) ns_removed: BTreeSet<String>,
    /// Namespaces whose labels changed.
    pub(super) relabelled: BTreeSet<String>,
    /// A local pod, a namespace object or a policy changed.
    pub(super) local: bool,
    /// Some pod changed (named egress ports read every destination pod).
    pub(super) pods: bool,
}

/// Counts `key` in or out; records a key that appears or disappears (net, over the update).
fn count<K: std::hash::Hash + Ord + Clone>(
    refs: &mut HashMap<K, usize>,
    key: &K,
    up: bool,
    added: &mut BTreeSet<K>,
    removed: &mut BTreeSet<K>,
) {
    if up {
        let n = refs.entry(key.clone()).or_default();
        *n += 1;
        if *n == 1 && !removed.remove(key) {
            added.insert(key.clone());
        }
    } else if let Some(n) = refs.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            refs.remove(key);
            if !added.remove(key) {
                removed.insert(key.clone());
            }
        }
    }
}

impl Index {
    pub(super) fn pod(&mut self, r: &ObjectRef, facts: &Facts, up: bool, d: &mut Dirty) {
        count(
            &mut self.ns_refs,
            &r.namespace.to_string(),
            up,
            &mut d.ns_added,
            &mut d.ns_removed,
        );
        if let Some((addrs, key)) = &facts.active {
            count(
                &mut self.identity_refs,
                key,
                up,
                &mut d.ids_added,
                &mut d.ids_removed,
            );
            for ip in addrs.iter() {
                let claims = self.claims.entry(ip).or_default();
                match (claims.binary_search(r), up) {
                    (Err(at), true) => {
                        claims.reserve_exact(1);
                        claims.insert(at, r.clone());
                    }
                    (Ok(at), false) => _ = claims.remove(at),
                    _ => {}
                }
                if claims.is_empty() {
                    self.claims.remove(&ip);
                }
                d.ips.insert(ip);
            }
        }
        if facts.local {
            if up {
                self.local.insert(r.clone());
            } else {
                self.local.remove(r);
            }
            d.local = true;
        }
    }

    pub(super) fn namespace(&mut self, name: &String, up: bool, d: &mut Dirty) {
        count(
            &mut self.ns_refs,
            name,
            up,
            &mut d.ns_added,
            &mut d.ns_removed,
        );
    }

    /// The addresses identity `id` owns and their owners, by address (IPv4 first).
    pub fn members(&self, id: u32) -> impl Iterator<Item = (IpAddr, &ObjectRef)> + '_ {
        let (first, last) = (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        );
        self.members
            .range((id, first)..=(id, last))
            .filter_map(|(_, ip)| Some((*ip, &self.owners.get(ip)?.0)))
    }

    /// Whether pod `r` owns one of its addresses.
    pub fn owns(&self, r: &ObjectRef) -> bool {
        let addrs = self
            .facts
            .get(r)
            .and_then(|f| f.active.as_ref())
            .map(|a| a.0)
            .unwrap_or_default();
        addrs
            .iter()
            .any(|ip| self.owners.get(&ip).is_some_and(|(owner, _)| owner == r))
    }
}
