//! The two views of the replicated key-value state that SQL needs, as traits, so this crate
//! never sees RocksDB or Raft: [`KvRead`] for queries (the applied state) and [`KvTxn`] for
//! apply (one command's transaction). The server adapts the replication crate's types to them.

use std::sync::Arc;

/// Read access to the applied state.
pub trait KvRead: Send + Sync {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    /// Calls `f` for each pair in `start..end`, in key order, at one point in time; stops when
    /// `f` returns `false`. May block: long scans run on a blocking thread.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>;
}

pub type SharedRead = Arc<dyn KvRead>;

/// One command's view of the state while it is applied; writes are staged and kept only if
/// the command succeeds.
pub trait KvTxn {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    fn delete_range(&mut self, start: &[u8], end: &[u8]);
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>;
    /// The log index of the command being applied.
    fn log_index(&self) -> u64;
    /// Runs `f` after the command's writes are committed, before it is acknowledged; never if
    /// the command is rejected. Keeps vector indexes in step with the rows.
    fn on_commit(&mut self, f: Box<dyn FnOnce() + Send>);
}

/// Runs a scan (`scan` is handed the per-pair callback) with a fallible callback: stops at the
/// first error and returns it.
pub fn try_scan(
    scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>,
    mut f: impl FnMut(&[u8], &[u8]) -> crate::Result<bool>,
) -> crate::Result<()> {
    let mut err = None;
    scan(&mut |k, v| match f(k, v) {
        Ok(go_on) => go_on,
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    err.map_or(Ok(()), Err)
}
