//! Per-packet cost in the kernel with `BPF_PROG_TEST_RUN` (issue 7, section 1).
//!
//! For each map size (policy-map entries x IP-cache entries) a fresh datapath is loaded in
//! its own pin directory and filled the agent's way (a synthetic [`Desired`] -> `encode` ->
//! `reconcile::diff` -> `reconcile::apply` on the [`Datapath`]). The pod under test is
//! endpoint 1 at ifindex 1 (the loopback: the skb device of a test run). Then, trial after
//! trial, interleaved: the empty program (the floor), and `cns_to_pod` / `cns_from_pod` for
//! an established flow (conntrack hit), a new allowed flow, a new denied flow and an
//! audit-mode would-be drop. New-flow cases run with `CONFIG_NO_CONNTRACK_CREATE` (and
//! `CONFIG_NO_DENY_CACHE`) so repeats stay new.
//!
//! XDP (`cns_xdp`, the uplink's early filter) runs on the same packets as `cns_to_pod`,
//! interleaved with it: established, new allowed, new denied, audit would-be drop, a denied
//! flood (new denied's packets with the deny cache on: after the first packet of a key, a
//! deny cache hit; compared with `cns_to_pod`'s new denied, what TC pays for each packet of
//! the flood), plus a packet for an address that is not a local pod (it passes after one
//! lookup). Its floor
//! is an empty XDP program the bench loads itself ([`super::rawbpf`]: cns-ebpf has no empty
//! XDP program); each XDP row also gives its ratio to `cns_to_pod` on the same packet.
//!
//! Reference floors (issue 17, [`super::floor`]): each path with a floor ([`floor_of`]) is
//! followed in every trial by its floor on the same packets (`floor_established` after the
//! established cases, `floor_new` / `floor_new_egress` after the new-flow cases, and
//! `floor_xdp_drop` after XDP's new denied and denied flood), and each such row also gives
//! its per-trial ratio to that floor; the floors' own rows give theirs to the empty program.
//!
//! IPv6 (issue 13): the same endpoint, rules and remotes have IPv6 addresses too, and the
//! TC cases (established, new allowed, new denied) and XDP's new denied and denied flood run
//! on IPv6 packets as well, interleaved with the IPv4 ones; each IPv6 row gives its per-trial
//! ratio to the same IPv4 row (target: within 1.3x). The floors are IPv4 programs.
//!
//! Other datapaths ([`Policies`]): beside the NetworkPolicy-only one, a datapath whose pod
//! under test ClusterNetworkPolicies also select ([`desired_tiered`], issue 14) and one whose
//! pod under test a dry-run policy also selects ([`desired_dry_run`], issue 15) run the TC
//! cases on the same IPv4 packets, interleaved in every trial; each such row gives its
//! per-trial ratio to the same row on the NetworkPolicy-only datapath (targets: within 1.2x
//! and 1.1x for new flows).
//!
//! Two key patterns: "repeated" (one packet, `repeat` runs in the kernel: every lookup hits
//! the same, cache-hot key) and "random" (a few thousand different flows spread over the
//! maps, one run each: lookups walk cold parts of the hash tables and tries; each run then
//! also carries the kernel's per-run timer overhead, which the empty program measured the
//! same way carries too).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use cns_agent::{
    agent::{Planner, Scope},
    datapath::{
        Datapath, FLOOR_ESTABLISHED, FLOOR_NEW, FLOOR_NEW_EGRESS, FLOOR_XDP_DROP, PROG_EMPTY,
        PROG_FROM_POD, PROG_TO_POD, PROG_XDP, XDP_DROP, XDP_PASS,
    },
    encode::MapContents,
    policy::{
        addr::PodAddrs,
        model::{
            Desired, Direction, LocalEndpoint, ObjectRef, PortMatch, PortRange, Protocol,
            RemoteInfo, RuleKey, RuleValue,
        },
    },
    reconcile,
};
use cns_common::{
    IDENTITY_FIRST_POD, NS_FIRST,
    maps::{CONFIG_NO_CONNTRACK_CREATE, CONFIG_NO_DENY_CACHE, Config},
};
use serde_json::{Value, json};

use super::{
    Options, Rng, Summary,
    floor::{self, Floors},
    rawbpf::RawXdp,
};
use crate::unique;

const PASS: i32 = -1;
const DROP: i32 = 2;

/// The empty XDP program the bench loads itself (the XDP floor).
pub const XDP_EMPTY: &str = "xdp_empty";

/// The pod under test.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const SERVER_IDENTITY: u32 = IDENTITY_FIRST_POD;
/// Its IPv6 address.
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 1, 0, 0, 0, 0x0a);
/// Remote pods: 10.128.0.0 + i and fd00:128:: + i, identity `IDENTITY_FIRST_POD + 1 + i`.
const REMOTE_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const REMOTE_BASE6: u128 = 0xfd00_0128_0000_0000_0000_0000_0000_0000;
/// The target of an IPv6 path against the same IPv4 path (issue 13).
pub const IPV6_TARGET: f64 = 1.3;
/// Rules allow TCP to `RULE_PORT_BASE + n`; denied flows go to `DENIED_PORT`.
const RULE_PORT_BASE: u16 = 1024;
const DENIED_PORT: u16 = 9;
/// Other local endpoints (ifindex 1000+), as on a real node.
const OTHER_ENDPOINTS: u32 = 99;

/// One map size to measure.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub policy: usize,
    pub ipcache: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    Empty,
    Established,
    NewAllowed,
    NewDenied,
    AuditDrop,
    /// XDP only: new denied's packets with the deny cache on (a flood: every packet after
    /// the first of its key hits the cache).
    DeniedFlood,
    /// XDP only: a packet for an address that is not a local pod.
    PassThrough,
    /// A new allowed flow (TC, IPv4) that the dry-run policy of [`desired_dry_run`] would
    /// drop (an odd remote on port 1024). On the NetworkPolicy-only datapath, the same
    /// packets: new allowed flows.
    WouldDrop,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::Empty,
        Case::Established,
        Case::NewAllowed,
        Case::NewDenied,
        Case::AuditDrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::Empty => "empty",
            Case::Established => "established",
            Case::NewAllowed => "new allowed",
            Case::NewDenied => "new denied",
            Case::AuditDrop => "audit would-be drop",
            Case::DeniedFlood => "denied flood (deny cache)",
            Case::PassThrough => "not for a local pod",
            Case::WouldDrop => "new allowed, dry run would drop",
        }
    }

    /// The TC cases also measured on IPv6.
    pub const IPV6: [Case; 3] = [Case::Established, Case::NewAllowed, Case::NewDenied];

    /// The TC cases also measured with ClusterNetworkPolicies selecting the endpoint.
    pub const TIERED: [Case; 3] = [Case::Established, Case::NewAllowed, Case::NewDenied];

    /// The TC cases also measured with a dry-run policy selecting the endpoint.
    pub const DRY_RUN: [Case; 4] = [
        Case::Established,
        Case::NewAllowed,
        Case::NewDenied,
        Case::WouldDrop,
    ];

    /// The cases of `cns_xdp`.
    pub const XDP: [Case; 6] = [
        Case::Established,
        Case::NewAllowed,
        Case::NewDenied,
        Case::DeniedFlood,
        Case::AuditDrop,
        Case::PassThrough,
    ];

    fn expected(self, program: &str) -> Option<i32> {
        let denied = matches!(self, Case::NewDenied | Case::DeniedFlood);
        match program {
            PROG_EMPTY | XDP_EMPTY => None,
            FLOOR_ESTABLISHED => Some(floor::TC_OK),
            // The floor has no audit mode: a would-be drop is a drop.
            FLOOR_NEW | FLOOR_NEW_EGRESS => Some(if self == Case::NewAllowed {
                floor::TC_OK
            } else {
                floor::TC_SHOT
            }),
            FLOOR_XDP_DROP => Some(XDP_DROP),
            PROG_XDP => Some(if denied { XDP_DROP } else { XDP_PASS }),
            _ => Some(if denied { DROP } else { PASS }),
        }
    }

    fn config(self) -> Config {
        Config {
            audit_mode: u32::from(self == Case::AuditDrop),
            revision: 1,
            // The agent's defaults (--event-rate 100 --event-burst 200).
            event_rate: 100,
            event_burst: 200,
            flags: match self {
                Case::Established | Case::Empty | Case::PassThrough => 0,
                Case::DeniedFlood => CONFIG_NO_CONNTRACK_CREATE,
                _ => CONFIG_NO_CONNTRACK_CREATE | CONFIG_NO_DENY_CACHE,
            },
            hz: 0, // the datapath's clock says
        }
    }
}

/// The reference floor (issue 17, `cns-ebpf/src/floor.rs`) of `program`'s `case`: the
/// program doing only that path's irreducible work, run on the same packets in the same
/// trials. `None`: no floor (XDP's other cases, the empty programs).
pub fn floor_of(program: &str, case: Case) -> Option<&'static str> {
    match (program, case) {
        (PROG_TO_POD | PROG_FROM_POD, Case::Established) => Some(FLOOR_ESTABLISHED),
        (PROG_TO_POD, Case::NewAllowed | Case::NewDenied | Case::AuditDrop) => Some(FLOOR_NEW),
        (PROG_FROM_POD, Case::NewAllowed | Case::NewDenied | Case::AuditDrop) => {
            Some(FLOOR_NEW_EGRESS)
        }
        (PROG_XDP, Case::NewDenied | Case::DeniedFlood) => Some(FLOOR_XDP_DROP),
        _ => None,
    }
}

/// The target for a path against its floor (issue 17): established <= 1.15x
/// `floor_established`, new allowed/denied <= 1.25x `floor_new`, XDP denied flood <= 1.3x
/// `floor_xdp_drop`.
pub fn floor_target(program: &str, case: Case) -> Option<f64> {
    match (program, case) {
        (PROG_TO_POD | PROG_FROM_POD, Case::Established) => Some(1.15),
        (PROG_TO_POD | PROG_FROM_POD, Case::NewAllowed | Case::NewDenied) => Some(1.25),
        (PROG_XDP, Case::DeniedFlood) => Some(1.3),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keys {
    Repeated,
    Random,
}

impl Keys {
    pub fn name(self) -> &'static str {
        match self {
            Keys::Repeated => "repeated",
            Keys::Random => "random",
        }
    }
}

/// The datapath a row runs on: what its maps were filled from (each in a pin directory of
/// its own, all loaded at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policies {
    /// [`desired`]: NetworkPolicy only, the base the others are compared with.
    NetworkPolicy,
    /// [`desired_tiered`]: ClusterNetworkPolicies of both tiers select the pod under test too.
    Cluster,
    /// [`desired_dry_run`]: a dry-run policy selects the pod under test too.
    DryRun,
}

impl Policies {
    /// `bench.json`'s `datapath`.
    pub fn key(self) -> &'static str {
        match self {
            Policies::NetworkPolicy => "networkpolicy_only",
            Policies::Cluster => "cluster_policies",
            Policies::DryRun => "dry_run",
        }
    }
}

/// What one (program, case, keys) measured at one size.
#[derive(Clone, Debug)]
pub struct Measure {
    pub size: Size,
    pub program: &'static str,
    pub case: Case,
    pub keys: Keys,
    pub ns: Summary,
    /// Per trial: this / the empty program of its kind (TC or XDP) in the same trial.
    pub ratio: Summary,
    /// XDP only, per trial: this / `cns_to_pod` on the same packets (the empty XDP program:
    /// / the empty TC program).
    pub vs_tc: Option<Summary>,
    /// A floor program's row: the cns program whose packets it ran on.
    pub of: Option<&'static str>,
    /// Per trial: this / its reference floor ([`floor_of`]) on the same packets.
    pub vs_floor: Option<(&'static str, Summary)>,
    /// IPv6 packets (else IPv4).
    pub v6: bool,
    /// An IPv6 row, per trial: this / the same program and case on IPv4.
    pub vs_v4: Option<Summary>,
    /// The datapath this row ran on.
    pub policies: Policies,
    /// A row on another datapath than NetworkPolicy only, per trial: this / the same
    /// program and case (the same packets) on the NetworkPolicy-only one.
    pub vs_np: Option<Summary>,
}

impl Measure {
    /// The empty program this one's `ratio` is relative to.
    pub fn floor(&self) -> &'static str {
        if matches!(self.program, PROG_XDP | XDP_EMPTY | FLOOR_XDP_DROP) {
            XDP_EMPTY
        } else {
            PROG_EMPTY
        }
    }
}

impl Measure {
    pub fn json(&self) -> Value {
        json!({
            "policy_entries": self.size.policy,
            "ipcache_entries": self.size.ipcache,
            "program": self.program,
            "case": self.case.name(),
            "keys": self.keys.name(),
            "ns_per_packet": self.ns.json(),
            "floor": self.floor(),
            "ratio_to_empty": self.ratio.json(),
            "ratio_to_tc_same_packet": self.vs_tc.map(|s| s.json()),
            "floor_of": self.of,
            "reference_floor": self.vs_floor.map(|(f, _)| f),
            "ratio_to_reference_floor": self.vs_floor.map(|(_, s)| s.json()),
            "reference_floor_target": floor_target(self.program, self.case),
            "family": if self.v6 { "IPv6" } else { "IPv4" },
            "ratio_to_ipv4": self.vs_v4.map(|s| s.json()),
            "datapath": self.policies.key(),
            "cluster_policies": self.policies == Policies::Cluster,
            "dry_run": self.policies == Policies::DryRun,
            "ratio_to_networkpolicy_only": self.vs_np.map(|s| s.json()),
        })
    }
}

pub struct Params {
    pub sizes: Vec<Size>,
    pub trials: usize,
    pub repeat: u32,
    pub random_flows: usize,
}

impl Params {
    pub fn new(opts: &Options) -> Self {
        if opts.quick {
            Self {
                sizes: vec![
                    Size {
                        policy: 10,
                        ipcache: 10,
                    },
                    Size {
                        policy: 100_000,
                        ipcache: 50_000,
                    },
                ],
                trials: 3,
                repeat: 200_000,
                random_flows: 2_000,
            }
        } else {
            let mut sizes = Vec::new();
            for ipcache in [10, 1_000, 50_000] {
                for policy in [10, 1_000, 10_000, 100_000] {
                    sizes.push(Size { policy, ipcache });
                }
            }
            Self {
                sizes,
                trials: 5,
                repeat: 1_000_000,
                random_flows: 8_000,
            }
        }
    }
}

/// A datapath in its own pin directory, removed on drop.
struct Loaded {
    dp: Datapath,
    pin_dir: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn remote_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(REMOTE_BASE + i as u32)
}

fn remote_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::from(REMOTE_BASE6 + i as u128)
}

fn remote_identity(i: usize) -> u32 {
    IDENTITY_FIRST_POD + 1 + i as u32
}

/// The synthetic desired state for `size`: `size.ipcache` remote pods, 100 local endpoints
/// and exactly `size.policy` single-port rules. Rule `i` belongs to group `i % 4` (endpoint
/// 1 ingress, endpoint 1 egress, another endpoint ingress, another endpoint egress); within
/// a group, rule `m = i / 4` allows remote `m % ipcache` on TCP port `1024 + m / ipcache`.
pub fn desired(size: Size) -> Desired {
    let mut d = Desired::default();
    let ns = |i: usize| NS_FIRST + (i % 50) as u16;
    for i in 0..size.ipcache {
        let remote = RemoteInfo {
            identity: remote_identity(i),
            ns_id: ns(i),
        };
        d.ipcache.insert(remote_ip(i).into(), remote);
        d.ipcache.insert(remote_ip6(i).into(), remote);
    }
    let ep = |ep_id: u32, ip: Ipv4Addr, identity: u32| LocalEndpoint {
        ep_id,
        addrs: PodAddrs {
            v4: Some(ip),
            v6: None,
        },
        identity,
        ns_id: NS_FIRST,
        ingress_isolated: true,
        egress_isolated: true,
        ingress_tiered: false,
        egress_tiered: false,
        dry_run: false,
        ingress_would_isolate: false,
        egress_would_isolate: false,
        audit_override: None,
    };
    let mut server = ep(1, SERVER, SERVER_IDENTITY);
    server.addrs.v6 = Some(SERVER6);
    d.endpoints
        .insert(ObjectRef::new("bench", "server"), server);
    let server_remote = RemoteInfo {
        identity: SERVER_IDENTITY,
        ns_id: NS_FIRST,
    };
    d.ipcache.insert(SERVER.into(), server_remote);
    d.ipcache.insert(SERVER6.into(), server_remote);
    for k in 0..OTHER_ENDPOINTS {
        let ip = Ipv4Addr::new(10, 0, 2, k as u8 + 1);
        d.endpoints.insert(
            ObjectRef::new("bench", format!("pod{k}")),
            ep(k + 2, ip, SERVER_IDENTITY),
        );
    }
    for i in 0..size.policy {
        let (group, m) = (i % 4, i / 4);
        let ep_id = if group < 2 {
            1
        } else {
            2 + (m as u32 % OTHER_ENDPOINTS)
        };
        let dir = if group % 2 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let port = RULE_PORT_BASE + (m / size.ipcache) as u16;
        d.rules.insert(
            RuleKey {
                ep_id,
                dir,
                identity: remote_identity(m % size.ipcache),
                ports: PortMatch {
                    proto: Some(Protocol::Tcp),
                    ports: Some(PortRange {
                        start: port,
                        end: port,
                    }),
                },
            },
            RuleValue::allow(i as u32 + 1),
        );
    }
    d
}

/// The target of a tiered new flow against the same flow without ClusterNetworkPolicies
/// (issue 14).
pub const TIERED_TARGET: f64 = 1.2;

/// [`desired`] with the pod under test selected, in both directions, by ClusterNetworkPolicies
/// of both tiers, as 100 of them with namespace and network peers leave it: an entry per
/// remote namespace (50; an Admin Pass and a Baseline Deny of TCP 25) and address sets
/// (0.0.0.0/0: an Admin Deny of TCP 25; 10.0.0.0/8: an Admin Pass; 169.254.169.254/32: an
/// Admin Deny); every verdict stays what NetworkPolicy alone says (the Admin rules pass the
/// remotes on to it). As the compiler does (`policy::compile`, `EndpointOut::fold`), each
/// remote identity's entries also hold what its namespace's and its address set's say
/// (`includes`), with an any-protocol entry of their own, so that a new flow from a
/// remote some rule names takes one lookup; `fold: false` leaves that out (every new flow
/// takes the identity, namespace and address-set lookups).
pub fn desired_tiered(size: Size, fold: bool) -> Desired {
    use cns_agent::policy::{
        cluster::Action,
        model::{CidrKey, TierRule},
    };
    use cns_common::{IDENTITY_CIDR_BASE, IDENTITY_NAMESPACE_BASE};
    let mut d = desired(size);
    if let Some(ep) = d.endpoints.get_mut(&ObjectRef::new("bench", "server")) {
        ep.ingress_tiered = true;
        ep.egress_tiered = true;
    }
    let tier = |rank, action| Some(TierRule { rank, action });
    let admin = |rank, action| RuleValue {
        admin: tier(rank, action),
        ..RuleValue::default()
    };
    let any = PortMatch {
        proto: None,
        ports: None,
    };
    let smtp = PortMatch {
        proto: Some(Protocol::Tcp),
        ports: Some(PortRange { start: 25, end: 25 }),
    };
    for dir in [Direction::Ingress, Direction::Egress] {
        let key = |identity, ports| RuleKey {
            ep_id: 1,
            dir,
            identity,
            ports,
        };
        for n in 0..50u32 {
            let ns = IDENTITY_NAMESPACE_BASE | (u32::from(NS_FIRST) + n);
            d.rules.insert(key(ns, any), admin(100 + n, Action::Pass));
            let both = RuleValue {
                baseline: tier(n, Action::Deny),
                ..admin(100 + n, Action::Pass)
            };
            d.rules.insert(key(ns, smtp), both);
        }
        for (i, (net, value, ports)) in [
            ("0.0.0.0/0", admin(200, Action::Deny), smtp),
            ("10.0.0.0/8", admin(50, Action::Pass), any),
            ("169.254.169.254/32", admin(10, Action::Deny), any),
        ]
        .into_iter()
        .enumerate()
        {
            let set = IDENTITY_CIDR_BASE + i as u32;
            let cidr = CidrKey {
                ep_id: 1,
                dir,
                net: net.parse().expect("network"),
            };
            d.cidrs.insert(cidr, set);
            d.rules.insert(key(set, ports), value);
        }
    }
    if fold {
        // A remote pod (10.128.0.0/16) falls in 10.0.0.0/8's set: its namespace's Pass
        // (rank 100 + n) and the set's (rank 50) fold into an Admin Pass of rank 50.
        use cns_common::maps::{INCLUDES_ADDRESS, INCLUDES_NAMESPACE};
        let folded = RuleValue {
            includes: INCLUDES_NAMESPACE | INCLUDES_ADDRESS,
            ..admin(50, Action::Pass)
        };
        let identity_rules: Vec<RuleKey> = d
            .rules
            .keys()
            .filter(|k| k.ep_id == 1 && k.identity < IDENTITY_NAMESPACE_BASE)
            .copied()
            .collect();
        for k in identity_rules {
            if let Some(v) = d.rules.get_mut(&k) {
                *v = v.merge(folded);
            }
            d.rules.insert(RuleKey { ports: any, ..k }, folded);
        }
    }
    d
}

/// The target of a new flow to a pod with dry-run policies against the same flow without
/// them (issue 15: "a new flow to a pod with dry-run policies costs within 1.1x of one
/// without").
pub const DRY_RUN_TARGET: f64 = 1.1;

/// The dry-run ClusterNetworkPolicy of [`desired_dry_run`]: its name and its priority.
const DRY_RUN_POLICY: &str = "deny-legacy";
const DRY_RUN_PRIORITY: u32 = 10;

/// Its rule's rank (the first rule of each direction of the only policy of its priority),
/// numbered as `policy::tiers::ranked` does.
const DRY_RUN_RANK: u32 = DRY_RUN_PRIORITY << 16;

/// Whether the dry-run policy of [`desired_dry_run`] would drop what the rules allow from
/// (or to) remote `r` on port 1024: every other remote, the odd ones.
fn would_drop_remote(r: usize) -> bool {
    r % 2 == 1
}

/// How many remotes [`Case::WouldDrop`]'s flows come from: the odd ones below both the IP
/// cache's remotes and endpoint 1's rule count per direction (remote `r` of those has rule
/// `m = r`, on port 1024).
fn would_drop_remotes(size: Size) -> usize {
    (size.ipcache.min(ep1_rules(size)) / 2).max(1)
}

/// [`desired`] with a dry-run policy (issue 15: annotated `cns.io/policy-audit-mode:
/// "true"`) that tightens the pod under test: the Admin ClusterNetworkPolicy `deny-legacy`
/// (priority 10, selecting the server), one rule per direction that would deny TCP port
/// 1024 from (ingress) and to (egress) every other remote the enforced rules allow (the odd
/// ones, as if those pods carried a `legacy` label). A tightening is a ClusterNetworkPolicy
/// Deny: NetworkPolicies only add allows, so a dry-run NetworkPolicy can widen what a pod
/// already isolated admits but not narrow it. Enforcement is unchanged: the entries' enforced
/// view is [`desired`]'s, and the pod is isolated by NetworkPolicy as there; it is `dry_run`
/// and would be isolated in both directions, so TC takes the tiered lookups for it and
/// resolves both views of each entry (`decide::<_, true>`). As the compiler writes it
/// (`policy::compile`): the Deny is in the would-be view only (`RuleValue::dry_run`), merged
/// into the remote's entry for TCP 1024, which every allowed remote has (remote `r` has rule
/// `m = r` on port 1024), so the map holds the same keys as [`desired`]'s; every entry of the
/// pod by remote identity includes its namespace's and address set's (there are none:
/// `EndpointOut::fold` on an endpoint with dry-run policies); the rule, the cause of a
/// difference and the policy are named (`cluster_rules`, `dry_run_causes`,
/// `dry_run_policies`: `CNS_DRY_RUN_CAUSES` maps the cause to the policy's hash).
///
/// So the flows of [`variants`]: unchanged by the dry-run policy, established flows
/// (conntrack), new denied ones (port 9: denied in both views) and new allowed ones from an
/// even remote or on another port (the repeated key: remote 0); and new allowed flows from
/// an odd remote on port 1024 ([`Case::WouldDrop`], and about half of new allowed's random
/// keys where every rule of endpoint 1 is on port 1024, i.e. policy entries <= 4 x ipcache
/// entries), which pass but would be dropped: each one counts a dry-run counter and emits an
/// audit event (within the event rate limit of the case's `Config`).
pub fn desired_dry_run(size: Size) -> Desired {
    use cns_agent::policy::{
        cluster::{Action, Tier},
        model::{ClusterRuleName, DryRunCause, TierRule},
    };
    use cns_common::maps::{INCLUDES_ADDRESS, INCLUDES_NAMESPACE, RULE_ADMIN};
    let mut d = desired(size);
    if let Some(ep) = d.endpoints.get_mut(&ObjectRef::new("bench", "server")) {
        ep.dry_run = true;
        ep.ingress_would_isolate = true;
        ep.egress_would_isolate = true;
    }
    let deny = RuleValue {
        admin: Some(TierRule {
            rank: DRY_RUN_RANK,
            action: Action::Deny,
        }),
        ..RuleValue::default()
    }
    .dry_run();
    let port = PortMatch {
        proto: Some(Protocol::Tcp),
        ports: Some(PortRange {
            start: RULE_PORT_BASE,
            end: RULE_PORT_BASE,
        }),
    };
    for (k, v) in d.rules.iter_mut().filter(|(k, _)| k.ep_id == 1) {
        v.includes = INCLUDES_NAMESPACE | INCLUDES_ADDRESS;
        let remote = k.identity.checked_sub(remote_identity(0));
        if k.ports == port && remote.is_some_and(|r| would_drop_remote(r as usize)) {
            *v = v.merge(deny);
        }
    }
    let policy: std::sync::Arc<str> =
        cns_agent::policy::mode::cluster_policy_name(DRY_RUN_POLICY).into();
    let id = RULE_ADMIN | DRY_RUN_RANK;
    for (dir, rule) in [
        (Direction::Ingress, "from-legacy"),
        (Direction::Egress, "to-legacy"),
    ] {
        d.cluster_rules.insert(
            (dir, id),
            ClusterRuleName {
                policy: DRY_RUN_POLICY.into(),
                tier: Tier::Admin,
                priority: DRY_RUN_PRIORITY as i32,
                rule: rule.into(),
                action: Action::Deny,
            },
        );
    }
    d.dry_run_causes
        .insert(DryRunCause::Rule(id), policy.clone());
    d.dry_run_policies.insert(policy);
    d
}

fn load(size: Size) -> anyhow::Result<(Loaded, MapContents)> {
    let (loaded, contents) = load_desired(desired(size))?;
    anyhow::ensure!(
        contents.policy.len() == size.policy,
        "synthetic rules gave {} policy entries, wanted {}",
        contents.policy.len(),
        size.policy
    );
    Ok((loaded, contents))
}

fn load_desired(desired: Desired) -> anyhow::Result<(Loaded, MapContents)> {
    let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("cns-bench-"));
    cns_agent::paths::prepare_pin_dir(&pin_dir)?;
    let dp = Datapath::load(&pin_dir)?;
    let mut loaded = Loaded { dp, pin_dir };
    let (ops, contents) = plan(&desired);
    let failed = reconcile::apply(&mut loaded.dp, &ops);
    if let Some(f) = failed.first() {
        anyhow::bail!(
            "{} of {} map writes failed, first: {f}",
            failed.len(),
            ops.len()
        );
    }
    Ok((loaded, contents))
}

/// The agent's plan for `desired` on a cold start (every write against empty maps), and
/// the maps' contents it intends.
fn plan(desired: &Desired) -> (Vec<reconcile::MapOp>, MapContents) {
    let mut ifindexes = BTreeMap::from([(ObjectRef::new("bench", "server"), 1)]);
    for k in 0..OTHER_ENDPOINTS {
        ifindexes.insert(ObjectRef::new("bench", format!("pod{k}")), 1000 + k);
    }
    // As the agent plans a cold sync: everything against empty maps.
    let mut planner = Planner::default();
    let ops = planner
        .plan(
            desired,
            &ifindexes,
            &MapContents::default(),
            None,
            Scope::WHOLE,
        )
        .ops;
    (ops, planner.intended().clone())
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A 64-byte Ethernet + IPv4 + TCP frame.
pub fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let payload = 10usize;
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend(std::iter::repeat_n(0u8, payload));
    p
}

/// An 84-byte Ethernet + IPv6 + TCP frame (the test packets' builders, 10 bytes of payload as
/// [`tcp_frame`]).
pub fn tcp_frame6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = crate::packets::tcp(sport, dport, flags);
    l4.extend([0u8; 10]);
    crate::packets::ipv6(src.octets(), dst.octets(), &[], crate::packets::TCP, &l4)
}

/// A TCP frame between `src` and `dst` (both of one family).
fn frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp_frame6(s, d, sport, dport, flags),
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp_frame(s, d, sport, dport, flags),
        _ => unreachable!("one family per frame"),
    }
}

/// The packets of one (program, case): a (remote index, remote port) flow seen by
/// `program`, over IPv6 (`v6`) or IPv4, from a source port unique to the case so that
/// cases never share a conntrack entry.
fn packet(program: &str, case: Case, remote: usize, port: u16, sport: u16, v6: bool) -> Vec<u8> {
    let flags = if case == Case::Established {
        TCP_ACK
    } else {
        TCP_SYN
    };
    let (server, remote): (IpAddr, IpAddr) = if v6 {
        (SERVER6.into(), remote_ip6(remote).into())
    } else {
        (SERVER.into(), remote_ip(remote).into())
    };
    if program == PROG_FROM_POD {
        frame(server, remote, sport, port, flags)
    } else {
        frame(remote, server, sport, port, flags)
    }
}

/// Only established flows have conntrack entries (new-flow cases run with conntrack
/// creation off), so only they need source ports of their own.
fn case_sport(program: &str, case: Case) -> u16 {
    match (case, program == PROG_FROM_POD) {
        (Case::Established, false) => 40000,
        (Case::Established, true) => 50000,
        _ => 20000,
    }
}

/// Endpoint 1's rules: the `k`-th allowed (remote, port) in either direction.
fn allowed_flow(size: Size, k: usize) -> (usize, u16) {
    (k % size.ipcache, RULE_PORT_BASE + (k / size.ipcache) as u16)
}

/// Endpoint 1's rule count per direction.
fn ep1_rules(size: Size) -> usize {
    (size.policy / 4).max(1)
}

struct Variant {
    program: &'static str,
    case: Case,
    /// IPv6 packets.
    v6: bool,
    /// The datapath it runs on.
    policies: Policies,
    /// A floor's variant: the cns program whose packets it runs.
    of: Option<&'static str>,
    /// Repeated: one packet. Random: many.
    repeated: Vec<u8>,
    random: Vec<Vec<u8>>,
}

fn variants(size: Size, random_flows: usize, rng: &mut Rng) -> Vec<Variant> {
    let mut out = vec![Variant {
        program: PROG_EMPTY,
        case: Case::Empty,
        v6: false,
        policies: Policies::NetworkPolicy,
        of: None,
        repeated: packet(PROG_TO_POD, Case::Empty, 0, RULE_PORT_BASE, 1, false),
        random: (0..random_flows)
            .map(|i| packet(PROG_TO_POD, Case::Empty, i % size.ipcache, 80, 1, false))
            .collect(),
    }];
    // IPv4's every case (and the flows the dry-run policy would drop, here new allowed
    // flows), then IPv6's (its source ports apart, so no conntrack entry is shared; the
    // families have separate conntrack maps anyway).
    let v4_cases: Vec<Case> = Case::ALL[1..]
        .iter()
        .copied()
        .chain([Case::WouldDrop])
        .collect();
    let tc_cases = [(false, &v4_cases[..]), (true, &Case::IPV6[..])];
    for (v6, cases) in tc_cases {
        for program in [PROG_TO_POD, PROG_FROM_POD] {
            for case in cases {
                let case = *case;
                let sport = case_sport(program, case);
                let flow = |k: usize, rng: &mut Rng| -> (usize, u16) {
                    match case {
                        Case::NewDenied | Case::AuditDrop => {
                            (rng.below(size.ipcache as u64) as usize, DENIED_PORT)
                        }
                        // The odd remotes' rules `m = r` on port 1024 (`k = 0`: remote 1).
                        Case::WouldDrop => {
                            let r = 2 * (k % would_drop_remotes(size)) + 1;
                            debug_assert!(would_drop_remote(r));
                            allowed_flow(size, r)
                        }
                        _ => allowed_flow(size, k),
                    }
                };
                let (r0, p0) = flow(0, rng);
                let repeated = packet(program, case, r0, p0, sport, v6);
                let random = (0..random_flows)
                    .map(|i| {
                        let k = rng.below(ep1_rules(size) as u64) as usize;
                        let (r, p) = flow(k, rng);
                        packet(program, case, r, p, sport.wrapping_add(1 + i as u16), v6)
                    })
                    .collect();
                out.push(Variant {
                    program,
                    case,
                    v6,
                    policies: Policies::NetworkPolicy,
                    of: None,
                    repeated,
                    random,
                });
            }
        }
    }
    // XDP: the empty program on the TC floor's packets, `cns_xdp` on `cns_to_pod`'s.
    let empty = out[0].clone_as(XDP_EMPTY);
    out.push(empty);
    let xdp_cases = Case::XDP
        .iter()
        .map(|c| (false, *c))
        .chain([(true, Case::NewDenied), (true, Case::DeniedFlood)]);
    for (v6, case) in xdp_cases {
        let twin = if case == Case::DeniedFlood {
            Case::NewDenied
        } else {
            case
        };
        let v = match out
            .iter()
            .find(|v| v.program == PROG_TO_POD && v.case == twin && v.v6 == v6)
        {
            Some(tc) => Variant {
                case,
                ..tc.clone_as(PROG_XDP)
            },
            None => {
                // Not for a local pod: between two remote pods.
                let pkt = |r: usize, sport: u16| {
                    tcp_frame(
                        remote_ip(r),
                        remote_ip((r + 1) % size.ipcache),
                        sport,
                        RULE_PORT_BASE,
                        TCP_SYN,
                    )
                };
                Variant {
                    program: PROG_XDP,
                    case,
                    v6,
                    policies: Policies::NetworkPolicy,
                    of: None,
                    repeated: pkt(0, 30000),
                    random: (0..random_flows)
                        .map(|i| {
                            pkt(
                                rng.below(size.ipcache as u64) as usize,
                                30000u16.wrapping_add(i as u16),
                            )
                        })
                        .collect(),
                }
            }
        };
        out.push(v);
    }
    // The TC cases on the other datapaths, on the same packets as without (IPv4).
    for (policies, cases) in [
        (Policies::Cluster, &Case::TIERED[..]),
        (Policies::DryRun, &Case::DRY_RUN[..]),
    ] {
        let on: Vec<Variant> = out
            .iter()
            .filter(|v| {
                matches!(v.program, PROG_TO_POD | PROG_FROM_POD)
                    && !v.v6
                    && v.policies == Policies::NetworkPolicy
                    && cases.contains(&v.case)
            })
            .map(|v| Variant {
                policies,
                ..v.clone_as(v.program)
            })
            .collect();
        out.extend(on);
    }
    // Each path with a reference floor is followed by its floor on the same packets, so the
    // two run back to back in every trial.
    let mut with_floors = Vec::with_capacity(out.len() * 2);
    for v in out {
        let floor = floor_of(v.program, v.case)
            .filter(|_| !v.v6 && v.policies == Policies::NetworkPolicy)
            .map(|f| Variant {
                of: Some(v.program),
                ..v.clone_as(f)
            });
        with_floors.push(v);
        with_floors.extend(floor);
    }
    with_floors
}

impl Variant {
    fn clone_as(&self, program: &'static str) -> Variant {
        Variant {
            program,
            case: self.case,
            v6: self.v6,
            policies: self.policies,
            of: self.of,
            repeated: self.repeated.clone(),
            random: self.random.clone(),
        }
    }
}

/// Entries of both conntrack maps.
fn conntrack_entries(pin_dir: &std::path::Path) -> anyhow::Result<usize> {
    use aya::maps::{HashMap, Map, MapData};
    use cns_common::maps::{CONNTRACK, CONNTRACK6, CtEntry, CtKey, CtKey6};
    let open =
        |name| MapData::from_pin(cns_agent::paths::pinned_map(pin_dir, name)).map(Map::LruHashMap);
    let v4: HashMap<MapData, CtKey, CtEntry> = HashMap::try_from(open(CONNTRACK)?)?;
    let v6: HashMap<MapData, CtKey6, CtEntry> = HashMap::try_from(open(CONNTRACK6)?)?;
    Ok(v4.keys().filter(Result::is_ok).count() + v6.keys().filter(Result::is_ok).count())
}

/// The programs under test: the agent's, the bench's empty XDP program and the floors.
struct Programs<'a> {
    dp: &'a Datapath,
    /// The datapath of [`desired_tiered`].
    tiered: &'a Datapath,
    /// The datapath of [`desired_dry_run`].
    dry_run: &'a Datapath,
    xdp_empty: &'a RawXdp,
    floors: &'a Floors,
}

impl Programs<'_> {
    fn run_once(&self, v: &Variant, pkt: &[u8], repeat: u32) -> anyhow::Result<(i32, Duration)> {
        let program = v.program;
        let other = match v.policies {
            Policies::NetworkPolicy => None,
            Policies::Cluster => Some(self.tiered),
            Policies::DryRun => Some(self.dry_run),
        };
        if let Some(dp) = other {
            return dp
                .test_run_repeat(program, pkt, repeat)
                .map_err(|e| anyhow::anyhow!("test run of {program} ({}): {e}", v.policies.key()));
        }
        if program == XDP_EMPTY {
            return self
                .xdp_empty
                .test_run(pkt, repeat)
                .map(|(verdict, d)| (verdict as i32, d))
                .map_err(|e| anyhow::anyhow!("test run of {program}: {e}"));
        }
        if matches!(
            program,
            FLOOR_ESTABLISHED | FLOOR_NEW | FLOOR_NEW_EGRESS | FLOOR_XDP_DROP
        ) {
            return self.floors.test_run(program, pkt, repeat);
        }
        self.dp
            .test_run_repeat(program, pkt, repeat)
            .map_err(|e| anyhow::anyhow!("test run of {program}: {e}"))
    }
}

/// Measures every size; `progress` is told what is going on.
pub fn run(params: &Params, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Measure>> {
    let xdp_empty = RawXdp::constant("cns_bench_empty", super::rawbpf::XDP_PASS)
        .map_err(|e| anyhow::anyhow!("load the empty XDP program: {e}"))?;
    let mut out = Vec::new();
    for (si, &size) in params.sizes.iter().enumerate() {
        let t0 = Instant::now();
        let (loaded, contents) = load(size)?;
        // One datapath per `Policies`, in its order.
        let mut dps = [
            loaded,
            load_desired(desired_tiered(size, true))?.0,
            load_desired(desired_dry_run(size))?.0,
        ];
        let mut rng = Rng::new(0x5eed + si as u64);
        let variants = variants(size, params.random_flows, &mut rng);
        let floors = fill_floors(&contents, &variants)?;
        // Established flows: one packet through each TC program (conntrack on) creates the
        // entries; `cns_xdp` then runs on `cns_to_pod`'s packets and finds them.
        let tc_established = || {
            variants.iter().filter(|v| {
                v.case == Case::Established && matches!(v.program, PROG_TO_POD | PROG_FROM_POD)
            })
        };
        for l in &mut dps {
            l.dp.set_config(&Case::Established.config())?;
        }
        for v in tc_established() {
            let dp = &dps[v.policies as usize].dp;
            for pkt in std::iter::once(&v.repeated).chain(&v.random) {
                let (verdict, _) = dp.test_run_repeat(v.program, pkt, 1)?;
                anyhow::ensure!(
                    verdict == PASS,
                    "{} established warm-up: verdict {verdict}",
                    v.program
                );
            }
        }
        // Sanity: every established flow has its two conntrack entries (so the established
        // case really takes the fast path).
        let want = tc_established()
            .filter(|v| v.policies == Policies::NetworkPolicy)
            .map(|v| 2 * (1 + v.random.len()))
            .sum::<usize>();
        let have = conntrack_entries(&dps[Policies::NetworkPolicy as usize].pin_dir)?;
        anyhow::ensure!(
            have == want,
            "conntrack holds {have} entries after the warm-up, expected {want}"
        );
        // Sanity: on the dry-run datapath, a new flow the dry-run policy would drop counts
        // one difference and the others none (so its rows measure what they say).
        let dry_run = &mut dps[Policies::DryRun as usize].dp;
        for v in variants
            .iter()
            .filter(|v| v.policies == Policies::DryRun && v.case != Case::Established)
        {
            dry_run.set_config(&v.case.config())?;
            let before = dry_run_differences(dry_run)?;
            let (verdict, _) = dry_run.test_run_repeat(v.program, &v.repeated, 1)?;
            let counted = dry_run_differences(dry_run)? - before;
            let want = u64::from(v.case == Case::WouldDrop);
            anyhow::ensure!(
                v.case.expected(v.program) == Some(verdict) && counted == want,
                "{} {} with dry-run policies: verdict {verdict}, {counted} dry-run differences counted, expected {:?} and {want}",
                v.program,
                v.case.name(),
                v.case.expected(v.program),
            );
        }
        progress(&format!(
            "kernel: {} policy entries, {} ipcache entries: loaded and filled in {:.1}s",
            size.policy,
            size.ipcache,
            t0.elapsed().as_secs_f64()
        ));
        // ns[variant][keys] per trial.
        let mut ns: Vec<[Vec<f64>; 2]> = variants.iter().map(|_| [vec![], vec![]]).collect();
        for _trial in 0..params.trials {
            for (vi, v) in variants.iter().enumerate() {
                dps[v.policies as usize].dp.set_config(&v.case.config())?;
                if v.case != Case::DeniedFlood {
                    // Every other row outside a flood (the deny cache read last).
                    dps[v.policies as usize].dp.clear_xdp_flood()?;
                }
                let progs = Programs {
                    dp: &dps[Policies::NetworkPolicy as usize].dp,
                    tiered: &dps[Policies::Cluster as usize].dp,
                    dry_run: &dps[Policies::DryRun as usize].dp,
                    xdp_empty: &xdp_empty,
                    floors: &floors,
                };
                let expected = v.case.expected(v.program);
                let (verdict, d) = progs.run_once(v, &v.repeated, params.repeat)?;
                anyhow::ensure!(
                    expected.is_none_or(|e| e == verdict),
                    "{} {}: verdict {verdict}, expected {expected:?}",
                    v.program,
                    v.case.name(),
                );
                ns[vi][0].push(d.as_nanos() as f64);
                let mut total = 0u128;
                for pkt in &v.random {
                    let (verdict, d) = progs.run_once(v, pkt, 1)?;
                    anyhow::ensure!(
                        expected.is_none_or(|e| e == verdict),
                        "{} {} (random keys): verdict {verdict}, expected {expected:?}",
                        v.program,
                        v.case.name()
                    );
                    total += d.as_nanos();
                }
                ns[vi][1].push(total as f64 / v.random.len() as f64);
            }
        }
        let index_in = |program: &str, case: Case, v6: bool| {
            variants.iter().position(|v| {
                v.program == program
                    && v.case == case
                    && v.of.is_none()
                    && v.v6 == v6
                    && v.policies == Policies::NetworkPolicy
            })
        };
        let index = |program: &str, case: Case| index_in(program, case, false);
        let floor_index = |program: &str, case: Case| {
            let floor = floor_of(program, case)?;
            variants
                .iter()
                .position(|v| v.program == floor && v.case == case && v.of == Some(program))
        };
        let per_trial = |vi: usize, base: usize, ki: usize| {
            let r: Vec<f64> = ns[vi][ki]
                .iter()
                .zip(&ns[base][ki])
                .map(|(x, b)| x / b)
                .collect();
            Summary::of(&r)
        };
        for (vi, v) in variants.iter().enumerate() {
            let xdp = v.program == PROG_XDP || v.program == XDP_EMPTY;
            let floor = if xdp || v.program == FLOOR_XDP_DROP {
                index(XDP_EMPTY, Case::Empty)
            } else {
                index(PROG_EMPTY, Case::Empty)
            }
            .expect("the floors are variants");
            let tc_twin = match v.program {
                PROG_XDP if v.case == Case::DeniedFlood => {
                    index_in(PROG_TO_POD, Case::NewDenied, v.v6)
                }
                PROG_XDP => index_in(PROG_TO_POD, v.case, v.v6),
                XDP_EMPTY => index(PROG_EMPTY, Case::Empty),
                _ => None,
            };
            for (ki, keys) in [Keys::Repeated, Keys::Random].into_iter().enumerate() {
                out.push(Measure {
                    size,
                    program: v.program,
                    case: v.case,
                    keys,
                    ns: Summary::of(&ns[vi][ki]),
                    ratio: per_trial(vi, floor, ki),
                    vs_tc: tc_twin.map(|t| per_trial(vi, t, ki)),
                    of: v.of,
                    vs_floor: floor_index(v.program, v.case)
                        .filter(|_| {
                            v.of.is_none() && !v.v6 && v.policies == Policies::NetworkPolicy
                        })
                        .map(|fi| (variants[fi].program, per_trial(vi, fi, ki))),
                    v6: v.v6,
                    vs_v4: index(v.program, v.case)
                        .filter(|_| v.v6)
                        .map(|i4| per_trial(vi, i4, ki)),
                    policies: v.policies,
                    vs_np: index(v.program, v.case)
                        .filter(|_| v.policies != Policies::NetworkPolicy)
                        .map(|np| per_trial(vi, np, ki)),
                });
            }
        }
        let find = |program: &str, case: Case| {
            out.iter().rev().find(|m| {
                m.program == program
                    && m.case == case
                    && m.keys == Keys::Repeated
                    && !m.v6
                    && m.policies == Policies::NetworkPolicy
            })
        };
        let vs_np = |policies: Policies, program: &str, case: Case| {
            out.iter()
                .rev()
                .find(|m| {
                    m.program == program
                        && m.case == case
                        && m.keys == Keys::Repeated
                        && m.policies == policies
                })
                .and_then(|m| m.vs_np)
                .map_or(0.0, |s| s.median)
        };
        let tiered = |case| vs_np(Policies::Cluster, PROG_TO_POD, case);
        progress(&format!(
            "kernel: {} x {} with ClusterNetworkPolicies against without (target <= {TIERED_TARGET}x): to_pod established {:.2}x, new allowed {:.2}x, new denied {:.2}x",
            size.policy,
            size.ipcache,
            tiered(Case::Established),
            tiered(Case::NewAllowed),
            tiered(Case::NewDenied),
        ));
        let dry_run = |program: &str| {
            let r = |case| vs_np(Policies::DryRun, program, case);
            let new = [r(Case::NewAllowed), r(Case::NewDenied)];
            format!(
                "{} established {:.2}x, new allowed {:.2}x, new denied {:.2}x ({}), new allowed the dry run would drop {:.2}x",
                program.trim_start_matches("cns_"),
                r(Case::Established),
                new[0],
                new[1],
                met(new.iter().all(|&x| x <= DRY_RUN_TARGET)),
                r(Case::WouldDrop),
            )
        };
        progress(&format!(
            "kernel: {} x {} with dry-run policies against without (new flows: target <= {DRY_RUN_TARGET}x): {}; {}",
            size.policy,
            size.ipcache,
            dry_run(PROG_TO_POD),
            dry_run(PROG_FROM_POD),
        ));
        let est = find(PROG_TO_POD, Case::Established);
        let vs_floor = |program: &str, case: Case| {
            find(program, case)
                .and_then(|m| m.vs_floor)
                .map_or(0.0, |(_, s)| s.median)
        };
        progress(&format!(
            "kernel: {} x {} against the floors: to_pod established {:.2}x floor_established, new allowed {:.2}x / new denied {:.2}x floor_new; xdp denied flood {:.2}x floor_xdp_drop",
            size.policy,
            size.ipcache,
            vs_floor(PROG_TO_POD, Case::Established),
            vs_floor(PROG_TO_POD, Case::NewAllowed),
            vs_floor(PROG_TO_POD, Case::NewDenied),
            vs_floor(PROG_XDP, Case::DeniedFlood),
        ));
        let xdp_denied = find(PROG_XDP, Case::NewDenied);
        let xdp_flood = find(PROG_XDP, Case::DeniedFlood);
        progress(&format!(
            "kernel: {} x {} done in {:.1}s (to_pod established {:.0} ns, {:.2}x empty; xdp denied {:.0} ns, {:.2}x empty XDP, {:.2}x to_pod; xdp denied flood {:.0} ns, {:.2}x to_pod new denied)",
            size.policy,
            size.ipcache,
            t0.elapsed().as_secs_f64(),
            est.map_or(0.0, |m| m.ns.median),
            est.map_or(0.0, |m| m.ratio.median),
            xdp_denied.map_or(0.0, |m| m.ns.median),
            xdp_denied.map_or(0.0, |m| m.ratio.median),
            xdp_denied.and_then(|m| m.vs_tc).map_or(0.0, |s| s.median),
            xdp_flood.map_or(0.0, |m| m.ns.median),
            xdp_flood.and_then(|m| m.vs_tc).map_or(0.0, |s| s.median),
        ));
        drop(dps);
    }
    Ok(out)
}

/// "met" or "not met".
pub fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}

/// The dry-run differences counted so far (`CNS_DRY_RUN_COUNTERS`, every policy, direction
/// and outcome, summed over CPUs).
fn dry_run_differences(dp: &Datapath) -> anyhow::Result<u64> {
    Ok(dp.dry_run_counters()?.iter().map(|(_, n)| n).sum())
}

/// Loads the floors and writes their maps for this size's flows: the IP cache and the
/// policy as the agent wrote `CNS_IPCACHE` and `CNS_POLICY_EXACT`, a conntrack entry for
/// each established flow `floor_established` runs on, and the source of each denied packet
/// `floor_xdp_drop` runs on (as the deny cache holds the denied flows it has seen).
fn fill_floors(contents: &MapContents, variants: &[Variant]) -> anyhow::Result<Floors> {
    let mut floors = Floors::load()?;
    floors.set_ipcache(&contents.ipcache)?;
    floors.set_policy(&contents.policy_exact)?;
    for v in variants {
        let mut frames = std::iter::once(&v.repeated).chain(&v.random);
        match v.program {
            FLOOR_ESTABLISHED => frames.try_for_each(|f| floors.add_established(f))?,
            FLOOR_XDP_DROP => frames.try_for_each(|f| floors.add_denied_source(f))?,
            _ => {}
        }
    }
    Ok(floors)
}

#[cfg(test)]
mod tests {
    use cns_common::{
        DIR_EGRESS, DIR_INGRESS,
        maps::{
            ACTION_DENY, EP_DRY_RUN, EP_EGRESS_WOULD_ISOLATE, EP_INGRESS_WOULD_ISOLATE, PolicyValue,
        },
    };

    use super::*;

    /// The dry-run datapath's maps hold [`desired`]'s keys with the same enforced view; the
    /// would-be view differs exactly on the odd remotes' entries for TCP 1024, where the
    /// dry-run Admin rule would deny; the pod under test is dry-run and would be isolated.
    #[test]
    fn the_dry_run_policy_changes_only_the_would_be_view_of_half_the_allowed_remotes() {
        for size in [
            Size {
                policy: 10,
                ipcache: 10,
            },
            Size {
                policy: 1000,
                ipcache: 10,
            },
            Size {
                policy: 1000,
                ipcache: 1000,
            },
        ] {
            let (_, plain) = plan(&desired(size));
            let (_, dry) = plan(&desired_dry_run(size));
            assert_eq!(plain.policy.len(), size.policy);
            let keys = |c: &MapContents| c.policy.keys().copied().collect::<Vec<_>>();
            assert_eq!(keys(&plain), keys(&dry));
            let exact = |c: &MapContents| c.policy_exact.keys().copied().collect::<Vec<_>>();
            assert_eq!(exact(&plain), exact(&dry));
            let mut changed = Vec::new();
            for (k, d) in &dry.policy_exact {
                let p = &plain.policy_exact[k];
                // The enforced view is NetworkPolicy's.
                assert_eq!(
                    PolicyValue {
                        includes: p.includes,
                        ..*d
                    }
                    .same_would(),
                    *p,
                    "{k:?}"
                );
                if d.same_would() != *d {
                    let w = d.would();
                    assert_eq!((w.admin, w.admin_action), (DRY_RUN_RANK, ACTION_DENY));
                    changed.push((
                        u32::from_be_bytes(k.ep_id),
                        k.dir,
                        u32::from_be_bytes(k.identity),
                        u16::from_be_bytes(k.port),
                    ));
                }
            }
            assert!(!changed.is_empty());
            for &(ep_id, _, identity, port) in &changed {
                assert_eq!((ep_id, port), (1, RULE_PORT_BASE));
                assert!(would_drop_remote((identity - remote_identity(0)) as usize));
            }
            // Every flow of `Case::WouldDrop` is changed in both directions, the repeated
            // new allowed flow (remote 0) in neither.
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                let has =
                    |r: usize| changed.contains(&(1, dir, remote_identity(r), RULE_PORT_BASE));
                assert!((0..would_drop_remotes(size)).all(|j| has(2 * j + 1)));
                assert!(!has(0));
            }
            let flags = |c: &MapContents| c.endpoints[&1].flags;
            let dry_flags = EP_DRY_RUN | EP_INGRESS_WOULD_ISOLATE | EP_EGRESS_WOULD_ISOLATE;
            assert_eq!(flags(&dry), flags(&plain) | dry_flags);
            assert_eq!(flags(&plain) & dry_flags, 0);
            assert_eq!(dry.dry_run_causes.len(), 1);
            assert!(plain.dry_run_causes.is_empty());
        }
    }
}
