//! `cns-agent policy check FILE...`: validates manifests offline (no agent needed) with the
//! agent's own loader, then lints the policies for common mistakes. Errors are what the
//! agent would reject; warnings are valid policies that probably do not do what was meant.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

mod cluster;

use ipnetwork::IpNetwork;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

use crate::{
    policy::{
        model::{Direction, ObjectRef, PodInfo, Protocol, Snapshot},
        selector::{matches, matches_opt, namespace_labels, pod_labels},
        view::{self, Block, Peer, PortSpec},
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
            files.push((p.clone(), source::read_file(p)));
        }
    }
    files
}

/// What the check knows beyond the files.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster's pod network (`--pod-cidr`), if known.
    pub pod_cidrs: Vec<IpNetwork>,
}

pub fn check(files: &[(PathBuf, Result<String, String>)]) -> CheckReport {
    check_with(files, &Options::default())
}

pub fn check_with(files: &[(PathBuf, Result<String, String>)], opts: &Options) -> CheckReport {
    let mut last = LastGood::default();
    let (snapshot, mut errors) = source::load(files, &mut last);
    // An unreadable audit-mode annotation does not reject the namespace (the agent enforces
    // it as blocking), but it is an error to fix.
    for (name, ns) in &snapshot.namespaces {
        if let Some(e) = crate::policy::mode::annotation_error(ns) {
            errors.push(source::SourceError {
                file: last
                    .file_of(Kind::Namespace, "", name)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                object: format!("Namespace {name}"),
                field: Some(format!(
                    "metadata.annotations[{}]",
                    crate::policy::mode::AUDIT_ANNOTATION
                )),
                message: format!("{e}; its pods are enforced in blocking mode until it is fixed"),
                kept_last_good: false,
            });
        }
    }
    // Nor does one on a policy: it is enforced, not dry-run.
    for e in crate::policy::mode::policy_annotation_errors(&snapshot) {
        let kind = match e.cluster {
            true => Kind::ClusterNetworkPolicy,
            false => Kind::NetworkPolicy,
        };
        errors.push(source::SourceError {
            file: last
                .file_of(kind, &e.namespace, &e.name)
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            object: e.object(),
            field: Some(format!(
                "metadata.annotations[{}]",
                crate::policy::mode::AUDIT_ANNOTATION
            )),
            message: e.message,
            kept_last_good: false,
        });
    }
    let mut warnings = Vec::new();
    for (r, np) in &snapshot.policies {
        let file = last
            .file_of(Kind::NetworkPolicy, &r.namespace, &r.name)
            .map(Path::to_path_buf);
        for message in lint(&snapshot, r, np, opts) {
            warnings.push(Warning {
                file: file.clone(),
                object: format!("NetworkPolicy {r}"),
                message,
            });
        }
    }
    for (name, message) in cluster::lint(&snapshot) {
        warnings.push(Warning {
            file: last
                .file_of(Kind::ClusterNetworkPolicy, "", &name)
                .map(Path::to_path_buf),
            object: format!("ClusterNetworkPolicy {name}"),
            message,
        });
    }
    CheckReport {
        files: files.len(),
        policies: snapshot.policies.len() + snapshot.cluster_policies.len(),
        errors,
        warnings,
    }
}

/// The report as `policy check` prints it: errors, warnings, then a summary line.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    for e in &report.errors {
        _ = writeln!(out, "error: {e}");
    }
    for w in &report.warnings {
        let file = w
            .file
            .as_ref()
            .map(|f| format!("{}: ", f.display()))
            .unwrap_or_default();
        _ = writeln!(out, "warning: {file}{}: {}", w.object, w.message);
    }
    _ = writeln!(
        out,
        "{} files, {} policies: {} errors, {} warnings",
        report.files,
        report.policies,
        report.errors.len(),
        report.warnings.len()
    );
    out
}

/// The warnings for one (valid) policy.
pub fn lint(snapshot: &Snapshot, r: &ObjectRef, np: &NetworkPolicy, opts: &Options) -> Vec<String> {
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
                    && let Ok(n) = view::parse_cidr(&b.cidr)
                    && n.ip() != n.network()
                {
                    out.push(format!(
                        "spec.{name}[{i}].{peers_field}[{j}].ipBlock.cidr {} has host bits set: it means {}",
                        b.cidr,
                        crate::policy::addr::masked(n)
                    ));
                }
                if let Peer::Block(block) = view::classify_peer(peer) {
                    let field = format!("spec.{name}[{i}].{peers_field}[{j}].ipBlock");
                    out.extend(pod_network_overlaps(snapshot, &field, &block, opts));
                }
            }
            for (k, port) in rule.ports.iter().enumerate() {
                let PortSpec::Named(proto, port_name) = view::classify_port(port) else {
                    continue;
                };
                // Whose container ports the name resolves against: the selected pods for
                // ingress, the destinations for egress.
                let (pods, whose) = match dir {
                    Direction::Ingress => (
                        selected_pods(snapshot, r, np),
                        "this policy selects".to_owned(),
                    ),
                    Direction::Egress => (
                        peer_pods(snapshot, &r.namespace, rule.peers),
                        format!("spec.egress[{i}].to designates"),
                    ),
                };
                let defined = pods
                    .iter()
                    .any(|(_, p)| !view::named_port_numbers(p, &port_name, proto).is_empty());
                if !pods.is_empty() && !defined {
                    out.push(format!(
                        "spec.{name}[{i}].ports[{k}].port {port_name:?} is a named port ({}) that none of the {} {whose} in the input defines: it allows nothing",
                        proto_name(proto),
                        pods_count(pods.len())
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

/// `1 pod`, `2 pods`.
fn pods_count(n: usize) -> String {
    format!("{n} pod{}", if n == 1 { "" } else { "s" })
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// The input's pods that `np` (in namespace `r.namespace`) selects.
fn selected_pods<'a>(
    snapshot: &'a Snapshot,
    r: &ObjectRef,
    np: &NetworkPolicy,
) -> Vec<(&'a ObjectRef, &'a PodInfo)> {
    snapshot
        .pods
        .iter()
        .filter(|(p, pod)| view::policy_selects(np, &r.namespace, &p.namespace, pod))
        .map(|(r, pod)| (r, &**pod))
        .collect()
}

/// The input's pods that a rule's peers designate (an empty list: every pod).
fn peer_pods<'a>(
    snapshot: &'a Snapshot,
    policy_ns: &str,
    peers: &[k8s_openapi::api::networking::v1::NetworkPolicyPeer],
) -> Vec<(&'a ObjectRef, &'a PodInfo)> {
    let peers: Vec<Peer<'_>> = if peers.is_empty() {
        Block::any().map(Peer::Block).into()
    } else {
        peers.iter().map(view::classify_peer).collect()
    };
    snapshot
        .pods
        .iter()
        .filter(|(r, pod)| {
            peers.iter().any(|peer| match peer {
                Peer::Nothing => false,
                Peer::Block(b) if b.net.prefix() == 0 && b.excepts.is_empty() => true,
                Peer::Block(b) => view::pod_addrs(pod).iter().any(|ip| b.contains(ip)),
                Peer::Pods {
                    namespace,
                    pod: sel,
                } => {
                    let ns_ok = match namespace {
                        None => *r.namespace == *policy_ns,
                        Some(sel) => matches(
                            sel,
                            &namespace_labels(
                                &r.namespace,
                                snapshot.namespaces.get(&*r.namespace).map(|n| &**n),
                            ),
                        ),
                    };
                    ns_ok && matches_opt(*sel, pod_labels(pod))
                }
            })
        })
        .map(|(r, pod)| (r, &**pod))
        .collect()
}

/// Whether `a` and `b` share an address (prefixes are nested or disjoint; never across
/// families).
fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// `a/x 10.0.0.1, b/y 10.0.0.2, c/z 10.0.0.3 and 2 more`.
fn some_pods(pods: &[(&ObjectRef, IpAddr)]) -> String {
    let shown: Vec<String> = pods
        .iter()
        .take(3)
        .map(|(r, ip)| format!("{r} {ip}"))
        .collect();
    match pods.len().saturating_sub(3) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Whether the union of `nets` covers every address of `p`.
fn covered_by(p: IpNetwork, nets: &[IpNetwork]) -> bool {
    // First and last address, as numbers of the family's width.
    let bounds = |n: IpNetwork| {
        let (start, bits) = match n.network() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let host_bits = bits - u32::from(n.prefix());
        let size_less_one = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        (start, start + size_less_one)
    };
    let (start, last) = bounds(p);
    let mut parts: Vec<(u128, u128)> = nets
        .iter()
        .filter(|n| overlaps(p, **n))
        .map(|n| {
            let (s, l) = bounds(*n);
            (s.max(start), l.min(last))
        })
        .collect();
    parts.sort_unstable();
    // The first address not yet covered (`None`: past the family's last address).
    let mut next = Some(start);
    for (s, l) in parts {
        match next {
            Some(n) if s > n => return false,
            Some(n) => next = l.checked_add(1).map(|after| after.max(n)),
            None => break,
        }
    }
    next.is_none_or(|n| n > last)
}

/// Warnings for an ipBlock that matches the pod network: pods' addresses change when they
/// are recreated, and Kubernetes means ipBlock for addresses outside the cluster. The pod
/// network is the input's pod addresses plus `--pod-cidr`. A cidr of /0 (every address)
/// says what it means and is not warned about; excepts that remove the whole pod network
/// are the right way to say "outside the cluster", but an except that removes some pods
/// while the block still matches others picks pods by address.
fn pod_network_overlaps(
    snapshot: &Snapshot,
    field: &str,
    block: &Block,
    opts: &Options,
) -> Vec<String> {
    let mut out = Vec::new();
    let pods: Vec<(&ObjectRef, IpAddr)> = snapshot
        .pods
        .iter()
        .filter(|(_, p)| view::pod_is_active(p))
        .flat_map(|(r, p)| view::pod_addrs(p).iter().map(move |ip| (r, ip)))
        .collect();
    let matched: Vec<_> = pods
        .iter()
        .copied()
        .filter(|(_, ip)| block.contains(*ip))
        .collect();
    // The pod CIDRs the block still matches part of, once its excepts are taken out.
    let cidrs: Vec<String> = opts
        .pod_cidrs
        .iter()
        .filter(|p| overlaps(block.net, **p))
        .filter(|p| {
            let common = if block.net.prefix() <= p.prefix() {
                **p
            } else {
                block.net
            };
            !covered_by(common, &block.excepts)
        })
        .map(ToString::to_string)
        .collect();
    if matched.is_empty() && cidrs.is_empty() {
        return out;
    }
    if block.net.prefix() > 0 {
        let mut what = Vec::new();
        if !matched.is_empty() {
            what.push(format!(
                "the addresses of {} of the input ({})",
                pods_count(matched.len()),
                some_pods(&matched)
            ));
        }
        if !cidrs.is_empty() {
            what.push(format!("the pod network {}", cidrs.join(",")));
        }
        out.push(format!(
            "{field}.cidr {} matches {}: ipBlock is meant for addresses outside the cluster and pod IPs change when pods are recreated; select pods with podSelector/namespaceSelector, or add the pod network to except",
            block.net,
            what.join(" and ")
        ));
    }
    for (k, e) in block.excepts.iter().enumerate() {
        let removed: Vec<_> = pods
            .iter()
            .copied()
            .filter(|(_, ip)| block.net.contains(*ip) && e.contains(*ip))
            .collect();
        let in_pod_cidr = opts.pod_cidrs.iter().any(|p| overlaps(*e, *p));
        if removed.is_empty() && !in_pod_cidr {
            continue;
        }
        let what = if removed.is_empty() {
            "part of the pod network".to_owned()
        } else {
            format!(
                "the addresses of {} ({})",
                pods_count(removed.len()),
                some_pods(&removed)
            )
        };
        out.push(format!(
            "{field}.except[{k}] {e} removes {what} but the block still matches other pods: pod IPs change when pods are recreated; except the whole pod network, or select pods with podSelector/namespaceSelector"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> CheckReport {
        check(&[(PathBuf::from("p.yaml"), Ok(yaml.to_owned()))])
    }

    /// An audit-mode annotation that cannot be read is an error naming the namespace, the
    /// annotation and the value (issue 18, finding 2); a boolean as Kubernetes writes it is not.
    #[test]
    fn an_unreadable_audit_mode_annotation_is_an_error() {
        let r = run("
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {cns.io/policy-audit-mode: nope}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ok, annotations: {cns.io/policy-audit-mode: \"False\"}}
");
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let e = &r.errors[0];
        assert_eq!(e.object, "Namespace shop");
        assert_eq!(e.file, PathBuf::from("p.yaml"));
        assert_eq!(
            e.field.as_deref(),
            Some("metadata.annotations[cns.io/policy-audit-mode]")
        );
        assert!(e.message.contains("\"nope\""), "{e}");
        assert!(e.message.contains("blocking"), "{e}");
    }

    /// The same on a policy (dry-run): an error naming the policy; the policy is enforced.
    #[test]
    fn an_unreadable_dry_run_annotation_on_a_policy_is_an_error() {
        let r = run("
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: shop, annotations: {cns.io/policy-audit-mode: maybe}}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dry, namespace: shop, annotations: {cns.io/policy-audit-mode: \"true\"}}
spec: {podSelector: {}}
");
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let e = &r.errors[0];
        assert_eq!(e.object, "NetworkPolicy shop/np");
        assert_eq!(
            e.field.as_deref(),
            Some("metadata.annotations[cns.io/policy-audit-mode]")
        );
        assert!(
            e.message.contains("\"maybe\"") && e.message.contains("enforced"),
            "{e}"
        );
    }

    /// What `kubectl get networkpolicies -o yaml` prints is checked, not refused.
    #[test]
    fn a_kubectl_list_is_checked_item_by_item() {
        let r = run("
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: p, namespace: a}
  spec: {podSelector: {matchLabels: {app: web}}, egress: [{ports: [{port: 53, protocol: UDP}]}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: q, namespace: a}
  spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 79}]}]}
");
        assert_eq!(r.policies, 1, "{r:?}");
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].object.contains("a/q"), "{:?}", r.errors);
    }

    /// A dangling link and a symlink loop in a directory are errors, as the agent reports
    /// them, not files silently skipped.
    #[test]
    fn dangling_links_and_loops_in_a_directory_are_errors() {
        let dir = std::env::temp_dir().join(format!("cns-check-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(dir.join("missing.yaml"), dir.join("dangling.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.join("loop.yaml"), dir.join("loop.yaml")).unwrap();
        std::fs::create_dir(dir.join("dir.yaml")).unwrap();
        let r = check(&read(std::slice::from_ref(&dir)));
        std::fs::remove_dir_all(&dir).unwrap();
        let files: Vec<String> = r
            .errors
            .iter()
            .map(|e| e.file.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["dangling.yaml", "loop.yaml"], "{:?}", r.errors);
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

    const PODS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: b, labels: {app: db}}
spec: {containers: [{name: c, image: i, ports: [{name: sql, containerPort: 5432}]}]}
status: {podIP: 10.0.2.10}
---
";

    fn warnings(yaml: &str, pod_cidrs: &[&str]) -> Vec<String> {
        let opts = Options {
            pod_cidrs: pod_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        };
        let r = check_with(
            &[(PathBuf::from("p.yaml"), Ok(format!("{PODS}{yaml}")))],
            &opts,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.warnings.into_iter().map(|w| w.message).collect()
    }

    #[test]
    fn named_ports_no_pod_defines() {
        let w = warnings(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}, {port: https}, {port: http, protocol: UDP}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {team: b}}}]
    ports: [{port: sql}, {port: http}, {port: 53, protocol: UDP}]
",
            &[],
        );
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].starts_with(
            "spec.ingress[0].ports[1].port \"https\" is a named port (TCP) that none of the 1 pod this policy selects"
        ));
        assert!(w[1].starts_with("spec.ingress[0].ports[2].port \"http\" is a named port (UDP)"));
        assert!(w[2].starts_with(
            "spec.egress[0].ports[1].port \"http\" is a named port (TCP) that none of the 1 pod spec.egress[0].to designates"
        ));
    }

    #[test]
    fn ip_blocks_over_the_pod_network() {
        let policy = |block: &str| {
            format!(
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p, namespace: a}}
spec:
  podSelector: {{}}
  ingress: [{{from: [{{ipBlock: {block}}}]}}]
"
            )
        };
        // Outside the pods, and /0: nothing to say.
        assert!(warnings(&policy("{cidr: 192.168.0.0/16}"), &[]).is_empty());
        assert!(warnings(&policy("{cidr: 0.0.0.0/0}"), &[]).is_empty());
        // Excepting the whole pod network is the way to say "outside the cluster".
        assert!(
            warnings(
                &policy("{cidr: 0.0.0.0/0, except: [10.0.0.0/16]}"),
                &["10.0.0.0/16"]
            )
            .is_empty()
        );
        assert!(
            warnings(
                &policy("{cidr: 10.0.0.0/8, except: [10.0.0.0/17, 10.0.128.0/17]}"),
                &["10.0.0.0/16"]
            )
            .is_empty()
        );
        let w = warnings(&policy("{cidr: 10.0.1.10/32}"), &[]);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].starts_with(
            "spec.ingress[0].from[0].ipBlock.cidr 10.0.1.10/32 matches the addresses of 1 pod of the input (a/web 10.0.1.10): ipBlock is meant for addresses outside the cluster"
        ));
        let w = warnings(&policy("{cidr: 10.0.0.0/8}"), &["10.0.0.0/16"]);
        assert!(w[0].contains("matches the addresses of 2 pods of the input (a/web 10.0.1.10, b/db 10.0.2.10) and the pod network 10.0.0.0/16"));
        // Only the pod CIDR knows: no pod in 10.9/16.
        let w = warnings(&policy("{cidr: 10.9.0.0/24}"), &["10.0.0.0/8"]);
        assert!(
            w[0].contains("matches the pod network 10.0.0.0/8:"),
            "{w:#?}"
        );
        // An except singling out one pod while the block still matches the other.
        let w = warnings(&policy("{cidr: 0.0.0.0/0, except: [10.0.1.10/32]}"), &[]);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].starts_with(
            "spec.ingress[0].from[0].ipBlock.except[0] 10.0.1.10/32 removes the addresses of 1 pod (a/web 10.0.1.10) but the block still matches other pods"
        ));
    }
}
