//! `policy check`'s warnings for ClusterNetworkPolicies.

use crate::policy::{
    cluster,
    model::Snapshot,
    selector::{namespace_labels, pod_labels},
    tiers::{Ranked, ranked},
    view::pod_is_active,
};

/// The warnings for each ClusterNetworkPolicy, by name.
pub fn lint(snapshot: &Snapshot) -> Vec<(String, String)> {
    let all = ranked(snapshot);
    let mut out = Vec::new();
    let selected = |p: &Ranked<'_>| -> Vec<String> {
        snapshot
            .pods
            .iter()
            .filter(|(_, pod)| pod_is_active(pod))
            .filter(|(r, pod)| {
                let ns = snapshot.namespaces.get(&*r.namespace).map(|n| &**n);
                p.selects(&namespace_labels(&r.namespace, ns), pod_labels(pod))
            })
            .map(|(r, _)| r.to_string())
            .collect()
    };
    let has_pods = !snapshot.pods.is_empty();
    // Each policy's selected pods, once (the pairs below compare them).
    let chosen: Vec<Vec<String>> = all.iter().map(selected).collect();
    for (i, p) in all.iter().enumerate() {
        let name = p.name.to_string();
        if let Some(why) = cluster::unsupported(p.policy) {
            out.push((name.clone(), format!("not fully enforced: {why}")));
        }
        let mine = &chosen[i];
        if has_pods && mine.is_empty() {
            out.push((
                name.clone(),
                "its subject selects no pod of the input (no effect)".into(),
            ));
        }
        for (q, theirs) in all.iter().zip(&chosen).skip(i + 1) {
            if (q.tier(), q.policy.spec.priority) != (p.tier(), p.policy.spec.priority) {
                continue;
            }
            let both = mine.iter().find(|r| theirs.contains(r));
            let overlap = match both {
                Some(pod) => format!("both select {pod}"),
                None if !has_pods => "their subjects may overlap".into(),
                None => continue,
            };
            out.push((
                name.clone(),
                format!(
                    "same tier and priority ({:?}, {}) as ClusterNetworkPolicy {} and {overlap}: \
                     the spec leaves their order undefined; cns applies {} first (by name)",
                    p.tier(),
                    p.policy.spec.priority,
                    q.name,
                    p.name
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    const INPUT: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: a}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
  - action: Accept
    to: [{domainNames: [example.com]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: c}
spec:
  tier: Baseline
  priority: 5
  subject: {namespaces: {matchLabels: {none: here}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
";

    #[test]
    fn warns_about_order_unsupported_peers_and_empty_subjects() {
        let report = crate::check::check(&[(PathBuf::from("c.yaml"), Ok(INPUT.to_owned()))]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let warnings: Vec<String> = report
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.object, w.message))
            .collect();
        let has = |object: &str, text: &str| {
            warnings
                .iter()
                .any(|w| w.starts_with(object) && w.contains(text))
        };
        assert!(
            has("ClusterNetworkPolicy a", "domainNames"),
            "{warnings:#?}"
        );
        assert!(
            has(
                "ClusterNetworkPolicy a",
                "same tier and priority (Admin, 5) as ClusterNetworkPolicy b and both select prod/web"
            ),
            "{warnings:#?}"
        );
        assert!(
            has("ClusterNetworkPolicy c", "selects no pod"),
            "{warnings:#?}"
        );
        assert_eq!(report.policies, 3);
    }
}
