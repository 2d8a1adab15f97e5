//! Upstream's `PokeServer` on the virtual node: one probe per (client, server address,
//! protocol, port), all of a batch at once, each from its own thread in the client's netns.
//!
//! Upstream runs `agnhost connect --timeout=3s --protocol=<p> <ip>:<port>` in the client
//! and wants, when the probe should connect, no error, and when it should not, a
//! `TIMEOUT` (a refusal or any other error fails too: a policy drops, it does not reject).
//! The same here, with [`Outcome`]:
//! - TCP: connect, send, read the echo back. Connected, timed out, or failed (refused,
//!   unreachable, no echo).
//! - UDP: a connected socket sends a datagram and reads the echo (agnhost's
//!   `serve-hostname --udp` answers every datagram too). Connected, timed out, or failed
//!   (refused: an ICMP port unreachable).
//! - SCTP: a raw SCTP INIT from the client, counted as connected when a raw socket in the
//!   server's netns receives it (`cns_tests::sctp`: this kernel has no SCTP stack).
//!
//! UDP and SCTP probes send from a source port of their own (never one an earlier probe
//! used), so no connection tracked by an earlier, allowed probe can let a later one through.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use cns_tests::sctp::{
    SeenInit, init_packet, raw_socket, receive_inits, send_raw, set_recv_timeout,
};
use nix::sched::{CloneFlags, setns};

use super::suite::Proto;

/// One probe: from `client_netns` (whose address in this family is `src`) to `dst`.
#[derive(Clone, Debug)]
pub struct Target {
    pub client_netns: String,
    pub server_netns: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub port: u16,
}

/// What a probe saw (upstream: success, `TIMEOUT`, or another error such as `REFUSED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    TimedOut,
    Failed(String),
}

impl Outcome {
    /// Whether this is what upstream wants when the probe `should_connect`.
    pub fn as_expected(&self, should_connect: bool) -> bool {
        if should_connect {
            *self == Outcome::Connected
        } else {
            *self == Outcome::TimedOut
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Connected => write!(f, "connected"),
            Outcome::TimedOut => write!(f, "timed out"),
            Outcome::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

/// Enters `netns` on the current thread (which must be one of ours, ended after the probe).
fn enter(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// A source port no probe of this process used before: 20000-29999, below the kernel's
/// ephemeral range, so never one the kernel gave a TCP probe either.
fn fresh_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    20_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000
}

/// Probes every target at once; each gets `timeout` to connect.
pub fn probe_all(targets: &[Target], timeout: Duration) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::TimedOut; targets.len()];
    let sctp: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].proto == Proto::Sctp)
        .collect();
    std::thread::scope(|s| {
        let sockets: Vec<_> = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.proto != Proto::Sctp)
            .map(|(i, t)| {
                (
                    i,
                    s.spawn(move || {
                        enter(&t.client_netns);
                        match t.proto {
                            Proto::Tcp => tcp(t.dst, t.port, timeout),
                            Proto::Udp => udp(t.dst, t.port, timeout),
                            Proto::Sctp => unreachable!(),
                        }
                    }),
                )
            })
            .collect();
        let sctp_outcomes = if sctp.is_empty() {
            Vec::new()
        } else {
            sctp_probes(targets, &sctp, timeout)
        };
        for (i, outcome) in sctp.iter().zip(sctp_outcomes) {
            outcomes[*i] = outcome;
        }
        for (i, h) in sockets {
            outcomes[i] = h.join().expect("probe thread panicked");
        }
    });
    outcomes
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

fn tcp(dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
    let payload = b"cns cnp conformance";
    let mut s = match TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout) {
        Ok(s) => s,
        Err(e) if timed_out(&e) => return Outcome::TimedOut,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    _ = s.set_read_timeout(Some(timeout));
    if let Err(e) = s.write_all(payload) {
        return Outcome::Failed(format!("connected, then send: {e}"));
    }
    let mut got = [0u8; 19];
    match s.read_exact(&mut got) {
        Ok(()) if &got == payload => Outcome::Connected,
        Ok(()) => Outcome::Failed("connected, but a wrong echo".into()),
        Err(e) => Outcome::Failed(format!("connected, but no echo: {e}")),
    }
}

fn udp(dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
    let any: IpAddr = match dst {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((any, fresh_port()))
        .or_else(|_| UdpSocket::bind((any, 0)))
        .expect("bind udp client");
    _ = s.set_read_timeout(Some(timeout));
    if let Err(e) = s.connect((dst, port)) {
        return Outcome::Failed(format!("connect: {e}"));
    }
    let payload = b"cns-udp-probe";
    if let Err(e) = s.send(payload) {
        return Outcome::Failed(format!("send: {e}"));
    }
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(n) if &buf[..n] == payload => Outcome::Connected,
        Ok(_) => Outcome::Failed("a wrong echo".into()),
        Err(e) if timed_out(&e) => Outcome::TimedOut,
        Err(e) => Outcome::Failed(format!("recv: {e}")),
    }
}

/// Per batch, a fresh range of initiate tags, so that nothing of an earlier batch counts.
static NONCE: AtomicU32 = AtomicU32::new(0x5c7e_0000);

/// The SCTP targets `which` of `targets`: a receiver per (server netns, family), then one
/// INIT per target.
fn sctp_probes(targets: &[Target], which: &[usize], timeout: Duration) -> Vec<Outcome> {
    let base = NONCE.fetch_add(0x1_0000, Ordering::Relaxed);
    let tag = |n: usize| base + u32::try_from(n).expect("few probes");
    let mut receivers: BTreeMap<(String, bool), OwnedFd> = BTreeMap::new();
    for &i in which {
        let t = &targets[i];
        let key = (t.server_netns.clone(), t.dst.is_ipv6());
        if receivers.contains_key(&key) {
            continue;
        }
        let (netns, v6) = key.clone();
        let fd = std::thread::spawn(move || {
            enter(&netns);
            let fd = raw_socket(v6);
            set_recv_timeout(&fd, Duration::from_millis(50));
            fd
        })
        .join()
        .expect("SCTP receiver socket");
        receivers.insert(key, fd);
    }
    // Receivers listen from before the first INIT until the timeout after the last.
    let until = Instant::now() + timeout;
    let seen: BTreeMap<(String, bool), Vec<SeenInit>> = std::thread::scope(|s| {
        let rx: Vec<_> = receivers
            .iter()
            .map(|(key, fd)| {
                (
                    key.clone(),
                    s.spawn(move || receive_inits(fd, until, key.1)),
                )
            })
            .collect();
        for (n, &i) in which.iter().enumerate() {
            let t = &targets[i];
            s.spawn(move || {
                enter(&t.client_netns);
                let fd = raw_socket(t.dst.is_ipv6());
                let packet = init_packet(fresh_port(), t.port, tag(n));
                assert!(
                    send_raw(&fd, t.dst, &packet),
                    "send SCTP INIT: {}",
                    std::io::Error::last_os_error()
                );
            });
        }
        rx.into_iter()
            .map(|(key, h)| (key, h.join().expect("SCTP receiver")))
            .collect()
    });
    which
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let t = &targets[i];
            let got = seen[&(t.server_netns.clone(), t.dst.is_ipv6())]
                .iter()
                .any(|s| s.src == t.src && s.dport == t.port && s.tag == tag(n));
            if got {
                Outcome::Connected
            } else {
                Outcome::TimedOut
            }
        })
        .collect()
}
