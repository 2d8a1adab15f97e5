//! Probing the 9x9 matrix in parallel, one thread per (from, to) pair, as upstream's probe
//! workers do (`probe.go`), against the pod's address (upstream goes through the pod's
//! Service; there are no Services here). A probe that is dropped costs [`PROBE_TIMEOUT`]
//! (upstream's `GetProbeTimeoutSeconds` is 1 s too), so a matrix costs about one timeout.
//!
//! TCP: connect, send, read the echo. UDP: send a datagram, read the echo. SCTP: the kernel
//! has no SCTP stack (`CONFIG_IP_SCTP` is off), so a raw IP socket (protocol 132) in the
//! client sends a real SCTP INIT and a raw socket in the server's netns, which receives
//! every SCTP packet addressed to the pod, checks that it arrived: connectivity is the INIT
//! getting through, which is what an SCTP-only ingress policy decides.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cns_tests::PodNet;
use nix::{
    libc,
    sched::{CloneFlags, setns},
};

use super::model::{N, Proto, Table};

pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Enters `netns` on the current thread (which must be one of ours, ended after the probe).
fn enter(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Probes every (from, to) pair but loopback (upstream ignores it), in parallel, over IPv6
/// (`v6`) or IPv4; the diagonal of the result is `true`.
pub fn probe_matrix(pods: &[PodNet], proto: Proto, port: u16, v6: bool) -> Table {
    assert_eq!(pods.len(), N);
    if proto == Proto::Sctp {
        return sctp_matrix(pods, port, v6);
    }
    let mut observed = [[true; N]; N];
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (f, from) in pods.iter().enumerate() {
            for (t, to) in pods.iter().enumerate() {
                if f == t {
                    continue;
                }
                let netns = from.netns.clone();
                let dst = to.addr(v6);
                handles.push((
                    f,
                    t,
                    s.spawn(move || {
                        enter(&netns);
                        match proto {
                            Proto::Tcp => tcp_probe(dst, port),
                            Proto::Udp => udp_probe(dst, port),
                            Proto::Sctp => unreachable!(),
                        }
                    }),
                ));
            }
        }
        for (f, t, h) in handles {
            observed[f][t] = h.join().expect("probe thread panicked");
        }
    });
    observed
}

fn tcp_probe(dst: IpAddr, port: u16) -> bool {
    let payload = b"cns conformance";
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), PROBE_TIMEOUT)
    else {
        return false;
    };
    _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    if s.write_all(payload).is_err() {
        return false;
    }
    let mut got = [0u8; 15];
    s.read_exact(&mut got).is_ok() && &got == payload
}

/// The wildcard address of `dst`'s family.
fn unspecified(dst: IpAddr) -> IpAddr {
    match dst {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn udp_probe(dst: IpAddr, port: u16) -> bool {
    let s = UdpSocket::bind((unspecified(dst), 0)).expect("bind udp client");
    _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    if s.send_to(b"cns-udp", (dst, port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.recv_from(&mut buf), Ok((7, _)))
}

// ---- SCTP over raw sockets ----

const IPPROTO_SCTP: i32 = 132;

fn raw_sctp_socket(v6: bool) -> OwnedFd {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, IPPROTO_SCTP) };
    assert!(
        fd >= 0,
        "raw SCTP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: libc::suseconds_t::try_from(timeout.as_micros()).expect("short timeout"),
    };
    // SAFETY: setsockopt with a valid fd and a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            u32::try_from(size_of::<libc::timeval>()).expect("size"),
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
}

/// CRC32c (Castagnoli, reflected), as SCTP's checksum.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet with one INIT chunk (RFC 9260 3.3.2), checksum filled in.
fn sctp_init(sport: u16, dport: u16, initiate_tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // verification tag: 0 in an INIT
    p.extend_from_slice(&0u32.to_be_bytes()); // checksum, filled below
    p.push(1); // chunk type INIT
    p.push(0); // flags
    p.extend_from_slice(&20u16.to_be_bytes()); // chunk length
    p.extend_from_slice(&initiate_tag.to_be_bytes());
    p.extend_from_slice(&65_535u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&initiate_tag.to_be_bytes()); // initial TSN
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

fn send_raw(fd: &OwnedFd, dst: IpAddr, packet: &[u8]) -> bool {
    let addr = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(dst, 0));
    // SAFETY: sendto with a valid fd, buffer and a sockaddr of the length it says.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            nix::sys::socket::SockaddrLike::as_ptr(&addr).cast(),
            nix::sys::socket::SockaddrLike::len(&addr),
        )
    };
    usize::try_from(n).is_ok_and(|n| n == packet.len())
}

/// What a receiver saw: (source address, destination port, initiate tag) of SCTP INITs.
fn receive_inits(fd: &OwnedFd, until: Instant, v6: bool) -> Vec<(IpAddr, u16, u32)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let Ok((n, from)) = nix::sys::socket::recvfrom::<nix::sys::socket::SockaddrStorage>(
            fd.as_raw_fd(),
            &mut buf,
        ) else {
            continue; // timeout (EAGAIN) or EINTR
        };
        let pkt = &buf[..n];
        // A raw IPv4 socket receives the IP header too; a raw IPv6 one only the payload,
        // and the source in the address.
        let (src, sctp) = if v6 {
            let Some(src) = from.as_ref().and_then(|f| f.as_sockaddr_in6()) else {
                continue;
            };
            (IpAddr::V6(src.ip()), pkt)
        } else {
            if pkt.len() < 20 || pkt[9] != 132 {
                continue;
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let Some(sctp) = pkt.get(ihl..) else { continue };
            (
                IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
                sctp,
            )
        };
        if sctp.len() < 20 || sctp[12] != 1 {
            continue;
        }
        let dport = u16::from_be_bytes([sctp[2], sctp[3]]);
        let tag = u32::from_be_bytes([sctp[16], sctp[17], sctp[18], sctp[19]]);
        seen.push((src, dport, tag));
    }
    seen
}

/// Per matrix, a fresh range of initiate tags, so that nothing of an earlier matrix counts.
static NONCE: AtomicU32 = AtomicU32::new(0x5c7e_0000);

fn sctp_matrix(pods: &[PodNet], port: u16, v6: bool) -> Table {
    let base = NONCE.fetch_add(0x100, Ordering::Relaxed);
    let tag = |f: usize, t: usize| base + u32::try_from(f * N + t).expect("small");
    // Receivers first, so no INIT comes before its receiver is listening.
    let receivers: Vec<OwnedFd> = pods
        .iter()
        .map(|p| {
            let netns = p.netns.clone();
            std::thread::spawn(move || {
                enter(&netns);
                let fd = raw_sctp_socket(v6);
                set_recv_timeout(&fd, Duration::from_millis(50));
                fd
            })
            .join()
            .expect("receiver socket")
        })
        .collect();
    let until = Instant::now() + PROBE_TIMEOUT;
    let seen: Vec<Vec<(IpAddr, u16, u32)>> = std::thread::scope(|s| {
        let rx: Vec<_> = receivers
            .iter()
            .map(|fd| s.spawn(move || receive_inits(fd, until, v6)))
            .collect();
        for (f, from) in pods.iter().enumerate() {
            let netns = from.netns.clone();
            let targets: Vec<(usize, IpAddr)> = pods
                .iter()
                .enumerate()
                .filter(|(t, _)| *t != f)
                .map(|(t, p)| (t, p.addr(v6)))
                .collect();
            s.spawn(move || {
                enter(&netns);
                let fd = raw_sctp_socket(v6);
                for (t, dst) in targets {
                    let sport = 40_000 + u16::try_from(f * N + t).expect("small");
                    assert!(
                        send_raw(&fd, dst, &sctp_init(sport, port, tag(f, t))),
                        "send SCTP INIT: {}",
                        std::io::Error::last_os_error()
                    );
                }
            });
        }
        rx.into_iter()
            .map(|h| h.join().expect("receiver thread"))
            .collect()
    });
    let mut observed = [[true; N]; N];
    for f in 0..N {
        for t in 0..N {
            if f != t {
                observed[f][t] = seen[t].iter().any(|&(src, dport, tg)| {
                    src == pods[f].addr(v6) && dport == port && tg == tag(f, t)
                });
            }
        }
    }
    observed
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
