//! Map sizes chosen with `--map-sizes`: the maps are created with them, each set of sizes has
//! its own maps directory (aya would reuse a pinned map of another size without a word), what
//! reports capacity reports them, and a map too small for the policies is reported full and
//! stays closed. Resizing a running node under traffic is in `restart.rs`.

use std::{path::Path, time::Duration};

use aya::maps::MapData;
use cns_agent::{
    datapath::{Datapath, LoadError},
    map_sizes::{MapSizes, SizedMap},
    paths,
};
use cns_common::maps as m;
use cns_tests::{
    cluster::{Cluster, SERVER, UDP_PORT},
    eventually, kernel_or_skip,
    traffic::{tcp_ok, udp_ok},
    unique,
};

/// The kernel's size of the map pinned at `path`.
fn max_entries(path: &Path) -> u32 {
    MapData::from_pin(path)
        .and_then(|d| d.info())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .max_entries()
}

/// Removes a pin directory on drop, also when the test panics.
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn each_set_of_sizes_gets_its_own_maps_and_reused_maps_are_checked() {
    if !kernel_or_skip("map sizes: loader") {
        return;
    }
    let pin = PinDir(Path::new("/sys/fs/bpf").join(unique("cns-sizes-")));
    paths::prepare_pin_dir(&pin.0).expect("pin dir");
    let small: MapSizes = "policy=300,conntrack=2048,counters=64,endpoints=128"
        .parse()
        .unwrap();
    let bigger: MapSizes = "policy=400,conntrack=2048,counters=64,endpoints=128"
        .parse()
        .unwrap();

    // The kernel maps have the configured sizes, in the directory of these sizes.
    let dp = Datapath::load_sized(&pin.0, &small).expect("load with small maps");
    let small_dir = dp.maps_dir().to_owned();
    assert_eq!(small_dir, paths::sized_maps_dir(&pin.0, &small));
    assert_ne!(
        small_dir,
        paths::maps_dir(&pin.0),
        "not the defaults' directory"
    );
    for (map, want) in [
        (m::POLICY, 300),
        (m::CONNTRACK, 2048),
        (m::COUNTERS, 64),
        (m::COUNTER_KEYS, 64),
        (m::COUNTER_OWNERS, 64),
        (m::ENDPOINTS, 128),
        (m::LOCAL_IPS, 128),
        (m::IPCACHE, m::IPCACHE_CAPACITY),
        (m::CIDRS, m::CIDRS_CAPACITY),
        (m::FRAGMENTS, m::FRAGMENTS_CAPACITY),
    ] {
        assert_eq!(max_entries(&small_dir.join(map)), want, "{map}");
    }
    drop(dp);

    // Other sizes: fresh maps beside the old ones (until an agent adopts and removes them).
    let dp = Datapath::load_sized(&pin.0, &bigger).expect("load with bigger maps");
    let bigger_dir = dp.maps_dir().to_owned();
    assert_ne!(bigger_dir, small_dir);
    assert_eq!(max_entries(&bigger_dir.join(m::POLICY)), 400);
    assert_eq!(
        max_entries(&small_dir.join(m::POLICY)),
        300,
        "old maps untouched"
    );
    assert_eq!(
        paths::stale_maps_dirs(&pin.0, &bigger_dir),
        vec![small_dir.clone()],
        "what adopting would remove"
    );
    drop(dp);

    // What the directory per size protects against: maps of another size pinned where the
    // loader looks. aya opens them as they are (its load succeeds, ignoring
    // map_max_entries); the loader's own check refuses them, naming the map and both sizes.
    std::fs::remove_dir_all(&bigger_dir).expect("remove the bigger maps");
    std::fs::rename(&small_dir, &bigger_dir).expect("move the small maps in their place");
    let err = Datapath::load_sized(&pin.0, &bigger)
        .err()
        .expect("maps of the wrong size are refused");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            LoadError::PinnedSize {
                pinned: 300,
                configured: 400,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(m::POLICY) && msg.contains("--map-sizes"),
        "{msg}"
    );
    assert_eq!(
        max_entries(&bigger_dir.join(m::POLICY)),
        300,
        "left as it was"
    );
}

/// alpha/server is isolated for ingress; gamma may reach it on any port (one policy entry,
/// which sorts before the port entries and is written first).
const FROM_GAMMA: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-gamma, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: gamma}}}]
";

/// beta/client may reach alpha/server on these TCP ports (one policy entry each) and on UDP
/// 5353 (whose entry sorts after every TCP one).
fn beta_client_ports(tcp: impl IntoIterator<Item = u16>) -> String {
    let ports: String = tcp
        .into_iter()
        .map(|p| format!("    - {{protocol: TCP, port: {p}}}\n"))
        .collect();
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: beta-client-ports, namespace: alpha}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: beta}}}}, podSelector: {{matchLabels: {{role: client}}}}}}]
    ports:
{ports}    - {{protocol: UDP, port: {UDP_PORT}}}
"
    )
}

/// The `maps` row of `map` in `status -o json`: (entries, capacity).
fn usage(status: &serde_json::Value, map: &str) -> (u64, u64) {
    let row = status["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|r| r["map"] == map)
        .unwrap_or_else(|| panic!("{map} in {status}"));
    (
        row["entries"].as_u64().unwrap(),
        row["capacity"].as_u64().unwrap(),
    )
}

/// Whether `check` holds within a few seconds.

#[test]
fn a_small_policy_map_reports_its_size_and_fails_closed_when_full() {
    if !kernel_or_skip("map sizes: full policy map") {
        return;
    }
    let c = Cluster::start_with(
        false,
        &[("from-gamma.yaml", FROM_GAMMA)],
        &["--map-sizes", "policy=300"],
    );
    let sizes: MapSizes = "policy=300".parse().unwrap();

    // Status and metrics report the configured capacity, and the maps directory of it.
    let status = c.agent.status();
    assert_eq!(usage(&status, m::POLICY).1, 300, "{status}");
    assert_eq!(usage(&status, m::IPCACHE).1, u64::from(m::IPCACHE_CAPACITY));
    assert_eq!(status["map_sizes"]["policy"], 300);
    assert_eq!(
        status["maps_dir"].as_str().map(Path::new),
        Some(paths::sized_maps_dir(&c.agent.pin_dir, &sizes).as_path())
    );
    let metric = |name: &str, map: &str| c.agent.metric(name, &[("map", map)]);
    assert_eq!(metric("cns_map_capacity", m::POLICY), Some(300.0));
    assert_eq!(
        metric("cns_map_capacity", m::CONNTRACK),
        Some(f64::from(m::CONNTRACK_CAPACITY))
    );
    assert_eq!(
        metric("cns_map_capacity", m::LOCAL_IPS),
        Some(f64::from(sizes.get(SizedMap::Endpoints)))
    );
    let table = c.agent.cli(&["status"]).expect("status table");
    assert!(
        table.contains("policy=300") && table.contains("CNS_POLICY"),
        "{table}"
    );
    assert!(tcp_ok(&c.gamma_client.netns, SERVER, 8080), "gamma allowed");
    assert!(!tcp_ok(&c.beta_client.netns, SERVER, 8080), "beta isolated");

    // 403 entries for 300 places: the sync reports the full map; what fits is written.
    // TCP 1000-1399 sort before 8080.
    c.agent
        .write("beta.yaml", &beta_client_ports((1000..1400).chain([8080])));
    let err = c
        .agent
        .sync()
        .expect_err("the policy map cannot hold every rule");
    assert!(
        err.contains("map CNS_POLICY is full: 403 entries wanted, capacity 300"),
        "{err}"
    );
    let status = c.agent.status();
    assert_eq!(usage(&status, m::POLICY), (300, 300), "{status}");
    assert!(
        status["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("map CNS_POLICY is full")),
        "{status}"
    );
    assert_eq!(metric("cns_map_entries", m::POLICY), Some(300.0));
    assert!(c.agent.metric("cns_sync_errors_total", &[]).unwrap_or(0.0) >= 1.0);

    // Blocking mode stays closed: rules that did not fit allow nothing (beta/client's TCP
    // 8080 and UDP entries sort last), never everything; others are still enforced.
    assert!(
        !tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "an allow rule that did not fit must not open traffic"
    );
    assert!(
        !udp_ok(&c.beta_client.netns, SERVER, UDP_PORT),
        "an allow rule that did not fit must not open traffic"
    );
    assert!(
        !tcp_ok(&c.beta_other.netns, SERVER, 8080),
        "denied stays denied"
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "rules written before the map filled keep working"
    );

    // Back within the size: the errors clear and the rule that fits works. (A full map
    // takes two syncs to swap entries: upserts are written before the deletes free room.)
    c.agent.write("beta.yaml", &beta_client_ports([8080]));
    assert!(
        eventually(Duration::from_secs(10), || c.agent.sync().is_ok()),
        "errors clear once the rules fit:\n{}",
        c.agent.log()
    );
    assert!(
        tcp_ok(&c.beta_client.netns, SERVER, 8080),
        "beta allowed now"
    );
    let status = c.agent.status();
    assert_eq!(usage(&status, m::POLICY), (3, 300), "{status}");
    assert!(status["errors"].as_array().unwrap().is_empty(), "{status}");
}

/// The IPv6 maps take the sizes of their IPv4 twins, and `status` reports their use: on a
/// dual-stack node every pod address is in both IP caches, and the node's own IPv6 addresses
/// in the IPv6 one.
#[test]
fn ipv6_maps_take_the_configured_sizes_and_report_their_use() {
    if !kernel_or_skip("map sizes: ipv6") {
        return;
    }
    let c = Cluster::start_in(
        cns_tests::Family::Dual,
        false,
        &[("from-gamma.yaml", FROM_GAMMA)],
        &[
            "--map-sizes",
            "ipcache=1024,conntrack=2048,cidrs=512,deny-cache=1024",
        ],
    );
    let status = c.agent.status();
    let dir = Path::new(status["maps_dir"].as_str().expect("maps_dir"));
    for (map, want) in [
        (m::IPCACHE, 1024),
        (m::IPCACHE6, 1024),
        (m::CONNTRACK6, 2048),
        (m::CIDRS6, 512),
        (m::DENY_CACHE6, 1024),
        (m::LOCAL_IPS6, m::ENDPOINTS_CAPACITY),
        (m::FRAGMENTS6, m::FRAGMENTS_CAPACITY),
    ] {
        assert_eq!(max_entries(&dir.join(map)), want, "{map}");
    }
    let (v4, cap4) = usage(&status, m::IPCACHE);
    let (v6, cap6) = usage(&status, m::IPCACHE6);
    assert_eq!((cap4, cap6), (1024, 1024));
    // Four pods in each family, plus the node's own addresses (IPv4: loopback and uplink;
    // IPv6: those and link-local ones).
    assert!(v4 >= 4 + 2, "{status}");
    assert!(v6 >= 4 + 2, "{status}");
    // Enforced over IPv6 as over IPv4.
    let server6 = cns_tests::netns::v6_of(SERVER);
    assert!(
        tcp_ok(&c.gamma_client.netns, server6, 8080),
        "gamma allowed"
    );
    assert!(!tcp_ok(&c.beta_client.netns, server6, 8080), "beta denied");
    assert!(udp_ok(&c.gamma_client.netns, server6, UDP_PORT));
}
