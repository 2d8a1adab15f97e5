//! Fragments: only the first carries the ports, so its verdict is remembered (by
//! addresses, the family's fragment id and protocol, see `Family::FragId`) and the later
//! fragments inherit it. A later fragment with no remembered first fragment (lost,
//! reordered, or forged) goes to policy with no ports, where only "any port" rules can
//! admit it.

use aya_ebpf::bindings::BPF_ANY;
use cns_common::maps::FragValue;

use crate::{family::Family, parse::Packet};

#[inline(always)]
fn key<F: Family>(p: &Packet<F>, dir: u8) -> F::FragKey {
    F::frag_key(&p.saddr, &p.daddr, p.frag_id, p.proto, dir)
}

/// Records the verdict of a first fragment that passed.
#[inline(always)]
pub fn remember<F: Family>(
    p: &Packet<F>,
    dir: u8,
    verdict: u8,
    reason: u8,
    src_ns: u16,
    dst_ns: u16,
) {
    let value = FragValue {
        verdict,
        reason,
        src_ns,
        dst_ns,
        _pad2: 0,
    };
    _ = F::fragments().insert(key(p, dir), value, BPF_ANY as u64);
}

/// The verdict of this later fragment's first fragment, if it passed.
#[inline(always)]
pub fn lookup<F: Family>(p: &Packet<F>, dir: u8) -> Option<FragValue> {
    // SAFETY: a copy of a map value.
    unsafe { F::fragments().get(key(p, dir)) }.copied()
}
