//! Prometheus metrics on `--metrics-addr` (`/metrics`, read-only): per-namespace flow
//! counters named as Hubble's (`hubble_flows_processed_total` with
//! `sourceContext=namespace;destinationContext=namespace` labels) plus a byte counter, read
//! from the per-CPU counters map at scrape time and summed there (no second copy, nothing
//! stalls the datapath); datapath statistics; and the agent's own health, which the agent
//! thread updates through [`AgentMetrics`].

use std::{collections::BTreeMap, net::SocketAddr, path::Path, sync::Mutex, time::Duration};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use cns_common::{
    DIR_INGRESS, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{self as m, Counter, CounterKey, DryRunCounterKey},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter as PCounter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::sync::watch;

use crate::{
    control::limits::AcceptBackoff,
    counters::CounterMaps,
    events::{
        protocol_name, reason_name,
        sinks::{EventSinks, SinkHealth, SinkState},
    },
    names::SharedNames,
};

type Labels = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("failed to open pinned map {path}")]
    Open {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("failed to listen on {addr} for metrics")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent thread reports about itself.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    pub policies: Gauge,
    pub cluster_policies: Gauge,
    pub endpoints: Gauge,
    pub identities: Gauge,
    pub namespaces: Gauge,
    /// By map: entries the agent wrote (agent-owned maps), and capacity (every sized map).
    pub map_entries: Family<Labels, Gauge>,
    pub map_capacity: Family<Labels, Gauge>,
    pub sync_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pub last_sync_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub sync_errors: PCounter,
    /// The last sync's work: entries encoded, IP cache addresses compared.
    pub sync_encoded: Gauge,
    pub sync_diffed: Gauge,
    /// 1 when the pins die with the agent (a private bpffs).
    pub pins_ephemeral: Gauge,
    /// 1 for the mode in force, per namespace ("" = global).
    pub mode: Family<Labels, Gauge>,
    pub mode_changes: Family<Labels, PCounter>,
    pub events: Family<Labels, PCounter>,
}

fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            policies: Gauge::default(),
            cluster_policies: Gauge::default(),
            endpoints: Gauge::default(),
            identities: Gauge::default(),
            namespaces: Gauge::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            sync_seconds: Family::new_with_constructor(sync_histogram),
            last_sync_timestamp: Gauge::default(),
            sync_errors: PCounter::default(),
            sync_encoded: Gauge::default(),
            sync_diffed: Gauge::default(),
            pins_ephemeral: Gauge::default(),
            mode: Family::default(),
            mode_changes: Family::default(),
            events: Family::default(),
        }
    }
}

/// Reads the pinned counters and stats at scrape time.
struct DatapathCollector {
    counters: Mutex<CounterMaps>,
    stats: Mutex<PerCpuArray<MapData, u64>>,
    dry_run: Mutex<PerCpuHashMap<MapData, DryRunCounterKey, u64>>,
    names: Mutex<watch::Receiver<SharedNames>>,
}

impl std::fmt::Debug for DatapathCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatapathCollector")
    }
}

fn verdict_label(v: u8) -> &'static str {
    match v {
        VERDICT_DROPPED => "DROPPED",
        VERDICT_AUDIT => "AUDIT",
        _ => "FORWARDED",
    }
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names = self
            .names
            .lock()
            .map(|n| n.borrow().clone())
            .unwrap_or_default();
        let rows = self
            .counters
            .lock()
            .ok()
            .and_then(|c| c.read().ok())
            .unwrap_or_default();
        // Several keys (e.g. drop reasons) may share a metric's labels: sum them, so each
        // series appears once.
        let family = |labels: &dyn Fn(&CounterKey) -> Option<Labels>,
                      value: &dyn Fn(&Counter) -> u64| {
            let mut sums: BTreeMap<Labels, u64> = BTreeMap::new();
            for (k, c) in &rows {
                if let Some(l) = labels(k) {
                    *sums.entry(l).or_default() += value(c);
                }
            }
            sums
        };
        let packets = |c: &Counter| c.packets;
        let bytes = |c: &Counter| c.bytes;
        let namespaces = |k: &CounterKey| -> Labels {
            vec![
                ("source".into(), names.namespace(k.src_ns)),
                ("destination".into(), names.namespace(k.dst_ns)),
            ]
        };
        let flow = |k: &CounterKey, with_direction: bool| -> Labels {
            let mut l = namespaces(k);
            l.extend([
                ("verdict".into(), verdict_label(k.verdict).into()),
                ("protocol".into(), protocol_name(k.proto).into()),
                (
                    "type".into(),
                    if k.verdict == VERDICT_DROPPED {
                        "Drop"
                    } else {
                        "Trace"
                    }
                    .into(),
                ),
                (
                    "subtype".into(),
                    if k.dir == DIR_INGRESS {
                        "to-endpoint"
                    } else {
                        "from-endpoint"
                    }
                    .into(),
                ),
            ]);
            if with_direction {
                let dir = if k.dir == DIR_INGRESS {
                    "ingress"
                } else {
                    "egress"
                };
                l.push(("direction".into(), dir.into()));
            }
            l
        };
        let drop = |k: &CounterKey| {
            (k.verdict == VERDICT_DROPPED).then(|| {
                let mut l = namespaces(k);
                l.push(("reason".into(), reason_name(k.reason).into()));
                l.push(("protocol".into(), protocol_name(k.proto).into()));
                l
            })
        };
        for (name, help, sums) in [
            (
                "hubble_flows_processed",
                "Packets seen by the policy programs, by source and destination namespace, verdict and protocol (as Hubble's flows metric with sourceContext=namespace;destinationContext=namespace; both directions' programs count).",
                // Hubble's labels have no direction: both programs' views are summed.
                family(&|k| Some(flow(k, false)), &packets),
            ),
            (
                "hubble_drop",
                "Packets dropped by policy, by source and destination namespace, reason and protocol (as Hubble's drop metric with sourceContext=namespace;destinationContext=namespace).",
                family(&drop, &packets),
            ),
            (
                "cns_flow_bytes",
                "Bytes (frame length) seen by the policy programs, by namespace pair, verdict, protocol and direction.",
                family(&|k| Some(flow(k, true)), &bytes),
            ),
            (
                "cns_flow_packets",
                "Packets seen by the policy programs, by namespace pair, verdict, protocol and direction.",
                family(&|k| Some(flow(k, true)), &packets),
            ),
        ] {
            let mut e = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (l, v) in &sums {
                ConstCounter::new(*v).encode(e.encode_family(l)?)?;
            }
        }
        // Every dry-run policy, both directions and outcomes (zero until counted): bounded by
        // the number of dry-run policies.
        let rows: Vec<(DryRunCounterKey, u64)> = self
            .dry_run
            .lock()
            .ok()
            .and_then(|m| {
                m.iter()
                    .map(|kv| kv.map(|(k, v)| (k, v.iter().sum())))
                    .collect::<Result<_, _>>()
                    .ok()
            })
            .unwrap_or_default();
        {
            let mut dry = encoder.encode_descriptor(
                "cns_policy_dry_run_flows",
                "New flows whose verdict a dry-run policy (cns.io/policy-audit-mode: \"true\") would change, by policy, direction and outcome (would-drop: passes today; would-allow: dropped or audited today). Counted since the policy became dry-run; kept across agent restarts.",
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for ((policy, dir, outcome), n) in crate::rollout::counts(&rows, &names) {
                let labels: Labels = vec![
                    ("policy".into(), policy.to_string()),
                    ("direction".into(), dir.as_str().into()),
                    ("outcome".into(), outcome.as_str().into()),
                ];
                ConstCounter::new(n).encode(dry.encode_family(&labels)?)?;
            }
        }
        if let Ok(stats) = self.stats.lock() {
            for (index, name, help) in [
                (
                    m::STAT_EVENTS_SUPPRESSED,
                    "cns_datapath_events_suppressed",
                    "Events the kernel's per-CPU rate limit suppressed.",
                ),
                (
                    m::STAT_EVENTS_LOST,
                    "cns_datapath_events_lost",
                    "Events lost because the ring buffer was full.",
                ),
                (
                    m::STAT_COUNTERS_FULL,
                    "cns_datapath_counter_overflow",
                    "Packets not counted per namespace pair because the counters map was full.",
                ),
                (
                    m::STAT_CONNTRACK_INSERT_FAILED,
                    "cns_datapath_conntrack_insert_failures",
                    "Conntrack entries that could not be created.",
                ),
                (
                    m::STAT_XDP_DROPPED,
                    "cns_xdp_dropped_packets",
                    "Packets the XDP program on the uplinks dropped (before an skb existed).",
                ),
                (
                    m::STAT_XDP_AUDIT,
                    "cns_xdp_audit_packets",
                    "Packets the XDP program passed in audit mode that blocking mode would drop.",
                ),
                (
                    m::STAT_XDP_ALLOWED,
                    "cns_xdp_allowed_packets",
                    "New flows the XDP program allowed (it created their conntrack entries).",
                ),
            ] {
                let v: u64 = stats.get(&index, 0).map(|pc| pc.iter().sum()).unwrap_or(0);
                let c = ConstCounter::new(v);
                c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// A metric of every sink: name, help, and its value from a sink's health.
type SinkMetric<T> = (&'static str, &'static str, fn(&SinkHealth) -> T);

/// Each event sink's delivered and dropped events and state, read at scrape time.
#[derive(Debug)]
struct SinksCollector(EventSinks);

impl Collector for SinksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let health = self.0.health();
        let sink = |h: &SinkHealth| -> Labels { vec![("sink".into(), h.sink.into())] };
        let counters: [SinkMetric<u64>; 2] = [
            (
                "cns_events_delivered",
                "Events handed to each sink (stdout, monitor, syslog).",
                |h| h.delivered,
            ),
            (
                "cns_events_dropped",
                "Events a sink lost: its queue was full, it failed (stdout closed), or a monitor client lagged.",
                |h| h.dropped,
            ),
        ];
        for (name, help, value) in counters {
            let mut e = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for h in &health {
                ConstCounter::new(value(h)).encode(e.encode_family(&sink(h))?)?;
            }
        }
        let gauges: [SinkMetric<i64>; 2] = [
            (
                "cns_event_sink_up",
                "1 when a sink delivers (0: stalled, disconnected or failed; see status).",
                |h| i64::from(h.state == SinkState::Ok),
            ),
            (
                "cns_event_sink_queued",
                "Events waiting in a sink's queue.",
                |h| i64::try_from(h.queued).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let mut e =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for h in &health {
                ConstGauge::new(value(h)).encode(e.encode_family(&sink(h))?)?;
            }
        }
        if let Some(syslog) = &self.0.syslog {
            let stats = syslog.stats();
            for (name, help, v) in [
                (
                    "cns_syslog_reconnects",
                    "Connections to the syslog receiver made again after one was lost.",
                    stats.reconnects,
                ),
                (
                    "cns_syslog_connect_errors",
                    "Failed attempts to resolve or connect to the syslog receiver.",
                    stats.connect_errors,
                ),
            ] {
                let c = ConstCounter::new(v);
                c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// The registry with every metric, ready to serve; the datapath's maps are read from their
/// pins in `maps_dir` (`Datapath::maps_dir`).
pub fn registry(
    maps_dir: &Path,
    names: watch::Receiver<SharedNames>,
    agent: &AgentMetrics,
    sinks: EventSinks,
) -> Result<Registry, MetricsError> {
    let open = |name: &str| {
        let path = maps_dir.join(name);
        MapData::from_pin(&path).map_err(|source| MetricsError::Open {
            path: path.display().to_string(),
            source,
        })
    };
    let open_err = |name: &str| {
        let path = maps_dir.join(name).display().to_string();
        move |source| MetricsError::Open { path, source }
    };
    let counters = CounterMaps::open(maps_dir).map_err(|e| MetricsError::Open {
        path: e.path,
        source: e.source,
    })?;
    let stats =
        PerCpuArray::try_from(Map::PerCpuArray(open(m::STATS)?)).map_err(open_err(m::STATS))?;
    let dry_run = PerCpuHashMap::try_from(Map::PerCpuLruHashMap(open(m::DRY_RUN_COUNTERS)?))
        .map_err(open_err(m::DRY_RUN_COUNTERS))?;
    let mut r = Registry::default();
    r.register_collector(Box::new(DatapathCollector {
        counters: Mutex::new(counters),
        stats: Mutex::new(stats),
        dry_run: Mutex::new(dry_run),
        names: Mutex::new(names),
    }));
    register_agent(&mut r, agent, sinks);
    Ok(r)
}

/// The metrics that do not read the datapath: the agent's own, the event sinks', build info.
fn register_agent(r: &mut Registry, agent: &AgentMetrics, sinks: EventSinks) {
    r.register_collector(Box::new(SinksCollector(sinks)));
    r.register(
        "cns_policies",
        "NetworkPolicies in the agent's source.",
        agent.policies.clone(),
    );
    r.register(
        "cns_cluster_policies",
        "ClusterNetworkPolicies in the agent's source.",
        agent.cluster_policies.clone(),
    );
    r.register(
        "cns_endpoints",
        "Local pods with programs attached.",
        agent.endpoints.clone(),
    );
    r.register(
        "cns_identities",
        "Pod identities (namespace + labels).",
        agent.identities.clone(),
    );
    r.register(
        "cns_namespaces",
        "Namespaces known.",
        agent.namespaces.clone(),
    );
    r.register(
        "cns_map_entries",
        "Entries the agent wrote, per map.",
        agent.map_entries.clone(),
    );
    r.register(
        "cns_map_capacity",
        "Capacity per map, as created (--map-sizes).",
        agent.map_capacity.clone(),
    );
    r.register(
        "cns_sync_duration_seconds",
        "Time to read the source, compile, diff and apply (phase=total|compile|apply).",
        agent.sync_seconds.clone(),
    );
    r.register(
        "cns_last_sync_timestamp_seconds",
        "Unix time of the last successful sync.",
        agent.last_sync_timestamp.clone(),
    );
    r.register(
        "cns_sync_errors",
        "Syncs that reported errors.",
        agent.sync_errors.clone(),
    );
    r.register(
        "cns_sync_encoded_entries",
        "Map entries the last sync encoded (the whole state after a start, a failure or drift; \
         otherwise what the change touched).",
        agent.sync_encoded.clone(),
    );
    r.register(
        "cns_sync_diffed_addresses",
        "IP cache addresses the last sync compared with the maps.",
        agent.sync_diffed.clone(),
    );
    r.register(
        "cns_pins_ephemeral",
        "1 when the agent's pins live in a bpffs of its own (started with \
         --allow-ephemeral-pins): the programs detach and enforcement stops when it exits.",
        agent.pins_ephemeral.clone(),
    );
    r.register(
        "cns_policy_audit_mode",
        "1 when the mode in force is audit, per namespace (namespace=\"\" is the global mode).",
        agent.mode.clone(),
    );
    r.register(
        "cns_policy_mode_changes",
        "Mode changes, by scope and means.",
        agent.mode_changes.clone(),
    );
    r.register(
        "cns_events",
        "Drop/audit events received from the kernel, by type.",
        agent.events.clone(),
    );
    let build_info = Family::<Labels, Gauge>::default();
    build_info
        .get_or_create(&vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )])
        .set(1);
    r.register(
        "cns_build_info",
        "Version of the running agent (always 1).",
        build_info,
    );
}

/// Renders the registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    _ = encode(&mut out, registry);
    out
}

/// Connections served at once; more wait in the kernel's backlog (costing the agent no
/// file descriptor) until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing (a scrape takes
/// milliseconds; Prometheus' default scrape timeout is 10 s).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves `GET /metrics` (and nothing that changes state) until the task is dropped. Idle,
/// slow and numerous clients cannot exhaust the agent: at most [`MAX_CONNECTIONS`] at once,
/// headers within [`HEADER_READ_TIMEOUT`], one request per connection, each connection
/// closed after [`CONNECTION_TIMEOUT`], and a back-off when accepting fails (EMFILE).
pub async fn serve(addr: SocketAddr, registry: Registry) -> Result<(), MetricsError> {
    use axum::{Router, http::header, routing::get};
    let registry = std::sync::Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&registry),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::default();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                tokio::time::sleep(backoff.failed("metrics", &e)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                tracing::debug!(error = %e, "metrics connection failed");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::events::sinks::StdoutSink;

    #[tokio::test]
    async fn build_info_and_every_sinks_drops_are_exported() {
        let target: crate::syslog::SyslogTarget = "udp://127.0.0.1:9".parse().unwrap();
        let syslog = crate::syslog::spawn(target, 1);
        let sinks = EventSinks::new(
            StdoutSink::spawn_with(std::io::sink(), BTreeSet::new(), 1),
            Some(syslog.clone()),
        );
        // Two events for a queue of one: at least one dropped.
        for _ in 0..2 {
            syslog.send("drop", &serde_json::json!({}));
        }
        let mut r = Registry::default();
        register_agent(&mut r, &AgentMetrics::default(), sinks);
        let text = render(&r);
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("cns_build_info{{version=\"{version}\"}} 1")),
            "{text}"
        );
        for sink in ["stdout", "monitor", "syslog"] {
            assert!(
                text.contains(&format!("cns_events_dropped_total{{sink=\"{sink}\"}}")),
                "no drops of {sink}:\n{text}"
            );
        }
        let syslog_drops = text
            .lines()
            .find_map(|l| l.strip_prefix("cns_events_dropped_total{sink=\"syslog\"} "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(syslog_drops.is_some_and(|n| n >= 1), "{text}");
        assert!(text.contains("cns_syslog_reconnects_total"), "{text}");
    }
}
