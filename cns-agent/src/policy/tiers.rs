//! The order of ClusterNetworkPolicy rules within a tier, and who they select.
//!
//! A rule's rank is `priority << 16 | tie << 5 | index`: by priority (lower first), then,
//! among policies of the same tier and priority (an order the spec leaves undefined), by
//! name, then by the rule's place in its policy. A rank only moves when a policy of the same
//! tier and priority is added or removed before it by name.

use std::sync::Arc;

use cns_common::maps::{RULE_ADMIN, RULE_BASELINE};

use super::{
    cluster::{ClusterNetworkPolicy, ClusterRule, Tier, selects_pod},
    labels::Labels,
    model::{ClusterRuleName, Direction, Snapshot},
};

/// Ties beyond this many policies of one tier and priority share the last rank slot.
const MAX_TIE: u32 = (1 << 11) - 1;

/// One policy with the rank of its first rule, and its rules.
pub struct Ranked<'a> {
    pub name: &'a Arc<str>,
    pub policy: &'a ClusterNetworkPolicy,
    pub base: u32,
    pub ingress: Vec<ClusterRule<'a>>,
    pub egress: Vec<ClusterRule<'a>>,
}

impl Ranked<'_> {
    pub fn tier(&self) -> Tier {
        self.policy.spec.tier
    }

    /// A dry-run policy (`cns.io/policy-audit-mode: "true"`): its rules are in the would-be
    /// view only.
    pub fn dry_run(&self) -> bool {
        super::mode::policy_dry_run(&self.policy.metadata)
    }

    /// A rule's id as events and conntrack carry it.
    pub fn rule_id(&self, index: usize) -> u32 {
        let bit = match self.tier() {
            Tier::Admin => RULE_ADMIN,
            Tier::Baseline => RULE_BASELINE,
        };
        bit | self.rank(index)
    }

    pub fn rank(&self, index: usize) -> u32 {
        self.base | u32::try_from(index).unwrap_or(31).min(31)
    }

    /// Its rules in `dir`, in order.
    pub fn rules(&self, dir: Direction) -> &[ClusterRule<'_>] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn rule_name(&self, dir: Direction, index: usize) -> ClusterRuleName {
        let rule = self.rules(dir).get(index);
        ClusterRuleName {
            policy: self.name.clone(),
            tier: self.tier(),
            priority: self.policy.spec.priority,
            rule: rule.map(|r| r.label()).unwrap_or_default(),
            action: rule.map(|r| r.action).unwrap_or_default(),
        }
    }

    /// Whether it selects a (not host-network) pod with these labels.
    pub fn selects(&self, ns_labels: &Labels, pod_labels: &Labels) -> bool {
        let s = &self.policy.spec.subject;
        selects_pod(
            s.namespaces.as_ref(),
            s.pods.as_ref(),
            ns_labels,
            pod_labels,
        )
    }
}

/// Every ClusterNetworkPolicy of the snapshot, ranked (both tiers).
pub fn ranked(snapshot: &Snapshot) -> Vec<Ranked<'_>> {
    let mut all: Vec<(&Arc<str>, &ClusterNetworkPolicy)> = snapshot
        .cluster_policies
        .iter()
        .map(|(n, p)| (n, &**p))
        .collect();
    all.sort_by(|a, b| {
        (a.1.spec.tier, a.1.spec.priority, a.0).cmp(&(b.1.spec.tier, b.1.spec.priority, b.0))
    });
    let mut out: Vec<Ranked<'_>> = Vec::with_capacity(all.len());
    let mut tie = 0;
    for (i, (name, policy)) in all.iter().enumerate() {
        let same = i > 0 && {
            let prev = &all[i - 1].1.spec;
            (prev.tier, prev.priority) == (policy.spec.tier, policy.spec.priority)
        };
        tie = if same { (tie + 1).min(MAX_TIE) } else { 0 };
        let priority = u32::try_from(policy.spec.priority.clamp(0, 1000)).unwrap_or(0);
        out.push(Ranked {
            name,
            policy,
            base: priority << 16 | tie << 5,
            ingress: policy.rules(Direction::Ingress),
            egress: policy.rules(Direction::Egress),
        });
    }
    out
}
