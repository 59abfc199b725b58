//! Owns the framing of what a PostgreSQL client sends: every frontend message is checked —
//! its type, its length, and the layout of its body (strings terminated inside the message,
//! counts and parameter lengths that fit, nothing left over) — before `pgwire` decodes it.
//!
//! `pgwire`'s decoders trust the lengths inside a message: they read past its end into the
//! next one, and panic (`advance out of bounds`) where a length points past the buffer. So the
//! connection's reader ([`Checked`]) hands `pgwire` only whole messages that passed [`check`];
//! a malformed one ends the connection with `FATAL 08P01`, as PostgreSQL does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest message a client may send (PostgreSQL's limit for a frontend message is 1 GB;
/// ours is lower: one statement with its parameters, or one chunk of COPY data).
pub const MAX_MESSAGE_LEN: usize = 256 << 20;
/// The longest startup or cancel packet (PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Protocol codes a startup-phase packet may carry instead of a protocol version.
pub const CANCEL_CODE: u32 = 80_877_102;
pub const SSL_CODE: u32 = 80_877_103;
pub const GSS_CODE: u32 = 80_877_104;

/// Where a connection is in the protocol: the first packet has no type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Startup,
    Typed,
}

/// Checks the message at the start of `buf`: `Ok(None)` if more bytes are needed, `Ok(Some(n))`
/// if its first `n` bytes are one well-formed message, an error naming what is wrong otherwise.
/// A length is refused as soon as its header arrives, so a lying length never makes the reader
/// wait for (or buffer) bytes that cannot be a valid message.
pub fn check(phase: Phase, buf: &[u8]) -> Result<Option<usize>, String> {
    let (header, max) = match phase {
        Phase::Startup => (0, MAX_STARTUP_LEN),
        Phase::Typed => (1, MAX_MESSAGE_LEN),
    };
    if buf.len() < header + 4 {
        return Ok(None);
    }
    let kind = buf.first().copied().unwrap_or(0);
    if phase == Phase::Typed && !KINDS.contains(&kind) {
        return Err(format!("invalid frontend message type {kind}"));
    }
    let len = u32::from_be_bytes([buf[header], buf[header + 1], buf[header + 2], buf[header + 3]]) as usize;
    let min = if phase == Phase::Startup { 8 } else { 4 };
    if !(min..=max).contains(&len) {
        return Err(format!("invalid message length {len}"));
    }
    if phase == Phase::Typed && matches!(kind, b'H' | b'S' | b'X' | b'c') && len != 4 {
        return Err(format!("invalid message length {len} for message type {kind}"));
    }
    let total = header + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header + 4..total];
    let well_formed = match phase {
        Phase::Startup => startup_body(body),
        Phase::Typed => typed_body(kind, body),
    };
    well_formed.map(|()| Some(total)).map_err(|e| format!("invalid message format: {e}"))
}

/// The message types a client may send (FunctionCall, `F`, is not served).
const KINDS: &[u8] = b"QPBCDEHSXdcfp";

fn startup_body(body: &[u8]) -> Result<(), &'static str> {
    let mut r = Reader(body);
    let code = r.u32()?;
    match code {
        CANCEL_CODE => {
            // A process id, then a secret key of 4 (protocol 3.0) to 256 bytes (3.2).
            r.u32()?;
            if (4..=256).contains(&r.0.len()) { Ok(()) } else { Err("cancel key length") }
        }
        SSL_CODE | GSS_CODE => Err("encryption was already negotiated"),
        _ if code >> 16 != 3 => Err("unsupported frontend protocol"),
        _ => {
            // Name and value strings, ended by an empty name.
            loop {
                if r.cstr()?.is_empty() {
                    return r.end();
                }
                r.cstr()?;
            }
        }
    }
}

fn typed_body(kind: u8, body: &[u8]) -> Result<(), &'static str> {
    let mut r = Reader(body);
    match kind {
        b'Q' | b'f' => {
            r.cstr()?;
        }
        b'P' => {
            r.cstr()?;
            r.cstr()?;
            let types = r.u16()? as usize;
            r.take(types * 4)?;
        }
        b'B' => {
            r.cstr()?;
            r.cstr()?;
            let formats = r.u16()? as usize;
            r.take(formats * 2)?;
            for _ in 0..r.u16()? {
                r.value()?;
            }
            let results = r.u16()? as usize;
            r.take(results * 2)?;
        }
        b'C' | b'D' => {
            r.take(1)?;
            r.cstr()?;
        }
        b'E' => {
            r.cstr()?;
            r.u32()?;
        }
        // Copy data and the password family (password, SASL): opaque bytes here; the
        // authentication step checks a SASL initial response's layout.
        _ => r.0 = &[],
    }
    r.end()
}

/// Reads a message body front to back; every read is bounded by the body.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("a length points past the end of the message");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u16(&mut self) -> Result<u16, &'static str> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, &'static str> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], &'static str> {
        let Some(end) = self.0.iter().position(|&b| b == 0) else {
            return Err("a string is not terminated inside the message");
        };
        let s = self.take(end + 1)?;
        Ok(&s[..end])
    }

    /// A length (-1: none) and that many bytes.
    pub fn value(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.u32()? as i32 {
            -1 => Ok(None),
            n if n >= 0 => self.take(n as usize).map(Some),
            _ => Err("a negative length"),
        }
    }

    pub fn end(&self) -> Result<(), &'static str> {
        if self.0.is_empty() { Ok(()) } else { Err("bytes left over after the message") }
    }
}

/// The layout of a SASLInitialResponse body: mechanism name, then a length (-1 for none) and
/// that many bytes, and nothing after.
pub fn check_sasl_initial(body: &[u8]) -> Result<(), &'static str> {
    let mut r = Reader(body);
    r.cstr()?;
    r.value()?;
    r.end()
}

/// A connection's byte stream as `pgwire` reads it: only whole messages that passed [`check`];
/// a malformed message is a read error (`InvalidData`) instead. Writes pass straight through.
pub struct Checked<S> {
    inner: S,
    phase: Phase,
    /// Bytes read from the client and not yet handed on.
    buf: BytesMut,
    /// How many bytes at the front of `buf` form checked messages.
    ready: usize,
    failed: bool,
}

impl<S> Checked<S> {
    /// `prefix`: bytes of the first packet already read from `inner`.
    pub fn new(inner: S, prefix: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(8 << 10);
        buf.extend_from_slice(prefix);
        Self { inner, phase: Phase::Startup, buf, ready: 0, failed: false }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "malformed message")));
            }
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match check(this.phase, &this.buf) {
                Ok(Some(n)) => {
                    this.ready = n;
                    this.phase = Phase::Typed;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
            let mut chunk = [0u8; 16 << 10];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream (a message cut short by the close is dropped with it).
                return Poll::Ready(Ok(()));
            }
            this.buf.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
    use proptest::prelude::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn well_formed_messages_pass_and_lying_ones_do_not() {
        assert_eq!(check(Phase::Typed, &msg(b'Q', b"SELECT 1\0")), Ok(Some(14)));
        assert_eq!(check(Phase::Typed, &msg(b'S', b"")), Ok(Some(5)));
        assert_eq!(check(Phase::Typed, &msg(b'Q', b"SELECT 1\0")[..7]), Ok(None));
        // A string without its NUL, a NUL before the end, bytes left over.
        assert!(check(Phase::Typed, &msg(b'Q', b"SELECT 1")).is_err());
        assert!(check(Phase::Typed, &msg(b'Q', b"SEL\0ECT\0")).is_err());
        assert!(check(Phase::Typed, &msg(b'S', b"x")).is_err());
        // A Bind whose parameter length points past the message.
        let mut bind = b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0".to_vec();
        assert!(check(Phase::Typed, &msg(b'B', &bind)).is_err());
        bind = b"\0\0\0\0\0\x01\0\0\0\x02ab\0\0".to_vec();
        assert!(check(Phase::Typed, &msg(b'B', &bind)).is_ok());
        // Lengths refused from the header alone: too small, too large, an unknown type.
        assert!(check(Phase::Typed, &[b'Q', 0, 0, 0, 3]).is_err());
        assert!(check(Phase::Typed, &[b'Q', 0x40, 0, 0, 4]).is_err());
        assert!(check(Phase::Typed, &[b'F', 0, 0, 0, 4]).is_err());
        // Startup: version 3.0 with parameters ended by an empty name; anything else refused.
        let mut s = vec![0, 0, 0, 0, 0, 3, 0, 0];
        s.extend_from_slice(b"user\0u\0\0");
        s[3] = s.len() as u8;
        assert_eq!(check(Phase::Startup, &s), Ok(Some(s.len())));
        s.pop();
        s[3] = s.len() as u8;
        assert!(check(Phase::Startup, &s).is_err());
        assert!(check(Phase::Startup, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x02nn").is_ok());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\0\0\0\0\x09nn").is_err());
        assert!(check_sasl_initial(b"password\0").is_err());
    }

    /// What `pgwire` makes of a message that passed: it decodes without panicking and takes
    /// exactly the message's bytes (so the next message starts where it should).
    fn decode_exactly(phase: Phase, bytes: &[u8]) {
        let mut ctx = DecodeContext::new(ProtocolVersion::default()); // as the server codec starts
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = phase == Phase::Startup;
        let mut buf = BytesMut::from(bytes);
        buf.extend_from_slice(&msg(b'S', b""));
        let _ = PgWireFrontendMessage::decode(&mut buf, &ctx);
        assert_eq!(&buf[..], &msg(b'S', b"")[..], "{bytes:?}");
    }

    fn kinds() -> impl Strategy<Value = u8> {
        prop::sample::select(b"QPBCDEHSXdcfpF".to_vec())
    }

    /// Bodies built from the pieces messages are made of (strings, counts, lengths), so that
    /// many of them are nearly right.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\0".to_vec()),
            Just(b"s1\0".to_vec()),
            Just(b"SELECT $1\0".to_vec()),
            (0u16..4).prop_map(|n| n.to_be_bytes().to_vec()),
            prop_oneof![Just(-1i32), 0i32..6, Just(i32::MAX), Just(i32::MIN)].prop_map(|n| n.to_be_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn what_passes_decodes_exactly(kind in kinds(), body in body(), lie in prop::option::of(0u32..64)) {
            let mut m = msg(kind, &body);
            if let Some(len) = lie {
                m[1..5].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(Some(n)) = check(Phase::Typed, &m) {
                decode_exactly(Phase::Typed, &m[..n]);
            }
        }

        #[test]
        fn startup_packets_that_pass_decode_exactly(body in body(), version in prop_oneof![Just(196_608u32), Just(196_610), Just(CANCEL_CODE), any::<u32>()]) {
            let mut m = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            m.extend_from_slice(&version.to_be_bytes());
            m.extend_from_slice(&body);
            if let Ok(Some(n)) = check(Phase::Startup, &m) {
                decode_exactly(Phase::Startup, &m[..n]);
            }
        }

        #[test]
        fn sasl_initial_responses_that_pass_decode(body in body()) {
            if check_sasl_initial(&body).is_ok() {
                let raw = pgwire::messages::startup::PasswordMessageFamily::Raw(BytesMut::from(&body[..]));
                prop_assert!(raw.into_sasl_initial_response().is_ok());
            }
        }
    }
}
