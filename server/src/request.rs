//! Client request ids: the `Idempotency-Key` header of an HTTP write, as the
//! [`RequestId`] every command of the request is proposed with (applied at most once).

use axum::http::HeaderMap;
use quorumdb_state::system::{RequestId, fingerprint};

use crate::error::ServerError;

/// The `Idempotency-Key` header of a write, if any, as a request id whose fingerprint covers
/// `parts` (what the request asks): re-sending the request applies it at most once, and the
/// same key on a different request is refused.
pub(crate) fn request_id(headers: &HeaderMap, parts: &[&[u8]]) -> Result<Option<RequestId>, ServerError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| ServerError::BadRequest("the Idempotency-Key header must be ASCII".into()))?;
    RequestId::new(key, fingerprint(parts))
        .map(Some)
        .map_err(|e| ServerError::BadRequest(format!("Idempotency-Key: {e}")))
}
