//! Owns one PostgreSQL connection from accept to close: encryption negotiation (`SSLRequest`,
//! answered with TLS when the node has a certificate; `GSSENCRequest`, declined), the checked
//! message stream ([`super::frames`]), and the message loop that hands each message to
//! `pgwire`'s dispatcher. A malformed message ends the connection with `FATAL 08P01`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use pgwire::tokio::tokio_rustls::TlsAcceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::frames::{CANCEL_CODE, Checked, GSS_CODE, SSL_CODE};
use crate::tls::MaybeTls;

/// How long a client has to finish its startup and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client until it leaves, fails its startup in time, or sends a malformed message.
pub async fn serve<H: PgWireServerHandlers>(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handlers: Arc<H>,
) -> io::Result<()> {
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(()),
        n = negotiate(socket, tls.as_ref()) => n?,
    };
    let Some((stream, prefix)) = negotiated else {
        return Ok(());
    };
    let secure = matches!(stream, MaybeTls::Tls(_));
    let certificate = stream.peer().user;
    let mut socket =
        Framed::new(Checked::new(stream, &prefix), PgWireMessageServerCodec::new(DefaultClient::new(peer, secure)));
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    if let Some(user) = certificate {
        socket.session_extensions().insert(super::CertificateUser(user));
    }

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if starting {
            tokio::select! {
                _ = &mut deadline => None,
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(PgWireError::IoError(e))) if e.kind() != io::ErrorKind::InvalidData => break,
            Some(Err(e)) => {
                // A malformed message: say so, as PostgreSQL does, and close.
                let message = match e {
                    PgWireError::IoError(e) => e.to_string(),
                    e => e.to_string(),
                };
                metrics::counter!("quorumdb_pg_protocol_errors_total").increment(1);
                tracing::debug!(%peer, error = %message, "PostgreSQL client sent a malformed message");
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), message);
                let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                break;
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let in_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let outcome = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(e) = outcome {
            let fatal = e.is_fatal();
            process_error(&mut socket, e, in_extended).await?;
            if fatal {
                break;
            }
        }
        if is_cancel {
            break;
        }
    }
    Ok(())
}

/// Reads the client's first packets: `GSSENCRequest` is declined; `SSLRequest` is answered
/// with TLS if the node has a certificate, else declined. Returns the stream and the bytes
/// already read of the first packet that was neither, or `None` if the client left.
async fn negotiate(mut socket: TcpStream, tls: Option<&TlsAcceptor>) -> io::Result<Option<(MaybeTls, Vec<u8>)>> {
    // libpq may ask for GSS encryption first, then for SSL.
    for _ in 0..3 {
        let mut head = [0u8; 8];
        if read_fully(&mut socket, &mut head).await? < head.len() {
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (len, code, tls) {
            (8, SSL_CODE, Some(acceptor)) => {
                socket.write_all(b"S").await?;
                let tls = acceptor.accept(socket).await?;
                return Ok(Some((MaybeTls::Tls(Box::new(tls)), Vec::new())));
            }
            (8, SSL_CODE | GSS_CODE, _) => socket.write_all(b"N").await?,
            // With certificates, every session is encrypted (a cancel request carries no data).
            (_, code, Some(_)) if code != CANCEL_CODE => {
                let info = ErrorInfo::new(
                    "FATAL".into(),
                    "28000".into(),
                    "this node requires TLS: connect with sslmode=require or verify-full".into(),
                );
                let mut out = bytes::BytesMut::new();
                if PgWireBackendMessage::ErrorResponse(info.into()).encode(&mut out).is_ok() {
                    socket.write_all(&out).await?;
                }
                return Ok(None);
            }
            _ => return Ok(Some((MaybeTls::Plain(socket), head.to_vec()))),
        }
    }
    Ok(None)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
async fn read_fully(socket: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match socket.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
