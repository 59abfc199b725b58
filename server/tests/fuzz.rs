//! Fuzz targets of the RESP request parser (`resp::parse`): whatever the bytes, however they
//! are split into reads, and whatever the limits, the parser returns (a command, "need more
//! bytes" or an error), never panics or loops, consumes only what it was given, and reads the
//! same commands from a stream split into many reads as from the same bytes at once. The
//! pgwire startup options parser is private: its target is in `src/pg/mod.rs`'s tests. See
//! `state/tests/support/fuzz.rs` (cases: `QUORUMDB_FUZZ_CASES`, default 2,000 per target).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may unwrap: a failure is a failed test

#[path = "../../state/tests/support/golden.rs"]
mod golden;

#[path = "../../state/tests/support/fuzz.rs"]
mod fuzz;

use proptest::collection::vec;
use proptest::prelude::*;
use quorumdb_server::resp::parse::{Args, Limits, Parser, split_inline};

/// Requests of every shape: multibulk (pipelined, with CRLF inside values, empty), inline
/// (quotes, escapes), and the empty requests Redis skips.
const SEEDS: &[&[u8]] = &[
    b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$5\r\nhe\r\no\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
    b"PING\r\n*0\r\n\r\n  \r\nECHO \"x y\" 'it\\'s' \"\\x41\\n\"\n*1\r\n$0\r\n\r\n",
    b"*-1\r\n*1\r\n$4\r\nPING\r\n",
    b"SET k \"a\\tb\\\\c\\\"d\\x0g\" EX 10\r\nGET k\n",
    b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
];

const TOKENS: &[&[u8]] = &[
    b"*",
    b"$",
    b"\r\n",
    b"\r",
    b"\n",
    b"*1\r\n",
    b"*2\r\n",
    b"$3\r\nGET\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"-1",
    b"+1",
    b"0",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"99999999999999999999999",
    b"1048576",
    b"67108864",
    b"\"",
    b"'",
    b"\\",
    b"\\x",
    b"\\xff",
    b"\\'",
    b" ",
    b"\t",
    b"\0",
    b"PING",
];

fn inputs() -> BoxedStrategy<fuzz::Bytes> {
    fuzz::inputs(SEEDS.iter().map(|s| s.to_vec()).collect(), TOKENS, 256)
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        2 => Just(Limits::default()),
        1 => Just(Limits { max_args: 4, max_bulk: 8, max_inline: 16, max_command: 12 }),
        1 => (0usize..8, 0usize..16, 0usize..32, 0usize..32).prop_map(|(max_args, max_bulk, max_inline, max_command)| {
            Limits { max_args, max_bulk, max_inline, max_command }
        }),
    ]
}

/// How a stream ends: cleanly (every byte consumed, or waiting for more) or with an error.
#[derive(Debug, PartialEq)]
enum End {
    Waiting,
    Failed,
}

/// Parses `buf` as one read: the commands, and how parsing ended. Each command consumes
/// bytes, so there are at most `buf.len()` of them; more is a parser that loops.
fn parse_whole(buf: &[u8], limits: Limits) -> (Vec<Args>, End) {
    let mut p = Parser::new(limits);
    let (mut pos, mut out) = (0, Vec::new());
    loop {
        let before = pos;
        match p.next(buf, &mut pos) {
            Ok(Some(cmd)) => {
                assert!(pos > before, "a command consumed nothing");
                assert!(pos <= buf.len());
                out.push(cmd);
                assert!(out.len() <= buf.len(), "more commands than bytes");
            }
            Ok(None) => {
                assert!(pos <= buf.len());
                return (out, End::Waiting);
            }
            Err(_) => return (out, End::Failed),
        }
    }
}

/// Parses `input` arriving in reads of the given sizes, as a connection does (consumed bytes
/// dropped from the buffer after each read).
fn parse_chunked(input: &[u8], sizes: &[usize], limits: Limits) -> (Vec<Args>, End) {
    let mut p = Parser::new(limits);
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let mut pos = 0;
        loop {
            let before = pos;
            match p.next(&buf, &mut pos) {
                Ok(Some(cmd)) => {
                    assert!(pos > before && pos <= buf.len());
                    out.push(cmd);
                    assert!(out.len() <= input.len(), "more commands than bytes");
                }
                Ok(None) => break,
                Err(_) => return (out, End::Failed),
            }
        }
        assert!(pos <= buf.len());
        buf.drain(..pos);
    }
    (out, End::Waiting)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn resp_parser_never_panics(input in inputs(), limits in limits()) {
        fuzz::bounded("resp::parse::Parser::next", &input.0, || {
            let _ = parse_whole(&input.0, limits);
        });
    }

    #[test]
    fn resp_parser_reads_the_same_commands_however_the_stream_is_split(
        input in inputs(),
        sizes in vec(1usize..16, 1..8),
        limits in limits(),
    ) {
        fuzz::bounded("resp::parse::Parser::next (split reads)", &input.0, || {
            let whole = parse_whole(&input.0, limits);
            let split = parse_chunked(&input.0, &sizes, limits);
            prop_assert_eq!(split, whole);
            Ok(())
        })?;
    }

    #[test]
    fn split_inline_never_panics(input in inputs()) {
        fuzz::bounded("resp::parse::split_inline", &input.0, || {
            if let Ok(args) = split_inline(&input.0) {
                prop_assert!(args.len() <= input.0.len());
            }
            Ok(())
        })?;
    }
}
