//! Library parts of the example clients: loaders callable from their binaries and from tests.

pub mod backup;
pub mod load;
pub mod load_command;
pub mod vectors;

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
