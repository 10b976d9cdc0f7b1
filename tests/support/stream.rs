//! HTTP stream readers for the SSE and multipart tests: an event-stream
//! parser as the SSE spec reads one (fields, comments, blank-line
//! dispatch) and a multipart reader as Apollo clients split parts.

use std::time::Duration;

use serde_json::Value;

use super::PATIENCE;

/// One dispatched SSE event, or a comment line (`:` heartbeats).
#[derive(Debug, Clone, PartialEq)]
pub enum Sse {
    Event {
        id: Option<String>,
        event: String,
        data: String,
    },
    Comment,
}

impl Sse {
    /// The event's data as JSON (`null` for none).
    pub fn json(&self) -> Value {
        match self {
            Sse::Event { data, .. } => serde_json::from_str(data).unwrap_or(Value::Null),
            Sse::Comment => Value::Null,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Sse::Event { event, .. } => event,
            Sse::Comment => ":",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Sse::Event { id, .. } => id.as_deref(),
            Sse::Comment => None,
        }
    }
}

/// A response body read incrementally.
pub struct StreamReader {
    pub response_status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    res: reqwest::Response,
    buf: Vec<u8>,
    ended: bool,
}

impl StreamReader {
    pub async fn new(res: reqwest::Response) -> Self {
        Self {
            response_status: res.status(),
            headers: res.headers().clone(),
            res,
            buf: Vec::new(),
            ended: false,
        }
    }

    /// More bytes, or `false` at the end of the body.
    async fn fill(&mut self, wait: Duration) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout(wait, self.res.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                self.buf.extend_from_slice(&chunk);
                true
            }
            Ok(_) => {
                self.ended = true;
                false
            }
            Err(_) => panic!(
                "nothing arrived within {wait:?}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next SSE event or comment; `None` when the stream ended.
    pub async fn sse(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 events");
                return Some(parse_sse_block(text.trim_end_matches('\n')));
            }
            if !self.fill(PATIENCE).await {
                assert!(
                    self.buf.is_empty(),
                    "a partial event at the end: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    /// The next SSE event, skipping heartbeat comments.
    pub async fn event(&mut self) -> Option<Sse> {
        loop {
            match self.sse().await? {
                Sse::Comment => continue,
                e => return Some(e),
            }
        }
    }

    /// The next multipart part's JSON body (heartbeats `{}` included);
    /// `None` after the close delimiter and the end of the body.
    pub async fn part(&mut self) -> Option<Value> {
        const BOUNDARY: &[u8] = b"\r\n--graphql";
        loop {
            if self.buf.starts_with(b"\r\n--graphql--\r\n") {
                self.buf.drain(..15);
                while self.fill(PATIENCE).await {}
                assert!(self.buf.is_empty(), "bytes after the close delimiter");
                return None;
            }
            if self.buf.starts_with(BOUNDARY) {
                // A part ends where the next boundary starts.
                if let Some(next) = find(&self.buf[BOUNDARY.len()..], BOUNDARY) {
                    let part: Vec<u8> = self.buf.drain(..BOUNDARY.len() + next).collect();
                    let part = String::from_utf8(part).expect("UTF-8 parts");
                    let (head, body) = part[BOUNDARY.len()..]
                        .split_once("\r\n\r\n")
                        .expect("a part has headers and a body");
                    assert_eq!(head.trim(), "content-type: application/json", "{part:?}");
                    return Some(serde_json::from_str(body).expect("a JSON part"));
                }
            } else if self.buf.len() >= BOUNDARY.len() {
                panic!("not a part: {:?}", String::from_utf8_lossy(&self.buf));
            }
            if !self.fill(PATIENCE).await {
                panic!(
                    "the body ended without the close delimiter: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// The next part that is not a heartbeat.
    pub async fn payload_part(&mut self) -> Option<Value> {
        loop {
            match self.part().await? {
                Value::Object(m) if m.is_empty() => continue,
                v => return Some(v),
            }
        }
    }

    /// Whether the body ends within `wait` (bytes meanwhile are kept).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.ended {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(_) => self.ended = true,
                Err(_) => return false,
            }
        }
        true
    }

    pub fn buffered(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_sse_block(block: &str) -> Sse {
    let (mut id, mut event, mut data, mut fields) = (None, String::from("message"), Vec::new(), 0);
    for line in block.split('\n') {
        if line.starts_with(':') {
            continue;
        }
        fields += 1;
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "id" => id = Some(value.to_owned()),
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            other => panic!("unknown SSE field {other:?} in {block:?}"),
        }
    }
    if fields == 0 {
        return Sse::Comment;
    }
    Sse::Event {
        id,
        event,
        data: data.join("\n"),
    }
}

/// `method` to `url` with `headers` and, if given, a JSON body.
pub async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    json: Option<&Value>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = json {
        req = req.json(body);
    }
    req.send().await.expect("request sent")
}

/// A stream opened by [`send`].
pub async fn open(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    json: Option<&Value>,
) -> StreamReader {
    StreamReader::new(send(method, url, headers, json).await).await
}

/// The status of a GraphQL-shaped error response and its first error's
/// `extensions.code`.
pub async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("a JSON error body");
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned();
    (status, code)
}
