//! Progress bars of the long client commands (loads, backups, restores): their templates and
//! one way to turn a template into a style.

use indicatif::ProgressStyle;

/// A load measured in bytes of the input file.
pub const LOAD_BYTES: &str = "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}";
/// A load measured in rows.
pub const LOAD_ROWS: &str = "{bar:40} {pos}/{len} rows ({per_sec}, eta {eta}) {msg}";
/// Vectors sent to a collection.
pub const VECTORS: &str = "{bar:40} {pos}/{len} vectors, {per_sec}, eta {eta}";
/// Vectors loaded into a table.
pub const VECTOR_ROWS: &str = "{bar:40} {pos}/{len} vectors ({per_sec}, eta {eta}) {msg}";
/// One table of a backup or restore.
pub const TABLE_ROWS: &str = "{prefix:>16} {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})";

/// The style for `template`; one that indicatif refused would fall back to its default bar
/// rather than stop a load (the test below keeps that from happening to ours).
pub fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for t in [LOAD_BYTES, LOAD_ROWS, VECTORS, VECTOR_ROWS, TABLE_ROWS] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
