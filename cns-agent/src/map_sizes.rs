//! How many entries the maps that grow with the cluster may hold (`--map-sizes`).
//!
//! The defaults are the capacities in `cns_common::maps`, fixed per layout version by its
//! fingerprint test. Other sizes are applied when the programs are loaded
//! (`EbpfLoader::map_max_entries`), and they name their own maps directory
//! ([`MapSizes::dir_suffix`], see `paths`): the kernel keeps a map's size for life, and aya
//! reuses whatever map is pinned at the path without comparing sizes, so an agent with new
//! sizes builds fresh maps beside the old ones and takes over exactly as after a layout
//! change (fill, swap the programs with `bpf_link_update`, remove the old directory).

use std::{fmt, ops::RangeInclusive, str::FromStr};

use cns_common::maps as m;

/// A size operators can set: one key of `--map-sizes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SizedMap {
    /// Local pods (`CNS_ENDPOINTS`), and their addresses for XDP (`CNS_LOCAL_IPS`).
    Endpoints,
    /// Every pod address of the cluster and the node's own (`CNS_IPCACHE`).
    IpCache,
    /// ipBlock entries per endpoint and direction (`CNS_CIDRS`).
    Cidrs,
    /// Allow rules per endpoint, direction, peer and port prefix (`CNS_POLICY`).
    Policy,
    /// Tracked connections, two entries each (`CNS_CONNTRACK`).
    Conntrack,
    /// First fragments of fragmented datagrams in flight (`CNS_FRAGMENTS`).
    Fragments,
    /// Counter keys, i.e. (namespace pair, direction, verdict, protocol, reason) tuples
    /// (`CNS_COUNTER_KEYS`, `CNS_COUNTERS`, `CNS_COUNTER_OWNERS`).
    Counters,
    /// Denied (source, destination, protocol, port) tuples the XDP program remembers
    /// (`CNS_DENY_CACHE`).
    DenyCache,
}

impl SizedMap {
    pub const ALL: [SizedMap; 8] = [
        Self::Endpoints,
        Self::IpCache,
        Self::Cidrs,
        Self::Policy,
        Self::Conntrack,
        Self::Fragments,
        Self::Counters,
        Self::DenyCache,
    ];

    /// The key in `--map-sizes`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Endpoints => "endpoints",
            Self::IpCache => "ipcache",
            Self::Cidrs => "cidrs",
            Self::Policy => "policy",
            Self::Conntrack => "conntrack",
            Self::Fragments => "fragments",
            Self::Counters => "counters",
            Self::DenyCache => "deny-cache",
        }
    }

    /// The maps this size applies to.
    pub fn maps(self) -> &'static [&'static str] {
        match self {
            Self::Endpoints => &[m::ENDPOINTS, m::LOCAL_IPS, m::LOCAL_IPS6],
            Self::IpCache => &[m::IPCACHE, m::IPCACHE6],
            Self::Cidrs => &[m::CIDRS, m::CIDRS6],
            Self::Policy => &[m::POLICY, m::POLICY_EXACT],
            Self::Conntrack => &[m::CONNTRACK, m::CONNTRACK6],
            Self::Fragments => &[m::FRAGMENTS, m::FRAGMENTS6],
            Self::Counters => &[m::COUNTER_KEYS, m::COUNTERS, m::COUNTER_OWNERS],
            Self::DenyCache => &[m::DENY_CACHE, m::DENY_CACHE6],
        }
    }

    /// The capacity of this layout version.
    pub fn default_size(self) -> u32 {
        match self {
            Self::Endpoints => m::ENDPOINTS_CAPACITY,
            Self::IpCache => m::IPCACHE_CAPACITY,
            Self::Cidrs => m::CIDRS_CAPACITY,
            Self::Policy => m::POLICY_CAPACITY,
            Self::Conntrack => m::CONNTRACK_CAPACITY,
            Self::Fragments => m::FRAGMENTS_CAPACITY,
            Self::Counters => m::COUNTERS_CAPACITY,
            Self::DenyCache => m::DENY_CACHE_CAPACITY,
        }
    }

    /// What may be asked for, and why the limits are where they are. The upper bounds keep a
    /// typo from asking the kernel for gigabytes: the hash maps (endpoints, IP cache,
    /// conntrack, fragments, counter slots) are preallocated at their full size when created,
    /// the counters are a per-CPU array (16 bytes per entry and CPU), and the LPM tries
    /// (CIDRs, policy) allocate as they fill. All of it is charged to the agent's memory
    /// cgroup on Linux >= 5.11.
    pub fn bounds(self) -> (RangeInclusive<u32>, &'static str) {
        match self {
            Self::Endpoints => (64..=65_536, "local pods, a preallocated hash map"),
            Self::IpCache => (64..=4_194_304, "pod addresses, a preallocated hash map"),
            Self::Cidrs => (64..=4_194_304, "an LPM trie"),
            Self::Policy => (
                64..=4_194_304,
                "an LPM trie and a hash map, both allocated as they fill",
            ),
            Self::Conntrack => (
                1024..=8_388_608,
                "a preallocated LRU hash map of about 120 bytes per entry, spread over per-CPU \
                 free lists (too few entries make inserts fail)",
            ),
            Self::Fragments => (256..=1_048_576, "a preallocated LRU hash map"),
            Self::Counters => (
                64..=262_144,
                "a per-CPU array of 16 bytes per entry and CPU",
            ),
            Self::DenyCache => (
                1024..=4_194_304,
                "a preallocated LRU hash map, spread over per-CPU free lists",
            ),
        }
    }
}

/// The size of every [`SizedMap`]: the value of `--map-sizes`, defaults for keys not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapSizes([u32; SizedMap::ALL.len()]);

impl Default for MapSizes {
    fn default() -> Self {
        Self(SizedMap::ALL.map(SizedMap::default_size))
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapSizesError {
    #[error("{item:?} is not KEY=ENTRIES (for example policy=524288)")]
    Syntax { item: String },
    #[error("unknown map {key:?}: the keys are {}", keys())]
    UnknownKey { key: String },
    #[error("{key}: {value:?} is not a number of entries")]
    NotANumber { key: &'static str, value: String },
    #[error(
        "{key}={value} is out of range: {key} takes {}..={} entries ({why})",
        range.start(),
        range.end()
    )]
    OutOfRange {
        key: &'static str,
        value: u64,
        range: RangeInclusive<u32>,
        why: &'static str,
    },
    #[error("{key} is given more than once")]
    Duplicate { key: &'static str },
}

fn keys() -> String {
    SizedMap::ALL
        .iter()
        .map(|s| s.key())
        .collect::<Vec<_>>()
        .join(", ")
}

impl MapSizes {
    pub fn get(&self, map: SizedMap) -> u32 {
        self.0[map as usize]
    }

    /// Sets one size, checking its bounds.
    pub fn set(&mut self, map: SizedMap, entries: u64) -> Result<(), MapSizesError> {
        let (range, why) = map.bounds();
        match u32::try_from(entries) {
            Ok(n) if range.contains(&n) => {
                self.0[map as usize] = n;
                Ok(())
            }
            _ => Err(MapSizesError::OutOfRange {
                key: map.key(),
                value: entries,
                range,
                why,
            }),
        }
    }

    /// `max_entries` of every map a size applies to, by map name.
    pub fn max_entries(&self) -> impl Iterator<Item = (&'static str, u32)> + use<> {
        let sizes = *self;
        SizedMap::ALL
            .into_iter()
            .flat_map(move |s| s.maps().iter().map(move |&name| (name, sizes.get(s))))
    }

    /// The capacity of map `name` (`CNS_POLICY`, ...), if it is one of the sized maps.
    pub fn capacity(&self, name: &str) -> Option<u32> {
        self.max_entries().find(|(n, _)| *n == name).map(|(_, c)| c)
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// What tells these sizes' maps directory apart from others of the same layout version:
    /// `None` with the defaults (the directory is `maps-v{N}`, as before sizes were
    /// configurable, so upgrading to a version with this flag keeps the maps), else a short
    /// hash of every size (`maps-v{N}-{hash}`). The loader also checks every pinned map's
    /// size, so a collision would stop the agent rather than reuse maps of the wrong size.
    pub fn dir_suffix(&self) -> Option<String> {
        if self.is_default() {
            return None;
        }
        // FNV-1a over the canonical text (every key, in a fixed order).
        let h = self
            .to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Some(format!("{:08x}", (h ^ (h >> 32)) as u32))
    }
}

/// `endpoints=4096,ipcache=65536,...`: every key, in a fixed order.
impl fmt::Display for MapSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in SizedMap::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", s.key(), self.get(s))?;
        }
        Ok(())
    }
}

/// `KEY=ENTRIES,...` (keys not given keep their defaults; an empty string is all defaults).
impl FromStr for MapSizes {
    type Err = MapSizesError;

    fn from_str(s: &str) -> Result<Self, MapSizesError> {
        let mut sizes = Self::default();
        let mut seen = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(MapSizesError::Syntax { item: item.into() });
            };
            let key = key.trim();
            let map = SizedMap::ALL
                .into_iter()
                .find(|s| s.key() == key)
                .ok_or_else(|| MapSizesError::UnknownKey { key: key.into() })?;
            if seen.contains(&map) {
                return Err(MapSizesError::Duplicate { key: map.key() });
            }
            seen.push(map);
            let value = value.trim();
            let entries = value
                .parse::<u64>()
                .map_err(|_| MapSizesError::NotANumber {
                    key: map.key(),
                    value: value.into(),
                })?;
            sizes.set(map, entries)?;
        }
        Ok(sizes)
    }
}

/// As an object: `{"endpoints": 4096, ...}`.
impl serde::Serialize for MapSizes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(SizedMap::ALL.len()))?;
        for size in SizedMap::ALL {
            map.serialize_entry(size.key(), &self.get(size))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_layout_capacities() {
        let d = MapSizes::default();
        assert!(d.is_default());
        assert_eq!(d.dir_suffix(), None);
        assert_eq!(d.capacity(m::POLICY), Some(m::POLICY_CAPACITY));
        assert_eq!(d.capacity(m::LOCAL_IPS), Some(m::LOCAL_IPS_CAPACITY));
        assert_eq!(d.capacity(m::COUNTERS), Some(m::COUNTERS_CAPACITY));
        assert_eq!(d.capacity(m::CONFIG), None);
        // Every default is within its own bounds.
        for s in SizedMap::ALL {
            assert!(s.bounds().0.contains(&s.default_size()), "{}", s.key());
        }
        // Every sized map is in the layout table with its default capacity.
        for (name, cap) in d.max_entries() {
            let layout = m::LAYOUTS.iter().find(|l| l.0 == name).expect(name);
            assert_eq!(layout.3, cap, "{name}");
        }
        assert_eq!("".parse::<MapSizes>(), Ok(d));
        assert_eq!(d.to_string().parse::<MapSizes>(), Ok(d));
    }

    #[test]
    fn parses_keys_and_keeps_defaults_for_the_rest() {
        let s: MapSizes = " policy=524288, conntrack = 262144,endpoints=1024,"
            .parse()
            .unwrap();
        assert_eq!(s.get(SizedMap::Policy), 524_288);
        assert_eq!(s.get(SizedMap::Conntrack), 262_144);
        assert_eq!(s.capacity(m::ENDPOINTS), Some(1024));
        assert_eq!(s.capacity(m::LOCAL_IPS), Some(1024), "sized with endpoints");
        assert_eq!(s.get(SizedMap::IpCache), m::IPCACHE_CAPACITY);
        assert!(!s.is_default());
        assert_eq!(s.to_string().parse::<MapSizes>(), Ok(s));
        assert_eq!(
            serde_json::to_value(s).unwrap()["policy"],
            serde_json::json!(524_288)
        );
    }

    #[test]
    fn rejects_bad_input_naming_the_key() {
        for (input, want) in [
            ("policy", "\"policy\" is not KEY=ENTRIES"),
            (
                "polcy=300",
                "unknown map \"polcy\": the keys are endpoints, ipcache",
            ),
            ("policy=lots", "policy: \"lots\" is not a number of entries"),
            ("policy=-1", "policy: \"-1\" is not a number of entries"),
            (
                "policy=10",
                "policy=10 is out of range: policy takes 64..=4194304",
            ),
            (
                "policy=4294967296",
                "policy=4294967296 is out of range: policy takes 64..=4194304",
            ),
            ("conntrack=512", "conntrack=512 is out of range"),
            ("counters=1048576", "counters=1048576 is out of range"),
            ("endpoints=0", "endpoints=0 is out of range"),
            ("policy=300,policy=400", "policy is given more than once"),
        ] {
            let err = input.parse::<MapSizes>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        for s in SizedMap::ALL {
            let (range, _) = s.bounds();
            let mut sizes = MapSizes::default();
            assert!(sizes.set(s, u64::from(*range.start())).is_ok());
            assert!(sizes.set(s, u64::from(*range.end())).is_ok());
            assert!(sizes.set(s, u64::from(*range.start()) - 1).is_err());
            assert!(sizes.set(s, u64::from(*range.end()) + 1).is_err());
        }
    }

    #[test]
    fn each_set_of_sizes_has_its_own_directory() {
        let a: MapSizes = "policy=300".parse().unwrap();
        let b: MapSizes = "policy=301".parse().unwrap();
        let c: MapSizes = "conntrack=4096".parse().unwrap();
        let suffixes = [a, b, c].map(|s| s.dir_suffix().expect("not default"));
        assert_eq!(suffixes[0].len(), 8);
        assert_ne!(suffixes[0], suffixes[1]);
        assert_ne!(suffixes[0], suffixes[2]);
        // Stable: the same sizes, however written, find the same directory.
        let again: MapSizes = "policy=300,conntrack=131072".parse().unwrap();
        assert_eq!(again.dir_suffix(), a.dir_suffix());
        // Explicit defaults are the defaults.
        let explicit: MapSizes = format!("policy={}", m::POLICY_CAPACITY).parse().unwrap();
        assert_eq!(explicit.dir_suffix(), None);
        // The name must not change between agent versions of one layout: an upgraded agent
        // with the same sizes would rebuild its maps (emptying conntrack) for nothing. (Layout
        // v5 added the deny-cache key, which changed every hash along with the version.)
        assert_eq!(a.dir_suffix().as_deref(), Some("5096fd01"));
    }

    #[test]
    fn the_flag_and_its_env_var() {
        use clap::Parser as _;

        use crate::cli::{Cli, Command};
        let run = |args: &[&str]| {
            Cli::try_parse_from(
                ["cns-agent", "run", "--node-name", "n"]
                    .iter()
                    .chain(args)
                    .copied(),
            )
            .map(|cli| match cli.command {
                Command::Run(args) => args.map_sizes,
                _ => unreachable!(),
            })
        };
        assert_eq!(run(&[]).unwrap(), MapSizes::default());
        assert_eq!(
            run(&["--map-sizes", "policy=300"])
                .unwrap()
                .get(SizedMap::Policy),
            300
        );
        let err = run(&["--map-sizes", "policy=10"]).unwrap_err().to_string();
        assert!(
            err.contains("--map-sizes") && err.contains("policy=10 is out of range"),
            "{err}"
        );
    }
}
