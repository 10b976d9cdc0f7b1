//! The bodies of the fuzz targets, shared with `tests/fuzz_regressions.rs`
//! (which includes this file) so that every crash input found by a
//! fuzzer is replayed by `cargo test` exactly as the fuzzer ran it.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use std::sync::LazyLock;
use subcar::config::Config;
use subcar::graphql::GraphQLError;
use subcar::graphql::{Prepared, Schema};
use subcar::ingest::parse::{self, Format};
use subcar::ingest::signature::Verifier;
use subcar::transport::legacy_protocol::{LegacyFrame, LegacyMessage, MAX_REASON};
use subcar::transport::protocol::{
    ClientMessage, CloseCode, Frame, MAX_CLOSE_REASON, Outbound, TextMessage,
};

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::build(
        include_str!("../../tests/fixtures/graphql/subscriptions.graphql"),
        Some(include_str!(
            "../../tests/fixtures/graphql/upstream.graphql"
        )),
    )
    .expect("the fixture schema builds")
});

const NOW: u64 = 1_700_000_000;

static VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());

/// Fuzzes the parsing of graphql-transport-ws text frames into
/// `ClientMessage` (what a client sends over the socket), and the server
/// frames built from what was parsed.
pub fn ws_client_message(data: &[u8]) {
    let msg = match ClientMessage::parse(data) {
        Ok(msg) => msg,
        Err(reason) => {
            // The reason becomes a 4400 close frame: it must fit one.
            let Outbound::Close(_, cut) = Outbound::close(CloseCode::BadRequest, reason) else {
                unreachable!()
            };
            assert!(cut.len() <= MAX_CLOSE_REASON);
            return;
        }
    };
    // A parsed message round-trips through the frames the session answers with.
    match &msg {
        ClientMessage::Subscribe { id, payload } => {
            assert!(!id.is_empty());
            let err = Frame::error(id, &[GraphQLError::new(payload.query.clone())]);
            serde_json::from_slice::<serde_json::Value>(err.as_bytes())
                .expect("error frame is JSON");
            let next = Frame::next(id, b"{\"data\":null}");
            serde_json::from_slice::<serde_json::Value>(next.as_bytes())
                .expect("next frame is JSON");
            let done = Frame::complete(id);
            serde_json::from_slice::<serde_json::Value>(done.as_bytes())
                .expect("complete frame is JSON");
        }
        ClientMessage::Complete { id } => assert!(!id.is_empty()),
        ClientMessage::Ping { payload } | ClientMessage::Pong { payload } => {
            let pong = Frame::pong(payload.as_ref());
            serde_json::from_slice::<serde_json::Value>(pong.as_bytes())
                .expect("pong frame is JSON");
        }
        ClientMessage::ConnectionInit { .. } => {}
    }
}

/// Fuzzes the parsing of legacy `graphql-ws` text frames into
/// `LegacyMessage`, and the frames answered: every reason said back is
/// bounded, every frame is JSON.
pub fn legacy_client_message(data: &[u8]) {
    let json = |f: &Frame| {
        serde_json::from_slice::<Value>(f.as_bytes()).expect("a legacy frame is JSON");
    };
    match LegacyMessage::parse(data) {
        Err(reason) => {
            assert!(reason.len() <= MAX_REASON);
            json(&LegacyFrame::connection_error(&reason));
        }
        Ok(LegacyMessage::Start { id, payload }) => {
            assert!(!id.is_empty());
            json(&LegacyFrame::data(&id, b"{\"data\":null}"));
            json(&LegacyFrame::error(
                Some(&id),
                &GraphQLError::new(payload.query),
            ));
            json(&Frame::complete(&id));
        }
        Ok(LegacyMessage::Refused { id, reason }) => {
            assert!(reason.len() <= MAX_REASON);
            json(&LegacyFrame::error(
                id.as_deref(),
                &GraphQLError::new(reason),
            ));
        }
        Ok(LegacyMessage::Stop { id }) => assert!(!id.is_empty()),
        Ok(LegacyMessage::ConnectionInit { .. } | LegacyMessage::ConnectionTerminate) => {}
    }
}

/// Fuzzes the GraphQL document pipeline a subscribe message goes through:
/// parse → validate → coerce variables → plan, then the projection of an
/// event payload, against the test schema (tests/fixtures/graphql).
///
/// Input: `<document> \0 <variables JSON object> \0 <event payload JSON>`;
/// missing parts are empty.
pub fn document(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let Ok(query) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let variables: Map<String, Value> = parts
        .next()
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    // An operation name taken from the document's first named operation
    // reaches the selection of one among several.
    let operation_name = query
        .split_whitespace()
        .skip_while(|w| !matches!(*w, "query" | "mutation" | "subscription"))
        .nth(1)
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .filter(|w| !w.is_empty());
    for name in [None, operation_name] {
        if let Ok(Prepared::Subscription(sub)) = SCHEMA.prepare(query, name, &variables) {
            let out = sub.project_bytes(payload);
            serde_json::from_slice::<Value>(&out).expect("a projection is JSON");
            let _ = sub.group_key();
        }
    }
}

/// Fuzzes what the webhook does with a request before the bus: the
/// Content-Type choice, the Standard Webhooks signature headers and the
/// JSON / NDJSON body parse.
///
/// Input: header lines `name: value\n` up to the first `\0`, then the body.
/// A `content-type` line chooses the format (JSON when absent); when the
/// first byte is odd the request is signed correctly with its own
/// `webhook-id` / `webhook-timestamp`, so the body parse is reached after a
/// successful verification too.
pub fn webhook_body(data: &[u8]) {
    let Some(&flags) = data.first() else {
        return;
    };
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[1.min(i)..i], &data[i + 1..]),
        None => (&data[1..], &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n').take(32) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if flags & 1 == 1 {
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("msg_fuzz")
            .to_owned();
        let ts = headers
            .get("webhook-timestamp")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(NOW);
        let sig = VERIFIER.sign(&id, ts, body);
        if let Ok(v) = HeaderValue::from_str(&id) {
            headers.insert("webhook-id", v);
        }
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        headers.insert("webhook-signature", HeaderValue::from_str(&sig).unwrap());
        if ts.abs_diff(NOW) <= subcar::ingest::signature::TOLERANCE_SECS
            && ts.to_string() == headers["webhook-timestamp"].to_str().unwrap()
        {
            VERIFIER
                .verify(&headers, body, NOW)
                .expect("a request signed with the secret verifies");
        }
    } else {
        let _ = VERIFIER.verify(&headers, body, NOW);
    }
    let format = match headers.get("content-type").map(|v| v.to_str()) {
        None => Format::Json,
        Some(Ok(ct)) => match Format::from_content_type(ct) {
            Some(f) => f,
            None => return,
        },
        Some(Err(_)) => return,
    };
    let header_id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    match parse::parse(body, format, header_id) {
        Ok(events) => {
            assert!(!events.is_empty(), "an accepted body holds an event");
            for e in &events {
                assert!(!e.topic.is_empty());
                assert!(e.id.as_deref().is_none_or(|id| !id.is_empty()));
            }
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
}

/// Fuzzes configuration loading: TOML text plus `SUBCAR_<SECTION>__<KEY>`
/// environment overrides through the pure `Config::parse`.
///
/// Input: `<TOML> \0 <NAME=value lines>`; names without the `SUBCAR_`
/// prefix get it, so most lines are overrides.
pub fn config(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let env: Vec<(String, String)> = parts
        .next()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default()
        .lines()
        .take(16)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = if k.starts_with("SUBCAR_") {
                k.to_owned()
            } else {
                format!("SUBCAR_{k}")
            };
            (k, v.to_owned())
        })
        .collect();
    if let Ok(config) = Config::parse(text, env) {
        // What `check` and `/status` print must not panic either.
        let _ = format!("{config:?}");
    }
}

/// Fuzzes what an HTTP stream request is read from: its `Accept` header (the
/// first line), as media ranges and as the stream format negotiated, and a
/// `GET` query string (the rest), as the request and as a `Last-Event-ID`.
pub fn stream_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (accept, query) = text.split_once('\n').unwrap_or((&text, ""));
    let ranges = subcar::http::media::parse(accept);
    // Each range comes from its own part of the header.
    assert!(ranges.len() <= accept.len() + 1);
    for r in &ranges {
        assert!(r.media.len() <= accept.len());
    }
    if let Ok(value) = HeaderValue::from_str(accept) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, value);
        let _ = subcar::transport::stream::negotiate(&headers);
    }
    if let Ok(request) = subcar::transport::stream::of_query_string(query) {
        assert!(request.query.len() <= query.len());
    }
    if let Ok(cursor) = query.parse::<subcar::bus::Cursor>() {
        // A cursor prints back as what parses to it.
        assert_eq!(
            cursor.to_string().parse::<subcar::bus::Cursor>(),
            Ok(cursor)
        );
    }
}
