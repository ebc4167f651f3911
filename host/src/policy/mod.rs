//! What the operator grants: from the flags of `capbroker run`
//! ([`flags`]) or a `capbroker.toml` ([`manifest`]), and what learning
//! mode writes ([`learned`]).

pub mod flags;
pub mod learned;
pub mod manifest;
