//! The request head kept for retries.
//!
//! Every retry layer has to keep a copy of the request it sends, because the inner service
//! consumes it. `http::request::Parts::clone` is the obvious copy, and on a real client request
//! the most expensive part of the whole happy path: a `HeaderMap` clone allocates its index and
//! entry tables, every header value (and custom header name) made from a `&str` is a `Bytes`
//! that allocates again when first cloned — six allocations for a request with three ordinary
//! headers — and the URI's `Bytes` cost two atomic reference counts (or an allocation, for a
//! path-only URI parsed from a string). [`KeptHead`] keeps the URI and the headers as their
//! bytes, packed into one buffer (one allocation; none for a short URI without headers), and
//! parses them back only when a retry actually happens.

use bytes::Bytes;
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, request::Parts,
};

/// A request head kept for retries: the method, version and extensions as they were, the URI
/// and the headers packed.
pub(crate) struct KeptHead {
    method: Method,
    version: Version,
    pub(crate) extensions: Extensions,
    packed: Packed,
}

impl KeptHead {
    /// A copy of `parts` for later attempts.
    pub(crate) fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            version: parts.version,
            extensions: parts.extensions.clone(),
            packed: Packed::pack(&parts.uri, &parts.headers),
        }
    }

    /// Whether the kept headers include `name`.
    pub(crate) fn contains_header(&self, name: &HeaderName) -> bool {
        self.packed.contains(name)
    }

    /// The head of another attempt: equal to the one this was made of.
    ///
    /// `None` only if the URI or a header could not be parsed back, which cannot happen to a
    /// head made through `http`'s safe constructors (they validate every part), save for an
    /// absolute URI without a path whose length is exactly `http`'s limit (65 534 bytes): it is
    /// written back with the `/` its `path()` reports, one byte over.
    pub(crate) fn to_parts(&self) -> Option<Parts> {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.version = self.version;
        (parts.uri, parts.headers) = self.packed.unpack()?;
        parts.extensions = self.extensions.clone();
        Some(parts)
    }
}

/// A URI and a header map as bytes in one buffer.
///
/// The buffer holds the URI as `Uri`'s `Display` writes it (`uri_len` bytes), then one entry
/// per header value, in iteration order: a flag byte (1 if the value is sensitive), the name's
/// length and the value's length as LEB128 varints, the name's bytes, the value's bytes.
struct Packed {
    buf: PackedBuf,
    uri_len: usize,
    /// Header entries (values) in `buf`.
    headers: usize,
}

/// The bytes of a [`Packed`]: inline when they are only a short URI (a request without
/// headers), else on the heap.
enum PackedBuf {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Vec<u8>),
}

/// The longest URI kept inline: with the tag and the length, the size of a `Vec`.
const INLINE: usize = 22;

impl PackedBuf {
    fn as_slice(&self) -> &[u8] {
        match self {
            PackedBuf::Inline { len, data } => &data[..usize::from(*len)],
            PackedBuf::Heap(buf) => buf,
        }
    }
}

/// Bytes reserved per header entry: a typical client header (name, value, three bytes of
/// framing) fits; a longer one grows the buffer.
const ENTRY_GUESS: usize = 64;

/// The pieces `Uri`'s `Display` writes, in order (its path and query are the path-and-query's
/// text, `/` for an empty path), some of them empty.
fn uri_pieces(uri: &Uri) -> [&str; 4] {
    let (scheme, sep) = match uri.scheme_str() {
        Some(scheme) => (scheme, "://"),
        None => ("", ""),
    };
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path_and_query = uri.path_and_query().map_or("", |pq| pq.as_str());
    [scheme, sep, authority, path_and_query]
}

/// A decoded header entry of [`Packed`]: byte ranges into the buffer.
struct Entry {
    sensitive: bool,
    name: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

fn take_varint(buf: &[u8], pos: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        n |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(n);
        }
        shift += 7;
    }
}

impl Packed {
    fn pack(uri: &Uri, headers: &HeaderMap) -> Self {
        let uri = uri_pieces(uri);
        let uri_len: usize = uri.iter().map(|piece| piece.len()).sum();
        if headers.is_empty() && uri_len <= INLINE {
            let mut data = [0; INLINE];
            let mut at = 0;
            for piece in uri.into_iter().filter(|piece| !piece.is_empty()) {
                data[at..at + piece.len()].copy_from_slice(piece.as_bytes());
                at += piece.len();
            }
            return Self {
                buf: PackedBuf::Inline {
                    len: at as u8,
                    data,
                },
                uri_len,
                headers: 0,
            };
        }
        // One pass over the headers: sizing the buffer exactly would walk them twice, which
        // costs more than the rare reallocation of a head with long values.
        let mut buf = Vec::with_capacity(uri_len + headers.len() * ENTRY_GUESS);
        for piece in uri.into_iter().filter(|piece| !piece.is_empty()) {
            buf.extend_from_slice(piece.as_bytes());
        }
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            buf.push(u8::from(value.is_sensitive()));
            put_varint(&mut buf, name.len());
            put_varint(&mut buf, value.len());
            buf.extend_from_slice(name);
            buf.extend_from_slice(value.as_bytes());
        }
        Self {
            buf: PackedBuf::Heap(buf),
            uri_len,
            headers: headers.len(),
        }
    }

    /// The entries, in the order they were packed; stops early at a malformed entry (which
    /// `pack` never writes).
    fn entries(&self) -> impl Iterator<Item = Option<Entry>> + '_ {
        let buf = self.buf.as_slice();
        let mut pos = self.uri_len;
        (0..self.headers).map(move |_| {
            let sensitive = *buf.get(pos)? == 1;
            pos += 1;
            let name_len = take_varint(buf, &mut pos)?;
            let value_len = take_varint(buf, &mut pos)?;
            let name = pos..pos.checked_add(name_len)?;
            let value = name.end..name.end.checked_add(value_len)?;
            if value.end > buf.len() {
                return None;
            }
            pos = value.end;
            Some(Entry {
                sensitive,
                name,
                value,
            })
        })
    }

    fn contains(&self, name: &HeaderName) -> bool {
        let wanted = name.as_str().as_bytes();
        self.entries()
            .map_while(|entry| entry)
            .any(|entry| &self.buf.as_slice()[entry.name] == wanted)
    }

    fn unpack(&self) -> Option<(Uri, HeaderMap)> {
        // One copy of the buffer; the URI and every value are slices of it (a reference count,
        // no copy).
        let buf = self.buf.as_slice();
        let shared = Bytes::copy_from_slice(buf);
        let uri = Uri::from_maybe_shared(shared.slice(..self.uri_len)).ok()?;
        let mut headers = HeaderMap::with_capacity(self.headers);
        for entry in self.entries() {
            let entry = entry?;
            let name = HeaderName::from_bytes(&buf[entry.name]).ok()?;
            let mut value = HeaderValue::from_maybe_shared(shared.slice(entry.value)).ok()?;
            value.set_sensitive(entry.sensitive);
            headers.append(name, value);
        }
        Some((uri, headers))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(parts: &Parts) -> Parts {
        KeptHead::of(parts)
            .to_parts()
            .expect("a valid head rebuilds")
    }

    fn pairs(headers: &HeaderMap) -> Vec<(String, Vec<u8>, bool)> {
        headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
            .collect()
    }

    #[test]
    fn a_head_comes_back_equal() {
        let mut req = Request::post("http://api.example.test:8080/orders?x=1")
            .version(Version::HTTP_2)
            .header("content-type", "application/json")
            .header("x-request-id", "4f1c2a9e")
            .header("accept", "text/plain")
            .header("accept", "application/json")
            .header(
                "x-bytes",
                HeaderValue::from_bytes(b"caf\xc3\xa9\t!").unwrap(),
            )
            .body(())
            .unwrap();
        let mut secret = HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        req.headers_mut().insert("authorization", secret);
        req.extensions_mut().insert(7u32);
        let (parts, ()) = req.into_parts();

        let copy = round_trip(&parts);
        assert_eq!(copy.method, parts.method);
        assert_eq!(copy.uri, parts.uri);
        assert_eq!(copy.version, parts.version);
        assert_eq!(pairs(&copy.headers), pairs(&parts.headers));
        assert_eq!(copy.headers, parts.headers);
        assert!(copy.headers["authorization"].is_sensitive());
        assert_eq!(copy.extensions.get::<u32>(), Some(&7));
        // The same again: a kept head serves every retry.
        let kept = KeptHead::of(&parts);
        assert_eq!(
            kept.to_parts().unwrap().headers,
            kept.to_parts().unwrap().headers
        );
    }

    #[test]
    fn a_head_without_headers_comes_back_without() {
        let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let kept = KeptHead::of(&parts);
        assert!(matches!(kept.packed.buf, PackedBuf::Inline { .. }));
        assert_eq!(kept.packed.buf.as_slice(), b"/");
        let copy = kept.to_parts().unwrap();
        assert!(copy.headers.is_empty());
        assert_eq!(copy.uri, "/");
        assert!(!kept.contains_header(&http::header::ACCEPT));
    }

    #[test]
    fn a_long_uri_without_headers_goes_to_the_heap() {
        let short = "/".to_owned() + &"a".repeat(INLINE - 1);
        let long = "/".to_owned() + &"a".repeat(INLINE);
        for (uri, inline) in [(short, true), (long, false)] {
            let (parts, ()) = Request::get(&uri).body(()).unwrap().into_parts();
            let kept = KeptHead::of(&parts);
            assert_eq!(
                matches!(kept.packed.buf, PackedBuf::Inline { .. }),
                inline,
                "{uri}"
            );
            assert_eq!(kept.to_parts().unwrap().uri, parts.uri);
        }
    }

    #[test]
    fn every_form_of_uri_comes_back_equal() {
        for uri in [
            "/",
            "/orders",
            "/orders?page=2&x=%20",
            "*",
            "http://api.example.test",
            "http://api.example.test/orders",
            "https://user:pw@api.example.test:8443/a/b?c=d",
            "http://[::1]:3000/v1?",
            "custom-scheme://host/path",
            "example.com:443",
        ] {
            let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
            let copy = round_trip(&parts);
            assert_eq!(copy.uri, parts.uri, "{uri}");
            assert_eq!(copy.uri.to_string(), parts.uri.to_string(), "{uri}");
        }
        let (parts, ()) = Request::get(Uri::from_static("http://static.test/x"))
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(round_trip(&parts).uri, parts.uri);
    }

    #[test]
    fn long_values_grow_the_buffer() {
        let (parts, ()) = Request::get("/")
            .header("x-long", "v".repeat(300))
            .header("a", "b")
            .header("x-longer", "w".repeat(20_000))
            .body(())
            .unwrap()
            .into_parts();
        let copy = round_trip(&parts);
        assert_eq!(copy.headers, parts.headers);
        assert_eq!(copy.headers["x-longer"].len(), 20_000);
    }

    #[test]
    fn finds_a_header_by_name() {
        let (parts, ()) = Request::post("/")
            .header("idempotency-key", "\"k\"")
            .header("x-other", "1")
            .body(())
            .unwrap()
            .into_parts();
        let kept = KeptHead::of(&parts);
        assert!(kept.contains_header(&HeaderName::from_static("idempotency-key")));
        assert!(kept.contains_header(&HeaderName::from_static("x-other")));
        assert!(!kept.contains_header(&HeaderName::from_static("x-othe")));
    }

    #[test]
    fn varints_round_trip() {
        for n in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            u32::MAX as usize,
            usize::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            let mut pos = 0;
            assert_eq!(take_varint(&buf, &mut pos), Some(n));
            assert_eq!(pos, buf.len());
        }
        // A truncated varint is not read past the buffer.
        assert_eq!(take_varint(&[0x80], &mut 0), None);
    }

    proptest! {
        #[test]
        fn any_uri_round_trips(
            origin in proptest::option::of(("https?", "[a-z0-9.-]{1,20}", proptest::option::of(1u16..))),
            path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}){0,4}",
            query in proptest::option::of("[a-zA-Z0-9._~%!$&'()*+,;=:@/?-]{0,20}"),
        ) {
            let mut uri = String::new();
            if let Some((scheme, host, port)) = &origin {
                uri.push_str(&format!("{scheme}://{host}"));
                if let Some(port) = port {
                    uri.push_str(&format!(":{port}"));
                }
            }
            uri.push_str(if path.is_empty() && origin.is_none() { "/" } else { &path });
            if let Some(query) = &query {
                uri.push('?');
                uri.push_str(query);
            }
            let Ok(parsed) = uri.parse::<Uri>() else {
                return Err(TestCaseError::reject("not a URI http accepts"));
            };
            let (parts, ()) = Request::get(parsed).body(()).unwrap().into_parts();
            let copy = round_trip(&parts);
            prop_assert_eq!(&copy.uri, &parts.uri);
            prop_assert_eq!(copy.uri.to_string(), parts.uri.to_string());
        }

        #[test]
        fn any_header_map_round_trips(
            headers in proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,20}", proptest::collection::vec(
                    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..200), any::<bool>()),
                0..20,
            )
        ) {
            let mut map = HeaderMap::new();
            for (name, value, sensitive) in &headers {
                let mut value = HeaderValue::from_bytes(value).unwrap();
                value.set_sensitive(*sensitive);
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.headers = map;
            let copy = round_trip(&parts);
            prop_assert_eq!(pairs(&copy.headers), pairs(&parts.headers));
        }
    }
}
