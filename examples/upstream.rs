//! A tiny GraphQL API to try subcar with, the way a real upstream would use
//! it: it answers queries and mutations on `http://127.0.0.1:8080/graphql`
//! (the `upstream.url` of `config.example.toml`), and every
//! `updateIncident` mutation POSTs an `incident.updated` event to subcar's
//! webhook, which feeds the `incidentUpdated` subscription.
//!
//! ```sh
//! cargo run --example upstream
//! ```
//!
//! `UPSTREAM_LISTEN` (default `127.0.0.1:8080`) and `SUBCAR_WEBHOOK`
//! (default `http://127.0.0.1:4001/webhook`) change the addresses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_graphql::{Context, EmptySubscription, Enum, ID, Object, Schema, SimpleObject};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpListener;

/// The same types as `examples/schema.graphql` declares for subcar: a type
/// defined identically on both sides merges into one.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Serialize)]
enum Severity {
    P1,
    P2,
    P3,
}

#[derive(SimpleObject, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Incident {
    id: ID,
    title: Option<String>,
    severity: Severity,
    updated_at: Option<String>,
}

struct State {
    incidents: Mutex<HashMap<String, Incident>>,
    webhook: String,
    http: reqwest::Client,
}

struct QueryRoot;

#[Object]
impl QueryRoot {
    async fn incident(&self, ctx: &Context<'_>, id: ID) -> Option<Incident> {
        ctx.data_unchecked::<Arc<State>>()
            .incidents
            .lock()
            .get(id.as_str())
            .cloned()
    }

    async fn incidents(&self, ctx: &Context<'_>) -> Vec<Incident> {
        let state = ctx.data_unchecked::<Arc<State>>();
        state.incidents.lock().values().cloned().collect()
    }
}

struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates or changes an incident, then tells subcar about it.
    async fn update_incident(
        &self,
        ctx: &Context<'_>,
        id: ID,
        title: Option<String>,
        severity: Option<Severity>,
    ) -> async_graphql::Result<Incident> {
        let state = ctx.data_unchecked::<Arc<State>>();
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let incident = {
            let mut incidents = state.incidents.lock();
            let entry = incidents.entry(id.to_string()).or_insert(Incident {
                id: id.clone(),
                title: None,
                severity: Severity::P3,
                updated_at: None,
            });
            if let Some(t) = title {
                entry.title = Some(t);
            }
            if let Some(s) = severity {
                entry.severity = s;
            }
            entry.updated_at = Some(now.to_string());
            entry.clone()
        };
        let event = serde_json::json!({
            "topic": "incident.updated",
            "id": format!("{}-{now}-{}", incident.id.as_str(), uuid::Uuid::new_v4()),
            "payload": incident,
        });
        let res = state.http.post(&state.webhook).json(&event).send().await?;
        if !res.status().is_success() {
            return Err(format!("subcar refused the event: {}", res.text().await?).into());
        }
        Ok(incident)
    }
}

type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("UPSTREAM_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let webhook =
        std::env::var("SUBCAR_WEBHOOK").unwrap_or_else(|_| "http://127.0.0.1:4001/webhook".into());
    let state = Arc::new(State {
        incidents: Mutex::new(HashMap::new()),
        webhook: webhook.clone(),
        http: reqwest::Client::new(),
    });
    let schema: ApiSchema = Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(state)
        .finish();
    let listener = TcpListener::bind(&listen).await?;
    println!("example upstream on http://{listen}/graphql, posting events to {webhook}");
    loop {
        let (stream, _) = listener.accept().await?;
        let schema = schema.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(schema.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    schema: ApiSchema,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let (status, answer) = match body
        .ok()
        .and_then(|b| serde_json::from_slice::<async_graphql::BatchRequest>(&b).ok())
    {
        Some(request) => (
            StatusCode::OK,
            serde_json::to_vec(&schema.execute_batch(request).await).unwrap_or_default(),
        ),
        None => (
            StatusCode::BAD_REQUEST,
            br#"{"errors":[{"message":"expected a GraphQL request as JSON"}]}"#.to_vec(),
        ),
    };
    let mut res = Response::new(Full::new(Bytes::from(answer)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}
