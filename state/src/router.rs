//! Several applications on one state machine: each command's first byte names the
//! application that applies it (`b'k'` the KV table, `b's'` SQL). The tag
//! [`SYSTEM_TAG`](crate::format::SYSTEM_TAG) is reserved for the state machine's own commands,
//! which never reach the router.
//!
//! Adding an application (a new tag) is a format change: a binary that does not know the tag
//! rejects the command while one that knows it applies it, so a new tag may only be proposed
//! once the cluster's format version says every node knows it (see [`crate::format`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::app::{Application, Applied, SharedState, StateTxn};
use crate::command::Command;
use crate::error::Rejection;
use crate::format;

/// Builds a log command for the application registered under `tag`.
pub fn tagged(tag: u8, payload: &[u8]) -> Command {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(tag);
    bytes.extend_from_slice(payload);
    Command(bytes)
}

/// An [`Application`] that hands each command (minus its tag byte) to the application
/// registered under that tag. An empty command or an unknown tag is a deterministic rejection.
#[derive(Default, Clone)]
pub struct Router {
    apps: BTreeMap<u8, Arc<dyn Application>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("tags", &self.apps.keys().map(|t| *t as char).collect::<Vec<_>>()).finish()
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `app` under `tag`. The system tag is the state machine's and is refused.
    pub fn with(mut self, tag: u8, app: Arc<dyn Application>) -> Self {
        if tag != format::SYSTEM_TAG {
            self.apps.insert(tag, app);
        }
        self
    }
}

impl Application for Router {
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> std::io::Result<Applied> {
        let Some((tag, payload)) = command.split_first() else {
            return Ok(Err(Rejection::new(Rejection::INTERNAL_CODE, "empty command").encode(format::LEGACY)));
        };
        match self.apps.get(tag) {
            Some(app) => app.apply(payload, txn),
            None => {
                let why = format!("no application for command tag {tag:#04x}");
                Ok(Err(Rejection::new(Rejection::INTERNAL_CODE, why).encode(format::LEGACY)))
            }
        }
    }

    fn opened(&self, state: &SharedState) -> std::io::Result<()> {
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

    fn state_replaced(&self, state: &SharedState, files: Option<&Path>) {
        for (tag, app) in &self.apps {
            let mine = files.map(|f| f.join(format!("{tag:02x}"))).filter(|p| p.exists());
            app.state_replaced(state, mine.as_deref());
        }
    }
}
