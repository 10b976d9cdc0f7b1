//! A real GraphQL upstream written with async-graphql, served by hyper, that
//! records what it receives. A request header `x-test-behavior` switches it
//! into the awkward modes a proxy must survive: `big` (a 20 MB body streamed
//! lazily), `multipart` and `sse` (incremental bodies whose second part waits
//! for [`TestUpstream::release`]), `status:<code>`, `sleep:<ms>`.
//! `me` is an authentication query: it answers the caller's identity for an
//! `Authorization: Bearer user:<id>:<tenant>` header and an error otherwise.
//! `updateIncident(id, severity)` is the mutation of the trigger tests.
//! `ticket(id)` is the entity the enrichment tests complete events with, with
//! rights per caller (see [`QueryRoot::ticket`]); request bodies naming an id
//! `http-<code>` or `http-garbage` are answered with that HTTP status or with
//! bytes that are not JSON. Its schema can change as a redeployed API's does:
//! [`TestUpstream::evolve`] adds `Ticket.priority` ([`TestUpstream::revert`]
//! takes it away again), and
//! [`TestUpstream::refuse_introspection`] makes introspection fail.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::parser::types::Field;
use async_graphql::{
    Context, ContextSelectionSet, EmptySubscription, Enum, ErrorExtensions, ID, Object, OutputType,
    Positioned, Schema, ServerError, ServerResult, SimpleObject, Union,
};
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

    /// Answers after `ms` milliseconds (two seconds by default, at most a
    /// minute): an operation that stays in flight.
    async fn slow(&self, #[graphql(default = 2000)] ms: u64) -> bool {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        true
    }

    /// A ticket as the caller may see it. Callers are `Bearer user:<id>:<tenant>`
    /// or a JWT (not verified here) whose `role` claim stands for the tenant;
    /// anyone else gets an `UNAUTHENTICATED` error. Ids:
    /// - `<tenant>-<n>`: a ticket of that tenant, `null` for other tenants;
    ///   tenant `public` is seen by everyone. `ops-1`, `ops-2`, `dev-1` have
    ///   hand-written values ([`ticket_data`]), others are derived from the id;
    /// - `slow-<ms>-<id>`: as `<id>`, answered after `<ms>` milliseconds;
    /// - `forbidden`: an error with `extensions.code = "FORBIDDEN"`;
    /// - `broken`: a public ticket whose `notes` field fails.
    ///
    /// `notes` is visible to tenant `ops` only (`null` for the others).
    async fn ticket(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Ticket>> {
        let caller = ctx
            .data::<HeaderMap>()
            .ok()
            .and_then(caller_of)
            .ok_or_else(|| coded("not authenticated", "UNAUTHENTICATED"))?;
        let mut key = id.as_str();
        if let Some((ms, rest)) = key.strip_prefix("slow-").and_then(|s| s.split_once('-')) {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            key = rest;
        }
        let broken = key == "broken";
        let data = match key {
            "forbidden" => return Err(coded("you may not see this ticket", "FORBIDDEN")),
            "broken" => ticket_data("public-broken"),
            _ => ticket_data(key),
        };
        Ok(data
            .filter(|d| d.tenant == "public" || d.tenant == caller.tenant)
            .map(|data| Ticket {
                id: id.to_string(),
                data,
                caller_tenant: caller.tenant,
                broken,
            }))
    }
}

/// The identity behind an `Authorization` header, for [`QueryRoot::ticket`].
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub id: String,
    pub tenant: String,
}

/// `Bearer user:<id>:<tenant>`, or a JWT with `sub` and `role` claims.
pub fn caller_of(headers: &HeaderMap) -> Option<Caller> {
    let bearer = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    if let Some((id, tenant)) = bearer.strip_prefix("user:").and_then(|t| t.split_once(':')) {
        return Some(Caller {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
        });
    }
    use base64::Engine;
    let payload = bearer.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    )
    .ok()?;
    Some(Caller {
        id: claims["sub"].as_str()?.to_owned(),
        tenant: claims["role"].as_str()?.to_owned(),
    })
}

fn coded(message: &str, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Severity {
    P1,
    P2,
    P3,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct User {
    pub id: ID,
    pub name: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Comment {
    pub text: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
}

/// What happened last to a ticket: an abstract type for fragments with type
/// conditions.
#[derive(Union, Clone, Debug)]
pub enum Activity {
    Comment(Comment),
    StatusChange(StatusChange),
}

/// The stored values of a ticket, before rights are applied.
#[derive(Clone, Debug)]
pub struct TicketData {
    pub tenant: String,
    pub title: Option<String>,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub owner: Option<User>,
    pub notes: String,
    pub last_activity: Option<Activity>,
}

/// The tickets of [`QueryRoot::ticket`] by id: `None` for an id that is not
/// `<tenant>-<something>`.
pub fn ticket_data(key: &str) -> Option<TicketData> {
    let user = |id: &str, name: &str| {
        Some(User {
            id: ID::from(id),
            name: name.to_owned(),
        })
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match key {
        "ops-1" => TicketData {
            tenant: "ops".into(),
            title: Some("db down".into()),
            severity: Severity::P1,
            tags: strings(&["db", "prod"]),
            owner: user("u1", "Ada"),
            notes: "failover to the replica".into(),
            last_activity: Some(Activity::Comment(Comment {
                text: "on it".into(),
            })),
        },
        "ops-2" => TicketData {
            tenant: "ops".into(),
            title: Some("disk full".into()),
            severity: Severity::P2,
            tags: Vec::new(),
            owner: None,
            notes: "grow the volume".into(),
            last_activity: Some(Activity::StatusChange(StatusChange {
                from: "open".into(),
                to: "resolved".into(),
            })),
        },
        "dev-1" => TicketData {
            tenant: "dev".into(),
            title: Some("flaky test".into()),
            severity: Severity::P3,
            tags: strings(&["ci"]),
            owner: user("u3", "Grace"),
            notes: "retry it".into(),
            last_activity: None,
        },
        _ => {
            let (tenant, _) = key.split_once('-')?;
            TicketData {
                tenant: tenant.into(),
                title: Some(format!("Ticket {key}")),
                severity: Severity::P2,
                tags: vec![tenant.to_owned()],
                owner: user(&format!("u-{tenant}"), &format!("{tenant} on-call")),
                notes: format!("notes of {key}"),
                last_activity: Some(Activity::Comment(Comment {
                    text: "opened".into(),
                })),
            }
        }
    })
}

/// A field's value, or a failure to produce it (`Ticket.notes`,
/// `updateIncident`). A failure inside an `Option` nulls only this field,
/// as the GraphQL spec says; an error returned by the resolver itself would
/// make async-graphql null the nearest nullable value above it (the whole
/// ticket, or the mutation's whole `data`).
pub enum Fallible<T> {
    Value(T),
    Fails(&'static str),
}

impl<T: OutputType> OutputType for Fallible<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<async_graphql::Value> {
        match self {
            Self::Value(v) => v.resolve(ctx, field).await,
            Self::Fails(why) => Err(ctx.set_error_path(ServerError::new(*why, Some(field.pos)))),
        }
    }
}

/// A ticket as one caller sees it.
pub struct Ticket {
    id: String,
    data: TicketData,
    caller_tenant: String,
    broken: bool,
}

#[Object]
impl Ticket {
    async fn id(&self) -> ID {
        ID::from(self.id.as_str())
    }

    async fn title(&self) -> Option<&str> {
        self.data.title.as_deref()
    }

    async fn severity(&self) -> Severity {
        self.data.severity
    }

    async fn tags(&self) -> &[String] {
        &self.data.tags
    }

    async fn owner(&self) -> Option<&User> {
        self.data.owner.as_ref()
    }

    /// Tenant `ops` only; fails for the `broken` ticket.
    async fn notes(&self) -> Option<Fallible<String>> {
        if self.broken {
            return Some(Fallible::Fails("notes are unavailable"));
        }
        (self.caller_tenant == "ops").then(|| Fallible::Value(self.data.notes.clone()))
    }

    async fn last_activity(&self) -> Option<&Activity> {
        self.data.last_activity.as_ref()
    }

    async fn tenant(&self) -> &str {
        &self.data.tenant
    }

    /// A field the API gains by a redeploy: in the schema only once
    /// [`TestUpstream::evolve`] was called.
    #[graphql(visible = "evolved")]
    async fn priority(&self) -> i32 {
        1
    }
}

/// Whether the upstream's schema is the evolved one ([`TestUpstream::evolve`]).
#[derive(Clone, Copy)]
struct Evolved(bool);

fn evolved(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Evolved>().is_some_and(|e| e.0)
}

#[derive(SimpleObject)]
pub struct Me {
    pub id: String,
    pub tenant: String,
}

/// What `updateIncident` answers: the incident as changed.
pub struct IncidentChange {
    id: ID,
    severity: Severity,
}

#[Object]
impl IncidentChange {
    async fn id(&self) -> &ID {
        &self.id
    }

    async fn severity(&self) -> Severity {
        self.severity
    }

    /// Fails for incident `flaky` (the change itself is answered).
    async fn notes(&self) -> Option<Fallible<String>> {
        Some(if self.id.as_str() == "flaky" {
            Fallible::Fails("notes are unavailable")
        } else {
            Fallible::Value(format!("now {:?}", self.severity))
        })
    }
}

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// The mutation of the trigger tests: answers the change, or an error
    /// on the field (its value `null`) for incident `missing`.
    async fn update_incident(
        &self,
        id: ID,
        severity: Severity,
    ) -> Option<Fallible<IncidentChange>> {
        Some(match id.as_str() {
            "missing" => Fallible::Fails("no such incident"),
            _ => Fallible::Value(IncidentChange { id, severity }),
        })
    }

    async fn increment(&self, ctx: &Context<'_>, #[graphql(default = 1)] by: i64) -> i64 {
        ctx.data::<Arc<AtomicI64>>()
            .unwrap()
            .fetch_add(by, Ordering::SeqCst)
            + by
    }
}

pub type UpstreamSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The upstream's schema (also for `schema.upstream_sdl` files: see [`sdl`]).
pub fn schema() -> UpstreamSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(Arc::new(AtomicI64::new(0)))
        .finish()
}

/// The upstream's schema as SDL, for tests that run subcar against an
/// upstream that is down or broken.
pub fn sdl() -> String {
    schema().sdl()
}

struct State {
    schema: UpstreamSchema,
    recorded: Mutex<Vec<Recorded>>,
    release: Notify,
    /// Requests being answered, and the most seen at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    evolved: AtomicBool,
    refuse_introspection: AtomicBool,
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
        let state = Arc::new(State {
            schema: schema(),
            recorded: Mutex::new(Vec::new()),
            release: Notify::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            evolved: AtomicBool::new(false),
            refuse_introspection: AtomicBool::new(false),
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

    /// From now on the schema has `Ticket.priority`, as after a redeploy.
    pub fn evolve(&self) {
        self.state.evolved.store(true, Ordering::SeqCst);
    }

    /// From now on the schema is the first one again (no `Ticket.priority`),
    /// as after a rollback.
    pub fn revert(&self) {
        self.state.evolved.store(false, Ordering::SeqCst);
    }

    /// Whether introspection queries are answered `503` from now on.
    pub fn refuse_introspection(&self, refuse: bool) {
        self.state
            .refuse_introspection
            .store(refuse, Ordering::SeqCst);
    }

    /// How many recorded requests have a body containing `needle`.
    pub fn count_containing(&self, needle: &str) -> usize {
        self.bodies_containing(needle).len()
    }

    /// The recorded requests whose body contains `needle`, in arrival order.
    pub fn bodies_containing(&self, needle: &str) -> Vec<Recorded> {
        let needle = needle.as_bytes();
        self.recorded()
            .into_iter()
            .filter(|r| r.body.windows(needle.len()).any(|w| w == needle))
            .collect()
    }

    /// The most requests (probes excluded) it was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
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
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
    let response = answer(&state, parts, body).await;
    if !is_probe {
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    Ok(response)
}

async fn answer(state: &Arc<State>, parts: http::request::Parts, body: Bytes) -> Response<Body> {
    match http_marker(&body) {
        Some(HttpMarker::Status(status)) => {
            let body = format!(r#"{{"errors":[{{"message":"upstream says {status}"}}]}}"#);
            return json(status, body);
        }
        Some(HttpMarker::Garbage) => {
            return Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"<html>this is not json")).boxed())
                .unwrap();
        }
        None => {}
    }
    if state.refuse_introspection.load(Ordering::SeqCst)
        && body.windows(8).any(|w| w == b"__schema")
    {
        let body = r#"{"errors":[{"message":"introspection is down for maintenance"}]}"#;
        return json(StatusCode::SERVICE_UNAVAILABLE, body.to_owned());
    }
    let behavior = parts
        .headers
        .get("x-test-behavior")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    match behavior.split_once(':').unwrap_or((behavior.as_str(), "")) {
        ("big", _) => return big(),
        ("multipart", _) => {
            return two_parts(state.clone(), "multipart/mixed; boundary=\"-\"", MULTIPART);
        }
        ("sse", _) => return two_parts(state.clone(), "text/event-stream", SSE),
        ("status", code) => {
            let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            let body = format!(r#"{{"errors":[{{"message":"upstream says {code}"}}]}}"#);
            return json(status, body);
        }
        ("sleep", ms) => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
        _ => {}
    }
    let request = if parts.method == http::Method::GET {
        match async_graphql::http::parse_query_string(parts.uri.query().unwrap_or("")) {
            Ok(r) => async_graphql::BatchRequest::Single(r),
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    format!(r#"{{"errors":[{{"message":"{e}"}}]}}"#),
                );
            }
        }
    } else {
        match serde_json::from_slice::<async_graphql::BatchRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors":[{"message": e.to_string()}]}).to_string(),
                );
            }
        }
    };
    let request = request
        .data(parts.headers)
        .data(Evolved(state.evolved.load(Ordering::SeqCst)));
    let response = state.schema.execute_batch(request).await;
    json(StatusCode::OK, serde_json::to_string(&response).unwrap())
}

/// What a request naming a ticket id `http-…` asks for.
enum HttpMarker {
    Status(StatusCode),
    Garbage,
}

fn http_marker(body: &[u8]) -> Option<HttpMarker> {
    let text = std::str::from_utf8(body).ok()?;
    text.match_indices("http-").find_map(|(i, _)| {
        let rest = &text[i + 5..];
        if rest.starts_with("garbage") {
            return Some(HttpMarker::Garbage);
        }
        let code = rest.get(..3)?;
        code.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| StatusCode::from_u16(code.parse().ok()?).ok())
            .flatten()
            .map(HttpMarker::Status)
    })
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

/// A `{ hello }` POST to `url` (subcar's `/graphql`) asking the upstream,
/// through `x-test-behavior`, to answer as `behavior` says.
pub fn hello_behaving(
    client: &reqwest::Client,
    url: &str,
    behavior: &str,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("x-test-behavior", behavior)
        .json(&serde_json::json!({"query": "{ hello }"}))
}
