//! TLS on the public listener: the only place that knows rustls server types.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
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
    #[error("server.tls.cert: {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("server.tls.key: {path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("server.tls: the certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the acceptor, advertising HTTP/2 and HTTP/1.1 over ALPN.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = rustls_pemfile::certs(&mut reader(&config.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: config.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: config.cert.clone(),
        });
    }
    let key = rustls_pemfile::private_key(&mut reader(&config.key)?)
        .map_err(|source| TlsError::Read {
            path: config.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: config.key.clone(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn reader(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}
