//! The address partition of one endpoint and direction, for the kernel's longest-prefix
//! lookup.
//!
//! Input: ipBlock grants (addresses of a block, minus its excepts, admitted on some ports)
//! and single-address grants (a pod admitted on the ports its named port resolves to).
//! Let B be every block, except and host prefix used (/32, /128: both families in one
//! partition, since a prefix never covers one of the other family). For an address, what it is admitted on
//! depends only on its longest match P in B: a block contains it iff the block's network
//! contains P and none of its excepts does (prefixes containing one address are nested).
//! So each P maps to the set of (ports, policy) it is admitted on, and the kernel's LPM over
//! those entries answers exactly. A P whose set is empty is kept only when a shorter prefix
//! has a non-empty set (otherwise the lookup would fall through to it).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnetwork::IpNetwork;

use super::{
    addr::{covers, host},
    model::{PortMatch, RuleValue},
    view::Block,
};

/// What the rules say of the addresses of `block` on `ports`.
#[derive(Clone, Debug)]
pub struct BlockGrant {
    pub block: Block,
    pub ports: PortMatch,
    pub policy: RuleValue,
}

/// What the rules say of the single address `ip` on `ports`.
#[derive(Clone, Debug)]
pub struct AddrGrant {
    pub ip: IpAddr,
    pub ports: PortMatch,
    pub policy: RuleValue,
}

/// What the rules say of a prefix: each port match with everything said of it, merged.
pub type Admits = BTreeMap<PortMatch, RuleValue>;

/// The partition: each prefix with the index of its set in `sets`; sets are distinct and
/// numbered in prefix order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    pub prefixes: BTreeMap<IpNetwork, usize>,
    pub sets: Vec<Admits>,
}

pub fn partition(blocks: &[BlockGrant], addrs: &[AddrGrant]) -> Partition {
    let mut prefixes: BTreeSet<IpNetwork> = BTreeSet::new();
    for g in blocks {
        prefixes.insert(g.block.net);
        prefixes.extend(g.block.excepts.iter().copied());
    }
    prefixes.extend(addrs.iter().map(|g| host(g.ip)));

    let admits: BTreeMap<IpNetwork, Admits> = prefixes
        .iter()
        .map(|&p| {
            let mut set = Admits::new();
            let mut add = |ports: PortMatch, policy: RuleValue| {
                let e = set.entry(ports).or_insert(policy);
                *e = e.merge(policy);
            };
            for g in blocks {
                if covers(g.block.net, p) && !g.block.excepts.iter().any(|e| covers(*e, p)) {
                    add(g.ports, g.policy);
                }
            }
            for g in addrs {
                if host(g.ip) == p {
                    add(g.ports, g.policy);
                }
            }
            (p, set)
        })
        .collect();

    let mut out = Partition::default();
    for (&p, set) in &admits {
        let needed = !set.is_empty()
            || admits
                .iter()
                .any(|(&q, s)| q != p && !s.is_empty() && covers(q, p));
        if !needed {
            continue;
        }
        let idx = match out.sets.iter().position(|s| s == set) {
            Some(i) => i,
            None => {
                out.sets.push(set.clone());
                out.sets.len() - 1
            }
        };
        out.prefixes.insert(p, idx);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{PortRange, Protocol};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn admits<const N: usize>(entries: [(PortMatch, u32); N]) -> Admits {
        entries
            .into_iter()
            .map(|(m, p)| (m, RuleValue::allow(p)))
            .collect()
    }

    fn block(cidr: &str, excepts: &[&str], ports: PortMatch, policy: u32) -> BlockGrant {
        BlockGrant {
            block: Block {
                net: net(cidr),
                excepts: excepts.iter().map(|e| net(e)).collect(),
            },
            ports,
            policy: RuleValue::allow(policy),
        }
    }

    const ALL: PortMatch = PortMatch {
        proto: None,
        ports: None,
    };
    const TCP80: PortMatch = PortMatch {
        proto: Some(Protocol::Tcp),
        ports: Some(PortRange { start: 80, end: 80 }),
    };

    /// What the longest-prefix lookup of `ip` yields.
    fn lookup(p: &Partition, ip: &str) -> Option<Admits> {
        let ip: IpAddr = ip.parse().unwrap();
        p.prefixes
            .iter()
            .filter(|(n, _)| n.contains(ip))
            .max_by_key(|(n, _)| n.prefix())
            .map(|(_, i)| p.sets[*i].clone())
    }

    #[test]
    fn except_carves_a_hole() {
        let p = partition(&[block("10.0.0.0/8", &["10.1.0.0/16"], ALL, 1)], &[]);
        assert_eq!(lookup(&p, "10.2.3.4"), Some(admits([(ALL, 1)])));
        assert_eq!(lookup(&p, "10.1.3.4"), Some(Admits::new()));
        assert_eq!(lookup(&p, "11.0.0.1"), None);
        assert_eq!(p.sets.len(), 2);
    }

    #[test]
    fn except_inside_an_overlapping_block_of_another_policy() {
        // Policy 2's block has no except: 10.1.0.0/16 is still admitted, by policy 2 only.
        let p = partition(
            &[
                block("10.0.0.0/8", &["10.1.0.0/16"], ALL, 1),
                block("10.0.0.0/12", &[], ALL, 2),
            ],
            &[],
        );
        assert_eq!(lookup(&p, "10.1.0.9"), Some(admits([(ALL, 2)])));
        assert_eq!(lookup(&p, "10.2.0.9"), Some(admits([(ALL, 1)])));
        assert_eq!(lookup(&p, "10.200.0.9"), Some(admits([(ALL, 1)])));
    }

    #[test]
    fn empty_prefix_without_admitting_parent_is_omitted() {
        // 10.1/16 is only an except of a block that another except removes entirely.
        let p = partition(
            &[block("10.0.0.0/8", &["10.0.0.0/8", "10.1.0.0/16"], ALL, 1)],
            &[],
        );
        assert!(p.prefixes.is_empty());
    }

    #[test]
    fn single_addresses_add_to_their_blocks() {
        let p = partition(
            &[block("10.0.0.0/24", &[], ALL, 3)],
            &[AddrGrant {
                ip: "10.0.0.7".parse().unwrap(),
                ports: TCP80,
                policy: RuleValue::allow(1),
            }],
        );
        assert_eq!(lookup(&p, "10.0.0.7"), Some(admits([(ALL, 3), (TCP80, 1)])));
        assert_eq!(lookup(&p, "10.0.0.8"), Some(admits([(ALL, 3)])));
    }

    #[test]
    fn equal_sets_share_an_index() {
        let p = partition(
            &[
                block("10.0.0.0/24", &[], TCP80, 1),
                block("10.0.1.0/24", &[], TCP80, 1),
            ],
            &[],
        );
        assert_eq!(p.sets.len(), 1);
        assert_eq!(p.prefixes.len(), 2);
    }
}
