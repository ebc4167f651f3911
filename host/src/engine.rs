//! The wasmtime engine every capbroker component runs on.
//!
//! CPU is metered with fuel: deterministic, per process, and not charged
//! for time a process spends waiting or preempted. Epochs, bumped by a
//! ticker thread every [`TICK`], make every running guest yield to tokio at
//! that interval, so one busy process cannot starve the others, and
//! wall-clock timeouts fire on time.

use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often running guests yield to the scheduler.
pub const TICK: Duration = Duration::from_millis(1);

/// An engine for async component instances with fuel and epochs on, and
/// its epoch ticker (which stops when the engine is dropped).
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("capbroker-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
    Ok(engine)
}
