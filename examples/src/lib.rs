//! Examples and benchmarks run against QuorumDB: `kv_bench`, `sql_bench`, `snapshot_bench`,
//! and the `load` / `vector_load` examples, which call the loaders of `quorumdb-client` (the
//! product's `quorumdb load`, `backup` and `restore` live there, not here).
//!
//! This library holds only what the benchmarks and the cluster tests share: latency
//! percentiles and poorly compressible text.

use std::time::Duration;

/// The `p` quantile (0..=1) of latencies sorted ascending, in milliseconds (0 when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// `len` printable characters from a xorshift generator advanced through `state`: values RocksDB's
/// LZ4 barely shrinks, for benchmarks and tests that need real bytes on disk.
pub fn noise_text(state: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            char::from(b'!' + (*state % 90) as u8)
        })
        .collect()
}
