//! Cluster tests, one binary, numbered by kind (as openraft's):
//! t0x formats and old data, t1x basic replication, t2x failures and recovery, t3x membership and
//! leadership, t4x network faults, t5x separate processes, t6x SQL, t7x vectors, t8x clients
//! and loaders, t9x snapshots and backups.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

mod t06_old_format;
mod t10_election;
mod t11_replication;
mod t12_follower_reads;
mod t20_leader_kill;
mod t21_catch_up;
mod t22_chaos;
mod t23_exactly_once;
mod t24_disk_faults;
mod t30_membership;
mod t31_transfer_leader;
mod t32_rolling_upgrade;
mod t33_join_checks;
mod t40_pre_vote;
mod t50_processes;
mod t60_sql;
mod t61_sql_determinism;
mod t62_sql_corpus;
mod t70_vectors;
mod t72_index_failure;
mod t80_resp;
mod t82_load;
mod t84_shell;
mod t86_pgwire;
mod t87_auth;
mod t88_http_fuzz;
mod t89_pg_wire_fuzz;
mod t90_snapshots;
mod t92_backup;
mod t93_backup_dir;
mod t94_tls;
