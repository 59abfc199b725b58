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
//!
//! Guessing is throttled per client address ([`Throttle`]): after a few failed logins an
//! address is refused outright — right password or not — for a time that doubles with each
//! further failure. Bearer tokens ([`issue_token`]) are signed with a key derived from the
//! role's SCRAM verifier, so every node can check them and a new password revokes them all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use parking_lot::Mutex;
use quorumdb_sql::catalog::Catalog;
use ring::{digest, hmac};

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
    pub throttle: Throttle,
}

/// Failed logins a client address may make before it is locked out.
const FREE_FAILURES: u32 = 10;
/// The longest lock-out.
const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// Addresses tracked before the oldest quiet ones are forgotten.
const TRACKED_LIMIT: usize = 100_000;

/// Failed logins per client address: after [`FREE_FAILURES`], every further failure locks the
/// address out for 1 s, 2 s, 4 s … up to [`MAX_LOCKOUT`]; a successful login clears it. Per
/// node, in memory (a restart forgets).
#[derive(Debug, Default)]
pub struct Throttle {
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    /// Refuses a login attempt from a locked-out address (before any password is looked at).
    pub fn admit(&self, addr: Option<IpAddr>, surface: &'static str) -> Result<(), ServerError> {
        let Some(addr) = addr else { return Ok(()) };
        let now = Instant::now();
        let until = self.by_addr.lock().get(&addr).and_then(|f| f.locked_until).filter(|u| *u > now);
        match until {
            None => Ok(()),
            Some(u) => {
                metrics::counter!("quorumdb_auth_throttled_total", "surface" => surface).increment(1);
                Err(ServerError::Unauthenticated(format!(
                    "too many failed logins from this address: try again in {} s",
                    (u - now).as_secs() + 1
                )))
            }
        }
    }

    pub fn failed(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        let now = Instant::now();
        let mut map = self.by_addr.lock();
        if map.len() >= TRACKED_LIMIT {
            map.retain(|_, f| now.duration_since(f.last) < MAX_LOCKOUT);
        }
        let f = map.entry(addr).or_insert(Failures { count: 0, last: now, locked_until: None });
        // A quiet address starts over.
        if now.duration_since(f.last) > 10 * MAX_LOCKOUT {
            *f = Failures { count: 0, last: now, locked_until: None };
        }
        f.count += 1;
        f.last = now;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            let lockout = Duration::from_secs(1u64 << doublings).min(MAX_LOCKOUT);
            f.locked_until = Some(now + lockout);
            tracing::warn!(%addr, failures = f.count, lockout_s = lockout.as_secs(), "locking out an address after failed logins");
        }
    }

    pub fn succeeded(&self, addr: Option<IpAddr>) {
        if let Some(addr) = addr {
            self.by_addr.lock().remove(&addr);
        }
    }
}

/// A user and the fingerprint of a password verified for it.
type Verified = (String, [u8; 32]);

impl Authenticator {
    /// Whether `user` may log in with `password` now, from `addr` (throttled); the error never
    /// says which was wrong.
    pub fn check(
        &self,
        catalog: &Catalog,
        addr: Option<IpAddr>,
        surface: &'static str,
        user: &str,
        password: &str,
    ) -> Result<(), ServerError> {
        self.throttle.admit(addr, surface)?;
        let outcome = self.check_password(catalog, surface, user, password);
        match outcome {
            Ok(()) => self.throttle.succeeded(addr),
            Err(_) => self.throttle.failed(addr),
        }
        outcome
    }

    fn check_password(
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

// ---------------------------------------------------------------------------------------------
// Bearer tokens

/// Tokens are valid for at most this long.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const TOKEN_PREFIX: &str = "qdb1";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The signing key of `user`'s tokens: HMAC-SHA-256 keyed with its SCRAM server key (a secret
/// every node holds in the replicated catalog; a new password makes a new one).
fn token_key(catalog: &Catalog, user: &str) -> Option<hmac::Key> {
    let verifier = catalog.login_verifier(user)?;
    let derive = hmac::Key::new(hmac::HMAC_SHA256, &verifier.server_key);
    Some(hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&derive, b"quorumdb bearer token").as_ref()))
}

/// A token for `user`, valid for `ttl`: `qdb1.<user, base64url>.<expiry>.<signature>`.
pub fn issue_token(catalog: &Catalog, user: &str, ttl: Duration) -> Result<(String, u64), ServerError> {
    let key = token_key(catalog, user).ok_or_else(|| ServerError::Unauthenticated("no such login".into()))?;
    let expires = now_secs() + ttl.min(MAX_TOKEN_TTL).as_secs();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = format!("{TOKEN_PREFIX}.{}.{expires}", b64.encode(user));
    let mac = hmac::sign(&key, body.as_bytes());
    Ok((format!("{body}.{}", b64.encode(mac.as_ref())), expires))
}

/// The user a token was issued to, if it is genuine, unexpired, and signed with the user's
/// current password.
pub fn check_token(catalog: &Catalog, token: &str) -> Result<String, ServerError> {
    let bad = || ServerError::Unauthenticated("invalid or expired token".into());
    let (body, mac) = token.rsplit_once('.').ok_or_else(bad)?;
    let mut parts = body.split('.');
    let (Some(TOKEN_PREFIX), Some(user), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let user = String::from_utf8(b64.decode(user).map_err(|_| bad())?).map_err(|_| bad())?;
    let mac = b64.decode(mac).map_err(|_| bad())?;
    let key = token_key(catalog, &user).ok_or_else(bad)?;
    hmac::verify(&key, body.as_bytes(), &mac).map_err(|_| bad())?;
    if expires.parse::<u64>().map_err(|_| bad())? <= now_secs() {
        return Err(bad());
    }
    Ok(user)
}

/// `Authorization: Bearer …`: the token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
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
        assert_eq!(bearer_token(&h), Some("x"));
    }

    #[test]
    fn an_address_is_locked_out_after_failures_and_cleared_by_a_success() {
        let t = Throttle::default();
        let a = Some("10.1.2.3".parse().unwrap());
        let b = Some("10.1.2.4".parse().unwrap());
        for _ in 0..FREE_FAILURES {
            assert!(t.admit(a, "test").is_ok());
            t.failed(a);
        }
        assert!(t.admit(a, "test").is_ok(), "the free failures do not lock");
        t.failed(a);
        let err = t.admit(a, "test").unwrap_err().to_string();
        assert!(err.contains("too many failed logins"), "{err}");
        assert!(t.admit(b, "test").is_ok(), "another address is not affected");
        assert!(t.admit(None, "test").is_ok());
        t.succeeded(a);
        assert!(t.admit(a, "test").is_ok());
    }

    #[test]
    fn tokens_check_out_until_they_expire_or_the_password_changes() {
        use quorumdb_sql::auth::{RoleDef, Verifier};
        let mut catalog = Catalog::default();
        let role = |pw: &str| RoleDef { login: true, verifier: Some(Verifier::new(pw).unwrap()), ..RoleDef::default() };
        catalog.roles.insert("alice".into(), role("one"));
        let (token, _) = issue_token(&catalog, "alice", Duration::from_secs(60)).unwrap();
        assert_eq!(check_token(&catalog, &token).unwrap(), "alice");
        // Tampering with any part fails.
        let forged = token.replacen("qdb1.", "qdb1.x", 1);
        assert!(check_token(&catalog, &forged).is_err());
        let (body, _) = token.rsplit_once('.').unwrap();
        assert!(check_token(&catalog, &format!("{body}.AAAA")).is_err());
        let later = body.rsplit_once('.').unwrap().0.to_string() + ".99999999999";
        let (_, mac) = token.rsplit_once('.').unwrap();
        assert!(check_token(&catalog, &format!("{later}.{mac}")).is_err(), "a changed expiry");
        // Expired.
        let (old, _) = issue_token(&catalog, "alice", Duration::ZERO).unwrap();
        assert!(check_token(&catalog, &old).is_err());
        // A new password revokes it.
        catalog.roles.insert("alice".into(), role("two"));
        assert!(check_token(&catalog, &token).is_err());
    }
}
