//! Establish: a relationship source→target at this instant (T0), alone or as a consistency
//! group of pairs that share one T0, optionally followed by a freeze of the sources.
//!
//! Cost does not depend on the volume size: the caches of the volumes involved are destaged (the
//! cache is bounded), one catalog transaction makes every pair, and the bitmaps start empty and
//! unallocated.

use super::reads_through;
use crate::catalog::RelRecord;
use crate::engine::Engine;
use crate::error::{FlashError, Refusal};
use crate::graph::Edge;
use crate::relationship::{now_ms, FlashInfo, FlashOptions, Rel};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Engine {
    /// Establishes source→target at this instant (T0).
    pub fn establish(
        &self,
        source: &str,
        target: &str,
        opts: FlashOptions,
    ) -> Result<FlashInfo, FlashError> {
        let pair = [(source.to_string(), target.to_string())];
        let mut infos = self.establish_group(&pair, opts, None)?;
        Ok(infos.remove(0))
    }

    /// Consistency group: establishes every pair at one T0, ordered against host writes on all
    /// sources (the topology lock is held exclusively across the whole group, so a write
    /// acknowledged before T0 is in every target and a write issued after it is in none).
    /// All pairs are checked before any is made; one catalog transaction makes them all.
    /// With `freeze`, the sources' writes are then held (queued, never failed) until
    /// [`Engine::unfreeze`] or the timeout, DS8000's extended long busy.
    pub fn establish_group(
        &self,
        pairs: &[(String, String)],
        opts: FlashOptions,
        freeze: Option<std::time::Duration>,
    ) -> Result<Vec<FlashInfo>, FlashError> {
        let inner = &self.inner;
        inner.guard()?;
        if pairs.is_empty() {
            return Err(Refusal::NoPairs.into());
        }
        let _admin = inner.admin.lock();
        let mut volumes = Vec::new();
        for (source, target) in pairs {
            let (src, tgt) = self.volumes_for(source, target)?;
            if src.id != tgt.id {
                for (what, a, b) in [
                    ("capacity", src.geometry.capacity, tgt.geometry.capacity),
                    (
                        "track size",
                        src.geometry.track_size,
                        tgt.geometry.track_size,
                    ),
                ] {
                    if a != b {
                        return Err(Refusal::SizeMismatch {
                            src: source.clone(),
                            tgt: target.clone(),
                            what,
                        }
                        .into());
                    }
                }
            }
            volumes.push((src, tgt));
        }
        let mut topology = inner.topology.write();
        let edges: Vec<Edge> = volumes
            .iter()
            .map(|(s, t)| Edge {
                source: s.id,
                target: t.id,
            })
            .collect();
        topology
            .graph()
            .check_establish(&edges, &reads_through(&topology), &*topology)?;
        // Writes acknowledged before T0 belong to T0: put them on disk.
        for (src, tgt) in &volumes {
            inner.destage_all(&topology, src)?;
            let dropped: u64 = {
                // The target's own pending writes are superseded by T0.
                let mut cache = tgt.cache.lock();
                let held = cache.values().map(|p| p.bytes()).sum();
                cache.clear();
                held
            };
            inner.budget.release(dropped);
        }
        // The sources are not synced: T0 holds what hosts saw, and writes they have not
        // flushed stay exactly as volatile in the targets as in the sources (a crash may lose
        // them on both; a target's flush makes its T0 durable). Syncing here would hold every
        // host write for as long as the sources' dirty data takes to reach the disk.
        // Incremental relationships are the exception: a resync trusts that tracks changed on
        // neither side are equal, which an unflushed source write lost in a crash after the
        // copy took it would break. Their T0 is made durable here.
        for (src, tgt) in &volumes {
            if opts.recording {
                topology.sync_view(src.id).map_err(FlashError::Storage)?;
            }
            inner.record_view_change(&topology, tgt, None, 0)?;
        }
        let now = now_ms();
        let mut change = inner.catalog.change_growing()?;
        let mut rels = Vec::new();
        for (src, tgt) in &volumes {
            let id = change.next_id()?;
            let record = RelRecord::established(id, src.id, tgt.id, &opts, now);
            let mut tgt_record = tgt.record();
            tgt_record.contents_undefined = false;
            change.put_rel(&record)?;
            change.put_volume(&tgt_record)?;
            rels.push(Arc::new(Rel::new(record, src, tgt)));
        }
        if let Err(e) = change.commit() {
            inner.poison("establishing relationships", &e);
            return Err(FlashError::Poisoned);
        }
        for ((_, tgt), rel) in volumes.iter().zip(&rels) {
            tgt.contents_undefined.store(false, Ordering::Release);
            topology.insert_rel(rel.clone());
        }
        if let Some(timeout) = freeze {
            // Set before the topology lock is released: no write slips in between.
            let deadline = super::freeze::freeze_deadline(timeout);
            for (src, _) in &volumes {
                *src.frozen_until.lock() = Some(deadline);
            }
        }
        // The topology stays locked until the answer is taken: the copier must not move bits
        // before the caller sees the relationship as this operation left it.
        inner.kick();
        for rel in &rels {
            tracing::info!(source = %rel.source_name, target = %rel.target_name, ?opts, frozen = freeze.is_some(), "FlashCopy established");
        }
        Ok(rels.iter().map(|r| r.info()).collect())
    }
}
