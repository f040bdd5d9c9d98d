//! JSON types of the HTTP API (`/v1`), shared by the server and the client.
//!
//! These mirror the engine's info structs instead of re-exporting them, so a
//! change inside the engine cannot silently change the wire format: the
//! conversions below are the only coupling, and a renamed engine field breaks
//! the build here rather than a client in the field.
//!
//! Every type derives `ToSchema`: the OpenAPI document (`/v1/openapi.json`)
//! is generated from these definitions, so it cannot drift from the wire.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Version prefix of every route.
pub const API_PREFIX: &str = "/v1";

/// A volume (`GET /v1/volumes`, `GET /v1/volumes/{name}`).
///
/// The daemon sends every field (the schema requires them all); `default`
/// lets the client read an older daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub name: String,
    pub capacity_bytes: u64,
    pub track_size: u64,
    /// Bytes actually stored for this volume (sparse files store less).
    pub allocated_bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Targets of the relationships this volume is the source of.
    #[serde(default)]
    #[schema(required = true)]
    pub source_of: Vec<String>,
    /// Source of the relationship this volume is the target of.
    #[serde(default)]
    #[schema(required = true)]
    pub target_of: Option<String>,
    /// Set when the volume was the target of a relationship withdrawn or
    /// failed before its copy completed: its contents are a mix of T0 and
    /// earlier data.
    #[serde(default)]
    #[schema(required = true)]
    pub contents_undefined: bool,
    /// Extent pool the volume is allocated from; none for a sparse volume.
    #[serde(default)]
    #[schema(required = true)]
    pub pool: Option<String>,
    /// How the volume takes space: `sparse` (a file outside any pool),
    /// `standard` (fully allocated in its pool) or `thin` (space-efficient,
    /// DSCLI `-sam ese`: pool space per track written or copied).
    #[serde(default)]
    #[schema(required = true)]
    pub provisioning: Provisioning,
    /// Host writes are held by a freeze (`mkflash --freeze`, `freezeflash`).
    #[serde(default)]
    #[schema(required = true)]
    pub frozen: bool,
    /// Hosts may not write: the target of a relationship with target write
    /// inhibit (exported read-only over NBD).
    #[serde(default)]
    #[schema(required = true)]
    pub write_inhibited: bool,
    /// Safeguarded capacity (`mksafeguardedcap`): pool, size, used and free.
    #[serde(default)]
    #[schema(required = true)]
    pub safeguarded: Option<crate::sgc::types::SafeguardedCap>,
}

/// Storage allocation method of a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// A sparse file outside any pool.
    #[default]
    Sparse,
    /// Fully allocated from an extent pool at creation.
    Standard,
    /// Space-efficient: pool space only for tracks written or copied.
    Thin,
}

impl From<tzero_engine::Provisioning> for Provisioning {
    fn from(p: tzero_engine::Provisioning) -> Self {
        match p {
            tzero_engine::Provisioning::Sparse => Provisioning::Sparse,
            tzero_engine::Provisioning::Standard => Provisioning::Standard,
            tzero_engine::Provisioning::Thin => Provisioning::Thin,
        }
    }
}

impl Provisioning {
    /// DSCLI's storage allocation method name (`-sam`), "-" for sparse.
    pub fn sam(self) -> &'static str {
        match self {
            Provisioning::Sparse => "-",
            Provisioning::Standard => "standard",
            Provisioning::Thin => "ese",
        }
    }
}

impl From<tzero_engine::VolumeInfo> for Volume {
    fn from(v: tzero_engine::VolumeInfo) -> Self {
        Volume {
            name: v.name,
            capacity_bytes: v.capacity_bytes,
            track_size: v.track_size,
            allocated_bytes: v.allocated_bytes,
            created_ms: v.created_ms,
            source_of: v.source_of,
            target_of: v.target_of,
            contents_undefined: v.contents_undefined,
            pool: v.pool,
            provisioning: v.provisioning.into(),
            frozen: v.frozen,
            write_inhibited: v.write_inhibited,
            safeguarded: v.safeguarded.map(Into::into),
        }
    }
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// 1-64 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// A multiple of 512 bytes and at most 2^32 tracks (256 TiB at the
    /// default 64 KiB track, 4 PiB at 1 MiB), within the largest file the
    /// data directory's file system holds (ext4: 16 TiB); the maximum given
    /// here is this daemon's.
    #[serde(deserialize_with = "crate::whole_numbers::u64")]
    #[schema(minimum = 512, maximum = 1152921504606846976.0, multiple_of = 512)]
    pub capacity_bytes: u64,
    /// A power of two from 4 KiB to 1 MiB; defaults to 64 KiB, the DS8000
    /// fixed-block track.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole_numbers::option_u64"
    )]
    #[schema(schema_with = track_size_schema)]
    pub track_size: Option<u64>,
    /// Extent pool to allocate from (DSCLI `-extpool`); without one the
    /// volume is a sparse file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub pool: Option<String>,
    /// Space-efficient (DSCLI `-sam ese`); needs `pool`. False with a pool
    /// is a standard, fully allocated volume.
    #[serde(default)]
    pub space_efficient: bool,
}

/// An extent pool (`GET /v1/pools`, `GET /v1/pools/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub name: String,
    pub capacity_bytes: u64,
    /// Reserved by standard volumes plus allocated by thin ones.
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Volumes allocated from the pool.
    pub volumes: usize,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl From<tzero_engine::PoolInfo> for Pool {
    fn from(p: tzero_engine::PoolInfo) -> Self {
        Pool {
            name: p.name,
            capacity_bytes: p.capacity_bytes,
            used_bytes: p.used_bytes,
            free_bytes: p.free_bytes,
            volumes: p.volumes,
            created_ms: p.created_ms,
        }
    }
}

/// `POST /v1/pools` (DSCLI `mkextpool`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    /// 1-64 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    #[serde(deserialize_with = "crate::whole_numbers::u64")]
    #[schema(minimum = 1)]
    pub capacity_bytes: u64,
}

/// State of a FlashCopy relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlashState {
    /// Background copy in progress.
    Copying,
    /// No background copy: tracks are copied only when the source is written.
    NoCopy,
    /// Every track copied; only persistent relationships stay in this state.
    Copied,
    /// The relationship failed; the target cannot be read.
    Failed,
}

impl From<tzero_engine::FlashState> for FlashState {
    fn from(s: tzero_engine::FlashState) -> Self {
        match s {
            tzero_engine::FlashState::Copying => FlashState::Copying,
            tzero_engine::FlashState::NoCopy => FlashState::NoCopy,
            tzero_engine::FlashState::Copied => FlashState::Copied,
            tzero_engine::FlashState::Failed => FlashState::Failed,
        }
    }
}

impl FlashState {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            FlashState::Copying => "copying",
            FlashState::NoCopy => "no_copy",
            FlashState::Copied => "copied",
            FlashState::Failed => "failed",
        }
    }
}

/// A FlashCopy relationship (`GET /v1/flash`, `GET /v1/flash/{source}/{target}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Flash {
    pub id: u64,
    pub source: String,
    pub target: String,
    pub background_copy: bool,
    pub persistent: bool,
    /// Background copy rate limit in bytes per second; 0 means unlimited.
    pub copy_rate: u64,
    pub state: FlashState,
    /// Tracks not yet copied to the target.
    pub out_of_sync_tracks: u64,
    pub total_tracks: u64,
    pub track_size: u64,
    /// T0: when the relationship was established, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last time the bitmaps were made durable, ms since the Unix epoch.
    pub synced_ms: u64,
    #[serde(default)]
    #[schema(required = true)]
    pub failure: Option<String>,
    /// Change recording (incremental FlashCopy, DSCLI `-record`).
    #[serde(default)]
    #[schema(required = true)]
    pub recording: bool,
    /// Tracks changed on either volume since T0: what a resync copies
    /// again. 0 when the relationship does not record changes.
    #[serde(default)]
    #[schema(required = true)]
    pub changed_tracks: u64,
    /// `rmflash --cp` is waiting for the background copy to complete.
    #[serde(default)]
    #[schema(required = true)]
    pub withdraw_pending: bool,
    /// Hosts may not write the target (DSCLI `-tgtinhibit`).
    #[serde(default)]
    #[schema(required = true)]
    pub target_write_inhibit: bool,
    /// Sequence number given at establish (DSCLI `-seqnum`), 0 if none.
    #[serde(default)]
    #[schema(required = true, value_type = u64, maximum = 4294967295.0)]
    pub seqnum: u32,
    /// `setflashrevertible` was done: the next resync keeps the previous
    /// point in time restorable.
    #[serde(default)]
    #[schema(required = true)]
    pub revertible: bool,
    /// A revertible resync happened: `commit` keeps it, `revert` rolls the
    /// target back to the previous point in time.
    #[serde(default)]
    #[schema(required = true)]
    pub revert_pending: bool,
    /// Bytes the background copy wrote to the target. Counted in memory:
    /// since the daemon started or the relationship was established,
    /// whichever is later (a resync does not reset it).
    #[serde(default)]
    #[schema(required = true)]
    pub copied_bytes: u64,
    /// Tracks copied to the target by copy-on-write (a host write was about
    /// to replace their T0 data); counted like `copied_bytes`.
    #[serde(default)]
    #[schema(required = true)]
    pub cow_tracks: u64,
    /// Bytes of those copy-on-write tracks; counted like `copied_bytes`.
    #[serde(default)]
    #[schema(required = true)]
    pub cow_bytes: u64,
}

impl From<tzero_engine::FlashInfo> for Flash {
    fn from(f: tzero_engine::FlashInfo) -> Self {
        Flash {
            id: f.id,
            source: f.source,
            target: f.target,
            background_copy: f.background_copy,
            persistent: f.persistent,
            copy_rate: f.copy_rate,
            state: f.state.into(),
            out_of_sync_tracks: f.out_of_sync_tracks,
            total_tracks: f.total_tracks,
            track_size: f.track_size,
            created_ms: f.created_ms,
            synced_ms: f.synced_ms,
            failure: f.failure,
            recording: f.recording,
            changed_tracks: f.changed_tracks,
            withdraw_pending: f.withdraw_pending,
            target_write_inhibit: f.target_write_inhibit,
            seqnum: f.seqnum,
            revertible: f.revertible,
            revert_pending: f.revert_pending,
            copied_bytes: f.copied_bytes,
            cow_tracks: f.cow_tracks,
            cow_bytes: f.cow_bytes,
        }
    }
}

/// `GET /v1/flash/{source}/{target}/bitmap`: the control bitmap summarised
/// for a heat map. `buckets[i]` is the number of copied tracks (bit set)
/// among the tracks bucket `i` covers: with `n = buckets.len()`, tracks
/// `floor(i * total_tracks / n)` up to, not including,
/// `floor((i + 1) * total_tracks / n)`, so every track is in exactly one
/// bucket and bucket sizes differ by at most one track.
/// `n = min(requested buckets, 65536, total_tracks)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlashBitmap {
    pub total_tracks: u64,
    /// Bytes per track.
    pub track_size: u64,
    /// Sum of `buckets`: the copied tracks this summary shows (the bitmap is
    /// read without stopping the copy, so `total_tracks - out_of_sync_tracks`
    /// read a moment apart may differ slightly).
    pub copied_tracks: u64,
    /// Copied tracks per bucket, first track first.
    #[schema(max_items = 65536)]
    pub buckets: Vec<u64>,
}

impl From<tzero_engine::FlashBitmap> for FlashBitmap {
    fn from(b: tzero_engine::FlashBitmap) -> Self {
        FlashBitmap {
            total_tracks: b.total_tracks,
            track_size: b.track_size,
            copied_tracks: b.copied_tracks,
            buckets: b.buckets,
        }
    }
}

/// `POST /v1/flash`: establish a relationship (DSCLI `mkflash`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Establish {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub source: String,
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub target: String,
    /// Copy every track in the background (DSCLI default); false is `-nocp`.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub background_copy: bool,
    /// Keep the relationship after the copy completes (`-persist`).
    #[serde(default)]
    pub persistent: bool,
    /// Bytes per second, 0 = unlimited.
    #[serde(default, deserialize_with = "crate::whole_numbers::u64")]
    pub copy_rate: u64,
    /// Record changes on both volumes so the pair can later be resynced
    /// incrementally or reversed (`-record`; DSCLI wants `-persist` too).
    #[serde(default)]
    pub recording: bool,
    /// Hosts may not write the target while the relationship lasts
    /// (`-tgtinhibit`); lifted by `PUT .../target-inhibit`.
    #[serde(default)]
    pub target_inhibit: bool,
    /// Sequence number (`-seqnum`): selects relationships for listing,
    /// commit and revert.
    #[serde(default, deserialize_with = "crate::whole_numbers::u32")]
    #[schema(value_type = u64, maximum = 4294967295.0)]
    pub seqnum: u32,
}

/// A `{source, target}` pair of a consistency group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlashPair {
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub source: String,
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub target: String,
}

/// Default freeze timeout: DS8000's extended long busy default.
pub const DEFAULT_FREEZE_TIMEOUT_SECS: u64 = 120;

/// `POST /v1/flash/group`: a consistency group, every pair at one T0,
/// ordered against host writes on all sources. With `freeze`, host writes
/// to the sources are then held (queued, never failed; reads go on) until
/// `POST /v1/unfreeze` or `freeze_timeout_secs`, when they resume by
/// themselves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstablishGroup {
    #[schema(min_items = 1)]
    pub pairs: Vec<FlashPair>,
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub background_copy: bool,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default, deserialize_with = "crate::whole_numbers::u64")]
    pub copy_rate: u64,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub target_inhibit: bool,
    #[serde(default, deserialize_with = "crate::whole_numbers::u32")]
    #[schema(value_type = u64, maximum = 4294967295.0)]
    pub seqnum: u32,
    #[serde(default)]
    pub freeze: bool,
    #[serde(
        default = "default_freeze_timeout",
        deserialize_with = "crate::whole_numbers::u64"
    )]
    #[schema(default = 120)]
    pub freeze_timeout_secs: u64,
}

fn default_freeze_timeout() -> u64 {
    DEFAULT_FREEZE_TIMEOUT_SECS
}

/// `POST /v1/freeze`: hold host writes to sources (`freezeflash`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Sources of FlashCopy relationships.
    #[schema(min_items = 1)]
    pub volumes: Vec<String>,
    #[serde(
        default = "default_freeze_timeout",
        deserialize_with = "crate::whole_numbers::u64"
    )]
    #[schema(default = 120)]
    pub timeout_secs: u64,
}

/// `POST /v1/unfreeze`: release held writes (`unfreezeflash`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unfreeze {
    #[schema(min_items = 1)]
    pub volumes: Vec<String>,
}

/// `PUT /v1/flash/{source}/{target}/target-inhibit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetInhibit {
    pub inhibit: bool,
}

/// `POST /v1/flash/{source}/{target}/resync`: a new T0 for a recording
/// relationship, copying only the tracks changed since the last one
/// (DSCLI `resyncflash -record -persist`). Every field has a default, and
/// the body may be left out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    /// Keep recording changes after the resync (false ends recording).
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub recording: bool,
    /// Keep the relationship after the copy completes.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub persistent: bool,
    /// True turns the background copy on; absent or false keeps the
    /// relationship's own setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_copy: Option<bool>,
}

impl Default for Resync {
    fn default() -> Self {
        Resync {
            recording: true,
            persistent: true,
            background_copy: None,
        }
    }
}

/// `POST /v1/flash/{source}/{target}/reverse`: restore the source from the
/// target's point-in-time data (DSCLI `reverseflash`); the relationship is
/// then `{target}:{source}`. The body may be left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    /// Fast reverse restore: allowed before the background copy completes;
    /// the old target's contents are then undefined.
    #[serde(default)]
    pub fast: bool,
}

/// The track sizes a volume may have: the powers of two from 4 KiB to 1 MiB.
fn track_size_schema() -> utoipa::openapi::schema::Object {
    let sizes: Vec<serde_json::Value> = (12..=20).map(|shift| (1u64 << shift).into()).collect();
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::Integer,
            utoipa::openapi::schema::Type::Null,
        ]))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .enum_values(Some(sizes.into_iter().chain([serde_json::Value::Null])))
        .build()
}

fn default_true() -> bool {
    true
}

/// `PUT /v1/flash/{source}/{target}/rate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRate {
    /// Bytes per second, 0 = unlimited.
    #[serde(deserialize_with = "crate::whole_numbers::u64")]
    pub copy_rate: u64,
}

/// An API token role (`POST /v1/tokens/{role}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// Reads only: GET and HEAD routes, `/metrics` included.
    Monitor,
    /// Safeguarded Copy's second credential (`DATA_DIR/security-token`):
    /// alone it reads; given with an admin request it allows shortening a
    /// retention.
    Security,
}

/// A new token, shown once: the daemon keeps only its SHA-256 digest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotatedToken {
    pub role: TokenRole,
    /// 64 hex digits; the role's previous token no longer works.
    pub token: String,
}

/// Body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable, machine-readable `code` (snake_case, never reworded) and a
/// message for people (may change between versions).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Kept a string on the wire, so that a client survives a code added
    /// later; the document lists the codes of this version.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    pub message: String,
}

/// Declares [`ErrorCode`] and its list from one table, so the list cannot
/// miss a code.
macro_rules! error_codes {
    ($($variant:ident = $code:tt,)*) => {
        /// Every stable error code of this API version (`error.code`).
        /// Codes are never reworded; new ones may be added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum ErrorCode {
            $(#[serde(rename = $code)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    // volumes and pools
    VolumeNotFound = "volume_not_found",
    VolumeExists = "volume_exists",
    InvalidName = "invalid_name",
    InvalidCapacity = "invalid_capacity",
    CapacityTooLargeForFs = "capacity_too_large_for_fs",
    InvalidTrackSize = "invalid_track_size",
    TooManyTracks = "too_many_tracks",
    VolumeInUse = "volume_in_use",
    VolumeOpen = "volume_open",
    PoolNotFound = "pool_not_found",
    PoolExists = "pool_exists",
    PoolInUse = "pool_in_use",
    PoolTooSmall = "pool_too_small",
    FileSystemTooFull = "file_system_too_full",
    NeedsPool = "needs_pool",
    // FlashCopy relationships and the rules they may break
    RelationshipNotFound = "relationship_not_found",
    NoPairs = "no_pairs",
    SameVolume = "same_volume",
    VolumeMismatch = "volume_mismatch",
    TargetHasSource = "target_has_source",
    TooManyTargets = "too_many_targets",
    TargetNamedTwice = "target_named_twice",
    SourceAndTargetInGroup = "source_and_target_in_group",
    Cycle = "cycle",
    HasDependents = "has_dependents",
    NotASource = "not_a_source",
    NotFrozen = "not_frozen",
    NotRecording = "not_recording",
    RevertPending = "revert_pending",
    NotRevertible = "not_revertible",
    CopyIncomplete = "copy_incomplete",
    SourceIsTarget = "source_is_target",
    SourceHasIncompleteCopy = "source_has_incomplete_copy",
    AlreadyCopy = "already_copy",
    RelationshipFailed = "relationship_failed",
    // Safeguarded Copy
    VolumeIsBackup = "volume_is_backup",
    HasBackups = "has_backups",
    BackupNotFound = "backup_not_found",
    NoSafeguardedCapacity = "no_safeguarded_capacity",
    SafeguardedFull = "safeguarded_full",
    SafeguardedInUse = "safeguarded_in_use",
    BackupRetained = "backup_retained",
    BackupHeldByRecovery = "backup_held_by_recovery",
    BackupFailed = "backup_failed",
    BackupsOfDifferentVolumes = "backups_of_different_volumes",
    BackupOfAnotherVolume = "backup_of_another_volume",
    PolicyNotFound = "policy_not_found",
    PolicyExists = "policy_exists",
    InvalidPolicy = "invalid_policy",
    SecurityTokenRequired = "security_token_required",
    ConfirmRequired = "confirm_required",
    // host I/O done on a request's behalf
    OutOfRange = "out_of_range",
    WriteInhibited = "write_inhibited",
    NoSpace = "no_space",
    // the daemon
    StorageError = "storage_error",
    CatalogError = "catalog_error",
    EnginePoisoned = "engine_poisoned",
    ShuttingDown = "shutting_down",
    InternalError = "internal_error",
    // the request itself
    MalformedJson = "malformed_json",
    UnsupportedMediaType = "unsupported_media_type",
    BodyTooLarge = "body_too_large",
    InvalidBody = "invalid_body",
    InvalidPath = "invalid_path",
    InvalidQuery = "invalid_query",
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    AuditUnavailable = "audit_unavailable",
    RouteNotFound = "route_not_found",
    MethodNotAllowed = "method_not_allowed",
}
