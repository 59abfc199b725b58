//! Fuzz targets of the vector file readers of `quorumdb load-vectors`: the `.npy` header
//! parser, `.npy` and `.fvecs` files read to their end, and `.npy` ids files. Whatever the
//! bytes, reading returns (an error for a bad file) and never panics, hangs or asks for more
//! memory than the file could fill. See `state/tests/support/fuzz.rs` (cases:
//! `QUORUMDB_FUZZ_CASES`, default 2,000 per target).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

#[path = "../../state/tests/support/fuzz.rs"]
mod fuzz;

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use quorumdb_client::vectors::{VectorFile, parse_npy_header, read_ids};

/// An `.npy` file: the magic, format `version`, the header (padded as NumPy pads it) and `data`.
fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let prefix = if version == 1 { 10 } else { 12 };
    let mut h = header.to_string();
    while !(prefix + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY".to_vec();
    b.extend_from_slice(&[version, 0]);
    if version == 1 {
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    } else {
        b.extend_from_slice(&(h.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// Valid files of every kind the readers take.
fn npy_seeds() -> Vec<Vec<u8>> {
    let vectors = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
    let ids: Vec<u8> = [7i64, -3].iter().flat_map(|i| i.to_le_bytes()).collect();
    let ids4: Vec<u8> = [7u32, 3].iter().flat_map(|i| i.to_le_bytes()).collect();
    vec![
        npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &vectors),
        npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", &vectors),
        npy(3, "{'shape': (1, 6), 'fortran_order': True, 'descr': '<f4'}", &vectors),
        npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", &ids),
        npy(1, "{'descr': '<u4', 'fortran_order': False, 'shape': (2L,), }", &ids4),
    ]
}

fn fvecs_seeds() -> Vec<Vec<u8>> {
    let mut two = Vec::new();
    for v in [[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.5]] {
        two.extend_from_slice(&3u32.to_le_bytes());
        two.extend_from_slice(&f32s(&v));
    }
    let mut one = 1u32.to_le_bytes().to_vec();
    one.extend_from_slice(&f32s(&[0.25]));
    vec![two, one]
}

const NPY_TOKENS: &[&[u8]] = &[
    b"\x93NUMPY",
    b"\x01\x00",
    b"\x02\x00",
    b"\xff\xff",
    b"\xff\xff\xff\xff",
    b"{",
    b"}",
    b"(",
    b")",
    b",",
    b":",
    b"'",
    b"'descr'",
    b"'<f4'",
    b"'<i8'",
    b"'<u8'",
    b"'<i4'",
    b"'fortran_order'",
    b"True",
    b"False",
    b"'shape'",
    b"(2, 3)",
    b"()",
    b"(,)",
    b"0",
    b"1",
    b"18446744073709551615",
    b"4611686018427387904",
    b"9223372036854775807",
    b"4294967296",
    b"18446744073709551616",
    b"1L",
    b"-1",
    b"\xc3\xa9",
    b"\xe2\x9c\x93",
    b"\xff",
];

/// Well-formed `.npy` files with any header values: every type string, both orders, shapes of
/// any rank with dimensions from 0 to `u64::MAX`, the fields in any order, any of the three
/// format versions, and data of any length.
fn structured_npy() -> BoxedStrategy<fuzz::Bytes> {
    let dimension =
        prop_oneof![0u64..5, 0u64..100_000, any::<u64>(), Just(u64::MAX), (0u32..64).prop_map(|b| 1u64 << b)];
    let descr = proptest::sample::select(vec!["<f4", "<f8", ">f4", "<i8", "<u8", "<i4", "<u4", "|u1", "", "<f4'"]);
    (
        1u8..=3,
        descr,
        any::<bool>(),
        vec(dimension, 0..4),
        proptest::sample::select(vec![[0, 1, 2], [2, 1, 0], [1, 2, 0]]),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(version, descr, fortran, shape, order, data)| {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
            let fields = [
                format!("'descr': '{descr}'"),
                format!("'fortran_order': {}", if fortran { "True" } else { "False" }),
                format!("'shape': {shape}"),
            ];
            let header = format!("{{{}, }}", order.iter().map(|&i| fields[i].as_str()).collect::<Vec<_>>().join(", "));
            fuzz::Bytes(npy(version, &header, &data))
        })
        .boxed()
}

fn npy_inputs() -> BoxedStrategy<fuzz::Bytes> {
    prop_oneof![3 => fuzz::inputs(npy_seeds(), NPY_TOKENS, 200), 2 => structured_npy()].boxed()
}

const FVECS_TOKENS: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[1, 0, 0, 0],
    &[3, 0, 0, 0],
    &[0xff, 0xff, 0, 0],
    &[0, 0, 1, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0xc0, 0x7f],
];

/// Every vector of the file at `path` (`VectorFile::open`, then `next_vector` to the end):
/// never more vectors than the file has bytes for.
fn read_all(path: &Path, size: usize) -> anyhow::Result<usize> {
    let mut f = VectorFile::open(path)?;
    assert!(f.dim > 0);
    let mut n = 0;
    while let Some(v) = f.next_vector()? {
        assert!(!v.is_empty());
        n += 1;
        assert!(n * 4 <= size, "{n} vectors out of {size} bytes: the reader does not stop");
    }
    Ok(n)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn npy_header_parse_never_panics(input in npy_inputs()) {
        fuzz::bounded("parse_npy_header", &input.0, || {
            if let Ok(h) = parse_npy_header(&input.0) {
                prop_assert!(h.data_offset <= input.0.len());
            }
            Ok(())
        })?;
    }

    #[test]
    fn npy_files_read_never_panics(input in npy_inputs()) {
        thread_local! {
            static DIR: tempfile::TempDir = fuzz::scratch_dir();
        }
        DIR.with(|dir| fuzz::bounded("VectorFile (.npy)", &input.0, || {
            let path = dir.path().join("v.npy");
            std::fs::write(&path, &input.0).unwrap();
            let _ = read_all(&path, input.0.len());
            if let Ok(ids) = read_ids(&path) {
                assert!(ids.len() * 4 <= input.0.len());
            }
        }));
    }

    #[test]
    fn fvecs_files_read_never_panics(input in fuzz::inputs(fvecs_seeds(), FVECS_TOKENS, 200)) {
        thread_local! {
            static DIR: tempfile::TempDir = fuzz::scratch_dir();
        }
        DIR.with(|dir| fuzz::bounded("VectorFile (.fvecs)", &input.0, || {
            let path = dir.path().join("v.fvecs");
            std::fs::write(&path, &input.0).unwrap();
            let _ = read_all(&path, input.0.len());
        }));
    }
}

/// The seeds read (the mutations start from valid files).
#[test]
fn the_seeds_read() {
    let dir = tempfile::tempdir().unwrap();
    for (i, b) in npy_seeds().iter().enumerate() {
        assert!(parse_npy_header(b).is_ok(), "seed {i}");
    }
    let path = dir.path().join("v.npy");
    std::fs::write(&path, &npy_seeds()[0]).unwrap();
    assert_eq!(read_all(&path, npy_seeds()[0].len()).unwrap(), 2);
    let path = dir.path().join("v.fvecs");
    std::fs::write(&path, &fvecs_seeds()[0]).unwrap();
    assert_eq!(read_all(&path, fvecs_seeds()[0].len()).unwrap(), 2);
}

/// Regression (npy_files_read_never_panics): an ids file whose shape claims more than `u64`
/// bytes ("attempt to multiply with overflow") or exabytes ("memory allocation of
/// 7509226551831814560 bytes failed", an abort), and a vectors file whose shape overflows the
/// size check, are errors.
#[test]
fn regression_npy_shapes_beyond_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.npy");
    for n in [1u64 << 61, 1 << 60, 938653318978976820, u64::MAX] {
        let b = npy(1, &format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({n},), }}"), &[0; 16]);
        std::fs::write(&path, b).unwrap();
        assert!(read_ids(&path).is_err(), "{n}");
    }
    let path = dir.path().join("v.npy");
    for (n, dim) in [(1u64 << 62, 16u64), (u64::MAX, 1), (1 << 60, 4)] {
        let b = npy(1, &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}"), &[0; 64]);
        std::fs::write(&path, b).unwrap();
        assert!(VectorFile::open(&path).is_err(), "{n} x {dim}");
    }
}
