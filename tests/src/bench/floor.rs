//! The reference floors (issue 17; `cns-ebpf/src/floor.rs`, embedded by the agent crate as
//! [`FLOOR_OBJECT`] but never loaded by the agent): loading them, filling their maps with
//! the kernel section's flows, and `BPF_PROG_TEST_RUN` on them.
//!
//! Loading fails loudly: a floor the verifier rejects, or an agent built with
//! `AYA_BUILD_SKIP` (no object), is an error, never a skipped row.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{SchedClassifier, Xdp},
};
use cns_agent::datapath::{
    FLOOR_ESTABLISHED, FLOOR_NEW, FLOOR_NEW_EGRESS, FLOOR_OBJECT, FLOOR_XDP_DROP,
};
use cns_common::{
    DIR_INGRESS,
    maps::{CtEntry, CtKey, PolicyKey, PolicyValue, Remote},
};

/// The floor programs' maps (`cns-ebpf/src/floor.rs`).
const CONNTRACK: &str = "FLOOR_CONNTRACK";
const IPCACHE: &str = "FLOOR_IPCACHE";
const POLICY: &str = "FLOOR_POLICY";
const DENY: &str = "FLOOR_DENY";

/// TC verdicts of the floors (`TC_ACT_OK`, `TC_ACT_SHOT`).
pub const TC_OK: i32 = 0;
pub const TC_SHOT: i32 = 2;

/// The counter slot the floor's conntrack entries carry.
const COUNTER_SLOT: u32 = 1;

/// The loaded floor programs and their (unpinned) maps, freed on drop.
pub struct Floors {
    ebpf: Ebpf,
}

impl Floors {
    /// Loads every floor program into the kernel.
    pub fn load() -> anyhow::Result<Self> {
        anyhow::ensure!(
            !FLOOR_OBJECT.is_empty(),
            "the agent crate was built with AYA_BUILD_SKIP: it carries no floor object"
        );
        let mut ebpf = EbpfLoader::new()
            .load(FLOOR_OBJECT)
            .context("failed to load the floor object (cns-floor)")?;
        for name in [FLOOR_ESTABLISHED, FLOOR_NEW, FLOOR_NEW_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("floor program {name} is missing from cns-floor"))?
                .try_into()
                .with_context(|| format!("floor program {name} is not a TC program"))?;
            prog.load()
                .with_context(|| format!("failed to load floor program {name}"))?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(FLOOR_XDP_DROP)
            .with_context(|| format!("floor program {FLOOR_XDP_DROP} is missing from cns-floor"))?
            .try_into()
            .with_context(|| format!("floor program {FLOOR_XDP_DROP} is not an XDP program"))?;
        xdp.load()
            .with_context(|| format!("failed to load floor program {FLOOR_XDP_DROP}"))?;
        Ok(Self { ebpf })
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> anyhow::Result<HashMap<&mut MapData, K, V>> {
        let map = self
            .ebpf
            .map_mut(name)
            .with_context(|| format!("floor map {name} is missing from cns-floor"))?;
        HashMap::try_from(map).with_context(|| format!("floor map {name} has another layout"))
    }

    /// The IP cache, as the agent wrote `CNS_IPCACHE` (network-order address -> remote).
    pub fn set_ipcache<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a u32, &'a Remote)>,
    ) -> anyhow::Result<()> {
        self.fill(IPCACHE, entries)
    }

    /// The policy, as the agent wrote `CNS_POLICY_EXACT`.
    pub fn set_policy<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a PolicyKey, &'a PolicyValue)>,
    ) -> anyhow::Result<()> {
        self.fill(POLICY, entries)
    }

    /// Writes `entries` into the hash map `name`.
    fn fill<'a, K: aya::Pod + 'a, V: aya::Pod + 'a>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> anyhow::Result<()> {
        let mut map = self.hash::<K, V>(name)?;
        for (key, value) in entries {
            map.insert(key, value, 0)
                .with_context(|| format!("failed to write {name}"))?;
        }
        Ok(())
    }

    /// A conntrack entry for the flow of `frame` (an Ethernet + IPv4 + TCP/UDP frame without
    /// IP options, as the bench builds them), so that `floor_established` hits on it.
    pub fn add_established(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let key = ct_key(frame)?;
        let entry = CtEntry {
            counter: COUNTER_SLOT,
            ..CtEntry::default()
        };
        self.hash::<CtKey, CtEntry>(CONNTRACK)?
            .insert(key, entry, 0)
            .with_context(|| format!("failed to write {CONNTRACK}"))
    }

    /// The source address of `frame` on `floor_xdp_drop`'s deny list.
    pub fn add_denied_source(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let saddr = u32::from_ne_bytes(field(frame, 26)?);
        self.hash::<u32, u32>(DENY)?
            .insert(saddr, 1, 0)
            .with_context(|| format!("failed to write {DENY}"))
    }

    /// Runs floor `program` `repeat` times on `frame`: its last verdict and the kernel's
    /// average time per run.
    pub fn test_run(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<(i32, Duration)> {
        cns_agent::datapath::test_run_in(&self.ebpf, program, frame, repeat)
            .with_context(|| format!("test run of floor program {program}"))
    }
}

fn field<const N: usize>(frame: &[u8], off: usize) -> anyhow::Result<[u8; N]> {
    frame
        .get(off..off + N)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("frame of {} bytes too short for the floor", frame.len()))
}

/// The floor's conntrack key of `frame`: its tuple, direction always `DIR_INGRESS`.
fn ct_key(frame: &[u8]) -> anyhow::Result<CtKey> {
    anyhow::ensure!(
        field::<1>(frame, 14)? == [0x45],
        "the floor's frames have no IP options"
    );
    Ok(CtKey {
        saddr: u32::from_ne_bytes(field(frame, 26)?),
        daddr: u32::from_ne_bytes(field(frame, 30)?),
        sport: u16::from_ne_bytes(field(frame, 34)?),
        dport: u16::from_ne_bytes(field(frame, 36)?),
        proto: field::<1>(frame, 23)?[0],
        dir: DIR_INGRESS,
        _pad: 0,
    })
}
