//! Staged rollout: what each dry-run policy (`cns.io/policy-audit-mode: "true"` on the
//! policy) would change on this node, and whether it is safe to enforce.
//!
//! Pure: the agent feeds it the dry-run policies after each sync ([`Rollout::watch`]), the
//! event reader each dry-run event ([`Rollout::observe`]), and the pinned counters when a
//! report is asked for ([`Rollout::report`]); every call takes the time, so tests drive
//! it with their own clock. The summary is bounded: [`MAX_FLOWS`] flows per policy, the
//! least recently seen evicted first. Counts come from the counters (exact, and kept across
//! restarts); flows, first and last seen from the events (rate-limited, so a sample).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{events::humantime_rfc3339, policy::model::Direction};

mod text;

pub use text::{human, parse_duration, render};

/// `--since` when not given.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// The pinned counters (summed over CPUs) by policy name: the current dry-run policies'
/// (`names`), every direction and outcome, zero when not counted yet.
pub fn counts(
    rows: &[(cns_common::maps::DryRunCounterKey, u64)],
    names: &crate::names::Names,
) -> Counts {
    use cns_common::maps::DRY_RUN_WOULD_DROP;
    let mut out = Counts::new();
    for name in names.dry_run_policies.values() {
        for dir in [Direction::Ingress, Direction::Egress] {
            for outcome in [Outcome::WouldDrop, Outcome::WouldAllow] {
                out.insert((name.clone(), dir, outcome), 0);
            }
        }
    }
    for (k, n) in rows {
        let Some(name) = names.dry_run_policies.get(&k.policy) else {
            continue;
        };
        let dir = Direction::from_dir(k.dir);
        let outcome = if k.outcome == DRY_RUN_WOULD_DROP {
            Outcome::WouldDrop
        } else {
            Outcome::WouldAllow
        };
        *out.entry((name.clone(), dir, outcome)).or_default() += n;
    }
    out
}

/// Flows kept per policy.
pub const MAX_FLOWS: usize = 256;
/// Flows a report lists per policy.
pub const TOP_FLOWS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Passes today; the dry-run policy would drop it.
    WouldDrop,
    /// Dropped (or audited) today; the dry-run policy would allow it.
    WouldAllow,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::WouldDrop => "would-drop",
            Outcome::WouldAllow => "would-allow",
        }
    }
}

/// One flow as the summary keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    pub direction: Direction,
    pub outcome: Outcome,
    /// `namespace/pod`, or the address when it is no pod's.
    pub source: String,
    pub destination: String,
    pub protocol: String,
    /// Destination port (0 for protocols without ports).
    pub port: u16,
}

/// One dry-run event: a new flow whose verdict the policy would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub policy: Arc<str>,
    pub flow: FlowKey,
    /// The rule that would allow or drop, when the event names one.
    pub rule: Option<String>,
    pub at: SystemTime,
}

/// Counter totals per (policy, direction, outcome), from `CNS_DRY_RUN_COUNTERS`.
pub type Counts = BTreeMap<(Arc<str>, Direction, Outcome), u64>;

/// Per policy, the live connections it would drop (it passed them: enforcing it would cut
/// them), from conntrack.
pub type Open = BTreeMap<Arc<str>, Vec<FlowKey>>;

/// The live connections of `rows` by policy name (`names`: the current dry-run policies).
pub fn open(rows: &[crate::datapath::DryRunOpen], names: &crate::names::Names) -> Open {
    use crate::policy::model::DryRunCause;
    // The local end of a connection: the destination into the pod, the source out of it.
    let ep_id = |ip: std::net::IpAddr| {
        names
            .endpoints
            .iter()
            .find(|(_, e)| e.addrs.contains(ip))
            .map(|(id, _)| *id)
    };
    let peer = |ip: std::net::IpAddr| {
        names
            .pods_by_ip
            .get(&ip)
            .map_or_else(|| ip.to_string(), ToString::to_string)
    };
    let mut out = Open::new();
    for r in rows {
        let direction = Direction::from_dir(r.dir);
        let local = match direction {
            Direction::Ingress => r.dst,
            Direction::Egress => r.src,
        };
        let Some(ep) = ep_id(local) else {
            continue;
        };
        let cause = DryRunCause::from_datapath(r.cause, ep, direction);
        let Some(name) = names.dry_run_causes.get(&cause) else {
            continue;
        };
        out.entry(name.clone()).or_default().push(FlowKey {
            direction,
            outcome: Outcome::WouldDrop,
            source: peer(r.src),
            destination: peer(r.dst),
            protocol: crate::events::protocol_name(r.proto).into(),
            port: r.dport,
        });
    }
    out
}

#[derive(Clone, Debug)]
struct FlowStats {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    rule: Option<String>,
}

#[derive(Clone, Debug)]
struct Watched {
    since: SystemTime,
    flows: BTreeMap<FlowKey, FlowStats>,
    /// Would-be drop events seen (evicted flows included).
    drop_events: u64,
    /// Would-be drops counted but not seen as events at the last look at the counters
    /// (suppressed by the rate limit, or counted before a restart), and when that number
    /// last grew: such a drop counts as recent from the look that found it.
    unexplained: Option<u64>,
    drops_grew: Option<SystemTime>,
}

/// What the agent keeps per dry-run policy.
#[derive(Clone, Debug, Default)]
pub struct Rollout {
    policies: BTreeMap<Arc<str>, Watched>,
}

pub type SharedRollout = Arc<Mutex<Rollout>>;

impl Rollout {
    /// The dry-run policies are now `policies`: new ones are watched from `now`, the
    /// others forgotten (enforced or deleted).
    pub fn watch(&mut self, policies: &BTreeSet<Arc<str>>, now: SystemTime) {
        self.policies.retain(|p, _| policies.contains(p));
        for p in policies {
            self.policies.entry(p.clone()).or_insert_with(|| Watched {
                since: now,
                flows: BTreeMap::new(),
                drop_events: 0,
                unexplained: None,
                drops_grew: None,
            });
        }
    }

    /// One dry-run event (ignored for a policy not watched).
    pub fn observe(&mut self, o: Observation) {
        let Some(w) = self.policies.get_mut(&o.policy) else {
            return;
        };
        if o.flow.outcome == Outcome::WouldDrop {
            w.drop_events += 1;
        }
        if !w.flows.contains_key(&o.flow) && w.flows.len() >= MAX_FLOWS {
            let oldest = w
                .flows
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                w.flows.remove(&k);
            }
        }
        let s = w.flows.entry(o.flow).or_insert(FlowStats {
            count: 0,
            first: o.at,
            last: o.at,
            rule: None,
        });
        s.count += 1;
        s.first = s.first.min(o.at);
        s.last = s.last.max(o.at);
        if o.rule.is_some() {
            s.rule = o.rule;
        }
    }

    /// The report as of `now`: a policy is safe to enforce when it would have dropped
    /// nothing in the last `window` and has been watched that long. `counts` were read at
    /// `read` (the real time; `now` may be another, to see what the report will say).
    pub fn report(
        &mut self,
        read: SystemTime,
        now: SystemTime,
        window: Duration,
        counts: &Counts,
        open: &Open,
    ) -> Report {
        let policies = self
            .policies
            .iter_mut()
            .map(|(name, w)| {
                let count = |dir, outcome| {
                    counts
                        .get(&(name.clone(), dir, outcome))
                        .copied()
                        .unwrap_or(0)
                };
                let drops = count(Direction::Ingress, Outcome::WouldDrop)
                    + count(Direction::Egress, Outcome::WouldDrop);
                // Drops no event told of that grew since the last look grew by `now`, as
                // far as we know; those found at the first look (an agent restart) too.
                let unexplained = drops.saturating_sub(w.drop_events);
                if unexplained > w.unexplained.unwrap_or(0) {
                    w.drops_grew = Some(read);
                }
                w.unexplained = Some(unexplained);
                let open = open.get(name).map_or(&[][..], Vec::as_slice);
                policy_report(name, w, now, window, &count, open)
            })
            .collect();
        Report {
            now: rfc3339(now),
            window: human(window),
            policies,
        }
    }
}

fn policy_report(
    name: &str,
    w: &Watched,
    now: SystemTime,
    window: Duration,
    count: &dyn Fn(Direction, Outcome) -> u64,
    open: &[FlowKey],
) -> PolicyReport {
    let cutoff = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    // (first, last) seen of each outcome's flows.
    let seen = |outcome| {
        let of = w.flows.iter().filter(move |(k, _)| k.outcome == outcome);
        let first = of.clone().map(|(_, s)| s.first).min();
        (first, of.map(|(_, s)| s.last).max())
    };
    let (first_drop, last_drop) = seen(Outcome::WouldDrop);
    let (first_allow, last_allow) = seen(Outcome::WouldAllow);
    let last_drop = last_drop.max(w.drops_grew);
    let recent: Vec<(&FlowKey, &FlowStats)> = w
        .flows
        .iter()
        .filter(|(k, s)| k.outcome == Outcome::WouldDrop && s.last >= cutoff)
        .collect();
    let watched = now.duration_since(w.since).unwrap_or_default();
    let verdict = match last_drop.filter(|t| *t >= cutoff) {
        // Connections it would cut are open: however long ago they started.
        _ if !open.is_empty() => {
            let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
            for k in open {
                *by_source.entry(&k.source).or_default() += 1;
            }
            let (top, _) = by_source
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or(("", &0), |(s, n)| (*s, n));
            Verdict {
                state: State::NotSafe,
                text: format!(
                    "{} open connections it would cut (most from {top})",
                    open.len()
                ),
            }
        }
        Some(last) => {
            let ago = human(now.duration_since(last).unwrap_or_default());
            let mut by_source: BTreeMap<&str, u64> = BTreeMap::new();
            for (k, s) in &recent {
                *by_source.entry(&k.source).or_default() += s.count;
            }
            let top = by_source.iter().max_by_key(|(_, n)| **n).map(|(s, _)| *s);
            let text = match top {
                Some(src) => format!(
                    "{} flows from {src} would be dropped: last {ago} ago",
                    by_source[src]
                ),
                None => format!("flows would be dropped (counted, not sampled): last {ago} ago"),
            };
            Verdict {
                state: State::NotSafe,
                text,
            }
        }
        None => {
            let quiet = now
                .duration_since(last_drop.unwrap_or(w.since).max(w.since))
                .unwrap_or_default();
            if watched >= window {
                Verdict {
                    state: State::Safe,
                    text: format!("no would-be drops for {}: safe to enforce", human(quiet)),
                }
            } else {
                Verdict {
                    state: State::Watching,
                    text: format!(
                        "no would-be drops yet, but watched for {} of {}: not yet safe",
                        human(watched),
                        human(window)
                    ),
                }
            }
        }
    };
    let mut top: Vec<(&FlowKey, &FlowStats)> = w.flows.iter().collect();
    top.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(b.1.last.cmp(&a.1.last)));
    PolicyReport {
        policy: name.to_owned(),
        watching_since: rfc3339(w.since),
        watching_for: human(watched),
        would_drop: Totals {
            ingress: count(Direction::Ingress, Outcome::WouldDrop),
            egress: count(Direction::Egress, Outcome::WouldDrop),
            first_seen: first_drop.map(rfc3339),
            last_seen: last_drop.map(rfc3339),
        },
        would_allow: Totals {
            ingress: count(Direction::Ingress, Outcome::WouldAllow),
            egress: count(Direction::Egress, Outcome::WouldAllow),
            first_seen: first_allow.map(rfc3339),
            last_seen: last_allow.map(rfc3339),
        },
        open_connections: open.len() as u64,
        open_flows: open.iter().take(TOP_FLOWS).cloned().collect(),
        top_flows: top
            .into_iter()
            .take(TOP_FLOWS)
            .map(|(k, s)| FlowReport {
                flow: k.clone(),
                count: s.count,
                first_seen: rfc3339(s.first),
                last_seen: rfc3339(s.last),
                rule: s.rule.clone(),
            })
            .collect(),
        verdict,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub now: String,
    /// `--since`: how far back a would-be drop makes a policy unsafe.
    pub window: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyReport {
    pub policy: String,
    /// When this agent first saw it as a dry-run policy (its start, after a restart).
    pub watching_since: String,
    pub watching_for: String,
    pub would_drop: Totals,
    pub would_allow: Totals,
    /// Live connections it would drop (they passed; enforcing it cuts them), and some.
    pub open_connections: u64,
    pub open_flows: Vec<FlowKey>,
    /// The flows seen most often (events: a sample when rate-limited).
    pub top_flows: Vec<FlowReport>,
    pub verdict: Verdict,
}

/// New flows counted (since the policy became dry-run; kept across restarts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Totals {
    pub ingress: u64,
    pub egress: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowReport {
    #[serde(flatten)]
    pub flow: FlowKey,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Safe,
    NotSafe,
    /// Nothing would be dropped so far, but not for a whole window yet.
    Watching,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub state: State,
    pub text: String,
}

fn rfc3339(t: SystemTime) -> String {
    humantime_rfc3339(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn flow(source: &str, outcome: Outcome) -> FlowKey {
        FlowKey {
            direction: Direction::Ingress,
            outcome,
            source: source.into(),
            destination: "shop/db".into(),
            protocol: "TCP".into(),
            port: 5432,
        }
    }

    fn obs(policy: &str, source: &str, outcome: Outcome, t: SystemTime) -> Observation {
        Observation {
            policy: policy.into(),
            flow: flow(source, outcome),
            rule: None,
            at: t,
        }
    }

    const P: &str = "NetworkPolicy/shop/db-lockdown";

    #[test]
    fn the_verdict_follows_the_offending_traffic_on_a_test_clock() {
        let mut r = Rollout::default();
        let policies = BTreeSet::from([Arc::<str>::from(P)]);
        r.watch(&policies, at(0));
        let hour = Duration::from_secs(3600);
        let mut counts = Counts::new();
        // Watched for 10 minutes, nothing yet: not yet safe.
        let rep = r.report(at(600), at(600), hour, &counts, &Open::new());
        assert_eq!(rep.policies[0].verdict.state, State::Watching);
        assert!(
            rep.policies[0].verdict.text.contains("10m of 1h"),
            "{rep:?}"
        );
        // shop/api would be dropped, 14 times, the last 2 minutes before the report.
        for i in 0..14 {
            r.observe(obs(P, "shop/api", Outcome::WouldDrop, at(1000 + i * 10)));
        }
        r.observe(obs(P, "shop/web", Outcome::WouldDrop, at(1000)));
        counts.insert((P.into(), Direction::Ingress, Outcome::WouldDrop), 15);
        let rep = r.report(at(1130 + 120), at(1130 + 120), hour, &counts, &Open::new());
        let p = &rep.policies[0];
        assert_eq!(p.verdict.state, State::NotSafe);
        assert_eq!(
            p.verdict.text,
            "14 flows from shop/api would be dropped: last 2m ago"
        );
        assert_eq!(p.would_drop.ingress, 15);
        assert_eq!(p.top_flows[0].flow.source, "shop/api");
        assert_eq!(p.top_flows[0].count, 14);
        // The traffic stops: within the hour still not safe; an hour after the last drop,
        // safe (the counters did not grow).
        let rep = r.report(
            at(1130 + 3000),
            at(1130 + 3000),
            hour,
            &counts,
            &Open::new(),
        );
        assert_eq!(rep.policies[0].verdict.state, State::NotSafe);
        let rep = r.report(
            at(1130 + 3600 + 60),
            at(1130 + 3600 + 60),
            hour,
            &counts,
            &Open::new(),
        );
        assert_eq!(rep.policies[0].verdict.state, State::Safe);
        assert_eq!(
            rep.policies[0].verdict.text,
            "no would-be drops for 1h1m: safe to enforce"
        );
    }

    #[test]
    fn drops_the_rate_limit_kept_from_the_events_still_count() {
        let mut r = Rollout::default();
        r.watch(&BTreeSet::from([Arc::<str>::from(P)]), at(0));
        let hour = Duration::from_secs(3600);
        let mut counts = Counts::new();
        assert_eq!(
            r.report(at(7200), at(7200), hour, &counts, &Open::new())
                .policies[0]
                .verdict
                .state,
            State::Safe
        );
        counts.insert((P.into(), Direction::Egress, Outcome::WouldDrop), 3);
        let rep = r.report(at(7300), at(7300), hour, &counts, &Open::new());
        assert_eq!(rep.policies[0].verdict.state, State::NotSafe);
        assert!(rep.policies[0].verdict.text.contains("counted"), "{rep:?}");
        // Would-be allows never make a policy unsafe.
        counts.insert((P.into(), Direction::Egress, Outcome::WouldAllow), 9);
        r.observe(obs(P, "x/y", Outcome::WouldAllow, at(10_900)));
        let rep = r.report(at(11_000), at(11_000), hour, &counts, &Open::new());
        assert_eq!(rep.policies[0].verdict.state, State::Safe);
        assert_eq!(rep.policies[0].would_allow.egress, 9);
    }

    #[test]
    fn an_open_connection_it_would_cut_is_never_safe() {
        let mut r = Rollout::default();
        r.watch(&BTreeSet::from([Arc::<str>::from(P)]), at(0));
        let hour = Duration::from_secs(3600);
        let open = Open::from([(
            Arc::<str>::from(P),
            vec![flow("shop/api", Outcome::WouldDrop)],
        )]);
        // Days later, no new flow: the pool opened before the window is still there.
        let rep = r.report(at(90_000), at(90_000), hour, &Counts::new(), &open);
        let p = &rep.policies[0];
        assert_eq!(p.verdict.state, State::NotSafe);
        assert_eq!(
            p.verdict.text,
            "1 open connections it would cut (most from shop/api)"
        );
        assert_eq!(p.open_connections, 1);
        let rep = r.report(at(90_000), at(90_000), hour, &Counts::new(), &Open::new());
        assert_eq!(rep.policies[0].verdict.state, State::Safe);
    }

    #[test]
    fn the_summary_is_bounded_and_forgets_enforced_policies() {
        let mut r = Rollout::default();
        let policies = BTreeSet::from([Arc::<str>::from(P)]);
        r.watch(&policies, at(0));
        for i in 0..(MAX_FLOWS as u64 + 50) {
            r.observe(obs(P, &format!("ns/p{i}"), Outcome::WouldDrop, at(i)));
        }
        let w = &r.policies[P];
        assert_eq!(w.flows.len(), MAX_FLOWS);
        // The least recently seen went first.
        assert!(!w.flows.keys().any(|k| k.source == "ns/p0"));
        assert!(w.flows.keys().any(|k| k.source == "ns/p300"));
        // Events of a policy that is not dry-run are ignored; enforcing forgets it.
        r.observe(obs("NetworkPolicy/x/y", "a/b", Outcome::WouldDrop, at(1)));
        assert!(!r.policies.contains_key("NetworkPolicy/x/y"));
        r.watch(&BTreeSet::new(), at(500));
        assert!(r.policies.is_empty());
    }

    #[test]
    fn durations_read_and_print() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(human(Duration::from_secs(3 * 3600 + 12 * 60 + 5)), "3h12m");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
    }
}
