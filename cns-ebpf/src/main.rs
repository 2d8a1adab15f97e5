//! cns kernel programs. Start at [`cns_to_pod`] / [`cns_from_pod`]: TC (tcx) programs on the
//! host side of each local pod's veth. Host-egress (towards the pod) is the pod's ingress,
//! host-ingress (from the pod) its egress.
//!
//! Per packet: parse (`parse`), one conntrack lookup (`conntrack`); an established flow whose
//! entry is current is counted and passes. Anything else takes the slow path (`policy`):
//! endpoint, IP cache, policy LPM (at most two lookups: the peer's identity, then the ipBlock
//! set its address falls in), verdict, conntrack entries, counters, events.
//!
//! IPv4 and IPv6 run the same code: the address family matters in one module (`family`),
//! and everything above is generic over it (see `policy::handle` for how the two paths are
//! laid out as BPF functions). IPv6 walks its extension headers (`parse::ipv6`); ICMPv6
//! Neighbor Discovery always passes.
//!
//! [`cns_xdp`] (`xdp`) runs on the node's uplink: an early filter that drops denied traffic
//! from outside the node to isolated local pods with the same maps and decision code.
#![no_std]
#![feature(asm_experimental_arch)]
#![no_main]

mod clock;
mod conntrack;
mod endpoints;
mod family;
mod fragments;
mod maps;
mod parse;
mod policy;
mod stats;
mod words;
mod xdp;

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use cns_common::{DIR_EGRESS, DIR_INGRESS};

/// Let the next program in the tcx chain (or the stack) have the packet.
pub const TC_PASS: i32 = -1;
pub const TC_DROP: i32 = 2;

/// Host-egress on the pod's veth: traffic going into the pod.
#[classifier]
pub fn cns_to_pod(ctx: TcContext) -> i32 {
    policy::handle::<DIR_INGRESS>(&ctx)
}

/// Host-ingress on the pod's veth: traffic leaving the pod.
#[classifier]
pub fn cns_from_pod(ctx: TcContext) -> i32 {
    policy::handle::<DIR_EGRESS>(&ctx)
}

/// XDP on the node's uplink: drops denied traffic to isolated local pods early; everything
/// else passes to the stack (and to TC on the pod's veth).
#[xdp]
pub fn cns_xdp(ctx: XdpContext) -> u32 {
    xdp::handle(&ctx)
}

/// Does nothing: the floor the benchmark measures the other programs against.
#[classifier]
pub fn cns_empty(_ctx: TcContext) -> i32 {
    TC_PASS
}

/// The clock the agent calibrates its reading of jiffies against (`datapath::clock`): writes
/// `bpf_jiffies64` and `bpf_ktime_get_ns` (CLOCK_MONOTONIC), native-endian, into the first 16
/// bytes of the (test-run) packet. Never attached.
#[classifier]
pub fn cns_clock(ctx: TcContext) -> i32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 16 <= end {
        // SAFETY: within [data, data_end), checked above; helpers without arguments.
        unsafe {
            core::ptr::write_unaligned(start as *mut u64, bpf_jiffies64());
            core::ptr::write_unaligned((start + 8) as *mut u64, bpf_ktime_get_ns());
        }
    }
    TC_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
