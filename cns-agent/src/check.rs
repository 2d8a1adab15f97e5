//! `cns-agent policy check FILE...`: validates manifests offline (no agent needed) with the
//! agent's own loader, then lints the policies for common mistakes. Errors are what the
//! agent would reject; warnings are valid policies that probably do not do what was meant.

use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

use crate::{
    policy::{
        model::{Direction, ObjectRef, Snapshot},
        selector::matches_opt,
        view::{self, Peer, PortSpec},
    },
    source::{self, Kind, LastGood, SourceError},
};

#[derive(Debug, Serialize)]
pub struct Warning {
    pub file: Option<PathBuf>,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub files: usize,
    pub policies: usize,
    pub errors: Vec<SourceError>,
    pub warnings: Vec<Warning>,
}

/// Reads `paths` (files, or directories of `*.yaml`/`*.yml`).
pub fn read(paths: &[PathBuf]) -> Vec<(PathBuf, Result<String, String>)> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match source::read_dir(p) {
                Ok(f) => files.extend(f),
                Err(e) => files.push((p.clone(), Err(format!("failed to read directory: {e}")))),
            }
        } else {
            let text = std::fs::read_to_string(p).map_err(|e| format!("failed to read: {e}"));
            files.push((p.clone(), text));
        }
    }
    files
}

pub fn check(files: &[(PathBuf, Result<String, String>)]) -> CheckReport {
    let mut last = LastGood::default();
    let (snapshot, errors) = source::load(files, &mut last);
    let mut warnings = Vec::new();
    for (r, np) in &snapshot.policies {
        let file = last
            .file_of(Kind::NetworkPolicy, &r.namespace, &r.name)
            .map(Path::to_path_buf);
        for message in lint(&snapshot, r, np) {
            warnings.push(Warning {
                file: file.clone(),
                object: format!("NetworkPolicy {r}"),
                message,
            });
        }
    }
    CheckReport {
        files: files.len(),
        policies: snapshot.policies.len(),
        errors,
        warnings,
    }
}

/// The warnings for one (valid) policy.
pub fn lint(snapshot: &Snapshot, r: &ObjectRef, np: &NetworkPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let spec = np.spec.as_ref();
    // Selects nothing, when the input has pods of that namespace to select.
    let pods_here: Vec<_> = snapshot
        .pods
        .iter()
        .filter(|(p, _)| p.namespace == r.namespace)
        .collect();
    if !pods_here.is_empty() {
        let selector = spec.and_then(|s| s.pod_selector.as_ref());
        let selected = pods_here
            .iter()
            .any(|(_, pod)| matches_opt(selector, crate::policy::selector::pod_labels(pod)));
        if !selected {
            out.push(format!(
                "podSelector selects none of the {} pods of namespace {} in the input",
                pods_here.len(),
                r.namespace
            ));
        }
    }
    for dir in [Direction::Ingress, Direction::Egress] {
        let (name, peers_field) = match dir {
            Direction::Ingress => ("ingress", "from"),
            Direction::Egress => ("egress", "to"),
        };
        let rules = view::policy_rules(np, dir);
        for (i, rule) in rules.iter().enumerate() {
            if rule.peers.is_empty() && rule.ports.is_empty() {
                out.push(format!(
                    "spec.{name}[{i}] is empty: it allows all {name} traffic, from any peer on any port"
                ));
            }
            let pod_only = rule
                .peers
                .iter()
                .position(|p| p.pod_selector.is_some() && p.namespace_selector.is_none());
            let ns_only = rule
                .peers
                .iter()
                .position(|p| p.namespace_selector.is_some() && p.pod_selector.is_none());
            if let (Some(a), Some(b)) = (pod_only, ns_only) {
                out.push(format!(
                    "spec.{name}[{i}].{peers_field}[{a}] (podSelector) and [{b}] (namespaceSelector) are separate peers, \
                     so either one admits traffic (OR); to require both (AND) put them in one peer"
                ));
            }
            for (j, peer) in rule.peers.iter().enumerate() {
                let labels = peer
                    .namespace_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref());
                if labels.is_some_and(|l| l.contains_key("name")) {
                    out.push(format!(
                        "spec.{name}[{i}].{peers_field}[{j}].namespaceSelector matches the label `name`, which \
                         namespaces only have if someone added it; every namespace has `kubernetes.io/metadata.name`"
                    ));
                }
                if let Some(b) = &peer.ip_block
                    && let Ok(ipnetwork::IpNetwork::V4(n)) = view::parse_cidr(&b.cidr)
                    && n.ip() != n.network()
                {
                    out.push(format!(
                        "spec.{name}[{i}].{peers_field}[{j}].ipBlock.cidr {} has host bits set: it means {}",
                        b.cidr,
                        view::masked(n)
                    ));
                }
            }
        }
        if dir == Direction::Egress && view::policy_applies(np, dir) {
            let allows_dns = rules.iter().any(|rule| {
                let ports = view::rule_ports(rule);
                ports.iter().any(|p| {
                    matches!(p, PortSpec::All)
                        || p.admits_numeric(cns_common::PROTO_UDP, 53)
                        || p.admits_numeric(cns_common::PROTO_TCP, 53)
                }) && view::rule_peers(rule)
                    .iter()
                    .all(|p| !matches!(p, Peer::Nothing))
            });
            if !allows_dns {
                out.push(
                    "egress is isolated and no egress rule allows port 53: the selected pods cannot resolve names"
                        .into(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> CheckReport {
        check(&[(PathBuf::from("p.yaml"), Ok(yaml.to_owned()))])
    }

    #[test]
    fn common_mistakes_are_warned_about() {
        let r = run("
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {matchLabels: {name: b}}
  - {}
  egress:
  - to: [{ipBlock: {cidr: 10.1.2.3/16}}]
    ports: [{port: 443}]
");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let w: Vec<&str> = r.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(w.len(), 5, "{w:#?}");
        assert!(w[0].contains("are separate peers"));
        assert!(w[1].contains("label `name`"));
        assert!(w[2].contains("spec.ingress[1] is empty"));
        assert!(w[3].contains("has host bits set: it means 10.1.0.0/16"));
        assert!(w[4].contains("cannot resolve names"));
        assert_eq!(r.warnings[0].file.as_deref(), Some(Path::new("p.yaml")));
    }

    #[test]
    fn a_clean_policy_has_no_warnings_and_errors_are_reported() {
        let r = run("
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - ports: [{port: 53, protocol: UDP}]
");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let r = run("
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80, endPort: 79}]}]
");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(
            r.errors[0].field.as_deref(),
            Some("spec.ingress[0].ports[0].endPort")
        );
    }

    #[test]
    fn selecting_no_pod_of_the_input() {
        let r = run("
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {app: wbe}}
");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].message.contains("selects none of the 1 pods"));
    }
}
