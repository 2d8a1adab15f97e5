//! Counters (per namespace pair), datapath statistics and rate-limited events.

use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};
use cns_common::{
    VERDICT_FORWARDED,
    maps::{
        COUNTER_PROBES, COUNTERS_CAPACITY, Config, CounterKey, Event, NO_COUNTER,
        STAT_COUNTERS_FULL, STAT_EVENTS_LOST, STAT_EVENTS_SUPPRESSED,
    },
};

use crate::maps::{
    CNS_COUNTER_OWNERS, CNS_COUNTER_SLOTS, CNS_COUNTERS, CNS_EVENTS, CNS_RATE_LIMIT, CNS_STATS,
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
/// (and `STAT_COUNTERS_FULL`) when none of the slots probed is free.
#[inline(always)]
pub fn slot(key: &CounterKey) -> u32 {
    // SAFETY: a copy of a map value.
    if let Some(&s) = unsafe { CNS_COUNTER_SLOTS.get(key) } {
        return s;
    }
    // Slots 1..capacity, from a multiplicative hash of the 8-byte key, then linear probing.
    let bits = u64::from(key.src_ns)
        | u64::from(key.dst_ns) << 16
        | u64::from(key.dir) << 32
        | u64::from(key.verdict) << 40
        | u64::from(key.proto) << 48
        | u64::from(key.reason) << 56;
    let capacity = CNS_COUNTERS_CAPACITY.load();
    if capacity < 2 {
        // Never with the agent's bounds; keeps the divisor below non-zero.
        incr(STAT_COUNTERS_FULL);
        return NO_COUNTER;
    }
    let slots = capacity - 1;
    let start = ((bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32) % slots;
    for i in 0..COUNTER_PROBES {
        let s = 1 + (start + i) % slots;
        // Claiming is atomic: of CPUs racing for a slot, one insert succeeds.
        if CNS_COUNTER_OWNERS
            .insert(&s, key, BPF_NOEXIST as u64)
            .is_ok()
        {
            if CNS_COUNTER_SLOTS
                .insert(key, &s, BPF_NOEXIST as u64)
                .is_ok()
            {
                return s;
            }
            // Another CPU claimed a slot for the same key meanwhile: its slot wins, and the
            // one claimed here stays unused (no key maps to it).
            break;
        }
    }
    // SAFETY: as above.
    match unsafe { CNS_COUNTER_SLOTS.get(key) } {
        Some(&s) => s,
        None => {
            incr(STAT_COUNTERS_FULL);
            NO_COUNTER
        }
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

/// Counts a packet under `key` (a hash lookup: the slow path's way; established flows keep
/// their slot in the conntrack entry and call [`add`]).
#[inline(always)]
pub fn count(key: &CounterKey, bytes: u32) -> u32 {
    let s = slot(key);
    add(s, bytes);
    s
}

/// Emits the event `make` builds if this CPU's token bucket allows, stamped with the time
/// (`ts_ns` is set here, only for events that go out); counts what was suppressed or lost.
/// The event is built straight into the ring buffer's reserved record (not on the stack,
/// and not at all when suppressed). The bucket runs on the coarse clock
/// (`bpf_ktime_get_coarse_ns`, the last tick): a flood's suppressed events then cost no
/// precise clock read and, within a tick, no refill arithmetic. Rate and burst are as
/// configured; tokens come in once a tick (a few ms) instead of continuously.
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
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let elapsed = now.saturating_sub(rl.last_ns);
    let burst = cfg.event_burst as u64;
    let mut tokens = rl.tokens;
    if elapsed != 0 {
        // tokens are kept in millionths so slow rates still refill.
        tokens += elapsed / 1000 * cfg.event_rate as u64;
        rl.last_ns = now;
    }
    tokens = core::cmp::min(burst * 1_000_000, tokens);
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
