//! A read-only, flat copy of an `hnsw_rs` graph for fast searches.
//!
//! `hnsw_rs` keeps every point behind `Arc`s and locks, and its search allocates per visited
//! candidate; that makes it several times slower than hnswlib at the same recall. This copy
//! holds the same graph as dense arrays — node vectors back to back, per-layer neighbour lists
//! in CSR form, a visited-generation array per thread — and runs the standard HNSW search on
//! it (greedy descent through the upper layers, a beam of `ef` candidates on layer 0). The
//! owner rebuilds it from the live graph now and then and covers the points inserted since
//! with an exact scan ([`crate::HnswIndex`]).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::metric::Metric;

/// `(distance, node)` ordered by distance.
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// One layer's adjacency: neighbours of node `i` are `links[offsets[i]..offsets[i + 1]]`.
struct Layer {
    offsets: Vec<u32>,
    links: Vec<u32>,
}

/// A point as the copy is built from it: id, top level, vector, neighbour ids per layer.
pub(crate) type FlatPoint = (u64, usize, Vec<f32>, Vec<Vec<u64>>);

pub(crate) struct FlatGraph {
    metric: Metric,
    dim: usize,
    /// Node → point id.
    ids: Vec<u64>,
    /// Node vectors (prepared for the metric), `dim` each.
    vectors: Vec<f32>,
    layers: Vec<Layer>,
    entry: u32,
}

thread_local! {
    /// Per thread: the generation each node was last visited in, and the current generation.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl FlatGraph {
    /// Builds the copy from `(point id, level, vector, neighbour point ids per layer)`.
    pub(crate) fn build(metric: Metric, dim: usize, points: Vec<FlatPoint>) -> Option<Self> {
        if points.is_empty() {
            return None;
        }
        let index: HashMap<u64, u32> = points.iter().enumerate().map(|(i, p)| (p.0, i as u32)).collect();
        let top = points.iter().map(|p| p.1).max().unwrap_or(0);
        let n = points.len();
        let mut layers: Vec<Layer> =
            (0..=top).map(|_| Layer { offsets: Vec::with_capacity(n + 1), links: Vec::new() }).collect();
        let mut ids = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n * dim);
        let mut entry = 0;
        for (i, (id, level, v, neighbours)) in points.into_iter().enumerate() {
            if level == top && entry == 0 {
                entry = i as u32;
            }
            ids.push(id);
            vectors.extend_from_slice(&v);
            for (l, layer) in layers.iter_mut().enumerate() {
                layer.offsets.push(layer.links.len() as u32);
                if let Some(ns) = neighbours.get(l) {
                    layer.links.extend(ns.iter().filter_map(|d| index.get(d).copied()));
                }
            }
        }
        for layer in &mut layers {
            layer.offsets.push(layer.links.len() as u32);
        }
        let mut graph = Self { metric, dim, ids, vectors, layers, entry };
        graph.connect_unreachable(&index);
        Some(graph)
    }

    /// Makes every node reachable from the entry point on layer 0. `hnsw_rs`'s concurrent
    /// inserts and its neighbour pruning can leave a point, or a small cluster of points,
    /// that no other point links to: no search finds it at any `ef` (the chaos suite met 26
    /// such points in a parallel build of 3,500). Each part that cannot be reached gets one
    /// link from the nearest node a search does reach.
    fn connect_unreachable(&mut self, index: &HashMap<u64, u32>) {
        let n = self.ids.len();
        let mut reached = vec![false; n];
        self.mark_reachable(self.entry, &mut reached);
        let mut extra: Vec<(u32, u32)> = Vec::new();
        for u in 0..n as u32 {
            if reached[u as usize] {
                continue;
            }
            // The nearest reached node a search finds (the walk may pass through unreached
            // ones; only reached ones are answers), else the nearest reached node of all.
            let query = self.vector(u).to_vec();
            let is_reached = |id: u64| index.get(&id).is_some_and(|&node| reached[node as usize]);
            let found = self.search(&query, 1, 64, &is_reached).first().and_then(|(id, _)| index.get(id).copied());
            let anchor = found.or_else(|| {
                (0..n as u32).filter(|&node| reached[node as usize]).min_by(|&a, &b| {
                    let d = |node: u32| self.metric.graph_distance(&query, self.vector(node));
                    d(a).total_cmp(&d(b))
                })
            });
            let Some(anchor) = anchor else { continue };
            extra.push((anchor, u));
            self.mark_reachable(u, &mut reached);
        }
        if extra.is_empty() {
            return;
        }
        tracing::debug!(points = n, links = extra.len(), "linked unreachable HNSW points");
        extra.sort_unstable();
        let old = &self.layers[0];
        let mut layer =
            Layer { offsets: Vec::with_capacity(n + 1), links: Vec::with_capacity(old.links.len() + extra.len()) };
        let mut next = extra.iter().peekable();
        for node in 0..n as u32 {
            layer.offsets.push(layer.links.len() as u32);
            layer.links.extend_from_slice(self.neighbours(0, node));
            while let Some(&(_, to)) = next.next_if(|(from, _)| *from == node) {
                layer.links.push(to);
            }
        }
        layer.offsets.push(layer.links.len() as u32);
        self.layers[0] = layer;
    }

    /// Marks every node layer 0 reaches from `start` (walking only unmarked nodes).
    fn mark_reachable(&self, start: u32, reached: &mut [bool]) {
        let mut stack = vec![start];
        reached[start as usize] = true;
        while let Some(node) = stack.pop() {
            for &nb in self.neighbours(0, node) {
                if !reached[nb as usize] {
                    reached[nb as usize] = true;
                    stack.push(nb);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    #[inline]
    fn vector(&self, node: u32) -> &[f32] {
        let s = node as usize * self.dim;
        &self.vectors[s..s + self.dim]
    }

    #[inline]
    fn neighbours(&self, layer: usize, node: u32) -> &[u32] {
        let l = &self.layers[layer];
        &l.links[l.offsets[node as usize] as usize..l.offsets[node as usize + 1] as usize]
    }

    /// The `k` nearest nodes that `accept` lets through: `(point id, graph distance)`,
    /// nearest first. `query` is prepared for the metric. The filter only decides what is
    /// returned; the walk goes through rejected nodes too.
    pub(crate) fn search(&self, query: &[f32], k: usize, ef: usize, accept: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        let dist = |n: u32| self.metric.graph_distance(query, self.vector(n));
        let mut ep = self.entry;
        let mut d = dist(ep);
        for layer in (1..self.layers.len()).rev() {
            loop {
                let mut changed = false;
                for &nb in self.neighbours(layer, ep) {
                    let dn = dist(nb);
                    if dn < d {
                        d = dn;
                        ep = nb;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        let ef = ef.max(k);
        VISITED.with(|v| {
            let mut v = v.borrow_mut();
            let (marks, generation) = &mut *v;
            if marks.len() < self.ids.len() {
                marks.clear();
                marks.resize(self.ids.len(), 0);
                *generation = 0;
            }
            *generation = generation.wrapping_add(1);
            if *generation == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *generation = 1;
            }
            let g = *generation;
            // Candidates nearest first; results (accepted only) farthest first.
            let mut candidates: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::with_capacity(ef * 4);
            let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
            marks[ep as usize] = g;
            candidates.push(std::cmp::Reverse(Scored(d, ep)));
            if accept(self.ids[ep as usize]) {
                results.push(Scored(d, ep));
            }
            while let Some(std::cmp::Reverse(Scored(dc, c))) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|w| dc > w.0) {
                    break;
                }
                for &nb in self.neighbours(0, c) {
                    if marks[nb as usize] == g {
                        continue;
                    }
                    marks[nb as usize] = g;
                    let dn = dist(nb);
                    if results.len() < ef || results.peek().is_some_and(|w| dn < w.0) {
                        candidates.push(std::cmp::Reverse(Scored(dn, nb)));
                        if accept(self.ids[nb as usize]) {
                            results.push(Scored(dn, nb));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<(u64, f32)> = results.into_iter().map(|Scored(d, n)| (self.ids[n as usize], d)).collect();
            out.sort_by(|a, b| a.1.total_cmp(&b.1));
            out.truncate(k);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_nobody_links_to_is_linked_and_found() {
        // Points on a line; point 3 links to its neighbours but none links to it (what
        // hnsw_rs's pruning can leave), point 4 is reachable only through 3.
        let p = |id: u64, links: &[u64]| -> FlatPoint { (id, 0, vec![id as f32, 0.0], vec![links.to_vec()]) };
        let points = vec![p(0, &[1]), p(1, &[0, 2]), p(2, &[1]), p(3, &[2, 4]), p(4, &[3])];
        let g = FlatGraph::build(Metric::L2, 2, points).unwrap();
        for id in 0..5u64 {
            let got = g.search(&[id as f32, 0.0], 1, 10, &|_| true);
            assert_eq!(got.first().map(|h| h.0), Some(id), "point {id}");
        }
        // One link was added (from the nearest reached point, 2, to 3), not one per point.
        assert_eq!(g.neighbours(0, 2), &[1, 3]);
        assert_eq!(g.layers[0].links.len(), 8);
    }
}
