//! A denied UDP flood from outside the node (issue 7 section 3, issue 6's benchmark): from
//! the virtual node's "outside" netns over the uplink veth to the isolated server pod, on a
//! port no policy allows. Variants, interleaved trial after trial:
//!
//! - cns with `--xdp-interfaces none`: `cns_to_pod` drops the packet on the pod's veth, after
//!   the node built an skb, routed and forwarded it;
//! - cns with the default `--xdp-interfaces` (the default-route uplink): `cns_xdp` drops it
//!   on the uplink;
//! - the kube-router-style iptables + ipset baseline of [`super::traffic`] (conntrack, then
//!   the server's chain, default drop);
//! - no enforcement (for reference: the pod receives the flood, nothing listens);
//! - the XDP floor: a two-instruction program returning `XDP_DROP` on the uplink (what no
//!   XDP filter can beat).
//!
//! Generators per variant:
//!
//! - sockets: one UDP socket per CPU in the outside netns, `sendmmsg` batches of 64;
//! - live frames: an XDP program that writes the frame and returns `XDP_TX`, run with
//!   `BPF_PROG_TEST_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES` on the outside veth, so that every
//!   frame really goes out of it into the node's uplink as an XDP frame (as from a NIC,
//!   without the socket layer in the way). The uplink gets GRO turned on so that the veth
//!   receives through NAPI also without an XDP program (a veth without NAPI refuses XDP
//!   frames);
//! - IPv6 live frames (issue 13): the same over IPv6 (the node is dual-stack) for cns's two
//!   variants and the floor (the iptables baseline is IPv4's; "no enforcement" counts IPv4's
//!   `NoPorts`).
//!
//! Measured per run: packets per second the generator pushed, packets per second the node
//! dropped (counted where the drop happens: cns's counters, the iptables DROP rule, the pod's
//! UDP `NoPorts`, the uplink's received packets for the floor), and CPU per dropped packet
//! from `/proc/stat` (all CPUs): softirq time (the node's receive path: XDP, forwarding, TC,
//! netfilter) and kernel time (softirq + system: the generator's sends as well). With live
//! frames the kernel also reports the generator loop's time per frame, which includes the
//! uplink's NAPI processing when it runs inline (softirq on the generator's CPU).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use nix::libc;
use serde_json::{Value, json};

use super::{Summary, progstats, rawbpf::RawXdp, round3, traffic};
use crate::{
    AgentProcess, PodNet, VirtualNode,
    netns::{NODE_UPLINK_IP, OUTSIDE_IP, OUTSIDE_IP6},
    traffic::in_netns,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodVariant {
    None,
    Tc,
    Xdp,
    Iptables,
    XdpDropFloor,
}

impl FloodVariant {
    pub fn name(self) -> &'static str {
        match self {
            FloodVariant::None => "no enforcement",
            FloodVariant::Tc => "cns, TC on the pod's veth (--xdp-interfaces none)",
            FloodVariant::Xdp => "cns, XDP on the uplink (default)",
            FloodVariant::Iptables => "iptables+ipset",
            FloodVariant::XdpDropFloor => "floor: bare XDP_DROP on the uplink",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    Sockets,
    LiveFrames,
    LiveFrames6,
}

impl Generator {
    pub fn name(self) -> &'static str {
        match self {
            Generator::Sockets => "sockets (sendmmsg)",
            Generator::LiveFrames => "XDP live frames",
            Generator::LiveFrames6 => "XDP live frames, IPv6",
        }
    }
}

/// One generator run.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    sent_pps: f64,
    dropped_pps: f64,
    /// CPU per dropped packet, ns (= ms per million).
    softirq_ns: f64,
    kernel_ns: f64,
    /// Live frames: the kernel's time per frame in the generator loop.
    loop_ns: Option<f64>,
    /// The agent's programs on these frames (`progstats`).
    programs: [Option<(f64, u64)>; 3],
}

/// Per (variant, generator): every trial, summarised, and ratios.
#[derive(Clone, Debug)]
pub struct FloodResult {
    pub variant: FloodVariant,
    pub generator: Generator,
    pub sent_kpps: Summary,
    pub dropped_kpps: Summary,
    pub softirq_ns: Summary,
    pub kernel_ns: Summary,
    pub loop_ns: Option<Summary>,
    /// Live frames, per trial: `loop_ns` minus the bare `XDP_DROP` floor's in the same trial
    /// (what this way of dropping costs beyond generating a frame and dropping it at once).
    pub above_floor_ns: Option<Summary>,
    /// Median per-trial ratio of TC's `above_floor_ns` to this one's.
    pub above_floor_gain_vs_tc: Option<f64>,
    /// Median per-trial ratios of dropped packets per second to the TC variant and to
    /// iptables.
    pub dropped_vs_tc: Option<f64>,
    pub dropped_vs_iptables: Option<f64>,
    /// Live frames, median per-trial ratio of TC's (iptables') generator loop time per frame
    /// to this one's: how many more frames one CPU generates and drops this way.
    pub loop_gain_vs_tc: Option<f64>,
    pub loop_gain_vs_iptables: Option<f64>,
    /// Median per-trial ratio of TC's (iptables') softirq CPU per dropped packet to this
    /// one's: how many more packets one CPU of the node drops this way.
    pub cpu_gain_vs_tc: Option<f64>,
    pub cpu_gain_vs_iptables: Option<f64>,
    /// The agent's programs on these frames, as the kernel timed them (`bpf_stats`).
    pub programs: Vec<super::progstats::ProgramLoad>,
}

impl FloodResult {
    pub fn json(&self) -> Value {
        json!({
            "variant": self.variant.name(),
            "generator": self.generator.name(),
            "sent_kpps": self.sent_kpps.json(),
            "dropped_kpps": self.dropped_kpps.json(),
            "softirq_ns_per_dropped": self.softirq_ns.json(),
            "kernel_ns_per_dropped": self.kernel_ns.json(),
            "generator_loop_ns_per_frame": self.loop_ns.map(|s| s.json()),
            "loop_ns_above_xdp_drop_floor": self.above_floor_ns.map(|s| s.json()),
            "above_floor_tc_over_this": self.above_floor_gain_vs_tc,
            "dropped_pps_vs_tc": self.dropped_vs_tc,
            "dropped_pps_vs_iptables": self.dropped_vs_iptables,
            "loop_per_frame_tc_over_this": self.loop_gain_vs_tc,
            "loop_per_frame_iptables_over_this": self.loop_gain_vs_iptables,
            "softirq_per_dropped_tc_over_this": self.cpu_gain_vs_tc,
            "softirq_per_dropped_iptables_over_this": self.cpu_gain_vs_iptables,
            "programs": self.programs.iter().map(|p| p.json()).collect::<Vec<_>>(),
        })
    }
}

pub struct FloodReport {
    pub trials: usize,
    pub secs: f64,
    pub socket_threads: usize,
    pub unrelated_rules: usize,
    pub xdp_mode: String,
    pub uplink: String,
    pub results: Vec<FloodResult>,
    pub notes: Vec<String>,
}

impl FloodReport {
    pub fn json(&self) -> Value {
        json!({
            "trials": self.trials,
            "seconds_per_run": self.secs,
            "socket_threads": self.socket_threads,
            "unrelated_rules": self.unrelated_rules,
            "uplink": self.uplink,
            "xdp_mode": self.xdp_mode,
            "results": self.results.iter().map(FloodResult::json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    pub fn find(&self, v: FloodVariant, g: Generator) -> Option<&FloodResult> {
        self.results
            .iter()
            .find(|r| r.variant == v && r.generator == g)
    }
}

pub struct Params {
    pub trials: usize,
    pub secs: f64,
    pub unrelated_rules: usize,
    pub iptables: bool,
}

/// Kernel CPU time so far, all CPUs (seconds): (softirq, system + softirq).
fn kernel_cpu_s() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ..., in USER_HZ (100/s).
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (at(6), at(2) + at(5) + at(6))
}

fn ip_out(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (name, ifindex, MAC) of the interface holding `addr` in `netns`.
fn interface_with(netns: &str, addr: Ipv4Addr) -> anyhow::Result<(String, u32, [u8; 6])> {
    let addrs = ip_out(netns, &["ip", "-o", "-4", "addr", "show"])?;
    let line = addrs
        .lines()
        .find(|l| l.contains(&format!("inet {addr}/")))
        .ok_or_else(|| anyhow::anyhow!("no interface with {addr} in {netns}"))?;
    // "3: name    inet 10.255.0.1/30 ..."
    let mut it = line.split_whitespace();
    let ifindex: u32 = it.next().unwrap_or("").trim_end_matches(':').parse()?;
    let name = it.next().unwrap_or("").to_owned();
    let link = ip_out(netns, &["ip", "-o", "link", "show", "dev", &name])?;
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no MAC for {name}"))?;
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16)?;
    }
    Ok((name, ifindex, out))
}

/// Turns GRO on or off for `ifname` in `netns` (the legacy `ETHTOOL_SGRO` ioctl: no
/// ethtool binary needed).
fn set_gro(netns: &str, ifname: &str, on: bool) -> anyhow::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let ifname = ifname.to_owned();
    in_netns(netns, move || -> anyhow::Result<()> {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let mut value = EthtoolValue {
            cmd: ETHTOOL_SGRO,
            data: u32::from(on),
        };
        let mut req = Ifreq {
            name: [0; 16],
            data: &raw mut value,
            _pad: [0; 16],
        };
        for (d, s) in req.name[..15].iter_mut().zip(ifname.bytes()) {
            *d = s;
        }
        // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both
        // alive for the call.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) };
        anyhow::ensure!(
            r == 0,
            "ETHTOOL_SGRO on {ifname}: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    })
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The flood's frames: 60 bytes (64 on the wire).
const FRAME_LEN: usize = 60;

/// A 60-byte Ethernet + IPv4 + UDP frame (64 on the wire) with a valid IP checksum.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let payload = 18usize;
    let mut p = dst_mac.to_vec();
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum
    p.extend(std::iter::repeat_n(0u8, payload));
    p
}

/// A 68-byte Ethernet + IPv6 + UDP frame (the IPv6 header is 20 bytes longer than IPv4's;
/// 6 bytes of UDP payload keep the frame a multiple of 4, as the generator writes it) with a
/// valid UDP checksum (mandatory in IPv6).
pub fn udp_frame6(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let payload = 6usize;
    let len = (8 + payload) as u16;
    let mut p = dst_mac.to_vec();
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend(std::iter::repeat_n(0u8, payload));
    // The pseudo-header: addresses, upper-layer length, next header.
    let mut pseudo = src.octets().to_vec();
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}

/// `threads` UDP sockets in `netns` sending to `to` with `sendmmsg` for `secs`; datagrams
/// sent per second.
fn socket_flood(netns: &str, to: std::net::SocketAddr, threads: usize, secs: f64) -> f64 {
    const BATCH: usize = 64;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ns = netns.to_owned();
            std::thread::spawn(move || {
                in_netns(&ns, move || -> u64 {
                    let Ok(s) = std::net::UdpSocket::bind((OUTSIDE_IP, 0)) else {
                        return 0;
                    };
                    if s.connect(to).is_err() {
                        return 0;
                    }
                    let payload = [0u8; 18];
                    let mut iov = libc::iovec {
                        iov_base: payload.as_ptr() as *mut libc::c_void,
                        iov_len: payload.len(),
                    };
                    // SAFETY: mmsghdr is plain data; all-zero is a valid empty message.
                    let mut msgs: Vec<libc::mmsghdr> =
                        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
                    for m in &mut msgs {
                        m.msg_hdr.msg_iov = &raw mut iov;
                        m.msg_hdr.msg_iovlen = 1;
                    }
                    let t = Instant::now();
                    let mut sent = 0u64;
                    while t.elapsed().as_secs_f64() < secs {
                        // SAFETY: `msgs` and the iovec and payload they point to outlive the
                        // call; the socket is connected, so no addresses are needed.
                        let n = unsafe {
                            libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0)
                        };
                        if n > 0 {
                            sent += n as u64;
                        }
                    }
                    sent
                })
            })
        })
        .collect();
    let sent: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    sent as f64 / t0.elapsed().as_secs_f64()
}

/// The generator program run with live frames on `ifindex` in `netns` for `secs`: frames
/// per second, and the kernel's time per frame.
fn live_flood(
    netns: &str,
    generator: Arc<RawXdp>,
    frame_len: usize,
    ifindex: u32,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    in_netns(netns, move || -> anyhow::Result<(f64, f64)> {
        const CHUNK: u32 = 1 << 15;
        // The program writes every frame: the initial data only sets the length.
        let frame = vec![0u8; frame_len];
        let t = Instant::now();
        let (mut frames, mut kernel_ns) = (0u64, 0.0);
        while t.elapsed().as_secs_f64() < secs {
            let per_frame = generator
                .live_frames(&frame, ifindex, CHUNK, 64)
                .map_err(|e| anyhow::anyhow!("live frames test run: {e}"))?;
            frames += u64::from(CHUNK);
            kernel_ns += per_frame.as_nanos() as f64 * f64::from(CHUNK);
        }
        Ok((
            frames as f64 / t.elapsed().as_secs_f64(),
            kernel_ns / frames as f64,
        ))
    })
}

/// Where the node counts the flood's packets.
enum Counter<'a> {
    Agent(&'a AgentProcess),
    Iptables(&'a str),
    PodNoPorts(&'a str),
    /// (node netns, uplink): packets the uplink received.
    UplinkRx(&'a str, &'a str),
}

impl Counter<'_> {
    fn read(&self) -> anyhow::Result<u64> {
        match self {
            Counter::Agent(a) => Ok(a
                .counters()
                .iter()
                .filter(|r| r["verdict"] == "dropped" && r["direction"] == "ingress")
                .map(|r| r["packets"].as_u64().unwrap_or(0))
                .sum()),
            Counter::Iptables(node) => {
                let out = ip_out(node, &["iptables", "-nvxL", "CNSB-POD-SERVER"])?;
                // "    pkts bytes target ..." : the DROP rule is the chain's last.
                Ok(out
                    .lines()
                    .filter(|l| l.split_whitespace().nth(2) == Some("DROP"))
                    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                    .sum())
            }
            Counter::PodNoPorts(pod) => {
                let snmp = in_netns(pod, || {
                    std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default()
                });
                let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
                let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
                Ok(names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .find(|(n, _)| *n == "NoPorts")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0))
            }
            Counter::UplinkRx(node, uplink) => {
                let out = ip_out(node, &["ip", "-j", "-s", "link", "show", "dev", uplink])?;
                let v: Value = serde_json::from_str(&out)?;
                v[0]["stats64"]["rx"]["packets"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("no rx packets for {uplink}: {out}"))
            }
        }
    }
}

/// Runs `flood` (returning packets per second sent and, for live frames, the kernel's time
/// per frame) and reads what the node dropped and the CPU it took; with `programs`, runs it
/// again to time the agent's programs on it ([`program_times`]).
fn measure(
    counter: &Counter<'_>,
    programs: bool,
    flood: impl Fn() -> anyhow::Result<(f64, Option<f64>)>,
) -> anyhow::Result<Run> {
    let c0 = counter.read()?;
    let (soft0, kern0) = kernel_cpu_s();
    let t = Instant::now();
    let (sent_pps, loop_ns) = flood()?;
    let elapsed = t.elapsed().as_secs_f64();
    let (soft1, kern1) = kernel_cpu_s();
    // Let the last queued packets in before counting.
    std::thread::sleep(Duration::from_millis(20));
    let dropped = counter.read()?.saturating_sub(c0) as f64;
    let per_packet = |s: f64| {
        if dropped > 0.0 {
            s * 1e9 / dropped
        } else {
            0.0
        }
    };
    Ok(Run {
        sent_pps,
        dropped_pps: dropped / elapsed,
        softirq_ns: per_packet(soft1 - soft0),
        kernel_ns: per_packet(kern1 - kern0),
        loop_ns,
        programs: match programs {
            true => program_times(|| flood().map(drop))?,
            false => [None; 3],
        },
    })
}

/// The agent's programs' own time on `flood`'s frames (`progstats`), in a run of its own:
/// with statistics on, every BPF program run (the generator's, the floor's) pays two clock
/// reads, so the timed runs go without them. `None`s where the kernel keeps no statistics.
fn program_times(
    flood: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<[Option<(f64, u64)>; 3]> {
    let Ok(_stats) = progstats::enable() else {
        return Ok([None; 3]);
    };
    let before = progstats::Snapshot::now();
    flood()?;
    Ok(progstats::Snapshot::now().since(&before))
}

/// What a variant set up, torn down on drop.
enum Setup {
    Agent(AgentProcess),
    Iptables(String),
    Floor(
        #[expect(dead_code, reason = "held: closing the link detaches the program")]
        std::os::fd::OwnedFd,
    ),
    Nothing,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Setup::Iptables(node) = self {
            _ = traffic::iptables_down(node);
        }
    }
}

/// Runs the flood variants on `node`, whose pods include `server` (isolated for ingress by
/// the agent's manifests of [`traffic::manifests`]).
pub fn run(
    node: &VirtualNode,
    server: &PodNet,
    p: &Params,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<FloodReport> {
    // Whether the kernel keeps the programs' statistics (`program_times`).
    let stats = progstats::enable().map(drop);
    let manifests = traffic::manifests(p.unrelated_rules);
    let refs: Vec<(&str, &str)> = manifests
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dport = traffic::DENIED_UDP_PORT;
    let (uplink, uplink_ifindex, uplink_mac) = interface_with(&node.node, NODE_UPLINK_IP)?;
    let (_, out_ifindex, out_mac) = interface_with(&node.outside, OUTSIDE_IP)?;
    set_gro(&node.node, &uplink, true)?;
    let frame = udp_frame(uplink_mac, out_mac, OUTSIDE_IP, server.ip, 40000, dport);
    let generator = Arc::new(
        RawXdp::writer("cns_bench_gen", &frame, super::rawbpf::XDP_TX)
            .map_err(|e| anyhow::anyhow!("load the flood generator: {e}"))?,
    );
    // IPv6, when the node has it.
    let generator6 = match server.ip6 {
        Some(ip6) => {
            let frame6 = udp_frame6(uplink_mac, out_mac, OUTSIDE_IP6, ip6, 40000, dport);
            let g = RawXdp::writer("cns_bench_gen6", &frame6, super::rawbpf::XDP_TX)
                .map_err(|e| anyhow::anyhow!("load the IPv6 flood generator: {e}"))?;
            Some((Arc::new(g), frame6.len()))
        }
        None => None,
    };
    let floor = Arc::new(
        RawXdp::constant("cns_bench_drop", super::rawbpf::XDP_DROP)
            .map_err(|e| anyhow::anyhow!("load the XDP_DROP floor: {e}"))?,
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let to = std::net::SocketAddr::from((server.ip, dport));

    let mut variants = vec![
        FloodVariant::None,
        FloodVariant::Tc,
        FloodVariant::Xdp,
        FloodVariant::XdpDropFloor,
    ];
    if p.iptables {
        variants.insert(3, FloodVariant::Iptables);
    }
    let gens = [
        Generator::Sockets,
        Generator::LiveFrames,
        Generator::LiveFrames6,
    ];
    // runs[variant][generator]: one per trial (none for IPv6 where it is not measured).
    let mut runs: Vec<[Vec<Run>; 3]> = variants.iter().map(|_| Default::default()).collect();
    let mut xdp_mode = String::from("?");
    for t in 0..p.trials {
        for (vi, &v) in variants.iter().enumerate() {
            let started = Instant::now();
            let setup = match v {
                FloodVariant::Tc => Setup::Agent(AgentProcess::start_with(
                    node,
                    false,
                    &refs,
                    &["--xdp-interfaces", "none"],
                )),
                FloodVariant::Xdp => Setup::Agent(AgentProcess::start(node, false, &refs)),
                FloodVariant::Iptables => {
                    traffic::iptables_up(&node.node, p.unrelated_rules)?;
                    Setup::Iptables(node.node.clone())
                }
                FloodVariant::XdpDropFloor => {
                    let floor = floor.clone();
                    Setup::Floor(in_netns(&node.node, move || floor.attach(uplink_ifindex))?)
                }
                FloodVariant::None => Setup::Nothing,
            };
            if let Setup::Agent(a) = &setup {
                let mode = xdp_attachment(a, &uplink)?;
                match (v, mode) {
                    (FloodVariant::Xdp, Some(mode)) => xdp_mode = mode,
                    (FloodVariant::Xdp, None) => {
                        anyhow::bail!("the agent did not attach XDP to the uplink {uplink}")
                    }
                    (_, Some(_)) => anyhow::bail!("XDP attached with --xdp-interfaces none"),
                    (_, None) => {}
                }
            }
            let counter = match &setup {
                Setup::Agent(a) => Counter::Agent(a),
                Setup::Iptables(node) => Counter::Iptables(node),
                Setup::Floor(_) => Counter::UplinkRx(&node.node, &uplink),
                Setup::Nothing => Counter::PodNoPorts(&server.netns),
            };
            // Warm-up: neighbour entries, caches.
            socket_flood(&node.outside, to, 1, 0.05);
            // The agent's programs on the same floods, each run again with statistics on.
            let programs = matches!(setup, Setup::Agent(_));
            let sockets = measure(&counter, programs, || {
                Ok((socket_flood(&node.outside, to, threads, p.secs), None))
            })?;
            let live = measure(&counter, programs, || {
                let g = generator.clone();
                let (pps, ns) = live_flood(&node.outside, g, FRAME_LEN, out_ifindex, p.secs)?;
                Ok((pps, Some(ns)))
            })?;
            let v6_variant = matches!(
                v,
                FloodVariant::Tc | FloodVariant::Xdp | FloodVariant::XdpDropFloor
            );
            let live6 = match &generator6 {
                Some((g, len)) if v6_variant => Some(measure(&counter, programs, || {
                    let (pps, ns) =
                        live_flood(&node.outside, g.clone(), *len, out_ifindex, p.secs)?;
                    Ok((pps, Some(ns)))
                })?),
                _ => None,
            };
            drop(setup);
            progress(&format!(
                "flood trial {}/{}: {}: sockets {:.0} kpps sent, {:.0} kpps dropped, {:.0} ns softirq each; live frames {:.0} kpps sent, {:.0} kpps dropped, {:.0} ns softirq each, {:.0} ns per frame in the generator loop ({:.1}s)",
                t + 1,
                p.trials,
                v.name(),
                sockets.sent_pps / 1e3,
                sockets.dropped_pps / 1e3,
                sockets.softirq_ns,
                live.sent_pps / 1e3,
                live.dropped_pps / 1e3,
                live.softirq_ns,
                live.loop_ns.unwrap_or(0.0),
                started.elapsed().as_secs_f64()
            ));
            runs[vi][0].push(sockets);
            runs[vi][1].push(live);
            runs[vi][2].extend(live6);
        }
    }
    set_gro(&node.node, &uplink, false)?;

    let index = |v: FloodVariant| variants.iter().position(|&x| x == v);
    let ratio = |vi: usize, gi: usize, base: Option<usize>, f: &dyn Fn(&Run, &Run) -> f64| {
        let r: Vec<f64> = runs[vi][gi]
            .iter()
            .zip(&runs[base?][gi])
            .map(|(a, b)| f(a, b))
            .filter(|x| x.is_finite())
            .collect();
        (!r.is_empty()).then(|| round3(Summary::of(&r).median))
    };
    let (tc, ipt) = (index(FloodVariant::Tc), index(FloodVariant::Iptables));
    let floor_loops = |gi: usize| -> Vec<f64> {
        index(FloodVariant::XdpDropFloor)
            .map(|f| runs[f][gi].iter().filter_map(|r| r.loop_ns).collect())
            .unwrap_or_default()
    };
    // Live frames, per trial: loop time above the floor's.
    let above = |vi: usize, gi: usize| -> Vec<f64> {
        runs[vi][gi]
            .iter()
            .zip(&floor_loops(gi))
            .filter_map(|(r, f)| Some(r.loop_ns? - f))
            .collect()
    };
    let mut results = Vec::new();
    // Live frames first: the figures to read.
    for gi in [1, 2, 0] {
        let g = gens[gi];
        for (vi, &v) in variants.iter().enumerate() {
            let rs = &runs[vi][gi];
            if rs.is_empty() {
                continue;
            }
            let col = |f: fn(&Run) -> f64| Summary::of(&rs.iter().map(f).collect::<Vec<_>>());
            let loops: Vec<f64> = rs.iter().filter_map(|r| r.loop_ns).collect();
            let is_floor = v == FloodVariant::XdpDropFloor;
            let above_v = if gi > 0 && !is_floor {
                above(vi, gi)
            } else {
                Vec::new()
            };
            let above_gain: Vec<f64> = tc
                .map(|t| above(t, gi))
                .unwrap_or_default()
                .iter()
                .zip(&above_v)
                .map(|(t, a)| t / a)
                .filter(|x| x.is_finite() && *x > 0.0)
                .collect();
            results.push(FloodResult {
                variant: v,
                generator: g,
                sent_kpps: col(|r| r.sent_pps / 1e3),
                dropped_kpps: col(|r| r.dropped_pps / 1e3),
                softirq_ns: col(|r| r.softirq_ns),
                kernel_ns: col(|r| r.kernel_ns),
                loop_ns: (!loops.is_empty()).then(|| Summary::of(&loops)),
                above_floor_ns: (!above_v.is_empty()).then(|| Summary::of(&above_v)),
                above_floor_gain_vs_tc: (!above_gain.is_empty())
                    .then(|| round3(Summary::of(&above_gain).median)),
                dropped_vs_tc: ratio(vi, gi, tc, &|a, b| a.dropped_pps / b.dropped_pps),
                dropped_vs_iptables: ratio(vi, gi, ipt, &|a, b| a.dropped_pps / b.dropped_pps),
                loop_gain_vs_tc: ratio(vi, gi, tc, &|a, b| {
                    b.loop_ns.unwrap_or(f64::NAN) / a.loop_ns.unwrap_or(f64::NAN)
                }),
                loop_gain_vs_iptables: ratio(vi, gi, ipt, &|a, b| {
                    b.loop_ns.unwrap_or(f64::NAN) / a.loop_ns.unwrap_or(f64::NAN)
                }),
                // The floor's softirq time is too small for the tick sampling to see.
                cpu_gain_vs_tc: ratio(vi, gi, tc, &|a, b| b.softirq_ns / a.softirq_ns)
                    .filter(|_| !is_floor),
                cpu_gain_vs_iptables: ratio(vi, gi, ipt, &|a, b| b.softirq_ns / a.softirq_ns)
                    .filter(|_| !is_floor),
                programs: progstats::loads(
                    g.name(),
                    &rs.iter().map(|r| r.programs).collect::<Vec<_>>(),
                ),
            });
        }
    }
    let mut notes = Vec::new();
    for r in &results {
        let share = r.dropped_kpps.median / r.sent_kpps.median;
        if share < 0.9 {
            notes.push(format!(
                "{}, {}: the node counted only {:.0}% of what the generator sent (the rest was lost before the drop point: a full receive ring or backlog)",
                r.variant.name(),
                r.generator.name(),
                share * 100.0
            ));
        }
    }
    if !p.iptables {
        notes.push("iptables/ipset not installed: no iptables baseline".into());
    }
    if let Err(e) = stats {
        notes.push(format!("no bpf_stats for the agent's programs: {e}"));
    }
    Ok(FloodReport {
        trials: p.trials,
        secs: p.secs,
        socket_threads: threads,
        unrelated_rules: p.unrelated_rules,
        xdp_mode,
        uplink,
        results,
        notes,
    })
}

/// The XDP mode (native or generic) of the agent's attachment to `uplink`, if any.
fn xdp_attachment(agent: &AgentProcess, uplink: &str) -> anyhow::Result<Option<String>> {
    let status: Value = serde_json::from_str(
        &agent
            .cli(&["status", "-o", "json"])
            .map_err(|e| anyhow::anyhow!("cns-agent status: {e}"))?,
    )?;
    Ok(status["xdp"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["interface"] == uplink)
        .map(|x| x["mode"].as_str().unwrap_or("?").to_owned()))
}
