//! The wasmtime engine every capbroker component runs on. (Async support is
//! always on in wasmtime 48; components are called with `call_async`.)

use wasmtime::{Config, Engine};

/// An engine for async component instances.
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config)
}
