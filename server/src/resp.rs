//! The RESP (Redis protocol) surface (work in progress).

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::AppState;

/// Accepts Redis clients until `stop` turns true.
pub async fn serve(listener: TcpListener, state: AppState, mut stop: watch::Receiver<bool>) {
    let _ = (listener, state);
    let _ = stop.wait_for(|s| *s).await;
}
