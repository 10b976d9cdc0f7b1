//! subcar: a sidecar that adds GraphQL subscriptions to an existing GraphQL API.
//!
//! ```text
//! client ─HTTP─▶ server/ ─▶ router ─┬─ query/mutation ─▶ [layers] ─▶ proxy/ ──────────▶ upstream
//!                                    ├─ WebSocket upgrade ─▶ [layers] ─▶ transport/ ◀── deliveries ──┐
//! upstream ─POST─▶ ingest/ ─▶ bus/ ─▶ subscriptions/dispatcher ─▶ subscriptions/registry ─────────────┘
//!                                         ├── graphql/ (validate, project, filter; pure)
//!                                         └── subscriptions/enrich ─▶ upstream (key-only events completed per group)
//! ```
//!
//! [`app`] is the composition root; everything else is one stage of the flow.

pub mod app;
pub mod auth;
pub mod body;
pub mod bus;
pub mod cli;
pub mod config;
pub mod error;
pub mod graphql;
pub mod health;
pub mod ingest;
pub mod init;
pub mod layers;
pub mod log_limit;
pub mod media;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod schema;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod subscriptions;
pub mod transport;
