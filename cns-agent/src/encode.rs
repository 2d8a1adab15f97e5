//! The one place that turns the compiler's domain types into `cns-common` map keys and
//! values: network byte order, big-endian LPM keys, prefix lengths, port ranges as prefixes,
//! and each address into the map of its family (`X` for IPv4, `X6` for IPv6).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use cns_common::{
    DIR_EGRESS, DIR_INGRESS, IDENTITY_CIDR_BASE, IDENTITY_NAMESPACE_BASE, PROTO_ANY,
    maps::{
        ACTION_ACCEPT, ACTION_DENY, ACTION_NONE, ACTION_PASS, CIDR_PREFIX_BASE, CidrKey, CidrKey6,
        DRY_RUN_CAUSE_ISOLATION, DRY_RUN_CAUSE_RULE, DryRunCause, EP_ANY_PROTO_RULES, EP_AUDIT_ON,
        EP_AUDIT_OVERRIDE, EP_DRY_RUN, EP_EGRESS_CIDRS, EP_EGRESS_ISOLATED, EP_EGRESS_NAMESPACES,
        EP_EGRESS_TIERED, EP_EGRESS_WOULD_ISOLATE, EP_INGRESS_CIDRS, EP_INGRESS_ISOLATED,
        EP_INGRESS_NAMESPACES, EP_INGRESS_TIERED, EP_INGRESS_WOULD_ISOLATE, EP_PORT_RANGES,
        EP_PROTO_RULES, Endpoint, Ip6, NO_POLICY, NO_RULE, POLICY_PREFIX_ANY_PROTO,
        POLICY_PREFIX_FULL, POLICY_PREFIX_PROTO, PolicyKey, PolicyValue, Remote,
        dry_run_policy_hash,
    },
};

use crate::{
    map_sizes::MapSizes,
    policy::{
        AuditMode,
        cluster::Action,
        model::{self, Desired, Direction, LocalEndpoint, ObjectRef, RuleKey},
    },
};

/// An LPM trie key as (prefix length in bits, data): ordered, unlike aya's `Key`.
pub type Lpm<K> = (u32, K);

/// The content of every map the agent writes (not conntrack, counters, events or the deny
/// cache, which the programs write). The last two are derived from the others here, so that
/// the diff sees them like any other map and the writer is a plain writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapContents {
    /// By ifindex of the pod's host-side veth.
    pub endpoints: BTreeMap<u32, Endpoint>,
    /// By network-order address.
    pub ipcache: BTreeMap<u32, Remote>,
    pub cidrs: BTreeMap<Lpm<CidrKey>, u32>,
    pub policy: BTreeMap<Lpm<PolicyKey>, PolicyValue>,
    /// `CNS_POLICY_EXACT`: `policy`'s one-port, all-ports and any-protocol entries, for one
    /// hash lookup before the trie.
    pub policy_exact: BTreeMap<PolicyKey, PolicyValue>,
    /// `CNS_LOCAL_IPS`: each endpoint's network-order address -> its ifindex (for XDP).
    pub local_ips: BTreeMap<u32, u32>,
    /// The IPv6 maps: `CNS_IPCACHE6`, `CNS_CIDRS6`, `CNS_LOCAL_IPS6`.
    pub ipcache6: BTreeMap<Ip6, Remote>,
    pub cidrs6: BTreeMap<Lpm<CidrKey6>, u32>,
    pub local_ips6: BTreeMap<Ip6, u32>,
    /// `CNS_DRY_RUN_CAUSES`: each cause of a dry-run difference -> its policy's name hash.
    pub dry_run_causes: BTreeMap<DryRunCause, u64>,
}

impl MapContents {
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.ipcache.len()
            + self.cidrs.len()
            + self.policy.len()
            + self.policy_exact.len()
            + self.local_ips.len()
            + self.ipcache6.len()
            + self.cidrs6.len()
            + self.local_ips6.len()
            + self.dry_run_causes.len()
    }

    /// IP cache entries, both families.
    pub fn ipcache_len(&self) -> usize {
        self.ipcache.len() + self.ipcache6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (map name, entries, capacity) of each agent-owned map, with the maps' `sizes`.
    pub fn usage(&self, sizes: &MapSizes) -> [MapUsage; 6] {
        use crate::map_sizes::SizedMap;
        use cns_common::maps as m;
        [
            (m::ENDPOINTS, self.endpoints.len(), SizedMap::Endpoints),
            (m::IPCACHE, self.ipcache.len(), SizedMap::IpCache),
            (m::CIDRS, self.cidrs.len(), SizedMap::Cidrs),
            (m::POLICY, self.policy.len(), SizedMap::Policy),
            (m::IPCACHE6, self.ipcache6.len(), SizedMap::IpCache),
            (m::CIDRS6, self.cidrs6.len(), SizedMap::Cidrs),
        ]
        .map(|(map, entries, size)| MapUsage::new(map, entries, sizes.get(size)))
    }

    /// A message for each map that cannot hold all of its desired entries.
    pub fn over_capacity(&self, sizes: &MapSizes) -> Vec<String> {
        self.usage(sizes)
            .iter()
            .filter(|u| u.entries > u.capacity as usize)
            .map(|u| {
                format!(
                    "map {} is full: {} entries wanted, capacity {}; entries beyond it are not \
                     written, so the traffic they would allow is dropped (fail closed)",
                    u.map, u.entries, u.capacity
                )
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

impl MapUsage {
    fn new(map: &'static str, entries: usize, capacity: u32) -> Self {
        Self {
            map,
            entries,
            capacity,
        }
    }
}

pub fn addr(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn decode_addr(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr.to_ne_bytes())
}

pub fn addr6(ip: Ipv6Addr) -> Ip6 {
    ip.octets()
}

pub fn dir(d: Direction) -> u8 {
    match d {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

/// The datapath content for `desired`. Endpoints whose veth is not known yet (`ifindexes`
/// has no entry for them) are left out; their rules are written anyway so that they are in
/// place the moment the endpoint appears.
pub fn encode(desired: &Desired, ifindexes: &BTreeMap<ObjectRef, u32>) -> MapContents {
    let mut out = MapContents::default();
    for (ip, remote) in &desired.ipcache {
        out.set_remote(*ip, Some(remote_value(remote)));
    }
    encode_local(desired, ifindexes, &mut out);
    out
}

impl MapContents {
    /// Sets (or with `None` removes) the IP cache entry of `ip` in its family's map.
    fn set_remote(&mut self, ip: IpAddr, remote: Option<Remote>) {
        match (ip, remote) {
            (IpAddr::V4(a), Some(r)) => _ = self.ipcache.insert(addr(a), r),
            (IpAddr::V4(a), None) => _ = self.ipcache.remove(&addr(a)),
            (IpAddr::V6(a), Some(r)) => _ = self.ipcache6.insert(addr6(a), r),
            (IpAddr::V6(a), None) => _ = self.ipcache6.remove(&addr6(a)),
        }
    }
}

/// Brings `out` (what [`encode`] gave for an earlier `Desired`) up to date with `desired`:
/// the IP cache at the addresses `changed` names (all of it when `None`), the local part
/// (endpoints, partitions, rules: one node's) in full. Returns how many entries it encoded.
pub fn update(
    out: &mut MapContents,
    desired: &Desired,
    ifindexes: &BTreeMap<ObjectRef, u32>,
    changed: Option<&BTreeSet<IpAddr>>,
) -> usize {
    let Some(changed) = changed else {
        *out = encode(desired, ifindexes);
        return out.len();
    };
    for ip in changed {
        out.set_remote(*ip, desired.ipcache.get(ip).map(remote_value));
    }
    let ipcache = out.ipcache_len();
    out.endpoints.clear();
    out.cidrs.clear();
    out.cidrs6.clear();
    out.policy.clear();
    out.policy_exact.clear();
    out.local_ips.clear();
    out.local_ips6.clear();
    encode_local(desired, ifindexes, out);
    changed.len() + out.len() - ipcache
}

fn remote_value(remote: &model::RemoteInfo) -> Remote {
    Remote {
        identity: remote.identity,
        ns_id: remote.ns_id,
        _pad: 0,
    }
}

/// The endpoints, partitions and rules of `desired` into `out` (empty in those maps).
fn encode_local(desired: &Desired, ifindexes: &BTreeMap<ObjectRef, u32>, out: &mut MapContents) {
    for (pod, ep) in &desired.endpoints {
        if let Some(&ifindex) = ifindexes.get(pod) {
            out.endpoints.insert(ifindex, endpoint(ep));
        }
    }
    for (key, identity) in &desired.cidrs {
        let len = CIDR_PREFIX_BASE + u32::from(key.net.prefix());
        let (ep_id, dir) = (key.ep_id.to_be_bytes(), dir(key.dir));
        match key.net.network() {
            IpAddr::V4(a) => {
                let data = CidrKey {
                    ep_id,
                    dir,
                    _pad: [0; 3],
                    addr: a.octets(),
                };
                out.cidrs.insert((len, data), *identity);
            }
            IpAddr::V6(a) => {
                let data = CidrKey6 {
                    ep_id,
                    dir,
                    _pad: [0; 3],
                    addr: a.octets(),
                };
                out.cidrs6.insert((len, data), *identity);
            }
        }
    }
    for (rule, value) in &desired.rules {
        for key in policy_keys(rule) {
            out.policy
                .entry(key)
                .and_modify(|v| *v = v.merge(&policy_value(value)))
                .or_insert(policy_value(value));
        }
    }
    // Which kinds of entries each endpoint has, so the datapath looks up only those: all
    // ports of a protocol, any protocol (hash), port ranges (trie).
    let mut kinds: BTreeMap<[u8; 4], u16> = BTreeMap::new();
    for (len, k) in out.policy.keys() {
        let flag = match *len {
            POLICY_PREFIX_FULL => 0,
            POLICY_PREFIX_PROTO => EP_PROTO_RULES,
            POLICY_PREFIX_ANY_PROTO => EP_ANY_PROTO_RULES,
            _ => EP_PORT_RANGES,
        };
        let identity = u32::from_be_bytes(k.identity);
        let namespaces = (IDENTITY_NAMESPACE_BASE..IDENTITY_CIDR_BASE).contains(&identity);
        let by_dir = |ingress, egress| {
            if k.dir == DIR_INGRESS {
                ingress
            } else {
                egress
            }
        };
        let dimension = if namespaces {
            by_dir(EP_INGRESS_NAMESPACES, EP_EGRESS_NAMESPACES)
        } else if identity >= IDENTITY_CIDR_BASE {
            by_dir(EP_INGRESS_CIDRS, EP_EGRESS_CIDRS)
        } else {
            0
        };
        *kinds.entry(k.ep_id).or_default() |= flag | dimension;
    }
    for ep in out.endpoints.values_mut() {
        ep.flags |= kinds.get(&ep.ep_id.to_be_bytes()).copied().unwrap_or(0);
    }
    out.policy_exact = out
        .policy
        .iter()
        .filter(|((len, _), _)| in_policy_exact(*len))
        .map(|((_, k), v)| (*k, *v))
        .collect();
    out.local_ips = out
        .endpoints
        .iter()
        .filter(|(_, ep)| ep.ip != 0)
        .map(|(ifindex, ep)| (ep.ip, *ifindex))
        .collect();
    out.local_ips6 = out
        .endpoints
        .iter()
        .filter(|(_, ep)| ep.ip6 != [0; 16])
        .map(|(ifindex, ep)| (ep.ip6, *ifindex))
        .collect();
    out.dry_run_causes = desired
        .dry_run_causes
        .iter()
        .map(|(cause, name)| (dry_run_cause(*cause), dry_run_policy_hash(name.as_bytes())))
        .collect();
}

/// A cause of a dry-run difference as the datapath keys it.
pub fn dry_run_cause(cause: model::DryRunCause) -> DryRunCause {
    match cause {
        model::DryRunCause::Rule(id) => DryRunCause {
            kind: DRY_RUN_CAUSE_RULE,
            dir: 0,
            _pad: [0; 2],
            id,
        },
        model::DryRunCause::Isolation(ep_id, d) => DryRunCause {
            kind: DRY_RUN_CAUSE_ISOLATION,
            dir: dir(d),
            _pad: [0; 2],
            id: ep_id,
        },
    }
}

/// Whether a policy entry of this prefix length is also in `CNS_POLICY_EXACT` (one port, all
/// ports of a protocol, any protocol); port ranges are in the trie only.
pub fn in_policy_exact(prefix_len: u32) -> bool {
    matches!(
        prefix_len,
        POLICY_PREFIX_FULL | POLICY_PREFIX_PROTO | POLICY_PREFIX_ANY_PROTO
    )
}

pub fn endpoint(ep: &LocalEndpoint) -> Endpoint {
    let mut flags = 0;
    if ep.ingress_tiered {
        flags |= EP_INGRESS_TIERED;
    }
    if ep.egress_tiered {
        flags |= EP_EGRESS_TIERED;
    }
    if ep.ingress_isolated {
        flags |= EP_INGRESS_ISOLATED;
    }
    if ep.egress_isolated {
        flags |= EP_EGRESS_ISOLATED;
    }
    if ep.dry_run {
        flags |= EP_DRY_RUN;
    }
    if ep.ingress_would_isolate {
        flags |= EP_INGRESS_WOULD_ISOLATE;
    }
    if ep.egress_would_isolate {
        flags |= EP_EGRESS_WOULD_ISOLATE;
    }
    match ep.audit_override {
        Some(AuditMode::Audit) => flags |= EP_AUDIT_OVERRIDE | EP_AUDIT_ON,
        Some(AuditMode::Blocking) => flags |= EP_AUDIT_OVERRIDE,
        None => {}
    }
    Endpoint {
        ep_id: ep.ep_id,
        ip: ep.addrs.v4.map_or(0, addr),
        identity: ep.identity,
        ns_id: ep.ns_id,
        flags,
        ip6: ep.addrs.v6.map_or([0; 16], addr6),
    }
}

/// A rule's value as the datapath holds it.
pub fn policy_value(v: &model::RuleValue) -> PolicyValue {
    let tier = |t: Option<model::TierRule>| match t {
        Some(t) => (t.rank, action(t.action)),
        None => (NO_RULE, ACTION_NONE),
    };
    let (admin, admin_action) = tier(v.admin);
    let (baseline, baseline_action) = tier(v.baseline);
    let w = v.would_view();
    let (would_admin, would_admin_action) = tier(w.admin);
    let (would_baseline, would_baseline_action) = tier(w.baseline);
    PolicyValue {
        policy_id: v.allow.unwrap_or(NO_POLICY),
        admin,
        baseline,
        admin_action,
        baseline_action,
        includes: v.includes,
        _pad: 0,
        would_policy_id: w.allow.unwrap_or(NO_POLICY),
        would_admin,
        would_baseline,
        would_admin_action,
        would_baseline_action,
        _pad2: [0; 2],
    }
}

/// The inverse of [`policy_value`] (what a map entry says).
pub fn rule_value(v: &PolicyValue) -> model::RuleValue {
    let tier = |rank: u32, a: u8| {
        let action = match a {
            ACTION_ACCEPT => Action::Accept,
            ACTION_DENY => Action::Deny,
            ACTION_PASS => Action::Pass,
            _ => return None,
        };
        (rank != NO_RULE).then_some(model::TierRule { rank, action })
    };
    let view = |v: &PolicyValue| model::Verdicts {
        admin: tier(v.admin, v.admin_action),
        allow: (v.policy_id != NO_POLICY).then_some(v.policy_id),
        baseline: tier(v.baseline, v.baseline_action),
    };
    let (enforced, would) = (view(v), view(&v.would()));
    model::RuleValue {
        admin: enforced.admin,
        allow: enforced.allow,
        baseline: enforced.baseline,
        includes: v.includes,
        would: (would != enforced).then_some(would),
    }
}

fn action(a: Action) -> u8 {
    match a {
        Action::Accept => ACTION_ACCEPT,
        Action::Deny => ACTION_DENY,
        Action::Pass => ACTION_PASS,
    }
}

/// The LPM keys of one rule: one key for "any protocol" or "any port", a few prefixes for
/// a port range.
pub fn policy_keys(rule: &RuleKey) -> Vec<Lpm<PolicyKey>> {
    let key = |proto: u8, port: u16| PolicyKey {
        ep_id: rule.ep_id.to_be_bytes(),
        identity: rule.identity.to_be_bytes(),
        dir: dir(rule.dir),
        proto,
        port: port.to_be_bytes(),
    };
    match (rule.ports.proto, rule.ports.ports) {
        (None, _) => vec![(POLICY_PREFIX_ANY_PROTO, key(PROTO_ANY, 0))],
        (Some(p), None) => vec![(POLICY_PREFIX_PROTO, key(p.number(), 0))],
        (Some(p), Some(range)) => port_prefixes(range)
            .into_iter()
            .map(|(port, bits)| (POLICY_PREFIX_PROTO + bits, key(p.number(), port)))
            .collect(),
    }
}

/// Splits an inclusive port range into (first port, prefix bits) blocks: at most 30.
pub fn port_prefixes(range: model::PortRange) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(range.start), u32::from(range.end));
    while start <= end {
        // The largest aligned block starting at `start` that stays within the range.
        let mut size_log2 = 0;
        while size_log2 < 16 {
            let next = 1u32 << (size_log2 + 1);
            if start % next != 0 || start + next - 1 > end {
                break;
            }
            size_log2 += 1;
        }
        out.push((start as u16, 16 - size_log2));
        start += 1 << size_log2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::PortRange;

    fn covers(prefixes: &[(u16, u32)], port: u16) -> bool {
        prefixes.iter().any(|&(p, bits)| {
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            port & mask == p & mask
        })
    }

    #[test]
    fn single_port_is_one_full_prefix() {
        assert_eq!(
            port_prefixes(PortRange { start: 80, end: 80 }),
            vec![(80, 16)]
        );
    }

    #[test]
    fn whole_range_is_one_empty_prefix() {
        assert_eq!(
            port_prefixes(PortRange {
                start: 0,
                end: 65535
            }),
            vec![(0, 0)]
        );
    }

    #[test]
    fn ranges_cover_exactly_their_ports() {
        for (start, end) in [
            (1, 65535),
            (1000, 2000),
            (32000, 32768),
            (7, 9),
            (65535, 65535),
        ] {
            let prefixes = port_prefixes(PortRange { start, end });
            assert!(
                prefixes.len() <= 30,
                "{start}-{end}: {} prefixes",
                prefixes.len()
            );
            for port in [
                0,
                1,
                start.saturating_sub(1),
                start,
                end,
                end.saturating_add(1),
                65535,
            ] {
                let inside = (start..=end).contains(&port);
                assert_eq!(covers(&prefixes, port), inside, "{start}-{end} port {port}");
            }
        }
    }

    #[test]
    fn capacity_is_the_configured_size() {
        let mut c = MapContents::default();
        for port in 0..301u16 {
            let key = PolicyKey {
                port: port.to_be_bytes(),
                ..PolicyKey::default()
            };
            c.policy.insert((96, key), PolicyValue::default());
        }
        let defaults = MapSizes::default();
        assert!(c.over_capacity(&defaults).is_empty());
        let small: MapSizes = "policy=300".parse().unwrap();
        let usage = c.usage(&small);
        assert_eq!(
            usage[3],
            MapUsage::new(cns_common::maps::POLICY, 301, 300),
            "{usage:?}"
        );
        assert_eq!(
            c.over_capacity(&small),
            [
                "map CNS_POLICY is full: 301 entries wanted, capacity 300; entries beyond it are \
              not written, so the traffic they would allow is dropped (fail closed)"
            ]
        );
    }

    #[test]
    fn addresses_are_network_order() {
        let a = addr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(decode_addr(a), Ipv4Addr::new(10, 0, 0, 1));
    }
}
