//! Resume from a cursor: what a client asks for ([`Resume`]) and the state
//! of a subscription while its missed events are replayed ([`Resuming`]):
//! live payloads wait until the replay is sent, and a cursor drops what
//! both the replay and the live stream carried, so none arrives twice.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::bus::{Cursor, InvalidCursor, Replay};
use crate::subscriptions::dispatcher::with_cursor;
use crate::subscriptions::filter::PreparedEvent;
use crate::subscriptions::outbox::Delivery;
use crate::subscriptions::registry::Group;

/// What a subscription asks for about cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// No cursors.
    #[default]
    Off,
    /// Start now, and send each event's cursor.
    Now,
    /// First the missed events after this cursor, then live; with cursors.
    After(Cursor),
}

/// An `extensions.resume` that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("extensions.resume must be an object")]
    NotAnObject,
    #[error("extensions.resume has an unknown key {0:?}")]
    UnknownKey(String),
    #[error("extensions.resume.after: {0}")]
    Cursor(#[source] InvalidCursor),
    #[error("extensions.resume.after must be a cursor string")]
    NotAString,
}

impl Resume {
    /// `extensions.resume` of a socket's `subscribe`: absent, `{}` (start
    /// now, send cursors) or `{"after": "<cursor>"}`.
    pub fn from_extensions(extensions: Option<&Map<String, Value>>) -> Result<Self, ResumeError> {
        let Some(resume) = extensions.and_then(|e| e.get("resume")) else {
            return Ok(Self::Off);
        };
        let Value::Object(r) = resume else {
            return Err(ResumeError::NotAnObject);
        };
        if let Some(k) = r.keys().find(|k| *k != "after") {
            return Err(ResumeError::UnknownKey(k.clone()));
        }
        match r.get("after") {
            None | Some(Value::Null) => Ok(Self::Now),
            Some(Value::String(c)) => c
                .parse::<Cursor>()
                .map(Self::After)
                .map_err(ResumeError::Cursor),
            Some(_) => Err(ResumeError::NotAString),
        }
    }

    pub fn is_on(self) -> bool {
        self != Self::Off
    }
}

/// What to do with a live delivery for a resuming subscription.
pub(super) enum Admit {
    Send(Delivery),
    Hold,
    Overflow,
}

/// A subscription that asked for cursors.
pub(super) struct Resuming {
    /// `Some` while the replay of missed events is being fetched; live
    /// deliveries wait here meanwhile.
    pub(super) buffer: Option<Vec<Delivery>>,
    /// The newest cursor sent (or the client's own): live deliveries at or
    /// before it were covered by the replay and are dropped.
    last: Option<Cursor>,
}

impl Resuming {
    pub(super) fn new(resume: Resume) -> Self {
        let (buffer, last) = match resume {
            Resume::After(c) => (Some(Vec::new()), Some(c)),
            Resume::Now | Resume::Off => (None, None),
        };
        Self { buffer, last }
    }

    /// The newest cursor sent (or the client's own, before any).
    pub(super) fn last(&self) -> Option<Cursor> {
        self.last
    }

    /// `limit`: live deliveries held while the replay is fetched, at most.
    pub(super) fn admit(&mut self, d: Delivery, limit: usize) -> Admit {
        // Planned before this member was registered: the replay covers it.
        let Some(cursor) = d.cursor else {
            return Admit::Hold;
        };
        if let Some(buffer) = &mut self.buffer {
            if buffer.len() >= limit {
                return Admit::Overflow;
            }
            buffer.push(d);
            return Admit::Hold;
        }
        if self.last.is_some_and(|l| cursor <= l) {
            return Admit::Hold;
        }
        self.last = Some(cursor);
        Admit::Send(d)
    }

    /// The replayed events that pass `group`'s filter, then the live ones
    /// held meanwhile that are newer, in order, as `(payload, cursor)`; the
    /// subscription is live afterwards.
    pub(super) fn replayed(
        &mut self,
        group: &Group,
        replay: Replay,
    ) -> Option<Vec<(Bytes, Cursor)>> {
        let Replay::Events(events) = replay else {
            return None;
        };
        let held = self.buffer.take().unwrap_or_default();
        let mut out = Vec::with_capacity(events.len() + held.len());
        for (cursor, event) in &events {
            if self.last.is_some_and(|l| *cursor <= l) {
                continue;
            }
            self.last = Some(*cursor);
            // The same filter → project as live events, with the group's
            // own filter variables.
            if let Some(p) = group.payload(&PreparedEvent::new(&event.payload), &event.payload) {
                out.push((with_cursor(&p, *cursor), *cursor));
            }
        }
        for d in held {
            if let Admit::Send(d) = self.admit(d, usize::MAX) {
                let cursor = d.cursor.expect("admitted deliveries carry a cursor");
                out.push((d.payload, cursor));
            }
        }
        Some(out)
    }
}
