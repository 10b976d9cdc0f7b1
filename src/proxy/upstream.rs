//! The pooled HTTP client towards the upstream GraphQL server (HTTP/1.1 and
//! HTTP/2, `https` through rustls).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::ProxyError;
use crate::config::UpstreamConfig;
use crate::http::body::{self, Body};
use crate::subscriptions::enrich::{FetchError, UpstreamFetch};

/// Idle pooled connections are closed after this; the upstream's own
/// keep-alive timeout is usually longer, so subcar closes first and never
/// sends on a connection the upstream is about to drop.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `User-Agent` of subcar's own reachability probes.
pub const PROBE_USER_AGENT: &str = concat!("subcar/", env!("CARGO_PKG_VERSION"), " (probe)");

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("cannot load TLS root certificates for the upstream client: {0}")]
    Roots(#[source] std::io::Error),
}

/// A cheap-to-clone handle on the upstream; clones share the connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    url: Uri,
    timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamBuildError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) if config.url.0.scheme_str() == Some("https") => {
                return Err(UpstreamBuildError::Roots(e));
            }
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Ok(Self {
            client,
            url: config.url.0.clone(),
            timeout: config.timeout,
        })
    }

    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The upstream URL with the client's query string in place of its own.
    pub fn url_with_query(&self, query: Option<&str>) -> Uri {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return self.url.clone();
        };
        let mut parts = self.url.clone().into_parts();
        let path = self.url.path();
        parts.path_and_query = format!("{path}?{query}").parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.url.clone())
    }

    /// Sends a request as is (the caller rewrote URI and headers) and
    /// returns the streaming response. Connection errors are classified;
    /// the caller applies `upstream.timeout`.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                ProxyError::Unreachable(Box::new(e))
            } else {
                ProxyError::BadResponse(Box::new(e))
            }
        })
    }

    /// POSTs a GraphQL JSON body with `headers` and returns the whole
    /// response, within `upstream.timeout`. For operations subcar runs on a
    /// client's behalf (queries over a socket, introspection, probes).
    pub async fn post_graphql(
        &self,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Result<(StatusCode, Bytes), ProxyError> {
        let mut request = Request::new(body::full(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        let h = request.headers_mut();
        h.extend(headers.clone());
        super::headers::remove_hop_by_hop(h);
        h.remove(header::HOST);
        h.remove(header::CONTENT_LENGTH);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let exchange = async {
            let response = self.send(request).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ProxyError::BadResponse(Box::new(e)))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ProxyError::Timeout)?
    }

    /// Whether the upstream answers HTTP at all (any status counts). The
    /// request names itself in `User-Agent` so upstream logs can tell probes
    /// from client traffic.
    pub async fn probe(&self) -> Result<(), ProxyError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(PROBE_USER_AGENT),
        );
        let body = Bytes::from_static(br#"{"query":"{__typename}"}"#);
        self.post_graphql(body, &headers).await.map(|_| ())
    }
}

/// Enrichment fetches go through the same pooled client.
impl UpstreamFetch for Upstream {
    fn post(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> futures_util::future::BoxFuture<'static, Result<(StatusCode, Bytes), FetchError>> {
        let upstream = self.clone();
        Box::pin(async move {
            upstream
                .post_graphql(body, &headers)
                .await
                .map_err(FetchError::new)
        })
    }
}
