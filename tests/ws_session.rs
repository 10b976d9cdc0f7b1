//! The session state machine driven through channels (no socket), with
//! tokio's paused clock for the timers: refused `connection_init` (4403),
//! heartbeat pings only after the ack, heartbeat timeout, RAII teardown.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Sink, Stream};
use http::HeaderMap;
use serde_json::{Value, json};
use subcar::auth::{AuthError, Identity, Refusal};
use subcar::config::SchemaConfig;
use subcar::subscriptions::latch::Latch;
use subcar::subscriptions::operation::{Core, OperationLimits};
use subcar::subscriptions::{Registry, Routes};
use subcar::transport::protocol::{ClientMessage, CloseCode, Inbound, Outbound};
use subcar::transport::{
    AllowAll, Authenticator, CountLimits, ExecuteError, Executor, InboundStack, Session,
    SessionLimits, Shared,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Both directions of a socket as channels.
struct Duplex {
    rx: UnboundedReceiver<Inbound>,
    tx: UnboundedSender<Outbound>,
}

impl Stream for Duplex {
    type Item = Inbound;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.rx.poll_recv(cx)
    }
}

impl Sink<Outbound> for Duplex {
    type Error = &'static str;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Outbound) -> Result<(), Self::Error> {
        self.tx.send(item).map_err(|_| "peer gone")
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

struct NoUpstream;

impl Executor for NoUpstream {
    fn execute(
        &self,
        _: bytes::Bytes,
        _: HeaderMap,
    ) -> BoxFuture<'static, Result<bytes::Bytes, ExecuteError>> {
        Box::pin(async { Err(ExecuteError::Unavailable("no upstream in this test".into())) })
    }
}

struct DenyAll;

impl Authenticator for DenyAll {
    fn authenticate(&self, _: &HeaderMap) -> BoxFuture<'static, Result<Identity, AuthError>> {
        Box::pin(async { Err(AuthError::Refused(Refusal::Missing)) })
    }
}

struct Harness {
    to_session: UnboundedSender<Inbound>,
    from_session: UnboundedReceiver<Outbound>,
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
}

fn start(authenticator: Arc<dyn Authenticator>) -> Harness {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "type Query { a: Int } type Subscription { counter: Int }",
    )
    .unwrap();
    let schema = subcar::proxy::schema::load(
        &SchemaConfig {
            path: file.path().to_owned(),
            introspect_upstream: false,
            upstream_sdl: None,
            introspection: true,
            refresh_interval: std::time::Duration::ZERO,
        },
        &Default::default(),
    )
    .unwrap();
    let registry = Registry::new(1);
    let core = Core {
        schema,
        bus: Arc::new(subcar::bus::MemoryBus::new(0)),
        routes: Arc::new(Routes::new(&[], ["counter".to_string()]).unwrap()),
        registry: registry.clone(),
        executor: Arc::new(NoUpstream),
        authenticator,
        metrics: Arc::new(subcar::metrics::Metrics::new()),
        limits: OperationLimits {
            outbound_queue: 16,
            max_inflight: 16,
            counts: Arc::new(CountLimits::new(10, 2)),
        },
        directory: Default::default(),
        audit: Default::default(),
        triggers: Arc::new(subcar::triggers::Triggers::none(
            Arc::new(subcar::bus::MemoryBus::new(0)),
            Arc::new(subcar::metrics::Metrics::new()),
        )),
    };
    let shared = Arc::new(Shared {
        core: Arc::new(core),
        inbound: InboundStack::admit_all(),
        init_headers: subcar::auth::credentials::InitHeaders::authorization_only(),
        trusted_proxies: Vec::new(),
        limits: SessionLimits {
            init_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(10),
            max_message_bytes: 65536,
        }
        .into(),
    });
    let (to_session, rx) = unbounded_channel();
    let (tx, from_session) = unbounded_channel();
    let session = Session::new(Duplex { rx, tx }, shared, HeaderMap::new(), Latch::new());
    Harness {
        to_session,
        from_session,
        registry,
        task: tokio::spawn(session.run()),
    }
}

fn msg(v: Value) -> Inbound {
    Inbound::Message(ClientMessage::parse(v.to_string().as_bytes()).unwrap())
}

fn text(o: Outbound) -> Value {
    match o {
        Outbound::Text(f) => serde_json::from_slice(f.as_bytes()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn refused_init_closes_4403() {
    let mut h = start(Arc::new(DenyAll));
    h.to_session
        .send(msg(json!({"type": "connection_init"})))
        .unwrap();
    assert!(matches!(
        h.from_session.recv().await,
        Some(Outbound::Close(CloseCode::Forbidden, _))
    ));
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn heartbeat_pings_start_after_ack_and_silence_closes_1001() {
    let mut h = start(Arc::new(AllowAll));
    h.to_session
        .send(msg(json!({"type": "connection_init"})))
        .unwrap();
    assert_eq!(
        text(h.from_session.recv().await.unwrap())["type"],
        "connection_ack"
    );
    // A client that answers stays.
    for _ in 0..3 {
        assert_eq!(h.from_session.recv().await, Some(Outbound::Ping));
        h.to_session.send(Inbound::Alive).unwrap();
    }
    // One that does not is closed with a code clients retry on.
    assert_eq!(h.from_session.recv().await, Some(Outbound::Ping));
    match h.from_session.recv().await {
        Some(Outbound::Close(code, reason)) => {
            assert_eq!(code, CloseCode::GoingAway);
            assert!(reason.contains("heartbeat"));
        }
        other => panic!("{other:?}"),
    }
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscription_limit_is_an_error_message_and_teardown_frees_all() {
    let mut h = start(Arc::new(AllowAll));
    h.to_session
        .send(msg(json!({"type": "connection_init"})))
        .unwrap();
    assert_eq!(
        text(h.from_session.recv().await.unwrap())["type"],
        "connection_ack"
    );
    for id in ["1", "2", "3"] {
        let sub = json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { counter }"}});
        h.to_session.send(msg(sub)).unwrap();
    }
    let err = text(h.from_session.recv().await.unwrap());
    assert_eq!(err["id"], "3");
    assert_eq!(err["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(h.registry.sizes().subscriptions, 2);
    // The socket goes away: everything it held is released.
    drop(h.to_session);
    h.task.await.unwrap();
    let s = h.registry.sizes();
    assert_eq!((s.subscriptions, s.groups, s.connections), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn upstream_failure_is_an_error_for_the_operation() {
    let mut h = start(Arc::new(AllowAll));
    h.to_session
        .send(msg(json!({"type": "connection_init"})))
        .unwrap();
    h.from_session.recv().await.unwrap();
    h.to_session
        .send(msg(
            json!({"id": "q", "type": "subscribe", "payload": {"query": "{ a }"}}),
        ))
        .unwrap();
    let err = text(h.from_session.recv().await.unwrap());
    assert_eq!(err["type"], "error");
    assert_eq!(
        err["payload"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
}
