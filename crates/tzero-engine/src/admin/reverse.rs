//! Reverse restore (`reverseflash`): the source returns to the target's point-in-time contents,
//! and the pair becomes `target:source`. Fast reverse restore need not wait for the original
//! background copy, at the price of leaving an incompletely copied target undefined.

use super::{check_no_pending_revert, check_not_failed, reads_through};
use crate::bitmap::Bitmap;
use crate::catalog::{RelRecord, RelState};
use crate::engine::Engine;
use crate::error::{FlashError, Refusal};
use crate::relationship::{now_ms, FlashInfo, Rel, SOURCE, TARGET};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Engine {
    /// Reverse restore: the source returns to the target's point-in-time contents, copying only
    /// the tracks that may differ (those changed on either side, with change recording; every
    /// copied track without it). The pair is then addressed as `target:source`. Without `fast`,
    /// the original background copy must be complete; with it (fast reverse restore) it need
    /// not be, the reversed relationship ends when its copy completes, and a target whose copy
    /// was incomplete is left undefined.
    pub fn reverse(&self, source: &str, target: &str, fast: bool) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        check_not_failed(&rel)?;
        check_no_pending_revert(&rel)?;
        let complete = rel.bitmap.is_full();
        if !fast && !complete {
            return Err(Refusal::CopyIncomplete {
                src: source.to_string(),
                tgt: target.to_string(),
                remaining: rel.bitmap.clear_count(),
            }
            .into());
        }
        let mut topology = inner.topology.write();
        topology
            .graph()
            .check_reverse(rel.id, &reads_through(&topology), &*topology)?;
        let (src_vol, tgt_vol) = topology.volumes_of(&rel);
        inner.destage_both(&topology, &src_vol, &tgt_vol)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        // The source is restored from the target's own file: tracks it reads from a newer
        // sibling come into it first.
        inner.pull_shared(&topology, &rel)?;
        inner.persist(std::slice::from_ref(&rel))?;
        // The reversed relationship's T0 is the target as hosts see it now: make it durable,
        // including the tracks it still reads from the source's file.
        tgt_vol.file.sync().map_err(FlashError::Storage)?;
        topology
            .sync_view(src_vol.id)
            .map_err(FlashError::Storage)?;
        let old = rel.record.lock().clone();
        let none = Bitmap::new(rel.bitmap.len());
        {
            // The source changes on the tracks to restore: those changed on either side, or
            // every copied one without recording.
            let mask = if old.recording {
                (&rel.changed[SOURCE], &rel.changed[TARGET])
            } else {
                (&rel.bitmap, &none)
            };
            inner.record_view_change(&topology, &src_vol, Some(mask), rel.id)?;
        }
        let now = now_ms();
        let mut change = inner.catalog.change()?;
        let id = change.next_id()?;
        let record = RelRecord {
            id,
            source: tgt_vol.id,
            target: src_vol.id,
            background_copy: true,
            persistent: old.persistent && !fast,
            copy_rate: old.copy_rate,
            state: RelState::Active,
            created_ms: now,
            synced_ms: now,
            failure: None,
            recording: old.recording,
            withdraw_on_complete: false,
            target_inhibit: false,
            seqnum: old.seqnum,
            revertible: false,
            revert_pending: false,
            previous_synced_ms: 0,
            t0_seq: id,
        };
        let reversed = Arc::new(Rel::new(record.clone(), &tgt_vol, &src_vol));
        // Clear bits are the tracks to restore; everything else the source already has.
        reversed.bitmap.set_all();
        if old.recording {
            reversed
                .bitmap
                .clear_where(&rel.changed[SOURCE], &rel.changed[TARGET]);
        } else {
            reversed.bitmap.clear_where(&rel.bitmap, &none);
        }
        let target_undefined = fast && !complete;
        if target_undefined && old.recording {
            // The old target's uncopied tracks are gone (they were the source's, which is being
            // restored over): count them as changed, so a later resync cannot take the two
            // volumes for equal there.
            let uncopied = Bitmap::new(rel.bitmap.len());
            uncopied.set_all();
            uncopied.clear_where(&rel.bitmap, &none);
            reversed.changed[SOURCE].set_where(&uncopied, &none);
        }
        let mut target_record = tgt_vol.record();
        target_record.contents_undefined = target_undefined;
        let mut source_record = src_vol.record();
        source_record.contents_undefined = false;
        change.delete_rel(rel.id)?;
        change.put_rel(&record)?;
        change.put_volume(&target_record)?;
        change.put_volume(&source_record)?;
        for (kind, bitmap) in reversed.bitmaps() {
            for chunk in bitmap.take_dirty() {
                change.put_chunk_bytes(record.id, kind, chunk, &bitmap.encode_chunk(chunk))?;
            }
        }
        if let Err(e) = change.commit() {
            inner.poison("reversing a relationship", &e);
            return Err(FlashError::Poisoned);
        }
        rel.withdrawn.store(true, Ordering::Release);
        tgt_vol
            .contents_undefined
            .store(target_undefined, Ordering::Release);
        src_vol.contents_undefined.store(false, Ordering::Release);
        topology.remove_rel(rel.id);
        topology.insert_rel(reversed.clone());
        // The topology stays locked until the answer is taken: the copier must not move bits
        // before the caller sees the relationship as this operation left it.
        inner.kick();
        tracing::info!(
            source,
            target,
            fast,
            restore = reversed.bitmap.clear_count(),
            "FlashCopy reversed"
        );
        Ok(reversed.info())
    }
}
