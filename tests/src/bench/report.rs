//! `bench.json` (everything measured) and `bench.md` (the same, readable, headlines first).

use std::{fmt::Write as _, process::Command};

use serde_json::{Value, json};

use super::{
    charts::{self, Chart, Section},
    control::{ControlResult, Incremental},
    flood::{FloodReport, FloodVariant, Generator},
    kernel::{Case, Keys, Measure, Policies, XDP_EMPTY, floor_of, floor_target, met},
    traffic::{Placement, TrafficReport, VariantResult},
};
use cns_agent::datapath::{PROG_EMPTY, PROG_FROM_POD, PROG_TO_POD, PROG_XDP};

fn first_line(cmd: &[&str]) -> Option<String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Machine, kernel and commit.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| super::round3(kb / 1024.0 / 1024.0));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let commit = first_line(&["git", "-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = first_line(&[
        "git",
        "-C",
        root,
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_some_and(|s| !s.is_empty());
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": mem_gib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "commit": commit,
        "tree_dirty": dirty,
        "jit_enabled": std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").ok().map(|s| s.trim().to_owned()),
        "date": first_line(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}

pub struct Report {
    pub machine: Value,
    pub quick: bool,
    pub command: String,
    pub kernel: Option<(super::kernel::Params, Vec<Measure>)>,
    pub kernel_skipped: Option<String>,
    pub control: Option<(Vec<ControlResult>, Vec<Incremental>)>,
    pub traffic: Option<super::traffic::TrafficReport>,
    pub traffic_skipped: Option<String>,
    pub kube: Option<super::kube::KubeResult>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

fn find<'a>(
    ms: &'a [Measure],
    policy: usize,
    ipcache: usize,
    program: &str,
    case: Case,
    keys: Keys,
) -> Option<&'a Measure> {
    ms.iter().find(|m| {
        m.size.policy == policy
            && m.size.ipcache == ipcache
            && m.program == program
            && m.case == case
            && m.keys == keys
            && !m.v6
            && m.policies == Policies::NetworkPolicy
    })
}

impl Report {
    pub fn json(&self) -> Value {
        json!({
            "machine": self.machine,
            "quick": self.quick,
            "command": self.command,
            "seconds": super::round3(self.seconds),
            "headlines": self.headlines(),
            "kernel": self.kernel.as_ref().map(|(p, ms)| json!({
                "method": "BPF_PROG_TEST_RUN; repeated keys: one packet run `repeat` times in the kernel; random keys: `random_flows` different packets, one run each",
                "repeat": p.repeat,
                "trials": p.trials,
                "random_flows": p.random_flows,
                "reference_floors": FLOOR_DOC,
                "floor_targets": floor_verdicts(p, ms).iter().map(FloorVerdict::json).collect::<Vec<_>>(),
                "results": ms.iter().map(Measure::json).collect::<Vec<_>>(),
            })),
            "kernel_skipped": self.kernel_skipped,
            "control_plane": self.control.as_ref().map(|(cs, inc)| json!({
                "sizes": cs.iter().map(ControlResult::json).collect::<Vec<_>>(),
                "incremental": inc.iter().map(Incremental::json).collect::<Vec<_>>(),
            })),
            "traffic": self.traffic.as_ref().map(super::traffic::TrafficReport::json),
            "traffic_skipped": self.traffic_skipped,
            "kubernetes_mode": self.kube.as_ref().map(super::kube::KubeResult::json),
            "notes": self.notes,
        })
    }

    /// The figures to read first: ratios to the empty program at the smallest and largest
    /// sizes, and the control plane at the largest cluster.
    pub fn headlines(&self) -> Vec<String> {
        let mut h = Vec::new();
        if let Some((p, ms)) = &self.kernel {
            let small = p.sizes.first().copied();
            let large = p
                .sizes
                .iter()
                .max_by_key(|s| (s.policy, s.ipcache))
                .copied();
            if let Some(empty) = small.and_then(|s| {
                find(
                    ms,
                    s.policy,
                    s.ipcache,
                    PROG_EMPTY,
                    Case::Empty,
                    Keys::Repeated,
                )
            }) {
                h.push(format!(
                    "empty TC program (floor): {:.0} ns per packet",
                    empty.ns.median
                ));
            }
            for case in [
                Case::Established,
                Case::NewAllowed,
                Case::NewDenied,
                Case::AuditDrop,
            ] {
                let mut parts = Vec::new();
                for (label, size) in [("small", small), ("large", large)] {
                    let Some(s) = size else { continue };
                    for keys in [Keys::Repeated, Keys::Random] {
                        if label == "small" && keys == Keys::Random {
                            continue;
                        }
                        if let Some(m) = find(ms, s.policy, s.ipcache, PROG_TO_POD, case, keys) {
                            parts.push(format!(
                                "{:.2}x ({:.0} ns) at {} rules/{} ipcache, {} keys",
                                m.ratio.median,
                                m.ns.median,
                                s.policy,
                                s.ipcache,
                                keys.name()
                            ));
                        }
                    }
                }
                if !parts.is_empty() {
                    h.push(format!(
                        "cns_to_pod {} vs empty: {}",
                        case.name(),
                        parts.join("; ")
                    ));
                }
            }
            if let Some(s) = small
                && let Some(e) = find(
                    ms,
                    s.policy,
                    s.ipcache,
                    XDP_EMPTY,
                    Case::Empty,
                    Keys::Repeated,
                )
            {
                h.push(format!(
                    "empty XDP program (floor, loaded by the bench): {:.0} ns per packet ({:.2}x the empty TC program)",
                    e.ns.median,
                    e.vs_tc.map_or(0.0, |v| v.median)
                ));
            }
            for case in Case::XDP {
                let mut parts = Vec::new();
                for s in [small, large].into_iter().flatten() {
                    if let Some(m) = find(ms, s.policy, s.ipcache, PROG_XDP, case, Keys::Repeated) {
                        parts.push(format!(
                            "{:.0} ns = {:.2}x empty XDP{} at {} rules/{} ipcache",
                            m.ns.median,
                            m.ratio.median,
                            m.vs_tc.map_or(String::new(), |v| format!(
                                ", {:.2}x cns_to_pod",
                                v.median
                            )),
                            s.policy,
                            s.ipcache
                        ));
                    }
                    if small.map(|x| (x.policy, x.ipcache)) == large.map(|x| (x.policy, x.ipcache))
                    {
                        break;
                    }
                }
                if !parts.is_empty() {
                    h.push(format!("cns_xdp {}: {}", case.name(), parts.join("; ")));
                }
            }
        }
        if let Some((p, ms)) = &self.kernel {
            h.extend(floor_verdicts(p, ms).iter().map(FloorVerdict::headline));
            h.extend(ipv6_headline(p, ms));
            h.extend(tiered_headline(p, ms));
            h.extend(dry_run_headline(p, ms));
        }
        if let Some(f) = self.traffic.as_ref().and_then(|t| t.flood.as_ref()) {
            flood_headlines(f, &mut h);
        }
        if let Some(t) = &self.traffic {
            for r in t.results.iter().skip(1) {
                h.push(format!(
                    "{} vs no enforcement: request/response {}; new connections/s {:.3}x; 1-stream throughput {:.3}x; denied UDP flood sent {:.3}x",
                    r.variant,
                    Placement::ALL
                        .iter()
                        .map(|&p| rr_ratios(r, p))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.ratio["new_connections_per_s"].as_f64().unwrap_or(0.0),
                    r.ratio["throughput_1_stream"].as_f64().unwrap_or(0.0),
                    r.ratio["denied_flood_pps"].as_f64().unwrap_or(0.0),
                ));
            }
        }
        if let Some((cs, inc)) = &self.control {
            if let Some(c) = cs.iter().max_by_key(|c| (c.pods, c.policies)) {
                h.push(format!(
                    "control plane (the agent's own sync), {} pods x {} policies ({}): cold start {:.0} ms (read {:.0} ms, compile {:.0} ms, plan {:.0} ms), peak RSS {:.0} MiB, heap held {:.0} MiB",
                    c.pods, c.policies, c.mix, c.cold_start_ms.median, c.parse_ms.median, c.compile_ms.median, c.encode_diff_ms.median, c.peak_rss_mib, c.heap_mib
                ));
            }
            for i in inc
                .iter()
                .filter(|i| i.pods == cs.iter().map(|c| c.pods).max().unwrap_or(0))
            {
                h.push(format!(
                    "{} at {} pods x {} policies ({}): p50 {:.1} ms, p99 {:.1} ms (source event to maps updated, {} map ops)",
                    i.change, i.pods, i.policies, i.mix, i.total_p50_ms, i.total_p99_ms, i.ops
                ));
            }
        }
        h.extend(self.kube.as_ref().map(super::kube::KubeResult::headline));
        h
    }

    /// The charts of this report, drawn from [`Report::json`] (files beside `bench.md`).
    pub fn charts(&self) -> Vec<Chart> {
        charts::render(&self.json())
    }

    pub fn markdown(&self) -> String {
        let charts = self.charts();
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# cns benchmarks\n");
        let _ = writeln!(
            s,
            "Produced by `{}` in {:.0} s{}.\n",
            self.command,
            self.seconds,
            if self.quick {
                " (quick mode: a reduced set)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "| machine | |\n|---|---|");
        let _ = writeln!(
            s,
            "| CPU | {} x {} |",
            m["cpus"],
            m["cpu"].as_str().unwrap_or("?")
        );
        let _ = writeln!(s, "| memory | {} GiB |", m["memory_gib"]);
        let _ = writeln!(
            s,
            "| kernel | {} (BPF JIT {}) |",
            m["kernel"].as_str().unwrap_or("?"),
            m["jit_enabled"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            s,
            "| commit | {}{} |",
            m["commit"].as_str().unwrap_or("?"),
            if m["tree_dirty"].as_bool() == Some(true) {
                " (with uncommitted changes)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "| date | {} |\n", m["date"].as_str().unwrap_or("?"));

        let _ = writeln!(s, "## Headlines\n");
        for h in self.headlines() {
            let _ = writeln!(s, "- {h}");
        }
        let _ = writeln!(s);

        let _ = writeln!(
            s,
            "## 1. Per-packet cost in the kernel (`BPF_PROG_TEST_RUN`)\n"
        );
        if let Some(why) = &self.kernel_skipped {
            let _ = writeln!(s, "Skipped: {why}\n");
        }
        if let Some((p, ms)) = &self.kernel {
            let _ = writeln!(
                s,
                "Each cell: median ns per packet over {} trials, (min-max), and the median of the per-trial \
                 ratio to the empty TC program measured in the same trial. Repeated keys: one 64-byte TCP \
                 packet run {} times in the kernel (cache-hot lookups). Random keys: {} different flows spread \
                 over the maps, one run each (cold lookups; each run also carries the kernel's per-run timer \
                 overhead, as the empty program measured the same way does). New-flow cases run with \
                 `CONFIG_NO_CONNTRACK_CREATE` so that every repeat is a new flow. Per-namespace counting \
                 and the event rate limiter (agent defaults: 100/s, burst 200) are on. The pod under test \
                 is one of 100 local endpoints; policy entries are single-port TCP rules spread over them \
                 and over the remote identities.\n",
                p.trials, p.repeat, p.random_flows
            );
            charts::embed(&mut s, &charts, Section::Kernel);
            for keys in [Keys::Repeated, Keys::Random] {
                let _ = writeln!(s, "### {} keys\n", keys.name());
                let _ = writeln!(
                    s,
                    "| policy entries | ipcache entries | empty | program | established | new allowed | new denied | audit would-be drop |"
                );
                let _ = writeln!(s, "|---:|---:|---:|---|---:|---:|---:|---:|");
                for size in &p.sizes {
                    let empty = find(ms, size.policy, size.ipcache, PROG_EMPTY, Case::Empty, keys);
                    for program in [PROG_TO_POD, PROG_FROM_POD] {
                        let mut row = format!(
                            "| {} | {} | {} | `{program}` |",
                            size.policy,
                            size.ipcache,
                            empty.map_or("-".into(), |e| format!(
                                "{:.0} ({:.0}-{:.0})",
                                e.ns.median, e.ns.min, e.ns.max
                            ))
                        );
                        for case in [
                            Case::Established,
                            Case::NewAllowed,
                            Case::NewDenied,
                            Case::AuditDrop,
                        ] {
                            let cell = find(ms, size.policy, size.ipcache, program, case, keys)
                                .map_or("-".into(), |m| {
                                    format!(
                                        "{:.0} ({:.0}-{:.0}) **{:.2}x**",
                                        m.ns.median, m.ns.min, m.ns.max, m.ratio.median
                                    )
                                });
                            let _ = write!(row, " {cell} |");
                        }
                        let _ = writeln!(s, "{row}");
                    }
                }
                let _ = writeln!(s);
            }
            floor_tables(&mut s, p, ms);
            xdp_tables(&mut s, p, ms);
            ipv6_table(&mut s, p, ms);
            tiered_table(&mut s, p, ms);
            dry_run_table(&mut s, p, ms);
        }

        let _ = writeln!(s, "## 2 and 3. Traffic through the virtual node\n");
        if let Some(why) = &self.traffic_skipped {
            let _ = writeln!(s, "Skipped: {why}\n");
        }
        if let Some(t) = self.traffic.as_ref().filter(|t| !t.results.is_empty()) {
            traffic_table(&mut s, t, &charts);
        }
        if let Some(f) = self.traffic.as_ref().and_then(|t| t.flood.as_ref()) {
            flood_table(&mut s, f, &charts);
        }

        let _ = writeln!(s, "## 4. Control plane\n");
        if let Some((cs, inc)) = &self.control {
            let _ = writeln!(
                s,
                "A synthetic cluster (generated YAML, as the agent reads it from its manifests directory) per \
                 row, each in a child process so that peak memory (VmHWM) is its own. The node under test has \
                 about 100 of the pods (1k pods: 10 nodes; otherwise pods/100 nodes). Times: median (min-max) \
                 over the trials. cold start = the real agent's first sync (`Agent::sync`, in-process, on real \
                 BPF maps), in phases: read = its manifest source reading the directory cold (every file \
                 read, YAML, validation); compile = the compiler's first update; plan = the planner \
                 encoding the desired state and diffing it against the empty maps; write = writing the \
                 plan to the maps. Peak RSS includes the transient parse; heap held is what the agent \
                 holds on the heap after the cold sync (counted by `cns-bench`'s allocator).\n"
            );
            let _ = writeln!(
                s,
                "| pods | policies | mix | identities | local endpoints | ipcache | policy entries | cidr entries | cold start ms | read ms | compile ms | plan ms | write ms | peak RSS MiB | RSS after MiB | heap held MiB |"
            );
            let _ = writeln!(
                s,
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for c in cs {
                let f = |x: &super::Summary| format!("{:.1} ({:.1}-{:.1})", x.median, x.min, x.max);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
                    c.pods,
                    c.policies,
                    c.mix,
                    c.identities,
                    c.endpoints,
                    c.ipcache,
                    c.policy_entries,
                    c.cidr_entries,
                    f(&c.cold_start_ms),
                    f(&c.parse_ms),
                    f(&c.compile_ms),
                    f(&c.encode_diff_ms),
                    c.apply_ms.map_or("-".into(), |a| format!("{a:.1}")),
                    c.peak_rss_mib,
                    c.rss_after_mib,
                    c.heap_mib
                );
            }
            let _ = writeln!(s);
            if !inc.is_empty() {
                let _ = writeln!(
                    s,
                    "### Single changes\n\nOne object changed in its own file, then the real agent's sync \
                     (`Agent::sync`, in-process, on real BPF maps): the manifest source (stat every file, read \
                     and parse the changed one), the compiler, the planner (encode and diff), the writer, then \
                     attaching, names and metrics (`after`). Total: from the file's write to the sync's \
                     return (the file watcher's debounce delay not included). Alternates between two states \
                     so that every iteration is a real change. encoded / diffed: the work the agent reports \
                     (`status`'s `last_sync_work`).\n"
                );
                charts::embed(&mut s, &charts, Section::Control);
                let _ = writeln!(
                    s,
                    "| change | pods | policies | mix | iterations | map ops | encoded | diffed | read p50 ms | compile p50 ms | plan p50 ms | write p50 ms | after p50 ms | total p50 ms | total p99 ms |"
                );
                let _ = writeln!(
                    s,
                    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                );
                for i in inc {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
                        i.change,
                        i.pods,
                        i.policies,
                        i.mix,
                        i.iterations,
                        i.ops,
                        i.encoded,
                        i.diffed,
                        i.parse_p50_ms,
                        i.compile_p50_ms,
                        i.encode_diff_p50_ms,
                        i.apply_p50_ms,
                        i.names_p50_ms,
                        i.total_p50_ms,
                        i.total_p99_ms
                    );
                }
                let _ = writeln!(s);
            }
        } else {
            let _ = writeln!(s, "Not run.\n");
        }
        if let Some(k) = &self.kube {
            let _ = writeln!(s, "{}", k.markdown());
        }
        let _ = writeln!(s, "## Not measured yet\n");
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }
}

/// What the reference floors do (`cns-ebpf/src/floor.rs`), for the JSON and the tables.
const FLOOR_DOC: &str = "Reference floors (cns-ebpf/src/floor.rs, the object cns-floor, never loaded by the agent): programs built with the same toolchain that do only the irreducible work of a path, with maps of cns's types and sizes, reading headers and writing keys a word at a time as cns does. floor_established: parse Ethernet + IPv4 + L4 ports, one conntrack LRU-hash lookup that hits, one per-CPU counter add, TC_ACT_OK. floor_new (floor_new_egress out of the pod): parse, conntrack miss, IP-cache hash lookup of the remote address, one policy hash lookup (cns's PolicyKey; the endpoint id a constant), one per-CPU counter add, verdict. floor_xdp_drop: XDP, parse, one hash lookup of the source address, XDP_DROP. Each runs right after the cns path it is the floor of, on the same packets, in every trial; ratios are per trial, then the median.";

/// One path with a target against its reference floor (issue 17), at every size measured.
struct FloorVerdict {
    program: &'static str,
    case: Case,
    floor: &'static str,
    target: f64,
    /// (policy entries, ipcache entries, median ratio to the floor, repeated keys).
    ratios: Vec<(usize, usize, f64)>,
}

impl FloorVerdict {
    fn met(&self) -> bool {
        self.ratios.iter().all(|r| r.2 <= self.target)
    }

    fn verdict(&self) -> &'static str {
        if self.met() { "met" } else { "not met" }
    }

    fn json(&self) -> Value {
        json!({
            "program": self.program,
            "case": self.case.name(),
            "floor": self.floor,
            "keys": Keys::Repeated.name(),
            "target_ratio": self.target,
            "met": self.met(),
            "ratios": self.ratios.iter().map(|&(policy, ipcache, r)| json!({
                "policy_entries": policy,
                "ipcache_entries": ipcache,
                "ratio_to_reference_floor": super::round3(r),
            })).collect::<Vec<_>>(),
        })
    }

    /// The smallest and largest sizes' ratios, and their range over all sizes when more.
    fn headline(&self) -> String {
        let at = |(policy, ipcache, r): &(usize, usize, f64)| {
            format!("{r:.2}x at {policy} rules/{ipcache} ipcache")
        };
        let mut parts: Vec<String> = self.ratios.first().map(at).into_iter().collect();
        if self.ratios.len() > 1 {
            parts.extend(self.ratios.last().map(at));
        }
        if self.ratios.len() > 2 {
            let (min, max) = self
                .ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| {
                    (lo.min(r.2), hi.max(r.2))
                });
            parts.push(format!(
                "{min:.2}-{max:.2}x over the {} sizes",
                self.ratios.len()
            ));
        }
        format!(
            "{} {} vs {}: {} (repeated keys; target <= {:.2}x: {})",
            self.program,
            self.case.name(),
            self.floor,
            parts.join(", "),
            self.target,
            self.verdict()
        )
    }
}

/// The paths the issue sets a target for against their floors, with repeated keys (the
/// cache-hot case the targets were set on) at every size.
fn floor_verdicts(p: &super::kernel::Params, ms: &[Measure]) -> Vec<FloorVerdict> {
    let paths = [
        (PROG_TO_POD, Case::Established),
        (PROG_FROM_POD, Case::Established),
        (PROG_TO_POD, Case::NewAllowed),
        (PROG_TO_POD, Case::NewDenied),
        (PROG_FROM_POD, Case::NewAllowed),
        (PROG_FROM_POD, Case::NewDenied),
        (PROG_XDP, Case::DeniedFlood),
    ];
    paths
        .into_iter()
        .filter_map(|(program, case)| {
            let ratios: Vec<_> = p
                .sizes
                .iter()
                .filter_map(|size| {
                    let m = find(ms, size.policy, size.ipcache, program, case, Keys::Repeated)?;
                    Some((size.policy, size.ipcache, m.vs_floor?.1.median))
                })
                .collect();
            if ratios.is_empty() {
                return None;
            }
            Some(FloorVerdict {
                program,
                case,
                floor: floor_of(program, case)?,
                target: floor_target(program, case)?,
                ratios,
            })
        })
        .collect()
}

/// Every path with a reference floor against it, beside its ratio to the empty program.
fn floor_tables(s: &mut String, p: &super::kernel::Params, ms: &[Measure]) {
    let _ = writeln!(
        s,
        "### Against the reference floors (issue 17)\n\n{FLOOR_DOC} Each row: the cns path's median \
         ns per packet, its floor's on the same packets, in bold the median per-trial ratio of the \
         path to its floor, then both programs' ratios to the empty program of their kind \
         (`cns_empty`, or the empty XDP program). Target: the issue's bound on the ratio to the \
         floor (repeated keys).\n"
    );
    for keys in [Keys::Repeated, Keys::Random] {
        let _ = writeln!(s, "#### {} keys\n", keys.name());
        let _ = writeln!(
            s,
            "| policy entries | ipcache entries | path | ns | floor | floor ns | x floor | x empty | floor x empty | target |"
        );
        let _ = writeln!(s, "|---:|---:|---|---:|---|---:|---:|---:|---:|---|");
        for size in &p.sizes {
            for m in ms.iter().filter(|m| {
                m.size.policy == size.policy
                    && m.size.ipcache == size.ipcache
                    && m.keys == keys
                    && m.vs_floor.is_some()
            }) {
                let Some((floor, vs)) = m.vs_floor else {
                    continue;
                };
                let f = ms.iter().find(|f| {
                    f.size.policy == size.policy
                        && f.size.ipcache == size.ipcache
                        && f.keys == keys
                        && f.program == floor
                        && f.case == m.case
                        && f.of == Some(m.program)
                });
                let target = match (floor_target(m.program, m.case), keys) {
                    (Some(t), Keys::Repeated) => format!(
                        "<= {t:.2}x: {}",
                        if vs.median <= t { "met" } else { "not met" }
                    ),
                    (Some(t), Keys::Random) => format!("(<= {t:.2}x)"),
                    (None, _) => "-".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | `{}` {} | {:.0} | `{floor}` | {} | **{:.2}x** | {:.2}x | {} | {target} |",
                    size.policy,
                    size.ipcache,
                    m.program,
                    m.case.name(),
                    m.ns.median,
                    f.map_or("-".into(), |f| format!("{:.0}", f.ns.median)),
                    vs.median,
                    m.ratio.median,
                    f.map_or("-".into(), |f| format!("{:.2}x", f.ratio.median)),
                );
            }
        }
        let _ = writeln!(s);
    }
}

/// The IPv6 rows (repeated keys) and their ratio to the same IPv4 row, per trial.
fn ipv6_rows<'a>(
    ms: &'a [Measure],
    size: &super::kernel::Size,
    keys: Keys,
) -> impl Iterator<Item = &'a Measure> + 'a {
    let (policy, ipcache) = (size.policy, size.ipcache);
    ms.iter().filter(move |m| {
        m.v6 && m.size.policy == policy && m.size.ipcache == ipcache && m.keys == keys
    })
}

/// "IPv6 vs IPv4 (target <= 1.3x): ..." at the largest size, repeated keys.
fn ipv6_headline(p: &super::kernel::Params, ms: &[Measure]) -> Option<String> {
    let size = p.sizes.iter().max_by_key(|s| (s.policy, s.ipcache))?;
    let target = super::kernel::IPV6_TARGET;
    let parts: Vec<String> = ipv6_rows(ms, size, Keys::Repeated)
        .filter_map(|m| {
            let r = m.vs_v4?.median;
            Some(format!(
                "{} {} {r:.2}x ({})",
                m.program,
                m.case.name(),
                if r <= target { "met" } else { "not met" }
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "IPv6 against IPv4 on the same path, {} rules/{} ipcache entries per family (target <= {target:.1}x): {}",
            size.policy,
            size.ipcache,
            parts.join(", ")
        )
    })
}

/// Every IPv6 row beside the same IPv4 path.
fn ipv6_table(s: &mut String, p: &super::kernel::Params, ms: &[Measure]) {
    let _ = writeln!(
        s,
        "### IPv6 against IPv4 (issue 13)\n\nThe same endpoint, rules and remotes with IPv6 \
         addresses (the IP cache holds every remote in both families), IPv6 packets through the \
         same programs, interleaved with the IPv4 ones in every trial. Bold: the median per-trial \
         ratio to the same program and case on IPv4 (target <= {:.1}x).\n",
        super::kernel::IPV6_TARGET
    );
    beside_table(s, p, ms, ["IPv6 ns", "IPv4 ns", "x IPv4"], |m| {
        m.v6.then_some(m.vs_v4).flatten()
    });
}

/// Per size and keys, the rows `ratio` gives a ratio for (to the same path in its base
/// configuration: IPv4, NetworkPolicy only), beside that path: `columns` name this row's ns,
/// the base's ns and the ratio.
fn beside_table(
    s: &mut String,
    p: &super::kernel::Params,
    ms: &[Measure],
    columns: [&str; 3],
    ratio: impl Fn(&Measure) -> Option<super::Summary>,
) {
    beside_table_with(s, p, ms, columns, ratio, None);
}

/// [`beside_table`], with a last column `verdict` for the repeated keys' rows when given
/// (against a target: the targets are on repeated keys).
fn beside_table_with(
    s: &mut String,
    p: &super::kernel::Params,
    ms: &[Measure],
    columns: [&str; 3],
    ratio: impl Fn(&Measure) -> Option<super::Summary>,
    verdict: Option<&dyn Fn(Case, f64) -> &'static str>,
) {
    let [this, base, x] = columns;
    for keys in [Keys::Repeated, Keys::Random] {
        let with_verdict = verdict.filter(|_| keys == Keys::Repeated);
        let _ = writeln!(s, "#### {} keys\n", keys.name());
        let _ = writeln!(
            s,
            "| policy entries | ipcache entries | path | {this} | {base} | {x} |{}",
            if with_verdict.is_some() {
                " verdict |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "|---:|---:|---|---:|---:|---:|{}",
            if with_verdict.is_some() { "---|" } else { "" }
        );
        for size in &p.sizes {
            let rows = ms.iter().filter(|m| {
                m.size.policy == size.policy && m.size.ipcache == size.ipcache && m.keys == keys
            });
            for (m, r) in rows.filter_map(|m| Some((m, ratio(m)?))) {
                let b = find(ms, size.policy, size.ipcache, m.program, m.case, keys);
                let _ = writeln!(
                    s,
                    "| {} | {} | `{}` {} | {:.0} | {} | **{:.2}x** |{}",
                    size.policy,
                    size.ipcache,
                    m.program,
                    m.case.name(),
                    m.ns.median,
                    b.map_or("-".into(), |v| format!("{:.0}", v.ns.median)),
                    r.median,
                    with_verdict.map_or(String::new(), |v| format!(" {} |", v(m.case, r.median))),
                );
            }
        }
        let _ = writeln!(s);
    }
}

/// The rows of the datapath filled from `policies` (repeated or random keys).
fn rows_on<'a>(
    ms: &'a [Measure],
    policies: Policies,
    size: &super::kernel::Size,
    keys: Keys,
) -> impl Iterator<Item = &'a Measure> + 'a {
    let (policy, ipcache) = (size.policy, size.ipcache);
    ms.iter().filter(move |m| {
        m.policies == policies
            && m.size.policy == policy
            && m.size.ipcache == ipcache
            && m.keys == keys
    })
}

/// "With ClusterNetworkPolicies vs without (target <= 1.2x for new flows): ..." at the
/// largest size, repeated keys.
fn tiered_headline(p: &super::kernel::Params, ms: &[Measure]) -> Option<String> {
    let size = p.sizes.iter().max_by_key(|s| (s.policy, s.ipcache))?;
    let target = super::kernel::TIERED_TARGET;
    let parts: Vec<String> = rows_on(ms, Policies::Cluster, size, Keys::Repeated)
        .filter_map(|m| {
            let r = m.vs_np?.median;
            let verdict = if m.case == Case::Established {
                "unchanged path"
            } else if r <= target {
                "met"
            } else {
                "not met"
            };
            Some(format!(
                "{} {} {r:.2}x ({verdict})",
                m.program,
                m.case.name()
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "ClusterNetworkPolicies (both tiers) against NetworkPolicy only on the same packets, {} rules/{} ipcache entries (new flows target <= {target:.1}x): {}",
            size.policy,
            size.ipcache,
            parts.join(", ")
        )
    })
}

/// Every tiered row beside the same path without ClusterNetworkPolicies.
fn tiered_table(s: &mut String, p: &super::kernel::Params, ms: &[Measure]) {
    let _ = writeln!(
        s,
        "### ClusterNetworkPolicy against NetworkPolicy only (issue 14)\n\nA second datapath with \
         the same NetworkPolicy entries, whose pod under test ClusterNetworkPolicies of both tiers \
         select in both directions (`kernel::desired_tiered`: an entry per remote namespace, \
         three address sets, Admin Pass/Deny and Baseline Deny rules; every verdict stays \
         NetworkPolicy's). As the compiler does, a remote identity with entries of its own \
         holds its namespace's and address set's too (one lookup); a remote no rule names by \
         identity takes the identity, namespace and address-set lookups (new denied flows from \
         remotes without an allow: all of them at 10 rules, half at 100k). The same packets run through both datapaths, \
         interleaved, in every trial. Bold: the median per-trial ratio to the same program and \
         case without ClusterNetworkPolicies (target for new flows <= {:.1}x; established flows \
         take the same conntrack path).\n",
        super::kernel::TIERED_TARGET
    );
    beside_table(s, p, ms, ["with CNPs ns", "without ns", "x without"], |m| {
        (m.policies == Policies::Cluster)
            .then_some(m.vs_np)
            .flatten()
    });
}

/// A dry-run row's verdict: established flows take the conntrack path, a flow the dry-run
/// policy would drop does more by design (a counter, an event); new flows it leaves as they
/// are have the target.
fn dry_run_verdict(case: Case, ratio: f64) -> &'static str {
    match case {
        Case::Established => "unchanged path",
        Case::WouldDrop => "counted and reported",
        _ => met(ratio <= super::kernel::DRY_RUN_TARGET),
    }
}

/// "With dry-run policies vs without (target <= 1.1x for new flows): ..." at each size,
/// repeated keys.
fn dry_run_headline(p: &super::kernel::Params, ms: &[Measure]) -> Option<String> {
    let target = super::kernel::DRY_RUN_TARGET;
    let sizes: Vec<String> = p
        .sizes
        .iter()
        .filter_map(|size| {
            let parts: Vec<String> = rows_on(ms, Policies::DryRun, size, Keys::Repeated)
                .filter_map(|m| {
                    let r = m.vs_np?.median;
                    Some(format!(
                        "{} {} {r:.2}x ({})",
                        m.program,
                        m.case.name(),
                        dry_run_verdict(m.case, r)
                    ))
                })
                .collect();
            (!parts.is_empty()).then(|| {
                format!(
                    "at {} rules/{} ipcache entries: {}",
                    size.policy,
                    size.ipcache,
                    parts.join(", ")
                )
            })
        })
        .collect();
    (!sizes.is_empty()).then(|| {
        format!(
            "Dry-run policies (a dry-run Admin ClusterNetworkPolicy that would drop half of the \
             pod's allowed remotes) against none on the same packets (new flows target <= \
             {target:.1}x): {}",
            sizes.join("; ")
        )
    })
}

/// Every dry-run row beside the same path without dry-run policies.
fn dry_run_table(s: &mut String, p: &super::kernel::Params, ms: &[Measure]) {
    let _ = writeln!(
        s,
        "### Dry-run policies (issue 15)\n\nA third datapath with the same NetworkPolicy entries, \
         whose pod under test a dry-run policy also selects (`kernel::desired_dry_run`: the Admin \
         ClusterNetworkPolicy `deny-legacy`, annotated `cns.io/policy-audit-mode: \"true\"`, \
         would deny TCP 1024 from and to every other remote the NetworkPolicy rules allow; \
         enforcement is unchanged, and TC resolves both views of each entry). The same packets \
         run through both datapaths, interleaved, in every trial. \"{}\": new allowed flows \
         from the remotes the dry-run policy would drop (on this datapath each one counts a \
         dry-run counter and emits an audit event, within the event rate limit). New allowed's \
         random keys are the plain row's flows: where every rule of the pod is on port 1024 \
         (policy entries <= 4 x ipcache entries) about half of them would be dropped too. Bold: \
         the median per-trial ratio to the same program and case without dry-run policies \
         (target for new flows the dry-run policy leaves as they are <= {:.1}x; established \
         flows take the same conntrack path).\n",
        Case::WouldDrop.name(),
        super::kernel::DRY_RUN_TARGET
    );
    beside_table_with(
        s,
        p,
        ms,
        ["with dry-run ns", "without ns", "x without"],
        |m| {
            (m.policies == Policies::DryRun)
                .then_some(m.vs_np)
                .flatten()
        },
        Some(&dry_run_verdict),
    );
}

fn cell(m: Option<&Measure>, tc: &str) -> String {
    m.map_or("-".into(), |m| {
        let mut c = format!(
            "{:.0} ({:.0}-{:.0}) **{:.2}x**",
            m.ns.median, m.ns.min, m.ns.max, m.ratio.median
        );
        if let Some(v) = m.vs_tc {
            let _ = write!(c, " / {:.2}x {tc}", v.median);
        }
        c
    })
}

/// `cns_xdp` against the empty XDP program and against `cns_to_pod` on the same packets.
fn xdp_tables(s: &mut String, p: &super::kernel::Params, ms: &[Measure]) {
    let _ = writeln!(
        s,
        "### XDP: `cns_xdp` against `cns_to_pod`\n\n\
         `cns_xdp` (the uplink's early filter) on the same packets as `cns_to_pod`, interleaved with \
         it in the same trials. Bold: the median per-trial ratio to the empty XDP program; after the \
         slash, the median per-trial ratio to `cns_to_pod` on the same packet (below 1: XDP's \
         program is cheaper). The empty XDP program is loaded by the bench itself (`r0 = XDP_PASS; \
         exit`, what an empty `#[xdp]` function compiles to; cns-ebpf has no empty XDP program); \
         its cell compares it with the empty TC program `cns_empty`. \"Not for a local pod\": a \
         packet between two remote pods, which XDP passes after one `CNS_LOCAL_IPS` lookup (TC on a \
         pod's veth never sees it). This is the program's own cost: what XDP saves by dropping \
         before the skb exists is in section 3's flood from outside the node.\n"
    );
    for keys in [Keys::Repeated, Keys::Random] {
        let _ = writeln!(s, "#### {} keys\n", keys.name());
        let _ = writeln!(
            s,
            "| policy entries | ipcache entries | empty XDP | established | new allowed | new denied | denied flood (deny cache; after the slash: vs cns_to_pod new denied) | audit would-be drop | not for a local pod |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for size in &p.sizes {
            let f = |program: &str, case: Case| {
                find(ms, size.policy, size.ipcache, program, case, keys)
            };
            let empty = f(XDP_EMPTY, Case::Empty).map_or("-".into(), |e| {
                format!(
                    "{:.0} ({:.0}-{:.0}) / {:.2}x empty TC",
                    e.ns.median,
                    e.ns.min,
                    e.ns.max,
                    e.vs_tc.map_or(0.0, |v| v.median)
                )
            });
            let mut row = format!("| {} | {} | {empty} |", size.policy, size.ipcache);
            for case in Case::XDP {
                let _ = write!(row, " {} |", cell(f(PROG_XDP, case), "TC"));
            }
            let _ = writeln!(s, "{row}");
        }
        let _ = writeln!(s);
    }
}

fn flood_headlines(f: &FloodReport, h: &mut Vec<String>) {
    let goal = |x: Option<f64>, want: f64| match x {
        Some(x) if x >= want => "met",
        Some(_) => "not met",
        None => "not measured",
    };
    let g = Generator::LiveFrames;
    if let (Some(xdp), Some(tc)) = (f.find(FloodVariant::Xdp, g), f.find(FloodVariant::Tc, g)) {
        let ipt = f.find(FloodVariant::Iptables, g);
        let floor = f.find(FloodVariant::XdpDropFloor, g);
        let ns = |r: Option<&super::flood::FloodResult>| {
            r.and_then(|r| r.loop_ns).map_or(0.0, |l| l.median)
        };
        h.push(format!(
            "denied UDP flood from outside the node (XDP live frames; generator and node on one CPU): {:.0} ns per frame with cns_xdp on the uplink vs {:.0} ns with TC on the pod's veth, {:.0} ns with iptables+ipset, {:.0} ns with a bare XDP_DROP: one CPU drops {:.2}x as many packets with XDP as with TC (goal >= 3x: {}) and {} as with iptables (goal >= 6x: {}); above the bare XDP_DROP (the generator's share and the cheapest possible drop taken out), TC costs {:.2}x what XDP does",
            ns(Some(xdp)),
            ns(Some(tc)),
            ns(ipt),
            ns(floor),
            xdp.loop_gain_vs_tc.unwrap_or(0.0),
            match (
                goal(xdp.loop_gain_vs_tc, 3.0),
                goal(xdp.above_floor_gain_vs_tc, 3.0)
            ) {
                ("not met", "met") => "borderline: not with the generator's share in, met above the floor",
                (with, _) => with,
            },
            xdp.loop_gain_vs_iptables
                .map_or("-".into(), |r| format!("{r:.2}x")),
            goal(xdp.loop_gain_vs_iptables, 6.0),
            xdp.above_floor_gain_vs_tc.unwrap_or(0.0),
        ));
        h.push(format!(
            "the same flood, the node's softirq CPU per dropped packet (tick-sampled): XDP {:.0} ns, TC {:.0} ns ({:.2}x XDP's){}; wall-clock rates on this shared machine: XDP {:.0} kpps, TC {:.0} kpps",
            xdp.softirq_ns.median,
            tc.softirq_ns.median,
            xdp.cpu_gain_vs_tc.unwrap_or(0.0),
            ipt.map_or(String::new(), |i| format!(
                ", iptables+ipset {:.0} ns ({:.2}x XDP's)",
                i.softirq_ns.median,
                xdp.cpu_gain_vs_iptables.unwrap_or(0.0)
            )),
            xdp.dropped_kpps.median,
            tc.dropped_kpps.median,
        ));
    }
    let g6 = Generator::LiveFrames6;
    if let (Some(xdp6), Some(xdp)) = (
        f.find(FloodVariant::Xdp, g6),
        f.find(FloodVariant::Xdp, Generator::LiveFrames),
    ) {
        let ns = |r: &super::flood::FloodResult| r.loop_ns.map_or(0.0, |l| l.median);
        h.push(format!(
            "the same flood over IPv6 (live frames): cns_xdp {:.0} ns per frame ({:.2}x IPv4's {:.0} ns; one CPU drops {:.2}x as many as with TC over IPv6)",
            ns(xdp6),
            ns(xdp6) / ns(xdp).max(1.0),
            ns(xdp),
            xdp6.loop_gain_vs_tc.unwrap_or(0.0),
        ));
    }
    let g = Generator::Sockets;
    if let (Some(xdp), Some(tc)) = (f.find(FloodVariant::Xdp, g), f.find(FloodVariant::Tc, g)) {
        h.push(format!(
            "the same flood from {} UDP sockets (sendmmsg; skbs before the uplink, so veth hands XDP an skb): XDP {:.0} kpps vs TC {:.0} kpps ({:.2}x), softirq per dropped packet XDP {:.0} ns vs TC {:.0} ns ({:.2}x XDP's)",
            f.socket_threads,
            xdp.dropped_kpps.median,
            tc.dropped_kpps.median,
            xdp.dropped_vs_tc.unwrap_or(0.0),
            xdp.softirq_ns.median,
            tc.softirq_ns.median,
            xdp.cpu_gain_vs_tc.unwrap_or(0.0),
        ));
    }
}

fn flood_table(s: &mut String, f: &FloodReport, charts: &[Chart]) {
    let _ = writeln!(
        s,
        "### 3. Denied UDP flood from outside the node: XDP vs TC vs iptables\n\n\
         64-byte UDP frames from the \"outside\" netns over the uplink veth (`{}`) to the isolated \
         server pod, on a port no policy allows. Variants interleaved over {} trials of {} s per \
         generator: cns with `--xdp-interfaces none` (`cns_to_pod` drops on the pod's veth, after \
         the node built an skb, routed and forwarded the packet); cns with the default \
         `--xdp-interfaces` (the agent attached `cns_xdp` to the uplink, {} mode); the \
         iptables+ipset baseline of section 2 ({} unrelated rules, conntrack first); no enforcement \
         (the pod receives the flood: \"dropped\" is its UDP NoPorts count); and the floor, a bare \
         `XDP_DROP` program on the uplink (\"dropped\" = packets the uplink received).\n\n\
         Generators: an XDP program run with `BPF_F_TEST_XDP_LIVE_FRAMES` on the outside veth that \
         writes each frame and returns `XDP_TX`, so the frames really cross the veth into the \
         uplink as XDP frames, as from a NIC (the uplink has GRO on so that it receives through \
         NAPI also without an XDP program); and {} UDP sockets with `sendmmsg` (64 per call), whose \
         packets are skbs before they reach the uplink (veth then hands XDP an skb to convert, not \
         a frame); and the live frames again over IPv6 (68-byte frames to the server's IPv6 address; \
         cns's variants and the floor only: the iptables baseline is IPv4's).\n\n\
         loop ns per frame (live frames only): the kernel's own time per frame in the generator's \
         test-run loop; the uplink's NAPI runs in the generator's softirq on the same CPU, so this \
         is generator + node per packet on one CPU, without the time the thread was scheduled out \
         (the most precise figure here; 1000/loop ns = Mpps one CPU sustains). above floor ns: \
         the loop time minus the bare `XDP_DROP` floor's in the same trial, i.e. what this way of \
         dropping costs beyond generating the frame and dropping it as early and cheaply as \
         possible (the generator's share taken out). softirq ns per dropped packet: softirq time \
         on all CPUs from /proc/stat over the run divided by the dropped packets, the node's \
         receive path alone (XDP, forwarding, TC, netfilter); the kernel samples it at each tick \
         (no IRQ time accounting here), so it is indicative only and reads near 0 for the floor. \
         kernel ns: softirq + system (the generator \
         too). **x TC**, **x iptables**: TC's (iptables') figure over this one, median of per-trial \
         ratios: how many times as many packets one CPU handles this way. sent / dropped kpps: per \
         second of wall-clock time, what the generator pushed and what the node counted where it \
         dropped (cns counters, the iptables DROP rule); on this shared 2-vCPU machine they depend \
         on how much CPU the generator thread got.\n",
        f.uplink, f.trials, f.secs, f.xdp_mode, f.unrelated_rules, f.socket_threads
    );
    charts::embed(s, charts, Section::Flood);
    let _ = writeln!(
        s,
        "| variant | generator | sent kpps | dropped kpps | loop ns per frame | x TC | x iptables | above floor ns | x TC | softirq ns per dropped | x TC | x iptables | kernel ns per dropped |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let sm = |x: &super::Summary| format!("{:.0} ({:.0}-{:.0})", x.median, x.min, x.max);
    let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("**{r:.2}x**"));
    for r in &f.results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.variant.name(),
            r.generator.name(),
            sm(&r.sent_kpps),
            sm(&r.dropped_kpps),
            r.loop_ns.as_ref().map_or("-".into(), sm),
            ratio(r.loop_gain_vs_tc),
            ratio(r.loop_gain_vs_iptables),
            r.above_floor_ns.as_ref().map_or("-".into(), sm),
            ratio(r.above_floor_gain_vs_tc),
            sm(&r.softirq_ns),
            ratio(r.cpu_gain_vs_tc),
            ratio(r.cpu_gain_vs_iptables),
            sm(&r.kernel_ns),
        );
    }
    for n in &f.notes {
        let _ = writeln!(s, "\n{n}");
    }
    let _ = writeln!(s);
    program_table(
        s,
        "The agent's programs on these frames, as the kernel timed them (`bpf_stats`: \
         `run_time_ns` / `run_cnt` around a second run of each generator, with statistics on, \
         after the timed one, which goes without them: they cost every BPF program run two \
         clock reads; median (min-max) over trials): \
         with XDP, `cns_xdp` drops the flood (from its second frame on the deny cache: \
         section 1's \"denied flood (deny cache)\", two lookups for UDP); with TC, `cns_xdp` is \
         not attached and `cns_to_pod` drops each datagram (section 1's \"new denied\").",
        "generator",
        f.results
            .iter()
            .flat_map(|r| r.programs.iter().map(move |l| (r.variant.name(), l))),
    );
}

/// "same vCPU p50 1.020x, p99 1.100x" (or "cross vCPU not measurable").
fn rr_ratios(r: &VariantResult, p: Placement) -> String {
    let key = |q: &str| r.ratio[format!("rr_{}_{q}", p.key())].as_f64();
    match (key("p50"), key("p99")) {
        (Some(p50), Some(p99)) => format!("{} p50 {p50:.3}x, p99 {p99:.3}x", p.name()),
        _ => format!("{} not measurable", p.name()),
    }
}

/// Where the request/response threads ran, for the text above the table.
fn placement_text(t: &TrafficReport) -> String {
    Placement::ALL
        .iter()
        .zip(t.rr_cpus)
        .map(|(p, c)| match c {
            Some((client, server)) => {
                format!(
                    "{}: client on CPU {client}, server on CPU {server}",
                    p.name()
                )
            }
            None => format!("{}: not measurable (one CPU)", p.name()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Section 2's table: pod to pod, per variant.
fn traffic_table(s: &mut String, t: &TrafficReport, charts: &[Chart]) {
    let _ = writeln!(
        s,
        "Two pods of one virtual node (client 10.0.2.10 -> server 10.0.1.10, both isolated by \
         policies allowing the flow, so each packet meets two enforcement points), in-process sockets \
         in the pods' network namespaces. Variants interleaved over {} trials; median (min-max), and \
         in bold the median per-trial ratio to no enforcement. cns: the real agent in blocking mode \
         (unrelated rules: policies selecting the server for other pods on another node, one port \
         each). iptables: `{}`, kube-router style in the node netns (conntrack ESTABLISHED accept \
         first, per-pod chains, ipset matches, unrelated rules before the matching one, default \
         drop). RR: 64-byte request/response round trips on one connection, measured twice per \
         variant and trial with the client thread and the server's thread pinned (sched_setaffinity) \
         to the same vCPU and to two different vCPUs ({}), the order alternating from trial to \
         trial; the kernel's work for each packet runs mostly on the sending thread's CPU, so \
         cross-vCPU adds a wake-up of the other CPU each way. Other threads are not pinned. CPU \
         per Gbit: user+system CPU of the benchmark process (sender and receiver threads; softirq \
         time charged elsewhere is not included). Denied flood: datagrams per second one socket \
         sender pushes at a port no rule allows (no enforcement: delivered, nothing listens).\n",
        t.trials,
        t.iptables,
        placement_text(t)
    );
    charts::embed(s, charts, Section::Traffic);
    let _ = writeln!(
        s,
        "| variant | RR p50 µs same vCPU | RR p99 µs same vCPU | RR p50 µs cross vCPU | RR p99 µs cross vCPU | new conn/s | 1 stream Gbit/s | 4 streams Gbit/s | CPU s per Gbit (1 stream) | denied UDP flood kpps |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &t.results {
        let c = |x: &super::Summary, key: &str, digits: usize| {
            let ratio = r.ratio[key].as_f64().unwrap_or(1.0);
            format!(
                "{:.d$} ({:.d$}-{:.d$}) **{:.3}x**",
                x.median,
                x.min,
                x.max,
                ratio,
                d = digits
            )
        };
        let mut row = format!("| {} |", r.variant);
        for p in Placement::ALL {
            match r.rr(p) {
                Some(l) => {
                    let _ = write!(
                        row,
                        " {} | {} |",
                        c(&l.p50_us, &format!("rr_{}_p50", p.key()), 1),
                        c(&l.p99_us, &format!("rr_{}_p99", p.key()), 1)
                    );
                }
                None => row.push_str(" not measurable (one CPU) | not measurable (one CPU) |"),
            }
        }
        let _ = writeln!(
            s,
            "{row} {} | {} | {} | {} | {} |",
            c(&r.conn_per_s, "new_connections_per_s", 0),
            c(&r.gbit_1, "throughput_1_stream", 2),
            c(&r.gbit_4, "throughput_4_streams", 2),
            c(&r.cpu_s_per_gbit_1, "cpu_per_gbit_1_stream", 3),
            c(&r.flood_kpps, "denied_flood_pps", 0),
        );
    }
    for n in &t.notes {
        let _ = writeln!(s, "\n{n}");
    }
    let _ = writeln!(s);
    program_table(
        s,
        "The agent's programs on these packets, as the kernel timed them (`bpf_stats`: \
         `run_time_ns` / `run_cnt` of each program around each workload, in a second run of \
         the workloads with statistics on after each timed one, which goes without them; per \
         trial; median (min-max)). Section 1's `BPF_PROG_TEST_RUN` figures are the same programs on crafted \
         packets: request/response and bulk are mostly established flows (bulk runs once per \
         GSO batch, not per wire packet), new connections mix new and established packets, and \
         the denied flood is dropped by `cns_from_pod` on the client's veth, each datagram \
         decided afresh (new denied: the client's egress policy admits none of it), so \
         `cns_to_pod` never sees it. `cns_xdp` runs on the uplink, which pod-to-pod traffic does \
         not cross.",
        "workload",
        t.results
            .iter()
            .flat_map(|r| r.programs.iter().map(move |l| (r.variant.as_str(), l))),
    );
}

/// The agent's programs as the kernel timed them (`bpf_stats`): a row per (variant, what
/// ran, program); nothing when no program ran.
fn program_table<'a>(
    s: &mut String,
    intro: &str,
    what: &str,
    rows: impl Iterator<Item = (&'a str, &'a super::progstats::ProgramLoad)>,
) {
    let rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "{intro}\n");
    let _ = writeln!(
        s,
        "| variant | {what} | program | ns per run | runs per trial |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|");
    for (variant, l) in rows {
        let _ = writeln!(
            s,
            "| {variant} | {} | `{}` | {:.0} ({:.0}-{:.0}) | {:.0} |",
            l.workload,
            l.program,
            l.ns_per_run.median,
            l.ns_per_run.min,
            l.ns_per_run.max,
            l.runs.median
        );
    }
    let _ = writeln!(s);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::{Summary, traffic::Latency};

    fn sum(x: f64) -> Summary {
        Summary::of(&[x * 0.9, x, x * 1.2])
    }

    #[test]
    fn a_floor_target_is_met_only_at_every_size() {
        let mut v = FloorVerdict {
            program: PROG_TO_POD,
            case: Case::Established,
            floor: "floor_established",
            target: 1.15,
            ratios: vec![(10, 10, 1.10), (1000, 10, 1.2), (100_000, 50_000, 1.12)],
        };
        assert!(!v.met());
        let h = v.headline();
        assert!(
            h.contains(
                "vs floor_established: 1.10x at 10 rules/10 ipcache, 1.12x at 100000 rules/50000 \
                 ipcache, 1.10-1.20x over the 3 sizes"
            ),
            "{h}"
        );
        assert!(h.ends_with("target <= 1.15x: not met)"), "{h}");
        v.ratios.remove(1);
        assert!(v.met());
        assert_eq!(v.json()["met"], true);
        assert!(!v.headline().contains("over the"));
    }

    fn measure(case: Case, keys: Keys, policies: Policies, ns: f64, vs_np: Option<f64>) -> Measure {
        Measure {
            size: crate::bench::kernel::Size {
                policy: 10,
                ipcache: 10,
            },
            program: PROG_TO_POD,
            case,
            keys,
            ns: Summary::of(&[ns]),
            ratio: Summary::of(&[ns / 50.0]),
            vs_tc: None,
            of: None,
            vs_floor: None,
            v6: false,
            vs_v4: None,
            policies,
            vs_np: vs_np.map(|r| Summary::of(&[r])),
        }
    }

    #[test]
    fn dry_run_rows_give_their_ratio_and_verdict_beside_the_rows_without() {
        let mut ms = Vec::new();
        for keys in [Keys::Repeated, Keys::Random] {
            for (case, ns, r) in [
                (Case::Established, 60.0, 1.0),
                (Case::NewAllowed, 100.0, 1.05),
                (Case::NewDenied, 120.0, 1.2),
                (Case::WouldDrop, 100.0, 1.5),
            ] {
                ms.push(measure(case, keys, Policies::NetworkPolicy, ns, None));
                ms.push(measure(case, keys, Policies::DryRun, ns * r, Some(r)));
            }
        }
        let params = crate::bench::kernel::Params {
            sizes: vec![ms[0].size],
            trials: 1,
            repeat: 1,
            random_flows: 1,
        };
        let rep = Report {
            kernel: Some((params, ms)),
            traffic: None,
            ..report(false)
        };
        let h = rep.headlines();
        let dry = h
            .iter()
            .find(|h| h.starts_with("Dry-run policies"))
            .expect("a dry-run headline");
        assert!(
            dry.ends_with(
                "(new flows target <= 1.1x): at 10 rules/10 ipcache entries: cns_to_pod \
                 established 1.00x (unchanged path), cns_to_pod new allowed 1.05x (met), \
                 cns_to_pod new denied 1.20x (not met), cns_to_pod new allowed, dry run would \
                 drop 1.50x (counted and reported)"
            ),
            "{dry}"
        );
        // The headlines of NetworkPolicy only read its own rows.
        assert!(
            h.iter()
                .any(|h| h.starts_with("cns_to_pod new allowed vs empty: 2.00x (100 ns)")),
            "{h:?}"
        );
        let md = rep.markdown();
        assert!(md.contains("### Dry-run policies (issue 15)"));
        assert!(md.contains(
            "| policy entries | ipcache entries | path | with dry-run ns | without ns | x without | verdict |"
        ));
        assert!(
            md.contains("| 10 | 10 | `cns_to_pod` new allowed | 105 | 100 | **1.05x** | met |"),
            "{md}"
        );
        assert!(md.contains(
            "| 10 | 10 | `cns_to_pod` new allowed, dry run would drop | 150 | 100 | **1.50x** | counted and reported |"
        ));
        // Random keys: no verdict (the target is on repeated keys).
        assert!(md.contains("| 10 | 10 | `cns_to_pod` new denied | 144 | 120 | **1.20x** |\n"));
        let j = rep.json();
        let rows = j["kernel"]["results"].as_array().unwrap();
        let dry: Vec<_> = rows.iter().filter(|r| r["dry_run"] == true).collect();
        assert_eq!(dry.len(), 8);
        assert!(dry.iter().all(|r| r["datapath"] == "dry_run"
            && r["cluster_policies"] == false
            && r["ratio_to_networkpolicy_only"]["median"].is_number()));
    }

    fn result(variant: &str, same: f64, cross: Option<f64>) -> VariantResult {
        let lat = |x: f64| Latency {
            p50_us: sum(x),
            p99_us: sum(x * 4.0),
        };
        let r = |x: Option<f64>, base: f64| x.map(|x| (x / base * 1000.0).round() / 1000.0);
        VariantResult {
            variant: variant.into(),
            rr_same_cpu: lat(same),
            rr_cross_cpu: cross.map(lat),
            conn_per_s: sum(20_000.0),
            gbit_1: sum(10.0),
            gbit_4: sum(20.0),
            cpu_s_per_gbit_1: sum(0.1),
            flood_kpps: sum(500.0),
            ratio: json!({
                "rr_same_cpu_p50": r(Some(same), 20.0), "rr_same_cpu_p99": r(Some(same), 20.0),
                "rr_cross_cpu_p50": r(cross, 30.0), "rr_cross_cpu_p99": r(cross, 30.0),
                "new_connections_per_s": 1.0, "throughput_1_stream": 1.0,
                "throughput_4_streams": 1.0, "cpu_per_gbit_1_stream": 1.0, "denied_flood_pps": 1.0,
            }),
            // The agent's programs ran only with the agent.
            programs: if variant.starts_with("cns") {
                vec![crate::bench::traffic::ProgramLoad {
                    workload: "request/response",
                    program: "cns_to_pod",
                    ns_per_run: sum(50.0),
                    runs: sum(22000.0),
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn report(cross: bool) -> Report {
        let traffic = TrafficReport {
            iptables: "iptables v1.8.11 (nf_tables)".into(),
            trials: 3,
            rr_cpus: [Some((0, 0)), cross.then_some((0, 1))],
            results: vec![
                result("no enforcement", 20.0, cross.then_some(30.0)),
                result("cns, 10 unrelated rules", 22.0, cross.then_some(36.0)),
            ],
            notes: Vec::new(),
            flood: None,
        };
        Report {
            machine: json!({}),
            quick: true,
            command: "cargo xtask bench --quick".into(),
            kernel: None,
            kernel_skipped: None,
            control: None,
            traffic: Some(traffic),
            traffic_skipped: None,
            kube: None,
            notes: Vec::new(),
            seconds: 1.0,
        }
    }

    #[test]
    fn latency_is_reported_per_placement() {
        let rep = report(true);
        let md = rep.markdown();
        assert!(md.contains("same vCPU: client on CPU 0, server on CPU 0; cross vCPU: client on CPU 0, server on CPU 1"));
        assert!(md.contains("| RR p50 µs same vCPU | RR p99 µs same vCPU | RR p50 µs cross vCPU | RR p99 µs cross vCPU |"));
        assert!(md.contains(
            "| cns, 10 unrelated rules | 22.0 (19.8-26.4) **1.100x** | 88.0 (79.2-105.6) **1.100x** | 36.0 (32.4-43.2) **1.200x** | 144.0 (129.6-172.8) **1.200x** |"
        ), "{md}");
        let h = rep.headlines();
        assert_eq!(h.len(), 1);
        assert!(h[0].starts_with(
            "cns, 10 unrelated rules vs no enforcement: request/response same vCPU p50 1.100x, p99 1.100x, cross vCPU p50 1.200x, p99 1.200x;"
        ), "{}", h[0]);
        let j = rep.json();
        let r = &j["traffic"]["results"][1];
        assert_eq!(r["rr_same_cpu_p50_us"]["median"], 22.0);
        assert_eq!(r["rr_cross_cpu_p99_us"]["median"], 144.0);
        assert_eq!(r["ratio_to_no_enforcement"]["rr_cross_cpu_p50"], 1.2);
        assert_eq!(j["traffic"]["rr_cpus"]["cross_cpu"]["server"], 1);
        // The chart draws both placements.
        let charts = rep.charts();
        assert_eq!(charts.len(), 1);
        assert!(
            charts[0]
                .svg
                .contains("cns, 10 unrelated rules, cross vCPU")
        );
        assert!(charts[0].svg.contains("no enforcement, same vCPU"));
        // The programs as the kernel timed them.
        assert!(
            md.contains(
                "| cns, 10 unrelated rules | request/response | `cns_to_pod` | 50 (45-60) | 22000 |"
            ),
            "{md}"
        );
        assert_eq!(r["programs"][0]["ns_per_run"]["median"], 50.0);
        assert_eq!(j["traffic"]["results"][0]["programs"], json!([]));
    }

    #[test]
    fn one_cpu_reports_cross_cpu_as_not_measurable() {
        let rep = report(false);
        let md = rep.markdown();
        assert!(md.contains("cross vCPU: not measurable (one CPU)"));
        assert!(md.contains(
            "| cns, 10 unrelated rules | 22.0 (19.8-26.4) **1.100x** | 88.0 (79.2-105.6) **1.100x** | not measurable (one CPU) | not measurable (one CPU) |"
        ), "{md}");
        assert!(rep.headlines()[0].contains("p99 1.100x, cross vCPU not measurable;"));
        let j = rep.json();
        assert!(j["traffic"]["results"][0]["rr_cross_cpu_p50_us"].is_null());
        assert!(j["traffic"]["rr_cpus"]["cross_cpu"].is_null());
        let charts = rep.charts();
        assert!(!charts[0].svg.contains("cross vCPU"));
    }
}
