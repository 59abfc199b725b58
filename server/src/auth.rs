//! Logins, for every surface: checking a user's password against its role's SCRAM verifier
//! ([`Authenticator`], with a cache so a client that sends HTTP Basic on every request does
//! not pay PBKDF2 on every request), the login a request carries ([`Principal`]), and HTTP
//! Basic credentials ([`basic_credentials`]). The main port's check of each route is
//! [`crate::http::guard`]; SQL text is checked by the engine against the catalog it runs on
//! ([`crate::sql::run`]); pgwire and RESP log in through their own protocols with the same
//! [`Authenticator`].
//!
//! Logins are required once the catalog has a role that can log in with a password
//! ([`quorumdb_sql::Engine`]'s catalog, `auth_required`); until then everyone is let in.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use parking_lot::Mutex;
use quorumdb_sql::catalog::Catalog;
use ring::digest;

use crate::error::ServerError;

/// The login a request was made with; `None` when the cluster requires none.
#[derive(Debug, Clone, Default)]
pub struct Principal(pub Option<String>);

impl Principal {
    pub fn user(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// How many verified passwords the cache keeps before it starts over.
const CACHE_LIMIT: usize = 10_000;

/// Checks passwords against the catalog's verifiers.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// `(user, SHA-256(salt ‖ password))` → the stored key it was verified against: a change of
    /// password (a new verifier) invalidates the entry. Only in memory, never a password.
    verified: Mutex<HashMap<Verified, Vec<u8>>>,
}

/// A user and the fingerprint of a password verified for it.
type Verified = (String, [u8; 32]);

impl Authenticator {
    /// Whether `user` may log in with `password` now; the error never says which was wrong.
    pub fn check(
        &self,
        catalog: &Catalog,
        surface: &'static str,
        user: &str,
        password: &str,
    ) -> Result<(), ServerError> {
        let Some(verifier) = catalog.login_verifier(user) else {
            return Err(failed(surface, user));
        };
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&verifier.salt);
        ctx.update(password.as_bytes());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ctx.finish().as_ref());
        let key = (user.to_string(), fingerprint);
        if self.verified.lock().get(&key).is_some_and(|k| *k == verifier.stored_key) {
            return Ok(());
        }
        if !verifier.check(password) {
            return Err(failed(surface, user));
        }
        let mut cache = self.verified.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, verifier.stored_key.clone());
        Ok(())
    }
}

fn failed(surface: &'static str, user: &str) -> ServerError {
    metrics::counter!("quorumdb_auth_failures_total", "surface" => surface).increment(1);
    tracing::info!(surface, user, "failed login");
    ServerError::Unauthenticated("wrong user name or password".into())
}

/// `Authorization: Basic …` (HTTP, and gRPC metadata of the same name): user and password.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A shared [`Authenticator`] for a node's surfaces.
pub fn authenticator() -> Arc<Authenticator> {
    Arc::new(Authenticator::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic YWxpY2U6cDpx".parse().unwrap()); // alice:p:q
        assert_eq!(basic_credentials(&h), Some(("alice".into(), "p:q".into())));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }
}
