//! Making the engine's metadata durable: bitmaps (snapshot → sync target → commit), relationship
//! records, failures and completions.
//!
//! A catalog commit that fails poisons the engine ([`Inner::poison`]): the in-memory state may
//! then be ahead of the durable one, and only a reopen makes them agree again.

use crate::catalog::{Change, RelRecord, RelState, KIND_COPIED};
use crate::engine::Inner;
use crate::error::{CatalogError, Down, FlashError, IoError};
use crate::relationship::Rel;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Inner {
    /// Commits one catalog transaction built by `build`; on failure poisons the engine, naming
    /// `what` in the log.
    pub(crate) fn commit(
        &self,
        what: &str,
        build: impl FnOnce(&mut Change<'_>) -> Result<(), CatalogError>,
    ) -> Result<(), Down> {
        let committed = self.catalog.change().and_then(|mut change| {
            build(&mut change)?;
            change.commit()
        });
        committed.map_err(|e| {
            self.poison(what, &e);
            Down::Poisoned
        })
    }

    /// Commits `record` (and nothing else) or poisons.
    pub(crate) fn commit_record(&self, record: &RelRecord, what: &str) -> Result<(), Down> {
        self.commit(what, |c| c.put_rel(record))
    }

    /// Makes the in-memory bits of `rels` durable: snapshot the changed chunks, sync each
    /// target (so every snapshotted bit's data is on disk), then commit once.
    pub(crate) fn persist(&self, rels: &[Arc<Rel>]) -> Result<(), IoError> {
        self.check_poison()?;
        let mut rels: Vec<&Arc<Rel>> = rels.iter().collect();
        rels.sort_by_key(|r| r.id);
        rels.dedup_by_key(|r| r.id);
        let _guards: Vec<_> = rels.iter().map(|r| r.persist_lock.lock()).collect();
        let mut snapshots = Vec::new();
        for rel in &rels {
            if rel.withdrawn.load(Ordering::Acquire) {
                continue;
            }
            let pending: Vec<u64> = rel.unpersisted.lock().iter().copied().collect();
            let mut dirty = Vec::new();
            for (kind, bitmap) in rel.bitmaps() {
                for chunk in bitmap.take_dirty() {
                    dirty.push((kind, chunk, bitmap.encode_chunk(chunk)));
                }
            }
            if pending.is_empty() && dirty.is_empty() {
                continue;
            }
            // Only copied bits vouch for data in the target; change records and sharing marks
            // do not, and syncing every sibling's file would cost a sync per target.
            let vouches = !pending.is_empty() || dirty.iter().any(|d| d.0 == KIND_COPIED);
            if vouches {
                if let Err(e) = rel.target_file.sync() {
                    self.fail_rel(rel, &format!("syncing the target failed: {e}"));
                    continue;
                }
            }
            snapshots.push((*rel, pending, dirty));
        }
        if snapshots.is_empty() {
            return Ok(());
        }
        let committed = self.commit("persisting bitmaps", |change| {
            for (rel, _, dirty) in &snapshots {
                for (kind, chunk, bytes) in dirty {
                    change.put_chunk_bytes(rel.id, *kind, *chunk, bytes)?;
                }
            }
            Ok(())
        });
        if let Err(down) = committed {
            for (rel, _, dirty) in &snapshots {
                for (kind, bitmap) in rel.bitmaps() {
                    let chunks: Vec<u64> =
                        dirty.iter().filter(|d| d.0 == kind).map(|d| d.1).collect();
                    bitmap.mark_dirty(&chunks);
                }
            }
            return Err(down.into());
        }
        for (rel, pending, _) in snapshots {
            rel.clear_unpersisted(&pending);
        }
        Ok(())
    }

    /// Fails a relationship visibly: the target is no longer protected or readable, the source
    /// goes on without copy-on-write to it.
    pub(crate) fn fail_rel(&self, rel: &Rel, reason: &str) {
        // Only the first failure is recorded. The relationship stops routing I/O only once the
        // failure is durable: a write that went straight to a failed target's file must never
        // be hidden again by a relationship that comes back after a crash.
        if rel.failing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(source = %rel.source_name, target = %rel.target_name, reason, "FlashCopy relationship failed");
        let record = {
            let mut r = rel.record.lock();
            r.state = RelState::Failed;
            r.failure = Some(reason.to_string());
            r.clone()
        };
        // A failed commit poisons the engine, which then refuses all I/O: routing stops anyway.
        let _ = self.commit_record(&record, "recording a failed relationship");
        rel.failed.store(true, Ordering::Release);
    }

    /// Called when a COPY relationship has every bit set (and durable): a persistent one is
    /// marked copied, any other ends.
    pub(crate) fn complete(&self, rel: &Arc<Rel>) -> Result<(), FlashError> {
        let stays = {
            let r = rel.record.lock();
            r.persistent && !r.withdraw_on_complete
        };
        if stays {
            let record = {
                let mut r = rel.record.lock();
                if r.state != RelState::Active {
                    return Ok(());
                }
                // DateSynced stays the last establish or resync, as on the DS8000.
                r.state = RelState::Copied;
                r.clone()
            };
            self.commit_record(&record, "recording a completed copy")?;
            return Ok(());
        }
        let _admin = self.admin.lock();
        if rel.withdrawn.load(Ordering::Acquire) {
            return Ok(());
        }
        tracing::info!(source = %rel.source_name, target = %rel.target_name, "background copy complete; relationship ends");
        self.remove_rel(rel)
    }
}

/// Puts a relationship's record and every dirty chunk of its bitmaps into one catalog change.
pub(crate) fn put_record_and_bitmaps(
    change: &mut Change<'_>,
    rel: &Rel,
    record: &RelRecord,
) -> Result<(), CatalogError> {
    change.put_rel(record)?;
    for (kind, bitmap) in rel.bitmaps() {
        for chunk in bitmap.take_dirty() {
            change.put_chunk_bytes(rel.id, kind, chunk, &bitmap.encode_chunk(chunk))?;
        }
    }
    Ok(())
}
