//! Running components: the engine, the store every instance lives in, and
//! the one process runner the root app, a plain command and every child
//! process go through.
//!
//! - [`engine`]: the wasmtime engine (fuel, epochs, the instance pool);
//! - [`ctx`]: the per-store broker state, a struct of the kinds' own
//!   contexts, and [`ctx::add_to_linker`];
//! - [`app`]: the store's data, loading and linking components, the `app`
//!   world;
//! - [`command`]: plain `wasi:cli` commands;
//! - [`process`]: child processes (the `process` interface);
//! - [`components`]: what spawners can start;
//! - [`launch`]: one run from a policy, as the binary and the shim do it.

pub mod app;
pub mod command;
pub mod components;
pub mod ctx;
pub mod engine;
pub mod launch;
pub mod process;
pub mod wit;

pub use components::Components;
