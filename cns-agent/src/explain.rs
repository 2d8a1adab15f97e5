//! `cns-agent policy explain`: the verdict for one flow and why, from the reference evaluator
//! over the agent's live snapshot, with the effective mode of the endpoints involved.

use std::net::IpAddr;

use serde::Serialize;

use crate::policy::{
    DirectionVerdict, Flow, FlowVerdict,
    addr::{PodAddrs, family_name},
    cluster::{Action, Tier},
    evaluate::{self, RuleRef},
    model::{NodeContext, ObjectRef, Snapshot},
    view,
};

/// One end of the flow as given on the command line: `NAMESPACE/POD` (its addresses, both
/// families) or an address (IPv4 or IPv6: that one only).
pub fn resolve(snapshot: &Snapshot, s: &str) -> Result<(PodAddrs, Option<ObjectRef>), String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let pod = snapshot
            .pods
            .iter()
            .find(|(_, p)| view::pod_is_active(p) && view::pod_addrs(p).contains(ip))
            .map(|(r, _)| r.clone());
        return Ok((PodAddrs::from(ip), pod));
    }
    let Some((ns, name)) = s.split_once('/') else {
        return Err(format!("{s:?} is neither NAMESPACE/POD nor an IP address"));
    };
    let r = ObjectRef::new(ns, name);
    let pod = snapshot
        .pods
        .get(&r)
        .ok_or_else(|| format!("no pod {r} in the agent's source"))?;
    let addrs = view::pod_addrs(pod);
    if addrs.is_empty() {
        return Err(format!("pod {r} has no address (yet)"));
    }
    Ok((addrs, Some(r)))
}

/// The flow's addresses in the first family both ends have (IPv4, then IPv6).
fn pick_family(from: &PodAddrs, to: &PodAddrs) -> Result<(IpAddr, IpAddr), String> {
    let v4 = from.v4.zip(to.v4).map(|(a, b)| (a.into(), b.into()));
    let v6 = || from.v6.zip(to.v6).map(|(a, b)| (a.into(), b.into()));
    v4.or_else(v6).ok_or_else(|| {
        "the two ends have no address family in common (one is IPv4 only, the other IPv6 only)"
            .to_owned()
    })
}

/// `80/TCP`, `53/UDP`, `8080` (TCP), `ICMP` (ICMPv6 for an IPv6 flow: see [`explain`]).
pub fn parse_port(s: &str) -> Result<(u8, u16), String> {
    if s.eq_ignore_ascii_case("icmp") {
        return Ok((cns_common::PROTO_ICMP, 0));
    }
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let proto = match proto.to_ascii_uppercase().as_str() {
        "TCP" => cns_common::PROTO_TCP,
        "UDP" => cns_common::PROTO_UDP,
        "SCTP" => cns_common::PROTO_SCTP,
        other => {
            return Err(format!(
                "unknown protocol {other:?} (TCP, UDP, SCTP or ICMP)"
            ));
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port:?}"))?;
    Ok((proto, port))
}

#[derive(Debug, Serialize)]
pub struct End {
    pub ip: IpAddr,
    pub pod: Option<ObjectRef>,
    /// The effective mode of this pod's enforcement ("audit"/"blocking"), if it is a pod.
    pub mode: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub from: End,
    pub to: End,
    /// "IPv4" or "IPv6": the family the answer is for (a pod given by name is asked about
    /// in IPv4 when both ends have it, else in IPv6).
    pub family: &'static str,
    pub protocol: u8,
    pub port: u16,
    pub verdict: FlowVerdict,
    /// "forwarded", "dropped", or "audit" (denied by policy, passing in audit mode).
    pub outcome: &'static str,
    /// Human-readable reasoning, one line per point.
    pub why: Vec<String>,
    /// The verdict with dry-run policies too, when they would change it (`policy rollout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_be: Option<FlowVerdict>,
    /// The dry-run policies that would change it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

/// "Admin policy X rule 'name' (priority 10)".
fn describe(rule: &RuleRef) -> String {
    let tier = match rule.tier {
        Tier::Admin => "Admin",
        Tier::Baseline => "Baseline",
    };
    format!(
        "{tier} policy ClusterNetworkPolicy/{} rule '{}' (priority {}, {:?})",
        rule.policy, rule.rule, rule.priority, rule.action
    )
}

fn audit_note(mode: &str) -> &'static str {
    if mode == "audit" {
        "; the pod is in audit mode, so it passes and is counted as audit (blocking mode would drop it)"
    } else {
        ""
    }
}

/// Explains the flow `from` -> `to` on `port`; `mode_of` gives a pod's effective mode.
pub fn explain(
    snapshot: &Snapshot,
    node: &NodeContext,
    from: &str,
    to: &str,
    port: &str,
    mode_of: impl Fn(&ObjectRef) -> &'static str,
) -> Result<Explanation, String> {
    let (src_addrs, src_pod) = resolve(snapshot, from)?;
    let (dst_addrs, dst_pod) = resolve(snapshot, to)?;
    let (src, dst) = pick_family(&src_addrs, &dst_addrs)?;
    let (mut proto, dport) = parse_port(port)?;
    if proto == cns_common::PROTO_ICMP && src.is_ipv6() {
        proto = cns_common::PROTO_ICMPV6;
    }
    let flow = Flow {
        src,
        dst,
        proto,
        dport,
    };
    // What is enforced: without the dry-run policies; what would be: with them.
    let verdict = evaluate::evaluate(&evaluate::enforced_only(snapshot), node, &flow);
    let would = evaluate::evaluate(snapshot, node, &flow);
    let name = |ip: IpAddr, pod: &Option<ObjectRef>| match pod {
        Some(p) => format!("{p} ({ip})"),
        None => ip.to_string(),
    };
    let mut why = vec![format!("answered for {}", family_name(src))];
    let mut audited = false;
    for (label, dir, pod, ip) in [
        ("egress of", &verdict.egress, &src_pod, src),
        ("ingress of", &verdict.ingress, &dst_pod, dst),
    ] {
        let who = name(ip, pod);
        why.push(match dir {
            DirectionVerdict::NotAPod => format!("{label} {who}: not a pod, nothing to enforce"),
            DirectionVerdict::NotIsolated => {
                format!("{label} {who}: no policy selects it for this direction, so all is allowed")
            }
            DirectionVerdict::FromHost => {
                format!("{label} {who}: traffic from the node itself is always allowed")
            }
            DirectionVerdict::Allowed { by } => {
                let rules: Vec<String> = by
                    .iter()
                    .map(|(p, i)| format!("{p} rule #{i}"))
                    .collect();
                format!("{label} {who}: allowed by {}", rules.join(", "))
            }
            DirectionVerdict::Denied { isolated_by } => {
                let policies: Vec<String> = isolated_by.iter().map(ToString::to_string).collect();
                let mode = pod.as_ref().map_or("blocking", &mode_of);
                audited |= mode == "audit";
                format!(
                    "{label} {who}: DENIED: isolated by {} and no rule of theirs allows this flow{}",
                    policies.join(", "),
                    audit_note(mode)
                )
            }
            DirectionVerdict::Cluster { rule, passed } => {
                let pass = passed.as_ref().map_or(String::new(), |p| {
                    format!("{} passed it on to NetworkPolicy and the Baseline tier; ", describe(p))
                });
                match rule.action {
                    Action::Deny => {
                        let mode = pod.as_ref().map_or("blocking", &mode_of);
                        audited |= mode == "audit";
                        format!(
                            "{label} {who}: {pass}DENIED by {}{}",
                            describe(rule),
                            audit_note(mode)
                        )
                    }
                    _ => format!("{label} {who}: {pass}allowed by {}", describe(rule)),
                }
            }
        });
    }
    let mut dry_run = Vec::new();
    for (label, e, w, pod, ip) in [
        ("egress of", &verdict.egress, &would.egress, &src_pod, src),
        (
            "ingress of",
            &verdict.ingress,
            &would.ingress,
            &dst_pod,
            dst,
        ),
    ] {
        if e.allows() == w.allows() {
            continue;
        }
        let names = evaluate::dry_run_policies(snapshot, w);
        let what = if w.allows() {
            "would be allowed by"
        } else {
            "would be dropped by"
        };
        why.push(format!(
            "{label} {}: {what} dry-run policy {} (it changes no verdict until the annotation goes)",
            name(ip, pod),
            names.join(", ")
        ));
        dry_run.extend(names);
    }
    let denied_somewhere = !verdict.allowed();
    let blocking_denial = [(&verdict.egress, &src_pod), (&verdict.ingress, &dst_pod)]
        .iter()
        .any(|(d, pod)| !d.allows() && pod.as_ref().map_or("blocking", &mode_of) == "blocking");
    let outcome = if !denied_somewhere {
        "forwarded"
    } else if blocking_denial || !audited {
        "dropped"
    } else {
        "audit"
    };
    let end = |ip, pod: Option<ObjectRef>| End {
        ip,
        mode: pod.as_ref().map(&mode_of),
        pod,
    };
    Ok(Explanation {
        from: end(src, src_pod),
        to: end(dst, dst_pod),
        family: family_name(src),
        protocol: proto,
        port: dport,
        would_be: (would.egress.allows() != verdict.egress.allows()
            || would.ingress.allows() != verdict.ingress.allows())
        .then_some(would),
        verdict,
        outcome,
        why,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{namespace, node, pod, policy, snapshot};

    #[test]
    fn a_dry_run_policy_is_named_where_it_would_change_the_verdict() {
        let snap = snapshot(
            vec![namespace("a", "team=a"), namespace("b", "team=b")],
            vec![
                pod("a", "server", "app=server", "10.0.1.10", &[]),
                pod("b", "client", "app=client", "10.0.2.10", &[]),
            ],
            vec![policy(
                "metadata: {name: lockdown, namespace: a, annotations: {cns.io/policy-audit-mode: 'true'}}
spec: {podSelector: {}, policyTypes: [Ingress]}",
            )],
        );
        let explain_flow = |snap: &_| {
            explain(
                snap,
                &node(),
                "b/client",
                "a/server",
                "80/TCP",
                |_| "blocking",
            )
            .expect("explain")
        };
        let e = explain_flow(&snap);
        assert_eq!(e.outcome, "forwarded");
        assert_eq!(e.dry_run, ["NetworkPolicy/a/lockdown"]);
        assert!(e.would_be.as_ref().is_some_and(|w| !w.allowed()));
        assert!(
            e.why
                .iter()
                .any(|l| l.contains("would be dropped by dry-run policy")),
            "{:?}",
            e.why
        );
        // Without the annotation: enforced, and nothing dry-run to name.
        let mut snap = snap;
        for np in snap.policies.values_mut() {
            std::sync::Arc::make_mut(np).metadata.annotations = None;
        }
        let e = explain_flow(&snap);
        assert_eq!(e.outcome, "dropped");
        assert!(e.dry_run.is_empty() && e.would_be.is_none());
    }
}
