//! tzero's FlashCopy engine.
//!
//! A synchronous core with no async runtime: volumes in sparse files, FlashCopy relationships
//! with lazily allocated control bitmaps, the seed's I/O routing rules, a bounded write cache with
//! copy-on-write at destage, a background copier, and a redb catalog that makes all of it
//! survive `kill -9` and power loss. See ARCHITECTURE.md for the invariants.

// The engine indexes memory with track numbers and byte offsets held in u64. It builds only for
// 64-bit targets, where u64 → usize never truncates, so that lint is off here and the build
// fails loudly elsewhere.
#![allow(clippy::cast_possible_truncation)]
#[cfg(not(target_pointer_width = "64"))]
compile_error!("tzero-engine needs a 64-bit target");

mod admin;
mod bitmap;
mod cache;
mod catalog;
mod copier;
mod copy;
mod destage;
mod engine;
pub mod error;
mod exports;
pub mod geometry;
mod graph;
mod heatmap;
mod io;
mod locks;
mod persist;
mod pools;
mod recovery;
mod relationship;
mod reserve;
pub mod safeguarded;
mod sharing;
mod space;
pub mod stats;
pub mod storage;
mod threads;
mod topology;
mod volume;
mod volumes;

pub use admin::freeze_deadline;
pub use catalog::Provisioning;
pub use engine::{Engine, EngineConfig};
pub use error::{CatalogError, FlashError, IoError, OpenError, Refusal, SgcError, VolumeError};
pub use exports::ExportGuard;
pub use graph::{MAX_BACKUPS_PER_SOURCE, MAX_TARGETS_PER_SOURCE};
pub use heatmap::{FlashBitmap, MAX_BUCKETS};
pub use io::{Extent, VolumeHandle};
pub use relationship::{FlashInfo, FlashOptions, FlashState};
pub use safeguarded::{
    BackupInfo, BackupOptions, BackupState, OnFull, RestoreReport, SafeguardedInfo,
};
pub use space::PoolInfo;
pub use stats::EngineStats;
pub use volume::VolumeInfo;
pub use volumes::VolumeOptions;
