//! Counters (per namespace pair), datapath statistics and rate-limited events.

use aya_ebpf::{Global, bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use cns_common::{
    VERDICT_FORWARDED,
    maps::{
        COUNTER_PROBES, COUNTERS_CAPACITY, Config, CounterKey, Event, NO_COUNTER,
        STAT_COUNTERS_FULL, STAT_EVENTS_LOST, STAT_EVENTS_SUPPRESSED,
    },
};

use crate::{
    clock,
    maps::{
        CNS_COUNTER_KEYS, CNS_COUNTER_OWNERS, CNS_COUNTERS, CNS_EVENTS, CNS_RATE_LIMIT, CNS_STATS,
    },
};

/// Entries of the counters maps, as the agent created them (`--map-sizes counters=N`; the
/// loader overrides it by the name `cns_common::maps::COUNTERS_CAPACITY_GLOBAL`).
#[unsafe(no_mangle)]
static CNS_COUNTERS_CAPACITY: Global<u32> = Global::new(COUNTERS_CAPACITY);

#[inline(always)]
pub fn incr(stat: u32) {
    if let Some(v) = CNS_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *v += 1 };
    }
}

/// The slot of `key` in the counters, claimed the first time a key is seen; `NO_COUNTER`
/// (and `STAT_COUNTERS_FULL`) when none of the slots probed is free. Found by probing
/// `CNS_COUNTER_KEYS` (array reads, no hash lookup) from the key's hash up to the first free
/// slot, which [`claim`] takes.
#[inline(always)]
pub fn slot(key: &CounterKey) -> u32 {
    let packed = key.packed();
    // Probes start in 1..=slots-PROBES+1 and never wrap: no branch on the slot number,
    // which would double the verifier's states at each probe.
    let slots = CNS_COUNTERS_CAPACITY.load().saturating_sub(COUNTER_PROBES);
    let start = 1 + CounterKey::probe_start(packed, slots);
    for i in 0..COUNTER_PROBES {
        let s = start + i;
        match CNS_COUNTER_KEYS.get(s) {
            Some(&cached) if cached == packed => return s,
            Some(&0) => return claim(key, packed, s),
            _ => {}
        }
    }
    incr(STAT_COUNTERS_FULL);
    NO_COUNTER
}

/// Claims slot `s` (free when probed) for `key` in `CNS_COUNTER_OWNERS` (atomic: of CPUs
/// racing for it, one insert succeeds), then caches it in `CNS_COUNTER_KEYS`. Lost to a CPU
/// claiming it for the same key: that slot. Lost to another key: 0, "not looked up yet"
/// (this packet goes uncounted; the flow's next packet probes again).
#[inline(always)]
fn claim(key: &CounterKey, packed: u64, s: u32) -> u32 {
    if CNS_COUNTER_OWNERS
        .insert(&s, key, BPF_NOEXIST as u64)
        .is_ok()
    {
        if let Some(v) = CNS_COUNTER_KEYS.get_ptr_mut(s) {
            // SAFETY: a map value; every writer of this slot writes the same key.
            unsafe { *v = packed };
        }
        return s;
    }
    // SAFETY: a copy of a map value (an insert publishes it whole).
    match unsafe { CNS_COUNTER_OWNERS.get(&s) } {
        Some(k) if k.packed() == packed => s,
        _ => 0,
    }
}

/// Adds a packet of `bytes` to the counter in `slot` (ignored for `NO_COUNTER`: already
/// reported as full when the slot was sought).
#[inline(always)]
pub fn add(slot: u32, bytes: u32) {
    if let Some(c) = CNS_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

/// The counter key of a packet: forwarded packets are not split by reason.
#[inline(always)]
pub fn key(src_ns: u16, dst_ns: u16, dir: u8, verdict: u8, proto: u8, reason: u8) -> CounterKey {
    CounterKey {
        src_ns,
        dst_ns,
        dir,
        verdict,
        proto,
        reason: if verdict == VERDICT_FORWARDED {
            0
        } else {
            reason
        },
    }
}

/// Counts a packet under `key` (probing for its slot: the slow path's way; established flows
/// keep their slot in the conntrack entry and call [`add`]).
#[inline(always)]
pub fn count(key: &CounterKey, bytes: u32) -> u32 {
    let s = slot(key);
    add(s, bytes);
    s
}

/// Emits the event `make` builds if this CPU's token bucket allows, stamped with the time
/// (`ts_ns` is set here, only for events that go out); counts what was suppressed or lost.
/// The event is built straight into the ring buffer's reserved record (not on the stack,
/// and not at all when suppressed). The bucket runs on jiffies (`clock`): a flood's
/// suppressed events then cost no clock helper call and, within a tick, no refill
/// arithmetic. Rate and burst are as configured; tokens come in once a tick (a few ms)
/// instead of continuously.
#[inline(always)]
pub fn event(cfg: &Config, make: impl FnOnce() -> Event) {
    if cfg.event_rate == 0 {
        return;
    }
    let Some(rl) = CNS_RATE_LIMIT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value, only this CPU writes it.
    let rl = unsafe { &mut *rl };
    let now = clock::now();
    let elapsed = now.saturating_sub(rl.last);
    let full = cfg.event_burst as u64 * 1_000_000;
    let mut tokens = rl.tokens;
    if elapsed != 0 {
        // Tokens are kept in millionths so slow rates still refill. A minute idle refills
        // the bucket (and bounds the product).
        let hz = cfg.hz as u64;
        tokens = if elapsed >= 60 * hz {
            full
        } else {
            tokens + elapsed * (cfg.event_rate as u64 * 1_000_000 / hz.max(1))
        };
        rl.last = now;
    }
    tokens = core::cmp::min(full, tokens);
    if tokens < 1_000_000 {
        rl.tokens = tokens;
        incr(STAT_EVENTS_SUPPRESSED);
        return;
    }
    rl.tokens = tokens - 1_000_000;
    let Some(mut record) = CNS_EVENTS.reserve::<Event>(0) else {
        incr(STAT_EVENTS_LOST);
        return;
    };
    let ev = record.write(make());
    ev.ts_ns = now_ns();
    record.submit(0);
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}
