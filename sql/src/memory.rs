//! An in-memory, single-node stand-in for the replicated state: a [`AppliedState`] and a
//! [`Proposer`] that applies each command at once, in order, as every replica would, through
//! the same [`Router`] and [`SqlApplication`] a node runs. For unit tests and in-process
//! benchmarks of the SQL layer without Raft.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quorumdb_state::format::{self, FormatVersion};
use quorumdb_state::keys::in_range;
use quorumdb_state::{
    Application, AppliedState, Command, CommandResult, CommitHook, Consistency, Proposer, ReadInfo, ReplicationError,
    Router, StateTxn,
};

use crate::command::{SqlApplication, TAG};
use crate::vector_indexes::VectorIndexes;

#[derive(Debug)]
pub struct MemoryState {
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Serializes apply and numbers the commands like log indexes.
    index: Mutex<u64>,
    router: Router,
    vectors: Arc<VectorIndexes>,
}

impl MemoryState {
    pub fn new() -> Arc<Self> {
        Self::with_vectors(VectorIndexes::new(None))
    }

    /// A state whose commands maintain `vectors` (e.g. one that dumps its graphs to a dir).
    pub fn with_vectors(vectors: Arc<VectorIndexes>) -> Arc<Self> {
        let router = Router::new().with(TAG, Arc::new(SqlApplication::new(vectors.clone())));
        Arc::new(Self { data: RwLock::default(), index: Mutex::new(0), router, vectors })
    }

    /// The vector indexes this state's commands maintain.
    pub fn vectors(&self) -> Arc<VectorIndexes> {
        self.vectors.clone()
    }
}

impl AppliedState for MemoryState {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.data.read().get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        let snapshot: Vec<(Vec<u8>, Vec<u8>)> = self
            .data
            .read()
            .range(start.to_vec()..)
            .take_while(|(k, _)| in_range(k, start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in snapshot {
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

/// One command's staged writes over the map.
struct MemTxn<'a> {
    base: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    index: u64,
    hooks: Vec<CommitHook>,
}

impl MemTxn<'_> {
    fn deleted_by_range(&self, key: &[u8]) -> bool {
        self.ranges.iter().any(|(s, e)| in_range(key, s, e))
    }
}

impl StateTxn for MemTxn<'_> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.staged.get(key) {
            return Ok(v.clone());
        }
        if self.deleted_by_range(key) {
            return Ok(None);
        }
        Ok(self.base.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.staged.insert(key.to_vec(), Some(value.to_vec()));
    }

    fn delete(&mut self, key: &[u8]) {
        self.staged.insert(key.to_vec(), None);
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        self.staged.retain(|k, _| !in_range(k, start, end));
        self.ranges.push((start.to_vec(), end.to_vec()));
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .base
            .range(start.to_vec()..)
            .take_while(|(k, _)| in_range(k, start, end))
            .filter(|(k, _)| !self.deleted_by_range(k))
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for (k, v) in self.staged.range(start.to_vec()..).take_while(|(k, _)| in_range(k, start, end)) {
            merged.insert(k.clone(), v.clone());
        }
        for (k, v) in merged {
            if let Some(v) = v
                && !f(&k, &v)
            {
                break;
            }
        }
        Ok(())
    }

    fn log_index(&self) -> u64 {
        self.index
    }

    fn on_commit(&mut self, f: CommitHook) {
        self.hooks.push(f);
    }
}

#[async_trait::async_trait]
impl Proposer for MemoryState {
    async fn propose(&self, command: Command) -> Result<CommandResult, ReplicationError> {
        let mut index = self.index.lock();
        *index += 1;
        let mut data = self.data.write();
        let (result, staged, ranges, hooks) = {
            let mut txn =
                MemTxn { base: &data, staged: BTreeMap::new(), ranges: Vec::new(), index: *index, hooks: Vec::new() };
            let r = self.router.apply(&command.0, &mut txn)?;
            (r, txn.staged, txn.ranges, txn.hooks)
        };
        let response = match result {
            Ok(response) => response,
            Err(rejection) => return Ok(CommandResult::Rejected(rejection)),
        };
        for (s, e) in ranges {
            let doomed: Vec<Vec<u8>> =
                data.range(s.clone()..).take_while(|(k, _)| in_range(k, &s, &e)).map(|(k, _)| k.clone()).collect();
            for k in doomed {
                data.remove(&k);
            }
        }
        for (k, v) in staged {
            match v {
                Some(v) => data.insert(k, v),
                None => data.remove(&k),
            };
        }
        drop(data);
        for hook in hooks {
            hook();
        }
        Ok(CommandResult::Applied(response))
    }

    async fn read_barrier(&self, _level: Consistency) -> Result<ReadInfo, ReplicationError> {
        Ok(ReadInfo { applied_index: *self.index.lock(), staleness_ms: Some(0) })
    }

    fn format(&self) -> FormatVersion {
        format::CURRENT
    }
}
