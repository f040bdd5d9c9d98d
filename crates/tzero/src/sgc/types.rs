//! Safeguarded Copy's wire types (`/v1/sgc/...`, `PUT /v1/volumes/{name}/safeguarded`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A source's safeguarded capacity (`lsfbvol -l`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SafeguardedCap {
    pub pool: String,
    pub capacity_bytes: u64,
    /// Space its backups' files take now.
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub backups: usize,
}

impl From<tzero_engine::SafeguardedInfo> for SafeguardedCap {
    fn from(s: tzero_engine::SafeguardedInfo) -> Self {
        SafeguardedCap {
            pool: s.pool,
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            backups: s.backups,
        }
    }
}

/// `PUT /v1/volumes/{name}/safeguarded` (DSCLI `mksafeguardedcap`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSafeguarded {
    /// Bytes of safeguarded capacity; 0 takes it away (only without backups).
    pub capacity_bytes: u64,
    /// The extent pool it is taken from.
    pub pool: String,
}

/// A backup's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    Valid,
    Failed,
}

/// A Safeguarded Copy backup (`lssgc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    pub id: u64,
    pub source: String,
    #[schema(required = true)]
    pub policy: Option<String>,
    /// Its point in time, ms since the Unix epoch.
    pub taken_ms: u64,
    /// Backups taken together, at one T0, share it.
    pub group: u64,
    /// Nothing removes it before this time (ms since the Unix epoch).
    pub retain_until_ms: u64,
    pub state: BackupState,
    #[schema(required = true)]
    pub failure: Option<String>,
    /// Space its own file takes: the T0 data of the tracks overwritten after it.
    pub size_bytes: u64,
    pub stored_tracks: u64,
    pub track_size: u64,
    /// Tracks the source changed since the previous backup; none for the first.
    #[schema(required = true)]
    pub changed_tracks: Option<u64>,
    #[schema(required = true)]
    pub changed_bytes: Option<u64>,
    /// The change is more than the anomaly factor times the median of the last 24.
    pub anomaly: bool,
    /// Volumes recovered from it that still read through it.
    pub recovered_to: Vec<String>,
}

impl From<tzero_engine::BackupInfo> for Backup {
    fn from(b: tzero_engine::BackupInfo) -> Self {
        Backup {
            id: b.id,
            source: b.source,
            policy: b.policy,
            taken_ms: b.taken_ms,
            group: b.group,
            retain_until_ms: b.retain_until_ms,
            state: match b.state {
                tzero_engine::BackupState::Valid => BackupState::Valid,
                _ => BackupState::Failed,
            },
            failure: b.failure,
            size_bytes: b.size_bytes,
            stored_tracks: b.stored_tracks,
            track_size: b.track_size,
            changed_tracks: b.changed_tracks,
            changed_bytes: b.changed_bytes,
            anomaly: b.anomaly,
            recovered_to: b.recovered_to,
        }
    }
}

/// What to do when the safeguarded capacity is full as a backup is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnFull {
    /// The backup fails visibly; nothing else changes.
    #[default]
    Fail,
    /// The oldest backups whose retention is over are dropped to make room.
    ExpireOldest,
}

impl From<OnFull> for tzero_engine::OnFull {
    fn from(o: OnFull) -> Self {
        match o {
            OnFull::Fail => tzero_engine::OnFull::Fail,
            OnFull::ExpireOldest => tzero_engine::OnFull::ExpireOldest,
        }
    }
}

/// `POST /v1/sgc/backups` (DSCLI `mksgc`): one backup of each volume, at one T0.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeBackups {
    pub volumes: Vec<String>,
    /// Seconds nothing may remove them; 0 (the default) lets `rmsgc` remove them at once.
    #[serde(default)]
    pub retain_secs: u64,
    #[serde(default)]
    pub on_full: OnFull,
}

/// `PUT /v1/sgc/backups/{id}/retention`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetention {
    /// The new end of the retention, ms since the Unix epoch.
    pub retain_until_ms: u64,
    /// The security token (`DATA_DIR/security-token`): needed to shorten a retention.
    #[serde(default)]
    pub security_token: Option<String>,
}

/// `POST /v1/sgc/backups/{id}/recover` (DSCLI `recoversgc`): exactly one of `to` and
/// `restore`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// A new volume, a FlashCopy of the backup's point in time.
    #[serde(default)]
    pub to: Option<String>,
    /// Roll this volume (the backup's source) back to the backup's point in time.
    #[serde(default)]
    pub restore: Option<String>,
    /// `to`: COPY (true) or NOCOPY (false, the default).
    #[serde(default)]
    pub copy: bool,
    /// `restore` overwrites the source: it must be confirmed.
    #[serde(default)]
    pub confirm: bool,
}

/// The answer of a recovery: the new relationship, or what a restore wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recovered {
    pub backup: u64,
    /// `to`: the new volume.
    #[schema(required = true)]
    pub volume: Option<String>,
    /// `restore`: tracks and bytes written back.
    #[schema(required = true)]
    pub restored_tracks: Option<u64>,
    #[schema(required = true)]
    pub restored_bytes: Option<u64>,
    /// Time the recovery took inside the daemon, ms.
    pub elapsed_ms: f64,
}

/// One changed extent (`diffsgc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
}

/// A schedule (`mksgcpolicy`, `lssgcpolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    pub name: String,
    pub volumes: Vec<String>,
    pub every_secs: u64,
    pub keep: u64,
    pub retain_secs: u64,
    pub on_full: OnFull,
    pub anomaly_factor: f64,
    /// Due times are `anchor_ms + k × every`: they never drift.
    pub anchor_ms: u64,
    /// The last due time handled (taken, failed or missed).
    pub last_due_ms: u64,
    /// The next due time.
    pub next_due_ms: u64,
    pub taken: u64,
    pub failed: u64,
    /// Due times that passed while the daemon was down or busy: reported and skipped.
    pub missed: u64,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

/// `POST /v1/sgc/policies`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    pub name: String,
    pub volumes: Vec<String>,
    pub every_secs: u64,
    pub keep: u64,
    /// Defaults to `every_secs × keep`.
    #[serde(default)]
    pub retain_secs: Option<u64>,
    #[serde(default)]
    pub on_full: OnFull,
    #[serde(default)]
    pub anomaly_factor: Option<f64>,
}

/// `PATCH /v1/sgc/policies/{name}` (DSCLI `chsgcpolicy`): what is given changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePolicy {
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    #[serde(default)]
    pub every_secs: Option<u64>,
    #[serde(default)]
    pub keep: Option<u64>,
    #[serde(default)]
    pub retain_secs: Option<u64>,
    #[serde(default)]
    pub on_full: Option<OnFull>,
    #[serde(default)]
    pub anomaly_factor: Option<f64>,
    /// Needed to shorten the retention.
    #[serde(default)]
    pub security_token: Option<String>,
}
