//! Authentication (`[auth]`): who a client is. One [`Authenticator`] is
//! built from the configuration by the composition root and shared by the
//! WebSocket sessions (at `connection_init`) and, with
//! `auth.proxy = "require"`, the proxy path's
//! [`crate::layers::require_auth`] layer, so both apply the same check.
//!
//! - `none`: everyone, with empty claims ([`AllowAll`]).
//! - `jwt`: a bearer token verified by [`jwt::JwtVerifier`] (HS* secrets or
//!   JWKS keys from [`jwks`]).
//! - `upstream`: `auth.upstream.query` answered by the upstream with the
//!   client's credentials ([`upstream::UpstreamAuth`]).

pub mod credentials;
pub mod jwks;
pub mod jwt;
pub mod upstream;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, AuthMode};
use crate::proxy::Upstream;
use crate::shutdown::Shutdown;
use credentials::Credentials;

/// Who a client is once admitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// What `allow` and `filter` see as `claims`; `{}` when anonymous.
    pub claims: Value,
    /// When the credential stops being valid (a JWT's `exp` plus the
    /// leeway): a socket is closed `4403` then.
    pub expires: Option<SystemTime>,
}

/// The claims of a request some layer authenticated (`auth.proxy =
/// "require"`), in its extensions for the stages after it (triggers).
#[derive(Debug, Clone)]
pub struct ClientClaims(pub std::sync::Arc<Value>);

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            claims: Value::Object(Map::new()),
            expires: None,
        }
    }
}

/// Why a client was not admitted. Mapped to close codes and statuses in
/// [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials are missing or wrong (close `4403`, HTTP `401`).
    #[error("{0}")]
    Refused(Refusal),
    /// The check could not be made (JWKS or upstream unreachable): the
    /// client should retry (close `1013`, HTTP `503`).
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

/// What was wrong with the credentials; the text travels in close reasons
/// and error messages, so it never echoes the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no credentials")]
    Missing,
    #[error("invalid token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// A time claim (`exp`, `nbf`, `iat`) that is not a number of seconds
    /// between 1970 and 9999.
    #[error("invalid claim {0}: expected seconds since 1970 as a number")]
    InvalidClaim(&'static str),
    #[error("refused by the upstream")]
    Upstream,
}

/// Decides who may connect, from the request's headers (for a socket: the
/// upgrade headers with the credentials of `connection_init.payload`
/// merged in).
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, headers: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>>;
}

/// `auth.mode = "none"`: everyone, with empty claims.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>> {
        Box::pin(std::future::ready(Ok(Identity::anonymous())))
    }
}

/// Why the authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthBuildError {
    #[error(transparent)]
    Jwks(#[from] jwks::JwksError),
    #[error("cannot build the JWKS HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("auth.jwt: no source of keys configured")]
    NoKeys,
}

/// The configured authenticator and, for `jwks_url`, the key refresher the
/// composition root runs in the background.
pub struct Auth {
    pub authenticator: Arc<dyn Authenticator>,
    pub jwks: Option<Arc<jwks::Jwks>>,
}

impl Auth {
    pub fn from_config(config: &AuthConfig, upstream: &Upstream) -> Result<Self, AuthBuildError> {
        let cookie = config.cookie.clone();
        Ok(match config.mode {
            AuthMode::None => Self {
                authenticator: Arc::new(AllowAll),
                jwks: None,
            },
            AuthMode::Jwt => {
                let verifier = jwt::JwtVerifier::from_config(&config.jwt, cookie)?;
                let jwks = verifier.jwks().cloned();
                Self {
                    authenticator: Arc::new(verifier),
                    jwks,
                }
            }
            AuthMode::Upstream => Self {
                authenticator: Arc::new(upstream::UpstreamAuth::new(
                    &config.upstream,
                    cookie,
                    upstream.clone(),
                )),
                jwks: None,
            },
        })
    }
}

/// The authenticator in force, which a configuration reload replaces: the
/// connections that follow are checked by the new one, and those already
/// admitted keep the identity they were admitted with (a JWT still ends
/// its connection at `exp`).
pub struct LiveAuth {
    current: ArcSwap<Arc<dyn Authenticator>>,
    /// The JWKS of the current authenticator, when it fetches from a URL:
    /// its refresh task stops when it is replaced.
    jwks: parking_lot::Mutex<Option<Arc<jwks::Jwks>>>,
}

impl LiveAuth {
    pub fn new(auth: Auth) -> Self {
        Self {
            current: ArcSwap::from_pointee(auth.authenticator),
            jwks: parking_lot::Mutex::new(auth.jwks),
        }
    }

    /// Keeps a JWKS URL's keys fresh under `shutdown`.
    pub fn keep_fresh(&self, shutdown: &Shutdown) {
        if let Some(jwks) = self.jwks.lock().clone().filter(|j| j.is_remote()) {
            shutdown.spawn(jwks.keep_fresh(shutdown.clone()));
        }
    }

    /// Checks new clients with `auth` from now on; a JWKS URL's refresh
    /// moves to the new key source.
    pub fn replace(&self, auth: Auth, shutdown: &Shutdown) {
        self.current.store(Arc::new(auth.authenticator));
        let old = std::mem::replace(&mut *self.jwks.lock(), auth.jwks);
        if let Some(old) = old {
            old.retire();
        }
        self.keep_fresh(shutdown);
    }
}

impl Authenticator for LiveAuth {
    fn authenticate(&self, headers: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>> {
        self.current.load().authenticate(headers)
    }
}

/// The bearer token of a request, or [`Refusal::Missing`].
fn token(headers: &HeaderMap, cookie: Option<&str>) -> Result<String, AuthError> {
    Credentials::from_headers(headers, cookie)
        .token
        .ok_or(AuthError::Refused(Refusal::Missing))
}
