//! Recovery on open: the catalog's records become the in-memory topology.
//!
//! Nothing is repaired here because nothing needs to be: every durable state the engine can
//! leave behind (see the invariants in ARCHITECTURE.md) is a consistent one. A clear bit means
//! the source still holds T0; a set bit means the target data it vouches for was synced first.
//! Cached writes never reached the disk unless their copy-on-write was committed.

use crate::catalog::{Catalog, Provisioning, VolumeRecord};
use crate::error::OpenError;
use crate::geometry::Geometry;
use crate::relationship::Rel;
use crate::space::{Pool, StandardFile, ThinFile};
use crate::storage::{BlockFile, Storage};
use crate::topology::Topology;
use crate::volume::Volume;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Loads pools, volumes (opening their files), relationships and their bitmaps.
pub(crate) fn recover(storage: &dyn Storage, catalog: &Catalog) -> Result<Topology, OpenError> {
    let contents = catalog.load()?;
    let mut topology = Topology::default();
    let mut pools_by_id = BTreeMap::new();
    for rec in &contents.pools {
        let pool = Arc::new(Pool::new(
            rec.id,
            rec.name.clone(),
            rec.capacity,
            rec.created_ms,
        ));
        pools_by_id.insert(rec.id, pool.clone());
        topology.pools.insert(rec.name.clone(), pool);
    }
    for rec in &contents.volumes {
        let volume_file_err = |source| OpenError::VolumeFile {
            name: rec.name.clone(),
            source,
        };
        let raw = storage
            .open(&rec.file_name(), false)
            .map_err(volume_file_err)?;
        let pool = rec.pool.and_then(|id| pools_by_id.get(&id).cloned());
        let (file, thin) = wrap_volume_file(rec, raw, pool.as_ref()).map_err(volume_file_err)?;
        if rec.provisioning == Provisioning::Standard {
            if let Some(p) = &pool {
                p.charge(rec.capacity);
            }
        }
        if let Some(cap) = rec.safeguarded {
            if let Some(p) = pools_by_id.get(&cap.pool) {
                p.charge(cap.capacity);
            }
        }
        topology.insert_volume(Arc::new(Volume::new(rec, file, pool, thin)));
    }
    let known: BTreeMap<u64, Arc<Volume>> = topology.volumes().map(|v| (v.id, v.clone())).collect();
    // The targets of a source are kept in point-in-time order (see `crate::topology`).
    let mut relationships = contents.relationships;
    relationships.sort_by_key(|r| (r.t0_seq, r.id));
    for rec in relationships {
        let (Some(source), Some(target)) = (known.get(&rec.source), known.get(&rec.target)) else {
            tracing::warn!(
                id = rec.id,
                "relationship refers to a missing volume; ignored"
            );
            continue;
        };
        let rel = Arc::new(Rel::new(rec, source, target));
        for (kind, bitmap) in rel.bitmaps() {
            catalog.load_bitmap(rel.id, kind, bitmap)?;
            bitmap.take_dirty();
        }
        topology.insert_rel(rel);
    }
    Ok(topology)
}

/// A volume's file as the engine uses it, and its thin wrapper when it is space-efficient.
pub(crate) type WrappedFile = (Arc<dyn BlockFile>, Option<Arc<ThinFile>>);

/// Wraps a volume's raw file according to its provisioning.
pub(crate) fn wrap_volume_file(
    rec: &VolumeRecord,
    raw: Arc<dyn BlockFile>,
    pool: Option<&Arc<Pool>>,
) -> std::io::Result<WrappedFile> {
    match (rec.provisioning, pool) {
        (Provisioning::Thin, Some(pool)) => {
            let geometry = Geometry::new(rec.capacity, rec.track_size);
            let thin = Arc::new(ThinFile::open(raw, geometry, pool.clone())?);
            Ok((thin.clone(), Some(thin)))
        }
        (Provisioning::Standard, _) => Ok((Arc::new(StandardFile::new(raw)), None)),
        _ => Ok((raw, None)),
    }
}
