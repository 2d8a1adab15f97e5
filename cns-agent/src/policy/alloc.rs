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

/// The free numbers of one numbering, for changing it one key at a time with the result
/// [`allocate`] would give: a key that goes gives its number back, and keys that come take
/// the smallest free numbers in key order (releases first, then arrivals in order).
#[derive(Clone, Debug, Default)]
pub struct Free {
    /// Numbers below `next` no key holds.
    holes: BTreeSet<u32>,
    /// One past the highest number handed out (or `base`).
    next: u32,
    max: u32,
}

impl Free {
    /// The free numbers of `ids` (as [`allocate`] returned them) within `base..=max`.
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a u32>, base: u32, max: u32) -> Self {
        let used: BTreeSet<u32> = ids.into_iter().copied().collect();
        let next = used.last().map_or(base, |n| n.saturating_add(1)).max(base);
        Self {
            holes: (base..next).filter(|n| !used.contains(n)).collect(),
            next,
            max,
        }
    }

    pub fn release(&mut self, id: u32) {
        self.holes.insert(id);
    }

    /// The smallest free number, or `None` when the range is exhausted.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(n) = self.holes.pop_first() {
            return Some(n);
        }
        if self.next > self.max {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&'static str]) -> BTreeSet<&'static str> {
        keys.iter().copied().collect()
    }

    #[test]
    fn free_numbers_give_what_allocate_gives() {
        let prev = BTreeMap::from([("b", 12), ("gone", 10), ("c", 11), ("e", 15)]);
        let mut free = Free::of(prev.values(), 10, 100);
        let mut ids = prev.clone();
        free.release(ids.remove("gone").unwrap());
        for key in ["a", "d", "f"] {
            ids.insert(key, free.take().unwrap());
        }
        let needed = set(&["a", "b", "c", "d", "e", "f"]);
        assert_eq!(ids, allocate(&needed, &prev, 10, 100));
        let mut tight = Free::of([&1, &2], 1, 3);
        assert_eq!((tight.take(), tight.take()), (Some(3), None));
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
    }
}
