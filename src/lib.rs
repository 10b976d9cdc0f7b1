//! subcar: a sidecar that adds GraphQL subscriptions to an existing GraphQL API.
//!
//! ```text
//! client ─HTTP─▶ server/ ─▶ router ─┬─ query/mutation ─▶ [layers] ─▶ proxy/ ──────────▶ upstream
//!                                    ├─ WebSocket upgrade ─▶ [layers] ─▶ transport/ ◀── deliveries ──┐
//! upstream ─POST─▶ ingest/ ─▶ bus/ ─▶ subscriptions/dispatcher ─▶ subscriptions/registry ─────────────┘
//!                                         ├── graphql/ (validate, project, filter; pure)
//!                                         └── subscriptions/enrich ─▶ upstream (key-only events completed per group)
//! proxy/ and the operation core ── a mutation's answer (a copy) ─▶ triggers/ ─▶ bus/ (as a webhook event)
//! ```
//!
//! [`app`] is the composition root; everything else is one stage of the flow,
//! plus the rooms every stage shares: [`admin`] (health, readiness, status,
//! metrics sampling, reload, the admin listener's routes), [`shutdown`] (the
//! cancellation tree and the drain), [`http`] (the body type, `Accept`
//! negotiation) and [`log`] (logging helpers).

pub mod admin;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod error;
pub mod graphql;
pub mod http;
pub mod ingest;
pub mod init;
pub mod layers;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod shutdown;
pub mod subscriptions;
pub mod transport;
pub mod triggers;
