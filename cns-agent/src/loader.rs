//! Loading the kernel programs, pinning their maps, attaching them to pod veths, and the
//! aya side of the map writer. Everything that touches aya lives here.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use cns_common::maps::{
    self as m, CidrKey, Config, Counter, CounterKey, Endpoint, PolicyKey, PolicyValue, Remote,
};

use crate::{
    encode::MapContents,
    paths,
    reconcile::{MapOp, MapWriter},
};

/// The kernel programs, built by build.rs (aya-build) from `cns-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cns"));

pub const PROG_TO_POD: &str = "cns_to_pod";
pub const PROG_FROM_POD: &str = "cns_from_pod";
/// An empty TC program (returns "pass"), loaded for benchmarks only.
pub const PROG_EMPTY: &str = "cns_empty";

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
    #[error("map {name} has an unexpected layout")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {step} {program} on {interface} (ifindex {ifindex})")]
pub struct AttachError {
    pub step: &'static str,
    pub program: &'static str,
    pub interface: String,
    pub ifindex: u32,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    config: Array<MapData, Config>,
    endpoints: HashMap<MapData, u32, Endpoint>,
    ipcache: HashMap<MapData, u32, Remote>,
    cidrs: LpmTrie<MapData, CidrKey, u32>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    counters: PerCpuHashMap<MapData, CounterKey, Counter>,
    stats: PerCpuArray<MapData, u64>,
    pin_dir: PathBuf,
    /// Attached interfaces (ifindex -> name). The links themselves are owned by their pins.
    links: BTreeMap<u32, String>,
}

/// The two programs on a pod veth and where each attaches.
const ATTACHMENTS: [(&str, TcAttachType); 2] = [
    (PROG_TO_POD, TcAttachType::Egress),
    (PROG_FROM_POD, TcAttachType::Ingress),
];

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
    /// Loads the programs; maps are created, or reused when already pinned under `pin_dir`
    /// (see `paths`). Nothing is attached yet: call [`Datapath::adopt`] once the maps hold
    /// the desired state, then [`Datapath::attach`].
    pub fn load(pin_dir: &Path) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(paths::maps_dir(pin_dir))
            .load(OBJECT)
            .map_err(|source| LoadError::Load {
                pin_dir: pin_dir.display().to_string(),
                source: Box::new(source),
            })?;
        for name in [PROG_TO_POD, PROG_FROM_POD, PROG_EMPTY] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|source| LoadError::Program { name, source })?;
            prog.load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        Ok(Self {
            config: take!(ebpf, m::CONFIG),
            endpoints: take!(ebpf, m::ENDPOINTS),
            ipcache: take!(ebpf, m::IPCACHE),
            cidrs: take!(ebpf, m::CIDRS),
            policy: take!(ebpf, m::POLICY),
            counters: take!(ebpf, m::COUNTERS),
            stats: take!(ebpf, m::STATS),
            ebpf,
            pin_dir: pin_dir.to_owned(),
            links: BTreeMap::new(),
        })
    }

    fn program(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }

    /// Attaches both programs to `interface` (tcx, appended to its chain) and pins the links,
    /// so the programs stay attached when the agent exits or dies. A no-op when attached.
    pub fn attach(&mut self, interface: &str, ifindex: u32) -> Result<(), AttachError> {
        if self.links.contains_key(&ifindex) {
            return Ok(());
        }
        for (program, attach_type) in ATTACHMENTS {
            let err = |step, source: Box<dyn std::error::Error + Send + Sync>| AttachError {
                step,
                program,
                interface: interface.to_owned(),
                ifindex,
                source,
            };
            let prog = self.program(program);
            let pinned = prog
                .attach(interface, attach_type)
                .and_then(|id| prog.take_link(id))
                .map_err(|e| err("attach", e.into()))
                .and_then(|link| FdLink::try_from(link).map_err(|e| err("attach", e.into())))
                .and_then(|fd| {
                    fd.pin(paths::link_pin(&self.pin_dir, ifindex, program))
                        .map_err(|e| err("pin the link of", e.into()))
                });
            if let Err(e) = pinned {
                self.unpin(ifindex);
                return Err(e);
            }
        }
        self.links.insert(ifindex, interface.to_owned());
        Ok(())
    }

    /// Removes an interface's link pins, which detaches the programs (a no-op when the
    /// interface is gone: the kernel detached already).
    pub fn detach(&mut self, ifindex: u32) {
        self.unpin(ifindex);
        self.links.remove(&ifindex);
    }

    fn unpin(&self, ifindex: u32) {
        for (program, _) in ATTACHMENTS {
            _ = std::fs::remove_file(paths::link_pin(&self.pin_dir, ifindex, program));
        }
    }

    /// Takes over the links pinned by an earlier agent: each is switched to this agent's
    /// programs in one atomic `bpf_link_update`, so enforcement never pauses. Links whose
    /// interface is gone are unpinned. Then removes maps of other layout versions, which
    /// no program uses any more. Returns how many interfaces were adopted.
    pub fn adopt(&mut self) -> usize {
        let dir = paths::links_dir(&self.pin_dir);
        let mut pins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        pins.sort();
        for pin in pins {
            let parsed = pin
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(paths::parse_link_pin)
                .and_then(|(ifindex, name)| {
                    let (program, _) = ATTACHMENTS.iter().find(|(p, _)| *p == name)?;
                    Some((ifindex, *program))
                });
            let Some((ifindex, program)) = parsed else {
                tracing::warn!(pin = %pin.display(), "removing an unknown link pin");
                _ = std::fs::remove_file(&pin);
                continue;
            };
            let adopted = PinnedLink::from_pin(&pin)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    SchedClassifierLink::try_from(FdLink::from(p)).map_err(|e| e.to_string())
                })
                .and_then(|link| {
                    let prog = self.program(program);
                    let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                    // The pin owns the link; drop our handle (this does not detach).
                    prog.take_link(id).map(drop).map_err(|e| e.to_string())
                });
            match adopted {
                Ok(()) => {
                    let name = nix::net::if_::if_indextoname(ifindex)
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.links.insert(ifindex, name);
                }
                Err(e) => {
                    tracing::info!(pin = %pin.display(), error = %e, "removing a stale link pin");
                    _ = std::fs::remove_file(&pin);
                }
            }
        }
        for old in paths::stale_maps_dirs(&self.pin_dir) {
            tracing::info!(dir = %old.display(), "removing maps of an older layout");
            _ = std::fs::remove_dir_all(&old);
        }
        self.links.len()
    }

    /// Runs `program` once on `packet` with `BPF_PROG_TEST_RUN` (the skb's device is the
    /// loopback, ifindex 1) and returns its verdict (-1 pass, 2 drop).
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
        use aya::programs::{TestRun as _, TestRunOptions};
        let prog: &SchedClassifier = self
            .ebpf
            .program(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(ProgramError::NotLoaded)?;
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok((result.return_value as i32, result.duration))
    }

    /// ifindex -> interface name of every attachment.
    pub fn attached(&self) -> &BTreeMap<u32, String> {
        &self.links
    }

    pub fn config(&self) -> Result<Config, MapError> {
        self.config.get(&0, 0)
    }

    pub fn set_config(&mut self, config: &Config) -> Result<(), MapError> {
        self.config.set(0, config, 0)
    }

    /// What the agent-owned maps hold now.
    pub fn read(&self) -> Result<MapContents, MapError> {
        let mut c = MapContents::default();
        for kv in self.endpoints.iter() {
            let (k, v) = kv?;
            c.endpoints.insert(k, v);
        }
        for kv in self.ipcache.iter() {
            let (k, v) = kv?;
            c.ipcache.insert(k, v);
        }
        for kv in self.cidrs.iter() {
            let (k, v) = kv?;
            c.cidrs.insert((k.prefix_len(), k.data()), v);
        }
        for kv in self.policy.iter() {
            let (k, v) = kv?;
            c.policy.insert((k.prefix_len(), k.data()), v);
        }
        Ok(c)
    }

    /// The per-namespace-pair counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(CounterKey, Counter)>, MapError> {
        self.counters
            .iter()
            .map(|kv| {
                let (k, per_cpu) = kv?;
                let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                });
                Ok((k, sum))
            })
            .collect()
    }

    /// Datapath statistics (`STAT_*`), summed over CPUs.
    pub fn stats(&self) -> Result<Vec<u64>, MapError> {
        (0..m::STATS_LEN)
            .map(|i| Ok(self.stats.get(&i, 0)?.iter().sum()))
            .collect()
    }
}

impl MapWriter for Datapath {
    type Error = MapError;

    fn apply_op(&mut self, op: &MapOp) -> Result<(), MapError> {
        match op {
            MapOp::UpsertRemote(k, v) => self.ipcache.insert(k, v, 0),
            MapOp::UpsertCidr((len, k), v) => self.cidrs.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertPolicy((len, k), v) => self.policy.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertEndpoint(k, v) => self.endpoints.insert(k, v, 0),
            MapOp::DeleteEndpoint(k) => self.endpoints.remove(k),
            MapOp::DeletePolicy((len, k)) => self.policy.remove(&Key::new(*len, *k)),
            MapOp::DeleteCidr((len, k)) => self.cidrs.remove(&Key::new(*len, *k)),
            MapOp::DeleteRemote(k) => self.ipcache.remove(k),
        }
    }
}
