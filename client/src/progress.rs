//! Progress bars of the long client commands (loads, backups, restores).

use indicatif::ProgressStyle;

/// The style for `template`; the templates are constants, and one that indicatif refused
/// would fall back to its default bar rather than stop a load.
pub fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_templates_in_use_parse() {
        for t in [
            "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
            "{bar:40} {pos}/{len} rows ({per_sec}, eta {eta}) {msg}",
            "{bar:40} {pos}/{len} vectors, {per_sec}, eta {eta}",
            "{bar:40} {pos}/{len} vectors ({per_sec}, eta {eta}) {msg}",
            "{prefix:>16} {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
        ] {
            assert!(indicatif::ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
