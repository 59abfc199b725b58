//! SQL for QuorumDB (issue 3): parsing, catalog and typed commands. Knows nothing of Raft.
