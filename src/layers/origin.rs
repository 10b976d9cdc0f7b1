//! Browser origins (SPEC "Browser origins"): a request that carries `Origin`
//! is admitted only when that origin is listed in `server.cors_origins`, or,
//! with the list empty, when it is the request's own origin (scheme and
//! `Host`; `X-Forwarded-Proto/-Host` count only from a trusted proxy).
//! Otherwise `403` coded `ORIGIN_NOT_ALLOWED`. `["*"]` admits every origin;
//! requests without `Origin` (non-browser clients) pass. This is what keeps
//! a page of another site from opening a socket with a user's cookies.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode, header};
use tower::{Layer, Service};

pub use super::ResponseFuture;
use crate::config::IpNet;
use crate::http::body::Body;
use crate::metrics::{Metrics, Refusal};
use crate::proxy::{ClientConnection, is_trusted};

/// Checks `Origin` against `server.cors_origins`. Cheap to clone.
#[derive(Clone)]
pub struct OriginCheckLayer {
    policy: Arc<Policy>,
}

struct Policy {
    /// Normalised origins; empty means "same origin only".
    allowed: Vec<String>,
    any: bool,
    trusted_proxies: Vec<IpNet>,
    metrics: Arc<Metrics>,
}

impl OriginCheckLayer {
    pub fn new(cors_origins: &[String], trusted_proxies: &[IpNet], metrics: Arc<Metrics>) -> Self {
        Self {
            policy: Arc::new(Policy {
                any: cors_origins.iter().any(|o| o == "*"),
                allowed: cors_origins.iter().filter_map(|o| normalise(o)).collect(),
                trusted_proxies: trusted_proxies.to_vec(),
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for OriginCheckLayer {
    type Service = OriginCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginCheck {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The middleware of [`OriginCheckLayer`].
#[derive(Clone)]
pub struct OriginCheck<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, B> Service<Request<B>> for OriginCheck<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.policy.refusal(&request) {
            None => ResponseFuture::Inner {
                future: self.inner.call(request),
            },
            Some(origin) => {
                self.policy.metrics.refused(Refusal::origin);
                ResponseFuture::Refused {
                    response: Some(crate::error::graphql_error(
                        StatusCode::FORBIDDEN,
                        "ORIGIN_NOT_ALLOWED",
                        &format!(
                            "origin {origin:?} is not allowed: it must be this server's own origin or one of server.cors_origins"
                        ),
                    )),
                }
            }
        }
    }
}

impl Policy {
    /// The refused origin, or `None` when the request may pass.
    fn refusal<B>(&self, request: &Request<B>) -> Option<String> {
        let origin = request.headers().get(header::ORIGIN)?;
        let text = String::from_utf8_lossy(origin.as_bytes());
        if self.any {
            return None;
        }
        let admitted = match normalise(&text) {
            None => false,
            Some(origin) if !self.allowed.is_empty() => self.allowed.contains(&origin),
            Some(origin) => own_origin(request, &self.trusted_proxies).as_ref() == Some(&origin),
        };
        (!admitted).then(|| text.chars().take(200).collect())
    }
}

/// The request's own origin: scheme (https with TLS) and host, from a
/// trusted proxy's `X-Forwarded-Proto/-Host` when it sent them.
fn own_origin<B>(request: &Request<B>, trusted: &[IpNet]) -> Option<String> {
    let client = request.extensions().get::<ClientConnection>();
    let headers = request.headers();
    let from_trusted = client.is_some_and(|c| is_trusted(c.remote.ip(), trusted));
    let forwarded = |name: &str| from_trusted.then(|| first_value(headers, name)).flatten();
    let scheme = forwarded("x-forwarded-proto").unwrap_or_else(|| {
        if client.is_some_and(|c| c.tls) {
            "https".into()
        } else {
            "http".into()
        }
    });
    let host = forwarded("x-forwarded-host")
        .or_else(|| first_value(headers, header::HOST.as_str()))
        .or_else(|| request.uri().authority().map(|a| a.to_string()))?;
    normalise(&format!("{scheme}://{host}"))
}

/// The first comma-separated entry of header `name` (a proxy chain's first).
fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// `scheme://host[:port]` in lower case without the scheme's default port
/// or a trailing slash; `None` for anything that is not an http(s) origin
/// (`null`, paths, user info).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let host = rest.strip_suffix(default_port).unwrap_or(rest);
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str, peer: &str, tls: bool) -> Request<()> {
        let mut r = Request::get("/graphql").header("host", host);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let mut r = r.body(()).unwrap();
        r.extensions_mut().insert(ClientConnection {
            remote: format!("{peer}:5000").parse().unwrap(),
            tls,
        });
        r
    }

    fn policy(origins: &[&str], trusted: &[&str]) -> Policy {
        let layer = OriginCheckLayer::new(
            &origins.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &trusted
                .iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<_>>(),
            Arc::new(Metrics::new()),
        );
        Arc::try_unwrap(layer.policy).ok().unwrap()
    }

    #[test]
    fn normalised_origins() {
        assert_eq!(
            normalise("HTTPS://App.Example.com:443/").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(normalise("http://a:8080").unwrap(), "http://a:8080");
        assert_eq!(normalise("null"), None);
        assert_eq!(normalise("file://x"), None);
        assert_eq!(normalise("http://u@evil"), None);
    }

    #[test]
    fn same_origin_by_scheme_and_host() {
        let p = policy(&[], &[]);
        let ok = |o, host, tls| {
            p.refusal(&request(Some(o), host, "192.0.2.1", tls))
                .is_none()
        };
        assert!(ok("http://api.example.com", "api.example.com", false));
        assert!(ok("http://api.example.com:80", "api.example.com", false));
        assert!(ok("https://api.example.com", "api.example.com", true));
        assert!(!ok("http://api.example.com", "api.example.com", true));
        assert!(!ok("https://evil.example", "api.example.com", true));
        assert!(!ok("null", "api.example.com", false));
        assert!(p.refusal(&request(None, "x", "192.0.2.1", false)).is_none());
    }

    #[test]
    fn forwarded_host_and_proto_count_only_from_trusted_proxies() {
        let p = policy(&[], &["10.0.0.0/8"]);
        let mut r = request(
            Some("https://app.example.com"),
            "subcar:4000",
            "10.1.1.1",
            false,
        );
        r.headers_mut()
            .insert("x-forwarded-proto", "https".parse().unwrap());
        r.headers_mut()
            .insert("x-forwarded-host", "app.example.com".parse().unwrap());
        assert!(p.refusal(&r).is_none());
        r.extensions_mut().insert(ClientConnection {
            remote: "192.0.2.1:5000".parse().unwrap(),
            tls: false,
        });
        assert!(p.refusal(&r).is_some());
    }

    #[test]
    fn listed_and_any() {
        let p = policy(&["https://app.example.com"], &[]);
        let r = |o| request(Some(o), "api.example.com", "192.0.2.1", false);
        assert!(p.refusal(&r("https://app.example.com")).is_none());
        // With a list, the own origin is not implied.
        assert!(p.refusal(&r("http://api.example.com")).is_some());
        let any = policy(&["*"], &[]);
        assert!(any.refusal(&r("https://evil.example")).is_none());
        assert!(any.refusal(&r("null")).is_none());
    }
}
