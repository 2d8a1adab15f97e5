//! How much of the pipeline the next sync must redo in full. The agent keeps one record per
//! stage (the source's read, the compiler, the encoded maps, what the maps hold); each
//! stage normally works on what changed since the stage before it. A stage whose input may
//! be out of step with its record (a start, a sync stopped half-way, a failed write, drift)
//! is redone whole, and so is every stage after it.

use std::time::{Duration, Instant};

/// The stages after the compile. `Redo(stage)`: that stage and the later ones run whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Encode the whole desired state (not only the addresses the compile changed).
    Encode,
    /// Compare the whole IP cache with what the maps hold.
    Diff,
    /// Nothing to redo: every stage works on changes.
    None,
}

/// How often the source is read whole even when nothing asks for it, so that nothing a
/// source failed to notice (a file's stat that did not change) outlives a minute.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(60);

/// What a sync does whole, decided when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Scope {
    pub read_whole: bool,
    pub encode_whole: bool,
    pub diff_whole: bool,
}

impl Scope {
    /// Everything whole, as after a start.
    pub const WHOLE: Self = Self {
        read_whole: true,
        encode_whole: true,
        diff_whole: true,
    };
    /// Every stage on changes only.
    pub const CHANGES: Self = Self {
        read_whole: false,
        encode_whole: false,
        diff_whole: false,
    };
}

/// The sync state carried from sync to sync.
#[derive(Clone, Debug)]
pub struct SyncState {
    /// The last read may not have reached the compiler (the source has moved on).
    read_lost: bool,
    redo: Stage,
    last_full_read: Option<Instant>,
}

impl Default for SyncState {
    /// A start: nothing is known, everything is done whole.
    fn default() -> Self {
        Self {
            read_lost: true,
            redo: Stage::Encode,
            last_full_read: None,
        }
    }
}

impl SyncState {
    /// A sync starts at `now`: what it does whole. The read is lost until
    /// [`SyncState::compiled`] (the sync may stop anywhere).
    pub fn begin(&mut self, now: Instant) -> Scope {
        let read_whole = self.read_lost
            || self
                .last_full_read
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_READ_EVERY);
        if read_whole {
            self.last_full_read = Some(now);
        }
        self.read_lost = true;
        Scope {
            read_whole,
            encode_whole: self.redo <= Stage::Encode,
            diff_whole: self.redo <= Stage::Diff,
        }
    }

    /// The compiler took the read: the encoded state lags it until [`SyncState::encoded`].
    pub fn compiled(&mut self) {
        self.read_lost = false;
        self.redo = Stage::Encode;
    }

    /// The encoded state is the compiler's: the maps lag it until [`SyncState::written`].
    pub fn encoded(&mut self) {
        self.redo = Stage::Diff;
    }

    /// The write is done: with every operation applied, the maps are what was encoded;
    /// otherwise they may differ anywhere.
    pub fn written(&mut self, all_applied: bool) {
        self.redo = if all_applied {
            Stage::None
        } else {
            Stage::Diff
        };
    }

    /// The maps may differ from the agent's record anywhere (drift found).
    pub fn maps_unknown(&mut self) {
        self.redo = self.redo.min(Stage::Diff);
    }

    /// What the next sync would redo whole after the read (for tests and status).
    pub fn pending(&self) -> Stage {
        self.redo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGES: Scope = Scope::CHANGES;
    const WHOLE: Scope = Scope::WHOLE;

    /// A sync that completes every stage.
    fn complete(s: &mut SyncState, now: Instant) -> Scope {
        let scope = s.begin(now);
        s.compiled();
        s.encoded();
        s.written(true);
        scope
    }

    #[test]
    fn a_start_does_everything_whole_then_changes_only() {
        let t0 = Instant::now();
        let mut s = SyncState::default();
        assert_eq!(complete(&mut s, t0), WHOLE);
        assert_eq!(complete(&mut s, t0 + Duration::from_secs(1)), CHANGES);
        assert_eq!(s.pending(), Stage::None);
    }

    #[test]
    fn the_source_is_read_whole_every_minute() {
        let t0 = Instant::now();
        let mut s = SyncState::default();
        complete(&mut s, t0);
        assert_eq!(complete(&mut s, t0 + Duration::from_secs(59)), CHANGES);
        // Read whole; the compiler finds what changed, so the rest still works on changes.
        assert_eq!(
            complete(&mut s, t0 + Duration::from_secs(60)),
            Scope {
                read_whole: true,
                ..CHANGES
            }
        );
        assert_eq!(complete(&mut s, t0 + Duration::from_secs(61)), CHANGES);
    }

    #[test]
    fn a_sync_stopped_half_way_is_redone_from_where_it_stopped() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        let mut s = SyncState::default();
        complete(&mut s, t0);
        // Stopped after the read, before the compiler took it: read whole again; the
        // encoded state and the maps are still the compiler's.
        s.begin(later(1));
        assert_eq!(
            complete(&mut s, later(2)),
            Scope {
                read_whole: true,
                ..CHANGES
            }
        );
        // Stopped after the compile, before the encode: encode and diff whole.
        s.begin(later(3));
        s.compiled();
        assert_eq!(
            complete(&mut s, later(4)),
            Scope {
                read_whole: false,
                ..WHOLE
            }
        );
        // Stopped after the compile, then after the read: both are redone.
        s.begin(later(5));
        s.compiled();
        s.begin(later(6));
        assert_eq!(complete(&mut s, later(7)), WHOLE);
        // Stopped after the encode, before the write: diff whole.
        s.begin(later(8));
        s.compiled();
        s.encoded();
        assert_eq!(
            complete(&mut s, later(9)),
            Scope {
                diff_whole: true,
                ..CHANGES
            }
        );
        assert_eq!(complete(&mut s, later(10)), CHANGES);
    }

    #[test]
    fn drift_or_a_failed_write_diffs_whole_once() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        let mut s = SyncState::default();
        complete(&mut s, t0);
        s.maps_unknown();
        assert_eq!(s.pending(), Stage::Diff);
        let diff_whole = Scope {
            diff_whole: true,
            ..CHANGES
        };
        assert_eq!(complete(&mut s, later(1)), diff_whole);
        assert_eq!(complete(&mut s, later(2)), CHANGES);
        // A failed write.
        s.begin(later(3));
        s.compiled();
        s.encoded();
        s.written(false);
        assert_eq!(complete(&mut s, later(4)), diff_whole);
        // Drift does not lower a pending whole encode.
        s.begin(later(5));
        s.compiled();
        s.maps_unknown();
        assert_eq!(s.pending(), Stage::Encode);
    }
}
