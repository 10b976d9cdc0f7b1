//! The one response/request body type used between stages, and reading a
//! request body whole under the limits its stack set.

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

/// A request body read past the limit of its stack
/// ([`crate::layers::body_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body is larger than {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    TooLarge(TooLarge),
    /// It stalled for longer than its stack's body timeout.
    #[error("the body stalled")]
    Stalled,
    #[error("cannot read the body")]
    Failed(#[source] BoxError),
}

/// Reads a request body whole; the limit and the timeout are its stack's
/// layers', recognised here by their errors.
pub async fn read_whole<B>(body: B) -> Result<Bytes, ReadError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            let e: BoxError = e.into();
            Err(match e.downcast::<TooLarge>() {
                Ok(too_large) => ReadError::TooLarge(*too_large),
                Err(e) if e.is::<tower_http::timeout::TimeoutError>() => ReadError::Stalled,
                Err(e) => ReadError::Failed(e),
            })
        }
    }
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
