//! The OpenAPI 3.1 document (`GET /v1/openapi.json`), generated from the
//! code: each route's operation comes from its handler's `#[utoipa::path]`
//! and the schemas from `api_types`' `ToSchema` derives, gathered by the same
//! `routes!` list that builds the router ([`super::api_router`]).
//!
//! The error responses every operation shares by its shape (a JSON body, a
//! path or query parameter, the bearer token) are added here, in
//! [`with_request_errors`], from the operation itself; each handler lists the
//! codes of its own engine errors.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::State;
use axum::Extension;
use axum::Json;
use serde_json::Value;
use tzero_engine::Engine;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::Listener;
use crate::api_types::ErrorCode;

/// What every operation gets before the routes are added: info, the bearer
/// security scheme, the error schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tzero API",
        description = "Manage tzero volumes, extent pools and FlashCopy relationships. Over TCP every request needs 'Authorization: Bearer <token>': the admin token (DATA_DIR/api-token) may do anything, a monitor token only GET and HEAD (403 `forbidden` otherwise); the unix socket DATA_DIR/tzero.sock needs none. Every admin action (any other method) is recorded in the audit log DATA_DIR/audit.log before it is answered; while that log cannot be written, admin actions get 503 `audit_unavailable`. Every error has the ErrorBody shape with a stable code (ErrorCode); an unknown route answers 404 `route_not_found`, a known route with another method 405 `method_not_allowed`. An operation that destages host writes on the caller's behalf can also fail as host I/O does: 400 `out_of_range`, 404 `volume_not_found`, 409 `write_inhibited` or `relationship_failed`, 507 `no_space`."
    ),
    components(schemas(crate::api_types::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "volumes", description = "volumes (lsfbvol, mkfbvol, rmfbvol)"),
        (name = "pools", description = "extent pools (lsextpool, mkextpool, rmextpool)"),
        (name = "flash", description = "FlashCopy relationships (lsflash, mkflash, rmflash, resyncflash, reverseflash)"),
        (name = "groups", description = "consistency groups, freeze, revertible resyncs (commitflash, revertflash)"),
        (name = "tokens", description = "API tokens by role (tzero token rotate)"),
        (name = "meta", description = "this document"),
    )
)]
struct Base;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document the routes are added to.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The description of an error response: the codes it carries.
pub(super) fn codes(list: &[ErrorCode]) -> String {
    let list: Vec<String> = list.iter().map(|c| format!("`{}`", c.as_str())).collect();
    list.join(", ")
}

fn error_response(description: String) -> Response {
    let schema = RefOr::Ref(Ref::from_schema_name("ErrorBody"));
    let mut r = Response::new(description);
    r.content
        .insert("application/json".to_owned(), Content::new(Some(schema)));
    r
}

/// The failures of the engine itself, for every operation that calls a
/// fallible engine operation: `responses(..., EngineFailure)`.
pub(super) struct EngineFailure;

impl utoipa::IntoResponses for EngineFailure {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        use ErrorCode as C;
        let server = [C::StorageError, C::CatalogError, C::EnginePoisoned];
        BTreeMap::from([
            ("500".to_owned(), error_response(codes(&server)).into()),
            (
                "503".to_owned(),
                error_response(codes(&[C::ShuttingDown])).into(),
            ),
        ])
    }
}

/// A route naming a relationship `{source}/{target}` that does not exist:
/// `responses(..., PairNotFound)`.
pub(super) struct PairNotFound;

impl utoipa::IntoResponses for PairNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let missing = [ErrorCode::VolumeNotFound, ErrorCode::RelationshipNotFound];
        BTreeMap::from([("404".to_owned(), error_response(codes(&missing)).into())])
    }
}

/// Adds `code` to the error response `status` of `op`, creating it if needed.
fn add_error(op: &mut Value, status: u16, code: ErrorCode) {
    let response = &mut op["responses"][status.to_string()];
    if response.is_null() {
        *response =
            serde_json::to_value(error_response(String::new())).expect("a response serializes");
    }
    let code = format!("`{}`", code.as_str());
    let description = response["description"].as_str().unwrap_or_default();
    if !description.contains(&code) {
        let joined = if description.is_empty() {
            code
        } else {
            format!("{description}, {code}")
        };
        response["description"] = Value::String(joined);
    }
}

/// utoipa writes an optional body (`Option<Json<T>>`) as `oneOf [null, T]`;
/// but the body is left out, never `null` (which the handler refuses), so the
/// schema is just `T`, not required.
fn optional_body_is_absent_not_null(body: &mut Value) {
    if body["required"] == true {
        return;
    }
    let Some(media) = body["content"].as_object_mut() else {
        return;
    };
    for m in media.values_mut() {
        let Some(one_of) = m["schema"]["oneOf"].as_array() else {
            continue;
        };
        if let [a, b] = one_of.as_slice() {
            let other = if a["type"] == "null" { b } else { a };
            if a["type"] == "null" || b["type"] == "null" {
                m["schema"] = other.clone();
            }
        }
    }
}

/// The error responses an operation has by its shape rather than by what it
/// does: body, path and query rejections, the token, and a lost engine task.
fn with_request_errors(mut doc: Value) -> Value {
    use ErrorCode as C;
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops
            .iter_mut()
            .filter(|(_, op)| op.get("responses").is_some())
        {
            if method != "get" && method != "head" {
                add_error(op, 403, C::Forbidden);
                add_error(op, 503, C::AuditUnavailable);
            }
            if let Some(body) = op.get_mut("requestBody") {
                optional_body_is_absent_not_null(body);
                add_error(op, 400, C::MalformedJson);
                add_error(op, 413, C::BodyTooLarge);
                add_error(op, 415, C::UnsupportedMediaType);
                add_error(op, 422, C::InvalidBody);
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for (place, code) in [("path", C::InvalidPath), ("query", C::InvalidQuery)] {
                if params.iter().any(|p| p["in"] == place) {
                    add_error(op, 400, code);
                }
            }
            add_error(op, 401, C::Unauthorized);
            add_error(op, 500, C::InternalError);
        }
    }
    doc
}

/// The OpenAPI document of this API.
pub fn openapi_document() -> Value {
    let (_, doc) = super::api_router().split_for_parts();
    let mut doc = with_request_errors(serde_json::to_value(doc).expect("the document serializes"));
    space_efficient_needs_pool(&mut doc);
    doc
}

/// A rule between two fields, which a derive cannot state: a space-efficient
/// volume is allocated from an extent pool (`needs_pool` otherwise).
fn space_efficient_needs_pool(doc: &mut Value) {
    let schema = &mut doc["components"]["schemas"]["CreateVolume"];
    if let Some(schema) = schema.as_object_mut() {
        schema.insert(
            "if".to_owned(),
            serde_json::json!({"properties": {"space_efficient": {"const": true}}, "required": ["space_efficient"]}),
        );
        schema.insert(
            "then".to_owned(),
            serde_json::json!({"properties": {"pool": {"type": "string"}}, "required": ["pool"]}),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(super) async fn serve(
    State(engine): State<Engine>,
    Extension(listener): Extension<Listener>,
) -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    let mut doc = DOC.get_or_init(openapi_document).clone();
    with_capacity_limit(&mut doc, engine.max_volume_capacity());
    if listener == Listener::UnixSocket {
        without_token(&mut doc);
    }
    Json(doc)
}

/// The unix socket asks for no token: its document says so, so that a
/// client generated from it sends none and expects no 401.
fn without_token(doc: &mut Value) {
    if let Some(doc) = doc.as_object_mut() {
        doc.remove("security");
    }
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                responses.remove("401");
                // Roles are the token's: the socket may do anything.
                responses.remove("403");
            }
        }
    }
    if let Some(schemes) = doc["components"]
        .get_mut("securitySchemes")
        .and_then(Value::as_object_mut)
    {
        schemes.clear();
    }
}

/// The document describes this daemon: a volume's capacity is bounded by the
/// data directory's file system too (ext4 holds no file of 16 TiB), so the
/// schema's maximum is that bound, and a client that keeps to the document
/// is never refused for size.
fn with_capacity_limit(doc: &mut Value, max: u64) {
    let capacity =
        &mut doc["components"]["schemas"]["CreateVolume"]["properties"]["capacity_bytes"];
    if capacity.is_object() {
        capacity["maximum"] = Value::from(max);
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;

    /// Every operation of the document, as (method, path).
    fn operations(doc: &Value) -> Vec<(Method, String)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if let Ok(m) = method.to_uppercase().parse::<Method>() {
                    ops.push((m, path.clone()));
                }
            }
        }
        ops
    }

    /// Sends one request to the real router; returns status and error code.
    async fn call(app: &axum::Router, method: Method, path: &str) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
    }

    /// The document and the router come from one `routes!` list; this checks
    /// it against the router that serves: every documented operation is
    /// routed, and every other method on a documented path is refused as the
    /// router refuses an undocumented one.
    #[tokio::test]
    async fn document_matches_the_router() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine =
            tzero_engine::Engine::open_dir(dir.path(), Default::default()).expect("engine");
        let tokens = crate::tokens::TokenStore::open(dir.path()).expect("tokens");
        let app = super::super::router(engine.clone(), std::sync::Arc::new(tokens));
        let doc = openapi_document();
        let ops = operations(&doc);
        assert!(ops.len() >= 20, "{ops:?}");
        let concrete = |p: &str| p.replace(['{', '}'], "");
        for (method, path) in &ops {
            let (status, code) = call(&app, method.clone(), &concrete(path)).await;
            assert!(
                !["route_not_found", "method_not_allowed"].contains(&code.as_str()),
                "{method} {path} is documented but not routed ({status} {code})"
            );
            let documented = &doc["paths"][path];
            for other in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
            ] {
                if documented[other.as_str().to_lowercase()].is_object() {
                    continue;
                }
                let (status, code) = call(&app, other.clone(), &concrete(path)).await;
                assert_eq!(
                    (status, code.as_str()),
                    (405, "method_not_allowed"),
                    "{other} {path} is routed but not documented"
                );
            }
        }
        let (status, code) = call(&app, Method::GET, "/v1/nothing").await;
        assert_eq!((status, code.as_str()), (404, "route_not_found"));
        engine.shutdown().expect("shutdown");
    }

    /// Every code the mapping functions can return is an `ErrorCode`; each is
    /// listed in the document's `ErrorCode` schema and named outside it, by a
    /// route's responses or the document's description.
    #[test]
    fn document_names_every_error_code() {
        let doc = openapi_document();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let listed = doc["components"]["schemas"]["ErrorCode"]["enum"].clone();
        let mut elsewhere = doc.clone();
        elsewhere["components"]["schemas"]
            .as_object_mut()
            .expect("schemas")
            .remove("ErrorCode");
        let elsewhere = elsewhere.to_string();
        for code in ErrorCode::ALL {
            let code = code.as_str();
            assert!(
                listed.as_array().is_some_and(|l| l.contains(&json!(code))),
                "{code} not in the ErrorCode schema: {listed}"
            );
            assert!(
                elsewhere.contains(&format!("`{code}`")),
                "no route documents {code}"
            );
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let resync = &doc["paths"]["/v1/flash/{source}/{target}/resync"]["post"]["requestBody"];
        assert_eq!(
            resync["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Resync",
            "{resync}"
        );
        let est = &doc["paths"]["/v1/flash"]["post"]["responses"];
        assert!(
            est["409"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("`cycle`")),
            "{est}"
        );
        assert_eq!(
            est["409"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
