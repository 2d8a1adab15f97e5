//! The kernel programs on crafted packets through `BPF_PROG_TEST_RUN`: SCTP (no SCTP
//! sockets on this kernel), IPv6, IP options, fragments and malformed headers. The maps are
//! written by the agent's own pipeline (compile -> encode -> reconcile) for a pod whose veth
//! is, for the test run, the loopback (ifindex 1).

use cns_agent::{
    datapath::{PROG_FROM_POD, PROG_TO_POD, PROG_XDP, XDP_DROP, XDP_PASS},
    reconcile,
};
use cns_common::maps::{self as m, EpCache};
use cns_tests::{
    kernel::{self, Loaded},
    kernel_or_skip, packets,
};

const PASS: i32 = -1;
const DROP: i32 = 2;

const SERVER: [u8; 4] = [10, 0, 1, 10];
const CLIENT: [u8; 4] = [10, 0, 2, 10];
const STRANGER: [u8; 4] = [10, 0, 3, 10];

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
kind: Pod
metadata: {name: server, namespace: a, labels: {app: server}}
spec:
  nodeName: node-1
  containers: [{name: c, image: i, ports: [{name: sig, containerPort: 3868, protocol: SCTP}]}]
status: {phase: Running, podIP: 10.0.1.10, podIPs: [{ip: 10.0.1.10}, {ip: 'fd00:10:244:1::a'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: a, labels: {app: legacy}}
spec:
  nodeName: node-1
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.1.20}
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
metadata: {name: admin, namespace: b, labels: {app: admin}}
spec:
  nodeName: node-2
  containers: [{name: c, image: i}]
status: {phase: Running, podIP: 10.0.2.20, podIPs: [{ip: 10.0.2.20}, {ip: 'fd00:10:244:2::14'}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]
    ports:
    - {protocol: SCTP, port: 9000}
    - {protocol: SCTP, port: sig}
    - {protocol: TCP, port: 80}
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}
      podSelector: {matchLabels: {app: admin}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.0/24}}]
    ports: [{protocol: SCTP, port: 9000}]
  - to: [{ipBlock: {cidr: 'fd00:10:244:2::/64'}}]
    ports: [{protocol: TCP, port: 443}]
";

fn fixture(audit: bool) -> Loaded {
    kernel::load("cns-trun-", MANIFESTS, &[("a", "server", 1)], audit)
}

/// Ethernet + IPv4 (with `options` 4-byte words of IP options) + `l4`.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, options: usize, l4: &[u8]) -> Vec<u8> {
    packets::ipv4(src, dst, proto, 1, frag, options, l4)
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    packets::tcp(sport, dport, packets::SYN)
}

use packets::{SCTP, TCP, UDP, ipv4 as ipv4_id, ports};

#[test]
fn sctp_is_enforced_by_port_and_named_port() {
    if !kernel_or_skip("sctp") {
        return;
    }
    let f = fixture(false);
    let run = |pkt: &[u8]| f.dp.test_run(PROG_TO_POD, pkt).expect("test run");
    // SCTP common header: ports, verification tag, checksum (12 bytes).
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, SCTP, 0, 0, &ports(5000, 9000, 8))),
        PASS,
        "allowed port"
    );
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, SCTP, 0, 0, &ports(5001, 3868, 8))),
        PASS,
        "named port sig"
    );
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, SCTP, 0, 0, &ports(5002, 9001, 8))),
        DROP,
        "other port"
    );
    assert_eq!(
        run(&ipv4(STRANGER, SERVER, SCTP, 0, 0, &ports(5003, 9000, 8))),
        DROP,
        "other peer"
    );
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, UDP, 0, 0, &ports(5004, 9000, 4))),
        DROP,
        "UDP is not SCTP"
    );
    // Egress: SCTP to 10.0.2.0/24 port 9000 only.
    let out = |pkt: &[u8]| f.dp.test_run(PROG_FROM_POD, pkt).expect("test run");
    assert_eq!(
        out(&ipv4(SERVER, CLIENT, SCTP, 0, 0, &ports(6000, 9000, 8))),
        PASS
    );
    assert_eq!(
        out(&ipv4(SERVER, STRANGER, SCTP, 0, 0, &ports(6001, 9000, 8))),
        DROP
    );
    // A packet from the pod with a source address that is not its own is spoofed.
    assert_eq!(
        out(&ipv4(STRANGER, CLIENT, SCTP, 0, 0, &ports(6002, 9000, 8))),
        DROP,
        "spoofed"
    );
}

/// An IPv6 packet from and to an address no map knows (`::`): policy judges it like any
/// other (an unknown peer, no rule for it): dropped in blocking mode, into and out of the
/// pod (out of it, its source is not the pod's: spoofed), passed and counted in audit mode.
#[test]
fn ipv6_of_an_isolated_pod_never_bypasses_policy() {
    if !kernel_or_skip("ipv6") {
        return;
    }
    let mut ipv6 = vec![0u8; 12];
    ipv6.extend_from_slice(&[0x86, 0xdd]);
    ipv6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    ipv6.extend(std::iter::repeat_n(0u8, 32 + 8));
    let blocking = fixture(false);
    assert_eq!(
        blocking.dp.test_run(PROG_TO_POD, &ipv6).unwrap(),
        DROP,
        "blocking: dropped"
    );
    assert_eq!(blocking.dp.test_run(PROG_FROM_POD, &ipv6).unwrap(), DROP);
    let audit = fixture(true);
    assert_eq!(
        audit.dp.test_run(PROG_TO_POD, &ipv6).unwrap(),
        PASS,
        "audit: passes"
    );
}

#[test]
fn malformed_and_tricky_ipv4() {
    if !kernel_or_skip("malformed") {
        return;
    }
    let f = fixture(false);
    let run = |pkt: &[u8]| f.dp.test_run(PROG_TO_POD, pkt).expect("test run");
    // IP options shift the TCP header; the port is still found.
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, TCP, 0, 2, &tcp_syn(7000, 80))),
        PASS,
        "options, allowed"
    );
    assert_eq!(
        run(&ipv4(CLIENT, SERVER, TCP, 0, 2, &tcp_syn(7001, 81))),
        DROP,
        "options, denied"
    );
    // Truncated IP header.
    let full = ipv4(CLIENT, SERVER, TCP, 0, 0, &tcp_syn(7002, 80));
    // BPF_PROG_TEST_RUN itself refuses an IPv4 frame shorter than an IP header (EINVAL);
    // if a kernel accepts it, the program must drop it.
    match f.dp.test_run(PROG_TO_POD, &full[..14 + 10]) {
        Ok(verdict) => assert_eq!(verdict, DROP, "truncated IPv4 header"),
        Err(e) => assert!(
            format!("{e:?}").contains("InvalidInput"),
            "unexpected error {e:?}"
        ),
    }
    // Truncated TCP header (the flags' word, bytes 12-15, is read whole: 15 bytes are short).
    assert_eq!(run(&full[..14 + 20 + 6]), DROP, "truncated TCP header");
    assert_eq!(
        run(&full[..14 + 20 + 15]),
        DROP,
        "TCP header cut inside the flags' word"
    );
    assert_eq!(
        run(&full[..14 + 20 + 16]),
        PASS,
        "TCP header with its flags' word"
    );
    // IHL below 5.
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(run(&bad_ihl), DROP, "IHL 4");
    // Not version 4.
    let mut bad_version = full.clone();
    bad_version[14] = 0x55;
    assert_eq!(run(&bad_version), DROP, "IP version 5 in an IPv4 frame");
    // A later fragment has no ports: port-specific rules cannot allow it.
    let frag = ipv4(CLIENT, SERVER, TCP, 185, 0, &[0u8; 32]);
    assert_eq!(run(&frag), DROP, "non-first fragment");
    // The first fragment carries the ports and is judged on them.
    let first = ipv4(CLIENT, SERVER, TCP, 0x2000, 0, &tcp_syn(7003, 80));
    assert_eq!(run(&first), PASS, "first fragment, allowed port");
    // ARP is not IP: not NetworkPolicy's business.
    let mut arp = vec![0u8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend(std::iter::repeat_n(0u8, 28));
    assert_eq!(run(&arp), PASS, "ARP");
}

#[test]
fn fragments_inherit_the_first_fragments_verdict() {
    if !kernel_or_skip("fragments") {
        return;
    }
    let f = fixture(false);
    let run = |pkt: &[u8]| f.dp.test_run(PROG_TO_POD, pkt).expect("test run");
    const MORE: u16 = 0x2000;
    // Allowed datagram (SCTP 9000 from b): first fragment passes, its later fragments too.
    assert_eq!(
        run(&ipv4_id(
            CLIENT,
            SERVER,
            SCTP,
            77,
            MORE,
            0,
            &ports(5100, 9000, 8)
        )),
        PASS
    );
    assert_eq!(
        run(&ipv4_id(
            CLIENT,
            SERVER,
            SCTP,
            77,
            MORE | 185,
            0,
            &[0u8; 64]
        )),
        PASS
    );
    assert_eq!(
        run(&ipv4_id(CLIENT, SERVER, SCTP, 77, 370, 0, &[0u8; 16])),
        PASS,
        "last fragment"
    );
    // Denied datagram (port 9001): the first fragment drops, so do the later ones.
    assert_eq!(
        run(&ipv4_id(
            CLIENT,
            SERVER,
            SCTP,
            78,
            MORE,
            0,
            &ports(5101, 9001, 8)
        )),
        DROP
    );
    assert_eq!(
        run(&ipv4_id(CLIENT, SERVER, SCTP, 78, 185, 0, &[0u8; 16])),
        DROP
    );
    // A later fragment whose first fragment was never seen cannot pass a port rule.
    assert_eq!(
        run(&ipv4_id(CLIENT, SERVER, SCTP, 79, 185, 0, &[0u8; 16])),
        DROP
    );
    // Fragments are remembered per direction and addresses: same id, other source.
    assert_eq!(
        run(&ipv4_id(STRANGER, SERVER, SCTP, 77, 185, 0, &[0u8; 16])),
        DROP
    );
}

#[test]
fn icmp_errors_follow_their_connection_and_other_l3_is_refused() {
    if !kernel_or_skip("icmp errors") {
        return;
    }
    let f = fixture(false);
    let to_pod = |pkt: &[u8]| f.dp.test_run(PROG_TO_POD, pkt).expect("test run");
    let from_pod = |pkt: &[u8]| f.dp.test_run(PROG_FROM_POD, pkt).expect("test run");
    // The pod opens an allowed connection (egress SCTP 9000 to b).
    let sent = ipv4(SERVER, CLIENT, SCTP, 0, 0, &ports(6100, 9000, 8));
    assert_eq!(from_pod(&sent), PASS);
    // A router that the pod's ingress policy does not admit says "fragmentation needed"
    // about it: the error belongs to the connection and passes.
    let icmp_error = |quoted: &[u8]| {
        let mut l4 = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        l4.extend_from_slice(&quoted[14..14 + 28]);
        ipv4(STRANGER, SERVER, 1, 0, 0, &l4)
    };
    assert_eq!(to_pod(&icmp_error(&sent)), PASS, "related ICMP error");
    // The same error about a connection that does not exist is just a denied packet.
    let never_sent = ipv4(SERVER, CLIENT, SCTP, 0, 0, &ports(6101, 9000, 8));
    assert_eq!(
        to_pod(&icmp_error(&never_sent)),
        DROP,
        "unrelated ICMP error"
    );

    // TCP without SYN for an unknown flow (e.g. after its conntrack entry expired) is
    // judged by policy like a new one.
    let mut ack = tcp_syn(7100, 80);
    ack[13] = 0x10;
    assert_eq!(
        to_pod(&ipv4(CLIENT, SERVER, TCP, 0, 0, &ack)),
        PASS,
        "ACK, allowed peer"
    );
    assert_eq!(
        to_pod(&ipv4(STRANGER, SERVER, TCP, 0, 0, &ack)),
        DROP,
        "ACK, denied peer"
    );

    // A VLAN-tagged frame carrying IPv4 is neither parsed nor let through.
    let inner = ipv4(CLIENT, SERVER, TCP, 0, 0, &tcp_syn(7101, 80));
    let mut vlan = inner[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    vlan.extend_from_slice(&inner[12..]);
    assert_eq!(to_pod(&vlan), DROP, "802.1Q");
    assert_eq!(
        from_pod(&vlan),
        DROP,
        "802.1Q out of an egress-isolated pod"
    );
}

#[test]
fn programs_without_an_endpoint_entry_fail_closed() {
    if !kernel_or_skip("no endpoint") {
        return;
    }
    let mut f = fixture(false);
    // As when the endpoint map was full: the programs run, the entry is missing.
    let failed = reconcile::apply(&mut f.dp, &[reconcile::MapOp::DeleteEndpoint(1)]);
    assert!(failed.is_empty());
    let allowed_before = ipv4(CLIENT, SERVER, TCP, 0, 0, &tcp_syn(7200, 80));
    assert_eq!(
        f.dp.test_run(PROG_TO_POD, &allowed_before).unwrap(),
        DROP,
        "blocking: closed"
    );
    assert_eq!(f.dp.test_run(PROG_FROM_POD, &allowed_before).unwrap(), DROP);
    let mut config = f.dp.config().unwrap();
    config.audit_mode = 1;
    f.dp.set_config(&config).unwrap();
    assert_eq!(
        f.dp.test_run(PROG_TO_POD, &allowed_before).unwrap(),
        PASS,
        "audit: passes"
    );
}

/// Each CPU's copy of an endpoint (`CNS_EP_CACHE`) serves only under the revision it was
/// made in: once the agent bumps the revision after changing the endpoint map, the program
/// reads the map again (here: the entry is gone, so it fails closed).
#[test]
fn a_cached_endpoint_never_outlives_its_revision() {
    if !kernel_or_skip("endpoint cache") {
        return;
    }
    let mut f = fixture(false);
    let syn = ipv4(CLIENT, SERVER, TCP, 0, 0, &tcp_syn(7201, 80));
    // Every run on one CPU: the copies are per CPU.
    let pin = kernel::pin_to_one_cpu();
    assert_eq!(f.dp.test_run(PROG_TO_POD, &syn).unwrap(), PASS, "allowed");
    // The run left this CPU's copy of the endpoint (ifindex 1), stamped with the revision.
    let data = aya::maps::MapData::from_pin(cns_agent::paths::pinned_map(&f.pin_dir, m::EP_CACHE))
        .expect("open the pinned endpoint copies");
    let copies: aya::maps::PerCpuArray<_, EpCache> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).expect("map");
    let copy = copies.get(&1, 0).expect("slot 1")[pin.cpu];
    let revision = f.dp.config().unwrap().revision;
    assert_eq!((copy.ifindex, copy.revision), (1, revision));
    assert!(
        copy.ep.ep_id != 0 && copy.ep.flags & m::EP_INGRESS_ISOLATED != 0,
        "{copy:?}"
    );
    let failed = reconcile::apply(&mut f.dp, &[reconcile::MapOp::DeleteEndpoint(1)]);
    assert!(failed.is_empty());
    let mut config = f.dp.config().unwrap();
    config.revision = config.revision.wrapping_add(1);
    f.dp.set_config(&config).unwrap();
    let after = f.dp.test_run(PROG_TO_POD, &syn).unwrap();
    let other =
        f.dp.test_run(
            PROG_FROM_POD,
            &ipv4(SERVER, CLIENT, TCP, 0, 0, &tcp_syn(80, 7202)),
        )
        .unwrap();
    drop(pin);
    assert_eq!(after, DROP, "the endpoint's copy outlived its revision");
    assert_eq!(other, DROP);
}

/// The policy hash mirrors the trie, and both are planned like any other map: an entry
/// removed from either behind the agent's back is put back by the next resync, and the hash
/// never holds an entry the trie does not (the writer's pairing is tested in `reconcile`).
#[test]
fn the_policy_hash_never_allows_more_than_the_trie() {
    if !kernel_or_skip("policy mirror") {
        return;
    }
    let mut f = fixture(false);
    let mut sport = 7300;
    let mut syn_80 = |f: &kernel::Loaded| {
        sport += 1;
        let pkt = ipv4(CLIENT, SERVER, TCP, 0, 0, &tcp_syn(sport, 80));
        f.dp.test_run(PROG_TO_POD, &pkt).unwrap()
    };
    assert_eq!(syn_80(&f), PASS, "allowed by b -> TCP 80");
    let trie_path = cns_agent::paths::pinned_map(&f.pin_dir, cns_common::maps::POLICY);
    let mut trie: aya::maps::LpmTrie<
        _,
        cns_common::maps::PolicyKey,
        cns_common::maps::PolicyValue,
    > = aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(
        aya::maps::MapData::from_pin(&trie_path).expect("open the pinned trie"),
    ))
    .expect("policy trie");
    // The server's rule for the client (the fixture has other pods and peers).
    let server =
        f.desired.endpoints[&cns_agent::policy::model::ObjectRef::new("a", "server")].ep_id;
    let client = f.desired.ipcache[&std::net::IpAddr::from(CLIENT)].identity;
    let port_80: Vec<_> = trie
        .iter()
        .map(|kv| kv.expect("trie entry"))
        .filter(|(k, _)| {
            k.prefix_len() == 96
                && k.data().ep_id == server.to_be_bytes()
                && k.data().identity == client.to_be_bytes()
                && k.data().proto == TCP
                && k.data().port == 80u16.to_be_bytes()
        })
        .collect();
    assert_eq!(port_80.len(), 1, "one exact entry for TCP 80");
    let (key, value) = &port_80[0];
    trie.remove(key).expect("remove from the trie");
    let plan = f.resync();
    assert_eq!(
        plan.ops,
        [cns_agent::reconcile::MapOp::UpsertPolicy(
            (key.prefix_len(), key.data()),
            *value
        )],
        "the trie entry is put back"
    );
    assert_eq!(syn_80(&f), PASS);
    assert_eq!(
        cns_agent::reconcile::apply(
            &mut f.dp,
            &[cns_agent::reconcile::MapOp::DeletePolicyExact(key.data())]
        )
        .len(),
        0
    );
    assert_eq!(
        f.resync().ops,
        [cns_agent::reconcile::MapOp::UpsertPolicyExact(
            key.data(),
            *value
        )],
        "and the hash entry"
    );
    assert_eq!(syn_80(&f), PASS);
    assert!(f.resync().ops.is_empty(), "nothing left to fix");
}

/// The bench's reference floors (issue 17) pass the verifier and take the paths they stand
/// for: a conntrack hit passes and a miss drops (so the bench's verdict check proves its
/// floor hit); a new flow passes when the policy allows its remote's identity and drops
/// otherwise, into and out of the pod; XDP drops listed sources only.
#[test]
fn reference_floors_load_and_take_their_paths() {
    use cns_agent::datapath::{FLOOR_ESTABLISHED, FLOOR_NEW, FLOOR_NEW_EGRESS, FLOOR_XDP_DROP};
    use cns_common::{
        DIR_EGRESS, DIR_INGRESS,
        maps::{PolicyKey, PolicyValue, Remote},
    };
    use cns_tests::bench::{
        floor::{Floors, TC_OK, TC_SHOT},
        kernel::tcp_frame,
    };
    use std::net::Ipv4Addr;

    if !kernel_or_skip("reference floors") {
        return;
    }
    let server = Ipv4Addr::from(SERVER);
    let client = Ipv4Addr::from(CLIENT);
    let stranger = Ipv4Addr::from(STRANGER);
    let mut floors = Floors::load().expect("the floors load (verifier)");
    let identity = 300u32;
    floors
        .set_ipcache([(
            &u32::from_ne_bytes(CLIENT),
            &Remote {
                identity,
                ns_id: 17,
                _pad: 0,
            },
        )])
        .unwrap();
    let key = |dir| PolicyKey {
        ep_id: 1u32.to_be_bytes(),
        identity: identity.to_be_bytes(),
        dir,
        proto: TCP,
        port: 80u16.to_be_bytes(),
    };
    let value = PolicyValue::allow(7);
    floors
        .set_policy([(&key(DIR_INGRESS), &value), (&key(DIR_EGRESS), &value)])
        .unwrap();
    let run = |program, frame: &[u8]| floors.test_run(program, frame, 1).unwrap().0;

    let established = tcp_frame(client, server, 40000, 80, 0x10);
    assert_eq!(run(FLOOR_ESTABLISHED, &established), TC_SHOT, "miss drops");
    floors.add_established(&established).unwrap();
    let run = |program, frame: &[u8]| floors.test_run(program, frame, 1).unwrap().0;
    assert_eq!(run(FLOOR_ESTABLISHED, &established), TC_OK, "hit passes");

    let syn = |src, dst, dport| tcp_frame(src, dst, 20000, dport, 0x02);
    assert_eq!(run(FLOOR_NEW, &syn(client, server, 80)), TC_OK);
    assert_eq!(run(FLOOR_NEW, &syn(client, server, 81)), TC_SHOT);
    assert_eq!(run(FLOOR_NEW, &syn(stranger, server, 80)), TC_SHOT);
    assert_eq!(run(FLOOR_NEW_EGRESS, &syn(server, client, 80)), TC_OK);
    assert_eq!(run(FLOOR_NEW_EGRESS, &syn(server, stranger, 80)), TC_SHOT);

    const XDP_DROP: i32 = 1;
    const XDP_PASS: i32 = 2;
    let flood = syn(stranger, server, 9);
    assert_eq!(run(FLOOR_XDP_DROP, &flood), XDP_PASS);
    floors.add_denied_source(&flood).unwrap();
    let run = |program, frame: &[u8]| floors.test_run(program, frame, 1).unwrap().0;
    assert_eq!(run(FLOOR_XDP_DROP, &flood), XDP_DROP);
    assert_eq!(run(FLOOR_XDP_DROP, &syn(client, server, 9)), XDP_PASS);
}

// IPv6: the same fixture (the pods are dual-stack, `legacy` has IPv4 only), the same rules.

use cns_common::{
    REASON_FRAGMENT, REASON_IPV6_HEADER_CHAIN, REASON_MALFORMED, REASON_POLICY_DENIED,
    REASON_SPOOFED, VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    maps::{CounterKey, Event, FAMILY_IPV6},
};
use packets::{Ext, ICMPV6, icmp6, icmp6_echo, icmp6_error, ipv6};
use std::net::Ipv6Addr;

const fn v6(last: [u16; 2]) -> [u8; 16] {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, last[0], 0, 0, 0, last[1]).octets()
}
const SERVER6: [u8; 16] = v6([1, 0xa]);
const CLIENT6: [u8; 16] = v6([2, 0xa]);
const ADMIN6: [u8; 16] = v6([2, 0x14]);
const STRANGER6: [u8; 16] = v6([3, 0xa]);
/// In the egress ipBlock fd00:10:244:2::/64, not a pod.
const BLOCK6: [u8; 16] = v6([2, 0xb]);
/// The node's own address.
const NODE6: [u8; 16] = v6([1, 1]);
const LINK_LOCAL: [u8; 16] = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets();
const ROUTER_LL: [u8; 16] = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfe).octets();
const ALL_NODES: [u8; 16] = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
const ALL_ROUTERS: [u8; 16] = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2).octets();

/// A counted packet: (verdict, protocol, reason).
type Counted = Vec<(u8, u8, u8)>;

fn counters(f: &Loaded) -> std::collections::BTreeMap<CounterKey, u64> {
    f.dp.counters()
        .expect("counters")
        .into_iter()
        .map(|(k, c)| (k, c.packets))
        .collect()
}

/// Runs `program` on `pkt`: its verdict, and what it added to the counters.
fn run(f: &Loaded, program: &'static str, pkt: &[u8]) -> (i32, Counted) {
    let before = counters(f);
    let verdict = f.dp.test_run(program, pkt).expect("test run");
    let mut added = Vec::new();
    for (k, packets) in counters(f) {
        for _ in before.get(&k).copied().unwrap_or(0)..packets {
            added.push((k.verdict, k.proto, k.reason));
        }
    }
    (verdict, added)
}

fn tcp6(src: [u8; 16], dst: [u8; 16], exts: &[Ext], sport: u16, dport: u16) -> Vec<u8> {
    ipv6(src, dst, exts, TCP, &tcp_syn(sport, dport))
}

const FWD_TCP: (u8, u8, u8) = (VERDICT_FORWARDED, TCP, 0);
const DENIED_TCP: (u8, u8, u8) = (VERDICT_DROPPED, TCP, REASON_POLICY_DENIED);

#[test]
fn ipv6_tcp_is_enforced_by_pod_selector_ip_block_and_from_the_node() {
    if !kernel_or_skip("ipv6 tcp") {
        return;
    }
    let f = kernel::load_on_node(
        "cns-trun-",
        MANIFESTS,
        &[("a", "server", 1)],
        false,
        &[Ipv6Addr::from(NODE6).into()],
    );
    // Ingress: TCP 80 from namespace b (pod selector), nothing else.
    let syn = tcp6(CLIENT6, SERVER6, &[], 7000, 80);
    assert_eq!(run(&f, PROG_TO_POD, &syn), (PASS, vec![FWD_TCP]), "allowed");
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(CLIENT6, SERVER6, &[], 7001, 81)),
        (DROP, vec![DENIED_TCP]),
        "other port"
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(STRANGER6, SERVER6, &[], 7002, 80)),
        (DROP, vec![DENIED_TCP]),
        "other peer"
    );
    // The pod's answer leaves on the connection's conntrack entry (egress allows only TCP
    // 443 to the ipBlock).
    let mut syn_ack = tcp_syn(80, 7000);
    syn_ack[13] = packets::SYN | packets::ACK;
    assert_eq!(
        run(
            &f,
            PROG_FROM_POD,
            &ipv6(SERVER6, CLIENT6, &[], TCP, &syn_ack)
        )
        .0,
        PASS,
        "reply"
    );
    assert_eq!(
        run(
            &f,
            PROG_FROM_POD,
            &ipv6(SERVER6, STRANGER6, &[], TCP, &syn_ack)
        )
        .0,
        DROP,
        "a reply of no connection"
    );
    // Egress: TCP 443 to fd00:10:244:2::/64 (an ipBlock), nothing else.
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, BLOCK6, &[], 7100, 443)),
        (PASS, vec![FWD_TCP]),
        "in the ipBlock"
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, CLIENT6, &[], 7101, 443)).0,
        PASS,
        "a pod in the ipBlock"
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, STRANGER6, &[], 7102, 443)),
        (DROP, vec![DENIED_TCP]),
        "outside the ipBlock"
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, BLOCK6, &[], 7103, 80)).0,
        DROP,
        "in the ipBlock, other port"
    );
    // The node's own IPv6 address reaches the pod whatever the policy says (counted as
    // forwarded: forwarded packets are not split by reason).
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(NODE6, SERVER6, &[], 7200, 81)),
        (PASS, vec![FWD_TCP]),
        "from the node"
    );
    // Audit mode: a would-be drop passes and counts audit, with its reason.
    let audit = fixture(true);
    assert_eq!(
        run(
            &audit,
            PROG_TO_POD,
            &tcp6(STRANGER6, SERVER6, &[], 7300, 80)
        ),
        (PASS, vec![(VERDICT_AUDIT, TCP, REASON_POLICY_DENIED)])
    );
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_upper_layer() {
    if !kernel_or_skip("ipv6 extension headers") {
        return;
    }
    let f = fixture(false);
    let routing = Ext::Opts {
        kind: packets::ROUTING,
        len: 2,
    };
    let atomic_fragment = Ext::Frag {
        offset: 0,
        more: false,
        id: 9,
    };
    let kinds = [
        ("hop-by-hop", Ext::HOP),
        ("routing", routing),
        ("destination options", Ext::DEST),
        (
            "long destination options",
            Ext::Opts {
                kind: packets::DEST_OPTS,
                len: 255,
            },
        ),
        ("AH", Ext::Ah { len: 4 }),
        ("atomic fragment", atomic_fragment),
    ];
    let mut sport = 8000;
    for (what, ext) in kinds {
        sport += 2;
        assert_eq!(
            run(&f, PROG_TO_POD, &tcp6(CLIENT6, SERVER6, &[ext], sport, 80)),
            (PASS, vec![FWD_TCP]),
            "{what}: allowed port"
        );
        assert_eq!(
            run(
                &f,
                PROG_TO_POD,
                &tcp6(CLIENT6, SERVER6, &[ext], sport + 1, 81)
            ),
            (DROP, vec![DENIED_TCP]),
            "{what}: denied port"
        );
    }
    // A chain as long as the walk (8 headers, every kind) is read to its end...
    let chain = [
        Ext::HOP,
        Ext::DEST,
        routing,
        atomic_fragment,
        Ext::Ah { len: 1 },
        Ext::DEST,
        Ext::DEST,
        Ext::DEST,
    ];
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(CLIENT6, SERVER6, &chain, 8100, 80)),
        (PASS, vec![FWD_TCP]),
        "8 extension headers, allowed"
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(CLIENT6, SERVER6, &chain, 8101, 81)).0,
        DROP,
        "8 extension headers, denied"
    );
    // ... one more is an unknown upper layer: refused, whatever the ports.
    let mut too_long = chain.to_vec();
    too_long.push(Ext::DEST);
    let header_chain = (VERDICT_DROPPED, 0, REASON_IPV6_HEADER_CHAIN);
    assert_eq!(
        run(
            &f,
            PROG_TO_POD,
            &tcp6(CLIENT6, SERVER6, &too_long, 8102, 80)
        ),
        (DROP, vec![header_chain]),
        "9 extension headers"
    );
    assert_eq!(
        run(
            &f,
            PROG_FROM_POD,
            &tcp6(SERVER6, BLOCK6, &too_long, 8103, 443)
        ),
        (DROP, vec![header_chain]),
        "9 extension headers, out of the pod"
    );
    let audit = fixture(true);
    assert_eq!(
        run(
            &audit,
            PROG_TO_POD,
            &tcp6(CLIENT6, SERVER6, &too_long, 8104, 80)
        ),
        (PASS, vec![(VERDICT_AUDIT, 0, REASON_IPV6_HEADER_CHAIN)]),
        "audit: passes, counted"
    );
}

#[test]
fn ipv6_other_next_headers_are_that_protocol_without_ports() {
    if !kernel_or_skip("ipv6 other next headers") {
        return;
    }
    let f = fixture(false);
    // Bytes that would read as "port 80" at the start of the payload: a wrong offset for
    // ports would show.
    let looks_like_port_80 = ports(9000, 80, 16);
    for (what, next) in [
        ("ESP", packets::ESP),
        ("no next header", packets::NO_NEXT_HEADER),
        ("GRE", packets::GRE),
        ("mobility", packets::MOBILITY),
    ] {
        // Only a rule for any protocol (admin's) admits them; the client's rules name
        // protocols and ports.
        assert_eq!(
            run(
                &f,
                PROG_TO_POD,
                &ipv6(ADMIN6, SERVER6, &[], next, &looks_like_port_80)
            ),
            (PASS, vec![(VERDICT_FORWARDED, next, 0)]),
            "{what} from admin"
        );
        assert_eq!(
            run(
                &f,
                PROG_TO_POD,
                &ipv6(CLIENT6, SERVER6, &[], next, &looks_like_port_80)
            ),
            (DROP, vec![(VERDICT_DROPPED, next, REASON_POLICY_DENIED)]),
            "{what} from client"
        );
        // Behind extension headers too.
        assert_eq!(
            run(
                &f,
                PROG_TO_POD,
                &ipv6(
                    CLIENT6,
                    SERVER6,
                    &[Ext::HOP, Ext::DEST],
                    next,
                    &looks_like_port_80
                )
            )
            .0,
            DROP,
            "{what} behind extension headers, from client"
        );
    }
    // ESP with nothing after its header's first bytes is not truncated: it has no ports.
    assert_eq!(
        run(
            &f,
            PROG_TO_POD,
            &ipv6(ADMIN6, SERVER6, &[], packets::ESP, &[])
        )
        .0,
        PASS,
        "empty ESP from admin"
    );
}

#[test]
fn truncated_ipv6_is_malformed() {
    if !kernel_or_skip("truncated ipv6") {
        return;
    }
    let f = fixture(false);
    let malformed = (VERDICT_DROPPED, 0, REASON_MALFORMED);
    let full = tcp6(CLIENT6, SERVER6, &[Ext::HOP], 9000, 80);
    // BPF_PROG_TEST_RUN may refuse a frame shorter than an IPv6 header (as it does for
    // IPv4); if the kernel accepts it, the program must drop it.
    let cut = f.dp.test_run(PROG_TO_POD, &full[..14 + 30]);
    match cut {
        Ok(verdict) => assert_eq!(verdict, DROP, "truncated IPv6 header"),
        Err(e) => assert!(
            format!("{e:?}").contains("InvalidInput"),
            "unexpected error {e:?}"
        ),
    }
    assert_eq!(
        run(&f, PROG_TO_POD, &full[..14 + 40 + 4]),
        (DROP, vec![malformed]),
        "truncated extension header"
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &full[..14 + 40 + 8 + 10]),
        (DROP, vec![malformed]),
        "truncated TCP header"
    );
    // A Hop-by-Hop header saying it is longer than the packet.
    let long = tcp6(
        CLIENT6,
        SERVER6,
        &[Ext::Opts {
            kind: packets::HOP_BY_HOP,
            len: 200,
        }],
        9001,
        80,
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &long[..14 + 40 + 100]),
        (DROP, vec![malformed]),
        "extension header past the end"
    );
    assert_eq!(
        run(
            &f,
            PROG_TO_POD,
            &ipv6(CLIENT6, SERVER6, &[], ICMPV6, &[128, 0, 0, 0])
        ),
        (DROP, vec![malformed]),
        "ICMPv6 shorter than its header"
    );
    let mut bad_version = full.clone();
    bad_version[14] = 0x40;
    assert_eq!(
        run(&f, PROG_TO_POD, &bad_version),
        (DROP, vec![malformed]),
        "IP version 4 in an IPv6 frame"
    );
    // Audit: passes, counted.
    let audit = fixture(true);
    assert_eq!(
        run(&audit, PROG_TO_POD, &full[..14 + 40 + 4]),
        (PASS, vec![(VERDICT_AUDIT, 0, REASON_MALFORMED)])
    );
}

#[test]
fn ipv6_fragments_inherit_the_first_fragments_verdict() {
    if !kernel_or_skip("ipv6 fragments") {
        return;
    }
    let f = fixture(false);
    let frag = |offset, more, id| Ext::Frag { offset, more, id };
    let first = |id, sport, dport| tcp6(CLIENT6, SERVER6, &[frag(0, true, id)], sport, dport);
    let later =
        |src, offset, more, id| ipv6(src, SERVER6, &[frag(offset, more, id)], TCP, &[0u8; 64]);
    // Allowed datagram: its first fragment passes, the later ones inherit it (counted as
    // forwarded TCP).
    assert_eq!(
        run(&f, PROG_TO_POD, &first(0x0100_0077, 9100, 80)),
        (PASS, vec![FWD_TCP])
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &later(CLIENT6, 185, true, 0x0100_0077)),
        (PASS, vec![FWD_TCP])
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &later(CLIENT6, 370, false, 0x0100_0077)),
        (PASS, vec![FWD_TCP]),
        "last fragment"
    );
    // Denied datagram: so are its later fragments.
    assert_eq!(run(&f, PROG_TO_POD, &first(0x0100_0078, 9101, 81)).0, DROP);
    assert_eq!(
        run(&f, PROG_TO_POD, &later(CLIENT6, 185, false, 0x0100_0078)),
        (DROP, vec![(VERDICT_DROPPED, TCP, REASON_FRAGMENT)])
    );
    // A later fragment whose first was never seen: no ports, no port rule admits it.
    assert_eq!(
        run(&f, PROG_TO_POD, &later(CLIENT6, 185, false, 0x0100_0079)),
        (DROP, vec![(VERDICT_DROPPED, TCP, REASON_FRAGMENT)])
    );
    // ... though a rule for any protocol does (admin).
    assert_eq!(
        run(&f, PROG_TO_POD, &later(ADMIN6, 185, false, 0x0100_0080)).0,
        PASS
    );
    // Fragments belong to their source: same id, other source.
    assert_eq!(
        run(&f, PROG_TO_POD, &later(STRANGER6, 185, false, 0x0100_0077)).0,
        DROP
    );
    // The upper layer after more headers in the first fragment: the later fragments (which
    // carry only the Fragment header) still find it (keyed by the Fragment header's next
    // header, the same in every fragment).
    let first_with_dest = tcp6(
        CLIENT6,
        SERVER6,
        &[frag(0, true, 0x0100_0081), Ext::DEST],
        9102,
        80,
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &first_with_dest),
        (PASS, vec![FWD_TCP])
    );
    let later_after_dest = ipv6(
        CLIENT6,
        SERVER6,
        &[frag(185, false, 0x0100_0081)],
        packets::DEST_OPTS,
        &[0u8; 64],
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &later_after_dest),
        (PASS, vec![(VERDICT_FORWARDED, packets::DEST_OPTS, 0)])
    );
    // Out of the pod: the first fragment of an allowed datagram (TCP 443 to the ipBlock).
    let out_first = tcp6(SERVER6, BLOCK6, &[frag(0, true, 5)], 9103, 443);
    assert_eq!(run(&f, PROG_FROM_POD, &out_first).0, PASS);
    let out_later = ipv6(SERVER6, BLOCK6, &[frag(185, false, 5)], TCP, &[0u8; 64]);
    assert_eq!(run(&f, PROG_FROM_POD, &out_later).0, PASS);
}

#[test]
fn neighbor_discovery_always_passes_uncounted() {
    if !kernel_or_skip("neighbor discovery") {
        return;
    }
    // Blocking mode, a pod isolated both ways, and one without an IPv6 address.
    for pod in ["server", "legacy"] {
        let f = kernel::load("cns-trun-", MANIFESTS, &[("a", pod, 1)], false);
        let target = SERVER6.to_vec();
        let nd = [
            (133, ROUTER_LL, ALL_ROUTERS, vec![0u8; 4]),
            (134, ROUTER_LL, ALL_NODES, vec![0u8; 12]),
            (
                135,
                [0u8; 16],
                ALL_NODES,
                [vec![0u8; 4], target.clone()].concat(),
            ),
            (
                135,
                LINK_LOCAL,
                ROUTER_LL,
                [vec![0u8; 4], target.clone()].concat(),
            ),
            (
                136,
                LINK_LOCAL,
                ROUTER_LL,
                [vec![0x60, 0, 0, 0], target.clone()].concat(),
            ),
            (
                137,
                ROUTER_LL,
                LINK_LOCAL,
                [vec![0u8; 4], target.clone(), target.clone()].concat(),
            ),
        ];
        for (kind, src, dst, body) in nd {
            let msg = ipv6(src, dst, &[], ICMPV6, &icmp6(kind, 0, &body));
            let back = ipv6(dst, src, &[], ICMPV6, &icmp6(kind, 0, &body));
            assert_eq!(
                run(&f, PROG_TO_POD, &msg),
                (PASS, vec![]),
                "{pod}: {kind} in"
            );
            assert_eq!(
                run(&f, PROG_FROM_POD, &back),
                (PASS, vec![]),
                "{pod}: {kind} out"
            );
            // Behind a Hop-by-Hop header too.
            let hop = ipv6(src, dst, &[Ext::HOP], ICMPV6, &icmp6(kind, 0, &body));
            assert_eq!(
                run(&f, PROG_TO_POD, &hop),
                (PASS, vec![]),
                "{pod}: {kind}, hop-by-hop"
            );
            // XDP leaves it to TC.
            assert_eq!(f.dp.test_run(PROG_XDP, &msg).unwrap(), XDP_PASS);
        }
        // Other ICMPv6 is under policy (a multicast listener report from a link-local
        // source is not the pod's: spoofed).
        let mld = ipv6(
            LINK_LOCAL,
            ALL_NODES,
            &[Ext::HOP],
            ICMPV6,
            &icmp6(143, 0, &[0u8; 4]),
        );
        assert_eq!(
            run(&f, PROG_FROM_POD, &mld),
            (DROP, vec![(VERDICT_DROPPED, ICMPV6, REASON_SPOOFED)]),
            "{pod}: MLD"
        );
    }
}

#[test]
fn icmpv6_echo_is_under_policy() {
    if !kernel_or_skip("icmpv6 echo") {
        return;
    }
    let f = fixture(false);
    let echo = |src, dst, kind, id| ipv6(src, dst, &[], ICMPV6, &icmp6_echo(kind, id, 1));
    // Ports are named by TCP/UDP/SCTP rules only: only admin's rule (any protocol) admits
    // ICMPv6.
    assert_eq!(
        run(&f, PROG_TO_POD, &echo(CLIENT6, SERVER6, 128, 0x4242)),
        (DROP, vec![(VERDICT_DROPPED, ICMPV6, REASON_POLICY_DENIED)]),
        "from client"
    );
    assert_eq!(
        run(&f, PROG_TO_POD, &echo(ADMIN6, SERVER6, 128, 0x4343)),
        (PASS, vec![(VERDICT_FORWARDED, ICMPV6, 0)]),
        "from admin"
    );
    // The reply (same identifier) leaves on the request's conntrack entry; another
    // identifier is a new flow, denied by egress policy.
    assert_eq!(
        run(&f, PROG_FROM_POD, &echo(SERVER6, ADMIN6, 129, 0x4343)),
        (PASS, vec![(VERDICT_FORWARDED, ICMPV6, 0)]),
        "reply"
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &echo(SERVER6, ADMIN6, 129, 0x4444)).0,
        DROP,
        "reply to no request"
    );
    // Other ICMPv6 (node information query, 139) is ICMPv6 under policy too.
    assert_eq!(
        run(
            &f,
            PROG_TO_POD,
            &ipv6(CLIENT6, SERVER6, &[], ICMPV6, &icmp6(139, 0, &[0u8; 12]))
        ),
        (DROP, vec![(VERDICT_DROPPED, ICMPV6, REASON_POLICY_DENIED)])
    );
}

#[test]
fn icmpv6_errors_follow_their_connection() {
    if !kernel_or_skip("icmpv6 errors") {
        return;
    }
    let f = fixture(false);
    // The pod opens an allowed connection (TCP 443 to the ipBlock).
    let sent = tcp6(SERVER6, BLOCK6, &[], 9200, 443);
    assert_eq!(run(&f, PROG_FROM_POD, &sent).0, PASS);
    let never_sent = tcp6(SERVER6, BLOCK6, &[], 9201, 443);
    // A router the pod's ingress policy does not admit reports on it: packet too big (path
    // MTU discovery), unreachable, time exceeded, parameter problem. They pass, counted as
    // ICMPv6 forwarded.
    for (kind, code) in [(2, 0), (1, 4), (3, 0), (4, 0)] {
        let error = ipv6(
            STRANGER6,
            SERVER6,
            &[],
            ICMPV6,
            &icmp6_error(kind, code, &sent),
        );
        assert_eq!(
            run(&f, PROG_TO_POD, &error),
            (PASS, vec![(VERDICT_FORWARDED, ICMPV6, 0)]),
            "error {kind} about the connection"
        );
        let unrelated = ipv6(
            STRANGER6,
            SERVER6,
            &[],
            ICMPV6,
            &icmp6_error(kind, code, &never_sent),
        );
        assert_eq!(
            run(&f, PROG_TO_POD, &unrelated),
            (DROP, vec![(VERDICT_DROPPED, ICMPV6, REASON_POLICY_DENIED)]),
            "error {kind} about no connection"
        );
    }
    // An error about the connection sent to another address than the one that sent the
    // quoted packet is not related (here: to the pod's peer, seen out of the pod).
    let misdirected = ipv6(SERVER6, CLIENT6, &[], ICMPV6, &icmp6_error(2, 0, &sent));
    assert_eq!(run(&f, PROG_FROM_POD, &misdirected).0, DROP, "misdirected");
    // The pod's own errors about a connection it accepted (TCP 80 from the client) leave:
    // port unreachable about the client's packet.
    let came_in = tcp6(CLIENT6, SERVER6, &[], 9202, 80);
    assert_eq!(run(&f, PROG_TO_POD, &came_in).0, PASS);
    let answer = ipv6(SERVER6, CLIENT6, &[], ICMPV6, &icmp6_error(1, 4, &came_in));
    assert_eq!(
        run(&f, PROG_FROM_POD, &answer),
        (PASS, vec![(VERDICT_FORWARDED, ICMPV6, 0)])
    );
    // ... but not with another source (spoofed).
    let spoofed = ipv6(
        STRANGER6,
        CLIENT6,
        &[],
        ICMPV6,
        &icmp6_error(1, 4, &came_in),
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &spoofed),
        (DROP, vec![(VERDICT_DROPPED, ICMPV6, REASON_SPOOFED)])
    );
}

#[test]
fn ipv6_source_must_be_the_pods_own() {
    if !kernel_or_skip("ipv6 anti-spoofing") {
        return;
    }
    let f = fixture(false);
    let spoofed = (VERDICT_DROPPED, TCP, REASON_SPOOFED);
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, BLOCK6, &[], 9300, 443)).0,
        PASS
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(STRANGER6, BLOCK6, &[], 9301, 443)),
        (DROP, vec![spoofed]),
        "another pod's address"
    );
    // Link-local sources are for Neighbor Discovery only (tested above).
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(LINK_LOCAL, BLOCK6, &[], 9302, 443)),
        (DROP, vec![spoofed]),
        "link-local"
    );
    // Audit mode counts them and lets them pass.
    let audit = fixture(true);
    assert_eq!(
        run(
            &audit,
            PROG_FROM_POD,
            &tcp6(LINK_LOCAL, BLOCK6, &[], 9303, 443)
        ),
        (PASS, vec![(VERDICT_AUDIT, TCP, REASON_SPOOFED)])
    );
    // A pod without an IPv6 address sends no IPv6 (its egress allows the ipBlock). Its
    // IPv4 is its own.
    let legacy = kernel::load("cns-trun-", MANIFESTS, &[("a", "legacy", 1)], false);
    assert_eq!(
        run(
            &legacy,
            PROG_FROM_POD,
            &tcp6(SERVER6, BLOCK6, &[], 9304, 443)
        ),
        (DROP, vec![spoofed]),
        "IPv6 from an IPv4-only pod"
    );
    assert_eq!(
        run(
            &legacy,
            PROG_FROM_POD,
            &tcp6([0; 16], BLOCK6, &[], 9305, 443)
        ),
        (DROP, vec![spoofed]),
        "the unspecified address"
    );
    assert_eq!(
        run(
            &legacy,
            PROG_FROM_POD,
            &ipv4([10, 0, 1, 20], CLIENT, SCTP, 0, 0, &ports(9306, 9000, 8))
        ),
        (PASS, vec![(VERDICT_FORWARDED, SCTP, 0)]),
        "its IPv4"
    );
}

#[test]
fn xdp_handles_ipv6_like_ipv4() {
    if !kernel_or_skip("xdp ipv6") {
        return;
    }
    let f = fixture(false);
    let xdp = |pkt: &[u8]| run(&f, PROG_XDP, pkt);
    // Denied: dropped in XDP, counted as TC counts it; again on the deny cache.
    let denied = tcp6(STRANGER6, SERVER6, &[], 9400, 80);
    assert_eq!(xdp(&denied), (XDP_DROP, vec![DENIED_TCP]));
    assert_eq!(
        xdp(&tcp6(STRANGER6, SERVER6, &[], 9401, 80)),
        (XDP_DROP, vec![DENIED_TCP]),
        "deny cache"
    );
    assert_eq!(run(&f, PROG_TO_POD, &denied).0, DROP, "TC agrees");
    // Allowed: passes uncounted, TC counts it on the conntrack entry XDP created.
    let allowed = tcp6(CLIENT6, SERVER6, &[Ext::DEST], 9402, 80);
    assert_eq!(xdp(&allowed), (XDP_PASS, vec![]));
    assert_eq!(run(&f, PROG_TO_POD, &allowed), (PASS, vec![FWD_TCP]));
    // Left to TC: fragments, ICMPv6 errors, chains longer than the walk, malformed, not
    // for a local pod.
    let too_long = [Ext::DEST; 9];
    for (what, pkt) in [
        (
            "first fragment",
            tcp6(
                STRANGER6,
                SERVER6,
                &[Ext::Frag {
                    offset: 0,
                    more: true,
                    id: 1,
                }],
                9403,
                80,
            ),
        ),
        (
            "later fragment",
            ipv6(
                STRANGER6,
                SERVER6,
                &[Ext::Frag {
                    offset: 9,
                    more: false,
                    id: 1,
                }],
                TCP,
                &[0; 16],
            ),
        ),
        (
            "ICMPv6 error",
            ipv6(
                STRANGER6,
                SERVER6,
                &[],
                ICMPV6,
                &icmp6_error(2, 0, &tcp6(SERVER6, BLOCK6, &[], 1, 443)),
            ),
        ),
        (
            "header chain",
            tcp6(STRANGER6, SERVER6, &too_long, 9404, 80),
        ),
        (
            "truncated",
            tcp6(STRANGER6, SERVER6, &[], 9405, 80)[..14 + 40 + 6].to_vec(),
        ),
        ("not a local pod", tcp6(STRANGER6, CLIENT6, &[], 9406, 80)),
    ] {
        assert_eq!(xdp(&pkt), (XDP_PASS, vec![]), "{what}");
    }
}

#[test]
fn ipv6_events_carry_the_family_and_addresses() {
    if !kernel_or_skip("ipv6 events") {
        return;
    }
    let mut f = fixture(false);
    let mut config = f.dp.config().unwrap();
    config.event_rate = 1000;
    config.event_burst = 1000;
    f.dp.set_config(&config).unwrap();
    let path = f.dp.maps_dir().join(cns_common::maps::EVENTS);
    let mut ring = aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(
        aya::maps::MapData::from_pin(&path).expect("open the pinned ring buffer"),
    ))
    .expect("ring buffer");
    while ring.next().is_some() {}
    assert_eq!(
        run(&f, PROG_TO_POD, &tcp6(STRANGER6, SERVER6, &[], 9500, 81)).0,
        DROP
    );
    assert_eq!(
        run(&f, PROG_FROM_POD, &tcp6(SERVER6, CLIENT6, &[], 9501, 80)).0,
        DROP
    );
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert!(item.len() >= size_of::<Event>());
        // SAFETY: the programs write whole `Event`s.
        events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
    }
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.family,
                cns_agent::events::addresses(e),
                e.proto,
                u16::from_be(e.dport),
                e.reason,
            )
        })
        .collect();
    let addr = |a: [u8; 16]| std::net::IpAddr::from(Ipv6Addr::from(a));
    assert_eq!(
        seen,
        [
            (
                FAMILY_IPV6,
                Some((addr(STRANGER6), addr(SERVER6))),
                TCP,
                81,
                REASON_POLICY_DENIED
            ),
            (
                FAMILY_IPV6,
                Some((addr(SERVER6), addr(CLIENT6))),
                TCP,
                80,
                REASON_POLICY_DENIED
            ),
        ]
    );
}

/// Each program stays within three quarters of the verifier's limit of 1M processed
/// instructions, so that the next feature still fits (the counts are printed; issue 17:
/// TC went from 67k before ClusterNetworkPolicy to 142k with it and about 575k with dry-run
/// policies).
#[test]
fn programs_stay_within_the_verifier_budget() {
    if !kernel_or_skip("verifier budget") {
        return;
    }
    let f = fixture(false);
    for (name, n) in f.dp.verified_instructions() {
        eprintln!("{name}: {n:?} instructions verified");
        let n = n.unwrap_or_else(|| panic!("{name}: the kernel did not say"));
        assert!(n < 750_000, "{name}: {n} instructions verified");
    }
}

/// The agent learns the programs' clock (jiffies per second) by timing jiffy edges at load:
/// its HZ is the kernel's `CONFIG_HZ` (where the kernel's config says), the one the programs
/// are configured with, and the rate at which the kernel's jiffies advance.
#[test]
fn the_agent_knows_the_programs_clock() {
    if !kernel_or_skip("programs' clock") {
        return;
    }
    let f = fixture(false);
    let hz = f.dp.clock().hz();
    assert_eq!(f.dp.config().expect("config").hz, hz);
    let (j0, t0) = f.dp.kernel_clock().expect("kernel clock");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (j1, t1) = f.dp.kernel_clock().expect("kernel clock");
    let rate = (j1 - j0) as f64 * 1e9 / (t1 - t0) as f64;
    assert!(
        (rate / f64::from(hz) - 1.0).abs() < 0.1,
        "jiffies advance {rate:.1}/s, hz {hz}"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim()));
    if let Some(config_hz) = config.ok().and_then(|c| {
        c.lines()
            .find_map(|l| l.strip_prefix("CONFIG_HZ=").map(|v| v.parse::<u32>()))
    }) {
        assert_eq!(Ok(hz), config_hz, "CONFIG_HZ");
    }
}
