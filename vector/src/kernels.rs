//! Distance kernels: dot product and squared Euclidean distance over `f32` slices.
//!
//! Every distance the database computes — HNSW construction and search, exact scans, the SQL
//! operators — goes through these two functions. On x86-64 CPUs with AVX2 and FMA (checked at
//! run time, once) they run 8-wide fused multiply-adds over four independent accumulators; on
//! anything else a portable version with eight independent accumulators, which the compiler
//! vectorises with the baseline instruction set. This is the only module allowed `unsafe`:
//! unaligned 256-bit loads from slices whose bounds are checked before each load.
#![allow(unsafe_code)]

/// `sum(a[i] * b[i])`. The slices must have the same length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { x86::dot(a, b) };
    }
    portable::dot(a, b)
}

/// `sum((a[i] - b[i])^2)`. The slices must have the same length.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { x86::l2_squared(a, b) };
    }
    portable::l2_squared(a, b)
}

/// The portable kernels, also used by the micro-benchmark as the baseline.
pub mod portable {
    const LANES: usize = 8;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// One accumulator, in order: what a naive loop does (the micro-benchmark's reference).
    pub fn dot_naive(a: &[f32], b: &[f32]) -> f32 {
        let mut s = 0f32;
        for i in 0..a.len() {
            s += a[i] * b[i];
        }
        s
    }
}

/// Whether the AVX2 + FMA kernels are in use on this CPU.
pub fn simd_in_use() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2() -> bool {
    // The standard library caches the CPUID answer; this is one atomic load.
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): `i + 32 <= n` / `i + 8 <= n` bound every 8-lane load within both slices.
        while i + 32 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j))) };
                *a = _mm256_fmadd_ps(x, y, *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): `i + 32 <= n` / `i + 8 <= n` bound every 8-lane load within both slices.
        while i + 32 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j))) };
                let d = _mm256_sub_ps(x, y);
                *a = _mm256_fmadd_ps(d, d, *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            let d = _mm256_sub_ps(x, y);
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        while i < n {
            let d = a[i] - b[i];
            s += d * d;
            i += 1;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_the_naive_loop() {
        for n in [0usize, 1, 3, 7, 8, 9, 31, 32, 33, 100, 128, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 3.0).collect();
            let want_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            let want_l2: f64 = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
            let tol = |w: f64| 1e-4 * w.abs().max(1.0);
            for got in [dot(&a, &b), portable::dot(&a, &b)] {
                assert!((f64::from(got) - want_dot).abs() <= tol(want_dot), "dot n={n}: {got} vs {want_dot}");
            }
            for got in [l2_squared(&a, &b), portable::l2_squared(&a, &b)] {
                assert!((f64::from(got) - want_l2).abs() <= tol(want_l2), "l2 n={n}: {got} vs {want_l2}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "different lengths")]
    fn mismatched_lengths_panic_rather_than_read_out_of_bounds() {
        dot(&[1.0, 2.0], &[1.0]);
    }
}
