//! `auth.mode = "upstream"`: the upstream decides. subcar POSTs
//! `auth.upstream.query` with the client's `Authorization` and `Cookie`
//! headers; an answer with `data` and no `errors` admits the client and its
//! `data` becomes `claims`. Admissions are cached per credential for
//! `auth.upstream.cache_ttl` in a bounded map, so a reconnect storm costs
//! the upstream one query per distinct credential, not one per socket.
//! Refusals are not cached: a client that just logged in is not kept out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::credentials::Credentials;
use super::{AuthError, Authenticator, Identity, Refusal};
use crate::config::UpstreamAuthConfig;
use crate::proxy::Upstream;

/// Credentials whose claims are remembered at most.
pub const CACHE_CAPACITY: usize = 10_000;

/// Authenticates by asking the upstream.
pub struct UpstreamAuth {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    body: Bytes,
    cookie: Option<String>,
    ttl: Duration,
    /// A std mutex: nothing async happens while it is held.
    cache: Mutex<HashMap<[u8; 32], (Instant, Value)>>,
}

impl UpstreamAuth {
    pub fn new(config: &UpstreamAuthConfig, cookie: Option<String>, upstream: Upstream) -> Self {
        let query = config.query.as_deref().unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                upstream,
                body: Bytes::from(json!({ "query": query }).to_string()),
                cookie,
                ttl: config.cache_ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Authenticator for UpstreamAuth {
    fn authenticate(&self, headers: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>> {
        let inner = self.inner.clone();
        let credentials = Credentials::from_headers(headers, inner.cookie.as_deref());
        // The caller passes headers built by `proxy::on_behalf_of`, so the
        // forwarding headers are subcar's; `Origin` lets the upstream's CSRF
        // checks see what the browser sent.
        let mut context = HeaderMap::new();
        for name in crate::proxy::FORWARDING.iter().chain([&header::ORIGIN]) {
            if let Some(v) = headers.get(name) {
                context.insert(name.clone(), v.clone());
            }
        }
        Box::pin(async move { inner.authenticate(credentials, context).await })
    }
}

impl Inner {
    async fn authenticate(
        &self,
        credentials: Credentials,
        mut headers: HeaderMap,
    ) -> Result<Identity, AuthError> {
        let key = cache_key(&credentials);
        if let Some(claims) = self.cached(&key) {
            return Ok(identity(claims));
        }
        if let Some(v) = credentials.authorization {
            headers.insert(header::AUTHORIZATION, v);
        }
        if let Some(v) = credentials.cookie {
            headers.insert(header::COOKIE, v);
        }
        let (status, body) = self
            .upstream
            .post_graphql(self.body.clone(), &headers)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if status.is_server_error() {
            return Err(AuthError::Unavailable(format!(
                "the upstream answered {status}"
            )));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            if status.is_success() {
                AuthError::Unavailable("the upstream sent an invalid response".into())
            } else {
                AuthError::Refused(Refusal::Upstream)
            }
        })?;
        let has_errors = answer
            .get("errors")
            .is_some_and(|e| !matches!(e, Value::Array(a) if a.is_empty()) && !e.is_null());
        let claims = match answer.get("data") {
            Some(data @ Value::Object(_)) if status.is_success() && !has_errors => data.clone(),
            _ => return Err(AuthError::Refused(Refusal::Upstream)),
        };
        self.remember(key, claims.clone());
        Ok(identity(claims))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Value> {
        let mut cache = self.cache.lock();
        match cache.get(key) {
            Some((at, claims)) if at.elapsed() < self.ttl => Some(claims.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], claims: Value) {
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&key) {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            // Still full of live entries: forget them all rather than scan
            // for the oldest on every insert; they are re-fetched on demand.
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), claims));
    }
}

fn identity(claims: Value) -> Identity {
    Identity {
        claims,
        expires: None,
    }
}

/// A digest, so the cache holds no credential in the clear and keys have
/// a fixed size whatever the client sends.
fn cache_key(c: &Credentials) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in [&c.authorization, &c.cookie] {
        match v {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{UpstreamConfig, UpstreamUrl};

    #[tokio::test]
    async fn the_cache_stays_bounded_and_forgets_after_the_ttl() {
        let upstream = Upstream::new(&UpstreamConfig {
            url: UpstreamUrl("http://127.0.0.1:9/graphql".parse().unwrap()),
            timeout: Duration::from_secs(1),
            batching: false,
        })
        .unwrap();
        let config = UpstreamAuthConfig {
            query: Some("{ me { id } }".into()),
            cache_ttl: Duration::from_secs(60),
        };
        let auth = UpstreamAuth::new(&config, None, upstream);
        let inner = &auth.inner;
        for i in 0..(CACHE_CAPACITY * 3 / 2) as u64 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            inner.remember(key, json!({"i": i}));
            assert!(inner.cache.lock().len() <= CACHE_CAPACITY);
        }
        let last = ((CACHE_CAPACITY * 3 / 2) as u64 - 1).to_be_bytes();
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&last);
        assert!(inner.cached(&key).is_some());
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(inner.cached(&key).is_none());
    }
}
