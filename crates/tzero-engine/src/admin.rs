//! Relationship administration: establish, withdraw (with cascade cleaning), NOCOPY→COPY, copy
//! rate, incremental resync and reverse restore.
//!
//! Every operation here runs under `admin` and then the topology lock held exclusively, so no
//! host request, destage batch or copy step sees the relationship graph half changed. Each one
//! first destages the caches of the volumes involved (bounded by the cache size, not the volume
//! size), then commits one catalog transaction, then changes the in-memory links.
//!
//! Rules kept here (see ARCHITECTURE.md for the cascade diagram):
//! - a target has one source; a source has at most [`MAX_TARGETS_PER_SOURCE`] targets;
//! - no cycles; a volume may be a target and a source at once (cascading);
//! - a volume whose own targets still read through it (incomplete copies) cannot become a new
//!   target, be resynced onto, or be reversed over: that would change their point in time.

use crate::bitmap::Bitmap;
use crate::catalog::{RelRecord, RelState, KIND_CHANGED_SOURCE};
use crate::destage::{copy_into, copy_span};
use crate::engine::{io_to_flash, Engine, Inner};
use crate::error::FlashError;
use crate::relationship::{now_ms, FlashInfo, FlashOptions, Rel, MAX_TARGETS_PER_SOURCE};
use crate::relationship::{SOURCE, TARGET};
use crate::volume::{sync_view, view_file, Volume};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Tracks cleaned per persist while withdrawing the middle of a cascade.
const CLEAN_BATCH: usize = 1024;

impl Inner {
    /// Ends a relationship. The caller holds `admin`. Pending writes of both volumes are
    /// destaged first with the relationship still in place. If the target is itself a source
    /// (A→B→C, withdrawing A→B), every C track that still reads through B into A is first
    /// copied to C ("cleaning"), so C's point in time never changes. A complete copy is synced
    /// before the catalog forgets the relationship; an incomplete one leaves the target undefined.
    pub(crate) fn remove_rel(&self, rel: &Arc<Rel>) -> Result<(), FlashError> {
        let _topology = self.topology.write();
        self.destage_both(&rel.source, &rel.target)?;
        self.clean_downstream(rel)?;
        let complete = rel.is_complete();
        // A complete copy must be durable before nothing routes around it any more; an
        // incomplete one too, because the target's own targets read the tracks it did copy.
        rel.target.file.sync().map_err(FlashError::Storage)?;
        let mut target_record = self.volume_record(&rel.target);
        target_record.contents_undefined = !complete;
        // The target's uncopied tracks change (to undefined) without a host write: relationships
        // recording changes on it as a source must count them, or a resync or reverse would
        // take the two sides for equal there.
        let mut recorded = Vec::new();
        let recording_downstream = rel
            .target
            .links
            .read()
            .source_of
            .iter()
            .any(|d| d.recording.load(Ordering::Acquire));
        if !complete && recording_downstream {
            let none = Bitmap::new(rel.bitmap.len());
            let uncopied = Bitmap::new(rel.bitmap.len());
            uncopied.set_all();
            uncopied.clear_where(&rel.bitmap, &none);
            for down in rel.target.links.read().source_of.iter() {
                if down.recording.load(Ordering::Acquire) {
                    down.changed[SOURCE].set_where(&uncopied, &none);
                    for chunk in down.changed[SOURCE].take_dirty() {
                        recorded.push((down.id, chunk, down.changed[SOURCE].encode_chunk(chunk)));
                    }
                }
            }
        }
        let committed = self.catalog.change().and_then(|mut c| {
            c.delete_rel(rel.id)?;
            c.put_volume(&target_record)?;
            for (id, chunk, bytes) in &recorded {
                c.put_chunk_bytes(*id, KIND_CHANGED_SOURCE, *chunk, bytes)?;
            }
            c.commit()
        });
        if let Err(e) = committed {
            self.poison("withdrawing a relationship", &e);
            return Err(FlashError::Poisoned);
        }
        rel.withdrawn.store(true, Ordering::Release);
        rel.target
            .contents_undefined
            .store(!complete, Ordering::Release);
        let record = rel.record.lock().clone();
        if record.revert_pending {
            let _ = self.storage.remove(&record.undo_file_name());
        }
        rel.source
            .links
            .write()
            .source_of
            .retain(|r| r.id != rel.id);
        rel.target.links.write().target_of = None;
        self.registry.write().rels.remove(&rel.id);
        Ok(())
    }

    fn destage_both(&self, a: &Arc<Volume>, b: &Arc<Volume>) -> Result<(), FlashError> {
        for vol in [a, b] {
            let links = vol.links.read();
            self.destage_all(vol, &links).map_err(io_to_flash)?;
        }
        Ok(())
    }

    /// Before `rel` (X→B) goes: copy to every target C of B each track C still reads through
    /// X. Runs under the exclusive topology lock, so no stripe is needed.
    fn clean_downstream(&self, rel: &Arc<Rel>) -> Result<(), FlashError> {
        let downstream: Vec<Arc<Rel>> = rel
            .target
            .links
            .read()
            .source_of
            .iter()
            .filter(|r| r.is_live())
            .cloned()
            .collect();
        if downstream.is_empty() || rel.is_complete() {
            return Ok(());
        }
        let g = rel.target.geometry;
        let target_links = rel.target.links.read();
        for down in downstream {
            let mut since_persist = 0;
            let mut track = 0;
            while let Some(t) = down.bitmap.next_clear(track) {
                track = t + 1;
                if rel.bitmap.get(t) {
                    continue; // C reads B's own file there, which stays.
                }
                let view = match view_file(&rel.target, &target_links, t) {
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
                if let Err(e) = copy_into(&*view, &down.target, start, start + g.track_len(t)) {
                    // The downstream target cannot take its data (full pool, I/O error): that
                    // relationship fails, the withdraw goes on.
                    self.fail_rel(
                        &down,
                        &format!(
                            "cleaning before {}:{} was withdrawn failed: {e}",
                            rel.source.name, rel.target.name
                        ),
                    );
                    break;
                }
                down.bitmap.set(t);
                down.mark_unpersisted([t]);
                since_persist += 1;
                if since_persist >= CLEAN_BATCH {
                    self.persist(std::slice::from_ref(&down))
                        .map_err(io_to_flash)?;
                    since_persist = 0;
                }
            }
            self.persist(std::slice::from_ref(&down))
                .map_err(io_to_flash)?;
        }
        Ok(())
    }

    /// `vol`'s view is about to change without a host write (it becomes a target, is resynced
    /// onto, or restored): on the tracks set in `a` or `b`, or on every track when `a` is None.
    /// Every relationship that records changes with `vol` as its source must count those tracks,
    /// durably and before the change itself is committed; counting too many only makes a later
    /// resync copy more.
    fn record_view_change(
        &self,
        vol: &Volume,
        mask: Option<(&Bitmap, &Bitmap)>,
        except: u64,
    ) -> Result<(), FlashError> {
        let recording: Vec<Arc<Rel>> = vol
            .links
            .read()
            .source_of
            .iter()
            .filter(|r| r.id != except && r.recording.load(Ordering::Acquire))
            .cloned()
            .collect();
        for rel in &recording {
            match mask {
                Some((a, b)) => rel.changed[SOURCE].set_where(a, b),
                None => rel.changed[SOURCE].set_all(),
            }
        }
        self.persist(&recording).map_err(io_to_flash)
    }

    /// Commits `record` (and nothing else) or poisons.
    fn commit_record(&self, record: &RelRecord, what: &str) -> Result<(), FlashError> {
        let committed = self.catalog.change().and_then(|mut c| {
            c.put_rel(record)?;
            c.commit()
        });
        committed.map_err(|e| {
            self.poison(what, &e);
            FlashError::Poisoned
        })
    }
}

/// Refuses when `vol` still has targets reading through it.
fn check_no_dependents(vol: &Volume, action: &str) -> Result<(), FlashError> {
    let links = vol.links.read();
    if let Some(r) = links
        .source_of
        .iter()
        .find(|r| r.is_live() && !r.is_complete())
    {
        return Err(FlashError::Unsupported(format!(
            "cannot {action}: {} is the source of {}:{} whose copy is incomplete, and its point in time would change",
            vol.name, r.source.name, r.target.name
        )));
    }
    Ok(())
}

impl Engine {
    fn volumes_for(
        &self,
        source: &str,
        target: &str,
    ) -> Result<(Arc<Volume>, Arc<Volume>), FlashError> {
        let src = self
            .lookup(source)
            .ok_or_else(|| FlashError::VolumeNotFound(source.to_string()))?;
        let tgt = self
            .lookup(target)
            .ok_or_else(|| FlashError::VolumeNotFound(target.to_string()))?;
        Ok((src, tgt))
    }

    pub(crate) fn find_rel(&self, source: &str, target: &str) -> Result<Arc<Rel>, FlashError> {
        let (_, tgt) = self.volumes_for(source, target)?;
        let links = tgt.links.read();
        links
            .target_of
            .as_ref()
            .filter(|r| r.source.name == source)
            .cloned()
            .ok_or_else(|| FlashError::NotFound(source.to_string(), target.to_string()))
    }

    /// Establishes source→target at this instant (T0). Costs the same for any volume size:
    /// it destages what the cache holds for the two volumes, syncs the source so T0 is durable,
    /// and commits one catalog record; the bitmap starts empty and unallocated.
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
        if inner.poisoned.load(Ordering::Acquire) {
            return Err(FlashError::Poisoned);
        }
        if pairs.is_empty() {
            return Err(FlashError::Unsupported("no SRC:TGT pairs given".into()));
        }
        let _admin = inner.admin.lock();
        let mut volumes = Vec::new();
        for (source, target) in pairs {
            let (src, tgt) = self.volumes_for(source, target)?;
            if src.id == tgt.id {
                return Err(FlashError::SameVolume(source.clone()));
            }
            for (what, a, b) in [
                ("capacity", src.geometry.capacity, tgt.geometry.capacity),
                (
                    "track size",
                    src.geometry.track_size,
                    tgt.geometry.track_size,
                ),
            ] {
                if a != b {
                    return Err(FlashError::Mismatch {
                        src: source.clone(),
                        tgt: target.clone(),
                        what,
                    });
                }
            }
            volumes.push((src, tgt));
        }
        // Within one group a volume is a target at most once and never both source and target.
        for (i, (_, tgt)) in volumes.iter().enumerate() {
            if volumes[..i].iter().any(|(_, t)| t.id == tgt.id) {
                return Err(FlashError::Unsupported(format!(
                    "{} is named as a target twice",
                    tgt.name
                )));
            }
            if volumes.iter().any(|(s, _)| s.id == tgt.id) {
                return Err(FlashError::Unsupported(format!(
                    "{} is both a source and a target in one group",
                    tgt.name
                )));
            }
        }
        let _topology = inner.topology.write();
        for (src, tgt) in &volumes {
            if let Some(existing) = &tgt.links.read().target_of {
                return Err(FlashError::TargetHasSource {
                    target: tgt.name.clone(),
                    existing: existing.source.name.clone(),
                });
            }
            // A cycle: the target is the source or an ancestor of the source.
            let mut up = Some(src.clone());
            while let Some(v) = up {
                if v.id == tgt.id {
                    return Err(FlashError::Unsupported(format!(
                        "{}:{} would make a cycle: {} is upstream of {}",
                        src.name, tgt.name, tgt.name, src.name
                    )));
                }
                up = v.links.read().target_of.as_ref().map(|r| r.source.clone());
            }
            check_no_dependents(tgt, &format!("make {} a target", tgt.name))?;
            let new_targets = volumes.iter().filter(|(s, _)| s.id == src.id).count();
            if src.links.read().source_of.len() + new_targets > MAX_TARGETS_PER_SOURCE {
                return Err(FlashError::TooManyTargets(
                    src.name.clone(),
                    MAX_TARGETS_PER_SOURCE,
                ));
            }
        }
        // Writes acknowledged before T0 belong to T0: put them on disk and make them durable.
        for (src, tgt) in &volumes {
            {
                let links = src.links.read();
                inner.destage_all(src, &links).map_err(io_to_flash)?;
            }
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
                sync_view(src).map_err(FlashError::Storage)?;
            }
            inner.record_view_change(tgt, None, 0)?;
        }
        let now = now_ms();
        let mut change = inner.catalog.change()?;
        let mut rels = Vec::new();
        for (src, tgt) in &volumes {
            let record = RelRecord {
                id: change.next_id()?,
                source: src.id,
                target: tgt.id,
                background_copy: opts.background_copy,
                persistent: opts.persistent,
                copy_rate: opts.copy_rate,
                state: RelState::Active,
                created_ms: now,
                synced_ms: now,
                failure: None,
                recording: opts.recording,
                withdraw_on_complete: false,
                target_inhibit: opts.target_inhibit,
                seqnum: opts.seqnum,
                revertible: false,
                revert_pending: false,
                previous_synced_ms: 0,
            };
            let mut tgt_record = inner.volume_record(tgt);
            tgt_record.contents_undefined = false;
            change.put_rel(&record)?;
            change.put_volume(&tgt_record)?;
            rels.push(Arc::new(Rel::new(record, src.clone(), tgt.clone())));
        }
        if let Err(e) = change.commit() {
            inner.poison("establishing relationships", &e);
            return Err(FlashError::Poisoned);
        }
        for rel in &rels {
            rel.target
                .contents_undefined
                .store(false, Ordering::Release);
            rel.source.links.write().source_of.push(rel.clone());
            rel.target.links.write().target_of = Some(rel.clone());
            inner.registry.write().rels.insert(rel.id, rel.clone());
        }
        if let Some(timeout) = freeze {
            // Set before the topology lock is released: no write slips in between.
            let deadline = std::time::Instant::now() + timeout;
            for (src, _) in &volumes {
                *src.frozen_until.lock() = Some(deadline);
            }
        }
        inner.kick();
        for rel in &rels {
            tracing::info!(source = %rel.source.name, target = %rel.target.name, ?opts, frozen = freeze.is_some(), "FlashCopy established");
        }
        Ok(rels.iter().map(|r| r.info()).collect())
    }

    /// Holds write I/O on the given source volumes until [`Engine::unfreeze`] or `timeout`.
    pub fn freeze(
        &self,
        volumes: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), FlashError> {
        let _admin = self.inner.admin.lock();
        let mut found = Vec::new();
        for name in volumes {
            let vol = self
                .lookup(name)
                .ok_or_else(|| FlashError::VolumeNotFound(name.clone()))?;
            if vol.links.read().source_of.is_empty() {
                return Err(FlashError::Unsupported(format!(
                    "{name} is not the source of a FlashCopy relationship; only sources can be frozen"
                )));
            }
            found.push(vol);
        }
        let _topology = self.inner.topology.write();
        let deadline = std::time::Instant::now() + timeout;
        for vol in found {
            *vol.frozen_until.lock() = Some(deadline);
            tracing::info!(volume = %vol.name, ?timeout, "write I/O frozen");
        }
        Ok(())
    }

    /// Releases held writes (`unfreezeflash`). Every named volume must be frozen.
    pub fn unfreeze(&self, volumes: &[String]) -> Result<(), FlashError> {
        let _admin = self.inner.admin.lock();
        let mut found = Vec::new();
        for name in volumes {
            let vol = self
                .lookup(name)
                .ok_or_else(|| FlashError::VolumeNotFound(name.clone()))?;
            if !vol.is_frozen() {
                return Err(FlashError::Unsupported(format!("{name} is not frozen")));
            }
            found.push(vol);
        }
        for vol in found {
            *vol.frozen_until.lock() = None;
            vol.thawed.notify_all();
            tracing::info!(volume = %vol.name, "write I/O released");
        }
        Ok(())
    }

    /// Sets or lifts target write inhibit (`rmflash --resettgtinhibit` lifts it).
    pub fn set_target_inhibit(
        &self,
        source: &str,
        target: &str,
        inhibit: bool,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record_then(
            source,
            target,
            |r| {
                r.target_inhibit = inhibit;
                Ok(())
            },
            |rel| {
                rel.inhibit.store(inhibit, Ordering::Release);
                Ok(())
            },
        )
    }

    /// `setflashrevertible`: the next resync of this incremental relationship keeps the
    /// previous point-in-time copy restorable until `commitflash` or `revertflash`.
    pub fn set_revertible(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        self.update_record(source, target, |r| {
            if !r.recording {
                return Err(FlashError::Unsupported(format!(
                    "{source}:{target} does not record changes; only incremental relationships can be revertible"
                )));
            }
            if r.revert_pending {
                return Err(FlashError::Unsupported(format!(
                    "{source}:{target} already has a revertible resync to commit or revert"
                )));
            }
            r.revertible = true;
            Ok(())
        })
    }

    /// The relationship and a copy of its record, when a revertible resync awaits commit or
    /// revert. The caller holds `admin`.
    fn pending_revert(
        &self,
        source: &str,
        target: &str,
        otherwise: &str,
    ) -> Result<(Arc<Rel>, RelRecord), FlashError> {
        let rel = self.find_rel(source, target)?;
        let record = rel.record.lock().clone();
        if !record.revert_pending {
            return Err(FlashError::Unsupported(format!(
                "{source}:{target} is not revertible: {otherwise}"
            )));
        }
        Ok((rel, record))
    }

    /// `commitflash`: makes the point in time of a revertible resync permanent.
    pub fn commit_revertible(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let (rel, mut record) =
            self.pending_revert(source, target, "there is nothing to commit")?;
        record.revert_pending = false;
        rel.revert_set.clear_all();
        rel.revert_set.take_dirty();
        let committed = inner.catalog.change().and_then(|mut c| {
            c.put_rel(&record)?;
            c.delete_bitmap(rel.id, crate::catalog::KIND_REVERT_SET)?;
            c.commit()
        });
        if let Err(e) = committed {
            inner.poison("committing a revertible resync", &e);
            return Err(FlashError::Poisoned);
        }
        let undo = record.undo_file_name();
        *rel.record.lock() = record;
        if let Err(e) = inner.storage.remove(&undo) {
            tracing::warn!(error = %e, file = %undo, "could not remove the undo file");
        }
        Ok(rel.info())
    }

    /// `revertflash`: rolls the target back to the point in time before the revertible resync.
    pub fn revert(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let (rel, mut record) =
            self.pending_revert(source, target, "there is no revertible resync to revert")?;
        let _topology = inner.topology.write();
        check_no_dependents(&rel.target, &format!("revert {target}"))?;
        inner.destage_both(&rel.source, &rel.target)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        inner
            .persist(std::slice::from_ref(&rel))
            .map_err(io_to_flash)?;
        let undo = inner
            .storage
            .open(&record.undo_file_name(), false)
            .map_err(FlashError::Storage)?;
        let g = rel.target.geometry;
        let mut track = 0;
        let none = Bitmap::new(rel.bitmap.len());
        let restore = Bitmap::new(rel.bitmap.len());
        restore.set_where(&rel.revert_set, &none);
        inner.record_view_change(&rel.target, Some((&restore, &none)), rel.id)?;
        // Restore the previous target tracks; the copy is idempotent, so a crash before the
        // commit below just makes the next revert do it again.
        while let Some(t) = restore.next_set(track) {
            track = t + 1;
            let start = g.track_start(t);
            copy_span(&*undo, &*rel.target.file, start, start + g.track_len(t))
                .map_err(FlashError::Storage)?;
        }
        rel.target.file.sync().map_err(FlashError::Storage)?;
        // The restored tracks hold the previous point in time; the source differs from it
        // there, so they count as changed on the source side.
        rel.bitmap.set_where(&restore, &none);
        rel.changed[SOURCE].set_where(&restore, &none);
        rel.revert_set.clear_all();
        record.revert_pending = false;
        record.synced_ms = record.previous_synced_ms;
        let committed = (|| {
            let mut change = inner.catalog.change()?;
            change.put_rel(&record)?;
            for (kind, bitmap) in rel.bitmaps() {
                for chunk in bitmap.take_dirty() {
                    change.put_chunk_bytes(rel.id, kind, chunk, &bitmap.encode_chunk(chunk))?;
                }
            }
            change.delete_bitmap(rel.id, crate::catalog::KIND_REVERT_SET)?;
            change.commit()
        })();
        if let Err(e) = committed {
            inner.poison("reverting a resync", &e);
            return Err(FlashError::Poisoned);
        }
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

    /// Withdraws a relationship now. An incomplete copy leaves the target's contents undefined.
    pub fn withdraw(&self, source: &str, target: &str) -> Result<(), FlashError> {
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
                    inner
                        .persist(std::slice::from_ref(rel))
                        .map_err(io_to_flash)?;
                    inner.remove_rel(rel)?;
                }
                Ok(())
            },
        )
    }

    /// Turns NOCOPY into COPY.
    pub fn start_background_copy(
        &self,
        source: &str,
        target: &str,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record(source, target, |r| {
            if r.background_copy {
                return Err(FlashError::AlreadyCopy(
                    source.to_string(),
                    target.to_string(),
                ));
            }
            r.background_copy = true;
            Ok(())
        })
    }

    /// Changes the background copy rate (bytes per second, 0 = unlimited), also mid-copy.
    pub fn set_copy_rate(
        &self,
        source: &str,
        target: &str,
        rate: u64,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record(source, target, |r| {
            r.copy_rate = rate;
            Ok(())
        })
    }

    fn update_record(
        &self,
        source: &str,
        target: &str,
        f: impl FnOnce(&mut RelRecord) -> Result<(), FlashError>,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record_then(source, target, f, |_| Ok(()))
    }

    /// Changes a relationship's record durably, then runs `then` on it, all under `admin` so
    /// no other operation sees the record and the in-memory state disagree. Returns the
    /// relationship as it was after the change.
    fn update_record_then(
        &self,
        source: &str,
        target: &str,
        f: impl FnOnce(&mut RelRecord) -> Result<(), FlashError>,
        then: impl FnOnce(&Arc<Rel>) -> Result<(), FlashError>,
    ) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        let mut record = rel.record.lock().clone();
        f(&mut record)?;
        inner.commit_record(&record, "updating a relationship")?;
        *rel.record.lock() = record;
        let info = rel.info();
        then(&rel)?;
        inner.kick();
        Ok(info)
    }

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
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        if !rel.recording.load(Ordering::Acquire) {
            return Err(FlashError::Unsupported(format!(
                "{source}:{target} does not record changes; establish it with --record --persist to resync"
            )));
        }
        if rel.failed.load(Ordering::Acquire) {
            return Err(FlashError::Failed {
                src: source.to_string(),
                tgt: target.to_string(),
                reason: rel.record.lock().failure.clone().unwrap_or_default(),
            });
        }
        let _topology = inner.topology.write();
        check_no_dependents(&rel.target, &format!("resync onto {target}"))?;
        inner.destage_both(&rel.source, &rel.target)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        // The new T0 is durable before it is trusted (see `establish_group`).
        sync_view(&rel.source).map_err(FlashError::Storage)?;
        // Bits copied but not yet durable become durable first, so what we commit below is a
        // complete picture.
        inner
            .persist(std::slice::from_ref(&rel))
            .map_err(io_to_flash)?;
        let mut record = rel.record.lock().clone();
        if record.revert_pending {
            return Err(FlashError::Unsupported(format!(
                "{source}:{target} has a revertible resync to commit or revert first"
            )));
        }
        // The target changes on every re-copied track without a host write: its own
        // recording relationships must count them first.
        inner.record_view_change(
            &rel.target,
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
            let g = rel.target.geometry;
            undo.set_len(g.capacity).map_err(FlashError::Storage)?;
            let mut track = 0;
            while let Some(t) = rel.revert_set.next_set(track) {
                track = t + 1;
                let start = g.track_start(t);
                copy_span(&*rel.target.file, &*undo, start, start + g.track_len(t))
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
        record.state = RelState::Active;
        record.synced_ms = now_ms();
        record.recording = opts.recording;
        record.persistent = opts.persistent || record.persistent;
        record.background_copy = record.background_copy || opts.background_copy;
        record.withdraw_on_complete = false;
        let committed = (|| {
            let mut change = inner.catalog.change()?;
            change.put_rel(&record)?;
            for (kind, bitmap) in rel.bitmaps() {
                for chunk in bitmap.take_dirty() {
                    change.put_chunk_bytes(rel.id, kind, chunk, &bitmap.encode_chunk(chunk))?;
                }
            }
            change.commit()
        })();
        if let Err(e) = committed {
            inner.poison("resyncing a relationship", &e);
            return Err(FlashError::Poisoned);
        }
        rel.recording.store(record.recording, Ordering::Release);
        *rel.record.lock() = record;
        rel.copy_cursor.store(0, Ordering::Release);
        inner.kick();
        tracing::info!(
            source,
            target,
            recopy = rel.bitmap.clear_count(),
            "FlashCopy resynced"
        );
        Ok(rel.info())
    }

    /// Reverse restore: the source returns to the target's point-in-time contents, copying only
    /// the tracks that may differ (those changed on either side, with change recording; every
    /// copied track without it). The pair is then addressed as `target:source`. Without `fast`,
    /// the original background copy must be complete; with it (fast reverse restore) it need
    /// not be, the reversed relationship ends when its copy completes, and a target whose copy
    /// was incomplete is left undefined.
    pub fn reverse(&self, source: &str, target: &str, fast: bool) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        if rel.failed.load(Ordering::Acquire) {
            return Err(FlashError::Failed {
                src: source.to_string(),
                tgt: target.to_string(),
                reason: rel.record.lock().failure.clone().unwrap_or_default(),
            });
        }
        if rel.record.lock().revert_pending {
            return Err(FlashError::Unsupported(format!(
                "{source}:{target} has a revertible resync to commit or revert first"
            )));
        }
        let complete = rel.bitmap.is_full();
        if !fast && !complete {
            return Err(FlashError::Unsupported(format!(
                "{source}:{target}: the background copy is incomplete ({} tracks to go); wait for it or use --fast",
                rel.bitmap.clear_count()
            )));
        }
        let _topology = inner.topology.write();
        {
            let src_links = rel.source.links.read();
            if src_links.target_of.is_some() {
                return Err(FlashError::Unsupported(format!(
                    "cannot reverse {source}:{target}: {source} is itself a target"
                )));
            }
            if let Some(other) = src_links
                .source_of
                .iter()
                .find(|r| r.id != rel.id && r.is_live() && !r.is_complete())
            {
                return Err(FlashError::Unsupported(format!(
                    "cannot reverse {source}:{target}: {source} is also the source of {}:{} whose copy is incomplete",
                    source, other.target.name
                )));
            }
        }
        check_no_dependents(&rel.target, &format!("reverse {source}:{target}"))?;
        inner.destage_both(&rel.source, &rel.target)?;
        // Destaging may have failed the relationship (its target ran out of space).
        check_not_failed(&rel)?;
        inner
            .persist(std::slice::from_ref(&rel))
            .map_err(io_to_flash)?;
        // The reversed relationship's T0 is the target as hosts see it now: make it durable,
        // including the tracks it still reads from the source's file.
        rel.target.file.sync().map_err(FlashError::Storage)?;
        sync_view(&rel.source).map_err(FlashError::Storage)?;
        let old = rel.record.lock().clone();
        {
            // The source changes on the tracks to restore: those changed on either side, or
            // every copied one without recording.
            let none = Bitmap::new(rel.bitmap.len());
            let mask = if old.recording {
                (&rel.changed[SOURCE], &rel.changed[TARGET])
            } else {
                (&rel.bitmap, &none)
            };
            inner.record_view_change(&rel.source, Some(mask), rel.id)?;
        }
        let now = now_ms();
        let mut change = inner.catalog.change()?;
        let record = RelRecord {
            id: change.next_id()?,
            source: rel.target.id,
            target: rel.source.id,
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
        };
        let reversed = Arc::new(Rel::new(
            record.clone(),
            rel.target.clone(),
            rel.source.clone(),
        ));
        // Clear bits are the tracks to restore; everything else the source already has.
        reversed.bitmap.set_all();
        if old.recording {
            reversed
                .bitmap
                .clear_where(&rel.changed[SOURCE], &rel.changed[TARGET]);
        } else {
            let none = Bitmap::new(rel.bitmap.len());
            reversed.bitmap.clear_where(&rel.bitmap, &none);
        }
        let target_undefined = fast && !complete;
        if target_undefined && old.recording {
            // The old target's uncopied tracks are gone (they were the source's, which is being
            // restored over): count them as changed, so a later resync cannot take the two
            // volumes for equal there.
            let none = Bitmap::new(rel.bitmap.len());
            let uncopied = Bitmap::new(rel.bitmap.len());
            uncopied.set_all();
            uncopied.clear_where(&rel.bitmap, &none);
            reversed.changed[SOURCE].set_where(&uncopied, &none);
        }
        let mut target_record = inner.volume_record(&rel.target);
        target_record.contents_undefined = target_undefined;
        let mut source_record = inner.volume_record(&rel.source);
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
        rel.target
            .contents_undefined
            .store(target_undefined, Ordering::Release);
        rel.source
            .contents_undefined
            .store(false, Ordering::Release);
        {
            let mut src_links = rel.source.links.write();
            src_links.source_of.retain(|r| r.id != rel.id);
            src_links.target_of = Some(reversed.clone());
        }
        {
            let mut tgt_links = rel.target.links.write();
            tgt_links.target_of = None;
            tgt_links.source_of.push(reversed.clone());
        }
        {
            let mut registry = inner.registry.write();
            registry.rels.remove(&rel.id);
            registry.rels.insert(reversed.id, reversed.clone());
        }
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

/// Refuses to go on with a relationship that has failed.
fn check_not_failed(rel: &Rel) -> Result<(), FlashError> {
    if rel.failed.load(Ordering::Acquire) {
        return Err(FlashError::Failed {
            src: rel.source.name.clone(),
            tgt: rel.target.name.clone(),
            reason: rel.record.lock().failure.clone().unwrap_or_default(),
        });
    }
    Ok(())
}
