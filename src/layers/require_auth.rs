//! `auth.proxy = "require"`: queries and mutations must pass the same
//! check as sockets before they reach the upstream; `401` with a
//! GraphQL-shaped `UNAUTHENTICATED` body otherwise. The request itself,
//! credentials included, goes on untouched: the upstream stays the
//! authority on what the client may read or change.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::auth::Authenticator;
use crate::config::IpNet;
use crate::http::body::Body;
use crate::metrics::{Metrics, Refusal};
use crate::proxy::{ClientConnection, on_behalf_of};

/// Checks credentials with `authenticator`; `None` passes everything.
#[derive(Clone)]
pub struct RequireAuthLayer {
    authenticator: Option<Arc<dyn Authenticator>>,
    metrics: Arc<Metrics>,
    /// For the check's own upstream call (upstream-mode auth): its
    /// forwarding headers are subcar's, as on every client-behalf call.
    trusted_proxies: Arc<[IpNet]>,
}

impl RequireAuthLayer {
    pub fn new(
        authenticator: Option<Arc<dyn Authenticator>>,
        metrics: Arc<Metrics>,
        trusted_proxies: &[IpNet],
    ) -> Self {
        Self {
            authenticator,
            metrics,
            trusted_proxies: trusted_proxies.into(),
        }
    }
}

impl<S> Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The middleware of [`RequireAuthLayer`].
#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    layer: RequireAuthLayer,
}

impl<S, B> Service<Request<B>> for RequireAuth<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(authenticator) = &self.layer.authenticator else {
            let future = self.inner.call(request);
            return ResponseFuture(Box::pin(future));
        };
        let check = match request.extensions().get::<ClientConnection>() {
            Some(client) => authenticator.authenticate(&on_behalf_of(
                request.headers(),
                *client,
                &self.layer.trusted_proxies,
            )),
            None => authenticator.authenticate(request.headers()),
        };
        // The ready service goes into the future; its clone stays for the
        // next call (tower's `mem::replace` idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.layer.metrics.clone();
        ResponseFuture(Box::pin(async move {
            match check.await {
                Ok(identity) => {
                    // The claims go on with the request (triggers read them).
                    let claims = crate::auth::ClientClaims(Arc::new(identity.claims));
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(e) => {
                    metrics.refused(Refusal::auth);
                    Ok(crate::error::rescue_auth_http(&e))
                }
            }
        }))
    }
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The response of [`RequireAuth`].
pub struct ResponseFuture<E>(BoxFuture<E>);

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}
