//! Incremental FlashCopy: `resyncflash` gives a recording relationship a new T0 and copies only
//! the tracks changed on either side since the last one. A revertible resync
//! (`setflashrevertible`) first keeps the target tracks it replaces in an undo file, so
//! `revertflash` can roll the target back and `commitflash` can make the new point in time
//! permanent.

use super::{check_no_dependents, check_no_pending_revert, check_not_failed};
use crate::bitmap::Bitmap;
use crate::catalog::{RelRecord, RelState, KIND_REVERT_SET};
use crate::copy::copy_punching_holes;
use crate::engine::Engine;
use crate::error::{FlashError, Refusal};
use crate::persist::put_record_and_bitmaps;
use crate::relationship::{now_ms, FlashInfo, FlashOptions, Rel, SOURCE, TARGET};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Engine {
    /// Incremental FlashCopy: a new T0 for an existing recording relationship. Only tracks
    /// changed on either side since the last T0 are copied again (changes on the target are
    /// overwritten from the source). O(1) in the volume size apart from one pass over the
    /// allocated chunks of the change bitmaps.
    pub fn resync(
        &self,
        source: &str,
        target: &str,
        opts: FlashOptions,
    ) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        if !rel.recording.load(Ordering::Acquire) {
            return Err(Refusal::NotRecording {
                src: source.to_string(),
                tgt: target.to_string(),
                action: "resync",
            }
            .into());
        }
        check_not_failed(&rel)?;
        check_no_pending_revert(&rel)?;
        let mut topology = inner.topology.write();
        let (src_vol, tgt_vol) = topology.volumes_of(&rel);
        check_no_dependents(&topology, &tgt_vol, &format!("resync onto {target}"))?;
        inner.destage_both(&topology, &src_vol, &tgt_vol)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        // The new T0 is durable before it is trusted (see `establish_group`).
        topology
            .sync_view(rel.source)
            .map_err(FlashError::Storage)?;
        // Older targets of the source that read tracks from this one get them first: its
        // point in time moves, and it becomes the newest target.
        inner.push_down_all(&topology, &rel)?;
        // Bits copied but not yet durable become durable first, so what we commit below is a
        // complete picture.
        inner.persist(std::slice::from_ref(&rel))?;
        let mut record = rel.record.lock().clone();
        // The target changes on every re-copied track without a host write: its own
        // recording relationships must count them first.
        inner.record_view_change(
            &topology,
            &tgt_vol,
            Some((&rel.changed[SOURCE], &rel.changed[TARGET])),
            rel.id,
        )?;
        if record.revertible {
            // Keep the target tracks this resync will replace: copy them to the undo file and
            // make it durable before the new bitmaps are committed.
            rel.revert_set.clear_all();
            rel.revert_set
                .set_where(&rel.changed[SOURCE], &rel.changed[TARGET]);
            let undo = inner
                .storage
                .open(&record.undo_file_name(), true)
                .map_err(FlashError::Storage)?;
            let g = rel.geometry;
            undo.set_len(g.capacity).map_err(FlashError::Storage)?;
            let mut track = 0;
            while let Some(t) = rel.revert_set.next_set(track) {
                track = t + 1;
                let start = g.track_start(t);
                // The target's view: a track it never copied may be held by a newer sibling.
                let view = topology
                    .view_file(tgt_vol.id, t)
                    .map_err(|failed| Refusal::Failed {
                        src: source.to_string(),
                        tgt: target.to_string(),
                        reason: format!("its T0 data held by {failed} is lost"),
                    })?;
                copy_punching_holes(&**view, &*undo, start, start + g.track_len(t))
                    .map_err(FlashError::Storage)?;
            }
            undo.sync().map_err(FlashError::Storage)?;
            record.revert_pending = true;
            record.revertible = false;
            record.previous_synced_ms = record.synced_ms;
        }
        rel.bitmap
            .clear_where(&rel.changed[SOURCE], &rel.changed[TARGET]);
        for side in &rel.changed {
            side.clear_all();
        }
        rel.shared.clear_all();
        record.state = RelState::Active;
        record.synced_ms = now_ms();
        record.recording = opts.recording;
        record.persistent = opts.persistent || record.persistent;
        record.background_copy = record.background_copy || opts.background_copy;
        record.withdraw_on_complete = false;
        inner.commit("resyncing a relationship", |change| {
            // The new point in time makes it the newest target of its source.
            record.t0_seq = change.next_id()?;
            put_record_and_bitmaps(change, &rel, &record)
        })?;
        rel.recording.store(record.recording, Ordering::Release);
        *rel.record.lock() = record;
        rel.copy_cursor.store(0, Ordering::Release);
        topology.move_to_newest(rel.id);
        // The topology stays locked until the answer is taken: the copier must not move bits
        // before the caller sees the relationship as this operation left it.
        inner.kick();
        tracing::info!(
            source,
            target,
            recopy = rel.bitmap.clear_count(),
            "FlashCopy resynced"
        );
        Ok(rel.info())
    }

    /// `setflashrevertible`: the next resync of this incremental relationship keeps the
    /// previous point-in-time copy restorable until `commitflash` or `revertflash`.
    pub fn set_revertible(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let pair = || (source.to_string(), target.to_string());
        self.update_record(source, target, |r| {
            if !r.recording {
                let (src, tgt) = pair();
                return Err(Refusal::NotRecording {
                    src,
                    tgt,
                    action: "make it revertible",
                });
            }
            if r.revert_pending {
                let (src, tgt) = pair();
                return Err(Refusal::RevertPending { src, tgt });
            }
            r.revertible = true;
            Ok(())
        })
    }

    /// The relationship and a copy of its record, when a revertible resync awaits commit or
    /// revert (`action`). The caller holds `admin`.
    fn pending_revert(
        &self,
        source: &str,
        target: &str,
        action: &'static str,
    ) -> Result<(Arc<Rel>, RelRecord), FlashError> {
        let rel = self.find_rel(source, target)?;
        let record = rel.record.lock().clone();
        if !record.revert_pending {
            return Err(Refusal::NotRevertible {
                src: source.to_string(),
                tgt: target.to_string(),
                action,
                made_revertible: record.revertible,
            }
            .into());
        }
        Ok((rel, record))
    }

    /// `commitflash`: makes the point in time of a revertible resync permanent.
    pub fn commit_revertible(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        self.inner.guard()?;
        let _admin = self.inner.admin.lock();
        self.commit_locked(source, target)
    }

    /// `commitflash -seqnum` / `revertflash -seqnum`: settles every relationship with the
    /// sequence number, all or none: each must have a revertible resync pending (and, to
    /// revert, be free of failures and dependents), checked under `admin` before any changes.
    pub fn settle_seqnum(&self, seqnum: u32, commit: bool) -> Result<Vec<FlashInfo>, FlashError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let pairs: Vec<(String, String)> = inner
            .topology
            .read()
            .rels()
            .filter(|r| !r.to_backup() && r.record.lock().seqnum == seqnum)
            .map(|r| (r.source_name.clone(), r.target_name.clone()))
            .collect();
        if pairs.is_empty() {
            return Err(FlashError::SeqnumNotFound(seqnum));
        }
        let action = if commit { "commit" } else { "revert" };
        for (source, target) in &pairs {
            let (rel, _) = self.pending_revert(source, target, action)?;
            if !commit {
                check_not_failed(&rel)?;
                let topology = inner.topology.read();
                let tgt_vol = topology.volume(rel.target);
                check_no_dependents(&topology, tgt_vol, &format!("revert {target}"))?;
            }
        }
        pairs
            .iter()
            .map(|(s, t)| {
                if commit {
                    self.commit_locked(s, t)
                } else {
                    self.revert_locked(s, t)
                }
            })
            .collect()
    }

    /// `commitflash` of one pair; the caller holds `admin`.
    fn commit_locked(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let (rel, mut record) = self.pending_revert(source, target, "commit")?;
        record.revert_pending = false;
        rel.revert_set.clear_all();
        rel.revert_set.take_dirty();
        inner.commit("committing a revertible resync", |c| {
            c.put_rel(&record)?;
            c.delete_bitmap(rel.id, KIND_REVERT_SET)
        })?;
        let undo = record.undo_file_name();
        *rel.record.lock() = record;
        if let Err(e) = inner.storage.remove(&undo) {
            tracing::warn!(error = %e, file = %undo, "could not remove the undo file");
        }
        Ok(rel.info())
    }

    /// `revertflash`: rolls the target back to the point in time before the revertible resync.
    pub fn revert(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        self.inner.guard()?;
        let _admin = self.inner.admin.lock();
        self.revert_locked(source, target)
    }

    /// `revertflash` of one pair; the caller holds `admin`.
    fn revert_locked(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let (rel, mut record) = self.pending_revert(source, target, "revert")?;
        let topology = inner.topology.write();
        let (src_vol, tgt_vol) = topology.volumes_of(&rel);
        check_no_dependents(&topology, &tgt_vol, &format!("revert {target}"))?;
        inner.destage_both(&topology, &src_vol, &tgt_vol)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        // The restore changes tracks older targets of the source may read from this one.
        inner.push_down_all(&topology, &rel)?;
        inner.persist(std::slice::from_ref(&rel))?;
        let undo = inner
            .storage
            .open(&record.undo_file_name(), false)
            .map_err(FlashError::Storage)?;
        let g = rel.geometry;
        let mut track = 0;
        let none = Bitmap::new(rel.bitmap.len());
        let restore = Bitmap::new(rel.bitmap.len());
        restore.set_where(&rel.revert_set, &none);
        inner.record_view_change(&topology, &tgt_vol, Some((&restore, &none)), rel.id)?;
        // Restore the previous target tracks; the copy is idempotent, so a crash before the
        // commit below just makes the next revert do it again.
        while let Some(t) = restore.next_set(track) {
            track = t + 1;
            let start = g.track_start(t);
            if let Err(e) =
                copy_punching_holes(&*undo, &*tgt_vol.file, start, start + g.track_len(t))
            {
                if !crate::error::is_no_space(&e) {
                    return Err(FlashError::Storage(e));
                }
                // A space-efficient target whose pool ran out part way holds neither point in
                // time any more: the relationship fails visibly, as a copy into it would.
                let reason = format!("reverting into the target failed: {e}");
                inner.fail_rel(&rel, &reason);
                return Err(Refusal::Failed {
                    src: source.to_string(),
                    tgt: target.to_string(),
                    reason,
                }
                .into());
            }
        }
        tgt_vol.file.sync().map_err(FlashError::Storage)?;
        // The restored tracks hold the previous point in time; the source differs from it
        // there, so they count as changed on the source side.
        rel.bitmap.set_where(&restore, &none);
        rel.changed[SOURCE].set_where(&restore, &none);
        rel.revert_set.clear_all();
        record.revert_pending = false;
        record.synced_ms = record.previous_synced_ms;
        inner.commit("reverting a resync", |c| {
            put_record_and_bitmaps(c, &rel, &record)?;
            c.delete_bitmap(rel.id, KIND_REVERT_SET)
        })?;
        let undo_name = record.undo_file_name();
        *rel.record.lock() = record;
        drop(undo);
        let _ = inner.storage.remove(&undo_name);
        tracing::info!(
            source,
            target,
            restored = restore.count(),
            "FlashCopy reverted"
        );
        Ok(rel.info())
    }
}
