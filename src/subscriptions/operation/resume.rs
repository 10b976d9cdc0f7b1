//! Resume from a cursor or a time: what a client asks for ([`Resume`]) and the state
//! of a subscription while its missed events are replayed ([`Resuming`]):
//! live payloads wait until the replay is sent, and a cursor drops what
//! both the replay and the live stream carried, so none arrives twice.

use std::time::SystemTime;

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
    /// First the retained events published at or after this time, then
    /// live; with cursors.
    Since(SystemTime),
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
    #[error("since: {0:?} is not an RFC 3339 time (such as \"2024-05-01T12:00:00Z\")")]
    Time(String),
    #[error("extensions.resume takes either after or since, not both")]
    Both,
}

/// An RFC 3339 time: `Z` or a numeric offset, fractions of a second allowed.
pub fn parse_since(text: &str) -> Result<SystemTime, ResumeError> {
    let bad = || ResumeError::Time(text.to_owned());
    let text = text.trim();
    // humantime reads UTC only: a numeric offset is taken off by hand.
    // `split_at_checked`: six bytes from the end may fall inside a character.
    let (utc, offset) = match text
        .len()
        .checked_sub(6)
        .and_then(|i| text.split_at_checked(i))
    {
        Some((base, off))
            if off.len() == 6
                && (off.starts_with('+') || off.starts_with('-'))
                && off.as_bytes()[3] == b':' =>
        {
            let minutes = |s: &str| s.parse::<u64>().map_err(|_| bad());
            let secs = minutes(&off[1..3])? * 3600 + minutes(&off[4..6])? * 60;
            (format!("{base}Z"), Some((off.starts_with('+'), secs)))
        }
        _ => (text.to_owned(), None),
    };
    if !utc.ends_with(['Z', 'z']) {
        return Err(bad());
    }
    let at = humantime::parse_rfc3339(&utc.replace('z', "Z")).map_err(|_| bad())?;
    let shift = |secs| std::time::Duration::from_secs(secs);
    Ok(match offset {
        Some((true, secs)) => at.checked_sub(shift(secs)).ok_or_else(bad)?,
        Some((false, secs)) => at.checked_add(shift(secs)).ok_or_else(bad)?,
        None => at,
    })
}

impl Resume {
    /// `extensions.resume` of a socket's `subscribe`: absent, `{}` (start
    /// now, send cursors), `{"after": "<cursor>"}` or `{"since": "<RFC
    /// 3339 time>"}`.
    pub fn from_extensions(extensions: Option<&Map<String, Value>>) -> Result<Self, ResumeError> {
        let Some(resume) = extensions.and_then(|e| e.get("resume")) else {
            return Ok(Self::Off);
        };
        let Value::Object(r) = resume else {
            return Err(ResumeError::NotAnObject);
        };
        if let Some(k) = r.keys().find(|k| *k != "after" && *k != "since") {
            return Err(ResumeError::UnknownKey(k.clone()));
        }
        let given = |k| r.get(k).is_some_and(|v| !v.is_null());
        if given("since") {
            if given("after") {
                return Err(ResumeError::Both);
            }
            return match &r["since"] {
                Value::String(t) => parse_since(t).map(Self::Since),
                other => Err(ResumeError::Time(other.to_string())),
            };
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
            Resume::Since(_) => (Some(Vec::new()), None),
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
    /// subscription is live afterwards. A history that no longer reaches
    /// back is the error that ends the subscription.
    pub(super) fn replayed(
        &mut self,
        group: &Group,
        replay: Replay,
    ) -> Result<Vec<(Bytes, Cursor)>, super::OperationError> {
        let events = match replay {
            Replay::Events(events) => events,
            Replay::Expired => return Err(super::OperationError::CursorExpired),
            Replay::TooOld { oldest } => {
                return Err(super::OperationError::SinceExpired {
                    oldest: oldest.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                });
            }
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
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn resume(v: Value) -> Result<Resume, ResumeError> {
        let ext = json!({ "resume": v });
        Resume::from_extensions(ext.as_object())
    }

    #[test]
    fn since_reads_rfc3339_with_any_offset() {
        let at = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        for text in [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.000Z",
            "2024-05-01T14:00:00+02:00",
            "2024-05-01T09:30:00-02:30",
        ] {
            assert_eq!(
                resume(json!({ "since": text })),
                Ok(Resume::Since(at)),
                "{text}"
            );
        }
        for bad in [
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+2",
            // Six bytes from the end fall inside a character (this
            // panicked) or a multi-byte character stands in the offset.
            "\u{e9}\u{e9}\u{e9}x",
            "2024-05-01T12:00:00+0\u{e9}00",
        ] {
            assert_eq!(
                resume(json!({ "since": bad })),
                Err(ResumeError::Time(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            resume(json!({ "since": 5 })),
            Err(ResumeError::Time("5".into()))
        );
        assert_eq!(
            resume(json!({ "since": "2024-05-01T12:00:00Z", "after": "3" })),
            Err(ResumeError::Both)
        );
        assert_eq!(resume(json!({ "since": null })), Ok(Resume::Now));
    }
}
