//! Request body size limits: the one place `server.max_request_bytes` and
//! `webhook.max_body_bytes` are enforced.
//!
//! A declared `Content-Length` over the limit is refused before anything is
//! read, with the response the stack gives (GraphQL-shaped on the public
//! listener, the webhook's shape on the webhook listener). Any other body
//! is wrapped in `http_body_util::Limited`: reading past the limit fails with
//! [`TooLarge`], which the handler that reads the body answers `413` in its
//! own shape (see [`crate::http::body::read_whole`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::http::body::{Body, BoxError, TooLarge};

/// Caps request bodies at `limit` bytes; `too_large` answers declared
/// lengths over it.
#[derive(Clone, Copy)]
pub struct BodyLimitLayer {
    limit: usize,
    too_large: fn(TooLarge) -> Response<Body>,
}

impl BodyLimitLayer {
    pub fn new(limit: usize, too_large: fn(TooLarge) -> Response<Body>) -> Self {
        Self { limit, too_large }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            layer: *self,
        }
    }
}

/// The middleware of [`BodyLimitLayer`].
#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    layer: BodyLimitLayer,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Limited<B>>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limit = self.layer.limit;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return ResponseFuture::refused((self.layer.too_large)(TooLarge { limit }));
        }
        let request = request.map(|body| Limited {
            inner: http_body_util::Limited::new(body, limit),
            limit,
        });
        ResponseFuture::inner(self.inner.call(request))
    }
}

pin_project! {
    /// A request body capped by [`BodyLimit`]; past the cap it fails with
    /// [`TooLarge`].
    pub struct Limited<B> {
        #[pin]
        inner: http_body_util::Limited<B>,
        limit: usize,
    }
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let limit = *this.limit;
        this.inner.poll_frame(cx).map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Box::new(TooLarge { limit })
            } else {
                e
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::{self, ReadError};
    use http::StatusCode;
    use tower::ServiceExt;

    fn refuse(_: TooLarge) -> Response<Body> {
        let mut res = Response::new(body::empty());
        *res.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        res
    }

    /// Answers 200 when the body reads whole, else the read error's text.
    async fn read(
        request: Request<Limited<Body>>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        Ok(match body::read_whole(request.into_body()).await {
            Ok(_) => Response::new(body::empty()),
            Err(e) => Response::new(body::full(e.to_string())),
        })
    }

    async fn call(content_length: Option<usize>, len: usize) -> Response<Body> {
        let mut request = Request::post("/")
            .body(body::full(vec![b'x'; len]))
            .unwrap();
        if let Some(n) = content_length {
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, n.into());
        }
        BodyLimitLayer::new(8, refuse)
            .layer(tower::service_fn(read))
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn declared_lengths_are_refused_before_reading_and_streams_when_read() {
        assert_eq!(
            call(Some(9), 9).await.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(call(Some(8), 8).await.status(), StatusCode::OK);
        let res = call(None, 9).await;
        let text = body::read_whole(res.into_body()).await.unwrap();
        assert_eq!(text, ReadError::TooLarge(TooLarge { limit: 8 }).to_string());
        let res = call(None, 8).await;
        assert!(body::read_whole(res.into_body()).await.unwrap().is_empty());
    }
}
