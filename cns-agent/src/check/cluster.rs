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
    for (i, p) in all.iter().enumerate() {
        let name = p.name.to_string();
        if let Some(why) = cluster::unsupported(p.policy) {
            out.push((name.clone(), format!("not fully enforced: {why}")));
        }
        let mine = selected(p);
        if has_pods && mine.is_empty() {
            out.push((
                name.clone(),
                "its subject selects no pod of the input (no effect)".into(),
            ));
        }
        for q in all.iter().skip(i + 1) {
            if (q.tier(), q.policy.spec.priority) != (p.tier(), p.policy.spec.priority) {
                continue;
            }
            let theirs = selected(q);
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
