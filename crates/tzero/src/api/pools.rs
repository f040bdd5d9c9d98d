//! Extent pools (`/v1/pools`): DSCLI `lsextpool`, `mkextpool`,
//! `showextpool`, `rmextpool`.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use tzero_engine::Engine;

use super::openapi::{codes, EngineFailure};
use super::{blocking, ApiResult, Name};
use crate::api_types::{CreatePool, ErrorBody, ErrorCode as C, Pool};

/// List extent pools (lsextpool).
#[utoipa::path(get, path = "/v1/pools", tag = "pools", operation_id = "listPools",
    responses((status = 200, description = "all pools", body = Vec<Pool>)))]
pub(super) async fn list(State(engine): State<Engine>) -> ApiResult<Json<Vec<Pool>>> {
    let pools = blocking(move || Ok::<_, Infallible>(engine.pools())).await?;
    Ok(Json(pools.into_iter().map(Pool::from).collect()))
}

/// Create an extent pool (mkextpool).
#[utoipa::path(post, path = "/v1/pools", tag = "pools", operation_id = "createPool",
    request_body = CreatePool,
    responses(
        (status = 201, description = "created", body = Pool),
        (status = 400, description = codes(&[C::InvalidName, C::InvalidCapacity]), body = ErrorBody),
        (status = 409, description = codes(&[C::PoolExists]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn create(
    State(engine): State<Engine>,
    body: Result<Json<CreatePool>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Pool>)> {
    let Json(req) = body?;
    let info = blocking(move || engine.create_pool(&req.name, req.capacity_bytes)).await?;
    tracing::info!(pool = %info.name, capacity = info.capacity_bytes, "extent pool created");
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// Show one extent pool (showextpool).
#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools", operation_id = "getPool",
    params(Name),
    responses(
        (status = 200, description = "the pool", body = Pool),
        (status = 404, description = codes(&[C::PoolNotFound]), body = ErrorBody),
    ))]
pub(super) async fn get(
    State(engine): State<Engine>,
    name: Result<Path<Name>, PathRejection>,
) -> ApiResult<Json<Pool>> {
    let Path(Name { name }) = name?;
    let info = blocking(move || engine.pool(&name)).await?;
    Ok(Json(info.into()))
}

/// Delete an empty extent pool (rmextpool).
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools", operation_id = "deletePool",
    params(Name),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = codes(&[C::PoolNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::PoolInUse]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn delete(
    State(engine): State<Engine>,
    name: Result<Path<Name>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(Name { name }) = name?;
    let logged = name.clone();
    blocking(move || engine.delete_pool(&name)).await?;
    tracing::info!(pool = %logged, "extent pool deleted");
    Ok(StatusCode::NO_CONTENT)
}
