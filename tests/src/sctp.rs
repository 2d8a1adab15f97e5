//! SCTP probes without an SCTP stack. This kernel has no `CONFIG_IP_SCTP`, so there are no
//! SCTP sockets and no association: a raw IP socket (protocol 132) in the client sends a
//! real SCTP INIT, and a raw socket in the server's netns, which receives every SCTP packet
//! addressed to that netns, tells whether it arrived. Connectivity is the INIT getting
//! through, which is what a policy on `protocol: SCTP` decides. Each INIT carries its own
//! initiate tag, so a receiver can tell the probes apart.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::libc;

pub const IPPROTO_SCTP: i32 = 132;

/// A raw SCTP socket of the current thread's netns, IPv6 (`v6`) or IPv4.
pub fn raw_socket(v6: bool) -> OwnedFd {
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

/// `SO_RCVTIMEO` (under a second).
pub fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) {
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
pub fn crc32c(data: &[u8]) -> u32 {
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
pub fn init_packet(sport: u16, dport: u16, initiate_tag: u32) -> Vec<u8> {
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

/// Sends `packet` (an SCTP packet, the kernel adds the IP header) to `dst`; whether all of
/// it went out.
pub fn send_raw(fd: &OwnedFd, dst: IpAddr, packet: &[u8]) -> bool {
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

/// One INIT a receiver saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenInit {
    pub src: IpAddr,
    pub dport: u16,
    pub tag: u32,
}

/// The SCTP INITs `fd` (a raw socket with a short receive timeout) receives until `until`.
pub fn receive_inits(fd: &OwnedFd, until: Instant, v6: bool) -> Vec<SeenInit> {
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
        seen.push(SeenInit {
            src,
            dport: u16::from_be_bytes([sctp[2], sctp[3]]),
            tag: u32::from_be_bytes([sctp[16], sctp[17], sctp[18], sctp[19]]),
        });
    }
    seen
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
