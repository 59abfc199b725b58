#!/usr/bin/env python3
"""FAISS HNSW (IndexHNSWFlat) on the data `vector_bench --write DIR` wrote: build time,
recall@k and single-thread QPS at several ef values, one query at a time, for the side-by-side
in docs/benchmarks.md.

    pip install numpy faiss-cpu
    python3 scripts/faiss_bench.py DIR [--m 16] [--ef-construction 64] [--ef 10,20,40,64,100,128,200]
"""
import argparse
import time

import faiss
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    return raw.reshape(-1, d + 1)[:, 1:].view(dtype).copy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef", default="10,20,40,64,100,128,200")
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    base = read_vecs(f"{a.dir}/base.fvecs", np.float32)
    queries = read_vecs(f"{a.dir}/query.fvecs", np.float32)
    truth = read_vecs(f"{a.dir}/truth.ivecs", np.int32)[:, : a.k]
    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(base.shape[1], a.m)
    index.hnsw.efConstruction = a.ef_construction
    t = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - t
    print(f"faiss {faiss.__version__} IndexHNSWFlat: {len(base)} x {base.shape[1]}, build (1 thread) {build:.2f} s, "
          f"{len(base) / build:.0f} inserts/s, M={a.m} efConstruction={a.ef_construction}")
    print(f"{'ef':>6} {'recall@k':>10} {'QPS 1 thread':>14}")
    for ef in [int(x) for x in a.ef.split(",")]:
        index.hnsw.efSearch = max(ef, a.k)
        t = time.perf_counter()
        found = [index.search(q.reshape(1, -1), a.k)[1][0] for q in queries]  # one query at a time
        qps = len(queries) / (time.perf_counter() - t)
        hits = sum(len(set(f.tolist()) & set(tr.tolist())) for f, tr in zip(found, truth))
        print(f"{ef:>6} {hits / (len(queries) * a.k):>10.4f} {qps:>14.0f}")


if __name__ == "__main__":
    main()
