//! Accept loops: TCP (and TLS) connections served by hyper with HTTP/1.1 and
//! HTTP/2, each request handed to a tower service with the client's
//! connection facts attached.

pub mod graphiql;
pub mod router;
pub mod tls;
pub mod watchdog;

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use watchdog::ConnTimeouts;
use watchdog::{Activity, Tracked, Watched};

use crate::proxy::ClientConnection;
use crate::shutdown::Shutdown;

/// After an accept error (out of file descriptors, …), pause instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `service` on `listener` until shutdown, then lets each connection
/// finish its requests in flight (hyper's graceful shutdown). Every
/// connection is held to `timeouts` ([`watchdog`]).
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    timeouts: ConnTimeouts,
    shutdown: Shutdown,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own h1 header timer restarts right after each response, which
    // would cut idle keep-alive connections at the header timeout; the
    // watchdog times heads and idleness instead.
    builder.http1().header_read_timeout(None);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = shutdown.triggered() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        let client = ClientConnection {
            remote,
            tls: tls.is_some(),
        };
        let activity = Activity::new(accepted);
        let stream = Watched::new(stream, activity.clone());
        let service = Tracked::new(service.clone(), client, activity.clone());
        let builder = builder.clone();
        let tls = tls.clone();
        let conn_shutdown = shutdown.clone();
        shutdown.spawn(async move {
            let service = TowerToHyperService::new(service);
            match tls {
                None => {
                    serve_connection(
                        &builder,
                        TokioIo::new(stream),
                        service,
                        &activity,
                        timeouts,
                        &conn_shutdown,
                    )
                    .await
                }
                Some(acceptor) => {
                    // The handshake is part of the request head's time.
                    let handshake = tokio::time::timeout_at(
                        accepted + timeouts.header,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_connection(
                                &builder,
                                TokioIo::new(stream),
                                service,
                                &activity,
                                timeouts,
                                &conn_shutdown,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    activity: &Activity,
    timeouts: ConnTimeouts,
    shutdown: &Shutdown,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    // Far enough to mean "no deadline" while a request is in flight; the
    // loop comes back when the request ends (a read or the next deadline).
    let recheck = timeouts.header.min(timeouts.idle);
    let result = loop {
        let deadline = activity
            .deadline(timeouts)
            .unwrap_or_else(|| Instant::now() + recheck);
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = shutdown.triggered(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.deadline(timeouts).is_some_and(|d| d <= Instant::now()) {
                    // Dropping the connection closes the socket: nothing is
                    // in flight, so nothing is lost.
                    let why = if activity.awaiting_head() {
                        "no complete request head within server.header_timeout"
                    } else {
                        "idle for server.idle_timeout"
                    };
                    tracing::debug!("{why}: closing the connection");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
