//! A virtual node: a "node" netns with ip_forward, an uplink veth to an "outside" netns
//! (node 10.255.0.1/30, outside 10.255.0.2/30, the node's default route over it), and one
//! netns per pod joined to the node by a veth (pod address /32 on eth0, default route via
//! 169.254.1.1; on the node a /32 route per pod and proxy ARP). The recipe is the one in
//! ../shared/TOOLCHAIN.md.

use std::net::Ipv4Addr;

use crate::{sh, unique};

pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
pub const NODE_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

/// A pod's network: its netns, address and the node-side veth name.
#[derive(Clone, Debug)]
pub struct PodNet {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub veth: String,
}

pub struct VirtualNode {
    pub node: String,
    pub outside: String,
    pub pods: Vec<PodNet>,
    prefix: String,
    /// Numbers pod namespaces and veths; never reused, even after `remove_pod`.
    next_pod: usize,
}

impl VirtualNode {
    pub fn new() -> Self {
        let prefix = unique("cns");
        let node = format!("{prefix}-node");
        let outside = format!("{prefix}-out");
        let vn = Self {
            node: node.clone(),
            outside: outside.clone(),
            pods: Vec::new(),
            prefix: prefix.clone(),
            next_pod: 0,
        };
        // From here on, Drop cleans up whatever was made.
        add_netns(&node);
        add_netns(&outside);
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
        vn
    }

    /// Adds a pod netns with address `ip`.
    pub fn add_pod(&mut self, ip: Ipv4Addr) -> PodNet {
        let i = self.next_pod;
        self.next_pod += 1;
        let netns = format!("{}-p{i}", self.prefix);
        let veth = format!("{}v{i}", self.prefix);
        add_netns(&netns);
        let pod = PodNet {
            netns: netns.clone(),
            ip,
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
        p(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        p(&["ip", "link", "set", "eth0", "up"]);
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
        let node = self.node.clone();
        let n = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &node];
            v.extend_from_slice(args);
            sh(&v)
        };
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
        n(&["ip", "route", "add", &format!("{ip}/32"), "dev", &veth]);
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

/// Creates a netns without IPv6: the agent enforces IPv4, and the IPv6 the kernel sends on its
/// own when links come up (router solicitations, MLD reports, DAD) would reach isolated pods as
/// counted drops at random moments and make the tests' exact counts racy.
fn add_netns(name: &str) {
    sh(&["ip", "netns", "add", name]);
    sh(&[
        "ip",
        "netns",
        "exec",
        name,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
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
