//! What the state machine offers an application: a transaction over the state while one of its
//! commands is applied ([`StateTxn`]), hooks that run once the command's writes are committed
//! ([`CommitHook`]), and read access to the applied state for queries ([`AppliedState`]).
//!
//! Keys are byte strings in one ordered keyspace shared by every application (each owns its
//! prefixes). In every `scan`, `end` is exclusive and an empty `end` means "no end" (see
//! [`crate::prefix_end`]).

use std::path::Path;
use std::sync::Arc;

/// A deterministic application of commands to the replicated key-value state.
///
/// Implementations must be deterministic: the same command on the same state gives the same
/// writes and the same result on every node, whatever binary version runs there (see
/// [`crate::format`]). Apply must not panic on any input: a command comes from the log, and a
/// panic is caught, logged and turned into a rejection, never silently ignored.
pub trait Application: Send + Sync + 'static {
    /// Applies one command. `Ok(Ok(response))` keeps the writes staged in `txn`;
    /// `Ok(Err(rejection))` discards them all (the command fails identically everywhere and
    /// changes nothing). Both byte strings are encoded in the command's own format version,
    /// for its proposer (see [`crate::Rejection::encode`]).
    ///
    /// `Err` is for the state failing to read (an I/O error from `txn`), never for anything
    /// the command or the data decide: it would not happen on the other replicas, so this node
    /// stops applying (openraft stops it) instead of diverging.
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> std::io::Result<Applied>;

    /// The state was opened, before any command is applied: load what is kept beside it.
    fn opened(&self, _state: &SharedState) -> std::io::Result<()> {
        Ok(())
    }

    /// A snapshot is being built: put the files kept beside the state that belong in it (index
    /// dumps) into `dest`, preferably as hard links. Called *before* the state is captured, so
    /// what is given here is at or behind the snapshot's state; the application must be able
    /// to bring such files up to any later state (as it does after a restart).
    fn snapshot_files(&self, _dest: &Path) -> std::io::Result<()> {
        Ok(())
    }

    /// The whole state was replaced (a snapshot was installed): anything kept beside it in
    /// memory must be rebuilt from the new state. `files` holds what [`Self::snapshot_files`]
    /// gave on the node that built the snapshot, if anything (the application takes copies).
    fn state_replaced(&self, _state: &SharedState, _files: Option<&Path>) {}
}

/// The state as one command sees it while it is applied: the committed state plus the writes
/// of earlier commands of the same batch plus its own. Writes are staged and kept only if the
/// command succeeds.
pub trait StateTxn {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Deletes every key in `start..end` (empty `end`: every key from `start` on).
    fn delete_range(&mut self, start: &[u8], end: &[u8]);
    /// Calls `f` for each pair in `start..end`, in key order, as this command sees them; stops
    /// when `f` returns `false`.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>;
    /// The log index of the entry being applied (the same on every node).
    fn log_index(&self) -> u64;
    /// Runs `f` once this command's writes are durable in the state and before anyone is told
    /// it was applied (nor any later command applied); dropped if the command is rejected.
    /// For in-memory structures kept beside the state (vector indexes). A hook that panics is
    /// caught and logged; it must leave its structure marked for rebuild, never half-updated.
    fn on_commit(&mut self, f: CommitHook);
}

/// The deterministic outcome of applying one command: its encoded response, or its encoded
/// rejection.
pub type Applied = Result<Vec<u8>, Vec<u8>>;

/// Work to run after a command's writes are committed (see [`StateTxn::on_commit`]).
pub type CommitHook = Box<dyn FnOnce() + Send>;

/// Read access to the applied state, concurrent with apply.
pub trait AppliedState: Send + Sync {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>>;
    /// Calls `f` for each pair in `start..end` in key order, all read at one point in time;
    /// stops when `f` returns `false`. May block: long scans run on a blocking thread.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>;

    /// The cluster's format version as of this state (see [`crate::format`]).
    fn format(&self) -> std::io::Result<crate::FormatVersion> {
        crate::format::cluster_format(|k| self.get(k))
    }
}

/// A shared handle on the applied state.
pub type SharedState = Arc<dyn AppliedState>;

/// Runs a scan (`scan` is handed the per-pair callback) with a fallible callback: stops at the
/// first error and returns it.
pub fn try_scan<E: From<std::io::Error>>(
    scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
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
