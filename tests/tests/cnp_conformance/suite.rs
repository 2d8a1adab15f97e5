//! The shape of the upstream suite, as data: a [`Test`] is one upstream
//! `suite.ConformanceTest` (its `ShortName`, `Features` and `Manifests`), a [`Subtest`] one
//! of its `t.Run`s, and a subtest is a list of [`Step`]s in upstream's order: the policy
//! edits upstream makes (`PatchClusterNetworkPolicy`, `PatchNamespace`, `Client.Delete`) and
//! the probes it makes (`PokeServer`: client pod, protocol, server pod, port, whether it
//! should connect). Nothing here is computed: every value is written in
//! `admin_tier.rs`, `baseline_tier.rs` and `experimental.rs` from the upstream Go code.
//!
//! Upstream runs the subtests of one test in order on one copy of the policies, so a
//! subtest starts from what the ones before it changed. Here every subtest starts from the
//! test's manifests with the edits of the subtests before it applied ([`Test::start_of`]),
//! so each can run alone and from a clean agent state.

/// `suite.SupportedFeature`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "upstream's feature names (`SupportClusterNetworkPolicy...`)"
)]
pub enum Feature {
    ClusterNetworkPolicy,
    ClusterNetworkPolicyNamedPorts,
    ClusterNetworkPolicyEgressNodePeers,
}

/// Upstream's conformance profile `ClusterNetworkPolicy` has `ClusterNetworkPolicy` as its
/// standard feature and the other two as experimental ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Standard,
    Experimental,
}

/// A file of upstream's `conformance/base/` (verbatim, in `upstream/`).
#[derive(Clone, Copy, Debug)]
pub struct Manifest {
    pub path: &'static str,
    pub text: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub struct Test {
    pub short_name: &'static str,
    pub description: &'static str,
    pub features: &'static [Feature],
    pub manifests: &'static [Manifest],
    pub subtests: &'static [Subtest],
}

impl Test {
    pub fn profile(&self) -> Profile {
        if self
            .features
            .iter()
            .all(|f| *f == Feature::ClusterNetworkPolicy)
        {
            Profile::Standard
        } else {
            Profile::Experimental
        }
    }

    /// The edits a subtest starts with: those of every subtest before it, in order.
    pub fn start_of(&self, subtest: usize) -> impl Iterator<Item = &'static Edit> + use<> {
        let subtests: &'static [Subtest] = self.subtests;
        subtests[..subtest]
            .iter()
            .flat_map(|s| s.steps)
            .filter_map(|step| match step {
                Step::Edit(e) => Some(e),
                Step::Poke(_) => None,
            })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Subtest {
    /// The `t.Run` name.
    pub name: &'static str,
    pub steps: &'static [Step],
}

#[derive(Clone, Copy, Debug)]
pub enum Step {
    Edit(Edit),
    Poke(Poke),
}

/// The protocol of a probe (`PokeServer`'s `protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
}

/// `kubernetes.PokeServer(client's namespace, client pod, protocol, server pod's
/// PodIP, port, shouldConnect)`. Pods are `<house>/<pod>`, the namespace being
/// `network-policy-conformance-<house>`.
#[derive(Clone, Copy, Debug)]
pub struct Poke {
    pub client: &'static str,
    pub proto: Proto,
    pub server: &'static str,
    pub port: u16,
    pub connect: bool,
    /// Not one of upstream's probes: added here (the table at the top of
    /// `cnp_conformance.rs` says why).
    pub added: bool,
}

/// Which rules of a ClusterNetworkPolicy (`Spec.Egress` or `Spec.Ingress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Egress,
    Ingress,
}

impl Dir {
    pub fn field(self) -> &'static str {
        match self {
            Dir::Egress => "egress",
            Dir::Ingress => "ingress",
        }
    }
}

/// A rule's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
    }
}

/// A change upstream makes to the cluster in the middle of a test. Consecutive edits are
/// one change of the cluster (one `Patch`), made before the next probe.
#[derive(Clone, Copy, Debug)]
pub enum Edit {
    /// `x := mutate.Spec.<dir>[a]; mutate.Spec.<dir>[a] = mutate.Spec.<dir>[b];
    /// mutate.Spec.<dir>[b] = x` on ClusterNetworkPolicy `policy`.
    Swap {
        policy: &'static str,
        dir: Dir,
        a: usize,
        b: usize,
    },
    /// `mutate.Spec.<dir>[index].Action = action`.
    SetAction {
        policy: &'static str,
        dir: Dir,
        index: usize,
        action: Action,
    },
    /// `mutate.Spec.Priority = priority`.
    SetPriority { policy: &'static str, priority: i32 },
    /// `rule := mutate.Spec.<dir>[index]; rule.Protocols =
    /// []ClusterNetworkPolicyProtocol{{DestinationNamedPort: port}}; mutate.Spec.<dir>[index]
    /// = rule`.
    NamedPort {
        policy: &'static str,
        dir: Dir,
        index: usize,
        port: &'static str,
    },
    /// `mutate.Spec.Egress = append([]ClusterNetworkPolicyEgressRule{{Name: name, Action:
    /// action, To: {{Networks: <each pod's PodIP>/32 or /128>}}}}, mutate.Spec.Egress...)`.
    PrependNetworksRule {
        policy: &'static str,
        name: &'static str,
        action: Action,
        pods: &'static [&'static str],
    },
    /// `s.Client.Delete` of NetworkPolicy `name` in namespace `network-policy-conformance-
    /// <house>`.
    DeleteNetworkPolicy {
        house: &'static str,
        name: &'static str,
    },
    /// `namespace.SetLabels(labels)` then `PatchNamespace`: the namespace's labels become
    /// `labels` (the API server keeps `kubernetes.io/metadata.name`; the agent adds it).
    SetNamespaceLabels {
        house: &'static str,
        labels: &'static [(&'static str, &'static str)],
    },
}

// Constructors, so the data reads as upstream's calls.

pub const fn poke(
    client: &'static str,
    proto: Proto,
    server: &'static str,
    port: u16,
    connect: bool,
) -> Step {
    Step::Poke(Poke {
        client,
        proto,
        server,
        port,
        connect,
        added: false,
    })
}

/// A probe upstream does not make (see [`Poke::added`]).
pub const fn added_poke(
    client: &'static str,
    proto: Proto,
    server: &'static str,
    port: u16,
    connect: bool,
) -> Step {
    Step::Poke(Poke {
        client,
        proto,
        server,
        port,
        connect,
        added: true,
    })
}

pub const fn swap(policy: &'static str, dir: Dir, a: usize, b: usize) -> Step {
    Step::Edit(Edit::Swap { policy, dir, a, b })
}

pub const fn set_action(policy: &'static str, dir: Dir, index: usize, action: Action) -> Step {
    Step::Edit(Edit::SetAction {
        policy,
        dir,
        index,
        action,
    })
}

pub const fn set_priority(policy: &'static str, priority: i32) -> Step {
    Step::Edit(Edit::SetPriority { policy, priority })
}

pub const fn named_port(policy: &'static str, dir: Dir, index: usize, port: &'static str) -> Step {
    Step::Edit(Edit::NamedPort {
        policy,
        dir,
        index,
        port,
    })
}

pub const fn prepend_networks(
    policy: &'static str,
    name: &'static str,
    action: Action,
    pods: &'static [&'static str],
) -> Step {
    Step::Edit(Edit::PrependNetworksRule {
        policy,
        name,
        action,
        pods,
    })
}

pub const fn delete_network_policy(house: &'static str, name: &'static str) -> Step {
    Step::Edit(Edit::DeleteNetworkPolicy { house, name })
}

pub const fn set_namespace_labels(
    house: &'static str,
    labels: &'static [(&'static str, &'static str)],
) -> Step {
    Step::Edit(Edit::SetNamespaceLabels { house, labels })
}
