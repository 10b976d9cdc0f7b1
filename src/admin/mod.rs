//! The room for operations: what operators and orchestrators read and do
//! while subcar runs. Health and readiness ([`health`], answered by
//! [`probes`]), `/status` ([`status`]), the copy of live state into
//! `/metrics` ([`sampler`]), configuration reload on SIGHUP ([`reload`]),
//! schema refresh ([`refresh`]),
//! the order a running subcar stops in ([`drain`]) and the admin listener's
//! routes ([`AdminRouter`]).

pub mod drain;
pub mod health;
pub mod probes;
pub mod refresh;
pub mod reload;
mod router;
pub mod sampler;
pub mod status;

pub use router::AdminRouter;
