//! The virtual node in each address family (IPv4-only, IPv6-only, dual-stack), first
//! without the agent (the network itself: pods reach each other and the outside in every
//! family they have), then with it.

use cns_tests::{
    Family, VirtualNode, kernel_or_skip,
    netns::{OUTSIDE_IP, OUTSIDE_IP6},
    traffic::{tcp_echo_server, tcp_ok, udp_echo_server, udp_ok},
};

#[test]
fn the_virtual_node_connects_pods_in_every_family() {
    if !kernel_or_skip("families") {
        return;
    }
    for family in Family::ALL {
        let mut node = VirtualNode::with_family(family);
        let a = node.add_pod("10.0.1.10".parse().unwrap());
        let b = node.add_pod("10.0.2.10".parse().unwrap());
        tcp_echo_server(&b.netns, 8080);
        udp_echo_server(&b.netns, 5353);
        tcp_echo_server(&node.outside, 8080);
        for to in b.addrs(family) {
            assert!(tcp_ok(&a.netns, to, 8080), "{family:?}: tcp {to}");
            assert!(udp_ok(&a.netns, to, 5353), "{family:?}: udp {to}");
        }
        if family.has_v4() {
            assert!(tcp_ok(&a.netns, OUTSIDE_IP, 8080), "{family:?}: outside");
        }
        if family.has_v6() {
            assert!(
                tcp_ok(&a.netns, OUTSIDE_IP6, 8080),
                "{family:?}: outside v6"
            );
        }
        let count = match family {
            Family::Dual => 2,
            _ => 1,
        };
        assert_eq!(b.addrs(family).len(), count, "{family:?}");
    }
}
