//! The stored form of request headers: a versioned, length-prefixed binary list.
//!
//! Header values may be arbitrary bytes (not UTF-8), so they are stored as a blob rather than
//! text. Decoding failures are reported, never papered over: the worker dead-letters a corrupt
//! entry with the reason.

use http::{HeaderMap, HeaderName, HeaderValue};

const VERSION: u8 = 1;

/// Encodes a header map (every value of every name, in order).
pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + headers.len() * 32);
    out.push(VERSION);
    for (name, value) in headers {
        let name = name.as_str().as_bytes();
        // Header names are bounded by hyper far below u16::MAX; values below u32::MAX.
        out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(name);
        let value = value.as_bytes();
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes what [`encode_headers`] wrote.
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<HeaderMap, String> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => bytes = rest,
        Some((v, _)) => return Err(format!("unknown header encoding version {v}")),
        None => return Err("empty header blob".to_owned()),
    }
    let mut headers = HeaderMap::new();
    while !bytes.is_empty() {
        let name_len = usize::from(u16::from_be_bytes(take::<2>(&mut bytes)?));
        let name = take_slice(&mut bytes, name_len)?;
        let name = HeaderName::from_bytes(name).map_err(|e| format!("bad header name: {e}"))?;
        let value_len = u32::from_be_bytes(take::<4>(&mut bytes)?) as usize;
        let value = take_slice(&mut bytes, value_len)?;
        let value =
            HeaderValue::from_bytes(value).map_err(|e| format!("bad value for {name}: {e}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], String> {
    let slice = take_slice(bytes, N)?;
    let mut out = [0; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn take_slice<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if bytes.len() < len {
        return Err(format!(
            "header blob truncated: wanted {len} bytes, {} left",
            bytes.len()
        ));
    }
    let (head, tail) = bytes.split_at(len);
    *bytes = tail;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_repeated_and_binary_values() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-bin", HeaderValue::from_bytes(b"\xff\xfe ok").unwrap());
        let decoded = decode_headers(&encode_headers(&headers)).unwrap();
        assert_eq!(decoded, headers);
        let values: Vec<_> = decoded.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn reports_corruption() {
        assert!(decode_headers(&[]).unwrap_err().contains("empty"));
        assert!(decode_headers(&[9]).unwrap_err().contains("version 9"));
        let mut blob = encode_headers(&HeaderMap::from_iter([(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("value"),
        )]));
        blob.truncate(blob.len() - 2);
        assert!(decode_headers(&blob).unwrap_err().contains("truncated"));
    }

    proptest! {
        #[test]
        fn any_header_map_round_trips(
            pairs in proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", proptest::collection::vec(0x20u8..0x7f, 0..40)), 0..12)
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(&value).unwrap());
            }
            prop_assert_eq!(decode_headers(&encode_headers(&headers)).unwrap(), headers);
        }

        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_headers(&blob);
        }
    }
}
