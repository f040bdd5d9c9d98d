//! The daemon's HTTP API: axum routes under `/v1`, JSON in and out, one
//! module per resource (`volumes`, `pools`, `flash`, `groups`), the error
//! mapping in `errors` and the generated document in `openapi`; beside them
//! `/metrics` (`metrics`, Prometheus text), the web console at `/`
//! (`console`), the audit line per admin action (`logging`) and the entry
//! point of the request-body fuzz target (`fuzzing`).
//!
//! Invariants kept here:
//! - every engine call is blocking disk I/O and runs on tokio's blocking pool
//!   (`blocking`), never on a reactor thread;
//! - every failure, including axum's own rejections of bad bodies, unknown
//!   routes and bad tokens, leaves as the one JSON shape
//!   `{"error": {"code", "message"}}` with a stable code; the engine-error →
//!   status/code mapping lives in `errors` only, and the API checks no
//!   FlashCopy rule itself: the engine refuses, atomically (commit/revert by
//!   sequence number included: `Engine::settle_seqnum` checks every pair first);
//! - routes and their OpenAPI description come from one `routes!` list
//!   (`api_router`), so the document cannot miss a route;
//! - the TCP router demands a bearer token and checks its role (`admin` does
//!   anything, `monitor` only reads: 403 `forbidden` otherwise; the tokens
//!   are kept hashed, `crate::tokens`); the unix-socket router does not,
//!   because reaching the socket already needs file-system access to the
//!   data directory. The web console's static assets (`console`, at `/`)
//!   hold no data and are served on both without it.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tzero_engine::{Engine, FlashError, FlashInfo};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_types::{ErrorCode, Flash};
use crate::tokens::{Role, TokenStore};

mod console;
mod errors;
mod flash;
pub mod fuzzing;
mod groups;
pub mod logging;
mod metrics;
mod openapi;
mod pools;
mod sgc;
mod tokens;
mod volumes;

pub use errors::{
    error_chain, flash_error, io_error, refusal_code, sgc_error, volume_error, ApiError,
};
pub use openapi::openapi_document;

type ApiResult<T> = Result<T, ApiError>;

/// The `{name}` of a volume or pool route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct Name {
    /// Volume or pool name.
    name: String,
}

/// The `{source}/{target}` of a relationship route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct Pair {
    /// Source volume.
    source: String,
    /// Target volume.
    target: String,
}

/// Runs `op` on the relationship the path names and answers with it; logs
/// `done` (with the pair) when the operation changes something.
async fn on_pair<F>(
    engine: Engine,
    pair: Result<Path<Pair>, PathRejection>,
    done: Option<&'static str>,
    op: F,
) -> ApiResult<Json<Flash>>
where
    F: FnOnce(&Engine, &str, &str) -> Result<FlashInfo, FlashError> + Send + 'static,
{
    let Path(Pair { source, target }) = pair?;
    let info = blocking(move || op(&engine, &source, &target)).await?;
    if let Some(done) = done {
        tracing::info!(source = %info.source, target = %info.target, "{done}");
    }
    Ok(Json(info.into()))
}

/// Query of `GET /v1/flash`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SeqnumQuery {
    /// Only relationships established with this sequence number.
    #[param(value_type = Option<u64>, maximum = 4294967295.0)]
    seqnum: Option<u32>,
}

/// Every route with its OpenAPI operation, from one list.
fn api_router() -> OpenApiRouter<Engine> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(volumes::list, volumes::create))
        .routes(routes!(volumes::get, volumes::delete))
        .routes(routes!(pools::list, pools::create))
        .routes(routes!(pools::get, pools::delete))
        .routes(routes!(flash::list, flash::establish))
        .routes(routes!(flash::get, flash::withdraw))
        .routes(routes!(flash::start_copy))
        .routes(routes!(flash::set_rate))
        .routes(routes!(flash::resync))
        .routes(routes!(flash::reverse))
        .routes(routes!(flash::set_target_inhibit))
        .routes(routes!(flash::bitmap))
        .routes(routes!(groups::establish))
        .routes(routes!(groups::freeze))
        .routes(routes!(groups::unfreeze))
        .routes(routes!(groups::set_revertible))
        .routes(routes!(groups::commit_pair))
        .routes(routes!(groups::revert_pair))
        .routes(routes!(groups::commit_by_seqnum))
        .routes(routes!(groups::revert_by_seqnum))
        .routes(routes!(sgc::set_capacity))
        .routes(routes!(sgc::list, sgc::take))
        .routes(routes!(sgc::get, sgc::delete))
        .routes(routes!(sgc::set_retention))
        .routes(routes!(sgc::recover))
        .routes(routes!(sgc::diff))
        .routes(routes!(sgc::list_policies, sgc::create_policy))
        .routes(routes!(
            sgc::get_policy,
            sgc::change_policy,
            sgc::delete_policy
        ))
        .routes(routes!(tokens::rotate))
        .routes(routes!(openapi::serve))
        .routes(routes!(metrics::serve))
}

/// Which listener a request came in on: handlers that describe the API
/// (the OpenAPI document) answer for the listener they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `DATA_DIR/tzero.sock`: no token.
    UnixSocket,
    /// The TCP API: bearer token.
    Tcp,
}

/// The largest request body: the biggest real one, a group of many pairs, is
/// a few KiB; anything near this is a mistake or an attack, refused (413)
/// before it is buffered.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The API routes with their fallbacks, no authentication.
fn api_routes(engine: Engine, listener: Listener, tokens: Arc<TokenStore>) -> Router {
    let (routes, _) = api_router().split_for_parts();
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(metrics::track))
        .with_state(engine)
        .layer(Extension(listener))
        .layer(Extension(tokens))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The API and the console without authentication, for the unix socket.
pub fn router(engine: Engine, tokens: Arc<TokenStore>) -> Router {
    api_routes(engine, Listener::UnixSocket, tokens).merge(console::router())
}

/// The API behind `Authorization: Bearer <token>` and its role, for TCP;
/// the console's static assets are merged after the token layer, so they
/// need none.
pub fn router_with_token(engine: Engine, tokens: Arc<TokenStore>) -> Router {
    api_routes(engine, Listener::Tcp, tokens.clone())
        .layer(middleware::from_fn_with_state(tokens, require_token))
        .merge(console::router())
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
            ErrorCode::InternalError,
            format!("engine task failed: {join}"),
        )),
    }
}

/// Checks the bearer token and that its role may send this request. The
/// role goes into the response's extensions, for the audit line.
async fn require_token(
    State(tokens): State<Arc<TokenStore>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let role = match given.map(|t| tokens.role_of(t)) {
        Some(Some(role)) => role,
        Some(None) => {
            return unauthorized("wrong API token (the admin token is in DATA_DIR/api-token; `tzero token rotate ROLE` makes a new one)")
        }
        None => {
            return unauthorized(
                "missing 'Authorization: Bearer <token>' header (the admin token is in DATA_DIR/api-token)",
            )
        }
    };
    let mut response = if role.may(req.method()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "the {} token can only read (GET and HEAD); {} {} needs the admin token",
                role.as_str(),
                req.method(),
                req.uri().path()
            ),
        )
        .into_response()
    };
    response.extensions_mut().insert(role);
    response
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).into_response()
}

/// The role a TCP request was served as (set by the token check).
pub fn served_role(response: &Response) -> Option<Role> {
    response.extensions().get::<Role>().copied()
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RouteNotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}
