//! What identifies a record: the caller's scope, the key, the request's fingerprint, and the
//! fencing token of a claim.

use std::{
    fmt,
    hash::{Hash, Hasher},
};

use http::{HeaderName, request::Parts};
use sha2::{Digest, Sha256};
use tower_fault::IdempotencyKey;

/// The principal a record belongs to: two scopes never see each other's records.
///
/// Built from any string that identifies the caller (a user id, a tenant, a token); only a
/// SHA-256 digest of it is kept, so secrets (an `Authorization` header) never reach the store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    digest: [u8; 16],
}

impl Scope {
    /// The scope of a principal.
    #[must_use]
    pub fn new(principal: impl AsRef<[u8]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"principal\0");
        hasher.update(principal.as_ref());
        let full = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Self { digest }
    }

    /// The one scope shared by requests without a principal.
    #[must_use]
    pub const fn anonymous() -> Self {
        Self { digest: [0; 16] }
    }

    /// Whether this is the anonymous scope.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.digest == [0; 16]
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anonymous() {
            f.write_str("Scope(anonymous)")
        } else {
            write!(f, "Scope({}…)", hex::encode(&self.digest[..4]))
        }
    }
}

/// A principal from the raw `Authorization` header (hashed by [`Scope::new`]), for
/// [`IdempotencyLayerBuilder::principal`](crate::IdempotencyLayerBuilder::principal).
///
/// Right where that header is a stable per-caller credential, such as an API key: two callers'
/// records never meet, even under the same key. A caller whose header changes (a refreshed
/// bearer token) becomes a new principal, and its retry of an earlier request executes again;
/// the layer's default (no principal, records bound to the credentials) refuses that retry
/// instead.
///
/// ```
/// use tower_idempotency::{IdempotencyLayer, authorization_principal};
///
/// let layer = IdempotencyLayer::builder()
///     .principal(authorization_principal)
///     .build()?;
/// # let _ = layer;
/// # Ok::<_, tower_idempotency::error::ConfigError>(())
/// ```
#[must_use]
pub fn authorization_principal(parts: &Parts) -> Option<Scope> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|value| Scope::new(value.as_bytes()))
}

/// The store key of a record: a digest of (scope, idempotency key).
///
/// Its text form is 32 hex digits (128 bits), safe in any store and free of the caller's key
/// characters; stores may prefix it and hash-tag it (`idem:{…}`) for Redis Cluster.
// Held inline (no heap allocation): the raw digest, which the memory store keys, hashes and shards
// by, and its hex text, which `as_str` lends to networked stores. Equality and hashing look at
// the digest only (the text is a function of it).
#[derive(Clone)]
pub struct RecordKey {
    digest: [u8; 16],
    text: [u8; 32],
}

impl RecordKey {
    /// The record key of an idempotency key in a scope.
    #[must_use]
    pub fn new(scope: &Scope, key: &IdempotencyKey) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.digest);
        hasher.update(key.as_str().as_bytes());
        let full = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Self::from_digest(digest)
    }

    fn from_digest(digest: [u8; 16]) -> Self {
        let mut text = [0u8; 32];
        // Into the inline buffer, no allocation; it only fails on a length mismatch, and 32
        // bytes are exactly 16 bytes in hex.
        hex::encode_to_slice(digest, &mut text).expect("32 bytes hold 16 bytes in hex");
        Self { digest, text }
    }

    /// The raw 128-bit digest (what the memory store keys by).
    pub(crate) const fn digest(&self) -> &[u8; 16] {
        &self.digest
    }

    /// The key as text (32 hex digits).
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Lowercase hex digits only (written by `from_digest`): always valid UTF-8.
        std::str::from_utf8(&self.text).expect("hex digits are ASCII")
    }

    /// A short prefix for logs (keys are never logged in full).
    #[must_use]
    pub fn short(&self) -> &str {
        &self.as_str()[..8]
    }
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for RecordKey {}

impl Hash for RecordKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One 16-byte write (a derived `Hash` would also hash the text and a length prefix).
        state.write_u128(u128::from_ne_bytes(self.digest));
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({}…)", self.short())
    }
}

/// A SHA-256 fingerprint of what a request asks for: method, path and query, chosen headers and
/// the body. The same key with another fingerprint is a misuse of the key (422).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprints a request: what the layer computes for a request with a principal, or one
    /// that carries no credentials.
    #[must_use]
    pub fn compute(parts: &Parts, headers: &[HeaderName], body: &[u8]) -> Self {
        Self::compute_bound(parts, headers, &[], body)
    }

    /// Fingerprints a request bound to its `credentials` headers: the values of those it
    /// carries are part of the digest (nothing is added for those it does not, so a request
    /// without any fingerprints as [`compute`](Self::compute) does). `Cookie` is taken pair by
    /// pair, so one header `a=1; b=2` and the two headers `a=1`, `b=2` (as HTTP/2 may send
    /// them) are the same jar.
    pub(crate) fn compute_bound(
        parts: &Parts,
        headers: &[HeaderName],
        credentials: &[HeaderName],
        body: &[u8],
    ) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(parts.method.as_str().as_bytes());
        hasher.update(b"\n");
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        hasher.update(target.as_bytes());
        hasher.update(b"\n");
        for name in headers {
            hasher.update(name.as_str().as_bytes());
            for value in parts.headers.get_all(name) {
                // Length-prefixed: a value may hold `:` itself, and one header `a:b` must not
                // hash like the two headers `a` and `b`.
                hasher.update(b":");
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(value.as_bytes());
            }
            hasher.update(b"\n");
        }
        // One walk over the request's header names finds whether it carries any credential
        // (cheaper than a hashed lookup per credential name, and the common case for a
        // request without a principal); only then is each looked up, in the order given.
        let carries_any = parts.headers.keys().any(|name| credentials.contains(name));
        for name in credentials.iter().filter(|_| carries_any) {
            let mut values = parts.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                continue;
            }
            hasher.update(b"\0credential ");
            hasher.update(name.as_str().as_bytes());
            let pairs = values.flat_map(|value| {
                let bytes = value.as_bytes();
                let cookie = *name == http::header::COOKIE;
                bytes
                    .split(move |&b| cookie && b == b';')
                    .map(<[u8]>::trim_ascii)
                    .filter(move |pair| !cookie || !pair.is_empty())
            });
            for pair in pairs {
                hasher.update(b":");
                hasher.update((pair.len() as u64).to_be_bytes());
                hasher.update(pair);
            }
            hasher.update(b"\n");
        }
        hasher.update((body.len() as u64).to_be_bytes());
        hasher.update(body);
        Self(hasher.finalize().into())
    }

    /// The raw digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fingerprint from its raw digest (as a store read it back).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({}…)", hex::encode(&self.0[..4]))
    }
}

/// The fencing token of a claim, inserted into the request's extensions before the handler runs.
///
/// Completion is a compare-and-set on this token, so an owner whose lease expired can never
/// overwrite a newer record. Tokens of one key only grow, so a handler can fence its own writes
/// with it too (store it beside the effect and refuse a write carrying a smaller token).
///
/// ```
/// use axum::{Extension, routing::post, Router};
/// use tower_idempotency::{FencingToken, IdempotencyLayer};
///
/// async fn create(Extension(token): Extension<FencingToken>) -> String {
///     format!("executed under token {}", token.get())
/// }
///
/// let app: Router = Router::new()
///     .route("/orders", post(create))
///     .layer(IdempotencyLayer::default());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token from its value.
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The token's value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, ct: Option<&str>) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// One header `a:b` and the two headers `a`, `b` are different requests.
    #[test]
    fn fingerprint_tells_header_values_apart() {
        let name = HeaderName::from_static("x-tag");
        let with = |values: &[&str]| {
            let mut b = http::Request::post("/a");
            for v in values {
                b = b.header(&name, *v);
            }
            Fingerprint::compute(
                &b.body(()).unwrap().into_parts().0,
                std::slice::from_ref(&name),
                b"",
            )
        };
        assert_ne!(with(&["a:b"]), with(&["a", "b"]));
        assert_ne!(with(&["a", "b"]), with(&["b", "a"]));
        assert_eq!(with(&["a", "b"]), with(&["a", "b"]));
    }

    #[test]
    fn fingerprint_covers_method_target_headers_body() {
        let ct = [http::header::CONTENT_TYPE];
        let base = Fingerprint::compute(&parts("POST", "/a?x=1", Some("json")), &ct, b"body");
        assert_eq!(
            base,
            Fingerprint::compute(&parts("POST", "/a?x=1", Some("json")), &ct, b"body")
        );
        assert_ne!(
            base,
            Fingerprint::compute(&parts("PATCH", "/a?x=1", Some("json")), &ct, b"body")
        );
        assert_ne!(
            base,
            Fingerprint::compute(&parts("POST", "/b?x=1", Some("json")), &ct, b"body")
        );
        assert_ne!(
            base,
            Fingerprint::compute(&parts("POST", "/a?x=2", Some("json")), &ct, b"body")
        );
        assert_ne!(
            base,
            Fingerprint::compute(&parts("POST", "/a?x=1", Some("text")), &ct, b"body")
        );
        assert_ne!(
            base,
            Fingerprint::compute(&parts("POST", "/a?x=1", Some("json")), &ct, b"bodY")
        );
        // Headers not chosen do not count.
        assert_eq!(
            Fingerprint::compute(&parts("POST", "/a?x=1", Some("json")), &[], b"body"),
            Fingerprint::compute(&parts("POST", "/a?x=1", Some("text")), &[], b"body"),
        );
    }

    /// Bound to credentials, a fingerprint tells callers apart; a request without credentials
    /// fingerprints as `compute` does; a cookie jar is the same jar in one header or several.
    #[test]
    fn bound_fingerprints_follow_the_credentials() {
        let creds = [http::header::AUTHORIZATION, http::header::COOKIE];
        let with = |headers: &[(&str, &str)]| {
            let mut b = http::Request::post("/a");
            for (n, v) in headers {
                b = b.header(*n, *v);
            }
            let parts = b.body(()).unwrap().into_parts().0;
            Fingerprint::compute_bound(&parts, &[], &creds, b"x")
        };
        let plain = Fingerprint::compute(&parts("POST", "/a", None), &[], b"x");
        assert_eq!(with(&[]), plain);
        assert_eq!(with(&[("x-other", "1")]), plain);
        assert_ne!(with(&[("authorization", "Bearer a")]), plain);
        assert_ne!(
            with(&[("authorization", "Bearer a")]),
            with(&[("authorization", "Bearer b")])
        );
        assert_ne!(
            with(&[("authorization", "a")]),
            with(&[("cookie", "a")]),
            "the header's name counts"
        );
        let jar = with(&[("cookie", "session=a; theme=dark")]);
        assert_eq!(
            jar,
            with(&[("cookie", "session=a"), ("cookie", "theme=dark")])
        );
        assert_eq!(jar, with(&[("cookie", "session=a;theme=dark;")]));
        assert_ne!(jar, with(&[("cookie", "session=b; theme=dark")]));
        assert_ne!(jar, with(&[("cookie", "session=a")]));
    }

    #[test]
    fn record_keys_separate_scopes() {
        let key = IdempotencyKey::parse_str("k").unwrap();
        let a = RecordKey::new(&Scope::new("alice"), &key);
        let b = RecordKey::new(&Scope::new("bob"), &key);
        assert_ne!(a, b);
        assert_ne!(a, RecordKey::new(&Scope::anonymous(), &key));
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    /// The text form is what stores persist (Redis keys): it must stay the lowercase hex of the
    /// first 16 bytes of SHA-256(scope digest, key), and equality and hashing follow it.
    #[test]
    fn record_key_text_is_the_hex_of_its_digest() {
        let key = IdempotencyKey::parse_str("order-42").unwrap();
        let scope = Scope::new("alice");
        let mut hasher = Sha256::new();
        hasher.update(scope.digest);
        hasher.update(b"order-42");
        let full = hasher.finalize();
        let a = RecordKey::new(&scope, &key);
        assert_eq!(a.as_str(), hex::encode(&full[..16]));
        assert_eq!(a.short(), &hex::encode(&full[..16])[..8]);
        assert_eq!(a.digest(), &full[..16]);
        let b = a.clone();
        assert_eq!(a, b);
        let state = std::hash::RandomState::new();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&state, &a),
            std::hash::BuildHasher::hash_one(&state, &b)
        );
    }
}
