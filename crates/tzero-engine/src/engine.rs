//! The engine: its shared state ([`Inner`]), opening and shutting down, and the public handle
//! ([`Engine`]). Each mechanism lives in its own module: [`crate::recovery`] (open),
//! [`crate::persist`] (bits and records made durable), [`crate::volumes`] and [`crate::pools`]
//! (their admin operations), [`crate::threads`] (destager and persister), [`crate::copier`]
//! (background copy), [`crate::admin`] (relationship operations).
//!
//! Lock order, outermost first: `admin` (one admin operation at a time: its checks and its
//! changes are one atomic step) → `topology` (shared by every host request, destage batch and
//! copy step; exclusive while the graph changes) → track stripes → short-lived mutexes (cache
//! maps, bitmap dirty sets, records). Nothing that holds a stripe waits for `topology`, and a
//! writer waiting for cache space holds no lock at all.

use crate::cache::CacheBudget;
use crate::catalog::{Catalog, CATALOG_FILE};
use crate::error::{Down, FlashError, IoError, OpenError};
use crate::io::VolumeHandle;
use crate::locks::TrackLocks;
use crate::relationship::{FlashInfo, Rel};
use crate::storage::file::FileStorage;
use crate::storage::Storage;
use crate::topology::Topology;
use crate::volume::Volume;
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// A wake-up flag and its condition variable, one per background thread.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wakeup {
    pub fn kick(&self) {
        *self.flag.lock() = true;
        self.cv.notify_all();
    }

    /// Waits for a kick or the timeout, and consumes the kick.
    pub fn wait(&self, timeout: std::time::Duration) {
        let mut kicked = self.flag.lock();
        if !*kicked {
            self.cv.wait_for(&mut kicked, timeout);
        }
        *kicked = false;
    }
}

/// What every part of the engine shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub catalog: Catalog,
    /// Serialises admin operations, so an operation's checks and its changes are one step.
    pub admin: Mutex<()>,
    /// Pools, volumes, relationships and the graph between them.
    pub topology: RwLock<Topology>,
    pub locks: TrackLocks,
    pub budget: CacheBudget,
    poisoned: AtomicBool,
    pub stopping: AtomicBool,
    /// Host requests served; the copier watches it to yield to host I/O.
    pub host_ops: AtomicU64,
    pub destage_wakeup: Wakeup,
    pub copy_wakeup: Wakeup,
    pub persist_wakeup: Wakeup,
    /// True when a persister thread makes background-copy bits durable.
    pub has_persister: bool,
    /// Monitoring counters (see [`crate::stats`]).
    pub counters: crate::stats::EngineCounters,
}

impl Inner {
    /// Wakes the destager and the copier.
    pub(crate) fn kick(&self) {
        self.destage_wakeup.kick();
        self.copy_wakeup.kick();
    }

    /// The guard every public operation passes first.
    pub(crate) fn guard(&self) -> Result<(), Down> {
        self.check_poison()?;
        if self.stopping.load(Ordering::Acquire) {
            return Err(Down::ShuttingDown);
        }
        Ok(())
    }

    pub(crate) fn check_poison(&self) -> Result<(), Down> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Down::Poisoned);
        }
        Ok(())
    }

    pub(crate) fn poison(&self, what: &str, e: &dyn std::error::Error) {
        tracing::error!(error = %e, "{what}: metadata could not be persisted; the engine refuses further I/O until it is reopened");
        self.poisoned.store(true, Ordering::Release);
    }
}

/// The FlashCopy engine. Cheap to clone; all clones share one engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

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
        let topology = crate::recovery::recover(&*storage, &catalog)?;
        let inner = Arc::new(Inner {
            storage,
            catalog,
            admin: Mutex::new(()),
            topology: RwLock::new(topology),
            locks: TrackLocks::default(),
            budget: CacheBudget::new(config.cache_bytes),
            poisoned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            host_ops: AtomicU64::new(0),
            destage_wakeup: Wakeup::default(),
            copy_wakeup: Wakeup::default(),
            persist_wakeup: Wakeup::default(),
            has_persister: config.background,
            counters: Default::default(),
        });
        let engine = Engine {
            inner: inner.clone(),
            threads: Arc::default(),
        };
        // Before any thread runs: an expiry a crash interrupted is finished first.
        engine
            .remove_orphan_backups()
            .map_err(|e| OpenError::Backups(Box::new(e)))?;
        if config.background {
            *engine.threads.lock() = crate::threads::spawn(&inner)?;
        }
        Ok(engine)
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Volume>> {
        self.inner.topology.read().by_name(name).cloned()
    }

    /// A handle for host I/O on a volume.
    pub fn handle(&self, name: &str) -> Result<VolumeHandle, crate::VolumeError> {
        self.inner.guard()?;
        let vol = self
            .lookup(name)
            .ok_or_else(|| crate::VolumeError::NotFound(name.to_string()))?;
        // A backup has no host path: no export reads or writes it.
        if vol.is_backup() {
            return Err(crate::VolumeError::IsBackup(name.to_string()));
        }
        Ok(VolumeHandle::new(self.inner.clone(), vol))
    }

    pub fn relationships(&self) -> Vec<FlashInfo> {
        self.inner
            .topology
            .read()
            .rels()
            .filter(|r| !r.to_backup())
            .map(|r| r.info())
            .collect()
    }

    pub fn relationship(&self, source: &str, target: &str) -> Result<FlashInfo, FlashError> {
        self.find_rel(source, target).map(|r| r.info())
    }

    fn all_rels(&self) -> Vec<Arc<Rel>> {
        self.inner.topology.read().rels().cloned().collect()
    }

    /// Destages and syncs every volume and persists every bitmap.
    pub fn flush_all(&self) -> Result<(), IoError> {
        self.inner.check_poison()?;
        let volumes: Vec<Arc<Volume>> = self.inner.topology.read().volumes().cloned().collect();
        // One volume's failure does not stop the others from being made durable; the first
        // error is reported at the end.
        let mut first_error = None;
        for vol in &volumes {
            if let Err(e) = VolumeHandle::new(self.inner.clone(), vol.clone()).flush_unchecked() {
                tracing::error!(volume = %vol.name, error = %e, "flush failed");
                first_error.get_or_insert(e);
            }
        }
        self.inner.persist(&self.all_rels())?;
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the threads and makes everything durable. Further I/O gets `ShuttingDown`.
    pub fn shutdown(&self) -> Result<(), IoError> {
        self.stop_threads();
        let result = self.flush_all();
        tracing::info!("engine stopped");
        result
    }

    fn stop_threads(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.kick();
        self.inner.persist_wakeup.kick();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }

    /// Test hook: one destage round over all volumes. Returns tracks destaged.
    pub fn destage_step(&self) -> usize {
        self.inner.destage_round()
    }

    /// Test hook: one background-copy step of up to `max_tracks` on every COPY relationship.
    pub fn copy_step(&self, max_tracks: u64) -> Result<u64, FlashError> {
        self.inner.guard()?;
        let mut copied = 0;
        for rel in self.all_rels() {
            copied += self.inner.copy_step(&rel, max_tracks)?;
        }
        Ok(copied)
    }

    /// Test hook: makes every unpersisted background-copy bit durable.
    pub fn persist_bitmaps(&self) -> Result<(), IoError> {
        self.inner.guard()?;
        self.inner.persist(&self.all_rels())
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

    /// Bytes the write cache may hold before writers wait.
    pub fn cache_limit(&self) -> u64 {
        self.inner.budget.limit()
    }

    /// The monitoring counters, read now. Cheap enough to call once a second: it sums each
    /// volume's cached bytes under that volume's cache lock, briefly, and takes no other lock
    /// a host request waits for.
    pub fn stats(&self) -> crate::stats::EngineStats {
        let volumes: Vec<Arc<Volume>> = self.inner.topology.read().volumes().cloned().collect();
        let volume_cache_bytes = volumes
            .iter()
            .map(|v| {
                let held = v.cache.lock().values().map(|p| p.bytes()).sum();
                (v.name.clone(), held)
            })
            .collect();
        crate::stats::EngineStats {
            cache_bytes: self.inner.budget.used(),
            cache_limit: self.inner.budget.limit(),
            destage_batches: self.inner.counters.destage.snapshot(),
            catalog_commits: self.inner.catalog.commits.snapshot(),
            volume_cache_bytes,
        }
    }
}

impl Drop for Engine {
    /// The last clone stops the threads without flushing: dropping an engine is what a crash
    /// looks like, and tests rely on that. Call [`Engine::shutdown`] for a clean stop. With the
    /// threads gone, the last `Arc<Inner>` goes with the last volume handle, and with it every
    /// volume, relationship, file and cache: nothing in the topology points back at itself.
    fn drop(&mut self) {
        if Arc::strong_count(&self.threads) == 1 {
            self.stop_threads();
        }
    }
}
