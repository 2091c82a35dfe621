//! The JSON of a problem document, written by hand: one object of strings and a number.

use std::fmt::Write as _;

/// Appends `value` to `out` as a JSON string (RFC 8259 § 7): quoted, with `"` and `\` escaped,
/// the control characters U+0000–U+001F escaped (by their short form where JSON has one), and
/// everything else as it is (a Rust `str` is valid UTF-8, which JSON text is).
pub(super) fn push_string(out: &mut String, value: &str) {
    out.push('"');
    let mut start = 0;
    // Bytes below 0x80 never occur inside a multi-byte UTF-8 sequence, so slicing at them
    // stays on character boundaries.
    for (i, byte) in value.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        if short.is_empty() {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json(value: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, value);
        out
    }

    #[test]
    fn escapes() {
        assert_eq!(json(""), r#""""#);
        assert_eq!(json("plain"), r#""plain""#);
        assert_eq!(json(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(json(r"C:\temp"), r#""C:\\temp""#);
        assert_eq!(json("a\nb\rc\td"), r#""a\nb\rc\td""#);
        assert_eq!(json("\u{8}\u{c}"), r#""\b\f""#);
        assert_eq!(json("\0\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        assert_eq!(
            json("/ \u{7f} é ✓ 🦀 \u{2028}"),
            "\"/ \u{7f} é ✓ 🦀 \u{2028}\""
        );
    }

    proptest! {
        /// Any string, control characters and astral planes included, reads back the same
        /// through a conforming JSON parser.
        #[test]
        fn round_trips_through_a_json_parser(value in any::<String>()) {
            let parsed: String = serde_json::from_str(&json(&value)).unwrap();
            prop_assert_eq!(parsed, value);
        }

        #[test]
        fn control_heavy_strings_round_trip(value in "[\\x00-\\x20\"\\\\a-z\u{80}-\u{10ffff}]{0,64}") {
            let parsed: String = serde_json::from_str(&json(&value)).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }
}
