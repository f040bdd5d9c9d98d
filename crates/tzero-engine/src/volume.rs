//! A volume: its file, geometry, write cache and the relationships it takes part in.

use crate::cache::PendingTrack;
use crate::catalog::{Provisioning, VolumeRecord};
use crate::geometry::Geometry;
use crate::relationship::{Rel, SOURCE, TARGET};
use crate::space::{Pool, ThinFile};
use crate::storage::BlockFile;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The relationships a volume takes part in.
#[derive(Debug, Default)]
pub(crate) struct Links {
    pub target_of: Option<Arc<Rel>>,
    pub source_of: Vec<Arc<Rel>>,
}

impl Links {
    pub fn is_empty(&self) -> bool {
        self.target_of.is_none() && self.source_of.is_empty()
    }

    /// True when a write to `track` may go straight to the volume file: no relationship still
    /// owes T0 data or a change record for it, durably. Callers hold the track's stripe.
    pub fn write_through_ok(&self, track: u64) -> bool {
        let owed = |side: usize| move |r: &Arc<Rel>| r.is_live() && !r.settled(side, track);
        !self.source_of.iter().any(owed(SOURCE))
            && !self.target_of.as_ref().is_some_and(owed(TARGET))
    }
}

/// Where a volume's view of `track` lives: `None` for its own file, or the volume whose file
/// holds it. A target whose bit is clear sees its source's view, which may itself be a target
/// (cascading, A→B→C: C's uncopied track is B's view, which may be A's file).
///
/// Callers hold the topology lock (shared or exclusive), so no link changes under them.
/// Errors with the name of a volume whose relationship failed: its view is gone.
pub(crate) fn view_source(links: &Links, track: u64) -> Result<Option<Arc<Volume>>, String> {
    let step = |links: &Links| -> Result<Option<Arc<Volume>>, String> {
        match &links.target_of {
            Some(r) if r.failed.load(std::sync::atomic::Ordering::Acquire) => {
                Err(r.target.name.clone())
            }
            Some(r) if !r.bitmap.get(track) => Ok(Some(r.source.clone())),
            _ => Ok(None),
        }
    };
    let Some(mut view) = step(links)? else {
        return Ok(None);
    };
    loop {
        let up = step(&view.links.read())?;
        match up {
            Some(next) => view = next,
            None => return Ok(Some(view)),
        }
    }
}

/// The file holding `vol`'s view of `track`.
pub(crate) fn view_file(
    vol: &Volume,
    links: &Links,
    track: u64,
) -> Result<Arc<dyn BlockFile>, String> {
    Ok(match view_source(links, track)? {
        Some(v) => v.file.clone(),
        None => vol.file.clone(),
    })
}

#[derive(Debug)]
pub(crate) struct Volume {
    pub id: u64,
    pub name: String,
    pub geometry: Geometry,
    pub file: Arc<dyn BlockFile>,
    pub created_ms: u64,
    pub contents_undefined: AtomicBool,
    pub deleted: AtomicBool,
    /// The relationships this volume takes part in. Changed only under the engine's topology
    /// lock held exclusively; read under it held shared, so a request sees one consistent graph.
    pub links: RwLock<Links>,
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
            links: RwLock::new(Links::default()),
            cache: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(std::collections::BTreeSet::new()),
            write_error: Mutex::new(None),
            provisioning: record.provisioning,
            pool,
            thin,
            frozen_until: Mutex::new(None),
            thawed: parking_lot::Condvar::new(),
        }
    }

    /// True while hosts may not write: the target of a live relationship with write inhibit.
    pub fn write_inhibited(&self) -> bool {
        self.links
            .read()
            .target_of
            .as_ref()
            .is_some_and(|r| r.is_live() && r.inhibit.load(std::sync::atomic::Ordering::Acquire))
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

    pub fn info(&self) -> VolumeInfo {
        use std::sync::atomic::Ordering;
        let links = self.links.read();
        VolumeInfo {
            name: self.name.clone(),
            capacity_bytes: self.geometry.capacity,
            track_size: self.geometry.track_size,
            allocated_bytes: self.file.allocated_bytes().unwrap_or(0),
            created_ms: self.created_ms,
            source_of: links
                .source_of
                .iter()
                .map(|r| r.target.name.clone())
                .collect(),
            target_of: links.target_of.as_ref().map(|r| r.source.name.clone()),
            contents_undefined: self.contents_undefined.load(Ordering::Acquire),
            pool: self.pool.as_ref().map(|p| p.name.clone()),
            provisioning: self.provisioning,
            frozen: self.is_frozen(),
            write_inhibited: links
                .target_of
                .as_ref()
                .is_some_and(|r| r.is_live() && r.inhibit.load(Ordering::Acquire)),
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

/// The files a volume still reads through: each source up its cascade whose copy to the volume
/// below it is incomplete. Syncing them with the volume's own file makes its whole view durable.
pub(crate) fn upstream_files(links: &Links) -> Vec<(String, Arc<dyn BlockFile>)> {
    let mut files = Vec::new();
    let mut rel = links.target_of.clone();
    while let Some(r) = rel {
        if !r.is_live() || r.bitmap.is_full() {
            break;
        }
        files.push((r.source.name.clone(), r.source.file.clone()));
        rel = r.source.links.read().target_of.clone();
    }
    files
}

/// Makes a volume's whole view durable: its file and every file it still reads through.
pub(crate) fn sync_view(vol: &Volume) -> std::io::Result<()> {
    vol.file.sync()?;
    for (_, file) in upstream_files(&vol.links.read()) {
        file.sync()?;
    }
    Ok(())
}
