//! Vector search for QuorumDB: SIMD distance kernels, vector values and metrics with
//! pgvector's semantics, and HNSW indexes (on `hnsw_rs`) with tombstones, filtered search and
//! dump/load. Knows nothing of Raft or SQL: the SQL crate decides which points an index holds
//! and keeps it in step with the replicated rows.

mod dump_check;
pub mod error;
mod flat;
pub mod hnsw;
pub mod kernels;
pub mod metric;

pub use error::{Result, VectorError};
pub use hnsw::{Hit, HnswIndex, IndexSpec};
pub use metric::Metric;

/// The `k` smallest `(distance, item)` pairs seen, for exact searches.
#[derive(Debug)]
pub struct TopK<T> {
    k: usize,
    heap: std::collections::BinaryHeap<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T>(f64, T);

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl<T> TopK<T> {
    pub fn new(k: usize) -> Self {
        Self { k, heap: std::collections::BinaryHeap::with_capacity(k.min(4096) + 1) }
    }

    /// The distance an item must beat to enter (infinite until `k` items are in).
    pub fn bound(&self) -> f64 {
        if self.heap.len() < self.k { f64::INFINITY } else { self.heap.peek().map_or(f64::INFINITY, |e| e.0) }
    }

    pub fn push(&mut self, distance: f64, item: T) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Entry(distance, item));
        } else if distance < self.bound() {
            self.heap.pop();
            self.heap.push(Entry(distance, item));
        }
    }

    /// Nearest first.
    pub fn into_sorted(self) -> Vec<(f64, T)> {
        self.heap.into_sorted_vec().into_iter().map(|e| (e.0, e.1)).collect()
    }
}
