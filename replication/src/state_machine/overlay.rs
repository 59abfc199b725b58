//! The writes of one apply batch, staged over the database: each command sees the committed
//! state plus the writes of the batch's earlier commands plus its own, and a rejected
//! command's writes are dropped without touching anyone else's.

use std::collections::BTreeMap;

use quorumdb_state::keys::in_range;
use quorumdb_state::{CommitHook, StateTxn};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions};

use super::store::{CF_DATA, cf};
use crate::error::storage_err;

/// Staged writes: point writes plus range deletions that came before all of them.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) points: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub(super) ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Staged {
    fn covered(&self, key: &[u8]) -> bool {
        self.ranges.iter().any(|(s, e)| in_range(key, s, e))
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        if !end.is_empty() && start >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self.points_in(start, end).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.points.remove(&k);
        }
        self.ranges.push((start.to_vec(), end.to_vec()));
    }

    /// Layers `later` over `self`.
    fn absorb(&mut self, later: Staged) {
        for (s, e) in later.ranges {
            self.delete_range(&s, &e);
        }
        self.points.extend(later.points);
    }

    /// The staged points in `start..end`.
    fn points_in<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> {
        self.points.range(start.to_vec()..).take_while(move |(k, _)| end.is_empty() || k.as_slice() < end)
    }
}

/// Writes staged by one apply batch, layered over the database.
pub(super) struct Overlay<'a> {
    db: &'a DB,
    pub(super) batch: Staged,
    command: Staged,
    index: u64,
    pub(super) batch_hooks: Vec<CommitHook>,
    command_hooks: Vec<CommitHook>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(db: &'a DB) -> Self {
        Self {
            db,
            batch: Staged::default(),
            command: Staged::default(),
            index: 0,
            batch_hooks: Vec::new(),
            command_hooks: Vec::new(),
        }
    }

    /// Starts the command of log entry `index`.
    pub(super) fn begin(&mut self, index: u64) {
        self.index = index;
    }

    /// Keeps the current command's writes and hooks in the batch.
    pub(super) fn keep(&mut self) {
        let staged = std::mem::take(&mut self.command);
        self.batch.absorb(staged);
        let hooks = std::mem::take(&mut self.command_hooks);
        self.batch_hooks.extend(hooks);
    }

    /// Drops the current command's writes and hooks.
    pub(super) fn discard(&mut self) {
        self.command = Staged::default();
        self.command_hooks.clear();
    }
}

impl StateTxn for Overlay<'_> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        for layer in [&self.command, &self.batch] {
            if let Some(v) = layer.points.get(key) {
                return Ok(v.clone());
            }
            if layer.covered(key) {
                return Ok(None);
            }
        }
        self.db.get_cf(cf(self.db, CF_DATA)?, key).map_err(storage_err)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.command.points.insert(key.to_vec(), Some(value.to_vec()));
    }

    fn delete(&mut self, key: &[u8]) {
        self.command.points.insert(key.to_vec(), None);
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        self.command.delete_range(start, end);
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        // Merge the database's pairs (minus what the layers delete) with the layers' points.
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut ro = ReadOptions::default();
        if !end.is_empty() {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        for item in self.db.iterator_cf_opt(cf(self.db, CF_DATA)?, ro, IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(storage_err)?;
            if !self.batch.covered(&k) && !self.command.covered(&k) {
                merged.insert(k.to_vec(), Some(v.to_vec()));
            }
        }
        for (k, v) in self.batch.points_in(start, end) {
            if !self.command.covered(k) {
                merged.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in self.command.points_in(start, end) {
            merged.insert(k.clone(), v.clone());
        }
        for (k, v) in &merged {
            if let Some(v) = v
                && !f(k, v)
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
        self.command_hooks.push(f);
    }
}
