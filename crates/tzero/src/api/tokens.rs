//! API tokens (`/v1/tokens`): `tzero token rotate ROLE`. The new token is in
//! the reply only; the daemon keeps its digest (`crate::tokens`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use super::openapi::codes;
use super::{blocking, ApiError, ApiResult};
use crate::api_types::{ErrorBody, ErrorCode as C, RotatedToken, TokenRole};
use crate::tokens::{Role, TokenStore};

/// The `{role}` of a token route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct RolePath {
    /// `admin` or `monitor`.
    role: TokenRole,
}

/// Replace a role's token with a new random one (the old one stops working).
#[utoipa::path(post, path = "/v1/tokens/{role}", tag = "tokens", operation_id = "rotateToken",
    params(RolePath),
    responses(
        (status = 200, description = "the new token, shown this once", body = RotatedToken),
        (status = 403, description = codes(&[C::Forbidden]), body = ErrorBody),
        (status = 500, description = codes(&[C::StorageError]), body = ErrorBody),
    ))]
pub(super) async fn rotate(
    Extension(tokens): Extension<Arc<TokenStore>>,
    Extension(listener): Extension<super::Listener>,
    role: Result<Path<RolePath>, PathRejection>,
) -> ApiResult<Json<RotatedToken>> {
    let Path(RolePath { role: wire }) = role?;
    // The security token is the second credential beside the admin token: the admin token
    // alone must not be able to make a new one. The unix socket needs access to the data
    // directory, which holds the security token's file anyway.
    if wire == TokenRole::Security && listener != super::Listener::UnixSocket {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            C::Forbidden,
            "the security token can be rotated only over the unix socket (tzero token rotate security, on the daemon's machine)",
        ));
    }
    let role = match wire {
        TokenRole::Admin => Role::Admin,
        TokenRole::Monitor => Role::Monitor,
        TokenRole::Security => Role::Security,
    };
    let token = blocking(move || {
        tokens.rotate(role).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                C::StorageError,
                format!("cannot store the new {} token: {e:#}", role.as_str()),
            )
        })
    })
    .await?;
    tracing::info!(role = role.as_str(), "API token rotated");
    Ok(Json(RotatedToken { role: wire, token }))
}
