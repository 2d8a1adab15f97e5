//! The agent: one thread owns the datapath and the last good state, and serves requests
//! (sync, status, counters, mode) from the control socket, the directory watcher and the
//! periodic resync. Bursts of triggers are coalesced into one sync.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use cns_common::{
    DIR_INGRESS, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{self as m, Config},
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    control::{Reply, Request},
    encode::{self, MapContents},
    explain, history,
    loader::Datapath,
    metrics::AgentMetrics,
    names::{Names, SharedNames},
    netdev,
    policy::{
        Compiler,
        model::{Allocations, NodeContext, ObjectRef},
    },
    reconcile, show,
    source::{SnapshotSource, SourceError, SourceFailure},
};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub audit_mode: bool,
    pub pin_dir: PathBuf,
    pub resync_interval: Duration,
    pub event_rate: u32,
    pub event_burst: u32,
    /// The kernel emits `policy-verdict` events (allowed new connections).
    pub policy_verdict_events: bool,
    /// Where the XDP program runs.
    pub xdp_interfaces: crate::uplink::XdpInterfaces,
}

/// What woke the agent up.
pub enum Trigger {
    /// A request with a reply channel (control socket).
    Request(Request, oneshot::Sender<Reply>),
    /// The manifests changed.
    Resync,
    /// The periodic resync: also re-reads the maps, so drift is found and rewritten.
    Periodic,
}

pub struct Agent {
    cfg: AgentConfig,
    datapath: Datapath,
    source: Box<dyn SnapshotSource>,
    /// The last snapshot and what it compiled to (kept from sync to sync: a change costs
    /// what it touches).
    compiler: Compiler,
    /// What the agent-owned maps hold (read back at start and at every periodic resync).
    written: MapContents,
    /// What they should hold: the last compile, encoded (updated where it changed).
    intended: MapContents,
    /// `intended` may lag the compiler (a sync stopped between the two): encode it all.
    intended_stale: bool,
    /// The last read of the source may not have reached the compiler: read it whole.
    read_full: bool,
    /// When the source was last read whole.
    last_full_read: Option<Instant>,
    /// `written` may differ from `intended` anywhere (start, failed writes, drift), not only
    /// where the last compile changed: compare the whole IP cache.
    diff_all: bool,
    /// Local pod -> its veth, for the endpoints found so far.
    veths: BTreeMap<ObjectRef, netdev::Veth>,
    errors: Vec<SourceError>,
    audit_mode: bool,
    revision: u32,
    last_sync: Option<Instant>,
    /// Published after every sync and mode change.
    names: watch::Sender<SharedNames>,
    /// Whether the links pinned by an earlier agent were taken over (after the first sync).
    adopted: bool,
    /// Maps that could not take every entry at the last sync (full, or a write failed).
    map_errors: Vec<String>,
    /// The node as of the last sync.
    node: NodeContext,
    /// Runtime per-namespace mode overrides (`cns-agent mode ... --namespace`).
    ns_overrides: BTreeMap<String, bool>,
    /// The global mode as configured: the flag, or the source's `policyAuditMode`.
    configured_audit: bool,
    /// Runtime global override (`cns-agent mode audit|blocking`).
    global_override: Option<bool>,
    metrics: AgentMetrics,
    history: history::History,
}

/// The outcome of a sync, as `cns-agent sync` prints it.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub revision: u32,
    pub changes: usize,
    pub endpoints: usize,
    pub endpoints_without_veth: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("failed to read the source")]
    Source(#[from] SourceFailure),
    #[error("failed to inspect the node's interfaces")]
    Netdev(#[from] netdev::NetdevError),
    #[error("failed to read map {map}")]
    ReadMap {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{0}")]
    Panicked(String),
    #[error("failed to write map {map}")]
    WriteMap {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

impl Agent {
    /// Takes over the datapath: adopts what the pinned maps hold and bumps the policy
    /// revision so that flows tracked by an earlier run are re-checked.
    pub fn new(
        cfg: AgentConfig,
        source: Box<dyn SnapshotSource>,
        mut datapath: Datapath,
        metrics: AgentMetrics,
    ) -> Result<Self, AgentError> {
        let written = datapath
            .read_synced()
            .map_err(|source| AgentError::ReadMap {
                map: "policy maps",
                source,
            })?;
        let revision = datapath.config().map(|c| c.revision).unwrap_or(0);
        // Every sized map's capacity, fixed for the agent's life.
        for (map, capacity) in datapath.sizes().max_entries() {
            metrics
                .map_capacity
                .get_or_create(&vec![("map".to_owned(), map.to_owned())])
                .set(i64::from(capacity));
        }
        let cfg_audit = cfg.audit_mode;
        let mut agent = Self {
            audit_mode: cfg.audit_mode,
            cfg,
            datapath,
            source,
            compiler: Compiler::new(NodeContext::default(), Allocations::default()),
            written,
            intended: MapContents::default(),
            intended_stale: true,
            read_full: true,
            last_full_read: None,
            diff_all: true,
            veths: BTreeMap::new(),
            errors: Vec::new(),
            revision,
            last_sync: None,
            names: watch::Sender::new(SharedNames::default()),
            adopted: false,
            map_errors: Vec::new(),
            node: NodeContext::default(),
            ns_overrides: BTreeMap::new(),
            configured_audit: cfg_audit,
            global_override: None,
            metrics,
            history: history::History::default(),
        };
        agent.write_config()?;
        Ok(agent)
    }

    fn write_config(&mut self) -> Result<(), AgentError> {
        self.revision = self.revision.wrapping_add(1);
        let config = Config {
            audit_mode: u32::from(self.audit_mode),
            revision: self.revision,
            event_rate: self.cfg.event_rate,
            event_burst: self.cfg.event_burst,
            flags: if self.cfg.policy_verdict_events {
                m::CONFIG_POLICY_VERDICT_EVENTS
            } else {
                0
            },
            _pad: 0,
        };
        self.datapath
            .set_config(&config)
            .map_err(|source| AgentError::WriteMap {
                map: m::CONFIG,
                source,
            })
    }

    /// Re-reads the source, compiles, attaches to new veths, and writes the difference.
    pub fn sync(&mut self) -> Result<SyncReport, AgentError> {
        let started = Instant::now();
        // Changes since the previous read reach the compiler only if that read's did; and
        // now and then the source is read whole, so that nothing a source failed to notice
        // (a file's stat that did not change) outlives a minute.
        let whole = read_whole(self.read_full, self.last_full_read, started);
        let state = self.source.read(whole)?;
        if whole {
            self.last_full_read = Some(started);
        }
        self.read_full = true;
        for e in &state.errors {
            tracing::warn!(error = %e, "invalid input");
        }
        self.errors = state.errors;
        let old_policies = self.compiler.snapshot().policies.clone();
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
        if let Some(audit) = state.audit_mode
            && audit != self.configured_audit
        {
            tracing::info!(
                scope = "global",
                from = mode_name(self.configured_audit),
                to = mode_name(audit),
                by = "source configuration (policyAuditMode)",
                "configured policy audit mode changed"
            );
            let from = mode_name(self.configured_audit);
            self.configured_audit = audit;
            self.set_global_mode();
            self.count_mode_change("global", "source", from, mode_name(audit));
        }
        self.node = NodeContext {
            node_name: self.cfg.node_name.clone(),
            node_ips: netdev::node_ips()?,
        };
        self.compiler.set_node(self.node.clone());
        self.compiler.set_audit_overrides(&self.ns_overrides);
        self.intended_stale = true;
        let changed = self.compiler.update_with(state.update);
        self.read_full = false;

        // Maps first, programs after: a veth gets its programs only once its endpoint and
        // rules are in place, and pinned programs of an earlier agent are taken over only
        // once the maps hold the current state.
        let veths = self.find_veths()?;
        let ifindexes = veths
            .iter()
            .map(|(pod, veth)| (pod.clone(), veth.ifindex))
            .collect();
        let changed = changed.filter(|_| !self.intended_stale);
        let desired = self.compiler.desired();
        encode::update(&mut self.intended, desired, &ifindexes, changed.as_ref());
        self.intended_stale = false;
        // Where the IP cache can differ from what is written: where the compile changed it.
        let addresses: Option<BTreeSet<u32>> = changed
            .filter(|_| !self.diff_all)
            .map(|c| c.iter().map(|ip| encode::addr(*ip)).collect());
        let ops = reconcile::diff_at(&self.intended, &self.written, addresses.as_ref());
        self.diff_all = false;
        let failed = reconcile::apply(&mut self.datapath, &ops);
        let mut errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        let mut map_errors = self.intended.over_capacity(self.datapath.sizes());
        map_errors.extend(reconcile::summarize(&failed));
        for e in &map_errors {
            tracing::error!(error = %e, "map update failed");
        }
        errors.extend(map_errors.iter().cloned());
        self.map_errors = map_errors;
        // Record what was written; after a failure, what the maps really hold (the failed
        // operations are retried at the next sync).
        if failed.is_empty() {
            reconcile::apply(&mut self.written, &ops);
        } else {
            self.diff_all = true;
            self.written = self
                .datapath
                .read_synced()
                .map_err(|source| AgentError::ReadMap {
                    map: "policy maps",
                    source,
                })?;
        }
        let (added, changed, removed) =
            history::policy_changes(&old_policies, &self.compiler.snapshot().policies);
        if !ops.is_empty() {
            self.write_config()?;
            tracing::info!(
                changes = ops.len(),
                revision = self.revision,
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
        self.last_sync = Some(Instant::now());
        self.record_sync_metrics(started, !errors.is_empty());
        let endpoints_without_veth = self
            .compiler
            .desired()
            .endpoints
            .keys()
            .filter(|pod| !self.veths.contains_key(pod))
            .map(ToString::to_string)
            .collect();
        Ok(SyncReport {
            revision: self.revision,
            changes: ops.len(),
            endpoints: self.veths.len(),
            endpoints_without_veth,
            errors,
        })
    }

    /// Each local pod's veth (the interface of its /32 route), for those that have one.
    fn find_veths(&self) -> Result<BTreeMap<ObjectRef, netdev::Veth>, AgentError> {
        let ips: BTreeSet<_> = self
            .compiler
            .desired()
            .endpoints
            .values()
            .map(|ep| ep.ip)
            .collect();
        let routes = netdev::host_routes(&ips)?;
        Ok(self
            .compiler
            .desired()
            .endpoints
            .iter()
            .filter_map(|(pod, ep)| Some((pod.clone(), routes.get(&ep.ip)?.clone())))
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

    fn record_sync_metrics(&self, started: Instant, had_errors: bool) {
        let m = &self.metrics;
        let gauge = |g: &prometheus_client::metrics::gauge::Gauge, n: usize| {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge(&m.policies, self.compiler.snapshot().policies.len());
        gauge(&m.endpoints, self.veths.len());
        gauge(
            &m.identities,
            self.compiler.desired().allocations.identities.len(),
        );
        gauge(
            &m.namespaces,
            self.compiler.desired().allocations.namespaces.len(),
        );
        for u in self.written.usage(self.datapath.sizes()) {
            let labels = vec![("map".to_owned(), u.map.to_owned())];
            gauge(&m.map_entries.get_or_create(&labels), u.entries);
        }
        m.sync_seconds
            .get_or_create(&vec![("phase".to_owned(), "total".to_owned())])
            .observe(started.elapsed().as_secs_f64());
        m.last_sync_timestamp.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );
        if had_errors {
            m.sync_errors.inc();
        }
        self.record_mode_metrics();
    }

    fn record_mode_metrics(&self) {
        let m = &self.metrics;
        let set = |ns: &str, mode: &str| {
            m.mode
                .get_or_create(&vec![("namespace".to_owned(), ns.to_owned())])
                .set(i64::from(mode == "audit"));
        };
        set("", mode_name(self.audit_mode));
        for ns in self.compiler.snapshot().namespaces.keys() {
            set(ns, self.namespace_mode(ns));
        }
    }

    fn count_mode_change(&mut self, scope: &str, by: &str, from: &str, to: &str) {
        self.history.record(history::Change {
            time: now_rfc3339(),
            revision: self.revision,
            by: by.into(),
            mode_change: Some(format!("{scope}: {from} -> {to}")),
            ..history::Change::default()
        });
        self.metrics
            .mode_changes
            .get_or_create(&vec![
                ("scope".to_owned(), scope.to_owned()),
                ("by".to_owned(), by.to_owned()),
            ])
            .inc();
        self.record_mode_metrics();
    }

    /// Names for the numbers in the maps, updated after every sync.
    pub fn names(&self) -> watch::Receiver<SharedNames> {
        self.names.subscribe()
    }

    fn publish_names(&mut self) {
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
            self.audit_mode,
        );
        self.names.send_replace(std::sync::Arc::new(names));
    }

    /// Re-reads what the maps hold, so the next sync rewrites anything changed behind the
    /// agent's back.
    fn refresh_written(&mut self) {
        self.diff_all = true;
        match self.datapath.read_synced() {
            Ok(actual) => {
                if actual != self.written {
                    let drift = reconcile::diff(&self.written, &actual).len();
                    tracing::warn!(
                        entries = drift,
                        "maps drifted from what the agent wrote; rewriting"
                    );
                }
                self.written = actual;
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "failed to read the maps back"),
        }
    }

    /// Recomputes the global mode after its configuration changed; writes it if it did.
    fn set_global_mode(&mut self) {
        let audit = self.global_override.unwrap_or(self.configured_audit);
        if audit != self.audit_mode {
            self.audit_mode = audit;
            if let Err(e) = self.write_config() {
                tracing::error!(error = %error_chain(&e), "failed to write the mode");
            }
        }
    }

    /// Applies a runtime mode override (`cns-agent mode`): global, or for one namespace;
    /// `None` returns to the configured mode. Returns the resulting effective mode.
    pub fn set_mode(
        &mut self,
        audit: Option<bool>,
        namespace: Option<String>,
    ) -> Result<&'static str, AgentError> {
        let by = "cns-agent mode (control socket)";
        match namespace {
            None => {
                let before = self.audit_mode;
                self.global_override = audit;
                self.audit_mode = audit.unwrap_or(self.configured_audit);
                tracing::info!(
                    scope = "global",
                    from = mode_name(before),
                    to = mode_name(self.audit_mode),
                    override_set = audit.is_some(),
                    by,
                    "policy audit mode changed"
                );
                self.write_config()?;
                self.publish_names();
                self.count_mode_change(
                    "global",
                    "cli",
                    mode_name(before),
                    mode_name(self.audit_mode),
                );
                Ok(mode_name(self.audit_mode))
            }
            Some(ns) => {
                let before = self.namespace_mode(&ns);
                match audit {
                    Some(a) => _ = self.ns_overrides.insert(ns.clone(), a),
                    None => _ = self.ns_overrides.remove(&ns),
                }
                self.sync()?;
                let after = self.namespace_mode(&ns);
                tracing::info!(
                    scope = %ns,
                    from = before,
                    to = after,
                    override_set = audit.is_some(),
                    by,
                    "policy audit mode changed"
                );
                self.count_mode_change(&format!("namespace {ns}"), "cli", before, after);
                Ok(after)
            }
        }
    }

    /// A namespace's effective mode: runtime override > `cns.io/policy-audit-mode`
    /// annotation > global mode.
    fn namespace_mode(&self, ns: &str) -> &'static str {
        let annotation = self
            .compiler
            .snapshot()
            .namespaces
            .get(ns)
            .and_then(|n| n.metadata.annotations.as_ref())
            .and_then(|a| a.get(crate::policy::compile::AUDIT_ANNOTATION))
            .and_then(|v| v.parse::<bool>().ok());
        let audit = self
            .ns_overrides
            .get(ns)
            .copied()
            .or(annotation)
            .unwrap_or(self.audit_mode);
        mode_name(audit)
    }

    pub fn counters(&self) -> Result<Vec<CounterRow>, AgentError> {
        let raw = self
            .datapath
            .counters()
            .map_err(|source| AgentError::ReadMap {
                map: m::COUNTERS,
                source,
            })?;
        let mut rows: Vec<CounterRow> = raw
            .into_iter()
            .map(|(k, c)| CounterRow {
                source: self.names.borrow().namespace(k.src_ns),
                destination: self.names.borrow().namespace(k.dst_ns),
                direction: if k.dir == DIR_INGRESS {
                    "ingress"
                } else {
                    "egress"
                },
                verdict: match k.verdict {
                    VERDICT_DROPPED => "dropped",
                    VERDICT_AUDIT => "audit",
                    _ => "forwarded",
                },
                protocol: crate::events::protocol_name(k.proto),
                reason: (k.verdict != cns_common::VERDICT_FORWARDED)
                    .then(|| crate::events::reason_name(k.reason)),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &CounterRow| {
                (
                    r.source.clone(),
                    r.destination.clone(),
                    r.direction,
                    r.verdict,
                    r.protocol,
                    r.reason,
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(rows)
    }

    pub fn status(&self) -> Status {
        let stats = self.datapath.stats().unwrap_or_default();
        Status {
            mode: mode_name(self.audit_mode),
            configured_mode: mode_name(self.configured_audit),
            namespace_overrides: self
                .ns_overrides
                .iter()
                .map(|(ns, a)| (ns.clone(), mode_name(*a)))
                .collect(),
            source: self.source.describe(),
            node_name: self.cfg.node_name.clone(),
            revision: self.revision,
            seconds_since_sync: self.last_sync.map(|t| t.elapsed().as_secs()),
            endpoints: self
                .compiler
                .desired()
                .endpoints
                .iter()
                .map(|(pod, ep)| EndpointStatus {
                    pod: pod.to_string(),
                    ip: ep.ip.to_string(),
                    interface: self.veths.get(pod).map(|v| v.name.clone()),
                    identity: ep.identity,
                    ingress_isolated: ep.ingress_isolated,
                    egress_isolated: ep.egress_isolated,
                    mode: mode_name(ep.audit_override.unwrap_or(self.audit_mode)),
                })
                .collect(),
            maps: self.written.usage(self.datapath.sizes()).to_vec(),
            map_sizes: *self.datapath.sizes(),
            maps_dir: self.datapath.maps_dir().display().to_string(),
            xdp: self
                .datapath
                .xdp_attached()
                .iter()
                .map(|(ifindex, a)| XdpStatus {
                    interface: a.interface.clone(),
                    ifindex: *ifindex,
                    mode: a.mode.map_or("unknown", |m| m.as_str()),
                })
                .collect(),
            datapath_stats: STAT_NAMES
                .iter()
                .map(|&(i, name)| (name, stats.get(i as usize).copied().unwrap_or(0)))
                .collect(),
            errors: self
                .errors
                .iter()
                .map(ToString::to_string)
                .chain(self.map_errors.iter().cloned())
                .collect(),
        }
    }

    /// The reply to one request (`sync_reply`: the outcome of this round's sync, if any).
    fn answer(&mut self, req: Request, sync_reply: &Option<Reply>) -> Reply {
        match req {
            Request::Sync => sync_reply
                .clone()
                .unwrap_or_else(|| Reply::err("no sync ran", ())),
            Request::Status => Reply::ok(self.status()),
            Request::Counters => match self.counters() {
                Ok(rows) => Reply::ok(rows),
                Err(e) => Reply::err(error_chain(&e), ()),
            },
            Request::Show { namespace, pod } => match self.datapath.read() {
                Ok(actual) => {
                    let ifindexes = self
                        .veths
                        .iter()
                        .map(|(p, v)| (p.clone(), v.ifindex))
                        .collect();
                    let intended = encode::encode(self.compiler.desired(), &ifindexes);
                    let names = self.names.borrow().clone();
                    let filter = |name: &str| {
                        let (ns, p) = name.split_once('/').unwrap_or(("", name));
                        namespace.as_deref().is_none_or(|n| n == ns)
                            && pod.as_deref().is_none_or(|want| want == p || want == name)
                    };
                    Reply::ok(show::show(
                        &actual,
                        &intended,
                        &names,
                        self.audit_mode,
                        filter,
                    ))
                }
                Err(e) => Reply::err(error_chain(&e), ()),
            },
            Request::Monitor { .. } => Reply::err("monitor is served by the control socket", ()),
            Request::History { n } => Reply::ok(self.history.last(n)),
            Request::Explain { from, to, port } => {
                let mode_of = |pod: &ObjectRef| {
                    let audit = self
                        .compiler
                        .desired()
                        .endpoints
                        .get(pod)
                        .and_then(|ep| ep.audit_override)
                        .unwrap_or(self.audit_mode);
                    mode_name(audit)
                };
                match explain::explain(
                    self.compiler.snapshot(),
                    &self.node,
                    &from,
                    &to,
                    &port,
                    mode_of,
                ) {
                    Ok(e) => Reply::ok(e),
                    Err(e) => Reply::err(e, ()),
                }
            }
            Request::Snapshot if self.last_sync.is_none() => {
                Reply::err("the agent has not read its source yet", ())
            }
            Request::Snapshot => Reply::ok(crate::diff::LiveState::new(
                self.compiler.snapshot(),
                &self.node,
                self.source.describe(),
            )),
            Request::Mode { audit, namespace } => match self.set_mode(audit, namespace.clone()) {
                Ok(mode) => Reply::ok(serde_json::json!({
                    "mode": mode,
                    "namespace": namespace,
                })),
                Err(e) => Reply::err(error_chain(&e), ()),
            },
        }
    }

    /// Serves triggers until the channel closes. Runs on its own thread: map syscalls block.
    pub fn run(mut self, mut triggers: mpsc::Receiver<Trigger>) {
        match self.sync() {
            Err(AgentError::Source(SourceFailure::NotReady { what })) => {
                tracing::info!(%what, "waiting for the source before the first sync");
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "initial sync failed"),
            Ok(_) => {}
        }
        while let Some(first) = triggers.blocking_recv() {
            // Coalesce whatever else is already queued into this round.
            let mut batch = vec![first];
            while let Ok(more) = triggers.try_recv() {
                batch.push(more);
            }
            if batch.iter().any(|t| matches!(t, Trigger::Periodic)) {
                self.refresh_written();
            }
            let needs_sync = batch.iter().any(|t| {
                matches!(
                    t,
                    Trigger::Resync | Trigger::Periodic | Trigger::Request(Request::Sync, _)
                )
            });
            let sync_reply = needs_sync.then(|| {
                match guarded("syncing", || self.sync())
                    .unwrap_or_else(|msg| Err(AgentError::Panicked(msg)))
                {
                    Ok(report) if report.errors.is_empty() => Reply::ok(&report),
                    Ok(report) => Reply::err(report.errors.join("\n"), &report),
                    Err(e) => {
                        let msg = error_chain(&e);
                        tracing::error!(error = %msg, "sync failed");
                        Reply::err(msg, ())
                    }
                }
            });
            for t in batch {
                let Trigger::Request(req, reply) = t else {
                    continue;
                };
                let answer = guarded("answering a request", || self.answer(req, &sync_reply))
                    .unwrap_or_else(|msg| Reply::err(msg, ()));
                _ = reply.send(answer);
            }
        }
    }
}

/// The datapath statistics `status` shows, by their `STATS` map index.
const STAT_NAMES: [(u32, &str); 7] = [
    (m::STAT_EVENTS_SUPPRESSED, "events_suppressed"),
    (m::STAT_EVENTS_LOST, "events_lost"),
    (m::STAT_COUNTERS_FULL, "counters_full"),
    (m::STAT_CONNTRACK_INSERT_FAILED, "conntrack_insert_failed"),
    (m::STAT_XDP_DROPPED, "xdp_dropped"),
    (m::STAT_XDP_AUDIT, "xdp_audit"),
    (m::STAT_XDP_ALLOWED, "xdp_allowed"),
];

/// How often the source is read whole even when nothing asks for it.
const FULL_READ_EVERY: Duration = Duration::from_secs(60);

/// Whether a sync at `now` reads the source whole: when the last read may not have reached
/// the compiler, and every [`FULL_READ_EVERY`].
fn read_whole(read_full: bool, last_full: Option<Instant>, now: Instant) -> bool {
    read_full || last_full.is_none_or(|t| now.saturating_duration_since(t) >= FULL_READ_EVERY)
}

/// Runs `f`, turning a panic (a bug) into an error message instead of killing the agent
/// thread: the datapath keeps enforcing its last state and the next round starts afresh.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %msg, "internal error while {what}; the agent carries on");
        format!("internal error while {what} (a bug, see the agent log): {msg}")
    })
}

fn now_rfc3339() -> String {
    crate::events::humantime_rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

pub fn mode_name(audit: bool) -> &'static str {
    if audit { "audit" } else { "blocking" }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Clone, Debug, Serialize)]
pub struct CounterRow {
    pub source: String,
    pub destination: String,
    pub direction: &'static str,
    pub verdict: &'static str,
    /// `TCP`, `UDP`, `SCTP`, `ICMPv4`, `OTHER` (not IPv4).
    pub protocol: &'static str,
    /// Why a packet was dropped or audited; absent for forwarded packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    pub pod: String,
    pub ip: String,
    pub interface: Option<String>,
    pub identity: u32,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    pub mode: &'static str,
}

#[derive(Debug, Serialize)]
pub struct XdpStatus {
    pub interface: String,
    pub ifindex: u32,
    pub mode: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Status {
    /// The global mode in force.
    pub mode: &'static str,
    /// The global mode from `--policy-audit-mode` (what `mode configured` returns to).
    pub configured_mode: &'static str,
    /// Runtime per-namespace overrides.
    pub namespace_overrides: BTreeMap<String, &'static str>,
    pub source: String,
    pub node_name: String,
    pub revision: u32,
    pub seconds_since_sync: Option<u64>,
    pub endpoints: Vec<EndpointStatus>,
    pub maps: Vec<encode::MapUsage>,
    /// The sizes the maps were created with (`--map-sizes`), by key.
    pub map_sizes: crate::map_sizes::MapSizes,
    /// Where the maps are pinned.
    pub maps_dir: String,
    /// The uplinks running the XDP program, and in which mode (native or generic).
    pub xdp: Vec<XdpStatus>,
    pub datapath_stats: BTreeMap<&'static str, u64>,
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_read_whole_after_a_lost_read_and_every_minute() {
        let t0 = Instant::now();
        let later = |secs| t0 + Duration::from_secs(secs);
        // The first sync, and any sync whose previous read may not have reached the compiler.
        assert!(read_whole(false, None, t0));
        assert!(read_whole(true, Some(t0), later(1)));
        // Otherwise only changes, until a minute has passed.
        assert!(!read_whole(false, Some(t0), later(1)));
        assert!(!read_whole(false, Some(t0), later(59)));
        assert!(read_whole(false, Some(t0), later(60)));
    }
}
