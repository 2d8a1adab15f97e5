//! The deployment manifests (`deploy/kubernetes`, `deploy/kind`), checked without a cluster:
//! every file parses into k8s-openapi types with no field k8s-openapi does not know (a typo
//! would be silently dropped by the API server), and the fields that matter are asserted:
//! RBAC verbs, capabilities, mounts, probes, the agent's command line.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

const NAMESPACE: &str = "cns-system";
const SERVICE_ACCOUNT: &str = "cns-agent";
const CONFIGMAP: &str = "cns-config";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Parses `doc` as `K` and checks that serializing it back gives the same document: no field
/// was unknown to k8s-openapi (misspelled, wrong level) and every value has the right type.
fn typed<K: DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> K {
    let obj: K = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&obj).expect("serialize");
    assert_eq!(
        doc, &back,
        "{what}: fields unknown to k8s-openapi or of the wrong type"
    );
    obj
}

/// Every object of `deploy/kubernetes`, by kind/name, from the files the kustomization lists.
struct Manifests {
    objects: BTreeMap<(String, String), Value>,
}

impl Manifests {
    fn load() -> Self {
        let dir = deploy_dir().join("kubernetes");
        let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
        assert_eq!(kustomization["kind"], "Kustomization");
        assert_eq!(kustomization["namespace"], NAMESPACE);
        let resources: BTreeSet<String> = kustomization["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r.as_str().expect("resource path").to_owned())
            .collect();
        // Every manifest file is listed (none forgotten), and every listed file exists.
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("deploy/kubernetes")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
            .collect();
        assert_eq!(resources, on_disk);
        let mut objects = BTreeMap::new();
        for file in &resources {
            for doc in documents(&dir.join(file)) {
                let kind = doc["kind"].as_str().expect("kind").to_owned();
                let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
                let prev = objects.insert((kind.clone(), name.clone()), doc);
                assert!(prev.is_none(), "{kind} {name} defined twice");
            }
        }
        Self { objects }
    }

    fn get<K: DeserializeOwned + serde::Serialize>(&self, kind: &str, name: &str) -> K {
        let doc = self
            .objects
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"));
        typed(doc, &format!("{kind} {name}"))
    }
}

fn rules(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    out.insert((
                        g.clone(),
                        res.clone(),
                        verb.clone(),
                        r.resource_names.clone().unwrap_or_default(),
                    ));
                }
            }
        }
    }
    out
}

fn rule(
    group: &str,
    res: &str,
    verb: &str,
    names: &[&str],
) -> (String, String, String, Vec<String>) {
    (
        group.into(),
        res.into(),
        verb.into(),
        names.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn every_object_is_known_and_namespaced_in_cns_system() {
    let m = Manifests::load();
    let kinds: BTreeSet<&str> = m.objects.keys().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "DaemonSet",
            "Namespace",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
        .into()
    );
    let ns: Namespace = m.get("Namespace", NAMESPACE);
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let _: ServiceAccount = m.get("ServiceAccount", SERVICE_ACCOUNT);
    for ((kind, name), doc) in &m.objects {
        let cluster_scoped = matches!(
            kind.as_str(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
        );
        let ns = doc["metadata"]["namespace"].as_str();
        if cluster_scoped {
            assert_eq!(ns, None, "{kind} {name}");
        } else {
            assert_eq!(ns, Some(NAMESPACE), "{kind} {name}");
        }
    }
}

#[test]
fn rbac_is_read_only_and_exactly_what_the_watchers_need() {
    let m = Manifests::load();
    let cr: ClusterRole = m.get("ClusterRole", "cns-agent");
    let want: BTreeSet<_> = [
        ("", "namespaces"),
        ("", "pods"),
        ("", "nodes"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
    ]
    .into_iter()
    .flat_map(|(g, r)| ["get", "list", "watch"].map(|v| rule(g, r, v, &[])))
    .collect();
    assert_eq!(rules(cr.rules.as_deref().unwrap_or_default()), want);

    // Its own ConfigMap only, by name (list+watch with the metadata.name field selector).
    let role: Role = m.get("Role", "cns-agent-config");
    let want: BTreeSet<_> = ["get", "list", "watch"]
        .map(|v| rule("", "configmaps", v, &[CONFIGMAP]))
        .into();
    assert_eq!(rules(role.rules.as_deref().unwrap_or_default()), want);

    let crb: ClusterRoleBinding = m.get("ClusterRoleBinding", "cns-agent");
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", "cns-agent")
    );
    let rb: RoleBinding = m.get("RoleBinding", "cns-agent-config");
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "cns-agent-config")
    );
    for subjects in [crb.subjects, rb.subjects] {
        let subjects = subjects.expect("subjects");
        assert_eq!(subjects.len(), 1);
        let s = &subjects[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", SERVICE_ACCOUNT, Some(NAMESPACE))
        );
    }
}

#[test]
fn the_cluster_network_policy_crd_serves_what_the_agent_watches() {
    use cns_agent::policy::model::ClusterNetworkPolicy;
    use kube::Resource;

    let m = Manifests::load();
    let name = "clusternetworkpolicies.policy.networking.k8s.io";
    // Vendored unchanged, so parsed without the round trip (k8s-openapi writes the schema's
    // integer bounds as floats, and adds an empty status).
    let doc = &m.objects[&("CustomResourceDefinition".to_owned(), name.to_owned())];
    let crd: CustomResourceDefinition =
        serde_json::from_value(doc.clone()).expect("the CRD parses");
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations["policy.networking.k8s.io/bundle-version"],
        "v0.2.0"
    );
    assert_eq!(annotations["policy.networking.k8s.io/channel"], "standard");
    let spec = &crd.spec;
    assert_eq!(spec.group, ClusterNetworkPolicy::group(&()));
    assert_eq!(spec.names.kind, ClusterNetworkPolicy::kind(&()));
    assert_eq!(spec.names.plural, ClusterNetworkPolicy::plural(&()));
    assert_eq!(spec.scope, "Cluster");
    let version = spec
        .versions
        .iter()
        .find(|v| v.name == ClusterNetworkPolicy::version(&()))
        .expect("the version the agent watches");
    assert!(version.served && version.storage);
    // Its own header says where it came from.
    let text =
        std::fs::read_to_string(deploy_dir().join("kubernetes/crd-clusternetworkpolicies.yaml"))
            .expect("the CRD file");
    assert!(
        text.starts_with("# ClusterNetworkPolicy")
            && text.contains("a17adecd0316b8ff1c3f83939ec0441d68cd6cce"),
        "the vendored CRD names its source"
    );
}

#[test]
fn configmap_starts_in_audit_mode_with_cilium_names() {
    let m = Manifests::load();
    let cm: ConfigMap = m.get("ConfigMap", CONFIGMAP);
    let data = cm.data.as_ref().expect("data");
    assert_eq!(data["policyAuditMode"], "true");
    assert!(data.contains_key("monitor.eventTypes"));
    assert!(data.contains_key("hubble.metrics.enabled"));
    // What the agent reads from it.
    assert_eq!(
        cns_agent::k8s::snapshot::audit_mode_of(&cm),
        Ok(Some(cns_agent::policy::AuditMode::Audit))
    );
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn probe_command(c: &Container, which: &str) -> Vec<String> {
    let probe = match which {
        "startup" => c.startup_probe.as_ref(),
        "liveness" => c.liveness_probe.as_ref(),
        _ => c.readiness_probe.as_ref(),
    };
    probe
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap_or_else(|| panic!("{which} probe: exec command"))
}

#[test]
fn daemonset_runs_the_agent_on_every_node_with_capabilities_not_privileged() {
    let m = Manifests::load();
    let ds: DaemonSet = m.get("DaemonSet", "cns-agent");
    let spec = ds.spec.as_ref().expect("spec");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    assert_eq!(spec.selector.match_labels, labels);
    assert_eq!(labels.expect("labels")["k8s-app"], "cns-agent");
    assert_eq!(
        spec.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("RollingUpdate")
    );
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // Tolerates every taint.
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none())
    );

    let volumes: BTreeMap<&str, &str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            let host = v.host_path.as_ref().expect("hostPath volume");
            (v.name.as_str(), host.path.as_str())
        })
        .collect();
    assert_eq!(
        volumes,
        [("bpffs", "/sys/fs/bpf"), ("run-cns", "/run/cns")].into()
    );

    // The init container mounts bpffs on the host (privileged: Bidirectional needs it).
    let init = container(
        pod.init_containers.as_deref().unwrap_or_default(),
        "mount-bpffs",
    );
    assert_eq!(
        init.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let mount = &init.volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!(
        (
            mount.name.as_str(),
            mount.mount_path.as_str(),
            mount.mount_propagation.as_deref()
        ),
        ("bpffs", "/sys/fs/bpf", Some("Bidirectional"))
    );
    assert!(
        init.command
            .as_ref()
            .expect("command")
            .join(" ")
            .contains("mount -t bpf")
    );

    let agent = container(&pod.containers, "cns-agent");
    let cmd = agent.command.as_ref().expect("command");
    assert_eq!(cmd[..2], ["cns-agent", "run"]);
    assert!(
        cmd.contains(&"--node-name=$(NODE_NAME)".to_owned()),
        "{cmd:?}"
    );
    assert!(
        cmd.contains(&format!("--configmap-name={CONFIGMAP}")),
        "{cmd:?}"
    );
    // Kubernetes mode: no manifests directory.
    assert!(!cmd.iter().any(|a| a.starts_with("--manifests")), "{cmd:?}");
    let env: BTreeMap<&str, Option<&str>> = agent
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            (e.name.as_str(), field)
        })
        .collect();
    assert_eq!(env["NODE_NAME"], Some("spec.nodeName"));
    assert_eq!(env["POD_NAMESPACE"], Some("metadata.namespace"));
    // --map-sizes comes from the ConfigMap's mapSizes, whose value the agent accepts.
    let map_sizes = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "CNS_MAP_SIZES")
        .and_then(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref())
        .expect("CNS_MAP_SIZES from the ConfigMap");
    assert_eq!(
        (map_sizes.name.as_str(), map_sizes.key.as_str()),
        (CONFIGMAP, "mapSizes")
    );
    let configmap: ConfigMap = m.get("ConfigMap", CONFIGMAP);
    let value = &configmap.data.as_ref().expect("data")["mapSizes"];
    value
        .parse::<cns_agent::map_sizes::MapSizes>()
        .unwrap_or_else(|e| panic!("mapSizes {value:?}: {e}"));

    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        added,
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"].into()
    );
    assert_eq!(sc.read_only_root_filesystem, Some(true));

    let mounts: BTreeMap<&str, (&str, Option<&str>)> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|v| {
            (
                v.name.as_str(),
                (v.mount_path.as_str(), v.mount_propagation.as_deref()),
            )
        })
        .collect();
    assert_eq!(mounts["bpffs"], ("/sys/fs/bpf", Some("HostToContainer")));
    assert_eq!(mounts["run-cns"].0, "/run/cns");
    assert!(cmd.contains(&"--socket=/run/cns/agent.sock".to_owned()));

    for which in ["startup", "liveness", "readiness"] {
        let probe = probe_command(agent, which);
        assert_eq!(probe[..2], ["cns-agent", "status"], "{which}");
        assert!(
            probe.contains(&"--socket=/run/cns/agent.sock".to_owned()),
            "{which}"
        );
    }
    let requests = agent
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));

    // The monitor: no capability, the shared socket read-only.
    let monitor = container(&pod.containers, "cns-monitor");
    assert_eq!(
        monitor.command.as_ref().expect("command")[..2],
        ["cns-agent", "monitor"]
    );
    let msc = monitor.security_context.as_ref().expect("securityContext");
    assert_eq!(msc.privileged, Some(false));
    assert!(
        msc.capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_none()
    );
    let mm = &monitor.volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!((mm.name.as_str(), mm.read_only), ("run-cns", Some(true)));
}

#[test]
fn privileged_fallback_patch_targets_the_agent_container() {
    let path = deploy_dir().join("kubernetes/patches/privileged.yaml");
    let doc = &documents(&path)[0];
    // A strategic-merge patch: partial, but made only of known fields.
    let ds: DaemonSet = serde_json::from_value(doc.clone()).expect("patch parses");
    assert_eq!(ds.metadata.name.as_deref(), Some("cns-agent"));
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    let agent = container(&pod.containers, "cns-agent");
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
}

#[test]
fn kind_cluster_has_no_policy_enforcing_cni_and_several_workers() {
    let docs = documents(&deploy_dir().join("kind/cluster.yaml"));
    let cluster = &docs[0];
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(cluster["apiVersion"], "kind.x-k8s.io/v1alpha4");
    // kindnet enforces NetworkPolicy itself since kind v0.24: it would hide the agent.
    assert_eq!(cluster["networking"]["disableDefaultCNI"], true);
    assert!(cluster["networking"]["podSubnet"].is_string());
    let roles: Vec<&str> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "control-plane").count(), 1);
    assert!(roles.iter().filter(|r| **r == "worker").count() >= 2);
}
