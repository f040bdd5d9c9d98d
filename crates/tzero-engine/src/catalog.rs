//! The durable catalog: volumes, relationships and bitmaps, in one redb database.
//!
//! redb gives atomic, checksummed, crash-safe commits, so every metadata change of the engine
//! is one transaction, durable when `commit` returns (one sync, `Durability::Immediate`).
//!
//! Tables (format version [`FORMAT_VERSION`]; bump it on any change):
//! - `meta`: `"format"` → version, `"next_id"` → next volume/relationship id.
//! - `volumes`: id → JSON [`VolumeRecord`].
//! - `relationships`: id → JSON [`RelRecord`].
//! - `pools`: id → JSON [`PoolRecord`].
//! - `bitmaps`: (relationship id × 4 + kind, chunk index) → chunk record (see
//!   [`crate::bitmap`]): a version byte, a CRC32 and 4 KiB of bits. Chunks never written are all
//!   clear. Kinds: [`KIND_COPIED`], [`KIND_CHANGED_SOURCE`], [`KIND_CHANGED_TARGET`],
//!   [`KIND_REVERT_SET`].
//! - `shared`: (relationship id, chunk index) → chunk record of [`KIND_SHARED`].
//!
//! The file is kept allocated ahead of what redb uses (the metadata reserve, [`crate::reserve`]),
//! so the commits that fail a relationship, withdraw it or delete a volume succeed on a full
//! file system; [`Catalog::change_growing`] refuses, before redb is touched, the commits that
//! would eat into it.

use crate::bitmap::Bitmap;
use crate::error::CatalogError;
use crate::reserve::Reserve;
use crate::storage::BlockFile;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io;
use std::sync::Arc;

pub const FORMAT_VERSION: u64 = 1;
pub const CATALOG_FILE: &str = "catalog.redb";
/// How every backup's hidden volume name starts ([`VolumeRecord::backup_name`]).
pub const BACKUP_PREFIX: &str = ".sgc-";

/// The control bitmap: track on the target.
pub const KIND_COPIED: u64 = 0;
/// Change recording: tracks written on the source since T0.
pub const KIND_CHANGED_SOURCE: u64 = 1;
/// Change recording: tracks written on the target since T0.
pub const KIND_CHANGED_TARGET: u64 = 2;
/// Revertible resync: the tracks whose previous target data is kept in the undo file.
pub const KIND_REVERT_SET: u64 = 3;

/// Sibling sharing: tracks whose T0 data this target holds for older targets of its source.
/// Kept in its own table ([`SHARED`]): the `bitmaps` key has room for four kinds only.
pub const KIND_SHARED: u64 = 4;

fn bitmap_key(rel: u64, kind: u64) -> u64 {
    rel * 4 + kind
}

/// The table and key prefix of one bitmap of a relationship.
fn bitmap_slot(rel: u64, kind: u64) -> (TableDefinition<'static, (u64, u64), &'static [u8]>, u64) {
    if kind == KIND_SHARED {
        (SHARED, rel)
    } else {
        (BITMAPS, bitmap_key(rel, kind))
    }
}

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VOLUMES: TableDefinition<u64, &str> = TableDefinition::new("volumes");
const RELS: TableDefinition<u64, &str> = TableDefinition::new("relationships");
const POOLS: TableDefinition<u64, &str> = TableDefinition::new("pools");
const BITMAPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("bitmaps");
const SHARED: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("shared");

/// A volume as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: u64,
    pub name: String,
    pub capacity: u64,
    pub track_size: u64,
    pub created_ms: u64,
    /// Set when a NOCOPY or unfinished copy was withdrawn: the contents are not a point in time.
    #[serde(default)]
    pub contents_undefined: bool,
    /// The extent pool the volume is allocated from, if any.
    #[serde(default)]
    pub pool: Option<u64>,
    /// How the volume takes space from its pool.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Set on the hidden volume that holds a Safeguarded Copy backup ([`crate::safeguarded`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRecord>,
    /// A source's safeguarded capacity: the space its backups may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safeguarded: Option<SafeguardedRecord>,
}

/// A Safeguarded Copy backup: a hidden, space-efficient NOCOPY target of `source` that no host
/// and no API path writes. Its volume id is the backup's id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRecord {
    pub source: u64,
    /// Wall-clock time of its T0, in ms.
    pub taken_ms: u64,
    /// Nothing removes it before this time (ms since the epoch).
    pub retain_until_ms: u64,
    /// The schedule that took it, if any.
    #[serde(default)]
    pub policy: Option<String>,
    /// Backups taken together (one T0) share this id: the first backup's id.
    pub group: u64,
    /// Tracks the source changed between the previous backup's T0 and this one's; `None` for
    /// the first backup of a source.
    #[serde(default)]
    pub changed_tracks: Option<u64>,
    /// The change was more than the anomaly factor times the median of the last backups.
    #[serde(default)]
    pub anomaly: bool,
}

/// Safeguarded capacity of a source volume, taken from an extent pool when it is made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SafeguardedRecord {
    pub pool: u64,
    pub capacity: u64,
}

/// DS8000 storage allocation methods.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// A sparse file outside any pool: space as written, no limit but the file system's.
    #[default]
    Sparse,
    /// Fully allocated at creation (`fallocate`), its whole capacity reserved in the pool.
    Standard,
    /// Space-efficient (DSCLI `-sam ese`): takes pool space only for tracks written or copied.
    Thin,
}

/// An extent pool as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub id: u64,
    pub name: String,
    pub capacity: u64,
    pub created_ms: u64,
}

impl VolumeRecord {
    pub fn file_name(&self) -> String {
        format!("vol-{:016x}.img", self.id)
    }

    /// The name of a backup's hidden volume: it starts with '.', which no host-made volume
    /// name may, so the two never collide.
    pub fn backup_name(id: u64) -> String {
        format!("{BACKUP_PREFIX}{id}")
    }
}

/// Persistent state of a relationship.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelState {
    /// Tracks are still being copied (COPY) or copied on write only (NOCOPY).
    Active,
    /// Every track is on the target; the relationship is persistent and stays.
    Copied,
    /// The target failed; the source goes on without copy-on-write.
    Failed,
}

/// A relationship as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelRecord {
    pub id: u64,
    pub source: u64,
    pub target: u64,
    pub background_copy: bool,
    pub persistent: bool,
    pub copy_rate: u64,
    pub state: RelState,
    pub created_ms: u64,
    pub synced_ms: u64,
    #[serde(default)]
    pub failure: Option<String>,
    /// Incremental FlashCopy: record changes on both sides since T0.
    #[serde(default)]
    pub recording: bool,
    /// `rmflash --cp`: end the relationship once the background copy completes.
    #[serde(default)]
    pub withdraw_on_complete: bool,
    /// Target write inhibit: hosts may not write the target while the relationship exists.
    #[serde(default)]
    pub target_inhibit: bool,
    /// DS8000 sequence number, a label for selecting relationships.
    #[serde(default)]
    pub seqnum: u32,
    /// `setflashrevertible`: the next resync keeps the previous point in time restorable.
    #[serde(default)]
    pub revertible: bool,
    /// A revertible resync happened and is neither committed nor reverted: the previous
    /// target tracks it overwrites are kept in `undo_file_name()`, the set in [`KIND_REVERT_SET`].
    #[serde(default)]
    pub revert_pending: bool,
    /// DateSynced before the revertible resync, restored by a revert.
    #[serde(default)]
    pub previous_synced_ms: u64,
    /// Orders the targets of one source by their point in time (establish or resync): a
    /// catalog id taken then. Older records have 0 and are ordered by id, which is the same.
    #[serde(default)]
    pub t0_seq: u64,
}

impl RelRecord {
    /// A relationship made now (`now` ms) with `opts`: active, nothing copied, its point in
    /// time ordered by its own id.
    pub fn established(
        id: u64,
        source: u64,
        target: u64,
        opts: &crate::relationship::FlashOptions,
        now: u64,
    ) -> Self {
        RelRecord {
            id,
            source,
            target,
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
            t0_seq: id,
        }
    }

    /// The file holding the target tracks a revertible resync replaced.
    pub fn undo_file_name(&self) -> String {
        format!("undo-{:016x}.img", self.id)
    }
}

/// redb storage on top of one of our [`BlockFile`]s, so crash tests cut its power too. Resizes
/// go through the [`Reserve`], which keeps the file allocated ahead of them.
#[derive(Debug)]
struct RedbBackend(Arc<Reserve>);

impl StorageBackend for RedbBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.file().len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let len = self.0.file().len()?;
        if offset + out.len() as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of catalog",
            ));
        }
        self.0.file().read_at(out, offset)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.file().sync()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.file().write_at(data, offset)
    }
}

/// The open catalog.
#[derive(Debug)]
pub struct Catalog {
    db: Database,
    reserve: Arc<Reserve>,
    /// Every commit of a [`Change`] and how long it took (monitoring).
    pub commits: crate::stats::Histogram,
}

/// Everything the catalog holds, except bitmaps (loaded per relationship).
pub struct CatalogContents {
    pub pools: Vec<PoolRecord>,
    pub volumes: Vec<VolumeRecord>,
    pub relationships: Vec<RelRecord>,
}

/// One atomic change of the catalog.
pub struct Change<'a> {
    txn: redb::WriteTransaction,
    catalog: &'a Catalog,
}

fn decode<T: for<'de> Deserialize<'de>>(key: String, s: &str) -> Result<T, CatalogError> {
    serde_json::from_str(s).map_err(|source| CatalogError::Corrupt { key, source })
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("catalog records always serialize")
}

impl Catalog {
    pub fn open(file: Arc<dyn BlockFile>) -> Result<Self, CatalogError> {
        let reserve = Arc::new(Reserve::new(file));
        let db = redb::Builder::new()
            .set_cache_size(16 << 20)
            .create_with_backend(RedbBackend(reserve.clone()))
            .map_err(CatalogError::db)?;
        let catalog = Catalog {
            db,
            reserve,
            commits: Default::default(),
        };
        let txn = catalog.db.begin_write().map_err(CatalogError::db)?;
        {
            let mut meta = txn.open_table(META).map_err(CatalogError::db)?;
            let found = meta
                .get("format")
                .map_err(CatalogError::db)?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT_VERSION)
                        .map_err(CatalogError::db)?;
                    meta.insert("next_id", 1).map_err(CatalogError::db)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(v) => {
                    return Err(CatalogError::Version {
                        found: u32::try_from(v).unwrap_or(u32::MAX),
                        supported: u32::try_from(FORMAT_VERSION).unwrap_or(u32::MAX),
                    })
                }
            }
            txn.open_table(VOLUMES).map_err(CatalogError::db)?;
            txn.open_table(RELS).map_err(CatalogError::db)?;
            txn.open_table(POOLS).map_err(CatalogError::db)?;
            txn.open_table(BITMAPS).map_err(CatalogError::db)?;
            // Added without a format change: a catalog written before it simply has none.
            txn.open_table(SHARED).map_err(CatalogError::db)?;
        }
        txn.commit().map_err(CatalogError::db)?;
        Ok(catalog)
    }

    pub fn load(&self) -> Result<CatalogContents, CatalogError> {
        let txn = self.db.begin_read().map_err(CatalogError::db)?;
        Ok(CatalogContents {
            pools: load_records(&txn, POOLS, "pool")?,
            volumes: load_records(&txn, VOLUMES, "volume")?,
            relationships: load_records(&txn, RELS, "relationship")?,
        })
    }

    /// Loads the persisted chunks of one of a relationship's bitmaps.
    pub fn load_bitmap(&self, rel: u64, kind: u64, bitmap: &Bitmap) -> Result<(), CatalogError> {
        let txn = self.db.begin_read().map_err(CatalogError::db)?;
        let (table, key) = bitmap_slot(rel, kind);
        let table = txn.open_table(table).map_err(CatalogError::db)?;
        for entry in table
            .range((key, 0)..=(key, u64::MAX))
            .map_err(CatalogError::db)?
        {
            let (k, v) = entry.map_err(CatalogError::db)?;
            let (_, chunk) = k.value();
            if !bitmap.decode_chunk(chunk, v.value()) {
                return Err(CatalogError::CorruptBitmap { rel, chunk });
            }
        }
        Ok(())
    }

    /// Starts a change that the engine needs to keep its state true (record a failure, persist
    /// bits, withdraw, delete): it goes on even when the file system is full, on the reserve.
    pub fn change(&self) -> Result<Change<'_>, CatalogError> {
        // Best effort: a short reserve is logged by the reserve itself.
        self.reserve.top_up_lazily();
        Ok(Change {
            txn: self.db.begin_write().map_err(CatalogError::db)?,
            catalog: self,
        })
    }

    /// Starts a change that makes the catalog grow (a new volume, pool or relationship). It is
    /// refused with [`CatalogError::NoSpace`], leaving the catalog untouched, when the file system
    /// cannot give back the whole reserve: the essential changes must never find it used up.
    pub fn change_growing(&self) -> Result<Change<'_>, CatalogError> {
        self.reserve.check_room()?;
        self.change()
    }

    /// Takes back the reserve after space was freed (best effort; logged when it cannot).
    pub fn top_up_reserve(&self) {
        self.reserve.top_up();
    }

    /// Bytes held for the catalog past the end of its file.
    pub fn reserve_held(&self) -> u64 {
        self.reserve.held()
    }
}

impl Change<'_> {
    /// Reserves a fresh id (volumes and relationships share one sequence).
    pub fn next_id(&mut self) -> Result<u64, CatalogError> {
        let mut meta = self.txn.open_table(META).map_err(CatalogError::db)?;
        let id = meta
            .get("next_id")
            .map_err(CatalogError::db)?
            .map_or(1, |v| v.value());
        meta.insert("next_id", id + 1).map_err(CatalogError::db)?;
        Ok(id)
    }

    pub fn put_volume(&mut self, v: &VolumeRecord) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(VOLUMES).map_err(CatalogError::db)?;
        t.insert(v.id, encode(v).as_str())
            .map_err(CatalogError::db)?;
        Ok(())
    }

    pub fn delete_volume(&mut self, id: u64) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(VOLUMES).map_err(CatalogError::db)?;
        t.remove(id).map_err(CatalogError::db)?;
        Ok(())
    }

    pub fn put_pool(&mut self, p: &PoolRecord) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(POOLS).map_err(CatalogError::db)?;
        t.insert(p.id, encode(p).as_str())
            .map_err(CatalogError::db)?;
        Ok(())
    }

    pub fn delete_pool(&mut self, id: u64) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(POOLS).map_err(CatalogError::db)?;
        t.remove(id).map_err(CatalogError::db)?;
        Ok(())
    }

    /// Removes every chunk of one bitmap kind of a relationship.
    pub fn delete_bitmap(&mut self, rel: u64, kind: u64) -> Result<(), CatalogError> {
        let (table, key) = bitmap_slot(rel, kind);
        let mut b = self.txn.open_table(table).map_err(CatalogError::db)?;
        b.retain_in((key, 0)..=(key, u64::MAX), |_, _| false)
            .map_err(CatalogError::db)?;
        Ok(())
    }

    pub fn put_rel(&mut self, r: &RelRecord) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(RELS).map_err(CatalogError::db)?;
        t.insert(r.id, encode(r).as_str())
            .map_err(CatalogError::db)?;
        Ok(())
    }

    /// Removes a relationship and its bitmap.
    pub fn delete_rel(&mut self, id: u64) -> Result<(), CatalogError> {
        let mut t = self.txn.open_table(RELS).map_err(CatalogError::db)?;
        t.remove(id).map_err(CatalogError::db)?;
        let mut b = self.txn.open_table(BITMAPS).map_err(CatalogError::db)?;
        b.retain_in(
            (bitmap_key(id, 0), 0)..=(bitmap_key(id, 3), u64::MAX),
            |_, _| false,
        )
        .map_err(CatalogError::db)?;
        drop((t, b));
        self.delete_bitmap(id, KIND_SHARED)
    }

    /// Writes one already encoded chunk of one of a relationship's bitmaps.
    pub fn put_chunk_bytes(
        &mut self,
        rel: u64,
        kind: u64,
        chunk: u64,
        bytes: &[u8],
    ) -> Result<(), CatalogError> {
        let (table, key) = bitmap_slot(rel, kind);
        let mut b = self.txn.open_table(table).map_err(CatalogError::db)?;
        b.insert((key, chunk), bytes).map_err(CatalogError::db)?;
        Ok(())
    }

    /// Makes the change durable (one sync).
    pub fn commit(self) -> Result<(), CatalogError> {
        let began = std::time::Instant::now();
        let committed = self.txn.commit().map_err(CatalogError::db);
        self.catalog.commits.observe(began.elapsed());
        committed
    }
}

/// Every record of one JSON table, decoded; `what` names a corrupt one.
fn load_records<T: serde::de::DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<u64, &str>,
    what: &str,
) -> Result<Vec<T>, CatalogError> {
    let mut records = Vec::new();
    for entry in txn
        .open_table(table)
        .map_err(CatalogError::db)?
        .iter()
        .map_err(CatalogError::db)?
    {
        let (k, v) = entry.map_err(CatalogError::db)?;
        records.push(decode(format!("{what} {}", k.value()), v.value())?);
    }
    Ok(records)
}
