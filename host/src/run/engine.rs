//! The wasmtime engine every capbroker component runs on.
//!
//! CPU is metered with fuel: deterministic, per process, and not charged
//! for time a process spends waiting or preempted. Epochs, bumped by a
//! ticker thread every [`TICK`], make every running guest yield to tokio at
//! that interval, so one busy process cannot starve the others, and
//! wall-clock timeouts fire on time.
//!
//! Instances come from a pooling allocator: memories, tables and async
//! stacks are reserved once and reused, so a spawn does not map and unmap
//! them. The pool bounds how many instances the broker hosts at once.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often running guests yield to the scheduler.
pub const TICK: Duration = Duration::from_millis(1);

/// The most component instances (roots and children together) the broker
/// hosts at once. A spawn beyond it fails in the child.
pub const MAX_INSTANCES: u32 = 1000;

/// An engine for async component instances with fuel and epochs on, and
/// its epoch ticker (which stops when the engine is dropped).
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    // A Rust wasm32-wasip2 component holds a few core instances (its module
    // and the adapter's shims), each with its own tables.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 8)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 8)
        .total_stacks(MAX_INSTANCES)
        // Reset the first pages of a reused slot in place instead of
        // returning them to the kernel: fewer page faults, madvise calls
        // and TLB shootdowns per spawn.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
