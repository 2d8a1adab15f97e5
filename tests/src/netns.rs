//! A virtual node: a "node" netns with forwarding, an uplink veth to an "outside" netns
//! (node 10.255.0.1/30, outside 10.255.0.2/30, the node's default route over it), and one
//! netns per pod joined to the node by a veth (pod address /32 on eth0, default route via
//! 169.254.1.1; on the node a /32 route per pod and proxy ARP). The recipe is the one in
//! ../shared/TOOLCHAIN.md.
//!
//! In the IPv6 families ([`Family`]) the same in IPv6: uplink fd00:ff::1/64 and ::2, each
//! pod's address (10.a.b.c becomes fd00:10:a:b::c, see [`v6_of`]) /128 on eth0 with its
//! default route via fe80::1 (the node side of every veth holds fe80::1), and on the node a
//! /128 route per pod. Addresses skip duplicate address detection (`nodad`), so a pod is
//! reachable at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{sh, unique};

pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
pub const NODE_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 2);
pub const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 1);

/// Which address families a virtual node and its pods have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
    /// Every pod has both; IPv4 is its `podIP`.
    Dual,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Ipv4, Family::Ipv6, Family::Dual];

    pub fn has_v4(self) -> bool {
        self != Family::Ipv6
    }

    pub fn has_v6(self) -> bool {
        self != Family::Ipv4
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Dual => "dual",
        }
    }
}

/// The IPv6 address of a pod whose IPv4 address is 10.a.b.c: fd00:10:a:b::c.
pub fn v6_of(ip: Ipv4Addr) -> Ipv6Addr {
    let [_, a, b, c] = ip.octets();
    Ipv6Addr::new(0xfd00, 0x10, a.into(), b.into(), 0, 0, 0, c.into())
}

/// A pod's network: its netns, addresses and the node-side veth name.
#[derive(Clone, Debug)]
pub struct PodNet {
    pub netns: String,
    /// The IPv4 address the pod is named by (configured unless the node is IPv6-only).
    pub ip: Ipv4Addr,
    /// Its IPv6 address, in the IPv6 families.
    pub ip6: Option<Ipv6Addr>,
    pub veth: String,
}

impl PodNet {
    /// The pod's address in `family` (`Dual` counts as IPv4).
    pub fn addr(&self, v6: bool) -> IpAddr {
        match (v6, self.ip6) {
            (true, Some(a)) => IpAddr::V6(a),
            _ => IpAddr::V4(self.ip),
        }
    }

    /// Every address the pod has (IPv4 first).
    pub fn addrs(&self, family: Family) -> Vec<IpAddr> {
        let mut out = Vec::new();
        if family.has_v4() {
            out.push(IpAddr::V4(self.ip));
        }
        if let Some(a) = self.ip6.filter(|_| family.has_v6()) {
            out.push(IpAddr::V6(a));
        }
        out
    }
}

pub struct VirtualNode {
    pub node: String,
    pub outside: String,
    pub pods: Vec<PodNet>,
    pub family: Family,
    prefix: String,
    /// Numbers pod namespaces and veths; never reused, even after `remove_pod`.
    next_pod: usize,
}

impl VirtualNode {
    pub fn new() -> Self {
        Self::with_family(Family::Ipv4)
    }

    pub fn with_family(family: Family) -> Self {
        let prefix = unique("cns");
        let node = format!("{prefix}-node");
        let outside = format!("{prefix}-out");
        let vn = Self {
            node: node.clone(),
            outside: outside.clone(),
            pods: Vec::new(),
            family,
            prefix: prefix.clone(),
            next_pod: 0,
        };
        // From here on, Drop cleans up whatever was made.
        add_netns(&node, family);
        add_netns(&outside, family);
        let up_node = format!("{prefix}u");
        let up_out = format!("{prefix}o");
        sh(&[
            "ip", "link", "add", &up_node, "netns", &node, "type", "veth", "peer", "name", &up_out,
            "netns", &outside,
        ]);
        let n = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &node];
            v.extend_from_slice(args);
            sh(&v)
        };
        n(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        n(&["ip", "link", "set", "lo", "up"]);
        n(&["ip", "addr", "add", "10.255.0.1/30", "dev", &up_node]);
        n(&["ip", "link", "set", &up_node, "up"]);
        n(&["ip", "route", "add", "default", "via", "10.255.0.2"]);
        let o = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &outside];
            v.extend_from_slice(args);
            sh(&v)
        };
        o(&["ip", "link", "set", "lo", "up"]);
        o(&["ip", "addr", "add", "10.255.0.2/30", "dev", &up_out]);
        o(&["ip", "link", "set", &up_out, "up"]);
        o(&["ip", "route", "add", "10.0.0.0/8", "via", "10.255.0.1"]);
        if family.has_v6() {
            let (node6, out6) = (format!("{NODE_UPLINK_IP6}/64"), format!("{OUTSIDE_IP6}/64"));
            n(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            n(&["ip", "-6", "addr", "add", &node6, "dev", &up_node, "nodad"]);
            n(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &OUTSIDE_IP6.to_string(),
            ]);
            o(&["ip", "-6", "addr", "add", &out6, "dev", &up_out, "nodad"]);
            o(&[
                "ip",
                "-6",
                "route",
                "add",
                "fd00:10::/32",
                "via",
                &NODE_UPLINK_IP6.to_string(),
            ]);
        }
        vn
    }

    /// Adds a pod netns with address `ip`.
    pub fn add_pod(&mut self, ip: Ipv4Addr) -> PodNet {
        let i = self.next_pod;
        self.next_pod += 1;
        let netns = format!("{}-p{i}", self.prefix);
        let veth = format!("{}v{i}", self.prefix);
        let family = self.family;
        add_netns(&netns, family);
        let pod = PodNet {
            netns: netns.clone(),
            ip,
            ip6: family.has_v6().then(|| v6_of(ip)),
            veth: veth.clone(),
        };
        self.pods.push(pod.clone());
        sh(&[
            "ip", "link", "add", &veth, "netns", &self.node, "type", "veth", "peer", "name",
            "eth0", "netns", &netns,
        ]);
        let p = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &netns];
            v.extend_from_slice(args);
            sh(&v)
        };
        p(&["ip", "link", "set", "lo", "up"]);
        if family.has_v4() {
            p(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        }
        if let Some(ip6) = pod.ip6 {
            p(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip6}/128"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        p(&["ip", "link", "set", "eth0", "up"]);
        if family.has_v4() {
            p(&[
                "ip",
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            p(&["ip", "route", "add", "default", "via", "169.254.1.1"]);
        }
        if family.has_v6() {
            p(&[
                "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
            ]);
        }
        let node = self.node.clone();
        let n = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &node];
            v.extend_from_slice(args);
            sh(&v)
        };
        if family.has_v6() {
            n(&[
                "ip",
                "-6",
                "addr",
                "add",
                "fe80::1/64",
                "dev",
                &veth,
                "nodad",
            ]);
        }
        n(&["ip", "link", "set", &veth, "up"]);
        n(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{veth}.proxy_arp=1"),
        ]);
        // Answer proxy ARP at once (the default waits a random 0-0.8 s), so a pod's first
        // packet is not held back longer than the tests' timeouts allow.
        n(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.neigh.{veth}.proxy_delay=0"),
        ]);
        if family.has_v4() {
            n(&["ip", "route", "add", &format!("{ip}/32"), "dev", &veth]);
        }
        if let Some(ip6) = pod.ip6 {
            n(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{ip6}/128"),
                "dev",
                &veth,
            ]);
        }
        pod
    }
}

impl VirtualNode {
    /// Deletes a pod's netns (and with it its veth and the node's route to it).
    pub fn remove_pod(&mut self, netns: &str) {
        sh(&["ip", "netns", "del", netns]);
        self.pods.retain(|p| p.netns != netns);
    }
}

/// Creates a netns. An IPv4 node's have IPv6 off: the IPv6 the kernel sends on its own when
/// links come up (router solicitations, MLD reports) would reach isolated pods at random
/// moments and make the tests' exact counts racy. The IPv6 families keep it, without
/// duplicate address detection or router solicitations.
fn add_netns(name: &str, family: Family) {
    sh(&["ip", "netns", "add", name]);
    let sysctls: &[&str] = if family.has_v6() {
        &[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.router_solicitations=0",
            "net.ipv6.conf.default.router_solicitations=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
        ]
    } else {
        &[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]
    };
    let mut cmd = vec!["ip", "netns", "exec", name, "sysctl", "-qw"];
    cmd.extend_from_slice(sysctls);
    sh(&cmd);
}

impl Default for VirtualNode {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for VirtualNode {
    fn drop(&mut self) {
        // Deleting a netns deletes its veth ends, and with them their peers.
        for pod in &self.pods {
            _ = std::process::Command::new("ip")
                .args(["netns", "del", &pod.netns])
                .status();
        }
        for ns in [&self.node, &self.outside] {
            _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}
