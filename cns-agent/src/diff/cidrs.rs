//! Address sets as the diff shows them: what a longest-prefix partition admits, flattened
//! to ranges, then written as the fewest CIDRs (or as `NET except ...` when shorter).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Sorted disjoint CIDRs as a list, or as `NET except A,B` (as an ipBlock is written)
/// when that is shorter: `0.0.0.0/0 except 10.0.0.0/8` rather than eight prefixes.
pub fn cidrs_text(nets: &[Ipv4Network]) -> String {
    let join = |nets: &[Ipv4Network]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let (Some(first), Some(last)) = (nets.first(), nets.last()) else {
        return String::new();
    };
    let (start, end) = (bounds(*first).0, bounds(*last).1);
    // The smallest prefix holding them all, and what of it they leave out.
    let host_bits = 64 - (start ^ (end - 1)).leading_zeros();
    let outer_start = start >> host_bits << host_bits;
    let outer_end = outer_start + (1 << host_bits);
    let mut gaps = Vec::new();
    let mut pos = outer_start;
    for n in nets {
        let (s, e) = bounds(*n);
        gaps.extend(range_to_cidrs(pos, s));
        pos = e;
    }
    gaps.extend(range_to_cidrs(pos, outer_end));
    match range_to_cidrs(outer_start, outer_end).as_slice() {
        [outer] if !gaps.is_empty() && gaps.len() + 1 < nets.len() => {
            format!("{outer} except {}", join(&gaps))
        }
        _ => join(nets),
    }
}

/// The first address of `net` and one past its last, as integers.
fn bounds(net: Ipv4Network) -> (u64, u64) {
    let start = u64::from(u32::from(net.network()));
    (start, start + (1u64 << (32 - u32::from(net.prefix()))))
}

/// What a longest-prefix lookup over `prefixes` answers, as disjoint address ranges
/// `[start, end)` with their value, in address order (adjacent equal values merged).
/// Prefixes must be distinct; any two are nested or disjoint, as prefixes are.
pub fn lpm_ranges(prefixes: &[(Ipv4Network, u32)]) -> Vec<(u64, u64, u32)> {
    let mut sorted: Vec<(u64, u64, u32)> = prefixes
        .iter()
        .map(|(net, v)| {
            let (s, e) = bounds(*net);
            (s, e, *v)
        })
        .collect();
    // By start, the wider prefix first: a prefix comes after every prefix containing it.
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    let mut emit = |s: u64, e: u64, v: u32| {
        if s >= e {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == v => last.1 = e,
            _ => out.push((s, e, v)),
        }
    };
    // The prefixes containing the current position, innermost last.
    let mut open: Vec<(u64, u64, u32)> = Vec::new();
    let mut pos = 0u64;
    for p in sorted {
        while let Some(&(_, end, v)) = open.last() {
            if end > p.0 {
                break;
            }
            emit(pos, end, v);
            pos = end;
            open.pop();
        }
        if let Some(&(_, _, v)) = open.last() {
            emit(pos, p.0, v);
        }
        pos = p.0;
        open.push(p);
    }
    while let Some((_, end, v)) = open.pop() {
        emit(pos, end, v);
        pos = end;
    }
    out
}

/// Sorted, disjoint ranges merged where they touch.
pub fn merge_ranges(ranges: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The smallest list of CIDRs covering exactly `[start, end)`.
pub fn range_to_cidrs(mut start: u64, end: u64) -> Vec<Ipv4Network> {
    let mut out = Vec::new();
    while start < end {
        let mut bits = start.trailing_zeros().min(32);
        while (1u64 << bits) > end - start {
            bits -= 1;
        }
        let addr = Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX));
        let prefix = u8::try_from(32 - bits).unwrap_or(32);
        if let Ok(net) = Ipv4Network::new(addr, prefix) {
            out.push(net);
        }
        start += 1u64 << bits;
    }
    out
}
