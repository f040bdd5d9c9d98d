//! Safeguarded Copy: scheduled, immutable backups of a source, kept in its safeguarded capacity
//! (the DS8000's R8.5 function, `mksafeguardedcap`, `mksgc`, `recoversgc`).
//!
//! A backup is a hidden, sparse NOCOPY persistent target of its source, named `.sgc-ID` (a
//! name no host-made volume may have). No host and no API path writes it: it has no export
//! ([`crate::Engine::handle`] refuses it), the FlashCopy verbs refuse it, and it leaves only by
//! [`crate::Engine::expire_backup`] once its retention is over.
//!
//! **The chain.** Backups are targets of one source in point-in-time order, and the engine's
//! sibling sharing ([`crate::sharing`]) makes a host write copy its track once, to the newest
//! backup still reading it from the source; older backups read the track through that one.
//! So a backup's own file holds only the T0 data of the tracks the source overwrote between its
//! T0 and the next backup's, and its size is proportional to that change. A backup's view of a
//! track is its file (bit set), else the nearest newer backup holding it shared, else the
//! source; the tracks that changed since backup *k*'s T0 are the union of the copied bits of
//! backup *k* and every newer one ([`changed_since`]).
//!
//! **Capacity.** `safeguarded` on the source's record: bytes taken from an extent pool when it
//! is made. It is checked when a backup is taken: a full capacity refuses the new backup (or
//! first expires the oldest backups whose retention is over), and the backups already taken
//! keep receiving their copies, so no host write ever fails and no backup is damaged because of
//! it. The newest backup may therefore pass the capacity by at most one copy of each track.
//!
//! **Crash safety.** A backup's volume record and relationship are made in one catalog commit;
//! an expiry withdraws the relationship (pushing shared tracks down to older backups) and then
//! deletes the volume. A backup volume found without its relationship at open is the remains
//! of an interrupted expiry and is removed ([`Engine::remove_orphan_backups`]).

mod backups;
mod capacity;
mod recover;

pub use backups::{BackupInfo, BackupOptions, BackupState, OnFull};
pub(crate) use capacity::safeguarded_info;
pub use capacity::SafeguardedInfo;
pub use recover::RestoreReport;

use crate::bitmap::Bitmap;
use crate::catalog::VolumeRecord;
use crate::engine::Engine;
use crate::error::SgcError;
use crate::graph::VolId;
use crate::relationship::Rel;
use crate::topology::Topology;
use crate::volume::Volume;
use std::sync::Arc;

/// Anomaly detection's default: a backup whose change exceeds this many times the median of
/// the previous ones is flagged.
pub const DEFAULT_ANOMALY_FACTOR: f64 = 5.0;
/// How many earlier backups the median is taken over.
pub const ANOMALY_WINDOW: usize = 24;
/// Fewer earlier backups than this give no median to compare with.
const ANOMALY_MIN_HISTORY: usize = 3;

impl Engine {
    /// The backup `id`'s hidden volume.
    pub(crate) fn backup_volume(&self, id: u64) -> Result<Arc<Volume>, SgcError> {
        self.lookup(&VolumeRecord::backup_name(id))
            .filter(|v| v.is_backup())
            .ok_or(SgcError::NotFound(id))
    }

    /// A source volume by name: found, and not a backup.
    pub(crate) fn backup_source(&self, name: &str) -> Result<Arc<Volume>, SgcError> {
        let vol = self
            .lookup(name)
            .ok_or_else(|| SgcError::VolumeNotFound(name.to_string()))?;
        if vol.is_backup() {
            return Err(SgcError::VolumeNotFound(name.to_string()));
        }
        Ok(vol)
    }
}

/// A new volume file for `record`: empty, sized, synced before the commit that makes it known
/// (a stray one, left by a crash before that commit, is overwritten by the next user of its id).
pub(crate) fn new_volume_file(
    storage: &dyn crate::storage::Storage,
    record: &VolumeRecord,
) -> std::io::Result<Arc<dyn crate::storage::BlockFile>> {
    let created = (|| {
        let raw = storage.open(&record.file_name(), true)?;
        raw.set_len(0)?;
        raw.set_len(record.capacity)?;
        raw.sync()?;
        Ok(raw)
    })();
    if created.is_err() {
        let _ = storage.remove(&record.file_name());
    }
    created
}

/// The tracks whose data changed on `source` since `from`'s T0 (and, with `to`, before `to`'s):
/// the union of the copied bits of the backups from `from` up to, not including, `to`.
pub(crate) fn changed_since(
    topology: &Topology,
    source: VolId,
    from: &Arc<Rel>,
    to: Option<&Arc<Rel>>,
) -> Bitmap {
    let union = Bitmap::new(from.bitmap.len());
    let none = Bitmap::new(from.bitmap.len());
    let mut inside = false;
    for rel in topology.backups_of(source) {
        if Arc::ptr_eq(rel, from) {
            inside = true;
        }
        if to.is_some_and(|t| Arc::ptr_eq(rel, t)) {
            break;
        }
        if inside {
            union.set_where(&rel.bitmap, &none);
        }
    }
    union
}

/// `change` against the median of `history` (oldest first; the last [`ANOMALY_WINDOW`] count).
pub(crate) fn is_anomaly(change: u64, history: &[u64], factor: f64) -> bool {
    let recent = &history[history.len().saturating_sub(ANOMALY_WINDOW)..];
    if recent.len() < ANOMALY_MIN_HISTORY {
        return false;
    }
    let mut sorted = recent.to_vec();
    sorted.sort_unstable();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2] as f64
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) as f64 / 2.0
    };
    // An idle volume's median is 0: one track of change is the least that can look normal.
    change as f64 > factor * median.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::is_anomaly;

    #[test]
    fn anomaly_needs_history_and_a_large_change() {
        assert!(!is_anomaly(1000, &[1, 1], 5.0), "too little history");
        assert!(!is_anomaly(50, &[10, 10, 10, 12, 9], 5.0));
        assert!(is_anomaly(51, &[10, 10, 10, 12, 9], 5.0));
        // Only the last 24 count: an old burst does not raise the median.
        let mut history = vec![1000; 10];
        history.extend([10; 24]);
        assert!(is_anomaly(51, &history, 5.0));
        // An idle volume: anything over factor × 1 track.
        assert!(!is_anomaly(5, &[0, 0, 0], 5.0));
        assert!(is_anomaly(6, &[0, 0, 0], 5.0));
    }
}
