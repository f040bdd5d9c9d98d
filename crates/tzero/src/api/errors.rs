//! API errors: the one JSON error shape, and the only place where engine
//! errors get their HTTP status and stable code, one function per engine
//! error family ([`volume_error`], [`flash_error`], [`refusal_code`],
//! [`io_error`]).
//!
//! Every variant the engine has today is mapped by name; the wildcard arms the
//! engine's `#[non_exhaustive]` enums force on us log the unmapped error and
//! answer 500 `internal_error`, never a poisoned engine.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tzero_engine::{FlashError, IoError, Refusal, VolumeError};

use crate::api_types::{ErrorBody, ErrorCode, ErrorDetail};

/// An API failure: status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// An error of the engine, with its cause chain as the message.
    fn engine(
        (status, code): (StatusCode, ErrorCode),
        e: &(dyn std::error::Error + 'static),
    ) -> Self {
        ApiError::new(status, code, error_chain(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code.as_str();
        if self.status.is_server_error() {
            tracing::error!(code, "{}", self.message);
        } else {
            tracing::debug!(code, status = %self.status, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The message of an error followed by its causes: engine messages leave the
/// cause (an `io::Error`, say) to `source()`, and people need both.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        cur = cause.source();
    }
    msg
}

/// An engine error this build does not know by name (the enums are
/// `#[non_exhaustive]`): logged, and a 500 that claims nothing about it.
fn unmapped(e: &dyn std::fmt::Debug) -> (StatusCode, ErrorCode) {
    tracing::error!(error = ?e, "engine error without an API code");
    (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError)
}

/// Status and code of each volume error.
pub fn volume_error(e: &VolumeError) -> (StatusCode, ErrorCode) {
    use ErrorCode as C;
    match e {
        VolumeError::NotFound(_) => (StatusCode::NOT_FOUND, C::VolumeNotFound),
        VolumeError::AlreadyExists(_) => (StatusCode::CONFLICT, C::VolumeExists),
        VolumeError::InvalidName(_) => (StatusCode::BAD_REQUEST, C::InvalidName),
        VolumeError::InvalidCapacity(_) | VolumeError::EmptyPool => {
            (StatusCode::BAD_REQUEST, C::InvalidCapacity)
        }
        VolumeError::TooLargeForFileSystem { .. } => {
            (StatusCode::BAD_REQUEST, C::CapacityTooLargeForFs)
        }
        VolumeError::InvalidTrackSize(_) => (StatusCode::BAD_REQUEST, C::InvalidTrackSize),
        VolumeError::TooManyTracks { .. } => (StatusCode::BAD_REQUEST, C::TooManyTracks),
        VolumeError::InUse { .. } => (StatusCode::CONFLICT, C::VolumeInUse),
        VolumeError::Open { .. } => (StatusCode::CONFLICT, C::VolumeOpen),
        VolumeError::PoolNotFound(_) => (StatusCode::NOT_FOUND, C::PoolNotFound),
        VolumeError::PoolExists(_) => (StatusCode::CONFLICT, C::PoolExists),
        VolumeError::PoolInUse(..) => (StatusCode::CONFLICT, C::PoolInUse),
        VolumeError::PoolTooSmall { .. } => (StatusCode::CONFLICT, C::PoolTooSmall),
        VolumeError::FileSystemTooFull { .. } => (StatusCode::CONFLICT, C::FileSystemTooFull),
        VolumeError::NeedsPool(_) => (StatusCode::BAD_REQUEST, C::NeedsPool),
        VolumeError::IsBackup(_) => (StatusCode::CONFLICT, C::VolumeIsBackup),
        VolumeError::HasBackups { .. } => (StatusCode::CONFLICT, C::HasBackups),
        VolumeError::PoolHoldsSafeguarded { .. } => (StatusCode::CONFLICT, C::PoolInUse),
        VolumeError::Storage { source, .. } => storage_error(source),
        // `--force` met a relationship that would not go: its own reason.
        VolumeError::Withdraw { source, .. } => flash_error(source),
        VolumeError::Catalog(e) => catalog_error(e),
        VolumeError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, C::EnginePoisoned),
        VolumeError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
        other => unmapped(other),
    }
}

/// A catalog commit refused for want of space left the catalog unchanged: the admin can free
/// space and retry. Anything else is the server's fault.
fn catalog_error(e: &tzero_engine::CatalogError) -> (StatusCode, ErrorCode) {
    match e {
        tzero_engine::CatalogError::NoSpace { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::NoSpace)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::CatalogError),
    }
}

/// Status and code of each FlashCopy error.
pub fn flash_error(e: &FlashError) -> (StatusCode, ErrorCode) {
    use ErrorCode as C;
    match e {
        FlashError::VolumeNotFound(_) => (StatusCode::NOT_FOUND, C::VolumeNotFound),
        FlashError::NotFound(..) | FlashError::SeqnumNotFound(_) => {
            (StatusCode::NOT_FOUND, C::RelationshipNotFound)
        }
        FlashError::Refused(r) => refusal_code(r),
        FlashError::Storage(source) => storage_error(source),
        FlashError::Io(e) => io_error(e),
        FlashError::Catalog(e) => catalog_error(e),
        FlashError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, C::EnginePoisoned),
        FlashError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
        other => unmapped(other),
    }
}

/// Status and code of each FlashCopy rule the engine refuses to break:
/// 400 for a request that cannot make sense, 409 for one the current state
/// of the volumes and relationships forbids. Nothing was changed.
pub fn refusal_code(r: &Refusal) -> (StatusCode, ErrorCode) {
    use ErrorCode as C;
    let bad = StatusCode::BAD_REQUEST;
    let conflict = StatusCode::CONFLICT;
    match r {
        Refusal::NoPairs => (bad, C::NoPairs),
        Refusal::SameVolume(_) => (bad, C::SameVolume),
        Refusal::SizeMismatch { .. } => (bad, C::VolumeMismatch),
        Refusal::TargetInUse { .. } => (conflict, C::TargetHasSource),
        Refusal::TooManyTargets { .. } => (conflict, C::TooManyTargets),
        Refusal::TargetTwice(_) => (conflict, C::TargetNamedTwice),
        Refusal::SourceAndTargetInGroup(_) => (conflict, C::SourceAndTargetInGroup),
        Refusal::Cycle { .. } => (conflict, C::Cycle),
        Refusal::HasDependents { .. } => (conflict, C::HasDependents),
        Refusal::NotASource(_) => (conflict, C::NotASource),
        Refusal::NotFrozen(_) => (conflict, C::NotFrozen),
        Refusal::NotRecording { .. } => (conflict, C::NotRecording),
        Refusal::RevertPending { .. } => (conflict, C::RevertPending),
        Refusal::NotRevertible { .. } => (conflict, C::NotRevertible),
        Refusal::CopyIncomplete { .. } => (conflict, C::CopyIncomplete),
        Refusal::SourceIsTarget { .. } => (conflict, C::SourceIsTarget),
        Refusal::SourceHasIncompleteCopy { .. } => (conflict, C::SourceHasIncompleteCopy),
        Refusal::AlreadyCopy { .. } => (conflict, C::AlreadyCopy),
        Refusal::Failed { .. } => (conflict, C::RelationshipFailed),
        Refusal::IsBackup(_) => (conflict, C::VolumeIsBackup),
        other => unmapped(other),
    }
}

/// Status and code of each Safeguarded Copy error.
pub fn sgc_error(e: &tzero_engine::SgcError) -> (StatusCode, ErrorCode) {
    use tzero_engine::SgcError as S;
    use ErrorCode as C;
    let conflict = StatusCode::CONFLICT;
    match e {
        S::VolumeNotFound(_) => (StatusCode::NOT_FOUND, C::VolumeNotFound),
        S::NotFound(_) => (StatusCode::NOT_FOUND, C::BackupNotFound),
        S::NoVolumes => (StatusCode::BAD_REQUEST, C::NoPairs),
        S::NoCapacity(_) => (conflict, C::NoSafeguardedCapacity),
        S::CapacityFull { .. } => (conflict, C::SafeguardedFull),
        S::CapacityInUse { .. } => (conflict, C::SafeguardedInUse),
        S::Retained { .. } => (conflict, C::BackupRetained),
        S::HeldByRecovery { .. } => (conflict, C::BackupHeldByRecovery),
        S::Failed { .. } => (conflict, C::BackupFailed),
        S::DifferentSources { .. } => (conflict, C::BackupsOfDifferentVolumes),
        S::WrongSource { .. } => (conflict, C::BackupOfAnotherVolume),
        S::SourceOpen { .. } => (conflict, C::VolumeOpen),
        S::Storage(source) => storage_error(source),
        S::Volume(e) => volume_error(e),
        S::Flash(e) => flash_error(e),
        S::Io(e) => io_error(e),
        S::Catalog(e) => catalog_error(e),
        S::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, C::EnginePoisoned),
        S::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
        other => unmapped(other),
    }
}

/// Status and code of each host I/O error, for API calls that do host I/O
/// on behalf of a client; the NBD mapping is `nbd_export::device_error`.
pub fn io_error(e: &IoError) -> (StatusCode, ErrorCode) {
    use ErrorCode as C;
    match e {
        IoError::OutOfRange { .. } => (StatusCode::BAD_REQUEST, C::OutOfRange),
        IoError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, C::NoSpace),
        IoError::ReadOnly(_) => (StatusCode::CONFLICT, C::WriteInhibited),
        IoError::Deleted(_) => (StatusCode::NOT_FOUND, C::VolumeNotFound),
        IoError::TargetFailed(_) => (StatusCode::CONFLICT, C::RelationshipFailed),
        IoError::Storage { source, .. } => storage_error(source),
        IoError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
        IoError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, C::EnginePoisoned),
        other => unmapped(other),
    }
}

/// A failed disk operation: 507 when the disk is full (ENOSPC, whatever std
/// calls it), else 500.
fn storage_error(e: &std::io::Error) -> (StatusCode, ErrorCode) {
    if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
        (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::NoSpace)
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::StorageError)
    }
}

impl From<IoError> for ApiError {
    fn from(e: IoError) -> Self {
        ApiError::engine(io_error(&e), &e)
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        ApiError::engine(volume_error(&e), &e)
    }
}

impl From<FlashError> for ApiError {
    fn from(e: FlashError) -> Self {
        ApiError::engine(flash_error(&e), &e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::engine(refusal_code(&r), &r)
    }
}

impl From<Infallible> for ApiError {
    fn from(e: Infallible) -> Self {
        match e {}
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => ErrorCode::MalformedJson,
            JsonRejection::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return ApiError::new(
                    r.status(),
                    ErrorCode::BodyTooLarge,
                    format!("request body over {} bytes", super::MAX_BODY_BYTES),
                );
            }
            _ => ErrorCode::InvalidBody,
        };
        ApiError::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(r.status(), ErrorCode::InvalidPath, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(r.status(), ErrorCode::InvalidQuery, r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_statuses() {
        use ErrorCode as C;
        let cases = [
            (
                volume_error(&VolumeError::NotFound("a".into())),
                (StatusCode::NOT_FOUND, C::VolumeNotFound),
            ),
            (
                volume_error(&VolumeError::InUse {
                    name: "a".into(),
                    detail: "source of b".into(),
                }),
                (StatusCode::CONFLICT, C::VolumeInUse),
            ),
            (
                volume_error(&VolumeError::Withdraw {
                    name: "a".into(),
                    source: Box::new(FlashError::Poisoned),
                }),
                (StatusCode::INTERNAL_SERVER_ERROR, C::EnginePoisoned),
            ),
            (
                volume_error(&VolumeError::ShuttingDown),
                (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
            ),
            (
                flash_error(&FlashError::Storage(std::io::Error::other("disk on fire"))),
                (StatusCode::INTERNAL_SERVER_ERROR, C::StorageError),
            ),
            (
                flash_error(&FlashError::Storage(std::io::Error::from_raw_os_error(28))),
                (StatusCode::INSUFFICIENT_STORAGE, C::NoSpace),
            ),
            (
                flash_error(&FlashError::Io(IoError::ReadOnly("t".into()))),
                (StatusCode::CONFLICT, C::WriteInhibited),
            ),
            (
                flash_error(&FlashError::ShuttingDown),
                (StatusCode::SERVICE_UNAVAILABLE, C::ShuttingDown),
            ),
            (
                flash_error(&Refusal::SameVolume("a".into()).into()),
                (StatusCode::BAD_REQUEST, C::SameVolume),
            ),
            (
                flash_error(
                    &Refusal::Cycle {
                        src: "a".into(),
                        tgt: "b".into(),
                    }
                    .into(),
                ),
                (StatusCode::CONFLICT, C::Cycle),
            ),
            (
                volume_error(&VolumeError::PoolTooSmall {
                    pool: "p".into(),
                    needed: 2,
                    free: 1,
                }),
                (StatusCode::CONFLICT, C::PoolTooSmall),
            ),
            (
                io_error(&IoError::NoSpace("t".into())),
                (StatusCode::INSUFFICIENT_STORAGE, C::NoSpace),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let msg =
            ApiError::from(FlashError::Storage(std::io::Error::other("disk on fire"))).message;
        assert!(msg.ends_with(": disk on fire"), "{msg}");
    }
}
