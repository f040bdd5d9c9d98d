//! The audit trail: one structured log line per admin action (every request
//! that is not a GET), and one tracing span per API request so that
//! whatever the handlers log carries the request's method and route.
//!
//! The line says who (`caller`: `socket` for the unix socket, `token` for
//! TCP with the bearer token), what (`method`, `route` as the template axum
//! matched, the path parameters, the query and a compact copy of the JSON
//! body), and how it ended (`status`, the error `code` on failure,
//! `duration_ms`). It is written after the response is ready, so a request
//! refused before any handler ran (bad token, bad body, unknown route) is
//! logged like any other.
//!
//! Installed on the outside of each router (`serve.rs`), so it also sees
//! the token check's refusals; `Router::layer` still runs it after routing,
//! where `MatchedPath` is known.
//!
//! Each admin action's line also goes, as a JSON record with the token's
//! role, to the durable audit log (`crate::audit`) before the reply is
//! sent; while that log cannot be written, admin actions are refused
//! before they run (503 `audit_unavailable`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tracing::{field, Instrument};

use crate::api_types::ErrorCode;
use crate::audit::AuditLog;

/// Who sent a request: what the router it came through trusts it for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The unix socket (file-system access to the data directory).
    Socket,
    /// TCP, behind the bearer token.
    Token,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Socket => "socket",
            Caller::Token => "token",
        }
    }
}

/// Bodies larger than this are not copied into the log (nor buffered for
/// it): the API's bodies are a few hundred bytes, so only a misuse is
/// bigger, and the line stays one line.
const MAX_LOGGED_BODY: usize = 4096;
/// Error bodies read back for their code; ours are far smaller.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// What the logging layer of one listener knows.
#[derive(Debug, Clone)]
struct Audited {
    caller: Caller,
    log: Arc<AuditLog>,
}

/// Wraps `router` so that every request through it is logged as coming
/// from `caller` (who is also put in the request's extensions for
/// handlers that care), and every admin action is recorded in `log`.
pub fn logged(router: Router, caller: Caller, log: Arc<AuditLog>) -> Router {
    router.layer(middleware::from_fn_with_state(
        Audited { caller, log },
        log_request,
    ))
}

async fn log_request(State(audited): State<Audited>, mut req: Request, next: Next) -> Response {
    let caller = audited.caller;
    let start = Instant::now();
    req.extensions_mut().insert(caller);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let params = path_params(&route, req.uri().path());
    let query = req.uri().query().unwrap_or("").to_owned();
    let span = tracing::info_span!(
        "api",
        caller = caller.as_str(),
        method = %method,
        route = %route,
        status = field::Empty,
        latency_ms = field::Empty,
    );
    let admin = method != Method::GET && method != Method::HEAD;
    let path = req.uri().path().to_owned();
    let (req, args) = if admin {
        take_body_args(req).await
    } else {
        (req, String::new())
    };

    let audit_down = if admin {
        let log = audited.log.clone();
        tokio::task::spawn_blocking(move || log.ready())
            .await
            .unwrap_or_else(|e| Err(format!("audit task failed: {e}")))
            .err()
    } else {
        None
    };
    let response = match audit_down {
        // Fail closed: an action that could not be recorded is not done.
        Some(message) => crate::api::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuditUnavailable,
            message,
        )
        .into_response(),
        None => next.run(req).instrument(span.clone()).await,
    };
    let status = response.status();
    let (response, code) = if status.is_client_error() || status.is_server_error() {
        error_code(response).await
    } else {
        (response, String::new())
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    // Rounded to the microsecond: the log stays readable, and no request
    // of ours is shorter.
    let duration_ms = (ms * 1000.0).round() / 1000.0;
    span.record("status", status.as_u16());
    span.record("latency_ms", duration_ms);
    // The lines below go out inside the request's span. Entered with
    // `in_scope`, not a guard: a guard held across the audit append's
    // `.await` stays on the thread the task left, and the line written after
    // the task resumes on another worker would miss the span.
    if admin {
        // Absent values (`None`) leave their key out of the line.
        let param = |k: &str| {
            params
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.as_str())
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let role = match caller {
            Caller::Socket => "socket",
            Caller::Token => crate::api::served_role(&response).map_or("none", |r| r.as_str()),
        };
        let record = json!({
            "time": jiff::Timestamp::now().to_string(),
            "caller": caller.as_str(),
            "role": role,
            "action": format!("{method} {route}"),
            "path": path,
            "params": params.iter().map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "query": some(&query),
            "args": (!args.is_empty()).then(|| serde_json::from_str::<Value>(&args).unwrap_or_else(|_| Value::from(args.as_str()))),
            "status": status.as_u16(),
            "result": if status.is_success() { "ok" } else { "error" },
            "code": some(&code),
            "duration_ms": duration_ms,
        });
        let log = audited.log.clone();
        // The record is durable before the reply leaves; when it cannot be
        // written the action stands (it is done), and the log refuses the
        // next ones until it can be reopened.
        let _ = tokio::task::spawn_blocking(move || log.append(&record)).await;
        span.in_scope(|| {
            tracing::info!(
                target: "tzero::admin",
                caller = caller.as_str(),
                role,
                method = %method,
                route = %route,
                source = param("source"),
                target = param("target"),
                name = param("name"),
                query = some(&query),
                args = some(&args),
                status = status.as_u16(),
                code = some(&code),
                duration_ms,
                "admin action"
            )
        });
    } else {
        span.in_scope(|| tracing::debug!(status = status.as_u16(), duration_ms, "request"));
    }
    response
}

/// The `{param}` segments of `route`, paired with the request path's
/// segments (axum matched them, so they line up; the fallback has none).
fn path_params<'r>(route: &'r str, path: &str) -> Vec<(&'r str, String)> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(t, v)| {
            let name = t.strip_prefix('{')?.strip_suffix('}')?;
            Some((name, v.to_owned()))
        })
        .collect()
}

/// Reads a small body with a declared length, gives it back to the request
/// untouched, and returns it compacted for the log ("" when there is none
/// or it is too big; a body that is not JSON is logged as `<N bytes>`).
async fn take_body_args(req: Request) -> (Request, String) {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(len) = declared.filter(|&n| n > 0 && n <= MAX_LOGGED_BODY) else {
        return (req, String::new());
    };
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_LOGGED_BODY)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        // The client lied about the length or hung up: the handler would
        // have failed reading it too; let it, with an empty body.
        Err(_) => Bytes::new(),
    };
    let args = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v.to_string(),
        Err(_) => format!("<{len} bytes>"),
    };
    (Request::from_parts(parts, Body::from(bytes)), args)
}

/// The `error.code` of a failed response (`""` if it has none), the
/// response rebuilt with the same body.
async fn error_code(response: Response) -> (Response, String) {
    // Only a body of known, small size is read (ours are built from
    // bytes); anything else passes through unread.
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_ERROR_BODY as u64);
    if !small {
        return (response, String::new());
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
    else {
        return (Response::from_parts(parts, Body::empty()), String::new());
    };
    let bytes = collected.to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (Response::from_parts(parts, Body::from(bytes)), code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_follow_the_template() {
        let p = path_params("/v1/flash/{source}/{target}/resync", "/v1/flash/a/b/resync");
        assert_eq!(p, [("source", "a".to_owned()), ("target", "b".to_owned())]);
        assert!(path_params("unmatched", "/v1/nope").is_empty());
        assert_eq!(
            path_params("/v1/volumes/{name}", "/v1/volumes/v1"),
            [("name", "v1".to_owned())]
        );
    }
}
