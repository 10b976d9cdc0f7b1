//! JWT verification keys from a JWK Set: a file read once at start-up
//! (`auth.jwt.jwks_path`) or a URL (`auth.jwt.jwks_url`) fetched with
//! reqwest over rustls, kept fresh on a schedule and refreshed when a token
//! names a `kid` the cache does not know, at most once per
//! [`UNKNOWN_KID_REFRESH`] so that tokens with random `kid`s cannot turn
//! subcar into a load generator against the identity provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use tokio::time::Instant;

use super::{AuthError, Refusal};
use crate::shutdown::Shutdown;

/// Period of the scheduled refresh of a `jwks_url`.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// After a failed scheduled fetch, the next try comes sooner.
const RETRY_PERIOD: Duration = Duration::from_secs(10);
/// Minimum time between two fetches caused by unknown `kid`s.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// A JWK Set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch JWKS from {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("JWKS from {from} answered {status}")]
    Status {
        from: String,
        status: reqwest::StatusCode,
    },
    #[error("JWKS from {from} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { from: String },
    #[error("JWKS from {from} is not a JWK Set: {source}")]
    Parse {
        from: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One usable key of a set.
struct Key {
    kid: Option<String>,
    /// Algorithms the key can verify, from its type and curve.
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

/// The keys currently known.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWK Set; keys subcar cannot use (symmetric, unknown curve,
    /// encryption keys) are skipped.
    pub fn parse(json: &[u8], from: &str) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|source| JwksError::Parse {
            from: from.to_owned(),
            source,
        })?;
        let keys = set
            .keys
            .iter()
            .filter(|jwk| {
                !matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            })
            .filter_map(|jwk| {
                let algorithms = algorithms(jwk)?;
                match DecodingKey::from_jwk(jwk) {
                    Ok(key) => Some(Key {
                        kid: jwk.common.key_id.clone(),
                        algorithms,
                        key,
                    }),
                    Err(e) => {
                        tracing::warn!(kid = ?jwk.common.key_id, error = %e, "skipping an unusable JWKS key");
                        None
                    }
                }
            })
            .collect();
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token with `kid` and `alg` is verified with: by `kid` when
    /// the token names one, else the only key that fits the algorithm.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let mut fitting = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
        match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let first = fitting.next()?;
                fitting.next().is_none().then_some(first)
            }
        }
        .map(|k| &k.key)
    }
}

fn algorithms(jwk: &Jwk) -> Option<&'static [Algorithm]> {
    use Algorithm::*;
    Some(match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[ES256],
            EllipticCurve::P384 => &[ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[EdDSA],
        _ => return None,
    })
}

/// The JWKS keys and, for a URL, how to refresh them.
pub struct Jwks {
    keys: RwLock<Arc<KeySet>>,
    remote: Option<Remote>,
    /// Cancelled when a reload replaced this key source: its refresh stops.
    retired: tokio_util::sync::CancellationToken,
}

struct Remote {
    url: String,
    /// `url` without its secrets, for errors and logs.
    shown: String,
    client: reqwest::Client,
    /// When the last refresh for an unknown `kid` started; a tokio mutex so
    /// that concurrent unknown-`kid` tokens wait for one fetch.
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// Keys read from a file now.
    pub fn from_file(path: &Path) -> Result<Self, JwksError> {
        let bytes = std::fs::read(path).map_err(|source| JwksError::Read {
            path: path.to_owned(),
            source,
        })?;
        let keys = KeySet::parse(&bytes, &path.display().to_string())?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            remote: None,
            retired: Default::default(),
        })
    }

    /// Keys fetched from `url`, empty until [`Self::keep_fresh`] or a token
    /// first asks for them.
    pub fn from_url(url: String, client: reqwest::Client) -> Self {
        Self {
            keys: RwLock::new(Arc::new(KeySet::default())),
            remote: Some(Remote {
                shown: crate::config::redact_url(&url),
                url,
                client,
                last_on_demand: tokio::sync::Mutex::new(None),
            }),
            retired: Default::default(),
        }
    }

    /// Stops [`Self::keep_fresh`]: a reload replaced this key source.
    pub fn retire(&self) {
        self.retired.cancel();
    }

    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The keys known now.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// Runs `verify` with the key for `kid`/`alg`, refreshing the set once
    /// (rate-limited) when no key fits.
    pub async fn with_key<T>(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        verify: impl FnOnce(&DecodingKey) -> T,
    ) -> Result<T, AuthError> {
        let keys = self.current();
        if let Some(key) = keys.find(kid, alg) {
            return Ok(verify(key));
        }
        let Some(remote) = &self.remote else {
            return Err(AuthError::Refused(Refusal::UnknownKey));
        };
        let mut last = remote.last_on_demand.lock().await;
        // Another token may have refreshed the set while this one waited.
        let keys = self.current();
        if let Some(key) = keys.find(kid, alg) {
            return Ok(verify(key));
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH) {
            return Err(if keys.is_empty() {
                AuthError::Unavailable("no signing keys loaded yet".into())
            } else {
                AuthError::Refused(Refusal::UnknownKey)
            });
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refresh for an unknown key id failed");
            if self.current().is_empty() {
                return Err(AuthError::Unavailable("signing keys unavailable".into()));
            }
        }
        drop(last);
        let keys = self.current();
        keys.find(kid, alg)
            .map(verify)
            .ok_or(AuthError::Refused(Refusal::UnknownKey))
    }

    /// Fetches the set from the URL and replaces the cached one.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let (url, shown) = (&remote.url, &remote.shown);
        let fetch = |source: reqwest::Error| JwksError::Fetch {
            url: shown.clone(),
            // reqwest's message repeats the URL, password included.
            source: source.without_url(),
        };
        let mut response = remote.client.get(url).send().await.map_err(fetch)?;
        if !response.status().is_success() {
            return Err(JwksError::Status {
                from: shown.clone(),
                status: response.status(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge {
                    from: shown.clone(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let keys = KeySet::parse(&body, shown)?;
        tracing::debug!(keys = keys.len(), url = %shown, "JWKS refreshed");
        *self.keys.write() = Arc::new(keys);
        Ok(())
    }

    /// Fetches now and then every [`REFRESH_PERIOD`] until shutdown or
    /// [`Self::retire`]; one task per key source, tracked by `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: Shutdown) {
        if self.remote.is_none() {
            return;
        }
        loop {
            let wait = match self.refresh().await {
                Ok(()) => REFRESH_PERIOD,
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                    RETRY_PERIOD
                }
            };
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = self.retired.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
