//! Volume administration: create (sparse, or standard / space-efficient in an extent pool),
//! delete (with `--force`, withdrawing its relationships first), list.
//!
//! A volume's file is created, sized and synced before the catalog commit that makes it known,
//! so a crash leaves either no volume or a complete one (a stray file is overwritten by the
//! next volume that gets its id, never trusted).

use crate::catalog::{Provisioning, VolumeRecord};
use crate::engine::Engine;
use crate::error::{IoError, VolumeError};
use crate::geometry::{Geometry, DEFAULT_TRACK_SIZE, MAX_CAPACITY, MAX_TRACKS, MAX_TRACK_SIZE};
use crate::recovery::wrap_volume_file;
use crate::relationship::{now_ms, Rel};
use crate::volume::{valid_name, Volume, VolumeInfo};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How long a delete without `force` waits for a volume's host connections to finish closing.
const OPEN_EXPORTS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How a volume is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Extent pool to allocate from. Without one the volume is a plain sparse file.
    pub pool: Option<String>,
    /// Space-efficient (thin, DSCLI `-sam ese`) rather than standard (fully allocated).
    pub space_efficient: bool,
}

fn storage_err(name: &str) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Storage {
        name: name.to_string(),
        source,
    }
}

/// EFBIG: the file system allows no file of that size.
fn is_too_large(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(27) || e.kind() == std::io::ErrorKind::FileTooLarge
}

/// A failed host write: out of space, or an I/O error.
pub(crate) fn map_write_err(name: &str, e: std::io::Error) -> IoError {
    if crate::error::is_no_space(&e) {
        IoError::NoSpace(name.to_string())
    } else {
        IoError::Storage {
            name: name.to_string(),
            source: e,
        }
    }
}

impl Engine {
    /// Creates a sparse volume outside any pool.
    pub fn create_volume(
        &self,
        name: &str,
        capacity: u64,
        track_size: u64,
    ) -> Result<VolumeInfo, VolumeError> {
        self.create_volume_with(name, capacity, track_size, VolumeOptions::default())
    }

    /// Creates a volume: sparse, or standard / space-efficient in an extent pool.
    pub fn create_volume_with(
        &self,
        name: &str,
        capacity: u64,
        track_size: u64,
        options: VolumeOptions,
    ) -> Result<VolumeInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        if capacity == 0 || !capacity.is_multiple_of(512) || capacity > MAX_CAPACITY {
            return Err(VolumeError::InvalidCapacity(capacity));
        }
        let track_size = if track_size == 0 {
            DEFAULT_TRACK_SIZE
        } else {
            track_size
        };
        if !Geometry::valid_track_size(track_size) {
            return Err(VolumeError::InvalidTrackSize(track_size));
        }
        let inner = &self.inner;
        // The file system's limit first: it is the one to name when both are exceeded, and
        // knowing it spares creating a file that cannot be sized (EFBIG is still handled below).
        let fs = inner.storage.file_system();
        let too_large = || VolumeError::TooLargeForFileSystem {
            capacity,
            fs: fs.name,
            max: fs.max_file_size,
        };
        if fs.largest_file().is_some_and(|largest| capacity > largest) {
            return Err(too_large());
        }
        if Geometry::new(capacity, track_size).tracks() > MAX_TRACKS {
            return Err(VolumeError::TooManyTracks {
                capacity,
                track_size,
            });
        }
        inner.guard()?;
        let _admin = inner.admin.lock();
        if self.lookup(name).is_some() {
            return Err(VolumeError::AlreadyExists(name.to_string()));
        }
        let pool = match &options.pool {
            Some(p) => Some(self.find_pool(p)?),
            None => None,
        };
        let provisioning = match (&pool, options.space_efficient) {
            (None, false) => Provisioning::Sparse,
            (None, true) => return Err(VolumeError::NeedsPool(name.to_string())),
            (Some(_), false) => Provisioning::Standard,
            (Some(_), true) => Provisioning::Thin,
        };
        // Refused (catalog unchanged) when a full file system has eaten into the reserve.
        let mut change = inner.catalog.change_growing()?;
        let record = VolumeRecord {
            id: change.next_id()?,
            name: name.to_string(),
            capacity,
            track_size,
            created_ms: now_ms(),
            contents_undefined: false,
            pool: pool.as_ref().map(|p| p.id),
            provisioning,
            backup: None,
            safeguarded: None,
        };
        // A standard volume takes its whole capacity from the pool now.
        if provisioning == Provisioning::Standard {
            let p = pool.as_ref().expect("standard volumes have a pool");
            if !p.reserve(capacity) {
                return Err(VolumeError::PoolTooSmall {
                    pool: p.name.clone(),
                    needed: capacity,
                    free: p.capacity - p.used().min(p.capacity),
                });
            }
            // Checked first, so that a volume that cannot fit is a refusal, not a storage
            // error after a partial allocation. A race with host writes can still end in ENOSPC,
            // which then leaves nothing behind either.
            if let Some(free) = inner.storage.free_bytes() {
                if free < capacity {
                    p.release(capacity);
                    return Err(VolumeError::FileSystemTooFull {
                        name: name.to_string(),
                        needed: capacity,
                        free,
                    });
                }
            }
        }
        let unreserve = || {
            if provisioning == Provisioning::Standard {
                if let Some(p) = &pool {
                    p.release(capacity);
                }
            }
        };
        let file_name = record.file_name();
        let created = (|| {
            let raw = inner.storage.open(&file_name, true)?;
            raw.set_len(0)?;
            raw.set_len(capacity)?;
            if provisioning == Provisioning::Standard {
                raw.preallocate(0, capacity)?;
            }
            raw.sync()?;
            wrap_volume_file(&record, raw, pool.as_ref())
        })();
        let (file, thin) = match created {
            Ok(f) => f,
            Err(e) => {
                unreserve();
                let _ = inner.storage.remove(&file_name);
                return Err(if is_too_large(&e) {
                    too_large()
                } else {
                    storage_err(name)(e)
                });
            }
        };
        change.put_volume(&record)?;
        if let Err(e) = change.commit() {
            unreserve();
            let _ = inner.storage.remove(&file_name);
            return Err(e.into());
        }
        let vol = Arc::new(Volume::new(&record, file, pool, thin));
        let info = {
            let mut topology = inner.topology.write();
            topology.insert_volume(vol.clone());
            vol.info(&topology)
        };
        tracing::info!(
            volume = name,
            capacity,
            track_size,
            ?provisioning,
            "volume created"
        );
        Ok(info)
    }

    /// Deletes a volume; with `force`, withdraws its relationships first.
    pub fn delete_volume(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let inner = &self.inner;
        inner.guard()?;
        if !force {
            // A client that has just disconnected (qemu-io has exited) may still be closing on
            // the server's side: give it a moment before calling the volume open.
            if let Some(vol) = self.lookup(name) {
                let deadline = std::time::Instant::now() + OPEN_EXPORTS_GRACE;
                while vol.exports.count() > 0 && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        let _admin = inner.admin.lock();
        let vol = self
            .lookup(name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        if vol.is_backup() {
            return Err(VolumeError::IsBackup(name.to_string()));
        }
        // Not even --force: backups are immutable until they expire, and expire only by
        // themselves (rmsgc), never with their source.
        let backups = inner.topology.read().backups_of(vol.id).count();
        if backups > 0 {
            return Err(VolumeError::HasBackups {
                name: name.to_string(),
                count: backups,
            });
        }
        let clients = vol.exports.count();
        if clients > 0 && !force {
            return Err(VolumeError::Open {
                name: name.to_string(),
                clients,
            });
        }
        let rels: Vec<Arc<Rel>> = {
            let topology = inner.topology.read();
            topology
                .source_of(vol.id)
                .chain(topology.target_of(vol.id))
                .cloned()
                .collect()
        };
        if !rels.is_empty() {
            if !force {
                let detail = rels
                    .iter()
                    .map(|r| format!("{}:{}", r.source_name, r.target_name))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(VolumeError::InUse {
                    name: name.to_string(),
                    detail,
                });
            }
            for rel in &rels {
                inner.remove_rel(rel).map_err(|e| VolumeError::Withdraw {
                    name: name.to_string(),
                    source: Box::new(e),
                })?;
            }
        }
        let mut topology = inner.topology.write();
        inner.commit("deleting a volume", |c| c.delete_volume(vol.id))?;
        vol.deleted.store(true, Ordering::Release);
        let held: u64 = {
            let mut cache = vol.cache.lock();
            let held = cache.values().map(|p| p.bytes()).sum();
            cache.clear();
            held
        };
        inner.budget.release(held);
        topology.remove_volume(vol.id);
        drop(topology);
        // The volume's I/O already fails (`deleted`): now tell its connections to go.
        if clients > 0 {
            tracing::info!(
                volume = name,
                clients,
                "disconnecting the volume's host connections"
            );
        }
        vol.exports.revoke_all();
        if let Some(cap) = *vol.safeguarded.lock() {
            if let Some(p) = inner.topology.read().pool_by_id(cap.pool) {
                p.release(cap.capacity);
            }
        }
        if let Some(pool) = &vol.pool {
            match (&vol.thin, vol.provisioning) {
                (Some(thin), _) => thin.release_all(),
                (None, Provisioning::Standard) => pool.release(vol.geometry.capacity),
                _ => {}
            }
        }
        // Unlinking frees nothing while a handle (an NBD client) still has the file open; the
        // space must come back now, to whoever the full file system was refusing.
        if let Err(e) = vol.file.punch_hole(0, vol.geometry.capacity) {
            tracing::warn!(volume = name, error = %e, "could not free a deleted volume's space");
        }
        let file_name = vol.record().file_name();
        inner
            .storage
            .remove(&file_name)
            .map_err(storage_err(name))?;
        // The space just freed may be what the catalog's reserve was missing.
        inner.catalog.top_up_reserve();
        tracing::info!(volume = name, "volume deleted");
        Ok(())
    }

    /// Every volume, in name order.
    /// The largest capacity a volume may have here, with the largest tracks: 2^32 tracks of
    /// 1 MiB (4 PiB), or less where the data directory's file system holds no file that large
    /// (ext4: 16 TiB less one block). A multiple of 512, like every capacity.
    pub fn max_volume_capacity(&self) -> u64 {
        let fs = self.inner.storage.file_system();
        let fits = fs.largest_file().unwrap_or(MAX_CAPACITY);
        fits.min(MAX_CAPACITY).min(MAX_TRACKS * MAX_TRACK_SIZE) / 512 * 512
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let topology = self.inner.topology.read();
        topology
            .volumes()
            .filter(|v| !v.is_backup())
            .map(|v| v.info(&topology))
            .collect()
    }

    pub fn volume(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let topology = self.inner.topology.read();
        topology
            .by_name(name)
            .filter(|v| !v.is_backup())
            .map(|v| v.info(&topology))
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }
}
