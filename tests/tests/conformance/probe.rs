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
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cns_tests::{
    PodNet,
    sctp::{SeenInit, init_packet, raw_socket, receive_inits, send_raw, set_recv_timeout},
};
use nix::sched::{CloneFlags, setns};

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
                let fd = raw_socket(v6);
                set_recv_timeout(&fd, Duration::from_millis(50));
                fd
            })
            .join()
            .expect("receiver socket")
        })
        .collect();
    let until = Instant::now() + PROBE_TIMEOUT;
    let seen: Vec<Vec<SeenInit>> = std::thread::scope(|s| {
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
                let fd = raw_socket(v6);
                for (t, dst) in targets {
                    let sport = 40_000 + u16::try_from(f * N + t).expect("small");
                    assert!(
                        send_raw(&fd, dst, &init_packet(sport, port, tag(f, t))),
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
                observed[f][t] = seen[t]
                    .iter()
                    .any(|s| s.src == pods[f].addr(v6) && s.dport == port && s.tag == tag(f, t));
            }
        }
    }
    observed
}
