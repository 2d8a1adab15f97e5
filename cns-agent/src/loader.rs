//! Loading the kernel programs, pinning their maps, attaching them to pod veths (TC) and to
//! the node's uplinks (XDP), and the aya side of the map writer. Everything that touches aya
//! lives here.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        Program, ProgramError, SchedClassifier, TcAttachType, Xdp,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::{XdpLink, XdpMode},
    },
};
use cns_common::maps::{
    self as m, CidrKey, Config, Counter, CounterKey, Endpoint, PolicyKey, PolicyValue, Remote,
};

use crate::{
    counters::CounterMaps,
    encode::MapContents,
    map_sizes::{MapSizes, SizedMap},
    paths,
    reconcile::{MapOp, MapWriter},
    uplink::{self, Uplink, XdpAttachMode},
};

/// The kernel programs, built by build.rs (aya-build) from `cns-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cns"));

pub const PROG_TO_POD: &str = "cns_to_pod";
pub const PROG_FROM_POD: &str = "cns_from_pod";
/// An empty TC program (returns "pass"), loaded for benchmarks only.
pub const PROG_EMPTY: &str = "cns_empty";
/// The XDP program for the node's uplinks.
pub const PROG_XDP: &str = "cns_xdp";

/// XDP verdicts as [`Datapath::test_run`] returns them for [`PROG_XDP`].
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

/// The XDP program on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub interface: String,
    /// As attached, or as the kernel reports it for an adopted link (`None`: unknown).
    pub mode: Option<XdpAttachMode>,
}

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
    /// `policy`'s one-port, all-ports and any-protocol entries (the plan writes both).
    policy_exact: HashMap<MapData, PolicyKey, PolicyValue>,
    /// Local pod address -> ifindex (for the XDP program), planned from the endpoints.
    local_ips: HashMap<MapData, u32, u32>,
    counters: CounterMaps,
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
        for name in [PROG_TO_POD, PROG_FROM_POD, PROG_EMPTY] {
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
        Ok(Self {
            config: take!(ebpf, m::CONFIG),
            endpoints: take!(ebpf, m::ENDPOINTS),
            ipcache: take!(ebpf, m::IPCACHE),
            cidrs: take!(ebpf, m::CIDRS),
            policy: take!(ebpf, m::POLICY),
            policy_exact: take!(ebpf, m::POLICY_EXACT),
            local_ips: take!(ebpf, m::LOCAL_IPS),
            counters: CounterMaps::new(
                ebpf.take_map(m::COUNTER_SLOTS)
                    .ok_or(LoadError::MissingMap(m::COUNTER_SLOTS))?,
                ebpf.take_map(m::COUNTERS)
                    .ok_or(LoadError::MissingMap(m::COUNTERS))?,
            )
            .map_err(|source| LoadError::Map {
                name: m::COUNTERS,
                source,
            })?,
            stats: take!(ebpf, m::STATS),
            ebpf,
            pin_dir: pin_dir.to_owned(),
            maps_dir,
            sizes: *sizes,
            links: BTreeMap::new(),
            xdp_links: BTreeMap::new(),
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
    /// interface is gone are unpinned. Then removes maps of other layout versions or sizes,
    /// which no program uses any more. Returns how many interfaces were adopted.
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
                    if name == PROG_XDP {
                        return Some((ifindex, PROG_XDP));
                    }
                    let (program, _) = ATTACHMENTS.iter().find(|(p, _)| *p == name)?;
                    Some((ifindex, *program))
                });
            let Some((ifindex, program)) = parsed else {
                tracing::warn!(pin = %pin.display(), "removing an unknown link pin");
                _ = std::fs::remove_file(&pin);
                continue;
            };
            if program == PROG_XDP {
                self.adopt_xdp(&pin, ifindex);
                continue;
            }
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
        for old in paths::stale_maps_dirs(&self.pin_dir, &self.maps_dir) {
            tracing::info!(dir = %old.display(), "removing maps of another layout or size");
            _ = std::fs::remove_dir_all(&old);
        }
        self.links.len()
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
        use aya::programs::{TestRun as _, TestRunOptions};
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        };
        let result = match self.ebpf.program(program) {
            Some(Program::SchedClassifier(p)) => p.test_run(opts)?,
            Some(Program::Xdp(p)) => p.test_run(opts)?,
            _ => return Err(ProgramError::NotLoaded),
        };
        Ok((result.return_value as i32, result.duration))
    }

    /// Local pod address -> ifindex, as the XDP program sees it.
    pub fn local_ips(&self) -> Result<BTreeMap<u32, u32>, MapError> {
        self.local_ips.iter().collect()
    }

    fn xdp_program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROG_XDP)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }

    /// Attaches the XDP program to `interface` (the node's uplink, see `uplink`): native
    /// mode when the driver supports it, generic otherwise; pins the link at
    /// `links/{ifindex}-cns_xdp` so it stays attached when the agent exits or dies. Returns
    /// the mode. A no-op (returning the known mode) when attached already.
    pub fn attach_xdp(
        &mut self,
        interface: &str,
        ifindex: u32,
    ) -> Result<XdpAttachMode, AttachError> {
        if let Some(a) = self.xdp_links.get(&ifindex) {
            return Ok(a.mode.unwrap_or(XdpAttachMode::Generic));
        }
        let err = |step, source: Box<dyn std::error::Error + Send + Sync>| AttachError {
            step,
            program: PROG_XDP,
            interface: interface.to_owned(),
            ifindex,
            source,
        };
        let pin = paths::link_pin(&self.pin_dir, ifindex, PROG_XDP);
        let prog = self.xdp_program();
        let (id, mode) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => (id, XdpAttachMode::Native),
            Err(native) => {
                let id = prog
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|e| err("attach", format!("native: {native}; generic: {e}").into()))?;
                tracing::info!(interface, error = %native, "native XDP unavailable; using generic XDP");
                (id, XdpAttachMode::Generic)
            }
        };
        let link = prog.take_link(id).map_err(|e| err("attach", e.into()))?;
        // A netlink attachment (no bpf_link) cannot be pinned; dropping it detaches.
        let fd = FdLink::try_from(link).map_err(|e| err("attach", e.into()))?;
        fd.pin(&pin).map_err(|e| err("pin the link of", e.into()))?;
        self.xdp_links.insert(
            ifindex,
            XdpAttachment {
                interface: interface.to_owned(),
                mode: Some(mode),
            },
        );
        Ok(mode)
    }

    /// Removes the XDP link pin of `ifindex`, which detaches the program.
    pub fn detach_xdp(&mut self, ifindex: u32) {
        _ = std::fs::remove_file(paths::link_pin(&self.pin_dir, ifindex, PROG_XDP));
        self.xdp_links.remove(&ifindex);
    }

    /// Makes the XDP program run on exactly `uplinks`: attaches where missing, detaches from
    /// every other interface. Returns the failures (retry at the next sync).
    pub fn sync_xdp(&mut self, uplinks: &[Uplink]) -> Vec<AttachError> {
        let mut errors = Vec::new();
        for u in uplinks {
            match self.attach_xdp(&u.name, u.ifindex) {
                Ok(mode) => tracing::debug!(interface = %u.name, %mode, "XDP attached"),
                Err(e) => errors.push(e),
            }
        }
        let stale: Vec<u32> = self
            .xdp_links
            .keys()
            .filter(|i| !uplinks.iter().any(|u| u.ifindex == **i))
            .copied()
            .collect();
        for ifindex in stale {
            self.detach_xdp(ifindex);
        }
        errors
    }

    /// Takes over a pinned XDP link (see [`Datapath::adopt`]).
    fn adopt_xdp(&mut self, pin: &Path, ifindex: u32) {
        let adopted = PinnedLink::from_pin(pin)
            .map_err(|e| e.to_string())
            .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()))
            .and_then(|link| {
                let prog = self.xdp_program();
                let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                // The pin owns the link; drop our handle (this does not detach).
                prog.take_link(id).map(drop).map_err(|e| e.to_string())
            });
        match adopted {
            Ok(()) => {
                let interface = nix::net::if_::if_indextoname(ifindex)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mode = uplink::xdp_mode(ifindex);
                self.xdp_links
                    .insert(ifindex, XdpAttachment { interface, mode });
            }
            Err(e) => {
                tracing::info!(pin = %pin.display(), error = %e, "removing a stale XDP link pin");
                _ = std::fs::remove_file(pin);
            }
        }
    }

    /// ifindex -> interface and mode of every XDP attachment (for `status`).
    pub fn xdp_attached(&self) -> &BTreeMap<u32, XdpAttachment> {
        &self.xdp_links
    }

    /// ifindex -> interface name of every attachment.
    pub fn attached(&self) -> &BTreeMap<u32, String> {
        &self.links
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

    pub fn set_config(&mut self, config: &Config) -> Result<(), MapError> {
        self.config.set(0, config, 0)
    }

    /// What the maps the agent writes hold now (all of them: [`MapContents`]).
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
        for kv in self.policy_exact.iter() {
            let (k, v) = kv?;
            c.policy_exact.insert(k, v);
        }
        for kv in self.local_ips.iter() {
            let (k, v) = kv?;
            c.local_ips.insert(k, v);
        }
        Ok(c)
    }

    /// The per-namespace-pair counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(CounterKey, Counter)>, MapError> {
        self.counters.read()
    }

    /// Datapath statistics (`STAT_*`), summed over CPUs.
    pub fn stats(&self) -> Result<Vec<u64>, MapError> {
        (0..m::STATS_LEN)
            .map(|i| Ok(self.stats.get(&i, 0)?.iter().sum()))
            .collect()
    }
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

impl MapWriter for Datapath {
    type Error = MapError;

    /// One operation, one map: the order and the pairing of the policy trie with its hash
    /// are the plan's (`reconcile`).
    fn apply_op(&mut self, op: &MapOp) -> Result<(), MapError> {
        match op {
            MapOp::UpsertRemote(k, v) => self.ipcache.insert(k, v, 0),
            MapOp::UpsertCidr((len, k), v) => self.cidrs.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertPolicy((len, k), v) => self.policy.insert(&Key::new(*len, *k), v, 0),
            MapOp::UpsertPolicyExact(k, v) => self.policy_exact.insert(k, v, 0),
            MapOp::UpsertEndpoint(k, v) => self.endpoints.insert(k, v, 0),
            MapOp::UpsertLocalIp(k, v) => self.local_ips.insert(k, v, 0),
            MapOp::DeleteLocalIp(k) => absent_is_gone(self.local_ips.remove(k)),
            MapOp::DeleteEndpoint(k) => absent_is_gone(self.endpoints.remove(k)),
            MapOp::DeletePolicyExact(k) => absent_is_gone(self.policy_exact.remove(k)),
            MapOp::DeletePolicy((len, k)) => {
                absent_is_gone(self.policy.remove(&Key::new(*len, *k)))
            }
            MapOp::DeleteCidr((len, k)) => absent_is_gone(self.cidrs.remove(&Key::new(*len, *k))),
            MapOp::DeleteRemote(k) => absent_is_gone(self.ipcache.remove(k)),
        }
    }
}

/// A delete of what is not there has reached its goal.
fn absent_is_gone(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}
