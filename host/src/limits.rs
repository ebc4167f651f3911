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
    peak: usize,
}

impl MemoryLimiter {
    pub fn new(max_memory: usize) -> Self {
        MemoryLimiter {
            max_memory,
            hit: false,
            peak: 0,
        }
    }

    /// Whether a growth was refused.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// The largest linear memory the instance has had, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
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
        self.peak = self.peak.max(desired);
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

/// Parses sizes such as `65536`, `64KiB`, `256MiB` or `1GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (expected e.g. 65536, 64KiB, 256MiB, 1GiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn parse_count(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.strip_suffix(['K', 'M', 'G']) {
        Some(d) if s.ends_with('K') => (d, 1_000),
        Some(d) if s.ends_with('M') => (d, 1_000_000),
        Some(d) => (d, 1_000_000_000),
        None => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a count (expected e.g. 5000000, 500M, 2G)"))
}

/// Parses `500ms`, `2s` or `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("`{s}` is not a duration (expected e.g. 500ms, 2s, 1m)");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let n: u64 = s[..split].parse().map_err(|_| err())?;
    match &s[split..] {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(err()),
    }
}
