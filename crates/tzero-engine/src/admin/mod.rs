//! Relationship administration, one module per operation: [`establish`] (with consistency
//! groups), [`withdraw`] (with cascade cleaning), [`resync`] (incremental, revertible),
//! [`reverse`] (restore), [`freeze`], and [`settings`] (NOCOPY→COPY, rate, target inhibit).
//!
//! Every operation runs under `admin` and takes the topology lock exclusively while it changes
//! the graph, so no host request, destage batch or copy step sees it half changed. Each one
//! first destages the caches of the volumes involved (bounded by the cache size, not the volume
//! size), then commits one catalog transaction, then changes the in-memory topology. The rules
//! themselves live in [`crate::graph`]; refusals are [`Refusal`]s, checked once, here.

mod establish;
mod freeze;
mod resync;
mod reverse;
mod settings;
mod withdraw;

pub use freeze::freeze_deadline;

use crate::bitmap::Bitmap;
use crate::engine::{Engine, Inner};
use crate::error::{FlashError, Refusal};
use crate::graph::RelId;
use crate::relationship::{Rel, SOURCE};
use crate::topology::Topology;
use crate::volume::Volume;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Inner {
    /// Destages the pending writes of two volumes with the topology as it is.
    fn destage_both(
        &self,
        topology: &Topology,
        a: &Arc<Volume>,
        b: &Arc<Volume>,
    ) -> Result<(), FlashError> {
        for vol in [a, b] {
            self.destage_all(topology, vol)?;
        }
        Ok(())
    }

    /// `vol`'s view is about to change without a host write (it becomes a target, is resynced
    /// onto, or restored): on the tracks set in `a` or `b`, or on every track when `mask` is
    /// None. Every relationship that records changes with `vol` as its source must count those
    /// tracks, durably and before the change itself is committed; counting too many only makes
    /// a later resync copy more.
    fn record_view_change(
        &self,
        topology: &Topology,
        vol: &Volume,
        mask: Option<(&Bitmap, &Bitmap)>,
        except: RelId,
    ) -> Result<(), FlashError> {
        let recording: Vec<Arc<Rel>> = topology
            .source_of(vol.id)
            .filter(|r| r.id != except && r.recording.load(Ordering::Acquire))
            .cloned()
            .collect();
        for rel in &recording {
            match mask {
                Some((a, b)) => rel.changed[SOURCE].set_where(a, b),
                None => rel.changed[SOURCE].set_all(),
            }
        }
        Ok(self.persist(&recording)?)
    }
}

/// The predicate the graph rules take: "this relationship's target still reads through its
/// source".
fn reads_through(topology: &Topology) -> impl Fn(RelId) -> bool + '_ {
    move |rel| topology.reads_through(rel)
}

/// Refuses when `vol` still has targets reading through it.
fn check_no_dependents(topology: &Topology, vol: &Volume, action: &str) -> Result<(), Refusal> {
    topology
        .graph()
        .check_no_dependents(vol.id, action, &reads_through(topology), topology)
}

/// Refuses to go on with a relationship that has failed.
fn check_not_failed(rel: &Rel) -> Result<(), Refusal> {
    if rel.failed.load(Ordering::Acquire) {
        return Err(Refusal::Failed {
            src: rel.source_name.clone(),
            tgt: rel.target_name.clone(),
            reason: rel.record.lock().failure.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// Refuses while a revertible resync awaits commit or revert.
fn check_no_pending_revert(rel: &Rel) -> Result<(), Refusal> {
    if rel.record.lock().revert_pending {
        return Err(Refusal::RevertPending {
            src: rel.source_name.clone(),
            tgt: rel.target_name.clone(),
        });
    }
    Ok(())
}

impl Engine {
    fn volumes_for(
        &self,
        source: &str,
        target: &str,
    ) -> Result<(Arc<Volume>, Arc<Volume>), FlashError> {
        let topology = self.inner.topology.read();
        let find = |name: &str| {
            topology
                .by_name(name)
                .cloned()
                .ok_or_else(|| FlashError::VolumeNotFound(name.to_string()))
        };
        let (src, tgt) = (find(source)?, find(target)?);
        // A backup is nobody's target but its own source's, and that relationship is the
        // Safeguarded Copy's alone. As a source (a volume recovered from it) it is only read.
        if tgt.is_backup() {
            return Err(Refusal::IsBackup(target.to_string()).into());
        }
        Ok((src, tgt))
    }

    pub(crate) fn find_rel(&self, source: &str, target: &str) -> Result<Arc<Rel>, FlashError> {
        self.volumes_for(source, target)?;
        self.inner
            .topology
            .read()
            .find_rel(source, target)
            .cloned()
            .ok_or_else(|| FlashError::NotFound(source.to_string(), target.to_string()))
    }
}
