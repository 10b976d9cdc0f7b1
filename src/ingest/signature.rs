//! Standard Webhooks signature verification (<https://www.standardwebhooks.com/>):
//! `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`,
//! several space-separated signatures allowed for key rotation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// How far `webhook-timestamp` may be from our clock, either way.
pub const TOLERANCE_SECS: u64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away from the server's clock")]
    OutsideTolerance,
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

#[derive(Debug, thiserror::Error)]
#[error("webhook.secret is not a Standard Webhooks secret: expected \"whsec_\" followed by base64")]
pub struct BadSecret;

/// Verifies requests against one secret.
#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(****)")
    }
}

impl Verifier {
    /// `secret` is `whsec_<base64>` (the prefix is optional, as in the
    /// reference libraries).
    pub fn new(secret: &str) -> Result<Self, BadSecret> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = STANDARD.decode(b64).map_err(|_| BadSecret)?;
        if key.is_empty() {
            return Err(BadSecret);
        }
        Ok(Self { key })
    }

    /// Checks the signature headers of a request with `body` at `now` (Unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), SignatureError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(SignatureError::MissingHeader(name))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let signatures = header("webhook-signature")?;
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if ts.abs_diff(now) > TOLERANCE_SECS {
            return Err(SignatureError::OutsideTolerance);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let matched = signatures.split_ascii_whitespace().any(|sig| {
            let Some(("v1", b64)) = sig.split_once(',') else {
                return false;
            };
            STANDARD
                .decode(b64)
                .is_ok_and(|raw| mac.clone().verify_slice(&raw).is_ok())
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }

    /// Signs like a Standard Webhooks sender (used by tests and the benchmark).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers(id: &str, ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn accepts_own_signature_and_rotation_lists() {
        let v = Verifier::new(SECRET).unwrap();
        let other = Verifier::new("whsec_c2VjcmV0MTIz").unwrap();
        let body = br#"{"topic":"t","payload":1}"#;
        let good = v.sign("msg_1", 1_000, body);
        let bad = other.sign("msg_1", 1_000, body);
        assert_eq!(
            v.verify(&headers("msg_1", 1_000, &good), body, 1_010),
            Ok(())
        );
        let both = format!("{bad} {good}");
        assert_eq!(
            v.verify(&headers("msg_1", 1_000, &both), body, 1_000),
            Ok(())
        );
        assert_eq!(
            v.verify(&headers("msg_1", 1_000, &bad), body, 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            v.verify(&headers("msg_2", 1_000, &good), body, 1_000),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamp_tolerance_is_five_minutes_both_ways() {
        let v = Verifier::new(SECRET).unwrap();
        let body = b"{}";
        let sig = v.sign("m", 10_000, body);
        let h = headers("m", 10_000, &sig);
        assert!(v.verify(&h, body, 10_300).is_ok());
        assert!(v.verify(&h, body, 9_700).is_ok());
        assert_eq!(
            v.verify(&h, body, 10_301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            v.verify(&h, body, 9_699),
            Err(SignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn missing_headers_and_bad_secrets() {
        let v = Verifier::new(SECRET).unwrap();
        assert_eq!(
            v.verify(&HeaderMap::new(), b"", 0),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert!(Verifier::new("whsec_!!!").is_err());
    }
}
