//! The per-namespace-pair counters as the datapath keeps them: a slot per key
//! (`CNS_COUNTER_OWNERS`) and the packets and bytes of each slot in a per-CPU array
//! (`CNS_COUNTERS`). One reader for the agent (`counters`) and the metrics (scrape time).

use std::{collections::BTreeMap, path::Path};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use cns_common::maps::{self as m, Counter, CounterKey};

pub struct CounterMaps {
    owners: HashMap<MapData, u32, CounterKey>,
    values: PerCpuArray<MapData, Counter>,
}

/// A counters map that could not be opened from its pin.
#[derive(Debug, thiserror::Error)]
#[error("failed to open pinned map {path}")]
pub struct OpenError {
    pub path: String,
    #[source]
    pub source: MapError,
}

impl CounterMaps {
    /// From the maps of a loaded program object.
    pub fn new(owners: Map, values: Map) -> Result<Self, MapError> {
        Ok(Self {
            owners: HashMap::try_from(owners)?,
            values: PerCpuArray::try_from(values)?,
        })
    }

    /// From the pins in `maps_dir` (what the metrics endpoint reads).
    pub fn open(maps_dir: &Path) -> Result<Self, OpenError> {
        let pin = |name: &str| maps_dir.join(name);
        let failed = |name| {
            let path = pin(name).display().to_string();
            move |source| OpenError { path, source }
        };
        let owners = MapData::from_pin(pin(m::COUNTER_OWNERS))
            .and_then(|d| HashMap::try_from(Map::HashMap(d)))
            .map_err(failed(m::COUNTER_OWNERS))?;
        let values = MapData::from_pin(pin(m::COUNTERS))
            .and_then(|d| PerCpuArray::try_from(Map::PerCpuArray(d)))
            .map_err(failed(m::COUNTERS))?;
        Ok(Self { owners, values })
    }

    /// Every key's packets and bytes, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(CounterKey, Counter)>, MapError> {
        let mut out = BTreeMap::new();
        for kv in self.owners.iter() {
            let (slot, key) = kv?;
            let per_cpu = self.values.get(&slot, 0)?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            });
            out.insert(key, sum);
        }
        Ok(out.into_iter().collect())
    }
}
