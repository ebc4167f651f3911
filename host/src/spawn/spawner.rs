//! Spawners: which components they may start, with what limits, how many
//! at once, counted through every spawner they were derived from.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use super::wit::spawn::{Budget, Limits as ChildLimits};
use crate::core::limits::MIN_MEMORY;
use crate::core::lineage::Lineage;
use crate::core::pledges::{Authority, Holders, Pledges};
use crate::core::Error;

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
    pub(super) live: AtomicU32,
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
    /// The operator's grant it comes from, for learning mode.
    pub(super) grant: Arc<str>,
    pub(super) budget: Budget,
    pub(super) counter: Arc<Counter>,
    pub(super) lineage: Lineage,
    /// Whose pledges end this spawner: a process that pledged spawning
    /// away cannot go on spawning through a child it gave a copy to.
    pub(super) holders: Holders,
}

impl SpawnerHandle {
    /// A spawner of its own, for the operator's grant `grant` of `budget`.
    pub fn new(grant: &str, budget: Budget) -> SpawnerHandle {
        SpawnerHandle {
            grant: grant.into(),
            counter: Arc::new(Counter::new(budget.max_children, None)),
            budget,
            lineage: Lineage::default(),
            holders: Holders::default(),
        }
    }

    /// The operator's grant this spawner comes from.
    pub fn grant(&self) -> &Arc<str> {
        &self.grant
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The same spawner, also ended when the instance whose pledges these
    /// are pledges spawning away; see `grants.granted`.
    pub fn held_by(mut self, pledges: &Pledges) -> SpawnerHandle {
        self.holders = self.holders.with(pledges);
        self
    }

    /// A spawner within `asked`, counting against this one too.
    pub(crate) fn attenuate(&self, asked: Budget) -> Result<SpawnerHandle, Error> {
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
            grant: self.grant.clone(),
            counter: Arc::new(Counter::new(asked.max_children, Some(self.counter.clone()))),
            budget: asked,
            lineage: self.lineage.clone(),
            holders: self.holders.clone(),
        })
    }

    /// A copy for a child process, its limits cut to the child's own.
    pub fn copy_within(&self, limits: &ChildLimits) -> SpawnerHandle {
        SpawnerHandle {
            grant: self.grant.clone(),
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
    /// is the calling component's name, which `self` stands for; `known`
    /// tells whether the broker can start a component. Gives the child's
    /// name and its slot.
    pub fn admit<'a>(
        &self,
        caller: &'a str,
        component: &'a str,
        limits: &ChildLimits,
        known: impl Fn(&str) -> bool,
    ) -> Result<Admitted<'a>, Error> {
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
            return Err(if !known(name) {
                Error::Invalid(format!("there is no component `{name}`"))
            } else {
                Error::Refused(format!(
                    "component `{name}`: not among those allowed ({})",
                    self.budget.components.join(", ")
                ))
            });
        }
        if !known(name) {
            return Err(Error::Invalid(format!("there is no component `{name}`")));
        }
        check_sane(limits)?;
        check_within(limits, &self.budget.limits)?;
        let slot = self.counter.acquire()?;
        Ok(Admitted { name, slot })
    }
}

/// A spawn the budget allows: the component to run, and the slot it holds.
pub struct Admitted<'a> {
    pub name: &'a str,
    pub slot: Slot,
}
