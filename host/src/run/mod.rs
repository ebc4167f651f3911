//! Running components: the engine, the store every instance lives in, and
//! the one process runner the root app, a plain command and every child
//! process go through.
//!
//! - [`engine`]: the wasmtime engine (fuel, epochs, the instance pool);
//! - [`cache`]: compiled components kept on disk between runs;
//! - [`compiled`]: ahead-of-time artifacts (`capbroker compile`);
//! - [`ctx`]: the per-store state: capbroker's ([`BrokerCtx`], a struct of
//!   the kinds' own contexts), the store's data ([`State`]), and the
//!   [`Components`] spawners can start;
//! - [`runner`]: the one process runner: stores, deadlines, how a run
//!   ended, the exit record;
//! - [`link`]: adding capbroker's interfaces to a linker;
//! - [`app`]: loading and linking components, and the `app` world;
//! - [`command`]: plain `wasi:cli` commands;
//! - [`process`]: child processes (the `process` interface);
//! - [`launch`]: one run from a policy, as the binary and the shim do it;
//! - [`wit`]: the generated bindings of `process` and the worlds.

pub mod app;
pub mod cache;
pub mod command;
pub mod compiled;
pub mod ctx;
pub mod engine;
pub mod launch;
pub mod link;
pub mod process;
pub mod runner;
pub mod wit;

pub use ctx::{BrokerCtx, Components, State};
pub use process::ProcessHandle;
