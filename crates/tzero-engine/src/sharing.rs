//! One copy, whatever the number of targets: the copy-on-write that serves every target of a
//! source at once, and the push-down that keeps older targets' data when its holder changes.
//! The rules of which target holds what are in [`crate::topology`].

use crate::copy::copy_to_target;
use crate::engine::Inner;
use crate::graph::VolId;
use crate::relationship::Rel;
use crate::topology::Topology;
use crate::volume::Volume;
use std::sync::Arc;

impl Inner {
    /// Before `source` overwrites `track`: copies its current view of the track to the newest
    /// target that still reads it from the source, once, and marks it shared when older
    /// targets read it too. A target the copy cannot be made to fails, and the next one takes
    /// its place. The changed relationships go to `touched`, to be persisted before the write.
    pub(crate) fn copy_on_write(
        &self,
        topology: &Topology,
        source: &Volume,
        track: u64,
        touched: &mut Vec<Arc<Rel>>,
    ) {
        while let Some(rel) = topology.needs_copy(source.id, track, false) {
            let copied = copy_view(topology, source.id, rel, track).map_err(|e| match e {
                Lost::View(failed) => format!("its source's view is lost: {failed} failed"),
                Lost::Copy(e) => format!("copy-on-write to target failed: {e}"),
            });
            if let Err(reason) = copied {
                // The relationship is no longer live: the loop moves on to the next target.
                self.fail_rel(rel, &reason);
                continue;
            }
            rel.counters.add_cow(rel.geometry.track_len(track));
            if topology.older_reader(rel, track) {
                rel.shared.set(track);
            }
            touched.push(rel.clone());
            break;
        }
    }

    /// Before `holder`'s `track` changes or goes: copies it to the nearest older target that
    /// reads it from `holder`, which becomes the holder for the targets older than itself.
    /// Then `holder` holds it no more.
    pub(crate) fn push_down(
        &self,
        topology: &Topology,
        holder: &Arc<Rel>,
        track: u64,
        touched: &mut Vec<Arc<Rel>>,
    ) {
        if !holder.shared.get(track) {
            return;
        }
        while let Some(rel) = topology.push_down_target(holder, track) {
            if !rel.bitmap.get(track) {
                // Its view of the track is the holder's file (or an error if the holder failed).
                let copied = copy_view(topology, rel.target, rel, track).map_err(|e| match e {
                    Lost::View(failed) => format!("the T0 data it shared with {failed} is lost"),
                    Lost::Copy(e) => format!("taking over a shared track failed: {e}"),
                });
                if let Err(reason) = copied {
                    self.fail_rel(rel, &reason);
                    continue;
                }
                rel.counters.add_cow(rel.geometry.track_len(track));
            }
            // Its copy may be the one older targets read from now.
            rel.shared.set(track);
            touched.push(rel.clone());
            break;
        }
        holder.shared.clear(track);
        touched.push(holder.clone());
    }

    /// Pushes down every track `holder` holds shared (before it is withdrawn, resynced or
    /// reverted), and makes the result durable.
    pub(crate) fn push_down_all(
        &self,
        topology: &Topology,
        holder: &Arc<Rel>,
    ) -> Result<(), crate::error::IoError> {
        let mut touched = Vec::new();
        let mut track = 0;
        while let Some(t) = holder.shared.next_set(track) {
            track = t + 1;
            self.push_down(topology, holder, t, &mut touched);
            if touched.len() >= 2048 {
                self.persist(&touched)?;
                touched.clear();
            }
        }
        self.persist(&touched)
    }
}

impl Inner {
    /// Copies into `rel`'s target every track it reads from a newer sibling that holds it
    /// shared, so that its own file holds its whole point in time where it matters (before a
    /// reverse restores the source from it). Makes the result durable.
    pub(crate) fn pull_shared(
        &self,
        topology: &Topology,
        rel: &Arc<Rel>,
    ) -> Result<(), crate::error::FlashError> {
        let mut pulled = false;
        for holder in topology.newer_siblings(rel) {
            let mut track = 0;
            while let Some(t) = holder.shared.next_set(track) {
                track = t + 1;
                if rel.bitmap.get(t) {
                    continue;
                }
                copy_view(topology, rel.target, rel, t).map_err(|e| match e {
                    Lost::View(failed) => {
                        crate::error::FlashError::from(crate::error::Refusal::Failed {
                            src: rel.source_name.clone(),
                            tgt: rel.target_name.clone(),
                            reason: format!("its T0 data held by {failed} is lost"),
                        })
                    }
                    Lost::Copy(e) => crate::error::FlashError::Storage(e),
                })?;
                pulled = true;
            }
        }
        if pulled {
            self.persist(std::slice::from_ref(rel))?;
        }
        Ok(())
    }
}

/// Why a track could not be copied: the view it is copied from is gone (a failed volume's
/// name), or the copy itself failed.
enum Lost {
    View(String),
    Copy(std::io::Error),
}

/// Copies `from`'s view of `track` into `rel`'s target and sets the bit (not yet durable).
fn copy_view(topology: &Topology, from: VolId, rel: &Rel, track: u64) -> Result<(), Lost> {
    let g = rel.geometry;
    let (start, end) = (
        g.track_start(track),
        g.track_start(track) + g.track_len(track),
    );
    let view = topology.view_file(from, track).map_err(Lost::View)?;
    copy_to_target(&**view, topology.volume(rel.target), start, end).map_err(Lost::Copy)?;
    rel.bitmap.set(track);
    rel.mark_unpersisted([track]);
    Ok(())
}
