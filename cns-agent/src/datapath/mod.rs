//! The kernel side as the agent sees it: loading the programs and pinning their maps
//! (here), attaching them to pod veths (TC) and uplinks (XDP) and taking over the links of
//! an earlier agent ([`attach`]), and writing the maps one operation at a time ([`writer`]).
//! Everything that touches aya lives in this module.

mod attach;
mod clock;
mod writer;

pub use attach::{AttachError, XdpAttachment};
pub use clock::{Clock, ClockError, PROG_CLOCK};

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{Program, ProgramError, SchedClassifier, Xdp},
};
use cns_common::maps::{
    self as m, CidrKey, CidrKey6, Config, Counter, CounterKey, DryRunCause, DryRunCounterKey,
    Endpoint, Ip6, PolicyKey, PolicyValue, Remote,
};

use crate::{
    counters::CounterMaps,
    map_sizes::{MapSizes, SizedMap},
    paths,
};

/// The kernel programs, built by build.rs (aya-build) from `cns-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cns"));

/// The benchmark's reference floors (`cns-ebpf/src/floor.rs`, issue 17), built with the
/// kernel programs: programs that do only the irreducible work of each packet path, with maps
/// of their own (never pinned). The agent never loads them; `cargo xtask bench` does.
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cns-floor"));
pub const FLOOR_ESTABLISHED: &str = "floor_established";
/// Into the pod (the remote is the source); [`FLOOR_NEW_EGRESS`]: out of it.
pub const FLOOR_NEW: &str = "floor_new";
pub const FLOOR_NEW_EGRESS: &str = "floor_new_egress";
pub const FLOOR_XDP_DROP: &str = "floor_xdp_drop";

pub const PROG_TO_POD: &str = "cns_to_pod";
pub const PROG_FROM_POD: &str = "cns_from_pod";
/// An empty TC program (returns "pass"), loaded for benchmarks only.
pub const PROG_EMPTY: &str = "cns_empty";
/// The XDP program for the node's uplinks.
pub const PROG_XDP: &str = "cns_xdp";

/// XDP verdicts as [`Datapath::test_run`] returns them for [`PROG_XDP`].
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the agent was built with AYA_BUILD_SKIP: it carries no kernel programs")]
    NoObject,
    #[error("failed to load the eBPF object (maps pinned under {pin_dir})")]
    Load {
        pin_dir: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("failed to load program {name} into the kernel")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to read the kernel's clock")]
    Clock(#[from] ClockError),
    #[error("map {name} has an unexpected layout")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to create the maps directory {path}")]
    MapsDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the size of pinned map {path}")]
    MapInfo {
        path: String,
        #[source]
        source: MapError,
    },
    /// aya reuses a pinned map whatever its size: this catches what it would not.
    #[error(
        "pinned map {path} holds {pinned} entries, not the {configured} of --map-sizes; \
         remove {dir} (the attached programs keep their maps) and restart the agent"
    )]
    PinnedSize {
        path: String,
        dir: String,
        pinned: u32,
        configured: u32,
    },
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    clock: Clock,
    config: Array<MapData, Config>,
    endpoints: HashMap<MapData, u32, Endpoint>,
    ipcache: HashMap<MapData, u32, Remote>,
    cidrs: LpmTrie<MapData, CidrKey, u32>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    /// `policy`'s one-port, all-ports and any-protocol entries (the plan writes both).
    policy_exact: HashMap<MapData, PolicyKey, PolicyValue>,
    /// Local pod address -> ifindex (for the XDP program), planned from the endpoints.
    local_ips: HashMap<MapData, u32, u32>,
    ipcache6: HashMap<MapData, Ip6, Remote>,
    cidrs6: LpmTrie<MapData, CidrKey6, u32>,
    local_ips6: HashMap<MapData, Ip6, u32>,
    counters: CounterMaps,
    dry_run: DryRunMaps,
    stats: PerCpuArray<MapData, u64>,
    pin_dir: PathBuf,
    /// Where the maps are pinned: `paths::sized_maps_dir(pin_dir, &sizes)`.
    maps_dir: PathBuf,
    sizes: MapSizes,
    /// Attached interfaces (ifindex -> name). The links themselves are owned by their pins.
    links: BTreeMap<u32, String>,
    /// Interfaces with the XDP program (ifindex -> attachment), pinned like `links`.
    xdp_links: BTreeMap<u32, XdpAttachment>,
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {{
        let map = $ebpf.take_map($name).ok_or(LoadError::MissingMap($name))?;
        map.try_into().map_err(|source| LoadError::Map {
            name: $name,
            source,
        })?
    }};
}

impl Datapath {
    /// [`Datapath::load_sized`] with the default map sizes.
    pub fn load(pin_dir: &Path) -> Result<Self, LoadError> {
        Self::load_sized(pin_dir, &MapSizes::default())
    }

    /// Loads the programs with maps of `sizes`; maps are created, or reused when already
    /// pinned in the directory of these sizes under `pin_dir` (see `paths`). Nothing is
    /// attached yet: call [`Datapath::adopt`] once the maps hold the desired state, then
    /// [`Datapath::attach`].
    pub fn load_sized(pin_dir: &Path, sizes: &MapSizes) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let maps_dir = paths::sized_maps_dir(pin_dir, sizes);
        std::fs::create_dir_all(&maps_dir).map_err(|source| LoadError::MapsDir {
            path: maps_dir.display().to_string(),
            source,
        })?;
        let counters_capacity = sizes.get(SizedMap::Counters);
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(&maps_dir)
            // The programs' counter slot hash needs the counters' size.
            .override_global(m::COUNTERS_CAPACITY_GLOBAL, &counters_capacity, true);
        for (name, entries) in sizes.max_entries() {
            loader.map_max_entries(name, entries);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|source| LoadError::Load {
            pin_dir: maps_dir.display().to_string(),
            source: Box::new(source),
        })?;
        check_pinned_sizes(&maps_dir, sizes)?;
        for name in [PROG_TO_POD, PROG_FROM_POD, PROG_EMPTY, PROG_CLOCK] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|source| LoadError::Program { name, source })?;
            prog.load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .ok_or(LoadError::MissingProgram(PROG_XDP))?
            .try_into()
            .map_err(|source| LoadError::Program {
                name: PROG_XDP,
                source,
            })?;
        xdp.load().map_err(|source| LoadError::Program {
            name: PROG_XDP,
            source,
        })?;
        let clock = Clock::calibrate(&ebpf)?;
        Ok(Self {
            clock,
            config: take!(ebpf, m::CONFIG),
            endpoints: take!(ebpf, m::ENDPOINTS),
            ipcache: take!(ebpf, m::IPCACHE),
            cidrs: take!(ebpf, m::CIDRS),
            policy: take!(ebpf, m::POLICY),
            policy_exact: take!(ebpf, m::POLICY_EXACT),
            local_ips: take!(ebpf, m::LOCAL_IPS),
            ipcache6: take!(ebpf, m::IPCACHE6),
            cidrs6: take!(ebpf, m::CIDRS6),
            local_ips6: take!(ebpf, m::LOCAL_IPS6),
            counters: CounterMaps::new(
                ebpf.take_map(m::COUNTER_OWNERS)
                    .ok_or(LoadError::MissingMap(m::COUNTER_OWNERS))?,
                ebpf.take_map(m::COUNTERS)
                    .ok_or(LoadError::MissingMap(m::COUNTERS))?,
            )
            .map_err(|source| LoadError::Map {
                name: m::COUNTERS,
                source,
            })?,
            dry_run: DryRunMaps {
                causes: take!(ebpf, m::DRY_RUN_CAUSES),
                counters: take!(ebpf, m::DRY_RUN_COUNTERS),
            },
            stats: take!(ebpf, m::STATS),
            ebpf,
            pin_dir: pin_dir.to_owned(),
            maps_dir,
            sizes: *sizes,
            links: BTreeMap::new(),
            xdp_links: BTreeMap::new(),
        })
    }

    /// Runs `program` once on `packet` with `BPF_PROG_TEST_RUN` (the skb's device is the
    /// loopback, ifindex 1) and returns its verdict: TC -1 pass, 2 drop; XDP ([`PROG_XDP`])
    /// [`XDP_PASS`], [`XDP_DROP`].
    pub fn test_run(&self, program: &'static str, packet: &[u8]) -> Result<i32, ProgramError> {
        self.test_run_repeat(program, packet, 1)
            .map(|(verdict, _)| verdict)
    }

    /// Runs `program` `repeat` times on `packet` in the kernel; returns the last verdict and
    /// the kernel's average time per run (what `cargo xtask bench` measures).
    pub fn test_run_repeat(
        &self,
        program: &'static str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(i32, std::time::Duration), ProgramError> {
        test_run_in(&self.ebpf, program, packet, repeat)
    }

    /// The verifier's processed-instruction count of each of the agent's programs (what
    /// the 1M-instruction limit applies to), `None` where the kernel does not say.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        [PROG_TO_POD, PROG_FROM_POD, PROG_XDP]
            .into_iter()
            .map(|name| {
                let n = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count());
                (name, n)
            })
            .collect()
    }

    /// Where the maps are pinned (`maps-v{N}` or `maps-v{N}-{hash}` under the pin directory).
    pub fn maps_dir(&self) -> &Path {
        &self.maps_dir
    }

    /// The sizes the maps were created with.
    pub fn sizes(&self) -> &MapSizes {
        &self.sizes
    }

    pub fn config(&self) -> Result<Config, MapError> {
        self.config.get(&0, 0)
    }

    /// Writes the programs' configuration; `hz` is the kernel's, whatever `config` says.
    pub fn set_config(&mut self, config: &Config) -> Result<(), MapError> {
        let config = Config {
            hz: self.clock.hz(),
            ..*config
        };
        self.config.set(0, config, 0)
    }

    /// Forgets, on every CPU, that a flood was under way (`CNS_XDP_FLOOD`): what the XDP
    /// program's deny-cache-first order starts from. The bench measures the XDP paths outside
    /// a flood after it.
    pub fn clear_xdp_flood(&mut self) -> Result<(), MapError> {
        use aya::maps::PerCpuValues;
        let map = self
            .ebpf
            .map_mut(m::XDP_FLOOD)
            .ok_or_else(|| MapError::InvalidName {
                name: m::XDP_FLOOD.into(),
            })?;
        let mut flood: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(map)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, error)| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: error,
            })
        })?;
        flood.set(0, PerCpuValues::try_from(vec![0u64; cpus])?, 0)
    }

    /// The kernel's HZ, as the programs count time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The kernel's jiffies and CLOCK_MONOTONIC now, read by a program.
    pub fn kernel_clock(&self) -> Result<(u64, u64), ClockError> {
        Clock::sample(&self.ebpf)
    }

    /// The per-namespace-pair counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(CounterKey, Counter)>, MapError> {
        self.counters.read()
    }

    /// The dry-run counters (`CNS_DRY_RUN_COUNTERS`), summed over CPUs.
    pub fn dry_run_counters(&self) -> Result<Vec<(DryRunCounterKey, u64)>, MapError> {
        self.dry_run
            .counters
            .iter()
            .map(|kv| kv.map(|(k, v)| (k, v.iter().sum())))
            .collect()
    }

    /// The live connections a dry-run policy would drop (their conntrack entries say so,
    /// `CtEntry::dry_run_drop`), both families, original direction only.
    pub fn dry_run_open(&self) -> Result<Vec<DryRunOpen>, DryRunOpenError> {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use cns_common::maps::{CONNTRACK, CONNTRACK6, CtKey, CtKey6};
        let mut out = Vec::new();
        let (v4, v6) = (
            self.maps_dir.join(CONNTRACK),
            self.maps_dir.join(CONNTRACK6),
        );
        // The kernel's jiffy now, as the programs stamp expiry with.
        let (now, _) = Clock::sample(&self.ebpf)?;
        open_in(&v4, now, &mut out, |k: &CtKey| DryRunOpen {
            cause: 0,
            src: Ipv4Addr::from(u32::from_be(k.saddr)).into(),
            dst: Ipv4Addr::from(u32::from_be(k.daddr)).into(),
            proto: k.proto,
            dport: u16::from_be(k.dport),
            dir: k.dir,
        })?;
        open_in(&v6, now, &mut out, |k: &CtKey6| DryRunOpen {
            cause: 0,
            src: Ipv6Addr::from(k.saddr).into(),
            dst: Ipv6Addr::from(k.daddr).into(),
            proto: k.proto,
            dport: u16::from_be(k.dport),
            dir: k.dir,
        })?;
        Ok(out)
    }

    /// Forgets the counts of policies that are no longer dry-run (`keep`: the hashes of
    /// those that are).
    pub fn prune_dry_run_counters(
        &mut self,
        keep: &std::collections::BTreeSet<u64>,
    ) -> Result<(), MapError> {
        let stale: Vec<DryRunCounterKey> = self
            .dry_run
            .counters
            .keys()
            .filter(|k| k.as_ref().is_ok_and(|k| !keep.contains(&k.policy)))
            .collect::<Result<_, _>>()?;
        for k in stale {
            match self.dry_run.counters.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Datapath statistics (`STAT_*`), summed over CPUs.
    pub fn stats(&self) -> Result<Vec<u64>, MapError> {
        (0..m::STATS_LEN)
            .map(|i| Ok(self.stats.get(&i, 0)?.iter().sum()))
            .collect()
    }
}

/// The live (at jiffy `now`) original-direction entries of the conntrack map pinned at `path`
/// that a dry-run policy would drop, as `flow` names their keys, into `out`.
fn open_in<K: aya::Pod>(
    path: &Path,
    now: u64,
    out: &mut Vec<DryRunOpen>,
    flow: impl Fn(&K) -> DryRunOpen,
) -> Result<(), MapError> {
    use cns_common::maps::{CT_REPLY, CtEntry};
    // TCP FIN and RST bits: a closing connection is not one enforcing would cut.
    const CLOSING: u8 = 0x01 | 0x04;
    let map: HashMap<MapData, K, CtEntry> =
        HashMap::try_from(Map::LruHashMap(MapData::from_pin(path)?))?;
    for kv in map.iter() {
        let (k, e) = kv?;
        if e.dry_run_drop != 0
            && e.flags & CT_REPLY == 0
            && e.tcp_flags & CLOSING == 0
            && e.expires >= now
        {
            out.push(DryRunOpen {
                cause: e.dry_run_drop,
                ..flow(&k)
            });
        }
    }
    Ok(())
}

/// Why the open connections could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DryRunOpenError {
    #[error("failed to read the conntrack maps")]
    Map(#[from] MapError),
    #[error("failed to read the kernel's clock")]
    Clock(#[from] ClockError),
}

/// A live connection a dry-run policy would drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRunOpen {
    /// `CtEntry::dry_run_drop`: the cause as an event's `dry_run_id` says it.
    pub cause: u32,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub proto: u8,
    pub dport: u16,
    /// `DIR_*` of the program that decided it.
    pub dir: u8,
}

/// The dry-run policies' maps: the causes the agent writes, the counts the programs keep.
struct DryRunMaps {
    causes: HashMap<MapData, DryRunCause, u64>,
    counters: PerCpuHashMap<MapData, DryRunCounterKey, u64>,
}

/// Checks that every sized map pinned in `maps_dir` has the size asked for. aya 0.14 opens a
/// map already pinned at its path without comparing it with the definition
/// (`MapData::create_pinned_by_name`), and `map_max_entries` only applies to maps it
/// creates, so without this an agent would run on maps of another size while reporting the
/// configured one. Each set of sizes has its own directory, so this only fails when that
/// directory was tampered with (or on a hash collision).
fn check_pinned_sizes(maps_dir: &Path, sizes: &MapSizes) -> Result<(), LoadError> {
    for (name, configured) in sizes.max_entries() {
        let path = maps_dir.join(name);
        let pinned = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(|source| LoadError::MapInfo {
                path: path.display().to_string(),
                source,
            })?
            .max_entries();
        if pinned != configured {
            return Err(LoadError::PinnedSize {
                path: path.display().to_string(),
                dir: maps_dir.display().to_string(),
                pinned,
                configured,
            });
        }
    }
    Ok(())
}

/// Runs `program` once on `packet`; what it left of the packet goes to `out`.
pub(crate) fn test_run_out(
    ebpf: &aya::Ebpf,
    program: &str,
    packet: &[u8],
    out: &mut [u8],
) -> Result<i32, ProgramError> {
    test_run(ebpf, program, packet, out, 1).map(|(verdict, _)| verdict)
}

/// Runs the TC or XDP `program` of `ebpf` `repeat` times on `packet` in the kernel
/// (`BPF_PROG_TEST_RUN`); returns the last verdict and the kernel's average time per run.
/// The agent's programs ([`Datapath::test_run_repeat`]) and the bench's floors share it.
pub fn test_run_in(
    ebpf: &aya::Ebpf,
    program: &str,
    packet: &[u8],
    repeat: u32,
) -> Result<(i32, std::time::Duration), ProgramError> {
    let mut out = vec![0u8; packet.len() + 256];
    test_run(ebpf, program, packet, &mut out, repeat)
}

/// `BPF_PROG_TEST_RUN` of the TC or XDP `program`: the last verdict and the average time.
fn test_run(
    ebpf: &aya::Ebpf,
    program: &str,
    packet: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<(i32, std::time::Duration), ProgramError> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(out),
        repeat,
        ..TestRunOptions::default()
    };
    let result = match ebpf.program(program) {
        Some(Program::SchedClassifier(p)) => p.test_run(opts)?,
        Some(Program::Xdp(p)) => p.test_run(opts)?,
        _ => return Err(ProgramError::NotLoaded),
    };
    Ok((result.return_value as i32, result.duration))
}
