//! The one response/request body type used between stages.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Errors carried by bodies: whatever the underlying stream failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body. Boxed once at stage boundaries so that tower
/// stacks stay nameable and compile errors stay short.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(never).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(never).boxed_unsync()
}

// A fn item rather than `Into::into`: generic conversions into `BoxError`
// inside async blocks trip rustc's higher-ranked lifetime inference.
fn never(e: std::convert::Infallible) -> BoxError {
    match e {}
}
