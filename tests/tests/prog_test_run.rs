//! The kernel programs on crafted packets through `BPF_PROG_TEST_RUN`: SCTP (no SCTP
//! sockets on this kernel), IPv6, IP options, fragments and malformed headers. The maps are
//! written by the agent's own pipeline (compile -> encode -> reconcile) for a pod whose veth
//! is, for the test run, the loopback (ifindex 1).

use cns_agent::{
    datapath::{PROG_FROM_POD, PROG_TO_POD},
    reconcile,
};
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
status: {phase: Running, podIP: 10.0.1.10}
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
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]
    ports:
    - {protocol: SCTP, port: 9000}
    - {protocol: SCTP, port: sig}
    - {protocol: TCP, port: 80}
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.0/24}}]
    ports: [{protocol: SCTP, port: 9000}]
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
    // Truncated TCP header.
    assert_eq!(run(&full[..14 + 20 + 6]), DROP, "truncated TCP header");
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
    let port_80: Vec<_> = trie
        .iter()
        .map(|kv| kv.expect("trie entry"))
        .filter(|(k, _)| {
            k.prefix_len() == 96 && k.data().proto == TCP && k.data().port == 80u16.to_be_bytes()
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
    let value = PolicyValue {
        policy_id: 7,
        _pad: 0,
    };
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
