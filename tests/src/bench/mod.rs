//! `cargo xtask bench`: the project's own benchmarks (issue 7). Each section runs the
//! variants it compares interleaved, trial after trial, and reports medians, spreads and
//! ratios (timings on small shared machines are noisy; ratios within one run are what to
//! read).
//!
//! - [`kernel`]: per-packet cost of the TC programs and of the uplink's XDP program under
//!   `BPF_PROG_TEST_RUN` against empty programs, as the policy map and the IP cache grow
//!   (repeated and random keys).
//! - [`traffic`]: TCP latency, connection rate, throughput and a denied UDP flood between two
//!   pods of the virtual node: no enforcement vs cns vs an iptables+ipset baseline.
//! - [`flood`]: a denied UDP flood from outside the node over its uplink: drops in TC on the
//!   pod's veth vs in XDP on the uplink vs iptables, from sockets and from XDP live frames.
//! - [`control`]: the agent's pipeline (parse, compile, encode, diff, apply) on synthetic
//!   clusters, peak memory per size (a child process per size), single-change latency.
//! - [`kube`]: Kubernetes mode through the real agent and the fake API server over HTTP:
//!   cold start, single-change latency to the maps, peak RSS.
//!
//! [`floor`] loads the reference floors (`cns-ebpf/src/floor.rs`: the irreducible work of
//! each packet path) that the kernel section runs beside cns's programs.
//! [`rawbpf`] loads the bench's own tiny XDP programs (empty, flood generator, bare drop);
//! [`report`] writes `bench.json` and `bench.md`; [`charts`] draws the SVG charts beside them
//! from the same data.

pub mod charts;
pub mod control;
pub mod flood;
pub mod floor;
pub mod heap;
pub mod kernel;
pub mod kube;
pub mod progstats;
pub mod rawbpf;
pub mod report;
pub mod traffic;

use serde_json::{Value, json};

/// Median, minimum and maximum of a set of trials.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "no values to summarise");
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }

    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median * 100.0
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "median": round3(self.median),
            "min": round3(self.min),
            "max": round3(self.max),
            "trials": self.n,
            "spread_pct": round3(self.spread_pct()),
        })
    }
}

/// The `p`-th percentile (0..=100) by nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A small deterministic PRNG (xorshift64*), so runs pick the same "random" keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Options shared by the sections.
#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub out: std::path::PathBuf,
}

/// Reads a `kB` field (`VmHWM`, `VmRSS`) of /proc/self/status, in MiB.
pub fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    })
}
