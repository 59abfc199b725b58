//! Key ranges over the ordered byte-string keyspace, and the wall clock: one copy of each for
//! every crate.

/// The exclusive end of the range of keys that start with `prefix`: the smallest byte string
/// greater than all of them. Empty when there is no such string (an empty prefix, or one of
/// only `0xff` bytes), which every `scan` and `delete_range` reads as "no end".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Whether `key` lies in `start..end`, with an empty `end` meaning "no end".
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// Milliseconds since the Unix epoch on this machine's clock (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix_or_no_end() {
        assert_eq!(prefix_end(b"k/"), b"k0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
        assert_eq!(prefix_end(b""), Vec::<u8>::new());
        // Every key under an all-0xff prefix is in its range, however long.
        assert!(in_range(b"\xff\xff\xff\xff", b"\xff\xff", &prefix_end(b"\xff\xff")));
        assert!(in_range(b"a\xff\x00", b"a\xff", &prefix_end(b"a\xff")));
        assert!(!in_range(b"b", b"a\xff", &prefix_end(b"a\xff")));
    }
}
