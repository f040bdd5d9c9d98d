//! FlashCopy relationships (`/v1/flash`, `/v1/flash/{source}/{target}/…`):
//! DSCLI `lsflash`, `mkflash`, `rmflash`, `chflash --cp`, `setflashrate`,
//! `resyncflash`, `reverseflash` and target write inhibit. Consistency
//! groups, freeze and revertible resyncs are in [`super::groups`]. The
//! control bitmap's summary (`…/bitmap`) feeds the console's heat map.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tzero_engine::{Engine, FlashOptions};
use utoipa::IntoParams;

use super::openapi::{codes, EngineFailure, PairNotFound};
use super::ApiError;
use super::{blocking, on_pair, ApiResult, Pair, SeqnumQuery};
use crate::api_types::{
    ErrorBody, ErrorCode as C, Establish, Flash, FlashBitmap, Resync, Reverse, SetRate,
    TargetInhibit,
};

/// List FlashCopy relationships (lsflash).
#[utoipa::path(get, path = "/v1/flash", tag = "flash", operation_id = "listFlash",
    params(SeqnumQuery),
    responses((status = 200, description = "all relationships, or those with `seqnum`", body = Vec<Flash>)))]
pub(super) async fn list(
    State(engine): State<Engine>,
    query: Result<Query<SeqnumQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    let Query(q) = query?;
    let rels = blocking(move || Ok::<_, std::convert::Infallible>(engine.relationships())).await?;
    Ok(Json(
        rels.into_iter()
            .filter(|f| q.seqnum.is_none_or(|n| f.seqnum == n))
            .map(Flash::from)
            .collect(),
    ))
}

/// Establish a FlashCopy relationship (mkflash).
#[utoipa::path(post, path = "/v1/flash", tag = "flash", operation_id = "establish",
    request_body = Establish,
    responses(
        (status = 201, description = "established", body = Flash),
        (status = 400, description = codes(&[C::SameVolume, C::VolumeMismatch]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::TargetHasSource, C::TooManyTargets, C::Cycle, C::HasDependents, C::VolumeIsBackup]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn establish(
    State(engine): State<Engine>,
    body: Result<Json<Establish>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Flash>)> {
    let Json(req) = body?;
    let opts = FlashOptions {
        background_copy: req.background_copy,
        persistent: req.persistent,
        copy_rate: req.copy_rate,
        recording: req.recording,
        target_inhibit: req.target_inhibit,
        seqnum: req.seqnum,
    };
    let info = blocking(move || engine.establish(&req.source, &req.target, opts)).await?;
    tracing::info!(source = %info.source, target = %info.target, background_copy = info.background_copy, recording = info.recording, "FlashCopy established");
    Ok((StatusCode::CREATED, Json(info.into())))
}

/// Show one relationship.
#[utoipa::path(get, path = "/v1/flash/{source}/{target}", tag = "flash", operation_id = "getFlash",
    params(Pair),
    responses(
        (status = 200, description = "the relationship", body = Flash),
        PairNotFound,
    ))]
pub(super) async fn get(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    on_pair(engine, pair, None, |e, s, t| e.relationship(s, t)).await
}

/// Query of `DELETE /v1/flash/{source}/{target}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawQuery {
    /// Turn the background copy on and withdraw when it completes (DSCLI
    /// `rmflash -cp`) instead of now.
    #[serde(default)]
    cp: bool,
}

/// Withdraw a relationship (rmflash); with cp=true, when its background copy completes (rmflash -cp).
///
/// Without cp, an incomplete copy leaves the target's contents undefined
/// (`Volume.contents_undefined`).
#[utoipa::path(delete, path = "/v1/flash/{source}/{target}", tag = "flash", operation_id = "withdraw",
    params(Pair, WithdrawQuery),
    responses(
        (status = 202, description = "cp=true: the relationship, withdraw_pending set; it ends when the copy completes (at once if it already has)", body = Flash),
        (status = 204, description = "withdrawn"),
        PairNotFound,
        (status = 409, description = codes(&[C::RelationshipFailed, C::VolumeIsBackup]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn withdraw(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    query: Result<Query<WithdrawQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(Pair { source, target }) = pair?;
    let Query(q) = query?;
    let id = format!("{source}:{target}");
    if q.cp {
        let info = blocking(move || engine.withdraw_after_copy(&source, &target)).await?;
        tracing::info!(relationship = %id, "FlashCopy withdrawal after copy requested");
        return Ok((StatusCode::ACCEPTED, Json(Flash::from(info))).into_response());
    }
    blocking(move || engine.withdraw(&source, &target)).await?;
    tracing::info!(relationship = %id, "FlashCopy withdrawn");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Start the background copy of a NOCOPY relationship (chflash --cp).
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/copy", tag = "flash", operation_id = "startCopy",
    params(Pair),
    responses(
        (status = 200, description = "copy started", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::AlreadyCopy, C::RelationshipFailed]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn start_copy(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    on_pair(engine, pair, Some("background copy started"), |e, s, t| {
        e.start_background_copy(s, t)
    })
    .await
}

/// Set the background copy rate (setflashrate).
#[utoipa::path(put, path = "/v1/flash/{source}/{target}/rate", tag = "flash", operation_id = "setRate",
    params(Pair),
    request_body = SetRate,
    responses(
        (status = 200, description = "rate changed", body = Flash),
        PairNotFound,
        EngineFailure,
    ))]
pub(super) async fn set_rate(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    body: Result<Json<SetRate>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Json(req) = body?;
    on_pair(engine, pair, Some("copy rate set"), move |e, s, t| {
        e.set_copy_rate(s, t, req.copy_rate)
    })
    .await
}

/// Incremental resync: a new T0, copying only the tracks changed on either volume (resyncflash -record -persist).
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/resync", tag = "flash", operation_id = "resync",
    params(Pair),
    request_body = Option<Resync>,
    responses(
        (status = 200, description = "resynced; out_of_sync_tracks is what will be copied again", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::NotRecording, C::RevertPending, C::HasDependents, C::RelationshipFailed]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn resync(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    body: Result<Option<Json<Resync>>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path(Pair { source, target }) = pair?;
    let req = body?.map(|Json(r)| r).unwrap_or_default();
    let opts = FlashOptions {
        background_copy: req.background_copy.unwrap_or(false),
        persistent: req.persistent,
        copy_rate: 0, // the engine keeps the relationship's own rate
        recording: req.recording,
        ..FlashOptions::default()
    };
    let info = blocking(move || engine.resync(&source, &target, opts)).await?;
    tracing::info!(source = %info.source, target = %info.target, recopy = info.out_of_sync_tracks, "FlashCopy resynced");
    Ok(Json(info.into()))
}

/// Reverse restore: the source gets the target's point-in-time data (reverseflash); the relationship becomes {target}:{source}.
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/reverse", tag = "flash", operation_id = "reverse",
    params(Pair),
    request_body = Option<Reverse>,
    responses(
        (status = 200, description = "the reversed relationship, {target}:{source}", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::CopyIncomplete, C::RevertPending, C::SourceIsTarget, C::SourceHasIncompleteCopy, C::HasDependents, C::RelationshipFailed]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn reverse(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    body: Result<Option<Json<Reverse>>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path(Pair { source, target }) = pair?;
    let req = body?.map(|Json(r)| r).unwrap_or_default();
    let info = blocking(move || engine.reverse(&source, &target, req.fast)).await?;
    tracing::info!(source = %info.source, target = %info.target, fast = req.fast, restore = info.out_of_sync_tracks, "FlashCopy reversed");
    Ok(Json(info.into()))
}

/// Set or lift target write inhibit (mkflash -tgtinhibit; rmflash -resettgtinhibit lifts it without withdrawing).
#[utoipa::path(put, path = "/v1/flash/{source}/{target}/target-inhibit", tag = "flash", operation_id = "setTargetInhibit",
    params(Pair),
    request_body = TargetInhibit,
    responses(
        (status = 200, description = "changed; new NBD connections to the target see the new read-only flag", body = Flash),
        PairNotFound,
        EngineFailure,
    ))]
pub(super) async fn set_target_inhibit(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    body: Result<Json<TargetInhibit>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Json(req) = body?;
    let done = if req.inhibit {
        "target write inhibit set"
    } else {
        "target write inhibit lifted"
    };
    on_pair(engine, pair, Some(done), move |e, s, t| {
        e.set_target_inhibit(s, t, req.inhibit)
    })
    .await
}

/// Buckets of `GET …/bitmap` when the query names none.
const DEFAULT_BUCKETS: u64 = 1024;

/// Query of `GET /v1/flash/{source}/{target}/bitmap`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct BitmapQuery {
    /// Buckets to summarise the bitmap in, at least 1 (default 1024). More
    /// than 65536 is clamped to 65536, and more than the volume's tracks to
    /// one track per bucket; 0 or a non-number is refused (`invalid_query`).
    #[param(minimum = 1)]
    buckets: Option<u64>,
}

/// The control bitmap in buckets of copied tracks, for a heat map.
///
/// The cost follows the number of buckets (per-chunk counters of the
/// bitmap), never the volume's size.
#[utoipa::path(get, path = "/v1/flash/{source}/{target}/bitmap", tag = "flash", operation_id = "flashBitmap",
    params(Pair, BitmapQuery),
    responses(
        (status = 200, description = "copied tracks per bucket", body = FlashBitmap),
        (status = 400, description = codes(&[C::InvalidQuery]), body = ErrorBody),
        PairNotFound,
    ))]
pub(super) async fn bitmap(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
    query: Result<Query<BitmapQuery>, QueryRejection>,
) -> ApiResult<Json<FlashBitmap>> {
    let Path(Pair { source, target }) = pair?;
    let Query(q) = query?;
    let buckets = q.buckets.unwrap_or(DEFAULT_BUCKETS);
    if buckets == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            C::InvalidQuery,
            "buckets must be at least 1",
        ));
    }
    let summary = blocking(move || engine.flash_bitmap(&source, &target, buckets)).await?;
    Ok(Json(summary.into()))
}
