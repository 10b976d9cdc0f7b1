//! HTTP plumbing every stage shares and that depends on no stage: the one
//! body type and `Accept` negotiation.

pub mod body;
pub mod media;
