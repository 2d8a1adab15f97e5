//! The node's uplinks: where the XDP program (`cns_xdp`) goes. By default the interfaces
//! holding the node's default routes of either family (`/proc/net/route`,
//! `/proc/net/ipv6_route`, read like `netdev` reads the pods' host routes); `--xdp-interfaces` names them explicitly or disables XDP (`none`).
//! Also answers which XDP mode an interface runs (netlink), for `status`.

use std::{fmt, str::FromStr};

use nix::net::if_::if_nametoindex;

/// How the XDP program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum XdpAttachMode {
    /// In the driver, before an skb exists (veth, most physical NICs).
    Native,
    /// In the stack after the skb is built (any driver): the same verdicts, less gain.
    Generic,
}

impl XdpAttachMode {
    /// `native` or `generic` (as `status` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface to attach the XDP program to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Uplink {
    pub name: String,
    pub ifindex: u32,
}

/// The value of `--xdp-interfaces`: `default` (the default-route interfaces), `none`, or a
/// comma-separated list of interface names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum XdpInterfaces {
    #[default]
    Default,
    None,
    Named(Vec<String>),
}

impl FromStr for XdpInterfaces {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "default" => Ok(Self::Default),
            "none" => Ok(Self::None),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| n.len() >= 16 || n.contains(['/', ' ']))
                {
                    return Err(format!("{bad:?} is not an interface name"));
                }
                Ok(Self::Named(names))
            }
        }
    }
}

impl fmt::Display for XdpInterfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::None => f.write_str("none"),
            Self::Named(names) => f.write_str(&names.join(",")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("failed to read the routing table {path}")]
    Routes {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("XDP interface {0} does not exist")]
    NoSuchInterface(String),
}

/// The routing tables of the calling thread's network namespace (`/proc/net` is the
/// process's, which differs for a thread that entered another netns).
const ROUTES: &str = "/proc/thread-self/net/route";
const ROUTES6: &str = "/proc/thread-self/net/ipv6_route";

/// The interfaces `spec` asks for, resolved to ifindexes in the calling thread's netns.
/// `Default` finds no interface (and no error) on a node without a default route.
pub fn resolve(spec: &XdpInterfaces) -> Result<Vec<Uplink>, UplinkError> {
    match spec {
        XdpInterfaces::None => Ok(Vec::new()),
        XdpInterfaces::Default => default_route_interfaces(),
        XdpInterfaces::Named(names) => names
            .iter()
            .map(|name| {
                if_nametoindex(name.as_str())
                    .map(|ifindex| Uplink {
                        name: name.clone(),
                        ifindex,
                    })
                    .map_err(|_| UplinkError::NoSuchInterface(name.clone()))
            })
            .collect(),
    }
}

/// The interfaces holding the node's default routes (destination and mask 0), IPv4's
/// then IPv6's, in routing-table order, each once. Interfaces that vanished meanwhile are
/// left out. A node without IPv6 has no IPv6 table.
pub fn default_route_interfaces() -> Result<Vec<Uplink>, UplinkError> {
    let table = std::fs::read_to_string(ROUTES).map_err(|source| UplinkError::Routes {
        path: ROUTES,
        source,
    })?;
    let mut names = parse_default_routes(&table);
    match std::fs::read_to_string(ROUTES6) {
        Ok(t) => {
            for name in parse_default_routes6(&t) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(UplinkError::Routes {
                path: ROUTES6,
                source,
            });
        }
    }
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let ifindex = if_nametoindex(name.as_str()).ok()?;
            Some(Uplink { name, ifindex })
        })
        .collect())
}

/// Interface names of the default routes in a `/proc/net/route` table.
fn parse_default_routes(table: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        let zero = |s: &str| u32::from_str_radix(s, 16) == Ok(0);
        if zero(dest) && zero(mask) && !names.iter().any(|n| n == iface) {
            names.push((*iface).to_owned());
        }
    }
    names
}

/// Interface names of the default routes (`::/0`) in a `/proc/net/ipv6_route` table; the
/// kernel's "unreachable" defaults on `lo` are not uplinks.
fn parse_default_routes6(table: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(len), Some(iface)) = (f.first(), f.get(1), f.get(9)) else {
            continue;
        };
        let zero = u128::from_str_radix(dest, 16) == Ok(0) && *len == "00";
        if zero && *iface != "lo" && !names.iter().any(|n| n == iface) {
            names.push((*iface).to_owned());
        }
    }
    names
}

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The XDP mode a program is attached in on `ifindex` (calling thread's netns), from the
/// kernel (`RTM_GETLINK`, `IFLA_XDP_ATTACHED`): what `ip link` shows as `xdp`/`xdpgeneric`.
/// `None` when nothing is attached or the query fails.
pub fn xdp_mode(ifindex: u32) -> Option<XdpAttachMode> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .ok()?;
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[0, 0, 0, 0]); // ifi_family (AF_UNSPEC), pad, ifi_type
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&[0; 8]); // ifi_flags, ifi_change
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_getlink_reply(&buf[..n])
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// Finds `IFLA_XDP` / `IFLA_XDP_ATTACHED` in an `RTM_NEWLINK` reply.
fn parse_getlink_reply(msg: &[u8]) -> Option<XdpAttachMode> {
    let len = u32::from_ne_bytes(msg.get(0..4)?.try_into().ok()?) as usize;
    let kind = u16_at(msg, 4)?;
    if kind == NLMSG_ERROR || kind != RTM_NEWLINK {
        return None;
    }
    let msg = msg.get(..len)?;
    let attrs = |mut off: usize, end: usize| {
        std::iter::from_fn(move || {
            let alen = usize::from(u16_at(msg, off)?);
            let atype = u16_at(msg, off + 2)? & NLA_TYPE_MASK;
            if alen < 4 || off + alen > end {
                return None;
            }
            let item = (atype, off + 4, off + alen);
            off += alen.div_ceil(4) * 4;
            Some(item)
        })
    };
    let (_, start, end) = attrs(32, msg.len()).find(|(t, _, _)| *t == IFLA_XDP)?;
    let (_, at, _) = attrs(start, end).find(|(t, _, _)| *t == IFLA_XDP_ATTACHED)?;
    match *msg.get(at)? {
        XDP_ATTACHED_DRV | XDP_ATTACHED_HW => Some(XdpAttachMode::Native),
        XDP_ATTACHED_SKB => Some(XdpAttachMode::Generic),
        XDP_ATTACHED_MULTI => Some(XdpAttachMode::Native),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_default_route_interfaces() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0200FF0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     cnsa1\t0200000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
                     eth1\t00000000\t0201FF0A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t0300FF0A\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                     br0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_default_routes(table), vec!["eth0", "eth1"]);
        assert!(parse_default_routes("Iface\tDestination\n").is_empty());
    }

    #[test]
    fn finds_ipv6_default_route_interfaces() {
        let table = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth1\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(parse_default_routes6(table), vec!["eth1"]);
    }

    #[test]
    fn parses_the_flag() {
        assert_eq!("".parse(), Ok(XdpInterfaces::Default));
        assert_eq!("default".parse(), Ok(XdpInterfaces::Default));
        assert_eq!("none".parse(), Ok(XdpInterfaces::None));
        assert_eq!(
            "eth0, eth1".parse(),
            Ok(XdpInterfaces::Named(vec!["eth0".into(), "eth1".into()]))
        );
        assert!("a/b".parse::<XdpInterfaces>().is_err());
        assert_eq!(
            XdpInterfaces::Named(vec!["eth0".into(), "eth1".into()]).to_string(),
            "eth0,eth1"
        );
    }

    #[test]
    fn reads_the_xdp_mode_from_a_getlink_reply() {
        // nlmsghdr (16) + ifinfomsg (16) + IFLA_MTU + IFLA_XDP { IFLA_XDP_ATTACHED = mode }.
        let reply = |mode: u8| {
            let mut m = Vec::new();
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&[0; 16]);
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&4u16.to_ne_bytes()); // IFLA_MTU
            m.extend_from_slice(&1500u32.to_ne_bytes());
            m.extend_from_slice(&12u16.to_ne_bytes());
            m.extend_from_slice(&(IFLA_XDP | 0x8000).to_ne_bytes()); // NLA_F_NESTED
            m.extend_from_slice(&5u16.to_ne_bytes());
            m.extend_from_slice(&IFLA_XDP_ATTACHED.to_ne_bytes());
            m.extend_from_slice(&[mode, 0, 0, 0]);
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m
        };
        assert_eq!(
            parse_getlink_reply(&reply(XDP_ATTACHED_DRV)),
            Some(XdpAttachMode::Native)
        );
        assert_eq!(
            parse_getlink_reply(&reply(XDP_ATTACHED_SKB)),
            Some(XdpAttachMode::Generic)
        );
        assert_eq!(parse_getlink_reply(&reply(0)), None);
        assert_eq!(parse_getlink_reply(&[1, 2, 3]), None);
    }
}
