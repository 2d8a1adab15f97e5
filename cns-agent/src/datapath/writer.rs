//! The aya side of the map writer: what the maps hold, and one map operation at a time (the
//! plan decides the order and pairs the policy trie with its hash: see `reconcile`).

use std::collections::BTreeMap;

use aya::maps::{MapError, lpm_trie::Key};

use super::Datapath;
use crate::{
    encode::MapContents,
    reconcile::{MapOp, MapWriter},
};

impl Datapath {
    /// Local pod address -> ifindex, as the XDP program sees it.
    pub fn local_ips(&self) -> Result<BTreeMap<u32, u32>, MapError> {
        self.local_ips.iter().collect()
    }

    /// What the maps the agent writes hold now (all of them: [`MapContents`]).
    pub fn read(&self) -> Result<MapContents, MapError> {
        let mut c = MapContents::default();
        for kv in self.endpoints.iter() {
            let (k, v) = kv?;
            c.endpoints.insert(k, v);
        }
        for kv in self.ipcache.iter() {
            let (k, v) = kv?;
            c.ipcache.insert(k, v);
        }
        for kv in self.cidrs.iter() {
            let (k, v) = kv?;
            c.cidrs.insert((k.prefix_len(), k.data()), v);
        }
        for kv in self.policy.iter() {
            let (k, v) = kv?;
            c.policy.insert((k.prefix_len(), k.data()), v);
        }
        for kv in self.policy_exact.iter() {
            let (k, v) = kv?;
            c.policy_exact.insert(k, v);
        }
        for kv in self.local_ips.iter() {
            let (k, v) = kv?;
            c.local_ips.insert(k, v);
        }
        for kv in self.ipcache6.iter() {
            let (k, v) = kv?;
            c.ipcache6.insert(k, v);
        }
        for kv in self.cidrs6.iter() {
            let (k, v) = kv?;
            c.cidrs6.insert((k.prefix_len(), k.data()), v);
        }
        for kv in self.local_ips6.iter() {
            let (k, v) = kv?;
            c.local_ips6.insert(k, v);
        }
        for kv in self.dry_run.causes.iter() {
            let (k, v) = kv?;
            c.dry_run_causes.insert(k, v);
        }
        Ok(c)
    }
}

impl MapWriter for Datapath {
    type Error = MapError;

    /// One operation, one map: the order and the pairing of the policy trie with its hash
    /// are the plan's (`reconcile`).
    fn apply_op(&mut self, op: &MapOp) -> Result<(), MapError> {
        match op {
            MapOp::UpsertRemote(k, v) => self.ipcache.insert(k, v, 0),
            MapOp::UpsertCidr((len, k), v) => self.cidrs.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertPolicy((len, k), v) => self.policy.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertPolicyExact(k, v) => self.policy_exact.insert(k, v, 0),
            MapOp::UpsertEndpoint(k, v) => self.endpoints.insert(k, v, 0),
            MapOp::UpsertLocalIp(k, v) => self.local_ips.insert(k, v, 0),
            MapOp::DeleteLocalIp(k) => absent_is_gone(self.local_ips.remove(k)),
            MapOp::DeleteEndpoint(k) => absent_is_gone(self.endpoints.remove(k)),
            MapOp::DeletePolicyExact(k) => absent_is_gone(self.policy_exact.remove(k)),
            MapOp::DeletePolicy((len, k)) => {
                absent_is_gone(self.policy.remove(&Key::new(*len, *k)))
            }
            MapOp::DeleteCidr((len, k)) => absent_is_gone(self.cidrs.remove(&Key::new(*len, *k))),
            MapOp::DeleteRemote(k) => absent_is_gone(self.ipcache.remove(k)),
            MapOp::UpsertRemote6(k, v) => self.ipcache6.insert(k, v, 0),
            MapOp::UpsertCidr6((len, k), v) => self.cidrs6.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertLocalIp6(k, v) => self.local_ips6.insert(k, v, 0),
            MapOp::DeleteLocalIp6(k) => absent_is_gone(self.local_ips6.remove(k)),
            MapOp::DeleteCidr6((len, k)) => absent_is_gone(self.cidrs6.remove(&Key::new(*len, *k))),
            MapOp::DeleteRemote6(k) => absent_is_gone(self.ipcache6.remove(k)),
            MapOp::UpsertDryRunCause(k, v) => self.dry_run.causes.insert(k, v, 0),
            MapOp::DeleteDryRunCause(k) => absent_is_gone(self.dry_run.causes.remove(k)),
        }
    }
}

/// A delete of what is not there has reached its goal.
fn absent_is_gone(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}
