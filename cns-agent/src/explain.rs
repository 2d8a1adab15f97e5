//! `cns-agent policy explain`: the verdict for one flow and why, from the reference evaluator
//! over the agent's live snapshot, with the effective mode of the endpoints involved.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::policy::{
    DirectionVerdict, Flow, FlowVerdict, evaluate,
    model::{NodeContext, ObjectRef, Snapshot},
    view,
};

/// One end of the flow as given on the command line: `NAMESPACE/POD` or an IPv4 address.
pub fn resolve(snapshot: &Snapshot, s: &str) -> Result<(Ipv4Addr, Option<ObjectRef>), String> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        let pod = snapshot
            .pods
            .iter()
            .find(|(_, p)| view::pod_is_active(p) && view::pod_ipv4(p) == Some(ip))
            .map(|(r, _)| r.clone());
        return Ok((ip, pod));
    }
    let Some((ns, name)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} is neither NAMESPACE/POD nor an IPv4 address"
        ));
    };
    let r = ObjectRef::new(ns, name);
    let pod = snapshot
        .pods
        .get(&r)
        .ok_or_else(|| format!("no pod {r} in the agent's source"))?;
    let ip = view::pod_ipv4(pod).ok_or_else(|| format!("pod {r} has no IPv4 address (yet)"))?;
    Ok((ip, Some(r)))
}

/// `80/TCP`, `53/UDP`, `8080` (TCP), `ICMP`.
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
    pub ip: Ipv4Addr,
    pub pod: Option<ObjectRef>,
    /// The effective mode of this pod's enforcement ("audit"/"blocking"), if it is a pod.
    pub mode: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub from: End,
    pub to: End,
    pub protocol: u8,
    pub port: u16,
    pub verdict: FlowVerdict,
    /// "forwarded", "dropped", or "audit" (denied by policy, passing in audit mode).
    pub outcome: &'static str,
    /// Human-readable reasoning, one line per point.
    pub why: Vec<String>,
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
    let (src, src_pod) = resolve(snapshot, from)?;
    let (dst, dst_pod) = resolve(snapshot, to)?;
    let (proto, dport) = parse_port(port)?;
    let verdict = evaluate(
        snapshot,
        node,
        &Flow {
            src,
            dst,
            proto,
            dport,
        },
    );
    let name = |ip: Ipv4Addr, pod: &Option<ObjectRef>| match pod {
        Some(p) => format!("{p} ({ip})"),
        None => ip.to_string(),
    };
    let mut why = Vec::new();
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
                    if mode == "audit" {
                        "; the pod is in audit mode, so it passes and is counted as audit (blocking mode would drop it)"
                    } else {
                        ""
                    }
                )
            }
        });
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
        protocol: proto,
        port: dport,
        verdict,
        outcome,
        why,
    })
}
