//! The verdict for one packet: conntrack fast path, then policy. Written once for both
//! address families (`family`): [`handle`] reads the Ethernet type and calls the IPv4 or
//! the IPv6 path, each the same generic code ([`handle_ip`], [`decide`], [`record`])
//! monomorphised for its family.

use core::mem::MaybeUninit;

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use cns_common::{
    DIR_INGRESS, IDENTITY_HOST, IDENTITY_NAMESPACE_BASE, IDENTITY_WORLD, NS_UNKNOWN, NS_WORLD,
    REASON_FRAGMENT, REASON_FROM_HOST, REASON_IPV6_HEADER_CHAIN, REASON_MALFORMED,
    REASON_NO_ENDPOINT, REASON_NOT_ISOLATED, REASON_POLICY_ALLOWED, REASON_POLICY_DENIED,
    REASON_SPOOFED, REASON_UNSUPPORTED_L3, VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    maps::{
        CONFIG_NO_CONNTRACK_CREATE, CONFIG_POLICY_VERDICT_EVENTS, CT_REPLY, Config, CtEntry,
        DRY_RUN_WOULD_DROP, DryRunCounterKey, DryRunDiff, EP_ANY_PROTO_RULES, EP_AUDIT_ON,
        EP_AUDIT_OVERRIDE, EP_DRY_RUN, EP_EGRESS_CIDRS, EP_EGRESS_ISOLATED, EP_EGRESS_NAMESPACES,
        EP_EGRESS_TIERED, EP_EGRESS_WOULD_ISOLATE, EP_INGRESS_CIDRS, EP_INGRESS_ISOLATED,
        EP_INGRESS_NAMESPACES, EP_INGRESS_TIERED, EP_INGRESS_WOULD_ISOLATE, EP_PORT_RANGES,
        EP_PROTO_RULES, Endpoint, Event, INCLUDES_ADDRESS, INCLUDES_NAMESPACE, NO_POLICY,
        POLICY_PREFIX_FULL, PolicyKey, PolicyValue, Remote, Resolved, dry_run_diff, resolve_merged,
    },
};

use crate::{
    TC_DROP, TC_PASS, conntrack, endpoints,
    family::{Family, V6},
    fragments,
    maps::{CNS_CONFIG, CNS_DRY_RUN_CAUSES, CNS_DRY_RUN_COUNTERS, CNS_POLICY, CNS_POLICY_EXACT},
    parse::{self, Bytes as _, L3, Packet, Skip6},
    stats,
};

/// No configuration means the agent has not initialised the maps: nothing to enforce yet.
const NO_CONFIG: Config = Config {
    audit_mode: 1,
    revision: 0,
    event_rate: 0,
    event_burst: 0,
    flags: 0,
    hz: 0,
};

#[inline(always)]
pub fn config() -> &'static Config {
    CNS_CONFIG.get(0).unwrap_or(&NO_CONFIG)
}

/// The policy revision, read once before any map a decision reads: the agent bumps it after
/// writing the maps, so what is stamped with it (the decision's conntrack and deny cache
/// entries, the endpoint's cached copy) was decided on maps at least that new.
#[inline(always)]
pub fn revision(cfg: &Config) -> u32 {
    // SAFETY: a read of a map value (volatile: read here, once, not later).
    unsafe { core::ptr::read_volatile(&cfg.revision) }
}

/// Whether a live conntrack entry lets its packet pass without policy. Replies of an allowed
/// flow skip policy; an audited flow's replies pass only while its endpoint is still in audit
/// mode (`endpoint_audits`, only called for those). Original-direction packets are
/// re-evaluated when any map changed since (policy revision).
#[inline(always)]
pub fn current(e: &CtEntry, cfg: &Config, endpoint_audits: impl FnOnce() -> bool) -> bool {
    if e.flags & CT_REPLY != 0 {
        e.verdict != VERDICT_AUDIT || endpoint_audits()
    } else {
        e.revision == cfg.revision
    }
}

/// Reads the Ethernet type and calls the path for it: [`handle_ipv4`], [`handle_ipv6`], or
/// [`not_ip`] for everything else. Each path is a BPF-to-BPF call of its own: the verifier
/// allows 512 bytes of stack for a chain of calls and a frame counts whole in every chain
/// through it, so neither family's frame may sit under the other's. (This function is
/// small enough to be inlined into the program's entry, so an IPv4 packet takes one call,
/// as it did when the entry called the whole program as one function.) The direction is a
/// constant: each program gets its own copy of each path, with the direction's tests
/// resolved at compile time.
#[inline(always)]
pub fn handle<const DIR: u8>(ctx: &TcContext) -> i32 {
    match parse::l3(ctx) {
        L3::Ipv4 => handle_ipv4::<DIR>(ctx),
        L3::Ipv6 => handle_ipv6::<DIR>(ctx),
        l3 => not_ip::<DIR>(ctx, l3),
    }
}

/// IPv4.
#[inline(never)]
fn handle_ipv4<const DIR: u8>(ctx: &TcContext) -> i32 {
    let cfg = config();
    match parse::ipv4(ctx) {
        Some(p) => handle_ip(ctx, cfg, DIR, &p),
        None => unparsed(ctx, cfg, DIR, REASON_MALFORMED),
    }
}

/// ARP, and what is neither IP family.
#[inline(never)]
fn not_ip<const DIR: u8>(ctx: &TcContext, l3: L3) -> i32 {
    let cfg = config();
    match l3 {
        L3::Arp => TC_PASS,
        L3::Unsupported => unparsed(ctx, cfg, DIR, REASON_UNSUPPORTED_L3),
        // Shorter than an Ethernet header (IPv4 and IPv6 never come here).
        L3::Malformed | L3::Ipv4 | L3::Ipv6 => unparsed(ctx, cfg, DIR, REASON_MALFORMED),
    }
}

/// IPv6: the same code as IPv4 ([`handle_ip`]) on the family's maps.
#[inline(never)]
fn handle_ipv6<const DIR: u8>(ctx: &TcContext) -> i32 {
    let cfg = config();
    let mut p = MaybeUninit::uninit();
    match parse::ipv6(ctx, &mut p) {
        // SAFETY: `ipv6` wrote the packet: it returned `Ok`.
        Ok(()) => handle_ip::<V6>(ctx, cfg, DIR, unsafe { p.assume_init_ref() }),
        // Neighbor Discovery passes either way, whatever the policy, and is not counted:
        // without it the pod has no link to speak over.
        Err(Skip6::Neighbor) => TC_PASS,
        Err(Skip6::Chain) => unparsed(ctx, cfg, DIR, REASON_IPV6_HEADER_CHAIN),
        Err(Skip6::Malformed) => unparsed(ctx, cfg, DIR, REASON_MALFORMED),
    }
}

/// One parsed IP packet of either family: later fragments inherit their first fragment's
/// verdict, ICMP errors their connection's, established flows pass on their conntrack
/// entry; everything else takes the slow path.
#[inline(always)]
fn handle_ip<F: Family>(ctx: &TcContext, cfg: &Config, dir: u8, p: &Packet<F>) -> i32 {
    let key = conntrack::key(p, dir);
    if p.later_fragment {
        if let Some(f) = fragments::lookup(p, dir) {
            let key = stats::key(f.src_ns, f.dst_ns, dir, f.verdict, p.proto, f.reason);
            stats::count(&key, ctx.frame_len());
            return TC_PASS;
        }
        return slow_path(ctx, cfg, dir, p, &key);
    }
    // An ICMP error about a tracked connection (e.g. "fragmentation needed", "packet too
    // big") belongs to it: it passes as its connection does.
    if let Some(e) = p
        .inner(ctx)
        .and_then(|inner| conntrack::related(p, &inner, dir))
    {
        let key = stats::key(e.dst_ns, e.src_ns, dir, e.verdict, p.proto, e.reason);
        stats::count(&key, ctx.frame_len());
        return TC_PASS;
    }
    if let Some(e) = conntrack::lookup(&key, p, cfg.hz) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &mut *e };
        if current(e, cfg, || endpoint_audits(ctx, cfg)) {
            if p.first_fragment {
                fragments::remember(p, dir, e.verdict, e.reason, e.src_ns, e.dst_ns);
            }
            let mut slot = e.counter;
            if slot == 0 {
                // First counted packet of this tuple: look its slot up once, keep it.
                let key = stats::key(e.src_ns, e.dst_ns, dir, e.verdict, p.proto, e.reason);
                slot = stats::slot(&key);
                e.counter = slot;
            }
            stats::add(slot, ctx.frame_len());
            return TC_PASS;
        }
    }
    slow_path(ctx, cfg, dir, p, &key)
}

/// The endpoint of the veth the program runs on (`endpoints`), as of `revision`.
#[inline(always)]
fn endpoint(ctx: &TcContext, revision: u32) -> Option<&'static Endpoint> {
    endpoints::get(ep_ifindex(ctx), revision)
}

#[inline(always)]
pub fn audits(ep: &Endpoint, cfg: &Config) -> bool {
    flags_audit(ep.flags, cfg)
}

/// [`audits`] on an endpoint's flags (as a deny cache entry keeps them).
#[inline(always)]
pub fn flags_audit(flags: u16, cfg: &Config) -> bool {
    if flags & EP_AUDIT_OVERRIDE != 0 {
        flags & EP_AUDIT_ON != 0
    } else {
        cfg.audit_mode != 0
    }
}

#[inline(always)]
fn endpoint_audits(ctx: &TcContext, cfg: &Config) -> bool {
    endpoint(ctx, revision(cfg)).is_some_and(|ep| audits(ep, cfg))
}

#[inline(always)]
pub fn isolated(ep: &Endpoint, dir: u8) -> bool {
    let flag = if dir == DIR_INGRESS {
        EP_INGRESS_ISOLATED
    } else {
        EP_EGRESS_ISOLATED
    };
    ep.flags & flag != 0
}

/// Whether any policy applies to the endpoint in `dir`: a NetworkPolicy isolates it, or a
/// ClusterNetworkPolicy selects it.
#[inline(always)]
pub fn enforced(ep: &Endpoint, dir: u8) -> bool {
    ep.flags
        & flag(
            dir,
            EP_INGRESS_ISOLATED | EP_INGRESS_TIERED,
            EP_EGRESS_ISOLATED | EP_EGRESS_TIERED,
        )
        != 0
}

/// What is not a parsed IP packet (malformed, not IP, an IPv6 header chain longer than
/// the programs walk): passes only for endpoints no policy applies to in this direction.
#[inline(always)]
fn unparsed(ctx: &TcContext, cfg: &Config, dir: u8, reason: u8) -> i32 {
    let Some(ep) = endpoint(ctx, revision(cfg)) else {
        return no_endpoint(ctx, cfg, dir, 0);
    };
    let (verdict, action) = if !enforced(ep, dir) {
        (VERDICT_FORWARDED, TC_PASS)
    } else if audits(ep, cfg) {
        (VERDICT_AUDIT, TC_PASS)
    } else {
        (VERDICT_DROPPED, TC_DROP) // fail closed
    };
    let (src_ns, dst_ns) = if dir == DIR_INGRESS {
        (NS_WORLD, ep.ns_id)
    } else {
        (ep.ns_id, NS_WORLD)
    };
    stats::count(
        &stats::key(src_ns, dst_ns, dir, verdict, 0, reason),
        ctx.frame_len(),
    );
    if verdict != VERDICT_FORWARDED {
        stats::event(cfg, || Event {
            ts_ns: 0, // stamped by stats::event
            dir,
            verdict,
            reason,
            ifindex: ep_ifindex(ctx),
            ep_id: ep.ep_id,
            src_ns,
            dst_ns,
            policy_id: u32::MAX,
            ..Event::default()
        });
    }
    action
}

/// Our programs run on an interface whose endpoint entry is missing: the agent could not
/// write it (a full map) or is removing the pod. Nothing says the pod is unisolated, so
/// blocking mode drops (fail closed); audit mode passes and counts `audit`.
#[inline(never)]
fn no_endpoint(ctx: &TcContext, cfg: &Config, dir: u8, proto: u8) -> i32 {
    let (verdict, action) = if cfg.audit_mode != 0 {
        (VERDICT_AUDIT, TC_PASS)
    } else {
        (VERDICT_DROPPED, TC_DROP)
    };
    let key = stats::key(
        NS_UNKNOWN,
        NS_UNKNOWN,
        dir,
        verdict,
        proto,
        REASON_NO_ENDPOINT,
    );
    stats::count(&key, ctx.frame_len());
    stats::event(cfg, || Event {
        ts_ns: 0, // stamped by stats::event
        dir,
        verdict,
        reason: REASON_NO_ENDPOINT,
        ifindex: ep_ifindex(ctx),
        policy_id: u32::MAX,
        ..Event::default()
    });
    action
}

#[inline(always)]
fn ep_ifindex(ctx: &TcContext) -> u32 {
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The entry for `identity` on `p`'s protocol and port, the longest match: the exact port
/// (hash); then, for endpoints with port ranges, the trie (whose longest match covers the
/// ranges, the protocol-wide and the any-protocol entries); otherwise all ports of the
/// protocol, then any protocol (hash), each only for endpoints that have such entries.
#[inline(always)]
fn lookup<F: Family>(
    ep: &Endpoint,
    dir: u8,
    identity: u32,
    p: &Packet<F>,
) -> Option<&'static PolicyValue> {
    let key = |proto, port| PolicyKey::aligned(ep.ep_id, identity, dir, proto, port);
    let full = key(p.proto, p.dport);
    // SAFETY (every lookup): written by the agent only.
    if let Some(v) = unsafe { CNS_POLICY_EXACT.get(&full.0) } {
        return Some(v);
    }
    if ep.flags & EP_PORT_RANGES != 0 {
        return CNS_POLICY.get(&Key::new(POLICY_PREFIX_FULL, full.0));
    }
    if ep.flags & EP_PROTO_RULES != 0
        && let Some(v) = unsafe { CNS_POLICY_EXACT.get(&key(p.proto, 0).0) }
    {
        return Some(v);
    }
    if ep.flags & EP_ANY_PROTO_RULES != 0 {
        return unsafe { CNS_POLICY_EXACT.get(&key(0, 0).0) };
    }
    None
}

/// The flag of `dir`: `ingress` or `egress`.
#[inline(always)]
fn flag(dir: u8, ingress: u16, egress: u16) -> u16 {
    if dir == DIR_INGRESS { ingress } else { egress }
}

/// NetworkPolicy alone (no ClusterNetworkPolicy selects the endpoint in `dir`, nor a
/// dry-run policy: every entry is an allow): the remote's identity, then its address set.
/// An entry that allows nothing (a tier's or a dry-run policy's, met while the agent is
/// between writing entries and the endpoint flags that send the endpoint the tiered way)
/// is no allow.
#[inline(always)]
fn allowed_by<F: Family>(
    ep: &Endpoint,
    dir: u8,
    identity: u32,
    remote_addr: &F::Addr,
    p: &Packet<F>,
) -> Option<u32> {
    if let Some(v) = lookup(ep, dir, identity, p)
        && v.policy_id != NO_POLICY
    {
        return Some(v.policy_id);
    }
    if ep.flags & flag(dir, EP_INGRESS_CIDRS, EP_EGRESS_CIDRS) == 0 {
        return None;
    }
    let set = F::cidr_identity(ep.ep_id, dir, remote_addr)?;
    lookup(ep, dir, set, p)
        .map(|v| v.policy_id)
        .filter(|id| *id != NO_POLICY)
}

/// The tiers (`cns_common::maps::resolve_merged`) on everything the entries of the
/// remote's identity, namespace and address set say; for an endpoint with dry-run policies
/// ([`EP_DRY_RUN`]), also on the would-be view of the same entries, and how they differ.
#[inline(always)]
fn tiers<F: Family, const DRY_RUN: bool>(
    ep: &Endpoint,
    dir: u8,
    remote: &Remote,
    remote_addr: &F::Addr,
    p: &Packet<F>,
) -> (Resolved, DryRunDiff) {
    let mut v = match lookup(ep, dir, remote.identity, p) {
        Some(v) => *v,
        None => PolicyValue::EMPTY,
    };
    // What the identity's entry already holds (its namespace's and address set's entries,
    // folded in by the agent) is not looked up again.
    if v.includes & INCLUDES_NAMESPACE == 0
        && ep.flags & flag(dir, EP_INGRESS_NAMESPACES, EP_EGRESS_NAMESPACES) != 0
        && let Some(n) = lookup(
            ep,
            dir,
            IDENTITY_NAMESPACE_BASE | u32::from(remote.ns_id),
            p,
        )
    {
        v = v.merge(n);
    }
    if v.includes & INCLUDES_ADDRESS == 0
        && ep.flags & flag(dir, EP_INGRESS_CIDRS, EP_EGRESS_CIDRS) != 0
        && let Some(c) =
            F::cidr_identity(ep.ep_id, dir, remote_addr).and_then(|set| lookup(ep, dir, set, p))
    {
        v = v.merge(c);
    }
    let isolated = isolated(ep, dir);
    let r = resolve_merged(isolated, &v);
    if !DRY_RUN || ep.flags & EP_DRY_RUN == 0 {
        return (r, DryRunDiff::NONE);
    }
    let would_isolate =
        ep.flags & flag(dir, EP_INGRESS_WOULD_ISOLATE, EP_EGRESS_WOULD_ISOLATE) != 0;
    let w = resolve_merged(would_isolate, &v.would());
    let diff = dry_run_diff(isolated, would_isolate, &v, &r, &w, ep.ep_id, dir);
    (r, diff.unwrap_or(DryRunDiff::NONE))
}

const UNKNOWN_REMOTE: Remote = Remote {
    identity: IDENTITY_WORLD,
    ns_id: NS_WORLD,
    _pad: 0,
};

#[inline(always)]
fn slow_path<F: Family>(
    ctx: &TcContext,
    cfg: &Config,
    dir: u8,
    p: &Packet<F>,
    key: &F::CtKey,
) -> i32 {
    let revision = revision(cfg);
    let Some(ep) = endpoint(ctx, revision) else {
        return no_endpoint(ctx, cfg, dir, p.proto);
    };
    let d = decide::<F, true>(cfg, revision, ep, dir, p);
    record(
        cfg,
        ep,
        ep_ifindex(ctx),
        dir,
        p,
        key,
        &d,
        Some(ctx.frame_len()),
    );
    if d.verdict == VERDICT_DROPPED {
        TC_DROP
    } else {
        TC_PASS
    }
}

/// Policy's answer for a packet of endpoint `ep`, before any side effect.
pub struct Decision {
    /// `VERDICT_*`.
    pub verdict: u8,
    /// `REASON_*`.
    pub reason: u8,
    /// The allowing policy, `u32::MAX` when none.
    pub policy_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub src_ns: u16,
    pub dst_ns: u16,
    /// How a dry-run policy would change the verdict (`outcome` 0: it would not).
    pub dry_run: DryRunDiff,
    /// The policy revision the maps were read under ([`revision`]).
    pub revision: u32,
}

/// The slow path's decision (TC and XDP share it): IP cache, anti-spoofing (out of the pod,
/// the source must be the endpoint's own address of the packet's family), isolation,
/// traffic from the node, then the policy lookups: for an endpoint no ClusterNetworkPolicy
/// selects in `dir`, the peer's identity and then the ipBlock set its address falls in (an
/// entry is an allow); otherwise the peer's identity, namespace and address set, what an
/// entry already includes skipped, resolved through the tiers (`resolve_merged`). Audit
/// mode turns any drop by policy (Admin, NetworkPolicy, Baseline) into `audit`.
/// `DRY_RUN`: whether to resolve the would-be view of endpoints with dry-run policies (TC;
/// the XDP program leaves those endpoints to TC).
#[inline(always)]
pub fn decide<F: Family, const DRY_RUN: bool>(
    cfg: &Config,
    revision: u32,
    ep: &Endpoint,
    dir: u8,
    p: &Packet<F>,
) -> Decision {
    // The remote address by value: a choice between references to the packet's fields would
    // keep the whole packet in memory instead of in registers (IPv4).
    let remote_addr = if dir == DIR_INGRESS { p.saddr } else { p.daddr };
    let remote = F::ipcache(&remote_addr).unwrap_or(&UNKNOWN_REMOTE);

    let mut policy_id = u32::MAX;
    let mut dry_run = DryRunDiff::NONE;
    // Dry-run policies take the tiered lookups: they resolve both views of the entries.
    let dry_run_flag = if DRY_RUN { EP_DRY_RUN } else { 0 };
    let tiered = ep.flags & (flag(dir, EP_INGRESS_TIERED, EP_EGRESS_TIERED) | dry_run_flag) != 0;
    let (allowed, reason) = if dir != DIR_INGRESS && !F::is_own(ep, &p.saddr) {
        (false, REASON_SPOOFED)
    } else if !tiered && !isolated(ep, dir) {
        (true, REASON_NOT_ISOLATED)
    } else if dir == DIR_INGRESS && remote.identity == IDENTITY_HOST {
        (true, REASON_FROM_HOST)
    } else if tiered {
        let (r, diff) = tiers::<F, DRY_RUN>(ep, dir, remote, &remote_addr, p);
        if !p.later_fragment {
            dry_run = diff;
        }
        policy_id = r.policy_id;
        match r.allowed {
            true => (true, r.reason),
            false if p.later_fragment => (false, REASON_FRAGMENT),
            false => (false, r.reason),
        }
    } else if let Some(id) = allowed_by(ep, dir, remote.identity, &remote_addr, p) {
        policy_id = id;
        (true, REASON_POLICY_ALLOWED)
    } else if p.later_fragment {
        (false, REASON_FRAGMENT)
    } else {
        (false, REASON_POLICY_DENIED)
    };

    let verdict = if allowed {
        VERDICT_FORWARDED
    } else if audits(ep, cfg) {
        VERDICT_AUDIT
    } else {
        VERDICT_DROPPED
    };
    let (src_identity, dst_identity, src_ns, dst_ns) = if dir == DIR_INGRESS {
        (remote.identity, ep.identity, remote.ns_id, ep.ns_id)
    } else {
        (ep.identity, remote.identity, ep.ns_id, remote.ns_id)
    };
    Decision {
        verdict,
        reason,
        policy_id,
        src_identity,
        dst_identity,
        src_ns,
        dst_ns,
        dry_run,
        revision,
    }
}

/// Counts a dry-run difference for its policy (`CNS_DRY_RUN_CAUSES` -> the policy's hash).
#[inline(never)]
fn count_dry_run(diff: &DryRunDiff, dir: u8) {
    // SAFETY: written by the agent only.
    let policy = unsafe { CNS_DRY_RUN_CAUSES.get(&diff.cause) }.map_or(0, |h| *h);
    let key = DryRunCounterKey {
        policy,
        dir,
        outcome: diff.outcome,
        _pad: [0; 6],
    };
    match CNS_DRY_RUN_COUNTERS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value, valid for this program run.
        Some(n) => unsafe { *n += 1 },
        // A failed insert (another CPU's race, a full map) loses one count.
        None => _ = CNS_DRY_RUN_COUNTERS.insert(&key, &1, 0),
    }
}

/// What a decision leaves behind: the counter (when `count` holds the frame length: XDP
/// leaves passing packets to be counted by TC, so each packet is counted once per
/// endpoint), the first fragment's verdict, the conntrack entries of a passing flow, and
/// the event of a drop or audit. `ifindex` is the endpoint's veth, whichever program ran.
/// Returns the counter slot the packet was counted in (0 when not counted).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn record<F: Family>(
    cfg: &Config,
    ep: &Endpoint,
    ifindex: u32,
    dir: u8,
    p: &Packet<F>,
    key: &F::CtKey,
    d: &Decision,
    count: Option<u32>,
) -> u32 {
    let verdict = d.verdict;
    let reason = if verdict == VERDICT_FORWARDED {
        0
    } else {
        d.reason
    };
    // The slot goes into the conntrack entry; XDP, which counts only drops, leaves it for TC
    // to look up on the first packet it counts.
    let slot = match count {
        Some(bytes) => {
            let key = stats::key(d.src_ns, d.dst_ns, dir, verdict, p.proto, reason);
            stats::count(&key, bytes)
        }
        None => 0,
    };
    if verdict != VERDICT_DROPPED && p.first_fragment {
        fragments::remember(p, dir, verdict, reason, d.src_ns, d.dst_ns);
    }

    // A dry-run difference is counted for its policy. A would-be drop of a passing flow is
    // an event of its own (verdict audit, the would-be reason and rule) and is remembered
    // in the flow's conntrack entry; a would-be allow rides on the drop's (or audit's)
    // event.
    let (mut ev_verdict, mut ev_reason, mut ev_policy) = (verdict, d.reason, d.policy_id);
    let mut dry_run_drop = 0;
    if d.dry_run.outcome != 0 {
        count_dry_run(&d.dry_run, dir);
        if d.dry_run.outcome == DRY_RUN_WOULD_DROP {
            dry_run_drop = d.dry_run.event_id;
            ev_verdict = VERDICT_AUDIT;
            ev_reason = d.dry_run.would.reason;
            ev_policy = d.dry_run.would.policy_id;
        }
    }
    if verdict != VERDICT_DROPPED
        && !p.later_fragment
        && cfg.flags & CONFIG_NO_CONNTRACK_CREATE == 0
    {
        let entry = CtEntry {
            revision: d.revision,
            src_identity: d.src_identity,
            dst_identity: d.dst_identity,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            verdict,
            reason,
            policy_id: d.policy_id,
            counter: slot,
            dry_run_drop,
            ..CtEntry::default()
        };
        conntrack::create(key, dir, p, &entry, cfg.hz);
    }
    let allowed_by_rule = d.reason == REASON_POLICY_ALLOWED && d.policy_id != u32::MAX;
    if ev_verdict != VERDICT_FORWARDED
        || (allowed_by_rule && cfg.flags & CONFIG_POLICY_VERDICT_EVENTS != 0)
    {
        stats::event(cfg, || Event {
            ts_ns: 0, // stamped by stats::event
            saddr: F::event_addr(&p.saddr),
            daddr: F::event_addr(&p.daddr),
            family: F::FAMILY,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            dir,
            verdict: ev_verdict,
            reason: ev_reason,
            src_identity: d.src_identity,
            dst_identity: d.dst_identity,
            ifindex,
            ep_id: ep.ep_id,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            policy_id: ev_policy,
            dry_run: d.dry_run.outcome,
            _pad: [0; 2],
            dry_run_id: d.dry_run.event_id,
        });
    }
    slot
}
