//! Safeguarded Copy (`/v1/sgc`, `PUT /v1/volumes/{name}/safeguarded`): DSCLI
//! `mksafeguardedcap`, `mksgc`, `lssgc`, `rmsgc`, `recoversgc`, `diffsgc` and the
//! `*sgcpolicy` verbs. No route writes a backup's data: a backup has GET and
//! DELETE (refused before its retention ends) and nothing else. Shortening a
//! retention needs the security token in the body, checked here against its
//! digest; the audit line never copies it (`logging` redacts it).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use tzero_engine::{BackupOptions, Engine, FlashOptions, SgcError};
use utoipa::IntoParams;

use super::openapi::{codes, EngineFailure};
use super::{blocking, ApiError, ApiResult, Name};
use crate::api_types::{ErrorBody, ErrorCode as C};
use crate::sgc::policies::{Policies, PolicyError};
use crate::sgc::types::{
    Backup, ChangePolicy, CreatePolicy, Extent, Policy, Recover, Recovered, SafeguardedCap,
    SetRetention, SetSafeguarded, TakeBackups,
};
use crate::tokens::TokenStore;

/// The `{id}` of a backup route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct BackupId {
    /// Backup id (`lssgc`).
    id: u64,
}

/// Query of `GET /v1/sgc/diff`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    /// The older recovery point (either order is accepted).
    from: u64,
    /// The other one; without it, the source as it is now.
    to: Option<u64>,
}

/// Give volumes safeguarded capacity (mksafeguardedcap).
#[utoipa::path(put, path = "/v1/volumes/{name}/safeguarded", tag = "safeguarded", operation_id = "setSafeguardedCapacity",
    params(Name), request_body = SetSafeguarded,
    responses(
        (status = 200, description = "the capacity now", body = SafeguardedCap),
        (status = 400, description = codes(&[C::PoolNotFound]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::PoolTooSmall, C::SafeguardedInUse]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn set_capacity(
    State(engine): State<Engine>,
    name: Result<Path<Name>, PathRejection>,
    body: Result<Json<SetSafeguarded>, JsonRejection>,
) -> ApiResult<Json<SafeguardedCap>> {
    let Path(Name { name }) = name?;
    let Json(req) = body?;
    let mut infos =
        blocking(move || engine.set_safeguarded_capacity(&[name], req.capacity_bytes, &req.pool))
            .await
            .map_err(|e| {
                // The path names the volume: a pool the body names that does not exist is a
                // bad request, not a missing resource (a 404 would say the volume is gone).
                if e.code == C::PoolNotFound {
                    ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message)
                } else {
                    e
                }
            })?;
    match infos.pop() {
        Some(info) => Ok(Json(info.into())),
        // Capacity 0: none left to show.
        None => Ok(Json(SafeguardedCap {
            pool: String::new(),
            capacity_bytes: 0,
            used_bytes: 0,
            free_bytes: 0,
            backups: 0,
        })),
    }
}

/// List backups (lssgc), by source then point in time.
#[utoipa::path(get, path = "/v1/sgc/backups", tag = "safeguarded", operation_id = "listBackups",
    responses((status = 200, description = "every backup", body = Vec<Backup>)))]
pub(super) async fn list(State(engine): State<Engine>) -> ApiResult<Json<Vec<Backup>>> {
    let list = blocking(move || Ok::<_, Infallible>(engine.backups())).await?;
    Ok(Json(list.into_iter().map(Backup::from).collect()))
}

/// Take a backup of each volume now, at one T0 (mksgc).
#[utoipa::path(post, path = "/v1/sgc/backups", tag = "safeguarded", operation_id = "takeBackups",
    request_body = TakeBackups,
    responses(
        (status = 201, description = "taken", body = Vec<Backup>),
        (status = 400, description = codes(&[C::NoPairs]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::NoSafeguardedCapacity, C::SafeguardedFull, C::TooManyTargets, C::TargetNamedTwice]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn take(
    State(engine): State<Engine>,
    body: Result<Json<TakeBackups>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Vec<Backup>>)> {
    let Json(req) = body?;
    let opts = BackupOptions {
        retain_ms: req.retain_secs.saturating_mul(1000),
        on_full: req.on_full.into(),
        ..BackupOptions::default()
    };
    let list = blocking(move || engine.take_backups(&req.volumes, &opts)).await?;
    Ok((
        StatusCode::CREATED,
        Json(list.into_iter().map(Backup::from).collect()),
    ))
}

/// Show one backup.
#[utoipa::path(get, path = "/v1/sgc/backups/{id}", tag = "safeguarded", operation_id = "getBackup",
    params(BackupId),
    responses(
        (status = 200, description = "the backup", body = Backup),
        (status = 404, description = codes(&[C::BackupNotFound]), body = ErrorBody),
    ))]
pub(super) async fn get(
    State(engine): State<Engine>,
    id: Result<Path<BackupId>, PathRejection>,
) -> ApiResult<Json<Backup>> {
    let Path(BackupId { id }) = id?;
    Ok(Json(blocking(move || engine.backup(id)).await?.into()))
}

/// Remove a backup whose retention is over (rmsgc).
#[utoipa::path(delete, path = "/v1/sgc/backups/{id}", tag = "safeguarded", operation_id = "deleteBackup",
    params(BackupId),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = codes(&[C::BackupNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::BackupRetained, C::BackupHeldByRecovery]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn delete(
    State(engine): State<Engine>,
    id: Result<Path<BackupId>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(BackupId { id }) = id?;
    blocking(move || engine.expire_backup(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change a backup's retention; shortening it needs the security token.
#[utoipa::path(put, path = "/v1/sgc/backups/{id}/retention", tag = "safeguarded", operation_id = "setBackupRetention",
    params(BackupId), request_body = SetRetention,
    responses(
        (status = 200, description = "the backup", body = Backup),
        (status = 403, description = codes(&[C::SecurityTokenRequired]), body = ErrorBody),
        (status = 404, description = codes(&[C::BackupNotFound]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn set_retention(
    State(engine): State<Engine>,
    Extension(tokens): Extension<Arc<TokenStore>>,
    id: Result<Path<BackupId>, PathRejection>,
    body: Result<Json<SetRetention>, JsonRejection>,
) -> ApiResult<Json<Backup>> {
    let Path(BackupId { id }) = id?;
    let Json(req) = body?;
    let security = req
        .security_token
        .as_deref()
        .is_some_and(|t| tokens.is_security(t));
    let info = blocking(move || {
        let now = engine.backup(id)?;
        if req.retain_until_ms < now.retain_until_ms && !security {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                C::SecurityTokenRequired,
                format!("backup {id}: shortening its retention needs the security token (DATA_DIR/security-token): pass it with --security-token FILE"),
            ));
        }
        Ok(engine.set_backup_retention(id, req.retain_until_ms)?)
    })
    .await?;
    tracing::info!(
        backup = id,
        until_ms = info.retain_until_ms,
        "backup retention changed"
    );
    Ok(Json(info.into()))
}

/// Recover a backup to a new volume, or restore its source (recoversgc).
#[utoipa::path(post, path = "/v1/sgc/backups/{id}/recover", tag = "safeguarded", operation_id = "recoverBackup",
    params(BackupId), request_body = Recover,
    responses(
        (status = 201, description = "recovered", body = Recovered),
        (status = 400, description = codes(&[C::InvalidBody, C::InvalidName, C::ConfirmRequired]), body = ErrorBody),
        (status = 404, description = codes(&[C::BackupNotFound, C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::VolumeExists, C::VolumeOpen, C::BackupFailed, C::TooManyTargets, C::BackupOfAnotherVolume]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn recover(
    State(engine): State<Engine>,
    id: Result<Path<BackupId>, PathRejection>,
    body: Result<Json<Recover>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    let Path(BackupId { id }) = id?;
    let Json(req) = body?;
    let began = Instant::now();
    let mut out = Recovered {
        backup: id,
        volume: None,
        restored_tracks: None,
        restored_bytes: None,
        elapsed_ms: 0.0,
    };
    match (req.to, req.restore) {
        (Some(to), None) => {
            let opts = FlashOptions {
                background_copy: req.copy,
                ..FlashOptions::default()
            };
            let name = to.clone();
            blocking(move || engine.recover_backup_to(id, &name, opts)).await?;
            out.volume = Some(to);
        }
        (None, Some(vol)) => {
            if !req.confirm {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    C::ConfirmRequired,
                    format!("restoring {vol} from backup {id} overwrites it: confirm (recoversgc --restore {vol} --confirm)"),
                ));
            }
            let r = blocking(move || engine.restore_backup(id, &vol)).await?;
            out.restored_tracks = Some(r.tracks);
            out.restored_bytes = Some(r.bytes);
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                C::InvalidBody,
                "give exactly one of `to` (a new volume) and `restore` (the backup's source)",
            ))
        }
    }
    out.elapsed_ms = began.elapsed().as_secs_f64() * 1000.0;
    Ok((StatusCode::CREATED, Json(out)))
}

/// The changed extents between two recovery points (diffsgc).
#[utoipa::path(get, path = "/v1/sgc/diff", tag = "safeguarded", operation_id = "diffBackups",
    params(DiffQuery),
    responses(
        (status = 200, description = "changed extents, by offset", body = Vec<Extent>),
        (status = 400, description = codes(&[C::InvalidQuery]), body = ErrorBody),
        (status = 404, description = codes(&[C::BackupNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::BackupsOfDifferentVolumes]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn diff(
    State(engine): State<Engine>,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Extent>>> {
    let Query(q) = q?;
    let extents = blocking(move || engine.diff_backups(q.from, q.to)).await?;
    Ok(Json(
        extents
            .into_iter()
            .map(|(offset, length)| Extent { offset, length })
            .collect(),
    ))
}

/// List schedules (lssgcpolicy).
#[utoipa::path(get, path = "/v1/sgc/policies", tag = "safeguarded", operation_id = "listPolicies",
    responses((status = 200, description = "every policy", body = Vec<Policy>)))]
pub(super) async fn list_policies(
    Extension(p): Extension<Arc<Policies>>,
) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(p.list()))
}

/// Make a schedule (mksgcpolicy).
#[utoipa::path(post, path = "/v1/sgc/policies", tag = "safeguarded", operation_id = "createPolicy",
    request_body = CreatePolicy,
    responses(
        (status = 201, description = "created", body = Policy),
        (status = 400, description = codes(&[C::InvalidPolicy]), body = ErrorBody),
        (status = 409, description = codes(&[C::PolicyExists]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn create_policy(
    Extension(p): Extension<Arc<Policies>>,
    body: Result<Json<CreatePolicy>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let Json(req) = body?;
    let policy = blocking(move || p.create(req)).await?;
    Ok((StatusCode::CREATED, Json(policy)))
}

/// Show one schedule.
#[utoipa::path(get, path = "/v1/sgc/policies/{name}", tag = "safeguarded", operation_id = "getPolicy",
    params(Name),
    responses(
        (status = 200, description = "the policy", body = Policy),
        (status = 404, description = codes(&[C::PolicyNotFound]), body = ErrorBody),
    ))]
pub(super) async fn get_policy(
    Extension(p): Extension<Arc<Policies>>,
    name: Result<Path<Name>, PathRejection>,
) -> ApiResult<Json<Policy>> {
    let Path(Name { name }) = name?;
    Ok(Json(p.get(&name)?))
}

/// Change a schedule (chsgcpolicy); shortening its retention needs the security token.
#[utoipa::path(patch, path = "/v1/sgc/policies/{name}", tag = "safeguarded", operation_id = "changePolicy",
    params(Name), request_body = ChangePolicy,
    responses(
        (status = 200, description = "the policy", body = Policy),
        (status = 400, description = codes(&[C::InvalidPolicy]), body = ErrorBody),
        (status = 403, description = codes(&[C::SecurityTokenRequired]), body = ErrorBody),
        (status = 404, description = codes(&[C::PolicyNotFound]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn change_policy(
    Extension(p): Extension<Arc<Policies>>,
    Extension(tokens): Extension<Arc<TokenStore>>,
    name: Result<Path<Name>, PathRejection>,
    body: Result<Json<ChangePolicy>, JsonRejection>,
) -> ApiResult<Json<Policy>> {
    let Path(Name { name }) = name?;
    let Json(req) = body?;
    let security = req
        .security_token
        .as_deref()
        .is_some_and(|t| tokens.is_security(t));
    Ok(Json(
        blocking(move || p.change(&name, req, security)).await?,
    ))
}

/// Remove a schedule (rmsgcpolicy); its backups stay until their retention ends.
#[utoipa::path(delete, path = "/v1/sgc/policies/{name}", tag = "safeguarded", operation_id = "deletePolicy",
    params(Name),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = codes(&[C::PolicyNotFound]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn delete_policy(
    Extension(p): Extension<Arc<Policies>>,
    name: Result<Path<Name>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(Name { name }) = name?;
    blocking(move || p.remove(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let (status, code) = match &e {
            PolicyError::NotFound(_) => (StatusCode::NOT_FOUND, C::PolicyNotFound),
            PolicyError::Exists(_) => (StatusCode::CONFLICT, C::PolicyExists),
            PolicyError::Invalid(_) => (StatusCode::BAD_REQUEST, C::InvalidPolicy),
            PolicyError::SecurityTokenRequired => (StatusCode::FORBIDDEN, C::SecurityTokenRequired),
            PolicyError::Save(_) => (StatusCode::INTERNAL_SERVER_ERROR, C::StorageError),
        };
        ApiError::new(status, code, super::error_chain(&e))
    }
}

impl From<SgcError> for ApiError {
    fn from(e: SgcError) -> Self {
        let code = super::errors::sgc_error(&e);
        ApiError::new(code.0, code.1, super::error_chain(&e))
    }
}
