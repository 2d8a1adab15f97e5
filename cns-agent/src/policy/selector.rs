//! Label selectors (`metav1.LabelSelector`) and the labels they are matched against.
//!
//! A selector matches when every `matchLabels` pair and every `matchExpressions`
//! requirement holds; the empty selector matches everything. A requirement with an unknown
//! operator matches nothing (validation reports it, see `policy::validate`).

use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
};

use super::model::{Labels, PodInfo};

/// The label every namespace carries automatically (its name).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The selector operators of `metav1.LabelSelectorRequirement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Operator> {
        match s {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            _ => None,
        }
    }
}

/// Whether `labels` satisfy `sel`.
pub fn matches(sel: &LabelSelector, labels: &Labels) -> bool {
    let pairs_hold = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v.as_str()));
    pairs_hold
        && sel
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement_holds(req, labels))
}

fn requirement_holds(req: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&req.key);
    let in_values = |v: &str| req.values.iter().flatten().any(|x| x == v);
    match Operator::parse(&req.operator) {
        Some(Operator::In) => value.is_some_and(in_values),
        Some(Operator::NotIn) => !value.is_some_and(in_values),
        Some(Operator::Exists) => value.is_some(),
        Some(Operator::DoesNotExist) => value.is_none(),
        None => false,
    }
}

/// `selector` if present, else "everything".
pub fn matches_opt(sel: Option<&LabelSelector>, labels: &Labels) -> bool {
    sel.is_none_or(|s| matches(s, labels))
}

/// A pod's labels (empty when it has none).
pub fn pod_labels(pod: &PodInfo) -> &Labels {
    &pod.labels
}

/// The labels of namespace `name`: those of its object (if known), plus the automatic
/// `kubernetes.io/metadata.name` (added here too, in case the source did not).
pub fn namespace_labels(name: &str, ns: Option<&Namespace>) -> Labels {
    let mut labels: Labels = ns
        .and_then(|ns| ns.metadata.labels.as_ref())
        .map(Labels::from)
        .unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL, name);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(yaml: &str) -> LabelSelector {
        serde_saphyr::from_str(yaml).expect("selector yaml")
    }

    #[test]
    fn selector_table() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        // (selector, [matches web, matches db, matches no labels])
        let cases: &[(&str, [bool; 3])] = &[
            ("{}", [true, true, true]),
            ("matchLabels: {}", [true, true, true]),
            ("matchLabels: {app: web}", [true, false, false]),
            ("matchLabels: {app: web, tier: back}", [false, false, false]),
            (
                "matchExpressions: [{key: app, operator: In, values: [web, db]}]",
                [true, true, false],
            ),
            (
                "matchExpressions: [{key: app, operator: NotIn, values: [web]}]",
                [false, true, true],
            ),
            (
                "matchExpressions: [{key: tier, operator: Exists}]",
                [true, false, false],
            ),
            (
                "matchExpressions: [{key: tier, operator: DoesNotExist}]",
                [false, true, true],
            ),
            (
                "matchExpressions: [{key: app, operator: Bogus, values: [web]}]",
                [false, false, false],
            ),
            (
                "{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [back]}]}",
                [false, false, false],
            ),
            (
                "{matchLabels: {app: db}, matchExpressions: [{key: tier, operator: DoesNotExist}]}",
                [false, true, false],
            ),
        ];
        for (yaml, want) in cases {
            let s = sel(yaml);
            let got = [matches(&s, &web), matches(&s, &db), matches(&s, &none)];
            assert_eq!(&got, want, "selector {yaml}");
        }
    }

    #[test]
    fn absent_selector_matches_all() {
        assert!(matches_opt(None, &labels(&[])));
    }

    #[test]
    fn namespace_labels_include_name() {
        let got = namespace_labels("prod", None);
        assert_eq!(got, labels(&[(NAMESPACE_NAME_LABEL, "prod")]));
        let ns: Namespace =
            serde_saphyr::from_str("metadata: {name: prod, labels: {team: a}}").unwrap();
        let got = namespace_labels("prod", Some(&ns));
        assert_eq!(
            got,
            labels(&[(NAMESPACE_NAME_LABEL, "prod"), ("team", "a")])
        );
    }
}
