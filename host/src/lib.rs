//! capbroker: a capability broker for WebAssembly components.
//!
//! A component holds explicit handles (directories, network rights and
//! sockets, the right to spawn), derives weaker ones from them and drops
//! what it no longer needs; what it gives up it cannot get back. This
//! library is the host side, laid out as a house with a room per
//! capability kind (see `docs/architecture.md`):
//!
//! - [`core`]: what every kind shares (rights, errors, revocation lineage,
//!   pledges, limits, the audit trail, learning's recorder) and the life
//!   cycle every kind goes through; it imports no kind;
//! - one room per kind, each with the same parts (spec, handles, host
//!   functions, WASI face, bindings): [`fs`], [`net`], [`spawn`]
//!   (spawners and mailboxes) and [`pledge`];
//! - [`grants`]: the registry that lists the kinds, and the `grants`
//!   interface;
//! - [`wasi`]: standard WASI from the operator's grants, linking each
//!   room's WASI face;
//! - [`policy`]: what the operator grants, from flags or `capbroker.toml`,
//!   and what learning writes;
//! - [`run`]: the engine, the per-store state ([`BrokerCtx`]), and the one
//!   process runner for apps, commands and child processes;
//! - [`serve`]: `capbroker serve`, a fresh instance of a `wasi:http/proxy`
//!   component per request, with the grants of the route it matches.
//!
//! Errors, one model per layer: a guest gets the WIT `error`
//! ([`core::Error`], through [`core::HostError`]), and a WASI face
//! wasmtime-wasi's own; an operator's value that does not parse is a
//! [`core::Invalid`]; what is wrong with the flags, the manifest or a run's
//! reach is a [`policy::Error`] (and grants that do not match the
//! component's requests a [`grants::Mismatch`]). `wasmtime::Result` is
//! left to the wasmtime boundary: loading, linking and running components,
//! opening grants for a store, host functions, and `main`.

pub mod core;
pub mod fs;
pub mod grants;
pub mod net;
pub mod pledge;
pub mod policy;
pub mod run;
pub mod serve;
pub mod spawn;
pub mod wasi;

pub use crate::core::limits::Limits;
pub use run::app::{AppComponent, Outcome, Running, Runtime};
pub use run::ctx::{BrokerCtx, BrokerCtxView, BrokerView};
pub use run::engine::{Pool, PoolError};
pub use run::link::add_to_linker;
pub use run::Components;
