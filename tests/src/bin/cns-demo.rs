//! `cargo xtask demo`: a virtual node with the pods of deploy/examples/00-cluster.yaml, the
//! real agent enforcing the example policies, first in audit mode, then in blocking mode,
//! and what the dry-run example policy would change (`policy rollout`).

use std::{net::Ipv4Addr, path::Path};

use cns_tests::{
    AgentProcess, VirtualNode, kernel_or_skip,
    traffic::{tcp_echo_server, tcp_ok},
};

const PODS: [(&str, Ipv4Addr); 4] = [
    ("shop/frontend", Ipv4Addr::new(10, 0, 1, 10)),
    ("shop/api", Ipv4Addr::new(10, 0, 1, 20)),
    ("payments/payments", Ipv4Addr::new(10, 0, 2, 10)),
    ("tools/debug", Ipv4Addr::new(10, 0, 3, 10)),
];

/// (from pod index, to pod index, port, what the example policies say)
const CHECKS: [(usize, usize, u16, &str); 7] = [
    (1, 2, 8443, "policy allows: allow-shop-api"),
    (0, 2, 8443, "policy denies: frontend is not the API"),
    (
        3,
        2,
        8443,
        "Admin ClusterNetworkPolicy payments-lockdown denies tools",
    ),
    (0, 1, 8080, "policy allows: frontend-egress"),
    (0, 3, 8080, "policy denies: frontend egress only to the API"),
    (
        3,
        1,
        8080,
        "Baseline ClusterNetworkPolicy shop-baseline denies tools",
    ),
    (
        1,
        0,
        8080,
        "dry-run policy frontend-ingress would drop it: reported, not dropped",
    ),
];

fn main() {
    if !kernel_or_skip("demo") {
        std::process::exit(1);
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&examples)
        .expect("read deploy/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read example"))
        })
        .collect();
    files.sort();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, y)| (n.as_str(), y.as_str()))
        .collect();

    println!("== building a virtual node: one network namespace per pod");
    let mut node = VirtualNode::new();
    let pods: Vec<_> = PODS
        .iter()
        .map(|(name, ip)| {
            let p = node.add_pod(*ip);
            for port in [8080, 8443] {
                tcp_echo_server(&p.netns, port);
            }
            println!("   {name:<18} {ip:<10} netns {}", p.netns);
            p
        })
        .collect();

    println!("\n== starting cns-agent in AUDIT mode (policyAuditMode: true) with deploy/examples/");
    let agent = AgentProcess::start(&node, true, &refs);
    println!("{}", agent.cli(&["status"]).unwrap_or_else(|e| e));
    run_checks(&pods);
    println!("\n-- counters: would-be drops pass and are counted as audit");
    println!("{}", agent.cli(&["counters"]).unwrap_or_else(|e| e));

    println!("== switching to BLOCKING mode at runtime: cns-agent mode blocking");
    agent.cli(&["mode", "blocking"]).expect("mode blocking");
    run_checks(&pods);
    println!("\n-- counters: now the denied connections are dropped");
    println!("{}", agent.cli(&["counters"]).unwrap_or_else(|e| e));
    println!("== the dry-run policy: what it would drop, and whether it is safe to enforce");
    println!("   cns-agent policy rollout");
    println!(
        "{}",
        agent.cli(&["policy", "rollout"]).unwrap_or_else(|e| e)
    );
    drop(agent);
    drop(node);
    println!("== done: the virtual node is removed");
}

fn run_checks(pods: &[cns_tests::PodNet]) {
    for (from, to, port, expect) in CHECKS {
        let ok = tcp_ok(&pods[from].netns, pods[to].ip, port);
        println!(
            "   {:<18} -> {:<18} tcp/{port:<5} {:<9} ({expect})",
            PODS[from].0,
            PODS[to].0,
            if ok { "CONNECTED" } else { "BLOCKED" },
        );
    }
}
