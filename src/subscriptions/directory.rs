//! Who is connected, on every transport: one entry per client, for
//! `GET /status/connections` and the audit log. Entries are written when a
//! client connects, authenticates, starts or stops a subscription and
//! leaves; never per event. Nothing secret is kept: the subject is the
//! `sub` claim, or the client's IP when there is none.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use super::outbox::Outbox;
use crate::metrics::Transport;

/// What a transport knows of its client when it connects.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The client's address (a trusted proxy's forwarded one when it sent it).
    pub ip: IpAddr,
    pub transport: Transport,
}

/// The connected clients, by id (connection order).
#[derive(Default)]
pub struct Directory {
    next: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

/// One client.
pub struct Entry {
    id: u64,
    client: ClientInfo,
    since: Instant,
    subject: Mutex<Option<String>>,
    /// Its subscriptions: operation id and field.
    subscriptions: Mutex<Vec<(String, String)>>,
    outbox: Outbox,
}

/// A client's place in the directory; dropping it removes the entry.
pub struct Listed {
    directory: Arc<Directory>,
    entry: Arc<Entry>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.directory.clients.lock().remove(&self.entry.id);
    }
}

impl Listed {
    pub fn client(&self) -> ClientInfo {
        self.entry.client
    }

    /// The `sub` claim, else the IP.
    pub fn subject(&self) -> String {
        self.entry
            .subject
            .lock()
            .clone()
            .unwrap_or_else(|| self.entry.client.ip.to_string())
    }

    pub fn set_subject(&self, sub: Option<String>) {
        *self.entry.subject.lock() = sub;
    }

    pub fn subscribed(&self, id: &str, field: &str) {
        self.entry
            .subscriptions
            .lock()
            .push((id.to_owned(), field.to_owned()));
    }

    /// The field of subscription `id`, which is no more.
    pub fn unsubscribed(&self, id: &str) -> Option<String> {
        let mut subs = self.entry.subscriptions.lock();
        let at = subs.iter().position(|(i, _)| i == id)?;
        Some(subs.remove(at).1)
    }

    /// Every subscription's field, the client being gone.
    pub fn take_all(&self) -> Vec<String> {
        std::mem::take(&mut *self.entry.subscriptions.lock())
            .into_iter()
            .map(|(_, field)| field)
            .collect()
    }
}

/// A page of `GET /status/connections`.
#[derive(Debug, Serialize)]
pub struct Page {
    pub total: usize,
    pub connections: Vec<Connection>,
    /// The `after` of the next page; `null` on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Connection {
    pub id: u64,
    pub ip: IpAddr,
    pub transport: &'static str,
    pub subject: String,
    pub age_seconds: u64,
    pub subscriptions: Vec<Subscription>,
    /// Payloads queued for it and not yet written.
    pub queue_depth: usize,
}

#[derive(Debug, Serialize)]
pub struct Subscription {
    pub id: String,
    pub field: String,
}

impl Directory {
    pub fn add(self: &Arc<Self>, client: ClientInfo, outbox: Outbox) -> Listed {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            client,
            since: Instant::now(),
            subject: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
            outbox,
        });
        self.clients.lock().insert(id, entry.clone());
        Listed {
            directory: self.clone(),
            entry,
        }
    }

    /// At most `limit` clients with ids after `after`, oldest first.
    pub fn page(&self, after: Option<u64>, limit: usize) -> Page {
        let clients = self.clients.lock();
        let start = after.map_or(0, |a| a + 1);
        let entries: Vec<Arc<Entry>> = clients
            .range(start..)
            .take(limit + 1)
            .map(|(_, e)| e.clone())
            .collect();
        let total = clients.len();
        drop(clients);
        let more = entries.len() > limit;
        let connections: Vec<Connection> = entries.iter().take(limit).map(|e| e.view()).collect();
        Page {
            total,
            next: more.then(|| connections.last().map(|c| c.id)).flatten(),
            connections,
        }
    }
}

impl Entry {
    fn view(&self) -> Connection {
        Connection {
            id: self.id,
            ip: self.client.ip,
            transport: self.client.transport.name(),
            subject: self
                .subject
                .lock()
                .clone()
                .unwrap_or_else(|| self.client.ip.to_string()),
            age_seconds: self.since.elapsed().as_secs(),
            subscriptions: self
                .subscriptions
                .lock()
                .iter()
                .map(|(id, field)| Subscription {
                    id: id.clone(),
                    field: field.clone(),
                })
                .collect(),
            queue_depth: self.outbox.depth(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientInfo {
        ClientInfo {
            ip: "10.0.0.1".parse().unwrap(),
            transport: Transport::sse,
        }
    }

    #[test]
    fn pages_walk_every_client_once_and_entries_leave_with_their_client() {
        let d = Arc::new(Directory::default());
        let listed: Vec<Listed> = (0..5)
            .map(|_| d.add(client(), crate::subscriptions::outbox::outbox(4).0))
            .collect();
        listed[1].set_subject(Some("alice".into()));
        listed[1].subscribed("s1", "incidentUpdated");
        let first = d.page(None, 2);
        assert_eq!((first.total, first.connections.len()), (5, 2));
        assert_eq!(first.connections[1].subject, "alice");
        assert_eq!(
            first.connections[1].subscriptions[0].field,
            "incidentUpdated"
        );
        assert_eq!(first.connections[0].subject, "10.0.0.1");
        let second = d.page(first.next, 2);
        let third = d.page(second.next, 2);
        assert_eq!(third.connections.len(), 1);
        assert_eq!(third.next, None);
        assert_eq!(
            listed[1].unsubscribed("s1").as_deref(),
            Some("incidentUpdated")
        );
        drop(listed);
        assert_eq!(d.page(None, 10).total, 0);
    }
}
