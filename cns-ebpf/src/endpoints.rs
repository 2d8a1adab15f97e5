//! The local pod behind a veth: `CNS_ENDPOINTS` (a hash by ifindex, written by the agent),
//! read through this CPU's copies (`CNS_EP_CACHE`, see `cns_common::maps::EP_CACHE`).
//!
//! A copy is an array slot (the verifier inlines its lookup: a few instructions, no hash),
//! used while it was made for this ifindex under the revision the caller read before any
//! other map. A miss costs the hash lookup it replaces plus the copy.
//!
//! What this relies on:
//! - The agent bumps the revision after every batch of map writes (before anything else
//!   that can fail; a failed bump is retried at the next sync).
//! - Programs on one CPU never interleave: TC and XDP run in softirq or with bottom halves
//!   off. (Not so on PREEMPT_RT kernels, nor for a `BPF_PROG_TEST_RUN` of a TC program,
//!   which a softirq may interrupt; a slot is emptied before it is rewritten, so a reader
//!   that checks it during the rewrite misses.)
//! - The revision is read before the hash entry: in program order on x86 (loads are not
//!   reordered); elsewhere a reordered load is nanoseconds early, while the agent's endpoint
//!   write and its revision bump are separate system calls, microseconds apart.

use cns_common::maps::{EP_CACHE_SLOTS, Endpoint};

use crate::maps::{CNS_ENDPOINTS, CNS_EP_CACHE};

const _: () = assert!(EP_CACHE_SLOTS.is_power_of_two());

/// The endpoint behind `ifindex`, as of `revision` (`policy::revision`, read before this).
#[inline(always)]
pub fn get(ifindex: u32, revision: u32) -> Option<&'static Endpoint> {
    // A mask, not `%`: the verifier tracks its bound, so the slot is always found.
    let Some(c) = CNS_EP_CACHE.get_ptr_mut(ifindex & (EP_CACHE_SLOTS - 1)) else {
        // SAFETY: written by the agent only.
        return unsafe { CNS_ENDPOINTS.get(ifindex) };
    };
    // SAFETY: this CPU's slot, valid for this program run (see the module's comment).
    let c = unsafe { &mut *c };
    if c.ifindex == ifindex && c.revision == revision && ifindex != 0 {
        return Some(&c.ep);
    }
    // SAFETY: written by the agent only; a torn read at worst yields a stale verdict that
    // the next revision corrects.
    let ep = unsafe { CNS_ENDPOINTS.get(ifindex) }?;
    // Emptied, filled, then stamped (volatile: in that order).
    // SAFETY: fields of this CPU's slot.
    unsafe {
        core::ptr::write_volatile(&mut c.ifindex, 0);
        core::ptr::write_volatile(&mut c.ep, *ep);
        core::ptr::write_volatile(&mut c.revision, revision);
        core::ptr::write_volatile(&mut c.ifindex, ifindex);
    }
    Some(&c.ep)
}
