//! ClusterNetworkPolicy tiers in the kernel programs, on crafted packets through
//! `BPF_PROG_TEST_RUN` (TC both ways, XDP): what each tier decides and in which order
//! (`cns_common::maps::resolve_merged`), which lookup found the deciding rule (the remote's
//! identity, its namespace, its address set), longest-match order of the policy lookups
//! (exact port, port range, protocol, any protocol), audit mode, the events and the XDP deny
//! cache naming the rule.
//!
//! The pods, namespaces and IP cache come from manifests through the agent's pipeline
//! (`cns_tests::kernel`); most tests then write the policy entries themselves into the
//! compiled `Desired` (as the compiler leaves them: the longest match for a packet holds
//! everything every tier says of it), so that each case names the lookup and the entry it
//! exercises; [`compiled_cluster_policies`] takes ClusterNetworkPolicy manifests through the
//! compiler instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cns_agent::{
    datapath::{PROG_FROM_POD, PROG_TO_POD, PROG_XDP, XDP_DROP, XDP_PASS},
    policy::{
        cluster::{Action, Tier},
        model::{
            CidrKey, Direction, ObjectRef, PortMatch, PortRange, Protocol, RuleKey, RuleValue,
            TierRule,
        },
    },
};
use cns_common::{
    IDENTITY_CIDR_BASE, IDENTITY_NAMESPACE_BASE, REASON_ADMIN_DENIED, REASON_BASELINE_DENIED,
    REASON_FRAGMENT, REASON_POLICY_ALLOWED, REASON_POLICY_DENIED, REASON_SPOOFED, VERDICT_AUDIT,
    VERDICT_DROPPED, VERDICT_FORWARDED,
    maps::{
        self as m, CONFIG_POLICY_VERDICT_EVENTS, Config, DenyEntry, DenyKey, DenyKey6, Event,
        INCLUDES_ADDRESS, INCLUDES_NAMESPACE, NO_POLICY, RULE_ADMIN, RULE_BASELINE,
        STAT_XDP_DROPPED,
    },
};
use cns_tests::{
    kernel::{self, Loaded},
    kernel_or_skip,
    packets::{self, SYN, TCP, UDP},
};

const PASS: i32 = -1;
const DROP: i32 = 2;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 10);
/// The node's own address (identity host).
const NODE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// The pod of subnet `n` (fd00:10:244:n::a).
const fn v6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, n, 0, 0, 0, 0xa)
}

/// `a/server` is local (the test run's device, ifindex 1); `b/client` and `c/other` are on
/// another node. No NetworkPolicy: the tests write the entries.
const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: a, labels: {app: server}}
spec:
  nodeName: node-1
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: 'fd00:10:244:1::a'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec:
  nodeName: node-2
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.2.10, podIPs: [{ip: 10.0.2.10}, {ip: 'fd00:10:244:2::a'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: c, labels: {app: other}}
spec:
  nodeName: node-2
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.3.10, podIPs: [{ip: 10.0.3.10}, {ip: 'fd00:10:244:3::a'}]}
";

/// The datapath with the manifests' pods, and the events it reports.
struct Fixture {
    f: Loaded,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    audit: bool,
    revision: u32,
}

/// Which lookup of a packet an entry is for.
#[derive(Clone, Copy)]
enum Remote {
    /// The pod's identity.
    Pod(IpAddr),
    /// Its namespace (`IDENTITY_NAMESPACE_BASE | ns id`).
    Namespace(IpAddr),
    /// An address set: `IDENTITY_CIDR_BASE + n`, see [`Fixture::address_set`].
    Set(u32),
}

impl Fixture {
    fn new(audit: bool) -> Self {
        Self::with(kernel::load_on_node(
            "cns-tiers-",
            MANIFESTS,
            &[("a", "server", 1)],
            audit,
            &[NODE.into()],
        ))
        .audit(audit)
    }

    fn with(f: Loaded) -> Self {
        let path = f.dp.maps_dir().join(m::EVENTS);
        let ring = aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(
            aya::maps::MapData::from_pin(&path).expect("open the pinned ring buffer"),
        ))
        .expect("ring buffer");
        let mut fixture = Self {
            f,
            ring,
            audit: false,
            revision: 1,
        };
        fixture.events();
        fixture
    }

    /// Sets the mode, with a new revision (conntrack and deny cache entries are re-decided)
    /// and every event on (the drops', and those of flows a rule allows).
    fn audit(mut self, audit: bool) -> Self {
        self.audit = audit;
        self.bump();
        self
    }

    fn bump(&mut self) {
        self.revision += 1;
        self.f
            .dp
            .set_config(&Config {
                audit_mode: u32::from(self.audit),
                revision: self.revision,
                event_rate: 1000,
                event_burst: 1000,
                flags: CONFIG_POLICY_VERDICT_EVENTS,
                hz: 0,
            })
            .expect("config");
    }

    fn ep_id(&self) -> u32 {
        self.f.desired.endpoints[&server()].ep_id
    }

    fn identity(&self, remote: Remote) -> u32 {
        let info = |ip: IpAddr| self.f.desired.ipcache[&ip];
        match remote {
            Remote::Pod(ip) => info(ip).identity,
            Remote::Namespace(ip) => IDENTITY_NAMESPACE_BASE | u32::from(info(ip).ns_id),
            Remote::Set(n) => IDENTITY_CIDR_BASE + n,
        }
    }

    /// The server's isolation and tiers, in this order: ingress isolated, egress isolated,
    /// ingress tiered, egress tiered. Takes effect with [`Fixture::write`].
    fn server(&mut self, flags: [bool; 4]) {
        let ep = self.f.desired.endpoints.get_mut(&server()).expect("server");
        [
            ep.ingress_isolated,
            ep.egress_isolated,
            ep.ingress_tiered,
            ep.egress_tiered,
        ] = flags;
    }

    /// Address set `n` of the server in `dir` holds `nets`.
    fn address_set(&mut self, dir: Direction, n: u32, nets: &[&str]) {
        let ep_id = self.ep_id();
        for net in nets {
            let key = CidrKey {
                ep_id,
                dir,
                net: net.parse().expect("network"),
            };
            self.f.desired.cidrs.insert(key, IDENTITY_CIDR_BASE + n);
        }
    }

    /// The server's entry in `dir` for `remote` on `ports`.
    fn entry(&mut self, dir: Direction, remote: Remote, ports: PortMatch, value: RuleValue) {
        let key = RuleKey {
            ep_id: self.ep_id(),
            dir,
            identity: self.identity(remote),
            ports,
        };
        self.f.desired.rules.insert(key, value);
    }

    fn clear(&mut self) {
        self.f.desired.rules.clear();
        self.f.desired.cidrs.clear();
    }

    /// Writes the desired state the agent's way, then bumps the revision.
    fn write(&mut self) {
        self.f.resync();
        self.bump();
    }

    /// Writes without the revision bump the agent always does after writing.
    fn write_quietly(&mut self) {
        self.f.resync();
    }

    fn events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            assert!(item.len() >= size_of::<Event>());
            // SAFETY: the programs write whole `Event`s.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        events
    }

    fn counters(&self) -> std::collections::BTreeMap<m::CounterKey, u64> {
        self.f
            .dp
            .counters()
            .expect("counters")
            .into_iter()
            .map(|(k, c)| (k, c.packets))
            .collect()
    }

    /// Runs `program` on `pkt`.
    fn run(&mut self, program: &'static str, pkt: &[u8]) -> Ran {
        let before = self.counters();
        let ret = self.f.dp.test_run(program, pkt).expect("test run");
        let mut counted = Vec::new();
        for (k, packets) in self.counters() {
            for _ in before.get(&k).copied().unwrap_or(0)..packets {
                counted.push((k.verdict, k.reason));
            }
        }
        let events = self
            .events()
            .iter()
            .map(|e| (e.verdict, e.reason, e.policy_id))
            .collect();
        Ran {
            ret,
            counted,
            events,
        }
    }

    fn deny_cache(&self, src: IpAddr, dst: IpAddr, dport: u16) -> Option<DenyEntry> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let map = self.map::<DenyKey>(m::DENY_CACHE);
                let key = DenyKey {
                    saddr: u32::from_ne_bytes(s.octets()),
                    daddr: u32::from_ne_bytes(d.octets()),
                    dport: dport.to_be(),
                    proto: TCP,
                    _pad: 0,
                };
                map.get(&key, 0).ok()
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let map = self.map::<DenyKey6>(m::DENY_CACHE6);
                let key = DenyKey6 {
                    saddr: s.octets(),
                    daddr: d.octets(),
                    dport: dport.to_be(),
                    proto: TCP,
                    _pad: 0,
                };
                map.get(&key, 0).ok()
            }
            _ => unreachable!("one family per flow"),
        }
    }

    fn map<K: aya::Pod>(&self, name: &str) -> aya::maps::HashMap<aya::maps::MapData, K, DenyEntry> {
        let data =
            aya::maps::MapData::from_pin(cns_agent::paths::pinned_map(&self.f.pin_dir, name))
                .expect("open the pinned deny cache");
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("deny cache")
    }
}

fn server() -> ObjectRef {
    ObjectRef::new("a", "server")
}

/// What one run did: the program's verdict, what it counted (verdict, reason) and the
/// events it sent (verdict, reason, policy id).
#[derive(Debug, PartialEq, Eq)]
struct Ran {
    ret: i32,
    counted: Vec<(u8, u8)>,
    events: Vec<(u8, u8, u32)>,
}

/// TC dropped it for `reason`, naming `policy`.
fn dropped(reason: u8, policy: u32) -> Ran {
    Ran {
        ret: DROP,
        counted: vec![(VERDICT_DROPPED, reason)],
        events: vec![(VERDICT_DROPPED, reason, policy)],
    }
}

/// TC let it through in audit mode: it would have been dropped for `reason`.
fn audited(reason: u8, policy: u32) -> Ran {
    Ran {
        ret: PASS,
        counted: vec![(VERDICT_AUDIT, reason)],
        events: vec![(VERDICT_AUDIT, reason, policy)],
    }
}

/// TC passed it, allowed by `policy` (a NetworkPolicy or a ClusterNetworkPolicy rule).
fn allowed(policy: u32) -> Ran {
    Ran {
        ret: PASS,
        counted: vec![(VERDICT_FORWARDED, 0)],
        events: vec![(VERDICT_FORWARDED, REASON_POLICY_ALLOWED, policy)],
    }
}

/// TC passed it, no rule deciding (not isolated, from the node): no event.
fn passed() -> Ran {
    Ran {
        ret: PASS,
        counted: vec![(VERDICT_FORWARDED, 0)],
        events: vec![],
    }
}

fn admin(rank: u32, action: Action) -> RuleValue {
    RuleValue {
        admin: Some(TierRule { rank, action }),
        ..RuleValue::default()
    }
}

fn baseline(rank: u32, action: Action) -> RuleValue {
    RuleValue {
        baseline: Some(TierRule { rank, action }),
        ..RuleValue::default()
    }
}

fn tcp(start: u16, end: u16) -> PortMatch {
    PortMatch {
        proto: Some(Protocol::Tcp),
        ports: Some(PortRange { start, end }),
    }
}

fn port(port: u16) -> PortMatch {
    tcp(port, port)
}

const ALL_TCP: PortMatch = PortMatch {
    proto: Some(Protocol::Tcp),
    ports: None,
};
const ANY: PortMatch = PortMatch {
    proto: None,
    ports: None,
};

const fn admin_id(rank: u32) -> u32 {
    RULE_ADMIN | rank
}

const fn baseline_id(rank: u32) -> u32 {
    RULE_BASELINE | rank
}

use Action::{Accept, Deny, Pass};
use Direction::{Egress, Ingress};

/// One address family's addresses for the tests' pods.
#[derive(Clone, Copy)]
struct Family {
    server: IpAddr,
    client: IpAddr,
    other: IpAddr,
}

const V4: Family = Family {
    server: IpAddr::V4(SERVER),
    client: IpAddr::V4(CLIENT),
    other: IpAddr::V4(OTHER),
};
const V6: Family = Family {
    server: IpAddr::V6(v6(1)),
    client: IpAddr::V6(v6(2)),
    other: IpAddr::V6(v6(3)),
};
const FAMILIES: [(&str, Family); 2] = [("IPv4", V4), ("IPv6", V6)];

/// A frame from `src` to `dst`: TCP SYN, or UDP, with these ports.
fn frame(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = if proto == TCP {
        packets::tcp(sport, dport, SYN)
    } else {
        packets::ports(sport, dport, 4)
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            packets::ipv4(s.octets(), d.octets(), proto, 1, 0, 0, &l4)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => packets::ipv6(s.octets(), d.octets(), &[], proto, &l4),
        _ => unreachable!("one family per flow"),
    }
}

/// A new TCP flow's first packet (each call a new source port: no conntrack entry applies).
fn syn(src: IpAddr, dst: IpAddr, dport: u16) -> Vec<u8> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static SPORT: AtomicU16 = AtomicU16::new(20000);
    frame(src, dst, TCP, SPORT.fetch_add(1, Ordering::Relaxed), dport)
}

#[test]
fn admin_deny_beats_a_networkpolicy_allow() {
    if !kernel_or_skip("tiers: admin deny") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, true, true, true]);
    let client = Remote::Pod(V4.client);
    let denied = |rank, np| RuleValue {
        allow: Some(np),
        ..admin(rank, Deny)
    };
    t.entry(Ingress, client, port(80), denied(3, 1));
    t.entry(Ingress, client, port(81), RuleValue::allow(1));
    t.entry(Egress, client, port(80), denied(4, 2));
    t.write();
    for (family, a) in FAMILIES {
        let to_pod = |t: &mut Fixture, port| t.run(PROG_TO_POD, &syn(a.client, a.server, port));
        assert_eq!(
            to_pod(&mut t, 80),
            dropped(REASON_ADMIN_DENIED, admin_id(3)),
            "{family}"
        );
        assert_eq!(to_pod(&mut t, 81), allowed(1), "{family}");
        assert_eq!(
            to_pod(&mut t, 82),
            dropped(REASON_POLICY_DENIED, NO_POLICY),
            "{family}"
        );
        assert_eq!(
            t.run(PROG_FROM_POD, &syn(a.server, a.client, 80)),
            dropped(REASON_ADMIN_DENIED, admin_id(4)),
            "{family} egress"
        );
    }
}

#[test]
fn admin_accept_admits_what_no_networkpolicy_allows() {
    if !kernel_or_skip("tiers: admin accept") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, true, true, false]);
    t.entry(Ingress, Remote::Pod(V4.client), port(80), admin(2, Accept));
    t.write();
    let a = V4;
    assert_eq!(
        t.run(PROG_TO_POD, &syn(a.client, a.server, 80)),
        allowed(admin_id(2))
    );
    for (src, port) in [(a.client, 81), (a.other, 80)] {
        assert_eq!(
            t.run(PROG_TO_POD, &syn(src, a.server, port)),
            dropped(REASON_POLICY_DENIED, NO_POLICY),
            "{src} {port}"
        );
    }
    // Egress is isolated and not tiered: NetworkPolicy alone (nothing allows).
    assert_eq!(
        t.run(PROG_FROM_POD, &syn(a.server, a.client, 80)),
        dropped(REASON_POLICY_DENIED, NO_POLICY)
    );
}

#[test]
fn admin_pass_goes_to_networkpolicy_when_isolated_and_to_baseline_when_not() {
    if !kernel_or_skip("tiers: pass") {
        return;
    }
    let mut t = Fixture::new(false);
    let client = Remote::Pod(V4.client);
    let pass_then = |np: Option<u32>, baseline_action| RuleValue {
        allow: np,
        ..RuleValue {
            baseline: Some(TierRule {
                rank: 0,
                action: baseline_action,
            }),
            ..admin(1, Pass)
        }
    };
    t.entry(Ingress, client, port(80), pass_then(None, Deny));
    t.entry(Ingress, client, port(81), pass_then(Some(5), Deny));
    t.entry(Ingress, client, port(82), pass_then(None, Accept));
    t.entry(Ingress, client, port(83), baseline(7, Deny));
    t.entry(Egress, client, port(9090), baseline(3, Deny));

    // Isolated: NetworkPolicy decides what the Admin tier passes; Baseline is never reached.
    t.server([true, true, true, true]);
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod = |port| t.run(PROG_TO_POD, &syn(a.client, a.server, port));
        let np_denied = dropped(REASON_POLICY_DENIED, NO_POLICY);
        assert_eq!(to_pod(80), np_denied, "{family} pass, nothing allows");
        assert_eq!(
            to_pod(81),
            allowed(5),
            "{family} pass, a NetworkPolicy allows"
        );
        assert_eq!(to_pod(82), np_denied, "{family} Baseline Accept ignored");
        assert_eq!(to_pod(83), np_denied, "{family} Baseline Deny ignored");
        assert_eq!(
            t.run(PROG_FROM_POD, &syn(a.server, a.client, 9090)),
            np_denied,
            "{family} egress"
        );
    }

    // Not isolated: Baseline decides what the Admin tier passes; without a rule, allowed.
    t.server([false, false, true, true]);
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod = |port| t.run(PROG_TO_POD, &syn(a.client, a.server, port));
        assert_eq!(
            to_pod(80),
            dropped(REASON_BASELINE_DENIED, baseline_id(0)),
            "{family} pass, Baseline Deny"
        );
        assert_eq!(
            to_pod(82),
            allowed(baseline_id(0)),
            "{family} pass, Baseline Accept"
        );
        assert_eq!(
            to_pod(83),
            dropped(REASON_BASELINE_DENIED, baseline_id(7)),
            "{family} Baseline Deny"
        );
        assert_eq!(to_pod(84), passed(), "{family} no rule");
        assert_eq!(
            t.run(PROG_TO_POD, &syn(a.other, a.server, 80)),
            passed(),
            "{family} no entry"
        );
        assert_eq!(
            t.run(PROG_FROM_POD, &syn(a.server, a.client, 9090)),
            dropped(REASON_BASELINE_DENIED, baseline_id(3)),
            "{family} egress Baseline Deny"
        );
        assert_eq!(
            t.run(PROG_FROM_POD, &syn(a.server, a.client, 9091)),
            passed(),
            "{family} egress"
        );
    }
}

#[test]
fn the_earlier_admin_rule_decides_whichever_lookup_found_it() {
    if !kernel_or_skip("tiers: lookups") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, false, true, false]);
    t.address_set(Ingress, 0, &["10.0.2.0/24", "fd00:10:244:2::/64"]);
    let (pod, ns, set) = (
        Remote::Pod(V4.client),
        Remote::Namespace(V4.client),
        Remote::Set(0),
    );
    for (p, by_pod, by_set) in [
        (80, admin(5, Deny), admin(2, Accept)),
        (81, admin(2, Accept), admin(5, Deny)),
        (82, admin(2, Deny), admin(5, Accept)),
        (83, admin(7, Accept), admin(1, Deny)),
        (
            84,
            RuleValue {
                allow: Some(3),
                ..admin(1, Pass)
            },
            admin(2, Deny),
        ),
        (85, RuleValue::default(), RuleValue::allow(4)),
    ] {
        if by_pod != RuleValue::default() {
            t.entry(Ingress, pod, port(p), by_pod);
        }
        t.entry(Ingress, set, port(p), by_set);
    }
    t.entry(Ingress, pod, port(86), admin(6, Accept));
    t.entry(Ingress, ns, port(86), admin(3, Deny));
    // An entry that already holds what the namespace's and the address set's entries say
    // (as the compiler folds them): those lookups are skipped.
    t.entry(
        Ingress,
        pod,
        port(87),
        RuleValue {
            allow: Some(1),
            includes: INCLUDES_NAMESPACE | INCLUDES_ADDRESS,
            ..admin(9, Pass)
        },
    );
    t.entry(Ingress, ns, port(87), admin(3, Deny));
    t.entry(Ingress, set, port(87), admin(2, Deny));
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod = |port| t.run(PROG_TO_POD, &syn(a.client, a.server, port));
        assert_eq!(
            to_pod(80),
            allowed(admin_id(2)),
            "{family} set's Accept first"
        );
        assert_eq!(
            to_pod(81),
            allowed(admin_id(2)),
            "{family} pod's Accept first"
        );
        assert_eq!(
            to_pod(82),
            dropped(REASON_ADMIN_DENIED, admin_id(2)),
            "{family} pod's Deny first"
        );
        assert_eq!(
            to_pod(83),
            dropped(REASON_ADMIN_DENIED, admin_id(1)),
            "{family} set's Deny first"
        );
        assert_eq!(to_pod(84), allowed(3), "{family} pod's Pass first");
        assert_eq!(to_pod(85), allowed(4), "{family} the set's NetworkPolicy");
        assert_eq!(
            to_pod(86),
            dropped(REASON_ADMIN_DENIED, admin_id(3)),
            "{family} namespace's Deny first"
        );
        assert_eq!(to_pod(87), allowed(1), "{family} included lookups skipped");
        // Not in the set, not in the namespace, no entry of its own.
        assert_eq!(
            t.run(PROG_TO_POD, &syn(a.other, a.server, 80)),
            dropped(REASON_POLICY_DENIED, NO_POLICY),
            "{family} other"
        );
    }
}

#[test]
fn lookups_take_the_longest_match() {
    if !kernel_or_skip("tiers: longest match") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, false, true, false]);
    // As the compiler leaves overlapping rules: each more specific entry holds the first
    // rule of everything that covers it.
    let client = Remote::Pod(V4.client);
    t.entry(Ingress, client, ANY, admin(20, Accept));
    t.entry(Ingress, client, ALL_TCP, admin(9, Deny));
    t.entry(Ingress, client, tcp(8000, 8100), admin(1, Accept));
    t.entry(Ingress, client, port(8080), admin(0, Deny));
    let other = Remote::Pod(V4.other);
    t.entry(Ingress, other, ALL_TCP, admin(9, Accept));
    t.entry(Ingress, other, tcp(8000, 8100), admin(1, Deny));
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod =
            |src, proto, port| t.run(PROG_TO_POD, &frame(src, a.server, proto, 30000, port));
        assert_eq!(
            to_pod(a.client, TCP, 8050),
            allowed(admin_id(1)),
            "{family} the range, not all of TCP"
        );
        assert_eq!(
            to_pod(a.client, TCP, 8080),
            dropped(REASON_ADMIN_DENIED, admin_id(0)),
            "{family} the port, not the range"
        );
        assert_eq!(
            to_pod(a.client, TCP, 9000),
            dropped(REASON_ADMIN_DENIED, admin_id(9)),
            "{family} all of TCP, not any protocol"
        );
        assert_eq!(
            to_pod(a.client, UDP, 53),
            allowed(admin_id(20)),
            "{family} any protocol"
        );
        assert_eq!(
            to_pod(a.other, TCP, 8050),
            dropped(REASON_ADMIN_DENIED, admin_id(1)),
            "{family} the range's Deny"
        );
        assert_eq!(
            to_pod(a.other, TCP, 9000),
            allowed(admin_id(9)),
            "{family} all of TCP's Accept"
        );
    }

    // Without port ranges the protocol-wide and any-protocol entries come from the hash:
    // the protocol's before any protocol's.
    t.clear();
    t.entry(Ingress, client, ANY, admin(20, Accept));
    t.entry(Ingress, client, ALL_TCP, admin(9, Deny));
    t.entry(Ingress, client, port(8080), admin(0, Accept));
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod =
            |proto, port| t.run(PROG_TO_POD, &frame(a.client, a.server, proto, 30001, port));
        assert_eq!(to_pod(TCP, 8080), allowed(admin_id(0)), "{family}");
        assert_eq!(
            to_pod(TCP, 8050),
            dropped(REASON_ADMIN_DENIED, admin_id(9)),
            "{family}"
        );
        assert_eq!(to_pod(UDP, 8050), allowed(admin_id(20)), "{family}");
    }
}

#[test]
fn audit_mode_turns_tier_denies_into_audit() {
    if !kernel_or_skip("tiers: audit") {
        return;
    }
    let mut t = Fixture::new(true);
    t.server([true, false, true, true]);
    let client = Remote::Pod(V4.client);
    t.entry(
        Ingress,
        client,
        port(80),
        RuleValue {
            allow: Some(1),
            ..admin(3, Deny)
        },
    );
    t.entry(Ingress, client, port(81), admin(2, Accept));
    t.entry(Egress, client, port(9090), baseline(4, Deny));
    t.write();
    for (family, a) in FAMILIES {
        let mut to_pod = |port| t.run(PROG_TO_POD, &syn(a.client, a.server, port));
        assert_eq!(
            to_pod(80),
            audited(REASON_ADMIN_DENIED, admin_id(3)),
            "{family}"
        );
        assert_eq!(to_pod(81), allowed(admin_id(2)), "{family}");
        assert_eq!(
            to_pod(82),
            audited(REASON_POLICY_DENIED, NO_POLICY),
            "{family}"
        );
        assert_eq!(
            t.run(PROG_FROM_POD, &syn(a.server, a.client, 9090)),
            audited(REASON_BASELINE_DENIED, baseline_id(4)),
            "{family} egress"
        );
    }
    // XDP agrees: passes the audited packet, creates no deny cache entry.
    let (src, dst) = (V4.client, V4.server);
    let ran = t.run(PROG_XDP, &syn(src, dst, 80));
    assert_eq!(ran.ret, XDP_PASS);
    assert_eq!(t.deny_cache(src, dst, 80), None);
}

#[test]
fn the_node_and_anti_spoofing_come_before_the_tiers() {
    if !kernel_or_skip("tiers: node, spoofing, fragments") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, true, true, true]);
    t.address_set(Ingress, 0, &["0.0.0.0/0"]);
    t.entry(Ingress, Remote::Set(0), ANY, admin(1, Deny));
    t.entry(Egress, Remote::Pod(V4.client), ANY, admin(2, Accept));
    t.write();
    assert_eq!(
        t.run(PROG_TO_POD, &syn(NODE.into(), V4.server, 80)),
        passed(),
        "from the node"
    );
    assert_eq!(
        t.run(PROG_TO_POD, &syn(V4.client, V4.server, 80)),
        dropped(REASON_ADMIN_DENIED, admin_id(1))
    );
    assert_eq!(
        t.run(PROG_FROM_POD, &syn(V4.server, V4.client, 80)),
        allowed(admin_id(2))
    );
    let spoofed = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 99));
    assert_eq!(
        t.run(PROG_FROM_POD, &syn(spoofed, V4.client, 80)),
        dropped(REASON_SPOOFED, NO_POLICY),
        "not the pod's own address"
    );
    // A later fragment whose first fragment was never seen: denied as a fragment.
    let later = packets::ipv4(
        CLIENT.octets(),
        SERVER.octets(),
        TCP,
        77,
        0x0010,
        0,
        &[0; 16],
    );
    let ran = t.run(PROG_TO_POD, &later);
    assert_eq!(
        (ran.ret, ran.counted),
        (DROP, vec![(VERDICT_DROPPED, REASON_FRAGMENT)])
    );
}

#[test]
fn xdp_drops_and_caches_tier_denies_with_their_rule() {
    if !kernel_or_skip("tiers: xdp") {
        return;
    }
    let mut t = Fixture::new(false);
    t.server([true, false, true, false]);
    let client = Remote::Pod(V4.client);
    t.entry(
        Ingress,
        client,
        port(80),
        RuleValue {
            allow: Some(1),
            ..admin(3, Deny)
        },
    );
    t.entry(Ingress, client, port(81), admin(2, Accept));
    t.write();
    for (family, a) in FAMILIES {
        let xdp_drop = Ran {
            ret: XDP_DROP,
            ..dropped(REASON_ADMIN_DENIED, admin_id(3))
        };
        let stat = |t: &Fixture| t.f.dp.stats().expect("stats")[STAT_XDP_DROPPED as usize];
        let drops = stat(&t);
        assert_eq!(
            t.run(PROG_XDP, &syn(a.client, a.server, 80)),
            xdp_drop,
            "{family}"
        );
        let cached = t
            .deny_cache(a.client, a.server, 80)
            .expect("the drop is cached");
        assert_eq!(
            (cached.reason, cached.policy_id),
            (REASON_ADMIN_DENIED, admin_id(3)),
            "{family}"
        );
        // The next packet of the key (another source port) is dropped on the entry alone,
        // reported the same way.
        assert_eq!(
            t.run(PROG_XDP, &syn(a.client, a.server, 80)),
            xdp_drop,
            "{family} cached"
        );
        assert_eq!(stat(&t), drops + 2);
        // Admin Accept: passes, left for TC to count on the conntrack entry it created.
        let accepted = syn(a.client, a.server, 81);
        assert_eq!(
            t.run(PROG_XDP, &accepted),
            Ran {
                ret: XDP_PASS,
                counted: vec![],
                events: vec![(VERDICT_FORWARDED, REASON_POLICY_ALLOWED, admin_id(2))],
            },
            "{family}"
        );
        assert_eq!(
            t.run(PROG_TO_POD, &accepted),
            passed(),
            "{family} established"
        );
    }

    // The cached drop answers until the revision moves, whatever the maps say meanwhile.
    let (src, dst) = (V4.client, V4.server);
    t.entry(Ingress, client, port(80), admin(3, Accept));
    t.write_quietly();
    assert_eq!(
        t.run(PROG_XDP, &syn(src, dst, 80)).ret,
        XDP_DROP,
        "same revision"
    );
    t.bump();
    assert_eq!(
        t.run(PROG_XDP, &syn(src, dst, 80)).ret,
        XDP_PASS,
        "new revision"
    );

    // Baseline Deny on an endpoint no NetworkPolicy isolates: XDP enforces it too.
    t.server([false, false, true, false]);
    t.entry(Ingress, client, port(82), baseline(6, Deny));
    t.write();
    for (family, a) in FAMILIES {
        assert_eq!(
            t.run(PROG_XDP, &syn(a.client, a.server, 82)),
            Ran {
                ret: XDP_DROP,
                ..dropped(REASON_BASELINE_DENIED, baseline_id(6))
            },
            "{family}"
        );
        let cached = t.deny_cache(a.client, a.server, 82).expect("cached");
        assert_eq!(
            (cached.reason, cached.policy_id),
            (REASON_BASELINE_DENIED, baseline_id(6)),
            "{family}"
        );
        assert_eq!(t.run(PROG_XDP, &syn(a.client, a.server, 83)).ret, XDP_PASS);
    }
}

/// ClusterNetworkPolicies of both tiers and a NetworkPolicy through the compiler (ranks,
/// a port range and a port cut out of an any-protocol rule, namespace peers, folding), on the
/// kernel's verdicts and the rules its events name.
const CLUSTER_POLICIES: &str = "
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: exact}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: a}}}
  ingress:
  - name: no-8080
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: b}}}]
    protocols: [{tcp: {destinationPort: {number: 8080}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: range}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: a}}}
  ingress:
  - name: web
    action: Accept
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: b}}}]
    protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8100}}}}]
  - name: pass-dns
    action: Pass
    from: [{namespaces: {}}]
    protocols: [{udp: {destinationPort: {number: 53}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: wide}
spec:
  tier: Admin
  priority: 20
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: a}}}
  ingress:
  - name: no-b
    action: Deny
    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: b}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: floor}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  ingress:
  - name: no-dns
    action: Deny
    from: [{namespaces: {}}]
    protocols: [{udp: {destinationPort: {number: 53}}}]
";

#[test]
fn compiled_cluster_policies() {
    if !kernel_or_skip("tiers: compiled") {
        return;
    }
    let manifests = format!("{MANIFESTS}---{CLUSTER_POLICIES}");
    let mut t = Fixture::with(kernel::load(
        "cns-tiers-",
        &manifests,
        &[("a", "server", 1)],
        false,
    ))
    .audit(false);
    let rule = |policy: &str, name: &str| -> u32 {
        let found =
            t.f.desired
                .cluster_rules
                .iter()
                .find(|((dir, _), r)| *dir == Ingress && &*r.policy == policy && r.rule == name);
        let ((_, id), r) = found.unwrap_or_else(|| panic!("no rule {policy}/{name}"));
        let tier = if *id & RULE_BASELINE == RULE_BASELINE {
            Tier::Baseline
        } else {
            Tier::Admin
        };
        assert_eq!(r.tier, tier);
        *id
    };
    let (exact, web, no_b, no_dns) = (
        rule("exact", "no-8080"),
        rule("range", "web"),
        rule("wide", "no-b"),
        rule("floor", "no-dns"),
    );
    for (family, a) in FAMILIES {
        let mut to_pod =
            |src, proto, port| t.run(PROG_TO_POD, &frame(src, a.server, proto, 30002, port));
        assert_eq!(to_pod(a.client, TCP, 8050), allowed(web), "{family}");
        assert_eq!(
            to_pod(a.client, TCP, 8080),
            dropped(REASON_ADMIN_DENIED, exact),
            "{family}"
        );
        assert_eq!(
            to_pod(a.client, TCP, 9000),
            dropped(REASON_ADMIN_DENIED, no_b),
            "{family}"
        );
        assert_eq!(
            to_pod(a.client, UDP, 53),
            dropped(REASON_BASELINE_DENIED, no_dns),
            "{family} passed to Baseline"
        );
        assert_eq!(
            to_pod(a.client, UDP, 54),
            dropped(REASON_ADMIN_DENIED, no_b),
            "{family} any protocol"
        );
        assert_eq!(to_pod(a.other, TCP, 9000), passed(), "{family}");
    }
}
