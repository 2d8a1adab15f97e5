//! IPv4 fragments: only the first carries the ports, so its verdict is remembered (by
//! addresses, IP id and protocol) and the later fragments inherit it. A later fragment with
//! no remembered first fragment (lost, reordered, or forged) goes to policy with no ports,
//! where only "any port" rules can admit it.

use aya_ebpf::bindings::BPF_ANY;
use cns_common::maps::{FragKey, FragValue};

use crate::{maps::CNS_FRAGMENTS, parse::Packet};

#[inline(always)]
fn key(p: &Packet, dir: u8) -> FragKey {
    FragKey {
        saddr: p.saddr,
        daddr: p.daddr,
        id: p.ip_id,
        proto: p.proto,
        dir,
    }
}

/// Records the verdict of a first fragment that passed.
#[inline(always)]
pub fn remember(p: &Packet, dir: u8, verdict: u8, reason: u8, src_ns: u16, dst_ns: u16) {
    let value = FragValue {
        verdict,
        reason,
        src_ns,
        dst_ns,
        _pad2: 0,
    };
    _ = CNS_FRAGMENTS.insert(key(p, dir), value, BPF_ANY as u64);
}

/// The verdict of this later fragment's first fragment, if it passed.
#[inline(always)]
pub fn lookup(p: &Packet, dir: u8) -> Option<FragValue> {
    // SAFETY: a copy of a map value.
    unsafe { CNS_FRAGMENTS.get(key(p, dir)) }.copied()
}
