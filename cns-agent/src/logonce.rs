//! Logging a persistent error once: the source's errors (an invalid file, a duplicate
//! object) come back at every sync, and logging them each time drowns the log (and costs
//! CPU) while nothing changes. [`LogOnce`] remembers what was logged and reports only what
//! is new, and what cleared, since the last sync.

use std::{collections::BTreeSet, fmt::Display};

/// What changed in a set of errors since the last [`LogOnce::update`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorChanges {
    /// Errors not present at the last update (log them).
    pub new: Vec<String>,
    /// Errors present at the last update and gone now (say they cleared).
    pub cleared: Vec<String>,
}

/// The errors last seen; see the module doc.
#[derive(Debug, Default)]
pub struct LogOnce {
    last: BTreeSet<String>,
}

impl LogOnce {
    /// Records `current` as the errors in force and returns what changed (pure: no logging).
    /// An error whose message changes counts as a new one (and its old text as cleared).
    pub fn update<E: Display>(&mut self, current: &[E]) -> ErrorChanges {
        let now: BTreeSet<String> = current.iter().map(ToString::to_string).collect();
        let changes = ErrorChanges {
            new: now.difference(&self.last).cloned().collect(),
            cleared: self.last.difference(&now).cloned().collect(),
        };
        self.last = now;
        changes
    }

    /// [`update`](Self::update), then logs each new error as a warning (`what`: the log
    /// message, e.g. "invalid input") and each cleared one at info level.
    pub fn log<E: Display>(&mut self, current: &[E], what: &str) {
        let changes = self.update(current);
        for e in &changes.new {
            tracing::warn!(error = %e, "{what}");
        }
        for e in &changes.cleared {
            tracing::info!(error = %e, "{what}: cleared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_unchanged_error_is_reported_once() {
        let mut once = LogOnce::default();
        let errors = ["a.yaml: invalid YAML", "b.yaml: duplicate pod x/y"];
        assert_eq!(
            once.update(&errors),
            ErrorChanges {
                new: strings(&["a.yaml: invalid YAML", "b.yaml: duplicate pod x/y"]),
                cleared: vec![],
            }
        );
        for _ in 0..5 {
            assert_eq!(once.update(&errors), ErrorChanges::default());
        }
    }

    #[test]
    fn a_changed_error_is_new_and_a_gone_one_cleared() {
        let mut once = LogOnce::default();
        once.update(&["a.yaml: line 3", "b.yaml: bad"]);
        assert_eq!(
            once.update(&["a.yaml: line 4", "b.yaml: bad"]),
            ErrorChanges {
                new: strings(&["a.yaml: line 4"]),
                cleared: strings(&["a.yaml: line 3"]),
            }
        );
        assert_eq!(
            once.update::<&str>(&[]),
            ErrorChanges {
                new: vec![],
                cleared: strings(&["a.yaml: line 4", "b.yaml: bad"]),
            }
        );
        // Back again after clearing: logged again.
        assert_eq!(once.update(&["b.yaml: bad"]).new, strings(&["b.yaml: bad"]));
    }

    #[test]
    fn repeated_identical_errors_in_one_sync_count_once() {
        let mut once = LogOnce::default();
        assert_eq!(once.update(&["x", "x"]).new, strings(&["x"]));
        assert_eq!(once.update(&["x"]), ErrorChanges::default());
    }
}
