//! The kernel programs without a virtual node: the datapath loaded into a pin directory of
//! its own, its maps written by the agent's own pipeline (the manifest loader, the
//! compiler, the agent's planner and writer) from a manifest string, for
//! `BPF_PROG_TEST_RUN` on crafted packets ([`crate::packets`]).

use std::{
    collections::BTreeMap,
    ops::Deref,
    path::{Path, PathBuf},
};

use cns_agent::{
    agent::{Plan, Planner, Scope},
    datapath::Datapath,
    policy::{
        compile,
        model::{Allocations, Desired, NodeContext, ObjectRef},
    },
    reconcile,
    source::{self, LastGood},
};
use cns_common::maps::Config;

use crate::unique;

/// The node the manifests' local pods are on.
pub const NODE: &str = "node-1";

/// A pin directory under /sys/fs/bpf, removed on drop (also when loading fails).
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(prefix: &str) -> Self {
        Self(PathBuf::from("/sys/fs/bpf").join(unique(prefix)))
    }
}

impl Deref for PinDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Programs and maps, ready for test runs.
pub struct Loaded {
    // Field order is drop order: the programs go before their pin directory.
    pub dp: Datapath,
    pub pin_dir: PinDir,
    /// What the manifests compiled to, and the agent's planner that wrote it.
    pub desired: Desired,
    pub planner: Planner,
    /// Each local pod's made-up veth ifindex.
    pub ifindexes: BTreeMap<ObjectRef, u32>,
}

impl Loaded {
    /// Plans against what the maps hold now (read back, compared whole, as the agent's
    /// resync does) and writes the plan. Returns it.
    pub fn resync(&mut self) -> Plan {
        let actual = self.dp.read().expect("read the maps");
        let plan = self
            .planner
            .plan(&self.desired, &self.ifindexes, &actual, None, Scope::WHOLE);
        let failed = reconcile::apply(&mut self.dp, &plan.ops);
        assert!(failed.is_empty(), "{failed:?}");
        plan
    }
}

/// Loads the programs (pins under a fresh `prefix`-named directory), compiles `manifests`
/// for [`NODE`] and writes the maps, with each `(namespace, pod, ifindex)` of `endpoints`
/// as a local pod whose veth is that ifindex for the test run (1 is the loopback, what
/// `BPF_PROG_TEST_RUN` reports), then sets the mode.
pub fn load(prefix: &str, manifests: &str, endpoints: &[(&str, &str, u32)], audit: bool) -> Loaded {
    load_on_node(prefix, manifests, endpoints, audit, &[])
}

/// [`load`] on a node with the addresses `node_ips` (identity "host").
pub fn load_on_node(
    prefix: &str,
    manifests: &str,
    endpoints: &[(&str, &str, u32)],
    audit: bool,
    node_ips: &[std::net::IpAddr],
) -> Loaded {
    let pin_dir = PinDir::new(prefix);
    cns_agent::paths::prepare_pin_dir(&pin_dir).expect("pin dir");
    let mut dp = Datapath::load(&pin_dir).expect("load programs");
    let (snapshot, errors) = source::load(
        &[("m.yaml".into(), Ok(manifests.to_owned()))],
        &mut LastGood::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let node = NodeContext {
        node_name: NODE.into(),
        node_ips: node_ips.iter().copied().collect(),
    };
    let desired = compile(&snapshot, &node, &Allocations::default());
    let ifindexes: BTreeMap<ObjectRef, u32> = endpoints
        .iter()
        .map(|(ns, pod, ifindex)| (ObjectRef::new(*ns, *pod), *ifindex))
        .collect();
    set_mode(&mut dp, audit, 1);
    let mut loaded = Loaded {
        dp,
        pin_dir,
        desired,
        planner: Planner::default(),
        ifindexes,
    };
    loaded.resync();
    loaded
}

/// Writes the config: `audit` mode, policy `revision`, no events.
pub fn set_mode(dp: &mut Datapath, audit: bool, revision: u32) {
    dp.set_config(&Config {
        audit_mode: u32::from(audit),
        revision,
        event_rate: 0,
        event_burst: 0,
        flags: 0,
        hz: 0, // the datapath's clock says
    })
    .expect("config");
}

/// Keeps this thread on one CPU (`cpu`) until dropped, then on the CPUs it had (also when a
/// test panics): for tests of the programs' per-CPU state, whose test runs must all see the
/// same CPU's copy.
pub struct CpuPin {
    pub cpu: usize,
    me: nix::unistd::Pid,
    former: nix::sched::CpuSet,
}

/// Pins this thread to the first CPU it may run on.
pub fn pin_to_one_cpu() -> CpuPin {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    let me = nix::unistd::Pid::from_raw(0);
    let former = sched_getaffinity(me).expect("sched_getaffinity");
    let cpu = (0..CpuSet::count())
        .find(|&c| former.is_set(c).unwrap_or(false))
        .expect("a CPU this thread may run on");
    let mut one = CpuSet::new();
    one.set(cpu).expect("a CPU number");
    sched_setaffinity(me, &one).expect("sched_setaffinity");
    CpuPin { cpu, me, former }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        _ = nix::sched::sched_setaffinity(self.me, &self.former);
    }
}
