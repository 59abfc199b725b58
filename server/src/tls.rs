//! Owns the node's transport security: the certificate, key and cluster CA it was started with
//! (PEM files, re-read on SIGHUP), the rustls configurations built from them — one for the
//! ports clients reach (main, PostgreSQL, Redis), one for the node's own calls to its peers —
//! the accepting side of every port ([`MaybeTls`], [`MainListener`]), and what a peer's
//! certificate says about it ([`Peer`]: a cluster node `node-<id>`, or a user).
//!
//! Clients may present a certificate; when one is presented it must chain to the cluster CA.
//! A node presents its own certificate on every call to a peer, and a peer's Raft, forward
//! and snapshot RPCs are refused unless it did ([`crate::http::guard`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::RwLock;
use pgwire::tokio::tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use pgwire::tokio::tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::ServerError;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files a node's TLS comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The node's TLS configuration; [`Tls::reload`] swaps in newly read files.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

struct Configs {
    /// The main port (gRPC and HTTP/1.1 by ALPN).
    main: Arc<ServerConfig>,
    /// PostgreSQL and Redis.
    plain: Arc<ServerConfig>,
    /// The node's calls to its peers: trusts the cluster CA, presents the node's certificate.
    client: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(path: &Path, what: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("TLS: {}: {what}", path.display()))
}

impl Tls {
    /// Reads the files; any problem (a missing file, no key, a CA that does not parse, a
    /// certificate the CA did not sign) is an error naming the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, ServerError> {
        let configs = Configs::read(&files)?;
        Ok(Arc::new(Self { files, current: RwLock::new(Arc::new(configs)) }))
    }

    /// Re-reads the files; on an error the node keeps the configuration it had.
    pub fn reload(&self) -> Result<(), ServerError> {
        let configs = Configs::read(&self.files)?;
        *self.current.write() = Arc::new(configs);
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().plain.clone())
    }

    fn main_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().main.clone())
    }

    /// For calls to peers (Raft RPCs, forwards, joins).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.read().client.clone()
    }

    /// The cluster CA's certificates (PEM), for an HTTP client that must trust them.
    pub fn ca_path(&self) -> &Path {
        &self.files.ca
    }
}

impl Configs {
    fn read(files: &TlsFiles) -> Result<Self, ServerError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| tls_error(&files.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| tls_error(&files.cert, e))?;
        if certs.is_empty() {
            return Err(tls_error(&files.cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_error(&files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| tls_error(&files.ca, e))? {
            roots.add(ca.map_err(|e| tls_error(&files.ca, e))?).map_err(|e| tls_error(&files.ca, e))?;
        }
        if roots.is_empty() {
            return Err(tls_error(&files.ca, "no certificate in the file"));
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error(&files.ca, e))?;
        let server = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, ServerError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| tls_error(&files.key, e))?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(|e| tls_error(&files.key, e))?;
        // The node's own certificate must chain to the CA its peers trust.
        // (A verifier that allows clients without a certificate still checks one it is given.)
        verifier
            .verify_client_cert(&certs[0], &certs[1..], rustls::pki_types::UnixTime::now())
            .map_err(|e| tls_error(&files.cert, format!("the certificate is not signed by the cluster CA ({e})")))?;
        Ok(Self { main: server(&[b"h2", b"http/1.1"])?, plain: server(&[])?, client: Arc::new(client) })
    }
}

// ---------------------------------------------------------------------------------------------
// Streams and listeners

/// A connection's transport: plain TCP, or TLS over it.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// Who the peer's certificate says it is (nothing for plain TCP or no certificate).
    pub fn peer(&self) -> Peer {
        match self {
            MaybeTls::Plain(_) => Peer::default(),
            MaybeTls::Tls(s) => {
                s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(Peer::of).unwrap_or_default()
            }
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, data),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Completes the TLS handshake of an accepted connection (or passes it through without TLS).
pub async fn accept(socket: TcpStream, tls: Option<TlsAcceptor>) -> io::Result<MaybeTls> {
    let _ = socket.set_nodelay(true);
    let Some(acceptor) = tls else {
        return Ok(MaybeTls::Plain(socket));
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(s) => Ok(MaybeTls::Tls(Box::new(s?))),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// The main port's listener: TCP_NODELAY on every connection (a response written in pieces
/// must not wait for the peer's delayed ACK), and TLS when the node has a certificate, with
/// handshakes run beside the accept loop so a slow client holds up no one.
pub struct MainListener {
    tcp: TcpListener,
    tls: Option<Arc<Tls>>,
    handshakes: JoinSet<Option<(MaybeTls, SocketAddr)>>,
}

impl MainListener {
    pub fn new(tcp: TcpListener, tls: Option<Arc<Tls>>) -> Self {
        Self { tcp, tls, handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for MainListener {
    type Io = MaybeTls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (MaybeTls, SocketAddr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((socket, peer)) => match &self.tls {
                        None => {
                            let _ = socket.set_nodelay(true);
                            return (MaybeTls::Plain(socket), peer);
                        }
                        Some(tls) => {
                            let acceptor = tls.main_acceptor();
                            self.handshakes.spawn(async move {
                                match accept(socket, Some(acceptor)).await {
                                    Ok(s) => Some((s, peer)),
                                    Err(e) => {
                                        metrics::counter!("quorumdb_tls_handshake_failures_total").increment(1);
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        None
                                    }
                                }
                            });
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// `https` with certificates, `http` without: the scheme of calls to peers' main ports.
pub fn scheme(tls: Option<&Tls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// An HTTP client for calls to peers (forwarded admin requests, joins): with certificates, it
/// trusts the cluster CA and presents the node's certificate.
pub fn peer_http(tls: Option<&Tls>) -> Result<reqwest::Client, ServerError> {
    build_peer_http(tls.map(Tls::client_config))
}

fn build_peer_http(config: Option<Arc<ClientConfig>>) -> Result<reqwest::Client, ServerError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(config) = config {
        builder = builder.use_preconfigured_tls((*config).clone());
    }
    builder.build().map_err(|e| ServerError::Internal(format!("an HTTP client for peers: {e}")))
}

/// The node's HTTP client for its peers, kept between calls (its connections and TLS sessions
/// are reused) and built again only when SIGHUP brought new certificates.
#[derive(Default)]
pub struct PeerHttp {
    /// The client and the client configuration it was built with.
    cached: parking_lot::Mutex<Option<(Option<Arc<ClientConfig>>, reqwest::Client)>>,
}

impl std::fmt::Debug for PeerHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHttp").finish_non_exhaustive()
    }
}

impl PeerHttp {
    /// The client for the node's current certificates.
    pub fn client(&self, tls: Option<&Tls>) -> Result<reqwest::Client, ServerError> {
        let config = tls.map(Tls::client_config);
        let mut cached = self.cached.lock();
        if let Some((built_with, client)) = cached.as_ref() {
            let same = match (built_with, &config) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return Ok(client.clone());
            }
        }
        let client = build_peer_http(config.clone())?;
        *cached = Some((config, client.clone()));
        Ok(client)
    }
}

// ---------------------------------------------------------------------------------------------
// Peers

/// What a connection's client certificate says (already verified against the cluster CA by
/// the handshake): a node (`node-<id>` among its DNS names) or a user (its common name).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The client's address (for throttling failed logins).
    pub addr: Option<SocketAddr>,
    pub node: Option<u64>,
    pub user: Option<String>,
}

impl Peer {
    fn of(cert: &CertificateDer<'_>) -> Self {
        let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert) else {
            return Self::default();
        };
        let node = x509.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => node_id(d),
                _ => None,
            })
        });
        let user = x509.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        Self { addr: None, node, user: if node.is_some() { None } else { user } }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, MainListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, MainListener>) -> Self {
        Peer { addr: Some(*stream.remote_addr()), ..stream.io().peer() }
    }
}

/// The node id a `node-<id>` name stands for.
pub fn node_id(name: &str) -> Option<u64> {
    name.strip_prefix("node-")?.parse().ok()
}

/// The DNS name a node's certificate carries.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

// ---------------------------------------------------------------------------------------------
// `quorumdb cert`: a cluster CA, node and client certificates

pub mod certs {
    //! Makes the files `quorumdb cert` writes: `ca.crt`/`ca.key` (a cluster CA), and
    //! certificates it signs for nodes (`node-<id>` plus the hosts they are reached at, for both
    //! serving and calling peers) and for users (common name = the user). Keys are written
    //! readable by their owner only.

    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };

    use super::node_name;

    fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    /// Valid from yesterday (clocks differ) for `days` days.
    fn validity(params: &mut CertificateParams, days: u32) {
        use chrono::Datelike;
        let at = |d: chrono::DateTime<chrono::Utc>| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
        let now = chrono::Utc::now();
        params.not_before = at(now - chrono::Duration::days(1));
        params.not_after = at(now + chrono::Duration::days(i64::from(days)));
    }

    /// Writes `ca.crt` and `ca.key` into `dir` (which must not hold them yet).
    pub fn init(dir: &Path, days: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "QuorumDB cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
        write(&dir.join("ca.crt"), &cert.pem(), false)?;
        Ok(())
    }

    fn issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(name).display()))
        };
        let key = KeyPair::from_pem(&read("ca.key")?)?;
        Ok(Issuer::from_ca_cert_pem(&read("ca.crt")?, key)?)
    }

    fn leaf(
        dir: &Path,
        name: &str,
        sans: Vec<String>,
        cn: &str,
        usages: Vec<ExtendedKeyUsagePurpose>,
        days: u32,
    ) -> anyhow::Result<()> {
        let issuer = issuer(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &issuer)?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)?;
        write(&dir.join(format!("{name}.crt")), &cert.pem(), false)?;
        Ok(())
    }

    /// Writes `node-<id>.crt`/`.key`: names `node-<id>` and every host given (names or IPs).
    pub fn node(dir: &Path, id: u64, hosts: &[String], days: u32) -> anyhow::Result<()> {
        let name = node_name(id);
        let mut sans = vec![name.clone()];
        sans.extend(hosts.iter().cloned());
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        leaf(dir, &name, sans, &name, usages, days)
    }

    /// Writes `client-<user>.crt`/`.key`, whose common name is the user.
    pub fn client(dir: &Path, user: &str, days: u32) -> anyhow::Result<()> {
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            anyhow::bail!("a user name for a certificate is letters, digits, '_', '-' and '.'");
        }
        leaf(dir, &format!("client-{user}"), Vec::new(), user, vec![ExtendedKeyUsagePurpose::ClientAuth], days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached_config(peers: &PeerHttp) -> Option<Arc<ClientConfig>> {
        peers.cached.lock().as_ref().and_then(|(config, _)| config.clone())
    }

    /// The peer client is built once per set of certificates: kept while they stay, built
    /// again after a reload brought new ones.
    #[test]
    fn the_peer_client_is_kept_until_the_certificates_change() {
        let dir = tempfile::tempdir().unwrap();
        certs::init(dir.path(), 1).unwrap();
        certs::node(dir.path(), 1, &["127.0.0.1".to_string()], 1).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("node-1.crt"),
            key: dir.path().join("node-1.key"),
            ca: dir.path().join("ca.crt"),
        };
        let tls = Tls::load(files).unwrap();
        let peers = PeerHttp::default();
        peers.client(Some(&tls)).unwrap();
        let first = cached_config(&peers).unwrap();
        assert!(Arc::ptr_eq(&first, &tls.client_config()));
        peers.client(Some(&tls)).unwrap();
        assert!(Arc::ptr_eq(&first, &cached_config(&peers).unwrap()), "built again with the same certificates");
        tls.reload().unwrap();
        peers.client(Some(&tls)).unwrap();
        let second = cached_config(&peers).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "kept the client of the old certificates");
        assert!(Arc::ptr_eq(&second, &tls.client_config()));
        // Without certificates: a plain client, also kept.
        let plain = PeerHttp::default();
        plain.client(None).unwrap();
        assert!(plain.cached.lock().as_ref().is_some_and(|(config, _)| config.is_none()));
    }
}
