//! Redis glob patterns (`KEYS`, `SCAN ... MATCH`): `*` any run of bytes, `?` one byte,
//! `[abc]`, `[^abc]` and `[a-z]` byte classes, `\x` the byte `x` itself. Matching is over bytes
//! and takes at most `pattern × key` steps: a `*` backtracks only to the latest star, never
//! exponentially.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class { negate: bool, ranges: Vec<(u8, u8)> },
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Self::Star | Self::Any => true,
            Self::Byte(x) => *x == b,
            Self::Class { negate, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&b)) != *negate,
        }
    }
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &[u8]) -> Self {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let c = pattern[i];
            i += 1;
            let token = match c {
                b'*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                b'?' => Token::Any,
                b'\\' if i < pattern.len() => {
                    i += 1;
                    Token::Byte(pattern[i - 1])
                }
                b'[' => {
                    let negate = pattern.get(i) == Some(&b'^');
                    if negate {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    // An unterminated class runs to the end of the pattern, as in Redis.
                    while i < pattern.len() && pattern[i] != b']' {
                        let mut lo = pattern[i];
                        if lo == b'\\' && i + 1 < pattern.len() {
                            i += 1;
                            lo = pattern[i];
                        }
                        if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() && pattern[i + 2] != b']' {
                            let hi = pattern[i + 2];
                            ranges.push((lo.min(hi), lo.max(hi)));
                            i += 3;
                        } else {
                            ranges.push((lo, lo));
                            i += 1;
                        }
                    }
                    i += 1; // the ']'
                    Token::Class { negate, ranges }
                }
                other => Token::Byte(other),
            };
            tokens.push(token);
        }
        Self { tokens }
    }

    /// Whether the pattern matches all of `s`.
    pub fn matches(&self, s: &[u8]) -> bool {
        let t = &self.tokens;
        let (mut p, mut i) = (0, 0);
        // The latest star: its token position and the input position it currently ends at.
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            match t.get(p) {
                Some(Token::Star) => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                Some(tok) if tok.matches(s[i]) => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, si)) => {
                    star = Some((sp, si + 1));
                    p = sp + 1;
                    i = si + 1;
                }
                None => return false,
            }
        }
        t[p..].iter().all(|tok| *tok == Token::Star)
    }

    /// The bytes every match starts with, so a scan can begin there instead of at the start.
    pub fn literal_prefix(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// Whether the pattern matches everything (`*`).
    pub fn is_match_all(&self) -> bool {
        self.tokens == [Token::Star]
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:names"));
        assert!(!m("abc", "abcd"));
        assert!(!m("abcd", "abc"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges work as in Redis");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("a\\?", "a?"));
        assert!(m("[\\]]", "]"));
        assert!(m("[a-]", "-"), "a '-' before ']' is literal");
        assert!(m("a[bc", "ab"), "an unterminated class runs to the end");
        assert!(m("a\\", "a\\"), "a trailing backslash is literal");
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = "*a".repeat(30) + "b";
        let text = "a".repeat(5_000);
        assert!(!m(&pattern, &text));
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(Glob::new(b"user:*").literal_prefix(), b"user:");
        assert_eq!(Glob::new(b"a\\*b*").literal_prefix(), b"a*b");
        assert_eq!(Glob::new(b"[ab]*").literal_prefix(), b"");
        assert!(Glob::new(b"**").is_match_all());
        assert!(!Glob::new(b"a*").is_match_all());
    }
}
