//! Traffic through the virtual node (issue 7, sections 2 and 3), between two pods of one
//! node (client 10.0.2.10 -> server 10.0.1.10), with in-process sockets in the pods'
//! network namespaces:
//!
//! - TCP request/response latency (64 bytes each way, one connection, p50/p99), twice: with
//!   the client and the server thread pinned to the same CPU, and to two different CPUs
//!   ([`Placement`]; the second is not measurable on a machine with one CPU),
//! - new TCP connections per second (connect, 1-byte exchange, close),
//! - TCP bulk throughput, one and four streams, with the benchmark process's CPU per Gbit,
//! - a denied UDP flood: datagrams per second one sender pushes while the drops happen.
//!
//! Variants, interleaved trial after trial: no enforcement; cns (the real agent, blocking,
//! a policy pair allowing the flow, plus 10 or 1000 unrelated rules on the server); and an
//! iptables + ipset baseline built in the node netns the way kube-router does it
//! (conntrack ESTABLISHED accept first, then per-pod chains with set-match rules, unrelated
//! rules first, default drop).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};
use serde_json::{Value, json};

use super::{Options, Summary, percentile, progstats, round3};
use crate::{
    AgentProcess, VirtualNode,
    manifests::{docs, namespace, pod_with_ips},
    traffic::in_netns,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const ECHO_PORT: u16 = 8080;
const SINK_PORT: u16 = 5001;
pub(super) const DENIED_UDP_PORT: u16 = 9999;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    None,
    Cns(usize),
    Iptables(usize),
}

impl Variant {
    pub fn name(self) -> String {
        match self {
            Variant::None => "no enforcement".into(),
            Variant::Cns(n) => format!("cns, {n} unrelated rules"),
            Variant::Iptables(n) => format!("iptables+ipset, {n} unrelated rules"),
        }
    }
}

/// Where the request/response client and server threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both pinned to one CPU.
    SameCpu,
    /// Pinned to two different CPUs.
    CrossCpu,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::SameCpu, Placement::CrossCpu];

    pub fn name(self) -> &'static str {
        match self {
            Placement::SameCpu => "same vCPU",
            Placement::CrossCpu => "cross vCPU",
        }
    }

    /// The infix of its `bench.json` keys (`rr_same_cpu_p50_us`, ratio `rr_same_cpu_p50`).
    pub fn key(self) -> &'static str {
        match self {
            Placement::SameCpu => "same_cpu",
            Placement::CrossCpu => "cross_cpu",
        }
    }
}

/// The (client, server) CPUs of each placement, from the CPUs this process may run on: the
/// first one for both, then the first and the second; `None` for cross-CPU with one CPU.
pub fn placement_cpus(allowed: &[usize]) -> Option<[Option<(usize, usize)>; 2]> {
    let first = *allowed.first()?;
    Some([Some((first, first)), allowed.get(1).map(|&b| (first, b))])
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    sched_getaffinity(Pid::from_raw(0))
        .map(|set| {
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default()
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// Request/response p50 and p99 of one placement: one value per trial.
#[derive(Clone, Debug)]
pub struct Latency {
    pub p50_us: Summary,
    pub p99_us: Summary,
}

/// Per variant, per metric: one value per trial.
#[derive(Clone, Debug)]
pub struct VariantResult {
    pub variant: String,
    pub rr_same_cpu: Latency,
    /// `None`: not measurable (one CPU).
    pub rr_cross_cpu: Option<Latency>,
    pub conn_per_s: Summary,
    pub gbit_1: Summary,
    pub gbit_4: Summary,
    pub cpu_s_per_gbit_1: Summary,
    pub flood_kpps: Summary,
    /// Ratios to no enforcement (per trial, then median).
    pub ratio: Value,
    /// The agent's programs on each workload's packets, where they ran in every trial.
    pub programs: Vec<ProgramLoad>,
}

pub use progstats::ProgramLoad;

impl VariantResult {
    pub fn rr(&self, p: Placement) -> Option<&Latency> {
        match p {
            Placement::SameCpu => Some(&self.rr_same_cpu),
            Placement::CrossCpu => self.rr_cross_cpu.as_ref(),
        }
    }

    pub fn json(&self) -> Value {
        let rr = |p: Placement, f: fn(&Latency) -> &Summary| self.rr(p).map(|l| f(l).json());
        json!({
            "variant": self.variant,
            "rr_same_cpu_p50_us": rr(Placement::SameCpu, |l| &l.p50_us),
            "rr_same_cpu_p99_us": rr(Placement::SameCpu, |l| &l.p99_us),
            "rr_cross_cpu_p50_us": rr(Placement::CrossCpu, |l| &l.p50_us),
            "rr_cross_cpu_p99_us": rr(Placement::CrossCpu, |l| &l.p99_us),
            "new_connections_per_s": self.conn_per_s.json(),
            "throughput_gbit_1_stream": self.gbit_1.json(),
            "throughput_gbit_4_streams": self.gbit_4.json(),
            "cpu_s_per_gbit_1_stream": self.cpu_s_per_gbit_1.json(),
            "denied_udp_flood_kpps_sent": self.flood_kpps.json(),
            "ratio_to_no_enforcement": self.ratio,
            "programs": self.programs.iter().map(ProgramLoad::json).collect::<Vec<_>>(),
        })
    }
}

pub struct TrafficReport {
    pub iptables: String,
    pub trials: usize,
    /// (client, server) CPUs of the request/response measurement per [`Placement`]
    /// (`None`: not measurable).
    pub rr_cpus: [Option<(usize, usize)>; 2],
    /// Between two pods (empty when not run).
    pub results: Vec<VariantResult>,
    pub notes: Vec<String>,
    /// The denied flood from outside the node ([`super::flood`]).
    pub flood: Option<super::flood::FloodReport>,
}

impl TrafficReport {
    pub fn json(&self) -> Value {
        json!({
            "iptables_backend": self.iptables,
            "trials": self.trials,
            "rr_cpus": Placement::ALL.iter().zip(self.rr_cpus).map(|(p, c)| {
                (p.key().to_owned(), c.map_or(Value::Null, |(client, server)| json!({"client": client, "server": server})))
            }).collect::<serde_json::Map<String, Value>>(),
            "results": self.results.iter().map(VariantResult::json).collect::<Vec<_>>(),
            "notes": self.notes,
            "uplink_flood": self.flood.as_ref().map(super::flood::FloodReport::json),
        })
    }
}

struct Params {
    trials: usize,
    rr_count: usize,
    conn_secs: f64,
    bulk_secs: f64,
    flood_secs: f64,
    rules: Vec<usize>,
}

fn ns_sh(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore`/`ipset restore` input for the kube-router-style baseline.
fn iptables_rules(unrelated: usize) -> (String, String) {
    let mut sets = String::new();
    let mut rules = String::from(
        "*filter\n:CNSB-FWD - [0:0]\n:CNSB-POD-SERVER - [0:0]\n:CNSB-POD-CLIENT - [0:0]\n-A FORWARD -j CNSB-FWD\n",
    );
    sets.push_str("create cnsb-clients hash:ip\nadd cnsb-clients 10.0.2.10\n");
    sets.push_str("create cnsb-servers hash:ip\nadd cnsb-servers 10.0.1.10\n");
    rules.push_str("-A CNSB-FWD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    rules.push_str("-A CNSB-FWD -d 10.0.1.10 -j CNSB-POD-SERVER\n");
    rules.push_str("-A CNSB-FWD -s 10.0.2.10 -j CNSB-POD-CLIENT\n");
    for k in 0..unrelated {
        let _ = std::fmt::Write::write_fmt(
            &mut sets,
            format_args!(
                "create cnsb-u{k} hash:ip\nadd cnsb-u{k} 10.9.{}.{}\n",
                k / 250,
                k % 250 + 1
            ),
        );
        let _ = std::fmt::Write::write_fmt(
            &mut rules,
            format_args!(
                "-A CNSB-POD-SERVER -p tcp -m set --match-set cnsb-u{k} src -m set --match-set cnsb-servers dst -m tcp --dport {} -j ACCEPT\n",
                10000 + k
            ),
        );
    }
    for chain in ["CNSB-POD-SERVER", "CNSB-POD-CLIENT"] {
        let _ = std::fmt::Write::write_fmt(
            &mut rules,
            format_args!(
                "-A {chain} -p tcp -m set --match-set cnsb-clients src -m set --match-set cnsb-servers dst -m multiport --dports {ECHO_PORT},{SINK_PORT} -j ACCEPT\n-A {chain} -j DROP\n"
            ),
        );
    }
    rules.push_str("COMMIT\n");
    (sets, rules)
}

fn restore(netns: &str, cmd: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub(super) fn iptables_up(node: &str, unrelated: usize) -> anyhow::Result<()> {
    let (sets, rules) = iptables_rules(unrelated);
    restore(node, &["ipset", "restore"], &sets)?;
    restore(node, &["iptables-restore", "--noflush"], &rules)
}

pub(super) fn iptables_down(node: &str) -> anyhow::Result<()> {
    let _ = ns_sh(node, &["iptables", "-D", "FORWARD", "-j", "CNSB-FWD"]);
    for c in ["CNSB-FWD", "CNSB-POD-SERVER", "CNSB-POD-CLIENT"] {
        let _ = ns_sh(node, &["iptables", "-F", c]);
    }
    for c in ["CNSB-FWD", "CNSB-POD-SERVER", "CNSB-POD-CLIENT"] {
        let _ = ns_sh(node, &["iptables", "-X", c]);
    }
    ns_sh(node, &["ipset", "destroy"])?;
    Ok(())
}

/// A pod's addresses on the dual-stack node.
fn dual(ip: Ipv4Addr) -> [std::net::IpAddr; 2] {
    [ip.into(), crate::netns::v6_of(ip).into()]
}

/// The cluster's manifests for the agent: the two pods, a policy pair allowing the flow,
/// and `unrelated` rules on the server (pods on another node, one port each).
pub(super) fn manifests(unrelated: usize) -> Vec<(String, String)> {
    let mut objs = vec![
        namespace("a", &[]),
        namespace("b", &[]),
        namespace("u", &[]),
        // Dual-stack, as the node: the flood also runs over IPv6.
        pod_with_ips("a", "server", &[("app", "server")], &dual(SERVER), &[]),
        pod_with_ips("b", "client", &[("app", "client")], &dual(CLIENT), &[]),
    ];
    objs.push(format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server, namespace: a}}\nspec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: client}}}}}}]\n    ports: [{{protocol: TCP, port: {ECHO_PORT}}}, {{protocol: TCP, port: {SINK_PORT}}}]\n"
    ));
    objs.push(format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: client, namespace: b}}\nspec:\n  podSelector: {{matchLabels: {{app: client}}}}\n  policyTypes: [Ingress, Egress]\n  egress:\n  - to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: server}}}}}}]\n    ports: [{{protocol: TCP, port: {ECHO_PORT}}}, {{protocol: TCP, port: {SINK_PORT}}}]\n"
    ));
    let mut files = vec![("cluster.yaml".to_owned(), docs(&objs))];
    let mut extra = Vec::new();
    for k in 0..unrelated {
        extra.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: u{k}, namespace: u, labels: {{app: u{k}}}}}\nspec:\n  nodeName: node-2\n  containers: [{{name: c, image: i}}]\nstatus: {{phase: Running, podIP: 10.9.{}.{}}}\n",
            k / 250,
            k % 250 + 1
        ));
        extra.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: unrelated-{k}, namespace: a}}\nspec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: u{k}}}}}}}]\n    ports: [{{protocol: TCP, port: {}}}]\n",
            10000 + k
        ));
    }
    // The agent's YAML reader takes at most 1024 documents per file.
    for (i, chunk) in extra.chunks(500).enumerate() {
        files.push((format!("unrelated-{i:02}.yaml"), docs(chunk)));
    }
    files
}

/// CPU seconds (user + system) of this process so far.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// `pin`: the CPU the echo server's thread for the next connections runs on
/// (`usize::MAX`: not pinned); the client sets it before connecting.
fn start_servers(server_ns: &str, stop: Arc<AtomicBool>, pin: Arc<AtomicUsize>) {
    let echo = in_netns(server_ns, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT)).expect("bind echo")
    });
    std::thread::spawn(move || {
        for mut conn in echo.incoming().flatten() {
            let cpu = pin.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                if cpu != usize::MAX
                    && let Err(e) = pin_current_thread(cpu)
                {
                    // The client sees the connection closed and reports the error.
                    eprintln!("echo server: pin to CPU {cpu}: {e}");
                    return;
                }
                let _ = conn.set_nodelay(true);
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let sink = in_netns(server_ns, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, SINK_PORT)).expect("bind sink")
    });
    std::thread::spawn(move || {
        for mut conn in sink.incoming().flatten() {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 17];
                while !stop.load(Ordering::Relaxed) {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
}

struct Trial {
    /// (p50, p99) in µs per [`Placement`]; `None`: not measurable.
    rr: [Option<(f64, f64)>; 2],
    conn_per_s: f64,
    gbit_1: f64,
    gbit_4: f64,
    cpu_s_per_gbit_1: f64,
    flood_kpps: f64,
    /// Per [`WORKLOADS`] entry, the agent's programs on its packets (`progstats`).
    programs: [[Option<(f64, u64)>; 3]; 4],
}

/// The workloads of a trial, as [`Trial::programs`] has them.
pub const WORKLOADS: [&str; 4] = [
    "request/response",
    "new connections",
    "bulk (1 and 4 streams)",
    "denied UDP flood",
];

/// Request/response round trips (µs) over one connection, the client pinned to `client`
/// and the server's thread for it to `server`.
fn request_response(
    client_ns: &str,
    (client, server): (usize, usize),
    pin: &Arc<AtomicUsize>,
    rr_count: usize,
) -> anyhow::Result<Vec<f64>> {
    let echo = SocketAddr::from((SERVER, ECHO_PORT));
    pin.store(server, Ordering::SeqCst);
    let rtts = in_netns(client_ns, move || -> std::io::Result<Vec<f64>> {
        pin_current_thread(client).map_err(std::io::Error::from)?;
        let mut s = TcpStream::connect_timeout(&echo, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        let req = [7u8; 64];
        let mut resp = [0u8; 64];
        let mut out = Vec::with_capacity(rr_count);
        for i in 0..rr_count + rr_count / 10 {
            let t = Instant::now();
            s.write_all(&req)?;
            s.read_exact(&mut resp)?;
            if i >= rr_count / 10 {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(out)
    });
    // Connections made from now on (the connection-rate test) get unpinned server threads;
    // this one's was accepted (and pinned) before its first response.
    pin.store(usize::MAX, Ordering::SeqCst);
    Ok(rtts?)
}

/// One trial of every metric; `flip`: measure cross-CPU latency before same-CPU (alternated
/// from trial to trial so that neither always runs first).
fn measure(
    client_ns: &str,
    p: &Params,
    cpus: [Option<(usize, usize)>; 2],
    pin: &Arc<AtomicUsize>,
    flip: bool,
) -> anyhow::Result<Trial> {
    let echo = SocketAddr::from((SERVER, ECHO_PORT));
    let sink = SocketAddr::from((SERVER, SINK_PORT));
    let mut programs = [[None; 3]; 4];
    let mut at = progstats::Snapshot::now();
    let mut timed = |w: usize| {
        let now = progstats::Snapshot::now();
        programs[w] = now.since(&at);
        at = now;
    };
    // Request/response, per placement.
    let mut rr = [None; 2];
    let mut order = [0, 1];
    if flip {
        order.reverse();
    }
    for i in order {
        if let Some(c) = cpus[i] {
            let rtts = request_response(client_ns, c, pin, p.rr_count)?;
            rr[i] = Some((percentile(&rtts, 50.0), percentile(&rtts, 99.0)));
        }
    }
    timed(0);
    // New connections.
    let conn_secs = p.conn_secs;
    let conns = in_netns(client_ns, move || -> std::io::Result<f64> {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < conn_secs {
            let mut s = TcpStream::connect_timeout(&echo, Duration::from_secs(2))?;
            s.write_all(&[1])?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            n += 1;
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })?;
    timed(1);
    // Bulk.
    let bulk = |streams: usize| -> anyhow::Result<(f64, f64)> {
        let secs = p.bulk_secs;
        let cpu0 = process_cpu_s();
        let t = Instant::now();
        let handles: Vec<_> = (0..streams)
            .map(|_| {
                let ns = client_ns.to_owned();
                std::thread::spawn(move || {
                    in_netns(&ns, move || -> std::io::Result<u64> {
                        let mut s = TcpStream::connect_timeout(&sink, Duration::from_secs(2))?;
                        let buf = vec![0u8; 1 << 17];
                        let t = Instant::now();
                        let mut sent = 0u64;
                        while t.elapsed().as_secs_f64() < secs {
                            s.write_all(&buf)?;
                            sent += buf.len() as u64;
                        }
                        Ok(sent)
                    })
                })
            })
            .collect();
        let mut bytes = 0u64;
        for h in handles {
            bytes += h
                .join()
                .map_err(|_| anyhow::anyhow!("bulk thread panicked"))??;
        }
        let elapsed = t.elapsed().as_secs_f64();
        let gbit = bytes as f64 * 8.0 / 1e9;
        Ok((gbit / elapsed, (process_cpu_s() - cpu0) / gbit))
    };
    let (gbit_1, cpu_1) = bulk(1)?;
    let (gbit_4, _) = bulk(4)?;
    timed(2);
    // Denied UDP flood (allowed nowhere: dropped by the policy or the iptables default drop;
    // with no enforcement it reaches the server, which has no socket on that port).
    let flood_secs = p.flood_secs;
    let flood = in_netns(client_ns, move || -> std::io::Result<f64> {
        // Unconnected: ICMP errors (no enforcement: nothing listens there) are not reported.
        let s = UdpSocket::bind((CLIENT, 0))?;
        let to = SocketAddr::from((SERVER, DENIED_UDP_PORT));
        let payload = [0u8; 18]; // 64-byte frames
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < flood_secs {
            for _ in 0..256 {
                let _ = s.send_to(&payload, to);
                n += 1;
            }
        }
        Ok(n as f64 / t.elapsed().as_secs_f64() / 1000.0)
    })?;
    timed(3);
    Ok(Trial {
        rr,
        conn_per_s: conns,
        gbit_1,
        gbit_4,
        cpu_s_per_gbit_1: cpu_1,
        flood_kpps: flood,
        programs,
    })
}

/// Each program on each workload, where it ran in every trial.
fn program_loads(ts: &[Trial]) -> Vec<ProgramLoad> {
    WORKLOADS
        .iter()
        .enumerate()
        .flat_map(|(w, workload)| {
            progstats::loads(
                workload,
                &ts.iter().map(|t| t.programs[w]).collect::<Vec<_>>(),
            )
        })
        .collect()
}

fn iptables_backend() -> String {
    Command::new("iptables")
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "not installed".into())
}

/// Runs the pod-to-pod measurements (`pods`) and the denied flood from outside the node
/// (`flood`) on one virtual node.
pub fn run(
    opts: &Options,
    pods: bool,
    flood: bool,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<TrafficReport> {
    let p = if opts.quick {
        Params {
            trials: 2,
            rr_count: 2_000,
            conn_secs: 0.3,
            bulk_secs: 0.5,
            flood_secs: 0.3,
            rules: vec![10],
        }
    } else {
        Params {
            trials: 5,
            rr_count: 20_000,
            conn_secs: 1.0,
            bulk_secs: 2.0,
            flood_secs: 1.0,
            rules: vec![10, 1000],
        }
    };
    let iptables = iptables_backend();
    let have_iptables = iptables != "not installed"
        && Command::new("ipset")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
    let mut notes = Vec::new();
    let mut variants = vec![Variant::None];
    variants.extend(p.rules.iter().map(|&n| Variant::Cns(n)));
    if have_iptables {
        variants.extend(p.rules.iter().map(|&n| Variant::Iptables(n)));
    } else {
        notes.push(
            "iptables/ipset not installed: no iptables baseline (cargo xtask setup installs them)"
                .into(),
        );
    }

    // Whether the kernel keeps the programs' statistics (taken in runs of their own: with
    // statistics on, every BPF program run pays two clock reads).
    if let Err(e) = progstats::enable() {
        notes.push(format!("no bpf_stats for the agent's programs: {e}"));
    }

    let mut node = VirtualNode::with_family(crate::Family::Dual);
    let server = node.add_pod(SERVER);
    let client = node.add_pod(CLIENT);
    let flood = if flood {
        let fp = if opts.quick {
            super::flood::Params {
                trials: 2,
                secs: 0.3,
                unrelated_rules: 10,
                iptables: have_iptables,
            }
        } else {
            super::flood::Params {
                trials: 5,
                secs: 1.0,
                unrelated_rules: 10,
                iptables: have_iptables,
            }
        };
        Some(super::flood::run(&node, &server, &fp, progress)?)
    } else {
        None
    };
    if !pods {
        return Ok(TrafficReport {
            iptables,
            trials: 0,
            rr_cpus: [None; 2],
            results: Vec::new(),
            notes,
            flood,
        });
    }
    // Ephemeral ports recycle fast enough for the connection-rate test.
    ns_sh(&client.netns, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    ns_sh(
        &client.netns,
        &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"],
    )?;
    let allowed = allowed_cpus();
    let cpus = placement_cpus(&allowed)
        .ok_or_else(|| anyhow::anyhow!("sched_getaffinity: no CPU this process may run on"))?;
    if cpus[1].is_none() {
        notes.push(format!(
            "Cross-vCPU request/response latency: not measurable, this process may run on one CPU only ({allowed:?})."
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pin = Arc::new(AtomicUsize::new(usize::MAX));
    start_servers(&server.netns, stop.clone(), pin.clone());

    // Warm-up (not reported): first connections, page cache, CPU frequency.
    measure(&client.netns, &p, cpus, &pin, false)?;
    let mut trials: Vec<Vec<Trial>> = variants.iter().map(|_| Vec::new()).collect();
    for t in 0..p.trials {
        for (vi, v) in variants.iter().enumerate() {
            let started = Instant::now();
            let flip = t % 2 == 1;
            let trial = match *v {
                Variant::None => measure(&client.netns, &p, cpus, &pin, flip)?,
                Variant::Cns(n) => {
                    let files = manifests(n);
                    let refs: Vec<(&str, &str)> = files
                        .iter()
                        .map(|(a, b)| (a.as_str(), b.as_str()))
                        .collect();
                    let agent = AgentProcess::start(&node, false, &refs);
                    let r = measure(&client.netns, &p, cpus, &pin, flip).and_then(|mut r| {
                        // The agent's programs on the same workloads, run again with
                        // statistics on (the timed run goes without them).
                        if let Ok(stats) = progstats::enable() {
                            r.programs = measure(&client.netns, &p, cpus, &pin, flip)?.programs;
                            drop(stats);
                        }
                        Ok(r)
                    });
                    drop(agent);
                    r?
                }
                Variant::Iptables(n) => {
                    iptables_up(&node.node, n)?;
                    let r = measure(&client.netns, &p, cpus, &pin, flip);
                    iptables_down(&node.node)?;
                    r?
                }
            };
            let p50 = |i: usize| trial.rr[i].map_or("-".into(), |(p50, _)| format!("{p50:.1}"));
            progress(&format!(
                "traffic trial {}/{}: {}: rr p50 same/cross vCPU {}/{} us, {:.0} conn/s, {:.2} Gbit/s, flood {:.0} kpps ({:.1}s)",
                t + 1,
                p.trials,
                v.name(),
                p50(0),
                p50(1),
                trial.conn_per_s,
                trial.gbit_1,
                trial.flood_kpps,
                started.elapsed().as_secs_f64()
            ));
            trials[vi].push(trial);
        }
    }
    stop.store(true, Ordering::Relaxed);

    let base = &trials[0];
    let mut results = Vec::new();
    for (vi, v) in variants.iter().enumerate() {
        let ts = &trials[vi];
        let col = |f: fn(&Trial) -> f64| ts.iter().map(f).collect::<Vec<f64>>();
        let ratio = |f: fn(&Trial) -> f64| {
            let r: Vec<f64> = ts.iter().zip(base).map(|(a, b)| f(a) / f(b)).collect();
            round3(Summary::of(&r).median)
        };
        // Per placement: (p50, p99) per trial, and the median per-trial ratios to no
        // enforcement; `None` when not measured.
        let rr = |i: usize| -> Option<(Latency, f64, f64)> {
            let mine: Vec<(f64, f64)> = ts.iter().map(|t| t.rr[i]).collect::<Option<_>>()?;
            let base: Vec<(f64, f64)> = base.iter().map(|t| t.rr[i]).collect::<Option<_>>()?;
            let per_trial = |f: fn(&(f64, f64)) -> f64| {
                let r: Vec<f64> = mine.iter().zip(&base).map(|(a, b)| f(a) / f(b)).collect();
                round3(Summary::of(&r).median)
            };
            let col =
                |f: fn(&(f64, f64)) -> f64| Summary::of(&mine.iter().map(f).collect::<Vec<_>>());
            Some((
                Latency {
                    p50_us: col(|x| x.0),
                    p99_us: col(|x| x.1),
                },
                per_trial(|x| x.0),
                per_trial(|x| x.1),
            ))
        };
        let (same, cross) = (rr(0), rr(1));
        let mut ratios = json!({
            "new_connections_per_s": ratio(|t| t.conn_per_s),
            "throughput_1_stream": ratio(|t| t.gbit_1),
            "throughput_4_streams": ratio(|t| t.gbit_4),
            "cpu_per_gbit_1_stream": ratio(|t| t.cpu_s_per_gbit_1),
            "denied_flood_pps": ratio(|t| t.flood_kpps),
        });
        for (p, r) in Placement::ALL.iter().zip([&same, &cross]) {
            ratios[format!("rr_{}_p50", p.key())] = json!(r.as_ref().map(|r| r.1));
            ratios[format!("rr_{}_p99", p.key())] = json!(r.as_ref().map(|r| r.2));
        }
        results.push(VariantResult {
            variant: v.name(),
            rr_same_cpu: same
                .map(|s| s.0)
                .ok_or_else(|| anyhow::anyhow!("same-CPU latency not measured"))?,
            rr_cross_cpu: cross.map(|c| c.0),
            conn_per_s: Summary::of(&col(|t| t.conn_per_s)),
            gbit_1: Summary::of(&col(|t| t.gbit_1)),
            gbit_4: Summary::of(&col(|t| t.gbit_4)),
            cpu_s_per_gbit_1: Summary::of(&col(|t| t.cpu_s_per_gbit_1)),
            flood_kpps: Summary::of(&col(|t| t.flood_kpps)),
            ratio: ratios,
            programs: program_loads(ts),
        });
    }
    drop(node);
    Ok(TrafficReport {
        iptables,
        trials: p.trials,
        rr_cpus: cpus,
        results,
        notes,
        flood,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_pin_to_one_cpu_then_two() {
        assert_eq!(placement_cpus(&[]), None);
        assert_eq!(placement_cpus(&[3]), Some([Some((3, 3)), None]));
        assert_eq!(
            placement_cpus(&[0, 1, 2]),
            Some([Some((0, 0)), Some((0, 1))])
        );
    }

    #[test]
    fn this_thread_may_run_somewhere() {
        assert!(!allowed_cpus().is_empty());
    }
}
