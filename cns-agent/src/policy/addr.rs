//! Where the address family matters in the policy core: a pod's addresses (one per family
//! at most, as Kubernetes allows), networks of either family, and what "every address" is.
//! Everything else in `policy` handles `IpAddr`/`IpNetwork` without asking which family;
//! `crate::encode` splits them into the IPv4 and IPv6 maps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::model::PodInfo;

/// A pod's addresses: its IPv4 and its IPv6 one, each `status.podIP` if of that family,
/// else the first of `status.podIPs` (dual-stack pods have one of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PodAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl PodAddrs {
    pub fn of(pod: &PodInfo) -> Self {
        let all = || pod.pod_ip.iter().chain(pod.pod_ips.iter());
        Self {
            v4: all().find_map(|ip| match ip {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            }),
            v6: all().find_map(|ip| match ip {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + use<> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4 == Some(a),
            IpAddr::V6(a) => self.v6 == Some(a),
        }
    }

    /// The address of `ip`'s family.
    pub fn of_family(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

impl From<IpAddr> for PodAddrs {
    /// One address (of its family).
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self {
                v4: Some(a),
                v6: None,
            },
            IpAddr::V6(a) => Self {
                v4: None,
                v6: Some(a),
            },
        }
    }
}

/// `net` with its host bits cleared.
pub fn masked(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// Whether `outer` contains every address of `inner` (never across families).
pub fn covers(outer: IpNetwork, inner: IpNetwork) -> bool {
    inner.is_ipv4() == outer.is_ipv4()
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.network())
}

/// The network of one address.
pub fn host(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

/// 0.0.0.0/0.
pub const ALL_V4: IpNetwork = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(n) => IpNetwork::V4(n),
    None => panic!("0.0.0.0/0 is a valid network"),
};

/// ::/0.
pub const ALL_V6: IpNetwork = match Ipv6Network::new_checked(Ipv6Addr::UNSPECIFIED, 0) {
    Some(n) => IpNetwork::V6(n),
    None => panic!("::/0 is a valid network"),
};

/// The family's name, as `policy explain` says it.
pub fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_addresses_one_per_family() {
        let pod = PodInfo {
            pod_ip: Some("fd00::5".parse().unwrap()),
            pod_ips: ["fd00::5", "10.0.0.5", "10.0.0.6"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            ..PodInfo::default()
        };
        let a = PodAddrs::of(&pod);
        assert_eq!(a.v4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(a.v6, Some("fd00::5".parse().unwrap()));
        assert_eq!(a.iter().count(), 2);
    }

    #[test]
    fn covers_never_crosses_families() {
        let v4: IpNetwork = "0.0.0.0/0".parse().unwrap();
        let v6: IpNetwork = "::/0".parse().unwrap();
        assert!(!covers(v4, v6) && !covers(v6, v4));
        assert!(covers(v6, "fd00::/8".parse().unwrap()));
        assert_eq!(
            masked("fd00::5/64".parse().unwrap()),
            "fd00::/64".parse::<IpNetwork>().unwrap()
        );
    }
}
