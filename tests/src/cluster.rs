//! The standard test cluster: three namespaces and four pods on one virtual node, each pod
//! serving TCP echo on 8080, 8090 and 9090 and UDP echo on 5353.
//!
//! | pod            | ip          | labels      | named ports              |
//! |----------------|-------------|-------------|--------------------------|
//! | alpha/server   | 10.0.1.10   | app=server  | http 8080/TCP, dns 5353/UDP |
//! | beta/client    | 10.0.2.10   | role=client |                          |
//! | beta/other     | 10.0.2.200  | role=other  |                          |
//! | gamma/client   | 10.0.3.10   | role=client |                          |
//!
//! On an IPv6-only or dual-stack node ([`Cluster::start_in`]) each pod also (or only) has
//! the IPv6 address `netns::v6_of` gives (alpha/server: fd00:10:0:1::a).

use std::net::{IpAddr, Ipv4Addr};

use crate::{
    AgentProcess, Family, PodNet, VirtualNode,
    manifests::{docs, namespace, pod_with_ips},
    netns::v6_of,
    traffic::{tcp_echo_server, udp_echo_server},
};

pub const TCP_PORTS: [u16; 3] = [8080, 8090, 9090];
/// alpha/server's address.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);

/// alpha/server accepts only beta (a policy the restart and hardening tests share).
pub const ONLY_BETA: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-beta, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: beta}}}]
";
pub const UDP_PORT: u16 = 5353;

pub struct Cluster {
    // Field order is drop order: the agent goes before its node.
    pub agent: AgentProcess,
    pub server: PodNet,
    pub beta_client: PodNet,
    pub beta_other: PodNet,
    pub gamma_client: PodNet,
    pub node: VirtualNode,
}

/// The cluster's Namespace and Pod manifests.
pub fn cluster_yaml(beta_client_role: &str) -> String {
    cluster_yaml_in(Family::Ipv4, beta_client_role)
}

/// [`cluster_yaml`] with the pods' addresses of `family`.
pub fn cluster_yaml_in(family: Family, beta_client_role: &str) -> String {
    let ips = |v4: Ipv4Addr| -> Vec<IpAddr> {
        let mut out = Vec::new();
        if family.has_v4() {
            out.push(v4.into());
        }
        if family.has_v6() {
            out.push(v6_of(v4).into());
        }
        out
    };
    let pod = |ns: &str, name: &str, labels: &[(&str, &str)], ip, ports: &[(&str, u16, &str)]| {
        pod_with_ips(ns, name, labels, &ips(ip), ports)
    };
    docs(&[
        namespace("alpha", &[("team", "alpha")]),
        namespace("beta", &[("team", "beta")]),
        namespace("gamma", &[("team", "gamma")]),
        pod(
            "alpha",
            "server",
            &[("app", "server")],
            Ipv4Addr::new(10, 0, 1, 10),
            &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        ),
        pod(
            "beta",
            "client",
            &[("role", beta_client_role)],
            Ipv4Addr::new(10, 0, 2, 10),
            &[],
        ),
        pod(
            "beta",
            "other",
            &[("role", "other")],
            Ipv4Addr::new(10, 0, 2, 200),
            &[],
        ),
        pod(
            "gamma",
            "client",
            &[("role", "client")],
            Ipv4Addr::new(10, 0, 3, 10),
            &[],
        ),
    ])
}

impl Cluster {
    /// Builds the node and pods, starts servers, and starts the agent (blocking mode unless
    /// `audit`) with the cluster manifests plus `policies` (file name, YAML).
    pub fn start(audit: bool, policies: &[(&str, &str)]) -> Self {
        Self::start_with(audit, policies, &[])
    }

    /// Like [`Cluster::start`], with extra `cns-agent run` arguments.
    pub fn start_with(audit: bool, policies: &[(&str, &str)], extra_args: &[&str]) -> Self {
        Self::start_in(Family::Ipv4, audit, policies, extra_args)
    }

    /// Like [`Cluster::start_with`], on a node (and pods) of `family`.
    pub fn start_in(
        family: Family,
        audit: bool,
        policies: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Self {
        let mut node = VirtualNode::with_family(family);
        let server = node.add_pod(Ipv4Addr::new(10, 0, 1, 10));
        let beta_client = node.add_pod(Ipv4Addr::new(10, 0, 2, 10));
        let beta_other = node.add_pod(Ipv4Addr::new(10, 0, 2, 200));
        let gamma_client = node.add_pod(Ipv4Addr::new(10, 0, 3, 10));
        for p in [&server, &beta_client, &beta_other, &gamma_client] {
            for port in TCP_PORTS {
                tcp_echo_server(&p.netns, port);
            }
            udp_echo_server(&p.netns, UDP_PORT);
        }
        let cluster = cluster_yaml_in(family, "client");
        let mut files = vec![("cluster.yaml", cluster.as_str())];
        files.extend_from_slice(policies);
        let agent = AgentProcess::start_with(&node, audit, &files, extra_args);
        Self {
            agent,
            server,
            beta_client,
            beta_other,
            gamma_client,
            node,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_yaml_parses() {
        for family in crate::Family::ALL {
            let yaml = super::cluster_yaml_in(family, "client");
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(docs.len(), 7);
        }
    }
}
