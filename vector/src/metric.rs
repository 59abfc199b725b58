//! Vector values and distances as users see them: parsing and printing `'[1,2,3]'`, validation
//! (dimension, NaN/infinity), the three metrics with pgvector's exact semantics, and the
//! order-preserving, non-negative form of each that the HNSW graph works with.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VectorError};
use crate::kernels;

/// A distance metric, named after pgvector's operator classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Euclidean distance, `<->`, `vector_l2_ops`.
    L2,
    /// Cosine distance `1 - cos(a, b)`, `<=>`, `vector_cosine_ops`.
    Cosine,
    /// Negative inner product, `<#>`, `vector_ip_ops`.
    InnerProduct,
}

impl Metric {
    /// From a pgvector operator class name.
    pub fn from_opclass(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "vector_l2_ops" => Some(Self::L2),
            "vector_cosine_ops" => Some(Self::Cosine),
            "vector_ip_ops" => Some(Self::InnerProduct),
            _ => None,
        }
    }

    pub fn opclass(self) -> &'static str {
        match self {
            Self::L2 => "vector_l2_ops",
            Self::Cosine => "vector_cosine_ops",
            Self::InnerProduct => "vector_ip_ops",
        }
    }

    /// The SQL function computing this metric's distance.
    pub fn function(self) -> &'static str {
        match self {
            Self::L2 => "l2_distance",
            Self::Cosine => "cosine_distance",
            Self::InnerProduct => "negative_inner_product",
        }
    }

    /// Exact distance with pgvector's semantics (cosine of a zero vector is NaN).
    pub fn distance(self, a: &[f32], b: &[f32]) -> f64 {
        match self {
            Self::L2 => f64::from(kernels::l2_squared(a, b)).sqrt(),
            Self::Cosine => cosine_distance(a, b),
            Self::InnerProduct => -f64::from(kernels::dot(a, b)),
        }
    }

    /// Prepares a vector for the graph: cosine works on unit vectors.
    pub fn prepare(self, v: &[f32]) -> Vec<f32> {
        match self {
            Self::Cosine => l2_normalize(v),
            _ => v.to_vec(),
        }
    }

    /// The distance the graph orders by, on prepared vectors: non-negative (hnsw_rs requires
    /// it) and strictly increasing in the exact distance.
    #[inline]
    pub fn graph_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::L2 => kernels::l2_squared(a, b),
            Self::Cosine => (1.0 - kernels::dot(a, b)).max(0.0),
            Self::InnerProduct => {
                // Maps -dot from (-inf, inf) onto (0, inf), monotonically.
                let x = -kernels::dot(a, b);
                if x >= 0.0 { 1.0 + x } else { 1.0 / (1.0 - x) }
            }
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.opclass())
    }
}

pub fn norm(v: &[f32]) -> f64 {
    f64::from(kernels::dot(v, v)).sqrt()
}

pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return f64::NAN;
    }
    let cos = f64::from(kernels::dot(a, b)) / (na * nb);
    1.0 - cos.clamp(-1.0, 1.0)
}

/// `v / |v|`; the zero vector stays zero (as in pgvector).
pub fn l2_normalize(v: &[f32]) -> Vec<f32> {
    let n = norm(v);
    if n == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / n) as f32).collect()
}

/// Checks a vector's dimension (when one is expected) and that every element is finite.
pub fn validate(v: &[f32], dim: Option<usize>) -> Result<()> {
    if let Some(d) = dim
        && v.len() != d
    {
        return Err(VectorError::Dimension { expected: d, actual: v.len() });
    }
    if v.is_empty() {
        return Err(VectorError::InvalidParameter("vectors must have at least 1 dimension".into()));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::NotFinite);
    }
    Ok(())
}

/// Parses pgvector's text form `[1, 2.5, -3e2]` and validates it.
pub fn parse(text: &str, dim: Option<usize>) -> Result<Vec<f32>> {
    let syntax = || VectorError::Syntax(format!("\"{}\"", truncate(text, 60)));
    let inner = text.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(syntax)?;
    let v: Vec<f32> = if inner.trim().is_empty() {
        Vec::new()
    } else {
        inner.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|_| syntax())?
    };
    validate(&v, dim)?;
    Ok(v)
}

/// pgvector's text form: `[1,2.5,-300]`.
pub fn format(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 8 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}...", s.chars().take(max).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_pgvector_text() {
        assert_eq!(parse("[1, 2.5,-3e2]", Some(3)).unwrap(), vec![1.0, 2.5, -300.0]);
        assert_eq!(format(&[1.0, 2.5, -300.0]), "[1,2.5,-300]");
        assert!(matches!(parse("[1,2]", Some(3)), Err(VectorError::Dimension { expected: 3, actual: 2 })));
        assert!(matches!(parse("[1,NaN]", None), Err(VectorError::NotFinite)));
        assert!(matches!(parse("[1,inf]", None), Err(VectorError::NotFinite)));
        assert!(matches!(parse("1,2", None), Err(VectorError::Syntax(_))));
        assert!(matches!(parse("[1,,2]", None), Err(VectorError::Syntax(_))));
        assert!(parse("[]", None).is_err());
    }

    #[test]
    fn distances_follow_pgvector() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        assert!((Metric::L2.distance(&a, &b) - 5f64.sqrt()).abs() < 1e-6);
        assert!((Metric::Cosine.distance(&a, &b) - 1.0).abs() < 1e-6);
        assert!((Metric::InnerProduct.distance(&[1.0, 2.0], &[3.0, 4.0]) + 11.0).abs() < 1e-6);
        assert!(Metric::Cosine.distance(&[0.0, 0.0], &b).is_nan());
    }

    #[test]
    fn graph_distances_are_non_negative_and_order_preserving() {
        let q = [0.3f32, -1.2, 2.0];
        let pts: Vec<[f32; 3]> =
            (0..50).map(|i| [(i as f32 * 0.7).sin() * 3.0, (i as f32).cos(), i as f32 / 10.0]).collect();
        for m in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            let pq = m.prepare(&q);
            let mut by_exact: Vec<usize> = (0..pts.len()).collect();
            by_exact.sort_by(|&i, &j| m.distance(&q, &pts[i]).total_cmp(&m.distance(&q, &pts[j])));
            let graph: Vec<f32> = by_exact.iter().map(|&i| m.graph_distance(&pq, &m.prepare(&pts[i]))).collect();
            assert!(graph.iter().all(|d| *d >= 0.0), "{m}");
            assert!(graph.windows(2).all(|w| w[0] <= w[1] + 1e-5), "{m}: {graph:?}");
        }
    }
}
