//! Volumes (`/v1/volumes`): DSCLI `lsfbvol`, `mkfbvol`, `showfbvol`,
//! `rmfbvol`.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tzero_engine::{Engine, VolumeOptions};
use utoipa::IntoParams;

use super::openapi::{codes, EngineFailure};
use super::{blocking, ApiResult, Name};
use crate::api_types::{CreateVolume, ErrorBody, ErrorCode as C, Volume};

/// List volumes (lsfbvol), by name.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", operation_id = "listVolumes",
    responses((status = 200, description = "all volumes, sorted by name", body = Vec<Volume>)))]
pub(super) async fn list(State(engine): State<Engine>) -> ApiResult<Json<Vec<Volume>>> {
    // The engine lists volumes by name.
    let vols = blocking(move || Ok::<_, Infallible>(engine.volumes())).await?;
    Ok(Json(vols.into_iter().map(Volume::from).collect()))
}

/// Create a volume (mkfbvol).
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", operation_id = "createVolume",
    request_body = CreateVolume,
    responses(
        (status = 201, description = "created", body = Volume),
        (status = 400, description = codes(&[C::InvalidName, C::InvalidCapacity, C::CapacityTooLargeForFs, C::InvalidTrackSize, C::TooManyTracks, C::NeedsPool]), body = ErrorBody),
        (status = 404, description = codes(&[C::PoolNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::VolumeExists, C::PoolTooSmall, C::FileSystemTooFull]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn create(
    State(engine): State<Engine>,
    body: Result<Json<CreateVolume>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    let Json(req) = body?;
    // The engine reads a track size of 0 as "the default"; over the API the
    // default is an absent field, and an explicit 0 is a bad request.
    let track = match req.track_size {
        None => tzero_engine::geometry::DEFAULT_TRACK_SIZE,
        Some(0) => return Err(tzero_engine::VolumeError::InvalidTrackSize(0).into()),
        Some(track) => track,
    };
    let opts = VolumeOptions {
        pool: req.pool.clone(),
        space_efficient: req.space_efficient,
    };
    let info =
        blocking(move || engine.create_volume_with(&req.name, req.capacity_bytes, track, opts))
            .await?;
    tracing::info!(volume = %info.name, capacity = info.capacity_bytes, pool = ?info.pool, provisioning = ?info.provisioning, "volume created");
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// Show one volume (showfbvol).
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes", operation_id = "getVolume",
    params(Name),
    responses(
        (status = 200, description = "the volume", body = Volume),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
    ))]
pub(super) async fn get(
    State(engine): State<Engine>,
    name: Result<Path<Name>, PathRejection>,
) -> ApiResult<Json<Volume>> {
    let Path(Name { name }) = name?;
    let info = blocking(move || engine.volume(&name)).await?;
    Ok(Json(info.into()))
}

/// Query of `DELETE /v1/volumes/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Withdraw the volume's relationships first, and disconnect the host
    /// connections that have it open (refused with `volume_open` otherwise).
    #[serde(default)]
    force: bool,
}

/// Delete a volume (rmfbvol).
///
/// Refused while hosts have the volume open over NBD (`volume_open`) or it is
/// in a relationship (`volume_in_use`). With `force`, the relationships are
/// withdrawn first (a withdrawal that fails answers with that relationship's
/// own error code) and the connections are closed once their requests in
/// flight are answered.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes", operation_id = "deleteVolume",
    params(Name, DeleteQuery),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::VolumeInUse, C::VolumeOpen, C::HasDependents, C::RelationshipFailed, C::VolumeIsBackup, C::HasBackups]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn delete(
    State(engine): State<Engine>,
    name: Result<Path<Name>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Path(Name { name }) = name?;
    let Query(q) = query?;
    let logged = name.clone();
    blocking(move || engine.delete_volume(&name, q.force)).await?;
    tracing::info!(volume = %logged, force = q.force, "volume deleted");
    Ok(StatusCode::NO_CONTENT)
}
