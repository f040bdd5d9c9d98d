//! Recovery from a backup: to a new volume (a FlashCopy of the backup's point in time, usable at
//! once), or onto its own source (a roll-back); and the changed extents between two backups.

use super::changed_since;
use crate::catalog::{Provisioning, RelRecord, VolumeRecord};
use crate::engine::Engine;
use crate::error::{FlashError, SgcError, VolumeError};
use crate::graph::Edge;
use crate::io::VolumeHandle;
use crate::relationship::{now_ms, FlashInfo, FlashOptions, Rel};
use crate::volume::{valid_name, Volume};
use serde::Serialize;
use std::sync::Arc;

/// What a restore did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    pub backup: u64,
    /// Tracks written back to the source: those it changed since the backup's T0.
    pub tracks: u64,
    pub bytes: u64,
}

/// Bytes written back per call during a restore: whole runs of tracks, up to this.
const RESTORE_CHUNK: u64 = 1 << 20;

impl Engine {
    /// Creates `name`, a FlashCopy target of backup `id`: it reads the backup's point in time at
    /// once, and the backup stays as it is. One catalog commit makes the volume and the
    /// relationship, so a crash leaves both or neither. `opts.background_copy` chooses COPY
    /// (the relationship ends when the copy is done, unless persistent) or NOCOPY.
    pub fn recover_backup_to(
        &self,
        id: u64,
        name: &str,
        opts: FlashOptions,
    ) -> Result<FlashInfo, SgcError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()).into());
        }
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let backup = self.backup_volume(id)?;
        if self.lookup(name).is_some() {
            return Err(VolumeError::AlreadyExists(name.to_string()).into());
        }
        let mut topology = inner.topology.write();
        let rel_to_backup = topology
            .target_of(backup.id)
            .cloned()
            .ok_or(SgcError::NotFound(id))?;
        if !rel_to_backup.is_live() {
            return Err(SgcError::Failed {
                id,
                reason: rel_to_backup.info().failure.unwrap_or_default(),
            });
        }
        let mut change = inner.catalog.change_growing()?;
        let now = now_ms();
        let record = VolumeRecord {
            id: change.next_id()?,
            name: name.to_string(),
            capacity: backup.geometry.capacity,
            track_size: backup.geometry.track_size,
            created_ms: now,
            contents_undefined: false,
            pool: None,
            provisioning: Provisioning::Sparse,
            backup: None,
            safeguarded: None,
        };
        let rel_id = change.next_id()?;
        let edge = Edge {
            source: backup.id,
            target: record.id,
        };
        // The new volume is not in the graph yet: nothing can refuse it but the backup's side.
        topology
            .graph()
            .check_establish(&[edge], &|r| topology.reads_through(r), &*topology)
            .map_err(FlashError::from)?;
        let file = super::new_volume_file(&*inner.storage, &record).map_err(SgcError::Storage)?;
        let opts = FlashOptions {
            recording: false,
            target_inhibit: false,
            ..opts
        };
        let rel = RelRecord::established(rel_id, backup.id, record.id, &opts, now);
        let committed = change
            .put_volume(&record)
            .and_then(|()| change.put_rel(&rel))
            .and_then(|()| change.commit());
        if let Err(e) = committed {
            let _ = inner.storage.remove(&record.file_name());
            return Err(e.into());
        }
        let vol = Arc::new(Volume::new(&record, file, None, None));
        topology.insert_volume(vol.clone());
        let rel = Arc::new(Rel::new(rel, &backup, &vol));
        topology.insert_rel(rel.clone());
        inner.kick();
        tracing::info!(
            backup = id,
            volume = name,
            copy = opts.background_copy,
            "recovered a Safeguarded Copy backup to a new volume"
        );
        Ok(rel.info())
    }

    /// Rolls `source` back to backup `id`'s point in time: every track it changed since then is
    /// written back from the backup, through the host write path, so the backups taken after
    /// `id` keep their own points in time (each overwritten track is copied to them first).
    /// The source must not be open by any host. Not atomic: an interrupted restore leaves a mix,
    /// and running it again completes it.
    pub fn restore_backup(&self, id: u64, source: &str) -> Result<RestoreReport, SgcError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let backup = self.backup_volume(id)?;
        let src = self.backup_source(source)?;
        let clients = src.exports.count();
        if clients > 0 {
            return Err(SgcError::SourceOpen {
                volume: source.to_string(),
                clients,
            });
        }
        let changed = {
            let topology = inner.topology.read();
            // Cached writes owe their copies: the copied bits say what changed once they are made.
            inner.destage_all(&topology, &src)?;
            let rel = topology
                .target_of(backup.id)
                .cloned()
                .ok_or(SgcError::NotFound(id))?;
            if rel.source != src.id {
                return Err(SgcError::WrongSource {
                    id,
                    of: rel.source_name.clone(),
                    volume: source.to_string(),
                });
            }
            if !rel.is_live() {
                return Err(SgcError::Failed {
                    id,
                    reason: rel.info().failure.unwrap_or_default(),
                });
            }
            changed_since(&topology, src.id, &rel, None)
        };
        let from = VolumeHandle::new(inner.clone(), backup.clone());
        let to = VolumeHandle::new(inner.clone(), src.clone());
        let g = src.geometry;
        let per_chunk = (RESTORE_CHUNK / g.track_size).max(1);
        let (mut tracks, mut bytes) = (0, 0);
        let mut next = 0;
        let mut buf = Vec::new();
        while let Some(first) = changed.next_set(next) {
            // A run of set bits, at most one chunk long.
            let mut last = first;
            while last + 1 < g.tracks() && last + 1 - first < per_chunk && changed.get(last + 1) {
                last += 1;
            }
            next = last + 1;
            let start = g.track_start(first);
            let end = g.track_start(last) + g.track_len(last);
            buf.resize((end - start) as usize, 0);
            from.read(start, &mut buf)?;
            to.write(start, &buf, false)?;
            tracks += last - first + 1;
            bytes += end - start;
        }
        to.flush()?;
        tracing::info!(
            backup = id,
            volume = source,
            tracks,
            "restored a volume from a Safeguarded Copy backup"
        );
        Ok(RestoreReport {
            backup: id,
            tracks,
            bytes,
        })
    }

    /// The extents (offset, length in bytes) whose data differs between backups `a` and `b`
    /// of one source, or between `a` and the source now when `b` is `None`.
    pub fn diff_backups(&self, a: u64, b: Option<u64>) -> Result<Vec<(u64, u64)>, SgcError> {
        let va = self.backup_volume(a)?;
        let vb = b.map(|b| self.backup_volume(b)).transpose()?;
        let topology = self.inner.topology.read();
        if let Some(src) = va.backup.lock().as_ref().map(|b| b.source) {
            if let Some(src) = topology.volumes().find(|v| v.id == src).cloned() {
                self.inner.destage_all(&topology, &src)?;
            }
        }
        let rel_of = |v: &Arc<Volume>| {
            topology
                .target_of(v.id)
                .cloned()
                .ok_or(SgcError::NotFound(v.id))
        };
        let ra = rel_of(&va)?;
        let rb = vb.as_ref().map(rel_of).transpose()?;
        if let Some(rb) = &rb {
            if rb.source != ra.source {
                return Err(SgcError::DifferentSources { a, b: rb.target });
            }
        }
        // Older first: the tracks changed from the older one's T0 to the newer one's.
        let (older, newer) = match &rb {
            Some(rb) if rb.record.lock().t0_seq < ra.record.lock().t0_seq => {
                (rb.clone(), Some(ra.clone()))
            }
            _ => (ra.clone(), rb.clone()),
        };
        let changed = changed_since(&topology, ra.source, &older, newer.as_ref());
        let g = ra.geometry;
        let mut extents: Vec<(u64, u64)> = Vec::new();
        let mut next = 0;
        while let Some(t) = changed.next_set(next) {
            next = t + 1;
            let (start, len) = (g.track_start(t), g.track_len(t));
            match extents.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => extents.push((start, len)),
            }
        }
        Ok(extents)
    }
}

impl Engine {
    /// Reads backup `id`'s point in time: for verification and the engine's own tests. No
    /// export and no API route leads here; hosts read a backup only through a recovered volume.
    pub fn read_backup(&self, id: u64, offset: u64, buf: &mut [u8]) -> Result<(), SgcError> {
        self.inner.guard()?;
        let vol = self.backup_volume(id)?;
        VolumeHandle::new(self.inner.clone(), vol).read(offset, buf)?;
        Ok(())
    }
}
