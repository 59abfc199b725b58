//! QuorumDB's client commands, run by the `quorumdb` binary against a running cluster and never
//! part of a node: `quorumdb load` ([`load_command`]: files into a table through [`load`],
//! vectors through [`vectors`]), `quorumdb backup` and `quorumdb restore` ([`backup`]), and
//! the interactive SQL client `quorumdb shell` ([`shell`]).
//!
//! Owns the client side of these commands: their command lines, progress, output and errors
//! ([`error`]). It speaks to nodes only through their public surfaces (HTTP, the PostgreSQL
//! wire protocol) and never decides what a value means: conversion and checks are the
//! server's. The server crate only parses `quorumdb`'s subcommands and calls in here.

pub mod backup;
pub mod error;
pub mod load;
pub mod load_command;
pub mod progress;
pub mod shell;
pub mod vectors;

pub use error::ShellError;

/// An HTTP client for nodes, logged in where the cluster requires it: every request carries
/// HTTP Basic with `QUORUMDB_USER` (default `admin`) and `QUORUMDB_PASSWORD`, when the
/// password is set.
pub fn http_builder() -> reqwest::ClientBuilder {
    let user = std::env::var("QUORUMDB_USER").unwrap_or_else(|_| "admin".into());
    http_builder_as(&user, std::env::var("QUORUMDB_PASSWORD").ok().as_deref())
}

/// `https` when `QUORUMDB_CA` names the cluster CA's certificate (the cluster has TLS), else
/// `http`.
pub fn scheme() -> &'static str {
    if std::env::var_os("QUORUMDB_CA").is_some() { "https" } else { "http" }
}

/// TLS for PostgreSQL connections when `QUORUMDB_CA` names the cluster CA's certificate: the
/// server's certificate must chain to it and name the host connected to (like libpq's
/// `sslmode=verify-full`). `None` without `QUORUMDB_CA`.
pub fn pg_tls() -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
    use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::pem::PemObject};
    let Some(ca) = std::env::var_os("QUORUMDB_CA") else { return Ok(None) };
    let bad = |e: &dyn std::fmt::Display| format!("QUORUMDB_CA {}: {e}", ca.to_string_lossy());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// An HTTP client for nodes that sends `user` and `password` (HTTP Basic) on every request,
/// and trusts the CA in `QUORUMDB_CA` (PEM) if set.
pub fn http_builder_as(user: &str, password: Option<&str>) -> reqwest::ClientBuilder {
    use base64::Engine as _;
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = std::env::var_os("QUORUMDB_CA") {
        match std::fs::read(&ca).map(|pem| reqwest::Certificate::from_pem(&pem)) {
            Ok(Ok(cert)) => builder = builder.add_root_certificate(cert),
            // Trusting nothing extra makes every request fail with a certificate error.
            _ => eprintln!("warning: QUORUMDB_CA {}: not a readable PEM certificate", ca.to_string_lossy()),
        }
    }
    let Some(password) = password else { return builder };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    match reqwest::header::HeaderValue::from_str(&format!("Basic {token}")) {
        Ok(mut value) => {
            value.set_sensitive(true);
            builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]))
        }
        Err(_) => builder,
    }
}
