#!/usr/bin/env python3
"""hnswlib or FAISS HNSW on the data `vector_bench --write DIR` wrote: build time (one thread),
recall@k and single-thread QPS at several ef values, one query at a time — the peers of the
side-by-side in docs/benchmarks.md.

    pip install numpy hnswlib faiss-cpu
    python3 scripts/peer_bench.py hnswlib DIR [--m 16] [--ef-construction 64] [--ef 10,20,40,64,100,128,200]
    python3 scripts/peer_bench.py faiss DIR ...
"""
import argparse
import time

import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    return raw.reshape(-1, d + 1)[:, 1:].view(dtype).copy()


def hnswlib_index(base, m, ef_construction):
    import hnswlib

    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.set_num_threads(1)
    index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction, random_seed=100)
    index.add_items(base, np.arange(len(base)))

    def search(q, k, ef):
        index.set_ef(ef)
        return index.knn_query(q, k=k)[0][0]

    return "hnswlib 0.8", search


def faiss_index(base, m, ef_construction):
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(base.shape[1], m)
    index.hnsw.efConstruction = ef_construction
    index.add(base)

    def search(q, k, ef):
        index.hnsw.efSearch = ef
        return index.search(q.reshape(1, -1), k)[1][0]

    return f"faiss {faiss.__version__} IndexHNSWFlat", search


def main():
    p = argparse.ArgumentParser()
    p.add_argument("lib", choices=["hnswlib", "faiss"])
    p.add_argument("dir")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef", default="10,20,40,64,100,128,200")
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    base = read_vecs(f"{a.dir}/base.fvecs", np.float32)
    queries = read_vecs(f"{a.dir}/query.fvecs", np.float32)
    truth = read_vecs(f"{a.dir}/truth.ivecs", np.int32)[:, : a.k]
    build = hnswlib_index if a.lib == "hnswlib" else faiss_index
    t = time.perf_counter()
    name, search = build(base, a.m, a.ef_construction)
    secs = time.perf_counter() - t
    print(f"{name}: {len(base)} x {base.shape[1]}, build (1 thread) {secs:.2f} s, "
          f"{len(base) / secs:.0f} inserts/s, M={a.m} ef_construction={a.ef_construction}")
    print(f"{'ef':>6} {'recall@k':>10} {'QPS 1 thread':>14}")
    for ef in [int(x) for x in a.ef.split(",")]:
        ef = max(ef, a.k)
        t = time.perf_counter()
        found = [search(q, a.k, ef) for q in queries]
        qps = len(queries) / (time.perf_counter() - t)
        hits = sum(len(set(f.tolist()) & set(tr.tolist())) for f, tr in zip(found, truth))
        print(f"{ef:>6} {hits / (len(queries) * a.k):>10.4f} {qps:>14.0f}")


if __name__ == "__main__":
    main()
