//! Entry point of the `api_json` fuzz target in `/fuzz`: arbitrary bytes as
//! each request body of the API, parsed as the handlers parse them.
//!
//! axum's `Json` extractor buffers the body (at most [`MAX_BODY_BYTES`]) and
//! calls `Json::from_bytes`; a rejection becomes an [`ApiError`] through
//! `From<JsonRejection>`. This does the same without a server, then what the
//! handlers do with a parsed body before the engine sees it. None of it may
//! panic; public so the fuzz crate (outside the workspace) can call it.

use std::time::Duration;

use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{groups, ApiError, MAX_BODY_BYTES};
use crate::api_types::{
    CreatePool, CreateVolume, ErrorCode, Establish, EstablishGroup, Freeze, Resync, Reverse,
    SetRate, TargetInhibit, Unfreeze,
};
use crate::sgc::types as sgc;

/// Feeds `data` to every request body type.
pub fn request_bodies(data: &[u8]) {
    if data.len() > MAX_BODY_BYTES {
        // Refused by the body limit before any parsing.
        return;
    }
    body::<CreateVolume>(data, |_| {});
    body::<CreatePool>(data, |_| {});
    body::<Establish>(data, |_| {});
    body::<EstablishGroup>(data, |g| {
        if g.freeze {
            tzero_engine::freeze_deadline(Duration::from_secs(g.freeze_timeout_secs));
        }
    });
    body::<Freeze>(data, |f| {
        if groups::name_some(&f.volumes, "freeze").is_ok() {
            tzero_engine::freeze_deadline(Duration::from_secs(f.timeout_secs));
        }
    });
    body::<Unfreeze>(data, |u| {
        let _ = groups::name_some(&u.volumes, "unfreeze");
    });
    body::<TargetInhibit>(data, |_| {});
    body::<Resync>(data, |_| {});
    body::<Reverse>(data, |_| {});
    body::<SetRate>(data, |_| {});
    // Safeguarded Copy.
    body::<sgc::SetSafeguarded>(data, |_| {});
    body::<sgc::TakeBackups>(data, |_| {});
    body::<sgc::SetRetention>(data, |_| {});
    body::<sgc::Recover>(data, |_| {});
    body::<sgc::CreatePolicy>(data, |_| {});
    body::<sgc::ChangePolicy>(data, |_| {});
}

/// Parses `data` as a `T` body. A refusal must be the client's fault (a 4xx
/// with a body code); an accepted body must survive the client's side of the
/// wire: serialised as the CLI sends it, it parses again to the same JSON.
fn body<T: DeserializeOwned + Serialize>(data: &[u8], then: impl FnOnce(&T)) {
    match Json::<T>::from_bytes(data) {
        Ok(Json(v)) => {
            let sent = serde_json::to_vec(&v).expect("a parsed body serialises");
            let Json(again) = Json::<T>::from_bytes(&sent)
                .unwrap_or_else(|e| panic!("re-parsing {:?}: {e}", String::from_utf8_lossy(&sent)));
            assert_eq!(
                serde_json::to_vec(&again).expect("a parsed body serialises"),
                sent,
                "a body changed on its way through the client"
            );
            then(&v);
        }
        Err(rejection) => {
            let e = ApiError::from(rejection);
            assert!(e.status.is_client_error(), "{e:?}");
            assert!(
                matches!(e.code, ErrorCode::MalformedJson | ErrorCode::InvalidBody),
                "{e:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_good_and_bad_survive() {
        // A valid body of each kind, its truncations, and some junk.
        let good: &[&[u8]] = &[
            br#"{"name":"v1","capacity_bytes":1048576,"track_size":65536}"#,
            br#"{"volumes":["a"],"timeout_secs":9223372036854775807}"#,
            br#"{"pairs":[{"source":"a","target":"b"}],"freeze":true,"freeze_timeout_secs":9.2e18}"#,
            br#"{"copy_rate":4665.0}"#,
        ];
        for b in good {
            for n in 0..=b.len() {
                request_bodies(&b[..n]);
            }
        }
        request_bodies(b"\xff\xfe{]");
        // The property the fuzzer relies on: a valid body is accepted.
        assert!(Json::<Freeze>::from_bytes(good[1]).is_ok());
        assert!(Json::<SetRate>::from_bytes(good[3]).is_ok());
        assert!(Json::<SetRate>::from_bytes(br#"{"copy_rate":-1}"#).is_err());
    }
}
