//! Two-instruction XDP programs the bench loads itself with the `bpf` syscall, and
//! `BPF_PROG_TEST_RUN` on them (including `BPF_F_TEST_XDP_LIVE_FRAMES`, which aya 0.14
//! cannot combine with the agent's `Datapath`).
//!
//! - The empty XDP program (`r0 = XDP_PASS; exit`, what an empty `#[xdp]` function compiles
//!   to): the XDP floor of the kernel section. cns-ebpf has an empty TC program
//!   (`cns_empty`) but no empty XDP one.
//! - The flood generator, run with live frames in the "outside" netns: it writes the whole
//!   frame and returns `XDP_TX`, so every frame is sent out of the outside veth into the
//!   node's uplink, at rates a socket sender cannot reach. (Live frames recycle their pages
//!   without copying the data again, and a node that forwards a frame rewrites its MACs and
//!   TTL in place: a generator that only returned `XDP_TX` would send frames for another
//!   host after the first batch.)

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use nix::libc;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`; the tail is zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE`, up to `flags`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _tail: [u64; 4],
}

/// `struct xdp_md`, the context of an XDP test run.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out `bpf_attr` prefix of the given size; the
    // kernel reads and writes only within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One BPF instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from((src << 4) | dst) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// `r0 = action; exit`
fn ret(action: u32) -> [u64; 2] {
    [insn(0xb7, 0, 0, 0, action as i32), insn(0x95, 0, 0, 0, 0)]
}

/// A raw XDP program.
pub struct RawXdp {
    fd: OwnedFd,
}

impl RawXdp {
    /// A program that returns `action` and does nothing else.
    pub fn constant(name: &str, action: u32) -> std::io::Result<Self> {
        Self::load(name, &ret(action))
    }

    /// A program that overwrites the start of each frame with `frame` (a multiple of 4
    /// bytes; shorter frames are left alone) and returns `action`.
    pub fn writer(name: &str, frame: &[u8], action: u32) -> std::io::Result<Self> {
        assert!(
            frame.len().is_multiple_of(4),
            "frame length must be a multiple of 4"
        );
        let stores: Vec<u64> = frame
            .chunks(4)
            .enumerate()
            .map(|(i, w)| {
                let imm = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                // *(u32 *)(r2 + 4i) = imm
                insn(0x62, 2, 0, (4 * i) as i16, imm as i32)
            })
            .collect();
        let mut insns = vec![
            insn(0x61, 2, 1, 0, 0),                   // r2 = ctx->data
            insn(0x61, 3, 1, 4, 0),                   // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                   // r4 = r2
            insn(0x07, 4, 0, 0, frame.len() as i32),  // r4 += len
            insn(0x2d, 4, 3, stores.len() as i16, 0), // if r4 > r3: skip the stores
        ];
        insns.extend(stores);
        insns.extend(ret(action));
        Self::load(name, &insns)
    }

    fn load(name: &str, insns: &[u64]) -> std::io::Result<Self> {
        let license = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        for (d, s) in attr.prog_name[..15].iter_mut().zip(name.bytes()) {
            *d = s;
        }
        let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { fd })
    }

    /// Attaches the program to `ifindex` (an interface of the calling thread's netns) with a
    /// BPF link, native mode where the driver has it; detached when the link is dropped.
    pub fn attach(&self, ifindex: u32) -> std::io::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            ..Default::default()
        };
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Runs the program `repeat` times on `packet` (`BPF_PROG_TEST_RUN`); returns the
    /// verdict and the kernel's average time per run.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> std::io::Result<(u32, Duration)> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: packet.len() as u32,
            data_in: packet.as_ptr() as u64,
            repeat,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok((attr.retval, Duration::from_nanos(u64::from(attr.duration))))
    }

    /// Runs the program on `frames` live frames built from `packet`, as if received on
    /// `ingress_ifindex` (an interface of the calling thread's netns), `batch` frames per
    /// batch: XDP_TX frames are really transmitted out of that interface. Returns the
    /// kernel's average time per frame.
    pub fn live_frames(
        &self,
        packet: &[u8],
        ingress_ifindex: u32,
        frames: u32,
        batch: u32,
    ) -> std::io::Result<Duration> {
        let ctx = XdpMd {
            data_end: packet.len() as u32,
            ingress_ifindex,
            ..Default::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: packet.len() as u32,
            data_in: packet.as_ptr() as u64,
            repeat: frames,
            ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
            ctx_in: std::ptr::from_ref(&ctx) as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: batch,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(Duration::from_nanos(u64::from(attr.duration)))
    }
}
