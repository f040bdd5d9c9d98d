//! Safeguarded capacity: the space a source's backups may take, reserved in an extent pool
//! (DSCLI `managefbvol -action mksafeguardedcap`). It grows freely; it shrinks, moves or goes
//! only while the source has no backups, so no backup under retention loses its room.

use crate::catalog::SafeguardedRecord;
use crate::engine::Engine;
use crate::error::{SgcError, VolumeError};
use crate::topology::Topology;
use crate::volume::Volume;
use serde::Serialize;
use std::sync::Arc;

/// What callers see of a source's safeguarded capacity.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SafeguardedInfo {
    pub pool: String,
    pub capacity_bytes: u64,
    /// Space its backups' files take now.
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub backups: usize,
}

/// The safeguarded capacity of `vol`, if it has one.
pub(crate) fn safeguarded_info(topology: &Topology, vol: &Volume) -> Option<SafeguardedInfo> {
    let record = (*vol.safeguarded.lock())?;
    let pool = topology
        .pool_by_id(record.pool)
        .map_or_else(|| format!("#{}", record.pool), |p| p.name.clone());
    let (used, backups) = backup_usage(topology, vol);
    Some(SafeguardedInfo {
        pool,
        capacity_bytes: record.capacity,
        used_bytes: used,
        free_bytes: record.capacity.saturating_sub(used),
        backups,
    })
}

/// Bytes the backups of `source` take on disk, and how many there are.
pub(crate) fn backup_usage(topology: &Topology, source: &Volume) -> (u64, usize) {
    let mut used = 0;
    let mut count = 0;
    for rel in topology.backups_of(source.id) {
        count += 1;
        used += topology
            .volume(rel.target)
            .file
            .allocated_bytes()
            .unwrap_or(0);
    }
    (used, count)
}

impl Engine {
    /// Gives each of `volumes` `capacity` bytes of safeguarded capacity from extent pool `pool`
    /// (0 takes it away). All or none: one catalog commit.
    pub fn set_safeguarded_capacity(
        &self,
        volumes: &[String],
        capacity: u64,
        pool: &str,
    ) -> Result<Vec<SafeguardedInfo>, SgcError> {
        let inner = &self.inner;
        inner.guard()?;
        if volumes.is_empty() {
            return Err(SgcError::NoVolumes);
        }
        let _admin = inner.admin.lock();
        let pool = self.find_pool(pool)?;
        let vols: Vec<Arc<Volume>> = volumes
            .iter()
            .map(|n| self.backup_source(n))
            .collect::<Result<_, _>>()?;
        let mut deltas = Vec::new();
        {
            let topology = inner.topology.read();
            for vol in &vols {
                let old = *vol.safeguarded.lock();
                let (_, backups) = backup_usage(&topology, vol);
                let old_cap = old.map_or(0, |o| o.capacity);
                let moves = old.is_some_and(|o| o.pool != pool.id);
                if backups > 0 && (capacity < old_cap || moves) {
                    return Err(SgcError::CapacityInUse {
                        volume: vol.name.clone(),
                        backups,
                    });
                }
                deltas.push((vol.clone(), old, moves));
            }
        }
        // Reserve in the pool: what is new is taken, what is given back is released after the
        // commit. On a refusal, everything taken so far goes back.
        let mut taken: Vec<(Arc<crate::space::Pool>, u64)> = Vec::new();
        let give_back = |taken: &[(Arc<crate::space::Pool>, u64)]| {
            for (p, b) in taken {
                p.release(*b);
            }
        };
        for (_, old, moves) in &deltas {
            let keep = if *moves {
                0
            } else {
                old.map_or(0, |o| o.capacity)
            };
            if capacity > keep {
                let need = capacity - keep;
                if !pool.reserve(need) {
                    give_back(&taken);
                    return Err(VolumeError::PoolTooSmall {
                        pool: pool.name.clone(),
                        needed: need,
                        free: pool.capacity - pool.used().min(pool.capacity),
                    }
                    .into());
                }
                taken.push((pool.clone(), need));
            }
        }
        let records: Vec<_> = deltas
            .iter()
            .map(|(vol, _, _)| {
                let mut r = vol.record();
                r.safeguarded = (capacity > 0).then_some(SafeguardedRecord {
                    pool: pool.id,
                    capacity,
                });
                r
            })
            .collect();
        let committed = inner.catalog.change_growing().and_then(|mut c| {
            for r in &records {
                c.put_volume(r)?;
            }
            c.commit()
        });
        if let Err(e) = committed {
            give_back(&taken);
            return Err(e.into());
        }
        let topology = inner.topology.read();
        let mut infos = Vec::new();
        for ((vol, old, moves), record) in deltas.iter().zip(&records) {
            // What the pool no longer holds for this volume.
            if let Some(o) = old {
                let back = if *moves {
                    o.capacity
                } else {
                    o.capacity.saturating_sub(capacity)
                };
                if let Some(p) = topology.pool_by_id(o.pool) {
                    p.release(back);
                }
            }
            *vol.safeguarded.lock() = record.safeguarded;
            if let Some(info) = safeguarded_info(&topology, vol) {
                infos.push(info);
            }
            tracing::info!(volume = %vol.name, capacity, pool = %pool.name, "safeguarded capacity set");
        }
        Ok(infos)
    }

    /// The safeguarded capacity of a volume, if it has one.
    pub fn safeguarded(&self, volume: &str) -> Result<Option<SafeguardedInfo>, SgcError> {
        let vol = self.backup_source(volume)?;
        Ok(safeguarded_info(&self.inner.topology.read(), &vol))
    }
}
