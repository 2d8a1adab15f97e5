//! The agent going away (SIGTERM, SIGKILL) and coming back: enforcement never pauses, no
//! verdict is wrong meanwhile, counters keep counting, an agent with other map sizes takes
//! over on fresh maps without a gap, and `uninstall` / `--cleanup-on-exit` remove everything
//! deliberately.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use cns_tests::{
    Family,
    cluster::{Cluster, ONLY_BETA, SERVER, UDP_PORT},
    eventually, kernel_or_skip,
    netns::v6_of,
    traffic::{in_netns, tcp_ok, udp_probe},
};
use nix::sys::signal::Signal;

/// Probes in the background until stopped: an allowed UDP exchange (beta -> alpha), a
/// denied one (gamma -> alpha), and an established TCP connection echoing. Counts every
/// wrong verdict.
struct Prober {
    stop: Arc<AtomicBool>,
    wrong: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Prober {
    fn start(c: &Cluster) -> Self {
        let (allowed_ns, denied_ns) = (c.beta_client.netns.clone(), c.gamma_client.netns.clone());
        let mut conn = in_netns(&allowed_ns, || {
            TcpStream::connect_timeout(&SocketAddr::from((SERVER, 8080)), Duration::from_secs(2))
                .expect("connect")
        });
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, w, r) = (stop.clone(), wrong.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut problems = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let quick = Duration::from_millis(300);
                if !udp_probe(&allowed_ns, SERVER, UDP_PORT, quick) {
                    problems.push(format!(
                        "round {}: allowed UDP dropped",
                        r.load(Ordering::Relaxed)
                    ));
                }
                if udp_probe(&denied_ns, SERVER, UDP_PORT, quick) {
                    problems.push(format!(
                        "round {}: denied UDP passed",
                        r.load(Ordering::Relaxed)
                    ));
                }
                let mut buf = [0u8; 4];
                if conn.write_all(b"ping").is_err() || conn.read_exact(&mut buf).is_err() {
                    problems.push(format!(
                        "round {}: established TCP broken",
                        r.load(Ordering::Relaxed)
                    ));
                }
                if problems.len() as u64 > w.load(Ordering::Relaxed)
                    && w.load(Ordering::Relaxed) < 5
                {
                    eprintln!("{}", problems.last().unwrap());
                }
                w.store(problems.len() as u64, Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
            }
            problems
        });
        Self {
            stop,
            wrong,
            rounds,
            thread: Some(thread),
        }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more rounds ran.
    fn wait_rounds(&self, n: u64) {
        let target = self.rounds() + n;
        while self.rounds() < target {
            assert_eq!(
                self.wrong.load(Ordering::Relaxed),
                0,
                "wrong verdicts already"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("prober")
    }
}

#[test]
fn sigkill_and_sigterm_restarts_never_give_a_wrong_verdict() {
    if !kernel_or_skip("restart") {
        return;
    }
    let mut c = Cluster::start(false, &[("p.yaml", ONLY_BETA)]);
    let prober = Prober::start(&c);
    prober.wait_rounds(3);
    let dropped_before = c.agent.packets("gamma", "alpha", "ingress", "dropped");

    // Killed: the programs stay attached (their links are pinned) and keep enforcing.
    c.agent.stop(Signal::SIGKILL);
    prober.wait_rounds(5);
    c.agent.restart();
    prober.wait_rounds(3);
    assert!(
        c.agent
            .log()
            .contains("took over the programs pinned by an earlier agent interfaces=4"),
        "the restarted agent adopted the 4 pinned veths:\n{}",
        c.agent.log()
    );
    let dropped_after = c.agent.packets("gamma", "alpha", "ingress", "dropped");
    assert!(
        dropped_after >= dropped_before + 5,
        "drops while the agent was down are counted: {dropped_before} -> {dropped_after}"
    );

    // A clean stop and start, twice.
    for _ in 0..2 {
        c.agent.stop(Signal::SIGTERM);
        prober.wait_rounds(3);
        c.agent.restart();
        prober.wait_rounds(3);
    }
    let rounds = prober.rounds();
    let problems = prober.finish();
    assert!(
        problems.is_empty(),
        "wrong verdicts over {rounds} rounds: {problems:#?}"
    );

    // The restarted agent still applies changes: open alpha to everyone.
    c.agent.apply(
        "p.yaml",
        &ONLY_BETA.replace("{matchLabels: {team: beta}}", "{}"),
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "policy change after restarts"
    );
    // One pinned link per program per pod veth and the uplink's XDP link, nothing more.
    let links = std::fs::read_dir(c.agent.pin_dir.join("links"))
        .unwrap()
        .count();
    assert_eq!(links, 2 * 4 + 1, "link pins");
}

/// A restart never weakens enforcement because of an invalid object: the last good
/// versions the agent keeps in place of invalid input outlive it (beside its socket), and
/// the next agent enforces them until the input is fixed.
/// On a dual-stack node, IPv6 is enforced through a SIGKILL and the restart after it, and
/// its established connections survive, as IPv4's do.
#[test]
fn ipv6_is_enforced_across_a_sigkill_restart() {
    if !kernel_or_skip("restart ipv6") {
        return;
    }
    let mut c = Cluster::start_in(Family::Dual, false, &[("policy.yaml", ONLY_BETA)], &[]);
    let server6 = v6_of(SERVER);
    let quick = Duration::from_millis(300);
    let mut conn = in_netns(&c.beta_client.netns, move || {
        TcpStream::connect_timeout(&SocketAddr::from((server6, 8080)), Duration::from_secs(2))
            .expect("connect over IPv6")
    });
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let echo = |conn: &mut TcpStream| {
        let mut buf = [0u8; 4];
        conn.write_all(b"ping").is_ok() && conn.read_exact(&mut buf).is_ok()
    };
    let check = |c: &Cluster, when: &str| {
        assert!(
            udp_probe(
                &c.beta_client.netns,
                server6,
                UDP_PORT,
                Duration::from_secs(2)
            ),
            "{when}: beta allowed"
        );
        assert!(
            !udp_probe(&c.gamma_client.netns, server6, UDP_PORT, quick),
            "{when}: gamma denied"
        );
        assert!(
            !tcp_ok(&c.gamma_client.netns, server6, 8090),
            "{when}: gamma TCP denied"
        );
    };
    check(&c, "before");
    assert!(echo(&mut conn), "established before");
    c.agent.stop(Signal::SIGKILL);
    check(&c, "agent down");
    assert!(echo(&mut conn), "established while down");
    c.agent.restart();
    check(&c, "after the restart");
    assert!(echo(&mut conn), "established after the restart");
}

#[test]
fn a_restart_keeps_enforcing_the_last_good_version_of_an_invalid_file() {
    if !kernel_or_skip("restart") {
        return;
    }
    let mut c = Cluster::start(false, &[("p.yaml", ONLY_BETA)]);
    let held = {
        let mut name = c.agent.socket.clone().into_os_string();
        name.push(".held.json");
        std::path::PathBuf::from(name)
    };
    assert!(!tcp_ok(&c.gamma_client.netns, SERVER, 8080));
    assert!(!held.exists(), "nothing held while the input is valid");
    // A missing `]`: the file's last good version stays enforced, and is saved.
    c.agent.write(
        "p.yaml",
        &ONLY_BETA.replace("team: beta}}}]", "team: beta}}}"),
    );
    let err = c.agent.sync().expect_err("invalid YAML");
    assert!(err.contains("keeping its last good version"), "{err}");
    assert!(held.exists(), "the last good version is saved");
    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        c.agent.stop(signal);
        let err = c.agent.restart_reporting();
        assert!(
            err.contains("p.yaml") && err.contains("keeping its last good version"),
            "after {signal}: {err}"
        );
        assert!(
            !tcp_ok(&c.gamma_client.netns, SERVER, 8080),
            "after {signal}: alpha is still isolated"
        );
        assert!(
            tcp_ok(&c.beta_client.netns, SERVER, 8080),
            "after {signal}: beta still allowed"
        );
    }
    // Fixed while no agent runs: read as it is now, and nothing is held any more.
    c.agent.stop(Signal::SIGKILL);
    c.agent.write(
        "p.yaml",
        &ONLY_BETA.replace("{matchLabels: {team: beta}}", "{}"),
    );
    c.agent.restart();
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "the fixed file"
    );
    assert!(!held.exists(), "nothing held once the input is valid");
}

/// The kernel's size of map `name` pinned in `maps_dir`.
fn max_entries(maps_dir: &std::path::Path, name: &str) -> u32 {
    let path = maps_dir.join(name);
    aya::maps::MapData::from_pin(&path)
        .and_then(|d| d.info())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .max_entries()
}

#[test]
fn resizing_the_maps_under_traffic_never_gives_a_wrong_verdict() {
    use cns_common::maps as m;
    if !kernel_or_skip("resize") {
        return;
    }
    let small = "policy=300,conntrack=2048,counters=64";
    let mut c = Cluster::start_with(false, &[("p.yaml", ONLY_BETA)], &["--map-sizes", small]);
    let maps_dir = |c: &Cluster| {
        std::path::PathBuf::from(c.agent.status()["maps_dir"].as_str().expect("maps_dir"))
    };
    let first = maps_dir(&c);
    assert_eq!(max_entries(&first, m::POLICY), 300);
    let prober = Prober::start(&c);
    prober.wait_rounds(3);
    // Counting works with a counters map of 64 (the programs' slot hash uses its size).
    assert!(c.agent.packets("beta", "alpha", "ingress", "forwarded") > 0);
    assert!(c.agent.packets("gamma", "alpha", "ingress", "dropped") > 0);

    // A rolling update with bigger maps: the new agent builds them beside the old ones,
    // fills them, swaps the programs in and removes the old directory.
    c.agent.stop(Signal::SIGTERM);
    prober.wait_rounds(3);
    let bigger = "policy=1000,conntrack=4096,counters=128";
    c.agent.restart_with(&["--map-sizes", bigger]);
    prober.wait_rounds(5);
    let second = maps_dir(&c);
    assert_ne!(second, first);
    assert!(!first.exists(), "the old maps are removed once adopted");
    for (map, want) in [(m::POLICY, 1000), (m::CONNTRACK, 4096), (m::COUNTERS, 128)] {
        assert_eq!(max_entries(&second, map), want, "{map}");
        assert_eq!(
            c.agent.metric("cns_map_capacity", &[("map", map)]),
            Some(f64::from(want)),
            "{map}"
        );
    }
    assert!(
        c.agent
            .log()
            .contains("took over the programs pinned by an earlier agent interfaces=4"),
        "the resized agent adopted the 4 pinned veths:\n{}",
        c.agent.log()
    );
    // Counters start again from zero with the new maps, and count.
    prober.wait_rounds(2);
    assert!(c.agent.packets("gamma", "alpha", "ingress", "dropped") > 0);

    // And back to the default sizes (no flag), killed this time.
    c.agent.stop(Signal::SIGKILL);
    prober.wait_rounds(3);
    c.agent.restart_with(&[]);
    prober.wait_rounds(5);
    let third = maps_dir(&c);
    assert_eq!(third, cns_agent::paths::maps_dir(&c.agent.pin_dir));
    assert!(
        !second.exists(),
        "the resized maps are removed once adopted"
    );
    assert_eq!(max_entries(&third, m::POLICY), m::POLICY_CAPACITY);

    let rounds = prober.rounds();
    let problems = prober.finish();
    assert!(
        problems.is_empty(),
        "wrong verdicts over {rounds} rounds: {problems:#?}"
    );
    let maps_dirs: Vec<_> = std::fs::read_dir(&c.agent.pin_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("maps-"))
        .collect();
    assert_eq!(maps_dirs.len(), 1, "{maps_dirs:?}");
}

/// Whether `check` holds within a few seconds.

#[test]
fn uninstall_and_cleanup_on_exit_remove_enforcement() {
    if !kernel_or_skip("uninstall") {
        return;
    }
    let mut c = Cluster::start(false, &[("p.yaml", ONLY_BETA)]);
    assert!(!tcp_ok(&c.gamma_client.netns, SERVER, 8080));
    c.agent.stop(Signal::SIGTERM);
    assert!(
        !tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "still enforced after SIGTERM"
    );
    let out = std::process::Command::new(cns_tests::agent::agent_bin())
        .arg("uninstall")
        .arg("--bpffs-dir")
        .arg(&c.agent.pin_dir)
        .output()
        .expect("uninstall");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!c.agent.pin_dir.exists(), "pins removed");
    // The kernel releases a link whose last pin is gone asynchronously: give it a moment.
    assert!(
        eventually(Duration::from_secs(5), || tcp_ok(
            &c.gamma_client.netns,
            SERVER,
            8080
        )),
        "programs detached"
    );

    // --cleanup-on-exit does the same at SIGTERM.
    let mut agent = cns_tests::AgentProcess::start_with(
        &c.node,
        false,
        &[
            ("cluster.yaml", &cns_tests::cluster::cluster_yaml("client")),
            ("p.yaml", ONLY_BETA),
        ],
        &["--cleanup-on-exit"],
    );
    assert!(!tcp_ok(&c.gamma_client.netns, SERVER, 8080));
    agent.stop(Signal::SIGTERM);
    assert!(!agent.pin_dir.exists(), "pins removed at exit");
    assert!(
        eventually(Duration::from_secs(5), || tcp_ok(
            &c.gamma_client.netns,
            SERVER,
            8080
        )),
        "programs detached at exit"
    );
}
