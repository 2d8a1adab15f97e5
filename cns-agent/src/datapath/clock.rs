//! The programs' clock as the agent reads it. The programs count jiffies (`bpf_jiffies64`:
//! the verifier inlines it into one load), `CONFIG_HZ` of them per second, and user space
//! can read neither jiffies nor HZ portably. At load the agent runs `cns_clock` (jiffies and
//! CLOCK_MONOTONIC from one run) until it has timed two jiffy edges some 20 ms apart: that
//! gives HZ (the programs' `Config::hz`) and where jiffies stand against CLOCK_MONOTONIC,
//! from which it reads jiffies afterwards (both come from the kernel's timekeeping; they do
//! not drift apart).

use std::time::{Duration, Instant};

use aya::{Ebpf, programs::ProgramError};

/// The program [`Clock::calibrate`] runs (never attached).
pub const PROG_CLOCK: &str = "cns_clock";

/// An edge is timed only when the samples either side of it are this close (ns): a sample
/// delayed by preemption would misplace it.
const EDGE_PRECISION_NS: u64 = 50_000;
/// How far apart the two edges are, at least (ns).
const SPAN_NS: u64 = 20_000_000;
/// Give up after this long (a kernel whose jiffies do not move).
const DEADLINE: Duration = Duration::from_secs(2);

/// Jiffies per second, and one jiffy edge on CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    hz: u32,
    /// The jiffy that began at `edge_ns` (CLOCK_MONOTONIC).
    edge_jiffies: u64,
    edge_ns: u64,
}

/// One run of `cns_clock`: (jiffies, CLOCK_MONOTONIC ns).
type Sample = (u64, u64);

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("failed to run {PROG_CLOCK}")]
    Run(#[source] ProgramError),
    #[error("{PROG_CLOCK} wrote no clock (a packet shorter than 16 bytes came back)")]
    Short,
    #[error(
        "could not time two jiffy edges within {DEADLINE:?}: the kernel's jiffies, which the \
         programs' conntrack and event clocks count, do not move as expected"
    )]
    NoEdges,
}

impl Clock {
    /// The kernel's jiffies and CLOCK_MONOTONIC, from one run of `cns_clock` (loaded in
    /// `ebpf`).
    pub fn sample(ebpf: &Ebpf) -> Result<(u64, u64), ClockError> {
        let mut out = [0u8; 64];
        super::test_run_out(ebpf, PROG_CLOCK, &[0; 64], &mut out).map_err(ClockError::Run)?;
        let word = |i: usize| u64::from_ne_bytes(out[i..i + 8].try_into().unwrap_or([0; 8]));
        match (word(0), word(8)) {
            (0, 0) => Err(ClockError::Short),
            s => Ok(s),
        }
    }

    /// Times two jiffy edges with `cns_clock` (loaded in `ebpf`); takes 20-40 ms.
    pub fn calibrate(ebpf: &Ebpf) -> Result<Self, ClockError> {
        let sample = || Self::sample(ebpf);
        let start = Instant::now();
        let mut edges = Edges::default();
        let mut last = sample()?;
        while start.elapsed() < DEADLINE {
            let s = sample()?;
            if let Some(clock) = edges.push(last, s) {
                return Ok(clock);
            }
            last = s;
        }
        Err(ClockError::NoEdges)
    }

    /// From two timed edges (jiffy, ns), the later second.
    fn from_edges(a: Sample, b: Sample) -> Option<Self> {
        let (jiffies, ns) = (b.0.checked_sub(a.0)?, b.1.checked_sub(a.1)?);
        if jiffies == 0 || ns == 0 {
            return None;
        }
        let hz = ((jiffies as u128 * 1_000_000_000 + ns as u128 / 2) / ns as u128) as u64;
        (10..=10_000).contains(&hz).then_some(Self {
            hz: hz as u32,
            edge_jiffies: b.0,
            edge_ns: b.1,
        })
    }

    /// The kernel's `CONFIG_HZ`.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// The jiffy at CLOCK_MONOTONIC `ns`.
    pub fn jiffies_at(&self, ns: u64) -> u64 {
        let since = ns.saturating_sub(self.edge_ns) as u128;
        self.edge_jiffies + (since * u128::from(self.hz) / 1_000_000_000) as u64
    }

    /// The jiffy now.
    pub fn now(&self) -> u64 {
        self.jiffies_at(monotonic_ns())
    }
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Edges seen so far: the first, then the first at least [`SPAN_NS`] after it.
#[derive(Default)]
struct Edges {
    first: Option<Sample>,
}

impl Edges {
    /// Consecutive samples `before` and `after`: a precise edge between them is timed at
    /// their midpoint.
    fn push(&mut self, before: Sample, after: Sample) -> Option<Clock> {
        let precise = after.1.saturating_sub(before.1) <= EDGE_PRECISION_NS;
        if after.0 == before.0 || !precise {
            return None;
        }
        let edge = (after.0, before.1 + (after.1 - before.1) / 2);
        match self.first {
            None => {
                self.first = Some(edge);
                None
            }
            Some(first) if edge.1 - first.1 >= SPAN_NS => Clock::from_edges(first, edge),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn two_edges_give_hz_and_where_jiffies_stand() {
        let mut e = Edges::default();
        // 250 Hz: an edge every 4 ms; samples 2 us apart around each edge.
        assert_eq!(
            e.push((1000, 3 * MS), (1000, 3 * MS + 2000)),
            None,
            "no edge"
        );
        assert_eq!(
            e.push((1000, 4 * MS - 1000), (1001, 4 * MS + 1000)),
            None,
            "first"
        );
        assert_eq!(
            e.push((1003, 15 * MS), (1004, 16 * MS + 1000)),
            None,
            "too soon"
        );
        let c = e
            .push((1005, 24 * MS - 1000), (1006, 24 * MS + 1000))
            .expect("an edge 20 ms on");
        assert_eq!(c.hz(), 250);
        assert_eq!(c.jiffies_at(24 * MS), 1006);
        assert_eq!(c.jiffies_at(28 * MS - 1), 1006);
        assert_eq!(c.jiffies_at(28 * MS), 1007);
        assert_eq!(c.jiffies_at(24 * MS + 3600 * 1000 * MS), 1006 + 3600 * 250);
    }

    #[test]
    fn an_edge_between_samples_far_apart_is_not_timed() {
        let mut e = Edges::default();
        // Preempted for 3 ms across the edge: where it fell is unknown.
        assert_eq!(e.push((7, MS), (8, 4 * MS)), None);
        assert_eq!(e.first, None);
    }

    #[test]
    fn hz_is_rounded_and_bounded() {
        // 1000 Hz measured a little off.
        let c = Clock::from_edges((0, 0), (20, 20 * MS + 3000)).unwrap();
        assert_eq!(c.hz(), 1000);
        // 300 Hz, 100 Hz.
        assert_eq!(Clock::from_edges((0, 0), (6, 20 * MS)).unwrap().hz(), 300);
        assert_eq!(Clock::from_edges((0, 0), (2, 20 * MS)).unwrap().hz(), 100);
        assert_eq!(Clock::from_edges((0, 0), (0, 20 * MS)), None);
        assert_eq!(Clock::from_edges((5, 0), (4, 20 * MS)), None);
    }
}
