//! Packet bytes read 4 at a time.
//!
//! The compiler only knows a packet pointer as 1-byte aligned, so a `u32` read through it
//! becomes four byte loads, shifts and ors (BPF has no unaligned loads as far as LLVM's
//! backend is concerned). The kernel allows a 4-byte load at any packet offset where the
//! CPU reads unaligned words cheaply (x86-64, arm64), and checks alignment where it does
//! not, counting the 2 bytes drivers put before the Ethernet header (`NET_IP_ALIGN`): the
//! words read here (IPv4 header words; TCP's and UDP's first word, TCP's fourth; all at
//! 4-byte offsets from the IP header) pass that check too. So the load is written out as one
//! BPF instruction.
//! (Shared with the bench's floors, which read their packets the same way.)

/// The 4 bytes at `ptr + OFF` as they lie (a native-endian word of network-order bytes).
/// Not loaded at all when the caller never uses it (`pure`).
///
/// # Safety
/// `[ptr + OFF, ptr + OFF + 4)` is within the packet, checked against its end by the caller
/// in a form the verifier tracks (`ptr + n <= end`, `n >= OFF + 4`).
#[inline(always)]
pub unsafe fn at<const OFF: i16>(ptr: usize) -> u32 {
    let w: u32;
    // SAFETY: within the packet (the caller's contract); a load has no other effect.
    unsafe {
        core::arch::asm!(
            "{w} = *(u32 *)({p} + {off})",
            w = lateout(reg) w,
            p = in(reg) ptr,
            off = const OFF,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    w
}

/// `N` (at most 5) words at `ptr`, as [`at`] reads them.
///
/// # Safety
/// `[ptr, ptr + 4 * N)` is within the packet, checked as for [`at`].
#[inline(always)]
pub unsafe fn read<const N: usize>(ptr: usize) -> [u32; N] {
    const { assert!(N <= 5) };
    let mut w = [0u32; N];
    // SAFETY (each): within [ptr, ptr + 4 * N), the caller's contract.
    unsafe {
        if N > 0 {
            w[0] = at::<0>(ptr);
        }
        if N > 1 {
            w[1] = at::<4>(ptr);
        }
        if N > 2 {
            w[2] = at::<8>(ptr);
        }
        if N > 3 {
            w[3] = at::<12>(ptr);
        }
        if N > 4 {
            w[4] = at::<16>(ptr);
        }
    }
    w
}

/// Copies `N` bytes (a multiple of 4) at `src` to `dst` a word at a time.
///
/// # Safety
/// `[src, src + N)` is within the packet, checked as for [`at`]; `dst` is `N` writable
/// bytes, 4-byte aligned.
#[inline(always)]
pub unsafe fn copy<const N: usize>(src: usize, dst: *mut u8) {
    const { assert!(N % 4 == 0) };
    for i in 0..N / 4 {
        // SAFETY: within both ranges (the caller's contract).
        unsafe { dst.cast::<u32>().add(i).write(at::<0>(src + 4 * i)) };
    }
}
