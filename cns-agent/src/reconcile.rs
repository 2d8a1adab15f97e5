//! Reconcile = pure diff + small apply. [`diff`] compares the desired map contents with
//! what the maps hold and returns the operations, ordered so that no intermediate state is
//! stricter than needed: allow rules and peers are written before the endpoints that need
//! them, and stale endpoints leave before their rules. [`apply`] feeds them to a
//! [`MapWriter`]: the aya maps in production, [`MapContents`] itself in tests.
//!
//! `CNS_POLICY_EXACT` mirrors the policy trie: an entry only in the trie is never consulted
//! (closed), one only in the hash would allow what the trie does not (open). So a hash entry
//! is written after its trie entry and not at all when that failed, and a trie entry is
//! deleted after its hash entry and not at all when that failed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use cns_common::maps::{
    CidrKey, CidrKey6, DryRunCause, Endpoint, Ip6, PolicyKey, PolicyValue, Remote,
};

use crate::encode::{self, Lpm, MapContents};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    UpsertRemote(u32, Remote),
    UpsertRemote6(Ip6, Remote),
    UpsertCidr(Lpm<CidrKey>, u32),
    UpsertCidr6(Lpm<CidrKey6>, u32),
    UpsertPolicy(Lpm<PolicyKey>, PolicyValue),
    UpsertPolicyExact(PolicyKey, PolicyValue),
    UpsertEndpoint(u32, Endpoint),
    UpsertLocalIp(u32, u32),
    UpsertLocalIp6(Ip6, u32),
    DeleteLocalIp(u32),
    DeleteLocalIp6(Ip6),
    DeleteEndpoint(u32),
    DeletePolicyExact(PolicyKey),
    DeletePolicy(Lpm<PolicyKey>),
    DeleteCidr(Lpm<CidrKey>),
    DeleteCidr6(Lpm<CidrKey6>),
    DeleteRemote(u32),
    DeleteRemote6(Ip6),
    UpsertDryRunCause(DryRunCause, u64),
    DeleteDryRunCause(DryRunCause),
}

impl MapOp {
    /// The map this operation writes, for error messages.
    pub fn map_name(&self) -> &'static str {
        use cns_common::maps::{
            CIDRS, CIDRS6, DRY_RUN_CAUSES, ENDPOINTS, IPCACHE, IPCACHE6, LOCAL_IPS, LOCAL_IPS6,
            POLICY, POLICY_EXACT,
        };
        match self {
            MapOp::UpsertRemote(..) | MapOp::DeleteRemote(..) => IPCACHE,
            MapOp::UpsertRemote6(..) | MapOp::DeleteRemote6(..) => IPCACHE6,
            MapOp::UpsertCidr(..) | MapOp::DeleteCidr(..) => CIDRS,
            MapOp::UpsertCidr6(..) | MapOp::DeleteCidr6(..) => CIDRS6,
            MapOp::UpsertPolicy(..) | MapOp::DeletePolicy(..) => POLICY,
            MapOp::UpsertPolicyExact(..) | MapOp::DeletePolicyExact(..) => POLICY_EXACT,
            MapOp::UpsertEndpoint(..) | MapOp::DeleteEndpoint(..) => ENDPOINTS,
            MapOp::UpsertLocalIp(..) | MapOp::DeleteLocalIp(..) => LOCAL_IPS,
            MapOp::UpsertLocalIp6(..) | MapOp::DeleteLocalIp6(..) => LOCAL_IPS6,
            MapOp::UpsertDryRunCause(..) | MapOp::DeleteDryRunCause(..) => DRY_RUN_CAUSES,
        }
    }
}

fn diff_map<K: Ord + Clone, V: PartialEq + Clone>(
    desired: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    upsert: impl Fn(K, V) -> MapOp,
    delete: impl Fn(K) -> MapOp,
) -> (Vec<MapOp>, Vec<MapOp>) {
    let upserts = desired
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| upsert(k.clone(), v.clone()))
        .collect();
    let deletes = actual
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .map(|k| delete(k.clone()))
        .collect();
    (upserts, deletes)
}

/// The operations that turn `actual` into `desired`, in a safe order.
pub fn diff(desired: &MapContents, actual: &MapContents) -> Vec<MapOp> {
    diff_at(desired, actual, None)
}

/// How to upsert and delete an IP cache entry of one family.
type RemoteOps<K> = (fn(K, Remote) -> MapOp, fn(K) -> MapOp);

/// One IP cache entry of `desired` against `actual`, into `up` or `del`.
fn diff_entry<K: Ord + Copy>(
    desired: &BTreeMap<K, Remote>,
    actual: &BTreeMap<K, Remote>,
    a: K,
    (up, del): (&mut Vec<MapOp>, &mut Vec<MapOp>),
    (upsert, delete): RemoteOps<K>,
) {
    match (desired.get(&a), actual.get(&a)) {
        (Some(d), Some(x)) if d == x => {}
        (Some(d), _) => up.push(upsert(a, *d)),
        (None, Some(_)) => del.push(delete(a)),
        (None, None) => {}
    }
}

/// [`diff`], comparing the IP caches only at `addresses` when given: the caller knows the
/// two agree everywhere else.
pub fn diff_at(
    desired: &MapContents,
    actual: &MapContents,
    addresses: Option<&BTreeSet<IpAddr>>,
) -> Vec<MapOp> {
    let (remote_up, remote_del) = match addresses {
        None => {
            let (mut up, mut del) = diff_map(
                &desired.ipcache,
                &actual.ipcache,
                MapOp::UpsertRemote,
                MapOp::DeleteRemote,
            );
            let (up6, del6) = diff_map(
                &desired.ipcache6,
                &actual.ipcache6,
                MapOp::UpsertRemote6,
                MapOp::DeleteRemote6,
            );
            up.extend(up6);
            del.extend(del6);
            (up, del)
        }
        Some(addresses) => {
            let (mut up, mut del) = (Vec::new(), Vec::new());
            for ip in addresses {
                let out = (&mut up, &mut del);
                match *ip {
                    IpAddr::V4(a) => diff_entry(
                        &desired.ipcache,
                        &actual.ipcache,
                        encode::addr(a),
                        out,
                        (MapOp::UpsertRemote, MapOp::DeleteRemote),
                    ),
                    IpAddr::V6(a) => diff_entry(
                        &desired.ipcache6,
                        &actual.ipcache6,
                        encode::addr6(a),
                        out,
                        (MapOp::UpsertRemote6, MapOp::DeleteRemote6),
                    ),
                }
            }
            (up, del)
        }
    };
    let (mut cidr_up, mut cidr_del) = diff_map(
        &desired.cidrs,
        &actual.cidrs,
        MapOp::UpsertCidr,
        MapOp::DeleteCidr,
    );
    let (cidr6_up, cidr6_del) = diff_map(
        &desired.cidrs6,
        &actual.cidrs6,
        MapOp::UpsertCidr6,
        MapOp::DeleteCidr6,
    );
    cidr_up.extend(cidr6_up);
    cidr_del.extend(cidr6_del);
    let (policy_up, policy_del) = diff_map(
        &desired.policy,
        &actual.policy,
        MapOp::UpsertPolicy,
        MapOp::DeletePolicy,
    );
    let (exact_up, exact_del) = diff_map(
        &desired.policy_exact,
        &actual.policy_exact,
        MapOp::UpsertPolicyExact,
        MapOp::DeletePolicyExact,
    );
    let (ep_up, ep_del) = diff_map(
        &desired.endpoints,
        &actual.endpoints,
        MapOp::UpsertEndpoint,
        MapOp::DeleteEndpoint,
    );
    let (mut local_up, mut local_del) = diff_map(
        &desired.local_ips,
        &actual.local_ips,
        MapOp::UpsertLocalIp,
        MapOp::DeleteLocalIp,
    );
    let (local6_up, local6_del) = diff_map(
        &desired.local_ips6,
        &actual.local_ips6,
        MapOp::UpsertLocalIp6,
        MapOp::DeleteLocalIp6,
    );
    local_up.extend(local6_up);
    local_del.extend(local6_del);
    // Only counters read the causes: their order does not matter to a verdict.
    let (dry_up, dry_del) = diff_map(
        &desired.dry_run_causes,
        &actual.dry_run_causes,
        MapOp::UpsertDryRunCause,
        MapOp::DeleteDryRunCause,
    );
    [
        dry_up, remote_up, cidr_up, policy_up, exact_up, ep_up, local_up, local_del, ep_del,
        exact_del, policy_del, cidr_del, remote_del, dry_del,
    ]
    .concat()
}

/// Where operations go.
pub trait MapWriter {
    type Error: std::error::Error;
    fn apply_op(&mut self, op: &MapOp) -> Result<(), Self::Error>;
}

/// One operation that failed; the others were still applied.
#[derive(Debug, thiserror::Error)]
#[error("failed to apply {op:?} to map {map}")]
pub struct ApplyError<E: std::error::Error + 'static> {
    pub op: MapOp,
    pub map: &'static str,
    #[source]
    pub source: E,
}

/// Applies every operation; returns the ones that failed. A failed upsert leaves the
/// previous entry (or none) in place; callers report it and retry at the next resync. A
/// policy hash entry whose trie upsert failed is not written, a trie entry whose hash delete
/// failed is not deleted (see the module doc): both follow a failure that is returned.
pub fn apply<W: MapWriter>(writer: &mut W, ops: &[MapOp]) -> Vec<ApplyError<W::Error>>
where
    W::Error: 'static,
{
    let mut held: BTreeSet<PolicyKey> = BTreeSet::new();
    let mut failed = Vec::new();
    for op in ops {
        match op {
            MapOp::UpsertPolicyExact(k, _) if held.contains(k) => continue,
            MapOp::DeletePolicy((_, k)) if held.contains(k) => continue,
            _ => {}
        }
        if let Err(source) = writer.apply_op(op) {
            if let MapOp::UpsertPolicy((_, k), _) | MapOp::DeletePolicyExact(k) = op {
                held.insert(*k);
            }
            failed.push(ApplyError {
                op: op.clone(),
                map: op.map_name(),
                source,
            });
        }
    }
    failed
}

/// One line per map with failures: how many operations failed and the first error.
pub fn summarize<E: std::error::Error + 'static>(failed: &[ApplyError<E>]) -> Vec<String> {
    let mut by_map: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    for f in failed {
        by_map
            .entry(f.map)
            .or_insert_with(|| (0, format!("{:?}: {}", f.op, f.source)))
            .0 += 1;
    }
    by_map
        .into_iter()
        .map(|(map, (n, first))| {
            format!("failed to write {n} entries of map {map} (first: {first})")
        })
        .collect()
}

/// The in-memory datapath used by tests (and as the agent's record of what it wrote).
impl MapWriter for MapContents {
    type Error = std::convert::Infallible;

    fn apply_op(&mut self, op: &MapOp) -> Result<(), Self::Error> {
        match op.clone() {
            MapOp::UpsertRemote(k, v) => _ = self.ipcache.insert(k, v),
            MapOp::UpsertCidr(k, v) => _ = self.cidrs.insert(k, v),
            MapOp::UpsertPolicy(k, v) => _ = self.policy.insert(k, v),
            MapOp::UpsertPolicyExact(k, v) => _ = self.policy_exact.insert(k, v),
            MapOp::UpsertEndpoint(k, v) => _ = self.endpoints.insert(k, v),
            MapOp::UpsertLocalIp(k, v) => _ = self.local_ips.insert(k, v),
            MapOp::DeleteLocalIp(k) => _ = self.local_ips.remove(&k),
            MapOp::DeleteEndpoint(k) => _ = self.endpoints.remove(&k),
            MapOp::DeletePolicyExact(k) => _ = self.policy_exact.remove(&k),
            MapOp::DeletePolicy(k) => _ = self.policy.remove(&k),
            MapOp::DeleteCidr(k) => _ = self.cidrs.remove(&k),
            MapOp::DeleteRemote(k) => _ = self.ipcache.remove(&k),
            MapOp::UpsertRemote6(k, v) => _ = self.ipcache6.insert(k, v),
            MapOp::UpsertCidr6(k, v) => _ = self.cidrs6.insert(k, v),
            MapOp::UpsertLocalIp6(k, v) => _ = self.local_ips6.insert(k, v),
            MapOp::DeleteLocalIp6(k) => _ = self.local_ips6.remove(&k),
            MapOp::DeleteCidr6(k) => _ = self.cidrs6.remove(&k),
            MapOp::DeleteRemote6(k) => _ = self.ipcache6.remove(&k),
            MapOp::UpsertDryRunCause(k, v) => _ = self.dry_run_causes.insert(k, v),
            MapOp::DeleteDryRunCause(k) => _ = self.dry_run_causes.remove(&k),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(identity: u32) -> Remote {
        Remote {
            identity,
            ns_id: 16,
            _pad: 0,
        }
    }

    fn contents(remotes: &[(u32, u32)], endpoints: &[(u32, u32)]) -> MapContents {
        let mut c = MapContents::default();
        for &(ip, id) in remotes {
            c.ipcache.insert(ip, remote(id));
        }
        for &(ifindex, ep_id) in endpoints {
            c.endpoints.insert(
                ifindex,
                Endpoint {
                    ep_id,
                    ..Endpoint::default()
                },
            );
        }
        c
    }

    /// A writer whose endpoint map holds one entry, like a full kernel map.
    struct Tiny(MapContents);

    #[derive(Debug, thiserror::Error)]
    #[error("no space")]
    struct Full;

    impl MapWriter for Tiny {
        type Error = Full;
        fn apply_op(&mut self, op: &MapOp) -> Result<(), Full> {
            if matches!(op, MapOp::UpsertEndpoint(..)) && !self.0.endpoints.is_empty() {
                return Err(Full);
            }
            _ = self.0.apply_op(op);
            Ok(())
        }
    }

    #[test]
    fn failures_are_summarised_per_map() {
        let desired = contents(&[(1, 256)], &[(7, 1), (8, 2), (9, 3)]);
        let mut w = Tiny(MapContents::default());
        let ops = diff(&desired, &w.0);
        let failed = apply(&mut w, &ops);
        assert_eq!(failed.len(), 2);
        let lines = summarize(&failed);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("failed to write 2 entries of map CNS_ENDPOINTS"),
            "{lines:?}"
        );
        // Everything else was still written.
        assert_eq!(w.0.ipcache.len(), 1);
        assert_eq!(w.0.endpoints.len(), 1);
    }

    /// A writer whose policy trie (or hash) refuses every write.
    struct Refuses(MapContents, &'static str);

    impl MapWriter for Refuses {
        type Error = Full;
        fn apply_op(&mut self, op: &MapOp) -> Result<(), Full> {
            if op.map_name() == self.1 {
                return Err(Full);
            }
            _ = self.0.apply_op(op);
            Ok(())
        }
    }

    #[test]
    fn the_policy_hash_never_holds_what_the_trie_does_not() {
        use cns_common::maps::{POLICY, POLICY_EXACT};
        let key = PolicyKey {
            port: 80u16.to_be_bytes(),
            ..PolicyKey::default()
        };
        let mut desired = MapContents::default();
        desired.policy.insert((96, key), PolicyValue::default());
        desired.policy_exact.insert(key, PolicyValue::default());
        // The trie upsert fails: the hash entry is not written either.
        let mut w = Refuses(MapContents::default(), POLICY);
        let ops = diff(&desired, &w.0);
        let failed = apply(&mut w, &ops);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(w.0.policy_exact.is_empty(), "open: {:?}", w.0.policy_exact);
        // The hash delete fails: the trie entry stays.
        let mut w = Refuses(desired.clone(), POLICY_EXACT);
        let ops = diff(&MapContents::default(), &w.0);
        let failed = apply(&mut w, &ops);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(w.0.policy.len(), 1, "the hash entry would be alone");
    }

    #[test]
    fn no_change_no_ops() {
        let a = contents(&[(1, 256)], &[(7, 1)]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn applying_the_diff_reaches_desired() {
        let actual = contents(&[(1, 256), (2, 257)], &[(7, 1), (8, 2)]);
        let desired = contents(&[(1, 300), (3, 258)], &[(8, 3)]);
        let ops = diff(&desired, &actual);
        let mut maps = actual.clone();
        assert!(apply(&mut maps, &ops).is_empty());
        assert_eq!(maps, desired);
        assert!(diff(&desired, &maps).is_empty());
    }

    #[test]
    fn upserts_come_before_deletes_and_rules_before_endpoints() {
        let actual = contents(&[(2, 257)], &[(7, 1)]);
        let desired = contents(&[(3, 258)], &[(8, 2)]);
        let ops = diff(&desired, &actual);
        assert_eq!(
            ops,
            vec![
                MapOp::UpsertRemote(3, remote(258)),
                MapOp::UpsertEndpoint(
                    8,
                    Endpoint {
                        ep_id: 2,
                        ..Endpoint::default()
                    }
                ),
                MapOp::DeleteEndpoint(7),
                MapOp::DeleteRemote(2),
            ]
        );
    }
}
