//! Fuzz targets of the encodings this crate owns: the versioned envelope (`format::split`,
//! `format::decode_named`), system commands, exactly-once records and rejections. Whatever the
//! bytes, decoding returns and never panics. See `support/fuzz.rs` (cases:
//! `QUORUMDB_FUZZ_CASES`, default 2,000 per target).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "support/golden.rs"]
mod golden;

#[path = "support/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use quorumdb_state::format::{self, SetFormat};
use quorumdb_state::system::{OnceRecord, SystemCommand};
use quorumdb_state::{CommandResult, Rejection};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Every sample of this crate, plus the payloads of the tagged ones (the decoders of system
/// commands get the bytes after the router tag).
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (_, bytes) in fuzz::golden_samples(DIR, |_| true) {
        if bytes.first() == Some(&format::SYSTEM_TAG) {
            out.push(bytes[1..].to_vec());
        }
        out.push(bytes);
    }
    out
}

fn inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(seeds(), fuzz::MSGPACK_TOKENS, 256)
}

/// What every decoder of this crate does with `bytes`; each must return.
fn decode_all(bytes: &[u8]) {
    // What decodes encodes again.
    if let Ok(SystemCommand::Once(once)) = SystemCommand::decode(bytes) {
        let _ = once.command(format::CURRENT);
    }
    let _ = SetFormat::decode(bytes);
    if let Ok(rec) = OnceRecord::decode(bytes) {
        assert!(rec.encode().is_ok());
    }
    let r = Rejection::decode(bytes);
    let _ = r.sqlstate();
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn system_command_decode_never_panics(input in inputs()) {
        fuzz::bounded("SystemCommand::decode", &input.0, || {
            let _ = SystemCommand::decode(&input.0);
            let _ = SetFormat::decode(&input.0);
        });
    }

    #[test]
    fn once_record_decode_never_panics(input in inputs()) {
        fuzz::bounded("OnceRecord::decode", &input.0, || {
            if let Ok(rec) = OnceRecord::decode(&input.0) {
                prop_assert_eq!(OnceRecord::decode(&rec.encode().unwrap()).unwrap(), rec);
            }
            Ok(())
        })?;
    }

    #[test]
    fn rejection_decode_never_panics(input in inputs()) {
        fuzz::bounded("Rejection::decode", &input.0, || {
            let r = Rejection::decode(&input.0);
            let _ = r.sqlstate();
            // A decoded rejection encodes, and decodes to itself, in every version.
            for v in [format::LEGACY, 1, format::CURRENT] {
                let again = Rejection::decode(&r.encode(v));
                prop_assert_eq!(&again.code, &r.code);
            }
            Ok(())
        })?;
    }

    #[test]
    fn format_split_and_decode_named_never_panic(input in inputs()) {
        fuzz::bounded("format::split/decode_named", &input.0, || {
            match format::split(&input.0) {
                Ok((v, body)) => {
                    prop_assert!(v <= format::CURRENT);
                    prop_assert!(input.0.ends_with(body));
                    // Any MessagePack at all (skipped value by value), and the shapes read here.
                    let _ = format::decode_named::<serde::de::IgnoredAny>(body);
                    let _ = format::decode_named::<SetFormat>(body);
                    let _ = format::decode_named::<SystemCommand>(body);
                    let _ = format::decode_named::<OnceRecord>(body);
                    let _ = format::decode_named::<Rejection>(body);
                    let _ = format::decode_named::<CommandResult>(body);
                    let _ = format::decode_named::<Vec<Vec<u8>>>(body);
                    let _ = format::decode_named::<std::collections::BTreeMap<String, Option<String>>>(body);
                }
                Err(_) => prop_assert!(input.0.first() == Some(&format::MARKER)),
            }
            Ok(())
        })?;
    }

    #[test]
    fn every_decoder_on_the_same_input_never_panics(input in inputs()) {
        fuzz::bounded("state decoders", &input.0, || decode_all(&input.0));
    }
}

/// The harness itself: a panicking property is reported as a failure (not lost, not a crash),
/// and the case count follows `QUORUMDB_FUZZ_CASES`.
#[test]
fn a_panic_in_a_case_is_a_reported_failure() {
    let mut runner = proptest::test_runner::TestRunner::new(fuzz::config_with(64));
    let result = runner.run(&fuzz::random_bytes(8), |bytes| {
        if bytes.len() > 3 {
            panic!("boom");
        }
        Ok(())
    });
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, minimal)) => {
            assert!(reason.message().contains("boom"), "{reason}");
            assert_eq!(minimal.len(), 4, "shrunk to the smallest failing input");
        }
        other => panic!("a panicking property must fail: {other:?}"),
    }
    assert_eq!(fuzz::config_with(64).cases, fuzz::cases(64));
}

/// The samples themselves decode (the seeds are what the mutations start from).
#[test]
fn the_seeds_decode() {
    for (name, bytes) in fuzz::golden_samples(DIR, |n| n.starts_with("once-record")) {
        assert!(OnceRecord::decode(&bytes).is_ok(), "{name}");
    }
    for (name, bytes) in fuzz::golden_samples(DIR, |n| n.starts_with("once-v") || n.starts_with("set-format")) {
        assert!(SystemCommand::decode(&bytes[1..]).is_ok(), "{name}");
    }
}
