//! Striped track locks: the one lock that orders host I/O, copy-on-write, destage and background
//! copy on a track.
//!
//! Track `t` of every volume maps to the same stripe, because a relationship relates track `t` of
//! its source to track `t` of its target, so one lock covers the track on all related volumes.
//! Host reads and writes hold a stripe shared for one track at a time. Everything that changes a
//! bitmap bit or moves T0 data (destage, background copy) holds its stripes exclusively and takes
//! several in ascending stripe order, so no two such holders can deadlock.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const STRIPES: usize = 65536;

#[derive(Debug)]
pub struct TrackLocks {
    stripes: Box<[RwLock<()>]>,
}

impl Default for TrackLocks {
    fn default() -> Self {
        TrackLocks {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

fn stripe_of(track: u64) -> usize {
    (track % STRIPES as u64) as usize
}

impl TrackLocks {
    pub fn shared(&self, track: u64) -> RwLockReadGuard<'_, ()> {
        self.stripes[stripe_of(track)].read()
    }

    /// Locks every stripe the tracks map to, exclusively, in ascending stripe order.
    pub fn exclusive(&self, tracks: &[u64]) -> Vec<RwLockWriteGuard<'_, ()>> {
        let mut stripes: Vec<usize> = tracks.iter().map(|t| stripe_of(*t)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| self.stripes[s].write())
            .collect()
    }
}
