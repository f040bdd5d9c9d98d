//! A volume: its file, geometry, write cache and the relationships it takes part in.

use crate::cache::PendingTrack;
use crate::geometry::Geometry;
use crate::relationship::Rel;
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
    /// owes T0 data for it, durably. Callers hold the track's stripe.
    pub fn write_through_ok(&self, track: u64) -> bool {
        let owed = |r: &Arc<Rel>| r.is_live() && !r.durably_copied(track);
        !self.source_of.iter().any(owed) && !self.target_of.as_ref().is_some_and(owed)
    }
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
    /// The volume's gate: host I/O holds it shared for each request; relationship changes hold
    /// it exclusively, so a request sees one consistent set of relationships.
    pub links: RwLock<Links>,
    /// Pending writes by track (see [`crate::cache`]).
    pub cache: Mutex<BTreeMap<u64, PendingTrack>>,
    /// A destage that failed after the host was answered; the next flush reports it.
    pub write_error: Mutex<Option<String>>,
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
}

impl Volume {
    pub fn info(&self) -> VolumeInfo {
        use std::sync::atomic::Ordering;
        let links = self.links.read();
        VolumeInfo {
            name: self.name.clone(),
            capacity_bytes: self.geometry.capacity,
            track_size: self.geometry.track_size,
            allocated_bytes: self.file.allocated_bytes().unwrap_or(0),
            created_ms: self.created_ms,
            source_of: links.source_of.iter().map(|r| r.target.name.clone()).collect(),
            target_of: links.target_of.as_ref().map(|r| r.source.name.clone()),
            contents_undefined: self.contents_undefined.load(Ordering::Acquire),
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
