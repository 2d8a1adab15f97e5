//! The XDP program for the node's uplink (`cns_xdp`, issue 6).
//!
//! - Crafted packets through `BPF_PROG_TEST_RUN` against maps written by the agent's own
//!   pipeline: allowed, denied, replies of a pod's connection, audit, fragments, truncated
//!   and non-IPv4 frames, addresses that are not isolated local pods; the conntrack entry
//!   XDP leaves lets TC take its fast path, and each packet is counted once.
//! - The virtual node: the real agent runs in the node netns; the test attaches XDP to the
//!   node's uplink (the agent does not attach it yet) with `cns_agent::datapath` against the
//!   agent's pinned maps, and checks real connections from the "outside" netns: denied ones
//!   are dropped in XDP (its stats and the counters, not only the outcome), allowed ones
//!   connect, replies of pod-initiated connections come back, audit mode drops nothing, and
//!   TC's verdicts are the same with XDP on and off.
//! - A cost comparison (`denied_packet_cost_xdp_vs_tc`): ns per denied packet at XDP vs TC.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use cns_agent::{
    datapath::{Datapath, PROG_FROM_POD, PROG_TO_POD, PROG_XDP, XDP_DROP, XDP_PASS},
    reconcile, uplink,
    uplink::XdpAttachMode,
};
use cns_common::maps::{
    self as m, CtEntry, CtKey, DenyEntry, DenyKey, STAT_XDP_ALLOWED, STAT_XDP_AUDIT,
    STAT_XDP_DROPPED,
};
use cns_tests::{
    cluster::Cluster,
    kernel::{self, Loaded},
    kernel_or_skip,
    netns::OUTSIDE_IP,
    packets::{self, ACK, SYN, TCP, UDP, tcp},
    traffic::{in_netns, tcp_echo_server, tcp_ok, udp_ok},
};

const TC_PASS: i32 = -1;
const TC_DROP: i32 = 2;

const SERVER: [u8; 4] = [10, 0, 1, 10];
const OPEN: [u8; 4] = [10, 0, 4, 10];
const CLIENT: [u8; 4] = [10, 0, 2, 10];
const STRANGER: [u8; 4] = [10, 0, 3, 10];
const WORLD: [u8; 4] = [192, 0, 2, 7];

/// `a/server` (local, ifindex 1 = the test run's device) is isolated for ingress and admits
/// TCP 80 from namespace b; `c/open` (local, ifindex 2) is not isolated; `b/client` lives on
/// another node.
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
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: open, namespace: c, labels: {app: open}}
spec:
  nodeName: node-1
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.4.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec:
  nodeName: node-2
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.2.10}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]
    ports: [{protocol: TCP, port: 80}]
";

fn fixture(audit: bool) -> Loaded {
    kernel::load(
        "cns-xdp-",
        MANIFESTS,
        &[("a", "server", 1), ("c", "open", 2)],
        audit,
    )
}

/// Ethernet + IPv4 + `l4`, with fragment field `frag`.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    packets::ipv4(src, dst, proto, 7, frag, 0, l4)
}

fn stat(dp: &Datapath, i: u32) -> u64 {
    dp.stats().expect("stats")[i as usize]
}

/// Packets counted for (source ns id, destination ns id, ingress, verdict).
fn counted(dp: &Datapath, verdict: u8) -> u64 {
    dp.counters()
        .expect("counters")
        .iter()
        .filter(|(k, _)| k.dir == cns_common::DIR_INGRESS && k.verdict == verdict)
        .map(|(_, c)| c.packets)
        .sum()
}

fn conntrack_entry(pin_dir: &Path, key: &CtKey) -> Option<CtEntry> {
    let data = aya::maps::MapData::from_pin(cns_agent::paths::pinned_map(pin_dir, m::CONNTRACK))
        .expect("open the pinned conntrack map");
    let map: aya::maps::HashMap<_, CtKey, CtEntry> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("conntrack map");
    map.get(key, 0).ok()
}

fn ct_key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> CtKey {
    CtKey {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: TCP,
        dir: cns_common::DIR_INGRESS,
        _pad: 0,
    }
}

#[test]
fn local_pod_addresses_follow_the_endpoints() {
    if !kernel_or_skip("xdp local ips") {
        return;
    }
    let mut f = fixture(false);
    let ips = f.dp.local_ips().expect("local ips");
    assert_eq!(
        ips,
        BTreeMap::from([
            (u32::from_ne_bytes(SERVER), 1),
            (u32::from_ne_bytes(OPEN), 2)
        ])
    );
    // The endpoint of ifindex 2 goes (its veth is gone): its address goes with it.
    f.ifindexes.retain(|_, ifindex| *ifindex != 2);
    let plan = f.resync();
    assert!(
        plan.ops
            .contains(&reconcile::MapOp::DeleteLocalIp(u32::from_ne_bytes(OPEN))),
        "{:?}",
        plan.ops
    );
    assert_eq!(
        f.dp.local_ips()
            .expect("local ips")
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![u32::from_ne_bytes(SERVER)]
    );
    // Removed behind the agent's back: the next resync puts it back.
    reconcile::apply(
        &mut f.dp,
        &[reconcile::MapOp::DeleteLocalIp(u32::from_ne_bytes(SERVER))],
    );
    assert_eq!(
        f.resync().ops,
        [reconcile::MapOp::UpsertLocalIp(
            u32::from_ne_bytes(SERVER),
            1
        )]
    );
    assert!(f.resync().ops.is_empty(), "already in step");
}

#[test]
fn xdp_verdicts_on_crafted_packets() {
    if !kernel_or_skip("xdp crafted packets") {
        return;
    }
    let f = fixture(false);
    let xdp = |pkt: &[u8]| f.dp.test_run(PROG_XDP, pkt).expect("xdp test run");
    let to_pod = |pkt: &[u8]| f.dp.test_run(PROG_TO_POD, pkt).expect("tc test run");

    // Denied: dropped in XDP, counted and attributed as TC would (dropped, ingress), and TC
    // agrees.
    let denied = ipv4(STRANGER, SERVER, TCP, 0, &tcp(4000, 80, SYN));
    assert_eq!(xdp(&denied), XDP_DROP, "denied peer");
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), 1);
    assert_eq!(counted(&f.dp, cns_common::VERDICT_DROPPED), 1);
    assert_eq!(to_pod(&denied), TC_DROP, "TC agrees");
    assert_eq!(counted(&f.dp, cns_common::VERDICT_DROPPED), 2);
    assert_eq!(
        xdp(&ipv4(CLIENT, SERVER, TCP, 0, &tcp(4001, 81, SYN))),
        XDP_DROP,
        "allowed peer, other port"
    );
    assert_eq!(
        xdp(&ipv4(WORLD, SERVER, 17, 0, &tcp(4002, 80, 0)[..8])),
        XDP_DROP,
        "UDP from the world"
    );

    // Allowed: passes, creates the conntrack entries, is not counted by XDP; TC then finds
    // the entry (fast path) and counts the packet once.
    let allowed = ipv4(CLIENT, SERVER, TCP, 0, &tcp(5000, 80, SYN));
    let forwarded = counted(&f.dp, cns_common::VERDICT_FORWARDED);
    assert_eq!(xdp(&allowed), XDP_PASS, "allowed");
    assert_eq!(stat(&f.dp, STAT_XDP_ALLOWED), 1);
    assert_eq!(counted(&f.dp, cns_common::VERDICT_FORWARDED), forwarded);
    let entry = conntrack_entry(&f.pin_dir, &ct_key(CLIENT, SERVER, 5000, 80))
        .expect("XDP created the flow's conntrack entry");
    assert_eq!(entry.verdict, cns_common::VERDICT_FORWARDED);
    assert_eq!(entry.revision, 1);
    assert_eq!(to_pod(&allowed), TC_PASS);
    assert_eq!(counted(&f.dp, cns_common::VERDICT_FORWARDED), forwarded + 1);
    // Later packets of the flow pass on the conntrack entry, without policy.
    assert_eq!(
        xdp(&ipv4(CLIENT, SERVER, TCP, 0, &tcp(5000, 80, ACK))),
        XDP_PASS
    );
    assert_eq!(stat(&f.dp, STAT_XDP_ALLOWED), 1, "no second evaluation");

    // A reply of a connection the pod opened: dropped before the pod sent anything, passes
    // once TC on the veth saw the pod's packet.
    let reply = ipv4(WORLD, SERVER, TCP, 0, &tcp(443, 40000, SYN | ACK));
    assert_eq!(xdp(&reply), XDP_DROP, "no connection yet");
    let out = ipv4(SERVER, WORLD, TCP, 0, &tcp(40000, 443, SYN));
    assert_eq!(f.dp.test_run(PROG_FROM_POD, &out).unwrap(), TC_PASS);
    let dropped = stat(&f.dp, STAT_XDP_DROPPED);
    assert_eq!(xdp(&reply), XDP_PASS, "reply of the pod's connection");
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), dropped);

    // Left to TC unchanged: fragments (first and later), ICMP errors, truncated headers,
    // non-IPv4, addresses that are not local pods, pods not isolated.
    let stats_before = f.dp.stats().unwrap();
    let counters_before = f.dp.counters().unwrap();
    let first_fragment = ipv4(STRANGER, SERVER, TCP, 0x2000, &tcp(4003, 80, SYN));
    assert_eq!(xdp(&first_fragment), XDP_PASS, "first fragment");
    assert_eq!(to_pod(&first_fragment), TC_DROP, "TC still drops it");
    let later_fragment = ipv4(STRANGER, SERVER, TCP, 0x0003, &[0; 16]);
    assert_eq!(xdp(&later_fragment), XDP_PASS, "later fragment");
    let mut icmp_error = vec![3, 1, 0, 0, 0, 0, 0, 0];
    icmp_error.extend_from_slice(&ipv4(SERVER, WORLD, TCP, 0, &tcp(1, 2, SYN))[14..42]);
    assert_eq!(
        xdp(&ipv4(WORLD, SERVER, 1, 0, &icmp_error)),
        XDP_PASS,
        "ICMP error"
    );
    let full = ipv4(STRANGER, SERVER, TCP, 0, &tcp(4004, 80, SYN));
    assert_eq!(xdp(&full[..14 + 10]), XDP_PASS, "truncated IPv4 header");
    assert_eq!(xdp(&full[..14 + 20 + 2]), XDP_PASS, "truncated TCP header");
    let mut bad_version = full.clone();
    bad_version[14] = 0x65;
    assert_eq!(xdp(&bad_version), XDP_PASS, "not version 4");
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x43;
    assert_eq!(xdp(&bad_ihl), XDP_PASS, "IHL below 5");
    let mut ipv6 = vec![0u8; 12];
    ipv6.extend_from_slice(&[0x86, 0xdd, 0x60]);
    ipv6.extend(std::iter::repeat_n(0u8, 60));
    assert_eq!(xdp(&ipv6), XDP_PASS, "IPv6");
    let mut arp = vec![0u8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend(std::iter::repeat_n(0u8, 28));
    assert_eq!(xdp(&arp), XDP_PASS, "ARP");
    let mut vlan = full[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    vlan.extend_from_slice(&full[12..]);
    assert_eq!(xdp(&vlan), XDP_PASS, "802.1Q");
    assert_eq!(
        xdp(&ipv4(STRANGER, CLIENT, TCP, 0, &tcp(4005, 80, SYN))),
        XDP_PASS,
        "a pod on another node"
    );
    assert_eq!(
        xdp(&ipv4(STRANGER, WORLD, TCP, 0, &tcp(4006, 80, SYN))),
        XDP_PASS,
        "not a pod"
    );
    assert_eq!(
        xdp(&ipv4(STRANGER, OPEN, TCP, 0, &tcp(4007, 9999, SYN))),
        XDP_PASS,
        "a local pod that is not isolated"
    );
    let stats_after = f.dp.stats().unwrap();
    for i in [STAT_XDP_DROPPED, STAT_XDP_AUDIT, STAT_XDP_ALLOWED] {
        assert_eq!(
            stats_after[i as usize], stats_before[i as usize],
            "XDP decided nothing"
        );
    }
    // Only the TC run on the first fragment counted something.
    let total = |c: &[(m::CounterKey, m::Counter)]| c.iter().map(|(_, c)| c.packets).sum::<u64>();
    assert_eq!(
        total(&f.dp.counters().unwrap()),
        total(&counters_before) + 1
    );
}

#[test]
fn xdp_audit_mode_drops_nothing_and_counts_once() {
    if !kernel_or_skip("xdp audit") {
        return;
    }
    let f = fixture(true);
    let denied = ipv4(STRANGER, SERVER, TCP, 0, &tcp(4000, 80, SYN));
    assert_eq!(f.dp.test_run(PROG_XDP, &denied).unwrap(), XDP_PASS);
    assert_eq!(stat(&f.dp, STAT_XDP_AUDIT), 1);
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), 0);
    assert_eq!(counted(&f.dp, cns_common::VERDICT_AUDIT), 0, "TC counts it");
    let entry = conntrack_entry(&f.pin_dir, &ct_key(STRANGER, SERVER, 4000, 80))
        .expect("audited flow tracked");
    assert_eq!(entry.verdict, cns_common::VERDICT_AUDIT);
    assert_eq!(f.dp.test_run(PROG_TO_POD, &denied).unwrap(), TC_PASS);
    assert_eq!(counted(&f.dp, cns_common::VERDICT_AUDIT), 1, "counted once");
    assert_eq!(counted(&f.dp, cns_common::VERDICT_DROPPED), 0);
}

#[test]
fn xdp_follows_policy_revisions() {
    if !kernel_or_skip("xdp revisions") {
        return;
    }
    let mut f = fixture(true);
    let denied = ipv4(STRANGER, SERVER, TCP, 0, &tcp(4000, 80, SYN));
    assert_eq!(f.dp.test_run(PROG_XDP, &denied).unwrap(), XDP_PASS, "audit");
    // Switch to blocking with a new revision: the audited flow's entry is stale for its
    // original direction and the next packet is dropped at XDP.
    let mut cfg = f.dp.config().unwrap();
    cfg.audit_mode = 0;
    cfg.revision += 1;
    f.dp.set_config(&cfg).unwrap();
    assert_eq!(
        f.dp.test_run(
            PROG_XDP,
            &ipv4(STRANGER, SERVER, TCP, 0, &tcp(4000, 80, ACK))
        )
        .unwrap(),
        XDP_DROP
    );
}

fn deny_cache_entry(pin_dir: &Path, src: [u8; 4], dst: [u8; 4], dport: u16) -> Option<DenyEntry> {
    let data = aya::maps::MapData::from_pin(cns_agent::paths::pinned_map(pin_dir, m::DENY_CACHE))
        .expect("open the pinned deny cache");
    let map: aya::maps::HashMap<_, DenyKey, DenyEntry> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("deny cache");
    let key = DenyKey {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(dst),
        dport: dport.to_be(),
        proto: TCP,
        _pad: 0,
    };
    map.get(&key, 0).ok()
}

/// Writes the maps for `manifests` (the fixture's endpoints), the agent's way: the
/// difference from what `old` compiled to.
fn rewrite(dp: &mut Datapath, old: &str, new: &str) {
    let contents = |manifests: &str| {
        let (snapshot, errors) = cns_agent::source::load(
            &[("m.yaml".into(), Ok(manifests.to_owned()))],
            &mut cns_agent::source::LastGood::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let node = cns_agent::policy::model::NodeContext {
            node_name: kernel::NODE.into(),
            node_ips: Default::default(),
        };
        let desired = cns_agent::policy::compile(
            &snapshot,
            &node,
            &cns_agent::policy::model::Allocations::default(),
        );
        let ifindexes = BTreeMap::from([
            (cns_agent::policy::model::ObjectRef::new("a", "server"), 1),
            (cns_agent::policy::model::ObjectRef::new("c", "open"), 2),
        ]);
        cns_agent::encode::encode(&desired, &ifindexes)
    };
    let ops = reconcile::diff(&contents(new), &contents(old));
    assert!(!ops.is_empty(), "the manifests differ in the maps");
    let failed = reconcile::apply(dp, &ops);
    assert!(failed.is_empty(), "{failed:?}");
}

/// A second policy: TCP 80 from 10.0.3.0/24 (`STRANGER`) as well.
const ALLOW_STRANGER: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: strangers, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 10.0.3.0/24}}]
    ports: [{protocol: TCP, port: 80}]
";

/// One packet of a flood from `STRANGER` to the server's port 80, from `sport`.
fn flood(dp: &Datapath, sport: u16) -> i32 {
    dp.test_run(
        PROG_XDP,
        &ipv4(STRANGER, SERVER, TCP, 0, &tcp(sport, 80, SYN)),
    )
    .expect("xdp test run")
}

/// A denied flood (one source, many source ports) is dropped on the deny cache after its
/// first packet, each packet counted and reported as before; the cache lasts exactly as
/// long as the policy revision it was made under: the very next packet after the agent's
/// revision bump that follows an allowing policy passes.
#[test]
fn xdp_deny_cache_does_not_outlive_a_policy_change() {
    if !kernel_or_skip("xdp deny cache, policy change") {
        return;
    }
    let mut f = fixture(false);
    assert!(deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 80).is_none());
    for sport in 1000..1100 {
        assert_eq!(flood(&f.dp, sport), XDP_DROP, "sport {sport}");
    }
    let entry = deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 80).expect("cached");
    assert_eq!(entry.revision, 1);
    assert_ne!(entry.counter, 0);
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), 100);
    assert_eq!(
        counted(&f.dp, cns_common::VERDICT_DROPPED),
        100,
        "each counted"
    );
    // Other ports and sources are decided on their own (and dropped: nothing allows them).
    assert_eq!(
        xdp_run(&f.dp, &ipv4(STRANGER, SERVER, TCP, 0, &tcp(1000, 81, SYN))),
        XDP_DROP
    );
    assert_eq!(
        xdp_run(&f.dp, &ipv4(CLIENT, SERVER, TCP, 0, &tcp(1000, 80, SYN))),
        XDP_PASS,
        "the cache is per source: b/client is allowed"
    );

    // The allowing policy's maps, written without the revision bump the agent always does
    // after them: the entry still decides (this is what the revision guards).
    let both = format!("{MANIFESTS}{ALLOW_STRANGER}");
    rewrite(&mut f.dp, MANIFESTS, &both);
    assert_eq!(
        flood(&f.dp, 2000),
        XDP_DROP,
        "same revision: the cached drop"
    );
    // The revision bump: the very next packet is decided again, and passes; so does TC.
    kernel::set_mode(&mut f.dp, false, 2);
    assert_eq!(
        flood(&f.dp, 2001),
        XDP_PASS,
        "allowed after the policy change"
    );
    assert_eq!(
        f.dp.test_run(
            PROG_TO_POD,
            &ipv4(STRANGER, SERVER, TCP, 0, &tcp(2001, 80, SYN))
        )
        .unwrap(),
        TC_PASS
    );
    assert_eq!(flood(&f.dp, 2002), XDP_PASS);
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), 102);

    // And back: the policy removed, a new revision: dropped again (cached anew).
    rewrite(&mut f.dp, &both, MANIFESTS);
    kernel::set_mode(&mut f.dp, false, 3);
    assert_eq!(flood(&f.dp, 3000), XDP_DROP);
    assert_eq!(flood(&f.dp, 3001), XDP_DROP);
    let entry = deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 80).expect("cached");
    assert_eq!(entry.revision, 3);
}

/// A cached drop does not outlive a switch to audit mode: with a new revision (what the
/// agent writes), and even with the mode alone changed (the entry's audit state is checked
/// on every hit).
#[test]
fn xdp_deny_cache_does_not_outlive_audit_mode() {
    if !kernel_or_skip("xdp deny cache, audit mode") {
        return;
    }
    let mut f = fixture(false);
    assert_eq!(flood(&f.dp, 1000), XDP_DROP);
    assert_eq!(flood(&f.dp, 1001), XDP_DROP);
    assert!(deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 80).is_some());
    // Audit mode with the agent's revision bump.
    kernel::set_mode(&mut f.dp, true, 2);
    assert_eq!(flood(&f.dp, 1002), XDP_PASS, "audit: passes");
    assert_eq!(stat(&f.dp, STAT_XDP_AUDIT), 1);
    // Blocking again: dropped, cached anew.
    kernel::set_mode(&mut f.dp, false, 3);
    assert_eq!(flood(&f.dp, 1003), XDP_DROP);
    assert_eq!(flood(&f.dp, 1004), XDP_DROP);
    assert_eq!(
        deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 80).map(|e| e.revision),
        Some(3)
    );
    // Audit mode alone, same revision: still not dropped.
    kernel::set_mode(&mut f.dp, true, 3);
    assert_eq!(flood(&f.dp, 1005), XDP_PASS, "audit, same revision: passes");
    assert_eq!(stat(&f.dp, STAT_XDP_AUDIT), 2);
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), 4);
}

/// Under a flood (this CPU dropped on the deny cache within the last 100 ms) the deny cache
/// is read first, before the conntrack lookup: a connection-opening TCP packet drops on it
/// alone, and replies of the pod's own connections still pass, TCP and UDP, though a cached
/// drop has their key (made before the pod opened them).
#[test]
fn xdp_under_a_flood_still_passes_replies() {
    if !kernel_or_skip("xdp deny cache under a flood") {
        return;
    }
    let f = fixture(false);
    // The flood state is per CPU: every run on one (this thread's former CPUs restored after).
    let pin = cns_tests::kernel::pin_to_one_cpu();
    let udp = |src, dst, sport, dport| ipv4(src, dst, UDP, 0, &packets::ports(sport, dport, 8));
    // Drops cached for STRANGER -> SERVER, TCP and UDP port 5000 (nothing admits them).
    assert_eq!(
        xdp_run(&f.dp, &ipv4(STRANGER, SERVER, TCP, 0, &tcp(80, 5000, SYN))),
        XDP_DROP
    );
    assert_eq!(xdp_run(&f.dp, &udp(STRANGER, SERVER, 53, 5000)), XDP_DROP);
    assert!(deny_cache_entry(&f.pin_dir, STRANGER, SERVER, 5000).is_some());
    // Then the pod opens connections from port 5000 to STRANGER (egress is not isolated).
    let out = |pkt: &[u8]| f.dp.test_run(PROG_FROM_POD, pkt).expect("tc test run");
    assert_eq!(
        out(&ipv4(SERVER, STRANGER, TCP, 0, &tcp(5000, 80, SYN))),
        TC_PASS
    );
    assert_eq!(out(&udp(SERVER, STRANGER, 5000, 53)), TC_PASS);
    // The jiffy of this CPU's last drop on the deny cache.
    let flood_mark = || {
        let data =
            aya::maps::MapData::from_pin(cns_agent::paths::pinned_map(&f.pin_dir, m::XDP_FLOOD))
                .expect("open the pinned flood state");
        let map: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).expect("map");
        map.get(&0, 0).expect("flood state")[pin.cpu]
    };
    let window = u64::from(f.dp.clock().hz() / 10);
    // A flood on another port (dropped on the cache, which marks this CPU), then the replies,
    // which pass; until they were seen within the flood's window (a stalled test thread
    // would see them after it, on the normal path).
    let mut under_flood = false;
    for attempt in 0..5 {
        for sport in 1000..1010 {
            assert_eq!(flood(&f.dp, sport + attempt * 10), XDP_DROP);
        }
        assert_eq!(
            xdp_run(
                &f.dp,
                &ipv4(STRANGER, SERVER, TCP, 0, &tcp(80, 5000, SYN | ACK))
            ),
            XDP_PASS,
            "TCP reply"
        );
        assert_eq!(
            xdp_run(&f.dp, &udp(STRANGER, SERVER, 53, 5000)),
            XDP_PASS,
            "UDP reply"
        );
        let (now, _) = f.dp.kernel_clock().expect("kernel clock");
        if now.saturating_sub(flood_mark()) <= window {
            under_flood = true;
            break;
        }
    }
    assert!(
        under_flood,
        "the replies were never checked under the flood"
    );
    let dropped = stat(&f.dp, STAT_XDP_DROPPED);
    // What is no reply drops on the cached entries.
    assert_eq!(
        xdp_run(&f.dp, &ipv4(STRANGER, SERVER, TCP, 0, &tcp(81, 5000, SYN))),
        XDP_DROP,
        "a new connection"
    );
    assert_eq!(
        xdp_run(&f.dp, &udp(STRANGER, SERVER, 54, 5000)),
        XDP_DROP,
        "UDP from another port"
    );
    assert_eq!(stat(&f.dp, STAT_XDP_DROPPED), dropped + 2);
}

fn xdp_run(dp: &Datapath, pkt: &[u8]) -> i32 {
    dp.test_run(PROG_XDP, pkt).expect("xdp test run")
}

/// ns per packet for a denied packet at XDP and at TC (`BPF_PROG_TEST_RUN`, `repeat` runs,
/// the kernel's average). The XDP figure is the program alone; in real traffic XDP also
/// saves the skb allocation and the stack up to TC, which this does not measure.
pub fn denied_packet_cost_ns(dp: &Datapath, repeat: u32) -> (f64, f64) {
    let denied = ipv4(STRANGER, SERVER, TCP, 0, &tcp(4000, 80, SYN));
    let ns = |program| {
        let (verdict, per_run) = dp
            .test_run_repeat(program, &denied, repeat)
            .expect("test run");
        assert!(
            verdict == XDP_DROP || verdict == TC_DROP,
            "{program}: {verdict}"
        );
        per_run.as_nanos() as f64
    };
    // Warm up, then take the best of three (the machine is shared).
    let best = |program| {
        ns(program);
        (0..3).map(|_| ns(program)).fold(f64::MAX, f64::min)
    };
    (best(PROG_XDP), best(PROG_TO_POD))
}

#[test]
fn denied_packet_cost_xdp_vs_tc() {
    if !kernel_or_skip("xdp cost") {
        return;
    }
    let f = fixture(false);
    let (xdp, tc) = denied_packet_cost_ns(&f.dp, 100_000);
    println!("denied packet, program cost: XDP {xdp:.0} ns, TC {tc:.0} ns");
    assert!(xdp > 0.0 && tc > 0.0);
}

// ---------------------------------------------------------------------------------------
// The virtual node.

/// XDP on the virtual node's uplink, attached from a thread inside the node netns with the
/// agent's pinned maps (as the agent will do itself once wired).
struct UplinkXdp {
    dp: Datapath,
    ifindex: u32,
    name: String,
    mode: XdpAttachMode,
}

fn attach_uplink_xdp(node_netns: &str, pin_dir: &Path) -> UplinkXdp {
    let pin_dir = pin_dir.to_owned();
    in_netns(node_netns, move || {
        let ups = uplink::default_route_interfaces().expect("default routes");
        assert_eq!(ups.len(), 1, "one default route: {ups:?}");
        let up = &ups[0];
        let mut dp = Datapath::load(&pin_dir).expect("load programs on the agent's maps");
        let mode = dp.attach_xdp(&up.name, up.ifindex).expect("attach XDP");
        assert_eq!(uplink::xdp_mode(up.ifindex), Some(mode), "kernel agrees");
        assert!(cns_agent::paths::link_pin(&pin_dir, up.ifindex, PROG_XDP).exists());
        UplinkXdp {
            dp,
            ifindex: up.ifindex,
            name: up.name.clone(),
            mode,
        }
    })
}

fn detach_uplink_xdp(node_netns: &str, x: UplinkXdp) {
    in_netns(node_netns, move || {
        let mut x = x;
        x.dp.detach_xdp(x.ifindex);
        wait_detached(x.ifindex);
    });
}

/// The kernel releases a link whose last pin is removed shortly after (deferred work).
fn wait_detached(ifindex: u32) {
    let start = std::time::Instant::now();
    while uplink::xdp_mode(ifindex).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "XDP still attached to {ifindex}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("XDP detached after {:?}", start.elapsed());
}

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);

/// alpha/server admits TCP 8080 from the uplink's /30 and 8090 from beta; egress is open.
const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress, namespace: alpha}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 10.255.0.0/30}}]
    ports: [{protocol: TCP, port: 8080}]
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: beta}}}]
    ports: [{protocol: TCP, port: 8090}]
";

const OUTSIDE_PORT: u16 = 7070;

/// What the probes see; the same with XDP on and off.
fn probe(c: &Cluster) -> Vec<(&'static str, bool)> {
    let out = &c.node.outside;
    vec![
        ("outside -> server:8080", tcp_ok(out, SERVER_IP, 8080)),
        ("outside -> server:8090", tcp_ok(out, SERVER_IP, 8090)),
        ("outside -> server:5353/udp", udp_ok(out, SERVER_IP, 5353)),
        (
            "outside -> beta/client:9090 (not isolated)",
            tcp_ok(out, Ipv4Addr::new(10, 0, 2, 10), 9090),
        ),
        (
            "server -> outside (reply comes back)",
            tcp_ok(&c.server.netns, OUTSIDE_IP, OUTSIDE_PORT),
        ),
        (
            "beta/client -> server:8090",
            tcp_ok(&c.beta_client.netns, SERVER_IP, 8090),
        ),
        (
            "gamma/client -> server:8080",
            tcp_ok(&c.gamma_client.netns, SERVER_IP, 8080),
        ),
    ]
}

fn expected(audit: bool) -> Vec<(&'static str, bool)> {
    vec![
        ("outside -> server:8080", true),
        ("outside -> server:8090", audit),
        ("outside -> server:5353/udp", audit),
        ("outside -> beta/client:9090 (not isolated)", true),
        ("server -> outside (reply comes back)", true),
        ("beta/client -> server:8090", true),
        ("gamma/client -> server:8080", audit),
    ]
}

fn xdp_stats(x: &UplinkXdp) -> (u64, u64, u64) {
    let s = x.dp.stats().expect("stats");
    (
        s[STAT_XDP_DROPPED as usize],
        s[STAT_XDP_AUDIT as usize],
        s[STAT_XDP_ALLOWED as usize],
    )
}

#[test]
fn uplink_xdp_drops_denied_traffic_from_outside() {
    if !kernel_or_skip("xdp on the uplink") {
        return;
    }
    // The test attaches XDP itself, so the agent must not.
    let c = Cluster::start_with(
        false,
        &[("policy.yaml", POLICY)],
        &["--xdp-interfaces", "none"],
    );
    tcp_echo_server(&c.node.outside, OUTSIDE_PORT);
    let without = probe(&c);
    assert_eq!(without, expected(false), "TC alone");

    let x = attach_uplink_xdp(&c.node.node, &c.agent.pin_dir);
    assert_eq!(x.mode, XdpAttachMode::Native, "veth supports native XDP");
    assert!(x.name.ends_with('u'), "the uplink veth: {}", x.name);

    let world_dropped = || {
        c.agent
            .packets("reserved:world", "alpha", "ingress", "dropped")
    };
    let (d0, _, a0) = xdp_stats(&x);
    let counted0 = world_dropped();
    assert!(!tcp_ok(&c.node.outside, SERVER_IP, 8090), "denied");
    let (d1, _, _) = xdp_stats(&x);
    assert!(d1 > d0, "the SYN was dropped in XDP");
    assert_eq!(
        world_dropped() - counted0,
        d1 - d0,
        "every drop counted once, attributed like TC (world -> alpha, ingress, dropped)"
    );
    assert!(tcp_ok(&c.node.outside, SERVER_IP, 8080), "allowed");
    let (_, _, a1) = xdp_stats(&x);
    assert!(
        a1 > a0,
        "XDP allowed the new flow (and made its conntrack entry)"
    );
    assert!(
        tcp_ok(&c.server.netns, OUTSIDE_IP, OUTSIDE_PORT),
        "reply of a pod-initiated connection"
    );
    let (d2, _, _) = xdp_stats(&x);
    assert_eq!(d2, xdp_stats(&x).0);

    let with = probe(&c);
    assert_eq!(with, without, "TC verdicts identical with XDP on");

    // Audit mode: nothing is dropped, would-be drops pass with verdict audit.
    c.agent.cli(&["mode", "audit"]).expect("mode audit");
    let (d3, au3, _) = xdp_stats(&x);
    let audited0 = c
        .agent
        .packets("reserved:world", "alpha", "ingress", "audit");
    assert!(tcp_ok(&c.node.outside, SERVER_IP, 8090), "audit: connects");
    let (d4, au4, _) = xdp_stats(&x);
    assert_eq!(d4, d3, "audit mode drops nothing in XDP");
    assert!(au4 > au3, "XDP saw it as audit");
    assert!(
        c.agent
            .packets("reserved:world", "alpha", "ingress", "audit")
            > audited0
    );
    assert_eq!(probe(&c), expected(true), "audit with XDP");
    c.agent.cli(&["mode", "blocking"]).expect("mode blocking");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(probe(&c), expected(false), "blocking again");

    detach_uplink_xdp(&c.node.node, x);
    assert_eq!(probe(&c), without, "XDP off again");
}

#[test]
fn uplink_xdp_link_survives_and_is_adopted() {
    if !kernel_or_skip("xdp adoption") {
        return;
    }
    // The test attaches XDP itself, so the agent must not.
    let c = Cluster::start_with(
        false,
        &[("policy.yaml", POLICY)],
        &["--xdp-interfaces", "none"],
    );
    let x = attach_uplink_xdp(&c.node.node, &c.agent.pin_dir);
    let (ifindex, mode) = (x.ifindex, x.mode);
    drop(x); // the attaching "agent" exits: the pinned link keeps XDP attached
    let pin_dir = c.agent.pin_dir.clone();
    let mut x = in_netns(&c.node.node, move || {
        assert_eq!(uplink::xdp_mode(ifindex), Some(mode), "still attached");
        let mut dp = Datapath::load(&pin_dir).expect("load");
        dp.adopt();
        let adopted = dp.xdp_attached().get(&ifindex).cloned().expect("adopted");
        assert_eq!(adopted.mode, Some(mode));
        assert!(!dp.attached().contains_key(&ifindex), "not a pod veth");
        UplinkXdp {
            dp,
            ifindex,
            name: adopted.interface,
            mode,
        }
    });
    let (d0, _, _) = xdp_stats(&x);
    assert!(!tcp_ok(&c.node.outside, SERVER_IP, 8090), "denied");
    assert!(xdp_stats(&x).0 > d0, "the adopted program drops in XDP");
    assert!(tcp_ok(&c.node.outside, SERVER_IP, 8080), "allowed");
    // sync_xdp with no uplinks detaches.
    let node = c.node.node.clone();
    x = in_netns(&node, move || {
        let errors = x.dp.sync_xdp(&[]);
        assert!(errors.is_empty());
        wait_detached(x.ifindex);
        x
    });
    assert!(x.dp.xdp_attached().is_empty());
}

/// IPv6 on an IPv6-only node, with the agent's own XDP attachment (`--xdp-interfaces
/// default` finds the uplink by its IPv6 default route): a denied flow from outside is
/// dropped in XDP and counted like TC's, an allowed one (an IPv6 ipBlock) passes, and a
/// reply of the pod's own connection passes.
#[test]
fn uplink_xdp_drops_denied_ipv6_from_outside() {
    if !kernel_or_skip("xdp ipv6 on the uplink") {
        return;
    }
    const POLICY6: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress, namespace: alpha}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{ipBlock: {cidr: 'fd00:ff::/64'}}]
    ports: [{protocol: TCP, port: 8080}]
";
    let c = Cluster::start_in(
        cns_tests::Family::Ipv6,
        false,
        &[("policy.yaml", POLICY6)],
        &[],
    );
    tcp_echo_server(&c.node.outside, OUTSIDE_PORT);
    let status = c.agent.status();
    let xdp = status["xdp"].as_array().expect("xdp in status");
    assert_eq!(
        xdp.len(),
        1,
        "one uplink (by its IPv6 default route): {status}"
    );
    let server6 = cns_tests::netns::v6_of(SERVER_IP);
    let dropped = || {
        c.agent
            .metric("cns_xdp_dropped_packets_total", &[])
            .unwrap_or(0.0)
    };
    let world_dropped = || {
        c.agent
            .packets("reserved:world", "alpha", "ingress", "dropped")
    };
    let (d0, w0) = (dropped(), world_dropped());
    assert!(!tcp_ok(&c.node.outside, server6, 8090), "denied");
    let (d1, w1) = (dropped(), world_dropped());
    assert!(d1 > d0, "dropped in XDP: {d0} -> {d1}");
    assert_eq!(
        w1 - w0,
        (d1 - d0) as u64,
        "every drop counted once, as TC would"
    );
    assert!(
        tcp_ok(&c.node.outside, server6, 8080),
        "allowed by the IPv6 ipBlock"
    );
    assert!(
        tcp_ok(&c.server.netns, cns_tests::netns::OUTSIDE_IP6, OUTSIDE_PORT),
        "reply of a pod-initiated connection"
    );
}
