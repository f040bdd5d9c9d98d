//! Consistency groups and point-in-time control across relationships:
//! group establish (`/v1/flash/group`), freeze and unfreeze (`/v1/freeze`,
//! `/v1/unfreeze`), and revertible resyncs (`setflashrevertible`,
//! `commitflash`, `revertflash`, per pair or by sequence number).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tzero_engine::{Engine, FlashOptions};
use utoipa::IntoParams;

use super::openapi::{codes, EngineFailure, PairNotFound};
use super::{blocking, on_pair, ApiError, ApiResult, Pair};
use crate::api_types::{
    ErrorBody, ErrorCode as C, EstablishGroup, Flash, Freeze, Unfreeze, Volume,
};

/// Establish a consistency group (mkflash with several pairs, or --freeze): one T0 for all pairs, all or none.
#[utoipa::path(post, path = "/v1/flash/group", tag = "groups", operation_id = "establishGroup",
    request_body = EstablishGroup,
    responses(
        (status = 201, description = "the relationships, in the order given", body = Vec<Flash>),
        (status = 400, description = codes(&[C::NoPairs, C::SameVolume, C::VolumeMismatch]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::TargetHasSource, C::TooManyTargets, C::TargetNamedTwice, C::SourceAndTargetInGroup, C::Cycle, C::HasDependents]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn establish(
    State(engine): State<Engine>,
    body: Result<Json<EstablishGroup>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Vec<Flash>>)> {
    let Json(req) = body?;
    let opts = FlashOptions {
        background_copy: req.background_copy,
        persistent: req.persistent,
        copy_rate: req.copy_rate,
        recording: req.recording,
        target_inhibit: req.target_inhibit,
        seqnum: req.seqnum,
    };
    let freeze = req
        .freeze
        .then(|| std::time::Duration::from_secs(req.freeze_timeout_secs));
    let pairs: Vec<(String, String)> = req
        .pairs
        .into_iter()
        .map(|p| (p.source, p.target))
        .collect();
    let infos = blocking(move || engine.establish_group(&pairs, opts, freeze)).await?;
    tracing::info!(
        pairs = infos.len(),
        frozen = req.freeze,
        "FlashCopy consistency group established"
    );
    Ok((
        StatusCode::CREATED,
        Json(infos.into_iter().map(Flash::from).collect()),
    ))
}

/// An empty volume list: the engine would do nothing, which is never what
/// the caller meant.
pub(super) fn name_some(volumes: &[String], what: &str) -> ApiResult<()> {
    if volumes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            C::InvalidBody,
            format!("name at least one volume to {what}"),
        ));
    }
    Ok(())
}

/// The named volumes as they are now.
fn volumes(engine: &Engine, names: &[String]) -> ApiResult<Vec<Volume>> {
    names
        .iter()
        .map(|n| engine.volume(n).map(Volume::from).map_err(ApiError::from))
        .collect()
}

/// Freeze FlashCopy sources (freezeflash): host writes are held, never failed, until POST /v1/unfreeze or the timeout; reads go on.
#[utoipa::path(post, path = "/v1/freeze", tag = "groups", operation_id = "freeze",
    request_body = Freeze,
    responses(
        (status = 200, description = "the frozen volumes", body = Vec<Volume>),
        (status = 400, description = codes(&[C::InvalidBody]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::NotASource]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn freeze(
    State(engine): State<Engine>,
    body: Result<Json<Freeze>, JsonRejection>,
) -> ApiResult<Json<Vec<Volume>>> {
    let Json(req) = body?;
    name_some(&req.volumes, "freeze")?;
    let vols = blocking(move || {
        let timeout = std::time::Duration::from_secs(req.timeout_secs);
        engine.freeze(&req.volumes, timeout)?;
        tracing::info!(volumes = ?req.volumes, timeout_secs = req.timeout_secs, "write I/O frozen");
        volumes(&engine, &req.volumes)
    })
    .await?;
    Ok(Json(vols))
}

/// Release held writes (unfreezeflash); every named volume must be frozen, or nothing is changed.
#[utoipa::path(post, path = "/v1/unfreeze", tag = "groups", operation_id = "unfreeze",
    request_body = Unfreeze,
    responses(
        (status = 200, description = "the released volumes", body = Vec<Volume>),
        (status = 400, description = codes(&[C::InvalidBody]), body = ErrorBody),
        (status = 404, description = codes(&[C::VolumeNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::NotFrozen]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn unfreeze(
    State(engine): State<Engine>,
    body: Result<Json<Unfreeze>, JsonRejection>,
) -> ApiResult<Json<Vec<Volume>>> {
    let Json(req) = body?;
    name_some(&req.volumes, "unfreeze")?;
    let vols = blocking(move || {
        engine.unfreeze(&req.volumes)?;
        tracing::info!(volumes = ?req.volumes, "write I/O released");
        volumes(&engine, &req.volumes)
    })
    .await?;
    Ok(Json(vols))
}

/// Make an incremental relationship revertible (setflashrevertible): its next resync can be committed or reverted.
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/revertible", tag = "groups", operation_id = "setRevertible",
    params(Pair),
    responses(
        (status = 200, description = "revertible set", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::NotRecording, C::RevertPending]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn set_revertible(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    on_pair(
        engine,
        pair,
        Some("FlashCopy made revertible"),
        |e, s, t| e.set_revertible(s, t),
    )
    .await
}

/// Commit or revert of a revertible resync.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Commit,
    Revert,
}

impl Settle {
    fn verb(self) -> &'static str {
        match self {
            Settle::Commit => "commit",
            Settle::Revert => "revert",
        }
    }
}

/// Commit a revertible resync (commitflash).
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/commit", tag = "groups", operation_id = "commit",
    params(Pair),
    responses(
        (status = 200, description = "committed", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::NotRevertible]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn commit_pair(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    let done = Some("revertible FlashCopy committed");
    on_pair(engine, pair, done, |e, s, t| e.commit_revertible(s, t)).await
}

/// Revert a revertible resync (revertflash): the target returns to its previous point in time.
#[utoipa::path(post, path = "/v1/flash/{source}/{target}/revert", tag = "groups", operation_id = "revert",
    params(Pair),
    responses(
        (status = 200, description = "reverted", body = Flash),
        PairNotFound,
        (status = 409, description = codes(&[C::NotRevertible, C::HasDependents, C::RelationshipFailed]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn revert_pair(
    State(engine): State<Engine>,
    pair: Result<Path<Pair>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    let done = Some("revertible FlashCopy reverted");
    on_pair(engine, pair, done, |e, s, t| e.revert(s, t)).await
}

/// Query of the by-sequence-number commit and revert.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SettleQuery {
    /// The sequence number of the relationships to settle.
    #[param(value_type = u64, maximum = 4294967295.0)]
    seqnum: u32,
}

/// Commits or reverts every relationship with a sequence number; all of
/// them must be revertible, or none is touched.
async fn settle_seqnum(
    engine: Engine,
    query: Result<Query<SettleQuery>, QueryRejection>,
    what: Settle,
) -> ApiResult<Json<Vec<Flash>>> {
    let Ok(Query(SettleQuery { seqnum })) = query else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            C::InvalidQuery,
            format!(
                "POST /v1/flash/{} needs ?seqnum=N, N from 0 to 4294967295 (or use /v1/flash/SOURCE/TARGET/{})",
                what.verb(),
                what.verb()
            ),
        ));
    };
    // The engine checks every pair before it changes any: all or none.
    let done = blocking(move || {
        let infos = engine.settle_seqnum(seqnum, matches!(what, Settle::Commit))?;
        tracing::info!(seqnum, action = what.verb(), "revertible FlashCopy settled");
        Ok::<_, ApiError>(infos.into_iter().map(Flash::from).collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(done))
}

/// Commit every revertible resync with a sequence number (commitflash -seqnum); all must be revertible, or none is changed.
#[utoipa::path(post, path = "/v1/flash/commit", tag = "groups", operation_id = "commitBySeqnum",
    params(SettleQuery),
    responses(
        (status = 200, description = "the committed relationships", body = Vec<Flash>),
        (status = 400, description = codes(&[C::InvalidQuery]), body = ErrorBody),
        (status = 404, description = codes(&[C::RelationshipNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::NotRevertible]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn commit_by_seqnum(
    State(engine): State<Engine>,
    query: Result<Query<SettleQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    settle_seqnum(engine, query, Settle::Commit).await
}

/// Revert every revertible resync with a sequence number (revertflash -seqnum): targets return to their previous point in time; all must be revertible, or none is changed.
#[utoipa::path(post, path = "/v1/flash/revert", tag = "groups", operation_id = "revertBySeqnum",
    params(SettleQuery),
    responses(
        (status = 200, description = "the reverted relationships", body = Vec<Flash>),
        (status = 400, description = codes(&[C::InvalidQuery]), body = ErrorBody),
        (status = 404, description = codes(&[C::RelationshipNotFound]), body = ErrorBody),
        (status = 409, description = codes(&[C::NotRevertible, C::HasDependents, C::RelationshipFailed]), body = ErrorBody),
        (status = 507, description = codes(&[C::NoSpace]), body = ErrorBody),
        EngineFailure,
    ))]
pub(super) async fn revert_by_seqnum(
    State(engine): State<Engine>,
    query: Result<Query<SettleQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    settle_seqnum(engine, query, Settle::Revert).await
}
