//! Vector search for QuorumDB (issue 4): VECTOR columns and HNSW indexes. Knows nothing of Raft.
