#!/usr/bin/env python3
"""Writes an N-row CSV for the bulk-load benchmark (docs/benchmarks.md, "Bulk load"):
id, n (int), x (float), label (short text), at (timestamp). Seeded, not committed.

    python3 scripts/gen_bulk_csv.py 1000000 > /tmp/bulk.csv
"""
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
rng = random.Random(7)
out = sys.stdout
out.write("id,n,x,label,at\n")
words = ["alpha", "bravo", "charlie", "delta", "echo", "fox", "golf", "hotel"]
for i in range(1, n + 1):
    out.write(
        f"{i},{rng.randint(-1_000_000, 1_000_000)},{rng.random() * 1000:.4f},"
        f"{rng.choice(words)}-{i % 997},2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}\n"
    )
