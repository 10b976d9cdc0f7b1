//! TLS on the public listener: the only place that knows rustls server types.
//!
//! PEM files are read with `rustls-pki-types`' own parser
//! ([`PemObject`]); `rustls-pemfile` is unmaintained (RUSTSEC-2025-0134).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.tls: {path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("server.tls.cert: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("server.tls.key: {path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("server.tls: the certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the acceptor, advertising HTTP/2 and HTTP/1.1 over ALPN.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(&config.cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: config.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: config.key.clone(),
        },
        e => pem_error(&config.key, e),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn pem_error(path: &Path, error: pem::Error) -> TlsError {
    let path = path.to_owned();
    match error {
        pem::Error::Io(source) => TlsError::Read { path, source },
        source => TlsError::Pem { path, source },
    }
}
