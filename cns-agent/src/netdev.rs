//! What the node's network namespace looks like: its own addresses and which veth leads to
//! each local pod (the interface holding the pod's /32 route, as with kind's ptp CNI and
//! Calico).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use nix::{ifaddrs::getifaddrs, net::if_::if_nametoindex};

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("failed to list interface addresses")]
    Addresses(#[source] nix::Error),
    #[error("failed to read the routing table /proc/net/route")]
    Routes(#[source] std::io::Error),
}

/// Every IPv4 address on the node's interfaces (loopback included).
pub fn node_ips() -> Result<BTreeSet<Ipv4Addr>, NetdevError> {
    let addrs = getifaddrs().map_err(NetdevError::Addresses)?;
    Ok(addrs
        .filter_map(|ifa| ifa.address?.as_sockaddr_in().map(|sin| sin.ip()))
        .collect())
}

/// An interface leading to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veth {
    pub name: String,
    pub ifindex: u32,
}

/// For each address, the interface of its /32 route in the main table, if there is one.
pub fn host_routes(ips: &BTreeSet<Ipv4Addr>) -> Result<BTreeMap<Ipv4Addr, Veth>, NetdevError> {
    let table = std::fs::read_to_string("/proc/net/route").map_err(NetdevError::Routes)?;
    let routes = parse_host_routes(&table);
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

/// The /32 routes of `/proc/net/route`: destination -> interface name.
fn parse_host_routes(table: &str) -> BTreeMap<Ipv4Addr, String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            let dest = u32::from_str_radix(dest, 16).ok()?;
            let mask = u32::from_str_radix(mask, 16).ok()?;
            (mask == u32::MAX).then(|| (Ipv4Addr::from(dest.to_ne_bytes()), (*iface).to_owned()))
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
            vec![(Ipv4Addr::new(10, 0, 0, 2), "cnsa1".to_owned())]
        );
    }
}
