//! What a completed record holds, how it is encoded for a store, and which headers it keeps.

use std::{error::Error, fmt, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::key::Fingerprint;

/// Whether a response header is never stored nor replayed: cookies, credentials and hop-by-hop
/// headers (`Set-Cookie`, `Set-Cookie2`, `WWW-Authenticate`, `Proxy-Authenticate`,
/// `Authorization`, `Proxy-Authorization`, `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`) and `Content-Length` (recomputed from the
/// stored body).
#[must_use]
pub fn is_never_replayed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "set-cookie"
            | "set-cookie2"
            | "www-authenticate"
            | "proxy-authenticate"
            | "authorization"
            | "proxy-authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

/// A response kept for replay: status, headers (every value of multi-valued ones, in order), body
/// and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, without those that are never replayed.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
    /// The trailers that followed the body (empty if none), without those that are never
    /// replayed.
    pub trailers: Vec<(HeaderName, HeaderValue)>,
}

impl StoredResponse {
    /// Keeps what may be replayed of a response: drops what [`is_never_replayed`] names, the `extra` denied
    /// names, and headers the `Connection` header names.
    #[must_use]
    pub fn capture(
        status: StatusCode,
        headers: &HeaderMap,
        extra: &[HeaderName],
        body: Bytes,
    ) -> Self {
        let connection_named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let headers = headers
            .iter()
            .filter(|(name, _)| {
                !is_never_replayed(name)
                    && !extra.contains(name)
                    && !connection_named.iter().any(|c| c == name.as_str())
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Self {
            status,
            headers,
            body,
            trailers: Vec::new(),
        }
    }

    /// Keeps what may be replayed of a response's trailers: drops what [`is_never_replayed`]
    /// names and the `extra` denied names.
    #[must_use]
    pub fn with_trailers(mut self, trailers: &HeaderMap, extra: &[HeaderName]) -> Self {
        self.trailers = trailers
            .iter()
            .filter(|(name, _)| !is_never_replayed(name) && !extra.contains(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        self
    }

    /// The stored trailers as a map (`None` if there are none).
    #[must_use]
    pub fn trailer_map(&self) -> Option<HeaderMap> {
        if self.trailers.is_empty() {
            return None;
        }
        let mut map = HeaderMap::with_capacity(self.trailers.len());
        for (name, value) in &self.trailers {
            map.append(name.clone(), value.clone());
        }
        Some(map)
    }
}

/// What a completed key answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response, replayed as it was.
    Response(StoredResponse),
    /// The request executed but its response body was larger than the layer keeps; replays get
    /// the documented `response-not-replayable` problem instead of a second execution.
    TooLarge {
        /// The status of the original response.
        status: StatusCode,
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },
    /// The request executed (its status was not a transient failure) but its response body
    /// failed while the layer read it; replays get the `response-not-replayable` problem
    /// instead of a second execution.
    BodyFailed {
        /// The status of the original response.
        status: StatusCode,
    },
    /// The request executed but its response body did not end within the layer's response
    /// body timeout; replays get the `response-not-replayable` problem instead of a second
    /// execution.
    TooSlow {
        /// The status of the original response.
        status: StatusCode,
        /// The timeout that was exceeded.
        limit: Duration,
    },
}

/// A completed record: the request's fingerprint and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedRecord {
    /// The fingerprint of the request that executed.
    pub fingerprint: Fingerprint,
    /// What replays answer.
    pub outcome: Outcome,
}

/// A record a store could not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("stored idempotency record is corrupt")
    }
}

impl Error for DecodeError {}

const TAG_RESPONSE: u8 = 1;
const TAG_TOO_LARGE: u8 = 2;
const TAG_BODY_FAILED: u8 = 4;
const TAG_TOO_SLOW: u8 = 5;
/// A response with trailers (a response without any is written in the shorter `TAG_RESPONSE`
/// layout).
const TAG_RESPONSE_TRAILERS: u8 = 3;

fn fields_len(fields: &[(HeaderName, HeaderValue)]) -> usize {
    2 + fields
        .iter()
        .take(usize::from(u16::MAX))
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum::<usize>()
}

fn put_fields(out: &mut BytesMut, fields: &[(HeaderName, HeaderValue)]) {
    out.put_u16(u16::try_from(fields.len()).unwrap_or(u16::MAX));
    for (name, value) in fields.iter().take(usize::from(u16::MAX)) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
}

fn need(data: &Bytes, n: usize) -> Result<(), DecodeError> {
    if data.remaining() < n {
        Err(DecodeError)
    } else {
        Ok(())
    }
}

fn get_fields(data: &mut Bytes) -> Result<Vec<(HeaderName, HeaderValue)>, DecodeError> {
    need(data, 2)?;
    let count = data.get_u16();
    let mut fields = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        need(data, 2)?;
        let len = usize::from(data.get_u16());
        need(data, len)?;
        let name = HeaderName::from_bytes(&data.split_to(len)).map_err(|_| DecodeError)?;
        need(data, 4)?;
        let len = data.get_u32() as usize;
        need(data, len)?;
        let value = HeaderValue::from_maybe_shared(data.split_to(len)).map_err(|_| DecodeError)?;
        fields.push((name, value));
    }
    Ok(fields)
}

impl Outcome {
    /// A compact binary encoding (for stores that keep bytes).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        match self {
            Outcome::Response(res) => {
                let has_trailers = !res.trailers.is_empty();
                let size = 3
                    + fields_len(&res.headers)
                    + if has_trailers {
                        fields_len(&res.trailers)
                    } else {
                        0
                    }
                    + res.body.len();
                let mut out = BytesMut::with_capacity(size);
                out.put_u8(if has_trailers {
                    TAG_RESPONSE_TRAILERS
                } else {
                    TAG_RESPONSE
                });
                out.put_u16(res.status.as_u16());
                put_fields(&mut out, &res.headers);
                if has_trailers {
                    put_fields(&mut out, &res.trailers);
                }
                out.put_slice(&res.body);
                out.freeze()
            }
            Outcome::TooLarge { status, limit } => {
                let mut out = BytesMut::with_capacity(11);
                out.put_u8(TAG_TOO_LARGE);
                out.put_u16(status.as_u16());
                out.put_u64(*limit);
                out.freeze()
            }
            Outcome::BodyFailed { status } => {
                let mut out = BytesMut::with_capacity(3);
                out.put_u8(TAG_BODY_FAILED);
                out.put_u16(status.as_u16());
                out.freeze()
            }
            Outcome::TooSlow { status, limit } => {
                let mut out = BytesMut::with_capacity(11);
                out.put_u8(TAG_TOO_SLOW);
                out.put_u16(status.as_u16());
                out.put_u64(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
                out.freeze()
            }
        }
    }

    /// Decodes [`Outcome::encode`]'s output.
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes are not such an encoding.
    pub fn decode(mut data: Bytes) -> Result<Self, DecodeError> {
        need(&data, 3)?;
        let tag = data.get_u8();
        let status = StatusCode::from_u16(data.get_u16()).map_err(|_| DecodeError)?;
        match tag {
            TAG_RESPONSE | TAG_RESPONSE_TRAILERS => {
                let headers = get_fields(&mut data)?;
                let trailers = if tag == TAG_RESPONSE_TRAILERS {
                    get_fields(&mut data)?
                } else {
                    Vec::new()
                };
                Ok(Outcome::Response(StoredResponse {
                    status,
                    headers,
                    body: data,
                    trailers,
                }))
            }
            TAG_TOO_LARGE => {
                need(&data, 8)?;
                Ok(Outcome::TooLarge {
                    status,
                    limit: data.get_u64(),
                })
            }
            TAG_BODY_FAILED => Ok(Outcome::BodyFailed { status }),
            TAG_TOO_SLOW => {
                need(&data, 8)?;
                Ok(Outcome::TooSlow {
                    status,
                    limit: Duration::from_millis(data.get_u64()),
                })
            }
            _ => Err(DecodeError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn capture_drops_secrets_and_hop_by_hop_keeps_multi_values() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("www-authenticate", HeaderValue::from_static("Basic"));
        headers.append("connection", HeaderValue::from_static("close, x-hop"));
        headers.append("x-hop", HeaderValue::from_static("1"));
        headers.append("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.append("x-private", HeaderValue::from_static("p"));
        headers.append("link", HeaderValue::from_static("<a>"));
        headers.append("link", HeaderValue::from_static("<b>"));
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        let stored = StoredResponse::capture(
            StatusCode::CREATED,
            &headers,
            &[HeaderName::from_static("x-private")],
            Bytes::from_static(b"x"),
        );
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["link", "link", "content-type"]);
        assert_eq!(stored.headers[0].1, "<a>");
        assert_eq!(stored.headers[1].1, "<b>");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(Outcome::decode(Bytes::from_static(b"")), Err(DecodeError));
        assert_eq!(
            Outcome::decode(Bytes::from_static(b"\x09\x00\xc8")),
            Err(DecodeError)
        );
        assert_eq!(
            Outcome::decode(Bytes::from_static(b"\x01\x00\xc8\x00\x05")),
            Err(DecodeError)
        );
    }

    proptest! {
        #[test]
        fn encoding_round_trips(
            status in 200u16..600,
            headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", "[ -~]{0,40}"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            trailers in proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", "[ -~]{0,40}"), 0..3),
            limit in any::<u64>(),
        ) {
            let fields = |list: &[(String, String)]| -> Vec<(HeaderName, HeaderValue)> {
                list.iter()
                    .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
                    .collect()
            };
            let res = StoredResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: fields(&headers),
                body: Bytes::from(body),
                trailers: fields(&trailers),
            };
            let outcome = Outcome::Response(res);
            prop_assert_eq!(Outcome::decode(outcome.encode()).unwrap(), outcome);
            let tomb = Outcome::TooLarge { status: StatusCode::from_u16(status).unwrap(), limit };
            prop_assert_eq!(Outcome::decode(tomb.encode()).unwrap(), tomb);
            let failed = Outcome::BodyFailed { status: StatusCode::from_u16(status).unwrap() };
            prop_assert_eq!(Outcome::decode(failed.encode()).unwrap(), failed);
            let slow = Outcome::TooSlow {
                status: StatusCode::from_u16(status).unwrap(),
                limit: Duration::from_millis(limit >> 20),
            };
            prop_assert_eq!(Outcome::decode(slow.encode()).unwrap(), slow);
        }
    }
}
