//! Frames for `BPF_PROG_TEST_RUN`: Ethernet + IPv4 or IPv6 (with extension headers) + L4
//! headers, built byte by byte so that tests can make them odd (IP options, extension header
//! chains, fragments, truncation).

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

pub const ICMPV6: u8 = 58;

/// IPv6 next headers: the extension headers the programs walk, and some they do not.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AH: u8 = 51;
pub const DEST_OPTS: u8 = 60;
pub const GRE: u8 = 47;
pub const ESP: u8 = 50;
pub const NO_NEXT_HEADER: u8 = 59;
pub const MOBILITY: u8 = 135;

/// An IPv6 extension header for [`ipv6`].
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-Hop, Routing or Destination Options (`kind`) of `8 * (1 + len)` bytes.
    Opts { kind: u8, len: u8 },
    /// AH of `4 * (2 + len)` bytes (`len` at least 1).
    Ah { len: u8 },
    /// Fragment: `offset` in 8-byte units, the M flag, the identification.
    Frag { offset: u16, more: bool, id: u32 },
}

impl Ext {
    pub const HOP: Ext = Ext::Opts {
        kind: HOP_BY_HOP,
        len: 0,
    };
    pub const DEST: Ext = Ext::Opts {
        kind: DEST_OPTS,
        len: 0,
    };

    fn kind(self) -> u8 {
        match self {
            Ext::Opts { kind, .. } => kind,
            Ext::Ah { .. } => AH,
            Ext::Frag { .. } => FRAGMENT,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::Opts { len, .. } => {
                let mut h = vec![next, len];
                // PadN filling the rest.
                let pad = 6 + 8 * len as usize;
                h.extend_from_slice(&[1, (pad - 2) as u8]);
                h.extend(std::iter::repeat_n(0u8, pad - 2));
                h
            }
            Ext::Ah { len } => {
                let mut h = vec![next, len, 0, 0];
                h.extend(std::iter::repeat_n(0xa5u8, 4 * (2 + len as usize) - 4));
                h
            }
            Ext::Frag { offset, more, id } => {
                let mut h = vec![next, 0];
                h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

/// Ethernet (zero MACs) + IPv6 from `src` to `dst`, then the extension headers `exts` in
/// order, then the upper-layer protocol `upper` with `l4`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], exts: &[Ext], upper: u8, l4: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper, |e| e.kind());
        payload.extend(ext.bytes(next));
    }
    payload.extend_from_slice(l4);
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&[0x86, 0xdd]);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(exts.first().map_or(upper, |e| e.kind()));
    p.push(64);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend(payload);
    p
}

/// An ICMPv6 message: type, code, a zero checksum, then `rest`.
pub fn icmp6(kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(rest);
    m
}

/// ICMPv6 echo request (128) or reply (129) with identifier `id`.
pub fn icmp6_echo(kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut rest = id.to_be_bytes().to_vec();
    rest.extend_from_slice(&seq.to_be_bytes());
    icmp6(kind, 0, &rest)
}

/// An ICMPv6 error (`kind` 1 to 4) quoting `frame`'s IPv6 packet (Ethernet header dropped).
/// Packet too big (2) carries an MTU of 1280.
pub fn icmp6_error(kind: u8, code: u8, frame: &[u8]) -> Vec<u8> {
    let mut rest = if kind == 2 {
        1280u32.to_be_bytes().to_vec()
    } else {
        vec![0; 4]
    };
    rest.extend_from_slice(&frame[14..]);
    icmp6(kind, code, &rest)
}
