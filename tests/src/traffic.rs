//! Real sockets inside the pod namespaces: a thread enters the netns (`setns`), creates the
//! socket there (a socket keeps its netns for life), and the test uses it from anywhere.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

/// How long a connection attempt may take before it counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_millis(1500);

/// Runs `f` on a thread that has entered network namespace `netns`.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A TCP echo server on `port` in `netns` (all addresses, both families where the netns
/// has IPv6), serving until the test ends.
pub fn tcp_echo_server(netns: &str, port: u16) {
    let listener = in_netns(netns, move || {
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        TcpListener::bind(v6)
            .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
            .unwrap_or_else(|e| panic!("bind tcp {port}: {e}"))
    });
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A UDP echo server on `port` in `netns` (both families where the netns has IPv6).
pub fn udp_echo_server(netns: &str, port: u16) {
    let sock = in_netns(netns, move || {
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        UdpSocket::bind(v6)
            .or_else(|_| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))
            .unwrap_or_else(|e| panic!("bind udp {port}: {e}"))
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            _ = sock.send_to(&buf[..n], from);
        }
    });
}

/// Whether a TCP connection from `netns` to `to:port` opens and echoes `payload` back.
pub fn tcp_ok(netns: &str, to: impl Into<IpAddr>, port: u16) -> bool {
    tcp_exchange(netns, to, port, b"hello cns")
}

/// Connects, sends `payload`, expects it back; false on any failure or timeout.
pub fn tcp_exchange(netns: &str, to: impl Into<IpAddr>, port: u16, payload: &'static [u8]) -> bool {
    let to = to.into();
    in_netns(netns, move || {
        let addr = SocketAddr::from((to, port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, BLOCKED_AFTER) else {
            return false;
        };
        _ = s.set_read_timeout(Some(BLOCKED_AFTER));
        if s.write_all(payload).is_err() {
            return false;
        }
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).is_ok() && got == payload
    })
}

/// Whether a UDP datagram from `netns` to `to:port` is echoed back.
pub fn udp_ok(netns: &str, to: impl Into<IpAddr>, port: u16) -> bool {
    udp_probe(netns, to, port, BLOCKED_AFTER)
}

/// Like [`udp_ok`] with its own timeout (for quick repeated probes).
pub fn udp_probe(netns: &str, to: impl Into<IpAddr>, port: u16, timeout: Duration) -> bool {
    let to = to.into();
    in_netns(netns, move || {
        let any: IpAddr = if to.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let s = UdpSocket::bind((any, 0)).expect("bind udp client");
        _ = s.set_read_timeout(Some(timeout));
        if s.send_to(b"ping", (to, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((4, _)))
    })
}
