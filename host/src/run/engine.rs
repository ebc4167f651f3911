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
//! them. The pool is sized from the operator's budgets ([`Pool`]): as many
//! instances as the root and every spawner's `max-children` can have alive
//! at once, each memory slot as large as the largest memory any of them may
//! be granted.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::spawn::{SpawnGrant, MAX_MEMORY};

/// How often running guests yield to the scheduler.
pub const TICK: Duration = Duration::from_millis(1);

/// The most component instances (roots and children together) a pool may
/// be sized for, whatever the budgets say: every instance costs the host
/// at least its store and the pages it touches (about 70 KiB for a small
/// idle child), and an async stack and its guard page (two kernel memory
/// maps, of the 65,530 Linux allows a process by default).
pub const MAX_POOL_INSTANCES: u32 = 20_000;

/// Instances an embedder's default pool ([`Pool::default`]) holds.
pub const DEFAULT_INSTANCES: u32 = 1000;

/// How much address space the pool's linear memories may reserve together.
/// x86-64 and aarch64 Linux give a process 128 TiB; half of it is left to
/// everything else.
pub const MAX_POOL_ADDRESS_SPACE: u64 = 64 << 40;

/// While every memory slot at the full 4 GiB fits in this much address
/// space, slots are 4 GiB (with the guard, a 32-bit memory then needs no
/// bounds checks at all). A pool for more instances reserves only the
/// largest budget for each memory, and compiled code checks bounds
/// explicitly (see docs/performance.md for what that costs).
pub const FULL_SLOTS_ADDRESS_SPACE: u64 = 16 << 40;

/// Linear memories per instance the pool holds room for: a Rust
/// wasm32-wasip2 component has one, a component with an adapter two.
pub const MEMORIES_PER_INSTANCE: u32 = 2;

/// Core instances (each with its own tables) per component instance: a
/// Rust wasm32-wasip2 component holds a few (its module and the shims), a
/// componentize-py one 14.
pub const CORE_INSTANCES_PER_INSTANCE: u32 = 16;

/// The guard after every memory slot (wasmtime's default on 64-bit hosts):
/// loads and stores with a constant offset below it need no check of their
/// own.
const GUARD: u64 = 32 << 20;

/// How a used memory slot is made ready for the next instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reset {
    /// Its first [`FIRST_PAGES`] are reset in place, the rest given back
    /// to the kernel: a host that ran many instances goes back to about
    /// what it held before (what `run` and its children use).
    #[default]
    FirstPages,
    /// The pages its instance dirtied, wherever they lie, are reset in
    /// place, up to [`DIRTY_PAGES`] of them, where Linux has PAGEMAP_SCAN
    /// (6.7 and later; else as [`Reset::FirstPages`]). Nothing goes back to
    /// the kernel, so no TLB shootdown and no page faults for the next
    /// instance: a Rust guest's stack sits near 1 MiB, past the first
    /// pages. The price: a slot keeps every page any of its instances
    /// touched resident (at most its memory budget). For `serve`, whose
    /// slots are reused by one request after another.
    DirtyPages,
}

/// See [`Reset::FirstPages`].
const FIRST_PAGES: usize = 256 << 10;

/// See [`Reset::DirtyPages`].
const DIRTY_PAGES: usize = 2 << 20;

/// Whether the kernel has PAGEMAP_SCAN (Linux 6.7).
fn pagemap_scan() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// One wasm page.
const WASM_PAGE: u64 = 64 << 10;

/// What the instance pool is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Component instances alive at once: roots and children together.
    pub instances: u32,
    /// The most linear memory any one instance may be granted, in bytes (at
    /// most 4 GiB; rounded up to whole wasm pages).
    pub max_memory: u64,
}

impl Default for Pool {
    /// 1,000 instances of up to 4 GiB each: an embedder that does not say
    /// what it runs gets what capbroker always had.
    fn default() -> Self {
        Pool {
            instances: DEFAULT_INSTANCES,
            max_memory: MAX_MEMORY,
        }
    }
}

/// Budgets the pool cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "the budgets allow {instances} instances at once (the root and every spawner's \
         max-children together); capbroker hosts at most {MAX_POOL_INSTANCES}: lower \
         max-children"
    )]
    TooManyInstances { instances: u64 },
    #[error(
        "the budgets allow {instances} instances of up to {max_memory} bytes of memory each: \
         their memory slots would reserve {reserve} bytes of address space, more than the \
         {MAX_POOL_ADDRESS_SPACE} capbroker may use: lower max-children or max-memory"
    )]
    AddressSpace {
        instances: u32,
        max_memory: u64,
        reserve: u64,
    },
    #[error(
        "the budgets allow {instances} instances at once: the instance pool would need about \
         {maps} memory maps, and the system allows a process {allowed} (vm.max_map_count): \
         lower max-children, or raise vm.max_map_count"
    )]
    MemoryMaps {
        instances: u32,
        maps: u64,
        allowed: u64,
    },
    #[error("a pool for no instance at all can run nothing")]
    Empty,
}

impl Pool {
    /// The pool for a run: a root of `root_memory` bytes (its memory limit)
    /// that holds `spawners`, each letting `max-children` children of up to
    /// `max-memory` each be alive at once. Children's children count
    /// against the spawner they came from, so these are all the instances
    /// the run can have.
    pub fn for_budgets<'a>(
        root_memory: u64,
        spawners: impl IntoIterator<Item = &'a SpawnGrant>,
    ) -> Result<Pool, PoolError> {
        let mut instances = 1;
        let mut max_memory = root_memory.min(MAX_MEMORY);
        for s in spawners {
            instances += u64::from(s.max_children);
            max_memory = max_memory.max(s.limits.max_memory.min(MAX_MEMORY));
        }
        let instances = u32::try_from(instances)
            .ok()
            .filter(|n| *n <= MAX_POOL_INSTANCES)
            .ok_or(PoolError::TooManyInstances { instances })?;
        let pool = Pool {
            instances,
            max_memory,
        };
        pool.plan()?;
        Ok(pool)
    }

    /// How the pool is laid out, checked against the address space and the
    /// kernel's limit on memory maps.
    pub fn plan(&self) -> Result<Plan, PoolError> {
        if self.instances == 0 {
            return Err(PoolError::Empty);
        }
        let memories = u64::from(self.instances) * u64::from(MEMORIES_PER_INSTANCE);
        let slot_bytes = if memories * (MAX_MEMORY + GUARD) <= FULL_SLOTS_ADDRESS_SPACE {
            MAX_MEMORY
        } else {
            let slot = self
                .max_memory
                .clamp(WASM_PAGE, MAX_MEMORY)
                .div_ceil(WASM_PAGE)
                * WASM_PAGE;
            let reserve = memories * (slot + GUARD);
            if reserve > MAX_POOL_ADDRESS_SPACE {
                return Err(PoolError::AddressSpace {
                    instances: self.instances,
                    max_memory: self.max_memory,
                    reserve,
                });
            }
            slot
        };
        let allowed = max_map_count();
        let maps = |per_memory: u64| {
            OTHER_MAPS
                + u64::from(self.instances)
                    * (MAPS_PER_STACK + u64::from(MEMORIES_PER_INSTANCE) * per_memory)
        };
        let memory_init_cow = if maps(MAPS_PER_COW_MEMORY) <= allowed {
            true
        } else if maps(MAPS_PER_MEMORY) <= allowed {
            false
        } else {
            return Err(PoolError::MemoryMaps {
                instances: self.instances,
                maps: maps(MAPS_PER_MEMORY),
                allowed,
            });
        };
        Ok(Plan {
            slot_bytes,
            memory_init_cow,
        })
    }
}

/// How a [`Pool`] is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The address space each linear memory reserves (its guard aside): 4
    /// GiB while the pool is small enough, and compiled code then needs no
    /// bounds checks; else the largest budget, and it checks bounds.
    pub slot_bytes: u64,
    /// Whether a memory's initial image is mapped copy-on-write (cheaper to
    /// instantiate) rather than copied in (fewer kernel memory maps).
    pub memory_init_cow: bool,
}

/// Kernel memory maps each pooled async stack takes for good (its guard
/// page splits it from its neighbours), and each live linear memory adds
/// (its accessible pages, and with copy-on-write its image and the pages
/// after it), as counted in /proc/self/maps with 10,000 idle children.
const MAPS_PER_STACK: u64 = 2;
const MAPS_PER_MEMORY: u64 = 2;
const MAPS_PER_COW_MEMORY: u64 = 4;
/// Memory maps left to everything else: libraries, compiled code, malloc's
/// arenas, threads' stacks.
const OTHER_MAPS: u64 = 2000;

/// How many memory maps the kernel allows a process (`vm.max_map_count`).
fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530)
}

/// An engine for async component instances with fuel and epochs on, its
/// instance pool sized for `pool`, and its epoch ticker (which stops when
/// the engine is dropped).
pub fn new_engine(pool: &Pool) -> wasmtime::Result<Engine> {
    new_engine_with(pool, Reset::FirstPages)
}

/// [`new_engine`], its memory slots reset as `reset` says.
pub fn new_engine_with(pool: &Pool, reset: Reset) -> wasmtime::Result<Engine> {
    let plan = pool.plan()?;
    let slot = plan.slot_bytes;
    let n = pool.instances;
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_reservation(slot)
        .memory_guard_size(GUARD)
        .memory_init_cow(plan.memory_init_cow);
    let mut alloc = PoolingAllocationConfig::default();
    alloc
        .total_component_instances(n)
        .total_core_instances(n * CORE_INSTANCES_PER_INSTANCE)
        .total_memories(n * MEMORIES_PER_INSTANCE)
        .total_tables(n * CORE_INSTANCES_PER_INSTANCE)
        .total_stacks(n)
        .max_memory_size(usize::try_from(slot).unwrap_or(usize::MAX))
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    // Reset the first pages of a reused slot in place instead of returning
    // them to the kernel: fewer page faults, madvise calls and TLB
    // shootdowns per spawn; or, for `serve`, the pages its last instance
    // dirtied (see `Reset`).
    if reset == Reset::DirtyPages && pagemap_scan() {
        alloc
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(DIRTY_PAGES);
    } else {
        alloc.linear_memory_keep_resident(FIRST_PAGES);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(alloc));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(max_memory: u64, max_children: u32) -> SpawnGrant {
        let mut g = SpawnGrant::default();
        g.limits.max_memory = max_memory;
        g.max_children = max_children;
        g
    }

    #[test]
    fn the_pool_follows_the_budgets() {
        let small = grant(1 << 20, 16);
        let big = grant(64 << 20, 100);
        let p = Pool::for_budgets(256 << 20, [&small, &big]).unwrap();
        assert_eq!(p.instances, 1 + 16 + 100);
        assert_eq!(p.max_memory, 256 << 20);
        // Few instances: full slots, no bounds checks.
        assert_eq!(p.plan().unwrap().slot_bytes, MAX_MEMORY);
        let many = grant(1 << 20, 10_000);
        let p = Pool::for_budgets(32 << 20, [&many]).unwrap();
        assert_eq!(p.instances, 10_001);
        assert_eq!(p.plan().unwrap().slot_bytes, 32 << 20);
        // A budget that is not whole pages is rounded up to them.
        let p = Pool {
            instances: 10_000,
            max_memory: (1 << 20) + 1,
        };
        assert_eq!(p.plan().unwrap().slot_bytes, (1 << 20) + WASM_PAGE);
    }

    #[test]
    fn budgets_beyond_the_pool_are_refused() {
        let many = grant(1 << 20, MAX_POOL_INSTANCES);
        let e = Pool::for_budgets(1 << 20, [&many]).unwrap_err();
        assert!(matches!(e, PoolError::TooManyInstances { .. }), "{e}");
        assert!(e.to_string().contains("lower max-children"), "{e}");
        let huge = grant(MAX_MEMORY, 19_000);
        let e = Pool::for_budgets(1 << 20, [&huge]).unwrap_err();
        assert!(matches!(e, PoolError::AddressSpace { .. }), "{e}");
    }
}
