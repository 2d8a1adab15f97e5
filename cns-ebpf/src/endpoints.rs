//! The local pod behind a veth: `CNS_ENDPOINTS` (a hash by ifindex, written by the agent),
//! read through this CPU's copies (`CNS_EP_CACHE`, see `cns_common::maps::EP_CACHE`).
//!
//! A copy is an array slot (the verifier inlines its lookup: a few instructions, no hash),
//! used while it was made for this ifindex under the revision the caller read before any
//! other map. A miss costs the hash lookup it replaces plus the copy.

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
    // SAFETY: this CPU's slot, valid for this program run; programs on one CPU never run
    // at once (TC and XDP run with bottom halves off).
    let c = unsafe { &mut *c };
    if c.ifindex == ifindex && c.revision == revision && ifindex != 0 {
        return Some(&c.ep);
    }
    // SAFETY: written by the agent only; a torn read at worst yields a stale verdict that
    // the next revision corrects.
    let ep = unsafe { CNS_ENDPOINTS.get(ifindex) }?;
    c.ep = *ep;
    c.ifindex = ifindex;
    c.revision = revision;
    Some(&c.ep)
}
