//! Withdraw: end a relationship now (`rmflash`), or when its background copy completes
//! (`rmflash --cp`).
//!
//! If the target is itself a source (A→B→C, withdrawing A→B), every C track that still reads
//! through B into A is first copied to C ("cleaning"), so C's point in time never changes. A
//! complete copy is synced before the catalog forgets the relationship; an incomplete one leaves
//! the target's contents undefined. Tracks the target holds for older targets of the same
//! source (see [`crate::topology`]) are pushed down to them first.

use crate::bitmap::Bitmap;
use crate::catalog::KIND_CHANGED_SOURCE;
use crate::copy::copy_to_target;
use crate::engine::{Engine, Inner};
use crate::error::FlashError;
use crate::relationship::{FlashInfo, Rel, SOURCE};
use crate::topology::Topology;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Tracks cleaned per persist while withdrawing the middle of a cascade.
const CLEAN_BATCH: usize = 1024;

impl Inner {
    /// Ends a relationship. The caller holds `admin`. Pending writes of both volumes are
    /// destaged first with the relationship still in place.
    pub(crate) fn remove_rel(&self, rel: &Arc<Rel>) -> Result<(), FlashError> {
        let mut topology = self.topology.write();
        let (source, target) = topology.volumes_of(rel);
        self.destage_both(&topology, &source, &target)?;
        // Older targets of the same source that read tracks from this one get them first.
        self.push_down_all(&topology, rel)?;
        self.clean_downstream(&topology, rel)?;
        let complete = rel.is_complete();
        // A complete copy must be durable before nothing routes around it any more; an
        // incomplete one too, because the target's own targets read the tracks it did copy.
        target.file.sync().map_err(FlashError::Storage)?;
        let mut target_record = target.record();
        target_record.contents_undefined = !complete;
        // The target's uncopied tracks change (to undefined) without a host write: relationships
        // recording changes on it as a source must count them, or a resync or reverse would
        // take the two sides for equal there.
        let mut recorded = Vec::new();
        let recording_downstream: Vec<Arc<Rel>> = topology
            .source_of(target.id)
            .filter(|d| d.recording.load(Ordering::Acquire))
            .cloned()
            .collect();
        if !complete && !recording_downstream.is_empty() {
            let none = Bitmap::new(rel.bitmap.len());
            let uncopied = Bitmap::new(rel.bitmap.len());
            uncopied.set_all();
            uncopied.clear_where(&rel.bitmap, &none);
            for down in &recording_downstream {
                down.changed[SOURCE].set_where(&uncopied, &none);
                for chunk in down.changed[SOURCE].take_dirty() {
                    recorded.push((down.id, chunk, down.changed[SOURCE].encode_chunk(chunk)));
                }
            }
        }
        self.commit("withdrawing a relationship", |c| {
            c.delete_rel(rel.id)?;
            c.put_volume(&target_record)?;
            for (id, chunk, bytes) in &recorded {
                c.put_chunk_bytes(*id, KIND_CHANGED_SOURCE, *chunk, bytes)?;
            }
            Ok(())
        })?;
        rel.withdrawn.store(true, Ordering::Release);
        target
            .contents_undefined
            .store(!complete, Ordering::Release);
        let record = rel.record.lock().clone();
        if record.revert_pending {
            let _ = self.storage.remove(&record.undo_file_name());
        }
        topology.remove_rel(rel.id);
        Ok(())
    }

    /// Before `rel` (X→B) goes: copy to every target C of B each track C still reads through
    /// X. Runs under the exclusive topology lock, so no stripe is needed.
    fn clean_downstream(&self, topology: &Topology, rel: &Arc<Rel>) -> Result<(), FlashError> {
        if rel.is_complete() {
            return Ok(());
        }
        let downstream: Vec<Arc<Rel>> = topology
            .graph()
            .downstream(rel.id)
            .into_iter()
            .filter_map(|id| topology.rel(id).cloned())
            .filter(|r| r.is_live())
            .collect();
        let g = rel.geometry;
        for down in downstream {
            let down_target = topology.volume(down.target);
            let mut since_persist = 0;
            let mut track = 0;
            while let Some(t) = down.bitmap.next_clear(track) {
                track = t + 1;
                if rel.bitmap.get(t) {
                    continue; // C reads B's own file there, which stays.
                }
                let view = match topology.view_file(rel.target, t) {
                    Ok(view) => view,
                    Err(failed) => {
                        self.fail_rel(
                            &down,
                            &format!("its source's view is lost: {failed} failed"),
                        );
                        break;
                    }
                };
                let start = g.track_start(t);
                if let Err(e) = copy_to_target(&**view, down_target, start, start + g.track_len(t))
                {
                    // The downstream target cannot take its data (full pool, I/O error): that
                    // relationship fails, the withdraw goes on.
                    self.fail_rel(
                        &down,
                        &format!(
                            "cleaning before {}:{} was withdrawn failed: {e}",
                            rel.source_name, rel.target_name
                        ),
                    );
                    break;
                }
                down.bitmap.set(t);
                down.mark_unpersisted([t]);
                since_persist += 1;
                if since_persist >= CLEAN_BATCH {
                    self.persist(std::slice::from_ref(&down))?;
                    since_persist = 0;
                }
            }
            self.persist(std::slice::from_ref(&down))?;
        }
        Ok(())
    }
}

impl Engine {
    /// Withdraws a relationship now. An incomplete copy leaves the target's contents undefined.
    pub fn withdraw(&self, source: &str, target: &str) -> Result<(), FlashError> {
        self.inner.guard()?;
        let _admin = self.inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        self.inner.remove_rel(&rel)?;
        tracing::info!(source, target, "FlashCopy withdrawn");
        Ok(())
    }

    /// `rmflash --cp`: turns on the background copy and ends the relationship when it completes
    /// (even a persistent one).
    pub fn withdraw_after_copy(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        self.update_record_then(
            source,
            target,
            |r| {
                r.background_copy = true;
                r.withdraw_on_complete = true;
                Ok(())
            },
            // A copy that is already complete ends now; otherwise the copier ends it.
            |rel| {
                if rel.bitmap.is_full() {
                    inner.persist(std::slice::from_ref(rel))?;
                    inner.remove_rel(rel)?;
                }
                Ok(())
            },
        )
    }
}
