//! [`Labels`]: a pod's or namespace's labels as the agent keeps them, for every pod of the
//! cluster. A `BTreeMap<String, String>` of six labels costs about 1 KB (a 540-byte node and
//! twelve strings); this is one sorted slice of shared strings (32 bytes a label), whose
//! keys and values are interned: a cluster has few distinct label keys and values, and
//! thousands of pods repeat each.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use serde::{Serialize, Serializer, ser::SerializeMap};

/// Labels, sorted by key (each key once). Compares, orders and hashes as the
/// `BTreeMap<String, String>` of the same labels would.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Box<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets label `key` to `value` (replacing its value, if any).
    pub fn insert(&mut self, key: &str, value: &str) {
        let mut pairs = std::mem::take(&mut self.0).into_vec();
        match pairs.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => pairs[i].1 = intern(value),
            Err(i) => pairs.insert(i, (intern(key), intern(value))),
        }
        self.0 = pairs.into_boxed_slice();
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As Kubernetes objects spell labels.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    /// Of a key given twice, the last value counts (as for a `BTreeMap`).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = iter
            .into_iter()
            .map(|(k, v)| (intern(k.as_ref()), intern(v.as_ref())))
            .collect();
        // Stable: of equal keys the last one given is the last one kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Self(out.into_boxed_slice())
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        map.iter().collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for Labels {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    /// The value of label `key`; panics if there is none (as a `BTreeMap` does).
    fn index(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no label {key:?} in {self:?}"))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The interned strings, and how many there were after the last sweep.
struct Interner {
    strings: HashSet<Arc<str>>,
    swept: usize,
}

static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

/// The shared copy of `s`. Strings no label holds any more are dropped from the table
/// whenever it has doubled since the last sweep, so it stays within twice what is in use.
pub fn intern(s: &str) -> Arc<str> {
    // A panic elsewhere leaves the table consistent (each step is one insert or retain).
    let mut guard = INTERNER.lock().unwrap_or_else(PoisonError::into_inner);
    let table = guard.get_or_insert_with(|| Interner {
        strings: HashSet::new(),
        swept: 0,
    });
    if let Some(shared) = table.strings.get(s) {
        return shared.clone();
    }
    if table.strings.len() >= 2 * table.swept + 1024 {
        table.strings.retain(|s| Arc::strong_count(s) > 1);
        table.swept = table.strings.len();
    }
    let shared: Arc<str> = s.into();
    table.strings.insert(shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn behaves_as_the_map_of_the_same_labels() {
        let sets: [&[(&str, &str)]; 5] = [
            &[],
            &[("app", "web")],
            &[("app", "web"), ("tier", "front")],
            &[("tier", "front"), ("app", "db"), ("zone", "a")],
            &[("app", "web"), ("app", "db")],
        ];
        for a in sets {
            let (la, ma) = (Labels::from_iter(a.iter().copied()), map(a));
            assert_eq!(la.to_map(), ma, "{a:?}");
            assert_eq!(format!("{la:?}"), format!("{ma:?}"));
            assert_eq!(
                serde_json::to_string(&la).unwrap(),
                serde_json::to_string(&ma).unwrap()
            );
            for (k, v) in &ma {
                assert_eq!(la.get(k), Some(v.as_str()));
            }
            assert_eq!(la.get("missing"), None);
            for b in sets {
                let (lb, mb) = (Labels::from_iter(b.iter().copied()), map(b));
                assert_eq!(la.cmp(&lb), ma.cmp(&mb), "{a:?} vs {b:?}");
                assert_eq!(la == lb, ma == mb);
            }
        }
    }

    #[test]
    fn insert_adds_or_replaces() {
        let mut l = Labels::from([("b", "1")]);
        l.insert("a", "2");
        l.insert("b", "3");
        assert_eq!(l.to_map(), map(&[("a", "2"), ("b", "3")]));
    }

    #[test]
    fn equal_strings_are_shared() {
        let a = Labels::from([("shared-key", "shared-value")]);
        let b = Labels::from([("shared-key".to_owned(), "shared-value".to_owned())]);
        assert!(Arc::ptr_eq(&a.0[0].0, &b.0[0].0));
        assert!(Arc::ptr_eq(&a.0[0].1, &b.0[0].1));
    }

    #[test]
    fn unused_strings_are_swept() {
        for i in 0..10_000 {
            drop(intern(&format!("swept-{i}")));
        }
        let guard = INTERNER.lock().unwrap();
        let table = guard.as_ref().unwrap();
        assert!(
            table.strings.len() < 2 * table.swept + 1024 + 1,
            "{} strings",
            table.strings.len()
        );
        assert!(
            table
                .strings
                .iter()
                .filter(|s| s.starts_with("swept-"))
                .count()
                < 5000,
            "strings no label holds are kept"
        );
    }
}
