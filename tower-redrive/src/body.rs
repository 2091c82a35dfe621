//! Reading a request body whole, under the layer's cap, before anything is sent.

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_fault::BoxError;

use crate::error::{BodyError, BodyTooLarge};

/// The whole body, or [`BodyTooLarge`] past `limit` bytes (refused on its size hint when it
/// announces more), or [`BodyError`] when it cannot be read.
pub(crate) async fn collect<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyTooLarge { limit }.into());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyTooLarge { limit }.into()),
        Err(e) => Err(BodyError::new(e).into()),
    }
}
