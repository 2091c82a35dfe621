//! The request head kept for retries.
//!
//! Every retry layer has to keep a copy of the request it sends, because the inner service
//! consumes it. `http::request::Parts::clone` is the obvious copy, and on a real client request
//! the most expensive part of the whole happy path: a `HeaderMap` clone allocates its index and
//! entry tables, every header value (and custom header name) made from a `&str` is a `Bytes`
//! that allocates again when first cloned — six allocations for a request with three ordinary
//! headers — and the URI's `Bytes` cost two atomic reference counts (or an allocation, for a
//! path-only URI parsed from a string). [`KeptHead`] keeps the URI's parts and the headers as
//! their bytes, packed into one buffer (one allocation; none for a short URI without headers),
//! clones the extensions as they are (free when there are none), and parses the rest back only
//! when a retry actually happens.

use std::ops::Range;

use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version,
    request::Parts,
    uri::{self, Authority, PathAndQuery, Scheme},
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
    #[cfg(test)]
    pub(crate) fn contains_header(&self, name: &HeaderName) -> bool {
        self.packed.value(name).is_some()
    }

    /// The first kept value of header `name`, as bytes.
    pub(crate) fn header_value(&self, name: &HeaderName) -> Option<&[u8]> {
        self.packed.value(name)
    }

    /// The head of another attempt: equal to the one this was made of.
    ///
    /// Each part of the URI and each header is parsed back from bytes `http` once accepted for
    /// that same part, so this does not fail for a head made through `http`'s safe
    /// constructors; `None` would mean one was made with `unsafe` (an unchecked value).
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
/// The buffer holds the URI's scheme, authority and path-and-query, one after the other (their
/// ends in `uri`), then one entry per header value, in iteration order: a flag byte (1 if the
/// value is sensitive), the name's length and the value's length as LEB128 varints, the name's
/// bytes, the value's bytes.
struct Packed {
    buf: PackedBuf,
    uri: UriLayout,
    /// Header entries (values) in `buf`.
    headers: usize,
}

/// Where the parts of the URI are in a [`Packed`] buffer. Kept apart, not as one string to
/// parse again: `http` accepts URIs built from parts that it would read differently as a
/// whole (a path of `*` after an authority, a path-and-query starting with `?`).
#[derive(Clone, Copy)]
struct UriLayout {
    /// Ends of the scheme, the authority and the path-and-query (the end of the URI); a part
    /// that is absent ends where the one before it does.
    scheme_end: usize,
    authority_end: usize,
    end: usize,
    /// Which parts are present: [`SCHEME`], [`AUTHORITY`], [`PATH_AND_QUERY`].
    present: u8,
}

const SCHEME: u8 = 1;
const AUTHORITY: u8 = 2;
const PATH_AND_QUERY: u8 = 4;

impl UriLayout {
    fn part(&self, bit: u8, range: Range<usize>) -> Option<Range<usize>> {
        (self.present & bit != 0).then_some(range)
    }

    fn scheme(&self) -> Option<Range<usize>> {
        self.part(SCHEME, 0..self.scheme_end)
    }

    fn authority(&self) -> Option<Range<usize>> {
        self.part(AUTHORITY, self.scheme_end..self.authority_end)
    }

    fn path_and_query(&self) -> Option<Range<usize>> {
        self.part(PATH_AND_QUERY, self.authority_end..self.end)
    }
}

/// The parts of a URI as text: scheme, authority, path-and-query, each absent or present.
fn uri_parts(uri: &Uri) -> [Option<&str>; 3] {
    // A URI without scheme, authority or path (`Uri::from_parts(Parts::default())`) reports
    // a path-and-query of `/`; it has none to keep.
    let path_and_query = uri
        .path_and_query()
        .map(PathAndQuery::as_str)
        .filter(|pq| *pq != "/" || !uri.path().is_empty());
    [
        uri.scheme_str(),
        uri.authority().map(Authority::as_str),
        path_and_query,
    ]
}

/// The bytes of a [`Packed`]: inline when they are only a short URI (a request without
/// headers), else on the heap.
enum PackedBuf {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Vec<u8>),
}

/// The longest URI kept inline: with the tag and the length, the 32 bytes the enum takes
/// anyway.
const INLINE: usize = 30;

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

/// A decoded header entry of [`Packed`]: byte ranges into the buffer.
struct Entry {
    sensitive: bool,
    name: Range<usize>,
    value: Range<usize>,
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
        let [scheme, authority, path_and_query] = uri_parts(uri);
        let len = |part: Option<&str>| part.map_or(0, str::len);
        let scheme_end = len(scheme);
        let authority_end = scheme_end + len(authority);
        let end = authority_end + len(path_and_query);
        let layout = UriLayout {
            scheme_end,
            authority_end,
            end,
            present: (u8::from(scheme.is_some()) * SCHEME)
                | (u8::from(authority.is_some()) * AUTHORITY)
                | (u8::from(path_and_query.is_some()) * PATH_AND_QUERY),
        };
        let pieces = [scheme, authority, path_and_query]
            .into_iter()
            .flatten()
            .filter(|piece| !piece.is_empty());
        if headers.is_empty() && end <= INLINE {
            let mut data = [0; INLINE];
            let mut at = 0;
            for piece in pieces {
                data[at..at + piece.len()].copy_from_slice(piece.as_bytes());
                at += piece.len();
            }
            return Self {
                buf: PackedBuf::Inline {
                    len: at as u8,
                    data,
                },
                uri: layout,
                headers: 0,
            };
        }
        // One pass over the headers: sizing the buffer exactly would walk them twice, which
        // costs more than the rare reallocation of a head with long values.
        let mut buf = Vec::with_capacity(end + headers.len() * ENTRY_GUESS);
        for piece in pieces {
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
            uri: layout,
            headers: headers.len(),
        }
    }

    /// The entries, in the order they were packed; stops early at a malformed entry (which
    /// `pack` never writes).
    fn entries(&self) -> impl Iterator<Item = Option<Entry>> + '_ {
        let buf = self.buf.as_slice();
        let mut pos = self.uri.end;
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

    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        let wanted = name.as_str().as_bytes();
        let buf = self.buf.as_slice();
        self.entries()
            .map_while(|entry| entry)
            .find(|entry| &buf[entry.name.clone()] == wanted)
            .map(|entry| &buf[entry.value])
    }

    fn unpack_uri(&self) -> Option<Uri> {
        let buf = self.buf.as_slice();
        let bytes = |range: Range<usize>| buf.get(range);
        let mut parts = uri::Parts::default();
        if let Some(range) = self.uri.scheme() {
            parts.scheme = Some(Scheme::try_from(bytes(range)?).ok()?);
        }
        if let Some(range) = self.uri.authority() {
            parts.authority = Some(Authority::try_from(bytes(range)?).ok()?);
        }
        if let Some(range) = self.uri.path_and_query() {
            parts.path_and_query = Some(PathAndQuery::try_from(bytes(range)?).ok()?);
        }
        Uri::from_parts(parts).ok()
    }

    fn unpack(&self) -> Option<(Uri, HeaderMap)> {
        let uri = self.unpack_uri()?;
        let buf = self.buf.as_slice();
        // `HeaderMap::with_capacity` panics past its limit on entries; counting values can
        // pass it where the map itself (extra values per name) did not.
        let mut headers = HeaderMap::try_with_capacity(self.headers).unwrap_or_default();
        for entry in self.entries() {
            let entry = entry?;
            let name = HeaderName::from_bytes(&buf[entry.name]).ok()?;
            // Each value its own copy: one shared buffer would keep every header (and the
            // sensitive ones) alive as long as any value a later layer holds on to.
            let mut value = HeaderValue::from_bytes(&buf[entry.value]).ok()?;
            value.set_sensitive(entry.sensitive);
            headers.try_append(name, value).ok()?;
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

    /// URIs `http` builds from parts but would read differently (or not at all) as one string.
    #[test]
    fn uris_built_from_parts_come_back_equal() {
        let build = |scheme: Option<&str>, authority: Option<&str>, pq: Option<&str>| {
            let mut parts = uri::Parts::default();
            parts.scheme = scheme.map(|s| s.parse().unwrap());
            parts.authority = authority.map(|a| a.parse().unwrap());
            parts.path_and_query = pq.map(|p| p.parse().unwrap());
            Uri::from_parts(parts).unwrap()
        };
        // Each part within `http`'s 65 534 bytes, the whole URI over them.
        let long_host = "h".repeat(30_000) + ".test";
        let long_path = "/".to_owned() + &"p".repeat(40_000);
        for uri in [
            // `OPTIONS *` through a client: `http://example.com:8080*` read as one string.
            build(Some("http"), Some("example.com:8080"), Some("*")),
            build(Some("http"), Some("example.com"), Some("*")),
            build(None, None, Some("?a=b")),
            build(None, None, None),
            build(Some("https"), Some(&long_host), Some(&long_path)),
        ] {
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.uri = uri;
            let copy = round_trip(&parts);
            assert_eq!(copy.uri, parts.uri);
            assert_eq!(copy.uri.host(), parts.uri.host());
            assert_eq!(copy.uri.port_u16(), parts.uri.port_u16());
            assert_eq!(copy.uri.path(), parts.uri.path());
            assert_eq!(copy.uri.to_string(), parts.uri.to_string());
        }
    }

    #[test]
    fn many_values_of_one_name_come_back_without_a_panic() {
        // More values than `HeaderMap::with_capacity` accepts as a capacity.
        let mut headers = HeaderMap::new();
        for i in 0..30_000 {
            headers.append("x-many", HeaderValue::from(i));
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.headers = headers;
        let copy = round_trip(&parts);
        assert_eq!(copy.headers.get_all("x-many").iter().count(), 30_000);
        assert_eq!(copy.headers, parts.headers);
    }

    #[test]
    fn the_inline_buffer_takes_no_more_than_a_heap_one_would() {
        assert!(size_of::<PackedBuf>() <= 32);
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
