//! `auth.mode = "jwt"`: a bearer token verified with an HS* secret or JWKS
//! keys, against the configured issuer, audience, leeway and algorithms.
//! A token must carry `exp`; its claims become `claims`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::Jwks;
use super::{AuthBuildError, AuthError, Authenticator, Identity, Refusal};
use crate::config::{JwtAlgorithm, JwtConfig};

/// Verifies JWTs; built once, shared by every connection.
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    cookie: Option<String>,
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Arc<Jwks>),
}

impl JwtVerifier {
    pub fn from_config(config: &JwtConfig, cookie: Option<String>) -> Result<Self, AuthBuildError> {
        let keys = if let Some(secret) = &config.secret {
            Keys::Secret(DecodingKey::from_secret(secret.0.as_bytes()))
        } else if let Some(path) = &config.jwks_path {
            Keys::Jwks(Arc::new(Jwks::from_file(path)?))
        } else if let Some(url) = &config.jwks_url {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("subcar/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(AuthBuildError::Client)?;
            Keys::Jwks(Arc::new(Jwks::from_url(url.expose(), client)))
        } else {
            // Config validation guarantees one source of keys.
            return Err(AuthBuildError::NoKeys);
        };
        let algorithms = if config.algorithms.is_empty() {
            match keys {
                Keys::Secret(_) => vec![Algorithm::HS256],
                Keys::Jwks(_) => vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            }
        } else {
            config.algorithms.iter().map(|a| algorithm(*a)).collect()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                algorithms,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
                cookie,
            }),
        })
    }

    /// The JWKS source, when keys come from one (the composition root keeps
    /// a URL fresh).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.inner.keys {
            Keys::Jwks(j) => Some(j),
            Keys::Secret(_) => None,
        }
    }

    /// Verifies one token.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.inner.verify(token).await
    }
}

impl Authenticator for JwtVerifier {
    fn authenticate(&self, headers: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>> {
        let inner = self.inner.clone();
        let token = super::token(headers, inner.cookie.as_deref());
        Box::pin(async move { inner.verify(&token?).await })
    }
}

impl Inner {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(refusal)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Refused(Refusal::Algorithm));
        }
        // One algorithm per validation: jsonwebtoken checks each listed
        // one against the key's family.
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
        }
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Value>(token, key, &validation).map(|data| data.claims)
        };
        let claims = match &self.keys {
            Keys::Secret(key) => decode(key),
            Keys::Jwks(jwks) => {
                jwks.with_key(header.kid.as_deref(), header.alg, decode)
                    .await?
            }
        }
        .map_err(refusal)?;
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| UNIX_EPOCH + Duration::from_secs(exp) + self.leeway);
        if !claims.is_object() {
            return Err(AuthError::Refused(Refusal::Malformed));
        }
        Ok(Identity { claims, expires })
    }
}

fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Refused(match e.into_kind() {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::MissingRequiredClaim(c) => Refusal::MissingClaim(c),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::Algorithm,
        _ => Refusal::Malformed,
    })
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    use JwtAlgorithm as J;
    match a {
        J::HS256 => Algorithm::HS256,
        J::HS384 => Algorithm::HS384,
        J::HS512 => Algorithm::HS512,
        J::RS256 => Algorithm::RS256,
        J::RS384 => Algorithm::RS384,
        J::RS512 => Algorithm::RS512,
        J::PS256 => Algorithm::PS256,
        J::PS384 => Algorithm::PS384,
        J::PS512 => Algorithm::PS512,
        J::ES256 => Algorithm::ES256,
        J::ES384 => Algorithm::ES384,
        J::EdDSA => Algorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn verifier(extra: impl FnOnce(&mut JwtConfig)) -> JwtVerifier {
        let mut config = JwtConfig {
            secret: Some(Secret("s3cret".into())),
            leeway: Duration::ZERO,
            ..JwtConfig::default()
        };
        extra(&mut config);
        JwtVerifier::from_config(&config, None).unwrap()
    }

    fn hs(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn refused(r: Result<Identity, AuthError>) -> Refusal {
        match r {
            Err(AuthError::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hs256_claims_expiry_and_every_refusal() {
        let v = verifier(|c| {
            c.issuer = Some("idp".into());
            c.audience = vec!["subcar".into()];
        });
        let exp = unix_now() + 60;
        let good = json!({"sub": "u1", "iss": "idp", "aud": "subcar", "exp": exp});
        let id = v.verify(&hs(good.clone(), "s3cret")).await.unwrap();
        assert_eq!(id.claims["sub"], "u1");
        assert_eq!(id.expires, Some(UNIX_EPOCH + Duration::from_secs(exp)));

        let with = |k: &str, val: Value| {
            let mut c = good.clone();
            c[k] = val;
            c
        };
        assert_eq!(
            refused(v.verify(&hs(good.clone(), "other")).await),
            Refusal::Signature
        );
        assert_eq!(
            refused(
                v.verify(&hs(with("exp", json!(unix_now() - 5)), "s3cret"))
                    .await
            ),
            Refusal::Expired
        );
        assert_eq!(
            refused(v.verify(&hs(with("iss", json!("x")), "s3cret")).await),
            Refusal::Issuer
        );
        assert_eq!(
            refused(v.verify(&hs(with("aud", json!("x")), "s3cret")).await),
            Refusal::Audience
        );
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            refused(v.verify(&hs(no_exp, "s3cret")).await),
            Refusal::MissingClaim("exp".into())
        );
        assert_eq!(refused(v.verify("not.a.jwt").await), Refusal::Malformed);
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &good,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(refused(v.verify(&hs512).await), Refusal::Algorithm);
    }

    #[tokio::test]
    async fn a_token_not_valid_yet_is_refused() {
        let v = verifier(|_| {});
        let claims = json!({"exp": unix_now() + 600, "nbf": unix_now() + 300});
        assert_eq!(
            refused(v.verify(&hs(claims, "s3cret")).await),
            Refusal::NotYetValid
        );
    }

    #[tokio::test]
    async fn leeway_admits_a_just_expired_token_and_extends_expiry() {
        let v = verifier(|c| c.leeway = Duration::from_secs(30));
        let exp = unix_now() - 5;
        let id = v.verify(&hs(json!({"exp": exp}), "s3cret")).await.unwrap();
        assert_eq!(id.expires, Some(UNIX_EPOCH + Duration::from_secs(exp + 30)));
    }
}
