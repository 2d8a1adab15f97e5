//! Tests of what the compiler produces: which pods count, endpoint flags, the exact map
//! contents of a simple case, stable numbering and determinism.

use std::{net::IpAddr, sync::Arc};

use cns_common::{IDENTITY_CIDR_BASE, IDENTITY_FIRST_POD, IDENTITY_HOST, NS_FIRST, NS_HOST};
use k8s_openapi::api::core::v1::Pod;

use super::{
    AuditMode,
    fixtures::{NODE_IP, NODE_IP6, namespace, node, pod, policy, snapshot},
    incremental::compile,
    model::{
        Allocations, CidrKey, Direction, ObjectRef, PodInfo, PortMatch, PortRange, Protocol,
        RuleKey, RuleValue,
    },
    tests::cluster,
};

#[test]
fn which_pods_count() {
    let mut host_net = pod("prod", "host", "app=h", "10.0.0.5", &[]);
    host_net.spec.as_mut().unwrap().host_network = Some(true);
    let mut done = pod("prod", "done", "app=d", "10.0.0.6", &[]);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut pending = pod("prod", "pending", "app=p", "10.0.0.7", &[]);
    pending.status.as_mut().unwrap().pod_ip = None;
    let mut elsewhere = pod("prod", "elsewhere", "app=e", "10.0.0.8", &[]);
    elsewhere.spec.as_mut().unwrap().node_name = Some("node-2".into());
    let mut dual: Pod = pod("prod", "dual", "app=v6", "fd00::1", &[]);
    dual.status.as_mut().unwrap().pod_ips = Some(vec![
        k8s_openapi::api::core::v1::PodIP {
            ip: "fd00::1".into(),
        },
        k8s_openapi::api::core::v1::PodIP {
            ip: "10.0.0.9".into(),
        },
    ]);
    let snap = snapshot(
        vec![namespace("prod", "")],
        vec![host_net, done, pending, elsewhere, dual],
        vec![],
    );
    let desired = compile(&snap, &node(), &Allocations::default());
    let ips: Vec<IpAddr> = desired.ipcache.keys().copied().collect();
    let want: Vec<IpAddr> = ["10.0.0.8", "10.0.0.9", NODE_IP, "fd00::1", NODE_IP6]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ips, want);
    assert_eq!(desired.ipcache[&want[2]].identity, IDENTITY_HOST);
    assert_eq!(desired.ipcache[&want[2]].ns_id, NS_HOST);
    let eps: Vec<&str> = desired.endpoints.keys().map(|r| &*r.name).collect();
    assert_eq!(eps, ["dual"]);
    assert_eq!(desired.allocations.identities.len(), 2);
}

#[test]
fn audit_override_from_namespace_annotation() {
    let mut prod = namespace("prod", "");
    let mut dev = namespace("dev", "");
    let mut other = namespace("other", "");
    for (ns, v) in [
        (&mut prod, "true"),
        (&mut dev, "false"),
        (&mut other, "yes"),
    ] {
        ns.metadata.annotations = Some([("cns.io/policy-audit-mode".into(), v.into())].into());
    }
    let snap = snapshot(
        vec![prod, dev, other],
        vec![
            pod("prod", "a", "", "10.0.0.1", &[]),
            pod("dev", "a", "", "10.0.0.2", &[]),
            pod("other", "a", "", "10.0.0.3", &[]),
        ],
        vec![],
    );
    let desired = compile(&snap, &node(), &Allocations::default());
    let got: Vec<Option<AuditMode>> = desired
        .endpoints
        .values()
        .map(|e| e.audit_override)
        .collect();
    // By namespace: dev, other, prod; an unreadable value ("yes") is enforced as blocking.
    assert_eq!(
        got,
        [
            Some(AuditMode::Blocking),
            Some(AuditMode::Blocking),
            Some(AuditMode::Audit)
        ]
    );
}

#[test]
fn desired_shape_of_a_simple_policy() {
    let np = policy(
        "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}, {ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.0/28]}}]
    ports: [{port: 5432}]
",
    );
    let snap = cluster(vec![np]);
    let d = compile(&snap, &node(), &Allocations::default());
    let db = &d.endpoints[&ObjectRef::new("prod", "db")];
    assert!(db.ingress_isolated && !db.egress_isolated);
    assert_eq!(db.ns_id, d.allocations.namespaces["prod"]);
    let web_identity = d.ipcache[&"10.0.0.1".parse().unwrap()].identity;
    assert!(web_identity >= IDENTITY_FIRST_POD);
    let pm = PortMatch {
        proto: Some(Protocol::Tcp),
        ports: Some(PortRange {
            start: 5432,
            end: 5432,
        }),
    };
    let rule = |identity| RuleKey {
        ep_id: db.ep_id,
        dir: Direction::Ingress,
        identity,
        ports: pm,
    };
    let cidr = |net: &str| CidrKey {
        ep_id: db.ep_id,
        dir: Direction::Ingress,
        net: net.parse().unwrap(),
    };
    let policy_id = d.allocations.policies[&ObjectRef::new("prod", "a")];
    assert_eq!(
        d.rules,
        [
            (rule(web_identity), RuleValue::allow(policy_id)),
            (rule(IDENTITY_CIDR_BASE), RuleValue::allow(policy_id))
        ]
        .into()
    );
    assert_eq!(
        d.cidrs,
        [
            (cidr("192.0.2.0/24"), IDENTITY_CIDR_BASE),
            (cidr("192.0.2.0/28"), IDENTITY_CIDR_BASE + 1),
        ]
        .into()
    );
}

#[test]
fn allocations_are_stable_and_compact() {
    let node = node();
    let mut snap = cluster(vec![policy(
        "metadata: {name: z, namespace: prod}\nspec: {}",
    )]);
    let first = compile(&snap, &node, &Allocations::default());
    let a = &first.allocations;
    assert_eq!(a.namespaces.values().min(), Some(&NS_FIRST));
    assert_eq!(a.identities.values().min(), Some(&IDENTITY_FIRST_POD));
    assert_eq!(a.endpoints.values().min(), Some(&1));
    assert_eq!(a.policies.values().copied().collect::<Vec<_>>(), [1]);

    // Add a pod (new identity, new namespace) that sorts first, and a policy.
    snap.namespaces
        .insert("aaa".into(), namespace("aaa", "").into());
    let p = pod("aaa", "a", "app=aaa", "10.0.9.9", &[]);
    snap.pods
        .insert(ObjectRef::new("aaa", "a"), Arc::new(PodInfo::from(&p)));
    let np = policy("metadata: {name: a, namespace: aaa}\nspec: {}");
    snap.policies.insert(ObjectRef::new("aaa", "a"), np.into());
    let second = compile(&snap, &node, a);
    let b = &second.allocations;
    for (k, v) in &a.namespaces {
        assert_eq!(b.namespaces[k], *v, "namespace {k}");
    }
    for (k, v) in &a.identities {
        assert_eq!(b.identities[k], *v, "identity {k:?}");
    }
    for (k, v) in &a.endpoints {
        assert_eq!(b.endpoints[k], *v, "endpoint {k}");
    }
    assert_eq!(b.policies[&ObjectRef::new("prod", "z")], 1);
    assert_eq!(b.policies[&ObjectRef::new("aaa", "a")], 2);
    assert_eq!(b.endpoints[&ObjectRef::new("aaa", "a")], 5);

    // Remove a pod: its numbers go, the hole is reused by the next newcomer.
    snap.pods.remove(&ObjectRef::new("prod", "db"));
    let third = compile(&snap, &node, b);
    let freed = b.endpoints[&ObjectRef::new("prod", "db")];
    assert!(
        !third
            .allocations
            .endpoints
            .contains_key(&ObjectRef::new("prod", "db"))
    );
    snap.pods.insert(
        ObjectRef::new("prod", "db2"),
        Arc::new(PodInfo::from(&pod(
            "prod",
            "db2",
            "app=db",
            "10.0.0.3",
            &[],
        ))),
    );
    let fourth = compile(&snap, &node, &third.allocations);
    assert_eq!(
        fourth.allocations.endpoints[&ObjectRef::new("prod", "db2")],
        freed
    );
}

#[test]
fn compile_is_deterministic() {
    let policies = vec![
        policy(
            "
metadata: {name: a, namespace: prod}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.1.0/24]}}, {namespaceSelector: {}}]}]
  egress: [{to: [{podSelector: {}}], ports: [{port: http}]}]
",
        ),
        policy("metadata: {name: b, namespace: dev}\nspec: {podSelector: {}, ingress: [{}]}"),
    ];
    let snap = cluster(policies);
    let node = node();
    let one = compile(&snap, &node, &Allocations::default());
    let two = compile(&snap, &node, &Allocations::default());
    let again = compile(&snap, &node, &one.allocations);
    assert_eq!(one, two);
    assert_eq!(one, again);
}
