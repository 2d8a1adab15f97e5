//! The programs' clock: jiffies (`bpf_jiffies64`). The verifier inlines the read into one
//! load, where a nanosecond clock (`bpf_ktime_get_coarse_ns`) is a helper call on every
//! packet of an established flow. Lifetimes are seconds times `Config::hz`, which the agent
//! measures at load (`datapath::clock`).

use aya_ebpf::helpers::bpf_jiffies64;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_jiffies64() }
}
