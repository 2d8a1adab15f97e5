//! The agent: one thread owns the datapath and the last good state, and serves requests
//! (sync, status, counters, mode) from the control socket, the directory watcher and the
//! periodic resync. Bursts of triggers are coalesced into one sync.
//!
//! Where to look: [`sync`] runs one sync (source -> compiler -> [`plan`] -> writer ->
//! attach); [`state`] says which stages of it must run whole; [`modes`] holds the audit
//! mode's settings and their changes; [`status`] is what `status` and `counters` show.

mod modes;
pub mod plan;
pub mod state;
pub mod status;
mod sync;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, watch};

pub use self::{
    plan::{Plan, Planner, Work},
    state::{Scope, SyncState},
    status::{CounterRow, EndpointStatus, Status, XdpStatus},
    sync::{SyncReport, SyncTimings},
};
use crate::{
    control::{Reply, Request},
    datapath::Datapath,
    encode::MapContents,
    error_chain,
    events::sinks::EventSinks,
    explain, history,
    logonce::LogOnce,
    metrics::AgentMetrics,
    names::SharedNames,
    netdev,
    policy::{
        AuditMode, Compiler, Modes,
        model::{Allocations, NodeContext, ObjectRef},
    },
    rollout::SharedRollout,
    show,
    source::{SnapshotSource, SourceError, SourceFailure},
};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// `--policy-audit-mode`.
    pub audit_mode: AuditMode,
    pub pin_dir: PathBuf,
    pub resync_interval: Duration,
    pub event_rate: u32,
    pub event_burst: u32,
    /// The kernel emits `policy-verdict` events (allowed new connections).
    pub policy_verdict_events: bool,
    /// Where the XDP program runs.
    pub xdp_interfaces: crate::uplink::XdpInterfaces,
    /// Whether the pins outlive the agent (`status`, `cns_pins_ephemeral`).
    pub pins: crate::instance::PinDurability,
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
    /// What the maps should hold: the last compile, encoded (updated where it changed).
    planner: Planner,
    /// What the maps hold (read back at start and at every periodic resync).
    written: MapContents,
    /// Which stages the next sync must run whole.
    state: SyncState,
    /// The work of the last sync.
    last_work: Option<Work>,
    /// Local pod -> its veth, for the endpoints found so far.
    veths: BTreeMap<ObjectRef, netdev::Veth>,
    errors: Vec<SourceError>,
    /// Objects the snapshot holds and enforces with a problem: namespaces whose audit-mode
    /// annotation cannot be read, ClusterNetworkPolicies using what cns does not enforce.
    snapshot_errors: Vec<String>,
    modes: Modes,
    revision: u32,
    /// The maps changed since the configuration (its revision) was last written: a sync
    /// whose write of it failed leaves it for the next.
    config_pending: bool,
    last_sync: Option<Instant>,
    /// Published after every sync and mode change.
    names: watch::Sender<SharedNames>,
    /// What each dry-run policy would change (fed by the event reader).
    rollout: SharedRollout,
    /// Whether the links pinned by an earlier agent were taken over (after the first sync).
    adopted: bool,
    /// Maps that could not take every entry at the last sync (full, or a write failed).
    map_errors: Vec<String>,
    /// The node as of the last sync.
    node: NodeContext,
    metrics: AgentMetrics,
    history: history::History,
    /// Where events go (for `status`), when the daemon has them.
    event_sinks: Option<EventSinks>,
    /// The source's and the maps' errors as last logged: each is logged once (and when it
    /// clears), not at every sync.
    logged_source_errors: LogOnce,
    logged_map_errors: LogOnce,
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
        datapath: Datapath,
        metrics: AgentMetrics,
    ) -> Result<Self, AgentError> {
        let written = datapath.read().map_err(|source| AgentError::ReadMap {
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
        metrics
            .pins_ephemeral
            .set(i64::from(!cfg.pins.is_durable()));
        let mut agent = Self {
            modes: Modes::new(cfg.audit_mode),
            cfg,
            datapath,
            source,
            compiler: Compiler::new(NodeContext::default(), Allocations::default()),
            planner: Planner::default(),
            written,
            state: SyncState::default(),
            last_work: None,
            veths: BTreeMap::new(),
            errors: Vec::new(),
            snapshot_errors: Vec::new(),
            revision,
            config_pending: false,
            last_sync: None,
            names: watch::Sender::new(SharedNames::default()),
            rollout: SharedRollout::default(),
            adopted: false,
            map_errors: Vec::new(),
            node: NodeContext::default(),
            metrics,
            history: history::History::default(),
            event_sinks: None,
            logged_source_errors: LogOnce::default(),
            logged_map_errors: LogOnce::default(),
        };
        agent.write_config()?;
        Ok(agent)
    }

    /// Reports the health of `sinks` in `status`.
    pub fn with_event_sinks(mut self, sinks: EventSinks) -> Self {
        self.event_sinks = Some(sinks);
        self
    }

    /// Names for the numbers in the maps, updated after every sync.
    pub fn names(&self) -> watch::Receiver<SharedNames> {
        self.names.subscribe()
    }

    /// The rollout summary, for the event reader to feed.
    pub fn rollout(&self) -> SharedRollout {
        self.rollout.clone()
    }

    /// `policy rollout`: the report as of `at` (default now) with would-be drops in the
    /// last `since` making a policy unsafe.
    fn rollout_report(
        &self,
        since: Option<&str>,
        at: Option<&str>,
    ) -> Result<crate::rollout::Report, String> {
        let window = since.map_or(Ok(crate::rollout::DEFAULT_WINDOW), |s| {
            crate::rollout::parse_duration(s)
        })?;
        let read = std::time::SystemTime::now();
        let now = match at {
            None => read,
            Some(t) => t
                .parse::<jiff::Timestamp>()
                .map_err(|e| {
                    format!("invalid time {t:?}: {e} (RFC 3339, e.g. 2026-12-03T15:00:00Z)")
                })?
                .into(),
        };
        let names = self.names.borrow().clone();
        let counts = self
            .datapath
            .dry_run_counters()
            .map_err(|e| error_chain(&e))?;
        let counts = crate::rollout::counts(&counts, &names);
        let open = self.datapath.dry_run_open().map_err(|e| error_chain(&e))?;
        let open = crate::rollout::open(&open, &names);
        let mut r = self
            .rollout
            .lock()
            .map_err(|_| "the rollout summary is poisoned")?;
        Ok(r.report(read, now, window, &counts, &open))
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
                    let names = self.names.borrow().clone();
                    let filter = |name: &str| {
                        let (ns, p) = name.split_once('/').unwrap_or(("", name));
                        namespace.as_deref().is_none_or(|n| n == ns)
                            && pod.as_deref().is_none_or(|want| want == p || want == name)
                    };
                    Reply::ok(show::show(
                        &actual,
                        self.planner.intended(),
                        &names,
                        self.modes.global(),
                        filter,
                    ))
                }
                Err(e) => Reply::err(error_chain(&e), ()),
            },
            Request::Monitor { .. } => Reply::err("monitor is served by the control socket", ()),
            Request::History { n } => Reply::ok(self.history.last(n)),
            Request::Rollout { since, at } => {
                match self.rollout_report(since.as_deref(), at.as_deref()) {
                    Ok(r) => Reply::ok(r),
                    Err(e) => Reply::err(e, ()),
                }
            }
            Request::Explain { from, to, port } => {
                let mode_of = |pod: &ObjectRef| {
                    let own = self
                        .compiler
                        .desired()
                        .endpoints
                        .get(pod)
                        .and_then(|ep| ep.audit_override);
                    self.modes.of_endpoint(own).as_str()
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

    /// One sync, as a reply (its errors, or the report).
    fn sync_reply(&mut self) -> Reply {
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
            let sync_reply = needs_sync.then(|| self.sync_reply());
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
