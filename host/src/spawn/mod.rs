//! The spawning room: spawners and their budgets (capbroker's `spawn`
//! interface), and a child's mailbox to its parent (`mailbox`).
//!
//! - [`spec`]: what the operator grants ([`SpawnGrant`]);
//! - [`spawner`]: [`SpawnerHandle`], its budget and its child count;
//! - [`host`]: the `spawn` interface's host functions;
//! - [`mailbox`]: the queues between a parent and a child, and the
//!   `mailbox` interface;
//! - [`wit`]: the generated bindings.
//!
//! Starting a child is the process runner's (`run/process.rs`): a
//! spawner only admits it. [`Spawners`] is the kind's life cycle.

pub mod host;
pub mod mailbox;
pub mod spawner;
pub mod spec;
pub mod wit;

pub use spawner::{
    check_sane, check_within, Admitted, Budget, ChildLimits, Counter, Slot, SpawnerHandle,
    MAX_ATTENUATIONS, MAX_MEMORY,
};
pub use spec::{SpawnGrant, SpawnTable};

use std::path::Path;

use toml::Spanned;

use crate::core::kind::{FitError, Handle, Kind, Learned, Located, OpenEnv, Opened, ShareTo};
use crate::core::pledges::Pledges;
use crate::core::wit::capbroker::caps::types::Wants;
use crate::core::Error;

/// The spawn room's per-store state: the queues to the instance's parent,
/// if it is a child process.
#[derive(Default)]
pub struct SpawnCtx {
    pub mailbox: Option<mailbox::End>,
}

/// Adds the `spawn` and `mailbox` interfaces to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> crate::core::View<'_, SpawnCtx>,
) -> wasmtime::Result<()> {
    use crate::core::view::HasView;
    wit::spawn::add_to_linker::<T, HasView<SpawnCtx>>(linker, get)?;
    wit::mailbox::add_to_linker::<T, HasView<SpawnCtx>>(linker, get)
}

/// Spawner grants: `--spawn NAME=…`, `[spawn.NAME]`.
pub struct Spawners;

impl Kind for Spawners {
    const NAME: &'static str = "spawner";
    type Spec = SpawnGrant;
    type Handle = SpawnerHandle;
    type Table = Spanned<SpawnTable>;

    fn from_table(t: &Self::Table, name: &str, _: &Path) -> Result<SpawnGrant, Located> {
        SpawnGrant::from_table(t, name)
    }

    fn to_table(spec: &SpawnGrant) -> Self::Table {
        spec.to_table()
    }

    fn fit(spec: &SpawnGrant, _: &str, _: &Wants) -> Result<SpawnGrant, FitError> {
        Ok(spec.clone())
    }

    fn open(
        spec: &SpawnGrant,
        name: &str,
        _: &[&SpawnGrant],
        env: &OpenEnv<'_>,
    ) -> wasmtime::Result<Opened<SpawnerHandle>> {
        let spawner = spec.spawner(name, env.components)?;
        let b = spawner.budget();
        let detail = format!(
            "max-memory={},max-fuel={},timeout={}ms,max-children={},components={}",
            b.limits.max_memory,
            b.limits.max_fuel,
            b.limits.timeout_ms,
            b.max_children,
            b.components.join("+")
        );
        Ok(Opened {
            handle: spawner,
            target: "spawner".into(),
            detail,
        })
    }

    fn describe(name: &str, _: &Wants) -> String {
        format!("--spawn {name}=max-memory=SIZE,max-fuel=N,timeout=T,max-children=N")
    }

    fn narrow(s: &SpawnGrant, name: &str, learned: &mut Learned<'_>) -> Option<SpawnGrant> {
        /// How much more than the peak a learned budget allows.
        const HEADROOM: u64 = crate::core::learn::HEADROOM;
        let none = crate::core::learn::Spawns::default();
        let u = learned.used.spawns.get(name).unwrap_or(&none);
        if u.children == 0 {
            if learned.required {
                learned.notes.push(format!(
                    "# spawn.{name}: not used, but required: no components"
                ));
                return Some(SpawnGrant {
                    components: Some(Vec::new()),
                    ..s.clone()
                });
            }
            learned
                .notes
                .push(format!("# spawn.{name}: not used, not granted"));
            return None;
        }
        learned.notes.push(format!(
            "# spawn.{name}: {} children, at most {} at once; peaks: memory {} bytes, \
             fuel {}, wall {} µs; granted {HEADROOM}x",
            u.children, u.peak_running, u.peak_memory, u.peak_fuel, u.peak_wall_us
        ));
        const PAGE: u64 = 64 << 10;
        let memory = (u.peak_memory * HEADROOM).div_ceil(PAGE).max(1) * PAGE;
        let limits = ChildLimits {
            max_memory: memory.min(s.limits.max_memory),
            max_fuel: (u.peak_fuel * HEADROOM).max(1).min(s.limits.max_fuel),
            timeout_ms: (u.peak_wall_us * HEADROOM)
                .div_ceil(1000)
                .max(100)
                .min(s.limits.timeout_ms),
        };
        Some(SpawnGrant {
            limits,
            max_children: (u.peak_running * HEADROOM).min(u64::from(s.max_children)) as u32,
            // What was spawned is learned for the whole run, not per
            // spawner: keep only what this one was granted, so no spawner
            // learns another's.
            components: Some(
                u.spawned
                    .iter()
                    .filter(|c| {
                        s.components
                            .as_ref()
                            .is_none_or(|allowed| allowed.iter().any(|a| a == *c))
                    })
                    .cloned()
                    .collect(),
            ),
        })
    }
}

impl Handle for SpawnerHandle {
    fn share(&self, to: &ShareTo<'_>) -> Result<Self, Error> {
        self.lineage().check()?;
        Ok(self.copy_within(&ChildLimits {
            max_memory: to.max_memory,
            max_fuel: to.max_fuel,
            timeout_ms: to.timeout_ms,
        }))
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        SpawnerHandle::held_by(self, pledges)
    }
}
