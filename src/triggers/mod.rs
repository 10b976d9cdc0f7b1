//! Events from mutations (`[[triggers]]`, SPEC section 4): subcar sees every
//! mutation it proxies, over HTTP ([`crate::proxy`]) and over sockets and
//! streams ([`crate::subscriptions::operation`]), and publishes an event for
//! each root field a trigger names once the upstream answered it with a
//! value and no error on its path.
//!
//! ```text
//! request ─▶ byte scan ─▶ upstream ─▶ answer: to the client as it is
//!                                    └ copy ─▶ (task) plan (root fields, coerced args)
//!                                                     ─▶ judge ─▶ payload (CEL) ─▶ bus
//! ```
//!
//! Nothing here can change the mutation's answer: the client gets the
//! upstream's bytes as they arrive, a copy is judged afterwards in a task of
//! the realtime drain group (the request's document is parsed there too,
//! not before the upstream call), and every failure (an unreadable answer, a CEL
//! error, a bus refusal) is logged and counted in
//! `subcar_trigger_failures_total{trigger,reason}`. A request whose
//! operation is not a mutation with a trigger costs a byte scan.

mod fire;
mod tee;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Authenticator;
use crate::bus::Bus;
use crate::config::TriggerConfig;
use crate::graphql::{RootField, Schema};
use crate::metrics::Metrics;
use crate::proxy::operation::contains;
use crate::shutdown::Shutdown;
use crate::subscriptions::filter::{Expression, FilterError};

pub use tee::Tee;

/// The most of a mutation's answer copied for its triggers (16 MiB); a
/// larger answer reaches the client whole and triggers nothing (counted as
/// `reason="response"`).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// One `[[triggers]]` entry, compiled.
struct Rule {
    topic: Arc<str>,
    payload: Expression,
    /// `mutation:topic`, the `trigger` label of its metrics.
    label: String,
    /// What identifies the rule in event ids: its mutation, topic and
    /// payload source, so ids do not depend on the order of the file.
    identity: String,
}

/// The compiled `[[triggers]]`, built with the application; shared by the
/// proxy and the operation core once running ([`Triggers::new`]).
#[derive(Default)]
pub struct TriggerRules {
    rules: Vec<Rule>,
    /// Rule indexes by mutation field.
    by_field: HashMap<String, Vec<usize>>,
}

impl TriggerRules {
    /// Compiles every `payload` (the cross-check has named every problem
    /// already; this fails only on what it let through).
    pub fn compile(configs: &[TriggerConfig]) -> Result<Self, FilterError> {
        let mut out = Self::default();
        for (i, c) in configs.iter().enumerate() {
            out.rules.push(Rule {
                topic: Arc::from(c.topic.as_str()),
                payload: Expression::compile(
                    &c.mutation,
                    &format!("triggers[{i}].payload"),
                    &c.payload,
                )?,
                label: format!("{}:{}", c.mutation, c.topic),
                identity: format!("{}\0{}\0{}", c.mutation, c.topic, c.payload),
            });
            out.by_field.entry(c.mutation.clone()).or_default().push(i);
        }
        Ok(out)
    }
}

/// The triggers of the running process: the rules and what firing them
/// needs. Cheap to share (`Arc`).
pub struct Triggers {
    rules: Arc<TriggerRules>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    /// Finds the claims of an HTTP client that no layer authenticated.
    authenticator: Arc<dyn Authenticator>,
    /// Where the judging tasks run: the realtime drain group, which
    /// outlives the requests that start them.
    tasks: Shutdown,
}

/// The root fields of one operation that some trigger names.
#[derive(Debug)]
pub struct Operation {
    /// Its position in a batched HTTP request; `None` for a single one.
    batch_index: Option<usize>,
    fields: Vec<RootField>,
    /// A digest of the operation as sent (document, operation name,
    /// variables): part of its events' ids.
    identity: String,
}

/// What one request's mutations may trigger.
#[derive(Debug)]
pub struct Plan {
    operations: Vec<Operation>,
    /// The answer is a JSON array (a batched request).
    batched: bool,
}

/// The request as sent, planned only once it has been answered.
pub enum Sent {
    /// An HTTP request body: a JSON request or batch (`json`), or an
    /// `application/graphql` document.
    Http { body: bytes::Bytes, json: bool },
    /// One operation of a socket or a stream.
    Operation {
        query: String,
        operation_name: Option<String>,
        variables: Map<String, Value>,
    },
}

impl Sent {
    fn size(&self) -> usize {
        match self {
            Self::Http { body, .. } => body.len(),
            Self::Operation { query, .. } => query.len(),
        }
    }
}

/// Who sent the mutation, for `claims` and event ids.
pub enum Caller {
    /// Its claims are known (a socket's, or checked by `auth.proxy = "require"`).
    Claims(Arc<Value>),
    /// An HTTP client nothing authenticated: its upstream-call headers,
    /// authenticated only if one of its triggers fires.
    Headers(HeaderMap),
}

/// A GraphQL-over-HTTP request item as triggers read it.
#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    query: Option<String>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
}

impl Triggers {
    pub fn new(
        rules: Arc<TriggerRules>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        authenticator: Arc<dyn Authenticator>,
        tasks: Shutdown,
    ) -> Self {
        for r in &rules.rules {
            metrics.seed_trigger(&r.label);
        }
        Self {
            rules,
            bus,
            metrics,
            authenticator,
            tasks,
        }
    }

    /// No triggers (tests that build the core by hand).
    pub fn none(bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> Self {
        Self::new(
            Arc::default(),
            bus,
            metrics,
            Arc::new(crate::auth::AllowAll),
            Shutdown::new(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.rules.rules.is_empty()
    }

    /// Whether `text` may hold a mutation of a field some trigger names: the
    /// byte scan every request pays. Escapes can hide a name from it, which
    /// only means no event (the operation itself is unaffected).
    pub fn may_trigger(&self, text: &[u8]) -> bool {
        !self.is_empty()
            && contains(text, b"mutation")
            && self
                .rules
                .by_field
                .keys()
                .any(|f| contains(text, f.as_bytes()))
    }

    /// What a single operation may trigger (a socket's or a stream's).
    pub fn plan_operation(
        &self,
        schema: &Schema,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
    ) -> Option<Plan> {
        let op = self.operation(schema, None, query, operation_name, variables)?;
        Some(Plan {
            operations: vec![op],
            batched: false,
        })
    }

    /// What an HTTP request body may trigger: a JSON request or batch
    /// (`json`), or an `application/graphql` document.
    pub fn plan_http(&self, schema: &Schema, body: &[u8], json: bool) -> Option<Plan> {
        if !self.may_trigger(body) {
            return None;
        }
        let empty = Map::new();
        if !json {
            let query = std::str::from_utf8(body).ok()?;
            return self.plan_operation(schema, query, None, &empty);
        }
        let (items, batched) = match serde_json::from_slice::<Item>(body) {
            Ok(item) => (vec![item], false),
            Err(_) => (serde_json::from_slice::<Vec<Item>>(body).ok()?, true),
        };
        let operations: Vec<Operation> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let query = item.query.as_deref()?;
                if !self.may_trigger(query.as_bytes()) {
                    return None;
                }
                let variables = item.variables.as_ref().unwrap_or(&empty);
                let at = batched.then_some(i);
                self.operation(schema, at, query, item.operation_name.as_deref(), variables)
            })
            .collect();
        (!operations.is_empty()).then_some(Plan {
            operations,
            batched,
        })
    }

    fn operation(
        &self,
        schema: &Schema,
        batch_index: Option<usize>,
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
    ) -> Option<Operation> {
        let wanted = |f: &str| self.rules.by_field.contains_key(f);
        let fields = schema.mutation_root_fields(query, operation_name, variables, &wanted)?;
        if fields.is_empty() {
            return None;
        }
        let identity = hex(&crate::bus::digest(
            b"trigger-operation",
            &format!(
                "{query}\0{}\0{}",
                operation_name.unwrap_or(""),
                Value::Object(variables.clone())
            ),
        ));
        Some(Operation {
            batch_index,
            fields,
            identity,
        })
    }

    /// What `sent` may trigger, against `schema`.
    fn plan(&self, schema: &Schema, sent: &Sent) -> Option<Plan> {
        match sent {
            Sent::Http { body, json } => self.plan_http(schema, body, *json),
            Sent::Operation {
                query,
                operation_name,
                variables,
            } => self.plan_operation(schema, query, operation_name.as_deref(), variables),
        }
    }

    /// Plans `sent` and judges the upstream's `answer` to it in a task of
    /// its own, and publishes what fires. `idempotency_key` is the
    /// client's `Idempotency-Key` header, when it sent one.
    pub fn judge(
        self: &Arc<Self>,
        schema: Arc<Schema>,
        sent: Sent,
        answer: Answer,
        caller: Caller,
        idempotency_key: Option<String>,
    ) {
        if tokio::runtime::Handle::try_current().is_err() {
            // A body dropped while the runtime itself goes away.
            tracing::warn!("mutation answered during shutdown; its triggers did not run");
            return;
        }
        let triggers = self.clone();
        self.tasks.spawn(async move {
            let planner = triggers.clone();
            // A large document is parsed off the async workers.
            let plan =
                crate::graphql::offload::run(sent.size(), move || planner.plan(&schema, &sent))
                    .await;
            if let Ok(Some(plan)) = plan {
                triggers.fire(plan, answer, caller, idempotency_key).await
            }
        });
    }
}

/// The upstream's answer to a planned request, as the trigger task gets it.
pub enum Answer {
    /// Read whole.
    Complete(bytes::Bytes),
    /// The client stopped reading: the part it had, and the rest of the
    /// body, which the task reads to its end.
    Partial(Vec<bytes::Bytes>, crate::http::body::Body),
    /// It could not be read (the reason is logged and counted).
    Unreadable(&'static str),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
