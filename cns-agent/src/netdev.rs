//! What the node's network namespace looks like: its own addresses and which veth leads to
//! each local pod (the interface holding the pod's /32 or /128 route, as with kind's ptp
//! CNI and Calico).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use nix::{ifaddrs::getifaddrs, net::if_::if_nametoindex};

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("failed to list interface addresses")]
    Addresses(#[source] nix::Error),
    #[error("failed to read the routing table {0}")]
    Routes(&'static str, #[source] std::io::Error),
}

/// Every address on the node's interfaces, both families (loopback included; IPv6
/// link-local ones too: a pod never holds them, and ND passes without policy).
pub fn node_ips() -> Result<BTreeSet<IpAddr>, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::Addresses)?;
    Ok(addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|sin| IpAddr::V4(sin.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|sin6| IpAddr::V6(sin6.ip())))
        })
        .collect())
}

/// An interface leading to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veth {
    pub name: String,
    pub ifindex: u32,
}

/// For each address, the interface of its host route (/32, /128), if there is one. A node
/// without IPv6 has no `/proc/net/ipv6_route`: no IPv6 routes then.
pub fn host_routes(ips: &BTreeSet<IpAddr>) -> Result<BTreeMap<IpAddr, Veth>, NetdevError> {
    const V4: &str = "/proc/net/route";
    const V6: &str = "/proc/net/ipv6_route";
    let table = std::fs::read_to_string(V4).map_err(|e| NetdevError::Routes(V4, e))?;
    let mut routes = parse_host_routes(&table);
    if ips.iter().any(IpAddr::is_ipv6) {
        match std::fs::read_to_string(V6) {
            Ok(t) => routes.extend(parse_host_routes6(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetdevError::Routes(V6, e)),
        }
    }
    Ok(ips
        .iter()
        .filter_map(|ip| {
            let name = routes.get(ip)?;
            let ifindex = if_nametoindex(name.as_str()).ok()?;
            Some((
                *ip,
                Veth {
                    name: name.clone(),
                    ifindex,
                },
            ))
        })
        .collect())
}

/// The /128 routes of `/proc/net/ipv6_route` (destination, its prefix length, source, its
/// length, next hop, metric, references, use, flags, interface): destination -> interface.
fn parse_host_routes6(table: &str) -> BTreeMap<IpAddr, String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, iface) = (f.first()?, f.get(1)?, f.get(9)?);
            let dest = u128::from_str_radix(dest, 16).ok()?;
            (*len == "80" && *iface != "lo")
                .then(|| (IpAddr::V6(Ipv6Addr::from(dest)), (*iface).to_owned()))
        })
        .collect()
}

/// The /32 routes of `/proc/net/route`: destination -> interface name.
fn parse_host_routes(table: &str) -> BTreeMap<IpAddr, String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            let dest = u32::from_str_radix(dest, 16).ok()?;
            let mask = u32::from_str_radix(mask, 16).ok()?;
            (mask == u32::MAX).then(|| {
                (
                    IpAddr::V4(Ipv4Addr::from(dest.to_ne_bytes())),
                    (*iface).to_owned(),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_host_routes_only() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     uplink\t00000000\t0200FF0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     cnsa1\t0200000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
                     br0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_host_routes(table);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), "cnsa1".to_owned())]
        );
    }

    #[test]
    fn finds_ipv6_host_routes_only() {
        let table = "fd00001002440000000000000000000a 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001    cnsa1\n\
                     fd000010024400000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   uplink\n\
                     00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n";
        let routes = parse_host_routes6(table);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![(
                "fd00:10:244::a".parse::<IpAddr>().unwrap(),
                "cnsa1".to_owned()
            )]
        );
    }
}
