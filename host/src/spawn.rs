//! The `spawn` interface: spawners, their budgets, and the operator's grant
//! of one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use wasmtime::bail;
use wasmtime::component::{InstancePre, Resource};

use crate::app::State;
pub use crate::bindings::capbroker::caps::spawn::{Budget, Limits as ChildLimits};
use crate::bindings::capbroker::caps::spawn::{Host, HostSpawner};
use crate::ctx::BrokerCtxView;
use crate::limits::{parse_count, parse_duration, parse_size, MIN_MEMORY};
use crate::pledge::{Authority, Holders, Pledges};
use crate::revoke::{Lineage, RevokerHandle};
use crate::types::{Error, HostResult};

/// The components a broker can start as child processes, by name.
///
/// Names are shared with the audit trails of the processes that run them,
/// so that a spawn does not copy its child's name.
#[derive(Default)]
pub struct Components(BTreeMap<Arc<str>, InstancePre<State>>);

impl Components {
    pub fn new() -> Self {
        Components::default()
    }

    /// Adds a compiled, linked component under `name`.
    pub fn insert(&mut self, name: &str, pre: InstancePre<State>) -> wasmtime::Result<()> {
        if name == "self" {
            bail!("`self` is reserved: it names the component that spawns");
        }
        if self.0.insert(name.into(), pre).is_some() {
            bail!("two components are named `{name}`");
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&InstancePre<State>> {
        self.0.get(name)
    }

    /// The component named `name`, and the name as the map shares it.
    fn entry(&self, name: &str) -> Option<(&Arc<str>, &InstancePre<State>)> {
        self.0.get_key_value(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().map(|n| n.to_string()).collect()
    }
}

/// The operator's grant of a spawner. `components: None` means every
/// component the broker knows.
#[derive(Clone, Debug)]
pub struct SpawnGrant {
    pub limits: ChildLimits,
    pub max_children: u32,
    pub components: Option<Vec<String>>,
}

impl Default for SpawnGrant {
    fn default() -> Self {
        SpawnGrant {
            limits: ChildLimits {
                max_memory: 64 << 20,
                max_fuel: 1_000_000_000,
                timeout_ms: 10_000,
            },
            max_children: 16,
            components: None,
        }
    }
}

impl SpawnGrant {
    /// Parses the value part of `--spawn NAME=KEY=VALUE,…`, keys being
    /// `max-memory` (a size), `max-fuel` (a count, `K`/`M`/`G` allowed),
    /// `timeout` (`500ms`, `2s`, `1m`), `max-children` and `components`
    /// (names joined by `+`). Unnamed keys keep their defaults.
    pub fn parse(spec: &str) -> Result<SpawnGrant, String> {
        let mut g = SpawnGrant::default();
        for pair in spec.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not KEY=VALUE"))?;
            match key {
                "max-memory" => g.limits.max_memory = parse_size(value)? as u64,
                "max-fuel" => g.limits.max_fuel = parse_count(value)?,
                "timeout" => g.limits.timeout_ms = parse_duration(value)?.as_millis() as u64,
                "max-children" => {
                    g.max_children = value
                        .parse()
                        .map_err(|_| format!("max-children `{value}` is not a whole number"))?
                }
                "components" => g.components = Some(value.split('+').map(str::to_string).collect()),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (keys are max-memory, max-fuel, timeout, \
                         max-children, components)"
                    ))
                }
            }
        }
        check_sane(&g.limits).map_err(|e| crate::types::Describe(&e).to_string())?;
        if g.max_children == 0 {
            return Err("max-children of 0 would allow no child at all".into());
        }
        Ok(g)
    }

    /// A spawner for this grant, over the broker's `components`.
    pub fn spawner(&self, components: Arc<Components>) -> wasmtime::Result<SpawnerHandle> {
        let allowed = match &self.components {
            None => components.names(),
            Some(names) => {
                for n in names {
                    if components.get(n).is_none() {
                        bail!(
                            "--spawn: there is no component `{n}` (known: {})",
                            components.names().join(", ")
                        );
                    }
                }
                names.clone()
            }
        };
        Ok(SpawnerHandle {
            components,
            budget: Budget {
                limits: self.limits,
                max_children: self.max_children,
                components: allowed,
            },
            counter: Arc::new(Counter::new(self.max_children, None)),
            lineage: Lineage::default(),
            holders: Holders::default(),
        })
    }
}

/// The most memory a 32-bit linear memory can have.
pub const MAX_MEMORY: u64 = 4 << 30;

/// Limits a process can start with at all, and that mean something.
pub fn check_sane(l: &ChildLimits) -> Result<(), Error> {
    if l.max_memory > MAX_MEMORY {
        return Err(Error::Invalid(format!(
            "max-memory {} is above 4GiB, the most a 32-bit memory can have",
            l.max_memory
        )));
    }
    if l.max_memory < MIN_MEMORY {
        return Err(Error::Invalid(format!(
            "max-memory {} is below one page ({MIN_MEMORY} bytes)",
            l.max_memory
        )));
    }
    if l.max_fuel == 0 {
        return Err(Error::Invalid("max-fuel of 0 would run nothing".into()));
    }
    if l.timeout_ms == 0 {
        return Err(Error::Invalid("a timeout of 0 ms would run nothing".into()));
    }
    Ok(())
}

/// Fails with `refused`, naming each limit asked above what is allowed.
pub fn check_within(asked: &ChildLimits, allowed: &ChildLimits) -> Result<(), Error> {
    let mut over = Vec::new();
    let mut check = |what: &str, a: u64, b: u64| {
        if a > b {
            over.push(format!("{what}: asked {a}, allowed {b}"));
        }
    };
    check("max-memory", asked.max_memory, allowed.max_memory);
    check("max-fuel", asked.max_fuel, allowed.max_fuel);
    check("timeout-ms", asked.timeout_ms, allowed.timeout_ms);
    if over.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(over.join("; ")))
    }
}

fn min_limits(a: &ChildLimits, b: &ChildLimits) -> ChildLimits {
    ChildLimits {
        max_memory: a.max_memory.min(b.max_memory),
        max_fuel: a.max_fuel.min(b.max_fuel),
        timeout_ms: a.timeout_ms.min(b.timeout_ms),
    }
}

/// Live children against `max-children`, for a spawner and, through
/// `parent`, every spawner it was derived from. A child that ended with
/// messages its parent has not read still counts (see `mailbox`).
pub struct Counter {
    live: AtomicU32,
    max: u32,
    parent: Option<Arc<Counter>>,
    /// How many counters stand above this one.
    depth: u32,
}

/// How many times over a spawner may be attenuated: every spawn and exit
/// walks the chain, and dropping it is recursive.
pub const MAX_ATTENUATIONS: u32 = 64;

impl Counter {
    fn new(max: u32, parent: Option<Arc<Counter>>) -> Self {
        Counter {
            live: AtomicU32::new(0),
            max,
            depth: parent.as_ref().map_or(0, |p| p.depth + 1),
            parent,
        }
    }

    /// Takes one child slot at every level, or none.
    fn acquire(self: &Arc<Self>) -> Result<Slot, Error> {
        let mut level = Some(self);
        while let Some(c) = level {
            let prev = c.live.fetch_add(1, Ordering::AcqRel);
            if prev >= c.max {
                // Give back what this level and those below it took.
                let mut undo = Some(self);
                while let Some(u) = undo {
                    u.live.fetch_sub(1, Ordering::AcqRel);
                    if Arc::ptr_eq(u, c) {
                        break;
                    }
                    undo = u.parent.as_ref();
                }
                return Err(Error::LimitExceeded(format!(
                    "max-children: {} children are alive, the budget allows {}",
                    prev, c.max
                )));
            }
            level = c.parent.as_ref();
        }
        Ok(Slot(self.clone()))
    }
}

/// One live child's place in its spawners' counts, given back on drop.
pub struct Slot(Arc<Counter>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut level = Some(&self.0);
        while let Some(c) = level {
            c.live.fetch_sub(1, Ordering::AcqRel);
            level = c.parent.as_ref();
        }
    }
}

/// A spawner: which components it may start, with what limits, how many
/// at once.
pub struct SpawnerHandle {
    components: Arc<Components>,
    budget: Budget,
    counter: Arc<Counter>,
    lineage: Lineage,
    /// Whose pledges end this spawner: a process that pledged spawning
    /// away cannot go on spawning through a child it gave a copy to.
    holders: Holders,
}

impl SpawnerHandle {
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The same spawner, also ended when the instance whose pledges these
    /// are pledges spawning away; see [`crate::grants`]' `granted`.
    pub fn held_by(mut self, pledges: &Pledges) -> SpawnerHandle {
        self.holders = self.holders.with(pledges);
        self
    }

    /// A spawner within `asked`, counting against this one too.
    fn attenuate(&self, asked: Budget) -> Result<SpawnerHandle, Error> {
        check_sane(&asked.limits)?;
        check_within(&asked.limits, &self.budget.limits)?;
        if self.counter.depth >= MAX_ATTENUATIONS {
            return Err(Error::LimitExceeded(format!(
                "a spawner can be attenuated at most {MAX_ATTENUATIONS} times over"
            )));
        }
        if asked.max_children > self.budget.max_children {
            return Err(Error::Refused(format!(
                "max-children: asked {}, allowed {}",
                asked.max_children, self.budget.max_children
            )));
        }
        // Each named once, and so no more than this spawner's: the host
        // keeps the list, and checks it in time bounded by the operator's.
        if asked.components.len() > self.budget.components.len() {
            return Err(Error::Refused(format!(
                "components: {} asked, allowed {}",
                asked.components.len(),
                self.budget.components.join(", ")
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = asked.components.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(Error::Invalid(format!(
                "component `{twice}` is named twice"
            )));
        }
        if let Some(extra) = asked
            .components
            .iter()
            .find(|c| !self.budget.components.contains(c))
        {
            return Err(Error::Refused(format!(
                "component `{extra}`: not among those allowed ({})",
                self.budget.components.join(", ")
            )));
        }
        Ok(SpawnerHandle {
            components: self.components.clone(),
            counter: Arc::new(Counter::new(asked.max_children, Some(self.counter.clone()))),
            budget: asked,
            lineage: self.lineage.clone(),
            holders: self.holders.clone(),
        })
    }

    /// A copy for a child process, its limits cut to the child's own.
    pub(crate) fn copy_within(&self, limits: &ChildLimits) -> SpawnerHandle {
        SpawnerHandle {
            components: self.components.clone(),
            budget: Budget {
                limits: min_limits(&self.budget.limits, limits),
                ..self.budget.clone()
            },
            counter: self.counter.clone(),
            lineage: self.lineage.clone(),
            holders: self.holders.clone(),
        }
    }

    /// Checks a spawn against the budget and takes a child slot. `caller`
    /// is the calling component's name, which `self` stands for. Gives the
    /// child's name and its compiled component.
    pub(crate) fn admit(
        &self,
        caller: &str,
        component: &str,
        limits: &ChildLimits,
    ) -> Result<Admitted, Error> {
        self.lineage.check()?;
        if self.holders.renounced(Authority::SPAWN) {
            return Err(Error::Refused(
                "spawning was pledged away by a process this spawner passed through".into(),
            ));
        }
        let name = if component == "self" {
            caller
        } else {
            component
        };
        if !self.budget.components.iter().any(|c| c == name) {
            return Err(if self.components.get(name).is_none() {
                Error::Invalid(format!("there is no component `{name}`"))
            } else {
                Error::Refused(format!(
                    "component `{name}`: not among those allowed ({})",
                    self.budget.components.join(", ")
                ))
            });
        }
        let (name, pre) = self
            .components
            .entry(name)
            .ok_or_else(|| Error::Invalid(format!("there is no component `{name}`")))?;
        check_sane(limits)?;
        check_within(limits, &self.budget.limits)?;
        let slot = self.counter.acquire()?;
        Ok(Admitted {
            name: name.clone(),
            pre: pre.clone(),
            slot,
        })
    }
}

/// A spawn the budget allows: what to run, and the slot it holds.
pub(crate) struct Admitted {
    pub name: Arc<str>,
    pub pre: InstancePre<State>,
    pub slot: Slot,
}

impl BrokerCtxView<'_> {
    fn on_spawner<T>(
        &mut self,
        handle: &Resource<SpawnerHandle>,
        op: &str,
        f: impl FnOnce(&SpawnerHandle) -> Result<T, Error>,
    ) -> HostResult<T> {
        let sp = self.table.get(handle)?;
        sp.lineage.check().and_then(|()| f(sp)).map_err(|e| {
            self.ctx
                .audit
                .refused(op, "spawner", "", crate::types::Rights::empty(), &e);
            e.into()
        })
    }
}

impl Host for BrokerCtxView<'_> {}

impl HostSpawner for BrokerCtxView<'_> {
    fn budget(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<Budget> {
        Ok(self.table.get(&spawner)?.budget.clone())
    }

    fn running(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<u32> {
        Ok(self
            .table
            .get(&spawner)?
            .counter
            .live
            .load(Ordering::Acquire))
    }

    fn attenuate(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        budget: Budget,
    ) -> HostResult<Resource<SpawnerHandle>> {
        let derived = self.on_spawner(&spawner, "spawner.attenuate", |s| s.attenuate(budget))?;
        Ok(self.table.push(derived)?)
    }

    fn revocable(
        &mut self,
        spawner: Resource<SpawnerHandle>,
    ) -> HostResult<(Resource<SpawnerHandle>, Resource<RevokerHandle>)> {
        let (copy, revoker) = self.on_spawner(&spawner, "spawner.revocable", |s| {
            let (lineage, revoker) = s.lineage.revocable()?;
            Ok((
                SpawnerHandle {
                    lineage,
                    ..s.copy_within(&s.budget.limits)
                },
                revoker,
            ))
        })?;
        let copy = self.table.push(copy)?;
        match self.table.push(revoker) {
            Ok(r) => Ok((copy, r)),
            Err(e) => {
                self.table.delete(copy)?;
                Err(e.into())
            }
        }
    }

    fn drop(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<()> {
        self.table.delete(spawner)?;
        self.ctx.audit.dropped("spawner");
        Ok(())
    }
}
