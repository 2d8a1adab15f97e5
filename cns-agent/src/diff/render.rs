//! The text output of `cns-agent policy diff`: `+` added, `-` removed, `~` changed, rule
//! lines laid out as `policy show` prints them.

use std::fmt::Write as _;

use super::{Change, Diff, DirectionDiff, EndpointDiff};

fn isolation(isolated: bool) -> &'static str {
    if isolated {
        "isolated"
    } else {
        "not isolated (all allowed)"
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn direction(out: &mut String, name: &str, d: &DirectionDiff) {
    let state = match d.isolation_change {
        Some(Change {
            from: Some(from),
            to: Some(to),
        }) => format!("{} -> {}", isolation(from), isolation(to)),
        _ => isolation(d.isolated).to_owned(),
    };
    _ = writeln!(out, "    {name}: {state}");
    let word = if name == "ingress" { "from" } else { "to" };
    for (sign, rules) in [('+', &d.rules_added), ('-', &d.rules_removed)] {
        for r in rules {
            _ = writeln!(
                out,
                "      {sign} {word:<4} {:<44} ports {:<16} by {}",
                r.peer,
                r.ports,
                r.policies.join(",")
            );
        }
    }
}

fn endpoint(out: &mut String, e: &EndpointDiff) {
    let (sign, note) = match e.change {
        "added" => ('+', " (new endpoint)"),
        "removed" => ('-', " (endpoint removed)"),
        _ => ('~', ""),
    };
    _ = writeln!(out, "  {sign} {}{note}", e.pod);
    match &e.mode {
        Some(Change {
            from: Some(from),
            to: Some(to),
        }) => _ = writeln!(out, "    mode: {from} -> {to}"),
        Some(Change { from, to }) => {
            let mode = to.or(*from).unwrap_or("global");
            if mode != "global" {
                _ = writeln!(out, "    mode: {mode}");
            }
        }
        None => {}
    }
    let added_or_removed = e.change != "changed";
    for (name, d) in [("ingress", &e.ingress), ("egress", &e.egress)] {
        if added_or_removed || !d.is_empty() {
            direction(out, name, d);
        }
    }
}

/// The diff as text: `from` and `to` name the two sides; a summary line ends it.
pub fn text(diff: &Diff, from: &str, to: &str) -> String {
    let mut out = format!("--- {from}\n+++ {to}\n");
    let policies = [
        ('+', &diff.policies_added),
        ('~', &diff.policies_changed),
        ('-', &diff.policies_removed),
    ];
    if policies.iter().any(|(_, l)| !l.is_empty()) {
        out.push_str("policies:\n");
        for (sign, list) in policies {
            for p in list {
                _ = writeln!(out, "  {sign} {p}");
            }
        }
    }
    if !diff.endpoints.is_empty() {
        out.push_str("endpoints:\n");
        for e in &diff.endpoints {
            endpoint(&mut out, e);
        }
    }
    if diff.is_empty() {
        _ = writeln!(
            out,
            "no difference in enforcement ({} compared)",
            plural(diff.endpoints_compared, "endpoint", "endpoints")
        );
        return out;
    }
    let (added, removed) = diff.endpoints.iter().fold((0, 0), |(a, r), e| {
        (
            a + e.ingress.rules_added.len() + e.egress.rules_added.len(),
            r + e.ingress.rules_removed.len() + e.egress.rules_removed.len(),
        )
    });
    _ = writeln!(
        out,
        "policies: {} added, {} changed, {} removed; endpoints: {} of {} {}, {} added, {} removed",
        diff.policies_added.len(),
        diff.policies_changed.len(),
        diff.policies_removed.len(),
        diff.endpoints.len(),
        diff.endpoints_compared,
        if diff.endpoints.len() == 1 {
            "differs"
        } else {
            "differ"
        },
        plural(added, "rule", "rules"),
        removed
    );
    out
}
