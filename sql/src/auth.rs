//! Roles, what they keep of their passwords, and what they may do.
//!
//! Owns the role definitions the catalog holds ([`RoleDef`], changed only by
//! `CREATE ROLE`/`ALTER ROLE`/`DROP ROLE`/`GRANT`/`REVOKE` through the log), the SCRAM-SHA-256
//! verifier that is all a role keeps of its password ([`Verifier`]: the password itself is
//! never in a command, the catalog, a backup or a log line), the built-in roles
//! ([`ADMIN`], [`READWRITE`], [`READONLY`]), and what a request may need ([`Need`]). What
//! statements need is [`crate::planner::needs_of`]; whether a role has it,
//! [`crate::catalog::Catalog::authorize`].
//!
//! Authentication is on once any role can log in with a password; until then (a demo on
//! loopback) every surface lets everyone in, as before.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};

/// Everything: all tables, DDL, roles, cluster administration, debug controls, backups.
pub const ADMIN: &str = "admin";
/// Reads and writes every table, and DDL.
pub const READWRITE: &str = "readwrite";
/// Reads every table.
pub const READONLY: &str = "readonly";
/// The built-in roles: they exist in every catalog, and a role is granted them as a member.
pub const BUILTIN_ROLES: [&str; 3] = [ADMIN, READWRITE, READONLY];

/// The first format version whose commands may carry roles ([`crate::command::Step::PutRole`]).
pub const ROLES_FORMAT: quorumdb_state::format::FormatVersion = 3;

/// A table privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    pub const ALL: [Privilege; 4] = [Self::Select, Self::Insert, Self::Update, Self::Delete];

    /// This privilege's bit in [`RoleDef::grants`].
    pub fn bit(self) -> u8 {
        match self {
            Self::Select => 1,
            Self::Insert => 2,
            Self::Update => 4,
            Self::Delete => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// A role as the catalog keeps it (under its name in [`Catalog::roles`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    /// May log in (with its password).
    pub login: bool,
    /// What the role keeps of its password; `None`: it cannot log in with one.
    #[serde(default)]
    pub verifier: Option<Verifier>,
    /// Built-in roles this role is a member of.
    #[serde(default)]
    pub member_of: BTreeSet<String>,
    /// Table privileges: table id → bits of [`Privilege::bit`].
    #[serde(default)]
    pub grants: BTreeMap<u32, u8>,
}

/// A SCRAM-SHA-256 verifier (RFC 5802/7677, as PostgreSQL stores one): enough to check a
/// SCRAM proof or a password, never enough to log in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub iterations: u32,
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    #[serde(with = "serde_bytes")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "serde_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never printed: a verifier is not a password, but it is a secret.
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// PostgreSQL's default iteration count.
    pub const ITERATIONS: u32 = 4096;

    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<Self> {
        let mut salt = vec![0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| SqlError::Internal("no random bytes for a password salt".into()))?;
        Ok(Self::with_salt(password, salt, Self::ITERATIONS))
    }

    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref()).as_ref().to_vec();
        let server_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Server Key").as_ref().to_vec();
        Self { iterations, salt, stored_key, server_key }
    }

    /// Whether `password` is the one this verifier was made from (in constant time).
    pub fn check(&self, password: &str) -> bool {
        let other = Self::with_salt(password, self.salt.clone(), self.iterations);
        let diff = other.stored_key.iter().zip(&self.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0 && other.stored_key.len() == self.stored_key.len()
    }
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password.as_bytes(), &mut out);
    out
}

/// What running a statement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A privilege on a table (by name).
    Table(String, Privilege),
    /// A privilege on every table, the KV table included: a built-in role's (`readonly` for
    /// SELECT, `readwrite` for the others).
    AnyTable(Privilege),
    /// Creating, changing or dropping tables and indexes.
    Ddl,
    /// Roles, cluster administration, debug controls, backups.
    Admin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_its_password_and_prints_no_key() {
        let v = Verifier::new("s3cret").unwrap();
        assert!(v.check("s3cret"));
        assert!(!v.check("s3cret "));
        assert!(!v.check(""));
        assert_eq!(v.stored_key.len(), 32);
        assert_ne!(Verifier::new("s3cret").unwrap().salt, v.salt, "a fresh salt each time");
        let shown = format!("{v:?}");
        assert!(!shown.contains(&format!("{:?}", v.stored_key)), "{shown}");
    }
}
