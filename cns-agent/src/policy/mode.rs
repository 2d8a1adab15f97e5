//! The policy audit mode: one type, one parser, one precedence function.
//!
//! | setting (highest first) | scope | set by |
//! |---|---|---|
//! | runtime namespace override | one namespace | `cns-agent mode audit\|blocking --namespace NS` |
//! | `cns.io/policy-audit-mode` annotation | one namespace | the Namespace object |
//! | runtime global override | every other pod | `cns-agent mode audit\|blocking` |
//! | `policyAuditMode` | every other pod | the source (the agent's ConfigMap) |
//! | `--policy-audit-mode` | every other pod | the flag (default `true`) |
//!
//! A value that cannot be read never selects the weaker mode: an invalid annotation is
//! reported by validation and enforced as blocking.
//!
//! The same annotation on a NetworkPolicy or ClusterNetworkPolicy makes it a **dry-run
//! policy** ([`effect`]): it never changes a verdict, whatever the mode; the flows it would
//! change are counted and reported. An invalid value there is reported and enforces the
//! policy (the stronger choice).

use std::{collections::BTreeMap, fmt, str::FromStr};

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Deserialize, Serialize};

/// The namespace annotation that sets the mode of its pods.
pub const AUDIT_ANNOTATION: &str = "cns.io/policy-audit-mode";

/// Audit: would-be drops pass and are counted `audit`. Blocking: they are dropped.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// The documented default (`policyAuditMode: true`) until an operator switches.
    #[default]
    Audit,
    Blocking,
}

impl AuditMode {
    /// `true` for audit (the `policyAuditMode` boolean).
    pub fn from_audit(audit: bool) -> Self {
        if audit { Self::Audit } else { Self::Blocking }
    }

    pub fn is_audit(self) -> bool {
        self == Self::Audit
    }

    /// `audit` or `blocking`, as status, metrics, events and the CLI print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Blocking => "blocking",
        }
    }

    /// Reads a `policyAuditMode`-style boolean as Kubernetes reads booleans (Go's
    /// `strconv.ParseBool`, any case: `true`/`t`/`1`, `false`/`f`/`0`; surrounding spaces
    /// ignored), or the mode's name (`audit`, `blocking`).
    pub fn parse(value: &str) -> Result<Self, InvalidMode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "audit" => Ok(Self::Audit),
            "false" | "f" | "0" | "blocking" => Ok(Self::Blocking),
            _ => Err(InvalidMode(value.to_owned())),
        }
    }
}

impl fmt::Display for AuditMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditMode {
    type Err = InvalidMode;
    fn from_str(s: &str) -> Result<Self, InvalidMode> {
        Self::parse(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {0:?}: want \"true\" (audit) or \"false\" (blocking)")]
pub struct InvalidMode(pub String);

/// What happens to a flow that a policy's rules would drop (its verdict without the
/// policy differing), for one endpoint: the one precedence of the policy's own annotation
/// over the endpoint's mode, which compile, `status`, `show`, `explain` and the metrics
/// all read.
///
/// | the policy | the endpoint's mode | the flow |
/// |---|---|---|
/// | dry-run (`"true"`) | any | decided without the policy; counted and reported as a would-be drop or allow |
/// | enforced (`"false"`, absent, invalid) | audit | passes, verdict `audit` |
/// | enforced | blocking | dropped |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    DryRun,
    Audit,
    Blocking,
}

pub fn effect(policy: &ObjectMeta, endpoint: AuditMode) -> Effect {
    let dry_run = policy
        .annotations
        .as_ref()
        .and_then(|a| a.get(AUDIT_ANNOTATION))
        .is_some_and(|v| AuditMode::parse(v) == Ok(AuditMode::Audit));
    match (dry_run, endpoint) {
        (true, _) => Effect::DryRun,
        (false, AuditMode::Audit) => Effect::Audit,
        (false, AuditMode::Blocking) => Effect::Blocking,
    }
}

/// Whether a NetworkPolicy's or ClusterNetworkPolicy's metadata makes it a dry-run policy
/// ([`effect`]): its `cns.io/policy-audit-mode` reads `true` (or `audit`). Invalid values
/// enforce it.
pub fn policy_dry_run(meta: &ObjectMeta) -> bool {
    effect(meta, AuditMode::Blocking) == Effect::DryRun
}

/// Why a policy's annotation cannot be read, if it cannot.
pub fn policy_annotation_error(meta: &ObjectMeta) -> Option<InvalidMode> {
    AuditMode::parse(meta.annotations.as_ref()?.get(AUDIT_ANNOTATION)?).err()
}

/// A dry-run policy's name in metrics, events and reports: `NetworkPolicy/NS/NAME` or
/// `ClusterNetworkPolicy/NAME`.
pub fn network_policy_name(namespace: &str, name: &str) -> String {
    format!("NetworkPolicy/{namespace}/{name}")
}

pub fn cluster_policy_name(name: &str) -> String {
    format!("ClusterNetworkPolicy/{name}")
}

/// A namespace's `cns.io/policy-audit-mode` annotation: `None` when absent; an invalid
/// value reads as blocking (validation reports it: see [`annotation_error`]).
pub fn annotation(ns: &Namespace) -> Option<AuditMode> {
    let value = ns.metadata.annotations.as_ref()?.get(AUDIT_ANNOTATION)?;
    Some(AuditMode::parse(value).unwrap_or(AuditMode::Blocking))
}

/// Why a namespace's annotation cannot be read, if it cannot.
pub fn annotation_error(ns: &Namespace) -> Option<InvalidMode> {
    let value = ns.metadata.annotations.as_ref()?.get(AUDIT_ANNOTATION)?;
    AuditMode::parse(value).err()
}

/// One line per namespace whose annotation cannot be read (`sync`, `status` and `policy
/// check` report them; the namespace is enforced as blocking meanwhile).
pub fn annotation_errors<'a>(
    namespaces: impl IntoIterator<Item = (&'a String, &'a std::sync::Arc<Namespace>)>,
) -> Vec<String> {
    namespaces
        .into_iter()
        .filter_map(|(name, ns)| {
            let e = annotation_error(ns)?;
            Some(format!(
                "Namespace {name}: metadata.annotations[{AUDIT_ANNOTATION}]: {e}; its pods are \
                 enforced in blocking mode until it is fixed"
            ))
        })
        .collect()
}

/// A NetworkPolicy or ClusterNetworkPolicy whose annotation cannot be read (the policy is
/// enforced meanwhile): `sync`, `status` and `policy check` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAnnotationError {
    /// A ClusterNetworkPolicy (else a NetworkPolicy).
    pub cluster: bool,
    /// Empty for a ClusterNetworkPolicy.
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl PolicyAnnotationError {
    /// `NetworkPolicy NS/NAME` or `ClusterNetworkPolicy NAME`.
    pub fn object(&self) -> String {
        match self.cluster {
            true => format!("ClusterNetworkPolicy {}", self.name),
            false => format!("NetworkPolicy {}/{}", self.namespace, self.name),
        }
    }
}

impl fmt::Display for PolicyAnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: metadata.annotations[{AUDIT_ANNOTATION}]: {}",
            self.object(),
            self.message
        )
    }
}

pub fn policy_annotation_errors(snapshot: &super::model::Snapshot) -> Vec<PolicyAnnotationError> {
    let error = |cluster, namespace: &str, name: &str, meta| {
        let e = policy_annotation_error(meta)?;
        Some(PolicyAnnotationError {
            cluster,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message: format!("{e}; the policy is enforced (not dry-run) until it is fixed"),
        })
    };
    let nps = snapshot
        .policies
        .iter()
        .filter_map(|(r, np)| error(false, &r.namespace, &r.name, &np.metadata));
    let cnps = snapshot
        .cluster_policies
        .iter()
        .filter_map(|(name, p)| error(true, "", name, &p.metadata));
    nps.chain(cnps).collect()
}

/// A namespace's mode when it differs from the global one by its own settings: the runtime
/// override, else the annotation. `None`: the global mode applies.
pub fn namespace_override(
    runtime: Option<AuditMode>,
    annotation: Option<AuditMode>,
) -> Option<AuditMode> {
    runtime.or(annotation)
}

/// Every setting of the mode the agent holds, and the one precedence over them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    /// `--policy-audit-mode`.
    pub flag: AuditMode,
    /// The source's `policyAuditMode` (the ConfigMap), when it sets one.
    pub source: Option<AuditMode>,
    /// `cns-agent mode audit|blocking`.
    pub runtime: Option<AuditMode>,
    /// `cns-agent mode audit|blocking --namespace NS`.
    pub namespaces: BTreeMap<String, AuditMode>,
}

impl Modes {
    pub fn new(flag: AuditMode) -> Self {
        Self {
            flag,
            ..Self::default()
        }
    }

    /// The global mode as configured (what `cns-agent mode configured` returns to).
    pub fn configured(&self) -> AuditMode {
        self.source.unwrap_or(self.flag)
    }

    /// The global mode in force.
    pub fn global(&self) -> AuditMode {
        self.runtime.unwrap_or(self.configured())
    }

    /// The mode of pods in `ns`, whose annotation reads `annotation`.
    pub fn of_namespace(&self, ns: &str, annotation: Option<AuditMode>) -> AuditMode {
        namespace_override(self.namespaces.get(ns).copied(), annotation).unwrap_or(self.global())
    }

    /// The mode of an endpoint whose compiled override is `endpoint_override`.
    pub fn of_endpoint(&self, endpoint_override: Option<AuditMode>) -> AuditMode {
        endpoint_override.unwrap_or(self.global())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(annotation: Option<&str>) -> Namespace {
        let mut ns = Namespace::default();
        if let Some(v) = annotation {
            ns.metadata.annotations = Some([(AUDIT_ANNOTATION.to_owned(), v.to_owned())].into());
        }
        ns
    }

    #[test]
    fn booleans_are_read_as_kubernetes_reads_them() {
        for v in ["true", "True", "TRUE", " true ", "t", "1", "audit"] {
            assert_eq!(AuditMode::parse(v), Ok(AuditMode::Audit), "{v}");
        }
        for v in ["false", "False", "FALSE", "f", "F", "0", "blocking"] {
            assert_eq!(AuditMode::parse(v), Ok(AuditMode::Blocking), "{v}");
        }
        for v in ["", "yes", "no", "on", "ture"] {
            assert!(AuditMode::parse(v).is_err(), "{v}");
        }
    }

    #[test]
    fn an_unreadable_annotation_never_selects_audit() {
        assert_eq!(annotation(&ns(None)), None);
        assert_eq!(annotation(&ns(Some("False"))), Some(AuditMode::Blocking));
        assert_eq!(annotation(&ns(Some("nope"))), Some(AuditMode::Blocking));
        assert_eq!(
            annotation_error(&ns(Some("nope"))),
            Some(InvalidMode("nope".into()))
        );
        assert_eq!(annotation_error(&ns(Some("True"))), None);
    }

    #[test]
    fn a_dry_run_policy_changes_no_verdict_in_either_mode() {
        let meta = |v: Option<&str>| ObjectMeta {
            annotations: v.map(|v| [(AUDIT_ANNOTATION.to_owned(), v.to_owned())].into()),
            ..ObjectMeta::default()
        };
        for mode in [AuditMode::Audit, AuditMode::Blocking] {
            assert_eq!(effect(&meta(Some("true")), mode), Effect::DryRun);
            assert_eq!(effect(&meta(Some("audit")), mode), Effect::DryRun);
        }
        for v in [None, Some("false"), Some("nope")] {
            assert_eq!(effect(&meta(v), AuditMode::Audit), Effect::Audit);
            assert_eq!(effect(&meta(v), AuditMode::Blocking), Effect::Blocking);
        }
        assert!(policy_annotation_error(&meta(Some("nope"))).is_some());
        assert!(policy_annotation_error(&meta(Some("True"))).is_none());
    }

    #[test]
    fn precedence_runtime_namespace_then_annotation_then_global() {
        let mut m = Modes::new(AuditMode::Audit);
        assert_eq!(m.global(), AuditMode::Audit);
        m.source = Some(AuditMode::Blocking);
        assert_eq!(m.configured(), AuditMode::Blocking);
        m.runtime = Some(AuditMode::Audit);
        assert_eq!(m.global(), AuditMode::Audit);
        assert_eq!(m.configured(), AuditMode::Blocking);
        assert_eq!(m.of_namespace("a", None), AuditMode::Audit);
        assert_eq!(
            m.of_namespace("a", Some(AuditMode::Blocking)),
            AuditMode::Blocking
        );
        m.namespaces.insert("a".into(), AuditMode::Audit);
        assert_eq!(
            m.of_namespace("a", Some(AuditMode::Blocking)),
            AuditMode::Audit
        );
        assert_eq!(m.of_namespace("b", None), AuditMode::Audit);
        // The source stops setting it: the flag is in charge again.
        m.source = None;
        m.runtime = None;
        assert_eq!(m.global(), AuditMode::Audit);
    }
}
