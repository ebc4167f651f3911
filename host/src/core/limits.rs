//! What one process may consume, and the limiter that enforces memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::core::{Error, Invalid};

/// What one component instance (the root or a child process) may consume.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most memory, in bytes: all linear memories together, with the
    /// messages the process has sent that are not yet read.
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

/// The most wall-clock time and fuel the `requests` export gets when it is
/// called on its own (`capbroker inspect`, and after a `--learn` run), where
/// no operator's limit applies: declaring handles is a few allocations.
pub const REQUESTS_TIMEOUT: Duration = Duration::from_secs(1);
pub const REQUESTS_FUEL: u64 = 100_000_000;

/// The smallest memory limit a process may be given: one wasm page.
pub const MIN_MEMORY: u64 = 64 << 10;

/// One process's memory, as the host holds it for the process: every linear
/// memory of its instance (a component may have several, one per core
/// module) and the messages it has sent that wait, unread, in a mailbox.
/// Both count against one limit, so that a process cannot park memory in
/// the host by sending what it would not be allowed to keep.
#[derive(Debug)]
pub struct MemoryAccount {
    max: AtomicUsize,
    linear: AtomicUsize,
    queued: AtomicUsize,
}

impl MemoryAccount {
    pub fn new(max: usize) -> Self {
        MemoryAccount {
            max: AtomicUsize::new(max),
            linear: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Bytes of linear memory, over all the instance's memories.
    pub fn linear(&self) -> usize {
        self.linear.load(Ordering::Acquire)
    }

    /// Bytes of messages sent and not yet read.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// What is left of the limit: what the host may still hold for it.
    pub fn room(&self) -> usize {
        self.max()
            .saturating_sub(self.linear().saturating_add(self.queued()))
    }

    /// Counts `bytes` more of queued messages, if they fit beside the linear
    /// memory; else says what does not fit.
    ///
    /// Only the process itself adds to its account (its memory grows and it
    /// sends only while it runs, one call at a time); others only give back,
    /// which cannot make a check that passed wrong.
    pub fn charge(&self, bytes: usize) -> Result<(), Error> {
        let linear = self.linear();
        let max = self.max();
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                let total = linear.checked_add(q)?.checked_add(bytes)?;
                (total <= max).then_some(q + bytes)
            })
            .map(drop)
            .map_err(|queued| {
                Error::LimitExceeded(format!(
                    "max-memory: a message of {bytes} bytes does not fit: {linear} bytes of \
                     linear memory and {queued} bytes of messages not yet read, of {max}"
                ))
            })
    }

    /// Gives back `bytes` of queued messages, read or thrown away.
    pub fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl AsRef<MemoryAccount> for MemoryAccount {
    fn as_ref(&self) -> &MemoryAccount {
        self
    }
}

/// A shared reference to a process's [`MemoryAccount`]: its limiter, its
/// ports and its children's links hold one. A child's account lives in the
/// link to its parent, so that a spawn allocates nothing more for it.
#[derive(Clone)]
pub struct Account(Arc<dyn AsRef<MemoryAccount> + Send + Sync>);

impl Account {
    /// An account of its own, for a root instance.
    pub fn new(max: usize) -> Self {
        Account(Arc::new(MemoryAccount::new(max)))
    }

    /// The account inside `holder`.
    pub fn within(holder: Arc<dyn AsRef<MemoryAccount> + Send + Sync>) -> Self {
        Account(holder)
    }

    /// Sets the limit, when the store is made.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }
}

impl Default for Account {
    fn default() -> Self {
        Account::new(Limits::default().max_memory)
    }
}

impl std::ops::Deref for Account {
    type Target = MemoryAccount;
    fn deref(&self) -> &MemoryAccount {
        (*self.0).as_ref()
    }
}

/// Refuses memory growth past the limit, and remembers that it did, so that
/// the trap that usually follows can be reported as running out of memory.
///
/// wasmtime asks once per memory, for each memory of each core instance;
/// the limit is on their sum (with the queued messages), not on each.
pub struct MemoryLimiter {
    account: Account,
    hit: bool,
    peak: usize,
}

impl MemoryLimiter {
    pub fn new(account: Account) -> Self {
        MemoryLimiter {
            account,
            hit: false,
            peak: 0,
        }
    }

    /// Whether the last growth asked for was refused.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// The most linear memory, all memories together, the instance has had,
    /// in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

/// Tables are bounded too, so that a guest cannot grow one without end.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let a = &self.account;
        let linear = (a.linear() - current.min(a.linear())).saturating_add(desired);
        if linear.saturating_add(a.queued()) > a.max() {
            self.hit = true;
            return Ok(false);
        }
        a.linear.store(linear, Ordering::Release);
        self.peak = self.peak.max(linear);
        // A refusal the guest handled is behind it.
        self.hit = false;
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
pub fn parse_size(s: &str) -> Result<usize, Invalid> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| Invalid::form(s, "a size (expected e.g. 65536, 64KiB, 256MiB, 1GiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(Invalid::Word {
                what: "size unit",
                word: other.into(),
                within: Some(s.into()),
                known: "use KiB, MiB or GiB",
            })
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| Invalid::TooLarge(s.into()))
}

pub fn parse_count(s: &str) -> Result<u64, Invalid> {
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
        .ok_or_else(|| Invalid::form(s, "a count (expected e.g. 5000000, 500M, 2G)"))
}

/// Parses `500ms`, `2s` or `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, Invalid> {
    let err = || Invalid::form(s, "a duration (expected e.g. 500ms, 2s, 1m)");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let n: u64 = s[..split].parse().map_err(|_| err())?;
    match &s[split..] {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(err),
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_limit_is_on_all_memories_together() {
        let mut l = MemoryLimiter::new(Account::new(64 * MIB));
        // Two memories of 40 MiB each, as two core modules would have them.
        assert!(l.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(!l.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(l.hit());
        assert!(l.memory_growing(0, 24 * MIB, None).unwrap());
        // Growing the first counts only what it adds.
        assert!(!l.memory_growing(40 * MIB, 41 * MIB, None).unwrap());
        assert_eq!(l.peak(), 64 * MIB);
    }

    #[test]
    fn queued_messages_and_linear_memory_share_the_limit() {
        let account = Account::new(8 * MIB);
        let mut l = MemoryLimiter::new(account.clone());
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        account.charge(3 * MIB).unwrap();
        assert!(matches!(
            account.charge(2 * MIB),
            Err(Error::LimitExceeded(_))
        ));
        assert_eq!(account.queued(), 3 * MIB);
        assert!(!l.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        account.release(3 * MIB);
        assert!(l.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        assert!(account.charge(usize::MAX).is_err());
    }
}
