//! What one process may consume, and the limiter that enforces memory.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// What one component instance (the root or a child process) may consume.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most linear memory, in bytes, any one memory may grow to.
    pub max_memory: usize,
    /// The most entries the handle table holds at once (capbroker's handles
    /// and WASI's resources together).
    pub max_handles: usize,
    /// The most fuel (about one unit per WebAssembly instruction); `None`
    /// for no limit.
    pub max_fuel: Option<u64>,
    /// The most wall-clock time; `None` for no limit.
    pub timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 256 << 20,
            max_handles: 1024,
            max_fuel: None,
            timeout: None,
        }
    }
}

/// The smallest memory limit a process may be given: one wasm page.
pub const MIN_MEMORY: u64 = 64 << 10;

/// Refuses memory growth past the limit, and remembers that it did, so that
/// the trap that usually follows can be reported as running out of memory.
pub struct MemoryLimiter {
    max_memory: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub fn new(max_memory: usize) -> Self {
        MemoryLimiter {
            max_memory,
            hit: false,
        }
    }

    /// Whether a growth was refused.
    pub fn hit(&self) -> bool {
        self.hit
    }
}

/// Tables are bounded too, so that a guest cannot grow one without end.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
