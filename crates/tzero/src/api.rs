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
use tzero_engine::{Engine, FlashError, FlashOptions, VolumeError};

use crate::api_types::{
    CreateVolume, ErrorBody, ErrorDetail, Establish, Flash, Resync, Reverse, SetRate, Volume,
};

/// The API without authentication, for the unix socket.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route("/v1/volumes/{name}", get(get_volume).delete(delete_volume))
        .route("/v1/flash", get(list_flash).post(establish))
        .route(
            "/v1/flash/{source}/{target}",
            get(get_flash).delete(withdraw),
        )
        .route("/v1/flash/{source}/{target}/copy", post(start_copy))
        .route("/v1/flash/{source}/{target}/rate", put(set_rate))
        .route("/v1/flash/{source}/{target}/resync", post(resync))
        .route("/v1/flash/{source}/{target}/reverse", post(reverse))
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
        VolumeError::InvalidTrackSize(_) => (StatusCode::BAD_REQUEST, "invalid_track_size"),
        VolumeError::InUse { .. } => (StatusCode::CONFLICT, "volume_in_use"),
        VolumeError::Storage { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
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
        FlashError::SameVolume(_) => (StatusCode::BAD_REQUEST, "same_volume"),
        FlashError::Mismatch { .. } => (StatusCode::BAD_REQUEST, "volume_mismatch"),
        FlashError::TargetHasSource { .. } => (StatusCode::CONFLICT, "target_has_source"),
        FlashError::TooManyTargets(..) => (StatusCode::CONFLICT, "too_many_targets"),
        // The engine's refusals of a topology or state: a cycle, a volume
        // whose own targets still read through it, a resync without change
        // recording, a reverse before the copy completes. The message says which.
        FlashError::Unsupported(_) => (StatusCode::CONFLICT, "flash_refused"),
        FlashError::AlreadyCopy(..) => (StatusCode::CONFLICT, "already_copy"),
        FlashError::Failed { .. } => (StatusCode::CONFLICT, "relationship_failed"),
        FlashError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        FlashError::Catalog(_) => (StatusCode::INTERNAL_SERVER_ERROR, "catalog_error"),
        FlashError::Poisoned => (StatusCode::INTERNAL_SERVER_ERROR, "engine_poisoned"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
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
    let info = blocking(move || engine.create_volume(&req.name, req.capacity_bytes, track)).await?;
    tracing::info!(volume = %info.name, capacity = info.capacity_bytes, "volume created");
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

async fn list_flash(State(engine): State<Engine>) -> ApiResult<Json<Vec<Flash>>> {
    let rels = blocking(move || Ok::<_, Infallible>(engine.relationships())).await?;
    Ok(Json(rels.into_iter().map(Flash::from).collect()))
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
        ..FlashOptions::default()
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
                            "invalid_body", "invalid_path", "invalid_query", "unauthorized", "route_not_found", "method_not_allowed"]},
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
                        "contents_undefined": {"type": "boolean"}
                    }
                },
                "CreateVolume": {
                    "type": "object", "required": ["name", "capacity_bytes"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"},
                        "capacity_bytes": {"type": "integer", "format": "int64", "minimum": 512},
                        "track_size": {"type": "integer", "format": "int64", "default": 65536, "description": "power of two, 4096..1048576"}
                    }
                },
                "Flash": {
                    "type": "object",
                    "required": ["id", "source", "target", "background_copy", "persistent", "copy_rate", "state", "out_of_sync_tracks", "total_tracks", "track_size", "created_ms", "synced_ms", "failure", "recording", "changed_tracks", "withdraw_pending"],
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
                        "withdraw_pending": {"type": "boolean", "description": "the relationship ends when its background copy completes (DELETE ?cp=true)"}
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
                        "recording": {"type": "boolean", "default": false, "description": "record changes on both volumes, for resync and reverse (DSCLI -record; use with persistent)"}
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
        let (s, c) = flash_error(&FlashError::TargetHasSource {
            target: "b".into(),
            existing: "a".into(),
        });
        assert_eq!((s, c), (StatusCode::CONFLICT, "target_has_source"));
        let (s, c) = flash_error(&FlashError::Storage(std::io::Error::other("disk on fire")));
        assert_eq!((s, c), (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"));
        let (s, c) = flash_error(&FlashError::Unsupported("a cycle".into()));
        assert_eq!((s, c), (StatusCode::CONFLICT, "flash_refused"));
        let msg =
            ApiError::from(FlashError::Storage(std::io::Error::other("disk on fire"))).message;
        assert!(msg.ends_with(": disk on fire"), "{msg}");
    }

    #[test]
    fn openapi_lists_every_route() {
        let doc = openapi_document();
        let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert_eq!(paths, 9);
        assert_eq!(doc["openapi"], "3.0.3");
    }
}
