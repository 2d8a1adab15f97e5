//! The programs' clock as the agent reads it. The programs count jiffies (`bpf_jiffies64`:
//! the verifier inlines it into one load), `CONFIG_HZ` of them per second, and user space
//! can read neither jiffies nor HZ portably. A one-line program, `cns_clock`, returns the
//! kernel's jiffies and CLOCK_MONOTONIC from one run: the agent reads "now" in jiffies from it
//! whenever it needs it (never extrapolated), and learns HZ at load by timing jiffy edges
//! about 100 ms apart, snapped to the values Linux is built with.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use aya::{Ebpf, programs::ProgramError};

/// The program [`Clock::sample`] runs (never attached).
pub const PROG_CLOCK: &str = "cns_clock";

/// The HZ values Linux is configured with (`CONFIG_HZ_*` on x86, arm64, ppc64, s390).
const KNOWN_HZ: [u32; 4] = [100, 250, 300, 1000];
/// How far apart the two timed edges are, at least.
const SPAN: Duration = Duration::from_millis(100);
/// Between samples (sleeping: a busy loop is what the scheduler preempts at a tick).
const STEP: Duration = Duration::from_micros(200);
/// Give up after this long (a kernel whose jiffies do not move).
const DEADLINE: Duration = Duration::from_secs(3);

/// The kernel's jiffies per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    hz: u32,
}

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
    #[error(
        "the kernel's jiffies advance {measured:.1} times a second, which is no HZ Linux is \
         built with ({KNOWN_HZ:?})"
    )]
    UnknownHz { measured: f64 },
}

/// HZ is the machine's: measured once per process.
static HZ: OnceLock<u32> = OnceLock::new();

impl Clock {
    /// The kernel's jiffies and CLOCK_MONOTONIC (ns), from one run of `cns_clock` (loaded in
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

    /// The kernel's HZ, measured with `cns_clock` (loaded in `ebpf`) the first time in this
    /// process (100-110 ms).
    pub fn calibrate(ebpf: &Ebpf) -> Result<Self, ClockError> {
        if let Some(&hz) = HZ.get() {
            return Ok(Self { hz });
        }
        let start = Instant::now();
        let mut edges = Edges::default();
        let mut last = Self::sample(ebpf)?;
        while start.elapsed() < DEADLINE {
            std::thread::sleep(STEP);
            let s = Self::sample(ebpf)?;
            if let Some(measured) = edges.push(last, s) {
                let hz = snap(measured)?;
                return Ok(Self {
                    hz: *HZ.get_or_init(|| hz),
                });
            }
            last = s;
        }
        Err(ClockError::NoEdges)
    }

    /// The kernel's `CONFIG_HZ`.
    pub fn hz(&self) -> u32 {
        self.hz
    }
}

/// The known HZ within 5% of `measured`.
fn snap(measured: f64) -> Result<u32, ClockError> {
    KNOWN_HZ
        .into_iter()
        .find(|&hz| (measured / f64::from(hz) - 1.0).abs() <= 0.05)
        .ok_or(ClockError::UnknownHz { measured })
}

/// The first jiffy edge seen, until one at least [`SPAN`] after it.
#[derive(Default)]
struct Edges {
    first: Option<(u64, u64)>,
}

impl Edges {
    /// Consecutive samples `before` and `after` (jiffies, ns): an edge between them is timed
    /// at `after` (late by at most the time between samples, which [`SPAN`] makes small).
    /// Returns jiffies per second between the first edge and one at least [`SPAN`] after it.
    fn push(&mut self, before: (u64, u64), after: (u64, u64)) -> Option<f64> {
        if after.0 <= before.0 || after.1 <= before.1 {
            return None;
        }
        let Some(first) = self.first else {
            self.first = Some(after);
            return None;
        };
        let ns = after.1.checked_sub(first.1)?;
        (ns >= SPAN.as_nanos() as u64).then(|| (after.0 - first.0) as f64 * 1e9 / ns as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn edges_100_ms_apart_give_the_rate() {
        let mut e = Edges::default();
        // 250 Hz: an edge every 4 ms, seen up to 0.3 ms late.
        assert_eq!(
            e.push((1000, 3 * MS), (1000, 3 * MS + 200_000)),
            None,
            "no edge"
        );
        assert_eq!(
            e.push((1000, 4 * MS - 100_000), (1001, 4 * MS + 100_000)),
            None
        );
        assert_eq!(
            e.push((1010, 43 * MS), (1011, 44 * MS + 300_000)),
            None,
            "too soon"
        );
        let hz = e
            .push((1025, 104 * MS - 100_000), (1026, 104 * MS + 300_000))
            .expect("an edge 100 ms on");
        assert!((hz - 250.0).abs() < 1.0, "{hz}");
        assert_eq!(snap(hz).unwrap(), 250);
    }

    #[test]
    fn a_late_sample_only_blurs_the_rate() {
        let mut e = Edges::default();
        // Preempted for 5 ms across the second edge: still 250 within 5%.
        e.push((7, MS - 1000), (8, MS));
        let hz = e.push((32, 100 * MS), (33, 106 * MS)).unwrap();
        assert_eq!(snap(hz).unwrap(), 250, "{hz}");
        // A clock going backwards is no edge.
        assert_eq!(e.push((40, 200 * MS), (41, 199 * MS)), None);
    }

    #[test]
    fn hz_snaps_to_what_linux_is_built_with() {
        assert_eq!(snap(998.7).unwrap(), 1000);
        assert_eq!(snap(301.0).unwrap(), 300);
        assert_eq!(snap(97.0).unwrap(), 100);
        assert!(matches!(snap(275.0), Err(ClockError::UnknownHz { .. })));
        assert!(matches!(snap(512.0), Err(ClockError::UnknownHz { .. })));
    }
}
