//! The HTTP-stream subscribers of the realtime bench: GraphQL over SSE
//! (distinct connections) and Apollo multipart, opened with hand-written
//! HTTP/1.1 requests and read by the bench's epoll thread through a
//! [`Decoder`]. Minimal, but correct for what subcar writes: the
//! response head, chunked transfer coding, then SSE events (`\n`-ended
//! lines, a blank line dispatches) or multipart parts (each body one JSON
//! object), any of which may be split across reads and chunks.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP stream formats the bench subscribes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Multipart,
}

const QUERY: &str = "subscription { counter }";

/// The request that opens one stream of `framing` on `addr`.
fn request(framing: Framing, addr: SocketAddr) -> String {
    match framing {
        Framing::Sse => {
            let q: String = form_urlencoded::byte_serialize(QUERY.as_bytes()).collect();
            format!(
                "GET /graphql?query={q} HTTP/1.1\r\nhost: {addr}\r\n\
                 accept: text/event-stream\r\n\r\n"
            )
        }
        Framing::Multipart => {
            let body = serde_json::json!({ "query": QUERY }).to_string();
            format!(
                "POST /graphql HTTP/1.1\r\nhost: {addr}\r\n\
                 accept: multipart/mixed;subscriptionSpec=1.0\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    }
}

/// Opens one stream and reads until its first block (SSE's `:` comment,
/// multipart's `{}` part): subcar registers the subscription before it
/// answers, so from then on every event reaches this stream.
pub async fn connect(addr: SocketAddr, framing: Framing) -> (TcpStream, Decoder) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(request(framing, addr).as_bytes())
        .await
        .unwrap();
    let mut decoder = Decoder::new(framing);
    let mut buf = [0u8; 4096];
    while decoder.blocks == 0 {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "{framing:?} stream closed before it opened");
        let open = decoder.feed(&buf[..n], &mut |e| {
            panic!("an event before the stream opened: {e:?}")
        });
        assert!(open, "{framing:?} stream ended before it opened");
    }
    (stream, decoder)
}

/// Where the decoder is in the response.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Before the blank line that ends the response head.
    Head,
    /// In a chunk-size line.
    Size,
    /// This many bytes of chunk data to come.
    Data(usize),
    /// This many bytes of the CRLF after a chunk's data to come.
    DataEnd(usize),
    /// A body without chunked coding: it runs to the end of the connection.
    Identity,
    /// The last chunk or multipart's close delimiter arrived.
    Done,
}

/// One stream's incremental reader.
pub struct Decoder {
    framing: Framing,
    state: State,
    /// The unfinished head or chunk-size line.
    line: Vec<u8>,
    /// Body bytes of an event or part that has not fully arrived.
    partial: Vec<u8>,
    /// Complete events or parts seen, heartbeats included.
    pub blocks: u64,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            state: State::Head,
            line: Vec::new(),
            partial: Vec::new(),
            blocks: 0,
        }
    }

    /// Takes bytes read from the socket; calls `on_next` with the JSON of
    /// every complete `next` event (SSE `data`, the whole multipart part).
    /// `false` once the body has ended.
    pub fn feed(&mut self, mut data: &[u8], on_next: &mut impl FnMut(&[u8])) -> bool {
        while !data.is_empty() {
            match self.state {
                State::Head => {
                    self.line.extend_from_slice(data);
                    let Some(end) = memchr::memmem::find(&self.line, b"\r\n\r\n") else {
                        return true;
                    };
                    let chunked = self.head(&self.line[..end]);
                    let rest = self.line.split_off(end + 4);
                    self.line.clear();
                    self.state = if chunked {
                        State::Size
                    } else {
                        State::Identity
                    };
                    return self.feed(&rest, on_next);
                }
                State::Size => {
                    let Some(i) = memchr::memchr(b'\n', data) else {
                        self.line.extend_from_slice(data);
                        return true;
                    };
                    self.line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let hex = self.line.split(|&b| b == b';' || b == b'\r').next();
                    let size = std::str::from_utf8(hex.unwrap_or_default())
                        .ok()
                        .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                        .unwrap_or_else(|| panic!("a chunk size: {:?}", self.line));
                    self.line.clear();
                    self.state = if size == 0 {
                        State::Done
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let n = left.min(data.len());
                    if !self.body(&data[..n], on_next) {
                        return false;
                    }
                    data = &data[n..];
                    self.state = if n == left {
                        State::DataEnd(2)
                    } else {
                        State::Data(left - n)
                    };
                }
                State::DataEnd(left) => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    self.state = if n == left {
                        State::Size
                    } else {
                        State::DataEnd(left - n)
                    };
                }
                State::Identity => return self.body(data, on_next),
                State::Done => return false,
            }
        }
        !matches!(self.state, State::Done)
    }

    /// Checks the response head; whether its body is chunked.
    fn head(&self, head: &[u8]) -> bool {
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.1 200"),
            "{:?} stream refused: {head}",
            self.framing
        );
        head.lines().any(|l| {
            l.strip_prefix("transfer-encoding:")
                .is_some_and(|v| v.contains("chunked"))
        })
    }

    /// Body bytes: whole events or parts are handed on, the rest kept;
    /// `false` after multipart's close delimiter.
    fn body(&mut self, data: &[u8], on_next: &mut impl FnMut(&[u8])) -> bool {
        let mut pending = std::mem::take(&mut self.partial);
        let ended = if pending.is_empty() {
            let (used, end) = scan(self.framing, data, &mut self.blocks, on_next);
            pending.extend_from_slice(&data[used..]);
            end
        } else {
            pending.extend_from_slice(data);
            let (used, end) = scan(self.framing, &pending, &mut self.blocks, on_next);
            pending.drain(..used);
            end
        };
        self.partial = pending;
        if ended {
            self.state = State::Done;
        }
        !ended
    }
}

/// The complete events or parts at the start of `buf`: how many bytes they
/// took, and whether multipart's close delimiter followed them.
fn scan(
    framing: Framing,
    buf: &[u8],
    blocks: &mut u64,
    on_next: &mut impl FnMut(&[u8]),
) -> (usize, bool) {
    match framing {
        Framing::Sse => (sse_events(buf, blocks, on_next), false),
        Framing::Multipart => multipart_parts(buf, blocks, on_next),
    }
}

/// SSE as subcar writes it: `\n`-ended lines, a blank line dispatches the
/// event; comments (`:`) and `id:` lines are skipped; an event counts when
/// its `event:` is `next`.
fn sse_events(buf: &[u8], blocks: &mut u64, on_next: &mut impl FnMut(&[u8])) -> usize {
    let (mut used, mut at) = (0, 0);
    let (mut next, mut data) = (false, None);
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let line = &buf[at..at + i];
        at += i + 1;
        if line.is_empty() {
            *blocks += 1;
            if let (true, Some(d)) = (next, data) {
                on_next(d);
            }
            (next, data, used) = (false, None, at);
        } else if line == b"event: next" {
            next = true;
        } else if let Some(d) = line.strip_prefix(b"data: ") {
            data = Some(d);
        }
    }
    used
}

const DELIMITER: &[u8] = b"\r\n--graphql";
/// A part's delimiter and headers exactly as subcar writes them.
const PART_HEAD: &[u8] = b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n";

/// Multipart as Apollo clients read it: a delimiter, part headers, a blank
/// line, one JSON object. A part ends where the next delimiter starts; the
/// last one in the buffer is whole when its object closes, so it counts
/// without waiting for the next delimiter (a heartbeat's, seconds later).
/// Payload parts start `{"payload"`; heartbeats are `{}`.
fn multipart_parts(buf: &[u8], blocks: &mut u64, on_next: &mut impl FnMut(&[u8])) -> (usize, bool) {
    // Built once: the reader thread looks for a delimiter per delivery.
    static NEXT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(DELIMITER));
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < DELIMITER.len() + 2 {
            return (at, false);
        }
        assert!(
            rest.starts_with(DELIMITER),
            "not a part: {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(64)])
        );
        if rest[DELIMITER.len()..].starts_with(b"--") {
            return (at, true);
        }
        let head = if rest.starts_with(PART_HEAD) {
            PART_HEAD.len()
        } else {
            match memchr::memmem::find(rest, b"\r\n\r\n") {
                Some(i) => i + 4,
                None => return (at, false),
            }
        };
        let body = &rest[head..];
        let len = match NEXT.find(body) {
            Some(len) => len,
            None => match json_len(body) {
                Some(len) => len,
                None => return (at, false),
            },
        };
        *blocks += 1;
        if body.starts_with(br#"{"payload""#) {
            on_next(&body[..len]);
        }
        at += head + len;
    }
}

/// The length of the JSON object or array at the start of `body`, if it
/// has fully arrived (brackets inside strings do not count).
fn json_len(body: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1).expect("balanced JSON");
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The event number in `…{"counter":N}…` (subcar's SSE events also carry
/// `"extensions":{"cursor":…}` after it).
pub fn counter_of(json: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""counter":"#;
    // Built once: the reader thread calls this for every delivery.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let start = FINDER.find(json)? + KEY.len();
    let digits = json[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&json[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// Checks the decoder on subcar's framing split at every byte, so that
/// a bench run cannot miscount silently (`--self-test`).
pub fn self_test() {
    let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
    let event = |id: u32, n: u32| {
        format!(
            "id: {id}\nevent: next\ndata: {{\"data\":{{\"counter\":{n}}},\"extensions\":{{\"cursor\":\"{id}\"}}}}\n\n"
        )
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let sse = [
        head.to_owned(),
        chunk(":\n\n"),
        chunk(&(event(17, 0) + &event(18, 1))),
        chunk("event: complete\ndata: null\n\n"),
        "0\r\n\r\n".to_owned(),
    ]
    .concat();
    let part =
        |json: &str| format!("\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{json}");
    let multipart = [
        head.to_owned(),
        chunk(&part("{}")),
        chunk(
            &(part(r#"{"payload":{"data":{"counter":0}}}"#)
                + &part(r#"{"payload":{"data":{"counter":1}}}"#)),
        ),
        chunk(
            &(part(r#"{"payload":null,"errors":[{"message":"} \"{"}]}"#) + "\r\n--graphql--\r\n"),
        ),
        "0\r\n\r\n".to_owned(),
    ]
    .concat();
    for (framing, wire) in [(Framing::Sse, sse), (Framing::Multipart, multipart)] {
        let wire = wire.as_bytes();
        for split in 0..wire.len() {
            let mut d = Decoder::new(framing);
            let mut seen = Vec::new();
            let mut on = |e: &[u8]| seen.extend(counter_of(e));
            d.feed(&wire[..split], &mut on);
            assert!(!d.feed(&wire[split..], &mut on), "{framing:?} ends");
            assert_eq!(seen, [0, 1], "{framing:?} split at {split}");
            assert_eq!(d.blocks, 4, "{framing:?} split at {split}");
        }
    }
}
