//! The compiler: a [`Snapshot`] and the node in, the [`Desired`] datapath state out.
//!
//! Pure and deterministic. Numbers (namespaces, identities, endpoints, policies) stay as
//! they were in the previous [`Allocations`] (see `alloc`). Pods share an identity when
//! they share namespace and labels, so selector peers become identity rules. ipBlocks (and
//! "any" peers) become a per-endpoint address partition (see `cidr`). Named ports resolve
//! against the endpoint itself for ingress; for egress against each destination pod: by
//! identity when every pod of the identity resolves the name alike, otherwise by address
//! (a /32 or /128 in the partition), so the result is exact either way.
//!
//! The cluster-wide part (numbers, IP cache, selector answers) is kept by the
//! [`Compiler`] (`incremental`) from one sync to the next; this file is the local part it
//! rebuilds: the endpoints of this node and the rules they admit.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    rc::Rc,
    sync::Arc,
};

use cns_common::{
    IDENTITY_CIDR_BASE, IDENTITY_FIRST_POD, IDENTITY_NAMESPACE_BASE,
    maps::{INCLUDES_ADDRESS, INCLUDES_NAMESPACE},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use ipnetwork::IpNetwork;

use super::{
    addr::{host, masked},
    cidr::{AddrGrant, Admits, BlockGrant, Partition, partition},
    cluster::{Action, ClusterPeer, ClusterPort, ClusterPorts, Tier},
    index::Index,
    mode::{self, AuditMode},
    model::{
        Allocations, CidrKey, ClusterRuleName, Direction, DryRunCause, LocalEndpoint, ObjectRef,
        PodInfo, PortMatch, PortRange, Protocol, RuleKey, RuleValue, Snapshot, TierRule,
    },
    ports::resolve as resolve_ports,
    select::Selections,
    selector::{matches, pod_labels},
    tiers::{self, Ranked},
    view::{
        Block, Peer, PortSpec, isolating_policies, named_port_numbers, pod_addrs, policy_rules,
        rule_peers, rule_ports,
    },
};

/// The local part of a [`Desired`]: this node's endpoints and what they admit.
pub(super) struct Local {
    pub endpoints: BTreeMap<ObjectRef, LocalEndpoint>,
    pub cidrs: BTreeMap<CidrKey, u32>,
    pub rules: BTreeMap<RuleKey, RuleValue>,
    pub cluster_rules: BTreeMap<(Direction, u32), ClusterRuleName>,
    pub dry_run_causes: BTreeMap<DryRunCause, Arc<str>>,
    /// Some rule read destination pods' named ports (so any pod change may change it).
    pub uses_members: bool,
}

/// Builds the local part for the endpoints numbered in `alloc`, from the cluster-wide
/// `index` and the selector answers kept in `selections`; `overrides` are the runtime
/// per-namespace audit modes.
pub(super) fn local(
    snapshot: &Snapshot,
    alloc: &Allocations,
    index: &Index,
    selections: &mut Selections,
    overrides: &BTreeMap<String, AuditMode>,
) -> Local {
    selections.begin_pass();
    let cluster = Cluster {
        snapshot,
        index,
        alloc,
        selections: RefCell::new(selections),
        uses_members: Cell::new(false),
        namespace_selections: RefCell::default(),
    };
    let mut out = Local {
        endpoints: BTreeMap::new(),
        cidrs: BTreeMap::new(),
        rules: BTreeMap::new(),
        cluster_rules: BTreeMap::new(),
        dry_run_causes: BTreeMap::new(),
        uses_members: false,
    };
    let ranked = tiers::ranked(snapshot);
    for (r, &ep_id) in &alloc.endpoints {
        let Some(pod) = snapshot.pods.get(r) else {
            continue;
        };
        // The addresses it owns (of two pods claiming one, the other may own it).
        let mut addrs = pod_addrs(pod);
        let owned = |ip: IpAddr| index.owners.get(&ip).is_some_and(|(o, _)| o == r);
        addrs.v4 = addrs.v4.filter(|a| owned(IpAddr::V4(*a)));
        addrs.v6 = addrs.v6.filter(|a| owned(IpAddr::V6(*a)));
        let Some(identity) = cluster.identity_of(r).filter(|_| !addrs.is_empty()) else {
            continue;
        };
        let iso =
            [Direction::Ingress, Direction::Egress].map(|dir| isolation(snapshot, r, pod, dir));
        let selecting: Vec<&Ranked<'_>> = match index.ns_labels.get(&*r.namespace) {
            Some(ns) => ranked
                .iter()
                .filter(|p| p.selects(ns, pod_labels(pod)))
                .collect(),
            None => Vec::new(),
        };
        let tiered = |dir| {
            selecting
                .iter()
                .any(|p| !p.dry_run() && !p.rules(dir).is_empty())
        };
        let dry_run =
            selecting.iter().any(|p| p.dry_run()) || iso.iter().any(|i| i.first_dry_run.is_some());
        let ep = LocalEndpoint {
            ep_id,
            addrs,
            identity,
            ns_id: alloc
                .namespaces
                .get(&*r.namespace)
                .copied()
                .unwrap_or_default(),
            ingress_isolated: iso[0].enforced,
            egress_isolated: iso[1].enforced,
            ingress_tiered: tiered(Direction::Ingress),
            egress_tiered: tiered(Direction::Egress),
            dry_run,
            ingress_would_isolate: iso[0].would,
            egress_would_isolate: iso[1].would,
            audit_override: mode::namespace_override(
                overrides.get(&*r.namespace).copied(),
                audit_override(snapshot, &r.namespace),
            ),
        };
        for (dir, iso) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .zip(&iso)
        {
            let (would_isolate, tiered) = (iso.would, tiered(dir));
            let any_cluster = selecting.iter().any(|p| !p.rules(dir).is_empty());
            if would_isolate || any_cluster {
                let mut eo = EndpointOut {
                    ep_id,
                    dir,
                    rules: BTreeMap::new(),
                    blocks: Vec::new(),
                    addrs: Vec::new(),
                };
                if would_isolate {
                    cluster.endpoint_rules(r, pod, &mut eo, &mut out.dry_run_causes);
                }
                for p in &selecting {
                    cluster.cluster_rules(pod, p, &mut eo, &mut out.cluster_rules);
                    if p.dry_run() {
                        let name: Arc<str> = mode::cluster_policy_name(p.name).into();
                        for rule in p.rules(dir) {
                            out.dry_run_causes
                                .insert(DryRunCause::Rule(p.rule_id(rule.index)), name.clone());
                        }
                    }
                }
                // Isolated by dry-run NetworkPolicies only: the first of them (by name) is
                // named as the one that would drop.
                if let Some(pr) = iso.first_dry_run.filter(|_| !iso.enforced) {
                    let name = mode::network_policy_name(&pr.namespace, &pr.name);
                    out.dry_run_causes
                        .insert(DryRunCause::Isolation(ep_id, dir), name.into());
                }
                let fold = (tiered || ep.dry_run).then_some(&cluster);
                eo.finish(fold, &mut out.cidrs, &mut out.rules);
            }
        }
        out.endpoints.insert(r.clone(), ep);
    }
    out.uses_members = cluster.uses_members.get();
    selections.sweep();
    out
}

/// A pod's isolation by NetworkPolicies in one direction, in both views.
struct Isolation<'a> {
    /// By an enforced policy.
    enforced: bool,
    /// By any policy, dry-run or not.
    would: bool,
    /// The first dry-run policy isolating it (by namespace and name).
    first_dry_run: Option<&'a ObjectRef>,
}

fn isolation<'a>(
    snapshot: &'a Snapshot,
    r: &'a ObjectRef,
    pod: &'a PodInfo,
    dir: Direction,
) -> Isolation<'a> {
    let mut out = Isolation {
        enforced: false,
        would: false,
        first_dry_run: None,
    };
    for (pr, np) in isolating_policies(snapshot, r, pod, dir) {
        out.would = true;
        if mode::policy_dry_run(&np.metadata) {
            out.first_dry_run.get_or_insert(pr);
        } else {
            out.enforced = true;
        }
    }
    out
}

/// The names of the snapshot's dry-run policies (`mode::policy_dry_run`).
pub(super) fn dry_run_policies(snapshot: &Snapshot) -> BTreeSet<Arc<str>> {
    let nps = snapshot
        .policies
        .iter()
        .filter(|(_, np)| mode::policy_dry_run(&np.metadata))
        .map(|(r, _)| mode::network_policy_name(&r.namespace, &r.name).into());
    let cnps = snapshot
        .cluster_policies
        .iter()
        .filter(|(_, p)| mode::policy_dry_run(&p.metadata))
        .map(|(name, _)| mode::cluster_policy_name(name).into());
    nps.chain(cnps).collect()
}

fn audit_override(snapshot: &Snapshot, namespace: &str) -> Option<AuditMode> {
    mode::annotation(snapshot.namespaces.get(namespace)?)
}

/// What the local pass looks things up in.
struct Cluster<'a> {
    snapshot: &'a Snapshot,
    index: &'a Index,
    alloc: &'a Allocations,
    selections: RefCell<&'a mut Selections>,
    uses_members: Cell<bool>,
    /// Namespace selectors' answers in this pass, by the selector's address.
    namespace_selections: RefCell<HashMap<usize, Rc<[u16]>>>,
}

impl Cluster<'_> {
    fn identity_of(&self, r: &ObjectRef) -> Option<u32> {
        let (_, key) = self.index.facts.get(r)?.active.as_ref()?;
        self.alloc.identities.get(key).copied()
    }

    /// The identities a selector peer of a policy in `policy_ns` designates.
    fn select(
        &self,
        policy_ns: &str,
        namespace: Option<&LabelSelector>,
        pod: Option<&LabelSelector>,
    ) -> Arc<[u32]> {
        self.selections.borrow_mut().select(
            policy_ns,
            namespace,
            pod,
            &self.alloc.identities,
            &self.index.ns_labels,
        )
    }

    /// The addressed pods of identity `id`.
    fn members(&self, id: u32) -> impl Iterator<Item = (IpAddr, &PodInfo)> + '_ {
        self.uses_members.set(true);
        self.index
            .members(id)
            .filter_map(|(ip, r)| Some((ip, &**self.snapshot.pods.get(r)?)))
    }

    /// Collects everything endpoint pod `r` admits in `out.dir`: a dry-run policy's allows
    /// in the would-be view only, and its id in `causes`.
    fn endpoint_rules(
        &self,
        r: &ObjectRef,
        pod: &PodInfo,
        out: &mut EndpointOut,
        causes: &mut BTreeMap<DryRunCause, Arc<str>>,
    ) {
        for (pr, np) in isolating_policies(self.snapshot, r, pod, out.dir) {
            let Some(&policy) = self.alloc.policies.get(pr) else {
                continue;
            };
            let dry_run = mode::policy_dry_run(&np.metadata);
            if dry_run {
                let name = mode::network_policy_name(&pr.namespace, &pr.name);
                causes.insert(DryRunCause::Rule(policy), name.into());
            }
            for rule in policy_rules(np, out.dir) {
                let ports = rule_ports(&rule);
                for peer in rule_peers(&rule) {
                    for spec in &ports {
                        let allow = match dry_run {
                            true => RuleValue::allow(policy).dry_run(),
                            false => RuleValue::allow(policy),
                        };
                        self.grant(&pr.namespace, pod, allow, &peer, spec, out);
                    }
                }
            }
        }
    }

    /// Collects what the rules of ClusterNetworkPolicy `p` (which selects endpoint `pod`)
    /// say in `out.dir`, and names them in `names`.
    fn cluster_rules(
        &self,
        pod: &PodInfo,
        p: &Ranked<'_>,
        out: &mut EndpointOut,
        names: &mut BTreeMap<(Direction, u32), ClusterRuleName>,
    ) {
        for rule in p.rules(out.dir) {
            let t = TierRule {
                rank: p.rank(rule.index),
                action: rule.action,
            };
            let value = match p.tier() {
                Tier::Admin => RuleValue {
                    admin: Some(t),
                    ..RuleValue::default()
                },
                Tier::Baseline => RuleValue {
                    baseline: Some(t),
                    ..RuleValue::default()
                },
            };
            let value = if p.dry_run() { value.dry_run() } else { value };
            names
                .entry((out.dir, p.rule_id(rule.index)))
                .or_insert_with(|| p.rule_name(out.dir, rule.index));
            let specs: Vec<PortSpec> = match &rule.ports {
                ClusterPorts::All => vec![PortSpec::All],
                ClusterPorts::Some(ports) => ports
                    .iter()
                    .flat_map(|port| match port {
                        ClusterPort::Proto(p) => vec![PortSpec::Proto(*p)],
                        ClusterPort::Range(p, r) => vec![PortSpec::Range(*p, *r)],
                        ClusterPort::Named(name) => [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                            .map(|p| PortSpec::Named(p, name.clone()))
                            .into(),
                    })
                    .collect(),
            };
            let block = |net: IpNetwork| {
                Peer::Block(Block {
                    net: masked(net),
                    excepts: Vec::new(),
                })
            };
            let mut peers: Vec<Peer<'_>> = Vec::new();
            for peer in &rule.peers {
                match peer {
                    ClusterPeer::Namespaces(sel) => peers.push(Peer::Pods {
                        namespace: Some(sel),
                        pod: None,
                    }),
                    ClusterPeer::Pods(np) => peers.push(Peer::Pods {
                        namespace: Some(&np.namespace_selector),
                        pod: Some(&np.pod_selector),
                    }),
                    ClusterPeer::Nodes(sel) => peers.extend(
                        self.snapshot
                            .nodes
                            .values()
                            .filter(|n| matches(sel, &n.labels))
                            .flat_map(|n| n.addresses.iter())
                            .map(|ip| block(host(*ip))),
                    ),
                    ClusterPeer::Networks(nets) => peers.extend(nets.iter().map(|n| block(*n))),
                    // Unsupported: matches nothing for Accept, everything for Deny and Pass.
                    ClusterPeer::DomainNames if rule.action == Action::Accept => {}
                    ClusterPeer::DomainNames => peers.extend(Block::any().map(Peer::Block)),
                }
            }
            for peer in &peers {
                for spec in &specs {
                    match (self.whole_namespaces(peer), spec) {
                        // Every pod of some namespaces on fixed ports: one entry per
                        // namespace instead of one per pod identity.
                        (Some(sel), spec) if !matches!(spec, PortSpec::Named(..)) => {
                            for &ns in self.namespaces_matching(sel).iter() {
                                self.grant_namespace(ns, value, spec, out);
                            }
                        }
                        _ => self.grant("", pod, value, peer, spec, out),
                    }
                }
            }
        }
    }

    /// The namespace selector of a peer that designates every pod of the namespaces it
    /// selects (no pod selector, or an empty one).
    fn whole_namespaces<'p>(&self, peer: &Peer<'p>) -> Option<&'p LabelSelector> {
        match peer {
            Peer::Pods {
                namespace: Some(ns),
                pod,
            } if pod.is_none_or(|p| {
                p.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && p.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            }) =>
            {
                Some(ns)
            }
            _ => None,
        }
    }

    /// The ids of the (numbered) namespaces `sel` selects, once per selector and pass (the
    /// snapshot does not change during a pass, so its selectors are known by address).
    fn namespaces_matching(&self, sel: &LabelSelector) -> Rc<[u16]> {
        let key = std::ptr::from_ref(sel) as usize;
        self.namespace_selections
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                self.index
                    .ns_labels
                    .iter()
                    .filter(|(_, labels)| matches(sel, labels))
                    .filter_map(|(name, _)| self.alloc.namespaces.get(name).copied())
                    .collect()
            })
            .clone()
    }

    /// What `value` says of every pod of namespace `ns` on `spec`'s (numeric) ports.
    fn grant_namespace(&self, ns: u16, value: RuleValue, spec: &PortSpec, out: &mut EndpointOut) {
        let m = match spec {
            PortSpec::All => PortMatch {
                proto: None,
                ports: None,
            },
            PortSpec::Proto(p) => PortMatch {
                proto: Some(*p),
                ports: None,
            },
            PortSpec::Range(p, r) => PortMatch {
                proto: Some(*p),
                ports: Some(*r),
            },
            PortSpec::Nothing | PortSpec::Named(..) => return,
        };
        out.rule(IDENTITY_NAMESPACE_BASE | u32::from(ns), m, value);
    }

    /// One (peer, port) pair of a rule of policy id `policy` (in namespace `policy_ns`).
    fn grant(
        &self,
        policy_ns: &str,
        endpoint: &PodInfo,
        policy: RuleValue,
        peer: &Peer<'_>,
        spec: &PortSpec,
        out: &mut EndpointOut,
    ) {
        let fixed: Vec<PortMatch> = match spec {
            PortSpec::All => vec![PortMatch {
                proto: None,
                ports: None,
            }],
            PortSpec::Proto(p) => vec![PortMatch {
                proto: Some(*p),
                ports: None,
            }],
            PortSpec::Range(p, r) => vec![PortMatch {
                proto: Some(*p),
                ports: Some(*r),
            }],
            PortSpec::Nothing => return,
            PortSpec::Named(p, name) => match out.dir {
                Direction::Ingress => named_port_numbers(endpoint, name, *p)
                    .into_iter()
                    .map(|n| single(*p, n))
                    .collect(),
                Direction::Egress => {
                    return self.grant_named_egress(policy_ns, policy, peer, *p, name, out);
                }
            },
        };
        match peer {
            Peer::Nothing => {}
            Peer::Pods { namespace, pod } => {
                for &id in self.select(policy_ns, *namespace, *pod).iter() {
                    for m in &fixed {
                        out.rule(id, *m, policy);
                    }
                }
            }
            Peer::Block(block) => {
                for m in fixed {
                    out.blocks.push(BlockGrant {
                        block: block.clone(),
                        ports: m,
                        policy,
                    });
                }
            }
        }
    }

    /// An egress named port: resolved per destination pod.
    fn grant_named_egress(
        &self,
        policy_ns: &str,
        policy: RuleValue,
        peer: &Peer<'_>,
        proto: Protocol,
        name: &str,
        out: &mut EndpointOut,
    ) {
        // (identity, address, port numbers) of each destination pod.
        let mut dests: Vec<(u32, IpAddr, BTreeSet<u16>)> = Vec::new();
        match peer {
            Peer::Nothing => {}
            Peer::Pods { namespace, pod } => {
                for &id in self.select(policy_ns, *namespace, *pod).iter() {
                    for (ip, p) in self.members(id) {
                        dests.push((id, ip, named_port_numbers(p, name, proto)));
                    }
                }
            }
            Peer::Block(block) => {
                self.uses_members.set(true);
                for (ip, (r, id)) in &self.index.owners {
                    if let (true, Some(p)) = (block.contains(*ip), self.snapshot.pods.get(r)) {
                        dests.push((*id, *ip, named_port_numbers(p, name, proto)));
                    }
                }
            }
        }
        let mut by_identity: BTreeMap<u32, Vec<(IpAddr, BTreeSet<u16>)>> = BTreeMap::new();
        for (id, ip, ports) in dests {
            by_identity.entry(id).or_default().push((ip, ports));
        }
        for (id, dests) in by_identity {
            let all_members = self.index.members(id).count() == dests.len();
            let alike = dests.windows(2).all(|w| w[0].1 == w[1].1);
            if all_members && alike {
                for n in dests.first().map(|d| d.1.clone()).unwrap_or_default() {
                    out.rule(id, single(proto, n), policy);
                }
            } else {
                for (ip, ports) in dests {
                    for n in ports {
                        out.addrs.push(AddrGrant {
                            ip,
                            ports: single(proto, n),
                            policy,
                        });
                    }
                }
            }
        }
    }
}

fn single(proto: Protocol, port: u16) -> PortMatch {
    PortMatch {
        proto: Some(proto),
        ports: Some(PortRange {
            start: port,
            end: port,
        }),
    }
}

/// What the rules say of one endpoint in one direction, as it is collected: by identity,
/// each port match with everything said of it.
struct EndpointOut {
    ep_id: u32,
    dir: Direction,
    rules: BTreeMap<u32, BTreeMap<PortMatch, RuleValue>>,
    blocks: Vec<BlockGrant>,
    addrs: Vec<AddrGrant>,
}

impl EndpointOut {
    fn rule(&mut self, identity: u32, ports: PortMatch, policy: RuleValue) {
        let e = self
            .rules
            .entry(identity)
            .or_default()
            .entry(ports)
            .or_insert(policy);
        *e = e.merge(policy);
    }

    /// Turns the collected address grants into partition entries and their rules, and
    /// writes every identity's entries, resolved (`ports`), into `rules`.
    /// With `fold` (a direction ClusterNetworkPolicies apply to), each pod identity's
    /// entries also take in what its namespace's entries say, and what its address set's say
    /// when every address of the identity falls in sets that say the same ([`fold`]).
    fn finish(
        mut self,
        fold: Option<&Cluster<'_>>,
        cidrs: &mut BTreeMap<CidrKey, u32>,
        rules: &mut BTreeMap<RuleKey, RuleValue>,
    ) {
        let part = partition(&self.blocks, &self.addrs);
        let set_identity =
            |i: usize| IDENTITY_CIDR_BASE.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        for (net, i) in &part.prefixes {
            let key = CidrKey {
                ep_id: self.ep_id,
                dir: self.dir,
                net: *net,
            };
            cidrs.insert(key, set_identity(*i));
        }
        for (i, set) in part.sets.iter().enumerate() {
            for (ports, policy) in set {
                self.rule(set_identity(i), *ports, *policy);
            }
        }
        if let Some(cluster) = fold {
            self.fold(cluster, &part);
        }
        for (identity, entries) in &self.rules {
            for (ports, value) in resolve_ports(entries) {
                let key = RuleKey {
                    ep_id: self.ep_id,
                    dir: self.dir,
                    identity: *identity,
                    ports,
                };
                rules.insert(key, value);
            }
        }
    }

    /// Folds into each pod identity's entries what the lookups after it would find: its
    /// namespace's entries (always: an identity is of one namespace), and its address
    /// set's when all its addresses agree (the same entries, or none). The entries say so
    /// (`includes`), and a new flow whose identity entry is found takes one lookup, not three.
    fn fold(&mut self, cluster: &Cluster<'_>, part: &Partition) {
        let namespaced = |id: u32| (IDENTITY_NAMESPACE_BASE..IDENTITY_CIDR_BASE).contains(&id);
        let namespaces: BTreeMap<u32, BTreeMap<PortMatch, RuleValue>> = self
            .rules
            .iter()
            .filter(|(id, _)| namespaced(**id))
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        // The longest prefix of the partition holding `ip`: its set's index.
        let set_of = |ip: IpAddr| {
            part.prefixes
                .iter()
                .filter(|(net, _)| net.contains(ip))
                .max_by_key(|(net, _)| net.prefix())
                .map(|(_, i)| *i)
        };
        for (id, entries) in self.rules.iter_mut() {
            if *id < IDENTITY_FIRST_POD || *id >= IDENTITY_NAMESPACE_BASE {
                continue;
            }
            let members: Vec<(IpAddr, &ObjectRef)> = cluster.index.members(*id).collect();
            let Some(ns) = members
                .first()
                .and_then(|(_, r)| cluster.alloc.namespaces.get(&*r.namespace))
            else {
                continue;
            };
            let mut includes = INCLUDES_NAMESPACE;
            let mut extra: Vec<(PortMatch, RuleValue)> = namespaces
                .get(&(IDENTITY_NAMESPACE_BASE | u32::from(*ns)))
                .into_iter()
                .flatten()
                .map(|(m, v)| (*m, *v))
                .collect();
            let sets: BTreeSet<Option<&Admits>> = members
                .iter()
                .map(|(ip, _)| set_of(*ip).map(|i| &part.sets[i]))
                .collect();
            if let [only] = sets.iter().collect::<Vec<_>>()[..] {
                includes |= INCLUDES_ADDRESS;
                extra.extend(only.iter().flat_map(|s| s.iter()).map(|(m, v)| (*m, *v)));
            }
            for (m, v) in extra {
                let e = entries.entry(m).or_insert(v);
                *e = e.merge(v);
            }
            for v in entries.values_mut() {
                v.includes = includes;
            }
        }
    }
}
