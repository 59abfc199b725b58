//! Vector search benchmark: builds an HNSW index over `.fvecs` files (the format of the public
//! SIFT/GIST sets) or generated clustered data, and prints build time, memory, and recall@k
//! and queries/s at several `ef` values, on one thread and on all threads; plus a distance
//! kernel micro-benchmark (SIMD against the portable and naive loops).
//!
//! ```text
//! cargo run --release -p quorumdb-vector --example vector_bench -- --generate 20000 --dim 128
//! cargo run --release -p quorumdb-vector --example vector_bench -- --base b.fvecs --query q.fvecs [--truth gt.ivecs]
//! ```
//! `--write DIR` saves the data as `.fvecs`/`.ivecs` so another library can be run on it
//! (`scripts/peer_bench.py hnswlib|faiss DIR`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure ends the run with its message

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use quorumdb_vector::{HnswIndex, IndexSpec, Metric, TopK, kernels};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: Option<PathBuf>,
    #[arg(long)]
    query: Option<PathBuf>,
    /// Ground truth (`.ivecs`); computed exactly when absent.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Generate this many clustered base vectors instead of reading files.
    #[arg(long, default_value_t = 20_000)]
    generate: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// l2, cosine or ip.
    #[arg(long, default_value = "l2")]
    metric: String,
    #[arg(long, default_value_t = IndexSpec::DEFAULT_M)]
    m: usize,
    #[arg(long, default_value_t = IndexSpec::DEFAULT_EF_CONSTRUCTION)]
    ef_construction: usize,
    #[arg(long, value_delimiter = ',', default_value = "10,20,40,64,100,128,200")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Write base/query/truth files to this directory.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// splitmix64: a small deterministic generator, enough for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Embedding-like data: clusters in a 16-dimensional latent space, mapped linearly into
/// `dim` dimensions, plus a little noise (the same recipe as the recall test).
fn clustered(n: usize, dim: usize, seed: u64, map_seed: u64) -> Vec<Vec<f32>> {
    let (latent, clusters) = (16, 64);
    let mut mr = Rng(map_seed);
    let map: Vec<Vec<f32>> = (0..dim).map(|_| (0..latent).map(|_| mr.uniform(-1.0, 1.0)).collect()).collect();
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| (0..latent).map(|_| mr.uniform(-3.0, 3.0)).collect()).collect();
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let c = &centres[(r.next() % clusters as u64) as usize];
            let z: Vec<f32> = c.iter().map(|x| x + r.uniform(-1.0, 1.0)).collect();
            map.iter().map(|row| row.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>() + r.uniform(-0.05, 0.05)).collect()
        })
        .collect()
}

fn read_vecs(path: &Path) -> std::io::Result<Vec<Vec<f32>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let d = u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        i += 4;
        let v = bytes[i..i + 4 * d].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        i += 4 * d;
        out.push(v);
    }
    Ok(out)
}

fn read_ivecs(path: &Path) -> std::io::Result<Vec<Vec<u64>>> {
    Ok(read_vecs(path)?.into_iter().map(|v| v.into_iter().map(|x| x.to_bits() as u64).collect()).collect())
}

fn write_vecs(path: &Path, rows: &[Vec<u32>]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        f.write_all(&(r.len() as u32).to_le_bytes())?;
        for x in r {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `f` over `items` split across `n` threads.
fn parallel<T: Sync, R: Send>(items: &[T], n: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(n.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn kernel_bench() {
    let dim = 128;
    let mut r = Rng(7);
    let vs: Vec<Vec<f32>> = (0..1024).map(|_| (0..dim).map(|_| r.uniform(-1.0, 1.0)).collect()).collect();
    let rounds = 2_000;
    let time = |name: &str, f: &dyn Fn(&[f32], &[f32]) -> f32| {
        let start = Instant::now();
        let mut acc = 0f32;
        for i in 0..rounds {
            for j in 0..vs.len() {
                acc += f(&vs[i % vs.len()], &vs[j]);
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (rounds * vs.len()) as f64;
        println!("  {name:<28} {ns:6.2} ns/call   (checksum {acc:.1})");
    };
    println!("distance kernels, {dim} dims (SIMD in use: {}):", kernels::simd_in_use());
    time("dot (dispatch: AVX2+FMA)", &|a, b| kernels::dot(a, b));
    time("dot portable (8 lanes)", &|a, b| kernels::portable::dot(a, b));
    time("dot naive loop", &|a, b| kernels::portable::dot_naive(a, b));
    time("l2_squared (dispatch)", &|a, b| kernels::l2_squared(a, b));
    time("l2_squared portable", &|a, b| kernels::portable::l2_squared(a, b));
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    kernel_bench();
    let metric = match a.metric.as_str() {
        "l2" => Metric::L2,
        "cosine" => Metric::Cosine,
        "ip" => Metric::InnerProduct,
        m => panic!("unknown metric {m}"),
    };
    let (base, queries) = match (&a.base, &a.query) {
        (Some(b), Some(q)) => (read_vecs(b)?, read_vecs(q)?),
        _ => (clustered(a.generate, a.dim, 1, 99), clustered(a.queries, a.dim, 2, 99)),
    };
    let dim = base[0].len();
    println!("data: {} base x {dim} dims, {} queries, metric {metric}, k={}", base.len(), queries.len(), a.k);
    let t = Instant::now();
    let truth: Vec<Vec<u64>> = match &a.truth {
        Some(p) => read_ivecs(p)?.into_iter().map(|v| v.into_iter().take(a.k).collect()).collect(),
        None => parallel(&queries, threads(), |q| {
            let mut top = TopK::new(a.k);
            for (i, v) in base.iter().enumerate() {
                top.push(metric.distance(q, v), i as u64);
            }
            top.into_sorted().into_iter().map(|(_, i)| i).collect()
        }),
    };
    println!("exact ground truth: {:.2} s", t.elapsed().as_secs_f64());
    if let Some(dir) = &a.write {
        std::fs::create_dir_all(dir)?;
        let bits =
            |vs: &[Vec<f32>]| vs.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect::<Vec<Vec<u32>>>();
        write_vecs(&dir.join("base.fvecs"), &bits(&base))?;
        write_vecs(&dir.join("query.fvecs"), &bits(&queries))?;
        write_vecs(
            &dir.join("truth.ivecs"),
            &truth.iter().map(|v| v.iter().map(|x| *x as u32).collect()).collect::<Vec<_>>(),
        )?;
        println!("wrote base.fvecs, query.fvecs, truth.ivecs to {}", dir.display());
    }

    let spec = IndexSpec { dim, metric, m: a.m, ef_construction: a.ef_construction };
    let rss0 = rss_mib();
    let t = Instant::now();
    let index = HnswIndex::with_capacity(spec, base.len());
    for (i, v) in base.iter().enumerate() {
        index.insert(i as u64, v);
    }
    let build = t.elapsed().as_secs_f64();
    println!(
        "build (one thread, as apply does): {build:.2} s, {:.0} inserts/s, m={} ef_construction={}, +{:.0} MiB RSS ({:.0} MiB of raw vectors)",
        base.len() as f64 / build,
        a.m,
        a.ef_construction,
        rss_mib() - rss0,
        (base.len() * dim * 4) as f64 / (1024.0 * 1024.0)
    );
    {
        let points: Vec<(u64, Vec<f32>)> = base.iter().enumerate().map(|(i, v)| (i as u64, v.clone())).collect();
        let t = Instant::now();
        let parallel = HnswIndex::with_capacity(spec, base.len());
        parallel.insert_parallel(&points);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "build ({} threads, as CREATE INDEX and recovery do): {secs:.2} s, {:.0} inserts/s",
            threads(),
            base.len() as f64 / secs
        );
    }
    let rss1 = rss_mib();
    let t = Instant::now();
    index.refresh();
    println!("flat copy for searches: {:.3} s, +{:.0} MiB RSS", t.elapsed().as_secs_f64(), rss_mib() - rss1);
    println!("{:>6} {:>10} {:>14} {:>14}", "ef", "recall@k", "QPS 1 thread", format!("QPS {} threads", threads()));
    for &ef in &a.ef {
        let run = |q: &Vec<f32>| index.search(q, a.k, ef, None).iter().map(|h| h.id).collect::<Vec<u64>>();
        let t = Instant::now();
        let got: Vec<Vec<u64>> = queries.iter().map(run).collect();
        let qps1 = queries.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = parallel(&queries, threads(), run);
        let qpsn = queries.len() as f64 / t.elapsed().as_secs_f64();
        let hits: usize = got.iter().zip(&truth).map(|(g, t)| t.iter().filter(|x| g.contains(x)).count()).sum();
        let recall = hits as f64 / (queries.len() * a.k) as f64;
        println!("{ef:>6} {recall:>10.4} {qps1:>14.0} {qpsn:>14.0}");
    }
    Ok(())
}
