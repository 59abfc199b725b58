//! An in-memory, single-node stand-in for the replicated state: a [`KvRead`] and a
//! [`Backend`] that applies each command at once, in order, as every replica would. For unit
//! tests and in-process benchmarks of the SQL layer without Raft.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use crate::command::SqlApp;
use crate::engine::Backend;
use crate::error::Result;
use crate::store::{KvRead, KvTxn};
use crate::vectors::VectorIndexes;

#[derive(Debug)]
pub struct MemoryState {
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Serializes apply and numbers the commands like log indexes.
    index: Mutex<u64>,
    app: SqlApp,
}

impl MemoryState {
    pub fn new() -> Arc<Self> {
        Self::with_vectors(VectorIndexes::new(None))
    }

    /// A state whose commands maintain `vectors` (e.g. one that dumps its graphs to a dir).
    pub fn with_vectors(vectors: Arc<VectorIndexes>) -> Arc<Self> {
        Arc::new(Self { data: RwLock::default(), index: Mutex::new(0), app: SqlApp::new(vectors) })
    }

    /// The vector indexes this state's commands maintain.
    pub fn vectors(&self) -> Arc<VectorIndexes> {
        self.app.vectors().clone()
    }
}

impl KvRead for MemoryState {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.data.read().expect("lock").get(key).cloned())
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let snapshot: Vec<(Vec<u8>, Vec<u8>)> = self
            .data
            .read()
            .expect("lock")
            .range(start.to_vec()..end.to_vec())
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
    hooks: Vec<Box<dyn FnOnce() + Send>>,
}

impl MemTxn<'_> {
    fn deleted_by_range(&self, key: &[u8]) -> bool {
        self.ranges.iter().any(|(s, e)| key >= s.as_slice() && key < e.as_slice())
    }
}

impl KvTxn for MemTxn<'_> {
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
        let doomed: Vec<Vec<u8>> = self.staged.range(start.to_vec()..end.to_vec()).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.staged.remove(&k);
        }
        self.ranges.push((start.to_vec(), end.to_vec()));
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .base
            .range(start.to_vec()..end.to_vec())
            .filter(|(k, _)| !self.deleted_by_range(k))
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for (k, v) in self.staged.range(start.to_vec()..end.to_vec()) {
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
    fn on_commit(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.hooks.push(f);
    }
}

#[async_trait]
impl Backend for MemoryState {
    async fn propose(&self, command: Vec<u8>) -> Result<Result<Vec<u8>, Vec<u8>>> {
        let mut index = self.index.lock().expect("lock");
        *index += 1;
        let mut data = self.data.write().expect("lock");
        let (result, staged, ranges, hooks) = {
            let mut txn =
                MemTxn { base: &data, staged: BTreeMap::new(), ranges: Vec::new(), index: *index, hooks: Vec::new() };
            let r = self.app.apply(&command, &mut txn);
            (r, txn.staged, txn.ranges, txn.hooks)
        };
        if result.is_ok() {
            for (s, e) in ranges {
                let doomed: Vec<Vec<u8>> = data.range(s..e).map(|(k, _)| k.clone()).collect();
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
        }
        Ok(result)
    }
    async fn catch_up(&self, _after_conflict: bool) -> Result<()> {
        Ok(())
    }
}
