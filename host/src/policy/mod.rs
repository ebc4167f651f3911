//! What the operator grants: plain data that the flags of `capbroker run`
//! ([`flags`], and wasmtime's spellings of them, [`spellings`]) and a
//! `capbroker.toml` ([`manifest`]) both make, validated
//! once into a [`Config`] whose directories are opened once; what learning
//! mode writes ([`learned`]); and the checks that no grant reaches what the
//! broker reads or writes for the operator ([`reach`]). What can be wrong
//! with any of it is an [`Error`].

pub mod config;
pub mod error;
pub mod flags;
pub mod learned;
pub mod manifest;
pub mod reach;
pub mod route;
pub mod spellings;

pub use config::{Config, ManifestSource};
pub use error::{BadFlag, Error, Refusal};
pub use manifest::{LimitsTable, Policy};
pub use spellings::Spellings;
