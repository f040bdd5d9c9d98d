//! The engine: the registry of volumes and relationships, the admin operations, recovery on
//! open, and the destager and copier threads.
//!
//! Lock order, outermost first: `admin` (one admin operation at a time) → `topology` (shared by
//! every host request, destage batch and copy step; exclusive while relationships change) →
//! `Volume::links` (only written under exclusive topology, so reads never wait) → track stripes
//! → short-lived mutexes (cache maps, bitmap dirty sets, records). Nothing that holds a stripe
//! waits for `topology`, and a writer waiting for cache space holds no lock at all.

use crate::cache::CacheBudget;
use crate::catalog::{Catalog, PoolRecord, Provisioning, RelState, VolumeRecord, CATALOG_FILE};
use crate::error::{is_no_space, FlashError, IoError, OpenError, VolumeError};
use crate::geometry::{Geometry, DEFAULT_TRACK_SIZE, MAX_CAPACITY};
use crate::io::VolumeHandle;
use crate::locks::TrackLocks;
use crate::relationship::{now_ms, FlashInfo, Rel};
use crate::space::{Pool, PoolInfo, StandardFile, ThinFile};
use crate::storage::file::FileStorage;
use crate::storage::BlockFile;
use crate::storage::Storage;
use crate::volume::{valid_name, Volume, VolumeInfo};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes the write cache may hold before writers wait (default 256 MiB).
    pub cache_bytes: u64,
    /// Run the destager and copier threads. Tests turn this off and drive the steps themselves.
    pub background: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_bytes: 256 << 20,
            background: true,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub pools: BTreeMap<String, Arc<Pool>>,
    pub volumes: BTreeMap<String, Arc<Volume>>,
    pub rels: BTreeMap<u64, Arc<Rel>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub catalog: Catalog,
    pub registry: RwLock<Registry>,
    pub admin: Mutex<()>,
    /// Shared by every request and background step, exclusive for relationship changes.
    pub topology: RwLock<()>,
    pub locks: TrackLocks,
    pub budget: CacheBudget,
    pub poisoned: AtomicBool,
    pub stopping: AtomicBool,
    /// Host requests served; the copier watches it to yield to host I/O.
    pub host_ops: AtomicU64,
    work: Mutex<bool>,
    work_cv: Condvar,
    copy_work: Mutex<bool>,
    copy_cv: Condvar,
    /// True when a persister thread makes background-copy bits durable.
    pub has_persister: bool,
    pub persist_kick: Mutex<bool>,
    pub persist_cv: Condvar,
}

/// The FlashCopy engine. Cheap to clone; all clones share one engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Inner {
    /// Wakes the destager and the copier. Each has its own flag, so one taking the wake-up
    /// never leaves the other asleep.
    pub(crate) fn kick(&self) {
        for (flag, cv) in [
            (&self.work, &self.work_cv),
            (&self.copy_work, &self.copy_cv),
        ] {
            *flag.lock() = true;
            cv.notify_all();
        }
    }

    pub(crate) fn wait_for_work(&self, timeout: Duration) {
        Self::wait_on(&self.work, &self.work_cv, timeout);
    }

    pub(crate) fn wait_for_copy_work(&self, timeout: Duration) {
        Self::wait_on(&self.copy_work, &self.copy_cv, timeout);
    }

    fn wait_on(flag: &Mutex<bool>, cv: &Condvar, timeout: Duration) {
        let mut work = flag.lock();
        if !*work {
            cv.wait_for(&mut work, timeout);
        }
        *work = false;
    }

    pub(crate) fn check_poison(&self) -> Result<(), IoError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(IoError::Poisoned);
        }
        Ok(())
    }

    pub(crate) fn poison(&self, what: &str, e: &dyn std::error::Error) {
        tracing::error!(error = %e, "{what}: metadata could not be persisted; the engine refuses further I/O until it is reopened");
        self.poisoned.store(true, Ordering::Release);
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
            if let Err(e) = rel.target.file.sync() {
                self.fail_rel(rel, &format!("syncing the target failed: {e}"));
                continue;
            }
            snapshots.push((*rel, pending, dirty));
        }
        if snapshots.is_empty() {
            return Ok(());
        }
        let committed = (|| {
            let mut change = self.catalog.change()?;
            for (rel, _, dirty) in &snapshots {
                for (kind, chunk, bytes) in dirty {
                    change.put_chunk_bytes(rel.id, *kind, *chunk, bytes)?;
                }
            }
            change.commit()
        })();
        if let Err(e) = committed {
            for (rel, _, dirty) in &snapshots {
                for (kind, bitmap) in rel.bitmaps() {
                    let chunks: Vec<u64> =
                        dirty.iter().filter(|d| d.0 == kind).map(|d| d.1).collect();
                    bitmap.mark_dirty(&chunks);
                }
            }
            self.poison("persisting bitmaps", &e);
            return Err(IoError::Poisoned);
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
        tracing::error!(source = %rel.source.name, target = %rel.target.name, reason, "FlashCopy relationship failed");
        let record = {
            let mut r = rel.record.lock();
            r.state = RelState::Failed;
            r.failure = Some(reason.to_string());
            r.clone()
        };
        let committed = self.catalog.change().and_then(|mut c| {
            c.put_rel(&record)?;
            c.commit()
        });
        if let Err(e) = committed {
            self.poison("recording a failed relationship", &e);
        }
        rel.failed.store(true, Ordering::Release);
    }

    /// Called when a COPY relationship has every bit set (and durable).
    pub(crate) fn complete(&self, rel: &Arc<Rel>) -> Result<(), IoError> {
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
            let committed = self.catalog.change().and_then(|mut c| {
                c.put_rel(&record)?;
                c.commit()
            });
            if let Err(e) = committed {
                self.poison("recording a completed copy", &e);
                return Err(IoError::Poisoned);
            }
            return Ok(());
        }
        let _admin = self.admin.lock();
        if rel.withdrawn.load(Ordering::Acquire) {
            return Ok(());
        }
        tracing::info!(source = %rel.source.name, target = %rel.target.name, "background copy complete; relationship ends");
        self.remove_rel(rel).map_err(|e| match e {
            FlashError::Storage(source) => IoError::Storage {
                name: rel.target.name.clone(),
                source,
            },
            _ => IoError::Poisoned,
        })
    }

    pub(crate) fn volume_record(&self, v: &Volume) -> VolumeRecord {
        VolumeRecord {
            id: v.id,
            name: v.name.clone(),
            capacity: v.geometry.capacity,
            track_size: v.geometry.track_size,
            created_ms: v.created_ms,
            contents_undefined: v.contents_undefined.load(Ordering::Acquire),
            pool: v.pool.as_ref().map(|p| p.id),
            provisioning: v.provisioning,
        }
    }

    /// The destager thread: drains volume caches in batches until shutdown.
    fn destager_loop(self: &Arc<Self>) {
        while !self.stopping.load(Ordering::Acquire) {
            if self.destage_round() == 0 {
                self.wait_for_work(Duration::from_millis(20));
            }
        }
    }

    /// One batch for every volume with cached writes. Returns tracks destaged.
    pub(crate) fn destage_round(&self) -> usize {
        let volumes: Vec<Arc<Volume>> = self.registry.read().volumes.values().cloned().collect();
        let mut done = 0;
        for vol in volumes {
            let tracks: Vec<u64> = vol
                .cache
                .lock()
                .keys()
                .take(crate::destage::DESTAGE_BATCH)
                .copied()
                .collect();
            if tracks.is_empty() {
                continue;
            }
            let _topology = self.topology.read();
            let links = vol.links.read();
            match self.destage_tracks(&vol, &links, &tracks) {
                Ok(n) => done += n,
                Err(e) => {
                    tracing::error!(volume = %vol.name, error = %e, "destage failed");
                    return done;
                }
            }
        }
        done
    }
}

pub(crate) fn io_to_flash(e: IoError) -> FlashError {
    match e {
        IoError::Storage { source, .. } => FlashError::Storage(source),
        _ => FlashError::Poisoned,
    }
}

/// How a volume is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Extent pool to allocate from. Without one the volume is a plain sparse file.
    pub pool: Option<String>,
    /// Space-efficient (thin, DSCLI `-sam ese`) rather than standard (fully allocated).
    pub space_efficient: bool,
}

/// A volume's file as the engine uses it, and its thin wrapper when it is space-efficient.
type WrappedFile = (Arc<dyn BlockFile>, Option<Arc<ThinFile>>);

/// Wraps a volume's raw file according to its provisioning.
fn wrap_volume_file(
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

fn storage_err(name: &str) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Storage {
        name: name.to_string(),
        source,
    }
}

/// The body of one of the engine's threads.
type ThreadBody = fn(&Arc<Inner>);

impl Engine {
    /// Opens (or creates) the engine in a data directory.
    pub fn open_dir(dir: &Path, config: EngineConfig) -> Result<Engine, OpenError> {
        let storage = FileStorage::new(dir).map_err(|source| OpenError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        Self::open(Arc::new(storage), config)
    }

    /// Opens the engine on any storage; recovers every volume and relationship.
    pub fn open(storage: Arc<dyn Storage>, config: EngineConfig) -> Result<Engine, OpenError> {
        let catalog_file =
            storage
                .open(CATALOG_FILE, true)
                .map_err(|source| OpenError::DataDir {
                    path: CATALOG_FILE.to_string(),
                    source,
                })?;
        let catalog = Catalog::open(catalog_file)?;
        let contents = catalog.load()?;
        let mut registry = Registry::default();
        let mut pools_by_id = BTreeMap::new();
        for rec in &contents.pools {
            let pool = Arc::new(Pool::new(
                rec.id,
                rec.name.clone(),
                rec.capacity,
                rec.created_ms,
            ));
            pools_by_id.insert(rec.id, pool.clone());
            registry.pools.insert(rec.name.clone(), pool);
        }
        let mut by_id = BTreeMap::new();
        for rec in &contents.volumes {
            let volume_file_err = |source| OpenError::VolumeFile {
                name: rec.name.clone(),
                source,
            };
            let raw = storage
                .open(&rec.file_name(), false)
                .map_err(volume_file_err)?;
            let pool = rec.pool.and_then(|id| pools_by_id.get(&id).cloned());
            let (file, thin) =
                wrap_volume_file(rec, raw, pool.as_ref()).map_err(volume_file_err)?;
            if rec.provisioning == Provisioning::Standard {
                if let Some(p) = &pool {
                    p.charge(rec.capacity);
                }
            }
            let vol = Arc::new(Volume::new(rec, file, pool, thin));
            by_id.insert(rec.id, vol.clone());
            registry.volumes.insert(rec.name.clone(), vol);
        }
        for rec in contents.relationships {
            let (Some(source), Some(target)) = (by_id.get(&rec.source), by_id.get(&rec.target))
            else {
                tracing::warn!(
                    id = rec.id,
                    "relationship refers to a missing volume; ignored"
                );
                continue;
            };
            let rel = Arc::new(Rel::new(rec, source.clone(), target.clone()));
            for (kind, bitmap) in rel.bitmaps() {
                catalog.load_bitmap(rel.id, kind, bitmap)?;
                bitmap.take_dirty();
            }
            source.links.write().source_of.push(rel.clone());
            target.links.write().target_of = Some(rel.clone());
            registry.rels.insert(rel.id, rel);
        }
        let inner = Arc::new(Inner {
            storage,
            catalog,
            registry: RwLock::new(registry),
            admin: Mutex::new(()),
            topology: RwLock::new(()),
            locks: TrackLocks::default(),
            budget: CacheBudget::new(config.cache_bytes),
            poisoned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            host_ops: AtomicU64::new(0),
            work: Mutex::new(false),
            work_cv: Condvar::new(),
            copy_work: Mutex::new(false),
            copy_cv: Condvar::new(),
            has_persister: config.background,
            persist_kick: Mutex::new(false),
            persist_cv: Condvar::new(),
        });
        let mut threads = Vec::new();
        if config.background {
            let loops: [(&str, ThreadBody); 3] = [
                ("tzero-persister", Inner::persister_loop),
                ("tzero-destager", Inner::destager_loop),
                ("tzero-copier", Inner::copier_loop),
            ];
            for (name, body) in loops {
                let inner = inner.clone();
                let thread = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || body(&inner))
                    .map_err(|source| OpenError::DataDir {
                        path: format!("{name} thread"),
                        source,
                    })?;
                threads.push(thread);
            }
        }
        Ok(Engine {
            inner,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Volume>> {
        self.inner.registry.read().volumes.get(name).cloned()
    }

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
        if inner.poisoned.load(Ordering::Acquire) {
            return Err(VolumeError::Poisoned);
        }
        let _admin = inner.admin.lock();
        if self.lookup(name).is_some() {
            return Err(VolumeError::AlreadyExists(name.to_string()));
        }
        let pool = match &options.pool {
            Some(p) => Some(
                inner
                    .registry
                    .read()
                    .pools
                    .get(p)
                    .cloned()
                    .ok_or_else(|| VolumeError::PoolNotFound(p.clone()))?,
            ),
            None => None,
        };
        let provisioning = match (&pool, options.space_efficient) {
            (None, false) => Provisioning::Sparse,
            (None, true) => return Err(VolumeError::NeedsPool(name.to_string())),
            (Some(_), false) => Provisioning::Standard,
            (Some(_), true) => Provisioning::Thin,
        };
        let mut change = inner.catalog.change()?;
        let record = VolumeRecord {
            id: change.next_id()?,
            name: name.to_string(),
            capacity,
            track_size,
            created_ms: now_ms(),
            contents_undefined: false,
            pool: pool.as_ref().map(|p| p.id),
            provisioning,
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
                return Err(storage_err(name)(e));
            }
        };
        change.put_volume(&record)?;
        if let Err(e) = change.commit() {
            unreserve();
            let _ = inner.storage.remove(&file_name);
            return Err(e.into());
        }
        let vol = Arc::new(Volume::new(&record, file, pool, thin));
        let info = vol.info();
        inner.registry.write().volumes.insert(name.to_string(), vol);
        tracing::info!(
            volume = name,
            capacity,
            track_size,
            ?provisioning,
            "volume created"
        );
        Ok(info)
    }

    /// Creates an extent pool of `capacity` bytes.
    pub fn create_pool(&self, name: &str, capacity: u64) -> Result<PoolInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        if capacity == 0 {
            return Err(VolumeError::InvalidCapacity(capacity));
        }
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        if inner.registry.read().pools.contains_key(name) {
            return Err(VolumeError::PoolExists(name.to_string()));
        }
        let mut change = inner.catalog.change()?;
        let record = PoolRecord {
            id: change.next_id()?,
            name: name.to_string(),
            capacity,
            created_ms: now_ms(),
        };
        change.put_pool(&record)?;
        change.commit()?;
        let pool = Arc::new(Pool::new(
            record.id,
            record.name,
            capacity,
            record.created_ms,
        ));
        inner.registry.write().pools.insert(name.to_string(), pool);
        self.pool(name)
    }

    /// Deletes an empty extent pool.
    pub fn delete_pool(&self, name: &str) -> Result<(), VolumeError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let pool = inner
            .registry
            .read()
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::PoolNotFound(name.to_string()))?;
        let users = self.pool_volumes(&pool);
        if users > 0 {
            return Err(VolumeError::PoolInUse(name.to_string(), users));
        }
        let mut change = inner.catalog.change()?;
        change.delete_pool(pool.id)?;
        change.commit()?;
        inner.registry.write().pools.remove(name);
        Ok(())
    }

    fn pool_volumes(&self, pool: &Arc<Pool>) -> usize {
        self.inner
            .registry
            .read()
            .volumes
            .values()
            .filter(|v| v.pool.as_ref().is_some_and(|p| Arc::ptr_eq(p, pool)))
            .count()
    }

    pub fn pools(&self) -> Vec<PoolInfo> {
        let pools: Vec<Arc<Pool>> = self.inner.registry.read().pools.values().cloned().collect();
        pools.iter().map(|p| self.pool_info(p)).collect()
    }

    pub fn pool(&self, name: &str) -> Result<PoolInfo, VolumeError> {
        let pool = self
            .inner
            .registry
            .read()
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::PoolNotFound(name.to_string()))?;
        Ok(self.pool_info(&pool))
    }

    fn pool_info(&self, pool: &Arc<Pool>) -> PoolInfo {
        let used = pool.used().min(pool.capacity);
        PoolInfo {
            name: pool.name.clone(),
            capacity_bytes: pool.capacity,
            used_bytes: used,
            free_bytes: pool.capacity - used,
            volumes: self.pool_volumes(pool),
            created_ms: pool.created_ms,
        }
    }

    /// Deletes a volume; with `force`, withdraws its relationships first.
    pub fn delete_volume(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let vol = self
            .lookup(name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        let rels: Vec<Arc<Rel>> = {
            let links = vol.links.read();
            links
                .source_of
                .iter()
                .chain(links.target_of.iter())
                .cloned()
                .collect()
        };
        if !rels.is_empty() {
            if !force {
                let detail = rels
                    .iter()
                    .map(|r| format!("{}:{}", r.source.name, r.target.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(VolumeError::InUse {
                    name: name.to_string(),
                    detail,
                });
            }
            for rel in &rels {
                inner.remove_rel(rel).map_err(|e| match e {
                    FlashError::Storage(source) => VolumeError::Storage {
                        name: name.to_string(),
                        source,
                    },
                    _ => VolumeError::Poisoned,
                })?;
            }
        }
        let _topology = inner.topology.write();
        let committed = inner.catalog.change().and_then(|mut c| {
            c.delete_volume(vol.id)?;
            c.commit()
        });
        if let Err(e) = committed {
            inner.poison("deleting a volume", &e);
            return Err(VolumeError::Poisoned);
        }
        vol.deleted.store(true, Ordering::Release);
        let held: u64 = {
            let mut cache = vol.cache.lock();
            let held = cache.values().map(|p| p.bytes()).sum();
            cache.clear();
            held
        };
        inner.budget.release(held);
        inner.registry.write().volumes.remove(name);
        if let Some(pool) = &vol.pool {
            match (&vol.thin, vol.provisioning) {
                (Some(thin), _) => thin.release_all(),
                (None, Provisioning::Standard) => pool.release(vol.geometry.capacity),
                _ => {}
            }
        }
        let file_name = inner.volume_record(&vol).file_name();
        inner
            .storage
            .remove(&file_name)
            .map_err(storage_err(name))?;
        tracing::info!(volume = name, "volume deleted");
        Ok(())
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let volumes: Vec<Arc<Volume>> = self
            .inner
            .registry
            .read()
            .volumes
            .values()
            .cloned()
            .collect();
        volumes.iter().map(|v| v.info()).collect()
    }

    pub fn volume(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        self.lookup(name)
            .map(|v| v.info())
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// A handle for host I/O on a volume.
    pub fn handle(&self, name: &str) -> Result<VolumeHandle, VolumeError> {
        let vol = self
            .lookup(name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        Ok(VolumeHandle::new(self.inner.clone(), vol))
    }

    pub fn relationships(&self) -> Vec<FlashInfo> {
        let rels: Vec<Arc<Rel>> = self.inner.registry.read().rels.values().cloned().collect();
        rels.iter().map(|r| r.info()).collect()
    }

    pub fn relationship(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        self.find_rel(source, target).map(|r| r.info())
    }

    /// Destages and syncs every volume and persists every bitmap.
    pub fn flush_all(&self) -> Result<(), IoError> {
        let volumes: Vec<Arc<Volume>> = self
            .inner
            .registry
            .read()
            .volumes
            .values()
            .cloned()
            .collect();
        // One volume's failure does not stop the others from being made durable; the first
        // error is reported at the end.
        let mut first_error = None;
        for vol in &volumes {
            if let Err(e) = VolumeHandle::new(self.inner.clone(), vol.clone()).flush_unchecked() {
                tracing::error!(volume = %vol.name, error = %e, "flush failed");
                first_error.get_or_insert(e);
            }
        }
        let rels: Vec<Arc<Rel>> = self.inner.registry.read().rels.values().cloned().collect();
        self.inner.persist(&rels)?;
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the threads and makes everything durable. Further I/O gets `ShuttingDown`.
    pub fn shutdown(&self) -> Result<(), IoError> {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.kick();
        self.inner.kick_persister();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let result = self.flush_all();
        tracing::info!("engine stopped");
        result
    }

    /// Test hook: one destage round over all volumes. Returns tracks destaged.
    pub fn destage_step(&self) -> usize {
        self.inner.destage_round()
    }

    /// Test hook: one background-copy step of up to `max_tracks` on every COPY relationship.
    pub fn copy_step(&self, max_tracks: u64) -> Result<u64, IoError> {
        let rels: Vec<Arc<Rel>> = self.inner.registry.read().rels.values().cloned().collect();
        let mut copied = 0;
        for rel in rels {
            copied += self.inner.copy_step(&rel, max_tracks)?;
        }
        Ok(copied)
    }

    /// Test hook: makes every unpersisted background-copy bit durable.
    pub fn persist_bitmaps(&self) -> Result<(), IoError> {
        let rels: Vec<Arc<Rel>> = self.inner.registry.read().rels.values().cloned().collect();
        self.inner.persist(&rels)
    }

    /// Bytes of memory held by a relationship's bitmap.
    pub fn bitmap_memory(&self, source: &str, target: &str) -> Result<usize, FlashError> {
        self.find_rel(source, target)
            .map(|r| r.bitmap.memory_bytes())
    }

    /// Bytes the write cache holds now.
    pub fn cache_used(&self) -> u64 {
        self.inner.budget.used()
    }
}

impl Drop for Engine {
    /// The last clone stops the threads without flushing: dropping an engine is what a crash
    /// looks like, and tests rely on that. Call [`Engine::shutdown`] for a clean stop.
    fn drop(&mut self) {
        if Arc::strong_count(&self.threads) == 1 {
            self.inner.stopping.store(true, Ordering::Release);
            self.inner.kick();
            self.inner.kick_persister();
            for t in self.threads.lock().drain(..) {
                let _ = t.join();
            }
        }
    }
}

pub(crate) fn map_write_err(name: &str, e: std::io::Error) -> IoError {
    if is_no_space(&e) {
        IoError::NoSpace(name.to_string())
    } else {
        IoError::Storage {
            name: name.to_string(),
            source: e,
        }
    }
}
