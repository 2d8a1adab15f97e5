//! Counters (per namespace pair), datapath statistics and rate-limited events.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use cns_common::maps::{
    Config, Counter, CounterKey, Event, STAT_COUNTERS_FULL, STAT_EVENTS_LOST,
    STAT_EVENTS_SUPPRESSED,
};

use crate::maps::{CNS_COUNTERS, CNS_EVENTS, CNS_RATE_LIMIT, CNS_STATS};

#[inline(always)]
pub fn incr(stat: u32) {
    if let Some(v) = CNS_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
pub fn count(src_ns: u16, dst_ns: u16, dir: u8, verdict: u8, bytes: u32) {
    let key = CounterKey {
        src_ns,
        dst_ns,
        dir,
        verdict,
        _pad: 0,
    };
    if let Some(c) = CNS_COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
        return;
    }
    let first = Counter {
        packets: 1,
        bytes: bytes as u64,
    };
    if CNS_COUNTERS.insert(key, first, BPF_NOEXIST as u64).is_err() {
        // Another CPU may have created it meanwhile; try once more before calling it full.
        if let Some(c) = CNS_COUNTERS.get_ptr_mut(key) {
            unsafe {
                (*c).packets += 1;
                (*c).bytes += bytes as u64;
            }
        } else {
            incr(STAT_COUNTERS_FULL);
        }
    }
}

/// Emits `ev` if this CPU's token bucket allows; counts what was suppressed or lost.
#[inline(always)]
pub fn event(cfg: &Config, ev: &Event) {
    if cfg.event_rate == 0 {
        return;
    }
    let Some(rl) = CNS_RATE_LIMIT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value, only this CPU writes it.
    let rl = unsafe { &mut *rl };
    let now = ev.ts_ns;
    let elapsed = now.saturating_sub(rl.last_ns);
    let burst = cfg.event_burst as u64;
    // tokens are kept in millionths so slow rates still refill.
    let refill = elapsed / 1000 * cfg.event_rate as u64;
    rl.tokens = core::cmp::min(burst * 1_000_000, rl.tokens + refill);
    rl.last_ns = now;
    if rl.tokens < 1_000_000 {
        incr(STAT_EVENTS_SUPPRESSED);
        return;
    }
    rl.tokens -= 1_000_000;
    if CNS_EVENTS.output::<Event>(ev, 0).is_err() {
        incr(STAT_EVENTS_LOST);
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}
