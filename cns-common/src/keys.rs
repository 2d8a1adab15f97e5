//! Hash keys the programs build on every packet, written a word at a time.
//!
//! A key built field by field is a row of 1-, 2- and 4-byte stores, which the kernel's hash
//! (`jhash2`, 4-byte words) and compare (8-byte words) then read back at once: loads that
//! span several pending stores cannot be forwarded from the CPU's store buffer and wait for
//! them to reach the cache (measured: about 3 ns per key on this machine). Here each 8-byte
//! word of a key is computed in a register and stored whole. The bytes are those of the
//! struct literal (tested below); the layouts are the ones in [`crate::maps`].
//!
//! Little-endian only (bpfel, and the hosts cns runs on): the first field is the low end of
//! its word.

use crate::maps::{CtKey, DenyKey, PolicyKey};

/// A key in 8-byte-aligned memory, so that its first 8 bytes are stored as one word (the
/// 12-byte keys here; the families' deny cache keys in `cns-ebpf`).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Aligned<T>(pub T);

/// A 12-byte key from its two words (the first 8 bytes, the last 4).
#[inline(always)]
fn words12<T: Copy>(w0: u64, w1: u32) -> Aligned<T> {
    const { assert!(core::mem::size_of::<T>() == 12 && core::mem::align_of::<T>() <= 8) };
    let mut k = core::mem::MaybeUninit::<Aligned<T>>::uninit();
    let p = k.as_mut_ptr().cast::<u64>();
    // SAFETY: the 16 bytes of `Aligned<T>` (8-byte aligned) hold T's 12 bytes, all written
    // here; every bit pattern is a valid key (plain integers and byte arrays).
    unsafe {
        p.write(w0);
        p.add(1).cast::<u32>().write(w1);
        k.assume_init()
    }
}

/// Two 4-byte values (as stored: addresses in network order) as one word.
#[inline(always)]
const fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

/// Ports, protocol and direction: the last word of the conntrack key.
#[inline(always)]
const fn ct_tail(sport: u16, dport: u16, proto: u8, dir: u8) -> u64 {
    sport as u64 | (dport as u64) << 16 | (proto as u64) << 32 | (dir as u64) << 40
}

impl CtKey {
    /// Addresses and ports as the packet carries them (network order).
    #[inline(always)]
    pub fn new(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, dir: u8) -> Self {
        let w = [pair(saddr, daddr), ct_tail(sport, dport, proto, dir)];
        // SAFETY: same size (checked by transmute), every bit pattern is a valid key.
        unsafe { core::mem::transmute::<[u64; 2], CtKey>(w) }
    }
}

impl DenyKey {
    /// Addresses and destination port as the packet carries them (network order).
    #[inline(always)]
    pub fn aligned(saddr: u32, daddr: u32, dport: u16, proto: u8) -> Aligned<DenyKey> {
        words12(pair(saddr, daddr), dport as u32 | (proto as u32) << 16)
    }
}

impl PolicyKey {
    /// `port` as the packet carries it (network order); `ep_id` and `identity` as numbers
    /// (stored big-endian).
    #[inline(always)]
    pub fn aligned(ep_id: u32, identity: u32, dir: u8, proto: u8, port: u16) -> Aligned<Self> {
        words12(
            pair(ep_id.to_be(), identity.to_be()),
            dir as u32 | (proto as u32) << 8 | (port as u32) << 16,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_built_by_words_are_the_struct_literals() {
        let (s, d) = (
            u32::from_ne_bytes([10, 0, 0, 1]),
            u32::from_ne_bytes([10, 0, 1, 2]),
        );
        let (sport, dport) = (1234u16.to_be(), 80u16.to_be());
        assert_eq!(
            CtKey::new(s, d, sport, dport, 6, 1),
            CtKey {
                saddr: s,
                daddr: d,
                sport,
                dport,
                proto: 6,
                dir: 1,
                _pad: 0,
            }
        );
        assert_eq!(
            DenyKey::aligned(s, d, dport, 17).0,
            DenyKey {
                saddr: s,
                daddr: d,
                dport,
                proto: 17,
                _pad: 0,
            }
        );
        assert_eq!(
            PolicyKey::aligned(0x0102_0304, 0x8000_0005, 1, 6, dport).0,
            PolicyKey {
                ep_id: 0x0102_0304u32.to_be_bytes(),
                identity: 0x8000_0005u32.to_be_bytes(),
                dir: 1,
                proto: 6,
                port: 80u16.to_be_bytes(),
            }
        );
    }
}
