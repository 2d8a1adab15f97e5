//! Small YAML builders for the test manifests.

use std::net::Ipv4Addr;

use crate::agent::NODE_NAME;

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{name}\"\n  labels:\n{}",
        labels_yaml(labels, 4)
    )
}

/// A running pod on the test node; `ports` are named container ports (name, port, protocol).
pub fn pod(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ip: Ipv4Addr,
    ports: &[(&str, u16, &str)],
) -> String {
    pod_with_ips(ns, name, labels, &[ip.into()], ports)
}

/// [`pod`] with `status.podIPs` (the first is `podIP`), as on a dual-stack node.
pub fn pod_with_ips(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    ips: &[std::net::IpAddr],
    ports: &[(&str, u16, &str)],
) -> String {
    let ip = ips.first().map(ToString::to_string).unwrap_or_default();
    let pod_ips: String = ips.iter().map(|a| format!("  - ip: \"{a}\"\n")).collect();
    let mut ports_yaml = String::new();
    for (pname, port, proto) in ports {
        ports_yaml.push_str(&format!(
            "    - name: {pname}\n      containerPort: {port}\n      protocol: {proto}\n"
        ));
    }
    if ports_yaml.is_empty() {
        ports_yaml = "      []\n".into();
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"{name}\"\n  namespace: \"{ns}\"\n  labels:\n{}spec:\n  nodeName: {NODE_NAME}\n  containers:\n  - name: app\n    image: busybox\n    ports:\n{ports_yaml}status:\n  phase: Running\n  podIP: \"{ip}\"\n  podIPs:\n{pod_ips}",
        labels_yaml(labels, 4)
    )
}

fn labels_yaml(labels: &[(&str, &str)], indent: usize) -> String {
    if labels.is_empty() {
        return format!("{}{{}}\n", " ".repeat(indent));
    }
    labels
        .iter()
        .map(|(k, v)| format!("{}{k}: \"{v}\"\n", " ".repeat(indent)))
        .collect()
}

/// Joins documents into one multi-document YAML stream.
pub fn docs(docs: &[String]) -> String {
    docs.join("---\n")
}
