//! The upstream model and its truth tables: namespaces x, y, z with pods a, b, c each (nine
//! pods, all on this node), every pod serving TCP and UDP on ports 80 and 81, and the
//! `Reachability` helpers of upstream `reachability.go` (`Expect`, `ExpectPeer`,
//! `ExpectAllIngress`, `ExpectAllEgress`) with which each case states what it expects.

use std::{fmt::Write as _, net::Ipv4Addr};

use cns_tests::{Family, agent::NODE_NAME, netns::v6_of};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, over TCP and UDP (upstream creates one container per port
/// and protocol, named `cont-<port>-<proto>`, with the named port `serve-<port>-<proto>`).
pub const PORTS: [u16; 2] = [80, 81];
pub const N: usize = NAMESPACES.len() * POD_NAMES.len();

/// The probed protocol of one validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Index of pod "ns/pod" in the model's order (x/a, x/b, ..., z/c), as upstream's
/// `AllPods()` orders them.
pub fn index(pod: &str) -> usize {
    let (ns, name) = pod
        .split_once('/')
        .unwrap_or_else(|| panic!("expected ns/pod, found {pod:?}"));
    let n = NAMESPACES.iter().position(|x| *x == ns);
    let p = POD_NAMES.iter().position(|x| *x == name);
    match (n, p) {
        (Some(n), Some(p)) => n * POD_NAMES.len() + p,
        _ => panic!("no pod {pod:?} in the model"),
    }
}

pub fn ns_of(i: usize) -> &'static str {
    NAMESPACES[i / POD_NAMES.len()]
}

pub fn name_of(i: usize) -> &'static str {
    POD_NAMES[i % POD_NAMES.len()]
}

pub fn pod_string(i: usize) -> String {
    format!("{}/{}", ns_of(i), name_of(i))
}

/// Pod addresses: 10.0.<1 + namespace>.<10 + pod>.
pub fn ip(i: usize) -> Ipv4Addr {
    let n = u8::try_from(i / POD_NAMES.len()).expect("small");
    let p = u8::try_from(i % POD_NAMES.len()).expect("small");
    Ipv4Addr::new(10, 0, 1 + n, 10 + p)
}

/// The labels of the cluster, which cases may change (upstream `AddNamespaceLabel`,
/// `AddPodLabels`); [`ClusterState::default`] is the model's initial state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterState {
    pub ns_labels: Vec<Vec<(String, String)>>,
    pub pod_labels: Vec<Vec<(String, String)>>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self {
            // Upstream `Namespace.LabelSelector()`; the agent adds kubernetes.io/metadata.name
            // as the API server does.
            ns_labels: NAMESPACES
                .iter()
                .map(|ns| vec![("ns".to_owned(), (*ns).to_owned())])
                .collect(),
            // Upstream `Pod.LabelSelector()`.
            pod_labels: (0..N)
                .map(|i| vec![("pod".to_owned(), name_of(i).to_owned())])
                .collect(),
        }
    }
}

fn set_label(labels: &mut Vec<(String, String)>, key: &str, value: &str) {
    match labels.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_owned(),
        None => labels.push((key.to_owned(), value.to_owned())),
    }
}

impl ClusterState {
    pub fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) {
        let n = NAMESPACES
            .iter()
            .position(|x| *x == ns)
            .unwrap_or_else(|| panic!("no namespace {ns}"));
        set_label(&mut self.ns_labels[n], key, value);
    }

    /// Upstream `AddPodLabels`: sets each label (keeping the others).
    pub fn add_pod_labels(&mut self, pod: &str, labels: &[(&str, &str)]) {
        let i = index(pod);
        for (k, v) in labels {
            set_label(&mut self.pod_labels[i], k, v);
        }
    }

    /// The Namespace and Pod manifests of the model, as `kubectl get -o yaml` prints them
    /// (strings quoted: unquoted `y` is a boolean in YAML 1.1), with the pods' addresses of
    /// `family` (dual-stack: `podIP` IPv4, `podIPs` both).
    pub fn yaml(&self, family: Family) -> String {
        let mut out = String::new();
        for (n, ns) in NAMESPACES.iter().enumerate() {
            write!(
                out,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{ns}\"\n  labels:\n{}",
                labels_yaml(&self.ns_labels[n])
            )
            .expect("string");
        }
        for i in 0..N {
            write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: \"{}\"\n  namespace: \"{}\"\n  labels:\n{}\
                 spec:\n  nodeName: \"{NODE_NAME}\"\n  containers:\n",
                name_of(i),
                ns_of(i),
                labels_yaml(&self.pod_labels[i])
            )
            .expect("string");
            for port in PORTS {
                for proto in ["TCP", "UDP"] {
                    let lower = proto.to_lowercase();
                    write!(
                        out,
                        "  - name: \"cont-{port}-{lower}\"\n    image: agnhost\n    ports:\n    \
                         - {{name: \"serve-{port}-{lower}\", containerPort: {port}, protocol: {proto}}}\n"
                    )
                    .expect("string");
                }
            }
            let (v4, v6) = (ip(i).to_string(), v6_of(ip(i)).to_string());
            let ips: Vec<&str> = match family {
                Family::Ipv4 => vec![&v4],
                Family::Ipv6 => vec![&v6],
                Family::Dual => vec![&v4, &v6],
            };
            write!(
                out,
                "status:\n  phase: Running\n  podIP: \"{}\"\n  podIPs:\n{}",
                ips[0],
                ips.iter()
                    .map(|a| format!("  - ip: \"{a}\"\n"))
                    .collect::<String>()
            )
            .expect("string");
        }
        out
    }
}

fn labels_yaml(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("    \"{k}\": \"{v}\"\n"))
        .collect()
}

/// Upstream `Peer`: an empty namespace or pod matches every one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer {
    pub namespace: Option<&'static str>,
    pub pod: Option<&'static str>,
}

impl Peer {
    /// `&Peer{}`
    pub fn any() -> Self {
        Self::default()
    }

    /// `&Peer{Namespace: ns}`
    pub fn ns(ns: &'static str) -> Self {
        Self {
            namespace: Some(ns),
            pod: None,
        }
    }

    /// `&Peer{Namespace: ns, Pod: pod}`
    pub fn pod(ns: &'static str, pod: &'static str) -> Self {
        Self {
            namespace: Some(ns),
            pod: Some(pod),
        }
    }

    fn matches(&self, i: usize) -> bool {
        self.namespace.is_none_or(|n| n == ns_of(i)) && self.pod.is_none_or(|p| p == name_of(i))
    }
}

/// A 9x9 table: `[from][to]`.
pub type Table = [[bool; N]; N];

/// Upstream `Reachability`'s expected side.
#[derive(Clone, Debug)]
pub struct Reachability {
    pub expected: Table,
}

impl Reachability {
    /// `NewReachability(k8s.AllPodStrings(), default)`
    pub fn new(default: bool) -> Self {
        Self {
            expected: [[default; N]; N],
        }
    }

    /// `Expect(from, to, connected)`
    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.expected[index(from)][index(to)] = connected;
        self
    }

    /// `ExpectPeer(from, to, connected)`
    pub fn expect_peer(&mut self, from: Peer, to: Peer, connected: bool) -> &mut Self {
        for f in (0..N).filter(|&f| from.matches(f)) {
            for t in (0..N).filter(|&t| to.matches(t)) {
                self.expected[f][t] = connected;
            }
        }
        self
    }

    /// `ExpectAllIngress(pod, connected)`: every pod to `pod`.
    pub fn expect_all_ingress(&mut self, pod: &str, connected: bool) -> &mut Self {
        let t = index(pod);
        for row in &mut self.expected {
            row[t] = connected;
        }
        self
    }

    /// `ExpectAllEgress(pod, connected)`: `pod` to every pod.
    pub fn expect_all_egress(&mut self, pod: &str, connected: bool) -> &mut Self {
        self.expected[index(pod)] = [connected; N];
        self
    }
}

/// Upstream's `TruthTable.PrettyPrint`: `.` connected, `X` blocked; loopback cells are
/// ignored as upstream does (`ignoreLoopback`) and shown as `-`.
pub fn pretty(table: &Table) -> String {
    render(|f, t| if table[f][t] { "." } else { "X" })
}

/// The comparison table: `.` where `a` and `b` agree, `X` where they differ.
pub fn comparison(a: &Table, b: &Table) -> String {
    render(|f, t| if a[f][t] == b[f][t] { "." } else { "X" })
}

fn render(cell: impl Fn(usize, usize) -> &'static str) -> String {
    let mut s = String::from("-");
    for t in 0..N {
        write!(s, "\t{}", pod_string(t)).expect("string");
    }
    s.push('\n');
    for f in 0..N {
        s.push_str(&pod_string(f));
        for t in 0..N {
            let c = if f == t { "-" } else { cell(f, t) };
            write!(s, "\t{c}").expect("string");
        }
        s.push('\n');
    }
    s
}

/// The cells (from, to) where `a` and `b` differ, loopback excluded.
pub fn differences(a: &Table, b: &Table) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for f in 0..N {
        for t in 0..N {
            if f != t && a[f][t] != b[f][t] {
                out.push((f, t));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_helpers_follow_upstream() {
        let mut r = Reachability::new(true);
        r.expect_peer(Peer::any(), Peer::ns("x"), false);
        assert!(!r.expected[index("y/c")][index("x/b")]);
        assert!(r.expected[index("x/b")][index("y/c")]);
        r.expect_all_ingress("x/b", true);
        assert!(r.expected[index("z/a")][index("x/b")]);
        r.expect_all_egress("z/a", false);
        assert!(!r.expected[index("z/a")][index("z/b")]);
        r.expect(&pod_string(0), "x/c", true);
        assert!(r.expected[0][2]);
        assert_eq!(ip(index("y/b")), Ipv4Addr::new(10, 0, 2, 11));
    }

    #[test]
    fn model_yaml_parses() {
        for family in Family::ALL {
            let yaml = ClusterState::default().yaml(family);
            let docs: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(docs.len(), 12);
        }
    }
}
