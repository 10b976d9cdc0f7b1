//! A real GraphQL upstream written with async-graphql, served by hyper, that
//! records what it receives. A request header `x-test-behavior` switches it
//! into the awkward modes a proxy must survive: `big` (a 20 MB body streamed
//! lazily), `multipart` and `sse` (incremental bodies whose second part waits
//! for [`TestUpstream::release`]), `status:<code>`, `sleep:<ms>`.
//! `me` is an authentication query: it answers the caller's identity for an
//! `Authorization: Bearer user:<id>:<tenant>` header and an error otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, Object, Schema, SimpleObject};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const BIG_BODY_BYTES: usize = 20 * 1024 * 1024;
const BIG_CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct QueryRoot;

#[Object]
impl QueryRoot {
    async fn hello(&self, #[graphql(default = "world")] name: String) -> String {
        format!("Hello, {name}!")
    }

    /// The value of a request header as the upstream received it.
    async fn header(&self, ctx: &Context<'_>, name: String) -> Option<String> {
        let headers = ctx.data::<HeaderMap>().ok()?;
        headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Who the caller is, from its `Authorization` header.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let token = ctx
            .data::<HeaderMap>()
            .ok()
            .and_then(|h| h.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer user:"))
            .ok_or("not authenticated")?;
        let (id, tenant) = token.split_once(':').ok_or("malformed token")?;
        Ok(Me {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
        })
    }

    async fn fail(&self) -> async_graphql::Result<String> {
        Err("this field always fails".into())
    }

    /// Answers after two seconds: an operation that stays in flight.
    async fn slow(&self) -> bool {
        tokio::time::sleep(Duration::from_secs(2)).await;
        true
    }
}

#[derive(SimpleObject)]
pub struct Me {
    pub id: String,
    pub tenant: String,
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    async fn increment(&self, ctx: &Context<'_>, #[graphql(default = 1)] by: i64) -> i64 {
        ctx.data::<Arc<AtomicI64>>()
            .unwrap()
            .fetch_add(by, Ordering::SeqCst)
            + by
    }
}

pub type UpstreamSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

struct State {
    schema: UpstreamSchema,
    recorded: Mutex<Vec<Recorded>>,
    release: Notify,
}

/// A running upstream; stops with the test's runtime.
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on a given loopback port (0: any).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let schema = Schema::build(QueryRoot, MutationRoot, EmptySubscription)
            .data(Arc::new(AtomicI64::new(0)))
            .finish();
        let state = Arc::new(State {
            schema,
            recorded: Mutex::new(Vec::new()),
            release: Notify::new(),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded()
            .pop()
            .expect("the upstream received a request")
    }

    /// Lets a `multipart`/`sse` response send its second part.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Waits until the upstream has received `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        for _ in 0..500 {
            if self.state.recorded.lock().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("upstream did not receive {n} requests");
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let is_probe = parts
        .headers
        .get("user-agent")
        .is_some_and(|ua| ua == subcar::proxy::PROBE_USER_AGENT);
    if !is_probe {
        state.recorded.lock().push(Recorded {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    let behavior = parts
        .headers
        .get("x-test-behavior")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    match behavior.split_once(':').unwrap_or((behavior.as_str(), "")) {
        ("big", _) => return Ok(big()),
        ("multipart", _) => {
            return Ok(two_parts(
                state,
                "multipart/mixed; boundary=\"-\"",
                MULTIPART,
            ));
        }
        ("sse", _) => return Ok(two_parts(state, "text/event-stream", SSE)),
        ("status", code) => {
            let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            let body = format!(r#"{{"errors":[{{"message":"upstream says {code}"}}]}}"#);
            return Ok(json(status, body));
        }
        ("sleep", ms) => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
        _ => {}
    }
    let request = if parts.method == http::Method::GET {
        match async_graphql::http::parse_query_string(parts.uri.query().unwrap_or("")) {
            Ok(r) => async_graphql::BatchRequest::Single(r),
            Err(e) => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    format!(r#"{{"errors":[{{"message":"{e}"}}]}}"#),
                ));
            }
        }
    } else {
        match serde_json::from_slice::<async_graphql::BatchRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors":[{"message": e.to_string()}]}).to_string(),
                ));
            }
        }
    };
    let request = request.data(parts.headers);
    let response = state.schema.execute_batch(request).await;
    Ok(json(
        StatusCode::OK,
        serde_json::to_string(&response).unwrap(),
    ))
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

/// `{"data":{"blob":"xxxx…"}}` of [`BIG_BODY_BYTES`], produced chunk by
/// chunk only as fast as the reader takes it.
fn big() -> Response<Body> {
    let chunks = BIG_BODY_BYTES / BIG_CHUNK;
    let stream = futures_util::stream::iter(0..chunks + 2).map(move |i| {
        let bytes = if i == 0 {
            Bytes::from_static(br#"{"data":{"blob":""#)
        } else if i == chunks + 1 {
            Bytes::from_static(br#""}}"#)
        } else {
            Bytes::from(vec![b'x'; BIG_CHUNK])
        };
        Ok::<_, Infallible>(Frame::data(bytes))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

pub const MULTIPART: [&str; 2] = [
    "\r\n---\r\ncontent-type: application/json\r\n\r\n{\"data\":{\"hello\":\"first\"},\"hasNext\":true}\r\n---",
    "\r\ncontent-type: application/json\r\n\r\n{\"incremental\":[],\"hasNext\":false}\r\n-----\r\n",
];

pub const SSE: [&str; 2] = [
    "event: next\ndata: {\"data\":{\"hello\":\"first\"}}\n\n",
    "event: next\ndata: {\"data\":{\"hello\":\"second\"}}\n\nevent: complete\ndata:\n\n",
];

/// Sends `parts[0]` at once and `parts[1]` only after [`TestUpstream::release`].
fn two_parts(state: Arc<State>, content_type: &str, parts: [&'static str; 2]) -> Response<Body> {
    let stream = futures_util::stream::unfold(0, move |i| {
        let state = state.clone();
        async move {
            match i {
                0 => Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(parts[0].as_bytes()))),
                    1,
                )),
                1 => {
                    state.release.notified().await;
                    Some((Ok(Frame::data(Bytes::from_static(parts[1].as_bytes()))), 2))
                }
                _ => None,
            }
        }
    });
    Response::builder()
        .header("content-type", content_type)
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// A TCP server that answers every connection with bytes that are not HTTP.
pub async fn garbage_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH\r\nthis is not http\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}/graphql")
}

/// A URL on which nothing listens.
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}/graphql", super::free_port())
}
