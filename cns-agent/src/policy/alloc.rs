//! Stable numbering: what was numbered before keeps its number, newcomers take the smallest
//! free number, and what is gone gives its number back.

use std::collections::{BTreeMap, BTreeSet};

/// Numbers every key of `needed` within `base..=max`. Keys of `prev` that are still needed
/// keep their number (unless it is out of range or already taken by a smaller key); the
/// others get the smallest free number in key order. Keys left over when the range is
/// exhausted get none.
pub fn allocate<K: Ord + Clone>(
    needed: &BTreeSet<K>,
    prev: &BTreeMap<K, u32>,
    base: u32,
    max: u32,
) -> BTreeMap<K, u32> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for key in needed {
        if let Some(&id) = prev.get(key)
            && (base..=max).contains(&id)
            && used.insert(id)
        {
            out.insert(key.clone(), id);
        }
    }
    let mut next = base;
    for key in needed {
        if out.contains_key(key) {
            continue;
        }
        while used.contains(&next) {
            next = next.saturating_add(1);
        }
        if next > max || used.contains(&next) {
            break;
        }
        used.insert(next);
        out.insert(key.clone(), next);
    }
    out
}

/// [`allocate`] for `u16` numbers.
pub fn allocate_u16<K: Ord + Clone>(
    needed: &BTreeSet<K>,
    prev: &BTreeMap<K, u16>,
    base: u16,
    max: u16,
) -> BTreeMap<K, u16> {
    let prev: BTreeMap<K, u32> = prev
        .iter()
        .map(|(k, v)| (k.clone(), u32::from(*v)))
        .collect();
    allocate(needed, &prev, u32::from(base), u32::from(max))
        .into_iter()
        .filter_map(|(k, v)| u16::try_from(v).ok().map(|v| (k, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&'static str]) -> BTreeSet<&'static str> {
        keys.iter().copied().collect()
    }

    #[test]
    fn fresh_keys_take_smallest_free() {
        let got = allocate(&set(&["a", "b", "c"]), &BTreeMap::new(), 10, 100);
        assert_eq!(got, BTreeMap::from([("a", 10), ("b", 11), ("c", 12)]));
    }

    #[test]
    fn previous_numbers_are_kept_and_holes_reused() {
        let prev = BTreeMap::from([("b", 12), ("gone", 10), ("c", 11)]);
        let got = allocate(&set(&["a", "b", "c", "d"]), &prev, 10, 100);
        assert_eq!(
            got,
            BTreeMap::from([("a", 10), ("b", 12), ("c", 11), ("d", 13)])
        );
    }

    #[test]
    fn bad_previous_numbers_are_replaced() {
        // Below the base, and a duplicate.
        let prev = BTreeMap::from([("a", 3), ("b", 10), ("c", 10)]);
        let got = allocate(&set(&["a", "b", "c"]), &prev, 10, 100);
        assert_eq!(got, BTreeMap::from([("a", 11), ("b", 10), ("c", 12)]));
    }

    #[test]
    fn exhausted_range_leaves_keys_out() {
        let got = allocate(&set(&["a", "b", "c"]), &BTreeMap::new(), 1, 2);
        assert_eq!(got, BTreeMap::from([("a", 1), ("b", 2)]));
        let got = allocate_u16(&set(&["a", "b"]), &BTreeMap::new(), u16::MAX, u16::MAX);
        assert_eq!(got, BTreeMap::from([("a", u16::MAX)]));
    }
}
