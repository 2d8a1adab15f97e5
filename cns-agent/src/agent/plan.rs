//! The planner: what to write to every map the agent writes (the derived ones included),
//! from the compiler's output, the pods' interfaces and what the maps hold. Pure: the agent,
//! the kernel tests and the bench all plan through it, and only the writer touches aya.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::Serialize;

use super::state::Scope;
use crate::{
    encode::{self, MapContents},
    policy::model::{Desired, ObjectRef},
    reconcile::{self, MapOp},
};

/// The work a sync did, as `sync`, `status` and the metrics report it: a single change
/// should cost what it touches, never the whole state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Work {
    /// The source was read whole (a start, a lost read, once a minute).
    pub read_whole: bool,
    /// Map entries encoded: every entry after a start, a failure or a compile that changed
    /// everything; otherwise the changed IP cache addresses and this node's local part.
    pub encoded_entries: usize,
    /// IP cache addresses compared with what the maps hold.
    pub diffed_addresses: usize,
    /// Operations written to the maps.
    pub map_ops: usize,
}

/// The operations of one sync, and what it cost to find them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    pub work: Work,
}

/// The encoded desired state, kept from plan to plan (updated where the compile changed).
#[derive(Clone, Debug, Default)]
pub struct Planner {
    intended: MapContents,
}

impl Planner {
    /// What the maps should hold, as of the last plan.
    pub fn intended(&self) -> &MapContents {
        &self.intended
    }

    /// The operations that bring `written` to `desired`, with each local pod's veth from
    /// `interfaces`. `changed`: the IP cache addresses the compile may have changed (`None`:
    /// any); `scope` says which stages must not trust it.
    pub fn plan(
        &mut self,
        desired: &Desired,
        interfaces: &BTreeMap<ObjectRef, u32>,
        written: &MapContents,
        changed: Option<&BTreeSet<IpAddr>>,
        scope: Scope,
    ) -> Plan {
        let encode_at = changed.filter(|_| !scope.encode_whole);
        let encoded_entries = encode::update(&mut self.intended, desired, interfaces, encode_at);
        // Whole encodes are diffed whole: the maps may lag anywhere they changed.
        let diff_at = encode_at.filter(|_| !scope.diff_whole);
        let diffed_addresses = diff_at.map_or_else(
            || self.intended.ipcache_len().max(written.ipcache_len()),
            BTreeSet::len,
        );
        let ops = reconcile::diff_at(&self.intended, written, diff_at);
        Plan {
            work: Work {
                read_whole: scope.read_whole,
                encoded_entries,
                diffed_addresses,
                map_ops: ops.len(),
            },
            ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{addr::PodAddrs, model::RemoteInfo};
    use std::net::Ipv4Addr;

    const CHANGES: Scope = Scope::CHANGES;

    fn cluster(pods: u8) -> Desired {
        let mut d = Desired::default();
        for i in 0..pods {
            d.ipcache.insert(
                IpAddr::from([10, 0, 0, i]),
                RemoteInfo {
                    identity: 256 + u32::from(i),
                    ns_id: 16,
                },
            );
        }
        d
    }

    #[test]
    fn a_change_costs_what_it_touches_and_reaches_what_a_whole_plan_reaches() {
        let whole = Scope::WHOLE;
        let mut planner = Planner::default();
        let mut written = MapContents::default();
        let d = cluster(200);
        let plan = planner.plan(&d, &BTreeMap::new(), &written, None, whole);
        assert_eq!(plan.work.encoded_entries, 200);
        assert_eq!(plan.work.diffed_addresses, 200);
        assert_eq!(plan.ops.len(), 200);
        reconcile::apply(&mut written, &plan.ops);

        // One pod relabelled (new identity), one gone.
        let mut d2 = d.clone();
        d2.ipcache
            .get_mut(&IpAddr::from([10, 0, 0, 7]))
            .unwrap()
            .identity = 999;
        d2.ipcache.remove(&IpAddr::from([10, 0, 0, 9]));
        let changed: BTreeSet<IpAddr> =
            [IpAddr::from([10, 0, 0, 7]), IpAddr::from([10, 0, 0, 9])].into();
        let plan = planner.plan(&d2, &BTreeMap::new(), &written, Some(&changed), CHANGES);
        assert_eq!(plan.work.encoded_entries, 2);
        assert_eq!(plan.work.diffed_addresses, 2);
        assert_eq!(plan.ops.len(), 2);
        reconcile::apply(&mut written, &plan.ops);
        assert_eq!(written, encode::encode(&d2, &BTreeMap::new()));

        // The same change planned whole finds nothing more to do.
        let plan = planner.plan(&d2, &BTreeMap::new(), &written, Some(&changed), whole);
        assert!(plan.ops.is_empty(), "{:?}", plan.ops);
        assert_eq!(plan.work.encoded_entries, 199);
    }

    #[test]
    fn the_derived_maps_are_planned_and_repaired_like_any_other() {
        let mut planner = Planner::default();
        let mut written = MapContents::default();
        let mut d = cluster(1);
        let pod = ObjectRef::new("ns", "p");
        d.endpoints.insert(
            pod.clone(),
            crate::policy::model::LocalEndpoint {
                ep_id: 1,
                addrs: PodAddrs {
                    v4: Some(Ipv4Addr::new(10, 0, 0, 0)),
                    v6: None,
                },
                identity: 256,
                ns_id: 16,
                ingress_isolated: false,
                egress_isolated: false,
                ingress_tiered: false,
                egress_tiered: false,
                dry_run: false,
                ingress_would_isolate: false,
                egress_would_isolate: false,
                audit_override: None,
            },
        );
        let ifindexes = BTreeMap::from([(pod, 7)]);
        let whole = Scope::WHOLE;
        let plan = planner.plan(&d, &ifindexes, &written, None, whole);
        assert!(plan.ops.contains(&MapOp::UpsertLocalIp(
            encode::addr(Ipv4Addr::new(10, 0, 0, 0)),
            7
        )));
        reconcile::apply(&mut written, &plan.ops);
        // Something removed the derived entry behind the agent's back: the next plan (the
        // maps read back) puts it back.
        written.local_ips.clear();
        let plan = planner.plan(&d, &ifindexes, &written, Some(&BTreeSet::new()), CHANGES);
        assert_eq!(
            plan.ops,
            [MapOp::UpsertLocalIp(
                encode::addr(Ipv4Addr::new(10, 0, 0, 0)),
                7
            )]
        );
    }
}
