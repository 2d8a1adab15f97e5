//! The agent's programs timed by the kernel on real packets (issue 17): `bpf_stats`
//! (`run_time_ns` and `run_cnt` of each loaded program, kept while statistics are enabled)
//! around a workload, so that section 1's `BPF_PROG_TEST_RUN` figures can be checked against
//! real traffic. The times are the programs' own (the kernel's clock around each run), not the
//! hook's dispatch. Programs are found by name, so an earlier agent's left on the machine
//! would count too (the bench runs alone).

use std::{os::fd::OwnedFd, time::Duration};

use cns_agent::datapath::{PROG_FROM_POD, PROG_TO_POD, PROG_XDP};
use serde_json::{Value, json};

use super::Summary;

/// The programs timed, in the order of [`Snapshot`]'s figures.
pub const PROGRAMS: [&str; 3] = [PROG_TO_POD, PROG_FROM_POD, PROG_XDP];

/// Statistics are kept while the returned descriptor lives (`BPF_ENABLE_STATS`).
pub fn enable() -> anyhow::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| anyhow::anyhow!("BPF_ENABLE_STATS: {e}"))
}

/// Run time and runs so far of each of [`PROGRAMS`], summed over the loaded programs of
/// that name.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot([(Duration, u64); 3]);

impl Snapshot {
    pub fn now() -> Self {
        let mut s = Self::default();
        for info in aya::programs::loaded_programs().flatten() {
            if let Some(i) = PROGRAMS.iter().position(|p| info.name_as_str() == Some(*p)) {
                s.0[i].0 += info.run_time();
                s.0[i].1 += info.run_count();
            }
        }
        s
    }

    /// Per program since `before`: ns per run and runs; `None` where it did not run.
    pub fn since(&self, before: &Self) -> [Option<(f64, u64)>; 3] {
        std::array::from_fn(|i| {
            let runs = self.0[i].1.saturating_sub(before.0[i].1);
            let time = self.0[i].0.saturating_sub(before.0[i].0);
            (runs > 0).then(|| (time.as_nanos() as f64 / runs as f64, runs))
        })
    }
}

/// One of the agent's programs on one workload's packets, over trials.
#[derive(Clone, Debug)]
pub struct ProgramLoad {
    pub workload: &'static str,
    pub program: &'static str,
    /// The kernel's run time per run (ns).
    pub ns_per_run: Summary,
    pub runs: Summary,
}

impl ProgramLoad {
    pub fn json(&self) -> Value {
        json!({
            "workload": self.workload,
            "program": self.program,
            "ns_per_run": self.ns_per_run.json(),
            "runs": self.runs.json(),
        })
    }
}

/// Each program that ran on `workload` in every trial (`per_trial`: [`Snapshot::since`]).
pub fn loads(workload: &'static str, per_trial: &[[Option<(f64, u64)>; 3]]) -> Vec<ProgramLoad> {
    PROGRAMS
        .iter()
        .enumerate()
        .filter_map(|(i, program)| {
            let ts = per_trial
                .iter()
                .map(|t| t[i])
                .collect::<Option<Vec<(f64, u64)>>>()
                .filter(|ts| !ts.is_empty())?;
            Some(ProgramLoad {
                workload,
                program,
                ns_per_run: Summary::of(&ts.iter().map(|x| x.0).collect::<Vec<_>>()),
                runs: Summary::of(&ts.iter().map(|x| x.1 as f64).collect::<Vec<_>>()),
            })
        })
        .collect()
}
