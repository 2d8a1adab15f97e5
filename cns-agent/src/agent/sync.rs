//! One sync: read the source, compile, plan, write the maps, attach to new veths, publish.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use cns_common::maps::{self as m, Config};
use serde::Serialize;

use super::{Agent, AgentError, Work, now_rfc3339};
use crate::{
    error_chain, history,
    names::Names,
    netdev,
    policy::{
        mode,
        model::{NodeContext, ObjectRef},
    },
    reconcile,
};

/// The outcome of a sync, as `cns-agent sync` prints it.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub revision: u32,
    pub changes: usize,
    pub endpoints: usize,
    pub endpoints_without_veth: Vec<String>,
    pub errors: Vec<String>,
    /// What this sync encoded and compared (a single change costs what it touches).
    pub work: Work,
    /// Where its time went.
    pub timings: SyncTimings,
}

/// The phases of one sync, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SyncTimings {
    /// The source's read (stat, read, parse, validate what changed).
    pub read_ms: f64,
    /// The node's addresses and the compiler's update.
    pub compile_ms: f64,
    /// Finding the veths, encoding and diffing (the plan).
    pub plan_ms: f64,
    /// Writing the plan to the maps and recording what was written.
    pub write_ms: f64,
    /// After the maps: history, attaching, XDP, publishing names, metrics. The phases add
    /// up to the whole sync.
    pub finish_ms: f64,
}

/// Milliseconds since `clock`, which moves on to now: consecutive laps cover the sync.
fn lap(clock: &mut Instant) -> f64 {
    let now = Instant::now();
    let ms = now.saturating_duration_since(*clock).as_secs_f64() * 1000.0;
    *clock = now;
    ms
}

impl Agent {
    pub(super) fn write_config(&mut self) -> Result<(), AgentError> {
        self.revision = self.revision.wrapping_add(1);
        let config = Config {
            audit_mode: u32::from(self.modes.global().is_audit()),
            revision: self.revision,
            event_rate: self.cfg.event_rate,
            event_burst: self.cfg.event_burst,
            flags: if self.cfg.policy_verdict_events {
                m::CONFIG_POLICY_VERDICT_EVENTS
            } else {
                0
            },
            hz: 0, // the datapath's clock says
        };
        self.datapath
            .set_config(&config)
            .map_err(|source| AgentError::WriteMap {
                map: m::CONFIG,
                source,
            })?;
        self.config_pending = false;
        Ok(())
    }

    /// Re-reads the source, compiles, attaches to new veths, and writes the difference.
    pub fn sync(&mut self) -> Result<SyncReport, AgentError> {
        let started = Instant::now();
        let scope = self.state.begin(started);
        let mut timings = SyncTimings::default();
        let state = self.source.read(scope.read_whole)?;
        let mut clock = started;
        timings.read_ms = lap(&mut clock);
        self.logged_source_errors
            .log(&state.errors, "invalid input");
        self.errors = state.errors;
        let old_policies = self.compiler.snapshot().policies.clone();
        let old_cluster = self.compiler.snapshot().cluster_policies.clone();
        let old_endpoints: BTreeMap<u32, ObjectRef> = self
            .compiler
            .desired()
            .allocations
            .endpoints
            .iter()
            .map(|(pod, id)| (*id, pod.clone()))
            .collect();
        let old_ifindexes: BTreeMap<u32, ObjectRef> = self
            .veths
            .iter()
            .map(|(pod, v)| (v.ifindex, pod.clone()))
            .collect();
        self.set_source_mode(state.audit_mode);
        self.node = NodeContext {
            node_name: self.cfg.node_name.clone(),
            node_ips: netdev::node_ips()?,
        };
        self.compiler.set_node(self.node.clone());
        self.compiler.set_audit_overrides(&self.modes.namespaces);
        let changed = self.compiler.update_with(state.update);
        self.state.compiled();
        timings.compile_ms = lap(&mut clock);
        // Problems of objects the snapshot holds and enforces anyway: unreadable audit-mode
        // annotations (blocking), ClusterNetworkPolicy features cns does not enforce.
        let snapshot = self.compiler.snapshot();
        self.snapshot_errors = mode::annotation_errors(&snapshot.namespaces);
        self.snapshot_errors.extend(
            mode::policy_annotation_errors(snapshot)
                .iter()
                .map(ToString::to_string),
        );
        self.snapshot_errors
            .extend(snapshot.cluster_policies.iter().filter_map(|(name, cnp)| {
                crate::policy::cluster::unsupported(cnp)
                    .map(|why| format!("ClusterNetworkPolicy {name}: unsupported: {why}"))
            }));

        // Maps first, programs after: a veth gets its programs only once its endpoint and
        // rules are in place, and pinned programs of an earlier agent are taken over only
        // once the maps hold the current state.
        let veths = self.find_veths()?;
        let ifindexes = veths
            .iter()
            .map(|(pod, veth)| (pod.clone(), veth.ifindex))
            .collect();
        let plan = self.planner.plan(
            self.compiler.desired(),
            &ifindexes,
            &self.written,
            changed.as_ref(),
            scope,
        );
        self.state.encoded();
        timings.plan_ms = lap(&mut clock);
        let ops = plan.ops;
        let failed = reconcile::apply(&mut self.datapath, &ops);
        // What the programs keep stamped with the revision (conntrack verdicts, deny cache
        // entries, each CPU's copies of the endpoints) holds only until the maps change: bump
        // it now, before anything below can fail, and at the next sync if this write failed.
        self.config_pending |= !ops.is_empty();
        if self.config_pending {
            self.write_config()?;
        }
        let mut map_errors = self.planner.intended().over_capacity(self.datapath.sizes());
        map_errors.extend(reconcile::summarize(&failed));
        self.logged_map_errors.log(&map_errors, "map update failed");
        self.map_errors = map_errors;
        // Record what was written; after a failure, what the maps really hold (the failed
        // operations are retried at the next sync).
        if failed.is_empty() {
            reconcile::apply(&mut self.written, &ops);
        } else {
            self.written = self.datapath.read().map_err(|source| AgentError::ReadMap {
                map: "policy maps",
                source,
            })?;
        }
        self.state.written(failed.is_empty());
        self.last_work = Some(plan.work);
        let now = self.compiler.snapshot();
        let (added, changed, removed) = history::policy_changes(
            (&old_policies, &old_cluster),
            (&now.policies, &now.cluster_policies),
        );
        timings.write_ms = lap(&mut clock);
        if !ops.is_empty() {
            tracing::info!(
                changes = ops.len(),
                revision = self.revision,
                encoded = plan.work.encoded_entries,
                diffed = plan.work.diffed_addresses,
                "maps updated"
            );
        }
        if !ops.is_empty() || !added.is_empty() || !changed.is_empty() || !removed.is_empty() {
            let mut ids = old_endpoints;
            ids.extend(
                self.compiler
                    .desired()
                    .allocations
                    .endpoints
                    .iter()
                    .map(|(pod, id)| (*id, pod.clone())),
            );
            self.history.record(history::Change {
                time: now_rfc3339(),
                revision: self.revision,
                by: "sync".into(),
                policies_added: added,
                policies_changed: changed,
                policies_removed: removed,
                endpoints_affected: history::endpoints_affected(&ops, &ids, &old_ifindexes),
                mode_change: None,
                map_changes: ops.len(),
            });
        }
        self.attach_endpoints(veths);
        // After the maps and the endpoints: XDP decides with the same maps.
        match crate::uplink::resolve(&self.cfg.xdp_interfaces) {
            Ok(uplinks) => {
                for e in self.datapath.sync_xdp(&uplinks) {
                    tracing::warn!(error = %error_chain(&e), "XDP attach failed; will retry");
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "cannot find the XDP interfaces"),
        }
        self.publish_names();
        self.track_dry_run();
        self.last_sync = Some(Instant::now());
        let errors = self.errors();
        self.record_sync_metrics(started, !errors.is_empty(), plan.work);
        let endpoints_without_veth = self
            .compiler
            .desired()
            .endpoints
            .keys()
            .filter(|pod| !self.veths.contains_key(pod))
            .map(ToString::to_string)
            .collect();
        timings.finish_ms = lap(&mut clock);
        Ok(SyncReport {
            revision: self.revision,
            changes: ops.len(),
            endpoints: self.veths.len(),
            endpoints_without_veth,
            errors,
            work: plan.work,
            timings,
        })
    }

    /// Every problem the last sync found: the source's, the audit-mode annotations', the
    /// maps'.
    pub(super) fn errors(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(ToString::to_string)
            .chain(self.snapshot_errors.iter().cloned())
            .chain(self.map_errors.iter().cloned())
            .collect()
    }

    /// Each local pod's veth (the interface of a host route to one of its addresses), for
    /// those that have one.
    fn find_veths(&self) -> Result<BTreeMap<ObjectRef, netdev::Veth>, AgentError> {
        let ips: BTreeSet<_> = self
            .compiler
            .desired()
            .endpoints
            .values()
            .flat_map(|ep| ep.addrs.iter())
            .collect();
        let routes = netdev::host_routes(&ips)?;
        Ok(self
            .compiler
            .desired()
            .endpoints
            .iter()
            .filter_map(|(pod, ep)| {
                let veth = ep.addrs.iter().find_map(|ip| routes.get(&ip))?;
                Some((pod.clone(), veth.clone()))
            })
            .collect())
    }

    /// Attaches to every veth in `veths` (after adopting the links an earlier agent pinned)
    /// and detaches from veths that no longer lead to a local pod.
    fn attach_endpoints(&mut self, veths: BTreeMap<ObjectRef, netdev::Veth>) {
        if !self.adopted {
            let n = self.datapath.adopt();
            tracing::info!(
                interfaces = n,
                "took over the programs pinned by an earlier agent"
            );
            self.adopted = true;
        }
        let mut attached = BTreeMap::new();
        for (pod, veth) in veths {
            match self.datapath.attach(&veth.name, veth.ifindex) {
                Ok(()) => _ = attached.insert(pod, veth),
                Err(e) => {
                    tracing::warn!(%pod, error = %error_chain(&e), "attach failed; will retry")
                }
            }
        }
        let keep: BTreeSet<u32> = attached.values().map(|v| v.ifindex).collect();
        let stale: Vec<u32> = self
            .datapath
            .attached()
            .keys()
            .filter(|i| !keep.contains(i))
            .copied()
            .collect();
        for ifindex in stale {
            self.datapath.detach(ifindex);
        }
        self.veths = attached;
    }

    pub(super) fn publish_names(&mut self) {
        let interfaces = self
            .veths
            .iter()
            .map(|(pod, v)| (pod.clone(), v.name.clone()))
            .collect();
        let names = Names::new(
            self.compiler.desired(),
            self.compiler.snapshot(),
            self.compiler.lookups(),
            &interfaces,
            self.modes.global(),
        );
        self.names.send_replace(std::sync::Arc::new(names));
    }

    /// The rollout summary watches the dry-run policies of this sync; the counts of
    /// policies no longer dry-run are dropped (a policy's counts run from when it became
    /// dry-run). Only after a sync: names published before the first (a mode change) know
    /// no policy, and would drop the counts an earlier agent left.
    fn track_dry_run(&mut self) {
        let policies = &self.compiler.desired().dry_run_policies;
        if let Ok(mut r) = self.rollout.lock() {
            r.watch(policies, std::time::SystemTime::now());
        }
        let keep = policies
            .iter()
            .map(|p| cns_common::maps::dry_run_policy_hash(p.as_bytes()))
            .collect();
        if let Err(e) = self.datapath.prune_dry_run_counters(&keep) {
            tracing::warn!(error = %crate::agent::error_chain(&e), "failed to prune the dry-run counters");
        }
    }

    /// Re-reads what the maps hold, so the next sync rewrites anything changed behind the
    /// agent's back.
    pub(super) fn refresh_written(&mut self) {
        match self.datapath.read() {
            Ok(actual) => {
                if actual != self.written {
                    self.state.maps_unknown();
                    let drift = reconcile::diff(&self.written, &actual).len();
                    tracing::warn!(
                        entries = drift,
                        "maps drifted from what the agent wrote; rewriting"
                    );
                }
                self.written = actual;
            }
            Err(e) => {
                self.state.maps_unknown();
                tracing::error!(error = %error_chain(&e), "failed to read the maps back");
            }
        }
    }

    /// The local part of the cluster as the agent last compiled it: for the tests and the
    /// bench, which drive this same sync.
    pub fn desired(&self) -> &crate::policy::model::Desired {
        self.compiler.desired()
    }

    /// What the agent believes the maps hold.
    pub fn written(&self) -> &crate::encode::MapContents {
        &self.written
    }
}
