//! Error types, one public enum per family of operations.
//!
//! Messages do not repeat their cause: the cause travels in `#[source]`.

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
    #[error("invalid track size {0}: it must be a power of two from 4 KiB to 1 MiB")]
    InvalidTrackSize(u64),
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
    #[error("volume {0:?}: a space-efficient volume must be allocated from an extent pool")]
    NeedsPool(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
}

/// Errors of FlashCopy relationship management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlashError {
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    #[error("no FlashCopy relationship {0}:{1}")]
    NotFound(String, String),
    #[error("source and target are the same volume {0:?}")]
    SameVolume(String),
    #[error("volumes {src:?} and {tgt:?} differ in {what}")]
    Mismatch {
        src: String,
        tgt: String,
        what: &'static str,
    },
    #[error("volume {target:?} is already the target of {existing:?}")]
    TargetHasSource { target: String, existing: String },
    #[error("volume {0:?} already has the maximum of {1} targets")]
    TooManyTargets(String, usize),
    #[error("{0}")]
    Unsupported(String),
    #[error("relationship {0}:{1} already does a background copy")]
    AlreadyCopy(String, String),
    #[error("relationship {src}:{tgt} failed: {reason}")]
    Failed {
        src: String,
        tgt: String,
        reason: String,
    },
    #[error("storage error during FlashCopy operation")]
    Storage(#[source] io::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the engine is poisoned by an earlier metadata failure; restart it")]
    Poisoned,
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
