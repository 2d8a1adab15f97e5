//! The map definitions; layouts and capacities live in `cns_common::maps`.
//! Every map is pinned by name so it outlives the agent (the agent chooses the directory).
//! The maps keyed by an address come in two families (`CNS_X` and `CNS_X6`); the programs
//! reach them through `family::Family`, never by name.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use cns_common::maps::{
    CIDRS_CAPACITY, CONNTRACK_CAPACITY, COUNTERS_CAPACITY, CidrKey, CidrKey6, Config, Counter,
    CounterKey, CtEntry, CtKey, CtKey6, DENY_CACHE_CAPACITY, DRY_RUN_CAUSES_CAPACITY,
    DRY_RUN_COUNTERS_CAPACITY, DenyEntry, DenyKey, DenyKey6, DryRunCause, DryRunCounterKey,
    ENDPOINTS_CAPACITY, EP_CACHE_SLOTS, EVENTS_BYTES, Endpoint, EpCache, FRAGMENTS_CAPACITY,
    FragKey, FragKey6, FragValue, IPCACHE_CAPACITY, Ip6, LOCAL_IPS_CAPACITY, POLICY_CAPACITY,
    PolicyKey, PolicyValue, RateLimit, Remote, STATS_LEN,
};

#[map]
pub static CNS_CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
pub static CNS_ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(ENDPOINTS_CAPACITY, 0);
#[map]
pub static CNS_IPCACHE: HashMap<u32, Remote> = HashMap::pinned(IPCACHE_CAPACITY, 0);
#[map]
pub static CNS_IPCACHE6: HashMap<Ip6, Remote> = HashMap::pinned(IPCACHE_CAPACITY, 0);
#[map]
pub static CNS_LOCAL_IPS: HashMap<u32, u32> = HashMap::pinned(LOCAL_IPS_CAPACITY, 0);
#[map]
pub static CNS_LOCAL_IPS6: HashMap<Ip6, u32> = HashMap::pinned(LOCAL_IPS_CAPACITY, 0);
#[map]
pub static CNS_CIDRS: LpmTrie<CidrKey, u32> = LpmTrie::pinned(CIDRS_CAPACITY, 0);
#[map]
pub static CNS_CIDRS6: LpmTrie<CidrKey6, u32> = LpmTrie::pinned(CIDRS_CAPACITY, 0);
#[map]
pub static CNS_POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(POLICY_CAPACITY, 0);
/// Not preallocated (`BPF_F_NO_PREALLOC`): it grows with the policy, like the trie.
#[map]
pub static CNS_POLICY_EXACT: HashMap<PolicyKey, PolicyValue> =
    HashMap::pinned(POLICY_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub static CNS_CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(CONNTRACK_CAPACITY, 0);
#[map]
pub static CNS_CONNTRACK6: LruHashMap<CtKey6, CtEntry> = LruHashMap::pinned(CONNTRACK_CAPACITY, 0);
/// The XDP program's deny cache (see `cns_common::maps::DENY_CACHE`).
#[map]
pub static CNS_DENY_CACHE: LruHashMap<DenyKey, DenyEntry> =
    LruHashMap::pinned(DENY_CACHE_CAPACITY, 0);
#[map]
pub static CNS_DENY_CACHE6: LruHashMap<DenyKey6, DenyEntry> =
    LruHashMap::pinned(DENY_CACHE_CAPACITY, 0);
#[map]
pub static CNS_FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::pinned(FRAGMENTS_CAPACITY, 0);
#[map]
pub static CNS_FRAGMENTS6: LruHashMap<FragKey6, FragValue> =
    LruHashMap::pinned(FRAGMENTS_CAPACITY, 0);
#[map]
pub static CNS_COUNTER_KEYS: Array<u64> = Array::pinned(COUNTERS_CAPACITY, 0);
#[map]
pub static CNS_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTERS_CAPACITY, 0);
#[map]
pub static CNS_COUNTER_OWNERS: HashMap<u32, CounterKey> = HashMap::pinned(COUNTERS_CAPACITY, 0);
#[map]
pub static CNS_EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);
/// Each CPU's copies of the endpoints it looked up (see `endpoints`).
#[map]
pub static CNS_EP_CACHE: PerCpuArray<EpCache> = PerCpuArray::pinned(EP_CACHE_SLOTS, 0);
/// The jiffy of this CPU's last drop on the deny cache (see `xdp`).
#[map]
pub static CNS_XDP_FLOOD: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);
#[map]
pub static CNS_RATE_LIMIT: PerCpuArray<RateLimit> = PerCpuArray::pinned(1, 0);
#[map]
pub static CNS_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS_LEN, 0);
/// Dry-run policies: whose each cause of a difference is, and the counts per policy.
#[map]
pub static CNS_DRY_RUN_CAUSES: HashMap<DryRunCause, u64> =
    HashMap::pinned(DRY_RUN_CAUSES_CAPACITY, 0);
#[map]
pub static CNS_DRY_RUN_COUNTERS: LruPerCpuHashMap<DryRunCounterKey, u64> =
    LruPerCpuHashMap::pinned(DRY_RUN_COUNTERS_CAPACITY, 0);
