//! A FlashCopy relationship: source, target, the control bitmap, the change-recording bitmaps
//! and the options.
//!
//! Bit `t` set means track `t` of the target holds its point-in-time data (or newer host data);
//! clear means the target's view of the track is still the source's view, which holds T0 (see
//! [`crate::volume::view_source`]). A bit set in memory but listed in `unpersisted` is not yet
//! durable: writes that would destroy the T0 copy it protects (a source overwrite) must wait
//! until it is.
//!
//! With change recording (incremental FlashCopy), `changed[SOURCE]` and `changed[TARGET]` mark
//! tracks written on either side since T0. A change bit is set by the destager and committed
//! before the write it records reaches the disk, so a resync can never miss a change.

use crate::bitmap::Bitmap;
use crate::catalog::{
    RelRecord, RelState, KIND_CHANGED_SOURCE, KIND_CHANGED_TARGET, KIND_COPIED, KIND_REVERT_SET,
    KIND_SHARED,
};
use crate::geometry::Geometry;
use crate::graph::VolId;
use crate::stats::RelCounters;
use crate::storage::BlockFile;
use crate::volume::Volume;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Options given at establish.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct FlashOptions {
    /// COPY (true) or NOCOPY (false).
    pub background_copy: bool,
    /// Keep the relationship after the background copy completes.
    pub persistent: bool,
    /// Background copy rate in bytes per second; 0 is unlimited.
    pub copy_rate: u64,
    /// Record changes on both volumes for incremental resync (`--record`).
    #[serde(default)]
    pub recording: bool,
    /// Target write inhibit (`--tgtinhibit`).
    #[serde(default)]
    pub target_inhibit: bool,
    /// DS8000 sequence number (`--seqnum`), a label to select relationships by.
    #[serde(default)]
    pub seqnum: u32,
}

/// State as reported to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashState {
    Copying,
    NoCopy,
    Copied,
    Failed,
}

/// What callers see of a relationship.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlashInfo {
    pub id: u64,
    pub source: String,
    pub target: String,
    pub background_copy: bool,
    pub persistent: bool,
    pub copy_rate: u64,
    pub state: FlashState,
    pub out_of_sync_tracks: u64,
    pub total_tracks: u64,
    pub track_size: u64,
    pub created_ms: u64,
    pub synced_ms: u64,
    pub failure: Option<String>,
    pub recording: bool,
    /// Tracks changed on either side since T0 (what a resync would copy again).
    pub changed_tracks: u64,
    /// `rmflash --cp` is waiting for the background copy.
    pub withdraw_pending: bool,
    pub target_write_inhibit: bool,
    pub seqnum: u32,
    /// The next resync will be revertible (`setflashrevertible`).
    pub revertible: bool,
    /// A revertible resync awaits `commitflash` or `revertflash`.
    pub revert_pending: bool,
    /// Bytes the background copy wrote to the target. In memory: counted since the daemon
    /// started or the relationship was established, whichever is later (see [`crate::stats`]).
    pub copied_bytes: u64,
    /// Tracks (and their bytes) copied to the target by copy-on-write, before a host write
    /// replaced their T0 data; counted like `copied_bytes`.
    pub cow_tracks: u64,
    pub cow_bytes: u64,
}

/// Index of the source side in [`Rel::changed`].
pub(crate) const SOURCE: usize = 0;
/// Index of the target side in [`Rel::changed`].
pub(crate) const TARGET: usize = 1;

#[derive(Debug)]
pub(crate) struct Rel {
    pub id: u64,
    pub source: VolId,
    pub target: VolId,
    /// Volume names never change: kept here for messages and listings.
    pub source_name: String,
    pub target_name: String,
    pub geometry: Geometry,
    /// The target's file, which persisting the bitmap syncs before it commits bits.
    pub target_file: Arc<dyn BlockFile>,
    pub bitmap: Bitmap,
    /// Change recording, indexed by [`SOURCE`] and [`TARGET`].
    pub changed: [Bitmap; 2],
    /// Revertible resync: tracks whose previous target data is in the undo file.
    pub revert_set: Bitmap,
    /// Sibling sharing: tracks this target received by copy-on-write on behalf of its source's
    /// older targets too (see [`crate::topology`]). A set bit implies a set copied bit.
    pub shared: Bitmap,
    pub recording: AtomicBool,
    /// Target write inhibit.
    pub inhibit: AtomicBool,
    /// Tracks whose bit is set in memory but not yet durable.
    pub unpersisted: Mutex<HashSet<u64>>,
    /// `unpersisted.len()`, readable without the lock: the write path's fast check. Changed
    /// only under the set's lock and the track's exclusive stripe.
    unpersisted_len: std::sync::atomic::AtomicUsize,
    /// Serialises persisting this bitmap (snapshot → sync target → commit).
    pub persist_lock: Mutex<()>,
    pub record: Mutex<RelRecord>,
    pub failed: AtomicBool,
    /// A failure is being recorded (see `Inner::fail_rel`).
    pub failing: AtomicBool,
    pub withdrawn: AtomicBool,
    /// Where the background copy looks for the next clear bit.
    pub copy_cursor: AtomicU64,
    /// Monitoring: bytes copied in the background and by copy-on-write.
    pub counters: RelCounters,
}

impl Rel {
    pub fn new(record: RelRecord, source: &Volume, target: &Volume) -> Self {
        let tracks = source.geometry.tracks();
        Rel {
            id: record.id,
            failed: AtomicBool::new(record.state == RelState::Failed),
            failing: AtomicBool::new(record.state == RelState::Failed),
            source: source.id,
            target: target.id,
            source_name: source.name.clone(),
            target_name: target.name.clone(),
            geometry: source.geometry,
            target_file: target.file.clone(),
            bitmap: Bitmap::new(tracks),
            changed: [Bitmap::new(tracks), Bitmap::new(tracks)],
            revert_set: Bitmap::new(tracks),
            shared: Bitmap::new(tracks),
            recording: AtomicBool::new(record.recording),
            inhibit: AtomicBool::new(record.target_inhibit),
            unpersisted: Mutex::new(HashSet::new()),
            unpersisted_len: std::sync::atomic::AtomicUsize::new(0),
            persist_lock: Mutex::new(()),
            record: Mutex::new(record),
            withdrawn: AtomicBool::new(false),
            copy_cursor: AtomicU64::new(0),
            counters: RelCounters::default(),
        }
    }

    /// True when the target is a Safeguarded Copy backup (their names start with `.sgc-`,
    /// which no host-made volume's may): such relationships are the backups' own, hidden from
    /// listings and FlashCopy verbs.
    pub fn to_backup(&self) -> bool {
        self.target_name.starts_with(crate::catalog::BACKUP_PREFIX)
    }

    /// Still routes I/O and needs copy-on-write.
    pub fn is_live(&self) -> bool {
        !self.failed.load(Ordering::Acquire) && !self.withdrawn.load(Ordering::Acquire)
    }

    pub fn durably_copied(&self, track: u64) -> bool {
        self.bitmap.get(track)
            && (self.unpersisted_len.load(Ordering::Acquire) == 0
                || !self.unpersisted.lock().contains(&track))
    }

    /// Notes tracks whose bit was set in memory but is not durable yet. Callers hold the
    /// tracks' stripes exclusively.
    pub fn mark_unpersisted(&self, tracks: impl IntoIterator<Item = u64>) {
        let mut set = self.unpersisted.lock();
        set.extend(tracks);
        self.unpersisted_len.store(set.len(), Ordering::Release);
    }

    pub fn unpersisted_len(&self) -> usize {
        self.unpersisted_len.load(Ordering::Acquire)
    }

    /// Notes tracks whose bits are now durable.
    pub fn clear_unpersisted(&self, tracks: &[u64]) {
        let mut set = self.unpersisted.lock();
        for t in tracks {
            set.remove(t);
        }
        self.unpersisted_len.store(set.len(), Ordering::Release);
    }

    /// True when a write on `side` to `track` owes nothing to this relationship: the T0 data is
    /// durably on the target and, when recording, the change is durably recorded.
    pub fn settled(&self, side: usize, track: u64) -> bool {
        self.durably_copied(track)
            && (!self.recording.load(Ordering::Acquire) || self.changed[side].get(track))
    }

    /// The bitmaps with their catalog kinds.
    pub fn bitmaps(&self) -> [(u64, &Bitmap); 5] {
        [
            (KIND_COPIED, &self.bitmap),
            (KIND_CHANGED_SOURCE, &self.changed[SOURCE]),
            (KIND_CHANGED_TARGET, &self.changed[TARGET]),
            (KIND_REVERT_SET, &self.revert_set),
            (KIND_SHARED, &self.shared),
        ]
    }

    /// Copy complete and not failed: nothing routes through this relationship any more.
    pub fn is_complete(&self) -> bool {
        self.bitmap.is_full() && !self.failed.load(Ordering::Acquire)
    }

    pub fn info(&self) -> FlashInfo {
        let r = self.record.lock();
        let state = match r.state {
            RelState::Failed => FlashState::Failed,
            RelState::Copied => FlashState::Copied,
            RelState::Active if !r.background_copy => FlashState::NoCopy,
            RelState::Active if self.bitmap.is_full() => FlashState::Copied,
            RelState::Active => FlashState::Copying,
        };
        FlashInfo {
            id: self.id,
            source: self.source_name.clone(),
            target: self.target_name.clone(),
            background_copy: r.background_copy,
            persistent: r.persistent,
            copy_rate: r.copy_rate,
            state,
            out_of_sync_tracks: self.bitmap.clear_count(),
            total_tracks: self.bitmap.len(),
            track_size: self.geometry.track_size,
            created_ms: r.created_ms,
            synced_ms: r.synced_ms,
            failure: r.failure.clone(),
            recording: r.recording,
            changed_tracks: if r.recording {
                changed_union(&self.changed[SOURCE], &self.changed[TARGET])
            } else {
                0
            },
            withdraw_pending: r.withdraw_on_complete,
            target_write_inhibit: r.target_inhibit,
            seqnum: r.seqnum,
            revertible: r.revertible,
            revert_pending: r.revert_pending,
            copied_bytes: RelCounters::get(&self.counters.copied_bytes),
            cow_tracks: RelCounters::get(&self.counters.cow_tracks),
            cow_bytes: RelCounters::get(&self.counters.cow_bytes),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Tracks set in either bitmap.
fn changed_union(a: &Bitmap, b: &Bitmap) -> u64 {
    let union = Bitmap::new(a.len());
    union.set_where(a, b);
    union.count()
}
