//! Several applications on one state machine: each command's first byte names the
//! application that applies it (`b'k'` the KV table, `b's'` SQL, …).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::state_machine::{Application, StateReader, StateTxn};
use crate::types::Command;

/// Builds a log command for the application registered under `tag`.
pub fn tagged(tag: u8, payload: &[u8]) -> Command {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(tag);
    bytes.extend_from_slice(payload);
    Command(bytes)
}

/// An [`Application`] that hands each command (minus its tag byte) to the application
/// registered under that tag. An unknown tag is a deterministic rejection.
#[derive(Default, Clone)]
pub struct Router {
    apps: BTreeMap<u8, Arc<dyn Application>>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, tag: u8, app: Arc<dyn Application>) -> Self {
        self.apps.insert(tag, app);
        self
    }
}

impl Application for Router {
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> Result<Vec<u8>, Vec<u8>> {
        let Some((tag, payload)) = command.split_first() else {
            return Err(b"empty command".to_vec());
        };
        match self.apps.get(tag) {
            Some(app) => app.apply(payload, txn),
            None => Err(format!("no application for command tag {tag:#04x}").into_bytes()),
        }
    }

    fn opened(&self, state: &StateReader) -> std::io::Result<()> {
        for app in self.apps.values() {
            app.opened(state)?;
        }
        Ok(())
    }

    /// Each application's files go into a subdirectory named by its tag (hex).
    fn snapshot_files(&self, dest: &Path) -> std::io::Result<()> {
        for (tag, app) in &self.apps {
            app.snapshot_files(&dest.join(format!("{tag:02x}")))?;
        }
        Ok(())
    }

    fn state_replaced(&self, state: &StateReader, files: Option<&Path>) {
        for (tag, app) in &self.apps {
            let mine = files.map(|f| f.join(format!("{tag:02x}"))).filter(|p| p.exists());
            app.state_replaced(state, mine.as_deref());
        }
    }
}
