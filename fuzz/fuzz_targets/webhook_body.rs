//! Fuzzes what the webhook does with a request before the bus: the
//! Content-Type choice, the Standard Webhooks signature headers and the
//! JSON / NDJSON body parse.
//!
//! Input: header lines `name: value\n` up to the first `\0`, then the body.
//! A `content-type` line chooses the format (JSON when absent); when the
//! first byte is odd the request is signed correctly with its own
//! `webhook-id` / `webhook-timestamp`, so the body parse is reached after a
//! successful verification too.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use subcar::ingest::parse::{self, Format};
use subcar::ingest::signature::Verifier;

const NOW: u64 = 1_700_000_000;

static VERIFIER: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());

fuzz_target!(|data: &[u8]| {
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
        headers.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
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
});
