//! The Ceph backend: every file of the data directory is an RBD image in one pool.
//!
//! Volumes, undo files and the redb catalog (`catalog.redb`) all become images named
//! `<prefix><file name>`, so whatever the file backend keeps on one disk is replicated by the
//! OSDs, and the engine's invariants carry over unchanged: a write acknowledged by librbd is
//! on every replica of its placement group (the client cache is off), `sync` is `rbd_flush`,
//! and redb's commit protocol (two-phase, checksummed) works on an image as on a file.
//!
//! Each image is opened once per process and kept under its RBD exclusive lock, taken at open
//! with `RBD_LOCK_MODE_EXCLUSIVE`: librbd then never hands it to another client that asks, so
//! two tzero nodes cannot both write a volume. A dead owner's lock is broken (which blocklists
//! it) only by [`RbdStorage::open`] with [`RbdOptions::break_locks`], i.e. by a node that has
//! taken over the pool's lease (`tzero::cluster`).

use super::{BlockFile, Storage};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Weak};
use tzero_rados::{Cluster, Image, Pool};

/// librados/librbd settings tzero depends on, applied at connect.
pub const CLIENT_OPTIONS: &[(&str, &str)] = &[
    // tzero has its own write cache; librbd's would make every write volatile until a flush.
    ("rbd_cache", "false"),
    // A discard must zero what it does not deallocate: the engine punches holes that must read
    // back as zeros (Pacific skips unaligned parts of a discard by default).
    ("rbd_skip_partial_discard", "false"),
    // [`RbdStorage`] blocklists a lock's owner itself, once per owner, before breaking it;
    // librbd's own blocklist-on-break would cost a monitor round and a map epoch per image.
    ("rbd_blocklist_on_break_lock", "false"),
    // Bounded waits: an unreachable cluster is an error, not a hang.
    ("client_mount_timeout", "15"),
    ("rados_mon_op_timeout", "15"),
    ("rados_osd_op_timeout", "60"),
];

/// How [`RbdStorage`] opens images.
#[derive(Debug, Clone)]
pub struct RbdOptions {
    /// Prepended to every file name (several tzero sites may share a pool).
    pub prefix: String,
    /// RBD object size, 2^order bytes (22: 4 MiB, librbd's default).
    pub order: u8,
    /// Break (and so blocklist) another client's exclusive lock on open. Only a node that holds
    /// the pool's lease may do this.
    pub break_locks: bool,
    /// Client addresses already blocklisted (the previous owner, fenced at takeover): their
    /// locks are broken without a second blocklist.
    pub fenced: Vec<String>,
}

impl Default for RbdOptions {
    fn default() -> Self {
        RbdOptions {
            prefix: String::new(),
            order: 22,
            break_locks: false,
            fenced: Vec::new(),
        }
    }
}

/// RBD images of one pool, as a [`Storage`].
#[derive(Debug)]
pub struct RbdStorage {
    pool: Arc<Pool>,
    options: RbdOptions,
    /// Open images by name: librbd's exclusive lock is per handle, so a second handle of the
    /// same image in this process would contend with the first.
    open: Mutex<HashMap<String, Weak<RbdFile>>>,
    /// Replicas per object, for free space; read from the monitors once.
    replicas: u64,
    /// Lock owners blocklisted so far (see [`RbdOptions::fenced`]).
    fenced: Mutex<std::collections::HashSet<String>>,
}

impl RbdStorage {
    /// Connects with `ceph.conf` at `conf` and opens `pool`.
    pub fn connect(conf: &Path, pool: &str, options: RbdOptions) -> io::Result<RbdStorage> {
        let cluster = Cluster::connect(conf, None, CLIENT_OPTIONS).map_err(io::Error::other)?;
        let pool = cluster
            .pool(pool)
            .map_err(|e| io::Error::new(e.kind(), format!("opening pool {pool:?}: {e}")))?;
        Ok(Self::new(pool, options))
    }

    /// Uses an open pool.
    pub fn new(pool: Arc<Pool>, options: RbdOptions) -> RbdStorage {
        let replicas = pool_size(&pool).unwrap_or(1).max(1);
        let fenced = Mutex::new(options.fenced.iter().cloned().collect());
        RbdStorage {
            pool,
            fenced,
            options,
            open: Mutex::new(HashMap::new()),
            replicas,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn image_name(&self, name: &str) -> String {
        format!("{}{}", self.options.prefix, name)
    }

    fn open_image(&self, image: &str, create: bool) -> io::Result<Image> {
        match self.pool.open_image(image) {
            Err(e)
                if create && e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) =>
            {
                match self.pool.create_image(image, 0, self.options.order) {
                    Err(e) if e.raw_os_error() != Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                        return Err(e)
                    }
                    _ => {}
                }
                self.pool.open_image(image)
            }
            other => other,
        }
    }

    /// Takes the image's exclusive lock; with `break_locks`, a previous holder is broken
    /// (blocklisted) first, without asking it: it is dead or fenced, and asking a dead owner
    /// to release costs librbd's request timeout.
    fn lock(&self, image: &Image) -> io::Result<()> {
        if self.options.break_locks {
            for owner in image.lock_owners()? {
                tracing::warn!(
                    image = image.name(),
                    owner,
                    "breaking a previous owner's lock"
                );
                // librbd names an owner by its client address: fence it before breaking, so
                // its late writes are refused by the OSDs.
                if self.fenced.lock().insert(owner.clone()) {
                    self.pool.cluster().blocklist_add(&owner, 0)?;
                }
                match image.break_lock(&owner) {
                    // Gone meanwhile: nothing to break.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
                    }
                    other => other?,
                }
            }
        }
        image.lock_exclusive().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: exclusive lock held by another tzero node ({e})",
                    image.name()
                ),
            )
        })
    }
}

/// The pool's replica count (`osd pool get <pool> size`).
fn pool_size(pool: &Pool) -> Option<u64> {
    let cmd = serde_json::json!({"prefix": "osd pool get", "pool": pool.name(), "var": "size", "format": "json"});
    let out = pool.cluster().mon_command(&cmd.to_string()).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out).ok()?;
    v.get("size")?.as_u64()
}

impl Storage for RbdStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn BlockFile>> {
        let image_name = self.image_name(name);
        let mut open = self.open.lock();
        if let Some(file) = open.get(&image_name).and_then(Weak::upgrade) {
            return Ok(file);
        }
        let image = self.open_image(&image_name, create)?;
        self.lock(&image)?;
        let size = image.size()?;
        let file = Arc::new(RbdFile {
            image,
            size: Mutex::new(size),
        });
        open.insert(image_name, Arc::downgrade(&file));
        Ok(file)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let image_name = self.image_name(name);
        // The engine drops its handle before removing; a stale entry is only a dead Weak.
        self.open.lock().remove(&image_name);
        self.pool.remove_image(&image_name)
    }

    fn free_bytes(&self) -> Option<u64> {
        let stat = self.pool.cluster().stat().ok()?;
        (stat.kb > 0).then(|| stat.kb_avail.saturating_mul(1024) / self.replicas)
    }
}

/// One image as a [`BlockFile`].
#[derive(Debug)]
pub struct RbdFile {
    image: Image,
    /// The image's size, kept here (librbd's getter takes a lock) and changed only under this
    /// mutex, so concurrent writes past the end grow it once.
    size: Mutex<u64>,
}

impl RbdFile {
    fn grow_to(&self, end: u64) -> io::Result<()> {
        let mut size = self.size.lock();
        if end > *size {
            self.image.resize(end)?;
            *size = end;
        }
        Ok(())
    }

    fn current_len(&self) -> u64 {
        *self.size.lock()
    }
}

impl BlockFile for RbdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = self.current_len();
        let inside = usize::try_from(len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = if inside > 0 {
            self.image.read_at(&mut buf[..inside], offset)?
        } else {
            0
        };
        buf[got..].fill(0);
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if end > self.current_len() {
            self.grow_to(end)?;
        }
        self.image.write_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.image.flush()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.current_len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut size = self.size.lock();
        if len != *size {
            self.image.resize(len)?;
            *size = len;
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = (offset + len).min(self.current_len());
        if end <= offset {
            return Ok(());
        }
        self.image.discard(offset, end - offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        if end > self.current_len() {
            self.grow_to(end)?;
        }
        self.image.write_zeroes(offset, len)
    }

    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        let end = end.min(self.current_len());
        if end <= offset {
            return Ok(None);
        }
        // Whole objects: a partly written object counts as data in full, which only makes a
        // copy read a few zeros it could have skipped.
        let extents = self.image.allocated(offset, end - offset)?;
        Ok(extents.first().map(|e| {
            let start = e.offset.max(offset);
            // Merge the extents that touch, so the caller gets one run per call.
            let mut stop = (e.offset + e.len).min(end);
            for next in &extents[1..] {
                if next.offset > stop {
                    break;
                }
                stop = (next.offset + next.len).min(end);
            }
            (start, stop)
        }))
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        let len = self.current_len();
        if len == 0 {
            return Ok(0);
        }
        Ok(self.image.allocated(0, len)?.iter().map(|e| e.len).sum())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
