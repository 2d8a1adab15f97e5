//! Loading the kernel programs, pinning their maps, attaching them to pod veths, and the
//! aya side of the map writer. Everything that touches aya lives here.

use std::{collections::BTreeMap, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::{ProgramError, SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use cns_common::maps::{
    self as m, CidrKey, Config, Counter, CounterKey, Endpoint, PolicyKey, PolicyValue, Remote,
};

use crate::{
    encode::MapContents,
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
#[error("failed to attach {program} to {interface} (ifindex {ifindex})")]
pub struct AttachError {
    pub program: &'static str,
    pub interface: String,
    pub ifindex: u32,
    #[source]
    pub source: Box<ProgramError>,
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
    /// Attached interfaces: ifindex -> (name, to-pod link, from-pod link).
    links: BTreeMap<u32, Attachment>,
}

#[derive(Debug)]
struct Attachment {
    name: String,
    to_pod: SchedClassifierLinkId,
    from_pod: SchedClassifierLinkId,
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
    /// Loads the programs; maps are created, or reused when already pinned in `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
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
            links: BTreeMap::new(),
        })
    }

    fn program(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }

    /// Attaches both programs to `interface` (tcx on kernels >= 6.6).
    pub fn attach(&mut self, interface: &str, ifindex: u32) -> Result<(), AttachError> {
        if self
            .links
            .get(&ifindex)
            .is_some_and(|a| a.name == interface)
        {
            return Ok(());
        }
        self.detach(ifindex);
        let err = |program, source| AttachError {
            program,
            interface: interface.to_owned(),
            ifindex,
            source: Box::new(source),
        };
        let to_pod = self
            .program(PROG_TO_POD)
            .attach(interface, TcAttachType::Egress)
            .map_err(|e| err(PROG_TO_POD, e))?;
        let from_pod = match self
            .program(PROG_FROM_POD)
            .attach(interface, TcAttachType::Ingress)
        {
            Ok(id) => id,
            Err(e) => {
                _ = self.program(PROG_TO_POD).detach(to_pod);
                return Err(err(PROG_FROM_POD, e));
            }
        };
        self.links.insert(
            ifindex,
            Attachment {
                name: interface.to_owned(),
                to_pod,
                from_pod,
            },
        );
        Ok(())
    }

    /// Detaches from an interface (a no-op when it is gone: the kernel detached already).
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(a) = self.links.remove(&ifindex) {
            _ = self.program(PROG_TO_POD).detach(a.to_pod);
            _ = self.program(PROG_FROM_POD).detach(a.from_pod);
        }
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
    pub fn attached(&self) -> BTreeMap<u32, String> {
        self.links
            .iter()
            .map(|(i, a)| (*i, a.name.clone()))
            .collect()
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
