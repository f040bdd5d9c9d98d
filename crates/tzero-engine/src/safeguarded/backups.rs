//! Taking, listing and expiring backups, and changing their retention.

use super::capacity::backup_usage;
use super::{is_anomaly, DEFAULT_ANOMALY_FACTOR};
use crate::catalog::{BackupRecord, Provisioning, RelRecord, VolumeRecord};
use crate::engine::Engine;
use crate::error::SgcError;
use crate::relationship::{now_ms, Rel};
use crate::topology::Topology;
use crate::volume::Volume;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What to do when a source's safeguarded capacity is full as a backup is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFull {
    /// The backup is refused: it fails visibly, nothing else changes.
    #[default]
    Fail,
    /// The oldest backups whose retention is over are expired until there is room.
    ExpireOldest,
}

/// How backups are taken.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupOptions {
    /// The schedule taking them, recorded with each backup.
    pub policy: Option<String>,
    /// How long nothing may remove them, in ms.
    pub retain_ms: u64,
    pub on_full: OnFull,
    /// Flag a backup whose change exceeds this many times the median of the last ones.
    pub anomaly_factor: f64,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            policy: None,
            retain_ms: 0,
            on_full: OnFull::Fail,
            anomaly_factor: DEFAULT_ANOMALY_FACTOR,
        }
    }
}

/// A backup's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// It reads its point in time.
    Valid,
    /// A copy it needed could not be made: it cannot be recovered.
    Failed,
}

/// What callers see of a backup.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackupInfo {
    pub id: u64,
    pub source: String,
    pub policy: Option<String>,
    /// Wall-clock time of its T0, ms since the epoch.
    pub taken_ms: u64,
    /// Backups taken together (one consistency group, one T0) share it.
    pub group: u64,
    pub retain_until_ms: u64,
    pub state: BackupState,
    pub failure: Option<String>,
    /// Space its own file takes: the T0 data of the tracks overwritten after it.
    pub size_bytes: u64,
    /// Tracks it holds itself.
    pub stored_tracks: u64,
    pub track_size: u64,
    /// Tracks (and bytes) the source changed since the previous backup; none for the first.
    pub changed_tracks: Option<u64>,
    pub changed_bytes: Option<u64>,
    pub anomaly: bool,
    /// Volumes recovered from it that still read through it.
    pub recovered_to: Vec<String>,
}

pub(crate) fn backup_info(topology: &Topology, rel: &Rel) -> BackupInfo {
    let vol = topology.volume(rel.target);
    let record = vol.backup.lock().clone().expect("a backup's volume");
    let track_size = vol.geometry.track_size;
    let info = rel.info();
    BackupInfo {
        id: vol.id,
        source: rel.source_name.clone(),
        policy: record.policy,
        taken_ms: record.taken_ms,
        group: record.group,
        retain_until_ms: record.retain_until_ms,
        state: if info.failure.is_some() || !rel.is_live() {
            BackupState::Failed
        } else {
            BackupState::Valid
        },
        failure: info.failure,
        size_bytes: vol.file.allocated_bytes().unwrap_or(0),
        stored_tracks: rel.bitmap.count(),
        track_size,
        changed_tracks: record.changed_tracks,
        changed_bytes: record.changed_tracks.map(|t| t * track_size),
        anomaly: record.anomaly,
        recovered_to: topology
            .source_of(vol.id)
            .map(|r| r.target_name.clone())
            .collect(),
    }
}

impl Engine {
    /// Takes a backup of each of `sources` now, all at one T0 (a consistency group: the topology
    /// is held exclusively across them, as for `mkflash` groups).
    pub fn take_backups(
        &self,
        sources: &[String],
        opts: &BackupOptions,
    ) -> Result<Vec<BackupInfo>, SgcError> {
        let inner = &self.inner;
        inner.guard()?;
        if sources.is_empty() {
            return Err(SgcError::NoVolumes);
        }
        let _admin = inner.admin.lock();
        let vols: Vec<Arc<Volume>> = sources
            .iter()
            .map(|n| self.backup_source(n))
            .collect::<Result<_, _>>()?;
        for vol in &vols {
            self.make_room(vol, opts.on_full)?;
        }
        let mut topology = inner.topology.write();
        let ids: Vec<u64> = vols.iter().map(|v| v.id).collect();
        topology
            .graph()
            .check_backups(&ids, &*topology)
            .map_err(crate::error::FlashError::from)?;
        // Writes acknowledged before T0 belong to T0.
        for vol in &vols {
            inner.destage_all(&topology, vol)?;
        }
        let now = now_ms();
        let mut change = inner.catalog.change_growing()?;
        let mut made = Vec::new();
        let mut group = None;
        let cleanup = |made: &[(VolumeRecord, Arc<dyn crate::storage::BlockFile>, RelRecord)]| {
            for (r, _, _) in made {
                let _ = inner.storage.remove(&r.file_name());
            }
        };
        for vol in &vols {
            let id = change.next_id()?;
            let rel_id = change.next_id()?;
            let group = *group.get_or_insert(id);
            let history: Vec<u64> = topology
                .backups_of(vol.id)
                .filter_map(|r| {
                    topology
                        .volume(r.target)
                        .backup
                        .lock()
                        .as_ref()
                        .and_then(|b| b.changed_tracks)
                })
                .collect();
            // The newest backup received, once, every track the source changed since its T0.
            let changed = topology.backups_of(vol.id).last().map(|r| r.bitmap.count());
            let anomaly = changed.is_some_and(|c| is_anomaly(c, &history, opts.anomaly_factor));
            let record = VolumeRecord {
                id,
                name: VolumeRecord::backup_name(id),
                capacity: vol.geometry.capacity,
                track_size: vol.geometry.track_size,
                created_ms: now,
                contents_undefined: false,
                pool: None,
                provisioning: Provisioning::Sparse,
                backup: Some(BackupRecord {
                    source: vol.id,
                    taken_ms: now,
                    retain_until_ms: now.saturating_add(opts.retain_ms),
                    policy: opts.policy.clone(),
                    group,
                    changed_tracks: changed,
                    anomaly,
                }),
                safeguarded: None,
            };
            let file = match super::new_volume_file(&*inner.storage, &record) {
                Ok(f) => f,
                Err(e) => {
                    cleanup(&made);
                    return Err(SgcError::Storage(e));
                }
            };
            // NOCOPY, persistent, and no host may write it.
            let backup_opts = crate::relationship::FlashOptions {
                persistent: true,
                target_inhibit: true,
                ..Default::default()
            };
            let rel = RelRecord::established(rel_id, vol.id, id, &backup_opts, now);
            let put = change
                .put_volume(&record)
                .and_then(|()| change.put_rel(&rel));
            if let Err(e) = put {
                let _ = inner.storage.remove(&record.file_name());
                cleanup(&made);
                return Err(e.into());
            }
            made.push((record, file, rel));
        }
        if let Err(e) = change.commit() {
            inner.poison("taking Safeguarded Copy backups", &e);
            cleanup(&made);
            return Err(SgcError::Poisoned);
        }
        let mut rels = Vec::new();
        for ((record, file, rel), source) in made.into_iter().zip(&vols) {
            let vol = Arc::new(Volume::new(&record, file, None, None));
            topology.insert_volume(vol.clone());
            let rel = Arc::new(Rel::new(rel, source, &vol));
            topology.insert_rel(rel.clone());
            rels.push(rel);
        }
        let infos: Vec<BackupInfo> = rels.iter().map(|r| backup_info(&topology, r)).collect();
        for b in &infos {
            if b.anomaly {
                tracing::warn!(backup = b.id, source = %b.source, changed_tracks = ?b.changed_tracks, "Safeguarded Copy anomaly: the change since the previous backup is far above the usual");
            }
            tracing::info!(backup = b.id, source = %b.source, group = b.group, policy = ?b.policy, "Safeguarded Copy backup taken");
        }
        Ok(infos)
    }

    /// Refuses when `vol`'s capacity is full, unless expiring its oldest expired backups makes
    /// room (with [`OnFull::ExpireOldest`]). The caller holds `admin`.
    fn make_room(&self, vol: &Arc<Volume>, on_full: OnFull) -> Result<(), SgcError> {
        loop {
            let Some(cap) = *vol.safeguarded.lock() else {
                return Err(SgcError::NoCapacity(vol.name.clone()));
            };
            let (used, _) = backup_usage(&self.inner.topology.read(), vol);
            if used < cap.capacity {
                return Ok(());
            }
            let full = SgcError::CapacityFull {
                volume: vol.name.clone(),
                used,
                capacity: cap.capacity,
            };
            if on_full != OnFull::ExpireOldest {
                return Err(full);
            }
            let now = now_ms();
            let oldest = {
                let topology = self.inner.topology.read();
                let oldest = topology
                    .backups_of(vol.id)
                    .map(|r| topology.volume(r.target).clone())
                    .find(|b| {
                        b.backup
                            .lock()
                            .as_ref()
                            .is_some_and(|r| r.retain_until_ms <= now)
                    });
                oldest
            };
            let Some(oldest) = oldest else {
                return Err(full);
            };
            tracing::info!(backup = oldest.id, source = %vol.name, "safeguarded capacity full: expiring the oldest expired backup");
            self.remove_backup(&oldest)?;
        }
    }

    /// Every backup, by source then point in time (oldest first).
    pub fn backups(&self) -> Vec<BackupInfo> {
        let topology = self.inner.topology.read();
        topology
            .volumes()
            .filter(|v| !v.is_backup())
            .flat_map(|v| topology.backups_of(v.id).collect::<Vec<_>>())
            .map(|r| backup_info(&topology, r))
            .collect()
    }

    pub fn backup(&self, id: u64) -> Result<BackupInfo, SgcError> {
        let vol = self.backup_volume(id)?;
        let topology = self.inner.topology.read();
        let rel = topology.target_of(vol.id).ok_or(SgcError::NotFound(id))?;
        Ok(backup_info(&topology, rel))
    }

    /// Removes backup `id`, which must be past its retention (or failed: it holds nothing that
    /// can be recovered), and not read by a recovered volume.
    pub fn expire_backup(&self, id: u64) -> Result<(), SgcError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let vol = self.backup_volume(id)?;
        let until = vol.backup.lock().as_ref().map_or(0, |b| b.retain_until_ms);
        let failed = inner
            .topology
            .read()
            .target_of(vol.id)
            .is_none_or(|r| !r.is_live());
        if until > now_ms() && !failed {
            return Err(SgcError::Retained {
                id,
                until_ms: until,
            });
        }
        self.remove_backup(&vol)
    }

    /// Sets backup `id`'s retention to end at `until_ms`. Shortening it is the caller's to
    /// authorise (the daemon asks for the security token).
    pub fn set_backup_retention(&self, id: u64, until_ms: u64) -> Result<BackupInfo, SgcError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let vol = self.backup_volume(id)?;
        let mut record = vol.record();
        if let Some(b) = record.backup.as_mut() {
            b.retain_until_ms = until_ms;
        }
        inner.commit("changing a backup's retention", |c| c.put_volume(&record))?;
        *vol.backup.lock() = record.backup;
        drop(_admin);
        self.backup(id)
    }

    /// Withdraws a backup's relationship (older backups take over the tracks it holds for
    /// them) and deletes its volume. The caller holds `admin` and has checked the retention.
    pub(crate) fn remove_backup(&self, vol: &Arc<Volume>) -> Result<(), SgcError> {
        let inner = &self.inner;
        let (rel, reader) = {
            let topology = inner.topology.read();
            let rel = topology.target_of(vol.id).cloned();
            let reader = topology
                .source_of(vol.id)
                .next()
                .map(|r| r.target_name.clone());
            (rel, reader)
        };
        if let Some(volume) = reader {
            return Err(SgcError::HeldByRecovery { id: vol.id, volume });
        }
        if let Some(rel) = rel {
            inner.remove_rel(&rel)?;
        }
        self.delete_backup_volume(vol)?;
        tracing::info!(backup = vol.id, "Safeguarded Copy backup expired");
        Ok(())
    }

    /// Deletes a backup's volume, which takes part in no relationship any more.
    fn delete_backup_volume(&self, vol: &Arc<Volume>) -> Result<(), SgcError> {
        let inner = &self.inner;
        let mut topology = inner.topology.write();
        inner.commit("deleting a backup", |c| c.delete_volume(vol.id))?;
        vol.deleted.store(true, Ordering::Release);
        topology.remove_volume(vol.id);
        drop(topology);
        let _ = vol.file.punch_hole(0, vol.geometry.capacity);
        inner
            .storage
            .remove(&vol.record().file_name())
            .map_err(SgcError::Storage)?;
        inner.catalog.top_up_reserve();
        Ok(())
    }

    /// Removes backup volumes left without their relationship by an expiry that a crash
    /// interrupted (the relationship's withdraw committed, the volume's delete did not).
    pub(crate) fn remove_orphan_backups(&self) -> Result<(), SgcError> {
        let orphans: Vec<Arc<Volume>> = {
            let topology = self.inner.topology.read();
            let orphans = topology
                .volumes()
                .filter(|v| v.is_backup() && topology.target_of(v.id).is_none())
                .cloned()
                .collect();
            orphans
        };
        for vol in orphans {
            tracing::info!(
                backup = vol.id,
                "removing a backup whose expiry was interrupted"
            );
            self.delete_backup_volume(&vol)?;
        }
        Ok(())
    }
}
