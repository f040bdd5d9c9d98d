//! `GET /metrics` (Prometheus text format; see `crate::metrics`) and the
//! middleware that counts every API request by route template, method and
//! status.
//!
//! The route label is axum's `MatchedPath` (`/v1/flash/{source}/{target}`),
//! never the raw path, and an unknown method counts as `other`: what a client
//! sends cannot grow the number of series.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tzero_engine::Engine;

use super::{blocking, ApiResult};
use crate::metrics::{global, CONTENT_TYPE};

/// The metrics, in the Prometheus text exposition format (0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "metrics", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4 (metric names, types and labels: README, Metrics)",
        body = String, content_type = "text/plain")))]
pub(super) async fn serve(State(engine): State<Engine>) -> ApiResult<Response> {
    let text = blocking(move || Ok::<_, Infallible>(global().render(&engine))).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Counts one request once it is answered.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let began = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let response = next.run(req).await;
    global().api_request(&route, method, response.status().as_u16(), began);
    response
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_as_text_plain() {
        let doc = super::super::openapi_document();
        let ok = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(ok["text/plain"]["schema"]["type"] == "string", "{ok}");
        let unauthorized = &doc["paths"]["/metrics"]["get"]["responses"]["401"];
        assert!(unauthorized.is_object(), "the TCP token applies here too");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let odd = Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
