//! A volume: its file, geometry, write cache and freeze state. The relationships it takes part
//! in are the topology's to know ([`crate::topology`]).

use crate::cache::PendingTrack;
use crate::catalog::{BackupRecord, Provisioning, SafeguardedRecord, VolumeRecord};
use crate::geometry::Geometry;
use crate::space::{Pool, ThinFile};
use crate::storage::BlockFile;
use crate::topology::Topology;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Volume {
    pub id: u64,
    pub name: String,
    pub geometry: Geometry,
    pub file: Arc<dyn BlockFile>,
    pub created_ms: u64,
    pub contents_undefined: AtomicBool,
    pub deleted: AtomicBool,
    /// Pending writes by track (see [`crate::cache`]).
    pub cache: Mutex<BTreeMap<u64, PendingTrack>>,
    /// Tracks whose cached writes a destage batch has taken but not yet written. A flush waits
    /// for them too (by locking their stripes), or it could return before they are durable.
    /// Locked after `cache`, never before.
    pub in_flight: Mutex<std::collections::BTreeSet<u64>>,
    /// A destage that failed after the host was answered; the next flush reports it.
    pub write_error: Mutex<Option<std::io::Error>>,
    pub provisioning: Provisioning,
    pub pool: Option<Arc<Pool>>,
    /// The thin wrapper of `file`, for space-efficient volumes.
    pub thin: Option<Arc<ThinFile>>,
    /// Set while writes are held by a consistency-group freeze: the deadline of the hold.
    pub frozen_until: Mutex<Option<std::time::Instant>>,
    pub thawed: parking_lot::Condvar,
    /// Host connections serving the volume (see [`crate::exports`]).
    pub exports: Arc<crate::exports::Exports>,
    /// Set when the volume is a Safeguarded Copy backup (retention may change).
    pub backup: Mutex<Option<BackupRecord>>,
    /// A backup stays one for life: known without the lock.
    is_backup: bool,
    /// The safeguarded capacity of a source.
    pub safeguarded: Mutex<Option<SafeguardedRecord>>,
}

/// What callers see of a volume.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub capacity_bytes: u64,
    pub track_size: u64,
    pub allocated_bytes: u64,
    pub created_ms: u64,
    pub source_of: Vec<String>,
    pub target_of: Option<String>,
    /// A NOCOPY or unfinished copy onto this volume was withdrawn: its contents are undefined.
    pub contents_undefined: bool,
    pub pool: Option<String>,
    pub provisioning: Provisioning,
    /// Writes are held by a freeze.
    pub frozen: bool,
    /// Hosts may not write it (target write inhibit).
    pub write_inhibited: bool,
    /// Its safeguarded capacity (Safeguarded Copy), used and free.
    pub safeguarded: Option<crate::safeguarded::SafeguardedInfo>,
}

impl Volume {
    /// An in-memory volume for a catalog record and its (wrapped) file.
    pub fn new(
        record: &VolumeRecord,
        file: Arc<dyn BlockFile>,
        pool: Option<Arc<Pool>>,
        thin: Option<Arc<ThinFile>>,
    ) -> Self {
        Volume {
            id: record.id,
            name: record.name.clone(),
            geometry: Geometry::new(record.capacity, record.track_size),
            file,
            created_ms: record.created_ms,
            contents_undefined: AtomicBool::new(record.contents_undefined),
            deleted: AtomicBool::new(false),
            cache: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(std::collections::BTreeSet::new()),
            write_error: Mutex::new(None),
            provisioning: record.provisioning,
            pool,
            thin,
            frozen_until: Mutex::new(None),
            thawed: parking_lot::Condvar::new(),
            exports: Arc::default(),
            backup: Mutex::new(record.backup.clone()),
            is_backup: record.backup.is_some(),
            safeguarded: Mutex::new(record.safeguarded),
        }
    }

    /// True for a Safeguarded Copy backup's hidden volume.
    pub fn is_backup(&self) -> bool {
        self.is_backup
    }

    /// Waits while a freeze holds writes. The hold ends at `unfreeze` or at its deadline, when
    /// writes resume by themselves and the event is logged.
    pub fn wait_unfrozen(&self) {
        let mut frozen = self.frozen_until.lock();
        while let Some(deadline) = *frozen {
            if std::time::Instant::now() >= deadline {
                *frozen = None;
                tracing::warn!(volume = %self.name, "freeze timed out; write I/O resumes");
                self.thawed.notify_all();
                break;
            }
            self.thawed.wait_until(&mut frozen, deadline);
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen_until
            .lock()
            .is_some_and(|d| std::time::Instant::now() < d)
    }

    /// What callers see; the topology gives the volume's roles.
    pub fn info(&self, topology: &Topology) -> VolumeInfo {
        use std::sync::atomic::Ordering;
        VolumeInfo {
            name: self.name.clone(),
            capacity_bytes: self.geometry.capacity,
            track_size: self.geometry.track_size,
            allocated_bytes: self.file.allocated_bytes().unwrap_or(0),
            created_ms: self.created_ms,
            source_of: topology
                .source_of(self.id)
                .filter(|r| !r.to_backup())
                .map(|r| r.target_name.clone())
                .collect(),
            target_of: topology.target_of(self.id).map(|r| r.source_name.clone()),
            contents_undefined: self.contents_undefined.load(Ordering::Acquire),
            pool: self.pool.as_ref().map(|p| p.name.clone()),
            provisioning: self.provisioning,
            frozen: self.is_frozen(),
            write_inhibited: topology.write_inhibited(self.id),
            safeguarded: crate::safeguarded::safeguarded_info(topology, self),
        }
    }

    /// The catalog record of the volume as it is now.
    pub fn record(&self) -> VolumeRecord {
        use std::sync::atomic::Ordering;
        VolumeRecord {
            id: self.id,
            name: self.name.clone(),
            capacity: self.geometry.capacity,
            track_size: self.geometry.track_size,
            created_ms: self.created_ms,
            contents_undefined: self.contents_undefined.load(Ordering::Acquire),
            pool: self.pool.as_ref().map(|p| p.id),
            provisioning: self.provisioning,
            backup: self.backup.lock().clone(),
            safeguarded: *self.safeguarded.lock(),
        }
    }
}

/// Volume names are file-system and URL safe, and short.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}
