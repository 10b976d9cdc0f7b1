//! [`Tee`]: a mutation's response body passed to the client frame by frame
//! as it arrives, with a copy kept for its triggers. The copy shares the
//! frames' bytes (`Bytes` clones) and is handed over once the body ends; a
//! client that stops reading early leaves the rest to the trigger task,
//! which reads it to the end (the mutation ran either way).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Answer, Caller, MAX_RESPONSE_BYTES, Sent, Triggers};
use crate::graphql::Schema;
use crate::http::body::{self, Body, BoxError};

/// The response body of a mutation with triggers.
pub struct Tee {
    inner: Body,
    /// `None` once handed over.
    pending: Option<Pending>,
}

/// What the trigger task gets when the body ends.
struct Pending {
    triggers: Arc<Triggers>,
    schema: Arc<Schema>,
    sent: Sent,
    caller: Caller,
    idempotency_key: Option<String>,
    chunks: Vec<Bytes>,
    size: usize,
}

impl Tee {
    pub fn new(
        inner: Body,
        triggers: Arc<Triggers>,
        (schema, sent): (Arc<Schema>, Sent),
        caller: Caller,
        idempotency_key: Option<String>,
    ) -> Self {
        Self {
            inner,
            pending: Some(Pending {
                triggers,
                schema,
                sent,
                caller,
                idempotency_key,
                chunks: Vec::new(),
                size: 0,
            }),
        }
    }

    fn hand_over(&mut self, answer: impl FnOnce(Vec<Bytes>) -> Answer) {
        if let Some(p) = self.pending.take() {
            let answer = answer(p.chunks);
            p.triggers
                .judge(p.schema, p.sent, answer, p.caller, p.idempotency_key);
        }
    }
}

fn joined(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), self.pending.as_mut()) {
                    p.size += data.len();
                    p.chunks.push(data.clone());
                    if p.size > MAX_RESPONSE_BYTES {
                        self.hand_over(|_| Answer::Unreadable("the answer is larger than 16 MiB"));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.hand_over(|_| Answer::Unreadable("the answer failed while it was read"));
            }
            Poll::Ready(None) => self.hand_over(|chunks| Answer::Complete(joined(chunks))),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.pending.is_none() {
            return;
        }
        // A body whose last frame was read but not polled past, or one the
        // client left: the task reads what is left.
        let rest = std::mem::replace(&mut self.inner, body::empty());
        self.hand_over(|chunks| Answer::Partial(chunks, rest));
    }
}
