//! The rollout report as text (`policy rollout` without `-o json`), and the durations it
//! reads and prints.

use std::time::Duration;

use super::{Report, State};

/// The report as text: per policy, the verdict first, then counts and top flows.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if r.policies.is_empty() {
        out.push_str(
            "no dry-run policies (annotate one with cns.io/policy-audit-mode: \"true\")\n",
        );
        return out;
    }
    for p in &r.policies {
        let state = match p.verdict.state {
            State::Safe => "SAFE",
            State::NotSafe => "NOT SAFE",
            State::Watching => "WATCHING",
        };
        _ = writeln!(out, "{} [{state}] {}", p.policy, p.verdict.text);
        _ = writeln!(
            out,
            "  watching for {} (since {}); would-be drops: {} ingress, {} egress; would-be allows: {} ingress, {} egress",
            p.watching_for,
            p.watching_since,
            p.would_drop.ingress,
            p.would_drop.egress,
            p.would_allow.ingress,
            p.would_allow.egress
        );
        for f in &p.open_flows {
            let port = if f.port == 0 {
                String::new()
            } else {
                format!(":{}", f.port)
            };
            _ = writeln!(
                out,
                "  open        {:<7} {} -> {}{port}/{} (connected; enforcing would cut it)",
                f.direction.as_str(),
                f.source,
                f.destination,
                f.protocol
            );
        }
        for f in &p.top_flows {
            let port = if f.flow.port == 0 {
                String::new()
            } else {
                format!(":{}", f.flow.port)
            };
            _ = writeln!(
                out,
                "  {:<11} {:<7} {} -> {}{port}/{} x{} (last {}){}",
                f.flow.outcome.as_str(),
                f.flow.direction.as_str(),
                f.flow.source,
                f.flow.destination,
                f.flow.protocol,
                f.count,
                f.last_seen,
                f.rule
                    .as_ref()
                    .map(|r| format!(" by {r}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// `3h12m`, `2m`, `45s`, `2d4h`: the two largest units.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, m) if sec == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m{sec}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// Reads `--since` (`90s`, `15m`, `1h`, `2h30m`, `1d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let span: jiff::Span = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 90s, 15m, 1h, 2h30m)"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("invalid duration {s:?}: negative"))
}
