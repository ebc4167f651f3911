//! capbroker: a capability broker for WebAssembly components.
//!
//! A component holds explicit handles (directories, later sockets and the
//! right to spawn), derives weaker ones from them and drops what it no longer
//! needs; what it gives up it cannot get back. This library is the host side:
//!
//! - [`authority`]: the one place file-system rights are decided, for
//!   both faces;
//! - [`bindings`]: the WIT package `capbroker:caps` as Rust types;
//! - [`ctx`]: per-store broker state and [`ctx::add_to_linker`], for any
//!   wasmtime embedder;
//! - one module per WIT interface: [`types`] (with [`revoke`]), [`fs`], [`net`],
//!   [`spawn`], [`grants`], [`process`], [`mailbox`], [`pledge`];
//! - [`wasi`]: standard WASI from the operator's grants, behind the guards
//!   that `pledge` narrows;
//! - [`limits`]: what one process may consume;
//! - [`app`]: loading and running components of the `app` world, and
//!   [`launch`]: running one from a manifest, as the `capbroker` binary and
//!   the containerd shim do;
//! - [`audit`]: the record of grants, derivations, drops and denials.

pub mod app;
pub mod audit;
pub mod authority;
pub mod bindings;
pub mod command;
pub mod ctx;
pub mod engine;
pub mod fs;
pub mod grants;
pub mod launch;
pub mod learn;
pub mod limits;
pub mod mailbox;
pub mod manifest;
pub mod net;
pub mod pledge;
pub mod process;
pub mod revoke;
pub mod spawn;
pub mod types;
pub mod wasi;

pub use app::{AppComponent, Outcome, Running, Runtime};
pub use ctx::{add_to_linker, BrokerCtx, BrokerCtxView, BrokerView};
pub use limits::Limits;
