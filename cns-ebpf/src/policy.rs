//! The verdict for one packet: conntrack fast path, then policy.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use cns_common::{
    DIR_INGRESS, IDENTITY_HOST, IDENTITY_WORLD, NS_UNKNOWN, NS_WORLD, REASON_FRAGMENT,
    REASON_FROM_HOST, REASON_IPV6_HEADER_CHAIN, REASON_MALFORMED, REASON_NO_ENDPOINT,
    REASON_NOT_ISOLATED, REASON_POLICY_ALLOWED, REASON_POLICY_DENIED, REASON_SPOOFED,
    REASON_UNSUPPORTED_L3, VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    maps::{
        CIDR_PREFIX_BASE, CONFIG_NO_CONNTRACK_CREATE, CONFIG_POLICY_VERDICT_EVENTS, CT_REPLY,
        CidrKey, Config, CtEntry, EP_ANY_PROTO_RULES, EP_AUDIT_ON, EP_AUDIT_OVERRIDE,
        EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EP_PORT_RANGES, EP_PROTO_RULES, Endpoint, Event,
        POLICY_PREFIX_FULL, PolicyKey, Remote,
    },
};

use crate::{
    TC_DROP, TC_PASS, conntrack, fragments,
    maps::{CNS_CIDRS, CNS_CONFIG, CNS_ENDPOINTS, CNS_IPCACHE, CNS_POLICY, CNS_POLICY_EXACT},
    parse::{self, Bytes as _, L3, Packet},
    stats,
};

/// No configuration means the agent has not initialised the maps: nothing to enforce yet.
const NO_CONFIG: Config = Config {
    audit_mode: 1,
    revision: 0,
    event_rate: 0,
    event_burst: 0,
    flags: 0,
    _pad: 0,
};

#[inline(always)]
pub fn config() -> &'static Config {
    CNS_CONFIG.get(0).unwrap_or(&NO_CONFIG)
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

#[inline(always)]
pub fn handle(ctx: &TcContext, dir: u8) -> i32 {
    let cfg = config();
    let p = match parse::parse(ctx) {
        L3::Ipv4(p) => p,
        L3::Arp => return TC_PASS,
        L3::Ipv6 => return unparsed(ctx, cfg, dir, REASON_IPV6_HEADER_CHAIN),
        L3::Unsupported => return unparsed(ctx, cfg, dir, REASON_UNSUPPORTED_L3),
        L3::Malformed => return unparsed(ctx, cfg, dir, REASON_MALFORMED),
    };
    let key = conntrack::key(&p, dir);
    if p.later_fragment {
        if let Some(f) = fragments::lookup(&p, dir) {
            let key = stats::key(f.src_ns, f.dst_ns, dir, f.verdict, p.proto, f.reason);
            stats::count(&key, ctx.frame_len());
            return TC_PASS;
        }
        return slow_path(ctx, cfg, dir, &p, &key);
    }
    // An ICMP error about a tracked connection (e.g. "fragmentation needed") belongs to
    // it: it passes as its connection does.
    if let Some(e) = p
        .inner
        .as_ref()
        .and_then(|inner| conntrack::related(inner, dir))
    {
        let key = stats::key(e.dst_ns, e.src_ns, dir, e.verdict, p.proto, e.reason);
        stats::count(&key, ctx.frame_len());
        return TC_PASS;
    }
    if let Some(e) = conntrack::lookup(&key, &p) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let e = unsafe { &mut *e };
        if current(e, cfg, || endpoint_audits(ctx, cfg)) {
            if p.first_fragment {
                fragments::remember(&p, dir, e.verdict, e.reason, e.src_ns, e.dst_ns);
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
    slow_path(ctx, cfg, dir, &p, &key)
}

#[inline(always)]
fn endpoint(ctx: &TcContext) -> Option<&'static Endpoint> {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: endpoints are written by the agent only; a torn read at worst yields a stale
    // verdict that the next revision check corrects.
    unsafe { CNS_ENDPOINTS.get(ifindex) }
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
    endpoint(ctx).is_some_and(|ep| audits(ep, cfg))
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

/// IPv6 or malformed IPv4: passes only for endpoints not isolated in this direction.
#[inline(always)]
fn unparsed(ctx: &TcContext, cfg: &Config, dir: u8, reason: u8) -> i32 {
    let Some(ep) = endpoint(ctx) else {
        return no_endpoint(ctx, cfg, dir, 0);
    };
    let (verdict, action) = if !isolated(ep, dir) {
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
        let ev = Event {
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
        };
        stats::event(cfg, &ev);
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
    let ev = Event {
        ts_ns: 0, // stamped by stats::event
        dir,
        verdict,
        reason: REASON_NO_ENDPOINT,
        ifindex: ep_ifindex(ctx),
        policy_id: u32::MAX,
        ..Event::default()
    };
    stats::event(cfg, &ev);
    action
}

#[inline(always)]
fn ep_ifindex(ctx: &TcContext) -> u32 {
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The policy allowing `identity` to reach `p`'s protocol and port: the exact port, all ports
/// of the protocol, any protocol (hash lookups), then port ranges (the trie) for endpoints
/// that have some.
#[inline(always)]
fn allowed_by(ep: &Endpoint, dir: u8, identity: u32, p: &Packet) -> Option<u32> {
    let mut key = PolicyKey {
        ep_id: ep.ep_id.to_be_bytes(),
        identity: identity.to_be_bytes(),
        dir,
        proto: p.proto,
        port: u16::from_be(p.dport).to_be_bytes(),
    };
    // SAFETY (the three lookups): written by the agent only.
    if let Some(v) = unsafe { CNS_POLICY_EXACT.get(&key) } {
        return Some(v.policy_id);
    }
    let port = key.port;
    key.port = [0; 2];
    if ep.flags & EP_PROTO_RULES != 0
        && let Some(v) = unsafe { CNS_POLICY_EXACT.get(&key) }
    {
        return Some(v.policy_id);
    }
    key.proto = 0;
    if ep.flags & EP_ANY_PROTO_RULES != 0
        && let Some(v) = unsafe { CNS_POLICY_EXACT.get(&key) }
    {
        return Some(v.policy_id);
    }
    if ep.flags & EP_PORT_RANGES == 0 {
        return None;
    }
    key.proto = p.proto;
    key.port = port;
    CNS_POLICY
        .get(&Key::new(POLICY_PREFIX_FULL, key))
        .map(|v| v.policy_id)
}

#[inline(always)]
fn cidr_identity(ep: &Endpoint, dir: u8, addr: u32) -> Option<u32> {
    let key = Key::new(
        CIDR_PREFIX_BASE + 32,
        CidrKey {
            ep_id: ep.ep_id.to_be_bytes(),
            dir,
            _pad: [0; 3],
            addr: addr.to_ne_bytes(),
        },
    );
    CNS_CIDRS.get(&key).copied()
}

const UNKNOWN_REMOTE: Remote = Remote {
    identity: IDENTITY_WORLD,
    ns_id: NS_WORLD,
    _pad: 0,
};

#[inline(always)]
fn slow_path(
    ctx: &TcContext,
    cfg: &Config,
    dir: u8,
    p: &Packet,
    key: &cns_common::maps::CtKey,
) -> i32 {
    let Some(ep) = endpoint(ctx) else {
        return no_endpoint(ctx, cfg, dir, p.proto);
    };
    let d = decide(cfg, ep, dir, p);
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
}

/// The slow path's decision (TC and XDP share it): IP cache, anti-spoofing, isolation,
/// traffic from the node, then at most two policy lookups (the peer's identity, the ipBlock
/// set its address falls in); audit mode turns a drop into `audit`.
#[inline(always)]
pub fn decide(cfg: &Config, ep: &Endpoint, dir: u8, p: &Packet) -> Decision {
    let (remote_addr, local_addr) = if dir == DIR_INGRESS {
        (p.saddr, p.daddr)
    } else {
        (p.daddr, p.saddr)
    };
    // SAFETY: written by the agent only.
    let remote = unsafe { CNS_IPCACHE.get(remote_addr) }.unwrap_or(&UNKNOWN_REMOTE);

    let mut policy_id = u32::MAX;
    let (allowed, reason) = if dir != DIR_INGRESS && local_addr != ep.ip {
        (false, REASON_SPOOFED)
    } else if !isolated(ep, dir) {
        (true, REASON_NOT_ISOLATED)
    } else if dir == DIR_INGRESS && remote.identity == IDENTITY_HOST {
        (true, REASON_FROM_HOST)
    } else if let Some(id) = allowed_by(ep, dir, remote.identity, p) {
        policy_id = id;
        (true, REASON_POLICY_ALLOWED)
    } else if let Some(id) =
        cidr_identity(ep, dir, remote_addr).and_then(|cidr| allowed_by(ep, dir, cidr, p))
    {
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
    }
}

/// What a decision leaves behind: the counter (when `count` holds the frame length: XDP
/// leaves passing packets to be counted by TC, so each packet is counted once per
/// endpoint), the first fragment's verdict, the conntrack entries of a passing flow, and
/// the event of a drop or audit. `ifindex` is the endpoint's veth, whichever program ran.
/// Returns the counter slot the packet was counted in (0 when not counted).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn record(
    cfg: &Config,
    ep: &Endpoint,
    ifindex: u32,
    dir: u8,
    p: &Packet,
    key: &cns_common::maps::CtKey,
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

    if verdict != VERDICT_DROPPED
        && !p.later_fragment
        && cfg.flags & CONFIG_NO_CONNTRACK_CREATE == 0
    {
        let entry = CtEntry {
            revision: cfg.revision,
            src_identity: d.src_identity,
            dst_identity: d.dst_identity,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            verdict,
            reason,
            policy_id: d.policy_id,
            counter: slot,
            ..CtEntry::default()
        };
        conntrack::create(key, p, &entry);
    }
    let allowed_by_rule = d.reason == REASON_POLICY_ALLOWED && d.policy_id != u32::MAX;
    if verdict != VERDICT_FORWARDED
        || (allowed_by_rule && cfg.flags & CONFIG_POLICY_VERDICT_EVENTS != 0)
    {
        let ev = Event {
            ts_ns: 0, // stamped by stats::event
            saddr: v4_bytes(p.saddr),
            daddr: v4_bytes(p.daddr),
            family: cns_common::maps::FAMILY_IPV4,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            dir,
            verdict,
            reason: d.reason,
            src_identity: d.src_identity,
            dst_identity: d.dst_identity,
            ifindex,
            ep_id: ep.ep_id,
            src_ns: d.src_ns,
            dst_ns: d.dst_ns,
            policy_id: d.policy_id,
            _pad: [0; 7],
        };
        stats::event(cfg, &ev);
    }
    slot
}

/// An IPv4 address in an event's 16-byte address field.
#[inline(always)]
pub fn v4_bytes(a: u32) -> [u8; 16] {
    let b = a.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}
