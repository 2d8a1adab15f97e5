//! Frames for `BPF_PROG_TEST_RUN`: Ethernet + IPv4 + L4 headers, built byte by byte so that
//! tests can make them odd (IP options, fragments, truncation).

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// Ethernet (zero MACs) + IPv4 with identification `id`, fragment field `frag` and
/// `options` 4-byte words of NOP options, then `l4`.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    options: usize,
    l4: &[u8],
) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&[0x08, 0x00]);
    let ihl = 5 + options;
    let total = (ihl * 4 + l4.len()) as u16;
    p.push(0x40 | ihl as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend(std::iter::repeat_n(1u8, options * 4));
    p.extend_from_slice(l4);
    p
}

/// Source and destination ports followed by `rest` zero bytes (UDP: 4, SCTP: 8).
pub fn ports(sport: u16, dport: u16, rest: usize) -> Vec<u8> {
    let mut l4 = sport.to_be_bytes().to_vec();
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend(std::iter::repeat_n(0u8, rest));
    l4
}

/// A 20-byte TCP header with `flags`.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = ports(sport, dport, 16);
    l4[12] = 0x50;
    l4[13] = flags;
    l4
}
