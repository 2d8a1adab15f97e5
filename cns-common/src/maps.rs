//! Every map of the datapath: name, capacity, key and value.
//!
//! **Where the address family matters.** A map keyed by an address comes in two families:
//! `X` for IPv4 (addresses as a network-order `u32`) and `X6` for IPv6 ([`Ip6`], 16
//! network-order bytes): the IP cache, local addresses, ipBlock tries, conntrack, fragments
//! and the deny cache. Everything keyed by endpoint, identity or port (endpoints, policy,
//! counters) is shared by both families: a pod has one identity and one set of rules, and
//! policy never sees an address. Separate maps keep IPv4 keys as small as they were (a
//! 16-byte conntrack key, not 40), so IPv4 costs what it did; the programs are written once,
//! generic over the family (`cns-ebpf`'s `family` module).
//!
//! The `*_CAPACITY` constants are the default sizes of this layout version. The agent can
//! create the maps that grow with the cluster with other sizes (`cns-agent run --map-sizes`,
//! `cns_agent::map_sizes`); a map's size is not part of its layout, and the programs never
//! depend on it, except the counters' slot hash, which reads [`COUNTERS_CAPACITY_GLOBAL`].

#[cfg(feature = "user")]
use bytemuck::{Pod, Zeroable};

/// An IPv6 address as the packet carries it (network order).
pub type Ip6 = [u8; 16];

/// Declares a map key/value type: `#[repr(C)]`, `Copy`, bytemuck on the user side, and its
/// size checked at compile time so both sides agree.
macro_rules! map_type {
    // `align N`: a key the programs copy or write a word at a time. The IPv6 keys are 4-byte
    // aligned so that their 16-byte addresses are copied and compared a word at a time, not
    // in the 2-byte steps their `u16` fields alone allow; the IPv4 conntrack key 8-byte aligned so
    // that it is written as two 8-byte words (`keys`). The bytes, and so the map layout, are
    // the same.
    ($(#[$meta:meta])* pub struct $name:ident align $align:literal { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* } = $size:expr) => {
        $(#[$meta])*
        #[repr(C, align($align))]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "user", derive(Pod, Zeroable))]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        #[cfg(feature = "user")]
        // SAFETY: repr(C), no padding (proved by bytemuck's Pod derive), all bit patterns valid.
        unsafe impl aya::Pod for $name {}
    };
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* } = $size:expr) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "user", derive(Pod, Zeroable))]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        #[cfg(feature = "user")]
        // SAFETY: repr(C), no padding (proved by bytemuck's Pod derive), all bit patterns valid.
        unsafe impl aya::Pod for $name {}
    };
}

/// `Array<u32, Config>` with one entry (index 0): the agent's runtime settings.
pub const CONFIG: &str = "CNS_CONFIG";
map_type! {
    pub struct Config {
        /// 1: audit mode (would-be drops pass with verdict audit); 0: blocking.
        pub audit_mode: u32,
        /// Bumped by the agent after every change to the policy maps; conntrack entries
        /// made under an older revision are re-evaluated against policy.
        pub revision: u32,
        /// Events per second each CPU may emit; 0 disables drop/audit events.
        pub event_rate: u32,
        /// Events a CPU may emit in a burst.
        pub event_burst: u32,
        /// `CONFIG_*` flags.
        pub flags: u32,
        /// The kernel's `CONFIG_HZ`: jiffies per second, the programs' clock (see
        /// [`CtEntry::expires`]). The agent measures it at load; 0 until it writes the config
        /// (conntrack entries then expire at the next jiffy).
        pub hz: u32,
    } = 24
}
/// Benchmarks only: never create conntrack entries, so every packet of a repeated test run
/// takes the slow path (what a new flow costs).
pub const CONFIG_NO_CONNTRACK_CREATE: u32 = 1;
/// Emit a `policy-verdict` event for each new connection a policy rule allows (the agent sets
/// it when `--monitor-event-types` includes `policy-verdict`).
pub const CONFIG_POLICY_VERDICT_EVENTS: u32 = 2;
/// Benchmarks only: the XDP program neither uses nor fills [`DENY_CACHE`], so every denied
/// packet of a repeated test run takes the full decision (what a new denied flow costs).
pub const CONFIG_NO_DENY_CACHE: u32 = 4;

/// `HashMap<u32 ifindex, Endpoint>`: the local pods, by the ifindex of their host-side veth.
pub const ENDPOINTS: &str = "CNS_ENDPOINTS";
pub const ENDPOINTS_CAPACITY: u32 = 4096;
map_type! {
    pub struct Endpoint {
        /// Endpoint id used in policy and CIDR keys.
        pub ep_id: u32,
        /// The pod's IPv4 address (network order); 0 when it has none.
        pub ip: u32,
        pub identity: u32,
        pub ns_id: u16,
        /// `EP_*` flags.
        pub flags: u16,
        /// The pod's IPv6 address; all zero when it has none.
        pub ip6: Ip6,
    } = 32
}
/// `PerCpuArray<u32 slot, EpCache>`: each CPU's copies of the [`ENDPOINTS`] entries it
/// looked up, direct-mapped by `ifindex % EP_CACHE_SLOTS`, each stamped with the ifindex and
/// the policy revision ([`Config::revision`]) read before the lookup. A copy serves only while
/// the revision is unchanged: the agent bumps it after every map change, so a cached
/// endpoint is never older than the hash entry a lookup would have found under that
/// revision. Written by the programs only (each CPU its own copies), never by the agent.
/// Saves a new flow the hash lookup of its endpoint (TC; `cns-ebpf/src/endpoints.rs` says
/// what it relies on).
pub const EP_CACHE: &str = "CNS_EP_CACHE";
pub const EP_CACHE_SLOTS: u32 = 256;
map_type! {
    pub struct EpCache {
        /// The veth's ifindex (0: empty; no interface has ifindex 0).
        pub ifindex: u32,
        pub revision: u32,
        pub ep: Endpoint,
    } = 40
}
pub const EP_INGRESS_ISOLATED: u16 = 1;
pub const EP_EGRESS_ISOLATED: u16 = 2;
/// The endpoint's own audit setting overrides the global one (see `EP_AUDIT_ON`).
pub const EP_AUDIT_OVERRIDE: u16 = 4;
pub const EP_AUDIT_ON: u16 = 8;
/// Some rule of the endpoint has a port range that is not one port or all ports: a policy
/// lookup that misses the exact port in [`POLICY_EXACT`] takes the longest match in the
/// [`POLICY`] trie (a range is more specific than its protocol's and any protocol's entry).
pub const EP_PORT_RANGES: u16 = 16;
/// Some rule of the endpoint allows all ports of a protocol: worth a lookup with port 0.
pub const EP_PROTO_RULES: u16 = 32;
/// Some rule of the endpoint allows any protocol: worth a lookup with protocol 0. (Without
/// these two flags, a packet no rule allows costs one hash lookup per identity, not three.)
pub const EP_ANY_PROTO_RULES: u16 = 64;
/// Some ClusterNetworkPolicy selects the endpoint in this direction: a new flow looks up
/// both its remote's identity and address and [`resolve_merged`]s the tiers, isolated or not.
pub const EP_INGRESS_TIERED: u16 = 128;
pub const EP_EGRESS_TIERED: u16 = 256;
/// The endpoint has entries for whole namespaces (`IDENTITY_NAMESPACE_BASE`) in this
/// direction: a tiered lookup also looks up the remote's namespace.
pub const EP_INGRESS_NAMESPACES: u16 = 512;
pub const EP_EGRESS_NAMESPACES: u16 = 1024;
/// The endpoint has address-set entries ([`CIDRS`]) in this direction: the lookup of the
/// remote's address is worth making.
pub const EP_INGRESS_CIDRS: u16 = 2048;
pub const EP_EGRESS_CIDRS: u16 = 4096;
/// Some dry-run policy applies to the endpoint: new flows in both directions take the
/// tiered lookups and resolve both views of the entries ([`PolicyValue::would`]).
pub const EP_DRY_RUN: u16 = 8192;
/// The endpoint is isolated in this direction in the would-be view (by an enforced or a
/// dry-run NetworkPolicy); the enforced view reads `EP_*_ISOLATED`. (The last free bits.)
pub const EP_INGRESS_WOULD_ISOLATE: u16 = 16384;
pub const EP_EGRESS_WOULD_ISOLATE: u16 = 32768;

/// `HashMap<u32 ip, u32 ifindex>`: the local pods by address (network order), each with the
/// ifindex of its host-side veth, i.e. its key in [`ENDPOINTS`]. Lets the XDP program on the
/// node's uplink find the endpoint a packet is for. Kept by the agent's loader in step with
/// [`ENDPOINTS`] (written on every endpoint upsert/delete, rebuilt when programs are
/// adopted); a stale entry is harmless: the program checks the endpoint's address.
pub const LOCAL_IPS: &str = "CNS_LOCAL_IPS";
pub const LOCAL_IPS_CAPACITY: u32 = ENDPOINTS_CAPACITY;
/// `HashMap<Ip6, u32 ifindex>`: [`LOCAL_IPS`] for IPv6.
pub const LOCAL_IPS6: &str = "CNS_LOCAL_IPS6";

/// `HashMap<u32 ip, Remote>`: every pod IP of the cluster and every address of the node.
pub const IPCACHE: &str = "CNS_IPCACHE";
pub const IPCACHE_CAPACITY: u32 = 65536;
map_type! {
    pub struct Remote {
        pub identity: u32,
        pub ns_id: u16,
        pub _pad: u16,
    } = 8
}

/// `HashMap<Ip6, Remote>`: [`IPCACHE`] for IPv6.
pub const IPCACHE6: &str = "CNS_IPCACHE6";

/// `LpmTrie<CidrKey, u32 identity>`: per endpoint and direction, the ipBlock set an address
/// falls in, as an identity at or above `IDENTITY_CIDR_BASE`.
pub const CIDRS: &str = "CNS_CIDRS";
pub const CIDRS_CAPACITY: u32 = 65536;
map_type! {
    pub struct CidrKey {
        /// Big-endian endpoint id.
        pub ep_id: [u8; 4],
        pub dir: u8,
        pub _pad: [u8; 3],
        /// Network-order address.
        pub addr: [u8; 4],
    } = 12
}
/// Bits of a [`CidrKey`] (and a [`CidrKey6`]) before the address.
pub const CIDR_PREFIX_BASE: u32 = 64;
/// `LpmTrie<CidrKey6, u32 identity>`: [`CIDRS`] for IPv6 (the same identities: an ipBlock
/// set is one identity whichever family its CIDRs are in).
pub const CIDRS6: &str = "CNS_CIDRS6";
map_type! {
    pub struct CidrKey6 {
        /// Big-endian endpoint id.
        pub ep_id: [u8; 4],
        pub dir: u8,
        pub _pad: [u8; 3],
        pub addr: Ip6,
    } = 24
}

/// `LpmTrie<PolicyKey, PolicyValue>`: what each endpoint allows, per direction and remote
/// identity. Prefix lengths: [`POLICY_PREFIX_ANY_PROTO`] (any protocol and port),
/// [`POLICY_PREFIX_PROTO`] (one protocol, any port), `POLICY_PREFIX_PROTO + n` (the first n
/// bits of the port: port ranges become a few prefixes).
pub const POLICY: &str = "CNS_POLICY";
pub const POLICY_CAPACITY: u32 = 262_144;
map_type! {
    pub struct PolicyKey {
        /// Big-endian endpoint id.
        pub ep_id: [u8; 4],
        /// Big-endian remote identity (a pod identity or an ipBlock set identity).
        pub identity: [u8; 4],
        pub dir: u8,
        pub proto: u8,
        /// Big-endian port.
        pub port: [u8; 2],
    } = 12
}
/// `HashMap<PolicyKey, PolicyValue>`: the entries of [`POLICY`] for one port, all ports of a
/// protocol, or any protocol (prefixes [`POLICY_PREFIX_FULL`], [`POLICY_PREFIX_PROTO`],
/// [`POLICY_PREFIX_ANY_PROTO`]; the bits past the prefix are zero), so that most lookups are
/// three hash lookups at most instead of a walk down the trie. Written by the agent's loader
/// with every [`POLICY`] write; port ranges stay in the trie only (see [`EP_PORT_RANGES`]).
pub const POLICY_EXACT: &str = "CNS_POLICY_EXACT";
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
pub const POLICY_PREFIX_PROTO: u32 = 80;
pub const POLICY_PREFIX_FULL: u32 = 96;
map_type! {
    /// What one (endpoint, direction, remote identity, protocol and port) key says in each
    /// tier; [`resolve_merged`] turns the entries found for a packet into its verdict. The agent
    /// resolves overlapping rules at compile time, so the longest match is the whole answer
    /// for its key.
    pub struct PolicyValue {
        /// The NetworkPolicy that allows this (the agent maps it back to a name);
        /// [`NO_POLICY`] when none does.
        pub policy_id: u32,
        /// The first Admin-tier ClusterNetworkPolicy rule that matches, by precedence (lower
        /// first); [`NO_RULE`] when none does.
        pub admin: u32,
        /// The first Baseline-tier rule that matches; [`NO_RULE`] when none does.
        pub baseline: u32,
        /// `ACTION_*` of `admin` and of `baseline`.
        pub admin_action: u8,
        pub baseline_action: u8,
        /// `INCLUDES_*`: what else this entry already holds, so that the lookup it would
        /// take is skipped (an entry of a pod identity that holds what its namespace's and
        /// its address set's entries say).
        pub includes: u8,
        pub _pad: u8,
        /// The same fields with dry-run policies too (`cns.io/policy-audit-mode: "true"` on
        /// the policy): the would-be verdict ([`PolicyValue::would`]). Equal to the enforced
        /// fields wherever no dry-run policy says anything; read only for endpoints with
        /// [`EP_DRY_RUN`].
        pub would_policy_id: u32,
        pub would_admin: u32,
        pub would_baseline: u32,
        pub would_admin_action: u8,
        pub would_baseline_action: u8,
        pub _pad2: [u8; 2],
    } = 32
}
/// The entry holds what the remote's namespace entries say (for its ports).
pub const INCLUDES_NAMESPACE: u8 = 1;
/// The entry holds what the remote's address set entries say (for its ports).
pub const INCLUDES_ADDRESS: u8 = 2;
pub const NO_POLICY: u32 = u32::MAX;
pub const NO_RULE: u32 = u32::MAX;
pub const ACTION_NONE: u8 = 0;
pub const ACTION_ACCEPT: u8 = 1;
pub const ACTION_DENY: u8 = 2;
pub const ACTION_PASS: u8 = 3;
/// A ClusterNetworkPolicy rule as a policy id (events, conntrack entries): the tier bit
/// and the rule's precedence (`RULE_RANK_MASK`); NetworkPolicy ids stay below
/// [`RULE_ADMIN`].
pub const RULE_ADMIN: u32 = 0x8000_0000;
pub const RULE_BASELINE: u32 = 0xC000_0000;
pub const RULE_RANK_MASK: u32 = 0x3FFF_FFFF;

impl PolicyValue {
    /// No rule of any tier: what a key without an entry says.
    pub const EMPTY: PolicyValue = PolicyValue {
        policy_id: NO_POLICY,
        admin: NO_RULE,
        baseline: NO_RULE,
        admin_action: ACTION_NONE,
        baseline_action: ACTION_NONE,
        includes: 0,
        _pad: 0,
        would_policy_id: NO_POLICY,
        would_admin: NO_RULE,
        would_baseline: NO_RULE,
        would_admin_action: ACTION_NONE,
        would_baseline_action: ACTION_NONE,
        _pad2: [0; 2],
    };

    /// Allowed by NetworkPolicy `policy_id`, no ClusterNetworkPolicy rule, in both views.
    pub const fn allow(policy_id: u32) -> PolicyValue {
        PolicyValue {
            policy_id,
            would_policy_id: policy_id,
            ..PolicyValue::EMPTY
        }
    }

    /// The would-be view (dry-run policies too) in the enforced fields, for
    /// [`resolve_merged`].
    #[inline(always)]
    pub fn would(&self) -> PolicyValue {
        PolicyValue {
            policy_id: self.would_policy_id,
            admin: self.would_admin,
            baseline: self.would_baseline,
            admin_action: self.would_admin_action,
            baseline_action: self.would_baseline_action,
            ..PolicyValue::EMPTY
        }
    }

    /// This value with its would-be view equal to its enforced view (no dry-run policy).
    pub const fn same_would(self) -> PolicyValue {
        PolicyValue {
            would_policy_id: self.policy_id,
            would_admin: self.admin,
            would_baseline: self.baseline,
            would_admin_action: self.admin_action,
            would_baseline_action: self.baseline_action,
            ..self
        }
    }
}

/// A packet's verdict from its policy entries, before audit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub allowed: bool,
    /// `REASON_*`.
    pub reason: u8,
    /// The deciding NetworkPolicy or ClusterNetworkPolicy rule (`RULE_*`), or [`NO_POLICY`].
    pub policy_id: u32,
}

impl PolicyValue {
    /// What two entries found for one packet say together: the earlier rule of each tier,
    /// the smaller allowing policy (every field a minimum; "none" is the maximum).
    #[inline(always)]
    pub fn merge(&self, other: &PolicyValue) -> PolicyValue {
        let (admin, admin_action) = if self.admin <= other.admin {
            (self.admin, self.admin_action)
        } else {
            (other.admin, other.admin_action)
        };
        let (baseline, baseline_action) = if self.baseline <= other.baseline {
            (self.baseline, self.baseline_action)
        } else {
            (other.baseline, other.baseline_action)
        };
        let (would_admin, would_admin_action) = if self.would_admin <= other.would_admin {
            (self.would_admin, self.would_admin_action)
        } else {
            (other.would_admin, other.would_admin_action)
        };
        let (would_baseline, would_baseline_action) = if self.would_baseline <= other.would_baseline
        {
            (self.would_baseline, self.would_baseline_action)
        } else {
            (other.would_baseline, other.would_baseline_action)
        };
        PolicyValue {
            policy_id: if self.policy_id <= other.policy_id {
                self.policy_id
            } else {
                other.policy_id
            },
            admin,
            baseline,
            admin_action,
            baseline_action,
            includes: self.includes | other.includes,
            _pad: 0,
            would_policy_id: if self.would_policy_id <= other.would_policy_id {
                self.would_policy_id
            } else {
                other.would_policy_id
            },
            would_admin,
            would_baseline,
            would_admin_action,
            would_baseline_action,
            _pad2: [0; 2],
        }
    }
}

/// A new flow's enforced verdict and its would-be verdict differ (a dry-run policy would
/// change it): [`DRY_RUN_WOULD_DROP`] or [`DRY_RUN_WOULD_ALLOW`], and the key of the
/// dry-run policy that makes the difference in [`DRY_RUN_CAUSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRunDiff {
    pub outcome: u8,
    pub cause: DryRunCause,
    /// The would-be verdict.
    pub would: Resolved,
    /// `Event::dry_run_id`: the cause's rule or policy id, [`NO_POLICY`] for an isolation.
    pub event_id: u32,
}

impl DryRunDiff {
    /// No difference (`outcome` 0): a value with every byte set, for the programs (an
    /// `Option` leaves its payload undefined, which the verifier refuses to copy).
    pub const NONE: DryRunDiff = DryRunDiff {
        outcome: 0,
        cause: DryRunCause {
            kind: 0,
            dir: 0,
            _pad: [0; 2],
            id: 0,
        },
        would: Resolved {
            allowed: true,
            reason: 0,
            policy_id: NO_POLICY,
        },
        event_id: 0,
    };
}

/// Which dry-run policy makes the would-be verdict differ, from what the entries said in
/// both views (`e`: enforced, `w`: would-be, both [`PolicyValue::would`]-shaped) and the
/// endpoint's isolation in both: the first rule of the would-be view's tier walk that the
/// enforced view does not have. `ep_id` and `dir` name an isolation by dry-run
/// NetworkPolicies (the agent keeps which).
#[inline(always)]
pub fn dry_run_diff(
    isolated: bool,
    would_isolate: bool,
    v: &PolicyValue,
    enforced: &Resolved,
    would: &Resolved,
    ep_id: u32,
    dir: u8,
) -> Option<DryRunDiff> {
    if enforced.allowed == would.allowed {
        return None;
    }
    let outcome = if would.allowed {
        DRY_RUN_WOULD_ALLOW
    } else {
        DRY_RUN_WOULD_DROP
    };
    let rule = |id: u32| DryRunCause {
        kind: DRY_RUN_CAUSE_RULE,
        dir: 0,
        _pad: [0; 2],
        id,
    };
    // The would-be view's first Admin rule is a dry-run one that decides, or a dry-run Pass
    // over an enforced rule that decides; a dry-run Pass where neither view's Admin tier
    // decides changes nothing there.
    let decides = |action: u8| action == ACTION_ACCEPT || action == ACTION_DENY;
    let cause =
        if v.would_admin != v.admin && (decides(v.would_admin_action) || decides(v.admin_action)) {
            rule(RULE_ADMIN | (v.would_admin & RULE_RANK_MASK))
        } else if would_isolate && !isolated && !would.allowed {
            DryRunCause {
                kind: DRY_RUN_CAUSE_ISOLATION,
                dir,
                _pad: [0; 2],
                id: ep_id,
            }
        } else if would_isolate {
            rule(v.would_policy_id)
        } else {
            rule(RULE_BASELINE | (v.would_baseline & RULE_RANK_MASK))
        };
    Some(DryRunDiff {
        outcome,
        cause,
        would: *would,
        event_id: if cause.kind == DRY_RUN_CAUSE_RULE {
            cause.id
        } else {
            NO_POLICY
        },
    })
}

/// The tiers, in order, for an endpoint's packet and everything its entries say (merged:
/// by identity, namespace and address set): the first Admin rule (Accept or Deny decides,
/// Pass goes on); then NetworkPolicy, which decides when the endpoint is `isolated` in this
/// direction; then the first Baseline rule; then allow.
#[inline(always)]
pub fn resolve_merged(isolated: bool, v: &PolicyValue) -> Resolved {
    let (rank, action) = (v.admin, v.admin_action);
    if action == ACTION_ACCEPT {
        return Resolved {
            allowed: true,
            reason: crate::REASON_POLICY_ALLOWED,
            policy_id: RULE_ADMIN | (rank & RULE_RANK_MASK),
        };
    }
    if action == ACTION_DENY {
        return Resolved {
            allowed: false,
            reason: crate::REASON_ADMIN_DENIED,
            policy_id: RULE_ADMIN | (rank & RULE_RANK_MASK),
        };
    }
    if isolated {
        let id = v.policy_id;
        return Resolved {
            allowed: id != NO_POLICY,
            reason: if id != NO_POLICY {
                crate::REASON_POLICY_ALLOWED
            } else {
                crate::REASON_POLICY_DENIED
            },
            policy_id: id,
        };
    }
    let (rank, action) = (v.baseline, v.baseline_action);
    let policy_id = RULE_BASELINE | (rank & RULE_RANK_MASK);
    if action == ACTION_ACCEPT {
        Resolved {
            allowed: true,
            reason: crate::REASON_POLICY_ALLOWED,
            policy_id,
        }
    } else if action == ACTION_DENY {
        Resolved {
            allowed: false,
            reason: crate::REASON_BASELINE_DENIED,
            policy_id,
        }
    } else {
        Resolved {
            allowed: true,
            reason: crate::REASON_NOT_ISOLATED,
            policy_id: NO_POLICY,
        }
    }
}

/// `LruHashMap<CtKey, CtEntry>`: connection tracking. An allowed flow gets two entries: the
/// original direction (as seen by the endpoint that evaluated it) and the reply direction.
pub const CONNTRACK: &str = "CNS_CONNTRACK";
pub const CONNTRACK_CAPACITY: u32 = 131_072;
map_type! {
    pub struct CtKey align 8 {
        pub saddr: u32,
        pub daddr: u32,
        /// Network-order ports (ICMP: id in sport, 0 in dport).
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        /// Direction of the program that sees packets with this tuple.
        pub dir: u8,
        pub _pad: u16,
    } = 16
}
map_type! {
    pub struct CtEntry {
        /// The jiffy (`bpf_jiffies64`, ticks of [`Config::hz`]) after which the entry is
        /// stale. The programs read jiffies, not a nanosecond clock: the verifier inlines
        /// the read into one load, where `bpf_ktime_get_coarse_ns` is a helper call on every
        /// packet of an established flow.
        pub expires: u64,
        /// `Config::revision` when policy was last evaluated for this flow.
        pub revision: u32,
        pub src_identity: u32,
        pub dst_identity: u32,
        /// Namespace ids of this tuple's source and destination (for the counters).
        pub src_ns: u16,
        pub dst_ns: u16,
        /// `CT_*` flags.
        pub flags: u8,
        /// `VERDICT_FORWARDED` or `VERDICT_AUDIT`.
        pub verdict: u8,
        /// TCP flags seen on this tuple (SYN, FIN, RST bits as in the header).
        pub tcp_flags: u8,
        /// `REASON_*` of an audited flow (the counters' reason label); 0 otherwise.
        pub reason: u8,
        pub policy_id: u32,
        /// This tuple's slot in [`COUNTERS`] (see [`COUNTER_KEYS`]), so an established
        /// packet is counted with one array access: 0 until the first packet that needs it
        /// looks it up (slot 0 is never allocated), [`NO_COUNTER`] when none was free.
        pub counter: u32,
        /// A dry-run policy would drop this flow (it passed: `policy rollout` reports it while
        /// it lives, as enforcing the policy would cut it): its cause as
        /// [`Event::dry_run_id`] says it ([`NO_POLICY`]: the isolation of the endpoint in the
        /// key's direction); 0 for none (policy ids start at 1).
        pub dry_run_drop: u32,
    } = 40
}
/// [`CtEntry::counter`] of a flow whose counter key found no free slot.
pub const NO_COUNTER: u32 = u32::MAX;
/// The entry is the reply direction of a flow: replies skip policy.
pub const CT_REPLY: u8 = 1;
/// `LruHashMap<CtKey6, CtEntry>`: [`CONNTRACK`] for IPv6 (sized with it).
pub const CONNTRACK6: &str = "CNS_CONNTRACK6";
map_type! {
    pub struct CtKey6 align 4 {
        pub saddr: Ip6,
        pub daddr: Ip6,
        /// Network-order ports (ICMPv6 echo: id in both).
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub dir: u8,
        pub _pad: u16,
    } = 40
}

/// `LruHashMap<DenyKey, DenyEntry>`: the XDP program's deny cache. A drop by policy
/// (blocking mode; `REASON_POLICY_DENIED`, `REASON_ADMIN_DENIED` or `REASON_BASELINE_DENIED`,
/// kept with the deciding policy or rule for the event) of a TCP or UDP packet that is not a
/// fragment is remembered by what the decision depends on: source and destination address,
/// protocol and destination port, not the source port (policy never looks at it; floods vary
/// it). A later packet with the same key and no live conntrack entry is dropped on the entry
/// alone while the entry is current: made under the policy revision in force
/// ([`Config::revision`], which the agent bumps after every map change, read before any
/// other map; so the endpoint and its address are unchanged too), and the endpoint does not
/// audit now (its audit flags then, the global mode now). The entry keeps the endpoint's veth
/// for the event. It is counted in the slot the entry carries and reported through the same
/// rate-limited event as a full decision. Never read by TC.
pub const DENY_CACHE: &str = "CNS_DENY_CACHE";
pub const DENY_CACHE_CAPACITY: u32 = 32768;
map_type! {
    pub struct DenyKey {
        /// Network-order addresses and destination port.
        pub saddr: u32,
        pub daddr: u32,
        pub dport: u16,
        pub proto: u8,
        pub _pad: u8,
    } = 12
}
map_type! {
    pub struct DenyEntry {
        /// `Config::revision` read before the decision was made.
        pub revision: u32,
        /// The endpoint the decision was for, and its veth (the `CNS_LOCAL_IPS` value).
        pub ep_id: u32,
        pub ifindex: u32,
        /// The drop's slot in [`COUNTERS`] (never [`NO_COUNTER`]: such drops are not cached).
        pub counter: u32,
        /// For the drop event.
        pub src_identity: u32,
        pub dst_identity: u32,
        pub src_ns: u16,
        pub dst_ns: u16,
        /// The endpoint's audit flags (`EP_AUDIT_OVERRIDE`, `EP_AUDIT_ON`) then: with the
        /// global mode, whether it audits now.
        pub ep_flags: u16,
        /// The drop's reason and the policy or ClusterNetworkPolicy rule (for the event).
        pub reason: u8,
        pub _pad: u8,
        pub policy_id: u32,
    } = 36
}

/// `LruHashMap<DenyKey6, DenyEntry>`: [`DENY_CACHE`] for IPv6 (sized with it).
pub const DENY_CACHE6: &str = "CNS_DENY_CACHE6";
map_type! {
    pub struct DenyKey6 align 4 {
        pub saddr: Ip6,
        pub daddr: Ip6,
        pub dport: u16,
        pub proto: u8,
        pub _pad: u8,
    } = 36
}

/// `LruHashMap<FragKey, FragValue>`: the verdict of a fragmented datagram's first fragment
/// (the only one with ports), which its later fragments inherit.
pub const FRAGMENTS: &str = "CNS_FRAGMENTS";
pub const FRAGMENTS_CAPACITY: u32 = 8192;
map_type! {
    pub struct FragKey {
        pub saddr: u32,
        pub daddr: u32,
        /// The IP identification field (network order).
        pub id: u16,
        pub proto: u8,
        pub dir: u8,
    } = 12
}
map_type! {
    pub struct FragValue {
        pub verdict: u8,
        /// `REASON_*` of an audited datagram; 0 otherwise.
        pub reason: u8,
        pub src_ns: u16,
        pub dst_ns: u16,
        pub _pad2: u16,
    } = 8
}

/// `LruHashMap<FragKey6, FragValue>`: [`FRAGMENTS`] for IPv6 (sized with it).
pub const FRAGMENTS6: &str = "CNS_FRAGMENTS6";
map_type! {
    pub struct FragKey6 align 4 {
        pub saddr: Ip6,
        pub daddr: Ip6,
        /// The Fragment header's identification (network order).
        pub id: u32,
        pub proto: u8,
        pub dir: u8,
        pub _pad: u16,
    } = 40
}

/// `Array<u64>`: the key of each slot of [`COUNTERS`], packed ([`CounterKey::packed`]; 0:
/// free). The datapath allocates a slot the first time it sees a key, on the slow path, and
/// keeps it in the flow's conntrack entry, so established packets are counted with one
/// per-CPU array access. A key's slot is found without a hash lookup: probing from a
/// multiplicative hash of the key ([`CounterKey::probe_start`]), at most [`COUNTER_PROBES`]
/// array reads. A free slot is claimed in [`COUNTER_OWNERS`] (an atomic insert: one CPU
/// wins) and then written here. Slots are never reused: when none is left the packet is
/// not counted and `STAT_COUNTERS_FULL` says so.
pub const COUNTER_KEYS: &str = "CNS_COUNTER_KEYS";
pub const COUNTERS_CAPACITY: u32 = 16384;
map_type! {
    pub struct CounterKey {
        pub src_ns: u16,
        pub dst_ns: u16,
        pub dir: u8,
        pub verdict: u8,
        /// IP protocol number (IPv6: the upper-layer header's; 0 when neither family).
        pub proto: u8,
        /// `REASON_*` of a drop or audit; 0 for forwarded packets.
        pub reason: u8,
    } = 8
}
impl CounterKey {
    /// The key as [`COUNTER_KEYS`] holds it: never 0 (a free slot).
    pub const fn packed(&self) -> u64 {
        (self.src_ns as u64
            | (self.dst_ns as u64) << 16
            | (self.dir as u64) << 32
            | (self.verdict as u64) << 40
            | (self.proto as u64) << 48
            | (self.reason as u64) << 56)
            + 1
    }

    /// Where the probing for this key's slot starts, in `0..n`: a multiplicative hash
    /// reduced by multiplying, not dividing.
    pub const fn probe_start(packed: u64, n: u32) -> u32 {
        let h = (packed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        ((h as u64 * n as u64) >> 32) as u32
    }
}

/// The programs' read-only global (`.rodata`, set by the agent at load) holding the size of
/// the counters maps ([`COUNTERS_CAPACITY`] unless configured): slots are `1..size`.
pub const COUNTERS_CAPACITY_GLOBAL: &str = "CNS_COUNTERS_CAPACITY";
/// `PerCpuArray<u32 slot, Counter>`: packets and bytes per [`COUNTER_OWNERS`] key.
pub const COUNTERS: &str = "CNS_COUNTERS";
map_type! {
    pub struct Counter {
        pub packets: u64,
        pub bytes: u64,
    } = 16
}
/// `HashMap<u32 slot, CounterKey>`: who owns each slot of [`COUNTERS`] (what the agent
/// reads). A slot is claimed by inserting it here with `BPF_NOEXIST` (atomic: one CPU
/// wins), then [`COUNTER_KEYS`] caches it for the lookups. Slot 0 is never used (a
/// conntrack entry's "not looked up yet").
pub const COUNTER_OWNERS: &str = "CNS_COUNTER_OWNERS";
/// How many slots the datapath tries for a new key before calling the counters full.
pub const COUNTER_PROBES: u32 = 8;

/// `RingBuf` of [`Event`]s: drops, audits and (when enabled) allowed new connections,
/// rate-limited per CPU.
pub const EVENTS: &str = "CNS_EVENTS";
pub const EVENTS_BYTES: u32 = 1 << 20;
map_type! {
    pub struct Event {
        pub ts_ns: u64,
        /// Network-order addresses: IPv4 in the first 4 bytes (the rest zero), or IPv6, as
        /// `family` says.
        pub saddr: Ip6,
        pub daddr: Ip6,
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub dir: u8,
        pub verdict: u8,
        pub reason: u8,
        pub src_identity: u32,
        pub dst_identity: u32,
        pub ifindex: u32,
        pub ep_id: u32,
        pub src_ns: u16,
        pub dst_ns: u16,
        /// The policy whose rule allowed the connection (`policy-verdict` events);
        /// `u32::MAX` when none did.
        pub policy_id: u32,
        /// [`FAMILY_IPV4`], [`FAMILY_IPV6`], or 0 when the packet was neither (no addresses).
        pub family: u8,
        /// `DRY_RUN_WOULD_*` when a dry-run policy would change this flow's verdict (a
        /// would-be drop is an event of its own, verdict audit); 0 otherwise.
        pub dry_run: u8,
        pub _pad: [u8; 2],
        /// The [`DryRunCause`] id: the dry-run NetworkPolicy or rule that would allow or
        /// drop, or the endpoint id when dry-run NetworkPolicies would isolate it
        /// ([`NO_POLICY`] then: the event's `ep_id` and `dir` say which).
        pub dry_run_id: u32,
    } = 80
}
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// `HashMap<DryRunCause, u64>`: the dry-run policy (a stable hash of its kind, namespace
/// and name, [`dry_run_policy_hash`]) each cause of a dry-run difference belongs to: the
/// id of a dry-run NetworkPolicy or ClusterNetworkPolicy rule, or an endpoint that only
/// dry-run NetworkPolicies isolate in a direction. Written by the agent.
pub const DRY_RUN_CAUSES: &str = "CNS_DRY_RUN_CAUSES";
pub const DRY_RUN_CAUSES_CAPACITY: u32 = 16384;
map_type! {
    pub struct DryRunCause {
        /// `DRY_RUN_CAUSE_*`.
        pub kind: u8,
        /// `DIR_*` of an isolation; 0 for a rule.
        pub dir: u8,
        pub _pad: [u8; 2],
        /// A NetworkPolicy id or a `RULE_*` id; the endpoint id of an isolation.
        pub id: u32,
    } = 8
}
pub const DRY_RUN_CAUSE_RULE: u8 = 0;
pub const DRY_RUN_CAUSE_ISOLATION: u8 = 1;
/// The flow passes today and a dry-run policy would drop it.
pub const DRY_RUN_WOULD_DROP: u8 = 1;
/// The flow is dropped (or audited) today and a dry-run policy would allow it.
pub const DRY_RUN_WOULD_ALLOW: u8 = 2;

/// `LruPerCpuHashMap<DryRunCounterKey, u64>`: new flows whose verdict a dry-run policy would
/// change, per policy, direction and outcome. Pinned, so the counts outlive the agent; a
/// policy's counts are keyed by its name's hash, so a restarted agent finds them again.
pub const DRY_RUN_COUNTERS: &str = "CNS_DRY_RUN_COUNTERS";
pub const DRY_RUN_COUNTERS_CAPACITY: u32 = 4096;
map_type! {
    pub struct DryRunCounterKey {
        /// [`dry_run_policy_hash`]; 0 when the cause was not found (a policy changing).
        pub policy: u64,
        pub dir: u8,
        /// `DRY_RUN_WOULD_*`.
        pub outcome: u8,
        pub _pad: [u8; 6],
    } = 16
}

/// FNV-1a (64 bits) of a policy's `Kind/namespace/name` (`Kind/name` when cluster-scoped):
/// the same on every agent and every run.
pub const fn dry_run_policy_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `PerCpuArray<u32, u64>` with one entry: the jiffy of this CPU's last drop on the
/// [`DENY_CACHE`]. Within [`XDP_FLOOD_JIFFIES_PER_SECOND`]ths of a second of it, the XDP
/// program reads the deny cache first (a flood is under way on this CPU); otherwise only
/// after the local-pod and conntrack lookups, so traffic that is no flood pays nothing for it.
pub const XDP_FLOOD: &str = "CNS_XDP_FLOOD";
/// [`XDP_FLOOD`]'s window: `Config::hz / XDP_FLOOD_JIFFIES_PER_SECOND` jiffies (100 ms).
pub const XDP_FLOOD_JIFFIES_PER_SECOND: u32 = 10;

/// `PerCpuArray<u32, RateLimit>` with one entry: the per-CPU event token bucket.
pub const RATE_LIMIT: &str = "CNS_RATE_LIMIT";
map_type! {
    pub struct RateLimit {
        /// The jiffy of the last refill.
        pub last: u64,
        pub tokens: u64,
    } = 16
}

/// `PerCpuArray<u32, u64>`: datapath statistics, indexed by `STAT_*`.
pub const STATS: &str = "CNS_STATS";
pub const STATS_LEN: u32 = 8;
pub const STAT_EVENTS_SUPPRESSED: u32 = 0;
pub const STAT_EVENTS_LOST: u32 = 1;
pub const STAT_COUNTERS_FULL: u32 = 2;
pub const STAT_CONNTRACK_INSERT_FAILED: u32 = 3;
/// Packets the XDP program on the uplink dropped (denied by policy, blocking mode).
pub const STAT_XDP_DROPPED: u32 = 4;
/// Packets the XDP program let through with verdict audit (would have been dropped).
pub const STAT_XDP_AUDIT: u32 = 5;
/// New flows the XDP program allowed by policy (it created their conntrack entries, so TC on
/// the pod's veth takes its fast path).
pub const STAT_XDP_ALLOWED: u32 = 6;

/// Every map's name, key size, value size and default capacity, for the layout fingerprint.
pub const LAYOUTS: [(&str, usize, usize, u32); 26] = [
    (CONFIG, 4, core::mem::size_of::<Config>(), 1),
    (
        ENDPOINTS,
        4,
        core::mem::size_of::<Endpoint>(),
        ENDPOINTS_CAPACITY,
    ),
    (IPCACHE, 4, core::mem::size_of::<Remote>(), IPCACHE_CAPACITY),
    (LOCAL_IPS, 4, 4, LOCAL_IPS_CAPACITY),
    (LOCAL_IPS6, 16, 4, LOCAL_IPS_CAPACITY),
    (
        IPCACHE6,
        16,
        core::mem::size_of::<Remote>(),
        IPCACHE_CAPACITY,
    ),
    (
        CIDRS6,
        4 + core::mem::size_of::<CidrKey6>(),
        4,
        CIDRS_CAPACITY,
    ),
    (
        CONNTRACK6,
        core::mem::size_of::<CtKey6>(),
        core::mem::size_of::<CtEntry>(),
        CONNTRACK_CAPACITY,
    ),
    (
        DENY_CACHE6,
        core::mem::size_of::<DenyKey6>(),
        core::mem::size_of::<DenyEntry>(),
        DENY_CACHE_CAPACITY,
    ),
    (
        FRAGMENTS6,
        core::mem::size_of::<FragKey6>(),
        core::mem::size_of::<FragValue>(),
        FRAGMENTS_CAPACITY,
    ),
    (
        CIDRS,
        4 + core::mem::size_of::<CidrKey>(),
        4,
        CIDRS_CAPACITY,
    ),
    (
        POLICY,
        4 + core::mem::size_of::<PolicyKey>(),
        core::mem::size_of::<PolicyValue>(),
        POLICY_CAPACITY,
    ),
    (
        POLICY_EXACT,
        core::mem::size_of::<PolicyKey>(),
        core::mem::size_of::<PolicyValue>(),
        POLICY_CAPACITY,
    ),
    (
        CONNTRACK,
        core::mem::size_of::<CtKey>(),
        core::mem::size_of::<CtEntry>(),
        CONNTRACK_CAPACITY,
    ),
    (
        DENY_CACHE,
        core::mem::size_of::<DenyKey>(),
        core::mem::size_of::<DenyEntry>(),
        DENY_CACHE_CAPACITY,
    ),
    (
        FRAGMENTS,
        core::mem::size_of::<FragKey>(),
        core::mem::size_of::<FragValue>(),
        FRAGMENTS_CAPACITY,
    ),
    (COUNTER_KEYS, 4, 8, COUNTERS_CAPACITY),
    (
        COUNTERS,
        4,
        core::mem::size_of::<Counter>(),
        COUNTERS_CAPACITY,
    ),
    (
        COUNTER_OWNERS,
        4,
        core::mem::size_of::<CounterKey>(),
        COUNTERS_CAPACITY,
    ),
    (EVENTS, 0, core::mem::size_of::<Event>(), EVENTS_BYTES),
    (
        DRY_RUN_CAUSES,
        core::mem::size_of::<DryRunCause>(),
        8,
        DRY_RUN_CAUSES_CAPACITY,
    ),
    (
        DRY_RUN_COUNTERS,
        core::mem::size_of::<DryRunCounterKey>(),
        8,
        DRY_RUN_COUNTERS_CAPACITY,
    ),
    (RATE_LIMIT, 4, core::mem::size_of::<RateLimit>(), 1),
    (XDP_FLOOD, 4, 8, 1),
    (EP_CACHE, 4, core::mem::size_of::<EpCache>(), EP_CACHE_SLOTS),
    (STATS, 4, 8, STATS_LEN),
];

#[cfg(test)]
mod resolve_tests {
    use super::*;

    /// The packet's verdict from the entries two lookups found.
    fn resolve(isolated: bool, a: &PolicyValue, b: &PolicyValue) -> Resolved {
        resolve_merged(isolated, &a.merge(b))
    }
    use crate::{
        REASON_ADMIN_DENIED, REASON_BASELINE_DENIED, REASON_NOT_ISOLATED, REASON_POLICY_ALLOWED,
        REASON_POLICY_DENIED,
    };

    fn admin(rank: u32, action: u8) -> PolicyValue {
        PolicyValue {
            admin: rank,
            admin_action: action,
            ..PolicyValue::EMPTY
        }
    }

    fn baseline(rank: u32, action: u8) -> PolicyValue {
        PolicyValue {
            baseline: rank,
            baseline_action: action,
            ..PolicyValue::EMPTY
        }
    }

    fn r(allowed: bool, reason: u8, policy_id: u32) -> Resolved {
        Resolved {
            allowed,
            reason,
            policy_id,
        }
    }

    const E: PolicyValue = PolicyValue::EMPTY;

    #[test]
    fn nothing_said_is_networkpolicy_isolation_or_allow() {
        assert_eq!(
            resolve(false, &E, &E),
            r(true, REASON_NOT_ISOLATED, NO_POLICY)
        );
        assert_eq!(
            resolve(true, &E, &E),
            r(false, REASON_POLICY_DENIED, NO_POLICY)
        );
        let np = PolicyValue::allow(7);
        assert_eq!(resolve(true, &E, &np), r(true, REASON_POLICY_ALLOWED, 7));
        assert_eq!(
            resolve(true, &PolicyValue::allow(3), &np),
            r(true, REASON_POLICY_ALLOWED, 3)
        );
    }

    #[test]
    fn the_earlier_admin_rule_of_either_lookup_decides() {
        let deny = admin(5, ACTION_DENY);
        let accept = admin(9, ACTION_ACCEPT);
        for (a, b) in [(&deny, &accept), (&accept, &deny)] {
            assert_eq!(
                resolve(false, a, b),
                r(false, REASON_ADMIN_DENIED, RULE_ADMIN | 5)
            );
        }
        // Accept first: allowed even where a NetworkPolicy isolates and allows nothing.
        let accept_first = admin(1, ACTION_ACCEPT);
        assert_eq!(
            resolve(true, &accept_first, &deny),
            r(true, REASON_POLICY_ALLOWED, RULE_ADMIN | 1)
        );
        // Deny over a NetworkPolicy allow in the same entry.
        let both = PolicyValue {
            policy_id: 4,
            ..deny
        };
        assert_eq!(
            resolve(true, &both, &E),
            r(false, REASON_ADMIN_DENIED, RULE_ADMIN | 5)
        );
    }

    #[test]
    fn pass_goes_to_networkpolicy_then_baseline() {
        let pass = PolicyValue {
            baseline: 2,
            baseline_action: ACTION_DENY,
            ..admin(1, ACTION_PASS)
        };
        // Isolated: NetworkPolicy decides (nothing allows: denied), Baseline never reached.
        assert_eq!(
            resolve(true, &pass, &E),
            r(false, REASON_POLICY_DENIED, NO_POLICY)
        );
        assert_eq!(
            resolve(true, &pass, &PolicyValue::allow(8)),
            r(true, REASON_POLICY_ALLOWED, 8)
        );
        // Not isolated: the Baseline rule decides.
        assert_eq!(
            resolve(false, &pass, &E),
            r(false, REASON_BASELINE_DENIED, RULE_BASELINE | 2)
        );
        // A Pass before a Deny: the Deny is skipped.
        assert_eq!(
            resolve(true, &pass, &admin(3, ACTION_DENY)),
            r(false, REASON_POLICY_DENIED, NO_POLICY)
        );
    }

    #[test]
    fn baseline_accept_deny_and_pass() {
        let accept = baseline(4, ACTION_ACCEPT);
        let deny = baseline(6, ACTION_DENY);
        assert_eq!(
            resolve(false, &deny, &accept),
            r(true, REASON_POLICY_ALLOWED, RULE_BASELINE | 4)
        );
        assert_eq!(
            resolve(false, &E, &deny),
            r(false, REASON_BASELINE_DENIED, RULE_BASELINE | 6)
        );
        assert_eq!(
            resolve(false, &baseline(1, ACTION_PASS), &deny),
            r(true, REASON_NOT_ISOLATED, NO_POLICY)
        );
    }

    #[test]
    fn a_rule_both_lookups_found_decides_once() {
        // The identity's and the address set's entries name the same rule (same rank):
        // whichever side, the same answer, as if one lookup had found it.
        for action in [ACTION_ACCEPT, ACTION_DENY, ACTION_PASS] {
            let rule = admin(4, action);
            let with_np = PolicyValue {
                policy_id: 6,
                ..rule
            };
            for isolated in [false, true] {
                let alone = resolve(isolated, &rule, &E);
                assert_eq!(resolve(isolated, &rule, &rule), alone);
                assert_eq!(resolve(isolated, &E, &rule), alone);
                assert_eq!(
                    resolve(isolated, &with_np, &rule),
                    resolve(isolated, &rule, &with_np)
                );
            }
            let rule = baseline(4, action);
            assert_eq!(resolve(false, &rule, &rule), resolve(false, &E, &rule));
        }
    }

    /// The tiers read literally, over every rule the two entries name: Admin rules by rank
    /// (Accept and Deny decide, Pass leaves the tier), then NetworkPolicy if isolated, then
    /// Baseline rules by rank, then allow.
    fn walk(isolated: bool, entries: [&PolicyValue; 2]) -> Resolved {
        let first = |tier: fn(&PolicyValue) -> (u32, u8)| {
            entries
                .iter()
                .map(|v| tier(v))
                .filter(|&(_, action)| action != ACTION_NONE)
                .min()
        };
        match first(|v| (v.admin, v.admin_action)) {
            Some((rank, ACTION_ACCEPT)) => {
                return r(true, REASON_POLICY_ALLOWED, RULE_ADMIN | rank);
            }
            Some((rank, ACTION_DENY)) => return r(false, REASON_ADMIN_DENIED, RULE_ADMIN | rank),
            _ => {}
        }
        if isolated {
            return match entries.iter().map(|v| v.policy_id).min() {
                Some(id) if id != NO_POLICY => r(true, REASON_POLICY_ALLOWED, id),
                _ => r(false, REASON_POLICY_DENIED, NO_POLICY),
            };
        }
        match first(|v| (v.baseline, v.baseline_action)) {
            Some((rank, ACTION_ACCEPT)) => r(true, REASON_POLICY_ALLOWED, RULE_BASELINE | rank),
            Some((rank, ACTION_DENY)) => r(false, REASON_BASELINE_DENIED, RULE_BASELINE | rank),
            _ => r(true, REASON_NOT_ISOLATED, NO_POLICY),
        }
    }

    #[test]
    fn every_pair_of_entries_resolves_as_the_tiers_read() {
        let rules = [
            (NO_RULE, ACTION_NONE),
            (1, ACTION_ACCEPT),
            (1, ACTION_DENY),
            (1, ACTION_PASS),
            (2, ACTION_ACCEPT),
            (2, ACTION_DENY),
            (2, ACTION_PASS),
        ];
        let mut values = [E; 7 * 3 * 7];
        let mut i = 0;
        for (admin, admin_action) in rules {
            for policy_id in [NO_POLICY, 3, 5] {
                for (baseline, baseline_action) in rules {
                    values[i] = PolicyValue {
                        policy_id,
                        admin,
                        admin_action,
                        baseline,
                        baseline_action,
                        ..E
                    };
                    i += 1;
                }
            }
        }
        // One rank is one rule, with one action: two entries never disagree on it.
        let same_rule = |a: (u32, u8), b: (u32, u8)| a.0 != b.0 || a.1 == b.1;
        let mut cases = 0;
        for a in &values {
            for b in &values {
                if !same_rule((a.admin, a.admin_action), (b.admin, b.admin_action))
                    || !same_rule(
                        (a.baseline, a.baseline_action),
                        (b.baseline, b.baseline_action),
                    )
                {
                    continue;
                }
                for isolated in [false, true] {
                    let got = resolve(isolated, a, b);
                    assert_eq!(got, walk(isolated, [a, b]), "{isolated} {a:?} {b:?}");
                    assert_eq!(got, resolve(isolated, b, a), "either lookup: {a:?} {b:?}");
                    cases += 1;
                }
            }
        }
        assert!(cases > 5000, "{cases}");
    }

    #[test]
    fn merge_keeps_the_first_of_each_tier() {
        let a = PolicyValue {
            policy_id: 9,
            ..admin(5, ACTION_DENY)
        };
        let b = PolicyValue {
            policy_id: 2,
            admin: 3,
            admin_action: ACTION_PASS,
            baseline: 1,
            baseline_action: ACTION_ACCEPT,
            ..E
        }
        .same_would();
        let a = a.same_would();
        let m = a.merge(&b);
        assert_eq!(m.would(), m.same_would().would());
        assert_eq!(m.would().policy_id, 2);
        assert_eq!((m.policy_id, m.admin, m.admin_action), (2, 3, ACTION_PASS));
        assert_eq!((m.baseline, m.baseline_action), (1, ACTION_ACCEPT));
        assert_eq!(m, b.merge(&a));
        assert_eq!(a.merge(&E), a);
    }

    /// A dry-run policy's rule only in the would-be view.
    fn dry(v: PolicyValue) -> PolicyValue {
        PolicyValue {
            would_policy_id: v.policy_id,
            would_admin: v.admin,
            would_admin_action: v.admin_action,
            would_baseline: v.baseline,
            would_baseline_action: v.baseline_action,
            ..E
        }
    }

    fn diff(iso: bool, would_iso: bool, v: &PolicyValue) -> Option<(u8, DryRunCause)> {
        let e = resolve_merged(iso, v);
        let w = resolve_merged(would_iso, &v.would());
        dry_run_diff(iso, would_iso, v, &e, &w, 7, crate::DIR_EGRESS).map(|d| (d.outcome, d.cause))
    }

    fn rule(id: u32) -> DryRunCause {
        DryRunCause {
            kind: DRY_RUN_CAUSE_RULE,
            id,
            ..DryRunCause::default()
        }
    }

    #[test]
    fn dry_run_diff_names_the_dry_run_policy_that_changes_the_verdict() {
        // No dry-run policy: the views agree.
        let enforced = PolicyValue::allow(3);
        assert_eq!(diff(true, true, &enforced), None);
        // A dry-run NetworkPolicy isolates a pod nothing isolates today.
        let iso = DryRunCause {
            kind: DRY_RUN_CAUSE_ISOLATION,
            dir: crate::DIR_EGRESS,
            _pad: [0; 2],
            id: 7,
        };
        assert_eq!(diff(false, true, &E), Some((DRY_RUN_WOULD_DROP, iso)));
        // ... and allows this flow: no difference.
        assert_eq!(diff(false, true, &dry(PolicyValue::allow(4))), None);
        // A dry-run NetworkPolicy allows what the enforced ones drop.
        assert_eq!(
            diff(true, true, &dry(PolicyValue::allow(4))),
            Some((DRY_RUN_WOULD_ALLOW, rule(4)))
        );
        // A dry-run Admin Deny before an enforced NetworkPolicy allow.
        let v = enforced.merge(&dry(admin(5, ACTION_DENY)));
        assert_eq!(
            diff(true, true, &v),
            Some((DRY_RUN_WOULD_DROP, rule(RULE_ADMIN | 5)))
        );
        // A dry-run Admin Pass over an enforced Admin Accept, then a Baseline Deny.
        let v = admin(9, ACTION_ACCEPT)
            .same_would()
            .merge(&baseline(2, ACTION_DENY).same_would())
            .merge(&dry(admin(4, ACTION_PASS)));
        assert_eq!(
            diff(false, false, &v),
            Some((DRY_RUN_WOULD_DROP, rule(RULE_ADMIN | 4)))
        );
        // A dry-run Baseline Accept for an unisolated pod an enforced Baseline Deny drops:
        // the earlier Baseline rule is the dry-run one.
        let v = baseline(8, ACTION_DENY)
            .same_would()
            .merge(&dry(baseline(3, ACTION_ACCEPT)));
        assert_eq!(
            diff(false, false, &v),
            Some((DRY_RUN_WOULD_ALLOW, rule(RULE_BASELINE | 3)))
        );
        // A dry-run Pass that changes nothing is not blamed: the dry-run NetworkPolicy
        // isolating the pod is, or the dry-run Baseline Deny.
        let pass = dry(admin(4, ACTION_PASS));
        assert_eq!(diff(false, true, &pass), Some((DRY_RUN_WOULD_DROP, iso)));
        let v = pass.merge(&dry(baseline(6, ACTION_DENY)));
        assert_eq!(
            diff(false, false, &v),
            Some((DRY_RUN_WOULD_DROP, rule(RULE_BASELINE | 6)))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::LAYOUTS;

    /// Changing a layout without bumping `LAYOUT_VERSION` would make a new agent reuse old
    /// pinned maps with the wrong shape. Update both together.
    #[test]
    fn layout_fingerprint_matches_the_version() {
        let fingerprint: u64 =
            LAYOUTS
                .iter()
                .fold(0xcbf2_9ce4_8422_2325, |h, (name, k, v, cap)| {
                    let mut h = h;
                    for b in name
                        .bytes()
                        .chain(k.to_le_bytes())
                        .chain(v.to_le_bytes())
                        .chain(cap.to_le_bytes())
                    {
                        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                    }
                    h
                });
        assert_eq!(
            (crate::LAYOUT_VERSION, fingerprint),
            (10, FINGERPRINT_V10),
            "map layouts changed: bump LAYOUT_VERSION and record the new fingerprint"
        );
    }

    /// v3: `CNS_LOCAL_IPS` (local pods by address, for the XDP program on the uplink).
    /// v4: counters in a per-CPU array by slot (`CNS_COUNTER_SLOTS`, `CNS_COUNTER_OWNERS`),
    /// the slot in each conntrack entry, protocol and reason in the counter key;
    /// `CNS_POLICY_EXACT` beside the policy trie.
    /// v5: `CNS_DENY_CACHE` (the XDP program's deny cache).
    /// v6: IPv6: the `*6` maps, the endpoint's IPv6 address, 16-byte event addresses and
    /// the event's family.
    /// v7: ClusterNetworkPolicy: a policy value holds each tier's rule and action; a deny
    /// cache entry its reason and policy id.
    /// v8: dry-run policies: a policy value holds the would-be view too; `CNS_DRY_RUN_CAUSES`
    /// and `CNS_DRY_RUN_COUNTERS`; an event's dry-run outcome and cause.
    /// v9: the programs' clock is jiffies (`CtEntry::expires`, `Config::hz`, the rate
    /// limiter's last refill); `CNS_COUNTER_KEYS` (an array: slot -> key) replaces the
    /// `CNS_COUNTER_SLOTS` hash; `CNS_XDP_FLOOD`.
    /// v10: `CNS_EP_CACHE` (each CPU's copies of the endpoints it looked up).
    const FINGERPRINT_V10: u64 = 12_004_045_073_654_173_590;
}
