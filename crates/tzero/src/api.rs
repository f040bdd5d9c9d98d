//! The daemon's HTTP API: axum routes under `/v1`, JSON in and out.
//!
//! Invariants kept here:
//! - every engine call is blocking disk I/O and runs on tokio's blocking pool
//!   (`blocking`), never on a reactor thread;
//! - every failure, including axum's own rejections of bad bodies, unknown
//!   routes and bad tokens, leaves as the one JSON shape
//!   `{"error": {"code", "message"}}` with a stable snake_case `code`; the
//!   engine-error → status/code mapping lives in [`volume_error`] and
//!   [`flash_error`] only;
//! - the TCP router demands the bearer token; the unix-socket router does
//!   not, because reaching the socket already needs file-system access to the
//!   data directory.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tzero_engine::{Engine, FlashError, FlashOptions, IoError, VolumeError, VolumeOptions};

use crate::api_types::{
    CreatePool, CreateVolume, ErrorBody, ErrorDetail, Establish, EstablishGroup, Flash, Freeze,
    Pool, Resync, Reverse, SetRate, TargetInhibit, Unfreeze, Volume,
};

/// The API without authentication, for the unix socket.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route("/v1/volumes/{name}", get(get_volume).delete(delete_volume))
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route("/v1/pools/{name}", get(get_pool).delete(delete_pool))
        .route("/v1/flash", get(list_flash).post(establish))
        .route("/v1/flash/group", post(establish_group))
        .route("/v1/flash/commit", post(commit_by_seqnum))
        .route("/v1/flash/revert", post(revert_by_seqnum))
        .route("/v1/freeze", post(freeze))
        .route("/v1/unfreeze", post(unfreeze))
        .route(
            "/v1/flash/{source}/{target}",
            get(get_flash).delete(withdraw),
        )
        .route("/v1/flash/{source}/{target}/copy", post(start_copy))
        .route("/v1/flash/{source}/{target}/rate", put(set_rate))
        .route("/v1/flash/{source}/{target}/resync", post(resync))
        .route("/v1/flash/{source}/{target}/reverse", post(reverse))
        .route(
            "/v1/flash/{source}/{target}/target-inhibit",
            put(set_target_inhibit),
        )
        .route(
            "/v1/flash/{source}/{target}/revertible",
            post(set_revertible),
        )
        .route("/v1/flash/{source}/{target}/commit", post(commit_pair))
        .route("/v1/flash/{source}/{target}/revert", post(revert_pair))
        .route("/v1/openapi.json", get(openapi))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
}

/// The API behind `Authorization: Bearer <token>`, for TCP.
pub fn router_with_token(engine: Engine, token: Arc<str>) -> Router {
    router(engine).layer(middleware::from_fn_with_state(token, require_token))
}

/// An API failure: status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        } else {
            tracing::debug!(code = self.code, status = %self.status, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
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

/// Status and code of each volume error; the only place they are chosen.
pub fn volume_error(e: &VolumeError) -> (StatusCode, &'static str) {
    match e {
        VolumeError::NotFound(_) => (StatusCode::NOT_FOUND, "volume_not_found"),
        VolumeError::AlreadyExists(_) => (StatusCode::CONFLICT, "volume_exists"),
        VolumeError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        VolumeError::InvalidCapacity(_) => (StatusCode::BAD_REQUEST, "invalid_capacity"),
        VolumeError::TooLargeForFileSystem { .. } => {
            (StatusCode::BAD_REQUEST, "capacity_too_large_for_fs")
        }
        VolumeError::InvalidTrackSize(_) => (StatusCode::BAD_REQUEST, "invalid_track_size"),
        VolumeError::InUse { .. } => (StatusCode::CONFLICT, "volume_in_use"),
        VolumeError::PoolNotFound(_) => (StatusCode::NOT_FOUND, "pool_not_found"),
        VolumeError::PoolExists(_) => (StatusCode::CONFLICT, "pool_exists"),
        VolumeError::PoolInUse(..) => (StatusCode::CONFLICT, "pool_in_use"),
        VolumeError::PoolTooSmall { .. } => (StatusCode::CONFLICT, "pool_too_small"),
        VolumeError::NeedsPool(_) => (StatusCode::BAD_REQUEST, "needs_pool"),
        VolumeError::Storage { source, .. } if is_no_space(source) => {
            (StatusCode::INSUFFICIENT_STORAGE, "no_space")
        }
        VolumeError::Storage { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        VolumeError::Catalog(tzero_engine::CatalogError::NoSpace { .. }) => {
            (StatusCode::INSUFFICIENT_STORAGE, "no_space")
        }
        VolumeError::Catalog(_) => (StatusCode::INTERNAL_SERVER_ERROR, "catalog_error"),
        VolumeError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, "engine_poisoned"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// Status and code of each FlashCopy error; the only place they are chosen.
pub fn flash_error(e: &FlashError) -> (StatusCode, &'static str) {
    match e {
        FlashError::VolumeNotFound(_) => (StatusCode::NOT_FOUND, "volume_not_found"),
        FlashError::NotFound(..) => (StatusCode::NOT_FOUND, "relationship_not_found"),
        FlashError::Refused(tzero_engine::Refusal::SameVolume(_)) => {
            (StatusCode::BAD_REQUEST, "same_volume")
        }
        FlashError::Refused(tzero_engine::Refusal::SizeMismatch { .. }) => {
            (StatusCode::BAD_REQUEST, "volume_mismatch")
        }
        FlashError::Refused(tzero_engine::Refusal::TargetInUse { .. }) => {
            (StatusCode::CONFLICT, "target_has_source")
        }
        FlashError::Refused(tzero_engine::Refusal::TooManyTargets { .. }) => {
            (StatusCode::CONFLICT, "too_many_targets")
        }
        FlashError::Refused(tzero_engine::Refusal::AlreadyCopy { .. }) => {
            (StatusCode::CONFLICT, "already_copy")
        }
        FlashError::Refused(tzero_engine::Refusal::Failed { .. }) => {
            (StatusCode::CONFLICT, "relationship_failed")
        }
        FlashError::Refused(_) => (StatusCode::CONFLICT, "flash_refused"),
        FlashError::Storage(e) if is_no_space(e) => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        FlashError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        FlashError::Catalog(tzero_engine::CatalogError::NoSpace { .. }) => {
            (StatusCode::INSUFFICIENT_STORAGE, "no_space")
        }
        FlashError::Catalog(_) => (StatusCode::INTERNAL_SERVER_ERROR, "catalog_error"),
        FlashError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, "engine_poisoned"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// Status and code of each host I/O error, for API calls that do host I/O
/// on behalf of a client; the NBD mapping is `nbd_export::device_error`.
pub fn io_error(e: &IoError) -> (StatusCode, &'static str) {
    match e {
        IoError::OutOfRange { .. } => (StatusCode::BAD_REQUEST, "out_of_range"),
        IoError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        IoError::ReadOnly(_) => (StatusCode::CONFLICT, "write_inhibited"),
        IoError::Deleted(_) => (StatusCode::NOT_FOUND, "volume_not_found"),
        IoError::TargetFailed(_) => (StatusCode::CONFLICT, "relationship_failed"),
        IoError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        IoError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, "engine_poisoned"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    }
}

/// ENOSPC, whatever std calls it.
fn is_no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

impl From<IoError> for ApiError {
    fn from(e: IoError) -> Self {
        let (status, code) = io_error(&e);
        ApiError::new(status, code, error_chain(&e))
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let (status, code) = volume_error(&e);
        ApiError::new(status, code, error_chain(&e))
    }
}

impl From<FlashError> for ApiError {
    fn from(e: FlashError) -> Self {
        let (status, code) = flash_error(&e);
        ApiError::new(status, code, error_chain(&e))
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
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ => "invalid_body",
        };
        ApiError::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(r.status(), "invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(r.status(), "invalid_query", r.body_text())
    }
}

/// Runs a blocking engine call on the blocking pool.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(join) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("engine task failed: {join}"),
        )),
    }
}

/// Compares tokens in time independent of where they first differ, so the
/// token cannot be guessed byte by byte from response times.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if token_matches(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API token (the daemon's token is in DATA_DIR/api-token)",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing 'Authorization: Bearer <token>' header (the token is in DATA_DIR/api-token)",
        )
        .into_response(),
    }
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

type ApiResult<T> = Result<T, ApiError>;

async fn list_volumes(State(engine): State<Engine>) -> ApiResult<Json<Vec<Volume>>> {
    let vols = blocking(move || Ok::<_, Infallible>(engine.volumes())).await?;
    Ok(Json(vols.into_iter().map(Volume::from).collect()))
}

async fn create_volume(
    State(engine): State<Engine>,
    body: Result<Json<CreateVolume>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    let Json(req) = body?;
    let track = req
        .track_size
        .unwrap_or(tzero_engine::geometry::DEFAULT_TRACK_SIZE);
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

async fn get_volume(
    State(engine): State<Engine>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Volume>> {
    let Path(name) = name?;
    let info = blocking(move || engine.volume(&name)).await?;
    Ok(Json(info.into()))
}

/// Query of `DELETE /v1/volumes/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Withdraw the volume's relationships first.
    #[serde(default)]
    force: bool,
}

async fn delete_volume(
    State(engine): State<Engine>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = name?;
    let Query(q) = query?;
    let logged = name.clone();
    blocking(move || engine.delete_volume(&name, q.force)).await?;
    tracing::info!(volume = %logged, force = q.force, "volume deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/flash` and of the by-sequence-number commit and revert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqnumQuery {
    /// Only relationships established with this sequence number.
    seqnum: Option<u32>,
}

async fn list_flash(
    State(engine): State<Engine>,
    query: Result<Query<SeqnumQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    let Query(q) = query?;
    let rels = blocking(move || Ok::<_, Infallible>(engine.relationships())).await?;
    Ok(Json(
        rels.into_iter()
            .filter(|f| q.seqnum.is_none_or(|n| f.seqnum == n))
            .map(Flash::from)
            .collect(),
    ))
}

async fn establish(
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

async fn get_flash(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let info = blocking(move || engine.relationship(&source, &target)).await?;
    Ok(Json(info.into()))
}

/// Query of `DELETE /v1/flash/{source}/{target}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawQuery {
    /// Withdraw when the background copy completes (DSCLI `rmflash -cp`)
    /// instead of now.
    #[serde(default)]
    cp: bool,
}

async fn withdraw(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<WithdrawQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Path((source, target)) = pair?;
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

async fn resync(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
    body: Result<Option<Json<Resync>>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
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

async fn reverse(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
    body: Result<Option<Json<Reverse>>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let req = body?.map(|Json(r)| r).unwrap_or_default();
    let info = blocking(move || engine.reverse(&source, &target, req.fast)).await?;
    tracing::info!(source = %info.source, target = %info.target, fast = req.fast, restore = info.out_of_sync_tracks, "FlashCopy reversed");
    Ok(Json(info.into()))
}

async fn start_copy(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let info = blocking(move || engine.start_background_copy(&source, &target)).await?;
    tracing::info!(source = %info.source, target = %info.target, "background copy started");
    Ok(Json(info.into()))
}

async fn set_rate(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<SetRate>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let Json(req) = body?;
    let info = blocking(move || engine.set_copy_rate(&source, &target, req.copy_rate)).await?;
    Ok(Json(info.into()))
}

async fn establish_group(
    State(engine): State<Engine>,
    body: Result<Json<EstablishGroup>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Vec<Flash>>)> {
    let Json(req) = body?;
    if req.pairs.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a consistency group needs at least one {source, target} pair",
        ));
    }
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

/// Freeze and unfreeze name the volumes whose writes change state; a
/// refusal gets its own code rather than the generic `flash_refused`.
fn refuse(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

async fn freeze(
    State(engine): State<Engine>,
    body: Result<Json<Freeze>, JsonRejection>,
) -> ApiResult<Json<Vec<Volume>>> {
    let Json(req) = body?;
    if req.volumes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "name at least one volume to freeze",
        ));
    }
    let vols = blocking(move || {
        for name in &req.volumes {
            let v = engine.volume(name)?;
            if v.source_of.is_empty() {
                return Err(refuse(
                    "not_a_source",
                    format!("{name} is not the source of a FlashCopy relationship; only sources can be frozen"),
                ));
            }
        }
        engine.freeze(
            &req.volumes,
            std::time::Duration::from_secs(req.timeout_secs),
        )?;
        tracing::info!(volumes = ?req.volumes, timeout_secs = req.timeout_secs, "write I/O frozen");
        req.volumes
            .iter()
            .map(|n| engine.volume(n).map(Volume::from).map_err(ApiError::from))
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(vols))
}

async fn unfreeze(
    State(engine): State<Engine>,
    body: Result<Json<Unfreeze>, JsonRejection>,
) -> ApiResult<Json<Vec<Volume>>> {
    let Json(req) = body?;
    if req.volumes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "name at least one volume to unfreeze",
        ));
    }
    let vols = blocking(move || {
        for name in &req.volumes {
            if !engine.volume(name)?.frozen {
                return Err(refuse(
                    "not_frozen",
                    format!("{name} is not frozen (no write I/O is held on it)"),
                ));
            }
        }
        engine.unfreeze(&req.volumes)?;
        tracing::info!(volumes = ?req.volumes, "write I/O released");
        req.volumes
            .iter()
            .map(|n| engine.volume(n).map(Volume::from).map_err(ApiError::from))
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(vols))
}

async fn set_target_inhibit(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<TargetInhibit>, JsonRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let Json(req) = body?;
    let info = blocking(move || engine.set_target_inhibit(&source, &target, req.inhibit)).await?;
    tracing::info!(source = %info.source, target = %info.target, inhibit = req.inhibit, "target write inhibit changed");
    Ok(Json(info.into()))
}

async fn set_revertible(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let info = blocking(move || engine.set_revertible(&source, &target)).await?;
    tracing::info!(source = %info.source, target = %info.target, "FlashCopy made revertible");
    Ok(Json(info.into()))
}

/// Commit or revert of a revertible resync.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Commit,
    Revert,
}

impl Settle {
    fn apply(self, engine: &Engine, source: &str, target: &str) -> Result<Flash, ApiError> {
        let info = match self {
            Settle::Commit => engine.commit_revertible(source, target)?,
            Settle::Revert => engine.revert(source, target)?,
        };
        tracing::info!(source, target, action = ?self, "revertible FlashCopy settled");
        Ok(info.into())
    }

    fn verb(self) -> &'static str {
        match self {
            Settle::Commit => "commit",
            Settle::Revert => "revert",
        }
    }
}

/// Refuses, before anything changes, a relationship with no revertible
/// resync pending.
fn check_revertible(f: &tzero_engine::FlashInfo, what: Settle) -> Result<(), ApiError> {
    if f.revert_pending {
        return Ok(());
    }
    let hint = if f.revertible {
        "setflashrevertible was done, but no resync has happened since"
    } else {
        "make it revertible with setflashrevertible, then resync"
    };
    Err(refuse(
        "not_revertible",
        format!(
            "{}:{} is not revertible: there is no revertible resync to {} ({hint})",
            f.source,
            f.target,
            what.verb()
        ),
    ))
}

async fn settle_pair(
    engine: Engine,
    pair: Result<Path<(String, String)>, PathRejection>,
    what: Settle,
) -> ApiResult<Json<Flash>> {
    let Path((source, target)) = pair?;
    let info = blocking(move || {
        check_revertible(&engine.relationship(&source, &target)?, what)?;
        what.apply(&engine, &source, &target)
    })
    .await?;
    Ok(Json(info))
}

async fn commit_pair(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    settle_pair(engine, pair, Settle::Commit).await
}

async fn revert_pair(
    State(engine): State<Engine>,
    pair: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Flash>> {
    settle_pair(engine, pair, Settle::Revert).await
}

/// Commits or reverts every relationship with a sequence number; all of
/// them must be revertible, or none is touched.
async fn settle_seqnum(
    engine: Engine,
    query: Result<Query<SeqnumQuery>, QueryRejection>,
    what: Settle,
) -> ApiResult<Json<Vec<Flash>>> {
    let Query(q) = query?;
    let Some(seqnum) = q.seqnum else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "POST /v1/flash/{} needs ?seqnum=N (or use /v1/flash/SOURCE/TARGET/{})",
                what.verb(),
                what.verb()
            ),
        ));
    };
    let done = blocking(move || {
        let rels: Vec<_> = engine
            .relationships()
            .into_iter()
            .filter(|f| f.seqnum == seqnum)
            .collect();
        if rels.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "relationship_not_found",
                format!("no FlashCopy relationship has sequence number {seqnum}"),
            ));
        }
        for f in &rels {
            check_revertible(f, what)?;
        }
        rels.iter()
            .map(|f| what.apply(&engine, &f.source, &f.target))
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(done))
}

async fn commit_by_seqnum(
    State(engine): State<Engine>,
    query: Result<Query<SeqnumQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    settle_seqnum(engine, query, Settle::Commit).await
}

async fn revert_by_seqnum(
    State(engine): State<Engine>,
    query: Result<Query<SeqnumQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Flash>>> {
    settle_seqnum(engine, query, Settle::Revert).await
}

async fn list_pools(State(engine): State<Engine>) -> ApiResult<Json<Vec<Pool>>> {
    let pools = blocking(move || Ok::<_, Infallible>(engine.pools())).await?;
    Ok(Json(pools.into_iter().map(Pool::from).collect()))
}

async fn create_pool(
    State(engine): State<Engine>,
    body: Result<Json<CreatePool>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Pool>)> {
    let Json(req) = body?;
    let info = blocking(move || engine.create_pool(&req.name, req.capacity_bytes)).await?;
    tracing::info!(pool = %info.name, capacity = info.capacity_bytes, "extent pool created");
    Ok((StatusCode::CREATED, Json(info.into())))
}

async fn get_pool(
    State(engine): State<Engine>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Pool>> {
    let Path(name) = name?;
    let info = blocking(move || engine.pool(&name)).await?;
    Ok(Json(info.into()))
}

async fn delete_pool(
    State(engine): State<Engine>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = name?;
    let logged = name.clone();
    blocking(move || engine.delete_pool(&name)).await?;
    tracing::info!(pool = %logged, "extent pool deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::api::openapi_document())
}

/// The OpenAPI 3.0 description of this API, written by hand next to the
/// routes so that a change to one is seen beside the other.
pub fn openapi_document() -> serde_json::Value {
    use serde_json::json;
    let err = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let pair_params = json!([
        {"name": "source", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "target", "in": "path", "required": true, "schema": {"type": "string"}}
    ]);
    let flash_ok = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Flash"}}}});
    let flash_list = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Flash"}}}}});
    let vol_list = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Volume"}}}}});
    let seqnum_param = json!({"name": "seqnum", "in": "query", "required": true, "schema": {"type": "integer", "format": "int32"}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tzero API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage tzero volumes and FlashCopy relationships. Over TCP every request needs 'Authorization: Bearer <token>' (the token is in DATA_DIR/api-token); the unix socket DATA_DIR/tzero.sock needs none. Errors always have the Error shape with a stable code."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "description": "stable snake_case code", "enum": [
                            "volume_not_found", "volume_exists", "invalid_name", "invalid_capacity", "invalid_track_size",
                            "volume_in_use", "relationship_not_found", "same_volume", "volume_mismatch", "target_has_source",
                            "too_many_targets", "flash_refused", "already_copy", "relationship_failed", "storage_error",
                            "catalog_error", "engine_poisoned", "internal_error", "malformed_json", "unsupported_media_type",
                            "invalid_body", "invalid_path", "invalid_query", "unauthorized", "route_not_found", "method_not_allowed",
                            "pool_not_found", "pool_exists", "pool_in_use", "pool_too_small", "needs_pool", "no_space",
                            "not_a_source", "not_frozen", "not_revertible", "write_inhibited", "out_of_range", "shutting_down"]},
                        "message": {"type": "string"}}}}
                },
                "Volume": {
                    "type": "object",
                    "required": ["name", "capacity_bytes", "track_size", "allocated_bytes", "created_ms", "source_of", "target_of", "contents_undefined"],
                    "properties": {
                        "name": {"type": "string"},
                        "capacity_bytes": {"type": "integer", "format": "int64", "minimum": 0},
                        "track_size": {"type": "integer", "format": "int64", "minimum": 0},
                        "allocated_bytes": {"type": "integer", "format": "int64", "minimum": 0},
                        "created_ms": {"type": "integer", "format": "int64", "description": "ms since the Unix epoch"},
                        "source_of": {"type": "array", "items": {"type": "string"}},
                        "target_of": {"type": "string", "nullable": true},
                        "contents_undefined": {"type": "boolean"},
                        "pool": {"type": "string", "nullable": true, "description": "extent pool; null for a sparse volume"},
                        "provisioning": {"type": "string", "enum": ["sparse", "standard", "thin"], "description": "sparse file, fully allocated in a pool, or space-efficient (DSCLI -sam ese; allocated_bytes is its allocated tracks)"},
                        "frozen": {"type": "boolean", "description": "host writes are held by a freeze"},
                        "write_inhibited": {"type": "boolean", "description": "target of a relationship with target write inhibit: read-only to hosts"}
                    }
                },
                "Pool": {
                    "type": "object",
                    "required": ["name", "capacity_bytes", "used_bytes", "free_bytes", "volumes", "created_ms"],
                    "properties": {
                        "name": {"type": "string"},
                        "capacity_bytes": {"type": "integer", "format": "int64"},
                        "used_bytes": {"type": "integer", "format": "int64", "description": "reserved by standard volumes plus allocated by thin ones"},
                        "free_bytes": {"type": "integer", "format": "int64"},
                        "volumes": {"type": "integer"},
                        "created_ms": {"type": "integer", "format": "int64"}
                    }
                },
                "CreatePool": {
                    "type": "object", "required": ["name", "capacity_bytes"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string"},
                        "capacity_bytes": {"type": "integer", "format": "int64", "minimum": 1}
                    }
                },
                "FlashPair": {
                    "type": "object", "required": ["source", "target"], "additionalProperties": false,
                    "properties": {"source": {"type": "string"}, "target": {"type": "string"}}
                },
                "EstablishGroup": {
                    "type": "object", "required": ["pairs"], "additionalProperties": false,
                    "description": "a consistency group: every pair at one T0, ordered against host writes on all sources",
                    "properties": {
                        "pairs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/FlashPair"}},
                        "background_copy": {"type": "boolean", "default": true},
                        "persistent": {"type": "boolean", "default": false},
                        "copy_rate": {"type": "integer", "format": "int64", "default": 0},
                        "recording": {"type": "boolean", "default": false},
                        "target_inhibit": {"type": "boolean", "default": false},
                        "seqnum": {"type": "integer", "format": "int32", "default": 0},
                        "freeze": {"type": "boolean", "default": false, "description": "then hold host writes to the sources (queued, never failed; reads go on) until POST /v1/unfreeze or the timeout"},
                        "freeze_timeout_secs": {"type": "integer", "format": "int64", "default": 120, "description": "held writes resume by themselves after this"}
                    }
                },
                "Freeze": {
                    "type": "object", "required": ["volumes"], "additionalProperties": false,
                    "properties": {
                        "volumes": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "sources of FlashCopy relationships"},
                        "timeout_secs": {"type": "integer", "format": "int64", "default": 120}
                    }
                },
                "Unfreeze": {
                    "type": "object", "required": ["volumes"], "additionalProperties": false,
                    "properties": {"volumes": {"type": "array", "minItems": 1, "items": {"type": "string"}}}
                },
                "TargetInhibit": {
                    "type": "object", "required": ["inhibit"], "additionalProperties": false,
                    "properties": {"inhibit": {"type": "boolean"}}
                },
                "CreateVolume": {
                    "type": "object", "required": ["name", "capacity_bytes"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"},
                        "capacity_bytes": {"type": "integer", "format": "int64", "minimum": 512},
                        "track_size": {"type": "integer", "format": "int64", "default": 65536, "description": "power of two, 4096..1048576"},
                        "pool": {"type": "string", "description": "extent pool to allocate from (mkfbvol -extpool)"},
                        "space_efficient": {"type": "boolean", "default": false, "description": "thin (mkfbvol -sam ese); needs pool. With a pool and false: standard, fully allocated"}
                    }
                },
                "Flash": {
                    "type": "object",
                    "required": ["id", "source", "target", "background_copy", "persistent", "copy_rate", "state", "out_of_sync_tracks", "total_tracks", "track_size", "created_ms", "synced_ms", "failure", "recording", "changed_tracks", "withdraw_pending", "target_write_inhibit", "seqnum", "revertible", "revert_pending"],
                    "properties": {
                        "id": {"type": "integer", "format": "int64"},
                        "source": {"type": "string"},
                        "target": {"type": "string"},
                        "background_copy": {"type": "boolean"},
                        "persistent": {"type": "boolean"},
                        "copy_rate": {"type": "integer", "format": "int64", "description": "bytes per second, 0 = unlimited"},
                        "state": {"type": "string", "enum": ["copying", "no_copy", "copied", "failed"]},
                        "out_of_sync_tracks": {"type": "integer", "format": "int64"},
                        "total_tracks": {"type": "integer", "format": "int64"},
                        "track_size": {"type": "integer", "format": "int64"},
                        "created_ms": {"type": "integer", "format": "int64"},
                        "synced_ms": {"type": "integer", "format": "int64"},
                        "failure": {"type": "string", "nullable": true},
                        "recording": {"type": "boolean", "description": "change recording (incremental FlashCopy)"},
                        "changed_tracks": {"type": "integer", "format": "int64", "description": "tracks changed on either volume since T0 (what a resync copies again); 0 without recording"},
                        "withdraw_pending": {"type": "boolean", "description": "the relationship ends when its background copy completes (DELETE ?cp=true)"},
                        "target_write_inhibit": {"type": "boolean", "description": "hosts may not write the target"},
                        "seqnum": {"type": "integer", "format": "int32", "description": "sequence number given at establish, 0 if none"},
                        "revertible": {"type": "boolean", "description": "the next resync keeps the previous point in time restorable"},
                        "revert_pending": {"type": "boolean", "description": "a revertible resync awaits commit or revert"}
                    }
                },
                "Establish": {
                    "type": "object", "required": ["source", "target"], "additionalProperties": false,
                    "properties": {
                        "source": {"type": "string"},
                        "target": {"type": "string"},
                        "background_copy": {"type": "boolean", "default": true},
                        "persistent": {"type": "boolean", "default": false},
                        "copy_rate": {"type": "integer", "format": "int64", "default": 0, "description": "bytes per second, 0 = unlimited"},
                        "recording": {"type": "boolean", "default": false, "description": "record changes on both volumes, for resync and reverse (DSCLI -record; use with persistent)"},
                        "target_inhibit": {"type": "boolean", "default": false, "description": "hosts may not write the target (DSCLI -tgtinhibit)"},
                        "seqnum": {"type": "integer", "format": "int32", "default": 0, "description": "sequence number (DSCLI -seqnum)"}
                    }
                },
                "Resync": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "recording": {"type": "boolean", "default": true, "description": "keep recording changes after the resync"},
                        "persistent": {"type": "boolean", "default": true},
                        "background_copy": {"type": "boolean", "description": "true turns the background copy on; absent or false keeps the relationship's setting"}
                    }
                },
                "Reverse": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "fast": {"type": "boolean", "default": false, "description": "fast reverse restore: allowed before the background copy completes; the old target's contents are then undefined"}
                    }
                },
                "SetRate": {
                    "type": "object", "required": ["copy_rate"], "additionalProperties": false,
                    "properties": {"copy_rate": {"type": "integer", "format": "int64", "description": "bytes per second, 0 = unlimited"}}
                }
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/volumes": {
                "get": {"summary": "List volumes (lsfbvol)", "operationId": "listVolumes", "responses": {
                    "200": {"description": "all volumes", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Volume"}}}}},
                    "401": err("missing or wrong token")}},
                "post": {"summary": "Create a volume (mkfbvol)", "operationId": "createVolume",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateVolume"}}}},
                    "responses": {
                        "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Volume"}}}},
                        "400": err("invalid name, capacity, track size or malformed JSON"),
                        "401": err("missing or wrong token"),
                        "409": err("volume_exists"),
                        "415": err("body is not application/json"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/volumes/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "Show one volume", "operationId": "getVolume", "responses": {
                    "200": {"description": "the volume", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Volume"}}}},
                    "401": err("missing or wrong token"),
                    "404": err("volume_not_found")}},
                "delete": {"summary": "Delete a volume (rmfbvol)", "operationId": "deleteVolume",
                    "parameters": [{"name": "force", "in": "query", "required": false, "schema": {"type": "boolean", "default": false}, "description": "withdraw the volume's relationships first"}],
                    "responses": {
                        "204": {"description": "deleted"},
                        "400": err("invalid query"),
                        "401": err("missing or wrong token"),
                        "404": err("volume_not_found"),
                        "409": err("volume_in_use"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash": {
                "get": {"summary": "List FlashCopy relationships (lsflash)", "operationId": "listFlash", "responses": {
                    "200": {"description": "all relationships", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Flash"}}}}},
                    "401": err("missing or wrong token")}},
                "post": {"summary": "Establish a FlashCopy relationship (mkflash)", "operationId": "establish",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Establish"}}}},
                    "responses": {
                        "201": flash_ok("established"),
                        "400": err("same_volume, volume_mismatch or malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("volume_not_found"),
                        "409": err("target_has_source, too_many_targets, flash_refused (a cycle, or the target's own targets still read through it)"),
                        "415": err("body is not application/json"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}": {
                "parameters": pair_params,
                "get": {"summary": "Show one relationship", "operationId": "getFlash", "responses": {
                    "200": flash_ok("the relationship"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found")}},
                "delete": {"summary": "Withdraw a relationship (rmflash); with cp=true, when its background copy completes (rmflash -cp)", "operationId": "withdraw",
                    "description": "Without cp, an incomplete copy leaves the target's contents undefined (Volume.contents_undefined).",
                    "parameters": [{"name": "cp", "in": "query", "required": false, "schema": {"type": "boolean", "default": false}, "description": "turn the background copy on and withdraw when it completes"}],
                    "responses": {
                    "202": flash_ok("cp=true: the relationship, withdraw_pending set; it ends when the copy completes (at once if it already has)"),
                    "204": {"description": "withdrawn"},
                    "400": err("invalid query"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found"),
                    "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}/copy": {
                "parameters": pair_params,
                "post": {"summary": "Start the background copy of a NOCOPY relationship (chflash --cp)", "operationId": "startCopy", "responses": {
                    "200": flash_ok("copy started"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found"),
                    "409": err("already_copy, relationship_failed"),
                    "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}/rate": {
                "parameters": pair_params,
                "put": {"summary": "Set the background copy rate (setflashrate)", "operationId": "setRate",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SetRate"}}}},
                    "responses": {
                        "200": flash_ok("rate changed"),
                        "400": err("malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}/resync": {
                "parameters": pair_params,
                "post": {"summary": "Incremental resync: a new T0, copying only the tracks changed on either volume (resyncflash -record -persist)", "operationId": "resync",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Resync"}}}},
                    "responses": {
                        "200": flash_ok("resynced; out_of_sync_tracks is what will be copied again"),
                        "400": err("malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found"),
                        "409": err("flash_refused (no change recording, or the target's own targets still read through it), relationship_failed"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}/reverse": {
                "parameters": pair_params,
                "post": {"summary": "Reverse restore: the source gets the target's point-in-time data (reverseflash); the relationship becomes {target}:{source}", "operationId": "reverse",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Reverse"}}}},
                    "responses": {
                        "200": flash_ok("the reversed relationship, {target}:{source}"),
                        "400": err("malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found"),
                        "409": err("flash_refused (copy incomplete without fast, or a cascade would change a point in time), relationship_failed"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/pools": {
                "get": {"summary": "List extent pools (lsextpool)", "operationId": "listPools", "responses": {
                    "200": {"description": "all pools", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}}}}},
                    "401": err("missing or wrong token")}},
                "post": {"summary": "Create an extent pool (mkextpool)", "operationId": "createPool",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreatePool"}}}},
                    "responses": {
                        "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pool"}}}},
                        "400": err("invalid_name, invalid_capacity, malformed JSON"),
                        "401": err("missing or wrong token"),
                        "409": err("pool_exists"),
                        "422": err("body does not match the schema"),
                        "500": err("catalog failure")}}
            },
            "/v1/pools/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "Show one extent pool", "operationId": "getPool", "responses": {
                    "200": {"description": "the pool", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pool"}}}},
                    "401": err("missing or wrong token"),
                    "404": err("pool_not_found")}},
                "delete": {"summary": "Delete an empty extent pool (rmextpool)", "operationId": "deletePool", "responses": {
                    "204": {"description": "deleted"},
                    "401": err("missing or wrong token"),
                    "404": err("pool_not_found"),
                    "409": err("pool_in_use: the pool still holds volumes"),
                    "500": err("catalog failure")}}
            },
            "/v1/flash/group": {
                "post": {"summary": "Establish a consistency group (mkflash with several pairs, or --freeze): one T0 for all pairs, all or none", "operationId": "establishGroup",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EstablishGroup"}}}},
                    "responses": {
                        "201": flash_list("the relationships, in the order given"),
                        "400": err("invalid_body (no pairs), same_volume, volume_mismatch, malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("volume_not_found"),
                        "409": err("target_has_source, too_many_targets, flash_refused (cycle, a target named twice or also a source)"),
                        "422": err("body does not match the schema"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash/commit": {
                "post": {"summary": "Commit every revertible resync with a sequence number (commitflash -seqnum); all must be revertible, or none is changed", "operationId": "commitBySeqnum",
                    "parameters": [seqnum_param.clone()],
                    "responses": {
                        "200": flash_list("the committed relationships"),
                        "400": err("invalid_query: seqnum missing"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found: none has this sequence number"),
                        "409": err("not_revertible"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/flash/revert": {
                "post": {"summary": "Revert every revertible resync with a sequence number (revertflash -seqnum): targets return to their previous point in time; all must be revertible, or none is changed", "operationId": "revertBySeqnum",
                    "parameters": [seqnum_param.clone()],
                    "responses": {
                        "200": flash_list("the reverted relationships"),
                        "400": err("invalid_query: seqnum missing"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found: none has this sequence number"),
                        "409": err("not_revertible, flash_refused"),
                        "500": err("storage or catalog failure")}}
            },
            "/v1/freeze": {
                "post": {"summary": "Freeze FlashCopy sources (freezeflash): host writes are held, never failed, until POST /v1/unfreeze or the timeout; reads go on", "operationId": "freeze",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Freeze"}}}},
                    "responses": {
                        "200": vol_list("the frozen volumes"),
                        "400": err("invalid_body (no volumes), malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("volume_not_found"),
                        "409": err("not_a_source: only sources of relationships can be frozen"),
                        "422": err("body does not match the schema")}}
            },
            "/v1/unfreeze": {
                "post": {"summary": "Release held writes (unfreezeflash)", "operationId": "unfreeze",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Unfreeze"}}}},
                    "responses": {
                        "200": vol_list("the released volumes"),
                        "400": err("invalid_body (no volumes), malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("volume_not_found"),
                        "409": err("not_frozen: a named volume holds no writes (nothing is changed)"),
                        "422": err("body does not match the schema")}}
            },
            "/v1/flash/{source}/{target}/target-inhibit": {
                "parameters": pair_params,
                "put": {"summary": "Set or lift target write inhibit (mkflash -tgtinhibit; rmflash -resettgtinhibit lifts it without withdrawing)", "operationId": "setTargetInhibit",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TargetInhibit"}}}},
                    "responses": {
                        "200": flash_ok("changed; new NBD connections to the target see the new read-only flag"),
                        "400": err("malformed JSON"),
                        "401": err("missing or wrong token"),
                        "404": err("relationship_not_found"),
                        "422": err("body does not match the schema"),
                        "500": err("catalog failure")}}
            },
            "/v1/flash/{source}/{target}/revertible": {
                "parameters": pair_params,
                "post": {"summary": "Make an incremental relationship revertible (setflashrevertible): its next resync can be committed or reverted", "operationId": "setRevertible", "responses": {
                    "200": flash_ok("revertible set"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found"),
                    "409": err("flash_refused: no change recording, or a revertible resync is already pending"),
                    "500": err("catalog failure")}}
            },
            "/v1/flash/{source}/{target}/commit": {
                "parameters": pair_params,
                "post": {"summary": "Commit a revertible resync (commitflash)", "operationId": "commit", "responses": {
                    "200": flash_ok("committed"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found"),
                    "409": err("not_revertible"),
                    "500": err("storage or catalog failure")}}
            },
            "/v1/flash/{source}/{target}/revert": {
                "parameters": pair_params,
                "post": {"summary": "Revert a revertible resync (revertflash): the target returns to its previous point in time", "operationId": "revert", "responses": {
                    "200": flash_ok("reverted"),
                    "401": err("missing or wrong token"),
                    "404": err("relationship_not_found"),
                    "409": err("not_revertible, flash_refused"),
                    "500": err("storage or catalog failure")}}
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document", "operationId": "openapi", "responses": {
                    "200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "401": err("missing or wrong token")}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }

    #[test]
    fn error_codes_and_statuses() {
        let (s, c) = volume_error(&VolumeError::NotFound("a".into()));
        assert_eq!((s, c), (StatusCode::NOT_FOUND, "volume_not_found"));
        let (s, c) = volume_error(&VolumeError::InUse {
            name: "a".into(),
            detail: "source of b".into(),
        });
        assert_eq!((s, c), (StatusCode::CONFLICT, "volume_in_use"));
        let (s, c) = flash_error(&FlashError::Refused(tzero_engine::Refusal::TargetInUse {
            tgt: "b".into(),
            existing: "a".into(),
        }));
        assert_eq!((s, c), (StatusCode::CONFLICT, "target_has_source"));
        let (s, c) = flash_error(&FlashError::Storage(std::io::Error::other("disk on fire")));
        assert_eq!((s, c), (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"));
        let (s, c) = flash_error(&FlashError::Refused(tzero_engine::Refusal::NoPairs));
        assert_eq!((s, c), (StatusCode::CONFLICT, "flash_refused"));
        let (s, c) = volume_error(&VolumeError::PoolNotFound("p".into()));
        assert_eq!((s, c), (StatusCode::NOT_FOUND, "pool_not_found"));
        let (s, c) = volume_error(&VolumeError::PoolExists("p".into()));
        assert_eq!((s, c), (StatusCode::CONFLICT, "pool_exists"));
        let (s, c) = volume_error(&VolumeError::PoolInUse("p".into(), 2));
        assert_eq!((s, c), (StatusCode::CONFLICT, "pool_in_use"));
        let (s, c) = volume_error(&VolumeError::PoolTooSmall {
            pool: "p".into(),
            needed: 2,
            free: 1,
        });
        assert_eq!((s, c), (StatusCode::CONFLICT, "pool_too_small"));
        let (s, c) = volume_error(&VolumeError::NeedsPool("v".into()));
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, "needs_pool"));
        let enospc = std::io::Error::from_raw_os_error(28);
        let (s, c) = flash_error(&FlashError::Storage(enospc));
        assert_eq!((s, c), (StatusCode::INSUFFICIENT_STORAGE, "no_space"));
        let (s, c) = io_error(&IoError::ReadOnly("t".into()));
        assert_eq!((s, c), (StatusCode::CONFLICT, "write_inhibited"));
        let (s, c) = io_error(&IoError::NoSpace("t".into()));
        assert_eq!((s, c), (StatusCode::INSUFFICIENT_STORAGE, "no_space"));
        let msg =
            ApiError::from(FlashError::Storage(std::io::Error::other("disk on fire"))).message;
        assert!(msg.ends_with(": disk on fire"), "{msg}");
    }

    #[test]
    fn openapi_lists_every_route() {
        let doc = openapi_document();
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert_eq!(paths, 20);
        // Every route of the router is documented, and every documented
        // error code is one the code can produce.
        let text = doc.to_string();
        for path in [
            "/v1/pools/{name}",
            "/v1/flash/group",
            "/v1/flash/commit",
            "/v1/flash/revert",
            "/v1/freeze",
            "/v1/unfreeze",
            "/v1/flash/{source}/{target}/target-inhibit",
            "/v1/flash/{source}/{target}/revertible",
            "/v1/flash/{source}/{target}/commit",
            "/v1/flash/{source}/{target}/revert",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        for code in [
            "pool_too_small",
            "needs_pool",
            "not_frozen",
            "not_a_source",
            "not_revertible",
        ] {
            assert!(text.contains(code), "{code} missing");
        }
        assert_eq!(doc["openapi"], "3.0.3");
    }
}
