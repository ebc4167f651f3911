//! The components a broker can start as child processes.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::bail;
use wasmtime::component::InstancePre;

use super::app::State;

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
    pub fn entry(&self, name: &str) -> Option<(&Arc<str>, &InstancePre<State>)> {
        self.0.get_key_value(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().map(|n| n.to_string()).collect()
    }
}
