//! A FlashCopy relationship: source, target, the control bitmap and the options.
//!
//! Bit `t` set means track `t` of the target holds its point-in-time data (or newer host data);
//! clear means the target's view of the track is still the source file's T0 bytes. A bit set in
//! memory but listed in `unpersisted` is not yet durable: writes that would destroy the T0 copy
//! it protects (a source overwrite) must wait until it is.

use crate::bitmap::Bitmap;
use crate::catalog::{RelRecord, RelState};
use crate::volume::Volume;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Most targets one source may have, as on the DS8000.
pub const MAX_TARGETS_PER_SOURCE: usize = 12;

/// Options given at establish.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct FlashOptions {
    /// COPY (true) or NOCOPY (false).
    pub background_copy: bool,
    /// Keep the relationship after the background copy completes.
    pub persistent: bool,
    /// Background copy rate in bytes per second; 0 is unlimited.
    pub copy_rate: u64,
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
}

#[derive(Debug)]
pub(crate) struct Rel {
    pub id: u64,
    pub source: Arc<Volume>,
    pub target: Arc<Volume>,
    pub bitmap: Bitmap,
    /// Tracks whose bit is set in memory but not yet durable.
    pub unpersisted: Mutex<HashSet<u64>>,
    /// Serialises persisting this bitmap (snapshot → sync target → commit).
    pub persist_lock: Mutex<()>,
    pub record: Mutex<RelRecord>,
    pub failed: AtomicBool,
    pub withdrawn: AtomicBool,
    /// Where the background copy looks for the next clear bit.
    pub copy_cursor: AtomicU64,
}

impl Rel {
    pub fn new(record: RelRecord, source: Arc<Volume>, target: Arc<Volume>) -> Self {
        let tracks = source.geometry.tracks();
        Rel {
            id: record.id,
            failed: AtomicBool::new(record.state == RelState::Failed),
            source,
            target,
            bitmap: Bitmap::new(tracks),
            unpersisted: Mutex::new(HashSet::new()),
            persist_lock: Mutex::new(()),
            record: Mutex::new(record),
            withdrawn: AtomicBool::new(false),
            copy_cursor: AtomicU64::new(0),
        }
    }

    /// Still routes I/O and needs copy-on-write.
    pub fn is_live(&self) -> bool {
        !self.failed.load(Ordering::Acquire) && !self.withdrawn.load(Ordering::Acquire)
    }

    pub fn durably_copied(&self, track: u64) -> bool {
        self.bitmap.get(track) && !self.unpersisted.lock().contains(&track)
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
            source: self.source.name.clone(),
            target: self.target.name.clone(),
            background_copy: r.background_copy,
            persistent: r.persistent,
            copy_rate: r.copy_rate,
            state,
            out_of_sync_tracks: self.bitmap.clear_count(),
            total_tracks: self.bitmap.len(),
            track_size: self.source.geometry.track_size,
            created_ms: r.created_ms,
            synced_ms: r.synced_ms,
            failure: r.failure.clone(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
