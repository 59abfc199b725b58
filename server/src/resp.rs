//! The RESP (Redis protocol) surface: the built-in KV table for `redis-cli`, `redis-benchmark`
//! and Redis client libraries, on `--redis-listen`.
//!
//! Owns the listener, one task per connection, RESP2 framing ([`parse`]), glob patterns
//! ([`glob`]) and the commands ([`commands`]). It stores nothing of its own: writes are KV
//! commands proposed through Raft ([`crate::kv::write`]), reads are reads of the applied state
//! after a read barrier, so a value written here is the value `GET /v1/kv/<key>` returns, and
//! the reverse.
//!
//! - **Order.** Commands of one connection run one after the other and are answered in order,
//!   however many arrive in one read (pipelining). Connections are independent tasks: a write
//!   waiting for Raft on one never holds up another.
//! - **Consistency.** Reads are linearizable by default. One read barrier covers every read of
//!   a connection that was already received when the barrier was taken and that no write of
//!   the connection precedes, so a pipeline of `GET`s costs one quorum round, not one each;
//!   and concurrent connections share barriers ([`barrier`]).
//!   `QUORUMDB.CONSISTENCY lease|stale [max_staleness_ms]|linearizable` changes the level for
//!   the connection.
//! - **Bad input.** A request that breaks the protocol, or goes over [`parse::Limits`], gets one
//!   `-ERR Protocol error: ...` and the connection is closed; the server never allocates more
//!   than a request actually sent, and never panics on it.
//! - **Shutdown.** Dropping the accept loop (the node stops) aborts every connection task.

mod barrier;
pub mod commands;
pub mod glob;
pub mod parse;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::NodeContext;
use commands::{Session, Shared};
use parse::{Limits, Parser};

/// Most connections served at once; more are answered with an error and closed.
const MAX_CLIENTS: usize = 10_000;
/// Answers are flushed once this many bytes are waiting, even mid-pipeline.
const FLUSH_AT: usize = 64 << 10;
const READ_CHUNK: usize = 16 << 10;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Ok,
    Simple(String),
    /// The text after `-`: a code (`ERR`, `NOAUTH`, ...) and a message.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// The null bulk string (`$-1`): a missing value.
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn error(text: impl Into<String>) -> Self {
        Self::Error(text.into())
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Self {
        Self::Bulk(bytes.into())
    }

    /// Appends the reply's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ok => out.extend_from_slice(b"+OK\r\n"),
            Self::Simple(s) => {
                out.push(b'+');
                out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Self::Error(s) => {
                out.push(b'-');
                out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.extend_from_slice(b"\r\n");
            }
            Self::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Self::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Self::Nil => out.extend_from_slice(b"$-1\r\n"),
            Self::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// Accepts Redis clients until `stop` turns true.
pub async fn serve(listener: TcpListener, state: NodeContext, mut stop: watch::Receiver<bool>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let shared = Arc::new(Shared::new(state, port));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    metrics::counter!("quorumdb_resp_connections_total").increment(1);
                    if shared.connected.load(Ordering::Relaxed) >= MAX_CLIENTS {
                        tracing::warn!(%peer, "refusing a Redis client: too many connections");
                        connections.spawn(refuse(socket));
                        continue;
                    }
                    let tls = shared.state.surfaces.tls.as_ref().map(|t| t.acceptor());
                    let shared = shared.clone();
                    connections.spawn(async move {
                        match crate::tls::accept(socket, tls).await {
                            Ok(stream) => connection(stream, peer, shared).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "Redis client: TLS handshake failed"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a Redis client failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn refuse(mut socket: TcpStream) {
    let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
}

/// Counts a connection while it lives.
struct Connected(Arc<Shared>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one client until it quits, disconnects or breaks the protocol.
async fn connection(mut socket: crate::tls::MaybeTls, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let _guard = Connected(shared.clone());
    let mut session = Session::new(shared);
    session.peer = Some(peer.ip());
    if let Some(user) = socket.peer().user {
        session.login_by_certificate(user);
    }
    let mut parser = Parser::new(Limits::default());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Everything parsed from here on was received before any barrier taken below.
        session.new_arrivals();
        let mut pos = 0;
        loop {
            match parser.next(&buf, &mut pos) {
                Ok(Some(args)) => {
                    session.execute(args).await.encode(&mut out);
                    if session.quit {
                        let _ = socket.write_all(&out).await;
                        return;
                    }
                    if out.len() >= FLUSH_AT {
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!("quorumdb_resp_protocol_errors_total").increment(1);
                    tracing::debug!(error = %e, "closing a Redis connection after a protocol error");
                    Reply::error(format!("ERR {e}")).encode(&mut out);
                    let _ = socket.write_all(&out).await;
                    return;
                }
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            if socket.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if buf.capacity() > 4 * READ_CHUNK && buf.len() < READ_CHUNK {
            buf.shrink_to(READ_CHUNK);
        }
    }
}
