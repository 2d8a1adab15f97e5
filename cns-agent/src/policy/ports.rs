//! Overlapping port matches of one endpoint, direction and identity, made into entries the
//! kernel's longest-prefix match answers exactly: every entry holds what every broader
//! entry says of its ports too (the rules of all tiers, merged), and port ranges are cut
//! where any two overlap, so no packet matches two ranges. Entries that overlap nothing stay
//! as they were.

use std::collections::BTreeMap;

use super::model::{PortMatch, PortRange, Protocol, RuleValue};

/// `entries` (any overlaps) as non-overlapping entries whose longest match for a packet
/// holds the merge of every input entry matching it.
pub fn resolve(entries: &BTreeMap<PortMatch, RuleValue>) -> BTreeMap<PortMatch, RuleValue> {
    let mut out = BTreeMap::new();
    let merge_all = |it: &mut dyn Iterator<Item = RuleValue>| {
        it.fold(None, |acc: Option<RuleValue>, v| {
            Some(acc.map_or(v, |a| a.merge(v)))
        })
    };
    let any = merge_all(
        &mut entries
            .iter()
            .filter(|(m, _)| m.proto.is_none())
            .map(|(_, v)| *v),
    );
    if let Some(any) = any {
        out.insert(
            PortMatch {
                proto: None,
                ports: None,
            },
            any,
        );
    }
    let protos: Vec<Protocol> = {
        let mut p: Vec<Protocol> = entries.keys().filter_map(|m| m.proto).collect();
        p.dedup();
        p
    };
    for proto in protos {
        let of_proto = entries.iter().filter(|(m, _)| m.proto == Some(proto));
        let whole = merge_all(
            &mut of_proto
                .clone()
                .filter(|(m, _)| m.ports.is_none())
                .map(|(_, v)| *v),
        );
        let base = match (any, whole) {
            (Some(a), Some(w)) => Some(a.merge(w)),
            (a, w) => a.or(w),
        };
        if let (Some(_), Some(b)) = (whole, base) {
            out.insert(
                PortMatch {
                    proto: Some(proto),
                    ports: None,
                },
                b,
            );
        }
        let ranges: Vec<(PortRange, RuleValue)> = of_proto
            .filter_map(|(m, v)| m.ports.map(|r| (r, *v)))
            .collect();
        // Cut points: every range's start and the port after its end.
        let mut cuts: Vec<u32> = ranges
            .iter()
            .flat_map(|(r, _)| [u32::from(r.start), u32::from(r.end) + 1])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        // Each piece between two cuts on its own (not joined with a neighbour saying the
        // same: single ports stay exact-port entries, which the datapath finds by hash).
        for w in cuts.windows(2) {
            let (start, end) = (w[0], w[1] - 1);
            let covering = merge_all(
                &mut ranges
                    .iter()
                    .filter(|(r, _)| u32::from(r.start) <= start && end <= u32::from(r.end))
                    .map(|(_, v)| *v),
            );
            // A piece saying no more than its protocol's entry is left to it.
            let Some(v) = covering
                .map(|c| base.map_or(c, |b| b.merge(c)))
                .filter(|v| Some(*v) != base)
            else {
                continue;
            };
            let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(end)) else {
                continue;
            };
            out.insert(
                PortMatch {
                    proto: Some(proto),
                    ports: Some(PortRange { start, end }),
                },
                v,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{cluster::Action, model::TierRule};

    fn m(proto: Option<Protocol>, ports: Option<(u16, u16)>) -> PortMatch {
        PortMatch {
            proto,
            ports: ports.map(|(start, end)| PortRange { start, end }),
        }
    }

    fn deny(rank: u32) -> RuleValue {
        RuleValue {
            admin: Some(TierRule {
                rank,
                action: Action::Deny,
            }),
            ..RuleValue::default()
        }
    }

    /// What the longest match says for (proto, port), as the kernel finds it.
    fn lookup(
        out: &BTreeMap<PortMatch, RuleValue>,
        proto: Protocol,
        port: u16,
    ) -> Option<RuleValue> {
        let ranged = out.iter().find(|(k, _)| {
            k.proto == Some(proto) && k.ports.is_some_and(|r| r.start <= port && port <= r.end)
        });
        ranged
            .or_else(|| {
                out.iter()
                    .find(|(k, _)| k.proto == Some(proto) && k.ports.is_none())
            })
            .or_else(|| out.iter().find(|(k, _)| k.proto.is_none()))
            .map(|(_, v)| *v)
    }

    #[test]
    fn a_broad_deny_reaches_a_narrow_allow() {
        let tcp = Some(Protocol::Tcp);
        let entries = BTreeMap::from([
            (m(None, None), deny(5)),
            (m(tcp, Some((80, 80))), RuleValue::allow(1)),
        ]);
        let out = resolve(&entries);
        assert_eq!(
            lookup(&out, Protocol::Tcp, 80),
            Some(deny(5).merge(RuleValue::allow(1)))
        );
        assert_eq!(lookup(&out, Protocol::Tcp, 81), Some(deny(5)));
        assert_eq!(lookup(&out, Protocol::Udp, 80), Some(deny(5)));
    }

    #[test]
    fn overlapping_ranges_are_cut() {
        let tcp = Some(Protocol::Tcp);
        let entries = BTreeMap::from([
            (m(tcp, Some((80, 90))), deny(2)),
            (m(tcp, Some((85, 100))), RuleValue::allow(3)),
        ]);
        let out = resolve(&entries);
        for port in 0..200u16 {
            let mut want: Option<RuleValue> = None;
            for (k, v) in &entries {
                if k.ports.is_some_and(|r| r.start <= port && port <= r.end) {
                    want = Some(want.map_or(*v, |w| w.merge(*v)));
                }
            }
            assert_eq!(lookup(&out, Protocol::Tcp, port), want, "port {port}");
        }
        let ranges: Vec<_> = out.keys().filter_map(|k| k.ports).collect();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.end < b.start || b.end < a.start, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn adjacent_single_ports_stay_single() {
        let tcp = Some(Protocol::Tcp);
        let entries: BTreeMap<_, _> = (1000..1010)
            .map(|p| (m(tcp, Some((p, p))), RuleValue::allow(1)))
            .collect();
        assert_eq!(resolve(&entries), entries);
    }

    #[test]
    fn allow_only_entries_are_unchanged() {
        let tcp = Some(Protocol::Tcp);
        let entries = BTreeMap::from([
            (m(tcp, Some((80, 80))), RuleValue::allow(1)),
            (m(Some(Protocol::Udp), None), RuleValue::allow(2)),
        ]);
        assert_eq!(resolve(&entries), entries);
    }
}
