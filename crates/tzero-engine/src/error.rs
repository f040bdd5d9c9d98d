//! Error types, one public enum per family of operations.
//!
//! Messages do not repeat their cause: the cause travels in `#[source]`.

use crate::storage::fs_limits::format_bytes;
use std::io;

/// Errors of volume management: create, delete, look-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("volume {0:?} not found")]
    NotFound(String),
    #[error("volume {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid volume name {0:?}: use 1-64 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
    InvalidName(String),
    #[error("invalid capacity {0}: it must be a non-zero multiple of 512 bytes, at most 2^60")]
    InvalidCapacity(u64),
    #[error("invalid extent pool capacity 0: give the pool at least one byte")]
    EmptyPool,
    /// The file system of the data directory allows no file this large (EFBIG).
    #[error("capacity {} exceeds the largest file {} allows{}; choose a smaller capacity, or put the data directory on a file system with larger files (XFS, btrfs)", format_bytes(*.capacity), fs.unwrap_or("the file system of the data directory"), max_hint(.max))]
    TooLargeForFileSystem {
        capacity: u64,
        /// The file system's name, when it is one we know.
        fs: Option<&'static str>,
        /// Its largest file, when known.
        max: Option<u64>,
    },
    #[error("invalid track size {0}: it must be a power of two from 4 KiB to 1 MiB")]
    InvalidTrackSize(u64),
    #[error("capacity {} in tracks of {} is {} tracks; a volume has at most 2^32 tracks (256 TiB at the default 64 KiB track, 4 PiB at 1 MiB): choose larger tracks (--track-size) or a smaller capacity", format_bytes(*.capacity), format_bytes(*.track_size), .capacity.div_ceil(*.track_size))]
    TooManyTracks { capacity: u64, track_size: u64 },
    #[error(
        "volume {name:?} is in a FlashCopy relationship ({detail}); withdraw it first or force"
    )]
    InUse { name: String, detail: String },
    #[error("storage error on volume {name:?}")]
    Storage {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("extent pool {0:?} not found")]
    PoolNotFound(String),
    #[error("extent pool {0:?} already exists")]
    PoolExists(String),
    #[error("extent pool {0:?} still holds {1} volume(s)")]
    PoolInUse(String, usize),
    #[error("extent pool {pool:?} is too small: a standard volume needs {needed} bytes, {free} are free")]
    PoolTooSmall {
        pool: String,
        needed: u64,
        free: u64,
    },
    /// A standard volume is allocated whole when it is created; the file system has less free.
    #[error("standard volume {name:?} needs {} allocated now, but the file system of the data directory has {} free; choose a smaller capacity or a space-efficient volume (-sam ese), or free space", format_bytes(*.needed), format_bytes(*.free))]
    FileSystemTooFull {
        name: String,
        needed: u64,
        free: u64,
    },
    /// Host connections serve the volume: deleting it needs `force`, which disconnects them.
    #[error("volume {name:?} is open by {clients} host connection(s) (NBD); disconnect them first, or delete with --force, which disconnects them")]
    Open { name: String, clients: usize },
    #[error("volume {0:?}: a space-efficient volume must be allocated from an extent pool")]
    NeedsPool(String),
    /// Safeguarded Copy backups are not volumes to manage: they leave only by expiring.
    #[error("{0:?} is a Safeguarded Copy backup, not a volume: it is immutable; see lssgc, recoversgc and rmsgc")]
    IsBackup(String),
    #[error("volume {name:?} has {count} Safeguarded Copy backup(s); they are immutable until their retention ends: remove them with rmsgc once expired, then delete the volume")]
    HasBackups { name: String, count: usize },
    #[error("extent pool {pool:?} holds the safeguarded capacity of {volumes}; remove that first")]
    PoolHoldsSafeguarded { pool: String, volumes: String },
    /// `--force` could not withdraw one of the volume's relationships.
    #[error("withdrawing a relationship of volume {name:?} failed")]
    Withdraw {
        name: String,
        #[source]
        source: Box<FlashError>,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Errors of Safeguarded Copy: capacity, backups, recovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SgcError {
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    #[error("no Safeguarded Copy backup {0}")]
    NotFound(u64),
    #[error("no volumes given")]
    NoVolumes,
    #[error("volume {0:?} has no safeguarded capacity; give it some with mksafeguardedcap")]
    NoCapacity(String),
    #[error("the safeguarded capacity of {volume:?} is full ({} of {} used); the backup was not taken: grow it with mksafeguardedcap, let older backups expire (rmsgc), or set the policy's --on-full expire-oldest", format_bytes(*.used), format_bytes(*.capacity))]
    CapacityFull {
        volume: String,
        used: u64,
        capacity: u64,
    },
    #[error("the safeguarded capacity of {volume:?} holds {backups} backup(s): it can grow, but not shrink, move or go until they have expired")]
    CapacityInUse { volume: String, backups: usize },
    #[error("backup {id} is immutable until {}: nothing removes it before its retention ends (shortening the retention needs the security token)", format_ms(*.until_ms))]
    Retained { id: u64, until_ms: u64 },
    #[error("backup {id} is read by the recovered volume {volume:?}: withdraw that relationship (rmflash) or let its copy complete first")]
    HeldByRecovery { id: u64, volume: String },
    #[error("backup {id} failed and cannot be recovered: {reason}")]
    Failed { id: u64, reason: String },
    #[error("backups {a} and {b} are of different volumes")]
    DifferentSources { a: u64, b: u64 },
    #[error("backup {id} is of {of:?}, not of {volume:?}")]
    WrongSource { id: u64, of: String, volume: String },
    #[error("volume {volume:?} is open by {clients} host connection(s) (NBD); disconnect them before restoring it")]
    SourceOpen { volume: String, clients: usize },
    #[error("storage error during a Safeguarded Copy operation")]
    Storage(#[source] io::Error),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Flash(#[from] FlashError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// A time in ms since the epoch, as UTC (RFC 3339), for messages.
fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl From<Down> for SgcError {
    fn from(d: Down) -> Self {
        match d {
            Down::Poisoned => SgcError::Poisoned,
            Down::ShuttingDown => SgcError::ShuttingDown,
        }
    }
}

/// " (16 TiB)", or nothing when the limit is not known.
fn max_hint(max: &Option<u64>) -> String {
    max.map(|m| format!(" ({})", format_bytes(m)))
        .unwrap_or_default()
}

/// Errors of FlashCopy relationship management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlashError {
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    #[error("no FlashCopy relationship {0}:{1}")]
    NotFound(String, String),
    #[error("no FlashCopy relationship has sequence number {0}")]
    SeqnumNotFound(u32),
    /// The operation breaks a rule of FlashCopy; nothing was changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("storage error during FlashCopy operation")]
    Storage(#[source] io::Error),
    /// Host I/O done on the operation's behalf (destaging pending writes) failed.
    #[error(transparent)]
    Io(IoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// One variant per rule an operation can break. Each message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("no SRC:TGT pairs given")]
    NoPairs,
    #[error("source and target are the same volume {0:?}")]
    SameVolume(String),
    #[error("volumes {src:?} and {tgt:?} differ in {what}")]
    SizeMismatch {
        src: String,
        tgt: String,
        what: &'static str,
    },
    #[error(
        "volume {tgt:?} is already the target of {existing:?}; withdraw that relationship first"
    )]
    TargetInUse { tgt: String, existing: String },
    #[error("volume {volume:?} already has the maximum of {max} targets")]
    TooManyTargets { volume: String, max: usize },
    #[error("{0} is named as a target twice")]
    TargetTwice(String),
    #[error("{0} is both a source and a target in one group")]
    SourceAndTargetInGroup(String),
    #[error("{src}:{tgt} would make a cycle: {tgt} is upstream of {src}")]
    Cycle { src: String, tgt: String },
    #[error("cannot {action}: {volume} is the source of {volume}:{dependent} whose copy is incomplete, and its point in time would change")]
    HasDependents {
        action: String,
        volume: String,
        dependent: String,
    },
    #[error("{0} is not the source of a FlashCopy relationship; only sources can be frozen")]
    NotASource(String),
    #[error("{0} is not frozen (no write I/O is held on it)")]
    NotFrozen(String),
    #[error(
        "{src}:{tgt} does not record changes; establish it with --record --persist to {action}"
    )]
    NotRecording {
        src: String,
        tgt: String,
        action: &'static str,
    },
    #[error("{src}:{tgt} has a revertible resync to commit or revert first")]
    RevertPending { src: String, tgt: String },
    #[error("{src}:{tgt} is not revertible: there is no revertible resync to {action} ({})", revertible_hint(.made_revertible))]
    NotRevertible {
        src: String,
        tgt: String,
        action: &'static str,
        /// `setflashrevertible` was done but no resync followed.
        made_revertible: bool,
    },
    #[error("{src}:{tgt}: the background copy is incomplete ({remaining} tracks to go); wait for it or use --fast")]
    CopyIncomplete {
        src: String,
        tgt: String,
        remaining: u64,
    },
    #[error("cannot reverse {src}:{tgt}: {src} is itself a target")]
    SourceIsTarget { src: String, tgt: String },
    #[error("cannot reverse {src}:{tgt}: {src} is also the source of {src}:{other} whose copy is incomplete")]
    SourceHasIncompleteCopy {
        src: String,
        tgt: String,
        other: String,
    },
    #[error("{0:?} is a Safeguarded Copy backup: FlashCopy verbs do not apply to it; see lssgc and recoversgc")]
    IsBackup(String),
    #[error("relationship {src}:{tgt} already does a background copy")]
    AlreadyCopy { src: String, tgt: String },
    #[error("relationship {src}:{tgt} failed: {reason}")]
    Failed {
        src: String,
        tgt: String,
        reason: String,
    },
}

/// What to do about a missing revertible resync.
fn revertible_hint(made_revertible: &bool) -> &'static str {
    if *made_revertible {
        "setflashrevertible was done, but no resync has happened since"
    } else {
        "make it revertible with setflashrevertible, then resync"
    }
}

impl From<IoError> for FlashError {
    /// Every host I/O error keeps its meaning: only a poisoned engine is reported as one.
    fn from(e: IoError) -> Self {
        match e {
            IoError::Poisoned => FlashError::Poisoned,
            IoError::ShuttingDown => FlashError::ShuttingDown,
            IoError::Storage { source, .. } => FlashError::Storage(source),
            other => FlashError::Io(other),
        }
    }
}

/// Errors of host I/O on a volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    #[error("range {offset}+{len} is outside the volume of {capacity} bytes")]
    OutOfRange {
        offset: u64,
        len: u64,
        capacity: u64,
    },
    #[error("no space left for volume {0:?}")]
    NoSpace(String),
    #[error("volume {0:?} is write-protected")]
    ReadOnly(String),
    #[error("volume {0:?} has been deleted")]
    Deleted(String),
    #[error("target {0:?} of a failed FlashCopy relationship cannot be read")]
    TargetFailed(String),
    #[error("I/O error on volume {name:?}")]
    Storage {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Errors of the durable catalog (redb).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("catalog database error")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("catalog record {key:?} is corrupt")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("bitmap chunk {chunk} of relationship {rel} is corrupt (checksum or size)")]
    CorruptBitmap { rel: u64, chunk: u64 },
    /// A change that would make the catalog grow was refused, the catalog left unchanged: the
    /// file system is full and the metadata reserve is short.
    #[error("the file system of the data directory is full: the catalog's metadata reserve holds {} of {}; free space (rmflash, rmfbvol) before creating volumes, pools or relationships", format_bytes(*.held), format_bytes(*.wanted))]
    NoSpace { held: u64, wanted: u64 },
    #[error("catalog format version {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
}

impl CatalogError {
    pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        CatalogError::Database(Box::new(e))
    }
}

/// Errors of opening the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot use data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A backup whose expiry a crash interrupted could not be removed.
    #[error("cannot finish an interrupted Safeguarded Copy expiry")]
    Backups(#[source] Box<SgcError>),
    #[error("cannot open volume file of {name:?}")]
    VolumeFile {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// True when the error means the disk is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

/// Why the engine takes no more operations: the guard every public operation passes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Down {
    Poisoned,
    ShuttingDown,
}

impl From<Down> for VolumeError {
    fn from(d: Down) -> Self {
        match d {
            Down::Poisoned => VolumeError::Poisoned,
            Down::ShuttingDown => VolumeError::ShuttingDown,
        }
    }
}

impl From<Down> for FlashError {
    fn from(d: Down) -> Self {
        match d {
            Down::Poisoned => FlashError::Poisoned,
            Down::ShuttingDown => FlashError::ShuttingDown,
        }
    }
}

impl From<Down> for IoError {
    fn from(d: Down) -> Self {
        match d {
            Down::Poisoned => IoError::Poisoned,
            Down::ShuttingDown => IoError::ShuttingDown,
        }
    }
}
