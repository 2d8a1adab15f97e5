//! Validation of the objects a snapshot is made of, with the field at fault
//! (`spec.ingress[0].from[1].ipBlock.cidr: invalid CIDR "10.0.0.0/33": ...`).
//!
//! It checks what the compiler relies on, as the API server would. CIDRs with host bits
//! set are accepted (the compiler masks them).

use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use serde::Serialize;

use super::{
    selector::Operator,
    view::{parse_cidr, parse_protocol},
};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where, JSON-path style: `spec.egress[0].ports[1].endPort`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects errors under a path.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn missing(value: Option<&String>) -> bool {
    value.is_none_or(|s| s.is_empty())
}

pub fn validate_policy(np: &NetworkPolicy) -> Vec<FieldError> {
    let mut errs = Errors::default();
    if missing(np.metadata.name.as_ref()) {
        errs.push("metadata.name", "name is required");
    }
    if missing(np.metadata.namespace.as_ref()) {
        errs.push("metadata.namespace", "namespace is required");
    }
    let Some(spec) = np.spec.as_ref() else {
        return errs.0;
    };
    if let Some(sel) = &spec.pod_selector {
        selector(&mut errs, "spec.podSelector", sel);
    }
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        if t != "Ingress" && t != "Egress" {
            errs.push(
                format!("spec.policyTypes[{i}]"),
                format!("unknown policy type {t:?} (want Ingress or Egress)"),
            );
        }
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let path = format!("spec.ingress[{i}]");
        for (j, peer) in rule.from.iter().flatten().enumerate() {
            self::peer(&mut errs, &format!("{path}.from[{j}]"), peer);
        }
        for (j, port) in rule.ports.iter().flatten().enumerate() {
            self::port(&mut errs, &format!("{path}.ports[{j}]"), port);
        }
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let path = format!("spec.egress[{i}]");
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            self::peer(&mut errs, &format!("{path}.to[{j}]"), peer);
        }
        for (j, port) in rule.ports.iter().flatten().enumerate() {
            self::port(&mut errs, &format!("{path}.ports[{j}]"), port);
        }
    }
    errs.0
}

/// The problems of one label selector at `path`.
pub(super) fn validate_selector(path: &str, sel: &LabelSelector) -> Vec<FieldError> {
    let mut errs = Errors::default();
    selector(&mut errs, path, sel);
    errs.0
}

fn selector(errs: &mut Errors, path: &str, sel: &LabelSelector) {
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let path = format!("{path}.matchExpressions[{i}]");
        if req.key.is_empty() {
            errs.push(format!("{path}.key"), "key is required");
        }
        let n_values = req.values.as_ref().map_or(0, Vec::len);
        match Operator::parse(&req.operator) {
            None => errs.push(
                format!("{path}.operator"),
                format!(
                    "unknown operator {:?} (want In, NotIn, Exists or DoesNotExist)",
                    req.operator
                ),
            ),
            Some(Operator::In | Operator::NotIn) if n_values == 0 => errs.push(
                format!("{path}.values"),
                format!("values must be non-empty for operator {}", req.operator),
            ),
            Some(Operator::Exists | Operator::DoesNotExist) if n_values > 0 => errs.push(
                format!("{path}.values"),
                format!("values must be empty for operator {}", req.operator),
            ),
            Some(_) => {}
        }
    }
}

fn peer(errs: &mut Errors, path: &str, peer: &NetworkPolicyPeer) {
    if let Some(sel) = &peer.pod_selector {
        selector(errs, &format!("{path}.podSelector"), sel);
    }
    if let Some(sel) = &peer.namespace_selector {
        selector(errs, &format!("{path}.namespaceSelector"), sel);
    }
    let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match &peer.ip_block {
        None if !has_selector => errs.push(
            path,
            "peer must set one of podSelector, namespaceSelector or ipBlock",
        ),
        None => {}
        Some(b) => {
            if has_selector {
                errs.push(
                    path,
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                );
            }
            ip_block(errs, &format!("{path}.ipBlock"), b);
        }
    }
}

fn ip_block(errs: &mut Errors, path: &str, b: &IPBlock) {
    let cidr = match parse_cidr(&b.cidr) {
        Ok(n) => Some(n),
        Err(e) => {
            errs.push(
                format!("{path}.cidr"),
                format!("invalid CIDR {:?}: {e}", b.cidr),
            );
            None
        }
    };
    for (i, except) in b.except.iter().flatten().enumerate() {
        let field = format!("{path}.except[{i}]");
        match parse_cidr(except) {
            Err(e) => errs.push(field, format!("invalid CIDR {except:?}: {e}")),
            Ok(e) => {
                if let Some(c) = cidr
                    && !strictly_inside(e, c)
                {
                    errs.push(
                        field,
                        format!("except {except:?} is not strictly inside cidr {:?}", b.cidr),
                    );
                }
            }
        }
    }
}

/// Whether `inner` is a proper subset of `outer` (host bits ignored).
fn strictly_inside(inner: IpNetwork, outer: IpNetwork) -> bool {
    let same_family = inner.is_ipv4() == outer.is_ipv4();
    same_family && inner.prefix() > outer.prefix() && outer.contains(inner.network())
}

fn port(errs: &mut Errors, path: &str, port: &NetworkPolicyPort) {
    if let Some(p) = &port.protocol
        && parse_protocol(Some(p)).is_none()
    {
        errs.push(
            format!("{path}.protocol"),
            format!("unknown protocol {p:?} (want TCP, UDP or SCTP)"),
        );
    }
    let start = match &port.port {
        None => None,
        Some(IntOrString::Int(n)) => {
            if !(1..=65535).contains(n) {
                errs.push(
                    format!("{path}.port"),
                    format!("invalid port number {n} (want 1-65535)"),
                );
            }
            Some(*n)
        }
        Some(IntOrString::String(name)) => {
            if let Err(e) = port_name(name) {
                errs.push(
                    format!("{path}.port"),
                    format!("invalid port name {name:?}: {e}"),
                );
            }
            None
        }
    };
    let Some(end) = port.end_port else { return };
    let field = format!("{path}.endPort");
    match (&port.port, start) {
        (None, _) => errs.push(field, "endPort requires port"),
        (Some(IntOrString::String(_)), _) => {
            errs.push(field, "endPort cannot be used with a named port")
        }
        (_, Some(start)) if end < start => {
            errs.push(field, format!("endPort {end} is less than port {start}"))
        }
        _ if end > 65535 => errs.push(field, format!("invalid port number {end} (want 1-65535)")),
        _ => {}
    }
}

/// An IANA service name, as container port names must be.
fn port_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1-15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must contain only lowercase letters, digits and '-'");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain a letter");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("'-' must separate letters or digits");
    }
    Ok(())
}

pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Errors::default();
    if missing(pod.metadata.name.as_ref()) {
        errs.push("metadata.name", "name is required");
    }
    if missing(pod.metadata.namespace.as_ref()) {
        errs.push("metadata.namespace", "namespace is required");
    }
    for (i, c) in pod.spec.iter().flat_map(|s| &s.containers).enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let path = format!("spec.containers[{i}].ports[{j}]");
            if !(1..=65535).contains(&p.container_port) {
                errs.push(
                    format!("{path}.containerPort"),
                    format!("invalid port number {} (want 1-65535)", p.container_port),
                );
            }
            if let Some(proto) = &p.protocol
                && parse_protocol(Some(proto)).is_none()
            {
                errs.push(
                    format!("{path}.protocol"),
                    format!("unknown protocol {proto:?} (want TCP, UDP or SCTP)"),
                );
            }
            if let Some(name) = &p.name
                && let Err(e) = port_name(name)
            {
                errs.push(
                    format!("{path}.name"),
                    format!("invalid port name {name:?}: {e}"),
                );
            }
        }
    }
    if let Some(status) = &pod.status {
        if let Some(ip) = &status.pod_ip
            && ip.parse::<IpAddr>().is_err()
        {
            errs.push("status.podIP", format!("invalid IP address {ip:?}"));
        }
        for (i, p) in status.pod_ips.iter().flatten().enumerate() {
            if p.ip.parse::<IpAddr>().is_err() {
                errs.push(
                    format!("status.podIPs[{i}].ip"),
                    format!("invalid IP address {:?}", p.ip),
                );
            }
        }
    }
    errs.0
}

pub fn validate_namespace(ns: &Namespace) -> Vec<FieldError> {
    let mut errs = Errors::default();
    if missing(ns.metadata.name.as_ref()) {
        errs.push("metadata.name", "name is required");
    }
    errs.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_errors(spec_yaml: &str) -> Vec<FieldError> {
        let yaml = format!("metadata: {{name: p, namespace: ns}}\nspec:\n{spec_yaml}");
        let np: NetworkPolicy = serde_saphyr::from_str(&yaml).expect("policy yaml");
        validate_policy(&np)
    }

    #[test]
    fn valid_policy_has_no_errors() {
        let errs = policy_errors(
            "
  podSelector: {matchExpressions: [{key: a, operator: In, values: [x]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 10.244.1.7/4, except: [10.244.0.0/16]}
    - {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}
    - ipBlock: {cidr: 'fd00::/8', except: ['fd00:1::/32']}
    ports: [{port: 80, endPort: 90}, {protocol: UDP, port: dns}, {protocol: SCTP}]
  egress: [{}]
",
        );
        assert_eq!(errs, []);
    }

    #[test]
    fn each_error_names_its_field() {
        // (spec, field, part of the message)
        let cases: &[(&str, &str, &str)] = &[
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
                "spec.ingress[0].from[0].ipBlock.cidr",
                "invalid CIDR \"10.0.0.0/33\"",
            ),
            (
                "  ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.1}}]}]",
                "spec.ingress[0].from[1].ipBlock.cidr",
                "missing prefix length",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8x]}}]}]",
                "spec.egress[0].to[0].ipBlock.except[0]",
                "invalid CIDR",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 11.0.0.0/16]}}]}]",
                "spec.egress[0].to[0].ipBlock.except[1]",
                "not strictly inside",
            ),
            (
                "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]",
                "spec.egress[0].to[0].ipBlock.except[0]",
                "not strictly inside",
            ),
            (
                "  ingress: [{}, {ports: [{port: 90, endPort: 80}]}]",
                "spec.ingress[1].ports[0].endPort",
                "endPort 80 is less than port 90",
            ),
            (
                "  ingress: [{ports: [{port: http, endPort: 80}]}]",
                "spec.ingress[0].ports[0].endPort",
                "named port",
            ),
            (
                "  ingress: [{ports: [{endPort: 80}]}]",
                "spec.ingress[0].ports[0].endPort",
                "requires port",
            ),
            (
                "  ingress: [{ports: [{port: 80, endPort: 70000}]}]",
                "spec.ingress[0].ports[0].endPort",
                "invalid port number 70000",
            ),
            (
                "  ingress: [{ports: [{protocol: ICMP}]}]",
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol \"ICMP\"",
            ),
            (
                "  ingress: [{ports: [{port: 0}]}]",
                "spec.ingress[0].ports[0].port",
                "invalid port number 0",
            ),
            (
                "  egress: [{ports: [{port: 65536}]}]",
                "spec.egress[0].ports[0].port",
                "invalid port number 65536",
            ),
            (
                "  egress: [{ports: [{port: HTTP}]}]",
                "spec.egress[0].ports[0].port",
                "invalid port name",
            ),
            (
                "  podSelector: {matchExpressions: [{key: a, operator: Like, values: [x]}]}",
                "spec.podSelector.matchExpressions[0].operator",
                "unknown operator \"Like\"",
            ),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}]",
                "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
                "non-empty for operator In",
            ),
            (
                "  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}}]}]",
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
                "non-empty for operator NotIn",
            ),
            (
                "  egress: [{to: [{podSelector: {matchExpressions: [{key: b, operator: Exists}, {key: a, operator: DoesNotExist, values: [x]}]}}]}]",
                "spec.egress[0].to[0].podSelector.matchExpressions[1].values",
                "empty for operator DoesNotExist",
            ),
            (
                "  egress: [{to: [{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}]}]",
                "spec.egress[0].to[0].podSelector.matchExpressions[0].values",
                "empty for operator Exists",
            ),
            (
                "  ingress: [{from: [{}]}]",
                "spec.ingress[0].from[0]",
                "must set one of",
            ),
            (
                "  egress: [{to: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]",
                "spec.egress[0].to[1]",
                "cannot be combined",
            ),
            (
                "  policyTypes: [Ingress, egress]",
                "spec.policyTypes[1]",
                "unknown policy type \"egress\"",
            ),
        ];
        for (spec, field, message) in cases {
            let errs = policy_errors(spec);
            assert_eq!(errs.len(), 1, "{spec}: {errs:?}");
            assert_eq!(errs[0].field, *field, "{spec}");
            assert!(errs[0].message.contains(message), "{spec}: {}", errs[0]);
        }
    }

    #[test]
    fn metadata_is_required() {
        let np: NetworkPolicy = serde_saphyr::from_str("metadata: {}\nspec: {}").unwrap();
        let fields: Vec<String> = validate_policy(&np).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["metadata.name", "metadata.namespace"]);
        let ns: Namespace = serde_saphyr::from_str("metadata: {}").unwrap();
        assert_eq!(
            validate_namespace(&ns)[0].to_string(),
            "metadata.name: name is required"
        );
        let ns: Namespace = serde_saphyr::from_str("metadata: {name: a}").unwrap();
        assert_eq!(validate_namespace(&ns), []);
    }

    #[test]
    fn pod_errors() {
        let pod: Pod = serde_saphyr::from_str(
            "
metadata: {name: a}
spec:
  containers:
  - name: c
    ports: [{containerPort: 80, name: http}, {containerPort: 0, protocol: ICMP, name: -x}]
status: {podIP: 10.0.0.300, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::zz'}]}
",
        )
        .unwrap();
        let fields: Vec<String> = validate_pod(&pod).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.namespace",
                "spec.containers[0].ports[1].containerPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[0].ports[1].name",
                "status.podIP",
                "status.podIPs[1].ip",
            ]
        );
        let ok: Pod =
            serde_saphyr::from_str("metadata: {name: a, namespace: b}\nstatus: {podIP: 'fd00::1'}")
                .unwrap();
        assert_eq!(validate_pod(&ok), []);
    }
}
