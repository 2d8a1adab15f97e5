//! Drop and audit events: read from the kernel's ring buffer (`CNS_EVENTS`, opened from its
//! pin so the agent thread keeps the other maps), enriched with names (namespace, pod,
//! labels, the policies involved), and published as JSON objects shaped like Hubble's flow
//! JSON: printed on stdout (one line each, filtered by `--monitor-event-types`), streamed to
//! `cns-agent monitor` clients, and handed to the syslog forwarder ([`sinks`]: none of them
//! can block the agent).

pub mod sinks;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use aya::maps::{Map, MapData, RingBuf};
use cns_common::{
    DIR_INGRESS, REASON_FRAGMENT, REASON_IPV6_HEADER_CHAIN, REASON_MALFORMED, REASON_NO_ENDPOINT,
    REASON_POLICY_ALLOWED, REASON_POLICY_DENIED, REASON_SPOOFED, REASON_UNSUPPORTED_L3,
    VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    maps::{DRY_RUN_WOULD_ALLOW, DRY_RUN_WOULD_DROP, EVENTS, Event, FAMILY_IPV4, FAMILY_IPV6},
};
use serde_json::{Value, json};
use tokio::{
    io::unix::AsyncFd,
    sync::{broadcast, watch},
};

use crate::{
    names::{Names, SharedNames},
    policy::model::{Direction, DryRunCause},
    rollout::{FlowKey, Observation, Outcome, SharedRollout},
};

/// The event types users filter on (`monitor.eventTypes` in Cilium's values).
pub const EVENT_TYPES: [&str; 3] = ["drop", "audit", "policy-verdict"];

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("failed to open the event ring buffer {path}")]
    Open {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("failed to poll the event ring buffer")]
    Poll(#[source] std::io::Error),
}

/// A published event: its type and its JSON.
#[derive(Clone, Debug)]
pub struct Published {
    pub kind: &'static str,
    pub json: Arc<Value>,
}

pub fn reason_name(reason: u8) -> &'static str {
    match reason {
        REASON_POLICY_DENIED => "POLICY_DENIED",
        REASON_POLICY_ALLOWED => "POLICY_ALLOWED",
        REASON_IPV6_HEADER_CHAIN => "IPV6_HEADER_CHAIN_UNWALKED",
        REASON_MALFORMED => "MALFORMED_PACKET",
        REASON_FRAGMENT => "FRAGMENT_WITHOUT_FIRST",
        REASON_SPOOFED => "SPOOFED_SOURCE",
        REASON_UNSUPPORTED_L3 => "UNSUPPORTED_L3_PROTOCOL",
        REASON_NO_ENDPOINT => "NO_ENDPOINT_ENTRY",
        cns_common::REASON_ADMIN_DENIED => "ADMIN_POLICY_DENIED",
        cns_common::REASON_BASELINE_DENIED => "BASELINE_POLICY_DENIED",
        _ => "UNKNOWN",
    }
}

pub fn protocol_name(p: u8) -> &'static str {
    match p {
        cns_common::PROTO_TCP => "TCP",
        cns_common::PROTO_UDP => "UDP",
        cns_common::PROTO_SCTP => "SCTP",
        cns_common::PROTO_ICMP => "ICMPv4",
        cns_common::PROTO_ICMPV6 => "ICMPv6",
        _ => "OTHER",
    }
}

/// An event's source and destination address, `None` when the packet had no IP header.
pub fn addresses(ev: &Event) -> Option<(IpAddr, IpAddr)> {
    let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    let v6 = |a: &[u8; 16]| IpAddr::V6(Ipv6Addr::from(*a));
    match ev.family {
        FAMILY_IPV4 => Some((v4(&ev.saddr), v4(&ev.daddr))),
        FAMILY_IPV6 => Some((v6(&ev.saddr), v6(&ev.daddr))),
        _ => None,
    }
}

/// Offset from `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall-clock time.
pub fn monotonic_offset() -> Duration {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default();
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(mono)
}

fn endpoint_json(names: &Names, ip: IpAddr, identity: u32, ns_id: u16) -> Value {
    let pod = names.pods_by_ip.get(&ip);
    let labels: Vec<String> = names
        .identities
        .get(&identity)
        .map(|k| {
            k.labels
                .iter()
                .map(|(k, v)| format!("k8s:{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "identity": identity,
        "namespace": names.namespace(ns_id),
        "labels": labels,
    });
    if let Some(p) = pod {
        v["pod_name"] = json!(&*p.name);
    }
    v
}

/// The Hubble-flow-like JSON of one kernel event, or `None` for an unknown layout.
pub fn to_json(
    ev: &Event,
    names: &Names,
    node_name: &str,
    offset: Duration,
) -> (&'static str, Value) {
    let kind = match ev.verdict {
        VERDICT_DROPPED => "drop",
        VERDICT_AUDIT => "audit",
        _ => "policy-verdict",
    };
    let time = humantime_rfc3339(offset + Duration::from_nanos(ev.ts_ns));
    let (src, dst) = addresses(ev).unwrap_or((
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    ));
    let ip_version = if ev.family == FAMILY_IPV6 {
        "IPv6"
    } else {
        "IPv4"
    };
    let ep = names.endpoint(ev.ep_id);
    // An allowed connection names the policy whose rule allowed it; a drop or audit the
    // policies that isolate the endpoint in that direction (any of them could allow it).
    let allowed_by = names.policies.get(&ev.policy_id);
    let dir = if ev.dir == DIR_INGRESS {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    // A ClusterNetworkPolicy rule that decided (Accept or Deny) names itself.
    let cluster_rule = names.cluster_rule(dir, ev.policy_id);
    let policies: Vec<String> = match (allowed_by, cluster_rule) {
        (_, Some(r)) => vec![format!("ClusterNetworkPolicy/{}", r.policy)],
        (Some(p), None) if ev.verdict == VERDICT_FORWARDED => vec![p.to_string()],
        _ => ep
            .map(|e| {
                let list = if ev.dir == DIR_INGRESS {
                    &e.ingress_policies
                } else {
                    &e.egress_policies
                };
                list.iter().map(ToString::to_string).collect()
            })
            .unwrap_or_default(),
    };
    let mut flow = json!({
        "time": time,
        "verdict": match ev.verdict { VERDICT_DROPPED => "DROPPED", VERDICT_AUDIT => "AUDIT", _ => "FORWARDED" },
        "drop_reason_desc": reason_name(ev.reason),
        "event_type": kind,
        "node_name": node_name,
        "traffic_direction": if ev.dir == DIR_INGRESS { "INGRESS" } else { "EGRESS" },
        "IP": {"source": src.to_string(), "destination": dst.to_string(), "ipVersion": ip_version},
        "source": endpoint_json(names, src, ev.src_identity, ev.src_ns),
        "destination": endpoint_json(names, dst, ev.dst_identity, ev.dst_ns),
        "interface": {"index": ev.ifindex},
        "policies": policies,
        "is_reply": false,
    });
    if let Some(p) = allowed_by.filter(|_| ev.verdict == VERDICT_FORWARDED) {
        // As Hubble names the policy that allowed a flow.
        let field = if ev.dir == DIR_INGRESS {
            "ingress_allowed_by"
        } else {
            "egress_allowed_by"
        };
        flow[field] = json!([{"name": &*p.name, "namespace": &*p.namespace}]);
    }
    if let Some(r) = cluster_rule {
        // As Hubble names allowing and denying policies, with the rule and its tier.
        let decided = if ev.verdict == VERDICT_FORWARDED {
            "allowed_by"
        } else {
            "denied_by"
        };
        let field = if ev.dir == DIR_INGRESS {
            format!("ingress_{decided}")
        } else {
            format!("egress_{decided}")
        };
        flow[field] = json!([{
            "name": &*r.policy,
            "kind": "ClusterNetworkPolicy",
            "tier": r.tier,
            "priority": r.priority,
            "rule": r.rule,
            "action": r.action,
        }]);
    }
    if let Some(e) = ep {
        flow["endpoint"] = json!(e.pod.to_string());
        if let Some(i) = &e.interface {
            flow["interface"]["name"] = json!(i);
        }
    }
    if matches!(
        ev.proto,
        cns_common::PROTO_TCP | cns_common::PROTO_UDP | cns_common::PROTO_SCTP
    ) {
        flow["l4"] = json!({ protocol_name(ev.proto): {
            "source_port": u16::from_be(ev.sport),
            "destination_port": u16::from_be(ev.dport),
        }});
    } else if ev.proto != 0 {
        flow["l4"] = json!({ protocol_name(ev.proto): {} });
    }
    if ev.family == 0 {
        flow["IP"] = Value::Null;
    }
    if let Some(d) = dry_run(ev, names) {
        if d.outcome == Outcome::WouldDrop {
            flow["policies"] = json!([&*d.policy]);
        }
        flow["dry_run"] = json!({
            "policy": &*d.policy,
            "outcome": d.outcome.as_str(),
            "rule": d.rule,
        });
    }
    (kind, flow)
}

/// What a dry-run event says: the dry-run policy, what it would do, and the rule (a
/// ClusterNetworkPolicy rule, or the NetworkPolicy) that would allow or drop, when one does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRun {
    pub policy: Arc<str>,
    pub outcome: Outcome,
    pub rule: Option<String>,
}

pub fn dry_run(ev: &Event, names: &Names) -> Option<DryRun> {
    let outcome = match ev.dry_run {
        DRY_RUN_WOULD_DROP => Outcome::WouldDrop,
        DRY_RUN_WOULD_ALLOW => Outcome::WouldAllow,
        _ => return None,
    };
    let dir = Direction::from_dir(ev.dir);
    let cause = DryRunCause::from_datapath(ev.dry_run_id, ev.ep_id, dir);
    let rule = match cause {
        DryRunCause::Isolation(..) => None,
        DryRunCause::Rule(id) => match names.cluster_rule(dir, id) {
            Some(r) => Some(r.to_string()),
            None => names.policy(id).map(ToString::to_string),
        },
    };
    let policy = names
        .dry_run_causes
        .get(&cause)
        .cloned()
        .unwrap_or_else(|| "unknown (changed since)".into());
    Some(DryRun {
        policy,
        outcome,
        rule,
    })
}

/// A dry-run event as the rollout summary keeps it.
pub fn observation(ev: &Event, names: &Names, at: SystemTime) -> Option<Observation> {
    let d = dry_run(ev, names)?;
    let peer = |ip: IpAddr| {
        names
            .pods_by_ip
            .get(&ip)
            .map_or_else(|| ip.to_string(), ToString::to_string)
    };
    let (src, dst) = addresses(ev)?;
    let port = match ev.proto {
        cns_common::PROTO_TCP | cns_common::PROTO_UDP | cns_common::PROTO_SCTP => {
            u16::from_be(ev.dport)
        }
        _ => 0,
    };
    Some(Observation {
        policy: d.policy,
        flow: FlowKey {
            direction: Direction::from_dir(ev.dir),
            outcome: d.outcome,
            source: peer(src),
            destination: peer(dst),
            protocol: protocol_name(ev.proto).into(),
            port,
        },
        rule: d.rule,
        at,
    })
}

/// RFC 3339 UTC with milliseconds, without a date-time crate.
pub(crate) fn humantime_rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Reads events from the ring buffer pinned in `maps_dir` (`Datapath::maps_dir`) until the
/// task is dropped, handing each to `sinks` (stdout, syslog), `publish` (`monitor` clients)
/// and `on_event` (metrics); none of them blocks.
pub async fn run(
    maps_dir: &Path,
    node_name: String,
    names: watch::Receiver<SharedNames>,
    sinks: sinks::EventSinks,
    publish: broadcast::Sender<Published>,
    rollout: SharedRollout,
    on_event: impl Fn(&Published) + Send,
) -> Result<(), EventsError> {
    let path = maps_dir.join(EVENTS);
    let open_err = |source| EventsError::Open {
        path: path.display().to_string(),
        source,
    };
    let map = MapData::from_pin(&path).map_err(open_err)?;
    let ring = RingBuf::try_from(Map::RingBuf(map)).map_err(open_err)?;
    // SAFETY: the ring buffer owns its map fd and keeps it open and unchanged for as long
    // as it lives, which is as long as the AsyncFd that owns it.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| EventsError::Poll(e.into()))?;
    let offset = monotonic_offset();
    loop {
        let mut guard = fd.readable_mut().await.map_err(EventsError::Poll)?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            let ev: Event = bytemuck::pod_read_unaligned(&item[..std::mem::size_of::<Event>()]);
            let names = names.borrow().clone();
            let (kind, json) = to_json(&ev, &names, &node_name, offset);
            let at = SystemTime::UNIX_EPOCH + offset + Duration::from_nanos(ev.ts_ns);
            if let Some(o) = observation(&ev, &names, at)
                && let Ok(mut r) = rollout.lock()
            {
                r.observe(o);
            }
            let published = Published {
                kind,
                json: Arc::new(json),
            };
            sinks.deliver(&published);
            on_event(&published);
            _ = publish.send(published);
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{names::EndpointName, policy::model::ObjectRef};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            humantime_rfc3339(Duration::from_secs(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            humantime_rfc3339(Duration::from_millis(1_795_737_600_123)),
            "2026-11-27T00:00:00.123Z"
        );
        assert_eq!(
            humantime_rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn a_drop_is_named_and_attributed() {
        let mut names = Names::default();
        names.namespaces.insert(16, "alpha".into());
        names.namespaces.insert(17, "beta".into());
        let server = ObjectRef::new("alpha", "server");
        names
            .pods_by_ip
            .insert(IpAddr::from([10, 0, 1, 10]), server.clone());
        names.pods_by_ip.insert(
            IpAddr::from([10, 0, 2, 10]),
            ObjectRef::new("beta", "client"),
        );
        names.endpoints.insert(
            3,
            EndpointName {
                pod: server,
                addrs: crate::policy::addr::PodAddrs {
                    v4: Some(Ipv4Addr::new(10, 0, 1, 10)),
                    v6: None,
                },
                interface: Some("veth1".into()),
                ingress_policies: vec![ObjectRef::new("alpha", "deny")],
                egress_policies: vec![],
            },
        );
        let ev = Event {
            ts_ns: 5_000_000,
            saddr: [10, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: FAMILY_IPV4,
            sport: 40000u16.to_be(),
            dport: 8080u16.to_be(),
            proto: cns_common::PROTO_TCP,
            dir: DIR_INGRESS,
            verdict: VERDICT_DROPPED,
            reason: REASON_POLICY_DENIED,
            src_ns: 17,
            dst_ns: 16,
            ep_id: 3,
            ..Event::default()
        };
        let (kind, j) = to_json(&ev, &names, "node-1", Duration::ZERO);
        assert_eq!(kind, "drop");
        assert_eq!(j["verdict"], "DROPPED");
        assert_eq!(j["source"]["namespace"], "beta");
        assert_eq!(j["source"]["pod_name"], "client");
        assert_eq!(j["destination"]["pod_name"], "server");
        assert_eq!(j["l4"]["TCP"]["destination_port"], 8080);
        assert_eq!(j["policies"][0], "alpha/deny");
        assert_eq!(j["interface"]["name"], "veth1");
        assert_eq!(j["traffic_direction"], "INGRESS");
        assert_eq!(j["time"], "1970-01-01T00:00:00.005Z");
    }
}
