//! Upstream's cluster (`base/manifests.yaml`) on the virtual node, and the state of the
//! cluster during a test: the objects written to the agent's manifests directory.
//!
//! The fixture is read from upstream's file, not restated: its five Namespaces as they are,
//! and for each StatefulSet (`replicas: 2`) the pods `<name>-0` and `<name>-1` the
//! controller would make: the template's labels (plus the controller's
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`), the template's
//! spec (containers, named ports, `hostNetwork`) with a `nodeName`, and a `Running` status
//! with addresses from this plan:
//!
//! | pods | node | addresses (IPv4; IPv6 is `netns::v6_of`) |
//! |---|---|---|
//! | the `<house>` StatefulSet's `-0`, `-1` (houses in file order: gryffindor, slytherin, hufflepuff, ravenclaw) | node-1 | 10.0.\<1+house\>.10, .11 |
//! | centaur-0 (`hostNetwork`) | node-1: the agent's node netns | its uplink address 10.255.0.1 (fd00:ff::1) |
//! | centaur-1 (`hostNetwork`) | node-2: the virtual node's "outside" netns | 10.255.0.2 (fd00:ff::2) |
//!
//! What each pod serves is read from its containers' commands as agnhost would run them
//! (`serve-hostname --tcp|--udp --port N`, `porter` with `SERVE_SCTP_PORT_N`, `netexec
//! --http-port H --udp-port U`): TCP 80 and 8080, UDP 53 and 5353, SCTP 9003 and 9005 in
//! every pod; TCP 34345, 34346, 34348, 34350, UDP 34347, 34349 and SCTP 34351, 34352 on both
//! nodes. The Node objects (`kubernetes.io/os: linux`, as a kubelet labels them) carry the
//! nodes' addresses as `InternalIP`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use cns_tests::{
    Family,
    agent::NODE_NAME,
    netns::{NODE_UPLINK_IP, NODE_UPLINK_IP6, OUTSIDE_IP, OUTSIDE_IP6, v6_of},
};
use serde_json::{Value, json};

use super::{
    manifests::{BASE, expand},
    suite::{Edit, Manifest, Proto},
};

pub const NS_PREFIX: &str = "network-policy-conformance-";
/// The second node: the virtual node's "outside" netns, a host on the node's uplink.
pub const NODE_2: &str = "node-2";

/// `<house>` to its namespace.
pub fn namespace_of(house: &str) -> String {
    format!("{NS_PREFIX}{house}")
}

/// Which node a pod runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The agent's node (`NODE_NAME`).
    One,
    /// [`NODE_2`].
    Two,
}

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::One => NODE_NAME,
            Node::Two => NODE_2,
        }
    }

    /// The node's addresses in `family` (IPv4 first).
    pub fn addrs(self, family: Family) -> Vec<IpAddr> {
        let (v4, v6) = match self {
            Node::One => (NODE_UPLINK_IP, NODE_UPLINK_IP6),
            Node::Two => (OUTSIDE_IP, OUTSIDE_IP6),
        };
        let mut out = Vec::new();
        if family.has_v4() {
            out.push(v4.into());
        }
        if family.has_v6() {
            out.push(v6.into());
        }
        out
    }
}

/// One pod of the fixture.
#[derive(Clone, Debug)]
pub struct PodModel {
    pub house: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub host_network: bool,
    pub node: Node,
    /// The IPv4 address a pod netns gets (`v6_of` gives its IPv6 one); none for a
    /// host-network pod, which has its node's.
    pub ip: Option<Ipv4Addr>,
    /// The StatefulSet template's `spec`.
    pub spec: Value,
    pub servers: Vec<(Proto, u16)>,
}

impl PodModel {
    /// `<house>/<name>`, as the steps name pods.
    pub fn key(&self) -> String {
        format!("{}/{}", self.house, self.name)
    }

    /// The pod's addresses in `family` (IPv4 first), as `status.podIPs` lists them.
    pub fn addrs(&self, family: Family) -> Vec<IpAddr> {
        match self.ip {
            None => self.node.addrs(family),
            Some(v4) => {
                let mut out = Vec::new();
                if family.has_v4() {
                    out.push(v4.into());
                }
                if family.has_v6() {
                    out.push(v6_of(v4).into());
                }
                out
            }
        }
    }

    /// The Pod object, as the API server would hold it once running.
    pub fn manifest(&self, family: Family) -> Value {
        let mut spec = self.spec.clone();
        spec["nodeName"] = json!(self.node.name());
        let ips: Vec<String> = self.addrs(family).iter().map(ToString::to_string).collect();
        let host_ip = self.node.addrs(family)[0].to_string();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": namespace_of(&self.house),
                "labels": self.labels,
            },
            "spec": spec,
            "status": {
                "phase": "Running",
                "hostIP": host_ip,
                "podIP": ips[0],
                "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            },
        })
    }
}

/// What agnhost serves for one container.
fn servers_of(container: &Value) -> Vec<(Proto, u16)> {
    let command: Vec<&str> = container["command"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // `["/bin/bash", "-c", "/agnhost ..."]`: the words of the script.
    let script: Vec<&str> = command
        .last()
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let arg = |flag: &str| -> Option<u16> {
        let at = script.iter().position(|w| *w == flag)?;
        script.get(at + 1)?.parse().ok()
    };
    let mut out = Vec::new();
    match script.get(1).copied() {
        Some("serve-hostname") => {
            let proto = if script.contains(&"--udp") {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            out.push((proto, arg("--port").expect("serve-hostname --port")));
        }
        Some("porter") => {
            for env in container["env"].as_array().into_iter().flatten() {
                if let Some(port) = env["name"]
                    .as_str()
                    .and_then(|n| n.strip_prefix("SERVE_SCTP_PORT_"))
                {
                    out.push((Proto::Sctp, port.parse().expect("SCTP port")));
                }
            }
        }
        Some("netexec") => {
            out.push((Proto::Tcp, arg("--http-port").expect("netexec --http-port")));
            out.push((Proto::Udp, arg("--udp-port").expect("netexec --udp-port")));
        }
        Some(other) => panic!("unknown agnhost command {other:?} in {container}"),
        None => {} // the client container: `pause`-like, serves nothing
    }
    out
}

/// Upstream's base manifests as the cluster they make.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// The Namespace objects, in file order.
    pub namespaces: Vec<Value>,
    pub pods: Vec<PodModel>,
}

impl Fixture {
    pub fn upstream() -> Self {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&expand(BASE.text))
            .unwrap_or_else(|e| panic!("{}: {e}", BASE.path));
        let mut namespaces = Vec::new();
        let mut pods = Vec::new();
        let mut house_index = 0u8;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            match doc["kind"].as_str() {
                Some("Namespace") => namespaces.push(doc),
                Some("StatefulSet") => {
                    let namespace = doc["metadata"]["namespace"].as_str().expect("namespace");
                    let house = namespace
                        .strip_prefix(NS_PREFIX)
                        .expect("a conformance namespace")
                        .to_owned();
                    let sts = doc["metadata"]["name"].as_str().expect("name");
                    let template = &doc["spec"]["template"];
                    let spec = template["spec"].clone();
                    let host_network = spec["hostNetwork"].as_bool().unwrap_or(false);
                    let servers: Vec<(Proto, u16)> = spec["containers"]
                        .as_array()
                        .expect("containers")
                        .iter()
                        .flat_map(servers_of)
                        .collect();
                    let replicas = doc["spec"]["replicas"].as_u64().expect("replicas");
                    if !host_network {
                        house_index += 1;
                    }
                    for r in 0..replicas {
                        let r8 = u8::try_from(r).expect("few replicas");
                        let name = format!("{sts}-{r}");
                        let mut labels: BTreeMap<String, String> =
                            serde_json::from_value(template["metadata"]["labels"].clone())
                                .expect("template labels");
                        labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                        labels.insert("apps.kubernetes.io/pod-index".into(), r.to_string());
                        let (node, ip) = if host_network {
                            (if r == 0 { Node::One } else { Node::Two }, None)
                        } else {
                            (Node::One, Some(Ipv4Addr::new(10, 0, house_index, 10 + r8)))
                        };
                        pods.push(PodModel {
                            house: house.clone(),
                            name,
                            labels,
                            host_network,
                            node,
                            ip,
                            spec: spec.clone(),
                            servers: servers.clone(),
                        });
                    }
                }
                other => panic!("{}: unexpected kind {other:?}", BASE.path),
            }
        }
        Self { namespaces, pods }
    }

    pub fn pod(&self, key: &str) -> &PodModel {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pod {key} in the fixture"))
    }

    /// The Node objects.
    pub fn nodes(family: Family) -> Vec<Value> {
        [Node::One, Node::Two]
            .iter()
            .map(|node| {
                let name = node.name();
                let mut addresses: Vec<Value> = node
                    .addrs(family)
                    .iter()
                    .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
                    .collect();
                addresses.push(json!({"type": "Hostname", "address": name}));
                json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": {
                            "kubernetes.io/arch": "amd64",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                        },
                    },
                    "status": {"addresses": addresses},
                })
            })
            .collect()
    }
}

/// One object of a test's manifests.
#[derive(Clone, Debug)]
pub struct Object {
    pub value: Value,
    /// Upstream's text of the document, while the object is as upstream wrote it.
    pub text: Option<String>,
}

impl Object {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    }

    /// The file it is written to in the agent's manifests directory.
    pub fn file_name(&self) -> String {
        match self.kind() {
            "ClusterNetworkPolicy" => format!("cnp-{}.yaml", self.name()),
            "NetworkPolicy" => format!("np-{}-{}.yaml", self.namespace(), self.name()),
            other => panic!("unexpected kind {other:?} in a test's manifests"),
        }
    }

    /// The YAML written for it: upstream's text when unchanged.
    pub fn yaml(&self) -> String {
        match &self.text {
            Some(text) => text.clone(),
            None => serde_saphyr::to_string(&self.value).expect("serialize"),
        }
    }
}

/// Splits a multi-document YAML text into its documents' texts (upstream's files separate
/// documents with lines that are exactly `---`).
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("one");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
    });
    docs
}

/// The cluster as a test sees it: the namespaces (whose labels tests change) and the
/// objects of the test's manifests.
#[derive(Clone, Debug)]
pub struct ClusterState {
    pub namespaces: Vec<Value>,
    pub objects: Vec<Object>,
}

impl ClusterState {
    /// The fixture's namespaces and `manifests`' objects, as upstream applies them.
    pub fn new(fixture: &Fixture, manifests: &[Manifest]) -> Self {
        let mut objects = Vec::new();
        for m in manifests {
            for text in documents(&expand(m.text)) {
                let value: Value = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{text}", m.path));
                objects.push(Object {
                    value,
                    text: Some(text),
                });
            }
        }
        Self {
            namespaces: fixture.namespaces.clone(),
            objects,
        }
    }

    fn cluster_policy(&mut self, name: &str) -> &mut Object {
        self.objects
            .iter_mut()
            .find(|o| o.kind() == "ClusterNetworkPolicy" && o.name() == name)
            .unwrap_or_else(|| panic!("no ClusterNetworkPolicy {name}"))
    }

    /// `spec.<dir>` of ClusterNetworkPolicy `name`, which the edit changes.
    fn rules(&mut self, name: &str, dir: &str) -> &mut Vec<Value> {
        let obj = self.cluster_policy(name);
        obj.text = None;
        obj.value["spec"][dir]
            .as_array_mut()
            .unwrap_or_else(|| panic!("ClusterNetworkPolicy {name} has no {dir} rules"))
    }

    /// Makes `edit` as upstream does; `family` gives the addresses of a networks rule.
    pub fn apply(&mut self, edit: &Edit, fixture: &Fixture, family: Family) {
        match *edit {
            Edit::Swap { policy, dir, a, b } => self.rules(policy, dir.field()).swap(a, b),
            Edit::SetAction {
                policy,
                dir,
                index,
                action,
            } => self.rules(policy, dir.field())[index]["action"] = json!(action.name()),
            Edit::SetPriority { policy, priority } => {
                let obj = self.cluster_policy(policy);
                obj.text = None;
                obj.value["spec"]["priority"] = json!(priority);
            }
            Edit::NamedPort {
                policy,
                dir,
                index,
                port,
            } => {
                self.rules(policy, dir.field())[index]["protocols"] =
                    json!([{"destinationNamedPort": port}]);
            }
            Edit::PrependNetworksRule {
                policy,
                name,
                action,
                pods,
            } => {
                // Upstream: each pod's `Status.PodIP` + "/32" (IPv4) or "/128" (IPv6);
                // on a dual-stack node both of its addresses (see the table at the top).
                let networks: Vec<String> = pods
                    .iter()
                    .flat_map(|p| fixture.pod(p).addrs(family))
                    .map(|a| match a {
                        IpAddr::V4(_) => format!("{a}/32"),
                        IpAddr::V6(_) => format!("{a}/128"),
                    })
                    .collect();
                self.rules(policy, "egress").insert(
                    0,
                    json!({"name": name, "action": action.name(), "to": [{"networks": networks}]}),
                );
            }
            Edit::DeleteNetworkPolicy { house, name } => {
                let namespace = namespace_of(house);
                let before = self.objects.len();
                self.objects.retain(|o| {
                    !(o.kind() == "NetworkPolicy" && o.namespace() == namespace && o.name() == name)
                });
                assert_eq!(
                    self.objects.len() + 1,
                    before,
                    "no NetworkPolicy {namespace}/{name}"
                );
            }
            Edit::SetNamespaceLabels { house, labels } => {
                let namespace = namespace_of(house);
                let ns = self
                    .namespaces
                    .iter_mut()
                    .find(|n| n["metadata"]["name"] == json!(namespace))
                    .unwrap_or_else(|| panic!("no namespace {namespace}"));
                let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
                ns["metadata"]["labels"] = json!(labels);
            }
        }
    }

    /// The files of the agent's manifests directory for this state: name and YAML.
    pub fn files(&self, fixture: &Fixture, family: Family) -> BTreeMap<String, String> {
        let stream = |docs: &[Value]| -> String {
            docs.iter()
                .map(|d| serde_saphyr::to_string(d).expect("serialize"))
                .collect::<Vec<_>>()
                .join("---\n")
        };
        let pods: Vec<Value> = fixture.pods.iter().map(|p| p.manifest(family)).collect();
        let mut files = BTreeMap::from([
            (
                "fixture-namespaces.yaml".to_owned(),
                stream(&self.namespaces),
            ),
            (
                "fixture-nodes.yaml".to_owned(),
                stream(&Fixture::nodes(family)),
            ),
            ("fixture-pods.yaml".to_owned(), stream(&pods)),
        ]);
        for o in &self.objects {
            let previous = files.insert(o.file_name(), o.yaml());
            assert!(previous.is_none(), "two objects in {}", o.file_name());
        }
        files
    }
}
