//! Address sets as the diff shows them: what a longest-prefix partition admits, flattened
//! to ranges, then written as the fewest CIDRs (or as `NET except ...` when shorter).
//!
//! Addresses are numbers of one family (callers never mix them), as `u128` with exclusive
//! ends. IPv4 fits exactly; the IPv6 space's end (2^128) does not, so it is written
//! `u128::MAX` and read back as the end of the space (the only inexact case, a set ending at
//! ffff:...:fffe, cannot come from prefixes without an except of the very last address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// Whether addresses are IPv6 (else IPv4), and the width of the family.
fn width(v6: bool) -> u32 {
    if v6 { 128 } else { 32 }
}

/// One past the family's last address (saturated for IPv6: see the module doc).
fn space_end(v6: bool) -> u128 {
    if v6 { u128::MAX } else { 1 << 32 }
}

/// Sorted disjoint CIDRs (IPv4 first, then IPv6) as a list, or per family as `NET except
/// A,B` (as an ipBlock is written) when that is shorter: `0.0.0.0/0 except 10.0.0.0/8`
/// rather than eight prefixes.
pub fn cidrs_text(nets: &[IpNetwork]) -> String {
    let split = nets.partition_point(IpNetwork::is_ipv4);
    let (v4, v6) = nets.split_at(split);
    [family_text(v4), family_text(v6)]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// [`cidrs_text`] of one family.
fn family_text(nets: &[IpNetwork]) -> String {
    let join = |nets: &[IpNetwork]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let (Some(first), Some(last)) = (nets.first(), nets.last()) else {
        return String::new();
    };
    let v6 = first.is_ipv6();
    let (start, end) = (bounds(*first).0, bounds(*last).1);
    // The smallest prefix holding them all, and what of it they leave out.
    let host_bits = 128 - (start ^ (end - 1)).leading_zeros();
    let outer_start = start.checked_shr(host_bits).unwrap_or(0) << host_bits.min(127);
    let outer_start = if host_bits == 128 { 0 } else { outer_start };
    let outer_end = outer_start
        .saturating_add(1u128.checked_shl(host_bits).unwrap_or(u128::MAX))
        .min(space_end(v6));
    let mut gaps = Vec::new();
    let mut pos = outer_start;
    for n in nets {
        let (s, e) = bounds(*n);
        gaps.extend(range_to_cidrs(v6, pos, s));
        pos = e;
    }
    gaps.extend(range_to_cidrs(v6, pos, outer_end));
    match range_to_cidrs(v6, outer_start, outer_end).as_slice() {
        [outer] if !gaps.is_empty() && gaps.len() + 1 < nets.len() => {
            format!("{outer} except {}", join(&gaps))
        }
        _ => join(nets),
    }
}

/// The first address of `net` and one past its last, as integers.
fn bounds(net: IpNetwork) -> (u128, u128) {
    let v6 = net.is_ipv6();
    let start = match net.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let size = 1u128.checked_shl(width(v6) - u32::from(net.prefix()));
    let end = size.map_or(u128::MAX, |size| start.saturating_add(size));
    (start, end.min(space_end(v6)))
}

/// What a longest-prefix lookup over `prefixes` answers, as disjoint address ranges
/// `[start, end)` with their value, in address order (adjacent equal values merged).
/// Prefixes must be distinct; any two are nested or disjoint, as prefixes are.
pub fn lpm_ranges(prefixes: &[(IpNetwork, u32)]) -> Vec<(u128, u128, u32)> {
    let mut sorted: Vec<(u128, u128, u32)> = prefixes
        .iter()
        .map(|(net, v)| {
            let (s, e) = bounds(*net);
            (s, e, *v)
        })
        .collect();
    // By start, the wider prefix first: a prefix comes after every prefix containing it.
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<(u128, u128, u32)> = Vec::new();
    let mut emit = |s: u128, e: u128, v: u32| {
        if s >= e {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == v => last.1 = e,
            _ => out.push((s, e, v)),
        }
    };
    // The prefixes containing the current position, innermost last.
    let mut open: Vec<(u128, u128, u32)> = Vec::new();
    let mut pos = 0u128;
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
pub fn merge_ranges(ranges: impl Iterator<Item = (u128, u128)>) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = ranges.collect();
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The smallest list of CIDRs of the family (`v6` or IPv4) covering exactly `[start, end)`.
pub fn range_to_cidrs(v6: bool, mut start: u128, end: u128) -> Vec<IpNetwork> {
    let full = width(v6);
    let mut out = Vec::new();
    while start < end {
        // The largest aligned block at `start` that fits (the whole rest of the IPv6 space
        // when `end` is its saturated end).
        let mut bits = start.trailing_zeros().min(full);
        let fits = |bits: u32| {
            if v6 && end == u128::MAX {
                return bits == 128 || start + ((1u128 << bits) - 1) <= end;
            }
            1u128
                .checked_shl(bits)
                .is_some_and(|size| size <= end - start)
        };
        while !fits(bits) {
            bits -= 1;
        }
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::from(start))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX)))
        };
        let prefix = u8::try_from(full - bits).unwrap_or(0);
        if let Ok(net) = IpNetwork::new(addr, prefix) {
            out.push(net);
        }
        match 1u128
            .checked_shl(bits)
            .and_then(|size| start.checked_add(size))
        {
            Some(next) if !(v6 && next == u128::MAX) => start = next,
            _ => break,
        }
    }
    out
}
