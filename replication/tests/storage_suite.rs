//! openraft's storage conformance suite against our RocksDB log and state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use quorumdb_replication::TypeConfig;
use quorumdb_replication::kv::KvApp;
use quorumdb_replication::log_store::LogStore;
use quorumdb_replication::state_machine::StateMachineStore;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("log")).expect("open log");
        let sm = StateMachineStore::open(
            dir.path(),
            Arc::new(quorumdb_replication::Router::new().with(quorumdb_replication::kv::TAG, Arc::new(KvApp))),
        )
        .expect("open state");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_stores_pass_openraft_suite() {
    Suite::test_all(RocksBuilder).await.expect("storage suite");
}
