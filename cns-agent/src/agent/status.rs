//! What `status` and `counters` show, and the gauges recorded after each sync.

use std::{collections::BTreeMap, time::Instant};

use cns_common::{
    DIR_INGRESS, VERDICT_AUDIT, VERDICT_DROPPED,
    maps::{self as m},
};
use serde::Serialize;

use super::{Agent, AgentError, Work};
use crate::{
    encode,
    events::sinks::{EventSinks, SinkHealth},
    policy::AuditMode,
};

impl Agent {
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
            mode: self.modes.global(),
            configured_mode: self.modes.configured(),
            namespace_overrides: self.modes.namespaces.clone(),
            source: self.source.describe(),
            watches: self.source.watches(),
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
                    ip: ep
                        .addrs
                        .iter()
                        .map(|ip| ip.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    interface: self.veths.get(pod).map(|v| v.name.clone()),
                    identity: ep.identity,
                    ingress_isolated: ep.ingress_isolated,
                    egress_isolated: ep.egress_isolated,
                    mode: self.modes.of_endpoint(ep.audit_override),
                    dry_run: ep.dry_run,
                })
                .collect(),
            dry_run_policies: self
                .compiler
                .desired()
                .dry_run_policies
                .iter()
                .map(ToString::to_string)
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
            last_sync_work: self.last_work,
            pins: self.cfg.pins.clone(),
            event_sinks: self
                .event_sinks
                .as_ref()
                .map(EventSinks::health)
                .unwrap_or_default(),
            errors: self.errors(),
        }
    }

    pub(super) fn record_sync_metrics(&self, started: Instant, had_errors: bool, work: Work) {
        let m = &self.metrics;
        let gauge = |g: &prometheus_client::metrics::gauge::Gauge, n: usize| {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge(&m.policies, self.compiler.snapshot().policies.len());
        gauge(
            &m.cluster_policies,
            self.compiler.snapshot().cluster_policies.len(),
        );
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
        gauge(&m.sync_encoded, work.encoded_entries);
        gauge(&m.sync_diffed, work.diffed_addresses);
        self.record_mode_metrics();
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

#[derive(Clone, Debug, Serialize)]
pub struct CounterRow {
    pub source: String,
    pub destination: String,
    pub direction: &'static str,
    pub verdict: &'static str,
    /// `TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6`, `OTHER` (another protocol, or neither IP family).
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
    pub mode: AuditMode,
    /// Some dry-run policy applies to it (`policy rollout`).
    pub dry_run: bool,
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
    pub mode: AuditMode,
    /// The global mode as configured: the source's `policyAuditMode`, else
    /// `--policy-audit-mode` (what `mode configured` returns to).
    pub configured_mode: AuditMode,
    /// Runtime per-namespace overrides.
    pub namespace_overrides: BTreeMap<String, AuditMode>,
    pub source: String,
    /// The Kubernetes source's watches (absent for a manifests directory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<crate::source::WatchStatus>,
    pub node_name: String,
    pub revision: u32,
    pub seconds_since_sync: Option<u64>,
    pub endpoints: Vec<EndpointStatus>,
    /// The dry-run policies (`cns.io/policy-audit-mode: "true"` on the policy): they change
    /// no verdict; `policy rollout` says what they would change.
    pub dry_run_policies: Vec<String>,
    pub maps: Vec<encode::MapUsage>,
    /// The sizes the maps were created with (`--map-sizes`), by key.
    pub map_sizes: crate::map_sizes::MapSizes,
    /// Where the maps are pinned.
    pub maps_dir: String,
    /// The uplinks running the XDP program, and in which mode (native or generic).
    pub xdp: Vec<XdpStatus>,
    pub datapath_stats: BTreeMap<&'static str, u64>,
    /// What the last sync encoded and compared (`None` before the first sync).
    pub last_sync_work: Option<Work>,
    /// `pins`: `durable`, or `ephemeral` with `why` (enforcement stops when the agent exits).
    #[serde(flatten)]
    pub pins: crate::instance::PinDurability,
    /// Each event sink's health (stdout, syslog, monitor clients).
    pub event_sinks: Vec<SinkHealth>,
    pub errors: Vec<String>,
}
