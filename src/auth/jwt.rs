//! `auth.mode = "jwt"`: a bearer token verified with an HS* secret or JWKS
//! keys, against the configured issuer, audience, leeway and algorithms.
//! A token must carry `exp`; its claims become `claims`.
//!
//! The time claims (`exp`, `nbf`, `iat`) are checked here rather than by
//! jsonwebtoken, which accepts a fractional `exp` by rounding it and any
//! `u64` as a date: they must be numbers of seconds between 1970 and 9999
//! ([`MAX_NUMERIC_DATE`]); a fraction is rounded to the safe side (`exp`
//! down, `nbf` up), and every sum with the leeway saturates.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

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
        // Time claims are ours to check (see the module docs).
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
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
        let Value::Object(map) = &claims else {
            return Err(AuthError::Refused(Refusal::Malformed));
        };
        let expires =
            valid_until(map, SystemTime::now(), self.leeway).map_err(AuthError::Refused)?;
        Ok(Identity {
            claims,
            expires: Some(expires),
        })
    }
}

/// The latest date a time claim may name, 9999-12-31T23:59:59Z: later ones
/// are refused rather than risk an overflowing `SystemTime` or timer.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate claim (RFC 7519, section 2) in whole seconds, `None` when
/// absent; anything but a number in `0..=MAX_NUMERIC_DATE` is refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
    round: Round,
) -> Result<Option<u64>, Refusal> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let secs = match (value.as_u64(), value.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&f) => {
            // In range, hence exact in a u64.
            (match round {
                Round::Down => f.floor(),
                Round::Up => f.ceil(),
            }) as u64
        }
        _ => return Err(Refusal::InvalidClaim(name)),
    };
    if secs > MAX_NUMERIC_DATE {
        return Err(Refusal::InvalidClaim(name));
    }
    Ok(Some(secs))
}

/// When a token with verified `claims` stops being valid (`exp` plus the
/// leeway), or why it is refused at `now`.
fn valid_until(
    claims: &Map<String, Value>,
    now: SystemTime,
    leeway: Duration,
) -> Result<SystemTime, Refusal> {
    let exp = numeric_date(claims, "exp", Round::Down)?
        .ok_or_else(|| Refusal::MissingClaim("exp".into()))?;
    let nbf = numeric_date(claims, "nbf", Round::Up)?;
    numeric_date(claims, "iat", Round::Down)?;
    let at = |secs: u64, plus: Duration| {
        // Both terms are bounded (a date before 10000, a configured
        // leeway), yet the sum is checked: a SystemTime add panics.
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .and_then(|t| t.checked_add(plus))
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(MAX_NUMERIC_DATE))
    };
    let until = at(exp, leeway);
    if until <= now {
        return Err(Refusal::Expired);
    }
    if let Some(nbf) = nbf
        && now
            .checked_add(leeway)
            .is_some_and(|n| at(nbf, Duration::ZERO) > n)
    {
        return Err(Refusal::NotYetValid);
    }
    Ok(until)
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

    #[test]
    fn time_claims_must_be_dates_and_fractions_round_to_the_safe_side() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let check = |claims: Value| {
            let Value::Object(m) = claims else {
                unreachable!()
            };
            valid_until(&m, now, Duration::ZERO)
        };
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        // A fractional exp counts as its floor: never valid past it.
        assert_eq!(check(json!({"exp": 1_000_003.5})), Ok(at(1_000_003)));
        assert_eq!(check(json!({"exp": 1_000_000.9})), Err(Refusal::Expired));
        assert_eq!(
            check(json!({"exp": MAX_NUMERIC_DATE})),
            Ok(at(MAX_NUMERIC_DATE))
        );
        for bad in [
            json!(MAX_NUMERIC_DATE + 1),
            json!(1u64 << 63),
            json!(u64::MAX),
            json!(1e300),
            json!(-1),
            json!(-0.5),
            json!("1000060"),
            json!(null),
            json!(true),
            json!([1_000_060]),
        ] {
            assert_eq!(
                check(json!({"exp": bad.clone()})),
                Err(Refusal::InvalidClaim("exp")),
                "exp {bad}"
            );
            assert_eq!(
                check(json!({"exp": 1_000_060, "nbf": bad.clone()})),
                Err(Refusal::InvalidClaim("nbf")),
                "nbf {bad}"
            );
            assert_eq!(
                check(json!({"exp": 1_000_060, "iat": bad.clone()})),
                Err(Refusal::InvalidClaim("iat")),
                "iat {bad}"
            );
        }
        // A fractional nbf counts as its ceiling: never valid before it.
        assert_eq!(
            check(json!({"exp": 1_000_060, "nbf": 999_999.5})),
            Ok(at(1_000_060))
        );
        assert_eq!(
            check(json!({"exp": 1_000_060, "nbf": 1_000_000.1})),
            Err(Refusal::NotYetValid)
        );
        // A leeway as large as a Duration holds saturates, never panics.
        let Value::Object(m) = json!({"exp": MAX_NUMERIC_DATE, "nbf": MAX_NUMERIC_DATE}) else {
            unreachable!()
        };
        assert!(valid_until(&m, now, Duration::MAX).is_ok());
    }

    #[tokio::test]
    async fn out_of_range_exp_is_refused_after_the_signature_is_checked() {
        let v = verifier(|_| {});
        for exp in [json!(1u64 << 63), json!(1e300), json!(-5), json!("soon")] {
            assert_eq!(
                refused(v.verify(&hs(json!({"exp": exp}), "s3cret")).await),
                Refusal::InvalidClaim("exp")
            );
            assert_eq!(
                refused(v.verify(&hs(json!({"exp": exp}), "other")).await),
                Refusal::Signature
            );
        }
    }

    #[tokio::test]
    async fn leeway_admits_a_just_expired_token_and_extends_expiry() {
        let v = verifier(|c| c.leeway = Duration::from_secs(30));
        let exp = unix_now() - 5;
        let id = v.verify(&hs(json!({"exp": exp}), "s3cret")).await.unwrap();
        assert_eq!(id.expires, Some(UNIX_EPOCH + Duration::from_secs(exp + 30)));
    }
}
