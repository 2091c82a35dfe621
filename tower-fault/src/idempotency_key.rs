//! The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header).

use std::{error::Error, fmt};

use http::{HeaderName, HeaderValue};

/// The `Idempotency-Key` header name.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The longest key accepted, in characters.
const MAX_LEN: usize = 255;

/// A validated idempotency key.
///
/// The IETF draft sends the key as an RFC 8941 sf-string (`"8e03978e-…"`); Stripe's clients send
/// a bare token (`8e03978e-…`). Both are accepted; the key is the content, 1–255 printable ASCII
/// characters.
///
/// ```
/// use tower_fault::{IdempotencyKey, KeyError};
///
/// let quoted = IdempotencyKey::parse_str("\"order-42\"").unwrap();
/// let bare = IdempotencyKey::parse_str("order-42").unwrap();
/// assert_eq!(quoted, bare);
/// assert_eq!(quoted.as_str(), "order-42");
/// assert_eq!(IdempotencyKey::parse_str(""), Err(KeyError::Empty));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    key: Box<str>,
}

/// Why an `Idempotency-Key` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than 255 characters.
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The key holds a character that is not printable ASCII (or a space in a bare token).
    InvalidCharacter {
        /// Byte offset of the first offending character in the header value.
        position: usize,
    },
    /// The value starts like an sf-string but is not a valid one (unterminated, bad escape,
    /// parameters, trailing characters).
    Malformed,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.pad("idempotency key is empty"),
            KeyError::TooLong { len } => {
                write!(
                    f,
                    "idempotency key is {len} characters long; at most {MAX_LEN} are allowed"
                )
            }
            KeyError::InvalidCharacter { position } => write!(
                f,
                "idempotency key has a character that is not printable ASCII at byte {position}"
            ),
            KeyError::Malformed => f.pad("idempotency key is not a valid structured-field string"),
        }
    }
}

impl Error for KeyError {}

impl IdempotencyKey {
    /// Parses a header value.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong with the value.
    pub fn parse(value: &HeaderValue) -> Result<Self, KeyError> {
        let bytes = value.as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::parse_str(s),
            Err(e) => Err(KeyError::InvalidCharacter {
                position: e.valid_up_to(),
            }),
        }
    }

    /// Parses the text of a header value.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong with the value.
    pub fn parse_str(value: &str) -> Result<Self, KeyError> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if value.starts_with('"') {
            return Self::parse_sf_string(value);
        }
        if let Some(position) = value.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(KeyError::InvalidCharacter { position });
        }
        Self::from_content(value)
    }

    /// An RFC 8941 sf-string (§ 4.2.5), alone: a `"`, printable ASCII in which `"` and `\`
    /// are escaped with a `\`, a closing `"`, and nothing after it (no parameters).
    fn parse_sf_string(value: &str) -> Result<Self, KeyError> {
        if let Some(position) = value.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
            return Err(KeyError::InvalidCharacter { position });
        }
        let inner = &value[1..];
        let mut content = String::with_capacity(inner.len());
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => content.push(escaped),
                    _ => return Err(KeyError::Malformed),
                },
                '"' if i + 1 == inner.len() => return Self::from_content(&content),
                '"' => return Err(KeyError::Malformed),
                c => content.push(c),
            }
        }
        Err(KeyError::Malformed)
    }

    fn from_content(content: &str) -> Result<Self, KeyError> {
        match content.len() {
            0 => Err(KeyError::Empty),
            len if len > MAX_LEN => Err(KeyError::TooLong { len }),
            _ => Ok(Self {
                key: content.into(),
            }),
        }
    }

    /// A fresh key: a UUID v7 (time-ordered, so stores index it well).
    #[must_use]
    pub fn generate() -> Self {
        Self {
            key: uuid::Uuid::now_v7().to_string().into_boxed_str(),
        }
    }

    /// The key's content (without sf-string quoting).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key as a header value, in the draft's sf-string form (`"…"`).
    #[must_use]
    pub fn to_header_value(&self) -> HeaderValue {
        let mut out = String::with_capacity(self.key.len() + 2);
        out.push('"');
        for c in self.key.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        HeaderValue::from_str(&out).expect("printable ASCII is a valid header value")
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_forms() {
        for (input, content) in [
            ("\"abc\"", "abc"),
            ("abc", "abc"),
            ("\"with space\"", "with space"),
            ("\"esc\\\"aped\"", "esc\"aped"),
            ("  token-1  ", "token-1"),
        ] {
            assert_eq!(
                IdempotencyKey::parse_str(input).unwrap().as_str(),
                content,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(IdempotencyKey::parse_str("\"\""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse_str(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse_str("\"abc"), Err(KeyError::Malformed));
        assert_eq!(
            IdempotencyKey::parse_str("\"abc\";p=1"),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            IdempotencyKey::parse_str("\"abc\" x"),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            IdempotencyKey::parse_str("a b"),
            Err(KeyError::InvalidCharacter { position: 1 })
        );
        assert_eq!(
            IdempotencyKey::parse_str("ké"),
            Err(KeyError::InvalidCharacter { position: 1 })
        );
        let long = "a".repeat(256);
        assert_eq!(
            IdempotencyKey::parse_str(&long),
            Err(KeyError::TooLong { len: 256 })
        );
        assert!(IdempotencyKey::parse_str(&"a".repeat(255)).is_ok());
        let bad = HeaderValue::from_bytes(b"ab\xff").unwrap();
        assert_eq!(
            IdempotencyKey::parse(&bad),
            Err(KeyError::InvalidCharacter { position: 2 })
        );
    }

    /// Reads sf-strings as a full RFC 8941 parser does: the same content, or an error where
    /// it fails (or finds something other than a lone string).
    fn sfv_reading(value: &str) -> Option<String> {
        let item = sfv::Parser::new(value).parse::<sfv::Item>().ok()?;
        match item.bare_item {
            sfv::BareItem::String(s) if item.params.is_empty() => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    proptest::proptest! {
        #[test]
        fn sf_strings_read_as_a_full_parser_reads_them(
            value in "\"[ -~]{0,40}(\"[ -~]{0,3})?"
        ) {
            let ours = IdempotencyKey::parse_str(&value);
            match sfv_reading(value.trim_matches(' ')) {
                Some(content) if !content.is_empty() => {
                    proptest::prop_assert_eq!(ours.map(|key| key.as_str().to_owned()), Ok(content));
                }
                Some(_) => proptest::prop_assert_eq!(ours, Err(KeyError::Empty)),
                None => proptest::prop_assert!(ours.is_err(), "{value:?} -> {ours:?}"),
            }
        }
    }

    #[test]
    fn malformed_sf_strings() {
        for bad in ["\"", "\"a\\\"", "\"a\\x\"", "\"a\"b\"", "\"a\"\"", "\"a\\"] {
            assert_eq!(
                IdempotencyKey::parse_str(bad),
                Err(KeyError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            IdempotencyKey::parse_str("\"\\\\\"").unwrap().as_str(),
            "\\"
        );
    }

    #[test]
    fn generated_keys_round_trip() {
        let key = IdempotencyKey::generate();
        assert_eq!(key.as_str().len(), 36);
        assert_eq!(IdempotencyKey::parse(&key.to_header_value()).unwrap(), key);
        let quoted = IdempotencyKey::parse_str("\"a\\\\b\"").unwrap();
        assert_eq!(
            IdempotencyKey::parse(&quoted.to_header_value()).unwrap(),
            quoted
        );
        assert_ne!(IdempotencyKey::generate(), IdempotencyKey::generate());
    }
}
