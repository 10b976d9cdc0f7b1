//! graphql-sse's single connection mode: a `PUT` reserves a stream and
//! answers its token; the stream opens with the token; operations are
//! `POST`ed with it and `extensions.operationId`, stopped with `DELETE
//! ?operationId=`. Status codes are those of the protocol's reference
//! handler. The token is an unguessable capability bound to the identity
//! the `PUT` authenticated; the reservation ends with its stream (or
//! unclaimed, after a while), as the reference's does.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::feed::{self, Command, Refused};
use super::{Framing, stream_response};
use crate::error;
use crate::http::body::{self, Body};
use crate::http::media;
use crate::subscriptions::operation::{PreparedOperation, Request as GraphqlRequest, Resume};

/// The header graphql-sse clients send the token in (or `?token=`).
pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// Commands a reservation's task has not taken yet, at most.
const COMMANDS: usize = 16;

/// The open reservations, by token.
#[derive(Clone, Default)]
pub struct Reservations {
    by_token: Arc<Mutex<HashMap<String, mpsc::Sender<Command>>>>,
}

impl Reservations {
    pub fn reserve(&self) -> (String, mpsc::Receiver<Command>) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = mpsc::channel(COMMANDS);
        self.by_token.lock().insert(token.clone(), tx);
        (token, rx)
    }

    pub fn get(&self, token: &str) -> Option<mpsc::Sender<Command>> {
        self.by_token.lock().get(token).cloned()
    }

    /// The reservation's task ended.
    pub fn remove(&self, token: &str) {
        self.by_token.lock().remove(token);
    }

    /// Opens the reservation's stream: `409` when it is already open.
    pub async fn attach(&self, token: &str, version: Version) -> Response<Body> {
        let Some(commands) = self.get(token) else {
            return stream_not_found();
        };
        let (tx, stream) = feed::channel();
        let (reply, answer) = oneshot::channel();
        if commands.send(Command::Attach { tx, reply }).await.is_err() {
            return stream_not_found();
        }
        match answer.await {
            Ok(Ok(())) => stream_response(Framing::SseSingle, body::boxed(stream), version),
            Ok(Err(Refused::Conflict)) => conflict("Stream already open"),
            Err(_) => stream_not_found(),
        }
    }

    /// `DELETE ?operationId=`: `200`, also for an operation that already ended.
    pub async fn stop(&self, token: &str, uri: &Uri) -> Response<Body> {
        let Some(commands) = self.get(token) else {
            return stream_not_found();
        };
        let id = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "operationId")
            .map(|(_, v)| v.into_owned())
            .filter(|id| !id.is_empty());
        let Some(id) = id else {
            return operation_id_missing();
        };
        if commands.send(Command::Stop { id }).await.is_err() {
            return stream_not_found();
        }
        status(StatusCode::OK)
    }
}

/// Starts a prepared operation on the reservation: `202`, or `409` when
/// its id is running.
pub async fn start(
    commands: &mpsc::Sender<Command>,
    id: String,
    op: PreparedOperation,
    resume: Resume,
) -> Response<Body> {
    let (reply, answer) = oneshot::channel();
    let command = Command::Start {
        id,
        op,
        resume,
        reply,
    };
    if commands.send(command).await.is_err() {
        return stream_not_found();
    }
    match answer.await {
        Ok(Ok(())) => status(StatusCode::ACCEPTED),
        Ok(Err(Refused::Conflict)) => conflict("Operation with ID already exists"),
        Err(_) => stream_not_found(),
    }
}

/// The token a request carries: the header, else `?token=`.
pub fn token_of<B>(request: &Request<B>) -> Option<String> {
    if let Some(v) = request.headers().get(TOKEN_HEADER) {
        return Some(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// `extensions.operationId`, a string (or a number, as some clients send).
pub fn operation_id(request: &GraphqlRequest) -> Option<String> {
    match request.extensions.as_ref()?.get("operationId")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `PUT` answers the token as `text/plain`: `406` if that is not acceptable.
pub fn refuse_reservation(headers: &HeaderMap) -> Option<Response<Body>> {
    not_acceptable(headers, &["text/plain", "text/*", "*/*"])
}

/// An operation's `POST` is answered `202` or a JSON error.
pub fn refuse_operation_accept(headers: &HeaderMap) -> Option<Response<Body>> {
    not_acceptable(
        headers,
        &[
            "application/json",
            "application/graphql-response+json",
            "application/*",
            "*/*",
        ],
    )
}

fn not_acceptable(headers: &HeaderMap, acceptable: &[&str]) -> Option<Response<Body>> {
    let accept = headers.get(header::ACCEPT)?.to_str().unwrap_or("");
    (media::quality(accept, acceptable) == 0.0).then(|| {
        error::graphql_error(
            StatusCode::NOT_ACCEPTABLE,
            "BAD_REQUEST",
            &format!("this request answers one of {}", acceptable.join(", ")),
        )
    })
}

/// `201` with the token.
pub fn reserved(token: String) -> Response<Body> {
    let mut res = Response::new(body::full(token));
    *res.status_mut() = StatusCode::CREATED;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

pub fn stream_not_found() -> Response<Body> {
    error::graphql_error(StatusCode::NOT_FOUND, "BAD_REQUEST", "Stream not found")
}

pub fn operation_id_missing() -> Response<Body> {
    error::graphql_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "Operation ID is missing",
    )
}

fn conflict(message: &str) -> Response<Body> {
    error::graphql_error(StatusCode::CONFLICT, "BAD_REQUEST", message)
}

fn status(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(body::empty());
    *res.status_mut() = status;
    res
}
