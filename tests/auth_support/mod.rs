//! Token minting for the auth tests: an HS256 secret, and RS256, ES256 and
//! EdDSA keys generated in the test with their JWKs, served by a real JWKS
//! HTTP server that counts its fetches.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SECRET: &str = "a-test-secret-that-is-long-enough";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `claims` with `exp` in `secs` seconds unless set.
pub fn hs256(mut claims: Value, secs: u64) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + secs);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `[auth]` for HS256 tokens with no leeway, plus `extra` lines of `[auth.jwt]`.
pub fn jwt_auth(extra: &str) -> String {
    format!(
        "[auth]\nmode = \"jwt\"\ncookie = \"session\"\n[auth.jwt]\nsecret = \"{SECRET}\"\nleeway = \"0s\"\n{extra}\n"
    )
}

/// `[auth]` in JWT mode with `auth` lines, the HS256 [`SECRET`] and nothing
/// else set.
pub fn hs256_auth(auth: &str) -> String {
    format!("[auth]\nmode = \"jwt\"\n{auth}\n[auth.jwt]\nsecret = \"{SECRET}\"\n")
}

/// A signing key generated in the test, with its public JWK.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    key: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    fn new(alg: Algorithm, kid: &str, key: EncodingKey, jwk: Value) -> Self {
        Self {
            alg,
            kid: kid.into(),
            key,
            jwk,
        }
    }

    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        Self::new(
            Algorithm::RS256,
            kid,
            EncodingKey::from_rsa_der(der.as_bytes()),
            json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": B64.encode(private.n().to_bytes_be()),
                "e": B64.encode(private.e().to_bytes_be()),
            }),
        )
    }

    pub fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let public = pair.public_key_raw();
        assert_eq!(public[0], 4, "uncompressed point");
        Self::new(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_der(&pair.serialize_der()),
            json!({
                "kty": "EC", "kid": kid, "use": "sig", "crv": "P-256",
                "x": B64.encode(&public[1..33]),
                "y": B64.encode(&public[33..65]),
            }),
        )
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self::new(
            Algorithm::EdDSA,
            kid,
            EncodingKey::from_ed_der(&pair.serialize_der()),
            json!({
                "kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519",
                "x": B64.encode(pair.public_key_raw()),
            }),
        )
    }

    /// A token for `claims` (with `exp` in ten minutes) under this key's `kid`.
    pub fn sign(&self, claims: Value) -> String {
        self.sign_as(&self.kid.clone(), claims)
    }

    /// A token under another `kid`.
    pub fn sign_as(&self, kid: &str, mut claims: Value) -> String {
        if claims.get("exp").is_none() {
            claims["exp"] = json!(now() + 600);
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        encode(&header, &claims, &self.key).unwrap()
    }
}

/// A JWK Set document of `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A JWKS endpoint whose document can be replaced; counts its fetches.
pub struct JwksServer {
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let body = doc.lock().clone();
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            document,
            fetches,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn serve(&self, document: String) {
        *self.document.lock() = document;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
