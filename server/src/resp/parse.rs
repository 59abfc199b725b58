//! RESP2 request parsing: arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\na\r\n`) and inline
//! commands (`GET a\r\n`, split like `redis-cli` does, with quotes).
//!
//! The parser is incremental: it takes complete elements off the front of the buffer as they
//! arrive and remembers a half-read array, so a command split over many reads costs no
//! re-parsing. Every length is checked against [`Limits`] before anything is allocated for it,
//! so a hostile header cannot make the server reserve memory it was never sent.

use crate::error::ProtocolError;

/// A command's arguments, the name first.
pub type Args = Vec<Vec<u8>>;

/// How large a request may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most elements in one array.
    pub max_args: usize,
    /// Largest bulk string.
    pub max_bulk: usize,
    /// Largest inline command line.
    pub max_inline: usize,
    /// Most bytes of bulk data in one command.
    pub max_command: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_args: 1024 * 1024, max_bulk: 64 << 20, max_inline: 64 << 10, max_command: 256 << 20 }
    }
}

/// The longest `*N` or `$N` header line; anything longer is not a number we accept.
const MAX_HEADER: usize = 32;

/// An array whose elements are still arriving.
struct Partial {
    remaining: usize,
    args: Args,
    bytes: usize,
}

/// Takes commands off the front of a byte buffer.
pub struct Parser {
    limits: Limits,
    partial: Option<Partial>,
}

/// Where the next header line ends: `Ok(Some(end))` with `buf[end..end + 2] == "\r\n"`,
/// `Ok(None)` if more bytes are needed.
fn line_end(buf: &[u8], max: usize, what: &'static str) -> Result<Option<usize>, ProtocolError> {
    match memchr(b'\n', &buf[..buf.len().min(max + 2)]) {
        Some(nl) if nl > 0 && buf[nl - 1] == b'\r' => Ok(Some(nl - 1)),
        Some(_) => Err(ProtocolError::Malformed(format!("{what} must end with \\r\\n"))),
        None if buf.len() > max + 1 => Err(ProtocolError::TooLarge(what)),
        None => Ok(None),
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn parse_len(digits: &[u8], what: &'static str) -> Result<i64, ProtocolError> {
    let bad = || ProtocolError::Malformed(format!("invalid {what}"));
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    if text.is_empty() || text.starts_with('+') {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

impl Parser {
    pub fn new(limits: Limits) -> Self {
        Self { limits, partial: None }
    }

    /// Takes the next complete command off the front of `buf[*pos..]`, advancing `*pos` past
    /// what it consumed. `Ok(None)`: more bytes are needed. An error means the stream cannot
    /// be resynchronised: answer it and close the connection.
    pub fn next(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Args>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                let rest = &buf[*pos..];
                let Some(&first) = rest.first() else { return Ok(None) };
                if first != b'*' {
                    match self.inline(rest)? {
                        None => return Ok(None),
                        Some((used, args)) => {
                            *pos += used;
                            if args.is_empty() {
                                continue;
                            }
                            return Ok(Some(args));
                        }
                    }
                }
                let Some(end) = line_end(rest, MAX_HEADER, "multibulk length")? else { return Ok(None) };
                let n = parse_len(&rest[1..end], "multibulk length")?;
                *pos += end + 2;
                if n <= 0 {
                    // `*0` and `*-1` are empty requests; Redis skips them too.
                    continue;
                }
                let n = n as usize;
                if n > self.limits.max_args {
                    return Err(ProtocolError::TooLarge("multibulk length"));
                }
                // Capacity grows with what actually arrives, not with what the header claims.
                self.partial = Some(Partial { remaining: n, args: Vec::with_capacity(n.min(64)), bytes: 0 });
            }
            let Some(partial) = self.partial.as_mut() else {
                return Err(ProtocolError::Malformed("internal: a multibulk request lost its state".into()));
            };
            while partial.remaining > 0 {
                let rest = &buf[*pos..];
                let Some(&first) = rest.first() else { return Ok(None) };
                if first != b'$' {
                    return Err(ProtocolError::Malformed(format!("expected '$', got '{}'", first.escape_ascii())));
                }
                let Some(end) = line_end(rest, MAX_HEADER, "bulk length")? else { return Ok(None) };
                let len = parse_len(&rest[1..end], "bulk length")?;
                if len < 0 {
                    return Err(ProtocolError::Malformed("invalid bulk length".into()));
                }
                let len = len as usize;
                if len > self.limits.max_bulk || partial.bytes + len > self.limits.max_command {
                    return Err(ProtocolError::TooLarge("bulk length"));
                }
                let data = end + 2;
                if rest.len() < data + len + 2 {
                    // Wait for the whole string; the header is parsed again then (cheap).
                    return Ok(None);
                }
                if &rest[data + len..data + len + 2] != b"\r\n" {
                    return Err(ProtocolError::Malformed("bulk string must end with \\r\\n".into()));
                }
                partial.args.push(rest[data..data + len].to_vec());
                partial.bytes += len;
                partial.remaining -= 1;
                *pos += data + len + 2;
            }
            return Ok(self.partial.take().map(|p| p.args));
        }
    }

    /// An inline command: `(bytes used, arguments)`, `None` if its line is incomplete.
    fn inline(&self, rest: &[u8]) -> Result<Option<(usize, Args)>, ProtocolError> {
        let Some(nl) = memchr(b'\n', &rest[..rest.len().min(self.limits.max_inline + 1)]) else {
            if rest.len() > self.limits.max_inline {
                return Err(ProtocolError::TooLarge("inline request"));
            }
            return Ok(None);
        };
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        Ok(Some((nl + 1, split_inline(line)?)))
    }
}

/// Splits an inline command line into arguments: separated by spaces, `"..."` with the escapes
/// `\n \r \t \b \a \\ \" \xHH`, and `'...'` with `\'`.
pub fn split_inline(line: &[u8]) -> Result<Args, ProtocolError> {
    let unbalanced = || ProtocolError::Malformed("unbalanced quotes in request".into());
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else { return Err(unbalanced()) };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = line.get(i) else { return Err(unbalanced()) };
                            i += 1;
                            let hex = |d: u8| (d as char).to_digit(16);
                            match e {
                                b'x' if line.len() >= i + 2 && hex(line[i]).is_some() && hex(line[i + 1]).is_some() => {
                                    let v = hex(line[i]).unwrap_or(0) * 16 + hex(line[i + 1]).unwrap_or(0);
                                    arg.push(v as u8);
                                    i += 2;
                                }
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'b' => arg.push(0x08),
                                b'a' => arg.push(0x07),
                                other => arg.push(other),
                            }
                        }
                        other => arg.push(other),
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else { return Err(unbalanced()) };
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        other => arg.push(other),
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
                args.push(arg);
                continue;
            }
        }
        // A closing quote must be followed by a space or the end of the line.
        if i < line.len() && !line[i].is_ascii_whitespace() {
            return Err(unbalanced());
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(args: &[Vec<u8>]) -> Vec<String> {
        args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns every command parsed.
    fn parse_chunked(input: &[u8], chunk: usize, limits: Limits) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut p = Parser::new(limits);
        let (mut buf, mut pos, mut out) = (Vec::new(), 0, Vec::new());
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(cmd) = p.next(&buf, &mut pos)? {
                out.push(strs(&cmd));
            }
            buf.drain(..pos);
            pos = 0;
        }
        assert!(buf.is_empty(), "bytes left over: {buf:?}");
        Ok(out)
    }

    const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$5\r\nhe\r\no\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\n*0\r\n\r\n  \r\nECHO \"x y\" 'it\\'s' \"\\x41\\n\"\n*1\r\n$0\r\n\r\n";

    #[test]
    fn pipelined_and_fragmented_input_give_the_same_commands() {
        let expected = vec![
            vec!["SET".to_string(), "a".into(), "he\r\no".into()],
            vec!["GET".into(), "a".into()],
            vec!["PING".into()],
            vec!["ECHO".into(), "x y".into(), "it's".into(), "A\n".into()],
            vec!["".into()],
        ];
        for chunk in [PIPELINE.len(), 1, 2, 3, 7] {
            assert_eq!(parse_chunked(PIPELINE, chunk, Limits::default()).unwrap(), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"*1\r\n+GET\r\n",
            b"*x\r\n",
            b"*+1\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$3\r\nGETX\r\n",
            b"*1\n",
            b"*1\r\n$3\r\nGET\n\n",
            b"ECHO \"abc\n",
            b"ECHO \"abc\"def\n",
            b"ECHO 'abc\n",
            b"*99999999999999999999999\r\n",
        ];
        for case in cases {
            assert!(
                parse_chunked(case, case.len(), Limits::default()).is_err(),
                "{:?}",
                case.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn limits_are_checked_before_allocating() {
        let limits = Limits { max_args: 4, max_bulk: 8, max_inline: 16, max_command: 12 };
        let too_many = b"*5\r\n";
        assert!(matches!(parse_chunked(too_many, 4, limits), Err(ProtocolError::TooLarge(_))));
        // A huge bulk length is refused from the header alone, before its data is sent.
        let huge = b"*1\r\n$1000000000000\r\n";
        assert!(matches!(parse_chunked(huge, huge.len(), limits), Err(ProtocolError::TooLarge(_))));
        let too_big = b"*1\r\n$9\r\n";
        assert!(matches!(parse_chunked(too_big, 1, limits), Err(ProtocolError::TooLarge(_))));
        let command_too_big = b"*2\r\n$8\r\n12345678\r\n$8\r\n";
        assert!(matches!(parse_chunked(command_too_big, 3, limits), Err(ProtocolError::TooLarge(_))));
        let long_line = [b'a'; 40];
        assert!(matches!(parse_chunked(&long_line, 5, limits), Err(ProtocolError::TooLarge(_))));
        let endless_header: Vec<u8> = std::iter::once(b'*').chain(std::iter::repeat_n(b'1', 50)).collect();
        assert!(parse_chunked(&endless_header, 3, limits).is_err());
        // At the limits, everything passes.
        let ok = b"*2\r\n$8\r\n12345678\r\n$4\r\n1234\r\n";
        assert_eq!(parse_chunked(ok, 1, limits).unwrap(), vec![vec!["12345678".to_string(), "1234".into()]]);
    }

    #[test]
    fn an_incomplete_command_waits() {
        let mut p = Parser::new(Limits::default());
        let mut pos = 0;
        assert_eq!(p.next(b"*2\r\n$3\r\nGET\r\n$1\r\n", &mut pos).unwrap(), None);
        assert_eq!(p.next(b"*2\r\n$3\r\nGET\r\n$1\r\na", &mut pos).unwrap(), None);
        let cmd = p.next(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", &mut pos).unwrap().unwrap();
        assert_eq!(strs(&cmd), ["GET", "a"]);
        assert_eq!(pos, 20);
    }
}
