//! What keeps clients from exhausting the agent: a back-off for accept loops that hit an
//! error (EMFILE: retrying at once spins a core), and raising RLIMIT_NOFILE at start.

use std::time::Duration;

/// Delays after consecutive accept errors: 10 ms, doubling, at most 1 s; reset by a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: how long to wait before the next. Logs the first error of a streak
    /// (and every 100th), not each one.
    pub fn failed(&mut self, what: &str, error: &std::io::Error) -> Duration {
        if self.failures.is_multiple_of(100) {
            tracing::warn!(%error, failures = self.failures + 1, "{what}: accepting a connection failed; backing off");
        }
        let delay = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the default soft limit, 1024, is what a
/// node's scrapers and clients could exhaust); logs, and goes on, when it cannot.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "could not raise the open files limit")
            }
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let delays: Vec<u128> = (0..10).map(|_| b.failed("test", &e).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed("test", &e), Duration::from_millis(10));
    }
}
