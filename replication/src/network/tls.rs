//! Owns TLS on the node's calls to its peers: each new connection to a peer is a TCP
//! connection, then a TLS handshake that checks the peer's certificate against the cluster CA
//! for the host it was reached at, presenting this node's own certificate. The configuration
//! is asked for at every connect, so certificates re-read by the server take effect on the
//! next connection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

/// Supplies the current client configuration (the server re-reads its files on SIGHUP).
#[derive(Clone)]
pub struct PeerTls(pub Arc<dyn Fn() -> Arc<ClientConfig> + Send + Sync>);

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerTls")
    }
}

/// A lazily connected channel to `endpoint` whose connections are TLS.
pub(super) fn connect_lazy(endpoint: Endpoint, tls: PeerTls, timeout: Duration) -> Channel {
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                TlsConnector::from((tls.0)()).connect(name, tcp).await
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(stream) => Ok(TokioIo::new(stream?)),
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the peer timed out")),
            }
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}
