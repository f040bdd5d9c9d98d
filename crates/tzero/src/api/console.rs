//! The web console: a static page, its script and style sheet, compiled into the binary
//! (`crates/tzero/console/`), served at `/` next to the API on both routers.
//!
//! The assets carry no data, so they are served without the token; every figure the page shows
//! comes from `/v1/...` requests it makes with `Authorization: Bearer <token>`, the token typed
//! into the page and kept in `sessionStorage` (never in a URL, never sent to another origin).
//! The content security policy keeps it that way: scripts, styles and requests only from this
//! origin, no inline script, no framing.
//!
//! The console is not part of the `/v1` API, so it is not in the OpenAPI document.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// Same origin only; no inline script; the canvas needs nothing more.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One asset with its type and the headers every asset gets.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A new daemon binary brings new assets: never serve an old copy.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

/// The console's routes; merged outside the token layer by [`super::router_with_token`].
pub(super) fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}
